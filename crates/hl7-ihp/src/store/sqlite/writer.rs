//! The writer thread: takes every waiting batch, writes it in one transaction, commits
//! (the one fsync) and only then answers each caller (group commit).

use super::*;
use crate::store::MergeRequest;

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) dedupe: bool,
    pub(super) max_batch: usize,
    pub(super) state: WriterState,
    /// Shared with the readers.
    pub(super) tail: Arc<Mutex<PatientTail>>,
    pub(super) n_transactions: u64,
    pub(super) counters: Arc<Counters>,
    pub(super) checkpoint: Arc<CheckpointSignal>,
    pub(super) failures: FailureLog,
    /// The next transaction does the occasional checks (a purge asks for them first).
    pub(super) check_next: bool,
    /// Purges: the patients whose index entries of removed messages wait for the next
    /// sweep, with the highest such message; `None` when not known (since the start).
    pub(super) stale: Option<HashMap<i64, i64>>,
    /// Purges: removed messages whose index entries wait for the next sweep.
    pub(super) unswept: usize,
}

/// What a transaction did to the patient tail: undone if it rolls back, completed (the
/// moved entries forgotten) once it commits.
#[derive(Default)]
pub(super) struct TailChange {
    /// This transaction's entries, by patient.
    pub(super) appended: Vec<(i64, Entry)>,
    /// Whether they were added to the shared tail, and `known_through` before.
    pub(super) shared: Option<i64>,
    /// The entries moved into `patient_messages`: patient and last message id.
    pub(super) moved: Vec<(i64, i64)>,
    /// The highest message id written (0: none).
    pub(super) last_id: i64,
    /// Whether this transaction also does the occasional checks.
    pub(super) check_age: bool,
    /// Whether this transaction moves everything waiting (at shutdown).
    pub(super) move_all: bool,
}

/// What the writer remembers between transactions. All of it is a cache of the database
/// and is forgotten when a transaction fails.
#[derive(Default)]
pub(super) struct WriterState {
    /// The next message id; read from the database when `None`.
    pub(super) next_id: Option<i64>,
    pub(super) patients: HashMap<String, CachedPatient>,
    pub(super) recent_keys: RecentKeys,
    /// Loaded from the database when `None`.
    pub(super) keys: Option<PendingKeys>,
    pub(super) recent_refusals: RecentRefusals,
}

/// How often a failing store says so: once when it starts failing, then a summary now
/// and then, and once when it works again, so that a full disk does not cost a log line
/// per message.
#[derive(Default)]
pub(super) struct FailureLog {
    since: Option<Instant>,
    last_line: Option<Instant>,
    n_failed: u64,
    n_messages: usize,
}

impl FailureLog {
    fn failed(&mut self, error: &rusqlite::Error, n_messages: usize) {
        let now = Instant::now();
        self.n_failed += 1;
        self.n_messages += n_messages;
        match (self.since, self.last_line) {
            (None, _) => {
                tracing::warn!(%error, n_messages, "store transaction failed; messages get a reject until storing works again");
                self.since = Some(now);
                self.last_line = Some(now);
                self.n_failed = 0;
                self.n_messages = 0;
            }
            (Some(since), Some(last)) if now - last >= FAILURE_SUMMARY_EVERY => {
                tracing::warn!(
                    %error,
                    n_failed_transactions = self.n_failed,
                    n_messages = self.n_messages,
                    failing_for_s = (now - since).as_secs(),
                    "store still failing"
                );
                self.last_line = Some(now);
                self.n_failed = 0;
                self.n_messages = 0;
            }
            _ => {}
        }
    }

    fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                failing_for_s = since.elapsed().as_secs(),
                "store works again"
            );
            *self = FailureLog::default();
        }
    }
}

/// Refused frames this writer kept lately, by their bytes' hash, so that the same bytes
/// again are counted on that row ([`Stored::Repeated`]). Bounded: the oldest are forgotten
/// first, and then the same bytes start a new row.
#[derive(Default)]
pub(super) struct RecentRefusals {
    ids: HashMap<[u8; 32], i64>,
    order: VecDeque<[u8; 32]>,
}

impl RecentRefusals {
    pub(super) fn get(&self, hash: &[u8; 32]) -> Option<i64> {
        self.ids.get(hash).copied()
    }

    pub(super) fn note(&mut self, hash: [u8; 32], id: i64) {
        if self.ids.insert(hash, id).is_none() {
            self.order.push_back(hash);
        }
        while self.order.len() > RECENT_REFUSALS {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }

    /// Rare (a kept row was removed by hand): the scan of `order` keeps it in step.
    pub(super) fn forget(&mut self, hash: &[u8; 32]) {
        self.ids.remove(hash);
        self.order.retain(|kept| kept != hash);
    }
}

/// An integer from `meta`, 0 when absent.
pub(super) fn meta_value(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// A message as the writer stores it. [`Row::new`] runs in `commit`, on the caller's
/// thread: it encodes the observations, hashes the key and moves the rest, so that the
/// writer, the one serial step, only binds values.
pub(super) struct Row {
    pub(super) received_ms: i64,
    pub(super) peer: String,
    pub(super) peer_identity: Option<String>,
    pub(super) key: Option<MessageKey>,
    /// Accepted messages with a key: the duplicate key's hash.
    pub(super) key_hash: Option<i64>,
    pub(super) hash: [u8; 32],
    pub(super) verdict: Verdict,
    /// `MSH-9.1^MSH-9.2`, MSH-12 and PV1-3: kept for every outcome when extracted, because
    /// they help whoever inspects a reject.
    pub(super) message_type: Option<String>,
    pub(super) version: Option<String>,
    pub(super) location: Option<String>,
    /// Accepted messages only.
    pub(super) device: Option<String>,
    /// Accepted messages without a patient, with observations: their device
    /// (`crate::unassigned::device_key`).
    pub(super) device_key: Option<String>,
    pub(super) patient: Option<PatientData>,
    pub(super) n_observations: i64,
    /// The observations as JSON (`observations` column), when there are any.
    pub(super) observations: Option<String>,
    /// The ACK code it is answered with when stored as new.
    pub(super) ack_code: Option<String>,
    /// Accepted patient merges only: whom to merge into `patient`.
    pub(super) merge: Option<MergeRequest>,
    /// The bytes as stored (compressed when that makes them smaller) and their
    /// `raw_encoding` (store/sqlite/raw.rs).
    pub(super) raw: Vec<u8>,
    pub(super) raw_encoding: Option<i64>,
    /// The message this one replays.
    pub(super) replay_of: Option<i64>,
    /// Accepted alarm reports only: their alarms (`alarms` table).
    pub(super) alarms: Vec<crate::alarm::AlarmData>,
}

impl Row {
    pub(super) fn new(message: NewMessage) -> Row {
        let accepted = message.verdict == Verdict::Accept;
        let key_hash = match (&message.key, accepted) {
            (Some(key), true) => Some(key_hash(key)),
            _ => None,
        };
        let (raw, raw_encoding) = raw::encode(message.raw);
        let mut row = Row {
            received_ms: message.received_at.as_millisecond(),
            peer: message.peer,
            peer_identity: message.peer_identity,
            key: message.key,
            key_hash,
            hash: message.hash,
            verdict: message.verdict,
            message_type: None,
            version: None,
            location: None,
            device: None,
            device_key: None,
            patient: None,
            n_observations: 0,
            observations: None,
            ack_code: message.ack_code,
            merge: None,
            raw,
            raw_encoding,
            replay_of: message.replay_of,
            alarms: Vec::new(),
        };
        if let Some(content) = message.content {
            row.message_type = Some(format!("{}^{}", content.message_type, content.trigger));
            row.version = Some(content.version);
            row.location = content.location;
            if accepted {
                if content.patient.is_none() {
                    row.device_key = crate::unassigned::message_device_key(
                        &content.observations,
                        &content.alarms,
                        &content.device,
                    );
                }
                row.device = Some(content.device);
                row.patient = content.patient;
                row.merge = content.merge;
                row.alarms = content.alarms;
                row.n_observations = content.observations.len() as i64;
                row.observations = encode_observations(&content.observations);
            }
        }
        row
    }
}

/// A patient row as stored.
pub(super) struct CachedPatient {
    pub(super) row: i64,
    pub(super) fields: PatientFields,
}

#[derive(Clone, PartialEq, Eq)]
pub(super) struct PatientFields {
    pub(super) patient_id: String,
    pub(super) assigning_authority: String,
    pub(super) identifiers: String,
    pub(super) name: String,
    pub(super) birth_date: String,
    pub(super) sex: String,
}

impl PatientFields {
    pub(super) fn from_data(patient: &PatientData) -> Self {
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
    pub(super) fn merge(&mut self, patient: &PatientData) -> bool {
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
pub(super) struct Tally {
    pub(super) n_stored: u64,
    pub(super) n_duplicates: u64,
    pub(super) n_repeated: u64,
    pub(super) n_reused_control_ids: u64,
    /// Patient merges made: they move index entries from one patient to another, so the
    /// purge's record of whose entries wait for a sweep no longer holds.
    pub(super) n_merges: u64,
}

/// Above every message stored, and above every one a purge removed (`purged_through`), so
/// that an id is never handed out twice even when every message is gone.
pub(super) const SELECT_NEXT_ID: &str = "SELECT max(coalesce((SELECT max(id) FROM messages), 0), \
     coalesce((SELECT value FROM meta WHERE name = 'purged_through'), 0)) + 1";

pub(super) const FIND_KEY: &str = "SELECT message FROM message_keys \
     WHERE sent_ms = ?1 AND key_hash = ?2 AND hash_prefix = ?3";

pub(super) const MESSAGE_KEY: &str = "SELECT hash, sending_application, sending_facility, control_id \
     FROM messages WHERE id = ?1";

pub(super) const INSERT_PATIENT_ENTRY: &str = "INSERT OR IGNORE INTO patient_messages \
     (patient, message, n_observations) VALUES (?1, ?2, ?3)";

pub(super) const INSERT_KEY: &str = "INSERT OR IGNORE INTO message_keys \
     (sent_ms, key_hash, hash_prefix, message) VALUES (?1, ?2, ?3, ?4)";

pub(super) const FIND_PATIENT: &str = "SELECT id, patient_id, assigning_authority, identifiers, name, \
     birth_date, sex FROM patients WHERE key = ?1";

pub(super) const INSERT_PATIENT: &str = "INSERT INTO patients (key, patient_id, assigning_authority, \
     identifiers, name, birth_date, sex, created_ms, updated_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";

pub(super) const UPDATE_PATIENT: &str = "UPDATE patients SET patient_id = ?2, assigning_authority = ?3, \
     identifiers = ?4, name = ?5, birth_date = ?6, sex = ?7, updated_ms = ?8 WHERE id = ?1";

pub(super) const INSERT_MESSAGE: &str = "INSERT INTO messages (id, received_ms, peer, \
     sending_application, sending_facility, control_id, hash, outcome, reason, message_type, \
     version, location, device, patient, n_observations, sent_ms, key_hash, hash_prefix, \
     observations, raw, ack_code, peer_identity, replay_of, raw_encoding, device_key) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25)";

pub(super) const COUNT_REPEAT: &str = "UPDATE messages \
     SET n_received = n_received + 1, last_received_ms = ?2 WHERE id = ?1";

pub(super) const SET_META: &str = "INSERT INTO meta (name, value) VALUES (?1, ?2) \
     ON CONFLICT (name) DO UPDATE SET value = excluded.value";

/// A patient file's position (`export_files`, schema version 5).
pub(super) const SET_EXPORT_FILE: &str = "INSERT INTO export_files (exporter, patient, through, length) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (exporter, patient) DO UPDATE SET through = excluded.through, \
     length = excluded.length";

/// The writer's statements, prepared once per transaction.
pub(super) struct Statements<'c> {
    pub(super) find_key: CachedStatement<'c>,
    pub(super) message_key: CachedStatement<'c>,
    pub(super) insert_key: CachedStatement<'c>,
    pub(super) insert_patient_entry: CachedStatement<'c>,
    pub(super) find_patient: CachedStatement<'c>,
    pub(super) insert_patient: CachedStatement<'c>,
    pub(super) update_patient: CachedStatement<'c>,
    pub(super) insert_message: CachedStatement<'c>,
    pub(super) count_repeat: CachedStatement<'c>,
    pub(super) set_meta: CachedStatement<'c>,
    pub(super) find_merge: CachedStatement<'c>,
    pub(super) find_patient_row: CachedStatement<'c>,
    pub(super) insert_alarm: CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    pub(super) fn prepare(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Statements {
            find_key: conn.prepare_cached(FIND_KEY)?,
            message_key: conn.prepare_cached(MESSAGE_KEY)?,
            insert_key: conn.prepare_cached(INSERT_KEY)?,
            insert_patient_entry: conn.prepare_cached(INSERT_PATIENT_ENTRY)?,
            find_patient: conn.prepare_cached(FIND_PATIENT)?,
            insert_patient: conn.prepare_cached(INSERT_PATIENT)?,
            update_patient: conn.prepare_cached(UPDATE_PATIENT)?,
            insert_message: conn.prepare_cached(INSERT_MESSAGE)?,
            count_repeat: conn.prepare_cached(COUNT_REPEAT)?,
            set_meta: conn.prepare_cached(SET_META)?,
            find_merge: conn.prepare_cached(super::merge::FIND_MERGE)?,
            find_patient_row: conn.prepare_cached(super::merge::FIND_PATIENT_ROW)?,
            insert_alarm: conn.prepare_cached(super::alarms::INSERT_ALARM)?,
        })
    }
}

/// One request's answer from a successful transaction.
pub(super) enum Done {
    Commit(Vec<Stored>),
    Watermark,
}

impl Writer {
    pub(super) fn run(mut self) {
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
            let first = match first {
                Request::Purge { request, reply } => {
                    self.purge(request, reply);
                    continue;
                }
                first => first,
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
    pub(super) fn run_group(&mut self, group: Vec<Request>, n_messages: usize, move_all: bool) {
        let mut tally = Tally::default();
        let mut change = TailChange::default();
        let counters = Arc::clone(&self.counters);
        let file = counters.file.as_ref();
        let file_lost = || {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some(FILE_LOST.into()),
            )
        };
        // Once the file is known lost nothing more is written. Otherwise it is looked at
        // (one `stat`) after the commit, before anyone is answered: a file deleted or
        // replaced before or while the transaction ran took the transaction with it, so
        // none of it is acknowledged.
        let result = if file.is_some_and(FileWatch::known_lost) {
            Err(file_lost())
        } else {
            match self.transaction(&group, &mut tally, &mut change, move_all) {
                Ok(_) if !file.is_none_or(FileWatch::intact) => Err(file_lost()),
                other => other,
            }
        };
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
                self.failures.succeeded();
                if tally.n_merges > 0 {
                    // The next sweep looks at every patient (purge.rs, `sweep_entries`).
                    self.stale = None;
                }
                let counters = &self.counters;
                counters.health.set(None);
                counters.n_transactions.fetch_add(1, Ordering::Relaxed);
                counters
                    .n_stored
                    .fetch_add(tally.n_stored, Ordering::Relaxed);
                counters
                    .n_duplicates
                    .fetch_add(tally.n_duplicates, Ordering::Relaxed);
                counters
                    .n_repeated
                    .fetch_add(tally.n_repeated, Ordering::Relaxed);
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
                self.failures.failed(&error, n_messages);
                self.counters
                    .n_failed_transactions
                    .fetch_add(1, Ordering::Relaxed);
                // What the writer remembers may describe rows that were rolled back.
                self.state = WriterState::default();
                let message = error.to_string();
                self.counters.health.set(Some(format!(
                    "the last store transaction failed: {message}"
                )));
                for request in group {
                    let error = StoreError::Database(message.clone());
                    match request {
                        Request::Commit { reply, .. } => {
                            let _ = reply.send(Err(error));
                        }
                        Request::SetWatermark { reply, .. } => {
                            let _ = reply.send(Err(error));
                        }
                        Request::Purge { reply, .. } => {
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
    pub(super) fn transaction(
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
        change.check_age = move_all
            || std::mem::take(&mut self.check_next)
            || self.n_transactions.is_multiple_of(AGE_CHECK_EVERY);
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
    pub(super) fn control(&mut self, request: Request) {
        match request {
            Request::Hold(release) => {
                let _ = release.recv();
            }
            Request::Exec { sql, reply } => {
                let _ = reply.send(self.conn.execute_batch(&sql).map_err(database_error));
            }
            Request::Commit { .. } | Request::SetWatermark { .. } | Request::Purge { .. } => {
                unreachable!("writes run in groups, purges alone")
            }
        }
    }

    #[cfg(not(test))]
    pub(super) fn control(&mut self, _request: Request) {
        unreachable!("only tests send control requests")
    }
}

pub(super) fn write_group(
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
                        conn,
                        tail,
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
            Request::SetWatermark {
                name, id, files, ..
            } => {
                if let Some((exporter, files)) = files {
                    let mut set = conn.prepare_cached(SET_EXPORT_FILE)?;
                    for (patient, position) in files {
                        let length = i64::try_from(position.length).unwrap_or(i64::MAX);
                        set.execute(params![exporter, patient, position.through, length])?;
                    }
                }
                // Before the watermark moves: the merges it passes, read from the old one.
                super::merge::forget_merged_files(conn, name, *id)?;
                statements.set_meta.execute(params![name, id])?;
                done.push(Done::Watermark);
            }
            Request::Purge { .. } => unreachable!("purges run alone"),
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

#[allow(clippy::too_many_arguments)]
pub(super) fn write_message(
    conn: &Connection,
    tail: &Mutex<PatientTail>,
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

    let refused = row.verdict != Verdict::Accept;
    if refused && let Some(id) = state.recent_refusals.get(&row.hash) {
        if statements
            .count_repeat
            .execute(params![id, row.received_ms])?
            == 1
        {
            tally.n_repeated += 1;
            return Ok(Stored::Repeated { id });
        }
        // The row is gone (removed by hand): keep this copy as a new one.
        state.recent_refusals.forget(&row.hash);
    }

    let id = *next_id;
    // A merge is checked, and made, before the message's own patient row is looked up
    // (which would create the survivor): a refused one leaves the message about no one.
    let refusal = match (&row.merge, &row.patient) {
        (Some(merge), Some(survivor)) => super::merge::merge_patients(
            conn,
            statements,
            state,
            tail,
            change,
            merge,
            &survivor.key,
            id,
            row.received_ms,
        )?
        .err(),
        _ => None,
    };
    if row.merge.is_some() && refusal.is_none() {
        tally.n_merges += 1;
    }
    let patient = match (&row.patient, &refusal) {
        (Some(patient), None) => Some(patient_row(statements, state, patient, row.received_ms)?),
        _ => None,
    };
    let key = row.key.as_ref();
    // A refused merge is stored as an error: no device, observations or duplicate key.
    let accepted = refusal.is_none();
    let key_hash = row.key_hash.filter(|_| accepted);
    let verdict = match &refusal {
        Some(reason) => Verdict::Error {
            reason: reason.clone(),
        },
        None => row.verdict.clone(),
    };
    let ack_code = match &refusal {
        Some(_) => row.merge.as_ref().and_then(|m| m.refused_ack_code.clone()),
        None => row.ack_code.clone(),
    };
    statements.insert_message.execute(params![
        id,
        row.received_ms,
        row.peer,
        key.map(|k| &k.sending_application),
        key.map(|k| &k.sending_facility),
        key.map(|k| &k.control_id),
        &row.hash[..],
        outcome_name(verdict.outcome()),
        verdict.reason(),
        row.message_type,
        row.version,
        row.location,
        row.device.as_ref().filter(|_| accepted),
        patient,
        if accepted { row.n_observations } else { 0 },
        key_hash.and(key.and_then(|k| k.sent_ms)),
        key_hash,
        key_hash.map(|_| hash_prefix),
        row.observations.as_ref().filter(|_| accepted),
        row.raw,
        ack_code,
        row.peer_identity,
        row.replay_of,
        row.raw_encoding,
        row.device_key.as_ref().filter(|_| accepted),
    ])?;
    if accepted {
        for alarm in &row.alarms {
            super::alarms::insert(&mut statements.insert_alarm, id, alarm)?;
        }
    }
    if let Some(patient) = patient {
        let entry = Entry {
            message: id,
            n_observations: row.n_observations,
        };
        change.appended.push((patient, entry));
    }
    if let (Some(key_hash), Some(keys)) = (key_hash, state.keys.as_mut()) {
        keys.add((sent, key_hash, hash_prefix, id), Instant::now());
    }
    if refused {
        state.recent_refusals.note(row.hash, id);
    }
    *next_id += 1;
    tally.n_stored += 1;
    Ok(match refusal {
        Some(reason) => Stored::Refused { id, reason },
        None => Stored::New { id },
    })
}

/// The patient's row id, creating or updating the row as [`PatientFields::merge`] says.
pub(super) fn patient_row(
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
            // Merged away: the message joins the survivor, whose data it does not change
            // (what it says of the patient is the prior identity's).
            None => {
                if let Some(survivor) = super::merge::survivor_of(statements, &patient.key)? {
                    let survivor_data = PatientData {
                        key: survivor,
                        is_update: false,
                        ..patient.clone()
                    };
                    return patient_row_through_merge(
                        statements,
                        state,
                        &survivor_data,
                        received_ms,
                    );
                }
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

/// The survivor's row for a message about a patient merged away: found (or, if the
/// survivor's row is gone too, created) without taking the message's demographics.
fn patient_row_through_merge(
    statements: &mut Statements<'_>,
    state: &mut WriterState,
    survivor: &PatientData,
    received_ms: i64,
) -> rusqlite::Result<i64> {
    if let Some(cached) = state.patients.get(&survivor.key) {
        return Ok(cached.row);
    }
    match super::merge::patient_row_by_key(statements, &survivor.key)? {
        Some(row) => Ok(row),
        None => patient_row(statements, state, survivor, received_ms),
    }
}
