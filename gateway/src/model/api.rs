//! APIs (routes): the rules an [`Api`]'s path keeps. The REST body is `admin::rest`'s, the
//! stored record (which also carries the policy XML) `store::records`'s.

use super::{Api, InvalidRequest, ResourceId};

impl Api {
    /// An API (without its policy) from its path and the id of its backend. Whether the
    /// backend exists is the caller's business (it needs the other resources).
    pub fn new(id: ResourceId, path: &str, backend_id: &str) -> Result<Api, InvalidRequest> {
        let path = parse_api_path(path)?;
        let backend_id = ResourceId::parse(backend_id).map_err(|_| {
            InvalidRequest("backendId must be 1 to 80 characters of A-Z a-z 0-9 . _ -.".to_owned())
        })?;
        Ok(Api {
            id,
            path,
            backend_id,
            policy: None,
        })
    }
}

/// Validates a route path: starts with '/', no query or fragment, no `.`/`..` or empty
/// segments, no whitespace or control characters; a trailing '/' is dropped except for
/// `/` itself.
pub fn parse_api_path(raw: &str) -> Result<String, InvalidRequest> {
    let bad = |why: &str| InvalidRequest(format!("The API path is not valid: {why}."));
    if !raw.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    if raw.contains('?') || raw.contains('#') {
        return Err(bad("a query string or fragment is not allowed"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace or control characters"));
    }
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_owned());
    }
    // `trimmed` starts with the one-byte '/', so `[1..]` is in bounds and on a char boundary.
    if trimmed[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad("empty, '.' and '..' segments are not allowed"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_api_path("/").unwrap(), "/");
        assert_eq!(parse_api_path("//").unwrap(), "/");
        assert_eq!(parse_api_path("/orders").unwrap(), "/orders");
        assert_eq!(parse_api_path("/orders/").unwrap(), "/orders");
        assert_eq!(parse_api_path("/a/b.c/v1").unwrap(), "/a/b.c/v1");
        for bad in [
            "",
            "orders",
            "/orders?x=1",
            "/a#b",
            "/a/../b",
            "/..",
            "/a/./b",
            "/a//b",
            "/a b",
            "/a\tb",
        ] {
            assert!(parse_api_path(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn path_parser_never_panics(s in "\\PC{0,40}") {
            if let Ok(p) = parse_api_path(&s) {
                assert!(p.starts_with('/'));
                assert!(p == "/" || !p.ends_with('/'));
            }
        }
    }
}
