//! The patient JSON files (docs/patient-files.md): their names, their shape, and the task that keeps them current.
//!
//! [`file_name`] maps any identity key to one safe name inside the patients folder (with
//! upper-case letters encoded where the file system ignores case, [`NameCase`]);
//! [`render_document`] writes a patient and their records in the prototype's shape (the
//! exporter and `hl7-ihp show` both call it, so the file and the command agree); [`run`] is
//! the exporter task that rewrites the files of the patients the store says have changed.
//!
//! # Upkeep policy
//!
//! - Off the ACK path: the receiver only announces each commit on [`crate::events`], which
//!   never waits. The exporter runs on its own task, reads the store, and renders and writes
//!   each file in `spawn_blocking`, one file at a time (so at most one document is in memory
//!   and at most one core is busy with it).
//! - Coalesced: a round asks the store which patients changed after the last message it has
//!   seen (the store's change feed, [`CHANGES_PER_READ`] messages per read) and
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

pub mod files;
pub mod names;

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::documents::patient::render_document;
use crate::events::Subscription;
use crate::store::{ChangeCursor, Store, StoreError};

pub use files::{Folder, prepare_dir};
pub use names::{FILE_PREFIX, FILE_SUFFIX, NameCase, file_name};

/// The JSON files' name in the store's table of exporter watermarks.
pub const EXPORTER_NAME: &str = "json";
/// Default for [`ExportOptions::max_records`] (docs/patient-files.md).
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
/// Default for [`ExportOptions::rest_factor`]: busy at most a quarter of the time.
pub const DEFAULT_REST_FACTOR: u32 = 3;

/// Default for [`ExportOptions::min_interval`].
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Messages looked at per read of the change feed ([`crate::store::StoreRead::changes_since`]).
pub const CHANGES_PER_READ: usize = 10_000;
/// Reads of changes per round, so a round ends even while messages keep arriving.
pub const MAX_READS_PER_ROUND: usize = 32;
/// Patients collected for rewriting before a round stops reading and writes them.
pub const MAX_DIRTY_PATIENTS: usize = 10_000;
/// How long after a failed round (store error, file not written) the exporter tries again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

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
    /// How file names treat upper-case letters: what the folder's file system needs, as
    /// [`Folder::probe_case`] found at start (not a setting).
    pub name_case: NameCase,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            max_records: DEFAULT_MAX_RECORDS,
            min_interval: DEFAULT_MIN_INTERVAL,
            rest_factor: DEFAULT_REST_FACTOR,
            name_case: NameCase::default(),
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

/// The exporter's counters, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct ExportCounters {
    n_rounds: AtomicU64,
    n_files_written: AtomicU64,
    n_write_failures: AtomicU64,
    watermark: AtomicI64,
}

impl ExportCounters {
    /// What the exporter has done so far.
    pub fn stats(&self) -> ExportStats {
        ExportStats {
            n_rounds: self.n_rounds.load(Ordering::Relaxed),
            n_files_written: self.n_files_written.load(Ordering::Relaxed),
            n_write_failures: self.n_write_failures.load(Ordering::Relaxed),
            watermark: self.watermark.load(Ordering::Relaxed),
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

/// Keeps the patient files in `patients_dir` current until `shutdown` completes, then makes
/// them current one last time and returns.
///
/// The first round runs at once, so files left behind by a crash or a stop catch up. Later
/// rounds run when `events` says something was committed (or, after a failure or an unfinished
/// round, without being told), never sooner than `options.min_interval` after the previous
/// one. Errors during normal running are logged and retried; only the final round's are
/// returned.
pub async fn run(
    store: Arc<dyn Store>,
    patients_dir: PathBuf,
    options: ExportOptions,
    mut events: Subscription,
    counters: Arc<ExportCounters>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ExportError> {
    // Opened once: every write, sync and removal goes through this handle, so a symbolic
    // link put in place of the folder later is never followed.
    let (folder, n_stale) = tokio::task::spawn_blocking(move || -> io::Result<_> {
        let folder = prepare_dir(&patients_dir)?;
        let n_stale = folder.remove_stale_temp_files();
        Ok((Arc::new(folder), n_stale))
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
        folder,
        options,
        shared: counters,
        persisted: None,
        seen: ChangeCursor::START,
        dirty: BTreeSet::new(),
    };
    tokio::pin!(shutdown);
    let mut next = Next::Now;
    let mut last_round: Option<(Instant, Instant)> = None;
    loop {
        match next {
            Next::Now => {}
            Next::WhenChanged => tokio::select! {
                () = events.changed() => {}
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
            let mut n_changes = events.n_commits();
            let mut stopped = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(at.min(until)) => {}
                    () = &mut shutdown => {
                        stopped = true;
                        break;
                    }
                }
                let now = events.n_commits();
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

struct Exporter {
    store: Arc<dyn Store>,
    folder: Arc<Folder>,
    options: ExportOptions,
    shared: Arc<ExportCounters>,
    /// The watermark in the store, once read.
    persisted: Option<ChangeCursor>,
    /// Every change up to this cursor is in the files or its patient is in `dirty`.
    seen: ChangeCursor,
    /// Patients to rewrite.
    dirty: BTreeSet<String>,
}

impl Exporter {
    async fn round(&mut self, limits: Limits) -> Result<Progress, StoreError> {
        let result = self.round_inner(limits).await;
        self.shared.n_rounds.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn round_inner(&mut self, limits: Limits) -> Result<Progress, StoreError> {
        let persisted = match self.persisted {
            Some(persisted) => persisted,
            None => {
                let persisted = self.store.export_watermark(EXPORTER_NAME).await?;
                self.persisted = Some(persisted);
                self.seen = persisted;
                self.shared
                    .watermark
                    .store(persisted.position(), Ordering::Relaxed);
                persisted
            }
        };

        let mut caught_up = false;
        let mut n_reads = 0;
        while limits == Limits::Final
            || (n_reads < MAX_READS_PER_ROUND && self.dirty.len() < MAX_DIRTY_PATIENTS)
        {
            let changes = self
                .store
                .changes_since(self.seen, CHANGES_PER_READ)
                .await?;
            n_reads += 1;
            self.dirty.extend(changes.patients);
            if changes.next <= self.seen {
                caught_up = true;
                break;
            }
            self.seen = changes.next;
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
            let folder = Arc::clone(&self.folder);
            let synced = tokio::task::spawn_blocking(move || folder.sync())
                .await
                .unwrap_or_else(|_| Err(io::Error::other("folder sync task failed")));
            if let Err(error) = synced {
                return Ok(Progress::Failed { n_failed: 0, error });
            }
            self.store
                .set_export_watermark(EXPORTER_NAME, self.seen)
                .await?;
            self.persisted = Some(self.seen);
            self.shared
                .watermark
                .store(self.seen.position(), Ordering::Relaxed);
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
        let folder = Arc::clone(&self.folder);
        let name = file_name(key, self.options.name_case);
        // Rendering up to `max_records` records and writing them is blocking work.
        tokio::task::spawn_blocking(move || {
            folder.write_atomically(&name, &render_document(&records))
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::other("file writer task failed")))
        .map_err(WriteError::Io)?;
        self.shared.n_files_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
