//! The details of recent failed requests, by request id, for operators.
//!
//! A client's error answer carries only the contract's code, a generic sentence and the
//! request id; what really failed (the backend's address, the OS error, the TLS alert) is
//! logged and kept here, where `GET /requests/{id}` on the admin API (behind its token)
//! finds it. Only failed requests are kept, the newest [`RecentErrors::CAPACITY`] of them:
//! memory stays bounded whatever the error rate.
//!
//! Workers never take a lock for it: they hand records to an [`ErrorSink`], a bounded
//! channel whose `try_send` does not block (under an error storm of more than
//! [`SINK_CAPACITY`] errors between two drains, the excess details are dropped; the errors
//! are still answered, counted and logged). The control plane drains the channel into the
//! ring every second and before every lookup.

// The ring's mutex is taken only on the control plane (the drain task and the admin
// lookup); the workers' side is the channel.
#![allow(clippy::disallowed_types)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

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

/// Records in flight from the workers to the ring, at most.
pub const SINK_CAPACITY: usize = 4096;

/// How often the control plane drains the sink into the ring.
pub const DRAIN_EVERY: Duration = Duration::from_secs(1);

/// The workers' end: cloned into every worker, never blocks.
#[derive(Clone, Debug)]
pub struct ErrorSink {
    tx: mpsc::Sender<ErrorRecord>,
}

impl ErrorSink {
    /// Hands `record` (stamped with the current time) to the control plane.
    pub fn record(&self, mut record: ErrorRecord) {
        record.time = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        // Full (an error storm between two drains) or closed (shutting down): dropped.
        let _ = self.tx.try_send(record);
    }
}

/// The control plane's end: the ring of the newest failed requests.
#[derive(Clone)]
pub struct RecentErrors {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    ring: VecDeque<ErrorRecord>,
    rx: Option<mpsc::Receiver<ErrorRecord>>,
}

/// A sink for the workers and the ring it fills.
pub fn channel() -> (ErrorSink, RecentErrors) {
    let (tx, rx) = mpsc::channel(SINK_CAPACITY);
    let recent = RecentErrors {
        inner: Arc::new(Mutex::new(Inner {
            ring: VecDeque::new(),
            rx: Some(rx),
        })),
    };
    (ErrorSink { tx }, recent)
}

impl RecentErrors {
    /// How many failed requests are kept.
    pub const CAPACITY: usize = 10_000;

    /// An empty ring with no workers (tools and tests without a data plane).
    pub fn new() -> Self {
        RecentErrors {
            inner: Arc::new(Mutex::new(Inner {
                ring: VecDeque::new(),
                rx: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves what the workers sent into the ring, dropping the oldest beyond capacity.
    pub fn drain(&self) {
        let mut inner = self.lock();
        let Inner { ring, rx } = &mut *inner;
        let Some(rx) = rx else { return };
        while let Ok(record) = rx.try_recv() {
            if ring.len() >= Self::CAPACITY {
                ring.pop_front();
            }
            ring.push_back(record);
        }
    }

    /// Drains every `DRAIN_EVERY` (run on the control plane's runtime), so the sink never
    /// stays full while nobody looks anything up.
    pub async fn drain_periodically(self) {
        loop {
            tokio::time::sleep(DRAIN_EVERY).await;
            self.drain();
        }
    }

    /// The newest record of `request_id` (a client may reuse its own id).
    pub fn find(&self, request_id: &str) -> Option<ErrorRecord> {
        self.drain();
        self.lock()
            .ring
            .iter()
            .rev()
            .find(|r| r.request_id == request_id)
            .cloned()
    }
}

impl Default for RecentErrors {
    fn default() -> Self {
        Self::new()
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
        let (sink, recent) = channel();
        sink.record(record("a", "first"));
        sink.record(record("a", "second"));
        assert_eq!(recent.find("a").unwrap().detail, "second");
        assert!(!recent.find("a").unwrap().time.is_empty());
        assert!(recent.find("b").is_none());
        for i in 0..RecentErrors::CAPACITY {
            sink.record(record(&i.to_string(), "x"));
            if i % 1000 == 0 {
                recent.drain();
            }
        }
        assert!(recent.find("a").is_none());
        assert!(recent.find("0").is_some());
        assert_eq!(recent.lock().ring.len(), RecentErrors::CAPACITY);
    }

    #[test]
    fn a_full_sink_drops_instead_of_blocking() {
        let (sink, recent) = channel();
        for i in 0..SINK_CAPACITY + 10 {
            sink.record(record(&i.to_string(), "x"));
        }
        recent.drain();
        assert_eq!(recent.lock().ring.len(), SINK_CAPACITY);
        assert!(recent.find(&SINK_CAPACITY.to_string()).is_none());
        assert!(RecentErrors::new().find("0").is_none());
    }
}
