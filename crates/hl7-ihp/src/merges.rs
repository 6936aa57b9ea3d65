//! Patient merges as a message asks for them (ADT^A40, A34, A47 with MRG; docs/acks.md,
//! "Patient merges"): which events are merges, the prior patient read from MRG-1, and the
//! checks the message alone decides. The checks that depend on what the store holds run in
//! the store's writer (`store/sqlite/merge.rs`).
//!
//! HL7 v2.5 ch. 3: PID-3 is the surviving patient's identifier list, MRG-1 the prior
//! (non-surviving) one's. A40 merges identifier lists, A34 (older versions) patient ids,
//! A47 changes an identifier (the prior id becomes the new one).

use hl7::Message;
use hl7::SegmentId;
use hl7::ack::{AckError, ErrorCode, ErrorLocation};

use crate::config::PatientIdentity;

/// The ADT events handled as patient merges.
pub const MERGE_EVENTS: &[&str] = &["A40", "A34", "A47"];

/// Whether a message of this type and event is a patient merge.
pub fn is_merge(message_type: &str, trigger: &str) -> bool {
    message_type == "ADT" && MERGE_EVENTS.contains(&trigger)
}

/// The prior patient a merge message names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prior {
    /// The identity key, computed from MRG-1 as a patient's key is from PID-3.
    pub key: String,
}

/// Where MRG-1 is, for the ERR of a refused merge.
pub fn mrg1() -> ErrorLocation {
    ErrorLocation {
        segment: SegmentId(*b"MRG"),
        sequence: 1,
        field: Some(1),
    }
}

fn refuse(code: ErrorCode, location: ErrorLocation, text: &str) -> AckError {
    AckError {
        code,
        location: Some(location),
        text: text.to_owned(),
    }
}

/// Reads the prior patient of a merge message and checks what the message alone decides:
/// one PID and one MRG (several PID/MRG pairs are refused: one merge per message), an id
/// in PID-3 and in MRG-1, not the same patient twice, and the same assigning authority
/// where both name one. The error's text is the reason kept and sent (no patient data).
pub fn read_prior(message: &Message<'_>, identity: PatientIdentity) -> Result<Prior, AckError> {
    let n_pid = message.segments_by_id("PID").count();
    let n_mrg = message.segments_by_id("MRG").count();
    let Some(pid) = message.segment("PID") else {
        return Err(AckError {
            code: ErrorCode::SegmentSequence,
            location: None,
            text: "a merge needs a PID segment (the surviving patient)".into(),
        });
    };
    let Some(mrg) = message.segment("MRG") else {
        return Err(AckError {
            code: ErrorCode::SegmentSequence,
            location: None,
            text: "a merge needs an MRG segment (the prior patient)".into(),
        });
    };
    if n_pid > 1 || n_mrg > 1 {
        return Err(AckError {
            code: ErrorCode::SegmentSequence,
            location: Some(ErrorLocation {
                segment: SegmentId(*b"MRG"),
                sequence: 2.min(n_mrg),
                field: None,
            }),
            text: "more than one PID/MRG pair: this receiver takes one merge per message".into(),
        });
    }
    let first_with_id = |field: hl7::message::Field<'_>| {
        field.repetitions().find_map(|repetition| {
            let id = repetition.component(1).text();
            (!id.trim().is_empty()).then(|| {
                (
                    id.into_owned(),
                    repetition.component(4).raw_text().into_owned(),
                )
            })
        })
    };
    let Some((survivor_id, survivor_authority)) = first_with_id(pid.field(3)) else {
        return Err(refuse(
            ErrorCode::RequiredFieldMissing,
            ErrorLocation {
                segment: SegmentId(*b"PID"),
                sequence: 1,
                field: Some(3),
            },
            "PID-3 (the surviving patient's identifier) is empty",
        ));
    };
    let Some((prior_id, prior_authority)) = first_with_id(mrg.field(1)) else {
        return Err(refuse(
            ErrorCode::RequiredFieldMissing,
            mrg1(),
            "MRG-1 (the prior patient's identifier) is empty",
        ));
    };
    if !prior_authority.is_empty()
        && !survivor_authority.is_empty()
        && prior_authority != survivor_authority
    {
        return Err(refuse(
            ErrorCode::UnknownKeyIdentifier,
            mrg1(),
            "mismatched assigning authorities: MRG-1.4 and PID-3.4 differ, not merged",
        ));
    }
    let key_of = |id: &str, authority: &str| match identity {
        PatientIdentity::Id => id.to_owned(),
        PatientIdentity::AuthorityAndId => format!("{authority}/{id}"),
    };
    let prior = key_of(&prior_id, &prior_authority);
    if prior == key_of(&survivor_id, &survivor_authority) {
        return Err(refuse(
            ErrorCode::UnknownKeyIdentifier,
            mrg1(),
            "MRG-1 names the same patient as PID-3: nothing to merge",
        ));
    }
    Ok(Prior { key: prior })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior(text: &str, identity: PatientIdentity) -> Result<String, String> {
        let message = hl7::parse(text.as_bytes()).unwrap();
        read_prior(&message, identity)
            .map(|p| p.key)
            .map_err(|e| e.text)
    }

    const HEAD: &str = "MSH|^~\\&|ADT|HOSP|||20260101120000||ADT^A40|M1|P|2.5\rEVN|A40\r";

    #[test]
    fn the_prior_patient_is_mrg1s_first_id() {
        let text = format!("{HEAD}PID|||B1^^^HOSP^MR\rMRG|~A1^^^HOSP^MR~A2\r");
        assert_eq!(prior(&text, PatientIdentity::Id), Ok("A1".into()));
        assert_eq!(
            prior(&text, PatientIdentity::AuthorityAndId),
            Ok("HOSP/A1".into())
        );
        // One side without an authority is no mismatch.
        let text = format!("{HEAD}PID|||B1^^^HOSP\rMRG|A1\r");
        assert_eq!(prior(&text, PatientIdentity::Id), Ok("A1".into()));
    }

    #[test]
    fn what_the_message_alone_gets_wrong_is_refused_with_a_reason() {
        let cases = [
            (format!("{HEAD}PID|||B1\r"), "needs an MRG segment"),
            (format!("{HEAD}MRG|A1\r"), "needs a PID segment"),
            (format!("{HEAD}PID|||B1\rMRG|^^^HOSP\r"), "MRG-1 (the prior"),
            (
                format!("{HEAD}PID|||^^^HOSP\rMRG|A1\r"),
                "PID-3 (the surviving",
            ),
            (
                format!("{HEAD}PID|||B1^^^HOSP\rMRG|A1^^^OTHER\r"),
                "mismatched assigning authorities",
            ),
            (format!("{HEAD}PID|||B1\rMRG|B1\r"), "same patient"),
            (
                format!("{HEAD}PID|||B1\rMRG|A1\rPID|||C1\rMRG|A2\r"),
                "more than one PID/MRG pair",
            ),
        ];
        for (text, reason) in cases {
            let got = prior(&text, PatientIdentity::Id).unwrap_err();
            assert!(got.contains(reason), "{got:?} for {text:?}");
            assert!(!got.contains("A1") && !got.contains("B1"), "no ids: {got}");
        }
    }

    #[test]
    fn only_a40_a34_and_a47_are_merges() {
        assert!(is_merge("ADT", "A40") && is_merge("ADT", "A34") && is_merge("ADT", "A47"));
        assert!(!is_merge("ADT", "A01") && !is_merge("ORU", "A40"));
    }
}
