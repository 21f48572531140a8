//! The `edgegw` command line (contract §1): `--version` and `check`.
#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edgegw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgegw"))
        .args(args)
        .env_remove("EDGEGW_LOG")
        .output()
        .unwrap()
}

/// A config file in a fresh temporary directory, removed on drop.
struct TempConfig {
    dir: PathBuf,
    file: PathBuf,
}

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("edgegw-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("edgegw.toml");
        std::fs::write(&file, text).unwrap();
        Self { dir, file }
    }

    fn path(&self) -> &str {
        self.file.to_str().unwrap()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version() {
    let out = edgegw(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout).trim(),
        format!("edgegw {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_good_file() {
    let cfg = TempConfig::new(
        "good",
        r#"
[server]
workers = 2
shutdown_grace = "0s"
[listener]
address = "127.0.0.1:18443"
[upstream]
request_timeout = "1m30s"
"#,
    );
    let out = edgegw(&["check", "--config", cfg.path()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout).trim(),
        format!("configuration OK: {}", cfg.path())
    );
}

#[test]
fn check_documented_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.example.toml");
    let out = edgegw(&["check", "--config", example.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn check_reports_every_error() {
    let cfg = TempConfig::new(
        "bad",
        r#"
[server]
workers = 5000
[listener]
address = "abc"
[upstream]
idle_timout = "5s"
"#,
    );
    let out = edgegw(&["check", "--config", cfg.path()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    for key in ["server.workers", "listener.address", "upstream.idle_timout"] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&format!("{key}: "))),
            "{key} missing from stderr:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(r#"listener.address: invalid socket address "abc""#),
        "{stderr}"
    );
}

#[test]
fn check_missing_file() {
    let out = edgegw(&["check", "--config", "/nonexistent/edgegw.toml"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("/nonexistent/edgegw.toml"));
}

#[test]
fn check_needs_a_config() {
    let out = edgegw(&["check"]);
    assert!(!out.status.success(), "{out:?}");
}
