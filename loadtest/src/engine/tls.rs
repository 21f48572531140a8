//! BoringSSL over the engine's sockets. BoringSSL reads and writes an in-memory transport
//! ([`MemIo`]); this adapter moves its bytes to and from the socket with owned-buffer
//! operations (io_uring submissions under tokio-uring), so the TLS state machine never
//! touches a file descriptor. Buffers are reused for the connection's life.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;

use boring::ssl::{ErrorCode, HandshakeError, Ssl, SslRef, SslStream, SslStreamBuilder};

use super::net::TcpStream;

/// Socket reads go into a buffer of this size: a whole TLS record and its header.
const READ_SIZE: usize = 16 * 1024 + 512;

/// What BoringSSL reads from and writes to: the bytes received and not yet consumed, and
/// the bytes it produced and this adapter has not sent yet.
#[derive(Default)]
struct MemIo {
    incoming: Vec<u8>,
    consumed: usize,
    /// The peer closed its side: reads past `incoming` are end of stream.
    eof: bool,
    outgoing: Vec<u8>,
}

impl Read for MemIo {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = &self.incoming[self.consumed..];
        if available.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consumed += n;
        if self.consumed == self.incoming.len() {
            self.incoming.clear();
            self.consumed = 0;
        }
        Ok(n)
    }
}

impl Write for MemIo {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket side of a TLS connection: the socket and its read buffer, lent to each read.
struct Wire {
    tcp: TcpStream,
    read_buf: Vec<u8>,
}

impl Wire {
    /// Sends what BoringSSL has written.
    async fn send(&mut self, io: &mut MemIo) -> io::Result<()> {
        if io.outgoing.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut io.outgoing);
        let (result, mut out) = self.tcp.write_all(out).await;
        out.clear();
        io.outgoing = out;
        result
    }

    /// One socket read into BoringSSL's input; 0 at end of stream.
    async fn receive(&mut self, io: &mut MemIo) -> io::Result<usize> {
        let buf = std::mem::take(&mut self.read_buf);
        let (result, buf) = self.tcp.read(buf).await;
        let n = match result {
            Ok(0) => {
                io.eof = true;
                0
            }
            Ok(n) => {
                io.incoming.extend_from_slice(&buf[..n]);
                n
            }
            Err(e) => {
                self.read_buf = buf;
                return Err(e);
            }
        };
        self.read_buf = buf;
        Ok(n)
    }
}

/// A TLS connection on an engine socket.
pub struct TlsStream {
    tls: SslStream<MemIo>,
    wire: Wire,
}

fn tls_error(e: boring::ssl::Error) -> io::Error {
    match e.into_io_error() {
        Ok(io) => io,
        Err(e) => io::Error::other(e),
    }
}

impl TlsStream {
    /// The client side: the handshake, with whatever `ssl` was set up with (SNI, session).
    pub async fn connect(tcp: TcpStream, ssl: Ssl) -> io::Result<TlsStream> {
        let mut builder = SslStreamBuilder::new(ssl, MemIo::default());
        builder.set_connect_state();
        Self::handshake(tcp, builder).await
    }

    /// The server side.
    pub async fn accept(tcp: TcpStream, ssl: Ssl) -> io::Result<TlsStream> {
        let mut builder = SslStreamBuilder::new(ssl, MemIo::default());
        builder.set_accept_state();
        Self::handshake(tcp, builder).await
    }

    async fn handshake(tcp: TcpStream, builder: SslStreamBuilder<MemIo>) -> io::Result<TlsStream> {
        let mut wire = Wire {
            tcp,
            read_buf: Vec::with_capacity(READ_SIZE),
        };
        let mut attempt = builder.handshake();
        loop {
            match attempt {
                Ok(mut tls) => {
                    wire.send(tls.get_mut()).await?;
                    return Ok(TlsStream { tls, wire });
                }
                Err(HandshakeError::WouldBlock(mut mid)) => {
                    wire.send(mid.get_mut()).await?;
                    if mid.error().code() == ErrorCode::WANT_READ
                        && wire.receive(mid.get_mut()).await? == 0
                    {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    attempt = mid.handshake();
                }
                Err(HandshakeError::Failure(mut mid)) => {
                    // An alert BoringSSL queued (e.g. a refused certificate) still goes out.
                    let _ = wire.send(mid.get_mut()).await;
                    let e = mid.into_error();
                    return Err(tls_error(e));
                }
                Err(HandshakeError::SetupFailure(e)) => return Err(io::Error::other(e)),
            }
        }
    }

    pub fn ssl(&self) -> &SslRef {
        self.tls.ssl()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.wire.tcp.raw_fd()
    }

    /// Decrypted bytes into `out`; 0 when the peer closed (with or without close_notify).
    pub async fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.ssl_read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(0),
                Err(e) if e.code() == ErrorCode::WANT_READ => {
                    // Reading may have produced something to send (a key update's answer).
                    self.wire.send(self.tls.get_mut()).await?;
                    self.wire.receive(self.tls.get_mut()).await?;
                }
                Err(e) if e.code() == ErrorCode::SYSCALL && self.tls.get_ref().eof => return Ok(0),
                Err(e) => return Err(tls_error(e)),
            }
        }
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.tls.ssl_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.code() == ErrorCode::WANT_READ => {
                    self.wire.send(self.tls.get_mut()).await?;
                    if self.wire.receive(self.tls.get_mut()).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(tls_error(e)),
            }
        }
        self.wire.send(self.tls.get_mut()).await
    }

    /// Sends close_notify and a FIN (best effort: the peer may be gone).
    pub async fn shutdown(&mut self) {
        let _ = self.tls.shutdown();
        let _ = self.wire.send(self.tls.get_mut()).await;
        let _ = self.wire.tcp.shutdown_write();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn memio_reads_what_arrived_then_would_block_then_eof() {
        let mut io = MemIo::default();
        let mut out = [0u8; 4];
        assert_eq!(
            io.read(&mut out).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        io.incoming.extend_from_slice(b"abcdef");
        assert_eq!(io.read(&mut out).unwrap(), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(io.read(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], b"ef");
        assert!(io.incoming.is_empty(), "consumed input is dropped");
        io.eof = true;
        assert_eq!(io.read(&mut out).unwrap(), 0);
        io.write_all(b"xy").unwrap();
        assert_eq!(io.outgoing, b"xy");
    }
}
