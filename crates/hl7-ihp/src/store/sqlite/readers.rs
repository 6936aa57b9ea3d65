//! The readers: patients, a patient's records, stored frames and the change feed, each in
//! one snapshot on the reader connection.

use super::*;

/// The `observations` column back into observations, `index` from their order.
pub(super) fn decode_observations(
    column: usize,
    text: &[u8],
) -> rusqlite::Result<Vec<ObservationData>> {
    encoded::decode(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
    })
}

impl From<encoded::Malformed> for rusqlite::Error {
    fn from(error: encoded::Malformed) -> rusqlite::Error {
        // Where a read looks at single values, the column's index is not at hand; the
        // error names the position in the column.
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, error.into())
    }
}

/// The columns [`push_records`] turns into records: id, control_id, received_ms, device,
/// observations.
pub(super) const RECORD_COLUMNS: &str =
    "m.id, m.control_id, m.received_ms, m.device, m.observations";

/// One message by id, as a select list over `messages m` gives it (a tail entry's message).
pub(super) fn message_by_id(columns: &str) -> String {
    format!("SELECT {columns} FROM messages m WHERE m.id = ?1")
}

/// A patient's messages in `patient_messages` in an id range `[?2, ?3)`, newest first.
pub(super) fn patient_messages(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM patient_messages pm JOIN messages m ON m.id = pm.message \
         WHERE pm.patient = ?1 AND pm.message >= ?2 AND pm.message < ?3 \
         ORDER BY pm.message DESC"
    )
}

/// A patient's messages written by another process (after the tail's `known_through`) in
/// an id range `[?1, ?2)`, newest first: a range of the primary key, empty in the writing
/// process.
pub(super) fn patient_messages_beyond(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM messages m WHERE m.id >= ?1 AND m.id < ?2 AND m.patient = ?3 \
         ORDER BY m.id DESC"
    )
}

/// The messages after an id, with their patients (the primary key).
pub(super) const CHANGED_SINCE: &str = "SELECT m.id, p.key FROM messages m \
     LEFT JOIN patients p ON p.id = m.patient WHERE m.id > ?1 ORDER BY m.id LIMIT ?2";

/// A stored time in milliseconds as an instant; out of range (never written by us) reads
/// as the epoch.
pub(super) fn instant(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The stored outcome text as the answer's family.
pub(super) fn outcome_of(text: &str) -> Outcome {
    match text {
        "accepted" => Outcome::Accept,
        "error" => Outcome::Error,
        _ => Outcome::Reject,
    }
}

/// What a read knows of the patient tail: the entries it needs and `known_through`.
pub(super) struct TailView<T> {
    pub(super) entries: T,
    pub(super) known_through: i64,
}

/// Starts the read's snapshot (with `start`, the read's first statement) while holding the
/// tail's lock, then copies what the read needs of the tail (`copy`): the writer adds
/// entries before its commit and forgets moved ones only after, under the same lock, so
/// every message of the snapshot is in the copy or the table (the copy may also hold
/// entries of a transaction the snapshot does not include; their rows are not found). A
/// read-only store has no tail: it reads the patient watermark in the same snapshot and
/// finds the messages after it by a scan.
pub(super) fn with_snapshot<S, T: Default>(
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

pub(super) fn read_patients(
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
                .map(instant),
            None => None,
        };
        summaries.push(PatientSummary {
            key,
            name,
            n_observations: n_observations.max(0) as u64,
            last_received_at,
            last_message: last,
        });
    }
    Ok(summaries)
}

/// A patient's messages as one read sees them: the patients row, the tail entries copied
/// when the snapshot started, and the tail's `known_through`.
pub(super) struct PatientScope {
    pub(super) row: i64,
    pub(super) in_tail: Vec<Entry>,
    pub(super) known_through: i64,
}

/// Starts the read's snapshot by finding a patient: their data and the scope of their
/// messages, `None` for an unknown key.
pub(super) fn find_patient(
    conn: &Connection,
    tail: Option<&Mutex<PatientTail>>,
    key: &str,
) -> rusqlite::Result<Option<(PatientData, PatientScope)>> {
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
    Ok(found.map(|(row, patient)| {
        let scope = PatientScope {
            row,
            in_tail: view.entries,
            known_through: view.known_through,
        };
        (patient, scope)
    }))
}

/// Calls `each` with the patient's messages whose ids are in `ids`, newest first, as rows
/// of `columns` (a select list over `messages m`), until it returns false.
///
/// Three parts, each a range: another process's messages (after `known_through`), the
/// tail, then the table below the tail. So the cost is that of the messages `each` looks
/// at, whatever the patient's history before or after the range.
pub(super) fn scan_patient_messages(
    conn: &Connection,
    scope: &PatientScope,
    columns: &str,
    ids: std::ops::Range<i64>,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    let std::ops::Range { start, end } = ids;
    if start >= end {
        return Ok(());
    }
    let beyond_from = start.max(scope.known_through.saturating_add(1));
    if beyond_from < end {
        let mut statement = conn.prepare_cached(&patient_messages_beyond(columns))?;
        let mut rows = statement.query(params![beyond_from, end, scope.row])?;
        while let Some(row) = rows.next()? {
            if !each(row)? {
                return Ok(());
            }
        }
    }
    let mut by_id = conn.prepare_cached(&message_by_id(columns))?;
    for entry in scope.in_tail.iter().rev() {
        if entry.message >= end {
            continue;
        }
        if entry.message < start {
            return Ok(());
        }
        // Absent when its transaction is not in this snapshot.
        let mut rows = by_id.query([entry.message])?;
        if let Some(row) = rows.next()?
            && !each(row)?
        {
            return Ok(());
        }
    }
    let below = scope
        .in_tail
        .first()
        .map_or(scope.known_through.saturating_add(1), |e| e.message)
        .min(end);
    scan_indexed_messages(conn, scope.row, columns, start..below, each)
}

/// Calls `each` with a patient's messages in `patient_messages` whose ids are in `ids`,
/// newest first, until it returns false: the part of [`scan_patient_messages`] below the
/// tail, which another connection can read too (entries only ever join the table).
pub(super) fn scan_indexed_messages(
    conn: &Connection,
    patient_row: i64,
    columns: &str,
    ids: std::ops::Range<i64>,
    mut each: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    if ids.start < ids.end {
        let mut statement = conn.prepare_cached(&patient_messages(columns))?;
        let mut rows = statement.query(params![patient_row, ids.start, ids.end])?;
        while let Some(row) = rows.next()? {
            if !each(row)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

pub(super) fn read_patient_records(
    conn: &Connection,
    tail: Option<&Mutex<PatientTail>>,
    key: &str,
    limit: Option<usize>,
) -> rusqlite::Result<Option<PatientRecords>> {
    let Some((patient, scope)) = find_patient(conn, tail, key)? else {
        return Ok(None);
    };
    let limit = limit.unwrap_or(usize::MAX);
    let mut records = Vec::new();
    if limit > 0 {
        scan_patient_messages(conn, &scope, RECORD_COLUMNS, 0..i64::MAX, |row| {
            push_records(row, limit, &mut records)?;
            Ok(records.len() < limit)
        })?;
    }
    Ok(Some(PatientRecords { patient, records }))
}

/// An unassigned device's records, newest first (the `messages_by_device_key` index), up
/// to `limit`, with the newest PV1-3 its messages had; `None` when it has no message.
pub(super) fn read_device_records(
    conn: &Connection,
    device: &str,
    limit: Option<usize>,
) -> rusqlite::Result<Option<DeviceRecords>> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS}, m.location FROM messages m \
         WHERE m.device_key = ?1 ORDER BY m.id DESC"
    ))?;
    let mut rows = statement.query([device])?;
    let mut found = false;
    let mut location: Option<String> = None;
    let mut records = Vec::new();
    while let Some(row) = rows.next()? {
        found = true;
        if location.is_none() {
            location = row.get::<_, Option<String>>(5)?.filter(|l| !l.is_empty());
        }
        if records.len() < limit {
            push_records(row, limit, &mut records)?;
        }
        if records.len() >= limit && location.is_some() {
            break;
        }
    }
    Ok(found.then(|| DeviceRecords {
        device: device.to_owned(),
        location,
        records,
    }))
}

/// Adds the records of a message read as [`RECORD_COLUMNS`], in OBX order, up to `limit`.
pub(super) fn push_records(
    row: &rusqlite::Row<'_>,
    limit: usize,
    records: &mut Vec<ObservationRow>,
) -> rusqlite::Result<()> {
    let Some(observations) = row.get_ref(4)?.as_bytes_or_null()? else {
        return Ok(());
    };
    let message_id: i64 = row.get(0)?;
    let control_id: String = row.get::<_, Option<String>>(1)?.unwrap_or_default();
    let received_at = instant(row.get(2)?);
    let device: String = row.get::<_, Option<String>>(3)?.unwrap_or_default();
    for observation in decode_observations(4, observations)? {
        if records.len() >= limit {
            break;
        }
        records.push(ObservationRow {
            observation,
            message_id,
            control_id: control_id.clone(),
            received_at,
            device: device.clone(),
        });
    }
    Ok(())
}

/// How far received times may run against id order (commit order), in ms: a frame's time
/// is taken before it waits for the writer, and the wall clock may be stepped back. The
/// id range a time filter looks at is this much wider; a message received further out of
/// order (a clock stepped back by more) may be missed by a filter near that time.
pub(super) const RECEIVED_DISORDER_MS: i64 = 5 * 60 * 1000;

/// The lowest and the highest message id, each read at an end of the primary key.
pub(super) const ID_RANGE: &str =
    "SELECT (SELECT min(id) FROM messages), (SELECT max(id) FROM messages)";

/// The first message at or after an id, with its received time (the primary key).
pub(super) const MESSAGE_FROM: &str =
    "SELECT id, received_ms FROM messages WHERE id >= ?1 ORDER BY id LIMIT 1";

/// The first id from which messages were received at or after `ms`, found by bisection
/// over the primary key: about 2·log2(n) lookups, whatever the history, instead of an
/// index on received times that the ACK path would pay for. Received times follow ids up
/// to [`RECEIVED_DISORDER_MS`], which the callers add.
pub(super) fn first_received_at(conn: &Connection, ms: i64) -> rusqlite::Result<i64> {
    // Two subqueries: SQLite reads min() or max() at an end of the primary key only when
    // it is a query's one aggregate, and would scan the table for both at once.
    let (first, last): (Option<i64>, Option<i64>) = conn
        .prepare_cached(ID_RANGE)?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let (Some(mut lo), Some(last)) = (first, last) else {
        return Ok(0);
    };
    let mut hi = last.saturating_add(1);
    let mut from = conn.prepare_cached(MESSAGE_FROM)?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found = from
            .query_row([mid], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .optional()?;
        match found {
            // No id between `mid` and `id`: the boundary is at or below `mid`.
            Some((id, received_ms)) if id < hi && received_ms < ms => lo = id + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The ids `[start, end)` that hold every message received in `[since, until)`, allowing
/// for [`RECEIVED_DISORDER_MS`] (and more messages: filter on the times too).
pub(super) fn ids_received(
    conn: &Connection,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> rusqlite::Result<std::ops::Range<i64>> {
    let start = match since_ms {
        Some(ms) => first_received_at(conn, ms.saturating_sub(RECEIVED_DISORDER_MS))?,
        None => 0,
    };
    let end = match until_ms {
        Some(ms) => first_received_at(conn, ms.saturating_add(RECEIVED_DISORDER_MS))?,
        None => i64::MAX,
    };
    Ok(start..end)
}

/// The first replay of `messages m`: one probe of the replays' partial index (`replay_of =`
/// implies `IS NOT NULL`, so SQLite may use it).
const REPLAYED_AS: &str = "(SELECT r.id FROM messages r WHERE r.replay_of = m.id \
     ORDER BY r.id LIMIT 1)";

/// The columns [`message_summary`] reads, over `messages m`; the bytes only when asked for.
pub(super) fn summary_columns(with_raw: bool) -> String {
    let (raw, encoding) = if with_raw {
        ("m.raw", "m.raw_encoding")
    } else {
        ("NULL", "NULL")
    };
    format!(
        "m.id, m.received_ms, m.peer, m.sending_application, m.sending_facility, \
         m.control_id, m.outcome, m.reason, {raw}, m.n_received, m.message_type, m.ack_code, \
         m.peer_identity, m.replay_of, {REPLAYED_AS}, {encoding}"
    )
}

/// Stored frames newest first in an id range `[?1, ?2)`, filtered, with their patients'
/// keys: a range of the primary key, or with `refused` the refused frames' index (whose
/// condition the query repeats, so that SQLite may use it). `outcome`, `message_type`,
/// `facility` and the received times are checked on the rows read.
pub(super) fn messages_query(with_raw: bool, refused: bool) -> String {
    let (index, condition) = if refused {
        ("INDEXED BY messages_refused", "m.outcome <> 'accepted' AND")
    } else {
        ("", "")
    };
    format!(
        "SELECT {}, p.key FROM messages m {index} LEFT JOIN patients p ON p.id = m.patient \
         WHERE {condition} m.id >= ?1 AND m.id < ?2 \
           AND (?3 IS NULL OR m.outcome = ?3) \
           AND (?4 IS NULL OR m.message_type = ?4) \
           AND (?5 IS NULL OR m.sending_facility = ?5) \
           AND (?6 IS NULL OR m.received_ms >= ?6) \
           AND (?7 IS NULL OR m.received_ms < ?7) \
         ORDER BY m.id DESC LIMIT ?8",
        summary_columns(with_raw)
    )
}

/// The column of `raw_encoding` in [`summary_columns`].
const RAW_ENCODING: usize = 15;

/// A message read as [`summary_columns`], about the patient with this key.
pub(super) fn message_summary(
    row: &rusqlite::Row<'_>,
    patient: Option<String>,
) -> rusqlite::Result<MessageSummary> {
    let application: Option<String> = row.get(3)?;
    let facility: Option<String> = row.get(4)?;
    Ok(MessageSummary {
        id: row.get(0)?,
        received_at: instant(row.get(1)?),
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
        outcome: outcome_of(row.get_ref(6)?.as_str()?),
        reason: row.get(7)?,
        raw: raw::read(row, 8, RAW_ENCODING)?,
        n_received: row.get::<_, i64>(9)?.max(1) as u64,
        message_type: row.get(10)?,
        patient,
        ack_code: row.get(11)?,
        peer_identity: row.get(12)?,
        merge: None,
        replay_of: row.get(13)?,
        replayed_as: row.get(14)?,
    })
}

/// Fills in the merges the listed messages made (one lookup of `patient_merges` per page).
pub(super) fn add_merge_notes(
    conn: &Connection,
    messages: &mut [MessageSummary],
) -> rusqlite::Result<()> {
    let (Some(low), Some(high)) = (
        messages.iter().map(|m| m.id).min(),
        messages.iter().map(|m| m.id).max(),
    ) else {
        return Ok(());
    };
    let mut statement = conn.prepare_cached(
        "SELECT message, prior_key, survivor_key, event FROM patient_merges \
         WHERE message >= ?1 AND message <= ?2",
    )?;
    let mut rows = statement.query(params![low, high])?;
    let mut notes = HashMap::new();
    while let Some(row) = rows.next()? {
        notes.insert(
            row.get::<_, i64>(0)?,
            MergeNote {
                prior: row.get(1)?,
                survivor: row.get(2)?,
                event: row.get(3)?,
            },
        );
    }
    if notes.is_empty() {
        return Ok(());
    }
    for message in messages {
        message.merge = notes.remove(&message.id);
    }
    Ok(())
}

/// Whether a message read as [`summary_columns`] passes the filter's conditions other than
/// the patient and the id range.
fn passes(row: &rusqlite::Row<'_>, filter: &MessageFilter) -> rusqlite::Result<bool> {
    let outcome = outcome_of(row.get_ref(6)?.as_str()?);
    let received_ms: i64 = row.get(1)?;
    Ok(!(filter.rejected_only && outcome == Outcome::Accept)
        && filter.outcome.is_none_or(|wanted| wanted == outcome)
        && match &filter.message_type {
            Some(wanted) => row.get_ref(10)?.as_str_or_null()? == Some(wanted.as_str()),
            None => true,
        }
        && match &filter.facility {
            Some(wanted) => row.get_ref(4)?.as_str_or_null()? == Some(wanted.as_str()),
            None => true,
        }
        && filter.since_ms.is_none_or(|since| received_ms >= since)
        && filter.until_ms.is_none_or(|until| received_ms < until))
}

pub(super) fn read_messages(
    conn: &Connection,
    tail: Option<&Mutex<PatientTail>>,
    filter: &MessageFilter,
) -> rusqlite::Result<Vec<MessageSummary>> {
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut messages = Vec::new();
    if limit == 0 {
        return Ok(messages);
    }
    let Some(key) = &filter.patient else {
        let mut ids = ids_received(conn, filter.since_ms, filter.until_ms)?;
        if let Some(before) = filter.before_id {
            ids.end = ids.end.min(before);
        }
        let refused = filter.rejected_only
            || matches!(filter.outcome, Some(Outcome::Error | Outcome::Reject));
        let mut statement = conn.prepare_cached(&messages_query(filter.with_raw, refused))?;
        let mut rows = statement.query(params![
            ids.start,
            ids.end,
            filter.outcome.map(outcome_name),
            filter.message_type,
            filter.facility,
            filter.since_ms,
            filter.until_ms,
            sql_limit(filter.limit),
        ])?;
        while let Some(row) = rows.next()? {
            let patient = row.get(16)?;
            messages.push(message_summary(row, patient)?);
        }
        add_merge_notes(conn, &mut messages)?;
        return Ok(messages);
    };
    // One patient's messages: their index, newest first, from the cursor on.
    let Some((_, scope)) = find_patient(conn, tail, key)? else {
        return Ok(messages);
    };
    let mut ids = ids_received(conn, filter.since_ms, filter.until_ms)?;
    if let Some(before) = filter.before_id {
        ids.end = ids.end.min(before);
    }
    let columns = summary_columns(filter.with_raw);
    scan_patient_messages(conn, &scope, &columns, ids, |row| {
        if passes(row, filter)? {
            messages.push(message_summary(row, Some(key.clone()))?);
        }
        Ok(messages.len() < limit)
    })?;
    add_merge_notes(conn, &mut messages)?;
    Ok(messages)
}

/// One stored frame with everything the message browser shows (the primary key).
pub(super) fn message_detail() -> String {
    format!(
        "SELECT {}, p.key, m.version, m.location, m.device, m.last_received_ms, m.observations \
         FROM messages m LEFT JOIN patients p ON p.id = m.patient WHERE m.id = ?1",
        summary_columns(true)
    )
}

pub(super) fn read_message(conn: &Connection, id: i64) -> rusqlite::Result<Option<MessageDetail>> {
    let mut statement = conn.prepare_cached(&message_detail())?;
    let mut rows = statement.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let observations = match row.get_ref(21)?.as_bytes_or_null()? {
        Some(text) => decode_observations(21, text)?,
        None => Vec::new(),
    };
    Ok(Some(MessageDetail {
        sending_application: row.get(3)?,
        sending_facility: row.get(4)?,
        version: row.get(17)?,
        location: row.get(18)?,
        device: row.get(19)?,
        last_received_at: row.get::<_, Option<i64>>(20)?.map(instant),
        observations,
        summary: {
            let mut summary = [message_summary(row, row.get(16)?)?];
            add_merge_notes(conn, &mut summary)?;
            let [summary] = summary;
            summary
        },
    }))
}

pub(super) fn read_changes_since(
    conn: &Connection,
    after: ChangeCursor,
    limit: usize,
) -> rusqlite::Result<Changes> {
    // One writer: message ids are in commit order, so the last id seen is a cursor no later
    // commit can fall behind. A range of the primary key: the cost is that of the messages
    // looked at, however long the history before them.
    let mut statement = conn.prepare_cached(CHANGED_SINCE)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = statement.query(params![after.position(), limit])?;
    let mut highest = after.position();
    let mut seen = HashSet::new();
    let mut patients = Vec::new();
    while let Some(row) = rows.next()? {
        highest = row.get(0)?;
        if let Some(key) = row.get::<_, Option<String>>(1)?
            && seen.insert(key.clone())
        {
            patients.push(key);
        }
    }
    // A merge changed the prior patient too: their records are gone (now the survivor's).
    if highest > after.position() {
        let mut merged = conn.prepare_cached(
            "SELECT prior_key FROM patient_merges WHERE message > ?1 AND message <= ?2 \
             ORDER BY message",
        )?;
        let mut rows = merged.query(params![after.position(), highest])?;
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            if seen.insert(key.clone()) {
                patients.push(key);
            }
        }
    }
    Ok(Changes {
        patients,
        next: ChangeCursor::at(highest),
    })
}

/// The columns [`feed_message`] reads, over `messages m`.
pub(super) const FEED_COLUMNS: &str = "m.id, m.received_ms, m.outcome, m.reason, \
     m.sending_application, m.sending_facility, m.control_id, m.message_type, m.location, \
     m.device, m.observations";

/// The feed after an id, with each message's patient as stored now (the primary key).
pub(super) const FEED: &str = "SELECT m.id, m.received_ms, m.outcome, m.reason, \
     m.sending_application, m.sending_facility, m.control_id, m.message_type, m.location, \
     m.device, m.observations, p.key, p.patient_id, p.assigning_authority, p.identifiers, \
     p.name, p.birth_date, p.sex, g.prior_key \
     FROM messages m LEFT JOIN patients p ON p.id = m.patient \
     LEFT JOIN patient_merges g ON g.message = m.id \
     WHERE m.id > ?1 ORDER BY m.id LIMIT ?2";

/// A message read as [`FEED_COLUMNS`], with the patient given.
pub(super) fn feed_message(
    row: &rusqlite::Row<'_>,
    patient: Option<PatientData>,
) -> rusqlite::Result<FeedMessage> {
    let observations = match row.get_ref(10)?.as_bytes_or_null()? {
        Some(text) => decode_observations(10, text)?,
        None => Vec::new(),
    };
    Ok(FeedMessage {
        id: row.get(0)?,
        received_at: instant(row.get(1)?),
        outcome: outcome_of(row.get_ref(2)?.as_str()?),
        reason: row.get(3)?,
        sending_application: row.get(4)?,
        sending_facility: row.get(5)?,
        control_id: row.get(6)?,
        message_type: row.get(7)?,
        location: row.get(8)?,
        device: row.get(9)?,
        patient,
        observations,
        merged_from: None,
        alarms: Vec::new(),
    })
}

/// A limit as SQLite takes it (`-1`: none).
fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

pub(super) fn read_feed(
    conn: &Connection,
    after: ChangeCursor,
    limit: usize,
) -> rusqlite::Result<Feed> {
    // A range of the primary key, like the change feed: the cost is that of the messages
    // returned. One writer, so ids are in commit order and the last id read is the cursor.
    let mut statement = conn.prepare_cached(FEED)?;
    let mut rows = statement.query(params![after.position(), sql_limit(Some(limit))])?;
    let mut messages = Vec::new();
    while let Some(row) = rows.next()? {
        let patient = match row.get::<_, Option<String>>(11)? {
            Some(key) => Some(PatientData {
                key,
                id: row.get(12)?,
                assigning_authority: row.get(13)?,
                identifiers: row.get(14)?,
                name: row.get(15)?,
                birth_date: row.get(16)?,
                sex: row.get(17)?,
                is_update: false,
            }),
            None => None,
        };
        let mut message = feed_message(row, patient)?;
        message.merged_from = row.get(18)?;
        messages.push(message);
    }
    super::alarms::attach(conn, &mut messages)?;
    let next = messages.last().map_or(after, |m| ChangeCursor::at(m.id));
    Ok(Feed { messages, next })
}

/// The unassigned devices' newest messages ([`crate::store::StoreRead::device_feeds`]):
/// the devices by their newest message (the partial `messages_by_device_key` index: the
/// cost is that of the devices' messages, none of the patients'), then each one's newest.
pub(super) fn read_device_feeds(
    conn: &Connection,
    n_devices: usize,
    limit: usize,
) -> rusqlite::Result<Vec<Vec<FeedMessage>>> {
    let mut devices = conn.prepare_cached(
        "SELECT device_key, max(id) AS newest FROM messages WHERE device_key IS NOT NULL \
         GROUP BY device_key ORDER BY newest DESC LIMIT ?1",
    )?;
    let keys = devices
        .query_map([sql_limit(Some(n_devices))], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {FEED_COLUMNS} FROM messages m WHERE m.device_key = ?1 \
         ORDER BY m.id DESC LIMIT ?2"
    ))?;
    let mut feeds = Vec::with_capacity(keys.len());
    for key in keys {
        let mut rows = statement.query(params![key, sql_limit(Some(limit))])?;
        let mut messages = Vec::new();
        while let Some(row) = rows.next()? {
            messages.push(feed_message(row, None)?);
        }
        super::alarms::attach(conn, &mut messages)?;
        feeds.push(messages);
    }
    Ok(feeds)
}

pub(super) fn read_feed_head(conn: &Connection) -> rusqlite::Result<ChangeCursor> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |row| {
        row.get(0)
    })
    .map(ChangeCursor::at)
}

pub(super) fn read_patient_feed(
    conn: &Connection,
    tail: Option<&Mutex<PatientTail>>,
    key: &str,
    limit: usize,
) -> rusqlite::Result<Option<(PatientData, Vec<FeedMessage>)>> {
    let Some((patient, scope)) = find_patient(conn, tail, key)? else {
        return Ok(None);
    };
    let mut messages = Vec::new();
    if limit > 0 {
        scan_patient_messages(conn, &scope, FEED_COLUMNS, 0..i64::MAX, |row| {
            messages.push(feed_message(row, Some(patient.clone()))?);
            Ok(messages.len() < limit)
        })?;
    }
    super::alarms::attach(conn, &mut messages)?;
    Ok(Some((patient, messages)))
}

/// How far an observation time may run ahead of its message's arrival and still be found
/// by a `since` filter, in ms: a device clock set a little ahead, or an hour off after a
/// daylight-saving mistake. A time-filtered read looks at the patient's messages received
/// from `since` less this on.
pub(super) const OBSERVED_AHEAD_MS: i64 = 60 * 60 * 1000;

/// How far an observation time may lie before its message's arrival and still be found by
/// an `until` filter, in ms: a monitor that sends what it measured while its link was
/// down. A time-filtered read looks at the patient's messages received up to `until` plus
/// this. (With `until` at now, as the live view asks, this costs nothing.)
pub(super) const OBSERVED_BEHIND_MS: i64 = 60 * 60 * 1000;

/// The ids that hold every record observed in `[since, until)`, given the slack above:
/// the messages received from `since - OBSERVED_AHEAD_MS` to `until + OBSERVED_BEHIND_MS`
/// (and [`RECEIVED_DISORDER_MS`] either side). A record observed further from its
/// arrival is not found by a time filter, only by a read without one.
pub(super) fn ids_observed(
    conn: &Connection,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> rusqlite::Result<std::ops::Range<i64>> {
    ids_received(
        conn,
        since_ms.map(|ms| ms.saturating_sub(OBSERVED_AHEAD_MS)),
        until_ms.map(|ms| ms.saturating_add(OBSERVED_BEHIND_MS)),
    )
}

pub(super) fn read_observations(
    conn: &Connection,
    tail: Option<&Mutex<PatientTail>>,
    key: &str,
    query: &ObservationQuery,
) -> rusqlite::Result<Option<Vec<ObservationRow>>> {
    let Some((_, scope)) = find_patient(conn, tail, key)? else {
        return Ok(None);
    };
    let mut records = Vec::new();
    if query.limit == 0 {
        return Ok(Some(records));
    }
    // Newest first from the page's start (the previous page's last record), down to the
    // oldest message that can hold a record observed after `since`: a page costs the
    // messages it looks at, whatever the history before them.
    let mut ids = ids_observed(conn, query.since_ms, query.until_ms)?;
    if let Some(after) = query.after {
        ids.end = ids.end.min(after.message_id.saturating_add(1));
    }
    let wanted = |encoded: &encoded::Encoded<'_>| -> rusqlite::Result<bool> {
        if let Some(code) = &query.code
            && !encoded.text_is(encoded::field::CODE, code)?
        {
            return Ok(false);
        }
        if query.since_ms.is_some() || query.until_ms.is_some() {
            let observed = encoded.integer(encoded::field::OBSERVED_MS)?;
            if query.since_ms.is_some_and(|since| observed < since)
                || query.until_ms.is_some_and(|until| observed >= until)
            {
                return Ok(false);
            }
        }
        Ok(true)
    };
    scan_patient_messages(conn, &scope, RECORD_COLUMNS, ids, |row| {
        let Some(column) = row.get_ref(4)?.as_bytes_or_null()? else {
            return Ok(true);
        };
        let message_id: i64 = row.get(0)?;
        let first = match query.after {
            Some(after) if after.message_id == message_id => after.index.saturating_add(1),
            _ => 0,
        };
        // The message's own columns, read once it has a record on the page.
        let mut context: Option<(String, jiff::Timestamp, String)> = None;
        encoded::each_observation(column, |index, encoded| {
            if index < first || !wanted(encoded)? {
                return Ok(ControlFlow::Continue(()));
            }
            let (control_id, received_at, device) = match &context {
                Some(context) => context.clone(),
                None => {
                    let read = (
                        row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        instant(row.get(2)?),
                        row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    );
                    context = Some(read.clone());
                    read
                }
            };
            records.push(ObservationRow {
                observation: encoded.to_data(index)?,
                message_id,
                control_id,
                received_at,
                device,
            });
            Ok::<_, rusqlite::Error>(if records.len() >= query.limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(records.len() < query.limit)
    })?;
    Ok(Some(records))
}

/// A code's values while a trend is read: per bucket start, the values.
struct SeriesValues {
    code: String,
    /// The code's JSON text as first read: most records compare with it byte for byte.
    token: Vec<u8>,
    code_text: String,
    units: String,
    buckets: Vec<(i64, Vec<f64>)>,
    /// Bucket start → position in `buckets`.
    positions: HashMap<i64, usize>,
    /// The bucket the last value went to: consecutive messages mostly share one.
    last: Option<(i64, usize)>,
}

impl SeriesValues {
    fn bucket(&mut self, start_ms: i64) -> &mut Vec<f64> {
        let position = match self.last {
            Some((start, position)) if start == start_ms => position,
            _ => {
                let buckets = &mut self.buckets;
                let position = *self.positions.entry(start_ms).or_insert_with(|| {
                    buckets.push((start_ms, Vec::new()));
                    buckets.len() - 1
                });
                self.last = Some((start_ms, position));
                position
            }
        };
        &mut self.buckets[position].1
    }

    fn finish(self) -> TrendSeries {
        let mut buckets: Vec<TrendBucket> = self
            .buckets
            .into_iter()
            .map(|(start_ms, mut values)| summarise(start_ms, &mut values))
            .collect();
        buckets.sort_unstable_by_key(|b| b.start_ms);
        TrendSeries {
            code: self.code,
            code_text: self.code_text,
            units: self.units,
            buckets,
        }
    }
}

/// Count, min, median and max of a bucket's values (at least one).
fn summarise(start_ms: i64, values: &mut [f64]) -> TrendBucket {
    let n = values.len();
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let (below, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    let median = if n % 2 == 1 {
        upper
    } else {
        // The lower middle value is the largest of those below the upper one.
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    };
    TrendBucket {
        start_ms,
        count: n as u64,
        min,
        median,
        max,
    }
}

/// A trend's values as read so far, per code in the order first seen.
struct TrendValues<'q> {
    query: &'q TrendQuery,
    bucket_ms: i64,
    series: Vec<SeriesValues>,
}

impl<'q> TrendValues<'q> {
    fn new(query: &'q TrendQuery) -> Self {
        TrendValues {
            query,
            bucket_ms: query.bucket_ms.max(1),
            series: Vec::new(),
        }
    }

    /// Adds a message's values (its `observations` column). Messages come newest first,
    /// so a code's first record names its text and units; of each OBX only the code, the
    /// number and the time are looked at until it counts.
    fn add(&mut self, column: &[u8]) -> rusqlite::Result<()> {
        let query = self.query;
        encoded::each_observation(column, |_, encoded| {
            // The cheapest test first: comparing bytes, then reading numbers.
            if let Some(code) = &query.code
                && !encoded.text_is(encoded::field::CODE, code)?
            {
                return Ok(ControlFlow::Continue(()));
            }
            let Some(value) = encoded.number(encoded::field::NUMERIC)? else {
                return Ok(ControlFlow::Continue(()));
            };
            let observed = encoded.integer(encoded::field::OBSERVED_MS)?;
            if observed < query.since_ms || observed >= query.until_ms {
                return Ok(ControlFlow::Continue(()));
            }
            // A value its device marked wrong (OBX-11 `W`) or not obtained (`X`, `N`) is
            // no point of a trend, as it is no number on the ward view
            // (documents::reading).
            let status = encoded.text(encoded::field::STATUS)?;
            if ["W", "X", "N"]
                .iter()
                .any(|s| status.trim().eq_ignore_ascii_case(s))
            {
                return Ok(ControlFlow::Continue(()));
            }
            let token = encoded.token(encoded::field::CODE);
            let known = self.series.iter().position(|known| known.token == token);
            let position = match known {
                Some(position) => position,
                None => {
                    let code = encoded.text(encoded::field::CODE)?;
                    match self.series.iter().position(|known| known.code == *code) {
                        // The same code written otherwise (escaped by SQLite's JSON).
                        Some(position) => position,
                        None => {
                            self.series.push(SeriesValues {
                                code: code.into_owned(),
                                token: token.to_vec(),
                                code_text: encoded.text(encoded::field::CODE_TEXT)?.into_owned(),
                                units: encoded.text(encoded::field::UNITS)?.into_owned(),
                                buckets: Vec::new(),
                                positions: HashMap::new(),
                                last: None,
                            });
                            self.series.len() - 1
                        }
                    }
                }
            };
            let start = observed.div_euclid(self.bucket_ms) * self.bucket_ms;
            self.series[position].bucket(start).push(value);
            Ok::<_, rusqlite::Error>(ControlFlow::Continue(()))
        })
    }

    /// Adds what was read of older messages: a code's text and units stay the newer's.
    fn merge_older(&mut self, older: TrendValues<'_>) {
        for series in older.series {
            match self
                .series
                .iter_mut()
                .find(|known| known.code == series.code)
            {
                Some(known) => {
                    for (start, values) in series.buckets {
                        known.bucket(start).extend(values);
                    }
                }
                None => self.series.push(series),
            }
        }
    }

    fn finish(self) -> Vec<TrendSeries> {
        let mut series: Vec<TrendSeries> =
            self.series.into_iter().map(SeriesValues::finish).collect();
        series.sort_by(|a, b| a.code.cmp(&b.code));
        series
    }
}

/// The trend scan's one column.
pub(super) const TREND_COLUMNS: &str = "m.observations";

/// Adds a message read as [`TREND_COLUMNS`] to a trend; goes on to the next.
fn add_row(values: &mut TrendValues<'_>, row: &rusqlite::Row<'_>) -> rusqlite::Result<bool> {
    if let Some(column) = row.get_ref(0)?.as_bytes_or_null()? {
        values.add(column)?;
    }
    Ok(true)
}

/// A trend reads its older half on a second connection when the pool has one free and
/// the patient's indexed messages in range span at least this many ids: the read's cost
/// is mostly reading pages and the observations' JSON, which two cores do in half the
/// time. (Slow reads are bounded by the pool either way: the helper is a slow read's
/// connection.)
pub(super) const PARALLEL_TREND_IDS: i64 = 16_384;

pub(super) fn read_trends(
    conn: &Connection,
    helper: Option<&mut Connection>,
    tail: Option<&Mutex<PatientTail>>,
    key: &str,
    query: &TrendQuery,
) -> rusqlite::Result<Option<Vec<TrendSeries>>> {
    let Some((_, scope)) = find_patient(conn, tail, key)? else {
        return Ok(None);
    };
    if query.since_ms >= query.until_ms {
        return Ok(Some(Vec::new()));
    }
    let ids = ids_observed(conn, Some(query.since_ms), Some(query.until_ms))?;
    let mut values = TrendValues::new(query);
    // The part of the range in `patient_messages` below the tail.
    let below = scope
        .in_tail
        .first()
        .map_or(scope.known_through.saturating_add(1), |e| e.message)
        .min(ids.end);
    let split = match helper {
        Some(helper) if below.saturating_sub(ids.start) >= PARALLEL_TREND_IDS => {
            Some((helper, ids.start + (below - ids.start) / 2))
        }
        _ => None,
    };
    let Some((helper, middle)) = split else {
        scan_patient_messages(conn, &scope, TREND_COLUMNS, ids, |row| {
            add_row(&mut values, row)
        })?;
        return Ok(Some(values.finish()));
    };
    // The older half on the helper, in its own snapshot: begun after this read's, so it
    // holds every message this one does below `middle`, and those are in the table,
    // where entries only ever join (and messages are never changed).
    let older = std::thread::scope(|threads| {
        let (patient_row, start) = (scope.row, ids.start);
        // The connection moves to the thread (a connection is used by one thread at once).
        let older = threads.spawn(move || {
            let snapshot = helper.unchecked_transaction()?;
            let mut older = TrendValues::new(query);
            scan_indexed_messages(
                &snapshot,
                patient_row,
                TREND_COLUMNS,
                start..middle,
                |row| add_row(&mut older, row),
            )?;
            snapshot.commit()?;
            Ok::<_, rusqlite::Error>(older)
        });
        scan_patient_messages(conn, &scope, TREND_COLUMNS, middle..ids.end, |row| {
            add_row(&mut values, row)
        })?;
        older
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    values.merge_older(older);
    Ok(Some(values.finish()))
}

/// An exporter's file positions, of `keys` or of all its files.
pub(super) fn read_export_files(
    conn: &Connection,
    exporter: &str,
    keys: Option<&[String]>,
) -> rusqlite::Result<HashMap<String, FilePosition>> {
    let mut positions = HashMap::new();
    let position = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(String, FilePosition)> {
        let length: i64 = row.get(2)?;
        Ok((
            row.get(0)?,
            FilePosition {
                through: row.get(1)?,
                length: u64::try_from(length).unwrap_or(0),
            },
        ))
    };
    match keys {
        None => {
            let mut statement = conn.prepare_cached(
                "SELECT patient, through, length FROM export_files WHERE exporter = ?1",
            )?;
            for row in statement.query_map([exporter], position)? {
                let (key, at) = row?;
                positions.insert(key, at);
            }
        }
        Some(keys) => {
            let mut statement = conn.prepare_cached(
                "SELECT patient, through, length FROM export_files \
                 WHERE exporter = ?1 AND patient = ?2",
            )?;
            for key in keys {
                if let Some((key, at)) = statement
                    .query_row(params![exporter, key], position)
                    .optional()?
                {
                    positions.insert(key, at);
                }
            }
        }
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_written_with_escapes_joins_its_series() {
        let query = TrendQuery {
            code: None,
            since_ms: 0,
            until_ms: 10_000,
            bucket_ms: 1000,
        };
        let column = |code: &str, value: f64| {
            format!(
                r#"[["NM",{code},"TEXT","MDC","","{value}",{value},"U","","","","F","t",1500,""]]"#
            )
        };
        let mut values = TrendValues::new(&query);
        values.add(column(r#""AB""#, 1.0).as_bytes()).unwrap();
        values.add(column(r#""A\u0042""#, 3.0).as_bytes()).unwrap();
        values.add(column(r#""C""#, 2.0).as_bytes()).unwrap();
        let series = values.finish();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].code, "AB");
        assert_eq!(series[0].buckets[0].count, 2);
        assert_eq!(series[0].buckets[0].median, 2.0);
        assert_eq!(series[1].buckets[0].start_ms, 1000);
    }
}
