//! Pure HL7 v2 protocol code: nothing here opens a socket, spawns a task, touches a file or prints.
//!
//! Modules:
//! - [`mllp`]: the MLLP framing codec (`0x0B` payload `0x1C 0x0D`) for tokio-util.
//! - [`parse`] and [`message`]: the zero-copy parser and the message, segment and field views.
//! - [`path`]: HL7 paths such as `OBX[2]-3.1`.
//! - [`escape`]: escape sequences, decoding and encoding.
//! - [`charset`]: text decoding by MSH-18.
//! - [`timestamp`]: HL7 DTM, DT and TM values.
//! - [`extract`]: header, patient, location and observations of a message.
//! - [`ack`]: which ACK a message asks for, and its bytes.
//! - [`error`]: typed parse errors with positions.
#![deny(missing_docs)]

pub mod charset;
pub mod error;
pub mod mllp;
pub mod timestamp;
