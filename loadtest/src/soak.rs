//! `loadtest soak`: a bounded soak of edgegw. It starts the mTLS test backend and edgegw
//! (embedded store) as the other scenarios do (one client certificate bound to the backend,
//! one API), then for `--duration` drives a modest open-loop load (keep-alive requests at
//! `--rate` over a few connections, plus a few new connections per second) while the bound
//! certificate is re-uploaded through the admin API every `--rotate-every`, each time another
//! PKCS#12 (`--certificates` distinct ones made up front with the openssl CLI, cycled), so
//! every upload changes the thumbprint the backend is called with.
//!
//! Every `--sample-every` it prints one line: elapsed time, edgegw's resident memory (VmRSS
//! of /proc/PID/status) and open descriptors (entries of /proc/PID/fd), requests and errors
//! of the period, the period's p99 of keep-alive requests and of new connections, and which
//! client certificate the backend saw on a probe request. At the end: first, last and
//! largest RSS and descriptor count, and the verdict `flat` or `grows` by the rule printed
//! with it. Nothing is asserted: the figures are for reading.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};

use crate::admin::Endpoint;
use crate::harness::{self, local, Backend, Kind, Pki, Server};
use crate::paced::{self, Load};
use crate::procs;
use crate::run::{parse_duration, DriverChoice, Target};
use crate::stats::{fmt_us, Recorder};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long the load and the rotations run.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    duration: Duration,
    /// Keep-alive requests per second (open loop, over --connections).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Keep-alive TLS connections carrying --rate.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// New TLS connections per second (full handshake, one GET, close), besides --rate.
    #[arg(long, default_value_t = 5.0)]
    new_per_second: f64,
    /// Re-upload the bound client certificate (the next PKCS#12 of the cycle) this often.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    rotate_every: Duration,
    /// Print one line of RSS, descriptors, requests, errors and p99 this often.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    sample_every: Duration,
    /// Distinct client certificates the rotation cycles through.
    #[arg(long, default_value_t = 8)]
    certificates: usize,
    /// edgegw's server.workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    driver: DriverChoice,
}

/// One sample of edgegw's footprint.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Duration,
    pub rss_kib: u64,
    pub fds: u64,
    /// Of `fds`, established connections to the backend (upstream pool, in flight).
    pub upstream: u64,
}

pub fn run(args: SoakArgs) -> Result<(), String> {
    let driver = args.driver.resolve()?;
    let pki = Pki::create()?;
    let bundles = pki.client_variants(args.certificates.max(1))?;
    let bundles: Vec<String> = bundles
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    let backend = Backend::start(&pki, 1)?;
    let server = Server::start(Kind::Edgegw, &pki, backend.port, args.workers)?;
    let pid = server.proc.pid();
    let admin = server
        .admin
        .clone()
        .ok_or("edgegw without an admin endpoint")?;
    let target: Target = server.url("/soak").parse()?;
    let context = crate::client::build_context(Some("X25519"), None)?;

    println!(
        "soak: edgegw pid {pid} ({} workers, embedded store, {driver:?} client); {:.0} req/s \
         keep-alive over {} connections + {:.0} new connections/s; certificate {:?} (bound to \
         backend {:?}) re-uploaded every {:?}, cycling {} distinct PKCS#12; a sample every {:?} \
         for {:?}",
        args.workers,
        args.rate,
        args.connections,
        args.new_per_second,
        harness::CERTIFICATE_ID,
        harness::BACKEND_ID,
        args.rotate_every,
        bundles.len(),
        args.sample_every,
        args.duration,
    );
    let start = Instant::now();
    let backend_port = backend.port;
    let sample = |at: Duration| Sample {
        at,
        rss_kib: procs::vm_rss_kib(pid),
        fds: procs::open_fds(pid),
        upstream: procs::connections_to(pid, backend_port),
    };
    let s0 = sample(Duration::ZERO);
    println!(
        "[{:>5.0}s] rss {:>8.2} MiB  fds {:>4} (upstream {:>3})  (before any load)",
        0.0,
        mib(s0.rss_kib),
        s0.fds,
        s0.upstream
    );

    let load = Load {
        keepalive_connections: args.connections.max(1),
        keepalive_rate: args.rate,
        newconn_rate: args.new_per_second,
        request_timeout: Duration::from_secs(10),
    };
    let (meter, load_thread) = paced::start(&load, &target, &context, driver, args.duration);
    let stop = Arc::new(AtomicBool::new(false));
    let rotator = {
        let (stop, admin, every) = (stop.clone(), admin.clone(), args.rotate_every);
        std::thread::spawn(move || rotate(&admin, &bundles, every, &stop))
    };

    let mut samples = Vec::new();
    let mut subjects = std::collections::BTreeSet::new();
    let mut totals = (0u64, 0u64);
    for k in 1u32.. {
        let at = args.sample_every * k;
        if at > args.duration + Duration::from_millis(1) {
            break;
        }
        if let Some(wait) = (start + at).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let w = meter.take();
        let s = sample(at);
        let seen = probe_subject(server.port);
        if let Ok(cn) = &seen {
            subjects.insert(cn.clone());
        }
        totals.0 += w.requests();
        totals.1 += w.errors();
        let p99 = |r: &Recorder| fmt_us(r.summary(Duration::from_secs(1)).latency_us.p99);
        println!(
            "[{:>5.0}s] rss {:>8.2} MiB  fds {:>4} (upstream {:>3})  requests {:>6}  errors {:>3}  \
             p99 keep-alive {:<9} new {:<9} backend saw {}",
            at.as_secs_f64(),
            mib(s.rss_kib),
            s.fds,
            s.upstream,
            w.requests(),
            w.errors(),
            p99(&w.keepalive),
            p99(&w.newconn),
            seen.unwrap_or_else(|e| format!("(probe failed: {e})")),
        );
        samples.push(s);
    }
    meter.stop();
    stop.store(true, Ordering::Relaxed);
    let load_result = load_thread
        .join()
        .map_err(|_| "the good client panicked".to_string())?;
    let rotations = rotator
        .join()
        .map_err(|_| "the rotation thread panicked".to_string())?;
    let tail = meter.take();
    totals.0 += tail.requests();
    totals.1 += tail.errors();
    load_result?;

    let admin_p99 = rotations
        .latency
        .summary(Duration::from_secs(1))
        .latency_us
        .p99;
    println!(
        "soak summary: {:.0} s, {} requests, {} errors; {} certificate uploads ({} failed, admin \
         p99 {}), {} distinct client certificates seen by the backend on the probes",
        start.elapsed().as_secs_f64(),
        totals.0,
        totals.1,
        rotations.uploads,
        rotations.failures,
        fmt_us(admin_p99),
        subjects.len(),
    );
    for e in &rotations.first_errors {
        println!("  admin error: {e}");
    }
    let Some((first, last)) = samples.first().zip(samples.last()) else {
        println!("soak: no sample taken (--duration shorter than --sample-every)");
        return Ok(());
    };
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let v = verdict(&samples);
    println!(
        "  rss  first {:.2} MiB  last {:.2} MiB  max {:.2} MiB  (after warm-up: mean {:.2} MiB, \
         last 10% {:.2} MiB, slope {:+.2} MiB/h)",
        mib(first.rss_kib),
        mib(last.rss_kib),
        mib(max_rss),
        v.rss.mean / 1024.0,
        v.rss.last / 1024.0,
        v.rss.slope_per_hour / 1024.0,
    );
    println!(
        "  fds  first {}  last {}  max {}  (after warm-up: mean {:.1}, last 10% {:.1}, slope \
         {:+.1}/h)",
        first.fds, last.fds, max_fds, v.fds.mean, v.fds.last, v.fds.slope_per_hour,
    );
    println!(
        "verdict: {}  (rss {}, fds {}; rule: the first 20% of the samples are warm-up; a figure \
         grows if the mean of the last 10% of the samples is more than 10% above the mean of \
         all samples after warm-up, for fds also more than 3 above it; {} samples after warm-up)",
        if v.rss.grows || v.fds.grows {
            "grows"
        } else {
            "flat"
        },
        word(v.rss.grows),
        word(v.fds.grows),
        v.after_warmup,
    );
    drop(server);
    drop(backend);
    Ok(())
}

fn word(grows: bool) -> &'static str {
    if grows {
        "grows"
    } else {
        "flat"
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One figure's trend after warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    pub mean: f64,
    /// Mean of the last 10% of the samples (at least one).
    pub last: f64,
    /// Least-squares slope, per hour.
    pub slope_per_hour: f64,
    pub grows: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub rss: Trend,
    pub fds: Trend,
    pub after_warmup: usize,
}

/// The rule: the first 20% of the samples (rounded up, keeping at least one) are warm-up;
/// a figure grows when the mean of the last 10% (at least one) is more than 10% above the
/// mean after warm-up (for descriptors, also more than 3 above it: a few pooled connections
/// come and go).
pub fn verdict(samples: &[Sample]) -> Verdict {
    let warm = (samples.len() * 2)
        .div_ceil(10)
        .min(samples.len().saturating_sub(1));
    let post = &samples[warm..];
    let trend = |f: &dyn Fn(&Sample) -> f64, floor: f64| {
        let n = post.len().max(1) as f64;
        let mean = post.iter().map(f).sum::<f64>() / n;
        let k = post.len().div_ceil(10).max(1).min(post.len().max(1));
        let last = post.iter().rev().take(k).map(f).sum::<f64>() / k as f64;
        let tx = post.iter().map(|s| s.at.as_secs_f64()).sum::<f64>() / n;
        let (mut num, mut den) = (0.0, 0.0);
        for s in post {
            let dx = s.at.as_secs_f64() - tx;
            num += dx * (f(s) - mean);
            den += dx * dx;
        }
        let slope = if den > 0.0 { num / den * 3600.0 } else { 0.0 };
        Trend {
            mean,
            last,
            slope_per_hour: slope,
            grows: last > mean * 1.10 && last > mean + floor,
        }
    };
    Verdict {
        rss: trend(&|s| s.rss_kib as f64, 0.0),
        fds: trend(&|s| s.fds as f64, 3.0),
        after_warmup: post.len(),
    }
}

struct Rotations {
    uploads: u64,
    failures: u64,
    first_errors: Vec<String>,
    latency: Recorder,
}

/// Every `every` until stopped: PUT the next PKCS#12 of the cycle under the bound
/// certificate's id.
fn rotate(admin: &Endpoint, bundles: &[String], every: Duration, stop: &AtomicBool) -> Rotations {
    let mut r = Rotations {
        uploads: 0,
        failures: 0,
        first_errors: Vec::new(),
        latency: Recorder::new(),
    };
    let start = Instant::now();
    let path = format!("/certificates/{}", harness::CERTIFICATE_ID);
    for tick in 1u32.. {
        let at = start + every * tick;
        while Instant::now() < at {
            if stop.load(Ordering::Relaxed) {
                return r;
            }
            std::thread::sleep((at - Instant::now()).min(Duration::from_millis(100)));
        }
        if stop.load(Ordering::Relaxed) {
            return r;
        }
        let data = &bundles[tick as usize % bundles.len()];
        let t = Instant::now();
        let result = admin.put_json(
            &path,
            &serde_json::json!({ "data": data, "password": harness::P12_PASSWORD }),
        );
        match result {
            Ok(_) => {
                r.uploads += 1;
                r.latency.success(t.elapsed());
            }
            Err(e) => {
                r.failures += 1;
                if r.first_errors.len() < 5 {
                    r.first_errors.push(e);
                }
            }
        }
    }
    r
}

/// The client certificate the backend saw on one request through edgegw: its `CN=...`.
fn probe_subject(port: u16) -> Result<String, String> {
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect_timeout(&local(port), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = b
        .build()
        .connect("localhost", tcp)
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /soak/probe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    // The gateway closes after the answer; a reset at the end still leaves the answer read.
    let _ = tls.read_to_end(&mut text);
    subject_of(&String::from_utf8_lossy(&text)).ok_or_else(|| "no subject in the answer".into())
}

/// `CN=...` of the backend's JSON report inside a whole HTTP response.
fn subject_of(response: &str) -> Option<String> {
    let rest = &response[response.find("\"subject\":\"")? + 11..];
    let subject = &rest[..rest.find('"')?];
    Some(
        subject
            .split([',', '/'])
            .map(str::trim)
            .find(|p| p.starts_with("CN="))
            .unwrap_or(subject)
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[(u64, u64)]) -> Vec<Sample> {
        values
            .iter()
            .enumerate()
            .map(|(i, (rss, fds))| Sample {
                at: Duration::from_secs(10 * (i as u64 + 1)),
                rss_kib: *rss,
                fds: *fds,
                upstream: 0,
            })
            .collect()
    }

    #[test]
    fn flat_series_are_flat() {
        let s = series(&[(10_000, 40); 60]);
        let v = verdict(&s);
        assert!(!v.rss.grows && !v.fds.grows, "{v:?}");
        assert_eq!(v.after_warmup, 48);
        assert_eq!(v.rss.slope_per_hour, 0.0);
        // Warm-up growth and a few descriptors of noise are not growth.
        let mut values: Vec<(u64, u64)> = (0..12).map(|i| (5_000 + i * 400, 20 + i)).collect();
        values.extend((0..48).map(|i| (10_000 + (i % 3) * 50, 40 + (i % 4))));
        let v = verdict(&series(&values));
        assert!(!v.rss.grows && !v.fds.grows, "{v:?}");
    }

    #[test]
    fn steady_growth_is_growth() {
        let values: Vec<(u64, u64)> = (0..60).map(|i| (10_000 + i * 100, 40 + i)).collect();
        let v = verdict(&series(&values));
        assert!(v.rss.grows && v.fds.grows, "{v:?}");
        // 100 KiB and 1 fd per 10 s: 36 000 KiB and 360 fds per hour.
        assert!((v.rss.slope_per_hour - 36_000.0).abs() < 1.0, "{v:?}");
        assert!((v.fds.slope_per_hour - 360.0).abs() < 0.1, "{v:?}");
    }

    #[test]
    fn tiny_series_do_not_panic() {
        let v = verdict(&[]);
        assert!(!v.rss.grows);
        let v = verdict(&series(&[(1, 1)]));
        assert_eq!(v.after_warmup, 1);
        assert!(!v.fds.grows);
    }

    #[test]
    fn subjects_are_found_in_responses() {
        let r = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"subject\":\"CN=loadtest-rot-3, O=edgegw-loadtest\",\"connection\":1}";
        assert_eq!(subject_of(r).as_deref(), Some("CN=loadtest-rot-3"));
        assert_eq!(subject_of("HTTP/1.1 502 Bad Gateway\r\n\r\n"), None);
    }
}
