//! Fleet mode end to end: several `edgegw` processes share one configuration through a real
//! etcd (testkit's, on loopback). Each test starts its own etcd (or cluster), its own nodes
//! and its own mTLS backend, which echoes the client certificate it saw.
//!
//! Run: `cargo build --release --workspace --bins --tests &&
//! cargo test --release --workspace --test fleet`

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine as _;
use boring::ssl::SslVersion;
use e2e::http::policy_with_certificate_id;
use e2e::metrics::sum;
use e2e::util::{contains_bytes, wait_for};
use e2e::*;
use serde_json::{json, Value};
use testkit::{Etcd, EtcdCluster, StoreSettings};

/// How long a write on one node may take to show on another while etcd is up (the watch
/// usually brings it within milliseconds).
const CONVERGE: Duration = Duration::from_secs(2);
/// How long a node may take to notice that etcd went away or came back (it reconnects
/// with a backoff of at most 5 s, and a request may wait `etcd_timeout` = 2 s).
const RECONNECT: Duration = Duration::from_secs(20);
/// Every test's key prefix (each test has its own etcd).
const PREFIX: &str = "/edgegw-e2e/";

const STORE_CONNECTED: &str = "edgegw_store_connected";
const WATCH_REVISION: &str = "edgegw_store_watch_revision";
const GENERATION: &str = "edgegw_config_generation";
const RELOADS: &str = "edgegw_store_reloads_total";
const ROTATIONS: &str = "edgegw_ticket_key_rotations_total";

// ---------------------------------------------------------------- helpers

/// Base64 of 32 random bytes: a master key.
fn random_master_key() -> String {
    let mut bytes = [0u8; 32];
    boring::rand::rand_bytes(&mut bytes).expect("random bytes");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A master key file in `dir`.
fn master_key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, random_master_key()).expect("write the master key file");
    path
}

/// A fleet node on `endpoints`: keys under [`PREFIX`], master key from `key`, named `node`,
/// one worker.
fn node_opts(endpoints: &[String], key: &Path, node: &str) -> GatewayOpts {
    GatewayOpts {
        workers: 1,
        store: StoreSettings {
            master_key_file: Some(key.to_path_buf()),
            etcd_timeout: Some("2s".into()),
            node_name: Some(node.into()),
            ..StoreSettings::etcd(endpoints.to_vec(), PREFIX)
        },
        ..GatewayOpts::default()
    }
}

/// Polls `f` until it returns `Some`; panics naming `what` after `timeout`.
fn poll<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for(timeout, f).unwrap_or_else(|| panic!("{what}: not within {timeout:?}"))
}

fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(&gw.metrics(), name, labels)
}

fn etag(r: &Response) -> String {
    r.header("etag")
        .unwrap_or_else(|| panic!("no ETag in {} {}", r.status, r.text()))
        .to_string()
}

/// `CN=<cn>, O=edgegw-test`, as the backend reports a client certificate of the test PKI.
fn dn(cn: &str) -> String {
    format!("CN={cn}, O=edgegw-test")
}

/// Polls `gw`'s data plane on `target` until the backend saw client certificate `cn`.
fn wait_subject(gw: &Gateway, target: &str, cn: &str, timeout: Duration) {
    let want = dn(cn);
    let client = gw.client();
    let mut last = String::new();
    let seen = wait_for(timeout, || match client.request(Request::get(target)) {
        Ok(r) if r.status == 200 && subject(&r.json()) == want => Some(()),
        Ok(r) => {
            last = format!("{} {}", r.status, r.text());
            None
        }
        Err(e) => {
            last = e.to_string();
            None
        }
    });
    assert!(
        seen.is_some(),
        "node {}: GET {target} did not present {want} within {timeout:?}; last answer: {last}",
        gw.listen
    );
}

/// Polls until both nodes answer `GET path` alike (status, ETag, body); returns A's answer.
fn converged(a: &Admin, b: &Admin, path: &str, timeout: Duration) -> Response {
    let mut last = String::new();
    let same = wait_for(timeout, || {
        let (ra, rb) = (a.get(path), b.get(path));
        if ra.status == rb.status && ra.header("etag") == rb.header("etag") && ra.body == rb.body {
            return Some(ra);
        }
        last = format!(
            "A: {} {:?} {}; B: {} {:?} {}",
            ra.status,
            ra.header("etag"),
            ra.text(),
            rb.status,
            rb.header("etag"),
            rb.text()
        );
        None
    });
    same.unwrap_or_else(|| panic!("GET {path}: the nodes did not agree within {timeout:?}: {last}"))
}

/// Polls until every node answers `GET path` with 200 and ETag `tag` (the resource a PUT
/// answered with that ETag).
fn all_have(admins: &[&Admin], path: &str, tag: &str, timeout: Duration) {
    let mut last = String::new();
    let seen = wait_for(timeout, || {
        let answers: Vec<Response> = admins.iter().map(|a| a.get(path)).collect();
        if answers
            .iter()
            .all(|r| r.status == 200 && r.header("etag") == Some(tag))
        {
            return Some(());
        }
        last = answers
            .iter()
            .zip(admins)
            .map(|(r, a)| format!("{}: {} {:?}", a.addr, r.status, r.header("etag")))
            .collect::<Vec<_>>()
            .join("; ");
        None
    });
    assert!(
        seen.is_some(),
        "GET {path}: not every node has ETag {tag} within {timeout:?}: {last}"
    );
}

/// Every line of `gw`'s audit log is JSON naming `node`; returns the lines.
fn audit_lines(gw: &Gateway, node: &str) -> Vec<Value> {
    let log = gw.audit_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect();
    assert!(!lines.is_empty(), "{}: the audit log is empty", gw.listen);
    for l in &lines {
        assert_eq!(
            l["node"], node,
            "audit line without \"node\": {node:?}: {l}"
        );
    }
    lines
}

/// Whether `lines` have one for `operation` on `kind`/`id` (successful: no `outcome`).
fn audited(lines: &[Value], operation: &str, kind: &str, id: &str) -> bool {
    lines.iter().any(|l| {
        l["operation"] == operation && l["kind"] == kind && l["id"] == id && l["outcome"].is_null()
    })
}

/// The JSON body of a backend with validation off, bound to `cert` when given (the body
/// [`Admin::put_backend`] sends).
fn backend_body(url: &str, cert: Option<&str>) -> Vec<u8> {
    let mut v = json!({
        "url": url,
        "tls": {"validateCertificateChain": false, "validateCertificateName": false},
    });
    if let Some(c) = cert {
        v["credentials"] = json!({"certificateId": c});
    }
    v.to_string().into_bytes()
}

/// What a node shows of the configuration: the listings and the policies of `apis`.
fn configuration(admin: &Admin, apis: &[&str]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in ["/certificates", "/backends", "/apis"] {
        let r = admin.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        out.push((path.to_string(), r.json()));
    }
    for api in apis {
        let path = format!("/apis/{api}/policy");
        let r = admin.get(&path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        out.push((path, Value::String(r.text())));
    }
    out
}

/// Two nodes of one fleet, an mTLS backend and the test PKI.
struct Fleet {
    // Field order = drop order: the nodes first (their stderr is printed on a panic).
    a: Gateway,
    b: Gateway,
    backend: Backend,
    pki: Pki,
    /// The fleet's master key file (in `_keys`).
    key: PathBuf,
    _keys: testkit::TempDir,
}

impl Fleet {
    fn start(endpoints: &[String]) -> Fleet {
        Self::start_with(endpoints, |opts, _| opts)
    }

    /// Nodes `node-a` and `node-b` with the same master key; `tweak` adjusts both's options.
    fn start_with(endpoints: &[String], tweak: impl Fn(GatewayOpts, &Pki) -> GatewayOpts) -> Fleet {
        let pki = Pki::new();
        let keys = testkit::temp_dir("e2e-fleet-key").expect("temp dir");
        let key = master_key_file(keys.path(), "master.key");
        let backend = Backend::simple(&pki, "server.pem", "server.key");
        let a = Gateway::start_with(tweak(node_opts(endpoints, &key, "node-a"), &pki));
        let b = Gateway::start_with(tweak(node_opts(endpoints, &key, "node-b"), &pki));
        Fleet {
            a,
            b,
            backend,
            pki,
            key,
            _keys: keys,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.backend.url())
    }

    /// Uploads the test PKI's `name` as certificate `id` through `admin`, asserting 2xx.
    fn upload_as(&self, admin: &Admin, id: &str, name: &str) -> Response {
        let r = admin.put_certificate(id, &self.pki.p12(name, P12_PASSWORD, false), P12_PASSWORD);
        assert!(
            matches!(r.status, 200 | 201),
            "upload {name} as {id}: {} {}",
            r.status,
            r.text()
        );
        r
    }

    /// On node A: client-1 uploaded, backend be1 (the backend's /base) bound to it, API
    /// orders (/orders) on be1. Returns the three PUT responses.
    fn standard(&self) -> [Response; 3] {
        let a = self.a.admin();
        let cert = self.upload_as(&a, "client-1", "client-1");
        assert_eq!(cert.status, 201, "{}", cert.text());
        let be = a.put_backend("be1", &self.url("/base"), false, false, Some("client-1"));
        assert_eq!(be.status, 201, "PUT /backends/be1: {}", be.text());
        let api = a.put_api("orders", "/orders", "be1");
        assert_eq!(api.status, 201, "PUT /apis/orders: {}", api.text());
        [cert, be, api]
    }
}

// ---------------------------------------------------------------- 1. replication

/// A certificate uploaded and bound on node A (backend credentials, then an API policy)
/// is what node B presents to the backend on its next requests; B's GETs carry the ETags
/// of A's PUTs; etcd holds the records under the prefix with the private key sealed; each
/// node's audit log names the node.
#[test]
fn fleet_write_on_one_node_is_served_by_the_other() {
    let etcd = Etcd::start().expect("start etcd");
    let f = Fleet::start(&etcd.endpoints());
    let (a, b) = (f.a.admin(), f.b.admin());

    let puts = f.standard();
    wait_subject(&f.b, "/orders/1", "client-1", CONVERGE);
    for (path, put) in ["/certificates/client-1", "/backends/be1", "/apis/orders"]
        .iter()
        .zip(&puts)
    {
        let on_b = b.get(path);
        assert_eq!(on_b.status, 200, "GET {path} on node B: {}", on_b.text());
        assert_eq!(
            etag(&on_b),
            etag(put),
            "GET {path} on node B vs the PUT on node A"
        );
        assert_eq!(etag(&a.get(path)), etag(put), "GET {path} on node A");
        assert_eq!(
            on_b.json(),
            put.json(),
            "GET {path} on node B: the PUT's resource"
        );
    }
    assert_eq!(
        b.get("/certificates/client-1").json()["thumbprint"],
        f.pki.thumbprint("client-1.pem").as_str()
    );

    // A policy on the API, written on A: B presents its certificate.
    f.upload_as(&a, "client-2", "client-2");
    let r = a.put_xml(
        "/apis/orders/policy",
        &policy_with_certificate_id("client-2"),
    );
    assert!(r.status < 300, "PUT policy on A: {} {}", r.status, r.text());
    let policy_tag = etag(&r);
    wait_subject(&f.b, "/orders/2", "client-2", CONVERGE);
    let on_b = b.get("/apis/orders/policy");
    assert_eq!(etag(&on_b), policy_tag, "policy ETag on B");
    assert_eq!(
        on_b.text().trim(),
        policy_with_certificate_id("client-2").trim()
    );

    // And the other way: a rebind written on B is what A presents.
    f.upload_as(&b, "client-3", "client-3");
    let r = b.put_xml(
        "/apis/orders/policy",
        &policy_with_certificate_id("client-3"),
    );
    assert!(r.status < 300, "PUT policy on B: {} {}", r.status, r.text());
    wait_subject(&f.a, "/orders/3", "client-3", CONVERGE);
    assert_eq!(etag(&a.get("/apis/orders/policy")), etag(&r));

    // etcd holds one key per resource and the fleet's keys; the private key only sealed.
    let stored = etcd
        .get(&format!("{PREFIX}certificates/client-1"))
        .expect("read etcd")
        .expect("no certificates/client-1 key in etcd");
    assert!(
        !contains_bytes(&stored, f.pki.key_pem_base64_line("client-1").as_bytes())
            && !contains_bytes(&stored, &f.pki.key_der("client-1")),
        "the private key of client-1 is in etcd in the clear"
    );
    for key in [
        "certificates/client-2",
        "certificates/client-3",
        "backends/be1",
        "apis/orders",
        "fleet/ticket-keys",
        "fleet/key-check",
    ] {
        assert!(
            etcd.get(&format!("{PREFIX}{key}"))
                .expect("read etcd")
                .is_some(),
            "no {PREFIX}{key} in etcd"
        );
    }

    // Each node's audit log: its own changes, every line naming it.
    let on_a = audit_lines(&f.a, "node-a");
    for (op, kind, id) in [
        ("put", "certificate", "client-1"),
        ("put", "backend", "be1"),
        ("put", "api", "orders"),
        ("put", "certificate", "client-2"),
        ("put", "policy", "orders"),
    ] {
        assert!(
            audited(&on_a, op, kind, id),
            "node A's audit log has no {op} {kind} {id}: {on_a:?}"
        );
    }
    let on_b = audit_lines(&f.b, "node-b");
    assert!(audited(&on_b, "put", "certificate", "client-3"), "{on_b:?}");
    assert!(audited(&on_b, "put", "policy", "orders"), "{on_b:?}");
    assert!(
        !audited(&on_b, "put", "backend", "be1"),
        "node B's audit log has node A's change: {on_b:?}"
    );
}

// ---------------------------------------------------------------- 2. concurrent writers

/// Outcome of one write of a race: (writer, node, request, response).
type Outcome = (usize, char, String, Response);

fn describe(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|(i, node, what, r)| {
            format!(
                "#{i} on {node} {what}: {} {}",
                r.status,
                if r.status < 300 {
                    String::new()
                } else {
                    r.error_code()
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writers on both nodes race on one resource with the If-Match of the ETag they all read:
/// exactly one wins, the others get 412 `PreconditionFailed` (their node had seen the
/// winner) or 409 `Conflict` (etcd's transaction saw it); both nodes then show the winner's
/// resource and ETag. Then a delete of certificate c1 on A races a bind of b2 to c1 on B:
/// exactly one succeeds, and never does a backend end up bound to a missing certificate.
#[test]
fn fleet_concurrent_writes_have_one_winner_and_converge() {
    const WRITERS: usize = 4;
    let etcd = Etcd::start().expect("start etcd");
    let f = Fleet::start(&etcd.endpoints());
    let (a, b) = (f.a.admin(), f.b.admin());
    let nodes = [('A', a.clone()), ('B', b.clone())];
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();

    for round in 0..10 {
        let mut seen = converged(&a, &b, "/backends/b1", CONVERGE);
        if seen.status == 404 {
            let r = a.put_backend("b1", &f.url("/start"), false, false, None);
            assert_eq!(r.status, 201, "{}", r.text());
            seen = converged(&a, &b, "/backends/b1", CONVERGE);
        }
        assert_eq!(seen.status, 200, "{}", seen.text());
        let tag = etag(&seen);
        // Odd rounds: the last writer deletes instead.
        let barrier = Arc::new(Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (node, admin) = nodes[i % 2].clone();
                let barrier = barrier.clone();
                let (what, req) = if round % 2 == 1 && i == WRITERS - 1 {
                    ("DELETE".to_string(), Request::new("DELETE", "/backends/b1"))
                } else {
                    let url = f.url(&format!("/r{round}w{i}"));
                    (
                        format!("PUT {url}"),
                        Request::new("PUT", "/backends/b1")
                            .header("Content-Type", "application/json")
                            .body(backend_body(&url, None)),
                    )
                };
                let req = req.header("If-Match", &tag);
                std::thread::spawn(move || {
                    barrier.wait();
                    (i, node, what, admin.send(req))
                })
            })
            .collect();
        let outcomes: Vec<Outcome> = writers
            .into_iter()
            .map(|w| w.join().expect("writer thread"))
            .collect();
        let winners: Vec<&Outcome> = outcomes.iter().filter(|o| o.3.status < 300).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {WRITERS} writes with If-Match {tag}: exactly one may win: {}",
            describe(&outcomes)
        );
        for (_, _, _, r) in outcomes.iter().filter(|o| o.3.status >= 300) {
            let code = r.error_code();
            assert!(
                matches!(
                    (r.status, code.as_str()),
                    (412, "PreconditionFailed") | (409, "Conflict")
                ),
                "round {round}: a losing write must get 412 PreconditionFailed or 409 Conflict: {}",
                describe(&outcomes)
            );
            *codes.entry(format!("{} {code}", r.status)).or_default() += 1;
        }
        let (_, _, what, won) = winners[0];
        let end = converged(&a, &b, "/backends/b1", CONVERGE);
        if what == "DELETE" {
            assert_eq!(won.status, 204, "{}", won.text());
            assert_eq!(
                end.status,
                404,
                "round {round}: the delete won: {}",
                end.text()
            );
        } else {
            assert_eq!(won.status, 200, "{}", won.text());
            assert_eq!(end.status, 200, "round {round}: {}", end.text());
            assert_eq!(
                format!("PUT {}", end.json()["url"].as_str().unwrap_or_default()),
                *what,
                "round {round}: both nodes show the winner's resource"
            );
            assert_eq!(etag(&end), etag(won), "round {round}: the winner's ETag");
        }
    }
    eprintln!("If-Match races: losers answered {codes:?}");

    // Delete of c1 on A against a bind of b2 to c1 on B.
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..20 {
        if a.get("/certificates/c1").status == 404 {
            f.upload_as(&a, "c1", "client-1");
        }
        let r = a.put_backend("b2", &f.url("/b2"), false, false, None);
        assert!(matches!(r.status, 200 | 201), "unbind b2: {}", r.text());
        assert_eq!(converged(&a, &b, "/certificates/c1", CONVERGE).status, 200);
        converged(&a, &b, "/backends/b2", CONVERGE);

        let barrier = Arc::new(Barrier::new(2));
        let (ba, bb) = (barrier.clone(), barrier);
        let (aa, ab) = (a.clone(), b.clone());
        let delete = std::thread::spawn(move || {
            ba.wait();
            aa.delete("/certificates/c1")
        });
        let body = backend_body(&f.url("/b2"), Some("c1"));
        let bind = std::thread::spawn(move || {
            bb.wait();
            ab.put_raw("/backends/b2", "application/json", &body)
        });
        let (del, bind) = (
            delete.join().expect("delete thread"),
            bind.join().expect("bind thread"),
        );
        let what = format!(
            "round {round}: DELETE c1 on A: {} {}; bind b2 to c1 on B: {} {}",
            del.status,
            del.text(),
            bind.status,
            bind.text()
        );
        let deleted = del.status == 204;
        let bound = bind.status == 200;
        assert!(deleted != bound, "exactly one of the two may win: {what}");
        let loser = if deleted { &bind } else { &del };
        let code = loser.error_code();
        let allowed = if deleted {
            matches!(
                (loser.status, code.as_str()),
                (400, "CertificateNotFound") | (409, "Conflict")
            )
        } else {
            matches!(
                (loser.status, code.as_str()),
                (409, "CertificateInUse") | (409, "Conflict")
            )
        };
        assert!(allowed, "unexpected answer for the losing write: {what}");
        *tally
            .entry(format!(
                "{} won, loser {} {code}",
                if deleted { "delete" } else { "bind" },
                loser.status
            ))
            .or_default() += 1;

        let c1 = converged(&a, &b, "/certificates/c1", CONVERGE);
        let b2 = converged(&a, &b, "/backends/b2", CONVERGE);
        let names_c1 = b2.json()["credentials"]["certificateId"] == "c1";
        assert!(
            !names_c1 || c1.status == 200,
            "b2 is bound to c1, which does not exist: {what}; b2 = {}",
            b2.text()
        );
        assert_eq!(names_c1, bound, "{what}; b2 = {}", b2.text());
        assert_eq!(c1.status == 404, deleted, "{what}; c1: {}", c1.status);
    }
    eprintln!("delete/bind races: {tally:?}");

    // Every write that lost in etcd's transaction (409 Conflict) left an audit line saying
    // so on its node, after its write-ahead line.
    let conflicts: usize = codes.get("409 Conflict").copied().unwrap_or(0)
        + tally
            .iter()
            .filter(|(k, _)| k.ends_with("409 Conflict"))
            .map(|(_, n)| n)
            .sum::<usize>();
    let logged = [(&f.a, "node-a"), (&f.b, "node-b")]
        .iter()
        .flat_map(|(gw, node)| audit_lines(gw, node))
        .filter(|l| l["outcome"] == "conflict")
        .count();
    assert_eq!(
        logged, conflicts,
        "audit lines with \"outcome\": \"conflict\" vs 409 Conflict answers"
    );
}

// ---------------------------------------------------------------- 3. TLS resumption

/// The nodes' store revisions, when they are the same (no ticket-key rotation in flight).
fn same_revision(a: &Gateway, b: &Gateway) -> Option<f64> {
    let (ra, rb) = (
        metric(a, WATCH_REVISION, &[]),
        metric(b, WATCH_REVISION, &[]),
    );
    (ra == rb).then_some(ra)
}

/// Runs `attempt` at a moment when both nodes have the same ticket keys: they are at the
/// same store revision before it and still after it (a rotation whose new keys one node has
/// installed and the other not yet would fail a resumption for a reason other than the one
/// under test). Retries otherwise.
fn quietly<T>(a: &Gateway, b: &Gateway, mut attempt: impl FnMut() -> T) -> T {
    for _ in 0..50 {
        let Some(before) = same_revision(a, b) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let out = attempt();
        if same_revision(a, b) == Some(before) {
            return out;
        }
    }
    panic!("the nodes' store revisions never held still around a handshake");
}

/// Both nodes with the same listener certificate: a session from node A resumes on node B
/// and back (TLS 1.3 and 1.2). With `ticket_key_rotation = "3s"`, a session issued before
/// a rotation still resumes on the other node after it; each rotation is made by one node.
#[test]
fn fleet_tls_sessions_resume_across_nodes_and_across_a_rotation() {
    let etcd = Etcd::start().expect("start etcd");
    let f = Fleet::start_with(&etcd.endpoints(), |opts, pki| GatewayOpts {
        workers: 2,
        listener_cert: Some((pki.path("server.pem"), pki.path("server.key"))),
        ticket_key_rotation: Some("3s".into()),
        ..opts
    });
    f.standard();
    wait_subject(&f.b, "/orders/0", "client-1", CONVERGE);
    let resumed_on_b_before = metric(
        &f.b,
        "edgegw_downstream_handshakes_total",
        &[("resumed", "true")],
    );

    for max in [None, Some(SslVersion::TLS1_2)] {
        let on_a = TlsClient::with_max_version(f.a.listen, max);
        let mut on_b = on_a.clone();
        on_b.addr = f.b.listen;
        // A session from A, offered to B (4 times: B's two workers).
        for i in 0..4 {
            let (reused, version) = quietly(&f.a, &f.b, || {
                let mut first = on_a.connect().expect("connect to node A");
                echo(&first.get("/orders/a"));
                drop(first);
                let session = on_a.last_session().expect("node A sent no session ticket");
                let mut c = on_b
                    .connect_with(Some(&session))
                    .expect("connect to node B");
                echo(&c.get("/orders/b"));
                (c.session_reused(), c.stream.ssl().version_str())
            });
            assert!(
                reused,
                "a session from node A did not resume on node B (#{i}, {version})"
            );
        }
        // And B's newest ticket on A.
        let (reused, version) = quietly(&f.a, &f.b, || {
            let session = on_b.last_session().expect("node B sent no session ticket");
            let mut c = on_a
                .connect_with(Some(&session))
                .expect("connect to node A");
            echo(&c.get("/orders/c"));
            (c.session_reused(), c.stream.ssl().version_str())
        });
        assert!(
            reused,
            "a session from node B did not resume on node A ({version})"
        );
    }
    let (_, resumed) = f.b.wait_metric(
        "edgegw_downstream_handshakes_total",
        &[("resumed", "true")],
        resumed_on_b_before + 8.0,
    );
    assert!(
        resumed >= resumed_on_b_before + 8.0,
        "node B counted {} resumed handshakes",
        resumed - resumed_on_b_before
    );

    // A session issued by A before a rotation, offered to B after it.
    let on_a = TlsClient::new(f.a.listen);
    let mut on_b = on_a.clone();
    on_b.addr = f.b.listen;
    let (session, rotations_b) = quietly(&f.a, &f.b, || {
        let mut c = on_a.connect().expect("connect to node A");
        echo(&c.get("/orders/before-rotation"));
        drop(c);
        (
            on_a.last_session().expect("node A sent no session ticket"),
            metric(&f.b, ROTATIONS, &[]),
        )
    });
    let rotations_a = metric(&f.a, ROTATIONS, &[]);
    poll(
        Duration::from_secs(15),
        "a ticket-key rotation installed on node B",
        || (metric(&f.b, ROTATIONS, &[]) > rotations_b).then_some(()),
    );
    let (reused, now_b) = quietly(&f.a, &f.b, || {
        let mut c = on_b
            .connect_with(Some(&session))
            .expect("connect to node B");
        echo(&c.get("/orders/after-rotation"));
        (c.session_reused(), metric(&f.b, ROTATIONS, &[]))
    });
    assert_eq!(
        now_b,
        rotations_b + 1.0,
        "inconclusive: more than one rotation happened between the ticket and its use"
    );
    assert!(
        reused,
        "a session issued by node A before a ticket-key rotation did not resume on node B after it"
    );
    // Node A installed the same rotation (the watch brings it to every node).
    poll(CONVERGE, "the rotation installed on node A too", || {
        (metric(&f.a, ROTATIONS, &[]) > rotations_a).then_some(())
    });
    // After the rotation, B's new tickets work on A.
    let (reused, _) = quietly(&f.a, &f.b, || {
        let mut c = on_b.connect().expect("connect to node B");
        echo(&c.get("/orders/new-ticket"));
        drop(c);
        let session = on_b.last_session().expect("node B sent no session ticket");
        let mut c = on_a
            .connect_with(Some(&session))
            .expect("connect to node A");
        echo(&c.get("/orders/new-ticket-on-a"));
        (c.session_reused(), ())
    });
    assert!(
        reused,
        "after the rotation a ticket of node B did not resume on node A"
    );

    // One rotation = one node's transaction: the nodes' "rotated" lines add up to the
    // rotations each node installed.
    let rotated = |gw: &Gateway| {
        gw.stderr()
            .matches("this node rotated the fleet's session ticket keys")
            .count() as f64
    };
    let mut last = String::new();
    let agreed = wait_for(CONVERGE, || {
        let (ra, rb) = (rotated(&f.a), rotated(&f.b));
        let (ia, ib) = (metric(&f.a, ROTATIONS, &[]), metric(&f.b, ROTATIONS, &[]));
        last = format!("rotated by A {ra}, by B {rb}; installed on A {ia}, on B {ib}");
        (ra + rb == ia && ia == ib).then_some(())
    });
    assert!(agreed.is_some(), "rotations: {last}");
    eprintln!("ticket-key rotations: {last}");
}

// ---------------------------------------------------------------- 4. etcd down

/// Whether `gw`'s local copy holds a record with id `id`.
fn local_copy_has(gw: &Gateway, id: &str) -> bool {
    std::fs::read(gw.data_dir().join("fleet-cache.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["records"].as_array().cloned())
        .is_some_and(|records| records.iter().any(|r| r["id"] == id))
}

/// With etcd stopped both nodes keep serving, writes answer 503 `StoreUnavailable` within
/// the etcd timeout, reads answer, `edgegw_store_connected` is 0. With etcd back, writes
/// work and the nodes reach the same watch revision. With etcd stopped again, a restarted
/// node serves from its local copy, and a new node without one answers 503
/// `StoreUnavailable` on every route until etcd is back, then serves the fleet's
/// configuration.
#[test]
fn fleet_keeps_serving_while_etcd_is_down_and_catches_up() {
    let mut etcd = Etcd::start().expect("start etcd");
    let mut f = Fleet::start(&etcd.endpoints());
    let (a, b) = (f.a.admin(), f.b.admin());
    f.standard();
    wait_subject(&f.b, "/orders/1", "client-1", CONVERGE);

    etcd.stop().expect("stop etcd");
    for (gw, admin) in [(&f.a, &a), (&f.b, &b)] {
        let started = Instant::now();
        let r = admin.put_backend("be2", &f.url("/two"), false, false, Some("client-1"));
        let took = started.elapsed();
        assert_error(&r, 503, "StoreUnavailable");
        assert!(took < Duration::from_secs(10), "the 503 took {took:?}");
        eprintln!(
            "node {}: write with etcd down answered 503 in {took:?}",
            gw.listen
        );
        assert_eq!(
            subject(&echo(&gw.client().get("/orders/down"))),
            dn("client-1")
        );
        let r = admin.get("/backends/be1");
        assert_eq!(r.status, 200, "a read with etcd down: {}", r.text());
        assert_eq!(admin.get("/backends/be2").status, 404);
        poll(RECONNECT, "edgegw_store_connected 0 with etcd down", || {
            (metric(gw, STORE_CONNECTED, &[]) == 0.0).then_some(())
        });
    }
    let audit = audit_lines(&f.a, "node-a");
    assert!(
        audit
            .iter()
            .any(|l| l["id"] == "be2" && l["outcome"] == "unavailable"),
        "node A's audit log has no `\"outcome\": \"unavailable\"` line for be2: {audit:?}"
    );

    // Let the watches' reconnection backoff grow (100 ms, doubling, at most 5 s): the first
    // write after etcd is back then lands while both watches still wait to reconnect, so
    // they resume behind etcd's revision and must replay what they missed.
    for gw in [&f.a, &f.b] {
        poll(
            Duration::from_secs(15),
            "the watch backing off 3.2 s",
            || gw.stderr().contains("retry_in=3.2s").then_some(()),
        );
    }
    etcd.start_again().expect("start etcd again");
    let behind: Vec<bool> = [&f.a, &f.b]
        .iter()
        .map(|gw| metric(gw, STORE_CONNECTED, &[]) == 0.0)
        .collect();
    let put = poll(RECONNECT, "a write on node A after etcd came back", || {
        let r = a.put_backend("be2", &f.url("/two"), false, false, Some("client-1"));
        match r.status {
            201 => Some(r),
            503 => None,
            _ => panic!("PUT /backends/be2: {} {}", r.status, r.text()),
        }
    });
    eprintln!("watches still reconnecting when the write was sent (A, B): {behind:?}");
    all_have(&[&a, &b], "/backends/be2", &etag(&put), RECONNECT);
    let revision = poll(
        RECONNECT,
        "both nodes connected, at the same watch revision",
        || {
            let (ra, rb) = (
                metric(&f.a, WATCH_REVISION, &[]),
                metric(&f.b, WATCH_REVISION, &[]),
            );
            let connected = metric(&f.a, STORE_CONNECTED, &[]) == 1.0
                && metric(&f.b, STORE_CONNECTED, &[]) == 1.0;
            (connected && ra == rb && ra > 0.0).then_some(ra)
        },
    );
    let written: f64 = etag(&put).trim_matches('"').parse().expect("numeric ETag");
    assert!(
        revision >= written,
        "watch revision {revision} < the write's {written}"
    );

    // etcd down again: a restarted node B starts from its local copy.
    poll(
        Duration::from_secs(5),
        "node B's local copy holds be2",
        || local_copy_has(&f.b, "be2").then_some(()),
    );
    etcd.stop().expect("stop etcd");
    f.b.restart();
    assert!(
        f.b.stderr()
            .contains("starting from this node's local copy"),
        "node B's log does not say it started from its local copy:\n{}",
        f.b.stderr()
    );
    assert_eq!(
        subject(&echo(&f.b.client().get("/orders/copy"))),
        dn("client-1")
    );
    let r = b.get("/backends/be2");
    assert_eq!(r.status, 200, "be2 from the local copy: {}", r.text());
    assert_eq!(etag(&r), etag(&put));
    assert_eq!(metric(&f.b, STORE_CONNECTED, &[]), 0.0);
    assert_error(&b.put_api("late", "/late", "be2"), 503, "StoreUnavailable");

    // A new node has no local copy: it starts with no configuration, every route answers
    // 503 StoreUnavailable, and it takes the fleet's configuration once etcd answers.
    let c = Gateway::start_with(node_opts(&etcd.endpoints(), &f.key, "node-c"));
    assert!(
        c.stderr().contains("no local copy"),
        "node C's log does not say it has no local copy:\n{}",
        c.stderr()
    );
    assert_error(&c.client().get("/orders/c"), 503, "StoreUnavailable");
    assert_error(
        &c.admin()
            .put_backend("be9", &f.url("/nine"), false, false, None),
        503,
        "StoreUnavailable",
    );

    etcd.start_again().expect("start etcd again");
    wait_subject(&c, "/orders/c", "client-1", RECONNECT);
    let r = c.admin().get("/backends/be2");
    assert_eq!(r.status, 200, "be2 on node C: {}", r.text());
    assert_eq!(etag(&r), etag(&put));
    // Node B follows again: a write on A reaches B and C.
    let put = poll(RECONNECT, "a write on node A after etcd came back", || {
        let r = a.put_backend("be3", &f.url("/three"), false, false, None);
        match r.status {
            201 => Some(r),
            503 => None,
            _ => panic!("PUT /backends/be3: {} {}", r.status, r.text()),
        }
    });
    all_have(
        &[&a, &b, &c.admin()],
        "/backends/be3",
        &etag(&put),
        RECONNECT,
    );
}

// ---------------------------------------------------------------- 5. etcd cluster

/// Nodes given the three members of a cluster: with the first member (the one they connect
/// to first) killed, writes and the watch go on through the others.
#[test]
fn fleet_survives_losing_the_etcd_member_it_talks_to() {
    let mut cluster = EtcdCluster::start(3).expect("start a 3-member etcd cluster");
    let f = Fleet::start(&cluster.endpoints());
    let (a, b) = (f.a.admin(), f.b.admin());
    f.standard();
    f.upload_as(&a, "client-2", "client-2");
    wait_subject(&f.b, "/orders/1", "client-1", CONVERGE);

    cluster.kill(0).expect("kill member 0");
    let mut unavailable = 0;
    let rebind = poll(RECONNECT, "a write on node A with member 0 dead", || {
        let r = a.put_backend("be1", &f.url("/base"), false, false, Some("client-2"));
        match r.status {
            200 => Some(r),
            503 => {
                unavailable += 1;
                None
            }
            _ => panic!("PUT /backends/be1: {} {}", r.status, r.text()),
        }
    });
    eprintln!("writes answered 503 after the kill before one succeeded: {unavailable}");
    wait_subject(&f.b, "/orders/2", "client-2", Duration::from_secs(10));
    assert_eq!(etag(&b.get("/backends/be1")), etag(&rebind));
    poll(RECONNECT, "both nodes connected again", || {
        (metric(&f.a, STORE_CONNECTED, &[]) == 1.0 && metric(&f.b, STORE_CONNECTED, &[]) == 1.0)
            .then_some(())
    });
    // Settled on the two members left: a write on B reaches A as fast as ever.
    let r = b.put_backend("be1", &f.url("/base"), false, false, Some("client-1"));
    assert_eq!(r.status, 200, "PUT on node B: {}", r.text());
    wait_subject(&f.a, "/orders/3", "client-1", CONVERGE);
    assert_eq!(etag(&a.get("/backends/be1")), etag(&r));
    assert!(cluster.is_healthy(1) && cluster.is_healthy(2));
}

// ---------------------------------------------------------------- 6. compaction

/// A compaction past the nodes' watch revision (etcd's revision advanced by keys outside
/// the prefix), then an etcd restart: the watches resume from a compacted revision and
/// reload the whole store once; nothing changed, so no snapshot is rebuilt
/// (`edgegw_config_generation` unchanged, `edgegw_store_reloads_total{changed="false"}`
/// grows) and the nodes go on serving and following.
#[test]
fn fleet_compaction_without_data_change_rebuilds_nothing() {
    let mut etcd = Etcd::start().expect("start etcd");
    let f = Fleet::start(&etcd.endpoints());
    let (a, b) = (f.a.admin(), f.b.admin());
    f.standard();
    wait_subject(&f.b, "/orders/1", "client-1", CONVERGE);
    let applied = poll(CONVERGE, "both nodes at the same watch revision", || {
        same_revision(&f.a, &f.b)
    });
    let before: Vec<(f64, f64, f64)> = [&f.a, &f.b]
        .iter()
        .map(|gw| {
            let m = gw.metrics();
            (
                sum(&m, GENERATION, &[]),
                sum(&m, RELOADS, &[("changed", "false")]),
                sum(&m, RELOADS, &[("changed", "true")]),
            )
        })
        .collect();

    for i in 0..5 {
        etcd.put(&format!("/not-edgegw/key-{i}"), b"x")
            .expect("etcd put");
    }
    let compacted = etcd.compact().expect("compact");
    assert!(
        compacted as f64 >= applied + 2.0,
        "compacted at {compacted}, the nodes are at {applied}: the resume would not be compacted"
    );
    etcd.stop().expect("stop etcd");
    etcd.start_again().expect("start etcd again");

    for (gw, (generation, unchanged, changed)) in [&f.a, &f.b].iter().zip(&before) {
        let now = poll(RECONNECT, "a reload after the compaction", || {
            let m = gw.metrics();
            let reloads = sum(&m, RELOADS, &[("changed", "false")]);
            (reloads > *unchanged).then(|| {
                (
                    sum(&m, GENERATION, &[]),
                    reloads,
                    sum(&m, RELOADS, &[("changed", "true")]),
                )
            })
        });
        assert_eq!(
            now.0, *generation,
            "node {}: the config generation changed",
            gw.listen
        );
        assert_eq!(
            now.2, *changed,
            "node {}: a reload counted as a change",
            gw.listen
        );
        assert!(
            gw.stderr()
                .contains("etcd watch lost its place (compaction)"),
            "node {} does not log the lost place",
            gw.listen
        );
        assert_eq!(
            subject(&echo(&gw.client().get("/orders/2"))),
            dn("client-1")
        );
    }
    // And they follow on.
    let put = poll(RECONNECT, "a write on node A after the restart", || {
        let r = a.put_backend("be2", &f.url("/two"), false, false, None);
        match r.status {
            201 => Some(r),
            503 => None,
            _ => panic!("PUT /backends/be2: {} {}", r.status, r.text()),
        }
    });
    all_have(&[&a, &b], "/backends/be2", &etag(&put), RECONNECT);
}

// ---------------------------------------------------------------- 7. migrate

fn assert_migrated(out: &std::process::Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("migrated 2 certificates, 2 backends, 2 APIs"),
        "{what}: {stdout}"
    );
}

fn assert_refused_non_empty(out: &std::process::Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: a migration into a non-empty store succeeded"
    );
    assert!(
        stderr.contains("already holds") && stderr.contains("empty store only"),
        "{what}: the message does not say the target is not empty: {stderr}"
    );
}

/// An embedded node's certificates, backends, APIs and policies, migrated to etcd, are what
/// a fleet node on that etcd serves (same ids, thumbprints, certificates presented), and
/// migrated back into a fresh embedded data dir with the same master key, what that node
/// serves. A migration into a non-empty store fails, says why, and changes nothing.
#[test]
fn fleet_store_migrate_round_trip() {
    let etcd = Etcd::start().expect("start etcd");
    let pki = Pki::new();
    let backend = Backend::simple(&pki, "server.pem", "server.key");
    let keys = testkit::temp_dir("e2e-fleet-key").expect("temp dir");
    let key = master_key_file(keys.path(), "master.key");
    let embedded = |node: &str| GatewayOpts {
        workers: 1,
        store: StoreSettings {
            master_key_file: Some(key.clone()),
            node_name: Some(node.into()),
            ..StoreSettings::default()
        },
        ..GatewayOpts::default()
    };
    let on_etcd = |opts: &mut GatewayOpts| {
        opts.store = StoreSettings {
            master_key_file: opts.store.master_key_file.clone(),
            node_name: opts.store.node_name.clone(),
            ..StoreSettings::etcd(etcd.endpoints(), PREFIX)
        };
    };
    let apis = ["orders", "other"];
    let serves = |gw: &Gateway| {
        assert_eq!(
            subject(&echo(&gw.client().get("/orders/1"))),
            dn("client-1")
        );
        assert_eq!(subject(&echo(&gw.client().get("/other/1"))), dn("client-2"));
    };

    // An embedded node with two certificates, two backends, two APIs, a policy.
    let mut e = Gateway::start_with(embedded("solo"));
    let admin = e.admin();
    for name in ["client-1", "client-2"] {
        let r = admin.put_certificate(name, &pki.p12(name, P12_PASSWORD, false), P12_PASSWORD);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let url = |p: &str| format!("{}{p}", backend.url());
    admin.ok(
        admin.put_backend("be1", &url("/one"), false, false, Some("client-1")),
        "be1",
    );
    admin.ok(
        admin.put_backend("be2", &url("/two"), false, false, None),
        "be2",
    );
    admin.ok(admin.put_api("orders", "/orders", "be1"), "orders");
    admin.ok(admin.put_api("other", "/other", "be2"), "other");
    admin.ok(
        admin.put_xml(
            "/apis/other/policy",
            &policy_with_certificate_id("client-2"),
        ),
        "policy",
    );
    serves(&e);
    let config = configuration(&admin, &apis);
    let thumbprints: Vec<&str> = config[0].1["value"]
        .as_array()
        .expect("certificate list")
        .iter()
        .filter_map(|c| c["thumbprint"].as_str())
        .collect();
    assert_eq!(
        thumbprints,
        [
            pki.thumbprint("client-1.pem"),
            pki.thumbprint("client-2.pem")
        ]
    );

    // Stopped, switched to etcd, migrated.
    let st = e.stop();
    assert!(
        st.is_some_and(|s| s.success()),
        "embedded node exit: {st:?}"
    );
    e.reconfigure(on_etcd);
    assert_migrated(&e.store_migrate("embedded", "etcd"), "embedded -> etcd");
    for key in [
        "certificates/client-1",
        "backends/be1",
        "apis/other",
        "fleet/key-check",
    ] {
        assert!(
            etcd.get(&format!("{PREFIX}{key}"))
                .expect("read etcd")
                .is_some(),
            "no {PREFIX}{key} in etcd after the migration"
        );
    }

    // A fresh fleet node on that etcd serves the same.
    let fleet = Gateway::start_with(node_opts(&etcd.endpoints(), &key, "node-f"));
    assert_eq!(
        configuration(&fleet.admin(), &apis),
        config,
        "the fleet node's configuration"
    );
    serves(&fleet);

    // Migrating again into the (now non-empty) etcd: refused, nothing written.
    let revision = etcd.revision().expect("etcd revision");
    assert_refused_non_empty(
        &e.store_migrate("embedded", "etcd"),
        "embedded -> non-empty etcd",
    );
    assert_eq!(
        etcd.revision().expect("etcd revision"),
        revision,
        "the refused migration wrote to etcd"
    );
    assert_eq!(configuration(&fleet.admin(), &apis), config);

    // Back into a fresh embedded data dir with the same master key.
    let mut back = Gateway::create(embedded("back"));
    back.reconfigure(on_etcd);
    assert_migrated(&back.store_migrate("etcd", "embedded"), "etcd -> embedded");
    back.reconfigure(|o| *o = embedded("back"));
    back.start_stopped();
    assert_eq!(
        configuration(&back.admin(), &apis),
        config,
        "the embedded node's configuration after the round trip"
    );
    serves(&back);

    // Into the non-empty embedded store: refused, nothing changed.
    let st = back.stop();
    assert!(st.is_some_and(|s| s.success()), "exit: {st:?}");
    back.reconfigure(on_etcd);
    assert_refused_non_empty(
        &back.store_migrate("etcd", "embedded"),
        "etcd -> non-empty embedded",
    );
    back.reconfigure(|o| *o = embedded("back"));
    back.start_stopped();
    assert_eq!(configuration(&back.admin(), &apis), config);
}

// ---------------------------------------------------------------- 8. master key

/// A node whose master key is not the fleet's (another key file, or `EDGEGW_MASTER_KEY`)
/// exits non-zero at start, says why, and writes nothing to etcd.
#[test]
fn fleet_node_with_another_master_key_refuses_to_start() {
    let etcd = Etcd::start().expect("start etcd");
    let keys = testkit::temp_dir("e2e-fleet-key").expect("temp dir");
    let key = master_key_file(keys.path(), "fleet.key");
    let a = Gateway::start_with(node_opts(&etcd.endpoints(), &key, "node-a"));
    let r = a
        .admin()
        .put_backend("be1", "https://127.0.0.1:1/x", false, false, None);
    assert_eq!(r.status, 201, "{}", r.text());
    let revision = etcd.revision().expect("etcd revision");

    let other_file = node_opts(
        &etcd.endpoints(),
        &master_key_file(keys.path(), "other.key"),
        "intruder",
    );
    let other_env = GatewayOpts {
        // The environment variable comes before the (right) key file.
        env: vec![("EDGEGW_MASTER_KEY".into(), random_master_key())],
        ..node_opts(&etcd.endpoints(), &key, "intruder-env")
    };
    for (what, opts) in [
        ("another key file", other_file),
        ("EDGEGW_MASTER_KEY", other_env),
    ] {
        let mut x = Gateway::launch(opts);
        let st = x.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
            panic!(
                "{what}: the node is still running after 20 s:\n{}",
                x.stderr()
            )
        });
        let stderr = x.stderr();
        assert!(!st.success(), "{what}: exit {st}");
        assert!(
            stderr.contains("master key") && stderr.contains("not the fleet's"),
            "{what}: the error does not say the master key is not the fleet's:\n{stderr}"
        );
        assert_eq!(
            etcd.revision().expect("etcd revision"),
            revision,
            "{what}: the refused node wrote to etcd"
        );
        assert!(
            !x.data_dir().join("fleet-cache.json").exists(),
            "{what}: a local copy was written"
        );
    }
    assert_eq!(a.admin().get("/backends/be1").status, 200);
    assert_eq!(etcd.revision().expect("etcd revision"), revision);
}
