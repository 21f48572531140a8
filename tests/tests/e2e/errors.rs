//! Data-plane errors: 404, 502, 504, 500 BackendTlsError reasons.

use e2e::util::free_port;
use e2e::*;
use serde_json::json;

fn tls_reason(r: &Response, reason: &str) {
    let v = assert_error(r, 500, "BackendTlsError");
    assert_eq!(v["error"]["details"], json!([{"reason": reason}]), "{v}");
}

#[test]
fn unknown_path_is_404() {
    let f = Fixture::standard();
    for p in ["/nothing", "/", "/ordersX/1", "/order"] {
        let r = f.client.get(p);
        assert_error(&r, 404, "NotFound");
    }
    // The API path itself and path/ match.
    let e = echo(&f.client.get("/orders"));
    assert_eq!(e["path"], "/base");
    let e = echo(&f.client.get("/orders/"));
    assert_eq!(e["path"], "/base/");
    // Longest path wins.
    let r = f.admin.put_backend(
        "be-sub",
        &format!("{}/sub", f.backend.url()),
        false,
        false,
        Some("client-1"),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        f.admin
            .put_api("orders-sub", "/orders/special", "be-sub")
            .status,
        201
    );
    assert_eq!(
        echo(&f.client.get("/orders/special/7?q=1"))["path"],
        "/sub/7?q=1"
    );
    assert_eq!(
        echo(&f.client.get("/orders/specialx"))["path"],
        "/base/specialx"
    );
    // Route changes apply to the next request.
    assert_eq!(f.admin.delete("/apis/orders-sub").status, 204);
    assert_eq!(
        echo(&f.client.get("/orders/special/7"))["path"],
        "/base/special/7"
    );
    assert_eq!(f.admin.put_api("orders", "/orders", "be-sub").status, 200);
    assert_eq!(echo(&f.client.get("/orders/1"))["path"], "/sub/1");
    assert_eq!(f.admin.delete("/apis/orders").status, 204);
    assert_error(&f.client.get("/orders/1"), 404, "NotFound");
}

#[test]
fn closed_backend_port_is_502_and_slow_backend_is_504() {
    let f = Fixture::with(
        GatewayOpts {
            request_timeout: "1s".into(),
            ..GatewayOpts::default()
        },
        |pki| BackendOpts {
            cert: pki.path("server.pem"),
            key: pki.path("server.key"),
            client_ca: None,
            ticket_key: None,
        },
    );
    let dead = free_port();
    let r = f.admin.put_backend(
        "dead",
        &format!("https://127.0.0.1:{dead}"),
        false,
        false,
        Some("client-1"),
    );
    assert_eq!(r.status, 201);
    assert_eq!(f.admin.put_api("dead", "/dead", "dead").status, 201);
    let r = f.client.get("/dead/x");
    assert_error(&r, 502, "BackendConnectionFailure");

    let r = f.client.get("/orders/slow?delay_ms=3000");
    assert_error(&r, 504, "BackendTimeout");
    // A fast request still works afterwards.
    echo(&f.client.get("/orders/fast?delay_ms=10"));
}

#[test]
fn client_certificate_rejected_by_backend() {
    // The backend trusts only client-2; the gateway presents client-1.
    let f = Fixture::with(GatewayOpts::default(), |pki| BackendOpts {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: Some(pki.path("client-2.pem")),
        ticket_key: None,
    });
    tls_reason(&f.client.get("/orders/1"), "ClientCertificateRejected");
    // No certificate at all is rejected as well.
    let url = format!("{}/base", f.backend.url());
    assert_eq!(
        f.admin.put_backend("be1", &url, false, false, None).status,
        200
    );
    tls_reason(&f.client.get("/orders/1"), "ClientCertificateRejected");
    // client-2 is accepted.
    f.upload("client-2");
    assert_eq!(
        f.admin
            .put_backend("be1", &url, false, false, Some("client-2"))
            .status,
        200
    );
    assert_eq!(
        subject(&echo(&f.client.get("/orders/1"))),
        "CN=client-2, O=edgegw-test"
    );
}

#[test]
fn name_mismatch() {
    // Server certificate for wrong.example only; chain validation off, name validation on.
    let f = Fixture::with(GatewayOpts::default(), |pki| BackendOpts {
        cert: pki.path("wrongname.pem"),
        key: pki.path("wrongname.key"),
        client_ca: None,
        ticket_key: None,
    });
    let r = f.admin.put_backend(
        "be1",
        &format!("{}/base", f.backend.url_localhost()),
        false,
        true,
        Some("client-1"),
    );
    assert_eq!(r.status, 200);
    tls_reason(&f.client.get("/orders/1"), "NameMismatch");
    let r = f.admin.put_backend(
        "be1",
        &format!("{}/base", f.backend.url()),
        false,
        true,
        Some("client-1"),
    );
    assert_eq!(r.status, 200);
    tls_reason(&f.client.get("/orders/1"), "NameMismatch");
    // Name validation off: fine.
    let r = f.admin.put_backend(
        "be1",
        &format!("{}/base", f.backend.url_localhost()),
        false,
        false,
        Some("client-1"),
    );
    assert_eq!(r.status, 200);
    echo(&f.client.get("/orders/1"));
}

/// Validation on, success path: the backend's certificate is signed by a private CA that the
/// gateway trusts. The contract has no trust-store setting; the gateway is expected to use
/// BoringSSL's default verify paths, which honour `SSL_CERT_FILE`.
#[test]
fn validation_on_with_trusted_private_ca() {
    let pki = Pki::new();
    let backend = Backend::simple(&pki, "server-ca.pem", "server-ca.key");
    let gw = Gateway::start_with(GatewayOpts {
        env: vec![(
            "SSL_CERT_FILE".into(),
            pki.path("ca.pem").display().to_string(),
        )],
        ..GatewayOpts::default()
    });
    let a = gw.admin();
    assert_eq!(
        a.put_certificate(
            "client-1",
            &pki.p12("client-1", P12_PASSWORD, false),
            P12_PASSWORD
        )
        .status,
        201
    );
    assert_eq!(
        a.put_backend("be", &backend.url_localhost(), true, true, Some("client-1"))
            .status,
        201
    );
    assert_eq!(a.put_api("api", "/v", "be").status, 201);
    let e = echo(&gw.client().get("/v/1"));
    assert_eq!(subject(&e), "CN=client-1, O=edgegw-test");
    // By IP (the certificate has IP:127.0.0.1 too).
    assert_eq!(
        a.put_backend("be", &backend.url(), true, true, Some("client-1"))
            .status,
        200
    );
    echo(&gw.client().get("/v/2"));
}
