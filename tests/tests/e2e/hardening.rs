//! Hostile clients against the data plane, over real TLS with raw request bytes: path
//! traversal, RFC 9112 framing, error answers that reach the client, slow and idle
//! clients, and the connection, body and per-backend limits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::http::{assert_error_shape, TlsConn};
use e2e::metrics::sum;
use e2e::util::free_port;
use e2e::*;

/// Requests that reached the forwarding stage (every one looks the pool up once).
fn forwarded(f: &Fixture) -> f64 {
    sum(&f.gw.metrics(), "edgegw_upstream_pool_total", &[])
}

/// Sends `raw` on a new connection; returns the response and the connection.
fn exchange(f: &Fixture, raw: &[u8]) -> (Response, TlsConn) {
    let mut c = f.client.connect().expect("connect");
    c.write_all(raw).expect("write");
    let r = c.read_response(false).expect("a response");
    (r, c)
}

/// Whether the gateway closes `c` (EOF with nothing more sent) within the read timeout.
fn closes(mut c: TlsConn) -> bool {
    c.read_to_end_lossy().is_empty()
}

#[test]
fn traversal_forms_never_leave_the_api() {
    let f = Fixture::standard();
    // (target, Some(path the backend sees) | None = 400)
    let cases: &[(&str, Option<&str>)] = &[
        ("/orders/../secret", None),
        ("/orders/%2e%2e/secret", None),
        ("/orders/%2E%2E/secret", None),
        ("/orders/.%2e/secret", None),
        ("/orders/..%2fsecret", None),
        ("/orders/..%2Fsecret", None),
        ("/orders/%2e%2e%2fsecret", None),
        ("/orders/..%5csecret", None),
        ("/orders/..\\secret", None),
        ("/orders/../../etc/passwd", None),
        ("/orders/a/../../secret", None),
        ("/../orders/1", None),
        ("/orders/%zz", None),
        ("/orders/a/../b", Some("/base/b")),
        ("/orders/./c", Some("/base/c")),
        ("/orders/%7euser/%41", Some("/base/~user/A")),
        ("/orders/x%2fy", Some("/base/x%2Fy")),
        ("/orders/%252e%252e/z", Some("/base/%252e%252e/z")),
        ("/orders/q?next=../../x", Some("/base/q?next=../../x")),
        ("/x/../orders/7", Some("/base/7")),
    ];
    for (target, want) in cases {
        let before = forwarded(&f);
        let raw = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let (r, _) = exchange(&f, raw.as_bytes());
        match want {
            Some(path) => {
                let e = echo(&r);
                assert_eq!(e["path"], *path, "{target}");
            }
            None => {
                assert_error(&r, 400, "BadRequest");
                assert_eq!(forwarded(&f), before, "{target} reached the backend stage");
            }
        }
    }
    // Absolute form: the authority stands for Host; the path is normalised the same way.
    let (r, _) = exchange(
        &f,
        b"GET https://localhost/orders/a/./b HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(echo(&r)["path"], "/base/a/b");
    let (r, _) = exchange(
        &f,
        b"GET https://localhost/orders/../x HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_error(&r, 400, "BadRequest");
}

/// RFC 9112 §6.3 and RFC 9110: each refused with its status, the connection closed, and
/// nothing forwarded.
#[test]
fn framing_table_is_refused_before_the_backend() {
    let f = Fixture::standard();
    let h = "POST /orders/1 HTTP/1.1\r\nHost: localhost\r\n";
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
            "CL+TE",
        ),
        (
            format!("{h}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            400,
            "two CL",
        ),
        (format!("{h}Content-Length: +5\r\n\r\nhello"), 400, "CL +5"),
        (
            format!("{h}Content-Length: 5, 5\r\n\r\nhello"),
            400,
            "CL list",
        ),
        (
            format!("{h}Content-Length: 0x5\r\n\r\nhello"),
            400,
            "CL hex",
        ),
        (
            format!("{h}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
            400,
            "TE not ending in chunked",
        ),
        (
            format!("{h}Transfer-Encoding: gzip\r\n\r\n"),
            400,
            "TE gzip only",
        ),
        (
            format!("{h}Transfer-Encoding: xchunked\r\n\r\n"),
            400,
            "obfuscated TE",
        ),
        (
            format!("{h}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            400,
            "chunked twice",
        ),
        (
            format!("{h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            501,
            "gzip, chunked",
        ),
        (
            format!("{h}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
            400,
            "space before colon",
        ),
        (
            format!("{h}X-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n"),
            400,
            "obs-fold",
        ),
        (
            format!("{h}X-A: a\0b\r\nContent-Length: 0\r\n\r\n"),
            400,
            "NUL in value",
        ),
        (
            format!("{h}X-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
            400,
            "CR in value",
        ),
        (
            format!("{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            400,
            "invalid chunk size",
        ),
        (
            format!("{h}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n"),
            400,
            "overflowing chunk size",
        ),
        (
            format!("{h}Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n"),
            400,
            "garbage after chunk size",
        ),
        ("GET /orders/1 HTTP/1.1\r\n\r\n".to_string(), 400, "no Host"),
        (
            "GET /orders/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_string(),
            400,
            "two Host",
        ),
    ];
    for (raw, status, what) in &cases {
        let before = forwarded(&f);
        let (r, c) = exchange(&f, raw.as_bytes());
        assert_eq!(r.status, *status, "{what}: {} {}", r.status, r.text());
        assert_error_shape(&r.json());
        assert!(
            closes(c),
            "{what}: the connection should close after the refusal"
        );
        assert_eq!(forwarded(&f), before, "{what}: reached the backend stage");
    }
    // HTTP/1.0 needs no Host; bare LF line ends in the head are accepted (rewritten as CRLF).
    let (r, _) = exchange(&f, b"GET /orders/10 HTTP/1.0\r\n\r\n");
    assert_eq!(echo(&r)["path"], "/base/10");
    let (r, _) = exchange(
        &f,
        b"GET /orders/lf HTTP/1.1\nHost: localhost\nConnection: close\n\n",
    );
    assert_eq!(echo(&r)["path"], "/base/lf");
}

#[test]
fn a_chunked_body_broken_mid_stream_aborts_the_upstream_connection() {
    // One worker: one pool, so "the next request reuses the connection" is well defined.
    let f = limited(&[]);
    let mut c = f.client.connect().expect("connect");
    // A good first chunk (so the head goes on), then garbage.
    c.write_all(b"POST /orders/up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n")
        .expect("write");
    let r = c.read_response(false).expect("a response");
    assert_error(&r, 400, "BadRequest");
    // The connection that carried the broken body was dropped, not pooled: the next
    // request opens a new one (its echo names another backend connection number).
    let first = echo(&f.client.get("/orders/a"))["connection"].clone();
    let second = echo(&f.client.get("/orders/b"))["connection"].clone();
    assert_eq!(
        first, second,
        "two sequential requests share one pooled connection"
    );
    let misses = |f: &Fixture| {
        sum(
            &f.gw.metrics(),
            "edgegw_upstream_pool_total",
            &[("result", "miss")],
        )
    };
    let before = misses(&f);
    let mut c = f.client.connect().expect("connect");
    c.write_all(b"POST /orders/up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nhelloXX")
        .expect("write");
    let r = c.read_response(false).expect("a response");
    assert_error(&r, 400, "BadRequest");
    assert_eq!(
        misses(&f),
        before,
        "the broken request used the pooled connection"
    );
    let after = echo(&f.client.get("/orders/c"))["connection"].clone();
    assert_ne!(
        after, first,
        "the connection that carried a broken body was pooled again"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let f = Fixture::standard();
    let mut c = f.client.connect().expect("connect");
    let mut raw = Vec::new();
    for i in 0..5 {
        raw.extend_from_slice(
            format!(
                "GET /orders/p{i}?delay_ms={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
                50 - i * 10
            )
            .as_bytes(),
        );
    }
    c.write_all(&raw).expect("write");
    for i in 0..5 {
        let r = c.read_response(false).expect("response");
        let path = echo(&r)["path"].as_str().unwrap_or_default().to_owned();
        assert!(
            path.starts_with(&format!("/base/p{i}?")),
            "answer {i} was for {path}"
        );
    }
}

/// A 70 KB head gets its 431 in curl: the gateway reads and discards the rest before it
/// closes, so the kernel does not answer the unread bytes with a reset.
#[test]
fn a_70kb_header_gets_431_in_curl() {
    let f = Fixture::standard();
    let big = format!("X-Big: {}", "a".repeat(70 * 1024));
    for _ in 0..5 {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                "-H",
                &big,
            ])
            .arg(format!("https://localhost:{}/orders/1", f.gw.listen.port()))
            .output()
            .expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            code,
            "431",
            "curl exit {:?}, stderr {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn error_bodies_carry_a_request_id_and_no_internals() {
    let f = Fixture::standard();
    // A backend on a closed port.
    let port = free_port();
    f.admin.ok(
        f.admin.put_backend(
            "dead",
            &format!("https://127.0.0.1:{port}/x"),
            false,
            false,
            None,
        ),
        "put backend",
    );
    f.admin
        .ok(f.admin.put_api("dead", "/dead", "dead"), "put api");
    let r = f.client.get("/dead/1");
    let v = assert_error(&r, 502, "BackendConnectionFailure");
    let text = r.text();
    for leak in [
        "127.0.0.1",
        &port.to_string(),
        "os error",
        "refused",
        "dead",
    ] {
        assert!(
            !text.contains(leak),
            "the error body shows {leak:?}: {text}"
        );
    }
    let id = v["error"]["requestId"]
        .as_str()
        .expect("requestId")
        .to_owned();
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    // Operators get the detail by request id, behind the admin token.
    let d = f.admin.get(&format!("/requests/{id}"));
    assert_eq!(d.status, 200, "{}", d.text());
    let d = d.json();
    assert_eq!(d["requestId"], id);
    assert_eq!(d["code"], "BackendConnectionFailure");
    assert_eq!(d["backend"], "dead");
    assert!(
        d["detail"]
            .as_str()
            .unwrap_or("")
            .contains(&port.to_string()),
        "{d}"
    );
    let anon = f.gw.admin_with_token(None).get(&format!("/requests/{id}"));
    assert_eq!(anon.status, 401);
    let missing = f.admin.get("/requests/no-such-id");
    assert_eq!(missing.status, 404, "{}", missing.text());
    // A client's own X-Request-Id is kept and finds the detail too.
    let r = f
        .client
        .request(Request::get("/nowhere").header("X-Request-Id", "client-chosen-1"))
        .expect("request");
    assert_eq!(
        assert_error(&r, 404, "NotFound")["error"]["requestId"],
        "client-chosen-1"
    );
    assert_eq!(
        f.admin.get("/requests/client-chosen-1").json()["code"],
        "NotFound"
    );
}

fn limited(extra: &[(&str, &str, &str)]) -> Fixture {
    let mut opts = GatewayOpts {
        workers: 1,
        connect_timeout: "1s".into(),
        ..GatewayOpts::default()
    };
    for (section, key, value) in extra {
        opts = opts.set(section, key, value);
    }
    Fixture::with(opts, |pki| BackendOpts {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: None,
        ticket_key: None,
    })
}

#[test]
fn request_body_size_limit_is_413() {
    let f = limited(&[("listener", "max_request_body_bytes", "1000")]);
    let before = forwarded(&f);
    let raw = "POST /orders/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1001\r\n\r\n";
    let (r, c) = exchange(&f, raw.as_bytes());
    assert_error(&r, 413, "PayloadTooLarge");
    assert!(closes(c));
    assert_eq!(forwarded(&f), before);
    // A chunked body that grows past the limit is cut when it does.
    let mut c = f.client.connect().expect("connect");
    let r = c
        .send(&Request::new("POST", "/orders/1").chunked(vec![vec![b'a'; 600], vec![b'b'; 600]]))
        .expect("response");
    assert_error(&r, 413, "PayloadTooLarge");
    // At the limit it passes.
    let r = f
        .client
        .connect()
        .expect("connect")
        .send(&Request::new("POST", "/orders/ok").body(vec![b'x'; 1000]));
    assert_eq!(echo(&r.expect("response"))["bodyLength"], 1000);
    let m = f.gw.metrics();
    assert!(
        sum(
            &m,
            "edgegw_limits_reached_total",
            &[("limit", "request_body")]
        ) >= 1.0,
        "{m}"
    );
}

/// A body trickled in is cut by the minimum rate, long before request_timeout.
#[test]
fn a_slow_request_body_is_cut() {
    let f = limited(&[
        ("listener", "body_timeout", "\"1s\""),
        ("listener", "body_min_rate", "1000"),
    ]);
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut c = f.client.connect().expect("connect");
        c.write_all(
            b"POST /orders/slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
        )
        .expect("head");
        conns.push(c);
    }
    let started = Instant::now();
    let mut answers = Vec::new();
    // One byte every 300 ms from each: far below 1000 B/s.
    while answers.len() < conns.len() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(300));
        for c in conns.iter_mut() {
            let _ = c.stream.write_all(b"x").and_then(|_| c.stream.flush());
        }
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    for mut c in conns {
        answers.push(
            c.read_response(false)
                .expect("an answer to the slow body")
                .status,
        );
    }
    assert!(answers.iter().all(|s| *s == 408), "{answers:?}");
    let m = f.gw.metrics();
    assert!(
        sum(&m, "edgegw_downstream_timeouts_total", &[("phase", "body")]) >= 5.0,
        "{m}"
    );
    // A body sent at a normal pace passes.
    let r = f
        .client
        .connect()
        .expect("connect")
        .send(&Request::new("POST", "/orders/ok").body(vec![b'x'; 50_000]));
    assert_eq!(echo(&r.expect("response"))["bodyLength"], 50_000);
}

/// Hundreds of slow-header and never-TLS connections are cut by the header and handshake
/// timeouts while a good client keeps being answered.
#[test]
fn slow_and_silent_clients_are_cut_and_a_good_client_is_served() {
    let f = limited(&[
        ("listener", "handshake_timeout", "\"2s\""),
        ("listener", "header_timeout", "\"2s\""),
    ]);
    let addr = f.gw.listen;
    let silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr).expect("tcp connect"))
        .collect();
    let mut slow: Vec<TlsConn> = (0..100)
        .map(|_| f.client.connect().expect("tls connect"))
        .collect();
    for c in slow.iter_mut() {
        c.write_all(b"GET /orders/1 HTTP/1.1\r\n")
            .expect("first line");
    }
    let started = Instant::now();
    let mut good = 0;
    while started.elapsed() < Duration::from_secs(5) {
        for c in slow.iter_mut() {
            let _ = c.stream.write_all(b"X").and_then(|_| c.stream.flush());
        }
        echo(&f.client.get("/orders/good"));
        good += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(good >= 5);
    // Every silent TCP connection is closed by the gateway (EOF or reset; a read timeout
    // would mean it is still open: `Err(WouldBlock)` fails below).
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent connection was not closed: {other:?}"),
        }
    }
    // Every slow-header connection got 408 and was closed.
    for mut c in slow {
        let r = c.read_response(false).expect("a 408 for a slow head");
        assert_eq!(r.status, 408, "{}", r.text());
        assert!(closes(c));
    }
    let m = f.gw.metrics();
    assert!(
        sum(
            &m,
            "edgegw_downstream_timeouts_total",
            &[("phase", "handshake")]
        ) >= 300.0,
        "{m}"
    );
    assert!(
        sum(
            &m,
            "edgegw_downstream_timeouts_total",
            &[("phase", "header")]
        ) >= 100.0,
        "{m}"
    );
}

/// `server.max_connections`: beyond it, a new connection waits in the accept queue (its
/// handshake does not complete) until one closes.
#[test]
fn max_connections_makes_new_connections_wait() {
    let f = limited(&[("server", "max_connections", "2")]);
    let mut a = f.client.connect().expect("first");
    let b = f.client.connect().expect("second");
    echo(&a.get("/orders/a"));
    // The third TCP connection is made (the kernel queues it) but nobody accepts it.
    let third = std::thread::spawn({
        let client = f.gw.client();
        move || {
            let started = Instant::now();
            let mut c = client.connect().expect("third");
            let r = c.get("/orders/c");
            (started.elapsed(), r.status)
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !third.is_finished(),
        "a third connection was served beyond max_connections = 2"
    );
    drop(b);
    let (waited, status) = third.join().expect("third thread");
    assert_eq!(status, 200);
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    let m = f.gw.metrics();
    assert!(
        sum(
            &m,
            "edgegw_limits_reached_total",
            &[("limit", "connections")]
        ) >= 1.0,
        "{m}"
    );
}

/// `upstream.max_connections_per_backend`: a request beyond it waits for a slot, and gets
/// 504 BackendTimeout if none frees within connect_timeout.
#[test]
fn backend_connection_limit_queues_then_504() {
    let f = limited(&[("upstream", "max_connections_per_backend", "1")]);
    let slow = std::thread::spawn({
        let client = f.gw.client();
        move || client.get("/orders/slow?delay_ms=3000").status
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = f.client.get("/orders/second");
    assert_error(&r, 504, "BackendTimeout");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.join().expect("slow"), 200);
    // With the slot free again, requests pass.
    echo(&f.client.get("/orders/after"));
    // A short wait for the slot succeeds.
    let slow = std::thread::spawn({
        let client = f.gw.client();
        move || client.get("/orders/slow?delay_ms=300").status
    });
    std::thread::sleep(Duration::from_millis(100));
    echo(&f.client.get("/orders/queued"));
    assert_eq!(slow.join().expect("slow"), 200);
    let m = f.gw.metrics();
    assert!(
        sum(
            &m,
            "edgegw_limits_reached_total",
            &[("limit", "backend_connections")]
        ) >= 2.0,
        "{m}"
    );
}

/// The gateway's resident memory, from /proc.
fn rss_bytes(f: &Fixture) -> u64 {
    let pid = f.gw.pid().expect("gateway running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// 10 MB and 100 MB bodies stream both ways: the gateway never holds one whole (its
/// resident memory grows by far less than the body; a generous bound, not a measurement).
#[test]
fn large_bodies_stream_with_flat_memory() {
    let f = Fixture::standard();
    echo(&f.client.get("/orders/warm"));
    let before = rss_bytes(&f);
    for size in [10_000_000usize, 100_000_000] {
        // Upload, Content-Length, written in 1 MB pieces.
        let mut c = f.client.connect().expect("connect");
        let head = format!(
            "PUT /orders/big HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n\r\n"
        );
        c.write_all(head.as_bytes()).expect("head");
        let piece = vec![b'u'; 1_000_000];
        for _ in 0..size / piece.len() {
            c.write_all(&piece).expect("body");
        }
        assert_eq!(
            echo(&c.read_response(false).expect("response"))["bodyLength"],
            size
        );
        // Download: the backend streams `size` bytes.
        let r = f.client.get(&format!("/orders/big?bytes={size}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), size);
        let grown = rss_bytes(&f).saturating_sub(before);
        assert!(
            grown < 48_000_000,
            "the gateway's RSS grew by {grown} bytes streaming {size}-byte bodies"
        );
    }
}
