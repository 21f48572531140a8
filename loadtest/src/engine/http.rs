//! HTTP/1.1 for the load generator and the test backend: heads parsed by `httparse`, body
//! framing (RFC 9112 §6.3) and a chunked-body decoder built on `httparse::parse_chunk_size`.
//! Written for this crate alone: none of it is shared with the gateway's codec.

use std::io;

use super::tls::TlsStream;

/// The most header fields a head may have.
const MAX_HEADERS: usize = 100;
/// The largest head (or chunk-size/trailer line) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Received bytes not yet consumed: one allocation, reused; compacted when it fills.
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

    /// Reads once from `tls`; the number of bytes added (0: the peer closed).
    pub async fn fill(&mut self, tls: &mut TlsStream) -> io::Result<usize> {
        if self.buf.len() - self.end < READ_CHUNK {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < READ_CHUNK {
                let want = (self.end + READ_CHUNK).max(self.buf.len() * 2);
                self.buf.resize(want, 0);
            }
        }
        let n = tls.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// A response without length: its body ends when the connection does.
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x as httparse reads it, or too many fields.
    Malformed,
    /// Conflicting or invalid Content-Length / Transfer-Encoding.
    Framing,
    TooLarge,
}

/// The parts of a response head the load generator acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The server will close the connection after this response.
    pub close: bool,
    pub framing: Framing,
}

/// A request head, as the test backend reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// Names as sent (the backend lower-cases them in its report).
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    pub close: bool,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a comma-separated header value lists `token`.
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The framing the fields declare (`None`: neither Content-Length nor Transfer-Encoding).
fn declared(headers: &[httparse::Header<'_>]) -> Result<Option<Framing>, HeadError> {
    let mut length: Option<u64> = None;
    let mut coding: Option<&[u8]> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 19 {
                return Err(HeadError::Framing);
            }
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HeadError::Framing)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Framing);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding counts; several fields form one list.
            coding = h
                .value
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .rfind(|t| !t.is_empty())
                .or(coding);
        }
    }
    match (coding, length) {
        (Some(_), Some(_)) => Err(HeadError::Framing),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(Some(Framing::Chunked)),
        (Some(_), None) => Ok(Some(Framing::UntilClose)),
        (None, Some(0)) => Ok(Some(Framing::Empty)),
        (None, Some(n)) => Ok(Some(Framing::Length(n))),
        (None, None) => Ok(None),
    }
}

/// A response head at the start of `data`: `Ok(None)` while incomplete, else the head and
/// its length. The request is assumed not to be HEAD (the load generator sends GET).
pub fn parse_response(data: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if data.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Malformed),
    };
    let status = response.code.ok_or(HeadError::Malformed)?;
    let headers = &*response.headers;
    let connection = |token| {
        headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("connection") && lists(h.value, token))
    };
    let mut close =
        connection("close") || (response.version == Some(0) && !connection("keep-alive"));
    let framing = if status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else {
        declared(headers)?.unwrap_or(Framing::UntilClose)
    };
    if framing == Framing::UntilClose {
        close = true;
    }
    Ok(Some((
        ResponseHead {
            status,
            close,
            framing,
        },
        len,
    )))
}

/// A request head at the start of `data` (see `parse_response`). A request without a
/// declared length has no body; a coding other than a final `chunked` is refused.
pub fn parse_request(data: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if data.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Malformed),
    };
    let framing = match declared(request.headers)? {
        Some(Framing::UntilClose) => return Err(HeadError::Framing),
        Some(f) => f,
        None => Framing::Empty,
    };
    let close = request
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection") && lists(h.value, "close"))
        || request.version == Some(0);
    let headers = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Some((
        RequestHead {
            method: request.method.unwrap_or_default().to_string(),
            target: request.path.unwrap_or_default().to_string(),
            headers,
            framing,
            close,
        },
        len,
    )))
}

/// Where a chunked body's decoder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

/// Walks a chunked body (RFC 9112 §7.1) given in pieces, counting its data.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    data_len: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
            data_len: 0,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ChunkError;

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The body's data bytes so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Consumes what it can of `input` (the rest waits for more bytes); returns how much.
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        at += n;
                        self.state = ChunkState::Trailers;
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        at += n;
                        self.state = ChunkState::Data(size);
                    }
                    Ok(httparse::Status::Partial) if rest.len() > MAX_HEAD => {
                        return Err(ChunkError)
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err(ChunkError),
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let n = left.min(rest.len() as u64);
                    at += n as usize;
                    self.data_len += n;
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return if rest.is_empty() || rest == b"\r" {
                            Ok(at)
                        } else {
                            Err(ChunkError)
                        };
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ChunkError);
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => match rest.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        at += 2;
                        self.state = ChunkState::Done;
                    }
                    Some(line) => at += line + 2,
                    None if rest.len() > MAX_HEAD => return Err(ChunkError),
                    None => return Ok(at),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn response_framing() {
        let (h, len) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(len, 38);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(!h.close);
        let (h, _) = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: keep-alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.close);
        let (h, _) = parse_response(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(h.close, "a body until close ends the connection");
        let (h, _) = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let (h, _) = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close, "HTTP/1.0 closes unless keep-alive");
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::Framing)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n"),
            Err(HeadError::Framing)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            Err(HeadError::Framing)
        );
        assert_eq!(
            parse_response(b"garbage\r\n\r\n"),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn request_heads() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        let (h, len) = parse_request(raw).unwrap().unwrap();
        assert_eq!(len, raw.len());
        assert_eq!((h.method.as_str(), h.target.as_str()), ("POST", "/a?b=1"));
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.close);
        assert_eq!(h.header("HOST"), Some("h"));
        let (h, _) = parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert!(!h.close);
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(HeadError::Framing)
        );
    }

    #[test]
    fn chunked_bodies_in_any_pieces() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = body.len() - 4;
        // Whole, and split at every point, and byte by byte.
        for split in 0..=end {
            let mut d = ChunkedDecoder::default();
            let mut held = Vec::new();
            let mut used = 0;
            for piece in [&body[..split], &body[split..]] {
                held.extend_from_slice(piece);
                let n = d.scan(&held).unwrap();
                used += n;
                held.drain(..n);
                if d.is_done() {
                    break;
                }
            }
            assert!(d.is_done(), "split {split}");
            assert_eq!(used, end, "split {split}");
            assert_eq!(d.data_len(), 21);
        }
        let mut d = ChunkedDecoder::default();
        let mut held = Vec::new();
        for b in &body[..end] {
            held.push(*b);
            let n = d.scan(&held).unwrap();
            held.drain(..n);
        }
        assert!(d.is_done());
        assert!(ChunkedDecoder::default().scan(b"zz\r\n").is_err());
        assert!(
            ChunkedDecoder::default().scan(b"2\r\nabXY").is_err(),
            "data must end in CRLF"
        );
    }
}
