//! Stage 1: read the next request head from the client within its time limits, and check
//! what the proxy needs of it (framing, keep-alive, request id).

use std::time::Instant;

use super::body::{self, FirstChunkError};
use super::Downstream;
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::dataplane::http::{self, Framing, FramingError, HeadError, RequestHead};
use crate::dataplane::{path, Limits, WorkerContext};

/// Waits for the next request head and parses it into `head`. `Ok(false)`: the client
/// closed, went idle past the timeout, or the worker is draining.
pub(super) async fn read_head(
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
                Err(e) => return Err(head_error(e)),
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
            let d = *deadline.get_or_insert_with(|| Instant::now() + ctx.limits.header_timeout);
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
                ctx.metrics.downstream_timeout("header");
                let why = "The request head did not arrive within listener.header_timeout.";
                return Err(ProxyError::new(ErrorKind::RequestHeadTimeout, why).closing());
            }
        }
    }
}

pub(in crate::dataplane) fn head_error(e: HeadError) -> ProxyError {
    let e = match e {
        HeadError::TooLarge => ProxyError::new(
            ErrorKind::HeadTooLarge,
            format!(
                "The request head is larger than {} bytes.",
                http::MAX_HEAD_BYTES
            ),
        ),
        HeadError::TooManyHeaders => ProxyError::new(
            ErrorKind::TooManyHeaders,
            format!(
                "The request has more than {} header fields.",
                http::MAX_HEADERS
            ),
        ),
        HeadError::Malformed => ProxyError::new(
            ErrorKind::MalformedRequest,
            "The request is not valid HTTP/1.1.",
        ),
    };
    e.closing()
}

/// What the proxy needs to know of a request head before it routes it.
pub(in crate::dataplane) struct Checked<'a> {
    pub(in crate::dataplane) framing: Framing,
    /// The client allows another request after this one.
    pub(in crate::dataplane) keep_alive: bool,
    /// Header names listed in the client's `Connection` header (not forwarded).
    pub(in crate::dataplane) tokens: Vec<&'a str>,
    /// The normalised target: routing and forwarding both use its path.
    pub(in crate::dataplane) target: path::Target<'a>,
}

/// Checks a request head before anything of it goes on (RFC 9112 and 9110): its framing
/// (`http::declared_framing`), its target (`dataplane::path`), `Host` (exactly one in
/// HTTP/1.1; an absolute-form target's authority stands for it) and the body size limit.
/// Every refusal closes the connection: what follows on it cannot be trusted.
pub(in crate::dataplane) fn check<'a>(
    head: &'a RequestHead,
    limits: &Limits,
) -> Result<Checked<'a>, ProxyError> {
    let refuse = |kind, why: String| Err(ProxyError::new(kind, why).closing());
    let tokens = http::connection_tokens(head.headers());
    let keep_alive = head.minor_version >= 1 && !http::has_token(&tokens, "close");
    let framing = match http::declared_framing(head.headers()) {
        Ok(framing) => framing.unwrap_or(Framing::Empty),
        Err(e @ FramingError::UnsupportedCoding) => {
            return refuse(
                ErrorKind::UnsupportedTransferCoding,
                format!("Transfer-Encoding names {}.", e.why()),
            )
        }
        Err(e) => {
            return refuse(
                ErrorKind::MalformedRequest,
                format!("Invalid request framing: {}.", e.why()),
            )
        }
    };
    let target = match path::normalize(head.target()) {
        Ok(target) => target,
        Err(e) => {
            return refuse(
                ErrorKind::InvalidPath,
                format!("Request target refused: {}.", e.0),
            )
        }
    };
    let hosts = head.headers().filter(|h| h.is("host")).count();
    if hosts > 1 {
        return refuse(
            ErrorKind::MalformedRequest,
            "More than one Host header.".into(),
        );
    }
    if hosts == 0 && head.minor_version >= 1 && target.authority.is_none() {
        return refuse(
            ErrorKind::MalformedRequest,
            "HTTP/1.1 request without Host.".into(),
        );
    }
    if let Framing::Length(n) = framing {
        if limits.max_request_body > 0 && n > limits.max_request_body {
            return refuse(
                ErrorKind::BodyTooLarge,
                format!(
                    "Content-Length {n} is over listener.max_request_body_bytes ({}).",
                    limits.max_request_body
                ),
            );
        }
    }
    Ok(Checked {
        framing,
        keep_alive,
        tokens,
        target,
    })
}

/// Reads until the first chunk-size line of a chunked request body is in, and checks it:
/// a body that is broken from its first byte is refused before the backend gets the head.
/// (Later breakage aborts the upstream connection mid-request: see `forward`.)
pub(super) async fn first_chunk_line(
    ctx: &WorkerContext,
    client: &mut Downstream,
) -> Result<(), ProxyError> {
    let wait = ctx.limits.body_timeout;
    body::first_chunk_line(&mut client.buf, &mut client.tls, wait)
        .await
        .map_err(|e| {
            let e = match e {
                FirstChunkError::Invalid(why) => ProxyError::new(
                    ErrorKind::MalformedRequest,
                    format!("Invalid chunked request body: {why}."),
                ),
                FirstChunkError::Timeout => {
                    ctx.metrics.downstream_timeout("body");
                    ProxyError::new(
                        ErrorKind::RequestBodyTimeout,
                        "The chunked request body did not begin within listener.body_timeout.",
                    )
                }
                FirstChunkError::Closed => ProxyError::new(
                    ErrorKind::RequestBodyFailed,
                    "The client closed before its chunked body began.",
                ),
            };
            e.closing()
        })
}

/// Whether the request may be sent again after a failed attempt the backend cannot have
/// seen: an idempotent method (RFC 9110 §9.2.2) and no body (a streamed body is gone).
pub(in crate::dataplane) fn replayable(head: &RequestHead, checked: &Checked<'_>) -> bool {
    const IDEMPOTENT: &[&str] = &["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];
    checked.framing == Framing::Empty && IDEMPOTENT.contains(&head.method())
}

/// Whether the client waits for `100 Continue` before it sends the body.
pub(super) fn expects_continue(head: &RequestHead) -> bool {
    head.headers()
        .any(|h| h.is("expect") && h.value_str().eq_ignore_ascii_case("100-continue"))
}

/// The client's `X-Request-Id` when it sent a sane one, else a new id unique to this process.
pub(super) fn request_id(ctx: &WorkerContext, head: &RequestHead) -> String {
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
