//! Demographic queries: `QRY^A19` (the id in QRD-8, Mindray VS8 style) and `QBP^Q22`
//! (IHE PDQ: `@PID.3.1^id` and/or `@PID.5.1^family` in QPD-3), answered from the patients
//! the store knows with `ADR^A19` or `RSP^K22` (docs/acks.md, "Queries").
//!
//! A query is stored like every message (in `messages`, its type `QRY^A19` or `QBP^Q22`),
//! but about no patient and with no observations; [`is_query`] tells it from data.

use hl7::Message;
use hl7::ack::AckOptions;
use hl7::escape::escape;

use crate::store::{StoreError, StoreRead};

/// At most this many patients are returned for one query.
pub const MAX_MATCHES: usize = 50;

/// The two queries hl7-ihp answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryKind {
    /// `QRY^A19`, answered with `ADR^A19`.
    A19,
    /// `QBP^Q22`, answered with `RSP^K22`.
    Q22,
}

/// Which query MSH-9 names, if any.
pub fn query_kind(message_type: &str, trigger: &str) -> Option<QueryKind> {
    if message_type.eq_ignore_ascii_case("QRY") && trigger.eq_ignore_ascii_case("A19") {
        Some(QueryKind::A19)
    } else if message_type.eq_ignore_ascii_case("QBP") && trigger.eq_ignore_ascii_case("Q22") {
        Some(QueryKind::Q22)
    } else {
        None
    }
}

/// Whether a stored message type (`MSH-9.1^MSH-9.2`) is a query hl7-ihp answers.
pub fn is_query(message_type: &str) -> bool {
    let (kind, trigger) = message_type.split_once('^').unwrap_or((message_type, ""));
    query_kind(kind, trigger).is_some()
}

/// What a query asks for: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientQuery {
    /// The patient id (PID-3.1).
    pub id: Option<String>,
    /// The family name (PID-5.1), matched without regard to case.
    pub family: Option<String>,
}

/// Reads what a query asks for, or why it cannot be answered (no patient data in it).
pub fn read_query(message: &Message<'_>, kind: QueryKind) -> Result<PatientQuery, String> {
    let nonempty = |text: String| (!text.trim().is_empty()).then(|| text.trim().to_owned());
    match kind {
        QueryKind::A19 => {
            let qrd = message
                .segment("QRD")
                .ok_or_else(|| "QRY^A19 without a QRD segment".to_owned())?;
            // QRD-8 (who subject filter) is an XCN: its first component is the id.
            let id = nonempty(qrd.field(8).component(1).text().into_owned())
                .ok_or_else(|| "QRD-8 (the patient id asked for) is empty".to_owned())?;
            Ok(PatientQuery {
                id: Some(id),
                family: None,
            })
        }
        QueryKind::Q22 => {
            let qpd = message
                .segment("QPD")
                .ok_or_else(|| "QBP^Q22 without a QPD segment".to_owned())?;
            let mut query = PatientQuery::default();
            for parameter in qpd.field(3).repetitions() {
                let name = parameter.component(1).text();
                let value = nonempty(parameter.component(2).text().into_owned());
                match name.trim().to_ascii_uppercase().as_str() {
                    "@PID.3.1" | "@PID.3" => query.id = value,
                    "@PID.5.1" | "@PID.5.1.1" | "@PID.5" => query.family = value,
                    _ => {}
                }
            }
            if query.id.is_none() && query.family.is_none() {
                return Err("QPD-3 asks for neither @PID.3.1 nor @PID.5.1".to_owned());
            }
            Ok(query)
        }
    }
}

/// A patient that matched, as the answer's PID and PV1 carry them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// PID-3.1.
    pub id: String,
    /// PID-3.4.
    pub assigning_authority: String,
    /// PID-5.1.
    pub family: String,
    /// PID-5.2.
    pub given: String,
    /// PID-7 as stored (an ISO date, or as sent).
    pub birth_date: String,
    /// PID-8.
    pub sex: String,
    /// PV1-3 of the newest of the patient's messages that had one.
    pub location: Option<String>,
}

/// How many of a patient's newest messages are read for a location.
const LOCATION_LOOKBACK: usize = 16;

/// The known patients that match `query`, at most [`MAX_MATCHES`], by key.
///
/// The stored name is `given family` (as the patient files write it); its last word is
/// taken as the family name, so a family name of several words matches by its last one.
pub async fn find_patients(
    store: &dyn StoreRead,
    query: &PatientQuery,
) -> Result<Vec<Found>, StoreError> {
    let family = query.family.as_deref().map(str::to_lowercase);
    let mut found = Vec::new();
    for summary in store.patients().await? {
        if found.len() >= MAX_MATCHES {
            break;
        }
        if let Some(family) = &family
            && split_name(&summary.name).0.to_lowercase() != *family
        {
            continue;
        }
        if let Some(id) = &query.id
            && summary.key != *id
            && !summary.key.ends_with(&format!("/{id}"))
        {
            continue;
        }
        let Some((patient, messages)) = store.patient_feed(&summary.key, LOCATION_LOOKBACK).await?
        else {
            continue;
        };
        if let Some(id) = &query.id
            && patient.id != *id
        {
            continue;
        }
        let (family, given) = split_name(&patient.name);
        found.push(Found {
            id: patient.id.clone(),
            assigning_authority: patient.assigning_authority.clone(),
            family: family.to_owned(),
            given: given.to_owned(),
            birth_date: patient.birth_date.clone(),
            sex: patient.sex.clone(),
            location: messages
                .iter()
                .find_map(|m| m.location.clone().filter(|l| !l.is_empty())),
        });
    }
    Ok(found)
}

/// `given family` as (family, given): the last word is the family name.
fn split_name(name: &str) -> (&str, &str) {
    let name = name.trim();
    match name.rsplit_once(' ') {
        Some((given, family)) => (family, given.trim()),
        None => (name, ""),
    }
}

/// The answer to a query that was stored: `ADR^A19` or `RSP^K22` with MSA AA, the query
/// echoed (QRD, or QAK and QPD), and PID and PV1 per match, in the query's delimiters and
/// version.
pub fn build_response(
    message: &Message<'_>,
    kind: QueryKind,
    found: &[Found],
    options: &AckOptions<'_>,
) -> Vec<u8> {
    let d = message.delimiters();
    let field_sep = char::from(d.field);
    let comp = char::from(d.component);
    let text = |t: &str| escape(t, &d).into_owned();
    let msh = message.segment_at(0);
    let raw = |n: usize| -> String {
        msh.map(|msh| String::from_utf8_lossy(msh.field(n).raw()).into_owned())
            .unwrap_or_default()
    };
    let or = |value: String, fallback: &str| {
        if value.is_empty() {
            text(fallback)
        } else {
            value
        }
    };
    let (reply_type, structure) = match kind {
        QueryKind::A19 => ("ADR^A19", "ADR_A19"),
        QueryKind::Q22 => ("RSP^K22", "RSP_K22"),
    };
    let reply_type = reply_type.replace('^', &comp.to_string());
    let mut segments: Vec<String> = Vec::new();
    let mut msh_fields = vec![
        d.encoding_characters(),
        or(raw(5), options.application),
        or(raw(6), options.facility),
        raw(3),
        raw(4),
        text(options.time),
        String::new(),
        format!("{reply_type}{comp}{structure}"),
        text(options.control_id),
        raw(11),
        raw(12),
    ];
    let charset = raw(18);
    if !charset.is_empty() {
        msh_fields.extend(std::iter::repeat_n(String::new(), 5));
        msh_fields.push(charset);
    }
    segments.push(format!(
        "MSH{field_sep}{}",
        msh_fields.join(&field_sep.to_string())
    ));
    segments.push(format!("MSA{field_sep}AA{field_sep}{}", raw(10)));
    let echo = |id: &str| {
        message
            .segment(id)
            .map(|s| String::from_utf8_lossy(s.raw()).into_owned())
    };
    match kind {
        QueryKind::A19 => {
            // In 2.3.1 an empty answer is an ADR with no PID; a QAK is not part of ADR^A19.
            if let Some(qrd) = echo("QRD") {
                segments.push(qrd);
            }
        }
        QueryKind::Q22 => {
            let tag = message
                .segment("QPD")
                .map(|q| String::from_utf8_lossy(q.field(2).raw()).into_owned())
                .unwrap_or_default();
            let status = if found.is_empty() { "NF" } else { "OK" };
            segments.push(format!("QAK{field_sep}{tag}{field_sep}{status}"));
            if let Some(qpd) = echo("QPD") {
                segments.push(qpd);
            }
        }
    }
    for (n, patient) in found.iter().enumerate() {
        let mut pid3 = text(&patient.id);
        if !patient.assigning_authority.is_empty() {
            pid3.push_str(&format!(
                "{comp}{comp}{comp}{}",
                text(&patient.assigning_authority)
            ));
        }
        let pid5 = if patient.given.is_empty() {
            text(&patient.family)
        } else {
            format!("{}{comp}{}", text(&patient.family), text(&patient.given))
        };
        let birth = text(&patient.birth_date.replace('-', ""));
        let pid = [
            "PID".to_owned(),
            (n + 1).to_string(),
            String::new(),
            pid3,
            String::new(),
            pid5,
            String::new(),
            birth,
            text(&patient.sex),
        ];
        segments.push(pid.join(&field_sep.to_string()));
        // Stored as sent (`ICU^^BED07`): its components are written in our delimiters.
        let location = patient
            .location
            .as_deref()
            .map(|l| {
                l.split('^')
                    .map(&text)
                    .collect::<Vec<_>>()
                    .join(&comp.to_string())
            })
            .unwrap_or_default();
        segments.push(format!("PV1{field_sep}1{field_sep}{field_sep}{location}"));
    }
    let mut out = segments.join("\r");
    out.push('\r');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: AckOptions<'static> = AckOptions {
        application: "HL7IHP",
        facility: "IHP",
        control_id: "A1-0",
        time: "20260101120000+0000",
    };

    fn found() -> Found {
        Found {
            id: "P1".into(),
            assigning_authority: String::new(),
            family: "Doe|X".into(),
            given: "Jane".into(),
            birth_date: "1970-01-02".into(),
            sex: "F".into(),
            location: Some("ICU^1^2".into()),
        }
    }

    #[test]
    fn kinds_are_told_from_msh9() {
        assert_eq!(query_kind("QRY", "A19"), Some(QueryKind::A19));
        assert_eq!(query_kind("qbp", "q22"), Some(QueryKind::Q22));
        assert_eq!(query_kind("ORU", "R01"), None);
        assert!(is_query("QBP^Q22"));
        assert!(!is_query("ADT^A01"));
    }

    #[test]
    fn a19_reads_qrd8_and_answers_adr_with_escaped_pid() {
        let text = "MSH|^~\\&|VS8|WARD|||20260101120000||QRY^A19|Q1|P|2.3.1\r\
                    QRD|20260101120000|R|I|Q1|||1^RD|P1|DEM|||\r";
        let message = hl7::parse(text.as_bytes()).unwrap();
        let query = read_query(&message, QueryKind::A19).unwrap();
        assert_eq!(query.id.as_deref(), Some("P1"));
        let out = build_response(&message, QueryKind::A19, &[found()], &OPTIONS);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("MSH|^~\\&|HL7IHP|IHP|VS8|WARD|"), "{out}");
        assert!(out.contains("|ADR^A19^ADR_A19|A1-0|P|2.3.1\r"), "{out}");
        assert!(out.contains("\rMSA|AA|Q1\rQRD|"), "{out}");
        assert!(
            out.contains("\rPID|1||P1||Doe\\F\\X^Jane||19700102|F\r"),
            "{out}"
        );
        assert!(out.contains("\rPV1|1||ICU^1^2\r"), "{out}");
    }

    #[test]
    fn q22_reads_parameters_and_answers_nf_without_matches() {
        let text = "MSH|^~\\&|GW|WARD|||20260101120000||QBP^Q22^QBP_Q21|Q2|P|2.5\r\
                    QPD|IHE PDQ Query|TAG7|@PID.5.1^Doe~@PID.3.1^P1\rRCP|I|10^RD\r";
        let message = hl7::parse(text.as_bytes()).unwrap();
        let query = read_query(&message, QueryKind::Q22).unwrap();
        assert_eq!(query.id.as_deref(), Some("P1"));
        assert_eq!(query.family.as_deref(), Some("Doe"));
        let out = build_response(&message, QueryKind::Q22, &[], &OPTIONS);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("|RSP^K22^RSP_K22|"), "{out}");
        assert!(
            out.contains("\rMSA|AA|Q2\rQAK|TAG7|NF\rQPD|IHE PDQ Query|TAG7|"),
            "{out}"
        );
        assert!(!out.contains("PID|"), "{out}");
    }

    #[test]
    fn unanswerable_queries_say_why() {
        let text = "MSH|^~\\&|GW|WARD|||20260101120000||QBP^Q22|Q2|P|2.5\rQPD|IHE PDQ Query|T\r";
        let message = hl7::parse(text.as_bytes()).unwrap();
        assert!(read_query(&message, QueryKind::Q22).is_err());
        let text = "MSH|^~\\&|VS8|WARD|||20260101120000||QRY^A19|Q1|P|2.3.1\r";
        let message = hl7::parse(text.as_bytes()).unwrap();
        assert!(read_query(&message, QueryKind::A19).is_err());
    }

    #[test]
    fn names_split_at_the_last_word() {
        assert_eq!(split_name("Jane Ann Doe"), ("Doe", "Jane Ann"));
        assert_eq!(split_name("Doe"), ("Doe", ""));
    }
}
