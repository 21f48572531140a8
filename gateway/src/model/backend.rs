//! Backends: the rules a [`Backend`] keeps (its URL's shape, credentials only over TLS).
//! The REST body is `admin::rest`'s, the stored record `store::records`'s.

use super::{
    Backend, BackendTrust, BackendUrl, CertificateRef, InvalidRequest, ResourceId, Thumbprint,
};

impl Backend {
    /// A backend from its URL text, validation flags and the certificate it presents.
    pub fn new(
        id: ResourceId,
        url_text: &str,
        validate_chain: bool,
        validate_name: bool,
        credential: Option<CertificateRef>,
    ) -> Result<Backend, InvalidRequest> {
        let url = parse_backend_url(url_text)?;
        if credential.is_some() && !url.tls {
            return Err(InvalidRequest(
                "Client certificate credentials need an https:// backend URL.".to_owned(),
            ));
        }
        Ok(Backend {
            id,
            url,
            url_text: url_text.to_owned(),
            validate_chain,
            validate_name,
            credential,
            trust: BackendTrust::default(),
        })
    }

    /// The backend with `trust` (sorted, duplicates dropped), once it fits the flags: CAs
    /// need chain validation, names need name validation, and all of it needs TLS.
    pub fn with_trust(mut self, mut trust: BackendTrust) -> Result<Backend, InvalidRequest> {
        let refuse = |why: &str| Err(InvalidRequest(why.to_owned()));
        let set =
            !trust.ca_ids.is_empty() || !trust.server_names.is_empty() || !trust.pins.is_empty();
        if set && !self.url.tls {
            return refuse("tls.trustedCaCertificateIds, serverX509Names and serverCertificateThumbprints need an https:// backend URL.");
        }
        if !trust.ca_ids.is_empty() && !self.validate_chain {
            return refuse("tls.trustedCaCertificateIds needs tls.validateCertificateChain to be true: the CAs are what the chain is validated against.");
        }
        if !trust.server_names.is_empty() && !self.validate_name {
            return refuse("tls.serverX509Names needs tls.validateCertificateName to be true: the names are what the certificate is checked for.");
        }
        for (what, len) in [
            ("trustedCaCertificateIds", trust.ca_ids.len()),
            ("serverX509Names", trust.server_names.len()),
            ("serverCertificateThumbprints", trust.pins.len()),
        ] {
            if len > MAX_TRUST_ENTRIES {
                return Err(InvalidRequest(format!(
                    "tls.{what} may list at most {MAX_TRUST_ENTRIES} entries."
                )));
            }
        }
        for name in &mut trust.server_names {
            if !is_dns_name(name) {
                return Err(InvalidRequest(format!(
                    "tls.serverX509Names: {name:?} is not a DNS name (letters, digits, '-' and '.', optionally starting with \"*.\"); an IP address is checked through the URL's host."
                )));
            }
            name.make_ascii_lowercase();
        }
        trust.ca_ids.sort();
        trust.ca_ids.dedup();
        trust.server_names.sort();
        trust.server_names.dedup();
        trust.pins.sort();
        trust.pins.dedup();
        self.trust = trust;
        Ok(self)
    }
}

impl BackendTrust {
    /// The lists as text (a REST body's, a stored record's): each CA id and pin checked;
    /// the names are [`Backend::with_trust`]'s to check.
    pub fn from_text(
        ca_ids: &[String],
        server_names: &[String],
        pins: &[String],
    ) -> Result<BackendTrust, InvalidRequest> {
        let mut trust = BackendTrust::default();
        for raw in ca_ids {
            trust.ca_ids.push(ResourceId::parse(raw).map_err(|_| {
                InvalidRequest(format!(
                    "tls.trustedCaCertificateIds: {raw:?} is not an id (1 to 80 characters of A-Z a-z 0-9 . _ -)."
                ))
            })?);
        }
        for raw in pins {
            trust.pins.push(Thumbprint::parse(raw).ok_or_else(|| {
                InvalidRequest(format!(
                    "tls.serverCertificateThumbprints: {raw:?} is not 40 hexadecimal characters."
                ))
            })?);
        }
        trust.server_names = server_names.to_vec();
        Ok(trust)
    }
}

/// At most this many entries in each list of [`BackendTrust`].
const MAX_TRUST_ENTRIES: usize = 16;

/// A DNS name for certificate name checks: labels of letters, digits and '-', a leading
/// `*.` wildcard allowed, at most 253 characters, not an IP address.
fn is_dns_name(name: &str) -> bool {
    let labels = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && labels.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
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
