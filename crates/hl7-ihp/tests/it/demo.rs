//! `hl7-ihp demo` through the real binary: it starts a receiver and monitors, shows their
//! vitals, and stops cleanly on Ctrl+C (SIGINT).

use crate::common;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

#[test]
fn demo_shows_vitals_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(common::binary())
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "off",
            "--patients",
            "3",
            "--interval",
            "100ms",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    // A row per patient with a heart rate: "MRN00001   Åsa Lindqvist ...  72 ...".
    while !(seen.contains("MRN00001") && seen.contains("MRN00003") && seen.contains("JSON files")) {
        let line = rx
            .recv_timeout(common::DEADLINE)
            .unwrap_or_else(|_| panic!("demo output so far: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    let row = seen
        .lines()
        .rev()
        .find(|l| l.starts_with("MRN00001"))
        .unwrap()
        .to_owned();
    assert!(
        row.split_whitespace()
            .any(|cell| cell.trim_end_matches(['↑', '↓']).parse::<f64>().is_ok()),
        "{row}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let mut status = None;
    common::wait_until("the demo to stop", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    assert!(data.join("patients/patient_MRN00001.json").exists());
}
