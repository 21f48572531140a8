//! One nginx config writer: nginx run from a throwaway prefix directory (`daemon off;`,
//! every file nginx writes — pid, logs, temp paths — inside the prefix, so it needs no
//! system paths and leaves nothing behind) with one TLS server on 127.0.0.1. The e2e suite
//! makes it an mTLS backend ([`NginxConfig::require_client_certificate`] and
//! [`NginxConfig::answer`]); loadtest makes it a TLS-terminating proxy to an mTLS backend
//! (its own `http`/`server`/`location` directives).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The nginx.conf of one test nginx.
#[derive(Clone, Debug)]
pub struct NginxConfig {
    prefix: PathBuf,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    workers: usize,
    worker_connections: usize,
    error_log_level: String,
    access_log: bool,
    main: Vec<String>,
    http: Vec<String>,
    server: Vec<String>,
    location: Vec<String>,
}

impl NginxConfig {
    /// nginx with prefix `prefix`, listening with TLS (1.2 and 1.3) on `127.0.0.1:port`
    /// with `cert`/`key`; one worker, access log on, error log at `info`.
    pub fn new(prefix: &Path, port: u16, cert: &Path, key: &Path) -> NginxConfig {
        NginxConfig {
            prefix: prefix.to_path_buf(),
            port,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            workers: 1,
            worker_connections: 64,
            error_log_level: "info".into(),
            access_log: true,
            main: Vec::new(),
            http: Vec::new(),
            server: Vec::new(),
            location: Vec::new(),
        }
    }

    pub fn workers(mut self, workers: usize) -> NginxConfig {
        self.workers = workers;
        self
    }

    pub fn worker_connections(mut self, n: usize) -> NginxConfig {
        self.worker_connections = n;
        self
    }

    pub fn error_log_level(mut self, level: &str) -> NginxConfig {
        self.error_log_level = level.into();
        self
    }

    /// `false`: `access_log off;` (a load test would measure the log's writes).
    pub fn access_log(mut self, on: bool) -> NginxConfig {
        self.access_log = on;
        self
    }

    /// A directive of the main context, written as nginx reads it (ending in `;` or `}`).
    pub fn main(mut self, directive: &str) -> NginxConfig {
        self.main.push(directive.into());
        self
    }

    /// A directive of the `http` block (as nginx reads it).
    pub fn http(mut self, directive: &str) -> NginxConfig {
        self.http.push(directive.into());
        self
    }

    /// A directive of the `server` block (as nginx reads it).
    pub fn server(mut self, directive: &str) -> NginxConfig {
        self.server.push(directive.into());
        self
    }

    /// A directive of `location /`, which serves every path (as nginx reads it).
    pub fn location(mut self, directive: &str) -> NginxConfig {
        self.location.push(directive.into());
        self
    }

    /// mTLS: a client certificate issued by (or, self-signed, listed in) `ca` is required.
    pub fn require_client_certificate(self, ca: &Path) -> NginxConfig {
        self.server("ssl_verify_client on;")
            .server(&format!("ssl_client_certificate {};", ca.display()))
    }

    /// Every path answers `status` with the text/plain `body` (nginx variables expand).
    pub fn answer(self, status: u16, body: &str) -> NginxConfig {
        self.location("default_type text/plain;")
            .location(&format!("return {status} \"{body}\";"))
    }

    pub fn conf_path(&self) -> PathBuf {
        self.prefix.join("nginx.conf")
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.prefix.join("error.log")
    }

    /// The text of nginx.conf.
    pub fn render(&self) -> String {
        let p = self.prefix.display();
        let mut c = String::new();
        let mut line = |indent: usize, s: &str| {
            let _ = writeln!(c, "{:indent$}{s}", "", indent = indent * 4);
        };
        line(0, "daemon off;");
        line(0, &format!("worker_processes {};", self.workers));
        line(0, &format!("pid {p}/nginx.pid;"));
        line(
            0,
            &format!("error_log {p}/error.log {};", self.error_log_level),
        );
        self.main.iter().for_each(|d| line(0, d));
        line(
            0,
            &format!(
                "events {{ worker_connections {}; }}",
                self.worker_connections
            ),
        );
        line(0, "http {");
        if self.access_log {
            line(1, &format!("access_log {p}/access.log;"));
        } else {
            line(1, "access_log off;");
        }
        for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            line(1, &format!("{temp}_temp_path {p}/{temp};"));
        }
        self.http.iter().for_each(|d| line(1, d));
        line(1, "server {");
        line(2, &format!("listen 127.0.0.1:{} ssl;", self.port));
        line(2, &format!("ssl_certificate {};", self.cert.display()));
        line(2, &format!("ssl_certificate_key {};", self.key.display()));
        line(2, "ssl_protocols TLSv1.2 TLSv1.3;");
        self.server.iter().for_each(|d| line(2, d));
        line(2, "location / {");
        self.location.iter().for_each(|d| line(3, d));
        line(2, "}");
        line(1, "}");
        line(0, "}");
        c
    }

    /// Writes nginx.conf into the prefix; returns its path.
    pub fn write(&self) -> Result<PathBuf, String> {
        let path = self.conf_path();
        std::fs::write(&path, self.render())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }

    /// `program -p PREFIX -c nginx.conf -e error.log`: `-e` too, because nginx opens its
    /// compiled-in error log (under /var/log) before it reads `error_log`.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(self.conf_path())
            .arg("-e")
            .arg(self.error_log_path());
        cmd
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// nginx itself accepts what is written (`nginx -t`), when it is installed.
    #[test]
    fn nginx_accepts_the_config() {
        let nginx = Path::new("/usr/sbin/nginx");
        let pki = crate::Pki::new("testkit-nginx").unwrap();
        pki.self_signed(
            "server",
            &crate::Cert::new("/CN=localhost", crate::KeyType::P256),
        )
        .unwrap();
        let conf = NginxConfig::new(
            pki.dir(),
            1,
            &pki.path("server.pem"),
            &pki.path("server.key"),
        )
        .require_client_certificate(&pki.path("server.pem"))
        .answer(200, "$ssl_client_s_dn\\n")
        .http("upstream backend { server 127.0.0.1:2; keepalive 8; }");
        conf.write().unwrap();
        let text = conf.render();
        assert!(text.contains("ssl_verify_client on;"), "{text}");
        if !nginx.is_file() {
            eprintln!("nginx not installed: only the text was checked");
            return;
        }
        let out = conf.command(nginx).arg("-t").output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
