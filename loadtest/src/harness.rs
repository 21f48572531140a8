//! Everything `loadtest compare` (and the smoke test) starts: a throwaway PKI (made with
//! testkit's generator, which runs the openssl CLI), the mTLS test backend, and each server
//! under test (edgegw, NGINX, HAProxy) configured for the same job: TLS to clients, pooled
//! keep-alive mTLS to the backend with chain validation off and upstream session reuse on,
//! the same worker count and the same key-exchange group. Every process is a child that is
//! stopped on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{Cert, KeyType, NginxConfig, P12};

use crate::admin::Endpoint;

/// HAProxy refuses to start unless it can open about 2 x maxconn descriptors, and an
/// unprivileged-for-rlimits root (no CAP_SYS_RESOURCE) cannot raise the hard limit: keep
/// maxconn under half of it. The idle-connection figure for HAProxy is capped to match.
pub const HAPROXY_MAXCONN: usize = 9_500;

/// The password of the client PKCS#12 bundle.
pub const P12_PASSWORD: &str = "loadtest";
/// The admin token edgegw is started with.
pub const ADMIN_TOKEN: &str = "loadtest-admin-token-0123456789";
/// Ids of what is configured in edgegw.
pub const CERTIFICATE_ID: &str = "loadtest";
pub const BACKEND_ID: &str = "loadtest";

/// Finds an executable: in `PATH`, then in the sbin directories Debian puts servers in.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The directory holding `edgegw` and `loadtest` (target/release): this executable's own
/// directory, or its parent when running as a test from target/release/deps.
pub fn bin_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..2 {
        if dir.join("edgegw").is_file() && dir.join("loadtest").is_file() {
            return Ok(dir);
        }
        dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    Err("edgegw and loadtest binaries not found next to this one: \
         run `cargo build --release -p gateway -p loadtest` first"
        .into())
}

/// A free port on 127.0.0.1, never the same twice in this process (see testkit's).
pub fn free_port() -> Result<u16, String> {
    testkit::free_port().map_err(|e| format!("finding a free port: {e}"))
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&local(port), Duration::from_millis(200)).is_ok()
}

/// The test PKI in a temporary directory (removed on drop), made by testkit.
pub struct Pki {
    kit: testkit::Pki,
}

impl Pki {
    /// server.pem/.key (P-256, self-signed, localhost and 127.0.0.1), client.pem/.key
    /// (P-256, self-signed), client.p12 (OpenSSL 3's default AES/PBKDF2 form), the combined
    /// cert+key files HAProxy wants, and a 48-byte ticket key for the backend.
    pub fn create() -> Result<Pki, String> {
        let kit = testkit::Pki::new("loadtest")?;
        kit.self_signed("server", &Cert::localhost(KeyType::P256))?;
        kit.self_signed(
            "client",
            &Cert::new("/CN=loadtest-client/O=edgegw-loadtest", KeyType::P256),
        )?;
        kit.combined_pem("server")?;
        kit.combined_pem("client")?;
        kit.pkcs12(
            "client.p12",
            &P12::new("client", P12_PASSWORD).friendly_name("loadtest-client"),
        )?;
        kit.random_file("ticket.key", 48)?;
        Ok(Pki { kit })
    }

    /// `n` more client certificates, each with its own P-256 key and subject
    /// (`CN=loadtest-rot-I`), as PKCS#12 files with [`P12_PASSWORD`]; returns their paths.
    /// What a rotation re-uploads: every upload a new thumbprint.
    pub fn client_variants(&self, n: usize) -> Result<Vec<PathBuf>, String> {
        (0..n)
            .map(|i| {
                let name = format!("rot-{i}");
                self.kit.self_signed(
                    &name,
                    &Cert::new(
                        &format!("/CN=loadtest-rot-{i}/O=edgegw-loadtest"),
                        KeyType::P256,
                    ),
                )?;
                let file = format!("{name}.p12");
                self.kit.pkcs12(&file, &P12::new(&name, P12_PASSWORD))?;
                Ok(self.kit.path(&file))
            })
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.kit.dir()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.kit.path(file)
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Proc, String> {
        let err = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let out = err
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until `port` accepts connections; fails early if the process exits.
    pub fn wait_port(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if port_open(port) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before listening on {port}:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not listen on {port} within {timeout:?}:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill() with our own child's pid; it is not reaped yet, so the pid is ours.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `loadtest backend` with the PKI's server certificate and a ticket key that survives restarts.
pub struct Backend {
    pub proc: Proc,
    pub port: u16,
    cmd: Vec<String>,
    logdir: PathBuf,
    runs: u32,
}

impl Backend {
    pub fn start(pki: &Pki, workers: usize) -> Result<Backend, String> {
        Self::start_on(pki, workers, "auto")
    }

    /// `start` on the given event loop (`--driver auto|uring|tokio`).
    pub fn start_on(pki: &Pki, workers: usize, driver: &str) -> Result<Backend, String> {
        let port = free_port()?;
        let bin = bin_dir()?.join("loadtest");
        let cmd = vec![
            bin.display().to_string(),
            "backend".into(),
            "--listen".into(),
            local(port).to_string(),
            "--cert".into(),
            pki.path("server.pem").display().to_string(),
            "--key".into(),
            pki.path("server.key").display().to_string(),
            "--ticket-key".into(),
            pki.path("ticket.key").display().to_string(),
            "--workers".into(),
            workers.to_string(),
            "--driver".into(),
            driver.into(),
        ];
        let proc = Self::spawn(&cmd, pki.dir(), 1, port)?;
        Ok(Backend {
            proc,
            port,
            cmd,
            logdir: pki.dir().to_path_buf(),
            runs: 1,
        })
    }

    fn spawn(cmd: &[String], logdir: &Path, run: u32, port: u16) -> Result<Proc, String> {
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]);
        let mut p = Proc::spawn("backend", c, logdir.join(format!("backend-{run}.log")))?;
        p.wait_port(port, Duration::from_secs(10))?;
        Ok(p)
    }

    /// Stops and starts the backend on the same port: every pooled upstream connection dies;
    /// sessions stay resumable (same ticket key).
    pub fn restart(&mut self) -> Result<(), String> {
        self.proc.stop();
        self.runs += 1;
        self.proc = Self::spawn(&self.cmd, &self.logdir, self.runs, self.port)?;
        Ok(())
    }
}

/// Which server is under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Edgegw,
    Nginx,
    Haproxy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Edgegw => "edgegw",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        match s.trim() {
            "edgegw" => Ok(Kind::Edgegw),
            "nginx" => Ok(Kind::Nginx),
            "haproxy" => Ok(Kind::Haproxy),
            other => Err(format!("unknown server {other:?}: edgegw, nginx, haproxy")),
        }
    }
}

/// A server under test, listening with TLS on `port` and proxying every path to the backend.
pub struct Server {
    pub kind: Kind,
    pub proc: Proc,
    pub port: u16,
    /// edgegw only: its admin API and metrics endpoint.
    pub admin: Option<Endpoint>,
    /// edgegw only: `http://127.0.0.1:PORT` of the admin API.
    pub admin_url: Option<String>,
    pub metrics: Option<Endpoint>,
    _workdir: testkit::TempDir,
}

impl Server {
    pub fn start(
        kind: Kind,
        pki: &Pki,
        backend_port: u16,
        workers: usize,
    ) -> Result<Server, String> {
        Self::start_with(kind, pki, backend_port, workers, false)
    }

    /// `start`, with edgegw's `server.pin_workers` chosen (the peers do not pin).
    pub fn start_with(
        kind: Kind,
        pki: &Pki,
        backend_port: u16,
        workers: usize,
        edgegw_pin_workers: bool,
    ) -> Result<Server, String> {
        Self::start_inner(kind, pki, backend_port, workers, edgegw_pin_workers, &[])
    }

    /// edgegw as `start` configures it (not pinned), plus more config keys:
    /// `(section, key, TOML value)`, e.g. `("listener", "header_timeout", "\"3s\"")`.
    pub fn start_edgegw(
        pki: &Pki,
        backend_port: u16,
        workers: usize,
        extra: &[(&str, &str, String)],
    ) -> Result<Server, String> {
        Self::start_inner(Kind::Edgegw, pki, backend_port, workers, false, extra)
    }

    fn start_inner(
        kind: Kind,
        pki: &Pki,
        backend_port: u16,
        workers: usize,
        edgegw_pin_workers: bool,
        extra: &[(&str, &str, String)],
    ) -> Result<Server, String> {
        let workdir = testkit::temp_dir(&format!("loadtest-{}", kind.name()))?;
        let w = workdir.path();
        let port = free_port()?;
        let log = w.join(format!("{}.log", kind.name()));
        let mut admin_url = None;
        let (mut proc, admin, metrics) = match kind {
            Kind::Edgegw => {
                let admin_port = free_port()?;
                let metrics_port = free_port()?;
                let ports = (port, admin_port, metrics_port);
                let config = edgegw_config(pki, w, ports, workers, edgegw_pin_workers, extra);
                let path = w.join("edgegw.toml");
                std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut cmd = Command::new(bin_dir()?.join("edgegw"));
                cmd.arg("run").arg("--config").arg(&path);
                cmd.env("EDGEGW_LOG", "warn");
                cmd.env_remove("EDGEGW_ADMIN_TOKEN");
                cmd.env_remove("EDGEGW_MASTER_KEY");
                let mut p = Proc::spawn("edgegw", cmd, log)?;
                p.wait_port(admin_port, Duration::from_secs(20))?;
                let url = format!("http://{}", local(admin_port));
                let admin = Endpoint::parse(&url, Some(ADMIN_TOKEN))?;
                admin_url = Some(url);
                let metrics = Endpoint::parse(&format!("http://{}", local(metrics_port)), None)?;
                configure_edgegw(&admin, pki, backend_port)?;
                (p, Some(admin), Some(metrics))
            }
            Kind::Nginx => {
                let bin = find_program("nginx").ok_or("nginx is not installed")?;
                let conf = nginx_config(pki, w, port, backend_port, workers);
                conf.write()?;
                (Proc::spawn("nginx", conf.command(&bin), log)?, None, None)
            }
            Kind::Haproxy => {
                let bin = find_program("haproxy").ok_or("haproxy is not installed")?;
                let path = w.join("haproxy.cfg");
                std::fs::write(&path, haproxy_config(pki, port, backend_port, workers))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let mut cmd = Command::new(bin);
                cmd.arg("-f").arg(&path).arg("-db");
                (Proc::spawn("haproxy", cmd, log)?, None, None)
            }
        };
        proc.wait_port(port, Duration::from_secs(20))?;
        Ok(Server {
            kind,
            proc,
            port,
            admin,
            admin_url,
            metrics,
            _workdir: workdir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// edgegw's /metrics text (empty for the others).
    pub fn metrics_text(&self) -> String {
        self.metrics
            .as_ref()
            .and_then(|m| m.get("/metrics").ok())
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}

/// `ports`: listener, admin, metrics.
fn edgegw_config(
    pki: &Pki,
    w: &Path,
    (port, admin, metrics): (u16, u16, u16),
    workers: usize,
    pin_workers: bool,
    extra: &[(&str, &str, String)],
) -> String {
    let local = |port: u16| format!("127.0.0.1:{port}");
    let mut cfg =
        testkit::EdgegwConfig::new(&w.join("data"), local(port), local(admin), local(metrics));
    cfg.extra = extra
        .iter()
        .map(|(section, key, value)| (section.to_string(), key.to_string(), value.clone()))
        .collect();
    cfg.workers = workers;
    cfg.pin_workers = Some(pin_workers);
    cfg.shutdown_grace = "2s".into();
    cfg.listener_cert = Some((pki.path("server.pem"), pki.path("server.key")));
    // X25519 is what every client of the comparison offers (NGINX and HAProxy are configured
    // with it alone); X25519MLKEM768 is there for compare's post-quantum figures.
    cfg.key_exchange_groups = vec!["X25519".into(), "X25519MLKEM768".into()];
    cfg.admin_token = ADMIN_TOKEN.to_owned();
    cfg.steering_mode = Some("kernel".into());
    cfg.render()
}

/// Uploads the client certificate, points a backend at the test backend with it (validation
/// off: the backend's certificate is self-signed) and routes every path there.
fn configure_edgegw(admin: &Endpoint, pki: &Pki, backend_port: u16) -> Result<(), String> {
    use base64::Engine;
    let p12 = std::fs::read(pki.path("client.p12")).map_err(|e| format!("client.p12: {e}"))?;
    let data = base64::engine::general_purpose::STANDARD.encode(p12);
    admin.put_json(
        &format!("/certificates/{CERTIFICATE_ID}"),
        &serde_json::json!({ "data": data, "password": P12_PASSWORD }),
    )?;
    admin.put_json(
        &format!("/backends/{BACKEND_ID}"),
        &serde_json::json!({
            "url": format!("https://{}", local(backend_port)),
            "tls": { "validateCertificateChain": false, "validateCertificateName": false },
            "credentials": { "certificateId": CERTIFICATE_ID },
        }),
    )?;
    admin.put_json(
        "/apis/loadtest",
        &serde_json::json!({ "path": "/", "backendId": BACKEND_ID }),
    )?;
    Ok(())
}

/// NGINX as the proxy under test. Beyond testkit's skeleton: the same worker count and
/// key-exchange group as the others, enough descriptors and connections for the connection
/// scenarios, session tickets and cache to clients, and pooled keep-alive mTLS upstream with
/// session reuse and chain validation off (the backend's certificate is self-signed).
fn nginx_config(pki: &Pki, w: &Path, port: u16, backend_port: u16, workers: usize) -> NginxConfig {
    let (client_cert, client_key) = (pki.path("client.pem"), pki.path("client.key"));
    NginxConfig::new(w, port, &pki.path("server.pem"), &pki.path("server.key"))
        .workers(workers)
        .worker_connections(16384)
        .error_log_level("warn")
        .access_log(false)
        .main("master_process on;")
        .main("worker_rlimit_nofile 20000;")
        .main("user root;")
        .http("keepalive_requests 1000000;")
        .http("keepalive_timeout 75s;")
        .http(&format!(
            "upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}"
        ))
        .server("ssl_ecdh_curve X25519;")
        .server("ssl_session_tickets on;")
        .server("ssl_session_cache shared:SSL:10m;")
        .location("proxy_pass https://backend;")
        .location("proxy_http_version 1.1;")
        .location("proxy_set_header Connection \"\";")
        .location(&format!("proxy_set_header Host 127.0.0.1:{backend_port};"))
        .location("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
        .location("proxy_set_header X-Forwarded-Proto https;")
        .location(&format!("proxy_ssl_certificate {};", client_cert.display()))
        .location(&format!(
            "proxy_ssl_certificate_key {};",
            client_key.display()
        ))
        .location("proxy_ssl_verify off;")
        .location("proxy_ssl_session_reuse on;")
        .location("proxy_ssl_protocols TLSv1.2 TLSv1.3;")
        .location("proxy_ssl_conf_command Groups X25519;")
}

fn haproxy_config(pki: &Pki, port: u16, backend_port: u16, workers: usize) -> String {
    format!(
        r#"global
    nbthread {workers}
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-server-options ssl-min-ver TLSv1.2
    tune.ssl.default-dh-param 2048

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:{port} ssl crt {server} alpn http/1.1 curves X25519
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend be

backend be
    http-request set-header Host 127.0.0.1:{backend_port}
    server b1 127.0.0.1:{backend_port} ssl verify none crt {client} alpn http/1.1
"#,
        server = pki.path("server-combined.pem").display(),
        client = pki.path("client-combined.pem").display(),
        maxconn = HAPROXY_MAXCONN,
    )
}
