//! The operator console in a real browser: a real edgegw (console on its admin listener)
//! and a real mTLS backend started here, then `tests/console/console_flow.py` drives
//! Debian's Chromium through the seed's flow with Playwright for Python.
//!
//! Needs `chromium` (`apt-get install -y chromium`) and Playwright for Python
//! (`python3 -m pip install playwright`; no browser download: it is given
//! `/usr/bin/chromium`). `./dev test` installs both. Screenshots of every page (1280x800,
//! one at phone width) go to `target/console-screenshots/`.
//! Run: `cargo test --release --workspace --test console`.

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::process::Command;

use e2e::gateway::TOKEN;
use e2e::util::repo_root;
use e2e::*;
use testkit::{Cert, KeyType, P12};

#[test]
fn the_seed_flow_through_the_console_in_chromium() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed: apt-get install -y chromium"
    );
    let probe = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .status()
        .expect("python3");
    assert!(
        probe.success(),
        "Playwright for Python is needed: python3 -m pip install playwright"
    );
    let pki = Pki::new();
    let backend = Backend::simple(&pki, "server.pem", "server.key");
    let gw = Gateway::start();
    // A certificate whose subject is markup: the page must show it as text.
    let kit = pki.kit();
    kit.self_signed(
        "xss",
        &Cert::new(
            "/O=edgegw-test/CN=<img src=x onerror=alert(1)>",
            KeyType::P256,
        ),
    )
    .expect("xss certificate");
    kit.pkcs12("xss.p12", &P12::new("xss", P12_PASSWORD))
        .expect("xss.p12");
    let client_p12 = pki.path("client-1.p12");
    std::fs::write(&client_p12, pki.p12("client-1", P12_PASSWORD, false)).expect("client-1.p12");
    let shots = repo_root().join("target/console-screenshots");
    let output = Command::new("python3")
        .arg(repo_root().join("tests/console/console_flow.py"))
        .env("CONSOLE_URL", format!("http://{}/", gw.admin_addr))
        .env("CONSOLE_TOKEN", TOKEN)
        .env("CONSOLE_P12", &client_p12)
        .env("CONSOLE_P12_PASSWORD", P12_PASSWORD)
        .env("CONSOLE_XSS_P12", pki.path("xss.p12"))
        .env("CONSOLE_THUMBPRINT", pki.thumbprint("client-1.pem"))
        .env("CONSOLE_BACKEND", format!("{}/base", backend.url()))
        .env("CONSOLE_SHOTS", &shots)
        .output()
        .expect("running the console flow");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the console flow failed:\n{text}\n--- edgegw ---\n{}",
        gw.stderr()
    );
    assert!(text.contains("console flow: ok"), "{text}");
    // One screenshot per page (the README shows the certificates page).
    for page in [
        "signin",
        "certificates",
        "backends",
        "apis",
        "design",
        "test",
        "in-use",
        "overview",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
}

/// The console's own answers, without a browser: the page and its assets carry the strict
/// headers and need no token (they hold no data); everything with data needs the bearer
/// header, so a cross-site form post (which can only carry cookies) is refused.
#[test]
fn console_headers_and_the_token_rule() {
    use e2e::http::plain_request;
    let gw = Gateway::start();
    for path in ["/", "/console/app.js", "/console/app.css"] {
        let r = plain_request(gw.admin_addr, Request::get(path)).expect("GET");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    let page = plain_request(gw.admin_addr, Request::get("/"))
        .expect("GET /")
        .text();
    assert!(
        !page.contains("<script>") && !page.contains(" style="),
        "inline script or style"
    );
    // Only the console's own files are public; any other path needs the token first.
    assert_error(
        &plain_request(gw.admin_addr, Request::get("/console/secret.txt")).expect("GET"),
        401,
        "Unauthorized",
    );
    assert_error(&gw.admin().get("/console/secret.txt"), 404, "NotFound");
    // A form post from another site: no Authorization header, a cookie at most.
    let form = Request::new("PUT", "/certificates/evil")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Origin", "https://evil.example")
        .header("Cookie", "token=guess")
        .body("data=AAAA&password=x");
    assert_error(
        &plain_request(gw.admin_addr, form).expect("PUT"),
        401,
        "Unauthorized",
    );
    for path in ["/overview", "/certificates"] {
        assert_error(
            &plain_request(gw.admin_addr, Request::get(path)).expect("GET"),
            401,
            "Unauthorized",
        );
    }
    let a = gw.admin();
    let overview = a.get("/overview").json();
    assert_eq!(
        overview["workers"].as_array().map(Vec::len),
        Some(2),
        "{overview}"
    );
    assert!(overview["generation"].as_u64().is_some(), "{overview}");
    // A test call of an API that does not exist, and one outside its API's path.
    assert_error(
        &a.send(Request::new("POST", "/apis/nope/test").body(r#"{"path":"/x"}"#)),
        404,
        "NotFound",
    );
}
