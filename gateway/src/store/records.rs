//! The stored records: what the store keeps of each resource, with a schema version, and
//! the conversions between records and the domain types of `model` (`TryFrom` a record,
//! `From` a domain value). The REST bodies (`admin::rest`) are another thing: the contract
//! may change without the disk format changing, and the other way round.
//!
//! Records written before records had a version (edgegw 0.1) have the same fields and no
//! `schema`: they read as schema 1. A record of a newer schema than this build knows is
//! refused with a message that says so, never guessed at.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use boring::error::ErrorStack;
use boring::pkey::PKey;
use boring::x509::X509;
use serde::{Deserialize, Serialize};

use super::{Contents, Kind, MasterKey, StoreError};
use crate::model::ca::{from_certificates, CaCertificate};
use crate::model::certificate::certificate_from_parts;
use crate::model::policy::parse_policy;
use crate::model::{
    Api, Backend, BackendTrust, Certificate, CertificateRef, ResourceId, Resources, Thumbprint,
};

/// Schema versions this build writes and reads.
pub const CERTIFICATE_SCHEMA: u32 = 1;
pub const CA_CERTIFICATE_SCHEMA: u32 = 1;
/// Schema 2 adds the backend's trust lists; a backend without them is still written as
/// schema 1, so that an older edgegw keeps reading it.
pub const BACKEND_SCHEMA: u32 = 2;
pub const API_SCHEMA: u32 = 1;

fn legacy_schema() -> u32 {
    1
}

fn newer(found: u32, known: u32) -> String {
    format!(
        "record schema {found} is not one this edgegw reads (it reads schema {known}); \
         it was written by a newer edgegw: run that version or restore a backup"
    )
}

/// The at-rest form of a certificate: the chain in DER (public), and the private key as
/// PKCS#8 DER sealed with AES-256-GCM under the master key (random 12-byte nonce, the
/// certificate id as associated data). Nothing else private is stored.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredCertificate {
    /// Record format version ([`CERTIFICATE_SCHEMA`]).
    pub version: u32,
    /// Base64 DER certificates, leaf first, then the chain in order.
    pub certificates: Vec<String>,
    /// Base64 of the 12-byte GCM nonce.
    pub key_nonce: String,
    /// Base64 of the sealed PKCS#8 key: ciphertext followed by the 16-byte tag.
    pub sealed_key: String,
}

impl fmt::Debug for StoredCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCertificate")
            .field("version", &self.version)
            .field("certificates", &self.certificates.len())
            .field("sealed_key", &"<sealed>")
            .finish_non_exhaustive()
    }
}

impl StoredCertificate {
    /// Seals a certificate for storage.
    pub fn seal(cert: &Certificate, master_key: &MasterKey) -> Result<Self, StoreError> {
        let crypto = |e: ErrorStack| StoreError::Crypto(format!("encoding a certificate: {e}"));
        let mut certificates = vec![BASE64.encode(cert.leaf.to_der().map_err(crypto)?)];
        for c in &cert.chain {
            certificates.push(BASE64.encode(c.to_der().map_err(crypto)?));
        }
        let mut pkcs8 = cert.key.private_key_to_der_pkcs8().map_err(crypto)?;
        let sealed = master_key.seal(cert.id.as_str().as_bytes(), &pkcs8);
        pkcs8.fill(0);
        let (nonce, sealed_key) = sealed?;
        Ok(Self {
            version: CERTIFICATE_SCHEMA,
            certificates,
            key_nonce: BASE64.encode(nonce),
            sealed_key: BASE64.encode(sealed_key),
        })
    }

    /// Opens a stored record back into a [`Certificate`] (no expiry check).
    pub fn open(&self, id: ResourceId, master_key: &MasterKey) -> Result<Certificate, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("certificate {id}: {what}"));
        if self.version != CERTIFICATE_SCHEMA {
            return Err(corrupt(&newer(self.version, CERTIFICATE_SCHEMA)));
        }
        let mut ders = Vec::with_capacity(self.certificates.len());
        for c in &self.certificates {
            let der = BASE64.decode(c).map_err(|_| corrupt("bad base64"))?;
            ders.push(X509::from_der(&der).map_err(|_| corrupt("bad certificate DER"))?);
        }
        if ders.is_empty() {
            return Err(corrupt("no certificate"));
        }
        let leaf = ders.remove(0);
        let nonce = BASE64
            .decode(&self.key_nonce)
            .map_err(|_| corrupt("bad nonce"))?;
        let sealed = BASE64
            .decode(&self.sealed_key)
            .map_err(|_| corrupt("bad sealed key"))?;
        let mut pkcs8 = master_key
            .open(id.as_str().as_bytes(), &nonce, &sealed)
            .map_err(|e| corrupt(&e.to_string()))?;
        let key = PKey::private_key_from_pkcs8(&pkcs8);
        pkcs8.fill(0);
        let key = key.map_err(|_| corrupt("bad private key"))?;
        certificate_from_parts(id.clone(), leaf, ders, key).map_err(|e| corrupt(&e.to_string()))
    }
}

/// The stored record of a backend.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredBackend {
    #[serde(default = "legacy_schema")]
    pub schema: u32,
    /// The URL exactly as the operator gave it.
    pub url: String,
    #[serde(default)]
    pub tls: Option<StoredTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<StoredCredential>,
}

/// A backend's validation flags and trust lists (schema 2) as stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredTls {
    pub validate_certificate_chain: bool,
    pub validate_certificate_name: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_ca_certificate_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_x509_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_certificate_thumbprints: Vec<String>,
}

/// The at-rest form of a CA certificate: its certificates in DER (all public).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredCaCertificate {
    pub schema: u32,
    /// Base64 DER, in upload order.
    pub certificates: Vec<String>,
}

impl StoredCaCertificate {
    pub fn new(ca: &CaCertificate) -> Result<Self, StoreError> {
        let mut certificates = Vec::with_capacity(ca.certificates.len());
        for c in &ca.certificates {
            let der = c
                .to_der()
                .map_err(|e| StoreError::Crypto(format!("encoding a CA certificate: {e}")))?;
            certificates.push(BASE64.encode(der));
        }
        Ok(Self {
            schema: CA_CERTIFICATE_SCHEMA,
            certificates,
        })
    }

    pub fn open(&self, id: ResourceId) -> Result<CaCertificate, String> {
        if self.schema != CA_CERTIFICATE_SCHEMA {
            return Err(newer(self.schema, CA_CERTIFICATE_SCHEMA));
        }
        let mut certificates = Vec::with_capacity(self.certificates.len());
        for c in &self.certificates {
            let der = BASE64.decode(c).map_err(|_| "bad base64".to_owned())?;
            certificates.push(X509::from_der(&der).map_err(|_| "bad certificate DER".to_owned())?);
        }
        if certificates.is_empty() {
            return Err("no certificate".to_owned());
        }
        from_certificates(id, certificates).map_err(|e| e.to_string())
    }
}

/// A certificate reference as stored: exactly one of the two.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredCredential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_thumbprint: Option<String>,
}

impl From<&CertificateRef> for StoredCredential {
    fn from(r: &CertificateRef) -> Self {
        match r {
            CertificateRef::Id(id) => StoredCredential {
                certificate_id: Some(id.to_string()),
                certificate_thumbprint: None,
            },
            CertificateRef::Thumbprint(t) => StoredCredential {
                certificate_id: None,
                certificate_thumbprint: Some(t.to_string()),
            },
        }
    }
}

impl TryFrom<&StoredCredential> for CertificateRef {
    type Error = String;

    fn try_from(c: &StoredCredential) -> Result<Self, String> {
        match (&c.certificate_id, &c.certificate_thumbprint) {
            (Some(id), None) => ResourceId::parse(id)
                .map(CertificateRef::Id)
                .map_err(|_| format!("invalid certificate id {id:?}")),
            (None, Some(t)) => Thumbprint::parse(t)
                .map(CertificateRef::Thumbprint)
                .ok_or_else(|| format!("invalid thumbprint {t:?}")),
            _ => Err(
                "credentials need exactly one of certificateId and certificateThumbprint".into(),
            ),
        }
    }
}

impl From<&Backend> for StoredBackend {
    fn from(b: &Backend) -> Self {
        let trust = &b.trust;
        let plain = trust == &BackendTrust::default();
        StoredBackend {
            schema: if plain { 1 } else { BACKEND_SCHEMA },
            url: b.url_text.clone(),
            tls: Some(StoredTls {
                validate_certificate_chain: b.validate_chain,
                validate_certificate_name: b.validate_name,
                trusted_ca_certificate_ids: trust.ca_ids.iter().map(ToString::to_string).collect(),
                server_x509_names: trust.server_names.clone(),
                server_certificate_thumbprints: trust
                    .pins
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            }),
            credentials: b.credential.as_ref().map(StoredCredential::from),
        }
    }
}

impl TryFrom<(ResourceId, &StoredBackend)> for Backend {
    type Error = String;

    fn try_from((id, r): (ResourceId, &StoredBackend)) -> Result<Self, String> {
        if r.schema > BACKEND_SCHEMA {
            return Err(newer(r.schema, BACKEND_SCHEMA));
        }
        // Records of 0.1 may lack the flags: both default to on, as in the REST body.
        let tls = r.tls.clone().unwrap_or(StoredTls {
            validate_certificate_chain: true,
            validate_certificate_name: true,
            trusted_ca_certificate_ids: Vec::new(),
            server_x509_names: Vec::new(),
            server_certificate_thumbprints: Vec::new(),
        });
        let trust = BackendTrust::from_text(
            &tls.trusted_ca_certificate_ids,
            &tls.server_x509_names,
            &tls.server_certificate_thumbprints,
        )
        .map_err(|e| e.to_string())?;
        let credential = r
            .credentials
            .as_ref()
            .map(CertificateRef::try_from)
            .transpose()?;
        Backend::new(
            id,
            &r.url,
            tls.validate_certificate_chain,
            tls.validate_certificate_name,
            credential,
        )
        .and_then(|b| b.with_trust(trust))
        .map_err(|e| e.to_string())
    }
}

/// The stored record of an API: its route, its backend and its policy XML, when it has one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredApi {
    #[serde(default = "legacy_schema")]
    pub schema: u32,
    pub path: String,
    pub backend_id: String,
    /// The policy XML exactly as uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl From<&Api> for StoredApi {
    fn from(api: &Api) -> Self {
        StoredApi {
            schema: API_SCHEMA,
            path: api.path.clone(),
            backend_id: api.backend_id.to_string(),
            policy: api.policy.as_ref().map(|p| p.xml.clone()),
        }
    }
}

impl TryFrom<(ResourceId, &StoredApi)> for Api {
    type Error = String;

    fn try_from((id, r): (ResourceId, &StoredApi)) -> Result<Self, String> {
        if r.schema != API_SCHEMA {
            return Err(newer(r.schema, API_SCHEMA));
        }
        let mut api = Api::new(id, &r.path, &r.backend_id).map_err(|e| e.to_string())?;
        if let Some(xml) = &r.policy {
            api.policy = Some(parse_policy(xml).map_err(|e| e.to_string())?);
        }
        Ok(api)
    }
}

/// The record bytes of a certificate, its key sealed under `master_key`.
pub fn encode_certificate(
    cert: &Certificate,
    master_key: &MasterKey,
) -> Result<Vec<u8>, StoreError> {
    let record = StoredCertificate::seal(cert, master_key)?;
    serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(format!("encoding a record: {e}")))
}

/// The record bytes of a CA certificate.
pub fn encode_ca_certificate(ca: &CaCertificate) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&StoredCaCertificate::new(ca)?)
        .map_err(|e| StoreError::Corrupt(format!("encoding a record: {e}")))
}

/// The record bytes of a backend.
pub fn encode_backend(backend: &Backend) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&StoredBackend::from(backend))
        .map_err(|e| StoreError::Corrupt(format!("encoding a record: {e}")))
}

/// The record bytes of an API (with its policy).
pub fn encode_api(api: &Api) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&StoredApi::from(api))
        .map_err(|e| StoreError::Corrupt(format!("encoding a record: {e}")))
}

fn corrupt(kind: Kind, id: &str, why: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{kind} {id:?}: {why}"))
}

/// A decoded resource.
#[derive(Debug)]
pub enum Resource {
    Certificate(std::sync::Arc<Certificate>),
    CaCertificate(std::sync::Arc<CaCertificate>),
    Backend(Backend),
    Api(Api),
}

impl Resource {
    /// Puts the resource into `resources` under `id` (replacing one of the same kind).
    pub fn insert_into(self, resources: &mut Resources, id: ResourceId) {
        match self {
            Resource::Certificate(c) => {
                resources.certificates.insert(id, c);
            }
            Resource::CaCertificate(c) => {
                resources.ca_certificates.insert(id, c);
            }
            Resource::Backend(b) => {
                resources.backends.insert(id, b);
            }
            Resource::Api(a) => {
                resources.apis.insert(id, a);
            }
        }
    }
}

/// Removes the resource of `kind` and `id` from `resources`; whether there was one.
pub fn remove_from(resources: &mut Resources, kind: Kind, id: &ResourceId) -> bool {
    match kind {
        Kind::Certificate => resources.certificates.remove(id).is_some(),
        Kind::CaCertificate => resources.ca_certificates.remove(id).is_some(),
        Kind::Backend => resources.backends.remove(id).is_some(),
        Kind::Api => resources.apis.remove(id).is_some(),
    }
}

/// Decodes one record (opening a certificate's key with `master_key`); the error names it.
pub fn decode(
    kind: Kind,
    raw_id: &str,
    record: &[u8],
    master_key: &MasterKey,
) -> Result<(ResourceId, Resource), StoreError> {
    let id = ResourceId::parse(raw_id).map_err(|_| corrupt(kind, raw_id, "invalid id"))?;
    let bad = |e: &dyn fmt::Display| corrupt(kind, raw_id, e);
    let resource = match kind {
        Kind::Certificate => {
            let stored: StoredCertificate = serde_json::from_slice(record).map_err(|e| bad(&e))?;
            Resource::Certificate(std::sync::Arc::new(stored.open(id.clone(), master_key)?))
        }
        Kind::CaCertificate => {
            let stored: StoredCaCertificate =
                serde_json::from_slice(record).map_err(|e| bad(&e))?;
            Resource::CaCertificate(std::sync::Arc::new(
                stored.open(id.clone()).map_err(|e| bad(&e))?,
            ))
        }
        Kind::Backend => {
            let stored: StoredBackend = serde_json::from_slice(record).map_err(|e| bad(&e))?;
            Resource::Backend(Backend::try_from((id.clone(), &stored)).map_err(|e| bad(&e))?)
        }
        Kind::Api => {
            let stored: StoredApi = serde_json::from_slice(record).map_err(|e| bad(&e))?;
            Resource::Api(Api::try_from((id.clone(), &stored)).map_err(|e| bad(&e))?)
        }
    };
    Ok((id, resource))
}

/// Every resource of `contents`, decoded. A record that fails to decode is an error naming
/// it, never silently dropped.
pub fn load(contents: &Contents, master_key: &MasterKey) -> Result<Resources, StoreError> {
    let mut resources = Resources::default();
    for record in &contents.records {
        let (id, resource) = decode(record.kind, &record.id, &record.value, master_key)?;
        resource.insert_into(&mut resources, id);
    }
    Ok(resources)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::certificate::parse_pkcs12;
    use crate::model::certificate::tests::{contains, Fixtures};

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    #[test]
    fn stored_certificate_round_trips_and_hides_the_key_round_trips_and_hides_the_key() {
        let f = Fixtures::new();
        let mk = MasterKey::from_bytes([7u8; 32]);
        let c = parse_pkcs12(id("c2"), &f.read("chain.p12"), "").unwrap();
        let stored = StoredCertificate::seal(&c, &mk).unwrap();
        let json = serde_json::to_vec(&stored).unwrap();
        let pkcs8 = c.key.private_key_to_der_pkcs8().unwrap();
        let raw_key = c.key.ec_key().unwrap().private_key().to_vec();
        for secret in [&pkcs8[..], &raw_key[..]] {
            assert!(!contains(&json, secret));
            assert!(!contains(&json, BASE64.encode(secret).as_bytes()));
        }
        let back: StoredCertificate = serde_json::from_slice(&json).unwrap();
        let opened = back.open(id("c2"), &mk).unwrap();
        assert_eq!(opened.info, c.info);
        assert_eq!(opened.chain.len(), 1);
        assert!(opened.key.public_eq(&c.key));
        // Another id (AAD) or another key does not open it.
        assert!(back.open(id("other"), &mk).is_err());
        assert!(back
            .open(id("c2"), &MasterKey::from_bytes([8u8; 32]))
            .is_err());
        assert!(!format!("{stored:?}").contains(&stored.sealed_key));
    }

    #[test]
    fn backend_and_api_records_round_trip_and_read_0_1_records() {
        let b = Backend::new(
            id("b1"),
            "https://h:8443/api/",
            true,
            false,
            Some(CertificateRef::Thumbprint(Thumbprint([0xaa; 20]))),
        )
        .unwrap();
        let bytes = encode_backend(&b).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["schema"], 1,
            "no trust lists: still readable by an older edgegw"
        );
        let stored: StoredBackend = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(Backend::try_from((id("b1"), &stored)).unwrap(), b);
        let trusted = Backend::new(id("b4"), "https://h", true, true, None)
            .unwrap()
            .with_trust(BackendTrust {
                ca_ids: vec![id("ca2"), id("ca1"), id("ca2")],
                server_names: vec!["Orders.Internal".into()],
                pins: vec![Thumbprint([0xbb; 20])],
            })
            .unwrap();
        assert_eq!(
            trusted.trust.ca_ids,
            vec![id("ca1"), id("ca2")],
            "sorted, deduplicated"
        );
        assert_eq!(
            trusted.trust.server_names,
            vec!["orders.internal".to_owned()]
        );
        let bytes = encode_backend(&trusted).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schema"], BACKEND_SCHEMA);
        let stored: StoredBackend = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(Backend::try_from((id("b4"), &stored)).unwrap(), trusted);
        // A 0.1 record: the REST body as it was stored, no schema.
        let old: StoredBackend = serde_json::from_str(
            r#"{"url":"https://h","tls":{"validateCertificateChain":false,"validateCertificateName":true},"credentials":{"certificateId":"c1"}}"#,
        )
        .unwrap();
        let old = Backend::try_from((id("b2"), &old)).unwrap();
        assert!(!old.validate_chain && old.validate_name);
        assert_eq!(old.credential, Some(CertificateRef::Id(id("c1"))));
        let newer: StoredBackend =
            serde_json::from_str(r#"{"schema":3,"url":"https://h"}"#).unwrap();
        let e = Backend::try_from((id("b3"), &newer)).unwrap_err();
        assert!(e.contains("newer edgegw"), "{e}");

        let mut api = Api::new(id("a1"), "/orders/", "b1").unwrap();
        api.policy = Some(parse_policy(crate::model::policy::EMPTY_POLICY).unwrap());
        let stored: StoredApi = serde_json::from_slice(&encode_api(&api).unwrap()).unwrap();
        assert_eq!(stored.schema, API_SCHEMA);
        assert_eq!(Api::try_from((id("a1"), &stored)).unwrap(), api);
        let old: StoredApi = serde_json::from_str(r#"{"path":"/o","backendId":"b1"}"#).unwrap();
        assert_eq!(Api::try_from((id("a2"), &old)).unwrap().path, "/o");
    }
}
