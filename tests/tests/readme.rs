//! The README's seed flow as written: `./dev demo` (the mTLS test backend and the gateway
//! on their fixed ports 9443, 8443, 9090, 9091) in a temporary directory, then the README's
//! "The seed flow with curl" block, extracted from README.md (so the two cannot drift), run
//! with bash in that directory.
//!
//! Uses fixed ports, so it is its own test target and phase (`./dev test`, phase readme),
//! never beside another gateway on the defaults. Needs curl and the openssl CLI.
//! Run: `cargo test --release --workspace --test readme`.

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::util::repo_root;

/// The first ```sh block after the heading `## The seed flow with curl`.
fn seed_flow_block(readme: &str) -> String {
    let start = readme
        .find("## The seed flow with curl")
        .expect("README has a 'The seed flow with curl' section");
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a ```sh block in the section") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block ends") + open;
    rest[open..close].to_owned()
}

/// `./dev demo`, in its own process group (stopped with it on drop).
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        // SAFETY: signals the process group this test started; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_seed_flow_works_as_written() {
    let dir = testkit::temp_dir("readme-demo").expect("temp dir");
    let log = dir.path().join("demo.out");
    let demo = Command::new("bash")
        .arg(repo_root().join("dev"))
        .arg("demo")
        .current_dir(repo_root())
        .env("EDGEGW_DEMO_DIR", dir.path())
        .env_remove("EDGEGW_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.path().join("demo.err")).expect("log"))
        .process_group(0)
        .spawn()
        .expect("./dev demo");
    let _demo = Demo(demo);
    let started = Instant::now();
    loop {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if out.contains("dev demo ready") {
            break;
        }
        let err = std::fs::read_to_string(dir.path().join("demo.err")).unwrap_or_default();
        assert!(
            started.elapsed() < Duration::from_secs(600)
                && !err.contains("dev demo: edgegw exited"),
            "./dev demo did not become ready:\n{out}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let block =
        seed_flow_block(&std::fs::read_to_string(repo_root().join("README.md")).expect("README"));
    let run = Command::new("bash")
        .args(["-c", &block])
        .current_dir(dir.path())
        .output()
        .expect("bash");
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    let context = format!("--- stdout ---\n{out}\n--- stderr ---\n{err}");
    assert!(
        run.status.success(),
        "the README's lines failed:\n{context}"
    );
    // 1. the upload lists its thumbprint and subject;
    assert!(
        out.contains("\"thumbprint\"") && out.contains("CN=client-1"),
        "{context}"
    );
    // 4. the call reached the backend, which saw client-1 (its JSON echo);
    assert!(
        out.contains("\"subject\":\"CN=client-1\""),
        "the call through the gateway did not reach the backend with client-1:\n{context}"
    );
    assert!(!out.contains("BackendConnectionFailure"), "{context}");
    // the last line: the certificate in use cannot be deleted.
    assert!(out.contains("CertificateInUse"), "{context}");
}
