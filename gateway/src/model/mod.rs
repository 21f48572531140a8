//! The resources an operator manages (certificates, backends, APIs and their policies) and
//! the invariants each one keeps. Everything here is validated on the way in ("parse, don't
//! validate"): a value of these types is always well-formed.
//!
//! The data plane never sees these types directly: `crate::snapshot` turns a `Resources`
//! into ready-made routes and TLS connectors.

pub mod api;
pub mod backend;
pub mod ca;
pub mod certificate;
pub mod client_rule;
pub mod pkcs12_work;
pub mod policy;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use boring::pkey::{PKey, Private};
use boring::x509::X509;
use time::OffsetDateTime;

/// A resource id: 1 to 80 characters of `A-Z a-z 0-9 . _ -` (contract §3).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ResourceId(String);

impl ResourceId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let ok = (1..=80).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id did not have the allowed shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidId;

/// SHA-1 of a certificate's DER encoding; shown as 40 uppercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Thumbprint(pub [u8; 20]);

impl Thumbprint {
    /// Parses 40 hex characters, either case.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut out = [0u8; 20];
        if raw.len() != 40 {
            return None;
        }
        hex::decode_to_slice(raw, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.0))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

/// The one identity of a credential, used everywhere a credential decides what may be
/// shared: the upstream TLS context cache, the pool key and the session store. The
/// thumbprint names the leaf; the digest (SHA-256 over the leaf and chain DER, in order)
/// also tells apart two uploads of one leaf with different intermediates. The private key
/// is not hashed: it is the one the leaf's public key matches (checked at intake). A
/// re-upload of the same chain has the same identity, so contexts, pooled connections and
/// sessions made with it stay valid.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialId {
    pub thumbprint: Thumbprint,
    pub chain_digest: [u8; 32],
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CredentialId({}, {})",
            self.thumbprint,
            hex::encode(&self.chain_digest[..8])
        )
    }
}

/// The public description of an uploaded client certificate (the REST resource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub thumbprint: Thumbprint,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub self_signed: bool,
    /// e.g. "RSA-2048", "EC-P256".
    pub key_algorithm: String,
}

/// A client certificate with its private key, ready to present to backends.
pub struct Certificate {
    pub id: ResourceId,
    pub info: CertificateInfo,
    /// What makes two certificates interchangeable on the wire.
    pub credential: CredentialId,
    pub leaf: X509,
    /// Intermediates sent after the leaf (may be empty).
    pub chain: Vec<X509>,
    /// Never printed: `Debug` below leaves it out.
    pub key: PKey<Private>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .field("info", &self.info)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// How a backend or a policy names the certificate it presents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertificateRef {
    Id(ResourceId),
    Thumbprint(Thumbprint),
}

/// The parsed `https://host:port[/base-path]` of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendUrl {
    /// `https` (true) or `http` (false).
    pub tls: bool,
    /// Host as written, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// "" or a path starting with '/' and not ending with '/'.
    pub base_path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: ResourceId,
    pub url: BackendUrl,
    /// The URL exactly as the operator gave it (returned by GET).
    pub url_text: String,
    pub validate_chain: bool,
    pub validate_name: bool,
    pub credential: Option<CertificateRef>,
    /// Private CAs, names and pins that narrow what the backend may present.
    pub trust: BackendTrust,
}

/// What a backend's certificate is checked against beyond the two flags (APIM's backend
/// `tls` settings). Every list is empty by default: the system trust store, the URL's host,
/// no pin. Kept sorted and without duplicates, so equal settings compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendTrust {
    /// CA certificate resources the chain must lead to, instead of the system store
    /// (`tls.trustedCaCertificateIds`). Needs chain validation on.
    pub ca_ids: Vec<ResourceId>,
    /// DNS names one of which the certificate must carry, instead of the URL's host
    /// (`tls.serverX509Names`). Needs name validation on.
    pub server_names: Vec<String>,
    /// SHA-1 thumbprints one of which the backend's leaf must have
    /// (`tls.serverCertificateThumbprints`); checked whatever the two flags say.
    pub pins: Vec<Thumbprint>,
}

/// An API policy: the XML as stored, and what the gateway acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub xml: String,
    pub authentication_certificate: Option<CertificateRef>,
    /// `<validate-client-certificate>`: what the caller's certificate must satisfy.
    pub client_certificate: Option<client_rule::ClientCertificateRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Api {
    pub id: ResourceId,
    /// "/" or a path starting with '/' and not ending with '/'.
    pub path: String,
    pub backend_id: ResourceId,
    pub policy: Option<Policy>,
}

/// Everything the operator has configured: the input of a snapshot. Cloning is cheap per
/// resource (certificates are shared); a write clones, changes and swaps in the copy.
#[derive(Default, Debug, Clone)]
pub struct Resources {
    pub certificates: BTreeMap<ResourceId, Arc<Certificate>>,
    /// Uploaded CA certificates (trust anchors for backends).
    pub ca_certificates: BTreeMap<ResourceId, Arc<ca::CaCertificate>>,
    pub backends: BTreeMap<ResourceId, Backend>,
    pub apis: BTreeMap<ResourceId, Api>,
}

impl Resources {
    /// The certificate a reference names, if it exists.
    pub fn find_certificate(&self, reference: &CertificateRef) -> Option<&Arc<Certificate>> {
        match reference {
            CertificateRef::Id(id) => self.certificates.get(id),
            CertificateRef::Thumbprint(t) => {
                self.certificates.values().find(|c| c.info.thumbprint == *t)
            }
        }
    }

    /// The certificate an API presents to its backend: its policy's, else its backend's.
    pub fn effective_credential<'a>(&'a self, api: &'a Api) -> Option<&'a CertificateRef> {
        api.policy
            .as_ref()
            .and_then(|p| p.authentication_certificate.as_ref())
            .or_else(|| self.backends.get(&api.backend_id)?.credential.as_ref())
    }
}

/// Formats a UTC instant as RFC 3339 with whole seconds: `2026-11-29T03:31:42Z`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A request body broke a rule (contract code `InvalidRequest`); the text says which, in
/// one sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest(pub String);

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRequest {}
