//! How much password-derivation work a PKCS#12 file asks for, read before any is done.
//!
//! Every key a PKCS#12 file derives from its password (the MAC key, the key of each encrypted
//! content and of each shrouded key bag) repeats a hash as many times as the file itself says.
//! BoringSSL accepts up to 100 million repetitions per derivation: on this project's machines
//! about 27 s of a core each, so one upload of a hostile or careless file could hold a core
//! for over a minute. Tools write 2 048 (OpenSSL's default) to 600 000 (OWASP's PBKDF2
//! advice); [`MAX_ITERATIONS`] leaves room above that.
//!
//! This module reads, with the `yasna` ASN.1 reader and without the password, every
//! iteration count that is readable without it: the MAC's, each encrypted content's and
//! each shrouded key bag outside encrypted content (including nested safe-contents bags).
//! A bag inside encrypted content can only be reached after the password opened that
//! content, i.e. by whoever made the file; such a bag is bounded by BoringSSL's own limit.
//! The real parse (and every other check) stays BoringSSL's: this is a cost gate only.

use yasna::models::ObjectIdentifier;
use yasna::{ASN1Result, BERReader, BERReaderSeq, Tag};

/// The most iterations one derivation of an uploaded PKCS#12 file may ask for.
pub const MAX_ITERATIONS: u64 = 1_000_000;

/// Nested safe-contents bags followed at most (BoringSSL stops at a similar depth).
const MAX_DEPTH: usize = 8;

/// Why a file was refused by [`check`]: either it is too costly or it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkError {
    /// One derivation asks for more than [`MAX_ITERATIONS`]; `what` names which part.
    TooManyIterations { what: &'static str, iterations: u64 },
    /// The outer structure is not PKCS#12's.
    Unreadable,
}

impl std::fmt::Display for WorkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooManyIterations { what, iterations } => write!(
                f,
                "its {what} asks for {iterations} key-derivation iterations, more than the {MAX_ITERATIONS} accepted"
            ),
            Self::Unreadable => f.write_str("its ASN.1 structure is not that of a PKCS#12 file"),
        }
    }
}

/// Reads the iteration counts of `der` and refuses the file when one is above
/// [`MAX_ITERATIONS`]. Cheap: no derivation, no decryption.
pub fn check(der: &[u8]) -> Result<(), WorkError> {
    let mut counts = Vec::new();
    yasna::parse_ber(der, |r| read_pfx(r, &mut counts)).map_err(|_| WorkError::Unreadable)?;
    match counts.into_iter().find(|(_, n)| *n > MAX_ITERATIONS) {
        Some((what, iterations)) => Err(WorkError::TooManyIterations { what, iterations }),
        None => Ok(()),
    }
}

type Counts = Vec<(&'static str, u64)>;

const OID_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 1];
const OID_ENCRYPTED_DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 6];
const OID_SHROUDED_KEY_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 2];
const OID_SAFE_CONTENTS_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 6];
/// PKCS#12's own password-based encryption schemes (legacy 3DES, RC2, RC4): `1.2.840.113549.1.12.1.*`.
const OID_PKCS12_PBE_ARC: &[u64] = &[1, 2, 840, 113_549, 1, 12, 1];
/// PKCS#5 v1.5 schemes (`pbeWithMD5AndDES-CBC` and kin): `1.2.840.113549.1.5.{1,3,4,6,10,11}`.
const OID_PKCS5_ARC: &[u64] = &[1, 2, 840, 113_549, 1, 5];
const OID_PBES2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 13];
const OID_PBKDF2: &[u64] = &[1, 2, 840, 113_549, 1, 5, 12];

fn is(oid: &ObjectIdentifier, components: &[u64]) -> bool {
    oid.components().as_slice() == components
}

fn under(oid: &ObjectIdentifier, arc: &[u64]) -> bool {
    oid.components().starts_with(arc)
}

/// Consumes what is left of a SEQUENCE (fields this gate does not need).
fn skip_rest(s: &mut BERReaderSeq<'_, '_>) -> ASN1Result<()> {
    while s.read_optional(|r| r.read_der())?.is_some() {}
    Ok(())
}

/// `PFX ::= SEQUENCE { version INTEGER, authSafe ContentInfo, macData MacData OPTIONAL }`
fn read_pfx(r: BERReader<'_, '_>, counts: &mut Counts) -> ASN1Result<()> {
    r.read_sequence(|s| {
        s.next().read_u64()?;
        let auth_safe = read_data_content_info(s.next())?;
        // MacData ::= SEQUENCE { mac DigestInfo, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }
        s.read_optional(|r| {
            r.read_sequence(|m| {
                m.next().read_der()?;
                m.next().read_bytes()?;
                let iterations = m.read_optional(|r| r.read_u64())?.unwrap_or(1);
                counts.push(("MAC", iterations));
                skip_rest(m)
            })
        })?;
        // AuthenticatedSafe ::= SEQUENCE OF ContentInfo
        yasna::parse_ber(&auth_safe, |r| {
            r.read_sequence_of(|r| read_content_info(r, counts))
        })
    })
}

/// The octets of a ContentInfo that must be `data` (the PFX's authSafe).
fn read_data_content_info(r: BERReader<'_, '_>) -> ASN1Result<Vec<u8>> {
    r.read_sequence(|s| {
        let oid = s.next().read_oid()?;
        if !is(&oid, OID_DATA) {
            return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
        }
        let octets = s.next().read_tagged(Tag::context(0), |r| r.read_bytes())?;
        skip_rest(s)?;
        Ok(octets)
    })
}

/// One ContentInfo of the AuthenticatedSafe: plain `data` holding SafeContents (followed),
/// or `encryptedData` (its scheme's count recorded; its contents need the password).
fn read_content_info(r: BERReader<'_, '_>, counts: &mut Counts) -> ASN1Result<()> {
    r.read_sequence(|s| {
        let oid = s.next().read_oid()?;
        if is(&oid, OID_DATA) {
            let octets = s.next().read_tagged(Tag::context(0), |r| r.read_bytes())?;
            yasna::parse_ber(&octets, |r| read_safe_contents(r, counts, 0))?;
        } else if is(&oid, OID_ENCRYPTED_DATA) {
            // EncryptedData ::= SEQUENCE { version, EncryptedContentInfo ::= SEQUENCE {
            //   contentType, contentEncryptionAlgorithm, encryptedContent [0] IMPLICIT OPTIONAL } }
            s.next().read_tagged(Tag::context(0), |r| {
                r.read_sequence(|e| {
                    e.next().read_u64()?;
                    e.next().read_sequence(|c| {
                        c.next().read_oid()?;
                        read_algorithm(c.next(), "encrypted content", counts)?;
                        skip_rest(c)
                    })?;
                    skip_rest(e)
                })
            })?;
        }
        // Any other content type is left to BoringSSL (which refuses what it cannot use).
        skip_rest(s)
    })
}

/// `SafeContents ::= SEQUENCE OF SafeBag`, where
/// `SafeBag ::= SEQUENCE { bagId OID, bagValue [0] EXPLICIT ANY, bagAttributes SET OPTIONAL }`.
fn read_safe_contents(r: BERReader<'_, '_>, counts: &mut Counts, depth: usize) -> ASN1Result<()> {
    if depth > MAX_DEPTH {
        return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
    }
    r.read_sequence_of(|r| {
        r.read_sequence(|bag| {
            let oid = bag.next().read_oid()?;
            if is(&oid, OID_SHROUDED_KEY_BAG) {
                // EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm, encryptedData }
                bag.next().read_tagged(Tag::context(0), |r| {
                    r.read_sequence(|k| {
                        read_algorithm(k.next(), "shrouded key bag", counts)?;
                        skip_rest(k)
                    })
                })?;
            } else if is(&oid, OID_SAFE_CONTENTS_BAG) {
                bag.next().read_tagged(Tag::context(0), |r| {
                    read_safe_contents(r, counts, depth + 1)
                })?;
            }
            skip_rest(bag)
        })
    })
}

/// An AlgorithmIdentifier of a password-based scheme: records its iteration count.
/// PKCS#12 and PKCS#5 v1.5 schemes: `params ::= SEQUENCE { salt OCTET STRING, iterations INTEGER }`;
/// PBES2: `params ::= SEQUENCE { keyDerivationFunc, encryptionScheme }` with PBKDF2's
/// `SEQUENCE { salt, iterationCount INTEGER, keyLength INTEGER OPTIONAL, prf OPTIONAL }`.
/// Any other scheme is BoringSSL's to refuse.
fn read_algorithm(r: BERReader<'_, '_>, what: &'static str, counts: &mut Counts) -> ASN1Result<()> {
    r.read_sequence(|a| {
        let oid = a.next().read_oid()?;
        if is(&oid, OID_PBES2) {
            a.next().read_sequence(|p| {
                p.next().read_sequence(|kdf| {
                    let kdf_oid = kdf.next().read_oid()?;
                    if is(&kdf_oid, OID_PBKDF2) {
                        kdf.next().read_sequence(|k| {
                            k.next().read_der()?;
                            counts.push((what, k.next().read_u64()?));
                            skip_rest(k)
                        })?;
                    }
                    skip_rest(kdf)
                })?;
                skip_rest(p)
            })?;
        } else if under(&oid, OID_PKCS12_PBE_ARC) || under(&oid, OID_PKCS5_ARC) {
            a.next().read_sequence(|p| {
                p.next().read_bytes()?;
                counts.push((what, p.next().read_u64()?));
                skip_rest(p)
            })?;
        }
        skip_rest(a)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_unreadable_and_never_panics() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x80",
            b"not a pfx",
            &[0x30, 0x03, 0x02, 0x01, 0x03],
        ] {
            assert_eq!(check(bad), Err(WorkError::Unreadable), "{bad:?}");
        }
    }

    #[test]
    fn message_names_the_part_and_the_limit() {
        let e = WorkError::TooManyIterations {
            what: "MAC",
            iterations: 5_000_000,
        };
        let text = e.to_string();
        assert!(
            text.contains("MAC") && text.contains("5000000") && text.contains("1000000"),
            "{text}"
        );
    }
}
