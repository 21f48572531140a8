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

/// A free TCP port on 127.0.0.1, never one this process was handed before, and below the
/// kernel's ephemeral range. Below it, because a port from that range (what a bind to port 0
/// returns) can be taken as the source port of any outgoing connection between the pick and
/// the server's own bind: CI runs failed that way ("listener.address ... Address already in
/// use", with load tests opening thousands of connections meanwhile). Never one handed out
/// before, because ports picked one after the other (a server's listener, admin and metrics
/// addresses) must differ. Where the ephemeral range starts too low to leave room, the
/// kernel's pick (port 0) is used as before.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 12000;
    if ephemeral_low > LOW + 1000 {
        let span = u64::from(ephemeral_low - LOW);
        // A random walk start per call, so that processes picking at once rarely collide.
        let start = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        for i in 0..span {
            let port = LOW + ((start.wrapping_add(i * 7919)) % span) as u16;
            if handed.contains(&port) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed.push(port);
                return Ok(port);
            }
        }
    }
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        drop(l);
        if !handed.contains(&port) {
            handed.push(port);
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod free_port_tests {
    use super::free_port;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok());
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in &ports {
            if let Some(low) = low.filter(|l| *l > 13000) {
                assert!(*p < low, "port {p} is in the ephemeral range from {low}");
            }
            std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap();
        }
    }
}
