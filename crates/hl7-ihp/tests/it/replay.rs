//! `hl7-ihp replay`: a message refused under one setting replays once stored with its link
//! after the setting is fixed, and never twice; dry runs change nothing; a running receiver
//! holds the directory; `--to` sends to another receiver (plain or mutual TLS) and reports
//! its answers.

use std::path::Path;

use crate::common::{self, Client, Receiver, ack_field, messages_table, oru, run, start};
use crate::pki::Pki;

/// Under the limit the first receiver runs with, a short message that it accepts.
fn short(control_id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|TESTDEV|WARD|||20261126101500||ORU^R01|{control_id}|P|2.5\rPID|||P9\r")
        .into_bytes()
}

/// The messages table as (id, control id, outcome, replay_of), in id order.
fn rows(data_dir: &Path) -> Vec<(i64, String, String, Option<i64>)> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("hl7-ihp.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = conn
        .prepare("SELECT id, control_id, outcome, replay_of FROM messages ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A receiver that refuses `oru` for its size (`--max-frame-bytes 200`: the frame is kept
/// whole, as it is under 64 KiB) and accepts `short`; the two were sent to it.
fn refusing_receiver() -> (tempfile::TempDir, Receiver) {
    let (dir, receiver) = start(&["--max-frame-bytes", "200"]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("R1", "P1", 72)), "MSA-1"),
        "AR"
    );
    assert_eq!(ack_field(&client.exchange(&short("S1")), "MSA-1"), "AA");
    (dir, receiver)
}

fn replay(data_dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let data_dir = data_dir.to_str().unwrap();
    let mut args = vec!["replay", "--data-dir", data_dir];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn a_refused_message_replays_once_after_its_setting_is_fixed() {
    let (_dir, receiver) = refusing_receiver();
    let data_dir = receiver.data_dir.clone();

    // The receiver holds the directory: a local replay says who and what to do instead.
    let (code, _, stderr) = replay(&data_dir, &["--rejected"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", receiver.pid())),
        "{stderr}"
    );
    assert!(stderr.contains("--to"), "{stderr}");
    let (status, _) = receiver.terminate();
    assert!(status.success());
    let before = rows(&data_dir);
    assert_eq!(before.len(), 2);
    assert_eq!(before[0].2, "rejected");

    // A dry run says what would happen and changes nothing.
    let (code, stdout, stderr) = replay(&data_dir, &["--rejected", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#1 ORU^R01 ctl=R1 → would be stored as new (AA)"),
        "{stdout}"
    );
    assert!(stdout.contains("dry run: nothing changed"), "{stdout}");
    assert_eq!(rows(&data_dir), before);

    // With the setting still as it was, it is refused again and nothing is stored.
    let (code, stdout, stderr) = replay(&data_dir, &["--rejected", "--max-frame-bytes", "200"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#1 ORU^R01 ctl=R1 → still refused (rejected, AR): frame of"),
        "{stdout}"
    );
    assert_eq!(rows(&data_dir), before);

    // Fixed (the default limit): stored as a new accepted message that names its original.
    let (code, stdout, stderr) = replay(&data_dir, &["--rejected"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#1 ORU^R01 ctl=R1 → stored as #3 (AA)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 selected, 1 stored"), "{stdout}");
    let after = rows(&data_dir);
    assert_eq!(after.len(), 3);
    assert_eq!(after[2], (3, "R1".into(), "accepted".into(), Some(1)));

    // Replaying twice stores nothing twice: the refused original was replayed already, and
    // accepted messages (the device's and the replay) are duplicates of themselves.
    let (code, stdout, stderr) = replay(&data_dir, &["--rejected"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#1 ORU^R01 ctl=R1 → already replayed as #3"),
        "{stdout}"
    );
    let (code, stdout, stderr) = replay(&data_dir, &["--since", "1h"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#1 ORU^R01 ctl=R1 → already replayed as #3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("#2 ORU^R01 ctl=S1 → duplicate of #2, nothing stored (AA)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("#3 ORU^R01 ctl=R1 → duplicate of #3, nothing stored (AA)"),
        "{stdout}"
    );
    let (code, stdout, _) = replay(&data_dir, &["--id", "2", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("#2 ORU^R01 ctl=S1 → would be a duplicate of #2"),
        "{stdout}"
    );
    assert_eq!(rows(&data_dir), after);

    // The link, both ways, in `messages`; the patient is the replay's.
    let (code, stdout, _) = run(&["messages", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("(replay of #1)"), "{stdout}");
    assert!(stdout.contains("(replayed as #3)"), "{stdout}");
    let (_, stdout, _) = run(&["patients", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(stdout.contains("P1"), "{stdout}");

    // An unknown id says so; no selector is a usage error.
    let (code, _, stderr) = replay(&data_dir, &["--id", "99"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no message #99"), "{stderr}");
    let (code, _, _) = replay(&data_dir, &[]);
    assert_eq!(code, 2);
    let (code, _, stderr) = replay(&data_dir, &["--since", "yesterday"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid --since"), "{stderr}");
    assert_eq!(rows(&data_dir), after);

    // The patient file takes the replayed message when a receiver next runs on the store.
    let receiver = Receiver::start(&data_dir, &[]);
    let file = data_dir.join("patients/patient_P1.json");
    common::wait_until("the replayed message in the patient file", || {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|document| document["Records"].as_array().is_some_and(|r| r.len() == 2))
    });
    drop(receiver);
}

#[test]
fn replay_to_another_receiver_reports_its_answers() {
    // The first receiver keeps running: `--to` only reads its store.
    let (dir, first) = refusing_receiver();
    // Over 64 KiB: only its head is kept, so it cannot be replayed.
    let mut client = Client::connect(first.mllp);
    let big = oru("BIG", "P2", 70).repeat(300);
    assert_eq!(ack_field(&client.exchange(&big), "MSA-1"), "AR");
    let (_other_dir, second) = start(&[]);
    let to = second.mllp.to_string();
    let report = first.data_dir.with_file_name("report.jsonl");

    let (code, stdout, stderr) = replay(&first.data_dir, &["--rejected", "--to", &to, "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("#1 ORU^R01 ctl=R1 → would be sent to {to}")),
        "{stdout}"
    );

    let (code, stdout, stderr) = replay(
        &first.data_dir,
        &[
            "--rejected",
            "--to",
            &to,
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("#1 ORU^R01 ctl=R1 → {to} answered AA")),
        "{stdout}"
    );
    assert!(
        stdout.contains("#3 ORU^R01 ctl=BIG → not replayable: only the first 65536 of its"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 selected, 1 answered (0 negative), 0 failed, 1 not replayable"),
        "{stdout}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["result"], "not_replayable");
    assert_eq!(lines[0]["original"], 1);
    assert_eq!(lines[0]["control_id"], "R1");
    assert_eq!(lines[0]["ack_code"], "AA");
    assert_eq!(lines[0]["target"], to.as_str());

    // The second receiver stored the bytes as they were; the first store is unchanged.
    let (code, stdout, _) = run(&["messages", "--data-dir", second.data_dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("R1"), "{stdout}");
    assert_eq!(rows(&first.data_dir).len(), 3);

    // Sent again, it is a retransmission there: acknowledged, not stored twice.
    let (code, stdout, _) = replay(&first.data_dir, &["--rejected", "--to", &to]);
    assert_eq!(code, 0);
    assert!(stdout.contains("answered AA"), "{stdout}");
    let second_dir = second.data_dir.clone();
    let (status, _) = second.terminate();
    assert!(status.success());
    assert_eq!(rows(&second_dir).len(), 1);

    // A receiver that is not there: a failure of the work, exit 1.
    drop(first);
    let (code, stdout, _) = replay(&dir.path().join("data"), &["--rejected", "--to", &to]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("not delivered"), "{stdout}");
}

#[test]
fn replay_to_a_mutual_tls_receiver_presents_our_certificate() {
    let (dir, first) = refusing_receiver();
    let pki = Pki::new(&dir.path().join("pki"));
    let second = Receiver::start_listening(
        &dir.path().join("second"),
        "off",
        &[&["--listen-tls", "127.0.0.1:0"][..], &pki.listener_flags()].concat(),
    );
    let to = second.mllp_tls.expect("a TLS listener").to_string();
    let tls = [
        "--to-tls",
        "--to-tls-ca",
        pki.ca(),
        "--to-tls-cert",
        pki.device.cert(),
        "--to-tls-key",
        pki.device.key(),
    ];
    let (code, stdout, stderr) = replay(
        &first.data_dir,
        &[&["--rejected", "--to", &to][..], &tls].concat(),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("#1 ORU^R01 ctl=R1 → {to} answered AA")),
        "{stdout}"
    );
    let table = messages_table(&second.data_dir);
    assert!(table.contains("[TLS CN=monitor-7"), "{table}");

    // Without our certificate the receiver refuses the connection: not delivered, exit 1.
    let (code, stdout, _) = replay(
        &first.data_dir,
        &[
            "--rejected",
            "--to",
            &to,
            "--to-tls",
            "--to-tls-ca",
            pki.ca(),
        ],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("not delivered"), "{stdout}");
    // A TLS file without --to-tls is a usage error.
    let (code, _, _) = replay(&first.data_dir, &["--rejected", "--to-tls-ca", pki.ca()]);
    assert_eq!(code, 2);
}

/// A patient merge the store refuses when it is replayed (here: into a patient merged away
/// since) is kept as an error linked to its original, as a device's would be; that kept
/// result is itself refused, and a second replay of the refused messages stores nothing.
#[test]
fn a_merge_the_store_refuses_on_replay_is_kept_once() {
    let (_dir, receiver) = start(&[]);
    let data_dir = receiver.data_dir.clone();
    let mut client = Client::connect(receiver.mllp);
    let merge = |control_id: &str, survivor: &str, prior: &str| {
        format!(
            "MSH|^~\\&|ADT|HOSP|HL7IHP|IHP|20261126110000||ADT^A40^ADT_A39|{control_id}|P|2.5\r\
             EVN|A40|20261126110000\rPID|||{survivor}||Doe^Jane||19700101|F\rMRG|{prior}\r"
        )
        .into_bytes()
    };
    for (message, code) in [
        (oru("A1", "A", 70), "AA"),
        (oru("B1", "B", 71), "AA"),
        (oru("C1", "C", 72), "AA"),
        // A into C: both known, so the merge is made.
        (merge("M1", "C", "A"), "AA"),
        // A was merged away: a merge into it is refused by the store.
        (merge("M2", "A", "B"), "AE"),
    ] {
        assert_eq!(ack_field(&client.exchange(&message), "MSA-1"), code);
    }
    drop(client);
    let (status, _) = receiver.terminate();
    assert!(status.success());
    let before = rows(&data_dir);
    assert_eq!(before.len(), 5);
    assert_eq!(before[4].2, "error");

    let (code, stdout, stderr) = replay(&data_dir, &["--rejected"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#5 ADT^A40 ctl=M2 → kept as #6, refused (AE)"),
        "{stdout}"
    );
    let after = rows(&data_dir);
    assert_eq!(after.len(), 6);
    assert_eq!(after[5], (6, "M2".into(), "error".into(), Some(5)));

    // Again: the original was replayed, and the kept result is a replay itself.
    let (code, stdout, stderr) = replay(&data_dir, &["--rejected"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#5 ADT^A40 ctl=M2 → already replayed as #6"),
        "{stdout}"
    );
    assert!(
        stdout.contains("#6 ADT^A40 ctl=M2 → is a replay of #5, not replayed again"),
        "{stdout}"
    );
    assert_eq!(rows(&data_dir), after);
}
