//! `loadtest serve`: one server under test (edgegw, NGINX or HAProxy) set up exactly as
//! `loadtest compare` sets it up, behind the same mTLS test backend, kept running for a
//! bounded time so that a third-party client (wrk, h2load, `openssl s_time`) or a profiler
//! (`perf record -p PID`, `strace -c -f -p PID`) can be pointed at it by hand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Backend, Kind, Pki, Server};
use crate::run;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// edgegw, nginx or haproxy.
    #[arg(long, default_value = "edgegw")]
    server: String,
    /// Worker processes/threads of the server.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Event-loop threads of the test backend.
    #[arg(long, default_value_t = 1)]
    backend_workers: usize,
    /// edgegw's `server.pin_workers`.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pin_workers: bool,
    /// How long to keep it up (it always stops by itself).
    #[arg(long = "for", default_value = "120s", value_parser = run::parse_duration)]
    duration: Duration,
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    let kind = Kind::parse(&args.server)?;
    let pki = Pki::create()?;
    let backend = Backend::start(&pki, args.backend_workers)?;
    let server = Server::start_with(kind, &pki, backend.port, args.workers, args.pin_workers)?;
    // One line a script can read, then the details.
    println!("{}", server.url("/"));
    eprintln!(
        "loadtest serve: {} pid {} on {} for {:?} (backend pid {} on 127.0.0.1:{}){}{}",
        kind.name(),
        server.proc.pid(),
        server.url("/"),
        args.duration,
        backend.proc.pid(),
        backend.port,
        server
            .admin_url
            .as_ref()
            .map(|u| format!("; admin {u}"))
            .unwrap_or_default(),
        server
            .metrics
            .as_ref()
            .map(|m| format!("; metrics {}/metrics", m.url()))
            .unwrap_or_default(),
    );
    stop_on_signals();
    let start = Instant::now();
    while start.elapsed() < args.duration && !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Dropping `server` and `backend` stops them (SIGTERM, then SIGKILL).
    Ok(())
}

/// Set by SIGTERM/SIGINT: `kill PID` stops the server and backend too instead of orphaning
/// them.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn stop_on_signals() {
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe) and lives for the
        // whole program.
        unsafe { libc::signal(signal, handler) };
    }
}
