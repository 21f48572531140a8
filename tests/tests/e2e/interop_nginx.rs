//! Interop with a real third-party mTLS backend: Debian's nginx.

use e2e::nginx::Nginx;
use e2e::*;

#[test]
fn nginx_backend_requires_client_certificate() {
    let pki = Pki::new();
    let ng = Nginx::start(&pki.path("server.pem"), &pki.path("server.key"), &pki.path("client-1.pem"));
    let gw = Gateway::start();
    let a = gw.admin();
    assert_eq!(a.put_certificate("client-1", &pki.p12("client-1", P12_PASSWORD, false), P12_PASSWORD).status, 201);
    assert_eq!(a.put_backend("ng", &ng.url(), false, false, Some("client-1")).status, 201);
    assert_eq!(a.put_api("ng", "/ng", "ng").status, 201);

    let r = gw.client().get("/ng/hello");
    assert_eq!(r.status, 200, "{} {}", r.status, r.text());
    assert!(r.text().contains("CN=client-1"), "nginx saw {:?}", r.text());

    // Without credentials nginx (ssl_verify_client on) completes the handshake and answers
    // 400 "No required SSL certificate was sent": the gateway passes that response through.
    assert_eq!(a.put_backend("ng", &ng.url(), false, false, None).status, 200);
    let r = gw.client().get("/ng/hello");
    assert_eq!(r.status, 400, "{} {}", r.status, r.text());
    assert!(r.text().contains("No required SSL certificate was sent"), "{}", r.text());

    // Rebinding brings it back.
    assert_eq!(a.put_backend("ng", &ng.url(), false, false, Some("client-1")).status, 200);
    let r = gw.client().get("/ng/again");
    assert_eq!(r.status, 200, "{} {}", r.status, r.text());
}
