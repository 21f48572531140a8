//! PKCS#12 intake of client certificates.
//!
//! This module owns: turning an operator's `.pfx` bytes + password into a validated
//! [`Certificate`] (with every failure mapped to a contract error code), describing a
//! certificate ([`CertificateInfo`], [`format_name`]). The at-rest record, with the key
//! sealed under the master key, is `store::records`'s.
//! The `.pfx` password is never kept anywhere.

use std::fmt;

use boring::asn1::{Asn1Time, Asn1TimeRef};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkcs12::Pkcs12;
use boring::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use boring::x509::{X509NameRef, X509};
use time::OffsetDateTime;

use super::{Certificate, CertificateInfo, CredentialId, ResourceId, Thumbprint};

/// Why an uploaded PKCS#12 file was refused. Each variant is one contract error code.
///
/// Messages never contain the password or any key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateError {
    /// Not a PKCS#12 file, or one without any certificate. The text says what BoringSSL saw.
    InvalidPkcs12(String),
    /// The password does not open the file.
    WrongPassword,
    /// The file holds certificates but no private key.
    MissingPrivateKey,
    /// The private key does not belong to the (leaf) certificate.
    KeyMismatch,
    /// The leaf certificate's notAfter is in the past.
    CertificateExpired {
        /// The leaf's notAfter.
        not_after: OffsetDateTime,
    },
}

impl CertificateError {
    /// The contract error code (`InvalidPkcs12`, `WrongPassword`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPkcs12(_) => "InvalidPkcs12",
            Self::WrongPassword => "WrongPassword",
            Self::MissingPrivateKey => "MissingPrivateKey",
            Self::KeyMismatch => "KeyMismatch",
            Self::CertificateExpired { .. } => "CertificateExpired",
        }
    }
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPkcs12(why) => {
                write!(f, "The data is not a usable PKCS#12 (.pfx) file: {why}.")
            }
            Self::WrongPassword => f.write_str("The password does not open the PKCS#12 file."),
            Self::MissingPrivateKey => {
                f.write_str("The PKCS#12 file contains no private key for the certificate.")
            }
            Self::KeyMismatch => {
                f.write_str("The private key in the PKCS#12 file does not match its certificate.")
            }
            Self::CertificateExpired { not_after } => write!(
                f,
                "The certificate expired on {}.",
                super::format_rfc3339(*not_after)
            ),
        }
    }
}

impl std::error::Error for CertificateError {}

/// Parses a PKCS#12 (`.pfx`) file: legacy (3DES/RC2) and modern (AES-256/PBKDF2)
/// encryption, empty passwords and self-signed certificates are all accepted.
///
/// The leaf is the certificate matching the private key; the other certificates in the
/// file become the chain, in file order. An expired leaf is refused.
pub fn parse_pkcs12(
    id: ResourceId,
    der: &[u8],
    password: &str,
) -> Result<Certificate, CertificateError> {
    parse_pkcs12_at(id, der, password, OffsetDateTime::now_utc())
}

/// [`parse_pkcs12`] with an explicit "now" for the expiry check.
pub fn parse_pkcs12_at(
    id: ResourceId,
    der: &[u8],
    password: &str,
    now: OffsetDateTime,
) -> Result<Certificate, CertificateError> {
    let p12 = Pkcs12::from_der(der).map_err(|e| classify(&e))?;
    // Before any password derivation: refuse a file that asks for an unbounded amount of it.
    super::pkcs12_work::check(der).map_err(|e| CertificateError::InvalidPkcs12(e.to_string()))?;
    if password.contains('\0') {
        // A PKCS#12 password is a NUL-terminated string: one with a NUL cannot be right.
        return Err(CertificateError::WrongPassword);
    }
    let parsed = p12.parse2(password).map_err(|e| classify(&e))?;
    let mut others: Vec<X509> = parsed
        .ca
        .map(|stack| stack.into_iter().collect())
        .unwrap_or_default();
    let (leaf, key) = match (parsed.cert, parsed.pkey) {
        (Some(leaf), Some(key)) => (leaf, key),
        // BoringSSL picks as leaf the last certificate matching the key; when none
        // matches, every certificate lands in `ca`.
        (None, Some(_)) if !others.is_empty() => return Err(CertificateError::KeyMismatch),
        (None, Some(_)) => {
            return Err(CertificateError::InvalidPkcs12(
                "it contains no certificate".to_owned(),
            ))
        }
        (Some(_), None) => return Err(CertificateError::MissingPrivateKey),
        (None, None) if !others.is_empty() => return Err(CertificateError::MissingPrivateKey),
        (None, None) => {
            return Err(CertificateError::InvalidPkcs12(
                "it contains no certificate".to_owned(),
            ))
        }
    };
    let chain = std::mem::take(&mut others);
    let cert = certificate_from_parts(id, leaf, chain, key)?;
    if cert.info.not_after < now {
        return Err(CertificateError::CertificateExpired {
            not_after: cert.info.not_after,
        });
    }
    Ok(cert)
}

/// Builds a [`Certificate`] from its parts: checks that `key` belongs to `leaf` and fills
/// [`CertificateInfo`]. Does not check expiry (a stored certificate that has expired since
/// it was uploaded still loads).
pub fn certificate_from_parts(
    id: ResourceId,
    leaf: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
) -> Result<Certificate, CertificateError> {
    let invalid = |e: ErrorStack| CertificateError::InvalidPkcs12(reasons(&e));
    let leaf_key = leaf.public_key().map_err(invalid)?;
    if !leaf_key.public_eq(&key) {
        return Err(CertificateError::KeyMismatch);
    }
    let digest = leaf.digest(MessageDigest::sha1()).map_err(invalid)?;
    let mut thumb = [0u8; 20];
    if digest.len() != thumb.len() {
        return Err(CertificateError::InvalidPkcs12(
            "unexpected SHA-1 digest length".to_owned(),
        ));
    }
    thumb.copy_from_slice(&digest);
    let subject = format_name(leaf.subject_name());
    let issuer = format_name(leaf.issuer_name());
    let same_name = match leaf.subject_name().try_cmp(leaf.issuer_name()) {
        Ok(ordering) => ordering.is_eq(),
        Err(_) => subject == issuer,
    };
    let self_signed = same_name && leaf.verify(&leaf_key).unwrap_or(false);
    let info = CertificateInfo {
        subject,
        issuer,
        thumbprint: Thumbprint(thumb),
        not_before: asn1_to_datetime(leaf.not_before()).map_err(CertificateError::InvalidPkcs12)?,
        not_after: asn1_to_datetime(leaf.not_after()).map_err(CertificateError::InvalidPkcs12)?,
        self_signed,
        key_algorithm: key_algorithm(&key),
    };
    let mut chain_hash = boring::sha::Sha256::new();
    chain_hash.update(&leaf.to_der().map_err(invalid)?);
    for c in &chain {
        chain_hash.update(&c.to_der().map_err(invalid)?);
    }
    let credential = CredentialId {
        thumbprint: info.thumbprint,
        chain_digest: chain_hash.finish(),
    };
    Ok(Certificate {
        id,
        info,
        credential,
        leaf,
        chain,
        key,
    })
}

/// Formats a distinguished name as `"CN=client-1, O=Contoso"`: the entries in certificate
/// order, each `SHORTNAME=value` (dotted OID when the attribute has no short name), joined
/// by `", "`. The characters `,+"\<>;` in values are escaped with a backslash (RFC 4514).
pub fn format_name(name: &X509NameRef) -> String {
    let mut out = String::new();
    for entry in name.entries() {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let object = entry.object();
        match object.nid().short_name() {
            Ok(short) if object.nid() != Nid::UNDEF => out.push_str(short),
            _ => out.push_str(&object.to_string()),
        }
        out.push('=');
        match entry.data().as_utf8() {
            Ok(value) => {
                for c in value.chars() {
                    if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            Err(_) => {
                out.push('#');
                out.push_str(&hex::encode(entry.data().as_slice()));
            }
        }
    }
    out
}

/// Describes a key as "RSA-2048", "EC-P256", "EC-P384", "EC-P521", "Ed25519", ...
pub fn key_algorithm<T: HasPublic>(key: &PKeyRef<T>) -> String {
    let id = key.id();
    if id == Id::RSA || id == Id::RSAPSS {
        format!("RSA-{}", key.bits())
    } else if id == Id::EC {
        let curve = key.ec_key().ok().and_then(|ec| ec.group().curve_name());
        match curve {
            Some(Nid::X9_62_PRIME256V1) => "EC-P256".to_owned(),
            Some(Nid::SECP384R1) => "EC-P384".to_owned(),
            Some(Nid::SECP521R1) => "EC-P521".to_owned(),
            Some(other) => format!("EC-{}", other.short_name().unwrap_or("unknown")),
            None => "EC".to_owned(),
        }
    } else if id == Id::ED25519 {
        "Ed25519".to_owned()
    } else if id == Id::ED448 {
        "Ed448".to_owned()
    } else if id == Id::DSA {
        format!("DSA-{}", key.bits())
    } else {
        "unknown".to_owned()
    }
}

/// Converts an ASN.1 time to a UTC [`OffsetDateTime`].
pub fn asn1_to_datetime(t: &Asn1TimeRef) -> Result<OffsetDateTime, String> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| reasons(&e))?;
    let diff = epoch.diff(t).map_err(|e| reasons(&e))?;
    let secs = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| "certificate time out of range".to_owned())
}

/// Maps a BoringSSL error stack from PKCS#12 parsing to a [`CertificateError`].
/// A wrong password is recognised by its reason string and never reported as
/// `InvalidPkcs12`.
fn classify(stack: &ErrorStack) -> CertificateError {
    let wrong_password = stack.errors().iter().any(|e| {
        e.reason().is_some_and(|r| {
            let r = r.to_ascii_uppercase();
            // INCORRECT_PASSWORD: the MAC did not verify. BAD_DECRYPT: a file without a
            // MAC whose encrypted parts do not decrypt under this password.
            r.contains("INCORRECT_PASSWORD") || r.contains("BAD_DECRYPT")
        })
    });
    if wrong_password {
        CertificateError::WrongPassword
    } else {
        CertificateError::InvalidPkcs12(reasons(stack))
    }
}

/// The reason strings of an error stack, for messages (they never carry secrets).
fn reasons(stack: &ErrorStack) -> String {
    let list: Vec<&str> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    if list.is_empty() {
        "unreadable data".to_owned()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use testkit::{Cert, KeyType, P12};

    /// Test PKCS#12 files made with the openssl CLI (testkit's generator): a modern and a
    /// legacy RSA bundle, an EC leaf with its CA, an Ed25519 one, and the bad inputs.
    pub(crate) struct Fixtures {
        pub pki: testkit::Pki,
    }

    impl Fixtures {
        pub(crate) fn new() -> Self {
            Self::create().unwrap_or_else(|e| panic!("making the PKCS#12 fixtures: {e}"))
        }

        fn create() -> Result<Self, String> {
            let pki = testkit::Pki::new("p12")?;
            // Self-signed RSA-2048.
            pki.self_signed(
                "rsa",
                &Cert::new("/CN=client-1/O=Contoso", KeyType::Rsa2048),
            )?;
            // A CA and an EC P-256 leaf it signs.
            pki.self_signed("ca", &Cert::new("/CN=Test CA/O=Contoso", KeyType::P384))?;
            pki.signed_by(
                "ec",
                &Cert::new("/CN=client-2/O=Contoso", KeyType::P256),
                "ca",
            )?;
            pki.self_signed("ed", &Cert::new("/CN=client-3", KeyType::Ed25519))?;
            // Modern (OpenSSL 3 default: AES-256-CBC + PBKDF2, SHA-256 MAC).
            pki.pkcs12("modern.p12", &P12::new("rsa", "s3cret-Pa55"))?;
            // Legacy (RC2 + 3DES, SHA-1 MAC).
            pki.pkcs12("legacy.p12", &P12::new("rsa", "s3cret-Pa55").legacy(true))?;
            // EC leaf with its CA in the chain, empty password.
            pki.pkcs12("chain.p12", &P12::new("ec", "").chain("ca"))?;
            pki.pkcs12("ed.p12", &P12::new("ed", "pw"))?;
            // Certificate only.
            pki.pkcs12("nokey.p12", &P12::without_key("rsa", "pw"))?;
            // Key bag and certificate bag that do not belong together (EC key, RSA cert;
            // and RSA key, another RSA cert); and a key alone.
            pki.pkcs12("mismatch.p12", &P12::key_mismatch("ec", "rsa", "pw"))?;
            pki.key("rsa2", KeyType::Rsa2048)?;
            pki.pkcs12("mismatch-rsa.p12", &P12::key_mismatch("rsa2", "rsa", "pw"))?;
            pki.pkcs12("keyonly.p12", &P12::key_only("rsa2", "pw"))?;
            // An expired certificate (2001-09-09T01:46:40Z to 2004-11-09T11:33:20Z: the
            // tests check that instant) with the RSA key.
            let old = Cert::reusing_key("/CN=old", "rsa");
            pki.expired("old", &old, "20010909014640Z", "20041109113320Z")?;
            pki.pkcs12("old.p12", &P12::new("old", "pw").with_key("rsa"))?;
            Ok(Self { pki })
        }

        pub(crate) fn read(&self, name: &str) -> Vec<u8> {
            self.pki.read(name).unwrap()
        }

        pub(crate) fn pem_cert(&self, name: &str) -> X509 {
            X509::from_pem(&self.read(name)).unwrap()
        }

        pub(crate) fn pem_key(&self, name: &str) -> PKey<Private> {
            PKey::private_key_from_pem(&self.read(name)).unwrap()
        }

        /// Bundles whose key belongs to another certificate: the openssl CLI refuses
        /// `-in cert -inkey other.key`, but `-nocerts -inkey K -certfile C` writes one.
        pub(crate) fn mismatched(&self) -> Vec<u8> {
            self.read("mismatch.p12")
        }
    }

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    #[test]
    fn modern_legacy_chain_and_ed25519_parse() {
        let f = Fixtures::new();
        for name in ["modern.p12", "legacy.p12"] {
            let c = parse_pkcs12(id("c1"), &f.read(name), "s3cret-Pa55").unwrap();
            assert_eq!(c.info.subject, "CN=client-1, O=Contoso");
            assert_eq!(c.info.issuer, "CN=client-1, O=Contoso");
            assert!(c.info.self_signed);
            assert_eq!(c.info.key_algorithm, "RSA-2048");
            assert!(c.chain.is_empty());
            let leaf = f.pem_cert("rsa.pem");
            let sha1 = leaf.digest(MessageDigest::sha1()).unwrap();
            assert_eq!(c.info.thumbprint.0.as_slice(), &sha1[..]);
            assert_eq!(c.info.thumbprint.to_string().len(), 40);
            assert!(c.info.not_before < c.info.not_after);
            let days = (c.info.not_after - c.info.not_before).whole_days();
            assert_eq!(days, 30);
            assert_eq!(c.info.not_after.offset(), time::UtcOffset::UTC);
        }
        let c = parse_pkcs12(id("c2"), &f.read("chain.p12"), "").unwrap();
        assert_eq!(c.info.subject, "CN=client-2, O=Contoso");
        assert_eq!(c.info.issuer, "CN=Test CA, O=Contoso");
        assert!(!c.info.self_signed);
        assert_eq!(c.info.key_algorithm, "EC-P256");
        assert_eq!(c.chain.len(), 1);
        assert_eq!(
            format_name(c.chain[0].subject_name()),
            "CN=Test CA, O=Contoso"
        );
        assert_eq!(key_algorithm(&f.pem_key("ca.key")), "EC-P384");
        let c = parse_pkcs12(id("c3"), &f.read("ed.p12"), "pw").unwrap();
        assert_eq!(c.info.key_algorithm, "Ed25519");
        assert_eq!(c.info.subject, "CN=client-3");
        assert!(c.info.self_signed);
    }

    /// A file asking for more key-derivation work than `pkcs12_work::MAX_ITERATIONS` is
    /// refused before any derivation, naming the part that asks: the MAC, the encrypted
    /// certificates, the shrouded key bag (modern and legacy schemes); at the limit it loads.
    #[test]
    fn costly_pkcs12_files_are_refused_before_any_derivation() {
        use super::super::pkcs12_work::MAX_ITERATIONS;
        let f = Fixtures::new();
        let over = u32::try_from(MAX_ITERATIONS + 1).unwrap();
        let cases = [
            ("mac.p12", P12::new("ec", "pw").iterations(over), "MAC"),
            (
                "content.p12",
                P12::new("ec", "pw").iterations(over).mac_iterations_one(),
                "encrypted content",
            ),
            (
                "keybag.p12",
                P12::new("ec", "pw")
                    .iterations(over)
                    .mac_iterations_one()
                    .plain_certificates(),
                "shrouded key bag",
            ),
            (
                "legacy-content.p12",
                P12::new("ec", "pw")
                    .legacy(true)
                    .iterations(over)
                    .mac_iterations_one(),
                "encrypted content",
            ),
        ];
        for (file, p12, part) in cases {
            let der = f.pki.pkcs12(file, &p12).unwrap();
            // BoringSSL alone would open these (its limit is 100 million): the refusal and
            // its wording are the gate's.
            let err = parse_pkcs12(id("x"), &der, "pw").unwrap_err();
            assert_eq!(err.code(), "InvalidPkcs12", "{file}: {err}");
            let text = err.to_string();
            assert!(
                text.contains(part) && text.contains(&over.to_string()),
                "{file}: {text}"
            );
        }
        let at_limit = u32::try_from(MAX_ITERATIONS).unwrap();
        let der = f
            .pki
            .pkcs12("limit.p12", &P12::new("ec", "pw").iterations(at_limit))
            .unwrap();
        parse_pkcs12(id("x"), &der, "pw").unwrap();
    }

    #[test]
    fn wrong_password_is_never_invalid_pkcs12() {
        let f = Fixtures::new();
        for name in [
            "modern.p12",
            "legacy.p12",
            "chain.p12",
            "ed.p12",
            "nokey.p12",
        ] {
            for pw in ["wrong", "", "s3cret-Pa5", "pw\0x"] {
                if (name == "chain.p12" && pw.is_empty()) || (name == "ed.p12" && pw == "pw") {
                    continue;
                }
                let err = parse_pkcs12(id("x"), &f.read(name), pw).unwrap_err();
                assert_eq!(err, CertificateError::WrongPassword, "{name} with {pw:?}");
            }
        }
    }

    #[test]
    fn missing_key_mismatch_and_garbage() {
        let f = Fixtures::new();
        let err = parse_pkcs12(id("x"), &f.read("nokey.p12"), "pw").unwrap_err();
        assert_eq!(err, CertificateError::MissingPrivateKey);
        for name in ["mismatch.p12", "mismatch-rsa.p12"] {
            let err = parse_pkcs12(id("x"), &f.read(name), "pw").unwrap_err();
            assert_eq!(err, CertificateError::KeyMismatch, "{name}");
            let err = parse_pkcs12(id("x"), &f.read(name), "wrong").unwrap_err();
            assert_eq!(err, CertificateError::WrongPassword, "{name}");
        }
        let err = parse_pkcs12(id("x"), &f.read("keyonly.p12"), "pw").unwrap_err();
        assert_eq!(err.code(), "InvalidPkcs12", "{err}");
        assert!(err.to_string().contains("no certificate"), "{err}");
        for garbage in [&b""[..], b"hello", &f.read("rsa.pem")] {
            let err = parse_pkcs12(id("x"), garbage, "pw").unwrap_err();
            assert_eq!(err.code(), "InvalidPkcs12", "{err}");
        }
        // A truncated file is invalid, not a wrong password.
        let modern = f.read("modern.p12");
        let err = parse_pkcs12(id("x"), &modern[..modern.len() / 2], "s3cret-Pa55").unwrap_err();
        assert_eq!(err.code(), "InvalidPkcs12", "{err}");
    }

    #[test]
    fn expired_certificates_are_refused() {
        let f = Fixtures::new();
        let far = OffsetDateTime::now_utc() + time::Duration::days(365);
        let err = parse_pkcs12_at(id("x"), &f.read("modern.p12"), "s3cret-Pa55", far).unwrap_err();
        assert!(matches!(err, CertificateError::CertificateExpired { .. }));
        assert_eq!(err.code(), "CertificateExpired");

        let err = parse_pkcs12(id("x"), &f.read("old.p12"), "pw").unwrap_err();
        assert_eq!(
            err,
            CertificateError::CertificateExpired {
                not_after: OffsetDateTime::from_unix_timestamp(1_100_000_000).unwrap()
            }
        );
        assert!(err.to_string().contains("2004-11-09T11:33:20Z"), "{err}");
    }

    #[test]
    fn debug_and_errors_never_show_secrets() {
        let f = Fixtures::new();
        let c = parse_pkcs12(id("c1"), &f.read("modern.p12"), "s3cret-Pa55").unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret-Pa55"));
        let pkcs8 = c.key.private_key_to_der_pkcs8().unwrap();
        assert!(!debug.contains(&hex::encode(&pkcs8[pkcs8.len() - 16..])));
        for pw in ["s3cret-Pa55x", "s3cret-Pa55"] {
            for data in [f.read("modern.p12"), f.read("nokey.p12"), f.mismatched()] {
                if let Err(e) = parse_pkcs12(id("c1"), &data, pw) {
                    assert!(!e.to_string().contains("s3cret"), "{e}");
                    assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
                }
            }
        }
    }

    pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
    }

    proptest::proptest! {
        #[test]
        fn parse_pkcs12_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512), pw in ".{0,12}") {
            let _ = parse_pkcs12(id("p"), &data, &pw);
        }
    }
}
