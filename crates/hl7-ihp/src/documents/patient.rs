//! The patient document: the prototype's JSON shape (`PatientInfo`, `Records` newest first)
//! with more keys, borrowed from the store's rows. The JSON files and `hl7-ihp show` both
//! render it, so the file and the command agree.

use serde::Serialize;

use crate::store::{ObservationRow, PatientRecords};

/// Writes a received time as `utc_text` does, straight into the output.
fn utc<S: serde::Serializer>(time: &jiff::Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{time:.3}"))
}

/// A patient file's content: the prototype's shape, with more keys (docs/patient-files.md).
///
/// Keys are written in the order of the fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Document<'a> {
    /// Who the patient is.
    #[serde(rename = "PatientInfo")]
    pub patient_info: PatientInfo<'a>,
    /// One record per OBX, newest message first, OBX order within a message.
    #[serde(rename = "Records")]
    pub records: Vec<Record<'a>>,
}

/// The `PatientInfo` object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatientInfo<'a> {
    /// PID-3.1 of the first repetition with an id.
    #[serde(rename = "PatientID")]
    pub patient_id: &'a str,
    /// The given name, a space, the family name.
    #[serde(rename = "PatientName")]
    pub patient_name: &'a str,
    /// An ISO date when PID-7 is a valid HL7 date, else PID-7 as sent.
    #[serde(rename = "DateOfBirth")]
    pub date_of_birth: &'a str,
    /// The HL7 table 0001 name of PID-8 (`Female`), or the code as sent when it is not in the
    /// table.
    #[serde(rename = "Sex")]
    pub sex: &'a str,
    /// PID-3.4 of that repetition, as sent.
    #[serde(rename = "AssigningAuthority")]
    pub assigning_authority: &'a str,
    /// Every PID-3 repetition as `id^^^authority^type`, joined with `~`.
    #[serde(rename = "Identifiers")]
    pub identifiers: &'a str,
    /// The identity key the file is named after, only when it is not `PatientID` (when the
    /// assigning authority is part of the identity).
    #[serde(rename = "PatientKey", skip_serializing_if = "Option::is_none")]
    pub patient_key: Option<&'a str>,
}

/// One element of `Records`: one OBX.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record<'a> {
    /// The observation time, `YYYY-MM-DDTHH:MM:SS[.fff]`, with the offset only when the
    /// message gave one: OBX-14, else OBR-7, else MSH-7, else the time received (UTC, `Z`).
    #[serde(rename = "Timestamp")]
    pub timestamp: &'a str,
    /// OBX-3.1, the observation's code.
    #[serde(rename = "ObservationID")]
    pub observation_id: &'a str,
    /// OBX-5 as text (SN `^182` is `182`, `<^10` is `<10`).
    #[serde(rename = "ObservationValue")]
    pub observation_value: &'a str,
    /// OBX-6.1.
    #[serde(rename = "Units")]
    pub units: &'a str,
    /// OBX-7 as sent.
    #[serde(rename = "ReferenceRange")]
    pub reference_range: &'a str,
    /// OBX-8.
    #[serde(rename = "AbnormalFlags")]
    pub abnormal_flags: &'a str,
    /// OBX-3.2.
    #[serde(rename = "ObservationText")]
    pub observation_text: &'a str,
    /// OBX-3.3.
    #[serde(rename = "CodingSystem")]
    pub coding_system: &'a str,
    /// OBX-2.
    #[serde(rename = "ValueType")]
    pub value_type: &'a str,
    /// OBX-4.
    #[serde(rename = "SubID")]
    pub sub_id: &'a str,
    /// The value as a number, when it is a plain number.
    #[serde(rename = "NumericValue", skip_serializing_if = "Option::is_none")]
    pub numeric_value: Option<f64>,
    /// OBX-6.2, when present.
    #[serde(rename = "UnitsText", skip_serializing_if = "str::is_empty")]
    pub units_text: &'a str,
    /// OBX-11.
    #[serde(rename = "ResultStatus")]
    pub result_status: &'a str,
    /// The sending device: MSH-3 as sent.
    #[serde(rename = "Device")]
    pub device: &'a str,
    /// OBX-18.1, the equipment that made the observation, when present.
    #[serde(rename = "EquipmentID", skip_serializing_if = "str::is_empty")]
    pub equipment_id: &'a str,
    /// When the message arrived, UTC with milliseconds and `Z`.
    #[serde(rename = "ReceivedAt", serialize_with = "utc")]
    pub received_at: jiff::Timestamp,
    /// MSH-10 of the message.
    #[serde(rename = "MessageControlID")]
    pub message_control_id: &'a str,
}

/// The document for a patient and their records, in the order the store gave them.
pub fn document(records: &PatientRecords) -> Document<'_> {
    let patient = &records.patient;
    Document {
        patient_info: PatientInfo {
            patient_id: &patient.id,
            patient_name: &patient.name,
            date_of_birth: &patient.birth_date,
            sex: hl7::extract::sex_name(&patient.sex).unwrap_or(&patient.sex),
            assigning_authority: &patient.assigning_authority,
            identifiers: &patient.identifiers,
            patient_key: (patient.key != patient.id).then_some(patient.key.as_str()),
        },
        records: records.records.iter().map(record).collect(),
    }
}

fn record(row: &ObservationRow) -> Record<'_> {
    let observation = &row.observation;
    Record {
        timestamp: &observation.observed_at,
        observation_id: &observation.code,
        observation_value: &observation.value,
        units: &observation.units,
        reference_range: &observation.reference_range,
        abnormal_flags: &observation.abnormal_flags,
        observation_text: &observation.code_text,
        coding_system: &observation.code_system,
        value_type: &observation.value_type,
        sub_id: &observation.sub_id,
        numeric_value: observation.numeric,
        units_text: &observation.units_text,
        result_status: &observation.status,
        device: &row.device,
        equipment_id: &observation.equipment,
        received_at: row.received_at,
        message_control_id: &row.control_id,
    }
}

/// The patient document as the file holds it: indented JSON ending with a newline.
pub fn render_document(records: &PatientRecords) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&document(records))
        // Only strings, numbers and lists of them: serialising to memory cannot fail.
        .expect("a patient document always serialises");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::{ObservationData, PatientData};

    pub(crate) fn prototype_patient() -> PatientData {
        PatientData {
            key: "555-44-4444".into(),
            id: "555-44-4444".into(),
            assigning_authority: String::new(),
            identifiers: "555-44-4444".into(),
            name: "EVE EVERYWOMAN".into(),
            birth_date: "196203520".into(),
            sex: "F".into(),
            is_update: false,
        }
    }

    pub(crate) fn glucose(index: u32, value: &str) -> ObservationData {
        ObservationData {
            index,
            value_type: "SN".into(),
            code: "1554-5".into(),
            code_text: "GLUCOSE".into(),
            code_system: "POST 12H CFST:MCNC:PT:SER/PLAS:QN".into(),
            sub_id: String::new(),
            value: value.into(),
            numeric: value.parse().ok(),
            units: "mg/dl".into(),
            units_text: String::new(),
            reference_range: "70_105".into(),
            abnormal_flags: "H".into(),
            status: "F".into(),
            observed_at: "2002-02-15T07:30:00".into(),
            observed_ms: 1_013_758_200_000,
            equipment: String::new(),
        }
    }

    fn row(message_id: i64, observation: ObservationData) -> ObservationRow {
        ObservationRow {
            observation,
            message_id,
            control_id: "CNTRL-3456".into(),
            received_at: format!("2025-08-04T12:01:0{message_id}Z").parse().unwrap(),
            device: "GHH LAB".into(),
        }
    }

    #[test]
    fn the_prototype_document() {
        let records = PatientRecords {
            patient: prototype_patient(),
            records: vec![row(3, glucose(0, "184")), row(1, glucose(0, "182"))],
        };
        let json = String::from_utf8(render_document(&records)).unwrap();
        let expected = r#"{
  "PatientInfo": {
    "PatientID": "555-44-4444",
    "PatientName": "EVE EVERYWOMAN",
    "DateOfBirth": "196203520",
    "Sex": "Female",
    "AssigningAuthority": "",
    "Identifiers": "555-44-4444"
  },
  "Records": [
    {
      "Timestamp": "2002-02-15T07:30:00",
      "ObservationID": "1554-5",
      "ObservationValue": "184",
      "Units": "mg/dl",
      "ReferenceRange": "70_105",
      "AbnormalFlags": "H",
      "ObservationText": "GLUCOSE",
      "CodingSystem": "POST 12H CFST:MCNC:PT:SER/PLAS:QN",
      "ValueType": "SN",
      "SubID": "",
      "NumericValue": 184.0,
      "ResultStatus": "F",
      "Device": "GHH LAB",
      "ReceivedAt": "2025-08-04T12:01:03.000Z",
      "MessageControlID": "CNTRL-3456"
    },
    {
      "Timestamp": "2002-02-15T07:30:00",
      "ObservationID": "1554-5",
      "ObservationValue": "182",
      "Units": "mg/dl",
      "ReferenceRange": "70_105",
      "AbnormalFlags": "H",
      "ObservationText": "GLUCOSE",
      "CodingSystem": "POST 12H CFST:MCNC:PT:SER/PLAS:QN",
      "ValueType": "SN",
      "SubID": "",
      "NumericValue": 182.0,
      "ResultStatus": "F",
      "Device": "GHH LAB",
      "ReceivedAt": "2025-08-04T12:01:01.000Z",
      "MessageControlID": "CNTRL-3456"
    }
  ]
}
"#;
        assert_eq!(json, expected);
    }

    #[test]
    fn sex_codes_optional_keys_and_the_identity_key() {
        let mut patient = prototype_patient();
        patient.key = "AUTH/555-44-4444".into();
        let mut observation = glucose(0, "<10");
        observation.units_text = "milligram per decilitre".into();
        observation.equipment = "0123456789ABCDEF".into();
        let mut records = PatientRecords {
            patient,
            records: vec![row(1, observation)],
        };
        for (code, name) in [
            ("F", "Female"),
            ("M", "Male"),
            ("O", "Other"),
            ("U", "Unknown"),
            ("A", "Ambiguous"),
            ("N", "Not applicable"),
            ("X", "X"),
            ("", ""),
        ] {
            records.patient.sex = code.into();
            let value: serde_json::Value =
                serde_json::from_slice(&render_document(&records)).unwrap();
            assert_eq!(value["PatientInfo"]["Sex"], name);
        }
        let value: serde_json::Value = serde_json::from_slice(&render_document(&records)).unwrap();
        assert_eq!(value["PatientInfo"]["PatientKey"], "AUTH/555-44-4444");
        let record = &value["Records"][0];
        assert_eq!(record["ObservationValue"], "<10");
        assert!(record.get("NumericValue").is_none());
        assert_eq!(record["UnitsText"], "milligram per decilitre");
        assert_eq!(record["EquipmentID"], "0123456789ABCDEF");
    }
}
