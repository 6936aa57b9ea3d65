//! The JSON shapes of the live view (docs/api.md): a patient with their latest values, a
//! device, the per-minute statistics and the data of each event, with their OpenAPI schemas.
//! Pure data; [`super::view`] fills them in.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::documents::reading::Reading;

/// Whether a monitor still reports: by the time since its last message (`--stale-after`,
/// `--offline-after`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A message arrived within `--stale-after`.
    Live,
    /// None for longer than `--stale-after`.
    Stale,
    /// None for longer than `--offline-after` (or never).
    Offline,
}

impl Status {
    /// The name the JSON uses.
    pub fn name(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Stale => "stale",
            Status::Offline => "offline",
        }
    }
}

/// A numeric vital's most recent values, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sparkline {
    /// OBX-3.1.
    pub code: String,
    /// OBX-4: two values of one code with different sub-ids are two lines.
    pub sub_id: String,
    /// Observation times, ms since the Unix epoch.
    #[schema(value_type = Vec<i64>)]
    pub times_ms: VecDeque<i64>,
    /// The values, one per time.
    #[schema(value_type = Vec<f64>)]
    pub values: VecDeque<f64>,
}

/// A patient as the list and the `patient` event show them, without the two fields that
/// depend on the time of the answer (`status`, `silent_seconds`; see [`PatientView`]).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PatientBody {
    /// The identity key (PID-3.1, or `authority/id`).
    pub key: String,
    /// PID-3.1.
    pub id: String,
    /// PID-3.4.
    pub assigning_authority: String,
    /// Every PID-3 repetition, `id^^^authority^type` joined with `~`.
    pub identifiers: String,
    /// Given name and family name.
    pub name: String,
    /// ISO date when PID-7 is a date, else PID-7 as sent.
    pub birth_date: String,
    /// PID-8.
    pub sex: String,
    /// PV1-3 of the last message that had one.
    pub location: Option<String>,
    /// MSH-3 of the last message.
    pub device: Option<String>,
    /// When the last message about them arrived.
    pub last_message_at: Option<String>,
    /// Its id.
    pub last_message_id: Option<i64>,
    /// The last message with observations had none that could be shown.
    pub values_missing: bool,
    /// 0 nothing abnormal, 1 a warning, 2 a critical value among `latest`.
    pub severity: u8,
    /// A device whose messages name no patient (PID-3 empty or absent, as IHE PCD-01
    /// allows): `key` is `device:` and the device's id (OBX-18.1's equipment id, such as an
    /// EUI-64, else MSH-3), `device` that id, the patient fields empty.
    pub unassigned: bool,
    /// Their most recent alarms (`ORU^R40`), newest first, at most 10; the banner on the
    /// tile is the first one while its state is `active` or `latched`.
    pub alarms: Vec<super::alarms::AlarmView>,
    /// The latest value of each code (and sub-id), in the order they first came.
    pub latest: Vec<Reading>,
    /// The numeric vitals' most recent values.
    pub sparklines: Vec<Sparkline>,
}

/// A patient as `GET /api/v1/patients/{key}` answers.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PatientView {
    /// `live`, `stale` or `offline`, now.
    pub status: Status,
    /// Seconds since the last message, now; `null` when none is known.
    pub silent_seconds: Option<f64>,
    /// Everything else.
    #[serde(flatten)]
    pub body: PatientBody,
}

/// `GET /api/v1/patients`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PatientList {
    /// When the answer was made.
    pub generated_at: String,
    /// `--stale-after` in seconds.
    pub stale_after_seconds: f64,
    /// `--offline-after` in seconds.
    pub offline_after_seconds: f64,
    /// The patients, filtered and sorted.
    pub patients: Vec<PatientView>,
}

/// How a device is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// By OBX-18's equipment id (an EUI-64 in IHE PCD-01).
    Equipment,
    /// By the sending application (MSH-3): its messages name no equipment.
    Application,
}

/// `GET /api/v1/devices`: one device.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    /// OBX-18.1, else MSH-3.
    pub id: String,
    /// Which of the two `id` is.
    pub kind: DeviceKind,
    /// MSH-3 of its last message.
    pub sending_application: String,
    /// The patient of its last message.
    pub patient: Option<String>,
    /// Their name.
    pub patient_name: Option<String>,
    /// PV1-3 of its last message.
    pub location: Option<String>,
    /// When its last message arrived.
    pub last_message_at: String,
    /// Its id.
    pub last_message_id: i64,
    /// Messages seen from it by the live view (since the start, and those read at start).
    pub n_messages: u64,
    /// `live`, `stale` or `offline`, now.
    pub status: Status,
}

/// `GET /api/v1/devices`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeviceList {
    /// The devices, by id.
    pub devices: Vec<DeviceView>,
    /// The `--connect` links to devices that serve (client mode), in configuration order;
    /// empty without them.
    pub links: Vec<crate::links::LinkStatus>,
}

/// Messages received in one minute.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MinuteCounts {
    /// The minute's start.
    pub start: String,
    /// Accepted (AA/CA).
    pub accepted: u64,
    /// Answered with an error (AE/CE).
    pub error: u64,
    /// Rejected (AR/CR).
    pub rejected: u64,
    /// Accepted messages by `MSH-9.1^MSH-9.2`; past a few dozen types, the rest as `other`.
    pub by_type: BTreeMap<String, u64>,
}

/// MLLP connections.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConnectionCounts {
    /// Open now.
    pub open: i64,
    /// Accepted since the start.
    pub total: u64,
}

/// How far the patient files are behind the store.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExportLag {
    /// Every change up to this message is in the files.
    pub watermark: i64,
    /// The newest message stored.
    pub newest: i64,
    /// Messages stored and not yet in the files.
    pub lag_messages: i64,
    /// Since the oldest of them arrived; 0 when there is none.
    pub lag_seconds: f64,
}

/// `GET /api/v1/stats`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// When the answer was made.
    pub generated_at: String,
    /// The last 24 h, oldest first, minutes without messages left out.
    pub minutes: Vec<MinuteCounts>,
    /// MLLP connections.
    pub connections: ConnectionCounts,
    /// The patient files; `null` when there is no exporter.
    pub export: Option<ExportLag>,
}

/// The `observation` event: one message's observations.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ObservationEvent {
    /// The patient's key, `null` for a message without one.
    pub patient: Option<String>,
    /// The message.
    pub message_id: i64,
    /// When it arrived.
    pub received_at: String,
    /// Its observations, as in `latest`.
    pub values: Vec<Reading>,
}

/// The `rejected` event: a message answered with an error or a reject.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RejectedEvent {
    /// The message.
    pub message_id: i64,
    /// When it arrived.
    pub received_at: String,
    /// `error` or `rejected`.
    pub outcome: String,
    /// Why, without patient data.
    pub reason: Option<String>,
    /// MSH-3 as sent, when MSH could be read.
    pub sending_application: Option<String>,
    /// `MSH-9.1^MSH-9.2`, when known.
    pub message_type: Option<String>,
}

/// The `status` event: a patient's or a device's status changed.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StatusEvent {
    /// The patient's key, or `null` for a device.
    pub patient: Option<String>,
    /// The device's id, or `null` for a patient.
    pub device: Option<String>,
    /// The status now.
    pub status: Status,
    /// The status before.
    pub previous: Status,
    /// When the last message arrived.
    pub last_message_at: Option<String>,
}

/// The `reset` event: the events after the client's `Last-Event-ID` are no longer known.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ResetEvent {
    /// Always `missed`: read the lists again.
    pub reason: String,
}
