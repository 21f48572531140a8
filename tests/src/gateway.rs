//! The gateway under test: `edgegw run --config FILE` as a real child process.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::http::{self, Admin, Request, TlsClient};
use crate::util::{self, bin_path, free_port, local, read_lossy, tail};

pub const TOKEN: &str = "e2e-admin-token-0123456789";

/// Options for a gateway.
#[derive(Clone, Debug)]
pub struct GatewayOpts {
    pub workers: u32,
    pub request_timeout: String,
    pub connect_timeout: String,
    pub shutdown_grace: String,
    /// Extra environment for the child (e.g. `SSL_CERT_FILE`).
    pub env: Vec<(String, String)>,
    /// `admin.token` in the config file; `None` writes `token = ""`.
    pub admin_token: Option<String>,
    /// `listener.certificate` / `listener.private_key` (PEM files).
    pub listener_cert: Option<(PathBuf, PathBuf)>,
    /// The `[store]` section; the default is none (the embedded store).
    pub store: testkit::StoreSettings,
    /// `listener.ticket_key_rotation`.
    pub ticket_key_rotation: Option<String>,
    /// More config keys: `(section, key, TOML value)` (see `testkit::EdgegwConfig::extra`).
    pub extra: Vec<(String, String, String)>,
}

impl Default for GatewayOpts {
    fn default() -> Self {
        GatewayOpts {
            workers: 2,
            request_timeout: "10s".into(),
            connect_timeout: "3s".into(),
            shutdown_grace: "10s".into(),
            env: Vec::new(),
            admin_token: Some(TOKEN.into()),
            listener_cert: None,
            store: testkit::StoreSettings::default(),
            ticket_key_rotation: None,
            extra: Vec::new(),
        }
    }
}

impl GatewayOpts {
    /// Adds `section.key = value` (a TOML value: `"\"1s\""`, `"3"`).
    pub fn set(mut self, section: &str, key: &str, value: &str) -> Self {
        self.extra
            .push((section.to_owned(), key.to_owned(), value.to_owned()));
        self
    }
}

pub struct Gateway {
    dir: testkit::TempDir,
    pub opts: GatewayOpts,
    pub listen: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    child: Option<Child>,
    /// Exit status of the last process that was stopped.
    pub last_exit: Option<ExitStatus>,
    runs: u32,
}

impl Gateway {
    pub fn start() -> Gateway {
        Self::start_with(GatewayOpts::default())
    }

    pub fn start_with(opts: GatewayOpts) -> Gateway {
        let mut gw = Self::launch(opts);
        gw.wait_ready();
        gw
    }

    /// Spawns the process without waiting for it to be ready (a node that waits for etcd,
    /// or one expected to refuse to start): see [`Gateway::wait_ready`] and
    /// [`Gateway::wait_exit`].
    pub fn launch(opts: GatewayOpts) -> Gateway {
        let mut gw = Self::create(opts);
        gw.spawn();
        gw
    }

    /// A gateway's directory, data dir and config file, with no process yet (e.g. to run
    /// `edgegw store migrate` into a fresh data dir first): see [`Gateway::start_stopped`].
    pub fn create(opts: GatewayOpts) -> Gateway {
        let dir = testkit::temp_dir("e2e-gw").expect("temp dir");
        let gw = Gateway {
            dir,
            opts,
            listen: local(free_port()),
            admin_addr: local(free_port()),
            metrics_addr: local(free_port()),
            child: None,
            last_exit: None,
            runs: 0,
        };
        std::fs::create_dir_all(gw.data_dir()).expect("mkdir data");
        gw.write_config();
        gw
    }

    /// Changes the options and rewrites the config file (the running process, if any,
    /// does not see it until it is started again).
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut GatewayOpts)) {
        change(&mut self.opts);
        self.write_config();
    }

    /// New free ports for the listener, admin API and metrics (config rewritten), for a
    /// restart after `kill -9`: the killed process's ports may meanwhile be an ephemeral
    /// port of another test's connection, and the restart would find them in use.
    pub fn move_to_fresh_ports(&mut self) {
        self.listen = local(free_port());
        self.admin_addr = local(free_port());
        self.metrics_addr = local(free_port());
        self.write_config();
    }

    /// Starts the stopped (or only created) gateway with its config file and data dir,
    /// and waits until it is ready.
    pub fn start_stopped(&mut self) {
        assert!(
            self.child.is_none(),
            "start_stopped: edgegw is still running"
        );
        self.spawn();
        self.wait_ready();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("edgegw.toml")
    }

    fn stderr_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("stderr-{run}.log"))
    }

    fn write_config(&self) {
        let o = &self.opts;
        let mut cfg = testkit::EdgegwConfig::new(
            &self.data_dir(),
            self.listen.to_string(),
            self.admin_addr.to_string(),
            self.metrics_addr.to_string(),
        );
        cfg.workers = o.workers as usize;
        cfg.shutdown_grace = o.shutdown_grace.to_string();
        cfg.admin_token = o.admin_token.clone().unwrap_or_default();
        cfg.listener_cert = o.listener_cert.clone();
        cfg.ticket_key_rotation = o.ticket_key_rotation.clone();
        cfg.store = o.store.clone();
        cfg.extra = o.extra.clone();
        cfg.upstream_timeouts =
            Some((o.connect_timeout.to_string(), o.request_timeout.to_string()));
        cfg.write(&self.config_path()).expect("write config");
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let err = File::create(self.stderr_path(self.runs)).expect("stderr file");
        let out = err.try_clone().expect("clone stderr file");
        let mut cmd = Command::new(bin_path("edgegw"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_remove("EDGEGW_ADMIN_TOKEN")
            .env_remove("EDGEGW_MASTER_KEY");
        if std::env::var_os("EDGEGW_LOG").is_none() {
            cmd.env("EDGEGW_LOG", "info");
        }
        // EDGEGW_IO_DRIVER (uring / epoll) is inherited from the test's environment.
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn edgegw");
        self.child = Some(child);
    }

    /// Waits (≤ 30 s) until the admin API answers and the listener and metrics ports are
    /// open; panics with the stderr if the process exits first.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    panic!("edgegw exited during startup with {st}:\n{}", self.stderr());
                }
            }
            // Any HTTP answer from the admin API (the token may not be known yet).
            let admin_ok = http::plain_request(self.admin_addr, Request::get("/certificates"))
                .map(|r| r.status == 200 || r.status == 401)
                .unwrap_or(false);
            if admin_ok && util::port_open(self.listen) && util::port_open(self.metrics_addr) {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "edgegw not ready after 30s (admin {}, listener {}):\n{}",
                    self.admin_addr,
                    self.listen,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stderr of the current (or last) run.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path(self.runs))
    }

    /// Stderr of every run so far.
    pub fn all_stderr(&self) -> String {
        (1..=self.runs)
            .map(|r| {
                format!(
                    "--- edgegw run #{r} stderr ---\n{}",
                    read_lossy(&self.stderr_path(r))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Send SIGTERM without waiting.
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            util::signal(pid, libc::SIGTERM);
        }
    }

    /// Wait for the process to exit (after a signal); `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                self.last_exit = Some(st);
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after a few seconds. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.sigterm();
        if let Some(st) = self.wait_exit(Duration::from_secs(5)) {
            return Some(st);
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let st = c.wait().ok();
            self.child = None;
            self.last_exit = st;
            return st;
        }
        None
    }

    /// Stop and start again with the same config and data dir.
    pub fn restart(&mut self) {
        let st = self.stop();
        assert!(
            st.is_some_and(|s| s.success()),
            "edgegw did not exit 0 on SIGTERM (status {st:?}):\n{}",
            tail(&self.stderr(), 40)
        );
        self.start_stopped();
    }

    /// The admin token in force: the config's, else `EDGEGW_ADMIN_TOKEN` given to the child,
    /// else the one the gateway wrote to `data_dir/admin.token`.
    pub fn token(&self) -> String {
        if let Some((_, v)) = self
            .opts
            .env
            .iter()
            .find(|(k, _)| k == "EDGEGW_ADMIN_TOKEN")
        {
            return v.clone();
        }
        if let Some(t) = &self.opts.admin_token {
            return t.clone();
        }
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    pub fn admin(&self) -> Admin {
        Admin {
            addr: self.admin_addr,
            token: Some(self.token()),
        }
    }

    pub fn admin_with_token(&self, token: Option<&str>) -> Admin {
        Admin {
            addr: self.admin_addr,
            token: token.map(str::to_string),
        }
    }

    pub fn client(&self) -> TlsClient {
        TlsClient::new(self.listen)
    }

    /// Scrape `/metrics`.
    pub fn metrics(&self) -> String {
        let r = http::plain_request(self.metrics_addr, Request::get("/metrics"))
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        r.text()
    }

    /// Scrape until `sum(name, labels) >= min` (a worker may count a request just after its
    /// response went out); returns the last scrape and the value.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], min: f64) -> (String, f64) {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            let v = crate::metrics::sum(&m, name, labels) + 0.0;
            // Generous: on a loaded machine a worker may count late, but it counts.
            if v >= min || start.elapsed() > Duration::from_secs(30) {
                return (m, v);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `edgegw store migrate --from FROM --to TO --config` this gateway's config file (run
    /// with the environment the gateway gets); its output.
    pub fn store_migrate(&self, from: &str, to: &str) -> std::process::Output {
        let mut cmd = Command::new(bin_path("edgegw"));
        cmd.args(["store", "migrate", "--from", from, "--to", to, "--config"])
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("EDGEGW_ADMIN_TOKEN")
            .env_remove("EDGEGW_MASTER_KEY");
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd.output().expect("run edgegw store migrate")
    }

    /// `data_dir/audit.log` (empty if there is none yet).
    pub fn audit_log(&self) -> String {
        read_lossy(&self.data_dir().join("audit.log"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== edgegw (listener {}, admin {}) stderr (last 150 lines per run) ====",
                self.listen, self.admin_addr
            );
            for r in 1..=self.runs {
                eprintln!(
                    "--- run #{r} ---\n{}",
                    tail(&read_lossy(&self.stderr_path(r)), 150)
                );
            }
            eprintln!("==== end edgegw stderr ====");
        }
        self.stop();
    }
}
