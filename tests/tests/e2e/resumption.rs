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

/// An OpenSSL client (as curl, wrk and h2load are) puts TLS_AES_256_GCM_SHA384 first; the
/// gateway picks TLS_AES_128_GCM_SHA256 (SHA-256 has CPU instructions, SHA-384 does not)
/// and sends one session ticket per handshake, which the client then resumes with.
#[test]
fn openssl_clients_get_aes128_and_one_ticket_that_resumes() {
    let f = Fixture::standard();
    let dir = testkit::temp_dir("e2e").expect("temp dir");
    let session = dir.path().join("session.pem");
    let connect = format!("127.0.0.1:{}", f.gw.listen.port());
    let s_client = |extra: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client", "-connect", &connect, "-tls1_3", "-msg", "-ign_eof",
            ])
            .args([
                "-ciphersuites",
                "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
            ])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                // A request, so that the client reads past the handshake (tickets follow it).
                child.stdin.take().expect("stdin").write_all(
                    b"GET /orders/cipher HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )?;
                child.wait_with_output()
            })
            .expect("run openssl s_client");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let first = s_client(&["-sess_out", session.to_str().expect("utf-8 path")]);
    assert!(
        first.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "cipher chosen:\n{first}"
    );
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    let tickets = first.matches("NewSessionTicket").count();
    assert_eq!(tickets, 1, "session tickets sent:\n{first}");
    let second = s_client(&["-sess_in", session.to_str().expect("utf-8 path")]);
    assert!(second.contains("Reused, TLSv1.3"), "{second}");
    assert!(second.contains("HTTP/1.1 200"), "{second}");
}
