//! Starts and stops the gateway: the control plane (admin API, metrics endpoint, ticket-key
//! rotation, signals) on one tokio thread, and the data-plane workers on their own threads.
//! The two meet only at the snapshot (`crate::snapshot`).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::{self, ControlPlane};
use crate::config::{Config, SteeringMode, StoreKind};
use crate::dataplane::{self, Driver, Limits, WorkerShared};
use crate::metrics;
use crate::snapshot::Publisher;
use crate::store::{self, MasterKey, StoreSettings};
use crate::tls::server::{build_acceptor, ServerTlsSettings};
use crate::tls::tickets::TicketKeys;

/// Fixed client-side limits (not yet in the configuration file).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the gateway could not start or stopped with an error.
#[derive(Debug)]
pub struct RunError(String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

fn fail(context: &str, e: impl std::fmt::Display) -> RunError {
    RunError(format!("{context}: {e}"))
}

/// Runs the gateway until SIGTERM or SIGINT, then drains and returns.
pub fn run(config: Config) -> Result<(), RunError> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| fail(&format!("server.data_dir {}", data_dir.display()), e))?;
    let prometheus = metrics::install().map_err(RunError)?;

    // Control-plane state: store, keys, snapshot publisher.
    if config.store.kind == StoreKind::Etcd {
        return Err(RunError(
            "store.kind = \"etcd\" is not available in this build yet; use \"embedded\"".into(),
        ));
    }
    let master_key = MasterKey::resolve(
        std::env::var("EDGEGW_MASTER_KEY").ok(),
        config.store.master_key_file.as_deref(),
        &data_dir,
    )
    .map_err(|e| fail("master key", e))?;
    let store = store::open(&StoreSettings {
        kind: store::StoreKind::Embedded,
        data_dir: data_dir.clone(),
        etcd_endpoints: config.store.etcd_endpoints.clone(),
        etcd_prefix: config.store.etcd_prefix.clone(),
    })
    .map_err(|e| fail("opening the store", e))?;
    let token = admin::resolve_token(
        config.admin.token.clone(),
        std::env::var("EDGEGW_ADMIN_TOKEN").ok(),
        &data_dir,
    )
    .map_err(|e| fail("admin token", e))?;
    let publisher = Arc::new(Publisher::new());
    let snapshot = publisher.handle();
    let publish = {
        let publisher = publisher.clone();
        Box::new(move |resources: &crate::model::Resources| publisher.publish(resources))
    };
    let control = Arc::new(
        ControlPlane::open(store, master_key, publish)
            .map_err(|e| fail("loading the store", e))?
            .with_audit_log(admin::AuditLog::open(&data_dir).map_err(|e| fail("audit log", e))?),
    );

    // TLS for clients: one acceptor shared by all workers.
    let tickets = TicketKeys::random().map_err(|e| fail("ticket keys", e))?;
    let acceptor = build_acceptor(
        &ServerTlsSettings {
            certificate: config.listener.certificate.as_deref(),
            private_key: config.listener.private_key.as_deref(),
            data_dir: &data_dir,
            session_tickets: config.listener.session_tickets,
            key_exchange_groups: &config.listener.key_exchange_groups,
        },
        &tickets,
    )
    .map_err(|e| fail("listener TLS", e))?;

    // Sockets first, so a port in use fails the start before anything runs.
    let admin_listener = bind_plain(config.admin.address, "admin.address")?;
    let metrics_listener = bind_plain(config.metrics.address, "metrics.address")?;
    ensure_port_free(config.listener.address)?;
    let workers = config.server.workers.max(1);
    let listeners = (0..workers)
        .map(|_| bind_reuseport(config.listener.address))
        .collect::<Result<Vec<_>, _>>()?;
    steering_note(&config);

    let driver =
        Driver::choose(std::env::var("EDGEGW_IO_DRIVER").ok().as_deref()).map_err(RunError)?;
    tracing::info!(
        driver = driver.name(),
        workers,
        listener = %config.listener.address,
        admin = %config.admin.address,
        metrics = %config.metrics.address,
        "edgegw starting"
    );
    let shared = WorkerShared {
        acceptor: Arc::new(acceptor),
        snapshot,
        limits: Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: CLIENT_IDLE_TIMEOUT,
            request_timeout: config.upstream.request_timeout,
        },
        max_idle_per_key: config.upstream.max_idle_per_key,
        upstream_idle_timeout: config.upstream.idle_timeout,
        connect_timeout: config.upstream.connect_timeout,
        shutdown_grace: config.server.shutdown_grace,
        driver,
        access_log: config.server.access_log.clone(),
    };
    let (stop_workers, worker_stop_signal) = watch::channel(false);
    let handles = start_workers(shared, listeners, worker_stop_signal)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("starting the control-plane runtime", e))?;
    let control_result = runtime.block_on(control_plane(
        control,
        token,
        admin_listener,
        metrics_listener,
        prometheus,
        tickets,
        config.listener.ticket_key_rotation,
    ));
    tracing::info!("shutting down: draining workers");
    let _ = stop_workers.send(true);
    let mut worker_error = None;
    for (id, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => worker_error = Some(fail(&format!("worker {id}"), e)),
            Err(_) => worker_error = Some(RunError(format!("worker {id} panicked"))),
        }
    }
    control_result?;
    if let Some(e) = worker_error {
        return Err(e);
    }
    tracing::info!("edgegw stopped");
    Ok(())
}

fn start_workers(
    shared: WorkerShared,
    listeners: Vec<TcpListener>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<std::io::Result<()>>>, RunError> {
    let cpus = crate::config::online_cpus();
    listeners
        .into_iter()
        .enumerate()
        .map(|(id, listener)| {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("edgegw-worker-{id}"))
                .spawn(move || {
                    pin_to_cpu(id % cpus);
                    dataplane::run_worker(id, shared, listener, stop)
                })
                .map_err(|e| fail(&format!("starting worker {id}"), e))
        })
        .collect()
}

/// Thread per core: keep each worker on its own CPU (best effort).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity(0, ..)
    // applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!(cpu, "could not pin worker to its CPU");
        }
    }
}

fn steering_note(config: &Config) {
    match config.steering.mode {
        SteeringMode::Kernel => tracing::info!("connection steering: kernel SO_REUSEPORT hash"),
        // The eBPF steering program is not part of this build yet: say so instead of
        // pretending it is attached.
        SteeringMode::Auto | SteeringMode::Ebpf => tracing::info!(
            "connection steering: kernel SO_REUSEPORT hash (the eBPF steering program is not in this build)"
        ),
    }
}

async fn control_plane(
    control: Arc<ControlPlane>,
    token: String,
    admin_listener: TcpListener,
    metrics_listener: TcpListener,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    tickets: TicketKeys,
    rotation: Duration,
) -> Result<(), RunError> {
    let admin_listener =
        tokio::net::TcpListener::from_std(admin_listener).map_err(|e| fail("admin listener", e))?;
    let metrics_listener = tokio::net::TcpListener::from_std(metrics_listener)
        .map_err(|e| fail("metrics listener", e))?;
    let admin_app = admin::router(control, token);
    let render = prometheus.clone();
    let metrics_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics::render(&render),
                )
            }
        }),
    );
    let admin_server =
        axum::serve(admin_listener, admin_app).with_graceful_shutdown(shutdown_signal());
    let metrics_server =
        axum::serve(metrics_listener, metrics_app).with_graceful_shutdown(shutdown_signal());
    let upkeep = async move {
        let mut histograms = tokio::time::interval(Duration::from_secs(5));
        let mut ticket_rotation = tokio::time::interval(rotation);
        ticket_rotation.tick().await;
        loop {
            tokio::select! {
                _ = histograms.tick() => prometheus.run_upkeep(),
                _ = ticket_rotation.tick() => match tickets.rotate() {
                    Ok(()) => {
                        metrics::record_ticket_rotation();
                        tracing::info!("session ticket key rotated");
                    }
                    Err(e) => tracing::error!(error = %e, "ticket key rotation failed"),
                },
            }
        }
    };
    tokio::select! {
        r = async { tokio::try_join!(admin_server, metrics_server) } => {
            r.map_err(|e| fail("control-plane server", e))?;
        }
        _ = upkeep => {}
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (every caller gets its own registration).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

fn bind_plain(addr: SocketAddr, key: &str) -> Result<TcpListener, RunError> {
    let listener = TcpListener::bind(addr).map_err(|e| fail(&format!("{key} {addr}"), e))?;
    listener.set_nonblocking(true).map_err(|e| fail(key, e))?;
    Ok(listener)
}

/// SO_REUSEPORT lets any process of the same user join the port silently: check first that
/// nobody holds it.
fn ensure_port_free(addr: SocketAddr) -> Result<(), RunError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| fail(&format!("listener.address {addr} is not available"), e))
}

/// One worker's listener in the shared SO_REUSEPORT group.
fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener, RunError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let context = |e| fail(&format!("listener.address {addr}"), e);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(context)?;
    socket.set_reuse_address(true).map_err(context)?;
    socket.set_reuse_port(true).map_err(context)?;
    socket.set_nonblocking(true).map_err(context)?;
    socket.bind(&addr.into()).map_err(context)?;
    socket.listen(4096).map_err(context)?;
    Ok(socket.into())
}
