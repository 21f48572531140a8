//! Observability checked against the real thing: Debian's `prometheus` scrapes a running
//! edgegw under load, and every Grafana panel query and every alert rule of `dashboards/`
//! is evaluated through Prometheus' HTTP API.
//!
//! Needs `prometheus` and `promtool` (`apt-get install -y prometheus`; `./dev test` installs
//! them) and the release binaries (`cargo build --release --bins`).
//!
//! What is checked, and why some things may legitimately be empty:
//! - `promtool check config` / `check rules` pass on `dashboards/prometheus.yml` and
//!   `dashboards/alerts.yml` (and on the CI variant generated here).
//! - Both dashboards have Grafana's shape (uid, title, schemaVersion, panels with a
//!   Prometheus datasource and targets with `expr`), unique panel ids, and every alert has a
//!   `runbook` annotation naming an existing section of docs/OPERATIONS.md.
//! - Under a load that makes every panel meaningful (full and resumed handshakes on both
//!   sides, pool hits, misses and idle expiries, UntrustedChain and ClientCertificateRejected
//!   TLS errors, a 404, ticket-key rotations every 2 s, admin puts and deletes, a client
//!   certificate expiring in 5 days), every panel query runs without error and has data,
//!   except the panels in [`MAY_BE_EMPTY`] (each with its reason).
//! - Every alert expression runs without error and every rule is healthy; the 30-day and
//!   7-day expiry alerts are active for the 5-day certificate. They have no `for:` (an expiry
//!   only changes when the certificate is replaced, so it cannot flap), so they fire on the
//!   first evaluation; the test accepts `pending` or `firing`. The TLS-error alert (for: 2m)
//!   and the gateway-down alert (for: 1m, on a second, dead scrape target) must be at least
//!   pending. The pool-hit-ratio and worker-imbalance alerts depend on traffic shape and
//!   duration (10m windows, for: 15m) and are only required to evaluate cleanly.
//! - Every `edgegw_*` metric name used in a query exists in the gateway's `/metrics`,
//!   except [`ABSENT_OK`].
//! - The audit log has one line per admin change and no secret.

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::http::{policy_with_certificate_id, Admin, Request, TlsClient};
use e2e::metrics::has_family;
use e2e::prometheus::{promtool, Prometheus};
use e2e::util::{bin_path, free_port, local, port_open, read_lossy, repo_root, tail};
use e2e::{Backend, BackendOpts, Pki, P12_PASSWORD};
use serde_json::Value;

const TOKEN: &str = "observability-admin-token-0123";

/// Panels that may have no data in this test, with the reason.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "Steering decisions",
        "eBPF steering: with steering.mode auto and no eBPF program (kernel SO_REUSEPORT \
         spreading) the counter does not exist",
    ),
    (
        "Certificates with no open upstream connection",
        "every uploaded certificate is in use by the load, so the list is empty",
    ),
];

/// `edgegw_*` metrics a query may use although this gateway does not export them.
const ABSENT_OK: &[(&str, &str)] = &[(
    "edgegw_steering_decisions_total",
    "exported only when eBPF connection steering is active",
)];

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

// ------------------------------------------------------------------ dashboards

struct PanelQuery {
    dashboard: String,
    panel: String,
    expr: String,
}

fn dashboard(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// Non-row panels, including those nested in collapsed rows.
fn leaf_panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten().cloned());
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn check_dashboard_shape(rel: &str, d: &Value, problems: &mut Vec<String>) {
    let mut need = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("{rel}: {what}"));
        }
    };
    need(
        d["uid"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.len() <= 40),
        "uid".into(),
    );
    need(
        d["title"].as_str().is_some_and(|s| !s.is_empty()),
        "title".into(),
    );
    need(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 16),
        "schemaVersion".into(),
    );
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let panels = leaf_panels(d);
    need(!panels.is_empty(), "no panels".into());
    let mut ids = BTreeSet::new();
    let rows = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] == "row");
    for p in rows.chain(panels.iter()) {
        if let Some(id) = p["id"].as_u64() {
            need(ids.insert(id), format!("duplicate panel id {id}"));
        }
    }
    for p in &panels {
        let t = p["title"].as_str().unwrap_or("").to_string();
        need(!t.is_empty(), "a panel without title".into());
        need(p["id"].as_u64().is_some(), format!("panel {t:?}: id"));
        need(
            p["type"].as_str().is_some_and(|s| !s.is_empty()),
            format!("panel {t:?}: type"),
        );
        for k in ["h", "w", "x", "y"] {
            need(
                p["gridPos"][k].as_u64().is_some(),
                format!("panel {t:?}: gridPos.{k}"),
            );
        }
        let ds_ok = |ds: &Value| {
            ds["type"] == "prometheus"
                && ds["uid"].as_str().is_some_and(|u| {
                    !u.is_empty()
                        && (!u.starts_with('$')
                            || vars.contains(&u.trim_matches(|c| "${}".contains(c))))
                })
        };
        need(
            ds_ok(&p["datasource"]),
            format!("panel {t:?}: datasource {}", p["datasource"]),
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        need(!targets.is_empty(), format!("panel {t:?}: no targets"));
        for tg in &targets {
            need(
                tg["refId"].as_str().is_some(),
                format!("panel {t:?}: target refId"),
            );
            need(
                tg["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                format!("panel {t:?}: target expr"),
            );
            need(
                ds_ok(&tg["datasource"]),
                format!("panel {t:?}: target datasource"),
            );
        }
    }
}

const DASHBOARDS: [&str; 2] = [
    "dashboards/edgegw-overview.json",
    "dashboards/edgegw-certificates.json",
];

fn panel_queries() -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for rel in DASHBOARDS {
        let d = dashboard(rel);
        let title = d["title"].as_str().unwrap_or(rel).to_string();
        for p in leaf_panels(&d) {
            for tg in p["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    dashboard: title.clone(),
                    panel: p["title"].as_str().unwrap_or("?").to_string(),
                    expr: tg["expr"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }
    out
}

/// Grafana's interval macros, replaced as Grafana does with the Prometheus datasource's
/// default scrape-interval setting (15s): `$__rate_interval` = max(4 x 15s, ...) = 1m.
fn grafana_macros(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
}

// ------------------------------------------------------------------ alert rules

struct Rule {
    name: String,
    expr: String,
    runbook: Option<String>,
}

/// The alerting rules of `alerts.yml`, read with a small YAML reader that understands the
/// subset used there (`- alert:`, `expr:` plain or `|` block, `runbook:`).
fn alert_rules(yaml: &str) -> Vec<Rule> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out: Vec<Rule> = Vec::new();
    let mut i = 0;
    let unquote = |s: &str| s.trim().trim_matches('"').trim_matches('\'').to_string();
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            out.push(Rule {
                name: unquote(name),
                expr: String::new(),
                runbook: None,
            });
        } else if let (Some(rule), Some(v)) = (out.last_mut(), t.strip_prefix("expr:")) {
            let v = v.trim();
            if v == "|" || v == ">" || v == "|-" || v == ">-" {
                let indent = l.len() - t.len();
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let n = lines[i + 1];
                    let nt = n.trim_start();
                    if !nt.is_empty() && n.len() - nt.len() <= indent {
                        break;
                    }
                    block.push(nt);
                    i += 1;
                }
                rule.expr = block.join("\n").trim().to_string();
            } else {
                rule.expr = unquote(v);
            }
        } else if let (Some(rule), Some(v)) = (out.last_mut(), t.strip_prefix("runbook:")) {
            rule.runbook = Some(unquote(v));
        }
        i += 1;
    }
    out
}

/// GitHub's heading anchors: lowercase, punctuation dropped, spaces to dashes.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for l in markdown.lines() {
        if l.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !l.starts_with('#') {
            continue;
        }
        let text = l.trim_start_matches('#').trim();
        let slug: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        out.insert(slug);
    }
    out
}

/// Every `edgegw_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("edgegw_") {
        let start = i + pos;
        let prev_ok = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b':')
        {
            end += 1;
        }
        if prev_ok {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn dashboards_rules_and_runbooks_are_well_formed() {
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for rel in DASHBOARDS {
        let d = dashboard(rel);
        check_dashboard_shape(rel, &d, &mut problems);
        assert!(
            uids.insert(d["uid"].as_str().unwrap_or("").to_string()),
            "duplicate uid in {rel}"
        );
    }
    let (ok, out) = promtool(&[
        "check",
        "config",
        &repo_root()
            .join("dashboards/prometheus.yml")
            .display()
            .to_string(),
    ]);
    assert!(
        ok,
        "promtool check config dashboards/prometheus.yml:\n{out}"
    );
    let (ok, out) = promtool(&[
        "check",
        "rules",
        &repo_root()
            .join("dashboards/alerts.yml")
            .display()
            .to_string(),
    ]);
    assert!(ok, "promtool check rules dashboards/alerts.yml:\n{out}");

    let rules = alert_rules(&read("dashboards/alerts.yml"));
    let names: BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    for want in [
        "EdgegwCertificateExpiringIn30Days",
        "EdgegwCertificateExpiringIn7Days",
        "EdgegwUpstreamTlsErrors",
        "EdgegwUpstreamPoolHitRatioLow",
        "EdgegwWorkerImbalance",
        "EdgegwDown",
        "EdgegwStoreDisconnected",
    ] {
        assert!(names.contains(want), "alerts.yml has no {want}: {names:?}");
    }
    let anchors = heading_anchors(&read("docs/OPERATIONS.md"));
    for r in &rules {
        assert!(!r.expr.is_empty(), "alert {} has no expr", r.name);
        match r.runbook.as_deref().and_then(|u| u.split_once("docs/OPERATIONS.md#")) {
            Some((_, anchor)) if anchors.contains(anchor) => {}
            other => problems.push(format!(
                "alert {}: runbook {:?} does not name a section of docs/OPERATIONS.md (sections: {anchors:?})",
                r.name, other
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "problems:\n  {}",
        problems.join("\n  ")
    );
}

// ------------------------------------------------------------------ processes

/// An `edgegw run` child with a config written here (short ticket-key rotation and upstream
/// idle timeout, so rotations and pool expiries happen within the test).
struct Gw {
    dir: testkit::TempDir,
    listen: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    child: Option<Child>,
}

impl Gw {
    fn start() -> Gw {
        let dir = testkit::temp_dir("e2e-obs").expect("temp dir");
        let (listen, admin, metrics) = (local(free_port()), local(free_port()), local(free_port()));
        let data = dir.path().join("data");
        let cfg = format!(
            "[server]\nworkers = 2\ndata_dir = \"{}\"\nshutdown_grace = \"2s\"\n\n\
             [listener]\naddress = \"{listen}\"\nticket_key_rotation = \"2s\"\n\n\
             [admin]\naddress = \"{admin}\"\ntoken = \"{TOKEN}\"\n\n\
             [metrics]\naddress = \"{metrics}\"\n\n\
             [upstream]\nidle_timeout = \"1s\"\nconnect_timeout = \"3s\"\nrequest_timeout = \"10s\"\n",
            data.display()
        );
        let cfg_path = dir.path().join("edgegw.toml");
        std::fs::write(&cfg_path, cfg).expect("write config");
        let log = File::create(dir.path().join("stderr.log")).expect("log");
        let mut cmd = Command::new(bin_path("edgegw"));
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .env_remove("EDGEGW_ADMIN_TOKEN")
            .env_remove("EDGEGW_MASTER_KEY");
        if std::env::var_os("EDGEGW_LOG").is_none() {
            cmd.env("EDGEGW_LOG", "info");
        }
        let child = cmd.spawn().expect("spawn edgegw");
        let mut gw = Gw {
            dir,
            listen,
            admin,
            metrics,
            child: Some(child),
        };
        let start = Instant::now();
        while !(port_open(listen) && port_open(admin) && port_open(metrics)) {
            if let Some(Ok(Some(st))) = gw.child.as_mut().map(|c| c.try_wait()) {
                gw.child = None;
                panic!("edgegw exited during startup with {st}:\n{}", gw.stderr());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "edgegw not ready:\n{}",
                gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }

    fn admin(&self) -> Admin {
        Admin {
            addr: self.admin,
            token: Some(TOKEN.into()),
        }
    }

    fn scrape(&self) -> String {
        let r =
            e2e::http::plain_request(self.metrics, Request::get("/metrics")).expect("GET /metrics");
        assert_eq!(r.status, 200);
        r.text()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== edgegw stderr (last 60 lines) ====\n{}\n====",
                tail(&self.stderr(), 60)
            );
        }
        if let Some(mut c) = self.child.take() {
            e2e::util::terminate(&mut c, Duration::from_secs(5));
        }
    }
}

/// The CI variant of `dashboards/prometheus.yml`: 1 s scrape and evaluation, the gateway's
/// metrics address plus a dead target (so that the gateway-down alert has something to see).
fn ci_prometheus_config(metrics: SocketAddr, dead: SocketAddr) -> String {
    let base = read("dashboards/prometheus.yml");
    let mut out = base.clone();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_string()),
        (
            "evaluation_interval: 15s",
            "evaluation_interval: 1s".to_string(),
        ),
        (
            r#"targets: ["127.0.0.1:9091"]"#,
            format!(r#"targets: ["{metrics}", "{dead}"]"#),
        ),
    ] {
        assert!(
            out.contains(from),
            "dashboards/prometheus.yml no longer contains `{from}`:\n{base}"
        );
        out = out.replace(from, &to);
    }
    out
}

fn status_of(r: &std::io::Result<e2e::Response>) -> String {
    match r {
        Ok(r) => r.status.to_string(),
        Err(e) => format!("error {e}"),
    }
}

/// Load until `stop`: per round a new client connection (every other one resuming the
/// last session), 4 requests to /orders (pool hits), 1 to /soon (the 5-day certificate),
/// one 404, then fresh connections to /strict (UntrustedChain) and /picky
/// (ClientCertificateRejected); every 12th round pauses 1.5 s so that pooled connections
/// expire (idle timeout 1 s) and the next ones resume their TLS session.
fn load(
    client: TlsClient,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let mut round = 0u64;
    let err = |what: String| {
        let mut e = errors.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() < 20 {
            e.push(what);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let session = if round % 2 == 0 {
            client.last_session()
        } else {
            None
        };
        match client.connect_with(session.as_ref()) {
            Ok(mut c) => {
                for i in 0..4 {
                    let r = c.send(&Request::get(&format!("/orders/{i}")));
                    if !matches!(&r, Ok(r) if r.status == 200) {
                        err(format!("/orders/{i}: {}", status_of(&r)));
                    }
                }
                let r = c.send(&Request::get("/soon/x"));
                if !matches!(&r, Ok(r) if r.status == 200) {
                    err(format!("/soon/x: {}", status_of(&r)));
                }
                let r = c.send(&Request::get("/nope"));
                if !matches!(&r, Ok(r) if r.status == 404) {
                    err(format!("/nope: {}", status_of(&r)));
                }
            }
            Err(e) => err(format!("connect: {e}")),
        }
        for path in ["/strict/x", "/picky/x"] {
            let r = client.request(Request::get(path));
            if !matches!(&r, Ok(r) if r.status == 500) {
                err(format!(
                    "{path}: expected 500 BackendTlsError, got {}",
                    status_of(&r)
                ));
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
        let pause = if round % 12 == 0 { 1500 } else { 60 };
        let until = Instant::now() + Duration::from_millis(pause);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Evaluation {
    errors: Vec<String>,
    empty: Vec<String>,
    inactive_alerts: Vec<String>,
}

impl Evaluation {
    fn ok(&self) -> bool {
        self.errors.is_empty() && self.empty.is_empty() && self.inactive_alerts.is_empty()
    }
}

/// Alerts that must be active (pending or firing), with the labels they must carry.
fn required_alerts() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        (
            "EdgegwCertificateExpiringIn30Days",
            vec![("certificate", "soon".into())],
        ),
        (
            "EdgegwCertificateExpiringIn7Days",
            vec![("certificate", "soon".into())],
        ),
        (
            "EdgegwCaCertificateExpiringIn30Days",
            vec![("ca_certificate", "soon-ca".into())],
        ),
        (
            "EdgegwCaCertificateExpiringIn7Days",
            vec![("ca_certificate", "soon-ca".into())],
        ),
        (
            "EdgegwUpstreamTlsErrors",
            vec![
                ("backend", "be-strict".into()),
                ("reason", "UntrustedChain".into()),
            ],
        ),
        (
            "EdgegwUpstreamTlsErrors",
            vec![
                ("backend", "be-picky".into()),
                ("reason", "ClientCertificateRejected".into()),
            ],
        ),
    ]
}

fn evaluate(
    prom: &Prometheus,
    panels: &[PanelQuery],
    rules: &[Rule],
    dead: SocketAddr,
) -> Evaluation {
    let mut ev = Evaluation {
        errors: Vec::new(),
        empty: Vec::new(),
        inactive_alerts: Vec::new(),
    };
    let may_be_empty: BTreeSet<&str> = MAY_BE_EMPTY.iter().map(|(p, _)| *p).collect();
    for q in panels {
        match prom.query(&grafana_macros(&q.expr)) {
            Err(e) => ev.errors.push(format!(
                "[{}] {:?}: {e}\n    expr: {}",
                q.dashboard, q.panel, q.expr
            )),
            Ok(r) if r.is_empty() && !may_be_empty.contains(q.panel.as_str()) => {
                ev.empty.push(format!(
                    "[{}] {:?}: no data\n    expr: {}",
                    q.dashboard, q.panel, q.expr
                ))
            }
            Ok(_) => {}
        }
    }
    for r in rules {
        if let Err(e) = prom.query(&r.expr) {
            ev.errors
                .push(format!("alert {}: {e}\n    expr: {}", r.name, r.expr));
        }
    }
    let alerts = prom.alerts();
    let active = |name: &str, labels: &[(&str, String)]| {
        alerts.iter().any(|a| {
            a["labels"]["alertname"] == name
                && matches!(a["state"].as_str(), Some("pending") | Some("firing"))
                && labels
                    .iter()
                    .all(|(k, v)| a["labels"][*k].as_str() == Some(v.as_str()))
        })
    };
    let mut required = required_alerts();
    required.push(("EdgegwDown", vec![("instance", dead.to_string())]));
    for (name, labels) in &required {
        if !active(name, labels) {
            ev.inactive_alerts.push(format!("{name} {labels:?}"));
        }
    }
    ev
}

#[test]
fn dashboards_and_alerts_against_a_real_prometheus() {
    let t0 = Instant::now();
    // Fail early, with the apt-get line, when Prometheus is not installed.
    e2e::prometheus::binary("prometheus");
    e2e::prometheus::binary("promtool");

    let pki = Pki::new();
    // A client certificate expiring in 5 days.
    pki.kit()
        .self_signed(
            "soon",
            &testkit::Cert::new("/CN=soon/O=edgegw-test", testkit::KeyType::P256).days(5),
        )
        .expect("soon.pem");
    // A CA certificate expiring in 5 days (the CA-expiry panel and alerts).
    pki.kit()
        .self_signed(
            "soon-ca",
            &testkit::Cert::ca("/CN=Soon CA/O=edgegw-test", testkit::KeyType::P256).days(5),
        )
        .expect("soon-ca.pem");
    let backend = Backend::simple(&pki, "server.pem", "server.key");
    // A backend that only accepts client certificates issued by the test CA: the
    // self-signed client-1 is refused (ClientCertificateRejected).
    let picky = Backend::start(BackendOpts {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: Some(pki.path("ca.pem")),
        ticket_key: None,
    });
    let gw = Gw::start();
    let admin = gw.admin();

    // Configuration: every admin kind and both operations (for the audit log and the
    // admin-changes panels).
    let ok = |r: e2e::Response, what: &str| {
        assert!(
            (200..300).contains(&r.status),
            "{what}: {} {}",
            r.status,
            r.text()
        );
    };
    ok(
        admin.put_certificate(
            "client-1",
            &pki.p12("client-1", P12_PASSWORD, false),
            P12_PASSWORD,
        ),
        "upload client-1",
    );
    ok(
        admin.put_certificate("soon", &pki.p12("soon", P12_PASSWORD, false), P12_PASSWORD),
        "upload soon",
    );
    ok(
        admin.put_certificate(
            "client-2",
            &pki.p12("client-2", P12_PASSWORD, false),
            P12_PASSWORD,
        ),
        "upload client-2",
    );
    ok(admin.delete("/certificates/client-2"), "delete client-2");
    let soon_ca = base64_of(&pki.read("soon-ca.pem"));
    ok(
        admin.put_json(
            "/caCertificates/soon-ca",
            &serde_json::json!({ "data": soon_ca }),
        ),
        "upload soon-ca",
    );
    let url = format!("{}/base", backend.url());
    ok(
        admin.put_backend("be-good", &url, false, false, Some("client-1")),
        "backend be-good",
    );
    // Chain validation on against a self-signed backend certificate: UntrustedChain.
    ok(
        admin.put_backend("be-strict", &url, true, false, Some("client-1")),
        "backend be-strict",
    );
    ok(
        admin.put_backend(
            "be-picky",
            &format!("{}/base", picky.url()),
            false,
            false,
            Some("client-1"),
        ),
        "backend be-picky",
    );
    ok(admin.put_api("orders", "/orders", "be-good"), "api orders");
    ok(admin.put_api("soon", "/soon", "be-good"), "api soon");
    ok(
        admin.put_xml("/apis/soon/policy", &policy_with_certificate_id("soon")),
        "policy soon",
    );
    ok(
        admin.put_api("strict", "/strict", "be-strict"),
        "api strict",
    );
    ok(admin.put_api("picky", "/picky", "be-picky"), "api picky");
    ok(admin.put_api("tmp", "/tmp", "be-good"), "api tmp");
    ok(admin.delete("/apis/tmp"), "delete api tmp");

    // Prometheus with the CI variant of the scrape config and the real alert rules.
    let dead = local(free_port());
    let config = ci_prometheus_config(gw.metrics, dead);
    let prom = Prometheus::start(&config, &[("alerts.yml", &read("dashboards/alerts.yml"))]);
    let cfg_path = prom.dir().join("prometheus.yml").display().to_string();
    let (ok_cfg, out) = promtool(&["check", "config", &cfg_path]);
    assert!(
        ok_cfg,
        "promtool check config (CI variant):\n{out}\n{config}"
    );

    // Load, in two threads so that both workers and several pooled connections are used.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let load_errors = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (c, s, r, e) = (
                TlsClient::new(gw.listen),
                stop.clone(),
                rounds.clone(),
                load_errors.clone(),
            );
            std::thread::spawn(move || load(c, s, r, e))
        })
        .collect();

    let panels = panel_queries();
    let rules = alert_rules(&read("dashboards/alerts.yml"));
    assert!(!panels.is_empty() && !rules.is_empty());

    // Wait for scrapes: until every required panel has data and every required alert is
    // active (at least 6 s of load first, for rates over several scrapes), at most 120 s (a bound, not a
    // target: a loaded machine scrapes late).
    let waited = Instant::now();
    let mut ev;
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        if waited.elapsed() < Duration::from_secs(6) {
            continue;
        }
        ev = evaluate(&prom, &panels, &rules, dead);
        if ev.ok() || waited.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let metrics_text = gw.scrape();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread panicked");
    }
    let load_errors = load_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut report = format!(
        "after {:.1}s of scraping, {} load rounds\n",
        waited.elapsed().as_secs_f64(),
        rounds.load(Ordering::Relaxed)
    );
    let mut failed = false;
    for (what, list) in [
        ("query errors", &ev.errors),
        (
            "panels without data (allowed empty: see MAY_BE_EMPTY)",
            &ev.empty,
        ),
        ("alerts not active (pending or firing)", &ev.inactive_alerts),
        ("load errors", &load_errors),
    ] {
        if !list.is_empty() {
            failed = true;
            report.push_str(&format!("{what}:\n  {}\n", list.join("\n  ")));
        }
    }

    // Every rule is loaded and healthy.
    let loaded = prom.rules();
    for r in &rules {
        match loaded.iter().find(|l| l["name"] == r.name.as_str()) {
            Some(l) if l["health"] == "ok" => {}
            Some(l) => {
                failed = true;
                report.push_str(&format!("rule {} unhealthy: {}\n", r.name, l["lastError"]));
            }
            None => {
                failed = true;
                report.push_str(&format!("rule {} not loaded by Prometheus\n", r.name));
            }
        }
    }
    // The live target is up.
    let up = prom
        .query(&format!(
            "up{{job=\"edgegw\", instance=\"{}\"}}",
            gw.metrics
        ))
        .unwrap_or_default();
    if up.first().and_then(|v| v["value"][1].as_str()) != Some("1") {
        failed = true;
        report.push_str(&format!(
            "the gateway target is not up: {up:?}\ntargets: {:?}\n",
            prom.targets()
        ));
    }
    // The 7-day alert is not active for the 30-day certificate.
    let alerts = prom.alerts();
    if alerts.iter().any(|a| {
        a["labels"]["alertname"] == "EdgegwCertificateExpiringIn7Days"
            && a["labels"]["certificate"] == "client-1"
    }) {
        failed = true;
        report.push_str(
            "EdgegwCertificateExpiringIn7Days is active for client-1 (expires in 30 days)\n",
        );
    }

    // Every metric name used in a query exists in the gateway's /metrics.
    let absent_ok: BTreeMap<&str, &str> = ABSENT_OK.iter().copied().collect();
    let mut names = BTreeSet::new();
    for q in &panels {
        names.extend(metric_names(&q.expr));
    }
    for r in &rules {
        names.extend(metric_names(&r.expr));
    }
    for n in &names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n);
        if !has_family(&metrics_text, family) && !absent_ok.contains_key(n.as_str()) {
            failed = true;
            report.push_str(&format!(
                "metric {n} is used in a query but not in the gateway's /metrics\n"
            ));
        }
    }

    // The audit log: one line per change above, no secrets.
    let audit = read_lossy(&gw.data_dir().join("audit.log"));
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit.log line is not JSON ({e}): {l}"))
        })
        .collect();
    let seen: Vec<String> = lines
        .iter()
        .map(|v| {
            format!(
                "{} {} {}",
                v["operation"].as_str().unwrap_or("?"),
                v["kind"].as_str().unwrap_or("?"),
                v["id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let want = [
        "put certificate client-1",
        "put certificate soon",
        "put certificate client-2",
        "delete certificate client-2",
        "put caCertificate soon-ca",
        "put backend be-good",
        "put backend be-strict",
        "put backend be-picky",
        "put api orders",
        "put api soon",
        "put policy soon",
        "put api strict",
        "put api picky",
        "put api tmp",
        "delete api tmp",
    ];
    if seen != want {
        failed = true;
        report.push_str(&format!("audit.log lines {seen:#?}\nexpected {want:#?}\n"));
    }
    let soon_tp = pki.thumbprint("soon.pem");
    if !lines
        .iter()
        .any(|v| v["kind"] == "policy" && v["thumbprint"] == soon_tp.as_str())
    {
        failed = true;
        report.push_str("audit.log: the policy line lacks the bound certificate's thumbprint\n");
    }
    for secret in [
        P12_PASSWORD.to_string(),
        pki.key_pem_base64_line("client-1"),
        pki.key_pem_base64_line("soon"),
    ] {
        if audit.contains(&secret) {
            failed = true;
            report.push_str("audit.log contains a password or key material\n");
        }
    }

    assert!(
        !failed,
        "{report}\ncompleted in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    eprintln!(
        "observability: ok in {:.1}s ({report})",
        t0.elapsed().as_secs_f64()
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
