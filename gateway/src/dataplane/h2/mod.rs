//! HTTP/2 to clients (ALPN `h2`, `listener.alpn`), on the same monoio worker as the
//! connection's HTTP/1.1 sibling: [`io`] drives the TLS connection poll-style for the `h2`
//! crate, [`serve`] accepts its streams and runs each through the proxy's stages, as one
//! request to the backend over a pooled HTTP/1.1 connection.

pub(in crate::dataplane) mod io;
pub(in crate::dataplane) mod serve;

#[cfg(test)]
mod tests;
