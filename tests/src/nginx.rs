//! Debian's nginx as a real third-party mTLS backend (temp prefix dir, `daemon off;`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{self, free_port, read_lossy, tail};

pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// nginx requiring a client certificate verified against `client_ca`, answering
    /// `200 "$ssl_client_s_dn sni=$ssl_server_name\n"` on every path.
    pub fn start(server_cert: &Path, server_key: &Path, client_ca: &Path) -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("edgegw-e2e-nginx-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"daemon off;
worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate {ca};
        location / {{
            default_type text/plain;
            return 200 "$ssl_client_s_dn reused=$ssl_session_reused id=$http_x_request_id sni=$ssl_server_name\n";
        }}
    }}
}}
"#,
            cert = server_cert.display(),
            key = server_key.display(),
            ca = client_ca.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let err = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
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
