//! `http-request` and `http-response`: the HTTP/1.1 head parsers and the framing a head
//! declares (`gateway::dataplane::http`).
//!
//! Properties, beyond "no panic":
//! - a complete head is self-delimiting: its length is within the input and the limits, it
//!   ends with a line end, every prefix of it is "need more bytes", and the head alone
//!   parses to the same parts;
//! - the parts are what the smuggling defences rely on: the method and header names are
//!   tokens, the target is visible ASCII (or UTF-8), no header value holds a NUL, CR, LF or
//!   other control character;
//! - re-serialised (request line or status line, then `name: value` CRLF lines), a head
//!   parses again to the same parts;
//! - `declared_framing` never accepts both `Transfer-Encoding` and `Content-Length`, accepts
//!   a length only when every `Content-Length` is the same plain digits, and `chunked` only
//!   when it is the one coding.

use gateway::dataplane::http::{
    connection_tokens, declared_framing, is_hop_by_hop, parse_request, parse_response, Framing,
    HeaderRef, MAX_HEADERS, MAX_HEAD_BYTES,
};
use rand::rngs::StdRng;
use rand::Rng;

use crate::engine::{Outcome, Target};
use crate::gen::{chance, from_alphabet, pick, text_bytes, TOKEN_CHARS};

const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n\n",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"Host: ",
    b"Content-Length: ",
    b"Transfer-Encoding: ",
    b"chunked",
    b"gzip, ",
    b"Connection: ",
    b"keep-alive",
    b"close",
    b"Upgrade",
    b": ",
    b" : ",
    b"\r\n ",
    b"\r\n\t",
    b"%2e%2e/",
    b"..%2f",
    b"/../",
    b"http://",
    b"\x00",
    b"\xc3\xa9",
    b"\xff",
];

fn line_end(rng: &mut StdRng) -> &'static [u8] {
    match rng.random_range(0..40) {
        0 => b"\n",
        1 => b"\r",
        2 => b"\r\r\n",
        3 => b"\n\r",
        _ => b"\r\n",
    }
}

fn space(rng: &mut StdRng) -> &'static [u8] {
    match rng.random_range(0..30) {
        0 => b"  ",
        1 => b"\t",
        2 => b"",
        _ => b" ",
    }
}

fn version(rng: &mut StdRng) -> &'static [u8] {
    match rng.random_range(0..30) {
        0 => b"HTTP/1.0",
        1 => b"HTTP/2.0",
        2 => b"HTTP/1.2",
        3 => b"http/1.1",
        4 => b"HTTP/1.",
        5 => b"HTTP/11",
        6..=9 => b"HTTP/1.0",
        _ => b"HTTP/1.1",
    }
}

/// Header lines: the framing and hop-by-hop headers most of the time, with the value
/// forms the smuggling defences are about.
fn header(rng: &mut StdRng, out: &mut Vec<u8>) {
    let name: Vec<u8> = match rng.random_range(0..20) {
        0..=3 => pick(rng, &["Content-Length", "content-length", "CONTENT-LENGTH"])
            .as_bytes()
            .to_vec(),
        4..=7 => pick(
            rng,
            &[
                "Transfer-Encoding",
                "transfer-encoding",
                "TRANSFER-ENCODING",
            ],
        )
        .as_bytes()
        .to_vec(),
        8 | 9 => b"Host".to_vec(),
        10 => b"Connection".to_vec(),
        11 => pick(
            rng,
            &[
                "Keep-Alive",
                "Upgrade",
                "TE",
                "Trailer",
                "Proxy-Connection",
                "Expect",
            ],
        )
        .as_bytes()
        .to_vec(),
        12 => pick(
            rng,
            &[
                "Content-Length ",
                "Transfer-Encoding\t",
                " Host",
                "",
                "X Y",
                "Transfer_Encoding",
                "Content-Length\x00",
            ],
        )
        .as_bytes()
        .to_vec(),
        _ => {
            let n = rng.random_range(1..16);
            from_alphabet(rng, TOKEN_CHARS, n)
        }
    };
    let lower = String::from_utf8_lossy(&name).trim().to_ascii_lowercase();
    let value: Vec<u8> = match lower.as_str() {
        "content-length" => pick(
            rng,
            &[
                "0",
                "5",
                "10",
                "+5",
                "-1",
                "05",
                " 5 ",
                "5, 5",
                "5,6",
                "0x10",
                "",
                "18446744073709551615",
                "18446744073709551616",
                "1 2",
                "5\t",
                "\u{665}",
            ],
        )
        .as_bytes()
        .to_vec(),
        "transfer-encoding" => pick(
            rng,
            &[
                "chunked",
                "Chunked",
                "CHUNKED",
                "gzip, chunked",
                "chunked, gzip",
                "chunked, chunked",
                "identity",
                "chunked ",
                " chunked",
                "xchunked",
                "chunked;q=1",
                "",
                ",",
                ", chunked",
                "chunked,",
                "gzip",
                "\"chunked\"",
            ],
        )
        .as_bytes()
        .to_vec(),
        "host" => pick(
            rng,
            &[
                "example.com",
                "a:443",
                "[::1]:8443",
                "",
                "a b",
                "x@y",
                "h\x00",
            ],
        )
        .as_bytes()
        .to_vec(),
        "connection" => pick(
            rng,
            &[
                "close",
                "keep-alive",
                "Upgrade, x-drop",
                "te, close",
                ",,",
                "",
            ],
        )
        .as_bytes()
        .to_vec(),
        _ => text_bytes(rng, 24),
    };
    out.extend_from_slice(&name);
    out.extend_from_slice(match rng.random_range(0..20) {
        0 => b":",
        1 => b" : ",
        2 => b":  ",
        3 => b":\t",
        _ => b": ",
    });
    out.extend_from_slice(&value);
    if chance(rng, 0.03) {
        // obs-fold
        out.extend_from_slice(b"\r\n more");
    }
    out.extend_from_slice(line_end(rng));
}

fn headers(rng: &mut StdRng, out: &mut Vec<u8>) {
    let n = match rng.random_range(0..100) {
        0 => rng.random_range(95..110),
        1..=10 => 0,
        _ => rng.random_range(1..8),
    };
    for _ in 0..n {
        header(rng, out);
    }
    if chance(rng, 0.005) {
        // Past the head limit.
        out.extend_from_slice(b"X-Big: ");
        out.extend(std::iter::repeat_n(
            b'a',
            MAX_HEAD_BYTES + rng.random_range(0..64),
        ));
        out.extend_from_slice(b"\r\n");
    }
}

/// After the head: nothing, a body, or the next request.
fn tail(rng: &mut StdRng, out: &mut Vec<u8>) {
    match rng.random_range(0..6) {
        0 => out.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n"),
        1 => out.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"),
        2 => out.extend(text_bytes(rng, 16)),
        _ => {}
    }
}

fn target(rng: &mut StdRng) -> Vec<u8> {
    if chance(rng, 0.3) {
        return pick(
            rng,
            &[
                "/",
                "*",
                "/a/b?c=d",
                "/%2e%2e/secret",
                "/based/../secret",
                "/a/..%2fb",
                "/a%2fb",
                "/a%5c..%5cb",
                "http://example.com/a",
                "https://example.com:8443/a?b",
                "http://example.com",
                "example.com:443",
                "//double",
                "/\u{e9}",
                "/a b",
                "/%zz",
                "/a#frag",
            ],
        )
        .as_bytes()
        .to_vec();
    }
    let mut t = Vec::new();
    for _ in 0..rng.random_range(1..6) {
        t.push(b'/');
        t.extend_from_slice(
            pick(
                rng,
                &[
                    "a", "b", "..", ".", "%2e", "%2E%2e", "..%2f", "%5c", "", "x%20y", "~u",
                ],
            )
            .as_bytes(),
        );
    }
    if chance(rng, 0.3) {
        t.extend_from_slice(b"?q=1&r");
    }
    t
}

fn request(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    let method: Vec<u8> = if chance(rng, 0.9) {
        pick(
            rng,
            &[
                "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
                "CONNECT", "TRACE", "PRI", "get",
            ],
        )
        .as_bytes()
        .to_vec()
    } else {
        let n = rng.random_range(0..10);
        text_bytes(rng, n)
    };
    out.extend_from_slice(&method);
    out.extend_from_slice(space(rng));
    out.extend(target(rng));
    out.extend_from_slice(space(rng));
    out.extend_from_slice(version(rng));
    out.extend_from_slice(line_end(rng));
    headers(rng, &mut out);
    out.extend_from_slice(line_end(rng));
    tail(rng, &mut out);
    out
}

fn response(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(version(rng));
    out.extend_from_slice(space(rng));
    let status = match rng.random_range(0..10) {
        0 => format!("{}", rng.random_range(0..2000)),
        1 => pick(
            rng,
            &["100", "101", "204", "304", "1xx", "20", "2000", "-1"],
        )
        .to_owned(),
        _ => pick(rng, &["200", "201", "301", "400", "404", "500", "502"]).to_owned(),
    };
    out.extend_from_slice(status.as_bytes());
    if chance(rng, 0.9) {
        out.extend_from_slice(space(rng));
        let reason: Vec<u8> = if chance(rng, 0.8) {
            pick(
                rng,
                &["OK", "Not Found", "", "Bad  Gateway", "caf\u{e9}", "\u{e9}"],
            )
            .as_bytes()
            .to_vec()
        } else {
            text_bytes(rng, 20)
        };
        out.extend(reason);
    }
    out.extend_from_slice(line_end(rng));
    headers(rng, &mut out);
    out.extend_from_slice(line_end(rng));
    tail(rng, &mut out);
    out
}

/// The parts of a parsed head, owned.
#[derive(Clone, PartialEq, Eq)]
struct Parts {
    first: (String, String, u8),
    headers: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        f.debug_struct("Parts")
            .field("first", &self.first)
            .field("headers", &headers)
            .finish()
    }
}

fn owned_headers<'a>(h: impl Iterator<Item = HeaderRef<'a>>) -> Vec<(String, Vec<u8>)> {
    h.map(|h| (h.name.to_owned(), h.value.to_vec())).collect()
}

type Parse = fn(&[u8]) -> Result<Option<(Parts, usize)>, String>;

fn parse_req(data: &[u8]) -> Result<Option<(Parts, usize)>, String> {
    match parse_request(data) {
        Ok(Some((h, len))) => Ok(Some((
            Parts {
                first: (
                    h.method().to_owned(),
                    h.target().to_owned(),
                    h.minor_version,
                ),
                headers: owned_headers(h.headers()),
            },
            len,
        ))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("{e:?}")),
    }
}

fn parse_res(data: &[u8]) -> Result<Option<(Parts, usize)>, String> {
    match parse_response(data) {
        Ok(Some((h, len))) => Ok(Some((
            Parts {
                first: (h.status.to_string(), h.reason().to_owned(), h.minor_version),
                headers: owned_headers(h.headers()),
            },
            len,
        ))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("{e:?}")),
    }
}

fn serialize_request(p: &Parts) -> Vec<u8> {
    let (method, target, minor) = &p.first;
    let mut out = format!("{method} {target} HTTP/1.{minor}\r\n").into_bytes();
    serialize_headers(p, &mut out);
    out
}

fn serialize_response(p: &Parts) -> Vec<u8> {
    let (status, reason, minor) = &p.first;
    let mut out = format!("HTTP/1.{minor} {status:0>3} {reason}\r\n").into_bytes();
    serialize_headers(p, &mut out);
    out
}

fn serialize_headers(p: &Parts, out: &mut Vec<u8>) {
    for (name, value) in &p.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| TOKEN_CHARS.contains(&b))
}

/// The checks common to requests and responses, on a complete head of `len` bytes.
fn check_head(
    input: &[u8],
    parts: &Parts,
    len: usize,
    parse: Parse,
    serialize: fn(&Parts) -> Vec<u8>,
) -> Result<(), String> {
    if len == 0 || len > input.len() || len > MAX_HEAD_BYTES {
        return Err(format!(
            "head-length: {len} for an input of {} bytes",
            input.len()
        ));
    }
    if input[len - 1] != b'\n' {
        return Err("head-length: the head does not end with a line end".into());
    }
    if parts.headers.len() > MAX_HEADERS {
        return Err(format!("header-count: {}", parts.headers.len()));
    }
    for (name, value) in &parts.headers {
        if !is_token(name) {
            return Err(format!("header-name-token: {name:?}"));
        }
        if let Some(b) = value
            .iter()
            .find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(format!(
                "header-value-ctl: byte {b:#04x} in the value of {name:?}"
            ));
        }
    }
    // The head alone: the same head.
    match parse(&input[..len]) {
        Ok(Some((again, l))) if l == len && &again == parts => {}
        other => {
            return Err(format!(
                "self-delimiting: the head alone parses as {other:?}, not as {parts:?}"
            ))
        }
    }
    // Every prefix needs more bytes (checked at a few cut points).
    for cut in [len - 1, len / 2, len.saturating_sub(2), 1, 0] {
        if cut < len {
            let r = parse(&input[..cut]);
            if r != Ok(None) {
                return Err(format!(
                    "prefix-partial: the first {cut} of {len} head bytes parse as {r:?}"
                ));
            }
        }
    }
    // Re-serialised: the same parts (unless CRLF line ends and `: ` separators made the
    // head longer than the limit: then it is refused as too large, rightly).
    let text = serialize(parts);
    if text.len() > MAX_HEAD_BYTES {
        return Ok(());
    }
    match parse(&text) {
        Ok(Some((again, l))) if l == text.len() && &again == parts => Ok(()),
        other => Err(format!(
            "round-trip: {:?} parses as {other:?}, not as {parts:?}",
            String::from_utf8_lossy(&text)
        )),
    }
}

/// `declared_framing` against an independent reading of the same headers; the outcome's
/// class.
fn check_framing(parts: &Parts) -> Result<&'static str, String> {
    let refs = || {
        parts.headers.iter().map(|(n, v)| HeaderRef {
            name: n.as_str(),
            value: v.as_slice(),
        })
    };
    let framing = declared_framing(refs());
    let te: Vec<&[u8]> = refs()
        .filter(|h| h.is("transfer-encoding"))
        .map(|h| h.value)
        .collect();
    let cl: Vec<&[u8]> = refs()
        .filter(|h| h.is("content-length"))
        .map(|h| h.value)
        .collect();
    // Connection handling must not panic on any head either.
    let tokens = connection_tokens(refs());
    let _ = refs().filter(|h| is_hop_by_hop(*h, &tokens)).count();

    let Ok(framing) = framing else {
        return Ok("refused");
    };
    if !te.is_empty() && !cl.is_empty() {
        return Err(format!(
            "te-and-cl: both Transfer-Encoding and Content-Length accepted as {framing:?}"
        ));
    }
    let plain_digits = |v: &&[u8]| {
        let t = std::str::from_utf8(v)
            .unwrap_or("x")
            .trim_matches([' ', '\t']);
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
    };
    match framing {
        None if te.is_empty() && cl.is_empty() => Ok("none"),
        None => Err("framing-none: framing headers ignored".into()),
        Some(Framing::Chunked) => {
            let codings: Vec<String> = te
                .iter()
                .flat_map(|v| {
                    String::from_utf8_lossy(v)
                        .split(',')
                        .map(|c| c.trim().to_ascii_lowercase())
                        .filter(|c| !c.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect();
            if codings == ["chunked"] {
                Ok("chunked")
            } else {
                Err(format!(
                    "chunked-only: Transfer-Encoding {codings:?} accepted as chunked"
                ))
            }
        }
        Some(Framing::Length(_)) | Some(Framing::Empty) => {
            let n = match framing {
                Some(Framing::Length(n)) => n,
                _ => 0,
            };
            if !te.is_empty() || cl.is_empty() {
                return Err(format!("length-header: {framing:?} without Content-Length"));
            }
            if framing == Some(Framing::Length(0)) {
                return Err("length-zero: a zero length is Empty".into());
            }
            if cl.iter().all(|v| plain_digits(v) == Some(n)) {
                Ok(if n == 0 { "empty" } else { "length" })
            } else {
                Err(format!(
                    "content-length-digits: {:?} accepted as {framing:?}",
                    cl.iter()
                        .map(|v| String::from_utf8_lossy(v))
                        .collect::<Vec<_>>()
                ))
            }
        }
        Some(Framing::UntilClose) => Err("until-close: declared by headers".into()),
    }
}

fn run_head(
    input: &[u8],
    parse: Parse,
    serialize: fn(&Parts) -> Vec<u8>,
) -> Result<Outcome, String> {
    match parse(input) {
        Err(kind) => Ok(Outcome::with("err", kind)),
        Ok(None) => {
            if input.len() >= MAX_HEAD_BYTES {
                return Err(format!(
                    "limit: {} bytes without a complete head are not TooLarge",
                    input.len()
                ));
            }
            Ok(Outcome::new("partial"))
        }
        Ok(Some((parts, len))) => {
            check_head(input, &parts, len, parse, serialize)?;
            let framing = check_framing(&parts)?;
            let class = match framing {
                "none" => "ok:none",
                "chunked" => "ok:chunked",
                "empty" => "ok:empty",
                "length" => "ok:length",
                _ => "ok:framing-refused",
            };
            // Tell heads apart by shape: the framing-relevant header names in order (others
            // as one), the version, the first line's length class.
            let mut names: Vec<&str> = Vec::new();
            for (n, _) in &parts.headers {
                let n = n.to_ascii_lowercase();
                let kind = [
                    "host",
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "upgrade",
                    "te",
                    "trailer",
                    "keep-alive",
                ]
                .into_iter()
                .find(|k| *k == n)
                .unwrap_or("other");
                if names.last() != Some(&kind) && names.len() < 6 {
                    names.push(kind);
                }
            }
            Ok(Outcome::with(
                class,
                (
                    names,
                    parts.first.2,
                    parts.first.0.len().min(8),
                    parts.first.1.len().min(4),
                ),
            ))
        }
    }
}

#[derive(Default)]
pub struct HttpRequest;

impl Target for HttpRequest {
    fn name(&self) -> &'static str {
        "http-request"
    }
    fn generate(&mut self, rng: &mut StdRng) -> Vec<u8> {
        request(rng)
    }
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let outcome = run_head(input, parse_req, serialize_request)?;
        // Request-specific parts: a method token, a visible target, HTTP/1.0 or 1.1.
        if let Ok(Some((p, _))) = parse_req(input) {
            if !is_token(&p.first.0) {
                return Err(format!("method-token: {:?}", p.first.0));
            }
            if p.first.1.is_empty() || p.first.1.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(format!("target-visible: {:?}", p.first.1));
            }
            if p.first.2 > 1 {
                return Err(format!("version: HTTP/1.{}", p.first.2));
            }
        }
        Ok(outcome)
    }
    fn dictionary(&self) -> &[&'static [u8]] {
        DICTIONARY
    }
    fn max_len(&self) -> usize {
        MAX_HEAD_BYTES + 1024
    }
}

#[derive(Default)]
pub struct HttpResponse;

impl Target for HttpResponse {
    fn name(&self) -> &'static str {
        "http-response"
    }
    fn generate(&mut self, rng: &mut StdRng) -> Vec<u8> {
        response(rng)
    }
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String> {
        let outcome = run_head(input, parse_res, serialize_response)?;
        if let Ok(Some((p, _))) = parse_res(input) {
            let status: u16 = p.first.0.parse().unwrap_or(u16::MAX);
            if status > 999 {
                return Err(format!("status: {status}"));
            }
            if p.first.2 > 1 {
                return Err(format!("version: HTTP/1.{}", p.first.2));
            }
        }
        Ok(outcome)
    }
    fn dictionary(&self) -> &[&'static [u8]] {
        DICTIONARY
    }
    fn max_len(&self) -> usize {
        MAX_HEAD_BYTES + 1024
    }
}
