//! The leaf every I/O layer shares: the input buffer that reads from a peer grow into, and
//! the two async byte traits (`ByteSource`, `ByteSink`) that TLS streams and upstream
//! connections implement. It imports nothing from the crate, so the HTTP codec
//! (`dataplane::http`) and the upstream pool (`upstream`) can both use it without importing
//! each other.

use std::io;

/// Something bytes can be read from (a TLS stream, an upstream connection).
#[allow(async_fn_in_trait)]
pub trait ByteSource {
    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// Something bytes can be written to.
#[allow(async_fn_in_trait)]
pub trait ByteSink {
    async fn send(&mut self, data: &[u8]) -> io::Result<()>;
}

/// Read buffers start small (a connection that only carries heads needs little, and an idle
/// one holds none at all) and double, up to the maximum, whenever a read fills them (bodies
/// then stream in large reads).
const MIN_BUFFER: usize = 4 * 1024;
const MAX_BUFFER: usize = 64 * 1024;

/// Bytes read from a peer and not yet consumed.
#[derive(Default)]
pub struct InBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled all the free space: grow before the next one.
    grow: bool,
}

impl InBuffer {
    pub fn new() -> Self {
        Self::default()
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

    /// Gives the memory back while nothing is pending (a connection waiting for its next
    /// request then holds no read buffer).
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
            self.grow = false;
        }
    }

    /// Reads more from `source`, appending; returns how many bytes came (0: peer closed).
    pub async fn fill<S: ByteSource>(&mut self, source: &mut S) -> io::Result<usize> {
        if self.start > 0 && self.end == self.buf.len() {
            // Make room: move unconsumed bytes to the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() || (self.grow && self.buf.len() < MAX_BUFFER) {
            let size = (self.buf.len() * 2).clamp(MIN_BUFFER, MAX_BUFFER);
            if size == self.buf.len() {
                return Err(io::Error::other("read buffer full"));
            }
            self.buf.resize(size, 0);
        }
        let space = self.buf.len() - self.end;
        let n = source.read_some(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.grow = n == space;
        Ok(n)
    }
}
