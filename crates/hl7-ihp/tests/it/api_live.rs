//! The live view through the real binary: `/api/v1/patients`, `/api/v1/patients/{key}`,
//! `/api/v1/devices`, `/api/v1/stats` and the event stream `/api/v1/events`, fed by messages
//! sent over MLLP (docs/api.md).

use std::time::Duration;

use serde_json::Value;

use crate::common::{
    self, Client, Receiver, SseClient, SseEvent, ack_field, http_get_with, wait_until,
};

/// An ORU^R01 from bedside monitor `monitor` about patient `mrn` in bed `bed`, with a heart
/// rate and its flags; OBX-18 carries `equipment` when it is not empty.
fn vitals(
    control_id: &str,
    mrn: &str,
    name: &str,
    bed: &str,
    hr: &str,
    flags: &str,
    equipment: &str,
) -> Vec<u8> {
    let (given, family) = name.split_once(' ').unwrap();
    format!(
        "MSH|^~\\&|MON-{bed}|ICU|HL7IHP|IHP|20261201120000||ORU^R01|{control_id}|P|2.5\r\
         PID|||{mrn}^^^HOSP^MR||{family}^{given}||19510302|F\r\
         PV1||I|ICU^{bed}^A\r\
         OBR|1||X|Y|||20261201120000\r\
         OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{hr}|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120|{flags}|||F|||20261201120000||||{equipment}\r\
         OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|97|262688^MDC_DIM_PERCENT^MDC|90-100|N|||F|||20261201120000\r"
    )
    .into_bytes()
}

fn send(client: &mut Client, message: &[u8]) {
    let ack = client.exchange(message);
    assert_eq!(
        ack_field(&ack, "MSA-1"),
        "AA",
        "{}",
        String::from_utf8_lossy(&ack)
    );
}

fn get_json(receiver: &Receiver, path: &str) -> (u16, Value) {
    let (status, body) = receiver.http_get(path);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

fn patients(receiver: &Receiver, query: &str) -> Vec<Value> {
    let (status, list) = get_json(receiver, &format!("/api/v1/patients{query}"));
    assert_eq!(status, 200, "{list}");
    list["patients"].as_array().unwrap().clone()
}

fn keys(patients: &[Value]) -> Vec<&str> {
    patients
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect()
}

fn events_client(receiver: &Receiver, last_event_id: Option<&str>) -> SseClient {
    let client = SseClient::connect(receiver.http.unwrap(), "/api/v1/events", last_event_id);
    assert_eq!(client.status, 200, "{}", client.headers);
    assert!(
        client
            .headers
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        client.headers
    );
    client
}

/// Events as `name id data` lines, for assertion messages.
fn describe(events: &[SseEvent]) -> String {
    events
        .iter()
        .map(|e| format!("\n  {} {:?} {}", name(e), e.id, e.data))
        .collect()
}

fn name(event: &SseEvent) -> &str {
    event.event.as_deref().unwrap_or("")
}

#[test]
fn the_patients_list_shows_status_latest_values_and_filters_and_sorts() {
    let (_dir, receiver) = common::start(&["--patient-identity", "authority-id"]);
    let mut client = Client::connect(receiver.mllp);
    send(
        &mut client,
        &vitals("A1", "MRN-1", "Anna Berg", "02", "80", "N", "EUI-A"),
    );
    send(
        &mut client,
        &vitals("B1", "MRN-2", "Bo Ek", "01", "180", "HH", "EUI-B"),
    );
    send(
        &mut client,
        &vitals("C1", "MRN-3", "Cid Ny", "03", "130", "H", "EUI-C"),
    );
    // Anna's second message arrives in a later millisecond than Cid's, for the staleness order.
    let sent = std::time::Instant::now();
    wait_until("a later millisecond", || {
        sent.elapsed() >= Duration::from_millis(2)
    });
    send(
        &mut client,
        &vitals("A2", "MRN-1", "Anna Berg", "02", "82", "N", "EUI-A"),
    );
    wait_until("the live view has the four messages", || {
        patients(&receiver, "")
            .iter()
            .any(|p| p["last_message_id"] == 4)
    });

    let (status, list) = get_json(&receiver, "/api/v1/patients");
    assert_eq!(status, 200);
    assert_eq!(list["stale_after_seconds"], 30.0);
    assert_eq!(list["offline_after_seconds"], 300.0);
    assert!(list["generated_at"].as_str().unwrap().ends_with('Z'));
    let all = list["patients"].as_array().unwrap();
    assert_eq!(
        keys(all),
        ["HOSP/MRN-2", "HOSP/MRN-1", "HOSP/MRN-3"],
        "by location"
    );
    let anna = &all[1];
    assert_eq!(anna["id"], "MRN-1");
    assert_eq!(anna["assigning_authority"], "HOSP");
    assert_eq!(anna["name"], "Anna Berg");
    assert_eq!(anna["birth_date"], "1951-03-02");
    assert_eq!(anna["sex"], "F");
    assert_eq!(anna["location"], "ICU^02^A");
    assert_eq!(anna["device"], "MON-02");
    assert_eq!(anna["status"], "live");
    assert!(anna["silent_seconds"].as_f64().unwrap() < 30.0);
    assert!(anna["last_message_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(anna["values_missing"], false);
    assert_eq!(anna["severity"], 0);
    let latest = anna["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 2, "one per code");
    assert_eq!(latest[0]["code"], "147842");
    assert_eq!(latest[0]["value"], "82");
    assert_eq!(latest[0]["numeric"], 82.0);
    assert_eq!(latest[0]["units"], "264864");
    assert_eq!(latest[0]["abnormal_flags"], "N");
    assert_eq!(latest[0]["vital"], "heart_rate");
    assert_eq!(latest[0]["state"], "ok");
    assert_eq!(latest[0]["observed_at"], "2026-12-01T12:00:00");
    assert!(latest[0]["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(latest[0]["message_id"], 4);
    assert_eq!(anna["sparklines"][0]["code"], "147842");
    assert_eq!(
        anna["sparklines"][0]["values"],
        serde_json::json!([80.0, 82.0])
    );
    let bo = &all[0];
    assert_eq!(bo["severity"], 2);
    assert_eq!(bo["latest"][0]["alert"]["level"], "critical");
    assert_eq!(bo["latest"][0]["alert"]["text"], "> 120");

    assert_eq!(
        keys(&patients(&receiver, "?q=mrn-3")),
        ["HOSP/MRN-3"],
        "by id"
    );
    assert_eq!(
        keys(&patients(&receiver, "?q=BERG")),
        ["HOSP/MRN-1"],
        "by name"
    );
    assert_eq!(
        keys(&patients(&receiver, "?q=icu%5E01")),
        ["HOSP/MRN-2"],
        "by location"
    );
    assert!(patients(&receiver, "?q=nobody").is_empty());
    assert_eq!(
        keys(&patients(&receiver, "?sort=name")),
        ["HOSP/MRN-1", "HOSP/MRN-2", "HOSP/MRN-3"]
    );
    assert_eq!(
        keys(&patients(&receiver, "?sort=severity")),
        ["HOSP/MRN-2", "HOSP/MRN-3", "HOSP/MRN-1"]
    );
    // Longest silent first: the times of the last messages never decrease down the list.
    let by_staleness = patients(&receiver, "?sort=staleness");
    assert_eq!(by_staleness.len(), 3);
    let times: Vec<&str> = by_staleness
        .iter()
        .map(|p| p["last_message_at"].as_str().unwrap())
        .collect();
    assert!(times.is_sorted(), "{times:?}");
    assert_eq!(
        by_staleness[2]["key"], "HOSP/MRN-1",
        "Anna's last message is the newest"
    );

    // One patient, its key percent-encoded; an unknown one is a 404 problem.
    let (status, one) = get_json(&receiver, "/api/v1/patients/HOSP%2FMRN-1");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["key"], "HOSP/MRN-1");
    assert_eq!(one["latest"], anna["latest"]);
    let address = receiver.http.unwrap();
    let (status, head, body) = http_get_with(address, "/api/v1/patients/HOSP%2FMRN-9", "");
    assert_eq!(status, 404);
    assert!(
        head.to_ascii_lowercase()
            .contains("application/problem+json"),
        "{head}"
    );
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 404);
    // Bad parameters are 400s that name the parameter.
    for (path, parameter) in [
        ("/api/v1/patients?sort=sideways", "sort"),
        ("/api/v1/patients/%FF%FE", "key"),
        ("/api/v1/patients?srot=name", "srot"),
        ("/api/v1/patients?sort=name&sort=severity", "sort"),
        ("/api/v1/patients/HOSP%2FMRN-1?x=1", "x"),
        ("/api/v1/devices?patient=1", "patient"),
        ("/api/v1/stats?since=1", "since"),
    ] {
        let (status, problem) = get_json(&receiver, path);
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(problem["parameter"], parameter, "{path}");
    }
    let long = format!("/api/v1/patients?q={}", "x".repeat(500));
    let (status, problem) = get_json(&receiver, &long);
    assert_eq!((status, problem["parameter"].as_str()), (400, Some("q")));
}

#[test]
fn devices_are_equipment_ids_or_the_sending_application() {
    let (_dir, receiver) = common::start(&[]);
    let mut client = Client::connect(receiver.mllp);
    send(
        &mut client,
        &vitals(
            "A1",
            "MRN-1",
            "Anna Berg",
            "02",
            "80",
            "N",
            "0012A3FFFE45B6C7^EUI-64",
        ),
    );
    send(
        &mut client,
        &vitals("B1", "MRN-2", "Bo Ek", "01", "80", "N", ""),
    );
    send(
        &mut client,
        &vitals("B2", "MRN-2", "Bo Ek", "01", "81", "N", ""),
    );
    let mut devices = Vec::new();
    wait_until("both devices", || {
        let (_, list) = get_json(&receiver, "/api/v1/devices");
        devices = list["devices"].as_array().unwrap().clone();
        devices.len() == 2 && devices.iter().any(|d| d["n_messages"] == 2)
    });
    let equipment = devices.iter().find(|d| d["kind"] == "equipment").unwrap();
    assert_eq!(equipment["id"], "0012A3FFFE45B6C7");
    assert_eq!(equipment["sending_application"], "MON-02");
    assert_eq!(equipment["patient"], "MRN-1");
    assert_eq!(equipment["patient_name"], "Anna Berg");
    assert_eq!(equipment["location"], "ICU^02^A");
    assert_eq!(equipment["last_message_id"], 1);
    assert_eq!(equipment["n_messages"], 1);
    assert_eq!(equipment["status"], "live");
    let application = devices.iter().find(|d| d["kind"] == "application").unwrap();
    assert_eq!(application["id"], "MON-01");
    assert_eq!(application["patient"], "MRN-2");
    assert_eq!(application["last_message_id"], 3);
    assert!(
        application["last_message_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
}

#[test]
fn stats_count_messages_per_minute_connections_and_the_export_lag() {
    let (_dir, receiver) = common::start(&[]);
    let mut client = Client::connect(receiver.mllp);
    send(
        &mut client,
        &vitals("A1", "MRN-1", "Anna Berg", "02", "80", "N", ""),
    );
    send(
        &mut client,
        &vitals("A2", "MRN-1", "Anna Berg", "02", "81", "N", ""),
    );
    assert_eq!(ack_field(&client.exchange(b"not hl7"), "MSA-1"), "AR");
    let mut stats = Value::Null;
    wait_until("the three messages counted and exported", || {
        stats = get_json(&receiver, "/api/v1/stats").1;
        let minutes = stats["minutes"].as_array().unwrap();
        let sum = |key: &str| {
            minutes
                .iter()
                .map(|m| m[key].as_u64().unwrap())
                .sum::<u64>()
        };
        sum("accepted") == 2
            && sum("rejected") == 1
            && stats["export"]["lag_messages"] == 0
            && stats["export"]["newest"] == 3
    });
    let minute = stats["minutes"].as_array().unwrap().last().unwrap().clone();
    assert!(
        minute["start"].as_str().unwrap().ends_with(":00.000Z"),
        "{minute}"
    );
    assert_eq!(minute["error"], 0);
    let by_type: u64 = stats["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["by_type"]["ORU^R01"].as_u64())
        .sum();
    assert_eq!(by_type, 2, "{stats}");
    assert_eq!(stats["connections"]["open"], 1);
    assert_eq!(stats["connections"]["total"], 1);
    assert_eq!(stats["export"]["watermark"], 3);
    assert_eq!(stats["export"]["lag_seconds"], 0.0);
    assert!(stats["generated_at"].as_str().unwrap().ends_with('Z'));

    // After a restart the minutes are filled from the store.
    drop(client);
    let data_dir = receiver.data_dir.clone();
    let (status, _) = receiver.terminate();
    assert!(status.success());
    let receiver = Receiver::start(&data_dir, &[]);
    wait_until("the minutes seeded from the store", || {
        let stats = get_json(&receiver, "/api/v1/stats").1;
        let minutes = stats["minutes"].as_array().unwrap().clone();
        minutes
            .iter()
            .map(|m| m["accepted"].as_u64().unwrap())
            .sum::<u64>()
            == 2
            && minutes
                .iter()
                .map(|m| m["rejected"].as_u64().unwrap())
                .sum::<u64>()
                == 1
    });
    assert_eq!(
        get_json(&receiver, "/api/v1/stats").1["connections"]["total"],
        0
    );
}

#[test]
fn the_event_stream_announces_observations_patients_and_rejected_messages() {
    let (_dir, receiver) = common::start(&[]);
    let events = events_client(&receiver, None);
    let mut client = Client::connect(receiver.mllp);
    send(
        &mut client,
        &vitals("A1", "MRN-1", "Anna Berg", "02", "134", "H", ""),
    );
    let observation = events.next_event();
    assert_eq!(name(&observation), "observation");
    let data = observation.json();
    assert_eq!(data["patient"], "MRN-1");
    assert_eq!(data["message_id"], 1);
    assert!(data["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(data["values"][0]["value"], "134");
    assert_eq!(data["values"][0]["alert"]["text"], "> 120");
    assert_eq!(data["values"].as_array().unwrap().len(), 2);
    let patient = events.next_event();
    assert_eq!(name(&patient), "patient");
    let data = patient.json();
    assert_eq!(data["key"], "MRN-1");
    assert_eq!(data["status"], "live");
    assert_eq!(data["latest"][0]["value"], "134");
    // The patient event is the patient as the API answers.
    let (_, one) = get_json(&receiver, "/api/v1/patients/MRN-1");
    assert_eq!(one["latest"], data["latest"]);
    assert_eq!(one["sparklines"], data["sparklines"]);

    assert_eq!(ack_field(&client.exchange(b"not hl7"), "MSA-1"), "AR");
    let rejected = events.next_event();
    assert_eq!(name(&rejected), "rejected");
    let data = rejected.json();
    assert_eq!(data["message_id"], 2);
    assert_eq!(data["outcome"], "rejected");
    assert!(
        data["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{data}"
    );
    assert!(data["received_at"].as_str().unwrap().ends_with('Z'));

    let ids: Vec<String> = [&observation, &patient, &rejected]
        .iter()
        .map(|e| e.id.clone().expect("every event has an id"))
        .collect();
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "{ids:?}"
    );
}

#[test]
fn a_client_that_reconnects_gets_exactly_what_it_missed_or_a_reset() {
    // Statuses far out of reach: on a starved machine half a minute can pass between two
    // steps, and a `status` event would then be right but not what this test is about.
    let quiet = ["--stale-after", "1h", "--offline-after", "2h"];
    let (_dir, receiver) = common::start(&quiet);
    let mut client = Client::connect(receiver.mllp);
    let first = events_client(&receiver, None);
    send(
        &mut client,
        &vitals("A1", "MRN-1", "Anna Berg", "02", "80", "N", ""),
    );
    let (seen, _) = first.until("patient", |_| true);
    let last_id = seen.id.clone().unwrap();
    first.close();

    // Two messages while it is away.
    send(
        &mut client,
        &vitals("A2", "MRN-1", "Anna Berg", "02", "81", "N", ""),
    );
    send(
        &mut client,
        &vitals("A3", "MRN-1", "Anna Berg", "02", "82", "N", ""),
    );
    wait_until("the live view has them", || {
        get_json(&receiver, "/api/v1/patients/MRN-1").1["last_message_id"] == 3
    });
    let resumed = events_client(&receiver, Some(&last_id));
    // The live task may read both messages in one batch and then announces the patient
    // once (one `patient` event per patient changed per batch): what the client must get is
    // both observations in order and the patient as it is after the second.
    let mut missed: Vec<SseEvent> = Vec::new();
    while !missed
        .iter()
        .any(|e| name(e) == "patient" && e.json()["last_message_id"] == 3)
    {
        missed.push(resumed.next_event());
        assert!(missed.len() <= 8, "{}", describe(&missed));
    }
    let observations: Vec<i64> = missed
        .iter()
        .filter(|e| name(e) == "observation")
        .map(|e| e.json()["message_id"].as_i64().unwrap())
        .collect();
    assert_eq!(observations, [2, 3], "{}", describe(&missed));
    let first_patient = missed.iter().position(|e| name(e) == "patient").unwrap();
    assert!(
        missed[..first_patient]
            .iter()
            .any(|e| name(e) == "observation"),
        "an observation comes before its patient event: {}",
        describe(&missed)
    );
    for event in &missed {
        assert!(
            matches!(name(event), "observation" | "patient"),
            "nothing else happened: {}",
            describe(&missed)
        );
    }
    // Then the live events, with nothing in between.
    send(
        &mut client,
        &vitals("A4", "MRN-1", "Anna Berg", "02", "83", "N", ""),
    );
    let next = resumed.next_event();
    assert_eq!(
        (name(&next), next.json()["message_id"].as_i64()),
        ("observation", Some(4)),
        "{}",
        describe(std::slice::from_ref(&next))
    );
    let mut ids: Vec<String> = missed.iter().map(|e| e.id.clone().unwrap()).collect();
    ids.push(next.id.clone().unwrap());
    let n_events = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n_events, "distinct ids: {ids:?}");
    resumed.close();

    // An id that this run never gave out gets a reset first.
    let unknown = events_client(&receiver, Some("nonsense"));
    let reset = unknown.next_event();
    assert_eq!(name(&reset), "reset");
    assert_eq!(reset.json(), serde_json::json!({"reason": "missed"}));
    assert!(reset.id.is_some());
    unknown.close();

    // So does an id from an earlier run of the receiver, and after the reset the stream
    // goes on live.
    drop(client);
    let data_dir = receiver.data_dir.clone();
    let (status, _) = receiver.terminate();
    assert!(status.success());
    let receiver = Receiver::start(&data_dir, &quiet);
    let old = events_client(&receiver, Some(&last_id));
    let reset = old.next_event();
    assert_eq!(name(&reset), "reset");
    let mut client = Client::connect(receiver.mllp);
    send(
        &mut client,
        &vitals("A5", "MRN-1", "Anna Berg", "02", "84", "N", ""),
    );
    let (observation, _) = old.until("observation", |_| true);
    assert_eq!(observation.json()["message_id"], 5);
    // The view was filled from the store at start: the patient has all five values.
    let (_, anna) = get_json(&receiver, "/api/v1/patients/MRN-1");
    assert_eq!(
        anna["sparklines"][0]["values"],
        serde_json::json!([80.0, 81.0, 82.0, 83.0, 84.0])
    );
}

#[test]
fn a_monitor_that_goes_quiet_turns_stale_then_offline_and_back() {
    // Statuses are announced at 1 s ticks: offline must come more than two ticks after
    // stale, or a tick on each side of the stale second would go from live straight to
    // offline (which is what a status event then says, and right).
    let (_dir, receiver) = common::start(&["--stale-after", "1s", "--offline-after", "4s"]);
    let events = events_client(&receiver, None);
    let mut client = Client::connect(receiver.mllp);
    send(
        &mut client,
        &vitals("A1", "MRN-1", "Anna Berg", "02", "80", "N", "EUI-A"),
    );
    let is = |who: &'static str, id: &'static str, status: &'static str| {
        move |e: &SseEvent| {
            let data = e.json();
            data[who] == id && data["status"] == status
        }
    };
    let (stale, _) = events.until("status", is("patient", "MRN-1", "stale"));
    let data = stale.json();
    assert_eq!(data["previous"], "live");
    assert_eq!(data["device"], Value::Null);
    assert!(data["last_message_at"].as_str().unwrap().ends_with('Z'));
    let (offline, before) = events.until("status", is("patient", "MRN-1", "offline"));
    assert_eq!(offline.json()["previous"], "stale");
    assert!(
        before
            .iter()
            .any(|e| e.json()["device"] == "EUI-A" && e.json()["status"] == "stale"),
        "the device went stale too: {before:?}"
    );
    let (_, list) = get_json(&receiver, "/api/v1/patients");
    assert_eq!(list["patients"][0]["status"], "offline");
    let (_, devices) = get_json(&receiver, "/api/v1/devices");
    assert_eq!(devices["devices"][0]["status"], "offline");

    send(
        &mut client,
        &vitals("A2", "MRN-1", "Anna Berg", "02", "80", "N", "EUI-A"),
    );
    let (back, _) = events.until("status", is("patient", "MRN-1", "live"));
    assert_eq!(back.json()["previous"], "offline");
}

#[test]
fn an_open_event_stream_does_not_hold_up_shutdown() {
    let (_dir, receiver) = common::start(&[]);
    let events = events_client(&receiver, None);
    let mut client = Client::connect(receiver.mllp);
    send(
        &mut client,
        &vitals("A1", "MRN-1", "Anna Berg", "02", "80", "N", ""),
    );
    events.until("patient", |_| true);
    let started = std::time::Instant::now();
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown waited for the event stream: {:?}",
        started.elapsed()
    );
    assert!(events.ends(), "the stream ends with the receiver");
}
