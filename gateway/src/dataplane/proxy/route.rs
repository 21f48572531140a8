//! Stage 2: find the API whose path the request matches (longest first, in the snapshot it
//! loaded) and write the request head the backend gets.

use super::request::path_and_query;
use super::Request;
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::dataplane::http::{self, Framing};
use crate::snapshot::{push_upstream_path, Route, Snapshot};

/// A routed request: its API and the parts of the target the backend's path is made of.
pub(super) struct Routed<'s> {
    pub(super) route: &'s Route,
    /// The path after the API's path.
    pub(super) rest: &'s str,
    pub(super) query: Option<&'s str>,
}

/// The route of `req`, recording its API and backend in `req`; 404 when none matches (503
/// while the gateway has no configuration at all).
pub(super) fn route<'s, 'a: 's>(
    snapshot: &'s Snapshot,
    req: &mut Request<'a>,
) -> Result<Routed<'s>, ProxyError> {
    let head: &'a _ = req.head;
    let (path, query) = path_and_query(head);
    let Some((route, rest)) = snapshot.route(path) else {
        let e = if snapshot.configured {
            ProxyError::new(
                ErrorKind::NoRoute,
                format!("No API matches the path {path}."),
            )
        } else {
            ProxyError::new(
                ErrorKind::NotConfigured,
                "This gateway has no configuration yet: its configuration store cannot be reached. Retry later.",
            )
        };
        // An unread body or a client that wants to close: the connection ends here.
        return Err(
            if req.checked.framing != Framing::Empty || !req.checked.keep_alive {
                e.closing()
            } else {
                e
            },
        );
    };
    req.api = route.api_id.clone();
    req.backend = Some(route.target.backend_id.clone());
    Ok(Routed { route, rest, query })
}

/// The request head as the backend gets it: rewritten path, backend `Host`, forwarding
/// headers (`X-Forwarded-For` with `client_ip`, `-Proto`, `X-Request-Id`), no hop-by-hop
/// fields.
pub(super) fn build_upstream_head(
    out: &mut Vec<u8>,
    req: &Request<'_>,
    routed: &Routed<'_>,
    client_ip: &str,
) {
    let head = req.head;
    let target = &routed.route.target;
    out.clear();
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    push_upstream_path(out, &target.base_path, routed.rest, routed.query);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    http::push_header(out, "Host", target.authority.as_bytes());
    let mut forwarded_for: Option<&str> = None;
    for h in head.headers() {
        if http::is_hop_by_hop(h, &req.checked.tokens)
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
    http::push_header(out, "X-Request-Id", req.id.as_bytes());
    http::push_framing(out, req.checked.framing);
    out.extend_from_slice(b"\r\n");
}
