//! Alarms as the API, the `alarm` event and the patient view show them ([`AlarmView`]),
//! from the store's [`AlarmData`] (`crate::alarm`).

use serde::Serialize;

use crate::alarm::AlarmData;
use crate::store::{AlarmRow, FeedMessage, utc_text};

/// Alarms a patient keeps in the live view (newest first); older ones are in
/// `GET /api/v1/alarms`.
pub const MAX_ALARMS_PER_PATIENT: usize = 10;

/// The measurement that raised an alarm, as sent.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AlarmMeasurementView {
    /// OBX-3.1, e.g. `150456`.
    pub code: String,
    /// OBX-3.2, e.g. `MDC_PULS_OXIM_SAT_O2`.
    pub code_text: String,
    /// OBX-5 as sent.
    pub value: String,
    /// OBX-5 as a number, when it is one.
    pub numeric: Option<f64>,
    /// OBX-6 as sent (its text when it has one).
    pub units: String,
    /// OBX-7, the limit crossed.
    pub limit: String,
}

/// One alarm of an `ORU^R40` (IHE PCD-04), as the API and the `alarm` event show it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AlarmView {
    /// The message it came in.
    pub message_id: i64,
    /// Its place among that message's alarms, from 0.
    pub index: u32,
    /// The patient's key; `null` for an alarm without a patient.
    pub patient: Option<String>,
    /// When the message arrived.
    #[schema(format = DateTime)]
    pub received_at: String,
    /// The device that raised it: OBX-18.1 (an EUI-64) or MSH-3.
    pub source: String,
    /// OBX-3.1 of the event row, e.g. `196670`.
    pub type_code: String,
    /// OBX-3.2 of the event row, e.g. `MDC_EVT_LO_VAL_LT_LIM`.
    pub type_text: String,
    /// OBX-3.3 of the event row, e.g. `MDC`.
    pub type_system: String,
    /// The alarm text as sent, e.g. `SPO2 LOW`.
    pub text: String,
    /// `high`, `medium`, `low`, `none` (OBX-8 `PH`, `PM`, `PL`, `PN`), or empty.
    pub priority: String,
    /// `physiological`, `technical`, `advisory` (OBX-8 `SP`, `ST`, `SA`), or empty.
    pub kind: String,
    /// `active`, `inactive`, `latched`, … (`MDC_ATTR_ALARM_STATE`, else from the phase).
    pub state: String,
    /// `start`, `continue`, `end`, … (`MDC_ATTR_EVENT_PHASE`), or empty.
    pub phase: String,
    /// `enabled`, `audio-paused`, … (`MDC_ATTR_ALARM_INACTIVATION_STATE`), or empty.
    pub inactivation: String,
    /// OBX-8 of the event row as sent.
    pub flags: String,
    /// The measurement that raised it, when the report had one.
    pub measurement: Option<AlarmMeasurementView>,
    /// When it started or was observed (OBX-14, OBR-7, MSH-7 as sent, ISO 8601; else the
    /// received time).
    pub started_at: String,
}

impl AlarmView {
    /// The view of `alarm` of a message with this id, arrival and patient.
    pub fn new(
        message_id: i64,
        received_at: jiff::Timestamp,
        patient: Option<String>,
        alarm: &AlarmData,
    ) -> AlarmView {
        AlarmView {
            message_id,
            index: alarm.index,
            patient,
            received_at: utc_text(received_at),
            source: alarm.source.clone(),
            type_code: alarm.type_code.clone(),
            type_text: alarm.type_text.clone(),
            type_system: alarm.type_system.clone(),
            text: alarm.text.clone(),
            priority: alarm.priority.clone(),
            kind: alarm.kind.clone(),
            state: alarm.state.clone(),
            phase: alarm.phase.clone(),
            inactivation: alarm.inactivation.clone(),
            flags: alarm.flags.clone(),
            measurement: alarm.measurement.as_ref().map(|m| AlarmMeasurementView {
                code: m.code.clone(),
                code_text: m.code_text.clone(),
                value: m.value.clone(),
                numeric: m.numeric,
                units: m.units.clone(),
                limit: m.limit.clone(),
            }),
            started_at: alarm.started_at.clone(),
        }
    }

    /// The alarms of a feed message.
    pub fn of_message(message: &FeedMessage) -> Vec<AlarmView> {
        let patient = message.accepted_patient().map(|p| p.key.clone());
        message
            .alarms
            .iter()
            .map(|alarm| AlarmView::new(message.id, message.received_at, patient.clone(), alarm))
            .collect()
    }

    /// The view of a stored alarm.
    pub fn of_row(row: &AlarmRow) -> AlarmView {
        AlarmView::new(
            row.message_id,
            row.received_at,
            row.patient.clone(),
            &row.alarm,
        )
    }
}

/// Puts `fresh` (a message's alarms, in order) first among a patient's `kept` alarms,
/// newest first, keeping [`MAX_ALARMS_PER_PATIENT`].
pub fn remember(kept: &mut Vec<AlarmView>, fresh: &[AlarmView]) {
    if fresh.is_empty() {
        return;
    }
    let mut all: Vec<AlarmView> = fresh.iter().rev().cloned().collect();
    all.append(kept);
    all.truncate(MAX_ALARMS_PER_PATIENT);
    *kept = all;
}
