//! Every 400/401/404/409 of the management API from real bad inputs, and the accepted
//! PKCS#12 forms.

use base64::Engine;
use e2e::http::{assert_error_shape, policy_with_certificate_id};
use e2e::*;
use serde_json::{json, Value};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn unauthorized_without_or_with_wrong_token() {
    let gw = Gateway::start();
    for token in [None, Some("wrong-token")] {
        let a = gw.admin_with_token(token);
        for (m, p) in [
            ("GET", "/certificates"),
            ("GET", "/backends"),
            ("GET", "/apis"),
            ("DELETE", "/certificates/x"),
        ] {
            let r = a.request(m, p, None, None);
            assert_eq!(
                r.status,
                401,
                "{m} {p} with token {token:?}: {} {}",
                r.status,
                r.text()
            );
            assert_error_shape(&r.json());
        }
        let r = a.put_json("/backends/b", &json!({"url": "https://127.0.0.1:1"}));
        assert_eq!(r.status, 401);
        assert_error_shape(&r.json());
    }
    // The right token works, a token with a different scheme does not.
    assert_eq!(gw.admin().get("/certificates").status, 200);
    let r = gw
        .admin_with_token(None)
        .request("GET", "/certificates", None, None);
    assert_eq!(r.status, 401);
    let r = e2e::http::plain_request(
        gw.admin_addr,
        Request::get("/certificates")
            .header("Authorization", &format!("Basic {}", gateway_token())),
    )
    .expect("request");
    assert_eq!(r.status, 401, "Basic scheme must not pass");
}

fn gateway_token() -> &'static str {
    e2e::gateway::TOKEN
}

#[test]
fn certificate_upload_errors() {
    let pki = Pki::new();
    let gw = Gateway::start();
    let a = gw.admin();
    let pw = P12_PASSWORD;

    // InvalidRequest: bad JSON, bad base64, missing field.
    let r = a.put_raw(
        "/certificates/c1",
        "application/json",
        b"{\"data\": \"abc\", ",
    );
    assert_error(&r, 400, "InvalidRequest");
    let r = a.put_json(
        "/certificates/c1",
        &json!({"data": "!!! not base64 !!!", "password": pw}),
    );
    assert_error(&r, 400, "InvalidRequest");
    let r = a.put_json("/certificates/c1", &json!({"password": pw}));
    assert_error(&r, 400, "InvalidRequest");

    // InvalidPkcs12: a PEM certificate, and random text.
    let r = a.put_json(
        "/certificates/c1",
        &json!({"data": b64(&pki.read("client-1.pem")), "password": pw}),
    );
    assert_error(&r, 400, "InvalidPkcs12");
    let r = a.put_json(
        "/certificates/c1",
        &json!({"data": b64(b"hello, I am not a PKCS#12 file"), "password": pw}),
    );
    assert_error(&r, 400, "InvalidPkcs12");

    // WrongPassword: modern and legacy.
    let r = a.put_certificate("c1", &pki.p12("client-1", pw, false), "not-the-password");
    assert_error(&r, 400, "WrongPassword");
    let r = a.put_certificate("c1", &pki.p12("client-1", pw, true), "not-the-password");
    assert_error(&r, 400, "WrongPassword");

    // MissingPrivateKey: openssl pkcs12 -export -nokeys.
    let r = a.put_certificate("c1", &pki.p12_without_key("client-1", pw), pw);
    assert_error(&r, 400, "MissingPrivateKey");

    // KeyMismatch: key bag of another key next to client-1's certificate.
    let r = a.put_certificate("c1", &pki.p12_key_mismatch("client-1", pw), pw);
    assert_error(&r, 400, "KeyMismatch");

    // CertificateExpired: notAfter 2020-01-02.
    let r = a.put_certificate("c1", &pki.p12("expired", pw, false), pw);
    assert_error(&r, 400, "CertificateExpired");

    // InvalidId.
    let long = "a".repeat(81);
    for id in ["bad!id", "bad%20id", long.as_str(), "b%C3%A4d", "bad:id"] {
        let r = a.put_certificate(id, &pki.p12("client-1", pw, false), pw);
        assert_error(&r, 400, "InvalidId");
    }
    // 80 characters of the allowed alphabet is fine.
    let ok_id = format!("A-z_0.9{}", "x".repeat(73));
    assert_eq!(ok_id.len(), 80);
    let r = a.put_certificate(&ok_id, &pki.p12("client-1", pw, false), pw);
    assert_eq!(r.status, 201, "80-char id: {}", r.text());

    // Nothing was stored by the failed PUTs.
    assert_error(&a.get("/certificates/c1"), 404, "NotFound");
    let l = a.get("/certificates").json();
    let ids: Vec<&str> = l["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, vec![ok_id.as_str()]);
}

#[test]
fn pkcs12_forms_accepted() {
    let pki = Pki::new();
    let gw = Gateway::start();
    let a = gw.admin();
    let cases = [
        ("modern-pw", "client-1", "pw-1", false),
        ("legacy-pw", "client-1", "pw-1", true),
        ("modern-empty", "client-2", "", false),
        ("legacy-empty", "client-2", "", true),
        ("ec-legacy", "client-3", "x", true),
    ];
    for (id, name, pw, legacy) in cases {
        let r = a.put_certificate(id, &pki.p12(name, pw, legacy), pw);
        assert_eq!(r.status, 201, "{id}: {}", r.text());
        let c = r.json();
        assert_eq!(
            c["thumbprint"],
            pki.thumbprint(&format!("{name}.pem")).as_str(),
            "{id}: {c}"
        );
        assert_eq!(c["selfSigned"], true);
    }
    // Replacing returns 200 and the new certificate.
    let r = a.put_certificate("modern-pw", &pki.p12("client-3", "z", false), "z");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["thumbprint"],
        pki.thumbprint("client-3.pem").as_str()
    );
    // Listing sorted by id.
    let l = a.get("/certificates").json();
    let ids: Vec<String> = l["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 5);
}

#[test]
fn backend_api_policy_errors() {
    let pki = Pki::new();
    let gw = Gateway::start();
    let a = gw.admin();
    let r = a.put_certificate(
        "client-1",
        &pki.p12("client-1", P12_PASSWORD, false),
        P12_PASSWORD,
    );
    assert_eq!(r.status, 201);

    // Backends: bad URLs, credentials on http, unknown certificate.
    for url in ["not a url", "ftp://127.0.0.1:21", "https://", ""] {
        let r = a.put_json("/backends/b1", &json!({"url": url}));
        assert_error(&r, 400, "InvalidRequest");
    }
    let r = a.put_json(
        "/backends/b1",
        &json!({"url": "http://127.0.0.1:8080", "credentials": {"certificateId": "client-1"}}),
    );
    assert_error(&r, 400, "InvalidRequest");
    let r = a.put_backend("b1", "https://127.0.0.1:8443", true, true, Some("nope"));
    assert_error(&r, 400, "CertificateNotFound");
    let r = a.put_json(
        "/backends/b1",
        &json!({"url": "https://127.0.0.1:8443", "credentials": {"certificateThumbprint": "0123456789ABCDEF0123456789ABCDEF01234567"}}),
    );
    assert_error(&r, 400, "CertificateNotFound");
    let r = a.put_raw("/backends/b1", "application/json", b"{oops");
    assert_error(&r, 400, "InvalidRequest");
    let r = a.put_json(
        "/backends/bad!id",
        &json!({"url": "https://127.0.0.1:8443"}),
    );
    assert_error(&r, 400, "InvalidId");
    assert_error(&a.get("/backends/b1"), 404, "NotFound");

    // A good backend, by thumbprint; defaults for tls.
    let tp = pki.thumbprint("client-1.pem");
    let r = a.put_json(
        "/backends/b1",
        &json!({"url": "https://127.0.0.1:8443/base", "credentials": {"certificateThumbprint": tp}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let b = a.get("/backends/b1");
    assert_eq!(b.status, 200);
    let b = b.json();
    assert_eq!(b["tls"]["validateCertificateChain"], true, "defaults: {b}");
    assert_eq!(b["tls"]["validateCertificateName"], true, "defaults: {b}");
    // The certificate is in use by b1 (referenced by thumbprint).
    let v = assert_error(&a.delete("/certificates/client-1"), 409, "CertificateInUse");
    assert!(
        v["error"]["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["kind"] == "backend" && x["id"] == "b1")),
        "{v}"
    );

    // APIs.
    let r = a.put_api("api1", "/orders", "nope");
    assert_error(&r, 400, "BackendNotFound");
    let r = a.put_api("api1", "/orders", "b1");
    assert_eq!(r.status, 201, "{}", r.text());
    let r = a.put_api("api1", "/orders", "b1");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a.put_api("api2", "/orders", "b1");
    assert_error(&r, 409, "PathConflict");
    let r = a.put_api("api2", "/orders/sub", "b1");
    assert_eq!(r.status, 201, "a longer path is no conflict: {}", r.text());
    let r = a.put_api("bad!id", "/x", "b1");
    assert_error(&r, 400, "InvalidId");
    assert_error(&a.get("/apis/nope"), 404, "NotFound");
    let r = a.put_raw("/apis/api3", "application/json", b"[1,2");
    assert_error(&r, 400, "InvalidRequest");

    // Backend in use by the APIs.
    let v = assert_error(&a.delete("/backends/b1"), 409, "BackendInUse");
    assert!(
        v["error"]["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["id"] == "api1")),
        "{v}"
    );

    // Policies.
    let r = a.get("/apis/api1/policy");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("<policies"),
        "empty skeleton: {}",
        r.text()
    );

    let malformed = "<policies>\n  <inbound>\n    <authentication-certificate certificate-id=\"client-1\">\n  </inbound>\n</policies>";
    let v = assert_error(
        &a.put_xml("/apis/api1/policy", malformed),
        400,
        "InvalidPolicy",
    );
    let m = message(&v).to_ascii_lowercase();
    assert!(
        m.contains("line") && m.contains("column"),
        "InvalidPolicy message names line and column: {v}"
    );
    assert!(
        m.chars().any(|c| c.is_ascii_digit()),
        "message gives numbers: {v}"
    );

    let unclosed = "<policies>\n  <inbound>\n    <base />\n";
    assert_error(
        &a.put_xml("/apis/api1/policy", unclosed),
        400,
        "InvalidPolicy",
    );

    let unsupported = "<policies>\n  <inbound>\n    <base />\n    <rate-limit calls=\"5\" renewal-period=\"60\" />\n  </inbound>\n</policies>";
    let v = assert_error(
        &a.put_xml("/apis/api1/policy", unsupported),
        400,
        "InvalidPolicy",
    );
    assert!(
        message(&v).contains("rate-limit"),
        "message names the unsupported element: {v}"
    );

    let both = "<policies><inbound><authentication-certificate certificate-id=\"client-1\" thumbprint=\"ABC\" /></inbound></policies>";
    assert_error(&a.put_xml("/apis/api1/policy", both), 400, "InvalidPolicy");
    let neither = "<policies><inbound><authentication-certificate /></inbound></policies>";
    assert_error(
        &a.put_xml("/apis/api1/policy", neither),
        400,
        "InvalidPolicy",
    );

    let r = a.put_xml("/apis/api1/policy", &policy_with_certificate_id("nope"));
    assert_error(&r, 400, "CertificateNotFound");
    let r = a.put_xml("/apis/nope/policy", &policy_with_certificate_id("client-1"));
    assert_error(&r, 404, "NotFound");

    // Failed policy writes left the API without one.
    let r = a.get("/apis/api1/policy");
    assert!(
        !r.text().contains("authentication-certificate"),
        "{}",
        r.text()
    );

    // 404s.
    assert_error(&a.get("/certificates/nope"), 404, "NotFound");
    assert_error(&a.delete("/certificates/nope"), 404, "NotFound");
    assert_error(&a.delete("/backends/nope"), 404, "NotFound");
    assert_error(&a.delete("/apis/nope"), 404, "NotFound");

    // Deleting the APIs frees the backend.
    assert_eq!(a.delete("/apis/api1").status, 204);
    assert_eq!(a.delete("/apis/api2").status, 204);
    assert_eq!(a.delete("/backends/b1").status, 204);
    assert_eq!(a.delete("/certificates/client-1").status, 204);
}

#[test]
fn admin_token_from_file_and_from_env() {
    use std::os::unix::fs::PermissionsExt;
    // No token in the config and no env: a random token in data_dir/admin.token, mode 0600.
    let gw = Gateway::start_with(GatewayOpts {
        admin_token: None,
        ..GatewayOpts::default()
    });
    let path = gw.data_dir().join("admin.token");
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "admin.token mode");
    let token = gw.token();
    assert!(token.len() >= 16, "token too short: {token:?}");
    assert_eq!(gw.admin().get("/certificates").status, 200);
    assert_eq!(
        gw.admin_with_token(Some("x")).get("/certificates").status,
        401
    );
    assert_eq!(
        gw.admin_with_token(Some("")).get("/certificates").status,
        401
    );

    // EDGEGW_ADMIN_TOKEN wins over the config.
    let gw = Gateway::start_with(GatewayOpts {
        admin_token: Some("token-from-config".into()),
        env: vec![("EDGEGW_ADMIN_TOKEN".into(), "token-from-env-0123".into())],
        ..GatewayOpts::default()
    });
    assert_eq!(
        gw.admin_with_token(Some("token-from-env-0123"))
            .get("/certificates")
            .status,
        200
    );
    assert_eq!(
        gw.admin_with_token(Some("token-from-config"))
            .get("/certificates")
            .status,
        401
    );
}
