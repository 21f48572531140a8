//! Test PKI made with the `openssl` CLI in a temporary directory (removed on drop).
//!
//! Everything here is real: keys, self-signed and CA-signed certificates, PKCS#12 files in
//! OpenSSL 3's default (AES-256/PBKDF2) form and in the `-legacy` (3DES/RC2) form, plus one
//! real bad input for every PKCS#12 error code of the contract.

use std::path::{Path, PathBuf};
use std::process::Command;

use boring::hash::MessageDigest;
use boring::x509::X509;

use crate::util::hex_upper;

pub struct Pki {
    dir: tempfile::TempDir,
}

/// Run `openssl` with `args` in `dir`; panic with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn openssl (is it installed?)");
    if !out.status.success() {
        panic!(
            "openssl {:?} failed ({}):\n{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

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

impl Pki {
    /// Create the whole test PKI.
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("edgegw-e2e-pki-")
            .tempdir()
            .expect("tempdir");
        let pki = Pki { dir };
        let d = pki.dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];

        // Backend server certificate, self-signed, for localhost / 127.0.0.1.
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ]);
        openssl(d, &a);

        // A self-signed server certificate for another name (NameMismatch).
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "wrongname.key",
            "-out",
            "wrongname.pem",
            "-days",
            "30",
            "-subj",
            "/CN=wrong.example",
            "-addext",
            "subjectAltName=DNS:wrong.example",
        ]);
        openssl(d, &a);

        // Private CA and a backend certificate signed by it.
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=edgegw-test-ca/O=edgegw-test",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(d, &a);
        let mut a = vec!["req", "-new"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "server-ca.key",
            "-out",
            "server-ca.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(d, &a);
        std::fs::write(
            d.join("server-ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server-ca.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-sha256",
                "-extfile",
                "server-ext.cnf",
                "-out",
                "server-ca.pem",
            ],
        );

        // Client certificates, self-signed. client-1 uses RSA, client-2 EC P-256.
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "client-1.key",
                "-out",
                "client-1.pem",
                "-days",
                "30",
                "-subj",
                "/CN=client-1/O=edgegw-test",
            ],
        );
        for name in ["client-2", "client-3"] {
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            let key = format!("{name}.key");
            let pem = format!("{name}.pem");
            let subj = format!("/CN={name}/O=edgegw-test");
            a.extend(["-keyout", &key, "-out", &pem, "-days", "30", "-subj", &subj]);
            openssl(d, &a);
        }

        // An unrelated key (for KeyMismatch).
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "other.key",
            ],
        );

        // An expired self-signed certificate. OpenSSL 3.0's `req`/`x509` cannot set dates in
        // the past, `openssl ca -selfsign -startdate -enddate` can.
        std::fs::create_dir_all(d.join("cadb")).expect("mkdir cadb");
        std::fs::write(d.join("cadb/index.txt"), "").expect("index");
        std::fs::write(d.join("cadb/serial"), "1000\n").expect("serial");
        std::fs::write(d.join("ca.cnf"), CA_CNF).expect("ca.cnf");
        let mut a = vec!["req", "-new"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "expired.key",
            "-out",
            "expired.csr",
            "-subj",
            "/CN=expired/O=edgegw-test",
        ]);
        openssl(d, &a);
        openssl(
            d,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-selfsign",
                "-keyfile",
                "expired.key",
                "-in",
                "expired.csr",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
                "-notext",
                "-out",
                "expired.pem",
            ],
        );
        pki
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap_or_else(|e| panic!("read {file}: {e}"))
    }

    /// `openssl pkcs12 -export` of `name.pem` + `name.key`; `legacy` adds `-legacy`.
    pub fn p12(&self, name: &str, password: &str, legacy: bool) -> Vec<u8> {
        let out = format!(
            "{name}-{}-{}.p12",
            if legacy { "legacy" } else { "modern" },
            hex_upper(password.as_bytes())
        );
        let pem = format!("{name}.pem");
        let key = format!("{name}.key");
        let pass = format!("pass:{password}");
        let mut a = vec![
            "pkcs12", "-export", "-in", &pem, "-inkey", &key, "-name", name, "-passout", &pass,
            "-out", &out,
        ];
        if legacy {
            a.push("-legacy");
        }
        openssl(self.dir(), &a);
        self.read(&out)
    }

    /// A PKCS#12 bundle holding only the certificate (`-nokeys`).
    pub fn p12_without_key(&self, name: &str, password: &str) -> Vec<u8> {
        let pem = format!("{name}.pem");
        let pass = format!("pass:{password}");
        let out = format!("{name}-nokey.p12");
        openssl(
            self.dir(),
            &[
                "pkcs12", "-export", "-nokeys", "-in", &pem, "-passout", &pass, "-out", &out,
            ],
        );
        self.read(&out)
    }

    /// A PKCS#12 bundle whose private key does not belong to the certificate.
    ///
    /// `openssl pkcs12 -export -in cert -inkey other.key` refuses ("No certificate matches
    /// private key") and so does BoringSSL's PKCS12_create; but `-nocerts -inkey other.key
    /// -certfile cert.pem` writes the key bag and the certificate bag side by side.
    pub fn p12_key_mismatch(&self, name: &str, password: &str) -> Vec<u8> {
        let pem = format!("{name}.pem");
        let pass = format!("pass:{password}");
        let out = format!("{name}-mismatch.p12");
        openssl(
            self.dir(),
            &[
                "pkcs12",
                "-export",
                "-nocerts",
                "-inkey",
                "other.key",
                "-certfile",
                &pem,
                "-passout",
                &pass,
                "-out",
                &out,
            ],
        );
        self.read(&out)
    }

    /// Thumbprint: SHA-1 of the DER of the PEM certificate in `file`, 40 uppercase hex.
    pub fn thumbprint(&self, file: &str) -> String {
        let x = X509::from_pem(&self.read(file)).expect("parse pem");
        hex_upper(&x.digest(MessageDigest::sha1()).expect("digest"))
    }

    /// The same thumbprint computed by the openssl CLI (cross-check).
    pub fn thumbprint_openssl(&self, file: &str) -> String {
        let out = openssl(
            self.dir(),
            &["x509", "-in", file, "-noout", "-fingerprint", "-sha1"],
        );
        let s = String::from_utf8_lossy(&out);
        // "SHA1 Fingerprint=AB:CD:..."
        s.trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .replace(':', "")
            .to_uppercase()
    }

    /// The DER of the private key `name.key` (PKCS#8).
    pub fn key_der(&self, name: &str) -> Vec<u8> {
        let key = format!("{name}.key");
        openssl(self.dir(), &["pkey", "-in", &key, "-outform", "DER"])
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
        openssl(self.dir(), &["rand", "-out", file, "48"]);
        self.path(file)
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
