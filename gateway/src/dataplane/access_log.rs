//! The access log: one JSON line per request, off by default (`server.access_log`).
//! Each worker buffers its lines and writes them in batches (at 16 KiB, or every 200 ms from
//! the worker's flush task), so a request never waits on a log write. Lines carry no client
//! address, header or body: ids, status, timings and how the upstream connection was had.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::time::Duration;

use crate::config::AccessLog;

const FLUSH_AT: usize = 16 * 1024;
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

enum Sink {
    Stderr,
    File(File),
}

/// One worker's access logger.
pub struct AccessLogger {
    sink: Sink,
    pending: RefCell<Vec<u8>>,
}

/// What is logged of one request.
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub api: &'a str,
    pub backend: Option<&'a str>,
    pub status: u16,
    pub duration: Duration,
    /// Time from sending the request upstream to the response head.
    pub upstream_duration: Option<Duration>,
    pub upstream_reused: Option<bool>,
    pub upstream_resumed: Option<bool>,
    /// What failed, when the answer is the gateway's own error (an `ErrorKind` label).
    pub error: Option<&'static str>,
}

impl AccessLogger {
    /// `None` when the log is off.
    pub fn open(config: &AccessLog) -> std::io::Result<Option<Self>> {
        let sink = match config {
            AccessLog::Off => return Ok(None),
            AccessLog::Stderr => Sink::Stderr,
            AccessLog::File(path) => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Ok(Some(Self {
            sink,
            pending: RefCell::default(),
        }))
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let line = serde_json::json!({
            "time": time,
            "requestId": entry.request_id,
            "method": entry.method,
            "api": entry.api,
            "backend": entry.backend,
            "status": entry.status,
            "durationMs": millis(entry.duration),
            "upstreamMs": entry.upstream_duration.map(millis),
            "upstreamReused": entry.upstream_reused,
            "upstreamResumed": entry.upstream_resumed,
            "error": entry.error,
        });
        let mut pending = self.pending.borrow_mut();
        // Serialising a json! value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *pending, &line);
        pending.push(b'\n');
        let full = pending.len() >= FLUSH_AT;
        drop(pending);
        if full {
            self.flush();
        }
    }

    /// Writes what is buffered. A failing log write is reported once per batch, never fatal.
    pub fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() {
            return;
        }
        let result = match &self.sink {
            Sink::Stderr => std::io::stderr().lock().write_all(&pending),
            Sink::File(file) => (&*file).write_all(&pending),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "access log write failed; lines dropped");
        }
        pending.clear();
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_line_per_request() {
        let dir = testkit::temp_dir("access").unwrap();
        let path = dir.path().join("access.log");
        let logger = AccessLogger::open(&AccessLog::File(path.clone()))
            .unwrap()
            .unwrap();
        for status in [200, 502] {
            logger.log(&Entry {
                request_id: "r-1",
                method: "GET",
                api: "orders",
                backend: Some("b1"),
                status,
                duration: Duration::from_micros(1500),
                upstream_duration: Some(Duration::from_millis(1)),
                upstream_reused: Some(true),
                upstream_resumed: None,
                error: (status == 502).then_some("read_failed"),
            });
        }
        logger.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[1]["status"], 502);
        assert_eq!(lines[0]["durationMs"], 1.5);
        assert_eq!(lines[0]["upstreamReused"], true);
        assert_eq!(lines[0]["upstreamResumed"], serde_json::Value::Null);
        assert_eq!(lines[0]["error"], serde_json::Value::Null);
        assert_eq!(lines[1]["error"], "read_failed");
    }

    #[test]
    fn off_means_no_logger() {
        assert!(AccessLogger::open(&AccessLog::Off).unwrap().is_none());
    }
}
