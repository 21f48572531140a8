//! Backends: the rules a [`Backend`] keeps (its URL's shape, credentials only over TLS).
//! The REST body is `admin::rest`'s, the stored record `store::records`'s.

use super::{Backend, BackendUrl, CertificateRef, InvalidRequest, ResourceId};

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
        })
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
