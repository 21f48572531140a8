//! The data plane: one thread per worker, each running its own monoio event loop (io_uring,
//! or epoll where io_uring is unavailable) with its own SO_REUSEPORT listener, upstream pool,
//! session cache and metric handles. Workers share only the TLS acceptor and the snapshot.

pub mod access_log;
pub mod error;
mod h2;
pub mod http;
pub mod path;
pub mod proxy;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use boring::ssl::SslAcceptor;
use tokio::sync::watch;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::diagnostics::ErrorSink;
use crate::metrics::WorkerMetrics;
use crate::snapshot::Snapshot;
use crate::steering::{AcceptingGuard, Pulse, HEARTBEAT};
use crate::upstream::WorkerUpstreams;

/// Time and size limits on client connections and upstream requests (`[listener]`,
/// `server.max_connections` and `[upstream]` of the config file).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The client's TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Once its first byte arrived, a request head must arrive whole within this.
    pub header_timeout: Duration,
    /// A keep-alive connection waiting for its next request is closed after this.
    pub idle_timeout: Duration,
    /// The longest wait for the next bytes of a request body.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average once it has run for `body_timeout`
    /// (0: no rate check).
    pub body_min_rate: u64,
    /// Largest request body (0: none).
    pub max_request_body: u64,
    /// The backend must start answering within this (else 504); also bounds each read of a
    /// response body.
    pub request_timeout: Duration,
    /// Open client connections per worker.
    pub max_connections: usize,
    /// Requests in flight per backend per worker (0: none).
    pub max_connections_per_backend: usize,
}

/// Which event loop driver to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    /// `EDGEGW_IO_DRIVER=uring|epoll` forces one; otherwise io_uring when the kernel allows it.
    pub fn choose(forced: Option<&str>) -> Result<Driver, String> {
        let available = monoio::utils::detect_uring();
        match forced {
            Some("epoll") => Ok(Driver::Epoll),
            Some("uring") | Some("io_uring") if available => Ok(Driver::IoUring),
            Some("uring") | Some("io_uring") => {
                Err("EDGEGW_IO_DRIVER=uring but io_uring is not available on this machine".into())
            }
            Some(other) if !other.is_empty() => Err(format!(
                "EDGEGW_IO_DRIVER={other:?}: use \"uring\" or \"epoll\""
            )),
            _ if available => Ok(Driver::IoUring),
            _ => Ok(Driver::Epoll),
        }
    }

    /// Runs `future` to completion on a new monoio runtime (with timers) of this driver, on
    /// the calling thread.
    pub fn block_on<F: std::future::Future>(self, future: F) -> std::io::Result<F::Output> {
        Ok(match self {
            Driver::IoUring => {
                // COOP_TASKRUN (Linux 5.19+): completions are processed when the thread next
                // enters the kernel instead of by interrupting it; this loop enters often.
                let mut ring = io_uring::IoUring::builder();
                ring.setup_coop_taskrun().setup_single_issuer();
                let runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(1024)
                    .uring_builder(ring)
                    .enable_timer()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    // An older kernel refuses the flag: run without it.
                    Err(_) => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .with_entries(1024)
                        .enable_timer()
                        .build()?,
                };
                let mut runtime = runtime;
                runtime.block_on(future)
            }
            Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?
                .block_on(future),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// What every worker gets from the runtime.
#[derive(Clone)]
pub struct WorkerShared {
    pub acceptor: Arc<SslAcceptor>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub limits: Limits,
    pub max_idle_per_key: usize,
    pub upstream_idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub shutdown_grace: Duration,
    pub driver: Driver,
    pub access_log: crate::config::AccessLog,
    /// `server.pin_workers`: the runtime pins each worker thread to one CPU.
    pub pin_workers: bool,
    /// Upstream TLS sessions, shared by every worker.
    pub upstream_sessions: Arc<crate::upstream::SharedSessions>,
    /// Where details of failed requests go (the admin API's lookup by request id).
    pub recent_errors: ErrorSink,
    /// Callers' certificates: asked for or not, and sent on to backends or not.
    pub callers: CallerCertificates,
}

/// `listener.client_certificates` and `listener.forward_client_certificate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerCertificates {
    pub mode: crate::config::ClientCertificates,
    pub forward: bool,
}

/// One worker's state; lives on its thread only.
pub struct WorkerContext {
    pub id: usize,
    pub acceptor: Arc<SslAcceptor>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub limits: Limits,
    pub upstreams: RefCell<WorkerUpstreams>,
    pub metrics: WorkerMetrics,
    /// Set once shutdown starts: finish the current request, then close.
    pub draining: Cell<bool>,
    /// Sockets of connections waiting for their next request (closed at shutdown).
    pub idle_fds: RefCell<HashSet<RawFd>>,
    pub active: Cell<usize>,
    /// Liveness and load for the steering thread.
    pub pulse: Arc<Pulse>,
    /// When the last connection was accepted (see `FIRST_REQUEST_SETTLE`).
    last_accept: Cell<Option<Instant>>,
    pub access_log: Option<access_log::AccessLogger>,
    requests: Cell<u64>,
    pub recent_errors: ErrorSink,
    pub callers: CallerCertificates,
    /// Per backend: its `upstream.max_connections_per_backend` slots on this worker.
    backend_slots: RefCell<rustc_hash::FxHashMap<Arc<str>, Arc<Semaphore>>>,
}

impl WorkerContext {
    /// The in-flight slots of `backend` on this worker (`None`: no limit configured).
    pub fn backend_slots(&self, backend: &Arc<str>) -> Option<Arc<Semaphore>> {
        let limit = self.limits.max_connections_per_backend;
        if limit == 0 {
            return None;
        }
        let mut slots = self.backend_slots.borrow_mut();
        Some(
            slots
                .entry(backend.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone(),
        )
    }

    /// A request id unique to this process: process nonce, worker, sequence number.
    pub fn next_request_id(&self) -> String {
        let n = self.requests.get() + 1;
        self.requests.set(n);
        format!("{:08x}-{:x}-{n:x}", process_nonce(), self.id)
    }
}

/// Random per process, so request ids from a restarted gateway do not repeat.
fn process_nonce() -> u32 {
    static NONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| {
        let mut bytes = [0u8; 4];
        // On failure the nonce is 0: ids stay unique within the process.
        let _ = boring::rand::rand_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    })
}

/// Runs worker `id` on the current thread until shutdown completes.
pub fn run_worker(
    id: usize,
    shared: WorkerShared,
    listener: std::net::TcpListener,
    pulse: Arc<Pulse>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let future = worker_loop(id, shared.clone(), listener, pulse, shutdown);
    shared.driver.block_on(future)?
}

async fn worker_loop(
    id: usize,
    shared: WorkerShared,
    listener: std::net::TcpListener,
    pulse: Arc<Pulse>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = monoio::net::TcpListener::from_std(listener)?;
    let accepting = AcceptingGuard(pulse.clone());
    let ctx = Rc::new(WorkerContext {
        id,
        acceptor: shared.acceptor.clone(),
        snapshot: shared.snapshot.clone(),
        limits: shared.limits,
        upstreams: RefCell::new(WorkerUpstreams::new(
            shared.max_idle_per_key,
            shared.upstream_idle_timeout,
            shared.connect_timeout,
            shared.upstream_sessions.clone(),
        )),
        metrics: WorkerMetrics::new(id),
        draining: Cell::new(false),
        idle_fds: RefCell::default(),
        active: Cell::new(0),
        pulse,
        last_accept: Cell::new(None),
        access_log: access_log::AccessLogger::open(&shared.access_log)?,
        requests: Cell::new(0),
        recent_errors: shared.recent_errors.clone(),
        callers: shared.callers,
        backend_slots: RefCell::default(),
    });
    // `server.max_connections`: a connection holds one of these from accept to close; with
    // none free the worker stops accepting, and new connections wait in the accept queue.
    let connection_slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    if ctx.access_log.is_some() {
        monoio::spawn(flush_access_log(ctx.clone()));
    }
    monoio::spawn(sweep_idle_upstreams(ctx.clone()));
    monoio::spawn(heartbeat(ctx.clone()));
    tracing::debug!(worker = id, "worker accepting");
    loop {
        let slot = match connection_slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                ctx.metrics.limit_reached("connections");
                monoio::select! {
                    slot = connection_slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => break,
                }
            }
        };
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => spawn_connection(&ctx, stream, peer, slot),
                Err(_) if ctx.pulse.stop_accepting_requested() => break,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(worker = id, error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    drop(accepting);
    drain(&ctx, shared.shutdown_grace).await;
    Ok(())
}

fn spawn_connection(
    ctx: &Rc<WorkerContext>,
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    ctx.metrics.connection_accepted();
    ctx.active.set(ctx.active.get() + 1);
    ctx.pulse.set_active(ctx.active.get());
    ctx.last_accept.set(Some(Instant::now()));
    let ctx = ctx.clone();
    monoio::spawn(async move {
        proxy::serve_connection(ctx.clone(), stream, peer).await;
        ctx.active.set(ctx.active.get() - 1);
        ctx.pulse.set_active(ctx.active.get());
        ctx.metrics.connection_closed();
        drop(slot);
    });
}

/// How long a just-accepted connection gets to send its first request once shutdown starts.
const FIRST_REQUEST_SETTLE: Duration = Duration::from_millis(500);

/// Stops taking requests: idle keep-alive connections are closed now, busy ones after their
/// current response, all within the grace period.
async fn drain(ctx: &WorkerContext, grace: Duration) {
    let deadline = Instant::now() + grace;
    // A connection accepted just before the listener closed is still in its handshake or
    // about to send its first request; "idle" below would close it unserved (during a
    // restart handover, a failed connection). Let recent ones reach their first request.
    if let Some(accepted) = ctx.last_accept.get() {
        let settle = (accepted + FIRST_REQUEST_SETTLE).min(deadline);
        let now = Instant::now();
        if settle > now {
            monoio::time::sleep(settle - now).await;
        }
    }
    ctx.draining.set(true);
    loop {
        for fd in ctx.idle_fds.borrow().iter() {
            // SAFETY: the fd belongs to a live connection of this worker (it leaves the set
            // before its socket closes); SHUT_RD wakes its pending read with end-of-file.
            unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
        }
        if ctx.active.get() == 0 || Instant::now() >= deadline {
            break;
        }
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if ctx.active.get() > 0 {
        tracing::warn!(
            worker = ctx.id,
            open = ctx.active.get(),
            "shutdown grace elapsed with connections open"
        );
    }
    ctx.upstreams.borrow_mut().pool.clear();
    if let Some(log) = &ctx.access_log {
        log.flush();
    }
}

async fn flush_access_log(ctx: Rc<WorkerContext>) {
    loop {
        monoio::time::sleep(access_log::FLUSH_EVERY).await;
        if let Some(log) = &ctx.access_log {
            log.flush();
        }
    }
}

/// Proves to the steering thread that this event loop runs (a stalled loop stops beating
/// and is taken out of the eBPF socket map until it beats again).
async fn heartbeat(ctx: Rc<WorkerContext>) {
    loop {
        ctx.pulse.beat();
        if let Some(stall) = ctx.pulse.take_stall() {
            // Test hook (EDGEGW_TEST_HOOKS=1): block this event loop like a stuck worker.
            tracing::warn!(
                worker = ctx.id,
                ms = stall.as_millis() as u64,
                "test hook: stalling the worker"
            );
            std::thread::sleep(stall);
        }
        monoio::time::sleep(HEARTBEAT).await;
    }
}

/// Drops idle upstream connections past their timeout, so idle sockets are not held forever.
async fn sweep_idle_upstreams(ctx: Rc<WorkerContext>) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        if ctx.draining.get() {
            return;
        }
        ctx.upstreams
            .borrow_mut()
            .pool
            .evict_expired(Instant::now(), |reason| {
                ctx.metrics.pool_eviction(reason.as_str())
            });
    }
}
