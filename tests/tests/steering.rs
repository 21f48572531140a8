//! eBPF connection steering across workers, worker health, the restart handover, and the
//! fallback to the kernel's hash. BPF needs CAP_BPF (or CAP_SYS_ADMIN): CI runs as root;
//! elsewhere the eBPF tests print why they are skipped.
//!
//! Run: `cargo build --release --bins && cargo test --release -p e2e --test steering`

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::http::Request;
use e2e::metrics::sum;
use e2e::steering::{online_cpus, pin_thread, skip_without_bpf, worker_of, SteerOpts, Steered};
use e2e::{echo, util};

fn opts(policy: &'static str) -> SteerOpts {
    SteerOpts {
        policy,
        ..SteerOpts::default()
    }
}

/// Waits until `live` workers are in the socket map.
fn wait_live(s: &Steered, live: usize) {
    let done = util::wait_for(Duration::from_secs(8), || {
        (sum(&s.metrics(), "edgegw_steering_live_workers", &[]) == live as f64).then_some(())
    });
    assert!(
        done.is_some(),
        "live workers never became {live}:\n{}",
        s.logs()
    );
}

/// Opens and closes `n` TCP connections (the program steers the SYN; no TLS needed).
fn connect_n(s: &Steered, n: usize) {
    for i in 0..n {
        let c = TcpStream::connect_timeout(&s.listen, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        drop(c);
    }
}

/// The range each of `workers` workers' count of `n` connections falls in when a fair hash
/// spreads them: the binomial mean ± 5 standard deviations (a fair hash falls outside it
/// about once in 1.7 million runs; a hash that favours a worker by 8 % of 1000 does not
/// fit).
fn fair_share_bounds(n: usize, workers: usize) -> (f64, f64) {
    let p = 1.0 / workers as f64;
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 5.0 * sd, mean + 5.0 * sd)
}

fn delta(after: &[f64], before: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[test]
fn hash_spreads_connections_evenly() {
    if skip_without_bpf("hash_spreads_connections_evenly") {
        return;
    }
    let s = Steered::start(opts("hash"));
    assert!(
        s.procs[0]
            .log()
            .contains("connection steering: eBPF sk_reuseport program, policy hash"),
        "{}",
        s.logs()
    );
    // The workers count what they accept themselves, so the counts are exact whatever the
    // machine's load (the program's own counters count SYNs, retransmits included).
    let before = s.accepted_reaching(s.probes);
    assert_eq!(before.iter().sum::<f64>(), s.probes as f64, "{before:?}");
    const N: usize = 1000;
    connect_n(&s, N);
    let got = delta(&s.accepted_reaching(s.probes + N), &before);
    assert_eq!(got.iter().sum::<f64>(), N as f64, "per worker {got:?}");
    let (lo, hi) = fair_share_bounds(N, got.len());
    for (w, n) in got.iter().enumerate() {
        assert!(
            (lo..=hi).contains(n),
            "worker {w} got {n} of {N} connections (a fair hash gives {lo:.0}..={hi:.0}): {got:?}"
        );
    }
    // Requests are served through the program too.
    let e = echo(&s.client().get("/orders/1"));
    assert_eq!(e["path"], "/base/1");
    let m = s.metrics();
    assert_eq!(sum(&m, "edgegw_steering_mode", &[("mode", "ebpf")]), 1.0);
    assert_eq!(
        sum(
            &m,
            "edgegw_steering_decisions_total",
            &[("decision", "kernel_fallback")]
        ),
        0.0
    );
}

#[test]
fn cpu_policy_sends_to_the_worker_of_the_receiving_cpu() {
    if skip_without_bpf("cpu_policy_sends_to_the_worker_of_the_receiving_cpu") {
        return;
    }
    if online_cpus() < 2 {
        eprintln!("skipped cpu policy test: needs 2 CPUs");
        return;
    }
    let s = Steered::start(opts("cpu"));
    let mut expected = s.probes;
    for cpu in [0usize, 1] {
        let listen = s.listen;
        let before = s.accepted_reaching(expected);
        // The client thread pinned to `cpu` (taskset): loopback SYNs are processed there.
        std::thread::spawn(move || {
            assert!(pin_thread(cpu), "sched_setaffinity to CPU {cpu}");
            for _ in 0..200 {
                drop(TcpStream::connect_timeout(&listen, Duration::from_secs(5)).expect("connect"));
            }
        })
        .join()
        .expect("client thread");
        expected += 200;
        let got = delta(&s.accepted_reaching(expected), &before);
        assert_eq!(
            got[cpu], 200.0,
            "client on CPU {cpu}: every connection should go to worker {cpu}, got {got:?}"
        );
    }
}

#[test]
fn least_loaded_avoids_a_busy_worker() {
    if skip_without_bpf("least_loaded_avoids_a_busy_worker") {
        return;
    }
    let s = Steered::start(opts("least-loaded"));
    let client = s.client();
    // Place 12 connections on worker 1 (worker 0 taken out meanwhile) and keep them busy
    // with long requests.
    assert_eq!(s.control("WORKER 0 OUT"), "OK");
    wait_live(&s, 1);
    let mut busy = Vec::new();
    for _ in 0..12 {
        let mut c = client.connect().expect("connect");
        let e = echo(&c.get("/orders/probe"));
        assert_eq!(worker_of(&e), Some(1), "{e}");
        busy.push(c);
    }
    assert_eq!(s.control("WORKER 0 IN"), "OK");
    wait_live(&s, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = busy
        .into_iter()
        .map(|mut c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = c.send(&Request::get("/orders/slow?delay_ms=1000"));
                    if r.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    // Wait until the program sees worker 1's 12 connections (loads are published every
    // 50 ms; STATUS shows what was published).
    let seen = util::wait_for(Duration::from_secs(30), || {
        let st = s.status();
        let loads: Vec<u32> = st["loads"]
            .split(',')
            .map(|l| l.parse().unwrap_or(0))
            .collect();
        (loads.len() == 2 && loads[1] >= 12 && loads[0] < loads[1]).then_some(loads)
    });
    assert!(
        seen.is_some(),
        "the program never saw worker 1 busy: {:?}\n{}",
        s.status(),
        s.logs()
    );
    let before = s.accepted();
    let mut on = [0usize; 2];
    for _ in 0..100 {
        let e = echo(&client.get("/orders/quick"));
        on[worker_of(&e).expect("worker in request id")] += 1;
    }
    stop.store(true, Ordering::Relaxed);
    // Every request was answered, so every connection was accepted: the counts are final.
    let got = delta(&s.accepted(), &before);
    assert!(
        on[0] >= 95 && got[0] >= 95.0,
        "least-loaded should avoid busy worker 1: requests per worker {on:?}, accepted {got:?}"
    );
    for t in threads {
        let _ = t.join();
    }
}

/// Makes requests on new connections from `threads` threads until `stop`; counts
/// successes and failures (any error or non-200).
fn load_loop(
    s: &Steered,
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Vec<std::thread::JoinHandle<Vec<String>>>,
) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let handles = (0..threads)
        .map(|_| {
            let client = s.client();
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.request(Request::get("/orders/loop")) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("status {} {}", r.status, r.text()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(e.to_string());
                        }
                    }
                }
                errors
            })
        })
        .collect();
    (ok, failed, handles)
}

fn finish(
    stop: &Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Vec<String>>>,
) -> Vec<String> {
    stop.store(true, Ordering::Relaxed);
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

#[test]
fn removing_a_worker_reroutes_without_failures() {
    if skip_without_bpf("removing_a_worker_reroutes_without_failures") {
        return;
    }
    let s = Steered::start(opts("hash"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, handles) = load_loop(&s, 2, &stop);
    // The program's decisions are read from its maps at scrape time, so once the map has
    // lost worker 1 (live workers = 1), not one more SYN may go to it. Windows are counted
    // in connections, not in time, so a slow machine only makes them last longer.
    s.steered_until("load reaches both workers", |n| n.iter().all(|&c| c > 0.0));
    assert_eq!(s.control("WORKER 1 OUT"), "OK");
    wait_live(&s, 1);
    let before = s.steered();
    let during = delta(
        &s.steered_until("worker 0 takes 50 connections while 1 is out", |n| {
            n[0] >= before[0] + 50.0
        }),
        &before,
    );
    assert_eq!(s.control("WORKER 1 IN"), "OK");
    wait_live(&s, 2);
    let before = s.steered();
    let after = delta(
        &s.steered_until("worker 1 gets connections once put back", |n| {
            n[1] > before[1]
        }),
        &before,
    );
    let errors = finish(&stop, handles);
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 50, "too few requests made");
    assert_eq!(
        during[1], 0.0,
        "worker 1 got connections while out: {during:?}"
    );
    assert!(after[1] > 0.0, "{after:?}");
    let log = s.procs[0].log();
    assert!(log.contains("worker taken out of connection steering: taken out by the operator"));
    assert!(log.contains("worker back in connection steering"));
}

#[test]
fn stalled_worker_is_taken_out_and_put_back() {
    if skip_without_bpf("stalled_worker_is_taken_out_and_put_back") {
        return;
    }
    let s = Steered::start(SteerOpts {
        stall_threshold: "400ms",
        env: vec![("EDGEGW_TEST_HOOKS".into(), "1".into())],
        ..opts("hash")
    });
    // Worker 1 blocks its own event loop for STALL; once the steering thread has taken it
    // out, every new connection must be served by worker 0 (one steered to worker 1 would
    // be answered by worker 1, after the stall). Requests are sent only while the stall
    // surely lasts, so a slow machine sends fewer of them, never a wrong one.
    const STALL: Duration = Duration::from_secs(8);
    let stalled_at = Instant::now();
    assert_eq!(
        s.control(&format!("WORKER 1 STALL {}", STALL.as_millis())),
        "OK"
    );
    wait_live(&s, 1);
    let client = s.client();
    let mut served = 0;
    while served < 40 && stalled_at.elapsed() < STALL - Duration::from_secs(2) {
        let e = echo(&client.get("/orders/during-stall"));
        assert_eq!(worker_of(&e), Some(0), "served during the stall by: {e}");
        served += 1;
    }
    assert!(
        served >= 5,
        "only {served} requests fitted in the stall:\n{}",
        s.logs()
    );
    wait_live(&s, 2);
    let log = s.procs[0].log();
    assert!(log.contains("stalled (event loop silent for"), "{log}");
}

/// A new edgegw on the same configuration takes over while clients open connections in a
/// loop: none fails, the old process exits 0, the new one has the store, and a TLS session
/// the old process issued resumes on the new one (it took over the ticket keys).
fn handover(mode: &'static str) {
    let mut s = Steered::start(SteerOpts {
        mode,
        ..opts("hash")
    });
    let tickets = s.client();
    let mut first = tickets.connect().expect("connect before the handover");
    assert!(!first.session_reused());
    // The ticket arrives after the handshake, with the first response.
    echo(&first.get("/orders/before"));
    drop(first);
    let session = tickets
        .last_session()
        .expect("the old edgegw sent no session ticket");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, handles) = load_loop(&s, 3, &stop);
    let served_at_least = |n: usize| {
        util::wait_for(Duration::from_secs(60), || {
            (ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= n).then_some(())
        })
    };
    // Load runs before, during and after the takeover: windows counted in requests.
    served_at_least(20);
    let before = ok.load(Ordering::Relaxed);
    let n = s.spawn().unwrap_or_else(|e| panic!("{e}"));
    let old = s.procs[0].wait_exit(Duration::from_secs(30));
    let done = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
    served_at_least(done + 20);
    let errors = finish(&stop, handles);
    assert!(
        old.is_some_and(|st| st.success()),
        "old edgegw did not exit 0: {old:?}\n{}",
        s.logs()
    );
    assert!(
        errors.is_empty(),
        "failed requests during the handover: {errors:?}\n{}",
        s.logs()
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > before + 20,
        "too few requests across the handover"
    );
    let new_log = s.procs[n].log();
    assert!(new_log.contains("taking over from the edgegw"), "{new_log}");
    assert!(
        new_log.contains("took over the previous edgegw's session ticket keys"),
        "{new_log}"
    );
    let mut resumed = tickets
        .connect_with(Some(&session))
        .expect("connect after the handover");
    echo(&resumed.get("/orders/resumed"));
    assert!(
        resumed.session_reused(),
        "a session of the old process did not resume on the new one"
    );
    // The new process has the store and serves the admin API and the data plane.
    let r = s.admin().get("/apis/orders");
    assert_eq!(r.status, 200, "{}", r.text());
    echo(&s.client().get("/orders/after"));
    // ...and it can be taken over in turn.
    let m = s.spawn().unwrap_or_else(|e| panic!("{e}"));
    assert!(s.procs[n]
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|st| st.success()));
    echo(&s.client().get("/orders/after-second"));
    assert!(s.procs[m].log().contains("handover complete"));
}

#[test]
fn restart_handover_refuses_no_connection_ebpf() {
    if skip_without_bpf("restart_handover_refuses_no_connection_ebpf") {
        return;
    }
    handover("ebpf");
}

#[test]
fn restart_handover_refuses_no_connection_kernel() {
    // Kernel mode relies on net.ipv4.tcp_migrate_req, which the gateway sets as root.
    if skip_without_bpf("restart_handover_refuses_no_connection_kernel") {
        return;
    }
    handover("kernel");
}

#[test]
fn auto_falls_back_to_kernel_without_bpf_permission() {
    let capsh = ["/usr/sbin/capsh", "/sbin/capsh", "/usr/bin/capsh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(capsh) = capsh else {
        eprintln!("skipped: capsh (libcap2-bin) is not installed");
        return;
    };
    if skip_without_bpf("auto_falls_back_to_kernel_without_bpf_permission (needs caps to drop)") {
        return;
    }
    // capsh drops CAP_BPF and CAP_SYS_ADMIN from the bounding set, then runs
    // `bash -c 'exec "$0" "$@"' edgegw run ...` (the harness appends edgegw and its args).
    let wrapper: Vec<String> = [
        capsh,
        "--drop=cap_bpf,cap_sys_admin",
        "--",
        "-c",
        "exec \"$0\" \"$@\"",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let s = Steered::start(SteerOpts {
        mode: "auto",
        wrapper,
        ..opts("least-loaded")
    });
    let log = s.procs[0].log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection steering:"))
        .collect();
    assert_eq!(lines.len(), 1, "one steering line expected: {lines:?}");
    assert!(
        lines[0].contains(
            "kernel SO_REUSEPORT hash (steering.mode = \"auto\": the eBPF program cannot be used"
        ),
        "{log}"
    );
    for i in 0..20 {
        echo(&s.client().get(&format!("/orders/{i}")));
    }
    let m = s.metrics();
    assert_eq!(sum(&m, "edgegw_steering_mode", &[("mode", "kernel")]), 1.0);
    // Kernel mode: the workers count their own accepted connections.
    assert!(sum(&m, "edgegw_worker_accepted_connections_total", &[]) >= 20.0);
}

#[test]
fn ebpf_mode_refuses_to_start_without_bpf_permission() {
    if skip_without_bpf("ebpf_mode_refuses_to_start_without_bpf_permission (needs caps to drop)") {
        return;
    }
    let Some(capsh) = ["/usr/sbin/capsh", "/sbin/capsh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: capsh (libcap2-bin) is not installed");
        return;
    };
    let out = std::process::Command::new(capsh)
        .args([
            "--drop=cap_bpf,cap_sys_admin",
            "--",
            "-c",
            "exec \"$0\" \"$@\"",
        ])
        .arg(util::bin_path("edgegw"))
        .args(["run", "--config"])
        .arg(write_minimal_config("ebpf"))
        .output()
        .expect("run edgegw under capsh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("steering.mode = \"ebpf\" but the eBPF steering program cannot be used"),
        "{stderr}"
    );
}

#[test]
fn an_unrelated_process_on_the_port_is_refused() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    let cfg = write_minimal_config_on("kernel", port);
    let out = std::process::Command::new(util::bin_path("edgegw"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run edgegw");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is in use by another process") && stderr.contains("no edgegw answered"),
        "{stderr}"
    );
}

fn write_minimal_config(mode: &str) -> std::path::PathBuf {
    write_minimal_config_on(mode, util::free_port())
}

fn write_minimal_config_on(mode: &str, port: u16) -> std::path::PathBuf {
    let dir = testkit::temp_dir("steer-min").expect("temp dir").keep();
    let cfg = format!(
        "[server]\nworkers = 2\ndata_dir = \"{data}\"\n[listener]\naddress = \"127.0.0.1:{port}\"\n\
         [admin]\naddress = \"127.0.0.1:{admin}\"\ntoken = \"t\"\n[metrics]\naddress = \"127.0.0.1:{metrics}\"\n\
         [steering]\nmode = \"{mode}\"\n",
        data = dir.join("data").display(),
        admin = util::free_port(),
        metrics = util::free_port(),
    );
    let path = dir.join("edgegw.toml");
    std::fs::write(&path, cfg).expect("write config");
    path
}
