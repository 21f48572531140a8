//! HTTP/2 to clients (`listener.alpn`, issue 10's first slice), with Debian's curl: each
//! stream is routed and proxied like an HTTP/1.1 request, to the pooled mTLS HTTP/1.1
//! backend; HTTP/1.1 keeps working on the same port; h2 is not offered by default.

use std::process::Command;

use e2e::*;
use serde_json::{json, Value};

/// The standard fixture on a gateway that offers h2 first.
pub(crate) fn h2_fixture() -> Fixture {
    Fixture::with(
        GatewayOpts::default().set("listener", "alpn", r#"["h2", "http/1.1"]"#),
        |pki| BackendOpts {
            cert: pki.path("server.pem"),
            key: pki.path("server.key"),
            client_ca: None,
            ticket_key: None,
        },
    )
}

/// What curl got: the HTTP version it spoke, the status, the body.
struct Answer {
    version: String,
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Runs curl against the gateway; `args` go before the URL. The last output line is
/// `<http_version> <status>` (written by `-w`).
fn curl(f: &Fixture, path: &str, args: &[&str]) -> Answer {
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "30",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .arg(format!("https://localhost:{}{path}", f.gw.listen.port()))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut parts = last.split(' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(
        out.status.success(),
        "curl {args:?} {path}: exit {:?}, stderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Answer {
        version,
        status,
        body: body.to_owned(),
    }
}

fn assert_contract_error(a: &Answer, status: u16, code: &str) -> Value {
    assert_eq!(a.status, status, "body {}", a.body);
    let v = a.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["requestId"].is_string(), "{v}");
    v
}

#[test]
fn curl_http2_get_reaches_the_mtls_backend() {
    let f = h2_fixture();
    let a = curl(&f, "/orders/42?x=1", &["--http2", "-H", "X-Custom: yes"]);
    assert_eq!(a.version, "2", "curl should have negotiated h2");
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert!(subject(&v).contains("CN=client-1"), "{v}");
    assert_eq!(v["path"], "/base/42?x=1", "{v}");
    assert_eq!(v["method"], "GET", "{v}");
    // `:authority` became `Host`, then the backend's authority replaced it, as for HTTP/1.1.
    let host = v["headers"]["host"].as_str().unwrap_or_default();
    assert!(
        host.starts_with("127.0.0.1:") || host.starts_with("localhost:"),
        "{v}"
    );
    assert_eq!(v["headers"]["x-custom"], "yes", "{v}");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{v}");
    // And the request was counted like any other.
    let (_, n) = f.gw.wait_metric(
        "edgegw_requests_total",
        &[("api", "orders"), ("code", "200")],
        1.0,
    );
    assert!(n >= 1.0);
}

#[test]
fn curl_http2_posts_10_mb_and_gets_chunked_answers() {
    let f = h2_fixture();
    let dir = testkit::temp_dir("h2-post").expect("temp dir");
    let file = dir.path().join("body.bin");
    std::fs::write(&file, vec![b'x'; 10 * 1024 * 1024]).expect("write body");
    let data = format!("@{}", file.display());
    // With a length (curl sends content-length) ...
    let a = curl(&f, "/orders/upload", &["--http2", "--data-binary", &data]);
    assert_eq!(a.version, "2");
    let v = a.json();
    assert_eq!(v["method"], "POST", "{v}");
    assert_eq!(v["bodyLength"], json!(10 * 1024 * 1024), "{v}");
    // ... and without one (no content-length: chunked to the backend).
    let a = curl(
        &f,
        "/orders/upload",
        &[
            "--http2",
            "-H",
            "Transfer-Encoding:",
            "-H",
            "Content-Length:",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["bodyLength"], json!(10 * 1024 * 1024));
    // A chunked backend answer arrives decoded, whole.
    let a = curl(&f, "/orders/7?chunked=1", &["--http2"]);
    assert_eq!(a.version, "2");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["path"], "/base/7?chunked=1");
}

#[test]
fn curl_http2_gets_contract_errors() {
    let f = h2_fixture();
    let a = curl(&f, "/nothing", &["--http2"]);
    assert_eq!(a.version, "2");
    assert_contract_error(&a, 404, "NotFound");
    // A backend whose (self-signed) chain is validated: 500 BackendTlsError.
    let r = f.admin.put_backend(
        "strict",
        &format!("{}/s", f.backend.url()),
        true,
        false,
        Some("client-1"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(f.admin.put_api("strict", "/strict", "strict").status, 201);
    let a = curl(&f, "/strict/1", &["--http2"]);
    let v = assert_contract_error(&a, 500, "BackendTlsError");
    assert_eq!(
        v["error"]["details"],
        json!([{"reason": "UntrustedChain"}]),
        "{v}"
    );
}

#[test]
fn http1_still_works_next_to_h2_and_h2_is_off_by_default() {
    let f = h2_fixture();
    let a = curl(&f, "/orders/1", &["--http1.1"]);
    assert_eq!(a.version, "1.1");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(subject(&a.json()).contains("CN=client-1"));
    // The default listener offers only http/1.1: curl's h2 offer falls back.
    let d = Fixture::standard();
    let a = curl(&d, "/orders/1", &["--http2"]);
    assert_eq!(a.version, "1.1", "h2 must not be offered by default");
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn curl_http2_multiplexes_twenty_streams() {
    let f = h2_fixture();
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--http2", "--parallel", "--parallel-max", "20"])
        .args(["--max-time", "30", "-w", "%{http_version} %{http_code}\n"]);
    for i in 0..20 {
        cmd.args(["-o", "/dev/null"]).arg(format!(
            "https://localhost:{}/orders/{i}?delay_ms=50",
            f.gw.listen.port()
        ));
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    assert!(lines.iter().all(|l| *l == "2 200"), "{text}");
}
