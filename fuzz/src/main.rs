//! `edgegw-fuzz <target|all|list> [--iterations N | --seconds S] [--corpus DIR] [--seed N]`
//!
//! Fuzzes each target in turn (budgets are per target), prints per target the cases run,
//! cases per second and distinct outcomes, and exits 1 when any input panicked or broke a
//! property: that input is printed (hex and base64) and saved under `fuzz/crashes/<target>/`
//! with a minimized copy. `--replay PATH` runs saved inputs (files, or every file of a
//! directory) once each instead.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use edgegw_fuzz::engine::{self, Budget, Config, FailureKind, Report};
use edgegw_fuzz::targets;

#[derive(Parser, Debug)]
#[command(
    name = "edgegw-fuzz",
    about = "Fuzzes edgegw's parsers (stable toolchain)."
)]
struct Args {
    /// A target, `all`, or `list` (prints the targets).
    target: String,
    /// Generated or mutated cases per target (after the corpus replay).
    #[arg(long, conflicts_with = "seconds")]
    iterations: Option<u64>,
    /// Seconds per target (default 10).
    #[arg(long)]
    seconds: Option<f64>,
    /// The corpus: `<DIR>/<target>/*` (default: fuzz/corpus).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where failing inputs go: `<DIR>/<target>/` (default: fuzz/crashes).
    #[arg(long)]
    crashes: Option<PathBuf>,
    /// The random seed (default: from the clock; printed, so that a run can be repeated
    /// with --iterations).
    #[arg(long)]
    seed: Option<u64>,
    /// Runs these inputs once each (files, or every file of a directory) and nothing else.
    #[arg(long)]
    replay: Vec<PathBuf>,
    /// Goes on after a failure (each distinct one is reported once) instead of stopping the
    /// target at its first.
    #[arg(long)]
    keep_going: bool,
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn print_report(r: &Report) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{:<14} {:>12} cases {:>10}/s {:>7} outcomes  {:>6.1} s  pool {} (seeds {})  slowest case {:.1} ms",
        r.target,
        group(r.cases),
        group((r.cases as f64 / secs) as u64),
        r.distinct,
        secs,
        r.pool,
        r.seeds,
        r.slowest.as_secs_f64() * 1e3
    );
    let mut classes: Vec<(&&str, &u64)> = r.classes.iter().collect();
    classes.sort_by(|a, b| b.1.cmp(a.1));
    let shown: Vec<String> = classes
        .iter()
        .take(8)
        .map(|(c, n)| format!("{c} {:.1}%", **n as f64 * 100.0 / r.cases.max(1) as f64))
        .collect();
    println!("{:<14} {}", "", shown.join(", "));
    if r.failing_cases > 0 {
        println!(
            "{:<14} {} failing cases, {} distinct failures",
            "",
            group(r.failing_cases),
            r.found.len()
        );
    }
    for found in &r.found {
        let what = match found.failure.kind {
            FailureKind::Panic => "PANIC",
            FailureKind::Property => "PROPERTY BROKEN",
        };
        println!("\n{what} in {}: {}", r.target, found.failure.message);
        println!("input:\n{}", engine::describe_input(&found.input));
        if found.minimized != found.input {
            println!("minimized:\n{}", engine::describe_input(&found.minimized));
        }
        for p in &found.saved {
            println!("saved: {}", p.display());
        }
        println!(
            "turn it into a regression: copy the -min.bin (or .bin) file to fuzz/regressions/{}/\n",
            r.target
        );
    }
}

fn replay(names: &[&str], paths: &[PathBuf]) -> ExitCode {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(engine::read_dir_files(p));
        } else {
            match std::fs::read(p) {
                Ok(data) => files.push((p.clone(), data)),
                Err(e) => {
                    eprintln!("edgegw-fuzz: {}: {e}", p.display());
                    return ExitCode::from(2);
                }
            }
        }
    }
    let mut failed = false;
    for name in names {
        let mut target = match targets::make(name) {
            Ok(Some(t)) => t,
            Ok(None) => unreachable_target(name),
            Err(e) => {
                eprintln!("edgegw-fuzz: {name}: {e}");
                return ExitCode::from(2);
            }
        };
        for (path, data) in &files {
            match engine::check(target.as_mut(), data) {
                Ok(o) => println!("{name}: {}: ok ({})", path.display(), o.class),
                Err(f) => {
                    failed = true;
                    println!("{name}: {}: {f}", path.display());
                }
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn unreachable_target(name: &str) -> ! {
    eprintln!("edgegw-fuzz: no target {name}");
    std::process::exit(2)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.target == "list" {
        for n in targets::NAMES {
            println!("{n}");
        }
        return ExitCode::SUCCESS;
    }
    let names: Vec<&str> = if args.target == "all" {
        targets::NAMES.to_vec()
    } else if let Some(n) = targets::NAMES.iter().find(|n| **n == args.target) {
        vec![*n]
    } else {
        eprintln!(
            "edgegw-fuzz: no target {:?} (targets: {}, or all)",
            args.target,
            targets::NAMES.join(", ")
        );
        return ExitCode::from(2);
    };
    engine::install_panic_hook();
    if !args.replay.is_empty() {
        return replay(&names, &args.replay);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let budget = match (args.iterations, args.seconds) {
        (Some(n), _) => Budget::Iterations(n),
        (None, Some(s)) => Budget::Seconds(s),
        (None, None) => Budget::Seconds(10.0),
    };
    let dir = edgegw_fuzz::crate_dir();
    let config = Config {
        budget,
        corpus_dir: args.corpus.unwrap_or_else(|| dir.join("corpus")),
        regressions_dir: dir.join("regressions"),
        crashes_dir: args.crashes.unwrap_or_else(|| dir.join("crashes")),
        seed,
        minimize_for: Duration::from_secs(3),
        keep_going: args.keep_going,
    };
    println!(
        "edgegw-fuzz: seed {seed}, {} per target, corpus {}",
        match budget {
            Budget::Iterations(n) => format!("{} cases", group(n)),
            Budget::Seconds(s) => format!("{s} s"),
        },
        config.corpus_dir.display()
    );
    let mut failures = 0;
    let mut total = 0;
    for name in &names {
        let mut target = match targets::make(name) {
            Ok(Some(t)) => t,
            Ok(None) => unreachable_target(name),
            Err(e) => {
                eprintln!("edgegw-fuzz: {name}: cannot set up: {e}");
                failures += 1;
                continue;
            }
        };
        let report = engine::fuzz(target.as_mut(), &config);
        total += report.cases;
        failures += report.found.len();
        print_report(&report);
    }
    println!(
        "edgegw-fuzz: {} targets, {} cases, {failures} failing (seed {seed})",
        names.len(),
        group(total)
    );
    if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
