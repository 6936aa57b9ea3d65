//! What hl7-ihp needs from a message: the header, the patient, the location and one
//! observation per OBX, as text decoded by MSH-18 with escapes resolved.
//!
//! Extraction never fails on content: a value it cannot interpret (an odd date, a number
//! that is not one) is kept as text and its typed form left empty, because a device's data
//! is never refused for a cosmetic fault (docs/acks.md). Whether required header fields are
//! present is a separate question, answered by [`Header::missing_required`].

use std::borrow::Cow;

use crate::message::{Component, Field, Message, Segment};
use crate::timestamp::{self, Timestamp};

/// MSH: who sent what, and how it wants to be answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Header<'a> {
    /// MSH-9.1, e.g. `ORU`.
    pub message_type: Cow<'a, str>,
    /// MSH-9.2, e.g. `R01`.
    pub trigger: Cow<'a, str>,
    /// MSH-9.3, e.g. `ORU_R01`.
    pub structure: Cow<'a, str>,
    /// MSH-10.
    pub control_id: Cow<'a, str>,
    /// MSH-11.1: `P`, `T` or `D`.
    pub processing_id: Cow<'a, str>,
    /// MSH-12.1, e.g. `2.6`.
    pub version: Cow<'a, str>,
    /// MSH-15, accept acknowledgment type (`AL`, `NE`, `ER`, `SU` or empty).
    pub accept_ack_type: Cow<'a, str>,
    /// MSH-16, application acknowledgment type.
    pub application_ack_type: Cow<'a, str>,
    /// MSH-3 as sent (all components).
    pub sending_application: Cow<'a, str>,
    /// MSH-4 as sent.
    pub sending_facility: Cow<'a, str>,
    /// MSH-5 as sent.
    pub receiving_application: Cow<'a, str>,
    /// MSH-6 as sent.
    pub receiving_facility: Cow<'a, str>,
    /// MSH-18, first repetition, as sent.
    pub charset: Cow<'a, str>,
    /// MSH-7.1 as sent.
    pub time_raw: Cow<'a, str>,
    /// MSH-7 when it is a valid HL7 time.
    pub time: Option<Timestamp>,
}

/// A required header field that is empty: the ERR of an AE names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingField {
    /// The MSH field number (9 or 10).
    pub field: usize,
}

impl Header<'_> {
    /// The first required field that is empty: MSH-9 (its type) or MSH-10.
    pub fn missing_required(&self) -> Option<MissingField> {
        if self.message_type.trim().is_empty() {
            Some(MissingField { field: 9 })
        } else if self.control_id.trim().is_empty() {
            Some(MissingField { field: 10 })
        } else {
            None
        }
    }
}

/// One identifier from PID-3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientId<'a> {
    /// CX-1, the id itself.
    pub id: Cow<'a, str>,
    /// CX-4, the assigning authority as sent (`HOSP`, or `HOSP&1.2.3&ISO`).
    pub assigning_authority: Cow<'a, str>,
    /// CX-5, the identifier type code (`MR`, `PI`, …).
    pub id_type: Cow<'a, str>,
}

/// A person's name from an XPN field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersonName<'a> {
    /// XPN-1 (its surname subcomponent).
    pub family: Cow<'a, str>,
    /// XPN-2.
    pub given: Cow<'a, str>,
    /// XPN-3, further given names or initials.
    pub middle: Cow<'a, str>,
    /// XPN-4.
    pub suffix: Cow<'a, str>,
    /// XPN-5.
    pub prefix: Cow<'a, str>,
}

impl PersonName<'_> {
    /// The given name, a space and the family name, as the prototype wrote `PatientName`;
    /// either may be missing.
    pub fn display(&self) -> String {
        let given = self.given.trim();
        let family = self.family.trim();
        match (given.is_empty(), family.is_empty()) {
            (false, false) => format!("{given} {family}"),
            (false, true) => given.to_owned(),
            _ => family.to_owned(),
        }
    }
}

/// PID: who the data is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patient<'a> {
    /// PID-3, every repetition with an id, in order.
    pub identifiers: Vec<PatientId<'a>>,
    /// PID-5, first repetition.
    pub name: PersonName<'a>,
    /// PID-7.1 as sent.
    pub birth_date_raw: Cow<'a, str>,
    /// PID-7 as an ISO date (`YYYY-MM-DD`) when it is a valid HL7 date of day precision.
    pub birth_date: Option<String>,
    /// PID-8 as sent (HL7 table 0001 code).
    pub sex: Cow<'a, str>,
}

impl<'a> Patient<'a> {
    /// The identifier that names the patient: the first PID-3 repetition with an id.
    pub fn primary_id(&self) -> Option<&PatientId<'a>> {
        self.identifiers.first()
    }
}

/// The name of an HL7 table 0001 sex code (`F` → `Female`), or `None` for other codes.
pub fn sex_name(code: &str) -> Option<&'static str> {
    Some(match code.trim() {
        "F" => "Female",
        "M" => "Male",
        "O" => "Other",
        "U" => "Unknown",
        "A" => "Ambiguous",
        "N" => "Not applicable",
        _ => return None,
    })
}

/// Where an observation's time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSource {
    /// OBX-14.
    Observation,
    /// OBR-7 of the OBR the OBX follows.
    Request,
    /// MSH-7.
    Message,
    /// None of them held a valid time; the receiver uses the time it received the message.
    None,
}

/// One OBX.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation<'a> {
    /// 0-based index of the OBX segment in the message.
    pub segment_index: usize,
    /// OBX-1.
    pub set_id: Cow<'a, str>,
    /// OBX-2, e.g. `NM`, `SN`, `ST`, `CWE`.
    pub value_type: Cow<'a, str>,
    /// OBX-3.1, the observation code (LOINC, MDC, local).
    pub code: Cow<'a, str>,
    /// OBX-3.2, its text.
    pub code_text: Cow<'a, str>,
    /// OBX-3.3, its coding system (`LN`, `MDC`, …).
    pub code_system: Cow<'a, str>,
    /// OBX-4, the sub-id (in IHE PCD-01, the containment path `1.2.1.1`).
    pub sub_id: Cow<'a, str>,
    /// OBX-5 as text: SN `^182` → `182`, `<^10` → `<10`; coded values → their text.
    pub value: Cow<'a, str>,
    /// OBX-5 as a number, for NM and SN values that are plain numbers.
    pub numeric: Option<f64>,
    /// OBX-6.1, the units code or, when OBX-6 has one component, the units as sent.
    pub units: Cow<'a, str>,
    /// OBX-6.2, the units text.
    pub units_text: Cow<'a, str>,
    /// OBX-6.3, the units coding system.
    pub units_system: Cow<'a, str>,
    /// OBX-7, as sent.
    pub reference_range: Cow<'a, str>,
    /// OBX-8, every repetition joined with `~`.
    pub abnormal_flags: Cow<'a, str>,
    /// OBX-11, the result status (`F`, `R`, `X`, …).
    pub status: Cow<'a, str>,
    /// OBX-14.1 as sent.
    pub time_raw: Cow<'a, str>,
    /// The observation time: OBX-14, else OBR-7, else MSH-7, the first that is valid.
    pub time: Option<Timestamp>,
    /// Which field gave [`Observation::time`].
    pub time_source: TimeSource,
    /// OBX-18.1, the equipment instance id (in IHE PCD-01, the device's EUI-64).
    pub equipment: Cow<'a, str>,
}

/// Everything extracted from one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Extract<'a> {
    /// MSH.
    pub header: Header<'a>,
    /// PID, when the message has one (IHE PCD-01 allows messages without it).
    pub patient: Option<Patient<'a>>,
    /// PV1-3, the assigned location (`ICU^^BED07^HOSP`), as sent.
    pub location: Option<Cow<'a, str>>,
    /// One per OBX, in order.
    pub observations: Vec<Observation<'a>>,
}

impl Extract<'_> {
    /// True for ADT messages with a PID: they update what is known of the patient.
    pub fn is_patient_update(&self) -> bool {
        self.header.message_type == "ADT" && self.patient.is_some()
    }
}

/// Extracts header, patient, location and observations from a parsed message.
///
/// Segments are matched by their exact upper-case ids, as HL7 writes them: a segment sent
/// as `obx` or `pid` is kept in the message and does not make extraction fail, but it is
/// not read as an observation or a patient, since nothing says it means the same.
pub fn extract<'a>(message: &Message<'a>) -> Extract<'a> {
    let header = match message.segment_at(0) {
        Some(msh) => header(&msh),
        None => empty_header(),
    };
    let mut patient = None;
    let mut location = None;
    let mut observations = Vec::with_capacity(message.segment_count());
    let mut request_time: Option<Timestamp> = None;
    let mut times = TimeCache::default();
    for segment in message.segments() {
        match &segment.id().0 {
            b"PID" if patient.is_none() => patient = Some(read_patient(&segment)),
            b"PV1" if location.is_none() => {
                let field = segment.field(3);
                if !field.is_empty() {
                    location = Some(field.raw_text());
                }
            }
            b"OBR" => request_time = time_of(segment.field(7).component(1)),
            b"OBX" => observations.push(read_observation(
                &segment,
                request_time,
                header.time,
                &mut times,
            )),
            _ => {}
        }
    }
    Extract {
        header,
        patient,
        location,
        observations,
    }
}

/// The text of a field's first `N` components (first repetition), splitting it once.
fn texts<'a, const N: usize>(field: Field<'a>) -> [Cow<'a, str>; N] {
    field.component_texts()
}

fn time_of(component: Component<'_>) -> Option<Timestamp> {
    let raw = component.raw();
    if raw.is_empty() {
        return None;
    }
    Timestamp::parse_bytes(raw).ok()
}

fn empty_header<'a>() -> Header<'a> {
    Header {
        message_type: Cow::Borrowed(""),
        trigger: Cow::Borrowed(""),
        structure: Cow::Borrowed(""),
        control_id: Cow::Borrowed(""),
        processing_id: Cow::Borrowed(""),
        version: Cow::Borrowed(""),
        accept_ack_type: Cow::Borrowed(""),
        application_ack_type: Cow::Borrowed(""),
        sending_application: Cow::Borrowed(""),
        sending_facility: Cow::Borrowed(""),
        receiving_application: Cow::Borrowed(""),
        receiving_facility: Cow::Borrowed(""),
        charset: Cow::Borrowed(""),
        time_raw: Cow::Borrowed(""),
        time: None,
    }
}

fn header<'a>(msh: &Segment<'_, 'a>) -> Header<'a> {
    let [message_type, trigger, structure] = texts(msh.field(9));
    let time = msh.field(7).component(1);
    Header {
        message_type,
        trigger,
        structure,
        control_id: msh.field(10).text(),
        processing_id: msh.field(11).component(1).text(),
        version: msh.field(12).component(1).text(),
        accept_ack_type: msh.field(15).text(),
        application_ack_type: msh.field(16).text(),
        sending_application: msh.field(3).raw_text(),
        sending_facility: msh.field(4).raw_text(),
        receiving_application: msh.field(5).raw_text(),
        receiving_facility: msh.field(6).raw_text(),
        charset: msh.field(18).repetition(1).raw_text(),
        time_raw: time.text(),
        time: time_of(time),
    }
}

fn read_patient<'a>(pid: &Segment<'_, 'a>) -> Patient<'a> {
    let identifiers = pid
        .field(3)
        .repetitions()
        .filter_map(|repetition| {
            let id = repetition.component(1).text();
            (!id.trim().is_empty()).then(|| PatientId {
                id,
                assigning_authority: repetition.component(4).raw_text(),
                id_type: repetition.component(5).text(),
            })
        })
        .collect();
    let name = pid.field(5).repetition(1);
    let [_, given, middle, suffix, prefix] = texts(pid.field(5));
    let birth = pid.field(7).component(1).text();
    Patient {
        identifiers,
        name: PersonName {
            family: name.component(1).subcomponent(1).text(),
            given,
            middle,
            suffix,
            prefix,
        },
        birth_date: timestamp::birth_date_iso(&birth),
        birth_date_raw: birth,
        sex: pid.field(8).text(),
    }
}

/// The last OBX-14 read and its value: the OBX of one device report usually share a time.
#[derive(Default)]
struct TimeCache<'a> {
    raw: &'a [u8],
    time: Option<Timestamp>,
}

impl<'a> TimeCache<'a> {
    fn get(&mut self, component: Component<'a>) -> Option<Timestamp> {
        if component.raw() != self.raw || self.raw.is_empty() {
            self.raw = component.raw();
            self.time = time_of(component);
        }
        self.time
    }
}

fn read_observation<'a>(
    obx: &Segment<'_, 'a>,
    request_time: Option<Timestamp>,
    message_time: Option<Timestamp>,
    times: &mut TimeCache<'a>,
) -> Observation<'a> {
    let value_type = obx.field(2).text();
    let [code, code_text, code_system] = texts(obx.field(3));
    let [units, units_text, units_system] = texts(obx.field(6));
    let observed = obx.field(14).component(1);
    let (value, numeric) = read_value(obx.field(5), &value_type);
    // IEEE 11073 special values (NaN, NRes, ±infinity) are not measurements.
    let numeric = numeric.filter(|n| {
        !(code_system == "MDC"
            && [8_388_607.0, -8_388_608.0, 8_388_606.0, -8_388_606.0].contains(n))
    });
    let (time, time_source) = match (times.get(observed), request_time, message_time) {
        (Some(t), _, _) => (Some(t), TimeSource::Observation),
        (None, Some(t), _) => (Some(t), TimeSource::Request),
        (None, None, Some(t)) => (Some(t), TimeSource::Message),
        (None, None, None) => (None, TimeSource::None),
    };
    Observation {
        segment_index: obx.index(),
        set_id: obx.field(1).text(),
        value_type,
        code,
        code_text,
        code_system,
        sub_id: obx.field(4).text(),
        value,
        numeric,
        units,
        units_text,
        units_system,
        reference_range: obx.field(7).text(),
        abnormal_flags: joined(obx.field(8), "~"),
        status: obx.field(11).text(),
        time_raw: observed.text(),
        time,
        time_source,
        equipment: obx.field(18).component(1).text(),
    }
}

/// Every repetition's text joined; borrowed when there is one.
fn joined<'a>(field: Field<'a>, separator: &str) -> Cow<'a, str> {
    let mut repetitions = field.repetitions();
    let first = repetitions.next().map(|r| r.text()).unwrap_or_default();
    let mut out: Option<String> = None;
    for repetition in repetitions {
        let text = out.get_or_insert_with(|| first.to_string());
        text.push_str(separator);
        text.push_str(&repetition.text());
    }
    out.map_or(first, Cow::Owned)
}

/// OBX-5 as text and, for numeric types, as a number.
fn read_value<'a>(field: Field<'a>, value_type: &str) -> (Cow<'a, str>, Option<f64>) {
    match value_type {
        "NM" => {
            let text = field.text();
            let number = parse_number(&text);
            (text, number)
        }
        "SN" => read_structured_numeric(field),
        "CE" | "CWE" | "CNE" | "CF" => {
            let repetition = field.repetition(1);
            let text = repetition.component(2);
            let value = if text.is_empty() {
                repetition.component(1).text()
            } else {
                text.text()
            };
            (value, None)
        }
        "TX" | "FT" => (joined(field, "\n"), None),
        _ => (joined(field, "~"), None),
    }
}

/// SN: comparator ^ number ^ separator/suffix ^ number. `^182` → `182`, `<^10` → `<10`,
/// `^10^-^20` → `10-20`; a number only when it is a plain one.
fn read_structured_numeric(field: Field<'_>) -> (Cow<'_, str>, Option<f64>) {
    let repetition = field.repetition(1);
    let comparator = repetition.component(1).text();
    let first = repetition.component(2).text();
    let separator = repetition.component(3).text();
    let second = repetition.component(4).text();
    let plain =
        (comparator.is_empty() || comparator == "=") && separator.is_empty() && second.is_empty();
    let number = if plain { parse_number(&first) } else { None };
    if comparator.is_empty() && separator.is_empty() && second.is_empty() {
        return (first, number);
    }
    let text = format!("{comparator}{first}{separator}{second}");
    (Cow::Owned(text), number)
}

/// An HL7 NM value: optional sign, digits, optional decimal point; spaces around allowed.
fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let valid = !digits.is_empty()
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1;
    if !valid {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    const PROTOTYPE: &[u8] = b"MSH|^~|GHH LAB|ELAB-3|GHH OE|BLDG4|200202150930||ORU^R01|CNTRL-3456|P|2.4\rPID|||555-44-4444||EVERYWOMAN^EVE^E^^^^L|JONES|196203520|F|||153 FERNWOOD DR.^^STATESVILLE^OH^35292||(206)3345232|(206)752-121||||AC555444444||67-A4335^OH^20030520\rOBR|1|845439^GHH OE|1045813^GHH LAB|1554-5^GLUCOSE|||200202150730||||||||555-55-5555^PRIMARY^PATRICIA P^^^^MD^^LEVEL SEVEN HEALTHCARE, INC.|||||||||F||||||444-44-4444^HIPPOCRATES^HOWARD H^^^^MD\rOBX|1|SN|1554-5^GLUCOSE^POST 12H CFST:MCNC:PT:SER/PLAS:QN||^182|mg/dl|70_105|H|||F\r";

    const PCD01: &[u8] = b"MSH|^~\\&|MONITOR^0012A3FFFE45B6C7^EUI-64|ICU|||20261126101500+0100||ORU^R01^ORU_R01|MSG-1|P|2.6|||AL|NE||UNICODE UTF-8\rPV1||I|ICU^^BED07^HOSP\rOBR|1||0012A3FFFE45B6C7^EUI-64|69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|||20261126101458+0100\rOBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120|N|||R|||20261126101457+0100||||0012A3FFFE45B6C7^EUI-64\rOBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.2|8388607|262688^MDC_DIM_PERCENT^MDC||||R\rOBX|3|CWE|LEAD^ECG lead^L|1.2.1.3|II^Lead II^MDC||||||R\r";

    #[test]
    fn prototype_message() {
        let message = parse(PROTOTYPE).unwrap();
        let extract = extract(&message);
        let header = &extract.header;
        assert_eq!(
            (&*header.message_type, &*header.trigger, &*header.control_id),
            ("ORU", "R01", "CNTRL-3456")
        );
        assert_eq!(header.version, "2.4");
        assert_eq!(header.missing_required(), None);
        let patient = extract.patient.as_ref().unwrap();
        assert_eq!(patient.primary_id().unwrap().id, "555-44-4444");
        assert_eq!(patient.name.display(), "EVE EVERYWOMAN");
        assert_eq!(patient.birth_date, None);
        assert_eq!(patient.birth_date_raw, "196203520");
        assert_eq!(sex_name(&patient.sex), Some("Female"));
        let [obx] = extract.observations.as_slice() else {
            panic!("one OBX expected");
        };
        assert_eq!(
            (&*obx.code, &*obx.value, obx.numeric),
            ("1554-5", "182", Some(182.0))
        );
        assert_eq!(
            (&*obx.units, &*obx.reference_range, &*obx.abnormal_flags),
            ("mg/dl", "70_105", "H")
        );
        assert_eq!(obx.time_source, TimeSource::Request);
        assert_eq!(obx.time.unwrap().to_iso_string(), "2002-02-15T07:30:00");
        assert!(!extract.is_patient_update());
    }

    #[test]
    fn device_message_without_pid() {
        let message = parse(PCD01).unwrap();
        let extract = extract(&message);
        assert!(extract.patient.is_none());
        assert_eq!(extract.location.as_deref(), Some("ICU^^BED07^HOSP"));
        assert_eq!(
            (
                &*extract.header.accept_ack_type,
                &*extract.header.application_ack_type
            ),
            ("AL", "NE")
        );
        let heart = &extract.observations[0];
        assert_eq!(
            (&*heart.code, &*heart.code_system, &*heart.sub_id),
            ("147842", "MDC", "1.2.1.1")
        );
        assert_eq!(heart.numeric, Some(72.0));
        assert_eq!(heart.units_text, "MDC_DIM_BEAT_PER_MIN");
        assert_eq!(heart.time_source, TimeSource::Observation);
        assert_eq!(
            heart.time.unwrap().to_iso_string(),
            "2026-11-26T10:14:57+01:00"
        );
        assert_eq!(heart.equipment, "0012A3FFFE45B6C7");
        let nan = &extract.observations[1];
        assert_eq!((&*nan.value, nan.numeric), ("8388607", None));
        assert_eq!(nan.time_source, TimeSource::Request);
        assert_eq!(extract.observations[2].value, "Lead II");
    }

    #[test]
    fn structured_numeric_values() {
        let value = |sn: &str| {
            let text = format!("MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\rOBX|1|SN|X||{sn}");
            let message = parse(text.as_bytes()).unwrap();
            let observation = extract(&message).observations.remove(0);
            (observation.value.into_owned(), observation.numeric)
        };
        assert_eq!(value("^182"), ("182".into(), Some(182.0)));
        assert_eq!(value("<^10"), ("<10".into(), None));
        assert_eq!(value("^10^-^20"), ("10-20".into(), None));
        assert_eq!(value("^1^:^128"), ("1:128".into(), None));
        assert_eq!(value("=^5.5"), ("=5.5".into(), Some(5.5)));
        assert_eq!(value("^abc"), ("abc".into(), None));
    }

    #[test]
    fn numbers_are_hl7_numbers() {
        assert_eq!(parse_number(" 12.5 "), Some(12.5));
        assert_eq!(parse_number("-3"), Some(-3.0));
        assert_eq!(parse_number(".5"), Some(0.5));
        for bad in ["", "inf", "NaN", "1e5", "1.2.3", "-", ".", "12 mg"] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn required_fields_and_adt() {
        let message = parse(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|||2.5\rPID|||123^^^HOSP^MR~456^^^OTHER^PI||DOE^JOHN||19700101|M").unwrap();
        let extract = extract(&message);
        assert_eq!(
            extract.header.missing_required(),
            Some(MissingField { field: 10 })
        );
        assert!(extract.is_patient_update());
        let patient = extract.patient.unwrap();
        assert_eq!(patient.identifiers.len(), 2);
        assert_eq!(patient.identifiers[1].assigning_authority, "OTHER");
        assert_eq!(patient.birth_date.as_deref(), Some("1970-01-01"));
        let message = parse(b"MSH|^~\\&|A|B|C|D|2026|||1|P|2.5").unwrap();
        assert_eq!(
            super::extract(&message).header.missing_required(),
            Some(MissingField { field: 9 })
        );
    }

    #[test]
    fn lower_case_segments_are_not_read_as_their_upper_case_namesakes() {
        let message = parse(
            b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\rpid|||9\robx|1|NM|X||5\rOBX|2|NM|Y||6",
        )
        .unwrap();
        let extract = extract(&message);
        assert!(extract.patient.is_none());
        let codes: Vec<_> = extract.observations.iter().map(|o| &*o.code).collect();
        assert_eq!(codes, ["Y"]);
    }

    #[test]
    fn escapes_and_charsets_are_decoded() {
        let message = parse(b"MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5|||||8859/1\rPID|||1||M\xdcLLER\\T\\SCHMIDT^J\\F\\RGEN").unwrap();
        let name = extract(&message).patient.unwrap().name;
        assert_eq!(name.family, "MÜLLER&SCHMIDT");
        assert_eq!(name.given, "J|RGEN");
    }
}
