//! Unassigned devices: a message whose PID-3 is empty or absent (IHE PCD-01 allows it; an
//! XH80X sends an empty PID) belongs to no patient, so it is kept and shown under its
//! device. [`device_key`] is the one rule for that device's id, used by the store (the
//! `device_key` column), the live view (the `device:<id>` tile) and the device files
//! (`--device-files on`, `device_<id>.json`); [`message_device_key`] adds an alarm report's
//! source, so a device that only sends alarms has a tile too.

use crate::alarm::AlarmData;
use crate::store::ObservationData;

/// The prefix of an unassigned device's key in the live view's patients (`device:<id>`)
/// and of its file (`device_<id>.json`, named as patient files are).
pub const KEY_PREFIX: &str = "device:";

/// The device of a message without a patient: the first non-empty OBX-18.1 (the
/// equipment instance id, an EUI-64 in IHE PCD-01), else MSH-3 (`sending_application`);
/// `None` for a message without observations (it measured nothing: an ADT without PID-3
/// names no device) or with neither.
pub fn device_key(observations: &[ObservationData], sending_application: &str) -> Option<String> {
    if observations.is_empty() {
        return None;
    }
    observations
        .iter()
        .map(|o| o.equipment.trim())
        .find(|e| !e.is_empty())
        .or_else(|| Some(sending_application.trim()).filter(|a| !a.is_empty()))
        .map(str::to_owned)
}

/// The device of a message without a patient, alarm reports included: [`device_key`] of
/// its observations, else the source of its first alarm (`ORU^R40`: OBX-18.1 of the alarm
/// rows, else MSH-3, [`AlarmData::source`]). `None` for a message that measured nothing
/// and raised no alarm.
pub fn message_device_key(
    observations: &[ObservationData],
    alarms: &[AlarmData],
    sending_application: &str,
) -> Option<String> {
    device_key(observations, sending_application).or_else(|| {
        alarms
            .iter()
            .map(|a| a.source.trim())
            .find(|s| !s.is_empty())
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(equipment: &str) -> ObservationData {
        ObservationData {
            index: 0,
            value_type: "NM".into(),
            code: "147842".into(),
            code_text: String::new(),
            code_system: String::new(),
            sub_id: String::new(),
            value: "72".into(),
            numeric: Some(72.0),
            units: String::new(),
            units_text: String::new(),
            reference_range: String::new(),
            abnormal_flags: String::new(),
            status: "R".into(),
            observed_at: String::new(),
            observed_ms: 0,
            equipment: equipment.into(),
            mark: None,
        }
    }

    #[test]
    fn the_equipment_id_comes_first_then_msh_3() {
        let eui = [observation(""), observation("0123456789ABCDEF")];
        assert_eq!(
            device_key(&eui, "XH80X").as_deref(),
            Some("0123456789ABCDEF")
        );
        let none = [observation(" ")];
        assert_eq!(device_key(&none, "GW-ICU2").as_deref(), Some("GW-ICU2"));
        assert_eq!(device_key(&none, ""), None);
        assert_eq!(device_key(&[], "GW-ICU2"), None);
    }

    #[test]
    fn an_alarm_report_is_under_its_source() {
        let alarm = AlarmData {
            source: "0018F4FFFE9A0C22".into(),
            ..AlarmData::default()
        };
        assert_eq!(
            message_device_key(&[], std::slice::from_ref(&alarm), "MASIMO_PSN").as_deref(),
            Some("0018F4FFFE9A0C22")
        );
        // Observations come first, as for any message.
        assert_eq!(
            message_device_key(&[observation("")], &[alarm], "GW").as_deref(),
            Some("GW")
        );
        assert_eq!(message_device_key(&[], &[], "GW"), None);
    }
}
