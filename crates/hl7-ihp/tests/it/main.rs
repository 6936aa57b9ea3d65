//! The integration tests of hl7-ihp: one test binary with a module per area (as ripgrep's
//! `tests/tests.rs`), each driving the real binary over 127.0.0.1 or reading the repository.

// Starting receivers on 127.0.0.1:0, speaking MLLP, waiting on conditions.
mod common;
// Where the shared HL7 corpus is (also used by the `hl7` crate's tests).
#[path = "../../../hl7/tests/support/corpus_dir.rs"]
mod support;
// Golden files, with the `hl7` crate's tests.
#[path = "../../../hl7/tests/support/golden.rs"]
mod golden;

// Certificates made for the TLS tests with rcgen.
mod pki;
// MLLP over TLS, mutual TLS, reloads, the allowlist, PROXY headers, HTTPS, the audit trail.
mod tls;
// A JSON Schema validator for the OpenAPI document's subset, and its look-ups.
mod schema;

// `hl7-ihp backup`: an online copy under load, `--force`, a copy read as a store.
mod backup;
// The HTTP API: every response against the OpenAPI document, paging, the bearer token.
mod api;
// The live view's API: patients, devices, stats and the event stream.
mod api_live;
// The dashboard in headless Chromium: live values, staleness, trends, the other views.
mod browser;
// Every corpus file through the real receiver.
mod corpus_receive;
// A receiver killed with SIGKILL under load loses no acknowledged message.
mod crash;
// The data directory: one receiver at a time, its checks before binding, a database file
// that stands alone after a clean stop, file system edge cases.
mod data_dir;
// `hl7-ihp demo`.
mod demo;
// Limits under attack: deadlines, the partial-frame budget, the HTTP side, log floods.
mod hardening;
// Alarms: ORU^R40 in the API, the event stream and the patient view, never records.
mod alarms;
// Unframed HL7: bare messages beside MLLP ones, `send --framing none`, `--framing mllp`.
mod framing;
// deploy/haproxy.cfg run by the real HAProxy in front of a receiver.
mod haproxy;
// deploy/postgres/run.sh: two receivers behind HAProxy on one PostgreSQL, run as a user would.
mod deploy_postgres;
// `hl7-ihp parse`.
mod parse_cli;
// The patient JSON files and the inspection commands.
mod patients;
// Patient merges (ADT^A40, A34, A47): both histories in one, the errors with their reasons.
mod merge;
// Running it as a service: `config --print`/`--example`, completions, man pages, and
// deploy/hl7-ihp.service (its hardening keys; `systemd-analyze verify` where installed).
mod running;
// Retention: `--retention` under load, `hl7-ihp purge` and its dry run.
mod retention;
// `hl7-ihp receive`: framing, ACK rules, duplicates, limits, logs, shutdown.
mod receive;
// `hl7-ihp replay`: locally with a fixed setting, idempotent, dry runs, `--to`.
mod replay;
// The receiver in-process through the library: server::bind and server::run.
mod server;
// `hl7-ihp send`: the simulator, load mode, retransmission, interop with python-hl7.
mod send;
// `hl7-ihp send --tls` against mutual TLS, and python-hl7's client over Python's `ssl`.
mod send_tls;
// Device text never reaches a terminal raw: escaped, and cut when long.
mod terminal;
// The PostgreSQL store through the real binary: receive, inspect, SIGKILL.
mod postgres;
// Operations on PostgreSQL through the real binary: merges, replay, retention and purge,
// the inspection commands with a password file.
mod pg_operations;
// Leases on PostgreSQL: one exporter and one reader per link among receivers, failover.
mod leases;
// PostgreSQL stopped, started and restarted under load: rejects, never AA, then storing
// again; two receivers, a SIGKILL and a restart: each acknowledged message stored once.
mod pg_outage;
// A real PostgreSQL for those tests, shared with the unit tests.
#[path = "../../src/store/postgres/testdb.rs"]
mod pg_server;
// House rules checked over the source tree.
mod tidy;
// `--timezone`: times without an offset in the patient files and the API.
mod timezone;
// Waveforms (ORU^W01, NA rows): kept raw and counted, never records.
mod waveform;
// Demographic queries (QRY^A19, QBP^Q22) answered from the store, on --query-listen too.
mod query;
// Messages without a patient (empty or absent PID-3): stored, shown under their device.
mod unassigned;
// Client mode: `receive --connect` to `send --serve` devices, restarts, bare, TLS.
mod client;
// Values that are not measurements (demo, placeholders, OBX-11 X, empty): stored marked.
mod values;
// `hl7-ihp migrate`: SQLite into PostgreSQL, read back the same, resumed after SIGKILL.
mod migrate;
