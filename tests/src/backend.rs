//! The mTLS test backend: `loadtest backend ...` as a real child process.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{self, bin_path, free_port, read_lossy, tail};

#[derive(Clone, Debug)]
pub struct BackendOpts {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub ticket_key: Option<PathBuf>,
}

pub struct Backend {
    pub port: u16,
    pub opts: BackendOpts,
    child: Option<Child>,
    logdir: testkit::TempDir,
    runs: u32,
}

impl Backend {
    pub fn start(opts: BackendOpts) -> Backend {
        let logdir = testkit::temp_dir("e2e-be").expect("temp dir");
        let mut b = Backend {
            port: free_port(),
            opts,
            child: None,
            logdir,
            runs: 0,
        };
        b.spawn();
        b
    }

    /// A backend with a server certificate and key from the PKI dir, accepting any client cert.
    pub fn simple(pki: &crate::pki::Pki, cert: &str, key: &str) -> Backend {
        Backend::start(BackendOpts {
            cert: pki.path(cert),
            key: pki.path(key),
            client_ca: None,
            ticket_key: None,
        })
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn url_localhost(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn stderr_path(&self, run: u32) -> PathBuf {
        self.logdir.path().join(format!("backend-stderr-{run}.log"))
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let err = File::create(self.stderr_path(self.runs)).expect("stderr file");
        let listen = format!("127.0.0.1:{}", self.port);
        let mut cmd = Command::new(bin_path("loadtest"));
        cmd.arg("backend")
            .arg("--listen")
            .arg(&listen)
            .arg("--cert")
            .arg(&self.opts.cert)
            .arg("--key")
            .arg(&self.opts.key);
        if let Some(ca) = &self.opts.client_ca {
            cmd.arg("--client-ca").arg(ca);
        }
        if let Some(tk) = &self.opts.ticket_key {
            cmd.arg("--ticket-key").arg(tk);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = cmd.spawn().expect("spawn loadtest backend");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keep draining stdout for the process's whole life.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let want = format!("listening on {listen}");
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if line.contains(&want) {
                        break;
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.child = None;
                    panic!(
                        "loadtest backend exited before `{want}` (status {st:?}); stdout: {seen:?}\nstderr:\n{}",
                        read_lossy(&self.stderr_path(self.runs))
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "loadtest backend did not print `{want}` within 20s; stdout: {seen:?}\nstderr:\n{}",
                    read_lossy(&self.stderr_path(self.runs))
                );
            }
        }
        // The reader thread keeps draining stdout after `rx` is dropped (send errors are ignored).
        drop(rx);
    }

    /// Kill the backend process (port closed afterwards).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            util::terminate(&mut c, Duration::from_secs(3));
        }
        // Wait until the port is really closed.
        let addr = util::local(self.port);
        util::wait_for(Duration::from_secs(5), || {
            (!util::port_open(addr)).then_some(())
        });
    }

    /// Stop and start again on the same port with the same options.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path(self.runs))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if std::thread::panicking() && self.runs > 0 {
            eprintln!(
                "==== loadtest backend :{} stderr (last 30 lines) ====\n{}",
                self.port,
                tail(&self.stderr(), 30)
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
