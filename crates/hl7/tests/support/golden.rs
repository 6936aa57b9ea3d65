//! Golden files for the tests of both crates (included with `#[path]`): compare a text
//! with its file and print a readable line diff, or rewrite the file under
//! `UPDATE_EXPECT=1`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path as FsPath;

/// Compares with the golden file, or rewrites it under `UPDATE_EXPECT=1`.
pub fn check_golden(path: &FsPath, actual: &str) {
    if std::env::var("UPDATE_EXPECT").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        eprintln!("updated {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with UPDATE_EXPECT=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{} does not match what the code gives now (- golden, + now); if the change is \
             intended, run with UPDATE_EXPECT=1 and review the diff\n{}",
            path.display(),
            line_diff(&expected, actual)
        );
    }
}

/// A line diff with two lines of context around each change, from a longest common
/// subsequence (the golden file is a few hundred lines, so the quadratic table is fine).
pub fn line_diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: length of the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, old line number, text)
    let mut ops: Vec<(char, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            ops.push((' ', i + 1, old[i]));
            i += 1;
            j += 1;
        } else if i == old.len() || (j < new.len() && lcs[i][j + 1] > lcs[i + 1][j]) {
            ops.push(('+', i + 1, new[j]));
            j += 1;
        } else {
            ops.push(('-', i + 1, old[i]));
            i += 1;
        }
    }
    const CONTEXT: usize = 2;
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = String::new();
    let mut last_shown: Option<usize> = None;
    for (k, &(tag, line, text)) in ops.iter().enumerate() {
        let near = changed
            .iter()
            .any(|&c| c + CONTEXT >= k && k + CONTEXT >= c);
        if !near {
            continue;
        }
        if last_shown.is_none_or(|last| last + 1 != k) {
            writeln!(out, "@@ golden line {line}").unwrap();
        }
        writeln!(out, "{tag} {text}").unwrap();
        last_shown = Some(k);
    }
    if out.is_empty() {
        // Same lines, so the difference is in line endings or a final newline.
        out.push_str("(the texts differ only in line endings or the final newline)\n");
    }
    out
}

#[test]
fn line_diff_marks_changed_lines() {
    let diff = line_diff(
        "a\nb\nc\nd\ne\nf\ng\nh\ni\n",
        "a\nB\nc\nd\ne\nf\ng\nh\ni\nj\n",
    );
    assert_eq!(
        diff,
        "@@ golden line 1\n  a\n- b\n+ B\n  c\n  d\n@@ golden line 8\n  h\n  i\n+ j\n"
    );
    assert!(line_diff("a\n", "a").contains("line endings"));
}
