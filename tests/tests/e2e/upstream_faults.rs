//! Upstream faults end to end (issue 15): a real edgegw in front of a misbehaving TLS backend
//! ([`e2e::fault_backend`]) that resets mid-response, closes pooled connections without
//! saying so, answers garbage or ambiguous framing, stalls after the handshake, or accepts TCP
//! and never speaks TLS.
//!
//! For each fault: the contract's status and `error.code` (502 `BackendConnectionFailure`,
//! 502 `BackendProtocolError`, 504 `BackendTimeout`) within a generous bound (three times the
//! timeout that applies, never a tight time); the backend connection that carried a broken
//! answer is never used again (the backend sees a new connection for the next request); and
//! once the backend behaves again the next requests succeed, on a pooled connection, with
//! nothing restarted.
//!
//! One worker, so that every request goes through the same pool and "reused" or "new" is
//! decided by the gateway alone.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use e2e::fault_backend::{BadFraming, FaultBackend, Mode};
use e2e::http::{HttpConn, Request, TlsClient};
use e2e::*;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A gateway (one worker, short upstream timeouts) with API `/f` routed to backend `faulty`
/// (the fault backend, client-1 bound, validation off).
struct Rig {
    // Field order = drop order: the gateway first (its stderr is printed on panic), then the
    // backend (its events are printed on panic).
    _gw: Gateway,
    backend: FaultBackend,
    client: TlsClient,
    _pki: Pki,
}

impl Rig {
    fn start() -> Rig {
        Self::start_with_limit(None)
    }

    /// With `upstream.max_connections_per_backend = limit` when given.
    fn start_with_limit(limit: Option<usize>) -> Rig {
        let pki = Pki::new();
        let backend = FaultBackend::start(&pki.path("server.pem"), &pki.path("server.key"));
        let mut gw = Gateway::create(GatewayOpts {
            workers: 1,
            connect_timeout: format!("{}s", CONNECT_TIMEOUT.as_secs()),
            request_timeout: format!("{}s", REQUEST_TIMEOUT.as_secs()),
            ..GatewayOpts::default()
        });
        if let Some(limit) = limit {
            // The harness has no option for it: the key goes into [upstream], after the
            // request_timeout line the harness writes there.
            let path = gw.config_path();
            let cfg = std::fs::read_to_string(&path).expect("read the config");
            let line = format!("request_timeout = \"{}s\"\n", REQUEST_TIMEOUT.as_secs());
            assert!(
                cfg.contains(&line),
                "no [upstream] request_timeout in {cfg}"
            );
            let cfg = cfg.replacen(
                &line,
                &format!("{line}max_connections_per_backend = {limit}\n"),
                1,
            );
            std::fs::write(&path, cfg).expect("write the config");
        }
        gw.start_stopped();
        let admin = gw.admin();
        let r = admin.put_certificate(
            "client-1",
            &pki.p12("client-1", P12_PASSWORD, false),
            P12_PASSWORD,
        );
        assert_eq!(r.status, 201, "upload client-1: {}", r.text());
        let r = admin.put_backend("faulty", &backend.url(), false, false, Some("client-1"));
        assert_eq!(r.status, 201, "put backend: {}", r.text());
        let r = admin.put_api("f", "/f", "faulty");
        assert_eq!(r.status, 201, "put api: {}", r.text());
        let client = gw.client();
        Rig {
            _gw: gw,
            backend,
            client,
            _pki: pki,
        }
    }

    /// One request on a new client connection, and how long it took.
    fn timed(&self, req: Request) -> (Response, Duration) {
        let start = Instant::now();
        let target = req.target.clone();
        let r = self
            .client
            .request(req)
            .unwrap_or_else(|e| panic!("{target} through the gateway: {e}"));
        (r, start.elapsed())
    }

    /// GET `target` on a new client connection: one response read from it (or why none
    /// could be), every byte the gateway sent meanwhile (lossy UTF-8), and how long it took.
    fn exchange(&self, target: &str) -> Exchange {
        let start = Instant::now();
        let tls = self
            .client
            .connect()
            .expect("connect to the gateway")
            .stream;
        let mut c = HttpConn::new(Recorder::new(tls), "localhost");
        let response = c.send(&Request::get(target));
        Exchange {
            response,
            raw: String::from_utf8_lossy(&c.stream.seen).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    /// GET `target` with the backend answering normally: asserts 200 and returns the number
    /// of the backend connection that carried it.
    fn served(&self, target: &str) -> u64 {
        let (r, _) = self.timed(Request::get(target));
        connection_of(&r)
    }

    /// Warms the pool: two requests, the second on the pooled connection of the first.
    /// Returns that connection.
    fn pooled_connection(&self) -> u64 {
        let c1 = self.served("/f/warm-1");
        let c2 = self.served("/f/warm-2");
        assert_eq!(
            c1, c2,
            "precondition: the second request should reuse the pooled connection"
        );
        c1
    }

    /// After a fault on pooled connection `broken`: switches the backend to normal and checks
    /// that the next request goes on a new connection (the broken one was not pooled) and the
    /// one after that reuses it (the pool works again), with nothing restarted.
    fn recovers_without(&self, broken: u64) {
        self.backend.set_mode(Mode::Normal);
        let before = self.backend.stats();
        let fresh = self.served("/f/after-1");
        assert_ne!(
            fresh, broken,
            "the connection that carried the broken answer was used again"
        );
        assert_eq!(
            self.backend.stats().connections,
            before.connections + 1,
            "one new backend connection for the first request after the fault"
        );
        assert_eq!(
            self.served("/f/after-2"),
            fresh,
            "after the fault the pool should reuse connections again"
        );
    }
}

/// What came back for one request on a connection of its own.
struct Exchange {
    response: io::Result<Response>,
    raw: String,
    elapsed: Duration,
}

/// A stream that keeps a copy of every byte read from it.
struct Recorder<S> {
    inner: S,
    seen: Vec<u8>,
}

impl<S> Recorder<S> {
    fn new(inner: S) -> Self {
        Recorder {
            inner,
            seen: Vec::new(),
        }
    }
}

impl<S: Read> Read for Recorder<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<S: Write> Write for Recorder<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The backend connection number from a normal answer.
fn connection_of(r: &Response) -> u64 {
    assert_eq!(
        r.status,
        200,
        "expected the backend's 200, got {} {}",
        r.status,
        r.text()
    );
    r.json()["connection"]
        .as_u64()
        .unwrap_or_else(|| panic!("no connection number in {}", r.text()))
}

/// A read on `c` that waits longer than `limit` fails (instead of the client's 20 s), so that
/// a connection the gateway wrongly keeps open fails its test soon.
fn bound_reads(c: &e2e::http::TlsConn, limit: Duration) {
    c.stream
        .get_ref()
        .set_read_timeout(Some(limit))
        .expect("set the read timeout");
}

/// `elapsed` is below three times `timeout` (a bound, not a measurement).
fn within(elapsed: Duration, timeout: Duration, what: &str) {
    assert!(
        elapsed < timeout * 3,
        "{what}: answered after {elapsed:?}, more than 3 x {timeout:?}"
    );
}

/// A fault answered with an error of the gateway's own on the pooled connection; then the
/// pool recovers without it.
fn fault_on_pooled_connection(mode: Mode, status: u16, code: &str) {
    let rig = Rig::start();
    let pooled = rig.pooled_connection();
    rig.backend.set_mode(mode);
    let x = rig.exchange("/f/fault");
    let what = format!("{mode:?}: expected {status} {code}");
    within(
        x.elapsed,
        REQUEST_TIMEOUT,
        &format!("{what}; got {:?}", x.raw),
    );
    let r = x.response.unwrap_or_else(|e| {
        panic!(
            "{what}; the gateway's answer is not a complete response ({e}): {:?}",
            x.raw
        )
    });
    assert_error(&r, status, code);
    rig.recovers_without(pooled);
}

// ---------------------------------------------------------------- connection faults

#[test]
fn normal_answers_share_one_pooled_connection() {
    let rig = Rig::start();
    let c = rig.pooled_connection();
    for i in 0..3 {
        assert_eq!(rig.served(&format!("/f/{i}")), c);
    }
    let s = rig.backend.stats();
    assert_eq!((s.connections, s.handshakes), (1, 1), "{s:?}");
    assert_eq!(s.client_certificates, 1, "client-1 presented: {s:?}");
}

#[test]
fn reset_before_the_answer_is_502_connection_failure_and_not_retried() {
    let rig = Rig::start();
    let pooled = rig.pooled_connection();
    rig.backend.set_mode(Mode::ResetBeforeAnswer);
    let before = rig.backend.stats();
    // Not idempotent: the backend may have acted on it, so it must not be sent twice.
    let (r, t) = rig.timed(Request::new("POST", "/f/orders").body(r#"{"n":1}"#));
    assert_error(&r, 502, "BackendConnectionFailure");
    within(t, REQUEST_TIMEOUT, "reset before the answer");
    assert_eq!(
        rig.backend.stats().requests,
        before.requests + 1,
        "a POST whose connection was reset must reach the backend exactly once"
    );
    rig.recovers_without(pooled);
}

/// The head has gone to the client when the backend resets: the gateway cannot answer 502
/// any more; it must end the client connection so that the cut is visible (fewer bytes than
/// declared, or a chunked body without its last chunk), never a complete-looking response.
#[test]
fn reset_mid_body_is_cut_short_visibly() {
    let rig = Rig::start();
    let pooled = rig.pooled_connection();
    rig.backend.set_mode(Mode::ResetMidBody);
    truncated_answer(&rig, "reset mid-body");
    rig.recovers_without(pooled);
}

/// Sends one GET on a raw client connection and checks that what comes back is a visibly
/// incomplete 200 followed by the end of the connection (or an error of the gateway's own).
fn truncated_answer(rig: &Rig, what: &str) {
    let mut c = rig.client.connect().expect("connect to the gateway");
    bound_reads(&c, REQUEST_TIMEOUT * 3);
    let start = Instant::now();
    c.write_all(&Request::get("/f/cut").to_bytes("localhost"))
        .expect("send");
    // Until the gateway closes the connection: it must, the answer cannot be completed.
    let raw = c.read_to_end_lossy();
    within(start.elapsed(), REQUEST_TIMEOUT, what);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some(head_end) = text.find("\r\n\r\n") else {
        panic!("{what}: no response head before the connection ended: {text:?}");
    };
    let (head, body) = (&text[..head_end], &raw[head_end + 4..]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line in {head:?}"));
    if status == 502 {
        // An error of the gateway's own is fine too, when it could still give one.
        assert!(
            head.to_ascii_lowercase().contains("application/json"),
            "{head}"
        );
        return;
    }
    assert_eq!(status, 200, "{what}: {text:?}");
    let field = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if let Some(cl) = field("content-length") {
        let declared: usize = cl.parse().expect("numeric content-length");
        assert!(
            body.len() < declared,
            "{what}: the client got all {declared} declared bytes of a body the backend never sent whole: {text:?}"
        );
    } else if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        assert!(
            !text.ends_with("\r\n0\r\n\r\n"),
            "{what}: the cut body was ended with a last chunk (looks complete): {text:?}"
        );
    } else {
        panic!("{what}: a body read until close cannot show the cut: {text:?}");
    }
}

/// A backend that closes each connection after its response (no `Connection: close`): the
/// pooled connection is dead by the next request, which must still succeed, on a new one.
#[test]
fn pooled_connections_the_backend_closed_are_replaced() {
    let rig = Rig::start();
    rig.backend.set_mode(Mode::CloseAfterResponse);
    let mut c = rig.client.connect().expect("connect");
    let mut seen = Vec::new();
    for i in 0..5 {
        let r = c
            .send(&Request::get(&format!("/f/closing-{i}")))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        seen.push(connection_of(&r));
        // Idle in the pool, as a backend's keep-alive timeout would find it.
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut distinct = seen.clone();
    distinct.dedup();
    assert_eq!(distinct, seen, "a closed connection carried a request");
    assert_eq!(rig.backend.stats().connections, 5);
    rig.recovers_without(*seen.last().expect("five requests"));
}

/// The same, back to back: the next request arrives right after the backend closed. A
/// request sent on a pooled connection that turns out closed before any answer byte is safe
/// to send again on a new connection (GET; RFC 9110 §9.2.2), so none may fail.
#[test]
fn pooled_connections_closed_just_before_reuse_do_not_fail_requests() {
    let rig = Rig::start();
    rig.backend.set_mode(Mode::CloseAfterResponse);
    let mut c = rig.client.connect().expect("connect");
    let mut failures = Vec::new();
    for i in 0..30 {
        let r = c
            .send(&Request::get(&format!("/f/b2b-{i}")))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        if r.status != 200 {
            failures.push(format!("request {i}: {} {}", r.status, r.text()));
            if !r.keep_alive() {
                c = rig.client.connect().expect("reconnect");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "GATEWAY BUG (issue 15): {} of 30 GETs failed because the pooled connection they were \
         sent on had just been closed by the backend (the backend never received them; they were \
         safe to send again on a new connection):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A client that sent `Connection: close` gets the connection closed after the answer, an
/// error answer of the gateway's own included (RFC 9112 §9.6: the server MUST close it).
#[test]
fn error_answers_honour_connection_close() {
    let rig = Rig::start();
    let closing = |what: &str| {
        let mut c = rig.client.connect().expect("connect to the gateway");
        bound_reads(&c, REQUEST_TIMEOUT * 3);
        let start = Instant::now();
        c.write_all(
            &Request::get("/f/closing")
                .header("Connection", "close")
                .to_bytes("localhost"),
        )
        .expect("send");
        // Until the gateway closes the connection.
        let raw = c.read_to_end_lossy();
        let elapsed = start.elapsed();
        let text = String::from_utf8_lossy(&raw).into_owned();
        assert!(
            elapsed < REQUEST_TIMEOUT * 3,
            "GATEWAY BUG (issue 15): {what} to a request with `Connection: close`: the \
             connection was still open {elapsed:?} later; the answer was {text:?}"
        );
        HttpConn::new(io::Cursor::new(raw), "localhost")
            .read_response(false)
            .unwrap_or_else(|e| panic!("{what}: not a response ({e}): {text:?}"))
    };
    // The backend's own answer: the connection ends after it.
    connection_of(&closing("a 200"));
    rig.backend.set_mode(Mode::Garbage);
    assert_error(
        &closing("a 502 BackendProtocolError"),
        502,
        "BackendProtocolError",
    );
}

#[test]
fn garbage_instead_of_http_is_502_protocol_error() {
    fault_on_pooled_connection(Mode::Garbage, 502, "BackendProtocolError");
}

#[test]
fn stall_after_the_handshake_is_504_and_the_connection_is_dropped() {
    let rig = Rig::start();
    let pooled = rig.pooled_connection();
    rig.backend.set_mode(Mode::Stall);
    let (r, t) = rig.timed(Request::get("/f/stall"));
    assert_error(&r, 504, "BackendTimeout");
    within(t, REQUEST_TIMEOUT, "stalled backend");
    assert!(
        rig.backend.wait_open_at_most(0, Duration::from_secs(5)),
        "the gateway kept the timed-out connection open: {:?}",
        rig.backend.stats()
    );
    rig.recovers_without(pooled);
}

#[test]
fn tcp_without_tls_is_504_within_the_connect_timeout() {
    let rig = Rig::start();
    rig.backend.set_mode(Mode::NoTls);
    let (r, t) = rig.timed(Request::get("/f/no-tls"));
    assert_error(&r, 504, "BackendTimeout");
    within(t, CONNECT_TIMEOUT, "backend that never speaks TLS");
    let s = rig.backend.stats();
    assert!(
        s.connections >= 1 && s.handshakes == 0 && s.requests == 0,
        "{s:?}"
    );
    assert!(
        rig.backend.wait_open_at_most(0, Duration::from_secs(5)),
        "the gateway kept the silent TCP connection open: {s:?}"
    );
    // No pooled connection to avoid here: the next request makes the first handshake.
    rig.backend.set_mode(Mode::Normal);
    let c = rig.served("/f/after-1");
    assert_eq!(rig.served("/f/after-2"), c);
    assert_eq!(rig.backend.stats().handshakes, 1);
}

/// Requests do not pile up: 20 at once against a stalled backend all end with 504 within
/// the bound, each forwarded exactly once on its own connection, and every one of those
/// connections is closed afterwards.
#[test]
fn twenty_concurrent_requests_to_a_stalled_backend_all_get_504() {
    let rig = Rig::start();
    rig.backend.set_mode(Mode::Stall);
    let results = concurrently(&rig, 20);
    for (i, (r, t)) in results.iter().enumerate() {
        assert_error(r, 504, "BackendTimeout");
        within(*t, REQUEST_TIMEOUT, &format!("concurrent request {i}"));
    }
    let s = rig.backend.stats();
    assert_eq!(
        s.requests, 20,
        "each request forwarded once (a timed-out request is never resent): {s:?}"
    );
    assert!(
        rig.backend.wait_open_at_most(0, Duration::from_secs(5)),
        "connections left open after the timeouts: {:?}",
        rig.backend.stats()
    );
    rig.backend.set_mode(Mode::Normal);
    let c = rig.served("/f/after-1");
    assert_eq!(rig.served("/f/after-2"), c);
}

/// The same against `upstream.max_connections_per_backend = 4`: the backend never has more
/// than 4 connections, only 4 requests reach it, and the 16 beyond the limit get 504 after
/// waiting at most the connect timeout for a free connection.
#[test]
fn requests_beyond_the_per_backend_limit_wait_then_get_504() {
    let rig = Rig::start_with_limit(Some(4));
    rig.backend.set_mode(Mode::Stall);
    let results = concurrently(&rig, 20);
    for (i, (r, t)) in results.iter().enumerate() {
        assert_error(r, 504, "BackendTimeout");
        within(*t, REQUEST_TIMEOUT, &format!("concurrent request {i}"));
    }
    let s = rig.backend.stats();
    assert!(
        s.peak_open <= 4,
        "more than 4 backend connections at once: {s:?}"
    );
    assert_eq!(
        s.requests, 4,
        "only the 4 requests within the limit reach the backend: {s:?}"
    );
    assert!(
        rig.backend.wait_open_at_most(0, Duration::from_secs(5)),
        "connections left open after the timeouts: {:?}",
        rig.backend.stats()
    );
    rig.backend.set_mode(Mode::Normal);
    let c = rig.served("/f/after-1");
    assert_eq!(rig.served("/f/after-2"), c);
}

#[test]
fn twenty_concurrent_requests_to_a_backend_without_tls_all_get_504() {
    let rig = Rig::start();
    rig.backend.set_mode(Mode::NoTls);
    let results = concurrently(&rig, 20);
    for (i, (r, t)) in results.iter().enumerate() {
        assert_error(r, 504, "BackendTimeout");
        within(*t, CONNECT_TIMEOUT, &format!("concurrent request {i}"));
    }
    assert!(
        rig.backend.wait_open_at_most(0, Duration::from_secs(5)),
        "connections left open after the timeouts: {:?}",
        rig.backend.stats()
    );
    rig.backend.set_mode(Mode::Normal);
    let c = rig.served("/f/after-1");
    assert_eq!(rig.served("/f/after-2"), c);
}

/// `n` GETs at once, each on its own client connection; each with its own duration.
fn concurrently(rig: &Rig, n: usize) -> Vec<(Response, Duration)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| s.spawn(move || rig.timed(Request::get(&format!("/f/concurrent-{i}")))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    })
}

// ---------------------------------------------------------------- ambiguous framing

fn bad_framing(f: BadFraming) {
    fault_on_pooled_connection(Mode::Framing(f), 502, "BackendProtocolError");
}

#[test]
fn content_length_with_transfer_encoding_is_502() {
    bad_framing(BadFraming::ContentLengthAndChunked);
}

#[test]
fn two_different_content_lengths_is_502() {
    bad_framing(BadFraming::TwoContentLengths);
}

#[test]
fn content_length_with_a_plus_sign_is_502() {
    bad_framing(BadFraming::ContentLengthPlusSign);
}

#[test]
fn transfer_encoding_not_ending_in_chunked_is_502() {
    bad_framing(BadFraming::TransferEncodingGzip);
}

#[test]
fn invalid_first_chunk_size_is_502() {
    bad_framing(BadFraming::InvalidChunkSize);
}

#[test]
fn overflowing_first_chunk_size_is_502() {
    bad_framing(BadFraming::OverflowingChunkSize);
}

#[test]
fn whitespace_before_the_colon_is_502() {
    bad_framing(BadFraming::SpaceBeforeColon);
}

/// A chunk-size line that goes bad after the head and a first chunk went on to the client:
/// the cut must be visible and the connection never pooled.
#[test]
fn invalid_chunk_size_mid_body_is_cut_short_and_not_pooled() {
    let rig = Rig::start();
    let pooled = rig.pooled_connection();
    rig.backend
        .set_mode(Mode::Framing(BadFraming::InvalidSecondChunk));
    truncated_answer(&rig, "invalid second chunk size");
    rig.recovers_without(pooled);
}
