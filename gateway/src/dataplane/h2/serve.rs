//! One HTTP/2 connection: the `h2` server connection is driven by this task (its accept
//! loop); every stream runs in a task of its own on the same worker, through the proxy's
//! stages (`proxy::request::check`, `route`, the API's client-certificate rule,
//! `forward::send`, `respond::receive`), exactly as an HTTP/1.1 request does. The stream's
//! request is written as an HTTP/1.1 head first (`:authority` becomes `Host`), so every stage
//! and every limit sees the same form; its body goes to the backend as it arrives (with its
//! `content-length`, else chunked), and the backend's answer comes back as HEADERS and DATA
//! frames within the client's flow-control windows (a chunked body decoded, its trailers sent
//! as a trailing HEADERS frame).

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use hyperium_http::{self as http, HeaderMap, HeaderName, HeaderValue, Response};

use super::io::PollTls;
use crate::buffer::{ByteSource, InBuffer};
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::dataplane::http::{self as h1, ChunkPart, ChunkedScanner, Framing, RequestHead};
use crate::dataplane::proxy::caller::Caller;
use crate::dataplane::proxy::respond::{self, Received};
use crate::dataplane::proxy::{
    caller, forward, no_api, record, report, request, route, Request, UpstreamUse,
};
use crate::dataplane::WorkerContext;
use crate::tls::stream::TlsStream;
use crate::upstream::UpstreamConn;

/// HTTP/2 limits, fixed in this release (configuration keys are issue 10's next step):
/// - `SETTINGS_MAX_CONCURRENT_STREAMS`: what NGINX and Envoy use (128 and 100).
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// - `SETTINGS_MAX_HEADER_LIST_SIZE`: the HTTP/1.1 head limit, announced to the client and
///   enforced by h2 as it decodes; the HTTP/1.1 head written from a stream is held to the same
///   limit by the HTTP/1.1 parser (431, as for HTTP/1.1).
const MAX_HEADER_LIST_SIZE: u32 = h1::MAX_HEAD_BYTES as u32;
/// - `SETTINGS_MAX_FRAME_SIZE`: the protocol's minimum (and default), 16 KiB.
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// - Receive windows: 256 KiB per stream, 1 MiB per connection. Capacity is given back as
///   the body is forwarded, so a slow backend slows the client down instead of filling us.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// - Response bytes h2 queues per stream beyond the client's window.
const SEND_BUFFER: usize = 64 * 1024;
/// - Rapid Reset (CVE-2023-44487): streams the client reset before we accepted them, and
///   streams we had to reset for its protocol errors; past either, the connection ends with
///   GOAWAY `ENHANCE_YOUR_CALM` (h2's defaults are 20 and 1024: the first kept, the second
///   tightened). A per-second reset budget (issue 10) is not built yet.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// - The client's connection preface (and SETTINGS) must arrive within
///   `listener.header_timeout` after the TLS handshake, and never later than this.
const PREFACE_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// How often the accept loop looks at draining and idleness.
const TICK: Duration = Duration::from_millis(500);
/// Streams a client may reset on one connection in one second (a fixed window) before the
/// connection is cut with GOAWAY `ENHANCE_YOUR_CALM`. The h2 crate's own bound counts only
/// streams reset before edgegw accepted them; a Rapid Reset paced one reset per round trip
/// passes it, and every such stream costs a backend request. A browser cancelling
/// navigations or a gRPC client cancelling calls stays far below this.
const MAX_CLIENT_RESETS_PER_SECOND: u32 = 100;

/// What every stream of a connection shares.
struct Connection {
    peer_ip: String,
    caller: Option<Rc<Caller>>,
    /// Streams running, and since when none has been.
    active: Cell<usize>,
    idle_since: Cell<Instant>,
    /// Client resets in the current one-second window: its start and the count.
    resets: Cell<(Instant, u32)>,
    /// Set once the client went past `MAX_CLIENT_RESETS_PER_SECOND`.
    too_many_resets: Cell<bool>,
}

impl Connection {
    /// A stream the client reset: counted, and against the connection's reset budget.
    fn client_reset(&self, ctx: &WorkerContext) {
        ctx.metrics.h2_reset("client");
        let now = Instant::now();
        let (start, n) = self.resets.get();
        let (start, n) = if now.duration_since(start) >= Duration::from_secs(1) {
            (now, 1)
        } else {
            (start, n + 1)
        };
        self.resets.set((start, n));
        if n > MAX_CLIENT_RESETS_PER_SECOND {
            self.too_many_resets.set(true);
        }
    }
}

/// Serves one client connection whose ALPN chose `h2`.
pub(in crate::dataplane) async fn serve(
    ctx: Rc<WorkerContext>,
    tls: TlsStream,
    peer_ip: String,
    caller: Option<Rc<Caller>>,
) {
    let io = match PollTls::new(tls) {
        Ok(io) => io,
        Err(e) => {
            tracing::warn!(error = %e, "cannot drive the connection for HTTP/2");
            return;
        }
    };
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_frame_size(MAX_FRAME_SIZE)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    let preface = ctx.limits.header_timeout.min(PREFACE_TIMEOUT_MAX);
    let mut conn = match monoio::time::timeout(preface, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/2 connection preface failed");
            return;
        }
        Err(_) => {
            ctx.metrics.downstream_timeout("header");
            return;
        }
    };
    let shared = Rc::new(Connection {
        peer_ip,
        caller,
        active: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
        resets: Cell::new((Instant::now(), 0)),
        too_many_resets: Cell::new(false),
    });
    let mut closing = false;
    let mut calmed = false;
    loop {
        if shared.too_many_resets.get() && !calmed {
            // GOAWAY ENHANCE_YOUR_CALM now; `accept` then ends with that error (counted
            // below as `enhance_your_calm`) and the connection closes.
            tracing::debug!(peer = %shared.peer_ip, "HTTP/2 client past its stream reset budget");
            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            ctx.metrics.h2_reset("enhance_your_calm");
            calmed = true;
        }
        // `accept` also drives the connection (frames of every stream); dropping it at a
        // tick loses nothing.
        let next = match monoio::time::timeout(TICK, conn.accept()).await {
            Ok(next) => next,
            Err(_) => {
                let idle = shared.active.get() == 0
                    && shared.idle_since.get().elapsed() >= ctx.limits.idle_timeout;
                if !closing && (ctx.draining.get() || idle) {
                    // GOAWAY; streams in flight finish, then `accept` ends.
                    conn.graceful_shutdown();
                    closing = true;
                }
                continue;
            }
        };
        match next {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
                // A GOAWAY with an error that h2 sent for the client's misbehaviour.
                // (The reset budget's own GOAWAY was counted when it was sent.)
                if e.is_go_away() && !e.is_remote() && !calmed {
                    match e.reason() {
                        Some(Reason::ENHANCE_YOUR_CALM) => {
                            ctx.metrics.h2_reset("enhance_your_calm")
                        }
                        Some(Reason::NO_ERROR) | None => {}
                        Some(_) => ctx.metrics.h2_reset("connection_error"),
                    }
                }
                break;
            }
            Some(Ok((request, respond))) => {
                shared.active.set(shared.active.get() + 1);
                ctx.metrics.h2_stream(true);
                let (ctx, shared) = (ctx.clone(), shared.clone());
                monoio::spawn(async move {
                    stream(&ctx, &shared, request, respond).await;
                    ctx.metrics.h2_stream(false);
                    shared.active.set(shared.active.get() - 1);
                    shared.idle_since.set(Instant::now());
                });
            }
        }
    }
}

/// One stream: checked, routed and proxied; counted and logged like an HTTP/1.1 request.
async fn stream(
    ctx: &WorkerContext,
    conn: &Connection,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let head = match http1_head(&parts, body.is_end_stream()) {
        Ok(head) => head,
        Err(e) => {
            let id = ctx.next_request_id();
            report(ctx, &e, &id, parts.method.as_str(), None, None);
            send_error(&mut respond, &e, &id);
            ctx.metrics
                .request(&no_api(), e.status(), started.elapsed());
            return;
        }
    };
    let mut req = Request::new(ctx, &head);
    let (status, upstream, error) = match proxy(ctx, conn, &mut req, body, &mut respond).await {
        Ok((status, upstream)) => (status, upstream, None),
        Err(e) => {
            let api = (req.api.as_ref() != crate::metrics::NO_API).then_some(&*req.api);
            report(ctx, &e, &req.id, head.method(), api, req.backend.as_deref());
            send_error(&mut respond, &e, &req.id);
            (e.status(), None, Some(e.kind.mapping().label))
        }
    };
    record(
        ctx,
        &req,
        status,
        started.elapsed(),
        upstream.as_ref(),
        error,
    );
}

/// The stream's request as an HTTP/1.1 head: `:method`, the path, `Host` from `:authority`
/// (else the `host` field), the other fields (the `cookie` fields joined into one, RFC 9113
/// §8.2.3), and the body's framing: its `content-length`, else chunked when a body follows.
/// Parsed back with the HTTP/1.1 parser, so its limits (431) and checks apply as they are.
pub(super) fn http1_head(
    parts: &http::request::Parts,
    end_of_stream: bool,
) -> Result<RequestHead, ProxyError> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority().map(|a| a.as_str());
    if let Some(authority) = authority {
        h1::push_header(&mut out, "Host", authority.as_bytes());
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        if name == http::header::HOST && authority.is_some() {
            continue;
        }
        if name == http::header::COOKIE {
            cookies.push(value.as_bytes());
            continue;
        }
        // h2 has refused connection-specific fields already; `te: trailers` is dropped with
        // the other hop-by-hop fields when the backend's head is written.
        h1::push_header(&mut out, name.as_str(), value.as_bytes());
    }
    if !cookies.is_empty() {
        h1::push_header(&mut out, "Cookie", &cookies.join(&b"; "[..]));
    }
    if !end_of_stream && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        h1::push_header(&mut out, "Transfer-Encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
    let mut head = RequestHead::default();
    match head.parse(&out) {
        Ok(Some(_)) => Ok(head),
        Ok(None) => Err(request::head_error(h1::HeadError::Malformed)),
        Err(e) => Err(request::head_error(e)),
    }
}

/// The stages in order (`proxy::proxy` for HTTP/1.1); the answer's status and how the
/// backend was reached.
async fn proxy(
    ctx: &WorkerContext,
    client: &Connection,
    req: &mut Request<'_>,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
) -> Result<(u16, Option<UpstreamUse>), ProxyError> {
    req.checked = request::check(req.head, &ctx.limits)?;
    let snapshot = ctx.snapshot.load();
    let routed = route::route(&snapshot, req)?;
    if let Some(rule) = &routed.route.client_rule {
        caller::check(rule, client.caller.as_deref(), req)?;
    }
    let target = &routed.route.target;
    let forwarded = client
        .caller
        .as_deref()
        .filter(|_| ctx.callers.forward)
        .map(|c| c.forwarded.as_str());
    let mut upstream_head = Vec::new();
    route::build_upstream_head(&mut upstream_head, req, &routed, &client.peer_ip, forwarded);
    let mut source = StreamBody::new(body, req.checked.framing == Framing::Chunked);
    let mut buf = InBuffer::new();
    let mut response = h1::ResponseHead::default();
    // As for HTTP/1.1 (`proxy::send_and_relay`): a replayable request that met a pooled
    // connection the backend had just closed goes once more, on a new one.
    let mut retried = false;
    let received = loop {
        let sent = forward::send(
            ctx,
            &mut buf,
            &mut source,
            req,
            target,
            &upstream_head,
            retried,
        )
        .await?;
        match respond::receive(ctx, &mut response, req, target, sent).await {
            Err(e)
                if !retried
                    && e.stale_connection
                    && request::replayable(req.head, &req.checked) =>
            {
                tracing::debug!(request_id = %req.id, detail = %e.detail, "pooled connection was closed by the backend; sending again on a new one");
                retried = true;
            }
            result => break result?,
        }
    };
    let Received {
        mut conn,
        slot,
        upstream,
        framing,
        upstream_reusable,
    } = received;
    let is_head = req.head.method().eq_ignore_ascii_case("HEAD");
    let head = response_head(&response, is_head, framing).map_err(|why| {
        ProxyError::new(
            ErrorKind::InvalidResponse,
            format!(
                "Backend {} sent a response HTTP/2 cannot carry: {why}.",
                target.backend_id
            ),
        )
    })?;
    let status = response.status;
    // A stream the client reset while the backend answered (Rapid Reset paced to pass h2's
    // pending-accept bound looks like this): counted, and nothing more is sent on it.
    if let Poll::Ready(Ok(reason)) = poll_fn(|cx| Poll::Ready(respond.poll_reset(cx))).await {
        client.client_reset(ctx);
        respond::check_in(ctx, conn, false);
        drop(slot);
        tracing::debug!(request_id = %req.id, ?reason, "the client reset the stream before its answer");
        return Ok((status, Some(upstream)));
    }
    let complete = match respond.send_response(head, framing == Framing::Empty) {
        Ok(send) if framing == Framing::Empty => {
            drop(send);
            Ok(())
        }
        Ok(mut send) => {
            let relayed = relay_body(ctx, &mut conn, &mut send, framing).await;
            if relayed.is_err() {
                if client_reset(&mut send) {
                    client.client_reset(ctx);
                } else {
                    send.send_reset(Reason::INTERNAL_ERROR);
                    ctx.metrics.h2_reset("internal_error");
                }
            }
            relayed
        }
        Err(e) => Err(format!("the client reset the stream: {e}")),
    };
    respond::check_in(ctx, conn, complete.is_ok() && upstream_reusable);
    drop(slot);
    if let Err(why) = complete {
        tracing::debug!(request_id = %req.id, backend = %target.backend_id, error = %why, "response body not completed");
    }
    Ok((status, Some(upstream)))
}

/// The backend's head for the client: its status and end-to-end fields (names lowercased,
/// hop-by-hop ones and framing left out), and its `content-length` when it declared one
/// (for HEAD, the length a GET would have had).
fn response_head(
    response: &h1::ResponseHead,
    is_head: bool,
    framing: Framing,
) -> Result<Response<()>, &'static str> {
    let mut out = Response::builder()
        .status(response.status)
        .body(())
        .map_err(|_| "invalid status")?;
    let tokens = h1::connection_tokens(response.headers());
    let headers = out.headers_mut();
    for h in response.headers() {
        if h1::is_hop_by_hop(h, &tokens) {
            continue;
        }
        headers.append(field_name(h.name)?, field_value(h.value)?);
    }
    let length = match framing {
        Framing::Length(n) => Some(n.to_string()),
        _ if is_head => response
            .headers()
            .find(|h| h.is("content-length"))
            .map(|h| h.value_str().to_owned()),
        _ => None,
    };
    if let Some(length) = length {
        headers.insert(
            http::header::CONTENT_LENGTH,
            field_value(length.as_bytes())?,
        );
    }
    Ok(out)
}

fn field_name(name: &str) -> Result<HeaderName, &'static str> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid field name")
}

fn field_value(value: &[u8]) -> Result<HeaderValue, &'static str> {
    HeaderValue::from_bytes(value).map_err(|_| "invalid field value")
}

/// Streams the backend's body to the client as DATA frames, each sent once the client's
/// windows have room for it (so at most one read of the backend, 64 KiB, waits here); a
/// chunked body is decoded and its trailer fields follow as HEADERS.
async fn relay_body(
    ctx: &WorkerContext,
    conn: &mut UpstreamConn,
    send: &mut SendStream<Bytes>,
    framing: Framing,
) -> Result<(), String> {
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut scanner = ChunkedScanner::default();
    let mut trailer = Vec::new();
    loop {
        if conn.buffered.is_empty() {
            let wait = ctx.limits.request_timeout;
            let n = match monoio::time::timeout(wait, conn.buffered.fill(&mut conn.io)).await {
                Err(_) => return Err("the backend stalled".into()),
                Ok(Err(e)) => return Err(format!("reading from the backend failed: {e}")),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                if framing == Framing::UntilClose {
                    return send_all(ctx, send, Bytes::new(), true).await;
                }
                return Err("the backend closed before the body ended".into());
            }
        }
        let data = conn.buffered.data();
        let (chunk, take, done) = match framing {
            Framing::Length(_) => {
                let take = remaining.min(data.len() as u64) as usize;
                remaining -= take as u64;
                (Bytes::copy_from_slice(&data[..take]), take, remaining == 0)
            }
            Framing::Chunked => {
                let mut decoded = BytesMut::with_capacity(data.len());
                let take = scanner
                    .scan_parts(data, |part| match part {
                        ChunkPart::Data(d) => decoded.extend_from_slice(d),
                        ChunkPart::Trailer(t) => trailer.extend_from_slice(t),
                    })
                    .map_err(|e| format!("invalid chunked body from the backend: {}", e.0))?;
                (decoded.freeze(), take, scanner.is_done())
            }
            Framing::UntilClose => (Bytes::copy_from_slice(data), data.len(), false),
            Framing::Empty => (Bytes::new(), 0, true),
        };
        conn.buffered.consume(take);
        let trailers = if done { trailer_fields(&trailer) } else { None };
        send_all(ctx, send, chunk, done && trailers.is_none()).await?;
        if done {
            if let Some(fields) = trailers {
                send.send_trailers(fields)
                    .map_err(|e| format!("sending trailers failed: {e}"))?;
            }
            return Ok(());
        }
    }
}

/// Whether the client reset the stream (h2 also answers `Ready(Ok(_))` for a stream a
/// GOAWAY closed; the connection's end is counted on its own, so such a stream counts twice).
fn client_reset(send: &mut SendStream<Bytes>) -> bool {
    // One poll, no waiting: `Ready(Ok(_))` once the stream was reset.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    matches!(send.poll_reset(&mut cx), Poll::Ready(Ok(_)))
}

/// The trailer section of a chunked body as fields (`None` when empty or unparsable: best
/// effort, a broken trailer is dropped, not the response).
pub(super) fn trailer_fields(section: &[u8]) -> Option<HeaderMap> {
    if section.is_empty() {
        return None;
    }
    let mut raw = section.to_vec();
    raw.extend_from_slice(b"\r\n");
    let mut parsed = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(&raw, &mut parsed)
    else {
        return None;
    };
    let mut map = HeaderMap::new();
    for f in fields {
        let (Ok(name), Ok(value)) = (field_name(f.name), field_value(f.value)) else {
            continue;
        };
        // Framing and routing fields never belong in trailers (RFC 9110 §6.5.1).
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "host" | "connection" | "te" | "trailer"
        ) {
            continue;
        }
        map.append(name, value);
    }
    (!map.is_empty()).then_some(map)
}

/// Sends `data` within the client's windows: waits for capacity (at most the listener's idle
/// timeout: a client that opens no window loses the stream, not the gateway's memory).
async fn send_all(
    ctx: &WorkerContext,
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), String> {
    let failed = |e: h2::Error| format!("sending to the client failed: {e}");
    if data.is_empty() {
        if end {
            send.send_data(data, true).map_err(failed)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let wait = ctx.limits.idle_timeout;
        let capacity = match monoio::time::timeout(wait, poll_fn(|cx| send.poll_capacity(cx))).await
        {
            Err(_) => return Err("the client opened no flow-control window in time".into()),
            Ok(None) => return Err("the stream was closed".into()),
            Ok(Some(Err(e))) => return Err(failed(e)),
            Ok(Some(Ok(n))) => n,
        };
        if capacity == 0 {
            continue;
        }
        let piece = data.split_to(capacity.min(data.len()));
        send.send_data(piece, end && data.is_empty())
            .map_err(failed)?;
    }
    Ok(())
}

/// Answers `e` as the contract's JSON error on the stream (when its head has not gone yet).
fn send_error(respond: &mut SendResponse<Bytes>, e: &ProxyError, request_id: &str) {
    let body = e.body(request_id);
    let Ok(mut head) = Response::builder().status(e.status()).body(()) else {
        return;
    };
    let headers = head.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Ok(mut send) = respond.send_response(head, false) {
        // Small: queued beyond the window if it must be (h2 sends it as the window opens).
        let _ = send.send_data(Bytes::from(body), true);
    }
}

/// The stream's request body as the backend gets it: the DATA frames' bytes, wrapped in
/// chunked framing when the request had no `content-length`. Flow-control capacity of a
/// frame is given back to the client once its bytes have been handed on (the next read
/// comes after the proxy has sent them to the backend).
struct StreamBody {
    recv: RecvStream,
    chunked: bool,
    /// Bytes to hand out before the next frame: a chunk-size line, the data, its CRLF.
    pending: [Bytes; 3],
    /// Capacity of the frame being handed out, released once it has gone.
    unreleased: usize,
    ended: bool,
}

impl StreamBody {
    fn new(recv: RecvStream, chunked: bool) -> Self {
        Self {
            recv,
            chunked,
            pending: Default::default(),
            unreleased: 0,
            ended: false,
        }
    }
}

impl ByteSource for StreamBody {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(part) = self.pending.iter_mut().find(|p| !p.is_empty()) {
                let n = part.len().min(buf.len());
                buf[..n].copy_from_slice(&part.split_to(n));
                return Ok(n);
            }
            if self.unreleased > 0 {
                let _ = self
                    .recv
                    .flow_control()
                    .release_capacity(std::mem::take(&mut self.unreleased));
            }
            if self.ended {
                return Ok(0);
            }
            match poll_fn(|cx| self.recv.poll_data(cx)).await {
                Some(Ok(data)) => {
                    self.unreleased = data.len();
                    if data.is_empty() {
                        continue;
                    }
                    self.pending = if self.chunked {
                        [
                            Bytes::from(format!("{:x}\r\n", data.len())),
                            data,
                            Bytes::from_static(b"\r\n"),
                        ]
                    } else {
                        [data, Bytes::new(), Bytes::new()]
                    };
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.pending[0] = Bytes::from_static(b"0\r\n\r\n");
                    }
                }
            }
        }
    }
}
