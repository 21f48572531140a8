//! `loadtest scale`: how edgegw behaves as its store grows. It starts the mTLS test backend
//! and edgegw (embedded store, as the other hardening commands do), then:
//!
//! 1. makes `--certificates` client certificates and their PKCS#12 bundles in this process
//!    (`crate::bundles`, every one a new key) before anything is measured;
//! 2. creates the first certificate, backend and API, and measures the data plane's request
//!    CPU *before*: keep-alive GETs on `--connections` connections for `--load-seconds`
//!    against that one API (after a short warm-up), edgegw's CPU time (user + system, from
//!    /proc) divided by the requests answered;
//! 3. creates the rest through the admin API, one write at a time, in `--stages` growth
//!    stages (each stage a slice of every kind: its certificates, then its backends, each
//!    bound to a certificate, then its APIs, each routed to a backend), and reports per stage
//!    the write latency of each kind (p50/p99, as the client saw each PUT), the snapshot
//!    rebuilds of the stage (`edgegw_snapshot_publish_duration_seconds`: count, mean and the
//!    bucket holding the p99, from /metrics deltas) and edgegw's RSS;
//! 4. times `GET /certificates` (three calls) and counts what edgegw lists (`GET
//!    /certificates`, `/backends`, `/apis`: the real counts, not this tool's);
//! 5. measures the request CPU *after*, with every route in place, against the first API,
//!    one in the middle and the last one (the last in the order the routes are matched).
//!
//! Everything runs on 127.0.0.1 and stops by itself. Nothing is asserted: a write that fails
//! is counted and reported, and makes the command exit non-zero after the table.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admin::{metric_sum, Endpoint};
use crate::bundles::{self, Bundle};
use crate::certificates::{list_certificates, put_certificate, Latency, Listing};
use crate::engine::DriverChoice;
use crate::harness::{local, Backend, Pki, Server};
use crate::{client, procs, run};

/// The snapshot rebuild histogram edgegw exports (0.6.0).
pub const PUBLISH_METRIC: &str = "edgegw_snapshot_publish_duration_seconds";
/// The password of every bundle this command uploads.
const PASSWORD: &str = "loadtest-scale";

fn certificate_id(i: usize) -> String {
    format!("scale-c{i:05}")
}

fn backend_id(i: usize) -> String {
    format!("scale-b{i:05}")
}

fn api_id(i: usize) -> String {
    format!("scale-a{i:05}")
}

/// Every API's path has the same length, so the routes are matched in id order: the first
/// API is the first route tried, the last API the last one (before the harness's own `/`).
fn api_path(i: usize) -> String {
    format!("/scale/a{i:05}")
}

#[derive(clap::Args)]
pub struct ScaleArgs {
    /// Client certificates to create (each a new key, uploaded as PKCS#12).
    #[arg(long, default_value_t = 10_000)]
    certificates: usize,
    /// Backends to create, each bound to one of the certificates (all point at the test
    /// backend).
    #[arg(long, default_value_t = 1_000)]
    backends: usize,
    /// APIs to create, each routed to one of the backends.
    #[arg(long, default_value_t = 1_000)]
    apis: usize,
    /// Growth stages the writes are reported by (10: a line per 10 % of the total).
    #[arg(long, default_value_t = 10)]
    stages: usize,
    /// Seconds of keep-alive load per request-CPU figure (after a 0.3 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    load_seconds: f64,
    /// Keep-alive connections of that load (one client thread each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// edgegw's server.workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The data plane's request cost under one keep-alive load.
#[derive(Clone, Debug, Serialize)]
pub struct RequestCpu {
    pub label: String,
    pub path: String,
    /// APIs (routes) in edgegw's configuration during the load, the harness's `/` included.
    pub routes: usize,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub latency_ms: Latency,
    /// edgegw's CPU time (user + system) during the measured window.
    pub cpu_s: f64,
    pub cpu_s_per_1000_requests: f64,
}

/// One growth stage of the writes.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    pub stage: usize,
    /// Created by this command so far (end of the stage).
    pub certificates: usize,
    pub backends: usize,
    pub apis: usize,
    pub certificate_writes_ms: Latency,
    pub backend_writes_ms: Latency,
    pub api_writes_ms: Latency,
    pub failures: usize,
    /// Snapshot rebuilds during the stage and their mean time (from edgegw's histogram).
    pub publishes: u64,
    pub publish_mean_ms: f64,
    /// The upper bound of the histogram bucket holding the stage's p99 (None: no rebuilds,
    /// or beyond the last bucket).
    pub publish_p99_at_most_ms: Option<f64>,
    pub rss_kib: u64,
    pub elapsed_s: f64,
}

/// What edgegw lists at the end, counted for this command's ids.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Listed {
    pub certificates: usize,
    pub distinct_thumbprints: usize,
    pub backends: usize,
    pub apis: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Rss {
    pub start_kib: u64,
    pub after_first_load_kib: u64,
    pub after_writes_kib: u64,
    pub end_kib: u64,
}

/// Every figure of one run (the `--json` document).
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    pub certificates: usize,
    pub backends: usize,
    pub apis: usize,
    pub workers: usize,
    pub connections: usize,
    pub load_seconds: f64,
    pub bundles_s: f64,
    pub before: RequestCpu,
    pub stages: Vec<Stage>,
    pub writes_s: f64,
    /// Every snapshot rebuild of the writes: count and mean.
    pub publishes: u64,
    pub publish_mean_ms: f64,
    /// `GET /certificates` at the end (the first of three calls) and the three times.
    pub list_certificates: Listing,
    pub list_certificates_ms: Vec<f64>,
    pub listed: Listed,
    pub rss: Rss,
    pub after: Vec<RequestCpu>,
    pub failures: usize,
    pub first_errors: Vec<String>,
}

pub fn run(args: ScaleArgs) -> Result<(), String> {
    if args.certificates == 0 || args.backends == 0 || args.apis == 0 {
        return Err("--certificates, --backends and --apis must each be at least 1".into());
    }
    if !(args.load_seconds > 0.0 && args.load_seconds.is_finite()) {
        return Err("--load-seconds must be a positive number".into());
    }
    let stages = args.stages.clamp(1, args.certificates.max(args.apis));
    let connections = args.connections.max(1);

    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let t = Instant::now();
    let bundles =
        bundles::client_bundles("loadtest-scale-", 0, args.certificates, PASSWORD, threads)?;
    let bundles_s = t.elapsed().as_secs_f64();
    eprintln!(
        "scale: {} certificates and their PKCS#12 bundles made in {bundles_s:.1} s",
        bundles.len()
    );

    let pki = Pki::create()?;
    let backend = Backend::start(&pki, 1)?;
    let server = Server::start_edgegw(&pki, backend.port, args.workers, &[])?;
    let pid = server.proc.pid();
    let admin = server
        .admin
        .clone()
        .ok_or("edgegw without an admin endpoint")?;
    let metrics = server
        .metrics
        .clone()
        .ok_or("edgegw without a metrics endpoint")?;
    println!(
        "scale: edgegw pid {pid} ({} workers, embedded store); creating {} certificates, {} \
         backends and {} APIs through the admin API, one write at a time, in {stages} stages; \
         request CPU from {connections} keep-alive connections for {} s",
        args.workers, args.certificates, args.backends, args.apis, args.load_seconds
    );
    let mut rss = Rss {
        start_kib: procs::vm_rss_kib(pid),
        ..Rss::default()
    };

    let mut writer = Writer {
        admin: &admin,
        bundles: &bundles,
        backend_port: backend.port,
        made: (0, 0, 0),
        failures: 0,
        first_errors: Vec::new(),
    };
    // The first of each kind, then the load against that one API.
    let mut first = (Vec::new(), Vec::new(), Vec::new());
    let first_publish = publish_figures(&metrics);
    writer.certificate(0, &mut first.0);
    writer.backend(0, &mut first.1);
    writer.api(0, &mut first.2);
    if writer.failures > 0 {
        return Err(format!(
            "creating the first certificate, backend and API failed: {}",
            writer.first_errors.join("; ")
        ));
    }
    let load = |label: &str, api: usize| {
        let cpu = request_cpu(
            pid,
            server.port,
            &api_path(api),
            connections,
            args.load_seconds,
        );
        cpu.map(|(requests, errors, latency, cpu, seconds)| RequestCpu {
            label: label.to_string(),
            path: api_path(api),
            routes: 0,
            requests,
            errors,
            seconds,
            requests_per_s: requests as f64 / seconds.max(1e-9),
            latency_ms: latency,
            cpu_s: cpu,
            cpu_s_per_1000_requests: if requests > 0 {
                cpu / requests as f64 * 1000.0
            } else {
                0.0
            },
        })
    };
    let routes_before = count_ids(&admin, "/apis", "")?;
    let mut before = load("before", 0)?;
    before.routes = routes_before;
    rss.after_first_load_kib = procs::vm_rss_kib(pid);
    eprintln!(
        "scale: before: {:.3} s of edgegw CPU per 1000 requests ({} requests)",
        before.cpu_s_per_1000_requests, before.requests
    );

    let writes_start = Instant::now();
    let mut stage_list = Vec::new();
    let mut last_publish = publish_figures(&metrics);
    for s in 0..stages {
        let t = Instant::now();
        let failures_before = writer.failures;
        let (mut c, mut b, mut a) = if s == 0 {
            first.clone()
        } else {
            (Vec::new(), Vec::new(), Vec::new())
        };
        let upto = |total: usize| total * (s + 1) / stages;
        for i in writer.made.0..upto(args.certificates) {
            writer.certificate(i, &mut c);
        }
        for i in writer.made.1..upto(args.backends) {
            writer.backend(i, &mut b);
        }
        for i in writer.made.2..upto(args.apis) {
            writer.api(i, &mut a);
        }
        // The first stage's rebuilds include those of the first three writes.
        let base = if s == 0 {
            &first_publish
        } else {
            &last_publish
        };
        let now = publish_figures(&metrics);
        let delta = now.since(base);
        let stage = Stage {
            stage: s + 1,
            certificates: writer.made.0,
            backends: writer.made.1,
            apis: writer.made.2,
            certificate_writes_ms: Latency::of(&c),
            backend_writes_ms: Latency::of(&b),
            api_writes_ms: Latency::of(&a),
            failures: writer.failures - failures_before,
            publishes: delta.count as u64,
            publish_mean_ms: delta.mean_ms(),
            publish_p99_at_most_ms: delta.quantile_at_most_ms(0.99),
            rss_kib: procs::vm_rss_kib(pid),
            elapsed_s: t.elapsed().as_secs_f64(),
        };
        eprintln!("{}", stage_line(&stage, stages));
        stage_list.push(stage);
        last_publish = now;
    }
    let writes_s = writes_start.elapsed().as_secs_f64();
    let all_publish = last_publish.since(&first_publish);
    rss.after_writes_kib = procs::vm_rss_kib(pid);

    let mut list_ms = Vec::new();
    let mut listing = None;
    for _ in 0..3 {
        let l = list_certificates(&admin, "scale-c")?;
        list_ms.push(l.took_ms);
        listing.get_or_insert(l);
    }
    let listing = listing.unwrap_or_default();
    let routes = count_ids(&admin, "/apis", "")?;
    let listed = Listed {
        certificates: listing.with_prefix,
        distinct_thumbprints: listing.distinct_thumbprints,
        backends: count_ids(&admin, "/backends", "scale-b")?,
        apis: count_ids(&admin, "/apis", "scale-a")?,
    };

    let mut after = Vec::new();
    let middle = args.apis / 2;
    let last = args.apis - 1;
    let mut targets = vec![("after: first API", 0)];
    if middle != 0 && middle != last {
        targets.push(("after: middle API", middle));
    }
    if last != 0 {
        targets.push(("after: last API", last));
    }
    for (label, api) in targets {
        let mut m = load(label, api)?;
        m.routes = routes;
        after.push(m);
    }
    rss.end_kib = procs::vm_rss_kib(pid);

    let report = ScaleReport {
        certificates: args.certificates,
        backends: args.backends,
        apis: args.apis,
        workers: args.workers,
        connections,
        load_seconds: args.load_seconds,
        bundles_s,
        before,
        stages: stage_list,
        writes_s,
        publishes: all_publish.count as u64,
        publish_mean_ms: all_publish.mean_ms(),
        list_certificates: listing,
        list_certificates_ms: list_ms,
        listed,
        rss,
        after,
        failures: writer.failures,
        first_errors: writer.first_errors.clone(),
    };
    drop(server);
    drop(backend);
    println!("{}", table(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if report.failures > 0 {
        return Err(format!("{} admin writes failed", report.failures));
    }
    Ok(())
}

/// Creates the resources, one write at a time, timing each.
struct Writer<'a> {
    admin: &'a Endpoint,
    bundles: &'a [Bundle],
    backend_port: u16,
    /// Certificates, backends and APIs created so far (ids 0..n of each).
    made: (usize, usize, usize),
    failures: usize,
    first_errors: Vec<String>,
}

impl Writer<'_> {
    fn outcome(&mut self, result: Result<(), String>, took: Duration, into: &mut Vec<Duration>) {
        match result {
            Ok(()) => into.push(took),
            Err(e) => {
                self.failures += 1;
                if self.first_errors.len() < 5 {
                    self.first_errors.push(e);
                }
            }
        }
    }

    fn certificate(&mut self, i: usize, into: &mut Vec<Duration>) {
        let id = certificate_id(i);
        let t = Instant::now();
        let result = match self.bundles.get(i) {
            Some(bundle) => put_certificate(self.admin, &id, bundle, PASSWORD)
                .map(|_| ())
                .map_err(|e| format!("PUT /certificates/{id}: {e}")),
            None => Err(format!("no bundle for certificate {i}")),
        };
        self.outcome(result, t.elapsed(), into);
        self.made.0 = self.made.0.max(i + 1);
    }

    /// Backend `i`, bound to one of the certificates made so far.
    fn backend(&mut self, i: usize, into: &mut Vec<Duration>) {
        let certificate = certificate_id(i % self.made.0.max(1));
        let body = serde_json::json!({
            "url": format!("https://{}", local(self.backend_port)),
            "tls": { "validateCertificateChain": false, "validateCertificateName": false },
            "credentials": { "certificateId": certificate },
        });
        let path = format!("/backends/{}", backend_id(i));
        let t = Instant::now();
        let result = self.admin.put_json(&path, &body).map(|_| ());
        self.outcome(result, t.elapsed(), into);
        self.made.1 = self.made.1.max(i + 1);
    }

    /// API `i`, routed to one of the backends made so far.
    fn api(&mut self, i: usize, into: &mut Vec<Duration>) {
        let body = serde_json::json!({
            "path": api_path(i),
            "backendId": backend_id(i % self.made.1.max(1)),
        });
        let path = format!("/apis/{}", api_id(i));
        let t = Instant::now();
        let result = self.admin.put_json(&path, &body).map(|_| ());
        self.outcome(result, t.elapsed(), into);
        self.made.2 = self.made.2.max(i + 1);
    }
}

/// Resources listed under `GET {path}` (`{"value": [...]}`) whose id starts with `prefix`.
fn count_ids(admin: &Endpoint, path: &str, prefix: &str) -> Result<usize, String> {
    let (status, body) = admin.get(path)?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}"))?;
    Ok(v["value"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|r| r["id"].as_str().is_some_and(|id| id.starts_with(prefix)))
                .count()
        })
        .unwrap_or(0))
}

/// The publish histogram as scraped: count, sum (seconds) and cumulative buckets.
#[derive(Clone, Debug, Default)]
struct PublishFigures {
    count: f64,
    sum: f64,
    /// (upper bound in seconds, cumulative count), in the order of the text.
    buckets: Vec<(f64, f64)>,
}

fn publish_figures(metrics: &Endpoint) -> PublishFigures {
    let text = metrics
        .get("/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    parse_publish(&text)
}

fn parse_publish(text: &str) -> PublishFigures {
    let bucket = format!("{PUBLISH_METRIC}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&bucket)?;
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let value = l.rsplit_once(' ')?.1.parse().ok()?;
            Some((le, value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    PublishFigures {
        count: metric_sum(text, &format!("{PUBLISH_METRIC}_count"), &[]),
        sum: metric_sum(text, &format!("{PUBLISH_METRIC}_sum"), &[]),
        buckets,
    }
}

impl PublishFigures {
    fn since(&self, earlier: &PublishFigures) -> PublishFigures {
        PublishFigures {
            count: self.count - earlier.count,
            sum: self.sum - earlier.sum,
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |(_, b)| *b);
                    (*le, n - before)
                })
                .collect(),
        }
    }

    fn mean_ms(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count * 1000.0
        } else {
            0.0
        }
    }

    /// The upper bound (ms) of the first bucket holding at least `q` of the observations.
    fn quantile_at_most_ms(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        self.buckets
            .iter()
            .find(|(_, n)| *n >= q * self.count)
            .map(|(le, _)| le * 1000.0)
            .filter(|ms| ms.is_finite())
    }
}

/// One keep-alive HTTPS connection to edgegw.
/// Keep-alive GETs of `path` on `connections` connections for `seconds`, with the load
/// generator's own engine (`run::execute`, the `keepalive` scenario), after a warm-up that
/// opens them and fills edgegw's upstream pool; returns requests answered 200, errors, their
/// latency, edgegw's CPU seconds during the window and the window's length.
fn request_cpu(
    pid: u32,
    port: u16,
    path: &str,
    connections: usize,
    seconds: f64,
) -> Result<(u64, u64, Latency, f64, f64), String> {
    let target: run::Target = format!("https://127.0.0.1:{port}{path}/x").parse()?;
    let context = client::build_context(None, None)?;
    let driver = DriverChoice::Auto.resolve()?;
    let mut cfg = run::RunConfig::new(run::Scenario::Keepalive, target, context, driver);
    cfg.connections = connections.max(1);
    cfg.progress = false;
    cfg.duration = Duration::from_millis(300);
    run::execute(&cfg)?;
    cfg.duration = Duration::from_secs_f64(seconds);
    let cpu0 = procs::cpu_time(pid);
    let t0 = Instant::now();
    let report = run::execute(&cfg)?;
    let elapsed = t0.elapsed();
    let cpu = procs::cpu_time(pid).saturating_sub(cpu0);
    let s = &report.summary;
    let ms = |us: u64| us as f64 / 1000.0;
    let latency = Latency {
        count: s.requests as usize,
        p50: ms(s.latency_us.p50),
        p90: ms(s.latency_us.p90),
        p99: ms(s.latency_us.p99),
        max: ms(s.latency_us.max),
        mean: s.latency_us.mean / 1000.0,
    };
    Ok((
        s.requests,
        s.errors,
        latency,
        cpu.as_secs_f64(),
        elapsed.as_secs_f64(),
    ))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn stage_line(s: &Stage, stages: usize) -> String {
    format!(
        "{:>3}/{:<3} {:>6} {:>6} {:>6}   {:>15} {:>15} {:>15}   {:>6} {:>8.2} {:>8} {:>9.1} {:>6.1} {:>4}",
        s.stage,
        stages,
        s.certificates,
        s.backends,
        s.apis,
        s.certificate_writes_ms.short(),
        s.backend_writes_ms.short(),
        s.api_writes_ms.short(),
        s.publishes,
        s.publish_mean_ms,
        s.publish_p99_at_most_ms
            .map_or("-".to_string(), |v| format!("<={v}")),
        mib(s.rss_kib),
        s.elapsed_s,
        s.failures,
    )
}

fn cpu_line(m: &RequestCpu) -> String {
    format!(
        "  {:<18} {:<14} {:>5} routes {:>8} req {:>7.0}/s  p50 {:>6.2} p99 {:>6.2} ms  errors {:>3}  {:.3} s CPU per 1000 requests",
        m.label,
        m.path,
        m.routes,
        m.requests,
        m.requests_per_s,
        m.latency_ms.p50,
        m.latency_ms.p99,
        m.errors,
        m.cpu_s_per_1000_requests
    )
}

pub fn table(r: &ScaleReport) -> String {
    let stages = r.stages.len();
    let mut s = format!(
        "scale: {} certificates, {} backends, {} APIs (edgegw {} workers); bundles made in {:.1} s\n\n",
        r.certificates, r.backends, r.apis, r.workers, r.bundles_s
    );
    s.push_str(
        "writes, one at a time; latency p50 / p99 ms per PUT; publish = snapshot rebuilds of the stage\n",
    );
    s.push_str(&format!(
        "{:>7} {:>6} {:>6} {:>6}   {:>15} {:>15} {:>15}   {:>6} {:>8} {:>8} {:>9} {:>6} {:>4}\n",
        "stage",
        "certs",
        "backs",
        "apis",
        "certificate",
        "backend",
        "api",
        "pubs",
        "mean ms",
        "p99 ms",
        "rss MiB",
        "s",
        "fail"
    ));
    for st in &r.stages {
        s.push_str(&format!("{}\n", stage_line(st, stages)));
    }
    s.push_str(&format!(
        "writes: {:.1} s in all; {} snapshot rebuilds, mean {:.2} ms\n",
        r.writes_s, r.publishes, r.publish_mean_ms
    ));
    let times: Vec<String> = r
        .list_certificates_ms
        .iter()
        .map(|t| format!("{t:.1}"))
        .collect();
    s.push_str(&format!(
        "GET /certificates: {} ms ({} listed, {} bytes)\n",
        times.join(", "),
        r.list_certificates.listed,
        r.list_certificates.bytes
    ));
    s.push_str(&format!(
        "listed by edgegw (this run's ids): certificates {} ({} distinct thumbprints), backends {}, apis {}\n",
        r.listed.certificates, r.listed.distinct_thumbprints, r.listed.backends, r.listed.apis
    ));
    s.push_str(&format!(
        "edgegw rss: {:.1} MiB at start, {:.1} after the first load, {:.1} after the writes, {:.1} at the end\n",
        mib(r.rss.start_kib),
        mib(r.rss.after_first_load_kib),
        mib(r.rss.after_writes_kib),
        mib(r.rss.end_kib)
    ));
    s.push_str(&format!(
        "request CPU (keep-alive GETs, {} connections, {} s each):\n",
        r.connections, r.load_seconds
    ));
    s.push_str(&format!("{}\n", cpu_line(&r.before)));
    for m in &r.after {
        s.push_str(&format!("{}\n", cpu_line(m)));
    }
    if r.before.cpu_s_per_1000_requests > 0.0 {
        let ratios: Vec<String> = r
            .after
            .iter()
            .map(|m| {
                format!(
                    "{} x{:.2}",
                    m.label.trim_start_matches("after: "),
                    m.cpu_s_per_1000_requests / r.before.cpu_s_per_1000_requests
                )
            })
            .collect();
        s.push_str(&format!(
            "CPU per request after / before: {}\n",
            ratios.join(", ")
        ));
    }
    if r.failures > 0 {
        s.push_str(&format!("failed writes: {}\n", r.failures));
        for e in &r.first_errors {
            s.push_str(&format!("  error: {e}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# TYPE edgegw_snapshot_publish_duration_seconds histogram
edgegw_snapshot_publish_duration_seconds_bucket{le=\"0.001\"} 6
edgegw_snapshot_publish_duration_seconds_bucket{le=\"0.005\"} 9
edgegw_snapshot_publish_duration_seconds_bucket{le=\"+Inf\"} 10
edgegw_snapshot_publish_duration_seconds_sum 0.02
edgegw_snapshot_publish_duration_seconds_count 10
edgegw_config_generation 10
";

    #[test]
    fn publish_histogram_deltas() {
        let now = parse_publish(SCRAPE);
        assert_eq!(now.count, 10.0);
        assert_eq!(now.buckets.len(), 3);
        assert!((now.mean_ms() - 2.0).abs() < 1e-9);
        assert_eq!(now.quantile_at_most_ms(0.5), Some(1.0));
        assert_eq!(now.quantile_at_most_ms(0.9), Some(5.0));
        assert_eq!(
            now.quantile_at_most_ms(0.99),
            None,
            "beyond the last finite bucket"
        );
        let earlier = parse_publish(
            "edgegw_snapshot_publish_duration_seconds_bucket{le=\"0.001\"} 5\n\
             edgegw_snapshot_publish_duration_seconds_bucket{le=\"0.005\"} 5\n\
             edgegw_snapshot_publish_duration_seconds_bucket{le=\"+Inf\"} 5\n\
             edgegw_snapshot_publish_duration_seconds_sum 0.004\n\
             edgegw_snapshot_publish_duration_seconds_count 5\n",
        );
        let d = now.since(&earlier);
        assert_eq!(d.count, 5.0);
        assert!((d.mean_ms() - 3.2).abs() < 1e-9);
        // Of the 5 new ones: 1 under 1 ms, 4 under 5 ms, 5 in all.
        assert_eq!(d.quantile_at_most_ms(0.2), Some(1.0));
        assert_eq!(d.quantile_at_most_ms(0.8), Some(5.0));
        let none = parse_publish("");
        assert_eq!(none.count, 0.0);
        assert_eq!(none.quantile_at_most_ms(0.99), None);
        assert_eq!(none.mean_ms(), 0.0);
    }

    #[test]
    fn ids_and_paths_sort_in_creation_order() {
        assert_eq!(certificate_id(7), "scale-c00007");
        assert_eq!(api_path(12), "/scale/a00012");
        assert!(api_path(9) < api_path(10));
        assert_eq!(api_path(9).len(), api_path(99_999).len());
    }
}
