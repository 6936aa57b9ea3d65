//! Alarms end to end: an `ORU^R40` (IHE PCD-04) is answered under the usual ACK rules, is
//! listed by `/api/v1/alarms` with its type, priority, state and measurement, arrives on the
//! event stream as an `alarm` event and in the patient's view, and gives the patient no
//! record, trend point or latest vital; an alarm with an empty PID is kept with no patient;
//! `send --alarm` makes the simulator send R40s for its patients.

use serde_json::Value;

use crate::common::{self, Client, Receiver, SseClient, ack_field, run, sample, wait_until};

fn get_json(receiver: &Receiver, path: &str) -> Value {
    let (status, body) = receiver.http_get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn alarms(receiver: &Receiver, query: &str) -> Vec<Value> {
    get_json(receiver, &format!("/api/v1/alarms{query}"))["alarms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn an_r40_is_an_alarm_in_the_api_and_the_event_stream_and_never_a_record() {
    let (_dir, receiver) = common::start(&[]);
    let events = SseClient::connect(receiver.http.unwrap(), "/api/v1/events", None);
    assert_eq!(events.status, 200, "{}", events.headers);
    let mut client = Client::connect(receiver.mllp);

    // PCD-04 asks for `AL|NE`: a commit accept, as for any message.
    let r40 = sample("devices/masimo-r40-alarm.hl7");
    let ack = client.exchange(&r40);
    assert_eq!(ack_field(&ack, "MSA-1"), "CA");
    assert_eq!(ack_field(&ack, "MSA-2"), "PSN-ALM-000417");

    let (event, _) = events.until("alarm", |_| true);
    let event = event.json();
    assert_eq!(event["patient"], "7012345");
    assert_eq!(event["type_code"], "196670");
    assert_eq!(event["type_text"], "MDC_EVT_LO_VAL_LT_LIM");
    assert_eq!(event["priority"], "medium");
    assert_eq!(event["state"], "active");

    let mut found = Vec::new();
    wait_until("the alarm in /api/v1/alarms", || {
        found = alarms(&receiver, "");
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "{found:?}");
    let alarm = &found[0];
    assert_eq!(alarm["patient"], "7012345");
    assert_eq!(alarm["text"], "SPO2 LOW");
    assert_eq!(alarm["type_system"], "MDC");
    assert_eq!(alarm["priority"], "medium");
    assert_eq!(alarm["kind"], "physiological");
    assert_eq!(alarm["state"], "active");
    assert_eq!(alarm["phase"], "start");
    assert_eq!(alarm["source"], "0018F4FFFE9A0C21");
    assert_eq!(alarm["started_at"], "2026-03-01T10:14:55+01:00");
    assert_eq!(alarm["measurement"]["code_text"], "MDC_PULS_OXIM_SAT_O2");
    assert_eq!(alarm["measurement"]["value"], "86");
    assert_eq!(alarm["measurement"]["numeric"], 86.0);
    assert_eq!(alarm["measurement"]["units"], "MDC_DIM_PERCENT");
    assert_eq!(alarm["measurement"]["limit"], "90-100");

    // The patient view holds it; the R40's SpO2 is no record, trend point or latest vital.
    let patient = get_json(&receiver, "/api/v1/patients/7012345");
    assert_eq!(
        patient["alarms"][0]["type_text"], "MDC_EVT_LO_VAL_LT_LIM",
        "{patient}"
    );
    assert_eq!(patient["latest"], Value::Array(Vec::new()), "{patient}");
    assert_eq!(patient["sparklines"], Value::Array(Vec::new()), "{patient}");
    let observations = get_json(&receiver, "/api/v1/patients/7012345/observations");
    assert_eq!(
        observations["records"],
        Value::Array(Vec::new()),
        "{observations}"
    );
    let trends = get_json(
        &receiver,
        "/api/v1/patients/7012345/trends?code=150456&bucket=60s",
    );
    let points: usize = trends["series"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["buckets"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(points, 0, "{trends}");

    // Without a PID: kept, with no patient.
    let ack = client.exchange(&sample("devices/masimo-r40-alarm-no-patient.hl7"));
    assert_eq!(ack_field(&ack, "MSA-1"), "CA");
    let (event, _) = events.until("alarm", |e| e.json()["priority"] == "high");
    assert_eq!(event.json()["patient"], Value::Null);
    wait_until("two alarms", || alarms(&receiver, "").len() == 2);
    let newest = &alarms(&receiver, "")[0];
    assert_eq!(newest["patient"], Value::Null, "{newest}");
    assert_eq!(newest["state"], "latched");
    assert_eq!(newest["measurement"]["value"], "148");

    // ... and shown on its device's tile (the alarm's source, OBX-18.1), made for it: the
    // device has sent nothing else. The tile draws from this entry.
    let mut tile = None;
    wait_until("the device's tile with the alarm", || {
        let list = get_json(&receiver, "/api/v1/patients");
        tile = list["patients"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["key"] == "device:0018F4FFFE9A0C22"))
            .cloned();
        tile.as_ref()
            .is_some_and(|t| t["alarms"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let tile = tile.unwrap();
    assert_eq!(tile["unassigned"], true, "{tile}");
    assert_eq!(tile["device"], "0018F4FFFE9A0C22");
    assert!(
        tile["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("ICU^14")),
        "{tile}"
    );
    assert_eq!(tile["alarms"][0]["priority"], "high", "{tile}");
    assert_eq!(tile["alarms"][0]["state"], "latched");
    assert_eq!(tile["alarms"][0]["patient"], Value::Null);
    assert_eq!(tile["latest"], Value::Array(Vec::new()), "{tile}");
    // The patient's alarm stays on the patient's tile only.
    let patient = get_json(&receiver, "/api/v1/patients/7012345");
    assert_eq!(patient["alarms"].as_array().unwrap().len(), 1, "{patient}");

    // The filters and paging.
    assert_eq!(alarms(&receiver, "?patient=7012345").len(), 1);
    assert_eq!(alarms(&receiver, "?state=latched").len(), 1);
    assert_eq!(alarms(&receiver, "?state=inactive").len(), 0);
    let by_device = alarms(&receiver, "?device=0018F4FFFE9A0C22");
    assert_eq!(by_device.len(), 1, "{by_device:?}");
    assert_eq!(by_device[0]["state"], "latched");
    assert_eq!(alarms(&receiver, "?device=0018F4FFFE9A0C21").len(), 1);
    assert_eq!(alarms(&receiver, "?device=NOBODY").len(), 0);
    let page = get_json(&receiver, "/api/v1/alarms?limit=1");
    assert_eq!(page["alarms"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = get_json(
        &receiver,
        &format!("/api/v1/alarms?limit=1&cursor={cursor}"),
    );
    assert_eq!(next["alarms"][0]["patient"], "7012345", "{next}");
    assert_eq!(next["next_cursor"], Value::Null);
    let (status, _) = receiver.http_get("/api/v1/alarms?colour=red");
    assert_eq!(status, 400);
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn send_alarm_makes_the_simulator_send_r40s_for_its_patients() {
    let (_dir, receiver) = common::start(&[]);
    let to = receiver.mllp.to_string();
    let (code, out, err) = run(&[
        "send",
        "--to",
        &to,
        "--scenario",
        "vitals",
        "--patients",
        "1",
        "--alarm",
        "--count",
        "20",
        "--interval",
        "0ms",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ORU^R40 alarm"), "{out}");
    let mut found = Vec::new();
    wait_until("the simulator's alarms", || {
        found = alarms(&receiver, "");
        found.len() == 2
    });
    assert!(
        found.iter().all(|a| a["patient"] == "MRN00001"),
        "{found:?}"
    );
    // Raised, then cleared: newest first.
    assert_eq!(found[0]["state"], "inactive");
    assert_eq!(found[1]["state"], "active");
    assert_eq!(found[1]["measurement"]["code"], "150456");
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}
