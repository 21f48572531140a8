//! HTTP/1.1 pieces the proxy needs: request and response heads
//! (parsed by httparse) with size and count limits, message framing, and a chunked-encoding
//! scanner that finds where a chunked body ends so the body can be streamed through as is.

pub use crate::buffer::{ByteSink, ByteSource, InBuffer};

/// Largest request or response head accepted (bytes), and most header fields.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 100;

/// One header field, borrowed from the head it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

impl<'a> HeaderRef<'a> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The value as text ("" when it is not UTF-8).
    pub fn value_str(self) -> &'a str {
        std::str::from_utf8(self.value).unwrap_or("")
    }
}

type Span = std::ops::Range<usize>;

/// A head's bytes and where each of its parts lies in them: one copy of the head and no
/// allocation per field. Reused from message to message on a connection.
#[derive(Debug, Default)]
struct HeadBytes {
    raw: Vec<u8>,
    fields: Vec<(Span, Span)>,
}

impl HeadBytes {
    /// Keeps `data[..len]` and the positions of httparse's slices, which all point into `data`.
    fn keep(&mut self, data: &[u8], len: usize, headers: &[httparse::Header<'_>]) {
        self.raw.clear();
        self.raw.extend_from_slice(&data[..len]);
        self.fields.clear();
        self.fields.extend(
            headers
                .iter()
                .map(|h| (span(data, h.name.as_bytes()), span(data, h.value))),
        );
    }

    fn str_at(&self, at: &Span) -> &str {
        // httparse has checked every part we keep as text (tokens, target, reason) to be
        // visible ASCII, so this never falls back.
        std::str::from_utf8(&self.raw[at.clone()]).unwrap_or("")
    }

    fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> + Clone {
        self.fields.iter().map(|(name, value)| HeaderRef {
            name: self.str_at(name),
            value: &self.raw[value.clone()],
        })
    }
}

/// Where `part` (a slice of `whole`) lies in `whole`.
fn span(whole: &[u8], part: &[u8]) -> Span {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

#[derive(Debug, Default)]
pub struct RequestHead {
    bytes: HeadBytes,
    method: Span,
    target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
}

impl RequestHead {
    pub fn method(&self) -> &str {
        self.bytes.str_at(&self.method)
    }

    pub fn target(&self) -> &str {
        self.bytes.str_at(&self.target)
    }

    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> + Clone {
        self.bytes.headers()
    }

    /// Parses a request head from the start of `data` into `self` (reusing its memory):
    /// `Ok(None)` when more bytes are needed, else the head's length.
    pub fn parse(&mut self, data: &[u8]) -> Result<Option<usize>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match check(req.parse(data), data.len())? {
            Some(len) => len,
            None => return Ok(None),
        };
        self.method = span(data, req.method.unwrap_or_default().as_bytes());
        self.target = span(data, req.path.unwrap_or_default().as_bytes());
        self.minor_version = req.version.unwrap_or(1);
        self.bytes.keep(data, len, req.headers);
        Ok(Some(len))
    }
}

#[derive(Debug, Default)]
pub struct ResponseHead {
    bytes: HeadBytes,
    reason: Span,
    pub status: u16,
    pub minor_version: u8,
}

impl ResponseHead {
    pub fn reason(&self) -> &str {
        self.bytes.str_at(&self.reason)
    }

    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> + Clone {
        self.bytes.headers()
    }

    /// Parses a response head from the start of `data` into `self` (reusing its memory).
    pub fn parse(&mut self, data: &[u8]) -> Result<Option<usize>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let len = match check(res.parse(data), data.len())? {
            Some(len) => len,
            None => return Ok(None),
        };
        self.status = res.code.unwrap_or(0);
        self.reason = span(data, res.reason.unwrap_or_default().as_bytes());
        self.minor_version = res.version.unwrap_or(1);
        self.bytes.keep(data, len, res.headers);
        Ok(Some(len))
    }
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Larger than `MAX_HEAD_BYTES` (431 for requests).
    TooLarge,
    /// More than `MAX_HEADERS` fields (431 for requests).
    TooManyHeaders,
    /// Not HTTP/1.x (400 for requests).
    Malformed,
}

/// The limits and errors common to request and response heads.
fn check(parsed: httparse::Result<usize>, available: usize) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if available >= MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Parses a request head into a new `RequestHead` (see `RequestHead::parse` to reuse one).
pub fn parse_request(data: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut head = RequestHead::default();
    Ok(head.parse(data)?.map(|len| (head, len)))
}

/// Parses a response head into a new `ResponseHead` (see `ResponseHead::parse`).
pub fn parse_response(data: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut head = ResponseHead::default();
    Ok(head.parse(data)?.map(|len| (head, len)))
}

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Response only: the body runs until the backend closes the connection.
    UntilClose,
}

/// Why a message's framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Ambiguous or invalid (RFC 9112 §6.3): 400 for a request, 502 for a response.
    Invalid(&'static str),
    /// A transfer coding other than `chunked` (`gzip, chunked`): edgegw streams bodies as
    /// they are and would have to drop the coding, so it refuses it (501 for a request).
    UnsupportedCoding,
}

impl FramingError {
    pub fn why(self) -> &'static str {
        match self {
            FramingError::Invalid(why) => why,
            FramingError::UnsupportedCoding => "a transfer coding other than chunked",
        }
    }
}

/// The framing a set of headers declares; `Err` when it is ambiguous or invalid
/// (request smuggling defences, RFC 9112 §6.3: `Transfer-Encoding` with `Content-Length`,
/// differing lengths, a length that is not plain digits, codings that do not end in one
/// `chunked`).
pub fn declared_framing<'a>(
    headers: impl IntoIterator<Item = HeaderRef<'a>>,
) -> Result<Option<Framing>, FramingError> {
    use FramingError::Invalid;
    // Every coding of every Transfer-Encoding line, in order (lines combine as one list).
    let mut codings = 0usize;
    let mut chunked_at: Option<usize> = None;
    let mut other_coding = false;
    let mut length: Option<u64> = None;
    for h in headers {
        if h.is("transfer-encoding") {
            // `value_str` reads a value that is not UTF-8 as empty, which adds no coding:
            // `chunked` and then such a line would pass as chunked (found by fuzzing).
            let Ok(value) = std::str::from_utf8(h.value) else {
                return Err(Invalid("Transfer-Encoding is not text"));
            };
            for coding in value.split(',').map(str::trim) {
                if coding.is_empty() {
                    continue;
                }
                if coding.eq_ignore_ascii_case("chunked") {
                    if chunked_at.is_some() {
                        return Err(Invalid("chunked applied twice"));
                    }
                    chunked_at = Some(codings);
                } else {
                    other_coding = true;
                }
                codings += 1;
            }
            if codings == 0 {
                return Err(Invalid("empty Transfer-Encoding"));
            }
        } else if h.is("content-length") {
            let text = h.value_str().trim_matches([' ', '\t']);
            if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Invalid("invalid Content-Length"));
            }
            let v: u64 = text
                .parse()
                .map_err(|_| Invalid("invalid Content-Length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(Invalid("conflicting Content-Length headers"));
            }
            length = Some(v);
        }
    }
    if codings > 0 && length.is_some() {
        return Err(Invalid("both Transfer-Encoding and Content-Length"));
    }
    if codings > 0 {
        if chunked_at != Some(codings - 1) {
            return Err(Invalid("Transfer-Encoding does not end in chunked"));
        }
        if other_coding {
            return Err(FramingError::UnsupportedCoding);
        }
        return Ok(Some(Framing::Chunked));
    }
    Ok(length.map(|l| {
        if l == 0 {
            Framing::Empty
        } else {
            Framing::Length(l)
        }
    }))
}

/// Headers that describe one connection, not the message, and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// True for headers dropped when forwarding: hop-by-hop ones, framing (re-emitted by the
/// proxy), and any named in `Connection`.
pub fn is_hop_by_hop(header: HeaderRef<'_>, connection_tokens: &[&str]) -> bool {
    HOP_BY_HOP.iter().any(|h| header.is(h)) || connection_tokens.iter().any(|t| header.is(t))
}

/// The tokens of every `Connection` header (compare them case-insensitively).
pub fn connection_tokens<'a>(headers: impl IntoIterator<Item = HeaderRef<'a>>) -> Vec<&'a str> {
    headers
        .into_iter()
        .filter(|h| h.is("connection"))
        .flat_map(|h| h.value_str().split(',').map(str::trim))
        .filter(|t| !t.is_empty())
        .collect()
}

/// True when `tokens` (from `connection_tokens`) holds `token`.
pub fn has_token(tokens: &[&str], token: &str) -> bool {
    tokens.iter().any(|t| t.eq_ignore_ascii_case(token))
}

/// Writes `Name: value\r\n`.
pub fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the framing header for `framing`.
pub fn push_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => push_header(out, "Content-Length", n.to_string().as_bytes()),
        Framing::Chunked => push_header(out, "Transfer-Encoding", b"chunked"),
        Framing::Empty | Framing::UntilClose => {}
    }
}

/// Finds the end of a chunked body as its bytes stream past, without copying them.
#[derive(Debug, Default)]
pub struct ChunkedScanner {
    state: ChunkState,
    size: u64,
    size_digits: u8,
    data_len: u64,
    /// Bytes of the current chunk extension, and of all trailer lines: both bounded, so a
    /// peer cannot stream an endless size line or trailer through us.
    extension_len: usize,
    trailer_len: usize,
}

/// Longest chunk extension accepted, and the most trailer bytes (the head limit).
const MAX_CHUNK_EXTENSION: usize = 4096;
const MAX_TRAILER_BYTES: usize = MAX_HEAD_BYTES;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size: only more whitespace, `;` or CR may follow.
    SizeWs,
    /// After `;`: extensions up to CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

/// A decoded piece of a chunked body (`ChunkedScanner::scan_parts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPart<'a> {
    Data(&'a [u8]),
    Trailer(&'a [u8]),
}

/// The chunked encoding was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decoded body bytes seen so far (chunk data only).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// At least one chunk-size line has been read whole (and was valid).
    pub fn past_first_size_line(&self) -> bool {
        !matches!(
            self.state,
            ChunkState::Size | ChunkState::SizeWs | ChunkState::Extension | ChunkState::SizeLf
        ) || self.data_len > 0
    }

    /// Scans `data`; returns how many bytes belong to the body (all of `data` unless the
    /// body ends inside it).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        self.scan_parts(data, |_| {})
    }

    /// Like `scan`, and hands `part` the decoded pieces as they pass: chunk data, and the
    /// bytes of the trailer section (its lines with their CRLFs, without the final empty
    /// line). For a peer that does not speak chunked framing (HTTP/2).
    pub fn scan_parts(
        &mut self,
        data: &[u8],
        mut part: impl FnMut(ChunkPart<'_>),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size_digits += 1;
                        if self.size_digits > 15 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.size = self.size * 16 + digit;
                    }
                    b';' if self.size_digits > 0 => self.state = ChunkState::Extension,
                    b' ' | b'\t' if self.size_digits > 0 => self.state = ChunkState::SizeWs,
                    b'\r' if self.size_digits > 0 => self.state = ChunkState::SizeLf,
                    _ => return Err(ChunkError("invalid chunk size")),
                },
                ChunkState::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(ChunkError("invalid chunk size")),
                },
                ChunkState::Extension => {
                    if (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f {
                        return Err(ChunkError("control character in chunk extension"));
                    }
                    self.extension_len += 1;
                    if self.extension_len > MAX_CHUNK_EXTENSION {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if b == b'\n' {
                        return Err(ChunkError("bare LF in chunk extension"));
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("expected LF after chunk size"));
                    }
                    self.size_digits = 0;
                    self.extension_len = 0;
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let take = (self.size as usize).min(data.len() - i);
                    self.size -= take as u64;
                    self.data_len += take as u64;
                    part(ChunkPart::Data(&data[i..i + take]));
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("expected CRLF after chunk data"));
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("expected CRLF after chunk data"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    self.state = if b == b'\r' {
                        ChunkState::FinalLf
                    } else {
                        part(ChunkPart::Trailer(&data[i..=i]));
                        ChunkState::Trailer
                    };
                }
                ChunkState::Trailer => {
                    self.trailer_len += 1;
                    if self.trailer_len > MAX_TRAILER_BYTES {
                        return Err(ChunkError("chunked trailer too large"));
                    }
                    part(ChunkPart::Trailer(&data[i..=i]));
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("expected LF after trailer"));
                    }
                    part(ChunkPart::Trailer(&data[i..=i]));
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError("expected final LF"));
                    }
                    self.state = ChunkState::Done;
                    return Ok(i + 1);
                }
                ChunkState::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scan_parts_decodes_data_and_trailers() {
        let body = b"5\r\nhello\r\n3;x=1\r\n wo\r\n0\r\nA: 1\r\nB: 2\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut s = ChunkedScanner::default();
            let (mut data, mut trailer) = (Vec::new(), Vec::new());
            let mut used = 0;
            for piece in [&body[..split], &body[split..]] {
                if s.is_done() {
                    break;
                }
                used += s
                    .scan_parts(piece, |p| match p {
                        ChunkPart::Data(d) => data.extend_from_slice(d),
                        ChunkPart::Trailer(t) => trailer.extend_from_slice(t),
                    })
                    .unwrap();
            }
            assert!(s.is_done());
            assert_eq!(used, body.len() - 4, "split {split}");
            assert_eq!(data, b"hello wo");
            assert_eq!(trailer, b"A: 1\r\nB: 2\r\n");
        }
    }

    fn scan_all(body: &[u8], split: usize) -> Result<Option<usize>, ChunkError> {
        let mut s = ChunkedScanner::default();
        let (a, b) = body.split_at(split.min(body.len()));
        let n = s.scan(a)?;
        if s.is_done() {
            return Ok(Some(n));
        }
        let m = s.scan(b)?;
        Ok(s.is_done().then_some(a.len() + m))
    }

    #[test]
    fn finds_the_end_of_a_chunked_body_across_splits() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET /next";
        let end = body.len() - "GET /next".len();
        for split in 0..body.len() {
            assert_eq!(scan_all(body, split), Ok(Some(end)), "split at {split}");
        }
    }

    #[test]
    fn trailers_belong_to_the_body() {
        let body = b"0\r\nX-Sum: 1\r\n\r\n";
        assert_eq!(scan_all(body, 4), Ok(Some(body.len())));
    }

    #[test]
    fn rejects_broken_encodings() {
        assert!(scan_all(b"zz\r\n", 4).is_err());
        assert!(scan_all(b"5\r\nhelloXX", 10).is_err());
        assert!(scan_all(b"ffffffffffffffff\r\n", 18).is_err());
        assert!(scan_all(b"\r\n", 2).is_err());
        assert!(scan_all(b"5 x\r\nhello\r\n0\r\n\r\n", 3).is_err());
        assert!(scan_all(b"5;a\x00b\r\nhello\r\n0\r\n\r\n", 3).is_err());
        assert!(scan_all(b"5\nhello\r\n0\r\n\r\n", 3).is_err());
        assert!(scan_all(b"-5\r\n", 3).is_err());
        assert!(scan_all(b"0x5\r\n", 3).is_err());
        let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000));
        assert!(scan_all(long_ext.as_bytes(), 100).is_err());
        assert_eq!(scan_all(b"5 \t;e=1\r\nhello\r\n0\r\n\r\n", 3), Ok(Some(21)));
    }

    #[test]
    fn incomplete_body_is_not_done() {
        assert_eq!(scan_all(b"5\r\nhel", 3), Ok(None));
    }

    #[test]
    fn request_head_limits() {
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(
            parse_request(big.as_bytes()).err(),
            Some(HeadError::TooLarge)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_request(req.as_bytes()).err(),
            Some(HeadError::TooManyHeaders)
        );
        assert_eq!(
            parse_request(b"GARBAGE\r\n\r\n").err(),
            Some(HeadError::Malformed)
        );
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a"),
            Ok(None)
        ));
    }

    #[test]
    fn framing_rules() {
        let h = |n: &'static str, v: &'static str| HeaderRef {
            name: n,
            value: v.as_bytes(),
        };
        assert_eq!(
            declared_framing([h("Content-Length", "10")]),
            Ok(Some(Framing::Length(10)))
        );
        assert_eq!(
            declared_framing([h("Transfer-Encoding", "chunked")]),
            Ok(Some(Framing::Chunked))
        );
        assert_eq!(
            declared_framing([h("Transfer-Encoding", "gzip, chunked")]),
            Err(FramingError::UnsupportedCoding)
        );
        assert_eq!(
            declared_framing([
                h("Transfer-Encoding", "gzip"),
                h("Transfer-Encoding", "chunked")
            ]),
            Err(FramingError::UnsupportedCoding)
        );
        for bad in [
            vec![h("Transfer-Encoding", "chunked, gzip")],
            vec![h("Transfer-Encoding", "chunked, chunked")],
            vec![
                h("Transfer-Encoding", "chunked"),
                h("Transfer-Encoding", "chunked"),
            ],
            vec![h("Transfer-Encoding", "")],
            vec![h("Transfer-Encoding", "xchunked")],
            vec![h("Content-Length", "+5")],
            vec![h("Content-Length", "5, 5")],
            vec![h("Content-Length", "0x5")],
            vec![h("Content-Length", "")],
            vec![h("Content-Length", "99999999999999999999")],
        ] {
            assert!(
                matches!(declared_framing(bad.clone()), Err(FramingError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            declared_framing([h("Content-Length", " 7 "), h("Content-Length", "7")]),
            Ok(Some(Framing::Length(7)))
        );
        assert_eq!(declared_framing([]), Ok(None));
        // A value that is not UTF-8 is no coding we know (fuzz/regressions/http-request/).
        let not_text = HeaderRef {
            name: "Transfer-Encoding",
            value: b"\x82",
        };
        assert!(matches!(
            declared_framing([h("Transfer-Encoding", "chunked"), not_text]),
            Err(FramingError::Invalid(_))
        ));
        assert!(declared_framing([h("Content-Length", "1"), h("Content-Length", "2")]).is_err());
        assert!(
            declared_framing([h("Transfer-Encoding", "chunked"), h("Content-Length", "2")])
                .is_err()
        );
        assert!(declared_framing([h("Transfer-Encoding", "gzip")]).is_err());
        assert!(declared_framing([h("Content-Length", "-1")]).is_err());
    }

    #[test]
    fn hop_by_hop_headers_include_connection_tokens() {
        let (head, _) = parse_request(
            b"GET / HTTP/1.1\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Keep: 1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        let tokens = connection_tokens(head.headers());
        assert!(has_token(&tokens, "x-drop") && has_token(&tokens, "KEEP-ALIVE"));
        let kept: Vec<_> = head
            .headers()
            .filter(|h| !is_hop_by_hop(*h, &tokens))
            .map(|h| h.name)
            .collect();
        assert_eq!(kept, vec!["X-Keep"]);
    }

    #[test]
    fn heads_keep_their_parts_and_are_reusable() {
        let mut head = RequestHead::default();
        let len = head
            .parse(b"POST /a?b=1 HTTP/1.0\r\nHost: x\r\nX-A: 1\r\n\r\nBODY")
            .unwrap();
        assert_eq!(len, Some(41));
        assert_eq!(
            (head.method(), head.target(), head.minor_version),
            ("POST", "/a?b=1", 0)
        );
        let names: Vec<_> = head.headers().map(|h| (h.name, h.value_str())).collect();
        assert_eq!(names, vec![("Host", "x"), ("X-A", "1")]);
        head.parse(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            (head.method(), head.target(), head.headers().count()),
            ("GET", "/", 0)
        );
        let (res, _) = parse_response(b"HTTP/1.1 404 Not Found\r\nA: b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (res.status, res.reason(), res.headers().count()),
            (404, "Not Found", 1)
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&data);
            let _ = parse_response(&data);
            let mut s = ChunkedScanner::default();
            let _ = s.scan(&data);
        }

        #[test]
        fn scanner_agrees_with_an_encoder(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..8), split in 0usize..400) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let len = body.len();
            body.extend_from_slice(b"NEXT");
            prop_assert_eq!(scan_all(&body, split % body.len()), Ok(Some(len)));
        }
    }
}
