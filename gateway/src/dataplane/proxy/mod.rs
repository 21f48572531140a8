//! One client connection: TLS accept, then HTTP/1.1 requests in a keep-alive loop, each
//! routed through the current snapshot and proxied to its backend over a pooled (m)TLS
//! connection. Bodies stream through in both directions; nothing buffers a whole message.
//!
//! A request goes through four stages, one module each, around one [`Request`]:
//! [`request`] reads and checks the head, [`route`] finds the API and rewrites the head for
//! the backend, [`forward`] gets an upstream connection and sends the request, [`respond`]
//! reads the backend's answer and streams it back (or answers an error). [`body`] streams
//! one message body, either way.

mod body;
mod forward;
mod request;
mod respond;
mod route;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boring::ssl::Ssl;
use monoio::net::TcpStream;

use super::error::ProxyError;
use super::http::{Framing, InBuffer, RequestHead, ResponseHead};
use super::{access_log, WorkerContext};
use crate::metrics::NO_API;
use crate::tls::stream::TlsStream;

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

/// One request as it goes through the stages: what the head said, and the labels it
/// collects for metrics and the access log.
struct Request<'a> {
    head: &'a RequestHead,
    id: String,
    /// Framing, keep-alive and `Connection` tokens, once the head is checked.
    checked: request::Checked<'a>,
    /// The API it matched (`NO_API` until routed) and that API's backend.
    api: Arc<str>,
    backend: Option<Arc<str>>,
}

/// How a request ended, for the keep-alive decision and metrics.
struct Outcome {
    status: u16,
    keep_alive: bool,
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
            upstream: None,
            error: None,
        }
    }
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
    let Some(tls) = accept_tls(&ctx, tcp, peer).await else {
        return;
    };
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
        match request::read_head(&ctx, &mut client, &mut head).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let _ = respond::error(&mut client, &e, false).await;
                ctx.metrics.proxy_error(e.kind.mapping().metric_labels());
                ctx.metrics.request(&no_api(), e.status(), Duration::ZERO);
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

/// The TLS handshake with the client, bounded by the header timeout.
async fn accept_tls(ctx: &WorkerContext, tcp: TcpStream, peer: SocketAddr) -> Option<TlsStream> {
    let _ = tcp.set_nodelay(true);
    let ssl = match Ssl::new(ctx.acceptor.context()) {
        Ok(ssl) => ssl,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a TLS session");
            return None;
        }
    };
    let started = Instant::now();
    let handshake = TlsStream::accept(tcp, ssl);
    let tls = match monoio::time::timeout(ctx.limits.handshake_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "client TLS handshake timed out");
            return None;
        }
    };
    let resumed = tls.ssl().session_reused();
    ctx.metrics.downstream_handshake(resumed, started.elapsed());
    Some(tls)
}

fn no_api() -> Arc<str> {
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
    let mut req = Request {
        head,
        id: request::request_id(ctx, head),
        checked: request::Checked {
            framing: Framing::Empty,
            keep_alive: false,
            tokens: Vec::new(),
        },
        api: no_api(),
        backend: None,
    };
    let outcome = match proxy(ctx, client, &mut req).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let mapping = e.kind.mapping();
            ctx.metrics.proxy_error(mapping.metric_labels());
            let keep_alive = !e.close;
            let sent = respond::error(client, &e, keep_alive).await.is_ok();
            Outcome {
                status: mapping.status,
                keep_alive: keep_alive && sent,
                upstream: None,
                error: Some(mapping.label),
            }
        }
    };
    let elapsed = started.elapsed();
    ctx.metrics.request(&req.api, outcome.status, elapsed);
    if let Some(log) = &ctx.access_log {
        log.log(&access_log::Entry {
            request_id: &req.id,
            method: head.method(),
            api: &req.api,
            backend: req.backend.as_deref(),
            status: outcome.status,
            duration: elapsed,
            upstream_duration: outcome.upstream.as_ref().map(|u| u.duration),
            upstream_reused: outcome.upstream.as_ref().map(|u| u.reused),
            upstream_resumed: outcome.upstream.as_ref().and_then(|u| u.resumed),
            error: outcome.error,
        });
    }
    outcome
}

/// The stages in order; an error ends the request with an answer of ours.
async fn proxy(
    ctx: &WorkerContext,
    client: &mut Downstream,
    req: &mut Request<'_>,
) -> Result<Outcome, ProxyError> {
    req.checked = request::check(req.head)?;
    let snapshot = ctx.snapshot.load();
    let routed = route::route(&snapshot, req)?;
    let target = &routed.route.target;
    if request::expects_continue(req.head) && !respond::send_continue(client).await {
        return Ok(Outcome::client_gone());
    }
    let mut upstream_head = std::mem::take(&mut client.upstream_head);
    route::build_upstream_head(&mut upstream_head, req, &routed, &client.peer_ip);
    let sent = forward::send(ctx, client, req, target, &upstream_head).await;
    client.upstream_head = upstream_head;
    let sent = sent?;
    respond::relay(ctx, client, req, target, sent).await
}
