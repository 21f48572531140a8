//! `PollTls`: the client's TLS connection driven poll-style (tokio's `AsyncRead` and
//! `AsyncWrite`), which is what the `h2` crate reads and writes through.
//!
//! Why monoio's `poll-io` feature (`TcpStream::try_into_poll_io`) rather than
//! `monoio-compat`: the TLS state stays the one the handshake built (`TlsStream` over
//! in-memory buffers, `tls::stream`), and only the socket calls change, from owned-buffer
//! operations to readiness-based `recv`/`send` on the same worker's event loop (with
//! io_uring, monoio polls an epoll instance through the ring; with the epoll driver it is
//! the driver's own). No second crate and no second runtime; `monoio-compat` would wrap the
//! owned-buffer calls in boxed futures and copy every read and write once more through its
//! own buffers, and it needs a type implementing monoio's `AsyncReadRent`/`AsyncWriteRent`,
//! which the TLS stream is not. The cost: an HTTP/2 connection does readiness I/O rather
//! than completion I/O; HTTP/1.1 connections are untouched (their sockets never convert).
//!
//! Writes are encrypted into the send buffer and leave on `poll_flush` (h2 flushes after
//! every batch of frames); `poll_write` stops taking more while `WRITE_HIGH_WATER` bytes are
//! unsent, so a client that does not read cannot grow it without bound.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use boring::ssl::{ErrorCode, SslStream};
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::stream::{MemoryTransport, TlsError, TlsStream, TLS_RECV_BUFFER};

/// Unsent ciphertext past which `poll_write` first sends what it has.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Plaintext taken by one `poll_write` (four maximum TLS records).
const WRITE_CHUNK: usize = 64 * 1024;

pub(in crate::dataplane) struct PollTls {
    tcp: TcpStreamPoll,
    ssl: SslStream<MemoryTransport>,
    /// Bytes of the send buffer already sent.
    sent: usize,
    shutdown_started: bool,
}

impl PollTls {
    /// Takes over a connection whose handshake is done and that has no read in flight.
    pub(in crate::dataplane) fn new(tls: TlsStream) -> io::Result<Self> {
        let (tcp, ssl) = tls.into_parts()?;
        let tcp = tcp.try_into_poll_io().map_err(|(e, _)| e)?;
        Ok(Self {
            tcp,
            ssl,
            sent: 0,
            shutdown_started: false,
        })
    }

    /// Sends the send buffer; ready once it is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Self { tcp, ssl, sent, .. } = self;
        let out = &mut ssl.get_mut().outgoing;
        while *sent < out.len() {
            let n = ready!(Pin::new(&mut *tcp).poll_write(cx, &out[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        out.clear();
        *sent = 0;
        Poll::Ready(Ok(()))
    }

    fn unsent(&mut self) -> usize {
        self.ssl.get_mut().outgoing.len() - self.sent
    }

    /// Reads more ciphertext from the socket into the receive buffer (see `TlsStream::fill`).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Self { tcp, ssl, .. } = self;
        let t = ssl.get_mut();
        if t.eof {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        t.incoming.drain(..t.read_pos);
        t.read_pos = 0;
        if !t.incoming.is_empty() {
            return Poll::Ready(Ok(()));
        }
        t.incoming.resize(TLS_RECV_BUFFER, 0);
        let mut buf = ReadBuf::new(&mut t.incoming);
        let read = Pin::new(&mut *tcp).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        t.incoming.truncate(if matches!(read, Poll::Ready(Ok(()))) {
            n
        } else {
            0
        });
        ready!(read)?;
        if n == 0 {
            t.eof = true;
        }
        Poll::Ready(Ok(()))
    }
}

fn ssl_error(e: boring::ssl::Error) -> io::Error {
    TlsError::Ssl(e).into()
}

impl AsyncRead for PollTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.ssl.ssl_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Poll::Ready(Ok(())),
                // TCP closed without close_notify: end of input; h2 judges what it missed.
                Err(e) if e.code() == ErrorCode::SYSCALL && this.ssl.get_ref().eof => {
                    return Poll::Ready(Ok(()))
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => {
                    // Whatever BoringSSL wrote on the way (a key update) goes out, but a full
                    // socket send buffer must not stop reading.
                    if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    ready!(this.poll_fill(cx))?;
                }
                Err(e) if e.code() == ErrorCode::WANT_WRITE => ready!(this.poll_send(cx))?,
                Err(e) => {
                    // A fatal alert may be waiting in the send buffer: try to deliver it.
                    let _ = this.poll_send(cx);
                    return Poll::Ready(Err(ssl_error(e)));
                }
            }
        }
    }
}

impl AsyncWrite for PollTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.unsent() >= WRITE_HIGH_WATER {
            ready!(this.poll_send(cx))?;
        }
        let take = data.len().min(WRITE_CHUNK);
        // The memory transport never blocks, so any error here is fatal.
        let n = this.ssl.ssl_write(&data[..take]).map_err(ssl_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.shutdown_started {
            this.shutdown_started = true;
            // close_notify, best effort.
            let _ = this.ssl.shutdown();
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
