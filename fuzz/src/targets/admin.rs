//! `admin`: the admin API's JSON (and policy XML) bodies, through the real router
//! (`gateway::admin::router`) on a control plane whose store is in memory (the `Store`
//! trait), starting every case from the same resources: certificate `c1`, backends `b1`
//! (bound to `c1` by id), `b2` (by thumbprint) and `b3` (plain http), APIs `a1` (on `b1`,
//! with a policy naming `c1`) and `a2` (on `b3`).
//!
//! An input is one to four requests separated by a line `---`; each is a request line
//! (`PUT /backends/b9`), header lines, an empty line and the body. The bearer token is
//! added unless the input has its own `Authorization` line.
//!
//! Properties, beyond "no panic" (on any thread):
//! - errors are errors: no answer is a 5xx; every 4xx is the contract's JSON error shape
//!   (`{"error": {"code", "message", "details"}}`); a body that does not deserialise
//!   into the route's body type (`BackendBody`, `ApiBody`, `CertificateBody`), or that
//!   does but does not validate into a backend or API, is answered 400 (or 401 / 413);
//! - no answer holds the certificate password of the request;
//! - a resource written with 200/201 reads back (GET) as the write answered it; a
//!   `BackendBody` or `ApiBody` re-serialised deserialises to the same body.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use gateway::admin::rest::{ApiBody, BackendBody, CertificateBody, CredentialsBody, TlsBody};
use gateway::admin::{router, AdminToken, ControlPlane, Expect};
use gateway::model::{Api, Backend, ResourceId};
use gateway::secret::Secret;
use gateway::store::{
    Condition, Contents, Kind, MasterKey, Record, Store, StoreError, Transaction,
};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::engine::{Outcome, Target};
use crate::gen::{chance, from_alphabet, pick, text_string, ID_CHARS};
use crate::targets::pkcs12::split;

const TOKEN: &str = "fuzz-admin-token-0123456789";
const MASTER_KEY: [u8; 32] = [0x5a; 32];

/// The seeds whose files the certificate bodies carry (the first is `c1`'s: an EC key, as
/// an RSA key costs every case a key check when the control plane loads).
const FILES: &[&[u8]] = &[
    include_bytes!("../../corpus/pkcs12/p256-legacy-3des.bin"),
    include_bytes!("../../corpus/pkcs12/rsa-aes-secret.bin"),
    include_bytes!("../../corpus/pkcs12/rsa-one-iteration.bin"),
    include_bytes!("../../corpus/pkcs12/expired.bin"),
    include_bytes!("../../corpus/pkcs12/cert-only.bin"),
];

const DICTIONARY: &[&[u8]] = &[
    b"PUT /backends/b1\n\n",
    b"PUT /apis/a1\n\n",
    b"PUT /apis/a1/policy\n\n",
    b"PUT /certificates/c1\n\n",
    b"DELETE /certificates/c1\n\n",
    b"\n---\n",
    b"If-Match: \"1\"\n",
    b"If-Match: *\n",
    b"\"url\": \"https://h/b\"",
    b"\"tls\": {\"validateCertificateChain\": false}",
    b"\"credentials\": {\"certificateId\": \"c1\"}",
    b"\"certificateThumbprint\": \"",
    b"\"path\": \"/x\"",
    b"\"backendId\": \"b1\"",
    b"\"data\": \"",
    b"\"password\": \"secret\"",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"[]",
    b"{}",
    b"%2e%2e",
];

/// A store in memory with the embedded store's semantics: one revision per commit,
/// conditions checked, nothing written when one fails.
#[derive(Clone, Default)]
struct MemStore(Arc<Mutex<MemState>>);

#[derive(Clone, Default)]
struct MemState {
    contents: Contents,
    /// Per kind, the revision of its last put.
    written: BTreeMap<Kind, u64>,
}

impl MemStore {
    fn state(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemStore {
    fn load(&self) -> Result<Contents, StoreError> {
        Ok(self.state().contents.clone())
    }

    fn commit(&self, transaction: &Transaction) -> Result<u64, StoreError> {
        let mut state = self.state();
        for condition in &transaction.conditions {
            let holds = match condition {
                Condition::At { kind, id, revision } => {
                    let current = state
                        .contents
                        .records
                        .iter()
                        .find(|r| r.kind == *kind && r.id == *id)
                        .map_or(0, |r| r.revision);
                    current == *revision
                }
                Condition::NoneWrittenAfter { kind, revision } => {
                    state.written.get(kind).copied().unwrap_or(0) <= *revision
                }
            };
            if !holds {
                return Err(StoreError::Conflict(format!("{condition:?}")));
            }
        }
        if transaction.changes.is_empty() {
            return Ok(state.contents.revision);
        }
        let revision = state.contents.revision + 1;
        for change in &transaction.changes {
            let (kind, id) = change.key();
            state
                .contents
                .records
                .retain(|r| !(r.kind == kind && r.id == id));
            if let gateway::store::Change::Put { value, .. } = change {
                state.contents.records.push(Record {
                    kind,
                    id: id.to_owned(),
                    value: value.clone(),
                    revision,
                });
                state.written.insert(kind, revision);
            }
        }
        state
            .contents
            .records
            .sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        state.contents.revision = revision;
        Ok(revision)
    }
}

/// A router on a control plane loaded from `state`, and its store.
fn fresh_app(state: MemState) -> Result<(Router, MemStore), String> {
    let contents = state.contents.clone();
    let store = MemStore(Arc::new(Mutex::new(state)));
    let control = ControlPlane::from_contents(
        Box::new(store.clone()),
        contents,
        MasterKey::from_bytes(MASTER_KEY),
        Box::new(|_| {}),
    )
    .map_err(|e| format!("setup: {e}"))?;
    let app = router(
        Arc::new(control),
        AdminToken::new(Secret::new(TOKEN.to_owned())),
    );
    Ok((app, store))
}

fn id(s: &str) -> Result<ResourceId, String> {
    ResourceId::parse(s).map_err(|_| format!("setup: id {s}"))
}

/// The resources every case starts from.
fn base_state() -> Result<(MemState, String), String> {
    let store = MemStore::default();
    let control = ControlPlane::open(
        Box::new(store.clone()),
        MasterKey::from_bytes(MASTER_KEY),
        Box::new(|_| {}),
    )
    .map_err(|e| format!("setup: {e}"))?;
    let (password, der) = split(FILES[0]);
    let any = Expect::Anything;
    let (_, info, _) = control
        .put_certificate(id("c1")?, der, &password, &any)
        .map_err(|e| format!("setup: c1: {}", e.message))?;
    let thumbprint = info.thumbprint.to_string();
    let backend = |url: &str, credentials: Option<CredentialsBody>| BackendBody {
        url: url.to_owned(),
        tls: Some(TlsBody {
            validate_certificate_chain: false,
            validate_certificate_name: true,
            ..TlsBody::default()
        }),
        credentials,
    };
    let by_id = CredentialsBody {
        certificate_id: Some("c1".into()),
        certificate_thumbprint: None,
    };
    let by_thumbprint = CredentialsBody {
        certificate_id: None,
        certificate_thumbprint: Some(thumbprint.clone()),
    };
    for (name, body) in [
        ("b1", backend("https://127.0.0.1:9443/api", Some(by_id))),
        (
            "b2",
            backend("https://backend.example:8443", Some(by_thumbprint)),
        ),
        ("b3", backend("http://[::1]:8080/plain", None)),
    ] {
        control
            .put_backend(id(name)?, &body, &any)
            .map_err(|e| format!("setup: {name}: {}", e.message))?;
    }
    for (name, path, backend) in [("a1", "/orders", "b1"), ("a2", "/v2/items", "b3")] {
        let body = ApiBody {
            path: path.into(),
            backend_id: backend.into(),
        };
        control
            .put_api(id(name)?, &body, &any)
            .map_err(|e| format!("setup: {name}: {}", e.message))?;
    }
    control
        .put_policy(
            &id("a1")?,
            "<policies><inbound><base /><authentication-certificate certificate-id=\"c1\" /></inbound></policies>",
            &any,
        )
        .map_err(|e| format!("setup: policy: {}", e.message))?;
    let state = store.state().clone();
    Ok((state, thumbprint))
}

pub struct AdminBodies {
    runtime: tokio::runtime::Runtime,
    base: MemState,
    thumbprint: String,
    /// The last case's router while nothing was committed since the base state (loading
    /// a control plane costs more than most cases): every case still starts from the base.
    unchanged: Option<(Router, MemStore)>,
}

impl AdminBodies {
    pub fn new() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("setup: {e}"))?;
        let (base, thumbprint) = base_state()?;
        Ok(Self {
            runtime,
            base,
            thumbprint,
            unchanged: None,
        })
    }
}

/// One request of an input.
struct Call {
    method: Method,
    uri: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

fn parse_call(text: &[u8]) -> Option<Call> {
    let (head, body) = match text.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&text[..i], text[i + 2..].to_vec()),
        None => (text, Vec::new()),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let first = lines.next()?.trim_end_matches('\r');
    let (method, uri) = first.split_once(' ').unwrap_or(("GET", first));
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.trim_end_matches('\r').split_once(':')?;
        headers.push((
            HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            HeaderValue::from_str(value.trim()).ok()?,
        ));
    }
    Some(Call {
        method,
        uri: uri.to_owned(),
        headers,
        body,
    })
}

/// What a route is, for the checks and the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Route {
    Certificate,
    Backend,
    Api,
    Policy,
    Other,
}

fn route_of(uri: &str) -> Route {
    // The path as the router sees it (no query, no fragment).
    let path = uri
        .parse::<axum::http::Uri>()
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", _, ""] | ["", _, "", _] => Route::Other,
        ["", "certificates", _] => Route::Certificate,
        ["", "backends", _] => Route::Backend,
        ["", "apis", _] => Route::Api,
        ["", "apis", _, "policy"] => Route::Policy,
        _ => Route::Other,
    }
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

async fn send(router: &Router, call: &Call) -> Result<Answer, String> {
    let mut req = Request::builder()
        .method(call.method.clone())
        .uri(call.uri.as_str());
    let mut authorized = false;
    for (name, value) in &call.headers {
        authorized |= name == header::AUTHORIZATION;
        req = req.header(name, value);
    }
    if !authorized {
        req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    let req = req
        .body(Body::from(call.body.clone()))
        .map_err(|e| format!("setup: request: {e}"))?;
    let res = router
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| format!("router: {e}"))?;
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}

fn is_error_shape(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let e = &v["error"];
    e["code"].is_string() && e["message"].is_string() && e["details"].is_array()
}

/// Whether the body deserialises into the route's body type and validates: None when the
/// route takes no JSON body.
fn body_verdict(route: Route, body: &[u8]) -> Result<Option<(bool, bool)>, String> {
    // The id plays no part in validating a body.
    let rid = id("x")?;
    Ok(match route {
        Route::Backend => Some(match serde_json::from_slice::<BackendBody>(body) {
            Err(_) => (false, false),
            Ok(b) => {
                let text = serde_json::to_vec(&b).map_err(|e| format!("serialise: {e}"))?;
                match serde_json::from_slice::<BackendBody>(&text) {
                    Ok(again) if again == b => {}
                    other => {
                        return Err(format!(
                            "body-round-trip: {b:?} re-serialised reads as {other:?}"
                        ))
                    }
                }
                (true, Backend::try_from((rid, &b)).is_ok())
            }
        }),
        Route::Api => Some(match serde_json::from_slice::<ApiBody>(body) {
            Err(_) => (false, false),
            Ok(b) => {
                let text = serde_json::to_vec(&b).map_err(|e| format!("serialise: {e}"))?;
                match serde_json::from_slice::<ApiBody>(&text) {
                    Ok(again) if again == b => {}
                    other => {
                        return Err(format!(
                            "body-round-trip: {b:?} re-serialised reads as {other:?}"
                        ))
                    }
                }
                (true, Api::try_from((rid, &b)).is_ok())
            }
        }),
        Route::Certificate => Some(match serde_json::from_slice::<CertificateBody>(body) {
            Err(_) => (false, false),
            Ok(_) => (true, true),
        }),
        Route::Policy | Route::Other => None,
    })
}

impl AdminBodies {
    async fn run_calls(&self, app: &Router, calls: &[Call]) -> Result<Outcome, String> {
        let app = app.clone();
        let mut shape = Vec::new();
        for call in calls {
            if call.uri.parse::<axum::http::Uri>().is_err() {
                shape.push((Route::Other, 0u16, String::new()));
                continue;
            }
            let answer = send(&app, call).await?;
            let status = answer.status;
            let route = route_of(&call.uri);
            let code = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let what = || {
                format!(
                    "{} {} answered {status} {:?}",
                    call.method,
                    call.uri,
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                )
            };
            if status.is_server_error() {
                return Err(format!("no-5xx: {}", what()));
            }
            // A HEAD answer has no body (axum drops the GET handler's).
            if status.is_client_error()
                && call.method != Method::HEAD
                && !is_error_shape(&answer.body)
            {
                return Err(format!("error-shape: {}", what()));
            }
            if let Some(password) = serde_json::from_slice::<Value>(&call.body)
                .ok()
                .and_then(|v| v["password"].as_str().map(str::to_owned))
            {
                if password.len() >= 8
                    && String::from_utf8_lossy(&answer.body).contains(password.as_str())
                {
                    return Err(format!("password-leak: {}", what()));
                }
            }
            if call.method == Method::PUT {
                if let Some((deserialises, validates)) = body_verdict(route, &call.body)? {
                    let refused = matches!(status.as_u16(), 400 | 401 | 413);
                    if (!deserialises || !validates) && !refused {
                        return Err(format!(
                            "bad-body-refused: a body that {} {}",
                            if deserialises {
                                "does not validate"
                            } else {
                                "does not deserialise"
                            },
                            what()
                        ));
                    }
                }
                if status.is_success() && route != Route::Other {
                    let get = Call {
                        method: Method::GET,
                        uri: call.uri.clone(),
                        headers: Vec::new(),
                        body: Vec::new(),
                    };
                    let again = send(&app, &get).await?;
                    let same = if route == Route::Policy {
                        again.body == answer.body
                    } else {
                        serde_json::from_slice::<Value>(&again.body).ok()
                            == serde_json::from_slice::<Value>(&answer.body).ok()
                    };
                    if again.status != StatusCode::OK || !same {
                        return Err(format!(
                            "reads-back: {}; then GET answered {} {:?}",
                            what(),
                            again.status,
                            String::from_utf8_lossy(&again.body[..again.body.len().min(300)])
                        ));
                    }
                }
            }
            shape.push((route, status.as_u16(), code));
        }
        let class = match shape.last().map(|s| s.1 / 100) {
            Some(2) => "2xx",
            Some(3) => "3xx",
            Some(4) => "4xx",
            _ => "other",
        };
        Ok(Outcome::with(class, shape))
    }
}

// ---- the generator ----

fn resource_id(rng: &mut StdRng, kind: Route) -> String {
    match rng.random_range(0..12) {
        0 => {
            let n = rng.random_range(1..90);
            String::from_utf8_lossy(&from_alphabet(rng, ID_CHARS, n)).into_owned()
        }
        1 => pick(
            rng,
            &[
                "a%20b",
                "%2e%2e",
                "..",
                "x".repeat(81).as_str(),
                "%ff",
                "\u{e9}",
            ],
        )
        .to_owned(),
        _ => match kind {
            Route::Certificate => pick(rng, &["c1", "c1", "c2", "c3"]).to_owned(),
            Route::Backend => pick(rng, &["b1", "b2", "b3", "b4"]).to_owned(),
            _ => pick(rng, &["a1", "a2", "a3"]).to_owned(),
        },
    }
}

fn json_string(rng: &mut StdRng, good: &[&str]) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => json!(rng.random::<i64>()),
        2 => json!(true),
        3 => json!([]),
        4 => json!({}),
        5 => json!(text_string(rng, 20)),
        _ => json!(pick(rng, good)),
    }
}

fn certificate_data(rng: &mut StdRng) -> (Value, Value) {
    let file = FILES[rng.random_range(..FILES.len())];
    let (password, der) = split(file);
    let mut der = der.to_vec();
    if chance(rng, 0.2) && !der.is_empty() {
        let at = rng.random_range(..der.len());
        der[at] ^= 1 << rng.random_range(0..8);
    }
    if chance(rng, 0.1) {
        der.truncate(rng.random_range(0..=der.len()));
    }
    let mut b64 = BASE64.encode(&der);
    match rng.random_range(0..12) {
        0 => {
            // PEM-like line breaks.
            let lines: Vec<String> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            b64 = lines.join("\r\n");
        }
        1 => b64 = b64.trim_end_matches('=').to_owned(),
        2 => b64 = b64.replace('+', "-").replace('/', "_"),
        3 => b64.insert(rng.random_range(0..=b64.len()), '!'),
        4 => b64 = String::new(),
        5 => b64 = "   ".into(),
        _ => {}
    }
    let password = match rng.random_range(0..8) {
        0 => json!("wrong-password"),
        1 => json!(""),
        2 => json!(format!("{password}\u{0}")),
        3 => Value::Null,
        _ => json!(password),
    };
    (json!(b64), password)
}

fn body_for(rng: &mut StdRng, route: Route, thumbprint: &str) -> Vec<u8> {
    let mut v = match route {
        Route::Certificate => {
            let (data, password) = certificate_data(rng);
            json!({"data": data, "password": password})
        }
        Route::Backend => {
            let url = json_string(
                rng,
                &[
                    "https://127.0.0.1:9443/api",
                    "https://backend.example",
                    "http://plain.example:8080/base/",
                    "https://[::1]:1/x",
                    "https://x/../y",
                    "https://u@x",
                    "ftp://x",
                    "https://x:99999",
                    "https://localhost:9443/a?b",
                    "",
                ],
            );
            let mut v = json!({ "url": url });
            if chance(rng, 0.5) {
                v["tls"] = match rng.random_range(0..5) {
                    0 => json!({}),
                    1 => json!({"validateCertificateChain": false}),
                    2 => json!({"validateCertificateName": "no"}),
                    3 => json!(null),
                    _ => {
                        json!({"validateCertificateChain": false, "validateCertificateName": false})
                    }
                };
            }
            if chance(rng, 0.5) {
                let t = thumbprint.to_owned();
                let lower = thumbprint.to_ascii_lowercase();
                v["credentials"] = match rng.random_range(0..7) {
                    0 => json!({"certificateId": "c1"}),
                    1 => json!({"certificateThumbprint": t}),
                    2 => json!({"certificateThumbprint": lower}),
                    3 => json!({"certificateId": "c1", "certificateThumbprint": t}),
                    4 => json!({}),
                    5 => json!({"certificateId": "nope"}),
                    _ => json!({"certificateId": json_string(rng, &["c1", "c 1", ""])}),
                };
            }
            v
        }
        Route::Api => json!({
            "path": json_string(rng, &["/orders", "/", "/a/b/", "orders", "/a/../b", "/a?b", "/v2/items", "/orders/x"]),
            "backendId": json_string(rng, &["b1", "b2", "b3", "b4", "b 1", ""]),
        }),
        Route::Policy => return crate::targets::policy::document(rng).into_bytes(),
        Route::Other => json!({}),
    };
    if chance(rng, 0.15) {
        if let Some(obj) = v.as_object_mut() {
            match rng.random_range(0..4) {
                0 => {
                    obj.insert("extra".into(), json!(1));
                }
                1 => {
                    let keys: Vec<String> = obj.keys().cloned().collect();
                    if let Some(k) = keys.first() {
                        obj.remove(k);
                    }
                }
                2 => v = json!([v]),
                _ => v = json!(text_string(rng, 10)),
            }
        }
    }
    let mut text = serde_json::to_vec(&v).unwrap_or_default();
    match rng.random_range(0..20) {
        0 => text.truncate(rng.random_range(0..=text.len())),
        // A duplicated member.
        1 if text.len() > 2 => {
            let inner = text[1..text.len() - 1].to_vec();
            text.pop();
            text.push(b',');
            text.extend(inner);
            text.push(b'}');
        }
        2 => {
            let depth = rng.random_range(100..200);
            text = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
        3 => text = b"  \n ".to_vec(),
        _ => {}
    }
    text
}

fn call_text(rng: &mut StdRng, thumbprint: &str) -> Vec<u8> {
    let route = *pick(
        rng,
        &[
            &Route::Certificate,
            &Route::Backend,
            &Route::Backend,
            &Route::Api,
            &Route::Api,
            &Route::Policy,
            &Route::Other,
        ],
    );
    let method = match rng.random_range(0..10) {
        0 => "GET",
        1 => "DELETE",
        2 => pick(rng, &["POST", "PATCH", "HEAD", "OPTIONS"]),
        _ => "PUT",
    };
    let path = match route {
        Route::Certificate => format!("/certificates/{}", resource_id(rng, route)),
        Route::Backend => format!("/backends/{}", resource_id(rng, route)),
        Route::Api => format!("/apis/{}", resource_id(rng, route)),
        Route::Policy => format!("/apis/{}/policy", resource_id(rng, Route::Api)),
        Route::Other => pick(
            rng,
            &[
                "/certificates",
                "/backends",
                "/apis",
                "/",
                "/healthz",
                "/readyz",
                "/nope",
                "/apis/a1/policy/x",
            ],
        )
        .to_owned(),
    };
    let mut out = format!("{method} {path}\n").into_bytes();
    if chance(rng, 0.15) {
        let v = pick(
            rng,
            &[
                "*",
                "\"1\"",
                "\"3\", \"9\"",
                "W/\"1\"",
                "\"x\"",
                "1",
                "\"\"",
            ],
        );
        out.extend_from_slice(format!("If-Match: {v}\n").as_bytes());
    }
    if chance(rng, 0.05) {
        let v = pick(
            rng,
            &[
                "Bearer wrong",
                "Basic abc",
                "bearer fuzz-admin-token-0123456789",
                "",
            ],
        );
        out.extend_from_slice(format!("Authorization: {v}\n").as_bytes());
    }
    if chance(rng, 0.5) {
        let v = if route == Route::Policy {
            "application/xml"
        } else {
            "application/json"
        };
        out.extend_from_slice(format!("Content-Type: {v}\n").as_bytes());
    }
    out.push(b'\n');
    if method != "GET" && method != "DELETE" {
        out.extend(body_for(rng, route, thumbprint));
    }
    out
}

impl Target for AdminBodies {
    fn name(&self) -> &'static str {
        "admin"
    }

    fn generate(&mut self, rng: &mut StdRng) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..rng.random_range(1..=3) {
            if i > 0 {
                out.extend_from_slice(b"\n---\n");
            }
            out.extend(call_text(rng, &self.thumbprint));
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let calls: Vec<Call> = split_calls(input)
            .into_iter()
            .filter_map(parse_call)
            .collect();
        if calls.is_empty() {
            return Ok(Outcome::new("unparsed"));
        }
        let (app, store) = match self.unchanged.take() {
            Some(cached) => cached,
            None => fresh_app(self.base.clone())?,
        };
        let result = self.runtime.block_on(self.run_calls(&app, &calls));
        if store.state().contents.revision == self.base.contents.revision {
            self.unchanged = Some((app, store));
        }
        result
    }

    fn dictionary(&self) -> &[&'static [u8]] {
        DICTIONARY
    }

    fn max_len(&self) -> usize {
        32 * 1024
    }
}

/// Up to four requests, separated by lines `---`.
fn split_calls(input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    while out.len() < 3 {
        match rest.windows(5).position(|w| w == b"\n---\n") {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 5..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}
