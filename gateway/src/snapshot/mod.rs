//! The one meeting point of control plane and data plane: an immutable `Snapshot` of routes,
//! backends and ready-made upstream TLS contexts, built off the hot path after every admin
//! write and published atomically. Workers load it once per request; a request in flight
//! keeps the snapshot it started with.

// The publisher's caches are touched only while publishing, on the control plane; workers
// read the published snapshot through an ArcSwap.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::model::{Backend, Certificate, CredentialId, Resources};
use crate::tls::client;
use crate::upstream::{Endpoint, PoolKey, UpstreamTls};
use dns::Dns;

pub mod dns;

/// Where and how one API reaches its backend.
pub struct Target {
    pub backend_id: Arc<str>,
    /// `Host` header value sent upstream.
    pub authority: Arc<str>,
    pub base_path: String,
    /// The resolved address and pool key, or why the backend cannot be reached.
    pub endpoint: Result<Endpoint, String>,
    /// `None` for an `http://` backend.
    pub tls: Option<Arc<UpstreamTls>>,
    /// Id of the client certificate presented, or "none" (a metric label).
    pub certificate_id: Arc<str>,
}

pub struct Route {
    pub api_id: Arc<str>,
    pub path: String,
    pub target: Arc<Target>,
}

#[derive(Default)]
pub struct Snapshot {
    pub generation: u64,
    /// False until the first publish: the gateway has no configuration yet (the data plane
    /// answers 503 rather than 404 for every path).
    pub configured: bool,
    /// Longest path first, so the first match is the longest one.
    routes: Vec<Route>,
}

impl Snapshot {
    /// The API whose path is `path` or a prefix of it at a '/' boundary, longest first, and
    /// the rest of the path after the API's path.
    pub fn route<'s, 'p>(&'s self, path: &'p str) -> Option<(&'s Route, &'p str)> {
        self.routes.iter().find_map(|route| {
            if route.path == "/" {
                return Some((route, path));
            }
            let rest = path.strip_prefix(route.path.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((route, rest))
        })
    }
}

/// Builds snapshots from resources and publishes them. Keeps TLS contexts alive across
/// snapshots while their certificate and flags are unchanged, so pooled connections and
/// cached sessions stay valid for unrelated changes, and backend addresses for their DNS TTL
/// ([`dns`]).
pub struct Publisher {
    current: Arc<ArcSwap<Snapshot>>,
    contexts: Mutex<HashMap<ContextKey, Arc<UpstreamTls>>>,
    dns: Dns,
}

/// Identity of a TLS context: the credential's identity (the same one the pool and the
/// session store key by) and the validation flags. A re-upload of the same chain keeps its
/// context; another chain or certificate gets a new one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ContextKey {
    credential: Option<CredentialId>,
    validate_chain: bool,
    validate_name: bool,
}

impl Publisher {
    pub fn new() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            contexts: Mutex::default(),
            dns: Dns::system(),
        }
    }

    /// What workers read.
    pub fn handle(&self) -> Arc<ArcSwap<Snapshot>> {
        self.current.clone()
    }

    /// Builds the next snapshot from `resources`, makes it current and returns its
    /// generation (for the caller to record).
    pub fn publish(&self, resources: &Resources) -> u64 {
        let generation = self.current.load().generation + 1;
        // A poisoned lock only means an earlier publish panicked midway; the map is still a
        // valid cache.
        let mut cache = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        let mut used = HashMap::new();
        let mut routes = Vec::with_capacity(resources.apis.len());
        for api in resources.apis.values() {
            let Some(backend) = resources.backends.get(&api.backend_id) else {
                // The control plane refuses such APIs; skip rather than fail the whole snapshot.
                tracing::warn!(api = %api.id, "API names a missing backend; not routed");
                continue;
            };
            let certificate = resources
                .effective_credential(api)
                .and_then(|r| resources.find_certificate(r));
            let target = build_target(backend, certificate, &self.dns, &mut cache, &mut used);
            routes.push(Route {
                api_id: Arc::from(api.id.as_str()),
                path: api.path.clone(),
                target: Arc::new(target),
            });
        }
        *cache = used;
        drop(cache);
        routes.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| a.path.cmp(&b.path))
        });
        self.current.store(Arc::new(Snapshot {
            generation,
            configured: true,
            routes,
        }));
        tracing::info!(
            generation,
            apis = resources.apis.len(),
            "configuration published"
        );
        generation
    }

    /// Resolves again the names of the routed backends of `resources` (those `publish`
    /// looks up) whose DNS answer expired; call off the async thread. True when an address
    /// changed, so the caller publishes again.
    pub fn refresh_dns(&self, resources: &Resources) -> bool {
        let names = resources
            .apis
            .values()
            .filter_map(|api| resources.backends.get(&api.backend_id))
            .map(|b| (b.url.host.clone(), b.url.port))
            .collect();
        self.dns.refresh(&names)
    }
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new()
    }
}

fn build_target(
    backend: &Backend,
    certificate: Option<&Arc<Certificate>>,
    dns: &Dns,
    cache: &mut HashMap<ContextKey, Arc<UpstreamTls>>,
    used: &mut HashMap<ContextKey, Arc<UpstreamTls>>,
) -> Target {
    let url = &backend.url;
    let host: Arc<str> = Arc::from(url.host.as_str());
    let mut target = Target {
        backend_id: Arc::from(backend.id.as_str()),
        authority: Arc::from(authority(url)),
        base_path: url.base_path.clone(),
        endpoint: Err(String::new()),
        tls: None,
        certificate_id: Arc::from(certificate.map_or("none", |c| c.id.as_str())),
    };
    let credential: Option<CredentialId> = certificate.map(|c| c.credential);
    if url.tls {
        let key = ContextKey {
            credential,
            validate_chain: backend.validate_chain,
            validate_name: backend.validate_name,
        };
        let tls = match cache.remove(&key).or_else(|| used.get(&key).cloned()) {
            Some(tls) => Ok(tls),
            None => new_context(backend, certificate),
        };
        match tls {
            Ok(tls) => {
                used.insert(key, tls.clone());
                target.tls = Some(tls);
            }
            Err(e) => {
                tracing::error!(backend = %backend.id, error = %e, "backend unusable");
                target.endpoint = Err(e);
                return target;
            }
        }
    }
    target.endpoint = dns.lookup(&url.host, url.port).map(|addr| Endpoint {
        addr,
        host: host.clone(),
        key: PoolKey {
            addr,
            sni: url
                .tls
                .then(|| host.clone())
                .filter(|h| h.parse::<std::net::IpAddr>().is_err()),
            credential,
            validate_chain: backend.validate_chain,
            validate_name: backend.validate_name,
            tls: url.tls,
        },
    });
    if let Err(e) = &target.endpoint {
        tracing::warn!(backend = %backend.id, error = %e, "backend address does not resolve");
    }
    target
}

/// The `Host` header value of a backend: the host (IPv6 in brackets), with the port when it
/// is not the scheme's default.
fn authority(url: &crate::model::BackendUrl) -> String {
    let default_port = if url.tls { 443 } else { 80 };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    if url.port == default_port {
        host
    } else {
        format!("{host}:{}", url.port)
    }
}

/// A new client TLS context for a backend's flags and certificate.
fn new_context(
    backend: &Backend,
    certificate: Option<&Arc<Certificate>>,
) -> Result<Arc<UpstreamTls>, String> {
    let context = client::build_context(
        certificate.map(|c| c.as_ref()),
        backend.validate_chain,
        backend.validate_name,
    )
    .map_err(|e| format!("building the TLS context failed: {e}"))?;
    Ok(Arc::new(UpstreamTls {
        context,
        validate_name: backend.validate_name,
    }))
}

/// Appends the upstream path for a request: the backend's base path joined with the rest
/// after the API's path, query kept.
pub fn push_upstream_path(out: &mut Vec<u8>, base_path: &str, rest: &str, query: Option<&str>) {
    out.extend_from_slice(base_path.as_bytes());
    out.extend_from_slice(rest.as_bytes());
    if base_path.is_empty() && rest.is_empty() {
        out.push(b'/');
    }
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn snapshot(paths: &[&str]) -> Snapshot {
        let mut routes: Vec<Route> = paths
            .iter()
            .map(|p| Route {
                api_id: Arc::from(*p),
                path: p.to_string(),
                target: Arc::new(Target {
                    backend_id: Arc::from("b"),
                    authority: Arc::from("h"),
                    base_path: String::new(),
                    endpoint: Err(String::new()),
                    tls: None,
                    certificate_id: Arc::from("none"),
                }),
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        Snapshot {
            generation: 1,
            configured: true,
            routes,
        }
    }

    #[test]
    fn longest_path_wins_at_segment_boundaries() {
        let s = snapshot(&["/orders", "/orders/archive", "/"]);
        let hit = |p| {
            s.route(p)
                .map(|(r, rest)| (r.path.clone(), rest.to_string()))
        };
        assert_eq!(hit("/orders"), Some(("/orders".into(), "".into())));
        assert_eq!(hit("/orders/1"), Some(("/orders".into(), "/1".into())));
        assert_eq!(
            hit("/orders/archive/2"),
            Some(("/orders/archive".into(), "/2".into()))
        );
        assert_eq!(hit("/ordersx"), Some(("/".into(), "/ordersx".into())));
    }

    /// A re-upload of the same chain keeps its TLS context and pool key (so pooled
    /// connections and sessions stay usable); the same leaf with another chain is another
    /// credential: a new context and a new pool key, never sharing sessions.
    #[test]
    fn one_context_and_pool_key_per_credential_identity() {
        use crate::model::certificate::tests::Fixtures;
        use crate::model::certificate::{certificate_from_parts, parse_pkcs12};
        use crate::model::{Api, CertificateRef, ResourceId};
        let id = |s: &str| ResourceId::parse(s).unwrap();
        let f = Fixtures::new();
        let first = parse_pkcs12(id("c1"), &f.read("chain.p12"), "").unwrap();
        let again = parse_pkcs12(id("c1"), &f.read("chain.p12"), "").unwrap();
        let leaf_only =
            certificate_from_parts(id("c1"), first.leaf.clone(), vec![], first.key.clone())
                .unwrap();
        assert_eq!(first.credential, again.credential);
        assert_eq!(first.info.thumbprint, leaf_only.info.thumbprint);
        assert_ne!(first.credential, leaf_only.credential);

        let mut resources = Resources::default();
        let backend = Backend::new(
            id("b1"),
            "https://127.0.0.1:9",
            false,
            false,
            Some(CertificateRef::Id(id("c1"))),
        )
        .unwrap();
        resources.backends.insert(id("b1"), backend);
        resources
            .apis
            .insert(id("a1"), Api::new(id("a1"), "/a", "b1").unwrap());
        let publisher = Publisher::new();
        let mut publish = |cert: &Certificate| {
            let cert = certificate_from_parts(
                id("c1"),
                cert.leaf.clone(),
                cert.chain.clone(),
                cert.key.clone(),
            )
            .unwrap();
            resources.certificates.insert(id("c1"), Arc::new(cert));
            publisher.publish(&resources);
            let snapshot = publisher.handle().load_full();
            let (route, _) = snapshot.route("/a").unwrap();
            let target = &route.target;
            let tls = target.tls.clone().unwrap();
            let key = target.endpoint.as_ref().unwrap().key.clone();
            (tls, key)
        };
        let (tls1, key1) = publish(&first);
        let (tls2, key2) = publish(&again);
        let (tls3, key3) = publish(&leaf_only);
        assert!(Arc::ptr_eq(&tls1, &tls2), "a re-upload keeps the context");
        assert_eq!(key1, key2);
        assert!(
            !Arc::ptr_eq(&tls2, &tls3),
            "another chain gets its own context"
        );
        assert_ne!(key2, key3);
    }

    #[test]
    fn no_route_without_a_matching_prefix() {
        let s = snapshot(&["/orders"]);
        assert!(s.route("/order").is_none());
        assert!(s.route("/ordersx/1").is_none());
    }

    #[test]
    fn upstream_path_joins_base_rest_and_query() {
        let upstream_path = |base: &str, rest: &str, query: Option<&str>| {
            let mut out = b"GET ".to_vec();
            push_upstream_path(&mut out, base, rest, query);
            String::from_utf8(out[4..].to_vec()).unwrap()
        };
        assert_eq!(upstream_path("/base", "/1", Some("x=1")), "/base/1?x=1");
        assert_eq!(upstream_path("", "", None), "/");
        assert_eq!(upstream_path("/base", "", None), "/base");
        assert_eq!(upstream_path("", "/a", None), "/a");
    }
}
