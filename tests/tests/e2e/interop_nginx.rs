//! Interop with a real third-party mTLS backend: Debian's nginx.

use e2e::nginx::Nginx;
use e2e::*;

/// nginx requiring client certificates signed by (or being) client-1, and a gateway whose
/// API `/ng` goes to it presenting client-1.
fn nginx_behind_a_gateway() -> (Pki, Nginx, Gateway) {
    let pki = Pki::new();
    let ng = Nginx::start(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        &pki.path("client-1.pem"),
    );
    let gw = Gateway::start();
    let a = gw.admin();
    let p12 = pki.p12("client-1", P12_PASSWORD, false);
    assert_eq!(
        a.put_certificate("client-1", &p12, P12_PASSWORD).status,
        201
    );
    assert_eq!(
        a.put_backend("ng", &ng.url(), false, false, Some("client-1"))
            .status,
        201
    );
    assert_eq!(a.put_api("ng", "/ng", "ng").status, 201);
    (pki, ng, gw)
}

#[test]
fn nginx_backend_requires_client_certificate() {
    let (_pki, ng, gw) = nginx_behind_a_gateway();
    let a = gw.admin();

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

/// nginx as the backend accepts a TLS session ticket that another worker of the gateway
/// obtained (tickets are shared by the workers and may be offered more than once): one full
/// upstream handshake in all, the other worker's first connection resumes.
#[test]
fn nginx_backend_resumes_sessions_shared_by_the_workers() {
    let (_pki, _ng, gw) = nginx_behind_a_gateway();
    assert_eq!(gw.opts.workers, 2);
    // New client connections until both workers have served one (the kernel hashes
    // connections over the workers: 64 tries leave a chance of 2^-63 of missing one).
    let mut seen = [false; 2];
    let mut reused_on_second = None;
    for i in 0..64 {
        let r = gw.client().get(&format!("/ng/shared/{i}"));
        assert_eq!(r.status, 200, "{} {}", r.status, r.text());
        let text = r.text();
        let field = |name: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
                .unwrap_or_default()
        };
        // Request ids are `{nonce}-{worker, hex}-{sequence}`.
        let worker = field("id=")
            .split('-')
            .nth(1)
            .and_then(|w| usize::from_str_radix(w, 16).ok())
            .unwrap_or_else(|| panic!("no request id in nginx's answer: {text:?}"));
        if !seen[worker] && seen.iter().any(|s| *s) {
            reused_on_second = Some(field("reused="));
        }
        seen[worker] = true;
        if seen.iter().all(|s| *s) {
            break;
        }
    }
    assert!(
        seen.iter().all(|s| *s),
        "all connections went to one worker"
    );
    // nginx's $ssl_session_reused: "r" when the handshake resumed.
    assert_eq!(
        reused_on_second.as_deref(),
        Some("r"),
        "the second worker's first upstream connection did not resume"
    );
    let (m, _) = gw.wait_metric("edgegw_upstream_handshakes_total", &[], 2.0);
    assert_eq!(
        e2e::metrics::sum(
            &m,
            "edgegw_upstream_handshakes_total",
            &[("resumed", "false")]
        ),
        1.0,
        "{m}"
    );
}
