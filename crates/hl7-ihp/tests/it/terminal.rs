//! Nothing a device sends reaches a terminal raw: `patients`, `messages` (also `--raw`),
//! `show`, `send`'s per-message lines, `parse`'s tree and the demo's table print control
//! characters escaped and cut overlong values short.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::common::{self, Client, ack_field, start};

/// Longest table line allowed: a 5,000-byte id must not make a 5,000-column table.
const MAX_TABLE_LINE: usize = 200;

/// ESC, BEL, backspace, DEL and every other C0 byte that can sit inside an MLLP frame and a
/// segment (not CR and LF, which end segments, nor 0x0B and 0x1C, which frame it).
fn junk() -> Vec<u8> {
    let mut junk = b"\x1b[2J\x1b]0;owned\x07\x1b[31m".to_vec();
    junk.extend((0x01u8..0x20).filter(|b| ![b'\r', b'\n', 0x0B, 0x1C].contains(b)));
    junk.push(0x7F);
    junk
}

/// A PCD-style ORU whose sender, control id, PID-3 and name carry `junk`.
fn hostile(control_id: &[u8], patient: &[u8]) -> Vec<u8> {
    let mut message = b"MSH|^~\\&|DEV".to_vec();
    message.extend_from_slice(&junk());
    message.extend_from_slice(b"|WARD|||20261126101500||ORU^R01|");
    message.extend_from_slice(control_id);
    message.extend_from_slice(b"|P|2.5\rPID|||");
    message.extend_from_slice(patient);
    message.extend_from_slice(b"^^^HOSP^MR||Doe");
    message.extend_from_slice(&junk());
    // NUL and a C1 CSI (U+009B, which some terminals obey like ESC [) in the name.
    message.extend_from_slice("\0^Jane\u{9b}31m".as_bytes());
    message.extend_from_slice(b"||19700101|F\rOBX|1|NM|8867-4^Heart rate^LN||7");
    message.extend_from_slice(&junk());
    message.extend_from_slice(b"|/min|60-100|N|||F\r");
    message
}

/// The escaped id of the first hostile patient starts with this.
const EVIL: &[u8] = b"EVIL";

/// Fails when `output` holds a byte a terminal would act on: a C0 control other than the
/// line feed, DEL, a C1 control; or (for tables) a line longer than `max_line` characters.
pub fn assert_terminal_safe(what: &str, output: &[u8], max_line: Option<usize>) {
    let text = String::from_utf8_lossy(output);
    for (n, line) in text.split('\n').enumerate() {
        let bad: Vec<char> = line
            .chars()
            .filter(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}'))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: line {n} carries control characters {bad:?}: {line:?}"
        );
        if let Some(max) = max_line {
            let width = line.chars().count();
            assert!(width <= max, "{what}: line {n} is {width} characters long");
        }
    }
}

fn run_bytes(args: &[&str]) -> (i32, Vec<u8>, Vec<u8>) {
    let output = Command::new(common::binary())
        .args(args)
        .output()
        .expect("run hl7-ihp");
    (
        output.status.code().unwrap_or(-1),
        output.stdout,
        output.stderr,
    )
}

#[test]
fn inspection_commands_escape_device_text_and_cut_long_values() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    let mut first = EVIL.to_vec();
    first.extend_from_slice(&junk());
    let mut long = b"\x1b[1m".to_vec();
    long.extend(std::iter::repeat_n(b'X', 5_000));
    let mut control_id = b"CTL".to_vec();
    control_id.extend_from_slice(&junk());
    for (n, patient) in [&first, &long].into_iter().enumerate() {
        let mut id = control_id.clone();
        id.push(b'0' + n as u8);
        assert_eq!(
            ack_field(&client.exchange(&hostile(&id, patient)), "MSA-1"),
            "AA"
        );
    }
    let data_dir = receiver.data_dir.to_str().unwrap().to_owned();

    let (status, stdout, stderr) = run_bytes(&["patients", "--data-dir", &data_dir]);
    assert_eq!(status, 0, "{}", String::from_utf8_lossy(&stderr));
    assert_terminal_safe("patients", &stdout, Some(MAX_TABLE_LINE));
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.contains("EVIL\\x1b[2J"), "escaped as \\x1b: {text}");
    assert!(
        text.contains('…'),
        "the long id is cut with an ellipsis: {text}"
    );

    let (status, stdout, _) = run_bytes(&["messages", "--data-dir", &data_dir]);
    assert_eq!(status, 0);
    assert_terminal_safe("messages", &stdout, Some(MAX_TABLE_LINE));
    assert!(String::from_utf8_lossy(&stdout).contains("CTL\\x1b"));

    // Bodies: the segments on lines of their own, everything else escaped.
    let (status, stdout, _) = run_bytes(&["messages", "--raw", "--data-dir", &data_dir]);
    assert_eq!(status, 0);
    assert_terminal_safe("messages --raw", &stdout, None);
    let text = String::from_utf8_lossy(&stdout);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("PID|||EVIL\\x1b[2J")),
        "{text}"
    );

    // `show` prints JSON: serde escapes C0, and DEL and C1 must not pass either.
    let id = String::from_utf8(first).unwrap();
    let (status, stdout, stderr) = run_bytes(&["show", &id, "--data-dir", &data_dir]);
    assert_eq!(status, 0, "{}", String::from_utf8_lossy(&stderr));
    assert_terminal_safe("show", &stdout, None);
    let document: serde_json::Value = serde_json::from_slice(&stdout).expect("still JSON");
    assert_eq!(document["PatientInfo"]["PatientID"], id.as_str());
    assert!(
        document["PatientInfo"]["PatientName"]
            .as_str()
            .unwrap()
            .contains('\u{9b}'),
        "the same text, only escaped"
    );
}

#[test]
fn send_lines_and_skipped_file_names_are_escaped() {
    let (dir, receiver) = start(&[]);
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let mut control_id = b"SEND".to_vec();
    control_id.extend_from_slice(&junk());
    std::fs::write(
        files.join("evil\x1b[2J\x07.hl7"),
        hostile(&control_id, b"SENDP"),
    )
    .unwrap();
    std::fs::write(files.join("notes\x1b[31m.txt"), b"not \x1b[5m HL7\n").unwrap();
    let (status, stdout, stderr) = run_bytes(&[
        "send",
        "--to",
        &receiver.mllp.to_string(),
        "--file",
        files.to_str().unwrap(),
        "--count",
        "1",
        "--interval",
        "0ms",
    ]);
    let shown = String::from_utf8_lossy(&stdout);
    assert_eq!(status, 0, "{shown}{}", String::from_utf8_lossy(&stderr));
    assert_terminal_safe("send", &stdout, None);
    assert_terminal_safe("send's stderr", &stderr, None);
    assert!(
        String::from_utf8_lossy(&stderr)
            .contains("skipped 1 file that is not HL7: notes\\x1b[31m.txt"),
        "{}",
        String::from_utf8_lossy(&stderr)
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("SEND\\x1b") && l.ends_with(" AA")),
        "{shown}"
    );
}

#[test]
fn parse_tree_escapes_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostile.hl7");
    std::fs::write(&file, hostile(b"PARSE\x1b[2J", b"EVIL\x07\x1b[31m")).unwrap();
    let (status, stdout, stderr) = run_bytes(&["parse", file.to_str().unwrap()]);
    assert_eq!(status, 0, "{}", String::from_utf8_lossy(&stderr));
    assert_terminal_safe("parse", &stdout, None);
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.contains("PID-3  EVIL\\x07\\x1b[31m"), "{text}");
}

#[test]
fn demo_table_escapes_device_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::binary())
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "off",
            "--patients",
            "1",
            "--interval",
            "100ms",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut output = Vec::new();
    let next_line = |output: &mut Vec<u8>| {
        let line = rx
            .recv_timeout(common::DEADLINE)
            .unwrap_or_else(|_| panic!("demo output so far: {}", String::from_utf8_lossy(output)));
        output.extend_from_slice(&line);
        String::from_utf8_lossy(&line).into_owned()
    };
    // "  MLLP          127.0.0.1:PORT   (point your own devices here: …)"
    let address = loop {
        let line = next_line(&mut output);
        if let Some(rest) = line.trim_start().strip_prefix("MLLP") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let mut patient = EVIL.to_vec();
    patient.extend_from_slice(&junk());
    let mut client = Client::connect(address);
    assert_eq!(
        ack_field(&client.exchange(&hostile(b"DEMO-1", &patient)), "MSA-1"),
        "AA"
    );
    while !next_line(&mut output).starts_with("EVIL") {}
    let status = common::interrupt_and_wait(&mut child);
    // The reader ends when the demo's stdout closes.
    while let Ok(line) = rx.recv_timeout(common::DEADLINE) {
        output.extend_from_slice(&line);
    }
    assert!(status.success());
    assert_terminal_safe("demo", &output, Some(MAX_TABLE_LINE));
}
