//! Waveforms end to end: an `ORU^W01` and an `NA` row beside a heart rate are answered AA
//! and kept raw, but no record, observation or latest vital comes from a waveform row; the
//! heart rate beside one is a record as usual; `/metrics` counts the waveform rows.

use serde_json::Value;

use crate::common::{Client, Receiver, ack_field, metric, run, sample, start, wait_until};

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

#[test]
fn a_w01_is_kept_raw_and_counted_and_leaves_the_records_to_the_numerics() {
    let (dir, receiver) = start(&["--json-min-interval", "0s"]);
    // The W01 leaves MSH-15/16 empty: original mode, AA.
    let w01 = sample("devices/waveform-w01.hl7");
    let numerics = sample("devices/waveform-r01-numerics.hl7");
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(ack_field(&client.exchange(&w01), "MSA-1"), "AA");

    // The W01 alone: stored, its patient known, no observation from it.
    let mut patients = Value::Null;
    wait_until("the W01's patient in the API", || {
        patients = get_json(&receiver, "/api/v1/patients");
        patients["patients"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
    });
    let key = patients["patients"][0]["key"].as_str().unwrap().to_owned();
    assert_eq!(patients["patients"][0]["id"], "MRN-1042");
    let observations = get_json(&receiver, &format!("/api/v1/patients/{key}/observations"));
    assert_eq!(
        observations["records"],
        Value::Array(Vec::new()),
        "{observations}"
    );

    // The R01 beside it (IHE PCD-01, MSH-15/16 `AL|NE`, so a commit accept): its heart rate
    // is the patient's one record; its NA row is not.
    assert_eq!(ack_field(&client.exchange(&numerics), "MSA-1"), "CA");
    let mut records = Vec::new();
    wait_until("the heart rate in the patient file", || {
        records = file_records(&receiver, &key);
        !records.is_empty()
    });
    assert_eq!(records.len(), 1, "{records:?}");
    let observations = get_json(&receiver, &format!("/api/v1/patients/{key}/observations"));
    let rows = observations["records"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{observations}");
    assert_eq!(rows[0]["code"], "147842");
    assert_eq!(rows[0]["numeric"], 72.0);
    let patient = get_json(&receiver, "/api/v1/patients");
    let latest = patient["patients"][0]["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 1, "only the heart rate: {latest:?}");
    assert_eq!(latest[0]["code"], "147842");

    // Counted: the W01's three rows and the R01's one NA row, in two messages.
    let (_, body) = receiver.http_get("/metrics");
    assert_eq!(metric(&body, "hl7ihp_waveform_observations_total"), Some(4));
    assert_eq!(metric(&body, "hl7ihp_waveform_messages_total"), Some(2));
    assert_eq!(metric(&body, "hl7ihp_messages_accepted_total"), Some(2));
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");

    // `messages` lists the W01, and `--raw` shows every one of its 250 samples.
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (code, out, err) = run(&["messages", "--data-dir", data, "--raw"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ORU^W01"), "{out}");
    let samples = String::from_utf8_lossy(&w01)
        .split('\r')
        .find(|segment| segment.starts_with("OBX|3|NA|"))
        .map(|segment| segment.split('|').nth(5).unwrap().to_owned())
        .unwrap();
    assert_eq!(samples.split('^').count(), 250);
    assert!(out.contains(&samples), "the raw W01 holds the array: {out}");
}
