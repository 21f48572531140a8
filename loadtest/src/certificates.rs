//! `loadtest certificates`: uploads `--count` distinct client certificates through the admin
//! API of a running edgegw, as fast as it answers (`--concurrency` writes at a time) or at
//! `--rate` per second, and reports the upload latency (p50/p99), the failures and what
//! edgegw lists afterwards. Each certificate has its own key (a new thumbprint), made with
//! its PKCS#12 bundle in this process (`crate::bundles`) before the first upload, so the
//! uploads measure edgegw and not the bundle maker.
//!
//! A subcommand rather than a scenario of `loadtest run`: `run` drives data-plane load (a
//! `--target`, connections, an event loop per thread, requests/s and TLS figures), and none
//! of that applies here: this scenario sends admin writes only, one blocking HTTP call each,
//! and its figures are per write. As a `run` scenario it would have had to take a `--target`
//! it never uses and report request figures that are always zero.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admin::Endpoint;
use crate::bundles::{self, Bundle};

/// The password the bundles are made with when `--password` is not given.
pub const DEFAULT_PASSWORD: &str = "loadtest-certificates";

#[derive(clap::Args)]
pub struct CertificatesArgs {
    /// The admin API, http://127.0.0.1:9090 (loopback only).
    #[arg(long)]
    admin: String,
    /// The admin bearer token (default: env EDGEGW_ADMIN_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// Distinct certificates to upload.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Uploads per second (open loop: latency counted from each upload's intended start).
    /// Without it: closed loop, as fast as edgegw answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Uploads in flight at a time.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Certificate ids are PREFIX + a number (zero-padded to 5 digits).
    #[arg(long, default_value = "loadtest-cert-")]
    id_prefix: String,
    /// The first number (to add to a store filled by an earlier run).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// The password the bundles are made and uploaded with (default "loadtest-certificates").
    #[arg(long)]
    password: Option<String>,
    /// Threads making the bundles before the uploads (default: one per core).
    #[arg(long)]
    bundle_threads: Option<usize>,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Exact percentiles (nearest rank) of `samples`.
    pub fn of(samples: &[Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        Latency {
            count: ms.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }

    /// `p50 / p99` with one decimal.
    pub fn short(&self) -> String {
        format!("{:.1} / {:.1}", self.p50, self.p99)
    }
}

/// Why one upload failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadError {
    /// No answer (connection refused, reset, timeout).
    Transport(String),
    /// edgegw answered with an error status.
    Status(u16, String),
    /// edgegw stored a certificate with another thumbprint than the bundle's.
    Thumbprint { expected: String, answered: String },
}

impl UploadError {
    /// A short label to count failures by.
    pub fn label(&self) -> String {
        match self {
            UploadError::Transport(_) => "transport".into(),
            UploadError::Status(s, _) => s.to_string(),
            UploadError::Thumbprint { .. } => "thumbprint_mismatch".into(),
        }
    }
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Transport(e) => write!(f, "{e}"),
            UploadError::Status(s, body) => write!(f, "{s} {body}"),
            UploadError::Thumbprint { expected, answered } => write!(
                f,
                "edgegw answered thumbprint {answered} for a bundle of {expected}"
            ),
        }
    }
}

/// `PUT /certificates/{id}` with `bundle`; checks that edgegw answers with its thumbprint.
/// Returns the status (201 new, 200 replaced).
pub fn put_certificate(
    admin: &Endpoint,
    id: &str,
    bundle: &Bundle,
    password: &str,
) -> Result<u16, UploadError> {
    let path = format!("/certificates/{id}");
    let (status, reply) = admin
        .put_json_raw(
            &path,
            &serde_json::json!({ "data": bundle.base64(), "password": password }),
        )
        .map_err(UploadError::Transport)?;
    if status != 200 && status != 201 {
        return Err(UploadError::Status(status, reply));
    }
    let answered = serde_json::from_str::<serde_json::Value>(&reply)
        .ok()
        .and_then(|v| v["thumbprint"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if answered != bundle.thumbprint {
        return Err(UploadError::Thumbprint {
            expected: bundle.thumbprint.clone(),
            answered,
        });
    }
    Ok(status)
}

/// What edgegw lists under `GET /certificates`, and how long the call took.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Listing {
    /// Every certificate listed.
    pub listed: usize,
    /// Of those, the ones whose id starts with the prefix asked about.
    pub with_prefix: usize,
    /// Distinct thumbprints among those.
    pub distinct_thumbprints: usize,
    /// Size of the answer.
    pub bytes: usize,
    pub took_ms: f64,
}

/// `GET /certificates`, counted for ids starting with `prefix`.
pub fn list_certificates(admin: &Endpoint, prefix: &str) -> Result<Listing, String> {
    let t = Instant::now();
    let (status, body) = admin.get("/certificates")?;
    let took_ms = t.elapsed().as_secs_f64() * 1000.0;
    if status != 200 {
        return Err(format!("GET /certificates: {status} {body}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET /certificates: {e}"))?;
    let all = v["value"]
        .as_array()
        .ok_or("GET /certificates: no \"value\" list")?;
    let mine: Vec<&serde_json::Value> = all
        .iter()
        .filter(|c| c["id"].as_str().is_some_and(|id| id.starts_with(prefix)))
        .collect();
    let distinct: std::collections::HashSet<&str> = mine
        .iter()
        .filter_map(|c| c["thumbprint"].as_str())
        .collect();
    Ok(Listing {
        listed: all.len(),
        with_prefix: mine.len(),
        distinct_thumbprints: distinct.len(),
        bytes: body.len(),
        took_ms,
    })
}

/// Every figure of one run (the `--json` document).
#[derive(Clone, Debug, Serialize)]
pub struct UploadReport {
    pub count: usize,
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub concurrency: usize,
    /// Time to make the bundles, before the first upload.
    pub bundles_s: f64,
    pub uploaded: usize,
    /// Of `uploaded`, those that replaced a certificate of the same id (200).
    pub replaced: usize,
    pub failures: usize,
    pub failures_by_kind: BTreeMap<String, usize>,
    pub first_errors: Vec<String>,
    pub elapsed_s: f64,
    pub uploads_per_s: f64,
    pub latency_ms: Latency,
    /// `GET /certificates` after the uploads.
    pub after: Listing,
}

impl UploadReport {
    pub fn table(&self) -> String {
        let mut s = format!(
            "certificates: {} uploads ({}{}, {} at a time); bundles made in {:.1} s\n",
            self.count,
            self.mode,
            self.rate
                .map(|r| format!(", {r:.0}/s offered"))
                .unwrap_or_default(),
            self.concurrency,
            self.bundles_s
        );
        s.push_str(&format!(
            "  uploaded      {:>8}   ({} replaced an existing id)\n",
            self.uploaded, self.replaced
        ));
        s.push_str(&format!(
            "  failures      {:>8}   {:?}\n",
            self.failures, self.failures_by_kind
        ));
        s.push_str(&format!(
            "  rate          {:>8.1}/s over {:.1} s\n",
            self.uploads_per_s, self.elapsed_s
        ));
        let l = &self.latency_ms;
        s.push_str(&format!(
            "  latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}\n",
            l.p50, l.p90, l.p99, l.max, l.mean
        ));
        s.push_str(&format!(
            "  GET /certificates: {} listed, {} with the prefix, {} distinct thumbprints among them, {} bytes in {:.1} ms\n",
            self.after.listed,
            self.after.with_prefix,
            self.after.distinct_thumbprints,
            self.after.bytes,
            self.after.took_ms
        ));
        for e in &self.first_errors {
            s.push_str(&format!("  error: {e}\n"));
        }
        s
    }
}

/// What [`upload_all`] did.
#[derive(Debug, Default)]
pub struct Uploads {
    /// Latency of each successful upload.
    pub latencies: Vec<Duration>,
    pub errors: Vec<UploadError>,
    /// Successful uploads that replaced a certificate of the same id (200).
    pub replaced: usize,
    pub elapsed: Duration,
}

/// Uploads `bundles` as `{prefix}{first + i:05}`, `concurrency` at a time; `rate`: open loop
/// at that many per second (latency from each upload's intended start).
pub fn upload_all(
    admin: &Endpoint,
    bundles: &[Bundle],
    prefix: &str,
    first: usize,
    password: &str,
    rate: Option<f64>,
    concurrency: usize,
) -> Uploads {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Uploads::default());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, bundles.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(bundle) = bundles.get(i) else {
                    return;
                };
                let from = match rate {
                    Some(r) if r > 0.0 => {
                        let due = start + Duration::from_secs_f64(i as f64 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        due
                    }
                    _ => Instant::now(),
                };
                let id = format!("{prefix}{:05}", first + i);
                let outcome = put_certificate(admin, &id, bundle, password);
                let took = from.elapsed();
                let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(status) => {
                        r.latencies.push(took);
                        if status == 200 {
                            r.replaced += 1;
                        }
                    }
                    Err(e) => r.errors.push(e),
                }
            });
        }
    });
    let mut out = results.into_inner().unwrap_or_else(|p| p.into_inner());
    out.elapsed = start.elapsed();
    out
}

/// Refuses an admin endpoint that is not on a loopback address.
pub fn local_admin(url: &str, token: Option<&str>) -> Result<Endpoint, String> {
    let token = token
        .map(str::to_owned)
        .or_else(|| std::env::var("EDGEGW_ADMIN_TOKEN").ok());
    let admin = Endpoint::parse(url, token.as_deref())?;
    if !admin.addr().ip().is_loopback() {
        return Err(format!(
            "{url}: admin load is only sent to loopback addresses (127.0.0.1, ::1)"
        ));
    }
    Ok(admin)
}

pub fn run(args: CertificatesArgs) -> Result<(), String> {
    let admin = local_admin(&args.admin, args.token.as_deref())?;
    if args.count == 0 {
        return Err("--count must be at least 1".into());
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    let password = args.password.as_deref().unwrap_or(DEFAULT_PASSWORD);
    let threads = args.bundle_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let t = Instant::now();
    let bundles =
        bundles::client_bundles(&args.id_prefix, args.first, args.count, password, threads)?;
    let bundles_s = t.elapsed().as_secs_f64();
    eprintln!(
        "loadtest: {} bundles made in {bundles_s:.1} s; uploading",
        bundles.len()
    );
    let concurrency = args.concurrency.max(1);
    let Uploads {
        latencies,
        errors,
        replaced,
        elapsed,
    } = upload_all(
        &admin,
        &bundles,
        &args.id_prefix,
        args.first,
        password,
        args.rate,
        concurrency,
    );
    let mut failures_by_kind = BTreeMap::new();
    for e in &errors {
        *failures_by_kind.entry(e.label()).or_insert(0) += 1;
    }
    let after = list_certificates(&admin, &args.id_prefix)?;
    let report = UploadReport {
        count: args.count,
        mode: if args.rate.is_some() {
            "open loop"
        } else {
            "closed loop"
        },
        rate: args.rate,
        concurrency,
        bundles_s,
        uploaded: latencies.len(),
        replaced,
        failures: errors.len(),
        failures_by_kind,
        first_errors: errors.iter().take(5).map(ToString::to_string).collect(),
        elapsed_s: elapsed.as_secs_f64(),
        uploads_per_s: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: Latency::of(&latencies),
        after,
    };
    println!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if report.failures > 0 {
        return Err(format!("{} uploads failed", report.failures));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&samples);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50, 50.0);
        assert_eq!(l.p90, 90.0);
        assert_eq!(l.p99, 99.0);
        assert_eq!(l.max, 100.0);
        assert!((l.mean - 50.5).abs() < 1e-9);
        assert_eq!(Latency::of(&[]).count, 0);
        let one = Latency::of(&[Duration::from_millis(7)]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(one.short(), "7.0 / 7.0");
    }

    #[test]
    fn upload_errors_have_labels_and_no_secrets() {
        let e = UploadError::Status(400, "{\"error\":{\"code\":\"WrongPassword\"}}".into());
        assert_eq!(e.label(), "400");
        assert!(e.to_string().starts_with("400 "));
        let e = UploadError::Thumbprint {
            expected: "AA".into(),
            answered: "BB".into(),
        };
        assert_eq!(e.label(), "thumbprint_mismatch");
        assert!(e.to_string().contains("BB") && e.to_string().contains("AA"));
        assert_eq!(UploadError::Transport("reset".into()).label(), "transport");
    }

    #[test]
    fn admin_endpoints_must_be_local() {
        assert!(local_admin("http://127.0.0.1:9090", Some("t")).is_ok());
        assert!(local_admin("http://10.1.2.3:9090", Some("t")).is_err());
    }
}
