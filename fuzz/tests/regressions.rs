//! Every input under `fuzz/regressions/<target>/` (failures found by fuzzing, kept once
//! fixed) and `fuzz/corpus/<target>/` (the seeds) passes its target: no panic, no broken
//! property. `./dev test` runs this with the unit tests.

use edgegw_fuzz::engine::{self, read_dir_files};
use edgegw_fuzz::{crate_dir, targets};

#[test]
fn every_target_has_a_corpus_and_a_regressions_directory() {
    for name in targets::NAMES {
        for dir in ["corpus", "regressions"] {
            let path = crate_dir().join(dir).join(name);
            assert!(path.is_dir(), "{} is missing", path.display());
        }
        assert!(
            !read_dir_files(&crate_dir().join("corpus").join(name)).is_empty(),
            "the corpus of {name} is empty"
        );
    }
}

#[test]
fn regressions_and_corpus_pass() {
    let mut failures = Vec::new();
    for name in targets::NAMES {
        let mut target = match targets::make(name) {
            Ok(Some(t)) => t,
            other => panic!("{name}: {:?}", other.err()),
        };
        for dir in ["regressions", "corpus"] {
            for (path, data) in read_dir_files(&crate_dir().join(dir).join(name)) {
                if let Err(f) = engine::check(target.as_mut(), &data) {
                    failures.push(format!(
                        "{name}: {}: {f}\n{}",
                        path.display(),
                        engine::describe_input(&data)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
