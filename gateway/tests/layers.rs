//! The gateway's modules form layers that import only downward (docs/ARCHITECTURE.md draws
//! them). This test reads every source file's `crate::` paths (comments left out) and fails
//! on an import that points sideways or up, which is also what keeps the graph free of
//! circles. A new top-level module must be given a layer here.

// Test code: a failed read of the source tree should stop the test with its message.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // Leaves: redacted, zeroized secrets; byte buffers and I/O traits; private files in
    // the data directory.
    &["secret", "buffer", "files"],
    // Configuration (holds secrets); metric names and handles; recent request errors.
    &["config", "metrics", "diagnostics"],
    // The resources and their rules.
    &["model"],
    // Durable records of the resources; TLS contexts and streams.
    &["store", "tls"],
    // Connections to backends: pool, shared sessions, connect.
    &["upstream"],
    // What the control plane hands the data plane; connection steering.
    &["snapshot", "steering"],
    // The data plane's workers; the control plane's REST API.
    &["dataplane", "admin"],
    // Starts and stops everything.
    &["runtime"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules a source text names through `crate::` (in `use` lines and in
/// paths), with `//` comments left out.
fn crate_imports(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}`: the first segment of each top-level item.
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("reading src").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_import_reader_sees_paths_and_groups_but_not_comments() {
    let source = "use crate::model::Thumbprint;\n\
                  use crate::{buffer::InBuffer, tls};\n\
                  //! `crate::snapshot` in a comment\n\
                  let x = crate::metrics::NO_API; // and crate::runtime here\n";
    let found: Vec<String> = crate_imports(source).into_iter().collect();
    assert_eq!(found, ["buffer", "metrics", "model", "tls"]);
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("reading lib.rs");
    for module in lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
    {
        assert!(
            layer_of(module).is_some(),
            "module {module} has no layer in tests/layers.rs"
        );
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let module = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs").to_owned())
            .expect("a file name");
        let Some(layer) = layer_of(&module) else {
            continue; // lib.rs, main.rs
        };
        let source = std::fs::read_to_string(&file).expect("reading a source file");
        for import in crate_imports(&source) {
            if import == module {
                continue;
            }
            match layer_of(&import) {
                Some(l) if l < layer => {}
                _ => wrong.push(format!(
                    "{} (layer {layer}, {module}) uses crate::{import}",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that are not downward:\n{}",
        wrong.join("\n")
    );
}
