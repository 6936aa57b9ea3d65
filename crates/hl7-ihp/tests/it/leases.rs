//! Leases with several receivers on one PostgreSQL store (docs/storage.md, "Leases"): one
//! exporter at a time over a shared data directory, one reader per `--connect` link, and
//! each taken over within seconds when its holder is killed with SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::client::Device;
use crate::common::{Client, Receiver, ack_field, metric, oru, wait_until};
use crate::pg_server;

const PATIENTS: usize = 4;

/// A lease's gauge on a receiver's `/metrics` (`None` when it cannot be read).
fn lease_metric(receiver: &Receiver, series: &str, lease: &str) -> Option<i64> {
    let (status, body) = receiver.http_get("/metrics");
    if status != 200 {
        return None;
    }
    metric(&body, &format!("{series}{{name=\"{lease}\"}}"))
}

fn holds(receiver: &Receiver, lease: &str) -> bool {
    lease_metric(receiver, "hl7ihp_lease_held", lease) == Some(1)
}

/// How many times each control id is in the patients' JSON files (a file being replaced
/// is read whole: the exporter renames complete files into place).
fn file_records(data: &Path) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for patient in 0..PATIENTS {
        let path = data.join(format!("patients/patient_LEASE-{patient}.json"));
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let Ok(document) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for record in document["Records"].as_array().into_iter().flatten() {
            if let Some(id) = record["MessageControlID"].as_str() {
                *ids.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    ids
}

/// Sends `n` messages with control ids `<prefix><i>` to `receiver`; each must be AA.
fn send(receiver: &Receiver, prefix: &str, n: u32, sent: &mut BTreeSet<String>) {
    let mut client = Client::connect(receiver.mllp);
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let patient = format!("LEASE-{}", i as usize % PATIENTS);
        let ack = client.exchange(&oru(&id, &patient, 60 + i));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
        sent.insert(id);
    }
}

/// Every sent message's records are in the files, each message's twice (two OBX), never more.
fn files_complete(data: &Path, sent: &BTreeSet<String>) -> bool {
    let records = file_records(data);
    for (id, n) in &records {
        assert!(*n <= 2, "message {id} written {n} times over");
    }
    sent.iter().all(|id| records.get(id) == Some(&2))
}

#[test]
fn one_exporter_at_a_time_and_another_takes_over_when_it_is_killed() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let db = server.create_database();
    let url = server.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = [
        "--store",
        &url,
        "--json-fields",
        "full",
        "--json-max-records",
        "0",
        "--json-min-interval",
        "0s",
    ];
    // Two receivers on one store and one data directory.
    let first = Receiver::start(&data, &flags);
    let second = Receiver::start(&data, &flags);
    wait_until("one of them to hold the export lease", || {
        holds(&first, "export") || holds(&second, "export")
    });
    assert!(
        !(holds(&first, "export") && holds(&second, "export")),
        "both hold the export lease"
    );

    let mut sent = BTreeSet::new();
    send(&first, "FIRST-", 30, &mut sent);
    send(&second, "SECOND-", 30, &mut sent);
    wait_until("every message in the patient files", || {
        files_complete(&data, &sent)
    });
    let (holder, other) = if holds(&first, "export") {
        (first, second)
    } else {
        (second, first)
    };
    assert!(!holds(&other, "export"), "one holder at a time");
    let fence = lease_metric(&holder, "hl7ihp_lease_fence", "export").unwrap();
    assert!(fence >= 1, "{fence}");
    assert_eq!(
        lease_metric(&other, "hl7ihp_lease_fence", "export"),
        Some(0)
    );
    // The receiver that does not write the files reports how far the holder wrote them
    // (the watermark the store records), not its own idle exporter's: no lag once they
    // are written, in the API and in /metrics.
    wait_until(
        "no export lag on the receiver that does not hold the lease",
        || {
            let (status, body) = other.http_get("/api/v1/stats");
            let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let (_, metrics) = other.http_get("/metrics");
            status == 200
                && stats["export"]["lag_messages"] == 0
                && metrics.contains("hl7ihp_export_lag_messages{output=\"json\"} 0")
        },
    );

    // The holder dies; the other takes the lease over within seconds and catches up,
    // messages received after the kill included.
    let killed = Instant::now();
    holder.kill();
    wait_until("the other receiver to take the export lease", || {
        holds(&other, "export")
    });
    let takeover = killed.elapsed();
    eprintln!("export lease taken over {takeover:?} after the SIGKILL");
    assert!(takeover.as_secs() < 15, "took {takeover:?}");
    assert!(
        lease_metric(&other, "hl7ihp_lease_fence", "export").unwrap() > fence,
        "a new acquisition has a higher fence"
    );
    assert!(other.logs().contains("lease taken"), "{}", other.logs());
    send(&other, "AFTER-", 30, &mut sent);
    wait_until(
        "every message in the patient files after the takeover",
        || files_complete(&data, &sent),
    );
    let records = file_records(&data);
    assert_eq!(records.len(), sent.len(), "only what was sent");
    assert!(records.values().all(|n| *n == 2), "each record once");
    // The lease and the files' paths never reach the log at the default level.
    assert!(!other.logs().contains("LEASE-"), "{}", other.logs());
}

#[test]
fn one_receiver_reads_a_link_and_another_picks_it_up_when_it_is_killed() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let db = server.create_database();
    let url = server.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut device = Device::spawn("127.0.0.1:0", &["--interval", "20ms"]);
    let connect = format!("bed-3={}", device.addr);
    let flags = ["--store", url.as_str(), "--connect", &connect];
    let first = Receiver::start_listening(&data, "off", &flags);
    let second = Receiver::start_listening(&data, "off", &flags);
    let link_up = |receiver: &Receiver| {
        let (status, body) = receiver.http_get("/metrics");
        status == 200 && metric(&body, "hl7ihp_link_up{link=\"bed-3\"}") == Some(1)
    };
    wait_until("one receiver connected to the device", || {
        link_up(&first) || link_up(&second)
    });
    device.wait_for_acks(20);
    let (holder, other) = if link_up(&first) {
        (first, second)
    } else {
        (second, first)
    };
    assert!(!link_up(&other), "the device is read by one receiver only");
    assert!(holds(&holder, "link:bed-3") && !holds(&other, "link:bed-3"));
    let (status, body) = other.http_get("/api/v1/devices");
    assert_eq!(status, 200);
    let devices: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(devices["links"][0]["state"], "standby", "{body}");

    let before = device.acked.len();
    let killed = Instant::now();
    holder.kill();
    wait_until("the other receiver to connect to the device", || {
        link_up(&other)
    });
    let takeover = killed.elapsed();
    eprintln!("link lease taken over {takeover:?} after the SIGKILL");
    assert!(takeover.as_secs() < 15, "took {takeover:?}");
    device.wait_for_acks(before + 20);
    let acked: BTreeSet<String> = device.acked.iter().cloned().collect();
    drop(device);

    // Every message stored once (a retransmission of the one the holder died with is a
    // duplicate), and every acknowledged one stored.
    let twice = server.psql(
        &db,
        "SELECT control_id FROM messages GROUP BY control_id HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "stored more than once: {twice}");
    let stored: BTreeSet<String> = server
        .psql(&db, "SELECT control_id FROM messages")
        .lines()
        .map(str::to_owned)
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(acked.len() >= before + 20, "{} acknowledged", acked.len());
}
