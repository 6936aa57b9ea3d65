//! `send --query`: builds one demographic query as a device sends it (`QRY^A19` as a
//! Mindray VS8 does, or `QBP^Q22`, IHE PDQ) and reads the answer (`ADR^A19`, `RSP^K22`)
//! into lines for the terminal. No sockets here: `commands/send.rs` sends and prints.

use hl7::Delimiters;
use hl7::escape::escape;

use crate::query::QueryKind;
use crate::terminal;

/// What `send --query` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuerySpec {
    /// Which query to send.
    pub kind: QueryKind,
    /// The patient id asked for (QRD-8, or `@PID.3.1` in QPD-3).
    pub id: String,
    /// The family name asked for too (`@PID.5.1`, `QBP^Q22` only).
    pub family: Option<String>,
}

/// The query's bytes (not framed) with `control_id` in MSH-10 (and QRD-4 or QPD-2) and
/// `now` (an HL7 DTM) in MSH-7; every value given is HL7-escaped.
pub fn build(spec: &QuerySpec, control_id: &str, now: &str) -> Vec<u8> {
    let delimiters = Delimiters::default();
    let text = |value: &str| escape(value, &delimiters).into_owned();
    let control = text(control_id);
    let id = text(&spec.id);
    match spec.kind {
        QueryKind::A19 => format!(
            "MSH|^~\\&|Mindray|VS8|||{now}||QRY^A19|{control}|P|2.3.1\r\
             QRD|{now}|R|I|{control}|||1^RD|{id}|DEM|||\r"
        ),
        QueryKind::Q22 => {
            let mut parameters = format!("@PID.3.1^{id}");
            if let Some(family) = &spec.family {
                parameters.push_str(&format!("~@PID.5.1^{}", text(family)));
            }
            format!(
                "MSH|^~\\&|hl7-ihp|send|||{now}||QBP^Q22^QBP_Q21|{control}|P|2.5\r\
                 QPD|IHE PDQ Query|{control}|{parameters}\rRCP|I|10^RD\r"
            )
        }
    }
    .into_bytes()
}

/// A query's answer, read for the terminal: device text is escaped ([`terminal::escape`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryAnswer {
    /// MSA-1, as sent (empty when missing).
    pub code: String,
    /// QAK-2 (`OK`, `NF`, …) when the answer has a QAK.
    pub status: Option<String>,
    /// One line per PID: PID-3.1, PID-5, PID-7, PID-8 and the PV1-3 that follows it.
    pub patients: Vec<String>,
}

impl QueryAnswer {
    /// Reads an answer's bytes; `None` when they are not an HL7 message.
    pub fn read(bytes: &[u8]) -> Option<QueryAnswer> {
        let message = hl7::parse(bytes).ok()?;
        let field = |text: std::borrow::Cow<'_, str>| terminal::escape(&text).into_owned();
        let code = message.get_text("MSA-1").map(&field).unwrap_or_default();
        let status = message
            .segment("QAK")
            .map(|qak| field(qak.field(2).raw_text()));
        let mut patients = Vec::new();
        let mut pending: Option<[String; 4]> = None;
        let mut flush = |pending: &mut Option<[String; 4]>, location: &str| {
            if let Some([id, name, birth, sex]) = pending.take() {
                let dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                patients.push(format!(
                    "PID {} · {} · {} · {} · {}",
                    dash(&id),
                    dash(&name),
                    dash(&birth),
                    dash(&sex),
                    dash(location)
                ));
            }
        };
        for segment in message.segments() {
            match segment.id().as_str() {
                "PID" => {
                    flush(&mut pending, "");
                    pending = Some([
                        field(segment.field(3).component(1).text()),
                        field(segment.field(5).raw_text()),
                        field(segment.field(7).raw_text()),
                        field(segment.field(8).raw_text()),
                    ]);
                }
                "PV1" => flush(&mut pending, &field(segment.field(3).raw_text())),
                _ => {}
            }
        }
        flush(&mut pending, "");
        Some(QueryAnswer {
            code,
            status,
            patients,
        })
    }

    /// Whether the query was answered (MSA-1 `AA`, or `CA` in enhanced mode).
    pub fn accepted(&self) -> bool {
        matches!(self.code.as_str(), "AA" | "CA")
    }

    /// The first line: `MSA AA · QAK NF`, and `no match` when no patient was returned.
    pub fn headline(&self) -> String {
        let mut line = format!(
            "MSA {}",
            if self.code.is_empty() {
                "-"
            } else {
                &self.code
            }
        );
        if let Some(status) = &self.status {
            line.push_str(&format!(" · QAK {status}"));
        }
        if self.patients.is_empty() {
            line.push_str(" · no match");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_a19_carries_the_id_in_qrd_8_escaped() {
        let spec = QuerySpec {
            kind: QueryKind::A19,
            id: "MRN|1".into(),
            family: None,
        };
        let bytes = build(&spec, "Q-1", "20261201101500");
        let message = hl7::parse(&bytes).unwrap();
        assert_eq!(message.get_text("MSH-9").unwrap(), "QRY^A19");
        assert_eq!(message.get_text("MSH-12").unwrap(), "2.3.1");
        assert_eq!(message.get_text("MSH-10").unwrap(), "Q-1");
        assert_eq!(message.get_text("QRD-8").unwrap(), "MRN|1");
        let read = crate::query::read_query(&message, QueryKind::A19).unwrap();
        assert_eq!(read.id.as_deref(), Some("MRN|1"));
    }

    #[test]
    fn a_q22_carries_the_id_and_the_family() {
        let spec = QuerySpec {
            kind: QueryKind::Q22,
            id: "MRN-2001".into(),
            family: Some("Mustermann".into()),
        };
        let bytes = build(&spec, "Q-2", "20261201101500");
        let message = hl7::parse(&bytes).unwrap();
        assert_eq!(message.get_text("MSH-9").unwrap(), "QBP^Q22^QBP_Q21");
        let read = crate::query::read_query(&message, QueryKind::Q22).unwrap();
        assert_eq!(read.id.as_deref(), Some("MRN-2001"));
        assert_eq!(read.family.as_deref(), Some("Mustermann"));
    }

    #[test]
    fn an_answer_gives_a_line_per_patient_with_device_text_escaped() {
        let answer = b"MSH|^~\\&|a|b|||20261201||RSP^K22^RSP_K22|1|P|2.5\r\
            MSA|AA|Q-2\rQAK|Q-2|OK\rQPD|IHE PDQ Query|Q-2|@PID.3.1^X\r\
            PID|1||X^^^H||Doe\x1b[2J^Jo||19640812|F\rPV1|1|I|ICU^^BED07\r\
            PID|2||Y^^^H||Roe^Al\r";
        let read = QueryAnswer::read(answer).unwrap();
        assert!(read.accepted());
        assert_eq!(read.headline(), "MSA AA · QAK OK");
        assert_eq!(read.patients.len(), 2);
        assert!(!read.patients[0].contains('\x1b'), "{:?}", read.patients);
        assert!(read.patients[0].starts_with("PID X · Doe"));
        assert!(read.patients[0].ends_with("19640812 · F · ICU^^BED07"));
        assert_eq!(read.patients[1], "PID Y · Roe^Al · - · - · -");
        let none = QueryAnswer::read(b"MSH|^~\\&|a|b\rMSA|AA|Q-3\rQAK|Q-3|NF\r").unwrap();
        assert_eq!(none.headline(), "MSA AA · QAK NF · no match");
        let error = QueryAnswer::read(b"MSH|^~\\&|a|b\rMSA|AE|Q-4|bad\r").unwrap();
        assert!(!error.accepted());
    }
}
