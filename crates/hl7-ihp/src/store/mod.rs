//! The store: what the receiver keeps and how it asks for it, independent of the database.
//!
//! `ingest` hands a batch of [`NewMessage`]s to [`Store::commit`], which returns only after
//! they are durable (or fails, and then nothing was acknowledged). Every frame read whole is
//! kept, rejected ones included, with its outcome. Accepted messages also become patient and
//! observation rows. The readers serve the inspection commands, the JSON exporter and the
//! HTTP API. Only the store modules know SQL.

pub mod sqlite;
mod tail;

use std::future::Future;

/// (MSH-3, MSH-4, MSH-10) as sent: with the bytes' hash, the duplicate key (DESIGN.md §5).
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

impl Verdict {
    /// `accepted`, `error` or `rejected`: the stored outcome.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Accept => "accepted",
            Verdict::Error { .. } => "error",
            Verdict::Reject { .. } => "rejected",
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
    /// The observation time as DESIGN.md §7 writes `Timestamp`
    /// (`YYYY-MM-DDTHH:MM:SS[.fff][+hh:mm]`): OBX-14, else OBR-7, else MSH-7, else the time
    /// received (then in UTC, with `Z`).
    pub observed_at: String,
    /// The same instant in milliseconds since the Unix epoch, for ordering and time ranges;
    /// a time without an offset is read as UTC.
    pub observed_ms: i64,
    /// OBX-18.1, the equipment (device EUI-64 in IHE PCD-01).
    pub equipment: String,
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
}

/// One frame (or one message of a batch frame) to keep.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    /// When the frame was read, UTC.
    pub received_at: jiff::Timestamp,
    /// The peer's address, `ip:port`.
    pub peer: String,
    /// The message bytes as received (an oversized frame: its first 64 KiB).
    pub raw: Vec<u8>,
    /// The duplicate key, when MSH could be read.
    pub key: Option<MessageKey>,
    /// SHA-256 of `raw`.
    pub hash: [u8; 32],
    /// The decision before storing.
    pub verdict: Verdict,
    /// The extracted data, for accepted messages.
    pub content: Option<Content>,
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
    /// matched (a frame refused once is judged again), so today `verdict` is always
    /// `Accept`.
    Duplicate {
        /// The first message's id.
        id: i64,
        /// The first message's outcome.
        verdict: Verdict,
    },
}

/// The store could not do its job; the sender gets a reject and retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (disk full, I/O error, locked, corrupt).
    #[error("store failure: {0}")]
    Database(String),
    /// The store is shutting down or its writer is gone.
    #[error("store closed")]
    Closed,
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
    /// Messages stored as new although an accepted message with the same key (MSH-3, MSH-4,
    /// MSH-10) and other bytes was already stored: a sender reusing control ids. Counted
    /// only when duplicates are checked.
    pub n_reused_control_ids: u64,
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
    /// When the last message about them arrived (UTC, RFC 3339).
    pub last_received_at: String,
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
    /// When the message arrived (UTC, RFC 3339 with `Z`).
    pub received_at: String,
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

/// A stored frame for `hl7-ihp messages` and the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSummary {
    /// The message id.
    pub id: i64,
    /// When it arrived (UTC, RFC 3339).
    pub received_at: String,
    /// The peer address.
    pub peer: String,
    /// MSH-3 and MSH-4 as sent, `app|facility`.
    pub sender: String,
    /// MSH-10.
    pub control_id: String,
    /// `accepted`, `error` or `rejected`.
    pub outcome: String,
    /// Why, for errors and rejects.
    pub reason: Option<String>,
    /// The bytes, when asked for.
    pub raw: Option<Vec<u8>>,
}

/// Which messages to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Only errors and rejects.
    pub rejected_only: bool,
    /// Include the bytes.
    pub with_raw: bool,
    /// Newest first, at most this many (`None`: all).
    pub limit: Option<usize>,
}

/// The store interface; SQLite now, PostgreSQL later (DESIGN.md §6).
///
/// `commit` is the ACK path: it returns once the batch is durable. The readers are for
/// inspection, export and the API, off the ACK path.
pub trait Store: Clone + Send + Sync + 'static {
    /// Stores a batch durably, in order; one [`Stored`] per message. A duplicate is
    /// recognised against everything stored before, including earlier messages of the same
    /// batch.
    fn commit(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = Result<Vec<Stored>, StoreError>> + Send;

    /// Every patient, ordered by key.
    fn patients(&self) -> impl Future<Output = Result<Vec<PatientSummary>, StoreError>> + Send;

    /// A patient's records, newest first, at most `limit` (`None`: all).
    fn patient_records(
        &self,
        key: &str,
        limit: Option<usize>,
    ) -> impl Future<Output = Result<Option<PatientRecords>, StoreError>> + Send;

    /// Stored frames, newest first.
    fn messages(
        &self,
        filter: MessageFilter,
    ) -> impl Future<Output = Result<Vec<MessageSummary>, StoreError>> + Send;

    /// Patients touched by messages with an id above `after`, and the highest id seen
    /// (at most `limit` messages are looked at): how the exporter learns what to rewrite,
    /// also after a restart.
    fn patients_changed_since(
        &self,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<String>, i64), StoreError>> + Send;

    /// The exporter's persisted progress: every change up to this message id is in the files.
    fn export_watermark(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Records the exporter's progress.
    fn set_export_watermark(&self, id: i64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The counters, cheap to read (for `/metrics`).
    fn stats(&self) -> StoreStats;
}
