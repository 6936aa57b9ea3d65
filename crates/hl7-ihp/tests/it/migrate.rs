//! `hl7-ihp migrate`: a SQLite store filled by the real receiver (accepted, refused and
//! repeated frames, a merge, an alarm, a message without a patient) copied into PostgreSQL
//! reads back the same through `messages`, `patients` and `show`; a receiver on the copy
//! answers a retransmission of a migrated message as a duplicate and gives new messages
//! higher ids; a copy killed with SIGKILL continues when run again, nothing doubled; a
//! target that holds other data, and a data directory a receiver holds, are refused.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{self, Client, ack_field, oru, sample, wait_until};
use crate::pg_server::{self, TestServer};

fn adt_merge(event: &str, control_id: &str, survivor: &str, prior: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|ADT|HOSP|HL7IHP|IHP|20261126110000||ADT^{event}^ADT_A39|{control_id}|P|2.5\r\
         EVN|{event}|20261126110000\r\
         PID|||{survivor}||Doe^Jane||19700101|F\r\
         MRG|{prior}\r"
    )
    .into_bytes()
}

fn run_ok(args: &[&str]) -> String {
    let (code, out, err) = common::run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

fn count(server: &TestServer, db: &str, sql: &str) -> i64 {
    server.psql(db, sql).parse().unwrap()
}

/// The migration's progress in the target, 0 before its tables or row exist.
fn through(server: &TestServer, db: &str) -> i64 {
    if server.psql(db, "SELECT to_regclass('meta') IS NOT NULL") != "t" {
        return 0;
    }
    server
        .psql(
            db,
            "SELECT coalesce((SELECT value FROM meta WHERE name = 'migrate:through'), 0)",
        )
        .parse()
        .unwrap()
}

/// The PostgreSQL store's readers do not show merges yet (its merges come in their own
/// part of the work): the copy has the merge (`patient_merges`, counted), the listings
/// are compared without its note.
fn without_merge_notes(text: &str) -> String {
    text.replace("  merge MIG-A → MIG-B", "")
}

/// What each inspection command prints for a store.
fn inspected(store: &[&str]) -> Vec<String> {
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(store);
        run_ok(&all)
    };
    vec![
        with(&["messages", "--limit", "0"]),
        with(&["patients"]),
        with(&["show", "MIG-B", "--all", "--json-fields", "full"]),
        with(&["show", "7012345", "--all", "--json-fields", "full"]),
    ]
}

#[test]
fn a_sqlite_store_moves_to_postgres_whole_and_a_receiver_there_carries_on() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let (_dir, receiver) = common::start(&["--json-min-interval", "0s"]);
    let data = receiver.data_dir.clone();
    let mut client = Client::connect(receiver.mllp);
    for n in 0..6 {
        let patient = if n % 2 == 0 { "MIG-A" } else { "MIG-B" };
        let ack = client.exchange(&oru(&format!("MIG-{n}"), patient, 60 + n));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
    }
    // A merge the wrong way round (an error), then A into B.
    let ack = client.exchange(&adt_merge("A40", "MM-0", "MIG-A", "MIG-NEW"));
    assert_eq!(ack_field(&ack, "MSA-1"), "AE");
    let ack = client.exchange(&adt_merge("A40", "MM-1", "MIG-B^^^HOSP", "MIG-A^^^HOSP"));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    // Junk, twice: one rejected row that counts two frames.
    for _ in 0..2 {
        let ack = client.exchange(b"this is not HL7");
        assert_eq!(ack_field(&ack, "MSA-1"), "AR");
    }
    // An alarm, and messages without a patient.
    let ack = client.exchange(&sample("devices/masimo-r40-alarm.hl7"));
    assert_eq!(ack_field(&ack, "MSA-1"), "CA");
    client.exchange(&sample("devices/pcd01-no-pid.hl7"));
    client.exchange(&sample("devices/masimo-r40-alarm-no-patient.hl7"));
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    let sqlite = ["--data-dir", data.to_str().unwrap()];
    let before = inspected(&sqlite);

    let db = server.create_database();
    let url = server.url(&db);
    let (code, out, err) =
        common::run(&["migrate", "--from", data.to_str().unwrap(), "--to", &url]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("verified") && !out.contains("DIFFERS"),
        "{out}"
    );
    for name in [
        "messages accepted",
        "messages rejected",
        "alarms",
        "patient merges",
    ] {
        assert!(out.contains(name), "{out}");
    }
    assert!(err.contains("messages (100%)"), "{err}");
    assert_eq!(count(server, &db, "SELECT count(*) FROM patient_merges"), 1);
    assert_eq!(count(server, &db, "SELECT count(*) FROM alarms"), 2);
    assert_eq!(
        count(
            server,
            &db,
            "SELECT sum(n_received) FROM messages WHERE outcome = 'rejected'"
        ),
        2
    );
    assert!(count(server, &db, "SELECT count(*) FROM export_files") > 0);

    // The inspection commands read the same store on either side.
    let postgres = ["--store", url.as_str()];
    let after = inspected(&postgres);
    for (sqlite_text, postgres_text) in before.iter().zip(&after) {
        assert_eq!(
            without_merge_notes(sqlite_text),
            without_merge_notes(postgres_text)
        );
    }
    // Running it again changes nothing and verifies again.
    let (code, out, err) =
        common::run(&["migrate", "--from", data.to_str().unwrap(), "--to", &url]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(inspected(&postgres), after);

    // A receiver on the copy: a migrated message sent again is a duplicate, new ones get
    // higher ids.
    let n_before = count(server, &db, "SELECT count(*) FROM messages");
    let max_before = count(server, &db, "SELECT max(id) FROM messages");
    let (_pg_dir, receiver) = common::start(&["--store", &url]);
    let mut client = Client::connect(receiver.mllp);
    let ack = client.exchange(&oru("MIG-1", "MIG-B", 61));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
    assert_eq!(
        count(server, &db, "SELECT count(*) FROM messages"),
        n_before
    );
    let ack = client.exchange(&oru("MIG-NEW-1", "MIG-B", 70));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    assert_eq!(
        count(
            server,
            &db,
            "SELECT min(id) FROM messages WHERE control_id = 'MIG-NEW-1'"
        ),
        max_before + 1
    );
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    // Now the copy is in use: another run refuses to touch it.
    let (code, _, err) = common::run(&["migrate", "--from", data.to_str().unwrap(), "--to", &url]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("stored new messages since"), "{err}");
}

fn fill(data: &Path, n: u32) {
    let receiver = common::Receiver::start(data, &[]);
    let mut client = Client::connect(receiver.mllp);
    for i in 0..n {
        let ack = client.exchange(&oru(&format!("R-{i}"), &format!("RES-{}", i % 7), i));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
    }
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn a_migration_killed_with_sigkill_continues_where_it_stopped() {
    let Some(server) = pg_server::server() else {
        return;
    };
    const N: i64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data, N as u32);
    let db = server.create_database();
    let url = server.url(&db);
    // Slowed down (50 messages a second in batches of 10), so that it is still copying
    // when it is killed.
    let mut child = Command::new(common::binary())
        .args(["migrate", "--from", data.to_str().unwrap(), "--to", &url])
        .args(["--batch", "10", "--max-rate", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a few batches committed", || through(server, &db) >= 30);
    child.kill().unwrap();
    child.wait().unwrap();
    let stopped_at = through(server, &db);
    assert!(stopped_at < N, "the copy finished before it was killed");
    // Whole batches only: what was copied is exactly the messages up to the mark.
    assert_eq!(
        count(server, &db, "SELECT count(*) FROM messages"),
        stopped_at
    );
    assert_eq!(
        count(server, &db, "SELECT max(id) FROM messages"),
        stopped_at
    );

    let (code, out, err) =
        common::run(&["migrate", "--from", data.to_str().unwrap(), "--to", &url]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("continued after message {stopped_at}")),
        "{out}"
    );
    assert!(!out.contains("DIFFERS"), "{out}");
    assert_eq!(count(server, &db, "SELECT count(*) FROM messages"), N);
    assert_eq!(
        count(server, &db, "SELECT count(DISTINCT id) FROM messages"),
        N
    );
    assert_eq!(count(server, &db, "SELECT count(*) FROM message_keys"), N);
    assert_eq!(
        count(
            server,
            &db,
            "SELECT value FROM counters WHERE name = 'message_id'"
        ),
        N
    );
    let sqlite = run_ok(&[
        "messages",
        "--limit",
        "0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let postgres = run_ok(&["messages", "--limit", "0", "--store", &url]);
    assert_eq!(sqlite, postgres);
}

#[test]
fn a_target_with_other_data_and_a_running_receivers_store_are_refused() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fill(&data, 3);

    // A database a receiver already stores into.
    let db = server.create_database();
    let url = server.url(&db);
    let (_pg_dir, receiver) = common::start(&["--store", &url]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("OTHER-1", "OTHER", 1)), "MSA-1"),
        "AA"
    );
    drop(client);
    let _ = receiver.terminate();
    let (code, _, err) = common::run(&["migrate", "--from", data.to_str().unwrap(), "--to", &url]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already holds an hl7-ihp store (messages)"),
        "{err}"
    );
    assert_eq!(count(server, &db, "SELECT count(*) FROM messages"), 1);

    // A data directory its receiver still holds.
    let receiver = common::Receiver::start(&data, &[]);
    let fresh = server.url(&server.create_database());
    let (code, _, err) =
        common::run(&["migrate", "--from", data.to_str().unwrap(), "--to", &fresh]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds the data directory"), "{err}");
    let _ = receiver.terminate();
    // A URL that is not PostgreSQL's.
    let (code, _, err) =
        common::run(&["migrate", "--from", data.to_str().unwrap(), "--to", "x.db"]);
    assert_eq!(code, 2, "{err}");
}
