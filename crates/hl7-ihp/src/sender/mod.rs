//! The device simulator and load generator behind `hl7-ihp send` and `demo`: what to send
//! ([`simulator`]), one connection that sends and checks ACKs ([`link`]), and many of them
//! with a tally ([`load`]), and one demographic query ([`query`]).

pub mod alarms;
pub mod link;
pub mod load;
pub mod query;
pub mod serve;
pub mod simulator;
pub mod values;
