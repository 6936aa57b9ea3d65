//! Durability: a receiver killed with SIGKILL at random moments under concurrent load loses
//! no acknowledged message, and a full disk gets rejects, not lost messages, until space
//! returns.
//!
//! The default suite runs 5 kill cycles; `HL7IHP_CRASH_CYCLES=100 cargo test --release -p hl7-ihp
//! --test it crash::sigkill -- --nocapture` runs the long version.

use crate::common;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Client, Receiver, ack_field, oru, wait_until};
use serde_json::Value;

const PATIENTS: usize = 4;
const SENDERS: usize = 8;

/// A small xorshift generator: the test prints its seed, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The files with every key, so their records name their messages (MessageControlID), and
/// every record, so they can be checked against everything acknowledged.
const FULL: &[&str] = &["--json-fields", "full", "--json-max-records", "0"];

/// Sends until the connection breaks; returns the control ids that were acknowledged AA.
fn send_until_broken(
    address: SocketAddr,
    sender: usize,
    cycle: usize,
    stop: &AtomicBool,
) -> Vec<String> {
    let mut acked = Vec::new();
    let Some(mut client) = Client::try_connect(address) else {
        return acked;
    };
    for n in 0.. {
        if stop.load(Ordering::Relaxed) || n > 100_000 {
            break;
        }
        let id = format!("K{cycle}-{sender}-{n}");
        let patient = format!("CRASH-{}", (sender + n) % PATIENTS);
        if !client.try_send(&oru(&id, &patient, n as u32)) {
            break;
        }
        match client.read_ack() {
            Some(ack) => {
                assert_eq!(ack_field(&ack, "MSA-2"), id);
                if ack_field(&ack, "MSA-1") == "AA" {
                    acked.push(id);
                }
            }
            None => break,
        }
    }
    acked
}

/// Starts the senders of one cycle; each adds what was acknowledged to `acked_all`.
fn spawn_senders(
    address: SocketAddr,
    cycle: usize,
    stop: &Arc<AtomicBool>,
    acked_all: &Arc<Mutex<BTreeSet<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..SENDERS)
        .map(|sender| {
            let stop = Arc::clone(stop);
            let acked_all = Arc::clone(acked_all);
            std::thread::spawn(move || {
                let acked = send_until_broken(address, sender, cycle, &stop);
                acked_all.lock().unwrap().extend(acked);
            })
        })
        .collect()
}

fn stored_control_ids(data_dir: &Path) -> BTreeSet<String> {
    let data_dir = data_dir.to_str().unwrap();
    let mut ids = BTreeSet::new();
    for patient in 0..PATIENTS {
        let (status, stdout, stderr) = common::run(&[
            "show",
            &format!("CRASH-{patient}"),
            "--all",
            "--json-fields",
            "full",
            "--data-dir",
            data_dir,
        ]);
        if status != 0 {
            assert!(stderr.contains("no patient"), "{stderr}");
            continue;
        }
        let document: Value = serde_json::from_str(&stdout).unwrap();
        for record in document["Records"].as_array().unwrap() {
            ids.insert(record["MessageControlID"].as_str().unwrap().to_owned());
        }
    }
    ids
}

/// The patient's file holds exactly what `show --all` prints.
fn files_match_the_store(data_dir: &Path, patient: usize) -> bool {
    let path = data_dir.join(format!("patients/patient_CRASH-{patient}.json"));
    let Some(file) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
    else {
        return false;
    };
    let (status, stdout, _) = common::run(&[
        "show",
        &format!("CRASH-{patient}"),
        "--all",
        "--json-fields",
        "full",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    status == 0
        && serde_json::from_str::<Value>(&stdout)
            .is_ok_and(|shown| shown["Records"] == file["Records"])
}

fn file_control_ids(data_dir: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for patient in 0..PATIENTS {
        let path = data_dir.join(format!("patients/patient_CRASH-{patient}.json"));
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let Ok(document) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for record in document["Records"].as_array().into_iter().flatten() {
            if let Some(id) = record["MessageControlID"].as_str() {
                ids.insert(id.to_owned());
            }
        }
    }
    ids
}

/// `HL7IHP_CRASH_CYCLES` (5) times: a receiver on `data` with `flags` under load from the
/// senders, killed with SIGKILL a random number of ms in `kill_after_ms` later. Returns the
/// control ids acknowledged over all cycles.
fn kill_cycles(
    what: &str,
    data: &Path,
    flags: &[&str],
    kill_after_ms: std::ops::Range<u64>,
) -> Arc<Mutex<BTreeSet<String>>> {
    let cycles: usize = std::env::var("HL7IHP_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("{what}: {cycles} cycles, seed {seed}");
    let mut rng = Rng(seed);
    let acked_all: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    for cycle in 0..cycles {
        let receiver = Receiver::start(data, flags);
        let stop = Arc::new(AtomicBool::new(false));
        let senders = spawn_senders(receiver.mllp, cycle, &stop, &acked_all);
        let before = acked_all.lock().unwrap().len();
        let span = kill_after_ms.end - kill_after_ms.start;
        let delay = Duration::from_millis(kill_after_ms.start + rng.next() % span);
        std::thread::sleep(delay);
        receiver.kill();
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            sender.join().expect("sender");
        }
        let after = acked_all.lock().unwrap().len();
        eprintln!(
            "cycle {cycle}: killed after {delay:?}, {} acknowledged",
            after - before
        );
    }
    acked_all
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A random moment to kill at, not a wait for a condition.
    let acked_all = kill_cycles("crash test", &data, FULL, 50..750);
    // Restart once more: everything acknowledged is in the store, and the files catch up.
    let receiver = Receiver::start(&data, FULL);
    let acked = acked_all.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no message was acknowledged at all");
    let stored = stored_control_ids(&data);
    let lost: Vec<_> = acked.difference(&stored).collect();
    eprintln!(
        "crash test: {} acknowledged, {} stored, {} lost",
        acked.len(),
        stored.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    // Each file (uncapped here) catches up with the store, which holds every acknowledged
    // message.
    wait_until("the JSON files to hold each patient's records", || {
        (0..PATIENTS).all(|patient| files_match_the_store(&data, patient))
    });
    assert!(file_control_ids(&data).is_superset(&acked));
    let (status, _) = receiver.terminate();
    assert!(status.success());
}

/// Mounts a small tmpfs (needs root; skips otherwise) so the disk can really fill up.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { path, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_disk_gets_rejects_and_storing_resumes_when_space_returns() {
    let Some(disk) = SmallDisk::mount("8m") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "the full-disk test needs root to mount a small tmpfs, and CI runs as root"
        );
        eprintln!("full-disk test skipped: mounting a small tmpfs needs root");
        return;
    };
    let data = disk.path.join("data");
    let receiver = Receiver::start(&data, FULL);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("FULL-0", "FULL", 1)), "MSA-1"),
        "AA"
    );
    let filler = disk.path.join("filler");
    fill(&filler);
    // A message large enough to need new pages: the database cannot grow.
    let big_note = "n".repeat(512 * 1024);
    let big = format!(
        "MSH|^~\\&|DEV|WARD|||2026||ORU^R01|FULL-1|P|2.5\rPID|||FULL||Doe^J\rOBX|1|TX|NOTE||{big_note}\r"
    );
    let ack = client.exchange(big.as_bytes());
    assert_eq!(
        ack_field(&ack, "MSA-1"),
        "AR",
        "a full disk is answered with a reject"
    );
    assert_eq!(ack_field(&ack, "ERR-3.1"), "207");
    assert_eq!(ack_field(&ack, "MSA-2"), "FULL-1");
    // The server is still serving, and says that it cannot store.
    let (status, body) = receiver.http_get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("failing") && body.contains("full"), "{body}");
    std::fs::remove_file(&filler).unwrap();
    // Without a restart, the retransmission is stored, and health is back.
    wait_until("storing to resume", || {
        ack_field(&client.exchange(big.as_bytes()), "MSA-1") == "AA"
    });
    let (status, body) = receiver.http_get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ack_field(&client.exchange(&oru("FULL-2", "FULL", 2)), "MSA-1"),
        "AA"
    );
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn sigterm_with_messages_in_flight_loses_nothing_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start(&data, FULL);
    let stop = Arc::new(AtomicBool::new(false));
    let acked_all: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let senders = spawn_senders(receiver.mllp, 999, &stop, &acked_all);
    wait_until("messages flowing", || {
        let (_, body) = receiver.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix("hl7ihp_messages_accepted_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 200)
    });
    let started = Instant::now();
    let (status, logs) = receiver.terminate();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().expect("sender");
    }
    assert!(status.success(), "{status:?} {logs}");
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    let acked = acked_all.lock().unwrap().clone();
    let stored = stored_control_ids(&data);
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    // The final export round ran: the files hold every acknowledged message.
    assert!(file_control_ids(&data).is_superset(&acked));
}

/// The NDJSON streams, with every key (so lines name their messages).
const NDJSON: &[&str] = &["--patient-files", "ndjson", "--json-fields", "full"];

/// A patient's NDJSON stream as JSON values, one per line; `None` while a line does not parse.
fn stream_records(data_dir: &Path, patient: &str) -> Option<Vec<Value>> {
    let path = data_dir.join(format!("patients/patient_{patient}.ndjson"));
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The store's records of a patient, oldest first: what their stream must hold, once each.
fn store_records_oldest_first(data_dir: &Path, patient: &str) -> Vec<Value> {
    let (status, stdout, stderr) = common::run(&[
        "show",
        patient,
        "--all",
        "--json-fields",
        "full",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    if status != 0 {
        assert!(stderr.contains("no patient"), "{stderr}");
        return Vec::new();
    }
    let document: Value = serde_json::from_str(&stdout).unwrap();
    // Newest message first there; oldest first here, in OBX order within a message (each
    // message here has its own control id).
    let mut messages: Vec<Vec<Value>> = Vec::new();
    for record in document["Records"].as_array().unwrap() {
        match messages.last_mut() {
            Some(last) if last[0]["MessageControlID"] == record["MessageControlID"] => {
                last.push(record.clone());
            }
            _ => messages.push(vec![record.clone()]),
        }
    }
    messages.into_iter().rev().flatten().collect()
}

#[test]
fn sigkill_while_appending_leaves_every_record_in_its_stream_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Streams are appended once a second: a kill anywhere in 0.3–2.3 s lands before, during
    // or after an append, and during the catch-up of the last crash's backlog.
    let acked_all = kill_cycles("NDJSON crash test", &data, NDJSON, 300..2300);
    let receiver = Receiver::start(&data, NDJSON);
    let acked = acked_all.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no message was acknowledged at all");
    let mismatch = || -> Option<String> {
        (0..PATIENTS).find_map(|p| {
            let patient = format!("CRASH-{p}");
            let expected = store_records_oldest_first(&data, &patient);
            let found = stream_records(&data, &patient);
            if expected.is_empty() || found.as_ref() == Some(&expected) {
                return None;
            }
            let found = found.unwrap_or_default();
            let at = expected.iter().zip(&found).position(|(a, b)| a != b);
            Some(format!(
                "{patient}: {} in the store, {} in the stream, first difference at {at:?}: {:?} / {:?}",
                expected.len(),
                found.len(),
                at.map(|i| expected[i].to_string()),
                at.map(|i| found[i].to_string()),
            ))
        })
    };
    let deadline = Instant::now() + common::DEADLINE;
    while let Some(problem) = mismatch() {
        assert!(
            Instant::now() < deadline,
            "streams never matched the store: {problem}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each acknowledged message's two records, once each.
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for p in 0..PATIENTS {
        for record in stream_records(&data, &format!("CRASH-{p}")).unwrap_or_default() {
            let id = record["MessageControlID"].as_str().unwrap().to_owned();
            *seen.entry(id).or_default() += 1;
        }
    }
    for id in &acked {
        assert_eq!(seen.get(id), Some(&2), "records of {id} in the streams");
    }
    eprintln!(
        "NDJSON crash test: {} acknowledged, {} messages in the streams, each once",
        acked.len(),
        seen.len()
    );
    let (status, _) = receiver.terminate();
    assert!(status.success());
}
