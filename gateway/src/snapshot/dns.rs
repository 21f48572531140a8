//! Backend addresses for the snapshot: each name is resolved once and kept until its DNS
//! TTL runs out, then resolved again in the background ([`Dns::refresh`], driven by the
//! control plane every [`CHECK_EVERY`]), so a write that does not touch a backend never
//! waits on its DNS, and an address that moves is followed without an admin write.
//!
//! Names go to hickory-resolver (configured from /etc/resolv.conf, answering /etc/hosts
//! names too), which reports each answer's TTL. When it has no answer (no resolv.conf, a
//! name only another nsswitch source knows), getaddrinfo(3) is asked, and since it reports
//! no TTL its answer is kept for [`FALLBACK_TTL`]. IP literals are not resolved. TTLs are
//! clamped to [`MIN_TTL`, `MAX_TTL`]: a zero TTL must not mean a lookup per publish, and
//! /etc/hosts answers carry a day. All of it runs on control-plane threads (a writer's
//! blocking thread or the refresh task), never on a worker or the async thread.

// Control plane only (see the module header): a blocking lock is fine here.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};

/// How often the control plane asks for expired names to be resolved again.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bounds on how long an answer is kept, whatever its TTL.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// How long a getaddrinfo answer is kept (it reports no TTL).
pub const FALLBACK_TTL: Duration = Duration::from_secs(30);
/// After a failed refresh the last good address is kept and tried again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A backend's name: host and port.
pub type Name = (String, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resolved {
    addr: SocketAddr,
    /// `None` for an IP literal: nothing to resolve again.
    expires: Option<Instant>,
}

/// The address cache and the resolver behind it.
pub struct Dns {
    /// `None` when the system configuration could not be read: getaddrinfo only.
    client: Option<hickory_resolver::Resolver>,
    cache: Mutex<HashMap<Name, Resolved>>,
}

impl Dns {
    /// A resolver configured like the system's (/etc/resolv.conf, /etc/hosts).
    pub fn system() -> Self {
        let client = match hickory_resolver::Resolver::from_system_conf() {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::info!(error = %e, "no DNS client configuration; backend names use getaddrinfo, kept 30 s");
                None
            }
        };
        Self {
            client,
            cache: Mutex::default(),
        }
    }

    /// A resolver that asks only the DNS server at `server` (UDP), without /etc/hosts.
    pub fn with_server(server: SocketAddr) -> std::io::Result<Self> {
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
        let mut options = ResolverOpts::default();
        options.use_hosts_file = false;
        options.timeout = Duration::from_secs(2);
        options.attempts = 1;
        Ok(Self {
            client: Some(hickory_resolver::Resolver::new(config, options)?),
            cache: Mutex::default(),
        })
    }

    /// The address of `host:port`: the cached one while its TTL lasts, else a fresh answer.
    /// Failures are not cached: the next publish or refresh tries again.
    pub fn lookup(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        let key = (host.to_owned(), port);
        let now = Instant::now();
        if let Some(hit) = self.lock().get(&key).filter(|r| !expired(r, now)) {
            return Ok(hit.addr);
        }
        // Resolved without the lock held: a slow answer delays only this publish.
        let resolved = self.resolve(host, port, now)?;
        self.lock().insert(key, resolved);
        Ok(resolved.addr)
    }

    /// Resolves again every name of `names` whose answer expired or that has none yet, and
    /// forgets names not in `names`; true when an address changed or a name resolved for the
    /// first time (the caller publishes again). A name that fails keeps its last address.
    pub fn refresh(&self, names: &BTreeSet<Name>) -> bool {
        let now = Instant::now();
        let due: Vec<Name> = {
            let mut cache = self.lock();
            cache.retain(|name, _| names.contains(name));
            names
                .iter()
                .filter(|n| cache.get(*n).is_none_or(|r| expired(r, now)))
                .cloned()
                .collect()
        };
        let mut changed = false;
        for (host, port) in due {
            let fresh = self.resolve(&host, port, now);
            let mut cache = self.lock();
            let key = (host, port);
            match (fresh, cache.get_mut(&key)) {
                (Ok(fresh), Some(old)) => {
                    changed |= old.addr != fresh.addr;
                    *old = fresh;
                }
                (Ok(fresh), None) => {
                    changed = true;
                    cache.insert(key, fresh);
                }
                (Err(e), Some(old)) => {
                    tracing::warn!(host = %key.0, error = %e, "backend name does not resolve; keeping its last address");
                    old.expires = Some(now + RETRY_AFTER);
                }
                (Err(e), None) => {
                    tracing::warn!(host = %key.0, error = %e, "backend name does not resolve");
                }
            }
        }
        changed
    }

    fn resolve(&self, host: &str, port: u16, now: Instant) -> Result<Resolved, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Resolved {
                addr: SocketAddr::new(ip, port),
                expires: None,
            });
        }
        if let Some(client) = &self.client {
            if let Ok(answer) = client.lookup_ip(host) {
                if let Some(ip) = answer.iter().next() {
                    let ttl = answer
                        .valid_until()
                        .saturating_duration_since(now)
                        .clamp(MIN_TTL, MAX_TTL);
                    return Ok(Resolved {
                        addr: SocketAddr::new(ip, port),
                        expires: Some(now + ttl),
                    });
                }
            }
        }
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(Resolved {
            addr,
            expires: Some(now + FALLBACK_TTL),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Name, Resolved>> {
        // A poisoned lock only means a panic midway through an insert: the map is valid.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(super) fn cached(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.lock().get(&(host.to_owned(), port)).map(|r| r.addr)
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

fn expired(r: &Resolved, now: Instant) -> bool {
    r.expires.is_some_and(|at| at <= now)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::{Message, MessageType};
    use hickory_resolver::proto::rr::{rdata::A, RData, Record, RecordType};
    use std::net::{Ipv4Addr, UdpSocket};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A real DNS server on loopback (UDP, messages encoded by hickory-proto) that answers
    /// every A query with the address and TTL the test sets.
    struct TestServer {
        addr: SocketAddr,
        answer: Arc<AtomicU32>,
        ttl: Arc<AtomicU32>,
        queries: Arc<AtomicU32>,
    }

    impl TestServer {
        fn start(ip: Ipv4Addr, ttl: u32) -> Self {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = socket.local_addr().unwrap();
            let answer = Arc::new(AtomicU32::new(u32::from(ip)));
            let ttl = Arc::new(AtomicU32::new(ttl));
            let queries = Arc::new(AtomicU32::new(0));
            let (a, t, q) = (answer.clone(), ttl.clone(), queries.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let mut reply = Message::new();
                    reply
                        .set_id(query.id())
                        .set_message_type(MessageType::Response)
                        .set_recursion_available(true);
                    for question in query.queries() {
                        reply.add_query(question.clone());
                        if question.query_type() == RecordType::A {
                            q.fetch_add(1, Ordering::SeqCst);
                            let ip = Ipv4Addr::from(a.load(Ordering::SeqCst));
                            reply.add_answer(Record::from_rdata(
                                question.name().clone(),
                                t.load(Ordering::SeqCst),
                                RData::A(A(ip)),
                            ));
                        }
                    }
                    let _ = socket.send_to(&reply.to_vec().unwrap(), peer);
                }
            });
            Self {
                addr,
                answer,
                ttl,
                queries,
            }
        }
    }

    fn names(list: &[(&str, u16)]) -> BTreeSet<Name> {
        list.iter().map(|(h, p)| (h.to_string(), *p)).collect()
    }

    /// An answer is kept for its TTL (no query while it lasts), then resolved again by the
    /// refresh, which reports the moved address; a long TTL is clamped to MAX_TTL.
    #[test]
    fn answers_are_kept_for_their_ttl_and_refreshed_after_it() {
        let server = TestServer::start(Ipv4Addr::new(127, 0, 0, 2), 1);
        let dns = Dns::with_server(server.addr).unwrap();
        let first = dns.lookup("svc.edgegw.test.", 443).unwrap();
        assert_eq!(first, "127.0.0.2:443".parse().unwrap());
        let asked = server.queries.load(Ordering::SeqCst);
        assert_eq!(dns.lookup("svc.edgegw.test.", 443).unwrap(), first);
        let wanted = names(&[("svc.edgegw.test.", 443)]);
        assert!(!dns.refresh(&wanted), "within the TTL nothing is due");
        assert_eq!(
            server.queries.load(Ordering::SeqCst),
            asked,
            "no query within the TTL"
        );

        server
            .answer
            .store(u32::from(Ipv4Addr::new(127, 0, 0, 3)), Ordering::SeqCst);
        server.ttl.store(86_400, Ordering::SeqCst);
        // The 1 s TTL runs out; the refresh then finds the new address (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dns.refresh(&wanted) {
            assert!(
                Instant::now() < deadline,
                "the refresh never saw the new address"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            dns.cached("svc.edgegw.test.", 443),
            Some("127.0.0.3:443".parse().unwrap())
        );
        let expires = dns.lock()[&("svc.edgegw.test.".to_owned(), 443)]
            .expires
            .unwrap();
        assert!(
            expires <= Instant::now() + MAX_TTL,
            "a day's TTL is clamped"
        );

        dns.refresh(&BTreeSet::new());
        assert!(dns.is_empty(), "names no backend uses leave the cache");
    }

    #[test]
    fn literals_need_no_resolver_and_failures_are_errors() {
        let server = TestServer::start(Ipv4Addr::new(127, 0, 0, 2), 1);
        let dns = Dns::with_server(server.addr).unwrap();
        assert_eq!(
            dns.lookup("::1", 8443).unwrap(),
            "[::1]:8443".parse().unwrap()
        );
        assert_eq!(server.queries.load(Ordering::SeqCst), 0);
        let e = dns.lookup("no such name", 443).unwrap_err();
        assert!(e.contains("no such name"), "{e}");
    }
}
