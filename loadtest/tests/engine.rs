//! The load-test suite's own engine (tokio-uring, and its plain-tokio fallback) against real
//! servers: the test backend on the same engine, edgegw, and NGINX. Each scenario runs for a
//! short bounded time with zero errors; against edgegw, the requests and TLS handshakes the
//! engine counted agree with what edgegw's `/metrics` counted for the same run. Never a
//! speed: the machine may be busy.

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use loadtest::admin::metric_sum;
use loadtest::harness::{self, Backend, Kind, Pki, Server};

mod common;

/// `loadtest run` for one scenario on `driver`; its `--json` report (zero errors asserted).
fn run(dir: &Path, name: &str, driver: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&[
        "--driver",
        driver,
        "--duration",
        "1500ms",
        "--connections",
        "4",
    ]);
    let what = format!("{name} on {driver}");
    common::run_report(&what, &dir.join(format!("{name}-{driver}.json")), &all)
}

fn drivers() -> Vec<&'static str> {
    let mut d = vec!["tokio"];
    if loadtest::engine::uring_available() {
        d.push("uring");
    } else {
        eprintln!("io_uring is not available here: only the tokio fallback is tested");
    }
    d
}

/// Counters of edgegw's /metrics the engine's figures are checked against.
fn counters(gw: &Server) -> [f64; 3] {
    let m = gw.metrics_text();
    [
        metric_sum(&m, "edgegw_requests_total", &[]),
        metric_sum(
            &m,
            "edgegw_downstream_handshakes_total",
            &[("resumed", "false")],
        ),
        metric_sum(
            &m,
            "edgegw_downstream_handshakes_total",
            &[("resumed", "true")],
        ),
    ]
}

#[test]
fn the_engine_agrees_with_edgegw_metrics_on_both_drivers() {
    harness::bin_dir().expect("binaries built");
    let pki = Pki::create().expect("pki");
    for driver in drivers() {
        // The backend on the same engine and driver as the client.
        let backend = Backend::start_on(&pki, 1, driver).expect("backend");
        let gw = Server::start(Kind::Edgegw, &pki, backend.port, 1).expect("edgegw");
        let target = gw.url("/engine");
        let scenarios: [(&str, &[&str]); 3] = [
            ("keepalive", &[]),
            ("newconn", &[]),
            ("resume", &["--groups", "X25519"]),
        ];
        for (scenario, extra) in scenarios {
            let before = counters(&gw);
            let mut args = vec!["--scenario", scenario, "--target", &target];
            args.extend_from_slice(extra);
            let v = run(pki.dir(), scenario, driver, &args);
            let after = counters(&gw);
            let requests = v["requests"].as_u64().expect("requests") as f64;
            let connections = v["connections"].as_u64().expect("connections") as f64;
            let resumed = v["resumed_connections"].as_u64().expect("resumed") as f64;
            let what = format!(
                "{scenario} on {driver}: report {v}, edgegw before {before:?} after {after:?}"
            );
            assert_eq!(after[0] - before[0], requests, "requests: {what}");
            assert_eq!(
                after[1] - before[1],
                connections - resumed,
                "full handshakes: {what}"
            );
            assert_eq!(after[2] - before[2], resumed, "resumed handshakes: {what}");
            match scenario {
                "keepalive" => assert!(connections <= 4.0, "{what}"),
                "newconn" => assert_eq!(connections, requests, "{what}"),
                _ => assert!(resumed > connections / 2.0, "{what}"),
            }
        }
        // Straight to the mTLS backend on the same engine, with a client certificate.
        let direct = format!("https://127.0.0.1:{}/direct", backend.port);
        let p12 = pki.path("client.p12");
        run(
            pki.dir(),
            "mtls-direct",
            driver,
            &[
                "--scenario",
                "mtls-direct",
                "--target",
                &direct,
                "--pkcs12",
                p12.to_str().expect("utf-8 path"),
                "--password",
                harness::P12_PASSWORD,
            ],
        );
    }
}

#[test]
fn the_engine_drives_nginx_without_errors() {
    harness::bin_dir().expect("binaries built");
    let pki = Pki::create().expect("pki");
    let backend = Backend::start(&pki, 1).expect("backend");
    let nginx = Server::start(Kind::Nginx, &pki, backend.port, 1)
        .expect("nginx (./dev installs nginx-light)");
    let target = nginx.url("/engine");
    for driver in drivers() {
        for scenario in ["keepalive", "newconn", "resume"] {
            let v = run(
                pki.dir(),
                &format!("nginx-{scenario}"),
                driver,
                &[
                    "--scenario",
                    scenario,
                    "--target",
                    &target,
                    "--groups",
                    "X25519",
                ],
            );
            if scenario == "resume" {
                let ratio = v["resumed_ratio"].as_f64().expect("ratio");
                assert!(ratio > 0.5, "nginx resumes the engine's sessions: {v}");
            }
        }
    }
}

/// Runs `cmd` with the io_uring_setup system call refused (EPERM), as a seccomp profile such
/// as Docker's default does: the engine must say so and fall back to plain tokio.
fn without_io_uring(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // io_uring_setup is 425 on x86_64 and aarch64 (the unified numbering of new calls).
    const IO_URING_SETUP: u32 = 425;
    // SAFETY: between fork and exec only async-signal-safe calls are made (two prctl), on
    // a filter that lives on this closure's stack until the kernel has copied it.
    unsafe {
        cmd.pre_exec(|| {
            let filter = [
                // A = seccomp_data.nr
                libc::sock_filter {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                // if A == io_uring_setup: next, else skip one
                libc::sock_filter {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: IO_URING_SETUP,
                },
                // return ERRNO(EPERM)
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x0005_0000 | libc::EPERM as u32,
                },
                // return ALLOW
                libc::sock_filter {
                    code: 0x06,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                },
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            let zero: libc::c_ulong = 0;
            if libc::prctl(
                libc::PR_SET_NO_NEW_PRIVS,
                1 as libc::c_ulong,
                zero,
                zero,
                zero,
            ) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
fn without_io_uring_the_engine_says_so_and_runs_on_plain_tokio() {
    harness::bin_dir().expect("binaries built");
    let pki = Pki::create().expect("pki");
    let backend = Backend::start(&pki, 1).expect("backend");
    let direct = format!("https://127.0.0.1:{}/direct", backend.port);
    let p12 = pki.path("client.p12");
    let json = pki.dir().join("no-uring.json");
    let run = |driver: &str| {
        without_io_uring(
            Command::new(env!("CARGO_BIN_EXE_loadtest"))
                .args(["run", "--scenario", "mtls-direct", "--target", &direct])
                .arg("--pkcs12")
                .arg(&p12)
                .args(["--password", harness::P12_PASSWORD, "--duration", "1s"])
                .args(["--connections", "2", "--driver", driver, "--json"])
                .arg(&json),
        )
        .output()
        .expect("run loadtest")
    };
    let out = run("auto");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("io_uring is not available here; using plain tokio"),
        "the fallback must be said: {stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    assert_eq!(v["driver"], "tokio", "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["requests"].as_u64().expect("requests") > 0, "{v}");
    // Asking for io_uring where it cannot be had is an error that says what to do.
    let out = run("uring");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--driver uring must fail without io_uring"
    );
    assert!(stderr.contains("use --driver tokio or auto"), "{stderr}");
}
