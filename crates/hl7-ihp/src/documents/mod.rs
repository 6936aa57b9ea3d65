//! Pure shapes that several parts of hl7-ihp render or read: the patient document of the
//! JSON files and `show` ([`patient`]), the vitals table with its MDC names ([`vitals`]), and
//! an observation as the API shows it, classified ([`reading`]). No I/O here.

pub mod patient;
pub mod reading;
pub mod vitals;
