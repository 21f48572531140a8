//! One message body streamed from a peer to the other as it arrives, by its framing
//! (length, chunked, until close), within a read timeout per read.

use std::time::Duration;

use crate::buffer::{ByteSink, ByteSource, InBuffer};
use crate::dataplane::http::{ChunkedScanner, Framing};

#[derive(Debug)]
pub(super) enum BodyError {
    /// The side the body comes from failed or ended early.
    Source(String),
    /// The side the body goes to failed.
    Sink(String),
}

/// Streams one message body from `buf`/`source` to `sink`, as it arrives.
pub(super) async fn forward_body<S: ByteSource, D: ByteSink>(
    buf: &mut InBuffer,
    source: &mut S,
    sink: &mut D,
    framing: Framing,
    read_timeout: Duration,
) -> Result<(), BodyError> {
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut scanner = ChunkedScanner::default();
    loop {
        if buf.is_empty() {
            let n = match monoio::time::timeout(read_timeout, buf.fill(source)).await {
                Err(_) => return Err(BodyError::Source("timed out".into())),
                Ok(Err(e)) => return Err(BodyError::Source(e.to_string())),
                Ok(Ok(n)) => n,
            };
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
