//! MLLP over TCP: the accept loop with its limits ([`listener`]) and one connection's
//! read → ingest → ACK loop ([`connection`]). The framing itself is `hl7::mllp`.

pub mod connection;
pub mod listener;
