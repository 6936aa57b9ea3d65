//! `hl7-ihp demo` through the real binary: it starts a receiver and monitors, shows their
//! vitals, and stops cleanly on Ctrl+C (SIGINT).

use crate::common;
use std::process::{Command, Stdio};

#[test]
fn demo_shows_vitals_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, rx) = common::spawn_demo(&data, "3", "100ms");
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
    assert!(common::interrupt_and_wait(&mut child).success());
    assert!(data.join("patients/patient_MRN00001.json").exists());
}

/// The observation count of each `MRN…` row, the last row of each patient winning.
fn counts(output: &str, column_from_end: bool) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for line in output.lines().filter(|l| l.starts_with("MRN")) {
        let cells: Vec<_> = line.split_whitespace().collect();
        let cell = if column_from_end {
            cells[cells.len() - 1]
        } else {
            cells[1]
        };
        counts.insert(cells[0].to_owned(), cell.parse().unwrap());
    }
    counts
}

/// The `patients` table of a data directory: observations by patient.
fn stored_counts(data: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let (status, stdout, stderr) = common::run(&["patients", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(status, 0, "{stderr}");
    counts(&stdout, false)
}

#[test]
fn the_last_table_shows_the_final_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, rx) = common::spawn_demo(&data, "2", "10ms");
    let mut seen = String::new();
    // Stop once the store is ahead of the table printed last: the monitors went on sending.
    common::wait_until("the store to move past the table", || {
        seen.extend(rx.try_iter().map(|l| l + "\n"));
        let shown = counts(&seen, true);
        shown.len() == 2 && data.exists() && {
            let stored = stored_counts(&data);
            shown
                .iter()
                .any(|(patient, n)| stored.get(patient).is_some_and(|s| s > n))
        }
    });
    let status = common::interrupt_and_wait(&mut child);
    while let Ok(line) = rx.recv_timeout(common::DEADLINE) {
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(status.success(), "{seen}");
    assert_eq!(counts(&seen, true), stored_counts(&data), "{seen}");
    let totals = seen
        .lines()
        .rev()
        .find(|l| l.starts_with("messages sent"))
        .unwrap();
    let numbers: Vec<u64> = totals
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(
        numbers[0], numbers[1],
        "every message sent was acknowledged: {totals}"
    );
}

#[test]
fn a_failed_start_leaves_no_temporary_folder() {
    let temp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let output = Command::new(common::binary())
        .args(["demo", "--listen", &listen, "--http", "off"])
        .env("TMPDIR", temp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let left: Vec<_> = std::fs::read_dir(temp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name.to_string_lossy().starts_with("hl7-ihp-demo-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(taken);
}

#[test]
fn the_demo_names_its_dashboard_and_the_dashboard_answers_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::binary())
        .args(["demo", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--patients", "2", "--interval", "100ms", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rx = common::lines_of(child.stdout.take().unwrap());
    let mut seen = String::new();
    let address = loop {
        let line = rx
            .recv_timeout(common::DEADLINE)
            .unwrap_or_else(|_| panic!("demo output so far: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.trim().strip_prefix("dashboard") {
            let url = rest.split_whitespace().next().unwrap();
            let address = url
                .strip_prefix("http://")
                .and_then(|a| a.strip_suffix('/'))
                .unwrap_or_else(|| panic!("{line}"));
            break address.parse::<std::net::SocketAddr>().unwrap();
        }
    };
    let (status, head, body) = common::http_get_with(address, "/", "");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("text/html"), "{head}");
    assert!(
        body.contains("<html") || body.contains("<!doctype html"),
        "{body}"
    );
    // The API the demo names answers there too, with the demo's monitors.
    common::wait_until("the demo's patients in the API", || {
        let (status, _, body) = common::http_get_with(address, "/api/v1/patients", "");
        status == 200 && body.contains("MRN00002")
    });
    assert!(common::interrupt_and_wait(&mut child).success());
}
