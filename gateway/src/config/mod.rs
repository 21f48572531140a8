//! The configuration file (contract §2): a TOML document whose keys are all optional.
//!
//! [`Config::from_toml_str`] turns the text into a validated [`Config`]; a value of that type
//! is always usable as is (addresses parsed, paths present or absent, durations non-zero where
//! zero makes no sense, `server.workers` resolved to a real thread count). Every problem in a
//! file is reported at once, each one naming its key (`listener.address: ...`), so that
//! `edgegw check` can list them all.
//!
//! `docs/config.example.toml` is the documented default file; a unit test keeps it equal to
//! [`Config::embedded_defaults`].

mod duration;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse_duration;

use crate::secret::Secret;

/// Largest accepted `server.workers`.
pub const MAX_WORKERS: usize = 1024;

/// The protocols `listener.alpn` accepts (their ALPN names).
pub const KNOWN_ALPN_PROTOCOLS: &[&str] = &["h2", "http/1.1"];

/// The key-exchange group names `listener.key_exchange_groups` accepts (BoringSSL spelling).
pub const KNOWN_KEY_EXCHANGE_GROUPS: &[&str] = &[
    "X25519MLKEM768",
    "X25519Kyber768Draft00",
    "X25519",
    "P-256",
    "P-384",
    "P-521",
];

/// The whole configuration of one gateway process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[server]`: process-wide settings.
    pub server: ServerConfig,
    /// `[listener]`: the public TLS data-plane listener.
    pub listener: ListenerConfig,
    /// `[admin]`: the management REST API.
    pub admin: AdminConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[store]`: where resources (certificates, backends, APIs) are kept.
    pub store: StoreConfig,
    /// `[steering]`: how accepted connections are spread over the workers.
    pub steering: SteeringConfig,
    /// `[upstream]`: connections from the gateway to its backends.
    pub upstream: UpstreamConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `server.workers`: number of data-plane threads, already resolved: `0` in the file
    /// becomes the number of online CPUs (capped at [`MAX_WORKERS`]). Default `0`.
    pub workers: usize,
    /// `server.data_dir`: directory for the embedded store, generated keys and certificates.
    /// Default `./edgegw-data`.
    pub data_dir: PathBuf,
    /// `server.shutdown_grace`: on SIGTERM/SIGINT, how long in-flight requests may still run
    /// before the process exits. May be `"0s"`. Default `10s`.
    pub shutdown_grace: Duration,
    /// `server.access_log`: one JSON line per request. `""` (default): off; `"stderr"`: to
    /// standard error; anything else: a file path, appended to.
    pub access_log: AccessLog,
    /// `server.pin_workers`: keep each worker thread on its own CPU (worker i on CPU
    /// i mod online CPUs). Default `false`: measured (docs/BENCHMARKS.md), pinning costs a
    /// third of the new-connection rate when clients or other processes share the cores
    /// (the scheduler cannot move a pinned worker off a busy CPU) and gains nothing
    /// measurable when they do not. Unset: pinned only with `steering.policy = "cpu"`,
    /// whose point is that the worker of a CPU runs on that CPU (see `pin_workers()`).
    pub pin_workers: Option<bool>,
    /// `server.max_connections`: open client connections per worker. At the limit a worker
    /// stops accepting until one closes, so new connections wait in the kernel's accept
    /// queue (or go to another worker) instead of being accepted and starved. Default 10000.
    pub max_connections: usize,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccessLog {
    Off,
    Stderr,
    File(PathBuf),
}

/// `[listener]`: the public data-plane listener (TLS only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// `listener.address`: `IP:PORT` to accept TLS connections on. Default `127.0.0.1:8443`.
    pub address: SocketAddr,
    /// `listener.certificate`: PEM certificate chain file. `""` (the default) means none: a
    /// self-signed P-256 certificate is generated once into `data_dir`. Set together with
    /// `private_key` or not at all.
    pub certificate: Option<PathBuf>,
    /// `listener.private_key`: PEM private key file matching `certificate`. `""` (the
    /// default) means none. Set together with `certificate` or not at all.
    pub private_key: Option<PathBuf>,
    /// `listener.session_tickets`: issue TLS 1.3/1.2 session tickets for resumption.
    /// Default `true`.
    pub session_tickets: bool,
    /// `listener.ticket_key_rotation`: a new ticket key every period; the previous one still
    /// decrypts. Must be non-zero. Default `12h`.
    pub ticket_key_rotation: Duration,
    /// `listener.key_exchange_groups`: TLS key-exchange groups in preference order, BoringSSL
    /// names (see [`KNOWN_KEY_EXCHANGE_GROUPS`]); non-empty, no duplicates.
    /// Default `["X25519MLKEM768", "X25519", "P-256"]`.
    pub key_exchange_groups: Vec<String>,
    /// `listener.alpn`: the application protocols offered by ALPN, in the server's
    /// preference order (see [`KNOWN_ALPN_PROTOCOLS`]); non-empty, no duplicates. Default
    /// `["http/1.1"]`: HTTP/2 is opt-in until its attack hardening (issue 10) is tested. A
    /// client that offers no ALPN at all speaks HTTP/1.1.
    pub alpn: Vec<String>,
    /// `listener.handshake_timeout`: a new connection must finish its TLS handshake within
    /// this. Non-zero. Default `10s`.
    pub handshake_timeout: Duration,
    /// `listener.header_timeout`: once its first byte arrived, a request head must arrive
    /// whole within this (else 408). Non-zero. Default `10s`.
    pub header_timeout: Duration,
    /// `listener.idle_timeout`: a keep-alive connection waiting for its next request is
    /// closed after this. Non-zero. Default `60s`.
    pub idle_timeout: Duration,
    /// `listener.body_timeout`: the longest wait for the next bytes of a request body.
    /// Non-zero. Default `10s`.
    pub body_timeout: Duration,
    /// `listener.body_min_rate`: bytes per second a request body must keep up on average
    /// after its first `body_timeout` (a body sent a byte at a time is cut); `0` turns the
    /// rate check off. Default `1024`.
    pub body_min_rate: u64,
    /// `listener.max_request_body_bytes`: largest request body (413 beyond it); `0` means no
    /// limit. Default 1 GiB.
    pub max_request_body_bytes: u64,
    /// `listener.client_certificates`: whether the listener asks callers for a certificate:
    /// `off` (the default), `optional` (asked, checked by API policies) or `required` (a
    /// handshake without a certificate that verifies against `client_ca_ids` fails).
    pub client_certificates: ClientCertificates,
    /// `listener.client_ca_ids`: CA certificate resources callers' certificates are
    /// verified against (uploaded through the admin API; a re-upload applies to the next
    /// handshake). Default empty. Each is checked as a resource id when the gateway
    /// starts (the id rule is the model's, a layer above this one).
    pub client_ca_ids: Vec<String>,
    /// `listener.forward_client_certificate`: send the caller's certificate to the backend
    /// as `X-Forwarded-Client-Cert: Hash=<sha256>;Subject="..."`. Default `false`. A header of
    /// that name from the caller is removed either way.
    pub forward_client_certificate: bool,
}

/// `listener.client_certificates`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertificates {
    Off,
    Optional,
    Required,
}

impl ClientCertificates {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertificates::Off => "off",
            ClientCertificates::Optional => "optional",
            ClientCertificates::Required => "required",
        }
    }
}

/// `[admin]`: the management REST API (plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `admin.address`: `IP:PORT` of the management API. Default `127.0.0.1:9090`.
    pub address: SocketAddr,
    /// `admin.token`: the bearer token. `""` (the default) means none in the file: the
    /// environment variable `EDGEGW_ADMIN_TOKEN` wins anyway; without it a random token is
    /// written once to `data_dir/admin.token`. No whitespace or control characters.
    /// A [`Secret`]: `Debug` of the config never shows it, and it is wiped on drop.
    pub token: Option<Secret<String>>,
    /// `admin.allow_plaintext`: the admin API speaks plain HTTP; on an address that is not
    /// loopback the token would cross the network in the clear, so the gateway refuses to
    /// start there unless this is set on purpose. Default `false`.
    pub allow_plaintext: bool,
}

impl AdminConfig {
    /// Why the admin API may not listen where it is configured to, or `None` when it may:
    /// it has no TLS, so on an address that is not loopback (`0.0.0.0`, `[::]` and every
    /// routable address included) the bearer token and every uploaded PKCS#12 password
    /// would cross the network in the clear, unless `admin.allow_plaintext = true` says
    /// that is intended (a trusted network, or a TLS-terminating proxy in front).
    /// `edgegw check` reports it under `admin.address`, and `edgegw run` refuses to start.
    pub fn plaintext_refusal(&self) -> Option<String> {
        let ip = self.address.ip().to_canonical();
        if ip.is_loopback() || self.allow_plaintext {
            return None;
        }
        Some(format!(
            "{} is not a loopback address and the admin API has no TLS: the bearer token would cross the network in the clear; set admin.allow_plaintext = true to serve it there anyway (a trusted network, or a TLS proxy in front)",
            self.address
        ))
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `metrics.address`: `IP:PORT` serving `GET /metrics` (Prometheus text, no auth).
    /// Default `127.0.0.1:9091`.
    pub address: SocketAddr,
}

/// `store.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// `"embedded"`: a file in `data_dir`.
    Embedded,
    /// `"etcd"`: an etcd cluster at `etcd_endpoints`, keys under `etcd_prefix`.
    Etcd,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `store.kind`: `"embedded"` (the default) or `"etcd"`.
    pub kind: StoreKind,
    /// `store.etcd_endpoints`: `http://` or `https://` URLs of etcd members; checked (and
    /// required non-empty) only when `kind = "etcd"`. Default `["http://127.0.0.1:2379"]`.
    pub etcd_endpoints: Vec<String>,
    /// `store.etcd_prefix`: key prefix in etcd; starts and ends with `/`. Default `/edgegw/`.
    pub etcd_prefix: String,
    /// `store.master_key_file`: file holding 32 random bytes, base64, that encrypt private
    /// keys at rest. `""` (the default) means none in the file: the environment variable
    /// `EDGEGW_MASTER_KEY` wins anyway; without it a key is generated once into
    /// `data_dir/master.key`.
    pub master_key_file: Option<PathBuf>,
    /// `store.etcd_timeout`: the longest an etcd request may take (an admin write then
    /// answers 503 `StoreUnavailable`); also the connect timeout. Default `2s`.
    pub etcd_timeout: Duration,
    /// `store.node_name`: how this node names itself in audit lines and logs (fleet mode).
    /// Default: the host name and the listener port (`host:8443`).
    pub node_name: Option<String>,
}

/// `steering.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SteeringMode {
    /// `"auto"`: eBPF steering if the program loads, else the kernel's `SO_REUSEPORT` spreading.
    Auto,
    /// `"ebpf"`: eBPF steering; failing to load it is fatal.
    Ebpf,
    /// `"kernel"`: the kernel's own `SO_REUSEPORT` spreading.
    Kernel,
}

/// `steering.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SteeringPolicy {
    /// `"hash"`: by a hash of the connection's 4-tuple.
    Hash,
    /// `"cpu"`: to the worker pinned to the CPU that received the packet.
    Cpu,
    /// `"least-loaded"`: to the worker with the fewest open connections.
    LeastLoaded,
}

/// `[steering]`: how new connections are spread over the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeringConfig {
    /// `steering.mode`: `"auto"` (the default), `"ebpf"` or `"kernel"`.
    pub mode: SteeringMode,
    /// `steering.policy`: `"hash"` (the default), `"cpu"` or `"least-loaded"`.
    pub policy: SteeringPolicy,
    /// `steering.stall_threshold`: a worker whose event loop has not run for this long is
    /// taken out of the eBPF socket map until it runs again. Non-zero. Default `1s`.
    pub stall_threshold: Duration,
}

/// `[upstream]`: connections to backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `upstream.max_idle_per_key`: idle pooled connections kept per pool key per worker;
    /// `0` disables pooling. Default `64`.
    pub max_idle_per_key: usize,
    /// `upstream.idle_timeout`: an idle pooled connection is closed after this long.
    /// Non-zero. Default `60s`.
    pub idle_timeout: Duration,
    /// `upstream.connect_timeout`: limit on TCP connect plus TLS handshake to a backend.
    /// Non-zero. Default `5s`.
    pub connect_timeout: Duration,
    /// `upstream.request_timeout`: how long a backend may take to answer a request (then
    /// 504 `BackendTimeout`). Non-zero. Default `30s`.
    pub request_timeout: Duration,
    /// `upstream.max_connections_per_backend`: requests in flight to one backend per worker
    /// (each holds one upstream connection). A request beyond it waits for a free one up to
    /// `connect_timeout`, then gets 504 `BackendTimeout`. `0` means no limit. Default `512`.
    pub max_connections_per_backend: usize,
}

impl Config {
    /// Whether the workers are pinned to CPUs: `server.pin_workers`, or when unset, only
    /// under the `cpu` steering policy.
    pub fn pin_workers(&self) -> bool {
        self.server
            .pin_workers
            .unwrap_or(self.steering.policy == SteeringPolicy::Cpu)
    }

    /// Exactly the defaults of contract §2 (with `server.workers = 0` resolved to the number
    /// of online CPUs). This is what `edgegw run` uses without `--config`.
    pub fn embedded_defaults() -> Config {
        let local = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        Config {
            server: ServerConfig {
                workers: resolve_workers(0),
                data_dir: PathBuf::from("./edgegw-data"),
                shutdown_grace: Duration::from_secs(10),
                access_log: AccessLog::Off,
                pin_workers: None,
                max_connections: 10_000,
            },
            listener: ListenerConfig {
                address: local(8443),
                certificate: None,
                private_key: None,
                session_tickets: true,
                ticket_key_rotation: Duration::from_secs(12 * 3600),
                key_exchange_groups: vec![
                    "X25519MLKEM768".to_owned(),
                    "X25519".to_owned(),
                    "P-256".to_owned(),
                ],
                alpn: vec!["http/1.1".to_owned()],
                handshake_timeout: Duration::from_secs(10),
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                body_timeout: Duration::from_secs(10),
                body_min_rate: 1024,
                max_request_body_bytes: 1 << 30,
                client_certificates: ClientCertificates::Off,
                client_ca_ids: Vec::new(),
                forward_client_certificate: false,
            },
            admin: AdminConfig {
                address: local(9090),
                token: None,
                allow_plaintext: false,
            },
            metrics: MetricsConfig {
                address: local(9091),
            },
            store: StoreConfig {
                kind: StoreKind::Embedded,
                etcd_endpoints: vec!["http://127.0.0.1:2379".to_owned()],
                etcd_prefix: "/edgegw/".to_owned(),
                master_key_file: None,
                etcd_timeout: Duration::from_secs(2),
                node_name: None,
            },
            steering: SteeringConfig {
                mode: SteeringMode::Auto,
                policy: SteeringPolicy::Hash,
                stall_threshold: Duration::from_secs(1),
            },
            upstream: UpstreamConfig {
                max_idle_per_key: 64,
                idle_timeout: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(30),
                max_connections_per_backend: 512,
            },
        }
    }

    /// Parses and validates a TOML document. On failure returns every problem found, each
    /// naming its key.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        parse::parse(text)
    }

    /// Reads and parses the file at `path`. An I/O error is reported under the path itself.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml_str(&text),
            Err(e) => Err(ConfigErrors(vec![ConfigError::new(
                path.display().to_string(),
                format!("cannot read configuration file: {e}"),
            )])),
        }
    }
}

impl Default for Config {
    /// Same as [`Config::embedded_defaults`].
    fn default() -> Self {
        Self::embedded_defaults()
    }
}

/// `server.workers` as used at run time: `0` means one per online CPU.
fn resolve_workers(configured: usize) -> usize {
    if configured == 0 {
        online_cpus().clamp(1, MAX_WORKERS)
    } else {
        configured
    }
}

/// Number of online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), falling back to the available
/// parallelism of this process, then to 1.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions; it only reads system information.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        usize::try_from(n).unwrap_or(1)
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key the problem is about (`listener.address`,
    /// `listener.key_exchange_groups[1]`), a `line L, column C` position for TOML syntax
    /// errors, or the file path for I/O errors.
    pub key: String,
    /// What is wrong, one line.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in one configuration file (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Whether some error is about exactly `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.0.iter().any(|e| e.key == key)
    }
}

impl fmt::Display for ConfigErrors {
    /// One line per error, each `key: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
