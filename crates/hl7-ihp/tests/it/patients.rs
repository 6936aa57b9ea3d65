//! The patient JSON files and the inspection commands, end to end: the prototype's messages
//! give the prototype's file, duplicates are recognised, charsets and escapes arrive decoded,
//! and no patient id can name a path outside `patients/`.

use crate::common;
use std::path::{Path, PathBuf};

use crate::common::{Client, Receiver, ack_field, oru, sample, start, wait_until};
use serde_json::Value;

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits until the patient's file holds `n` records, and returns it.
fn file_with_records(path: &Path, n: usize) -> Value {
    let mut document = None;
    wait_until("the patient file to catch up", || {
        document = read_json(path);
        document
            .as_ref()
            .and_then(|d| d["Records"].as_array())
            .is_some_and(|records| records.len() == n)
    });
    document.unwrap()
}

fn patients_dir(receiver: &Receiver) -> PathBuf {
    receiver.data_dir.join("patients")
}

#[test]
fn prototype_messages_give_the_prototypes_file() {
    let (_dir, receiver) = start(&["--json-fields", "full"]);
    let mut client = Client::connect(receiver.mllp);
    for n in 1..=3 {
        assert_eq!(
            ack_field(
                &client.exchange(&sample(&format!("prototype-{n}.hl7"))),
                "MSA-1"
            ),
            "AA"
        );
    }
    let path = patients_dir(&receiver).join("patient_555-44-4444.json");
    let document = file_with_records(&path, 3);
    let info = &document["PatientInfo"];
    assert_eq!(info["PatientID"], "555-44-4444");
    assert_eq!(info["PatientName"], "EVE EVERYWOMAN");
    assert_eq!(info["Sex"], "Female");
    // 196203520 is not a valid HL7 date: kept as sent.
    assert_eq!(info["DateOfBirth"], "196203520");
    let records = document["Records"].as_array().unwrap();
    let values: Vec<_> = records
        .iter()
        .map(|r| r["ObservationValue"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["184", "180", "182"], "newest message first");
    let record = &records[0];
    assert_eq!(record["ObservationID"], "1554-5");
    assert_eq!(record["Units"], "mg/dl");
    assert_eq!(record["ReferenceRange"], "70_105");
    assert_eq!(record["AbnormalFlags"], "H");
    assert_eq!(record["Timestamp"], "2002-02-15T07:30:00");
    assert_eq!(record["MessageControlID"], "CNTRL-3456");
    assert!(record["ReceivedAt"].as_str().unwrap().ends_with('Z'));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(patients_dir(&receiver))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);

    // The inspection commands agree with the file.
    let data_dir = receiver.data_dir.to_str().unwrap().to_owned();
    let (status, stdout, _) = common::run(&[
        "show",
        "555-44-4444",
        "--json-fields",
        "full",
        "--data-dir",
        &data_dir,
    ]);
    assert_eq!(status, 0);
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["Records"], document["Records"]);
    let (status, stdout, _) = common::run(&["patients", "--data-dir", &data_dir]);
    assert_eq!(status, 0);
    assert!(
        stdout.contains("555-44-4444") && stdout.contains("EVE EVERYWOMAN"),
        "{stdout}"
    );
    let (status, stdout, _) = common::run(&["messages", "--data-dir", &data_dir]);
    assert_eq!(status, 0);
    assert_eq!(stdout.matches("CNTRL-3456").count(), 3, "{stdout}");
    assert!(!stdout.contains("EVERYWOMAN"), "bodies only with --raw");
    let (_, stdout, _) = common::run(&["messages", "--raw", "--data-dir", &data_dir]);
    assert!(stdout.contains("EVERYWOMAN"));
    let (status, _, _) = common::run(&["show", "nobody", "--data-dir", &data_dir]);
    assert_eq!(status, 1);
}

#[test]
fn retransmissions_are_stored_once_and_reused_ids_are_kept() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    let message = oru("DUP-1", "DUP-PATIENT", 70);
    for _ in 0..3 {
        assert_eq!(ack_field(&client.exchange(&message), "MSA-1"), "AA");
    }
    // Same control id, new content: a sender that reuses ids. Kept.
    assert_eq!(
        ack_field(&client.exchange(&oru("DUP-1", "DUP-PATIENT", 71)), "MSA-1"),
        "AA"
    );
    let path = patients_dir(&receiver).join("patient_DUP-PATIENT.json");
    let document = file_with_records(&path, 4);
    let values: Vec<_> = document["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ObservationValue"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(values, ["71", "97", "70", "97"]);
    let (_, body) = receiver.http_get("/metrics");
    assert!(
        body.contains("\nhl7ihp_messages_duplicate_total 2\n"),
        "{body}"
    );
}

#[test]
fn dedupe_off_stores_every_frame() {
    let (_dir, receiver) = start(&["--dedupe", "off"]);
    let mut client = Client::connect(receiver.mllp);
    let message = oru("DUP-2", "NODEDUPE", 70);
    client.exchange(&message);
    client.exchange(&message);
    file_with_records(&patients_dir(&receiver).join("patient_NODEDUPE.json"), 4);
}

#[test]
fn charsets_and_escapes_arrive_decoded() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&sample("latin1-lf-escapes.hl7")), "MSA-1"),
        "AA"
    );
    assert_eq!(
        ack_field(&client.exchange(&sample("pcd01-vitals.hl7")), "MSA-1"),
        "CA"
    );
    // PID-3 `A\F\77` is the id `A|77`; `|` is encoded in the file name.
    let document = file_with_records(&patients_dir(&receiver).join("patient_A%7C77.json"), 2);
    assert_eq!(document["PatientInfo"]["PatientID"], "A|77");
    assert_eq!(
        document["PatientInfo"]["PatientName"],
        "Jürgen Müller&Schmidt"
    );
    let records = document["Records"].as_array().unwrap();
    assert_eq!(
        records[0]["ObservationValue"],
        "line one\nline two A \\H\\bold\\N\\"
    );
    assert_eq!(records[1]["ObservationValue"], "<10");
    let vitals = file_with_records(&patients_dir(&receiver).join("patient_MRN-1042.json"), 6);
    assert_eq!(vitals["PatientInfo"]["PatientName"], "Åsa Lindqvist");
    assert_eq!(vitals["PatientInfo"]["DateOfBirth"], "1958-02-14");
    assert_eq!(
        vitals["Records"][0]["Timestamp"],
        "2026-11-26T10:14:58+01:00"
    );
    assert_eq!(vitals["Records"][0]["ObservationID"], "147842");
}

#[test]
fn adt_updates_patient_info() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    client.exchange(&oru("A-1", "ADT-P", 70));
    client.exchange(b"MSH|^~\\&|ADT|HOSP|||20261126||ADT^A08|A-2|P|2.5\rPID|||ADT-P^^^HOSP^MR||Smith^Anna||19800202|F");
    let path = patients_dir(&receiver).join("patient_ADT-P.json");
    wait_until("the ADT update in the file", || {
        read_json(&path).is_some_and(|d| d["PatientInfo"]["PatientName"] == "Anna Smith")
    });
    let document = read_json(&path).unwrap();
    assert_eq!(document["PatientInfo"]["DateOfBirth"], "1980-02-02");
    assert_eq!(document["Records"].as_array().unwrap().len(), 2);
}

#[test]
fn patient_ids_never_name_a_path_outside_patients() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&dir.path().join("data"), &[]);
    let mut client = Client::connect(receiver.mllp);
    let long = "L".repeat(300);
    let ids: Vec<Vec<u8>> = vec![
        b"../../x".to_vec(),
        b"/abs/path".to_vec(),
        b"a/b".to_vec(),
        b"nul\0byte".to_vec(),
        b".hidden".to_vec(),
        b"..".to_vec(),
        long.clone().into_bytes(),
        format!("{long}2").into_bytes(),
    ];
    for (n, id) in ids.iter().enumerate() {
        let mut message =
            format!("MSH|^~\\&|DEV|WARD|||2026||ORU^R01|PATH-{n}|P|2.5\rPID|||").into_bytes();
        message.extend_from_slice(id);
        message.extend_from_slice(b"||Doe^J\rOBX|1|NM|X||1\r");
        assert_eq!(ack_field(&client.exchange(&message), "MSA-1"), "AA");
    }
    let patients = receiver.data_dir.join("patients");
    wait_until("one file per id", || {
        std::fs::read_dir(&patients)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
            == ids.len()
    });
    for entry in std::fs::read_dir(&patients).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        assert!(
            name.starts_with("patient_") && name.ends_with(".json"),
            "{name}"
        );
        assert!(name.len() < 255);
        assert!(entry.file_type().unwrap().is_file());
        let document = read_json(&entry.path()).unwrap();
        let id = document["PatientInfo"]["PatientID"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec();
        assert!(ids.contains(&id), "{name}");
    }
    // Nothing appeared beside the data directory.
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, [std::ffi::OsString::from("data")]);
    assert!(!dir.path().join("x").exists() && !Path::new("/abs/path").exists());
}

#[test]
fn json_files_catch_up_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start(&data, &[]);
    let mut client = Client::connect(receiver.mllp);
    for n in 0..20 {
        client.exchange(&oru(&format!("R-{n}"), "RESTART", n));
    }
    let (status, _) = receiver.terminate();
    assert!(status.success());
    // After a clean stop the file is complete.
    let path = data.join("patients/patient_RESTART.json");
    assert_eq!(
        read_json(&path).unwrap()["Records"]
            .as_array()
            .unwrap()
            .len(),
        40
    );
    let receiver = Receiver::start(&data, &[]);
    let mut client = Client::connect(receiver.mllp);
    client.exchange(&oru("R-20", "RESTART", 20));
    file_with_records(&path, 42);
}

#[test]
fn json_max_records_bounds_the_file() {
    let (_dir, receiver) = start(&["--json-max-records", "5", "--json-fields", "full"]);
    let mut client = Client::connect(receiver.mllp);
    for n in 0..10 {
        client.exchange(&oru(&format!("W-{n}"), "WINDOW", n));
    }
    let path = patients_dir(&receiver).join("patient_WINDOW.json");
    wait_until("the newest message in the file", || {
        read_json(&path).is_some_and(|d| d["Records"][0]["MessageControlID"] == "W-9")
    });
    assert_eq!(
        read_json(&path).unwrap()["Records"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let data_dir = receiver.data_dir.to_str().unwrap().to_owned();
    let (_, stdout, _) = common::run(&["show", "WINDOW", "--all", "--data-dir", &data_dir]);
    let all: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(all["Records"].as_array().unwrap().len(), 20);
}

#[test]
fn messages_shows_the_newest_50_unless_asked_for_more() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    for n in 0..53 {
        client.exchange(&oru(&format!("LIMIT-{n:02}"), "LIMITED", n));
    }
    let data_dir = receiver.data_dir.to_str().unwrap().to_owned();
    let rows = |extra: &[&str]| {
        let mut args = vec!["messages", "--data-dir", &data_dir];
        args.extend_from_slice(extra);
        let (status, stdout, stderr) = common::run(&args);
        assert_eq!(status, 0, "{stderr}");
        let ids: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("LIMIT-")))
            .map(str::to_owned)
            .collect();
        (ids, stderr)
    };
    let (ids, stderr) = rows(&[]);
    assert_eq!(ids.len(), 50);
    assert_eq!(
        (ids[0].as_str(), ids[49].as_str()),
        ("LIMIT-52", "LIMIT-03")
    );
    assert!(
        stderr.contains("older messages not shown; --limit N or --limit 0 for all"),
        "{stderr}"
    );
    let (ids, stderr) = rows(&["--limit", "0"]);
    assert_eq!(ids.len(), 53);
    assert!(!stderr.contains("not shown"), "{stderr}");
    let (ids, stderr) = rows(&["--limit", "53"]);
    assert_eq!(ids.len(), 53);
    assert!(!stderr.contains("not shown"), "{stderr}");
    let (ids, stderr) = rows(&["--limit", "52"]);
    assert_eq!(ids.len(), 52);
    assert!(stderr.contains("not shown"), "{stderr}");
}

#[test]
fn the_default_file_has_the_prototypes_keys_one_record_a_line() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    for n in 0..3 {
        assert_eq!(
            ack_field(
                &client.exchange(&oru(&format!("P-{n}"), "PROTO", n)),
                "MSA-1"
            ),
            "AA"
        );
    }
    let path = patients_dir(&receiver).join("patient_PROTO.json");
    let document = file_with_records(&path, 6);
    let keys =
        |value: &Value| -> Vec<String> { value.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&document["PatientInfo"]),
        ["DateOfBirth", "PatientID", "PatientName", "Sex"]
    );
    for record in document["Records"].as_array().unwrap() {
        assert_eq!(
            keys(record),
            [
                "AbnormalFlags",
                "ObservationID",
                "ObservationValue",
                "ReferenceRange",
                "Timestamp",
                "Units"
            ]
        );
    }
    // The header, then one record a line, newest message first, OBX order within one.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(lines[0].starts_with("{\"PatientInfo\":") && lines[0].ends_with("\"Records\":["));
    assert!(lines[1].contains("\"ObservationValue\":\"2\"") && lines[1].contains("8867-4"));
    assert!(lines[2].contains("59408-5"));
    assert_eq!(lines[7], "]}");
    // No NDJSON stream unless asked for.
    assert!(
        !patients_dir(&receiver)
            .join("patient_PROTO.ndjson")
            .exists()
    );
}

const NDJSON: &[&str] = &["--patient-files", "ndjson", "--json-fields", "full"];

fn stream(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn control_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["MessageControlID"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_ndjson_stream_cuts_a_torn_line_and_keeps_lines_appended_before_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start(&data, NDJSON);
    let mut client = Client::connect(receiver.mllp);
    for n in 0..6 {
        client.exchange(&oru(&format!("L-{n}"), "LOG", n));
    }
    drop(client);
    let (status, _) = receiver.terminate();
    assert!(status.success());
    let path = data.join("patients/patient_LOG.ndjson");
    let ids = |n: usize| -> Vec<String> {
        (0..n)
            .flat_map(|m| [format!("L-{m}"), format!("L-{m}")])
            .collect()
    };
    assert_eq!(
        control_ids(&stream(&path)),
        ids(6),
        "oldest first, OBX order"
    );
    assert!(!data.join("patients/patient_LOG.json").exists());

    // As if the receiver had died after appending messages 5 and 6 and before recording
    // them, in the middle of a seventh line: the store says the stream ends after message
    // 4, and a torn line follows the complete ones.
    let text = std::fs::read_to_string(&path).unwrap();
    let four = text
        .split_inclusive('\n')
        .take(8)
        .map(str::len)
        .sum::<usize>();
    {
        let db = rusqlite::Connection::open(data.join("hl7-ihp.sqlite3")).unwrap();
        let fourth: i64 = db
            .query_row(
                "SELECT id FROM messages WHERE control_id = 'L-3'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        db.execute(
            "UPDATE export_files SET through = ?1, length = ?2 \
             WHERE exporter = 'ndjson' AND patient = 'LOG'",
            rusqlite::params![fourth, four as i64],
        )
        .unwrap();
        db.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'export:ndjson'",
            [fourth],
        )
        .unwrap();
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, b"{\"Timestamp\":\"2026-11-26T10:1").unwrap();
    drop(file);

    let receiver = Receiver::start(&data, NDJSON);
    let mut client = Client::connect(receiver.mllp);
    for n in 6..8 {
        client.exchange(&oru(&format!("L-{n}"), "LOG", n));
    }
    wait_until("the stream to hold the new messages", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.ends_with('\n') && t.contains("L-7"))
    });
    assert_eq!(control_ids(&stream(&path)), ids(8), "each record once");
    // The lines before the crash are the same bytes: a reader that had read them goes on.
    assert!(std::fs::read_to_string(&path).unwrap().starts_with(&text));
    drop(client);
    let (status, _) = receiver.terminate();
    assert!(status.success());
}

#[test]
fn a_removed_ndjson_stream_is_rebuilt_whole_and_both_outputs_run_together() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = ["--patient-files", "both", "--json-fields", "full"];
    let receiver = Receiver::start(&data, &flags);
    let mut client = Client::connect(receiver.mllp);
    for n in 0..3 {
        client.exchange(&oru(&format!("B-{n}"), "BOTH", n));
    }
    let json = data.join("patients/patient_BOTH.json");
    let ndjson = data.join("patients/patient_BOTH.ndjson");
    wait_until("both files", || {
        stream(&ndjson).len() == 6
            && read_json(&json)
                .is_some_and(|d| d["Records"].as_array().is_some_and(|r| r.len() == 6))
    });
    // The files are written before the exporter's watermark: wait for the lag to reach 0.
    let mut body = String::new();
    wait_until("both outputs caught up", || {
        body = receiver.http_get("/metrics").1;
        ["json", "ndjson"].iter().all(|output| {
            body.contains(&format!(
                "hl7ihp_export_lag_messages{{output=\"{output}\"}} 0\n"
            ))
        })
    });
    for output in ["json", "ndjson"] {
        assert!(body.contains(&format!(
            "hl7ihp_export_lag_seconds{{output=\"{output}\"}} 0.000"
        )));
        assert!(body.contains(&format!(
            "hl7ihp_export_files_written_total{{output=\"{output}\"}}"
        )));
    }
    drop(client);
    let (status, _) = receiver.terminate();
    assert!(status.success());

    std::fs::remove_file(&ndjson).unwrap();
    let receiver = Receiver::start(&data, &flags);
    let mut client = Client::connect(receiver.mllp);
    client.exchange(&oru("B-3", "BOTH", 3));
    // The two outputs flush on their own clocks: wait for both before comparing.
    wait_until("both files to hold the new message", || {
        stream(&ndjson).len() == 8
            && read_json(&json)
                .is_some_and(|d| d["Records"].as_array().is_some_and(|r| r.len() == 8))
    });
    let mut expected: Vec<String> = (0..4)
        .flat_map(|m| [format!("B-{m}"), format!("B-{m}")])
        .collect();
    assert_eq!(control_ids(&stream(&ndjson)), expected);
    expected.reverse();
    let document = read_json(&json).unwrap();
    let newest_first = control_ids(document["Records"].as_array().unwrap());
    assert_eq!(newest_first, expected);
    drop(client);
    let (status, _) = receiver.terminate();
    assert!(status.success());
}
