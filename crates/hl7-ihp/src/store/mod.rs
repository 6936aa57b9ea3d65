//! The store: what the receiver keeps and how it asks for it, independent of the database.
//!
//! `ingest` hands a batch of [`NewMessage`]s to [`Store::commit`], which returns only after
//! they are durable (or fails, and then nothing was acknowledged). Every frame read whole is
//! kept, rejected ones included, with its outcome. Accepted messages also become patient and
//! observation rows. The readers serve the inspection commands, the JSON exporter and the
//! HTTP API. Only the store modules know SQL.

#[cfg(test)]
pub mod contract;
pub mod lease;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

pub use hl7::ack::Outcome;

/// (MSH-3, MSH-4, MSH-10) as sent: with the bytes' hash, the duplicate key (docs/acks.md).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageKey {
    /// MSH-3 raw text.
    pub sending_application: String,
    /// MSH-4 raw text.
    pub sending_facility: String,
    /// MSH-10 raw text.
    pub control_id: String,
    /// MSH-7 as an instant ([`instant_ms`]), when it is a time. Not part of the key's
    /// identity, but a function of the bytes: a retransmission carries the same MSH-7, so
    /// the store files the key under it and finds retransmissions near each other.
    pub sent_ms: Option<i64>,
}

/// An HL7 time as milliseconds since the Unix epoch; a time without an offset is read as
/// UTC. `None` when it names no instant (out of range).
pub fn instant_ms(time: &hl7::timestamp::Timestamp) -> Option<i64> {
    time.to_jiff_timestamp()
        .or_else(|| jiff::tz::Offset::UTC.to_timestamp(time.to_civil()).ok())
        .map(|t| t.as_millisecond())
}

/// What `ingest` decided about a frame before storing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Well-formed and allowed: store it and its observations.
    Accept,
    /// The message is wrong (AE/CE): kept for inspection with the reason.
    Error {
        /// Why, without patient data.
        reason: String,
    },
    /// Not taken (AR/CR): kept for inspection with the reason.
    Reject {
        /// Why, without patient data.
        reason: String,
    },
}

/// The stored name of an answer's family: `accepted`, `error` or `rejected`.
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Accept => "accepted",
        Outcome::Error => "error",
        Outcome::Reject => "rejected",
    }
}

/// A received time as the files, the tables and the API write it: UTC, milliseconds, `Z`.
pub fn utc_text(time: jiff::Timestamp) -> String {
    format!("{time:.3}")
}

impl Verdict {
    /// The answer's family this verdict leads to.
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::Accept => Outcome::Accept,
            Verdict::Error { .. } => Outcome::Error,
            Verdict::Reject { .. } => Outcome::Reject,
        }
    }

    /// The reason, for errors and rejects.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Accept => None,
            Verdict::Error { reason } | Verdict::Reject { reason } => Some(reason),
        }
    }
}

/// A patient as one message describes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientData {
    /// The identity: PID-3's first id, or `authority/id` when the authority is part of the
    /// identity (a setting). Names the JSON file.
    pub key: String,
    /// PID-3.1 of the first repetition with an id.
    pub id: String,
    /// Its assigning authority (PID-3.4) as sent.
    pub assigning_authority: String,
    /// Every PID-3 repetition as `id^^^authority^type`, joined with `~`.
    pub identifiers: String,
    /// The given name, a space, the family name (the prototype's `PatientName`).
    pub name: String,
    /// ISO date when PID-7 is a valid HL7 date, else PID-7 as sent.
    pub birth_date: String,
    /// PID-8 code as sent.
    pub sex: String,
    /// True for ADT messages: they update `PatientInfo`; other messages only fill it in
    /// when the patient is new.
    pub is_update: bool,
}

/// One OBX, as text ready to show.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservationData {
    /// Order within the message, from 0.
    pub index: u32,
    /// OBX-2.
    pub value_type: String,
    /// OBX-3.1.
    pub code: String,
    /// OBX-3.2.
    pub code_text: String,
    /// OBX-3.3.
    pub code_system: String,
    /// OBX-4.
    pub sub_id: String,
    /// OBX-5 as text.
    pub value: String,
    /// OBX-5 as a number for NM/SN values that are plain numbers.
    pub numeric: Option<f64>,
    /// OBX-6.1 (the units as sent when OBX-6 has one component).
    pub units: String,
    /// OBX-6.2.
    pub units_text: String,
    /// OBX-7.
    pub reference_range: String,
    /// OBX-8.
    pub abnormal_flags: String,
    /// OBX-11.
    pub status: String,
    /// The observation time as docs/patient-files.md writes `Timestamp`
    /// (`YYYY-MM-DDTHH:MM:SS[.fff][+hh:mm]`): OBX-14, else OBR-7, else MSH-7, else the time
    /// received (then in UTC, with `Z`).
    pub observed_at: String,
    /// The same instant in milliseconds since the Unix epoch, for ordering and time ranges;
    /// a time without an offset is read as UTC.
    pub observed_ms: i64,
    /// OBX-18.1, the equipment (device EUI-64 in IHE PCD-01).
    pub equipment: String,
    /// Why the value is not a measurement (demo mode, not obtained, empty, a placeholder),
    /// decided at ingest (`crate::marks`); a marked row has no `numeric`.
    pub mark: Option<crate::marks::Mark>,
}

/// What an accepted message holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Content {
    /// MSH-9.1.
    pub message_type: String,
    /// MSH-9.2.
    pub trigger: String,
    /// MSH-12.1.
    pub version: String,
    /// The patient, when PID has an id.
    pub patient: Option<PatientData>,
    /// The sending device: MSH-3 as sent. Observations of messages without a patient are
    /// kept against it.
    pub device: String,
    /// PV1-3 as sent.
    pub location: Option<String>,
    /// One per OBX, in order.
    pub observations: Vec<ObservationData>,
    /// For a patient merge (ADT^A40, A34, A47) that passed the checks of the message
    /// alone: the prior patient, whom the store merges into [`Content::patient`] if its
    /// state allows (docs/acks.md, "Patient merges").
    pub merge: Option<MergeRequest>,
    /// The alarms of an `ORU^R40` (none for any other message): kept in the `alarms` table,
    /// never as observations ([`crate::alarm`]).
    pub alarms: Vec<crate::alarm::AlarmData>,
}

/// A merge of the prior patient (MRG-1) into the surviving one (PID-3), as a message asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeRequest {
    /// The prior patient's identity key, computed from MRG-1 as PID-3's is.
    pub prior: String,
    /// The event, `A40`, `A34` or `A47`.
    pub event: String,
    /// The ACK code the message is answered with if the store refuses the merge (`AE`,
    /// `CE`, or `None` when the sender asked for no answer to an error), kept on its row.
    pub refused_ack_code: Option<String>,
}

/// A merge as recorded, for the message list and the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeNote {
    /// The prior patient's key: their history joined the survivor's.
    pub prior: String,
    /// The surviving patient's key.
    pub survivor: String,
    /// The event that asked for it: `A40`, `A34` or `A47`.
    pub event: String,
}

/// Which alarms to read ([`StoreRead::alarms`]), newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmQuery {
    /// Only this patient's (by key).
    pub patient: Option<String>,
    /// Only alarms in this state (`active`, `inactive`, `latched`, …).
    pub state: Option<String>,
    /// Only alarms this device raised (their source: OBX-18.1, else MSH-3).
    pub device: Option<String>,
    /// Only alarms stored before this one (the next page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// An alarm as stored, with its message and patient.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmRow {
    /// The alarm's id, increasing in commit order.
    pub id: i64,
    /// The `ORU^R40` it came in.
    pub message_id: i64,
    /// When that message arrived.
    pub received_at: jiff::Timestamp,
    /// The patient's key, when the message named one.
    pub patient: Option<String>,
    /// The alarm.
    pub alarm: crate::alarm::AlarmData,
}

/// One frame (or one message of a batch frame) to keep.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    /// When the frame was read, UTC.
    pub received_at: jiff::Timestamp,
    /// The peer's address, `ip:port` (the device's, when a trusted PROXY header named it).
    pub peer: String,
    /// The TLS client certificate's subject and SANs, when the peer sent one.
    pub peer_identity: Option<String>,
    /// The message bytes as received (an oversized frame: its first 64 KiB).
    pub raw: Vec<u8>,
    /// The duplicate key, when MSH could be read.
    pub key: Option<MessageKey>,
    /// SHA-256 of `raw`.
    pub hash: [u8; 32],
    /// The decision before storing.
    pub verdict: Verdict,
    /// The ACK code this message is answered with when stored (`AA`, `CE`, …), `None` when
    /// the sender asked for none: kept for the message browser.
    pub ack_code: Option<String>,
    /// The extracted data, for accepted messages.
    pub content: Option<Content>,
    /// The stored message whose bytes this one replays (`hl7-ihp replay`); `None` for what
    /// a device sent.
    pub replay_of: Option<i64>,
}

/// What the store did with one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Kept as a new message with this id.
    New {
        /// The message's id, increasing in commit order.
        id: i64,
    },
    /// Same key and same bytes as an accepted message already stored (dedupe on): not
    /// stored again. It is answered like the first one. Errors and rejects are never
    /// duplicates (a frame refused once is judged again), so today `verdict` is always
    /// `Accept`.
    Duplicate {
        /// The first message's id.
        id: i64,
        /// The first message's outcome.
        verdict: Verdict,
    },
    /// A refused frame (error or reject) whose bytes are those of a recently kept refused
    /// frame: not kept again, but counted on that frame's row (junk and a device stuck
    /// resending one bad message cost one row). It is judged and answered again.
    Repeated {
        /// The kept frame's id.
        id: i64,
    },
    /// Kept as a new message with this id, but refused by the store because of what it
    /// holds: a patient merge ([`Content::merge`]) its state contradicts. Stored as an
    /// error with this reason and nothing else changed; it is answered with an error.
    Refused {
        /// The message's id.
        id: i64,
        /// Why, without patient data.
        reason: String,
    },
}

/// The store could not do its job; the sender gets a reject and retries.
///
/// (See also [`Stored::Repeated`]: a refused frame that arrives again byte for byte.)
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (disk full, I/O error, locked, corrupt).
    #[error("store failure: {0}")]
    Database(String),
    /// The store is shutting down or its writer is gone.
    #[error("store closed")]
    Closed,
    /// A fenced write (a lease's job) carried a fencing number that is no longer the
    /// lease's: another receiver took the lease since; nothing was written.
    #[error("the {name} lease was taken by another receiver (fence {fence} is stale)")]
    LeaseLost {
        /// The lease.
        name: String,
        /// The stale fencing number the write carried.
        fence: i64,
    },
    /// The database was written by a newer version of this program; opening it could
    /// damage it, so it is refused.
    #[error(
        "the database has schema version {found}, newer than this program knows ({supported}); \
         use a newer hl7-ihp"
    )]
    NewerSchema {
        /// The version found in the database.
        found: i64,
        /// The newest version this program knows.
        supported: i64,
    },
}

/// Counters since the store was opened, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed (one per group of waiting batches).
    pub n_transactions: u64,
    /// Transactions that failed and were rolled back; their callers got an error.
    pub n_failed_transactions: u64,
    /// Messages stored as new.
    pub n_stored: u64,
    /// Retransmissions recognised and not stored again.
    pub n_duplicates: u64,
    /// Refused frames counted on an earlier identical one instead of kept again.
    pub n_repeated: u64,
    /// Messages stored as new although an accepted message with the same key (MSH-3, MSH-4,
    /// MSH-10) and other bytes was already stored: a sender reusing control ids. Counted
    /// only when duplicates are checked.
    pub n_reused_control_ids: u64,
    /// Messages removed by purges (retention and `hl7-ihp purge`).
    pub n_purged: u64,
    /// PostgreSQL: transactions written again because another receiver stored one of their
    /// duplicate keys between their lookups and their feed lock (0 on SQLite).
    pub n_key_races: u64,
}

/// A patient for `hl7-ihp patients` and the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientSummary {
    /// The identity key.
    pub key: String,
    /// The display name.
    pub name: String,
    /// Number of observations stored.
    pub n_observations: u64,
    /// When the last message about them arrived; `None` when none is stored.
    pub last_received_at: Option<jiff::Timestamp>,
    /// That message's id.
    pub last_message: Option<i64>,
}

/// An observation row as read back, with its message's context.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservationRow {
    /// The observation.
    pub observation: ObservationData,
    /// The message's id.
    pub message_id: i64,
    /// MSH-10 of the message.
    pub control_id: String,
    /// When the message arrived.
    pub received_at: jiff::Timestamp,
    /// The sending device (MSH-3).
    pub device: String,
}

/// A patient and their records, newest message first and OBX order within a message:
/// what a patient's JSON file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct PatientRecords {
    /// The latest patient data.
    pub patient: PatientData,
    /// The records.
    pub records: Vec<ObservationRow>,
}

/// An unassigned device's records (a message without a patient is kept under its device:
/// `crate::unassigned::device_key`), for `device_<id>.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRecords {
    /// The device's id: OBX-18.1, else MSH-3.
    pub device: String,
    /// PV1-3 of its newest message that had one.
    pub location: Option<String>,
    /// The records, newest first.
    pub records: Vec<ObservationRow>,
}

/// A stored frame for `hl7-ihp messages` and the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSummary {
    /// The message id.
    pub id: i64,
    /// When it arrived.
    pub received_at: jiff::Timestamp,
    /// The peer address.
    pub peer: String,
    /// The TLS client certificate's subject and SANs, when the peer sent one.
    pub peer_identity: Option<String>,
    /// MSH-3 and MSH-4 as sent, `app|facility`.
    pub sender: String,
    /// MSH-10.
    pub control_id: String,
    /// The answer's family: accepted, error or rejected.
    pub outcome: Outcome,
    /// How many times these bytes arrived: more than 1 for a refused frame received again
    /// ([`Stored::Repeated`]).
    pub n_received: u64,
    /// Why, for errors and rejects.
    pub reason: Option<String>,
    /// `MSH-9.1^MSH-9.2` when the content was extracted: accepted messages, and refused
    /// ones whose content was read (it helps whoever inspects a reject).
    pub message_type: Option<String>,
    /// The patient's identity key, when the message named one (accepted messages only:
    /// a refused message is about no one).
    pub patient: Option<String>,
    /// The ACK code that was sent (`AA`, `AE`, `AR`, `CA`, `CE`, `CR`); `None` when the
    /// sender asked for none, or for messages stored before the code was kept.
    pub ack_code: Option<String>,
    /// The patient merge this message made, when it made one.
    pub merge: Option<MergeNote>,
    /// The bytes, when asked for.
    pub raw: Option<Vec<u8>>,
    /// The stored message this one is a replay of (`hl7-ihp replay`).
    pub replay_of: Option<i64>,
    /// The first message stored as a replay of this one, if any.
    pub replayed_as: Option<i64>,
}

/// Which messages to list: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only errors and rejects.
    pub rejected_only: bool,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only this message type, `MSH-9.1^MSH-9.2` (e.g. `ORU^R01`).
    pub message_type: Option<String>,
    /// Only this sending facility (MSH-4 as sent).
    pub facility: Option<String>,
    /// Only messages about this patient (identity key).
    pub patient: Option<String>,
    /// Only messages received at or after this instant (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only messages received before this instant (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Only messages with an id below this one: the page after a message (cursor paging).
    pub before_id: Option<i64>,
    /// Include the bytes.
    pub with_raw: bool,
    /// Newest first, at most this many (`None`: all).
    pub limit: Option<usize>,
}

/// A stored frame with everything the message browser shows ([`StoreRead::message`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MessageDetail {
    /// What the listing shows, with the bytes.
    pub summary: MessageSummary,
    /// MSH-3 as sent; `None` when MSH could not be read.
    pub sending_application: Option<String>,
    /// MSH-4 as sent.
    pub sending_facility: Option<String>,
    /// MSH-12.1 of an accepted message.
    pub version: Option<String>,
    /// PV1-3 as sent.
    pub location: Option<String>,
    /// The sending device (MSH-3) of an accepted message.
    pub device: Option<String>,
    /// When these bytes last arrived, for a refused frame received more than once.
    pub last_received_at: Option<jiff::Timestamp>,
    /// The observations of an accepted message, in OBX order.
    pub observations: Vec<ObservationData>,
}

/// One message of the change feed ([`StoreRead::feed`]): what the live view and the event
/// stream need, read once per message.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedMessage {
    /// The message's id (its position in the feed).
    pub id: i64,
    /// When it arrived.
    pub received_at: jiff::Timestamp,
    /// The answer's family.
    pub outcome: Outcome,
    /// Why, for errors and rejects.
    pub reason: Option<String>,
    /// MSH-3 as sent.
    pub sending_application: Option<String>,
    /// MSH-4 as sent.
    pub sending_facility: Option<String>,
    /// MSH-10 as sent.
    pub control_id: Option<String>,
    /// `MSH-9.1^MSH-9.2` when the content was extracted (as [`MessageSummary`]).
    pub message_type: Option<String>,
    /// PV1-3 as sent.
    pub location: Option<String>,
    /// The sending device (MSH-3) of an accepted message.
    pub device: Option<String>,
    /// The patient as stored now (its latest data), when the message named one.
    pub patient: Option<PatientData>,
    /// The observations of an accepted message, in OBX order.
    pub observations: Vec<ObservationData>,
    /// The prior patient's key when this message merged them into [`FeedMessage::patient`]:
    /// their history is now the survivor's and their files go away.
    pub merged_from: Option<String>,
    /// The alarms of an accepted `ORU^R40`, in order ([`crate::alarm`]).
    pub alarms: Vec<crate::alarm::AlarmData>,
}

impl FeedMessage {
    /// The patient of an accepted message: whose records (or, for an ADT, demographics) it
    /// carries; `None` for a refused frame or a message without a patient.
    pub fn accepted_patient(&self) -> Option<&PatientData> {
        self.patient
            .as_ref()
            .filter(|_| self.outcome == Outcome::Accept)
    }
}

/// Messages of the change feed after a cursor, in commit order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Feed {
    /// The messages.
    pub messages: Vec<FeedMessage>,
    /// Where the next read starts; equal to the cursor given when nothing changed.
    pub next: ChangeCursor,
}

/// A record's place: its message and its OBX's index within it. Records are ordered
/// newest message first and in OBX order within a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordPosition {
    /// The message's id.
    pub message_id: i64,
    /// The OBX's index, from 0.
    pub index: u32,
}

/// Which of a patient's records to read ([`StoreRead::observations`]).
///
/// The time filters are on observation times, which no index orders: a backend may look
/// only at messages that arrived near the range (SQLite: within an hour of it, see
/// docs/storage.md), so a record observed much earlier or later than it arrived is found
/// by a read without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservationQuery {
    /// Only this code (OBX-3.1).
    pub code: Option<String>,
    /// Only records observed at or after this instant (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only records observed before this instant (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Only records after this one in the order of [`RecordPosition`] (the next page).
    pub after: Option<RecordPosition>,
    /// At most this many.
    pub limit: usize,
}

/// A patient's numeric values of one code summarised per time bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct TrendSeries {
    /// OBX-3.1.
    pub code: String,
    /// OBX-3.2 of the newest record in the range.
    pub code_text: String,
    /// OBX-6.1 of the newest record in the range.
    pub units: String,
    /// The buckets that hold at least one value, oldest first.
    pub buckets: Vec<TrendBucket>,
}

/// The numeric values observed in one bucket `[start_ms, start_ms + bucket)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrendBucket {
    /// The bucket's start (ms since the epoch), a multiple of the bucket length.
    pub start_ms: i64,
    /// How many values.
    pub count: u64,
    /// The smallest.
    pub min: f64,
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The largest.
    pub max: f64,
}

/// Which trends to compute ([`StoreRead::trends`]): observation times in
/// `[since_ms, until_ms)`, buckets of `bucket_ms`, with the same bound on how far from
/// their arrival records are looked for as [`ObservationQuery`]'s time filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrendQuery {
    /// Only this code; `None`: every code with numeric values.
    pub code: Option<String>,
    /// The range's start, ms since the epoch.
    pub since_ms: i64,
    /// The range's end, ms since the epoch.
    pub until_ms: i64,
    /// The bucket length in ms, at least 1,000.
    pub bucket_ms: i64,
}

/// A position in the store's change feed: every change before it has been seen.
///
/// Opaque to its users: they get one from the store and hand it back. The feed is in
/// commit order, so a change that commits after a cursor was handed out is never behind
/// it. (SQLite has one writer, so its message ids are in commit order and the cursor is
/// the last id seen; a backend with several writers numbers its commits instead.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeCursor(i64);

impl ChangeCursor {
    /// The start of the feed: nothing seen yet.
    pub const START: ChangeCursor = ChangeCursor(0);

    /// The cursor as a number, for metrics and the backends.
    pub fn position(self) -> i64 {
        self.0
    }

    /// A cursor at a position a backend handed out earlier.
    pub fn at(position: i64) -> ChangeCursor {
        ChangeCursor(position)
    }
}

/// A patient file's progress as an exporter records it ([`Store::set_export_progress`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilePosition {
    /// The newest message whose records the file holds (0: none).
    pub through: i64,
    /// The file's size in bytes when recorded.
    pub length: u64,
}

/// What changed after a cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Identity keys of the patients whose records changed, each once.
    pub patients: Vec<String>,
    /// Where the next read starts; equal to the cursor given when nothing changed.
    pub next: ChangeCursor,
}

/// Whether the store can do its job now, for `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Storing works.
    Ok,
    /// Storing fails; messages get a reject until it works again.
    Failing {
        /// Why, without patient data.
        reason: String,
    },
}

/// Where the store is: the one setting `--store` (docs/storage.md), parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://…`, its password never shown.
    Postgres(postgres::PostgresLocation),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A network location carries a password: `Debug` shows only what is safe.
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreLocation::Postgres(location) => write!(f, "{location:?}"),
        }
    }
}

/// The name of the SQLite database in a data directory.
pub const SQLITE_FILE_NAME: &str = "hl7-ihp.sqlite3";

impl StoreLocation {
    /// The default: the SQLite file in the data directory.
    pub fn in_data_dir(data_dir: &Path) -> StoreLocation {
        StoreLocation::Sqlite(data_dir.join(SQLITE_FILE_NAME))
    }

    /// Parses `--store`: `sqlite:PATH` or a path names a SQLite file,
    /// `postgres://user[:password]@host[:port]/db[?…]` (or `postgresql://`) a PostgreSQL
    /// database. An error never repeats the text (it may hold a password).
    pub fn parse(text: &str) -> Result<StoreLocation, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty store location".into());
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return postgres::PostgresLocation::parse(text).map(StoreLocation::Postgres);
        }
        let path = text.strip_prefix("sqlite:").unwrap_or(text);
        if path.is_empty() || path.contains("://") {
            return Err("expected a SQLite file path or sqlite:PATH".into());
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }
}

/// What a store answers with: a boxed future, so that [`Store`] can be a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What every store can be asked to read: the inspection commands, the JSON exporter and
/// the HTTP API, off the ACK path. A read-only store implements only this.
pub trait StoreRead: Send + Sync + 'static {
    /// Every patient, ordered by key.
    fn patients(&self) -> StoreFuture<'_, Vec<PatientSummary>>;

    /// A patient's records, newest first, at most `limit` (`None`: all).
    fn patient_records<'a>(
        &'a self,
        key: &'a str,
        limit: Option<usize>,
    ) -> StoreFuture<'a, Option<PatientRecords>>;

    /// Stored frames, newest first.
    fn messages(&self, filter: MessageFilter) -> StoreFuture<'_, Vec<MessageSummary>>;

    /// An unassigned device's records, newest first, at most `limit` (`None`: all);
    /// `None` when the store has no message of that device. A backend without device keys
    /// knows none.
    fn device_records<'a>(
        &'a self,
        device: &'a str,
        limit: Option<usize>,
    ) -> StoreFuture<'a, Option<DeviceRecords>> {
        let _ = (device, limit);
        Box::pin(async { Ok(None) })
    }

    /// The unassigned devices' newest messages as feed messages (without a patient): at
    /// most `n_devices` devices, the one heard from last first, each with at most `limit`
    /// messages, newest first. How the live view shows their tiles at start, as
    /// [`StoreRead::patient_feed`] does patients'. A backend without device keys knows none.
    fn device_feeds(
        &self,
        n_devices: usize,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Vec<FeedMessage>>> {
        let _ = (n_devices, limit);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The change feed: patients whose records changed after `after`, looking at no more
    /// than `limit` messages, in commit order. How the exporter learns what to rewrite,
    /// also after a restart.
    fn changes_since(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Changes>;

    /// An exporter's persisted progress (by the exporter's name, e.g. `json`): every change
    /// up to it is in that exporter's output. [`ChangeCursor::START`] when it has none.
    fn export_watermark<'a>(&'a self, exporter: &'a str) -> StoreFuture<'a, ChangeCursor>;

    /// An exporter's recorded file positions by patient key: of `keys`, or of every file
    /// with `None`. A patient without a row is absent.
    fn export_files<'a>(
        &'a self,
        exporter: &'a str,
        keys: Option<Vec<String>>,
    ) -> StoreFuture<'a, HashMap<String, FilePosition>>;

    /// The change feed with content: every message committed after `after` (accepted or
    /// not), at most `limit`, in commit order. What the live view and the event stream follow.
    fn feed(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Feed>;

    /// The newest position of the feed now (what [`StoreRead::feed`] would reach).
    fn feed_head(&self) -> StoreFuture<'_, ChangeCursor>;

    /// A patient's newest messages (at most `limit`, newest first) as feed messages, with
    /// the patient's data; `None` for an unknown patient. How the live view learns a
    /// patient's latest values at start.
    fn patient_feed<'a>(
        &'a self,
        key: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<(PatientData, Vec<FeedMessage>)>>;

    /// A patient's records in [`RecordPosition`] order, filtered; `None` for an unknown
    /// patient. A page's cost is that of the records it reads, whatever the history.
    fn observations<'a>(
        &'a self,
        key: &'a str,
        query: ObservationQuery,
    ) -> StoreFuture<'a, Option<Vec<ObservationRow>>>;

    /// A patient's numeric values per code and time bucket (by observation time); `None`
    /// for an unknown patient.
    fn trends<'a>(
        &'a self,
        key: &'a str,
        query: TrendQuery,
    ) -> StoreFuture<'a, Option<Vec<TrendSeries>>>;

    /// One stored frame with its bytes; `None` for an unknown id.
    fn message(&self, id: i64) -> StoreFuture<'_, Option<MessageDetail>>;

    /// Alarms, newest first ([`AlarmQuery`]).
    fn alarms(&self, query: AlarmQuery) -> StoreFuture<'_, Vec<AlarmRow>>;
}

/// The store the receiver writes to: SQLite or PostgreSQL (docs/storage.md). Held as
/// `Arc<dyn Store>`.
///
/// `commit` is the ACK path: it returns once the batch is durable.
pub trait Store: StoreRead {
    /// Stores a batch durably, in order; one [`Stored`] per message. A duplicate is
    /// recognised against everything stored before, including earlier messages of the same
    /// batch.
    fn commit(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<Stored>>;

    /// Records an exporter's progress.
    fn set_export_watermark<'a>(
        &'a self,
        exporter: &'a str,
        cursor: ChangeCursor,
    ) -> StoreFuture<'a, ()> {
        self.set_export_progress(exporter, cursor, Vec::new())
    }

    /// Records an exporter's watermark and the positions of the files it wrote, in one
    /// transaction: a reader never sees one without the other.
    fn set_export_progress<'a>(
        &'a self,
        exporter: &'a str,
        cursor: ChangeCursor,
        files: Vec<(String, FilePosition)>,
    ) -> StoreFuture<'a, ()>;

    /// Records an exporter's progress as [`Store::set_export_progress`] does, only while
    /// `fence` is still the fencing number of the lease `lease`; otherwise nothing is
    /// written and the answer is [`StoreError::LeaseLost`]. Checked in the same transaction
    /// as the write. A store only one receiver can open has nothing to check.
    fn set_export_progress_fenced<'a>(
        &'a self,
        exporter: &'a str,
        cursor: ChangeCursor,
        files: Vec<(String, FilePosition)>,
        lease: &'a str,
        fence: i64,
    ) -> StoreFuture<'a, ()> {
        let _ = (lease, fence);
        self.set_export_progress(exporter, cursor, files)
    }

    /// The lease `name` ([`lease`]): whether this receiver holds it and with which fencing
    /// number. Held for good with fence 1 on a store only one receiver can open.
    fn lease(&self, name: &str) -> lease::Lease {
        lease::Lease::always_held(name)
    }

    /// Removes (or with `dry_run` only counts) old messages, one bounded step: see
    /// [`PurgeRequest`]. A step that reports `more` is followed by another from its cursor.
    /// Never removes a message above an exporter's watermark, nor one whose duplicate key or
    /// patient index entry is still only in memory; a message's duplicate key and patient
    /// index entry go with it, its patient's row stays.
    fn purge(&self, request: PurgeRequest) -> StoreFuture<'_, PurgeReport>;

    /// The counters, cheap to read (for `/metrics`).
    fn stats(&self) -> StoreStats;

    /// Whether storing works now, cheap to read (for `/healthz`).
    fn health(&self) -> Health;

    /// From now on, tells `events` of the commits other writers of the same store make
    /// (other receivers, a replay, a migration), so that what follows the change feed wakes
    /// for them as for this receiver's own. Nothing where no one else writes: a SQLite store
    /// has one receiver per data directory, and its followers also poll.
    fn watch_other_writers(&self, _events: crate::events::Events) {}
}

/// What one [`Store::purge`] step is asked to remove (docs/storage.md, "Retention").
///
/// Messages go oldest first, by the time received: the step stops at the first message (in
/// commit order) received at or after the cutoff, so a message received inside the window is
/// never removed (one committed out of time order waits until the next step passes it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeRequest {
    /// Accepted messages received before this instant (ms since the Unix epoch) go; `None`
    /// keeps them.
    pub accepted_before_ms: Option<i64>,
    /// Refused frames (errors and rejects) received before this go; `None` keeps them.
    pub refused_before_ms: Option<i64>,
    /// The exporters whose patient files must hold a message before it goes (`json`,
    /// `ndjson`): only messages at or below each one's watermark are removed. Empty when
    /// patient files are off.
    pub exporters: Vec<String>,
    /// At most this many messages removed in this step (one transaction).
    pub max_messages: usize,
    /// Where the previous step stopped ([`PurgeCursor::START`] for the first).
    pub cursor: PurgeCursor,
    /// Count only: nothing is removed.
    pub dry_run: bool,
}

/// Where a purge stopped: the messages up to it were looked at (removed, or kept for being
/// of the other kind). Opaque to its users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeCursor {
    accepted_after: i64,
    refused_after: i64,
}

impl PurgeCursor {
    /// Nothing looked at yet.
    pub const START: PurgeCursor = PurgeCursor {
        accepted_after: 0,
        refused_after: 0,
    };

    /// A cursor at positions a backend handed out (the last accepted and refused message
    /// looked at).
    pub fn at(accepted_after: i64, refused_after: i64) -> PurgeCursor {
        PurgeCursor {
            accepted_after,
            refused_after,
        }
    }

    /// The last accepted and refused positions looked at.
    pub fn positions(self) -> (i64, i64) {
        (self.accepted_after, self.refused_after)
    }
}

/// Why old accepted messages are kept for now ([`PurgeReport::held_by`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// The exporter's patient files do not hold them yet: its watermark is `through`.
    NotExported {
        /// The exporter (`json`, `ndjson`).
        exporter: String,
        /// Its watermark.
        through: i64,
    },
    /// Their duplicate keys or patient index entries are still in the writer's memory.
    IndexPending {
        /// Every message up to here is in both indexes.
        through: i64,
    },
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldReason::NotExported { exporter, through } => write!(
                f,
                "not yet in the {exporter} patient files (their watermark is message {through})"
            ),
            HoldReason::IndexPending { through } => write!(
                f,
                "their duplicate keys or patient index entries are not yet written (indexes complete through message {through})"
            ),
        }
    }
}

/// What a [`Store::purge`] step did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Accepted messages removed (with their observations, keys and index entries).
    pub n_accepted: u64,
    /// Refused frames removed.
    pub n_refused: u64,
    /// Accepted messages older than the cutoff kept because of `held_by` (counted up to a
    /// bound per step; a dry run counts them all).
    pub n_held_back: u64,
    /// Why the step stopped before the cutoff, if it did.
    pub held_by: Option<HoldReason>,
    /// Where the next step starts.
    pub cursor: PurgeCursor,
    /// Whether this step stopped at its batch limit with more to remove.
    pub more: bool,
}

/// How the receiver's store behaves, beyond where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Recognise retransmissions (`--dedupe`).
    pub dedupe: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { dedupe: true }
    }
}

/// Opens the receiver's store: the one place a backend is chosen. Blocking (it may create
/// and migrate a database): call it off the async workers.
pub fn open(
    location: &StoreLocation,
    options: &StoreOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(
            path,
            sqlite::SqliteOptions {
                dedupe: options.dedupe,
                ..sqlite::SqliteOptions::default()
            },
        )?)),
        StoreLocation::Postgres(location) => {
            Ok(Arc::new(postgres::PgStore::open(location, options)?))
        }
    }
}

/// How [`backup`] treats an existing destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupOptions {
    /// Replace an existing destination (atomically) instead of refusing it.
    pub force: bool,
}

/// How far a [`backup`] is, reported after each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupProgress {
    /// Bytes (whole database pages) copied so far.
    pub n_bytes_done: u64,
    /// The size of the snapshot being copied.
    pub n_bytes_total: u64,
}

/// What the finished copy holds, read back from it after its integrity check passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// Stored frames (`messages` rows) in the copy.
    pub n_messages: u64,
    /// Its schema version (`PRAGMA user_version`).
    pub schema_version: i64,
    /// Its size in bytes.
    pub n_bytes: u64,
}

/// Why a [`backup`] failed; the destination is then untouched.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store's database file does not exist.
    #[error("no database at {}", .0.display())]
    NoDatabase(PathBuf),
    /// The destination exists and replacing it was not asked for.
    #[error("{} exists; use --force to replace it", .0.display())]
    Exists(PathBuf),
    /// The destination is the store's own database file.
    #[error("the destination is the store's own database")]
    SameFile,
    /// Reading the store or writing the copy failed in SQLite.
    #[error("database failure: {0}")]
    Database(String),
    /// A file operation around the copy failed.
    #[error("{what}: {reason}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The operating system's reason.
        reason: String,
    },
    /// The copy, read back, failed `PRAGMA integrity_check`.
    #[error("the copy failed its integrity check: {0}")]
    Integrity(String),
}

/// Copies the store at `location` to the file `dest` while a receiver may be writing to it:
/// one consistent snapshot (every message acknowledged before the call is in it), a single
/// self-contained SQLite file with permissions 0600, replaced atomically when `force` allows
/// an existing `dest`, then opened read-only and checked. `progress` is called after each
/// step. Blocking. Only SQLite stores can be copied this way (PostgreSQL has its own tools).
pub fn backup(
    location: &StoreLocation,
    dest: &Path,
    options: BackupOptions,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<BackupSummary, BackupError> {
    match location {
        StoreLocation::Sqlite(path) => sqlite::backup::backup(path, dest, options, progress),
        // PostgreSQL's own tools back it up (pg_dump, pg_basebackup): docs/storage.md.
        StoreLocation::Postgres(_) => Err(BackupError::Database(
            "a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump, pg_basebackup)"
                .into(),
        )),
    }
}

/// Opens a store only to read it, as the inspection commands do, also while a receiver
/// writes to it. Blocking.
pub fn open_read_only(location: &StoreLocation) -> Result<Arc<dyn StoreRead>, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Arc::new(sqlite::SqliteReader::open(path)?)),
        StoreLocation::Postgres(location) => Ok(Arc::new(postgres::PgReader::open(location)?)),
    }
}
