//! Debian's nginx as a real third-party mTLS backend: its process (started, waited for,
//! stopped, its error log shown when a test fails); the config is testkit's [`NginxConfig`].

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use testkit::NginxConfig;

use crate::util::{self, free_port, read_lossy, tail};

pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    dir: testkit::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// nginx requiring a client certificate verified against `client_ca`, answering
    /// `200 "$ssl_client_s_dn sni=$ssl_server_name\n"` on every path.
    pub fn start(server_cert: &Path, server_key: &Path, client_ca: &Path) -> Nginx {
        let dir = testkit::temp_dir("e2e-nginx").expect("temp dir");
        let port = free_port();
        let conf = NginxConfig::new(dir.path(), port, server_cert, server_key)
            .require_client_certificate(client_ca)
            .answer(
                200,
                "$ssl_client_s_dn reused=$ssl_session_reused id=$http_x_request_id sni=$ssl_server_name\\n",
            );
        conf.write().expect("write nginx.conf");
        let err = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr");
        let child = conf
            .command(Path::new(NGINX))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx {
            dir,
            port,
            child: Some(child),
        };
        let ok = util::wait_for(Duration::from_secs(10), || {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return Some(false);
                }
            }
            util::port_open(util::local(port)).then_some(true)
        });
        if ok != Some(true) {
            panic!(
                "nginx did not start:\n{}\n{}",
                read_lossy(&n.dir.path().join("stderr.log")),
                n.error_log()
            );
        }
        n
    }

    pub fn error_log(&self) -> String {
        read_lossy(&self.dir.path().join("error.log"))
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== nginx error.log (tail) ====\n{}",
                tail(&self.error_log(), 30)
            );
        }
        if let Some(mut c) = self.child.take() {
            util::signal(c.id(), libc::SIGQUIT);
            let done = util::wait_for(Duration::from_secs(3), || c.try_wait().ok().flatten());
            if done.is_none() {
                util::terminate(&mut c, Duration::from_secs(2));
            }
        }
    }
}
