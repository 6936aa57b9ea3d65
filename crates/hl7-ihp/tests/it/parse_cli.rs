//! `hl7-ihp parse` through the real binary: the JSON shape, decoding, batches, MLLP-framed
//! input, standard input and the exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hl7-ihp"))
        .args(args)
        .current_dir(samples())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hl7-ihp");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or(b"")).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for hl7-ihp")
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(output.stdout.clone())
        .expect("utf-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect()
}

#[test]
fn json_has_the_documented_shape() {
    let output = run(&["parse", "--json", "prototype-1.hl7"], None);
    assert!(output.status.success(), "{output:?}");
    let documents = json_lines(&output);
    assert_eq!(documents.len(), 1);
    let message = &documents[0];
    assert_eq!(message[0][0], serde_json::json!([[["MSH"]]]));
    assert_eq!(message[0][1], serde_json::json!([[["|"]]]));
    assert_eq!(message[0][2], serde_json::json!([[["^~"]]]));
    assert_eq!(message[0][9], serde_json::json!([[["ORU"], ["R01"]]]));
    assert_eq!(message[0][8], serde_json::json!([[[""]]]));
    assert_eq!(message[1][5][0][1], serde_json::json!(["EVE"]));
    assert_eq!(message.as_array().unwrap().len(), 4);
}

#[test]
fn decoded_resolves_escapes_and_charset() {
    let raw = json_lines(&run(&["parse", "--json", "latin1-lf-escapes.hl7"], None));
    let decoded = json_lines(&run(
        &["parse", "--json", "--decoded", "latin1-lf-escapes.hl7"],
        None,
    ));
    assert_eq!(raw[0][1][3][0][0][0], "A\\F\\77");
    assert_eq!(decoded[0][1][3][0][0][0], "A|77");
    // 8859/1 bytes arrive as text in both modes; only escapes differ.
    assert_eq!(raw[0][1][5][0][1][0], "Jürgen");
    assert_eq!(
        decoded[0][2][5][0][0][0],
        "line one\nline two A \\H\\bold\\N\\"
    );
}

#[test]
fn batches_print_one_document_per_message() {
    let output = run(&["parse", "--json", "batch.hl7"], None);
    assert!(output.status.success());
    let documents = json_lines(&output);
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[1][0][10][0][0][0], "B-2");
}

#[test]
fn standard_input_and_mllp_frames() {
    let message = std::fs::read(samples().join("prototype-2.hl7")).unwrap();
    let mut framed = Vec::new();
    for _ in 0..2 {
        framed.extend_from_slice(&hl7::mllp::frame(&message));
    }
    let output = run(&["parse", "--json", "-"], Some(&framed));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_lines(&output).len(), 2);
}

#[test]
fn tree_output_names_fields() {
    let output = run(&["parse", "pcd01-vitals.hl7"], None);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("OBX-3.2  MDC_ECG_HEART_RATE"), "{text}");
    assert!(text.contains("PID-5.2  Åsa"), "{text}");
}

#[test]
fn a_bad_file_exits_1_with_the_position() {
    let output = run(
        &["parse", "prototype-1.hl7", "bad-duplicate-delimiters.hl7"],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("segment 1 (MSH), field 2, byte 6"),
        "{stderr}"
    );
    // The good file before it was still printed.
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("CNTRL-3456")
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["parse"], None).status.code(), Some(2));
    assert_eq!(run(&["parse", "--bogus", "x"], None).status.code(), Some(2));
    assert_eq!(run(&["no-such-command"], None).status.code(), Some(2));
}

#[test]
fn a_missing_file_exits_1() {
    let output = run(&["parse", "does-not-exist.hl7"], None);
    assert_eq!(output.status.code(), Some(1));
}

/// Every sample through `parse` (tree and `--json`, with and without `--decoded`), as the
/// golden file `tests/golden/parse-samples.txt` holds it; `UPDATE_EXPECT=1` rewrites it.
#[test]
fn every_sample_matches_its_golden_output() {
    let mut names: Vec<String> = std::fs::read_dir(samples())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".hl7"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    let mut actual = String::from(
        "# `hl7-ihp parse` of every file in samples/ (tests/it/parse_cli.rs; UPDATE_EXPECT=1 rewrites).\n",
    );
    for name in &names {
        for flags in [
            &[][..],
            &["--decoded"],
            &["--json"],
            &["--json", "--decoded"],
        ] {
            let mut args = vec!["parse"];
            args.extend_from_slice(flags);
            args.push(name);
            let output = run(&args, None);
            actual.push_str(&format!(
                "\n## {} (exit {})\n",
                args.join(" "),
                output.status.code().unwrap_or(-1)
            ));
            actual.push_str(&String::from_utf8_lossy(&output.stdout));
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !stderr.is_empty() {
                actual.push_str(&format!("stderr: {stderr}"));
            }
        }
    }
    crate::golden::check_golden(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/parse-samples.txt"),
        &actual,
    );
}
