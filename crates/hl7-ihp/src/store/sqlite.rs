//! The SQLite store: one writer thread with group commit, a reader connection, and a
//! checkpoint thread that keeps WAL checkpoints off the ACK path (DESIGN.md §6).
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

use super::tail::{Entry, PatientTail};
use super::{
    MessageFilter, MessageKey, MessageSummary, NewMessage, ObservationData, ObservationRow,
    PatientData, PatientRecords, PatientSummary, Store, StoreError, StoreStats, Stored, Verdict,
};

/// The database file inside the data directory.
pub const DB_FILE_NAME: &str = "hl7-ihp.sqlite3";

/// One schema change: a script, then optionally code for what SQL cannot do.
struct Migration {
    sql: &'static str,
    then: Option<fn(&Connection) -> rusqlite::Result<()>>,
}

/// The schema migrations; the database's `user_version` is how many have been applied.
const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: include_str!("migrations/0001_schema.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0002_compact_rows.sql"),
        then: Some(fill_sent_ms),
    },
];

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

/// The reader's page cache, in KiB.
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
/// reuse a control id with other content (DESIGN.md §5). Only a metric: the duplicate
/// check itself looks at everything stored.
const RECENT_KEYS: usize = 65_536;

/// The `meta` row holding the exporter's progress.
const EXPORT_WATERMARK: &str = "export_watermark";

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
    /// Recognise retransmissions (DESIGN.md §5, `--dedupe on|off`).
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

/// The SQLite store; clones share one database, one writer and one reader.
///
/// Dropping the last clone waits until the writer has written the batches already queued.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only while dropping: closing the queue is what stops the writer.
    requests: Option<mpsc::Sender<Request>>,
    reader: Arc<Mutex<Connection>>,
    /// `None` in a read-only store: its readers find the messages after the patient
    /// watermark by a scan instead.
    tail: Option<Arc<Mutex<PatientTail>>>,
    counters: Arc<Counters>,
    checkpoint: Arc<CheckpointSignal>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer finishes the batches already queued, then sees the queue closed.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.checkpoint.shut_down();
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
    }
}

#[derive(Default)]
struct Counters {
    n_transactions: AtomicU64,
    n_failed_transactions: AtomicU64,
    n_stored: AtomicU64,
    n_duplicates: AtomicU64,
    n_reused_control_ids: AtomicU64,
}

/// Work for the writer thread.
enum Request {
    Commit {
        rows: Vec<Row>,
        reply: oneshot::Sender<Result<Vec<Stored>, StoreError>>,
    },
    SetWatermark {
        id: i64,
        reply: oneshot::Sender<Result<(), StoreError>>,
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
    /// Opens (creating if needed) `<data_dir>/hl7-ihp.sqlite3`, brings its schema up to date
    /// and starts the writer and checkpoint threads.
    ///
    /// The data directory is created owner-only (0700) and the database file 0600; SQLite
    /// gives its WAL and shared-memory files the database file's permissions.
    pub fn open(data_dir: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
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
        let path = data_dir.join(DB_FILE_NAME);
        // Created here rather than by SQLite so that it is never readable by others, not
        // even for a moment.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", path.display())))?;

        let writer_conn = open_writer_retrying(&path)?;
        let tail = Arc::new(Mutex::new(load_tail(&writer_conn).map_err(database_error)?));
        let reader = open_reader(&path)?;
        let checkpointer_conn = open_checkpointer(&path)?;

        let counters = Arc::new(Counters::default());
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
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        // Owned by `inner` from here on, so that a failure below still stops the writer.
        let mut inner = Inner {
            requests: Some(requests),
            reader: Arc::new(Mutex::new(reader)),
            tail: Some(tail),
            counters,
            checkpoint,
            writer: Some(writer),
            checkpointer: None,
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

    /// Opens `<data_dir>/hl7-ihp.sqlite3` only to read it, as the inspection commands do,
    /// also while a receiver writes to it: no writer or checkpoint thread, no schema change,
    /// nothing written. Writes answer [`StoreError::Closed`]. The schema must be this
    /// program's: an older one is upgraded by `hl7-ihp receive`.
    pub fn open_read_only(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = data_dir.join(DB_FILE_NAME);
        if !path.exists() {
            return Err(StoreError::Database(format!(
                "no database at {}",
                path.display()
            )));
        }
        let reader = open_reader(&path)?;
        let version = schema_version(&reader, database_error)?;
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
                reader: Arc::new(Mutex::new(reader)),
                tail: None,
                counters: Arc::default(),
                checkpoint: Arc::default(),
                writer: None,
                checkpointer: None,
            }),
        })
    }

    async fn send(&self, request: Request) -> Result<(), StoreError> {
        let requests = self.inner.requests.as_ref().ok_or(StoreError::Closed)?;
        requests.send(request).await.map_err(|_| StoreError::Closed)
    }

    /// Runs `read` on the reader connection, off the async worker threads.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let reader = Arc::clone(&self.inner.reader);
        tokio::task::spawn_blocking(move || {
            let conn = lock(&reader);
            // One snapshot for all the statements of a read.
            let snapshot = conn.unchecked_transaction().map_err(database_error)?;
            let value = read(&snapshot).map_err(database_error)?;
            snapshot.commit().map_err(database_error)?;
            Ok(value)
        })
        .await
        .map_err(|_| StoreError::Database("the reader task failed".into()))?
    }
}

impl Store for SqliteStore {
    async fn commit(&self, messages: Vec<NewMessage>) -> Result<Vec<Stored>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // Prepared here, on the caller's thread; what is left of the messages is freed here
        // too, where it was allocated.
        let rows: Vec<Row> = messages.into_iter().map(Row::new).collect();
        let (reply, answer) = oneshot::channel();
        self.send(Request::Commit { rows, reply }).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn patients(&self) -> Result<Vec<PatientSummary>, StoreError> {
        let tail = self.inner.tail.clone();
        self.read(move |conn| read_patients(conn, tail.as_deref()))
            .await
    }

    async fn patient_records(
        &self,
        key: &str,
        limit: Option<usize>,
    ) -> Result<Option<PatientRecords>, StoreError> {
        let key = key.to_owned();
        let tail = self.inner.tail.clone();
        self.read(move |conn| read_patient_records(conn, tail.as_deref(), &key, limit))
            .await
    }

    async fn messages(&self, filter: MessageFilter) -> Result<Vec<MessageSummary>, StoreError> {
        self.read(move |conn| read_messages(conn, &filter)).await
    }

    async fn patients_changed_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<String>, i64), StoreError> {
        self.read(move |conn| read_patients_changed_since(conn, after, limit))
            .await
    }

    async fn export_watermark(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT value FROM meta WHERE name = ?1",
                [EXPORT_WATERMARK],
                |row| row.get(0),
            )
            .optional()
            .map(|id| id.unwrap_or(0))
        })
        .await
    }

    async fn set_export_watermark(&self, id: i64) -> Result<(), StoreError> {
        // Through the writer: it joins the next group transaction instead of competing
        // with the writer for the database's write lock.
        let (reply, answer) = oneshot::channel();
        self.send(Request::SetWatermark { id, reply }).await?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn stats(&self) -> StoreStats {
        let counters = &self.inner.counters;
        StoreStats {
            n_transactions: counters.n_transactions.load(Ordering::Relaxed),
            n_failed_transactions: counters.n_failed_transactions.load(Ordering::Relaxed),
            n_stored: counters.n_stored.load(Ordering::Relaxed),
            n_duplicates: counters.n_duplicates.load(Ordering::Relaxed),
            n_reused_control_ids: counters.n_reused_control_ids.load(Ordering::Relaxed),
        }
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

// ---------------------------------------------------------------------------------------
// Opening and migrations

/// Opening sets WAL mode and migrates, steps in which SQLite answers "locked" at once,
/// without waiting, when another process is opening the same new database. A few bounded
/// retries let both open.
fn open_writer_retrying(path: &Path) -> Result<Connection, StoreError> {
    const ATTEMPTS: u32 = 50;
    let mut attempt = 1;
    loop {
        match open_writer(path) {
            Err(StoreError::Database(reason))
                if reason.contains("locked") && attempt < ATTEMPTS =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(database_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(database_error)?;
    schema_version(&conn, database_error)?;
    // Takes effect only on a database without tables, before WAL mode is set.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(database_error)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(database_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "the database refused WAL mode (journal mode {mode})"
        )));
    }
    // The bundled SQLite enforces foreign keys by default; that costs parent lookups and a
    // temporary table on every insert of the ACK path, and the single writer keeps the
    // references true by construction.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -{WRITER_CACHE_KIB};
         PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};
         PRAGMA temp_store = MEMORY;"
    ))
    .map_err(database_error)?;
    migrate(&conn)?;
    // Replaces SQLite's automatic checkpoint, which would run inside the writer's commit:
    // the checkpoint thread does it instead.
    conn.wal_hook(Some(note_wal_frames));
    Ok(conn)
}

/// Applies the migrations the database lacks. The version is read again under the write
/// lock, so two processes opening a new data directory at once (a receiver starting while
/// `hl7-ihp patients` runs) do not both create the schema.
/// The database's schema version (`PRAGMA user_version`); a version newer than this
/// program knows is refused, because using it could damage the database.
fn schema_version(
    conn: &Connection,
    on_error: impl Fn(rusqlite::Error) -> StoreError,
) -> Result<i64, StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(on_error)?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::NewerSchema {
            found: version,
            supported,
        });
    }
    Ok(version)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let failed = |e: rusqlite::Error| StoreError::Database(format!("schema migration failed: {e}"));
    conn.execute_batch("BEGIN IMMEDIATE").map_err(failed)?;
    let applied = (|| -> Result<(), StoreError> {
        let version = schema_version(conn, failed)?;
        for (n, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            // The schema change and its version number commit together or not at all.
            conn.execute_batch(migration.sql).map_err(failed)?;
            if let Some(then) = migration.then {
                then(conn).map_err(failed)?;
            }
            conn.pragma_update(None, "user_version", n as i64 + 1)
                .map_err(failed)?;
        }
        Ok(())
    })();
    match applied {
        Ok(()) => conn.execute_batch("COMMIT").map_err(failed),
        Err(error) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(error)
        }
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(database_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(database_error)?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{READER_CACHE_KIB};"))
        .map_err(database_error)?;
    Ok(conn)
}

fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(database_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(database_error)?;
    // The checkpoint syncs the WAL before copying it and the database after.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;")
        .map_err(database_error)?;
    Ok(conn)
}

// ---------------------------------------------------------------------------------------
// Checkpoints

thread_local! {
    /// WAL frames after the writer's last commit, set by SQLite's WAL hook on the writer
    /// thread (the hook is a plain function, so it cannot carry the store with it).
    static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
}

fn note_wal_frames(_wal: &rusqlite::hooks::Wal, n_frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(n_frames);
    Ok(())
}

/// The hand-over between the writer and the checkpoint thread.
///
/// A PASSIVE checkpoint never blocks the writer, but the WAL starts over from its beginning
/// only when a transaction begins with every frame already copied, and a busy writer always
/// begins its next transaction before another thread finishes copying. So the checkpoint
/// thread copies the bulk (repeating until it has caught up), and then the writer, between
/// two transactions, copies the few frames added since; its next transaction restarts the
/// WAL. The expensive part stays off the ACK path.
#[derive(Default)]
struct CheckpointSignal {
    state: Mutex<CheckpointState>,
    wake: Condvar,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Pass {
    #[default]
    Idle,
    Requested,
    Running,
    Done,
}

#[derive(Default)]
struct CheckpointState {
    pass: Pass,
    shutdown: bool,
}

impl CheckpointSignal {
    fn lock(&self) -> MutexGuard<'_, CheckpointState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer, after each transaction: returns true when the WAL is long and the
    /// checkpoint thread has copied nearly all of it, so the writer should copy the rest.
    fn after_commit(&self, n_frames: i32) -> bool {
        let long = n_frames >= CHECKPOINT_FRAMES;
        let mut state = self.lock();
        match (state.pass, long) {
            (Pass::Idle, true) => {
                state.pass = Pass::Requested;
                self.wake.notify_one();
                false
            }
            // Done and still long: the writer's turn. Done but short: the WAL started over
            // by itself, and a later pass must start afresh.
            (Pass::Done, long) => {
                state.pass = Pass::Idle;
                long
            }
            _ => false,
        }
    }

    fn shut_down(&self) {
        self.lock().shutdown = true;
        self.wake.notify_one();
    }

    /// The checkpoint thread: waits for a request; false at shutdown.
    fn wait(&self) -> bool {
        let mut state = self.lock();
        loop {
            if state.shutdown {
                return false;
            }
            if state.pass == Pass::Requested {
                state.pass = Pass::Running;
                return true;
            }
            state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn done(&self) {
        self.lock().pass = Pass::Done;
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what it can; returns the frames in the WAL.
fn checkpoint_passive(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}

fn run_checkpointer(conn: Connection, signal: &CheckpointSignal) {
    while signal.wait() {
        let mut previous = 0;
        loop {
            match checkpoint_passive(&conn) {
                // Caught up, or the WAL has started over meanwhile.
                Ok(n_frames) if n_frames - previous < CATCH_UP_FRAMES => break,
                Ok(n_frames) => previous = n_frames,
                Err(error) => {
                    tracing::warn!(%error, "store checkpoint failed");
                    break;
                }
            }
        }
        signal.done();
    }
}

// ---------------------------------------------------------------------------------------
// The writer

struct Writer {
    conn: Connection,
    requests: mpsc::Receiver<Request>,
    dedupe: bool,
    max_batch: usize,
    state: WriterState,
    /// Shared with the readers.
    tail: Arc<Mutex<PatientTail>>,
    n_transactions: u64,
    counters: Arc<Counters>,
    checkpoint: Arc<CheckpointSignal>,
}

/// What a transaction did to the patient tail: undone if it rolls back, completed (the
/// moved entries forgotten) once it commits.
#[derive(Default)]
struct TailChange {
    /// This transaction's entries, by patient.
    appended: Vec<(i64, Entry)>,
    /// Whether they were added to the shared tail, and `known_through` before.
    shared: Option<i64>,
    /// The entries moved into `patient_messages`: patient and last message id.
    moved: Vec<(i64, i64)>,
    /// The highest message id written (0: none).
    last_id: i64,
    /// Whether this transaction also does the occasional checks.
    check_age: bool,
    /// Whether this transaction moves everything waiting (at shutdown).
    move_all: bool,
}

/// What the writer remembers between transactions. All of it is a cache of the database
/// and is forgotten when a transaction fails.
#[derive(Default)]
struct WriterState {
    /// The next message id; read from the database when `None`.
    next_id: Option<i64>,
    patients: HashMap<String, CachedPatient>,
    recent_keys: RecentKeys,
    /// Loaded from the database when `None`.
    keys: Option<PendingKeys>,
}

/// Duplicate keys of stored messages not yet in `message_keys`: (sent_ms or [`NO_TIME`],
/// key hash, hash prefix, message id), in the table's order. Only the writer looks keys up.
#[derive(Default)]
struct PendingKeys {
    keys: BTreeSet<(i64, i64, i64, i64)>,
    /// The same keys in the order they were added (message ids grow), with when, and keys
    /// already moved until they reach the front: the lowest waiting id without a walk of
    /// `keys`, and the keys that waited too long.
    order: VecDeque<((i64, i64, i64, i64), Instant)>,
    /// The latest `sent_ms` seen.
    latest: i64,
    /// The highest message id this writer loaded or stored.
    known: i64,
}

impl PendingKeys {
    /// The keys after `key_index_through`: stored, but perhaps not yet in the table.
    fn load(conn: &Connection) -> rusqlite::Result<PendingKeys> {
        let through = meta_value(conn, KEY_INDEX_THROUGH)?;
        let mut pending = PendingKeys {
            keys: BTreeSet::new(),
            order: VecDeque::new(),
            latest: NO_TIME,
            known: conn.query_row(SELECT_NEXT_ID, [], |row| row.get::<_, i64>(0))? - 1,
        };
        let mut statement = conn.prepare(
            "SELECT id, sent_ms, key_hash, hash_prefix FROM messages \
             WHERE id > ?1 AND key_hash IS NOT NULL ORDER BY id",
        )?;
        let mut rows = statement.query([through])?;
        while let Some(row) = rows.next()? {
            let sent = row.get::<_, Option<i64>>(1)?.unwrap_or(NO_TIME);
            pending.add(
                (sent, row.get(2)?, row.get(3)?, row.get(0)?),
                Instant::now(),
            );
        }
        Ok(pending)
    }

    /// Adds a stored message's key; ids only grow.
    fn add(&mut self, (sent, key_hash, hash_prefix, message): (i64, i64, i64, i64), now: Instant) {
        let key = (sent, key_hash, hash_prefix, message);
        self.keys.insert(key);
        self.order.push_back((key, now));
        self.latest = self.latest.max(sent);
        self.known = self.known.max(message);
    }

    /// Ids of the waiting messages with this key.
    fn candidates(&self, sent: i64, key_hash: i64, hash_prefix: i64) -> Vec<i64> {
        self.keys
            .range(
                (sent, key_hash, hash_prefix, i64::MIN)..=(sent, key_hash, hash_prefix, i64::MAX),
            )
            .map(|key| key.3)
            .collect()
    }

    /// Takes the keys that are due to move (all of them when `all`), in the table's order:
    /// those without a time, those whose second is [`KEY_SETTLE_MS`] older than the newest,
    /// the earliest beyond [`MAX_PENDING_KEYS`], and those that waited [`KEY_MAX_WAIT`].
    fn take_settled(&mut self, all: bool, now: Instant) -> Vec<(i64, i64, i64, i64)> {
        let before = self.latest.saturating_sub(KEY_SETTLE_MS);
        let mut settled = Vec::new();
        while let Some(&first) = self.keys.first() {
            let due =
                all || first.0 == NO_TIME || first.0 < before || self.keys.len() > MAX_PENDING_KEYS;
            if !due {
                break;
            }
            settled.push(first);
            self.keys.pop_first();
        }
        while let Some(&(key, added)) = self.order.front() {
            if now.duration_since(added) < KEY_MAX_WAIT {
                break;
            }
            self.order.pop_front();
            if self.keys.remove(&key) {
                settled.push(key);
            }
        }
        settled.sort_unstable();
        settled
    }

    /// The lowest message id waiting.
    fn first_message(&mut self) -> Option<i64> {
        while let Some((key, _)) = self.order.front() {
            if self.keys.contains(key) {
                return Some(key.3);
            }
            self.order.pop_front();
        }
        None
    }
}

/// An integer from `meta`, 0 when absent.
fn meta_value(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// The key hashes of the last [`RECENT_KEYS`] accepted messages stored, with how often
/// each occurs among them.
#[derive(Default)]
struct RecentKeys {
    counts: HashMap<i64, u32>,
    order: VecDeque<i64>,
}

impl RecentKeys {
    /// Notes a stored message's key; true when a recent message had the same key (the
    /// 64-bit hash: two different keys agree on it about once in 10^14 pairs).
    fn note(&mut self, key_hash: i64) -> bool {
        let count = self.counts.entry(key_hash).or_insert(0);
        let known = *count > 0;
        *count += 1;
        self.order.push_back(key_hash);
        if self.order.len() > RECENT_KEYS
            && let Some(old) = self.order.pop_front()
            && let Some(count) = self.counts.get_mut(&old)
        {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&old);
            }
        }
        known
    }
}

/// A message as the writer stores it. [`Row::new`] runs in `commit`, on the caller's
/// thread: it encodes the observations, hashes the key and moves the rest, so that the
/// writer, the one serial step, only binds values.
struct Row {
    received_ms: i64,
    peer: String,
    key: Option<MessageKey>,
    /// Accepted messages with a key: the duplicate key's hash.
    key_hash: Option<i64>,
    hash: [u8; 32],
    verdict: Verdict,
    /// `MSH-9.1^MSH-9.2`, MSH-12 and PV1-3: kept for every outcome when extracted, because
    /// they help whoever inspects a reject.
    message_type: Option<String>,
    version: Option<String>,
    location: Option<String>,
    /// Accepted messages only.
    device: Option<String>,
    patient: Option<PatientData>,
    n_observations: i64,
    /// The observations as JSON (`observations` column), when there are any.
    observations: Option<String>,
    raw: Vec<u8>,
}

impl Row {
    fn new(message: NewMessage) -> Row {
        let accepted = message.verdict == Verdict::Accept;
        let key_hash = match (&message.key, accepted) {
            (Some(key), true) => Some(key_hash(key)),
            _ => None,
        };
        let mut row = Row {
            received_ms: message.received_at.as_millisecond(),
            peer: message.peer,
            key: message.key,
            key_hash,
            hash: message.hash,
            verdict: message.verdict,
            message_type: None,
            version: None,
            location: None,
            device: None,
            patient: None,
            n_observations: 0,
            observations: None,
            raw: message.raw,
        };
        if let Some(content) = message.content {
            row.message_type = Some(format!("{}^{}", content.message_type, content.trigger));
            row.version = Some(content.version);
            row.location = content.location;
            if accepted {
                row.device = Some(content.device);
                row.patient = content.patient;
                row.n_observations = content.observations.len() as i64;
                row.observations = encode_observations(&content.observations);
            }
        }
        row
    }
}

/// One observation in the `observations` column, in the order the migration documents.
type EncodedObservation<S> = (S, S, S, S, S, S, Option<f64>, S, S, S, S, S, S, i64, S);

fn encode_observations(observations: &[ObservationData]) -> Option<String> {
    if observations.is_empty() {
        return None;
    }
    let encoded: Vec<EncodedObservation<&str>> = observations
        .iter()
        .map(|o| {
            (
                o.value_type.as_str(),
                o.code.as_str(),
                o.code_text.as_str(),
                o.code_system.as_str(),
                o.sub_id.as_str(),
                o.value.as_str(),
                // JSON has no infinities; a value that overflowed a double is no number.
                o.numeric.filter(|n| n.is_finite()),
                o.units.as_str(),
                o.units_text.as_str(),
                o.reference_range.as_str(),
                o.abnormal_flags.as_str(),
                o.status.as_str(),
                o.observed_at.as_str(),
                o.observed_ms,
                o.equipment.as_str(),
            )
        })
        .collect();
    // Strings, numbers and arrays only: serializing cannot fail.
    Some(serde_json::to_string(&encoded).expect("observations serialize"))
}

/// The `observations` column back into observations, `index` from their order.
fn decode_observations(column: usize, text: &str) -> rusqlite::Result<Vec<ObservationData>> {
    let encoded: Vec<EncodedObservation<String>> = serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(encoded
        .into_iter()
        .enumerate()
        .map(|(index, o)| ObservationData {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            value_type: o.0,
            code: o.1,
            code_text: o.2,
            code_system: o.3,
            sub_id: o.4,
            value: o.5,
            numeric: o.6,
            units: o.7,
            units_text: o.8,
            reference_range: o.9,
            abnormal_flags: o.10,
            status: o.11,
            observed_at: o.12,
            observed_ms: o.13,
            equipment: o.14,
        })
        .collect())
}

/// Migration 2's step after its script: `sent_ms` of the accepted messages stored before,
/// from their MSH-7 as ingest computes it for new ones, then their keys.
fn fill_sent_ms(conn: &Connection) -> rusqlite::Result<()> {
    let mut select = conn.prepare("SELECT id, raw FROM messages WHERE key_hash IS NOT NULL")?;
    let mut update = conn.prepare("UPDATE messages SET sent_ms = ?2 WHERE id = ?1")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let raw = row.get_ref(1)?.as_blob()?;
        let sent_ms = hl7::parse(raw)
            .ok()
            .and_then(|message| hl7::extract::extract(&message).header.time)
            .and_then(|time| super::instant_ms(&time));
        if sent_ms.is_some() {
            update.execute(params![row.get::<_, i64>(0)?, sent_ms])?;
        }
    }
    conn.execute(
        "INSERT INTO message_keys (sent_ms, key_hash, hash_prefix, message) \
         SELECT coalesce(sent_ms, ?1), key_hash, hash_prefix, id FROM messages \
         WHERE key_hash IS NOT NULL ORDER BY 1, 2, 3, 4",
        [NO_TIME],
    )?;
    Ok(())
}

/// A patient row as stored.
struct CachedPatient {
    row: i64,
    fields: PatientFields,
}

#[derive(Clone, PartialEq, Eq)]
struct PatientFields {
    patient_id: String,
    assigning_authority: String,
    identifiers: String,
    name: String,
    birth_date: String,
    sex: String,
}

impl PatientFields {
    fn from_data(patient: &PatientData) -> Self {
        PatientFields {
            patient_id: patient.id.clone(),
            assigning_authority: patient.assigning_authority.clone(),
            identifiers: patient.identifiers.clone(),
            name: patient.name.clone(),
            birth_date: patient.birth_date.clone(),
            sex: patient.sex.clone(),
        }
    }

    /// Merges what a message says about the patient; true when something changed.
    ///
    /// An ADT message replaces every field it carries; a field it leaves empty keeps its
    /// value, because in HL7 an absent field means "no change", not "erase". Other messages
    /// only fill in fields that are still empty, so a device with stale demographics never
    /// overwrites what registration (ADT) said.
    fn merge(&mut self, patient: &PatientData) -> bool {
        let mut changed = false;
        let pairs = [
            (&mut self.patient_id, &patient.id),
            (&mut self.assigning_authority, &patient.assigning_authority),
            (&mut self.identifiers, &patient.identifiers),
            (&mut self.name, &patient.name),
            (&mut self.birth_date, &patient.birth_date),
            (&mut self.sex, &patient.sex),
        ];
        for (stored, new) in pairs {
            let take = !new.is_empty() && (stored.is_empty() || patient.is_update);
            if take && stored != new {
                stored.clone_from(new);
                changed = true;
            }
        }
        changed
    }
}

/// What a transaction did, counted once it has committed.
#[derive(Default)]
struct Tally {
    n_stored: u64,
    n_duplicates: u64,
    n_reused_control_ids: u64,
}

const SELECT_NEXT_ID: &str = "SELECT coalesce(max(id), 0) + 1 FROM messages";

const FIND_KEY: &str = "SELECT message FROM message_keys \
     WHERE sent_ms = ?1 AND key_hash = ?2 AND hash_prefix = ?3";

const MESSAGE_KEY: &str = "SELECT hash, sending_application, sending_facility, control_id \
     FROM messages WHERE id = ?1";

const INSERT_PATIENT_ENTRY: &str = "INSERT OR IGNORE INTO patient_messages \
     (patient, message, n_observations) VALUES (?1, ?2, ?3)";

const INSERT_KEY: &str = "INSERT OR IGNORE INTO message_keys \
     (sent_ms, key_hash, hash_prefix, message) VALUES (?1, ?2, ?3, ?4)";

const FIND_PATIENT: &str = "SELECT id, patient_id, assigning_authority, identifiers, name, \
     birth_date, sex FROM patients WHERE key = ?1";

const INSERT_PATIENT: &str = "INSERT INTO patients (key, patient_id, assigning_authority, \
     identifiers, name, birth_date, sex, created_ms, updated_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";

const UPDATE_PATIENT: &str = "UPDATE patients SET patient_id = ?2, assigning_authority = ?3, \
     identifiers = ?4, name = ?5, birth_date = ?6, sex = ?7, updated_ms = ?8 WHERE id = ?1";

const INSERT_MESSAGE: &str = "INSERT INTO messages (id, received_ms, peer, \
     sending_application, sending_facility, control_id, hash, outcome, reason, message_type, \
     version, location, device, patient, n_observations, sent_ms, key_hash, hash_prefix, \
     observations, raw) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20)";

const SET_META: &str = "INSERT INTO meta (name, value) VALUES (?1, ?2) \
     ON CONFLICT (name) DO UPDATE SET value = excluded.value";

/// The writer's statements, prepared once per transaction.
struct Statements<'c> {
    find_key: CachedStatement<'c>,
    message_key: CachedStatement<'c>,
    insert_key: CachedStatement<'c>,
    insert_patient_entry: CachedStatement<'c>,
    find_patient: CachedStatement<'c>,
    insert_patient: CachedStatement<'c>,
    update_patient: CachedStatement<'c>,
    insert_message: CachedStatement<'c>,
    set_meta: CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Statements {
            find_key: conn.prepare_cached(FIND_KEY)?,
            message_key: conn.prepare_cached(MESSAGE_KEY)?,
            insert_key: conn.prepare_cached(INSERT_KEY)?,
            insert_patient_entry: conn.prepare_cached(INSERT_PATIENT_ENTRY)?,
            find_patient: conn.prepare_cached(FIND_PATIENT)?,
            insert_patient: conn.prepare_cached(INSERT_PATIENT)?,
            update_patient: conn.prepare_cached(UPDATE_PATIENT)?,
            insert_message: conn.prepare_cached(INSERT_MESSAGE)?,
            set_meta: conn.prepare_cached(SET_META)?,
        })
    }
}

/// One request's answer from a successful transaction.
enum Done {
    Commit(Vec<Stored>),
    Watermark,
}

impl Writer {
    fn run(mut self) {
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(request) => request,
                None => match self.requests.blocking_recv() {
                    Some(request) => request,
                    None => {
                        // Shutting down: the whole tail into the table, so that the next
                        // start has nothing to load.
                        self.run_group(Vec::new(), 0, true);
                        return;
                    }
                },
            };
            if !first.is_write() {
                self.control(first);
                continue;
            }
            // Group commit: everything already waiting joins this transaction.
            let mut n_messages = first.n_messages();
            let mut group = vec![first];
            while n_messages < self.max_batch {
                let Ok(request) = self.requests.try_recv() else {
                    break;
                };
                if !request.is_write() {
                    carried = Some(request);
                    break;
                }
                n_messages += request.n_messages();
                group.push(request);
            }
            self.run_group(group, n_messages, false);
        }
    }

    /// One group transaction; `move_all` moves the whole patient tail into the table.
    fn run_group(&mut self, group: Vec<Request>, n_messages: usize, move_all: bool) {
        let mut tally = Tally::default();
        let mut change = TailChange::default();
        let result = self.transaction(&group, &mut tally, &mut change, move_all);
        self.n_transactions += 1;
        {
            let mut tail = lock(&self.tail);
            match (&result, change.shared) {
                (Ok(_), _) => {
                    let now = Instant::now();
                    for (patient, through) in &change.moved {
                        tail.forget(*patient, *through, now);
                    }
                }
                (Err(_), Some(known_through)) => {
                    let first = change.appended.iter().map(|(_, e)| e.message).min();
                    tail.roll_back(first.unwrap_or(i64::MAX), known_through);
                }
                (Err(_), None) => {}
            }
        }
        match result {
            Ok(done) => {
                let counters = &self.counters;
                counters.n_transactions.fetch_add(1, Ordering::Relaxed);
                counters
                    .n_stored
                    .fetch_add(tally.n_stored, Ordering::Relaxed);
                counters
                    .n_duplicates
                    .fetch_add(tally.n_duplicates, Ordering::Relaxed);
                counters
                    .n_reused_control_ids
                    .fetch_add(tally.n_reused_control_ids, Ordering::Relaxed);
                for (request, done) in group.into_iter().zip(done) {
                    match (request, done) {
                        (Request::Commit { reply, .. }, Done::Commit(stored)) => {
                            let _ = reply.send(Ok(stored));
                        }
                        (Request::SetWatermark { reply, .. }, Done::Watermark) => {
                            let _ = reply.send(Ok(()));
                        }
                        _ => unreachable!("answers follow the requests"),
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, n_messages, "store transaction failed");
                self.counters
                    .n_failed_transactions
                    .fetch_add(1, Ordering::Relaxed);
                // What the writer remembers may describe rows that were rolled back.
                self.state = WriterState::default();
                let message = error.to_string();
                for request in group {
                    let error = StoreError::Database(message.clone());
                    match request {
                        Request::Commit { reply, .. } => {
                            let _ = reply.send(Err(error));
                        }
                        Request::SetWatermark { reply, .. } => {
                            let _ = reply.send(Err(error));
                        }
                        #[cfg(test)]
                        Request::Hold(_) | Request::Exec { .. } => {}
                    }
                }
            }
        }
        if self.checkpoint.after_commit(WAL_FRAMES.get())
            && let Err(error) = checkpoint_passive(&self.conn)
        {
            tracing::warn!(%error, "store checkpoint failed");
        }
    }

    /// Writes a group in one transaction and commits it; on any error rolls it back.
    fn transaction(
        &mut self,
        group: &[Request],
        tally: &mut Tally,
        change: &mut TailChange,
        move_all: bool,
    ) -> rusqlite::Result<Vec<Done>> {
        // A rollback that failed last time left the connection inside that transaction.
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        change.check_age = move_all || self.n_transactions.is_multiple_of(AGE_CHECK_EVERY);
        change.move_all = move_all;
        let result = write_group(
            &self.conn,
            &mut self.state,
            &self.tail,
            self.dedupe,
            group,
            tally,
            change,
        )
        .and_then(|done| self.conn.execute_batch("COMMIT").map(|()| done));
        // SQLite rolls some failures back by itself (a full disk, an I/O error); the
        // connection must leave the transaction either way to be usable again.
        if result.is_err()
            && !self.conn.is_autocommit()
            && let Err(error) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(%error, "store rollback failed");
        }
        result
    }

    #[cfg(test)]
    fn control(&mut self, request: Request) {
        match request {
            Request::Hold(release) => {
                let _ = release.recv();
            }
            Request::Exec { sql, reply } => {
                let _ = reply.send(self.conn.execute_batch(&sql).map_err(database_error));
            }
            Request::Commit { .. } | Request::SetWatermark { .. } => {
                unreachable!("writes run in groups")
            }
        }
    }

    #[cfg(not(test))]
    fn control(&mut self, _request: Request) {
        unreachable!("only tests send control requests")
    }
}

fn write_group(
    conn: &Connection,
    state: &mut WriterState,
    tail: &Mutex<PatientTail>,
    dedupe: bool,
    group: &[Request],
    tally: &mut Tally,
    change: &mut TailChange,
) -> rusqlite::Result<Vec<Done>> {
    let mut statements = Statements::prepare(conn)?;
    let mut next = match state.next_id {
        Some(next) => next,
        None => conn.query_row(SELECT_NEXT_ID, [], |row| row.get(0))?,
    };
    let first = next;
    if state.keys.is_none() {
        state.keys = Some(PendingKeys::load(conn)?);
    }
    let mut done = Vec::with_capacity(group.len());
    for request in group {
        match request {
            Request::Commit { rows, .. } => {
                let mut stored = Vec::with_capacity(rows.len());
                for row in rows {
                    stored.push(write_message(
                        &mut statements,
                        state,
                        &mut next,
                        dedupe,
                        row,
                        tally,
                        change,
                    )?);
                }
                done.push(Done::Commit(stored));
            }
            Request::SetWatermark { id, .. } => {
                statements.set_meta.execute(params![EXPORT_WATERMARK, id])?;
                done.push(Done::Watermark);
            }
            #[cfg(test)]
            Request::Hold(_) | Request::Exec { .. } => unreachable!("controls run alone"),
        }
    }
    move_keys(&mut statements, state, change.check_age, change.move_all)?;
    // Only messages this transaction wrote: a transaction without any (the shutdown's)
    // must not claim that messages another process wrote meanwhile are in the tail.
    if next > first {
        change.last_id = next - 1;
    }
    move_patient_entries(&mut statements, tail, change)?;
    // Remembered only now: if the commit fails, the whole state is forgotten anyway.
    state.next_id = Some(next);
    Ok(done)
}

/// Adds a transaction's patient entries to the shared tail and moves the entries that are
/// due into `patient_messages`, inside the transaction. The entries join the tail before
/// the commit, so that a reader whose snapshot holds the messages also finds them there.
fn move_patient_entries(
    statements: &mut Statements<'_>,
    tail: &Mutex<PatientTail>,
    change: &mut TailChange,
) -> rusqlite::Result<()> {
    let (move_all, check_age) = (change.move_all, change.check_age);
    let now = Instant::now();
    let (due, through) = {
        let mut tail = lock(tail);
        change.shared = Some(tail.known_through());
        for (patient, entry) in &change.appended {
            tail.append(*patient, *entry, now);
        }
        tail.know_through(change.last_id);
        let due = tail.due(move_all, check_age, now);
        // Every message below the first one left in the tail is in the table after this.
        // Worked out now and then only (it looks at every patient): the next start loads
        // the tail from there, and an older value only loads more.
        let through = check_age.then(|| {
            tail.first_except(&due)
                .map_or(tail.known_through(), |first| first - 1)
        });
        if due.is_empty() && through.is_none() {
            return Ok(());
        }
        (due, through)
    };
    for (patient, entries) in &due {
        for entry in entries {
            statements.insert_patient_entry.execute(params![
                patient,
                entry.message,
                entry.n_observations
            ])?;
        }
        if let Some(last) = entries.last() {
            change.moved.push((*patient, last.message));
        }
    }
    if let Some(through) = through {
        statements
            .set_meta
            .execute(params![PATIENT_INDEX_THROUGH, through])?;
    }
    Ok(())
}

/// The tail when the store opens: the messages about patients after
/// `patient_index_through` (few, unless the last run stopped abruptly under load).
fn load_tail(conn: &Connection) -> rusqlite::Result<PatientTail> {
    // One snapshot: `known_through` must not pass a message the scan did not see.
    let snapshot = conn.unchecked_transaction()?;
    let tail = load_tail_in(&snapshot)?;
    snapshot.commit()?;
    Ok(tail)
}

fn load_tail_in(conn: &Connection) -> rusqlite::Result<PatientTail> {
    let through = meta_value(conn, PATIENT_INDEX_THROUGH)?;
    let mut tail = PatientTail::new(through);
    let now = Instant::now();
    let mut statement = conn.prepare(
        "SELECT id, patient, n_observations FROM messages \
         WHERE id > ?1 AND patient IS NOT NULL ORDER BY id",
    )?;
    let mut rows = statement.query([through])?;
    while let Some(row) = rows.next()? {
        let entry = Entry {
            message: row.get(0)?,
            n_observations: row.get(2)?,
        };
        tail.append(row.get(1)?, entry, now);
    }
    let last: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |row| {
        row.get(0)
    })?;
    tail.know_through(last);
    Ok(tail)
}

fn write_message(
    statements: &mut Statements<'_>,
    state: &mut WriterState,
    next_id: &mut i64,
    dedupe: bool,
    row: &Row,
    tally: &mut Tally,
    change: &mut TailChange,
) -> rusqlite::Result<Stored> {
    // Only accepted messages take part in the duplicate check: a rejected frame sent again
    // is judged again.
    let hash_prefix = hash_prefix(&row.hash);
    let sent = row.key.as_ref().and_then(|k| k.sent_ms).unwrap_or(NO_TIME);
    if let (Some(key_hash), Some(key)) = (row.key_hash, &row.key) {
        if dedupe
            && let Some(id) = find_duplicate(
                statements,
                state.keys.as_ref(),
                (sent, key_hash, hash_prefix),
                key,
                &row.hash,
            )?
        {
            tally.n_duplicates += 1;
            return Ok(Stored::Duplicate {
                id,
                verdict: Verdict::Accept,
            });
        }
        if dedupe && state.recent_keys.note(key_hash) {
            tally.n_reused_control_ids += 1;
        }
    }

    let patient = match &row.patient {
        Some(patient) => Some(patient_row(statements, state, patient, row.received_ms)?),
        None => None,
    };
    let id = *next_id;
    let key = row.key.as_ref();
    statements.insert_message.execute(params![
        id,
        row.received_ms,
        row.peer,
        key.map(|k| &k.sending_application),
        key.map(|k| &k.sending_facility),
        key.map(|k| &k.control_id),
        &row.hash[..],
        row.verdict.as_str(),
        row.verdict.reason(),
        row.message_type,
        row.version,
        row.location,
        row.device,
        patient,
        row.n_observations,
        row.key_hash.and(key.and_then(|k| k.sent_ms)),
        row.key_hash,
        row.key_hash.map(|_| hash_prefix),
        row.observations,
        row.raw,
    ])?;
    if let Some(patient) = patient {
        let entry = Entry {
            message: id,
            n_observations: row.n_observations,
        };
        change.appended.push((patient, entry));
    }
    if let (Some(key_hash), Some(keys)) = (row.key_hash, state.keys.as_mut()) {
        keys.add((sent, key_hash, hash_prefix, id), Instant::now());
    }
    *next_id += 1;
    tally.n_stored += 1;
    Ok(Stored::New { id })
}

/// The first accepted message with this key and these bytes, among the keys waiting in
/// memory and those in `message_keys`. Its MSH-7 is this one's (the bytes are), so the
/// lookup is filed there.
fn find_duplicate(
    statements: &mut Statements<'_>,
    pending: Option<&PendingKeys>,
    (sent, key_hash, hash_prefix): (i64, i64, i64),
    key: &MessageKey,
    hash: &[u8; 32],
) -> rusqlite::Result<Option<i64>> {
    let mut candidates =
        pending.map_or_else(Vec::new, |p| p.candidates(sent, key_hash, hash_prefix));
    let mut rows = statements
        .find_key
        .query(params![sent, key_hash, hash_prefix])?;
    while let Some(row) = rows.next()? {
        candidates.push(row.get(0)?);
    }
    candidates.sort_unstable();
    candidates.dedup();
    for id in candidates {
        let mut rows = statements.message_key.query([id])?;
        let Some(row) = rows.next()? else {
            continue;
        };
        // Anything else is another message with the same 64-bit hashes.
        if row.get_ref(0)?.as_blob()? == hash
            && row.get_ref(1)?.as_str()? == key.sending_application
            && row.get_ref(2)?.as_str()? == key.sending_facility
            && row.get_ref(3)?.as_str()? == key.control_id
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Moves the keys that settled into `message_keys`, in order, and now and then records
/// how far the table is complete (for the next start's load).
fn move_keys(
    statements: &mut Statements<'_>,
    state: &mut WriterState,
    record: bool,
    all: bool,
) -> rusqlite::Result<()> {
    let Some(keys) = state.keys.as_mut() else {
        return Ok(());
    };
    for (sent, key_hash, hash_prefix, message) in keys.take_settled(all, Instant::now()) {
        statements
            .insert_key
            .execute(params![sent, key_hash, hash_prefix, message])?;
    }
    if record {
        let through = keys.first_message().map_or(keys.known, |first| first - 1);
        statements
            .set_meta
            .execute(params![KEY_INDEX_THROUGH, through])?;
    }
    Ok(())
}

/// The patient's row id, creating or updating the row as [`PatientFields::merge`] says.
fn patient_row(
    statements: &mut Statements<'_>,
    state: &mut WriterState,
    patient: &PatientData,
    received_ms: i64,
) -> rusqlite::Result<i64> {
    if !state.patients.contains_key(&patient.key) {
        let found = statements
            .find_patient
            .query_row([&patient.key], |row| {
                Ok(CachedPatient {
                    row: row.get(0)?,
                    fields: PatientFields {
                        patient_id: row.get(1)?,
                        assigning_authority: row.get(2)?,
                        identifiers: row.get(3)?,
                        name: row.get(4)?,
                        birth_date: row.get(5)?,
                        sex: row.get(6)?,
                    },
                })
            })
            .optional()?;
        let cached = match found {
            Some(cached) => cached,
            None => {
                let fields = PatientFields::from_data(patient);
                let row = statements.insert_patient.insert(params![
                    patient.key,
                    fields.patient_id,
                    fields.assigning_authority,
                    fields.identifiers,
                    fields.name,
                    fields.birth_date,
                    fields.sex,
                    received_ms,
                ])?;
                CachedPatient { row, fields }
            }
        };
        if state.patients.len() >= PATIENT_CACHE_CAPACITY {
            state.patients.clear();
        }
        state.patients.insert(patient.key.clone(), cached);
    }
    let Some(cached) = state.patients.get_mut(&patient.key) else {
        unreachable!("inserted above");
    };
    if cached.fields.merge(patient) {
        let fields = &cached.fields;
        statements.update_patient.execute(params![
            cached.row,
            fields.patient_id,
            fields.assigning_authority,
            fields.identifiers,
            fields.name,
            fields.birth_date,
            fields.sex,
            received_ms,
        ])?;
    }
    Ok(cached.row)
}

fn key_hash(key: &MessageKey) -> i64 {
    let mut hasher = Sha256::new();
    for part in [
        &key.sending_application,
        &key.sending_facility,
        &key.control_id,
    ] {
        // Length-prefixed, so that no two keys feed the hash the same bytes.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hash_prefix(&hasher.finalize().into())
}

fn hash_prefix(hash: &[u8; 32]) -> i64 {
    let [a, b, c, d, e, f, g, h, ..] = *hash;
    i64::from_be_bytes([a, b, c, d, e, f, g, h])
}

// ---------------------------------------------------------------------------------------
// Readers

// The three queries of a patient's messages read the same columns, which
// [`push_records`] turns into records: id, control_id, received_ms, device, observations.

/// A tail entry's message.
const MESSAGE_BY_ID: &str = "SELECT m.id, m.control_id, m.received_ms, m.device, \
     m.observations FROM messages m WHERE m.id = ?1";

/// A patient's messages in `patient_messages` below an id, newest first.
const PATIENT_MESSAGES: &str = "SELECT m.id, m.control_id, m.received_ms, m.device, \
     m.observations FROM patient_messages pm JOIN messages m ON m.id = pm.message \
     WHERE pm.patient = ?1 AND pm.message < ?2 ORDER BY pm.message DESC";

/// A patient's messages written by another process (after the tail's `known_through`),
/// newest first: a range of the primary key, empty in the writing process.
const PATIENT_MESSAGES_BEYOND: &str = "SELECT m.id, m.control_id, m.received_ms, m.device, \
     m.observations FROM messages m WHERE m.id > ?1 AND m.patient = ?2 ORDER BY m.id DESC";

/// The messages after an id, with their patients (the primary key).
const CHANGED_SINCE: &str = "SELECT m.id, p.key FROM messages m \
     LEFT JOIN patients p ON p.id = m.patient WHERE m.id > ?1 ORDER BY m.id LIMIT ?2";

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default()
}

/// What a read knows of the patient tail: the entries it needs and `known_through`.
struct TailView<T> {
    entries: T,
    known_through: i64,
}

/// Starts the read's snapshot (with `start`, the read's first statement) while holding the
/// tail's lock, then copies what the read needs of the tail (`copy`): the writer adds
/// entries before its commit and forgets moved ones only after, under the same lock, so
/// every message of the snapshot is in the copy or the table (the copy may also hold
/// entries of a transaction the snapshot does not include; their rows are not found). A
/// read-only store has no tail: it reads the patient watermark in the same snapshot and
/// finds the messages after it by a scan.
fn with_snapshot<S, T: Default>(
    conn: &Connection,
    tail: Option<&Mutex<PatientTail>>,
    start: impl FnOnce() -> rusqlite::Result<S>,
    copy: impl FnOnce(&S, &PatientTail) -> T,
) -> rusqlite::Result<(S, TailView<T>)> {
    match tail {
        Some(tail) => {
            let guard = lock(tail);
            let value = start()?;
            let view = TailView {
                entries: copy(&value, &guard),
                known_through: guard.known_through(),
            };
            Ok((value, view))
        }
        None => {
            let value = start()?;
            let view = TailView {
                entries: T::default(),
                known_through: meta_value(conn, PATIENT_INDEX_THROUGH)?,
            };
            Ok((value, view))
        }
    }
}

fn read_patients(
    conn: &Connection,
    tail: Option<&Mutex<PatientTail>>,
) -> rusqlite::Result<Vec<PatientSummary>> {
    let start = || {
        // The snapshot's newest message first, so that tail entries of a transaction the
        // snapshot does not hold stay out of the counts.
        let newest: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |r| {
            r.get(0)
        })?;
        let mut statement =
            conn.prepare_cached("SELECT id, key, name FROM patients ORDER BY key")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        Ok((newest, rows.collect::<rusqlite::Result<Vec<_>>>()?))
    };
    let ((_, patients), view) =
        with_snapshot(conn, tail, start, |(newest, _), tail| tail.totals(*newest))?;
    let (totals, known_through) = (view.entries, view.known_through);

    // Written by another process: one range of the primary key.
    let mut beyond = HashMap::new();
    let mut statement = conn.prepare_cached(
        "SELECT patient, sum(n_observations), max(id) FROM messages \
         WHERE id > ?1 AND patient IS NOT NULL GROUP BY patient",
    )?;
    let mut rows = statement.query([known_through])?;
    while let Some(row) = rows.next()? {
        beyond.insert(
            row.get::<_, i64>(0)?,
            (row.get::<_, i64>(1)?, row.get::<_, i64>(2)?),
        );
    }
    // Index-only ranges of patient_messages: the listing reads every patient's entries,
    // which is fine for inspection and never on the ACK path.
    let mut indexed = conn.prepare_cached(
        "SELECT coalesce(sum(n_observations), 0), max(message) FROM patient_messages \
         WHERE patient = ?1 AND message < ?2",
    )?;
    let mut received = conn.prepare_cached("SELECT received_ms FROM messages WHERE id = ?1")?;
    let mut summaries = Vec::with_capacity(patients.len());
    for (row, key, name) in patients {
        let in_tail = totals.get(&row);
        let below = in_tail.map_or(known_through.saturating_add(1), |t| t.first);
        let (mut n_observations, mut last) = indexed.query_row(params![row, below], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })?;
        if let Some(t) = in_tail {
            n_observations += t.n_observations;
            last = Some(t.last);
        }
        if let Some((n, id)) = beyond.get(&row) {
            n_observations += n;
            last = Some(*id);
        }
        let last_received_at = match last {
            Some(id) => received
                .query_row([id], |r| r.get::<_, i64>(0))
                .optional()?
                .map(rfc3339)
                .unwrap_or_default(),
            None => String::new(),
        };
        summaries.push(PatientSummary {
            key,
            name,
            n_observations: n_observations.max(0) as u64,
            last_received_at,
        });
    }
    Ok(summaries)
}

fn read_patient_records(
    conn: &Connection,
    tail: Option<&Mutex<PatientTail>>,
    key: &str,
    limit: Option<usize>,
) -> rusqlite::Result<Option<PatientRecords>> {
    let start = || {
        conn.prepare_cached(
            "SELECT id, patient_id, assigning_authority, identifiers, name, birth_date, sex \
             FROM patients WHERE key = ?1",
        )?
        .query_row([key], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                PatientData {
                    key: key.to_owned(),
                    id: row.get(1)?,
                    assigning_authority: row.get(2)?,
                    identifiers: row.get(3)?,
                    name: row.get(4)?,
                    birth_date: row.get(5)?,
                    sex: row.get(6)?,
                    is_update: false,
                },
            ))
        })
        .optional()
    };
    let (found, view) = with_snapshot(conn, tail, start, |found, tail| {
        found
            .as_ref()
            .map(|(row, _)| tail.entries(*row))
            .unwrap_or_default()
    })?;
    let Some((patient_row, patient)) = found else {
        return Ok(None);
    };
    let (in_tail, known_through) = (view.entries, view.known_through);

    let limit = limit.unwrap_or(usize::MAX);
    let mut records = Vec::new();
    // Newest first: another process's messages, the tail, then the table below the tail;
    // each stops at the limit, so the cost is that of the records returned, not of the
    // patient's history.
    let mut beyond = conn.prepare_cached(PATIENT_MESSAGES_BEYOND)?;
    push_records(
        beyond.query(params![known_through, patient_row])?,
        limit,
        &mut records,
    )?;
    let mut by_id = conn.prepare_cached(MESSAGE_BY_ID)?;
    for entry in in_tail.iter().rev() {
        if records.len() >= limit {
            break;
        }
        // Absent when its transaction is not in this snapshot.
        push_records(by_id.query([entry.message])?, limit, &mut records)?;
    }
    let below = in_tail
        .first()
        .map_or(known_through.saturating_add(1), |e| e.message);
    let mut indexed = conn.prepare_cached(PATIENT_MESSAGES)?;
    push_records(
        indexed.query(params![patient_row, below])?,
        limit,
        &mut records,
    )?;
    Ok(Some(PatientRecords { patient, records }))
}

/// Adds the records of messages read by [`MESSAGE_BY_ID`], [`PATIENT_MESSAGES`] or
/// [`PATIENT_MESSAGES_BEYOND`], in order, up to `limit`.
fn push_records(
    mut rows: rusqlite::Rows<'_>,
    limit: usize,
    records: &mut Vec<ObservationRow>,
) -> rusqlite::Result<()> {
    while records.len() < limit {
        let Some(row) = rows.next()? else {
            break;
        };
        let Some(observations) = row.get_ref(4)?.as_str_or_null()? else {
            continue;
        };
        let message_id: i64 = row.get(0)?;
        let control_id: String = row.get::<_, Option<String>>(1)?.unwrap_or_default();
        let received_at = rfc3339(row.get(2)?);
        let device: String = row.get::<_, Option<String>>(3)?.unwrap_or_default();
        for observation in decode_observations(4, observations)? {
            if records.len() >= limit {
                break;
            }
            records.push(ObservationRow {
                observation,
                message_id,
                control_id: control_id.clone(),
                received_at: received_at.clone(),
                device: device.clone(),
            });
        }
    }
    Ok(())
}

fn read_messages(
    conn: &Connection,
    filter: &MessageFilter,
) -> rusqlite::Result<Vec<MessageSummary>> {
    let mut statement = conn.prepare_cached(
        "SELECT id, received_ms, peer, sending_application, sending_facility, control_id, \
           outcome, reason, CASE WHEN ?1 THEN raw END \
         FROM messages WHERE NOT ?2 OR outcome <> 'accepted' ORDER BY id DESC LIMIT ?3",
    )?;
    let limit = filter
        .limit
        .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let rows = statement.query_map(
        params![filter.with_raw, filter.rejected_only, limit],
        |row| {
            let application: Option<String> = row.get(3)?;
            let facility: Option<String> = row.get(4)?;
            Ok(MessageSummary {
                id: row.get(0)?,
                received_at: rfc3339(row.get(1)?),
                peer: row.get(2)?,
                sender: match (application, facility) {
                    (None, None) => String::new(),
                    (application, facility) => format!(
                        "{}|{}",
                        application.unwrap_or_default(),
                        facility.unwrap_or_default()
                    ),
                },
                control_id: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                outcome: row.get(6)?,
                reason: row.get(7)?,
                raw: row.get(8)?,
            })
        },
    )?;
    rows.collect()
}

fn read_patients_changed_since(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<(Vec<String>, i64)> {
    // A range of the messages table's primary key: the cost is that of the messages looked
    // at, however long the history before them.
    let mut statement = conn.prepare_cached(CHANGED_SINCE)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = statement.query(params![after, limit])?;
    let mut highest = after;
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        highest = row.get(0)?;
        if let Some(key) = row.get::<_, Option<String>>(1)?
            && seen.insert(key.clone())
        {
            keys.push(key);
        }
    }
    Ok((keys, highest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Content;

    fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(dir, SqliteOptions::default()).expect("open the store")
    }

    fn key(control_id: &str) -> MessageKey {
        MessageKey {
            sending_application: "DEV".into(),
            sending_facility: "FAC".into(),
            control_id: control_id.into(),
            sent_ms: Some(1_704_067_200_000),
        }
    }

    fn patient(key: &str, name: &str, is_update: bool) -> PatientData {
        PatientData {
            key: key.into(),
            id: key.into(),
            assigning_authority: "AUTH".into(),
            identifiers: format!("{key}^^^AUTH^MR"),
            name: name.into(),
            birth_date: "1970-01-01".into(),
            sex: "F".into(),
            is_update,
        }
    }

    fn observation(index: u32, value: &str) -> ObservationData {
        ObservationData {
            index,
            value_type: "NM".into(),
            code: "1554-5".into(),
            code_text: "GLUCOSE".into(),
            code_system: "LN".into(),
            sub_id: String::new(),
            value: value.into(),
            numeric: value.parse().ok(),
            units: "mg/dl".into(),
            units_text: String::new(),
            reference_range: "70_105".into(),
            abnormal_flags: "H".into(),
            status: "F".into(),
            observed_at: "2002-02-15T07:30:00".into(),
            observed_ms: 1_013_758_200_000 + i64::from(index),
            equipment: "0012345678ABCDEF".into(),
        }
    }

    /// An accepted ORU; `body` makes its bytes differ.
    fn oru(
        control_id: &str,
        patient: Option<PatientData>,
        values: &[&str],
        body: &str,
    ) -> NewMessage {
        let raw = format!("MSH|^~\\&|DEV|FAC|||20240101||ORU^R01|{control_id}|P|2.6\r{body}");
        NewMessage {
            received_at: jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap(),
            peer: "127.0.0.1:40000".into(),
            hash: Sha256::digest(raw.as_bytes()).into(),
            raw: raw.into_bytes(),
            key: Some(key(control_id)),
            verdict: Verdict::Accept,
            content: Some(Content {
                message_type: "ORU".into(),
                trigger: "R01".into(),
                version: "2.6".into(),
                patient,
                device: "DEV".into(),
                location: Some("ICU^1".into()),
                observations: values
                    .iter()
                    .enumerate()
                    .map(|(n, value)| observation(n as u32, value))
                    .collect(),
            }),
        }
    }

    fn rejected(control_id: &str, body: &str) -> NewMessage {
        let mut message = oru(control_id, Some(patient("P1", "EVE", false)), &["1"], body);
        message.verdict = Verdict::Reject {
            reason: "message type not allowed".into(),
        };
        message
    }

    fn new_id(stored: &Stored) -> i64 {
        match stored {
            Stored::New { id } => *id,
            Stored::Duplicate { .. } => panic!("expected a new message, got {stored:?}"),
        }
    }

    fn sql(dir: &Path) -> Connection {
        Connection::open(dir.join(DB_FILE_NAME)).unwrap()
    }

    fn count(conn: &Connection, query: &str) -> i64 {
        conn.query_row(query, [], |row| row.get(0)).unwrap()
    }

    /// Commits each message as its own batch while the writer is held, waits until every
    /// batch is queued behind it, then lets the writer go and waits for all of them.
    async fn commit_behind_a_held_writer(store: &SqliteStore, messages: Vec<NewMessage>) {
        let (release, held) = std::sync::mpsc::channel();
        store.send(Request::Hold(held)).await.unwrap();
        let n = messages.len();
        let tasks: Vec<_> = messages
            .into_iter()
            .map(|message| {
                let store = store.clone();
                tokio::spawn(async move { store.commit(vec![message]).await })
            })
            .collect();
        let requests = store.inner.requests.clone().unwrap();
        tokio::time::timeout(Duration::from_secs(60), async {
            while requests.max_capacity() - requests.capacity() < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the batches are queued");
        drop(release);
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    /// Runs SQL on the writer's connection, between transactions.
    async fn exec(store: &SqliteStore, sql: &str) {
        let (reply, answer) = oneshot::channel();
        store
            .send(Request::Exec {
                sql: sql.into(),
                reply,
            })
            .await
            .unwrap();
        answer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn commit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let message = oru(
            "1",
            Some(patient("P1", "EVE EVERYWOMAN", false)),
            &["184", "90"],
            "",
        );
        let stored = store.commit(vec![message.clone()]).await.unwrap();
        let id = new_id(&stored[0]);

        let records = store.patient_records("P1", None).await.unwrap().unwrap();
        assert_eq!(records.patient, patient("P1", "EVE EVERYWOMAN", false));
        assert_eq!(records.records.len(), 2);
        let first = &records.records[0];
        assert_eq!(first.observation, observation(0, "184"));
        assert_eq!(records.records[1].observation, observation(1, "90"));
        assert_eq!(first.message_id, id);
        assert_eq!(first.control_id, "1");
        assert_eq!(first.device, "DEV");
        assert_eq!(first.received_at, "2023-11-14T22:13:20.123Z");

        let patients = store.patients().await.unwrap();
        assert_eq!(
            patients,
            vec![PatientSummary {
                key: "P1".into(),
                name: "EVE EVERYWOMAN".into(),
                n_observations: 2,
                last_received_at: "2023-11-14T22:13:20.123Z".into(),
            }]
        );

        let messages = store
            .messages(MessageFilter {
                with_raw: true,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].id, id);
        assert_eq!(messages[0].sender, "DEV|FAC");
        assert_eq!(messages[0].outcome, "accepted");
        assert_eq!(messages[0].raw.as_deref(), Some(&message.raw[..]));
        assert!(
            store
                .patient_records("nobody", None)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_committers_are_each_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut tasks = Vec::new();
        for task in 0..32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..20 {
                    let control_id = format!("{task}-{n}");
                    let who = patient(&format!("P{}", task % 5), "EVE", false);
                    let message = oru(&control_id, Some(who), &["1", "2"], "");
                    let stored = store.commit(vec![message]).await.unwrap();
                    ids.push(new_id(&stored[0]));
                }
                ids
            }));
        }
        let mut ids = HashSet::new();
        for task in tasks {
            for id in task.await.unwrap() {
                assert!(ids.insert(id), "id {id} given twice");
            }
        }
        assert_eq!(ids.len(), 640);
        let conn = sql(dir.path());
        assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 640);
        assert_eq!(count(&conn, "SELECT count(*) FROM observations"), 1280);
        assert_eq!(count(&conn, "SELECT count(*) FROM patients"), 5);
        let stats = store.stats();
        assert_eq!(stats.n_stored, 640);
        assert!(stats.n_transactions <= 640);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_batches_share_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let messages = (0..64)
            .map(|n| {
                oru(
                    &n.to_string(),
                    Some(patient("P1", "EVE", false)),
                    &["1"],
                    "",
                )
            })
            .collect();
        let before = store.stats().n_transactions;
        commit_behind_a_held_writer(&store, messages).await;
        assert_eq!(store.stats().n_transactions, before + 1);
        assert_eq!(store.stats().n_stored, 64);
    }

    #[tokio::test]
    async fn retransmissions_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let who = || Some(patient("P1", "EVE", false));
        let first = new_id(
            &store
                .commit(vec![oru("1", who(), &["1"], "")])
                .await
                .unwrap()[0],
        );

        // Same key, same bytes: answered like the first, not stored again.
        let again = store
            .commit(vec![oru("1", who(), &["1"], "")])
            .await
            .unwrap();
        let duplicate = Stored::Duplicate {
            id: first,
            verdict: Verdict::Accept,
        };
        assert_eq!(again, vec![duplicate.clone()]);

        // Within one batch too.
        let batch = store
            .commit(vec![
                oru("2", who(), &["1"], ""),
                oru("2", who(), &["1"], ""),
            ])
            .await
            .unwrap();
        let second = new_id(&batch[0]);
        assert_eq!(
            batch[1],
            Stored::Duplicate {
                id: second,
                verdict: Verdict::Accept
            }
        );
        assert_eq!(store.stats().n_reused_control_ids, 0);

        // Same key, other bytes: a sender reusing control ids; stored and counted.
        let reused = store
            .commit(vec![oru("1", who(), &["1"], "OBX|x\r")])
            .await
            .unwrap();
        assert!(new_id(&reused[0]) > second);
        let stats = store.stats();
        assert_eq!(stats.n_reused_control_ids, 1);
        assert_eq!(stats.n_duplicates, 2);
        assert_eq!(stats.n_stored, 3);
        // The first copy is still the one a retransmission is matched with.
        let again = store
            .commit(vec![oru("1", who(), &["1"], "")])
            .await
            .unwrap();
        assert_eq!(again, vec![duplicate]);

        let conn = sql(dir.path());
        assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 3);
        assert_eq!(count(&conn, "SELECT count(*) FROM observations"), 3);
    }

    #[tokio::test]
    async fn rejected_messages_are_kept_but_never_matched() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let stored = store
            .commit(vec![rejected("1", ""), rejected("1", "")])
            .await
            .unwrap();
        new_id(&stored[0]);
        new_id(&stored[1]);
        // An accepted message with the key and bytes of a rejected one is new.
        let accepted = store
            .commit(vec![oru(
                "1",
                Some(patient("P1", "EVE", false)),
                &["1"],
                "",
            )])
            .await
            .unwrap();
        new_id(&accepted[0]);
        // And a reject is never a duplicate of an accepted message.
        new_id(&store.commit(vec![rejected("1", "")]).await.unwrap()[0]);

        let conn = sql(dir.path());
        assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 4);
        // Rejects make no patient or observation rows.
        assert_eq!(count(&conn, "SELECT count(*) FROM observations"), 1);
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM messages WHERE patient IS NOT NULL"
            ),
            1
        );
        let rejects = store
            .messages(MessageFilter {
                rejected_only: true,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(rejects.len(), 3);
        assert!(rejects.iter().all(|m| m.outcome == "rejected"
            && m.reason.as_deref() == Some("message type not allowed")
            && m.raw.is_none()));
    }

    #[tokio::test]
    async fn without_dedupe_every_frame_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            dedupe: false,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(dir.path(), options).unwrap();
        let message = oru("1", Some(patient("P1", "EVE", false)), &["1"], "");
        let stored = store
            .commit(vec![message.clone(), message.clone()])
            .await
            .unwrap();
        assert_ne!(new_id(&stored[0]), new_id(&stored[1]));
        new_id(&store.commit(vec![message]).await.unwrap()[0]);
        assert_eq!(store.stats().n_stored, 3);
        assert_eq!(store.stats().n_duplicates, 0);
    }

    #[tokio::test]
    async fn adt_updates_the_patient_and_other_messages_only_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut first = patient("P1", "", false);
        first.sex = String::new();
        store
            .commit(vec![oru("1", Some(first), &[], "")])
            .await
            .unwrap();
        // An ORU fills in what is missing and changes nothing else.
        let mut fill = patient("P1", "EVE", false);
        fill.birth_date = "1999-09-09".into();
        store
            .commit(vec![oru("2", Some(fill), &[], "")])
            .await
            .unwrap();
        let stored = store
            .patient_records("P1", None)
            .await
            .unwrap()
            .unwrap()
            .patient;
        assert_eq!(stored.name, "EVE");
        assert_eq!(stored.sex, "F");
        assert_eq!(stored.birth_date, "1970-01-01");

        // An ADT replaces what it carries, and keeps what it leaves empty.
        let mut adt = patient("P1", "EVE EVERYWOMAN", true);
        adt.sex = String::new();
        adt.birth_date = "1971-02-03".into();
        let mut message = oru("3", Some(adt), &[], "");
        message.content.as_mut().unwrap().message_type = "ADT".into();
        store.commit(vec![message]).await.unwrap();
        let stored = store
            .patient_records("P1", None)
            .await
            .unwrap()
            .unwrap()
            .patient;
        assert_eq!(stored.name, "EVE EVERYWOMAN");
        assert_eq!(stored.birth_date, "1971-02-03");
        assert_eq!(stored.sex, "F");

        // After a restart (the writer's memory is empty) the same rules hold.
        drop(store);
        let store = open(dir.path());
        store
            .commit(vec![oru(
                "4",
                Some(patient("P1", "SOMEONE ELSE", false)),
                &[],
                "",
            )])
            .await
            .unwrap();
        let stored = store
            .patient_records("P1", None)
            .await
            .unwrap()
            .unwrap()
            .patient;
        assert_eq!(stored.name, "EVE EVERYWOMAN");
        assert_eq!(count(&sql(dir.path()), "SELECT count(*) FROM patients"), 1);
    }

    #[tokio::test]
    async fn observations_without_a_patient_belong_to_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let stored = store
            .commit(vec![oru("1", None, &["5", "6"], "")])
            .await
            .unwrap();
        let id = new_id(&stored[0]);
        assert!(store.patients().await.unwrap().is_empty());
        let conn = sql(dir.path());
        let device: String = conn
            .query_row(
                "SELECT device FROM messages WHERE id = ?1 AND patient IS NULL",
                [id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(device, "DEV");
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM observations WHERE patient IS NULL AND message = 1"
            ),
            2
        );
        // The device's time series is indexed.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE device = 'DEV' AND patient IS NULL",
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("messages_by_device"), "{plan}");
        let (keys, highest) = store.patients_changed_since(0, 10).await.unwrap();
        assert!(keys.is_empty());
        assert_eq!(highest, id);
    }

    #[tokio::test]
    async fn patient_records_are_newest_first_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let who = || Some(patient("P1", "EVE", false));
        let mut ids = Vec::new();
        for (n, values) in [["a1", "a2", "a3"], ["b1", "b2", "b3"], ["c1", "c2", "c3"]]
            .iter()
            .enumerate()
        {
            let stored = store
                .commit(vec![
                    oru(&n.to_string(), who(), values, ""),
                    oru(
                        &format!("other{n}"),
                        Some(patient("P2", "ADAM", false)),
                        &["x"],
                        "",
                    ),
                ])
                .await
                .unwrap();
            ids.push(new_id(&stored[0]));
        }
        let records = store
            .patient_records("P1", Some(5))
            .await
            .unwrap()
            .unwrap()
            .records;
        let got: Vec<_> = records
            .iter()
            .map(|r| (r.message_id, r.observation.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (ids[2], "c1"),
                (ids[2], "c2"),
                (ids[2], "c3"),
                (ids[1], "b1"),
                (ids[1], "b2")
            ]
        );
        let all = store
            .patient_records("P1", None)
            .await
            .unwrap()
            .unwrap()
            .records;
        assert_eq!(all.len(), 9);
        assert_eq!(all[8].observation.value, "a3");
        let none = store.patient_records("P1", Some(0)).await.unwrap().unwrap();
        assert!(none.records.is_empty());
        let summaries = store.patients().await.unwrap();
        assert_eq!(summaries.len(), 2);
        assert_eq!(
            (summaries[0].key.as_str(), summaries[0].n_observations),
            ("P1", 9)
        );
        assert_eq!(
            (summaries[1].key.as_str(), summaries[1].n_observations),
            ("P2", 3)
        );
    }

    #[tokio::test]
    async fn messages_are_listed_newest_first_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut unreadable = rejected("", "junk");
        unreadable.key = None;
        unreadable.content = None;
        let mut error = oru("3", None, &[], "");
        error.verdict = Verdict::Error {
            reason: "MSH-9 missing".into(),
        };
        store
            .commit(vec![
                oru("1", None, &[], ""),
                rejected("2", ""),
                error,
                unreadable,
            ])
            .await
            .unwrap();
        let all = store.messages(MessageFilter::default()).await.unwrap();
        let ids: Vec<_> = all.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![4, 3, 2, 1]);
        assert!(all.iter().all(|m| m.raw.is_none()));
        assert_eq!(
            (all[0].sender.as_str(), all[0].control_id.as_str()),
            ("", "")
        );
        assert_eq!(all[1].outcome, "error");
        assert_eq!(all[1].reason.as_deref(), Some("MSH-9 missing"));
        assert_eq!(all[3].reason, None);
        let limited = store
            .messages(MessageFilter {
                limit: Some(2),
                with_raw: true,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(limited.len(), 2);
        assert!(limited[1].raw.as_deref().unwrap().starts_with(b"MSH|"));
        let rejects = store
            .messages(MessageFilter {
                rejected_only: true,
                limit: Some(1),
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(rejects.len(), 1);
        assert_eq!(rejects[0].id, 4);
        let rejects = store
            .messages(MessageFilter {
                rejected_only: true,
                ..MessageFilter::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = rejects.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![4, 3, 2]);
    }

    #[tokio::test]
    async fn a_reopened_store_finds_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let message = oru("1", Some(patient("P1", "EVE", false)), &["1", "2"], "");
        let first = new_id(&store.commit(vec![message.clone()]).await.unwrap()[0]);
        store.set_export_watermark(first).await.unwrap();
        drop(store);

        let store = open(dir.path());
        assert_eq!(store.export_watermark().await.unwrap(), first);
        let records = store.patient_records("P1", None).await.unwrap().unwrap();
        assert_eq!(records.records.len(), 2);
        // Retransmissions are recognised across restarts, and ids keep increasing.
        assert_eq!(
            store.commit(vec![message]).await.unwrap(),
            vec![Stored::Duplicate {
                id: first,
                verdict: Verdict::Accept
            }]
        );
        let next = oru("2", Some(patient("P1", "EVE", false)), &["3"], "");
        let second = new_id(&store.commit(vec![next]).await.unwrap()[0]);
        assert!(second > first);
        let records = store.patient_records("P1", None).await.unwrap().unwrap();
        assert_eq!(records.records[0].observation.value, "3");
        assert_eq!(records.records.len(), 3);
    }

    #[test]
    fn pending_keys_move_by_their_second_without_a_time_at_once_and_after_the_longest_wait() {
        let start = Instant::now();
        let mut keys = PendingKeys {
            latest: NO_TIME,
            ..PendingKeys::default()
        };
        keys.add((NO_TIME, 5, 0, 1), start);
        keys.add((1_000_000, 9, 0, 2), start);
        keys.add((1_000_500, 3, 0, 3), start);
        assert_eq!(keys.take_settled(false, start), [(NO_TIME, 5, 0, 1)]);
        // A device whose clock runs far ahead makes every earlier second settle ...
        keys.add((9_000_000_000, 1, 0, 4), start);
        assert_eq!(
            keys.take_settled(false, start),
            [(1_000_000, 9, 0, 2), (1_000_500, 3, 0, 3)]
        );
        assert_eq!(keys.first_message(), Some(4));
        // ... and its own key moves once it has waited long enough.
        assert!(
            keys.take_settled(false, start + KEY_MAX_WAIT / 2)
                .is_empty()
        );
        assert_eq!(
            keys.take_settled(false, start + KEY_MAX_WAIT),
            [(9_000_000_000, 1, 0, 4)]
        );
        assert_eq!(keys.first_message(), None);
        assert!(keys.order.is_empty());
    }

    #[tokio::test]
    async fn retransmissions_are_found_while_their_keys_wait_and_after_they_moved() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let duplicate_of = |id| {
            vec![Stored::Duplicate {
                id,
                verdict: Verdict::Accept,
            }]
        };
        let first = oru("A", None, &["1"], "");
        let a = new_id(&store.commit(vec![first.clone()]).await.unwrap()[0]);
        assert_eq!(
            store.commit(vec![first.clone()]).await.unwrap(),
            duplicate_of(a)
        );
        let keys = |dir: &Path| count(&sql(dir), "SELECT count(*) FROM message_keys");
        assert_eq!(
            keys(dir.path()),
            0,
            "a key waits while its second is recent"
        );

        // A message sent ten seconds later settles the first one's second.
        let mut later = oru("B", None, &["2"], "");
        later.key.as_mut().unwrap().sent_ms = Some(1_704_067_210_000);
        let b = new_id(&store.commit(vec![later.clone()]).await.unwrap()[0]);
        assert_eq!(keys(dir.path()), 1);
        assert_eq!(
            store.commit(vec![first.clone()]).await.unwrap(),
            duplicate_of(a)
        );
        drop(store);
        assert_eq!(keys(dir.path()), 2, "stopping moves every key");

        // A stop that left keys waiting: the next start finds them in the messages.
        sql(dir.path())
            .execute_batch(
                "DELETE FROM message_keys; \
                 UPDATE meta SET value = 0 WHERE name = 'key_index_through';",
            )
            .unwrap();
        let store = open(dir.path());
        assert_eq!(store.commit(vec![first]).await.unwrap(), duplicate_of(a));
        assert_eq!(store.commit(vec![later]).await.unwrap(), duplicate_of(b));
    }

    /// Message ids of a patient's records, newest first, each message once.
    async fn record_messages(store: &SqliteStore, key: &str) -> Vec<i64> {
        let records = store.patient_records(key, None).await.unwrap().unwrap();
        let mut ids: Vec<i64> = records.records.iter().map(|r| r.message_id).collect();
        assert!(ids.windows(2).all(|w| w[0] >= w[1]), "{ids:?}");
        ids.dedup();
        ids
    }

    #[tokio::test]
    async fn records_come_from_the_tail_and_the_table_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut ids = Vec::new();
        // Enough for P1's entries to move into the table twice, P2's to stay in the tail.
        for n in 0..(2 * super::super::tail::FLUSH_ENTRIES + 5) {
            let message = oru(
                &n.to_string(),
                Some(patient("P1", "EVE", false)),
                &["1", "2"],
                "",
            );
            ids.push(new_id(&store.commit(vec![message]).await.unwrap()[0]));
            if n % 10 == 0 {
                let other = oru(
                    &format!("o{n}"),
                    Some(patient("P2", "ADA", false)),
                    &["9"],
                    "",
                );
                store.commit(vec![other]).await.unwrap();
            }
        }
        ids.reverse();
        let moved = count(
            &sql(dir.path()),
            "SELECT count(*) FROM patient_messages WHERE patient = 1",
        );
        assert_eq!(moved, 2 * super::super::tail::FLUSH_ENTRIES as i64);
        assert_eq!(record_messages(&store, "P1").await, ids);
        let limited = store.patient_records("P1", Some(5)).await.unwrap().unwrap();
        assert_eq!(limited.records.len(), 5);
        assert_eq!(limited.records[0].message_id, ids[0]);
        let summaries = store.patients().await.unwrap();
        assert_eq!(summaries[0].n_observations, 2 * ids.len() as u64);
        assert_eq!(summaries[1].n_observations, 4);

        // Stopping moves the whole tail into the table; a restart finds the same.
        drop(store);
        assert_eq!(
            count(&sql(dir.path()), "SELECT count(*) FROM patient_messages"),
            ids.len() as i64 + 4
        );
        let store = open(dir.path());
        assert_eq!(record_messages(&store, "P1").await, ids);
        assert_eq!(store.patients().await.unwrap(), summaries);
    }

    #[tokio::test]
    async fn another_process_sees_what_was_written_after_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let writer = open(dir.path());
        let first = oru("1", Some(patient("P1", "EVE", false)), &["1"], "");
        writer.commit(vec![first]).await.unwrap();
        // Like `hl7-ihp show` while a receiver runs: a read-only store over the database,
        // and (as a second receiver would be) a full one.
        let inspector = SqliteStore::open_read_only(dir.path()).unwrap();
        let other = open(dir.path());
        for n in 2..=40 {
            let message = oru(
                &n.to_string(),
                Some(patient("P1", "EVE", false)),
                &["1"],
                "",
            );
            writer.commit(vec![message]).await.unwrap();
        }
        let expected: Vec<i64> = (1..=40).rev().collect();
        for store in [&inspector, &other, &writer] {
            assert_eq!(record_messages(store, "P1").await, expected);
            assert_eq!(store.patients().await.unwrap()[0].n_observations, 40);
        }
        // The other store's shutdown does not claim the writer's waiting entries as moved.
        drop(other);
        assert_eq!(record_messages(&inspector, "P1").await, expected);
        drop(writer);
        assert_eq!(record_messages(&inspector, "P1").await, expected);
        assert!(matches!(
            inspector.commit(vec![oru("x", None, &[], "")]).await,
            Err(StoreError::Closed)
        ));
    }

    #[test]
    fn a_read_only_store_needs_this_programs_schema() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            SqliteStore::open_read_only(dir.path()).is_err(),
            "no database yet"
        );
        drop(open(dir.path()));
        sql(dir.path())
            .execute_batch("PRAGMA user_version = 1")
            .unwrap();
        let error = SqliteStore::open_read_only(dir.path()).err().unwrap();
        assert!(error.to_string().contains("upgrades it"), "{error}");
    }

    #[tokio::test]
    async fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let message = oru("OLD1", Some(patient("P1", "EVE", false)), &["182", "7"], "");
        let key = message.key.clone().unwrap();
        {
            let conn = sql(dir.path());
            conn.execute_batch(MIGRATIONS[0].sql).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO patients VALUES (1, 'P1', 'P1', 'AUTH', 'P1^^^AUTH^MR', 'EVE', \
                 '1970-01-01', 'F', 0, 0)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO messages VALUES (1, 1700000000123, '127.0.0.1:40000', 'DEV', \
                 'FAC', 'OLD1', ?1, 'accepted', NULL, 'ORU^R01', '2.6', 'ICU^1', 'DEV', 1, \
                 1, 2, ?2, ?3, ?4)",
                params![
                    &message.hash[..],
                    key_hash(&key),
                    hash_prefix(&message.hash),
                    message.raw
                ],
            )
            .unwrap();
            for (id, value) in [(1, "182"), (2, "7")] {
                conn.execute(
                    "INSERT INTO observations VALUES (?1, 1, 1, ?2, 'NM', '1554-5', 'GLUCOSE', \
                     'LN', '', ?3, ?3, 'mg/dl', '', '70_105', 'H', 'F', \
                     '2002-02-15T07:30:00', 1013758200000, 'EQ')",
                    params![id, id - 1, value],
                )
                .unwrap();
            }
        }
        let store = open(dir.path());
        let records = store.patient_records("P1", None).await.unwrap().unwrap();
        let values: Vec<&str> = records
            .records
            .iter()
            .map(|r| r.observation.value.as_str())
            .collect();
        assert_eq!(values, ["182", "7"]);
        assert_eq!(records.records[0].observation.numeric, Some(182.0));
        assert_eq!(records.records[1].observation.index, 1);
        let conn = sql(dir.path());
        assert_eq!(
            count(&conn, "SELECT sent_ms FROM messages WHERE id = 1"),
            key.sent_ms.unwrap()
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM observations WHERE value = '182' AND numeric = 182"
            ),
            1
        );
        // A retransmission of a message stored before the migration is still recognised.
        assert_eq!(
            store.commit(vec![message]).await.unwrap(),
            vec![Stored::Duplicate {
                id: 1,
                verdict: Verdict::Accept
            }]
        );
    }

    #[tokio::test]
    async fn the_writer_recovers_after_a_failed_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .commit(vec![oru(
                "1",
                Some(patient("P1", "EVE", false)),
                &["1"],
                "",
            )])
            .await
            .unwrap();
        // A full disk: the database may not grow by a single page.
        let n_pages = count(&sql(dir.path()), "PRAGMA page_count");
        exec(&store, &format!("PRAGMA max_page_count = {n_pages}")).await;
        let big = "OBX|".repeat(50_000);
        let batch = vec![
            oru("2", Some(patient("P2", "NEW", false)), &["2"], ""),
            oru("3", Some(patient("P1", "EVE", false)), &["3"], &big),
        ];
        let error = store.commit(batch.clone()).await.unwrap_err();
        assert_eq!(error.to_string(), "store failure: database or disk is full");
        assert_eq!(store.stats().n_failed_transactions, 1);
        assert!(store.patient_records("P2", None).await.unwrap().is_none());

        // Room again: the same store, without reopening, stores the batch.
        exec(&store, "PRAGMA max_page_count = 1073741823").await;
        let stored = store.commit(batch).await.unwrap();
        assert_eq!(new_id(&stored[0]), 2);
        assert_eq!(new_id(&stored[1]), 3);
        // The patient created by the failed transaction was forgotten with it.
        let records = store.patient_records("P2", None).await.unwrap().unwrap();
        assert_eq!(records.records.len(), 1);
        assert_eq!(store.patients().await.unwrap().len(), 2);
        // Nothing of the failed attempt is left in the patient tail either.
        assert_eq!(record_messages(&store, "P1").await, [3, 1]);
        let conn = sql(dir.path());
        assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 3);
        assert_eq!(count(&conn, "SELECT count(*) FROM observations"), 3);
    }

    #[test]
    fn two_processes_opening_a_new_directory_at_once_both_succeed() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let openers: Vec<_> = (0..2)
                .map(|_| {
                    let path = dir.path().join("data");
                    let barrier = std::sync::Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        barrier.wait();
                        SqliteStore::open(&path, SqliteOptions::default()).map(drop)
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().expect("both open the store");
            }
        }
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        sql(dir.path())
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        match SqliteStore::open(dir.path(), SqliteOptions::default()) {
            Err(StoreError::NewerSchema { found, supported }) => {
                assert_eq!((found, supported), (99, MIGRATIONS.len() as i64));
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }

    #[tokio::test]
    async fn the_exporter_learns_which_patients_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(store.export_watermark().await.unwrap(), 0);
        assert_eq!(
            store.patients_changed_since(0, 10).await.unwrap(),
            (vec![], 0)
        );
        let who = |key: &str| Some(patient(key, "X", false));
        store
            .commit(vec![
                oru("1", who("B"), &["1"], ""),
                oru("2", who("A"), &["1"], ""),
                oru("3", who("B"), &["1"], ""),
                rejected("4", ""),
                oru("5", None, &["1"], ""),
                oru("6", who("C"), &["1"], ""),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.patients_changed_since(0, 100).await.unwrap(),
            (
                vec!["B".to_string(), "A".to_string()]
                    .into_iter()
                    .chain(["C".to_string()])
                    .collect(),
                6
            )
        );
        assert_eq!(
            store.patients_changed_since(1, 3).await.unwrap(),
            (vec!["A".to_string(), "B".to_string()], 4)
        );
        assert_eq!(
            store.patients_changed_since(4, 1).await.unwrap(),
            (vec![], 5)
        );
        store.set_export_watermark(5).await.unwrap();
        assert_eq!(store.export_watermark().await.unwrap(), 5);
        store.set_export_watermark(6).await.unwrap();
        assert_eq!(store.export_watermark().await.unwrap(), 6);
    }

    #[tokio::test]
    async fn files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data/dir");
        let store = open(&data);
        store.commit(vec![oru("1", None, &[], "")]).await.unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(DB_FILE_NAME)), 0o600);
        assert_eq!(mode(&data.join(format!("{DB_FILE_NAME}-wal"))), 0o600);
    }

    #[test]
    fn the_hot_queries_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap());
        let conn = sql(dir.path());
        let plan = |query: &str| -> String {
            let mut statement = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap();
            let n_params = statement.parameter_count();
            let rows = statement
                .query_map(rusqlite::params_from_iter(vec![0; n_params]), |row| {
                    row.get::<_, String>(3)
                })
                .unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        for (query, index) in [
            (
                FIND_KEY,
                "PRIMARY KEY (sent_ms=? AND key_hash=? AND hash_prefix=?)",
            ),
            (MESSAGE_KEY, "INTEGER PRIMARY KEY (rowid=?)"),
            (MESSAGE_BY_ID, "INTEGER PRIMARY KEY (rowid=?)"),
            (FIND_PATIENT, "sqlite_autoindex_patients_1"),
            (PATIENT_MESSAGES, "PRIMARY KEY (patient=? AND message<?)"),
            (PATIENT_MESSAGES_BEYOND, "INTEGER PRIMARY KEY (rowid>?)"),
            (CHANGED_SINCE, "INTEGER PRIMARY KEY"),
        ] {
            let plan = plan(query);
            assert!(plan.contains(index), "{query}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{query}: {plan}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_holds_at_most_max_batch_messages() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            max_batch: 2,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(dir.path(), options).unwrap();
        let messages = (0..6)
            .map(|n| oru(&n.to_string(), None, &["1"], ""))
            .collect();
        commit_behind_a_held_writer(&store, messages).await;
        assert_eq!(store.stats().n_transactions, 3);
    }

    #[test]
    fn the_writer_finishes_a_checkpoint_only_after_the_checkpoint_thread() {
        let signal = CheckpointSignal::default();
        let long = CHECKPOINT_FRAMES;
        assert!(!signal.after_commit(10));
        // A long WAL asks the checkpoint thread for a pass, once.
        assert!(!signal.after_commit(long));
        assert!(signal.wait());
        assert!(!signal.after_commit(long + 100));
        signal.done();
        // Then the writer copies the rest itself.
        assert!(signal.after_commit(long + 200));
        assert!(!signal.after_commit(10));
        // A pass that ends after the WAL started over leaves nothing for the writer.
        assert!(!signal.after_commit(long));
        assert!(signal.wait());
        signal.done();
        assert!(!signal.after_commit(10));
        assert!(!signal.after_commit(long));
        signal.shut_down();
        assert!(!signal.wait());
    }
}
