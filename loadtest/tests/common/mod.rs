//! What the load-test suite's integration tests share.

use std::path::Path;
use std::process::Command;

/// `loadtest run ARGS --json JSON`: its report, after asserting that it succeeded, made
/// requests and none failed (`what` names the run in a failure).
pub(crate) fn run_report(what: &str, json: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("run")
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap_or_else(|e| panic!("{what}: running loadtest: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let text = std::fs::read(json).unwrap_or_else(|e| panic!("{what}: no report: {e}"));
    let v: serde_json::Value =
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{what}: report: {e}"));
    assert_eq!(v["errors"], 0, "{what}: {v}");
    assert!(v["requests"].as_u64().is_some_and(|n| n > 0), "{what}: {v}");
    v
}
