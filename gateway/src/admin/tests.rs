//! Handler tests through the real router (`tower::ServiceExt::oneshot`), with PKCS#12
//! files made by the openssl CLI.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::*;
use http::MAX_BODY_BYTES;
use testkit::{temp_dir, TempDir};

use crate::model::certificate::tests::{contains, Fixtures};
use crate::store::embedded::{EmbeddedStore, FILE_NAME};

const TOKEN: &str = "test-token-0123456789";
const PASSWORD: &str = "s3cret-Pa55";

struct Harness {
    dir: TempDir,
    files: Fixtures,
    control: Arc<ControlPlane>,
    router: Router,
    published: Arc<AtomicUsize>,
}

fn master_key() -> MasterKey {
    MasterKey::from_bytes([42u8; 32])
}

fn open_control(dir: &Path, published: Arc<AtomicUsize>) -> Result<ControlPlane, StoreError> {
    let store = EmbeddedStore::open(&dir.join(FILE_NAME))?;
    ControlPlane::open(
        Box::new(store),
        master_key(),
        Box::new(move |_| {
            published.fetch_add(1, Ordering::SeqCst);
        }),
    )
}

impl Harness {
    fn new() -> Self {
        let dir = temp_dir("admin").unwrap();
        let published = Arc::new(AtomicUsize::new(0));
        let control = Arc::new(open_control(dir.path(), published.clone()).unwrap());
        let router = router(control.clone(), AdminToken::new(TOKEN.into()));
        Self {
            dir,
            files: Fixtures::new(),
            control,
            router,
            published,
        }
    }

    async fn raw(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let (status, headers, bytes) = self.raw(req.body(body).unwrap()).await;
        if bytes.is_empty() {
            return (status, Value::Null);
        }
        let ct = headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
        assert!(
            ct.starts_with("application/json"),
            "{method} {uri}: content-type {ct}"
        );
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn text(&self, method: &str, uri: &str, body: &str) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/xml")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let (status, headers, bytes) = self.raw(req).await;
        let ct = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, ct, String::from_utf8(bytes).unwrap())
    }

    fn pfx(&self, name: &str) -> String {
        BASE64.encode(self.files.read(name))
    }

    async fn upload(&self, id: &str, name: &str, password: &str) -> (StatusCode, Value) {
        let body = json!({"data": self.pfx(name), "password": password});
        self.call("PUT", &format!("/certificates/{id}"), Some(body))
            .await
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {v}"))
}

fn assert_error(status: StatusCode, v: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{v}");
    assert_eq!(code(v), want_code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(v["error"]["details"].is_array(), "{v}");
}

#[tokio::test]
async fn auth_routes_methods_and_ids() {
    let h = Harness::new();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic dGVzdA=="),
        Some("Bearer"),
        Some(TOKEN),
    ] {
        for uri in ["/certificates", "/nowhere"] {
            let mut req = Request::builder().uri(uri);
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let (status, headers, body) = h.raw(req.body(Body::empty()).unwrap()).await;
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_error(status, &v, 401, "Unauthorized");
            assert_eq!(headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
        }
    }
    // Scheme is case-insensitive.
    let req = Request::builder()
        .uri("/certificates")
        .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.raw(req).await.0, StatusCode::OK);

    let (s, v) = h.call("GET", "/nowhere", None).await;
    assert_error(s, &v, 404, "NotFound");
    let (s, v) = h.call("GET", "/certificates/x/y", None).await;
    assert_error(s, &v, 404, "NotFound");

    let req = Request::builder()
        .method("POST")
        .uri("/certificates/c1")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = h.raw(req).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_error(status, &v, 405, "MethodNotAllowed");
    let allow = headers.get(header::ALLOW).unwrap().to_str().unwrap();
    assert!(allow.contains("PUT") && allow.contains("DELETE"), "{allow}");
    let (s, v) = h.call("DELETE", "/certificates", None).await;
    assert_error(s, &v, 405, "MethodNotAllowed");

    let long = "a".repeat(81);
    for uri in [
        "/certificates/bad!id".to_owned(),
        format!("/certificates/{long}"),
        "/certificates/a%20b".to_owned(),
        "/backends/%C3%A9".to_owned(),
        "/apis/a:b/policy".to_owned(),
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let body = (method == "PUT").then(|| json!({}));
            let (s, v) = h.call(method, &uri, body).await;
            assert_error(s, &v, 400, "InvalidId");
        }
    }
    let ok_id = "A-z_0.9".to_owned() + &"x".repeat(73);
    let (s, v) = h.call("GET", &format!("/certificates/{ok_id}"), None).await;
    assert_error(s, &v, 404, "NotFound");
    assert_eq!(
        h.published.load(Ordering::SeqCst),
        1,
        "only the initial publish"
    );
}

#[tokio::test]
async fn certificate_upload_codes() {
    let h = Harness::new();
    let (s, v) = h.upload("c1", "modern.p12", PASSWORD).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "expirationDate",
            "id",
            "issuer",
            "keyAlgorithm",
            "notBefore",
            "selfSigned",
            "subject",
            "thumbprint"
        ]
    );
    assert_eq!(v["id"], "c1");
    assert_eq!(v["subject"], "CN=client-1, O=Contoso");
    assert_eq!(v["selfSigned"], true);
    assert_eq!(v["keyAlgorithm"], "RSA-2048");
    let thumb = v["thumbprint"].as_str().unwrap();
    assert!(
        thumb.len() == 40
            && thumb
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    );
    let exp = v["expirationDate"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(exp, &time::format_description::well_known::Rfc3339).is_ok()
    );
    assert!(exp.ends_with('Z') && exp.len() == 20, "{exp}");

    let (s, v2) = h.upload("c1", "legacy.p12", PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    assert_eq!(v2["thumbprint"], v["thumbprint"]);
    let (s, v3) = h.upload("c0", "chain.p12", "").await;
    assert_eq!(s, StatusCode::CREATED, "{v3}");
    assert_eq!(v3["issuer"], "CN=Test CA, O=Contoso");
    assert_eq!(v3["selfSigned"], false);
    assert_eq!(v3["keyAlgorithm"], "EC-P256");

    let (s, list) = h.call("GET", "/certificates", None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c0", "c1"]);
    let (s, one) = h.call("GET", "/certificates/c1", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one, v2);
    let (s, v) = h.call("GET", "/certificates/nope", None).await;
    assert_error(s, &v, 404, "NotFound");

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"data": h.pfx("modern.p12"), "password": "nope"}),
            "WrongPassword",
        ),
        (
            json!({"data": h.pfx("legacy.p12"), "password": ""}),
            "WrongPassword",
        ),
        (
            json!({"data": BASE64.encode(b"not a pfx"), "password": "x"}),
            "InvalidPkcs12",
        ),
        (
            json!({"data": h.pfx("nokey.p12"), "password": "pw"}),
            "MissingPrivateKey",
        ),
        (
            json!({"data": h.pfx("mismatch.p12"), "password": "pw"}),
            "KeyMismatch",
        ),
        (
            json!({"data": h.pfx("mismatch-rsa.p12"), "password": "pw"}),
            "KeyMismatch",
        ),
        (
            json!({"data": h.pfx("old.p12"), "password": "pw"}),
            "CertificateExpired",
        ),
        (
            json!({"data": "!!!not base64", "password": "x"}),
            "InvalidRequest",
        ),
        (json!({"data": h.pfx("modern.p12")}), "InvalidRequest"),
        (
            json!({"data": h.pfx("modern.p12"), "password": PASSWORD, "extra": 1}),
            "InvalidRequest",
        ),
        (json!({"data": 5, "password": PASSWORD}), "InvalidRequest"),
        (json!(["x"]), "InvalidRequest"),
    ];
    for (body, want) in cases {
        let (s, v) = h.call("PUT", "/certificates/c9", Some(body)).await;
        assert_error(s, &v, 400, want);
    }
    // Not JSON at all, and an empty body.
    for raw in ["{\"data\": ", "", "data=x"] {
        let req = Request::builder()
            .method("PUT")
            .uri("/certificates/c9")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(raw))
            .unwrap();
        let (status, _, body) = h.raw(req).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_error(status, &v, 400, "InvalidRequest");
    }
    // Too large.
    let big = json!({"data": "A".repeat(2 * 1024 * 1024), "password": ""});
    let (s, v) = h.call("PUT", "/certificates/c9", Some(big)).await;
    assert_error(s, &v, 413, "PayloadTooLarge");
    let (s, _) = h.call("GET", "/certificates/c9", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Whitespace (line-wrapped base64) is fine.
    let wrapped: String = h
        .pfx("ed.p12")
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let (s, v) = h
        .call(
            "PUT",
            "/certificates/ed",
            Some(json!({"data": wrapped, "password": "pw"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["keyAlgorithm"], "Ed25519");
    // 1 initial + 3 successful uploads + ed.
    assert_eq!(h.published.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn backends_apis_policies_and_references() {
    let h = Harness::new();
    let (_, cert) = h.upload("c1", "modern.p12", PASSWORD).await;
    let thumb = cert["thumbprint"].as_str().unwrap().to_owned();

    // Backends.
    let (s, v) = h
        .call(
            "PUT",
            "/backends/b1",
            Some(json!({"url": "https://h:8443/base/", "credentials": {"certificateId": "nope"}})),
        )
        .await;
    assert_error(s, &v, 400, "CertificateNotFound");
    let (s, v) = h.call("PUT", "/backends/b1", Some(json!({"url": "https://h:8443/base/", "credentials": {"certificateThumbprint": "AB".repeat(20)}}))).await;
    assert_error(s, &v, 400, "CertificateNotFound");
    for bad in [
        json!({"url": "http://h", "credentials": {"certificateId": "c1"}}),
        json!({"url": "https://h?x=1"}),
        json!({"url": "ftp://h"}),
        json!({"url": "https://h", "credentials": {}}),
        json!({"url": "https://h", "credentials": {"certificateId": "c1", "certificateThumbprint": thumb}}),
        json!({"url": "https://h", "tls": {"validate": true}}),
        json!({"tls": {}}),
    ] {
        let (s, v) = h.call("PUT", "/backends/b1", Some(bad)).await;
        assert_error(s, &v, 400, "InvalidRequest");
    }
    let (s, v) = h
        .call(
            "PUT",
            "/backends/b1",
            Some(json!({"url": "https://h:8443/base/", "credentials": {"certificateId": "c1"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v,
        json!({"id": "b1", "url": "https://h:8443/base/", "tls": {"validateCertificateChain": true, "validateCertificateName": true}, "credentials": {"certificateId": "c1"}})
    );
    let (s, v) = h.call("PUT", "/backends/b2", Some(json!({"url": "https://[::1]:9443", "tls": {"validateCertificateChain": false}, "credentials": {"certificateThumbprint": thumb.to_lowercase()}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["credentials"]["certificateThumbprint"], thumb.as_str());
    assert_eq!(
        v["tls"],
        json!({"validateCertificateChain": false, "validateCertificateName": true})
    );
    let (s, v) = h
        .call(
            "PUT",
            "/backends/b3",
            Some(json!({"url": "http://plain:8080"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(v.get("credentials").is_none(), "{v}");
    let (s, v) = h
        .call(
            "PUT",
            "/backends/b3",
            Some(json!({"url": "http://plain:8081"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h.call("GET", "/backends", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 3);
    assert_eq!(v["value"][2]["url"], "http://plain:8081");
    let (s, v) = h.call("GET", "/backends/zz", None).await;
    assert_error(s, &v, 404, "NotFound");

    // APIs.
    let (s, v) = h
        .call(
            "PUT",
            "/apis/a1",
            Some(json!({"path": "/orders", "backendId": "nope"})),
        )
        .await;
    assert_error(s, &v, 400, "BackendNotFound");
    for bad in [
        json!({"path": "orders", "backendId": "b1"}),
        json!({"path": "/o?x", "backendId": "b1"}),
        json!({"path": "/o"}),
        json!({"path": "/a/../b", "backendId": "b1"}),
    ] {
        let (s, v) = h.call("PUT", "/apis/a1", Some(bad)).await;
        assert_error(s, &v, 400, "InvalidRequest");
    }
    let (s, v) = h
        .call(
            "PUT",
            "/apis/a1",
            Some(json!({"path": "/orders/", "backendId": "b1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v, json!({"id": "a1", "path": "/orders", "backendId": "b1"}));
    let (s, v) = h
        .call(
            "PUT",
            "/apis/a2",
            Some(json!({"path": "/orders", "backendId": "b2"})),
        )
        .await;
    assert_error(s, &v, 409, "PathConflict");
    assert_eq!(v["error"]["details"], json!([{"kind": "api", "id": "a1"}]));
    let (s, _) = h
        .call(
            "PUT",
            "/apis/a2",
            Some(json!({"path": "/billing", "backendId": "b2"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h
        .call(
            "PUT",
            "/apis/a1",
            Some(json!({"path": "/orders", "backendId": "b3"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.call("GET", "/apis", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["value"][0],
        json!({"id": "a1", "path": "/orders", "backendId": "b3"})
    );

    // Policies.
    let (s, ct, body) = h.text("GET", "/apis/a1/policy", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.starts_with("application/xml"), "{ct}");
    assert_eq!(body, EMPTY_POLICY);
    let (s, _, body) = h.text("PUT", "/apis/zz/policy", EMPTY_POLICY).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, _, body) = h
        .text(
            "PUT",
            "/apis/a1/policy",
            "<policies>\n  <inbound>\n    <rate-limit />\n",
        )
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_error(s, &v, 400, "InvalidPolicy");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate-limit"),
        "{v}"
    );
    let (s, _, body) = h
        .text(
            "PUT",
            "/apis/a1/policy",
            "<policies>\n<inbound>\n</outbound>",
        )
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_error(s, &v, 400, "InvalidPolicy");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line 3"),
        "{v}"
    );
    let by_missing = "<policies><inbound><base /><authentication-certificate certificate-id=\"nope\" /></inbound></policies>";
    let (s, _, body) = h.text("PUT", "/apis/a1/policy", by_missing).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_error(s, &v, 400, "CertificateNotFound");
    let by_thumb = format!("<policies>\n  <inbound><base /><authentication-certificate thumbprint=\"{thumb}\" /></inbound>\n</policies>");
    let (s, ct, body) = h.text("PUT", "/apis/a1/policy", &by_thumb).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert!(ct.starts_with("application/xml"));
    assert_eq!(body, by_thumb);
    let (s, _, _) = h.text("PUT", "/apis/a1/policy", &by_thumb).await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, body) = h.text("GET", "/apis/a1/policy", "").await;
    assert_eq!(body, by_thumb);
    // Re-putting the API keeps its policy.
    let (s, _) = h
        .call(
            "PUT",
            "/apis/a1",
            Some(json!({"path": "/orders", "backendId": "b3"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, body) = h.text("GET", "/apis/a1/policy", "").await;
    assert_eq!(body, by_thumb);
    h.control.with_resources(|r| {
        let api = &r.apis[&ResourceId::parse("a1").unwrap()];
        let cred = r.effective_credential(api).unwrap();
        assert_eq!(r.find_certificate(cred).unwrap().id.as_str(), "c1");
    });

    // Deleting what others use.
    let (s, v) = h.call("DELETE", "/certificates/c1", None).await;
    assert_error(s, &v, 409, "CertificateInUse");
    assert_eq!(
        v["error"]["details"],
        json!([{"kind": "backend", "id": "b1"}, {"kind": "backend", "id": "b2"}, {"kind": "api", "id": "a1"}])
    );
    // Replacing c1 with another thumbprint while b2 and a1 name the old thumbprint.
    let (s, v) = h.upload("c1", "chain.p12", "").await;
    assert_error(s, &v, 409, "CertificateInUse");
    assert_eq!(
        v["error"]["details"],
        json!([{"kind": "backend", "id": "b2"}, {"kind": "api", "id": "a1"}])
    );
    // Same thumbprint again: fine.
    let (s, _) = h.upload("c1", "legacy.p12", PASSWORD).await;
    assert_eq!(s, StatusCode::OK);
    // A second copy under another id keeps thumbprint references valid without c1.
    let (s, _) = h.upload("c1-copy", "modern.p12", PASSWORD).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = h.call("DELETE", "/certificates/c1", None).await;
    assert_error(s, &v, 409, "CertificateInUse");
    assert_eq!(
        v["error"]["details"],
        json!([{"kind": "backend", "id": "b1"}])
    );
    let (s, v) = h.upload("c1", "chain.p12", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, v) = h.call("DELETE", "/backends/b3", None).await;
    assert_error(s, &v, 409, "BackendInUse");
    assert_eq!(v["error"]["details"], json!([{"kind": "api", "id": "a1"}]));
    let (s, v) = h.call("DELETE", "/apis/a1/policy", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, _, body) = h.text("GET", "/apis/a1/policy", "").await;
    assert_eq!(body, EMPTY_POLICY);
    let (s, _) = h.call("DELETE", "/apis/a1", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.call("DELETE", "/apis/a1", None).await;
    assert_error(s, &v, 404, "NotFound");
    let (s, _) = h.call("DELETE", "/backends/b3", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.call("DELETE", "/backends/b3", None).await;
    assert_error(s, &v, 404, "NotFound");
    let (s, _) = h.call("DELETE", "/apis/a2", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for b in ["b1", "b2"] {
        let (s, _) = h.call("DELETE", &format!("/backends/{b}"), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    for c in ["c1", "c1-copy"] {
        let (s, _) = h.call("DELETE", &format!("/certificates/{c}"), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    let (s, v) = h.call("DELETE", "/certificates/c1", None).await;
    assert_error(s, &v, 404, "NotFound");
    let (_, v) = h.call("GET", "/certificates", None).await;
    assert_eq!(v, json!({"value": []}));
}

#[tokio::test]
async fn restart_keeps_everything_and_disk_has_no_clear_key() {
    let h = Harness::new();
    h.upload("c1", "modern.p12", PASSWORD).await;
    h.upload("c2", "chain.p12", "").await;
    h.call(
        "PUT",
        "/backends/b1",
        Some(json!({"url": "https://h/x", "credentials": {"certificateId": "c1"}})),
    )
    .await;
    h.call(
        "PUT",
        "/apis/a1",
        Some(json!({"path": "/o", "backendId": "b1"})),
    )
    .await;
    let policy = "<policies><inbound><authentication-certificate certificate-id=\"c2\"/></inbound></policies>";
    h.text("PUT", "/apis/a1/policy", policy).await;
    let (_, certs) = h.call("GET", "/certificates", None).await;
    let (_, backends) = h.call("GET", "/backends", None).await;
    let (_, apis) = h.call("GET", "/apis", None).await;
    let keys: Vec<Vec<u8>> = h.control.with_resources(|r| {
        r.certificates
            .values()
            .map(|c| c.key.private_key_to_der_pkcs8().unwrap())
            .collect()
    });
    let Harness {
        dir,
        files,
        control,
        router: old_router,
        published: _,
    } = h;
    drop(old_router);
    drop(control);

    let disk = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
    for k in &keys {
        assert!(!contains(&disk, k), "PKCS#8 key in the clear on disk");
        assert!(!contains(&disk, BASE64.encode(k).as_bytes()));
        assert!(
            !contains(&disk, &k[k.len() - 32..]),
            "key tail in the clear on disk"
        );
    }
    assert!(!contains(&disk, PASSWORD.as_bytes()), "password on disk");

    let published = Arc::new(AtomicUsize::new(0));
    let control = Arc::new(open_control(dir.path(), published.clone()).unwrap());
    assert_eq!(published.load(Ordering::SeqCst), 1);
    let h = Harness {
        router: router(control.clone(), AdminToken::new(TOKEN.into())),
        dir,
        files,
        control,
        published,
    };
    assert_eq!(h.call("GET", "/certificates", None).await.1, certs);
    assert_eq!(h.call("GET", "/backends", None).await.1, backends);
    assert_eq!(h.call("GET", "/apis", None).await.1, apis);
    assert_eq!(h.text("GET", "/apis/a1/policy", "").await.2, policy);
    h.control.with_resources(|r| {
        for c in r.certificates.values() {
            let der = c.key.private_key_to_der_pkcs8().unwrap();
            assert!(keys.contains(&der));
        }
    });

    // Another master key cannot open the certificates: a clear error naming the record.
    drop(h.router);
    drop(h.control);
    let store = EmbeddedStore::open(&h.dir.path().join(FILE_NAME)).unwrap();
    let err = ControlPlane::open(
        Box::new(store),
        MasterKey::from_bytes([1; 32]),
        Box::new(|_| {}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("certificate c1"), "{err}");
}

#[test]
fn undecodable_records_are_errors_naming_them() {
    let dir = temp_dir("corrupt").unwrap();
    for (kind, id, record) in [
        (Kind::Backend, "b1", &b"{not json"[..]),
        (
            Kind::Api,
            "a1",
            br#"{"path":"/o","backendId":"b1","policy":"<nope/>"}"#,
        ),
        (
            Kind::Certificate,
            "c1",
            br#"{"version":1,"certificates":[],"keyNonce":"","sealedKey":""}"#,
        ),
        (Kind::Backend, "bad id", br#"{"url":"https://h"}"#),
    ] {
        let path = dir.path().join(format!("{id}.redb"));
        let store = EmbeddedStore::open(&path).unwrap();
        store
            .commit(&Transaction::put(vec![], kind, id, record.to_vec()))
            .unwrap();
        let err = ControlPlane::open(Box::new(store), master_key(), Box::new(|_| {})).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{kind} \"{id}\""))
                || err.to_string().contains(&format!("{kind} {id}")),
            "{err}"
        );
    }
}

/// A store whose writes fail on demand.
struct FlakyStore {
    fail: Arc<std::sync::atomic::AtomicBool>,
    inner: EmbeddedStore,
}

impl Store for FlakyStore {
    fn load(&self) -> Result<Contents, StoreError> {
        self.inner.load()
    }
    fn commit(&self, transaction: &Transaction) -> Result<u64, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk full".into()));
        }
        self.inner.commit(transaction)
    }
}

#[tokio::test]
async fn failed_store_write_changes_nothing() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flaky_dir = temp_dir("flaky-store").unwrap();
    let store = FlakyStore {
        fail: fail.clone(),
        inner: EmbeddedStore::open(&flaky_dir.path().join(FILE_NAME)).unwrap(),
    };
    let published = Arc::new(AtomicUsize::new(0));
    let p = published.clone();
    let control = Arc::new(
        ControlPlane::open(
            Box::new(store),
            master_key(),
            Box::new(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap(),
    );
    let h = Harness {
        dir: temp_dir("flaky").unwrap(),
        files: Fixtures::new(),
        router: router(control.clone(), AdminToken::new(TOKEN.into())),
        control,
        published,
    };
    let (s, _) = h
        .call("PUT", "/backends/b1", Some(json!({"url": "https://h"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    fail.store(true, Ordering::SeqCst);
    let (s, v) = h.upload("c1", "modern.p12", PASSWORD).await;
    assert_error(s, &v, 500, "StoreError");
    let (s, v) = h
        .call("PUT", "/backends/b1", Some(json!({"url": "https://other"})))
        .await;
    assert_error(s, &v, 500, "StoreError");
    let (s, v) = h.call("DELETE", "/backends/b1", None).await;
    assert_error(s, &v, 500, "StoreError");
    let (_, v) = h.call("GET", "/backends/b1", None).await;
    assert_eq!(v["url"], "https://h");
    let (s, _) = h.call("GET", "/certificates/c1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        h.published.load(Ordering::SeqCst),
        2,
        "initial + the one successful write"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug() {
    let h = Harness::new();
    let (_, _) = h.upload("c1", "modern.p12", PASSWORD).await;
    let key_der = h.control.with_resources(|r| {
        r.certificates
            .values()
            .next()
            .unwrap()
            .key
            .private_key_to_der_pkcs8()
            .unwrap()
    });
    let key_hex = hex::encode(&key_der[key_der.len() - 24..]);
    let key_b64 = BASE64.encode(&key_der[key_der.len() - 24..]);
    let mut outputs = Vec::new();
    for (name, pw) in [
        ("modern.p12", "s3cret-Pa55-wrong"),
        ("nokey.p12", PASSWORD),
        ("mismatch.p12", PASSWORD),
        ("old.p12", PASSWORD),
    ] {
        outputs.push(h.upload("c2", name, pw).await.1.to_string());
    }
    // The password in a wrongly typed body.
    let (_, v) = h
        .call(
            "PUT",
            "/certificates/c2",
            Some(json!({"data": h.pfx("modern.p12"), "password": 12345678})),
        )
        .await;
    let s = v.to_string();
    assert!(!s.contains("12345678"), "{s}");
    let (_, v) = h
        .call(
            "PUT",
            "/certificates/c2",
            Some(json!({"data": h.pfx("modern.p12"), "password": [PASSWORD]})),
        )
        .await;
    outputs.push(v.to_string());
    outputs.push(format!("{:?}", h.control));
    h.control.with_resources(|r| outputs.push(format!("{r:?}")));
    let body: super::rest::CertificateBody =
        serde_json::from_value(json!({"data": h.pfx("modern.p12"), "password": PASSWORD})).unwrap();
    outputs.push(format!("{body:?}"));
    outputs.push(format!("{:?}", master_key()));
    for out in &outputs {
        assert!(!out.contains("s3cret"), "{out}");
        assert!(!out.contains(&key_hex) && !out.contains(&key_b64), "{out}");
        assert!(!out.contains(&hex::encode([42u8; 32])), "{out}");
    }
}
/// A write runs off the async thread and holds nothing reads need: while one is stuck in
/// its publish, a read on the same current-thread runtime answers (from the resources as
/// they were before the write), and the write completes once released. With writes on the
/// async thread, the read could not run until the write finished.
#[tokio::test]
async fn reads_answer_while_a_write_is_in_progress() {
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::time::Duration;
    let dir = temp_dir("admin-slow-write").unwrap();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, release_rx) = (Mutex::new(entered_tx), Mutex::new(release_rx));
    let hold = Arc::new(AtomicBool::new(false));
    let holding = hold.clone();
    let store = EmbeddedStore::open(&dir.path().join(FILE_NAME)).unwrap();
    let publish: Publish = Box::new(move |_| {
        if holding.load(Ordering::SeqCst) {
            entered_tx.lock().unwrap().send(()).unwrap();
            // Bounded, so a broken build fails the assertions below instead of hanging.
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
    });
    let control = Arc::new(ControlPlane::open(Box::new(store), master_key(), publish).unwrap());
    let app = router(control, AdminToken::new(TOKEN.into()));
    let request = |method: &str, uri: &str, body: Option<Value>| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
            .unwrap()
    };
    hold.store(true, Ordering::SeqCst);
    let put = tokio::spawn(app.clone().oneshot(request(
        "PUT",
        "/backends/b1",
        Some(json!({"url": "https://127.0.0.1:9"})),
    )));
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the write reached its publish");
    let listed = app
        .clone()
        .oneshot(request("GET", "/backends", None))
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let body = axum::body::to_bytes(listed.into_body(), usize::MAX)
        .await
        .unwrap();
    let listed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        listed,
        json!({"value": []}),
        "the read sees the state before the write"
    );
    release_tx.send(()).unwrap();
    let put = put.await.unwrap().unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    hold.store(false, Ordering::SeqCst);
    let got = app
        .oneshot(request("GET", "/backends/b1", None))
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
}

/// Runs against the shared database as another node would, just before this node's next
/// commit: the race a fleet has between a node's check and its commit.
type OtherNode = Box<dyn FnOnce(&EmbeddedStore) + Send>;

/// An embedded store that lets a test act as another node ([`OtherNode`]) and records
/// every transaction this node commits.
struct RacingStore {
    inner: Arc<EmbeddedStore>,
    other_node: Arc<Mutex<Option<OtherNode>>>,
    seen: Arc<Mutex<Vec<Transaction>>>,
}

impl Store for RacingStore {
    fn load(&self) -> Result<Contents, StoreError> {
        self.inner.load()
    }
    fn commit(&self, transaction: &Transaction) -> Result<u64, StoreError> {
        if let Some(other_node) = self.other_node.lock().unwrap().take() {
            other_node(&self.inner);
        }
        self.seen.lock().unwrap().push(transaction.clone());
        self.inner.commit(transaction)
    }
}

struct Race {
    h: Harness,
    store: Arc<EmbeddedStore>,
    next: Arc<Mutex<Option<OtherNode>>>,
    seen: Arc<Mutex<Vec<Transaction>>>,
}

/// A harness whose store is a [`RacingStore`].
fn race_harness() -> Race {
    let dir = temp_dir("race").unwrap();
    let inner = Arc::new(EmbeddedStore::open(&dir.path().join(FILE_NAME)).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(Mutex::new(None));
    let store = RacingStore {
        inner: inner.clone(),
        other_node: next.clone(),
        seen: seen.clone(),
    };
    let published = Arc::new(AtomicUsize::new(0));
    let p = published.clone();
    let control = Arc::new(
        ControlPlane::open(
            Box::new(store),
            master_key(),
            Box::new(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap(),
    );
    Race {
        h: Harness {
            router: router(control.clone(), AdminToken::new(TOKEN.into())),
            control,
            dir,
            files: Fixtures::new(),
            published,
        },
        store: inner,
        next,
        seen,
    }
}

fn put_change(kind: Kind, id: &str, value: &[u8]) -> Transaction {
    Transaction::put(vec![], kind, id, value.to_vec())
}

async fn etag_of(h: &Harness, uri: &str) -> Option<String> {
    let req = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = h.raw(req).await;
    headers
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn with_if_match(
    h: &Harness,
    method: &str,
    uri: &str,
    if_match: &str,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::IF_MATCH, if_match)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let (s, headers, bytes) = h.raw(req).await;
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (s, headers, v)
}

#[tokio::test]
async fn etags_and_if_match() {
    let h = Harness::new();
    let b = json!({"url": "https://h"});
    let (s, headers, _) = with_if_match(&h, "PUT", "/backends/b1", "*", Some(b.clone())).await;
    assert_eq!(
        s,
        StatusCode::PRECONDITION_FAILED,
        "If-Match: * needs the resource"
    );
    assert!(headers.get(header::ETAG).is_none());
    let (s, _) = h.call("PUT", "/backends/b1", Some(b.clone())).await;
    assert_eq!(s, StatusCode::CREATED);
    let first = etag_of(&h, "/backends/b1").await.unwrap();
    assert_eq!(first, "\"1\"");

    // The right tag: the write goes through and the response carries the new tag.
    let b2 = json!({"url": "https://h2"});
    let (s, headers, v) = with_if_match(&h, "PUT", "/backends/b1", &first, Some(b2.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let second = headers
        .get(header::ETAG)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, first);
    assert_eq!(etag_of(&h, "/backends/b1").await.unwrap(), second);

    // A stale tag, a weak tag, a tag that is not ours: 412, nothing changes.
    for stale in [first.as_str(), "W/\"2\"", "\"abc\""] {
        let (s, _, v) = with_if_match(
            &h,
            "PUT",
            "/backends/b1",
            stale,
            Some(json!({"url": "https://x"})),
        )
        .await;
        assert_error(s, &v, 412, "PreconditionFailed");
        let (s, _, v) = with_if_match(&h, "DELETE", "/backends/b1", stale, None).await;
        assert_error(s, &v, 412, "PreconditionFailed");
    }
    let (_, v) = h.call("GET", "/backends/b1", None).await;
    assert_eq!(v["url"], "https://h2");
    // A list with the current tag matches; a malformed header is 400.
    let list = format!("\"999\", {second}");
    let (s, _, _) = with_if_match(&h, "PUT", "/backends/b1", &list, Some(b.clone())).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, v) = with_if_match(&h, "PUT", "/backends/b1", "3", Some(b.clone())).await;
    assert_error(s, &v, 400, "InvalidRequest");

    // A policy has its API's tag; If-Match on DELETE with the current tag deletes.
    let (s, _) = h
        .call(
            "PUT",
            "/apis/a1",
            Some(json!({"path": "/o", "backendId": "b1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let api_tag = etag_of(&h, "/apis/a1").await.unwrap();
    assert_eq!(etag_of(&h, "/apis/a1/policy").await.unwrap(), api_tag);
    let (s, _, _) = with_if_match(&h, "DELETE", "/apis/a1", &api_tag, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(etag_of(&h, "/apis/a1").await.is_none());
    let (s, up) = h.upload("c1", "modern.p12", PASSWORD).await;
    assert_eq!(s, StatusCode::CREATED, "{up}");
    assert!(etag_of(&h, "/certificates/c1").await.is_some());
}

#[tokio::test]
async fn a_write_that_lost_a_race_is_409_and_changes_nothing() {
    let race = race_harness();
    let h = &race.h;
    let (s, _) = h
        .call("PUT", "/backends/b1", Some(json!({"url": "https://h"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let published = h.published.load(Ordering::SeqCst);

    // Another node replaces b1 between this node's check and its commit.
    *race.next.lock().unwrap() = Some(Box::new(|store: &EmbeddedStore| {
        let record = br#"{"schema":1,"url":"https://other-node"}"#;
        store
            .commit(&put_change(Kind::Backend, "b1", record))
            .unwrap();
    }));
    let (s, v) = h
        .call("PUT", "/backends/b1", Some(json!({"url": "https://mine"})))
        .await;
    assert_error(s, &v, 409, "Conflict");
    assert_eq!(
        h.published.load(Ordering::SeqCst),
        published,
        "nothing applied"
    );
    let (_, v) = h.call("GET", "/backends/b1", None).await;
    assert_eq!(
        v["url"], "https://h",
        "memory unchanged until the change arrives"
    );
    // The other node's change arrives (as a watch would bring it): one publish, and a
    // second delivery of the same change is a no-op.
    let contents = race.store.load().unwrap();
    assert!(h.control.reload(&contents));
    assert!(!h.control.reload(&contents));
    assert_eq!(h.published.load(Ordering::SeqCst), published + 1);
    let (_, v) = h.call("GET", "/backends/b1", None).await;
    assert_eq!(v["url"], "https://other-node");
}

#[tokio::test]
async fn a_delete_racing_a_bind_on_another_node_loses() {
    let race = race_harness();
    let h = &race.h;
    let (s, v) = h.upload("c1", "modern.p12", PASSWORD).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = h
        .call("PUT", "/backends/b0", Some(json!({"url": "https://h"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    race.seen.lock().unwrap().clear();

    // While this node deletes c1 (nothing refers to it in its view), another node binds
    // a backend to it.
    *race.next.lock().unwrap() = Some(Box::new(|store: &EmbeddedStore| {
        let record = br#"{"schema":1,"url":"https://h","credentials":{"certificateId":"c1"}}"#;
        store
            .commit(&put_change(Kind::Backend, "b2", record))
            .unwrap();
    }));
    let (s, v) = h.call("DELETE", "/certificates/c1", None).await;
    assert_error(s, &v, 409, "Conflict");
    let seen = race.seen.lock().unwrap().clone();
    let conditions = &seen[0].conditions;
    for kind in [Kind::Backend, Kind::Api] {
        assert!(
            conditions
                .iter()
                .any(|c| matches!(c, Condition::NoneWrittenAfter { kind: k, .. } if *k == kind)),
            "{conditions:?}"
        );
    }
    // The store still has the certificate the new backend names.
    let contents = race.store.load().unwrap();
    assert!(contents
        .records
        .iter()
        .any(|r| r.kind == Kind::Certificate && r.id == "c1"));
    h.control.reload(&contents);
    let (s, v) = h.call("DELETE", "/certificates/c1", None).await;
    assert_error(s, &v, 409, "CertificateInUse");

    // A bind states the certificate it found, so a bind racing a delete loses too.
    let (s, v) = h.upload("c9", "modern.p12", PASSWORD).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    *race.next.lock().unwrap() = Some(Box::new(|store: &EmbeddedStore| {
        store
            .commit(&Transaction::delete(vec![], Kind::Certificate, "c9"))
            .unwrap();
    }));
    let (s, v) = h
        .call(
            "PUT",
            "/backends/b3",
            Some(json!({"url": "https://h", "credentials": {"certificateId": "c9"}})),
        )
        .await;
    assert_error(s, &v, 409, "Conflict");
    let contents = race.store.load().unwrap();
    assert!(
        !contents.records.iter().any(|r| r.id == "b3"),
        "nothing written"
    );
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(bytes));
    })
}

#[tokio::test]
async fn probes_need_no_token_and_readyz_says_why_not() {
    let h = Harness::new();
    for (auth, uri) in [
        (None, "/healthz"),
        (Some("Bearer wrong"), "/healthz"),
        (None, "/readyz"),
    ] {
        let mut req = Request::builder().uri(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let (status, headers, body) = h.raw(req.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let want: &[u8] = if uri == "/healthz" {
            b"ok\n"
        } else {
            b"ready\n"
        };
        assert_eq!(body, want, "{uri}");
    }
    // Only GET (and HEAD): the other methods are 405 in the error shape, still without a token.
    let req = Request::builder()
        .method("POST")
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = h.raw(req).await;
    assert_error(status, &json_of(&body), 405, "MethodNotAllowed");
    // Everything else still needs the token.
    let req = Request::builder()
        .uri("/healthz/x")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = h.raw(req).await;
    assert_error(status, &json_of(&body), 401, "Unauthorized");

    // Not ready: 503 with the reason, until the check passes.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ready.clone();
    let app = router_with_readiness(
        h.control.clone(),
        AdminToken::new(TOKEN.into()),
        Arc::new(move || {
            if flag.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(NotReady {
                    reason: "WorkersNotServing",
                    message: "1 of 2 data-plane workers are not serving.".into(),
                })
            }
        }),
        crate::diagnostics::RecentErrors::new(),
        None,
    );
    let get = |app: Router| async move {
        let res = app
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    };
    let (status, body) = get(app.clone()).await;
    let v = json_of(&body);
    assert_error(status, &v, 503, "NotReady");
    assert_eq!(
        v["error"]["details"],
        json!([{"reason": "WorkersNotServing"}])
    );
    ready.store(true, Ordering::SeqCst);
    let (status, body) = get(app).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"ready\n".as_slice())
    );
}

#[tokio::test]
async fn two_authorization_headers_are_400_whatever_they_hold() {
    let h = Harness::new();
    for (first, second) in [
        (format!("Bearer {TOKEN}"), "Bearer wrong".to_owned()),
        ("Bearer wrong".to_owned(), format!("Bearer {TOKEN}")),
        (format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}")),
    ] {
        let req = Request::builder()
            .method("PUT")
            .uri("/backends/b1")
            .header(header::AUTHORIZATION, first)
            .header(header::AUTHORIZATION, second)
            .body(Body::from(json!({"url": "https://h"}).to_string()))
            .unwrap();
        let (status, _, body) = h.raw(req).await;
        let v = json_of(&body);
        assert_error(status, &v, 400, "InvalidRequest");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("more than one Authorization header"),
            "{v}"
        );
    }
    let (s, _) = h.call("GET", "/backends/b1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was written");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_however_they_come() {
    let h = Harness::new();
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    let request = |uri: &str, body: Vec<u8>, length: Option<usize>| {
        let mut req = Request::builder()
            .method("PUT")
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(n) = length {
            req = req.header(header::CONTENT_LENGTH, n.to_string());
        }
        req.body(Body::from(body)).unwrap()
    };
    for uri in [
        "/backends/b1",
        "/apis/a1/policy",
        "/certificates/c1",
        "/nowhere",
    ] {
        // Declared too long (refused before it is read), and too long without a length.
        for length in [Some(big.len()), Some(100 * MAX_BODY_BYTES), None] {
            let body = if length == Some(100 * MAX_BODY_BYTES) {
                Vec::new()
            } else {
                big.clone()
            };
            let (status, _, bytes) = h.raw(request(uri, body, length)).await;
            assert_error(status, &json_of(&bytes), 413, "PayloadTooLarge");
        }
    }
    // At the limit exactly, the body reaches the handler.
    let mut fits = json!({"url": "https://h"}).to_string().into_bytes();
    fits.resize(MAX_BODY_BYTES, b' ');
    let (status, _, bytes) = h.raw(request("/backends/b1", fits, None)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// A store whose disk is full: every commit fails like the embedded store's on ENOSPC.
struct FullStore(EmbeddedStore, Arc<std::sync::atomic::AtomicBool>);

impl Store for FullStore {
    fn load(&self) -> Result<Contents, StoreError> {
        self.0.load()
    }
    fn commit(&self, transaction: &Transaction) -> Result<u64, StoreError> {
        if self.1.load(Ordering::SeqCst) {
            return Err(StoreError::StorageFull(
                "committing: I/O error: No space left on device (os error 28)".into(),
            ));
        }
        self.0.commit(transaction)
    }
}

#[tokio::test]
async fn a_full_disk_is_507_and_changes_nothing() {
    let dir = temp_dir("admin-full").unwrap();
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = FullStore(
        EmbeddedStore::open(&dir.path().join(FILE_NAME)).unwrap(),
        full.clone(),
    );
    let control = Arc::new(
        ControlPlane::open(Box::new(store), master_key(), Box::new(|_| {}))
            .unwrap()
            .with_audit_log(AuditLog::open(dir.path()).unwrap()),
    );
    let h = Harness {
        router: router(control.clone(), AdminToken::new(TOKEN.into())),
        control,
        dir,
        files: Fixtures::new(),
        published: Arc::new(AtomicUsize::new(0)),
    };
    let (s, _) = h
        .call("PUT", "/backends/b1", Some(json!({"url": "https://h"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    full.store(true, Ordering::SeqCst);
    let (s, v) = h
        .call("PUT", "/backends/b1", Some(json!({"url": "https://other"})))
        .await;
    assert_error(s, &v, 507, "InsufficientStorage");
    let (s, v) = h.upload("c1", "modern.p12", PASSWORD).await;
    assert_error(s, &v, 507, "InsufficientStorage");
    let (s, v) = h.call("DELETE", "/backends/b1", None).await;
    assert_error(s, &v, 507, "InsufficientStorage");
    let (_, v) = h.call("GET", "/backends", None).await;
    assert_eq!(v["value"][0]["url"], "https://h", "{v}");
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    full.store(false, Ordering::SeqCst);
    let (s, v) = h
        .call("PUT", "/backends/b1", Some(json!({"url": "https://other"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The audit log says which writes failed.
    let log = std::fs::read_to_string(h.dir.path().join(audit::AUDIT_LOG_FILE)).unwrap();
    assert_eq!(log.matches("\"outcome\":\"failed\"").count(), 3, "{log}");
}

#[tokio::test]
async fn a_full_disk_under_the_audit_log_is_507_too() {
    let dir = temp_dir("admin-audit-full").unwrap();
    // /dev/full: every write fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", dir.path().join(audit::AUDIT_LOG_FILE)).unwrap();
    let store = EmbeddedStore::open(&dir.path().join(FILE_NAME)).unwrap();
    let control = Arc::new(
        ControlPlane::open(Box::new(store), master_key(), Box::new(|_| {}))
            .unwrap()
            .with_audit_log(AuditLog::open(dir.path()).unwrap()),
    );
    let h = Harness {
        router: router(control.clone(), AdminToken::new(TOKEN.into())),
        control,
        dir,
        files: Fixtures::new(),
        published: Arc::new(AtomicUsize::new(0)),
    };
    let (s, v) = h
        .call("PUT", "/backends/b1", Some(json!({"url": "https://h"})))
        .await;
    assert_error(s, &v, 507, "InsufficientStorage");
    let (s, _) = h.call("GET", "/backends/b1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was written");
}
