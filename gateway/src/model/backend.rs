//! Backends: the JSON body of `PUT /backends/{id}` (contract §3), its validation into a
//! [`Backend`], and the way back (for responses and for the stored record).

use serde::{Deserialize, Serialize};

use super::{Backend, BackendUrl, CertificateRef, InvalidRequest, ResourceId, Thumbprint};

/// The body of `PUT /backends/{id}`; also the stored record and (with the id) the resource.
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

/// `"tls": {"validateCertificateChain": true, "validateCertificateName": true}`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsBody {
    /// Verify the backend's chain against the trust store.
    #[serde(default = "yes")]
    pub validate_certificate_chain: bool,
    /// Verify the backend's certificate names the URL's host.
    #[serde(default = "yes")]
    pub validate_certificate_name: bool,
}

impl Default for TlsBody {
    fn default() -> Self {
        Self {
            validate_certificate_chain: true,
            validate_certificate_name: true,
        }
    }
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

/// Validates a backend body.
pub fn parse_backend(id: ResourceId, body: &BackendBody) -> Result<Backend, InvalidRequest> {
    let url = parse_backend_url(&body.url)?;
    let tls = body.tls.unwrap_or_default();
    let credential = match &body.credentials {
        None => None,
        Some(c) => Some(parse_credentials(c)?),
    };
    if credential.is_some() && !url.tls {
        return Err(InvalidRequest(
            "Client certificate credentials need an https:// backend URL.".to_owned(),
        ));
    }
    Ok(Backend {
        id,
        url,
        url_text: body.url.clone(),
        validate_chain: tls.validate_certificate_chain,
        validate_name: tls.validate_certificate_name,
        credential,
    })
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

/// The stored/body form of a backend (re-parses to an equal [`Backend`]).
pub fn backend_body(b: &Backend) -> BackendBody {
    BackendBody {
        url: b.url_text.clone(),
        tls: Some(TlsBody {
            validate_certificate_chain: b.validate_chain,
            validate_certificate_name: b.validate_name,
        }),
        credentials: b.credential.as_ref().map(credentials_body),
    }
}

/// The REST resource of a backend.
pub fn backend_resource(b: &Backend) -> BackendResource {
    BackendResource {
        id: b.id.to_string(),
        url: b.url_text.clone(),
        tls: TlsBody {
            validate_certificate_chain: b.validate_chain,
            validate_certificate_name: b.validate_name,
        },
        credentials: b.credential.as_ref().map(credentials_body),
    }
}

/// Parses `https://host[:port][/base-path]` (or `http://`). The host may be a DNS name,
/// an IPv4 address or a bracketed IPv6 address; the port defaults to 443 / 80; a trailing
/// '/' of the base path is dropped. Query, fragment and userinfo are refused.
pub fn parse_backend_url(raw: &str) -> Result<BackendUrl, InvalidRequest> {
    let bad = |why: &str| InvalidRequest(format!("The backend url is not valid: {why}."));
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace or control characters"));
    }
    let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(raw, "https://") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(raw, "http://") {
        (false, rest)
    } else {
        return Err(bad("it must start with https:// or http://"));
    };
    if rest.contains('?') {
        return Err(bad("a query string is not allowed"));
    }
    if rest.contains('#') {
        return Err(bad("a fragment is not allowed"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(bad("user information is not allowed"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port_text) = if let Some(after) = authority.strip_prefix('[') {
        let end = after
            .find(']')
            .ok_or_else(|| bad("the IPv6 address has no closing ']'"))?;
        let host = &after[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the IPv6 address is malformed"));
        }
        let tail = &after[end + 1..];
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p),
            None if tail.is_empty() => None,
            None => return Err(bad("unexpected characters after the IPv6 address")),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    if !authority.starts_with('[') {
        let ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !ok || host.starts_with('.') || host.contains("..") {
            return Err(bad("the host name is malformed"));
        }
    }
    let port = match port_text {
        None => default_port,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("the port must be a number from 1 to 65535"));
            }
            match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            }
        }
    };
    let base_path = path.trim_end_matches('/');
    if base_path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(bad("'.' and '..' path segments are not allowed"));
    }
    if base_path.contains("//") {
        return Err(bad("empty path segments are not allowed"));
    }
    Ok(BackendUrl {
        tls,
        host: host.to_owned(),
        port,
        base_path: base_path.to_owned(),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<BackendUrl, InvalidRequest> {
        parse_backend_url(s)
    }

    fn body(json: &str) -> Result<BackendBody, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn urls() {
        let u = url("https://api.example.com").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
            (true, "api.example.com", 443, "")
        );
        let u = url("http://10.0.0.1:8080/base/v1/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
            (false, "10.0.0.1", 8080, "/base/v1")
        );
        let u = url("https://[::1]:9443/x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("::1", 9443, "/x")
        );
        let u = url("https://[2001:db8::1]/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("2001:db8::1", 443, "")
        );
        assert_eq!(url("HTTPS://Host/").unwrap().host, "Host");
        for bad in [
            "",
            "ftp://x",
            "https://",
            "https:///path",
            "https://x?y=1",
            "https://x/a?b",
            "https://x#f",
            "https://u:p@x",
            "https://u@x",
            "https://x:0",
            "https://x:65536",
            "https://x:",
            "https://x:8a",
            "https://[::1",
            "https://[zz]:1",
            "https://[::1]x",
            "https://a b",
            "https://x/../y",
            "https://x/a//b",
            "https://a:1:2",
            "//x",
            "https://x\n",
            "https://.x",
            "https://x..y",
        ] {
            assert!(url(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn bodies() {
        let id = ResourceId::parse("b1").unwrap();
        let b = parse_backend(
            id.clone(),
            &body(r#"{"url":"https://h:8443/api/"}"#).unwrap(),
        )
        .unwrap();
        assert!(b.validate_chain && b.validate_name && b.credential.is_none());
        assert_eq!(b.url_text, "https://h:8443/api/");
        assert_eq!(b.url.base_path, "/api");
        let b = parse_backend(
            id.clone(),
            &body(r#"{"url":"https://h","tls":{"validateCertificateName":false},"credentials":{"certificateId":"c1"}}"#).unwrap(),
        )
        .unwrap();
        assert!(b.validate_chain && !b.validate_name);
        assert_eq!(
            b.credential,
            Some(CertificateRef::Id(ResourceId::parse("c1").unwrap()))
        );
        let t = "aa".repeat(20);
        let b = parse_backend(
            id.clone(),
            &body(&format!(
                r#"{{"url":"https://h","credentials":{{"certificateThumbprint":"{t}"}}}}"#
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            b.credential,
            Some(CertificateRef::Thumbprint(Thumbprint([0xaa; 20])))
        );
        // Round trip through the stored form.
        let again = parse_backend(id.clone(), &backend_body(&b)).unwrap();
        assert_eq!(again, b);
        let json = serde_json::to_value(backend_resource(&b)).unwrap();
        assert_eq!(
            json["credentials"]["certificateThumbprint"],
            "AA".repeat(20)
        );
        assert_eq!(json["tls"]["validateCertificateChain"], true);
        let plain = parse_backend(id.clone(), &body(r#"{"url":"http://h"}"#).unwrap()).unwrap();
        let json = serde_json::to_value(backend_resource(&plain)).unwrap();
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
            assert!(parse_backend(id.clone(), &b).is_err(), "{bad}");
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

    proptest::proptest! {
        #[test]
        fn url_parser_never_panics(s in "\\PC{0,64}") {
            let _ = parse_backend_url(&s);
        }

        #[test]
        fn url_parser_never_panics_on_url_like(s in "(https?://)?[a-z0-9:/\\[\\]@?#.%-]{0,40}") {
            if let Ok(u) = parse_backend_url(&s) {
                assert!(!u.base_path.ends_with('/'));
                assert!(u.base_path.is_empty() || u.base_path.starts_with('/'));
            }
        }
    }
}
