//! The one meeting point of control plane and data plane: an immutable `Snapshot` of routes,
//! backends and ready-made upstream TLS contexts, built off the hot path after every admin
//! write and published atomically. Workers load it once per request; a request in flight
//! keeps the snapshot it started with.

// The publisher's caches are touched only while publishing, on the control plane; workers
// read the published snapshot through an ArcSwap.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use boring::x509::X509;

use crate::config::ClientCertificates;
use crate::model::ca::CaCertificate;
use crate::model::client_rule::ClientCertificateRule;
use crate::model::{Backend, BackendTrust, Certificate, CredentialId, ResourceId, Resources};
use crate::tls::client;
use crate::tls::server::ClientTrust;
use crate::upstream::{Endpoint, PoolKey, TrustId, UpstreamTls};
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
    /// The API policy's `<validate-client-certificate>`, if it has one.
    pub client_rule: Option<Arc<ClientCertificateRule>>,
}

#[derive(Default)]
pub struct Snapshot {
    pub generation: u64,
    /// False until the first publish: the gateway has no configuration yet (the data plane
    /// answers 503 rather than 404 for every path).
    pub configured: bool,
    /// Every route by its API path. A lookup tries the request path's own prefixes at '/'
    /// boundaries, longest first (one hash lookup per segment), so its cost does not grow
    /// with the number of APIs.
    routes: Routes,
    /// The CAs callers' certificates are verified against (`listener.client_ca_ids`), when
    /// the listener asks for certificates.
    pub client_trust: Option<Arc<ClientTrust>>,
}

impl Snapshot {
    /// The API whose path is `path` or a prefix of it at a '/' boundary, longest first, and
    /// the rest of the path after the API's path.
    pub fn route<'s, 'p>(&'s self, path: &'p str) -> Option<(&'s Route, &'p str)> {
        // Cut points: the whole path, then before each '/', right to left. A prefix cut
        // there leaves a rest that is empty or starts with '/', exactly the boundary rule.
        let cuts = std::iter::once(path.len()).chain(
            path.bytes()
                .enumerate()
                .rev()
                .filter(|&(i, b)| b == b'/' && i > 0)
                .map(|(i, _)| i),
        );
        for cut in cuts {
            let prefix = &path[..cut];
            if prefix == "/" {
                continue; // the root route is the fallback below, with the whole path
            }
            if let Some(route) = self.routes.get(prefix) {
                return Some((route, &path[cut..]));
            }
        }
        // "/" is every path's prefix; its rest is the whole path.
        self.routes.get("/").map(|route| (route, path))
    }
}

/// Routes by API path; of two APIs with the same path (the admin API refuses that), the one
/// with the smaller id wins, as the ids are visited in order.
#[derive(Default)]
struct Routes(HashMap<String, Route>);

impl Routes {
    fn get(&self, path: &str) -> Option<&Route> {
        self.0.get(path)
    }

    fn from_sorted(routes: impl IntoIterator<Item = Route>) -> Routes {
        let mut map = HashMap::new();
        for route in routes {
            map.entry(route.path.clone()).or_insert(route);
        }
        Routes(map)
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
    /// `listener.client_certificates` and `listener.client_ca_ids`.
    client_certificates: ClientCertificates,
    client_ca_ids: Vec<ResourceId>,
}

/// Identity of a TLS context: the credential's identity (the same one the pool and the
/// session store key by) and the validation flags. A re-upload of the same chain keeps its
/// context; another chain or certificate gets a new one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ContextKey {
    credential: Option<CredentialId>,
    validate_chain: bool,
    validate_name: bool,
    trust: Option<Arc<TrustId>>,
}

impl Publisher {
    pub fn new() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            contexts: Mutex::default(),
            dns: Dns::system(),
            client_certificates: ClientCertificates::Off,
            client_ca_ids: Vec::new(),
        }
    }

    /// Whether callers are asked for a certificate, and the CA certificate resources it is
    /// verified against (each publish takes their current content).
    #[must_use]
    pub fn with_client_certificates(
        mut self,
        mode: ClientCertificates,
        ca_ids: Vec<ResourceId>,
    ) -> Self {
        self.client_certificates = mode;
        self.client_ca_ids = ca_ids;
        self
    }

    /// The trust for callers' certificates from the current CA certificates; a CA that is
    /// not (yet) uploaded is left out, with a warning.
    fn client_trust(&self, resources: &Resources) -> Option<Arc<ClientTrust>> {
        if self.client_certificates == ClientCertificates::Off {
            return None;
        }
        let mut cas = Vec::with_capacity(self.client_ca_ids.len());
        for id in &self.client_ca_ids {
            match resources.ca_certificates.get(id) {
                Some(ca) => cas.push((&ca.digest, ca.certificates.as_slice())),
                None => {
                    tracing::warn!(ca = %id, "listener.client_ca_ids names a CA certificate that does not exist; callers' certificates are not verified against it")
                }
            }
        }
        match ClientTrust::new(self.client_certificates, &cas) {
            Ok(trust) => Some(Arc::new(trust)),
            Err(e) => {
                // Only a failed allocation gets here; an empty store trusts no caller.
                tracing::error!(error = %e, "building the client-certificate trust store failed");
                ClientTrust::new(self.client_certificates, &[])
                    .ok()
                    .map(Arc::new)
            }
        }
    }

    /// What workers read.
    pub fn handle(&self) -> Arc<ArcSwap<Snapshot>> {
        self.current.clone()
    }

    /// Builds the next snapshot from `resources`, makes it current and returns its
    /// generation (for the caller to record). The time it took, from the start of the build
    /// to the snapshot being current, goes to `edgegw_snapshot_publish_duration_seconds`.
    pub fn publish(&self, resources: &Resources) -> u64 {
        let started = std::time::Instant::now();
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
            let target = build_target(
                backend,
                certificate,
                &resources.ca_certificates,
                &self.dns,
                &mut cache,
                &mut used,
            );
            routes.push(Route {
                api_id: Arc::from(api.id.as_str()),
                path: api.path.clone(),
                target: Arc::new(target),
                client_rule: api
                    .policy
                    .as_ref()
                    .and_then(|p| p.client_certificate.clone())
                    .map(Arc::new),
            });
        }
        *cache = used;
        drop(cache);
        self.current.store(Arc::new(Snapshot {
            generation,
            configured: true,
            routes: Routes::from_sorted(routes),
            client_trust: self.client_trust(resources),
        }));
        let took = started.elapsed();
        crate::metrics::record_snapshot_publish(took);
        tracing::info!(
            generation,
            apis = resources.apis.len(),
            took_us = took.as_micros() as u64,
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

/// A backend's trust identity and its anchors (`None`: the system store).
type ResolvedTrust = (Arc<TrustId>, Option<Vec<X509>>);

/// A backend's trust settings resolved against the CA certificates: their identity and the
/// anchors (`None`: the system store). `Ok(None)` when the backend has none; an error names
/// a CA certificate that does not exist.
fn resolve_trust(
    backend: &Backend,
    cas: &BTreeMap<ResourceId, Arc<CaCertificate>>,
) -> Result<Option<ResolvedTrust>, String> {
    let trust = &backend.trust;
    if *trust == BackendTrust::default() {
        return Ok(None);
    }
    let mut digests = Vec::with_capacity(trust.ca_ids.len());
    let mut anchors = Vec::new();
    for id in &trust.ca_ids {
        let ca = cas
            .get(id)
            .ok_or_else(|| format!("the trusted CA certificate {id} does not exist"))?;
        digests.push(ca.digest);
        anchors.extend(ca.certificates.iter().cloned());
    }
    let id = TrustId {
        anchors: digests,
        server_names: trust.server_names.clone(),
        pins: trust.pins.clone(),
    };
    Ok(Some((
        Arc::new(id),
        (!trust.ca_ids.is_empty()).then_some(anchors),
    )))
}

fn build_target(
    backend: &Backend,
    certificate: Option<&Arc<Certificate>>,
    cas: &BTreeMap<ResourceId, Arc<CaCertificate>>,
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
    let resolved = match resolve_trust(backend, cas) {
        Ok(resolved) => resolved,
        Err(e) => {
            tracing::error!(backend = %backend.id, error = %e, "backend unusable");
            target.endpoint = Err(e);
            return target;
        }
    };
    let trust = resolved.as_ref().map(|(id, _)| id.clone());
    if url.tls {
        let key = ContextKey {
            credential,
            validate_chain: backend.validate_chain,
            validate_name: backend.validate_name,
            trust: trust.clone(),
        };
        let tls = match cache.remove(&key).or_else(|| used.get(&key).cloned()) {
            Some(tls) => Ok(tls),
            None => new_context(
                backend,
                certificate,
                resolved.and_then(|(_, anchors)| anchors),
            ),
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
            trust,
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

/// A new client TLS context for a backend's flags, trust settings and certificate.
fn new_context(
    backend: &Backend,
    certificate: Option<&Arc<Certificate>>,
    anchors: Option<Vec<X509>>,
) -> Result<Arc<UpstreamTls>, String> {
    let verification = client::Verification {
        validate_chain: backend.validate_chain,
        validate_name: backend.validate_name,
        anchors,
        pins: backend.trust.pins.clone(),
    };
    let context = client::build_context(certificate.map(|c| c.as_ref()), &verification)
        .map_err(|e| format!("building the TLS context failed: {e}"))?;
    Ok(Arc::new(UpstreamTls {
        context,
        validate_name: backend.validate_name,
        server_names: backend.trust.server_names.clone(),
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
        let routes: Vec<Route> = paths
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
                client_rule: None,
            })
            .collect();
        Snapshot {
            generation: 1,
            configured: true,
            routes: Routes::from_sorted(routes),
            client_trust: None,
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

    /// The indexed lookup answers exactly as a scan of every route, longest path first (the
    /// lookup it replaced), for paths at and around every boundary.
    #[test]
    fn indexed_lookup_agrees_with_a_scan_of_every_route() {
        let paths = ["/", "/a", "/a/b", "/a/b/", "/ab", "/c/", "/c/d/e", "/x/y"];
        let s = snapshot(&paths);
        let mut by_length: Vec<&str> = paths.to_vec();
        by_length.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let scan = |path: &str| -> Option<(String, String)> {
            by_length.iter().find_map(|route| {
                if *route == "/" {
                    return Some((route.to_string(), path.to_string()));
                }
                let rest = path.strip_prefix(route)?;
                (rest.is_empty() || rest.starts_with('/'))
                    .then(|| (route.to_string(), rest.to_string()))
            })
        };
        let requests = [
            "/", "//", "//a", "/a", "/a/", "/a//", "/a/b", "/a/b/", "/a/b//", "/a/b/c", "/a/bc",
            "/ab", "/ab/", "/abc", "/c", "/c/", "/c//d", "/c/d", "/c/d/e", "/c/d/e/f", "/c/d/ef",
            "/x", "/x/y/z", "/x/yz", "/zzz",
        ];
        for request in requests {
            let got = s
                .route(request)
                .map(|(r, rest)| (r.path.clone(), rest.to_string()));
            assert_eq!(got, scan(request), "request {request:?}");
        }
        let without_root = snapshot(&["/a", "/c/"]);
        assert!(without_root.route("/b").is_none());
        assert!(without_root.route("/").is_none());
        assert_eq!(
            without_root.route("/c/").map(|(r, _)| r.path.as_str()),
            Some("/c/")
        );
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

    /// A backend's trust settings are part of its context and pool key: the same CA
    /// content keeps both (a re-upload of the same file), another CA under the same id
    /// changes both, and a CA that is gone makes the backend unusable rather than trusted
    /// by the system store.
    #[test]
    fn trust_settings_key_the_context_and_the_pool() {
        use crate::model::ca::parse_ca_certificate;
        use crate::model::{Api, BackendTrust};
        use testkit::{Cert, KeyType};
        let id = |s: &str| ResourceId::parse(s).unwrap();
        let pki = testkit::Pki::new("snapshot-trust").unwrap();
        pki.self_signed("ca-a", &Cert::ca("/CN=A", KeyType::P256))
            .unwrap();
        pki.self_signed("ca-b", &Cert::ca("/CN=B", KeyType::P256))
            .unwrap();
        let ca = |file: &str| {
            Arc::new(parse_ca_certificate(id("ca1"), &pki.read(file).unwrap()).unwrap())
        };
        let mut resources = Resources::default();
        let backend = Backend::new(id("b1"), "https://127.0.0.1:9", true, true, None)
            .unwrap()
            .with_trust(BackendTrust {
                ca_ids: vec![id("ca1")],
                ..BackendTrust::default()
            })
            .unwrap();
        resources.backends.insert(id("b1"), backend);
        resources
            .apis
            .insert(id("a1"), Api::new(id("a1"), "/a", "b1").unwrap());
        let publisher = Publisher::new();
        let mut publish = |file: Option<&str>| {
            match file {
                Some(file) => resources.ca_certificates.insert(id("ca1"), ca(file)),
                None => resources.ca_certificates.remove(&id("ca1")),
            };
            publisher.publish(&resources);
            let snapshot = publisher.handle().load_full();
            let target = &snapshot.route("/a").unwrap().0.target;
            let key = target.endpoint.as_ref().ok().map(|e| e.key.clone());
            (target.tls.clone(), key)
        };
        let (tls_a, key_a) = publish(Some("ca-a.pem"));
        let (tls_again, key_again) = publish(Some("ca-a.pem"));
        let (tls_b, key_b) = publish(Some("ca-b.pem"));
        let (tls_a, tls_again, tls_b) = (tls_a.unwrap(), tls_again.unwrap(), tls_b.unwrap());
        assert!(
            Arc::ptr_eq(&tls_a, &tls_again),
            "the same CA content keeps the context"
        );
        assert_eq!(key_a, key_again);
        assert!(key_a.as_ref().unwrap().trust.is_some());
        assert!(!Arc::ptr_eq(&tls_a, &tls_b), "another CA: another context");
        assert_ne!(key_a, key_b, "another CA: another pool key");
        let (tls_gone, key_gone) = publish(None);
        assert!(
            tls_gone.is_none() && key_gone.is_none(),
            "a missing CA leaves the backend unusable"
        );
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
