//! TOML text → [`Config`], collecting every error instead of stopping at the first.
//!
//! The document is first parsed into a plain `toml::Table` (only a syntax error stops
//! everything). Each section is then walked by hand: unknown keys are reported, and each
//! known key is converted on its own, so that one bad value does not hide the next.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use crate::secret::Secret;

use super::{
    parse_duration, resolve_workers, AccessLog, AdminConfig, ClientCertificates, Config,
    ConfigError, ConfigErrors, ListenerConfig, MetricsConfig, ServerConfig, SteeringConfig,
    SteeringMode, SteeringPolicy, StoreConfig, StoreKind, UpstreamConfig, KNOWN_ALPN_PROTOCOLS,
    KNOWN_KEY_EXCHANGE_GROUPS, MAX_WORKERS,
};

/// Every section and its keys, in the contract's order.
const SECTIONS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "workers",
            "data_dir",
            "shutdown_grace",
            "access_log",
            "pin_workers",
            "max_connections",
        ],
    ),
    (
        "listener",
        &[
            "address",
            "certificate",
            "private_key",
            "session_tickets",
            "ticket_key_rotation",
            "key_exchange_groups",
            "alpn",
            "handshake_timeout",
            "header_timeout",
            "idle_timeout",
            "body_timeout",
            "body_min_rate",
            "max_request_body_bytes",
            "client_certificates",
            "client_ca_ids",
            "forward_client_certificate",
        ],
    ),
    ("admin", &["address", "token", "allow_plaintext"]),
    ("metrics", &["address"]),
    (
        "store",
        &[
            "kind",
            "etcd_endpoints",
            "etcd_prefix",
            "master_key_file",
            "etcd_timeout",
            "node_name",
        ],
    ),
    ("steering", &["mode", "policy", "stall_threshold"]),
    (
        "upstream",
        &[
            "max_idle_per_key",
            "idle_timeout",
            "connect_timeout",
            "request_timeout",
            "max_connections_per_backend",
        ],
    ),
];

pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let root: Table = match text.parse() {
        Ok(table) => table,
        Err(e) => return Err(ConfigErrors(vec![syntax_error(text, &e)])),
    };
    let mut p = Parser::default();
    let config = p.config(&root);
    if p.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(p.errors))
    }
}

/// A TOML syntax error, keyed by its position since there is no key to name yet.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    let key = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}")
        }
        None => "toml".to_owned(),
    };
    ConfigError::new(key, format!("invalid TOML: {message}"))
}

/// One `[section]` of the document: absent (or not a table) means all defaults.
#[derive(Clone, Copy)]
struct Section<'t> {
    name: &'static str,
    table: Option<&'t Table>,
}

impl<'t> Section<'t> {
    fn get(&self, key: &str) -> Option<&'t Value> {
        self.table.and_then(|t| t.get(key))
    }

    fn key(&self, key: &str) -> String {
        format!("{}.{}", self.name, key)
    }
}

#[derive(Default)]
struct Parser {
    errors: Vec<ConfigError>,
}

impl Parser {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(key, message));
    }

    /// Converts `section.key` if present: `Some(default)` when absent, `None` (error recorded)
    /// when the value is wrong.
    fn take<T>(
        &mut self,
        section: Section<'_>,
        key: &str,
        default: T,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match section.get(key) {
            None => Some(default),
            Some(value) => match convert(value) {
                Ok(v) => Some(v),
                Err(message) => {
                    self.error(section.key(key), message);
                    None
                }
            },
        }
    }

    /// Like [`Parser::take`], falling back to the default on error (the error is recorded, so
    /// the value is never used).
    fn take_or<T: Clone>(
        &mut self,
        section: Section<'_>,
        key: &str,
        default: T,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> T {
        self.take(section, key, default.clone(), convert)
            .unwrap_or(default)
    }

    /// An array of strings. `None` when the value is not an array; an element that is not a
    /// string is reported as `section.key[i]` and left as `None`, so that the others keep
    /// their index for further checks.
    fn string_list(
        &mut self,
        section: Section<'_>,
        key: &str,
        default: &[String],
    ) -> Option<Vec<Option<String>>> {
        let Some(value) = section.get(key) else {
            return Some(default.iter().cloned().map(Some).collect());
        };
        let Value::Array(items) = value else {
            self.error(
                section.key(key),
                format!("expected an array of strings, found {}", value.type_str()),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(Some(s.clone())),
                other => {
                    self.error(
                        format!("{}[{i}]", section.key(key)),
                        format!("expected a string, found {}", other.type_str()),
                    );
                    out.push(None);
                }
            }
        }
        Some(out)
    }

    /// An array of resource ids (default empty), without duplicates. Their shape is the
    /// model's rule, checked at start.
    fn resource_ids(&mut self, section: Section<'_>, key: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let listed = self.string_list(section, key, &[]).unwrap_or_default();
        for (i, raw) in listed.into_iter().enumerate() {
            let Some(raw) = raw else { continue };
            if out.contains(&raw) {
                self.error(
                    format!("{}[{i}]", section.key(key)),
                    format!("{raw:?} is listed twice"),
                );
            } else {
                out.push(raw);
            }
        }
        out
    }

    /// Looks up every section, reporting unknown top-level keys and sections that are not
    /// tables, then unknown keys inside each section.
    fn sections<'t>(&mut self, root: &'t Table) -> Vec<Section<'t>> {
        for (key, value) in root {
            if !SECTIONS.iter().any(|(name, _)| name == key) {
                let what = if value.is_table() {
                    "unknown section"
                } else {
                    "unknown key"
                };
                self.error(
                    key.as_str(),
                    format!(
                        "{what} (known sections: {})",
                        known_list(SECTIONS.iter().map(|s| s.0))
                    ),
                );
            }
        }
        SECTIONS
            .iter()
            .map(|&(name, keys)| {
                let table = match root.get(name) {
                    None => None,
                    Some(Value::Table(t)) => Some(t),
                    Some(other) => {
                        self.error(
                            name,
                            format!("expected a table ([{name}]), found {}", other.type_str()),
                        );
                        None
                    }
                };
                for key in table.into_iter().flat_map(|t| t.keys()) {
                    if !keys.contains(&key.as_str()) {
                        self.error(
                            format!("{name}.{key}"),
                            format!(
                                "unknown key in [{name}] (known keys: {})",
                                known_list(keys.iter().copied())
                            ),
                        );
                    }
                }
                Section { name, table }
            })
            .collect()
    }

    fn config(&mut self, root: &Table) -> Config {
        let defaults = Config::embedded_defaults();
        let sections = self.sections(root);
        let section = |name: &str| {
            sections
                .iter()
                .copied()
                .find(|s| s.name == name)
                .unwrap_or(Section {
                    name: "?",
                    table: None,
                })
        };

        // [server]
        let s = section("server");
        let workers = self.take_or(s, "workers", 0, |v| {
            integer_in(v, 0, MAX_WORKERS as i64).map(|n| n as usize)
        });
        let server = ServerConfig {
            workers: resolve_workers(workers),
            data_dir: self.take_or(s, "data_dir", defaults.server.data_dir.clone(), |v| {
                required_path(v)
            }),
            shutdown_grace: self.take_or(
                s,
                "shutdown_grace",
                defaults.server.shutdown_grace,
                |v| duration(v, true),
            ),
            access_log: self.take_or(s, "access_log", AccessLog::Off, access_log),
            pin_workers: self.take_or(s, "pin_workers", None, |v| boolean(v).map(Some)),
            max_connections: self.take_or(
                s,
                "max_connections",
                defaults.server.max_connections,
                |v| integer_in(v, 1, 1_000_000).map(|n| n as usize),
            ),
        };

        // [listener]
        let s = section("listener");
        let d = &defaults.listener;
        let listener_address = self.take(s, "address", d.address, socket_addr);
        let certificate = self.take(s, "certificate", None, optional_path);
        let private_key = self.take(s, "private_key", None, optional_path);
        if let (Some(cert), Some(key)) = (&certificate, &private_key) {
            match (cert, key) {
                (Some(_), None) => self.error(
                    s.key("private_key"),
                    "must be set when listener.certificate is set",
                ),
                (None, Some(_)) => self.error(
                    s.key("certificate"),
                    "must be set when listener.private_key is set",
                ),
                _ => {}
            }
        }
        let session_tickets = self.take_or(s, "session_tickets", d.session_tickets, boolean);
        let ticket_key_rotation =
            self.take_or(s, "ticket_key_rotation", d.ticket_key_rotation, |v| {
                duration(v, false)
            });
        let key_exchange_groups = self
            .string_list(s, "key_exchange_groups", &d.key_exchange_groups)
            .map(|groups| self.check_groups(s.key("key_exchange_groups"), groups))
            .unwrap_or_default();
        let alpn = self
            .string_list(s, "alpn", &d.alpn)
            .map(|protocols| self.check_alpn(s.key("alpn"), protocols))
            .unwrap_or_default();
        let listener = ListenerConfig {
            address: listener_address.unwrap_or(d.address),
            certificate: certificate.flatten(),
            private_key: private_key.flatten(),
            session_tickets,
            ticket_key_rotation,
            key_exchange_groups,
            alpn,
            handshake_timeout: self.take_or(s, "handshake_timeout", d.handshake_timeout, |v| {
                duration(v, false)
            }),
            header_timeout: self.take_or(s, "header_timeout", d.header_timeout, |v| {
                duration(v, false)
            }),
            idle_timeout: self.take_or(s, "idle_timeout", d.idle_timeout, |v| duration(v, false)),
            body_timeout: self.take_or(s, "body_timeout", d.body_timeout, |v| duration(v, false)),
            body_min_rate: self.take_or(s, "body_min_rate", d.body_min_rate, |v| {
                integer_in(v, 0, i64::MAX).map(|n| n as u64)
            }),
            max_request_body_bytes: self.take_or(
                s,
                "max_request_body_bytes",
                d.max_request_body_bytes,
                |v| integer_in(v, 0, i64::MAX).map(|n| n as u64),
            ),
            client_certificates: self.take_or(
                s,
                "client_certificates",
                d.client_certificates,
                |v| {
                    one_of(
                        v,
                        &[
                            ("off", ClientCertificates::Off),
                            ("optional", ClientCertificates::Optional),
                            ("required", ClientCertificates::Required),
                        ],
                    )
                },
            ),
            client_ca_ids: self.resource_ids(s, "client_ca_ids"),
            forward_client_certificate: self.take_or(
                s,
                "forward_client_certificate",
                d.forward_client_certificate,
                boolean,
            ),
        };

        // [admin]
        let s = section("admin");
        let admin_address = self.take(s, "address", defaults.admin.address, socket_addr);
        let admin = AdminConfig {
            address: admin_address.unwrap_or(defaults.admin.address),
            token: self.take_or(s, "token", None, token),
            allow_plaintext: self.take_or(
                s,
                "allow_plaintext",
                defaults.admin.allow_plaintext,
                boolean,
            ),
        };
        if let Some(message) = admin.plaintext_refusal() {
            self.error(s.key("address"), message);
        }

        // [metrics]
        let s = section("metrics");
        let metrics_address = self.take(s, "address", defaults.metrics.address, socket_addr);
        let metrics = MetricsConfig {
            address: metrics_address.unwrap_or(defaults.metrics.address),
        };

        self.check_distinct(&[
            ("listener.address", listener_address),
            ("admin.address", admin_address),
            ("metrics.address", metrics_address),
        ]);

        // [store]
        let s = section("store");
        let d = &defaults.store;
        let kind = self.take(s, "kind", d.kind, |v| {
            one_of(
                v,
                &[("embedded", StoreKind::Embedded), ("etcd", StoreKind::Etcd)],
            )
        });
        let etcd_endpoints = self.string_list(s, "etcd_endpoints", &d.etcd_endpoints);
        if let (Some(StoreKind::Etcd), Some(endpoints)) = (kind, &etcd_endpoints) {
            if endpoints.is_empty() {
                self.error(
                    s.key("etcd_endpoints"),
                    "must not be empty when store.kind = \"etcd\"",
                );
            }
            for (i, endpoint) in endpoints.iter().enumerate() {
                if let Some(Err(message)) = endpoint.as_deref().map(http_url) {
                    self.error(format!("{}[{i}]", s.key("etcd_endpoints")), message);
                } else if endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("https://"))
                {
                    self.error(
                        format!("{}[{i}]", s.key("etcd_endpoints")),
                        "https:// (TLS to etcd) is not available in this build: use http:// to an etcd on a trusted network or loopback",
                    );
                }
            }
        }
        let store = StoreConfig {
            kind: kind.unwrap_or(d.kind),
            etcd_endpoints: etcd_endpoints.into_iter().flatten().flatten().collect(),
            etcd_prefix: self.take_or(s, "etcd_prefix", d.etcd_prefix.clone(), etcd_prefix),
            master_key_file: self.take_or(s, "master_key_file", None, optional_path),
            etcd_timeout: self.take_or(s, "etcd_timeout", d.etcd_timeout, |v| duration(v, false)),
            node_name: self.take_or(s, "node_name", None, node_name),
        };

        // [steering]
        let s = section("steering");
        let d = &defaults.steering;
        let steering = SteeringConfig {
            mode: self.take_or(s, "mode", d.mode, |v| {
                one_of(
                    v,
                    &[
                        ("auto", SteeringMode::Auto),
                        ("ebpf", SteeringMode::Ebpf),
                        ("kernel", SteeringMode::Kernel),
                    ],
                )
            }),
            policy: self.take_or(s, "policy", d.policy, |v| {
                one_of(
                    v,
                    &[
                        ("hash", SteeringPolicy::Hash),
                        ("cpu", SteeringPolicy::Cpu),
                        ("least-loaded", SteeringPolicy::LeastLoaded),
                    ],
                )
            }),
            stall_threshold: self.take_or(s, "stall_threshold", d.stall_threshold, |v| {
                duration(v, false)
            }),
        };

        // [upstream]
        let s = section("upstream");
        let d = &defaults.upstream;
        let upstream = UpstreamConfig {
            max_idle_per_key: self.take_or(s, "max_idle_per_key", d.max_idle_per_key, |v| {
                integer_in(v, 0, i64::from(u32::MAX)).map(|n| n as usize)
            }),
            idle_timeout: self.take_or(s, "idle_timeout", d.idle_timeout, |v| duration(v, false)),
            connect_timeout: self.take_or(s, "connect_timeout", d.connect_timeout, |v| {
                duration(v, false)
            }),
            request_timeout: self.take_or(s, "request_timeout", d.request_timeout, |v| {
                duration(v, false)
            }),
            max_connections_per_backend: self.take_or(
                s,
                "max_connections_per_backend",
                d.max_connections_per_backend,
                |v| integer_in(v, 0, i64::from(u32::MAX)).map(|n| n as usize),
            ),
        };

        Config {
            server,
            listener,
            admin,
            metrics,
            store,
            steering,
            upstream,
        }
    }

    /// `listener.key_exchange_groups`: non-empty, known names, no duplicates.
    fn check_groups(&mut self, key: String, groups: Vec<Option<String>>) -> Vec<String> {
        if groups.is_empty() {
            self.error(key.as_str(), "must list at least one group");
        }
        for (i, group) in groups.iter().enumerate() {
            let Some(group) = group else { continue };
            if !KNOWN_KEY_EXCHANGE_GROUPS.contains(&group.as_str()) {
                self.error(
                    format!("{key}[{i}]"),
                    format!(
                        "unknown key-exchange group {group:?} (known: {})",
                        known_list(KNOWN_KEY_EXCHANGE_GROUPS.iter().copied())
                    ),
                );
            } else if groups[..i].iter().flatten().any(|g| g == group) {
                self.error(
                    format!("{key}[{i}]"),
                    format!("group {group:?} is listed twice"),
                );
            }
        }
        groups.into_iter().flatten().collect()
    }

    /// `listener.alpn`: non-empty, known protocols, no duplicates.
    fn check_alpn(&mut self, key: String, protocols: Vec<Option<String>>) -> Vec<String> {
        if protocols.is_empty() {
            self.error(key.as_str(), "must list at least one protocol");
        }
        for (i, protocol) in protocols.iter().enumerate() {
            let Some(protocol) = protocol else { continue };
            if !KNOWN_ALPN_PROTOCOLS.contains(&protocol.as_str()) {
                self.error(
                    format!("{key}[{i}]"),
                    format!(
                        "unknown protocol {protocol:?} (known: {})",
                        known_list(KNOWN_ALPN_PROTOCOLS.iter().copied())
                    ),
                );
            } else if protocols[..i].iter().flatten().any(|p| p == protocol) {
                self.error(
                    format!("{key}[{i}]"),
                    format!("protocol {protocol:?} is listed twice"),
                );
            }
        }
        protocols.into_iter().flatten().collect()
    }

    /// The listeners must not collide: same port (non-zero) on the same IP, or on an IP and
    /// the unspecified address (which covers every local IP).
    fn check_distinct(&mut self, addresses: &[(&str, Option<SocketAddr>)]) {
        for (i, &(key, addr)) in addresses.iter().enumerate() {
            let Some(addr) = addr else { continue };
            for &(other_key, other) in &addresses[..i] {
                let Some(other) = other else { continue };
                let overlap = addr.port() == other.port()
                    && addr.port() != 0
                    && (addr.ip() == other.ip()
                        || addr.ip().is_unspecified()
                        || other.ip().is_unspecified());
                if overlap {
                    self.error(
                        key,
                        format!("{addr} conflicts with {other_key} ({other}); each listener needs its own address"),
                    );
                }
            }
        }
    }
}

fn known_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

fn string(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, found {}", value.type_str()))
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", value.type_str()))
}

fn integer_in(value: &Value, min: i64, max: i64) -> Result<i64, String> {
    let n = value
        .as_integer()
        .ok_or_else(|| format!("expected an integer, found {}", value.type_str()))?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {min} and {max}, got {n}"))
    }
}

fn duration(value: &Value, allow_zero: bool) -> Result<Duration, String> {
    let text = value.as_str().ok_or_else(|| {
        format!(
            "expected a duration string such as \"5s\", found {}",
            value.type_str()
        )
    })?;
    let d = parse_duration(text)?;
    if d.is_zero() && !allow_zero {
        return Err(format!("must be greater than zero, got {text:?}"));
    }
    Ok(d)
}

fn access_log(value: &Value) -> Result<AccessLog, String> {
    Ok(match path_text(value)? {
        "" => AccessLog::Off,
        "stderr" => AccessLog::Stderr,
        path => AccessLog::File(PathBuf::from(path)),
    })
}

fn socket_addr(value: &Value) -> Result<SocketAddr, String> {
    let text = string(value)?;
    text.parse().map_err(|_| {
        format!("invalid socket address {text:?} (expected IP:PORT, e.g. \"127.0.0.1:8443\" or \"[::1]:8443\")")
    })
}

fn path_text(value: &Value) -> Result<&str, String> {
    let text = string(value)?;
    if text.contains('\0') {
        return Err("path must not contain a NUL character".to_owned());
    }
    Ok(text)
}

/// A path that must be given.
fn required_path(value: &Value) -> Result<PathBuf, String> {
    match path_text(value)? {
        "" => Err("must not be empty".to_owned()),
        text => Ok(PathBuf::from(text)),
    }
}

/// A path where `""` means "not set".
fn optional_path(value: &Value) -> Result<Option<PathBuf>, String> {
    Ok(Some(path_text(value)?)
        .filter(|t| !t.is_empty())
        .map(PathBuf::from))
}

/// `admin.token`: `""` means "not set"; otherwise it must fit in an `Authorization` header.
fn token(value: &Value) -> Result<Option<Secret<String>>, String> {
    let text = string(value)?;
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    Ok(Some(Secret::from(text)))
}

fn one_of<T: Copy>(value: &Value, choices: &[(&str, T)]) -> Result<T, String> {
    let text = string(value)?;
    choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            format!(
                "unknown value {text:?} (expected one of {})",
                names.join(", ")
            )
        })
}

/// `store.node_name`: `""` (the default: host name and listener port) or 1 to 64 printable
/// ASCII characters without spaces.
fn node_name(value: &Value) -> Result<Option<String>, String> {
    let text = value
        .as_str()
        .ok_or_else(|| "expected a string".to_owned())?;
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid node name {text:?}: 1 to 64 printable ASCII characters without spaces"
        ));
    }
    Ok(Some(text.to_owned()))
}

fn etcd_prefix(value: &Value) -> Result<String, String> {
    let text = string(value)?;
    if text.starts_with('/') && text.ends_with('/') {
        Ok(text.to_owned())
    } else {
        Err(format!("must start and end with '/', got {text:?}"))
    }
}

/// `http://host[:port][/]` or `https://...`: what an etcd client endpoint looks like.
fn http_url(text: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid etcd endpoint {text:?}: {why}"));
    let Some(rest) = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
    else {
        return bad("expected an http:// or https:// URL");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return bad("expected no path, query or fragment");
    }
    if authority.contains('@') {
        return bad("credentials in the URL are not supported");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((ip, after)) = v6.split_once(']') else {
            return bad("unterminated IPv6 address");
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return bad("invalid IPv6 address");
        }
        match after {
            "" => (ip, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (ip, Some(port)),
                None => return bad("unexpected characters after the IPv6 address"),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("missing host");
    }
    let host_ok = host.parse::<IpAddr>().is_ok()
        || host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !host_ok {
        return bad("invalid host");
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p != 0 && !port.starts_with('+') => {}
            _ => return bad("invalid port"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod url_tests {
    use super::http_url;

    #[test]
    fn etcd_endpoints() {
        for good in [
            "http://127.0.0.1:2379",
            "https://etcd-0.internal:2379/",
            "http://[::1]:2379",
            "http://etcd",
            "https://[fe80::1]",
        ] {
            assert!(http_url(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1:2379",
            "grpc://a:1",
            "http://",
            "http://:2379",
            "http://a:0",
            "http://a:x",
            "http://a:99999",
            "http://a:2379/v3",
            "http://u:p@a:2379",
            "http://[::1:2379",
            "http://a b:1",
            "http://a..b",
        ] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
    }
}
