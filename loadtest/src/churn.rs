//! `loadtest churn`: opens and closes many TLS connections to edgegw and reads its open
//! descriptors before, during, right after and after an idle wait. Each connection is a TCP
//! connect, a full TLS handshake (no resumption), one GET with `Connection: close` answered
//! by the mTLS test backend, and a close. A descriptor leak shows as "after idle" well above
//! "before"; "before" is read after a warm-up of the same shape, so that the upstream pool
//! (which legitimately keeps idle connections to the backend) is already full. Nothing is
//! asserted: the figures are for reading.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boring::ssl::SslContext;

use crate::client::{self, Conn};
use crate::harness::{Backend, Kind, Pki, Server};
use crate::procs;
use crate::run::{parse_duration, Driver, DriverChoice, Target};
use crate::stats::{fmt_us, ErrorKind, Recorder};

#[derive(clap::Args)]
pub struct ChurnArgs {
    /// TLS connections to open and close (after the warm-up).
    #[arg(long, default_value_t = 100_000)]
    connections: u64,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Connections of the same shape first, before "before" is read.
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// How long to wait after the last connection before the last reading.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    idle_wait: Duration,
    /// Client threads, one event loop each (the concurrency is split between them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// edgegw's server.workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    driver: DriverChoice,
}

#[derive(Clone, Copy)]
struct Reading {
    fds: u64,
    /// Of those, established connections to the backend (the upstream pool and requests in
    /// flight).
    upstream: u64,
    rss_kib: u64,
}

pub fn run(args: ChurnArgs) -> Result<(), String> {
    let driver = args.driver.resolve()?;
    procs::raise_nofile(args.concurrency as u64 * 4 + 1024);
    let pki = Pki::create()?;
    let backend = Backend::start(&pki, 1)?;
    let server = Server::start(Kind::Edgegw, &pki, backend.port, args.workers)?;
    let pid = server.proc.pid();
    let backend_port = backend.port;
    let read = || Reading {
        fds: procs::open_fds(pid),
        upstream: procs::connections_to(pid, backend_port),
        rss_kib: procs::vm_rss_kib(pid),
    };
    let target: Target = server.url("/churn").parse()?;
    let context = client::build_context(Some("X25519"), None)?;
    let concurrency = args.concurrency.max(1);
    let threads = args.threads.clamp(1, concurrency);
    println!(
        "churn: edgegw pid {pid} ({} workers); {} TLS connections (TCP connect, full handshake, \
         one GET with Connection: close, close), {concurrency} at a time over {threads} client \
         thread(s) ({driver:?}), after a warm-up of {}",
        args.workers, args.connections, args.warmup
    );

    let at_start = read();
    if args.warmup > 0 {
        let warm = churn(
            &target,
            &context,
            driver,
            args.warmup,
            concurrency,
            threads,
            None,
        )?;
        if warm.rec.error_count() > 0 {
            println!(
                "  warm-up: {} errors ({:?})",
                warm.rec.error_count(),
                warm.rec.summary(warm.elapsed).errors_by_kind
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let before = read();

    // Read the descriptors every half second while the connections run (the peak).
    let done = Arc::new(AtomicBool::new(false));
    let peak = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(procs::open_fds(pid));
                std::thread::sleep(Duration::from_millis(500));
            }
            peak
        })
    };
    let progress = Arc::new(AtomicU64::new(0));
    let main = churn(
        &target,
        &context,
        driver,
        args.connections,
        concurrency,
        threads,
        Some(progress),
    );
    let right_after = read();
    done.store(true, Ordering::Relaxed);
    let peak = peak.join().unwrap_or(0).max(right_after.fds);
    let main = main?;
    std::thread::sleep(args.idle_wait);
    let idle = read();

    let s = main.rec.summary(main.elapsed);
    println!(
        "  connections {} in {:.1} s: {:.0} conn/s, {} errors{}",
        s.requests + s.errors,
        s.elapsed_s,
        s.requests as f64 / s.elapsed_s.max(1e-9),
        s.errors,
        if s.errors > 0 {
            format!(" {:?}", s.errors_by_kind)
        } else {
            String::new()
        }
    );
    println!(
        "  latency (connect + handshake + GET)  p50 {}  p99 {}  max {}",
        fmt_us(s.latency_us.p50),
        fmt_us(s.latency_us.p99),
        fmt_us(s.latency_us.max)
    );
    println!(
        "  edgegw fds  at start {}  before {} (after {} warm-up connections)  peak {}  right \
         after {}  after {:?} idle {}",
        at_start.fds, before.fds, args.warmup, peak, right_after.fds, args.idle_wait, idle.fds
    );
    println!(
        "  of which upstream connections to the backend  at start {}  before {}  right after {}  \
         after idle {} (pooled idle connections close after upstream.idle_timeout, 60 s)",
        at_start.upstream, before.upstream, right_after.upstream, idle.upstream
    );
    let others = |r: &Reading| r.fds as i64 - r.upstream as i64;
    println!(
        "  other descriptors (listeners, clients, files)  at start {}  before {}  right after {}  \
         after idle {}",
        others(&at_start),
        others(&before),
        others(&right_after),
        others(&idle)
    );
    println!(
        "  edgegw rss  at start {:.2} MiB  before {:.2} MiB  right after {:.2} MiB  after idle \
         {:.2} MiB",
        mib(at_start.rss_kib),
        mib(before.rss_kib),
        mib(right_after.rss_kib),
        mib(idle.rss_kib)
    );
    let grew = idle.fds as i64 - before.fds as i64;
    let grew_others = others(&idle) - others(&before);
    let limit = (args.connections / 100).max(10) as i64;
    println!(
        "fd leak: {} (after idle - before = {grew:+}, {grew_others:+} without the upstream \
         connections; rule: a leak is more than 1% of the connections, {limit}, left open after \
         the idle wait)",
        if grew > limit { "yes" } else { "none" }
    );
    drop(server);
    drop(backend);
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Outcome {
    rec: Recorder,
    elapsed: Duration,
}

/// `total` connections, `concurrency` at a time over `threads` event loops.
fn churn(
    target: &Target,
    context: &SslContext,
    driver: Driver,
    total: u64,
    concurrency: usize,
    threads: usize,
    progress: Option<Arc<AtomicU64>>,
) -> Result<Outcome, String> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let printer = progress.clone().map(|p| {
        std::thread::spawn(move || {
            let mut last = 0;
            let mut tick = 1u32;
            loop {
                let at = start + Duration::from_secs(10) * tick;
                while Instant::now() < at {
                    if p.load(Ordering::Relaxed) >= total {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let n = p.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>4}s] {n} connections ({:.0}/s over the last 10 s)",
                    10 * tick,
                    (n - last) as f64 / 10.0
                );
                last = n;
                tick += 1;
            }
        })
    });
    let mut handles = Vec::new();
    for t in 0..threads {
        let tasks = concurrency / threads + usize::from(t < concurrency % threads);
        let (target, context, next) = (target.clone(), context.clone(), next.clone());
        let progress = progress.clone();
        handles.push(std::thread::spawn(move || {
            driver
                .block_on(churn_thread(target, context, next, total, tasks, progress))
                .map_err(|e| format!("event loop: {e}"))
        }));
    }
    let mut rec = Recorder::new();
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => rec.merge(&r),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a churn thread panicked".to_string()),
        }
    }
    let elapsed = start.elapsed();
    if let Some(p) = &progress {
        p.store(total, Ordering::Relaxed);
    }
    if let Some(p) = printer {
        let _ = p.join();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Outcome { rec, elapsed }),
    }
}

async fn churn_thread(
    target: Target,
    context: SslContext,
    next: Arc<AtomicU64>,
    total: u64,
    tasks: usize,
    progress: Option<Arc<AtomicU64>>,
) -> Recorder {
    let rec = Rc::new(RefCell::new(Recorder::new()));
    let request = Rc::new(client::get_request(&target.authority, "/churn", true));
    let target = Rc::new(target);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (target, context, next, rec, request) = (
            target.clone(),
            context.clone(),
            next.clone(),
            rec.clone(),
            request.clone(),
        );
        let progress = progress.clone();
        handles.push(crate::engine::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let outcome = crate::engine::timeout(
                    Duration::from_secs(10),
                    one_connection(&target, &context, &request),
                )
                .await
                .unwrap_or(Err(ErrorKind::Timeout));
                match outcome {
                    Ok(()) => rec.borrow_mut().success(t.elapsed()),
                    Err(kind) => {
                        rec.borrow_mut().error(kind);
                        if kind == ErrorKind::Connect {
                            crate::engine::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                if let Some(p) = &progress {
                    p.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in handles {
        // A task that panicked has recorded what it did; the others still count.
        let _ = h.await;
    }
    let out = rec.borrow().clone();
    out
}

async fn one_connection(
    target: &Target,
    context: &SslContext,
    request: &[u8],
) -> Result<(), ErrorKind> {
    let mut c = Conn::connect(target.addr, context, target.sni.as_deref(), None).await?;
    let response = c.request(request).await?;
    match ErrorKind::from_status(response.status) {
        Some(kind) => Err(kind),
        None => Ok(()),
    }
}
