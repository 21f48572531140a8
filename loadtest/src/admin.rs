//! A small blocking HTTP/1.1 client for the gateway's plain-HTTP admin API and `/metrics`
//! (control traffic: never on a measured data path), and [`ResponseReader`], the response
//! parser it uses (`httparse`), which also reads keep-alive answers for `loadtest scale`.
//! The load-test suite does not use the gateway's own HTTP code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `http://host:port` (a trailing slash or path is ignored).
#[derive(Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    host: String,
    token: Option<String>,
}

// Not derived: the bearer token never goes to a log.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Endpoint {
    pub fn parse(url: &str, token: Option<&str>) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported here"))?;
        let host = rest.split('/').next().unwrap_or_default().to_string();
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Endpoint {
            addr,
            host,
            token: token.map(str::to_owned),
        })
    }

    /// One request; returns the status and the body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, String), String> {
        let err = |e: std::io::Error| format!("{method} {path}: {e}");
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(err)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.host
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or(("application/json", b""));
        if method != "GET" {
            req.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                body.0,
                body.1.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body.1);
        s.write_all(&bytes).map_err(err)?;
        let response = ResponseReader::default()
            .read(&mut s)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        Ok((
            response.status,
            String::from_utf8_lossy(&response.body).into_owned(),
        ))
    }

    /// The address calls go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` of this endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.call("GET", path, None)
    }

    /// PUT a JSON body; any status but 200/201 is an error.
    pub fn put_json(&self, path: &str, body: &serde_json::Value) -> Result<u16, String> {
        self.put_json_reply(path, body).map(|(status, _)| status)
    }

    /// PUT a JSON body; the status and the answer (the resource as edgegw stored it); any
    /// status but 200/201 is an error.
    pub fn put_json_reply(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, String), String> {
        let (status, reply) = self.put_json_raw(path, body)?;
        if status == 200 || status == 201 {
            Ok((status, reply))
        } else {
            Err(format!("PUT {path}: {status} {reply}"))
        }
    }

    /// PUT a JSON body; the status and the answer, whatever the status (only a transport
    /// failure is an error).
    pub fn put_json_raw(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, String), String> {
        let text = body.to_string();
        self.call("PUT", path, Some(("application/json", text.as_bytes())))
    }
}

/// One HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The server will close the connection after it (`Connection: close`, HTTP/1.0 without
    /// keep-alive, or a body delimited by the close).
    pub close: bool,
}

/// How the body of a response ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads HTTP/1.1 responses from a byte stream one at a time (heads parsed by `httparse`,
/// `Content-Length`, chunked and read-until-close bodies). Bytes read past the end of one
/// response are kept for the next one, so one reader serves a keep-alive connection.
#[derive(Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
}

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

impl ResponseReader {
    /// The next response from `stream` (interim 1xx answers are skipped).
    pub fn read<R: Read>(&mut self, stream: &mut R) -> Result<Response, String> {
        loop {
            let (status, framing, close) = self.read_head(stream)?;
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let body = match framing {
                Framing::Empty => Vec::new(),
                Framing::Length(n) => {
                    while self.buf.len() < n {
                        if self.fill(stream)? == 0 {
                            return Err(format!(
                                "connection closed after {} of {n} body bytes",
                                self.buf.len()
                            ));
                        }
                    }
                    self.buf.drain(..n).collect()
                }
                Framing::Chunked => self.read_chunked(stream)?,
                Framing::UntilClose => {
                    while self.fill(stream)? > 0 {}
                    std::mem::take(&mut self.buf)
                }
            };
            return Ok(Response {
                status,
                body,
                close: close || framing == Framing::UntilClose,
            });
        }
    }

    /// Reads more bytes into the buffer; 0 at the end of the stream.
    fn fill<R: Read>(&mut self, stream: &mut R) -> Result<usize, String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the response: {e}")),
            }
        }
    }

    /// Parses (reading as needed) one response head and removes it from the buffer.
    fn read_head<R: Read>(&mut self, stream: &mut R) -> Result<(u16, Framing, bool), String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut head = httparse::Response::new(&mut headers);
            match head.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = head.code.unwrap_or(0);
                    let (framing, close) = framing(status, head.version, head.headers)?;
                    self.buf.drain(..len);
                    return Ok((status, framing, close));
                }
                Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                    return Err(format!("response head longer than {MAX_HEAD} bytes"));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("malformed response head: {e}")),
            }
            if self.fill(stream)? == 0 {
                return Err(if self.buf.is_empty() {
                    "connection closed before a response".into()
                } else {
                    "connection closed inside the response head".into()
                });
            }
        }
    }

    /// A chunked body (RFC 9112 §7.1): size lines with `httparse::parse_chunk_size`, data and
    /// its CRLF, the last chunk and the trailer section (discarded).
    fn read_chunked<R: Read>(&mut self, stream: &mut R) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        let closed = |what: &str| format!("connection closed inside the chunked body ({what})");
        loop {
            let (consumed, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() > MAX_HEAD {
                            return Err("chunk size line too long".into());
                        }
                        if self.fill(stream)? == 0 {
                            return Err(closed("size line"));
                        }
                    }
                    Err(_) => return Err("malformed chunk size line".into()),
                }
            };
            self.buf.drain(..consumed);
            if size == 0 {
                // Trailer section: header lines, then an empty line.
                loop {
                    if self.buf.starts_with(b"\r\n") {
                        self.buf.drain(..2);
                        return Ok(body);
                    }
                    if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        self.buf.drain(..end + 4);
                        return Ok(body);
                    }
                    if self.buf.len() > MAX_HEAD {
                        return Err("chunked trailer section too long".into());
                    }
                    if self.fill(stream)? == 0 {
                        return Err(closed("trailer"));
                    }
                }
            }
            let size = usize::try_from(size).map_err(|_| "chunk size too large".to_string())?;
            let need = size.checked_add(2).ok_or("chunk size too large")?;
            while self.buf.len() < need {
                if self.fill(stream)? == 0 {
                    return Err(closed("data"));
                }
            }
            if &self.buf[size..need] != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..need);
        }
    }
}

/// The body's framing and whether the connection closes after it, from the head.
fn framing(
    status: u16,
    version: Option<u8>,
    headers: &[httparse::Header<'_>],
) -> Result<(Framing, bool), String> {
    let values = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
            .collect()
    };
    let tokens = |name: &str| -> Vec<String> {
        values(name)
            .into_iter()
            .flat_map(|v| {
                v.split(',')
                    .map(|t| t.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect()
    };
    let connection = tokens("connection");
    let close = connection.iter().any(|t| t == "close")
        || (version == Some(0) && !connection.iter().any(|t| t == "keep-alive"));
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((Framing::Empty, close));
    }
    let codings = tokens("transfer-encoding");
    if let Some(last) = codings.last() {
        return if last == "chunked" {
            Ok((Framing::Chunked, close))
        } else {
            // Another final coding: the body ends with the connection.
            Ok((Framing::UntilClose, true))
        };
    }
    let lengths = values("content-length");
    if let Some(first) = lengths.first() {
        let first = first.trim();
        if first.is_empty()
            || !first.bytes().all(|b| b.is_ascii_digit())
            || lengths.iter().any(|l| l.trim() != first)
        {
            return Err(format!("bad Content-Length {lengths:?}"));
        }
        let n = first
            .parse::<usize>()
            .map_err(|_| format!("bad Content-Length {first:?}"))?;
        return Ok((Framing::Length(n), close));
    }
    Ok((Framing::UntilClose, true))
}

/// Status and body of one complete response (content-length, chunked or until the end).
#[cfg(test)]
fn parse_response(data: &[u8]) -> Option<(u16, String)> {
    let mut data = data;
    let r = ResponseReader::default().read(&mut data).ok()?;
    Some((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// Sum of every sample of a Prometheus metric whose labels contain all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            if ok {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_filter_by_labels() {
        let text = "# HELP x\n\
            edgegw_upstream_handshakes_total{backend=\"b\",resumed=\"true\"} 7\n\
            edgegw_upstream_handshakes_total{backend=\"b\",resumed=\"false\"} 2\n\
            edgegw_upstream_handshakes_total{backend=\"c\",resumed=\"true\"} 1\n\
            edgegw_config_generation 3\n";
        let n = "edgegw_upstream_handshakes_total";
        assert_eq!(metric_sum(text, n, &[]), 10.0);
        assert_eq!(metric_sum(text, n, &[("resumed", "true")]), 8.0);
        assert_eq!(
            metric_sum(text, n, &[("backend", "b"), ("resumed", "false")]),
            2.0
        );
        assert_eq!(metric_sum(text, "edgegw_config_generation", &[]), 3.0);
        assert_eq!(metric_sum(text, "missing", &[]), 0.0);
    }

    #[test]
    fn responses_plain_and_chunked() {
        let r = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(r), Some((201, "{}".to_string())));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Some((200, "abcde".to_string())));
        // Chunk extensions, upper-case hex, a trailer section.
        let r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\nA;x=1\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        // The last coding decides the framing; the body is handed on as it came (not gunzipped).
        assert_eq!(parse_response(r), Some((200, "0123456789".to_string())));
    }

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read_all(data: &[u8], step: usize) -> Vec<Result<Response, String>> {
        let mut stream = Trickle { data, step };
        let mut reader = ResponseReader::default();
        let mut out = Vec::new();
        loop {
            let r = reader.read(&mut stream);
            let stop = r.is_err() || r.as_ref().is_ok_and(|r| r.close);
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn keep_alive_responses_split_at_every_byte() {
        let data: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            4;ext=1\r\nwiki\r\nA\r\npedia in c\r\n0\r\nExpires: never\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n\
            HTTP/1.0 200 OK\r\n\r\nuntil the end";
        for step in [1, 2, 3, 7, 64, 100_000] {
            let got = read_all(data, step);
            let got: Vec<Response> = got
                .into_iter()
                .map(|r| r.unwrap_or_else(|e| panic!("step {step}: {e}")))
                .collect();
            let want = [
                (200, &b"hello"[..], false),
                (200, &b"wikipedia in c"[..], false),
                (204, &b""[..], false),
                (404, &b""[..], false),
                (200, &b"until the end"[..], true),
            ];
            assert_eq!(got.len(), want.len(), "step {step}: {got:?}");
            for (g, (status, body, close)) in got.iter().zip(want) {
                assert_eq!(
                    (g.status, g.body.as_slice(), g.close),
                    (status, body, close),
                    "step {step}"
                );
            }
        }
    }

    #[test]
    fn connection_close_is_reported() {
        let data =
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx";
        let r = read_all(data, 5);
        assert_eq!(r.len(), 1);
        assert!(r[0].as_ref().unwrap().close);
    }

    #[test]
    fn broken_responses_are_errors() {
        for (data, what) in [
            (&b""[..], "closed before a response"),
            (b"HTTP/1.1 200 OK\r\nContent-Le", "inside the response head"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "5 of 10",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "malformed chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
                "not followed by CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "chunked body (data)",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
                "(trailer)",
            ),
            (b"HTTX/1.1 200 OK\r\n\r\n", "malformed response head"),
        ] {
            for step in [1, 4, 1000] {
                let got = ResponseReader::default().read(&mut Trickle { data, step });
                let e = got.expect_err(&format!("{:?} must fail", String::from_utf8_lossy(data)));
                assert!(e.contains(what), "{e:?} should say {what:?}");
            }
        }
    }
}
