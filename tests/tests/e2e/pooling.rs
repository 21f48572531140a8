//! Upstream connection pooling and upstream TLS resumption across a backend restart.

use std::collections::HashSet;

use e2e::metrics::sum;
use e2e::*;

#[test]
fn upstream_pooling_and_resumption_after_backend_restart() {
    let mut f = Fixture::with(GatewayOpts::default(), |pki| BackendOpts {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: None,
        ticket_key: Some(pki.ticket_key("backend-ticket.key")),
    });
    let hits_before = 0.0 + sum(&f.gw.metrics(), "edgegw_upstream_pool_total", &[("result", "hit")]);

    let mut conn = f.client.connect().expect("connect");
    let mut ids = HashSet::new();
    for i in 0..100 {
        let r = conn.get(&format!("/orders/{i}"));
        let e = echo(&r);
        assert_eq!(e["path"], format!("/base/{i}"));
        ids.insert(e["connection"].as_u64().expect("connection id"));
    }
    assert!(ids.len() <= 2, "100 sequential requests used {} upstream connections: {ids:?}", ids.len());

    let (m, hits_after) = f.gw.wait_metric("edgegw_upstream_pool_total", &[("result", "hit")], hits_before + 99.0);
    assert!(hits_after > hits_before, "pool hits did not grow: {hits_before} -> {hits_after}");
    assert!(hits_after - hits_before >= 90.0, "expected ~98 pool hits, got {}", hits_after - hits_before);
    eprintln!("pooling: upstream connection ids {ids:?}, pool hits {hits_before} -> {hits_after}");
    let resumed_before = sum(&m, "edgegw_upstream_handshakes_total", &[("resumed", "true")]);

    // Backend restart with the same ticket key: the pooled connections are dead; the next
    // request goes over a new upstream connection that resumes the earlier TLS session.
    f.backend.restart();
    let r = conn.get("/orders/after-restart");
    let e = echo(&r);
    assert_eq!(e["resumed"], true, "upstream TLS session not resumed after backend restart: {e}");
    let (_, resumed_after) = f.gw.wait_metric("edgegw_upstream_handshakes_total", &[("resumed", "true")], resumed_before + 1.0);
    assert!(resumed_after > resumed_before, "upstream resumed handshakes metric did not grow");

    // And it keeps pooling afterwards.
    let mut ids2 = HashSet::new();
    for i in 0..20 {
        ids2.insert(echo(&conn.get(&format!("/orders/again/{i}")))["connection"].as_u64().expect("id"));
    }
    assert!(ids2.len() <= 2, "{ids2:?}");
}
