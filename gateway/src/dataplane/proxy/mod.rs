//! One client connection: TLS accept, then (unless ALPN chose HTTP/2, `dataplane::h2`)
//! HTTP/1.1 requests in a keep-alive loop, each routed through the current snapshot and
//! proxied to its backend over a pooled (m)TLS connection. Bodies stream through in both directions; nothing buffers a whole message.
//!
//! A request goes through four stages, one module each, around one [`Request`]:
//! [`request`] reads and checks the head, [`route`] finds the API and rewrites the head for
//! the backend, [`forward`] gets an upstream connection and sends the request, [`respond`]
//! reads the backend's answer and streams it back (or answers an error). [`body`] streams
//! one message body, either way.

mod body;
// The stages an HTTP/2 stream goes through too (`dataplane::h2::serve`).
pub(in crate::dataplane) mod caller;
pub(in crate::dataplane) mod forward;
pub(in crate::dataplane) mod request;
pub(in crate::dataplane) mod respond;
pub(in crate::dataplane) mod route;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boring::ssl::Ssl;
use monoio::net::TcpStream;

use super::error::{ProxyError, Side};
use super::http::{Framing, InBuffer, RequestHead, ResponseHead};
use super::{access_log, WorkerContext};
use crate::diagnostics::ErrorRecord;
use crate::metrics::NO_API;
use crate::tls::stream::TlsStream;

/// The client side of one connection.
struct Downstream {
    tls: TlsStream,
    buf: InBuffer,
    peer_ip: String,
    /// The certificate the caller presented in the handshake (or the resumed session).
    caller: Option<Rc<caller::Caller>>,
    /// Memory reused from request to request: the backend's response head, and the
    /// rewritten heads sent either way.
    response: ResponseHead,
    upstream_head: Vec<u8>,
    response_head: Vec<u8>,
}

/// One request as it goes through the stages: what the head said, and the labels it
/// collects for metrics and the access log. An HTTP/2 stream's request is written as an
/// HTTP/1.1 head first (`dataplane::h2::serve`), so every stage sees one form.
pub(in crate::dataplane) struct Request<'a> {
    pub(in crate::dataplane) head: &'a RequestHead,
    pub(in crate::dataplane) id: String,
    /// Framing, keep-alive and `Connection` tokens, once the head is checked.
    pub(in crate::dataplane) checked: request::Checked<'a>,
    /// The API it matched (`NO_API` until routed) and that API's backend.
    pub(in crate::dataplane) api: Arc<str>,
    pub(in crate::dataplane) backend: Option<Arc<str>>,
}

impl<'a> Request<'a> {
    /// A request whose head has not been checked yet.
    pub(in crate::dataplane) fn new(ctx: &WorkerContext, head: &'a RequestHead) -> Self {
        Request {
            head,
            id: request::request_id(ctx, head),
            checked: request::Checked {
                framing: Framing::Empty,
                keep_alive: false,
                tokens: Vec::new(),
                target: Default::default(),
            },
            api: no_api(),
            backend: None,
        }
    }
}

/// How a request ended, for the keep-alive decision and metrics.
struct Outcome {
    status: u16,
    keep_alive: bool,
    /// We answered before reading the whole request: read and discard what the client is
    /// still sending before closing (see `linger`).
    linger: bool,
    /// How the backend was reached, when it was.
    upstream: Option<UpstreamUse>,
    /// What failed, when the answer is an error of ours.
    error: Option<&'static str>,
}

impl Outcome {
    /// The client went away before it could get an answer.
    fn client_gone() -> Self {
        Outcome {
            status: 499,
            keep_alive: false,
            linger: false,
            upstream: None,
            error: None,
        }
    }
}

pub(in crate::dataplane) struct UpstreamUse {
    /// The connection came from the pool.
    reused: bool,
    /// For a new TLS connection: whether it resumed an earlier session.
    resumed: Option<bool>,
    /// From sending the request head to receiving the response head.
    duration: Duration,
}

pub async fn serve_connection(ctx: Rc<WorkerContext>, tcp: TcpStream, peer: SocketAddr) {
    let Some(tls) = accept_tls(&ctx, tcp, peer).await else {
        return;
    };
    let caller = caller::presented(&ctx, &tls).map(Rc::new);
    if tls.ssl().selected_alpn_protocol() == Some(b"h2") {
        // Offered only when `listener.alpn` lists it.
        let peer_ip = peer.ip().to_string();
        return super::h2::serve::serve(ctx, tls, peer_ip, caller).await;
    }
    let mut client = Downstream {
        tls,
        buf: InBuffer::new(),
        peer_ip: peer.ip().to_string(),
        caller,
        response: ResponseHead::default(),
        upstream_head: Vec::new(),
        response_head: Vec::new(),
    };
    let mut head = RequestHead::default();
    let mut linger_before_close = false;
    loop {
        match request::read_head(&ctx, &mut client, &mut head).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // No head to take an id from: a new one, so the detail can be found.
                let id = ctx.next_request_id();
                report(&ctx, &e, &id, "-", None, None);
                let _ = respond::error(&mut client, &e, false, &id).await;
                ctx.metrics.request(&no_api(), e.status(), Duration::ZERO);
                linger_before_close = true;
                break;
            }
        };
        let outcome = handle_request(&ctx, &mut client, &head).await;
        if !outcome.keep_alive || ctx.draining.get() {
            linger_before_close = outcome.linger;
            break;
        }
    }
    if linger_before_close {
        linger(&mut client).await;
    }
    client.tls.shutdown().await;
}

/// Lingering close (NGINX's `lingering_close`): after answering a request we did not read
/// whole (431, 413, 400), keep reading and discarding what the client still sends, for a
/// bounded time and size, before closing. Closing with unread bytes makes the kernel answer
/// them with a reset, and a reset can destroy our answer before the client has read it.
async fn linger(client: &mut Downstream) {
    let deadline = Instant::now() + LINGER_TIME;
    let mut discarded = 0usize;
    loop {
        let pending = client.buf.data().len();
        client.buf.consume(pending);
        discarded += pending;
        let now = Instant::now();
        if discarded > LINGER_MAX_BYTES || now >= deadline {
            return;
        }
        let wait = (deadline - now).min(LINGER_READ_TIMEOUT);
        match monoio::time::timeout(wait, client.buf.fill(&mut client.tls)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, failed or quiet for LINGER_READ_TIMEOUT: nothing more is coming.
            _ => return,
        }
    }
}

/// Lingering close bounds: whole time, the longest quiet gap, and bytes discarded (NGINX:
/// 30 s, 5 s, unbounded; shorter here, since a client that keeps sending after an error
/// answer is more often hostile than slow).
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_READ_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 1 << 20;

/// An error answered to a client: counted, logged with its detail (at `warn` when the
/// backend or the gateway failed, `debug` when the client did) and kept for the admin API's
/// lookup by request id.
pub(in crate::dataplane) fn report(
    ctx: &WorkerContext,
    e: &ProxyError,
    request_id: &str,
    method: &str,
    api: Option<&str>,
    backend: Option<&str>,
) {
    let mapping = e.kind.mapping();
    ctx.metrics.proxy_error(mapping.metric_labels());
    if mapping.side == Side::Downstream {
        tracing::debug!(request_id, code = mapping.code, kind = mapping.label, api, backend, detail = %e.detail, "request refused");
    } else {
        tracing::warn!(request_id, code = mapping.code, kind = mapping.label, api, backend, detail = %e.detail, "request failed");
    }
    ctx.recent_errors.record(ErrorRecord {
        request_id: request_id.to_owned(),
        time: String::new(),
        status: mapping.status,
        code: mapping.code,
        kind: mapping.label,
        side: mapping.side.as_str(),
        method: method.to_owned(),
        api: api.map(str::to_owned),
        backend: backend.map(str::to_owned),
        detail: e.detail.clone(),
        worker: ctx.id,
    });
}

/// The TLS handshake with the client, bounded by the header timeout.
async fn accept_tls(ctx: &WorkerContext, tcp: TcpStream, peer: SocketAddr) -> Option<TlsStream> {
    let _ = tcp.set_nodelay(true);
    let mut ssl = match Ssl::new(ctx.acceptor.context()) {
        Ok(ssl) => ssl,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a TLS session");
            return None;
        }
    };
    // Only a listener that asks callers for certificates has a trust to set (the snapshot
    // carries none otherwise): no snapshot load per accept on the default path.
    if ctx.callers.mode != crate::config::ClientCertificates::Off {
        if let Some(trust) = &ctx.snapshot.load().client_trust {
            if let Err(e) = trust.apply(&mut ssl) {
                tracing::error!(error = %e, "cannot set the client-certificate trust");
                return None;
            }
        }
    }
    let started = Instant::now();
    let handshake = TlsStream::accept(tcp, ssl);
    let tls = match monoio::time::timeout(ctx.limits.handshake_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client TLS handshake failed");
            caller::count_failed_handshake(ctx, &e);
            return None;
        }
        Err(_) => {
            ctx.metrics.downstream_timeout("handshake");
            tracing::debug!(%peer, "client TLS handshake timed out");
            return None;
        }
    };
    let resumed = tls.ssl().session_reused();
    ctx.metrics.downstream_handshake(resumed, started.elapsed());
    Some(tls)
}

pub(in crate::dataplane) fn no_api() -> Arc<str> {
    thread_local!(static NO_API_LABEL: Arc<str> = Arc::from(NO_API));
    NO_API_LABEL.with(Arc::clone)
}

/// Runs one request through its stages, answers errors, and records it.
async fn handle_request(
    ctx: &WorkerContext,
    client: &mut Downstream,
    head: &RequestHead,
) -> Outcome {
    let started = Instant::now();
    let mut req = Request::new(ctx, head);
    let outcome = match proxy(ctx, client, &mut req).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let mapping = e.kind.mapping();
            report(
                ctx,
                &e,
                &req.id,
                head.method(),
                (req.api.as_ref() != NO_API).then_some(&*req.api),
                req.backend.as_deref(),
            );
            // The client may have asked to close (`Connection: close`, HTTP/1.0).
            let keep_alive = !e.close && req.checked.keep_alive;
            let sent = respond::error(client, &e, keep_alive, &req.id)
                .await
                .is_ok();
            Outcome {
                status: mapping.status,
                keep_alive: keep_alive && sent,
                linger: e.close,
                upstream: None,
                error: Some(mapping.label),
            }
        }
    };
    record(
        ctx,
        &req,
        outcome.status,
        started.elapsed(),
        outcome.upstream.as_ref(),
        outcome.error,
    );
    outcome
}

/// Counts a finished request (`edgegw_requests_total` and its duration) and writes its
/// access-log line; the same for HTTP/1.1 requests and HTTP/2 streams.
pub(in crate::dataplane) fn record(
    ctx: &WorkerContext,
    req: &Request<'_>,
    status: u16,
    elapsed: Duration,
    upstream: Option<&UpstreamUse>,
    error: Option<&'static str>,
) {
    ctx.metrics.request(&req.api, status, elapsed);
    if let Some(log) = &ctx.access_log {
        log.log(&access_log::Entry {
            request_id: &req.id,
            method: req.head.method(),
            api: &req.api,
            backend: req.backend.as_deref(),
            status,
            duration: elapsed,
            upstream_duration: upstream.map(|u| u.duration),
            upstream_reused: upstream.map(|u| u.reused),
            upstream_resumed: upstream.and_then(|u| u.resumed),
            error,
        });
    }
}

/// The stages in order; an error ends the request with an answer of ours.
async fn proxy(
    ctx: &WorkerContext,
    client: &mut Downstream,
    req: &mut Request<'_>,
) -> Result<Outcome, ProxyError> {
    req.checked = request::check(req.head, &ctx.limits)?;
    let snapshot = ctx.snapshot.load();
    let routed = route::route(&snapshot, req)?;
    if let Some(rule) = &routed.route.client_rule {
        caller::check(rule, client.caller.as_deref(), req)?;
    }
    let target = &routed.route.target;
    if request::expects_continue(req.head) && !respond::send_continue(client).await {
        return Ok(Outcome::client_gone());
    }
    if req.checked.framing == Framing::Chunked {
        // The backend must never get a request head whose body we would then refuse.
        request::first_chunk_line(ctx, client).await?;
    }
    let mut upstream_head = std::mem::take(&mut client.upstream_head);
    let forwarded = client
        .caller
        .as_deref()
        .filter(|_| ctx.callers.forward)
        .map(|c| c.forwarded.as_str());
    route::build_upstream_head(&mut upstream_head, req, &routed, &client.peer_ip, forwarded);
    let result = send_and_relay(ctx, client, req, target, &upstream_head).await;
    client.upstream_head = upstream_head;
    result
}

/// Sends the request and relays the answer. A replayable request (idempotent, no body)
/// that met a pooled connection the backend had just closed goes once more on a new
/// connection: the backend never saw it (RFC 9110 §9.2.2; NGINX does the same).
async fn send_and_relay(
    ctx: &WorkerContext,
    client: &mut Downstream,
    req: &Request<'_>,
    target: &crate::snapshot::Target,
    upstream_head: &[u8],
) -> Result<Outcome, ProxyError> {
    let (buf, tls) = (&mut client.buf, &mut client.tls);
    let sent = forward::send(ctx, buf, tls, req, target, upstream_head, false).await?;
    match respond::relay(ctx, client, req, target, sent).await {
        Err(e) if e.stale_connection && request::replayable(req.head, &req.checked) => {
            tracing::debug!(request_id = %req.id, detail = %e.detail, "pooled connection was closed by the backend; sending again on a new one");
            let (buf, tls) = (&mut client.buf, &mut client.tls);
            let sent = forward::send(ctx, buf, tls, req, target, upstream_head, true).await?;
            respond::relay(ctx, client, req, target, sent).await
        }
        result => result,
    }
}
