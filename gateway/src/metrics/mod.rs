//! Every metric the gateway exports is named here, and only here (contract §5).
//!
//! Workers record through `WorkerMetrics`, which caches one handle per label set, so the hot
//! path never touches the recorder's shared registry: an increment is one relaxed atomic add
//! on a handle. The control plane records configuration metrics directly.
//!
//! A leaf: it takes label values as plain strings and numbers and imports nothing from the
//! rest of the crate, so every layer can record without the layers knowing each other.

// The certificate-expiry list is written on publish and read at scrape time, both on the
// control plane; workers record through atomic handles only.
#![allow(clippy::disallowed_types)]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS_TOTAL: &str = "edgegw_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "edgegw_request_duration_seconds";
pub const DOWNSTREAM_HANDSHAKES_TOTAL: &str = "edgegw_downstream_handshakes_total";
pub const UPSTREAM_HANDSHAKES_TOTAL: &str = "edgegw_upstream_handshakes_total";
pub const UPSTREAM_POOL_TOTAL: &str = "edgegw_upstream_pool_total";
pub const UPSTREAM_TLS_ERRORS_TOTAL: &str = "edgegw_upstream_tls_errors_total";
pub const UPSTREAM_POOL_EVICTIONS_TOTAL: &str = "edgegw_upstream_pool_evictions_total";
pub const UPSTREAM_RESUMPTION_MISSES_TOTAL: &str = "edgegw_upstream_resumption_misses_total";
pub const CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "edgegw_certificate_expiry_timestamp_seconds";
pub const CA_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "edgegw_ca_certificate_expiry_timestamp_seconds";
pub const WORKER_ACCEPTED_CONNECTIONS_TOTAL: &str = "edgegw_worker_accepted_connections_total";
pub const WORKER_ACTIVE_CONNECTIONS: &str = "edgegw_worker_active_connections";
pub const CONFIG_GENERATION: &str = "edgegw_config_generation";
pub const SNAPSHOT_PUBLISH_DURATION_SECONDS: &str = "edgegw_snapshot_publish_duration_seconds";
pub const TICKET_KEY_ROTATIONS_TOTAL: &str = "edgegw_ticket_key_rotations_total";
pub const STORE_CONNECTED: &str = "edgegw_store_connected";
pub const STORE_WATCH_REVISION: &str = "edgegw_store_watch_revision";
pub const STORE_RELOADS_TOTAL: &str = "edgegw_store_reloads_total";
pub const STORE_REJECTED_RECORDS_TOTAL: &str = "edgegw_store_rejected_records_total";
pub const UPSTREAM_CONNECTIONS_OPEN: &str = "edgegw_upstream_connections_open";
pub const DOWNSTREAM_HANDSHAKE_DURATION_SECONDS: &str =
    "edgegw_downstream_handshake_duration_seconds";
pub const UPSTREAM_HANDSHAKE_DURATION_SECONDS: &str = "edgegw_upstream_handshake_duration_seconds";
pub const ADMIN_CHANGES_TOTAL: &str = "edgegw_admin_changes_total";
pub const PROXY_ERRORS_TOTAL: &str = "edgegw_proxy_errors_total";
pub const DOWNSTREAM_TIMEOUTS_TOTAL: &str = "edgegw_downstream_timeouts_total";
pub const LIMITS_REACHED_TOTAL: &str = "edgegw_limits_reached_total";
pub const DOWNSTREAM_CLIENT_CERTIFICATES_TOTAL: &str =
    "edgegw_downstream_client_certificates_total";
pub const H2_STREAMS_OPEN: &str = "edgegw_h2_streams_open";
pub const H2_RESETS_TOTAL: &str = "edgegw_h2_resets_total";
pub const STEERING_DECISIONS_TOTAL: &str = "edgegw_steering_decisions_total";
pub const STEERING_STEERED_TOTAL: &str = "edgegw_steering_steered_total";
pub const STEERING_MIGRATED_TOTAL: &str = "edgegw_steering_migrated_total";
pub const STEERING_LIVE_WORKERS: &str = "edgegw_steering_live_workers";
pub const STEERING_MODE: &str = "edgegw_steering_mode";

/// Label value for requests that matched no API.
pub const NO_API: &str = "-";

/// Installs the Prometheus recorder; the handle renders the text format.
pub fn install() -> Result<PrometheusHandle, String> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let handshake_buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ];
    // A rebuild of a small configuration takes tens of microseconds; one of thousands of
    // routes and certificates, milliseconds to a second.
    let publish_buckets = [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION_SECONDS.to_owned()), &buckets)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Suffix("_handshake_duration_seconds".to_owned()),
                &handshake_buckets,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(SNAPSHOT_PUBLISH_DURATION_SECONDS.to_owned()),
                &publish_buckets,
            )
        })
        .map_err(|e| format!("configuring metric buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS_TOTAL, "Requests answered, by API and status code.");
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from request head to the end of the response."
    );
    describe_counter!(
        DOWNSTREAM_HANDSHAKES_TOTAL,
        "TLS handshakes with clients, full or resumed."
    );
    describe_counter!(
        UPSTREAM_HANDSHAKES_TOTAL,
        "TLS handshakes with backends, full or resumed."
    );
    describe_counter!(
        UPSTREAM_POOL_TOTAL,
        "Upstream connection requests served from the pool (hit) or by a new connection (miss)."
    );
    describe_counter!(
        UPSTREAM_TLS_ERRORS_TOTAL,
        "Failed TLS connections to backends, by reason."
    );
    describe_counter!(
        UPSTREAM_RESUMPTION_MISSES_TOTAL,
        "New TLS connections to backends that did not resume, by reason: no_session (no worker had one for the pool key), expired (the offered session was past its lifetime), rejected (the backend did a full handshake)."
    );
    describe_counter!(
        PROXY_ERRORS_TOTAL,
        "Requests the gateway answered with an error of its own, by what failed (kind) and on which side (downstream, upstream, internal)."
    );
    describe_counter!(
        UPSTREAM_POOL_EVICTIONS_TOTAL,
        "Idle upstream connections dropped, by reason."
    );
    describe_counter!(
        WORKER_ACCEPTED_CONNECTIONS_TOTAL,
        "Client connections accepted by each worker."
    );
    describe_gauge!(
        WORKER_ACTIVE_CONNECTIONS,
        "Client connections open on each worker."
    );
    describe_gauge!(
        CONFIG_GENERATION,
        "Generation of the configuration snapshot in use; grows with every change."
    );
    describe_histogram!(
        SNAPSHOT_PUBLISH_DURATION_SECONDS,
        Unit::Seconds,
        "Time to rebuild the configuration snapshot (routes, upstream TLS contexts) after a change and make it current."
    );
    describe_counter!(TICKET_KEY_ROTATIONS_TOTAL, "Session-ticket key rotations.");
    describe_gauge!(
        STORE_CONNECTED,
        "1 while the configuration store is reachable (always 1 for the embedded store), else 0."
    );
    describe_gauge!(
        STORE_WATCH_REVISION,
        "The store revision the node's configuration is complete up to (fleet mode: what its watch applied)."
    );
    describe_counter!(
        STORE_RELOADS_TOTAL,
        "Full reloads of the shared store after its watch lost its place (compaction); changed=false when nothing differed and nothing was rebuilt."
    );
    describe_counter!(
        STORE_REJECTED_RECORDS_TOTAL,
        "Changed records from the shared store that this node could not read (logged; the node kept what it had)."
    );
    describe_gauge!(
        UPSTREAM_CONNECTIONS_OPEN,
        "Open connections to each backend, by client certificate."
    );
    describe_histogram!(
        DOWNSTREAM_HANDSHAKE_DURATION_SECONDS,
        Unit::Seconds,
        "Client TLS handshake time, full or resumed."
    );
    describe_histogram!(
        UPSTREAM_HANDSHAKE_DURATION_SECONDS,
        Unit::Seconds,
        "Backend TCP connect and TLS handshake time, full or resumed."
    );
    describe_counter!(
        ADMIN_CHANGES_TOTAL,
        "Admin API changes, by resource kind and operation."
    );
    describe_counter!(
        DOWNSTREAM_TIMEOUTS_TOTAL,
        "Client connections cut by a timeout, by phase (handshake, header, body)."
    );
    describe_counter!(
        DOWNSTREAM_CLIENT_CERTIFICATES_TOTAL,
        "Client handshakes where the listener asked for a certificate, by result (none: no certificate; verified: it verifies against listener.client_ca_ids; unverified: presented, does not verify, kept for the APIs' policies; refused: the handshake failed for it)."
    );
    describe_gauge!(
        H2_STREAMS_OPEN,
        "HTTP/2 streams from clients being served (accepted, their task not ended)."
    );
    describe_counter!(
        H2_RESETS_TOTAL,
        "HTTP/2 streams and connections ended early, by reason (client: the client reset a stream being served; internal_error: edgegw reset a stream whose answer failed midway; enhance_your_calm: a connection ended by GOAWAY ENHANCE_YOUR_CALM, the Rapid Reset and CONTINUATION bounds; connection_error: a connection ended by GOAWAY for another error of the client's)."
    );
    describe_counter!(
        LIMITS_REACHED_TOTAL,
        "Times a limit held something back, by limit (connections: a worker stopped accepting; backend_connections: a request waited for a free upstream slot; request_body: a body over the size limit)."
    );
}

/// The steering mode in force (`mode` = `ebpf` | `kernel`), set once at start.
pub fn record_steering_mode(ebpf: bool, policy: &'static str) {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        STEERING_DECISIONS_TOTAL,
        "eBPF steering decisions: chosen (the policy's worker), rerouted (its slot was empty, another live worker took it), kernel_fallback (no live worker: the kernel's hash chose)."
    );
    describe_counter!(
        STEERING_STEERED_TOTAL,
        "New connections (SYNs: a retransmitted SYN counts again) the eBPF program sent to each worker; the workers' own count of what they accepted is edgegw_worker_accepted_connections_total."
    );
    describe_counter!(
        STEERING_MIGRATED_TOTAL,
        "Connections moved by the eBPF program off a closing listener (restart handover)."
    );
    describe_gauge!(
        STEERING_LIVE_WORKERS,
        "Workers in the eBPF socket map (healthy and not taken out)."
    );
    describe_gauge!(
        STEERING_MODE,
        "Connection steering in force: 1 for the mode and policy in use."
    );
    let mode = if ebpf { "ebpf" } else { "kernel" };
    let policy = if ebpf { policy } else { "kernel-hash" };
    metrics::gauge!(STEERING_MODE, "mode" => mode, "policy" => policy).set(1.0);
}

pub fn record_steering_live_workers(live: usize) {
    metrics::gauge!(STEERING_LIVE_WORKERS).set(live as f64);
}

/// The eBPF program's counters (totals since it was loaded). They count decisions, one per
/// SYN the program sees, so a retransmitted SYN counts twice: the exact number of
/// connections each worker accepted is counted by the worker itself
/// (`edgegw_worker_accepted_connections_total`).
pub fn record_steering_counters(per_worker: &[u64], rerouted: u64, fallback: u64, migrated: u64) {
    for (worker, &n) in per_worker.iter().enumerate() {
        metrics::counter!(STEERING_STEERED_TOTAL, "worker" => worker.to_string()).absolute(n);
    }
    let steered: u64 = per_worker.iter().sum();
    let decision = |d: &'static str| metrics::counter!(STEERING_DECISIONS_TOTAL, "decision" => d);
    decision("chosen").absolute(steered.saturating_sub(rerouted));
    decision("rerouted").absolute(rerouted);
    decision("kernel_fallback").absolute(fallback);
    metrics::counter!(STEERING_MIGRATED_TOTAL).absolute(migrated);
}

/// One snapshot rebuild and publish (the control plane, after every change).
pub fn record_snapshot_publish(took: Duration) {
    metrics::histogram!(SNAPSHOT_PUBLISH_DURATION_SECONDS).record(took.as_secs_f64());
}

/// The expiry (Unix time) of every client certificate and every CA certificate, by id.
#[derive(Default)]
pub struct Expiries {
    pub certificates: Vec<(String, i64)>,
    pub ca_certificates: Vec<(String, i64)>,
}

/// Called by the control plane whenever it publishes a snapshot: its generation, and the
/// expiries of every certificate it holds.
pub fn record_config(generation: u64, expiries: Expiries) {
    metrics::gauge!(CONFIG_GENERATION).set(generation as f64);
    *CERTIFICATE_EXPIRIES
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = expiries;
}

/// Expiry of every certificate that exists now. Rendered at scrape time rather than kept as
/// recorder gauges, because the recorder cannot forget a series: a deleted certificate must
/// leave `/metrics` (or its expiry alerts would keep firing).
static CERTIFICATE_EXPIRIES: std::sync::Mutex<Expiries> = std::sync::Mutex::new(Expiries {
    certificates: Vec::new(),
    ca_certificates: Vec::new(),
});

/// The whole `/metrics` text: the recorder's metrics plus the certificate expiries.
pub fn render(handle: &PrometheusHandle) -> String {
    use std::fmt::Write;
    let mut out = handle.render();
    let expiries = CERTIFICATE_EXPIRIES
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let families = [
        (
            CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
            "Expiry (notAfter) of each uploaded client certificate, Unix time.",
            "certificate",
            &expiries.certificates,
        ),
        (
            CA_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
            "Expiry (notAfter) of each uploaded CA certificate (its first certificate), Unix time.",
            "ca_certificate",
            &expiries.ca_certificates,
        ),
    ];
    for (name, help, label, list) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        // Resource ids are limited to [A-Za-z0-9._-]: nothing to escape in the label.
        for (id, not_after) in list.iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{id}\"}} {not_after}");
        }
    }
    out
}

/// Requests answered so far (`edgegw_requests_total` summed) and how many of them with a
/// status of 500 or more, read from the rendered metrics (the console's overview).
pub fn request_totals(handle: &PrometheusHandle) -> (f64, f64) {
    let mut total = 0.0;
    let mut errors = 0.0;
    for line in handle.render().lines() {
        let Some(rest) = line.strip_prefix(REQUESTS_TOTAL) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        total += value;
        if labels.contains("code=\"5") {
            errors += value;
        }
    }
    (total, errors)
}

/// One admin change (`kind`: certificate|backend|api|policy, `operation`: put|delete).
pub fn record_admin_change(kind: &'static str, operation: &'static str) {
    metrics::counter!(ADMIN_CHANGES_TOTAL, "kind" => kind, "operation" => operation).increment(1);
}

/// The store's reachability alone.
pub fn record_store_connected(connected: bool) {
    metrics::gauge!(STORE_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

/// The revision the configuration is complete up to.
pub fn record_store_revision(revision: u64) {
    metrics::gauge!(STORE_WATCH_REVISION).set(revision as f64);
}

/// A full reload of the shared store; `changed`: whether anything differed.
pub fn record_store_reload(changed: bool) {
    metrics::counter!(STORE_RELOADS_TOTAL, "changed" => if changed { "true" } else { "false" })
        .increment(1);
}

/// A changed record the node could not read.
pub fn record_store_rejected_record() {
    metrics::counter!(STORE_REJECTED_RECORDS_TOTAL).increment(1);
}

pub fn record_ticket_rotation() {
    metrics::counter!(TICKET_KEY_ROTATIONS_TOTAL).increment(1);
}

/// The labels of `edgegw_proxy_errors_total`: what failed and on which side.
#[derive(Clone, Copy, Debug)]
pub struct ProxyErrorLabels {
    pub kind: &'static str,
    pub side: &'static str,
}

/// Metric handles cached by label values (FxHash: these lookups run on every request).
type Handles<K, H> = RefCell<rustc_hash::FxHashMap<K, H>>;

/// Adds one to the counter cached under `key`, registering it with `make` the first time.
fn count<K: std::hash::Hash + Eq>(
    cache: &Handles<K, Counter>,
    key: K,
    make: impl FnOnce() -> Counter,
) {
    cache
        .borrow_mut()
        .entry(key)
        .or_insert_with(make)
        .increment(1);
}

/// One worker's cached metric handles. Single-threaded by construction (`RefCell`).
pub struct WorkerMetrics {
    worker: String,
    accepted: Counter,
    active: metrics::Gauge,
    downstream_handshakes: [Counter; 2],
    downstream_handshake_durations: [Histogram; 2],
    requests: Handles<(Arc<str>, u16), Counter>,
    durations: Handles<Arc<str>, Histogram>,
    upstream_handshakes: Handles<(Arc<str>, bool), (Counter, Histogram)>,
    upstream_open: Handles<(Arc<str>, Arc<str>), metrics::Gauge>,
    pool: Handles<(Arc<str>, bool), Counter>,
    tls_errors: Handles<(Arc<str>, &'static str), Counter>,
    resumption_misses: Handles<(Arc<str>, &'static str), Counter>,
    evictions: Handles<&'static str, Counter>,
    proxy_errors: Handles<&'static str, Counter>,
    timeouts: Handles<&'static str, Counter>,
    limits: Handles<&'static str, Counter>,
    client_certificates: Handles<&'static str, Counter>,
    h2_streams_open: metrics::Gauge,
    h2_resets: Handles<&'static str, Counter>,
}

/// The `phase` values of `edgegw_downstream_timeouts_total`.
pub const TIMEOUT_PHASES: &[&str] = &["handshake", "header", "body"];
/// The `limit` values of `edgegw_limits_reached_total`.
pub const LIMITS: &[&str] = &["connections", "backend_connections", "request_body"];
/// The `result` values of `edgegw_downstream_client_certificates_total`.
pub const CLIENT_CERTIFICATE_RESULTS: &[&str] = &["none", "verified", "unverified", "refused"];

/// The `reason` values of `edgegw_h2_resets_total`.
pub const H2_RESET_REASONS: &[&str] = &[
    "client",
    "internal_error",
    "enhance_your_calm",
    "connection_error",
];

/// A counter cache holding a registered counter for each of `values` of `label`.
fn prefilled(
    name: &'static str,
    label: &'static str,
    values: &[&'static str],
) -> Handles<&'static str, Counter> {
    let handles = values
        .iter()
        .map(|&v| (v, metrics::counter!(name, label => v)))
        .collect();
    RefCell::new(handles)
}

fn bool_label(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

impl WorkerMetrics {
    pub fn new(worker: usize) -> Self {
        let worker = worker.to_string();
        let handshake = |resumed| metrics::counter!(DOWNSTREAM_HANDSHAKES_TOTAL, "resumed" => bool_label(resumed));
        Self {
            accepted: metrics::counter!(WORKER_ACCEPTED_CONNECTIONS_TOTAL, "worker" => worker.clone()),
            active: metrics::gauge!(WORKER_ACTIVE_CONNECTIONS, "worker" => worker.clone()),
            downstream_handshakes: [handshake(false), handshake(true)],
            downstream_handshake_durations: [false, true].map(|resumed| {
                metrics::histogram!(DOWNSTREAM_HANDSHAKE_DURATION_SECONDS, "resumed" => bool_label(resumed))
            }),
            worker,
            requests: RefCell::default(),
            durations: RefCell::default(),
            upstream_handshakes: RefCell::default(),
            upstream_open: RefCell::default(),
            pool: RefCell::default(),
            tls_errors: RefCell::default(),
            resumption_misses: RefCell::default(),
            evictions: RefCell::default(),
            proxy_errors: RefCell::default(),
            // Every label value exists from the start (at 0), so rates and alerts work
            // before the first time a limit triggers.
            timeouts: prefilled(DOWNSTREAM_TIMEOUTS_TOTAL, "phase", TIMEOUT_PHASES),
            limits: prefilled(LIMITS_REACHED_TOTAL, "limit", LIMITS),
            client_certificates: prefilled(
                DOWNSTREAM_CLIENT_CERTIFICATES_TOTAL,
                "result",
                CLIENT_CERTIFICATE_RESULTS,
            ),
            h2_streams_open: metrics::gauge!(H2_STREAMS_OPEN),
            h2_resets: prefilled(H2_RESETS_TOTAL, "reason", H2_RESET_REASONS),
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub fn connection_accepted(&self) {
        self.accepted.increment(1);
        self.active.increment(1.0);
    }

    pub fn connection_closed(&self) {
        self.active.decrement(1.0);
    }

    pub fn downstream_handshake(&self, resumed: bool, took: Duration) {
        self.downstream_handshakes[usize::from(resumed)].increment(1);
        self.downstream_handshake_durations[usize::from(resumed)].record(took.as_secs_f64());
    }

    pub fn request(&self, api: &Arc<str>, status: u16, elapsed: Duration) {
        count(
            &self.requests,
            (api.clone(), status),
            || metrics::counter!(REQUESTS_TOTAL, "api" => api.to_string(), "code" => status.to_string()),
        );
        self.durations
            .borrow_mut()
            .entry(api.clone())
            .or_insert_with(
                || metrics::histogram!(REQUEST_DURATION_SECONDS, "api" => api.to_string()),
            )
            .record(elapsed.as_secs_f64());
    }

    pub fn upstream_handshake(&self, backend: &Arc<str>, resumed: bool, took: Duration) {
        let mut cache = self.upstream_handshakes.borrow_mut();
        let (count, duration) = cache.entry((backend.clone(), resumed)).or_insert_with(|| {
            let labels = [
                ("backend", backend.to_string()),
                ("resumed", bool_label(resumed).to_owned()),
            ];
            (
                metrics::counter!(UPSTREAM_HANDSHAKES_TOTAL, &labels),
                metrics::histogram!(UPSTREAM_HANDSHAKE_DURATION_SECONDS, &labels),
            )
        });
        count.increment(1);
        duration.record(took.as_secs_f64());
    }

    /// The open-connections gauge of a backend and certificate.
    pub fn upstream_open(&self, backend: &Arc<str>, certificate: &Arc<str>) -> metrics::Gauge {
        self.upstream_open
            .borrow_mut()
            .entry((backend.clone(), certificate.clone()))
            .or_insert_with(|| {
                metrics::gauge!(UPSTREAM_CONNECTIONS_OPEN, "backend" => backend.to_string(), "certificate" => certificate.to_string())
            })
            .clone()
    }

    pub fn pool_lookup(&self, backend: &Arc<str>, hit: bool) {
        count(&self.pool, (backend.clone(), hit), || {
            let result = if hit { "hit" } else { "miss" };
            metrics::counter!(UPSTREAM_POOL_TOTAL, "backend" => backend.to_string(), "result" => result)
        });
    }

    /// A failed upstream TLS connection; `reason` is the contract's `details[].reason`.
    pub fn upstream_tls_error(&self, backend: &Arc<str>, reason: &'static str) {
        count(
            &self.tls_errors,
            (backend.clone(), reason),
            || metrics::counter!(UPSTREAM_TLS_ERRORS_TOTAL, "backend" => backend.to_string(), "reason" => reason),
        );
    }

    /// A new upstream TLS connection that did not resume; `reason` is a `ResumeMiss` label.
    pub fn upstream_resumption_miss(&self, backend: &Arc<str>, reason: &'static str) {
        count(
            &self.resumption_misses,
            (backend.clone(), reason),
            || metrics::counter!(UPSTREAM_RESUMPTION_MISSES_TOTAL, "backend" => backend.to_string(), "reason" => reason),
        );
    }

    /// A request answered with an error of the gateway's own (`kind` and `side` labels).
    pub fn proxy_error(&self, error: ProxyErrorLabels) {
        count(
            &self.proxy_errors,
            error.kind,
            || metrics::counter!(PROXY_ERRORS_TOTAL, "kind" => error.kind, "side" => error.side),
        );
    }

    /// A client connection cut by a timeout in `phase` (`handshake`, `header`, `body`).
    pub fn downstream_timeout(&self, phase: &'static str) {
        count(
            &self.timeouts,
            phase,
            || metrics::counter!(DOWNSTREAM_TIMEOUTS_TOTAL, "phase" => phase),
        );
    }

    /// A client handshake with a certificate asked for; `result` is one of
    /// [`CLIENT_CERTIFICATE_RESULTS`].
    pub fn client_certificate(&self, result: &'static str) {
        count(
            &self.client_certificates,
            result,
            || metrics::counter!(DOWNSTREAM_CLIENT_CERTIFICATES_TOTAL, "result" => result),
        );
    }

    /// A limit held something back (`connections`, `backend_connections`, `request_body`).
    pub fn limit_reached(&self, limit: &'static str) {
        count(
            &self.limits,
            limit,
            || metrics::counter!(LIMITS_REACHED_TOTAL, "limit" => limit),
        );
    }

    /// An idle upstream connection dropped; `reason` is an `Eviction` label.
    pub fn pool_eviction(&self, reason: &'static str) {
        count(
            &self.evictions,
            reason,
            || metrics::counter!(UPSTREAM_POOL_EVICTIONS_TOTAL, "reason" => reason),
        );
    }

    /// An HTTP/2 stream accepted (`true`) or its task ended (`false`).
    pub fn h2_stream(&self, open: bool) {
        if open {
            self.h2_streams_open.increment(1.0);
        } else {
            self.h2_streams_open.decrement(1.0);
        }
    }

    /// An HTTP/2 stream or connection ended early; `reason` is one of [`H2_RESET_REASONS`].
    pub fn h2_reset(&self, reason: &'static str) {
        count(
            &self.h2_resets,
            reason,
            || metrics::counter!(H2_RESETS_TOTAL, "reason" => reason),
        );
    }
}
