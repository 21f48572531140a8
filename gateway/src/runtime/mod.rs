//! Starts and stops the gateway: the control plane (admin API, metrics endpoint, ticket-key
//! rotation, signals, the control socket) on one tokio thread, and the data-plane workers on
//! their own threads. The two meet only at the snapshot (`crate::snapshot`). Connection
//! steering and the restart handover between two processes: `crate::steering`.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::admin::{self, ControlPlane};
use crate::config::{Config, StoreKind};
use crate::dataplane::{self, Driver, Limits, WorkerShared};
use crate::files;
use crate::metrics;
use crate::snapshot::Publisher;
use crate::steering::handover::{self, ControlSocket};
use crate::steering::{self, Pulse, Steering};
use crate::store::etcd::EtcdSettings;
use crate::store::{self, MasterKey};
use crate::tls::server::{build_acceptor, ServerTlsSettings};
use crate::tls::tickets::TicketKeys;

mod fleet;
mod migrate;

pub use migrate::{migrate, Migrated};

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

/// Runs the gateway until SIGTERM or SIGINT (or until a new edgegw on the same
/// configuration takes over, see `steering::handover`), then drains and returns.
pub fn run(config: Config) -> Result<(), RunError> {
    // Also checked when the file is read (`edgegw check`); here for any other Config.
    if let Some(why) = config.admin.plaintext_refusal() {
        return Err(RunError(format!("admin.address: {why}")));
    }
    let data_dir = config.server.data_dir.clone();
    files::create_private_dir_all(&data_dir)
        .map_err(|e| fail(&format!("server.data_dir {}", data_dir.display()), e))?;
    // Before anything is created: what an operator (or an older edgegw) left open.
    files::warn_loose_modes(&data_dir);
    if let crate::config::AccessLog::File(path) = &config.server.access_log {
        // The workers open it with default options: created here first, 0600. An error
        // is theirs to report.
        let _ = files::ensure_private_file(path);
    }
    let prometheus = metrics::install().map_err(RunError)?;

    // Fleet mode: etcd's client and the one watch run on their own thread, so that the
    // store can be read before anything else starts and outlives every handover loop.
    let fleet_runtime = match config.store.kind {
        StoreKind::Etcd => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("edgegw-etcd")
                .enable_all()
                .build()
                .map_err(|e| fail("starting the etcd client runtime", e))?,
        ),
        StoreKind::Embedded => None,
    };

    // Is the data-plane port free, or held by an edgegw on this data dir that hands over?
    // SO_REUSEPORT would let us join any group of our user silently: a plain bind first.
    let listen = config.listener.address;
    let socket_path = handover::socket_path(&data_dir);
    let takeover = match ensure_port_free(listen) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let takeover = handover::request(&socket_path, listen).map_err(|why| {
                RunError(format!(
                    "listener.address {listen} is not available: it is in use by another process, and {why}"
                ))
            })?;
            tracing::info!(
                "taking over from the edgegw running on this data dir: it released the store and the admin/metrics ports"
            );
            Some(takeover)
        }
        Err(e) => {
            return Err(fail(
                &format!("listener.address {listen} is not available"),
                e,
            ))
        }
    };
    // The old process may need a moment to let go of the store and the ports.
    let patience = if takeover.is_some() {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    steering::enable_migration();

    // Control-plane state: store, keys, snapshot publisher.
    let master_key = || {
        MasterKey::resolve(
            std::env::var("EDGEGW_MASTER_KEY").ok(),
            config.store.master_key_file.as_deref(),
            &data_dir,
        )
        .map_err(|e| fail("master key", e))
    };
    let token = admin::resolve_token(
        config.admin.token.as_ref(),
        std::env::var("EDGEGW_ADMIN_TOKEN").ok(),
        &data_dir,
    )
    .map_err(|e| fail("admin token", e))?;
    let client_ca_ids = client_ca_ids(&config.listener.client_ca_ids)?;
    let publisher = Arc::new(
        Publisher::new()
            .with_client_certificates(config.listener.client_certificates, client_ca_ids.clone()),
    );
    let snapshot = publisher.handle();
    let publish = || -> admin::Publish {
        let publisher = publisher.clone();
        Box::new(move |resources: &crate::model::Resources| {
            let generation = publisher.publish(resources);
            let expiries = metrics::Expiries {
                certificates: resources
                    .certificates
                    .values()
                    .map(|c| (c.id.to_string(), c.info.not_after.unix_timestamp()))
                    .collect(),
                ca_certificates: resources
                    .ca_certificates
                    .values()
                    .map(|c| (c.id.to_string(), c.info.not_after.unix_timestamp()))
                    .collect(),
            };
            metrics::record_config(generation, expiries);
        })
    };
    // TLS for clients: one ticket-key set for all workers: the previous process's after a
    // handover (its clients resume here), in a fleet the fleet's (installed once read).
    let tickets = match takeover.as_ref().and_then(|t| t.ticket_keys()) {
        Some(bytes) => {
            match TicketKeys::import(bytes) {
                Some(keys) => {
                    tracing::info!("handover: took over the previous edgegw's session ticket keys");
                    keys
                }
                None => {
                    tracing::warn!("handover: the previous edgegw's ticket keys are unreadable; using new ones");
                    TicketKeys::random().map_err(|e| fail("ticket keys", e))?
                }
            }
        }
        None => TicketKeys::random().map_err(|e| fail("ticket keys", e))?,
    };
    let open_control = |patience: Duration| -> Result<Arc<ControlPlane>, RunError> {
        let store = retry(patience, || {
            store::open_embedded(&data_dir).map_err(|e| fail("opening the store", e))
        })?;
        metrics::record_store_connected(true);
        Ok(Arc::new(
            ControlPlane::open(Box::new(store), master_key()?, publish())
                .map_err(|e| fail("loading the store", e))?
                .with_listener_ca_ids(client_ca_ids.clone())
                .with_audit_log(
                    admin::AuditLog::open(&data_dir)
                        .map_err(|e| fail("audit log", e))?
                        .with_node(node_name(&config)),
                ),
        ))
    };
    let fleet_node = match &fleet_runtime {
        Some(runtime) => Some(fleet::start(fleet::FleetStart {
            settings: EtcdSettings {
                endpoints: config.store.etcd_endpoints.clone(),
                prefix: config.store.etcd_prefix.clone(),
                timeout: config.store.etcd_timeout,
            },
            runtime,
            data_dir: &data_dir,
            node: node_name(&config),
            master_key: &master_key,
            publish: publish(),
            tickets: tickets.clone(),
            rotation: config.listener.ticket_key_rotation,
            listener_ca_ids: client_ca_ids.clone(),
        })?),
        None => None,
    };
    let control = match &fleet_node {
        Some(node) => node.control(),
        None => open_control(patience)?,
    };

    let acceptor = build_acceptor(
        &ServerTlsSettings {
            certificate: config.listener.certificate.as_deref(),
            private_key: config.listener.private_key.as_deref(),
            data_dir: &data_dir,
            session_tickets: config.listener.session_tickets,
            key_exchange_groups: &config.listener.key_exchange_groups,
            alpn: &config.listener.alpn,
            client_certificates: config.listener.client_certificates,
        },
        &tickets,
    )
    .map_err(|e| fail("listener TLS", e))?;

    // Sockets first, so a port in use fails the start before anything runs.
    let bind_control_ports = |patience: Duration| -> Result<(TcpListener, TcpListener), RunError> {
        Ok((
            retry(patience, || {
                bind_plain(config.admin.address, "admin.address")
            })?,
            retry(patience, || {
                bind_plain(config.metrics.address, "metrics.address")
            })?,
        ))
    };
    let (admin_listener, metrics_listener) = bind_control_ports(patience)?;
    let workers = config.server.workers.max(1);
    let listeners = (0..workers)
        .map(|_| bind_reuseport(listen))
        .collect::<Result<Vec<_>, _>>()?;
    let mut steering = Steering::start(&config.steering, &listeners).map_err(RunError)?;

    let driver =
        Driver::choose(std::env::var("EDGEGW_IO_DRIVER").ok().as_deref()).map_err(RunError)?;
    tracing::info!(
        driver = driver.name(),
        workers,
        listener = %listen,
        admin = %config.admin.address,
        metrics = %config.metrics.address,
        "edgegw starting"
    );
    let (error_sink, recent_errors) = crate::diagnostics::channel();
    let shared = WorkerShared {
        acceptor: Arc::new(acceptor),
        snapshot,
        limits: Limits {
            handshake_timeout: config.listener.handshake_timeout,
            header_timeout: config.listener.header_timeout,
            idle_timeout: config.listener.idle_timeout,
            body_timeout: config.listener.body_timeout,
            body_min_rate: config.listener.body_min_rate,
            max_request_body: config.listener.max_request_body_bytes,
            request_timeout: config.upstream.request_timeout,
            max_connections: config.server.max_connections,
            max_connections_per_backend: config.upstream.max_connections_per_backend,
        },
        max_idle_per_key: config.upstream.max_idle_per_key,
        upstream_idle_timeout: config.upstream.idle_timeout,
        connect_timeout: config.upstream.connect_timeout,
        shutdown_grace: config.server.shutdown_grace,
        driver,
        access_log: config.server.access_log.clone(),
        pin_workers: config.pin_workers(),
        upstream_sessions: crate::upstream::SharedSessions::new(),
        recent_errors: error_sink,
        callers: crate::dataplane::CallerCertificates {
            mode: config.listener.client_certificates,
            forward: config.listener.forward_client_certificate,
        },
    };
    let (stop_workers, worker_stop_signal) = watch::channel(false);
    let handles = start_workers(shared, listeners, steering.pulses(), worker_stop_signal)?;
    steering.start_monitor().map_err(RunError)?;
    if let Some(takeover) = takeover {
        match takeover.joined() {
            Ok(()) => {
                tracing::info!("handover complete: the previous edgegw stops accepting and drains")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the previous edgegw did not confirm the handover")
            }
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("starting the control-plane runtime", e))?;
    let control_socket = {
        let _guard = runtime.enter();
        ControlSocket::bind(&socket_path)
            .map_err(|e| fail(&format!("control socket {}", socket_path.display()), e))?
    };
    let steering_control = steering.control();
    let console = {
        let render = prometheus.clone();
        let mode = match steering.active() {
            steering::Active::Ebpf(_) => "ebpf",
            steering::Active::Kernel => "kernel",
        };
        Arc::new(admin::console::Console::new(
            listen,
            publisher.handle(),
            vec![driver.name(); workers],
            mode,
            Arc::new(move || metrics::request_totals(&render)),
        ))
    };
    let ready = readiness(
        steering.pulses().to_vec(),
        fleet_node.as_ref().map(|node| node.configured()),
    );
    let mut control = Some(control);
    let mut ports = Some((admin_listener, metrics_listener));
    let control_result = loop {
        let (Some(plane), Some((admin_listener, metrics_listener))) =
            (control.take(), ports.take())
        else {
            break Err(RunError("internal: control plane missing".into()));
        };
        let exit = runtime.block_on(control_plane(ControlPlaneParts {
            control: plane,
            publisher: publisher.clone(),
            token: token.clone(),
            ready: ready.clone(),
            recent_errors: recent_errors.clone(),
            admin_listener,
            metrics_listener,
            prometheus: prometheus.clone(),
            tickets: tickets.clone(),
            // A fleet rotates its shared keys itself (see `fleet`).
            rotation: fleet_node
                .is_none()
                .then_some(config.listener.ticket_key_rotation),
            control_socket: &control_socket,
            steering: steering_control.clone(),
            listen,
            console: console.clone(),
        }));
        match exit {
            Ok(Exit::Signal) => break Ok(()),
            Err(e) => break Err(e),
            Ok(Exit::Handover(mut incoming)) => {
                // The store and the admin/metrics listeners are closed now.
                let joined = runtime.block_on(async {
                    if let Err(e) = incoming.released(tickets.export().expose()).await {
                        tracing::warn!(error = %e, "handover: the new edgegw went away");
                        return false;
                    }
                    if incoming.wait_joined(HANDOVER_JOIN_TIMEOUT).await {
                        incoming.draining().await;
                        true
                    } else {
                        false
                    }
                });
                if joined {
                    tracing::info!(
                        "handover: the new edgegw serves; stopping accepting and draining"
                    );
                    break Ok(());
                }
                tracing::warn!(
                    "handover aborted by the new edgegw: taking the store and the admin/metrics ports back"
                );
                // A fleet node's control plane never let go of anything: it goes on.
                let reopen = |patience| match &fleet_node {
                    Some(node) => Ok(node.control()),
                    None => open_control(patience),
                };
                match reopen(HANDOVER_REACQUIRE)
                    .and_then(|c| Ok((c, bind_control_ports(HANDOVER_REACQUIRE)?)))
                {
                    Ok((c, p)) => {
                        control = Some(c);
                        ports = Some(p);
                    }
                    Err(e) => break Err(e),
                }
            }
        }
    };
    tracing::info!("shutting down: draining workers");
    steering.stop_accepting();
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
    drop(fleet_node);
    if let Some(runtime) = fleet_runtime {
        // Stops the watch without waiting for a blocked etcd request.
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
    tracing::info!("edgegw stopped");
    Ok(())
}

/// `GET /readyz`: ready once the store is loaded (always, by the time the admin API runs
/// on the embedded store; in a fleet, once the node has a configuration: from etcd or its
/// local copy) and every worker's event loop has run and accepts connections.
fn readiness(pulses: Vec<Arc<Pulse>>, configured: Option<Arc<AtomicBool>>) -> admin::Readiness {
    Arc::new(move || {
        if configured
            .as_ref()
            .is_some_and(|c| !c.load(Ordering::Relaxed))
        {
            return Err(admin::NotReady {
                reason: "StoreNotLoaded",
                message: "The gateway has not read its configuration from the store yet."
                    .to_owned(),
            });
        }
        let waiting = pulses.iter().filter(|p| !p.serving()).count();
        if waiting > 0 {
            return Err(admin::NotReady {
                reason: "WorkersNotServing",
                message: format!(
                    "{waiting} of {} data-plane workers are not serving.",
                    pulses.len()
                ),
            });
        }
        Ok(())
    })
}

/// `listener.client_ca_ids` as resource ids (the config file is read before the model's
/// id rule can be applied).
fn client_ca_ids(raw: &[String]) -> Result<Vec<crate::model::ResourceId>, RunError> {
    raw.iter()
        .enumerate()
        .map(|(i, id)| {
            crate::model::ResourceId::parse(id).map_err(|_| {
                RunError(format!(
                    "listener.client_ca_ids[{i}]: {id:?} is not an id (1 to 80 characters of A-Z a-z 0-9 . _ -)"
                ))
            })
        })
        .collect()
}

/// How this node names itself in audit lines (`store.node_name`, else host name and
/// listener port: two nodes on one host differ by their port).
fn node_name(config: &Config) -> String {
    if let Some(name) = &config.store.node_name {
        return name.clone();
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // on success (we also stop at the first NUL).
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_owned()
    };
    format!("{host}:{}", config.listener.address.port())
}

/// How long the old process waits for the new one to join before taking everything back.
const HANDOVER_JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it then waits for the store and the ports to be free again.
const HANDOVER_REACQUIRE: Duration = Duration::from_secs(10);

/// Calls `f` until it succeeds or `patience` has passed (then returns its last error).
fn retry<T>(patience: Duration, mut f: impl FnMut() -> Result<T, RunError>) -> Result<T, RunError> {
    let deadline = Instant::now() + patience;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn start_workers(
    shared: WorkerShared,
    listeners: Vec<TcpListener>,
    pulses: &[Arc<Pulse>],
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<std::io::Result<()>>>, RunError> {
    let cpus = crate::config::online_cpus();
    let pin = shared.pin_workers;
    listeners
        .into_iter()
        .zip(pulses.iter().cloned())
        .enumerate()
        .map(|(id, (listener, pulse))| {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("edgegw-worker-{id}"))
                .spawn(move || {
                    if pin {
                        pin_to_cpu(id % cpus);
                    }
                    dataplane::run_worker(id, shared, listener, pulse, stop)
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

/// Why the control plane returned.
enum Exit {
    /// SIGTERM / SIGINT.
    Signal,
    /// A new edgegw asked to take over; the store and the admin/metrics ports are released.
    Handover(handover::Incoming),
}

struct ControlPlaneParts<'a> {
    control: Arc<ControlPlane>,
    publisher: Arc<Publisher>,
    token: admin::AdminToken,
    ready: admin::Readiness,
    recent_errors: crate::diagnostics::RecentErrors,
    admin_listener: TcpListener,
    metrics_listener: TcpListener,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    tickets: TicketKeys,
    /// The local rotation period; `None` in a fleet (the fleet rotates its shared keys).
    rotation: Option<Duration>,
    control_socket: &'a ControlSocket,
    steering: Arc<steering::Control>,
    listen: SocketAddr,
    console: Arc<admin::console::Console>,
}

/// Serves the admin API and /metrics, rotates ticket keys and answers the control socket
/// until a signal or a handover request; then stops the servers (in-flight admin requests
/// finish) so that the store and the ports are released when it returns.
async fn control_plane(parts: ControlPlaneParts<'_>) -> Result<Exit, RunError> {
    let ControlPlaneParts {
        control,
        publisher,
        token,
        ready,
        recent_errors,
        admin_listener,
        metrics_listener,
        prometheus,
        tickets,
        rotation,
        control_socket,
        steering,
        listen,
        console,
    } = parts;
    let admin_listener =
        tokio::net::TcpListener::from_std(admin_listener).map_err(|e| fail("admin listener", e))?;
    let metrics_listener = tokio::net::TcpListener::from_std(metrics_listener)
        .map_err(|e| fail("metrics listener", e))?;
    let dns_control = control.clone();
    tokio::spawn(recent_errors.clone().drain_periodically());
    let admin_app =
        admin::router_with_readiness(control, token, ready, recent_errors, Some(console));
    let render = prometheus.clone();
    let refresh = steering.clone();
    let metrics_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            refresh.refresh_metrics();
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
    let (stop_servers, servers_stop) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin_server = axum::serve(admin_listener, admin_app)
        .with_graceful_shutdown(stopped(servers_stop.clone()));
    let metrics_server =
        axum::serve(metrics_listener, metrics_app).with_graceful_shutdown(stopped(servers_stop));
    let mut servers = std::pin::pin!(async { tokio::try_join!(admin_server, metrics_server) });
    let upkeep = async move {
        let mut histograms = tokio::time::interval(Duration::from_secs(5));
        let local_rotation = rotation.is_some();
        let mut ticket_rotation =
            tokio::time::interval(rotation.unwrap_or(Duration::from_secs(3600)));
        ticket_rotation.tick().await;
        let mut dns_refresh = tokio::time::interval(crate::snapshot::dns::CHECK_EVERY);
        dns_refresh.tick().await;
        loop {
            tokio::select! {
                _ = histograms.tick() => prometheus.run_upkeep(),
                _ = dns_refresh.tick() => {
                    // Off this thread: resolving blocks, and a changed address means a
                    // publish (TLS contexts are kept, so only the address moves). Only
                    // answers whose TTL ran out are resolved again: most ticks do nothing.
                    let (control, publisher) = (dns_control.clone(), publisher.clone());
                    let refresh = tokio::task::spawn_blocking(move || {
                        if publisher.refresh_dns(&control.resources()) {
                            tracing::info!("a backend address changed in DNS; publishing");
                            control.republish();
                        }
                    });
                    if let Err(e) = refresh.await {
                        tracing::error!(error = %e, "DNS refresh failed");
                    }
                },
                _ = ticket_rotation.tick(), if local_rotation => match tickets.rotate() {
                    Ok(()) => {
                        metrics::record_ticket_rotation();
                        tracing::info!("session ticket key rotated");
                    }
                    Err(e) => tracing::error!(error = %e, "ticket key rotation failed"),
                },
            }
        }
    };
    let exit = tokio::select! {
        r = &mut servers => {
            r.map_err(|e| fail("control-plane server", e))?;
            return Err(RunError("the control-plane servers stopped".into()));
        }
        _ = upkeep => Exit::Signal,
        _ = shutdown_signal() => Exit::Signal,
        incoming = control_socket.next_handover(listen, &steering) => Exit::Handover(incoming),
    };
    let _ = stop_servers.send(true);
    match tokio::time::timeout(ADMIN_DRAIN, servers).await {
        Ok(r) => {
            r.map_err(|e| fail("control-plane server", e))?;
        }
        Err(_) => tracing::warn!(
            "admin/metrics connections still open after {ADMIN_DRAIN:?}: closing them"
        ),
    }
    Ok(exit)
}

/// How long in-flight admin and metrics requests may take once the servers stop.
const ADMIN_DRAIN: Duration = Duration::from_secs(10);

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
/// nobody holds it (a plain bind, without SO_REUSEPORT).
fn ensure_port_free(addr: SocketAddr) -> std::io::Result<()> {
    TcpListener::bind(addr).map(drop)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod redaction_tests;

#[cfg(test)]
mod readiness_tests;
