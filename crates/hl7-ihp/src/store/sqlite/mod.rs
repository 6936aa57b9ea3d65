//! The SQLite store: one writer thread with group commit, a small pool of reader
//! connections, and a checkpoint thread that keeps WAL checkpoints off the ACK path (docs/storage.md).
//!
//! `commit` sends its batch to the writer over a bounded queue. The writer takes every batch
//! waiting (up to `max_batch` messages), writes them in one transaction, commits (the one
//! fsync), and only then answers each caller. A failed transaction is rolled back and every
//! caller in it gets [`StoreError::Database`]; the writer carries on with the next batches, so
//! the store recovers by itself once the cause (a full disk) is gone.
//!
//! The per-message cost does not grow with a patient's history: a message is one row of an
//! append-only table (its observations a JSON column of it), it adds one entry to the
//! patient index and one to the duplicate index (filed by time, so a transaction's entries
//! sit together), and the writer remembers patients so that a message about a known patient
//! reads nothing and writes no patient row unless the patient's data changed. `commit`
//! prepares each row on the caller's thread (encodes the observations, hashes the key), so
//! the writer, the one serial step, only binds values.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::os::raw::c_int;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{CachedStatement, Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

mod alarms;
pub mod backup;
mod checkpoint;
pub(in crate::store) mod encoded;
mod keys;
mod merge;
mod pool;
mod purge;
pub(in crate::store) mod raw;
#[cfg(test)]
mod raw_tests;
mod readers;
mod schema;
pub(in crate::store) mod source;
mod tail;
#[cfg(test)]
mod tests;
mod writer;

use self::checkpoint::*;
use self::encoded::encode_observations;
use self::keys::*;
use self::pool::*;
use self::readers::*;
use self::schema::*;
use self::tail::*;
use self::writer::*;
use super::{
    AlarmQuery, AlarmRow, ChangeCursor, Changes, DeviceRecords, Feed, FeedMessage, FilePosition,
    Health, MergeNote, MessageDetail, MessageFilter, MessageKey, MessageSummary, NewMessage,
    ObservationData, ObservationQuery, ObservationRow, Outcome, PatientData, PatientRecords,
    PatientSummary, Store, StoreError, StoreFuture, StoreRead, StoreStats, Stored, TrendBucket,
    TrendQuery, TrendSeries, Verdict, outcome_name,
};

/// Page size of a new database (an existing one keeps its own). A vitals ORU's row (its
/// bytes and its observations' JSON, about 2.4 KB) leaves most of a 4 KiB page unused, and
/// the WAL and the checkpoint copy whole pages; but a small transaction rewrites its last,
/// partly filled page whole, so large pages cost at low concurrency. Measured over 20 s
/// (vitals, 1,000 patients): 8 connections 14,500 msg/s with 4 KiB pages, 15,800 with
/// 8 KiB, 11,200 with 16 KiB; 64 connections 25,700, 28,100 and 26,300.
const PAGE_SIZE: u32 = 8 * 1024;

/// How long a connection waits for a lock held by another connection (the checkpointer, or
/// another process) before the operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's page cache, in KiB: the indexes' upper levels and recent leaves. Not larger:
/// a B-tree page split leaves a page numbered far beyond the database's end in the cache,
/// and the commit that follows then scans the cache's whole hash table to drop it, at a
/// cost proportional to the cache size (measured: 14% of the writer's time at 64 MiB).
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Each reader connection's page cache, in KiB.
const READER_CACHE_KIB: i64 = 16 * 1024;

/// WAL frames (pages: 64 MiB of 8 KiB pages) after which the checkpointer copies the WAL
/// into the database, concurrently with the writer. A long WAL lets a page written by many
/// transactions (a table's last page) be copied once.
const CHECKPOINT_FRAMES: i32 = 8192;

/// The checkpointer repeats its pass until the writer added fewer frames than this during
/// one (2 MiB of 8 KiB pages); the writer then copies that remainder itself.
const CATCH_UP_FRAMES: i64 = 256;

/// The size the WAL file is cut back to after a restart.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Patients the writer remembers (key → row and data); when full it forgets them all.
const PATIENT_CACHE_CAPACITY: usize = 100_000;

/// Keys of the most recent accepted messages the writer remembers, to count senders that
/// reuse a control id with other content (docs/acks.md). Only a metric: the duplicate
/// check itself looks at everything stored.
const RECENT_KEYS: usize = 65_536;

/// Refused frames remembered by their bytes, so that the same junk again is counted on
/// one row instead of kept again ([`Stored::Repeated`]).
const RECENT_REFUSALS: usize = 4096;

/// While the store fails, a summary line at most this often.
const FAILURE_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The `meta` rows holding each exporter's progress are named this and the exporter's name.
const EXPORT_WATERMARK_PREFIX: &str = "export:";

/// The `meta` row below which (inclusive) every message about a patient is in
/// `patient_messages`; those after it may be there too, and are in the writer's
/// [`PatientTail`]. Recorded now and then, so it may lag: the next start loads more.
const PATIENT_INDEX_THROUGH: &str = "patient_index_through";

/// The writer looks for patients whose tail entries grew old once per this many
/// transactions, not in every one; as often, it records how far `message_keys` is complete.
const AGE_CHECK_EVERY: u64 = 32;

/// The `meta` row below which (inclusive) every accepted message's key is in
/// `message_keys`; the rest is in the writer's [`PendingKeys`].
const KEY_INDEX_THROUGH: &str = "key_index_through";

/// A key moves into `message_keys` once the newest MSH-7 seen is this much later than its
/// own: by then its second's keys have arrived and go in together, in order.
const KEY_SETTLE_MS: i64 = 2_000;

/// At most this many keys wait in memory; beyond, the earliest by MSH-7 move at once.
const MAX_PENDING_KEYS: usize = 100_000;

/// A key moves after waiting this long whatever its MSH-7 (a device whose clock runs
/// ahead would otherwise keep its last key waiting).
const KEY_MAX_WAIT: Duration = Duration::from_secs(10);

/// `message_keys.sent_ms` of a message whose MSH-7 is not a time.
const NO_TIME: i64 = i64::MIN;

/// Settings of the SQLite store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Recognise retransmissions (docs/acks.md, `--dedupe on|off`).
    pub dedupe: bool,
    /// At most this many messages per transaction (more only when one batch is larger).
    pub max_batch: usize,
    /// Batches that may wait for the writer before `commit` itself waits.
    pub queue_depth: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            dedupe: true,
            max_batch: 1024,
            queue_depth: 4096,
        }
    }
}

/// The SQLite store; clones share one database, one writer and one pool of readers.
///
/// Dropping the last clone waits until the writer has written the batches already queued,
/// then checkpoints so that the database file alone holds everything.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only while dropping: closing the queue is what stops the writer.
    requests: Option<mpsc::Sender<Request>>,
    readers: Arc<ReaderPool>,
    /// `None` in a read-only store: its readers find the messages after the patient
    /// watermark by a scan instead.
    tail: Option<Arc<Mutex<PatientTail>>>,
    counters: Arc<Counters>,
    checkpoint: Arc<CheckpointSignal>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    /// The database file with this store's `flock` on it; closed (and the lock released)
    /// after the threads above have ended.
    _lock: Option<std::fs::File>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer finishes the batches already queued, then sees the queue closed.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // Only now, with the writer gone: the checkpoint thread's last act is to empty the
        // WAL into the database file, and nothing may be written after it.
        self.checkpoint.shut_down();
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
    }
}

/// Whether the last transaction failed, and why: what `/healthz` reports.
#[derive(Default)]
struct HealthState {
    failure: Mutex<Option<String>>,
}

impl HealthState {
    fn current(&self) -> Health {
        match lock(&self.failure).as_ref() {
            None => Health::Ok,
            Some(reason) => Health::Failing {
                reason: reason.clone(),
            },
        }
    }

    fn set(&self, failure: Option<String>) {
        *lock(&self.failure) = failure;
    }
}

/// The database file as it was opened. If it is deleted or another file takes its place,
/// the writer's connection goes on writing to a file nobody will open again: everything
/// acknowledged from then on would be lost at the next start. So the writer checks after
/// each commit, before it answers, and from the first time it is not the same file, every
/// commit fails
/// (messages get a reject, `/healthz` says why) until the receiver is restarted.
struct FileWatch {
    path: std::path::PathBuf,
    /// (device, inode) of the file this store opened and holds its lock on.
    identity: (u64, u64),
    lost: std::sync::atomic::AtomicBool,
}

impl FileWatch {
    fn new(path: &Path, opened: &std::fs::File) -> std::io::Result<FileWatch> {
        use std::os::unix::fs::MetadataExt;
        let metadata = opened.metadata()?;
        Ok(FileWatch {
            path: path.to_path_buf(),
            identity: (metadata.dev(), metadata.ino()),
            lost: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the file was found gone or replaced already: an atomic load, no `stat`.
    fn known_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Whether the file at the path is still the one opened; one `stat`. Only a missing
    /// file or another file in its place is final; another error (a transient I/O error)
    /// fails this check alone.
    fn intact(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.known_lost() {
            return false;
        }
        let gone = match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => return true,
            Ok(_) => true,
            Err(error) => error.kind() == std::io::ErrorKind::NotFound,
        };
        if !gone {
            return false;
        }
        if !self.lost.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "the database file was deleted or replaced; every message gets a reject until the receiver is restarted"
            );
        }
        false
    }
}

/// Why the store cannot store while its file is gone.
const FILE_LOST: &str = "the database file was deleted or replaced; restart the receiver";

#[derive(Default)]
struct Counters {
    health: HealthState,
    /// `None` for a read-only store.
    file: Option<FileWatch>,
    n_transactions: AtomicU64,
    n_failed_transactions: AtomicU64,
    n_stored: AtomicU64,
    n_duplicates: AtomicU64,
    n_repeated: AtomicU64,
    n_reused_control_ids: AtomicU64,
    /// Messages removed by purges (retention, `hl7-ihp purge`).
    n_purged: AtomicU64,
}

/// Work for the writer thread.
enum Request {
    Commit {
        rows: Vec<Row>,
        reply: oneshot::Sender<Result<Vec<Stored>, StoreError>>,
    },
    SetWatermark {
        name: String,
        id: i64,
        /// The exporter's name and its files' positions.
        files: Option<(String, Vec<(String, FilePosition)>)>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// One purge step, run as its own transaction between groups.
    Purge {
        request: crate::store::PurgeRequest,
        reply: oneshot::Sender<Result<crate::store::PurgeReport, StoreError>>,
    },
    /// Tests: the writer waits until the sender is dropped, so that batches pile up.
    #[cfg(test)]
    Hold(std::sync::mpsc::Receiver<()>),
    /// Tests: runs SQL on the writer's connection outside any transaction.
    #[cfg(test)]
    Exec {
        sql: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl Request {
    fn n_messages(&self) -> usize {
        match self {
            Request::Commit { rows, .. } => rows.len(),
            _ => 0,
        }
    }

    /// Whether it joins a group transaction (test controls run alone).
    fn is_write(&self) -> bool {
        matches!(self, Request::Commit { .. } | Request::SetWatermark { .. })
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file `path`, brings its schema up to date
    /// and starts the writer and checkpoint threads.
    ///
    /// A missing folder is created owner-only (0700) and the database file 0600; SQLite
    /// gives its WAL and shared-memory files the database file's permissions.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let data_dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| {
                StoreError::Database(format!(
                    "cannot create the data directory {}: {e}",
                    data_dir.display()
                ))
            })?;
        // Created here rather than by SQLite so that it is never readable by others, not
        // even for a moment.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", path.display())))?;
        // One writing store per database file, wherever it is (`--store` may put it outside
        // the data directory the receiver locks): two writers would each trust their own
        // memory of ids, patients and keys. An `flock` on the file itself is independent of
        // SQLite's own (POSIX) locks, and readers take none.
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(StoreError::Database(format!(
                "another receiver is writing to {}",
                path.display()
            )));
        }

        let writer_conn = open_writer_retrying(path)?;
        let tail = Arc::new(Mutex::new(load_tail(&writer_conn).map_err(database_error)?));
        let readers = ReaderPool::open(path)?;
        let checkpointer_conn = open_checkpointer(path)?;

        let watch = FileWatch::new(path, &file)
            .map_err(|e| StoreError::Database(format!("cannot read {}: {e}", path.display())))?;
        let counters = Arc::new(Counters {
            file: Some(watch),
            ..Counters::default()
        });
        let checkpoint = Arc::new(CheckpointSignal::default());
        let (requests, receiver) = mpsc::channel(options.queue_depth.max(1));
        let writer = Writer {
            conn: writer_conn,
            requests: receiver,
            dedupe: options.dedupe,
            max_batch: options.max_batch.max(1),
            state: WriterState::default(),
            tail: Arc::clone(&tail),
            n_transactions: 0,
            counters: Arc::clone(&counters),
            checkpoint: Arc::clone(&checkpoint),
            failures: FailureLog::default(),
            check_next: false,
            stale: None,
            unswept: 0,
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        // Owned by `inner` from here on, so that a failure below still stops the writer.
        let mut inner = Inner {
            requests: Some(requests),
            readers: Arc::new(readers),
            tail: Some(tail),
            counters,
            checkpoint,
            writer: Some(writer),
            checkpointer: None,
            _lock: Some(file),
        };
        let signal = Arc::clone(&inner.checkpoint);
        let checkpointer = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run_checkpointer(checkpointer_conn, &signal))
            .map_err(|e| {
                StoreError::Database(format!("cannot start the checkpoint thread: {e}"))
            })?;
        inner.checkpointer = Some(checkpointer);
        Ok(SqliteStore {
            inner: Arc::new(inner),
        })
    }

    /// The store behind a [`SqliteReader`]: no writer or checkpoint thread.
    fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.exists() {
            return Err(StoreError::Database(format!(
                "no database at {}",
                path.display()
            )));
        }
        let version = schema_version(&open_reader(path)?, database_error)?;
        let supported = MIGRATIONS.len() as i64;
        if version < supported {
            return Err(StoreError::Database(format!(
                "the database has schema version {version}; `hl7-ihp receive` upgrades it \
                 to {supported}"
            )));
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                requests: None,
                readers: Arc::new(ReaderPool::open(path)?),
                tail: None,
                counters: Arc::default(),
                checkpoint: Arc::default(),
                writer: None,
                checkpointer: None,
                _lock: None,
            }),
        })
    }

    async fn send(&self, request: Request) -> Result<(), StoreError> {
        let requests = self.inner.requests.as_ref().ok_or(StoreError::Closed)?;
        requests.send(request).await.map_err(|_| StoreError::Closed)
    }

    /// Runs `read` on a reader connection in one snapshot, off the async worker threads.
    async fn read<T, F>(&self, cost: Cost, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.inner.readers.read(cost, read).await
    }
}

impl StoreRead for SqliteStore {
    fn patients(&self) -> StoreFuture<'_, Vec<PatientSummary>> {
        let tail = self.inner.tail.clone();
        Box::pin(self.read(Cost::Slow, move |conn| read_patients(conn, tail.as_deref())))
    }

    fn patient_records<'a>(
        &'a self,
        key: &'a str,
        limit: Option<usize>,
    ) -> StoreFuture<'a, Option<PatientRecords>> {
        let key = key.to_owned();
        let tail = self.inner.tail.clone();
        Box::pin(self.read(Cost::Quick, move |conn| {
            read_patient_records(conn, tail.as_deref(), &key, limit)
        }))
    }

    fn device_records<'a>(
        &'a self,
        device: &'a str,
        limit: Option<usize>,
    ) -> StoreFuture<'a, Option<DeviceRecords>> {
        let device = device.to_owned();
        Box::pin(self.read(Cost::Quick, move |conn| {
            read_device_records(conn, &device, limit)
        }))
    }

    fn messages(&self, filter: MessageFilter) -> StoreFuture<'_, Vec<MessageSummary>> {
        let tail = self.inner.tail.clone();
        Box::pin(self.read(Cost::Slow, move |conn| {
            read_messages(conn, tail.as_deref(), &filter)
        }))
    }

    fn changes_since(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Changes> {
        Box::pin(self.read(Cost::Quick, move |conn| {
            read_changes_since(conn, after, limit)
        }))
    }

    fn export_watermark<'a>(&'a self, exporter: &'a str) -> StoreFuture<'a, ChangeCursor> {
        let name = format!("{EXPORT_WATERMARK_PREFIX}{exporter}");
        Box::pin(self.read(Cost::Quick, move |conn| {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
                row.get(0)
            })
            .optional()
            .map(|id| ChangeCursor::at(id.unwrap_or(0)))
        }))
    }

    fn export_files<'a>(
        &'a self,
        exporter: &'a str,
        keys: Option<Vec<String>>,
    ) -> StoreFuture<'a, HashMap<String, FilePosition>> {
        let exporter = exporter.to_owned();
        let cost = if keys.is_some() {
            Cost::Quick
        } else {
            Cost::Slow
        };
        Box::pin(self.read(cost, move |conn| {
            read_export_files(conn, &exporter, keys.as_deref())
        }))
    }

    fn feed(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Feed> {
        Box::pin(self.read(Cost::Quick, move |conn| read_feed(conn, after, limit)))
    }

    fn feed_head(&self) -> StoreFuture<'_, ChangeCursor> {
        Box::pin(self.read(Cost::Quick, read_feed_head))
    }

    fn device_feeds(
        &self,
        n_devices: usize,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Vec<FeedMessage>>> {
        Box::pin(self.read(Cost::Slow, move |conn| {
            read_device_feeds(conn, n_devices, limit)
        }))
    }

    fn patient_feed<'a>(
        &'a self,
        key: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<(PatientData, Vec<FeedMessage>)>> {
        let key = key.to_owned();
        let tail = self.inner.tail.clone();
        Box::pin(self.read(Cost::Quick, move |conn| {
            read_patient_feed(conn, tail.as_deref(), &key, limit)
        }))
    }

    fn observations<'a>(
        &'a self,
        key: &'a str,
        query: ObservationQuery,
    ) -> StoreFuture<'a, Option<Vec<ObservationRow>>> {
        let key = key.to_owned();
        let tail = self.inner.tail.clone();
        // Without filters, a page reads only its records; with them it may scan.
        let filtered = query.code.is_some() || query.since_ms.is_some() || query.until_ms.is_some();
        let cost = if filtered { Cost::Slow } else { Cost::Quick };
        Box::pin(self.read(cost, move |conn| {
            read_observations(conn, tail.as_deref(), &key, &query)
        }))
    }

    fn trends<'a>(
        &'a self,
        key: &'a str,
        query: TrendQuery,
    ) -> StoreFuture<'a, Option<Vec<TrendSeries>>> {
        let key = key.to_owned();
        let tail = self.inner.tail.clone();
        let readers = Arc::clone(&self.inner.readers);
        Box::pin(async move {
            readers
                .read_parallel(move |conn, helper| {
                    read_trends(conn, helper, tail.as_deref(), &key, &query)
                })
                .await
        })
    }

    fn message(&self, id: i64) -> StoreFuture<'_, Option<MessageDetail>> {
        Box::pin(self.read(Cost::Quick, move |conn| read_message(conn, id)))
    }

    fn alarms(&self, query: AlarmQuery) -> StoreFuture<'_, Vec<AlarmRow>> {
        Box::pin(self.read(Cost::Quick, move |conn| alarms::read_alarms(conn, &query)))
    }
}

impl Store for SqliteStore {
    fn commit(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<Stored>> {
        Box::pin(async move {
            if messages.is_empty() {
                return Ok(Vec::new());
            }
            // Prepared here, on the caller's thread; what is left of the messages is freed
            // here too, where it was allocated.
            let rows: Vec<Row> = messages.into_iter().map(Row::new).collect();
            let (reply, answer) = oneshot::channel();
            self.send(Request::Commit { rows, reply }).await?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn set_export_progress<'a>(
        &'a self,
        exporter: &'a str,
        cursor: ChangeCursor,
        files: Vec<(String, FilePosition)>,
    ) -> StoreFuture<'a, ()> {
        let name = format!("{EXPORT_WATERMARK_PREFIX}{exporter}");
        let files = (!files.is_empty()).then(|| (exporter.to_owned(), files));
        Box::pin(async move {
            // Through the writer: it joins the next group transaction instead of competing
            // with the writer for the database's write lock.
            let (reply, answer) = oneshot::channel();
            self.send(Request::SetWatermark {
                name,
                id: cursor.position(),
                files,
                reply,
            })
            .await?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn purge(
        &self,
        request: crate::store::PurgeRequest,
    ) -> StoreFuture<'_, crate::store::PurgeReport> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.send(Request::Purge { request, reply }).await?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn stats(&self) -> StoreStats {
        let counters = &self.inner.counters;
        StoreStats {
            n_transactions: counters.n_transactions.load(Ordering::Relaxed),
            n_failed_transactions: counters.n_failed_transactions.load(Ordering::Relaxed),
            n_stored: counters.n_stored.load(Ordering::Relaxed),
            n_duplicates: counters.n_duplicates.load(Ordering::Relaxed),
            n_repeated: counters.n_repeated.load(Ordering::Relaxed),
            n_reused_control_ids: counters.n_reused_control_ids.load(Ordering::Relaxed),
            n_purged: counters.n_purged.load(Ordering::Relaxed),
            n_key_races: 0,
        }
    }

    fn health(&self) -> Health {
        let counters = &self.inner.counters;
        if let Some(file) = &counters.file
            && !file.intact()
        {
            return Health::Failing {
                reason: FILE_LOST.into(),
            };
        }
        counters.health.current()
    }
}

/// A SQLite database opened only to read it, as the inspection commands do, also while a
/// receiver writes to it: no writer or checkpoint thread, no schema change, nothing
/// written. The schema must be this program's: an older one is upgraded by
/// `hl7-ihp receive`.
pub struct SqliteReader {
    store: SqliteStore,
}

impl SqliteReader {
    /// Opens the database file `path` to read it.
    pub fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        Ok(SqliteReader {
            store: SqliteStore::open_read_only(path)?,
        })
    }
}

impl StoreRead for SqliteReader {
    fn patients(&self) -> StoreFuture<'_, Vec<PatientSummary>> {
        self.store.patients()
    }

    fn patient_records<'a>(
        &'a self,
        key: &'a str,
        limit: Option<usize>,
    ) -> StoreFuture<'a, Option<PatientRecords>> {
        self.store.patient_records(key, limit)
    }

    fn messages(&self, filter: MessageFilter) -> StoreFuture<'_, Vec<MessageSummary>> {
        self.store.messages(filter)
    }

    fn device_records<'a>(
        &'a self,
        device: &'a str,
        limit: Option<usize>,
    ) -> StoreFuture<'a, Option<DeviceRecords>> {
        self.store.device_records(device, limit)
    }

    fn changes_since(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Changes> {
        self.store.changes_since(after, limit)
    }

    fn export_watermark<'a>(&'a self, exporter: &'a str) -> StoreFuture<'a, ChangeCursor> {
        self.store.export_watermark(exporter)
    }

    fn export_files<'a>(
        &'a self,
        exporter: &'a str,
        keys: Option<Vec<String>>,
    ) -> StoreFuture<'a, HashMap<String, FilePosition>> {
        self.store.export_files(exporter, keys)
    }

    fn feed(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Feed> {
        self.store.feed(after, limit)
    }

    fn feed_head(&self) -> StoreFuture<'_, ChangeCursor> {
        self.store.feed_head()
    }

    fn device_feeds(
        &self,
        n_devices: usize,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Vec<FeedMessage>>> {
        self.store.device_feeds(n_devices, limit)
    }

    fn patient_feed<'a>(
        &'a self,
        key: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<(PatientData, Vec<FeedMessage>)>> {
        self.store.patient_feed(key, limit)
    }

    fn observations<'a>(
        &'a self,
        key: &'a str,
        query: ObservationQuery,
    ) -> StoreFuture<'a, Option<Vec<ObservationRow>>> {
        self.store.observations(key, query)
    }

    fn trends<'a>(
        &'a self,
        key: &'a str,
        query: TrendQuery,
    ) -> StoreFuture<'a, Option<Vec<TrendSeries>>> {
        self.store.trends(key, query)
    }

    fn message(&self, id: i64) -> StoreFuture<'_, Option<MessageDetail>> {
        self.store.message(id)
    }

    fn alarms(&self, query: AlarmQuery) -> StoreFuture<'_, Vec<AlarmRow>> {
        self.store.alarms(query)
    }
}

fn database_error(error: rusqlite::Error) -> StoreError {
    // SQLite's messages name tables, columns and causes, never the values bound.
    StoreError::Database(error.to_string())
}

/// Locks the reader connection or the patient tail; a panic in another holder leaves
/// either usable (the connection itself, or a tail whose changes are single calls).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
