//! CI smoke run: the test backend and edgegw as real processes (binaries from the same target
//! directory), then every scenario of `loadtest run` for about two seconds each, asserting
//! zero errors; and the hardening commands (`soak`, `churn`, `slowloris`) in miniature,
//! asserting only that they run and print their summary lines. Never a speed: the machine
//! may be busy.

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use loadtest::harness::{self, Backend, Kind, Pki, Server};

mod common;

fn run_scenario(dir: &Path, name: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--duration", "2s", "--connections", "4"]);
    common::run_report(name, &dir.join(format!("{name}.json")), &all)
}

/// The PKI and a one-worker test backend, after checking the binaries are built.
fn pki_and_backend() -> (Pki, Backend) {
    if let Err(e) = harness::bin_dir() {
        panic!("{e}");
    }
    let pki = Pki::create().expect("pki");
    let backend = Backend::start(&pki, 1).expect("backend");
    (pki, backend)
}

#[test]
fn every_scenario_runs_without_errors() {
    let (pki, backend) = pki_and_backend();
    let gw = Server::start(Kind::Edgegw, &pki, backend.port, 1).expect("edgegw");
    let target = gw.url("/smoke");
    let dir = pki.dir();
    let p12 = pki.path("client.p12");
    let p12 = p12.to_str().unwrap();

    for scenario in ["keepalive", "newconn"] {
        let v = run_scenario(
            dir,
            scenario,
            &["--scenario", scenario, "--target", &target],
        );
        assert_eq!(v["mode"], "closed loop");
    }
    let v = run_scenario(
        dir,
        "resume",
        &[
            "--scenario",
            "resume",
            "--target",
            &target,
            "--groups",
            "X25519",
        ],
    );
    assert!(v["resumed_ratio"].as_f64().unwrap() > 0.5, "{v}");

    let v = run_scenario(
        dir,
        "open-loop",
        &[
            "--scenario",
            "keepalive",
            "--target",
            &target,
            "--rate",
            "200",
        ],
    );
    assert_eq!(v["mode"], "open loop");

    let direct = format!("https://127.0.0.1:{}/direct", backend.port);
    run_scenario(
        dir,
        "mtls-direct",
        &[
            "--scenario",
            "mtls-direct",
            "--target",
            &direct,
            "--pkcs12",
            p12,
            "--password",
            harness::P12_PASSWORD,
        ],
    );

    let admin = gw.admin_url.clone().expect("admin url");
    let v = run_scenario(
        dir,
        "rotate",
        &[
            "--scenario",
            "rotate",
            "--target",
            &target,
            "--admin",
            &admin,
            "--token",
            harness::ADMIN_TOKEN,
            "--pkcs12",
            p12,
            "--password",
            harness::P12_PASSWORD,
            "--backend-id",
            harness::BACKEND_ID,
        ],
    );
    assert!(v["rotate"]["rotations"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["rotate"]["admin_failures"], 0, "{v}");
}

/// `loadtest compare` with the third-party clients only (wrk, h2load, openssl s_time, as
/// `./dev` installs them): each figure ran against a real edgegw, completed requests or
/// connections with no error, and names the command that reproduces it.
#[test]
fn compare_drives_the_third_party_clients() {
    let missing: Vec<&str> = ["wrk", "h2load", "openssl"]
        .into_iter()
        .filter(|p| harness::find_program(p).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "not installed: {missing:?} (./dev installs wrk, nghttp2-client and openssl)"
    );
    let dir = testkit::temp_dir("loadtest-smoke").expect("temp dir");
    let json = dir.path().join("compare.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "compare",
            "--servers",
            "edgegw",
            "--clients",
            "wrk,h2load,s_time",
        ])
        .args([
            "--duration",
            "1s",
            "--connections",
            "4",
            "--wrk-connections",
            "4",
        ])
        .args(["--idle-connections", "0", "--no-open-loop", "--json"])
        .arg(&json)
        .output()
        .expect("run loadtest compare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed:\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    let third = &v["servers"][0]["third_party"];
    for figure in [
        "h2load-keepalive",
        "wrk-newconn-resume",
        "s_time-new",
        "s_time-reuse",
    ] {
        let f = &third[figure];
        assert!(f["completed"].as_u64().unwrap_or(0) > 0, "{figure}: {f}");
        assert_eq!(f["errors"], 0, "{figure}: {f}");
        assert!(
            f["command"].as_str().is_some_and(|c| !c.is_empty()),
            "{figure}: {f}"
        );
        assert!(
            f["cpu_ms_per_1000"].as_f64().unwrap_or(0.0) > 0.0,
            "{figure}: {f}"
        );
    }
}

/// The peers `loadtest compare` measures edgegw against start from the harness's configs
/// (nginx's is written by testkit) and proxy a request over mTLS to the test backend. One
/// request each with curl: that they work, never how fast.
#[test]
fn nginx_and_haproxy_proxy_to_the_backend() {
    let (pki, backend) = pki_and_backend();
    for kind in [Kind::Nginx, Kind::Haproxy] {
        let server = Server::start(kind, &pki, backend.port, 1)
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        let out = Command::new("curl")
            .args(["-sk", "--fail", "--max-time", "10", "-o", "/dev/null"])
            .args(["-w", "%{http_code}"])
            .arg(server.url("/peer"))
            .output()
            .expect("run curl (./dev installs it)");
        let code = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && code == "200",
            "{}: curl {} answered {code:?}: {}\n{}",
            kind.name(),
            server.url("/peer"),
            String::from_utf8_lossy(&out.stderr),
            server.proc.log_tail()
        );
    }
}

/// Runs `loadtest ARGS`; asserts it succeeded and printed every one of `lines` (beginnings of
/// summary lines, never figures).
fn hardening_command(args: &[&str], lines: &[&str]) {
    if let Err(e) = harness::bin_dir() {
        panic!("{e}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for line in lines {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(line)),
            "{args:?}: no line starting with {line:?}:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn soak_prints_its_series_and_verdict() {
    hardening_command(
        &[
            "soak",
            "--duration",
            "5s",
            "--sample-every",
            "1s",
            "--rate",
            "50",
        ],
        &["[", "soak summary:", "rss  first", "fds  first", "verdict:"],
    );
}

#[test]
fn churn_prints_descriptors_before_and_after() {
    hardening_command(
        &[
            "churn",
            "--connections",
            "500",
            "--warmup",
            "50",
            "--idle-wait",
            "1s",
        ],
        &["connections", "edgegw fds", "edgegw rss", "fd leak:"],
    );
}

#[test]
fn slowloris_prints_the_good_client_beside_the_slow_ones() {
    hardening_command(
        &[
            "slowloris",
            "--slow",
            "20",
            "--duration",
            "3s",
            "--baseline",
            "2s",
            "--ramp",
            "1s",
        ],
        &[
            "idle gateway",
            "beside 20 slow connections",
            "slow: silent TCP",
            "slow: slow request head",
            "edgegw: fds",
        ],
    );
}
