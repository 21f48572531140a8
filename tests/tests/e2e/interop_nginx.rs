//! Interop with a real third-party mTLS backend: Debian's nginx.

use e2e::nginx::Nginx;
use e2e::*;

#[test]
fn nginx_backend_requires_client_certificate() {
    let pki = Pki::new();
    let ng = Nginx::start(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        &pki.path("client-1.pem"),
    );
    let gw = Gateway::start();
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
        a.put_backend("ng", &ng.url(), false, false, Some("client-1"))
            .status,
        201
    );
    assert_eq!(a.put_api("ng", "/ng", "ng").status, 201);

    let r = gw.client().get("/ng/hello");
    assert_eq!(r.status, 200, "{} {}", r.status, r.text());
    assert!(r.text().contains("CN=client-1"), "nginx saw {:?}", r.text());
    // By IP: no SNI.
    assert!(
        r.text().trim_end().ends_with("sni="),
        "no SNI for an IP URL: {:?}",
        r.text()
    );
    // By name: SNI = the URL's host.
    let by_name = format!("https://localhost:{}", ng.port);
    assert_eq!(
        a.put_backend("ng", &by_name, false, false, Some("client-1"))
            .status,
        200
    );
    let r = gw.client().get("/ng/by-name");
    assert_eq!(r.status, 200, "{} {}", r.status, r.text());
    assert!(
        r.text().trim_end().ends_with("sni=localhost"),
        "SNI = URL host: {:?}",
        r.text()
    );
    // Name validation on works against nginx too (its certificate has DNS:localhost).
    assert_eq!(
        a.put_backend("ng", &by_name, false, true, Some("client-1"))
            .status,
        200
    );
    assert_eq!(gw.client().get("/ng/validated").status, 200);

    // Without credentials nginx (ssl_verify_client on) completes the handshake and answers
    // 400 "No required SSL certificate was sent": the gateway passes that response through.
    assert_eq!(
        a.put_backend("ng", &ng.url(), false, false, None).status,
        200
    );
    let r = gw.client().get("/ng/hello");
    assert_eq!(r.status, 400, "{} {}", r.status, r.text());
    assert!(
        r.text().contains("No required SSL certificate was sent"),
        "{}",
        r.text()
    );

    // Rebinding brings it back.
    assert_eq!(
        a.put_backend("ng", &ng.url(), false, false, Some("client-1"))
            .status,
        200
    );
    let r = gw.client().get("/ng/again");
    assert_eq!(r.status, 200, "{} {}", r.status, r.text());
}
