//! Values that are not measurements, end to end: a VS8 in demo mode (OBX-8 `DEMO`), an
//! XH80X's placeholders (`-999`, `-99.9`), OBX-11 `X` and an empty OBX-5 are accepted and
//! stored as sent (the API's records, `show`), but never a trend point or a latest number;
//! the patient file's record carries `Mark`; a real value after them is the latest.
//! `--placeholder-values` is per sending application and replaces the defaults.

use serde_json::Value;

use crate::common::{Client, Receiver, ack_field, run, sample, start, wait_until};

fn get_json(receiver: &Receiver, path: &str) -> Value {
    let (status, body) = receiver.http_get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The patient's `Records` in its JSON file (none while there is no file).
fn file_records(receiver: &Receiver, key: &str) -> Vec<Value> {
    let path = receiver
        .data_dir
        .join("patients")
        .join(format!("patient_{key}.json"));
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|document| document["Records"].as_array().cloned())
        .unwrap_or_default()
}

/// A window that holds the samples' observation times (2026-12-01) and the messages'
/// received times (now): trends look at both. A fixed day stopped holding the second once
/// the clock passed it.
fn window() -> String {
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    format!("since=2026-12-01T00:00:00Z&until={until}&bucket=24h")
}

/// Each code's trend points (their count over all buckets) for a patient.
fn trend_counts(receiver: &Receiver, key: &str) -> Vec<(String, u64)> {
    let trends = get_json(
        receiver,
        &format!("/api/v1/patients/{key}/trends?{}", window()),
    );
    trends["series"]
        .as_array()
        .unwrap_or_else(|| panic!("{trends}"))
        .iter()
        .map(|series| {
            let count = series["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["count"].as_u64().unwrap())
                .sum();
            (series["code"].as_str().unwrap().to_owned(), count)
        })
        .collect()
}

/// The patient's latest reading of `code` in the live API.
fn latest(receiver: &Receiver, key: &str, code: &str) -> Value {
    // The live view follows the store apart from the exporter: it may be a step behind the
    // patient file the caller waited for.
    let mut found = Value::Null;
    wait_until(&format!("{code} in the live view of {key}"), || {
        let (status, body) = receiver.http_get(&format!("/api/v1/patients/{key}"));
        let patient: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        found = patient["latest"]
            .as_array()
            .and_then(|latest| latest.iter().find(|r| r["code"] == code).cloned())
            .unwrap_or(Value::Null);
        status == 200 && !found.is_null()
    });
    found
}

/// A real heart rate and SpO2 for the VS8's patient, after its demo values.
fn real_vitals(control_id: &str, heart_rate: u32) -> Vec<u8> {
    format!(
        "MSH|^~\\&|VS8^Mindray|WARD3|HL7IHP|IHP|20261201102000+0100||ORU^R01|{control_id}|P|2.3.1|||AL|NE\r\
         PID|||MRN-2071^^^HOSP^MR||Okafor^Chidi||19710309|M\r\
         OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{heart_rate}|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120|N|||F|||20261201101959+0100\r"
    )
    .into_bytes()
}

#[test]
fn demo_placeholder_not_obtained_and_empty_values_are_stored_marked_and_never_numbers() {
    let (dir, receiver) = start(&["--json-min-interval", "0s"]);
    let mut client = Client::connect(receiver.mllp);
    for name in [
        "devices/vs8-demo-mode.hl7",
        "devices/xh80x-placeholders.hl7",
        "devices/obx11-x.hl7",
    ] {
        assert_eq!(
            ack_field(&client.exchange(&sample(name)), "MSA-1"),
            "CA",
            "{name}"
        );
    }

    // The VS8 in demo mode: six values stored as sent, each marked, none a number.
    let mut records = Vec::new();
    wait_until("the demo values in the patient file", || {
        records = file_records(&receiver, "MRN-2071");
        records.len() == 6
    });
    for record in &records {
        assert_eq!(record["Mark"], "demo", "{record}");
        assert_eq!(record["AbnormalFlags"], "DEMO", "{record}");
    }
    assert!(records.iter().any(|r| r["ObservationValue"] == "80"));
    let rows = get_json(&receiver, "/api/v1/patients/MRN-2071/observations");
    let rows = rows["records"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        assert_eq!(row["mark"], "demo", "{row}");
        assert_eq!(row["numeric"], Value::Null, "{row}");
        assert_eq!(row["state"], "missing", "{row}");
    }
    assert_eq!(trend_counts(&receiver, "MRN-2071"), vec![], "no demo trend");
    let heart_rate = latest(&receiver, "MRN-2071", "147842");
    assert_eq!(heart_rate["mark"], "demo");
    assert_eq!(heart_rate["numeric"], Value::Null);
    let patient = get_json(&receiver, "/api/v1/patients/MRN-2071");
    assert_eq!(patient["sparklines"], Value::Array(Vec::new()), "{patient}");

    // The XH80X's -999 and -99.9 (the default --placeholder-values names XH80X) are
    // placeholders; its respiration rate beside them is a measurement.
    let mut records = Vec::new();
    wait_until("the XH80X values in the patient file", || {
        records = file_records(&receiver, "MRN-3310");
        records.len() == 4
    });
    let marks: Vec<(&str, &Value)> = records
        .iter()
        .map(|r| (r["ObservationValue"].as_str().unwrap(), &r["Mark"]))
        .collect();
    assert_eq!(
        marks,
        vec![
            ("-999", &Value::from("placeholder")),
            ("-999", &Value::from("placeholder")),
            ("-99.9", &Value::from("placeholder")),
            ("16", &Value::Null),
        ]
    );
    // An unmarked record keeps the prototype's six keys exactly.
    assert_eq!(records[3].as_object().unwrap().len(), 6, "{}", records[3]);
    assert_eq!(
        trend_counts(&receiver, "MRN-3310"),
        vec![("151562".to_owned(), 1)]
    );
    assert_eq!(latest(&receiver, "MRN-3310", "151562")["numeric"], 16.0);
    assert_eq!(
        latest(&receiver, "MRN-3310", "150456")["numeric"],
        Value::Null
    );

    // OBX-11 `X` (the MDS row and an NIBP `0`) and an empty SpO2: marked; the heart rate
    // is the one point.
    let mut records = Vec::new();
    wait_until("the PCD-01 values in the patient file", || {
        records = file_records(&receiver, "MRN-1042");
        records.len() == 4
    });
    let marks: Vec<&Value> = records.iter().map(|r| &r["Mark"]).collect();
    assert_eq!(
        marks,
        vec![
            &Value::from("not-obtained"),
            &Value::from("not-obtained"),
            &Value::from("empty"),
            &Value::Null,
        ]
    );
    assert_eq!(
        trend_counts(&receiver, "MRN-1042"),
        vec![("147842".to_owned(), 1)]
    );

    // A real value after the demo ones is the latest, and the trend's only point.
    assert_eq!(
        ack_field(&client.exchange(&real_vitals("VS8-000418", 66)), "MSA-1"),
        "CA"
    );
    wait_until("the real heart rate as the latest", || {
        latest(&receiver, "MRN-2071", "147842")["numeric"] == 66.0
    });
    assert_eq!(latest(&receiver, "MRN-2071", "147842")["mark"], Value::Null);
    assert_eq!(
        trend_counts(&receiver, "MRN-2071"),
        vec![("147842".to_owned(), 1)]
    );
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");

    // `show` has the demo values as sent, with their mark.
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (code, out, err) = run(&["show", "MRN-2071", "--all", "--data-dir", data]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches(r#""Mark":"demo""#).count(), 6, "{out}");
    assert!(out.contains(r#""ObservationValue":"80""#), "{out}");
    let (code, out, err) = run(&["messages", "--data-dir", data]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("VS8-000417"), "{out}");
    assert!(out.contains("XH80X-31244"), "{out}");
}

#[test]
fn placeholder_values_are_per_application_and_replace_the_defaults() {
    // TESTDEV's -999 is a placeholder; XH80X, no longer configured, sends numbers.
    let (_dir, receiver) = start(&[
        "--json-min-interval",
        "0s",
        "--placeholder-values",
        "TESTDEV=-999",
    ]);
    let mut client = Client::connect(receiver.mllp);
    let testdev = String::from_utf8(crate::common::oru("T-1", "P-7", 72))
        .unwrap()
        .replace("|72|/min|", "|-999|/min|");
    assert_eq!(
        ack_field(&client.exchange(testdev.as_bytes()), "MSA-1"),
        "AA"
    );
    assert_eq!(
        ack_field(
            &client.exchange(&sample("devices/xh80x-placeholders.hl7")),
            "MSA-1"
        ),
        "CA"
    );
    let mut records = Vec::new();
    wait_until("TESTDEV's records", || {
        records = file_records(&receiver, "P-7");
        records.len() == 2
    });
    assert_eq!(records[0]["ObservationValue"], "-999");
    assert_eq!(records[0]["Mark"], "placeholder");
    assert_eq!(records[1].get("Mark"), None, "{}", records[1]);
    let mut records = Vec::new();
    wait_until("XH80X's records", || {
        records = file_records(&receiver, "MRN-3310");
        records.len() == 4
    });
    assert!(
        records.iter().all(|r| r.get("Mark").is_none()),
        "{records:?}"
    );
    assert_eq!(latest(&receiver, "MRN-3310", "147842")["numeric"], -999.0);
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn send_demo_and_placeholders_play_such_monitors() {
    // The simulator's monitors are `MONITOR` (MSH-3.1): configured, their -999 is marked.
    let (_dir, receiver) = start(&[
        "--json-min-interval",
        "0s",
        "--placeholder-values",
        "MONITOR=-999",
    ]);
    let to = receiver.mllp.to_string();
    let send = |flag: &str, patients: &str| {
        let (code, out, err) = run(&[
            "send",
            "--to",
            &to,
            "--scenario",
            "vitals",
            "--patients",
            patients,
            "--count",
            "2",
            "--interval",
            "0ms",
            flag,
        ]);
        assert_eq!(code, 0, "{out}{err}");
    };
    // One patient each: the ADT^A01, then one ORU of seven vitals.
    send("--demo", "1");
    let mut records = Vec::new();
    wait_until("the demo ORU's records", || {
        records = file_records(&receiver, "MRN00001");
        records.len() == 7
    });
    assert!(
        records
            .iter()
            .all(|r| r["Mark"] == "demo" && r["AbnormalFlags"] == "DEMO"),
        "{records:?}"
    );
    assert_eq!(trend_counts_now(&receiver, "MRN00001"), 0);
    // The live view follows the store apart from the exporter: it may be a step behind.
    let mut patient = Value::Null;
    wait_until("the live view's seven latest values", || {
        let (status, body) = receiver.http_get("/api/v1/patients/MRN00001");
        patient = serde_json::from_str(&body).unwrap_or(Value::Null);
        status == 200 && patient["latest"].as_array().is_some_and(|l| l.len() == 7)
    });
    let latest = patient["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 7, "{patient}");
    assert!(
        latest
            .iter()
            .all(|r| r["numeric"].is_null() && r["mark"] == "demo")
    );

    drop(records);
    send("--placeholders", "1");
    // The same monitor (MRN00001) again: now every other value is -999, marked.
    let mut records = Vec::new();
    wait_until("the placeholder ORU's records", || {
        records = file_records(&receiver, "MRN00001");
        records.len() == 14
    });
    let newest = &records[..7];
    let placeholders = newest.iter().filter(|r| r["Mark"] == "placeholder").count();
    assert_eq!(
        placeholders, 4,
        "the 1st, 3rd, 5th and 7th of seven: {newest:?}"
    );
    assert!(
        newest
            .iter()
            .all(|r| (r["ObservationValue"] == "-999") == (r["Mark"] == "placeholder")),
        "{newest:?}"
    );
    // The three real values are the only points.
    assert_eq!(trend_counts_now(&receiver, "MRN00001"), 3);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

/// Trend points of the last hour (the simulator's times are now).
fn trend_counts_now(receiver: &Receiver, key: &str) -> u64 {
    let trends = get_json(receiver, &format!("/api/v1/patients/{key}/trends"));
    trends["series"]
        .as_array()
        .unwrap_or_else(|| panic!("{trends}"))
        .iter()
        .flat_map(|s| s["buckets"].as_array().unwrap().clone())
        .map(|b| b["count"].as_u64().unwrap())
        .sum()
}
