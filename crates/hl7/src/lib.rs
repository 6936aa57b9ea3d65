//! Pure HL7 v2 protocol code: nothing here opens a socket, spawns a task, touches a file or prints.
//!
//! Modules:
//! - [`mllp`]: the MLLP framing codec (`0x0B` payload `0x1C 0x0D`) for tokio-util.
//! - [`bare`]: bare HL7 without MLLP framing (messages cut at `MSH` or a quiet gap).
//! - [`parse`](mod@parse): the zero-copy parser, for one message or a batch.
//! - [`message`]: views of a parsed message: segments, fields, repetitions, components.
//! - [`path`]: HL7 paths such as `OBX[2]-3.1`.
//! - [`escape`]: escape sequences, decoding and encoding.
//! - [`charset`]: text decoding by MSH-18.
//! - [`timestamp`]: HL7 DTM, DT and TM values.
//! - [`extract`]: header, patient, location and observations of a message.
//! - [`ack`]: which ACK a message asks for, and its bytes.
//! - [`error`]: typed parse errors with positions.
#![deny(missing_docs)]

pub mod ack;
pub mod bare;
pub mod charset;
pub mod error;
pub mod escape;
pub mod extract;
pub mod message;
pub mod mllp;
pub mod parse;
pub mod path;
pub mod timestamp;

pub use charset::Charset;
pub use error::{ParseError, ParseErrorKind, Position, SegmentId};
pub use message::{Component, Delimiters, Field, Message, Repetition, Segment, Subcomponent, Tree};
pub use parse::{Batch, parse, parse_batch};
pub use path::Path;
