//! The engine: each target's inputs come from its committed corpus, from its own structured
//! generator and from mutations of both; every input runs under `catch_unwind`, and one
//! with an outcome not seen before is kept as material for further mutations (a cheap
//! stand-in for coverage feedback, which needs a nightly toolchain's instrumentation).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::mutate;

/// What one input did, coarsely (`class`, e.g. `ok:chunked`, `err:Malformed`) and finely
/// (`detail`, a hash of whatever tells outcomes of one class apart). Distinct
/// `(class, detail)` pairs are the "distinct outcomes" of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub class: &'static str,
    pub detail: u64,
}

impl Outcome {
    pub fn new(class: &'static str) -> Self {
        Self { class, detail: 0 }
    }

    pub fn with(class: &'static str, detail: impl Hash) -> Self {
        Self {
            class,
            detail: hash(&detail),
        }
    }

    fn signature(&self) -> u64 {
        hash(&(self.class, self.detail))
    }
}

/// A deterministic hash (SipHash with fixed keys): the same input hashes alike in every run.
pub fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// One fuzz target: a function of the gateway and the properties it must keep.
pub trait Target {
    fn name(&self) -> &'static str;
    /// A new input from the target's structured generator.
    fn generate(&mut self, rng: &mut StdRng) -> Vec<u8>;
    /// Runs one input. `Err`: a property broke; the text starts with the property's name,
    /// then `: ` and the details.
    fn run(&mut self, input: &[u8]) -> Result<Outcome, String>;
    /// Tokens the mutator inserts and overwrites with.
    fn dictionary(&self) -> &[&'static [u8]] {
        &[]
    }
    /// A mutation that knows the input's structure; `false` when it did nothing.
    fn mutate(&mut self, _rng: &mut StdRng, _input: &mut Vec<u8>) -> bool {
        false
    }
    /// The largest input the mutator makes.
    fn max_len(&self) -> usize {
        4096
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Panic,
    Property,
}

/// An input that panicked or broke a property.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// What two failures must share to count as the same one while minimizing: the panic's
    /// location, or the property's name.
    pub key: String,
    /// The panicking thread's backtrace.
    pub backtrace: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FailureKind::Panic => write!(f, "panic: {}", self.message),
            FailureKind::Property => write!(f, "property broken: {}", self.message),
        }
    }
}

struct PanicReport {
    message: String,
    location: String,
    backtrace: String,
}

/// The last panic of any thread (a target's panic may happen on a thread it started, such
/// as the admin API's blocking writes).
static LAST_PANIC: Mutex<Option<PanicReport>> = Mutex::new(None);

fn take_panic() -> Option<PanicReport> {
    LAST_PANIC
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}

/// Replaces the panic hook with one that records the panic (message, location, backtrace)
/// for [`check`] instead of printing it: a fuzz run panics on purpose.
pub fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(a panic without a message)".to_owned()
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let report = PanicReport {
            message,
            location,
            backtrace: std::backtrace::Backtrace::force_capture().to_string(),
        };
        *LAST_PANIC
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report);
    }));
}

/// Runs one input: its outcome, or the failure (a panic anywhere, or a broken property).
pub fn check(target: &mut dyn Target, input: &[u8]) -> Result<Outcome, Failure> {
    take_panic();
    let result = panic::catch_unwind(AssertUnwindSafe(|| target.run(input)));
    let panicked = take_panic();
    let panic_failure = |payload: Option<String>| {
        let (message, key, backtrace) = match &panicked {
            Some(p) => (
                format!("{} (at {})", p.message, p.location),
                p.location.clone(),
                Some(p.backtrace.clone()),
            ),
            None => {
                let m = payload.unwrap_or_else(|| "(no message)".to_owned());
                (m.clone(), m, None)
            }
        };
        Failure {
            kind: FailureKind::Panic,
            message,
            key,
            backtrace,
        }
    };
    match result {
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned());
            Err(panic_failure(text))
        }
        // A panic on another thread that the target survived (a task's panic turned into
        // an error answer) is still a panic.
        Ok(_) if panicked.is_some() => Err(panic_failure(None)),
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(mut message)) => Err(Failure {
            kind: FailureKind::Property,
            key: message.split(':').next().unwrap_or_default().to_owned(),
            message: {
                truncate(&mut message, MAX_MESSAGE);
                message
            },
            backtrace: None,
        }),
    }
}

/// The longest failure message kept (the input is saved whole anyway).
const MAX_MESSAGE: usize = 2000;

fn truncate(message: &mut String, max: usize) {
    if message.len() > max {
        let mut cut = max;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" [...]");
    }
}

/// How long each target runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// This many generated or mutated cases (after the corpus replay).
    Iterations(u64),
    /// For this long (the corpus replay included).
    Seconds(f64),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub budget: Budget,
    /// `<corpus>/<target>/*`: replayed first, then mutated.
    pub corpus_dir: PathBuf,
    /// `<regressions>/<target>/*`: replayed first, then mutated, like the corpus.
    pub regressions_dir: PathBuf,
    /// Failing inputs are written to `<crashes>/<target>/`.
    pub crashes_dir: PathBuf,
    pub seed: u64,
    /// Time spent minimizing a failing input.
    pub minimize_for: Duration,
    /// Go on after a failure (each distinct failure is reported once) instead of stopping.
    pub keep_going: bool,
}

/// A failure as the run found it.
#[derive(Debug, Clone)]
pub struct Found {
    pub failure: Failure,
    pub input: Vec<u8>,
    pub minimized: Vec<u8>,
    pub saved: Vec<PathBuf>,
}

/// What a run of one target did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub cases: u64,
    pub elapsed: Duration,
    pub distinct: usize,
    pub classes: BTreeMap<&'static str, u64>,
    pub seeds: usize,
    pub pool: usize,
    pub slowest: Duration,
    /// Distinct failures (by kind and key), in the order found.
    pub found: Vec<Found>,
    /// Cases that failed (with `keep_going`, repeats of a failure included).
    pub failing_cases: u64,
}

/// The largest number of inputs kept for mutation (seeds included).
const MAX_POOL: usize = 20_000;
/// With `keep_going`, a target stops after this many distinct failures.
const MAX_FAILURES: usize = 16;
/// Share of cases that come from the generator rather than from mutating kept inputs.
const GENERATE_SHARE: f64 = 0.25;

/// Every regular file of `dir`, in name order (`[]` when it does not exist).
pub fn read_dir_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|data| (p, data)))
        .collect()
}

/// Fuzzes one target within `config.budget`; stops at its first failure.
pub fn fuzz(target: &mut dyn Target, config: &Config) -> Report {
    let name = target.name();
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed ^ hash(name));
    let mut seeds: Vec<Vec<u8>> = read_dir_files(&config.corpus_dir.join(name))
        .into_iter()
        .chain(read_dir_files(&config.regressions_dir.join(name)))
        .map(|(_, data)| data)
        .collect();
    seeds.dedup();
    let mut report = Report {
        target: name,
        cases: 0,
        elapsed: Duration::ZERO,
        distinct: 0,
        classes: BTreeMap::new(),
        seeds: seeds.len(),
        pool: 0,
        slowest: Duration::ZERO,
        found: Vec::new(),
        failing_cases: 0,
    };
    let mut seen: HashSet<u64> = HashSet::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let n_seeds = seeds.len();
    let deadline = match config.budget {
        Budget::Seconds(s) => Some(started + Duration::from_secs_f64(s.max(0.0))),
        Budget::Iterations(_) => None,
    };
    let mut fresh: u64 = 0;
    let mut replay = seeds.into_iter();
    loop {
        let input = match replay.next() {
            Some(seed) => seed,
            None => {
                let out_of_budget = match config.budget {
                    Budget::Iterations(n) => fresh >= n,
                    // Instant::now costs little next to a case.
                    Budget::Seconds(_) => deadline.is_some_and(|d| Instant::now() >= d),
                };
                if out_of_budget {
                    break;
                }
                fresh += 1;
                if pool.is_empty() || rng.random_bool(GENERATE_SHARE) {
                    let mut input = target.generate(&mut rng);
                    if rng.random_bool(0.3) {
                        let other = pick_other(&mut rng, &pool);
                        mutate::mutate(&mut rng, target, &mut input, &other);
                    }
                    input
                } else {
                    let mut input = pool[rng.random_range(..pool.len())].clone();
                    let other = pick_other(&mut rng, &pool);
                    mutate::mutate(&mut rng, target, &mut input, &other);
                    input
                }
            }
        };
        report.cases += 1;
        let t0 = Instant::now();
        let result = check(target, &input);
        report.slowest = report.slowest.max(t0.elapsed());
        match result {
            Ok(outcome) => {
                *report.classes.entry(outcome.class).or_default() += 1;
                if seen.insert(outcome.signature()) {
                    if pool.len() < MAX_POOL {
                        pool.push(input);
                    } else {
                        // Keep the seeds; replace one of the inputs found.
                        let at = rng.random_range(n_seeds.min(MAX_POOL - 1)..MAX_POOL);
                        pool[at] = input;
                    }
                } else if report.cases <= n_seeds as u64 {
                    // A seed is worth mutating even when its outcome is not new.
                    pool.push(input);
                }
            }
            Err(failure) => {
                report.failing_cases += 1;
                let known = report
                    .found
                    .iter()
                    .any(|f| f.failure.kind == failure.kind && f.failure.key == failure.key);
                if !known {
                    let minimized = minimize(target, &input, &failure, config.minimize_for);
                    let saved = save(&config.crashes_dir.join(name), &input, &minimized, &failure);
                    report.found.push(Found {
                        failure,
                        input,
                        minimized,
                        saved,
                    });
                }
                if !config.keep_going || report.found.len() >= MAX_FAILURES {
                    break;
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    report.distinct = seen.len();
    report.pool = pool.len();
    report
}

fn pick_other(rng: &mut StdRng, pool: &[Vec<u8>]) -> Vec<u8> {
    if pool.is_empty() {
        Vec::new()
    } else {
        pool[rng.random_range(..pool.len())].clone()
    }
}

/// A smaller input failing the same way (same panic location or property), found by
/// deleting ever smaller chunks within `budget`.
pub fn minimize(
    target: &mut dyn Target,
    input: &[u8],
    failure: &Failure,
    budget: Duration,
) -> Vec<u8> {
    let until = Instant::now() + budget;
    let mut best = input.to_vec();
    let mut chunk = best.len().div_ceil(2).max(1);
    while Instant::now() < until && !best.is_empty() {
        let mut progress = false;
        let mut at = 0;
        while at < best.len() && Instant::now() < until {
            let end = (at + chunk).min(best.len());
            let mut candidate = best[..at].to_vec();
            candidate.extend_from_slice(&best[end..]);
            match check(target, &candidate) {
                Err(f) if f.kind == failure.kind && f.key == failure.key => {
                    best = candidate;
                    progress = true;
                }
                _ => at += chunk,
            }
        }
        if !progress {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    best
}

/// Writes the input (and its minimized form) under `dir`, named by its hash, with a text
/// file saying how it failed.
fn save(dir: &Path, input: &[u8], minimized: &[u8], failure: &Failure) -> Vec<PathBuf> {
    let mut saved = Vec::new();
    if std::fs::create_dir_all(dir).is_err() {
        return saved;
    }
    let stem = format!("{:016x}", hash(input));
    let mut write = |name: String, data: &[u8]| {
        let path = dir.join(name);
        if std::fs::write(&path, data).is_ok() {
            saved.push(path);
        }
    };
    write(format!("{stem}.bin"), input);
    if minimized != input {
        write(format!("{stem}-min.bin"), minimized);
    }
    let mut text = format!("{failure}\n");
    if let Some(bt) = &failure.backtrace {
        let _ = write!(text, "\nbacktrace of the panicking thread:\n{bt}\n");
    }
    write(format!("{stem}.txt"), text.as_bytes());
    saved
}

/// The input for a person: hex and base64 (cut at 4 KiB; the file has all of it).
pub fn describe_input(input: &[u8]) -> String {
    const SHOWN: usize = 4096;
    let shown = &input[..input.len().min(SHOWN)];
    let cut = if input.len() > SHOWN {
        format!(" (first {SHOWN} of {} bytes)", input.len())
    } else {
        String::new()
    };
    format!(
        "  {} bytes\n  hex{cut}: {}\n  base64{cut}: {}\n  text: {:?}",
        input.len(),
        hex::encode(shown),
        BASE64.encode(shown),
        String::from_utf8_lossy(&shown[..shown.len().min(512)])
    )
}
