//! Third-party load clients against a server under test: Debian's `wrk`, `h2load` (from
//! nghttp2-client) and `openssl s_time`, the tools people reach for to benchmark a TLS proxy.
//! A figure that only our own client produces convinces nobody, so `loadtest compare` runs
//! these beside its own scenarios and reports both (`--clients`).
//!
//! Each figure is one child process with a bounded duration; its text output is parsed here
//! (the tools have no machine-readable output). Rates are what the tool reports, or, for
//! `s_time` (whose "real seconds" are whole seconds), its connection count over the wall
//! time we measured around it.

use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::harness::find_program;

/// A third-party client program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    Wrk,
    H2load,
    STime,
}

impl Tool {
    pub const ALL: [Tool; 3] = [Tool::H2load, Tool::Wrk, Tool::STime];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Wrk => "wrk",
            Tool::H2load => "h2load",
            Tool::STime => "s_time",
        }
    }

    /// The program it runs and the Debian package that has it.
    fn program(self) -> (&'static str, &'static str) {
        match self {
            Tool::Wrk => ("wrk", "wrk"),
            Tool::H2load => ("h2load", "nghttp2-client"),
            Tool::STime => ("openssl", "openssl"),
        }
    }

    pub fn installed(self) -> bool {
        find_program(self.program().0).is_some()
    }

    pub fn package(self) -> &'static str {
        self.program().1
    }

    pub fn parse(s: &str) -> Result<Tool, String> {
        match s {
            "wrk" => Ok(Tool::Wrk),
            "h2load" => Ok(Tool::H2load),
            "s_time" | "s-time" => Ok(Tool::STime),
            _ => Err(format!("unknown client {s:?} (own, wrk, h2load, s_time)")),
        }
    }
}

/// What each third-party figure measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    /// `h2load --h1`: keep-alive HTTP/1.1 requests on `connections` connections.
    KeepaliveH2load,
    /// `wrk -H 'Connection: close'`: one request per connection; wrk resumes TLS sessions.
    NewconnResumeWrk,
    /// `openssl s_time -new`: serial full handshakes, one request each.
    SerialFullSTime,
    /// `openssl s_time -reuse`: serial resumed handshakes, one request each.
    SerialResumedSTime,
}

impl Figure {
    pub fn tool(self) -> Tool {
        match self {
            Figure::KeepaliveH2load => Tool::H2load,
            Figure::NewconnResumeWrk => Tool::Wrk,
            Figure::SerialFullSTime | Figure::SerialResumedSTime => Tool::STime,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Figure::KeepaliveH2load => "h2load-keepalive",
            Figure::NewconnResumeWrk => "wrk-newconn-resume",
            Figure::SerialFullSTime => "s_time-new",
            Figure::SerialResumedSTime => "s_time-reuse",
        }
    }

    /// Every figure of the given tools, in the order they run.
    pub fn of(tools: &[Tool]) -> Vec<Figure> {
        [
            Figure::KeepaliveH2load,
            Figure::NewconnResumeWrk,
            Figure::SerialFullSTime,
            Figure::SerialResumedSTime,
        ]
        .into_iter()
        .filter(|f| tools.contains(&f.tool()))
        .collect()
    }

    /// True when every request of the figure opens a new connection.
    pub fn per_connection(self) -> bool {
        !matches!(self, Figure::KeepaliveH2load)
    }
}

/// The target and load shape of one figure.
#[derive(Clone, Debug)]
pub struct Job {
    pub figure: Figure,
    /// `https://127.0.0.1:PORT/path`.
    pub url: String,
    pub port: u16,
    pub path: String,
    pub connections: usize,
    pub duration: Duration,
}

/// One figure's result, as the tool reported it.
#[derive(Clone, Debug, Serialize)]
pub struct ToolRun {
    pub figure: Figure,
    pub tool: Tool,
    /// The exact command, to reproduce it by hand.
    pub command: String,
    pub wall_s: f64,
    /// Requests (wrk, h2load) or connections (s_time) completed.
    pub completed: u64,
    pub per_s: f64,
    pub errors: u64,
    pub latency_mean_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// Runs one figure to completion (the tool stops by itself after `duration`).
pub fn run(job: &Job) -> Result<ToolRun, String> {
    let secs = job.duration.as_secs().max(1);
    let (program, _) = job.figure.tool().program();
    let path = find_program(program).ok_or_else(|| {
        format!(
            "{program} is not installed: sudo apt-get install -y {}",
            job.figure.tool().package()
        )
    })?;
    let args: Vec<String> = match job.figure {
        Figure::KeepaliveH2load => vec![
            "--h1".into(),
            format!("-c{}", job.connections),
            "-t1".into(),
            format!("-D{secs}"),
            job.url.clone(),
        ],
        Figure::NewconnResumeWrk => vec![
            "-t1".into(),
            format!("-c{}", job.connections),
            format!("-d{secs}s"),
            "--latency".into(),
            "-H".into(),
            "Connection: close".into(),
            job.url.clone(),
        ],
        Figure::SerialFullSTime | Figure::SerialResumedSTime => vec![
            "s_time".into(),
            "-connect".into(),
            format!("127.0.0.1:{}", job.port),
            "-www".into(),
            job.path.clone(),
            if job.figure == Figure::SerialFullSTime {
                "-new".into()
            } else {
                "-reuse".into()
            },
            "-time".into(),
            secs.to_string(),
        ],
    };
    let command = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let started = Instant::now();
    let out = Command::new(path)
        .args(&args)
        .output()
        .map_err(|e| format!("running {command}: {e}"))?;
    let wall = started.elapsed();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{command} exited with {}:\n{text}", out.status));
    }
    let parsed = match job.figure {
        Figure::KeepaliveH2load => parse_h2load(&text),
        Figure::NewconnResumeWrk => parse_wrk(&text),
        Figure::SerialFullSTime | Figure::SerialResumedSTime => parse_s_time(&text, wall),
    }
    .ok_or_else(|| format!("cannot read the output of {command}:\n{text}"))?;
    Ok(ToolRun {
        figure: job.figure,
        tool: job.figure.tool(),
        command,
        wall_s: wall.as_secs_f64(),
        ..parsed
    })
}

fn shell_quote(a: &str) -> String {
    if a.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

fn empty(figure: Figure) -> ToolRun {
    ToolRun {
        figure,
        tool: figure.tool(),
        command: String::new(),
        wall_s: 0.0,
        completed: 0,
        per_s: 0.0,
        errors: 0,
        latency_mean_ms: None,
        latency_p50_ms: None,
        latency_p99_ms: None,
    }
}

/// `1.23ms`, `456.78us`, `1.02s`, `2.00m` (wrk and h2load units) in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

/// The number before `word` in `text` (`"12 failed"` -> 12 for "failed").
fn count_before(text: &str, word: &str) -> Option<u64> {
    let words: Vec<&str> = text.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    words
        .windows(2)
        .find(|w| w[1] == word)
        .and_then(|w| w[0].parse().ok())
}

/// h2load: `finished in 10.00s, 52108.00 req/s, ...`, `requests: N total, ... N succeeded,
/// N failed, N errored, N timeout`, `time for request: min max mean sd +/-sd`.
fn parse_h2load(text: &str) -> Option<ToolRun> {
    let mut r = empty(Figure::KeepaliveH2load);
    let finished = text.lines().find(|l| l.starts_with("finished in"))?;
    r.per_s = finished
        .split(", ")
        .find_map(|p| p.strip_suffix(" req/s"))?
        .trim()
        .parse()
        .ok()?;
    let requests = text.lines().find(|l| l.starts_with("requests:"))?;
    r.completed = count_before(requests, "succeeded")?;
    r.errors = count_before(requests, "failed")?
        + count_before(requests, "errored")?
        + count_before(requests, "timeout").unwrap_or(0);
    if let Some(codes) = text.lines().find(|l| l.starts_with("status codes:")) {
        r.errors += ["4xx", "5xx"]
            .iter()
            .filter_map(|c| count_before(codes, c))
            .sum::<u64>();
    }
    r.latency_mean_ms = text
        .lines()
        .find(|l| l.starts_with("time for request:"))
        .and_then(|l| {
            let cols: Vec<&str> = l["time for request:".len()..].split_whitespace().collect();
            cols.get(2).and_then(|m| duration_ms(m))
        });
    Some(r)
}

/// wrk: `Requests/sec: 2562.00`, `N requests in 10.00s`, the `--latency` distribution
/// (`50% 1.10ms`, `99% 5.00ms`), `Latency avg stdev max`, socket errors and non-2xx.
fn parse_wrk(text: &str) -> Option<ToolRun> {
    let mut r = empty(Figure::NewconnResumeWrk);
    r.per_s = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    r.completed = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())?;
    let percentile = |p: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(p)).then(|| w.next().and_then(duration_ms))?
        })
    };
    r.latency_p50_ms = percentile("50%");
    r.latency_p99_ms = percentile("99%");
    r.latency_mean_ms = text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("Latency")).then(|| w.next().and_then(duration_ms))?
    });
    if let Some(l) = text
        .lines()
        .find(|l| l.trim().starts_with("Socket errors:"))
    {
        r.errors += l
            .split([',', ':'])
            .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    if let Some(l) = text
        .lines()
        .find(|l| l.trim().starts_with("Non-2xx or 3xx responses:"))
    {
        r.errors += l.split(':').nth(1)?.trim().parse::<u64>().ok()?;
    }
    // wrk counts a request that failed on the socket in neither figure: its rate is of
    // completed requests.
    Some(r)
}

/// s_time: `N connections in X.XXs; Y connections/user sec, bytes read B` (user CPU of the
/// client), then `N connections in T real seconds, B bytes read per connection`. The rate is
/// N over our own wall-clock measurement (T is rounded to whole seconds).
fn parse_s_time(text: &str, wall: Duration) -> Option<ToolRun> {
    // In -new or -reuse mode s_time prints one pair of lines; with neither it prints two.
    let mut r = empty(Figure::SerialFullSTime);
    let line = text.lines().find(|l| l.contains(" real seconds"))?;
    r.completed = line.split_whitespace().next()?.parse().ok()?;
    r.per_s = r.completed as f64 / wall.as_secs_f64().max(1e-9);
    if r.completed > 0 {
        r.latency_mean_ms = Some(wall.as_secs_f64() * 1000.0 / r.completed as f64);
    }
    // "bytes read per connection" 0 means the server answered nothing: an error per connection.
    if line.contains(" 0 bytes read per connection") {
        r.errors = r.completed;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load() {
        let out = "starting benchmark...\n\
finished in 10.00s, 52108.00 req/s, 10.55MB/s\n\
requests: 521080 total, 521144 started, 521080 done, 521070 succeeded, 10 failed, 2 errored, 1 timeout\n\
status codes: 521070 2xx, 0 3xx, 0 4xx, 10 5xx\n\
traffic: 105.50MB (110624712) total\n\
                     min         max         mean         sd        +/- sd\n\
time for request:      311us     12.35ms      1.21ms       454us    78.90%\n\
time for connect:     2.10ms      3.20ms      2.50ms       100us    70.00%\n";
        let r = parse_h2load(out).expect("parsed");
        assert_eq!(r.per_s, 52108.0);
        assert_eq!(r.completed, 521070);
        assert_eq!(r.errors, 10 + 2 + 1 + 10);
        assert_eq!(r.latency_mean_ms, Some(1.21));
    }

    #[test]
    fn reads_wrk() {
        let out = "Running 10s test @ https://127.0.0.1:8443/\n\
  1 threads and 32 connections\n\
  Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
    Latency   850.00us    1.20ms  30.00ms   90.00%\n\
    Req/Sec     2.58k   100.00     2.70k    70.00%\n\
  Latency Distribution\n\
     50%  640.00us\n\
     75%    1.00ms\n\
     90%    1.50ms\n\
     99%    5.20ms\n\
  25620 requests in 10.00s, 3.20MB read\n\
  Socket errors: connect 0, read 3, write 0, timeout 1\n\
  Non-2xx or 3xx responses: 5\n\
Requests/sec:   2562.00\n\
Transfer/sec:    327.00KB\n";
        let r = parse_wrk(out).expect("parsed");
        assert_eq!(r.per_s, 2562.0);
        assert_eq!(r.completed, 25620);
        assert_eq!(r.latency_p50_ms, Some(0.64));
        assert_eq!(r.latency_p99_ms, Some(5.2));
        assert_eq!(r.latency_mean_ms, Some(0.85));
        assert_eq!(r.errors, 3 + 1 + 5);
    }

    #[test]
    fn reads_s_time() {
        let out = "Collecting connection statistics for 10 seconds\n\
tttttttttt\n\n\
6830 connections in 7.03s; 971.55 connections/user sec, bytes read 1366000\n\
6830 connections in 11 real seconds, 200 bytes read per connection\n";
        let r = parse_s_time(out, Duration::from_secs(10)).expect("parsed");
        assert_eq!(r.completed, 6830);
        assert_eq!(r.per_s, 683.0);
        assert_eq!(r.errors, 0);
        let failed = "10 connections in 0.01s; 1000 connections/user sec, bytes read 0\n\
10 connections in 1 real seconds, 0 bytes read per connection\n";
        assert_eq!(
            parse_s_time(failed, Duration::from_secs(1))
                .expect("parsed")
                .errors,
            10
        );
        assert!(parse_s_time("garbage", Duration::from_secs(1)).is_none());
    }

    #[test]
    fn units() {
        assert_eq!(duration_ms("311us"), Some(0.311));
        assert_eq!(duration_ms("12.35ms"), Some(12.35));
        assert_eq!(duration_ms("1.5s"), Some(1500.0));
        assert_eq!(duration_ms("ms"), None);
    }
}
