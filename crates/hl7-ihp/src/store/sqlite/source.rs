//! A SQLite store read whole, in id order, for `hl7-ihp migrate` (store/postgres/import.rs):
//! one read-only connection, the rows as they are stored (the message bytes still encoded),
//! the observations decoded from the column's arrays, and the counts the migration is
//! verified by. Nothing here writes: the caller holds the data directory's lock, so the
//! database does not change while it is read.

use super::*;

/// A message row as stored, with what PostgreSQL's rows need besides; a field without a
/// comment is the `messages` column of its name.
pub(in crate::store) struct SourceMessage {
    pub id: i64,
    pub received_ms: i64,
    pub peer: String,
    pub peer_identity: Option<String>,
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    pub control_id: Option<String>,
    pub hash: Vec<u8>,
    pub outcome: String,
    pub reason: Option<String>,
    pub message_type: Option<String>,
    pub version: Option<String>,
    pub location: Option<String>,
    pub device: Option<String>,
    pub patient: Option<i64>,
    pub n_observations: i64,
    pub observations: Option<Vec<ObservationData>>,
    pub n_received: i64,
    pub last_received_ms: Option<i64>,
    pub ack_code: Option<String>,
    pub replay_of: Option<i64>,
    pub raw_encoding: Option<i64>,
    /// The bytes as stored (`raw_encoding` says how).
    pub raw: Vec<u8>,
    pub device_key: Option<String>,
    /// Stored with duplicate recognition (`key_hash` set): PostgreSQL gets its key row.
    pub keyed: bool,
    /// MSH-7 in milliseconds, as ingest computes a key's `sent_ms` (keyed messages only).
    pub sent_ms: Option<i64>,
}

/// A patient row: each field the `patients` column of its name.
pub(in crate::store) struct SourcePatient {
    pub id: i64,
    pub key: String,
    pub patient_id: String,
    pub assigning_authority: String,
    pub identifiers: String,
    pub name: String,
    pub birth_date: String,
    pub sex: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A patient merge row: each field the `patient_merges` column of its name.
pub(in crate::store) struct SourceMerge {
    pub prior_key: String,
    pub survivor_key: String,
    pub message: i64,
    pub event: String,
    pub merged_ms: i64,
    pub n_messages: i64,
}

/// An alarm row: each field the `alarms` column of its name, the text columns in
/// [`ALARM_TEXTS`]' order in `texts`, and `measurement_code`, `_text`, `_value` in
/// `measurement`.
pub(in crate::store) struct SourceAlarm {
    pub id: i64,
    pub message: i64,
    pub idx: i64,
    pub texts: [String; 11],
    pub measurement: [Option<String>; 3],
    pub measurement_numeric: Option<f64>,
    pub measurement_units: Option<String>,
    pub measurement_limit: Option<String>,
    pub started_at: String,
    pub started_ms: i64,
}

/// The alarm columns held in [`SourceAlarm::texts`], in order.
pub(in crate::store) const ALARM_TEXTS: [&str; 11] = [
    "source",
    "type_code",
    "type_text",
    "type_system",
    "text",
    "priority",
    "kind",
    "state",
    "phase",
    "inactivation",
    "flags",
];

/// An exporter's file position (`export_files`; `patient` there).
pub(in crate::store) struct SourceFile {
    pub exporter: String,
    pub patient_key: String,
    pub through: i64,
    pub length: i64,
}

/// The counts a migration is verified by, in a fixed order (name, count).
pub(in crate::store) type Counts = Vec<(&'static str, i64)>;

/// The SQLite store being read.
pub(in crate::store) struct Source {
    conn: Connection,
}

fn fail(error: rusqlite::Error) -> StoreError {
    database_error(error)
}

impl Source {
    /// Opens the database file read-only; one of an older schema is refused (a receiver of
    /// this version upgrades it when it starts).
    pub fn open(path: &Path) -> Result<Source, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Database(format!(
                "no SQLite database at {}",
                path.display()
            )));
        }
        let conn = open_reader(path)?;
        let version = schema_version(&conn, database_error)?;
        let supported = MIGRATIONS.len() as i64;
        if version < supported {
            return Err(StoreError::Database(format!(
                "the database has schema version {version}; start `hl7-ihp receive` on it \
                 once (it upgrades it to {supported}), stop it, then migrate"
            )));
        }
        Ok(Source { conn })
    }

    /// What identifies this store across runs of a migration: the first 8 bytes of its
    /// lowest message's hash (0 for a store without messages).
    pub fn fingerprint(&self) -> Result<i64, StoreError> {
        let hash: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT hash FROM messages ORDER BY id LIMIT 1", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(fail)?;
        Ok(hash
            .and_then(|h| h.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()))
            .map_or(0, |b| i64::from_be_bytes(b) & i64::MAX))
    }

    /// The highest message id stored and the highest a purge removed: new ids must be above
    /// both.
    pub fn id_bounds(&self) -> Result<(i64, i64), StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce((SELECT max(id) FROM messages), 0),
                        coalesce((SELECT value FROM meta WHERE name = 'purged_through'), 0)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)
    }

    /// How many messages have ids above `after`.
    pub fn count_after(&self, after: i64) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM messages WHERE id > ?1",
                [after],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(fail)
    }

    /// At most `limit` messages with ids above `after`, in id order.
    pub fn messages_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<SourceMessage>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id, received_ms, peer, peer_identity, sending_application,
                    sending_facility, control_id, hash, outcome, reason, message_type, version,
                    location, device, patient, n_observations, observations, n_received,
                    last_received_ms, ack_code, replay_of, raw_encoding, raw, device_key,
                    key_hash IS NOT NULL
                 FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(fail)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = statement.query(params![after, limit]).map_err(fail)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(fail)? {
            out.push(message_row(row)?);
        }
        Ok(out)
    }

    /// The patients with these ids (those that exist).
    pub fn patients_by_id(&self, ids: &[i64]) -> Result<Vec<SourcePatient>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!("{PATIENT_COLUMNS} WHERE id = ?1"))
            .map_err(fail)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(patient) = statement
                .query_row([id], patient_row)
                .optional()
                .map_err(fail)?
            {
                out.push(patient);
            }
        }
        Ok(out)
    }

    /// Every patient, in id order.
    pub fn patients(&self) -> Result<Vec<SourcePatient>, StoreError> {
        let mut statement = self
            .conn
            .prepare(&format!("{PATIENT_COLUMNS} ORDER BY id"))
            .map_err(fail)?;
        let rows = statement.query_map([], patient_row).map_err(fail)?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail)
    }

    /// The alarms of the messages with ids in `after+1 ..= through`.
    pub fn alarms_between(&self, after: i64, through: i64) -> Result<Vec<SourceAlarm>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id, message, idx, source, type_code, type_text, type_system, text,
                    priority, kind, state, phase, inactivation, flags, measurement_code,
                    measurement_text, measurement_value, measurement_numeric, measurement_units,
                    measurement_limit, started_at, started_ms
                 FROM alarms WHERE message > ?1 AND message <= ?2 ORDER BY id",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map(params![after, through], |row| {
                let text = |i: usize| row.get::<_, String>(i);
                Ok(SourceAlarm {
                    id: row.get(0)?,
                    message: row.get(1)?,
                    idx: row.get(2)?,
                    texts: [
                        text(3)?,
                        text(4)?,
                        text(5)?,
                        text(6)?,
                        text(7)?,
                        text(8)?,
                        text(9)?,
                        text(10)?,
                        text(11)?,
                        text(12)?,
                        text(13)?,
                    ],
                    measurement: [row.get(14)?, row.get(15)?, row.get(16)?],
                    measurement_numeric: row.get(17)?,
                    measurement_units: row.get(18)?,
                    measurement_limit: row.get(19)?,
                    started_at: row.get(20)?,
                    started_ms: row.get(21)?,
                })
            })
            .map_err(fail)?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail)
    }

    /// The merges made by the messages with ids in `after+1 ..= through`.
    pub fn merges_between(&self, after: i64, through: i64) -> Result<Vec<SourceMerge>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT prior_key, survivor_key, message, event, merged_ms, n_messages
                 FROM patient_merges WHERE message > ?1 AND message <= ?2 ORDER BY id",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map(params![after, through], |row| {
                Ok(SourceMerge {
                    prior_key: row.get(0)?,
                    survivor_key: row.get(1)?,
                    message: row.get(2)?,
                    event: row.get(3)?,
                    merged_ms: row.get(4)?,
                    n_messages: row.get(5)?,
                })
            })
            .map_err(fail)?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail)
    }

    /// The exporters' watermarks: `meta` rows `export:<name>`, by their full name.
    pub fn export_marks(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT name, value FROM meta WHERE substr(name, 1, {n}) = '{EXPORT_WATERMARK_PREFIX}'
                 ORDER BY name",
                n = EXPORT_WATERMARK_PREFIX.len()
            ))
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(fail)?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail)
    }

    /// Every exporter's file positions.
    pub fn export_files(&self) -> Result<Vec<SourceFile>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT exporter, patient, through, length FROM export_files")
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| {
                Ok(SourceFile {
                    exporter: row.get(0)?,
                    patient_key: row.get(1)?,
                    through: row.get(2)?,
                    length: row.get(3)?,
                })
            })
            .map_err(fail)?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail)
    }

    /// The counts to compare with the copy's ([`COUNT_NAMES`] order).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let values: [i64; 12] = self
            .conn
            .query_row(
                "SELECT
                    (SELECT count(*) FROM messages WHERE outcome = 'accepted'),
                    (SELECT count(*) FROM messages WHERE outcome = 'error'),
                    (SELECT count(*) FROM messages WHERE outcome = 'rejected'),
                    (SELECT coalesce(sum(n_received), 0) FROM messages),
                    (SELECT coalesce(sum(n_observations), 0) FROM messages),
                    (SELECT coalesce(max(id), 0) FROM messages),
                    (SELECT count(*) FROM patients),
                    (SELECT count(*) FROM messages
                        WHERE key_hash IS NOT NULL AND outcome = 'accepted'),
                    (SELECT count(*) FROM alarms),
                    (SELECT count(*) FROM patient_merges),
                    (SELECT count(*) FROM meta WHERE substr(name, 1, 7) = 'export:'),
                    (SELECT count(*) FROM export_files)",
                [],
                |row| {
                    let mut values = [0i64; 12];
                    for (i, value) in values.iter_mut().enumerate() {
                        *value = row.get(i)?;
                    }
                    Ok(values)
                },
            )
            .map_err(fail)?;
        Ok(COUNT_NAMES.iter().copied().zip(values).collect())
    }
}

/// What [`Source::counts`] counts, in its order (PostgreSQL's side counts the same).
pub(in crate::store) const COUNT_NAMES: [&str; 12] = [
    "messages accepted",
    "messages error",
    "messages rejected",
    "frames received",
    "observations",
    "highest message id",
    "patients",
    "duplicate keys",
    "alarms",
    "patient merges",
    "export watermarks",
    "export file positions",
];

const PATIENT_COLUMNS: &str = "SELECT id, key, patient_id, assigning_authority, identifiers,
    name, birth_date, sex, created_ms, updated_ms FROM patients";

fn patient_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SourcePatient> {
    Ok(SourcePatient {
        id: row.get(0)?,
        key: row.get(1)?,
        patient_id: row.get(2)?,
        assigning_authority: row.get(3)?,
        identifiers: row.get(4)?,
        name: row.get(5)?,
        birth_date: row.get(6)?,
        sex: row.get(7)?,
        created_ms: row.get(8)?,
        updated_ms: row.get(9)?,
    })
}

fn message_row(row: &rusqlite::Row<'_>) -> Result<SourceMessage, StoreError> {
    let id: i64 = row.get(0).map_err(fail)?;
    let observations = match row.get_ref(16).map_err(fail)? {
        rusqlite::types::ValueRef::Null => None,
        rusqlite::types::ValueRef::Text(bytes) | rusqlite::types::ValueRef::Blob(bytes) => Some(
            encoded::decode(bytes)
                .map_err(|e| StoreError::Database(format!("message {id}: {e}")))?,
        ),
        _ => {
            return Err(StoreError::Database(format!(
                "message {id}: the observations column is not text"
            )));
        }
    };
    let raw_encoding: Option<i64> = row.get(21).map_err(fail)?;
    let raw: Vec<u8> = row.get(22).map_err(fail)?;
    let keyed: bool = row.get(24).map_err(fail)?;
    let sent_ms = if keyed {
        let bytes = raw::decode(raw.clone(), raw_encoding)
            .map_err(|e| StoreError::Database(format!("message {id}: {e}")))?;
        hl7::parse(&bytes)
            .ok()
            .and_then(|message| hl7::extract::extract(&message).header.time)
            .and_then(|time| crate::store::instant_ms(&time))
    } else {
        None
    };
    let get = |i: usize| row.get::<_, Option<String>>(i).map_err(fail);
    Ok(SourceMessage {
        id,
        received_ms: row.get(1).map_err(fail)?,
        peer: row.get(2).map_err(fail)?,
        peer_identity: get(3)?,
        sending_application: get(4)?,
        sending_facility: get(5)?,
        control_id: get(6)?,
        hash: row.get(7).map_err(fail)?,
        outcome: row.get(8).map_err(fail)?,
        reason: get(9)?,
        message_type: get(10)?,
        version: get(11)?,
        location: get(12)?,
        device: get(13)?,
        patient: row.get(14).map_err(fail)?,
        n_observations: row.get(15).map_err(fail)?,
        observations,
        n_received: row.get(17).map_err(fail)?,
        last_received_ms: row.get(18).map_err(fail)?,
        ack_code: get(19)?,
        replay_of: row.get(20).map_err(fail)?,
        raw_encoding,
        raw,
        device_key: get(23)?,
        keyed,
        sent_ms,
    })
}
