//! Test support shared by the gateway's unit tests, the e2e suite (`tests/`) and loadtest's
//! harness, so that each of them stops carrying its own copy:
//!
//! - [`openssl`]: running the openssl CLI, with errors that say what failed and why;
//! - [`pki`]: one test PKI generator (keys, self-signed and CA-signed certificates, PKCS#12
//!   bundles in OpenSSL 3's default and `-legacy` forms, and the deliberately bad bundles);
//! - [`temp_dir`]: temporary directories (removed on drop);
//! - [`nginx`]: one nginx config writer (nginx as an mTLS backend or as a TLS proxy);
//! - [`edgegw`]: one edgegw config writer;
//! - [`etcd`]: a real etcd on loopback (one member, or a cluster) for fleet mode, with
//!   reads, writes and compaction through etcd's JSON API.
//!
//! Everything returns `Result<_, String>` (`etcd`: `io::Result`, as it runs processes and
//! sockets): loadtest reports the error to its user, tests `.expect()` it.

pub mod edgegw;
pub mod etcd;
pub mod nginx;
pub mod openssl;
pub mod pki;

pub use edgegw::{EdgegwConfig, StoreSettings};
pub use etcd::{Etcd, EtcdCluster};
pub use nginx::NginxConfig;
pub use pki::{Cert, KeyType, Pki, P12};
pub use tempfile::TempDir;

/// A fresh temporary directory named `edgegw-TAG-…` (the tag says in `/tmp` whose it is).
pub fn temp_dir(tag: &str) -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix(&format!("edgegw-{tag}-"))
        .tempdir()
        .map_err(|e| {
            format!(
                "creating a temporary directory in {}: {e}",
                std::env::temp_dir().display()
            )
        })
}

/// A free TCP port on 127.0.0.1, never one this process was handed before: the kernel may
/// give the same ephemeral port to two binds in a row once the first is closed, and ports
/// picked one after the other (a server's listener, admin and metrics addresses) must
/// differ (a CI run once got `admin.address` equal to `listener.address`).
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        drop(l);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if !handed.contains(&port) {
            handed.push(port);
            return Ok(port);
        }
    }
}
