//! Sockets of the running loop's kind: io_uring operations with owned buffers (tokio-uring),
//! or tokio's readiness-based sockets. Both are driven through one owned-buffer interface
//! (a buffer goes in, comes back with the result), so callers are written once.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use super::{current, Driver};

pub enum TcpStream {
    Uring(tokio_uring::net::TcpStream),
    Tokio(tokio::net::TcpStream),
}

impl TcpStream {
    /// Connects with the running loop's kind of socket.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = match current() {
            Driver::IoUring => TcpStream::Uring(tokio_uring::net::TcpStream::connect(addr).await?),
            Driver::Tokio => TcpStream::Tokio(tokio::net::TcpStream::connect(addr).await?),
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            TcpStream::Uring(s) => s.set_nodelay(on),
            TcpStream::Tokio(s) => s.set_nodelay(on),
        }
    }

    /// Reads into `buf` from its start (whatever it held is dropped); `buf.len()` is then
    /// what arrived (0: the peer closed). Reads at most `buf.capacity()` bytes.
    pub async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        buf.clear();
        match self {
            TcpStream::Uring(s) => s.read(buf).await,
            TcpStream::Tokio(s) => {
                let cap = buf.capacity();
                buf.resize(cap, 0);
                let r = read_ready(s, &mut buf).await;
                buf.truncate(*r.as_ref().unwrap_or(&0));
                (r, buf)
            }
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            TcpStream::Uring(s) => s.write_all(buf).await,
            TcpStream::Tokio(s) => {
                let r = write_ready(s, &buf).await;
                (r, buf)
            }
        }
    }

    /// Half-closes the sending side (FIN).
    pub fn shutdown_write(&self) -> io::Result<()> {
        let fd = self.raw_fd();
        // SAFETY: shutdown(2) on a descriptor this value owns; no memory is involved.
        if unsafe { libc::shutdown(fd, libc::SHUT_WR) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            TcpStream::Uring(s) => s.as_raw_fd(),
            TcpStream::Tokio(s) => s.as_raw_fd(),
        }
    }
}

/// One read on a readiness-based socket: waits until readable, then `read(2)`.
async fn read_ready(s: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// All of `data` on a readiness-based socket.
async fn write_ready(s: &tokio::net::TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        s.writable().await?;
        match s.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub enum TcpListener {
    Uring(tokio_uring::net::TcpListener),
    Tokio(tokio::net::TcpListener),
}

impl TcpListener {
    /// Adopts a bound, listening, non-blocking std listener for the running loop.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(match current() {
            Driver::IoUring => {
                TcpListener::Uring(tokio_uring::net::TcpListener::from_std(listener))
            }
            Driver::Tokio => {
                listener.set_nonblocking(true)?;
                TcpListener::Tokio(tokio::net::TcpListener::from_std(listener)?)
            }
        })
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = match self {
            TcpListener::Uring(l) => {
                let (s, a) = l.accept().await?;
                (TcpStream::Uring(s), a)
            }
            TcpListener::Tokio(l) => {
                let (s, a) = l.accept().await?;
                (TcpStream::Tokio(s), a)
            }
        };
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}
