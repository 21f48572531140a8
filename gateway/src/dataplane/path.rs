//! The request target, normalised once before routing, so that the path an API is matched
//! against is exactly the path its backend gets (a route can never reach backend paths
//! outside its base path).
//!
//! The rules (documented in docs/OPERATIONS.md, "Request paths"):
//! - origin form (`/a/b?q`) and absolute form (`https://host/a/b?q`, whose authority stands
//!   for `Host`) are accepted; authority and asterisk forms are refused;
//! - percent-encodings must be two hex digits; those of unreserved characters
//!   (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are decoded, every other one is kept, with
//!   upper-case hex (RFC 3986 §6.2.2.1);
//! - `%2F` (`/`) and `%5C` (`\`) stay encoded: they never separate segments here. A backend
//!   may decode them before it resolves dot segments, so a segment that would then hold a
//!   `.` or `..` segment (`..%2F`, `%2E%2E%5C`) is refused;
//! - dot segments are removed (RFC 3986 §5.2.4); a `..` above the root is refused;
//! - a raw `\`, a `#` or a byte that RFC 3986 does not allow in a path is refused;
//! - the query is passed on as it came.
//!
//! Bare LF line ends in the head are accepted by the head parser and the head is re-written
//! with CRLF for the backend; this module only sees the target.

use std::borrow::Cow;

/// A normalised request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// Starts with `/`, has no dot segment, only the percent-encodings that must stay.
    pub path: Cow<'a, str>,
    /// After the `?`, as the client sent it.
    pub query: Option<&'a str>,
    /// The path as the client wrote it (before normalisation).
    pub raw_path: &'a str,
    /// The authority of an absolute-form target (it stands for `Host`).
    pub authority: Option<&'a str>,
    /// Dot segments were removed: the path the client wrote differs from `path` in where
    /// it points (the router checks that it stays under the API it named).
    pub resolved_dots: bool,
}

impl Default for Target<'_> {
    /// `/`: what a request has before its head is checked.
    fn default() -> Self {
        Target {
            path: Cow::Borrowed("/"),
            raw_path: "/",
            query: None,
            authority: None,
            resolved_dots: false,
        }
    }
}

/// Why a target was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathError(pub &'static str);

/// Normalises a request target (see the module's rules).
pub fn normalize(target: &str) -> Result<Target<'_>, PathError> {
    let (authority, origin) = split_absolute(target)?;
    let (raw_path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    };
    if raw_path.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(PathError(
            "the request target must not contain a fragment ('#')",
        ));
    }
    if !raw_path.starts_with('/') {
        return Err(PathError(
            "the request target must be a path starting with '/'",
        ));
    }
    let (path, resolved_dots) = normalize_path(raw_path)?;
    Ok(Target {
        path,
        raw_path,
        query,
        authority,
        resolved_dots,
    })
}

/// `(authority, path-and-query)` of an absolute-form target; the target itself otherwise.
fn split_absolute(target: &str) -> Result<(Option<&str>, &str), PathError> {
    if target.starts_with('/') {
        return Ok((None, target));
    }
    let rest = strip_prefix_ignore_case(target, "https://")
        .or_else(|| strip_prefix_ignore_case(target, "http://"))
        .ok_or(PathError(
            "the request target must be a path starting with '/' or an absolute http(s) URL",
        ))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, origin) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(PathError(
            "an absolute request target needs a host and no user information",
        ));
    }
    match origin {
        // `http://host` means the path `/`.
        "" => Ok((Some(authority), "/")),
        // `http://host?q` would need a new string for `/?q`: rare enough to refuse.
        o if o.starts_with('?') => Err(PathError(
            "an absolute request target with a query needs a path (http://host/?q)",
        )),
        o => Ok((Some(authority), o)),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Characters RFC 3986 allows in a path besides percent-encodings: unreserved, sub-delims,
/// `:` and `@` (and `/` between segments).
fn allowed_in_path(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The normalised path and whether dot segments were removed. Borrows the input when it
/// is already normal (the common case: no allocation).
fn normalize_path(raw: &str) -> Result<(Cow<'_, str>, bool), PathError> {
    let bytes = raw.as_bytes();
    // Pass 1: check every byte and every encoding; see whether anything must change.
    let mut needs_work = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(PathError("invalid percent-encoding in the path"));
            };
            let decoded = hi << 4 | lo;
            if is_unreserved(decoded)
                || bytes[i + 1].is_ascii_lowercase()
                || bytes[i + 2].is_ascii_lowercase()
            {
                needs_work = true;
            }
            i += 3;
            continue;
        }
        if b == b'\\' {
            return Err(PathError("a raw '\\' is not allowed in the path"));
        }
        if !allowed_in_path(b) {
            return Err(PathError(
                "the path holds a character that must be percent-encoded",
            ));
        }
        i += 1;
    }
    let has_dots = raw.split('/').any(|s| s == "." || s == "..");
    if !needs_work && !has_dots {
        check_encoded_separators(raw)?;
        return Ok((Cow::Borrowed(raw), false));
    }
    // Pass 2: decode what must be decoded, segment by segment, then resolve dot segments.
    let mut out: Vec<String> = Vec::new();
    let mut resolved = false;
    let segments: Vec<&str> = raw[1..].split('/').collect();
    let last = segments.len() - 1;
    for (n, segment) in segments.iter().enumerate() {
        let segment = decode_unreserved(segment);
        match segment.as_str() {
            "." => {
                resolved = true;
                if n == last {
                    out.push(String::new());
                }
            }
            ".." => {
                resolved = true;
                if out.pop().is_none() {
                    return Err(PathError("the path goes above the root ('..')"));
                }
                if n == last {
                    out.push(String::new());
                }
            }
            _ => out.push(segment),
        }
    }
    let path = format!("/{}", out.join("/"));
    check_encoded_separators(&path)?;
    Ok((Cow::Owned(path), resolved))
}

/// Decodes the percent-encodings of unreserved characters; upper-cases the hex of the others.
fn decode_unreserved(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        // Pass 1 checked that every '%' has two hex digits after it.
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hi = hex_value(bytes[i + 1]).unwrap_or(0);
            let lo = hex_value(bytes[i + 2]).unwrap_or(0);
            let decoded = hi << 4 | lo;
            if is_unreserved(decoded) {
                out.push(decoded as char);
            } else {
                out.push('%');
                out.push(bytes[i + 1].to_ascii_uppercase() as char);
                out.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// Refuses a segment that holds a dot segment once `%2F`/`%5C` are read as separators.
fn check_encoded_separators(path: &str) -> Result<(), PathError> {
    if !path.contains('%') {
        return Ok(());
    }
    for segment in path.split('/') {
        let lowered = segment.to_ascii_uppercase();
        if !(lowered.contains("%2F") || lowered.contains("%5C")) {
            continue;
        }
        let dotted = lowered
            .replace("%5C", "%2F")
            .split("%2F")
            .any(|part| part == "." || part == ".." || part == "%2E" || part == "%2E%2E");
        if dotted {
            return Err(PathError(
                "an encoded '/' or '\\' next to a dot segment is not allowed in the path",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn path(target: &str) -> Result<String, PathError> {
        normalize(target).map(|t| t.path.into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/orders",
            "/orders/42",
            "/a//b/",
            "/a:b@c/%2F/%20x",
            "/~u/a-b_c.d",
        ] {
            let t = normalize(p).unwrap();
            assert!(matches!(t.path, Cow::Borrowed(_)), "{p}");
            assert_eq!(t.path, p);
            assert!(!t.resolved_dots);
        }
        let t = normalize("/a/b?x=1&y=../z").unwrap();
        assert_eq!((t.path.as_ref(), t.query), ("/a/b", Some("x=1&y=../z")));
    }

    /// The traversal forms of the issue and their relatives: each either stays inside, is
    /// resolved to where it really points, or is refused; no `..` is ever left.
    #[test]
    fn traversal_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/based/../secret", Some("/secret")),
            ("/based/%2e%2e/secret", Some("/secret")),
            ("/based/%2E%2E/secret", Some("/secret")),
            ("/based/.%2e/secret", Some("/secret")),
            ("/based/./x", Some("/based/x")),
            ("/based/x/..", Some("/based/")),
            ("/based/x/.", Some("/based/x/")),
            ("/based/a/b/../../c", Some("/based/c")),
            ("/based/..%2fsecret", None),
            ("/based/..%2Fsecret", None),
            ("/based/%2e%2e%2fsecret", None),
            ("/based/..%5csecret", None),
            ("/based/..\\secret", None),
            ("/..", None),
            ("/../etc/passwd", None),
            ("/based/../../x", None),
            ("/a/%zz", None),
            ("/a/%2", None),
            ("/a/b#frag", None),
            ("/a b", None),
            ("/a\"b", None),
            ("/a/%41%62%7e", Some("/a/Ab~")),
            ("/a/%2f%3a", Some("/a/%2F%3A")),
            ("/a/x%2fy", Some("/a/x%2Fy")),
            ("/a/%252e%252e/b", Some("/a/%252e%252e/b")),
        ];
        for (input, want) in cases {
            let got = path(input);
            match want {
                Some(w) => assert_eq!(got.as_deref(), Ok(*w), "{input}"),
                None => assert!(got.is_err(), "{input} should be refused, got {got:?}"),
            }
            if let Ok(p) = got {
                assert!(
                    !p.split('/').any(|s| s == ".." || s == "."),
                    "{input} → {p}"
                );
            }
        }
    }

    #[test]
    fn absolute_form_gives_the_authority() {
        let t = normalize("https://example.com:8443/orders/1?x").unwrap();
        assert_eq!(
            (t.authority, t.path.as_ref(), t.query),
            (Some("example.com:8443"), "/orders/1", Some("x"))
        );
        let t = normalize("HTTP://h").unwrap();
        assert_eq!((t.authority, t.path.as_ref()), (Some("h"), "/"));
        assert!(normalize("https://user@h/").is_err());
        assert!(normalize("https:///x").is_err());
        assert!(normalize("h:443").is_err());
        assert!(normalize("*").is_err());
        assert!(normalize("https://h?q").is_err());
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/a/./b/../c/%7e", "/x/%2f/%41", "/q/..", "/a//./b"] {
            let once = path(p).unwrap();
            assert_eq!(path(&once).unwrap(), once, "{p}");
            assert!(!normalize(&once).unwrap().resolved_dots);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_leaves_dot_segments(s in "[/a.%2eEfF5cC\\\\?#]{0,24}") {
            if let Ok(t) = normalize(&s) {
                proptest::prop_assert!(t.path.starts_with('/'));
                proptest::prop_assert!(!t.path.split('/').any(|x| x == "." || x == ".."));
                let again = normalize(&t.path).unwrap();
                proptest::prop_assert_eq!(again.path, t.path.clone());
            }
        }
    }
}
