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
use super::{AdminError, AdminToken, ControlPlane, Written};
use crate::model::ResourceId;
use crate::secret::Secret;

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

fn written(status: Written, body: impl Serialize) -> Response {
    let code = match status {
        Written::Created => StatusCode::CREATED,
        Written::Replaced => StatusCode::OK,
    };
    (code, Json(body)).into_response()
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
) -> Result<Json<CertificateResource>, AdminError> {
    let id = resource_id(path)?;
    let info = c
        .certificate(&id)
        .ok_or_else(|| AdminError::not_found("certificate", &id))?;
    Ok(Json(CertificateResource::new(&id, &info)))
}

async fn put_certificate(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
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
    let (status, info) = {
        let id = id.clone();
        write(c, move |c| {
            c.put_certificate(id, der.expose(), password.expose())
        })
        .await?
    };
    Ok(written(status, CertificateResource::new(&id, &info)))
}

async fn delete_certificate(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    write(c, move |c| c.delete_certificate(&id)).await?;
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
    let b = c
        .backend(&id)
        .ok_or_else(|| AdminError::not_found("backend", &id))?;
    Ok(Json(b).into_response())
}

async fn put_backend(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let body: BackendBody = json_body(body)?;
    let (status, resource) = write(c, move |c| c.put_backend(id, &body)).await?;
    Ok(written(status, resource))
}

async fn delete_backend(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    write(c, move |c| c.delete_backend(&id)).await?;
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
    let a = c
        .api(&id)
        .ok_or_else(|| AdminError::not_found("API", &id))?;
    Ok(Json(a).into_response())
}

async fn put_api(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    let body: ApiBody = json_body(body)?;
    let (status, resource) = write(c, move |c| c.put_api(id, &body)).await?;
    Ok(written(status, resource))
}

async fn delete_api(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    write(c, move |c| c.delete_api(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_policy(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
    Ok(xml(StatusCode::OK, c.policy(&id)?))
}

async fn put_policy(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let id = resource_id(path)?;
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
    let (status, stored) = write(c, move |c| {
        let status = c.put_policy(&id, &text)?;
        Ok((status, c.policy(&id)?))
    })
    .await?;
    let code = match status {
        Written::Created => StatusCode::CREATED,
        Written::Replaced => StatusCode::OK,
    };
    Ok(xml(code, stored))
}

async fn delete_policy(
    State(c): Control,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, AdminError> {
    let id = resource_id(path)?;
    write(c, move |c| c.delete_policy(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
