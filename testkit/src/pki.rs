//! One test PKI generator, made with the openssl CLI in a temporary directory removed on
//! drop: keys, self-signed and CA-signed certificates, PKCS#12 bundles in OpenSSL 3's
//! default (AES-256/PBKDF2) form and in the `-legacy` (RC2/3DES) form, and the bad bundles
//! the gateway must refuse (no key, a key that is not the certificate's, no certificate,
//! an expired certificate).
//!
//! Files are named after what they hold: certificate `NAME` is `NAME.pem` with its private
//! key in `NAME.key`; every method takes those bare names.

use std::path::{Path, PathBuf};

use crate::{openssl, temp_dir, TempDir};

/// The key algorithms the tests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Rsa2048,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    /// The key part of `openssl req -newkey …`.
    fn newkey(self) -> &'static [&'static str] {
        match self {
            KeyType::Rsa2048 => &["-newkey", "rsa:2048"],
            KeyType::P256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::P384 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyType::Ed25519 => &["-newkey", "ed25519"],
        }
    }

    /// The same for `openssl genpkey`.
    fn genpkey(self) -> &'static [&'static str] {
        match self {
            KeyType::Rsa2048 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyType::P256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::P384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyType::Ed25519 => &["-algorithm", "ED25519"],
        }
    }
}

#[derive(Clone, Debug)]
enum KeySource {
    New(KeyType),
    /// The key of another certificate of this PKI (`NAME.key`).
    Existing(String),
}

/// What a certificate says: subject, key, lifetime (30 days unless told) and extensions.
#[derive(Clone, Debug)]
pub struct Cert {
    subject: String,
    key: KeySource,
    days: u32,
    extensions: Vec<String>,
}

impl Cert {
    /// `subject` in openssl's `/CN=…/O=…` form, with a new key of `key`'s type.
    pub fn new(subject: &str, key: KeyType) -> Cert {
        Cert {
            subject: subject.to_string(),
            key: KeySource::New(key),
            days: 30,
            extensions: Vec::new(),
        }
    }

    /// What a test server presents: `/CN=localhost` with subjectAltName localhost and
    /// 127.0.0.1, so that clients verifying either name accept it.
    pub fn localhost(key: KeyType) -> Cert {
        Cert::new("/CN=localhost", key).san("DNS:localhost,IP:127.0.0.1")
    }

    /// Like [`Cert::new`], but signed with the existing key `key_name.key`.
    pub fn reusing_key(subject: &str, key_name: &str) -> Cert {
        Cert {
            key: KeySource::Existing(key_name.to_string()),
            ..Cert::new(subject, KeyType::P256)
        }
    }

    /// A CA certificate: critical basicConstraints CA:TRUE, may sign certificates and CRLs.
    pub fn ca(subject: &str, key: KeyType) -> Cert {
        Cert::new(subject, key)
            .ext("basicConstraints=critical,CA:TRUE")
            .ext("keyUsage=critical,keyCertSign,cRLSign")
    }

    pub fn days(mut self, days: u32) -> Cert {
        self.days = days;
        self
    }

    /// One X.509v3 extension in openssl's `name=value` form.
    pub fn ext(mut self, extension: &str) -> Cert {
        self.extensions.push(extension.to_string());
        self
    }

    /// `subjectAltName`, e.g. `DNS:localhost,IP:127.0.0.1`.
    pub fn san(self, names: &str) -> Cert {
        self.ext(&format!("subjectAltName={names}"))
    }
}

/// A PKCS#12 bundle to write with `openssl pkcs12 -export`: which certificate and which key
/// go in (by name), an optional extra certificate, the password and the form.
#[derive(Clone, Debug)]
pub struct P12<'a> {
    cert: Option<&'a str>,
    key: Option<&'a str>,
    extra_cert: Option<&'a str>,
    password: &'a str,
    legacy: bool,
    friendly_name: Option<&'a str>,
    iterations: Option<u32>,
    mac_iterations_one: bool,
    plain_certificates: bool,
}

impl<'a> P12<'a> {
    /// Certificate `name` with its own key, OpenSSL 3's default form.
    pub fn new(name: &'a str, password: &'a str) -> P12<'a> {
        P12 {
            cert: Some(name),
            key: Some(name),
            extra_cert: None,
            password,
            legacy: false,
            friendly_name: None,
            iterations: None,
            mac_iterations_one: false,
            plain_certificates: false,
        }
    }

    /// `-iter N`: key-derivation iterations of the encryption and (unless
    /// [`P12::mac_iterations_one`]) of the MAC.
    pub fn iterations(mut self, n: u32) -> P12<'a> {
        self.iterations = Some(n);
        self
    }

    /// `-nomaciter`: the MAC key derived with one iteration, whatever `-iter` says.
    pub fn mac_iterations_one(mut self) -> P12<'a> {
        self.mac_iterations_one = true;
        self
    }

    /// `-certpbe NONE`: the certificates stored unencrypted (only the key bag is encrypted).
    pub fn plain_certificates(mut self) -> P12<'a> {
        self.plain_certificates = true;
        self
    }

    /// `-legacy`: RC2/3DES and a SHA-1 MAC, what older tools (and Windows) write.
    pub fn legacy(mut self, legacy: bool) -> P12<'a> {
        self.legacy = legacy;
        self
    }

    /// The private key `key.key` instead of the certificate's own name (for a certificate
    /// made with [`Cert::reusing_key`]).
    pub fn with_key(mut self, key: &'a str) -> P12<'a> {
        self.key = Some(key);
        self
    }

    /// Adds certificate `name` (e.g. the issuing CA) after the leaf.
    pub fn chain(mut self, name: &'a str) -> P12<'a> {
        self.extra_cert = Some(name);
        self
    }

    /// `-name`: the bundle's friendly name.
    pub fn friendly_name(mut self, name: &'a str) -> P12<'a> {
        self.friendly_name = Some(name);
        self
    }

    /// A bundle with certificate `name` and no private key (`-nokeys`).
    pub fn without_key(name: &'a str, password: &'a str) -> P12<'a> {
        P12 {
            key: None,
            ..P12::new(name, password)
        }
    }

    /// A bundle whose private key (`key.key`) does not belong to its certificate (`cert`).
    ///
    /// `openssl pkcs12 -export -in cert -inkey other.key` refuses ("No certificate matches
    /// private key") and so does BoringSSL's PKCS12_create; but `-nocerts -inkey K
    /// -certfile C` writes the key bag and the certificate bag side by side.
    pub fn key_mismatch(key: &'a str, cert: &'a str, password: &'a str) -> P12<'a> {
        P12 {
            cert: None,
            key: Some(key),
            extra_cert: Some(cert),
            ..P12::new(key, password)
        }
    }

    /// A bundle holding the private key `key.key` and no certificate at all.
    pub fn key_only(key: &'a str, password: &'a str) -> P12<'a> {
        P12 {
            cert: None,
            ..P12::new(key, password)
        }
    }
}

/// `openssl ca` set-up for [`Pki::expired`]: OpenSSL 3.0's `req`/`x509` cannot set dates in
/// the past, `openssl ca -selfsign -startdate -enddate` can.
const CA_CNF: &str = r#"
[ ca ]
default_ca = myca
[ myca ]
dir = ./cadb
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir
default_md = sha256
policy = pol
unique_subject = no
copy_extensions = copy
[ pol ]
commonName = supplied
organizationName = optional
"#;

/// A test PKI in its own temporary directory (removed on drop).
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// An empty PKI in a new temporary directory `edgegw-TAG-…`.
    pub fn new(tag: &str) -> Result<Pki, String> {
        Ok(Pki {
            dir: temp_dir(tag)?,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn read(&self, file: &str) -> Result<Vec<u8>, String> {
        let path = self.path(file);
        std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    }

    fn write(&self, file: &str, data: &[u8]) -> Result<PathBuf, String> {
        let path = self.path(file);
        std::fs::write(&path, data).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Runs `openssl ARGS` in this PKI's directory; returns its stdout.
    pub fn openssl(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        openssl::run(self.dir(), args)
    }

    /// A private key alone, `name.key` (PEM, PKCS#8).
    pub fn key(&self, name: &str, key: KeyType) -> Result<PathBuf, String> {
        let out = format!("{name}.key");
        let mut a = vec!["genpkey"];
        a.extend(key.genpkey());
        a.extend(["-out", &out]);
        self.openssl(&a)?;
        Ok(self.path(&out))
    }

    /// The key arguments of `openssl req` for certificate `name`.
    fn key_args(name: &str, cert: &Cert) -> Vec<String> {
        match &cert.key {
            KeySource::New(k) => k
                .newkey()
                .iter()
                .map(|s| s.to_string())
                .chain(["-nodes".into(), "-keyout".into(), format!("{name}.key")])
                .collect(),
            KeySource::Existing(k) => vec!["-key".into(), format!("{k}.key")],
        }
    }

    /// The certificate request `name.csr` for `cert` (and its key `name.key`); returns the
    /// file name.
    fn request(&self, name: &str, cert: &Cert) -> Result<String, String> {
        let csr = format!("{name}.csr");
        let mut a: Vec<String> = vec!["req".into(), "-new".into()];
        a.extend(Self::key_args(name, cert));
        a.extend([
            "-out".into(),
            csr.clone(),
            "-subj".into(),
            cert.subject.clone(),
        ]);
        self.openssl(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(csr)
    }

    /// A self-signed certificate `name.pem` (and its key `name.key`).
    pub fn self_signed(&self, name: &str, cert: &Cert) -> Result<PathBuf, String> {
        let out = format!("{name}.pem");
        let days = cert.days.to_string();
        let mut a: Vec<String> = vec!["req".into(), "-x509".into()];
        a.extend(Self::key_args(name, cert));
        a.extend(["-out".into(), out.clone(), "-days".into(), days]);
        a.extend(["-subj".into(), cert.subject.clone()]);
        for e in &cert.extensions {
            a.extend(["-addext".into(), e.clone()]);
        }
        self.openssl(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(self.path(&out))
    }

    /// Certificate `name.pem` (and its key `name.key`) signed by the CA certificate `ca`
    /// (`ca.pem`, `ca.key`) of this PKI, with exactly `cert`'s extensions.
    pub fn signed_by(&self, name: &str, cert: &Cert, ca: &str) -> Result<PathBuf, String> {
        let csr = self.request(name, cert)?;
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        let (out, days) = (format!("{name}.pem"), cert.days.to_string());
        let mut a = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            &days,
            "-sha256",
            "-out",
            &out,
        ];
        // `x509 -req` drops a CSR's extensions: they go in through an extension file.
        let ext = format!("{name}-ext.cnf");
        if !cert.extensions.is_empty() {
            self.write(&ext, (cert.extensions.join("\n") + "\n").as_bytes())?;
            a.extend(["-extfile", &ext]);
        }
        self.openssl(&a)?;
        Ok(self.path(&out))
    }

    /// A self-signed certificate `name.pem` valid only from `not_before` to `not_after`
    /// (openssl's `YYYYMMDDHHMMSSZ`), dates that `self_signed` cannot write.
    pub fn expired(
        &self,
        name: &str,
        cert: &Cert,
        not_before: &str,
        not_after: &str,
    ) -> Result<PathBuf, String> {
        if !self.path("ca.cnf").exists() {
            let db = self.path("cadb");
            std::fs::create_dir_all(&db).map_err(|e| format!("creating {}: {e}", db.display()))?;
            self.write("cadb/index.txt", b"")?;
            self.write("cadb/serial", b"1000\n")?;
            self.write("ca.cnf", CA_CNF.as_bytes())?;
        }
        let csr = self.request(name, cert)?;
        let key = match &cert.key {
            KeySource::New(_) => format!("{name}.key"),
            KeySource::Existing(k) => format!("{k}.key"),
        };
        let out = format!("{name}.pem");
        self.openssl(&[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            &key,
            "-in",
            &csr,
            "-startdate",
            not_before,
            "-enddate",
            not_after,
            "-notext",
            "-out",
            &out,
        ])?;
        Ok(self.path(&out))
    }

    /// Writes the PKCS#12 bundle `p12` to `file` and returns its bytes.
    pub fn pkcs12(&self, file: &str, p12: &P12) -> Result<Vec<u8>, String> {
        let cert = p12.cert.map(|c| format!("{c}.pem"));
        let key = p12.key.map(|k| format!("{k}.key"));
        let extra = p12.extra_cert.map(|c| format!("{c}.pem"));
        let pass = format!("pass:{}", p12.password);
        let mut a = vec!["pkcs12", "-export"];
        match &cert {
            Some(c) => a.extend(["-in", c]),
            None => a.push("-nocerts"),
        }
        match &key {
            Some(k) => a.extend(["-inkey", k]),
            None => a.push("-nokeys"),
        }
        if let Some(c) = &extra {
            a.extend(["-certfile", c]);
        }
        if let Some(n) = p12.friendly_name {
            a.extend(["-name", n]);
        }
        if p12.legacy {
            a.push("-legacy");
        }
        let iterations = p12.iterations.map(|n| n.to_string());
        if let Some(n) = &iterations {
            a.extend(["-iter", n]);
        }
        if p12.mac_iterations_one {
            a.push("-nomaciter");
        }
        if p12.plain_certificates {
            a.extend(["-certpbe", "NONE"]);
        }
        a.extend(["-passout", &pass, "-out", file]);
        self.openssl(&a)?;
        self.read(file)
    }

    /// The private key `name.key` as DER (PKCS#8).
    pub fn key_der(&self, name: &str) -> Result<Vec<u8>, String> {
        let key = format!("{name}.key");
        self.openssl(&["pkey", "-in", &key, "-outform", "DER"])
    }

    /// The SHA-1 fingerprint of the PEM certificate `file` as openssl prints it, without
    /// colons: 40 uppercase hex digits (a cross-check of the gateway's thumbprints).
    pub fn sha1_fingerprint(&self, file: &str) -> Result<String, String> {
        let out = self.openssl(&["x509", "-in", file, "-noout", "-fingerprint", "-sha1"])?;
        let s = String::from_utf8_lossy(&out);
        // "SHA1 Fingerprint=AB:CD:..."
        s.trim()
            .rsplit_once('=')
            .map(|(_, hex)| hex.replace(':', "").to_uppercase())
            .ok_or_else(|| format!("openssl printed no fingerprint for {file}: {s:?}"))
    }

    /// `name-combined.pem`: the certificate and then its key in one file, as HAProxy's
    /// `crt` wants them.
    pub fn combined_pem(&self, name: &str) -> Result<PathBuf, String> {
        let mut data = self.read(&format!("{name}.pem"))?;
        data.extend(self.read(&format!("{name}.key"))?);
        self.write(&format!("{name}-combined.pem"), &data)
    }

    /// `file` with `len` random bytes (e.g. a 48-byte session ticket key).
    pub fn random_file(&self, file: &str, len: usize) -> Result<PathBuf, String> {
        self.openssl(&["rand", "-out", file, &len.to_string()])?;
        Ok(self.path(file))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(pki: &Pki, args: &[&str]) -> String {
        String::from_utf8(pki.openssl(args).unwrap()).unwrap()
    }

    #[test]
    fn certificates_say_what_was_asked() {
        let pki = Pki::new("testkit").unwrap();
        pki.self_signed("ca", &Cert::ca("/CN=ca", KeyType::P384))
            .unwrap();
        let leaf = Cert::new("/CN=leaf", KeyType::P256).san("DNS:localhost");
        pki.signed_by("leaf", &leaf, "ca").unwrap();
        let info = text(&pki, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
        assert!(info.contains("Issuer: CN = ca"), "{info}");
        assert!(info.contains("DNS:localhost"), "{info}");
        pki.openssl(&["verify", "-CAfile", "ca.pem", "leaf.pem"])
            .unwrap();
        pki.expired(
            "old",
            &Cert::reusing_key("/CN=old", "leaf"),
            "20010909014640Z",
            "20041109113320Z",
        )
        .unwrap();
        let dates = text(&pki, &["x509", "-in", "old.pem", "-noout", "-enddate"]);
        assert!(dates.contains("Nov  9 11:33:20 2004 GMT"), "{dates}");
        assert_eq!(pki.sha1_fingerprint("leaf.pem").unwrap().len(), 40);
        assert_eq!(pki.key_der("leaf").unwrap()[0], 0x30);
        assert_eq!(
            std::fs::read(pki.random_file("r", 48).unwrap())
                .unwrap()
                .len(),
            48
        );
        let err = pki.signed_by("x", &leaf, "no-such-ca").unwrap_err();
        assert!(
            err.contains("openssl x509") && err.contains("no-such-ca"),
            "{err}"
        );
    }

    #[test]
    fn bundles_hold_what_they_claim() {
        let pki = Pki::new("testkit").unwrap();
        pki.self_signed("c", &Cert::new("/CN=c", KeyType::Ed25519))
            .unwrap();
        pki.key("other", KeyType::Rsa2048).unwrap();
        let count = |file: &str, what: &str| {
            let out = text(
                &pki,
                &[
                    "pkcs12", "-in", file, "-passin", "pass:pw", "-nodes", "-info", "-legacy",
                ],
            );
            out.matches(what).count()
        };
        pki.pkcs12("m.p12", &P12::new("c", "pw")).unwrap();
        pki.pkcs12("l.p12", &P12::new("c", "pw").legacy(true))
            .unwrap();
        pki.pkcs12("n.p12", &P12::without_key("c", "pw")).unwrap();
        pki.pkcs12("x.p12", &P12::key_mismatch("other", "c", "pw"))
            .unwrap();
        pki.pkcs12("k.p12", &P12::key_only("other", "pw")).unwrap();
        for (file, certs, keys) in [
            ("m.p12", 1, 1),
            ("l.p12", 1, 1),
            ("n.p12", 1, 0),
            ("x.p12", 1, 1),
            ("k.p12", 0, 1),
        ] {
            assert_eq!(count(file, "BEGIN CERTIFICATE"), certs, "{file}");
            assert_eq!(count(file, "BEGIN PRIVATE KEY"), keys, "{file}");
        }
    }
}
