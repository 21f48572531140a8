//! Connections to backends: the pool key, the per-worker pool, the session store shared by
//! the workers, and opening a new connection (TCP connect, TLS handshake that resumes an
//! earlier session of the key).

pub mod pool;
pub mod sessions;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boring::ssl::{SslContext, SslSession};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::buffer::{ByteSink, ByteSource, InBuffer};
use crate::model::{CredentialId, Thumbprint};
use crate::tls::client::{self, TlsFailure};
use crate::tls::stream::{TlsError, TlsStream};

pub use pool::{Eviction, Pool};
pub use sessions::{ResumeMiss, SharedSessions};

/// Everything that makes two upstream connections interchangeable. A connection made with
/// one certificate, SNI or set of validation flags is never handed to a request that needs
/// another: the key says so explicitly rather than through a hash or a serial number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub sni: Option<Arc<str>>,
    /// The client certificate presented (thumbprint and chain digest), if any.
    pub credential: Option<CredentialId>,
    pub validate_chain: bool,
    pub validate_name: bool,
    /// The backend's trust settings, when it has any: a connection verified under one
    /// set of CAs, names or pins never serves a request that needs another.
    pub trust: Option<Arc<TrustId>>,
    pub tls: bool,
}

/// The identity of a backend's trust settings: the CA certificates by content (a CA
/// re-uploaded with other certificates under the same id is another identity), the names
/// and the pins.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrustId {
    /// SHA-256 of each trusted CA certificate resource, in id order.
    pub anchors: Vec<[u8; 32]>,
    pub server_names: Vec<String>,
    pub pins: Vec<Thumbprint>,
}

/// The socket to a backend: TLS, or plain TCP for `http://` backends.
pub enum UpstreamIo {
    Tls(TlsStream),
    Plain { tcp: TcpStream, scratch: Vec<u8> },
}

impl UpstreamIo {
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            UpstreamIo::Tls(tls) => Ok(tls.read(buf).await?),
            UpstreamIo::Plain { tcp, scratch } => {
                let mut owned = std::mem::take(scratch);
                owned.clear();
                owned.reserve(buf.len());
                let (result, owned) = tcp.read(owned).await;
                *scratch = owned;
                let n = result?.min(buf.len());
                buf[..n].copy_from_slice(&scratch[..n]);
                Ok(n)
            }
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            UpstreamIo::Tls(tls) => Ok(tls.write_all(data).await?),
            UpstreamIo::Plain { tcp, .. } => {
                let (result, _) = tcp.write_all(data.to_vec()).await;
                result.map(|_| ())
            }
        }
    }

    fn fd(&self) -> i32 {
        match self {
            UpstreamIo::Tls(tls) => tls.raw_fd(),
            UpstreamIo::Plain { tcp, .. } => tcp.as_raw_fd(),
        }
    }

    /// Leaves a read in flight while the connection waits in the pool (TLS only): its
    /// completion is the liveness check of `is_stale`, and it then receives the next
    /// response, so an idle connection costs no operation at checkout.
    pub fn arm_read(&mut self) {
        if let UpstreamIo::Tls(tls) = self {
            tls.arm_read();
        }
    }

    /// True when the backend has closed the connection, sent something unasked (an alert),
    /// or the socket failed: such a connection must not carry a request.
    pub fn is_stale(&mut self) -> bool {
        if let UpstreamIo::Tls(tls) = self {
            if tls.has_buffered_input() {
                return true;
            }
            if tls.read_armed() {
                // An idle connection has nothing to read: a completed read means the
                // backend closed it (FIN), reset it, or sent something unasked.
                return tls.armed_read_completed();
            }
        }
        // An idle connection has nothing to read: readable means the backend closed it (FIN),
        // reset it, or sent something unasked (an alert). poll(2) with a zero timeout reads
        // the socket state without taking the socket lock, unlike a MSG_PEEK recv.
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a socket this connection owns; zero timeout.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        ready != 0
    }
}

impl ByteSource for UpstreamIo {
    async fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read(buf).await
    }
}

impl ByteSink for UpstreamIo {
    async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_all(data).await
    }
}

/// One connection to a backend with its read buffer.
pub struct UpstreamConn {
    pub io: UpstreamIo,
    pub key: PoolKey,
    /// Bytes read from the backend but not yet consumed (kept across requests).
    pub buffered: InBuffer,
    /// Whether the connection came from the pool (a failure before the request is sent may
    /// then be retried once on a fresh connection).
    pub reused: bool,
    /// For TLS: whether the handshake resumed an earlier session.
    pub resumed: Option<bool>,
    /// Counts the connection in the open-connections gauge for as long as it lives.
    pub open: Option<OpenConnection>,
}

/// Keeps a connection counted in `edgegw_upstream_connections_open` until it is dropped.
pub struct OpenConnection(pub metrics::Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Why no connection to the backend could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// Unresolvable, refused, unreachable, reset during the handshake.
    Unreachable(String),
    Timeout,
    Tls(TlsFailure, String),
}

/// The pool one worker owns (not shared across cores), and its handle on the session store
/// all workers share.
pub struct WorkerUpstreams {
    pub pool: Pool<PoolKey, UpstreamConn>,
    sessions: Arc<SharedSessions>,
    connect_timeout: Duration,
}

impl WorkerUpstreams {
    pub fn new(
        max_idle_per_key: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        sessions: Arc<SharedSessions>,
    ) -> Self {
        Self {
            pool: Pool::new(max_idle_per_key, idle_timeout),
            sessions,
            connect_timeout,
        }
    }

    /// A pooled connection for `key` that is still usable, if any.
    pub fn checkout(
        &mut self,
        key: &PoolKey,
        mut on_evict: impl FnMut(Eviction),
    ) -> Option<UpstreamConn> {
        let now = Instant::now();
        while let Some(mut conn) = self.pool.checkout(key, now, &mut on_evict) {
            if !conn.io.is_stale() && conn.buffered.is_empty() {
                conn.reused = true;
                return Some(conn);
            }
            on_evict(Eviction::Stale);
        }
        None
    }

    /// Keeps the newest session ticket the backend sent on `conn`, for the next handshake
    /// of any worker.
    pub fn remember_session(&mut self, conn: &mut UpstreamConn) {
        if let UpstreamIo::Tls(tls) = &mut conn.io {
            if let Some(session) = client::take_new_session(tls.ssl_mut()) {
                let context = tls.ssl().ssl_context().to_owned();
                self.sessions.put(&conn.key, context, session);
            }
        }
    }

    /// Forgets the session of a key whose handshake failed, so the next try starts afresh.
    pub fn forget_session(&mut self, key: &PoolKey) {
        self.sessions.forget(key);
    }

    /// The session to offer a new connection for `key` made with `tls` (cheap: sessions
    /// are reference counted).
    pub fn session_for(&self, key: &PoolKey, tls: &UpstreamTls) -> Option<SslSession> {
        self.sessions.get(key, &tls.context)
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

/// Where one backend is reached: its resolved address, the host name it is known by (SNI
/// and name checks) and the key of its pooled connections.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: Arc<str>,
    pub key: PoolKey,
}

/// A client TLS context for one credential (or none) and one pair of validation flags,
/// shared by every backend that uses the same pair.
pub struct UpstreamTls {
    pub context: SslContext,
    pub validate_name: bool,
    /// Names the certificate must carry instead of the URL's host (empty: the host).
    pub server_names: Vec<String>,
}

/// Opens a new connection to `endpoint` (TLS when `tls` is given), offering `session` for
/// resumption. A free function (not a method) so that no borrow of the worker's state is
/// held while it awaits: other connections of the worker run meanwhile.
pub async fn connect(
    endpoint: &Endpoint,
    tls: Option<&UpstreamTls>,
    session: Option<SslSession>,
    connect_timeout: Duration,
) -> Result<UpstreamConn, ConnectError> {
    let connect = TcpStream::connect_addr(endpoint.addr);
    let tcp = match monoio::time::timeout(connect_timeout, connect).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => {
            return Err(ConnectError::Unreachable(format!(
                "connecting to {}: {e}",
                endpoint.addr
            )))
        }
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    let key = endpoint.key.clone();
    let Some(tls) = tls else {
        let io = UpstreamIo::Plain {
            tcp,
            scratch: Vec::new(),
        };
        return Ok(new_conn(io, key, None));
    };
    let ssl = client::new_connection(
        &tls.context,
        &endpoint.host,
        tls.validate_name,
        &tls.server_names,
        session.as_ref(),
    )
    .map_err(|e| ConnectError::Tls(TlsFailure::HandshakeFailed, e.to_string()))?;
    let mut stream = TlsStream::client(tcp, ssl)
        .map_err(|e| ConnectError::Tls(TlsFailure::HandshakeFailed, e.to_string()))?;
    match monoio::time::timeout(connect_timeout, stream.handshake()).await {
        Err(_) => Err(ConnectError::Timeout),
        Ok(Ok(())) => {
            let resumed = stream.ssl().session_reused();
            Ok(new_conn(UpstreamIo::Tls(stream), key, Some(resumed)))
        }
        Ok(Err(TlsError::Ssl(e))) => {
            let reason = client::classify_failure(stream.ssl(), &e);
            Err(ConnectError::Tls(reason, e.to_string()))
        }
        Ok(Err(e)) => Err(ConnectError::Unreachable(format!(
            "TLS handshake with {}: {e}",
            endpoint.addr
        ))),
    }
}

fn new_conn(io: UpstreamIo, key: PoolKey, resumed: Option<bool>) -> UpstreamConn {
    UpstreamConn {
        io,
        key,
        buffered: InBuffer::new(),
        reused: false,
        resumed,
        open: None,
    }
}
