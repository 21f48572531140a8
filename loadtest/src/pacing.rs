//! Open-loop pacing: a fixed request rate spread over a set of lanes (connections).
//!
//! Request number `j` of the whole run is due at `start + j / rate`; lane `i` of `n` sends
//! requests `i, i + n, i + 2n, ...`. Due times are computed from the request number, never by
//! adding intervals, so they do not drift. A late lane sends at once and its latency still
//! counts from the due time: a stall shows up in every request it delayed (no coordinated
//! omission).

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    lane: u64,
    lanes: u64,
}

impl Schedule {
    /// Lane `lane` of `lanes` sharing `rate` requests per second from `start`.
    pub fn new(start: Instant, rate: f64, lane: usize, lanes: usize) -> Self {
        Self {
            start,
            // At least one request per 1000 s: keeps every offset finite.
            rate: if rate.is_finite() {
                rate.max(1e-3)
            } else {
                1e-3
            },
            lane: lane as u64,
            lanes: lanes.max(1) as u64,
        }
    }

    /// Offset from `start` of this lane's `k`-th request.
    pub fn offset(&self, k: u64) -> Duration {
        let j = self.lane + k * self.lanes;
        Duration::from_secs_f64(j as f64 / self.rate)
    }

    /// When this lane's `k`-th request is due.
    pub fn due(&self, k: u64) -> Instant {
        self.start + self.offset(k)
    }

    /// Time between two requests of one lane.
    pub fn lane_interval(&self) -> Duration {
        Duration::from_secs_f64(self.lanes as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_interleave_into_an_even_schedule() {
        let start = Instant::now();
        let lanes = 7;
        let rate = 1000.0;
        let mut all: Vec<Duration> = (0..lanes)
            .flat_map(|i| {
                let s = Schedule::new(start, rate, i, lanes);
                (0..100).map(move |k| s.offset(k))
            })
            .collect();
        all.sort();
        assert_eq!(all.len(), 700);
        for (j, d) in all.iter().enumerate() {
            let want = Duration::from_secs_f64(j as f64 / rate);
            let diff = d.abs_diff(want);
            assert!(
                diff < Duration::from_nanos(10),
                "request {j}: {d:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn the_rate_is_kept_over_long_runs() {
        // One hour at 33 333 req/s over 64 lanes: no drift from accumulated rounding.
        let start = Instant::now();
        let rate = 33_333.0;
        let s = Schedule::new(start, rate, 63, 64);
        let k = (3600.0 * rate / 64.0) as u64;
        let want = (63 + k * 64) as f64 / rate;
        let got = s.offset(k).as_secs_f64();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert_eq!(s.due(k), start + s.offset(k));
        assert!((s.lane_interval().as_secs_f64() - 64.0 / rate).abs() < 1e-9);
    }

    #[test]
    fn first_requests_are_staggered() {
        let start = Instant::now();
        let a = Schedule::new(start, 100.0, 0, 4);
        let b = Schedule::new(start, 100.0, 1, 4);
        assert_eq!(a.offset(0), Duration::ZERO);
        assert_eq!(b.offset(0), Duration::from_millis(10));
        assert_eq!(a.offset(1), Duration::from_millis(40));
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let s = Schedule::new(Instant::now(), 0.0, 0, 0);
        assert_eq!(s.offset(1), Duration::from_secs(1000));
        let s = Schedule::new(Instant::now(), f64::NAN, 0, 1);
        assert_eq!(s.offset(1), Duration::from_secs(1000));
    }
}
