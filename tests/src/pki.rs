//! The e2e suite's test PKI: what [`testkit::pki`] makes, arranged as the suite's tests
//! expect it, in a temporary directory (removed on drop). Failures panic (a test cannot go
//! on without its certificates).
//!
//! Everything here is real: keys, self-signed and CA-signed certificates, PKCS#12 files in
//! OpenSSL 3's default (AES-256/PBKDF2) form and in the `-legacy` (3DES/RC2) form, plus one
//! real bad input for every PKCS#12 error code of the contract.

use std::path::{Path, PathBuf};

use boring::hash::MessageDigest;
use boring::x509::X509;
use testkit::{Cert, KeyType, P12};

use crate::util::hex_upper;

pub struct Pki {
    kit: testkit::Pki,
}

/// Run `openssl` with `args` in `dir`; panic with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    testkit::openssl::run(dir, args).unwrap_or_else(|e| panic!("{e}"))
}

impl Pki {
    /// Create the whole test PKI.
    pub fn new() -> Pki {
        Self::create().unwrap_or_else(|e| panic!("making the test PKI: {e}"))
    }

    fn create() -> Result<Pki, String> {
        let kit = testkit::Pki::new("e2e-pki")?;
        // Backend server certificate, self-signed, for localhost / 127.0.0.1.
        kit.self_signed("server", &Cert::localhost(KeyType::P256))?;
        // A self-signed server certificate for another name (NameMismatch).
        kit.self_signed(
            "wrongname",
            &Cert::new("/CN=wrong.example", KeyType::P256).san("DNS:wrong.example"),
        )?;
        // Private CA and a backend certificate signed by it.
        kit.self_signed(
            "ca",
            &Cert::ca("/CN=edgegw-test-ca/O=edgegw-test", KeyType::P256),
        )?;
        let server = Cert::localhost(KeyType::P256)
            .ext("basicConstraints=CA:FALSE")
            .ext("keyUsage=critical,digitalSignature")
            .ext("extendedKeyUsage=serverAuth");
        kit.signed_by("server-ca", &server, "ca")?;
        // Client certificates, self-signed. client-1 uses RSA, client-2 EC P-256.
        for (name, key) in [
            ("client-1", KeyType::Rsa2048),
            ("client-2", KeyType::P256),
            ("client-3", KeyType::P256),
        ] {
            kit.self_signed(name, &Cert::new(&format!("/CN={name}/O=edgegw-test"), key))?;
        }
        // An unrelated key (for KeyMismatch).
        kit.key("other", KeyType::P256)?;
        // An expired self-signed certificate.
        kit.expired(
            "expired",
            &Cert::new("/CN=expired/O=edgegw-test", KeyType::P256),
            "20200101000000Z",
            "20200102000000Z",
        )?;
        Ok(Pki { kit })
    }

    /// The generator, for certificates beyond the standard set.
    pub fn kit(&self) -> &testkit::Pki {
        &self.kit
    }

    pub fn dir(&self) -> &Path {
        self.kit.dir()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.kit.path(file)
    }

    pub fn read(&self, file: &str) -> Vec<u8> {
        self.kit.read(file).unwrap_or_else(|e| panic!("{e}"))
    }

    fn bundle(&self, file: &str, p12: &P12) -> Vec<u8> {
        self.kit.pkcs12(file, p12).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `openssl pkcs12 -export` of `name.pem` + `name.key`; `legacy` adds `-legacy`.
    pub fn p12(&self, name: &str, password: &str, legacy: bool) -> Vec<u8> {
        let out = format!(
            "{name}-{}-{}.p12",
            if legacy { "legacy" } else { "modern" },
            hex_upper(password.as_bytes())
        );
        let p12 = P12::new(name, password).friendly_name(name).legacy(legacy);
        self.bundle(&out, &p12)
    }

    /// A PKCS#12 bundle holding only the certificate (`-nokeys`).
    pub fn p12_without_key(&self, name: &str, password: &str) -> Vec<u8> {
        self.bundle(
            &format!("{name}-nokey.p12"),
            &P12::without_key(name, password),
        )
    }

    /// A PKCS#12 bundle whose private key (`other.key`) does not belong to the certificate.
    pub fn p12_key_mismatch(&self, name: &str, password: &str) -> Vec<u8> {
        self.bundle(
            &format!("{name}-mismatch.p12"),
            &P12::key_mismatch("other", name, password),
        )
    }

    /// Thumbprint: SHA-1 of the DER of the PEM certificate in `file`, 40 uppercase hex.
    pub fn thumbprint(&self, file: &str) -> String {
        let x = X509::from_pem(&self.read(file)).expect("parse pem");
        hex_upper(&x.digest(MessageDigest::sha1()).expect("digest"))
    }

    /// The same thumbprint computed by the openssl CLI (cross-check).
    pub fn thumbprint_openssl(&self, file: &str) -> String {
        self.kit
            .sha1_fingerprint(file)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The DER of the private key `name.key` (PKCS#8).
    pub fn key_der(&self, name: &str) -> Vec<u8> {
        self.kit.key_der(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A distinctive slice of the PEM key file: its middle full base64 line (64 characters).
    pub fn key_pem_base64_line(&self, name: &str) -> String {
        let s = String::from_utf8(self.read(&format!("{name}.key"))).expect("utf8 key");
        let lines: Vec<&str> = s
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() == 64)
            .collect();
        lines[lines.len() / 2].to_string()
    }

    /// Write 48 random bytes (a backend ticket key file) and return its path.
    pub fn ticket_key(&self, file: &str) -> PathBuf {
        self.kit
            .random_file(file, 48)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use boring::pkcs12::Pkcs12;

    #[test]
    fn pki_inputs_are_what_they_claim() {
        let pki = Pki::new();
        for legacy in [false, true] {
            for pw in ["pw", ""] {
                let p = Pkcs12::from_der(&pki.p12("client-1", pw, legacy)).expect("der");
                let parsed = p.parse2(pw).expect("parse");
                assert!(parsed.pkey.is_some() && parsed.cert.is_some());
            }
        }
        // Wrong password fails.
        let p = Pkcs12::from_der(&pki.p12("client-2", "pw", false)).expect("der");
        assert!(p.parse2("nope").is_err());
        // -nokeys: a certificate, no key.
        let p = Pkcs12::from_der(&pki.p12_without_key("client-1", "pw"))
            .expect("der")
            .parse2("pw")
            .expect("parse");
        assert!(p.pkey.is_none());
        // mismatch: a key, a certificate that is not its leaf.
        let p = Pkcs12::from_der(&pki.p12_key_mismatch("client-1", "pw"))
            .expect("der")
            .parse2("pw")
            .expect("parse");
        assert!(p.pkey.is_some());
        assert!(p.cert.is_none(), "BoringSSL finds no leaf matching the key");
        assert_eq!(p.ca.map(|c| c.len()), Some(1));
        // expired.
        let x = X509::from_pem(&pki.read("expired.pem")).expect("pem");
        assert!(x.not_after() < boring::asn1::Asn1Time::days_from_now(0).expect("now"));
        // thumbprints agree.
        assert_eq!(
            pki.thumbprint("client-1.pem"),
            pki.thumbprint_openssl("client-1.pem")
        );
        assert_eq!(pki.thumbprint("client-1.pem").len(), 40);
        assert!(!pki.key_der("client-1").is_empty());
        assert_eq!(
            std::fs::read(pki.ticket_key("t.key")).expect("read").len(),
            48
        );
    }
}
