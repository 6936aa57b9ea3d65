//! Unassigned devices end to end: a message whose PID-3 is empty (an XH80X's empty PID) or
//! absent (no PID segment, as IHE PCD-01 allows) is answered and stored, and the patients'
//! list shows it under its device (OBX-18's EUI-64, else MSH-3) with `unassigned: true`,
//! its location and latest vitals; no patient file is written for it. `send --no-patient`
//! plays such monitors.

use serde_json::Value;

use crate::common::{Client, Receiver, ack_field, run, sample, start, wait_until};

fn get_json(receiver: &Receiver, path: &str) -> Value {
    let (status, body) = receiver.http_get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The list's entry with this key, if any.
fn entry(list: &Value, key: &str) -> Option<Value> {
    list["patients"]
        .as_array()?
        .iter()
        .find(|p| p["key"] == key)
        .cloned()
}

#[test]
fn messages_without_a_patient_are_shown_under_their_device() {
    let (dir, receiver) = start(&["--json-min-interval", "0s"]);
    let mut client = Client::connect(receiver.mllp);
    // Empty PID (`PID|||^^^^PI||^^^^^^L`), OBX-18 `0123456789ABCDEF^EUI-64^EUI-64`, PV1-3
    // `ICU^BED12`; original mode.
    let xh80x = sample("devices/xh80x-no-pid.hl7");
    assert_eq!(ack_field(&client.exchange(&xh80x), "MSA-1"), "AA");
    // No PID at all, no OBX-18: the device is MSH-3 (`AL|NE`: a commit accept).
    let gateway = sample("devices/pcd01-no-pid.hl7");
    assert_eq!(ack_field(&client.exchange(&gateway), "MSA-1"), "CA");

    let mut list = Value::Null;
    wait_until("both devices in the patients' list", || {
        list = get_json(&receiver, "/api/v1/patients");
        entry(&list, "device:0123456789ABCDEF").is_some()
            && entry(&list, "device:GW-ICU2").is_some()
    });
    assert_eq!(list["patients"].as_array().unwrap().len(), 2, "{list}");

    let xh = entry(&list, "device:0123456789ABCDEF").unwrap();
    assert_eq!(xh["unassigned"], true, "{xh}");
    assert_eq!(xh["device"], "0123456789ABCDEF");
    assert_eq!(xh["location"], "ICU^BED12");
    assert_eq!(xh["id"], "");
    assert_eq!(xh["name"], "");
    let latest = xh["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 5, "{latest:?}");
    let heart = latest.iter().find(|r| r["code"] == "147842").unwrap();
    assert_eq!(heart["numeric"], 88.0, "{heart}");
    assert!(
        xh["sparklines"].as_array().is_some_and(|s| !s.is_empty()),
        "{xh}"
    );

    let gw = entry(&list, "device:GW-ICU2").unwrap();
    assert_eq!(gw["unassigned"], true);
    assert_eq!(gw["device"], "GW-ICU2");
    assert_eq!(gw["location"], Value::Null);
    assert_eq!(gw["latest"].as_array().unwrap().len(), 3, "{gw}");

    // The devices' list names them the same way, without a patient.
    let devices = get_json(&receiver, "/api/v1/devices");
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"0123456789ABCDEF") && ids.contains(&"GW-ICU2"),
        "{devices}"
    );

    // One entry is served like a patient's, and `q` finds it by its device id.
    let one = get_json(&receiver, "/api/v1/patients/device:0123456789ABCDEF");
    assert_eq!(one["unassigned"], true, "{one}");
    let found = get_json(&receiver, "/api/v1/patients?q=0123456789abcdef");
    assert_eq!(found["patients"].as_array().unwrap().len(), 1, "{found}");

    // A patient's message still makes a patient, not an unassigned entry.
    let patient = sample("pcd01-vitals.hl7");
    assert_eq!(ack_field(&client.exchange(&patient), "MSA-1"), "CA");
    wait_until("the patient beside the devices", || {
        list = get_json(&receiver, "/api/v1/patients");
        list["patients"].as_array().is_some_and(|p| p.len() == 3)
    });
    let person = entry(&list, "MRN-1042").unwrap();
    assert_eq!(person["unassigned"], false, "{person}");
    // Its patient file is written; the devices have none.
    let patients = receiver.data_dir.join("patients");
    wait_until("the patient's file", || {
        patients.join("patient_MRN-1042.json").exists()
    });
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    let files: Vec<String> = std::fs::read_dir(&patients)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    assert_eq!(files, vec!["patient_MRN-1042.json".to_owned()]);

    // Both are stored, accepted.
    let data = dir.path().join("data");
    let (code, out, err) = run(&["messages", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("XH-000417") && out.contains("GW-0000981"),
        "{out}"
    );
}

#[test]
fn unassigned_devices_are_listed_again_after_a_restart_before_any_new_message() {
    let (dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    let xh80x = sample("devices/xh80x-no-pid.hl7");
    assert_eq!(ack_field(&client.exchange(&xh80x), "MSA-1"), "AA");
    // A device that only sends alarms.
    let r40 = sample("devices/masimo-r40-alarm-no-patient.hl7");
    assert_eq!(ack_field(&client.exchange(&r40), "MSA-1"), "CA");
    wait_until("both devices in the patients' list", || {
        let list = get_json(&receiver, "/api/v1/patients");
        entry(&list, "device:0123456789ABCDEF").is_some()
            && entry(&list, "device:0018F4FFFE9A0C22").is_some()
    });
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");

    // The same data directory, and no message since: the tiles come from the store.
    let receiver = Receiver::start(&dir.path().join("data"), &[]);
    let mut list = Value::Null;
    wait_until("both devices seeded from the store", || {
        list = get_json(&receiver, "/api/v1/patients");
        entry(&list, "device:0123456789ABCDEF").is_some()
            && entry(&list, "device:0018F4FFFE9A0C22").is_some()
    });
    assert_eq!(list["patients"].as_array().unwrap().len(), 2, "{list}");
    let xh = entry(&list, "device:0123456789ABCDEF").unwrap();
    assert_eq!(xh["unassigned"], true, "{xh}");
    assert_eq!(xh["device"], "0123456789ABCDEF");
    assert_eq!(xh["location"], "ICU^BED12");
    let latest = xh["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 5, "{latest:?}");
    let heart = latest.iter().find(|r| r["code"] == "147842").unwrap();
    assert_eq!(heart["numeric"], 88.0, "{heart}");
    let masimo = entry(&list, "device:0018F4FFFE9A0C22").unwrap();
    assert_eq!(masimo["unassigned"], true, "{masimo}");
    assert_eq!(masimo["alarms"][0]["state"], "latched", "{masimo}");
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn send_no_patient_plays_unassigned_monitors() {
    let (_dir, receiver) = start(&[]);
    let to = receiver.mllp.to_string();
    let (code, out, err) = run(&[
        "send",
        "--to",
        &to,
        "--no-patient",
        "--patients",
        "2",
        "--count",
        "4",
        "--interval",
        "0ms",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let mut list = Value::Null;
    wait_until("two unassigned monitors", || {
        list = get_json(&receiver, "/api/v1/patients");
        list["patients"].as_array().is_some_and(|p| {
            p.len() == 2
                && p.iter()
                    .all(|e| e["unassigned"] == true && !e["latest"].as_array().unwrap().is_empty())
        })
    });
    let keys: Vec<&str> = list["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| k.starts_with("device:0012A3FFFE")),
        "by OBX-18's EUI-64: {keys:?}"
    );
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn device_files_hold_an_unassigned_devices_records() {
    let (_dir, receiver) = start(&["--device-files", "on", "--json-min-interval", "0s"]);
    let mut client = Client::connect(receiver.mllp);
    let xh80x = sample("devices/xh80x-no-pid.hl7");
    assert_eq!(ack_field(&client.exchange(&xh80x), "MSA-1"), "AA");
    let gateway = sample("devices/pcd01-no-pid.hl7");
    assert_eq!(ack_field(&client.exchange(&gateway), "MSA-1"), "CA");
    let patients = receiver.data_dir.join("patients");
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(patients.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let mut document = Value::Null;
    wait_until("device_0123456789ABCDEF.json", || {
        document = read("device_0123456789ABCDEF.json").unwrap_or(Value::Null);
        !document.is_null()
    });
    let info = &document["PatientInfo"];
    assert_eq!(info["Unassigned"], true, "{document}");
    assert_eq!(info["DeviceID"], "0123456789ABCDEF");
    assert_eq!(info["Location"], "ICU^BED12");
    assert_eq!(info["PatientID"], "");
    let records = document["Records"].as_array().unwrap();
    assert_eq!(records.len(), 5, "{document}");
    assert!(
        records
            .iter()
            .any(|r| r["ObservationID"] == "147842" && r["ObservationValue"] == "88"),
        "{document}"
    );
    // The device named by MSH-3, without a location.
    let mut gateway_file = Value::Null;
    wait_until("device_GW-ICU2.json", || {
        gateway_file = read("device_GW-ICU2.json").unwrap_or(Value::Null);
        !gateway_file.is_null()
    });
    assert_eq!(gateway_file["PatientInfo"]["Location"], Value::Null);
    assert_eq!(gateway_file["Records"].as_array().unwrap().len(), 3);

    // A second message of the device: newest first, after a restart too.
    let second = String::from_utf8(xh80x)
        .unwrap()
        .replace("XH-000417", "XH-000418")
        .replace("|88|", "|91|");
    assert_eq!(
        ack_field(&client.exchange(second.as_bytes()), "MSA-1"),
        "AA"
    );
    wait_until("the second message in the device file", || {
        read("device_0123456789ABCDEF.json").and_then(|d| d["Records"].as_array().map(Vec::len))
            == Some(10)
    });
    let document = read("device_0123456789ABCDEF.json").unwrap();
    assert_eq!(
        document["Records"][0]["ObservationValue"], "91",
        "{document}"
    );
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    // No patient file for either.
    let names: Vec<String> = std::fs::read_dir(&patients)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("patient_"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
