//! Operations on the PostgreSQL store through the real binary: a patient merge over MLLP,
//! `replay` of a refused message after its setting changed (beside the running receiver:
//! no data directory lock on PostgreSQL), `--retention` and `purge`, and the inspection
//! commands (`show`, `messages`, `patients`) with `--store` and `--store-password-file`.
//! The server is the tests' own (`pg_server`).

use std::path::Path;

use serde_json::Value;

use crate::common::{self, Client, Receiver, ack_field, oru, run, wait_until};
use crate::merge::merge;
use crate::pg_server;

/// `show KEY --all --store URL` as JSON: the control ids of its records, or `None` when the
/// command finds no such patient.
fn shown(url: &str, key: &str) -> Option<Vec<String>> {
    let (status, stdout, _) = run(&[
        "show",
        key,
        "--all",
        "--json-fields",
        "full",
        "--store",
        url,
    ]);
    if status != 0 {
        return None;
    }
    let document: Value = serde_json::from_str(&stdout).unwrap();
    Some(
        document["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["MessageControlID"].as_str().unwrap().to_owned())
            .collect(),
    )
}

fn file_records(data_dir: &Path, key: &str) -> Option<usize> {
    let text =
        std::fs::read_to_string(data_dir.join(format!("patients/patient_{key}.json"))).ok()?;
    let document: Value = serde_json::from_str(&text).ok()?;
    document["Records"].as_array().map(Vec::len)
}

#[test]
fn an_a40_over_mllp_merges_the_prior_into_the_survivor_on_postgres() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let db = server.create_database();
    let url = server.url(&db);
    let (_dir, receiver) = common::start(&["--store", &url, "--json-min-interval", "0s"]);
    let mut client = Client::connect(receiver.mllp);
    for (control_id, patient) in [("A-1", "MRG-A"), ("A-2", "MRG-A"), ("B-1", "MRG-B")] {
        let ack = client.exchange(&oru(control_id, patient, 70));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
    }
    assert_eq!(shown(&url, "MRG-A").unwrap().len(), 4);
    assert_eq!(shown(&url, "MRG-B").unwrap().len(), 2);

    // The wrong way round is refused with its reason and changes nothing.
    let ack = client.exchange(&merge("A40", "M-0", "MRG-A", "MRG-NEW"));
    assert_eq!(ack_field(&ack, "MSA-1"), "AE");
    assert!(
        ack_field(&ack, "ERR-8").contains("wrong way round"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    assert_eq!(shown(&url, "MRG-A").unwrap().len(), 4, "nothing changed");

    // A into B: accepted, the prior's records are the survivor's, the prior is gone.
    let ack = client.exchange(&merge("A40", "M-1", "MRG-B^^^HOSP", "MRG-A^^^HOSP"));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
    let mut both = shown(&url, "MRG-B").unwrap();
    both.sort();
    assert_eq!(both, ["A-1", "A-1", "A-2", "A-2", "B-1", "B-1"]);
    assert_eq!(shown(&url, "MRG-A"), None, "the prior is gone");
    assert_eq!(
        server.psql(
            &db,
            "SELECT prior_key || ' ' || survivor_key || ' ' || n_moved FROM patient_merges"
        ),
        "MRG-A MRG-B 2"
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT string_agg(m.control_id, ' ' ORDER BY m.id) FROM messages m \
             JOIN patients p ON p.id = m.patient WHERE p.key = 'MRG-B'"
        ),
        "A-1 A-2 B-1 M-1"
    );
    let (code, listed, stderr) = run(&["messages", "--store", &url]);
    assert_eq!(code, 0, "{stderr}");
    for control_id in ["M-1", "M-0", "A-1", "A-2", "B-1"] {
        assert!(listed.contains(control_id), "{control_id}: {listed}");
    }
    let (code, patients, stderr) = run(&["patients", "--store", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        patients.contains("MRG-B") && !patients.contains("MRG-A"),
        "{patients}"
    );
    // A later message under the prior identifier joins the survivor.
    let ack = client.exchange(&oru("A-3", "MRG-A", 71));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    assert_eq!(shown(&url, "MRG-B").unwrap().len(), 8);
    assert_eq!(shown(&url, "MRG-A"), None);
    // The exporter follows: the prior's file goes, the survivor's holds everything.
    let data_dir = receiver.data_dir.clone();
    wait_until("A's file gone and B's holding both", || {
        file_records(&data_dir, "MRG-A").is_none() && file_records(&data_dir, "MRG-B") == Some(8)
    });
}

/// Under the limit the receiver runs with, a short message that it accepts.
fn short(control_id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|TESTDEV|WARD|||20261126101500||ORU^R01|{control_id}|P|2.5\rPID|||P9\r")
        .into_bytes()
}

#[test]
fn a_refused_message_replays_into_postgres_beside_the_running_receiver() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let db = server.create_database();
    let url = server.url(&db);
    let (_dir, receiver) = common::start(&[
        "--store",
        &url,
        "--max-frame-bytes",
        "200",
        "--json-min-interval",
        "0s",
    ]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("R1", "P1", 72)), "MSA-1"),
        "AR"
    );
    assert_eq!(ack_field(&client.exchange(&short("S1")), "MSA-1"), "AA");
    let data_dir = receiver.data_dir.to_str().unwrap().to_owned();
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", "--store", &url, "--data-dir", &data_dir];
        args.extend_from_slice(extra);
        run(&args)
    };

    // With the setting still as it was: refused again, nothing stored. The receiver runs
    // on the same data directory: on PostgreSQL that is fine.
    let (code, stdout, stderr) = replay(&["--rejected", "--max-frame-bytes", "200"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#1 ORU^R01 ctl=R1 → still refused (rejected, AR)"),
        "{stdout}"
    );
    assert_eq!(server.psql(&db, "SELECT count(*) FROM messages"), "2");

    // Fixed (the default limit): stored as a new accepted message linked to its original.
    let (code, stdout, stderr) = replay(&["--rejected"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#1 ORU^R01 ctl=R1 → stored as #3 (AA)"),
        "{stdout}"
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT id || ' ' || control_id || ' ' || outcome || ' ' || replay_of \
             FROM messages WHERE replay_of IS NOT NULL"
        ),
        "3 R1 accepted 1"
    );
    // Never twice.
    let (code, stdout, stderr) = replay(&["--rejected"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("#1 ORU^R01 ctl=R1 → already replayed as #3"),
        "{stdout}"
    );
    assert_eq!(server.psql(&db, "SELECT count(*) FROM messages"), "3");
    let (code, listed, _) = run(&["messages", "--store", &url]);
    assert_eq!(code, 0);
    assert!(
        listed.contains("(replay of #1)") && listed.contains("(replayed as #3)"),
        "{listed}"
    );
    // The running receiver's exporter writes the replayed message into the patient file
    // once it looks at the store again: its next message wakes it (a wake-up on commits by
    // other processes is LISTEN/NOTIFY's, not this test's).
    assert_eq!(ack_field(&client.exchange(&short("S2")), "MSA-1"), "AA");
    let data = receiver.data_dir.clone();
    wait_until("the replayed message in P1's file", || {
        file_records(&data, "P1").is_some_and(|n| n > 0)
    });
}

#[test]
fn retention_and_purge_remove_old_messages_from_postgres() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let db = server.create_database();
    let url = server.url(&db);
    let (_dir, receiver) = common::start(&["--store", &url, "--retention", "2s"]);
    let mut client = Client::connect(receiver.mllp);
    for n in 0..10 {
        let ack = client.exchange(&oru(&format!("OLD{n}"), "RET", n));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
    }
    let ack = client.exchange(b"garbage");
    assert_eq!(ack_field(&ack, "MSA-1"), "AR");
    // Once exported and older than 2 s, the accepted ones go; the refused frame stays
    // (--retention-rejected is off), and so does the patient.
    wait_until("the old accepted messages purged", || {
        server.psql(
            &db,
            "SELECT count(*) FROM messages WHERE outcome = 'accepted'",
        ) == "0"
    });
    assert_eq!(server.psql(&db, "SELECT count(*) FROM messages"), "1");
    assert_eq!(server.psql(&db, "SELECT count(*) FROM message_keys"), "0");
    assert_eq!(server.psql(&db, "SELECT count(*) FROM patients"), "1");
    // New messages get new ids, never a purged one's.
    let ack = client.exchange(&oru("NEW0", "RET", 1));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    assert_eq!(
        server.psql(
            &db,
            "SELECT max(id) FROM messages WHERE control_id = 'NEW0'"
        ),
        "12"
    );

    // `hl7-ihp purge` runs beside the receiver on PostgreSQL (no data directory lock).
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let data_dir = receiver.data_dir.to_str().unwrap().to_owned();
    let (code, stdout, stderr) = run(&[
        "purge",
        "--store",
        &url,
        "--data-dir",
        &data_dir,
        "--rejected-before",
        &later,
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("purge: would remove 0 accepted messages and 1 refused frames"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(&[
        "purge",
        "--store",
        &url,
        "--data-dir",
        &data_dir,
        "--rejected-before",
        &later,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("purge: removed 0 accepted messages and 1 refused frames"),
        "{stdout}"
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT count(*) FROM messages WHERE outcome <> 'accepted'"
        ),
        "0"
    );
    drop(receiver);
}

#[test]
fn inspection_commands_take_a_password_file() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let db = server.create_database();
    // A role with a password that owns the store; the URL names the role, not the password.
    server.psql(
        "postgres",
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hl7pw') THEN \
             CREATE ROLE hl7pw LOGIN PASSWORD 's3cret-pw'; END IF; END $$; \
             ALTER DATABASE {db} OWNER TO hl7pw"
        ),
    );
    let url = server.url(&db).replace("postgres@", "hl7pw@");
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("store-password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();
    let password_file = password_file.to_str().unwrap().to_owned();
    let receiver = Receiver::start(
        &dir.path().join("data"),
        &["--store", &url, "--store-password-file", &password_file],
    );
    let mut client = Client::connect(receiver.mllp);
    for n in 0..3 {
        let ack = client.exchange(&oru(&format!("PW{n}"), "PWPAT", n));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
    }
    assert!(!receiver.logs().contains("s3cret"), "{}", receiver.logs());
    let with_file = |command: &[&str]| {
        let mut args = command.to_vec();
        args.extend_from_slice(&["--store", &url, "--store-password-file", &password_file]);
        run(&args)
    };
    let (code, out, err) = with_file(&["patients"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PWPAT"), "{out}");
    let (code, out, err) = with_file(&["messages"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PW2"), "{out}");
    let (code, out, err) = with_file(&["show", "PWPAT", "--all", "--json-fields", "full"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PW0"), "{out}");
    for output in [&out, &err] {
        assert!(!output.contains("s3cret"), "{output}");
    }
    // A password file that is not there, or with a SQLite store, is an error that says so.
    let (code, _, err) = run(&[
        "patients",
        "--store",
        &url,
        "--store-password-file",
        "/nonexistent/password",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read /nonexistent/password"), "{err}");
    let (code, _, err) = run(&[
        "patients",
        "--data-dir",
        receiver.data_dir.to_str().unwrap(),
        "--store-password-file",
        &password_file,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("needs a postgres://"), "{err}");
    drop(receiver);
}
