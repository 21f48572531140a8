//! A misbehaving TLS backend for the upstream-fault tests, in the test process itself (std
//! threads, BoringSSL through `boring`): it listens on a free 127.0.0.1 port, counts the TCP
//! connections it accepts and the TLS handshakes it completes, and answers each request the
//! way its current [`Mode`] says. The mode can be switched at any time; it is read when a
//! connection is accepted ([`Mode::NoTls`]) and when a request has arrived (every other mode).
//!
//! Every normal answer is `200` with `Content-Length` and keep-alive, its JSON body naming the
//! backend connection that carried it (`{"connection": N, "request": M, "target": ...}`), so a
//! test can tell a pooled connection from a new one without looking at the gateway.
//!
//! Each connection gets one thread; reads time out every 200 ms to check for shutdown, so
//! dropping the [`FaultBackend`] ends them all.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boring::ssl::{
    select_next_proto, AlpnError, HandshakeError, SslAcceptor, SslFiletype, SslMethod, SslStream,
    SslVerifyMode, SslVersion,
};

/// How long a blocking read waits before the thread looks at the stop flag again.
const POLL: Duration = Duration::from_millis(200);

/// What the backend does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `200`, `Content-Length`, keep-alive.
    Normal,
    /// Reads the request, then resets the connection (RST via `SO_LINGER` 0) without a byte.
    ResetBeforeAnswer,
    /// Sends the head (`Content-Length: 1000`) and 100 bytes of the body, waits 200 ms (so
    /// the head has gone on to the client), then resets the connection.
    ResetMidBody,
    /// A normal answer (no `Connection: close`), then closes the connection without saying
    /// so: a connection pooled after it is dead.
    CloseAfterResponse,
    /// Bytes that are not HTTP, then keeps the connection open.
    Garbage,
    /// Reads the request and never answers (the connection stays open until the peer closes it).
    Stall,
    /// New connections: accepts TCP, reads whatever comes and never speaks TLS. (Requests on
    /// connections that finished their handshake before are answered normally.)
    NoTls,
    /// An answer whose framing is ambiguous or broken; the connection stays open afterwards
    /// (a gateway that pooled it would send the next request on it).
    Framing(BadFraming),
}

/// Response framings a proxy must not forward (RFC 9112 §6.3, RFC 9110 §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFraming {
    /// `Content-Length` and `Transfer-Encoding: chunked` together.
    ContentLengthAndChunked,
    /// Two `Content-Length` fields with different values.
    TwoContentLengths,
    /// `Content-Length: +5` (not plain digits).
    ContentLengthPlusSign,
    /// `Transfer-Encoding: gzip` (the last coding is not `chunked`).
    TransferEncodingGzip,
    /// `Transfer-Encoding: chunked` whose first chunk-size line is not hex (`zz`).
    InvalidChunkSize,
    /// A first chunk size that overflows 64 bits.
    OverflowingChunkSize,
    /// `Content-Length : 5` (whitespace between the field name and the colon).
    SpaceBeforeColon,
    /// A valid first chunk, then an invalid chunk-size line.
    InvalidSecondChunk,
}

impl BadFraming {
    /// The whole answer, as sent.
    pub fn response(self) -> &'static [u8] {
        match self {
            BadFraming::ContentLengthAndChunked => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            }
            BadFraming::TwoContentLengths => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            }
            BadFraming::ContentLengthPlusSign => {
                b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"
            }
            BadFraming::TransferEncodingGzip => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00"
            }
            BadFraming::InvalidChunkSize => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            }
            BadFraming::OverflowingChunkSize => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"
            }
            BadFraming::SpaceBeforeColon => b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
            BadFraming::InvalidSecondChunk => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"
            }
        }
    }
}

/// Counters, read together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: u64,
    /// TLS handshakes completed.
    pub handshakes: u64,
    /// Request heads read (whatever the answer).
    pub requests: u64,
    /// Connections whose thread still runs (not yet closed by either side).
    pub open: i64,
    /// The most connections open at once so far.
    pub peak_open: i64,
    /// Handshakes in which the client presented a certificate.
    pub client_certificates: u64,
}

struct Shared {
    acceptor: SslAcceptor,
    mode: Mutex<Mode>,
    stop: AtomicBool,
    connections: AtomicU64,
    handshakes: AtomicU64,
    requests: AtomicU64,
    open: AtomicI64,
    peak_open: AtomicI64,
    client_certificates: AtomicU64,
    started: Instant,
    /// What happened, one line per event, for the report of a failed test.
    events: Mutex<Vec<String>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn event(&self, conn: u64, what: impl std::fmt::Display) {
        let at = self.started.elapsed().as_secs_f64();
        let line = format!("{at:8.3}s conn {conn}: {what}");
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

pub struct FaultBackend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultBackend {
    /// Listens on a free 127.0.0.1 port with the PEM certificate chain and key given; asks
    /// for a client certificate and accepts any (the gateway presents its bound one).
    pub fn start(cert: &Path, key: &Path) -> FaultBackend {
        let acceptor = acceptor(cert, key)
            .unwrap_or_else(|e| panic!("fault backend TLS context ({}): {e}", cert.display()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault backend: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fault backend: local_addr");
        let shared = Arc::new(Shared {
            acceptor,
            mode: Mutex::new(Mode::Normal),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            open: AtomicI64::new(0),
            peak_open: AtomicI64::new(0),
            client_certificates: AtomicU64::new(0),
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("fault-backend-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &s))
            .expect("spawn fault backend");
        FaultBackend {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.event(0, format_args!("mode -> {mode:?}"));
        *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            connections: s.connections.load(Ordering::SeqCst),
            handshakes: s.handshakes.load(Ordering::SeqCst),
            requests: s.requests.load(Ordering::SeqCst),
            open: s.open.load(Ordering::SeqCst),
            peak_open: s.peak_open.load(Ordering::SeqCst),
            client_certificates: s.client_certificates.load(Ordering::SeqCst),
        }
    }

    /// Waits until at most `n` connections are open; false on timeout.
    pub fn wait_open_at_most(&self, n: i64, timeout: Duration) -> bool {
        crate::util::wait_for(timeout, || (self.stats().open <= n).then_some(())).is_some()
    }

    /// Waits until `requests` request heads have arrived in all; false on timeout.
    pub fn wait_requests(&self, requests: u64, timeout: Duration) -> bool {
        crate::util::wait_for(timeout, || {
            (self.stats().requests >= requests).then_some(())
        })
        .is_some()
    }

    /// Every event so far, one per line.
    pub fn events(&self) -> String {
        self.shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for FaultBackend {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== fault backend {} ({:?}) events ====\n{}\n==== end fault backend ====",
                self.addr,
                self.stats(),
                self.events()
            );
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<SslAcceptor, boring::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_certificate_chain_file(cert)?;
    b.set_private_key_file(key, SslFiletype::PEM)?;
    b.check_private_key()?;
    b.set_alpn_select_callback(|_, client| {
        select_next_proto(b"\x08http/1.1", client).ok_or(AlpnError::NOACK)
    });
    // mTLS as the gateway's real backends do it: a certificate is asked for, any is taken.
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    Ok(b.build())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for tcp in listener.incoming() {
        if shared.stopped() {
            return;
        }
        let Ok(tcp) = tcp else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_open.fetch_max(open, Ordering::SeqCst);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("fault-conn-{id}"))
            .spawn(move || {
                serve(&s, id, tcp);
                s.open.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            shared.event(id, "could not spawn a thread");
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn serve(shared: &Shared, id: u64, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(POLL));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
    let mode = shared.mode();
    shared.event(id, format_args!("accepted (mode {mode:?})"));
    if mode == Mode::NoTls {
        silent_tcp(shared, id, tcp);
        return;
    }
    let Some(mut tls) = handshake(shared, id, tcp) else {
        return;
    };
    let mut buf = Vec::new();
    let mut seq = 0u64;
    loop {
        let Some(target) = read_request(shared, id, &mut tls, &mut buf) else {
            return;
        };
        seq += 1;
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let mode = shared.mode();
        shared.event(id, format_args!("request #{seq} {target} -> {mode:?}"));
        let written = match mode {
            Mode::Normal | Mode::NoTls => write(&mut tls, &normal_answer(id, seq, &target)),
            Mode::ResetBeforeAnswer => {
                reset(shared, id, tls);
                return;
            }
            Mode::ResetMidBody => {
                let mut head =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
                        .to_vec();
                head.extend_from_slice(&[b'x'; 100]);
                if write(&mut tls, &head).is_ok() {
                    std::thread::sleep(Duration::from_millis(200));
                }
                reset(shared, id, tls);
                return;
            }
            Mode::CloseAfterResponse => {
                let _ = write(&mut tls, &normal_answer(id, seq, &target));
                // No close_notify, no Connection: close: the socket just closes (FIN).
                shared.event(id, "closed after the response");
                return;
            }
            Mode::Garbage => write(&mut tls, b"this is not HTTP at all\r\n\r\n"),
            Mode::Stall => Ok(()),
            Mode::Framing(f) => write(&mut tls, f.response()),
        };
        if let Err(e) = written {
            shared.event(id, format_args!("write failed: {e}"));
            return;
        }
    }
}

/// TCP only: reads and discards what the peer sends (its ClientHello) until it closes.
fn silent_tcp(shared: &Shared, id: u64, mut tcp: TcpStream) {
    let mut buf = [0u8; 4096];
    let mut got = 0usize;
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if is_timeout(&e) && !shared.stopped() => continue,
            Err(_) => break,
        }
    }
    shared.event(
        id,
        format_args!("closed by peer after {got} bytes, no TLS spoken"),
    );
}

fn handshake(shared: &Shared, id: u64, tcp: TcpStream) -> Option<SslStream<TcpStream>> {
    let mut result = shared.acceptor.accept(tcp);
    loop {
        match result {
            Ok(tls) => {
                shared.handshakes.fetch_add(1, Ordering::SeqCst);
                let cert = tls.ssl().peer_certificate().is_some();
                if cert {
                    shared.client_certificates.fetch_add(1, Ordering::SeqCst);
                }
                let resumed = tls.ssl().session_reused();
                shared.event(
                    id,
                    format_args!("handshake done (client certificate {cert}, resumed {resumed})"),
                );
                return Some(tls);
            }
            Err(HandshakeError::WouldBlock(mid)) if !shared.stopped() => {
                result = mid.handshake();
            }
            Err(e) => {
                shared.event(id, format_args!("handshake failed: {e}"));
                return None;
            }
        }
    }
}

/// Reads one request (head, and a `Content-Length` body if any); its target, or `None` when
/// the peer closed, failed or the backend stops.
fn read_request(
    shared: &Shared,
    id: u64,
    tls: &mut SslStream<TcpStream>,
    buf: &mut Vec<u8>,
) -> Option<String> {
    let mut tmp = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        match tls.read(&mut tmp) {
            Ok(0) => {
                shared.event(id, "closed by peer");
                return None;
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if is_timeout(&e) && !shared.stopped() => {}
            Err(e) => {
                shared.event(id, format_args!("read ended: {e}"));
                return None;
            }
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let fields: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body_len: usize = fields
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        match tls.read(&mut tmp) {
            Ok(0) => {
                shared.event(id, "closed by peer in the request body");
                return None;
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if is_timeout(&e) && !shared.stopped() => {}
            Err(e) => {
                shared.event(id, format_args!("read ended in the request body: {e}"));
                return None;
            }
        }
    }
    buf.drain(..head_end + body_len);
    Some(target)
}

fn normal_answer(conn: u64, seq: u64, target: &str) -> Vec<u8> {
    let body =
        serde_json::json!({"connection": conn, "request": seq, "target": target}).to_string();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn write(tls: &mut SslStream<TcpStream>, bytes: &[u8]) -> io::Result<()> {
    tls.write_all(bytes)?;
    tls.flush()
}

/// Closes with a TCP reset: `SO_LINGER` {on, 0 s}, then close.
fn reset(shared: &Shared, id: u64, tls: SslStream<TcpStream>) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this thread owns, with a valid `linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            tls.get_ref().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    shared.event(id, format_args!("reset (setsockopt rc {rc})"));
    drop(tls);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpConn, Request};
    use boring::ssl::SslConnector;

    fn connect(b: &FaultBackend) -> HttpConn<SslStream<TcpStream>> {
        let mut c = SslConnector::builder(SslMethod::tls()).expect("connector");
        c.set_verify(SslVerifyMode::NONE);
        let tcp = TcpStream::connect(b.addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let tls = c.build().connect("localhost", tcp).expect("handshake");
        HttpConn::new(tls, "localhost")
    }

    #[test]
    fn counts_connections_handshakes_and_requests_and_switches_modes() {
        let pki = crate::Pki::new();
        let b = FaultBackend::start(&pki.path("server.pem"), &pki.path("server.key"));
        let mut c = connect(&b);
        for seq in 1..=2 {
            let r = c.send(&Request::get("/a")).expect("normal answer");
            assert_eq!(r.status, 200);
            let v = r.json();
            assert_eq!(
                (v["connection"].as_u64(), v["request"].as_u64()),
                (Some(1), Some(seq))
            );
        }
        b.set_mode(Mode::Framing(BadFraming::TwoContentLengths));
        let r = c.send(&Request::get("/b")).expect("an answer");
        assert_eq!(r.header("content-length"), Some("5"));
        b.set_mode(Mode::Garbage);
        c.write_all(&Request::get("/c").to_bytes("localhost"))
            .expect("send");
        let mut got = [0u8; 64];
        let n = c.stream.read(&mut got).expect("read the garbage");
        assert!(got[..n].starts_with(b"this is not HTTP"), "{:?}", &got[..n]);
        b.set_mode(Mode::NoTls);
        let tcp = TcpStream::connect(b.addr).expect("connect");
        assert!(crate::util::wait_for(Duration::from_secs(5), || {
            (b.stats().connections == 2).then_some(())
        })
        .is_some());
        drop(tcp);
        let s = b.stats();
        assert_eq!((s.handshakes, s.requests), (1, 4), "{s:?}\n{}", b.events());
    }
}
