//! Alarms: `ORU^R40` alarm reports (IHE PCD-04 Report Alarm, e.g. Masimo Patient
//! SafetyNet).
//!
//! An R40 is answered under the same ACK rules as any message, but its OBX rows never
//! become observations (no record, trend point or latest vital): each OBR group becomes one
//! [`AlarmData`], stored in the `alarms` table beside the message (docs/storage.md,
//! "Alarms").
//!
//! How a group is read (IHE PCD TF-2, PCD-04):
//! - the **event identification** row is the first OBX whose OBX-3 text starts with
//!   `MDC_EVT_` (else the first OBX that is not an `MDC_ATTR_` row): its OBX-3 is the
//!   alarm's type (`196670^MDC_EVT_LO_VAL_LT_LIM^MDC`), its OBX-5 the alarm text, its
//!   OBX-8 the priority (`PH`, `PM`, `PL`, `PN`) and kind (`SP` physiological, `ST`
//!   technical, `SA` advisory), its OBX-18 the source device, its OBX-14 (or OBR-7, or
//!   MSH-7) the alarm's time;
//! - the **triggering measurement** is the first numeric row that is neither the event
//!   row nor an `MDC_ATTR_` row (e.g. SpO2 `88` `%`, its limit in OBX-7);
//! - `MDC_ATTR_ALARM_STATE` (`active`, `inactive`, `latched`, …), `MDC_ATTR_EVENT_PHASE`
//!   (`start`, `continue`, `end`, …) and `MDC_ATTR_ALARM_INACTIVATION_STATE` rows give
//!   the state as sent; without a state row the state is `inactive` after a phase `end`
//!   and `active` otherwise;
//! - an `MDC_ATTR_ALARM_TEXT` row's OBX-5, when present, is the text.
//!
//! Everything is kept as text as sent; nothing here fails on content.

use hl7::Message;
use hl7::extract::{Extract, Observation};

/// Whether MSH-9 names an alarm report (`ORU^R40`).
pub fn is_alarm_message(message_type: &str, trigger: &str) -> bool {
    message_type.eq_ignore_ascii_case("ORU") && trigger.eq_ignore_ascii_case("R40")
}

/// The measurement that raised an alarm, as sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlarmMeasurement {
    /// OBX-3.1, e.g. `150456`.
    pub code: String,
    /// OBX-3.2, e.g. `MDC_PULS_OXIM_SAT_O2`.
    pub code_text: String,
    /// OBX-5 as sent.
    pub value: String,
    /// OBX-5 as a number, when it is one.
    pub numeric: Option<f64>,
    /// OBX-6 (its text when the code is a number, as `262688^MDC_DIM_PERCENT`).
    pub units: String,
    /// OBX-7, the limit the value crossed (`90-100`, `>98`).
    pub limit: String,
}

/// One alarm of an `ORU^R40`, as extracted (docs/storage.md, "Alarms").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlarmData {
    /// Its place among the message's alarms, from 0.
    pub index: u32,
    /// The device that raised it: OBX-18.1 of the event row (IHE PCD's EUI-64), else of
    /// any row of the group, else MSH-3.
    pub source: String,
    /// OBX-3.1 of the event row, e.g. `196670`.
    pub type_code: String,
    /// OBX-3.2 of the event row, e.g. `MDC_EVT_LO_VAL_LT_LIM`.
    pub type_text: String,
    /// OBX-3.3 of the event row, e.g. `MDC`.
    pub type_system: String,
    /// The alarm text (`SPO2 LOW`), empty when none was sent.
    pub text: String,
    /// `high`, `medium`, `low`, `none` (from `PH`, `PM`, `PL`, `PN`), or empty.
    pub priority: String,
    /// `physiological`, `technical`, `advisory` (from `SP`, `ST`, `SA`), or empty.
    pub kind: String,
    /// The alarm state as sent (`active`, `inactive`, `latched`, …), lower-cased.
    pub state: String,
    /// The event phase as sent (`start`, `continue`, `end`, …), or empty.
    pub phase: String,
    /// The inactivation state as sent (`enabled`, `audio-paused`, …), or empty.
    pub inactivation: String,
    /// OBX-8 of the event row as sent.
    pub flags: String,
    /// The measurement that raised it, when the group has one.
    pub measurement: Option<AlarmMeasurement>,
    /// When it started or was observed: ISO 8601 as sent (OBX-14, OBR-7, MSH-7), or the
    /// received time.
    pub started_at: String,
    /// The same instant, ms since the epoch.
    pub started_ms: i64,
}

/// The alarms of an extracted `ORU^R40`: one per OBR (or one for the whole message when
/// it has no OBR but has OBX rows). Empty for any other message.
pub fn alarms_of(
    message: &Message<'_>,
    extract: &Extract<'_>,
    received_at: jiff::Timestamp,
) -> Vec<AlarmData> {
    if !is_alarm_message(&extract.header.message_type, &extract.header.trigger) {
        return Vec::new();
    }
    let obrs: Vec<usize> = message
        .segments()
        .filter(|segment| segment.id().as_str() == "OBR")
        .map(|segment| segment.index())
        .collect();
    // The group of an OBX: how many OBRs come before it (0 when it precedes them all).
    let group_of = |obx: &Observation<'_>| obrs.iter().filter(|&&i| i < obx.segment_index).count();
    let mut groups: Vec<Vec<&Observation<'_>>> = Vec::new();
    let mut last_group = None;
    for obx in &extract.observations {
        let group = group_of(obx);
        if last_group != Some(group) {
            groups.push(Vec::new());
            last_group = Some(group);
        }
        if let Some(rows) = groups.last_mut() {
            rows.push(obx);
        }
    }
    groups
        .iter()
        .enumerate()
        .map(|(index, rows)| alarm_of(index, rows, extract, received_at))
        .collect()
}

fn is_attribute(obx: &Observation<'_>) -> bool {
    obx.code_text.starts_with("MDC_ATTR_")
}

fn attribute<'r>(rows: &'r [&Observation<'_>], name: &str) -> Option<&'r str> {
    rows.iter()
        .find(|obx| obx.code_text.eq_ignore_ascii_case(name))
        .map(|obx| obx.value.as_ref())
}

fn alarm_of(
    index: usize,
    rows: &[&Observation<'_>],
    extract: &Extract<'_>,
    received_at: jiff::Timestamp,
) -> AlarmData {
    let event = rows
        .iter()
        .position(|obx| obx.code_text.starts_with("MDC_EVT_"))
        .or_else(|| rows.iter().position(|obx| !is_attribute(obx)))
        .unwrap_or(0);
    let event_row = rows.get(event);
    let mut priority = String::new();
    let mut kind = String::new();
    if let Some(row) = event_row {
        for flag in row.abnormal_flags.split(['~', '^']) {
            match flag.trim().to_ascii_uppercase().as_str() {
                "PH" => priority = "high".into(),
                "PM" => priority = "medium".into(),
                "PL" => priority = "low".into(),
                "PN" => priority = "none".into(),
                "SP" => kind = "physiological".into(),
                "ST" => kind = "technical".into(),
                "SA" => kind = "advisory".into(),
                _ => {}
            }
        }
    }
    let measurement = rows
        .iter()
        .enumerate()
        .find(|(i, obx)| *i != event && !is_attribute(obx) && obx.numeric.is_some())
        .map(|(_, obx)| AlarmMeasurement {
            code: obx.code.to_string(),
            code_text: obx.code_text.to_string(),
            value: obx.value.to_string(),
            numeric: obx.numeric,
            units: if obx.units_text.is_empty() {
                obx.units.to_string()
            } else {
                obx.units_text.to_string()
            },
            limit: obx.reference_range.to_string(),
        });
    let phase = attribute(rows, "MDC_ATTR_EVENT_PHASE")
        .unwrap_or("")
        .to_ascii_lowercase();
    let state = match attribute(rows, "MDC_ATTR_ALARM_STATE") {
        Some(state) if !state.is_empty() => state.to_ascii_lowercase(),
        _ if phase == "end" => "inactive".into(),
        _ => "active".into(),
    };
    let text = match attribute(rows, "MDC_ATTR_ALARM_TEXT") {
        Some(text) if !text.is_empty() => text.to_string(),
        _ => event_row
            .filter(|row| row.numeric.is_none())
            .map(|row| row.value.to_string())
            .unwrap_or_default(),
    };
    let source = event_row
        .map(|row| row.equipment.as_ref())
        .filter(|e| !e.is_empty())
        .or_else(|| {
            rows.iter()
                .map(|row| row.equipment.as_ref())
                .find(|e| !e.is_empty())
        })
        .unwrap_or(extract.header.sending_application.as_ref())
        .to_string();
    let time = event_row
        .and_then(|row| row.time)
        .or_else(|| rows.iter().find_map(|row| row.time));
    let (started_at, started_ms) = match time {
        Some(time) => (
            time.to_iso_string(),
            crate::store::instant_ms(&time).unwrap_or(received_at.as_millisecond()),
        ),
        None => (
            received_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            received_at.as_millisecond(),
        ),
    };
    AlarmData {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        source,
        type_code: event_row.map(|r| r.code.to_string()).unwrap_or_default(),
        type_text: event_row
            .map(|r| r.code_text.to_string())
            .unwrap_or_default(),
        type_system: event_row
            .map(|r| r.code_system.to_string())
            .unwrap_or_default(),
        text,
        priority,
        kind,
        state,
        phase,
        inactivation: attribute(rows, "MDC_ATTR_ALARM_INACTIVATION_STATE")
            .unwrap_or("")
            .to_ascii_lowercase(),
        flags: event_row
            .map(|r| r.abnormal_flags.to_string())
            .unwrap_or_default(),
        measurement,
        started_at,
        started_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASIMO: &str = "MSH|^~\\&|MASIMO_PSN^0018F4FFFE000001^EUI-64|MASIMO|||20260301101500+0100||ORU^R40^ORU_R40|ALM0001|P|2.6|||AL|NE||UNICODE UTF-8|||IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4.1^ISO\r\
PID|||7012345^^^HOSP^MR||Lind^Maja||19580412|F\r\
PV1||I|ICU^12^1\r\
OBR|1|ALM0001^MASIMO_PSN|ALM0001^MASIMO_PSN|196616^MDC_EVT_ALARM^MDC|||20260301101500+0100\r\
OBX|1|ST|196670^MDC_EVT_LO_VAL_LT_LIM^MDC|1.0.0.0.1|SPO2 LOW|||PM~SP|||F|||20260301101455+0100||||0018F4FFFE000001^^0018F4FFFE000001^EUI-64\r\
OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.0.0.2|86|262688^MDC_DIM_PERCENT^MDC|90-100|L|||F|||20260301101455+0100\r\
OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.0.0.0.3|start||||||F\r\
OBX|4|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.0.0.0.4|active||||||F\r\
OBX|5|ST|68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC|1.0.0.0.5|enabled||||||F\r";

    fn alarms(text: &str) -> Vec<AlarmData> {
        let message = hl7::parse(text.as_bytes()).unwrap();
        let extract = hl7::extract::extract(&message);
        alarms_of(&message, &extract, jiff::Timestamp::from_second(0).unwrap())
    }

    #[test]
    fn a_pcd04_report_is_one_alarm_with_type_priority_state_and_measurement() {
        let found = alarms(MASIMO);
        assert_eq!(found.len(), 1);
        let alarm = &found[0];
        assert_eq!(alarm.type_code, "196670");
        assert_eq!(alarm.type_text, "MDC_EVT_LO_VAL_LT_LIM");
        assert_eq!(alarm.type_system, "MDC");
        assert_eq!(alarm.text, "SPO2 LOW");
        assert_eq!(alarm.priority, "medium");
        assert_eq!(alarm.kind, "physiological");
        assert_eq!(alarm.state, "active");
        assert_eq!(alarm.phase, "start");
        assert_eq!(alarm.inactivation, "enabled");
        assert_eq!(alarm.source, "0018F4FFFE000001");
        assert_eq!(alarm.started_at, "2026-03-01T10:14:55+01:00");
        let measurement = alarm.measurement.as_ref().unwrap();
        assert_eq!(measurement.code_text, "MDC_PULS_OXIM_SAT_O2");
        assert_eq!(measurement.value, "86");
        assert_eq!(measurement.numeric, Some(86.0));
        assert_eq!(measurement.units, "MDC_DIM_PERCENT");
        assert_eq!(measurement.limit, "90-100");
    }

    #[test]
    fn each_obr_is_an_alarm_and_a_phase_end_without_state_is_inactive() {
        let text = "MSH|^~\\&|PSN|FAC|||20260301101500||ORU^R40|2|P|2.6\r\
OBR|1|A1||196616^MDC_EVT_ALARM^MDC|||20260301101000\r\
OBX|1|ST|196652^MDC_EVT_HI_VAL_GT_LIM^MDC|1|HR HIGH|||PH~SP\r\
OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|2|152|/min|50-120\r\
OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|3|end\r\
OBR|2|A2||196616^MDC_EVT_ALARM^MDC|||20260301101100\r\
OBX|4|ST|0^MDC_EVT_LEADS_OFF^MDC|1||||PL~ST\r\
OBX|5|ST|68482^MDC_ATTR_ALARM_STATE^MDC|2|Latched\r\
OBX|6|ST|0^MDC_ATTR_ALARM_TEXT^MDC|3|Leads off\r";
        let found = alarms(text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].priority, "high");
        assert_eq!(found[0].state, "inactive");
        assert_eq!(found[0].source, "PSN");
        assert_eq!(found[0].started_at, "2026-03-01T10:10:00");
        assert_eq!(found[0].measurement.as_ref().unwrap().value, "152");
        assert_eq!(found[1].index, 1);
        assert_eq!(found[1].type_text, "MDC_EVT_LEADS_OFF");
        assert_eq!(found[1].priority, "low");
        assert_eq!(found[1].kind, "technical");
        assert_eq!(found[1].state, "latched");
        assert_eq!(found[1].text, "Leads off");
        assert_eq!(found[1].measurement, None);
    }

    #[test]
    fn other_messages_have_no_alarms() {
        assert!(
            alarms(
                "MSH|^~\\&|DEV|FAC|||20260101120000||ORU^R01|1|P|2.6\r\
                 PID|||P1\rOBX|1|NM|8867-4^HR^LN||72|/min\r"
            )
            .is_empty()
        );
        assert!(is_alarm_message("oru", "r40"));
    }
}
