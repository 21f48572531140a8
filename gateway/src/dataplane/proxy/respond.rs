//! Stage 4: read the backend's response head within `upstream.request_timeout`, write the
//! client's response head and stream the body back, then return the connection to the pool
//! when it can carry another request. Also the gateway's own answers: errors as contract
//! JSON, and `100 Continue`.

use std::time::Instant;

use super::body::{self, forward_body, BodyError, BodyLimits, FirstChunkError};
use super::forward::{tls_error, BackendSlot, Sent};
use super::{Downstream, Outcome, Request, UpstreamUse};
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::dataplane::http::{self, Framing, ResponseHead};
use crate::dataplane::WorkerContext;
use crate::snapshot::Target;
use crate::tls::client::{self, TlsFailure};
use crate::tls::stream::TlsError;
use crate::upstream::UpstreamConn;

/// Relays the backend's answer to a request it has whole.
pub(super) async fn relay(
    ctx: &WorkerContext,
    client: &mut Downstream,
    req: &Request<'_>,
    target: &Target,
    sent: Sent,
) -> Result<Outcome, ProxyError> {
    let Received {
        mut conn,
        slot,
        upstream,
        framing,
        upstream_reusable,
    } = receive(ctx, &mut client.response, req, target, sent).await?;
    let is_head = req.head.method().eq_ignore_ascii_case("HEAD");
    // The head read into the connection's reused memory; borrowed until the client's head
    // is written.
    let response = &client.response;
    let status = response.status;
    let upstream_tokens = http::connection_tokens(response.headers());
    let keep_alive =
        req.checked.keep_alive && framing != Framing::UntilClose && !ctx.draining.get();
    let mut out = std::mem::take(&mut client.response_head);
    write_response_head(
        &mut out,
        response,
        &upstream_tokens,
        is_head,
        framing,
        keep_alive,
    );
    drop(upstream_tokens);
    let body = deliver(ctx, client, &mut conn, &out, framing).await;
    client.response_head = out;
    let complete = body.is_ok();
    check_in(ctx, conn, complete && upstream_reusable);
    // The backend has its slot back once its answer is relayed.
    drop(slot);
    if let Err(e) = body {
        tracing::debug!(backend = %target.backend_id, error = ?e, "response body not completed");
    }
    Ok(Outcome {
        status,
        keep_alive: keep_alive && complete,
        linger: false,
        upstream: Some(upstream),
        error: None,
    })
}

/// A backend's answer whose head is in (in the `ResponseHead` given to `receive`) and whose
/// body is still to be relayed, whatever the client's protocol.
pub(in crate::dataplane) struct Received {
    pub(in crate::dataplane) conn: UpstreamConn,
    /// The backend's slot among its requests in flight: drop it once the answer is relayed.
    pub(in crate::dataplane) slot: Option<BackendSlot>,
    pub(in crate::dataplane) upstream: UpstreamUse,
    /// How the response body is delimited (checked; a chunked one has a valid first line).
    pub(in crate::dataplane) framing: Framing,
    /// The connection can carry another request once the body is relayed whole.
    pub(in crate::dataplane) upstream_reusable: bool,
}

/// Reads the backend's response head into `response` and checks its framing (for a chunked
/// body, its first chunk-size line too: a body broken from its first byte never reaches the
/// client behind a 200 head; the answer is a 502 instead).
pub(in crate::dataplane) async fn receive(
    ctx: &WorkerContext,
    response: &mut ResponseHead,
    req: &Request<'_>,
    target: &Target,
    sent: Sent,
) -> Result<Received, ProxyError> {
    let Sent {
        mut conn,
        at,
        _slot: slot,
    } = sent;
    read_head(ctx, &mut conn, target, response).await?;
    // A TLS 1.3 ticket precedes the response bytes: share it with the other workers before
    // the client sees the answer (and can open a connection that lands on another worker).
    ctx.upstreams.borrow_mut().remember_session(&mut conn);
    let upstream = UpstreamUse {
        reused: conn.reused,
        resumed: if conn.reused { None } else { conn.resumed },
        duration: at.elapsed(),
    };
    let is_head = req.head.method().eq_ignore_ascii_case("HEAD");
    let framing = response_framing(response, is_head).map_err(|why| {
        ProxyError::new(
            ErrorKind::InvalidResponse,
            format!(
                "Backend {} sent an invalid response: {why}.",
                target.backend_id
            ),
        )
    })?;
    if framing == Framing::Chunked {
        let wait = ctx.limits.request_timeout;
        body::first_chunk_line(&mut conn.buffered, &mut conn.io, wait)
            .await
            .map_err(|e| match e {
                FirstChunkError::Invalid(why) => ProxyError::new(
                    ErrorKind::InvalidResponse,
                    format!(
                        "Backend {} sent an invalid chunked body: {why}.",
                        target.backend_id
                    ),
                ),
                FirstChunkError::Closed => ProxyError::new(
                    ErrorKind::ReadFailed,
                    format!(
                        "Backend {} closed before its chunked body began.",
                        target.backend_id
                    ),
                ),
                FirstChunkError::Timeout => ProxyError::new(
                    ErrorKind::ResponseTimeout,
                    format!(
                        "Backend {} stalled before its chunked body began.",
                        target.backend_id
                    ),
                ),
            })?;
    }
    let upstream_tokens = http::connection_tokens(response.headers());
    let upstream_reusable = response.minor_version >= 1
        && !http::has_token(&upstream_tokens, "close")
        && framing != Framing::UntilClose;
    Ok(Received {
        conn,
        slot,
        upstream,
        framing,
        upstream_reusable,
    })
}

/// Sends the response head (joined with the start of the body in one write where it can)
/// and streams the body from the backend.
async fn deliver(
    ctx: &WorkerContext,
    client: &mut Downstream,
    conn: &mut UpstreamConn,
    head: &[u8],
    framing: Framing,
) -> Result<(), BodyError> {
    if client.tls.buffer_write(head).is_err() {
        return Err(BodyError::Sink("encrypting the response failed".into()));
    }
    if framing == Framing::Empty {
        return client
            .tls
            .flush_writes()
            .await
            .map_err(|e| BodyError::Sink(e.to_string()));
    }
    let limits = BodyLimits {
        read_timeout: ctx.limits.request_timeout,
        min_rate: 0,
        max_len: 0,
    };
    forward_body(
        &mut conn.buffered,
        &mut conn.io,
        &mut client.tls,
        framing,
        limits,
    )
    .await
}

/// How the response body is delimited (none for HEAD, 204 and 304).
fn response_framing(response: &ResponseHead, is_head: bool) -> Result<Framing, &'static str> {
    // The framing is checked even where the body is empty: a backend that sends ambiguous
    // framing cannot be trusted with the next request on the same connection.
    let declared = http::declared_framing(response.headers()).map_err(|e| e.why())?;
    if is_head || response.status == 204 || response.status == 304 {
        return Ok(Framing::Empty);
    }
    Ok(declared.unwrap_or(Framing::UntilClose))
}

/// The client's response head: the backend's status and fields without hop-by-hop ones,
/// our framing, and `Connection: close` when the connection ends after it.
fn write_response_head(
    out: &mut Vec<u8>,
    response: &ResponseHead,
    upstream_tokens: &[&str],
    is_head: bool,
    framing: Framing,
    keep_alive: bool,
) {
    out.clear();
    write_status_line(out, response.status, response.reason());
    for h in response.headers() {
        if !http::is_hop_by_hop(h, upstream_tokens) {
            http::push_header(out, h.name, h.value);
        }
    }
    if is_head {
        // A HEAD answer keeps the length the GET would have had.
        if let Some(cl) = response.headers().find(|h| h.is("content-length")) {
            http::push_header(out, "Content-Length", cl.value);
        }
    } else {
        http::push_framing(out, framing);
    }
    if !keep_alive {
        http::push_header(out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// Keeps the connection's newest session for the other workers, and returns the connection
/// to the pool (with a read armed) when it can carry another request.
pub(in crate::dataplane) fn check_in(ctx: &WorkerContext, mut conn: UpstreamConn, reusable: bool) {
    let mut upstreams = ctx.upstreams.borrow_mut();
    upstreams.remember_session(&mut conn);
    if reusable && conn.buffered.is_empty() {
        let key = conn.key.clone();
        conn.io.arm_read();
        upstreams.pool.checkin(key, conn, Instant::now(), |reason| {
            ctx.metrics.pool_eviction(reason.as_str())
        });
    }
}

/// Reads the backend's response head, skipping interim (1xx) responses.
async fn read_head(
    ctx: &WorkerContext,
    conn: &mut UpstreamConn,
    target: &Target,
    head: &mut ResponseHead,
) -> Result<(), ProxyError> {
    let deadline = Instant::now() + ctx.limits.request_timeout;
    // A reused connection that ends or fails before the first byte of an answer was one
    // the backend had closed: see `ProxyError::stale_connection`.
    let silent_reuse = conn.reused && conn.buffered.is_empty();
    let mut answered = false;
    let stale = |e: ProxyError, answered: bool| {
        let before_any_answer = silent_reuse && !answered;
        if before_any_answer
            && matches!(
                e.kind,
                ErrorKind::ClosedWithoutAnswer | ErrorKind::ReadFailed
            )
        {
            e.on_stale_connection()
        } else {
            e
        }
    };
    loop {
        if !conn.buffered.is_empty() {
            answered = true;
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
                        ErrorKind::InvalidResponse,
                        format!(
                            "Backend {} sent an invalid response head ({e:?}).",
                            target.backend_id
                        ),
                    ))
                }
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let read = monoio::time::timeout(wait, conn.buffered.fill(&mut conn.io)).await;
        match read {
            Err(_) => {
                return Err(ProxyError::new(
                    ErrorKind::ResponseTimeout,
                    format!(
                        "Backend {} did not answer within {:?}.",
                        target.backend_id, ctx.limits.request_timeout
                    ),
                ))
            }
            Ok(Ok(0)) => {
                let e = ProxyError::new(
                    ErrorKind::ClosedWithoutAnswer,
                    format!(
                        "Backend {} closed the connection without answering.",
                        target.backend_id
                    ),
                );
                return Err(stale(e, answered));
            }
            Ok(Ok(_)) => answered = true,
            Ok(Err(e)) => return Err(stale(read_error(ctx, target, &e), answered)),
        }
    }
}

/// A failed read of the response head. With TLS 1.3 the backend judges our certificate
/// after the handshake: its refusal arrives as an alert on the first read, recognised by
/// BoringSSL's reason code.
fn read_error(ctx: &WorkerContext, target: &Target, e: &std::io::Error) -> ProxyError {
    if let Some(TlsError::Ssl(ssl)) = TlsError::of(e) {
        if client::refuses_client_certificate(ssl) {
            let reason = TlsFailure::ClientCertificateRejected;
            return tls_error(ctx, target, reason, &e.to_string());
        }
    }
    ProxyError::new(
        ErrorKind::ReadFailed,
        format!("Reading from backend {} failed: {e}", target.backend_id),
    )
}

fn write_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Answers `100 Continue` (the body must reach us before the backend can see it); false
/// when the client is gone.
pub(super) async fn send_continue(client: &mut Downstream) -> bool {
    client
        .tls
        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        .await
        .is_ok()
}

/// Answers `e` as the contract's JSON error, with the request id in the body and in
/// `X-Request-Id`.
pub(super) async fn error(
    client: &mut Downstream,
    e: &ProxyError,
    keep_alive: bool,
    request_id: &str,
) -> std::io::Result<()> {
    let body = e.body(request_id);
    let status = e.status();
    let mut out = Vec::with_capacity(256 + body.len());
    write_status_line(&mut out, status, reason_phrase(status));
    http::push_header(&mut out, "Content-Type", b"application/json");
    http::push_header(&mut out, "X-Request-Id", request_id.as_bytes());
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
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}
