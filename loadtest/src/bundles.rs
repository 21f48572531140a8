//! Client certificates and their PKCS#12 bundles made in this process (no `openssl` process
//! per bundle), so a scenario can rotate a certificate many times a second or fill the store
//! with thousands of distinct ones. The key and certificate come from BoringSSL (`boring`);
//! the bundle's structure is written by the `p12` crate.
//!
//! The form is OpenSSL 3's default (what `openssl pkcs12 -export` writes and what most
//! operators upload): the certificate bag in encrypted content and the key in a shrouded key
//! bag, both PBES2 (PBKDF2 with HMAC-SHA-256, 2048 iterations, AES-256-CBC), under an
//! HMAC-SHA-256 MAC whose key is derived as RFC 7292 B.2 says (2048 iterations).
//!
//! Why not `p12::PFX::new` as it is: its only schemes are the legacy ones (a 3DES key bag,
//! 40-bit RC2 certificates, a SHA-1 MAC); OpenSSL 3 reads RC2 only with `-legacy`. p12 writes
//! any algorithm identifier it is given (`AlgorithmIdentifier::OtherAlg`), though, so here p12
//! writes the whole structure (PFX, content infos, safe bags, attributes, MAC data) and
//! BoringSSL, the project's one crypto stack, does the derivations and the encryption.

use base64::Engine as _;
use boring::asn1::{Asn1Integer, Asn1Time};
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::error::ErrorStack;
use boring::hash::{Hasher, MessageDigest};
use boring::nid::Nid;
use boring::pkey::PKey;
use boring::symm::Cipher;
use boring::x509::extension::{BasicConstraints, ExtendedKeyUsage};
use boring::x509::{X509Name, X509};
use p12::{
    AlgorithmIdentifier, CertBag, ContentInfo, DigestInfo, EncryptedContentInfo, EncryptedData,
    EncryptedPrivateKeyInfo, MacData, OtherAlgorithmIdentifier, PKCS12Attribute, SafeBag,
    SafeBagKind, PFX,
};
use yasna::models::ObjectIdentifier;

/// Key-derivation iterations of every part (OpenSSL's default; edgegw refuses more than
/// 1 000 000).
pub const ITERATIONS: u32 = 2048;

const OID_PBES2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 13];
const OID_PBKDF2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 12];
const OID_HMAC_SHA256: &[u64] = &[1, 2, 840, 113_549, 2, 9];
const OID_AES_256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];

/// One client certificate and its bundle.
pub struct Bundle {
    /// The PKCS#12 file's bytes.
    pub pfx: Vec<u8>,
    /// SHA-1 of the certificate's DER, upper-case hex: the thumbprint edgegw lists.
    pub thumbprint: String,
}

impl Bundle {
    /// The file as the admin API takes it (`"data"`: standard base64).
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.pfx)
    }
}

// No `Debug` for the bundle: it holds a private key (encrypted, but still).
impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("thumbprint", &self.thumbprint)
            .field("pfx", &format_args!("<{} bytes>", self.pfx.len()))
            .finish()
    }
}

/// A new P-256 key and a self-signed client certificate for `CN=common_name`
/// (`O=edgegw-loadtest`, valid for 30 days), as a PKCS#12 bundle under `password`.
pub fn client_bundle(common_name: &str, password: &str) -> Result<Bundle, String> {
    // The errors name what failed, never the key or the password.
    let (cert_der, key_der) =
        self_signed(common_name).map_err(|e| format!("making the certificate: {e}"))?;
    let pfx = pkcs12(&cert_der, &key_der, password, common_name)
        .map_err(|e| format!("writing the PKCS#12 bundle: {e}"))?;
    let digest = boring::hash::hash(MessageDigest::sha1(), &cert_der).map_err(|e| e.to_string())?;
    Ok(Bundle {
        pfx,
        thumbprint: hex_upper(&digest),
    })
}

/// `count` bundles, `CN={prefix}{i}` for i in `first..first + count`, made on up to
/// `threads` threads (each one costs about a millisecond of a core); in order.
pub fn client_bundles(
    prefix: &str,
    first: usize,
    count: usize,
    password: &str,
    threads: usize,
) -> Result<Vec<Bundle>, String> {
    let threads = threads.clamp(1, count.max(1));
    let per = count.div_ceil(threads);
    let parts: Vec<Result<Vec<Bundle>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = (first + t * per)..(first + ((t + 1) * per).min(count));
                s.spawn(move || {
                    range
                        .map(|i| client_bundle(&format!("{prefix}{i}"), password))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a bundle thread panicked".into()))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(count);
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// DER of a self-signed certificate and of its PKCS#8 private key.
fn self_signed(common_name: &str) -> Result<(Vec<u8>, Vec<u8>), ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509Name::builder()?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "edgegw-loadtest")?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(120, boring::bn::MsbOption::MAYBE_ZERO, false)?;
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    cert.set_serial_number(Asn1Integer::from_bn(&serial)?.as_ref())?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(30)?;
    cert.set_not_before(&not_before)?;
    cert.set_not_after(&not_after)?;
    let basic = BasicConstraints::new().build()?;
    let usage = ExtendedKeyUsage::new().client_auth().build()?;
    cert.append_extension(&basic)?;
    cert.append_extension(&usage)?;
    cert.sign(&key, MessageDigest::sha256())?;
    Ok((cert.build().to_der()?, key.private_key_to_der_pkcs8()?))
}

fn oid(components: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(components)
}

fn random<const N: usize>() -> Result<[u8; N], ErrorStack> {
    let mut out = [0u8; N];
    boring::rand::rand_bytes(&mut out)?;
    Ok(out)
}

/// `data` encrypted under `password` with PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC, a fresh
/// salt and IV), and the algorithm identifier that says so (RFC 8018 A.4).
fn pbes2_encrypt(
    data: &[u8],
    password: &str,
) -> Result<(AlgorithmIdentifier, Vec<u8>), ErrorStack> {
    let salt: [u8; 16] = random()?;
    let iv: [u8; 16] = random()?;
    let mut key = [0u8; 32];
    // PBES2 takes the password's bytes as they are (UTF-8), unlike PKCS#12's own schemes.
    boring::pkcs5::pbkdf2_hmac(
        password.as_bytes(),
        &salt,
        ITERATIONS as usize,
        MessageDigest::sha256(),
        &mut key,
    )?;
    let encrypted = boring::symm::encrypt(Cipher::aes_256_cbc(), &key, Some(&iv), data)?;
    key.fill(0);
    let params = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            // keyDerivationFunc: PBKDF2 (salt, iterations, PRF HMAC-SHA-256).
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(OID_PBKDF2));
                w.next().write_sequence(|w| {
                    w.next().write_bytes(&salt);
                    w.next().write_u32(ITERATIONS);
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&oid(OID_HMAC_SHA256));
                        w.next().write_null();
                    });
                });
            });
            // encryptionScheme: AES-256-CBC with its IV.
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(OID_AES_256_CBC));
                w.next().write_bytes(&iv);
            });
        })
    });
    let algorithm = AlgorithmIdentifier::OtherAlg(OtherAlgorithmIdentifier {
        algorithm_type: oid(OID_PBES2),
        params: Some(params),
    });
    Ok((algorithm, encrypted))
}

/// The bundle: an encrypted content holding the certificate bag, a plain content holding the
/// shrouded key bag, an HMAC-SHA-256 MAC over both (the layout of `openssl pkcs12 -export`).
fn pkcs12(
    cert_der: &[u8],
    key_der: &[u8],
    password: &str,
    name: &str,
) -> Result<Vec<u8>, ErrorStack> {
    let local_key_id = boring::hash::hash(MessageDigest::sha1(), cert_der)?.to_vec();
    let attributes = vec![
        PKCS12Attribute::FriendlyName(name.to_owned()),
        PKCS12Attribute::LocalKeyId(local_key_id),
    ];
    let safe_contents =
        |bag: SafeBag| yasna::construct_der(|w| w.write_sequence_of(|w| bag.write(w.next())));

    let cert_bags = safe_contents(SafeBag {
        bag: SafeBagKind::CertBag(CertBag::X509(cert_der.to_vec())),
        attributes: attributes.clone(),
    });
    let (algorithm, encrypted_content) = pbes2_encrypt(&cert_bags, password)?;
    let certificates = ContentInfo::EncryptedData(EncryptedData {
        encrypted_content_info: EncryptedContentInfo {
            content_encryption_algorithm: algorithm,
            encrypted_content,
        },
    });

    let (algorithm, encrypted_data) = pbes2_encrypt(key_der, password)?;
    let key = ContentInfo::Data(safe_contents(SafeBag {
        bag: SafeBagKind::Pkcs8ShroudedKeyBag(EncryptedPrivateKeyInfo {
            encryption_algorithm: algorithm,
            encrypted_data,
        }),
        attributes,
    }));

    let contents = yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            certificates.write(w.next());
            key.write(w.next());
        })
    });
    let mac_data = mac_sha256(&contents, password)?;
    let pfx = PFX {
        version: 3,
        auth_safe: ContentInfo::Data(contents),
        mac_data: Some(mac_data),
    };
    Ok(pfx.to_der())
}

/// PKCS#12 MAC data with HMAC-SHA-256: the key derived from the password with RFC 7292
/// B.2 (ID 3, SHA-256, [`ITERATIONS`]) and a fresh 8-byte salt.
fn mac_sha256(data: &[u8], password: &str) -> Result<MacData, ErrorStack> {
    let salt: [u8; 8] = random()?;
    let mut key = pkcs12_kdf_sha256(&bmp_password(password), &salt, 3, ITERATIONS, 32)?;
    let digest = hmac_sha256(&key, data)?;
    key.fill(0);
    Ok(MacData {
        mac: DigestInfo {
            digest_algorithm: AlgorithmIdentifier::OtherAlg(OtherAlgorithmIdentifier {
                algorithm_type: oid(OID_SHA256),
                params: Some(yasna::construct_der(|w| w.write_null())),
            }),
            digest,
        },
        salt: salt.to_vec(),
        iterations: ITERATIONS,
    })
}

/// RFC 7292 appendix B.2 with SHA-256 (u = 32, v = 64): `len` bytes of key material for
/// purpose `id` (1 key, 2 IV, 3 MAC key) from a BMPString password.
fn pkcs12_kdf_sha256(
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u32,
    len: usize,
) -> Result<Vec<u8>, ErrorStack> {
    const U: usize = 32;
    const V: usize = 64;
    let fill = |s: &[u8]| -> Vec<u8> {
        if s.is_empty() {
            return Vec::new();
        }
        s.iter()
            .copied()
            .cycle()
            .take(V * s.len().div_ceil(V))
            .collect()
    };
    let d = [id; V];
    let mut i: Vec<u8> = fill(salt);
    i.extend(fill(password));
    let mut out = Vec::with_capacity(len + U);
    loop {
        let mut h = Hasher::new(MessageDigest::sha256())?;
        h.update(&d)?;
        h.update(&i)?;
        let mut a = h.finish()?.to_vec();
        for _ in 1..iterations {
            a = boring::hash::hash(MessageDigest::sha256(), &a)?.to_vec();
        }
        out.extend_from_slice(&a);
        if out.len() >= len {
            out.truncate(len);
            i.fill(0);
            return Ok(out);
        }
        // I_j = (I_j + B + 1) mod 2^(8v) for every v-byte block of I, B = A repeated.
        let b: Vec<u8> = a.iter().copied().cycle().take(V).collect();
        for block in i.chunks_mut(V) {
            let mut carry = 1u16;
            for k in (0..V).rev() {
                let sum = u16::from(block[k]) + u16::from(b[k]) + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
}

/// HMAC-SHA-256 (RFC 2104), BoringSSL's.
fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<Vec<u8>, ErrorStack> {
    let mut mac = boring::hmac::Hmac::init(key, &MessageDigest::sha256())?;
    mac.update(data)?;
    mac.finalize()
}

/// A password as PKCS#12 keys are derived from it (RFC 7292 B.1: UTF-16 big-endian with
/// a terminating zero). p12 does the same but keeps its function private.
fn bmp_password(password: &str) -> Vec<u8> {
    let mut out: Vec<u8> = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
    out.extend_from_slice(&[0, 0]);
    out
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test cases 1, 2 and 6 (a key longer than the block).
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There").unwrap();
        assert_eq!(
            mac,
            unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            mac,
            unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        )
        .unwrap();
        assert_eq!(
            mac,
            unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    #[test]
    fn pkcs12_kdf_is_deterministic_and_depends_on_every_input() {
        let pw = bmp_password("secret");
        let a = pkcs12_kdf_sha256(&pw, b"saltsalt", 3, 10, 32).unwrap();
        assert_eq!(a, pkcs12_kdf_sha256(&pw, b"saltsalt", 3, 10, 32).unwrap());
        assert_eq!(a.len(), 32);
        for other in [
            pkcs12_kdf_sha256(&bmp_password("secreT"), b"saltsalt", 3, 10, 32).unwrap(),
            pkcs12_kdf_sha256(&pw, b"saltsalT", 3, 10, 32).unwrap(),
            pkcs12_kdf_sha256(&pw, b"saltsalt", 1, 10, 32).unwrap(),
            pkcs12_kdf_sha256(&pw, b"saltsalt", 3, 11, 32).unwrap(),
        ] {
            assert_ne!(a, other);
        }
        // Longer outputs run the block update; their first 32 bytes are the short output's.
        let long = pkcs12_kdf_sha256(&pw, b"saltsalt", 3, 10, 70).unwrap();
        assert_eq!(long.len(), 70);
        assert_eq!(&long[..32], &a[..]);
    }

    #[test]
    fn bundles_open_with_their_password_in_boringssl_and_differ() {
        let a = client_bundle("bundle-a", "pw-1").unwrap();
        let b = client_bundle("bundle-b", "pw-1").unwrap();
        assert_ne!(a.thumbprint, b.thumbprint);
        assert_eq!(a.thumbprint.len(), 40);
        let parsed = boring::pkcs12::Pkcs12::from_der(&a.pfx)
            .unwrap()
            .parse("pw-1")
            .unwrap();
        let cert = parsed.cert;
        let digest = cert.digest(MessageDigest::sha1()).unwrap();
        assert_eq!(hex_upper(&digest), a.thumbprint);
        let key = parsed.pkey;
        assert!(
            cert.public_key().unwrap().public_eq(&key),
            "the key is the certificate's"
        );
        let wrong = boring::pkcs12::Pkcs12::from_der(&a.pfx)
            .unwrap()
            .parse("other");
        assert!(wrong.is_err(), "a wrong password must not open the bundle");
        assert!(!format!("{a:?}").contains("pfx: ["), "Debug shows no bytes");
    }

    #[test]
    fn many_bundles_in_parallel_are_distinct_and_in_order() {
        let bundles = client_bundles("par-", 5, 7, "pw", 3).unwrap();
        assert_eq!(bundles.len(), 7);
        let distinct: std::collections::HashSet<_> =
            bundles.iter().map(|b| b.thumbprint.clone()).collect();
        assert_eq!(distinct.len(), 7);
        let cert = |b: &Bundle| {
            boring::pkcs12::Pkcs12::from_der(&b.pfx)
                .unwrap()
                .parse("pw")
                .unwrap()
                .cert
        };
        let cn = |b: &Bundle| {
            cert(b)
                .subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .next()
                .unwrap()
                .data()
                .as_utf8()
                .unwrap()
                .to_string()
        };
        assert_eq!(cn(&bundles[0]), "par-5");
        assert_eq!(cn(&bundles[6]), "par-11");
        assert!(client_bundles("none-", 0, 0, "pw", 4).unwrap().is_empty());
    }

    #[test]
    fn openssl_reads_the_bundle_as_a_modern_one() {
        let bundle = client_bundle("bundle-openssl", "s3cret").unwrap();
        let dir = std::env::temp_dir().join(format!("loadtest-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("b.p12");
        std::fs::write(&file, &bundle.pfx).unwrap();
        let info = |pass: &str| {
            std::process::Command::new("openssl")
                .args(["pkcs12", "-info", "-nodes", "-passin"])
                .arg(format!("pass:{pass}"))
                .arg("-in")
                .arg(&file)
                .output()
                .expect("run openssl (Debian: apt-get install openssl)")
        };
        let out = info("s3cret");
        let wrong = info("not-it");
        let _ = std::fs::remove_dir_all(&dir);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "openssl pkcs12 -info failed:\n{text}");
        assert!(
            text.contains("CN = bundle-openssl") || text.contains("CN=bundle-openssl"),
            "{text}"
        );
        assert!(text.contains("BEGIN PRIVATE KEY"), "{text}");
        assert!(text.contains("MAC: sha256, Iteration 2048"), "{text}");
        assert!(
            text.contains("PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256"),
            "{text}"
        );
        assert!(
            text.contains(
                "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256"
            ),
            "{text}"
        );
        assert!(
            !wrong.status.success(),
            "a wrong password must fail the MAC"
        );
    }
}
