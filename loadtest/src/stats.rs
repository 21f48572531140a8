//! What a run measures: an HDR latency histogram, request and connection counts, errors by
//! kind, requests and errors per second of the run; and the summary (percentiles, rates)
//! printed as a table and written as JSON. `LiveHistogram` is the coarse copy of the latencies
//! the progress line reads while the run goes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Longest run the per-second series covers (a day); later events count in its last second.
const MAX_SECONDS: usize = 86_400;

/// One second of a run: requests that succeeded and requests that failed in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SecondBucket {
    pub requests: u64,
    pub errors: u64,
}

/// One point of a latency percentile curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CurvePoint {
    /// 0.5 .. 0.9999.
    pub quantile: f64,
    pub latency_us: u64,
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
    /// Second 0 of `per_second` (events before it count in second 0).
    start: Instant,
    per_second: Vec<SecondBucket>,
    /// A copy of every latency for the progress line, when one reads it.
    live: Option<Arc<LiveHistogram>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose per-second series starts now.
    pub fn new() -> Self {
        Self::with_start(Instant::now())
    }

    /// A recorder whose per-second series starts at `start` (the run's start): second `i`
    /// counts what succeeded or failed between `start + i s` and `start + (i+1) s`.
    pub fn with_start(start: Instant) -> Self {
        // Bounds and precision are constants that hdrhistogram accepts (1 µs .. 120 s, 3 digits).
        #[allow(clippy::expect_used)]
        let latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
        Self {
            latency_us,
            requests: 0,
            errors: BTreeMap::new(),
            connections: 0,
            resumed: 0,
            start,
            per_second: Vec::new(),
            live: None,
        }
    }

    /// Also copies every latency into `live` (read by the progress line while the run goes).
    pub fn with_live(mut self, live: Arc<LiveHistogram>) -> Self {
        self.live = Some(live);
        self
    }

    /// A successful request and its latency, counted in the current second.
    pub fn success(&mut self, latency: Duration) {
        self.success_at(latency, Instant::now());
    }

    /// A successful request and its latency, counted in the second of `at`.
    pub fn success_at(&mut self, latency: Duration, at: Instant) {
        self.requests += 1;
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency_us.saturating_record(us);
        if let Some(live) = &self.live {
            live.record(us);
        }
        self.bucket(at).requests += 1;
    }

    /// A failed request, counted in the current second.
    pub fn error(&mut self, kind: ErrorKind) {
        self.error_at(kind, Instant::now());
    }

    /// A failed request, counted in the second of `at`.
    pub fn error_at(&mut self, kind: ErrorKind, at: Instant) {
        *self.errors.entry(kind).or_default() += 1;
        self.bucket(at).errors += 1;
    }

    fn bucket(&mut self, at: Instant) -> &mut SecondBucket {
        let i = (at.saturating_duration_since(self.start).as_secs() as usize).min(MAX_SECONDS);
        if self.per_second.len() <= i {
            self.per_second.resize(i + 1, SecondBucket::default());
        }
        &mut self.per_second[i]
    }

    /// Requests and errors per second since the start (index: whole seconds since it).
    pub fn per_second(&self) -> &[SecondBucket] {
        &self.per_second
    }

    /// The start of second 0.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The latency percentile curve from p50 to p99.99, at points evenly spaced in
    /// log10(1 / (1 - q)) (20 per decade, so 90 %, 99 %, 99.9 % and 99.99 % are among them):
    /// the x axis of an HdrHistogram percentile plot. Empty when nothing succeeded.
    pub fn percentile_curve(&self) -> Vec<CurvePoint> {
        let h = &self.latency_us;
        if h.is_empty() {
            return Vec::new();
        }
        curve_quantiles()
            .into_iter()
            .map(|quantile| CurvePoint {
                quantile,
                latency_us: h.value_at_quantile(quantile),
            })
            .collect()
    }

    pub fn connection(&mut self, resumed: bool) {
        self.connections += 1;
        self.resumed += u64::from(resumed);
    }

    /// Adds `other`'s figures; its seconds are added to the ones they fall in here (its start
    /// rounded to whole seconds of this one's; the same start adds second to second).
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.requests += other.requests;
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        self.connections += other.connections;
        self.resumed += other.resumed;
        let shift = if other.start >= self.start {
            (other.start - self.start).as_secs_f64().round() as i64
        } else {
            -((self.start - other.start).as_secs_f64().round() as i64)
        };
        for (i, b) in other.per_second.iter().enumerate() {
            if b.requests == 0 && b.errors == 0 {
                continue;
            }
            let j = (i as i64 + shift).clamp(0, MAX_SECONDS as i64) as usize;
            if self.per_second.len() <= j {
                self.per_second.resize(j + 1, SecondBucket::default());
            }
            self.per_second[j].requests += b.requests;
            self.per_second[j].errors += b.errors;
        }
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

/// The quantiles of `Recorder::percentile_curve`: 0.5, then 20 points per decade of
/// 1 / (1 - q) up to 0.9999.
pub fn curve_quantiles() -> Vec<f64> {
    let mut out = vec![0.5];
    // log10(1 / (1 - q)) from 0.35 (q = 55.3 %) to 4.0 (q = 99.99 %) in steps of 0.05.
    for k in 7..=80u32 {
        let decades = f64::from(k) * 0.05;
        out.push(1.0 - 10f64.powf(-decades));
    }
    out
}

/// Sub-buckets per power of two in `LiveHistogram` (values below are exact): about 3 % wide.
const LIVE_SUB_BITS: u32 = 5;
const LIVE_SUB: u64 = 1 << LIVE_SUB_BITS;
/// Buckets up to `MAX_LATENCY_US` (< 2^27).
const LIVE_BUCKETS: usize = (LIVE_SUB + (27 - LIVE_SUB_BITS as u64) * LIVE_SUB) as usize;

/// A coarse latency histogram (log-linear buckets about 3 % wide) of atomic counters: one
/// load thread writes it (an uncontended atomic add per request), the progress line reads it.
pub struct LiveHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for LiveHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..LIVE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LiveHistogram {
    fn index(us: u64) -> usize {
        let us = us.clamp(1, MAX_LATENCY_US);
        if us < LIVE_SUB {
            return us as usize;
        }
        let exp = 63 - u64::from(us.leading_zeros()); // >= LIVE_SUB_BITS
        let shift = exp - u64::from(LIVE_SUB_BITS);
        let sub = (us >> shift) - LIVE_SUB; // 0 .. LIVE_SUB
        ((LIVE_SUB + shift * LIVE_SUB + sub) as usize).min(LIVE_BUCKETS - 1)
    }

    /// The highest value of bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < LIVE_SUB {
            return i;
        }
        let shift = (i - LIVE_SUB) / LIVE_SUB;
        let sub = (i - LIVE_SUB) % LIVE_SUB;
        ((LIVE_SUB + sub + 1) << shift) - 1
    }

    pub fn record(&self, us: u64) {
        self.buckets[Self::index(us)].fetch_add(1, Ordering::Relaxed);
    }

    fn add_to(&self, counts: &mut [u64]) {
        for (c, b) in counts.iter_mut().zip(self.buckets.iter()) {
            *c += b.load(Ordering::Relaxed);
        }
    }
}

/// The `LiveHistogram`s of a run's load threads (one each, registered when it starts), read
/// together: the p99 so far of the progress line.
#[derive(Default)]
pub struct LiveLatency {
    threads: Mutex<Vec<Arc<LiveHistogram>>>,
}

impl LiveLatency {
    /// A histogram for one load thread to write.
    pub fn register(&self) -> Arc<LiveHistogram> {
        let h = Arc::new(LiveHistogram::default());
        if let Ok(mut threads) = self.threads.lock() {
            threads.push(h.clone());
        }
        h
    }

    /// The latency (µs, within about 3 %) at quantile `q` of everything recorded so far;
    /// `None` before the first.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let mut counts = vec![0u64; LIVE_BUCKETS];
        if let Ok(threads) = self.threads.lock() {
            for h in threads.iter() {
                h.add_to(&mut counts);
            }
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(LiveHistogram::upper(i));
            }
        }
        Some(LiveHistogram::upper(LIVE_BUCKETS - 1))
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
    fn seconds_bucket_by_the_time_of_the_event() {
        let start = Instant::now();
        let mut r = Recorder::with_start(start);
        let ms = Duration::from_millis;
        r.success_at(ms(1), start);
        r.success_at(ms(1), start + ms(999));
        r.success_at(ms(1), start + ms(1000));
        r.error_at(ErrorKind::Io, start + ms(2500));
        r.success_at(ms(1), start + ms(3999));
        // Before the start (a lane's first connect): second 0.
        r.error_at(ErrorKind::Connect, start - ms(10));
        let b = |requests, errors| SecondBucket { requests, errors };
        assert_eq!(r.per_second(), &[b(2, 1), b(1, 0), b(0, 1), b(1, 0)]);
        // The plain calls count in the current second: the first one of a new recorder.
        let mut now = Recorder::new();
        now.success(ms(3));
        now.error(ErrorKind::Timeout);
        assert_eq!(now.per_second(), &[b(1, 1)]);
    }

    #[test]
    fn merge_adds_the_seconds() {
        let start = Instant::now();
        let s = Duration::from_secs;
        let mut a = Recorder::with_start(start);
        let mut b = Recorder::with_start(start);
        a.success_at(s(0), start);
        a.success_at(s(0), start + s(1));
        b.success_at(s(0), start + s(1));
        b.error_at(ErrorKind::Io, start + s(1));
        b.success_at(s(0), start + s(4));
        a.merge(&b);
        let bucket = |requests, errors| SecondBucket { requests, errors };
        assert_eq!(
            a.per_second(),
            &[
                bucket(1, 0),
                bucket(2, 1),
                bucket(0, 0),
                bucket(0, 0),
                bucket(1, 0)
            ]
        );
        // A recorder that started 2 s later: its second 0 is second 2 here.
        let mut later = Recorder::with_start(start + s(2));
        later.success_at(s(0), start + s(2));
        later.error_at(ErrorKind::Io, start + s(3));
        let mut c = Recorder::with_start(start);
        c.merge(&later);
        assert_eq!(
            c.per_second(),
            &[bucket(0, 0), bucket(0, 0), bucket(1, 0), bucket(0, 1)]
        );
        // One that started earlier: its first seconds fold into second 0.
        let mut earlier = Recorder::with_start(start - s(2));
        earlier.success_at(s(0), start - s(2));
        earlier.success_at(s(0), start + s(1));
        let mut d = Recorder::with_start(start);
        d.merge(&earlier);
        assert_eq!(d.per_second(), &[bucket(1, 0), bucket(1, 0)]);
    }

    #[test]
    fn the_percentile_curve_follows_the_distribution() {
        assert!(Recorder::new().percentile_curve().is_empty());
        let mut r = Recorder::new();
        for us in 1..=100_000u64 {
            r.success(Duration::from_micros(us));
        }
        let curve = r.percentile_curve();
        assert_eq!(curve.len(), curve_quantiles().len());
        assert_eq!(curve[0].quantile, 0.5);
        assert!((curve.last().unwrap().quantile - 0.9999).abs() < 1e-12);
        // Quantiles and latencies both rise; evenly spaced in log10(1 / (1 - q)).
        for w in curve.windows(2) {
            assert!(w[1].quantile > w[0].quantile, "{w:?}");
            assert!(w[1].latency_us >= w[0].latency_us, "{w:?}");
        }
        let x = |q: f64| (1.0 / (1.0 - q)).log10();
        for w in curve[1..].windows(2) {
            assert!((x(w[1].quantile) - x(w[0].quantile) - 0.05).abs() < 1e-9);
        }
        // Uniform on 1..=100 000 µs: the latency at q is 100 000 q (HDR: within 0.1 %).
        for p in &curve {
            let want = 100_000.0 * p.quantile;
            let got = p.latency_us as f64;
            assert!((got - want).abs() <= want * 0.001 + 1.0, "{p:?}");
        }
        for q in [0.9, 0.99, 0.999, 0.9999] {
            assert!(
                curve.iter().any(|p| (p.quantile - q).abs() < 1e-9),
                "{q} on the curve"
            );
        }
    }

    #[test]
    fn live_histogram_buckets_cover_every_value() {
        // Each value falls in a bucket whose upper bound is at or above it and within 1/32.
        for us in (1..5_000u64).chain((5_000..MAX_LATENCY_US).step_by(9_973)) {
            let i = LiveHistogram::index(us);
            let upper = LiveHistogram::upper(i);
            assert!(upper >= us, "{us} -> bucket {i} up to {upper}");
            assert!(
                upper as f64 <= us as f64 * (1.0 + 1.0 / 32.0),
                "{us} -> {upper}"
            );
            if i > 0 {
                assert!(LiveHistogram::upper(i - 1) < us, "{us} in bucket {i}");
            }
        }
        assert_eq!(
            LiveHistogram::index(MAX_LATENCY_US * 10),
            LiveHistogram::index(MAX_LATENCY_US)
        );
    }

    #[test]
    fn live_p99_reads_every_thread() {
        let live = LiveLatency::default();
        assert_eq!(live.quantile(0.99), None);
        let a = live.register();
        let b = live.register();
        // 995 fast requests on one thread, 5 slow ones on the other: p99 is fast, p99.9 slow.
        let mut rec = Recorder::new().with_live(a);
        for _ in 0..995 {
            rec.success(Duration::from_micros(100));
        }
        for _ in 0..5 {
            b.record(50_000);
        }
        let p99 = live.quantile(0.99).unwrap();
        assert!((100..=104).contains(&p99), "{p99}");
        let p999 = live.quantile(0.999).unwrap();
        assert!((50_000..=51_600).contains(&p999), "{p999}");
        // The recorder's own histogram is not changed by the copy.
        assert_eq!(rec.summary(Duration::from_secs(1)).requests, 995);
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_us(999), "999µs");
        assert_eq!(fmt_us(1_500), "1.50ms");
        assert_eq!(fmt_us(2_000_000), "2.00s");
    }
}
