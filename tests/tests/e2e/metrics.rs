//! Every metric of contract §5 is exported with its labels.

use e2e::metrics::{has_family, label_keys, sum};
use e2e::*;

#[test]
fn metrics_endpoint_has_every_contract_metric() {
    let f = Fixture::standard();
    // Traffic: fresh connections (handshakes, accepts), pooled requests, a 404, a TLS error.
    for _ in 0..3 {
        let mut c = f.client.connect().expect("connect");
        for i in 0..5 {
            echo(&c.get(&format!("/orders/{i}")));
        }
    }
    assert_eq!(f.client.get("/nope").status, 404);
    let r = f
        .admin
        .put_backend("strict", &f.backend.url(), true, true, Some("client-1"));
    assert_eq!(r.status, 201);
    assert_eq!(f.admin.put_api("strict", "/strict", "strict").status, 201);
    assert_eq!(f.client.get("/strict/x").status, 500);

    // Counters may be bumped just after the response went out: wait for the last ones.
    let (_, n) = f.gw.wait_metric("edgegw_requests_total", &[], 17.0);
    assert!(n >= 17.0, "requests_total {n}");
    let (m, _) =
        f.gw.wait_metric("edgegw_request_duration_seconds_count", &[], 17.0);
    let expected: [(&str, &[&str]); 14] = [
        ("edgegw_requests_total", &["api", "code"]),
        ("edgegw_request_duration_seconds", &["api"]),
        ("edgegw_downstream_handshakes_total", &["resumed"]),
        ("edgegw_upstream_handshakes_total", &["backend", "resumed"]),
        ("edgegw_upstream_pool_total", &["backend", "result"]),
        ("edgegw_upstream_tls_errors_total", &["backend", "reason"]),
        (
            "edgegw_certificate_expiry_timestamp_seconds",
            &["certificate"],
        ),
        ("edgegw_worker_accepted_connections_total", &["worker"]),
        ("edgegw_config_generation", &[]),
        // Issue 15: present (at 0) before any limit or timeout has triggered.
        ("edgegw_downstream_timeouts_total", &["phase"]),
        ("edgegw_limits_reached_total", &["limit"]),
        // Issue 13: every publish is timed (the fixture's writes published several).
        ("edgegw_snapshot_publish_duration_seconds", &["le"]),
        // Issue 10: present (at 0) before any HTTP/2 connection.
        ("edgegw_h2_streams_open", &[]),
        ("edgegw_h2_resets_total", &["reason"]),
    ];
    let mut missing = Vec::new();
    for (name, labels) in expected {
        if !has_family(&m, name) {
            missing.push(format!("{name} (absent)"));
            continue;
        }
        let keys = label_keys(&m, name);
        for l in labels {
            if !keys.iter().any(|k| k == l) {
                missing.push(format!("{name} lacks label {l} (has {keys:?})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics missing: {missing:#?}\n--- /metrics ---\n{m}"
    );

    assert!(
        sum(&m, "edgegw_requests_total", &[("code", "404")]) >= 1.0,
        "404 counted"
    );
    assert!(
        sum(&m, "edgegw_request_duration_seconds_count", &[]) >= 17.0,
        "histogram count"
    );
    assert!(sum(&m, "edgegw_downstream_handshakes_total", &[]) >= 4.0);
    assert!(sum(&m, "edgegw_upstream_pool_total", &[("result", "hit")]) >= 1.0);
    assert!(sum(&m, "edgegw_upstream_pool_total", &[("result", "miss")]) >= 1.0);
    assert!(sum(&m, "edgegw_upstream_tls_errors_total", &[]) >= 1.0);
    assert!(sum(&m, "edgegw_worker_accepted_connections_total", &[]) >= 4.0);
    assert!(sum(&m, "edgegw_config_generation", &[]) >= 1.0);
    // One timed rebuild per published generation (recorded before the generation is).
    let publishes = sum(&m, "edgegw_snapshot_publish_duration_seconds_count", &[]);
    assert!(
        publishes >= sum(&m, "edgegw_config_generation", &[]),
        "{publishes} publishes timed"
    );
    let expiry = e2e::metrics::parse(&m)
        .into_iter()
        .filter(|s| s.name == "edgegw_certificate_expiry_timestamp_seconds")
        .map(|s| s.value)
        .fold(0.0, f64::max);
    assert!(expiry > 1.7e9, "certificate expiry timestamp {expiry}");
}

/// A certificate's expiry series lives exactly as long as the certificate: a deleted one must
/// leave `/metrics`, or its expiry alerts would keep firing.
#[test]
fn certificate_expiry_series_follow_the_certificates() {
    let f = Fixture::standard();
    let expiry_ids = |text: &str| -> Vec<String> {
        e2e::metrics::parse(text)
            .into_iter()
            .filter(|s| s.name == "edgegw_certificate_expiry_timestamp_seconds")
            .filter_map(|s| {
                s.labels
                    .iter()
                    .find(|(k, _)| k == "certificate")
                    .map(|(_, v)| v.clone())
            })
            .collect()
    };
    f.upload("client-2");
    let ids = expiry_ids(&f.gw.metrics());
    assert!(
        ids.contains(&"client-1".to_owned()) && ids.contains(&"client-2".to_owned()),
        "{ids:?}"
    );
    assert_eq!(f.admin.delete("/certificates/client-2").status, 204);
    let ids = expiry_ids(&f.gw.metrics());
    assert_eq!(ids, vec!["client-1".to_owned()]);
}
