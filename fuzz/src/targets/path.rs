//! `path`: the request-target normaliser (`gateway::dataplane::path::normalize`), which
//! routing and forwarding both use.
//!
//! Properties, beyond "no panic": an accepted target's path starts with `/`, has no `.` or
//! `..` segment, none either once `%2F`/`%5C` are read as separators (a backend may decode
//! them), no encoding of an unreserved character and no lower-case hex, only characters a
//! path may hold; normalising it again gives the same path, borrowed, with no dots
//! resolved; the query is the one the client sent; an authority only for an absolute URL.

use gateway::dataplane::path::normalize;
use rand::rngs::StdRng;
use rand::Rng;

use crate::engine::{Outcome, Target};
use crate::gen::{chance, pick, text_string};

const DICTIONARY: &[&[u8]] = &[
    b"/..",
    b"/.",
    b"%2e",
    b"%2E",
    b"%2f",
    b"%2F",
    b"%5c",
    b"%5C",
    b"\\",
    b"%25",
    b"%41",
    b"%7e",
    b"?",
    b"#",
    b"//",
    b"http://",
    b"https://h:1",
    b"@",
    b"%zz",
    b"%",
];

const SEGMENTS: &[&str] = &[
    "a",
    "based",
    "b",
    "..",
    ".",
    "%2e",
    "%2E",
    "%2e%2E",
    ".%2e",
    "%2e.",
    "..%2f",
    "..%2F",
    "%2e%2e%2f",
    "%2f",
    "%5c",
    "..%5c",
    "\\",
    "%41",
    "%7e",
    "%7E",
    "%zz",
    "%2",
    "",
    "x y",
    "%252e",
    "\u{e9}",
    "a;b",
    "a:b@c",
    "~",
    "...",
    "%00",
    "%2F..",
    "a%2f..%2fb",
];

fn target(rng: &mut StdRng) -> String {
    let mut t = String::new();
    if chance(rng, 0.15) {
        t.push_str(pick(
            rng,
            &[
                "http://h",
                "HTTPS://h:8443",
                "http://",
                "http://u@h",
                "https://[::1]",
                "ftp://h",
            ],
        ));
    }
    if chance(rng, 0.03) {
        return pick(rng, &["*", "h:443", "", "http://h?q", "?x"]).to_owned();
    }
    for _ in 0..rng.random_range(0..8) {
        t.push('/');
        if chance(rng, 0.05) {
            t.push_str(&text_string(rng, 4));
        } else {
            t.push_str(pick(rng, SEGMENTS));
        }
    }
    if t.is_empty() || chance(rng, 0.1) {
        t.push('/');
    }
    if chance(rng, 0.3) {
        t.push('?');
        t.push_str(pick(rng, &["x=1", "a=../b", "", "q=%2e%2e", "?", "a#b"]));
    }
    if chance(rng, 0.05) {
        t.push_str("#frag");
    }
    t
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Why `path` is not a normal path, if it is not.
fn not_normal(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("does not start with '/'".into());
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Some("holds a dot segment".into());
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = path.get(i + 1..i + 3).unwrap_or("");
            let Ok(v) = u8::from_str_radix(hex, 16) else {
                return Some(format!("holds a broken encoding at {i}"));
            };
            if hex.len() != 2 || hex.bytes().any(|h| h.is_ascii_lowercase()) {
                return Some(format!("holds lower-case hex at {i}"));
            }
            if is_unreserved(v) {
                return Some(format!("holds %{hex}, an unreserved character"));
            }
            i += 3;
            continue;
        }
        if !(is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b)) {
            return Some(format!("holds the byte {b:#04x}"));
        }
        i += 1;
    }
    for segment in path.split('/') {
        let upper = segment.to_ascii_uppercase().replace("%5C", "%2F");
        if upper.contains("%2F") && upper.split("%2F").any(|p| p == "." || p == "..") {
            return Some(format!(
                "holds {segment:?}: a dot segment once %2F/%5C separate"
            ));
        }
    }
    None
}

#[derive(Default)]
pub struct RequestPath;

impl Target for RequestPath {
    fn name(&self) -> &'static str {
        "path"
    }

    fn generate(&mut self, rng: &mut StdRng) -> Vec<u8> {
        target(rng).into_bytes()
    }

    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        // httparse hands the proxy a target of visible ASCII or UTF-8.
        let text = String::from_utf8_lossy(input);
        let t = match normalize(&text) {
            Err(e) => return Ok(Outcome::with("refused", e.0)),
            Ok(t) => t,
        };
        if let Some(why) = not_normal(&t.path) {
            return Err(format!("normal: {text:?} → {:?}, which {why}", t.path));
        }
        match normalize(&t.path) {
            Ok(again) if again.path == t.path && !again.resolved_dots => {
                if matches!(again.path, std::borrow::Cow::Owned(_)) {
                    return Err(format!(
                        "idempotent: {:?} normalised again is a new string",
                        t.path
                    ));
                }
            }
            other => {
                return Err(format!(
                    "idempotent: {text:?} → {:?}, which normalises to {other:?}",
                    t.path
                ))
            }
        }
        let absolute = !text.starts_with('/');
        if absolute != t.authority.is_some() {
            return Err(format!(
                "authority: {text:?} gives the authority {:?}",
                t.authority
            ));
        }
        let origin = match t.authority {
            Some(a) => text
                .find("://")
                .and_then(|i| text.get(i + 3 + a.len()..))
                .unwrap_or(""),
            None => &text,
        };
        let query = origin.split_once('?').map(|(_, q)| q);
        if t.query != query {
            return Err(format!(
                "query: {text:?} gives the query {:?}, not {query:?}",
                t.query
            ));
        }
        if !text.contains(t.raw_path) {
            return Err(format!("raw-path: {:?} is not in {text:?}", t.raw_path));
        }
        let segments = t.path.split('/').count().min(6);
        Ok(Outcome::with(
            if t.resolved_dots {
                "ok:resolved"
            } else {
                "ok:as-is"
            },
            (
                segments,
                t.path.contains('%'),
                t.authority.is_some(),
                t.query.is_some(),
            ),
        ))
    }

    fn dictionary(&self) -> &[&'static [u8]] {
        DICTIONARY
    }

    fn max_len(&self) -> usize {
        2048
    }
}
