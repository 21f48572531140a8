//! Builds the sk_reuseport steering program (ebpf/edgegw_steer.c) into OUT_DIR.
//!
//! With clang present (`EDGEGW_BPF_CLANG`, else `clang` on PATH) the program is recompiled
//! from source and a compile error fails the build: a stale object is never shipped
//! silently. Only when no clang can be run is the committed object (ebpf/edgegw_steer.o)
//! used instead, with a cargo warning. `EDGEGW_BPF_OBJECT_SOURCE` tells the crate which
//! one it embeds (`compiled` or `committed`); the test `steering::tests::
//! committed_object_matches_source` compares a fresh compile with the committed bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The flags the committed object was built with. Deterministic: no debug info (no paths
/// in the object), no `.comment` ident, run from the source directory with a relative
/// input name (the only name the object records).
const CLANG_FLAGS: &[&str] = &["-target", "bpfel", "-O2", "-fno-ident", "-Wall", "-Werror"];
const SOURCE: &str = "edgegw_steer.c";
const OBJECT: &str = "edgegw_steer.o";

fn main() -> Result<(), String> {
    let manifest = PathBuf::from(cargo_env("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest.join("..").join("ebpf");
    let out = PathBuf::from(cargo_env("OUT_DIR")?).join(OBJECT);
    println!("cargo:rerun-if-changed={}", ebpf_dir.join(SOURCE).display());
    println!("cargo:rerun-if-changed={}", ebpf_dir.join(OBJECT).display());
    println!("cargo:rerun-if-env-changed=EDGEGW_BPF_CLANG");

    let clang = std::env::var("EDGEGW_BPF_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let source = match compile(&clang, &ebpf_dir, &out) {
        Compile::Done => "compiled",
        Compile::NoClang(why) => {
            println!(
                "cargo:warning=clang not available ({why}): using the committed ebpf/{OBJECT}"
            );
            std::fs::copy(ebpf_dir.join(OBJECT), &out)
                .unwrap_or_else(|e| panic!("copying ebpf/{OBJECT}: {e}"));
            "committed"
        }
    };
    println!("cargo:rustc-env=EDGEGW_BPF_OBJECT_SOURCE={source}");
    println!(
        "cargo:rustc-env=EDGEGW_BPF_CLANG_FLAGS={}",
        CLANG_FLAGS.join(" ")
    );
    Ok(())
}

/// A variable cargo sets for every build-script run; missing only when the script is run
/// by hand, which the error says.
fn cargo_env(name: &str) -> Result<std::ffi::OsString, String> {
    std::env::var_os(name)
        .ok_or_else(|| format!("{name} is not set: build scripts are run by cargo, not by hand"))
}

enum Compile {
    Done,
    NoClang(String),
}

fn compile(clang: &str, dir: &Path, out: &Path) -> Compile {
    // A clang that cannot be started (missing) is the only reason to fall back.
    if let Err(e) = Command::new(clang).arg("--version").output() {
        return Compile::NoClang(format!("{clang}: {e}"));
    }
    let output = Command::new(clang)
        .args(CLANG_FLAGS)
        .args(["-c", SOURCE, "-o"])
        .arg(out)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {clang}: {e}"));
    if !output.status.success() {
        panic!(
            "compiling ebpf/{SOURCE} with {clang} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Compile::Done
}
