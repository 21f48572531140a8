//! edgegw's fuzzing on the stable toolchain (no libFuzzer, no sanitizers): for each target a
//! structured generator and a mutation engine over a committed corpus, every case under
//! `catch_unwind`, each target's properties checked beyond "no panic". The binary
//! (`edgegw-fuzz`) runs them; `tests/regressions.rs` replays the corpus and every saved
//! failure (`fuzz/regressions/<target>/`) as ordinary tests.

pub mod der;
pub mod engine;
pub mod gen;
pub mod mutate;
pub mod reference;
pub mod targets;

use std::path::PathBuf;

/// This crate's directory (`fuzz/`), where the corpus and the regressions are.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
