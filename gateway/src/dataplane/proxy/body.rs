//! One message body streamed from a peer to the other as it arrives, by its framing
//! (length, chunked, until close), within a read timeout per read, a minimum average rate
//! and a size limit.

use std::time::{Duration, Instant};

use crate::buffer::{ByteSink, ByteSource, InBuffer};
use crate::dataplane::http::{ChunkedScanner, Framing};

#[derive(Debug)]
pub(super) enum BodyError {
    /// The side the body comes from failed or ended early.
    Source(String),
    /// The side the body comes from was too slow (`BodyLimits`).
    Timeout,
    /// The body is longer than `BodyLimits::max_len` (chunked; a declared length is
    /// checked before the body is read).
    TooLarge,
    /// The side the body goes to failed.
    Sink(String),
}

/// How long and how large a body may be.
#[derive(Clone, Copy, Debug)]
pub(super) struct BodyLimits {
    /// The longest wait for the next bytes.
    pub(super) read_timeout: Duration,
    /// Bytes per second the body must average once it has run for `read_timeout` (0: no
    /// check). A deadline that moves with every byte received: `start + read_timeout +
    /// received / min_rate` (Apache's `mod_reqtimeout` rule), so a steady sender is never
    /// cut and a trickle is.
    pub(super) min_rate: u64,
    /// Most decoded body bytes (0: no limit).
    pub(super) max_len: u64,
}

impl BodyLimits {
    /// How long the next read may wait, after `received` bytes since `started`.
    fn next_wait(&self, started: Instant, received: u64) -> Duration {
        if self.min_rate == 0 {
            return self.read_timeout;
        }
        let allowed =
            self.read_timeout + Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        let deadline = started + allowed;
        deadline
            .saturating_duration_since(Instant::now())
            .min(self.read_timeout)
    }
}

/// Streams one message body from `buf`/`source` to `sink`, as it arrives.
pub(super) async fn forward_body<S: ByteSource, D: ByteSink>(
    buf: &mut InBuffer,
    source: &mut S,
    sink: &mut D,
    framing: Framing,
    limits: BodyLimits,
) -> Result<(), BodyError> {
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut scanner = ChunkedScanner::default();
    let started = Instant::now();
    let mut received = buf.data().len() as u64;
    loop {
        if buf.is_empty() {
            let wait = limits.next_wait(started, received);
            let n = match monoio::time::timeout(wait, buf.fill(source)).await {
                Err(_) => return Err(BodyError::Timeout),
                Ok(Err(e)) => return Err(BodyError::Source(e.to_string())),
                Ok(Ok(n)) => n,
            };
            received += n as u64;
            if n == 0 {
                return if framing == Framing::UntilClose {
                    Ok(())
                } else {
                    Err(BodyError::Source(
                        "connection closed before the body ended".into(),
                    ))
                };
            }
        }
        let data = buf.data();
        let (take, done) = match framing {
            Framing::Length(_) => {
                let take = (remaining.min(data.len() as u64)) as usize;
                remaining -= take as u64;
                (take, remaining == 0)
            }
            Framing::Chunked => {
                let take = scanner
                    .scan(data)
                    .map_err(|e| BodyError::Source(e.0.into()))?;
                if limits.max_len > 0 && scanner.data_len() > limits.max_len {
                    return Err(BodyError::TooLarge);
                }
                (take, scanner.is_done())
            }
            Framing::UntilClose => (data.len(), false),
            Framing::Empty => (0, true),
        };
        sink.send(&data[..take])
            .await
            .map_err(|e| BodyError::Sink(e.to_string()))?;
        buf.consume(take);
        if done {
            return Ok(());
        }
    }
}

/// Why the first chunk-size line of a body could not be checked.
#[derive(Debug)]
pub(super) enum FirstChunkError {
    Invalid(&'static str),
    /// The peer closed or failed before the line was in.
    Closed,
    Timeout,
}

/// Reads into `buf` until it holds the first chunk-size line of a chunked body, and checks
/// that line. Lets the proxy refuse a body broken from its first byte before it passes on
/// the head that announces it, either way.
pub(super) async fn first_chunk_line<S: ByteSource>(
    buf: &mut InBuffer,
    source: &mut S,
    wait: Duration,
) -> Result<(), FirstChunkError> {
    loop {
        let mut scanner = ChunkedScanner::default();
        let data = buf.data();
        // Scan only up to the first line end: the rest is streamed (and checked) later.
        let line = data
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data, |end| &data[..=end]);
        scanner
            .scan(line)
            .map_err(|e| FirstChunkError::Invalid(e.0))?;
        if scanner.past_first_size_line() {
            return Ok(());
        }
        match monoio::time::timeout(wait, buf.fill(source)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(FirstChunkError::Closed),
            Err(_) => return Err(FirstChunkError::Timeout),
        }
    }
}
