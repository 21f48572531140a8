//! End-to-end test harness for edgegw: real `edgegw` and `loadtest backend` processes,
//! real TLS handshakes, certificates and PKCS#12 files made with the `openssl` CLI.
//!
//! Binaries are expected in `target/release` (`cargo build --release --bins`).

// Test code: the harness's way to fail is a panic naming what broke (a missing binary,
// a port, a temp dir), which fails the test that used it. clippy.toml's allow-expect-in-tests
// does not reach a library crate, hence this.
#![allow(clippy::expect_used)]

pub mod backend;
pub mod fault_backend;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod nginx;
pub mod pki;
pub mod prometheus;
pub mod steering;
pub mod util;

pub use backend::{Backend, BackendOpts};
pub use gateway::{Gateway, GatewayOpts};
pub use http::{Admin, Request, Response, TlsClient};
pub use pki::Pki;

use serde_json::Value;

/// Password used for the standard client-1 / client-2 bundles.
pub const P12_PASSWORD: &str = "s3cret-pass";

/// The usual arrangement: a PKI, a backend with a self-signed server certificate that
/// accepts any client certificate, a gateway with `client-1` uploaded, backend `be1`
/// (`https://127.0.0.1:PORT/base`, validation off, client-1 bound) and API `orders`
/// (`/orders` -> `be1`).
pub struct Fixture {
    // Field order = drop order: the gateway goes first (its stderr is printed on panic).
    pub gw: Gateway,
    pub backend: Backend,
    pub pki: Pki,
    pub admin: Admin,
    pub client: TlsClient,
}

impl Fixture {
    pub fn standard() -> Fixture {
        Self::with(GatewayOpts::default(), |pki| BackendOpts {
            cert: pki.path("server.pem"),
            key: pki.path("server.key"),
            client_ca: None,
            ticket_key: None,
        })
    }

    pub fn with(opts: GatewayOpts, backend_opts: impl FnOnce(&Pki) -> BackendOpts) -> Fixture {
        Self::with_pki(Pki::new(), |_| opts, backend_opts)
    }

    /// Like [`Fixture::with`], with gateway options that may refer to PKI files.
    pub fn with_pki(
        pki: Pki,
        opts: impl FnOnce(&Pki) -> GatewayOpts,
        backend_opts: impl FnOnce(&Pki) -> BackendOpts,
    ) -> Fixture {
        let opts = opts(&pki);
        let backend = Backend::start(backend_opts(&pki));
        let gw = Gateway::start_with(opts);
        let admin = gw.admin();
        let client = gw.client();
        let r = admin.put_certificate(
            "client-1",
            &pki.p12("client-1", P12_PASSWORD, false),
            P12_PASSWORD,
        );
        assert_eq!(r.status, 201, "upload client-1: {}", r.text());
        let r = admin.put_backend(
            "be1",
            &format!("{}/base", backend.url()),
            false,
            false,
            Some("client-1"),
        );
        assert_eq!(r.status, 201, "put backend be1: {}", r.text());
        let r = admin.put_api("orders", "/orders", "be1");
        assert_eq!(r.status, 201, "put api orders: {}", r.text());
        Fixture {
            gw,
            backend,
            pki,
            admin,
            client,
        }
    }

    /// Upload `name` (modern PKCS#12, standard password), asserting 2xx.
    pub fn upload(&self, name: &str) -> Value {
        let r = self.admin.put_certificate(
            name,
            &self.pki.p12(name, P12_PASSWORD, false),
            P12_PASSWORD,
        );
        assert!(
            r.status == 201 || r.status == 200,
            "upload {name}: {} {}",
            r.status,
            r.text()
        );
        r.json()
    }
}

/// The JSON echo of the test backend from a 200 response.
pub fn echo(r: &Response) -> Value {
    assert_eq!(
        r.status,
        200,
        "expected 200 from the backend through the gateway, got {} {}",
        r.status,
        r.text()
    );
    r.json()
}

/// The backend-seen subject (e.g. `CN=client-1, O=edgegw-test`).
pub fn subject(v: &Value) -> String {
    v["subject"].as_str().unwrap_or_default().to_string()
}

/// Assert a contract error: status, code, shape; returns the body.
pub fn assert_error(r: &Response, status: u16, code: &str) -> Value {
    assert_eq!(
        r.status,
        status,
        "expected {status} {code}, got {} {}",
        r.status,
        r.text()
    );
    let got = r.error_code();
    assert_eq!(got, code, "expected error code {code}, body {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.contains("json"),
        "error content-type should be JSON, got {ct:?}"
    );
    r.json()
}
