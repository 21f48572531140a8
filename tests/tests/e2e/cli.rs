//! The binary: graceful shutdown, `check`, `--version`.

use std::process::Command;
use std::time::Duration;

use e2e::util::bin_path;
use e2e::*;

#[test]
fn sigterm_finishes_in_flight_request_and_exits_0() {
    let mut f = Fixture::standard();
    let client = f.client.clone();
    let mut conn = client.connect().expect("connect");
    echo(&conn.get("/orders/warmup"));
    let (_, checkouts) = f.gw.wait_metric("edgegw_upstream_pool_total", &[], 1.0);
    let inflight = std::thread::spawn(move || conn.get("/orders/slow?delay_ms=3000"));
    // The slow request is in flight once it took an upstream connection from the pool.
    let (_, now) =
        f.gw.wait_metric("edgegw_upstream_pool_total", &[], checkouts + 1.0);
    assert_eq!(
        now,
        checkouts + 1.0,
        "the slow request never reached the pool"
    );
    f.gw.sigterm();
    // New connections are no longer served once the listener is closed.
    let listen = f.gw.listen;
    let closed = e2e::util::wait_for(Duration::from_secs(10), || {
        (!e2e::util::port_open(listen)).then_some(())
    });
    assert!(closed.is_some(), "the listener still accepts after SIGTERM");
    let late = client.clone();
    let late =
        std::thread::spawn(move || late.request(Request::get("/orders/late")).map(|r| r.status));
    let r = inflight.join().expect("in-flight thread");
    assert_eq!(
        r.status,
        200,
        "in-flight request during shutdown: {} {}",
        r.status,
        r.text()
    );
    let st = f.gw.wait_exit(Duration::from_secs(15));
    assert!(st.is_some(), "edgegw did not exit within 15s of SIGTERM");
    assert!(st.is_some_and(|s| s.success()), "exit status {st:?}");
    let late = late.join().expect("late thread");
    assert!(
        !matches!(late, Ok(200)),
        "a connection made after SIGTERM was served: {late:?}"
    );
}

#[test]
fn check_and_version() {
    let exe = bin_path("edgegw");
    let out = Command::new(&exe).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{:?}",
        out
    );

    let dir = testkit::temp_dir("e2e").expect("temp dir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nworkers = 2\nshutdown_grace = \"5s\"\n[listener]\naddress = \"127.0.0.1:18443\"\n[upstream]\nrequest_timeout = \"250ms\"\n",
    )
    .expect("write");
    let out = Command::new(&exe)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "check good config: {:?}", out);

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nworkerz = 2\n[upstream]\nrequest_timeout = \"soon\"\n",
    )
    .expect("write");
    let out = Command::new(&exe)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "check bad config: {:?}", out);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("workerz"), "names the unknown key: {text}");
}

#[test]
fn sigint_exits_0() {
    let mut gw = Gateway::start();
    assert_eq!(gw.admin().get("/apis").status, 200);
    e2e::util::signal(gw.pid().expect("pid"), libc::SIGINT);
    let st = gw.wait_exit(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "exit status after SIGINT: {st:?}"
    );
}

/// A configured listener certificate is what clients see, and it verifies.
#[test]
fn configured_listener_certificate() {
    let f = Fixture::with_pki(
        Pki::new(),
        |pki| GatewayOpts {
            listener_cert: Some((pki.path("server-ca.pem"), pki.path("server-ca.key"))),
            ..GatewayOpts::default()
        },
        |pki| BackendOpts {
            cert: pki.path("server.pem"),
            key: pki.path("server.key"),
            client_ca: None,
            ticket_key: None,
        },
    );
    let client = TlsClient::verifying(f.gw.listen, &f.pki.path("ca.pem"));
    let mut c = client
        .connect()
        .expect("handshake verifying the gateway against the private CA");
    echo(&c.get("/orders/1"));
    let want = boring::x509::X509::from_pem(&f.pki.read("server-ca.pem"))
        .expect("pem")
        .to_der()
        .expect("der");
    assert_eq!(c.peer_cert_der(), want);
}
