//! A small blocking HTTP/1.1 client for the gateway's plain-HTTP admin API and `/metrics`
//! (control traffic only: a few calls per second, never on the measured path).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `http://host:port` (a trailing slash or path is ignored).
#[derive(Clone, Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    host: String,
    token: Option<String>,
}

impl Endpoint {
    pub fn parse(url: &str, token: Option<&str>) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported here"))?;
        let host = rest.split('/').next().unwrap_or_default().to_string();
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Endpoint {
            addr,
            host,
            token: token.map(str::to_owned),
        })
    }

    /// One request; returns the status and the body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, String), String> {
        let err = |e: std::io::Error| format!("{method} {path}: {e}");
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(err)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.host
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or(("application/json", b""));
        if method != "GET" {
            req.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                body.0,
                body.1.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body.1);
        s.write_all(&bytes).map_err(err)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(err)?;
        parse_response(&resp).ok_or_else(|| format!("{method} {path}: malformed response"))
    }

    /// `http://ADDR` of this endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.call("GET", path, None)
    }

    /// PUT a JSON body; any status but 200/201 is an error.
    pub fn put_json(&self, path: &str, body: &serde_json::Value) -> Result<u16, String> {
        let text = body.to_string();
        let (status, reply) =
            self.call("PUT", path, Some(("application/json", text.as_bytes())))?;
        if status == 200 || status == 201 {
            Ok(status)
        } else {
            Err(format!("PUT {path}: {status} {reply}"))
        }
    }
}

/// Status and body of a `Connection: close` response (content-length or chunked).
fn parse_response(data: &[u8]) -> Option<(u16, String)> {
    let (head, len) = gateway::dataplane::http::parse_response(data).ok()??;
    let body = &data[len..];
    let chunked = head.headers().any(|h| {
        h.is("transfer-encoding") && h.value_str().to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some((head.status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Sum of every sample of a Prometheus metric whose labels contain all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            if ok {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_filter_by_labels() {
        let text = "# HELP x\n\
            edgegw_upstream_handshakes_total{backend=\"b\",resumed=\"true\"} 7\n\
            edgegw_upstream_handshakes_total{backend=\"b\",resumed=\"false\"} 2\n\
            edgegw_upstream_handshakes_total{backend=\"c\",resumed=\"true\"} 1\n\
            edgegw_config_generation 3\n";
        let n = "edgegw_upstream_handshakes_total";
        assert_eq!(metric_sum(text, n, &[]), 10.0);
        assert_eq!(metric_sum(text, n, &[("resumed", "true")]), 8.0);
        assert_eq!(
            metric_sum(text, n, &[("backend", "b"), ("resumed", "false")]),
            2.0
        );
        assert_eq!(metric_sum(text, "edgegw_config_generation", &[]), 3.0);
        assert_eq!(metric_sum(text, "missing", &[]), 0.0);
    }

    #[test]
    fn responses_plain_and_chunked() {
        let r = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(r), Some((201, "{}".to_string())));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Some((200, "abcde".to_string())));
    }
}
