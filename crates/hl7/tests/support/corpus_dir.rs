//! Where the shared HL7 corpus is, for the tests of both crates (included with `#[path]`):
//! `HL7_CORPUS`, or `shared/corpus` beside the clone; missing is a skip, or a failure in CI.

use std::io::Write;
use std::path::PathBuf;

/// The corpus folder, or `None` (after saying so) when it is absent outside CI.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("HL7_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        // crates/hl7 → the clone → the folder that holds the clone and shared/.
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "HL7 corpus not found at {}: CI needs shared/corpus beside the clone, or HL7_CORPUS \
             naming it",
            dir.display()
        );
    }
    // Written to the process's standard error directly, past the test harness's capture,
    // so that the skip shows in the test output of a clone without the corpus.
    let _ = writeln!(
        std::io::stderr(),
        "corpus tests skipped: no HL7 corpus at {} (set HL7_CORPUS to its folder)",
        dir.display()
    );
    None
}
