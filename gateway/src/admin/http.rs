//! The management REST API of contract §3 on axum: routes, bearer-token check, body
//! limits, and the mapping of every failure (including axum's own rejections, unknown
//! routes and wrong methods) to the contract's JSON error shape.

use std::sync::Arc;

use axum::body::Bytes;
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

use super::rest::{ApiBody, BackendBody, CertificateBody, CertificateResource};
use super::{AdminError, AdminToken, ControlPlane, Expect, Written};
use crate::model::ResourceId;
use crate::secret::Secret;
use crate::store::Kind;

/// The largest request body accepted (1 MiB); larger ones get 413 `PayloadTooLarge`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

type Control = State<Arc<ControlPlane>>;

/// The management API: every route of contract §3 behind the bearer `token`.
pub fn router(control: Arc<ControlPlane>, token: AdminToken) -> Router {
    let auth = Arc::new(token);
    Router::new()
        .route("/certificates", get(list_certificates))
        .route(
            "/certificates/{id}",
            get(get_certificate)
                .put(put_certificate)
                .delete(delete_certificate),
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

/// Checks the bearer token on every request (known routes or not), and turns axum's bare
/// 405 into the JSON error shape (keeping its `Allow` header).
async fn guard(State(auth): State<Arc<AdminToken>>, request: Request, next: Next) -> Response {
    if !authorized(&auth, request.headers()) {
        return AdminError::unauthorized().into_response();
    }
    let method = request.method().clone();
    let response = next.run(request).await;
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
