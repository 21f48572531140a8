//! A real Prometheus server (Debian's `prometheus` package) as a child process, and its
//! HTTP API: instant queries, alerts, rules, targets. Also `promtool`.
//!
//! Used by `tests/tests/observability.rs` to check the dashboards and alert rules of
//! `dashboards/` against a running gateway.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{self, Request};
use crate::util::{self, free_port, local, read_lossy, tail};

/// The line that installs Prometheus (and promtool) on Debian; `./dev` installs it for CI.
pub const INSTALL_HINT: &str = "apt-get update && apt-get install -y prometheus";

/// Path of an executable named `name` in `PATH` (also `/usr/bin`), or `None`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The `prometheus` (or `promtool`) binary; panics with the apt-get line when missing.
pub fn binary(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed. The observability test runs the real Prometheus server; \
             install it with:\n    {INSTALL_HINT}\n(`./dev test` does this as root)"
        )
    })
}

/// Runs `promtool ARGS...`; returns (success, stdout + stderr).
pub fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("promtool"))
        .args(args)
        .output()
        .expect("spawn promtool");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Percent-encoding for a URL query value (RFC 3986 unreserved characters kept).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A running Prometheus with its own temporary config and TSDB.
pub struct Prometheus {
    dir: testkit::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Prometheus {
    /// Writes `config` as `prometheus.yml` and each `(name, content)` of `files` next to it
    /// (rule files are found relative to the config), then starts
    /// `prometheus --config.file ... --storage.tsdb.path ... --web.listen-address ...` and
    /// waits until `/-/ready` answers 200.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Prometheus {
        let bin = binary("prometheus");
        let dir = testkit::temp_dir("e2e-prom").expect("temp dir");
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write prometheus file");
        }
        let addr = local(free_port());
        let err = File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=info")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(err.try_clone().expect("clone log"))
            .stderr(err)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus {
            dir,
            addr,
            child: Some(child),
        };
        p.wait_ready();
        p
    }

    /// The directory holding `prometheus.yml` and the files written next to it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    panic!(
                        "prometheus exited during startup with {st}:\n{}",
                        self.log()
                    );
                }
            }
            let ok = http::plain_request(self.addr, Request::get("/-/ready"))
                .map(|r| r.status == 200)
                .unwrap_or(false);
            if ok {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "prometheus not ready after 30s on {}:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Prometheus' own log (stdout and stderr).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("prometheus.log"))
    }

    /// GET an API path; the `data` member of a `"status": "success"` answer, else the error.
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let r = http::plain_request(self.addr, Request::get(path_and_query))
            .map_err(|e| format!("GET {path_and_query}: {e}"))?;
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("GET {path_and_query}: {} {e}: {}", r.status, r.text()))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!(
                "{} {}: {}",
                r.status,
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or("?")
            ))
        }
    }

    /// An instant query (`/api/v1/query`); the result vector (or scalar as one element).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(expr)))?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Ok(data["result"].as_array().cloned().unwrap_or_default())
            }
            Some("scalar") | Some("string") => Ok(vec![data["result"].clone()]),
            other => Err(format!("unexpected resultType {other:?}: {data}")),
        }
    }

    /// The active alerts (`/api/v1/alerts`): pending and firing.
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")
            .map(|d| d["alerts"].as_array().cloned().unwrap_or_default())
            .unwrap_or_else(|e| panic!("GET /api/v1/alerts: {e}"))
    }

    /// Every loaded rule (`/api/v1/rules`), flattened over groups.
    pub fn rules(&self) -> Vec<Value> {
        let d = self
            .api("/api/v1/rules")
            .unwrap_or_else(|e| panic!("GET /api/v1/rules: {e}"));
        d["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The active scrape targets (`/api/v1/targets`).
    pub fn targets(&self) -> Vec<Value> {
        self.api("/api/v1/targets")
            .map(|d| d["activeTargets"].as_array().cloned().unwrap_or_default())
            .unwrap_or_else(|e| panic!("GET /api/v1/targets: {e}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== prometheus {} log (last 40 lines) ====\n{}\n==== end prometheus log ====",
                self.addr,
                tail(&self.log(), 40)
            );
        }
        if let Some(mut c) = self.child.take() {
            util::terminate(&mut c, Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencode_keeps_unreserved_only() {
        assert_eq!(urlencode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(
            urlencode("up{job=\"x\"} == 0"),
            "up%7Bjob%3D%22x%22%7D%20%3D%3D%200"
        );
    }
}
