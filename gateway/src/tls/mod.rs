//! BoringSSL for both sides: the downstream acceptor with its ticket keys, upstream client
//! contexts, and the adapter that runs TLS over monoio's owned-buffer socket calls.

pub mod client;
pub mod server;
pub mod stream;
pub mod tickets;
