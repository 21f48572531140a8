//! Stage 3: get a connection to the backend (a pooled one for the same key, else a new one
//! that resumes a shared session) and send it the request head and body.

use std::time::Instant;

use super::body::{forward_body, BodyError, BodyLimits};
use super::Request;
use crate::buffer::{ByteSource, InBuffer};
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::dataplane::http::Framing;
use crate::dataplane::WorkerContext;
use crate::snapshot::Target;
use crate::tls::client::TlsFailure;
use crate::upstream::{self, ConnectError, UpstreamConn};

/// A request the backend has whole: the connection it went on, when its head left, and
/// its slot among the backend's requests in flight (freed when the answer is relayed).
pub(in crate::dataplane) struct Sent {
    pub(super) conn: UpstreamConn,
    pub(super) at: Instant,
    pub(super) _slot: Option<BackendSlot>,
}

/// One of `upstream.max_connections_per_backend` requests in flight to a backend.
pub(in crate::dataplane) type BackendSlot = tokio::sync::OwnedSemaphorePermit;

/// Waits for a free slot of the target's backend, up to `upstream.connect_timeout`
/// (`None` when there is no limit).
async fn backend_slot(
    ctx: &WorkerContext,
    target: &Target,
) -> Result<Option<BackendSlot>, ProxyError> {
    let Some(slots) = ctx.backend_slots(&target.backend_id) else {
        return Ok(None);
    };
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Ok(Some(slot));
    }
    ctx.metrics.limit_reached("backend_connections");
    let wait = ctx.upstreams.borrow().connect_timeout();
    match monoio::time::timeout(wait, slots.acquire_owned()).await {
        Ok(Ok(slot)) => Ok(Some(slot)),
        _ => Err(ProxyError::new(
            ErrorKind::BackendBusy,
            format!(
                "Backend {} had upstream.max_connections_per_backend ({}) requests in flight on worker {} for {wait:?}.",
                target.backend_id, ctx.limits.max_connections_per_backend, ctx.id
            ),
        )),
    }
}

/// Sends the request (`upstream_head`, then the body from the client: what `buf` holds,
/// then `source`, by the framing of the head) to the target's backend. A pooled connection
/// the backend closed fails on the first write; nothing has been sent then, so one retry on
/// a fresh connection is safe. The client side is HTTP/1.1 or an HTTP/2 stream (whose body
/// source writes HTTP/1.1 framing, `dataplane::h2`).
pub(in crate::dataplane) async fn send<S: ByteSource>(
    ctx: &WorkerContext,
    buf: &mut InBuffer,
    source: &mut S,
    req: &Request<'_>,
    target: &Target,
    upstream_head: &[u8],
    fresh_only: bool,
) -> Result<Sent, ProxyError> {
    let body_pending = req.checked.framing != Framing::Empty;
    // With the request body still unread, an error leaves the client connection unusable.
    let unless_body_read = |e: ProxyError| if body_pending { e.closing() } else { e };
    let send_failed = |e: std::io::Error| {
        let why = format!("Sending to backend {} failed: {e}", target.backend_id);
        ProxyError::new(ErrorKind::HeadSendFailed, why).closing()
    };
    let slot = backend_slot(ctx, target).await.map_err(unless_body_read)?;
    let mut conn = connection(ctx, target, fresh_only)
        .await
        .map_err(unless_body_read)?;
    let at = Instant::now();
    if let Err(e) = conn.io.write_all(upstream_head).await {
        let e = send_failed(e);
        if !(conn.reused && e.kind.retry_safe()) {
            return Err(e);
        }
        conn = connection(ctx, target, true)
            .await
            .map_err(unless_body_read)?;
        conn.io
            .write_all(upstream_head)
            .await
            .map_err(send_failed)?;
    }
    if body_pending {
        let limits = BodyLimits {
            read_timeout: ctx.limits.body_timeout,
            min_rate: ctx.limits.body_min_rate,
            max_len: ctx.limits.max_request_body,
        };
        let framing = req.checked.framing;
        forward_body(buf, source, &mut conn.io, framing, limits)
            .await
            .map_err(|e| match e {
                BodyError::Source(why) => ProxyError::new(
                    ErrorKind::RequestBodyFailed,
                    format!("Reading the request body failed: {why}"),
                ),
                BodyError::Timeout => {
                    ctx.metrics.downstream_timeout("body");
                    ProxyError::new(
                        ErrorKind::RequestBodyTimeout,
                        format!(
                        "The request body stalled or fell under listener.body_min_rate ({} B/s).",
                        limits.min_rate
                    ),
                    )
                }
                BodyError::TooLarge => {
                    ctx.metrics.limit_reached("request_body");
                    ProxyError::new(
                        ErrorKind::BodyTooLarge,
                        format!(
                            "The chunked request body passed listener.max_request_body_bytes ({}).",
                            limits.max_len
                        ),
                    )
                }
                BodyError::Sink(why) => ProxyError::new(
                    ErrorKind::BodySendFailed,
                    format!(
                        "Sending the request body to backend {} failed: {why}",
                        target.backend_id
                    ),
                ),
            })
            .map_err(ProxyError::closing)?;
    }
    Ok(Sent {
        conn,
        at,
        _slot: slot,
    })
}

/// A connection for the target: a pooled one for the same key (unless `fresh_only`), else a
/// new one, offered the newest session any worker has for the key.
async fn connection(
    ctx: &WorkerContext,
    target: &Target,
    fresh_only: bool,
) -> Result<UpstreamConn, ProxyError> {
    let endpoint = target.endpoint.as_ref().map_err(|e| {
        ProxyError::new(
            ErrorKind::BackendUnusable,
            format!("Backend {} cannot be reached: {e}", target.backend_id),
        )
    })?;
    if !fresh_only {
        let pooled = ctx
            .upstreams
            .borrow_mut()
            .checkout(&endpoint.key, |reason| {
                ctx.metrics.pool_eviction(reason.as_str());
            });
        ctx.metrics
            .pool_lookup(&target.backend_id, pooled.is_some());
        if let Some(conn) = pooled {
            return Ok(conn);
        }
    }
    let tls = target.tls.as_deref();
    let (session, timeout) = {
        let upstreams = ctx.upstreams.borrow();
        let session = tls.and_then(|tls| upstreams.session_for(&endpoint.key, tls));
        (session, upstreams.connect_timeout())
    };
    let started = Instant::now();
    let offered = session.clone();
    match upstream::connect(endpoint, tls, session, timeout).await {
        Ok(mut conn) => {
            count_new_connection(ctx, target, &mut conn, offered.as_ref(), started);
            Ok(conn)
        }
        Err(ConnectError::Timeout) => Err(ProxyError::new(
            ErrorKind::ConnectTimeout,
            format!(
                "Backend {} ({}) did not accept a connection within upstream.connect_timeout.",
                target.backend_id, endpoint.addr
            ),
        )),
        Err(ConnectError::Unreachable(why)) => Err(ProxyError::new(
            ErrorKind::BackendUnreachable,
            format!("Backend {} cannot be reached: {why}", target.backend_id),
        )),
        Err(ConnectError::Tls(reason, why)) => {
            ctx.upstreams.borrow_mut().forget_session(&endpoint.key);
            Err(tls_error(ctx, target, reason, &why))
        }
    }
}

/// Counts a new connection: its handshake (and why it did not resume, if it did not), and
/// in the open-connections gauge for as long as it lives.
fn count_new_connection(
    ctx: &WorkerContext,
    target: &Target,
    conn: &mut UpstreamConn,
    offered: Option<&boring::ssl::SslSession>,
    started: Instant,
) {
    if let Some(resumed) = conn.resumed {
        ctx.metrics
            .upstream_handshake(&target.backend_id, resumed, started.elapsed());
        if !resumed {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let why = upstream::ResumeMiss::of(offered, now);
            ctx.metrics
                .upstream_resumption_miss(&target.backend_id, why.as_str());
        }
    }
    let open = ctx
        .metrics
        .upstream_open(&target.backend_id, &target.certificate_id);
    open.increment(1.0);
    conn.open = Some(upstream::OpenConnection(open));
}

/// A failed TLS connection to the backend: counted and logged by reason, answered 500.
pub(super) fn tls_error(
    ctx: &WorkerContext,
    target: &Target,
    reason: TlsFailure,
    why: &str,
) -> ProxyError {
    ctx.metrics
        .upstream_tls_error(&target.backend_id, reason.as_str());
    tracing::warn!(backend = %target.backend_id, reason = reason.as_str(), error = why, "backend TLS failed");
    ProxyError::new(
        ErrorKind::BackendTls(reason),
        format!(
            "The TLS connection to backend {} failed: {} ({why}).",
            target.backend_id,
            reason.as_str()
        ),
    )
}
