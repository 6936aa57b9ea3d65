//! `hl7-ihp send` against the real receiver over 127.0.0.1: the seed scenario in order, the
//! vitals scenario, retransmission across a receiver restart, a negative ACK counted as a
//! failure, load mode, and interop with a server we did not write (python-hl7's).

use crate::common;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{Receiver, wait_until};
use serde_json::Value;

fn send(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["send"];
    all.extend_from_slice(args);
    common::run(&all)
}

fn show_all(data_dir: &Path, patient: &str) -> Value {
    let (status, stdout, stderr) = common::run(&[
        "show",
        patient,
        "--all",
        "--json-fields",
        "full",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(status, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn seed_scenario_sends_the_prototypes_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&dir.path().join("data"), &[]);
    let to = receiver.mllp.to_string();
    let (status, stdout, stderr) = send(&["--to", &to, "--count", "6", "--interval", "0ms"]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    let lines: Vec<_> = stdout.lines().filter(|l| l.contains("glucose")).collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines.iter().all(|l| l.ends_with(" AA")), "{stdout}");
    assert!(
        lines[0].contains("glucose 182")
            && lines[1].contains("glucose 180")
            && lines[2].contains("glucose 184")
    );
    let document = show_all(&receiver.data_dir, "555-44-4444");
    let values: Vec<_> = document["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ObservationValue"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["184", "180", "182", "184", "180", "182"]);
    // Each send has its own control id (the prototype reused one).
    let ids: std::collections::BTreeSet<_> = document["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["MessageControlID"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6);
}

#[test]
fn verbatim_sends_the_prototypes_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&dir.path().join("data"), &[]);
    let to = receiver.mllp.to_string();
    let (status, stdout, _) = send(&[
        "--to",
        &to,
        "--count",
        "3",
        "--interval",
        "0ms",
        "--verbatim",
    ]);
    assert_eq!(status, 0);
    assert_eq!(stdout.matches("CNTRL-3456").count(), 3, "{stdout}");
}

#[test]
fn vitals_scenario_admits_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&dir.path().join("data"), &[]);
    let to = receiver.mllp.to_string();
    let (status, stdout, stderr) = send(&[
        "--to",
        &to,
        "--scenario",
        "vitals",
        "--patients",
        "3",
        "--count",
        "9",
        "--interval",
        "0ms",
    ]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert_eq!(stdout.matches(" CA").count(), 9, "{stdout}");
    assert_eq!(stdout.matches("ADT^A01").count(), 3, "{stdout}");
    let (_, patients, _) = common::run(&[
        "patients",
        "--data-dir",
        receiver.data_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        patients.lines().filter(|l| l.starts_with("MRN")).count(),
        3,
        "{patients}"
    );
    let document = show_all(&receiver.data_dir, "MRN00001");
    let records = document["Records"].as_array().unwrap();
    assert_eq!(records.len(), 14, "two ORU^R01 of seven vitals");
    assert_eq!(records[0]["CodingSystem"], "MDC");
    assert_eq!(records[0]["ObservationID"], "147842");
    assert!(
        records[0]["Timestamp"].as_str().unwrap().len() > 19,
        "OBX-14 carries an offset"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn unacknowledged_messages_are_sent_again_after_a_receiver_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port().to_string();
    let address = format!("127.0.0.1:{port}");
    let receiver = Receiver::start_on(&data, &address, &[]);
    let mut child = Command::new(common::binary())
        .args([
            "send",
            "--to",
            &address,
            "--count",
            "40",
            "--interval",
            "50ms",
            "--ack-timeout",
            "2s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = common::lines_of(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    // Kill the receiver once a few messages are through, then bring it back on the same port.
    while lines.len() < 5 {
        lines.push(rx.recv_timeout(common::DEADLINE).expect("a line from send"));
    }
    receiver.kill();
    let receiver = Receiver::start_on(&data, &address, &[]);
    let status = {
        let mut status = None;
        wait_until("send to finish", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    };
    lines.extend(rx.try_iter());
    assert!(status.success(), "{lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(" AA")).count(),
        40,
        "{lines:#?}"
    );
    let document = show_all(&receiver.data_dir, "555-44-4444");
    let ids: std::collections::BTreeSet<_> = document["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["MessageControlID"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        40,
        "every message stored once, retransmissions recognised"
    );
}

#[test]
fn a_negative_ack_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&dir.path().join("data"), &[]);
    let file = dir.path().join("no-control-id.hl7");
    std::fs::write(
        &file,
        b"MSH|^~\\&|DEV|WARD|||2026||ORU^R01||P|2.5\rPID|||1\r",
    )
    .unwrap();
    let to = receiver.mllp.to_string();
    let (status, stdout, _) = send(&[
        "--to",
        &to,
        "--file",
        file.to_str().unwrap(),
        "--count",
        "1",
        "--interval",
        "0ms",
    ]);
    assert_eq!(status, 1, "{stdout}");
    assert!(stdout.contains(" AE"), "{stdout}");
}

#[test]
fn load_mode_prints_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&dir.path().join("data"), &[]);
    let to = receiver.mllp.to_string();
    let (status, stdout, stderr) = send(&[
        "--to",
        &to,
        "--scenario",
        "vitals",
        "--patients",
        "20",
        "--connections",
        "4",
        "--count",
        "200",
        "--json",
    ]);
    assert_eq!(status, 0, "{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(summary["sent"], 200);
    assert_eq!(summary["acknowledged"], 200);
    assert_eq!(summary["negative"], 0);
    assert!(summary["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(summary["messages_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_folder_sends_only_its_hl7_files() {
    let (dir, receiver) = common::start(&[]);
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let message = |id: &str| common::oru(id, "FOLDER", 70);
    std::fs::write(files.join("a.hl7"), message("F-A")).unwrap();
    std::fs::write(files.join("b.hl7"), common::frame(&message("F-B"))).unwrap();
    let mut bom = b"\xEF\xBB\xBF\r\n".to_vec();
    bom.extend_from_slice(&message("F-C"));
    std::fs::write(files.join("c.txt"), bom).unwrap();
    std::fs::write(files.join("README.md"), "# Sample messages\n").unwrap();
    std::fs::write(files.join("notes.txt"), "MSH is how a message starts\n").unwrap();
    let (status, stdout, stderr) = send(&[
        "--to",
        &receiver.mllp.to_string(),
        "--file",
        files.to_str().unwrap(),
        "--count",
        "3",
        "--interval",
        "0ms",
    ]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    let lines: Vec<_> = stdout.lines().filter(|l| l.starts_with("F-")).collect();
    assert_eq!(
        lines,
        ["F-A a.hl7 AA", "F-B b.hl7 AA", "F-C c.txt AA"],
        "{stdout}"
    );
    assert!(
        stderr.contains("skipped 2 files")
            && stderr.contains("README.md")
            && stderr.contains("notes.txt"),
        "{stderr}"
    );
}

fn wait_for_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("send to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

#[test]
fn ctrl_c_sends_no_further_message() {
    let (_dir, receiver) = common::start(&[]);
    let mut child = Command::new(common::binary())
        .args([
            "send",
            "--to",
            &receiver.mllp.to_string(),
            "--count",
            "10",
            "--interval",
            "1s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = common::lines_of(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    // The first ACK; the sender now waits a second before the next message.
    while !seen.last().is_some_and(|l: &String| l.ends_with(" AA")) {
        seen.push(
            lines
                .recv_timeout(common::DEADLINE)
                .expect("a line from send"),
        );
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = wait_for_exit(&mut child);
    seen.extend(lines.iter());
    assert!(status.success(), "{seen:#?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("sent 1 · acknowledged 1 ")),
        "{seen:#?}"
    );
    let (_, messages, _) = common::run(&[
        "messages",
        "--data-dir",
        receiver.data_dir.to_str().unwrap(),
    ]);
    assert_eq!(messages.matches("accepted").count(), 1, "{messages}");
}

#[test]
fn nothing_listening_says_why_and_gives_up_with_a_summary() {
    let to = format!("127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let (status, stdout, stderr) = send(&["--to", &to, "--count", "1", "--retry-for", "2s"]);
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "gave up after {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("connection refused"), "{stderr}");
    // Said once, not on every attempt.
    assert_eq!(stderr.matches("connection refused").count(), 1, "{stderr}");
    assert!(
        stdout.contains("sent 0 · acknowledged 0 ") && stdout.contains("unacknowledged 1"),
        "{stdout}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let (status, _, stderr) = send(&["--interval", "soon"]);
    assert_eq!(status, 2);
    assert!(
        stderr.starts_with("hl7-ihp: invalid setting `interval` (--interval): expected a duration"),
        "{stderr}"
    );
    let (status, _, stderr) = send(&["--scenario", "nope"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("`scenario` (--scenario)"), "{stderr}");
    let (status, _, stderr) = send(&["--rate", "0"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("`rate` (--rate)"), "{stderr}");
    let (status, _, stderr) = common::run(&["demo", "--interval", "0s"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("`interval` (--interval)"), "{stderr}");
}

#[test]
fn interop_with_python_hl7_mllp_server() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers/python_hl7_server.py");
    let available = crate::common::runs("python3", &["-c", "import hl7.mllp"]);
    if !crate::common::peer_present("interop test", available, "python-hl7", "pip install hl7") {
        return;
    }
    let mut server = Command::new("python3")
        .arg(&script)
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let to = format!("127.0.0.1:{}", port.trim());
    let (status, stdout, stderr) = send(&[
        "--to",
        &to,
        "--scenario",
        "vitals",
        "--patients",
        "2",
        "--count",
        "6",
        "--interval",
        "0ms",
    ]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert_eq!(stdout.matches(" AA").count(), 6, "{stdout}");
}
