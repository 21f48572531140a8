//! One client connection: TLS accept, then HTTP/1.1 requests in a keep-alive loop, each routed
//! through the current snapshot and proxied to its backend over a pooled (m)TLS connection.
//! Bodies stream through in both directions; nothing buffers a whole message.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boring::ssl::Ssl;
use monoio::net::TcpStream;

use super::http::{
    self, ByteSink, ByteSource, ChunkedScanner, Framing, HeadError, InBuffer, RequestHead,
    ResponseHead,
};
use super::{access_log, WorkerContext};
use crate::metrics::NO_API;
use crate::snapshot::{push_upstream_path, Target};
use crate::tls::client::{self, TlsFailure};
use crate::tls::stream::TlsStream;
use crate::upstream::{self, ConnectError, UpstreamConn};

/// The client side of one connection.
struct Downstream {
    tls: TlsStream,
    buf: InBuffer,
    peer_ip: String,
    /// Memory reused from request to request: the backend's response head, and the
    /// rewritten heads sent either way.
    response: ResponseHead,
    upstream_head: Vec<u8>,
    response_head: Vec<u8>,
}

/// An error answered to the client as contract JSON.
#[derive(Debug)]
struct ProxyError {
    status: u16,
    code: &'static str,
    message: String,
    reason: Option<TlsFailure>,
    /// The request body was not read to its end: the connection cannot carry another request.
    close: bool,
}

impl ProxyError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            reason: None,
            close: false,
        }
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

/// How a request ended, for the keep-alive decision and metrics.
struct Outcome {
    status: u16,
    keep_alive: bool,
    /// How the backend was reached, when it was.
    upstream: Option<UpstreamUse>,
}

struct UpstreamUse {
    /// The connection came from the pool.
    reused: bool,
    /// For a new TLS connection: whether it resumed an earlier session.
    resumed: Option<bool>,
    /// From sending the request head to receiving the response head.
    duration: Duration,
}

pub async fn serve_connection(ctx: Rc<WorkerContext>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let ssl = match Ssl::new(ctx.acceptor.context()) {
        Ok(ssl) => ssl,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a TLS session");
            return;
        }
    };
    let handshake_started = Instant::now();
    let tls =
        match monoio::time::timeout(ctx.limits.header_read_timeout, TlsStream::accept(tcp, ssl))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "client TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "client TLS handshake timed out");
                return;
            }
        };
    let resumed = tls.ssl().session_reused();
    ctx.metrics
        .downstream_handshake(resumed, handshake_started.elapsed());
    let mut client = Downstream {
        tls,
        buf: InBuffer::new(),
        peer_ip: peer.ip().to_string(),
        response: ResponseHead::default(),
        upstream_head: Vec::new(),
        response_head: Vec::new(),
    };
    let mut head = RequestHead::default();
    loop {
        match read_request_head(&ctx, &mut client, &mut head).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let _ = respond_error(&mut client, &e, false).await;
                ctx.metrics.request(&no_api(), e.status, Duration::ZERO);
                break;
            }
        };
        let outcome = handle_request(&ctx, &mut client, &head).await;
        if !outcome.keep_alive || ctx.draining.get() {
            break;
        }
    }
    client.tls.shutdown().await;
}

fn no_api() -> Arc<str> {
    thread_local!(static NO_API_LABEL: Arc<str> = Arc::from(NO_API));
    NO_API_LABEL.with(Arc::clone)
}

/// Waits for the next request head and parses it into `head`. `Ok(false)`: the client
/// closed, went idle past the timeout, or the worker is draining.
async fn read_request_head(
    ctx: &WorkerContext,
    client: &mut Downstream,
    head: &mut RequestHead,
) -> Result<bool, ProxyError> {
    let mut deadline = None;
    loop {
        if !client.buf.is_empty() {
            match head.parse(client.buf.data()) {
                Ok(Some(len)) => {
                    client.buf.consume(len);
                    return Ok(true);
                }
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    return Err(ProxyError::new(
                        431,
                        "RequestHeaderFieldsTooLarge",
                        format!(
                            "The request head is larger than {} bytes.",
                            http::MAX_HEAD_BYTES
                        ),
                    )
                    .closing())
                }
                Err(HeadError::TooManyHeaders) => {
                    return Err(ProxyError::new(
                        431,
                        "RequestHeaderFieldsTooLarge",
                        format!(
                            "The request has more than {} header fields.",
                            http::MAX_HEADERS
                        ),
                    )
                    .closing())
                }
                Err(HeadError::Malformed) => {
                    return Err(ProxyError::new(
                        400,
                        "BadRequest",
                        "The request is not valid HTTP/1.1.",
                    )
                    .closing())
                }
            }
        }
        let idle = client.buf.is_empty();
        if idle && ctx.draining.get() {
            return Ok(false);
        }
        if idle {
            // Between requests a connection holds no read buffer of its own.
            client.buf.release_if_empty();
        }
        let wait = if idle {
            ctx.limits.idle_timeout
        } else {
            let d =
                *deadline.get_or_insert_with(|| Instant::now() + ctx.limits.header_read_timeout);
            d.saturating_duration_since(Instant::now())
        };
        let fd = client.tls.raw_fd();
        if idle {
            ctx.idle_fds.borrow_mut().insert(fd);
        }
        let read = monoio::time::timeout(wait, client.buf.fill(&mut client.tls)).await;
        if idle {
            ctx.idle_fds.borrow_mut().remove(&fd);
        }
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(false),
            Ok(Ok(_)) => {}
            Err(_) if idle => return Ok(false),
            Err(_) => {
                return Err(ProxyError::new(
                    408,
                    "RequestTimeout",
                    "The request head did not arrive in time.",
                )
                .closing())
            }
        }
    }
}

async fn handle_request(
    ctx: &WorkerContext,
    client: &mut Downstream,
    head: &RequestHead,
) -> Outcome {
    let started = Instant::now();
    let request_id = request_id(ctx, head);
    // A guard, not a clone: no reference-count traffic shared with other cores.
    let snapshot = ctx.snapshot.load();
    let mut api = no_api();
    let mut backend = None;
    let result = route_and_proxy(
        ctx,
        client,
        head,
        &snapshot,
        &request_id,
        &mut api,
        &mut backend,
    )
    .await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            let keep_alive = !e.close;
            let sent = respond_error(client, &e, keep_alive).await.is_ok();
            Outcome {
                status: e.status,
                keep_alive: keep_alive && sent,
                upstream: None,
            }
        }
    };
    let elapsed = started.elapsed();
    ctx.metrics.request(&api, outcome.status, elapsed);
    if let Some(log) = &ctx.access_log {
        log.log(&access_log::Entry {
            request_id: &request_id,
            method: head.method(),
            api: &api,
            backend: backend.as_deref(),
            status: outcome.status,
            duration: elapsed,
            upstream_duration: outcome.upstream.as_ref().map(|u| u.duration),
            upstream_reused: outcome.upstream.as_ref().map(|u| u.reused),
            upstream_resumed: outcome.upstream.as_ref().and_then(|u| u.resumed),
        });
    }
    outcome
}

/// The client's `X-Request-Id` when it sent a sane one, else a new id unique to this process.
fn request_id(ctx: &WorkerContext, head: &RequestHead) -> String {
    let given = head
        .headers()
        .find(|h| h.is("x-request-id"))
        .map(|h| h.value_str());
    match given {
        Some(id) if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) => {
            id.to_owned()
        }
        _ => ctx.next_request_id(),
    }
}

async fn route_and_proxy(
    ctx: &WorkerContext,
    client: &mut Downstream,
    head: &RequestHead,
    snapshot: &crate::snapshot::Snapshot,
    request_id: &str,
    api: &mut Arc<str>,
    backend: &mut Option<Arc<str>>,
) -> Result<Outcome, ProxyError> {
    let tokens = http::connection_tokens(head.headers());
    let client_keep_alive = head.minor_version >= 1 && !http::has_token(&tokens, "close");
    let framing = http::declared_framing(head.headers())
        .map_err(|why| {
            ProxyError::new(
                400,
                "BadRequest",
                format!("Invalid request framing: {why}."),
            )
            .closing()
        })?
        .unwrap_or(Framing::Empty);
    let (path, query) = match head.target().split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (head.target(), None),
    };
    if !path.starts_with('/') {
        let why = "The request target must be a path starting with '/'.";
        return Err(ProxyError::new(400, "BadRequest", why).closing());
    }
    let Some((route, rest)) = snapshot.route(path) else {
        let mut e = ProxyError::new(404, "NotFound", format!("No API matches the path {path}."));
        e.close = framing != Framing::Empty || !client_keep_alive;
        return Err(e);
    };
    *api = route.api_id.clone();
    *backend = Some(route.target.backend_id.clone());
    let expects_continue = head
        .headers()
        .any(|h| h.is("expect") && h.value_str().eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        // Answer it here: the body must reach us before the backend can see it.
        if client
            .tls
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
        {
            return Ok(Outcome {
                status: 499,
                keep_alive: false,
                upstream: None,
            });
        }
    }
    let target = &route.target;
    let forwarding = Forwarding {
        client_ip: &client.peer_ip,
        request_id,
        tokens: &tokens,
    };
    let mut upstream_head = std::mem::take(&mut client.upstream_head);
    build_upstream_head(
        &mut upstream_head,
        head,
        target,
        rest,
        query,
        &forwarding,
        framing,
    );
    let result = proxy(
        ctx,
        client,
        head,
        target,
        &upstream_head,
        framing,
        client_keep_alive,
    )
    .await;
    client.upstream_head = upstream_head;
    result
}

/// What the gateway adds to a forwarded request.
#[derive(Clone, Copy)]
struct Forwarding<'a> {
    client_ip: &'a str,
    request_id: &'a str,
    /// Header names listed in the client's `Connection` header (dropped).
    tokens: &'a [&'a str],
}

/// The request head as the backend gets it: rewritten path, backend `Host`, forwarding
/// headers, no hop-by-hop fields.
fn build_upstream_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    target: &Target,
    rest: &str,
    query: Option<&str>,
    forwarding: &Forwarding<'_>,
    framing: Framing,
) {
    let Forwarding {
        client_ip,
        request_id,
        tokens,
    } = *forwarding;
    out.clear();
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    push_upstream_path(out, &target.base_path, rest, query);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    http::push_header(out, "Host", target.authority.as_bytes());
    let mut forwarded_for: Option<&str> = None;
    for h in head.headers() {
        if http::is_hop_by_hop(h, tokens)
            || h.is("host")
            || h.is("x-forwarded-proto")
            || h.is("expect")
            || h.is("x-request-id")
        {
            continue;
        }
        if h.is("x-forwarded-for") {
            forwarded_for = Some(h.value_str());
            continue;
        }
        http::push_header(out, h.name, h.value);
    }
    // X-Forwarded-For: the chain the client sent, then the client's address.
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prev) = forwarded_for.map(str::trim).filter(|p| !p.is_empty()) {
        out.extend_from_slice(prev.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    http::push_header(out, "X-Forwarded-Proto", b"https");
    http::push_header(out, "X-Request-Id", request_id.as_bytes());
    http::push_framing(out, framing);
    out.extend_from_slice(b"\r\n");
}

/// Gets a connection for the target: a pooled one for the same key, else a new one.
async fn upstream_connection(
    ctx: &WorkerContext,
    target: &Target,
    fresh_only: bool,
) -> Result<UpstreamConn, ProxyError> {
    let endpoint = target.endpoint.as_ref().map_err(|e| {
        ProxyError::new(
            502,
            "BackendConnectionFailure",
            format!("Backend {} cannot be reached: {e}", target.backend_id),
        )
    })?;
    if !fresh_only {
        let pooled = ctx
            .upstreams
            .borrow_mut()
            .checkout(&endpoint.key, |reason| {
                ctx.metrics.pool_eviction(reason);
            });
        ctx.metrics
            .pool_lookup(&target.backend_id, pooled.is_some());
        if let Some(conn) = pooled {
            return Ok(conn);
        }
    }
    let (session, timeout) = {
        let upstreams = ctx.upstreams.borrow();
        (
            upstreams.session_for(&endpoint.key, target),
            upstreams.connect_timeout(),
        )
    };
    let started = Instant::now();
    let offered = session.clone();
    match upstream::connect(target, session, timeout).await {
        Ok(mut conn) => {
            if let Some(resumed) = conn.resumed {
                ctx.metrics
                    .upstream_handshake(&target.backend_id, resumed, started.elapsed());
                if !resumed {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let why = upstream::ResumeMiss::of(offered.as_ref(), now);
                    ctx.metrics
                        .upstream_resumption_miss(&target.backend_id, why.as_str());
                }
            }
            let open = ctx
                .metrics
                .upstream_open(&target.backend_id, &target.certificate_id);
            open.increment(1.0);
            conn.open = Some(upstream::OpenConnection(open));
            Ok(conn)
        }
        Err(ConnectError::Timeout) => Err(ProxyError::new(
            504,
            "BackendTimeout",
            format!(
                "Backend {} did not accept a connection in time.",
                target.backend_id
            ),
        )),
        Err(ConnectError::Unreachable(why)) => Err(ProxyError::new(
            502,
            "BackendConnectionFailure",
            format!("Backend {} cannot be reached: {why}", target.backend_id),
        )),
        Err(ConnectError::Tls(reason, why)) => {
            ctx.upstreams.borrow_mut().forget_session(&endpoint.key);
            Err(tls_error(ctx, target, reason, &why))
        }
    }
}

fn tls_error(ctx: &WorkerContext, target: &Target, reason: TlsFailure, why: &str) -> ProxyError {
    ctx.metrics.upstream_tls_error(&target.backend_id, reason);
    tracing::warn!(backend = %target.backend_id, reason = reason.as_str(), error = why, "backend TLS failed");
    let mut e = ProxyError::new(
        500,
        "BackendTlsError",
        format!(
            "The TLS connection to backend {} failed: {}.",
            target.backend_id,
            reason.as_str()
        ),
    );
    e.reason = Some(reason);
    e
}

async fn proxy(
    ctx: &WorkerContext,
    client: &mut Downstream,
    head: &RequestHead,
    target: &Target,
    upstream_head: &[u8],
    framing: Framing,
    client_keep_alive: bool,
) -> Result<Outcome, ProxyError> {
    let body_pending = framing != Framing::Empty;
    // With the request body still unread, an error leaves the client connection unusable.
    let unless_body_read = |e: ProxyError| ProxyError {
        close: e.close || body_pending,
        ..e
    };
    let send_failed = |e: std::io::Error| {
        let why = format!("Sending to backend {} failed: {e}", target.backend_id);
        ProxyError::new(502, "BackendConnectionFailure", why).closing()
    };
    let mut conn = upstream_connection(ctx, target, false)
        .await
        .map_err(unless_body_read)?;
    let sent_at = Instant::now();
    // A pooled connection the backend closed fails on the first write; nothing has been sent
    // then, so one retry on a fresh connection is safe.
    if let Err(e) = conn.io.send(upstream_head).await {
        if !conn.reused {
            return Err(send_failed(e));
        }
        conn = upstream_connection(ctx, target, true)
            .await
            .map_err(unless_body_read)?;
        conn.io.send(upstream_head).await.map_err(send_failed)?;
    }
    if body_pending {
        forward_body(
            &mut client.buf,
            &mut client.tls,
            &mut conn.io,
            framing,
            ctx.limits.header_read_timeout,
        )
        .await
        .map_err(|e| match e {
            BodyError::Source(why) => ProxyError::new(
                400,
                "BadRequest",
                format!("Reading the request body failed: {why}"),
            )
            .closing(),
            BodyError::Sink(why) => ProxyError::new(
                502,
                "BackendConnectionFailure",
                format!(
                    "Sending the request body to backend {} failed: {why}",
                    target.backend_id
                ),
            )
            .closing(),
        })?;
    }
    let mut response = std::mem::take(&mut client.response);
    read_response_head(ctx, &mut conn, target, &mut response).await?;
    // A TLS 1.3 ticket precedes the response bytes: share it with the other workers before
    // the client sees the answer (and can open a connection that lands on another worker).
    ctx.upstreams.borrow_mut().remember_session(&mut conn);
    let upstream = UpstreamUse {
        reused: conn.reused,
        resumed: if conn.reused { None } else { conn.resumed },
        duration: sent_at.elapsed(),
    };
    let is_head = head.method().eq_ignore_ascii_case("HEAD");
    let status = response.status;
    let response_framing = if is_head || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match http::declared_framing(response.headers()) {
            Ok(f) => f.unwrap_or(Framing::UntilClose),
            Err(why) => {
                return Err(ProxyError::new(
                    502,
                    "BackendProtocolError",
                    format!(
                        "Backend {} sent an invalid response: {why}.",
                        target.backend_id
                    ),
                ))
            }
        }
    };
    let upstream_tokens = http::connection_tokens(response.headers());
    let upstream_reusable = response.minor_version >= 1
        && !http::has_token(&upstream_tokens, "close")
        && response_framing != Framing::UntilClose;
    let keep_alive =
        client_keep_alive && response_framing != Framing::UntilClose && !ctx.draining.get();
    let mut out = std::mem::take(&mut client.response_head);
    out.clear();
    write_status_line(&mut out, status, response.reason());
    for h in response.headers() {
        if !http::is_hop_by_hop(h, &upstream_tokens) {
            http::push_header(&mut out, h.name, h.value);
        }
    }
    if is_head {
        // A HEAD answer keeps the length the GET would have had.
        if let Some(cl) = response.headers().find(|h| h.is("content-length")) {
            http::push_header(&mut out, "Content-Length", cl.value);
        }
    } else {
        http::push_framing(&mut out, response_framing);
    }
    if !keep_alive {
        http::push_header(&mut out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    let sent_head = client.tls.buffer_write(&out).is_ok();
    client.response_head = out;
    drop(upstream_tokens);
    client.response = response;
    let body_result = if !sent_head {
        Err(BodyError::Sink("encrypting the response failed".into()))
    } else if response_framing == Framing::Empty {
        client
            .tls
            .flush_writes()
            .await
            .map_err(|e| BodyError::Sink(e.to_string()))
    } else {
        forward_body(
            &mut conn.buffered,
            &mut conn.io,
            &mut client.tls,
            response_framing,
            ctx.limits.request_timeout,
        )
        .await
    };
    let complete = body_result.is_ok();
    {
        let mut upstreams = ctx.upstreams.borrow_mut();
        upstreams.remember_session(&mut conn);
        if complete && upstream_reusable && conn.buffered.is_empty() {
            let key = conn.key.clone();
            conn.io.arm_read();
            upstreams.pool.checkin(key, conn, Instant::now(), |reason| {
                ctx.metrics.pool_eviction(reason)
            });
        }
    }
    if let Err(e) = body_result {
        tracing::debug!(backend = %target.backend_id, error = ?e, "response body not completed");
    }
    Ok(Outcome {
        status,
        keep_alive: keep_alive && complete,
        upstream: Some(upstream),
    })
}

/// Reads the backend's response head, skipping interim (1xx) responses.
async fn read_response_head(
    ctx: &WorkerContext,
    conn: &mut UpstreamConn,
    target: &Target,
    head: &mut ResponseHead,
) -> Result<(), ProxyError> {
    let deadline = Instant::now() + ctx.limits.request_timeout;
    loop {
        if !conn.buffered.is_empty() {
            match head.parse(conn.buffered.data()) {
                Ok(Some(len)) => {
                    conn.buffered.consume(len);
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue;
                    }
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ProxyError::new(
                        502,
                        "BackendProtocolError",
                        format!(
                            "Backend {} sent an invalid response head ({e:?}).",
                            target.backend_id
                        ),
                    ))
                }
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(wait, conn.buffered.fill(&mut conn.io)).await {
            Err(_) => {
                return Err(ProxyError::new(
                    504,
                    "BackendTimeout",
                    format!(
                        "Backend {} did not answer within {:?}.",
                        target.backend_id, ctx.limits.request_timeout
                    ),
                ))
            }
            Ok(Ok(0)) => {
                return Err(ProxyError::new(
                    502,
                    "BackendConnectionFailure",
                    format!(
                        "Backend {} closed the connection without answering.",
                        target.backend_id
                    ),
                ))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                // With TLS 1.3 the backend judges our certificate after the handshake: its
                // refusal arrives as an alert on the first read.
                let text = e.to_string();
                if target.tls.is_some() && client::names_client_certificate_alert(&text) {
                    let reason = TlsFailure::ClientCertificateRejected;
                    return Err(tls_error(ctx, target, reason, &text));
                }
                return Err(ProxyError::new(
                    502,
                    "BackendConnectionFailure",
                    format!("Reading from backend {} failed: {e}", target.backend_id),
                ));
            }
        }
    }
}

#[derive(Debug)]
enum BodyError {
    /// The side the body comes from failed or ended early.
    Source(String),
    /// The side the body goes to failed.
    Sink(String),
}

/// Streams one message body from `buf`/`source` to `sink`, as it arrives.
async fn forward_body<S: ByteSource, D: ByteSink>(
    buf: &mut InBuffer,
    source: &mut S,
    sink: &mut D,
    framing: Framing,
    read_timeout: Duration,
) -> Result<(), BodyError> {
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut scanner = ChunkedScanner::default();
    loop {
        if buf.is_empty() {
            let n = match monoio::time::timeout(read_timeout, buf.fill(source)).await {
                Err(_) => return Err(BodyError::Source("timed out".into())),
                Ok(Err(e)) => return Err(BodyError::Source(e.to_string())),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return if framing == Framing::UntilClose {
                    Ok(())
                } else {
                    Err(BodyError::Source(
                        "connection closed before the body ended".into(),
                    ))
                };
            }
        }
        let data = buf.data();
        let (take, done) = match framing {
            Framing::Length(_) => {
                let take = (remaining.min(data.len() as u64)) as usize;
                remaining -= take as u64;
                (take, remaining == 0)
            }
            Framing::Chunked => {
                let take = scanner
                    .scan(data)
                    .map_err(|e| BodyError::Source(e.0.into()))?;
                (take, scanner.is_done())
            }
            Framing::UntilClose => (data.len(), false),
            Framing::Empty => (0, true),
        };
        sink.send(&data[..take])
            .await
            .map_err(|e| BodyError::Sink(e.to_string()))?;
        buf.consume(take);
        if done {
            return Ok(());
        }
    }
}

fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The contract's JSON error body.
fn error_body(e: &ProxyError) -> Vec<u8> {
    let details: Vec<serde_json::Value> = e
        .reason
        .map(|r| vec![serde_json::json!({ "reason": r.as_str() })])
        .unwrap_or_default();
    let body = serde_json::json!({
        "error": { "code": e.code, "message": e.message, "details": details }
    });
    body.to_string().into_bytes()
}

async fn respond_error(
    client: &mut Downstream,
    e: &ProxyError,
    keep_alive: bool,
) -> std::io::Result<()> {
    let body = error_body(e);
    let mut out = Vec::with_capacity(256 + body.len());
    write_status_line(&mut out, e.status, reason_phrase(e.status));
    http::push_header(&mut out, "Content-Type", b"application/json");
    http::push_header(
        &mut out,
        "Content-Length",
        body.len().to_string().as_bytes(),
    );
    if !keep_alive {
        http::push_header(&mut out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    client.tls.write_all(&out).await.map_err(Into::into)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_contract_shape() {
        let mut e = ProxyError::new(500, "BackendTlsError", "x");
        e.reason = Some(TlsFailure::UntrustedChain);
        let v: serde_json::Value = serde_json::from_slice(&error_body(&e)).unwrap();
        assert_eq!(v["error"]["code"], "BackendTlsError");
        assert_eq!(v["error"]["details"][0]["reason"], "UntrustedChain");
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(&ProxyError::new(404, "NotFound", "y"))).unwrap();
        assert_eq!(v["error"]["details"], serde_json::json!([]));
    }
}
