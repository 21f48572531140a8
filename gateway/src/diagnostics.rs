//! The details of recent failed requests, by request id, for operators.
//!
//! A client's error answer carries only the contract's code, a generic sentence and the
//! request id; what really failed (the backend's address, the OS error, the TLS alert) is
//! logged and kept here, where `GET /requests/{id}` on the admin API (behind its token)
//! finds it. Only failed requests are kept, the newest [`RecentErrors::CAPACITY`] of them:
//! memory stays bounded whatever the error rate.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What one failed request was, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRecord {
    pub request_id: String,
    /// When the error was answered (RFC 3339, UTC).
    pub time: String,
    pub status: u16,
    /// The contract's error code the client got.
    pub code: &'static str,
    /// The metric label of the kind of failure (`backend_unreachable`, ...).
    pub kind: &'static str,
    /// `downstream`, `upstream` or `internal`.
    pub side: &'static str,
    pub method: String,
    /// The API it matched, when it matched one.
    pub api: Option<String>,
    pub backend: Option<String>,
    /// What exactly failed.
    pub detail: String,
    pub worker: usize,
}

/// Shared by every worker and the admin API.
#[derive(Clone, Default)]
pub struct RecentErrors {
    records: Arc<Mutex<VecDeque<ErrorRecord>>>,
}

impl RecentErrors {
    /// How many failed requests are kept.
    pub const CAPACITY: usize = 10_000;

    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `record` (stamped with the current time), dropping the oldest beyond capacity.
    pub fn record(&self, mut record: ErrorRecord) {
        record.time = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= Self::CAPACITY {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The newest record of `request_id` (a client may reuse its own id).
    pub fn find(&self, request_id: &str) -> Option<ErrorRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .rev()
            .find(|r| r.request_id == request_id)
            .cloned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(id: &str, detail: &str) -> ErrorRecord {
        ErrorRecord {
            request_id: id.to_owned(),
            time: String::new(),
            status: 502,
            code: "BackendConnectionFailure",
            kind: "backend_unreachable",
            side: "upstream",
            method: "GET".to_owned(),
            api: Some("orders".to_owned()),
            backend: Some("be1".to_owned()),
            detail: detail.to_owned(),
            worker: 0,
        }
    }

    #[test]
    fn finds_the_newest_and_forgets_the_oldest() {
        let recent = RecentErrors::new();
        recent.record(record("a", "first"));
        recent.record(record("a", "second"));
        assert_eq!(recent.find("a").unwrap().detail, "second");
        assert!(!recent.find("a").unwrap().time.is_empty());
        assert!(recent.find("b").is_none());
        for i in 0..RecentErrors::CAPACITY {
            recent.record(record(&i.to_string(), "x"));
        }
        assert!(recent.find("a").is_none());
        assert!(recent.find("0").is_some());
        assert_eq!(recent.records.lock().unwrap().len(), RecentErrors::CAPACITY);
    }
}
