//! `loadtest run`: one scenario against one target for a fixed time, closed loop (N
//! connections, each sending its next request when the last one is answered) or open loop
//! (a fixed request rate; latency counted from the intended send time). One event loop of the
//! suite's own engine (`crate::engine`: tokio-uring, or plain tokio) per thread; a progress line every second on stderr; a summary at the end.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boring::ssl::{SslContext, SslSession};
use serde::Serialize;

use crate::admin::Endpoint;
use crate::client::{self, Conn, Identity};
use crate::pacing::Schedule;
use crate::report::{ReportInput, Section, ServerSeries};
use crate::stats::{fmt_us, CurvePoint, ErrorKind, LiveLatency, Recorder, SecondBucket, Summary};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Many requests per connection.
    Keepalive,
    /// A new connection with a full TLS handshake for every request.
    Newconn,
    /// A new connection for every request, resuming a cached TLS session.
    Resume,
    /// Keep-alive with a client certificate, straight to an mTLS backend.
    MtlsDirect,
    /// Keep-alive while a new client certificate (made in-process, a new thumbprint each
    /// time) is uploaded and the backend rebound to it every `--rotate-every`.
    Rotate,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Keepalive => "keepalive",
            Scenario::Newconn => "newconn",
            Scenario::Resume => "resume",
            Scenario::MtlsDirect => "mtls-direct",
            Scenario::Rotate => "rotate",
        }
    }

    /// Whether one connection carries many requests.
    fn keeps_connections(self) -> bool {
        !matches!(self, Scenario::Newconn | Scenario::Resume)
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Scenario as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            format!("unknown scenario {s:?}: keepalive, newconn, resume, mtls-direct, rotate")
        })
    }
}

pub use crate::engine::{Driver, DriverChoice};

/// `https://127.0.0.1:PORT/path`.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as written: the `Host` header.
    pub authority: String,
    /// The host name for SNI (none for IP addresses).
    pub sni: Option<String>,
    pub path: String,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url}: the target must be an https:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e} (write host:port)"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{url}: load is only sent to loopback addresses (127.0.0.1, ::1)"
            ));
        }
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let sni = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_err()
            .then(|| host.to_string());
        Ok(Target {
            addr,
            authority: authority.to_string(),
            sni,
            path: path.to_string(),
        })
    }
}

/// What the `rotate` scenario does every period: make a new client certificate and its
/// PKCS#12 bundle in this process (`crate::bundles`: a fresh key, so a new thumbprint every
/// time), upload it and rebind the backend to it.
#[derive(Clone)]
pub struct RotateConfig {
    pub admin: Endpoint,
    /// One rotation per period (default 1 s; many per second work).
    pub every: Duration,
    /// The password the bundles are made and uploaded with.
    pub password: String,
    /// Uploads alternate between `certificate_id` and `certificate_id-b`, so the backend is
    /// always rebound from one certificate to another (blue/green).
    pub certificate_id: String,
    /// The backend rebound to the certificate just uploaded.
    pub backend_id: String,
}

impl RotateConfig {
    /// A rotation a second, bundles under a fixed password.
    pub fn new(admin: Endpoint, certificate_id: &str, backend_id: &str) -> Self {
        Self {
            admin,
            every: Duration::from_secs(1),
            password: DEFAULT_ROTATE_PASSWORD.to_string(),
            certificate_id: certificate_id.to_string(),
            backend_id: backend_id.to_string(),
        }
    }
}

/// The password of the bundles `rotate` makes when `--password` is not given.
pub const DEFAULT_ROTATE_PASSWORD: &str = "loadtest-rotate";

// Not derived: the password (and the admin token) never go to a log.
impl std::fmt::Debug for RotateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateConfig")
            .field("admin", &self.admin)
            .field("every", &self.every)
            .field("password", &"<redacted>")
            .field("certificate_id", &self.certificate_id)
            .field("backend_id", &self.backend_id)
            .finish()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RotateReport {
    /// Rotations done: a certificate uploaded and the backend rebound to it.
    pub rotations: u64,
    /// Distinct thumbprints edgegw answered the uploads with (one per rotation).
    pub thumbprints: u64,
    /// The period asked for, in milliseconds.
    pub every_ms: f64,
    /// Periods skipped because the rotation before was still running (never queued).
    pub late_ticks: u64,
    /// Time of one whole rotation (make the bundle, upload it, rebind), in milliseconds.
    pub rotation_p50_ms: f64,
    pub rotation_p99_ms: f64,
    pub admin_failures: u64,
    pub first_admin_errors: Vec<String>,
}

#[derive(Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub target: Target,
    pub connections: usize,
    pub duration: Duration,
    /// Open loop: requests per second over all connections.
    pub rate: Option<f64>,
    pub threads: usize,
    pub driver: Driver,
    pub context: SslContext,
    pub rotate: Option<RotateConfig>,
    pub request_timeout: Duration,
    /// Print a progress line every second.
    pub progress: bool,
}

impl RunConfig {
    pub fn new(scenario: Scenario, target: Target, context: SslContext, driver: Driver) -> Self {
        Self {
            scenario,
            target,
            connections: 64,
            duration: Duration::from_secs(10),
            rate: None,
            threads: 1,
            driver,
            context,
            rotate: None,
            request_timeout: Duration::from_secs(10),
            progress: true,
        }
    }
}

/// Every figure of one run (the `--json` document of `loadtest run`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub target: String,
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    pub driver: Driver,
    pub duration_s: f64,
    #[serde(flatten)]
    pub summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate: Option<RotateReport>,
    /// The latency percentile curve (`Recorder::percentile_curve`), for `--html`; not in
    /// the JSON.
    #[serde(skip)]
    pub latency_curve: Vec<CurvePoint>,
    /// Requests and errors in each second of the run, for `--html`; not in the JSON.
    #[serde(skip)]
    pub per_second: Vec<SecondBucket>,
}

impl Report {
    /// This run as one series of an HTML report.
    pub fn series(&self, name: &str) -> ServerSeries {
        ServerSeries {
            name: name.to_string(),
            summary: self.summary.clone(),
            curve: self.latency_curve.clone(),
            per_second: self.per_second.clone(),
        }
    }

    /// Mode, rate, connections and threads in one sentence.
    pub fn describe(&self) -> String {
        format!(
            "{} {}, {} connections, {} client thread(s), {:?}{}",
            self.scenario.name(),
            self.mode,
            self.connections,
            self.threads,
            self.driver,
            self.rate
                .map(|r| format!(", {r:.0} req/s offered"))
                .unwrap_or_default()
        )
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "{} against {} ({}, {} connections, {} threads, {:?}{})\n",
            self.scenario.name(),
            self.target,
            self.mode,
            self.connections,
            self.threads,
            self.driver,
            self.rate
                .map(|r| format!(", {r:.0} req/s offered"))
                .unwrap_or_default()
        );
        s.push_str(&self.summary.table());
        if let Some(r) = &self.rotate {
            s.push_str(&format!(
                "  rotations     {:>12}   ({} distinct thumbprints, one every {} ms, p50 {:.1} ms \
                 p99 {:.1} ms each, {} late ticks, admin failures {})\n",
                r.rotations,
                r.thumbprints,
                r.every_ms,
                r.rotation_p50_ms,
                r.rotation_p99_ms,
                r.late_ticks,
                r.admin_failures
            ));
        }
        s
    }
}

/// Counters the progress line reads while the run goes.
#[derive(Default)]
struct Live {
    requests: AtomicU64,
    errors: AtomicU64,
    done: AtomicBool,
    /// Every load thread's latencies (one histogram each): the p99 so far.
    latency: LiveLatency,
}

/// Runs one scenario to its end.
pub fn execute(cfg: &RunConfig) -> Result<Report, String> {
    if cfg.scenario == Scenario::Rotate && cfg.rotate.is_none() {
        return Err(
            "the rotate scenario needs --admin URL and --token (or env EDGEGW_ADMIN_TOKEN)".into(),
        );
    }
    let threads = cfg.threads.clamp(1, cfg.connections.max(1));
    let live = Arc::new(Live::default());
    let request = Arc::new(client::get_request(
        &cfg.target.authority,
        &cfg.target.path,
        !cfg.scenario.keeps_connections(),
    ));
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + cfg.duration;

    let rotator = cfg.rotate.clone().map(|r| {
        let live = live.clone();
        std::thread::spawn(move || rotate_loop(&r, start, deadline, &live))
    });
    let progress = (cfg.progress && crate::progress::enabled()).then(|| {
        let live = live.clone();
        let (label, duration) = (cfg.scenario.name(), cfg.duration);
        std::thread::spawn(move || progress_loop(&live, label, start, duration))
    });

    let mut handles = Vec::new();
    for t in 0..threads {
        let lanes: Vec<usize> = (0..cfg.connections).filter(|i| i % threads == t).collect();
        let cfg = cfg.clone();
        let live = live.clone();
        let request = request.clone();
        handles.push(std::thread::spawn(move || {
            cfg.driver
                .block_on(run_thread(
                    cfg.clone(),
                    lanes,
                    request,
                    start,
                    deadline,
                    live,
                ))
                .map_err(|e| format!("event loop: {e}"))
        }));
    }
    let mut total = Recorder::with_start(start);
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(rec)) => total.merge(&rec),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a load thread panicked".to_string()),
        }
    }
    let elapsed = start.elapsed();
    live.done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    let rotate = rotator.and_then(|r| r.join().ok());
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Report {
        scenario: cfg.scenario,
        target: format!("https://{}{}", cfg.target.authority, cfg.target.path),
        mode: if cfg.rate.is_some() {
            "open loop"
        } else {
            "closed loop"
        },
        rate: cfg.rate,
        connections: cfg.connections,
        threads,
        driver: cfg.driver,
        duration_s: cfg.duration.as_secs_f64(),
        summary: total.summary(elapsed),
        rotate,
        latency_curve: total.percentile_curve(),
        per_second: total.per_second().to_vec(),
    })
}

async fn run_thread(
    cfg: RunConfig,
    lanes: Vec<usize>,
    request: Arc<Vec<u8>>,
    start: Instant,
    deadline: Instant,
    live: Arc<Live>,
) -> Recorder {
    let rec = Rc::new(RefCell::new(
        Recorder::with_start(start).with_live(live.latency.register()),
    ));
    let sessions: Rc<RefCell<Option<SslSession>>> = Rc::default();
    let cfg = Rc::new(cfg);
    let mut tasks = Vec::new();
    for lane in lanes {
        let schedule = cfg
            .rate
            .map(|rate| Schedule::new(start, rate, lane, cfg.connections));
        tasks.push(crate::engine::spawn(run_lane(
            cfg.clone(),
            schedule,
            request.clone(),
            start,
            deadline,
            rec.clone(),
            sessions.clone(),
            live.clone(),
        )));
    }
    for t in tasks {
        // A lane that panicked has recorded what it did; the others still count.
        let _ = t.await;
    }
    let out = rec.borrow().clone();
    out
}

#[allow(clippy::too_many_arguments)]
async fn run_lane(
    cfg: Rc<RunConfig>,
    schedule: Option<Schedule>,
    request: Arc<Vec<u8>>,
    start: Instant,
    deadline: Instant,
    rec: Rc<RefCell<Recorder>>,
    sessions: Rc<RefCell<Option<SslSession>>>,
    live: Arc<Live>,
) {
    if let Some(wait) = start.checked_duration_since(Instant::now()) {
        crate::engine::sleep(wait).await;
    }
    let mut conn: Option<Conn> = None;
    let mut k = 0u64;
    loop {
        let now = Instant::now();
        let intended = match &schedule {
            Some(s) => {
                let due = s.due(k);
                k += 1;
                if due >= deadline {
                    break;
                }
                if due > now {
                    crate::engine::sleep(due - now).await;
                }
                due
            }
            None if now >= deadline => break,
            None => now,
        };
        let outcome = crate::engine::timeout(
            cfg.request_timeout,
            one_request(&cfg, &mut conn, &request, &rec, &sessions),
        )
        .await;
        match outcome {
            Ok(Ok(())) => {
                rec.borrow_mut().success(intended.elapsed());
                live.requests.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(kind)) => fail(&rec, &live, kind, &mut conn).await,
            Err(_) => fail(&rec, &live, ErrorKind::Timeout, &mut conn).await,
        }
    }
}

async fn fail(rec: &RefCell<Recorder>, live: &Live, kind: ErrorKind, conn: &mut Option<Conn>) {
    rec.borrow_mut().error(kind);
    live.errors.fetch_add(1, Ordering::Relaxed);
    *conn = None;
    if kind == ErrorKind::Connect {
        // Nothing listens (yet): do not spin.
        crate::engine::sleep(Duration::from_millis(10)).await;
    }
}

async fn one_request(
    cfg: &RunConfig,
    conn: &mut Option<Conn>,
    request: &[u8],
    rec: &RefCell<Recorder>,
    sessions: &RefCell<Option<SslSession>>,
) -> Result<(), ErrorKind> {
    let resume = cfg.scenario == Scenario::Resume;
    let mut c = match conn.take() {
        Some(c) => c,
        None => {
            let session = if resume {
                sessions.borrow().clone()
            } else {
                None
            };
            let c = Conn::connect(
                cfg.target.addr,
                &cfg.context,
                cfg.target.sni.as_deref(),
                session.as_ref(),
            )
            .await?;
            rec.borrow_mut().connection(c.resumed());
            c
        }
    };
    let response = c.request(request).await?;
    if resume {
        if let Some(s) = c.take_session() {
            *sessions.borrow_mut() = Some(s);
        }
    }
    if let Some(kind) = ErrorKind::from_status(response.status) {
        return Err(kind);
    }
    if cfg.scenario.keeps_connections() && !response.close {
        *conn = Some(c);
    }
    Ok(())
}

/// The live line on a terminal: a bar of the run's length, the rate of the last second, the
/// errors and the p99 so far; redrawn in place, ended when the run ends.
fn progress_loop(live: &Live, label: &str, start: Instant, duration: Duration) {
    let bar = crate::progress::Bar::for_duration(label, duration);
    let mut last = (start, 0u64);
    let line = |rate: f64| {
        let req = live.requests.load(Ordering::Relaxed);
        let err = live.errors.load(Ordering::Relaxed);
        let p99 = live.latency.quantile(0.99).map_or("-".into(), fmt_us);
        format!("{rate:>8.0} req/s  {req} requests  {err} errors  p99 {p99}")
    };
    while !live.done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let now = Instant::now();
        if now < start {
            continue;
        }
        bar.set_elapsed(now - start);
        let since = now - last.0;
        if since >= Duration::from_secs(1) {
            let req = live.requests.load(Ordering::Relaxed);
            bar.set_message(line((req - last.1) as f64 / since.as_secs_f64()));
            last = (now, req);
        }
    }
    let whole = start.elapsed().as_secs_f64().max(1e-3);
    bar.set_elapsed(start.elapsed());
    bar.set_message(line(live.requests.load(Ordering::Relaxed) as f64 / whole));
    bar.finish();
}

/// Every `cfg.every` until the deadline (the first at half a period): a new certificate made
/// in-process, uploaded under the id the backend is not bound to (alternating between two
/// ids) and the backend rebound to it. A period that comes while the previous rotation still
/// runs is skipped and counted as late, never queued.
fn rotate_loop(cfg: &RotateConfig, start: Instant, deadline: Instant, live: &Live) -> RotateReport {
    let every = cfg.every.max(Duration::from_millis(1));
    let mut report = RotateReport {
        every_ms: every.as_secs_f64() * 1000.0,
        ..RotateReport::default()
    };
    let fail = |report: &mut RotateReport, e: String| {
        report.admin_failures += 1;
        if report.first_admin_errors.len() < 5 {
            report.first_admin_errors.push(e);
        }
    };
    // The backend as it is now: its URL and TLS settings are kept on every rebind.
    let backend = match current_backend(cfg) {
        Ok(b) => b,
        Err(e) => {
            fail(&mut report, e);
            return report;
        }
    };
    let base = start + every / 2;
    let mut thumbprints = std::collections::HashSet::new();
    let mut took = Vec::new();
    let mut tick: u128 = 0;
    for n in 0u64.. {
        let at =
            base + Duration::from_nanos(u64::try_from(every.as_nanos() * tick).unwrap_or(u64::MAX));
        if at >= deadline || live.done.load(Ordering::Relaxed) {
            break;
        }
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = if n % 2 == 0 {
            cfg.certificate_id.clone()
        } else {
            format!("{}-b", cfg.certificate_id)
        };
        let t = Instant::now();
        match rotate_once(cfg, &backend, &id, n) {
            Ok(thumbprint) => {
                report.rotations += 1;
                thumbprints.insert(thumbprint);
                took.push(t.elapsed());
            }
            Err(e) => fail(&mut report, e),
        }
        // The next period whose time has not passed yet.
        let passed = Instant::now().saturating_duration_since(base).as_nanos() / every.as_nanos();
        let next = (tick + 1).max(passed + 1);
        report.late_ticks += u64::try_from(next - tick - 1).unwrap_or(u64::MAX);
        tick = next;
    }
    report.thumbprints = thumbprints.len() as u64;
    took.sort();
    let ms = |q: f64| {
        took.get(((took.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    report.rotation_p50_ms = ms(0.50);
    report.rotation_p99_ms = ms(0.99);
    report
}

/// The rotated backend's body for a PUT: its URL and TLS settings as they are now.
fn current_backend(cfg: &RotateConfig) -> Result<serde_json::Value, String> {
    let path = format!("/backends/{}", cfg.backend_id);
    let (status, body) = cfg.admin.get(&path)?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    let current: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}"))?;
    let mut next = serde_json::json!({ "url": current["url"] });
    if !current["tls"].is_null() {
        next["tls"] = current["tls"].clone();
    }
    Ok(next)
}

/// Rotation `n`: a new certificate (`CN={certificate_id}-{n}`, a fresh key) uploaded as
/// `certificate_id`, checked against the thumbprint edgegw answers with, and the backend
/// rebound to it. Returns the thumbprint.
fn rotate_once(
    cfg: &RotateConfig,
    backend: &serde_json::Value,
    certificate_id: &str,
    n: u64,
) -> Result<String, String> {
    let admin = &cfg.admin;
    let bundle =
        crate::bundles::client_bundle(&format!("{}-{n}", cfg.certificate_id), &cfg.password)?;
    let path = format!("/certificates/{certificate_id}");
    let (_, reply) = admin.put_json_reply(
        &path,
        &serde_json::json!({ "data": bundle.base64(), "password": cfg.password }),
    )?;
    let stored: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| format!("PUT {path}: {e}"))?;
    if stored["thumbprint"].as_str() != Some(bundle.thumbprint.as_str()) {
        return Err(format!(
            "PUT {path}: edgegw answered thumbprint {} for a bundle of {}",
            stored["thumbprint"], bundle.thumbprint
        ));
    }
    let mut next = backend.clone();
    next["credentials"] = serde_json::json!({ "certificateId": certificate_id });
    admin.put_json(&format!("/backends/{}", cfg.backend_id), &next)?;
    Ok(bundle.thumbprint)
}

/// The `loadtest run` command line.
#[derive(clap::Args)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// https://127.0.0.1:PORT/path (loopback only).
    #[arg(long)]
    target: Target,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to send load: "10s", "500ms", "2m".
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Open loop: requests per second over all connections (latency from the intended send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Client threads, one event loop each.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    driver: DriverChoice,
    /// Key-exchange groups the client offers (BoringSSL names, colon separated), e.g. X25519.
    #[arg(long)]
    groups: Option<String>,
    /// Highest TLS version the client offers: 1.2 or 1.3.
    #[arg(long, default_value = "1.3", value_parser = ["1.2", "1.3"])]
    max_tls: String,
    /// Client certificate (PEM) for mtls-direct.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// mtls-direct: the client certificate as a PKCS#12 file. (rotate makes a new
    /// certificate in-process for every rotation; a --pkcs12 given to it is not used.)
    #[arg(long)]
    pkcs12: Option<PathBuf>,
    /// The password of --pkcs12; rotate: the password its bundles are made with (default
    /// "loadtest-rotate").
    #[arg(long, default_value = "")]
    password: String,
    /// rotate: one rotation (new certificate, upload, rebind) per period: "1s", "100ms".
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    rotate_every: Duration,
    /// rotate: the admin API, http://127.0.0.1:9090.
    #[arg(long)]
    admin: Option<String>,
    /// rotate: the admin bearer token (default: env EDGEGW_ADMIN_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// rotate: the certificate id to upload to (alternates with ID-b).
    #[arg(long, default_value = "loadtest-rotate")]
    certificate_id: String,
    /// rotate: the backend to rebind.
    #[arg(long, default_value = "loadtest")]
    backend_id: String,
    /// Give up on a request after this long (counted as a timeout error).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (latency percentile curve, requests and errors per
    /// second, the figures as tables) to this file.
    #[arg(long)]
    html: Option<PathBuf>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: write a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: units are ms, s, m, h")),
    };
    if secs <= 0.0 || !secs.is_finite() {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run_command(args: RunArgs) -> Result<(), String> {
    let driver = args.driver.resolve()?;
    crate::procs::raise_nofile(args.connections as u64 * 2 + 256);
    let identity = if args.scenario == Scenario::Rotate {
        None
    } else {
        match (&args.cert, &args.key, &args.pkcs12) {
            (Some(c), Some(k), _) => Some(Identity::from_pem(c, k)?),
            (_, _, Some(p)) => Some(Identity::from_pkcs12(p, &args.password)?),
            _ => None,
        }
    };
    if args.scenario == Scenario::MtlsDirect && identity.is_none() {
        return Err("mtls-direct needs a client certificate: --cert/--key or --pkcs12".into());
    }
    let max = (args.max_tls == "1.2").then_some(boring::ssl::SslVersion::TLS1_2);
    let context = client::build_context_with(args.groups.as_deref(), identity.as_ref(), max)?;
    let mut cfg = RunConfig::new(args.scenario, args.target, context, driver);
    cfg.connections = args.connections.max(1);
    cfg.duration = args.duration;
    cfg.rate = args.rate;
    cfg.threads = args.threads.max(1);
    cfg.request_timeout = args.request_timeout;
    if args.scenario == Scenario::Rotate {
        let Some(admin) = &args.admin else {
            return Err("rotate needs --admin URL and --token (or env EDGEGW_ADMIN_TOKEN)".into());
        };
        if args.pkcs12.is_some() {
            eprintln!(
                "loadtest: rotate makes a new certificate in-process for every rotation; \
                 --pkcs12 is not used"
            );
        }
        let token = args
            .token
            .clone()
            .or_else(|| std::env::var("EDGEGW_ADMIN_TOKEN").ok());
        let mut rotate = RotateConfig::new(
            Endpoint::parse(admin, token.as_deref())?,
            &args.certificate_id,
            &args.backend_id,
        );
        rotate.every = args.rotate_every;
        if !args.password.is_empty() {
            rotate.password = args.password.clone();
        }
        cfg.rotate = Some(rotate);
    }
    let report = execute(&cfg)?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.html {
        let mut config = vec![
            (
                "request timeout".to_string(),
                format!("{:?}", args.request_timeout),
            ),
            ("max TLS version".to_string(), args.max_tls.clone()),
            (
                "groups offered".to_string(),
                args.groups.clone().unwrap_or_else(|| "(default)".into()),
            ),
        ];
        if let Some(r) = &report.rotate {
            config.push((
                "rotations".into(),
                format!("{} ({} admin failures)", r.rotations, r.admin_failures),
            ));
        }
        let html = crate::report::write_html(&html_input(&report, config));
        std::fs::write(path, html).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let failed_rotations = report.rotate.as_ref().is_some_and(|r| r.admin_failures > 0);
    if report.summary.errors > 0 || failed_rotations {
        return Err(format!(
            "{} failed requests{}",
            report.summary.errors,
            if failed_rotations {
                ", and admin calls failed"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// The HTML report of one run: its one series, its settings (`extra` added to them).
pub fn html_input(report: &Report, extra: Vec<(String, String)>) -> ReportInput {
    let mut config = vec![
        ("scenario".to_string(), report.scenario.name().to_string()),
        ("target".to_string(), report.target.clone()),
        ("mode".to_string(), report.mode.to_string()),
        (
            "rate offered".to_string(),
            report.rate.map_or("-".into(), |r| format!("{r:.0} req/s")),
        ),
        ("connections".to_string(), report.connections.to_string()),
        ("client threads".to_string(), report.threads.to_string()),
        ("driver".to_string(), format!("{:?}", report.driver)),
        ("duration".to_string(), format!("{} s", report.duration_s)),
    ];
    config.extend(extra);
    ReportInput {
        title: format!(
            "loadtest run: {} against {}",
            report.scenario.name(),
            report.target
        ),
        command_line: crate::report::command_line(),
        machine: crate::report::machine(),
        config,
        sections: vec![Section {
            title: report.scenario.name().to_string(),
            note: report.describe(),
            series: vec![report.series(&report.target)],
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_stay_local() {
        let t: Target = "https://127.0.0.1:8443/api/x?y=1".parse().unwrap();
        assert_eq!(t.addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:8443");
        assert_eq!(t.sni, None);
        assert_eq!(t.path, "/api/x?y=1");
        let t: Target = "https://localhost:9443".parse().unwrap();
        assert_eq!(t.path, "/");
        assert_eq!(t.sni.as_deref(), Some("localhost"));
        assert!("http://127.0.0.1:1/".parse::<Target>().is_err());
        assert!("https://10.1.2.3:443/".parse::<Target>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in [
            Scenario::Keepalive,
            Scenario::Newconn,
            Scenario::Resume,
            Scenario::MtlsDirect,
            Scenario::Rotate,
        ] {
            assert_eq!(s.name().parse::<Scenario>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        assert!("nope".parse::<Scenario>().is_err());
    }

    #[test]
    fn report_json_has_every_figure() {
        let context = client::build_context(Some("X25519"), None).unwrap();
        let cfg = RunConfig::new(
            Scenario::Resume,
            "https://127.0.0.1:1/".parse().unwrap(),
            context,
            Driver::Tokio,
        );
        let mut rec = Recorder::new();
        rec.success(Duration::from_millis(2));
        rec.connection(true);
        rec.error(ErrorKind::Handshake);
        let report = Report {
            scenario: cfg.scenario,
            target: "https://127.0.0.1:1/".into(),
            mode: "open loop",
            rate: Some(100.0),
            connections: 4,
            threads: 1,
            driver: cfg.driver,
            duration_s: 1.0,
            summary: rec.summary(Duration::from_secs(1)),
            rotate: None,
            latency_curve: rec.percentile_curve(),
            per_second: rec.per_second().to_vec(),
        };
        let v = serde_json::to_value(&report).unwrap();
        for key in [
            "scenario",
            "target",
            "mode",
            "rate",
            "connections",
            "threads",
            "driver",
            "duration_s",
            "requests",
            "errors",
            "errors_by_kind",
            "elapsed_s",
            "requests_per_s",
            "latency_us",
            "resumed_ratio",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        for p in ["p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(v["latency_us"][p].is_number(), "missing latency {p}");
        }
        assert_eq!(v["scenario"], "resume");
        assert_eq!(v["driver"], "tokio");
        assert_eq!(v["errors_by_kind"]["tls_handshake"], 1);
        assert_eq!(v["resumed_ratio"], 1.0);
        assert!(v.get("rotate").is_none());
        // The report's curve and seconds stay out of the JSON.
        assert!(!report.latency_curve.is_empty());
        assert!(v.get("latency_curve").is_none() && v.get("per_second").is_none());
        assert!(report.table().contains("resumed ratio"));
    }
}
