//! Hardening of the admin API, the data directory and crash safety (issue 15): the plaintext
//! admin API off loopback, the probes, duplicate `Authorization`, body limits, file modes and
//! the control socket's removal, a full disk (507), and `kill -9` during a stream of writes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::http::{plain_connect, plain_request};
use e2e::util::{bin_path, free_port, wait_for};
use e2e::*;
use serde_json::{json, Value};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
        .unwrap_or_else(|e| panic!("chmod {m:o} {}: {e}", p.display()));
}

/// Rewrites the gateway's config file with `edit` (for keys `GatewayOpts` has no field for;
/// a later `reconfigure` would undo it).
fn edit_config(gw: &Gateway, edit: impl FnOnce(String) -> String) {
    let path = gw.config_path();
    let text = std::fs::read_to_string(&path).expect("read config");
    std::fs::write(&path, edit(text)).expect("write config");
}

// ---------------------------------------------------------------- admin.allow_plaintext

#[test]
fn a_plaintext_admin_api_off_loopback_needs_allow_plaintext() {
    let mut gw = Gateway::create(GatewayOpts::default());
    let loopback = format!("[admin]\naddress = \"{}\"", gw.admin_addr);
    let everywhere = format!("[admin]\naddress = \"0.0.0.0:{}\"", gw.admin_addr.port());
    edit_config(&gw, |t| {
        assert!(t.contains(&loopback), "{t}");
        t.replace(&loopback, &everywhere)
    });

    // `edgegw check` reports it, with the key and what to set.
    let out = Command::new(bin_path("edgegw"))
        .args(["check", "--config"])
        .arg(gw.config_path())
        .output()
        .expect("run edgegw check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "check: {stderr}");
    assert!(
        stderr.contains("admin.address:")
            && stderr.contains("not a loopback address")
            && stderr.contains("admin.allow_plaintext = true"),
        "check: {stderr}"
    );

    // `edgegw run` refuses to start, saying why, before it opens any port.
    let stderr = run_refused(&gw);
    assert!(
        stderr.contains("admin.address:")
            && stderr.contains("admin.allow_plaintext = true")
            && stderr.contains("no TLS"),
        "{stderr}"
    );

    // Set on purpose: it starts, listening on every address.
    edit_config(&gw, |t| {
        t.replace(
            &everywhere,
            &format!("{everywhere}\nallow_plaintext = true"),
        )
    });
    gw.start_stopped();
    let r = gw.admin().get("/certificates");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Runs `edgegw run` on the gateway's config and data dir, expecting it to exit 1 (within
/// 20 s) without serving; returns its stderr.
fn run_refused(gw: &Gateway) -> String {
    let log = gw.dir().join("refused.log");
    let mut child = Command::new(bin_path("edgegw"))
        .arg("run")
        .arg("--config")
        .arg(gw.config_path())
        .current_dir(gw.dir())
        .env_remove("EDGEGW_ADMIN_TOKEN")
        .env_remove("EDGEGW_MASTER_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn edgegw");
    let status = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    let stderr = e2e::util::read_lossy(&log);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("edgegw did not refuse to start:\n{stderr}");
    };
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{stderr}");
    stderr
}

// ---------------------------------------------------------------- probes

#[test]
fn healthz_and_readyz_answer_without_a_token() {
    let gw = Gateway::start();
    // The admin API may answer a moment before every worker's event loop has run (503
    // NotReady, WorkersNotServing, until then): what a load balancer polls for.
    let ready = wait_for(Duration::from_secs(10), || {
        let r = plain_request(gw.admin_addr, Request::get("/readyz")).ok()?;
        if r.status == 503 {
            let v = assert_error(&r, 503, "NotReady");
            assert_eq!(
                v["error"]["details"],
                json!([{"reason": "WorkersNotServing"}])
            );
        }
        (r.status == 200).then_some(())
    });
    assert!(ready.is_some(), "/readyz never answered 200");
    for token in [None, Some("wrong-token")] {
        for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
            let mut req = Request::get(path);
            if let Some(t) = token {
                req = req.header("Authorization", &format!("Bearer {t}"));
            }
            let r = plain_request(gw.admin_addr, req).expect("request");
            assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
        }
    }
    // Nothing else is open without the token.
    let r = gw.admin_with_token(None).get("/certificates");
    assert_eq!(r.status, 401);
}

#[test]
fn readyz_is_503_until_a_fleet_node_has_a_configuration() {
    // etcd "down" (nothing listens there) and no local copy: the node starts, serves its
    // admin API and liveness, and is not ready.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start_with(GatewayOpts {
        workers: 1,
        store: testkit::StoreSettings {
            etcd_timeout: Some("300ms".into()),
            ..testkit::StoreSettings::etcd(vec![dead], "/hardening/")
        },
        ..GatewayOpts::default()
    });
    let r = plain_request(gw.admin_addr, Request::get("/healthz")).expect("healthz");
    assert_eq!(r.status, 200);
    let r = plain_request(gw.admin_addr, Request::get("/readyz")).expect("readyz");
    let v = assert_error(&r, 503, "NotReady");
    assert_eq!(v["error"]["details"], json!([{"reason": "StoreNotLoaded"}]));
}

// ---------------------------------------------------------------- auth and body limits

#[test]
fn two_authorization_headers_are_400() {
    let gw = Gateway::start();
    let good = format!("Bearer {}", gw.token());
    for (first, second) in [
        (good.as_str(), "Bearer wrong"),
        ("Bearer wrong", good.as_str()),
        (good.as_str(), good.as_str()),
    ] {
        let req = Request::new("PUT", "/backends/b1")
            .header("Authorization", first)
            .header("Authorization", second)
            .header("Content-Type", "application/json")
            .body(json!({"url": "https://127.0.0.1:9"}).to_string());
        let r = plain_request(gw.admin_addr, req).expect("request");
        let v = assert_error(&r, 400, "InvalidRequest");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("more than one Authorization header"),
            "{v}"
        );
    }
    assert_eq!(
        gw.admin().get("/backends/b1").status,
        404,
        "nothing written"
    );
}

#[test]
fn an_admin_body_over_the_limit_is_413_and_the_answer_arrives() {
    let gw = Gateway::start();
    let token = format!("Bearer {}", gw.token());
    // 2 MiB of valid JSON shape: the limit is 1 MiB.
    let big = format!(
        "{{\"url\": \"https://127.0.0.1:9\", \"pad\": \"{}\"}}",
        "x".repeat(2 << 20)
    );
    // Each one on its own connection, several times: the answer must come every time (the
    // refused body is read and discarded, so the client's writes never meet a reset).
    for round in 0..5 {
        for (what, req) in [
            (
                "content-length",
                Request::new("PUT", "/backends/b1").body(big.clone()),
            ),
            (
                "chunked",
                Request::new("PUT", "/backends/b1").chunked(
                    big.as_bytes()
                        .chunks(64 << 10)
                        .map(<[u8]>::to_vec)
                        .collect(),
                ),
            ),
        ] {
            let req = req
                .header("Authorization", &token)
                .header("Content-Type", "application/json");
            let mut conn = plain_connect(gw.admin_addr).expect("connect");
            let r = conn
                .send(&req)
                .unwrap_or_else(|e| panic!("round {round}, {what}: no answer: {e}"));
            assert_error(&r, 413, "PayloadTooLarge");
        }
        // Without the token: 401, which arrives the same way.
        let mut conn = plain_connect(gw.admin_addr).expect("connect");
        let r = conn
            .send(&Request::new("PUT", "/backends/b1").body(big.clone()))
            .unwrap_or_else(|e| panic!("round {round}, no token: no answer: {e}"));
        assert_error(&r, 401, "Unauthorized");
    }
    // The policy XML has the same limit.
    assert_eq!(
        gw.admin()
            .put_backend("b1", "https://127.0.0.1:9", false, false, None)
            .status,
        201
    );
    assert_eq!(gw.admin().put_api("a1", "/a1", "b1").status, 201);
    let xml = format!("<policies><!-- {} --></policies>", "x".repeat(2 << 20));
    assert_error(
        &gw.admin().put_xml("/apis/a1/policy", &xml),
        413,
        "PayloadTooLarge",
    );
    let r = gw.admin().get("/backends/b1");
    assert_eq!(r.json()["url"], "https://127.0.0.1:9", "{}", r.text());
}

// ---------------------------------------------------------------- files in data_dir

/// Every entry below `dir` (the directory itself included), with its mode.
fn modes_under(dir: &Path) -> BTreeMap<PathBuf, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        out.insert(p.clone(), mode(&p));
        if p.is_dir() {
            for e in std::fs::read_dir(&p).expect("read dir") {
                stack.push(e.expect("dir entry").path());
            }
        }
    }
    out
}

#[test]
fn data_dir_is_private_loose_modes_warn_and_the_socket_goes_on_exit() {
    let pki = Pki::new();
    // No configured token: admin.token is generated; the listener certificate too.
    let mut gw = Gateway::create(GatewayOpts {
        workers: 1,
        admin_token: None,
        ..GatewayOpts::default()
    });
    let data = gw.data_dir();
    // edgegw makes the directory itself.
    std::fs::remove_dir(&data).expect("remove the harness's data dir");
    let access_log = data.join("access.log");
    edit_config(&gw, |t| {
        t.replacen(
            "[server]\n",
            &format!(
                "[server]\naccess_log = {:?}\n",
                access_log.display().to_string()
            ),
            1,
        )
    });
    gw.start_stopped();
    let admin = gw.admin();
    admin.ok(
        admin.put_certificate(
            "client-1",
            &pki.p12("client-1", P12_PASSWORD, false),
            P12_PASSWORD,
        ),
        "upload client-1",
    );
    admin.ok(
        admin.put_backend("b1", "https://127.0.0.1:9", false, false, Some("client-1")),
        "put b1",
    );
    let modes = modes_under(&data);
    let names: Vec<String> = modes
        .keys()
        .filter_map(|p| p.strip_prefix(&data).ok())
        .map(|p| p.display().to_string())
        .collect();
    for expected in [
        "edgegw.redb",
        "master.key",
        "admin.token",
        "listener.crt",
        "listener.key",
        "audit.log",
        "edgegw.sock",
        "access.log",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing in {names:?}"
        );
    }
    for (path, m) in &modes {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{} has mode {m:o}, not {want:o}", path.display());
    }
    assert!(
        !gw.stderr().contains("accessible to group or others"),
        "a warning on a fresh data dir:\n{}",
        gw.stderr()
    );

    // A clean exit removes the control socket and nothing else.
    let st = gw.stop();
    assert!(st.is_some_and(|s| s.success()), "exit status {st:?}");
    let after: Vec<PathBuf> = modes_under(&data).into_keys().collect();
    assert!(
        !data.join("edgegw.sock").exists(),
        "the control socket is still there after SIGTERM: {after:?}"
    );
    assert_eq!(after.len(), modes.len() - 1, "{after:?}");

    // Looser modes on existing files: a warning naming each, and the mode is kept.
    set_mode(&data, 0o755);
    set_mode(&data.join("edgegw.redb"), 0o644);
    set_mode(&data.join("master.key"), 0o640);
    gw.start_stopped();
    let log = gw.stderr();
    for (file, m) in [
        ("", "0755"),
        ("edgegw.redb", "0644"),
        ("master.key", "0640"),
    ] {
        let path = if file.is_empty() {
            data.clone()
        } else {
            data.join(file)
        };
        let named = log.lines().any(|l| {
            l.contains("WARN")
                && l.contains(&format!("{} in the data directory", path.display()))
                && l.contains(&format!("(mode {m})"))
        });
        assert!(named, "no warning for {} ({m}):\n{log}", path.display());
    }
    assert!(
        !log.contains(&format!(
            "{} in the data directory",
            data.join("admin.token").display()
        )),
        "a warning for a private file:\n{log}"
    );
    assert_eq!(mode(&data), 0o755, "the directory's mode was changed");
    assert_eq!(
        mode(&data.join("edgegw.redb")),
        0o644,
        "a file's mode was changed"
    );
    assert_eq!(gw.admin().get("/backends/b1").status, 200);
    gw.stop();
    set_mode(&data, 0o700);
}

// ---------------------------------------------------------------- a full disk

/// A tmpfs mounted for the test; unmounted (lazily, so a process still holding a file in it
/// does not stop the unmount) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` when mounting is not permitted here (not root, or no CAP_SYS_ADMIN).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping: cannot mount a tmpfs on {}: {}",
                at.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` to the last byte with `dir/filler`.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let block = vec![0xa5u8; size];
        while f.write_all(&block).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_data_dir_is_507_and_the_store_stays_readable() {
    // Declared before the gateway: dropped after it (the process goes first).
    let _mount: Tmpfs;
    let mut gw = Gateway::create(GatewayOpts {
        workers: 1,
        ..GatewayOpts::default()
    });
    let data = gw.data_dir();
    _mount = match Tmpfs::mount(&data, "8m") {
        Some(m) => m,
        None => return,
    };
    gw.start_stopped();
    let admin = gw.admin();
    let url = |v: usize| format!("https://127.0.0.1:9/v{v}");
    admin.ok(
        admin.put_backend("b-main", &url(0), false, false, None),
        "put b-main",
    );
    admin.ok(admin.put_api("orders", "/orders", "b-main"), "put orders");

    let filler = fill(&data);
    // Replace b-main until a write finds no room: the audit line or the store's commit
    // (whichever needs a new page first) fails, within a few pages of audit lines.
    let mut acknowledged = 0;
    let mut refused = None;
    for v in 1..=400 {
        let r = admin.put_backend("b-main", &url(v), false, false, None);
        match r.status {
            200 => acknowledged = v,
            507 => {
                refused = Some(r);
                break;
            }
            s => panic!("PUT b-main v{v} on a full disk: {s} {}", r.text()),
        }
    }
    let refused = refused.expect("no write was refused on a full data dir");
    let v = assert_error(&refused, 507, "InsufficientStorage");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("server.data_dir"),
        "{v}"
    );
    // Still full: a new resource is refused too, and nothing of either shows.
    assert_error(
        &admin.put_backend("b-new", &url(1), false, false, None),
        507,
        "InsufficientStorage",
    );
    let r = admin.get("/backends");
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = r.json();
    let listed = listed["value"].as_array().expect("value");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["url"], url(acknowledged), "{listed:?}");
    assert_eq!(admin.get("/backends/b-new").status, 404);
    assert_eq!(admin.get("/apis/orders").json()["backendId"], "b-main");

    // Space again: the same store takes writes, no restart needed.
    std::fs::remove_file(&filler).expect("remove filler");
    let r = admin.put_backend("b-main", &url(1000), false, false, None);
    assert_eq!(r.status, 200, "after freeing space: {}", r.text());
    let r = admin.put_backend("b-new", &url(1001), false, false, None);
    assert_eq!(r.status, 201, "after freeing space: {}", r.text());

    // And all of it is on disk.
    gw.restart();
    let admin = gw.admin();
    assert_eq!(admin.get("/backends/b-main").json()["url"], url(1000));
    assert_eq!(admin.get("/backends/b-new").json()["url"], url(1001));
    assert_eq!(admin.get("/apis/orders").status, 200);
    gw.stop();
}

// ---------------------------------------------------------------- kill -9 during writes

/// What the admin API acknowledged: (collection, id) → the resource's contract fields.
type Acknowledged = BTreeMap<(&'static str, String), Value>;

/// A write the gateway may or may not have made when it was killed.
type InFlight = Option<((&'static str, String), Value)>;

/// The fields compared: a certificate's thumbprint; a backend's URL and certificate id; an
/// API's path and backend id.
fn fields(collection: &str, resource: &Value) -> Value {
    match collection {
        "certificates" => json!({"thumbprint": resource["thumbprint"]}),
        "backends" => json!({
            "url": resource["url"],
            "certificateId": resource["credentials"]["certificateId"],
        }),
        _ => json!({"path": resource["path"], "backendId": resource["backendId"]}),
    }
}

/// One stream of writes until the gateway dies: certificates, then backends bound to them,
/// then APIs routed to those, over a few ids (so most writes replace). Returns what was
/// acknowledged and the write in flight when the connection broke.
fn write_stream(
    admin: &Admin,
    bundles: &[(Vec<u8>, String)],
    start: usize,
    acknowledged: &Mutex<Acknowledged>,
    acks: &AtomicUsize,
) -> InFlight {
    use base64::Engine as _;
    for step in start.. {
        let i = step / 3;
        let (collection, id, body, expected) = match step % 3 {
            0 => {
                let (p12, thumbprint) = &bundles[i % bundles.len()];
                (
                    "certificates",
                    format!("c{}", i % 2),
                    json!({
                        "data": base64::engine::general_purpose::STANDARD.encode(p12),
                        "password": P12_PASSWORD,
                    }),
                    json!({"thumbprint": thumbprint}),
                )
            }
            1 => {
                let cert = format!("c{}", i % 2);
                let url = format!("https://127.0.0.1:9/s{step}");
                (
                    "backends",
                    format!("b{}", i % 4),
                    json!({
                        "url": url,
                        "tls": {"validateCertificateChain": false, "validateCertificateName": false},
                        "credentials": {"certificateId": cert},
                    }),
                    json!({"url": url, "certificateId": cert}),
                )
            }
            _ => {
                let backend = format!("b{}", i % 4);
                let path = format!("/p{}", i % 4);
                (
                    "apis",
                    format!("a{}", i % 4),
                    json!({"path": path, "backendId": backend}),
                    json!({"path": path, "backendId": backend}),
                )
            }
        };
        let request = Request::new("PUT", &format!("/{collection}/{id}"))
            .header(
                "Authorization",
                &format!("Bearer {}", admin.token.as_deref().unwrap_or_default()),
            )
            .header("Content-Type", "application/json")
            .header("Connection", "close")
            .body(body.to_string());
        // Refused: the request never left, nothing can have changed.
        let Ok(mut conn) = plain_connect(admin.addr) else {
            return None;
        };
        match conn.send(&request) {
            Ok(r) if r.status == 200 || r.status == 201 => {
                let got = fields(collection, &r.json());
                assert_eq!(
                    got, expected,
                    "PUT /{collection}/{id} answered other content"
                );
                acknowledged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((collection, id), expected);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => panic!("PUT /{collection}/{id}: {} {}", r.status, r.text()),
            Err(_) => return Some(((collection, id), expected)),
        }
    }
    None
}

/// Everything the restarted gateway lists, as `fields`, keyed like [`Acknowledged`];
/// checks that every resource reads back whole and that every reference resolves.
fn stored(admin: &Admin, thumbprints: &[String]) -> Acknowledged {
    let mut out = Acknowledged::new();
    for collection in ["certificates", "backends", "apis"] {
        let r = admin.get(&format!("/{collection}"));
        assert_eq!(r.status, 200, "GET /{collection}: {}", r.text());
        for resource in r.json()["value"].as_array().expect("value") {
            let id = resource["id"].as_str().expect("id").to_owned();
            let one = admin.get(&format!("/{collection}/{id}"));
            assert_eq!(one.status, 200, "GET /{collection}/{id}: {}", one.text());
            assert_eq!(
                &one.json(),
                resource,
                "/{collection}/{id} differs from its listing"
            );
            out.insert((collection, id), fields(collection, resource));
        }
    }
    for ((collection, id), f) in &out {
        let refers = match *collection {
            "certificates" => {
                let tp = f["thumbprint"].as_str().unwrap_or_default().to_owned();
                assert!(
                    thumbprints.contains(&tp),
                    "certificate {id}: thumbprint {tp}"
                );
                continue;
            }
            "backends" => ("certificates", f["certificateId"].as_str()),
            _ => ("backends", f["backendId"].as_str()),
        };
        let target = (refers.0, refers.1.unwrap_or_default().to_owned());
        assert!(
            out.contains_key(&target),
            "{collection}/{id} refers to {target:?}, which is not stored"
        );
    }
    out
}

#[test]
fn kill_9_during_admin_writes_loses_no_acknowledged_write() {
    let pki = Pki::new();
    let bundles: Vec<(Vec<u8>, String)> = ["client-1", "client-2", "client-3"]
        .iter()
        .map(|n| {
            (
                pki.p12(n, P12_PASSWORD, false),
                pki.thumbprint(&format!("{n}.pem")),
            )
        })
        .collect();
    let thumbprints: Vec<String> = bundles.iter().map(|(_, t)| t.clone()).collect();
    let mut gw = Gateway::start_with(GatewayOpts {
        workers: 1,
        ..GatewayOpts::default()
    });
    let acknowledged = Arc::new(Mutex::new(Acknowledged::new()));
    let mut step = 0;
    // Killed after this many more acknowledged writes: early, mid-stream, later.
    for (round, kill_after) in [4usize, 17, 42].into_iter().enumerate() {
        let acks = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (admin, bundles, acknowledged, acks) = (
                gw.admin(),
                bundles.clone(),
                acknowledged.clone(),
                acks.clone(),
            );
            std::thread::spawn(move || write_stream(&admin, &bundles, step, &acknowledged, &acks))
        };
        let reached = wait_for(Duration::from_secs(20), || {
            (acks.load(Ordering::SeqCst) >= kill_after || writer.is_finished()).then_some(())
        });
        assert!(
            reached.is_some(),
            "round {round}: the writes did not get going"
        );
        let pid = gw.pid().expect("running");
        e2e::util::signal(pid, libc::SIGKILL);
        let st = gw.wait_exit(Duration::from_secs(10));
        assert!(st.is_some(), "round {round}: edgegw did not die of SIGKILL");
        let in_flight = writer.join().expect("the writer panicked");
        let done = acks.load(Ordering::SeqCst);
        assert!(
            done >= kill_after,
            "round {round}: {done} writes before the kill"
        );
        // The next round starts a new certificate-backend-API triple: one that lost its
        // backend to the kill would route to a backend that may not exist.
        step = (step + done + 1).div_ceil(3) * 3;

        gw.move_to_fresh_ports();
        gw.start_stopped();
        let found = stored(&gw.admin(), &thumbprints);
        let mut expected = acknowledged.lock().unwrap_or_else(|e| e.into_inner());
        // The write in flight may have been made or not: whichever, whole.
        if let Some((key, value)) = in_flight {
            let now = found.get(&key);
            let before = expected.get(&key);
            assert!(
                now == Some(&value) || now == before,
                "round {round}: {key:?} is {now:?}: neither the write in flight ({value}) nor the acknowledged {before:?}"
            );
            match now {
                Some(v) => expected.insert(key, v.clone()),
                None => expected.remove(&key),
            };
        }
        assert_eq!(
            found, *expected,
            "round {round}: what the restarted gateway stores is not what was acknowledged"
        );
    }
    // The data plane loaded the same: an API routes (its backend is unreachable: 502, not 404).
    let r = gw.client().get("/p0/x");
    assert_eq!(r.status, 502, "{}", r.text());
}
