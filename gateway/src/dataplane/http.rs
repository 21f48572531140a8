//! HTTP/1.1 pieces the proxy needs: a reusable input buffer, request and response heads
//! (parsed by httparse) with size and count limits, message framing, and a chunked-encoding
//! scanner that finds where a chunked body ends so the body can be streamed through as is.

use std::io;

/// Largest request or response head accepted (bytes), and most header fields.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 100;
/// Buffer size for reading heads and streaming bodies.
const BUFFER_SIZE: usize = 32 * 1024;

/// Something bytes can be read from (a TLS stream, an upstream connection).
#[allow(async_fn_in_trait)]
pub trait ByteSource {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// Something bytes can be written to.
#[allow(async_fn_in_trait)]
pub trait ByteSink {
    async fn send(&mut self, data: &[u8]) -> io::Result<()>;
}

impl ByteSource for crate::tls::stream::TlsStream {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.read(buf).await?)
    }
}

impl ByteSink for crate::tls::stream::TlsStream {
    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        Ok(self.write_all(data).await?)
    }
}

impl ByteSource for crate::upstream::UpstreamIo {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf).await
    }
}

impl ByteSink for crate::upstream::UpstreamIo {
    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data).await
    }
}

/// Bytes read from a peer and not yet consumed.
pub struct InBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for InBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl InBuffer {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more from `source`, appending; returns how many bytes came (0: peer closed).
    pub async fn fill<S: ByteSource>(&mut self, source: &mut S) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf.resize(BUFFER_SIZE, 0);
        }
        if self.end == self.buf.len() {
            // Make room: move unconsumed bytes to the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = source.read_some(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// One header field as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    pub fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap_or("")
    }
}

#[derive(Debug)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub minor_version: u8,
    pub headers: Vec<Header>,
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

fn collect_headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect()
}

/// Parses a request head from the start of `data`: `Ok(None)` when more bytes are needed.
pub fn parse_request(data: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(data) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => {
            let head = RequestHead {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                minor_version: req.version.unwrap_or(1),
                headers: collect_headers(req.headers),
            };
            Ok(Some((head, len)))
        }
        Ok(httparse::Status::Partial) if data.len() >= MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Parses a response head from the start of `data`: `Ok(None)` when more bytes are needed.
pub fn parse_response(data: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(data) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => {
            let head = ResponseHead {
                status: res.code.unwrap_or(0),
                reason: res.reason.unwrap_or_default().to_owned(),
                minor_version: res.version.unwrap_or(1),
                headers: collect_headers(res.headers),
            };
            Ok(Some((head, len)))
        }
        Ok(httparse::Status::Partial) if data.len() >= MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(_) => Err(HeadError::Malformed),
    }
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

/// The framing a set of headers declares; `Err` when it is ambiguous or invalid
/// (request smuggling defences: conflicting lengths, unknown transfer codings).
pub fn declared_framing(headers: &[Header]) -> Result<Option<Framing>, &'static str> {
    let mut chunked = false;
    let mut has_te = false;
    let mut length: Option<u64> = None;
    for h in headers {
        if h.is("transfer-encoding") {
            has_te = true;
            let last = h.value_str().rsplit(',').next().unwrap_or("").trim();
            chunked = last.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err("unsupported Transfer-Encoding");
            }
        } else if h.is("content-length") {
            let v: u64 = h
                .value_str()
                .trim()
                .parse()
                .map_err(|_| "invalid Content-Length")?;
            if length.is_some_and(|l| l != v) {
                return Err("conflicting Content-Length headers");
            }
            length = Some(v);
        }
    }
    if has_te && length.is_some() {
        return Err("both Transfer-Encoding and Content-Length");
    }
    Ok(if chunked {
        Some(Framing::Chunked)
    } else {
        length.map(|l| {
            if l == 0 {
                Framing::Empty
            } else {
                Framing::Length(l)
            }
        })
    })
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
pub fn is_hop_by_hop(header: &Header, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| header.is(h))
        || connection_tokens
            .iter()
            .any(|t| header.name.eq_ignore_ascii_case(t))
}

/// The lower-cased tokens of every `Connection` header.
pub fn connection_tokens(headers: &[Header]) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.is("connection"))
        .flat_map(|h| {
            h.value_str()
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
        })
        .filter(|t| !t.is_empty())
        .collect()
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
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size: extensions up to CR.
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

    /// Scans `data`; returns how many bytes belong to the body (all of `data` unless the
    /// body ends inside it).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
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
                    b';' | b' ' | b'\t' if self.size_digits > 0 => {
                        self.state = ChunkState::Extension
                    }
                    b'\r' if self.size_digits > 0 => self.state = ChunkState::SizeLf,
                    _ => return Err(ChunkError("invalid chunk size")),
                },
                ChunkState::Extension => {
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
                        ChunkState::Trailer
                    };
                }
                ChunkState::Trailer => {
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("expected LF after trailer"));
                    }
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
        let h = |n: &str, v: &str| Header {
            name: n.into(),
            value: v.as_bytes().to_vec(),
        };
        assert_eq!(
            declared_framing(&[h("Content-Length", "10")]),
            Ok(Some(Framing::Length(10)))
        );
        assert_eq!(
            declared_framing(&[h("Transfer-Encoding", "gzip, chunked")]),
            Ok(Some(Framing::Chunked))
        );
        assert_eq!(declared_framing(&[]), Ok(None));
        assert!(declared_framing(&[h("Content-Length", "1"), h("Content-Length", "2")]).is_err());
        assert!(
            declared_framing(&[h("Transfer-Encoding", "chunked"), h("Content-Length", "2")])
                .is_err()
        );
        assert!(declared_framing(&[h("Transfer-Encoding", "gzip")]).is_err());
        assert!(declared_framing(&[h("Content-Length", "-1")]).is_err());
    }

    #[test]
    fn hop_by_hop_headers_include_connection_tokens() {
        let h = |n: &str, v: &str| Header {
            name: n.into(),
            value: v.as_bytes().to_vec(),
        };
        let headers = vec![
            h("Connection", "keep-alive, X-Drop"),
            h("X-Drop", "1"),
            h("X-Keep", "1"),
        ];
        let tokens = connection_tokens(&headers);
        let kept: Vec<_> = headers
            .iter()
            .filter(|x| !is_hop_by_hop(x, &tokens))
            .map(|x| x.name.clone())
            .collect();
        assert_eq!(kept, vec!["X-Keep"]);
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
