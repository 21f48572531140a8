//! The control socket `data_dir/edgegw.sock` and the restart handover spoken on it.
//!
//! A new edgegw started on the same configuration while the old one runs finds
//! `listener.address` taken and asks the old one, over this socket, to hand over:
//!
//! ```text
//! new -> old   HANDOVER 1 <listener.address>
//! old          stops its admin and metrics servers, closes the store
//! old -> new   RELEASED [<ticket keys>]      (or REFUSED <why>)
//! new          opens the store, binds admin/metrics, binds its workers' listeners into the
//!              same SO_REUSEPORT group, starts its workers, attaches its eBPF program
//!              (which from then on selects only the new listeners)
//! new -> old   JOINED
//! old -> new   DRAINING
//! old          shuts its listeners down (queued connections migrate to the new ones),
//!              finishes in-flight requests within server.shutdown_grace, exits 0
//! ```
//!
//! The optional argument of `RELEASED` is the old process's session-ticket keys (base64 of
//! `TicketKeys::export`): the new one issues and accepts the same tickets, so no client pays
//! a full handshake because of a restart. The socket is the user's alone (mode 0600, in the
//! data dir beside the master key), and the keys cross it once.
//!
//! If the new process goes away before `JOINED`, the old one takes the store and the
//! admin/metrics ports back and carries on. The same socket takes one-line operator
//! commands (`STATUS`, `WORKER <n> OUT|IN`; see `super::Control::command`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::Control;
use crate::secret::Secret;

pub const SOCKET_FILE: &str = "edgegw.sock";
const PROTOCOL: &str = "1";
/// How long the new process waits for the old one to release the store and ports.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a command line may take to arrive.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

// ------------------------------------------------------------------ the new process

/// A handover in progress, from the new process's side.
pub struct Takeover {
    reader: BufReader<UnixStream>,
    /// The old process's session-ticket keys, when it sent them.
    ticket_keys: Option<Secret<Vec<u8>>>,
}

/// Asks the edgegw answering on `path` to hand `listen` over. Returns once it has released
/// the store and the admin/metrics ports; `Err` says why not (nobody answers, refused).
pub fn request(path: &Path, listen: SocketAddr) -> Result<Takeover, String> {
    let stream = UnixStream::connect(path)
        .map_err(|e| format!("no edgegw answered on {} ({e})", path.display()))?;
    stream
        .set_read_timeout(Some(RELEASE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    writeln!(reader.get_mut(), "HANDOVER {PROTOCOL} {listen}")
        .map_err(|e| format!("writing to {}: {e}", path.display()))?;
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("the edgegw on {} did not answer: {e}", path.display()))?;
    let answer = Secret::new(line);
    let mut words = answer.expose().split_whitespace();
    match words.next().unwrap_or("") {
        "RELEASED" => {
            let ticket_keys = words
                .next()
                .and_then(|w| BASE64.decode(w).ok())
                .map(Secret::new);
            Ok(Takeover {
                reader,
                ticket_keys,
            })
        }
        "" => Err(format!(
            "the edgegw on {} closed the handover",
            path.display()
        )),
        _ => Err(format!(
            "the edgegw on {} refused the handover: {}",
            path.display(),
            answer.expose().trim()
        )),
    }
}

impl Takeover {
    /// The old process's session-ticket keys (see the module documentation).
    pub fn ticket_keys(&self) -> Option<&[u8]> {
        self.ticket_keys.as_ref().map(|k| k.expose().as_slice())
    }

    /// Tells the old process that this one serves now; waits (briefly) for its answer.
    pub fn joined(mut self) -> Result<(), String> {
        writeln!(self.reader.get_mut(), "JOINED").map_err(|e| e.to_string())?;
        let _ = self.reader.get_ref().set_read_timeout(Some(LINE_TIMEOUT));
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        match line.trim() {
            "DRAINING" => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

// ------------------------------------------------------------------ the old process

/// The control socket, served on the control-plane runtime. Dropped (the process exits,
/// cleanly or with an error), it removes its file, unless the file is no longer its own (a
/// new edgegw that took over has bound its socket at the same path).
pub struct ControlSocket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    /// The socket file's device and inode, as bound.
    identity: Option<(u64, u64)>,
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if self.identity.is_some() && file_identity(&self.path) == self.identity {
            match std::fs::remove_file(&self.path) {
                Ok(()) => tracing::debug!(path = %self.path.display(), "control socket removed"),
                Err(e) => {
                    tracing::warn!(error = %e, path = %self.path.display(), "cannot remove the control socket")
                }
            }
        }
    }
}

/// A handover request accepted by this (old) process.
pub struct Incoming {
    reader: tokio::io::BufReader<tokio::net::UnixStream>,
}

impl ControlSocket {
    /// Binds the socket (replacing a stale file; callers make sure no live edgegw uses
    /// it). Must be called inside the tokio runtime.
    pub fn bind(path: &Path) -> std::io::Result<ControlSocket> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(path)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            identity: file_identity(path),
        })
    }

    /// Serves operator commands until a valid handover request for `listen` arrives.
    pub async fn next_handover(&self, listen: SocketAddr, control: &Arc<Control>) -> Incoming {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, path = %self.path.display(), "control socket accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut reader = tokio::io::BufReader::new(stream);
            let mut line = String::new();
            match tokio::time::timeout(LINE_TIMEOUT, reader.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => continue,
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let answer = match words.as_slice() {
                ["HANDOVER", PROTOCOL, addr] if *addr == listen.to_string() => {
                    tracing::info!("handover requested by a new edgegw: releasing the store and the admin/metrics ports");
                    return Incoming { reader };
                }
                ["HANDOVER", PROTOCOL, addr] => {
                    format!("REFUSED this edgegw listens on {listen}, not {addr}")
                }
                ["HANDOVER", version, ..] => {
                    format!("REFUSED handover protocol {version} is not {PROTOCOL}")
                }
                _ => control.command(&line),
            };
            let _ = reader
                .get_mut()
                .write_all(format!("{answer}\n").as_bytes())
                .await;
        }
    }
}

impl Incoming {
    /// The store and ports are free: tell the new process, and give it the session-ticket
    /// keys (`TicketKeys::export`'s bytes).
    pub async fn released(&mut self, ticket_keys: &[u8]) -> std::io::Result<()> {
        let line = Secret::new(format!("RELEASED {}\n", BASE64.encode(ticket_keys)));
        self.reader
            .get_mut()
            .write_all(line.expose().as_bytes())
            .await
    }

    /// Waits for `JOINED` (true) or the new process giving up (false).
    pub async fn wait_joined(&mut self, timeout: Duration) -> bool {
        let mut line = String::new();
        match tokio::time::timeout(timeout, self.reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => line.trim() == "JOINED",
            _ => false,
        }
    }

    pub async fn draining(mut self) {
        let _ = self.reader.get_mut().write_all(b"DRAINING\n").await;
    }
}
