//! House rules that are cheap to check: every Rust file says what it is for in a `//!`
//! first line (STYLE.md §2).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["crates", "fuzz/fuzz_targets"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! first line: {missing:#?}"
    );
}

/// The `.rs` files below `crates/hl7-ihp/src`, as paths relative to it.
fn app_sources() -> Vec<(String, String)> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found only {} files", files.len());
    files
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            (relative, text)
        })
        .collect()
}

/// Where a crate is named in code (not in comments), by the files' relative paths.
fn files_naming(crate_name: &str) -> Vec<String> {
    let needle = format!("{crate_name}::");
    app_sources()
        .into_iter()
        .filter(|(_, text)| {
            text.lines()
                .map(str::trim_start)
                .filter(|line| !line.starts_with("//"))
                .any(|line| line.contains(&needle))
        })
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn only_the_store_knows_sql() {
    let users = files_naming("rusqlite");
    assert!(
        users.iter().any(|p| p.starts_with("store/sqlite/")),
        "{users:?}"
    );
    let outside: Vec<_> = users
        .into_iter()
        .filter(|path| !path.starts_with("store/"))
        .collect();
    assert!(
        outside.is_empty(),
        "rusqlite used outside store/: {outside:?}"
    );
}

#[test]
fn only_main_and_the_commands_use_anyhow() {
    let users = files_naming("anyhow");
    assert!(
        users.iter().any(|p| p.starts_with("commands/")),
        "{users:?}"
    );
    let outside: Vec<_> = users
        .into_iter()
        .filter(|path| path != "main.rs" && !path.starts_with("commands/"))
        .collect();
    assert!(
        outside.is_empty(),
        "anyhow used outside main.rs and commands/: {outside:?}"
    );
}

#[test]
fn only_http_knows_axum() {
    let users = files_naming("axum");
    assert!(users.iter().any(|p| p.starts_with("http/")), "{users:?}");
    let outside: Vec<_> = users
        .into_iter()
        .filter(|path| !path.starts_with("http/"))
        .collect();
    assert!(outside.is_empty(), "axum used outside http/: {outside:?}");
}

#[test]
fn no_test_is_ignored() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["crates", "fuzz/fuzz_targets"] {
        rust_files(&root.join(dir), &mut files);
    }
    // Spelled in two pieces so that this file does not find itself.
    let attribute = ["#[", "ignore"].concat();
    let ignored: Vec<_> = files
        .iter()
        .filter(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .any(|line| line.trim_start().starts_with(&attribute))
        })
        .collect();
    assert!(
        ignored.is_empty(),
        "ignored tests hide failures: {ignored:#?}"
    );
}
