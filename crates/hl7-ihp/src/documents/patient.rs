//! The patient document: the prototype's JSON shape (`PatientInfo`, `Records` newest first),
//! with the prototype's keys or more ([`Fields`]), borrowed from the store's rows, one record
//! a line ([`assemble`]). The JSON files, the NDJSON streams (one record a line) and
//! `hl7-ihp show` all render it, so the files and the command agree.

use serde::Serialize;

use crate::marks::Mark;

use crate::store::{FeedMessage, ObservationData, ObservationRow, PatientData, PatientRecords};

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
    /// Why the value is not a measurement (`demo`, `not-obtained`, `empty`,
    /// `placeholder`); only present on a marked record, in both shapes.
    #[serde(rename = "Mark", skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
}

/// Which keys the patient files (and `hl7-ihp show`) write (`--json-fields`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fields {
    /// The prototype's keys only: `PatientID`, `PatientName`, `DateOfBirth`, `Sex` (and
    /// `PatientKey` when the identity is not `PatientID`); `Timestamp`, `ObservationID`,
    /// `ObservationValue`, `Units`, `ReferenceRange`, `AbnormalFlags`. A record is about a
    /// third of the size of a full one.
    #[default]
    Prototype,
    /// Every key of [`PatientInfo`] and [`Record`].
    Full,
}

impl Fields {
    /// The setting's name.
    pub fn name(self) -> &'static str {
        match self {
            Fields::Prototype => "prototype",
            Fields::Full => "full",
        }
    }
}

/// The `PatientInfo` object with the prototype's keys.
#[derive(Serialize)]
struct PrototypeInfo<'a> {
    #[serde(rename = "PatientID")]
    patient_id: &'a str,
    #[serde(rename = "PatientName")]
    patient_name: &'a str,
    #[serde(rename = "DateOfBirth")]
    date_of_birth: &'a str,
    #[serde(rename = "Sex")]
    sex: &'a str,
    #[serde(rename = "PatientKey", skip_serializing_if = "Option::is_none")]
    patient_key: Option<&'a str>,
}

/// A record with the prototype's keys.
#[derive(Serialize)]
struct PrototypeRecord<'a> {
    #[serde(rename = "Timestamp")]
    timestamp: &'a str,
    #[serde(rename = "ObservationID")]
    observation_id: &'a str,
    #[serde(rename = "ObservationValue")]
    observation_value: &'a str,
    #[serde(rename = "Units")]
    units: &'a str,
    #[serde(rename = "ReferenceRange")]
    reference_range: &'a str,
    #[serde(rename = "AbnormalFlags")]
    abnormal_flags: &'a str,
    #[serde(rename = "Mark", skip_serializing_if = "Option::is_none")]
    mark: Option<Mark>,
}

/// One record's inputs: an observation and its message's context.
#[derive(Clone, Copy, Debug)]
pub struct RecordSource<'a> {
    /// The OBX.
    pub observation: &'a ObservationData,
    /// MSH-10.
    pub control_id: &'a str,
    /// When the message arrived.
    pub received_at: jiff::Timestamp,
    /// MSH-3.
    pub device: &'a str,
}

impl<'a> RecordSource<'a> {
    /// An observation of a message read from the store's feed.
    pub fn of_feed(message: &'a FeedMessage, observation: &'a ObservationData) -> Self {
        RecordSource {
            observation,
            control_id: message.control_id.as_deref().unwrap_or(""),
            received_at: message.received_at,
            device: message.device.as_deref().unwrap_or(""),
        }
    }
}

impl<'a> From<&'a ObservationRow> for RecordSource<'a> {
    fn from(row: &'a ObservationRow) -> Self {
        RecordSource {
            observation: &row.observation,
            control_id: &row.control_id,
            received_at: row.received_at,
            device: &row.device,
        }
    }
}

/// The `PatientInfo` object of a patient, all keys.
pub fn patient_info(patient: &PatientData) -> PatientInfo<'_> {
    PatientInfo {
        patient_id: &patient.id,
        patient_name: &patient.name,
        date_of_birth: &patient.birth_date,
        sex: hl7::extract::sex_name(&patient.sex).unwrap_or(&patient.sex),
        assigning_authority: &patient.assigning_authority,
        identifiers: &patient.identifiers,
        patient_key: (patient.key != patient.id).then_some(patient.key.as_str()),
    }
}

/// The record of an observation, all keys.
pub fn record(source: RecordSource<'_>) -> Record<'_> {
    let observation = source.observation;
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
        device: source.device,
        equipment_id: &observation.equipment,
        received_at: source.received_at,
        message_control_id: source.control_id,
        mark: observation.mark,
    }
}

/// The document for a patient and their records, in the order the store gave them.
pub fn document(records: &PatientRecords) -> Document<'_> {
    Document {
        patient_info: patient_info(&records.patient),
        records: records
            .records
            .iter()
            .map(|r| record(RecordSource::from(r)))
            .collect(),
    }
}

// Only strings, numbers and lists of them: serialising to memory cannot fail.
const SERIALISES: &str = "a patient document always serialises";

/// Appends one record as a single line of JSON (no newline: strings escape theirs), the
/// form both the JSON document and the NDJSON stream hold.
pub fn write_record(out: &mut Vec<u8>, source: RecordSource<'_>, fields: Fields) {
    match fields {
        Fields::Full => serde_json::to_writer(&mut *out, &record(source)),
        Fields::Prototype => {
            let o = source.observation;
            serde_json::to_writer(
                &mut *out,
                &PrototypeRecord {
                    timestamp: &o.observed_at,
                    observation_id: &o.code,
                    observation_value: &o.value,
                    units: &o.units,
                    reference_range: &o.reference_range,
                    abnormal_flags: &o.abnormal_flags,
                    mark: o.mark,
                },
            )
        }
    }
    .expect(SERIALISES);
}

/// Appends a feed message's records, in OBX order, each as [`write_record`] writes it,
/// with `between` between two of them and `after` after each.
pub fn write_message_records(
    out: &mut Vec<u8>,
    message: &FeedMessage,
    fields: Fields,
    between: &[u8],
    after: &[u8],
) {
    for (i, observation) in message.observations.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(between);
        }
        write_record(out, RecordSource::of_feed(message, observation), fields);
        out.extend_from_slice(after);
    }
}

/// The document's first line: `{"PatientInfo":{…},"Records":[` (without its newline).
pub fn write_header(out: &mut Vec<u8>, patient: &PatientData, fields: Fields) {
    out.extend_from_slice(br#"{"PatientInfo":"#);
    match fields {
        Fields::Full => serde_json::to_writer(&mut *out, &patient_info(patient)),
        Fields::Prototype => {
            let info = patient_info(patient);
            serde_json::to_writer(
                &mut *out,
                &PrototypeInfo {
                    patient_id: info.patient_id,
                    patient_name: info.patient_name,
                    date_of_birth: info.date_of_birth,
                    sex: info.sex,
                    patient_key: info.patient_key,
                },
            )
        }
    }
    .expect(SERIALISES);
    out.extend_from_slice(br#","Records":["#);
}

/// What ends a document: the line after the last record.
pub const DOCUMENT_END: &[u8] = b"]}\n";

/// Appends a document from its header line and its record lines (newest first), in the
/// layout the files have: the header line, one record a line with `,` after all but the
/// last, then `]}`:
///
/// ```text
/// {"PatientInfo":{…},"Records":[
/// {"Timestamp":…},
/// {"Timestamp":…}
/// ]}
/// ```
pub fn assemble<'a>(out: &mut Vec<u8>, header: &[u8], lines: impl IntoIterator<Item = &'a [u8]>) {
    out.extend_from_slice(header);
    out.push(b'\n');
    let mut any = false;
    for line in lines {
        if any {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(line);
        any = true;
    }
    if any {
        out.push(b'\n');
    }
    out.extend_from_slice(DOCUMENT_END);
}

/// The patient document as the files hold it (the layout of [`assemble`]).
pub fn render_document(records: &PatientRecords, fields: Fields) -> Vec<u8> {
    let mut header = Vec::new();
    write_header(&mut header, &records.patient, fields);
    render_with_header(&header, &records.records, fields)
}

/// A document of `header` (up to its `"Records":[`, as [`write_header`] writes it) and
/// `rows` as records, in the layout of [`assemble`]: patient and device files alike.
pub fn render_with_header(header: &[u8], rows: &[ObservationRow], fields: Fields) -> Vec<u8> {
    let mut lines = Vec::with_capacity(rows.len() * 160);
    let mut ends = Vec::with_capacity(rows.len());
    for row in rows {
        write_record(&mut lines, RecordSource::from(row), fields);
        ends.push(lines.len());
    }
    let mut out = Vec::with_capacity(header.len() + lines.len() + 2 * ends.len() + 8);
    let mut start = 0;
    assemble(
        &mut out,
        header,
        ends.iter().map(|&end| {
            let line = &lines[start..end];
            start = end;
            line
        }),
    );
    out
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
            mark: None,
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
        let json: serde_json::Value =
            serde_json::from_slice(&render_document(&records, Fields::Full)).unwrap();
        let record = |value: &str, second: u32| {
            serde_json::json!({
                "Timestamp": "2002-02-15T07:30:00",
                "ObservationID": "1554-5",
                "ObservationValue": value,
                "Units": "mg/dl",
                "ReferenceRange": "70_105",
                "AbnormalFlags": "H",
                "ObservationText": "GLUCOSE",
                "CodingSystem": "POST 12H CFST:MCNC:PT:SER/PLAS:QN",
                "ValueType": "SN",
                "SubID": "",
                "NumericValue": value.parse::<f64>().unwrap(),
                "ResultStatus": "F",
                "Device": "GHH LAB",
                "ReceivedAt": format!("2025-08-04T12:01:0{second}.000Z"),
                "MessageControlID": "CNTRL-3456"
            })
        };
        let expected = serde_json::json!({
            "PatientInfo": {
                "PatientID": "555-44-4444",
                "PatientName": "EVE EVERYWOMAN",
                "DateOfBirth": "196203520",
                "Sex": "Female",
                "AssigningAuthority": "",
                "Identifiers": "555-44-4444"
            },
            "Records": [record("184", 3), record("182", 1)]
        });
        assert_eq!(json, expected);
        // The prototype's keys only, in its order.
        let text = String::from_utf8(render_document(&records, Fields::Prototype)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&String> = value["Records"][0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "AbnormalFlags",
                "ObservationID",
                "ObservationValue",
                "ReferenceRange",
                "Timestamp",
                "Units"
            ]
        );
        assert!(text.find("\"Timestamp\"").unwrap() < text.find("\"AbnormalFlags\"").unwrap());
        let info: Vec<&String> = value["PatientInfo"].as_object().unwrap().keys().collect();
        assert_eq!(info, ["DateOfBirth", "PatientID", "PatientName", "Sex"]);
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
                serde_json::from_slice(&render_document(&records, Fields::Full)).unwrap();
            assert_eq!(value["PatientInfo"]["Sex"], name);
        }
        let value: serde_json::Value =
            serde_json::from_slice(&render_document(&records, Fields::Full)).unwrap();
        assert_eq!(value["PatientInfo"]["PatientKey"], "AUTH/555-44-4444");
        let record = &value["Records"][0];
        assert_eq!(record["ObservationValue"], "<10");
        assert!(record.get("NumericValue").is_none());
        assert_eq!(record["UnitsText"], "milligram per decilitre");
        assert_eq!(record["EquipmentID"], "0123456789ABCDEF");
    }
}
