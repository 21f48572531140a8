//! Minimal blocking HTTP/1.1 clients: plain (admin API, metrics) and TLS with BoringSSL
//! (data plane), written by hand to keep the test crate small and to control every byte
//! on the wire (hop-by-hop headers, chunked bodies, malformed requests).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boring::ssl::{
    SslConnector, SslMethod, SslSession, SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use serde_json::Value;

pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub enum Body {
    None,
    Bytes(Vec<u8>),
    /// Sent with `Transfer-Encoding: chunked`, one chunk per element.
    Chunked(Vec<Vec<u8>>),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Request {
    pub fn get(target: &str) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            headers: vec![],
            body: Body::None,
        }
    }
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            headers: vec![],
            body: Body::None,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Request {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Request {
        self.body = Body::Bytes(b.into());
        self
    }
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Request {
        self.body = Body::Chunked(chunks);
        self
    }

    /// Serialize; adds `Host` when missing and the body framing header.
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        match &self.body {
            Body::None => {
                if matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
                    out.extend_from_slice(b"Content-Length: 0\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
            Body::Bytes(b) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Body::Chunked(chunks) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
    /// The `error.code` of a contract error body, after checking the body's shape.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert_error_shape(&v);
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }
    pub fn keep_alive(&self) -> bool {
        !self
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

/// `{"error": {"code": "<Code>", "message": "<sentence>", "details": [...]}}`.
pub fn assert_error_shape(v: &Value) {
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("no `error` object in {v}"));
    assert!(e.is_object(), "`error` is not an object: {v}");
    let code = e
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no error.code string in {v}"));
    assert!(
        !code.is_empty() && code.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
        "error.code {code:?} is not a PascalCase code"
    );
    let msg = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no error.message string in {v}"));
    assert!(!msg.trim().is_empty(), "empty error.message in {v}");
    assert!(
        e.get("details").is_some_and(Value::is_array),
        "error.details is not an array in {v}"
    );
}

/// A buffered HTTP/1.1 connection over any byte stream.
pub struct HttpConn<S: Read + Write> {
    pub stream: S,
    buf: Vec<u8>,
    host: String,
}

impl<S: Read + Write> HttpConn<S> {
    pub fn new(stream: S, host: &str) -> Self {
        HttpConn {
            stream,
            buf: Vec::new(),
            host: host.into(),
        }
    }

    pub fn send(&mut self, req: &Request) -> io::Result<Response> {
        self.write_all(&req.to_bytes(&self.host))?;
        self.read_response(req.method == "HEAD")
    }

    /// Send a chunked body chunk by chunk with a flush in between (streamed, not one write).
    pub fn send_streamed(&mut self, req: &Request, pause: Duration) -> io::Result<Response> {
        let bytes = req.to_bytes(&self.host);
        if let Body::Chunked(_) = req.body {
            // Write the head, then each chunk separately.
            let head_end = find(&bytes, b"\r\n\r\n")
                .map(|i| i + 4)
                .unwrap_or(bytes.len());
            self.write_all(&bytes[..head_end])?;
            let mut rest = &bytes[head_end..];
            while !rest.is_empty() {
                // each chunk: size line + data + CRLF
                let line_end = find(rest, b"\r\n").map(|i| i + 2).unwrap_or(rest.len());
                let size = usize::from_str_radix(
                    std::str::from_utf8(&rest[..line_end - 2]).unwrap_or("0"),
                    16,
                )
                .unwrap_or(0);
                let end = if size == 0 {
                    rest.len()
                } else {
                    (line_end + size + 2).min(rest.len())
                };
                self.write_all(&rest[..end])?;
                rest = &rest[end..];
                std::thread::sleep(pause);
            }
        } else {
            self.write_all(&bytes)?;
        }
        self.read_response(false)
    }

    pub fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.stream.write_all(b)?;
        self.stream.flush()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16384];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in line"));
            }
        }
    }

    fn read_exact_buf(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Read one response (skipping 1xx).
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        loop {
            let status_line = self.read_line()?;
            let status_line = String::from_utf8_lossy(&status_line).into_owned();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default();
            if !version.starts_with("HTTP/1.") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                ));
            }
            let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
            let reason = parts.next().unwrap_or_default().to_string();
            let mut headers = Vec::new();
            loop {
                let l = self.read_line()?;
                if l.is_empty() {
                    break;
                }
                let l = String::from_utf8_lossy(&l).into_owned();
                let (k, v) = l.split_once(':').unwrap_or((&l, ""));
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            if (100..200).contains(&status) {
                continue;
            }
            let mut resp = Response {
                status,
                reason,
                headers,
                body: Vec::new(),
                chunked: false,
            };
            if head_request || status == 204 || status == 304 {
                return Ok(resp);
            }
            let te_chunked = resp
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            if te_chunked {
                resp.chunked = true;
                loop {
                    let line = self.read_line()?;
                    let line = String::from_utf8_lossy(&line).into_owned();
                    let size_str = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_str, 16).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad chunk size line {line:?}"),
                        )
                    })?;
                    if size == 0 {
                        // trailers
                        loop {
                            if self.read_line()?.is_empty() {
                                break;
                            }
                        }
                        break;
                    }
                    let data = self.read_exact_buf(size)?;
                    resp.body.extend_from_slice(&data);
                    let crlf = self.read_exact_buf(2)?;
                    if crlf != b"\r\n" {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "chunk not followed by CRLF",
                        ));
                    }
                }
            } else if let Some(cl) = resp.header("content-length") {
                let n: usize = cl.parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad content-length {cl:?}"),
                    )
                })?;
                resp.body = self.read_exact_buf(n)?;
            } else {
                // read to EOF
                loop {
                    match self.fill() {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                        Err(e) => return Err(e),
                    }
                }
                resp.body = std::mem::take(&mut self.buf);
            }
            return Ok(resp);
        }
    }

    /// Read whatever the peer sends until EOF (or an error), e.g. after a malformed request.
    pub fn read_to_end_lossy(&mut self) -> Vec<u8> {
        loop {
            match self.fill() {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        std::mem::take(&mut self.buf)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------- plain HTTP

pub fn plain_connect(addr: SocketAddr) -> io::Result<HttpConn<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(HttpConn::new(s, &addr.to_string()))
}

/// One request on a fresh plain connection (`Connection: close`).
pub fn plain_request(addr: SocketAddr, req: Request) -> io::Result<Response> {
    let mut c = plain_connect(addr)?;
    c.send(&req.header("Connection", "close"))
}

/// The admin API client (plain HTTP, bearer token).
#[derive(Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Admin {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Response {
        let mut req = Request::new(method, path);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        self.send(req)
    }
    /// Sends `req` (built with any headers, e.g. `If-Match`) with the bearer token.
    pub fn send(&self, mut req: Request) -> Response {
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let what = format!("admin {} {}", req.method, req.target);
        plain_request(self.addr, req).unwrap_or_else(|e| panic!("{what}: {e}"))
    }
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None, None)
    }
    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, None, None)
    }
    pub fn put_json(&self, path: &str, v: &Value) -> Response {
        self.request(
            "PUT",
            path,
            Some("application/json"),
            Some(v.to_string().into_bytes()),
        )
    }
    pub fn put_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        self.request("PUT", path, Some(content_type), Some(body.to_vec()))
    }
    pub fn put_xml(&self, path: &str, xml: &str) -> Response {
        self.request(
            "PUT",
            path,
            Some("application/xml"),
            Some(xml.as_bytes().to_vec()),
        )
    }

    /// PUT /certificates/{id} with a PKCS#12 file and password.
    pub fn put_certificate(&self, id: &str, p12: &[u8], password: &str) -> Response {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(p12);
        self.put_json(
            &format!("/certificates/{id}"),
            &serde_json::json!({"data": data, "password": password}),
        )
    }

    /// PUT /backends/{id}.
    pub fn put_backend(
        &self,
        id: &str,
        url: &str,
        validate_chain: bool,
        validate_name: bool,
        cert_id: Option<&str>,
    ) -> Response {
        let mut v = serde_json::json!({
            "url": url,
            "tls": {"validateCertificateChain": validate_chain, "validateCertificateName": validate_name},
        });
        if let Some(c) = cert_id {
            v["credentials"] = serde_json::json!({"certificateId": c});
        }
        self.put_json(&format!("/backends/{id}"), &v)
    }

    /// PUT /apis/{id}.
    pub fn put_api(&self, id: &str, path: &str, backend_id: &str) -> Response {
        self.put_json(
            &format!("/apis/{id}"),
            &serde_json::json!({"path": path, "backendId": backend_id}),
        )
    }

    /// Like the above, asserting a 2xx status.
    pub fn ok(&self, r: Response, what: &str) -> Response {
        assert!(
            (200..300).contains(&r.status),
            "{what}: expected 2xx, got {} {}",
            r.status,
            r.text()
        );
        r
    }
}

/// An APIM policy document binding a certificate by id.
pub fn policy_with_certificate_id(id: &str) -> String {
    format!(
        "<policies>\n  <inbound>\n    <base />\n    <authentication-certificate certificate-id=\"{id}\" />\n  </inbound>\n  <backend>\n    <base />\n  </backend>\n  <outbound>\n    <base />\n  </outbound>\n  <on-error>\n    <base />\n  </on-error>\n</policies>"
    )
}

/// An APIM policy document binding a certificate by thumbprint.
pub fn policy_with_thumbprint(tp: &str) -> String {
    format!(
        "<policies>\n  <inbound>\n    <base />\n    <authentication-certificate thumbprint=\"{tp}\" />\n  </inbound>\n  <backend>\n    <base />\n  </backend>\n  <outbound>\n    <base />\n  </outbound>\n  <on-error>\n    <base />\n  </on-error>\n</policies>"
    )
}

// ---------------------------------------------------------------- TLS client

/// A TLS client for the data plane: verification off (the gateway's cert is self-signed),
/// ALPN http/1.1, and capture of session tickets for resumption tests.
#[derive(Clone)]
pub struct TlsClient {
    pub addr: SocketAddr,
    verify: bool,
    connector: SslConnector,
    sessions: Arc<Mutex<Vec<SslSession>>>,
}

pub type TlsConn = HttpConn<SslStream<TcpStream>>;

impl TlsClient {
    pub fn new(addr: SocketAddr) -> TlsClient {
        Self::with_max_version(addr, None)
    }

    /// A client limited to TLS versions up to `max` (e.g. TLS 1.2).
    pub fn with_max_version(addr: SocketAddr, max: Option<SslVersion>) -> TlsClient {
        Self::build(addr, max, None)
    }

    /// A client that verifies the gateway's certificate against the CA in `ca_file`
    /// (hostname `localhost`).
    pub fn verifying(addr: SocketAddr, ca_file: &std::path::Path) -> TlsClient {
        Self::build(addr, None, Some(ca_file))
    }

    /// A client that presents the certificate `cert` (PEM) with its key `key` (PEM) to the
    /// gateway.
    pub fn with_client_certificate(
        addr: SocketAddr,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> TlsClient {
        Self::build_with(addr, None, None, Some((cert, key)))
    }

    fn build(
        addr: SocketAddr,
        max: Option<SslVersion>,
        ca_file: Option<&std::path::Path>,
    ) -> TlsClient {
        Self::build_with(addr, max, ca_file, None)
    }

    fn build_with(
        addr: SocketAddr,
        max: Option<SslVersion>,
        ca_file: Option<&std::path::Path>,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> TlsClient {
        let mut b = SslConnector::builder(SslMethod::tls()).expect("connector builder");
        if let Some((cert, key)) = identity {
            b.set_certificate_chain_file(cert)
                .expect("client certificate");
            b.set_private_key_file(key, boring::ssl::SslFiletype::PEM)
                .expect("client key");
        }
        if max.is_some() {
            b.set_max_proto_version(max).expect("max version");
        }
        match ca_file {
            Some(ca) => {
                b.set_ca_file(ca).expect("ca file");
                b.set_verify(SslVerifyMode::PEER);
            }
            None => b.set_verify(SslVerifyMode::NONE),
        }
        b.set_alpn_protos(b"\x08http/1.1").expect("alpn");
        b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        let sessions: Arc<Mutex<Vec<SslSession>>> = Arc::new(Mutex::new(Vec::new()));
        let s2 = sessions.clone();
        b.set_new_session_callback(move |_ssl, sess| {
            s2.lock().unwrap_or_else(|e| e.into_inner()).push(sess);
        });
        TlsClient {
            addr,
            verify: ca_file.is_some(),
            connector: b.build(),
            sessions,
        }
    }

    pub fn connect(&self) -> io::Result<TlsConn> {
        self.connect_with(None)
    }

    /// Connect, offering `session` for resumption when given.
    pub fn connect_with(&self, session: Option<&SslSession>) -> io::Result<TlsConn> {
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let cfg = self
            .connector
            .configure()
            .map_err(io::Error::other)?
            .verify_hostname(self.verify);
        let mut ssl = cfg.into_ssl("localhost").map_err(io::Error::other)?;
        if let Some(s) = session {
            // SAFETY: the session comes from a connection made with this same SslContext.
            unsafe { ssl.set_session(s) }.map_err(io::Error::other)?;
        }
        let stream = ssl
            .connect(tcp)
            .map_err(|e| io::Error::other(format!("TLS handshake with gateway: {e}")))?;
        Ok(HttpConn::new(stream, "localhost"))
    }

    /// The most recent session ticket received by any connection of this client.
    pub fn last_session(&self) -> Option<SslSession> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
    }

    pub fn session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// One request on a fresh connection.
    pub fn request(&self, req: Request) -> io::Result<Response> {
        let mut c = self.connect()?;
        c.send(&req)
    }

    /// GET on a fresh connection; panics on I/O errors.
    pub fn get(&self, target: &str) -> Response {
        self.request(Request::get(target))
            .unwrap_or_else(|e| panic!("GET {target} via gateway: {e}"))
    }
}

impl TlsConn {
    pub fn session_reused(&self) -> bool {
        self.stream.ssl().session_reused()
    }
    /// DER of the gateway's certificate as presented in this handshake.
    pub fn peer_cert_der(&self) -> Vec<u8> {
        self.stream
            .ssl()
            .peer_certificate()
            .and_then(|c| c.to_der().ok())
            .unwrap_or_default()
    }
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.stream
            .ssl()
            .selected_alpn_protocol()
            .map(|p| p.to_vec())
    }
    pub fn get(&mut self, target: &str) -> Response {
        self.send(&Request::get(target))
            .unwrap_or_else(|e| panic!("GET {target} via gateway: {e}"))
    }
}
