//! MLLP over TCP: the accept loop with its limits ([`listener`]), one connection's
//! read → ingest → ACK loop ([`connection`]) and the memory budget the connections share for
//! unfinished frames ([`budget`]). The framing itself is `hl7::mllp`.

pub mod budget;
pub mod connection;
pub mod listener;
