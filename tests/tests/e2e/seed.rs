//! The seed scenario, in order.

use e2e::http::{policy_with_certificate_id, policy_with_thumbprint};
use e2e::pki::openssl;
use e2e::*;
use serde_json::{json, Value};

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).take(14).collect()
}

fn assert_in_use(r: &Response, kind: &str, id: &str) {
    let v = assert_error(r, 409, "CertificateInUse");
    let details = v["error"]["details"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        details.iter().any(|d| d["kind"] == kind && d["id"] == id),
        "409 details should name {{kind: {kind}, id: {id}}}: {v}"
    );
}

#[test]
fn seed_scenario() {
    let pki = Pki::new();
    let backend = Backend::simple(&pki, "server.pem", "server.key");
    let gw = Gateway::start();
    let admin = gw.admin();
    let client = gw.client();

    // 1. Upload client-1.
    let r = admin.put_certificate(
        "client-1",
        &pki.p12("client-1", P12_PASSWORD, false),
        P12_PASSWORD,
    );
    assert_eq!(r.status, 201, "PUT /certificates/client-1: {}", r.text());
    let c = r.json();
    let tp = pki.thumbprint("client-1.pem");
    assert_eq!(tp, pki.thumbprint_openssl("client-1.pem"));
    assert_eq!(c["id"], "client-1", "{c}");
    assert_eq!(
        c["thumbprint"],
        tp.as_str(),
        "thumbprint = SHA-1 of leaf DER, uppercase hex: {c}"
    );
    let subj = c["subject"].as_str().unwrap_or_default();
    assert!(
        subj.contains("CN=client-1") && subj.contains("O=edgegw-test"),
        "subject: {c}"
    );
    assert_eq!(c["selfSigned"], true, "{c}");
    for k in ["issuer", "notBefore", "expirationDate", "keyAlgorithm"] {
        assert!(c[k].is_string(), "certificate resource lacks {k}: {c}");
    }
    let obj = c.as_object().expect("object");
    for k in obj.keys() {
        let lk = k.to_ascii_lowercase();
        assert!(
            !lk.contains("password") && !lk.contains("privatekey") && lk != "key" && lk != "data",
            "leaks {k}: {c}"
        );
    }
    // expirationDate equals the certificate's notAfter (RFC 3339 UTC).
    let exp = c["expirationDate"].as_str().unwrap_or_default();
    assert!(
        exp.ends_with('Z') && exp.contains('T'),
        "expirationDate not RFC 3339 UTC: {exp}"
    );
    let out = openssl(
        pki.dir(),
        &[
            "x509",
            "-in",
            "client-1.pem",
            "-noout",
            "-enddate",
            "-dateopt",
            "iso_8601",
        ],
    );
    let not_after = String::from_utf8_lossy(&out)
        .trim()
        .trim_start_matches("notAfter=")
        .to_string();
    assert_eq!(
        digits(exp),
        digits(&not_after),
        "expirationDate {exp} vs openssl notAfter {not_after}"
    );
    let out = openssl(
        pki.dir(),
        &[
            "x509",
            "-in",
            "client-1.pem",
            "-noout",
            "-startdate",
            "-dateopt",
            "iso_8601",
        ],
    );
    let not_before = String::from_utf8_lossy(&out)
        .trim()
        .trim_start_matches("notBefore=")
        .to_string();
    assert_eq!(
        digits(c["notBefore"].as_str().unwrap_or_default()),
        digits(&not_before),
        "notBefore"
    );
    // GET returns the same resource.
    let g = admin.get("/certificates/client-1");
    assert_eq!(g.status, 200);
    assert_eq!(g.json(), c);

    // 2. Backend with the self-signed server cert, validation on, client-1 bound.
    let url = format!("{}/base", backend.url());
    let r = admin.put_json(
        "/backends/be1",
        &json!({"url": url, "tls": {"validateCertificateChain": true, "validateCertificateName": true},
                "credentials": {"certificateId": "client-1"}}),
    );
    assert_eq!(r.status, 201, "PUT backend: {}", r.text());

    // 3. API /orders.
    let r = admin.put_api("orders", "/orders", "be1");
    assert_eq!(r.status, 201, "PUT api: {}", r.text());

    // 4. Untrusted chain -> 500 BackendTlsError / UntrustedChain.
    let r = client.get("/orders/1?x=1");
    let v = assert_error(&r, 500, "BackendTlsError");
    assert_eq!(
        v["error"]["details"],
        json!([{"reason": "UntrustedChain"}]),
        "{v}"
    );

    // 5. Validation off -> 200.
    let r = admin.put_backend("be1", &url, false, false, Some("client-1"));
    assert_eq!(r.status, 200, "re-PUT backend: {}", r.text());
    let e = echo(&client.get("/orders/1?x=1"));
    assert_eq!(subject(&e), "CN=client-1, O=edgegw-test", "{e}");
    assert_eq!(e["path"], "/base/1?x=1", "{e}");
    assert_eq!(e["method"], "GET", "{e}");

    // 6. client-2 through an API policy.
    let r = admin.put_certificate(
        "client-2",
        &pki.p12("client-2", P12_PASSWORD, false),
        P12_PASSWORD,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let xml = policy_with_certificate_id("client-2");
    let r = admin.put_xml("/apis/orders/policy", &xml);
    assert!(
        matches!(r.status, 200 | 201 | 204),
        "PUT policy: {} {}",
        r.status,
        r.text()
    );
    let e = echo(&client.get("/orders/1?x=1"));
    assert_eq!(
        subject(&e),
        "CN=client-2, O=edgegw-test",
        "policy overrides the backend's credentials: {e}"
    );
    let r = admin.get("/apis/orders/policy");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text().trim(),
        xml.trim(),
        "GET policy returns the XML as stored"
    );

    // 7. client-1 is in use by be1.
    assert_in_use(&admin.delete("/certificates/client-1"), "backend", "be1");
    // client-2 is in use by the API policy.
    assert_in_use(&admin.delete("/certificates/client-2"), "api", "orders");

    // 8. Unbind and delete client-1.
    let r = admin.put_backend("be1", &url, false, false, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin.delete("/certificates/client-1");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(admin.get("/certificates/client-1").status, 404);
    // Still served with client-2 through the policy.
    assert_eq!(
        subject(&echo(&client.get("/orders/2"))),
        "CN=client-2, O=edgegw-test"
    );

    // 9. A policy by thumbprint.
    let r = admin.put_certificate(
        "client-3",
        &pki.p12("client-3", P12_PASSWORD, false),
        P12_PASSWORD,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let tp3 = pki.thumbprint("client-3.pem");
    let r = admin.put_xml("/apis/orders/policy", &policy_with_thumbprint(&tp3));
    assert!(
        matches!(r.status, 200 | 201 | 204),
        "PUT policy (thumbprint): {} {}",
        r.status,
        r.text()
    );
    let e = echo(&client.get("/orders/3"));
    assert_eq!(subject(&e), "CN=client-3, O=edgegw-test", "{e}");
    assert_in_use(&admin.delete("/certificates/client-3"), "api", "orders");
    // client-2 is no longer referenced.
    assert_eq!(admin.delete("/certificates/client-2").status, 204);

    // Listing is sorted and holds only client-3.
    let l: Value = admin.get("/certificates").json();
    let ids: Vec<&str> = l["value"]
        .as_array()
        .expect("value array")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["client-3"]);
}
