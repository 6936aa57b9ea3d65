//! Waveforms: `ORU^W01` messages and OBX rows whose value is an array (`NA`, `MA`).
//!
//! A waveform is hundreds of samples per row and many rows per second. It is stored raw
//! with its message (the row in `messages` keeps every byte) and counted, but none of its
//! rows becomes an observation: no record in the patient files, `show`, the API, the
//! trends or the live view's latest vitals comes from it, so the patient's numeric records
//! are unaffected (docs/patient-files.md, "Waveforms").
//!
//! Which rows are waveform rows:
//! - every OBX row of an `ORU^W01` (in a W01 the rows describe the waveform: channel
//!   definitions `CD`, sample times, the arrays, the sampling rates);
//! - in any other message, a row whose OBX-2 is `NA` (numeric array) or `MA` (multiplexed
//!   array), as IHE PCD's waveform content sends them beside numerics in an `ORU^R01`.
//!   The other rows of such a message are extracted as usual.

use hl7::extract::{Extract, Observation};

/// Whether MSH-9 names a waveform message (`ORU^W01`).
pub fn is_waveform_message(message_type: &str, trigger: &str) -> bool {
    message_type.eq_ignore_ascii_case("ORU") && trigger.eq_ignore_ascii_case("W01")
}

/// Whether OBX-2 is an array type (`NA`, `MA`).
pub fn is_array_value_type(value_type: &str) -> bool {
    value_type.eq_ignore_ascii_case("NA") || value_type.eq_ignore_ascii_case("MA")
}

/// What a message holds of waveforms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waveforms {
    /// Whether the message is an `ORU^W01`.
    pub waveform_message: bool,
    /// Its OBX rows that are waveform rows (kept raw, not extracted).
    pub rows: u64,
}

impl Waveforms {
    /// The waveform content of an extracted message.
    pub fn of(extract: &Extract<'_>) -> Waveforms {
        let waveform_message =
            is_waveform_message(&extract.header.message_type, &extract.header.trigger);
        let rows = extract
            .observations
            .iter()
            .filter(|obx| is_waveform_row(waveform_message, obx))
            .count();
        Waveforms {
            waveform_message,
            rows: u64::try_from(rows).unwrap_or(u64::MAX),
        }
    }

    /// Whether the message has anything of a waveform (a W01, or an array row).
    pub fn any(&self) -> bool {
        self.waveform_message || self.rows > 0
    }
}

/// Whether `obx` of a message (a W01 when `waveform_message`) is a waveform row, which
/// is kept raw only and never becomes an observation.
pub fn is_waveform_row(waveform_message: bool, obx: &Observation<'_>) -> bool {
    waveform_message || is_array_value_type(&obx.value_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waveforms(text: &str) -> Waveforms {
        let message = hl7::parse(text.as_bytes()).unwrap();
        Waveforms::of(&hl7::extract::extract(&message))
    }

    #[test]
    fn array_rows_are_waveform_rows_in_any_message() {
        let counted = waveforms(
            "MSH|^~\\&|DEV|FAC|||20260101120000||ORU^R01|1|P|2.6\r\
             PID|||P1\r\
             OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC||72|/min|||||R\r\
             OBX|2|NA|131330^MDC_ECG_ELEC_POTL_II^MDC||1^2^3|uV|||||R\r\
             OBX|3|ma|131330^MDC_ECG_ELEC_POTL_II^MDC||1^2~3^4|uV|||||R\r",
        );
        assert_eq!(
            counted,
            Waveforms {
                waveform_message: false,
                rows: 2
            }
        );
        assert!(counted.any());
    }

    #[test]
    fn every_row_of_a_w01_is_a_waveform_row() {
        let counted = waveforms(
            "MSH|^~\\&|DEV|FAC|||20260101120000||ORU^W01|1|P|2.4\r\
             PID|||P1\r\
             OBX|1|CD|131330^MDC_ECG_ELEC_POTL_II^MDC||1^II\r\
             OBX|2|NM|SRATE^Sampling rate^L||250|Hz\r\
             OBX|3|NA|131330^MDC_ECG_ELEC_POTL_II^MDC||1^2^3|uV\r",
        );
        assert_eq!(
            counted,
            Waveforms {
                waveform_message: true,
                rows: 3
            }
        );
    }

    #[test]
    fn numerics_alone_are_no_waveform() {
        let counted = waveforms(
            "MSH|^~\\&|DEV|FAC|||20260101120000||ORU^R01|1|P|2.6\r\
             PID|||P1\rOBX|1|NM|8867-4^HR^LN||72|/min\r",
        );
        assert_eq!(counted, Waveforms::default());
        assert!(!counted.any());
    }
}
