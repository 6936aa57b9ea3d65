//! The online backup of a SQLite store: one snapshot copied page by page into a single
//! self-contained file beside the destination, made durable, then put in its place.
//!
//! The copy runs on a connection of its own that opens one read transaction first and holds
//! it to the end. SQLite's backup API then copies that snapshot a few pages at a time, and a
//! write by the receiver (another connection) does not restart it: the restart happens only
//! when the source connection starts a new read and finds the database changed, which a
//! held transaction never does. In WAL mode the receiver's writer is never blocked by a
//! reader; the pauses between steps leave it the CPU and the disk. The WAL grows meanwhile
//! (a checkpoint cannot pass the snapshot) and is copied into the database afterwards.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::schema::open_reader;
use crate::store::{BackupError, BackupOptions, BackupProgress, BackupSummary, StoreError};

/// Pages copied per step: 8 MiB of the store's 8 KiB pages, about 10 ms of copying.
const PAGES_PER_STEP: i32 = 1024;

/// The pause after each step, so that on a busy machine the receiver's writer, its
/// checkpointer and the ACK path get the disk and the CPU between steps.
const STEP_PAUSE: Duration = Duration::from_millis(5);

/// The suffixes of SQLite's files beside a database: stale ones beside a replaced copy
/// would be taken as part of it.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Copies the database at `source` to `dest` (see [`crate::store::backup`]).
pub fn backup(
    source: &Path,
    dest: &Path,
    options: BackupOptions,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<BackupSummary, BackupError> {
    if !source.is_file() {
        return Err(BackupError::NoDatabase(source.to_path_buf()));
    }
    if same_file(source, dest) {
        return Err(BackupError::SameFile);
    }
    if !options.force && dest.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let partial = partial_path(dest);
    let result = copy(source, &partial, progress).and_then(|()| place(&partial, dest, options));
    if result.is_err() {
        remove_with_side_files(&partial);
    }
    result?;
    check(dest)
}

/// `DEST.partial`, beside `DEST`, so that the rename is within one file system.
fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn db_error(error: rusqlite::Error) -> BackupError {
    // SQLite's messages name files, tables and causes, never the values stored.
    BackupError::Database(error.to_string())
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> BackupError {
    move |error| BackupError::Io {
        what,
        reason: error.to_string(),
    }
}

/// Copies one snapshot of `source` into `partial`, in rollback-journal mode (a single file;
/// a receiver started on it switches it back to WAL), synced.
fn copy(
    source: &Path,
    partial: &Path,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<(), BackupError> {
    remove_with_side_files(partial);
    // Created here, private, before SQLite opens it: SQLite would create it with the umask's
    // permissions.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)
        .map_err(io_error("creating the copy"))?;
    let src = open_reader(source).map_err(|error| match error {
        StoreError::Database(reason) => BackupError::Database(reason),
        other => BackupError::Database(other.to_string()),
    })?;
    // The snapshot: held from here to the end of the copy.
    src.execute_batch("BEGIN")
        .and_then(|()| src.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
        .map_err(db_error)?;
    let page_size: u64 = src
        .pragma_query_value(None, "page_size", |row| row.get(0))
        .map_err(db_error)?;
    let mut dst = Connection::open_with_flags(
        partial,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(db_error)?;
        loop {
            let step = backup.step(PAGES_PER_STEP).map_err(db_error)?;
            let p = backup.progress();
            let n_pages_total = u64::try_from(p.pagecount).unwrap_or(0);
            let n_remaining = u64::try_from(p.remaining).unwrap_or(0);
            progress(BackupProgress {
                n_bytes_done: n_pages_total.saturating_sub(n_remaining) * page_size,
                n_bytes_total: n_pages_total * page_size,
            });
            match step {
                StepResult::Done => break,
                // Busy and Locked concern the destination, which nobody else has open;
                // wait and go on as for More.
                _ => std::thread::sleep(STEP_PAUSE),
            }
        }
    }
    src.execute_batch("COMMIT").map_err(db_error)?;
    drop(src);
    // The copied header says WAL: make the copy one file, and durable.
    let mode: String = dst
        .pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0))
        .map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Database(format!(
            "the copy kept journal mode {mode}"
        )));
    }
    dst.close().map_err(|(_, e)| db_error(e))?;
    File::open(partial)
        .and_then(|file| file.sync_all())
        .map_err(io_error("syncing the copy"))?;
    Ok(())
}

/// Puts the finished copy at `dest`: renamed over it with `force`, else linked (which fails
/// if `dest` appeared meanwhile); then the folder is synced so the name is durable.
fn place(partial: &Path, dest: &Path, options: BackupOptions) -> Result<(), BackupError> {
    if options.force {
        for suffix in SIDE_FILES {
            let mut side = dest.as_os_str().to_owned();
            side.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(side));
        }
        std::fs::rename(partial, dest).map_err(io_error("renaming the copy into place"))?;
    } else {
        match std::fs::hard_link(partial, dest) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(dest.to_path_buf()));
            }
            Err(error) => return Err(io_error("linking the copy into place")(error)),
        }
        std::fs::remove_file(partial).map_err(io_error("removing the partial copy"))?;
    }
    let folder = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing the destination folder"))?;
    Ok(())
}

fn remove_with_side_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in SIDE_FILES {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
}

/// Opens the copy read-only and checks it: integrity, schema version, messages, size.
fn check(dest: &Path) -> Result<BackupSummary, BackupError> {
    let conn = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error)?;
    let mut statement = conn.prepare("PRAGMA integrity_check").map_err(db_error)?;
    let problems: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .and_then(Iterator::collect)
        .map_err(db_error)?;
    drop(statement);
    if problems != ["ok"] {
        return Err(BackupError::Integrity(
            problems.into_iter().take(3).collect::<Vec<_>>().join("; "),
        ));
    }
    let schema_version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_error)?;
    let n_messages: u64 = conn
        .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
        .map_err(db_error)?;
    drop(conn);
    let metadata = std::fs::metadata(dest).map_err(io_error("reading the copy's size"))?;
    Ok(BackupSummary {
        n_messages,
        schema_version,
        n_bytes: metadata.len(),
    })
}
