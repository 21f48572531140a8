//! CA certificates: the trust anchors an operator uploads for backends signed by a private
//! CA (`tls.trustedCaCertificateIds`) and, later, for callers' client certificates.
//!
//! This module owns the intake (`PUT /caCertificates/{id}` data: DER, or a PEM file with one
//! or more certificates, each of which must be a CA) and the identity of a set of anchors
//! ([`CaCertificate::digest`]), which the upstream TLS context, the pool key and the session
//! store key by: a re-upload of the same certificates keeps it, anything else changes it.

use std::fmt;

use boring::hash::MessageDigest;
use boring::x509::X509;
use foreign_types::ForeignType as _;
use time::OffsetDateTime;

use super::certificate::{asn1_to_datetime, format_name};
use super::{ResourceId, Thumbprint};

/// What the REST resource shows of a CA certificate (its first certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaInfo {
    pub subject: String,
    pub issuer: String,
    pub thumbprint: Thumbprint,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// An uploaded CA certificate resource: one or more anchors.
pub struct CaCertificate {
    pub id: ResourceId,
    pub info: CaInfo,
    /// Every certificate of the upload, in file order (the first is described by `info`).
    pub certificates: Vec<X509>,
    /// SHA-256 over the DER of every certificate, in order.
    pub digest: [u8; 32],
}

impl fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCertificate")
            .field("id", &self.id)
            .field("info", &self.info)
            .field("certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

/// Why an upload was refused; each variant is one contract error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaError {
    /// Not an X.509 certificate (DER or PEM); the text says what was wrong.
    InvalidCertificate(String),
    /// A certificate without the CA basic constraint (or whose key usage forbids signing
    /// certificates); the text names it.
    NotCa(String),
}

impl CaError {
    /// The contract error code.
    pub fn code(&self) -> &'static str {
        match self {
            CaError::InvalidCertificate(_) => "InvalidCertificate",
            CaError::NotCa(_) => "NotCa",
        }
    }
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaError::InvalidCertificate(why) => {
                write!(f, "The data is not an X.509 certificate: {why}.")
            }
            CaError::NotCa(which) => write!(
                f,
                "The certificate {which} is not a CA certificate (it lacks the CA basic constraint, or its key usage does not allow signing certificates)."
            ),
        }
    }
}

impl std::error::Error for CaError {}

/// At most this many certificates in one upload (a CA bundle, not a trust store dump).
const MAX_CERTIFICATES: usize = 64;

/// Parses an upload: DER of one certificate, or PEM text with one or more. Every
/// certificate must be a CA.
pub fn parse_ca_certificate(id: ResourceId, data: &[u8]) -> Result<CaCertificate, CaError> {
    let invalid = |why: &str| CaError::InvalidCertificate(why.to_owned());
    let certificates = if data.trim_ascii_start().starts_with(b"-----BEGIN") {
        X509::stack_from_pem(data)
            .map_err(|_| invalid("the PEM text holds no readable certificate"))?
    } else {
        vec![X509::from_der(data).map_err(|_| invalid("the DER is not a certificate"))?]
    };
    if certificates.is_empty() {
        return Err(invalid("the PEM text holds no certificate"));
    }
    if certificates.len() > MAX_CERTIFICATES {
        return Err(invalid(&format!(
            "more than {MAX_CERTIFICATES} certificates"
        )));
    }
    from_certificates(id, certificates)
}

/// A CA certificate resource from parsed certificates (intake and the store).
pub fn from_certificates(
    id: ResourceId,
    certificates: Vec<X509>,
) -> Result<CaCertificate, CaError> {
    let invalid = |why: String| CaError::InvalidCertificate(why);
    for (n, cert) in certificates.iter().enumerate() {
        // SAFETY: a valid X509 pointer owned by `cert` for the whole call; X509_check_ca
        // only reads it (it caches extension data inside, as every X509 reader does).
        let ca = unsafe { boring_sys::X509_check_ca(cert.as_ptr()) };
        if ca == 0 {
            let which = format!("#{} ({})", n + 1, format_name(cert.subject_name()));
            return Err(CaError::NotCa(which));
        }
    }
    let first = &certificates[0];
    let sha1 = first
        .digest(MessageDigest::sha1())
        .map_err(|e| invalid(format!("hashing it failed: {e}")))?;
    let mut thumbprint = [0u8; 20];
    thumbprint.copy_from_slice(&sha1);
    let info = CaInfo {
        subject: format_name(first.subject_name()),
        issuer: format_name(first.issuer_name()),
        thumbprint: Thumbprint(thumbprint),
        not_before: asn1_to_datetime(first.not_before()).map_err(invalid)?,
        not_after: asn1_to_datetime(first.not_after()).map_err(invalid)?,
    };
    let mut hash = boring::sha::Sha256::new();
    for cert in &certificates {
        hash.update(
            &cert
                .to_der()
                .map_err(|e| invalid(format!("encoding it failed: {e}")))?,
        );
    }
    Ok(CaCertificate {
        id,
        info,
        certificates,
        digest: hash.finish(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use testkit::{Cert, KeyType};

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    #[test]
    fn der_and_pem_chains_of_cas_are_accepted_leaves_and_garbage_are_not() {
        let pki = testkit::Pki::new("ca-intake").unwrap();
        pki.self_signed("root", &Cert::ca("/CN=Root CA/O=Contoso", KeyType::P256))
            .unwrap();
        pki.self_signed("other", &Cert::ca("/CN=Other CA", KeyType::P256))
            .unwrap();
        pki.signed_by(
            "leaf",
            &Cert::new("/CN=leaf.internal", KeyType::P256).ext("basicConstraints=CA:FALSE"),
            "root",
        )
        .unwrap();
        let pem = pki.read("root.pem").unwrap();
        let der = X509::from_pem(&pem).unwrap().to_der().unwrap();

        let from_der = parse_ca_certificate(id("root"), &der).unwrap();
        let from_pem = parse_ca_certificate(id("root"), &pem).unwrap();
        assert_eq!(from_der.info, from_pem.info);
        assert_eq!(
            from_der.digest, from_pem.digest,
            "same certificate, same identity"
        );
        assert_eq!(from_der.info.subject, "CN=Root CA, O=Contoso");
        assert_eq!(from_der.info.issuer, from_der.info.subject);

        let mut two = pem.clone();
        two.extend_from_slice(&pki.read("other.pem").unwrap());
        let bundle = parse_ca_certificate(id("b"), &two).unwrap();
        assert_eq!(bundle.certificates.len(), 2);
        assert_ne!(bundle.digest, from_pem.digest);

        let leaf = parse_ca_certificate(id("l"), &pki.read("leaf.pem").unwrap()).unwrap_err();
        assert_eq!(leaf.code(), "NotCa");
        assert!(leaf.to_string().contains("CN=leaf.internal"), "{leaf}");
        let mut mixed = pem.clone();
        mixed.extend_from_slice(&pki.read("leaf.pem").unwrap());
        let err = parse_ca_certificate(id("m"), &mixed).unwrap_err();
        assert!(err.to_string().contains("#2"), "{err}");

        for garbage in [
            &b""[..],
            b"hello",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let err = parse_ca_certificate(id("g"), garbage).unwrap_err();
            assert_eq!(err.code(), "InvalidCertificate", "{garbage:?}");
        }
    }
}
