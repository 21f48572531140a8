//! The load generator's HTTPS client: a BoringSSL client context (optionally with a client
//! certificate, key-exchange groups, session capture for resumption) and one connection that
//! sends requests and reads whole responses, on the load-test suite's own engine
//! (`crate::engine`: tokio-uring sockets, its own TLS adapter, httparse framing). Nothing
//! here is the gateway's code, so the measuring side cannot share a bug with the measured.

use std::net::SocketAddr;
use std::path::Path;

use boring::pkcs12::Pkcs12;
use boring::pkey::{PKey, Private};
use std::sync::OnceLock;

use boring::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslRef, SslSession, SslSessionCacheMode,
    SslVerifyMode, SslVersion,
};
use boring::x509::X509;

use crate::engine::http::{self, ChunkedDecoder, Framing, InBuffer};
use crate::engine::net::TcpStream;
use crate::engine::tls::TlsStream;

use crate::stats::ErrorKind;

/// A client certificate with its key and chain.
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
    pub chain: Vec<X509>,
}

impl Identity {
    pub fn from_pkcs12(path: &Path, password: &str) -> Result<Identity, String> {
        let der = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let parsed = Pkcs12::from_der(&der)
            .and_then(|p| p.parse2(password))
            .map_err(|e| {
                format!(
                    "{}: not a PKCS#12 file or wrong password: {e}",
                    path.display()
                )
            })?;
        let (Some(cert), Some(key)) = (parsed.cert, parsed.pkey) else {
            return Err(format!("{}: no certificate with its key", path.display()));
        };
        let chain = parsed
            .ca
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        Ok(Identity { cert, key, chain })
    }

    pub fn from_pem(cert: &Path, key: &Path) -> Result<Identity, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut certs = X509::stack_from_pem(&read(cert)?)
            .map_err(|e| format!("{}: {e}", cert.display()))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
        let key = PKey::private_key_from_pem(&read(key)?)
            .map_err(|e| format!("{}: {e}", key.display()))?;
        Ok(Identity {
            cert: leaf,
            key,
            chain: certs.collect(),
        })
    }
}

/// Where a connection keeps the newest session ticket its server sent (TLS 1.3 tickets
/// arrive after the handshake, so they are caught by the new-session callback).
type SessionSlot = std::sync::Mutex<Option<SslSession>>;

fn session_index() -> Option<boring::ex_data::Index<Ssl, SessionSlot>> {
    static INDEX: OnceLock<Option<boring::ex_data::Index<Ssl, SessionSlot>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

/// Client-side session caching with every new ticket kept on its connection (see
/// `take_new_session`).
fn capture_new_sessions(builder: &mut SslContextBuilder) {
    builder.set_session_cache_mode(SslSessionCacheMode::CLIENT);
    builder.set_new_session_callback(|ssl, session| {
        if let Some(slot) = session_index().and_then(|i| ssl.ex_data(i)) {
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(session);
            }
        }
    });
}

/// The newest session ticket the server sent on this connection, taken.
pub fn take_new_session(ssl: &SslRef) -> Option<SslSession> {
    let slot = ssl.ex_data(session_index()?)?;
    slot.lock().ok()?.take()
}

/// The client context: no server verification (benchmarks use self-signed servers),
/// TLS 1.2+, ALPN http/1.1, the given groups, and session capture.
pub fn build_context(
    groups: Option<&str>,
    identity: Option<&Identity>,
) -> Result<SslContext, String> {
    build_context_with(groups, identity, None)
}

/// `build_context`, optionally capped at a TLS version (e.g. TLS 1.2, whose resumption skips
/// the key exchange that TLS 1.3 resumption still does).
pub fn build_context_with(
    groups: Option<&str>,
    identity: Option<&Identity>,
    max_version: Option<SslVersion>,
) -> Result<SslContext, String> {
    let e = |what: &'static str| move |err: boring::error::ErrorStack| format!("{what}: {err}");
    let mut b = SslContext::builder(SslMethod::tls()).map_err(e("TLS context"))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(e("TLS version"))?;
    b.set_max_proto_version(max_version)
        .map_err(e("TLS version"))?;
    b.set_alpn_protos(b"\x08http/1.1").map_err(e("ALPN"))?;
    b.set_verify(SslVerifyMode::NONE);
    if let Some(groups) = groups {
        b.set_curves_list(groups)
            .map_err(e("key-exchange groups"))?;
    }
    if let Some(id) = identity {
        b.set_certificate(&id.cert)
            .map_err(e("client certificate"))?;
        b.set_private_key(&id.key).map_err(e("client key"))?;
        for c in &id.chain {
            b.add_extra_chain_cert(c.clone())
                .map_err(e("client chain"))?;
        }
        b.check_private_key()
            .map_err(e("client key does not match the certificate"))?;
    }
    capture_new_sessions(&mut b);
    Ok(b.build())
}

/// What a response said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The server will close the connection (or closed it to end the body).
    pub close: bool,
}

/// One client connection.
pub struct Conn {
    pub tls: TlsStream,
    buf: InBuffer,
}

impl Conn {
    /// TCP connect, then the TLS handshake offering `session` when given.
    pub async fn connect(
        addr: SocketAddr,
        context: &SslContext,
        sni: Option<&str>,
        session: Option<&SslSession>,
    ) -> Result<Conn, ErrorKind> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        let mut ssl = Ssl::new(context).map_err(|_| ErrorKind::Handshake)?;
        if let Some(index) = session_index() {
            ssl.set_ex_data(index, SessionSlot::default());
        }
        if let Some(host) = sni {
            ssl.set_hostname(host).map_err(|_| ErrorKind::Handshake)?;
        }
        if let Some(session) = session {
            // SAFETY: every session offered here came from a connection made with this same
            // context (one context per run and target).
            unsafe { ssl.set_session(session) }.map_err(|_| ErrorKind::Handshake)?;
        }
        let tls = TlsStream::connect(tcp, ssl)
            .await
            .map_err(|_| ErrorKind::Handshake)?;
        Ok(Conn {
            tls,
            buf: InBuffer::new(),
        })
    }

    pub fn resumed(&self) -> bool {
        self.tls.ssl().session_reused()
    }

    /// Takes the newest session ticket the server sent on this connection.
    pub fn take_session(&mut self) -> Option<SslSession> {
        take_new_session(self.tls.ssl())
    }

    /// Drops the read buffer (idle connections keep only their TLS state).
    pub fn shrink(&mut self) {
        self.buf = InBuffer::new();
    }

    /// Sends `request` (a whole request without body) and reads the whole response.
    pub async fn request(&mut self, request: &[u8]) -> Result<Response, ErrorKind> {
        self.tls
            .write_all(request)
            .await
            .map_err(|_| ErrorKind::Io)?;
        let head = loop {
            if !self.buf.is_empty() {
                match http::parse_response(self.buf.data()) {
                    Ok(Some((head, len))) => {
                        self.buf.consume(len);
                        break head;
                    }
                    Ok(None) => {}
                    Err(_) => return Err(ErrorKind::Protocol),
                }
            }
            self.fill().await?;
        };
        match head.framing {
            Framing::Empty => {}
            Framing::Length(n) => self.skip(n).await?,
            Framing::Chunked => self.skip_chunked().await?,
            Framing::UntilClose => loop {
                self.buf.consume(self.buf.data().len());
                match self.buf.fill(&mut self.tls).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => return Err(ErrorKind::Io),
                }
            },
        }
        Ok(Response {
            status: head.status,
            close: head.close,
        })
    }

    async fn fill(&mut self) -> Result<(), ErrorKind> {
        match self.buf.fill(&mut self.tls).await {
            Ok(0) => Err(ErrorKind::Closed),
            Ok(_) => Ok(()),
            Err(_) => Err(ErrorKind::Io),
        }
    }

    async fn skip(&mut self, mut remaining: u64) -> Result<(), ErrorKind> {
        loop {
            let n = remaining.min(self.buf.data().len() as u64);
            self.buf.consume(n as usize);
            remaining -= n;
            if remaining == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), ErrorKind> {
        let mut scanner = ChunkedDecoder::default();
        loop {
            if !self.buf.is_empty() {
                let n = scanner
                    .scan(self.buf.data())
                    .map_err(|_| ErrorKind::Protocol)?;
                self.buf.consume(n);
                if scanner.is_done() {
                    return Ok(());
                }
            }
            self.fill().await?;
        }
    }
}

/// A GET request for `path` with the given `Host`.
pub fn get_request(host: &str, path: &str, close: bool) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edgegw-loadtest\r\n");
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_are_well_formed() {
        let r = get_request("127.0.0.1:8443", "/a?b=1", false);
        let (head, len) = http::parse_request(&r).unwrap().unwrap();
        assert_eq!(len, r.len());
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/a?b=1");
        assert!(head.header("connection").is_none());
        assert!(!head.close);
        let r = get_request("h", "/", true);
        let (head, _) = http::parse_request(&r).unwrap().unwrap();
        assert!(head.close);
    }
}
