//! The REST bodies and resources of contract §3 (what the JSON says), and their conversions
//! to and from the domain types of `model` at this edge (`TryFrom` a body validates it into a
//! domain value, `From` a domain value makes the resource). The stored records are
//! `store::records`': the REST contract is not the disk format.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use crate::model::ca::CaInfo;
use crate::model::{
    format_rfc3339, Api, Backend, BackendTrust, CertificateInfo, CertificateRef, InvalidRequest,
    ResourceId, Thumbprint,
};

/// The body of `PUT /certificates/{id}`. `Debug` leaves out both fields; both are wiped on
/// drop.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateBody {
    /// Base64 of the PKCS#12 file.
    pub data: String,
    /// The PKCS#12 password (may be empty). Never stored or logged.
    pub password: String,
}

impl Drop for CertificateBody {
    fn drop(&mut self) {
        // The password opens the private key inside the PKCS#12 file: wipe both.
        self.data.zeroize();
        self.password.zeroize();
    }
}

impl std::fmt::Debug for CertificateBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateBody")
            .field(
                "data",
                &format_args!("<{} base64 characters>", self.data.len()),
            )
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The certificate resource of the REST API.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResource {
    /// The certificate id.
    pub id: String,
    /// `CN=..., O=...`.
    pub subject: String,
    /// `CN=..., O=...`.
    pub issuer: String,
    /// SHA-1 of the leaf DER, 40 uppercase hex characters.
    pub thumbprint: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC (the leaf's notAfter).
    pub expiration_date: String,
    /// Subject equals issuer and the signature verifies with its own key.
    pub self_signed: bool,
    /// e.g. `RSA-2048`, `EC-P256`.
    pub key_algorithm: String,
}

impl CertificateResource {
    /// The resource for a certificate.
    pub fn new(id: &ResourceId, info: &CertificateInfo) -> Self {
        Self {
            id: id.to_string(),
            subject: info.subject.clone(),
            issuer: info.issuer.clone(),
            thumbprint: info.thumbprint.to_string(),
            not_before: format_rfc3339(info.not_before),
            expiration_date: format_rfc3339(info.not_after),
            self_signed: info.self_signed,
            key_algorithm: info.key_algorithm.clone(),
        }
    }
}

/// The body of `PUT /caCertificates/{id}`: base64 of one DER certificate or of a PEM file
/// with one or more.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CaCertificateBody {
    pub data: String,
}

/// The CA certificate resource of the REST API (its first certificate).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificateResource {
    pub id: String,
    pub subject: String,
    pub issuer: String,
    /// SHA-1 of the DER, 40 uppercase hex characters.
    pub thumbprint: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC.
    pub expiration_date: String,
    /// How many certificates the upload holds (a PEM bundle may hold several).
    pub certificate_count: usize,
}

impl CaCertificateResource {
    pub fn new(id: &ResourceId, info: &CaInfo, certificate_count: usize) -> Self {
        Self {
            id: id.to_string(),
            subject: info.subject.clone(),
            issuer: info.issuer.clone(),
            thumbprint: info.thumbprint.to_string(),
            not_before: format_rfc3339(info.not_before),
            expiration_date: format_rfc3339(info.not_after),
            certificate_count,
        }
    }
}

/// The body of `PUT /backends/{id}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendBody {
    /// `https://host[:port][/base-path]` or `http://...`.
    pub url: String,
    /// TLS validation flags; both default to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsBody>,
    /// The client certificate presented to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsBody>,
}

/// `"tls": {"validateCertificateChain": true, "validateCertificateName": true,
/// "trustedCaCertificateIds": [...], "serverX509Names": [...],
/// "serverCertificateThumbprints": [...]}`; the lists are left out when empty.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsBody {
    /// Verify the backend's chain against the trust store.
    #[serde(default = "yes")]
    pub validate_certificate_chain: bool,
    /// Verify the backend's certificate names the URL's host.
    #[serde(default = "yes")]
    pub validate_certificate_name: bool,
    /// CA certificate ids the chain is validated against instead of the system store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_ca_certificate_ids: Vec<String>,
    /// Names the certificate must carry instead of the URL's host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_x509_names: Vec<String>,
    /// SHA-1 thumbprints one of which the backend's certificate must have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_certificate_thumbprints: Vec<String>,
}

impl Default for TlsBody {
    fn default() -> Self {
        Self {
            validate_certificate_chain: true,
            validate_certificate_name: true,
            trusted_ca_certificate_ids: Vec::new(),
            server_x509_names: Vec::new(),
            server_certificate_thumbprints: Vec::new(),
        }
    }
}

/// Reads the trust lists of a `tls` body.
fn parse_trust(tls: &TlsBody) -> Result<BackendTrust, InvalidRequest> {
    BackendTrust::from_text(
        &tls.trusted_ca_certificate_ids,
        &tls.server_x509_names,
        &tls.server_certificate_thumbprints,
    )
}

fn yes() -> bool {
    true
}

/// `"credentials": {"certificateId": "..."}` or `{"certificateThumbprint": "..."}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialsBody {
    /// The id of an uploaded certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    /// The SHA-1 thumbprint (40 hex characters) of an uploaded certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_thumbprint: Option<String>,
}

/// The backend resource as returned by the REST API.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackendResource {
    /// The backend id.
    pub id: String,
    /// The URL as given.
    pub url: String,
    /// Effective validation flags.
    pub tls: TlsBody,
    /// Present only when a certificate is bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsBody>,
}

/// Reads `credentials`: exactly one of `certificateId` and `certificateThumbprint`.
pub fn parse_credentials(c: &CredentialsBody) -> Result<CertificateRef, InvalidRequest> {
    match (&c.certificate_id, &c.certificate_thumbprint) {
        (Some(id), None) => ResourceId::parse(id).map(CertificateRef::Id).map_err(|_| {
            InvalidRequest(
                "credentials.certificateId must be 1 to 80 characters of A-Z a-z 0-9 . _ -."
                    .to_owned(),
            )
        }),
        (None, Some(t)) => Thumbprint::parse(t)
            .map(CertificateRef::Thumbprint)
            .ok_or_else(|| {
                InvalidRequest(
                    "credentials.certificateThumbprint must be 40 hexadecimal characters."
                        .to_owned(),
                )
            }),
        _ => Err(InvalidRequest(
            "credentials needs exactly one of certificateId and certificateThumbprint.".to_owned(),
        )),
    }
}

/// The body form of a certificate reference.
pub fn credentials_body(r: &CertificateRef) -> CredentialsBody {
    match r {
        CertificateRef::Id(id) => CredentialsBody {
            certificate_id: Some(id.to_string()),
            certificate_thumbprint: None,
        },
        CertificateRef::Thumbprint(t) => CredentialsBody {
            certificate_id: None,
            certificate_thumbprint: Some(t.to_string()),
        },
    }
}

impl From<&Backend> for BackendResource {
    fn from(b: &Backend) -> Self {
        BackendResource {
            id: b.id.to_string(),
            url: b.url_text.clone(),
            tls: TlsBody {
                validate_certificate_chain: b.validate_chain,
                validate_certificate_name: b.validate_name,
                trusted_ca_certificate_ids: b
                    .trust
                    .ca_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                server_x509_names: b.trust.server_names.clone(),
                server_certificate_thumbprints: b
                    .trust
                    .pins
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            credentials: b.credential.as_ref().map(credentials_body),
        }
    }
}

impl TryFrom<(ResourceId, &BackendBody)> for Backend {
    type Error = InvalidRequest;

    /// Validates a backend body.
    fn try_from((id, body): (ResourceId, &BackendBody)) -> Result<Self, InvalidRequest> {
        let tls = body.tls.clone().unwrap_or_default();
        let credential = body
            .credentials
            .as_ref()
            .map(parse_credentials)
            .transpose()?;
        Backend::new(
            id,
            &body.url,
            tls.validate_certificate_chain,
            tls.validate_certificate_name,
            credential,
        )?
        .with_trust(parse_trust(&tls)?)
    }
}

/// The body of `PUT /apis/{id}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiBody {
    /// The route prefix, e.g. `/orders`.
    pub path: String,
    /// The backend requests go to.
    pub backend_id: String,
}

/// The API resource as returned by the REST API.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiResource {
    /// The API id.
    pub id: String,
    /// The route prefix.
    pub path: String,
    /// The backend id.
    pub backend_id: String,
}

impl TryFrom<(ResourceId, &ApiBody)> for Api {
    type Error = InvalidRequest;

    /// Validates an API body (without its policy).
    fn try_from((id, body): (ResourceId, &ApiBody)) -> Result<Self, InvalidRequest> {
        Api::new(id, &body.path, &body.backend_id)
    }
}

impl From<&Api> for ApiResource {
    fn from(api: &Api) -> Self {
        ApiResource {
            id: api.id.to_string(),
            path: api.path.clone(),
            backend_id: api.backend_id.to_string(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(json: &str) -> Result<BackendBody, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn backend_bodies() {
        let id = ResourceId::parse("b1").unwrap();
        let b = Backend::try_from((
            id.clone(),
            &body(r#"{"url":"https://h:8443/api/"}"#).unwrap(),
        ))
        .unwrap();
        assert!(b.validate_chain && b.validate_name && b.credential.is_none());
        assert_eq!(b.url_text, "https://h:8443/api/");
        assert_eq!(b.url.base_path, "/api");
        let b = Backend::try_from((
            id.clone(),
            &body(r#"{"url":"https://h","tls":{"validateCertificateName":false},"credentials":{"certificateId":"c1"}}"#).unwrap(),
        ))
        .unwrap();
        assert!(b.validate_chain && !b.validate_name);
        assert_eq!(
            b.credential,
            Some(CertificateRef::Id(ResourceId::parse("c1").unwrap()))
        );
        let t = "aa".repeat(20);
        let b = Backend::try_from((
            id.clone(),
            &body(&format!(
                r#"{{"url":"https://h","credentials":{{"certificateThumbprint":"{t}"}}}}"#
            ))
            .unwrap(),
        ))
        .unwrap();
        assert_eq!(
            b.credential,
            Some(CertificateRef::Thumbprint(Thumbprint([0xaa; 20])))
        );
        let json = serde_json::to_value(BackendResource::from(&b)).unwrap();
        assert_eq!(
            json["credentials"]["certificateThumbprint"],
            "AA".repeat(20)
        );
        assert_eq!(json["tls"]["validateCertificateChain"], true);
        let plain = body(r#"{"url":"http://h"}"#).unwrap();
        let plain = Backend::try_from((id.clone(), &plain)).unwrap();
        let json = serde_json::to_value(BackendResource::from(&plain)).unwrap();
        assert!(json.get("credentials").is_none());

        for bad in [
            r#"{"url":"http://h","credentials":{"certificateId":"c1"}}"#,
            r#"{"url":"https://h","credentials":{}}"#,
            r#"{"url":"https://h","credentials":{"certificateId":"c1","certificateThumbprint":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}"#,
            r#"{"url":"https://h","credentials":{"certificateThumbprint":"abc"}}"#,
            r#"{"url":"https://h","credentials":{"certificateId":"bad id"}}"#,
            r#"{"url":"https://h?x"}"#,
        ] {
            let b = body(bad).unwrap();
            assert!(Backend::try_from((id.clone(), &b)).is_err(), "{bad}");
        }
        for bad in [
            r#"{"url":"https://h","extra":1}"#,
            r#"{"tls":{}}"#,
            r#"{"url":"https://h","tls":{"x":true}}"#,
            r#"{"url":5}"#,
        ] {
            assert!(body(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_bodies() {
        let id = ResourceId::parse("a1").unwrap();
        let body: ApiBody =
            serde_json::from_str(r#"{"path":"/orders/","backendId":"b1"}"#).unwrap();
        let api = Api::try_from((id.clone(), &body)).unwrap();
        assert_eq!(api.path, "/orders");
        assert_eq!(api.backend_id.as_str(), "b1");
        let json = serde_json::to_value(ApiResource::from(&api)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id":"a1","path":"/orders","backendId":"b1"})
        );
        let bad: ApiBody = serde_json::from_str(r#"{"path":"/o","backendId":"b 1"}"#).unwrap();
        assert!(Api::try_from((id.clone(), &bad)).is_err());
        assert!(serde_json::from_str::<ApiBody>(r#"{"path":"/o"}"#).is_err());
        assert!(serde_json::from_str::<ApiBody>(r#"{"path":"/o","backendId":"b","x":1}"#).is_err());
    }
}
