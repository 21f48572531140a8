//! Connection steering: which worker gets each new connection (`[steering]`), worker
//! health, and the restart handover between two edgegw processes (`handover`).
//!
//! Every worker has its own `SO_REUSEPORT` listener on `listener.address`. In eBPF mode the
//! sk_reuseport program of `ebpf/edgegw_steer.c` (loaded by `bpf`) picks the listener for
//! each SYN by `steering.policy`; otherwise the kernel's own reuseport hash does. A steering
//! thread, off the data-plane cores' hot path, watches each worker's `Pulse` (heartbeat,
//! open connections, accepting or not) every `TICK`: it takes a stalled or stopped worker's
//! listener out of the socket map and puts it back once it runs again, publishes each
//! worker's load for `least-loaded` (open connections plus its listener's accept queue),
//! and copies the program's counters into the metrics. Workers never make a BPF syscall.

// The eBPF program handle is shared by the steering thread and the control plane, never
// by a worker (no worker makes a BPF syscall).
#![allow(clippy::disallowed_types)]

pub mod bpf;
pub mod handover;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{SteeringConfig, SteeringMode, SteeringPolicy};
use crate::metrics;

/// Slots in the program's maps; must equal `MAX_SLOTS` in the C source.
pub const MAX_SLOTS: usize = 1024;
const _: () = assert!(MAX_SLOTS == crate::config::MAX_WORKERS);
/// Counter indices after the per-worker ones (C: `COUNTER_*`).
const COUNTER_REROUTED: u32 = MAX_SLOTS as u32;
const COUNTER_FALLBACK: u32 = MAX_SLOTS as u32 + 1;
const COUNTER_MIGRATED: u32 = MAX_SLOTS as u32 + 2;
/// The program's function name in the object.
pub const PROGRAM_NAME: &str = "edgegw_select";
/// How often the steering thread looks at the workers.
pub const TICK: Duration = Duration::from_millis(50);
/// How often a worker proves its event loop runs.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
/// How often the program's counters are copied into the metrics.
const COUNTERS_EVERY: Duration = Duration::from_millis(100);

/// Bytes with the alignment the ELF parser wants.
#[repr(C, align(8))]
pub struct AlignedObject<B: ?Sized>(B);

impl AlignedObject<[u8]> {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The compiled program, from build.rs: freshly compiled by clang, or the committed object
/// when no clang was available (`OBJECT_SOURCE` says which).
pub static OBJECT: &AlignedObject<[u8]> =
    &AlignedObject(*include_bytes!(concat!(env!("OUT_DIR"), "/edgegw_steer.o")));
/// `compiled` or `committed`.
pub const OBJECT_SOURCE: &str = env!("EDGEGW_BPF_OBJECT_SOURCE");

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One worker's liveness and load: written by the worker (relaxed atomic stores, no
/// syscalls), read by the steering thread.
#[derive(Debug)]
pub struct Pulse {
    beat_ms: AtomicU64,
    /// The event loop has beaten once: it runs and its accept loop is up.
    started: AtomicBool,
    active: AtomicU32,
    accepting: AtomicBool,
    stop_accepting: AtomicBool,
    held_out: AtomicBool,
    stall_ms: AtomicU64,
    /// The load last published to the program for `least-loaded` (`NO_LOAD` before the
    /// first); shown by `STATUS` so an operator (or a test) can see what the program sees.
    published_load: AtomicU32,
}

/// `Pulse::published_load` before any load was published.
const NO_LOAD: u32 = u32::MAX;

impl Default for Pulse {
    fn default() -> Self {
        Pulse {
            beat_ms: AtomicU64::new(now_ms()),
            started: AtomicBool::new(false),
            active: AtomicU32::new(0),
            accepting: AtomicBool::new(true),
            stop_accepting: AtomicBool::new(false),
            held_out: AtomicBool::new(false),
            stall_ms: AtomicU64::new(0),
            published_load: AtomicU32::new(NO_LOAD),
        }
    }
}

impl Pulse {
    /// The worker's event loop ran just now.
    pub fn beat(&self) {
        self.beat_ms.store(now_ms(), Ordering::Relaxed);
        self.started.store(true, Ordering::Relaxed);
    }

    /// Whether the worker serves: its event loop has run (beaten once) and it still
    /// accepts connections (`GET /readyz`).
    pub fn serving(&self) -> bool {
        self.started.load(Ordering::Relaxed) && self.accepting.load(Ordering::Relaxed)
    }

    pub fn set_active(&self, open: usize) {
        self.active
            .store(u32::try_from(open).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::Relaxed);
    }

    /// Set (before the listener is shut down) when the worker must stop accepting: an
    /// accept error after this is the end of the accept loop, not a failure.
    pub fn stop_accepting_requested(&self) -> bool {
        self.stop_accepting.load(Ordering::Acquire)
    }

    /// Test hook (`EDGEGW_TEST_HOOKS=1` only): a stall the worker should inflict on its
    /// own event loop, taken once.
    pub fn take_stall(&self) -> Option<Duration> {
        match self.stall_ms.swap(0, Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn view(&self) -> PulseView {
        PulseView {
            beat_ms: self.beat_ms.load(Ordering::Relaxed),
            accepting: self.accepting.load(Ordering::Relaxed),
            held_out: self.held_out.load(Ordering::Relaxed),
        }
    }
}

/// Sets `accepting = false` when dropped (the worker's accept loop ended, or panicked).
pub struct AcceptingGuard(pub Arc<Pulse>);

impl Drop for AcceptingGuard {
    fn drop(&mut self) {
        self.0.set_accepting(false);
    }
}

#[derive(Debug, Clone, Copy)]
struct PulseView {
    beat_ms: u64,
    accepting: bool,
    held_out: bool,
}

/// Why a worker is out of the socket map, or `None` when it should be in.
fn out_reason(p: PulseView, now_ms: u64, stall: Duration) -> Option<String> {
    if !p.accepting {
        return Some("stopped accepting".into());
    }
    if p.held_out {
        return Some("taken out by the operator".into());
    }
    let silent = now_ms.saturating_sub(p.beat_ms);
    if u128::from(silent) >= stall.as_millis() {
        return Some(format!("stalled (event loop silent for {silent} ms)"));
    }
    None
}

/// The mode in force after start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Active {
    Ebpf(SteeringPolicy),
    Kernel,
}

/// Steering for one process: the program (eBPF mode), the workers' pulses, and our own
/// references to the listeners (to stop accepting).
pub struct Steering {
    active: Active,
    pulses: Vec<Arc<Pulse>>,
    listeners: Vec<OwnedFd>,
    program: Option<Arc<Mutex<bpf::Program>>>,
    stall_threshold: Duration,
    hooks: bool,
    monitor: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

fn policy_name(p: SteeringPolicy) -> &'static str {
    match p {
        SteeringPolicy::Hash => "hash",
        SteeringPolicy::Cpu => "cpu",
        SteeringPolicy::LeastLoaded => "least-loaded",
    }
}

impl Steering {
    /// Sets steering up on the workers' listeners per `steering.mode`, logging one line
    /// that says what is in force and why. `ebpf` mode fails when the program cannot be
    /// loaded; `auto` falls back to the kernel's hash.
    pub fn start(
        config: &SteeringConfig,
        listeners: &[std::net::TcpListener],
    ) -> Result<Steering, String> {
        let fds = listeners
            .iter()
            .map(|l| l.as_fd().try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("duplicating a listener: {e}"))?;
        let load = || {
            let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
            bpf::Program::load(config.policy, &borrowed)
        };
        let (active, program) = match config.mode {
            SteeringMode::Kernel => {
                tracing::info!(
                    "connection steering: kernel SO_REUSEPORT hash (steering.mode = \"kernel\")"
                );
                (Active::Kernel, None)
            }
            SteeringMode::Ebpf => match load() {
                Ok(p) => (Active::Ebpf(config.policy), Some(Arc::new(Mutex::new(p)))),
                Err(e) => {
                    return Err(format!(
                        "steering.mode = \"ebpf\" but the eBPF steering program cannot be used: {e}"
                    ))
                }
            },
            SteeringMode::Auto => match load() {
                Ok(p) => (Active::Ebpf(config.policy), Some(Arc::new(Mutex::new(p)))),
                Err(e) => {
                    tracing::warn!(
                        "connection steering: kernel SO_REUSEPORT hash (steering.mode = \"auto\": the eBPF program cannot be used: {})",
                        e.message
                    );
                    if let Some(log) = &e.verifier_log {
                        tracing::warn!("eBPF verifier log:\n{log}");
                    }
                    (Active::Kernel, None)
                }
            },
        };
        match active {
            Active::Ebpf(policy) => tracing::info!(
                "connection steering: eBPF sk_reuseport program, policy {} ({} object, {} workers)",
                policy_name(policy),
                OBJECT_SOURCE,
                fds.len()
            ),
            Active::Kernel => {
                // A program left on the group by an edgegw we take over from would keep
                // steering to its (closing) listeners only: the kernel hash takes over.
                if let Some(first) = fds.first() {
                    match bpf::detach(first.as_fd()) {
                        Ok(true) => tracing::info!(
                            "removed the sk_reuseport program of the previous edgegw from the group"
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "could not detach the previous sk_reuseport program")
                        }
                    }
                }
            }
        }
        metrics::record_steering_mode(
            matches!(active, Active::Ebpf(_)),
            policy_name(config.policy),
        );
        Ok(Steering {
            active,
            pulses: (0..fds.len()).map(|_| Arc::new(Pulse::default())).collect(),
            listeners: fds,
            program,
            stall_threshold: config.stall_threshold,
            hooks: std::env::var("EDGEGW_TEST_HOOKS").is_ok_and(|v| v == "1"),
            monitor: None,
        })
    }

    pub fn active(&self) -> Active {
        self.active
    }

    pub fn pulses(&self) -> &[Arc<Pulse>] {
        &self.pulses
    }

    /// The operator-facing handle used by the control socket.
    pub fn control(&self) -> Arc<Control> {
        Arc::new(Control {
            pulses: self.pulses.clone(),
            active: self.active,
            hooks: self.hooks,
            program: self.program.clone(),
        })
    }

    /// Starts the steering thread (eBPF mode; kernel mode has nothing to steer).
    pub fn start_monitor(&mut self) -> Result<(), String> {
        let Some(program) = self.program.clone() else {
            return Ok(());
        };
        let stop = Arc::new(AtomicBool::new(false));
        let pulses = self.pulses.clone();
        let stall = self.stall_threshold;
        let least_loaded = self.active == Active::Ebpf(SteeringPolicy::LeastLoaded);
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("edgegw-steering".into())
            .spawn(move || monitor(program, pulses, stall, least_loaded, flag))
            .map_err(|e| format!("starting the steering thread: {e}"))?;
        self.monitor = Some((stop, handle));
        Ok(())
    }

    /// Stops every worker's accepting: the flag first, then `shutdown(SHUT_RD)` on each
    /// listener, which wakes pending accepts and (with `net.ipv4.tcp_migrate_req` or the
    /// program's migrate hook) moves connections queued on it to the other listeners of
    /// the group, e.g. those of the edgegw that took over.
    pub fn stop_accepting(&mut self) {
        self.stop_monitor();
        for pulse in &self.pulses {
            pulse.stop_accepting.store(true, Ordering::Release);
        }
        for fd in &self.listeners {
            // SAFETY: `fd` is our own open duplicate of a listening socket; shutdown(2)
            // only changes the socket's state and touches no memory of ours.
            if unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) } != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "shutdown of a listener");
            }
        }
    }

    fn stop_monitor(&mut self) {
        if let Some((stop, handle)) = self.monitor.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        self.stop_monitor();
    }
}

fn lock(program: &Mutex<bpf::Program>) -> MutexGuard<'_, bpf::Program> {
    // The program's state is userspace bookkeeping of maps; a panic mid-update leaves at
    // worst a slot to be rewritten on the next change.
    program
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The steering thread: membership, loads, counters.
fn monitor(
    program: Arc<Mutex<bpf::Program>>,
    pulses: Vec<Arc<Pulse>>,
    stall: Duration,
    least_loaded: bool,
    stop: Arc<AtomicBool>,
) {
    let mut live = vec![true; pulses.len()];
    metrics::record_steering_live_workers(live.len());
    let mut last_counters = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = now_ms();
        let reasons: Vec<Option<String>> = pulses
            .iter()
            .map(|p| out_reason(p.view(), now, stall))
            .collect();
        let want: Vec<bool> = reasons.iter().map(Option::is_none).collect();
        if want != live {
            for (worker, reason) in reasons.iter().enumerate() {
                match (live[worker], reason) {
                    (true, Some(why)) => {
                        tracing::warn!(worker, "worker taken out of connection steering: {why}")
                    }
                    (false, None) => tracing::info!(worker, "worker back in connection steering"),
                    _ => {}
                }
            }
            match lock(&program).set_live(&want) {
                Ok(()) => {
                    live = want;
                    metrics::record_steering_live_workers(live.iter().filter(|l| **l).count());
                }
                Err(e) => tracing::error!(error = %e, "updating the steering socket map"),
            }
        }
        if least_loaded {
            // Load = open connections + connections waiting to be accepted.
            let mut program = lock(&program);
            let queued = program.accept_queues();
            let loads: Vec<u32> = pulses
                .iter()
                .zip(queued)
                .map(|(p, q)| p.active.load(Ordering::Relaxed).saturating_add(q))
                .collect();
            match program.publish_loads(&loads) {
                Ok(()) => {
                    for (p, load) in pulses.iter().zip(loads) {
                        p.published_load.store(load, Ordering::Relaxed);
                    }
                }
                Err(e) => tracing::error!(error = %e, "publishing worker loads"),
            }
        }
        if last_counters.elapsed() >= COUNTERS_EVERY {
            last_counters = Instant::now();
            record_counters(&lock(&program));
        }
    }
    record_counters(&lock(&program));
}

fn record_counters(program: &bpf::Program) {
    match program.counters() {
        Ok(c) => metrics::record_steering_counters(
            &c.per_worker,
            c.rerouted,
            c.kernel_fallback,
            c.migrated,
        ),
        Err(e) => tracing::debug!(error = %e, "reading steering counters"),
    }
}

/// Operator commands on the control socket (see `handover`).
pub struct Control {
    pulses: Vec<Arc<Pulse>>,
    active: Active,
    hooks: bool,
    program: Option<Arc<Mutex<bpf::Program>>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("active", &self.active)
            .field("workers", &self.pulses.len())
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Copies the program's counters into the metrics now (before a scrape renders them),
    /// so `edgegw_steering_steered_total` is exact at scrape time.
    pub fn refresh_metrics(&self) {
        if let Some(program) = &self.program {
            record_counters(&lock(program));
        }
    }

    /// Runs one command line; returns the one-line answer.
    ///
    /// - `STATUS`: `OK mode=ebpf|kernel policy=... workers=N loads=a,b out=i,j` (`loads`:
    ///   what `least-loaded` last published per worker, `-` before the first or with
    ///   another policy)
    /// - `WORKER <n> OUT` / `WORKER <n> IN`: take worker n out of steering, put it back
    /// - `WORKER <n> STALL <ms>`: block worker n's event loop (`EDGEGW_TEST_HOOKS=1` only)
    pub fn command(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["STATUS"] => {
                let (mode, policy) = match self.active {
                    Active::Ebpf(p) => ("ebpf", policy_name(p)),
                    Active::Kernel => ("kernel", "-"),
                };
                let out: Vec<String> = self
                    .pulses
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| out_reason(p.view(), now_ms(), Duration::MAX).is_some())
                    .map(|(i, _)| i.to_string())
                    .collect();
                let loads: Vec<String> = self
                    .pulses
                    .iter()
                    .map(|p| match p.published_load.load(Ordering::Relaxed) {
                        NO_LOAD => "-".to_string(),
                        load => load.to_string(),
                    })
                    .collect();
                format!(
                    "OK mode={mode} policy={policy} workers={} loads={} out={}",
                    self.pulses.len(),
                    loads.join(","),
                    out.join(",")
                )
            }
            ["WORKER", n, action, rest @ ..] => {
                let Some(pulse) = n.parse::<usize>().ok().and_then(|n| self.pulses.get(n)) else {
                    return format!("ERR no worker {n}");
                };
                match (*action, rest) {
                    ("OUT", []) | ("IN", []) if self.active == Active::Kernel => {
                        "ERR steering is in kernel mode: workers cannot be taken out".into()
                    }
                    ("OUT", []) => {
                        pulse.held_out.store(true, Ordering::Relaxed);
                        "OK".into()
                    }
                    ("IN", []) => {
                        pulse.held_out.store(false, Ordering::Relaxed);
                        "OK".into()
                    }
                    ("STALL", [ms]) if self.hooks => match ms.parse::<u64>() {
                        Ok(ms) if ms > 0 => {
                            pulse.stall_ms.store(ms, Ordering::Relaxed);
                            "OK".into()
                        }
                        _ => format!("ERR bad duration {ms}"),
                    },
                    ("STALL", _) => "ERR test hooks are off (EDGEGW_TEST_HOOKS=1)".into(),
                    _ => format!("ERR unknown command {line:?}"),
                }
            }
            _ => format!("ERR unknown command {line:?}"),
        }
    }
}

/// `net.ipv4.tcp_migrate_req = 1`: connections queued on a closing listener move to
/// another listener of its group instead of being reset (restart handover in kernel mode;
/// in eBPF mode the program's migrate hook does it even without the sysctl).
pub fn enable_migration() {
    const PATH: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    match std::fs::read_to_string(PATH) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(PATH, "1") {
            Ok(()) => tracing::info!(
                "set net.ipv4.tcp_migrate_req = 1 (restarts migrate queued connections)"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot set net.ipv4.tcp_migrate_req = 1: in kernel steering mode a restart may reset connections queued on the old listeners"
            ),
        },
        Err(e) => tracing::warn!(error = %e, "net.ipv4.tcp_migrate_req is not available"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(beat_ms: u64, accepting: bool, held_out: bool) -> PulseView {
        PulseView {
            beat_ms,
            accepting,
            held_out,
        }
    }

    #[test]
    fn health_rules() {
        let stall = Duration::from_secs(1);
        assert_eq!(out_reason(view(1000, true, false), 1500, stall), None);
        assert!(
            out_reason(view(1000, true, false), 2000, stall).is_some_and(|r| r.contains("stalled"))
        );
        assert!(out_reason(view(1000, false, false), 1000, stall)
            .is_some_and(|r| r.contains("stopped")));
        assert!(
            out_reason(view(1000, true, true), 1000, stall).is_some_and(|r| r.contains("operator"))
        );
        // A clock read before the beat (racing threads) is not a stall.
        assert_eq!(out_reason(view(2000, true, false), 1000, stall), None);
    }

    #[test]
    fn control_commands() {
        let control = Control {
            pulses: vec![Arc::new(Pulse::default()), Arc::new(Pulse::default())],
            active: Active::Ebpf(SteeringPolicy::Hash),
            hooks: false,
            program: None,
        };
        assert!(
            control.command("STATUS").contains(" loads=-,- "),
            "{}",
            control.command("STATUS")
        );
        control.pulses[0]
            .published_load
            .store(12, Ordering::Relaxed);
        assert!(control.command("STATUS").contains(" loads=12,- "));
        assert_eq!(control.command("WORKER 1 OUT"), "OK");
        assert!(
            control.command("STATUS").ends_with("out=1"),
            "{}",
            control.command("STATUS")
        );
        assert_eq!(control.command("WORKER 1 IN"), "OK");
        assert!(control.command("STATUS").ends_with("out="));
        assert!(control.command("WORKER 7 OUT").starts_with("ERR"));
        assert!(control
            .command("WORKER 0 STALL 10")
            .starts_with("ERR test hooks"));
        assert!(control.command("NOPE").starts_with("ERR"));
    }

    #[test]
    fn pulse_stall_hook_is_taken_once() {
        let p = Pulse::default();
        assert_eq!(p.take_stall(), None);
        p.stall_ms.store(5, Ordering::Relaxed);
        assert_eq!(p.take_stall(), Some(Duration::from_millis(5)));
        assert_eq!(p.take_stall(), None);
    }

    /// The embedded object is the committed one, byte for byte, when build.rs compiled it
    /// fresh with clang (deterministic flags: see build.rs). Without clang build.rs embeds
    /// the committed object itself and there is nothing to compare.
    #[test]
    fn committed_object_matches_source() {
        let committed = include_bytes!("../../../ebpf/edgegw_steer.o");
        if OBJECT_SOURCE != "compiled" {
            eprintln!(
                "skipped: clang was not available at build time (embedded the committed object)"
            );
            return;
        }
        assert!(
            OBJECT.bytes() == committed.as_slice(),
            "ebpf/edgegw_steer.o is stale: it differs from a fresh compile of ebpf/edgegw_steer.c. \
             Rebuild it: cd ebpf && clang {} -c edgegw_steer.c -o edgegw_steer.o",
            env!("EDGEGW_BPF_CLANG_FLAGS")
        );
    }

    #[test]
    fn object_has_the_program_and_maps() {
        let obj = aya_obj_names(OBJECT.bytes());
        for name in [
            PROGRAM_NAME,
            "edgegw_socks",
            "edgegw_config",
            "edgegw_loads",
            "edgegw_counters",
        ] {
            assert!(obj.contains(name), "{name} missing from the object");
        }
    }

    /// The symbol names in the object (a plain byte search is enough here).
    fn aya_obj_names(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }
}
