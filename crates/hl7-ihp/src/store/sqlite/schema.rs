//! The database file's schema: opening the connections with their pragmas, the versioned
//! migrations, and the checks that a database is one this program can use.

use super::*;

/// One schema change: a script, then optionally code for what SQL cannot do.
pub(super) struct Migration {
    pub(super) sql: &'static str,
    pub(super) then: Option<fn(&Connection) -> rusqlite::Result<()>>,
}

/// The schema migrations; the database's `user_version` is how many have been applied.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: include_str!("migrations/0001_schema.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0002_compact_rows.sql"),
        then: Some(fill_sent_ms),
    },
    Migration {
        sql: include_str!("migrations/0003_named_watermarks_repeats.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0004_ack_codes_refused_index.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0005_export_files.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0006_peer_identity.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0007_patient_merges.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0008_replay_links.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0009_smaller_rows.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0010_device_key.sql"),
        then: None,
    },
    Migration {
        sql: include_str!("migrations/0011_alarms.sql"),
        then: None,
    },
];

/// Opening sets WAL mode and migrates, steps in which SQLite answers "locked" at once,
/// without waiting, when another process is opening the same new database. A few bounded
/// retries let both open.
pub(super) fn open_writer_retrying(path: &Path) -> Result<Connection, StoreError> {
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

pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
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
pub(super) fn schema_version(
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

pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
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

pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
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

pub(super) fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(database_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(database_error)?;
    // The checkpoint syncs the WAL before copying it and the database after.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;")
        .map_err(database_error)?;
    Ok(conn)
}

/// Migration 2's step after its script: `sent_ms` of the accepted messages stored before,
/// from their MSH-7 as ingest computes it for new ones, then their keys.
pub(super) fn fill_sent_ms(conn: &Connection) -> rusqlite::Result<()> {
    let mut select = conn.prepare("SELECT id, raw FROM messages WHERE key_hash IS NOT NULL")?;
    let mut update = conn.prepare("UPDATE messages SET sent_ms = ?2 WHERE id = ?1")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let raw = row.get_ref(1)?.as_blob()?;
        let sent_ms = hl7::parse(raw)
            .ok()
            .and_then(|message| hl7::extract::extract(&message).header.time)
            .and_then(|time| crate::store::instant_ms(&time));
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
