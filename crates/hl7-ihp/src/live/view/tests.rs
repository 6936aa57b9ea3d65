//! Tests of the live view's state: applying feed messages, statuses at given times,
//! sparkline and reading bounds, devices, and the JSON the snapshots render.

use std::time::Duration;

use super::*;
use crate::live::shapes::PatientView;
use crate::store::ObservationData;

const T0: i64 = 1_796_126_400_000; // 2026-12-01T12:00:00Z

fn config() -> LiveConfig {
    LiveConfig {
        stale_after: Duration::from_secs(30),
        offline_after: Duration::from_secs(300),
    }
}

fn patient(key: &str, name: &str) -> PatientData {
    PatientData {
        key: key.into(),
        id: key.into(),
        assigning_authority: "HOSP".into(),
        identifiers: format!("{key}^^^HOSP^MR"),
        name: name.into(),
        birth_date: "1951-03-02".into(),
        sex: "F".into(),
        is_update: false,
    }
}

fn observation(index: u32, code: &str, value: &str, range: &str, flags: &str) -> ObservationData {
    ObservationData {
        index,
        value_type: "NM".into(),
        code: code.into(),
        code_text: String::new(),
        code_system: "MDC".into(),
        sub_id: "1.1.1.1".into(),
        value: value.into(),
        numeric: value.parse().ok(),
        units: String::new(),
        units_text: String::new(),
        reference_range: range.into(),
        abnormal_flags: flags.into(),
        status: "F".into(),
        observed_at: String::new(),
        observed_ms: 0,
        equipment: "EUI-1".into(),
        mark: None,
    }
}

fn message(
    id: i64,
    at_ms: i64,
    patient: Option<PatientData>,
    obs: Vec<ObservationData>,
) -> FeedMessage {
    FeedMessage {
        id,
        received_at: jiff::Timestamp::from_millisecond(at_ms).unwrap(),
        outcome: Outcome::Accept,
        reason: None,
        sending_application: Some("MONITOR-03".into()),
        sending_facility: Some("ICU".into()),
        control_id: Some(format!("C{id}")),
        message_type: Some("ORU^R01".into()),
        location: Some("ICU^03^A".into()),
        device: Some("MONITOR-03".into()),
        patient,
        observations: obs
            .into_iter()
            .map(|mut o| {
                o.observed_ms = at_ms;
                o
            })
            .collect(),
        merged_from: None,
        alarms: Vec::new(),
    }
}

fn vitals(id: i64, at_ms: i64, heart_rate: &str) -> FeedMessage {
    message(
        id,
        at_ms,
        Some(patient("100234", "Anna Berg")),
        vec![
            observation(0, "147842", heart_rate, "50-120", ""),
            observation(1, "150456", "97", "90-100", ""),
        ],
    )
}

fn names(events: &[(EventKind, String)]) -> Vec<&'static str> {
    events.iter().map(|(kind, _)| kind.name()).collect()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn an_accepted_message_updates_its_patient_and_is_announced() {
    let mut view = View::new(config());
    let changes = view.apply(&[vitals(1, T0, "134")], T0 + 800, true);
    assert_eq!(names(&changes.events), ["observation", "patient"]);
    let observation = json(&changes.events[0].1);
    assert_eq!(observation["patient"], "100234");
    assert_eq!(observation["message_id"], 1);
    assert_eq!(observation["received_at"], "2026-12-01T12:00:00.000Z");
    assert_eq!(observation["values"].as_array().unwrap().len(), 2);
    assert_eq!(observation["values"][0]["alert"]["text"], "> 120");

    let patient = json(&changes.events[1].1);
    assert_eq!(patient["key"], "100234");
    assert_eq!(patient["name"], "Anna Berg");
    assert_eq!(patient["location"], "ICU^03^A");
    assert_eq!(patient["device"], "MONITOR-03");
    assert_eq!(patient["status"], "live");
    assert_eq!(patient["silent_seconds"], 0.8);
    assert_eq!(patient["last_message_id"], 1);
    assert_eq!(patient["severity"], 1);
    assert_eq!(patient["values_missing"], false);
    assert_eq!(patient["latest"][0]["vital"], "heart_rate");
    assert_eq!(patient["sparklines"][0]["values"], json("[134.0]"));
    assert_eq!(
        patient["sparklines"][0]["times_ms"],
        json(&format!("[{T0}]"))
    );

    assert_eq!(changes.patients.len(), 1);
    assert_eq!(changes.devices.len(), 1);
    assert_eq!(changes.devices[0].id, "EUI-1");
    assert_eq!(changes.devices[0].kind, DeviceKind::Equipment);
    assert_eq!(changes.devices[0].patient.as_deref(), Some("100234"));
}

#[test]
fn the_snapshot_json_is_the_patient_view() {
    let mut view = View::new(config());
    let changes = view.apply(&[vitals(1, T0, "80")], T0, false);
    assert!(changes.events.is_empty(), "nothing announced at start");
    let snapshot = &changes.patients[0];
    let body = view.structured("100234");
    assert_eq!(body.sparklines[0].values, [80.0]);
    assert_eq!(body.sparklines[0].times_ms, [T0]);
    assert_eq!(body.latest.len(), 2);
    for now in [T0 + 1_000, T0 + 31_000, T0 + 301_000] {
        let expected = PatientView {
            status: status_at(Some(T0), now, &config()),
            silent_seconds: Some((now - T0) as f64 / 1000.0),
            body: body.clone(),
        };
        assert_eq!(
            json(&snapshot.json(now, &config())),
            serde_json::to_value(&expected).unwrap()
        );
    }
    // A patient without messages has no silence to measure.
    let mut changes = Changes::default();
    view.add_patient(&patient("7", "Ola Nord"), &mut changes);
    let quiet = json(&changes.patients[0].json(T0, &config()));
    assert_eq!(quiet["status"], "offline");
    assert_eq!(quiet["silent_seconds"], serde_json::Value::Null);
    assert_eq!(quiet["latest"], json("[]"));
}

#[test]
fn the_latest_value_of_each_code_replaces_the_one_before() {
    let mut view = View::new(config());
    view.apply(&[vitals(1, T0, "134")], T0, true);
    let changes = view.apply(&[vitals(2, T0 + 1_000, "80")], T0 + 1_000, true);
    let patient = json(&changes.patients[0].json(T0 + 1_000, &config()));
    let latest = patient["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[0]["value"], "80");
    assert_eq!(latest[0]["message_id"], 2);
    assert_eq!(patient["severity"], 0);
    assert_eq!(patient["sparklines"][0]["values"], json("[134.0, 80.0]"));
}

#[test]
fn sparklines_keep_the_last_values_only() {
    let mut view = View::new(config());
    let messages: Vec<FeedMessage> = (0..SPARKLINE_POINTS as i64 + 25)
        .map(|n| vitals(n + 1, T0 + n * 1_000, &format!("{}.{}", 60 + n, n % 10)))
        .collect();
    let changes = view.apply(&messages, T0, false);
    let patient = json(&changes.patients[0].json(T0, &config()));
    let values = patient["sparklines"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), SPARKLINE_POINTS);
    assert_eq!(values[0], 85.5, "the oldest 25 are gone");
    assert_eq!(values[SPARKLINE_POINTS - 1], 144.4);
    let times = patient["sparklines"][0]["times_ms"].as_array().unwrap();
    assert_eq!(times[0], T0 + 25_000);
    // The JSON kept in parts is what serde makes of the whole, after the ring wrapped too.
    let expected = PatientView {
        status: Status::Offline,
        silent_seconds: Some(0.0),
        body: view.structured("100234"),
    };
    let mut rendered = json(&changes.patients[0].json(T0, &config()));
    rendered["status"] = "offline".into();
    assert_eq!(rendered, serde_json::to_value(&expected).unwrap());
    assert_eq!(
        changes.patients.len(),
        1,
        "one snapshot per patient per batch, however many messages"
    );
}

#[test]
fn codes_and_sparklines_per_patient_are_bounded() {
    let mut view = View::new(config());
    let many: Vec<ObservationData> = (0..MAX_READINGS_PER_PATIENT as u32 + 10)
        .map(|n| {
            let mut o = observation(n, "147842", "70", "", "");
            o.sub_id = format!("{n}");
            o
        })
        .collect();
    let changes = view.apply(
        &[message(1, T0, Some(patient("1", "A B")), many)],
        T0,
        false,
    );
    let patient = json(&changes.patients[0].json(T0, &config()));
    assert_eq!(
        patient["latest"].as_array().unwrap().len(),
        MAX_READINGS_PER_PATIENT
    );
    assert_eq!(patient["latest"][0]["sub_id"], "10", "the oldest gave way");
    assert_eq!(
        patient["sparklines"].as_array().unwrap().len(),
        MAX_SPARKLINES_PER_PATIENT
    );
}

#[test]
fn missing_values_are_never_plotted_and_are_told_apart() {
    let mut view = View::new(config());
    view.apply(&[vitals(1, T0, "72")], T0, false);
    let changes = view.apply(&[vitals(2, T0 + 1_000, "")], T0 + 1_000, true);
    let mut second = vitals(2, T0 + 1_000, "");
    second.observations[1].value = "NAV".into();
    let mut view2 = View::new(config());
    view2.apply(&[vitals(1, T0, "72")], T0, false);
    let all_missing = view2.apply(&[second], T0 + 1_000, false);
    let some = json(&changes.patients[0].json(T0 + 1_000, &config()));
    assert_eq!(some["values_missing"], false, "SpO2 was still there");
    assert_eq!(some["latest"][0]["state"], "missing");
    assert_eq!(some["sparklines"][0]["values"], json("[72.0]"));
    let none = json(&all_missing.patients[0].json(T0 + 1_000, &config()));
    assert_eq!(none["values_missing"], true);
    // A message without observations (an ADT) says nothing about the values.
    let adt = message(3, T0 + 2_000, Some(patient("100234", "Anna Berg")), vec![]);
    let changes = view2.apply(&[adt], T0 + 2_000, true);
    assert_eq!(names(&changes.events), ["patient"], "no observation event");
    let after = json(&changes.patients[0].json(T0 + 2_000, &config()));
    assert_eq!(after["values_missing"], true);
    assert_eq!(after["last_message_id"], 3);
    assert!(changes.devices.is_empty(), "an ADT names no device");
}

#[test]
fn refused_messages_are_announced_and_change_no_patient() {
    let mut view = View::new(config());
    let mut refused = vitals(1, T0, "80");
    refused.outcome = Outcome::Reject;
    refused.reason = Some("unsupported version".into());
    refused.patient = None;
    refused.observations.clear();
    refused.message_type = None;
    let changes = view.apply(&[refused], T0, true);
    assert_eq!(names(&changes.events), ["rejected"]);
    let event = json(&changes.events[0].1);
    assert_eq!(event["outcome"], "rejected");
    assert_eq!(event["reason"], "unsupported version");
    assert_eq!(event["sending_application"], "MONITOR-03");
    assert_eq!(event["message_type"], serde_json::Value::Null);
    assert!(changes.patients.is_empty() && changes.devices.is_empty());
}

#[test]
fn statuses_follow_the_clock_and_changes_are_announced_once() {
    let mut view = View::new(config());
    view.apply(&[vitals(1, T0, "80")], T0, true);
    assert_eq!(
        view.tick(T0 + 30_000),
        vec![],
        "30 s is not longer than 30 s"
    );
    let stale = view.tick(T0 + 30_001);
    assert_eq!(
        names(&stale),
        ["status", "status"],
        "the patient, then the device"
    );
    let patient = json(&stale[0].1);
    assert_eq!(patient["patient"], "100234");
    assert_eq!(patient["device"], serde_json::Value::Null);
    assert_eq!(
        (patient["previous"].as_str(), patient["status"].as_str()),
        (Some("live"), Some("stale"))
    );
    assert_eq!(patient["last_message_at"], "2026-12-01T12:00:00.000Z");
    assert_eq!(json(&stale[1].1)["device"], "EUI-1");
    assert_eq!(view.tick(T0 + 40_000), vec![], "announced once");
    let offline = view.tick(T0 + 300_001);
    assert_eq!(json(&offline[0].1)["status"], "offline");
    assert_eq!(json(&offline[0].1)["previous"], "stale");

    // A message brings it back, and that is announced with the message.
    let back = view.apply(&[vitals(2, T0 + 400_000, "80")], T0 + 400_000, true);
    assert_eq!(
        names(&back.events),
        ["observation", "patient", "status", "status"]
    );
    let patient = json(&back.events[2].1);
    assert_eq!(
        (patient["previous"].as_str(), patient["status"].as_str()),
        (Some("offline"), Some("live"))
    );
    assert_eq!(view.tick(T0 + 400_500), vec![]);
}

#[test]
fn status_is_computed_at_each_read() {
    let mut view = View::new(config());
    let changes = view.apply(&[vitals(1, T0, "80")], T0, false);
    let snapshot = &changes.patients[0];
    assert_eq!(snapshot.status(T0 + 1_000, &config()), Status::Live);
    assert_eq!(snapshot.status(T0 + 31_000, &config()), Status::Stale);
    assert_eq!(snapshot.status(T0 + 301_000, &config()), Status::Offline);
    let device = &changes.devices[0];
    assert_eq!(device.view(T0 + 31_000, &config()).status, Status::Stale);
    assert_eq!(status_at(None, T0, &config()), Status::Offline);
}

#[test]
fn a_message_seen_at_start_is_not_applied_again() {
    let mut view = View::new(config());
    view.apply(
        &[vitals(1, T0, "80"), vitals(2, T0 + 1_000, "81")],
        T0,
        false,
    );
    // Following starts before the seed read its patients: message 2 comes again.
    let changes = view.apply(
        &[vitals(2, T0 + 1_000, "81"), vitals(3, T0 + 2_000, "82")],
        T0 + 2_000,
        true,
    );
    let patient = json(&changes.patients[0].json(T0 + 2_000, &config()));
    assert_eq!(
        patient["sparklines"][0]["values"],
        json("[80.0, 81.0, 82.0]")
    );
    assert_eq!(
        names(&changes.events),
        ["observation", "patient"],
        "message 2 is not announced again"
    );
    assert_eq!(changes.devices[0].n_messages, 3);
}

#[test]
fn devices_are_equipment_ids_else_the_sending_application() {
    let mut view = View::new(config());
    let mut two = vitals(1, T0, "80");
    two.observations[1].equipment = "EUI-2".into();
    let mut none = message(2, T0 + 1, None, vec![observation(0, "X", "1", "", "")]);
    none.observations[0].equipment.clear();
    let changes = view.apply(&[two, none], T0 + 1, true);
    let mut ids: Vec<(String, DeviceKind)> = changes
        .devices
        .iter()
        .map(|d| (d.id.clone(), d.kind))
        .collect();
    ids.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ids,
        [
            ("EUI-1".into(), DeviceKind::Equipment),
            ("EUI-2".into(), DeviceKind::Equipment),
            ("MONITOR-03".into(), DeviceKind::Application),
        ]
    );
    let application = changes
        .devices
        .iter()
        .find(|d| d.id == "MONITOR-03")
        .unwrap();
    assert_eq!(application.patient, None);
    // A message without a patient still announces its observations.
    let observation = changes
        .events
        .iter()
        .filter(|(k, _)| *k == EventKind::Observation)
        .nth(1)
        .unwrap();
    assert_eq!(json(&observation.1)["patient"], serde_json::Value::Null);
}

#[test]
fn the_view_holds_a_bounded_number_of_patients() {
    let mut view = View::new(config());
    let messages: Vec<FeedMessage> = (0..MAX_PATIENTS as i64 + 3)
        .map(|n| {
            message(
                n + 1,
                T0 + n,
                Some(patient(&format!("P{n}"), "N N")),
                vec![],
            )
        })
        .collect();
    let changes = view.apply(&messages, T0, false);
    assert_eq!(view.len().0, MAX_PATIENTS);
    assert_eq!(
        changes.removed_patients,
        ["P0", "P1", "P2"],
        "the longest silent go"
    );
}

#[test]
fn location_and_device_are_kept_when_a_message_lacks_them() {
    let mut view = View::new(config());
    view.apply(&[vitals(1, T0, "80")], T0, false);
    let mut bare = vitals(2, T0 + 1_000, "80");
    bare.location = None;
    let changes = view.apply(&[bare], T0 + 1_000, false);
    let patient = json(&changes.patients[0].json(T0 + 1_000, &config()));
    assert_eq!(patient["location"], "ICU^03^A");
    assert_eq!(
        changes.devices[0].location, None,
        "a device shows its last message"
    );
}

#[test]
fn an_alarm_report_is_announced_and_kept_newest_first_without_readings() {
    let mut view = View::new(config());
    let alarm = |index: u32, state: &str| crate::alarm::AlarmData {
        index,
        source: "EUI-1".into(),
        type_code: "196670".into(),
        type_text: "MDC_EVT_LO_VAL_LT_LIM".into(),
        type_system: "MDC".into(),
        text: "SPO2 LOW".into(),
        priority: "medium".into(),
        state: state.into(),
        ..Default::default()
    };
    let mut r40 = message(1, T0, Some(patient("100234", "Anna Berg")), Vec::new());
    r40.message_type = Some("ORU^R40".into());
    r40.alarms = vec![alarm(0, "active"), alarm(1, "latched")];
    let changes = view.apply(&[r40], T0 + 800, true);
    assert_eq!(names(&changes.events), ["alarm", "alarm", "patient"]);
    let first = json(&changes.events[0].1);
    assert_eq!(first["patient"], "100234");
    assert_eq!(first["message_id"], 1);
    assert_eq!(first["state"], "active");
    let body = json(&changes.events[2].1);
    assert_eq!(body["latest"], serde_json::json!([]));
    // Newest first: the message's last alarm leads.
    assert_eq!(body["alarms"][0]["index"], 1, "{body}");
    assert_eq!(body["alarms"][1]["index"], 0);

    // Later alarms push older ones out past the bound.
    let more: Vec<FeedMessage> = (2..20)
        .map(|id| {
            let mut m = message(
                id,
                T0 + id,
                Some(patient("100234", "Anna Berg")),
                Vec::new(),
            );
            m.alarms = vec![alarm(0, "inactive")];
            m
        })
        .collect();
    let changes = view.apply(&more, T0 + 900, true);
    let body = json(&changes.events.last().unwrap().1);
    let kept = body["alarms"].as_array().unwrap();
    assert_eq!(kept.len(), crate::live::alarms::MAX_ALARMS_PER_PATIENT);
    assert_eq!(kept[0]["message_id"], 19);

    // Without a patient: announced all the same, and on its source device's tile (made
    // for it: the device has sent nothing else).
    let mut lone = message(30, T0 + 1000, None, Vec::new());
    lone.alarms = vec![alarm(0, "active")];
    let changes = view.apply(&[lone], T0 + 1100, true);
    assert_eq!(names(&changes.events), ["alarm", "patient"]);
    assert_eq!(
        json(&changes.events[0].1)["patient"],
        serde_json::Value::Null
    );
    let tile = json(&changes.events[1].1);
    assert_eq!(tile["key"], "device:EUI-1", "{tile}");
    assert_eq!(tile["unassigned"], true);
    assert_eq!(tile["device"], "EUI-1");
    assert_eq!(tile["location"], "ICU^03^A");
    assert_eq!(tile["alarms"][0]["state"], "active", "{tile}");
    assert_eq!(tile["latest"], serde_json::json!([]));

    // The device's next alarm joins the first on the same tile.
    let mut again = message(31, T0 + 1200, None, Vec::new());
    again.alarms = vec![alarm(0, "inactive")];
    let changes = view.apply(&[again], T0 + 1300, true);
    let tile = json(&changes.events[1].1);
    assert_eq!(tile["key"], "device:EUI-1");
    assert_eq!(tile["alarms"].as_array().unwrap().len(), 2, "{tile}");
    assert_eq!(tile["alarms"][0]["state"], "inactive");
}
