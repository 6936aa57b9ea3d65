//! The `hl7-ihp` binary: command-line entry point.
fn main() {}
