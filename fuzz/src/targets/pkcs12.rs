//! `pkcs12`: certificate intake (`gateway::model::certificate::parse_pkcs12`, what
//! `PUT /certificates/{id}` calls with the decoded `data` and the `password`).
//!
//! An input is one byte N, an N-byte password (UTF-8, lossily: the JSON field is a string),
//! then the `.pfx` bytes; the seeds (`fuzz/make-pkcs12-seeds.sh`) are real files made by
//! the openssl CLI. Inputs come from byte mutations of those, from DER-aware mutations
//! (a TLV replaced, deleted, duplicated, retagged; the MAC recomputed for the password so
//! that the parser gets past it to the bags) and from files built here with BoringSSL's
//! `PKCS12_create` out of generated keys and certificates.
//!
//! Properties, beyond "no panic": an accepted file yields a certificate whose thumbprint
//! is the SHA-1 of its leaf and that has not expired; a refusal is one of the contract's
//! codes with a message that never holds the password; a file built here from a key, its
//! unexpired certificate and a chain of other keys' certificates is accepted with that
//! leaf, that key algorithm and that chain length.
//!
//! Cost guard: an input naming an iteration count above `MAX_ITERATIONS` is not run (it
//! would cost seconds to minutes of CPU: BoringSSL accepts up to 100 million).

use boring::asn1::Asn1Time;
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkcs12::Pkcs12;
use boring::pkey::{Id, PKey, Private};
use boring::rsa::Rsa;
use boring::stack::Stack;
use boring::x509::{X509Name, X509};
use gateway::model::certificate::parse_pkcs12;
use gateway::model::ResourceId;
use rand::rngs::StdRng;
use rand::Rng;

use crate::der::{self, Content, Node};
use crate::engine::{hash, Outcome, Target};
use crate::gen::{chance, pick, text_string};

/// Iteration counts above this are not run (OpenSSL's default is 2048).
pub const MAX_ITERATIONS: u64 = 20_000;

const CODES: &[&str] = &[
    "InvalidPkcs12",
    "WrongPassword",
    "MissingPrivateKey",
    "KeyMismatch",
    "CertificateExpired",
];

/// OIDs a PKCS#12 file is made of (DER contents), for the DER-aware mutation.
const OIDS: &[&[u8]] = &[
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01], // data
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06], // encryptedData
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02], // signedData
    &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01,
    ], // keyBag
    &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
    ], // shroudedKeyBag
    &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
    ], // certBag
    &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x05,
    ], // secretBag
    &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x06,
    ], // safeContentsBag
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01], // x509Certificate
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x02], // sdsiCertificate
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03], // pbeWithSHAAnd3-KeyTripleDES-CBC
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06], // pbeWithSHAAnd40BitRC2-CBC
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d],       // PBES2
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c],       // PBKDF2
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09],             // hmacWithSHA256
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07],             // hmacWithSHA1
    &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a],       // aes256-CBC
    &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02],       // aes128-CBC
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07],             // des-ede3-cbc
    &[0x2b, 0x0e, 0x03, 0x02, 0x1a],                               // sha1
    &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],       // sha256
    &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],       // sha512
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],       // rsaEncryption
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],                   // ecPublicKey
    &[0x2b, 0x65, 0x70],                                           // Ed25519
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14],       // friendlyName
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15],       // localKeyID
    &[],
];

const INTEGERS: &[&[u8]] = &[
    &[],
    &[0x00],
    &[0x01],
    &[0x03],
    &[0x7f],
    &[0x80],
    &[0xff],
    &[0x00, 0x80],
    &[0x08, 0x00],
    &[0x00, 0x00, 0x01],
    &[0x4e, 0x20],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x01, 0x00, 0x00, 0x00, 0x00],
];

/// Splits an input into its password and its `.pfx` bytes.
pub fn split(input: &[u8]) -> (String, &[u8]) {
    let Some((&n, rest)) = input.split_first() else {
        return (String::new(), &[]);
    };
    let n = (n as usize).min(rest.len());
    (String::from_utf8_lossy(&rest[..n]).into_owned(), &rest[n..])
}

/// The input for `password` and `der`.
pub fn join(password: &str, der: &[u8]) -> Vec<u8> {
    let pw = &password.as_bytes()[..password.len().min(255)];
    let mut out = vec![pw.len() as u8];
    out.extend_from_slice(pw);
    out.extend_from_slice(der);
    out
}

/// What a file built here must parse to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    thumbprint: String,
    key_algorithm: &'static str,
    chain: usize,
}

pub struct Pkcs12Intake {
    keys: Vec<(PKey<Private>, &'static str)>,
    /// The input last generated and what it must parse to.
    expected: Option<(u64, Expected)>,
}

impl Pkcs12Intake {
    pub fn new() -> Result<Self, String> {
        let e = |e: boring::error::ErrorStack| e.to_string();
        let ec = |nid| -> Result<PKey<Private>, String> {
            let group = EcGroup::from_curve_name(nid).map_err(e)?;
            PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)
        };
        let keys = vec![
            (
                PKey::from_rsa(Rsa::generate(2048).map_err(e)?).map_err(e)?,
                "RSA-2048",
            ),
            (ec(Nid::X9_62_PRIME256V1)?, "EC-P256"),
            (ec(Nid::X9_62_PRIME256V1)?, "EC-P256"),
            (ec(Nid::SECP384R1)?, "EC-P384"),
            (PKey::generate(Id::ED25519).map_err(e)?, "Ed25519"),
        ];
        Ok(Self {
            keys,
            expected: None,
        })
    }

    /// A certificate for key `subject_key`, signed by `issuer_key`.
    fn certificate(
        &self,
        rng: &mut StdRng,
        subject_key: usize,
        issuer_key: usize,
        expired: bool,
    ) -> Result<X509, boring::error::ErrorStack> {
        let mut name = X509Name::builder()?;
        let cn = match rng.random_range(0..6) {
            0 => text_string(rng, 30),
            1 => "a, b+c=\"d\" <e>;\\".to_owned(),
            _ => format!("fuzz-{}", rng.random::<u32>()),
        };
        if name.append_entry_by_nid(Nid::COMMONNAME, &cn).is_err() {
            name.append_entry_by_nid(Nid::COMMONNAME, "fuzz")?;
        }
        if chance(rng, 0.3) {
            let _ = name.append_entry_by_nid(Nid::ORGANIZATIONNAME, &text_string(rng, 12));
        }
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(rng.random_range(0..3))?;
        let serial = BigNum::from_u32(rng.random())?.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        let (key, _) = &self.keys[subject_key];
        b.set_pubkey(key)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (from, to) = if expired {
            (now - 86_400 * 30, now - rng.random_range(60..86_400 * 10))
        } else {
            (
                now - rng.random_range(0..86_400 * 365),
                now + rng.random_range(86_400 * 2..86_400 * 365 * 80),
            )
        };
        let not_before = Asn1Time::from_unix(from)?;
        let not_after = Asn1Time::from_unix(to)?;
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        let (issuer, alg) = &self.keys[issuer_key];
        let md = if *alg == "Ed25519" {
            // SAFETY: a null digest is what X509_sign takes for Ed25519 (which hashes
            // internally); `from_ptr` only wraps the pointer.
            unsafe { MessageDigest::from_ptr(std::ptr::null()) }
        } else {
            *pick(
                rng,
                &[
                    &MessageDigest::sha256(),
                    &MessageDigest::sha1(),
                    &MessageDigest::sha384(),
                ],
            )
        };
        b.sign(issuer, md)?;
        Ok(b.build())
    }

    /// A file built with `PKCS12_create`, and what it must parse to when that is known.
    fn build(&self, rng: &mut StdRng) -> Option<(Vec<u8>, Option<Expected>)> {
        let k = rng.random_range(..self.keys.len());
        let mismatch = chance(rng, 0.05);
        let expired = chance(rng, 0.05);
        let cert_key = if mismatch {
            (k + 1) % self.keys.len()
        } else {
            k
        };
        let issuer = if chance(rng, 0.7) {
            cert_key
        } else {
            rng.random_range(..self.keys.len())
        };
        let leaf = self.certificate(rng, cert_key, issuer, expired).ok()?;
        let mut chain = Stack::new().ok()?;
        let chain_len = rng.random_range(0..3);
        for _ in 0..chain_len {
            // Other keys' certificates: the leaf stays the one certificate of `k`.
            let other = (k + rng.random_range(1..self.keys.len())) % self.keys.len();
            let c = self.certificate(rng, other, other, false).ok()?;
            chain.push(c).ok()?;
        }
        let password = match rng.random_range(0..6) {
            0 => String::new(),
            1 => "secret".to_owned(),
            2 => "p\u{e4}ss w\u{f6}rd \u{20ac}".to_owned(),
            3 => "x".repeat(rng.random_range(60..200)),
            _ => text_string(rng, 16).replace('\0', ""),
        };
        let algorithms = [
            Nid::UNDEF,
            Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC,
            Nid::PBE_WITHSHA1AND40BITRC2_CBC,
            Nid::from_raw(-1),
        ];
        let mut builder = Pkcs12::builder();
        builder
            .key_algorithm(algorithms[rng.random_range(0..2)])
            .cert_algorithm(algorithms[rng.random_range(..algorithms.len())])
            .key_iter(rng.random_range(1..4))
            .mac_iter(rng.random_range(1..4));
        if chain_len > 0 {
            builder.ca(chain);
        }
        let (key, alg) = &self.keys[k];
        let friendly = pick(rng, &["", "client", "f\u{fc}zz"]);
        let p12 = builder.build(&password, friendly, key, &leaf).ok()?;
        let der = p12.to_der().ok()?;
        // The input carries at most 255 bytes of password.
        let expected = (!mismatch && !expired && password.len() <= 255).then(|| Expected {
            thumbprint: leaf
                .digest(MessageDigest::sha1())
                .map(|d| hex::encode_upper(&d[..]))
                .unwrap_or_default(),
            key_algorithm: alg,
            chain: chain_len,
        });
        Some((join(&password, &der), expected))
    }
}

/// A DER-aware mutation of the file in `input` (and, one time in four, of its password).
fn mutate_der(rng: &mut StdRng, input: &mut Vec<u8>) -> bool {
    let (mut password, der) = split(input);
    let Some(mut tree) = der::parse(der) else {
        return false;
    };
    if chance(rng, 0.25) {
        password = match rng.random_range(0..5) {
            0 => String::new(),
            1 => format!("{password}x"),
            2 => password.chars().skip(1).collect(),
            3 => format!("{password}\0"),
            _ => password.to_uppercase(),
        };
    } else {
        let count = tree.count();
        let i = rng.random_range(..count);
        let donor = tree.nth(rng.random_range(..count)).cloned();
        let Some(node) = tree.nth_mut(i) else {
            return false;
        };
        match rng.random_range(0..9) {
            0 if node.tag == der::INTEGER => {
                node.content = Content::Bytes(pick(rng, INTEGERS).to_vec());
            }
            1 if node.tag == der::OID => {
                node.content = Content::Bytes(pick(rng, OIDS).to_vec());
            }
            2 => {
                node.tag = *pick(
                    rng,
                    &[
                        &0x30u8, &0x31, &0x04, &0x02, &0x06, &0x05, &0xa0, &0x80, &0x24, &0x0c,
                    ],
                );
            }
            3 => match &mut node.content {
                Content::Nodes(children) if !children.is_empty() => {
                    let at = rng.random_range(..children.len());
                    children.remove(at);
                }
                Content::Bytes(b) if !b.is_empty() => {
                    let at = rng.random_range(..b.len());
                    b.truncate(at);
                }
                _ => {}
            },
            4 => {
                if let Content::Nodes(children) = &mut node.content {
                    if !children.is_empty() {
                        let at = rng.random_range(..children.len());
                        let copy = children[at].clone();
                        children.insert(at, copy);
                    }
                }
            }
            5 => {
                if let Content::Nodes(children) = &mut node.content {
                    if children.len() > 1 {
                        let a = rng.random_range(..children.len());
                        let b = rng.random_range(..children.len());
                        children.swap(a, b);
                    }
                }
            }
            6 => {
                if let Some(donor) = donor {
                    if donor.count() < 2000 {
                        *node = donor;
                    }
                }
            }
            7 => {
                let inner = node.clone();
                *node = Node {
                    tag: der::SEQUENCE,
                    content: Content::Nodes(vec![inner]),
                };
            }
            _ => {
                if let Content::Bytes(b) = &mut node.content {
                    if !b.is_empty() {
                        let at = rng.random_range(..b.len());
                        b[at] = rng.random();
                    } else {
                        b.push(rng.random());
                    }
                }
            }
        }
    }
    if chance(rng, 0.85) {
        der::fix_mac(&mut tree, &password);
    }
    *input = join(&password, &der::to_der(&tree));
    true
}

impl Target for Pkcs12Intake {
    fn name(&self) -> &'static str {
        "pkcs12"
    }

    fn generate(&mut self, rng: &mut StdRng) -> Vec<u8> {
        match self.build(rng) {
            Some((input, expected)) => {
                self.expected = expected.map(|e| (hash(&input), e));
                input
            }
            None => Vec::new(),
        }
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let (password, der) = split(input);
        if der::max_iterations(der) > MAX_ITERATIONS {
            return Ok(Outcome::new("skipped:iterations"));
        }
        let expected = match self.expected.take() {
            Some((h, e)) if h == hash(input) => Some(e),
            _ => None,
        };
        let id = ResourceId::parse("fuzz").map_err(|_| "setup: the id".to_owned())?;
        match parse_pkcs12(id, der, &password) {
            Ok(cert) => {
                let thumbprint = cert
                    .leaf
                    .digest(MessageDigest::sha1())
                    .map(|d| hex::encode_upper(&d[..]))
                    .map_err(|e| format!("setup: {e}"))?;
                if cert.info.thumbprint.to_string() != thumbprint {
                    return Err(format!(
                        "thumbprint: {} for a leaf whose SHA-1 is {thumbprint}",
                        cert.info.thumbprint
                    ));
                }
                if cert.info.not_after < time::OffsetDateTime::now_utc() {
                    return Err("expired: an expired certificate was accepted".into());
                }
                if let Some(e) = expected {
                    let got = Expected {
                        thumbprint,
                        key_algorithm: e.key_algorithm,
                        chain: cert.chain.len(),
                    };
                    if got != e || cert.info.key_algorithm != e.key_algorithm {
                        return Err(format!(
                            "built-file: expected {e:?}, got {got:?} ({})",
                            cert.info.key_algorithm
                        ));
                    }
                }
                Ok(Outcome::with(
                    "ok",
                    (
                        cert.info.key_algorithm,
                        cert.chain.len(),
                        cert.info.self_signed,
                    ),
                ))
            }
            Err(err) => {
                if let Some(e) = expected {
                    return Err(format!(
                        "built-file: a file built from a matching key and certificate was refused ({}: {err}); expected {e:?}",
                        err.code()
                    ));
                }
                let message = err.to_string();
                if !CODES.contains(&err.code()) || message.is_empty() {
                    return Err(format!("error-code: {} / {message:?}", err.code()));
                }
                if password.len() >= 8 && message.contains(&password) {
                    return Err(format!(
                        "password-leak: the message {message:?} holds the password"
                    ));
                }
                Ok(Outcome::with("err", (err.code(), message)))
            }
        }
    }

    fn mutate(&mut self, rng: &mut StdRng, input: &mut Vec<u8>) -> bool {
        mutate_der(rng, input)
    }

    fn max_len(&self) -> usize {
        16 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MAC recomputed for an unchanged seed is the seed's own: the key derivation and
    /// the DER round trip are right.
    #[test]
    fn fixing_the_mac_of_a_seed_changes_nothing() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/pkcs12");
        let mut checked = 0;
        for (path, data) in crate::engine::read_dir_files(&dir) {
            let (password, der) = split(&data);
            let Some(mut tree) = der::parse(der) else {
                panic!("{} is not DER", path.display());
            };
            assert_eq!(der::to_der(&tree), der, "{}", path.display());
            if der::fix_mac(&mut tree, &password) {
                assert_eq!(der::to_der(&tree), der, "{}", path.display());
                checked += 1;
            }
        }
        assert!(
            checked >= 8,
            "only {checked} seeds have a MAC this harness recomputes"
        );
    }

    #[test]
    fn finds_iteration_counts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/pkcs12");
        for (path, data) in crate::engine::read_dir_files(&dir) {
            let n = der::max_iterations(split(&data).1);
            assert!((1..=2048).contains(&n), "{}: {n}", path.display());
        }
        // A salt, then 100 million iterations.
        let mut pbe = vec![0x30, 0x0e, 0x04, 0x08];
        pbe.extend_from_slice(&[7; 8]);
        pbe.extend_from_slice(&[0x02, 0x04, 0x05, 0xf5, 0xe1, 0x00]);
        assert_eq!(der::max_iterations(&pbe), 100_000_000);
    }
}
