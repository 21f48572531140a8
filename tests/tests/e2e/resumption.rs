//! Downstream TLS session resumption (tickets shared by every worker).

use boring::ssl::SslVersion;
use e2e::metrics::sum;
use e2e::*;

fn resumption_with(max: Option<SslVersion>) {
    let f = Fixture::standard();
    let client = TlsClient::with_max_version(f.gw.listen, max);
    let before = sum(
        &f.gw.metrics(),
        "edgegw_downstream_handshakes_total",
        &[("resumed", "true")],
    );

    let mut first = client.connect().expect("connect");
    assert_eq!(first.alpn().as_deref(), Some(&b"http/1.1"[..]), "ALPN");
    assert!(!first.session_reused());
    echo(&first.get("/orders/1"));
    let session = client
        .last_session()
        .expect("the gateway sent no session ticket");
    drop(first);

    // 8 connections offering the first session: with 2 workers some land on the worker that
    // did not issue the ticket; all must resume.
    for i in 0..8 {
        let mut c = client.connect_with(Some(&session)).expect("connect");
        assert!(
            c.session_reused(),
            "connection #{i} did not resume the session ({})",
            c.stream.ssl().version_str()
        );
        echo(&c.get(&format!("/orders/{i}")));
    }
    // Each resumed connection's newest ticket works too.
    for i in 0..4 {
        let s = client.last_session().expect("ticket");
        let mut c = client.connect_with(Some(&s)).expect("connect");
        assert!(c.session_reused(), "chained resumption #{i}");
        echo(&c.get("/orders/x"));
    }
    let (_, after) = f.gw.wait_metric(
        "edgegw_downstream_handshakes_total",
        &[("resumed", "true")],
        before + 12.0,
    );
    assert!(
        after - before >= 12.0,
        "resumed handshakes metric grew by {} (expected >= 12)",
        after - before
    );
}

#[test]
fn downstream_resumption_tls13() {
    resumption_with(None);
}

#[test]
fn downstream_resumption_tls12() {
    resumption_with(Some(SslVersion::TLS1_2));
}
