//! The management REST API of contract §3 on axum: routes, bearer-token check, body
//! limits, and the mapping of every failure (including axum's own rejections, unknown
//! routes and wrong methods) to the contract's JSON error shape.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::console::{self, Console};
use super::rest::{ApiBody, BackendBody, CaCertificateBody, CertificateBody, CertificateResource};
use super::{AdminError, AdminToken, ControlPlane, Expect, Written};
use crate::model::ResourceId;
use crate::secret::Secret;
use crate::store::Kind;

/// The largest request body accepted (1 MiB); larger ones get 413 `PayloadTooLarge`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How much of a refused request's body is read and thrown away before the answer goes
/// out, and for how long at most (see [`discard`]).
const DISCARD_BYTES: usize = 8 * MAX_BODY_BYTES;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// The probes answered without a token (see [`router_with_readiness`]).
const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";

type Control = State<Arc<ControlPlane>>;

use crate::diagnostics::RecentErrors;

/// Why the gateway does not serve yet (`GET /readyz` answers 503 with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// A stable name for scripts, in the error's `details` (`StoreNotLoaded`,
    /// `WorkersNotServing`).
    pub reason: &'static str,
    /// One sentence for a person.
    pub message: String,
}

/// Whether the gateway serves: asked on every `GET /readyz`.
pub type Readiness = Arc<dyn Fn() -> Result<(), NotReady> + Send + Sync>;

/// The management API: every route of contract §3 behind the bearer `token`, and the
/// probes, which answer ready whenever the router answers at all (for tests and tools that
/// have no data plane).
pub fn router(control: Arc<ControlPlane>, token: AdminToken) -> Router {
    router_with_readiness(
        control,
        token,
        Arc::new(|| Ok(())),
        RecentErrors::new(),
        None,
    )
}

/// The management API with its probes, which need no token:
/// - `GET /healthz`: 200 `ok` while the process answers at all (liveness; no detail);
/// - `GET /readyz`: 200 `ready` once `ready` says so (the store is loaded and every
///   worker serves), else 503 `NotReady` with the reason in `details`.
///
/// And, behind the token, `GET /requests/{id}`: what failed for a request the data plane
/// answered with an error of its own (from `recent_errors`).
///
/// With `console`, the operator console too: its page at `/` and assets under
/// `/console/` (no token: they hold no data), `GET /overview` and `POST /apis/{id}/test`
/// (behind the token, like everything else).
pub fn router_with_readiness(
    control: Arc<ControlPlane>,
    token: AdminToken,
    ready: Readiness,
    recent_errors: RecentErrors,
    console: Option<Arc<Console>>,
) -> Router {
    let auth = Arc::new(token);
    let mut app = Router::new();
    if let Some(console) = console {
        let (overview, trial) = (console.clone(), console);
        app = app
            .route("/", get(|| async { console::asset("/") }))
            .route(
                "/console/{file}",
                get(|Path(file): Path<String>| async move {
                    console::asset(&format!("/console/{file}"))
                }),
            )
            .route(
                "/overview",
                get(move |State(c): Control| {
                    let overview = overview.clone();
                    async move { Json(overview.overview(&c)) }
                }),
            )
            .route(
                "/apis/{id}/test",
                axum::routing::post(move |state, path, body| {
                    test_api(trial.clone(), state, path, body)
                }),
            );
    }
    app.route(HEALTHZ, get(healthz))
        .route(READYZ, get(move || readyz(ready.clone())))
        .route(
            "/requests/{id}",
            get(move |path| request_detail(recent_errors.clone(), path)),
        )
        .route("/certificates", get(list_certificates))
        .route(
            "/certificates/{id}",
            get(get_certificate)
                .put(put_certificate)
                .delete(delete_certificate),
        )
        .route("/caCertificates", get(list_ca_certificates))
        .route(
            "/caCertificates/{id}",
            get(get_ca_certificate)
                .put(put_ca_certificate)
                .delete(delete_ca_certificate),
        )
        .route("/backends", get(list_backends))
        .route(
            "/backends/{id}",
            get(get_backend).put(put_backend).delete(delete_backend),
        )
        .route("/apis", get(list_apis))
        .route("/apis/{id}", get(get_api).put(put_api).delete(delete_api))
        .route(
            "/apis/{id}/policy",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(auth, guard))
        .with_state(control)
}

/// Whether the request's `Authorization: Bearer <token>` carries the admin token (the
/// scheme is case-insensitive; the comparison is [`AdminToken::verify`]'s, constant time).
/// A request with more than one `Authorization` header is refused before this (400).
fn authorized(token: &AdminToken, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let Some((scheme, presented)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && token.verify(presented.trim())
}

/// Runs in front of every route: the probes pass as they are; every other request needs
/// exactly one `Authorization` header (two are 400 `InvalidRequest`: which one would count
/// is a guess a proxy in front may make differently) carrying the token (else 401), and a
/// body of at most [`MAX_BODY_BYTES`] (else 413 `PayloadTooLarge`), read here in full before
/// the handler runs. A request refused before its body was read has the body read and
/// discarded first ([`discard`]), so that the answer reaches the client. axum's bare 405 is
/// turned into the JSON error shape (keeping its `Allow` header).
async fn guard(State(auth): State<Arc<AdminToken>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let probe = matches!(request.uri().path(), HEALTHZ | READYZ)
        || (matches!(method, axum::http::Method::GET | axum::http::Method::HEAD)
            && console::is_asset(request.uri().path()));
    let response = if probe {
        next.run(request).await
    } else {
        let (parts, body) = request.into_parts();
        let continues = expects_continue(&parts.headers);
        if parts.headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
            discard(body, continues).await;
            return AdminError::invalid_request(
                "The request has more than one Authorization header; send exactly one.",
            )
            .into_response();
        }
        if !authorized(&auth, &parts.headers) {
            discard(body, continues).await;
            return AdminError::unauthorized().into_response();
        }
        let body = match read_limited(body, &parts.headers).await {
            Ok(bytes) => Body::from(bytes),
            Err(BodyError::TooLarge(rest)) => {
                if let Some(rest) = rest {
                    discard(rest, continues).await;
                }
                return too_large().into_response();
            }
            Err(BodyError::Broken) => {
                return AdminError::invalid_request("The request body could not be read.")
                    .into_response();
            }
        };
        next.run(Request::from_parts(parts, body)).await
    };
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = response.headers().get(header::ALLOW).cloned();
        let mut json = AdminError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The method {method} is not allowed on this resource."),
        )
        .into_response();
        if let Some(allow) = allow {
            json.headers_mut().insert(header::ALLOW, allow);
        }
        return json;
    }
    response
}

fn too_large() -> AdminError {
    AdminError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
    )
}

/// Whether the client waits for `100 Continue` before it sends the body: then a refusal
/// goes out at once (hyper sends `100 Continue` only when the body is read, so the client
/// never sends it).
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

enum BodyError {
    /// Over [`MAX_BODY_BYTES`]; what is left of the body, unless it is known to be beyond
    /// what [`discard`] would read anyway.
    TooLarge(Option<Body>),
    /// The body could not be read (the client went away, bad chunked framing).
    Broken,
}

/// The next data of `body`; `None` at its end.
async fn next_data(body: &mut Body) -> Option<Result<Bytes, axum::Error>> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
                // Trailers: nothing to keep.
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Reads the whole body if it is at most [`MAX_BODY_BYTES`]. A `Content-Length` above the
/// limit is refused without reading it.
async fn read_limited(mut body: Body, headers: &HeaderMap) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared {
        if length > MAX_BODY_BYTES as u64 {
            let rest = (length <= DISCARD_BYTES as u64).then_some(body);
            return Err(BodyError::TooLarge(rest));
        }
    }
    let mut buffer = bytes::BytesMut::new();
    while let Some(data) = next_data(&mut body).await {
        let data = data.map_err(|_| BodyError::Broken)?;
        if buffer.len() + data.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge(Some(body)));
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}

/// Reads and throws away what the client still sends of a refused request's body, up to
/// [`DISCARD_BYTES`] and [`DISCARD_TIME`] (NGINX's lingering close, in short): a client
/// that is still sending when the server closes would otherwise get a reset from the
/// kernel in place of the answer. Nothing is read from a client that waits for
/// `100 Continue` (it sends nothing unless asked).
async fn discard(mut body: Body, continues: bool) {
    if continues {
        return;
    }
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(data)) = next_data(&mut body).await {
            seen += data.len();
            if seen > DISCARD_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

async fn healthz() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "ok\n",
    )
        .into_response()
}

/// `GET /requests/{id}`: the detail of a failed request (404 for any other id).
async fn request_detail(
    recent: RecentErrors,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let Ok(Path(id)) = path else {
        return Err(AdminError::invalid_id());
    };
    match recent.find(&id) {
        Some(record) => Ok(Json(record).into_response()),
        None => Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "No failed request with the id {id:?} is kept (only the newest {} failed requests are).",
                RecentErrors::CAPACITY
            ),
        )),
    }
}

async fn readyz(ready: Readiness) -> Response {
    match ready() {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            "ready\n",
        )
            .into_response(),
        Err(not_ready) => AdminError {
            details: vec![json!({ "reason": not_ready.reason })],
            ..AdminError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NotReady",
                not_ready.message,
            )
        }
        .into_response(),
    }
}

async fn unknown_route() -> AdminError {
    AdminError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "There is no such resource.",
    )
}

fn resource_id(path: Result<Path<String>, PathRejection>) -> Result<ResourceId, AdminError> {
    let Path(raw) = path.map_err(|_| AdminError::invalid_id())?;
    ResourceId::parse(&raw).map_err(|_| AdminError::invalid_id())
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, AdminError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
            )
        } else {
            AdminError::invalid_request("The request body could not be read.")
        }
    })
}

/// Parses a JSON body. Messages name fields and positions but never echo values (a value
/// could be a password).
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, AdminError> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::invalid_request(
            "The request body is empty; a JSON object is expected.",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        let at = format!("line {}, column {}", e.line(), e.column());
        let message = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                format!("The request body is not valid JSON (at {at}).")
            }
            Category::Data => {
                let text = e.to_string();
                let safe = text.starts_with("missing field")
                    || text.starts_with("unknown field")
                    || text.starts_with("duplicate field");
                if safe {
                    // serde_json appends " at line L column C": keep the field part.
                    let field_part = text.split(" at line ").next().unwrap_or(&text);
                    format!("The request body is not valid: {field_part} (at {at}).")
                } else {
                    let expected = text
                        .split_once(", expected ")
                        .map(|(_, rest)| rest.split(" at line ").next().unwrap_or(rest))
                        .map(|exp| format!(" (expected {exp})"))
                        .unwrap_or_default();
                    format!("The request body is not valid: a value has the wrong type or form{expected} at {at}.")
                }
            }
        };
        AdminError::invalid_request(message)
    })
}

fn status_of(written: Written) -> StatusCode {
    match written {
        Written::Created => StatusCode::CREATED,
        Written::Replaced => StatusCode::OK,
    }
}

fn written(status: Written, body: impl Serialize, revision: u64) -> Response {
    with_etag(
        (status_of(status), Json(body)).into_response(),
        Some(revision),
    )
}

/// A resource's `ETag`: the store revision that last wrote it, as a strong validator.
fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

fn with_etag(mut response: Response, revision: Option<u64>) -> Response {
    if let Some(value) = revision.and_then(|r| HeaderValue::from_str(&etag(r)).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The request's `If-Match` (RFC 9110 §13.1.1): absent, `*`, or a list of strong entity
/// tags this API issued. A weak tag (`W/"…"`) never matches in If-Match, and a tag that is
/// not one of ours cannot be any resource's current one: both are 412 by the same rule,
/// except an unparseable header, which is 400 so that a typo is not mistaken for a race.
fn expectation(headers: &HeaderMap) -> Result<Expect, AdminError> {
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(Expect::Anything);
    }
    let mut revisions = Vec::new();
    for value in values {
        let text = value
            .to_str()
            .map_err(|_| AdminError::invalid_request("The If-Match header is not ASCII text."))?;
        for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return Ok(Expect::Exists);
            }
            let weak = tag.starts_with("W/");
            let quoted = tag.trim_start_matches("W/");
            let Some(inner) = quoted.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
                return Err(AdminError::invalid_request(
                    "The If-Match header must be * or a list of quoted entity tags, as the ETag header gives them.",
                ));
            };
            if weak {
                continue;
            }
            // A tag that is not a number is no revision of ours: it matches nothing.
            revisions.push(inner.parse::<u64>().unwrap_or(0));
        }
    }
    Ok(Expect::Revisions(revisions))
}

fn xml(status: StatusCode, text: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Runs one write on a blocking thread: it fsyncs the audit log and the store and may
/// resolve a backend's name, and none of that may stall the async thread that also serves
/// reads, `/metrics` and signals.
async fn write<T: Send + 'static>(
    control: Arc<ControlPlane>,
    f: impl FnOnce(&ControlPlane) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(move || f(&control))
        .await
        .map_err(|e| AdminError::internal(format!("the write task ended abnormally: {e}")))?
}

// ---- certificates ----

async fn list_certificates(State(c): Control) -> Json<serde_json::Value> {
    let value: Vec<CertificateResource> = c
        .certificates()
        .iter()
        .map(|(id, info)| CertificateResource::new(id, info))
        .collect();
    Json(json!({ "value": value }))
}

async fn get_certificate(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let revision = c.view().revision_of(Kind::Certificate, &id);
    let info = c
        .certificate(&id)
        .ok_or_else(|| AdminError::not_found("certificate", &id))?;
    Ok(with_etag(
        Json(CertificateResource::new(&id, &info)).into_response(),
        revision,
    ))
}

async fn put_certificate(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    let mut body: CertificateBody = json_body(body)?;
    // Copies of the PKCS#12 file are wiped like the body they come from.
    let compact: Secret<Vec<u8>> = Secret::new(
        body.data
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let der = Secret::new(
        BASE64
            .decode(compact.expose())
            .map_err(|_| AdminError::invalid_request("The field data is not valid base64."))?,
    );
    let password = Secret::new(std::mem::take(&mut body.password));
    let (status, info, revision) = {
        let id = id.clone();
        write(c, move |c| {
            c.put_certificate(id, der.expose(), password.expose(), &expect)
        })
        .await?
    };
    Ok(written(
        status,
        CertificateResource::new(&id, &info),
        revision,
    ))
}

async fn delete_certificate(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    write(c, move |c| c.delete_certificate(&id, &expect)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- the console's test call ----

async fn test_api(
    console: Arc<Console>,
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<console::Trial>, AdminError> {
    let id = resource_id(path)?;
    let body: console::TrialBody = json_body(body)?;
    // Blocking I/O (a TLS connection to our own listener): off the async thread.
    let trial = tokio::task::spawn_blocking(move || console::run_trial(&console, &c, &id, &body))
        .await
        .map_err(|e| AdminError::internal(format!("the test call ended abnormally: {e}")))??;
    Ok(Json(trial))
}

// ---- CA certificates ----

async fn list_ca_certificates(State(c): Control) -> Json<serde_json::Value> {
    Json(json!({ "value": c.ca_certificates() }))
}

async fn get_ca_certificate(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let revision = c.view().revision_of(Kind::CaCertificate, &id);
    let resource = c
        .ca_certificate(&id)
        .ok_or_else(|| AdminError::not_found("CA certificate", &id))?;
    Ok(with_etag(Json(resource).into_response(), revision))
}

async fn put_ca_certificate(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    let body: CaCertificateBody = json_body(body)?;
    let compact: Vec<u8> = body
        .data
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let data = BASE64
        .decode(compact)
        .map_err(|_| AdminError::invalid_request("The field data is not valid base64."))?;
    let (status, resource, revision) =
        write(c, move |c| c.put_ca_certificate(id, &data, &expect)).await?;
    Ok(written(status, resource, revision))
}

async fn delete_ca_certificate(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    write(c, move |c| c.delete_ca_certificate(&id, &expect)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- backends ----

async fn list_backends(State(c): Control) -> Json<serde_json::Value> {
    Json(json!({ "value": c.backends() }))
}

async fn get_backend(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let revision = c.view().revision_of(Kind::Backend, &id);
    let b = c
        .backend(&id)
        .ok_or_else(|| AdminError::not_found("backend", &id))?;
    Ok(with_etag(Json(b).into_response(), revision))
}

async fn put_backend(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    let body: BackendBody = json_body(body)?;
    let (status, resource, revision) = write(c, move |c| c.put_backend(id, &body, &expect)).await?;
    Ok(written(status, resource, revision))
}

async fn delete_backend(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    write(c, move |c| c.delete_backend(&id, &expect)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- APIs ----

async fn list_apis(State(c): Control) -> Json<serde_json::Value> {
    Json(json!({ "value": c.apis() }))
}

async fn get_api(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let revision = c.view().revision_of(Kind::Api, &id);
    let a = c
        .api(&id)
        .ok_or_else(|| AdminError::not_found("API", &id))?;
    Ok(with_etag(Json(a).into_response(), revision))
}

async fn put_api(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    let body: ApiBody = json_body(body)?;
    let (status, resource, revision) = write(c, move |c| c.put_api(id, &body, &expect)).await?;
    Ok(written(status, resource, revision))
}

async fn delete_api(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    write(c, move |c| c.delete_api(&id, &expect)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_policy(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    // A policy is part of its API's record: it has the API's ETag.
    let revision = c.view().revision_of(Kind::Api, &id);
    Ok(with_etag(xml(StatusCode::OK, c.policy(&id)?), revision))
}

async fn put_policy(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    let bytes = body_bytes(body)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        AdminError::bad_request(
            "InvalidPolicy",
            format!(
                "The policy XML is not valid UTF-8 (byte offset {}).",
                e.valid_up_to()
            ),
        )
    })?;
    let text = text.to_owned();
    let (status, revision, stored) = write(c, move |c| {
        let (status, revision) = c.put_policy(&id, &text, &expect)?;
        Ok((status, revision, c.policy(&id)?))
    })
    .await?;
    Ok(with_etag(xml(status_of(status), stored), Some(revision)))
}

async fn delete_policy(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    let expect = expectation(&headers)?;
    write(c, move |c| c.delete_policy(&id, &expect)).await?;
    Ok(StatusCode::NO_CONTENT)
}
