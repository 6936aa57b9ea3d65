//! Retention: `receive --retention` under steady load removes what is older than the window
//! and nothing else (every message acknowledged ends up in the patient files, every message
//! inside the window is still stored), and the database stops growing; `hl7-ihp purge` and
//! its `--dry-run` on a stopped store, and refused while a receiver holds the directory.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{self, Client, DEADLINE, ack_field, metric, run, start, wait_until};

/// The window of the load test.
const RETENTION_S: i64 = 6;
/// How long the load runs: several windows.
const LOAD: Duration = Duration::from_secs(30);
/// Connections sending during the load, each paced to [`PER_SECOND`] messages a second.
const N_CONNECTIONS: usize = 4;
const PER_SECOND: u32 = 150;
/// A message acknowledged this long after the window's start must still be stored (its
/// time received is at most its ACK's latency before the ACK).
const MARGIN_MS: i64 = 3_000;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A vitals ORU with MSH-7 now (so that duplicate keys settle as in real traffic).
fn vitals(control_id: &str, patient: &str, value: u32) -> Vec<u8> {
    let now = jiff::Timestamp::now().strftime("%Y%m%d%H%M%S%.3f+0000");
    format!(
        "MSH|^~\\&|TESTDEV|WARD|HL7IHP|IHP|{now}||ORU^R01|{control_id}|P|2.5\rPID|||{patient}^^^HOSP^MR||Doe^Jane||19700101|F\rOBR|1||X|Y|||{now}\rOBX|1|NM|8867-4^Heart rate^LN||{value}|/min|60-100|N|||F|||{now}\rOBX|2|NM|59408-5^SpO2^LN||97|%|90-100|N|||F|||{now}\r"
    )
    .into_bytes()
}

fn database(data: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("hl7-ihp.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(DEADLINE).unwrap();
    conn
}

fn count(conn: &rusqlite::Connection, sql: &str, value: i64) -> i64 {
    conn.query_row(sql, [value], |row| row.get(0)).unwrap()
}

/// Control ids of the messages received at or after `since_ms`.
fn stored_since(conn: &rusqlite::Connection, since_ms: i64) -> HashSet<String> {
    let mut statement = conn
        .prepare("SELECT control_id FROM messages WHERE received_ms >= ?1")
        .unwrap();
    statement
        .query_map([since_ms], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The database's size as the writer sees it (WAL included): pages in use and free.
fn pages(conn: &rusqlite::Connection) -> (i64, i64) {
    let total: i64 = conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    let free: i64 = conn
        .query_row("PRAGMA freelist_count", [], |row| row.get(0))
        .unwrap();
    (total, free)
}

#[test]
fn retention_under_load_removes_only_old_exported_messages_and_reuses_space() {
    let (_dir, receiver) = start(&[
        "--retention",
        &format!("{RETENTION_S}s"),
        "--patient-files",
        "ndjson",
        "--json-fields",
        "full",
    ]);
    let data = receiver.data_dir.clone();
    let stop = Arc::new(AtomicBool::new(false));
    // (control id, wall time of its ACK in ms)
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let started = Instant::now();
    let senders: Vec<_> = (0..N_CONNECTIONS)
        .map(|c| {
            let (stop, acked, address) = (Arc::clone(&stop), Arc::clone(&acked), receiver.mllp);
            std::thread::spawn(move || {
                let mut client = Client::connect(address);
                let pace = Duration::from_secs(1) / PER_SECOND;
                for n in 0u32.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Paced from the start: a slow machine falls behind instead of bursting.
                    if let Some(wait) = (started + pace * n).checked_duration_since(Instant::now())
                    {
                        std::thread::sleep(wait);
                    }
                    let id = format!("R{c}-{n}");
                    let ack = client.exchange(&vitals(&id, &format!("P{c}{}", n % 5), 60 + n % 40));
                    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
                    acked.lock().unwrap().push((id, now_ms()));
                }
            })
        })
        .collect();

    // While it runs: every second, the size, and that every message inside the window is
    // still there.
    let mut sizes: Vec<(Duration, i64, i64, i64)> = Vec::new();
    let mut n_checked = 0;
    while started.elapsed() < LOAD {
        std::thread::sleep(Duration::from_secs(1));
        let now = now_ms();
        let inside: Vec<String> = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at >= now - RETENTION_S * 1000 + MARGIN_MS)
            .map(|(id, _)| id.clone())
            .collect();
        let conn = database(&data);
        let stored = stored_since(&conn, 0);
        let missing: Vec<&String> = inside.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "{} messages inside the window are gone, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        n_checked += inside.len();
        let (total, free) = pages(&conn);
        sizes.push((started.elapsed(), total, free, stored.len() as i64));
    }
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(n_checked > 0);

    // The load's messages older than the window go (the last ones once their keys and
    // index entries are written out, within seconds).
    let end = now_ms();
    wait_until("the load's messages to be removed", || {
        count(
            &database(&data),
            "SELECT count(*) FROM messages WHERE received_ms < ?1",
            end,
        ) == 0
    });
    let (_, metrics) = receiver.http_get("/metrics");
    let purged = metric(&metrics, "hl7ihp_purged_messages_total").unwrap();
    assert_eq!(purged, acked.len() as i64, "{metrics}");
    assert!(metric(&metrics, "hl7ihp_purge_runs_total").unwrap() > 0);
    assert!(metric(&metrics, "hl7ihp_purge_last_run_timestamp_seconds").unwrap() > 0);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");

    // Nothing acknowledged was removed before the patient files held it.
    let mut in_files = HashSet::new();
    for entry in std::fs::read_dir(data.join("patients")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ndjson") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(id) = record["MessageControlID"].as_str() {
                    in_files.insert(id.to_owned());
                }
            }
        }
    }
    let lost: Vec<&String> = acked
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !in_files.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages are in no patient file, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    // Space is reused: once the window is full, the database stops growing.
    for (at, total, free, rows) in &sizes {
        eprintln!(
            "{:>5.1} s: {total} pages ({free} free), {rows} messages",
            at.as_secs_f64()
        );
    }
    eprintln!("{} messages acknowledged, {purged} removed", acked.len());
    let steady = |from: f64, to: f64| {
        sizes
            .iter()
            .filter(|(at, ..)| (from..to).contains(&(at.as_secs_f64() / LOAD.as_secs_f64())))
            .map(|(_, total, ..)| *total)
            .max()
            .unwrap()
    };
    let (middle, last) = (steady(0.4, 0.6), steady(0.8, 1.01));
    assert!(
        last <= middle + middle / 3 + 128,
        "the database grew from {middle} to {last} pages under steady load"
    );
}

/// The MessageControlID key of the full records, as the NDJSON files write it.
#[test]
fn full_records_name_their_control_id() {
    // Guards the load test's reading of the files: the key it looks for is the one written.
    let (_dir, receiver) = start(&["--patient-files", "ndjson", "--json-fields", "full"]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&vitals("K1", "PK", 70)), "MSA-1"),
        "AA"
    );
    let data = receiver.data_dir.clone();
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    let text = std::fs::read_to_string(data.join("patients/patient_PK.ndjson")).unwrap();
    assert!(text.contains("\"MessageControlID\":\"K1\""), "{text}");
}

#[test]
fn purge_dry_run_and_purge_on_a_stopped_store() {
    let (_dir, receiver) = start(&[]);
    let data = receiver.data_dir.clone();
    let data_arg = data.to_str().unwrap().to_owned();
    let mut client = Client::connect(receiver.mllp);
    for n in 0..20 {
        let ack = client.exchange(&vitals(&format!("D{n}"), "PD", 60 + n));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    }
    // A refused frame: no MSH.
    let ack = client.exchange(b"garbage");
    assert_eq!(ack_field(&ack, "MSA-1"), "AR");
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();

    // While the receiver holds the directory: refused, naming it.
    let (code, _, stderr) = run(&["purge", "--before", &later, "--data-dir", &data_arg]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", receiver.pid())) && stderr.contains("--retention"),
        "{stderr}"
    );
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");

    let n_messages = || {
        count(
            &database(&data),
            "SELECT count(*) FROM messages WHERE id > ?1",
            0,
        )
    };
    // Counted, nothing removed.
    let (code, stdout, stderr) = run(&[
        "purge",
        "--before",
        &later,
        "--rejected-before",
        "1h",
        "--dry-run",
        "--data-dir",
        &data_arg,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("purge: would remove 20 accepted messages and 0 refused frames"),
        "{stdout}"
    );
    assert_eq!(n_messages(), 21);
    // With NDJSON files (never written here), nothing may go: held back, and why.
    let (code, stdout, stderr) = run(&[
        "purge",
        "--before",
        &later,
        "--patient-files",
        "ndjson",
        "--dry-run",
        "--data-dir",
        &data_arg,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("would remove 0 accepted messages")
            && stdout.contains(
                "20 older accepted messages held back: not yet in the ndjson patient files"
            ),
        "{stdout}"
    );
    // A bad time is a usage error.
    let (code, _, stderr) = run(&["purge", "--before", "yesterday", "--data-dir", &data_arg]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--before"), "{stderr}");

    // Removed: the accepted messages; the refused frame only with --rejected-before.
    let (code, stdout, stderr) = run(&["purge", "--before", &later, "--data-dir", &data_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("purge: removed 20 accepted messages and 0 refused frames"),
        "{stdout}"
    );
    assert_eq!(n_messages(), 1);
    let (code, stdout, stderr) = run(&[
        "purge",
        "--rejected-before",
        &later,
        "--data-dir",
        &data_arg,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("purge: removed 0 accepted messages and 1 refused frames"),
        "{stdout}"
    );
    assert_eq!(n_messages(), 0);
    let patients = count(
        &database(&data),
        "SELECT count(*) FROM patients WHERE id > ?1",
        0,
    );
    assert_eq!(patients, 1, "the patient's row stays");

    // A receiver started again goes on with new ids and files, and still recognises nothing
    // removed as a duplicate.
    let receiver = common::Receiver::start(&data, &[]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&vitals("D0", "PD", 1)), "MSA-1"),
        "AA"
    );
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    let min_id = count(
        &database(&data),
        "SELECT min(id) FROM messages WHERE id > ?1",
        0,
    );
    assert!(min_id > 21, "ids go on after the removed ones: {min_id}");
}
