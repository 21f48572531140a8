//! Stage 1: read the next request head from the client within its time limits, and check
//! what the proxy needs of it (framing, keep-alive, request id).

use std::time::Instant;

use super::Downstream;
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::dataplane::http::{self, Framing, HeadError, RequestHead};
use crate::dataplane::WorkerContext;

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
            let d =
                *deadline.get_or_insert_with(|| Instant::now() + ctx.limits.header_timeout);
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
                let why = "The request head did not arrive in time.";
                return Err(ProxyError::new(ErrorKind::RequestHeadTimeout, why).closing());
            }
        }
    }
}

fn head_error(e: HeadError) -> ProxyError {
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
pub(super) struct Checked<'a> {
    pub(super) framing: Framing,
    /// The client allows another request after this one.
    pub(super) keep_alive: bool,
    /// Header names listed in the client's `Connection` header (not forwarded).
    pub(super) tokens: Vec<&'a str>,
}

/// The request's body framing and whether the client allows another request after it;
/// refuses conflicting framing and a target that is not a path.
pub(super) fn check(head: &RequestHead) -> Result<Checked<'_>, ProxyError> {
    let tokens = http::connection_tokens(head.headers());
    let keep_alive = head.minor_version >= 1 && !http::has_token(&tokens, "close");
    let framing = http::declared_framing(head.headers())
        .map_err(|why| {
            let why = format!("Invalid request framing: {why}.");
            ProxyError::new(ErrorKind::MalformedRequest, why).closing()
        })?
        .unwrap_or(Framing::Empty);
    if !path_and_query(head).0.starts_with('/') {
        let why = "The request target must be a path starting with '/'.";
        return Err(ProxyError::new(ErrorKind::MalformedRequest, why).closing());
    }
    Ok(Checked {
        framing,
        keep_alive,
        tokens,
    })
}

/// The request target split into its path and its query (without the '?').
pub(super) fn path_and_query(head: &RequestHead) -> (&str, Option<&str>) {
    match head.target().split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (head.target(), None),
    }
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
