//! The patient JSON files (DESIGN.md §7): their names, their shape, and the task that keeps them current.
//!
//! [`file_name`] maps any identity key to one safe name inside the patients folder;
//! [`render_document`] writes a patient and their records in the prototype's shape (the
//! exporter and `hl7-ihp show` both call it, so the file and the command agree); [`run`] is
//! the exporter task that rewrites the files of the patients the store says have changed.
//!
//! # Upkeep policy
//!
//! - Off the ACK path: the receiver only calls [`ExportHandle::changed`] after a commit, which
//!   never waits. The exporter runs on its own task, reads the store, and renders and writes
//!   each file in `spawn_blocking`, one file at a time (so at most one document is in memory
//!   and at most one core is busy with it).
//! - Coalesced: a round asks the store which patients changed after the last message it has
//!   seen ([`Store::patients_changed_since`], [`CHANGES_PER_READ`] messages per read) and
//!   rewrites each of them once, however many messages arrived for them. Wake-ups during a
//!   round collapse into one more round.
//! - Paced: a round starts at least [`ExportOptions::min_interval`] after the previous one
//!   ended, and at least [`ExportOptions::rest_factor`] times as long as that round took, so
//!   under heavy load the exporter keeps to a bounded share of one core (a quarter by
//!   default) and the files lag instead of the ACKs. The rest ends early once a whole
//!   `min_interval` passes without a commit: the load has stopped and the files catch up.
//!   A round looks at no more than [`MAX_READS_PER_ROUND`] reads or [`MAX_DIRTY_PATIENTS`]
//!   patients; what is left is the next round's work, which starts without waiting for a
//!   wake-up.
//! - Bounded files: a file holds the newest [`ExportOptions::max_records`] records (default
//!   10,000; 0 = no limit). The full history stays in the store (`hl7-ihp show <id> --all`).
//! - Atomic and private: a file is written to a temporary name in the same folder (`.tmp-…`,
//!   which no patient file can have since those start with `patient_`), synced, and renamed
//!   over the old one, with mode 0600; the folder is 0700.
//! - Catches up, also after a restart: the store keeps a watermark, the highest message id
//!   whose changes are all in the files. It is advanced only after every patient changed up
//!   to it has been written and the folder synced, so a crash, a full disk or a failing file
//!   makes the next round (or the next start) write those patients again. A failed file is
//!   retried after [`RETRY_DELAY`]; the others go on being updated meanwhile.
//! - At shutdown a final round, without the per-round limits, makes the files current.
//!
//! No log line names a patient or a file (file names contain patient ids): failures are
//! logged as counts with the operating system's error.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::{ObservationRow, PatientRecords, Store, StoreError};

/// Every patient file's name starts with this.
pub const FILE_PREFIX: &str = "patient_";
/// Every patient file's name ends with this.
pub const FILE_SUFFIX: &str = ".json";
/// An id longer than this once encoded is shortened and hashed, which keeps every name far
/// below the 255-byte limit of common file systems.
const MAX_ID_BYTES: usize = 100;
/// How much of a long encoded id is kept before the hash.
const HASHED_PREFIX_BYTES: usize = 64;
/// How many hex digits of the SHA-256 of a long id are written (64 bits).
const HASH_HEX_DIGITS: usize = 16;
/// Temporary files start with this; no patient file does.
const TEMP_PREFIX: &str = ".tmp-";

/// Default for [`ExportOptions::max_records`] (DESIGN.md §7).
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
/// Default for [`ExportOptions::rest_factor`]: busy at most a quarter of the time.
pub const DEFAULT_REST_FACTOR: u32 = 3;

/// Default for [`ExportOptions::min_interval`].
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Messages looked at per [`Store::patients_changed_since`] call.
pub const CHANGES_PER_READ: usize = 10_000;
/// Reads of changes per round, so a round ends even while messages keep arriving.
pub const MAX_READS_PER_ROUND: usize = 32;
/// Patients collected for rewriting before a round stops reading and writes them.
pub const MAX_DIRTY_PATIENTS: usize = 10_000;
/// How long after a failed round (store error, file not written) the exporter tries again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The file name for a patient's identity key (DESIGN.md §7): `patient_<id>.json`.
///
/// The id is the key as it is when it consists only of `A-Z a-z 0-9 . _ -` and does not start
/// with `.`. Otherwise every byte outside that set, and a leading `.`, is written as
/// upper-case `%XX` (`%` itself is outside the set, so the encoding can be read back and two
/// keys never meet). An encoded id over 100 bytes becomes its first 64 bytes, `~`, and 16
/// lower-case hex digits of the SHA-256 of the raw key; `~` appears in no other name, and two
/// long keys share a name only if they share the first 64 encoded bytes and 64 bits of
/// SHA-256. The empty key is written as nothing: `patient_.json`, which no other key gives.
///
/// So a name has only `A-Z a-z 0-9 . _ - % ~`, never `/` or NUL, is never `.` or `..`, stays
/// inside the patients folder, and is at most 113 bytes long.
pub fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(FILE_PREFIX.len() + key.len() + FILE_SUFFIX.len());
    name.push_str(FILE_PREFIX);
    name.push_str(&encode_id(key.as_bytes()));
    name.push_str(FILE_SUFFIX);
    name
}

fn is_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

fn encode_id(raw: &[u8]) -> String {
    let mut id = String::with_capacity(raw.len());
    for (i, &byte) in raw.iter().enumerate() {
        if is_safe(byte) && !(i == 0 && byte == b'.') {
            id.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(id, "%{byte:02X}");
        }
    }
    if id.len() > MAX_ID_BYTES {
        let digest = Sha256::digest(raw);
        // Every character written above is ASCII, so any byte offset is a char boundary.
        id.truncate(HASHED_PREFIX_BYTES);
        id.push('~');
        for byte in &digest[..HASH_HEX_DIGITS / 2] {
            let _ = write!(id, "{byte:02x}");
        }
    }
    id
}

/// A patient file's content: the prototype's shape, with more keys (DESIGN.md §7).
///
/// Keys are written in the order of the fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Document<'a> {
    /// Who the patient is.
    #[serde(rename = "PatientInfo")]
    pub patient_info: PatientInfo<'a>,
    /// One record per OBX, newest message first, OBX order within a message.
    #[serde(rename = "Records")]
    pub records: Vec<Record<'a>>,
}

/// The `PatientInfo` object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatientInfo<'a> {
    /// PID-3.1 of the first repetition with an id.
    #[serde(rename = "PatientID")]
    pub patient_id: &'a str,
    /// The given name, a space, the family name.
    #[serde(rename = "PatientName")]
    pub patient_name: &'a str,
    /// An ISO date when PID-7 is a valid HL7 date, else PID-7 as sent.
    #[serde(rename = "DateOfBirth")]
    pub date_of_birth: &'a str,
    /// The HL7 table 0001 name of PID-8 (`Female`), or the code as sent when it is not in the
    /// table.
    #[serde(rename = "Sex")]
    pub sex: &'a str,
    /// PID-3.4 of that repetition, as sent.
    #[serde(rename = "AssigningAuthority")]
    pub assigning_authority: &'a str,
    /// Every PID-3 repetition as `id^^^authority^type`, joined with `~`.
    #[serde(rename = "Identifiers")]
    pub identifiers: &'a str,
    /// The identity key the file is named after, only when it is not `PatientID` (when the
    /// assigning authority is part of the identity).
    #[serde(rename = "PatientKey", skip_serializing_if = "Option::is_none")]
    pub patient_key: Option<&'a str>,
}

/// One element of `Records`: one OBX.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record<'a> {
    /// The observation time, `YYYY-MM-DDTHH:MM:SS[.fff]`, with the offset only when the
    /// message gave one: OBX-14, else OBR-7, else MSH-7, else the time received (UTC, `Z`).
    #[serde(rename = "Timestamp")]
    pub timestamp: &'a str,
    /// OBX-3.1, the observation's code.
    #[serde(rename = "ObservationID")]
    pub observation_id: &'a str,
    /// OBX-5 as text (SN `^182` is `182`, `<^10` is `<10`).
    #[serde(rename = "ObservationValue")]
    pub observation_value: &'a str,
    /// OBX-6.1.
    #[serde(rename = "Units")]
    pub units: &'a str,
    /// OBX-7 as sent.
    #[serde(rename = "ReferenceRange")]
    pub reference_range: &'a str,
    /// OBX-8.
    #[serde(rename = "AbnormalFlags")]
    pub abnormal_flags: &'a str,
    /// OBX-3.2.
    #[serde(rename = "ObservationText")]
    pub observation_text: &'a str,
    /// OBX-3.3.
    #[serde(rename = "CodingSystem")]
    pub coding_system: &'a str,
    /// OBX-2.
    #[serde(rename = "ValueType")]
    pub value_type: &'a str,
    /// OBX-4.
    #[serde(rename = "SubID")]
    pub sub_id: &'a str,
    /// The value as a number, when it is a plain number.
    #[serde(rename = "NumericValue", skip_serializing_if = "Option::is_none")]
    pub numeric_value: Option<f64>,
    /// OBX-6.2, when present.
    #[serde(rename = "UnitsText", skip_serializing_if = "str::is_empty")]
    pub units_text: &'a str,
    /// OBX-11.
    #[serde(rename = "ResultStatus")]
    pub result_status: &'a str,
    /// The sending device: MSH-3 as sent.
    #[serde(rename = "Device")]
    pub device: &'a str,
    /// OBX-18.1, the equipment that made the observation, when present.
    #[serde(rename = "EquipmentID", skip_serializing_if = "str::is_empty")]
    pub equipment_id: &'a str,
    /// When the message arrived, UTC with `Z`.
    #[serde(rename = "ReceivedAt")]
    pub received_at: &'a str,
    /// MSH-10 of the message.
    #[serde(rename = "MessageControlID")]
    pub message_control_id: &'a str,
}

/// The document for a patient and their records, in the order the store gave them.
pub fn document(records: &PatientRecords) -> Document<'_> {
    let patient = &records.patient;
    Document {
        patient_info: PatientInfo {
            patient_id: &patient.id,
            patient_name: &patient.name,
            date_of_birth: &patient.birth_date,
            sex: hl7::extract::sex_name(&patient.sex).unwrap_or(&patient.sex),
            assigning_authority: &patient.assigning_authority,
            identifiers: &patient.identifiers,
            patient_key: (patient.key != patient.id).then_some(patient.key.as_str()),
        },
        records: records.records.iter().map(record).collect(),
    }
}

fn record(row: &ObservationRow) -> Record<'_> {
    let observation = &row.observation;
    Record {
        timestamp: &observation.observed_at,
        observation_id: &observation.code,
        observation_value: &observation.value,
        units: &observation.units,
        reference_range: &observation.reference_range,
        abnormal_flags: &observation.abnormal_flags,
        observation_text: &observation.code_text,
        coding_system: &observation.code_system,
        value_type: &observation.value_type,
        sub_id: &observation.sub_id,
        numeric_value: observation.numeric,
        units_text: &observation.units_text,
        result_status: &observation.status,
        device: &row.device,
        equipment_id: &observation.equipment,
        received_at: &row.received_at,
        message_control_id: &row.control_id,
    }
}

/// The patient document as the file holds it: indented JSON ending with a newline.
pub fn render_document(records: &PatientRecords) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&document(records))
        // Only strings, numbers and lists of them: serialising to memory cannot fail.
        .expect("a patient document always serialises");
    bytes.push(b'\n');
    bytes
}

/// The store's record limit for a `max_records` setting: 0 means no limit.
pub fn record_limit(max_records: usize) -> Option<usize> {
    (max_records != 0).then_some(max_records)
}

/// How the exporter works; see the module documentation for the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// The newest records a file holds (`--json-max-records`); 0 = no limit.
    pub max_records: usize,
    /// The least time between the end of a round and the start of the next.
    pub min_interval: Duration,
    /// After a round that took `t`, the next one waits at least `rest_factor × t`: the
    /// exporter is busy at most `1 / (1 + rest_factor)` of the time.
    pub rest_factor: u32,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            max_records: DEFAULT_MAX_RECORDS,
            min_interval: DEFAULT_MIN_INTERVAL,
            rest_factor: DEFAULT_REST_FACTOR,
        }
    }
}

/// What the exporter has done so far, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Rounds finished, failed ones included.
    pub n_rounds: u64,
    /// Patient files written.
    pub n_files_written: u64,
    /// Patient files that could not be written (each retried later).
    pub n_write_failures: u64,
    /// The watermark last persisted: every change up to this message id is in the files.
    pub watermark: i64,
}

#[derive(Debug, Default)]
struct Shared {
    notify: Notify,
    /// Calls of [`ExportHandle::changed`]: whether messages still arrive.
    n_changes: AtomicU64,
    n_rounds: AtomicU64,
    n_files_written: AtomicU64,
    n_write_failures: AtomicU64,
    watermark: AtomicI64,
}

/// The receiver's side of the exporter: cheap to clone, never waits.
#[derive(Clone, Debug, Default)]
pub struct ExportHandle {
    shared: Arc<Shared>,
}

impl ExportHandle {
    /// A handle for one exporter; pass a clone to [`run`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the exporter that messages were committed. Calls while a round runs or waits
    /// collapse into one more round.
    pub fn changed(&self) {
        self.shared.n_changes.fetch_add(1, Ordering::Relaxed);
        // `notify_one` keeps a permit when the exporter is busy, so no wake-up is lost.
        self.shared.notify.notify_one();
    }

    /// What the exporter has done so far.
    pub fn stats(&self) -> ExportStats {
        let shared = &self.shared;
        ExportStats {
            n_rounds: shared.n_rounds.load(Ordering::Relaxed),
            n_files_written: shared.n_files_written.load(Ordering::Relaxed),
            n_write_failures: shared.n_write_failures.load(Ordering::Relaxed),
            watermark: shared.watermark.load(Ordering::Relaxed),
        }
    }
}

/// Why the exporter stopped without making the files current.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The patients folder could not be created or made private.
    #[error("cannot prepare the patients folder: {0}")]
    Folder(io::Error),
    /// The store failed during the final round.
    #[error("patient files not brought up to date: {0}")]
    Store(#[from] StoreError),
    /// Some files could not be written in the final round; they are written at the next start.
    #[error("{n_failed} patient files not written: {error}")]
    Files {
        /// How many.
        n_failed: usize,
        /// The first failure, from the operating system (it names no file).
        error: io::Error,
    },
}

/// Creates the patients folder if needed, with mode 0700 (also when it already existed).
pub fn prepare_dir(patients_dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(patients_dir)?;
    fs::set_permissions(patients_dir, fs::Permissions::from_mode(0o700))
}

/// Keeps the patient files in `patients_dir` current until `shutdown` completes, then makes
/// them current one last time and returns.
///
/// The first round runs at once, so files left behind by a crash or a stop catch up. Later
/// rounds run when `handle` says something changed (or, after a failure or an unfinished
/// round, without being told), never sooner than `options.min_interval` after the previous
/// one. Errors during normal running are logged and retried; only the final round's are
/// returned.
pub async fn run<S: Store>(
    store: S,
    patients_dir: PathBuf,
    options: ExportOptions,
    handle: ExportHandle,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ExportError> {
    let dir = patients_dir.clone();
    let n_stale = tokio::task::spawn_blocking(move || -> io::Result<usize> {
        prepare_dir(&dir)?;
        Ok(remove_stale_temp_files(&dir))
    })
    .await
    .map_err(|_| ExportError::Folder(io::Error::other("folder task failed")))?
    .map_err(ExportError::Folder)?;
    if n_stale > 0 {
        tracing::info!(
            n_stale,
            "removed unfinished patient files from an earlier run"
        );
    }

    let mut exporter = Exporter {
        store,
        dir: patients_dir,
        options,
        shared: handle.shared,
        persisted: None,
        seen: 0,
        dirty: BTreeSet::new(),
    };
    tokio::pin!(shutdown);
    let mut next = Next::Now;
    let mut last_round: Option<(Instant, Instant)> = None;
    loop {
        match next {
            Next::Now => {}
            Next::WhenChanged => tokio::select! {
                () = exporter.shared.notify.notified() => {}
                () = &mut shutdown => break,
            },
            Next::Retry => tokio::select! {
                () = tokio::time::sleep(RETRY_DELAY) => {}
                () = &mut shutdown => break,
            },
        }
        if let Some((start, end)) = last_round {
            let min_interval = exporter.options.min_interval;
            let rest = min_interval.max((end - start) * exporter.options.rest_factor);
            // The rest leaves the cores to the ACK path while messages arrive; once a whole
            // `min_interval` passes without a commit, the receiver is idle and the files
            // catch up at once instead of after the rest.
            let until = end + rest;
            let mut at = end + min_interval;
            let mut n_changes = exporter.shared.n_changes.load(Ordering::Relaxed);
            let mut stopped = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(at.min(until)) => {}
                    () = &mut shutdown => {
                        stopped = true;
                        break;
                    }
                }
                let now = exporter.shared.n_changes.load(Ordering::Relaxed);
                if at >= until || now == n_changes {
                    break;
                }
                n_changes = now;
                at += min_interval;
            }
            if stopped {
                break;
            }
        }
        let start = Instant::now();
        next = match exporter.round(Limits::Round).await {
            Ok(Progress::CaughtUp) => Next::WhenChanged,
            Ok(Progress::MorePending) => Next::Now,
            Ok(Progress::Failed { n_failed, error }) => {
                tracing::warn!(n_failed, %error, "patient files not written; will retry");
                Next::Retry
            }
            Err(error) => {
                tracing::warn!(%error, "patient files not brought up to date; will retry");
                Next::Retry
            }
        };
        last_round = Some((start, Instant::now()));
    }

    // The final round: the receiver has stopped taking messages, so it ends.
    loop {
        match exporter.round(Limits::Final).await? {
            Progress::CaughtUp => return Ok(()),
            Progress::MorePending => {}
            Progress::Failed { n_failed, error } => {
                return Err(ExportError::Files { n_failed, error });
            }
        }
    }
}

enum Next {
    Now,
    WhenChanged,
    Retry,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Limits {
    /// [`MAX_READS_PER_ROUND`] and [`MAX_DIRTY_PATIENTS`] apply.
    Round,
    /// Read until caught up.
    Final,
}

enum Progress {
    /// Every change the store reported is in the files.
    CaughtUp,
    /// The round stopped at its limits; there is more to do.
    MorePending,
    /// Some files could not be written; they stay pending.
    Failed { n_failed: usize, error: io::Error },
}

enum WriteError {
    Store(StoreError),
    Io(io::Error),
}

struct Exporter<S> {
    store: S,
    dir: PathBuf,
    options: ExportOptions,
    shared: Arc<Shared>,
    /// The watermark in the store, once read.
    persisted: Option<i64>,
    /// Every change up to this message id is in the files or its patient is in `dirty`.
    seen: i64,
    /// Patients to rewrite.
    dirty: BTreeSet<String>,
}

impl<S: Store> Exporter<S> {
    async fn round(&mut self, limits: Limits) -> Result<Progress, StoreError> {
        let result = self.round_inner(limits).await;
        self.shared.n_rounds.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn round_inner(&mut self, limits: Limits) -> Result<Progress, StoreError> {
        let persisted = match self.persisted {
            Some(persisted) => persisted,
            None => {
                let persisted = self.store.export_watermark().await?;
                self.persisted = Some(persisted);
                self.seen = persisted;
                self.shared.watermark.store(persisted, Ordering::Relaxed);
                persisted
            }
        };

        let mut caught_up = false;
        let mut n_reads = 0;
        while limits == Limits::Final
            || (n_reads < MAX_READS_PER_ROUND && self.dirty.len() < MAX_DIRTY_PATIENTS)
        {
            let (keys, upto) = self
                .store
                .patients_changed_since(self.seen, CHANGES_PER_READ)
                .await?;
            n_reads += 1;
            self.dirty.extend(keys);
            if upto <= self.seen {
                caught_up = true;
                break;
            }
            self.seen = upto;
        }

        let mut n_failed = 0;
        let mut first_error = None;
        let keys: Vec<String> = self.dirty.iter().cloned().collect();
        for key in keys {
            match self.write_patient(&key).await {
                Ok(()) => {
                    self.dirty.remove(&key);
                }
                Err(WriteError::Io(error)) => {
                    n_failed += 1;
                    self.shared.n_write_failures.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(error);
                }
                Err(WriteError::Store(error)) => return Err(error),
            }
        }
        if let Some(error) = first_error {
            return Ok(Progress::Failed { n_failed, error });
        }

        if self.seen > persisted {
            // The renames must be durable before the watermark says they happened.
            let dir = self.dir.clone();
            let synced = tokio::task::spawn_blocking(move || sync_dir(&dir))
                .await
                .unwrap_or_else(|_| Err(io::Error::other("folder sync task failed")));
            if let Err(error) = synced {
                return Ok(Progress::Failed { n_failed: 0, error });
            }
            self.store.set_export_watermark(self.seen).await?;
            self.persisted = Some(self.seen);
            self.shared.watermark.store(self.seen, Ordering::Relaxed);
        }
        Ok(if caught_up {
            Progress::CaughtUp
        } else {
            Progress::MorePending
        })
    }

    async fn write_patient(&mut self, key: &str) -> Result<(), WriteError> {
        let limit = record_limit(self.options.max_records);
        let Some(records) = self
            .store
            .patient_records(key, limit)
            .await
            .map_err(WriteError::Store)?
        else {
            // Nothing to write for a patient the store does not know.
            return Ok(());
        };
        let dir = self.dir.clone();
        let name = file_name(key);
        // Rendering up to `max_records` records and writing them is blocking work.
        tokio::task::spawn_blocking(move || {
            write_atomically(&dir, &name, &render_document(&records))
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::other("file writer task failed")))
        .map_err(WriteError::Io)?;
        self.shared.n_files_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Replaces `dir/name` with `bytes` so that a reader sees the old file or the new one, never
/// a part: a temporary file in the same folder, synced, renamed over it. The folder itself is
/// synced later, once per round.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    static N_TEMP_FILES: AtomicU64 = AtomicU64::new(0);
    let n = N_TEMP_FILES.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The mode above is filtered by the umask; owner-only is the rule either way.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes temporary files a crash left behind; returns how many.
fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n_removed = 0;
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes());
        if is_temp && fs::remove_file(entry.path()).is_ok() {
            n_removed += 1;
        }
    }
    n_removed
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;

    use proptest::prelude::*;

    use super::*;
    use crate::store::{
        MessageFilter, MessageSummary, NewMessage, ObservationData, PatientData, PatientSummary,
        Stored,
    };

    // ---- file names ----

    fn is_name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '%' | '~')
    }

    /// Reads an id back from a name that was not shortened: proof that the encoding loses
    /// nothing.
    fn decode_id(name: &str) -> Vec<u8> {
        let id = name
            .strip_prefix(FILE_PREFIX)
            .and_then(|s| s.strip_suffix(FILE_SUFFIX))
            .expect("prefix and suffix");
        let bytes = id.as_bytes();
        let mut raw = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                raw.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                raw.push(bytes[i]);
                i += 1;
            }
        }
        raw
    }

    fn check_name(key: &str) -> String {
        let name = file_name(key);
        assert!(name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX));
        assert!(
            name.chars().all(is_name_char),
            "unsafe character in {name:?}"
        );
        assert!(name.len() <= FILE_PREFIX.len() + MAX_ID_BYTES + FILE_SUFFIX.len());
        assert!(name.len() < 255);
        assert_ne!(name, ".");
        assert_ne!(name, "..");
        let path = Path::new("/data/patients").join(&name);
        assert_eq!(path.parent(), Some(Path::new("/data/patients")));
        if !name.contains('~') {
            assert_eq!(
                decode_id(&name),
                key.as_bytes(),
                "{name:?} does not read back"
            );
        }
        name
    }

    #[test]
    fn safe_ids_are_kept_as_they_are() {
        assert_eq!(file_name("555-44-4444"), "patient_555-44-4444.json");
        assert_eq!(file_name("A.b_c-9"), "patient_A.b_c-9.json");
        assert_eq!(file_name("a.."), "patient_a...json");
    }

    #[test]
    fn other_ids_are_encoded() {
        let cases = [
            ("../../x", "patient_%2E.%2F..%2Fx.json"),
            ("/abs/path", "patient_%2Fabs%2Fpath.json"),
            ("a/b", "patient_a%2Fb.json"),
            ("a\0b", "patient_a%00b.json"),
            (".hidden", "patient_%2Ehidden.json"),
            (".", "patient_%2E.json"),
            ("..", "patient_%2E..json"),
            ("%41", "patient_%2541.json"),
            ("A", "patient_A.json"),
            ("é", "patient_%C3%A9.json"),
            ("a b~c", "patient_a%20b%7Ec.json"),
            ("", "patient_.json"),
        ];
        let mut names = HashSet::new();
        for (key, expected) in cases {
            assert_eq!(check_name(key), expected, "for {key:?}");
            assert!(names.insert(expected), "{expected} twice");
        }
    }

    #[test]
    fn long_ids_are_shortened_with_a_hash() {
        let long = "x".repeat(300);
        let name = check_name(&long);
        assert_eq!(
            name.len(),
            FILE_PREFIX.len() + 64 + 1 + 16 + FILE_SUFFIX.len()
        );
        assert!(name.starts_with(&format!("patient_{}~", "x".repeat(64))));
        let hex = &name[FILE_PREFIX.len() + 65..name.len() - FILE_SUFFIX.len()];
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );

        // The boundary: 100 encoded bytes are kept, 101 are not.
        assert_eq!(
            check_name(&"y".repeat(100)),
            format!("patient_{}.json", "y".repeat(100))
        );
        assert!(check_name(&"y".repeat(101)).contains('~'));
        let encoded_100 = format!("{}/", "z".repeat(97)); // 97 + "%2F"
        assert!(!check_name(&encoded_100).contains('~'));
        let encoded_102 = format!("{}/", "z".repeat(99));
        assert!(check_name(&encoded_102).contains('~'));
    }

    #[test]
    fn ids_that_differ_late_or_across_the_boundary_get_distinct_names() {
        let mut names: HashMap<String, String> = HashMap::new();
        let mut add = |key: String| {
            let name = check_name(&key);
            if let Some(other) = names.insert(name.clone(), key.clone()) {
                assert_eq!(other, key, "{other:?} and {key:?} share {name}");
            }
        };
        let base = "p".repeat(120);
        for i in 0..base.len() {
            for c in ['q', '/', '%', '\0', '~'] {
                let mut key = base.clone();
                key.replace_range(i..=i, &c.to_string());
                add(key);
            }
        }
        for len in 0..=140 {
            for c in ['a', '.', '/'] {
                add(c.to_string().repeat(len));
                add(format!("{}{c}", "b".repeat(len)));
            }
        }
        // Keys whose encoded forms are 99, 100, 101 or 102 bytes, equal in the first 64.
        for tail in ["", "c", "cc", "ccc", "/", "c/", "/c", "cc/"] {
            add(format!("{}{tail}", "d".repeat(97)));
            add(format!("{}{tail}", "d".repeat(98)));
        }
    }

    #[test]
    fn every_short_string_over_a_tricky_alphabet_gets_its_own_name() {
        let alphabet = [
            'A', 'a', '0', '.', '_', '-', '%', '2', 'E', 'F', '/', '\0', '~', ' ', 'é',
        ];
        let mut names = HashSet::new();
        let mut n_keys = 0;
        let mut keys = vec![String::new()];
        for _ in 0..3 {
            let mut longer = Vec::new();
            for key in &keys {
                for c in alphabet {
                    longer.push(format!("{key}{c}"));
                }
            }
            for key in keys.drain(..) {
                assert!(names.insert(check_name(&key)));
                n_keys += 1;
            }
            keys = longer;
        }
        for key in &keys {
            assert!(names.insert(check_name(key)));
            n_keys += 1;
        }
        assert_eq!(names.len(), n_keys);
    }

    proptest! {
        #[test]
        fn any_key_gets_a_safe_name(key in any::<String>()) {
            check_name(&key);
        }

        #[test]
        fn distinct_keys_get_distinct_names(
            prefix in "[a-z/%.~\\x00]{0,80}",
            a in any::<String>(),
            b in any::<String>(),
        ) {
            let a = format!("{prefix}{a}");
            let b = format!("{prefix}{b}");
            prop_assume!(a != b);
            prop_assert_ne!(check_name(&a), check_name(&b));
        }
    }

    // ---- the document ----

    fn prototype_patient() -> PatientData {
        PatientData {
            key: "555-44-4444".into(),
            id: "555-44-4444".into(),
            assigning_authority: String::new(),
            identifiers: "555-44-4444".into(),
            name: "EVE EVERYWOMAN".into(),
            birth_date: "196203520".into(),
            sex: "F".into(),
            is_update: false,
        }
    }

    fn glucose(index: u32, value: &str) -> ObservationData {
        ObservationData {
            index,
            value_type: "SN".into(),
            code: "1554-5".into(),
            code_text: "GLUCOSE".into(),
            code_system: "POST 12H CFST:MCNC:PT:SER/PLAS:QN".into(),
            sub_id: String::new(),
            value: value.into(),
            numeric: value.parse().ok(),
            units: "mg/dl".into(),
            units_text: String::new(),
            reference_range: "70_105".into(),
            abnormal_flags: "H".into(),
            status: "F".into(),
            observed_at: "2002-02-15T07:30:00".into(),
            observed_ms: 1_013_758_200_000,
            equipment: String::new(),
        }
    }

    fn row(message_id: i64, observation: ObservationData) -> ObservationRow {
        ObservationRow {
            observation,
            message_id,
            control_id: "CNTRL-3456".into(),
            received_at: format!("2025-08-04T12:01:0{message_id}Z"),
            device: "GHH LAB".into(),
        }
    }

    #[test]
    fn the_prototype_document() {
        let records = PatientRecords {
            patient: prototype_patient(),
            records: vec![row(3, glucose(0, "184")), row(1, glucose(0, "182"))],
        };
        let json = String::from_utf8(render_document(&records)).unwrap();
        let expected = r#"{
  "PatientInfo": {
    "PatientID": "555-44-4444",
    "PatientName": "EVE EVERYWOMAN",
    "DateOfBirth": "196203520",
    "Sex": "Female",
    "AssigningAuthority": "",
    "Identifiers": "555-44-4444"
  },
  "Records": [
    {
      "Timestamp": "2002-02-15T07:30:00",
      "ObservationID": "1554-5",
      "ObservationValue": "184",
      "Units": "mg/dl",
      "ReferenceRange": "70_105",
      "AbnormalFlags": "H",
      "ObservationText": "GLUCOSE",
      "CodingSystem": "POST 12H CFST:MCNC:PT:SER/PLAS:QN",
      "ValueType": "SN",
      "SubID": "",
      "NumericValue": 184.0,
      "ResultStatus": "F",
      "Device": "GHH LAB",
      "ReceivedAt": "2025-08-04T12:01:03Z",
      "MessageControlID": "CNTRL-3456"
    },
    {
      "Timestamp": "2002-02-15T07:30:00",
      "ObservationID": "1554-5",
      "ObservationValue": "182",
      "Units": "mg/dl",
      "ReferenceRange": "70_105",
      "AbnormalFlags": "H",
      "ObservationText": "GLUCOSE",
      "CodingSystem": "POST 12H CFST:MCNC:PT:SER/PLAS:QN",
      "ValueType": "SN",
      "SubID": "",
      "NumericValue": 182.0,
      "ResultStatus": "F",
      "Device": "GHH LAB",
      "ReceivedAt": "2025-08-04T12:01:01Z",
      "MessageControlID": "CNTRL-3456"
    }
  ]
}
"#;
        assert_eq!(json, expected);
    }

    #[test]
    fn sex_codes_optional_keys_and_the_identity_key() {
        let mut patient = prototype_patient();
        patient.key = "AUTH/555-44-4444".into();
        let mut observation = glucose(0, "<10");
        observation.units_text = "milligram per decilitre".into();
        observation.equipment = "0123456789ABCDEF".into();
        let mut records = PatientRecords {
            patient,
            records: vec![row(1, observation)],
        };
        for (code, name) in [
            ("F", "Female"),
            ("M", "Male"),
            ("O", "Other"),
            ("U", "Unknown"),
            ("A", "Ambiguous"),
            ("N", "Not applicable"),
            ("X", "X"),
            ("", ""),
        ] {
            records.patient.sex = code.into();
            let value: serde_json::Value =
                serde_json::from_slice(&render_document(&records)).unwrap();
            assert_eq!(value["PatientInfo"]["Sex"], name);
        }
        let value: serde_json::Value = serde_json::from_slice(&render_document(&records)).unwrap();
        assert_eq!(value["PatientInfo"]["PatientKey"], "AUTH/555-44-4444");
        let record = &value["Records"][0];
        assert_eq!(record["ObservationValue"], "<10");
        assert!(record.get("NumericValue").is_none());
        assert_eq!(record["UnitsText"], "milligram per decilitre");
        assert_eq!(record["EquipmentID"], "0123456789ABCDEF");
    }

    // ---- the exporter, against an in-memory store ----

    struct MemMessage {
        id: i64,
        patient: PatientData,
        observations: Vec<ObservationData>,
    }

    #[derive(Default)]
    struct MemInner {
        messages: Vec<MemMessage>,
        watermark: i64,
        n_watermark_writes: u64,
    }

    /// Just enough of a store for the exporter: messages with a patient and observations,
    /// and the watermark.
    #[derive(Clone, Default)]
    struct MemStore {
        inner: Arc<Mutex<MemInner>>,
    }

    impl MemStore {
        fn add(&self, patient: PatientData, observations: Vec<ObservationData>) -> i64 {
            let mut inner = self.inner.lock().unwrap();
            let id = inner.messages.len() as i64 + 1;
            inner.messages.push(MemMessage {
                id,
                patient,
                observations,
            });
            id
        }

        fn watermark(&self) -> i64 {
            self.inner.lock().unwrap().watermark
        }
    }

    impl Store for MemStore {
        fn stats(&self) -> crate::store::StoreStats {
            crate::store::StoreStats::default()
        }

        async fn commit(&self, _: Vec<NewMessage>) -> Result<Vec<Stored>, StoreError> {
            Err(StoreError::Database("not in the test double".into()))
        }

        async fn patients(&self) -> Result<Vec<PatientSummary>, StoreError> {
            Ok(Vec::new())
        }

        async fn patient_records(
            &self,
            key: &str,
            limit: Option<usize>,
        ) -> Result<Option<PatientRecords>, StoreError> {
            let inner = self.inner.lock().unwrap();
            let mut patient: Option<PatientData> = None;
            for message in inner.messages.iter().filter(|m| m.patient.key == key) {
                if patient.is_none() || message.patient.is_update {
                    patient = Some(message.patient.clone());
                }
            }
            let Some(patient) = patient else {
                return Ok(None);
            };
            let records = inner
                .messages
                .iter()
                .rev()
                .filter(|m| m.patient.key == key)
                .flat_map(|m| {
                    m.observations.iter().map(|o| ObservationRow {
                        observation: o.clone(),
                        message_id: m.id,
                        control_id: format!("MSG-{}", m.id),
                        received_at: "2025-08-04T12:01:00Z".into(),
                        device: "GHH LAB".into(),
                    })
                })
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            Ok(Some(PatientRecords { patient, records }))
        }

        async fn messages(&self, _: MessageFilter) -> Result<Vec<MessageSummary>, StoreError> {
            Ok(Vec::new())
        }

        async fn patients_changed_since(
            &self,
            after: i64,
            limit: usize,
        ) -> Result<(Vec<String>, i64), StoreError> {
            let inner = self.inner.lock().unwrap();
            let mut upto = after;
            let mut keys = Vec::new();
            for message in inner.messages.iter().filter(|m| m.id > after).take(limit) {
                keys.push(message.patient.key.clone());
                upto = message.id;
            }
            Ok((keys, upto))
        }

        async fn export_watermark(&self) -> Result<i64, StoreError> {
            Ok(self.inner.lock().unwrap().watermark)
        }

        async fn set_export_watermark(&self, id: i64) -> Result<(), StoreError> {
            let mut inner = self.inner.lock().unwrap();
            inner.watermark = id;
            inner.n_watermark_writes += 1;
            Ok(())
        }
    }

    fn patient(key: &str) -> PatientData {
        PatientData {
            key: key.into(),
            id: key.into(),
            ..prototype_patient()
        }
    }

    /// Polls `condition` every few milliseconds; fails after 30 s.
    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    struct Running {
        handle: ExportHandle,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), ExportError>>,
    }

    impl Running {
        async fn stop(self) -> Result<(), ExportError> {
            let _ = self.stop.send(());
            self.task.await.unwrap()
        }
    }

    fn start(store: &MemStore, dir: &Path, options: ExportOptions) -> Running {
        let handle = ExportHandle::new();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(
            store.clone(),
            dir.to_path_buf(),
            options,
            handle.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Running { handle, stop, task }
    }

    fn fast() -> ExportOptions {
        ExportOptions {
            min_interval: Duration::from_millis(1),
            ..ExportOptions::default()
        }
    }

    fn read_json(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn values(document: &serde_json::Value) -> Vec<String> {
        document["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ObservationValue"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_change_and_a_wake_up_write_a_private_file() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("patients");
        let store = MemStore::default();
        let running = start(&store, &dir, fast());
        wait_for("the first round", || running.handle.stats().n_rounds >= 1).await;

        let last = store.add(prototype_patient(), vec![glucose(0, "182")]);
        running.handle.changed();
        wait_for("the watermark", || store.watermark() == last).await;

        let path = dir.join("patient_555-44-4444.json");
        let document = read_json(&path);
        assert_eq!(document["PatientInfo"]["PatientName"], "EVE EVERYWOMAN");
        assert_eq!(values(&document), ["182"]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);

        // A later message goes to the front, ADT updates PatientInfo.
        let mut update = prototype_patient();
        update.name = "EVE NEWNAME".into();
        update.is_update = true;
        store.add(update, vec![]);
        let last = store.add(
            prototype_patient(),
            vec![glucose(0, "180"), glucose(1, "7")],
        );
        running.handle.changed();
        wait_for("the watermark", || store.watermark() == last).await;
        let document = read_json(&path);
        assert_eq!(document["PatientInfo"]["PatientName"], "EVE NEWNAME");
        assert_eq!(values(&document), ["180", "7", "182"]);

        running.stop().await.unwrap();
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["patient_555-44-4444.json"],
            "no temporary file left"
        );
    }

    #[tokio::test]
    async fn files_hold_the_newest_max_records() {
        let temp = tempfile::tempdir().unwrap();
        let store = MemStore::default();
        for m in 1..=5 {
            let observations = (0..3).map(|i| glucose(i, &format!("{m}.{i}"))).collect();
            store.add(prototype_patient(), observations);
        }
        let options = ExportOptions {
            max_records: 4,
            ..fast()
        };
        run_once(&store, temp.path(), options).await;
        let document = read_json(&temp.path().join("patient_555-44-4444.json"));
        assert_eq!(values(&document), ["5.0", "5.1", "5.2", "4.0"]);

        // 0 is no limit.
        let options = ExportOptions {
            max_records: 0,
            ..fast()
        };
        store.inner.lock().unwrap().watermark = 0;
        run_once(&store, temp.path(), options).await;
        let document = read_json(&temp.path().join("patient_555-44-4444.json"));
        assert_eq!(values(&document).len(), 15);
    }

    /// Runs an exporter until it has caught up, then stops it.
    async fn run_once(store: &MemStore, dir: &Path, options: ExportOptions) -> ExportStats {
        let running = start(store, dir, options);
        let last = store.inner.lock().unwrap().messages.len() as i64;
        wait_for("the watermark", || running.handle.stats().watermark == last).await;
        let handle = running.handle.clone();
        running.stop().await.unwrap();
        handle.stats()
    }

    #[tokio::test]
    async fn many_messages_coalesce_into_one_rewrite_per_patient() {
        let temp = tempfile::tempdir().unwrap();
        let store = MemStore::default();
        for i in 0..300 {
            let key = ["alpha", "beta", "gamma"][i % 3];
            store.add(patient(key), vec![glucose(0, &i.to_string())]);
        }
        let stats = run_once(&store, temp.path(), fast()).await;
        assert_eq!(stats.n_files_written, 3);
        assert_eq!(store.inner.lock().unwrap().n_watermark_writes, 1);
        assert_eq!(
            values(&read_json(&temp.path().join("patient_beta.json")))[0],
            "298"
        );

        // While running, with wake-ups after every message: fewer rewrites than messages,
        // and never more than one per patient per round.
        let options = ExportOptions {
            min_interval: Duration::from_millis(50),
            ..ExportOptions::default()
        };
        let running = start(&store, temp.path(), options);
        wait_for("the first round", || running.handle.stats().n_rounds >= 1).await;
        let before = running.handle.stats();
        let mut last = 0;
        for i in 0..2_000 {
            last = store.add(patient("alpha"), vec![glucose(0, &i.to_string())]);
            running.handle.changed();
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        wait_for("the watermark", || running.handle.stats().watermark == last).await;
        let handle = running.handle.clone();
        running.stop().await.unwrap();
        let after = handle.stats();
        let n_written = after.n_files_written - before.n_files_written;
        assert!(n_written >= 1);
        assert!(n_written <= after.n_rounds - before.n_rounds);
        assert!(n_written < 100, "{n_written} rewrites for 2,000 messages");
        assert_eq!(
            values(&read_json(&temp.path().join("patient_alpha.json")))[0],
            "1999"
        );
    }

    #[tokio::test]
    async fn the_rest_after_a_round_ends_when_messages_stop_arriving() {
        let temp = tempfile::tempdir().unwrap();
        let store = MemStore::default();
        store.add(patient("alpha"), vec![glucose(0, "1")]);
        // Any round makes the rest after it hours long.
        let options = ExportOptions {
            min_interval: Duration::from_millis(20),
            rest_factor: u32::MAX,
            ..ExportOptions::default()
        };
        let running = start(&store, temp.path(), options);
        wait_for("the first round", || running.handle.stats().n_rounds >= 1).await;
        let last = store.add(patient("alpha"), vec![glucose(0, "2")]);
        running.handle.changed();
        // No more messages: the rest ends after one quiet interval.
        wait_for("the second message in the file", || {
            running.handle.stats().watermark == last
        })
        .await;
        running.stop().await.unwrap();
        assert_eq!(
            values(&read_json(&temp.path().join("patient_alpha.json"))),
            ["2", "1"]
        );
    }

    #[tokio::test]
    async fn a_restart_writes_what_is_pending() {
        let temp = tempfile::tempdir().unwrap();
        let store = MemStore::default();
        store.add(patient("done"), vec![glucose(0, "1")]);
        store.add(patient("pending"), vec![glucose(0, "2")]);
        let last = store.add(patient("pending"), vec![glucose(0, "3")]);
        // The previous run had written the first message's file and stopped.
        store.inner.lock().unwrap().watermark = 1;
        fs::write(temp.path().join(".tmp-1-1"), b"half a file").unwrap();

        let stats = run_once(&store, temp.path(), fast()).await;
        assert_eq!(stats.n_files_written, 1);
        assert_eq!(store.watermark(), last);
        assert!(!temp.path().join("patient_done.json").exists());
        assert_eq!(
            values(&read_json(&temp.path().join("patient_pending.json"))),
            ["3", "2"]
        );
        assert!(
            !temp.path().join(".tmp-1-1").exists(),
            "stale temporary file removed"
        );
    }

    #[tokio::test]
    async fn shutdown_makes_the_files_current() {
        let temp = tempfile::tempdir().unwrap();
        let store = MemStore::default();
        let options = ExportOptions {
            // No second round would start during the test.
            min_interval: Duration::from_secs(3_600),
            ..ExportOptions::default()
        };
        let running = start(&store, temp.path(), options);
        wait_for("the first round", || running.handle.stats().n_rounds >= 1).await;
        let last = store.add(patient("late"), vec![glucose(0, "42")]);
        running.handle.changed();
        running.stop().await.unwrap();
        assert_eq!(store.watermark(), last);
        assert_eq!(
            values(&read_json(&temp.path().join("patient_late.json"))),
            ["42"]
        );
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_written_holds_the_watermark_back_and_is_retried() {
        let temp = tempfile::tempdir().unwrap();
        let store = MemStore::default();
        store.add(patient("blocked"), vec![glucose(0, "1")]);
        let last = store.add(patient("free"), vec![glucose(0, "2")]);
        // A folder where the file should be: the rename over it fails.
        let blocked = temp.path().join("patient_blocked.json");
        fs::create_dir(&blocked).unwrap();

        let running = start(&store, temp.path(), fast());
        wait_for("a failure", || running.handle.stats().n_write_failures >= 1).await;
        wait_for("the other file", || {
            temp.path().join("patient_free.json").exists()
        })
        .await;
        assert_eq!(store.watermark(), 0);

        fs::remove_dir(&blocked).unwrap();
        wait_for("the watermark", || store.watermark() == last).await;
        assert_eq!(values(&read_json(&blocked)), ["1"]);
        running.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_failure_in_the_final_round_is_returned() {
        let temp = tempfile::tempdir().unwrap();
        let store = MemStore::default();
        store.add(patient("blocked"), vec![glucose(0, "1")]);
        fs::create_dir(temp.path().join("patient_blocked.json")).unwrap();
        let running = start(&store, temp.path(), fast());
        wait_for("a failure", || running.handle.stats().n_write_failures >= 1).await;
        let error = running.stop().await.unwrap_err();
        assert!(
            matches!(error, ExportError::Files { n_failed: 1, .. }),
            "{error}"
        );
        assert_eq!(store.watermark(), 0);
    }
}
