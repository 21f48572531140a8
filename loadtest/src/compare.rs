//! `loadtest compare`: the same scenarios against edgegw, NGINX and HAProxy in one run, each
//! configured for the same job (see `harness`), with each server's own CPU time read from
//! /proc, plus the gateway-only figures (upstream handshakes in steady keep-alive, upstream
//! reconnects that resume, RSS per idle TLS connection, failed requests while certificates
//! rotate) and the p99 of every server at half of NGINX's maximum rate (open loop).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use boring::ssl::SslContext;
use serde::Serialize;

use crate::admin::metric_sum;
use crate::client::{self, Conn};
use crate::harness::{self, Backend, Kind, Pki, Server};
use crate::procs;
use crate::report::{CpuBar, ReportInput, Section, Table};
use crate::run::{self, Driver, DriverChoice, Report, RunConfig, Scenario, Target};
use crate::thirdparty::{self, Tool, ToolRun};

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Length of each measured run.
    #[arg(long, default_value = "10s", value_parser = run::parse_duration)]
    duration: Duration,
    /// Client connections (closed loop) or lanes (open loop).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Scenarios run against every server (comma separated).
    #[arg(
        long,
        default_value = "keepalive,newconn,resume",
        value_delimiter = ','
    )]
    scenarios: Vec<Scenario>,
    /// Servers, in the order they run (NGINX first: the open-loop rate derives from it).
    #[arg(long, default_value = "nginx,haproxy,edgegw", value_delimiter = ',')]
    servers: Vec<String>,
    /// Worker processes/threads of every server.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Event-loop threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Event-loop threads of the test backend.
    #[arg(long, default_value_t = 1)]
    backend_workers: usize,
    /// Idle TLS connections opened for the RSS figure (0: skip).
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Skip the open-loop p99 runs.
    #[arg(long)]
    no_open_loop: bool,
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    driver: DriverChoice,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (latency percentile curves of every server, requests
    /// and errors per second, server CPU per request and per connection, the figures as
    /// tables) to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Load clients: `own` (this program's scenarios) and the third-party `wrk`, `h2load`,
    /// `s_time` (comma separated). Default: own and every third-party one installed.
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<String>>,
    /// edgegw's `server.pin_workers` (NGINX and HAProxy do not pin).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    edgegw_pin_workers: bool,
    /// Connections of the wrk `Connection: close` figure.
    #[arg(long, default_value_t = 32)]
    wrk_connections: usize,
}

/// Which clients to run: own scenarios or not, and the third-party tools.
fn choose_clients(asked: Option<&[String]>) -> Result<(bool, Vec<Tool>), String> {
    let Some(asked) = asked else {
        let (have, missing): (Vec<Tool>, Vec<Tool>) =
            Tool::ALL.into_iter().partition(|t| t.installed());
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|t| t.name()).collect();
            let packages: Vec<&str> = missing.iter().map(|t| t.package()).collect();
            eprintln!(
                "loadtest: {} not installed, skipped; install with:\n  sudo apt-get update && sudo apt-get install -y {}",
                names.join(", "),
                packages.join(" ")
            );
        }
        return Ok((true, have));
    };
    let mut own = false;
    let mut tools = Vec::new();
    for name in asked {
        if name == "own" {
            own = true;
            continue;
        }
        let tool = Tool::parse(name)?;
        if !tool.installed() {
            return Err(format!(
                "{} is not installed; install it with:\n  sudo apt-get update && sudo apt-get install -y {}",
                tool.name(),
                tool.package()
            ));
        }
        tools.push(tool);
    }
    Ok((own, tools))
}

/// One scenario against one server, with the server's CPU time during it.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    #[serde(flatten)]
    pub report: Report,
    pub server_cpu_s: f64,
    pub cpu_ms_per_1000_requests: f64,
    /// newconn/resume: CPU per new client connection (each carries one request).
    pub cpu_ms_per_connection: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleResult {
    pub opened: usize,
    pub failed: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_connection: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct UpstreamResult {
    /// Steady keep-alive (from a quarter of the run, at most 2 s in, to its end): upstream
    /// handshakes and requests served, from edgegw's metrics.
    pub steady_handshakes: f64,
    pub steady_requests: u64,
    pub steady_handshakes_per_request: f64,
    /// After a backend restart (same ticket key): new upstream connections and how many resumed.
    pub reconnects: f64,
    pub reconnects_resumed: f64,
    pub reconnect_resumed_ratio: Option<f64>,
    pub reconnect_run_errors: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServerResult {
    pub server: Kind,
    pub scenarios: BTreeMap<String, Measured>,
    pub open_loop: Option<Measured>,
    pub idle: Option<IdleResult>,
    pub upstream: Option<UpstreamResult>,
    pub rotate: Option<Measured>,
    /// edgegw only: `newconn` and `resume` with the client offering X25519MLKEM768 (the
    /// contract's default first group), beside the X25519 figures of `scenarios`.
    pub post_quantum: BTreeMap<String, Measured>,
    /// Third-party clients' figures, by `thirdparty::Figure::name`.
    pub third_party: BTreeMap<String, ToolMeasured>,
}

/// One third-party figure against one server, with the server's CPU time during it.
#[derive(Clone, Debug, Serialize)]
pub struct ToolMeasured {
    #[serde(flatten)]
    pub run: ToolRun,
    pub server_cpu_s: f64,
    /// Per 1000 requests (keep-alive) or 1000 connections (one request each).
    pub cpu_ms_per_1000: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub figure: &'static str,
    pub target: &'static str,
    pub edgegw: Option<f64>,
    pub nginx: Option<f64>,
    pub haproxy: Option<f64>,
    pub ratio_nginx: Option<f64>,
    pub ratio_haproxy: Option<f64>,
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub machine: Machine,
    pub duration_s: f64,
    pub connections: usize,
    pub workers: usize,
    pub client_threads: usize,
    pub driver: Driver,
    pub open_loop_rate: Option<f64>,
    pub servers: Vec<ServerResult>,
    pub figures: Vec<Figure>,
    /// Where this program's own client and a third-party client disagree by more than 20 %
    /// on edgegw's ratio to NGINX.
    pub disagreements: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub nginx: String,
    pub haproxy: String,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let version = |prog: &str, flag: &str| {
        harness::find_program(prog)
            .and_then(|p| std::process::Command::new(p).arg(flag).output().ok())
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    };
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        nginx: version("nginx", "-v"),
        haproxy: version("haproxy", "-v"),
    }
}

/// Fails with the apt-get line when a server or tool is missing; installs nothing.
fn check_programs(kinds: &[Kind]) -> Result<(), String> {
    let mut missing = Vec::new();
    if harness::find_program("openssl").is_none() {
        missing.push("openssl");
    }
    if kinds.contains(&Kind::Nginx) && harness::find_program("nginx").is_none() {
        missing.push("nginx-light");
    }
    if kinds.contains(&Kind::Haproxy) && harness::find_program("haproxy").is_none() {
        missing.push("haproxy");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing Debian packages; install them with:\n  sudo apt-get update && sudo apt-get install -y {}",
        missing.join(" ")
    ))
}

struct Ctx {
    args: CompareArgs,
    driver: Driver,
    context: SslContext,
}

impl Ctx {
    /// Runs one third-party figure, reading the server's CPU time around it.
    fn measure_tool(
        &self,
        server: &Server,
        figure: thirdparty::Figure,
    ) -> Result<ToolMeasured, String> {
        let job = thirdparty::Job {
            figure,
            url: server.url("/thirdparty"),
            port: server.port,
            path: "/thirdparty".into(),
            connections: match figure {
                thirdparty::Figure::NewconnResumeWrk => self.args.wrk_connections,
                _ => self.args.connections,
            },
            duration: self.args.duration,
        };
        eprintln!("== {} {}", server.kind.name(), figure.name());
        let cpu0 = procs::cpu_time(server.proc.pid());
        let run = thirdparty::run(&job)?;
        let cpu = procs::cpu_time(server.proc.pid()).saturating_sub(cpu0);
        let cpu_ms_per_1000 = if run.completed > 0 {
            cpu.as_secs_f64() * 1000.0 * 1000.0 / run.completed as f64
        } else {
            0.0
        };
        eprintln!(
            "   {}: {:.0}/s, p99 {}, errors {}, server CPU {:.2}s ({cpu_ms_per_1000:.1} ms/1000 {})\n   command: {}",
            figure.name(),
            run.per_s,
            run.latency_p99_ms
                .map(|v| format!("{v:.2} ms"))
                .unwrap_or_else(|| "-".into()),
            run.errors,
            cpu.as_secs_f64(),
            if figure.per_connection() { "connections" } else { "requests" },
            run.command
        );
        Ok(ToolMeasured {
            run,
            server_cpu_s: cpu.as_secs_f64(),
            cpu_ms_per_1000,
        })
    }

    fn config(&self, server: &Server, scenario: Scenario) -> Result<RunConfig, String> {
        let target: Target = server.url("/").parse()?;
        let mut cfg = RunConfig::new(scenario, target, self.context.clone(), self.driver);
        cfg.connections = self.args.connections;
        cfg.duration = self.args.duration;
        cfg.threads = self.args.threads;
        Ok(cfg)
    }

    /// Runs one scenario, reading the server's CPU time around it.
    fn measure(&self, server: &Server, cfg: &RunConfig) -> Result<Measured, String> {
        let label = format!(
            "{} {}{}",
            server.kind.name(),
            cfg.scenario.name(),
            cfg.rate
                .map(|r| format!(" (open loop, {r:.0} req/s)"))
                .unwrap_or_default()
        );
        eprintln!("== {label}");
        let cpu0 = procs::cpu_time(server.proc.pid());
        let report = run::execute(cfg)?;
        let cpu = procs::cpu_time(server.proc.pid()).saturating_sub(cpu0);
        let s = report.summary.clone();
        let cpu_ms = cpu.as_secs_f64() * 1000.0;
        let measured = Measured {
            server_cpu_s: cpu.as_secs_f64(),
            cpu_ms_per_1000_requests: if s.requests > 0 {
                cpu_ms * 1000.0 / s.requests as f64
            } else {
                0.0
            },
            cpu_ms_per_connection: (!matches!(
                cfg.scenario,
                Scenario::Keepalive | Scenario::MtlsDirect | Scenario::Rotate
            ) && s.connections > 0)
                .then(|| cpu_ms / s.connections as f64),
            report,
        };
        eprintln!(
            "   {label}: {:.0} req/s, p99 {}, errors {}, server CPU {:.2}s ({:.1} ms/1000 req{})",
            s.requests_per_s,
            crate::stats::fmt_us(s.latency_us.p99),
            s.errors,
            measured.server_cpu_s,
            measured.cpu_ms_per_1000_requests,
            measured
                .cpu_ms_per_connection
                .map(|c| format!(", {c:.3} ms/connection"))
                .unwrap_or_default()
        );
        Ok(measured)
    }

    fn warm_up(&self, server: &Server) -> Result<(), String> {
        let mut cfg = self.config(server, Scenario::Keepalive)?;
        cfg.duration = Duration::from_secs(1);
        cfg.progress = false;
        let r = run::execute(&cfg)?;
        if r.summary.requests == 0 {
            return Err(format!(
                "{}: no request succeeded during warm-up ({:?})",
                server.kind.name(),
                r.summary.errors_by_kind
            ));
        }
        Ok(())
    }
}

pub fn run(args: CompareArgs) -> Result<(), String> {
    let kinds = args
        .servers
        .iter()
        .map(|s| Kind::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    check_programs(&kinds)?;
    let (own_client, tools) = choose_clients(args.clients.as_deref())?;
    harness::bin_dir()?;
    let driver = args.driver.resolve()?;
    // Client and servers each hold one descriptor per idle connection; HAProxy sizes its own
    // need from maxconn (12000) and refuses to start below it.
    let want_fds =
        ((args.idle_connections as u64 + args.connections as u64) * 2 + 1024).max(65_536);
    let fds = procs::raise_nofile(want_fds);
    if fds < want_fds {
        eprintln!(
            "loadtest: open-file limit {fds} < {want_fds}: the idle-connection figure may fail"
        );
    }
    let pki = Pki::create()?;
    let mut backend = Backend::start(&pki, args.backend_workers)?;
    let context = client::build_context(Some("X25519"), None)?;
    let ctx = Ctx {
        args,
        driver,
        context,
    };
    let mut results: Vec<ServerResult> = Vec::new();
    let mut open_rate: Option<f64> = None;
    for kind in &kinds {
        let server = Server::start_with(
            *kind,
            &pki,
            backend.port,
            ctx.args.workers,
            ctx.args.edgegw_pin_workers,
        )?;
        ctx.warm_up(&server)?;
        let mut result = ServerResult {
            server: *kind,
            scenarios: BTreeMap::new(),
            open_loop: None,
            idle: None,
            upstream: None,
            rotate: None,
            post_quantum: BTreeMap::new(),
            third_party: BTreeMap::new(),
        };
        for figure in thirdparty::Figure::of(&tools) {
            let m = ctx.measure_tool(&server, figure)?;
            result.third_party.insert(figure.name().to_string(), m);
        }
        let own_scenarios: &[Scenario] = if own_client { &ctx.args.scenarios } else { &[] };
        for scenario in own_scenarios {
            let cfg = ctx.config(&server, *scenario)?;
            // edgegw, steady keep-alive: count upstream handshakes and requests from its own
            // metrics between a point after the run's first connections settled and the end.
            let settle = (cfg.duration / 4).min(Duration::from_secs(2));
            let early = (*kind == Kind::Edgegw && *scenario == Scenario::Keepalive).then(|| {
                let metrics = server.metrics.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(settle);
                    metrics.and_then(|m| m.get("/metrics").ok()).map(|(_, t)| t)
                })
            });
            let m = ctx.measure(&server, &cfg)?;
            if let Some(early) = early {
                let before = early.join().ok().flatten().unwrap_or_default();
                let after = server.metrics_text();
                let hs = |t: &str| metric_sum(t, "edgegw_upstream_handshakes_total", &[]);
                let req = |t: &str| metric_sum(t, "edgegw_requests_total", &[]);
                let up = result.upstream.get_or_insert_with(Default::default);
                up.steady_handshakes = hs(&after) - hs(&before);
                up.steady_requests = (req(&after) - req(&before)).max(0.0) as u64;
                up.steady_handshakes_per_request =
                    up.steady_handshakes / (up.steady_requests.max(1) as f64);
            }
            if *kind == Kind::Nginx && *scenario == Scenario::Keepalive {
                open_rate = Some(m.report.summary.requests_per_s * 0.5);
            }
            result.scenarios.insert(scenario.name().to_string(), m);
        }
        if let (Some(rate), false, true) = (open_rate, ctx.args.no_open_loop, own_client) {
            let mut cfg = ctx.config(&server, Scenario::Keepalive)?;
            cfg.rate = Some(rate);
            result.open_loop = Some(ctx.measure(&server, &cfg)?);
        }
        if ctx.args.idle_connections > 0 && own_client {
            eprintln!("== {} idle RSS", kind.name());
            let target: Target = server.url("/").parse()?;
            let n = match kind {
                Kind::Haproxy => ctx
                    .args
                    .idle_connections
                    .min(harness::HAPROXY_MAXCONN - 500),
                _ => ctx.args.idle_connections,
            };
            let idle = idle_rss(server.proc.pid(), &target, &ctx.context, driver, n)?;
            eprintln!(
                "   {}: {} open ({} failed), RSS {} -> {} KiB: {:.1} KiB per connection",
                kind.name(),
                idle.opened,
                idle.failed,
                idle.rss_before_kib,
                idle.rss_after_kib,
                idle.kib_per_connection
            );
            result.idle = Some(idle);
        }
        if *kind == Kind::Edgegw && own_client {
            // What post-quantum key exchange costs: the same handshakes, the client offering
            // X25519MLKEM768 (NGINX 1.22 on OpenSSL 3.0 has no ML-KEM: edgegw only).
            let pq = client::build_context(Some("X25519MLKEM768"), None)?;
            for scenario in [Scenario::Newconn, Scenario::Resume] {
                let mut cfg = ctx.config(&server, scenario)?;
                cfg.context = pq.clone();
                let m = ctx.measure(&server, &cfg)?;
                result
                    .post_quantum
                    .insert(format!("{}-mlkem", scenario.name()), m);
            }
            reconnects(&ctx, &server, &mut backend, &mut result)?;
            let mut cfg = ctx.config(&server, Scenario::Rotate)?;
            let admin = server
                .admin
                .clone()
                .ok_or("edgegw without admin endpoint")?;
            // A new certificate (made in-process) every second, as `run --scenario rotate`.
            cfg.rotate = Some(run::RotateConfig::new(
                admin,
                "loadtest-rotate",
                harness::BACKEND_ID,
            ));
            result.rotate = Some(ctx.measure(&server, &cfg)?);
        }
        drop(server);
        results.push(result);
    }
    let figures = figures(&results);
    let disagreements = disagreements(&results);
    let comparison = Comparison {
        machine: machine(),
        duration_s: ctx.args.duration.as_secs_f64(),
        connections: ctx.args.connections,
        workers: ctx.args.workers,
        client_threads: ctx.args.threads,
        driver,
        open_loop_rate: open_rate,
        servers: results,
        figures,
        disagreements,
    };
    println!("{}", table(&comparison));
    if let Some(path) = &ctx.args.json {
        let text = serde_json::to_string_pretty(&comparison).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &ctx.args.html {
        let html = crate::report::write_html(&html_input(&comparison, &ctx.args.scenarios));
        std::fs::write(path, html).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Restarts the backend (same ticket key) so every pooled upstream connection dies, then
/// sends keep-alive load: the gateway's new upstream connections should resume their sessions.
fn reconnects(
    ctx: &Ctx,
    server: &Server,
    backend: &mut Backend,
    result: &mut ServerResult,
) -> Result<(), String> {
    eprintln!("== edgegw upstream reconnects: restarting the backend");
    let hs = |t: &str, resumed: Option<&str>| match resumed {
        Some(r) => metric_sum(t, "edgegw_upstream_handshakes_total", &[("resumed", r)]),
        None => metric_sum(t, "edgegw_upstream_handshakes_total", &[]),
    };
    let before = server.metrics_text();
    backend.restart()?;
    let mut cfg = ctx.config(server, Scenario::Keepalive)?;
    cfg.duration = Duration::from_secs(3);
    cfg.progress = false;
    let report = run::execute(&cfg)?;
    let after = server.metrics_text();
    let up = result.upstream.get_or_insert_with(Default::default);
    up.reconnects = hs(&after, None) - hs(&before, None);
    up.reconnects_resumed = hs(&after, Some("true")) - hs(&before, Some("true"));
    up.reconnect_resumed_ratio =
        (up.reconnects > 0.0).then(|| up.reconnects_resumed / up.reconnects);
    up.reconnect_run_errors = report.summary.errors;
    eprintln!(
        "   {} upstream handshakes after the restart, {} resumed; {} failed requests",
        up.reconnects, up.reconnects_resumed, up.reconnect_run_errors
    );
    Ok(())
}

/// Opens `n` TLS connections (one request each, then idle) in batches and reads the server's
/// RSS before and after.
fn idle_rss(
    pid: u32,
    target: &Target,
    context: &SslContext,
    driver: Driver,
    n: usize,
) -> Result<IdleResult, String> {
    const BATCH: usize = 200;
    let before = procs::rss_kib(pid);
    let request = Rc::new(client::get_request(&target.authority, &target.path, false));
    let (opened, failed, after) = driver
        .block_on(async {
            let mut conns: Vec<Conn> = Vec::with_capacity(n);
            let mut failed = 0usize;
            while conns.len() + failed < n {
                let k = BATCH.min(n - conns.len() - failed);
                let tasks: Vec<_> = (0..k)
                    .map(|_| {
                        let request = request.clone();
                        let context = context.clone();
                        let addr = target.addr;
                        crate::engine::spawn(async move {
                            let open = async {
                                let mut c = Conn::connect(addr, &context, None, None).await?;
                                c.request(&request).await?;
                                c.shrink();
                                Ok::<Conn, crate::stats::ErrorKind>(c)
                            };
                            crate::engine::timeout(Duration::from_secs(10), open).await
                        })
                    })
                    .collect();
                for t in tasks {
                    match t.await {
                        Ok(Ok(Ok(c))) => conns.push(c),
                        _ => failed += 1,
                    }
                }
                if failed > n / 10 {
                    break;
                }
            }
            crate::engine::sleep(Duration::from_secs(1)).await;
            let after = procs::rss_kib(pid);
            (conns.len(), failed, after)
        })
        .map_err(|e| format!("event loop: {e}"))?;
    Ok(IdleResult {
        opened,
        failed,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: if opened > 0 {
            after.saturating_sub(before) as f64 / opened as f64
        } else {
            0.0
        },
    })
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Every target of the issue, from one run's results.
pub fn figures(results: &[ServerResult]) -> Vec<Figure> {
    let get = |kind: Kind, f: &dyn Fn(&ServerResult) -> Option<f64>| {
        results.iter().find(|r| r.server == kind).and_then(f)
    };
    let scenario = |name: &'static str, f: fn(&Measured) -> Option<f64>| {
        move |r: &ServerResult| r.scenarios.get(name).and_then(f)
    };
    let mut out = Vec::new();
    let mut peer_figure =
        |figure, target, f: &dyn Fn(&ServerResult) -> Option<f64>, met: fn(f64) -> bool| {
            let (e, n, h) = (
                get(Kind::Edgegw, f),
                get(Kind::Nginx, f),
                get(Kind::Haproxy, f),
            );
            let ratio_nginx = ratio(e, n);
            out.push(Figure {
                figure,
                target,
                edgegw: e,
                nginx: n,
                haproxy: h,
                ratio_nginx,
                ratio_haproxy: ratio(e, h),
                met: ratio_nginx.map(met),
            });
        };
    peer_figure(
        "keep-alive proxied requests/s",
        ">= 1.5 x NGINX",
        &scenario("keepalive", |m| Some(m.report.summary.requests_per_s)),
        |r| r >= 1.5,
    );
    peer_figure(
        "server CPU ms per 1000 keep-alive requests",
        "<= 0.67 x NGINX",
        &scenario("keepalive", |m| Some(m.cpu_ms_per_1000_requests)),
        |r| r <= 0.67,
    );
    peer_figure(
        "server CPU ms per new connection (full handshake + request)",
        "<= 0.8 x NGINX",
        &scenario("newconn", |m| m.cpu_ms_per_connection),
        |r| r <= 0.8,
    );
    peer_figure(
        "p99 latency (µs) at 50% of NGINX's max rate, open loop",
        "<= NGINX",
        &|r: &ServerResult| {
            r.open_loop
                .as_ref()
                .map(|m| m.report.summary.latency_us.p99 as f64)
        },
        |r| r <= 1.0,
    );
    // Third-party clients (the targets of the TLS-connection issue).
    let tool_opt = |name: &'static str, f: fn(&ToolMeasured) -> Option<f64>| {
        move |r: &ServerResult| r.third_party.get(name).and_then(f)
    };
    let tool = |name: &'static str, f: fn(&ToolMeasured) -> f64| {
        move |r: &ServerResult| r.third_party.get(name).map(f)
    };
    peer_figure(
        "h2load --h1 keep-alive requests/s",
        ">= 1.2 x NGINX",
        &tool("h2load-keepalive", |m| m.run.per_s),
        |r| r >= 1.2,
    );
    peer_figure(
        "h2load keep-alive: server CPU ms per 1000 requests",
        "<= 0.6 x NGINX",
        &tool("h2load-keepalive", |m| m.cpu_ms_per_1000),
        |r| r <= 0.6,
    );
    peer_figure(
        "h2load keep-alive: mean latency ms",
        "(info)",
        &tool_opt("h2load-keepalive", |m| m.run.latency_mean_ms),
        |_| true,
    );
    peer_figure(
        "wrk Connection: close (resumed TLS) requests/s",
        ">= 1.2 x NGINX",
        &tool("wrk-newconn-resume", |m| m.run.per_s),
        |r| r >= 1.2,
    );
    peer_figure(
        "wrk Connection: close: server CPU ms per 1000 connections",
        "<= 0.7 x NGINX",
        &tool("wrk-newconn-resume", |m| m.cpu_ms_per_1000),
        |r| r <= 0.7,
    );
    peer_figure(
        "wrk Connection: close: p99 latency ms",
        "(info)",
        &tool_opt("wrk-newconn-resume", |m| m.run.latency_p99_ms),
        |_| true,
    );
    peer_figure(
        "s_time -reuse serial resumed connections/s",
        ">= 1.2 x NGINX",
        &tool("s_time-reuse", |m| m.run.per_s),
        |r| r >= 1.2,
    );
    peer_figure(
        "s_time -new serial full-handshake connections/s",
        ">= 1.1 x NGINX",
        &tool("s_time-new", |m| m.run.per_s),
        |r| r >= 1.1,
    );
    // Informational rows (no target of their own).
    peer_figure(
        "new connections/s (full handshake)",
        "(info)",
        &scenario("newconn", |m| Some(m.report.summary.requests_per_s)),
        |_| true,
    );
    peer_figure(
        "server CPU ms per resumed connection",
        "(info)",
        &scenario("resume", |m| m.cpu_ms_per_connection),
        |_| true,
    );
    for f in out.iter_mut().filter(|f| f.target == "(info)") {
        f.met = None;
    }
    let mut own = |figure, target, value: Option<f64>, met: fn(f64) -> bool| {
        let nginx = None;
        out.push(Figure {
            figure,
            target,
            edgegw: value,
            nginx,
            haproxy: None,
            ratio_nginx: None,
            ratio_haproxy: None,
            met: value.map(met),
        });
    };
    let edgegw = results.iter().find(|r| r.server == Kind::Edgegw);
    // edgegw's CPU per connection in one scenario of its ordinary or post-quantum runs.
    let cpu_per_conn = |runs: fn(&ServerResult) -> &BTreeMap<String, Measured>, name: &str| {
        edgegw
            .and_then(|r| runs(r).get(name))
            .and_then(|m| m.cpu_ms_per_connection)
    };
    let per_conn = |name: &str| cpu_per_conn(|r| &r.scenarios, name);
    let pq_per_conn = |name: &str| cpu_per_conn(|r| &r.post_quantum, name);
    own(
        "edgegw CPU, resumed / full handshake",
        "<= 0.35",
        ratio(per_conn("resume"), per_conn("newconn")),
        |r| r <= 0.35,
    );
    let up = edgegw.and_then(|r| r.upstream.as_ref());
    own(
        "edgegw CPU ms per full handshake, X25519MLKEM768",
        "(info)",
        pq_per_conn("newconn-mlkem"),
        |_| true,
    );
    own(
        "same, X25519MLKEM768 / X25519",
        "(info)",
        ratio(pq_per_conn("newconn-mlkem"), per_conn("newconn")),
        |_| true,
    );
    own(
        "edgegw CPU ms per resumed handshake, X25519MLKEM768",
        "(info)",
        pq_per_conn("resume-mlkem"),
        |_| true,
    );
    own(
        "same, X25519MLKEM768 / X25519",
        "(info)",
        ratio(pq_per_conn("resume-mlkem"), per_conn("resume")),
        |_| true,
    );
    own(
        "upstream handshakes per request, steady keep-alive",
        "0 after warm-up",
        up.map(|u| u.steady_handshakes_per_request),
        |r| r == 0.0,
    );
    own(
        "upstream reconnects that resume",
        ">= 95 %",
        up.and_then(|u| u.reconnect_resumed_ratio)
            .map(|r| r * 100.0),
        |r| r >= 95.0,
    );
    own(
        "RSS KiB per idle downstream TLS connection",
        "<= 32 KiB",
        edgegw
            .and_then(|r| r.idle.as_ref())
            .map(|i| i.kib_per_connection),
        |r| r <= 32.0,
    );
    own(
        "failed requests in rotate",
        "0",
        edgegw
            .and_then(|r| r.rotate.as_ref())
            .map(|m| m.report.summary.errors as f64),
        |r| r == 0.0,
    );
    // RSS of the peers, for reference.
    let rss = |kind| {
        results
            .iter()
            .find(|r| r.server == kind)
            .and_then(|r| r.idle.as_ref())
            .map(|i| i.kib_per_connection)
    };
    if let Some(f) = out.iter_mut().find(|f| f.figure.starts_with("RSS")) {
        f.nginx = rss(Kind::Nginx);
        f.haproxy = rss(Kind::Haproxy);
        f.ratio_nginx = ratio(f.edgegw, f.nginx);
        f.ratio_haproxy = ratio(f.edgegw, f.haproxy);
    }
    for f in out.iter_mut().filter(|f| f.target == "(info)") {
        f.met = None;
    }
    out
}

/// Pairs of figures that measure the same thing with this program's client and with a
/// third-party one; where edgegw's ratio to NGINX differs by more than 20 % between them,
/// one sentence says so (BENCHMARKS.md explains the known cases).
pub fn disagreements(results: &[ServerResult]) -> Vec<String> {
    let value = |kind: Kind, own: bool, name: &str| {
        let r = results.iter().find(|r| r.server == kind)?;
        if own {
            r.scenarios
                .get(name)
                .map(|m| m.report.summary.requests_per_s)
        } else {
            r.third_party.get(name).map(|m| m.run.per_s)
        }
    };
    let pairs = [
        ("keepalive", "h2load-keepalive", "keep-alive requests/s"),
        ("resume", "wrk-newconn-resume", "resumed new connections/s"),
        ("newconn", "s_time-new", "full-handshake connections/s"),
    ];
    let mut out = Vec::new();
    for (own, third, what) in pairs {
        let own_ratio = ratio(
            value(Kind::Edgegw, true, own),
            value(Kind::Nginx, true, own),
        );
        let third_ratio = ratio(
            value(Kind::Edgegw, false, third),
            value(Kind::Nginx, false, third),
        );
        if let (Some(a), Some(b)) = (own_ratio, third_ratio) {
            if (a / b - 1.0).abs() > 0.2 {
                out.push(format!(
                    "{what}: own client ({own}) says edgegw = {a:.2} x NGINX, {third} says {b:.2} x: they disagree by more than 20 %"
                ));
            }
        }
    }
    out
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(0.0) => "0".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
    }
}

pub fn table(c: &Comparison) -> String {
    let mut s = format!(
        "\nedgegw vs NGINX vs HAProxy: {} workers each, {} connections, {:.0}s per run, client {} thread(s) on {:?}; {} ({} CPUs), kernel {}\n\n",
        c.workers, c.connections, c.duration_s, c.client_threads, c.driver, c.machine.cpu, c.machine.cpus, c.machine.kernel
    );
    s.push_str(&format!(
        "{:<62} {:>10} {:>10} {:>10} {:>8} {:>8}  {:<16} {}\n",
        "figure", "edgegw", "nginx", "haproxy", "e/nginx", "e/hapx", "target", "met"
    ));
    for f in &c.figures {
        s.push_str(&format!(
            "{:<62} {:>10} {:>10} {:>10} {:>8} {:>8}  {:<16} {}\n",
            f.figure,
            cell(f.edgegw),
            cell(f.nginx),
            cell(f.haproxy),
            cell(f.ratio_nginx),
            cell(f.ratio_haproxy),
            f.target,
            match f.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            }
        ));
    }
    let errors: Vec<String> = c
        .servers
        .iter()
        .flat_map(|r| {
            r.scenarios
                .values()
                .chain(&r.open_loop)
                .chain(&r.rotate)
                .filter(|m| m.report.summary.errors > 0)
                .map(move |m| {
                    format!(
                        "{} {}: {:?}",
                        r.server.name(),
                        m.report.scenario.name(),
                        m.report.summary.errors_by_kind
                    )
                })
                .chain(
                    r.third_party
                        .values()
                        .filter(|m| m.run.errors > 0)
                        .map(move |m| {
                            format!(
                                "{} {}: {} errors ({})",
                                r.server.name(),
                                m.run.figure.name(),
                                m.run.errors,
                                m.run.command
                            )
                        }),
                )
        })
        .collect();
    if !c.disagreements.is_empty() {
        s.push_str("\nown client vs third-party clients:\n");
        for d in &c.disagreements {
            s.push_str(&format!("  {d}\n"));
        }
    }
    if !errors.is_empty() {
        s.push_str("\nerrors:\n");
        for e in errors {
            s.push_str(&format!("  {e}\n"));
        }
    }
    s
}

/// The HTML report of a comparison: one section per scenario of this program's client with
/// every server's curve and seconds (then the open-loop runs and edgegw's own runs), the
/// server CPU bars, the figures and the third-party clients' runs as tables.
pub fn html_input(c: &Comparison, scenarios: &[Scenario]) -> ReportInput {
    let mut sections = Vec::new();
    let mut add = |title: String, note: String, runs: Vec<(&str, &Measured)>| {
        if runs.is_empty() {
            return;
        }
        sections.push(Section {
            title,
            note,
            series: runs.iter().map(|(n, m)| m.report.series(n)).collect(),
        });
    };
    let note = |runs: &[(&str, &Measured)]| {
        runs.first()
            .map(|(_, m)| m.report.describe())
            .unwrap_or_default()
    };
    for scenario in scenarios {
        let runs: Vec<(&str, &Measured)> = c
            .servers
            .iter()
            .filter_map(|r| {
                r.scenarios
                    .get(scenario.name())
                    .map(|m| (r.server.name(), m))
            })
            .collect();
        add(scenario.name().to_string(), note(&runs), runs);
    }
    let runs: Vec<(&str, &Measured)> = c
        .servers
        .iter()
        .filter_map(|r| r.open_loop.as_ref().map(|m| (r.server.name(), m)))
        .collect();
    add(
        "keepalive, open loop at 50 % of NGINX's maximum rate".into(),
        note(&runs),
        runs,
    );
    for r in &c.servers {
        for (name, m) in &r.post_quantum {
            let runs = vec![(r.server.name(), m)];
            add(
                format!("{name} ({}, client offers X25519MLKEM768)", r.server.name()),
                note(&runs),
                runs,
            );
        }
        if let Some(m) = &r.rotate {
            let runs = vec![(r.server.name(), m)];
            add(
                format!(
                    "rotate ({}: a certificate re-uploaded every second)",
                    r.server.name()
                ),
                note(&runs),
                runs,
            );
        }
    }

    // CPU: this program's keepalive and newconn runs; a third-party client's where the own
    // client did not run.
    let mut own = false;
    let mut third = false;
    let cpu: Vec<CpuBar> = c
        .servers
        .iter()
        .map(|r| {
            let tool = |name: &str| r.third_party.get(name).map(|t| t.cpu_ms_per_1000);
            let per_1000 = match r.scenarios.get("keepalive") {
                Some(m) => {
                    own = true;
                    Some(m.cpu_ms_per_1000_requests)
                }
                None => tool("h2load-keepalive").inspect(|_| third = true),
            };
            let per_conn = match r
                .scenarios
                .get("newconn")
                .and_then(|m| m.cpu_ms_per_connection)
            {
                Some(v) => {
                    own = true;
                    Some(v)
                }
                None => tool("s_time-new")
                    .map(|v| v / 1000.0)
                    .inspect(|_| third = true),
            };
            CpuBar {
                server: r.server.name().to_string(),
                per_1000_requests_ms: per_1000,
                per_new_connection_ms: per_conn,
            }
        })
        .filter(|b| b.per_1000_requests_ms.is_some() || b.per_new_connection_ms.is_some())
        .collect();
    let cpu_note = match (own, third) {
        (true, false) => "From this program's keepalive (per 1000 requests) and newconn (per new connection, a full handshake and one request) runs.",
        (false, true) => "From h2load --h1 keep-alive (per 1000 requests) and openssl s_time -new (per new connection): this program's own client did not run.",
        _ => "From this program's keepalive and newconn runs, or h2load and openssl s_time -new where those did not run.",
    };

    let mut figures = Table {
        caption: "Figures and targets".into(),
        header: [
            "figure",
            "edgegw",
            "nginx",
            "haproxy",
            "e/nginx",
            "e/haproxy",
            "target",
            "met",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
    };
    for f in &c.figures {
        figures.rows.push(vec![
            f.figure.to_string(),
            cell(f.edgegw),
            cell(f.nginx),
            cell(f.haproxy),
            cell(f.ratio_nginx),
            cell(f.ratio_haproxy),
            f.target.to_string(),
            match f.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => String::new(),
            },
        ]);
    }
    let mut tables = vec![figures];
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    let tool_rows: Vec<Vec<String>> = c
        .servers
        .iter()
        .flat_map(|r| {
            r.third_party.iter().map(move |(name, t)| {
                vec![
                    name.clone(),
                    r.server.name().to_string(),
                    t.run.completed.to_string(),
                    format!("{:.0}", t.run.per_s),
                    t.run.errors.to_string(),
                    ms(t.run.latency_p50_ms),
                    ms(t.run.latency_p99_ms),
                    format!("{:.3}", t.cpu_ms_per_1000),
                    t.run.command.clone(),
                ]
            })
        })
        .collect();
    if !tool_rows.is_empty() {
        tables.push(Table {
            caption: "Third-party clients".into(),
            header: [
                "figure",
                "server",
                "completed",
                "per s",
                "errors",
                "p50 ms",
                "p99 ms",
                "server CPU ms per 1000",
                "command",
            ]
            .map(String::from)
            .to_vec(),
            rows: tool_rows,
        });
    }
    let gateway_rows: Vec<Vec<String>> = c
        .servers
        .iter()
        .filter_map(|r| r.idle.as_ref().map(|i| (r.server.name(), i)))
        .map(|(name, i)| {
            vec![
                name.to_string(),
                i.opened.to_string(),
                i.failed.to_string(),
                i.rss_before_kib.to_string(),
                i.rss_after_kib.to_string(),
                format!("{:.1}", i.kib_per_connection),
            ]
        })
        .collect();
    if !gateway_rows.is_empty() {
        tables.push(Table {
            caption: "RSS with idle TLS connections".into(),
            header: [
                "server",
                "opened",
                "failed",
                "RSS before KiB",
                "RSS after KiB",
                "KiB per connection",
            ]
            .map(String::from)
            .to_vec(),
            rows: gateway_rows,
        });
    }

    let mut machine = crate::report::machine();
    machine.push(("nginx".into(), c.machine.nginx.clone()));
    machine.push(("haproxy".into(), c.machine.haproxy.clone()));
    let servers: Vec<&str> = c.servers.iter().map(|r| r.server.name()).collect();
    let config = vec![
        ("servers".to_string(), servers.join(", ")),
        (
            "duration of each run".to_string(),
            format!("{} s", c.duration_s),
        ),
        ("client connections".to_string(), c.connections.to_string()),
        ("server workers".to_string(), c.workers.to_string()),
        ("client threads".to_string(), c.client_threads.to_string()),
        ("client driver".to_string(), format!("{:?}", c.driver)),
        (
            "open-loop rate".to_string(),
            c.open_loop_rate
                .map_or("-".into(), |r| format!("{r:.0} req/s")),
        ),
    ];
    ReportInput {
        title: format!("loadtest compare: {}", servers.join(" vs ")),
        command_line: crate::report::command_line(),
        machine,
        config,
        sections,
        cpu,
        cpu_note: cpu_note.to_string(),
        tables,
        notes: c.disagreements.clone(),
    }
}
