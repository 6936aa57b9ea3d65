//! The live view's state, derived from the change feed: each patient's data, location and
//! latest value per code with sparklines, each device's last message, and whose status was
//! last announced. Pure: [`View::apply`] takes feed messages and the time, and returns the
//! events to publish and the snapshots the readers see; [`View::tick`] finds status changes.
//!
//! Only the live task owns a `View`; readers get immutable [`PatientSnapshot`]s (the
//! patient's JSON rendered once per change) and [`DeviceSnapshot`]s, so an answer never waits
//! for the task, nor the task for an answer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::receive::LiveConfig;
use crate::documents::reading::{AlertLevel, Reading, ValueState};
use crate::store::{FeedMessage, Outcome, PatientData, outcome_name, utc_text};

use super::log::EventKind;
use super::shapes::{
    DeviceKind, DeviceView, ObservationEvent, PatientBody, RejectedEvent, Sparkline, Status,
    StatusEvent,
};

/// Patients the view holds; past it, the one silent longest is dropped (it is still in the
/// store and in the API's observations).
pub const MAX_PATIENTS: usize = 10_000;
/// Devices the view holds; past it, the one silent longest is dropped.
pub const MAX_DEVICES: usize = 10_000;
/// Codes (with sub-ids) whose latest value a patient keeps; past it, the one updated
/// longest ago gives way.
pub const MAX_READINGS_PER_PATIENT: usize = 64;
/// Sparklines a patient keeps.
pub const MAX_SPARKLINES_PER_PATIENT: usize = 16;
/// Values per sparkline (docs/api.md).
pub const SPARKLINE_POINTS: usize = 60;
/// Equipment ids of one message counted as devices.
pub const MAX_DEVICES_PER_MESSAGE: usize = 8;

/// The status of something whose last message arrived at `last_ms`, at `now_ms`: `stale`
/// after more than `stale_after` without a message, `offline` after more than
/// `offline_after` (or without any).
pub fn status_at(last_ms: Option<i64>, now_ms: i64, config: &LiveConfig) -> Status {
    let Some(last) = last_ms else {
        return Status::Offline;
    };
    let silent = u128::try_from(now_ms.saturating_sub(last)).unwrap_or(0);
    if silent > config.offline_after.as_millis() {
        Status::Offline
    } else if silent > config.stale_after.as_millis() {
        Status::Stale
    } else {
        Status::Live
    }
}

/// A patient as readers see them: what filtering and sorting need, and the JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct PatientSnapshot {
    /// The identity key.
    pub key: String,
    /// PID-3.1.
    pub id: String,
    /// The name.
    pub name: String,
    /// PV1-3.
    pub location: Option<String>,
    /// When the last message arrived, ms since the epoch.
    pub last_ms: Option<i64>,
    /// 0, 1 or 2.
    pub severity: u8,
    /// Id, name and location in lower case, for `q`.
    search: String,
    /// The JSON object without `status` and `silent_seconds`.
    body: String,
}

impl PatientSnapshot {
    fn new(body: &PatientBody, last_ms: Option<i64>, json: String) -> PatientSnapshot {
        let location = body.location.as_deref().unwrap_or("");
        // An unassigned device is found by its id.
        let id = match (&body.device, body.unassigned) {
            (Some(device), true) => device.as_str(),
            _ => body.id.as_str(),
        };
        PatientSnapshot {
            key: body.key.clone(),
            id: body.id.clone(),
            name: body.name.clone(),
            location: body.location.clone(),
            last_ms,
            severity: body.severity,
            search: format!("{id}\n{}\n{location}", body.name).to_lowercase(),
            body: json,
        }
    }

    /// Whether `needle` (already in lower case) is part of the id, the name or the location.
    pub fn matches(&self, needle: &str) -> bool {
        self.search.contains(needle)
    }

    /// The status at `now_ms`.
    pub fn status(&self, now_ms: i64, config: &LiveConfig) -> Status {
        status_at(self.last_ms, now_ms, config)
    }

    /// Appends the patient's JSON at `now_ms` (a [`super::shapes::PatientView`]) to `out`.
    pub fn write_json(&self, out: &mut String, now_ms: i64, config: &LiveConfig) {
        let status = self.status(now_ms, config);
        let _ = write!(out, r#"{{"status":"{}","silent_seconds":"#, status.name());
        match self.last_ms {
            Some(last) => {
                let silent = now_ms.saturating_sub(last).max(0) as f64 / 1000.0;
                let _ = write!(out, "{silent:?}");
            }
            None => out.push_str("null"),
        }
        match self.body.strip_prefix('{') {
            Some(rest) if rest != "}" => {
                out.push(',');
                out.push_str(rest);
            }
            _ => out.push('}'),
        }
    }

    /// About how long the patient's JSON is.
    pub fn json_len(&self) -> usize {
        self.body.len() + 48
    }

    /// The patient's JSON at `now_ms`.
    pub fn json(&self, now_ms: i64, config: &LiveConfig) -> String {
        let mut out = String::with_capacity(self.json_len());
        self.write_json(&mut out, now_ms, config);
        out
    }
}

/// A device as readers see it: everything but the status, which depends on the time.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSnapshot {
    /// OBX-18.1, else MSH-3.
    pub id: String,
    /// Which of the two.
    pub kind: DeviceKind,
    /// MSH-3 of its last message.
    pub sending_application: String,
    /// The patient of its last message.
    pub patient: Option<String>,
    /// Their name.
    pub patient_name: Option<String>,
    /// PV1-3 of its last message.
    pub location: Option<String>,
    /// When its last message arrived, ms since the epoch.
    pub last_ms: i64,
    /// That message's id.
    pub last_message_id: i64,
    /// Messages seen from it.
    pub n_messages: u64,
}

impl DeviceSnapshot {
    /// The device as the API shows it at `now_ms`.
    pub fn view(&self, now_ms: i64, config: &LiveConfig) -> DeviceView {
        DeviceView {
            id: self.id.clone(),
            kind: self.kind,
            sending_application: self.sending_application.clone(),
            patient: self.patient.clone(),
            patient_name: self.patient_name.clone(),
            location: self.location.clone(),
            last_message_at: millis_text(self.last_ms),
            last_message_id: self.last_message_id,
            n_messages: self.n_messages,
            status: status_at(Some(self.last_ms), now_ms, config),
        }
    }
}

/// What applying messages (or a tick) changed: events to publish, in order, and the
/// snapshots to hand to readers.
#[derive(Debug, Default)]
pub struct Changes {
    /// Events with their JSON data.
    pub events: Vec<(EventKind, String)>,
    /// Patients changed or new.
    pub patients: Vec<Arc<PatientSnapshot>>,
    /// Patients dropped for [`MAX_PATIENTS`].
    pub removed_patients: Vec<String>,
    /// Devices changed or new.
    pub devices: Vec<DeviceSnapshot>,
    /// Devices dropped for [`MAX_DEVICES`].
    pub removed_devices: Vec<String>,
}

struct PatientState {
    /// Everything but `latest` and `sparklines`, which stay empty here: their JSON is kept
    /// rendered in `latest` and `lines`, so a change renders only what changed.
    body: PatientBody,
    latest: Vec<Kept>,
    lines: Vec<Line>,
    last_ms: Option<i64>,
    /// The status last announced (or found at start); `None` for a patient just seen.
    announced: Option<Status>,
}

impl PatientState {
    fn new(patient: &PatientData) -> PatientState {
        PatientState {
            body: body_of(patient),
            latest: Vec::new(),
            lines: Vec::new(),
            last_ms: None,
            announced: None,
        }
    }

    /// The patient's JSON without the fields of the time of an answer: the body's fields
    /// rendered by serde, then the readings and sparklines from their rendered parts.
    fn render(&self) -> String {
        const EMPTY: &str = r#""latest":[],"sparklines":[]}"#;
        let head = serde_json::to_string(&self.body).unwrap_or_default();
        let Some(head) = head.strip_suffix(EMPTY) else {
            return "{}".into();
        };
        let size = head.len()
            + self.latest.iter().map(|k| k.json.len() + 1).sum::<usize>()
            + self.lines.iter().map(Line::len).sum::<usize>()
            + EMPTY.len();
        let mut out = String::with_capacity(size);
        out.push_str(head);
        out.push_str(r#""latest":["#);
        for (n, kept) in self.latest.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&kept.json);
        }
        out.push_str(r#"],"sparklines":["#);
        for (n, line) in self.lines.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            line.write(&mut out);
        }
        out.push_str("]}");
        out
    }

    fn snapshot(&self) -> PatientSnapshot {
        PatientSnapshot::new(&self.body, self.last_ms, self.render())
    }
}

/// A reading and its JSON, rendered once for the event and every later answer.
struct Kept {
    reading: Reading,
    json: String,
}

impl Kept {
    fn new(reading: Reading) -> Kept {
        let json = serde_json::to_string(&reading).unwrap_or_else(|_| "null".into());
        Kept { reading, json }
    }
}

/// A sparkline: its code and sub-id, and its numbers as JSON text, each rendered once.
struct Line {
    code: String,
    sub_id: String,
    /// `{"code":…,"sub_id":…,`.
    head: String,
    times: Series,
    values: Series,
}

impl Line {
    fn new(code: &str, sub_id: &str) -> Line {
        const EMPTY: &str = r#""times_ms":[],"values":[]}"#;
        let empty = Sparkline {
            code: code.to_owned(),
            sub_id: sub_id.to_owned(),
            times_ms: VecDeque::new(),
            values: VecDeque::new(),
        };
        let json = serde_json::to_string(&empty).unwrap_or_default();
        Line {
            code: code.to_owned(),
            sub_id: sub_id.to_owned(),
            head: json.strip_suffix(EMPTY).unwrap_or("{").to_owned(),
            times: Series::default(),
            values: Series::default(),
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.times.text.len() + self.values.text.len() + 32
    }

    fn write(&self, out: &mut String) {
        out.push_str(&self.head);
        out.push_str(r#""times_ms":["#);
        out.push_str(&self.times.text);
        out.push_str(r#"],"values":["#);
        out.push_str(&self.values.text);
        out.push_str("]}");
    }
}

/// Up to [`SPARKLINE_POINTS`] JSON numbers joined with `,`.
#[derive(Default)]
struct Series {
    text: String,
    n: usize,
}

impl Series {
    fn push(&mut self, number: &str) {
        if self.n >= SPARKLINE_POINTS {
            match self.text.find(',') {
                Some(comma) => {
                    self.text.drain(..=comma);
                }
                None => self.text.clear(),
            }
            self.n -= 1;
        }
        if self.n > 0 {
            self.text.push(',');
        }
        self.text.push_str(number);
        self.n += 1;
    }
}

struct DeviceState {
    snapshot: DeviceSnapshot,
    announced: Option<Status>,
}

/// The whole state; owned by the live task.
pub struct View {
    config: LiveConfig,
    patients: HashMap<String, PatientState>,
    devices: HashMap<String, DeviceState>,
}

impl View {
    /// An empty view with these thresholds.
    pub fn new(config: LiveConfig) -> View {
        View {
            config,
            patients: HashMap::new(),
            devices: HashMap::new(),
        }
    }

    /// How many patients and devices it holds.
    pub fn len(&self) -> (usize, usize) {
        (self.patients.len(), self.devices.len())
    }

    /// Adds a patient the store knows, without messages yet (they come through
    /// [`View::apply`]); nothing is announced.
    pub fn add_patient(&mut self, data: &PatientData, changes: &mut Changes) {
        if self.patients.contains_key(&data.key) {
            return;
        }
        self.make_room_for_patient(changes);
        let state = PatientState::new(data);
        changes.patients.push(Arc::new(state.snapshot()));
        self.patients.insert(data.key.clone(), state);
    }

    /// Applies feed messages in commit order at `now_ms`. With `announce`, the events of
    /// the messages are returned too (`observation`, `rejected`, one `patient` per patient
    /// changed, `status` when one comes back); without (at start), only the snapshots.
    /// A message a patient or device has already seen (by id) is not applied to it again.
    pub fn apply(&mut self, messages: &[FeedMessage], now_ms: i64, announce: bool) -> Changes {
        let mut changes = Changes::default();
        let mut touched_patients: Vec<String> = Vec::new();
        let mut touched_set: HashSet<String> = HashSet::new();
        let mut touched_devices: Vec<String> = Vec::new();
        let mut touched_device_set: HashSet<String> = HashSet::new();
        for message in messages {
            if message.outcome != Outcome::Accept {
                if announce {
                    changes
                        .events
                        .push((EventKind::Rejected, rejected_json(message)));
                }
                continue;
            }
            // A merge: the prior patient's history is the survivor's now (their own
            // tile goes; the survivor's readings come from what it already holds).
            if let Some(prior) = &message.merged_from
                && self.patients.remove(prior).is_some()
            {
                changes.removed_patients.push(prior.clone());
            }
            let readings: Vec<Kept> = message
                .observations
                .iter()
                .map(|o| Kept::new(Reading::new(o, message.id, message.received_at)))
                .collect();
            let observation =
                (announce && !readings.is_empty()).then(|| observation_json(message, &readings));
            let alarms = super::alarms::AlarmView::of_message(message);
            let mut fresh = true;
            if let Some(patient) = &message.patient {
                fresh = self.apply_to_patient(patient, message, readings, &mut changes);
                if fresh && let Some(state) = self.patients.get_mut(&patient.key) {
                    super::alarms::remember(&mut state.body.alarms, &alarms);
                }
                if fresh && touched_set.insert(patient.key.clone()) {
                    touched_patients.push(patient.key.clone());
                }
            } else if let Some((stand_in, device)) = unassigned_of(message) {
                // No patient: the device's own tile, beside the patients'.
                fresh = self.apply_to_patient(&stand_in, message, readings, &mut changes);
                if let Some(state) = self.patients.get_mut(&stand_in.key) {
                    state.body.unassigned = true;
                    state.body.device = Some(device);
                    if fresh {
                        super::alarms::remember(&mut state.body.alarms, &alarms);
                    }
                }
                if fresh && touched_set.insert(stand_in.key.clone()) {
                    touched_patients.push(stand_in.key.clone());
                }
            }
            if fresh && announce {
                for alarm in &alarms {
                    let json = serde_json::to_string(alarm).unwrap_or_else(|_| "{}".into());
                    changes.events.push((EventKind::Alarm, json));
                }
            }
            for (id, kind) in device_ids(message) {
                if self.apply_to_device(&id, kind, message, &mut changes)
                    && touched_device_set.insert(id.clone())
                {
                    touched_devices.push(id);
                }
            }
            if fresh && let Some(observation) = observation {
                changes.events.push((EventKind::Observation, observation));
            }
        }
        for key in touched_patients {
            let Some(state) = self.patients.get_mut(&key) else {
                continue;
            };
            let snapshot = Arc::new(state.snapshot());
            let status = snapshot.status(now_ms, &self.config);
            if announce {
                changes
                    .events
                    .push((EventKind::Patient, snapshot.json(now_ms, &self.config)));
                if let Some(previous) = state.announced
                    && previous != status
                {
                    changes.events.push((
                        EventKind::Status,
                        status_json(Some(&key), None, status, previous, state.last_ms),
                    ));
                }
            }
            state.announced = Some(status);
            changes.patients.push(snapshot);
        }
        for id in touched_devices {
            let Some(state) = self.devices.get_mut(&id) else {
                continue;
            };
            let status = status_at(Some(state.snapshot.last_ms), now_ms, &self.config);
            if announce
                && let Some(previous) = state.announced
                && previous != status
            {
                changes.events.push((
                    EventKind::Status,
                    status_json(
                        None,
                        Some(&id),
                        status,
                        previous,
                        Some(state.snapshot.last_ms),
                    ),
                ));
            }
            state.announced = Some(status);
            changes.devices.push(state.snapshot.clone());
        }
        changes
    }

    /// The status changes since the last tick or message, at `now_ms`, as `status` events
    /// (patients first, then devices, each by key).
    pub fn tick(&mut self, now_ms: i64) -> Vec<(EventKind, String)> {
        let config = self.config;
        let mut patients: Vec<(&String, String)> = Vec::new();
        for (key, state) in &mut self.patients {
            let status = status_at(state.last_ms, now_ms, &config);
            if let Some(previous) = state.announced.replace(status)
                && previous != status
            {
                let event = status_json(Some(key), None, status, previous, state.last_ms);
                patients.push((key, event));
            }
        }
        let mut devices: Vec<(&String, String)> = Vec::new();
        for (id, state) in &mut self.devices {
            let last = Some(state.snapshot.last_ms);
            let status = status_at(last, now_ms, &config);
            if let Some(previous) = state.announced.replace(status)
                && previous != status
            {
                devices.push((id, status_json(None, Some(id), status, previous, last)));
            }
        }
        patients.sort_unstable_by(|a, b| a.0.cmp(b.0));
        devices.sort_unstable_by(|a, b| a.0.cmp(b.0));
        patients
            .into_iter()
            .chain(devices)
            .map(|(_, event)| (EventKind::Status, event))
            .collect()
    }

    /// Applies an accepted message to its patient; false when the patient had seen it.
    fn apply_to_patient(
        &mut self,
        patient: &PatientData,
        message: &FeedMessage,
        readings: Vec<Kept>,
        changes: &mut Changes,
    ) -> bool {
        if !self.patients.contains_key(&patient.key) {
            self.make_room_for_patient(changes);
            self.patients
                .insert(patient.key.clone(), PatientState::new(patient));
        }
        let Some(state) = self.patients.get_mut(&patient.key) else {
            return false;
        };
        if state
            .body
            .last_message_id
            .is_some_and(|id| id >= message.id)
        {
            return false;
        }
        let body = &mut state.body;
        let fresh = body_of(patient);
        body.id = fresh.id;
        body.assigning_authority = fresh.assigning_authority;
        body.identifiers = fresh.identifiers;
        body.name = fresh.name;
        body.birth_date = fresh.birth_date;
        body.sex = fresh.sex;
        if let Some(location) = message.location.as_deref().filter(|l| !l.is_empty()) {
            body.location = Some(location.to_owned());
        }
        if let Some(device) = message.device.as_deref().filter(|d| !d.is_empty()) {
            body.device = Some(device.to_owned());
        }
        body.last_message_at = Some(utc_text(message.received_at));
        body.last_message_id = Some(message.id);
        state.last_ms = Some(message.received_at.as_millisecond());
        if !readings.is_empty() {
            body.values_missing = readings.iter().all(|k| k.reading.state != ValueState::Ok);
        }
        for (kept, observation) in readings.into_iter().zip(&message.observations) {
            let reading = &kept.reading;
            if reading.state == ValueState::Ok
                && reading.vital.is_some()
                && let Some(value) = reading.numeric
            {
                plot(&mut state.lines, reading, observation.observed_ms, value);
            }
            remember(&mut state.latest, kept);
        }
        body.severity = state
            .latest
            .iter()
            .filter_map(|k| k.reading.alert.as_ref())
            .map(|a| match a.level {
                AlertLevel::Warning => 1,
                AlertLevel::Critical => 2,
            })
            .max()
            .unwrap_or(0);
        true
    }

    /// Applies an accepted message to one of its devices; false when it had seen it.
    fn apply_to_device(
        &mut self,
        id: &str,
        kind: DeviceKind,
        message: &FeedMessage,
        changes: &mut Changes,
    ) -> bool {
        if let Some(state) = self.devices.get(id)
            && state.snapshot.last_message_id >= message.id
        {
            return false;
        }
        if !self.devices.contains_key(id) {
            self.make_room_for_device(changes);
        }
        let n_messages = self.devices.get(id).map_or(0, |s| s.snapshot.n_messages);
        let announced = self.devices.get(id).and_then(|s| s.announced);
        let snapshot = DeviceSnapshot {
            id: id.to_owned(),
            kind,
            sending_application: message
                .sending_application
                .clone()
                .or_else(|| message.device.clone())
                .unwrap_or_default(),
            patient: message.patient.as_ref().map(|p| p.key.clone()),
            patient_name: message.patient.as_ref().map(|p| p.name.clone()),
            location: message.location.clone().filter(|l| !l.is_empty()),
            last_ms: message.received_at.as_millisecond(),
            last_message_id: message.id,
            n_messages: n_messages + 1,
        };
        self.devices.insert(
            id.to_owned(),
            DeviceState {
                snapshot,
                announced,
            },
        );
        true
    }

    fn make_room_for_patient(&mut self, changes: &mut Changes) {
        if self.patients.len() < MAX_PATIENTS {
            return;
        }
        let oldest = self
            .patients
            .iter()
            .min_by_key(|(key, state)| (state.last_ms, *key))
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.patients.remove(&key);
            changes.removed_patients.push(key);
        }
    }

    fn make_room_for_device(&mut self, changes: &mut Changes) {
        if self.devices.len() < MAX_DEVICES {
            return;
        }
        let oldest = self
            .devices
            .iter()
            .min_by_key(|(id, state)| (state.snapshot.last_ms, *id))
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest {
            self.devices.remove(&id);
            changes.removed_devices.push(id);
        }
    }
}

fn body_of(patient: &PatientData) -> PatientBody {
    PatientBody {
        key: patient.key.clone(),
        id: patient.id.clone(),
        assigning_authority: patient.assigning_authority.clone(),
        identifiers: patient.identifiers.clone(),
        name: patient.name.clone(),
        birth_date: patient.birth_date.clone(),
        sex: patient.sex.clone(),
        location: None,
        device: None,
        last_message_at: None,
        last_message_id: None,
        values_missing: false,
        severity: 0,
        alarms: Vec::new(),
        latest: Vec::new(),
        sparklines: Vec::new(),
        unassigned: false,
    }
}

/// The stand-in patient under which an accepted message without a patient is shown: its
/// device ([`crate::unassigned::device_key`]: OBX-18.1, else MSH-3), keyed `device:<id>`,
/// with empty patient fields; an alarm report without observations is under its alarms'
/// source ([`crate::unassigned::message_device_key`]). `None` for a message without
/// observations or alarms (it measured nothing).
fn unassigned_of(message: &FeedMessage) -> Option<(PatientData, String)> {
    if message.patient.is_some() {
        return None;
    }
    let application = message
        .device
        .as_deref()
        .or(message.sending_application.as_deref())
        .unwrap_or("");
    let id =
        crate::unassigned::message_device_key(&message.observations, &message.alarms, application)?;
    let data = PatientData {
        key: format!("{}{id}", crate::unassigned::KEY_PREFIX),
        id: String::new(),
        assigning_authority: String::new(),
        identifiers: String::new(),
        name: String::new(),
        birth_date: String::new(),
        sex: String::new(),
        is_update: false,
    };
    Some((data, id))
}

/// Keeps `kept` as the latest reading of its code and sub-id.
fn remember(latest: &mut Vec<Kept>, kept: Kept) {
    let reading = &kept.reading;
    if let Some(slot) = latest
        .iter_mut()
        .find(|k| k.reading.code == reading.code && k.reading.sub_id == reading.sub_id)
    {
        *slot = kept;
        return;
    }
    if latest.len() >= MAX_READINGS_PER_PATIENT
        && let Some(oldest) = latest
            .iter()
            .enumerate()
            .min_by_key(|(_, k)| (k.reading.message_id, k.reading.index))
            .map(|(i, _)| i)
    {
        latest.remove(oldest);
    }
    latest.push(kept);
}

/// Adds a value to its code's sparkline, keeping the last [`SPARKLINE_POINTS`].
fn plot(lines: &mut Vec<Line>, reading: &Reading, time_ms: i64, value: f64) {
    let index = match lines
        .iter()
        .position(|l| l.code == reading.code && l.sub_id == reading.sub_id)
    {
        Some(index) => index,
        None if lines.len() < MAX_SPARKLINES_PER_PATIENT => {
            lines.push(Line::new(&reading.code, &reading.sub_id));
            lines.len() - 1
        }
        None => return,
    };
    let line = &mut lines[index];
    line.times.push(&time_ms.to_string());
    line.values
        .push(&serde_json::to_string(&value).unwrap_or_else(|_| "null".into()));
}

/// The `observation` event of a message: its fields by serde, its readings as rendered.
fn observation_json(message: &FeedMessage, readings: &[Kept]) -> String {
    const EMPTY: &str = r#""values":[]}"#;
    let event = ObservationEvent {
        patient: message.patient.as_ref().map(|p| p.key.clone()),
        message_id: message.id,
        received_at: utc_text(message.received_at),
        values: Vec::new(),
    };
    let head = serde_json::to_string(&event).unwrap_or_default();
    let Some(head) = head.strip_suffix(EMPTY) else {
        return "{}".into();
    };
    let mut out = String::with_capacity(
        head.len() + readings.iter().map(|k| k.json.len() + 1).sum::<usize>() + EMPTY.len(),
    );
    out.push_str(head);
    out.push_str(r#""values":["#);
    for (n, kept) in readings.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&kept.json);
    }
    out.push_str("]}");
    out
}

/// The devices of an accepted message with observations: its distinct OBX-18 equipment ids,
/// else MSH-3. A message without observations (an ADT) measured nothing and names no device:
/// a registration system is not a monitor, and a monitor's own ADT would otherwise show it
/// twice (by MSH-3 and by its equipment id).
fn device_ids(message: &FeedMessage) -> Vec<(String, DeviceKind)> {
    let mut ids: Vec<(String, DeviceKind)> = Vec::new();
    if message.observations.is_empty() {
        return ids;
    }
    for observation in &message.observations {
        let equipment = observation.equipment.trim();
        if equipment.is_empty() || ids.iter().any(|(id, _)| id == equipment) {
            continue;
        }
        if ids.len() >= MAX_DEVICES_PER_MESSAGE {
            break;
        }
        ids.push((equipment.to_owned(), DeviceKind::Equipment));
    }
    if ids.is_empty()
        && let Some(application) = message
            .device
            .as_deref()
            .or(message.sending_application.as_deref())
            .filter(|a| !a.is_empty())
    {
        ids.push((application.to_owned(), DeviceKind::Application));
    }
    ids
}

fn millis_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(utc_text)
        .unwrap_or_default()
}

fn rejected_json(message: &FeedMessage) -> String {
    let event = RejectedEvent {
        message_id: message.id,
        received_at: utc_text(message.received_at),
        outcome: outcome_name(message.outcome).to_owned(),
        reason: message.reason.clone(),
        sending_application: message.sending_application.clone(),
        message_type: message.message_type.clone(),
    };
    serde_json::to_string(&event).unwrap_or_default()
}

fn status_json(
    patient: Option<&str>,
    device: Option<&str>,
    status: Status,
    previous: Status,
    last_ms: Option<i64>,
) -> String {
    let event = StatusEvent {
        patient: patient.map(str::to_owned),
        device: device.map(str::to_owned),
        status,
        previous,
        last_message_at: last_ms.map(millis_text),
    };
    serde_json::to_string(&event).unwrap_or_default()
}

#[cfg(test)]
impl View {
    /// The patient's body with `latest` and `sparklines` filled in from their kept parts,
    /// the numbers read back from their text: what the JSON must equal.
    fn structured(&self, key: &str) -> PatientBody {
        let state = &self.patients[key];
        let numbers = |text: &str| -> Vec<f64> {
            text.split(',')
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().unwrap())
                .collect()
        };
        let mut body = state.body.clone();
        body.latest = state.latest.iter().map(|k| k.reading.clone()).collect();
        body.sparklines = state
            .lines
            .iter()
            .map(|l| Sparkline {
                code: l.code.clone(),
                sub_id: l.sub_id.clone(),
                times_ms: numbers(&l.times.text)
                    .into_iter()
                    .map(|t| t as i64)
                    .collect(),
                values: numbers(&l.values.text).into(),
            })
            .collect();
        body
    }
}

#[cfg(test)]
mod tests;
