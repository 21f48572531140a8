//! `loadtest run`: one scenario against one target for a fixed time, closed loop (N
//! connections, each sending its next request when the last one is answered) or open loop
//! (a fixed request rate; latency counted from the intended send time). One monoio event loop
//! per thread; a progress line every second on stderr; a summary at the end.

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
use crate::stats::{ErrorKind, Recorder, Summary};

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
    /// Keep-alive while a certificate is re-uploaded and rebound every second.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else epoll (and says so).
    Auto,
    /// io_uring or fail.
    Uring,
    Epoll,
}

pub use gateway::dataplane::Driver;

impl DriverChoice {
    pub fn resolve(self) -> Result<Driver, String> {
        let available = monoio::utils::detect_uring();
        match self {
            DriverChoice::Epoll => Ok(Driver::Epoll),
            DriverChoice::Uring if available => Ok(Driver::IoUring),
            DriverChoice::Uring => {
                Err("--driver uring: io_uring is not available on this machine \
                 (kernel without it, or blocked by a seccomp profile such as Docker's default); \
                 use --driver epoll or auto"
                    .into())
            }
            DriverChoice::Auto if available => Ok(Driver::IoUring),
            DriverChoice::Auto => {
                eprintln!("loadtest: io_uring is not available here; using the epoll driver");
                Ok(Driver::Epoll)
            }
        }
    }
}

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

/// What the `rotate` scenario re-uploads and rebinds every second.
#[derive(Clone, Debug)]
pub struct RotateConfig {
    pub admin: Endpoint,
    /// The PKCS#12 file uploaded each time, and its password.
    pub pkcs12: PathBuf,
    pub password: String,
    /// Uploads alternate between `certificate_id` and `certificate_id-b`.
    pub certificate_id: String,
    /// The backend rebound to the certificate just uploaded.
    pub backend_id: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RotateReport {
    pub rotations: u64,
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
}

impl Report {
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
                "  rotations     {:>12}   (admin failures {})\n",
                r.rotations, r.admin_failures
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
}

/// Runs one scenario to its end.
pub fn execute(cfg: &RunConfig) -> Result<Report, String> {
    if cfg.scenario == Scenario::Rotate && cfg.rotate.is_none() {
        return Err("the rotate scenario needs --admin, --token, --pkcs12 and --password".into());
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
    let progress = cfg.progress.then(|| {
        let live = live.clone();
        std::thread::spawn(move || progress_loop(&live, start))
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
    let mut total = Recorder::new();
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
    let rec = Rc::new(RefCell::new(Recorder::new()));
    let sessions: Rc<RefCell<Option<SslSession>>> = Rc::default();
    let cfg = Rc::new(cfg);
    let mut tasks = Vec::new();
    for lane in lanes {
        let schedule = cfg
            .rate
            .map(|rate| Schedule::new(start, rate, lane, cfg.connections));
        tasks.push(monoio::spawn(run_lane(
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
        t.await;
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
        monoio::time::sleep(wait).await;
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
                    monoio::time::sleep(due - now).await;
                }
                due
            }
            None if now >= deadline => break,
            None => now,
        };
        let outcome = monoio::time::timeout(
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
        monoio::time::sleep(Duration::from_millis(10)).await;
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

fn progress_loop(live: &Live, start: Instant) {
    let mut last = (0u64, 0u64);
    let mut next = start + Duration::from_secs(1);
    while !live.done.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        let req = live.requests.load(Ordering::Relaxed);
        let err = live.errors.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0}s] {:>8} req/s  {:>6} errors/s  total {} requests, {} errors",
            (now - start).as_secs_f64(),
            req - last.0,
            err - last.1,
            req,
            err
        );
        last = (req, err);
        next += Duration::from_secs(1);
    }
}

/// Every second until the deadline: upload the certificate (alternating between two ids) and
/// rebind the backend to it.
fn rotate_loop(cfg: &RotateConfig, start: Instant, deadline: Instant, live: &Live) -> RotateReport {
    use base64::Engine;
    let mut report = RotateReport::default();
    let der = match std::fs::read(&cfg.pkcs12) {
        Ok(d) => d,
        Err(e) => {
            report.admin_failures += 1;
            report
                .first_admin_errors
                .push(format!("{}: {e}", cfg.pkcs12.display()));
            return report;
        }
    };
    let data = base64::engine::general_purpose::STANDARD.encode(der);
    let mut tick = 0u64;
    loop {
        let at = start + Duration::from_millis(500) + Duration::from_secs(tick);
        if at >= deadline || live.done.load(Ordering::Relaxed) {
            return report;
        }
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = if tick % 2 == 0 {
            cfg.certificate_id.clone()
        } else {
            format!("{}-b", cfg.certificate_id)
        };
        tick += 1;
        match rotate_once(cfg, &id, &data) {
            Ok(()) => report.rotations += 1,
            Err(e) => {
                report.admin_failures += 1;
                if report.first_admin_errors.len() < 5 {
                    report.first_admin_errors.push(e);
                }
            }
        }
    }
}

fn rotate_once(cfg: &RotateConfig, certificate_id: &str, data: &str) -> Result<(), String> {
    let admin = &cfg.admin;
    admin.put_json(
        &format!("/certificates/{certificate_id}"),
        &serde_json::json!({ "data": data, "password": cfg.password }),
    )?;
    let path = format!("/backends/{}", cfg.backend_id);
    let (status, body) = admin.get(&path)?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    let current: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}"))?;
    let mut next = serde_json::json!({
        "url": current["url"],
        "credentials": { "certificateId": certificate_id },
    });
    if !current["tls"].is_null() {
        next["tls"] = current["tls"].clone();
    }
    admin.put_json(&path, &next)?;
    Ok(())
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
    /// A PKCS#12 file: the client certificate for mtls-direct, or the bundle `rotate` uploads.
    #[arg(long)]
    pkcs12: Option<PathBuf>,
    #[arg(long, default_value = "")]
    password: String,
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
        let (Some(admin), Some(pkcs12)) = (&args.admin, &args.pkcs12) else {
            return Err("rotate needs --admin URL, --token, --pkcs12 FILE and --password".into());
        };
        cfg.rotate = Some(RotateConfig {
            admin: Endpoint::parse(
                admin,
                args.token
                    .clone()
                    .or_else(|| std::env::var("EDGEGW_ADMIN_TOKEN").ok())
                    .as_deref(),
            )?,
            pkcs12: pkcs12.clone(),
            password: args.password.clone(),
            certificate_id: args.certificate_id.clone(),
            backend_id: args.backend_id.clone(),
        });
    }
    let report = execute(&cfg)?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
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
            Driver::Epoll,
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
        assert_eq!(v["driver"], "epoll");
        assert_eq!(v["errors_by_kind"]["tls_handshake"], 1);
        assert_eq!(v["resumed_ratio"], 1.0);
        assert!(v.get("rotate").is_none());
        assert!(report.table().contains("resumed ratio"));
    }
}
