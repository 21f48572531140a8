//! Stage 2: find the API whose path the request matches (longest first, in the snapshot it
//! loaded) and write the request head the backend gets.

use super::Request;
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::dataplane::http::{self, Framing};
use crate::snapshot::{push_upstream_path, Route, Snapshot};

/// A routed request: its API, and where in the normalised path the part after the API's
/// path starts (the backend gets its base path, then that part).
pub(in crate::dataplane) struct Routed<'s> {
    pub(in crate::dataplane) route: &'s Route,
    rest_from: usize,
}

impl Routed<'_> {
    /// The normalised path after the API's path.
    fn rest<'p>(&self, path: &'p str) -> &'p str {
        &path[self.rest_from..]
    }
}

/// The route of `req`, recording its API and backend in `req`; 404 when none matches (503
/// while the gateway has no configuration at all). A path whose dot segments lead out of
/// the API the client named (`/orders/../admin`) is refused, not routed elsewhere.
pub(in crate::dataplane) fn route<'s>(
    snapshot: &'s Snapshot,
    req: &mut Request<'_>,
) -> Result<Routed<'s>, ProxyError> {
    // An unread body or a client that wants to close: the connection ends with the error.
    let closing = req.checked.framing != Framing::Empty || !req.checked.keep_alive;
    let finish = |e: ProxyError| if closing { e.closing() } else { e };
    let target = &req.checked.target;
    let path: &str = &target.path;
    let found = snapshot.route(path);
    if target.resolved_dots {
        if let Some((named, _)) = snapshot.route(target.raw_path) {
            if found.is_none_or(|(route, _)| route.api_id != named.api_id) {
                return Err(ProxyError::new(
                    ErrorKind::PathOutsideApi,
                    format!(
                        "The path {} resolves to {path}, outside the API {}.",
                        req.head.target(),
                        named.api_id
                    ),
                )
                .closing());
            }
        }
    }
    let Some((route, rest)) = found else {
        let e = if snapshot.configured {
            ProxyError::new(
                ErrorKind::NoRoute,
                format!("No API matches the path {path}."),
            )
        } else {
            ProxyError::new(
                ErrorKind::NotConfigured,
                "The configuration store has not been reached since start and there is no local copy.",
            )
        };
        return Err(finish(e));
    };
    let rest_from = path.len() - rest.len();
    req.api = route.api_id.clone();
    req.backend = Some(route.target.backend_id.clone());
    Ok(Routed { route, rest_from })
}

/// The request head as the backend gets it: rewritten path, backend `Host`, forwarding
/// headers (`X-Forwarded-For` with `client_ip`, `-Proto`, `X-Request-Id`, and
/// `X-Forwarded-Client-Cert` with `client_certificate` when it is forwarded), no hop-by-hop
/// fields. A caller's own `X-Forwarded-Client-Cert` never passes: only edgegw vouches.
pub(in crate::dataplane) fn build_upstream_head(
    out: &mut Vec<u8>,
    req: &Request<'_>,
    routed: &Routed<'_>,
    client_ip: &str,
    client_certificate: Option<&str>,
) {
    let head = req.head;
    let target = &routed.route.target;
    out.clear();
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    let normalized = &req.checked.target;
    push_upstream_path(
        out,
        &target.base_path,
        routed.rest(&normalized.path),
        normalized.query,
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    http::push_header(out, "Host", target.authority.as_bytes());
    let mut forwarded_for: Option<&str> = None;
    for h in head.headers() {
        if http::is_hop_by_hop(h, &req.checked.tokens)
            || h.is("host")
            || h.is("x-forwarded-proto")
            || h.is("expect")
            || h.is("x-request-id")
            || h.is("x-forwarded-client-cert")
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
    if let Some(value) = client_certificate {
        http::push_header(out, "X-Forwarded-Client-Cert", value.as_bytes());
    }
    http::push_framing(out, req.checked.framing);
    out.extend_from_slice(b"\r\n");
}
