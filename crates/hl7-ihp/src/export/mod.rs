//! The patient files (docs/patient-files.md): the JSON document per patient, the NDJSON
//! stream per patient, their names, and the tasks that keep them current.
//!
//! [`file_name`] maps any identity key to one safe name inside the patients folder (with
//! upper-case letters encoded where the file system ignores case, [`NameCase`]); the shape
//! and the layout (one record a line) are in [`crate::documents::patient`]; [`run`] starts
//! one follower per output `--patient-files` asks for (`json`, `ndjson`, both, or none).
//!
//! # Upkeep policy
//!
//! - Off the ACK path: the receiver only announces each commit on [`crate::events`], which
//!   never waits. Each output follows the store's change feed ([`StoreRead::feed`]) on its
//!   own task, in commit order, with its own watermark in the store (`export:json`,
//!   `export:ndjson`): every message up to it is in that output's files.
//! - Records are rendered once, when their message is read from the feed. A JSON file is
//!   then rebuilt from its previous version (which the exporter wrote and recognises by
//!   inode, size and time): the header, the new record lines, then the old lines up to the
//!   cap, a copy. Only the first write of a patient after a start, after a failure, or when
//!   more records arrived than the file holds reads the patient's records from the store.
//! - Bounded cost: a patient's JSON file is rewritten at most once every
//!   [`ExportOptions::min_interval`] (default 3 s), however many messages arrive for them,
//!   and holds the newest [`ExportOptions::max_records`] records (default
//!   [`DEFAULT_MAX_RECORDS`]), so the bytes written per message stay a small multiple of
//!   the bytes received (README, "Patient files"). The NDJSON stream only appends: its
//!   pending lines are written every [`NDJSON_INTERVAL`], whatever the history.
//! - Batched durability: a flush writes every due file (JSON to a temporary name), makes
//!   them durable with one `syncfs`, renames the JSON files into place, syncs the folder,
//!   and only then records the watermark and the files' positions, in one store write.
//! - Paced: after a round (reading the feed, rendering, writing) that took `t`, the next
//!   waits at least [`ExportOptions::rest_factor`]` × t`, so under heavy load an output
//!   keeps to a bounded share of a core and its files lag instead of the ACKs.
//! - Catches up, also after a restart or a crash: an output reads the feed again from its
//!   watermark. The JSON files of the patients it finds are rebuilt from the store. An
//!   NDJSON stream is continued from the position the store recorded for it: complete lines
//!   after that position (appended before a crash, not yet recorded) are compared with the
//!   records that belong there and kept, a torn last line is cut, so no record is ever
//!   written twice or skipped.
//! - At shutdown a final flush, without the intervals, makes every file current.
//! - One writer among several receivers (docs/patient-files.md): the outputs run only while
//!   this receiver holds the store's `export` lease ([`crate::store::lease`]). Before each
//!   flush they check it is still held with the fence they started under, and their progress
//!   is recorded fenced ([`Store::set_export_progress_fenced`]), so a receiver that lost the
//!   lease writes no file and cannot move a watermark. When the lease is lost they stop and
//!   drop what they held; when it is taken (again), they start over from the store's
//!   watermarks, as after a restart. Other receivers' commits are announced on this one's
//!   events by the store (`Store::watch_other_writers`, PostgreSQL's LISTEN/NOTIFY); with a
//!   shared store an output also reads the feed every [`SHARED_POLL`], a safety net for a
//!   wake-up lost with the listener's connection. On SQLite the lease is always held.
//!
//! No log line names a patient or a file (file names contain patient ids): failures are
//! logged as counts with the operating system's error.

mod devices;
pub mod files;
mod json;
pub mod names;
mod ndjson;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::events::Events;
use crate::shutdown::Shutdown;
use crate::store::lease::Lease;
use crate::store::{ChangeCursor, FeedMessage, FilePosition, Store, StoreError, StoreRead};

pub use crate::documents::patient::Fields;
pub use files::{Folder, Identity, prepare_dir};
pub use names::{
    DEVICE_FILE_PREFIX, FILE_PREFIX, FILE_SUFFIX, NDJSON_SUFFIX, NameCase, device_file_name,
    file_name, ndjson_file_name,
};

/// Default for [`ExportOptions::max_records`] (README, "Patient files", for the numbers).
pub const DEFAULT_MAX_RECORDS: usize = 200;
/// Default for [`ExportOptions::min_interval`].
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(3);
/// Default for [`ExportOptions::rest_factor`]: busy at most a quarter of the time.
pub const DEFAULT_REST_FACTOR: u32 = 3;
/// How often the NDJSON streams' pending lines are appended and synced.
pub const NDJSON_INTERVAL: Duration = Duration::from_secs(1);
/// Messages per read of the feed.
pub const FEED_BATCH: usize = 2_000;
/// Reads of the feed before a flush, so a flush comes even while a backlog is read.
pub const MAX_READS_PER_ROUND: usize = 8;
/// Rendered lines an output may hold unwritten before it stops reading ahead.
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// How long after a failure (store error, file not written) an output tries again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often an output reads the feed without a commit announced, when other receivers
/// share the store: a safety net, their commits are announced (`Store::watch_other_writers`).
pub const SHARED_POLL: Duration = Duration::from_secs(10);
/// The longest a watermark that moved waits before it is recorded, when no file was written
/// (messages without records, such as rejected frames, move it too).
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// The store's record limit for a `max_records` setting: 0 means no limit.
pub fn record_limit(max_records: usize) -> Option<usize> {
    (max_records != 0).then_some(max_records)
}

/// What `--patient-files` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatientFiles {
    /// `patient_<id>.json`, the prototype's document (the default).
    #[default]
    Json,
    /// `patient_<id>.ndjson`, one record a line, appended.
    Ndjson,
    /// Both.
    Both,
    /// Neither: the store, the API and `hl7-ihp show` only.
    Off,
}

impl PatientFiles {
    /// The outputs it keeps.
    pub fn outputs(self) -> &'static [Output] {
        match self {
            PatientFiles::Json => &[Output::Json],
            PatientFiles::Ndjson => &[Output::Ndjson],
            PatientFiles::Both => &[Output::Json, Output::Ndjson],
            PatientFiles::Off => &[],
        }
    }
}

/// One kind of patient file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The JSON documents.
    Json,
    /// The NDJSON streams.
    Ndjson,
    /// The unassigned devices' JSON documents, `device_<id>.json` (`--device-files on`).
    Devices,
}

impl Output {
    /// Its name: in metrics (`output="json"`) and in the store's watermarks (`export:json`).
    pub fn name(self) -> &'static str {
        match self {
            Output::Json => "json",
            Output::Ndjson => "ndjson",
            Output::Devices => "devices",
        }
    }
}

/// How the exporter works; see the module documentation for the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// Which files (`--patient-files`).
    pub files: PatientFiles,
    /// Which keys (`--json-fields`), for both outputs.
    pub fields: Fields,
    /// The newest records a JSON file holds (`--json-max-records`); 0 = no limit.
    pub max_records: usize,
    /// The least time between two rewrites of one patient's JSON file (`--json-min-interval`).
    pub min_interval: Duration,
    /// After a round that took `t` (reading, rendering, writing), the next one waits at
    /// least `rest_factor × t`.
    pub rest_factor: u32,
    /// How file names treat upper-case letters: what the folder's file system needs, as
    /// [`Folder::probe_case`] found at start (not a setting).
    pub name_case: NameCase,
    /// Also `device_<id>.json` for each unassigned device (`--device-files`), with the
    /// patient files' keys, record cap and interval.
    pub device_files: bool,
}

impl ExportOptions {
    /// Every output these options keep: the patient files', then the devices'.
    pub fn outputs(&self) -> Vec<Output> {
        let mut outputs = self.files.outputs().to_vec();
        if self.device_files {
            outputs.push(Output::Devices);
        }
        outputs
    }
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            files: PatientFiles::default(),
            fields: Fields::default(),
            max_records: DEFAULT_MAX_RECORDS,
            min_interval: DEFAULT_MIN_INTERVAL,
            rest_factor: DEFAULT_REST_FACTOR,
            name_case: NameCase::default(),
            device_files: false,
        }
    }
}

/// What one output has done so far, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputStats {
    /// Flushes finished, failed ones included.
    pub n_rounds: u64,
    /// Files written (a JSON file replaced, an NDJSON stream appended to).
    pub n_files_written: u64,
    /// Files that could not be written (each retried later).
    pub n_write_failures: u64,
    /// Bytes written to files.
    pub n_bytes_written: u64,
    /// JSON files rebuilt from the store rather than from their previous version.
    pub n_rebuilt: u64,
    /// Every message up to this id is in the files (in memory; the store's copy may be up
    /// to [`PERSIST_EVERY`] older).
    pub watermark: i64,
}

/// One output's counters.
#[derive(Debug, Default)]
pub struct OutputCounters {
    n_rounds: AtomicU64,
    n_files_written: AtomicU64,
    n_write_failures: AtomicU64,
    n_bytes_written: AtomicU64,
    n_rebuilt: AtomicU64,
    watermark: AtomicI64,
}

impl OutputCounters {
    /// What it has done so far.
    pub fn stats(&self) -> OutputStats {
        OutputStats {
            n_rounds: self.n_rounds.load(Ordering::Relaxed),
            n_files_written: self.n_files_written.load(Ordering::Relaxed),
            n_write_failures: self.n_write_failures.load(Ordering::Relaxed),
            n_bytes_written: self.n_bytes_written.load(Ordering::Relaxed),
            n_rebuilt: self.n_rebuilt.load(Ordering::Relaxed),
            watermark: self.watermark.load(Ordering::Relaxed),
        }
    }
}

/// The counters of every output the receiver keeps, shared with `/metrics` and the API.
#[derive(Debug, Default)]
pub struct ExportCounters {
    outputs: Vec<(Output, OutputCounters)>,
}

impl ExportCounters {
    /// Counters for the outputs of `files`.
    pub fn new(files: PatientFiles) -> ExportCounters {
        ExportCounters::with_devices(files, false)
    }

    /// Counters for the outputs of `files`, and of the device files with `device_files`.
    pub fn with_devices(files: PatientFiles, device_files: bool) -> ExportCounters {
        let options = ExportOptions {
            files,
            device_files,
            ..ExportOptions::default()
        };
        ExportCounters {
            outputs: options
                .outputs()
                .into_iter()
                .map(|output| (output, OutputCounters::default()))
                .collect(),
        }
    }

    /// One output's counters, when it is kept.
    pub fn get(&self, output: Output) -> Option<&OutputCounters> {
        self.outputs
            .iter()
            .find(|(o, _)| *o == output)
            .map(|(_, counters)| counters)
    }

    /// Every kept output with what it has done.
    pub fn outputs(&self) -> Vec<(Output, OutputStats)> {
        self.outputs
            .iter()
            .map(|(output, counters)| (*output, counters.stats()))
            .collect()
    }

    /// The lowest watermark of the kept outputs; `None` without any.
    pub fn slowest_watermark(&self) -> Option<i64> {
        self.outputs
            .iter()
            .map(|(_, counters)| counters.watermark.load(Ordering::Relaxed))
            .min()
    }
}

/// Every kept output with what it has done, its watermark as the files have it: this
/// receiver's, or the one recorded in the store when that is further, as it is on a
/// receiver that shares a store whose `export` lease another holds (that one writes the
/// files and records how far). A store that cannot answer leaves this receiver's.
pub async fn current_outputs(
    counters: &ExportCounters,
    store: &dyn StoreRead,
) -> Vec<(Output, OutputStats)> {
    let mut outputs = counters.outputs();
    for (output, stats) in &mut outputs {
        if let Ok(recorded) = store.export_watermark(output.name()).await {
            stats.watermark = stats.watermark.max(recorded.position());
        }
    }
    outputs
}

/// How far an output's files are behind the store.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lag {
    /// The newest message in the store.
    pub newest: i64,
    /// Messages committed after the watermark.
    pub messages: i64,
    /// How long ago the oldest of them arrived (0 when there is none).
    pub seconds: f64,
}

/// The lag of files whose watermark is `watermark`, read from the store at `now_ms`.
pub async fn lag(store: &dyn StoreRead, watermark: i64, now_ms: i64) -> Result<Lag, StoreError> {
    let newest = store.feed_head().await?.position();
    let messages = (newest - watermark).max(0);
    let mut seconds = 0.0;
    if messages > 0 {
        let oldest = store.feed(ChangeCursor::at(watermark), 1).await?;
        if let Some(message) = oldest.messages.first() {
            let ms = now_ms - message.received_at.as_millisecond();
            seconds = ms.max(0) as f64 / 1000.0;
        }
    }
    Ok(Lag {
        newest,
        messages,
        seconds,
    })
}

/// Why the exporter stopped without making the files current.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The patients folder could not be created or made private.
    #[error("cannot prepare the patients folder: {0}")]
    Folder(io::Error),
    /// The store failed during the final flush.
    #[error("patient files not brought up to date: {0}")]
    Store(#[from] StoreError),
    /// Some files could not be written in the final flush; they are written at the next start.
    #[error("{n_failed} patient files not written: {error}")]
    Files {
        /// How many.
        n_failed: usize,
        /// The first failure, from the operating system (it names no file).
        error: io::Error,
    },
    /// An output's task failed.
    #[error("patient file task failed")]
    Task,
}

/// Keeps the patient files `options.files` asks for in `patients_dir` current while this
/// receiver holds `lease` (the store's `export` lease), until `shutdown` is requested, then
/// makes them current one last time (if it still holds the lease) and returns.
///
/// Each output's first read starts at once, so files left behind by a crash or a stop catch
/// up. Errors during normal running are logged and retried; only the final flush's are
/// returned.
pub async fn run(
    store: Arc<dyn Store>,
    patients_dir: PathBuf,
    options: ExportOptions,
    events: Events,
    counters: Arc<ExportCounters>,
    lease: Lease,
    mut shutdown: Shutdown,
) -> Result<(), ExportError> {
    if options.outputs().is_empty() {
        return Ok(());
    }
    // Opened once: every write, sync and removal goes through this handle, so a symbolic
    // link put in place of the folder later is never followed.
    let folder = tokio::task::spawn_blocking(move || prepare_dir(&patients_dir).map(Arc::new))
        .await
        .map_err(|_| ExportError::Folder(io::Error::other("folder task failed")))?
        .map_err(ExportError::Folder)?;
    let mut waiting = lease.clone();
    loop {
        let fence = tokio::select! {
            fence = waiting.acquired() => fence,
            () = shutdown.requested() => return Ok(()),
        };
        match run_outputs(
            &store, &folder, &options, &events, &counters, &lease, fence, &shutdown,
        )
        .await?
        {
            Ended::Shutdown => return Ok(()),
            Ended::LeaseLost => {
                tracing::info!(
                    fence,
                    "patient files: the export lease is lost; stopped writing them"
                );
            }
        }
    }
}

/// Why the outputs stopped without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// Shutdown was requested; the final flush ran.
    Shutdown,
    /// This receiver no longer holds the lease: nothing more was written.
    LeaseLost,
}

/// Runs every output under the lease taken with `fence` until shutdown or until the lease
/// is lost.
#[allow(clippy::too_many_arguments)]
async fn run_outputs(
    store: &Arc<dyn Store>,
    folder: &Arc<Folder>,
    options: &ExportOptions,
    events: &Events,
    counters: &Arc<ExportCounters>,
    lease: &Lease,
    fence: i64,
    shutdown: &Shutdown,
) -> Result<Ended, ExportError> {
    // Left by an earlier holder (this receiver's last run, or one that died holding the
    // lease): only the holder writes temporary files, so they are nobody's now.
    let n_stale = {
        let folder = Arc::clone(folder);
        tokio::task::spawn_blocking(move || folder.remove_stale_temp_files())
            .await
            .unwrap_or(0)
    };
    if n_stale > 0 {
        tracing::info!(
            n_stale,
            "removed unfinished patient files from an earlier run"
        );
    }
    let mut tasks = Vec::new();
    for output in options.outputs() {
        let context = Context {
            store: Arc::clone(store),
            folder: Arc::clone(folder),
            options: options.clone(),
            counters: Arc::clone(counters),
            output,
            lease: lease.clone(),
            fence,
        };
        let subscription = events.subscribe();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            match output {
                Output::Json => {
                    let sink = json::JsonSink::new(&context);
                    follow(sink, context, subscription, shutdown).await
                }
                Output::Ndjson => {
                    let sink = ndjson::NdjsonSink::new(&context);
                    follow(sink, context, subscription, shutdown).await
                }
                Output::Devices => {
                    let sink = devices::DeviceSink::new(&context);
                    follow(sink, context, subscription, shutdown).await
                }
            }
        }));
    }
    let mut result = Ok(Ended::Shutdown);
    for task in tasks {
        let outcome = task.await.unwrap_or(Err(ExportError::Task));
        match (&result, outcome) {
            (Err(_), _) => {}
            (_, Err(error)) => result = Err(error),
            (_, Ok(Ended::LeaseLost)) => result = Ok(Ended::LeaseLost),
            (_, Ok(Ended::Shutdown)) => {}
        }
    }
    result
}

/// What an output's follower and its sink share.
pub(crate) struct Context {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) folder: Arc<Folder>,
    pub(crate) options: ExportOptions,
    counters: Arc<ExportCounters>,
    output: Output,
    /// The export lease, and the fence it was taken with for this run.
    lease: Lease,
    fence: i64,
}

impl Context {
    fn counters(&self) -> &OutputCounters {
        self.counters
            .get(self.output)
            .expect("counters for every output run")
    }
}

/// What a flush did.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    /// The files written, with their new positions.
    pub(crate) files: Vec<(String, FilePosition)>,
    /// Bytes written to them.
    pub(crate) n_bytes: u64,
    /// JSON files rebuilt from the store.
    pub(crate) n_rebuilt: u64,
    /// Files that failed, and the first error.
    pub(crate) failed: Option<(usize, io::Error)>,
}

/// One kind of patient file, fed messages in commit order by [`follow`].
pub(crate) trait Sink: Send {
    /// Takes one message of the feed (all of them, in commit order; most hold records).
    fn take(&mut self, message: &FeedMessage);

    /// Writes the files that are due at `now` (all pending ones with `all`), durably.
    /// `read` is how far the feed has been read.
    fn flush(
        &mut self,
        now: Instant,
        all: bool,
        read: ChangeCursor,
    ) -> impl std::future::Future<Output = Result<Flushed, StoreError>> + Send;

    /// Every message up to the returned cursor is in the files, the feed having been read
    /// up to `read`.
    fn watermark(&self, read: ChangeCursor) -> ChangeCursor;

    /// When the next pending file falls due; `None` when nothing is pending.
    fn next_due(&self) -> Option<Instant>;

    /// Bytes of rendered lines held unwritten.
    fn pending_bytes(&self) -> usize;
}

/// Follows the feed for one output until shutdown, then flushes everything.
async fn follow<S: Sink>(
    mut sink: S,
    context: Context,
    mut events: Subscription,
    mut shutdown: Shutdown,
) -> Result<Ended, ExportError> {
    let name = context.output.name();
    let store = Arc::clone(&context.store);
    let (lease, fence) = (context.lease.clone(), context.fence);
    let mut persisted = loop {
        match store.export_watermark(name).await {
            Ok(cursor) => break cursor,
            Err(error) => {
                tracing::warn!(output = name, %error, "patient files: watermark not read; will retry");
                tokio::select! {
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                    () = shutdown.requested() => return Ok(Ended::Shutdown),
                    () = lease.lost(fence) => return Ok(Ended::LeaseLost),
                }
            }
        }
    };
    let lease_name = lease.name().to_owned();
    let counters = context.counters();
    counters
        .watermark
        .store(persisted.position(), Ordering::Relaxed);
    let mut cursor = persisted;
    let mut persisted_at = Instant::now();
    let mut not_before = Instant::now();
    let mut retry_at: Option<Instant> = None;
    // Positions written but not yet recorded (the store write failed): sent again with the
    // next, so the watermark never moves past a file whose position the store lacks.
    let mut unrecorded: std::collections::HashMap<String, FilePosition> = Default::default();
    loop {
        // Paced: the rest after the last round's work (reading and rendering included).
        if Instant::now() < not_before {
            tokio::select! {
                () = tokio::time::sleep_until(not_before) => {}
                () = shutdown.requested() => break,
                () = lease.lost(fence) => return Ok(Ended::LeaseLost),
            }
        }
        let round_start = Instant::now();
        // Read what was committed (bounded, so a long backlog still gets flushes).
        let mut more = false;
        let mut failed = false;
        for _ in 0..MAX_READS_PER_ROUND {
            if sink.pending_bytes() >= MAX_PENDING_BYTES {
                more = true;
                break;
            }
            match store.feed(cursor, FEED_BATCH).await {
                Ok(feed) => {
                    for message in &feed.messages {
                        sink.take(message);
                    }
                    let full = feed.messages.len() >= FEED_BATCH && feed.next > cursor;
                    cursor = feed.next;
                    if !full {
                        more = false;
                        break;
                    }
                    more = true;
                }
                Err(error) => {
                    tracing::warn!(output = name, %error, "patient files: store not read; will retry");
                    failed = true;
                    break;
                }
            }
        }

        // Write what is due, paced; only while the lease is still ours.
        if !lease.holds(fence) {
            return Ok(Ended::LeaseLost);
        }
        let now = Instant::now();
        if retry_at.is_none_or(|at| now >= at) {
            match sink.flush(now, false, cursor).await {
                Ok(flushed) => {
                    retry_at = None;
                    count(counters, &flushed);
                    if let Some((n_failed, error)) = &flushed.failed {
                        tracing::warn!(output = name, n_failed, %error, "patient files not written; will retry");
                        retry_at = Some(Instant::now() + RETRY_DELAY);
                    }
                    let watermark = sink.watermark(cursor);
                    let wrote = !flushed.files.is_empty();
                    unrecorded.extend(flushed.files);
                    if wrote
                        || !unrecorded.is_empty()
                        || (watermark > persisted && persisted_at.elapsed() >= PERSIST_EVERY)
                    {
                        let files: Vec<(String, FilePosition)> =
                            unrecorded.iter().map(|(k, p)| (k.clone(), *p)).collect();
                        match store
                            .set_export_progress_fenced(name, watermark, files, &lease_name, fence)
                            .await
                        {
                            Ok(()) => {
                                unrecorded.clear();
                                persisted = watermark;
                                persisted_at = Instant::now();
                            }
                            Err(StoreError::LeaseLost { .. }) => return Ok(Ended::LeaseLost),
                            Err(error) => {
                                tracing::warn!(output = name, %error, "patient files: progress not recorded; will retry");
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(output = name, %error, "patient files: store not read; will retry");
                    retry_at = Some(Instant::now() + RETRY_DELAY);
                }
            }
        }
        not_before = Instant::now() + round_start.elapsed() * context.options.rest_factor;
        counters
            .watermark
            .store(sink.watermark(cursor).position(), Ordering::Relaxed);

        if more && !failed && sink.pending_bytes() < MAX_PENDING_BYTES {
            continue;
        }
        // Sleep until a commit, the next file due, a retry, or the time to record the
        // watermark.
        let mut wake = sink.next_due().map(|due| due.max(not_before));
        if let Some(at) = retry_at {
            wake = Some(wake.map_or(at, |w| w.max(at)));
        }
        if failed {
            wake = Some(Instant::now() + RETRY_DELAY);
        }
        if sink.watermark(cursor) > persisted {
            let at = persisted_at + PERSIST_EVERY;
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        if lease.is_shared() {
            let at = Instant::now() + SHARED_POLL;
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        tokio::select! {
            () = events.changed(), if !failed => {}
            () = sleep_until(wake) => {}
            () = shutdown.requested() => break,
            () = lease.lost(fence) => return Ok(Ended::LeaseLost),
        }
    }

    // The final flush: the receiver has stopped taking messages, so it ends.
    loop {
        let feed = store.feed(cursor, FEED_BATCH).await?;
        for message in &feed.messages {
            sink.take(message);
        }
        let caught_up = feed.messages.len() < FEED_BATCH || feed.next <= cursor;
        cursor = feed.next;
        if caught_up || sink.pending_bytes() >= MAX_PENDING_BYTES {
            if !lease.holds(fence) {
                return Ok(Ended::LeaseLost);
            }
            let flushed = sink.flush(Instant::now(), true, cursor).await?;
            count(counters, &flushed);
            let failed = flushed.failed;
            let watermark = sink.watermark(cursor);
            unrecorded.extend(flushed.files);
            let files: Vec<(String, FilePosition)> = unrecorded.drain().collect();
            match store
                .set_export_progress_fenced(name, watermark, files, &lease_name, fence)
                .await
            {
                Ok(()) => {}
                Err(StoreError::LeaseLost { .. }) => return Ok(Ended::LeaseLost),
                Err(error) => return Err(error.into()),
            }
            counters
                .watermark
                .store(watermark.position(), Ordering::Relaxed);
            if let Some((n_failed, error)) = failed {
                return Err(ExportError::Files { n_failed, error });
            }
            if caught_up {
                return Ok(Ended::Shutdown);
            }
        }
    }
}

use crate::events::Subscription;

fn count(counters: &OutputCounters, flushed: &Flushed) {
    counters.n_rounds.fetch_add(1, Ordering::Relaxed);
    counters
        .n_files_written
        .fetch_add(flushed.files.len() as u64, Ordering::Relaxed);
    counters
        .n_bytes_written
        .fetch_add(flushed.n_bytes, Ordering::Relaxed);
    counters
        .n_rebuilt
        .fetch_add(flushed.n_rebuilt, Ordering::Relaxed);
    if let Some((n_failed, _)) = &flushed.failed {
        counters
            .n_write_failures
            .fetch_add(*n_failed as u64, Ordering::Relaxed);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
