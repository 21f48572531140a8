//! The one meeting point of control plane and data plane: an immutable `Snapshot` of routes,
//! backends and ready-made upstream TLS contexts, built off the hot path after every admin
//! write and published atomically. Workers load it once per request; a request in flight
//! keeps the snapshot it started with.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::model::{Backend, Certificate, Resources, Thumbprint};
use crate::tls::client;
use crate::upstream::{Endpoint, PoolKey, UpstreamTls};

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
    /// Longest path first, so the first match is the longest one.
    routes: Vec<Route>,
}

impl Snapshot {
    /// The API whose path is `path` or a prefix of it at a '/' boundary, longest first, and
    /// the rest of the path after the API's path.
    pub fn route<'a>(&'a self, path: &'a str) -> Option<(&'a Route, &'a str)> {
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
/// cached sessions stay valid for unrelated changes.
pub struct Publisher {
    current: Arc<ArcSwap<Snapshot>>,
    contexts: Mutex<HashMap<ContextKey, Arc<UpstreamTls>>>,
}

/// Identity of a TLS context: the certificate object itself (a re-upload is a new object)
/// and the validation flags.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ContextKey {
    certificate: Option<usize>,
    validate_chain: bool,
    validate_name: bool,
}

impl Publisher {
    pub fn new() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            contexts: Mutex::default(),
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
            let target = build_target(backend, certificate, &mut cache, &mut used);
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
        self.current
            .store(Arc::new(Snapshot { generation, routes }));
        tracing::info!(
            generation,
            apis = resources.apis.len(),
            "configuration published"
        );
        generation
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
    cache: &mut HashMap<ContextKey, Arc<UpstreamTls>>,
    used: &mut HashMap<ContextKey, Arc<UpstreamTls>>,
) -> Target {
    let url = &backend.url;
    let host: Arc<str> = Arc::from(url.host.as_str());
    let default_port = if url.tls { 443 } else { 80 };
    let host_in_header = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let authority = if url.port == default_port {
        host_in_header
    } else {
        format!("{host_in_header}:{}", url.port)
    };
    let mut target = Target {
        backend_id: Arc::from(backend.id.as_str()),
        authority: Arc::from(authority),
        base_path: url.base_path.clone(),
        endpoint: Err(String::new()),
        tls: None,
        certificate_id: Arc::from(certificate.map_or("none", |c| c.id.as_str())),
    };
    let thumbprint: Option<Thumbprint> = certificate.map(|c| c.info.thumbprint);
    if url.tls {
        let key = ContextKey {
            certificate: certificate.map(|c| Arc::as_ptr(c) as usize),
            validate_chain: backend.validate_chain,
            validate_name: backend.validate_name,
        };
        let tls = match cache.remove(&key).or_else(|| used.get(&key).cloned()) {
            Some(tls) => Ok(tls),
            None => client::build_context(
                certificate.map(|c| c.as_ref()),
                backend.validate_chain,
                backend.validate_name,
            )
            .map(|context| {
                Arc::new(UpstreamTls {
                    context,
                    validate_name: backend.validate_name,
                })
            })
            .map_err(|e| format!("building the TLS context failed: {e}")),
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
    target.endpoint = resolve(&url.host, url.port).map(|addr| Endpoint {
        addr,
        host: host.clone(),
        key: PoolKey {
            addr,
            sni: url
                .tls
                .then(|| host.clone())
                .filter(|h| h.parse::<std::net::IpAddr>().is_err()),
            thumbprint,
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

/// Resolves once, on the control plane, so no worker ever blocks on DNS.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
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
