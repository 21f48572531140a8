//! Trust both ways: CA certificates for backends signed by a private CA (with name and
//! thumbprint pins), and client certificates from callers checked by the listener and by
//! an API's `<validate-client-certificate>` policy, forwarded as `X-Forwarded-Client-Cert`.
//! Real processes, real handshakes, certificates made with the openssl CLI.

use base64::Engine as _;
use boring::hash::MessageDigest;
use boring::x509::X509;
use serde_json::{json, Value};
use testkit::{Cert, KeyType};

use e2e::metrics::sum;
use e2e::util::hex_upper;
use e2e::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn put_ca(admin: &Admin, id: &str, pem: &[u8]) -> Response {
    admin.put_json(
        &format!("/caCertificates/{id}"),
        &json!({ "data": b64(pem) }),
    )
}

/// `PUT /backends/be1` pointing at `backend` (by IP) with `tls`.
fn put_backend_tls(f: &Fixture, tls: Value) -> Response {
    f.admin.put_json(
        "/backends/be1",
        &json!({
            "url": format!("{}/base", f.backend.url()),
            "tls": tls,
            "credentials": {"certificateId": "client-1"},
        }),
    )
}

fn reason(r: &Response) -> String {
    r.json()["error"]["details"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The backend's certificate is signed by the test PKI's private CA (`ca`).
fn private_ca_fixture() -> Fixture {
    Fixture::with(GatewayOpts::default(), |pki| BackendOpts {
        cert: pki.path("server-ca.pem"),
        key: pki.path("server-ca.key"),
        client_ca: None,
        ticket_key: None,
    })
}

#[test]
fn ca_certificates_are_resources_with_their_own_errors() {
    let f = private_ca_fixture();
    let kit = f.pki.kit();
    kit.self_signed("other-ca", &Cert::ca("/CN=Other CA", KeyType::P256))
        .unwrap();
    let pem = f.pki.read("ca.pem");
    let r = put_ca(&f.admin, "ca1", &pem);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let der = X509::from_pem(&pem).unwrap().to_der().unwrap();
    let sha1 = hex_upper(&boring::hash::hash(MessageDigest::sha1(), &der).unwrap());
    assert_eq!(v["id"], "ca1");
    assert_eq!(v["subject"], "CN=edgegw-test-ca, O=edgegw-test");
    assert_eq!(v["issuer"], v["subject"]);
    assert_eq!(v["thumbprint"], sha1.as_str());
    assert!(v["notBefore"].as_str().unwrap().ends_with('Z'));
    assert!(v["expirationDate"].as_str().unwrap().ends_with('Z'));
    // DER works as well as PEM; a replacement is 200.
    let r = f
        .admin
        .put_json("/caCertificates/ca1", &json!({ "data": b64(&der) }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        put_ca(&f.admin, "ca0", &f.pki.read("other-ca.pem")).status,
        201
    );
    let list = f.admin.get("/caCertificates").json();
    let ids: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ca0", "ca1"], "sorted by id");
    assert_eq!(
        f.admin.get("/caCertificates/ca1").json()["thumbprint"],
        sha1.as_str()
    );
    assert_error(&f.admin.get("/caCertificates/nope"), 404, "NotFound");

    // A leaf is not a CA (named); garbage is not a certificate; nothing is stored.
    let r = put_ca(&f.admin, "leaf", &f.pki.read("server-ca.pem"));
    let body = assert_error(&r, 400, "NotCa");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CN=localhost"),
        "{body}"
    );
    assert_error(
        &put_ca(&f.admin, "junk", b"not a certificate"),
        400,
        "InvalidCertificate",
    );
    let r = f
        .admin
        .put_json("/caCertificates/junk", &json!({ "data": "%%%" }));
    assert_error(&r, 400, "InvalidRequest");
    assert_error(&f.admin.get("/caCertificates/leaf"), 404, "NotFound");

    // A backend naming a CA that does not exist is refused.
    let r = put_backend_tls(&f, json!({"trustedCaCertificateIds": ["missing"]}));
    assert_error(&r, 400, "CaCertificateNotFound");
    // CAs without chain validation make no sense: refused, saying why.
    let r = put_backend_tls(
        &f,
        json!({"validateCertificateChain": false, "trustedCaCertificateIds": ["ca1"]}),
    );
    assert_error(&r, 400, "InvalidRequest");

    // In use: 409 naming the backend; free again once the backend lets go.
    let r = put_backend_tls(&f, json!({"trustedCaCertificateIds": ["ca1"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["tls"]["trustedCaCertificateIds"],
        json!(["ca1"]),
        "the resource shows the list"
    );
    let body = assert_error(
        &f.admin.delete("/caCertificates/ca1"),
        409,
        "CertificateInUse",
    );
    assert_eq!(
        body["error"]["details"],
        json!([{"kind": "backend", "id": "be1"}])
    );
    let r = put_backend_tls(&f, json!({"validateCertificateChain": false}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(f.admin.delete("/caCertificates/ca1").status, 204);
    assert_error(&f.admin.get("/caCertificates/ca1"), 404, "NotFound");
}

#[test]
fn backends_signed_by_a_private_ca_are_checked_against_exactly_the_listed_cas() {
    let f = private_ca_fixture();
    let kit = f.pki.kit();
    kit.self_signed("other-ca", &Cert::ca("/CN=Other CA", KeyType::P256))
        .unwrap();
    assert_eq!(put_ca(&f.admin, "ca1", &f.pki.read("ca.pem")).status, 201);
    assert_eq!(
        put_ca(&f.admin, "other", &f.pki.read("other-ca.pem")).status,
        201
    );

    // The system store does not know the private CA.
    assert_eq!(put_backend_tls(&f, json!({})).status, 200);
    let r = f.client.get("/orders/1");
    assert_error(&r, 500, "BackendTlsError");
    assert_eq!(reason(&r), "UntrustedChain");

    // Listed: trusted (name check on the URL's IP, which the certificate carries).
    let r = put_backend_tls(&f, json!({"trustedCaCertificateIds": ["ca1"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    echo(&f.client.get("/orders/2"));

    // Another CA: untrusted.
    assert_eq!(
        put_backend_tls(&f, json!({"trustedCaCertificateIds": ["other"]})).status,
        200
    );
    let r = f.client.get("/orders/3");
    assert_error(&r, 500, "BackendTlsError");
    assert_eq!(reason(&r), "UntrustedChain");

    // Pins: the backend's own thumbprint passes, another fails, even with the chain trusted.
    let right = f.pki.thumbprint("server-ca.pem");
    let r = put_backend_tls(
        &f,
        json!({"trustedCaCertificateIds": ["ca1"], "serverCertificateThumbprints": [right]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    echo(&f.client.get("/orders/4"));
    let wrong = "AB".repeat(20);
    let r = put_backend_tls(
        &f,
        json!({"trustedCaCertificateIds": ["ca1"], "serverCertificateThumbprints": [wrong]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = f.client.get("/orders/5");
    assert_error(&r, 500, "BackendTlsError");
    assert_eq!(reason(&r), "PinMismatch");
    // A pin alone, chain and name validation off (a self-signed backend pinned by thumbprint).
    let r = put_backend_tls(
        &f,
        json!({"validateCertificateChain": false, "validateCertificateName": false,
               "serverCertificateThumbprints": [wrong]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = f.client.get("/orders/6");
    assert_eq!(reason(&r), "PinMismatch", "{}", r.text());

    // Names instead of the URL's host: one the certificate carries passes, another fails.
    let r = put_backend_tls(
        &f,
        json!({"trustedCaCertificateIds": ["ca1"], "serverX509Names": ["wrong.example", "localhost"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    echo(&f.client.get("/orders/7"));
    let r = put_backend_tls(
        &f,
        json!({"trustedCaCertificateIds": ["ca1"], "serverX509Names": ["orders.internal"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = f.client.get("/orders/8");
    assert_error(&r, 500, "BackendTlsError");
    assert_eq!(reason(&r), "NameMismatch");
    let metrics = f.gw.metrics();
    assert!(
        sum(
            &metrics,
            "edgegw_upstream_tls_errors_total",
            &[("reason", "PinMismatch")]
        ) >= 2.0,
        "{metrics}"
    );
}

/// Rotating a CA (a re-upload under the same id) applies from the next new connection: a
/// pooled connection verified under the old CA is never used under the new one.
#[test]
fn replacing_a_ca_retires_connections_verified_under_the_old_one() {
    let f = private_ca_fixture();
    f.pki
        .kit()
        .self_signed("other-ca", &Cert::ca("/CN=Other CA", KeyType::P256))
        .unwrap();
    assert_eq!(put_ca(&f.admin, "ca1", &f.pki.read("ca.pem")).status, 201);
    assert_eq!(
        put_backend_tls(&f, json!({"trustedCaCertificateIds": ["ca1"]})).status,
        200
    );
    // Two requests on one client connection (one worker, one pool): the second reuses the
    // pooled upstream connection.
    let mut c = f.client.connect().unwrap();
    echo(&c.get("/orders/a"));
    echo(&c.get("/orders/b"));
    let reused = |f: &Fixture| {
        sum(
            &f.gw.metrics(),
            "edgegw_upstream_pool_total",
            &[("result", "hit")],
        )
    };
    let before = reused(&f);
    assert!(before >= 1.0, "the pool was used");
    // The same id now holds an unrelated CA.
    assert_eq!(
        put_ca(&f.admin, "ca1", &f.pki.read("other-ca.pem")).status,
        200
    );
    let r = c.get("/orders/c");
    assert_error(&r, 500, "BackendTlsError");
    assert_eq!(reason(&r), "UntrustedChain");
    assert_eq!(
        reused(&f),
        before,
        "no pooled connection was used under the new CA"
    );
    // And back: trusted again (the old pooled connection may serve again: it was verified
    // under exactly this CA).
    assert_eq!(put_ca(&f.admin, "ca1", &f.pki.read("ca.pem")).status, 200);
    echo(&c.get("/orders/d"));
}

/// The callers' PKI: a CA, two partners it signs, and a self-signed stranger.
fn callers_pki(pki: &Pki) {
    let kit = pki.kit();
    kit.self_signed("partner-ca", &Cert::ca("/CN=Partner CA", KeyType::P256))
        .expect("making the callers' PKI");
    kit.self_signed("partner-ca-2", &Cert::ca("/CN=Partner CA", KeyType::P256))
        .expect("making the callers' PKI");
    for name in ["partner-1", "partner-2"] {
        let cert = Cert::new(&format!("/CN={name}"), KeyType::P256)
            .ext("basicConstraints=CA:FALSE")
            .ext("extendedKeyUsage=clientAuth");
        kit.signed_by(name, &cert, "partner-ca")
            .expect("making the callers' PKI");
    }
    kit.self_signed("stranger", &Cert::new("/CN=partner-1", KeyType::P256))
        .expect("making the callers' PKI");
}

fn caller(f: &Fixture, name: &str) -> TlsClient {
    TlsClient::with_client_certificate(
        f.gw.listen,
        &f.pki.path(&format!("{name}.pem")),
        &f.pki.path(&format!("{name}.key")),
    )
}

fn callers_fixture(mode: &str) -> Fixture {
    let pki = Pki::new();
    callers_pki(&pki);
    let f = Fixture::with_pki(
        pki,
        |_| {
            GatewayOpts::default()
                .set("listener", "client_certificates", &format!("\"{mode}\""))
                .set("listener", "client_ca_ids", "[\"partners\"]")
                .set("listener", "forward_client_certificate", "true")
        },
        |pki| BackendOpts {
            cert: pki.path("server.pem"),
            key: pki.path("server.key"),
            client_ca: None,
            ticket_key: None,
        },
    );
    let r = put_ca(&f.admin, "partners", &f.pki.read("partner-ca.pem"));
    assert_eq!(r.status, 201, "{}", r.text());
    f
}

#[test]
fn required_client_certificates_are_checked_in_the_handshake() {
    let f = callers_fixture("required");
    // No certificate, or one from a CA the listener does not trust: no answer.
    assert!(
        f.client.request(Request::get("/orders/1")).is_err(),
        "no certificate"
    );
    assert!(
        caller(&f, "stranger")
            .request(Request::get("/orders/2"))
            .is_err(),
        "a certificate of an unknown CA"
    );
    let e = echo(&caller(&f, "partner-1").get("/orders/3"));
    let xfcc = e["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(xfcc.contains("Subject=\"CN=partner-1\""), "{e}");
    let m = f.gw.metrics();
    let result = |r| {
        sum(
            &m,
            "edgegw_downstream_client_certificates_total",
            &[("result", r)],
        )
    };
    assert!(result("refused") >= 2.0, "{m}");
    assert!(result("verified") >= 1.0, "{m}");
    // The listener's CA cannot be deleted: the answer names the setting.
    let body = assert_error(
        &f.admin.delete("/caCertificates/partners"),
        409,
        "CertificateInUse",
    );
    assert_eq!(
        body["error"]["details"][0]["setting"], "listener.client_ca_ids",
        "{body}"
    );
}

fn validate_policy(identities: &str) -> String {
    format!(
        "<policies>\n  <inbound>\n    <base />\n    <validate-client-certificate validate-revocation=\"false\" validate-trust=\"true\" validate-not-before=\"true\" validate-not-after=\"true\" ignore-error=\"false\">\n      <identities>\n        {identities}\n      </identities>\n    </validate-client-certificate>\n  </inbound>\n</policies>"
    )
}

#[test]
fn an_api_policy_checks_the_callers_certificate_and_it_is_forwarded() {
    let f = callers_fixture("optional");
    let policy =
        validate_policy("<identity subject=\"CN=partner-1\" issuer-subject=\"CN=Partner CA\" />");
    let r = f.admin.put_xml("/apis/orders/policy", &policy);
    assert!((200..300).contains(&r.status), "{}", r.text());
    let stored = f.admin.get("/apis/orders/policy").text();
    assert!(stored.contains("validate-client-certificate"), "{stored}");

    let check = |r: &Response, why: &str| {
        assert_error(r, 403, "ClientCertificateInvalid");
        assert_eq!(reason(r), why, "{}", r.text());
    };
    check(&f.client.get("/orders/1"), "Missing");
    check(
        &caller(&f, "partner-2").get("/orders/2"),
        "IdentityMismatch",
    );
    check(&caller(&f, "stranger").get("/orders/3"), "Untrusted");
    // The right one reaches the backend, with the header edgegw wrote and not the caller's.
    let partner = caller(&f, "partner-1");
    let spoofed =
        Request::get("/orders/4").header("X-Forwarded-Client-Cert", "Hash=00;Subject=\"CN=admin\"");
    let e = echo(&partner.request(spoofed).unwrap());
    let der = X509::from_pem(&f.pki.read("partner-1.pem"))
        .unwrap()
        .to_der()
        .unwrap();
    let sha256 =
        hex_upper(&boring::hash::hash(MessageDigest::sha256(), &der).unwrap()).to_lowercase();
    assert_eq!(
        e["headers"]["x-forwarded-client-cert"],
        format!("Hash={sha256};Subject=\"CN=partner-1\""),
        "{e}"
    );

    // A resumed session keeps the caller's certificate and its verdict, both ways.
    let mut first = partner.connect().unwrap();
    echo(&first.get("/orders/5"));
    drop(first);
    let session = partner.last_session().expect("a session ticket");
    let mut resumed = partner.connect_with(Some(&session)).unwrap();
    assert!(resumed.session_reused(), "resumed");
    echo(&resumed.get("/orders/6"));
    let stranger = caller(&f, "stranger");
    let mut c = stranger.connect().unwrap();
    check(&c.get("/orders/7"), "Untrusted");
    drop(c);
    let session = stranger.last_session().expect("a session ticket");
    let mut c = stranger.connect_with(Some(&session)).unwrap();
    assert!(c.session_reused(), "resumed");
    check(&c.get("/orders/8"), "Untrusted");

    // Another CA under the listener's id: sessions verified under the old one do not
    // resume, and the partner's certificate is no longer trusted.
    let session = partner.last_session().unwrap();
    assert_eq!(
        put_ca(&f.admin, "partners", &f.pki.read("partner-ca-2.pem")).status,
        200
    );
    let mut c = partner.connect_with(Some(&session)).unwrap();
    assert!(
        !c.session_reused(),
        "a session of the old CA set must not resume"
    );
    check(&c.get("/orders/9"), "Untrusted");

    // ignore-error lets a failing caller through (the check is still made and logged).
    let lenient = validate_policy("<identity subject=\"CN=someone-else\" />")
        .replace("ignore-error=\"false\"", "ignore-error=\"true\"");
    assert!((200..300).contains(&f.admin.put_xml("/apis/orders/policy", &lenient).status));
    echo(&f.client.get("/orders/10"));
    // An API without the policy: no check, and the caller's own header never passes.
    assert_eq!(f.admin.delete("/apis/orders/policy").status, 204);
    let spoofed = Request::get("/orders/11").header("X-Forwarded-Client-Cert", "Hash=00");
    let e = echo(&f.client.request(spoofed).unwrap());
    assert!(e["headers"].get("x-forwarded-client-cert").is_none(), "{e}");

    // A bad attribute: InvalidPolicy with line and column, the stored policy unchanged.
    let bad = validate_policy("<identity serial-number=\"1\" />");
    let body = assert_error(
        &f.admin.put_xml("/apis/orders/policy", &bad),
        400,
        "InvalidPolicy",
    );
    assert_eq!(body["error"]["details"][0]["line"], 6, "{body}");
}
