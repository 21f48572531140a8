//! What a run measures: an HDR latency histogram, request and connection counts, errors by
//! kind; and the summary (percentiles, rates) printed as a table and written as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histogram records (µs); longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 120_000_000;

/// Why a request failed. The names are fixed: they are JSON keys and table rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// TCP connect refused or failed.
    Connect,
    /// The TLS handshake failed.
    Handshake,
    /// Reading or writing the socket failed after the handshake.
    Io,
    /// The server closed the connection before the response was complete.
    Closed,
    /// No complete response within the request timeout.
    Timeout,
    /// The response could not be parsed.
    Protocol,
    /// A 4xx status.
    Status4xx,
    /// A 5xx status.
    Status5xx,
    /// Any other status that is not 2xx.
    StatusOther,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Handshake => "tls_handshake",
            ErrorKind::Io => "io",
            ErrorKind::Closed => "closed_early",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status4xx => "status_4xx",
            ErrorKind::Status5xx => "status_5xx",
            ErrorKind::StatusOther => "status_other",
        }
    }

    pub fn from_status(status: u16) -> Option<ErrorKind> {
        match status {
            200..=299 => None,
            400..=499 => Some(ErrorKind::Status4xx),
            500..=599 => Some(ErrorKind::Status5xx),
            _ => Some(ErrorKind::StatusOther),
        }
    }
}

/// One thread's measurements; merged at the end of a run.
#[derive(Clone)]
pub struct Recorder {
    latency_us: Histogram<u64>,
    pub requests: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// TLS connections established.
    pub connections: u64,
    /// Of those, how many resumed a session.
    pub resumed: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        // Bounds and precision are constants that hdrhistogram accepts (1 µs .. 120 s, 3 digits).
        #[allow(clippy::expect_used)]
        let latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
        Self {
            latency_us,
            requests: 0,
            errors: BTreeMap::new(),
            connections: 0,
            resumed: 0,
        }
    }

    /// A successful request and its latency.
    pub fn success(&mut self, latency: Duration) {
        self.requests += 1;
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency_us.saturating_record(us);
    }

    pub fn error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn connection(&mut self, resumed: bool) {
        self.connections += 1;
        self.resumed += u64::from(resumed);
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.requests += other.requests;
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        self.connections += other.connections;
        self.resumed += other.resumed;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn summary(&self, elapsed: Duration) -> Summary {
        let h = &self.latency_us;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let secs = elapsed.as_secs_f64();
        Summary {
            requests: self.requests,
            errors: self.error_count(),
            errors_by_kind: self
                .errors
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), *v))
                .collect(),
            elapsed_s: secs,
            requests_per_s: if secs > 0.0 {
                self.requests as f64 / secs
            } else {
                0.0
            },
            latency_us: Percentiles {
                p50: q(0.50),
                p90: q(0.90),
                p99: q(0.99),
                p999: q(0.999),
                max: if h.is_empty() { 0 } else { h.max() },
                mean: if h.is_empty() { 0.0 } else { h.mean() },
            },
            connections: self.connections,
            resumed_connections: self.resumed,
            resumed_ratio: if self.connections > 0 {
                Some(self.resumed as f64 / self.connections as f64)
            } else {
                None
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// A run's figures, as printed and as written to `--json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    /// Latency in microseconds (open loop: from the intended send time).
    pub latency_us: Percentiles,
    pub connections: u64,
    pub resumed_connections: u64,
    pub resumed_ratio: Option<f64>,
}

/// Microseconds as a short human string.
pub fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

impl Summary {
    /// The final table of `loadtest run`.
    pub fn table(&self) -> String {
        let l = &self.latency_us;
        let mut s = String::new();
        s.push_str(&format!(
            "  requests      {:>12}   ({:.0} req/s over {:.2}s)\n",
            self.requests, self.requests_per_s, self.elapsed_s
        ));
        s.push_str(&format!("  errors        {:>12}\n", self.errors));
        for (k, v) in &self.errors_by_kind {
            s.push_str(&format!("    {k:<12}{v:>12}\n"));
        }
        s.push_str(&format!(
            "  connections   {:>12}   (resumed {})\n",
            self.connections, self.resumed_connections
        ));
        if let Some(r) = self.resumed_ratio {
            s.push_str(&format!("  resumed ratio {:>12.4}\n", r));
        }
        s.push_str("  latency       p50        p90        p99        p99.9      max\n");
        s.push_str(&format!(
            "                {:<10} {:<10} {:<10} {:<10} {:<10}\n",
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max)
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut r = Recorder::new();
        for us in 1..=10_000u64 {
            r.success(Duration::from_micros(us));
        }
        let s = r.summary(Duration::from_secs(2));
        assert_eq!(s.requests, 10_000);
        assert_eq!(s.requests_per_s, 5_000.0);
        // HDR with 3 significant digits: within 0.1 %.
        let near =
            |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001 + 1.0;
        assert!(near(s.latency_us.p50, 5_000), "{:?}", s.latency_us);
        assert!(near(s.latency_us.p90, 9_000), "{:?}", s.latency_us);
        assert!(near(s.latency_us.p99, 9_900), "{:?}", s.latency_us);
        assert!(near(s.latency_us.p999, 9_990), "{:?}", s.latency_us);
        assert!(near(s.latency_us.max, 10_000), "{:?}", s.latency_us);
        assert!((s.latency_us.mean - 5_000.5).abs() < 10.0);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.success(Duration::from_millis(1));
        b.success(Duration::from_millis(3));
        b.error(ErrorKind::Timeout);
        b.error(ErrorKind::Timeout);
        a.error(ErrorKind::Status5xx);
        a.connection(false);
        b.connection(true);
        a.merge(&b);
        let s = a.summary(Duration::from_secs(1));
        assert_eq!(s.requests, 2);
        assert_eq!(s.errors, 3);
        assert_eq!(s.errors_by_kind["timeout"], 2);
        assert_eq!(s.errors_by_kind["status_5xx"], 1);
        assert_eq!(s.connections, 2);
        assert_eq!(s.resumed_ratio, Some(0.5));
        assert!(s.latency_us.max >= 2_990);
    }

    #[test]
    fn empty_and_extreme_values() {
        let mut r = Recorder::new();
        let s = r.summary(Duration::ZERO);
        assert_eq!(s.requests, 0);
        assert_eq!(s.requests_per_s, 0.0);
        assert_eq!(s.latency_us.p99, 0);
        assert_eq!(s.resumed_ratio, None);
        // Zero and absurdly long latencies are clamped, never lost.
        r.success(Duration::ZERO);
        r.success(Duration::from_secs(10_000));
        let s = r.summary(Duration::from_secs(1));
        assert_eq!(s.requests, 2);
        assert!(s.latency_us.max >= MAX_LATENCY_US * 999 / 1000);
    }

    #[test]
    fn status_classes() {
        assert_eq!(ErrorKind::from_status(200), None);
        assert_eq!(ErrorKind::from_status(204), None);
        assert_eq!(ErrorKind::from_status(404), Some(ErrorKind::Status4xx));
        assert_eq!(ErrorKind::from_status(502), Some(ErrorKind::Status5xx));
        assert_eq!(ErrorKind::from_status(301), Some(ErrorKind::StatusOther));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_us(999), "999µs");
        assert_eq!(fmt_us(1_500), "1.50ms");
        assert_eq!(fmt_us(2_000_000), "2.00s");
    }
}
