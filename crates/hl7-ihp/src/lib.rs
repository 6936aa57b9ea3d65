//! hl7-ihp receives HL7 v2 data from medical devices over MLLP, stores every message durably
//! before its ACK, and hands it to the IHP platform as per-patient files and an HTTP API.
//!
//! The module map (ARCHITECTURE.md has the invariants); dependencies point one way:
//! `commands` → `server` → `mllp`, `http`, `export` → `ingest` → `store`, `documents` → `hl7`.
//!
//! - [`cli`]: every clap definition.
//! - [`config`]: the settings of each command, merged once and validated into typed groups.
//! - [`shutdown`]: the one shutdown signal (Ctrl+C, SIGTERM) of every command and task.
//! - [`commands`]: one function per subcommand; the only users of `anyhow` and the terminal.
//! - [`datadir`]: prepares, checks and locks a receiver's data directory before it binds.
//! - [`server`]: wires the store, the exporter, HTTP and the MLLP listener, stops them in order.
//! - [`mllp`]: the accept loop with its limits, and one connection's read–ingest–ACK loop.
//! - [`ingest`]: frame → parse → extract → store → the one function that decides the ACK.
//! - [`events`]: "committed" notifications the exporter and the live stream follow.
//! - [`store`]: the object-safe `Store` trait, its types, `open`, and the SQLite backend.
//! - [`documents`]: pure shapes: the patient document, the vitals table with MDC names, and
//!   an observation classified for the API (which vital, missing or invalid, its alert).
//! - [`export`]: the exporter task, safe file names and atomic writes.
//! - [`live`]: the live view (patients, devices, per-minute counts, events) from the feed.
//! - [`http`]: the HTTP router: `/healthz`, `/metrics`, the JSON API, its OpenAPI document,
//!   the bearer token, the dashboard's built-in files.
//! - [`sender`]: the device simulator and load generator: link, load, simulator.
//! - [`terminal`]: device text made safe to print: controls escaped, long values cut.
//! - [`rate_limit`]: at most one log line of a kind per peer per interval, the rest counted.
//! - [`net`]: a connection's peer (address, load balancer, TLS identity), the allowlist and
//!   the PROXY protocol header.
//! - [`tls`]: rustls with `ring`: reloadable listener configurations, the client's, a
//!   certificate's identity.
//! - [`audit`]: the audit trail, JSON lines through a bounded queue.
//! - [`reload`]: SIGHUP and the TLS files' watcher.
//! - [`metrics`], [`logging`], [`ids`]: counters, log set-up, base-36 ids.

pub mod alarm;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod datadir;
pub mod documents;
pub mod events;
pub mod export;
pub mod http;
pub mod ids;
pub mod ingest;
pub mod links;
pub mod live;
pub mod logging;
pub mod marks;
pub mod merges;
pub mod metrics;
pub mod mllp;
pub mod net;
pub mod query;
pub mod rate_limit;
pub mod reload;
pub mod retention;
pub mod sender;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod terminal;
pub mod tls;
pub mod unassigned;
pub mod waveform;
