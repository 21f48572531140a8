//! The mTLS test backend: HTTPS that requires a client certificate, answering every request
//! with a JSON report of what it saw (client certificate subject, connection id, whether the
//! TLS session was resumed, method, path, headers, body length). Tests and benchmarks use it
//! as the backend behind edgegw, NGINX and HAProxy alike.
//!
//! Query parameters: `delay_ms=N` answers after N ms; `chunked=1` sends the body chunked;
//! `bytes=N` answers N bytes of `x` instead of the JSON report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use boring::hash::MessageDigest;
use boring::ssl::{
    select_next_proto, AlpnError, Ssl, SslAcceptor, SslContextBuilder, SslFiletype, SslMethod,
    SslSessionCacheMode, SslVerifyMode, SslVersion, TicketKeyCallbackResult,
};
use boring::symm::Cipher;
use boring::x509::X509;
use gateway::model::certificate::format_name;

use crate::engine::http::{self, ChunkedDecoder, Framing, InBuffer};
use crate::engine::net::TcpListener;
use crate::engine::tls::TlsStream;
use crate::engine::{self, DriverChoice};

#[derive(clap::Args)]
pub struct BackendArgs {
    /// Address to listen on (127.0.0.1:PORT).
    #[arg(long)]
    listen: SocketAddr,
    /// Server certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Accept only client certificates that chain to (or are) one of these PEM certificates.
    /// Without it any client certificate is accepted, but one is still required.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// A secret file (any bytes, e.g. `openssl rand 48`): session tickets then survive restarts.
    #[arg(long)]
    ticket_key: Option<PathBuf>,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Event loop: io_uring (tokio-uring) when available, or plain tokio.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    driver: DriverChoice,
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

pub fn run(args: BackendArgs) -> Result<(), String> {
    let driver = args.driver.resolve()?;
    let acceptor = Arc::new(build_acceptor(&args)?);
    let mut threads = Vec::new();
    let mut listeners = Vec::new();
    for _ in 0..args.workers.max(1) {
        listeners.push(bind(args.listen)?);
    }
    println!("listening on {} ({})", args.listen, driver.name());
    for listener in listeners {
        let acceptor = acceptor.clone();
        threads.push(std::thread::spawn(move || {
            driver
                .block_on(serve(listener, acceptor))
                .map_err(|e| format!("event loop: {e}"))?
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| "backend thread panicked".to_string())??;
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    use socket2::{Domain, Socket, Type};
    let err = |e: std::io::Error| format!("listening on {addr}: {e}");
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    Ok(socket.into())
}

fn build_acceptor(args: &BackendArgs) -> Result<SslAcceptor, String> {
    fn e(what: &'static str) -> impl Fn(boring::error::ErrorStack) -> String {
        move |err| format!("{what}: {err}")
    }
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(e("TLS context"))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(e("TLS version"))?;
    b.set_certificate_chain_file(&args.cert)
        .map_err(e("--cert"))?;
    b.set_private_key_file(&args.key, SslFiletype::PEM)
        .map_err(e("--key"))?;
    b.check_private_key()
        .map_err(e("--key does not match --cert"))?;
    b.set_alpn_select_callback(|_, client| {
        select_next_proto(b"\x08http/1.1", client).ok_or(AlpnError::NOACK)
    });
    let mode = SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    match &args.client_ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|err| format!("--client-ca {}: {err}", path.display()))?;
            let certs = X509::stack_from_pem(&pem).map_err(e("--client-ca"))?;
            for cert in certs {
                b.cert_store_mut()
                    .add_cert(cert.clone())
                    .map_err(e("--client-ca"))?;
                b.add_client_ca(&cert).map_err(e("--client-ca"))?;
            }
            // Self-signed client certificates listed in --client-ca are trusted as they are.
            b.set_verify(mode);
        }
        None => b.set_verify_callback(mode, |_, _| true),
    }
    b.set_session_id_context(b"edgegw-loadtest-backend")
        .map_err(e("session id context"))?;
    if let Some(path) = &args.ticket_key {
        let secret =
            std::fs::read(path).map_err(|err| format!("--ticket-key {}: {err}", path.display()))?;
        install_ticket_key(&mut b, &secret).map_err(e("--ticket-key"))?;
    }
    b.set_session_cache_mode(SslSessionCacheMode::SERVER);
    Ok(b.build())
}

async fn serve(listener: std::net::TcpListener, acceptor: Arc<SslAcceptor>) -> Result<(), String> {
    let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let acceptor = Rc::new(acceptor);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                engine::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        engine::spawn(async move {
            let Ok(ssl) = Ssl::new(acceptor.context()) else {
                return;
            };
            if let Ok(tls) = TlsStream::accept(tcp, ssl).await {
                serve_connection(tls).await;
            }
        });
    }
}

/// Session tickets under keys derived from `secret` (so they survive a restart of the
/// backend): AES-256-CBC and HMAC-SHA256 keys and a key name, each a SHA-256 of a label and
/// the secret.
fn install_ticket_key(
    b: &mut SslContextBuilder,
    secret: &[u8],
) -> Result<(), boring::error::ErrorStack> {
    let part = |label: &[u8]| -> Result<[u8; 32], boring::error::ErrorStack> {
        let mut hasher = boring::hash::Hasher::new(MessageDigest::sha256())?;
        hasher.update(label)?;
        hasher.update(secret)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&hasher.finish()?);
        Ok(out)
    };
    let aes = part(b"loadtest backend ticket aes")?;
    let hmac = part(b"loadtest backend ticket hmac")?;
    let mut name = [0u8; 16];
    name.copy_from_slice(&part(b"loadtest backend ticket name")?[..16]);
    let callback = move |_: &boring::ssl::SslRef,
                         key_name: &mut [u8; 16],
                         iv: &mut [u8; 16],
                         cipher: &mut boring::symm::CipherCtxRef,
                         mac: &mut boring::hmac::HmacCtxRef,
                         encrypt: bool|
          -> TicketKeyCallbackResult {
        if encrypt {
            if boring::rand::rand_bytes(&mut iv[..]).is_err() {
                return TicketKeyCallbackResult::Error;
            }
            *key_name = name;
        } else if *key_name != name {
            // Not ours: a full handshake.
            return TicketKeyCallbackResult::Noop;
        }
        let iv: &[u8; 16] = iv;
        let init = mac.init(&hmac, &MessageDigest::sha256()).and_then(|()| {
            if encrypt {
                cipher.init_encrypt(&Cipher::aes_256_cbc(), &aes, iv)
            } else {
                cipher.init_decrypt(&Cipher::aes_256_cbc(), &aes, iv)
            }
        });
        match init {
            Ok(()) => TicketKeyCallbackResult::Success,
            Err(_) => TicketKeyCallbackResult::Error,
        }
    };
    // SAFETY: the callback initialises the cipher and HMAC contexts for the IV it is
    // given (and fills the IV and name when encrypting), as BoringSSL requires.
    unsafe { b.set_ticket_key_callback(callback) };
    Ok(())
}

async fn serve_connection(mut tls: TlsStream) {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let resumed = tls.ssl().session_reused();
    let subject = tls
        .ssl()
        .peer_certificate()
        .map(|c| format_name(c.subject_name()))
        .unwrap_or_default();
    let mut buf = InBuffer::new();
    loop {
        let head = loop {
            if !buf.is_empty() {
                match http::parse_request(buf.data()) {
                    Ok(Some((head, len))) => {
                        buf.consume(len);
                        break head;
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
            match buf.fill(&mut tls).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let Some(body_length) = read_body(&mut buf, &mut tls, head.framing).await else {
            return;
        };
        let query = head.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_owned)
        };
        if let Some(ms) = param("delay_ms").and_then(|v| v.parse::<u64>().ok()) {
            engine::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(n) = param("bytes").and_then(|v| v.parse::<u64>().ok()) {
            // A large answer (`bytes=N`), streamed in 64 KiB writes: nothing holds it whole.
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
            );
            if tls.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let block = vec![b'x'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let take = left.min(block.len() as u64) as usize;
                if tls.write_all(&block[..take]).await.is_err() {
                    return;
                }
                left -= take as u64;
            }
            continue;
        }
        let headers: serde_json::Map<String, serde_json::Value> = head
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_ascii_lowercase(),
                    serde_json::Value::from(value.as_str()),
                )
            })
            .collect();
        let report = serde_json::json!({
            "subject": subject,
            "connection": id,
            "resumed": resumed,
            "method": head.method,
            "path": head.target,
            "headers": headers,
            "bodyLength": body_length,
        })
        .to_string();
        let close = head.close;
        let mut out = Vec::with_capacity(report.len() + 128);
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n");
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if param("chunked").as_deref() == Some("1") {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let bytes = report.as_bytes();
            let (a, b) = bytes.split_at(bytes.len() / 2);
            for part in [a, b] {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", report.len()).as_bytes());
            out.extend_from_slice(report.as_bytes());
        }
        if tls.write_all(&out).await.is_err() || close {
            tls.shutdown().await;
            return;
        }
    }
}

/// Reads and counts the request body; `None` when the connection broke.
async fn read_body(buf: &mut InBuffer, tls: &mut TlsStream, framing: Framing) -> Option<u64> {
    let mut scanner = ChunkedDecoder::default();
    let mut remaining = match framing {
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
        Framing::Empty | Framing::UntilClose => return Some(0),
    };
    loop {
        if buf.is_empty() && buf.fill(tls).await.ok()? == 0 {
            return None;
        }
        let data = buf.data();
        if framing == Framing::Chunked {
            let n = scanner.scan(data).ok()?;
            buf.consume(n);
            if scanner.is_done() {
                return Some(scanner.data_len());
            }
        } else {
            let n = remaining.min(data.len() as u64);
            buf.consume(n as usize);
            remaining -= n;
            if remaining == 0 {
                if let Framing::Length(total) = framing {
                    return Some(total);
                }
            }
        }
    }
}
