//! The redaction test: every config and key type formatted with `{:?}` and `{:#?}`, with
//! recognisable marker values in its secrets, must not show them. It sits in the top layer
//! because it uses types of every layer below.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::admin::rest::CertificateBody;
use crate::admin::AdminToken;
use crate::config::Config;
use crate::model::certificate::parse_pkcs12;
use crate::model::ResourceId;
use crate::secret::Secret;
use crate::store::MasterKey;
use crate::tls::server::{generate_p256_key, self_signed_cert};
use crate::tls::tickets::TicketKeys;

const TOKEN_MARKER: &str = "TOKEN-MARKER-7f3a9c";
const PASSWORD_MARKER: &str = "PFX-PASSWORD-MARKER-51e2";
const MASTER_KEY_MARKER: &[u8; 32] = b"MASTER-KEY-MARKER-0123456789abcd";
const TICKET_SECRET_MARKER: &[u8] = b"TICKET-SECRET-MARKER-c0ffee";

/// The ways a byte secret could show up in text: itself (when printable), hex in both cases,
/// base64, and the `[1, 2, 3]` list `Debug` prints for byte arrays.
fn renderings(secret: &[u8]) -> Vec<String> {
    let mut out = vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        BASE64.encode(secret),
        format!("{secret:?}").trim_matches(['[', ']']).to_owned(),
    ];
    if let Ok(text) = std::str::from_utf8(secret) {
        out.push(text.to_owned());
    }
    out
}

fn assert_hidden(what: &str, output: &str, secrets: &[Vec<u8>]) {
    for secret in secrets {
        for form in renderings(secret) {
            assert!(
                !output.contains(&form),
                "{what}: its Debug output shows a secret ({form}):\n{output}"
            );
        }
    }
}

/// Both `{:?}` and `{:#?}` of `value`.
fn debug_both(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}\n{value:#?}")
}

#[test]
fn no_secret_appears_in_the_debug_output_of_config_and_key_types() {
    // The whole parsed config: a token, and every key-file path set to a marker.
    let config = Config::from_toml_str(&format!(
        r#"
[listener]
certificate = "/marker/listener-cert.pem"
private_key = "/marker/listener-key.pem"

[admin]
token = "{TOKEN_MARKER}"

[store]
master_key_file = "/marker/master.key"
"#
    ))
    .unwrap();
    assert!(config.admin.token.is_some());
    let out = debug_both(&config);
    // Paths are not secrets and help an operator: they stay, which also shows that the
    // output really is the whole config.
    for path in [
        "/marker/listener-cert.pem",
        "/marker/listener-key.pem",
        "/marker/master.key",
    ] {
        assert!(out.contains(path), "{path} missing from:\n{out}");
    }
    let token = TOKEN_MARKER.as_bytes().to_vec();
    let token_digest = boring::sha::sha256(TOKEN_MARKER.as_bytes()).to_vec();
    assert_hidden("Config", &out, std::slice::from_ref(&token));

    // The resolved admin token keeps only a digest, which must not show either.
    let admin = AdminToken::new(Secret::from(TOKEN_MARKER));
    assert_hidden(
        "AdminToken",
        &debug_both(&admin),
        &[token.clone(), token_digest],
    );
    assert_hidden("Secret", &debug_both(&Secret::from(TOKEN_MARKER)), &[token]);

    let master = MasterKey::from_bytes(*MASTER_KEY_MARKER);
    assert_hidden(
        "MasterKey",
        &debug_both(&master),
        &[MASTER_KEY_MARKER.to_vec()],
    );

    // Ticket keys: derived from a marker secret, then rotated once so that both a current
    // and a previous key are printed.
    for keys in [
        TicketKeys::from_secret(TICKET_SECRET_MARKER).unwrap(),
        TicketKeys::random().unwrap(),
    ] {
        keys.rotate().unwrap();
        let mut secrets: Vec<Vec<u8>> =
            keys.secrets_for_test().iter().map(|k| k.to_vec()).collect();
        assert_eq!(
            secrets.len(),
            4,
            "AES and HMAC keys of current and previous"
        );
        secrets.push(TICKET_SECRET_MARKER.to_vec());
        let out = debug_both(&keys);
        assert!(out.contains("TicketKey"), "{out}");
        assert_hidden("TicketKeys", &out, &secrets);
    }

    // A certificate parsed from a real PKCS#12 file, and the upload body it came in.
    let key = generate_p256_key().unwrap();
    let cert = self_signed_cert(&key, "marker.example").unwrap();
    let p12 = boring::pkcs12::Pkcs12::builder()
        .build(PASSWORD_MARKER, "marker", &key, &cert)
        .unwrap()
        .to_der()
        .unwrap();
    let parsed = parse_pkcs12(ResourceId::parse("c1").unwrap(), &p12, PASSWORD_MARKER).unwrap();
    let der = parsed.key.private_key_to_der_pkcs8().unwrap();
    let pem = String::from_utf8(parsed.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let mut key_secrets = vec![
        der.clone(),
        // The tail of the DER: the private scalar is near its end.
        der[der.len() - 24..].to_vec(),
        PASSWORD_MARKER.as_bytes().to_vec(),
    ];
    key_secrets.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .map(|l| l.as_bytes().to_vec()),
    );
    let out = debug_both(&parsed);
    assert!(out.contains("marker.example"), "{out}");
    assert_hidden("Certificate", &out, &key_secrets);
    let body: CertificateBody = serde_json::from_value(serde_json::json!({
        "data": BASE64.encode(&p12),
        "password": PASSWORD_MARKER,
    }))
    .unwrap();
    let mut body_secrets = key_secrets;
    body_secrets.push(p12[p12.len() - 24..].to_vec());
    assert_hidden("CertificateBody", &debug_both(&body), &body_secrets);
}
