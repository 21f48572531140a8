//! The operator console: its page and assets (compiled into the binary, served without a
//! token, with a strict Content-Security-Policy), and the two endpoints only it needs:
//! `GET /overview` (the gateway at a glance) and `POST /apis/{id}/test` (one call through
//! the gateway's own data plane, made from the gateway itself, so it works whatever the
//! browser can reach). Everything else the page does goes through the REST API as it is.

// Control plane: the rate sample is touched by admin handlers only.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{AdminError, ControlPlane};
use crate::model::ResourceId;
use crate::snapshot::Snapshot;

/// The console's files, part of the binary: (URL path, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../console/index.html"),
    ),
    (
        "/console/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/app.css"),
    ),
    (
        "/console/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
];

/// No inline script or style, nothing from elsewhere, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is one of the console's files (served without a token: they hold no
/// data, only the page that asks for the token).
pub fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|(p, _, _)| *p == path)
}

/// The asset at `path`, with the console's security headers; 404 for anything else.
pub fn asset(path: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return AdminError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "There is no such console file.",
        )
        .into_response();
    };
    let mut response = (StatusCode::OK, *bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    add_security_headers(headers);
    // The files change with the binary only; a restart with a new one must not show the old.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The headers every console answer carries.
pub fn add_security_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// What the overview shows that only the runtime knows.
pub struct Console {
    /// Where the data plane listens: the test call goes there.
    pub listener: SocketAddr,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Each worker's I/O driver (`io_uring`, `epoll`).
    pub workers: Vec<&'static str>,
    /// `ebpf` or `kernel`.
    pub steering: &'static str,
    /// Requests answered so far and how many of them were errors (status >= 500), from
    /// the gateway's own metrics.
    pub request_totals: Arc<dyn Fn() -> (f64, f64) + Send + Sync>,
    /// The previous overview's totals, for the rates.
    last: Mutex<Option<(Instant, f64, f64)>>,
    started: Instant,
}

impl Console {
    pub fn new(
        listener: SocketAddr,
        snapshot: Arc<ArcSwap<Snapshot>>,
        workers: Vec<&'static str>,
        steering: &'static str,
        request_totals: Arc<dyn Fn() -> (f64, f64) + Send + Sync>,
    ) -> Self {
        Self {
            listener,
            snapshot,
            workers,
            steering,
            request_totals,
            last: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// `GET /overview`: generation, workers, steering, request and error rate (per second,
    /// since the previous overview, or since start for the first), certificates by expiry.
    pub fn overview(&self, control: &ControlPlane) -> Value {
        let (total, errors) = (self.request_totals)();
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (since, total_before, errors_before) = last.unwrap_or((self.started, 0.0, 0.0));
        *last = Some((now, total, errors));
        drop(last);
        let seconds = now.duration_since(since).as_secs_f64().max(0.001);
        let now_utc = time::OffsetDateTime::now_utc();
        let mut certificates: Vec<(i64, Value)> = control
            .certificates()
            .into_iter()
            .map(|(id, info)| {
                let left = (info.not_after - now_utc).whole_days();
                let entry = json!({
                    "id": id.as_str(),
                    "expirationDate": crate::model::format_rfc3339(info.not_after),
                    "daysLeft": left,
                });
                (info.not_after.unix_timestamp(), entry)
            })
            .collect();
        certificates.sort_by_key(|(t, _)| *t);
        json!({
            "generation": self.snapshot.load().generation,
            "workers": self.workers.iter().enumerate()
                .map(|(id, driver)| json!({"id": id, "driver": driver}))
                .collect::<Vec<_>>(),
            "steeringMode": self.steering,
            "requestRate": ((total - total_before) / seconds).max(0.0),
            "errorRate": ((errors - errors_before) / seconds).max(0.0),
            "certificates": certificates.into_iter().map(|(_, v)| v).take(10).collect::<Vec<_>>(),
        })
    }
}

/// The body of `POST /apis/{id}/test`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct TrialBody {
    #[serde(default = "get")]
    pub method: String,
    /// The request path, starting with the API's path (a query may follow).
    pub path: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: Option<String>,
}

fn get() -> String {
    "GET".to_owned()
}

/// What the console shows of a test call.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Trial {
    pub status: u16,
    pub duration_ms: f64,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8), at most [`MAX_TRIAL_BODY`] bytes.
    pub body: String,
    pub body_truncated: bool,
    /// The client certificate the API presents to its backend, if any.
    pub certificate_id: Option<String>,
    pub certificate_thumbprint: Option<String>,
    /// When the answer is an error of the gateway's own: its code, reason and message.
    pub error: Option<Value>,
}

/// The most of a response body the console is shown.
pub const MAX_TRIAL_BODY: usize = 64 * 1024;
/// The longest a test call may take, connecting included.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers the test call sets itself.
const RESERVED: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// Runs a test call of API `id` (blocking: run it off the async thread).
pub fn run_trial(
    console: &Console,
    control: &ControlPlane,
    id: &ResourceId,
    body: &TrialBody,
) -> Result<Trial, AdminError> {
    let resources = control.resources();
    let api = resources
        .apis
        .get(id)
        .ok_or_else(|| AdminError::not_found("API", id))?;
    check_trial(body, &api.path)?;
    let certificate = resources
        .effective_credential(api)
        .and_then(|r| resources.find_certificate(r));
    let request = trial_request(body);
    let started = Instant::now();
    let raw = exchange(loopback(console.listener), &request).map_err(|e| {
        AdminError::new(
            StatusCode::BAD_GATEWAY,
            "TestCallFailed",
            format!("The test call to the gateway's own listener failed: {e}."),
        )
    })?;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut trial = parse_response(&raw, &body.method).map_err(|e| {
        AdminError::new(
            StatusCode::BAD_GATEWAY,
            "TestCallFailed",
            format!("The gateway's answer to the test call could not be read: {e}."),
        )
    })?;
    trial.duration_ms = duration_ms;
    trial.certificate_id = certificate.map(|c| c.id.to_string());
    trial.certificate_thumbprint = certificate.map(|c| c.info.thumbprint.to_string());
    // An error of the gateway's own carries the contract's shape and a request id.
    if trial.status >= 400 {
        if let Ok(v) = serde_json::from_str::<Value>(&trial.body) {
            let e = &v["error"];
            if e["code"].is_string() && e["requestId"].is_string() {
                trial.error = Some(json!({
                    "code": e["code"],
                    "message": e["message"],
                    "reason": e["details"][0]["reason"],
                    "requestId": e["requestId"],
                }));
            }
        }
    }
    Ok(trial)
}

fn check_trial(body: &TrialBody, api_path: &str) -> Result<(), AdminError> {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(&body.method) {
        return Err(AdminError::invalid_request(
            "method must be an HTTP method token, e.g. GET.",
        ));
    }
    let path_only = body.path.split('?').next().unwrap_or_default();
    let inside = api_path == "/"
        || path_only == api_path
        || path_only
            .strip_prefix(api_path)
            .is_some_and(|rest| rest.starts_with('/'));
    if !body.path.starts_with('/') || !inside {
        return Err(AdminError::invalid_request(format!(
            "path must start with the API's path {api_path}."
        )));
    }
    if body.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(AdminError::invalid_request(
            "path may not contain spaces or control characters.",
        ));
    }
    for (name, value) in &body.headers {
        if !token(name) {
            return Err(AdminError::invalid_request(format!(
                "{name:?} is not a header name."
            )));
        }
        if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(AdminError::invalid_request(format!(
                "The header {name} is set by the test call itself."
            )));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(AdminError::invalid_request(format!(
                "The value of header {name} may not contain CR, LF or NUL."
            )));
        }
    }
    Ok(())
}

fn trial_request(body: &TrialBody) -> Vec<u8> {
    let mut out = format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
        body.method, body.path
    )
    .into_bytes();
    for (name, value) in &body.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let payload = body.body.as_deref().unwrap_or_default();
    if !payload.is_empty() || !matches!(body.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS")
    {
        out.extend_from_slice(format!("Content-Length: {}\r\n", payload.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload.as_bytes());
    out
}

/// The address to call the listener on: its own, or loopback when it listens on all.
fn loopback(listener: SocketAddr) -> SocketAddr {
    match listener.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listener.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listener.port())
        }
        _ => listener,
    }
}

/// One request on a new TLS connection to the gateway's listener; everything read until
/// the gateway closes (the request says `Connection: close`), capped.
fn exchange(addr: SocketAddr, request: &[u8]) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect_timeout(&addr, TRIAL_TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = tcp.set_read_timeout(Some(TRIAL_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(TRIAL_TIMEOUT));
    let mut connector = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    // Our own listener, on this host: its certificate is whatever the operator configured
    // (often self-signed); what is tested is the route to the backend.
    connector.set_verify(SslVerifyMode::NONE);
    connector
        .set_alpn_protos(b"\x08http/1.1")
        .map_err(|e| e.to_string())?;
    let connector = connector.build();
    let config = connector
        .configure()
        .map_err(|e| e.to_string())?
        .verify_hostname(false);
    let mut tls = config
        .connect("localhost", tcp)
        .map_err(|e| format!("TLS handshake: {e}"))?;
    tls.write_all(request)
        .map_err(|e| format!("sending: {e}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let cap = MAX_TRIAL_BODY + 64 * 1024;
    let deadline = Instant::now() + TRIAL_TIMEOUT;
    while raw.len() < cap && Instant::now() < deadline {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            // A close without close_notify, after the answer, is an end too.
            Err(_) if !raw.is_empty() => break,
            Err(e) => return Err(format!("reading: {e}")),
        }
    }
    Ok(raw)
}

/// The status, headers and body (de-chunked, capped) of a response read until close.
fn parse_response(raw: &[u8], method: &str) -> Result<Trial, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err("the answer ended within its head".into()),
    };
    let status = response.code.unwrap_or(0);
    let list: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let chunked = list
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let rest = &raw[head_len..];
    let body = if method == "HEAD" {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    let truncated = body.len() > MAX_TRIAL_BODY;
    let body = &body[..body.len().min(MAX_TRIAL_BODY)];
    Ok(Trial {
        status,
        duration_ms: 0.0,
        headers: list,
        body: String::from_utf8_lossy(body).into_owned(),
        body_truncated: truncated,
        certificate_id: None,
        certificate_thumbprint: None,
        error: None,
    })
}

/// The data of a chunked body (what arrived of it); chunk sizes read by httparse.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Ok(httparse::Status::Complete((used, size))) = httparse::parse_chunk_size(rest) else {
            return out;
        };
        rest = &rest[used..];
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size == 0 || rest.is_empty() {
            return out;
        }
        let take = size.min(rest.len());
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        if take < size {
            return out;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chunked_answers_are_read_and_capped() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let t = parse_response(raw, "GET").unwrap();
        assert_eq!(
            (t.status, t.body.as_str(), t.body_truncated),
            (200, "hello world", false)
        );
        assert!(t
            .headers
            .contains(&("content-type".into(), "text/plain".into())));
        let mut big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_TRIAL_BODY + 10));
        let t = parse_response(&big, "GET").unwrap();
        assert!(t.body_truncated && t.body.len() == MAX_TRIAL_BODY);
        assert!(parse_response(b"HTTP/1.1 200", "GET").is_err());
    }

    #[test]
    fn test_calls_are_checked_before_they_go() {
        let body = |method: &str, path: &str, headers: Vec<(&str, &str)>| TrialBody {
            method: method.into(),
            path: path.into(),
            headers: headers
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect(),
            body: None,
        };
        assert!(check_trial(
            &body("GET", "/orders/1?x=1", vec![("Accept", "*/*")]),
            "/orders"
        )
        .is_ok());
        assert!(check_trial(&body("GET", "/orders", vec![]), "/orders").is_ok());
        assert!(check_trial(&body("GET", "/anything", vec![]), "/").is_ok());
        for (b, why) in [
            (body("GET", "/ordersx", vec![]), "another API's path"),
            (body("GET", "orders", vec![]), "not a path"),
            (body("G T", "/orders", vec![]), "not a method"),
            (body("GET", "/orders/a b", vec![]), "a space"),
            (
                body("GET", "/orders", vec![("Host", "x")]),
                "a reserved header",
            ),
            (
                body("GET", "/orders", vec![("X-A", "a\r\nB: c")]),
                "header injection",
            ),
            (body("GET", "/orders", vec![("X A", "a")]), "a bad name"),
        ] {
            assert!(check_trial(&b, "/orders").is_err(), "{why}");
        }
        let req = trial_request(&TrialBody {
            body: Some("{}".into()),
            ..body("POST", "/orders", vec![("X-A", "1")])
        });
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("POST /orders HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n{}"), "{text}");
    }
}
