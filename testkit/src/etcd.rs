//! A real etcd on loopback for fleet-mode tests: [`Etcd`] (one member) and [`EtcdCluster`]
//! (n members in one cluster), each in its own temporary directory (data dirs and logs),
//! on free 127.0.0.1 ports, killed on drop.
//!
//! The binary is Debian's etcd 3.4 (`/usr/bin/etcd`, or whatever `EDGEGW_TEST_ETCD` names);
//! Debian ships no etcdctl, so what the tests need beyond the gateway's own client (reading
//! what the gateway stored, compaction) goes through etcd's gRPC-gateway JSON API
//! (`/v3/kv/...`) on the client port, over a plain HTTP/1.0 request on a `TcpStream`: no
//! HTTP or gRPC client for the test crates to build. In that API int64s are JSON strings and
//! keys and values are base64.
//!
//! Ports are found by binding port 0 and letting go of the socket before etcd binds it, so
//! another process may take one in between; etcd then fails to start and the error says
//! so (with the tail of etcd's log).

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::TempDir;

/// The etcd binary used when [`PROGRAM_ENV`] is not set.
pub const DEFAULT_PROGRAM: &str = "/usr/bin/etcd";
/// The environment variable that names another etcd binary.
pub const PROGRAM_ENV: &str = "EDGEGW_TEST_ETCD";

/// How long a start (or restart) may take until every started member is healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a start polls `/health` (and whether etcd has exited).
const POLL: Duration = Duration::from_millis(50);
/// How long [`Etcd::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Connect/read/write timeout of one `/health` poll: short, so that a member that does not
/// answer (no leader yet) does not stall the polling of the others.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Connect/read/write timeout of one KV request.
const KV_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of etcd's log an error quotes.
const LOG_TAIL_BYTES: usize = 6000;

/// The etcd binary: `$EDGEGW_TEST_ETCD`, else [`DEFAULT_PROGRAM`].
pub fn program() -> PathBuf {
    std::env::var_os(PROGRAM_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PROGRAM), PathBuf::from)
}

/// Whether tests can run etcd: `EDGEGW_TEST_ETCD` is set (then a missing binary is the
/// caller's error to see, not a reason to skip), or [`DEFAULT_PROGRAM`] exists.
pub fn available() -> bool {
    std::env::var_os(PROGRAM_ENV).is_some_and(|p| !p.is_empty())
        || Path::new(DEFAULT_PROGRAM).is_file()
}

/// One etcd process: a single-member cluster (member `m0`) with its own data dir and log
/// (`m0.etcd` and `m0.log` in [`Etcd::dir`]; the log has stdout and stderr of every run).
#[derive(Debug)]
pub struct Etcd {
    // Declared before `dir`: dropped (the process killed) before the directory is removed.
    member: Member,
    dir: TempDir,
}

impl Etcd {
    /// Starts etcd on two free loopback ports (client and peer) and waits until it is
    /// healthy. On a timeout (20 s) or an early exit the error quotes the tail of its log.
    pub fn start() -> io::Result<Etcd> {
        let dir = crate::temp_dir("etcd").map_err(io::Error::other)?;
        let ports = free_ports(2)?;
        let (client_port, peer_port) = (ports[0], ports[1]);
        let name = "m0".to_string();
        let initial_cluster = format!("{name}={}", url(peer_port));
        let mut member = Member::new(
            program(),
            dir.path(),
            name,
            (client_port, peer_port),
            initial_cluster,
            unique_token(),
        );
        member.spawn()?;
        let mut etcd = Etcd { member, dir };
        etcd.member.wait_healthy(Instant::now() + START_TIMEOUT)?;
        Ok(etcd)
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn endpoint(&self) -> String {
        url(self.member.client_port)
    }

    /// [`Etcd::endpoint`] as a list, for APIs that take a cluster's endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    pub fn client_port(&self) -> u16 {
        self.member.client_port
    }

    /// The temporary directory: the data dir (`m0.etcd`) and the log (`m0.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.member.log_path
    }

    /// The last few KB of etcd's log (for a failing test's message).
    pub fn log_tail(&self) -> String {
        log_tail(&self.member.log_path)
    }

    /// Whether the process started last is still alive (`&mut`: this reaps it if not).
    pub fn is_running(&mut self) -> bool {
        self.member.is_running()
    }

    /// Whether `GET /health` answers `"health":"true"` now (one try).
    pub fn is_healthy(&self) -> bool {
        is_healthy(&self.endpoint())
    }

    /// Stops etcd gracefully: SIGTERM, then SIGKILL if it has not exited after 5 s.
    /// Stopping a stopped etcd does nothing.
    pub fn stop(&mut self) -> io::Result<()> {
        self.member.stop()
    }

    /// SIGKILL, as a crash would (no graceful shutdown of raft or the backend).
    pub fn kill(&mut self) -> io::Result<()> {
        self.member.kill()
    }

    /// Starts the stopped (or killed) etcd again, on the same ports and data dir (etcd
    /// ignores the `--initial-*` flags when the data dir has data), and waits until it is
    /// healthy. An error if it is still running.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.member.is_running() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("etcd at {} is still running", self.endpoint()),
            ));
        }
        self.member.spawn()?;
        self.member.wait_healthy(Instant::now() + START_TIMEOUT)
    }

    /// Puts `key` = `value`. See [`put`].
    pub fn put(&self, key: &str, value: &[u8]) -> io::Result<()> {
        put(&self.endpoint(), key, value)
    }

    /// The value of `key`, `None` if there is none. See [`get`].
    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        get(&self.endpoint(), key)
    }

    /// etcd's current revision. See [`revision`].
    pub fn revision(&self) -> io::Result<i64> {
        revision(&self.endpoint())
    }

    /// Compacts to the current revision and returns it. See [`compact`].
    pub fn compact(&self) -> io::Result<i64> {
        compact(&self.endpoint())
    }
}

/// n etcd members on loopback in one cluster (`--initial-cluster m0=…,m1=…,…`), each with
/// its own data dir and log (`mI.etcd`, `mI.log` in [`EtcdCluster::dir`]). Members are
/// addressed by index, `0..len()`.
#[derive(Debug)]
pub struct EtcdCluster {
    // Declared before `dir`: dropped (the processes killed) before the directory is removed.
    members: Vec<Member>,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts `n` members (`n` ≥ 1) and waits until every one is healthy. All are spawned
    /// before any is waited for: a member of a new cluster is healthy only once a quorum of
    /// its peers is up.
    pub fn start(n: usize) -> io::Result<EtcdCluster> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an etcd cluster needs at least one member",
            ));
        }
        let dir = crate::temp_dir("etcd-cluster").map_err(io::Error::other)?;
        let ports = free_ports(2 * n)?;
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}={}", url(ports[2 * i + 1])))
            .collect::<Vec<_>>()
            .join(",");
        let token = unique_token();
        let program = program();
        let members = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                Member::new(
                    program.clone(),
                    dir.path(),
                    name,
                    (ports[2 * i], ports[2 * i + 1]),
                    initial_cluster.clone(),
                    token.clone(),
                )
            })
            .collect();
        let mut cluster = EtcdCluster { members, dir };
        for member in &mut cluster.members {
            member.spawn()?;
        }
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    /// The number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always `false`: a cluster has at least one member (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, running or not (as a client is configured).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| url(m.client_port)).collect()
    }

    /// Member `i`'s client URL.
    ///
    /// # Panics
    /// If `i >= len()`, like indexing a slice.
    pub fn endpoint(&self, i: usize) -> String {
        url(self.members[i].client_port)
    }

    /// The temporary directory: every member's data dir (`mI.etcd`) and log (`mI.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last few KB of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> io::Result<String> {
        let member = self
            .members
            .get(i)
            .ok_or_else(|| bad_index(i, self.len()))?;
        Ok(log_tail(&member.log_path))
    }

    /// Whether member `i`'s process is alive (`false` for an index out of range).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members.get_mut(i).is_some_and(Member::is_running)
    }

    /// Whether member `i` answers `"health":"true"` now (one try).
    pub fn is_healthy(&self, i: usize) -> bool {
        self.members
            .get(i)
            .is_some_and(|m| is_healthy(&url(m.client_port)))
    }

    /// SIGKILLs member `i` (a crash; the others keep its place in the cluster). Killing a
    /// member that is not running does nothing.
    pub fn kill(&mut self, i: usize) -> io::Result<()> {
        self.member_mut(i)?.kill()
    }

    /// Stops member `i` gracefully (SIGTERM, SIGKILL after 5 s).
    pub fn stop(&mut self, i: usize) -> io::Result<()> {
        self.member_mut(i)?.stop()
    }

    /// Starts the stopped (or killed) member `i` again on its ports and data dir, and waits
    /// until every running member is healthy. An error if it is still running.
    pub fn start_member(&mut self, i: usize) -> io::Result<()> {
        let member = self.member_mut(i)?;
        if member.is_running() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "etcd member {} at {} is still running",
                    member.name,
                    url(member.client_port)
                ),
            ));
        }
        member.spawn()?;
        self.wait_healthy()
    }

    /// Waits (≤ 20 s) until every running member answers `"health":"true"`; an error, with
    /// the log tail, if one has not by then or if one exits meanwhile.
    pub fn wait_healthy(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        for member in &mut self.members {
            if member.child.is_some() {
                member.wait_healthy(deadline)?;
            }
        }
        Ok(())
    }

    /// Puts `key` = `value` through member `i`. See [`put`].
    pub fn put(&self, i: usize, key: &str, value: &[u8]) -> io::Result<()> {
        put(&self.member_endpoint(i)?, key, value)
    }

    /// The value of `key` as member `i` reads it (linearizably). See [`get`].
    pub fn get(&self, i: usize, key: &str) -> io::Result<Option<Vec<u8>>> {
        get(&self.member_endpoint(i)?, key)
    }

    /// Compacts the cluster to its current revision, through member `i`. See [`compact`].
    pub fn compact(&self, i: usize) -> io::Result<i64> {
        compact(&self.member_endpoint(i)?)
    }

    fn member_mut(&mut self, i: usize) -> io::Result<&mut Member> {
        let len = self.members.len();
        self.members.get_mut(i).ok_or_else(|| bad_index(i, len))
    }

    fn member_endpoint(&self, i: usize) -> io::Result<String> {
        self.members
            .get(i)
            .map(|m| url(m.client_port))
            .ok_or_else(|| bad_index(i, self.len()))
    }
}

/// Whether `GET ENDPOINT/health` answers `"health":"true"` now (one try, 2 s at most).
pub fn is_healthy(endpoint: &str) -> bool {
    let Ok((200, body)) = http(endpoint, "GET", "/health", None, HEALTH_TIMEOUT) else {
        return false;
    };
    serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["health"] == "true")
}

/// `POST ENDPOINT/v3/kv/put`: `key` = `value`.
pub fn put(endpoint: &str, key: &str, value: &[u8]) -> io::Result<()> {
    let request = json!({ "key": BASE64.encode(key), "value": BASE64.encode(value) });
    post(endpoint, "/v3/kv/put", &request).map(drop)
}

/// `POST ENDPOINT/v3/kv/range` for `key` alone: its value, `None` if there is none (an
/// empty value is `Some(vec![])`: the JSON leaves an empty value out, not the key).
pub fn get(endpoint: &str, key: &str) -> io::Result<Option<Vec<u8>>> {
    let request = json!({ "key": BASE64.encode(key) });
    let response = post(endpoint, "/v3/kv/range", &request)?;
    let Some(kv) = response["kvs"].as_array().and_then(|kvs| kvs.first()) else {
        return Ok(None);
    };
    match &kv["value"] {
        Value::Null => Ok(Some(Vec::new())),
        Value::String(v) => BASE64.decode(v).map(Some).map_err(|e| {
            invalid_data(format!(
                "{endpoint}/v3/kv/range: the value of {key:?} is not base64 ({e}): {response}"
            ))
        }),
        other => Err(invalid_data(format!(
            "{endpoint}/v3/kv/range: the value of {key:?} is not a string: {other}"
        ))),
    }
}

/// etcd's current revision: `header.revision` of a range request (for key `"\0"`).
pub fn revision(endpoint: &str) -> io::Result<i64> {
    let response = post(endpoint, "/v3/kv/range", &json!({ "key": "AA==" }))?;
    let revision = &response["header"]["revision"];
    revision
        .as_str()
        .and_then(|r| r.parse().ok())
        .or_else(|| revision.as_i64())
        .ok_or_else(|| {
            invalid_data(format!(
                "{endpoint}/v3/kv/range: no header.revision in {response}"
            ))
        })
}

/// Compacts to the current revision (physically: the call returns once the backend has
/// dropped the history) and returns that revision. A revision that is already compacted
/// (nothing written since the last compaction) is not an error: the history is as gone as
/// the caller wants it.
pub fn compact(endpoint: &str) -> io::Result<i64> {
    const ALREADY_COMPACTED: &str = "required revision has been compacted";
    let rev = revision(endpoint)?;
    let request = json!({ "revision": rev.to_string(), "physical": true });
    match post(endpoint, "/v3/kv/compaction", &request) {
        Ok(_) => Ok(rev),
        Err(e) if e.to_string().contains(ALREADY_COMPACTED) => Ok(rev),
        Err(e) => Err(e),
    }
}

/// One member's process and everything needed to start it again the same way.
#[derive(Debug)]
struct Member {
    program: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    initial_cluster: String,
    token: String,
    child: Option<Child>,
}

impl Member {
    /// Member `name` with data dir `DIR/NAME.etcd` and log `DIR/NAME.log`.
    fn new(
        program: PathBuf,
        dir: &Path,
        name: String,
        (client_port, peer_port): (u16, u16),
        initial_cluster: String,
        token: String,
    ) -> Member {
        Member {
            program,
            data_dir: dir.join(format!("{name}.etcd")),
            log_path: dir.join(format!("{name}.log")),
            name,
            client_port,
            peer_port,
            initial_cluster,
            token,
            child: None,
        }
    }

    fn spawn(&mut self) -> io::Result<()> {
        let program = &self.program;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| with_context(e, format!("opening {}", self.log_path.display())))?;
        // A marker per run: after a restart the log holds both runs.
        writeln!(
            log,
            "=== testkit: starting {} as member {} (client {}, peer {}) ===",
            program.display(),
            self.name,
            url(self.client_port),
            url(self.peer_port)
        )?;
        let stderr = log.try_clone()?;
        let child = Command::new(program)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(url(self.client_port))
            .arg("--advertise-client-urls")
            .arg(url(self.client_port))
            .arg("--listen-peer-urls")
            .arg(url(self.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(url(self.peer_port))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            // 3.4's default logger (capnslog) is deprecated and says so on every start.
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                with_context(
                    e,
                    format!(
                        "starting {} (is etcd installed? Debian: apt-get install etcd-server; \
                         or set {PROGRAM_ENV})",
                        program.display()
                    ),
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Polls `/health` until it is true, the process exits, or `deadline`.
    fn wait_healthy(&mut self, deadline: Instant) -> io::Result<()> {
        let endpoint = url(self.client_port);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "etcd member {} ({endpoint}) exited during start ({status}); \
                         the end of {}:\n{}",
                        self.name,
                        self.log_path.display(),
                        log_tail(&self.log_path)
                    )));
                }
            }
            if is_healthy(&endpoint) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "etcd member {} ({endpoint}) not healthy after {} s; the end of {}:\n{}",
                        self.name,
                        START_TIMEOUT.as_secs(),
                        self.log_path.display(),
                        log_tail(&self.log_path)
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            self.child = None;
            return Ok(());
        }
        // std has SIGKILL only (Child::kill); SIGTERM through kill(1), to spare a libc
        // dependency. If that fails, SIGKILL it is.
        let termed = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if child.try_wait()?.is_some() {
                    self.child = None;
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
        }
        self.kill()
    }

    fn kill(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            // An error here means it has exited meanwhile; wait() reaps it either way.
            let _ = child.kill();
        }
        child.wait().map(drop)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// `n` distinct free loopback ports: all bound at once (so none repeats), then let go.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| with_context(e, "binding 127.0.0.1:0 to find a free port".into()))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// A cluster token no other test's etcd shares (members of different clusters that reach
/// each other, e.g. through a reused port, then refuse each other instead of joining).
fn unique_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "edgegw-test-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The last [`LOG_TAIL_BYTES`] of a log, from a line start.
fn log_tail(path: &Path) -> String {
    let log = match std::fs::read(path) {
        Ok(log) => log,
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let mut start = log.len().saturating_sub(LOG_TAIL_BYTES);
    if start > 0 {
        if let Some(nl) = log[start..].iter().position(|&b| b == b'\n') {
            start += nl + 1;
        }
    }
    String::from_utf8_lossy(&log[start..])
        .trim_end()
        .to_string()
}

/// `POST ENDPOINT PATH` with a JSON body; the JSON answer, or an error that names the
/// request and quotes the answer (a gateway error is a non-200 status with
/// `{"error": …, "code": …}`).
fn post(endpoint: &str, path: &str, request: &Value) -> io::Result<Value> {
    let body = request.to_string();
    let (status, response) = http(endpoint, "POST", path, Some(body.as_bytes()), KV_TIMEOUT)?;
    let text = String::from_utf8_lossy(&response);
    if status != 200 {
        return Err(io::Error::other(format!(
            "POST {endpoint}{path} {body}: HTTP {status}: {}",
            text.trim_end()
        )));
    }
    let value: Value = serde_json::from_slice(&response).map_err(|e| {
        invalid_data(format!(
            "POST {endpoint}{path}: the answer is not JSON ({e}): {text}"
        ))
    })?;
    if value.get("error").is_some() {
        return Err(io::Error::other(format!(
            "POST {endpoint}{path} {body}: {value}"
        )));
    }
    Ok(value)
}

/// One HTTP/1.0 request (the server closes the connection after the answer, so the body
/// is everything up to EOF): the status code and the body.
fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let context = |e: io::Error| with_context(e, format!("{method} {endpoint}{path}"));
    let addr = authority
        .to_socket_addrs()
        .map_err(context)?
        .next()
        .ok_or_else(|| invalid_data(format!("{endpoint}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(context)?;
    stream.set_read_timeout(Some(timeout)).map_err(context)?;
    stream.set_write_timeout(Some(timeout)).map_err(context)?;
    let body = body.unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\n");
    if method == "POST" {
        request.push_str("Content-Type: application/json\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).map_err(context)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(context)?;

    let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(invalid_data(format!(
            "{method} {endpoint}{path}: no complete HTTP header in {:?}",
            String::from_utf8_lossy(&response)
        )));
    };
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            invalid_data(format!(
                "{method} {endpoint}{path}: no HTTP status line in {head:?}"
            ))
        })?;
    Ok((status, response.split_off(head_end + 4)))
}

fn with_context(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn bad_index(i: usize, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no etcd member {i}: the cluster has {len}"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Whether etcd can run here; if not, the test says so and passes (like nginx's).
    fn skip() -> bool {
        if available() {
            return false;
        }
        eprintln!("etcd not installed ({DEFAULT_PROGRAM}, {PROGRAM_ENV} unset): skipped");
        true
    }

    /// One member: healthy on loopback; put/get round trips (binary and empty values, a
    /// missing key); compaction returns the current revision, also when repeated.
    #[test]
    fn etcd_single_member_kv_and_compaction() {
        if skip() {
            return;
        }
        let etcd = Etcd::start().unwrap();
        let endpoint = etcd.endpoint();
        assert_eq!(endpoint, format!("http://127.0.0.1:{}", etcd.client_port()));
        assert_eq!(etcd.endpoints(), vec![endpoint.clone()]);
        assert!(etcd.is_healthy());
        assert!(etcd.dir().join("m0.etcd").is_dir());

        assert_eq!(etcd.get("/edgegw/missing").unwrap(), None);
        etcd.put("/edgegw/a", b"one").unwrap();
        let binary = [0u8, 0xff, 0x80, b'\n', 0x7f];
        etcd.put("/edgegw/b", &binary).unwrap();
        etcd.put("/edgegw/empty", b"").unwrap();
        assert_eq!(etcd.get("/edgegw/a").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(etcd.get("/edgegw/b").unwrap().as_deref(), Some(&binary[..]));
        assert_eq!(etcd.get("/edgegw/empty").unwrap(), Some(Vec::new()));
        etcd.put("/edgegw/a", b"two").unwrap();
        assert_eq!(etcd.get("/edgegw/a").unwrap().as_deref(), Some(&b"two"[..]));

        // Four puts on a fresh store (revision 1): revision 5.
        let rev = etcd.revision().unwrap();
        assert_eq!(rev, 5);
        assert_eq!(etcd.compact().unwrap(), rev);
        // Nothing written since: the same revision, not an error.
        assert_eq!(etcd.compact().unwrap(), rev);
        etcd.put("/edgegw/a", b"three").unwrap();
        assert_eq!(etcd.compact().unwrap(), rev + 1);
        // Compaction drops history only.
        assert_eq!(
            etcd.get("/edgegw/a").unwrap().as_deref(),
            Some(&b"three"[..])
        );
        // An API error is an error that quotes etcd's answer.
        let err = put(&endpoint, "", b"x").unwrap_err().to_string();
        assert!(err.contains("key is not provided"), "{err}");
    }

    /// stop: the process is gone and /health no longer answers; start_again: the same
    /// endpoint, healthy, with the data. Also after a SIGKILL.
    #[test]
    fn etcd_stop_and_start_again_keep_the_data() {
        if skip() {
            return;
        }
        let mut etcd = Etcd::start().unwrap();
        let endpoint = etcd.endpoint();
        etcd.put("/edgegw/kept", b"yes").unwrap();
        assert!(etcd.start_again().is_err(), "start_again while running");

        etcd.stop().unwrap();
        assert!(!etcd.is_running());
        assert!(!etcd.is_healthy());
        assert!(etcd.get("/edgegw/kept").is_err());
        etcd.stop().unwrap(); // stopping a stopped etcd: nothing

        etcd.start_again().unwrap();
        assert!(etcd.is_running());
        assert!(etcd.is_healthy());
        assert_eq!(etcd.endpoint(), endpoint);
        assert_eq!(
            etcd.get("/edgegw/kept").unwrap().as_deref(),
            Some(&b"yes"[..])
        );

        etcd.put("/edgegw/after-restart", b"1").unwrap();
        etcd.kill().unwrap();
        assert!(!etcd.is_running());
        etcd.start_again().unwrap();
        assert_eq!(
            etcd.get("/edgegw/after-restart").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        // Both runs are in the log.
        let log = std::fs::read_to_string(etcd.log_path()).unwrap();
        assert_eq!(log.matches("=== testkit: starting").count(), 3, "{log}");
    }

    /// Dropping an Etcd kills it (and removes its directory).
    #[test]
    fn etcd_drop_kills_it() {
        if skip() {
            return;
        }
        let etcd = Etcd::start().unwrap();
        let endpoint = etcd.endpoint();
        let dir = etcd.dir().to_path_buf();
        drop(etcd);
        assert!(!is_healthy(&endpoint));
        assert!(!dir.exists());
    }

    /// A broken etcd binary: the error says which one and why, at once.
    #[test]
    fn etcd_start_error_names_the_failure() {
        let dir = crate::temp_dir("etcd-bad").unwrap();
        let started = Instant::now();
        let start = |program: &str| {
            let mut member = Member::new(
                PathBuf::from(program),
                dir.path(),
                "m0".into(),
                (1, 2),
                "m0=http://127.0.0.1:2".into(),
                unique_token(),
            );
            member
                .spawn()
                .and_then(|()| member.wait_healthy(Instant::now() + START_TIMEOUT))
        };
        // A program that exits at once: "exited during start", with its log.
        let err = start("/bin/false").unwrap_err().to_string();
        assert!(err.contains("exited during start"), "{err}");
        assert!(err.contains("=== testkit: starting /bin/false"), "{err}");
        let err = start("/nonexistent/etcd").unwrap_err().to_string();
        assert!(err.contains("starting /nonexistent/etcd"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Three members: all healthy; with one killed, a put through another still works and
    /// a third reads it; the killed one, started again, catches up.
    #[test]
    fn etcd_cluster_survives_a_killed_member() {
        if skip() {
            return;
        }
        let mut cluster = EtcdCluster::start(3).unwrap();
        assert_eq!(cluster.len(), 3);
        let endpoints = cluster.endpoints();
        assert_eq!(endpoints.len(), 3);
        let mut distinct = endpoints.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{endpoints:?}");
        for (i, endpoint) in endpoints.iter().enumerate() {
            assert!(cluster.is_healthy(i), "member {i}");
            assert_eq!(&cluster.endpoint(i), endpoint);
        }

        cluster.put(0, "/edgegw/before", b"0").unwrap();
        assert_eq!(
            cluster.get(2, "/edgegw/before").unwrap().as_deref(),
            Some(&b"0"[..])
        );

        cluster.kill(0).unwrap();
        assert!(!cluster.is_running(0));
        assert!(!cluster.is_healthy(0));
        // When the killed member led the cluster, the others elect a new leader first
        // (etcd answers "request timed out, possibly due to previous leader failure" until
        // then, typically for a second or two): the write goes through once they have.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match cluster.put(1, "/edgegw/during", b"1") {
                Ok(()) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("write during the election: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => panic!("no write succeeded within 20 s of the kill: {e}"),
            }
        }
        assert_eq!(
            cluster.get(2, "/edgegw/during").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert!(cluster.compact(2).unwrap() > 0);

        cluster.start_member(0).unwrap();
        assert!(cluster.is_healthy(0));
        assert_eq!(
            cluster.get(0, "/edgegw/during").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert!(cluster.kill(3).is_err());
        assert!(cluster.put(3, "/x", b"").is_err());
    }
}
