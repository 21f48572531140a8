//! One edgegw configuration writer (contract §2) for the e2e suite, the steering tests and
//! loadtest's harness: the settings they vary are fields, everything else is the gateway's
//! default (left out of the file).

use std::path::{Path, PathBuf};

/// An edgegw config file. `new` sets what every config needs; the rest is optional.
#[derive(Clone, Debug)]
pub struct EdgegwConfig {
    pub workers: usize,
    pub pin_workers: Option<bool>,
    pub data_dir: PathBuf,
    pub shutdown_grace: String,
    /// `listener.address`, e.g. `127.0.0.1:8443`.
    pub listen: String,
    /// `listener.certificate` and `listener.private_key` (PEM files).
    pub listener_cert: Option<(PathBuf, PathBuf)>,
    pub key_exchange_groups: Vec<String>,
    pub admin: String,
    pub admin_token: String,
    pub metrics: String,
    /// `upstream.connect_timeout` and `upstream.request_timeout`.
    pub upstream_timeouts: Option<(String, String)>,
    /// `steering.mode`, `steering.policy`, `steering.stall_threshold`.
    pub steering_mode: Option<String>,
    pub steering_policy: Option<String>,
    pub stall_threshold: Option<String>,
    /// `listener.ticket_key_rotation`, e.g. `"3s"`.
    pub ticket_key_rotation: Option<String>,
    /// The `[store]` section; the default writes none (the embedded store).
    pub store: StoreSettings,
    /// More keys: `(section, key, TOML value)`, e.g. `("listener", "body_timeout",
    /// "\"1s\"")`, written into that section (of server, listener, admin, upstream).
    pub extra: Vec<(String, String, String)>,
}

/// The `[store]` section: every setting the gateway's default unless set (nothing set:
/// no section, the embedded store).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSettings {
    /// `store.kind`: `"embedded"` or `"etcd"`.
    pub kind: Option<String>,
    /// `store.etcd_endpoints` (left out when empty).
    pub etcd_endpoints: Vec<String>,
    /// `store.etcd_prefix`: starts and ends with `/`.
    pub etcd_prefix: Option<String>,
    /// `store.master_key_file`: base64 of 32 bytes; every node of a fleet needs the same.
    pub master_key_file: Option<PathBuf>,
    /// `store.etcd_timeout`, e.g. `"2s"`.
    pub etcd_timeout: Option<String>,
    /// `store.node_name` (the audit log's `"node"`).
    pub node_name: Option<String>,
}

impl StoreSettings {
    /// Fleet mode: `kind = "etcd"` on `endpoints`, keys under `prefix`.
    pub fn etcd(endpoints: Vec<String>, prefix: &str) -> Self {
        Self {
            kind: Some("etcd".into()),
            etcd_endpoints: endpoints,
            etcd_prefix: Some(prefix.into()),
            ..Self::default()
        }
    }
}

impl EdgegwConfig {
    pub fn new(data_dir: &Path, listen: String, admin: String, metrics: String) -> Self {
        Self {
            workers: 1,
            pin_workers: None,
            data_dir: data_dir.to_path_buf(),
            shutdown_grace: "10s".into(),
            listen,
            listener_cert: None,
            key_exchange_groups: Vec::new(),
            admin,
            admin_token: String::new(),
            metrics,
            upstream_timeouts: None,
            steering_mode: None,
            steering_policy: None,
            stall_threshold: None,
            ticket_key_rotation: None,
            store: StoreSettings::default(),
            extra: Vec::new(),
        }
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let quoted = |s: &str| format!("{s:?}");
        let extra = |section: &str| -> String {
            self.extra
                .iter()
                .filter(|(s, _, _)| s == section)
                .map(|(_, k, v)| format!("{k} = {v}\n"))
                .collect()
        };
        let (server_extra, listener_extra, admin_extra, upstream_extra) = (
            extra("server"),
            extra("listener"),
            extra("admin"),
            extra("upstream"),
        );
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        };
        line("[server]\nworkers", self.workers.to_string());
        if let Some(pin) = self.pin_workers {
            line("pin_workers", pin.to_string());
        }
        line("data_dir", quoted(&self.data_dir.display().to_string()));
        line("shutdown_grace", quoted(&self.shutdown_grace));
        out.push_str(&server_extra);
        let mut line = |key: &str, value: String| {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        };
        line("\n[listener]\naddress", quoted(&self.listen));
        if let Some((cert, key)) = &self.listener_cert {
            line("certificate", quoted(&cert.display().to_string()));
            line("private_key", quoted(&key.display().to_string()));
        }
        if !self.key_exchange_groups.is_empty() {
            let groups: Vec<String> = self.key_exchange_groups.iter().map(|g| quoted(g)).collect();
            line("key_exchange_groups", format!("[{}]", groups.join(", ")));
        }
        if let Some(rotation) = &self.ticket_key_rotation {
            line("ticket_key_rotation", quoted(rotation));
        }
        out.push_str(&listener_extra);
        out.push_str("\n[admin]\naddress = ");
        out.push_str(&quoted(&self.admin));
        out.push_str("\ntoken = ");
        out.push_str(&quoted(&self.admin_token));
        out.push('\n');
        out.push_str(&admin_extra);
        let mut line = |key: &str, value: String| {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        };
        line("\n[metrics]\naddress", quoted(&self.metrics));
        if let Some((connect, request)) = &self.upstream_timeouts {
            line("\n[upstream]\nconnect_timeout", quoted(connect));
            line("request_timeout", quoted(request));
        } else if !upstream_extra.is_empty() {
            out.push_str("\n[upstream]\n");
        }
        out.push_str(&upstream_extra);
        let mut line = |key: &str, value: String| {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        };
        // An optional section: the keys that are set, the header before the first of them.
        let mut section = |name: &str, entries: Vec<(&str, Option<String>)>| {
            let mut header = Some(name);
            for (key, value) in entries {
                if let Some(value) = value {
                    let key = match header.take() {
                        Some(name) => format!("\n[{name}]\n{key}"),
                        None => key.to_owned(),
                    };
                    line(&key, value);
                }
            }
        };
        let st = &self.store;
        let endpoints: Vec<String> = st.etcd_endpoints.iter().map(|e| quoted(e)).collect();
        section(
            "store",
            vec![
                ("kind", st.kind.as_deref().map(quoted)),
                (
                    "etcd_endpoints",
                    (!endpoints.is_empty()).then(|| format!("[{}]", endpoints.join(", "))),
                ),
                ("etcd_prefix", st.etcd_prefix.as_deref().map(quoted)),
                (
                    "master_key_file",
                    st.master_key_file
                        .as_ref()
                        .map(|f| quoted(&f.display().to_string())),
                ),
                ("etcd_timeout", st.etcd_timeout.as_deref().map(quoted)),
                ("node_name", st.node_name.as_deref().map(quoted)),
            ],
        );
        section(
            "steering",
            vec![
                ("mode", self.steering_mode.as_deref().map(quoted)),
                ("policy", self.steering_policy.as_deref().map(quoted)),
                (
                    "stall_threshold",
                    self.stall_threshold.as_deref().map(quoted),
                ),
            ],
        );
        out
    }

    /// Writes the config to `path`.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, self.render())
            .map_err(|e| format!("writing the edgegw config {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_sections_it_is_given() {
        let mut c = EdgegwConfig::new(
            Path::new("/tmp/d"),
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
            "127.0.0.1:3".into(),
        );
        let plain = c.render();
        assert!(
            plain.contains("[listener]\naddress = \"127.0.0.1:1\"\n"),
            "{plain}"
        );
        assert!(
            !plain.contains("[steering]") && !plain.contains("[upstream]"),
            "{plain}"
        );
        c.steering_policy = Some("hash".into());
        c.upstream_timeouts = Some(("1s".into(), "2s".into()));
        c.key_exchange_groups = vec!["X25519".into()];
        let full = c.render();
        assert!(full.contains("\n[steering]\npolicy = \"hash\"\n"), "{full}");
        assert!(
            full.contains("connect_timeout = \"1s\"\nrequest_timeout = \"2s\""),
            "{full}"
        );
        assert!(
            full.contains("key_exchange_groups = [\"X25519\"]"),
            "{full}"
        );
        assert!(!full.contains("[store]"), "{full}");
        c.ticket_key_rotation = Some("3s".into());
        c.store = StoreSettings {
            master_key_file: Some(PathBuf::from("/k/mk")),
            node_name: Some("node-a".into()),
            etcd_timeout: Some("1s".into()),
            ..StoreSettings::etcd(
                vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
                "/t/",
            )
        };
        let fleet = c.render();
        assert!(
            fleet.contains("key_exchange_groups = [\"X25519\"]\nticket_key_rotation = \"3s\"\n"),
            "{fleet}"
        );
        assert!(
            fleet.contains(
                "\n[store]\nkind = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\netcd_prefix = \"/t/\"\nmaster_key_file = \"/k/mk\"\netcd_timeout = \"1s\"\nnode_name = \"node-a\"\n"
            ),
            "{fleet}"
        );
    }
}
