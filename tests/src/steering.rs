//! Harness for the connection-steering tests: edgegw processes with a `[steering]`
//! section, several of them on one configuration (restart handover), optionally run with
//! capabilities dropped; the control socket; per-worker counters from `/metrics`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendOpts};
use crate::http::{self, Admin, Request, TlsClient};
use crate::pki::Pki;
use crate::util::{self, bin_path, free_port, local, read_lossy, tail};
use crate::P12_PASSWORD;

const TOKEN: &str = "steering-admin-token-0123456789";

/// Whether this process may load BPF programs (CAP_BPF or CAP_SYS_ADMIN); `Err` says why not.
pub fn bpf_allowed() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_BPF: u64 = 39;
    if eff & (1 << CAP_BPF) != 0 || eff & (1 << CAP_SYS_ADMIN) != 0 {
        Ok(())
    } else {
        Err("BPF is not allowed here (neither CAP_BPF nor CAP_SYS_ADMIN)".into())
    }
}

/// Prints why a test is skipped and returns true when BPF is not allowed.
pub fn skip_without_bpf(test: &str) -> bool {
    match bpf_allowed() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("skipped {test}: {why}");
            true
        }
    }
}

#[derive(Clone, Debug)]
pub struct SteerOpts {
    pub workers: usize,
    pub mode: &'static str,
    pub policy: &'static str,
    pub stall_threshold: &'static str,
    pub env: Vec<(String, String)>,
    /// Run the gateway through this command (e.g. `capsh --drop=... --`).
    pub wrapper: Vec<String>,
}

impl Default for SteerOpts {
    fn default() -> Self {
        SteerOpts {
            workers: 2,
            mode: "ebpf",
            policy: "hash",
            stall_threshold: "1s",
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }
}

/// One `edgegw run` process.
pub struct Proc {
    child: Option<Child>,
    pub stderr: PathBuf,
    pub exit: Option<ExitStatus>,
}

impl Proc {
    pub fn log(&self) -> String {
        read_lossy(&self.stderr)
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                self.exit = Some(st);
            }
        }
        self.exit
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        util::wait_for(timeout, || self.try_exit())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            util::signal(pid, libc::SIGTERM);
        }
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            self.child = None;
        }
    }
}

/// A gateway configuration with a backend and API `orders` (`/orders` -> backend), and the
/// processes started on it.
pub struct Steered {
    pub procs: Vec<Proc>,
    pub opts: SteerOpts,
    pub listen: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    dir: testkit::TempDir,
    pub backend: Backend,
    pub pki: Pki,
    /// TCP connections the harness itself made to the data-plane listener (readiness
    /// probes): each is one connection some worker accepts.
    pub probes: usize,
}

impl Steered {
    /// Writes the config, starts a backend and the first gateway, sets up `orders`.
    pub fn start(opts: SteerOpts) -> Steered {
        let pki = Pki::new();
        let backend = Backend::start(BackendOpts {
            cert: pki.path("server.pem"),
            key: pki.path("server.key"),
            client_ca: None,
            ticket_key: None,
        });
        let dir = testkit::temp_dir("steer").expect("temp dir");
        let mut s = Steered {
            procs: Vec::new(),
            opts,
            listen: local(free_port()),
            admin_addr: local(free_port()),
            metrics_addr: local(free_port()),
            dir,
            backend,
            pki,
            probes: 0,
        };
        s.write_config();
        s.spawn().unwrap_or_else(|e| panic!("{e}"));
        let admin = s.admin();
        let r = admin.put_certificate(
            "client-1",
            &s.pki.p12("client-1", P12_PASSWORD, false),
            P12_PASSWORD,
        );
        assert_eq!(r.status, 201, "upload client-1: {}", r.text());
        let r = admin.put_backend(
            "be1",
            &format!("{}/base", s.backend.url()),
            false,
            false,
            Some("client-1"),
        );
        assert_eq!(r.status, 201, "put backend: {}", r.text());
        let r = admin.put_api("orders", "/orders", "be1");
        assert_eq!(r.status, 201, "put api: {}", r.text());
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("edgegw.toml")
    }

    fn write_config(&self) {
        std::fs::create_dir_all(self.data_dir()).expect("mkdir data");
        let o = &self.opts;
        let mut cfg = testkit::EdgegwConfig::new(
            &self.data_dir(),
            self.listen.to_string(),
            self.admin_addr.to_string(),
            self.metrics_addr.to_string(),
        );
        cfg.workers = o.workers;
        cfg.admin_token = TOKEN.to_owned();
        cfg.steering_mode = Some(o.mode.to_string());
        cfg.steering_policy = Some(o.policy.to_string());
        cfg.stall_threshold = Some(o.stall_threshold.to_string());
        cfg.write(&self.config_path()).expect("write config");
    }

    /// Starts one more `edgegw run` on the same configuration (the first, or a restart
    /// that takes over) and waits until it serves (or exits: `Err` with its log).
    pub fn spawn(&mut self) -> Result<usize, String> {
        let n = self.procs.len();
        let stderr = self.dir.path().join(format!("stderr-{n}.log"));
        let err = File::create(&stderr).expect("stderr file");
        let out = err.try_clone().expect("clone");
        let gw = bin_path("edgegw");
        let mut cmd = match self.opts.wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(&gw);
                c
            }
            None => Command::new(&gw),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_remove("EDGEGW_ADMIN_TOKEN")
            .env_remove("EDGEGW_MASTER_KEY")
            .env("EDGEGW_LOG", "info");
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn edgegw");
        self.procs.push(Proc {
            child: Some(child),
            stderr,
            exit: None,
        });
        let start = Instant::now();
        loop {
            let p = &mut self.procs[n];
            if let Some(st) = p.try_exit() {
                return Err(format!(
                    "edgegw #{n} exited during startup with {st}:\n{}",
                    p.log()
                ));
            }
            let log = p.log();
            let serving = log.contains("edgegw starting")
                && (n == 0 || log.contains("handover complete") || log.contains("did not confirm"));
            let admin_ok = http::plain_request(self.admin_addr, Request::get("/certificates"))
                .map(|r| r.status == 200 || r.status == 401)
                .unwrap_or(false);
            if serving && admin_ok && util::port_open(self.listen) {
                self.probes += 1;
                return Ok(n);
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("edgegw #{n} not ready after 30s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn admin(&self) -> Admin {
        Admin {
            addr: self.admin_addr,
            token: Some(TOKEN.into()),
        }
    }

    pub fn client(&self) -> TlsClient {
        TlsClient::new(self.listen)
    }

    pub fn metrics(&self) -> String {
        let r = http::plain_request(self.metrics_addr, Request::get("/metrics"))
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(r.status, 200);
        r.text()
    }

    /// One counter with a `worker` label, per worker.
    fn per_worker(&self, metric: &str) -> Vec<f64> {
        let m = self.metrics();
        (0..self.opts.workers)
            .map(|w| crate::metrics::sum(&m, metric, &[("worker", &w.to_string())]))
            .collect()
    }

    /// `edgegw_worker_accepted_connections_total` per worker (counted by the workers: exact).
    pub fn accepted(&self) -> Vec<f64> {
        self.per_worker("edgegw_worker_accepted_connections_total")
    }

    /// `edgegw_steering_steered_total` per worker: the program's decisions (one per SYN it
    /// saw), read from its maps at scrape time.
    pub fn steered(&self) -> Vec<f64> {
        self.per_worker("edgegw_steering_steered_total")
    }

    /// Polls (up to 60 s: a loaded machine accepts late, but it accepts) until the workers
    /// have accepted `total` connections in all; returns the per-worker counts then.
    /// Workers count their accepts themselves, so the counts are exact: a test compares
    /// them with `==`.
    pub fn accepted_reaching(&self, total: usize) -> Vec<f64> {
        let got = util::wait_for(Duration::from_secs(60), || {
            let a = self.accepted();
            (a.iter().sum::<f64>() >= total as f64).then_some(a)
        });
        got.unwrap_or_else(|| {
            panic!(
                "the workers accepted {:?} connections, never {total} in all:\n{}",
                self.accepted(),
                self.logs()
            )
        })
    }

    /// Polls `cond` on the per-worker steered counts until it holds (up to 60 s).
    pub fn steered_until(&self, what: &str, mut cond: impl FnMut(&[f64]) -> bool) -> Vec<f64> {
        util::wait_for(Duration::from_secs(60), || {
            let s = self.steered();
            cond(&s).then_some(s)
        })
        .unwrap_or_else(|| panic!("{what}: steered {:?}\n{}", self.steered(), self.logs()))
    }

    /// The `STATUS` answer of the control socket, as `key=value` pairs.
    pub fn status(&self) -> std::collections::HashMap<String, String> {
        let line = self.control("STATUS");
        assert!(line.starts_with("OK "), "STATUS: {line}");
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One command on the control socket; the answer line.
    pub fn control(&self, command: &str) -> String {
        let path = self.data_dir().join("edgegw.sock");
        let mut s = UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        writeln!(s, "{command}").expect("write command");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read answer");
        line.trim().to_string()
    }

    /// Logs of every process, for assertion messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .enumerate()
            .map(|(i, p)| format!("--- edgegw #{i} ---\n{}", tail(&p.log(), 60)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Steered {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for p in &mut self.procs {
            p.kill();
        }
    }
}

/// The worker that handled a request, from the gateway's request id
/// (`{process nonce}-{worker, hex}-{sequence}`) echoed by the backend.
pub fn worker_of(echo: &serde_json::Value) -> Option<usize> {
    let id = echo["headers"]["x-request-id"].as_str()?;
    let mut parts = id.split('-');
    parts.next()?;
    usize::from_str_radix(parts.next()?, 16).ok()
}

/// Pins the calling thread to `cpu` (like `taskset -c`).
pub fn pin_thread(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity(0, ..)
    // applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
