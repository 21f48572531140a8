//! `loadtest fleet`: how fast a change on one node of a fleet reaches another, with a store
//! of many certificates, on a real etcd.
//!
//! It starts one etcd on loopback, loads `--certificates` client certificates straight into
//! it (the records edgegw itself writes: the same PKCS#12 under N ids, each key sealed with
//! the fleet's master key), starts two edgegw nodes A and B on it in front of the mTLS test
//! backend, and then `--changes` times: replaces the backend's URL on node A (its base path
//! names the change) and sends requests through node B on one keep-alive connection until
//! the backend sees the new base path. It prints, for that propagation and for A's own
//! answer, the median and the 99th percentile, and beside them each node's etcd
//! connections (from /proc: established TCP connections to etcd's port) and, measured in
//! this process on the same data, how long one change takes to apply at this size (decode,
//! copy the resources, build and publish the snapshot).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use gateway::admin::ControlPlane;
use gateway::model::certificate::parse_pkcs12;
use gateway::model::{Certificate, ResourceId};
use gateway::store::etcd::{EtcdSettings, EtcdStore};
use gateway::store::{records, Contents, Kind, MasterKey, Record, Store as _, Update};

use crate::admin::Endpoint;
use crate::harness::{bin_dir, free_port, local, Backend, Pki, Proc, ADMIN_TOKEN, P12_PASSWORD};

#[derive(clap::Args)]
pub struct FleetArgs {
    /// Client certificates in the store.
    #[arg(long, default_value_t = 1000)]
    certificates: usize,
    /// Changes measured.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Requests per round of the data-plane CPU comparison of a fleet node with an embedded
    /// one (0: skip it).
    #[arg(long, default_value_t = 20000)]
    requests: usize,
}

const MASTER_KEY: [u8; 32] = [7; 32];

pub fn run(args: FleetArgs) -> Result<(), String> {
    let pki = Pki::create()?;
    let backend = Backend::start(&pki, 1)?;
    let etcd = testkit::etcd::Etcd::start().map_err(|e| format!("etcd: {e}"))?;
    let work = testkit::temp_dir("loadtest-fleet")?;
    let key_file = work.path().join("master.key");
    {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(MASTER_KEY);
        std::fs::write(&key_file, text).map_err(|e| format!("master key: {e}"))?;
    }

    // The store: N certificates, the backend bound to the first, one API.
    let p12 = std::fs::read(pki.path("client.p12")).map_err(|e| format!("client.p12: {e}"))?;
    let template = parse_pkcs12(id("c0")?, &p12, P12_PASSWORD).map_err(|e| e.to_string())?;
    let master_key = MasterKey::from_bytes(MASTER_KEY);
    let mut records = Vec::with_capacity(args.certificates + 2);
    let started = Instant::now();
    for i in 0..args.certificates {
        let cert = Certificate {
            id: id(&format!("c{i}"))?,
            info: template.info.clone(),
            credential: template.credential,
            leaf: template.leaf.clone(),
            chain: template.chain.clone(),
            key: template.key.clone(),
        };
        records.push(record(
            Kind::Certificate,
            &format!("c{i}"),
            records::encode_certificate(&cert, &master_key).map_err(|e| e.to_string())?,
        ));
    }
    records.push(record(Kind::Backend, "b1", backend_record(backend.port, 0)));
    records.push(record(
        Kind::Api,
        "orders",
        br#"{"schema":1,"path":"/o","backendId":"b1"}"#.to_vec(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let store = EtcdStore::new(
        EtcdSettings {
            endpoints: vec![etcd.endpoint()],
            prefix: "/edgegw/".into(),
            timeout: Duration::from_secs(10),
        },
        runtime.handle().clone(),
    )
    .map_err(|e| e.to_string())?;
    store.import(&records).map_err(|e| e.to_string())?;
    eprintln!(
        "loadtest fleet: {} certificates in etcd ({:.1} s to seal and load)",
        args.certificates,
        started.elapsed().as_secs_f64()
    );
    let apply = apply_time(&store, args.certificates)?;

    let a = Node::start("a", &pki, work.path(), Some((&etcd.endpoint(), &key_file)))?;
    let b = Node::start("b", &pki, work.path(), Some((&etcd.endpoint(), &key_file)))?;
    let mut through_b = Client::connect(b.port)?;
    let mut propagation = Vec::with_capacity(args.changes);
    let mut answer = Vec::with_capacity(args.changes);
    for change in 1..=args.changes {
        let body: serde_json::Value = serde_json::from_slice(&backend_record(backend.port, change))
            .map_err(|e| e.to_string())?;
        let body = serde_json::json!({
            "url": body["url"],
            "tls": {"validateCertificateChain": false, "validateCertificateName": false},
            "credentials": {"certificateId": "c0"},
        });
        let t0 = Instant::now();
        let status = a.admin.put_json("/backends/b1", &body)?;
        answer.push(t0.elapsed());
        if status != 200 {
            return Err(format!("PUT /backends/b1 on node A answered {status}"));
        }
        let want = format!("/v{change}/x");
        loop {
            if through_b.path_seen("/o/x")? == want {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("change {change} did not reach node B in 10 s"));
            }
        }
        propagation.push(t0.elapsed());
    }
    let connections = (
        etcd_connections(a.proc.pid(), etcd.client_port()),
        etcd_connections(b.proc.pid(), etcd.client_port()),
    );
    println!(
        "fleet: {} certificates, {} changes: write on A to first request on B that uses it p50 {:.2} ms p99 {:.2} ms; A's answer p50 {:.2} ms p99 {:.2} ms; one change applied at this size {:.2} ms (median of 20); etcd connections per node: A {} B {}",
        args.certificates,
        args.changes,
        ms(percentile(&mut propagation, 50.0)),
        ms(percentile(&mut propagation, 99.0)),
        ms(percentile(&mut answer, 50.0)),
        ms(percentile(&mut answer, 99.0)),
        ms(apply),
        connections.0,
        connections.1,
    );
    if args.requests > 0 {
        data_plane_cpu(&pki, work.path(), &b, backend.port, args.requests)?;
    }
    drop(runtime);
    Ok(())
}

/// The data plane's CPU per request on fleet node B and on an embedded node with the same
/// route, backend and certificate, alternating (B, E, B, E) on one keep-alive connection
/// each; then the same with wrk when it is installed.
fn data_plane_cpu(
    pki: &Pki,
    work: &Path,
    fleet: &Node,
    backend_port: u16,
    requests: usize,
) -> Result<(), String> {
    use base64::Engine as _;
    let embedded = Node::start("e", pki, work, None)?;
    let p12 = std::fs::read(pki.path("client.p12")).map_err(|e| format!("client.p12: {e}"))?;
    embedded.admin.put_json(
        "/certificates/c0",
        &serde_json::json!({
            "data": base64::engine::general_purpose::STANDARD.encode(p12),
            "password": P12_PASSWORD,
        }),
    )?;
    let body: serde_json::Value =
        serde_json::from_slice(&backend_record(backend_port, 0)).map_err(|e| e.to_string())?;
    embedded.admin.put_json(
        "/backends/b1",
        &serde_json::json!({"url": body["url"], "tls": body["tls"], "credentials": body["credentials"]}),
    )?;
    embedded.admin.put_json(
        "/apis/orders",
        &serde_json::json!({"path": "/o", "backendId": "b1"}),
    )?;
    let nodes = [("fleet", fleet), ("embedded", &embedded)];
    let mut cpu = [Duration::ZERO; 2];
    let mut wall = [Duration::ZERO; 2];
    for _round in 0..2 {
        for (i, (_, node)) in nodes.iter().enumerate() {
            let mut client = Client::connect(node.port)?;
            client.path_seen("/o/warm")?;
            let (c0, t0) = (crate::procs::cpu_time(node.proc.pid()), Instant::now());
            for _ in 0..requests {
                client.path_seen("/o/x")?;
            }
            wall[i] += t0.elapsed();
            cpu[i] += crate::procs::cpu_time(node.proc.pid()).saturating_sub(c0);
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (2 * requests) as f64;
    println!(
        "data plane, own client, 1 keep-alive connection, 2x{requests} requests each: fleet node {:.1} us CPU/request ({:.0} req/s), embedded node {:.1} us CPU/request ({:.0} req/s): fleet/embedded CPU {:.2}x",
        per(cpu[0]),
        (2 * requests) as f64 / wall[0].as_secs_f64(),
        per(cpu[1]),
        (2 * requests) as f64 / wall[1].as_secs_f64(),
        cpu[0].as_secs_f64() / cpu[1].as_secs_f64().max(1e-9),
    );
    let Some(wrk) = crate::harness::find_program("wrk") else {
        eprintln!("loadtest fleet: wrk is not installed: no third-party figure");
        return Ok(());
    };
    let mut line = String::from("data plane, wrk -t1 -c8 -d5s (keep-alive):");
    let mut ratio = [0.0f64; 2];
    for (i, (name, node)) in nodes.iter().enumerate() {
        let c0 = crate::procs::cpu_time(node.proc.pid());
        let out = Command::new(&wrk)
            .args(["-t1", "-c8", "-d5s"])
            .arg(format!("https://127.0.0.1:{}/o/x", node.port))
            .output()
            .map_err(|e| format!("wrk: {e}"))?;
        let cpu = crate::procs::cpu_time(node.proc.pid()).saturating_sub(c0);
        let text = String::from_utf8_lossy(&out.stdout);
        let rate: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("wrk printed no rate:\n{text}"))?;
        let per_request = cpu.as_secs_f64() * 1e6 / (rate * 5.0).max(1.0);
        ratio[i] = per_request;
        line.push_str(&format!(
            " {name} {rate:.0} req/s, {per_request:.1} us CPU/request;"
        ));
    }
    println!(
        "{line} fleet/embedded CPU {:.2}x",
        ratio[0] / ratio[1].max(1e-9)
    );
    Ok(())
}

fn id(s: &str) -> Result<ResourceId, String> {
    ResourceId::parse(s).map_err(|_| format!("invalid id {s}"))
}

fn record(kind: Kind, id: &str, value: Vec<u8>) -> Record {
    Record {
        kind,
        id: id.to_owned(),
        value,
        revision: 0,
    }
}

fn backend_record(port: u16, change: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schema": 1,
        "url": format!("https://127.0.0.1:{port}/v{change}"),
        "tls": {"validateCertificateChain": false, "validateCertificateName": false},
        "credentials": {"certificateId": "c0"},
    }))
    .unwrap_or_default()
}

/// The median time one change takes to apply with `n` certificates in memory: a control
/// plane on the store's contents, publishing to a real snapshot publisher.
fn apply_time(store: &EtcdStore, n: usize) -> Result<Duration, String> {
    let contents: Contents = store.load().map_err(|e| e.to_string())?;
    let publisher = Arc::new(gateway::snapshot::Publisher::new());
    let p = publisher.clone();
    let dir = testkit::temp_dir("loadtest-fleet-apply")?;
    let local = gateway::store::open_embedded(dir.path()).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let control = ControlPlane::from_contents(
        Box::new(local),
        contents.clone(),
        MasterKey::from_bytes(MASTER_KEY),
        Box::new(move |r| {
            p.publish(r);
        }),
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "loadtest fleet: loading {n} certificates into a control plane took {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let mut times = Vec::new();
    for i in 0..20u64 {
        let update = Update {
            kind: Kind::Backend,
            id: "b1".into(),
            value: Some(backend_record(1, i as usize + 1000)),
            revision: contents.revision + 1 + i,
        };
        let t = Instant::now();
        control.apply(&[update], contents.revision + 1 + i);
        times.push(t.elapsed());
    }
    Ok(percentile(&mut times, 50.0))
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (values.len() as f64)).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Established TCP connections of process `pid` to `port` on loopback (from /proc).
fn etcd_connections(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&remote) && f[3] == "01" && inodes.contains(f[9])
        })
        .count()
}

/// One edgegw node of the fleet.
struct Node {
    proc: Proc,
    port: u16,
    admin: Endpoint,
}

impl Node {
    /// A node on etcd (`Some((endpoint, master key file))`) or on its embedded store.
    fn start(
        name: &str,
        pki: &Pki,
        work: &Path,
        fleet: Option<(&str, &Path)>,
    ) -> Result<Node, String> {
        let (port, admin_port, metrics_port) = (free_port()?, free_port()?, free_port()?);
        let dir = work.join(name);
        let l = |p: u16| local(p).to_string();
        let mut cfg =
            testkit::EdgegwConfig::new(&dir.join("data"), l(port), l(admin_port), l(metrics_port));
        cfg.workers = 1;
        cfg.shutdown_grace = "2s".into();
        cfg.listener_cert = Some((pki.path("server.pem"), pki.path("server.key")));
        cfg.admin_token = ADMIN_TOKEN.to_owned();
        cfg.steering_mode = Some("kernel".into());
        let mut text = cfg.render();
        if let Some((etcd, key)) = fleet {
            text.push_str(&format!(
                "\n[store]\nkind = \"etcd\"\netcd_endpoints = [{etcd:?}]\nmaster_key_file = {:?}\nnode_name = \"node-{name}\"\n",
                key.display().to_string()
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join("edgegw.toml");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cmd = Command::new(bin_dir()?.join("edgegw"));
        cmd.arg("run").arg("--config").arg(&path);
        cmd.env("EDGEGW_LOG", "warn");
        cmd.env_remove("EDGEGW_ADMIN_TOKEN");
        cmd.env_remove("EDGEGW_MASTER_KEY");
        let mut proc = Proc::spawn(&format!("edgegw-{name}"), cmd, dir.join("edgegw.log"))?;
        proc.wait_port(admin_port, Duration::from_secs(60))?;
        proc.wait_port(port, Duration::from_secs(60))?;
        let admin = Endpoint::parse(&format!("http://{}", local(admin_port)), Some(ADMIN_TOKEN))?;
        Ok(Node { proc, port, admin })
    }
}

/// One blocking keep-alive HTTPS connection through a node.
struct Client {
    tls: boring::ssl::SslStream<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Result<Client, String> {
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
        b.set_verify(SslVerifyMode::NONE);
        let connector = b.build();
        let tcp = TcpStream::connect(local(port)).map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let tls = connector
            .connect("localhost", tcp)
            .map_err(|e| format!("TLS to the node: {e}"))?;
        Ok(Client { tls })
    }

    /// The path the backend saw for one GET of `path`.
    fn path_seen(&mut self, path: &str) -> Result<String, String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.tls
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.tls.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the node closed the connection".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("a response without Content-Length")?;
            if buf.len() < end + 4 + length {
                continue;
            }
            let body: serde_json::Value = serde_json::from_slice(&buf[end + 4..end + 4 + length])
                .map_err(|e| format!("backend answer: {e}"))?;
            return Ok(body["path"].as_str().unwrap_or_default().to_owned());
        }
    }
}
