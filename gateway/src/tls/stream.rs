//! `TlsStream`: BoringSSL over a monoio socket without giving up owned-buffer I/O.
//!
//! No crate joins monoio and boring, and boring's `SslStream` wants a blocking `Read + Write`.
//! So BoringSSL here talks to two in-memory buffers (`MemoryTransport`), and every byte that
//! crosses the socket moves through monoio's owned-buffer calls (io_uring where available).
//! A read hands our receive buffer to the kernel and BoringSSL decrypts from it; a write lets
//! BoringSSL encrypt into the send buffer, which goes to the kernel in one call. The buffers
//! are reused for the life of the connection, so the steady state allocates nothing.
//!
//! The socket is split into its read and write halves (monoio's `Splitable`), so that a
//! read can be left in flight while the connection is idle (`arm_read`): the upstream pool
//! arms one on every pooled connection, and that one read both tells when the backend closed
//! an idle connection (it completes) and receives the next response (no extra operation).

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use boring::ssl::{ErrorCode, Ssl, SslRef, SslStream};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;

use crate::buffer::{ByteSink, ByteSource};

/// Receive buffer size: one maximum TLS record plus its header and overhead.
const RECV_BUFFER: usize = 16 * 1024 + 512;

/// BoringSSL's side of the connection: ciphertext in, ciphertext out. Public for the
/// poll-based driver of an HTTP/2 connection (`dataplane::h2::io`), which moves the same
/// buffers with poll-style socket calls (`TlsStream::into_parts`).
pub struct MemoryTransport {
    /// Ciphertext read from the socket; BoringSSL has taken it up to `read_pos`.
    pub incoming: Vec<u8>,
    pub read_pos: usize,
    /// Ciphertext BoringSSL wrote, not yet sent.
    pub outgoing: Vec<u8>,
    /// The peer closed its side of the TCP connection.
    pub eof: bool,
}

/// Receive buffer size of a connection (one maximum TLS record and its overhead).
pub const TLS_RECV_BUFFER: usize = RECV_BUFFER;

impl Read for MemoryTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = &self.incoming[self.read_pos..];
        if available.is_empty() {
            if self.eof {
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.read_pos += n;
        Ok(n)
    }
}

impl Write for MemoryTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a TLS operation failed.
#[derive(Debug)]
pub enum TlsError {
    /// The socket failed (reset, broken pipe, ...).
    Io(io::Error),
    /// The peer closed the TCP connection in the middle of the handshake or a record.
    UnexpectedEof,
    /// BoringSSL refused: the error stack says why (no key material is ever in it).
    Ssl(boring::ssl::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Io(e) => write!(f, "socket error: {e}"),
            TlsError::UnexpectedEof => f.write_str("peer closed the connection unexpectedly"),
            TlsError::Ssl(e) => write!(f, "TLS error: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    /// The TLS error inside an `io::Error` made from one (see `From<TlsError>`).
    pub fn of(e: &io::Error) -> Option<&TlsError> {
        e.get_ref()?.downcast_ref::<TlsError>()
    }
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> Self {
        match e {
            TlsError::Io(e) => e,
            TlsError::UnexpectedEof => io::ErrorKind::UnexpectedEof.into(),
            // The error itself, not its text: a caller finds BoringSSL's reason codes again
            // with `TlsError::of`.
            e @ TlsError::Ssl(_) => io::Error::other(e),
        }
    }
}

/// A socket read left in flight: it owns the read half and the receive buffer, and gives
/// both back when it completes.
type ArmedRead =
    Pin<Box<dyn Future<Output = (OwnedReadHalf<TcpStream>, BufResult<usize, Vec<u8>>)>>>;

/// The read half: ready for the next read, with one read in flight (`arm_read`), or with
/// that read completed but not yet handed to BoringSSL (`armed_read_completed`).
enum Reader {
    Ready(OwnedReadHalf<TcpStream>),
    Armed(ArmedRead),
    Completed(OwnedReadHalf<TcpStream>, BufResult<usize, Vec<u8>>),
}

/// A TLS connection over a monoio TCP socket.
pub struct TlsStream {
    /// `None` only for the moment a read is being armed or collected.
    reader: Option<Reader>,
    writer: OwnedWriteHalf<TcpStream>,
    fd: RawFd,
    ssl: SslStream<MemoryTransport>,
    is_server: bool,
}

impl TlsStream {
    fn new(tcp: TcpStream, ssl: Ssl, is_server: bool) -> Result<Self, TlsError> {
        let transport = MemoryTransport {
            incoming: Vec::with_capacity(RECV_BUFFER),
            read_pos: 0,
            // Grows to what the connection writes; small answers never touch much of it.
            outgoing: Vec::new(),
            eof: false,
        };
        let ssl = SslStream::new(ssl, transport)
            .map_err(|e| TlsError::Io(io::Error::other(e.to_string())))?;
        let fd = tcp.as_raw_fd();
        let (reader, writer) = tcp.into_split();
        Ok(Self {
            reader: Some(Reader::Ready(reader)),
            writer,
            fd,
            ssl,
            is_server,
        })
    }

    /// Runs the server side of the handshake.
    pub async fn accept(tcp: TcpStream, ssl: Ssl) -> Result<Self, TlsError> {
        let mut stream = Self::new(tcp, ssl, true)?;
        stream.handshake().await?;
        Ok(stream)
    }

    /// A client connection whose handshake has not run yet (`ssl` carries SNI, session and
    /// verification). Call `handshake`; on failure the stream still tells why (`ssl()`).
    pub fn client(tcp: TcpStream, ssl: Ssl) -> Result<Self, TlsError> {
        Self::new(tcp, ssl, false)
    }

    pub async fn handshake(&mut self) -> Result<(), TlsError> {
        loop {
            // SSL_accept / SSL_connect set the role on first call and resume afterwards.
            let step = if self.is_server {
                self.ssl.accept()
            } else {
                self.ssl.connect()
            };
            match step {
                Ok(()) => return self.flush().await,
                Err(e) => self.wait_for(e).await?,
            }
        }
    }

    /// Does what BoringSSL asked for before it can go on: send what it wrote, and read more.
    async fn wait_for(&mut self, e: boring::ssl::Error) -> Result<(), TlsError> {
        match e.code() {
            ErrorCode::WANT_READ => {
                self.flush().await?;
                self.fill().await
            }
            ErrorCode::WANT_WRITE => self.flush().await,
            ErrorCode::SYSCALL if self.ssl.get_ref().eof => Err(TlsError::UnexpectedEof),
            _ => {
                // A fatal alert for the peer may be waiting in the send buffer: try to deliver it.
                let _ = self.flush().await;
                Err(TlsError::Ssl(e))
            }
        }
    }

    /// Sends everything BoringSSL has written so far.
    async fn flush(&mut self) -> Result<(), TlsError> {
        let transport = self.ssl.get_mut();
        if transport.outgoing.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut transport.outgoing);
        let (result, mut buf) = self.writer.write_all(buf).await;
        buf.clear();
        self.ssl.get_mut().outgoing = buf;
        result.map(|_| ()).map_err(TlsError::Io)
    }

    /// Reads more ciphertext from the socket. BoringSSL only asks for more once it has taken
    /// everything buffered, so the receive buffer is empty and can be handed to the kernel whole.
    async fn fill(&mut self) -> Result<(), TlsError> {
        let transport = self.ssl.get_mut();
        if transport.eof {
            return Err(TlsError::UnexpectedEof);
        }
        // Keep any unread bytes (defensive: the invariant above says there are none).
        transport.incoming.drain(..transport.read_pos);
        transport.read_pos = 0;
        if !transport.incoming.is_empty() {
            return Ok(());
        }
        let (reader, (result, buf)) = match self.reader.take() {
            Some(Reader::Armed(read)) => read.await,
            Some(Reader::Completed(reader, done)) => (reader, done),
            Some(Reader::Ready(mut reader)) => {
                let buf = std::mem::take(&mut transport.incoming);
                let done = reader.read(buf).await;
                (reader, done)
            }
            None => return Err(TlsError::Io(io::Error::other("TLS read side lost"))),
        };
        self.reader = Some(Reader::Ready(reader));
        let transport = self.ssl.get_mut();
        transport.incoming = buf;
        match result {
            Ok(0) => {
                transport.eof = true;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(TlsError::Io(e)),
        }
    }

    /// Reads decrypted bytes; `Ok(0)` means the peer closed the connection cleanly
    /// (close_notify) or, after a complete record, closed TCP.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, TlsError> {
        loop {
            match self.ssl.ssl_read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(0),
                Err(e) if e.code() == ErrorCode::SYSCALL && self.ssl.get_ref().eof => {
                    // TCP closed without close_notify: many servers do this; the HTTP layer
                    // decides whether the message was complete.
                    return Ok(0);
                }
                Err(e) => self.wait_for(e).await?,
            }
        }
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.buffer_write(data)?;
        self.flush().await
    }

    /// Encrypts `data` into the send buffer without sending it yet; `flush_writes` sends.
    /// Lets a caller join a response head and body into one socket write.
    pub fn buffer_write(&mut self, mut data: &[u8]) -> Result<(), TlsError> {
        while !data.is_empty() {
            match self.ssl.ssl_write(data) {
                Ok(n) => data = &data[n..],
                // The memory transport never blocks, so any error here is fatal.
                Err(e) => return Err(TlsError::Ssl(e)),
            }
        }
        Ok(())
    }

    /// Sends whatever `buffer_write` queued.
    pub async fn flush_writes(&mut self) -> Result<(), TlsError> {
        self.flush().await
    }

    /// Sends close_notify (best effort) and closes the socket.
    pub async fn shutdown(mut self) {
        let _ = self.ssl.shutdown();
        let _ = self.flush().await;
    }

    /// Decrypted bytes BoringSSL already holds, or ciphertext not yet processed.
    pub fn has_buffered_input(&self) -> bool {
        let t = self.ssl.get_ref();
        self.ssl.ssl().pending() > 0 || t.read_pos < t.incoming.len()
    }

    /// Starts the next socket read now and leaves it in flight: for a connection that waits
    /// idle for its next use. The next `read` (through `fill`) collects it, so arming costs
    /// no extra operation. Does nothing when a read is already armed, when bytes are still
    /// buffered (they are read first), or after the peer closed.
    pub fn arm_read(&mut self) {
        let transport = self.ssl.get_mut();
        if transport.eof || transport.read_pos < transport.incoming.len() {
            return;
        }
        let Some(Reader::Ready(mut reader)) = self.reader.take() else {
            return;
        };
        let mut buf = std::mem::take(&mut transport.incoming);
        buf.clear();
        transport.read_pos = 0;
        self.reader = Some(Reader::Armed(Box::pin(async move {
            let done = reader.read(buf).await;
            (reader, done)
        })));
        // An async block runs nothing until polled: poll it once now so the read is really
        // submitted (io_uring) or registered (epoll) while the connection is idle.
        self.armed_read_completed();
    }

    /// For an armed connection: whether its read has completed (the peer sent something or
    /// closed while the connection was idle). Polls the read once without waiting; a
    /// completed read stays collected for the next `read`. `false` when nothing is armed.
    pub fn armed_read_completed(&mut self) -> bool {
        let read = match self.reader.as_mut() {
            Some(Reader::Armed(read)) => read,
            Some(Reader::Completed(..)) => return true,
            _ => return false,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match read.as_mut().poll(&mut cx) {
            Poll::Pending => false,
            Poll::Ready((reader, done)) => {
                // Keep the result: `fill` hands it to BoringSSL like any other read.
                self.reader = Some(Reader::Completed(reader, done));
                true
            }
        }
    }

    /// Whether a read was armed (`arm_read`) and not yet collected by `read`.
    pub fn read_armed(&self) -> bool {
        matches!(self.reader, Some(Reader::Armed(_) | Reader::Completed(..)))
    }

    pub fn ssl(&self) -> &SslRef {
        self.ssl.ssl()
    }

    pub fn ssl_mut(&mut self) -> &mut SslRef {
        self.ssl.ssl_mut()
    }

    /// The socket, whole again, and the TLS state over its memory buffers: for a driver
    /// that does its socket I/O poll-style (HTTP/2, `dataplane::h2::io`). Fails while a
    /// read is armed (`arm_read`): the socket must have no operation in flight.
    pub fn into_parts(mut self) -> Result<(TcpStream, SslStream<MemoryTransport>), TlsError> {
        let Some(Reader::Ready(reader)) = self.reader.take() else {
            return Err(TlsError::Io(io::Error::other(
                "a socket read is in flight on this TLS connection",
            )));
        };
        let tcp = reader
            .reunite(self.writer)
            .map_err(|_| TlsError::Io(io::Error::other("the socket halves do not match")))?;
        Ok((tcp, self.ssl))
    }

    /// The socket's descriptor (for poll(2) and shutdown(2); the stream keeps owning it).
    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl ByteSource for TlsStream {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.read(buf).await?)
    }
}

impl ByteSink for TlsStream {
    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        Ok(self.write_all(data).await?)
    }
}
