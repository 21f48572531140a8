//! Upstream connection pooling and upstream TLS resumption across a backend restart.

use std::collections::HashSet;

use e2e::metrics::sum;
use e2e::*;

/// The standard fixture, with a backend whose session tickets survive its restarts (a
/// ticket key file), so that upstream resumption across a restart can be observed.
fn fixture_with_stable_backend_tickets() -> Fixture {
    Fixture::with(GatewayOpts::default(), |pki| BackendOpts {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: None,
        ticket_key: Some(pki.ticket_key("backend-ticket.key")),
    })
}

#[test]
fn upstream_pooling_and_resumption_after_backend_restart() {
    let mut f = fixture_with_stable_backend_tickets();
    let hits_before = 0.0
        + sum(
            &f.gw.metrics(),
            "edgegw_upstream_pool_total",
            &[("result", "hit")],
        );

    let mut conn = f.client.connect().expect("connect");
    let mut ids = HashSet::new();
    for i in 0..100 {
        let r = conn.get(&format!("/orders/{i}"));
        let e = echo(&r);
        assert_eq!(e["path"], format!("/base/{i}"));
        ids.insert(e["connection"].as_u64().expect("connection id"));
    }
    assert!(
        ids.len() <= 2,
        "100 sequential requests used {} upstream connections: {ids:?}",
        ids.len()
    );

    let (m, hits_after) = f.gw.wait_metric(
        "edgegw_upstream_pool_total",
        &[("result", "hit")],
        hits_before + 99.0,
    );
    assert!(
        hits_after > hits_before,
        "pool hits did not grow: {hits_before} -> {hits_after}"
    );
    assert!(
        hits_after - hits_before >= 90.0,
        "expected ~98 pool hits, got {}",
        hits_after - hits_before
    );
    eprintln!("pooling: upstream connection ids {ids:?}, pool hits {hits_before} -> {hits_after}");
    let resumed_before = sum(
        &m,
        "edgegw_upstream_handshakes_total",
        &[("resumed", "true")],
    );

    // Backend restart with the same ticket key: the pooled connections are dead; the next
    // request goes over a new upstream connection that resumes the earlier TLS session.
    f.backend.restart();
    let r = conn.get("/orders/after-restart");
    let e = echo(&r);
    assert_eq!(
        e["resumed"], true,
        "upstream TLS session not resumed after backend restart: {e}"
    );
    let (_, resumed_after) = f.gw.wait_metric(
        "edgegw_upstream_handshakes_total",
        &[("resumed", "true")],
        resumed_before + 1.0,
    );
    assert!(
        resumed_after > resumed_before,
        "upstream resumed handshakes metric did not grow"
    );
    // The dead pooled connection was recognised before use, not after a failed request.
    let (_, stale) = f.gw.wait_metric(
        "edgegw_upstream_pool_evictions_total",
        &[("reason", "stale")],
        1.0,
    );
    assert!(stale >= 1.0, "no stale pooled connection was evicted");

    // And it keeps pooling afterwards.
    let mut ids2 = HashSet::new();
    for i in 0..20 {
        ids2.insert(
            echo(&conn.get(&format!("/orders/again/{i}")))["connection"]
                .as_u64()
                .expect("id"),
        );
    }
    assert!(ids2.len() <= 2, "{ids2:?}");
}

/// The pool key includes the validation flags and the certificate's thumbprint: a pooled
/// connection made under other settings is never reused.
#[test]
fn pool_key_includes_validation_flags_and_certificate() {
    let f = Fixture::standard();
    let url = format!("{}/base", f.backend.url());
    let mut conn = f.client.connect().expect("connect");
    for i in 0..5 {
        assert_eq!(
            subject(&echo(&conn.get(&format!("/orders/{i}")))),
            "CN=client-1, O=edgegw-test"
        );
    }
    // Chain validation on: the pooled (unvalidated) connection must not be used.
    assert_eq!(
        f.admin
            .put_backend("be1", &url, true, false, Some("client-1"))
            .status,
        200
    );
    let v = assert_error(&conn.get("/orders/validated"), 500, "BackendTlsError");
    assert_eq!(v["error"]["details"][0]["reason"], "UntrustedChain", "{v}");
    // Back to no validation: fine again.
    assert_eq!(
        f.admin
            .put_backend("be1", &url, false, false, Some("client-1"))
            .status,
        200
    );
    assert_eq!(
        subject(&echo(&conn.get("/orders/again"))),
        "CN=client-1, O=edgegw-test"
    );
    // Same certificate id, new content (client-3's bundle): the new certificate is presented.
    let r = f.admin.put_certificate(
        "client-1",
        &f.pki.p12("client-3", P12_PASSWORD, false),
        P12_PASSWORD,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for i in 0..3 {
        assert_eq!(
            subject(&echo(&conn.get(&format!("/orders/replaced/{i}")))),
            "CN=client-3, O=edgegw-test"
        );
    }
    // A fresh client connection (maybe another worker) sees the same.
    assert_eq!(
        subject(&echo(&f.client.get("/orders/fresh"))),
        "CN=client-3, O=edgegw-test"
    );
}

/// Upstream TLS sessions are shared by the workers: a worker that never talked to the
/// backend resumes the session another worker obtained, and after a backend restart (same
/// ticket key) every new upstream connection, on either worker, resumes. Counted from
/// `/metrics`: exactly one full upstream handshake in the whole test.
#[test]
fn upstream_sessions_are_shared_by_the_workers() {
    let mut f = fixture_with_stable_backend_tickets();
    assert_eq!(f.gw.opts.workers, 2);
    let full = |m: &str| {
        sum(
            m,
            "edgegw_upstream_handshakes_total",
            &[("resumed", "false")],
        )
    };
    let resumed = |m: &str| {
        sum(
            m,
            "edgegw_upstream_handshakes_total",
            &[("resumed", "true")],
        )
    };
    // Requests on new client connections until both workers have served some (the kernel
    // spreads connections by a hash: 64 tries leave a chance of 2^-63 of missing one).
    let on_both_workers = |f: &Fixture, what: &str| {
        let mut seen = [0usize; 2];
        for i in 0..64 {
            let e = echo(&f.client.get(&format!("/orders/{what}/{i}")));
            let w = e2e::steering::worker_of(&e).expect("worker in the request id");
            seen[w] += 1;
            if seen.iter().all(|&n| n > 0) {
                return seen;
            }
        }
        panic!("64 connections all went to one worker: {seen:?}");
    };
    let seen = on_both_workers(&f, "first");
    let (m, _) = f.gw.wait_metric(
        "edgegw_upstream_handshakes_total",
        &[],
        2.0, // at least one upstream connection per worker
    );
    assert_eq!(
        full(&m),
        1.0,
        "only the first upstream connection may be a full handshake (workers served {seen:?}):\n{m}"
    );
    assert_eq!(
        sum(
            &m,
            "edgegw_upstream_resumption_misses_total",
            &[("reason", "no_session")]
        ),
        1.0
    );
    let resumed_before = resumed(&m);

    // The backend restarts: every pooled connection is dead; both workers reconnect, and
    // every reconnection resumes.
    f.backend.restart();
    let seen = on_both_workers(&f, "after-restart");
    let (m, after) = f.gw.wait_metric(
        "edgegw_upstream_handshakes_total",
        &[("resumed", "true")],
        resumed_before + 2.0,
    );
    assert!(
        after >= resumed_before + 2.0,
        "both workers should reconnect with resumed sessions (served {seen:?}):\n{m}"
    );
    assert_eq!(full(&m), 1.0, "a reconnection did a full handshake:\n{m}");
}
