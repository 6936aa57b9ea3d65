//! The writer task: takes every waiting batch, writes them in one transaction with array
//! parameters (the statements' text never depends on the batch's size), commits with
//! `synchronous_commit = on` and only then answers each caller (group commit).
//!
//! Commit order is feed order: each transaction takes the feed lock
//! (`pg_advisory_xact_lock(FEED_LOCK)`, held until it commits or rolls back) before it
//! hands out message ids (from the `counters` row, in its writes' round trip), so with
//! several receivers on one database the ids are given in the order the transactions
//! commit. Its lookups (duplicate keys, refused frames, patients) run before the lock, so
//! that one receiver's lookups overlap another's writes: a key another receiver stores in
//! between fails the unique index ([`KEY_RACE`]), and the group is written again with the
//! lock taken before its lookups; a patient's fields are merged with the row as it is at
//! the write ([`UPDATE_PATIENTS`]).
//!
//! A commit that stores a message notifies the other receivers (`NOTIFY`, `listen.rs`), at
//! most once every [`NOTIFY_GAP`]; one left out is sent by the next commit after the gap,
//! or by the idle writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Statement};

use super::{db_error, pool};
use crate::store::sqlite::encoded::encode_observations;
use crate::store::{
    ChangeCursor, FilePosition, Health, MergeRequest, MessageKey, NewMessage, PatientData,
    StoreError, StoreStats, Stored, Verdict, outcome_name,
};

/// The advisory lock key every commit takes before it assigns ids (`'hl7f'`).
pub(super) const FEED_LOCK: i64 = 0x686c_3766;

/// What a transaction fails with when a duplicate key it did not find at its lookups was
/// stored meanwhile (by another receiver, between its lookups and its feed lock): the
/// writer writes the group again, whose lookups then find it.
const KEY_RACE: &str = "a duplicate key was stored concurrently; written again";

/// The shortest time between two of this writer's notifications to other receivers: at
/// hundreds of commits a second, a `NOTIFY` in every one cost each listening connection a
/// wake-up per commit. A commit within it leaves its notification to the next commit after
/// it, or to the idle writer when none comes ([`run`]).
const NOTIFY_GAP: Duration = Duration::from_millis(50);

/// How often an idle writer checks its connection, so `/healthz` notices a database that
/// went away without traffic, and one that came back.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// How long one transaction (connecting again included) may take before it is given up, the
/// connection dropped and its callers rejected: a PostgreSQL that froze, or a network that
/// drops packets without a reset, never answers, and without a bound every device would
/// wait past its ACK timeout (10 s by default) for nothing. A caller waits at most about two
/// of these (a group in progress, then its own).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3);

/// The error of a transaction that ran out of [`TRANSACTION_TIMEOUT`].
fn timed_out() -> StoreError {
    StoreError::Database(format!(
        "PostgreSQL did not answer within {} s",
        TRANSACTION_TIMEOUT.as_secs()
    ))
}

/// A request to the writer.
pub(super) enum Request {
    /// Store these rows, in order, in the next transaction.
    Commit {
        rows: Vec<Row>,
        reply: oneshot::Sender<Result<Vec<Stored>, StoreError>>,
    },
}

/// The counters behind [`StoreStats`].
#[derive(Default)]
pub(super) struct Counters {
    n_transactions: AtomicU64,
    n_failed_transactions: AtomicU64,
    n_stored: AtomicU64,
    n_duplicates: AtomicU64,
    n_repeated: AtomicU64,
    n_reused_control_ids: AtomicU64,
    /// Messages removed by purges.
    pub(super) n_purged: AtomicU64,
    /// Groups written again because another receiver stored one of their keys meanwhile.
    n_key_races: AtomicU64,
    /// The backend process id of the writer's connection now (0 before the first): the
    /// commit listener (`listen.rs`) ignores this receiver's own notifications by it.
    pub(super) writer_pid: AtomicI32,
}

impl Counters {
    pub(super) fn stats(&self) -> StoreStats {
        StoreStats {
            n_transactions: self.n_transactions.load(Ordering::Relaxed),
            n_failed_transactions: self.n_failed_transactions.load(Ordering::Relaxed),
            n_stored: self.n_stored.load(Ordering::Relaxed),
            n_duplicates: self.n_duplicates.load(Ordering::Relaxed),
            n_repeated: self.n_repeated.load(Ordering::Relaxed),
            n_reused_control_ids: self.n_reused_control_ids.load(Ordering::Relaxed),
            n_purged: self.n_purged.load(Ordering::Relaxed),
            n_key_races: self.n_key_races.load(Ordering::Relaxed),
        }
    }
}

/// A message prepared for the writer on the caller's thread: its JSON and compressed bytes.
#[derive(Clone)]
pub(super) struct Row {
    pub(super) received_ms: i64,
    peer: String,
    peer_identity: Option<String>,
    pub(super) key: Option<MessageKey>,
    pub(super) hash: Vec<u8>,
    verdict: Verdict,
    message_type: Option<String>,
    version: Option<String>,
    location: Option<String>,
    device: Option<String>,
    /// Accepted messages without a patient: their device (`crate::unassigned`).
    device_key: Option<String>,
    pub(super) patient: Option<PatientData>,
    /// An accepted patient merge (ADT^A40, A34, A47): whom to merge into `patient`, checked
    /// and made in the writer's transaction (`merge.rs`).
    pub(super) merge: Option<MergeRequest>,
    /// Set for a patient merge the store refused: stored as an error with this reason
    /// (`Stored::Refused`, answered with its refused ACK code).
    merge_refusal: Option<String>,
    n_observations: i32,
    observations: Option<String>,
    ack_code: Option<String>,
    raw: Vec<u8>,
    raw_encoding: Option<i16>,
    replay_of: Option<i64>,
    /// Accepted alarm reports only: their alarms (`alarms` table).
    alarms: Vec<crate::alarm::AlarmData>,
}

impl Row {
    pub(super) fn new(message: NewMessage) -> Row {
        let accepted = message.verdict == Verdict::Accept;
        let (raw, raw_encoding) = crate::store::sqlite::raw::encode(message.raw);
        let mut row = Row {
            received_ms: message.received_at.as_millisecond(),
            peer: message.peer,
            peer_identity: message.peer_identity,
            key: message.key,
            hash: message.hash.to_vec(),
            verdict: message.verdict,
            message_type: None,
            version: None,
            location: None,
            device: None,
            device_key: None,
            patient: None,
            merge: None,
            merge_refusal: None,
            n_observations: 0,
            observations: None,
            ack_code: message.ack_code,
            raw,
            raw_encoding: raw_encoding.and_then(|e| i16::try_from(e).ok()),
            replay_of: message.replay_of,
            alarms: Vec::new(),
        };
        if let Some(content) = message.content {
            row.message_type = Some(format!("{}^{}", content.message_type, content.trigger));
            row.version = Some(content.version);
            row.location = content.location;
            if accepted {
                row.merge = content.merge;
                if content.patient.is_none() {
                    row.device_key = crate::unassigned::message_device_key(
                        &content.observations,
                        &content.alarms,
                        &content.device,
                    );
                }
                row.device = Some(content.device);
                row.patient = content.patient;
                row.alarms = content.alarms;
                row.n_observations = i32::try_from(content.observations.len()).unwrap_or(i32::MAX);
                // SQLite's layout (store/sqlite/encoded.rs), stored as written (migration 3).
                row.observations = encode_observations(&content.observations);
            }
        }
        row
    }

    /// The row of a merge the store refused (as SQLite's writer): an error about no one
    /// with the merge's refused ACK code; no device, observations, alarms or duplicate key.
    pub(super) fn refuse(mut self, reason: String) -> Row {
        self.verdict = Verdict::Error {
            reason: reason.clone(),
        };
        if let Some(merge) = self.merge.take() {
            self.ack_code = merge.refused_ack_code;
        }
        self.merge_refusal = Some(reason);
        self.device = None;
        self.device_key = None;
        self.patient = None;
        self.n_observations = 0;
        self.observations = None;
        self.alarms = Vec::new();
        self
    }
}

/// The writer's state.
pub(super) struct Writer {
    pub(super) config: Config,
    pub(super) client: Option<(Client, Statements)>,
    pub(super) requests: mpsc::Receiver<Request>,
    pub(super) dedupe: bool,
    pub(super) max_batch: usize,
    pub(super) counters: Arc<Counters>,
    pub(super) health: Arc<Mutex<Health>>,
    /// When this writer last sent a notification, and whether a commit since then has not.
    pub(super) notified: (Option<Instant>, bool),
}

/// How [`write_rows`] ends its transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Left open (a merge's transaction goes on).
    Open,
    /// Committed.
    Commit,
    /// Committed with a notification to other receivers, when it stored a message.
    CommitAndNotify,
}

/// The statements of a transaction, prepared once per connection.
pub(super) struct Statements {
    find_keys: Statement,
    find_refused: Statement,
    pub(super) find_patients: Statement,
    pub(super) last_id: Statement,
    set_last_id: Statement,
    insert_patients: Statement,
    update_patients: Statement,
    insert_messages: Statement,
    insert_keys: Statement,
    insert_keys_any: Statement,
    count_repeats: Statement,
    insert_alarms: Statement,
}

const FIND_KEYS: &str =
    "SELECT k.sending_application, k.sending_facility, k.control_id, k.hash, k.message
    FROM message_keys k
    JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::text[])) AS u (a, f, c)
      ON k.sending_application = u.a AND k.sending_facility = u.f AND k.control_id = u.c";

const FIND_REFUSED: &str = "SELECT hash, max(id) FROM messages
    WHERE outcome <> 'accepted' AND hash = ANY($1::bytea[]) GROUP BY hash";

const FIND_PATIENTS: &str =
    "SELECT key, patient_id, assigning_authority, identifiers, name, birth_date, sex
    FROM patients WHERE key = ANY($1::text[])";

const LAST_ID: &str = "SELECT value FROM counters WHERE name = 'message_id'";

/// Hands out the batch's `$1` message ids (under the feed lock): the counter's new value is
/// the last of them. The statements after it find each new row's id from it: the writer
/// numbers its new rows -1, -2, … (`-k` is the batch's k-th new message), and `c.last - n -
/// x` (with `c` the counter, `n` the number of new rows) turns such an `x` into the id.
const SET_LAST_ID: &str =
    "UPDATE counters SET value = value + $1 WHERE name = 'message_id' RETURNING value";

/// The batch's new patients, as their first message has them (their counts follow in
/// [`UPDATE_PATIENTS`]); one another receiver stored meanwhile is left to that statement.
const INSERT_PATIENTS: &str = "INSERT INTO patients (key, patient_id, assigning_authority,
        identifiers, name, birth_date, sex, created_ms, updated_ms, n_observations)
    SELECT u.key, u.id, u.aa, u.ids, u.name, u.birth, u.sex, u.created, u.created, 0
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::int8[]) AS u (key, id, aa, ids, name, birth, sex, created)
    ON CONFLICT (key) DO NOTHING";

/// Every patient the batch's messages name: the fields as the messages leave them, merged
/// here with what the row holds now (the lookups ran before the feed lock, so another
/// receiver may have changed it since): a field an ADT of this batch carried replaces the
/// row's (`$8`…`$13` say which), another only fills an empty one; the counts add up.
const UPDATE_PATIENTS: &str = "UPDATE patients p SET
        patient_id = CASE WHEN u.r_id OR p.patient_id = '' THEN u.id ELSE p.patient_id END,
        assigning_authority = CASE WHEN u.r_aa OR p.assigning_authority = '' THEN u.aa
            ELSE p.assigning_authority END,
        identifiers = CASE WHEN u.r_ids OR p.identifiers = '' THEN u.ids ELSE p.identifiers END,
        name = CASE WHEN u.r_name OR p.name = '' THEN u.name ELSE p.name END,
        birth_date = CASE WHEN u.r_birth OR p.birth_date = '' THEN u.birth ELSE p.birth_date END,
        sex = CASE WHEN u.r_sex OR p.sex = '' THEN u.sex ELSE p.sex END,
        updated_ms = u.received, n_observations = p.n_observations + u.n_observations,
        last_message = c.last - $17 - u.last_message, last_received_ms = u.received
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::bool[], $9::bool[], $10::bool[], $11::bool[], $12::bool[], $13::bool[],
        $14::int8[], $15::int8[], $16::int8[])
      AS u (key, id, aa, ids, name, birth, sex, r_id, r_aa, r_ids, r_name, r_birth, r_sex,
        n_observations, last_message, received)
    CROSS JOIN (SELECT value AS last FROM counters WHERE name = 'message_id') c
    WHERE p.key = u.key";

const INSERT_MESSAGES: &str = "INSERT INTO messages (id, received_ms, peer, peer_identity,
        sending_application, sending_facility, control_id, hash, outcome, reason, message_type,
        version, location, device, patient, n_observations, observations, ack_code, replay_of,
        raw_encoding, raw, device_key)
    SELECT c.last - $23 - u.id, received_ms, peer, peer_identity, app, fac, ctrl, hash, outcome,
        reason, message_type, version, location, device,
        (SELECT p.id FROM patients p WHERE p.key = u.patient_key), n_observations,
        observations::json, ack_code, replay_of, raw_encoding, raw, device_key
    FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::bytea[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::text[], $16::int4[], $17::text[], $18::text[], $19::int8[],
        $20::int2[], $21::bytea[], $22::text[])
      AS u (id, received_ms, peer, peer_identity, app, fac, ctrl, hash, outcome, reason,
        message_type, version, location, device, patient_key, n_observations, observations,
        ack_code, replay_of, raw_encoding, raw, device_key)
    CROSS JOIN (SELECT value AS last FROM counters WHERE name = 'message_id') c";

/// Every alarm of the batch's new accepted alarm reports, in message and alarm order (so
/// their ids, handed out under the feed lock, are in commit order).
const INSERT_ALARMS: &str = "INSERT INTO alarms (message, idx, source, type_code, type_text,
        type_system, text, priority, kind, state, phase, inactivation, flags, measurement_code,
        measurement_text, measurement_value, measurement_numeric, measurement_units,
        measurement_limit, started_at, started_ms)
    SELECT c.last - $22 - u.message, idx, source, type_code, type_text, type_system, text,
        priority, kind, state, phase, inactivation, flags, measurement_code, measurement_text,
        measurement_value, measurement_numeric, measurement_units, measurement_limit,
        started_at, started_ms
    FROM unnest($1::int8[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::text[], $16::text[], $17::float8[], $18::text[], $19::text[],
        $20::text[], $21::int8[])
      WITH ORDINALITY
      AS u (message, idx, source, type_code, type_text, type_system, text, priority, kind,
        state, phase, inactivation, flags, measurement_code, measurement_text,
        measurement_value, measurement_numeric, measurement_units, measurement_limit,
        started_at, started_ms, n)
    CROSS JOIN (SELECT value AS last FROM counters WHERE name = 'message_id') c
    ORDER BY n";

/// The new messages' duplicate keys, with duplicate recognition on: the writer found none of
/// them stored, under the feed lock, so one that is (a conflict) fails the transaction.
const INSERT_KEYS: &str = "INSERT INTO message_keys (sending_application, sending_facility,
        control_id, hash, sent_ms, message)
    SELECT u.a, u.f, u.c, u.h, u.s, c.last - $7 - u.m
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int8[], $6::int8[])
      AS u (a, f, c, h, s, m)
    CROSS JOIN (SELECT value AS last FROM counters WHERE name = 'message_id') c";

/// The same without duplicate recognition: every copy is stored, the first one's key kept.
const INSERT_KEYS_ANY: &str = "INSERT INTO message_keys (sending_application, sending_facility,
        control_id, hash, sent_ms, message)
    SELECT u.a, u.f, u.c, u.h, u.s, c.last - $7 - u.m
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int8[], $6::int8[])
      AS u (a, f, c, h, s, m)
    CROSS JOIN (SELECT value AS last FROM counters WHERE name = 'message_id') c
    ON CONFLICT DO NOTHING";

/// Refused frames received again: an id below zero is one of this batch's new rows.
const COUNT_REPEATS: &str = "UPDATE messages m
    SET n_received = m.n_received + u.n, last_received_ms = u.last
    FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u (id, n, last)
    CROSS JOIN (SELECT value AS last FROM counters WHERE name = 'message_id') c
    WHERE m.id = CASE WHEN u.id < 0 THEN c.last - $4 - u.id ELSE u.id END";

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        // Every statement here finds rows by a key, through an index. PostgreSQL plans a
        // prepared statement once for good after a few runs, from the statistics it has
        // then: on a new database those say the tables are empty, and the duplicate-key
        // lookup was planned as a hash join over a scan of all of `message_keys` (12 ms per
        // transaction at 50,000 messages, until an ANALYZE came). This session never wants
        // such a plan.
        client
            .batch_execute(
                "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off",
            )
            .await?;
        let (find_keys, find_refused, find_patients, last_id, set_last_id) = tokio::try_join!(
            client.prepare(FIND_KEYS),
            client.prepare(FIND_REFUSED),
            client.prepare(FIND_PATIENTS),
            client.prepare(LAST_ID),
            client.prepare(SET_LAST_ID),
        )?;
        let (insert_patients, update_patients, insert_messages, insert_keys, insert_keys_any) = tokio::try_join!(
            client.prepare(INSERT_PATIENTS),
            client.prepare(UPDATE_PATIENTS),
            client.prepare(INSERT_MESSAGES),
            client.prepare(INSERT_KEYS),
            client.prepare(INSERT_KEYS_ANY),
        )?;
        let (count_repeats, insert_alarms) =
            tokio::try_join!(client.prepare(COUNT_REPEATS), client.prepare(INSERT_ALARMS),)?;
        Ok(Statements {
            find_keys,
            find_refused,
            find_patients,
            last_id,
            set_last_id,
            insert_patients,
            update_patients,
            insert_messages,
            insert_keys,
            insert_keys_any,
            count_repeats,
            insert_alarms,
        })
    }
}

/// What one transaction counted, added to [`Counters`] once it commits.
#[derive(Default)]
pub(super) struct Tally {
    n_stored: u64,
    n_duplicates: u64,
    n_repeated: u64,
    n_reused_control_ids: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.n_stored += other.n_stored;
        self.n_duplicates += other.n_duplicates;
        self.n_repeated += other.n_repeated;
        self.n_reused_control_ids += other.n_reused_control_ids;
    }
}

/// The writer's loop: until every [`super::PgStore`] handle is gone.
pub(super) async fn run(mut writer: Writer) {
    loop {
        // A notification a commit left out is sent once the gap is over, if no commit
        // with one came first.
        let wait = match writer.notified {
            (Some(at), true) => (at + NOTIFY_GAP).saturating_duration_since(Instant::now()),
            _ => IDLE_CHECK,
        };
        let first = match tokio::time::timeout(wait, writer.requests.recv()).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(_) => {
                writer.check_idle().await;
                continue;
            }
        };
        let mut group = vec![first];
        let mut n_rows = group.iter().map(Request::n_rows).sum::<usize>();
        while n_rows < writer.max_batch {
            match writer.requests.try_recv() {
                Ok(request) => {
                    n_rows += request.n_rows();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        writer.commit_group(group).await;
    }
}

impl Request {
    fn n_rows(&self) -> usize {
        match self {
            Request::Commit { rows, .. } => rows.len(),
        }
    }
}

impl Writer {
    fn set_health(&self, health: Health) {
        if let Ok(mut current) = self.health.lock() {
            if *current != health {
                match &health {
                    Health::Ok => tracing::info!("PostgreSQL store works again"),
                    Health::Failing { reason } => tracing::warn!(
                        %reason,
                        "PostgreSQL store failing; messages get a reject until storing works again"
                    ),
                }
            }
            *current = health;
        }
    }

    async fn connection(&mut self) -> Result<&mut (Client, Statements), StoreError> {
        if self.client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let client = pool::connect(&self.config).await?;
            let statements = Statements::prepare(&client)
                .await
                .map_err(|e| db_error("cannot prepare the writer's statements", &e))?;
            let pid: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .map_err(|e| db_error("cannot prepare the writer's statements", &e))?
                .get(0);
            self.counters.writer_pid.store(pid, Ordering::Relaxed);
            self.client = Some((client, statements));
        }
        self.client.as_mut().ok_or(StoreError::Closed)
    }

    /// Checks the connection, with the notification a commit left out if there is one.
    async fn check_idle(&mut self) {
        let notify = self.notified.1;
        let sql = if notify {
            format!("NOTIFY {}", super::listen::CHANNEL)
        } else {
            String::new()
        };
        // Sent or not (the store failing), it is not tried again: the others' exporters and
        // live views also read the feed now and then without being told.
        self.notified = (Some(Instant::now()), false);
        let check = async {
            match self.connection().await {
                Ok((client, _)) => client
                    .simple_query(&sql)
                    .await
                    .map(|_| ())
                    .map_err(|e| db_error("PostgreSQL does not answer", &e)),
                Err(error) => Err(error),
            }
        };
        let result = tokio::time::timeout(TRANSACTION_TIMEOUT, check)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        match result {
            Ok(()) => self.set_health(Health::Ok),
            Err(error) => {
                self.client = None;
                self.set_health(Health::Failing {
                    reason: error.to_string(),
                });
            }
        }
    }

    async fn commit_group(&mut self, group: Vec<Request>) {
        let mut rows = Vec::new();
        let mut replies = Vec::new();
        for request in group {
            match request {
                Request::Commit { rows: mut r, reply } => {
                    replies.push((r.len(), reply));
                    rows.append(&mut r);
                }
            }
        }
        let dedupe = self.dedupe;
        // A key race (another receiver stored a key of the group between its lookups and
        // its feed lock) is rare: the group is written once more with the lock taken before
        // the lookups, which cannot race.
        let mut lock_first = false;
        let end = match self.notified.0 {
            Some(at) if at.elapsed() < NOTIFY_GAP => End::Commit,
            _ => End::CommitAndNotify,
        };
        let result = loop {
            let transaction = async {
                match self.connection().await {
                    Ok((client, statements)) => {
                        write(client, statements, &rows, dedupe, lock_first, end).await
                    }
                    Err(error) => Err(error),
                }
            };
            // On a timeout the connection is dropped below, which ends the transaction on
            // the server (rolled back, unless its COMMIT had arrived: then a retransmission
            // is answered as a duplicate).
            let result = tokio::time::timeout(TRANSACTION_TIMEOUT, transaction)
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            match result {
                Err(StoreError::Database(reason)) if reason == KEY_RACE && !lock_first => {
                    lock_first = true;
                    self.counters.n_key_races.fetch_add(1, Ordering::Relaxed);
                    // The pipelined COMMIT ended the failed transaction (as a rollback);
                    // after a merge's, the ROLLBACK does.
                    if let Some((client, _)) = &self.client
                        && client.batch_execute("ROLLBACK").await.is_err()
                    {
                        self.client = None;
                    }
                }
                other => break other,
            }
        };
        match result {
            Ok((mut stored, tally)) => {
                let c = &self.counters;
                c.n_transactions.fetch_add(1, Ordering::Relaxed);
                c.n_stored.fetch_add(tally.n_stored, Ordering::Relaxed);
                c.n_duplicates
                    .fetch_add(tally.n_duplicates, Ordering::Relaxed);
                c.n_repeated.fetch_add(tally.n_repeated, Ordering::Relaxed);
                c.n_reused_control_ids
                    .fetch_add(tally.n_reused_control_ids, Ordering::Relaxed);
                self.set_health(Health::Ok);
                if stored
                    .iter()
                    .any(|s| matches!(s, Stored::New { .. } | Stored::Refused { .. }))
                {
                    self.notified = match end {
                        End::CommitAndNotify => (Some(Instant::now()), false),
                        _ => (self.notified.0, true),
                    };
                }
                // Answered in order: each caller its own part of the group.
                let mut rest = std::mem::take(&mut stored);
                for (n, reply) in replies {
                    let tail = rest.split_off(n.min(rest.len()));
                    let _ = reply.send(Ok(rest));
                    rest = tail;
                }
            }
            Err(error) => {
                self.counters
                    .n_failed_transactions
                    .fetch_add(1, Ordering::Relaxed);
                // A connection that failed a transaction may be broken: the next one is new.
                self.client = None;
                let text = error.to_string();
                self.set_health(Health::Failing {
                    reason: text.clone(),
                });
                for (_, reply) in replies {
                    let _ = reply.send(Err(StoreError::Database(text.clone())));
                }
            }
        }
    }
}

/// A patient's fields as the transaction leaves them, with what its messages add.
struct PatientChange {
    data: PatientData,
    n_observations: i64,
    last_message: i64,
    last_received_ms: i64,
    /// Set for a patient this batch creates (no row was found).
    created_ms: i64,
    /// The fields an ADT of the batch replaced ([`merge_fields`]).
    replaced: [bool; 6],
}

/// Merges what a message says about a patient into the stored fields (as SQLite does): an
/// ADT replaces every field it carries, other messages only fill in empty ones.
///
/// Which fields an ADT replaced is kept (`replaced`, in this order: id, assigning
/// authority, identifiers, name, birth date, sex): the update that writes them merges them
/// again with the row as it is then, which another receiver may have changed.
fn merge_fields(change: &mut PatientChange, message: &PatientData) {
    let stored = &mut change.data;
    let pairs = [
        (&mut stored.id, &message.id),
        (
            &mut stored.assigning_authority,
            &message.assigning_authority,
        ),
        (&mut stored.identifiers, &message.identifiers),
        (&mut stored.name, &message.name),
        (&mut stored.birth_date, &message.birth_date),
        (&mut stored.sex, &message.sex),
    ];
    for (n, (field, new)) in pairs.into_iter().enumerate() {
        if new.is_empty() {
            continue;
        }
        if message.is_update {
            change.replaced[n] = true;
        }
        if message.is_update || field.is_empty() {
            field.clone_from(new);
        }
    }
}

/// One transaction: the feed lock, then the rows, then the commit. A patient merge
/// (`merge.rs`) is a step of its own, between the rows before it and the rows after it,
/// so that those see the patients as it leaves them, as on SQLite.
async fn write(
    client: &mut Client,
    statements: &Statements,
    rows: &[Row],
    dedupe: bool,
    lock_first: bool,
    end: End,
) -> Result<(Vec<Stored>, Tally), StoreError> {
    let fail = |e: tokio_postgres::Error| db_error("store transaction failed", &e);
    // No `Transaction` guard: its BEGIN would be a round trip of its own. On any error the
    // caller drops this connection, and PostgreSQL rolls the transaction back.
    let db: &Client = client;
    let locked_begin = format!(
        "BEGIN; SET LOCAL synchronous_commit TO on; SELECT pg_advisory_xact_lock({FEED_LOCK})"
    );
    if !rows.iter().any(|r| r.merge.is_some()) {
        // The usual batch: two round trips, the BEGIN with the lookups, the feed lock and
        // the COMMIT with the writes; after a key race, the lock before the lookups.
        let begin = if lock_first {
            locked_begin.as_str()
        } else {
            "BEGIN; SET LOCAL synchronous_commit TO on"
        };
        return write_rows(db, statements, rows, dedupe, Some(begin), end).await;
    }
    // A merge's checks must see the store as its writes leave it: the lock from the start.
    db.batch_execute(&locked_begin).await.map_err(fail)?;
    let mut stored = Vec::with_capacity(rows.len());
    let mut tally = Tally::default();
    let mut rest = rows;
    while !rest.is_empty() {
        let n = rest
            .iter()
            .position(|r| r.merge.is_some())
            .unwrap_or(rest.len());
        let (before, merge) = rest.split_at(n);
        if !before.is_empty() {
            let (s, t) = write_rows(db, statements, before, dedupe, None, End::Open).await?;
            stored.extend(s);
            tally.add(t);
        }
        let Some((merge, after)) = merge.split_first() else {
            break;
        };
        let (s, t) = super::merge::write_merge(db, statements, merge, dedupe).await?;
        stored.extend(s);
        tally.add(t);
        rest = after;
    }
    // A merge message is always stored (made or refused): the others are told.
    db.batch_execute(&format!("NOTIFY {}; COMMIT", super::listen::CHANNEL))
        .await
        .map_err(fail)?;
    Ok((stored, tally))
}

/// Patients' keys and six fields, one array each, in the order of [`INSERT_PATIENTS`] and
/// [`UPDATE_PATIENTS`].
fn patient_columns(set: &[&PatientChange]) -> [Vec<String>; 7] {
    let column = |f: fn(&PatientData) -> &str| -> Vec<String> {
        set.iter().map(|p| f(&p.data).to_owned()).collect()
    };
    [
        column(|d| &d.key),
        column(|d| &d.id),
        column(|d| &d.assigning_authority),
        column(|d| &d.identifiers),
        column(|d| &d.name),
        column(|d| &d.birth_date),
        column(|d| &d.sex),
    ]
}

/// Array columns as a statement's parameters, in order.
fn parameters<T: ToSql + Sync>(columns: &[T]) -> Vec<&(dyn ToSql + Sync)> {
    columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect()
}

/// Rows without a merge: the lookups, the decisions, the writes. `begin`, when given,
/// opens the transaction and takes the feed lock in the lookups' round trip; otherwise the
/// transaction is open and holds the lock. `end` says whether it commits (and notifies) in
/// the writes' round trip.
pub(super) async fn write_rows(
    transaction: &Client,
    statements: &Statements,
    rows: &[Row],
    dedupe: bool,
    begin: Option<&str>,
    end: End,
) -> Result<(Vec<Stored>, Tally), StoreError> {
    let fail = |e: tokio_postgres::Error| db_error("store transaction failed", &e);
    // The lookups, pipelined on the one connection.
    let (mut apps, mut facs, mut ctrls) = (Vec::new(), Vec::new(), Vec::new());
    let mut refused_hashes: Vec<&[u8]> = Vec::new();
    let mut patient_keys: Vec<&str> = Vec::new();
    for row in rows {
        let accepted = row.verdict == Verdict::Accept;
        if accepted
            && dedupe
            && let Some(key) = &row.key
        {
            apps.push(key.sending_application.as_str());
            facs.push(key.sending_facility.as_str());
            ctrls.push(key.control_id.as_str());
        }
        if !accepted && row.merge_refusal.is_none() {
            refused_hashes.push(&row.hash);
        }
        if let Some(patient) = &row.patient
            && !patient_keys.contains(&patient.key.as_str())
        {
            patient_keys.push(&patient.key);
        }
    }
    let key_params: [&(dyn ToSql + Sync); 3] = [&apps, &facs, &ctrls];
    let refused_params: [&(dyn ToSql + Sync); 1] = [&refused_hashes];
    let patient_params: [&(dyn ToSql + Sync); 1] = [&patient_keys];
    // Round trip 1: the transaction and the lookups, pipelined, before the feed lock: what
    // another receiver commits after them is caught at the writes (a duplicate key by the
    // unique index: the group is written again; a patient's fields merged by the update).
    let begin_now = async {
        match begin {
            Some(sql) => transaction.batch_execute(sql).await,
            None => Ok(()),
        }
    };
    let (_, found_keys, found_refused, found_patients) = tokio::try_join!(
        biased;
        begin_now,
        transaction.query(&statements.find_keys, &key_params),
        transaction.query(&statements.find_refused, &refused_params),
        transaction.query(&statements.find_patients, &patient_params),
    )
    .map_err(fail)?;
    type KeyText = (String, String, String);
    let mut keys: HashMap<KeyText, Vec<(Vec<u8>, i64)>> = HashMap::new();
    for row in found_keys {
        keys.entry((row.get(0), row.get(1), row.get(2)))
            .or_default()
            .push((row.get(3), row.get(4)));
    }
    let mut refusals: HashMap<Vec<u8>, i64> = found_refused
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    // Keys merged away (rare: only looked for when a key has no row) lead to their
    // survivors, whose rows are read too.
    let (redirect, found_survivors) =
        super::merge::survivors(transaction, statements, &patient_keys, &found_patients)
            .await
            .map_err(fail)?;
    let mut patients: HashMap<String, PatientChange> = HashMap::new();
    for row in found_patients.into_iter().chain(found_survivors) {
        let key: String = row.get(0);
        patients.insert(
            key.clone(),
            PatientChange {
                data: PatientData {
                    key,
                    id: row.get(1),
                    assigning_authority: row.get(2),
                    identifiers: row.get(3),
                    name: row.get(4),
                    birth_date: row.get(5),
                    sex: row.get(6),
                    is_update: false,
                },
                n_observations: 0,
                last_message: 0,
                last_received_ms: 0,
                created_ms: 0,
                replaced: [false; 6],
            },
        );
    }
    // New rows are numbered -1, -2, …; their ids are handed out under the feed lock.
    let mut n_new: i64 = 0;

    // The decisions, in order: later messages of the batch see the earlier ones.
    let mut tally = Tally::default();
    let mut stored = Vec::with_capacity(rows.len());
    let mut new_rows: Vec<(i64, &Row)> = Vec::new();
    let mut new_keys: Vec<(i64, &Row, &MessageKey)> = Vec::new();
    let mut repeats: HashMap<i64, (i64, i64)> = HashMap::new();
    for row in rows {
        let accepted = row.verdict == Verdict::Accept;
        if accepted && let Some(key) = &row.key {
            let text = (
                key.sending_application.clone(),
                key.sending_facility.clone(),
                key.control_id.clone(),
            );
            if dedupe {
                let known = keys.entry(text).or_default();
                if let Some((_, id)) = known.iter().find(|(hash, _)| *hash == row.hash) {
                    tally.n_duplicates += 1;
                    stored.push(Stored::Duplicate {
                        id: *id,
                        verdict: Verdict::Accept,
                    });
                    continue;
                }
                if !known.is_empty() {
                    tally.n_reused_control_ids += 1;
                }
                known.push((row.hash.clone(), -(n_new + 1)));
            }
        }
        // A refused merge is judged again when it comes back (its verdict was Accept).
        if !accepted
            && row.merge_refusal.is_none()
            && let Some(&id) = refusals.get(&row.hash)
        {
            let repeat = repeats.entry(id).or_insert((0, row.received_ms));
            repeat.0 += 1;
            repeat.1 = row.received_ms;
            tally.n_repeated += 1;
            stored.push(Stored::Repeated { id });
            continue;
        }
        n_new += 1;
        let id = -n_new;
        if !accepted && row.merge_refusal.is_none() {
            refusals.insert(row.hash.clone(), id);
        }
        if accepted && let Some(key) = &row.key {
            new_keys.push((id, row, key));
        }
        if let Some(patient) = &row.patient {
            // Merged away: the message joins the survivor, whose data it does not change
            // (what it says of the patient is the prior identity's).
            let survivor = redirect.get(&patient.key);
            let key = survivor.unwrap_or(&patient.key);
            let change = patients
                .entry(key.clone())
                .or_insert_with(|| PatientChange {
                    data: PatientData {
                        key: key.clone(),
                        is_update: false,
                        ..patient.clone()
                    },
                    n_observations: 0,
                    last_message: 0,
                    last_received_ms: 0,
                    created_ms: row.received_ms,
                    replaced: [false; 6],
                });
            if survivor.is_none() {
                merge_fields(change, patient);
            }
            change.n_observations += i64::from(row.n_observations);
            change.last_message = id;
            change.last_received_ms = row.received_ms;
        }
        tally.n_stored += 1;
        stored.push(match &row.merge_refusal {
            Some(reason) => Stored::Refused {
                id,
                reason: reason.clone(),
            },
            None => Stored::New { id },
        });
        new_rows.push((id, row));
    }

    // The writes.
    let touched: Vec<&PatientChange> = patients.values().filter(|p| p.last_message < 0).collect();
    let lock_sql = format!("SELECT pg_advisory_xact_lock({FEED_LOCK})");
    let lock = transaction.batch_execute(&lock_sql);
    let set_last_id = async {
        if new_rows.is_empty() {
            Ok(None)
        } else {
            transaction
                .query_one(&statements.set_last_id, &[&n_new])
                .await
                .map(|row| Some(row.get::<_, i64>(0)))
        }
    };
    let created: Vec<&PatientChange> = touched
        .iter()
        .copied()
        .filter(|p| p.created_ms > 0)
        .collect();
    let insert_patients = async {
        if created.is_empty() {
            return Ok(0);
        }
        let columns = patient_columns(&created);
        let times: Vec<i64> = created.iter().map(|p| p.created_ms).collect();
        let mut params = parameters(&columns);
        params.push(&times);
        transaction
            .execute(&statements.insert_patients, &params)
            .await
    };
    let update_patients = async {
        if touched.is_empty() {
            return Ok(0);
        }
        let columns = patient_columns(&touched);
        let replaced: Vec<Vec<bool>> = (0..6)
            .map(|i| touched.iter().map(|p| p.replaced[i]).collect())
            .collect();
        let number =
            |f: fn(&PatientChange) -> i64| -> Vec<i64> { touched.iter().map(|p| f(p)).collect() };
        let counts = [
            number(|p| p.n_observations),
            number(|p| p.last_message),
            number(|p| p.last_received_ms),
        ];
        let mut params = parameters(&columns);
        params.extend(parameters(&replaced));
        params.extend(parameters(&counts));
        params.push(&n_new);
        transaction
            .execute(&statements.update_patients, &params)
            .await
    };
    let messages = async {
        if new_rows.is_empty() {
            return Ok(0);
        }
        let col = |f: fn(&Row) -> Option<&str>| -> Vec<Option<&str>> {
            new_rows.iter().map(|(_, r)| f(r)).collect()
        };
        let ids: Vec<i64> = new_rows.iter().map(|(id, _)| *id).collect();
        let received: Vec<i64> = new_rows.iter().map(|(_, r)| r.received_ms).collect();
        let peers: Vec<&str> = new_rows.iter().map(|(_, r)| r.peer.as_str()).collect();
        let hashes: Vec<&[u8]> = new_rows.iter().map(|(_, r)| r.hash.as_slice()).collect();
        let outcomes: Vec<&str> = new_rows
            .iter()
            .map(|(_, r)| outcome_name(r.verdict.outcome()))
            .collect();
        // By key: the patients' rows are written by the statement before this one.
        let patient: Vec<Option<&str>> = new_rows
            .iter()
            .map(|(_, r)| {
                r.patient
                    .as_ref()
                    .map(|p| redirect.get(&p.key).unwrap_or(&p.key).as_str())
            })
            .collect();
        let n_observations: Vec<i32> = new_rows.iter().map(|(_, r)| r.n_observations).collect();
        let replay_of: Vec<Option<i64>> = new_rows.iter().map(|(_, r)| r.replay_of).collect();
        let encoding: Vec<Option<i16>> = new_rows.iter().map(|(_, r)| r.raw_encoding).collect();
        let raw: Vec<&[u8]> = new_rows.iter().map(|(_, r)| r.raw.as_slice()).collect();
        transaction
            .execute(
                &statements.insert_messages,
                &[
                    &ids,
                    &received,
                    &peers,
                    &col(|r| r.peer_identity.as_deref()),
                    &col(|r| r.key.as_ref().map(|k| k.sending_application.as_str())),
                    &col(|r| r.key.as_ref().map(|k| k.sending_facility.as_str())),
                    &col(|r| r.key.as_ref().map(|k| k.control_id.as_str())),
                    &hashes,
                    &outcomes,
                    &col(|r| r.verdict.reason()),
                    &col(|r| r.message_type.as_deref()),
                    &col(|r| r.version.as_deref()),
                    &col(|r| r.location.as_deref()),
                    &col(|r| r.device.as_deref()),
                    &patient,
                    &n_observations,
                    &col(|r| r.observations.as_deref()),
                    &col(|r| r.ack_code.as_deref()),
                    &replay_of,
                    &encoding,
                    &raw,
                    &col(|r| {
                        r.device_key
                            .as_deref()
                            .filter(|_| r.verdict == Verdict::Accept)
                    }),
                    &n_new,
                ],
            )
            .await
    };
    let insert_keys = async {
        if new_keys.is_empty() {
            return Ok(0);
        }
        let apps: Vec<&str> = new_keys
            .iter()
            .map(|(_, _, k)| k.sending_application.as_str())
            .collect();
        let facs: Vec<&str> = new_keys
            .iter()
            .map(|(_, _, k)| k.sending_facility.as_str())
            .collect();
        let ctrls: Vec<&str> = new_keys
            .iter()
            .map(|(_, _, k)| k.control_id.as_str())
            .collect();
        let hashes: Vec<&[u8]> = new_keys.iter().map(|(_, r, _)| r.hash.as_slice()).collect();
        let sent: Vec<Option<i64>> = new_keys.iter().map(|(_, _, k)| k.sent_ms).collect();
        let ids: Vec<i64> = new_keys.iter().map(|(id, _, _)| *id).collect();
        let insert = if dedupe {
            &statements.insert_keys
        } else {
            &statements.insert_keys_any
        };
        transaction
            .execute(
                insert,
                &[&apps, &facs, &ctrls, &hashes, &sent, &ids, &n_new],
            )
            .await
    };
    let count_repeats = async {
        if repeats.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = repeats.keys().copied().collect();
        let n: Vec<i64> = ids.iter().map(|id| repeats[id].0).collect();
        let last: Vec<i64> = ids.iter().map(|id| repeats[id].1).collect();
        transaction
            .execute(&statements.count_repeats, &[&ids, &n, &last, &n_new])
            .await
    };
    let insert_alarms = async {
        let alarms: Vec<(i64, &crate::alarm::AlarmData)> = new_rows
            .iter()
            .filter(|(_, r)| r.verdict == Verdict::Accept)
            .flat_map(|(id, r)| r.alarms.iter().map(move |a| (*id, a)))
            .collect();
        if alarms.is_empty() {
            return Ok(0);
        }
        let text = |f: fn(&crate::alarm::AlarmData) -> &str| -> Vec<&str> {
            alarms.iter().map(|(_, a)| f(a)).collect()
        };
        let measured = |f: fn(&crate::alarm::AlarmMeasurement) -> &str| -> Vec<Option<&str>> {
            alarms
                .iter()
                .map(|(_, a)| a.measurement.as_ref().map(f))
                .collect()
        };
        let messages: Vec<i64> = alarms.iter().map(|(id, _)| *id).collect();
        let indexes: Vec<i32> = alarms
            .iter()
            .map(|(_, a)| i32::try_from(a.index).unwrap_or(i32::MAX))
            .collect();
        let numeric: Vec<Option<f64>> = alarms
            .iter()
            .map(|(_, a)| a.measurement.as_ref().and_then(|m| m.numeric))
            .collect();
        let started_ms: Vec<i64> = alarms.iter().map(|(_, a)| a.started_ms).collect();
        transaction
            .execute(
                &statements.insert_alarms,
                &[
                    &messages,
                    &indexes,
                    &text(|a| &a.source),
                    &text(|a| &a.type_code),
                    &text(|a| &a.type_text),
                    &text(|a| &a.type_system),
                    &text(|a| &a.text),
                    &text(|a| &a.priority),
                    &text(|a| &a.kind),
                    &text(|a| &a.state),
                    &text(|a| &a.phase),
                    &text(|a| &a.inactivation),
                    &text(|a| &a.flags),
                    &measured(|m| &m.code),
                    &measured(|m| &m.code_text),
                    &measured(|m| &m.value),
                    &numeric,
                    &measured(|m| &m.units),
                    &measured(|m| &m.limit),
                    &text(|a| &a.started_at),
                    &started_ms,
                    &n_new,
                ],
            )
            .await
    };
    // Other receivers' exporters and live views wake when this commits (`listen`).
    let commit_sql = if new_rows.is_empty() || end != End::CommitAndNotify {
        "COMMIT".to_string()
    } else {
        format!("NOTIFY {}; COMMIT", super::listen::CHANNEL)
    };
    let commit_now = async {
        if end != End::Open {
            transaction.batch_execute(&commit_sql).await
        } else {
            Ok(())
        }
    };
    // Round trip 2: every write (and the commit, unless a merge follows), pipelined, in
    // this order (`biased`: each is sent as it is first polled). A write that fails aborts
    // the transaction, so the COMMIT behind it rolls back; its error is what this returns.
    // With duplicate recognition on, a key another receiver stored after this one's
    // lookups is such a failure (the keys' insert has no ON CONFLICT then): [`KEY_RACE`],
    // and the writer writes the group again.
    let (_, last, ..) = tokio::try_join!(
        biased;
        lock,
        set_last_id,
        insert_patients,
        update_patients,
        messages,
        insert_keys,
        count_repeats,
        insert_alarms,
        commit_now,
    )
    .map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            StoreError::Database(KEY_RACE.into())
        } else {
            fail(e)
        }
    })?;
    // The new rows' ids, now that they are handed out: -k is the k-th.
    if let Some(last) = last {
        let real = |id: &mut i64| {
            if *id < 0 {
                *id = last - n_new - *id;
            }
        };
        for answer in &mut stored {
            match answer {
                Stored::New { id }
                | Stored::Refused { id, .. }
                | Stored::Duplicate { id, .. }
                | Stored::Repeated { id } => real(id),
            }
        }
    }
    Ok((stored, tally))
}

/// An exporter's watermark and its files' positions, in one transaction.
pub(super) async fn set_export_progress(
    client: &Client,
    exporter: &str,
    cursor: ChangeCursor,
    files: Vec<(String, FilePosition)>,
    fence: Option<(&str, i64)>,
) -> Result<(), StoreError> {
    let fail = |e: tokio_postgres::Error| db_error("cannot record the export progress", &e);
    let name = format!("export:{exporter}");
    let keys: Vec<&str> = files.iter().map(|(k, _)| k.as_str()).collect();
    let through: Vec<i64> = files.iter().map(|(_, p)| p.through).collect();
    let length: Vec<i64> = files
        .iter()
        .map(|(_, p)| i64::try_from(p.length).unwrap_or(i64::MAX))
        .collect();
    // One statement is one transaction: a reader never sees one part without the other.
    // `forget`: the file positions of the patients merged away by the merges the watermark
    // passes (read from the old watermark: the statement's snapshot), as SQLite's
    // `forget_merged_files`; the exporter removed their files before it let it pass.
    let Some((lease, fence)) = fence else {
        client
            .execute(
                "WITH mark AS (
                     INSERT INTO meta (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value
                 ), forget AS (
                     DELETE FROM export_files
                     WHERE exporter = $3 AND patient_key <> ALL($4::text[]) AND patient_key IN
                         (SELECT prior_key FROM patient_merges WHERE message <= $2 AND message >
                             coalesce((SELECT value FROM meta WHERE name = $1), 0))
                 )
                 INSERT INTO export_files (exporter, patient_key, through, length)
                 SELECT $3, * FROM unnest($4::text[], $5::int8[], $6::int8[])
                 ON CONFLICT (exporter, patient_key)
                 DO UPDATE SET through = excluded.through, length = excluded.length",
                &[
                    &name,
                    &cursor.position(),
                    &exporter,
                    &keys,
                    &through,
                    &length,
                ],
            )
            .await
            .map_err(fail)?;
        return Ok(());
    };
    // Fenced (docs/storage.md, "Leases"): every part writes only when the lease's row still
    // has this fence, read `FOR SHARE` in the same statement, so a receiver taking the lease
    // waits for this write to end, or this write sees its new fence and writes nothing.
    let row = client
        .query_one(
            "WITH lease AS (
                 SELECT fence FROM leases WHERE name = $7 AND fence = $8 FOR SHARE
             ), mark AS (
                 INSERT INTO meta (name, value) SELECT $1, $2 FROM lease
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value
             ), forget AS (
                 DELETE FROM export_files
                 WHERE exporter = $3 AND patient_key <> ALL($4::text[])
                   AND EXISTS (SELECT 1 FROM lease) AND patient_key IN
                     (SELECT prior_key FROM patient_merges WHERE message <= $2 AND message >
                         coalesce((SELECT value FROM meta WHERE name = $1), 0))
             ), files AS (
                 INSERT INTO export_files (exporter, patient_key, through, length)
                 SELECT $3, f.k, f.t, f.l
                 FROM unnest($4::text[], $5::int8[], $6::int8[]) AS f(k, t, l) CROSS JOIN lease
                 ON CONFLICT (exporter, patient_key)
                 DO UPDATE SET through = excluded.through, length = excluded.length
             )
             SELECT count(*) FROM lease",
            &[
                &name,
                &cursor.position(),
                &exporter,
                &keys,
                &through,
                &length,
                &lease,
                &fence,
            ],
        )
        .await
        .map_err(fail)?;
    if row.get::<_, i64>(0) == 0 {
        return Err(StoreError::LeaseLost {
            name: lease.to_owned(),
            fence,
        });
    }
    Ok(())
}
