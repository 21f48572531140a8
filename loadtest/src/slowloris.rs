//! `loadtest slowloris`: slow and idle clients against edgegw, and what they cost a
//! well-behaved client. It starts edgegw with short listener timeouts (`handshake_timeout`,
//! `header_timeout`, `body_timeout`), measures the good client (keep-alive requests and new
//! connections at a modest rate, see `paced`) on the idle gateway first, then opens `--slow`
//! connections: half complete TCP and never start TLS, half complete TLS and then send one
//! byte of a request head every `--byte-every`. Each one is opened again as soon as the
//! gateway cuts it. While they run, the good client is measured again for `--duration`.
//!
//! It prints one line a second (slow connections open, cut per second by kind, the good
//! client's requests and errors, edgegw's descriptors), then the good client's p50/p99/max
//! and errors on the idle gateway beside the same under the slow connections, how long the
//! slow connections lived before they were cut, and edgegw's
//! `edgegw_downstream_timeouts_total` by phase from its metrics endpoint. Nothing is
//! asserted: the figures are for reading.
//!
//! The slow connections run on one epoll event loop of their own: they cost the client
//! little CPU and do not disturb the good client's loop.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boring::ssl::SslContext;

use crate::client::{self, Conn};
use crate::harness::{Backend, Pki, Server};
use crate::paced::{self, Load, Window};
use crate::procs;
use crate::run::{parse_duration, Driver, DriverChoice, Target};
use crate::stats::{fmt_us, Recorder, Summary};

#[derive(clap::Args)]
pub struct SlowlorisArgs {
    /// Slow connections kept open (half silent TCP, half slow request heads).
    #[arg(long, default_value_t = 2000)]
    slow: usize,
    /// How long the good client is measured under the slow connections.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// How long the good client is measured on the idle gateway first (default: --duration).
    #[arg(long, value_parser = parse_duration)]
    baseline: Option<Duration>,
    /// The good client's keep-alive requests per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// The good client's keep-alive connections.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// The good client's new connections per second (full handshake, one GET, close).
    #[arg(long, default_value_t = 10.0)]
    new_per_second: f64,
    /// A slow request head gets its next byte this often.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    byte_every: Duration,
    /// edgegw's listener.handshake_timeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// edgegw's listener.header_timeout.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// edgegw's listener.body_timeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// The slow connections are opened over this long at the start (then kept open).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    ramp: Duration,
    /// edgegw's server.workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The good client's event loop (the slow connections always run on epoll).
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    driver: DriverChoice,
}

/// The two kinds of slow connection.
const SILENT: usize = 0;
const SLOW_HEAD: usize = 1;

/// What the slow connections did, read every second by the main thread.
#[derive(Default)]
struct SlowStats {
    open: [AtomicU64; 2],
    opened: [AtomicU64; 2],
    cut: [AtomicU64; 2],
    connect_failures: AtomicU64,
    handshake_failures: AtomicU64,
    stop: AtomicBool,
}

impl SlowStats {
    fn cuts(&self) -> [u64; 2] {
        [
            self.cut[SILENT].load(Ordering::Relaxed),
            self.cut[SLOW_HEAD].load(Ordering::Relaxed),
        ]
    }
}

fn toml_duration(d: Duration) -> String {
    format!("\"{}ms\"", d.as_millis().max(1))
}

pub fn run(args: SlowlorisArgs) -> Result<(), String> {
    let driver = args.driver.resolve()?;
    // The slow connections, the good client's and a margin; edgegw inherits this limit.
    let want = args.slow as u64 * 2 + 4096;
    let got = procs::raise_nofile(want);
    if got < args.slow as u64 + 256 {
        return Err(format!(
            "the open-file limit is {got}: too low for {} slow connections",
            args.slow
        ));
    }
    let pki = Pki::create()?;
    let backend = Backend::start(&pki, 1)?;
    let extra = [
        (
            "listener",
            "handshake_timeout",
            toml_duration(args.handshake_timeout),
        ),
        (
            "listener",
            "header_timeout",
            toml_duration(args.header_timeout),
        ),
        ("listener", "body_timeout", toml_duration(args.body_timeout)),
    ];
    let server = Server::start_edgegw(&pki, backend.port, args.workers, &extra)?;
    let pid = server.proc.pid();
    let target: Target = server.url("/good").parse()?;
    let context = client::build_context(Some("X25519"), None)?;
    let baseline = args.baseline.unwrap_or(args.duration);
    println!(
        "slowloris: edgegw pid {pid} ({} workers; handshake_timeout {:?}, header_timeout {:?}, \
         body_timeout {:?}; open-file limit {got}); {} slow connections ({} silent TCP, {} slow \
         request heads at one byte every {:?}); good client {:.0} req/s keep-alive over {} \
         connections + {:.0} new connections/s ({driver:?})",
        args.workers,
        args.handshake_timeout,
        args.header_timeout,
        args.body_timeout,
        args.slow,
        args.slow - args.slow / 2,
        args.slow / 2,
        args.byte_every,
        args.rate,
        args.connections,
        args.new_per_second,
    );
    let load = Load {
        keepalive_connections: args.connections.max(1),
        keepalive_rate: args.rate,
        newconn_rate: args.new_per_second,
        request_timeout: Duration::from_secs(10),
    };
    let good = |d: Duration| -> Result<Window, String> {
        let (meter, h) = paced::start(&load, &target, &context, driver, d);
        h.join().map_err(|_| "the good client panicked")??;
        Ok(meter.take())
    };
    good(Duration::from_secs(1))?; // warm-up: first handshakes, upstream pool
    println!("phase 1: good client alone for {baseline:?}");
    let idle = good(baseline)?;
    let idle_fds = procs::open_fds(pid);

    println!(
        "phase 2: {} slow connections (opened over {:?}), then the good client beside them \
         for {:?}",
        args.slow, args.ramp, args.duration
    );
    let stats = Arc::new(SlowStats::default());
    let slow_deadline = Instant::now() + args.ramp + args.duration + Duration::from_secs(2);
    let slow_thread = {
        let (stats, addr, ctx) = (stats.clone(), target.addr, context.clone());
        let (n, every, ramp) = (args.slow, args.byte_every, args.ramp);
        std::thread::spawn(move || {
            Driver::Tokio
                .block_on(slow_clients(
                    n,
                    addr,
                    ctx,
                    every,
                    ramp,
                    slow_deadline,
                    stats,
                ))
                .map_err(|e| format!("slow clients' event loop: {e}"))
        })
    };
    let mut printer = Printer::new(stats.clone(), pid);
    for _ in 0..args.ramp.as_secs_f64().ceil() as u64 {
        printer.tick(None);
    }
    let cuts_before = stats.cuts();
    let (meter, good_thread) = paced::start(&load, &target, &context, driver, args.duration);
    let measured = Instant::now();
    for _ in 0..args.duration.as_secs_f64().ceil() as u64 {
        printer.tick(Some(&meter));
    }
    good_thread
        .join()
        .map_err(|_| "the good client panicked")??;
    let measured_s = measured.elapsed().as_secs_f64().max(1e-3);
    let cuts_measured = stats.cuts();
    let under = meter.take();
    let fds_end = procs::open_fds(pid);
    let rss_end = procs::vm_rss_kib(pid);
    stats.stop.store(true, Ordering::Relaxed);
    let lifetimes = slow_thread
        .join()
        .map_err(|_| "the slow clients panicked")??;
    // After the slow clients stopped: the gateway's counts and ours cover the same cuts.
    let metrics = server.metrics_text();

    println!(
        "good client ({:.0} req/s keep-alive + {:.0} new connections/s):",
        args.rate, args.new_per_second
    );
    println!(
        "  {:<28} {:>8} {:>7}   keep-alive p50 / p99 / max        new connection p50 / p99 / max",
        "", "requests", "errors"
    );
    let row = |name: &str, w: &Window, secs: f64| {
        let d = Duration::from_secs_f64(secs.max(1e-3));
        let (k, n) = (w.keepalive.summary(d), w.newconn.summary(d));
        println!(
            "  {name:<28} {:>8} {:>7}   {:<33} {}",
            w.requests(),
            w.errors(),
            three(&k),
            three(&n)
        );
        let kinds: Vec<String> = k
            .errors_by_kind
            .iter()
            .chain(n.errors_by_kind.iter())
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !kinds.is_empty() {
            println!("  {:<28} errors: {}", "", kinds.join(", "));
        }
    };
    row("idle gateway", &idle, baseline.as_secs_f64());
    row(
        &format!("beside {} slow connections", args.slow),
        &under,
        args.duration.as_secs_f64(),
    );

    for (kind, name, from) in [
        (SILENT, "silent TCP (never starts TLS)", "from connect"),
        (
            SLOW_HEAD,
            "slow request head",
            "from the end of the TLS handshake",
        ),
    ] {
        let cut = stats.cut[kind].load(Ordering::Relaxed);
        let life = lifetimes[kind].summary(Duration::from_secs(1)).latency_us;
        println!(
            "slow: {name:<30} opened {:>6}  cut {:>6} in all, {:.0}/s while the good client ran \
             ({:.0} s)  lived {from}: p50 {} p99 {} max {}",
            stats.opened[kind].load(Ordering::Relaxed),
            cut,
            (cuts_measured[kind] - cuts_before[kind]) as f64 / measured_s,
            measured_s,
            fmt_us(life.p50),
            fmt_us(life.p99),
            fmt_us(life.max),
        );
    }
    println!(
        "slow: connect failures {}, TLS handshake failures {}",
        stats.connect_failures.load(Ordering::Relaxed),
        stats.handshake_failures.load(Ordering::Relaxed),
    );
    println!(
        "edgegw: fds {idle_fds} after the idle phase, peak {} under the slow connections, {fds_end} \
         at the end; rss {:.2} MiB at the end",
        printer.peak_fds.max(fds_end),
        rss_end as f64 / 1024.0
    );
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("edgegw_downstream_timeouts_total")
                || l.starts_with("edgegw_limits_reached_total")
        })
        .collect();
    if lines.is_empty() {
        println!("metrics: no edgegw_downstream_timeouts_total sample");
    }
    for l in lines {
        println!("metrics: {l}");
    }
    drop(server);
    drop(backend);
    Ok(())
}

fn three(s: &Summary) -> String {
    if s.requests == 0 {
        return "-".into();
    }
    let l = &s.latency_us;
    format!("{} / {} / {}", fmt_us(l.p50), fmt_us(l.p99), fmt_us(l.max))
}

/// One line a second.
struct Printer {
    stats: Arc<SlowStats>,
    pid: u32,
    start: Instant,
    next: Instant,
    last_cut: [u64; 2],
    last_opened: u64,
    last_good: (u64, u64),
    peak_fds: u64,
}

impl Printer {
    fn new(stats: Arc<SlowStats>, pid: u32) -> Self {
        let start = Instant::now();
        Self {
            stats,
            pid,
            start,
            next: start + Duration::from_secs(1),
            last_cut: [0; 2],
            last_opened: 0,
            last_good: (0, 0),
            peak_fds: 0,
        }
    }

    /// Sleeps to the next second and prints its line.
    fn tick(&mut self, good: Option<&paced::Meter>) {
        if let Some(wait) = self.next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        self.next += Duration::from_secs(1);
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let cut = [load(&s.cut[SILENT]), load(&s.cut[SLOW_HEAD])];
        let opened = load(&s.opened[SILENT]) + load(&s.opened[SLOW_HEAD]);
        let fds = procs::open_fds(self.pid);
        self.peak_fds = self.peak_fds.max(fds);
        let good_text = match good {
            Some(m) => {
                let now = (load(&m.requests), load(&m.errors));
                let text = format!(
                    "good {:>4} req {:>2} err",
                    now.0 - self.last_good.0,
                    now.1 - self.last_good.1
                );
                self.last_good = now;
                text
            }
            None => "good (ramp-up)".into(),
        };
        println!(
            "[{:>3.0}s] open: silent {:>5} slow-head {:>5} | cut/s: silent {:>4} slow-head {:>4} | \
             opened/s {:>4} | {good_text} | edgegw fds {fds}",
            self.start.elapsed().as_secs_f64(),
            load(&s.open[SILENT]),
            load(&s.open[SLOW_HEAD]),
            cut[SILENT] - self.last_cut[SILENT],
            cut[SLOW_HEAD] - self.last_cut[SLOW_HEAD],
            opened - self.last_opened,
        );
        self.last_cut = cut;
        self.last_opened = opened;
    }
}

/// `n` slow connections until `deadline` (or until stopped), each opened again when cut;
/// returns how long they lived, by kind.
async fn slow_clients(
    n: usize,
    addr: std::net::SocketAddr,
    context: SslContext,
    byte_every: Duration,
    ramp: Duration,
    deadline: Instant,
    stats: Arc<SlowStats>,
) -> [Recorder; 2] {
    let lifetimes = Rc::new(RefCell::new([Recorder::new(), Recorder::new()]));
    let context = Rc::new(context);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let kind = if i % 2 == 0 { SILENT } else { SLOW_HEAD };
        let at = start + ramp.mul_f64(i as f64 / n.max(1) as f64);
        let (stats, lifetimes, context) = (stats.clone(), lifetimes.clone(), context.clone());
        tasks.push(crate::engine::spawn(async move {
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                crate::engine::sleep(wait).await;
            }
            let live = || Instant::now() < deadline && !stats.stop.load(Ordering::Relaxed);
            while live() {
                let lived = if kind == SILENT {
                    silent(addr, deadline, &stats).await
                } else {
                    slow_head(addr, &context, byte_every, deadline, &stats).await
                };
                match lived {
                    Some(Ok(d)) => {
                        stats.cut[kind].fetch_add(1, Ordering::Relaxed);
                        lifetimes.borrow_mut()[kind].success(d);
                    }
                    // Did not get open: do not spin.
                    Some(Err(())) => crate::engine::sleep(Duration::from_millis(100)).await,
                    None => break,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let out = lifetimes.borrow().clone();
    out
}

/// One connection that completes TCP and never sends a byte. `Some(Ok(lifetime))` when the
/// gateway cut it, `Some(Err(()))` when it could not be opened, `None` at the deadline.
async fn silent(
    addr: std::net::SocketAddr,
    deadline: Instant,
    stats: &SlowStats,
) -> Option<Result<Duration, ()>> {
    let connect = crate::engine::timeout(
        Duration::from_secs(5),
        crate::engine::net::TcpStream::connect(addr),
    )
    .await;
    let Ok(Ok(mut tcp)) = connect else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        return Some(Err(()));
    };
    let t = Instant::now();
    stats.opened[SILENT].fetch_add(1, Ordering::Relaxed);
    stats.open[SILENT].fetch_add(1, Ordering::Relaxed);
    let left = deadline.saturating_duration_since(Instant::now());
    // Anything but a timeout (end of stream, a reset, or bytes) is the gateway giving up.
    let result = crate::engine::timeout(left, tcp.read(Vec::with_capacity(64))).await;
    stats.open[SILENT].fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(_) => Some(Ok(t.elapsed())),
        Err(_) => None,
    }
}

/// The request head a slow client trickles; after it, `a` forever (one header never ends).
const SLOW_HEAD_BYTES: &[u8] = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// One connection that completes TLS, then sends a byte of a request head every
/// `byte_every` until the gateway answers or closes. Same results as [`silent`]; the
/// lifetime counts from the end of the handshake (the first byte goes right after it).
async fn slow_head(
    addr: std::net::SocketAddr,
    context: &SslContext,
    byte_every: Duration,
    deadline: Instant,
    stats: &SlowStats,
) -> Option<Result<Duration, ()>> {
    let connect = crate::engine::timeout(
        Duration::from_secs(5),
        Conn::connect(addr, context, None, None),
    )
    .await;
    let mut conn = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(crate::stats::ErrorKind::Connect)) => {
            stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Some(Err(()));
        }
        _ => {
            stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
            return Some(Err(()));
        }
    };
    let t = Instant::now();
    stats.opened[SLOW_HEAD].fetch_add(1, Ordering::Relaxed);
    stats.open[SLOW_HEAD].fetch_add(1, Ordering::Relaxed);
    let fd = conn.tls.raw_fd();
    let mut sent = 0usize;
    let mut next_byte = Instant::now();
    let outcome = loop {
        if Instant::now() >= deadline || stats.stop.load(Ordering::Relaxed) {
            break None;
        }
        if Instant::now() >= next_byte {
            let b = SLOW_HEAD_BYTES.get(sent).copied().unwrap_or(b'a');
            if conn.tls.write_all(&[b]).await.is_err() {
                break Some(Ok(t.elapsed()));
            }
            sent += 1;
            next_byte += byte_every;
        }
        let poll = Duration::from_millis(200);
        let wait = next_byte
            .saturating_duration_since(Instant::now())
            .min(poll);
        crate::engine::sleep(wait).await;
        if peer_gave_up(fd) {
            break Some(Ok(t.elapsed()));
        }
    };
    stats.open[SLOW_HEAD].fetch_sub(1, Ordering::Relaxed);
    outcome
}

/// Whether the peer sent something (an answer such as 408) or closed or reset the
/// connection: a non-blocking peek at the socket, which leaves the TLS state alone.
fn peer_gave_up(fd: std::os::fd::RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local byte on a descriptor this task owns (the
    // connection is alive for the whole call); MSG_DONTWAIT never blocks.
    let r = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if r >= 0 {
        return true;
    }
    let e = std::io::Error::last_os_error().raw_os_error();
    !matches!(e, Some(libc::EAGAIN) | Some(libc::EINTR))
}
