//! Restart with the same data dir: everything comes back; private keys are not stored in
//! the clear.

use e2e::http::policy_with_certificate_id;
use e2e::util::{contains_bytes, files_under};
use e2e::*;

#[test]
fn restart_keeps_resources_and_keys_are_not_in_the_clear() {
    let mut f = Fixture::standard();
    f.upload("client-2");
    let r = f.admin.put_backend(
        "be2",
        &format!("{}/two", f.backend.url()),
        false,
        false,
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(f.admin.put_api("other", "/other", "be2").status, 201);
    let xml = policy_with_certificate_id("client-2");
    let r = f.admin.put_xml("/apis/other/policy", &xml);
    assert!(r.status < 300, "{}", r.text());

    let e = echo(&f.client.get("/orders/1"));
    assert_eq!(subject(&e), "CN=client-1, O=edgegw-test");
    let e = echo(&f.client.get("/other/x?y=2"));
    assert_eq!(subject(&e), "CN=client-2, O=edgegw-test");
    assert_eq!(e["path"], "/two/x?y=2");

    let lists = |a: &Admin| {
        [
            "/certificates",
            "/backends",
            "/apis",
            "/apis/other/policy",
            "/apis/orders/policy",
            "/certificates/client-1",
        ]
        .iter()
        .map(|p| {
            let r = a.get(p);
            assert_eq!(r.status, 200, "GET {p}: {}", r.text());
            r.text()
        })
        .collect::<Vec<_>>()
    };
    let before = lists(&f.admin);
    let listener_cert = f.client.connect().expect("connect").peer_cert_der();
    let master_key = std::fs::read(f.gw.data_dir().join("master.key")).ok();

    f.gw.restart();
    let after = lists(&f.admin);
    for (i, (b, a)) in before.iter().zip(after.iter()).enumerate() {
        if b.trim_start().starts_with('{') {
            let bj: serde_json::Value = serde_json::from_str(b).expect("json");
            let aj: serde_json::Value = serde_json::from_str(a).expect("json");
            assert_eq!(bj, aj, "resource listing #{i} differs after restart");
        } else {
            assert_eq!(b, a, "policy #{i} differs after restart");
        }
    }
    let e = echo(&f.client.get("/orders/1"));
    assert_eq!(subject(&e), "CN=client-1, O=edgegw-test", "after restart");
    // The generated listener certificate and master key are made once, then kept.
    assert_eq!(
        f.client.connect().expect("connect").peer_cert_der(),
        listener_cert,
        "listener certificate changed on restart"
    );
    let x = boring::x509::X509::from_der(&listener_cert).expect("listener cert");
    let key = x.public_key().expect("public key");
    let ec = key.ec_key().expect("generated listener key is EC");
    assert_eq!(
        ec.group().curve_name(),
        Some(boring::nid::Nid::X9_62_PRIME256V1),
        "P-256"
    );
    if let Some(mk) = master_key {
        use std::os::unix::fs::PermissionsExt;
        let p = f.gw.data_dir().join("master.key");
        assert_eq!(
            std::fs::read(&p).ok(),
            Some(mk),
            "master.key changed on restart"
        );
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600,
            "master.key mode"
        );
    }
    let e = echo(&f.client.get("/other/x?y=2"));
    assert_eq!(subject(&e), "CN=client-2, O=edgegw-test", "after restart");

    // Every file under data_dir: no client private key in the clear.
    let files = files_under(&f.gw.data_dir());
    assert!(!files.is_empty(), "data_dir is empty: where is the store?");
    let total: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "data_dir holds {} files, {total} bytes: {:?}",
        files.len(),
        files
    );
    for name in ["client-1", "client-2"] {
        let der = f.pki.key_der(name);
        let mid = der.len() / 2;
        let der_slice = &der[mid - 16..mid + 16];
        let b64_line = f.pki.key_pem_base64_line(name);
        let b64_slice = b64_line.as_str();
        // Positive control: the search finds the key where it is in the clear.
        let own = f.pki.read(&format!("{name}.key"));
        assert!(contains_bytes(&own, b64_slice.as_bytes()) && contains_bytes(&der, der_slice));
        for file in &files {
            let bytes = std::fs::read(file).unwrap_or_default();
            assert!(
                !contains_bytes(&bytes, &der),
                "{} holds {name}'s private key DER in the clear",
                file.display()
            );
            assert!(
                !contains_bytes(&bytes, der_slice),
                "{} holds a slice of {name}'s private key DER in the clear",
                file.display()
            );
            assert!(
                !contains_bytes(&bytes, b64_slice.as_bytes()),
                "{} holds {name}'s private key PEM base64 in the clear",
                file.display()
            );
        }
    }
}
