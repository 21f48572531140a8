//! The aya side of the sk_reuseport program in `ebpf/edgegw_steer.c`: load it, fill its
//! maps, attach it to the listeners' reuseport group, and read its counters back.
//!
//! Everything here is a BPF syscall; none of it runs per request. The steering thread
//! (`super::run_steering`) calls it on membership changes, to publish loads, and to read
//! the counters.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use aya::maps::{Array, MapData, PerCpuArray, ReusePortSockArray};
use aya::programs::{ProgramError, SkReuseport};
use aya::{Ebpf, EbpfLoader, VerifierLogLevel};

use super::{
    COUNTER_FALLBACK, COUNTER_MIGRATED, COUNTER_REROUTED, MAX_SLOTS, OBJECT, PROGRAM_NAME,
};
use crate::config::SteeringPolicy;

/// The value of the `edgegw_config` map (`struct steer_config` in the C source).
#[repr(C)]
#[derive(Clone, Copy)]
struct SteerConfig {
    policy: u32,
    nr_workers: u32,
    nr_live: u32,
    reserved: u32,
    live: [u32; MAX_SLOTS],
}

// SAFETY: `repr(C)` with only `u32` fields and an array of `u32`: no padding bytes and
// every bit pattern is a valid value, which is what aya's `Pod` requires.
unsafe impl aya::Pod for SteerConfig {}

fn policy_id(policy: SteeringPolicy) -> u32 {
    match policy {
        SteeringPolicy::Hash => 0,
        SteeringPolicy::Cpu => 1,
        SteeringPolicy::LeastLoaded => 2,
    }
}

/// What the program counted, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections handed to each worker (index = worker id).
    pub per_worker: Vec<u64>,
    /// Decisions where the chosen slot was empty and another live slot took the connection.
    pub rerouted: u64,
    /// Decisions where no slot could take it: SK_PASS, the kernel's hash chose.
    pub kernel_fallback: u64,
    /// Requests moved off a closing listener (restart handover).
    pub migrated: u64,
}

/// The loaded and attached program with its maps.
pub struct Program {
    // Kept for the program's file descriptor; the maps were taken out of it.
    _ebpf: Ebpf,
    socks: ReusePortSockArray<MapData>,
    config: Array<MapData, SteerConfig>,
    loads: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    policy: u32,
    workers: u32,
    /// Our own references to the workers' listeners (the workers own theirs).
    listeners: Vec<OwnedFd>,
    /// Slots userspace has filled (the kernel's map cannot be read back).
    in_map: Vec<bool>,
    published_loads: Vec<Option<u32>>,
}

/// Why the program could not be loaded or attached.
#[derive(Debug)]
pub struct LoadError {
    pub message: String,
    /// The kernel verifier's output, when the program itself was refused.
    pub verifier_log: Option<String>,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(log) = &self.verifier_log {
            write!(f, "\nverifier log:\n{log}")?;
        }
        Ok(())
    }
}

fn err(context: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError {
        message: format!("{context}: {e}"),
        verifier_log: None,
    }
}

impl Program {
    /// Loads the program, fills the socket map with `listeners` (slot = worker id), and
    /// attaches it to their reuseport group (replacing any program already there, such as
    /// the one of an edgegw this process takes over from).
    pub fn load(
        policy: SteeringPolicy,
        listeners: &[BorrowedFd<'_>],
    ) -> Result<Program, LoadError> {
        if listeners.is_empty() || listeners.len() > MAX_SLOTS {
            return Err(err("steering", format!("{} workers", listeners.len())));
        }
        let mut ebpf = EbpfLoader::new()
            .verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS)
            .load(OBJECT.bytes())
            .map_err(|e| err("loading the eBPF object (maps)", e))?;
        let program: &mut SkReuseport = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| err("eBPF object", format!("no program {PROGRAM_NAME}")))?
            .try_into()
            .map_err(|e| err("eBPF object", e))?;
        program.load().map_err(|e| match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => LoadError {
                message: format!("the kernel refused the sk_reuseport program: {io_error}"),
                verifier_log: Some(verifier_log.to_string()),
            },
            other => err("loading the sk_reuseport program", other),
        })?;
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| err("eBPF object", format!("no map {name}")))
        };
        let socks = ReusePortSockArray::try_from(take(&mut ebpf, "edgegw_socks")?)
            .map_err(|e| err("map edgegw_socks", e))?;
        let config = Array::try_from(take(&mut ebpf, "edgegw_config")?)
            .map_err(|e| err("map edgegw_config", e))?;
        let loads = Array::try_from(take(&mut ebpf, "edgegw_loads")?)
            .map_err(|e| err("map edgegw_loads", e))?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, "edgegw_counters")?)
            .map_err(|e| err("map edgegw_counters", e))?;
        let listeners = listeners
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("duplicating a listener", e))?;
        let workers = listeners.len();
        let mut this = Program {
            _ebpf: ebpf,
            socks,
            config,
            loads,
            counters,
            policy: policy_id(policy),
            workers: workers as u32,
            listeners,
            in_map: vec![false; workers],
            published_loads: vec![None; workers],
        };
        this.set_live(&vec![true; workers])
            .map_err(|e| err("filling the socket map", e))?;
        let program: &SkReuseport = this
            ._ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| err("eBPF object", format!("no program {PROGRAM_NAME}")))?
            .try_into()
            .map_err(|e| err("eBPF object", e))?;
        program
            .attach(this.listeners[0].as_fd())
            .map_err(|e| err("attaching to the reuseport group", e))?;
        Ok(this)
    }

    /// Makes exactly the workers marked `true` selectable. Sockets are added before the
    /// live list names them and removed after it stops naming them; the program probes
    /// past a slot that is empty in between.
    pub fn set_live(&mut self, live: &[bool]) -> Result<(), String> {
        for (slot, (&want, fd)) in live.iter().zip(&self.listeners).enumerate() {
            if want && !self.in_map[slot] {
                self.socks
                    .set(slot as u32, &fd.as_raw_fd(), 0)
                    .map_err(|e| format!("adding worker {slot}: {e}"))?;
                self.in_map[slot] = true;
            }
        }
        let mut config = SteerConfig {
            policy: self.policy,
            nr_workers: self.workers,
            nr_live: 0,
            reserved: 0,
            live: [0; MAX_SLOTS],
        };
        for (slot, _) in live.iter().enumerate().filter(|(_, &l)| l) {
            config.live[config.nr_live as usize] = slot as u32;
            config.nr_live += 1;
        }
        self.config
            .set(0, config, 0)
            .map_err(|e| format!("writing the steering config: {e}"))?;
        for (slot, &want) in live.iter().enumerate() {
            if !want && self.in_map[slot] {
                self.socks
                    .clear_index(&(slot as u32))
                    .map_err(|e| format!("removing worker {slot}: {e}"))?;
                self.in_map[slot] = false;
            }
        }
        Ok(())
    }

    /// Publishes each worker's open connections for `least-loaded` (only changed values).
    pub fn publish_loads(&mut self, loads: &[u32]) -> Result<(), String> {
        for (slot, &load) in loads.iter().enumerate().take(self.published_loads.len()) {
            if self.published_loads[slot] != Some(load) {
                self.loads
                    .set(slot as u32, load, 0)
                    .map_err(|e| format!("publishing the load of worker {slot}: {e}"))?;
                self.published_loads[slot] = Some(load);
            }
        }
        Ok(())
    }

    /// Connections waiting in each worker's accept queue (a slow or stuck worker's backlog
    /// grows here before its open-connection count does).
    pub fn accept_queues(&self) -> Vec<u32> {
        self.listeners
            .iter()
            .map(|fd| accept_queue(fd.as_fd()))
            .collect()
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, String> {
        let sum = |index: u32| -> Result<u64, String> {
            self.counters
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .map_err(|e| format!("reading counter {index}: {e}"))
        };
        Ok(Counters {
            per_worker: (0..self.workers).map(sum).collect::<Result<Vec<_>, _>>()?,
            rerouted: sum(COUNTER_REROUTED)?,
            kernel_fallback: sum(COUNTER_FALLBACK)?,
            migrated: sum(COUNTER_MIGRATED)?,
        })
    }
}

/// The accept-queue length of a listening socket (`tcpi_unacked` of TCP_INFO is
/// `sk_ack_backlog` for a listener); 0 when it cannot be read.
fn accept_queue(listener: BorrowedFd<'_>) -> u32 {
    // SAFETY: tcp_info is plain data (all-zero is a valid value).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large, and
    // `listener` is an open socket for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        info.tcpi_unacked
    } else {
        0
    }
}

/// Removes whatever sk_reuseport program is attached to `listener`'s group (kernel mode
/// taking over from an edgegw that steered with eBPF). `Ok(false)` when none was attached.
pub fn detach(listener: BorrowedFd<'_>) -> Result<bool, String> {
    match SkReuseport::detach(listener) {
        Ok(()) => Ok(true),
        Err(ProgramError::SkReuseportError(aya::programs::SkReuseportError::SetsockoptError {
            io_error,
            ..
        })) if io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}
