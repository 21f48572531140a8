#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

fn errors(text: &str) -> ConfigErrors {
    match Config::from_toml_str(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e,
    }
}

/// The errors' keys, in order.
fn keys(text: &str) -> Vec<String> {
    errors(text).0.into_iter().map(|e| e.key).collect()
}

/// The single error for `text`, which must be about `key`.
fn single(text: &str, key: &str) -> String {
    let errs = errors(text);
    assert_eq!(errs.0.len(), 1, "expected one error, got:\n{errs}");
    assert_eq!(errs.0[0].key, key, "{errs}");
    errs.0[0].message.clone()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_are_the_contract() {
    let c = Config::embedded_defaults();
    assert_eq!(c.server.workers, online_cpus().clamp(1, MAX_WORKERS));
    assert!(c.server.workers >= 1);
    assert_eq!(c.server.data_dir, PathBuf::from("./edgegw-data"));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.listener.address, addr("127.0.0.1:8443"));
    assert_eq!(c.listener.certificate, None);
    assert_eq!(c.listener.private_key, None);
    assert!(c.listener.session_tickets);
    assert_eq!(
        c.listener.ticket_key_rotation,
        Duration::from_secs(12 * 3600)
    );
    assert_eq!(
        c.listener.key_exchange_groups,
        ["X25519MLKEM768", "X25519", "P-256"]
    );
    assert_eq!(c.listener.alpn, ["http/1.1"]);
    assert_eq!(c.admin.address, addr("127.0.0.1:9090"));
    assert_eq!(c.admin.token, None);
    assert_eq!(c.metrics.address, addr("127.0.0.1:9091"));
    assert_eq!(c.store.kind, StoreKind::Embedded);
    assert_eq!(c.store.etcd_endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(c.store.etcd_prefix, "/edgegw/");
    assert_eq!(c.store.master_key_file, None);
    assert_eq!(c.steering.mode, SteeringMode::Auto);
    assert_eq!(c.steering.policy, SteeringPolicy::Hash);
    assert_eq!(c.upstream.max_idle_per_key, 64);
    assert_eq!(c.upstream.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.upstream.request_timeout, Duration::from_secs(30));
    assert_eq!(Config::default(), c);
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(parse(""), Config::embedded_defaults());
    assert_eq!(
        parse("# only a comment\n[server]\n[listener]\n"),
        Config::embedded_defaults()
    );
}

#[test]
fn example_file_is_the_defaults() {
    let text = include_str!("../../../docs/config.example.toml");
    assert_eq!(parse(text), Config::embedded_defaults());
}

/// The contract's §2 block, verbatim (comments included).
#[test]
fn contract_block_is_the_defaults() {
    let text = r#"
[server]
workers = 0                      # data-plane threads; 0 = one per online CPU
data_dir = "./edgegw-data"       # embedded store, generated keys and certs
shutdown_grace = "10s"

[listener]                       # public data-plane listener, TLS only
address = "127.0.0.1:8443"
certificate = ""                 # PEM chain file; empty: a self-signed P-256 cert is generated once into data_dir
private_key = ""                 # PEM key file
session_tickets = true           # TLS 1.3/1.2 session tickets for resumption
ticket_key_rotation = "12h"      # a new ticket key every period; the previous one still decrypts
key_exchange_groups = ["X25519MLKEM768", "X25519", "P-256"]   # preference order, BoringSSL names

[admin]                          # management REST API, plain HTTP
address = "127.0.0.1:9090"
token = ""                       # bearer token; env EDGEGW_ADMIN_TOKEN wins; empty and no env:
                                 # a random token is written once to data_dir/admin.token (mode 0600)

[metrics]
address = "127.0.0.1:9091"       # GET /metrics, Prometheus text format, no auth

[store]
kind = "embedded"                # "embedded" (a file in data_dir) or "etcd"
etcd_endpoints = ["http://127.0.0.1:2379"]
etcd_prefix = "/edgegw/"
master_key_file = ""             # 32 random bytes, base64; env EDGEGW_MASTER_KEY wins; empty and no env:
                                 # generated once into data_dir/master.key (0600). Encrypts private keys at rest.

[steering]
mode = "auto"                    # "auto": eBPF if it loads, else kernel; "ebpf": fail if it cannot load; "kernel"
policy = "hash"                  # "hash" | "cpu" | "least-loaded"

[upstream]
max_idle_per_key = 64            # idle pooled connections per pool key per worker
idle_timeout = "60s"
connect_timeout = "5s"
request_timeout = "30s"
"#;
    assert_eq!(parse(text), Config::embedded_defaults());
}

#[test]
fn every_key_parses() {
    let c = parse(
        r#"
[server]
workers = 3
data_dir = "/var/lib/edgegw"
shutdown_grace = "0s"
access_log = "/var/log/edgegw/access.log"
pin_workers = false
max_connections = 200

[listener]
address = "0.0.0.0:443"
certificate = "/etc/edgegw/tls.crt"
private_key = "/etc/edgegw/tls.key"
session_tickets = false
ticket_key_rotation = "1h30m"
key_exchange_groups = ["P-384", "X25519Kyber768Draft00", "P-521", "X25519", "X25519MLKEM768", "P-256"]
alpn = ["h2", "http/1.1"]
handshake_timeout = "3s"
header_timeout = "4s"
idle_timeout = "5s"
body_timeout = "6s"
body_min_rate = 0
max_request_body_bytes = 1000
client_certificates = "optional"
client_ca_ids = ["partners", "legacy-ca"]
forward_client_certificate = true

[admin]
address = "[::1]:19090"
token = "s3cret-token"
allow_plaintext = true

[metrics]
address = "10.0.0.1:19091"

[store]
kind = "etcd"
etcd_endpoints = ["http://etcd-0:2379", "http://[fd00::1]:2379"]
etcd_prefix = "/gw/prod/"
master_key_file = "/etc/edgegw/master.key"
etcd_timeout = "750ms"
node_name = "edge-a"

[steering]
mode = "ebpf"
policy = "least-loaded"
stall_threshold = "250ms"

[upstream]
max_idle_per_key = 0
idle_timeout = "90s"
connect_timeout = "250ms"
request_timeout = "2m"
max_connections_per_backend = 7
"#,
    );
    let expected = Config {
        server: ServerConfig {
            workers: 3,
            data_dir: PathBuf::from("/var/lib/edgegw"),
            shutdown_grace: Duration::ZERO,
            access_log: AccessLog::File(PathBuf::from("/var/log/edgegw/access.log")),
            pin_workers: Some(false),
            max_connections: 200,
        },
        listener: ListenerConfig {
            address: addr("0.0.0.0:443"),
            certificate: Some(PathBuf::from("/etc/edgegw/tls.crt")),
            private_key: Some(PathBuf::from("/etc/edgegw/tls.key")),
            session_tickets: false,
            ticket_key_rotation: Duration::from_secs(5400),
            key_exchange_groups: [
                "P-384",
                "X25519Kyber768Draft00",
                "P-521",
                "X25519",
                "X25519MLKEM768",
                "P-256",
            ]
            .map(String::from)
            .to_vec(),
            alpn: ["h2", "http/1.1"].map(String::from).to_vec(),
            handshake_timeout: Duration::from_secs(3),
            header_timeout: Duration::from_secs(4),
            idle_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(6),
            body_min_rate: 0,
            max_request_body_bytes: 1000,
            client_certificates: ClientCertificates::Optional,
            client_ca_ids: vec!["partners".into(), "legacy-ca".into()],
            forward_client_certificate: true,
        },
        admin: AdminConfig {
            address: addr("[::1]:19090"),
            token: Some(Secret::from("s3cret-token")),
            allow_plaintext: true,
        },
        metrics: MetricsConfig {
            address: addr("10.0.0.1:19091"),
        },
        store: StoreConfig {
            kind: StoreKind::Etcd,
            etcd_endpoints: vec!["http://etcd-0:2379".into(), "http://[fd00::1]:2379".into()],
            etcd_prefix: "/gw/prod/".to_owned(),
            master_key_file: Some(PathBuf::from("/etc/edgegw/master.key")),
            etcd_timeout: Duration::from_millis(750),
            node_name: Some("edge-a".to_owned()),
        },
        steering: SteeringConfig {
            mode: SteeringMode::Ebpf,
            policy: SteeringPolicy::LeastLoaded,
            stall_threshold: Duration::from_millis(250),
        },
        upstream: UpstreamConfig {
            max_idle_per_key: 0,
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_secs(120),
            max_connections_per_backend: 7,
        },
    };
    assert_eq!(c, expected);
}

#[test]
fn enum_values() {
    let c = parse("[steering]\nmode = \"kernel\"\npolicy = \"cpu\"\n");
    assert_eq!(c.steering.mode, SteeringMode::Kernel);
    assert_eq!(c.steering.policy, SteeringPolicy::Cpu);
    let c = parse("[steering]\nmode = \"auto\"\npolicy = \"hash\"\n[store]\nkind = \"embedded\"");
    assert_eq!(c.steering, Config::embedded_defaults().steering);
    let msg = single(
        "[steering]\nstall_threshold = \"0s\"",
        "steering.stall_threshold",
    );
    assert!(msg.contains("greater than zero"), "{msg}");
    let msg = single("[steering]\npolicy = \"least_loaded\"", "steering.policy");
    assert!(
        msg.contains("\"least_loaded\"") && msg.contains("\"least-loaded\""),
        "{msg}"
    );
    single("[steering]\nmode = \"EBPF\"", "steering.mode");
    single("[store]\nkind = \"redis\"", "store.kind");
}

#[test]
fn dotted_keys_work_like_sections() {
    let c = parse("server.workers = 2\nlistener.address = \"127.0.0.1:1\"");
    assert_eq!(c.server.workers, 2);
    assert_eq!(c.listener.address, addr("127.0.0.1:1"));
}

#[test]
fn workers_zero_resolves_to_cpus() {
    let c = parse("[server]\nworkers = 0");
    assert_eq!(c.server.workers, online_cpus().clamp(1, MAX_WORKERS));
    assert_eq!(parse("[server]\nworkers = 1024").server.workers, 1024);
    let msg = single("[server]\nworkers = 1025", "server.workers");
    assert!(msg.contains("1024"), "{msg}");
    single("[server]\nworkers = -1", "server.workers");
    single("[server]\nworkers = \"4\"", "server.workers");
    single("[server]\nworkers = 2.0", "server.workers");
}

#[test]
fn unknown_top_level_key() {
    let msg = single("[sever]\nworkers = 1", "sever");
    assert!(msg.contains("unknown section"), "{msg}");
    let msg = single("debug = true", "debug");
    assert!(msg.contains("unknown key"), "{msg}");
}

#[test]
fn unknown_nested_key() {
    let msg = single("[server]\nworker = 4", "server.worker");
    assert!(
        msg.contains("unknown key") && msg.contains("workers"),
        "{msg}"
    );
    single("[listener]\ntls.min_version = \"1.2\"", "listener.tls");
    single("[upstream]\nidle_timout = \"5s\"", "upstream.idle_timout");
}

#[test]
fn section_of_the_wrong_type() {
    let msg = single("server = 5", "server");
    assert!(msg.contains("table"), "{msg}");
    single("[[admin]]\naddress = \"127.0.0.1:1\"", "admin");
}

#[test]
fn all_errors_are_reported_at_once() {
    let errs = errors(
        r#"
bogus = 1
[server]
workers = 5000
shutdown_grace = "soon"
colour = "blue"
[listener]
address = "abc"
ticket_key_rotation = "0s"
key_exchange_groups = ["X25519", "X448", 7]
certificate = "/tmp/cert.pem"
[admin]
token = "has space"
[store]
etcd_prefix = "edgegw"
[steering]
mode = "fast"
[upstream]
connect_timeout = 5
"#,
    );
    let got: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
    let want = [
        "bogus",
        "server.colour",
        "server.workers",
        "server.shutdown_grace",
        "listener.address",
        "listener.private_key",
        "listener.ticket_key_rotation",
        "listener.key_exchange_groups[1]",
        "listener.key_exchange_groups[2]",
        "admin.token",
        "store.etcd_prefix",
        "steering.mode",
        "upstream.connect_timeout",
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort_unstable();
    let mut want_sorted = want.to_vec();
    want_sorted.sort_unstable();
    assert_eq!(got_sorted, want_sorted, "\n{errs}");

    // Display: one line per error, each "key: message".
    let text = errs.to_string();
    assert_eq!(text.lines().count(), want.len());
    for (line, e) in text.lines().zip(&errs.0) {
        assert!(line.starts_with(&format!("{}: ", e.key)), "{line}");
    }
    assert!(
        text.contains(r#"listener.address: invalid socket address "abc""#),
        "{text}"
    );
}

#[test]
fn bad_durations() {
    for (text, key) in [
        ("[server]\nshutdown_grace = \"10\"", "server.shutdown_grace"),
        (
            "[server]\nshutdown_grace = \"-1s\"",
            "server.shutdown_grace",
        ),
        ("[server]\nshutdown_grace = 10", "server.shutdown_grace"),
        (
            "[listener]\nticket_key_rotation = \"0s\"",
            "listener.ticket_key_rotation",
        ),
        (
            "[listener]\nticket_key_rotation = \"12 h\"",
            "listener.ticket_key_rotation",
        ),
        (
            "[upstream]\nidle_timeout = \"0ms\"",
            "upstream.idle_timeout",
        ),
        (
            "[upstream]\nconnect_timeout = \"0\"",
            "upstream.connect_timeout",
        ),
        (
            "[upstream]\nrequest_timeout = \"30sec\"",
            "upstream.request_timeout",
        ),
        (
            "[upstream]\nrequest_timeout = \"\"",
            "upstream.request_timeout",
        ),
    ] {
        single(text, key);
    }
    let msg = single("[upstream]\nidle_timeout = \"0s\"", "upstream.idle_timeout");
    assert!(msg.contains("greater than zero"), "{msg}");
    let msg = single("[upstream]\nidle_timeout = \"5x\"", "upstream.idle_timeout");
    assert!(msg.contains("\"5x\""), "{msg}");
    // Zero is a valid grace period.
    assert_eq!(
        parse("[server]\nshutdown_grace = \"0s\"")
            .server
            .shutdown_grace,
        Duration::ZERO
    );
}

#[test]
fn bad_addresses() {
    for (text, key) in [
        ("[listener]\naddress = \"abc\"", "listener.address"),
        ("[listener]\naddress = \"127.0.0.1\"", "listener.address"),
        (
            "[listener]\naddress = \"localhost:8443\"",
            "listener.address",
        ),
        (
            "[listener]\naddress = \"127.0.0.1:70000\"",
            "listener.address",
        ),
        ("[listener]\naddress = \"::1:8443\"", "listener.address"),
        ("[admin]\naddress = 9090", "admin.address"),
        ("[metrics]\naddress = \"\"", "metrics.address"),
    ] {
        single(text, key);
    }
    let msg = single("[listener]\naddress = \"abc\"", "listener.address");
    assert_eq!(
        msg.split(" (").next(),
        Some(r#"invalid socket address "abc""#)
    );
}

#[test]
fn addresses_must_be_distinct() {
    let msg = single("[admin]\naddress = \"127.0.0.1:8443\"", "admin.address");
    assert!(msg.contains("listener.address"), "{msg}");
    single("[metrics]\naddress = \"127.0.0.1:9090\"", "metrics.address");
    // The unspecified address covers every local address.
    single("[metrics]\naddress = \"0.0.0.0:9090\"", "metrics.address");
    // Different IPs, or port 0 (ephemeral), are fine.
    parse("[admin]\naddress = \"127.0.0.2:8443\"");
    parse("[admin]\naddress = \"127.0.0.1:0\"\n[metrics]\naddress = \"127.0.0.1:0\"");
    // An invalid address does not cause a spurious conflict with the default it falls back to.
    single(
        "[listener]\naddress = \"bad\"\n[admin]\naddress = \"127.0.0.1:8443\"",
        "listener.address",
    );
}

#[test]
fn certificate_and_key_go_together() {
    let msg = single(
        "[listener]\ncertificate = \"a.pem\"",
        "listener.private_key",
    );
    assert!(msg.contains("listener.certificate"), "{msg}");
    single(
        "[listener]\nprivate_key = \"k.pem\"",
        "listener.certificate",
    );
    single(
        "[listener]\ncertificate = \"a.pem\"\nprivate_key = \"\"",
        "listener.private_key",
    );
    let c = parse("[listener]\ncertificate = \"\"\nprivate_key = \"\"");
    assert_eq!(c.listener.certificate, None);
    assert_eq!(c.listener.private_key, None);
    // A wrongly typed certificate does not also complain about the key.
    single(
        "[listener]\ncertificate = 1\nprivate_key = \"k.pem\"",
        "listener.certificate",
    );
}

#[test]
fn alpn() {
    let c = parse("[listener]\nalpn = [\"h2\", \"http/1.1\"]");
    assert_eq!(c.listener.alpn, ["h2", "http/1.1"]);
    let c = parse("[listener]\nalpn = [\"http/1.1\", \"h2\"]");
    assert_eq!(c.listener.alpn, ["http/1.1", "h2"]);
    single("[listener]\nalpn = []", "listener.alpn");
    single("[listener]\nalpn = \"h2\"", "listener.alpn");
    let msg = single("[listener]\nalpn = [\"h2\", \"h3\"]", "listener.alpn[1]");
    assert!(msg.contains("http/1.1"), "{msg}");
    let msg = single(
        "[listener]\nalpn = [\"h2\", \"http/1.1\", \"h2\"]",
        "listener.alpn[2]",
    );
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn key_exchange_groups() {
    single(
        "[listener]\nkey_exchange_groups = []",
        "listener.key_exchange_groups",
    );
    single(
        "[listener]\nkey_exchange_groups = \"X25519\"",
        "listener.key_exchange_groups",
    );
    let msg = single(
        "[listener]\nkey_exchange_groups = [\"X25519\", \"x25519\"]",
        "listener.key_exchange_groups[1]",
    );
    assert!(msg.contains("X25519MLKEM768"), "{msg}");
    let msg = single(
        "[listener]\nkey_exchange_groups = [\"P-256\", \"X25519\", \"P-256\"]",
        "listener.key_exchange_groups[2]",
    );
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn tokens_and_paths() {
    assert_eq!(parse("[admin]\ntoken = \"\"").admin.token, None);
    single("[admin]\ntoken = \"a\\tb\"", "admin.token");
    single("[admin]\ntoken = 42", "admin.token");
    single("[server]\ndata_dir = \"\"", "server.data_dir");
    assert_eq!(
        parse("[store]\nmaster_key_file = \"\"")
            .store
            .master_key_file,
        None
    );
    assert_eq!(
        parse("[store]\nmaster_key_file = \"mk\"")
            .store
            .master_key_file,
        Some(PathBuf::from("mk"))
    );
    single(
        "[listener]\nsession_tickets = \"yes\"",
        "listener.session_tickets",
    );
    single(
        "[upstream]\nmax_idle_per_key = -1",
        "upstream.max_idle_per_key",
    );
}

#[test]
fn store_etcd_validation() {
    // Endpoints are only checked for etcd.
    let c = parse("[store]\netcd_endpoints = [\"not a url\"]");
    assert_eq!(c.store.etcd_endpoints, ["not a url"]);
    assert_eq!(
        keys("[store]\nkind = \"etcd\"\netcd_endpoints = [\"http://ok:2379\", \"etcd:2379\", \"ftp://x\"]"),
        ["store.etcd_endpoints[1]", "store.etcd_endpoints[2]"]
    );
    single(
        "[store]\nkind = \"etcd\"\netcd_endpoints = []",
        "store.etcd_endpoints",
    );
    assert_eq!(
        parse("[store]\nkind = \"etcd\"").store.etcd_endpoints,
        ["http://127.0.0.1:2379"]
    );
    single("[store]\netcd_endpoints = [1]", "store.etcd_endpoints[0]");
    single("[store]\netcd_prefix = \"/edgegw\"", "store.etcd_prefix");
    single("[store]\netcd_prefix = \"edgegw/\"", "store.etcd_prefix");
    assert_eq!(parse("[store]\netcd_prefix = \"/\"").store.etcd_prefix, "/");
}

#[test]
fn syntax_error_has_a_position() {
    let errs = errors("[server]\nworkers = = 4\n");
    assert_eq!(errs.0.len(), 1);
    let e = &errs.0[0];
    assert!(e.key.starts_with("line 2, column "), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    let errs = errors("[server]\nworkers = 1\nworkers = 2\n");
    assert_eq!(errs.0.len(), 1, "{errs}");
}

#[test]
fn load_reports_the_path() {
    let path = std::path::Path::new("/nonexistent/edgegw-test/config.toml");
    let errs = Config::load(path).unwrap_err();
    assert_eq!(errs.0.len(), 1);
    assert_eq!(errs.0[0].key, path.display().to_string());

    let dir = testkit::temp_dir("config-test").unwrap();
    let file = dir.path().join("edgegw.toml");
    std::fs::write(&file, "[server]\nworkers = 2\n").unwrap();
    assert_eq!(Config::load(&file).unwrap().server.workers, 2);
}

#[test]
fn parse_duration_is_exported() {
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert!(parse_duration("soon").is_err());
}

#[test]
fn access_log_is_off_stderr_or_a_file() {
    let log = |v: &str| {
        parse(&format!("[server]\naccess_log = {v:?}\n"))
            .server
            .access_log
    };
    assert_eq!(log(""), AccessLog::Off);
    assert_eq!(log("stderr"), AccessLog::Stderr);
    assert_eq!(
        log("/tmp/a.log"),
        AccessLog::File(PathBuf::from("/tmp/a.log"))
    );
    assert_eq!(
        Config::embedded_defaults().server.access_log,
        AccessLog::Off
    );
    let errors = Config::from_toml_str("[server]\naccess_log = 1\n").unwrap_err();
    assert!(errors.has_key("server.access_log"), "{errors}");
}

#[test]
fn pin_workers_defaults_to_off_except_under_the_cpu_policy() {
    assert!(!Config::embedded_defaults().pin_workers());
    assert!(!parse("[server]\n").pin_workers());
    assert!(parse("[server]\npin_workers = true\n").pin_workers());
    assert!(parse("[steering]\npolicy = \"cpu\"\n").pin_workers());
    assert!(!parse("[server]\npin_workers = false\n[steering]\npolicy = \"cpu\"\n").pin_workers());
    let errors = Config::from_toml_str("[server]\npin_workers = \"no\"\n").unwrap_err();
    assert!(errors.has_key("server.pin_workers"), "{errors}");
}

#[test]
fn a_plaintext_admin_api_off_loopback_needs_allow_plaintext() {
    for address in [
        "0.0.0.0:9090",
        "[::]:9090",
        "10.1.2.3:9090",
        "[fd00::1]:9090",
    ] {
        let msg = single(
            &format!("[admin]\naddress = {address:?}\n"),
            "admin.address",
        );
        assert!(
            msg.contains("admin.allow_plaintext = true") && msg.contains("no TLS"),
            "{msg}"
        );
        let c = parse(&format!(
            "[admin]\naddress = {address:?}\nallow_plaintext = true\n"
        ));
        assert!(c.admin.allow_plaintext);
        assert_eq!(c.admin.plaintext_refusal(), None);
    }
    // Loopback in every spelling is fine without it.
    for address in [
        "127.0.0.1:9090",
        "127.9.9.9:9090",
        "[::1]:9090",
        "[::ffff:127.0.0.1]:9090",
    ] {
        let c = parse(&format!("[admin]\naddress = {address:?}\n"));
        assert_eq!(c.admin.plaintext_refusal(), None, "{address}");
    }
    assert_eq!(Config::embedded_defaults().admin.plaintext_refusal(), None);
    // A wrong allow_plaintext is its own error, and the address is then refused too.
    let errors =
        Config::from_toml_str("[admin]\naddress = \"0.0.0.0:9090\"\nallow_plaintext = \"yes\"\n")
            .unwrap_err();
    assert!(errors.has_key("admin.allow_plaintext"), "{errors}");
    assert!(errors.has_key("admin.address"), "{errors}");
}
