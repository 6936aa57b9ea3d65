//! `hl7-ihp backup`: a consistent copy taken while a receiver stores and acknowledges, an
//! existing destination refused unless `--force`, a missing database, and a copy that the
//! inspection commands read as a store.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::common::{self, Client, ack_field, oru, start, wait_until};

/// Connections that keep sending during the backup.
const N_CONNECTIONS: usize = 4;
/// At most this many messages per connection: the load is bounded however slow the backup.
const MAX_PER_CONNECTION: usize = 3_000;
/// Messages acknowledged before the backup starts.
const N_BEFORE: usize = 1_000;

fn messages_in(copy: &Path) -> HashSet<String> {
    let conn =
        rusqlite::Connection::open_with_flags(copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mut statement = conn.prepare("SELECT control_id FROM messages").unwrap();
    statement
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn backup_during_load_holds_every_message_acknowledged_before_it() {
    let (dir, receiver) = start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    // (control id, when its ACK arrived)
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let senders: Vec<_> = (0..N_CONNECTIONS)
        .map(|c| {
            let (stop, acked, address) = (Arc::clone(&stop), Arc::clone(&acked), receiver.mllp);
            std::thread::spawn(move || {
                let mut client = Client::connect(address);
                for n in 0..MAX_PER_CONNECTION {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("B{c}-{n}");
                    let ack = client.exchange(&oru(&id, &format!("P{c}"), 60 + n as u32 % 40));
                    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
                    acked.lock().unwrap().push((id, Instant::now()));
                }
            })
        })
        .collect();
    wait_until("messages acknowledged before the backup", || {
        acked.lock().unwrap().len() >= N_BEFORE
    });
    let copy = dir.path().join("copy.sqlite3");
    let started = Instant::now();
    let before: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let output = Command::new(common::binary())
        .args(["backup", "--data-dir"])
        .arg(&receiver.data_dir)
        .arg(&copy)
        .output()
        .unwrap();
    let ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("backup: {}, ", copy.display()))
            && stdout.contains(" messages, schema 11, ")
            && stdout.trim_end().ends_with("integrity ok"),
        "{stdout}"
    );
    assert!(stderr.contains("backup: 100%"), "progress lines: {stderr}");
    let acked = acked.lock().unwrap();
    let n_during = acked
        .iter()
        .filter(|(_, at)| *at > started && *at < ended)
        .count();
    eprintln!(
        "{} acknowledged before the backup, {n_during} while it ran, {} in all",
        before.len(),
        acked.len()
    );
    assert!(
        n_during > 0,
        "the receiver stopped acknowledging during the backup"
    );

    let stored = messages_in(&copy);
    let missing: Vec<_> = before.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(missing.is_empty(), "missing from the copy: {missing:?}");
    let metadata = std::fs::metadata(&copy).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    for suffix in ["-wal", "-shm", "-journal", ".partial"] {
        let side = format!("{}{suffix}", copy.display());
        assert!(!Path::new(&side).exists(), "{side} beside the copy");
    }
}

#[test]
fn an_existing_destination_is_refused_unless_forced() {
    let (dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("F-1", "P1", 70)), "MSA-1"),
        "AA"
    );
    let data_dir = receiver.data_dir.to_str().unwrap();
    let copy = dir.path().join("copy.sqlite3");
    std::fs::write(&copy, b"not a database").unwrap();
    let dest = copy.to_str().unwrap();

    let (status, stdout, stderr) = common::run(&["backup", "--data-dir", data_dir, dest]);
    assert_eq!(status, 2, "{stdout}{stderr}");
    assert!(stderr.contains("exists; use --force"), "{stderr}");
    assert_eq!(std::fs::read(&copy).unwrap(), b"not a database");

    let (status, stdout, stderr) =
        common::run(&["backup", "--force", "--data-dir", data_dir, dest]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(stdout.contains(", 1 messages, "), "{stdout}");
    assert!(messages_in(&copy).contains("F-1"));
}

#[test]
fn a_data_directory_without_a_database_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let copy = dir.path().join("copy.sqlite3");
    let (status, stdout, stderr) = common::run(&[
        "backup",
        "--data-dir",
        data_dir.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(stderr.contains("no database at"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!copy.exists());
}

#[test]
fn the_copy_is_a_store_the_inspection_commands_read() {
    let (dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    for n in 1..=3 {
        let ack = client.exchange(&oru(&format!("S-{n}"), "P1", 70 + n));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    }
    let copy = dir.path().join("copy.sqlite3");
    let (status, stdout, stderr) = common::run(&[
        "backup",
        "--data-dir",
        receiver.data_dir.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    drop(receiver);
    let (status, stdout, stderr) = common::run(&["messages", "--store", copy.to_str().unwrap()]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    for n in 1..=3 {
        assert!(stdout.contains(&format!("S-{n}")), "{stdout}");
    }
}
