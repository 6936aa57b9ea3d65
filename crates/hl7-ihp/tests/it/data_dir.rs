//! The data directory, end to end: one receiver at a time, the checks made before any port
//! is bound, a database file that stands alone after a clean stop, and the file system's
//! edge cases (a symlinked `patients/`, loose permissions).

use std::path::Path;

use crate::common::{self, Client, ack_field, oru, start};

/// Control ids stored in the database file `path`, read with SQLite directly.
fn control_ids_in(path: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut select = conn
        .prepare("SELECT control_id FROM messages ORDER BY id")
        .unwrap();
    select
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn after_sigterm_the_database_file_alone_holds_every_message() {
    let (dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    let ids: Vec<String> = (0..50).map(|n| format!("BACKUP-{n:03}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let ack = client.exchange(&oru(id, &format!("BK{}", n % 5), 60));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    }
    drop(client);
    let data = receiver.data_dir.clone();
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{status:?} {logs}");

    // Only the database file, copied elsewhere, as a backup would.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(data.join("hl7-ihp.sqlite3"), copy.join("hl7-ihp.sqlite3")).unwrap();
    assert_eq!(control_ids_in(&copy.join("hl7-ihp.sqlite3")), ids);
    let copy_arg = copy.to_str().unwrap();
    let (status, stdout, stderr) =
        common::run(&["messages", "--limit", "1000", "--data-dir", copy_arg]);
    assert_eq!(status, 0, "{stderr}");
    for id in &ids {
        assert!(stdout.contains(id.as_str()), "{id} missing: {stdout}");
    }
    let (status, stdout, stderr) = common::run(&["patients", "--data-dir", copy_arg]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("BK4"), "{stdout}");

    // And nothing is left in the WAL beside the original either.
    let wal = data.join("hl7-ihp.sqlite3-wal");
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_bytes, 0, "the WAL still holds frames");
}
