//! Pure shapes that several parts of hl7-ihp render or read: the patient document of the
//! JSON files and `show` ([`patient`]), and the vitals table with its MDC names ([`vitals`]).
//! No I/O here.

pub mod patient;
pub mod vitals;
