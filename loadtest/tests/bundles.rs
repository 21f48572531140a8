//! The load-test suite's in-process PKCS#12 bundles against a real edgegw (binaries from the
//! same target directory, started by the harness as `loadtest compare` does), and the
//! commands built on them in miniature: `certificates`, `run --scenario rotate` and `scale`.
//! What is asserted comes from edgegw itself (its admin answers, its lists, its metrics, what
//! the mTLS backend saw), not from the tool's own report alone. Never a speed.

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::collections::HashSet;
use std::process::Command;

use loadtest::admin::{metric_sum, Endpoint};
use loadtest::bundles::client_bundle;
use loadtest::harness::{self, Backend, Kind, Pki, Server};

/// The PKI, a one-worker test backend and edgegw configured by the harness.
fn edgegw() -> (Pki, Backend, Server) {
    if let Err(e) = harness::bin_dir() {
        panic!("{e}");
    }
    let pki = Pki::create().expect("pki");
    let backend = Backend::start(&pki, 1).expect("backend");
    let server = Server::start(Kind::Edgegw, &pki, backend.port, 1).expect("edgegw");
    (pki, backend, server)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Runs `loadtest ARGS`; asserts it succeeded; returns its stdout.
fn loadtest(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadtest {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// One GET through edgegw with curl; the body.
fn through_gateway(server: &Server, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sk", "--fail", "--max-time", "10"])
        .arg(server.url(path))
        .output()
        .expect("run curl (./dev installs it)");
    assert!(
        out.status.success(),
        "curl {}: {}\n{}",
        server.url(path),
        String::from_utf8_lossy(&out.stderr),
        server.proc.log_tail()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(id, thumbprint)` of every certificate edgegw lists whose id starts with `prefix`.
fn listed(admin: &Endpoint, prefix: &str) -> Vec<(String, String)> {
    let (status, body) = admin.get("/certificates").expect("GET /certificates");
    assert_eq!(status, 200, "{body}");
    json(&body)["value"]
        .as_array()
        .expect("value list")
        .iter()
        .filter_map(|c| {
            let id = c["id"].as_str()?;
            id.starts_with(prefix).then(|| {
                (
                    id.to_string(),
                    c["thumbprint"].as_str().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn edgegw_accepts_in_process_bundles_and_presents_them() {
    let (_pki, backend, gw) = edgegw();
    let admin = gw.admin.clone().expect("admin");
    let upload = |cn: &str| {
        let bundle = client_bundle(cn, "bundle-pw").expect("bundle");
        let (status, reply) = admin
            .put_json_raw(
                "/certificates/in-process",
                &serde_json::json!({ "data": bundle.base64(), "password": "bundle-pw" }),
            )
            .expect("PUT");
        (bundle, status, json(&reply))
    };
    let (first, status, stored) = upload("bundle-one");
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["thumbprint"], first.thumbprint.as_str(), "{stored}");
    assert_eq!(
        stored["keyAlgorithm"].as_str().map(str::is_empty),
        Some(false)
    );
    assert!(
        stored["subject"]
            .as_str()
            .unwrap_or("")
            .contains("bundle-one"),
        "{stored}"
    );
    // A wrong password is refused by edgegw: the bundle really is protected by it.
    let (status, reply) = admin
        .put_json_raw(
            "/certificates/in-process-wrong",
            &serde_json::json!({ "data": first.base64(), "password": "not-it" }),
        )
        .expect("PUT");
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("WrongPassword"), "{reply}");

    // Bound to the backend, edgegw presents it: the mTLS backend reports its subject.
    admin
        .put_json(
            &format!("/backends/{}", harness::BACKEND_ID),
            &serde_json::json!({
                "url": format!("https://127.0.0.1:{}", backend.port),
                "tls": { "validateCertificateChain": false, "validateCertificateName": false },
                "credentials": { "certificateId": "in-process" },
            }),
        )
        .expect("rebind");
    let seen = through_gateway(&gw, "/bundles/one");
    assert!(seen.contains("bundle-one"), "backend saw: {seen}");

    // A second bundle under the same id: 200, a new thumbprint, presented from the next call.
    let (second, status, stored) = upload("bundle-two");
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["thumbprint"], second.thumbprint.as_str());
    assert_ne!(first.thumbprint, second.thumbprint);
    let seen = through_gateway(&gw, "/bundles/two");
    assert!(seen.contains("bundle-two"), "backend saw: {seen}");
}

#[test]
fn certificates_command_uploads_distinct_certificates() {
    let (pki, _backend, gw) = edgegw();
    let admin = gw.admin.clone().expect("admin");
    let url = gw.admin_url.clone().expect("admin url");
    let report = pki.dir().join("certificates.json");
    let stdout = loadtest(&[
        "certificates",
        "--admin",
        &url,
        "--token",
        harness::ADMIN_TOKEN,
        "--count",
        "25",
        "--concurrency",
        "2",
        "--id-prefix",
        "mini-",
        "--json",
        report.to_str().expect("path"),
    ]);
    assert!(stdout.contains("latency ms"), "{stdout}");
    let certs = listed(&admin, "mini-");
    assert_eq!(certs.len(), 25, "{certs:?}");
    let distinct: HashSet<&str> = certs.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(distinct.len(), 25, "{certs:?}");
    assert!(distinct.iter().all(|t| t.len() == 40));
    let v = json(&std::fs::read_to_string(&report).expect("json written"));
    assert_eq!(v["uploaded"], 25, "{v}");
    assert_eq!(v["failures"], 0, "{v}");
    assert!(v["latency_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0, "{v}");

    // Open loop, added after the first 25: ten more, the first ones untouched.
    loadtest(&[
        "certificates",
        "--admin",
        &url,
        "--token",
        harness::ADMIN_TOKEN,
        "--count",
        "10",
        "--rate",
        "50",
        "--id-prefix",
        "mini-",
        "--first",
        "25",
    ]);
    let after = listed(&admin, "mini-");
    assert_eq!(after.len(), 35);
    for c in &certs {
        assert!(after.contains(c), "{c:?} changed");
    }
    let distinct: HashSet<&str> = after.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(distinct.len(), 35);
}

#[test]
fn rotate_uploads_a_new_certificate_every_period() {
    let (pki, _backend, gw) = edgegw();
    let admin = gw.admin.clone().expect("admin");
    let changes = |m: &str| {
        metric_sum(
            m,
            "edgegw_admin_changes_total",
            &[("kind", "certificate"), ("operation", "put")],
        )
    };
    let before = changes(&gw.metrics_text());
    let report = pki.dir().join("rotate.json");
    let url = gw.admin_url.clone().expect("admin url");
    loadtest(&[
        "run",
        "--scenario",
        "rotate",
        "--target",
        &gw.url("/rotate"),
        "--admin",
        &url,
        "--token",
        harness::ADMIN_TOKEN,
        "--backend-id",
        harness::BACKEND_ID,
        "--rotate-every",
        "100ms",
        "--duration",
        "2s",
        "--connections",
        "2",
        "--json",
        report.to_str().expect("path"),
    ]);
    let v = json(&std::fs::read_to_string(&report).expect("json written"));
    let r = &v["rotate"];
    let rotations = r["rotations"].as_u64().expect("rotations");
    // 2 s at one every 100 ms, the first at 50 ms: up to 20; a busy machine does fewer.
    assert!(rotations >= 5, "{v}");
    assert_eq!(r["thumbprints"], rotations, "{v}");
    assert_eq!(r["admin_failures"], 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    // edgegw counted every upload, and holds two different certificates, one of them bound.
    let after = changes(&gw.metrics_text());
    assert!(after - before >= rotations as f64, "{before} -> {after}");
    let certs = listed(&admin, "loadtest-rotate");
    assert_eq!(certs.len(), 2, "{certs:?}");
    assert_ne!(certs[0].1, certs[1].1);
    let (_, body) = admin
        .get(&format!("/backends/{}", harness::BACKEND_ID))
        .expect("GET backend");
    let bound = json(&body)["credentials"]["certificateId"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        certs.iter().any(|(id, _)| *id == bound),
        "{bound} {certs:?}"
    );
}

#[test]
fn scale_in_miniature_creates_what_it_says() {
    if let Err(e) = harness::bin_dir() {
        panic!("{e}");
    }
    let dir = testkit::temp_dir("loadtest-scale").expect("temp dir");
    let report = dir.path().join("scale.json");
    let stdout = loadtest(&[
        "scale",
        "--certificates",
        "30",
        "--backends",
        "10",
        "--apis",
        "10",
        "--stages",
        "3",
        "--load-seconds",
        "1",
        "--connections",
        "2",
        "--json",
        report.to_str().expect("path"),
    ]);
    for line in [
        "writes, one at a time",
        "GET /certificates:",
        "listed by edgegw",
        "edgegw rss:",
        "request CPU",
        "before",
        "after: last API",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    let v = json(&std::fs::read_to_string(&report).expect("json written"));
    // Counted in edgegw's own lists at the end.
    assert_eq!(v["listed"]["certificates"], 30, "{v}");
    assert_eq!(v["listed"]["distinct_thumbprints"], 30, "{v}");
    assert_eq!(v["listed"]["backends"], 10, "{v}");
    assert_eq!(v["listed"]["apis"], 10, "{v}");
    assert_eq!(v["failures"], 0, "{v}");
    let stages = v["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[2]["certificates"], 30);
    // Every write published a snapshot, timed by edgegw's own histogram.
    assert!(v["publishes"].as_u64().unwrap_or(0) >= 50, "{v}");
    assert!(v["publish_mean_ms"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    for m in std::iter::once(&v["before"]).chain(v["after"].as_array().expect("after")) {
        assert!(m["requests"].as_u64().unwrap_or(0) > 0, "{m}");
        assert_eq!(m["errors"], 0, "{m}");
        assert!(
            m["cpu_s_per_1000_requests"].as_f64().unwrap_or(0.0) > 0.0,
            "{m}"
        );
    }
    assert_eq!(v["after"][2]["path"], "/scale/a00009", "{v}");
    assert_eq!(
        v["after"][2]["routes"], 11,
        "the harness's / and the ten: {v}"
    );
    assert!(v["rss"]["after_writes_kib"].as_u64().unwrap_or(0) > 0);
}
