//! The well-behaved client of the hardening scenarios (`soak`, `slowloris`): open-loop load
//! at a fixed, modest rate, on a few keep-alive TLS connections plus a few new connections
//! per second (full handshake, one GET, `Connection: close`). Latency counts from each
//! request's due time (see `pacing`). What it measured is kept in a [`Window`] that the
//! caller takes whenever it wants a period's figures (every sample of `soak`, every phase of
//! `slowloris`). One event loop of the suite's engine (`crate::engine`) on one thread.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boring::ssl::SslContext;

use crate::client::{self, Conn};
use crate::pacing::Schedule;
use crate::run::{Driver, Target};
use crate::stats::{ErrorKind, Recorder};

/// How much load the good client offers.
#[derive(Clone, Debug)]
pub struct Load {
    /// Keep-alive connections sharing `keepalive_rate`.
    pub keepalive_connections: usize,
    /// Requests per second over the keep-alive connections.
    pub keepalive_rate: f64,
    /// New connections per second (0: none), each one request.
    pub newconn_rate: f64,
    /// Give up on a request after this long (a timeout error).
    pub request_timeout: Duration,
}

/// What was measured since the last [`Meter::take`].
#[derive(Clone, Default)]
pub struct Window {
    pub keepalive: Recorder,
    /// Latency of a new connection includes its TCP connect and TLS handshake.
    pub newconn: Recorder,
}

impl Window {
    pub fn requests(&self) -> u64 {
        self.keepalive.requests + self.newconn.requests
    }

    pub fn errors(&self) -> u64 {
        self.keepalive.error_count() + self.newconn.error_count()
    }
}

/// Shared between the load thread and whoever reads the figures.
#[derive(Default)]
pub struct Meter {
    window: Mutex<Window>,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    stop: AtomicBool,
}

impl Meter {
    /// The figures since the last call; the next window starts empty.
    pub fn take(&self) -> Window {
        std::mem::take(&mut *self.lock())
    }

    /// Ends the load before its deadline (requests in flight finish or time out).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, newconn: bool, result: Result<Duration, ErrorKind>) {
        let mut w = self.lock();
        let rec = if newconn {
            &mut w.newconn
        } else {
            &mut w.keepalive
        };
        match result {
            Ok(latency) => {
                rec.success(latency);
                self.requests.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                rec.error(kind);
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Starts the load on its own thread for `duration` (from about now); returns at once.
pub fn start(
    load: &Load,
    target: &Target,
    context: &SslContext,
    driver: Driver,
    duration: Duration,
) -> (Arc<Meter>, JoinHandle<Result<(), String>>) {
    let meter = Arc::new(Meter::default());
    let (load, target, context, m) = (load.clone(), target.clone(), context.clone(), meter.clone());
    let handle = std::thread::spawn(move || {
        driver
            .block_on(run(load, target, context, duration, m))
            .map_err(|e| format!("good client event loop: {e}"))
    });
    (meter, handle)
}

/// New connections per second are spread over this many lanes (so that one slow handshake
/// does not delay the next one).
const NEWCONN_LANES: usize = 4;

async fn run(load: Load, target: Target, context: SslContext, duration: Duration, m: Arc<Meter>) {
    let start = Instant::now() + Duration::from_millis(10);
    let deadline = start + duration;
    let shared = Rc::new(Shared {
        keepalive_request: client::get_request(&target.authority, "/good/keepalive", false),
        newconn_request: client::get_request(&target.authority, "/good/newconn", true),
        target,
        context,
        timeout: load.request_timeout,
        deadline,
        meter: m,
    });
    let mut tasks = Vec::new();
    let n = load.keepalive_connections.max(1);
    if load.keepalive_rate > 0.0 {
        for lane in 0..n {
            let s = Schedule::new(start, load.keepalive_rate, lane, n);
            tasks.push(crate::engine::spawn(lane_loop(shared.clone(), s, false)));
        }
    }
    if load.newconn_rate > 0.0 {
        for lane in 0..NEWCONN_LANES {
            let s = Schedule::new(start, load.newconn_rate, lane, NEWCONN_LANES);
            tasks.push(crate::engine::spawn(lane_loop(shared.clone(), s, true)));
        }
    }
    for t in tasks {
        // A lane that panicked has recorded what it did; the others still count.
        let _ = t.await;
    }
}

struct Shared {
    target: Target,
    context: SslContext,
    keepalive_request: Vec<u8>,
    newconn_request: Vec<u8>,
    timeout: Duration,
    deadline: Instant,
    meter: Arc<Meter>,
}

async fn lane_loop(s: Rc<Shared>, schedule: Schedule, newconn: bool) {
    let mut conn: Option<Conn> = None;
    for k in 0u64.. {
        let due = schedule.due(k);
        if due >= s.deadline || s.meter.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            crate::engine::sleep(wait).await;
        }
        let outcome = crate::engine::timeout(s.timeout, one(&s, &mut conn, newconn)).await;
        let result = match outcome {
            Ok(Ok(())) => Ok(due.elapsed()),
            Ok(Err(kind)) => Err(kind),
            Err(_) => Err(ErrorKind::Timeout),
        };
        let failed_to_connect = result == Err(ErrorKind::Connect);
        s.meter.record(newconn, result);
        if failed_to_connect {
            crate::engine::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn one(s: &Shared, conn: &mut Option<Conn>, newconn: bool) -> Result<(), ErrorKind> {
    let mut c = match conn.take() {
        Some(c) => c,
        None => Conn::connect(s.target.addr, &s.context, s.target.sni.as_deref(), None).await?,
    };
    let request = if newconn {
        &s.newconn_request
    } else {
        &s.keepalive_request
    };
    let response = c.request(request).await?;
    if let Some(kind) = ErrorKind::from_status(response.status) {
        return Err(kind);
    }
    if !response.close {
        *conn = Some(c);
    }
    Ok(())
}
