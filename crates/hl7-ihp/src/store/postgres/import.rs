//! `hl7-ihp migrate`: a SQLite store copied into an empty PostgreSQL store, keeping every
//! message's id (so the exporters' watermarks and file positions mean the same there),
//! resumable and verified by counts (docs/storage.md, "Moving to PostgreSQL").
//!
//! - The target is created or migrated to the current schema, and must be empty: no
//!   message, patient or id handed out, unless it holds an unfinished migration of this same
//!   store (`meta` row `migrate:source`, a fingerprint of the SQLite store's first message).
//! - Messages go over in id order, a batch per transaction: the batch's patients (upserted
//!   by their SQLite ids), messages (their bytes as stored: both stores use the same zstd
//!   encoding), duplicate keys, alarms and merges, the id counter raised to the batch's
//!   last id, and `migrate:through` set to it. Interrupted anywhere (SIGKILL, Ctrl-C, the
//!   database gone), the next run continues after `migrate:through`, nothing doubled.
//! - Then one transaction: every patient's row and totals, the exporters' watermarks
//!   (`meta` rows `export:*`) and file positions, the id counter raised above the highest
//!   id a purge removed, the identity sequences moved past the copied ids, and
//!   `migrate:done`.
//! - Last, the same counts on both sides (`store/sqlite/source.rs`, `COUNT_NAMES`).
//!
//! The SQLite database is only read, on a thread of its own that prepares the next batch
//! (observations in the one layout both stores use) while the previous one commits.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::writer::FEED_LOCK;
use super::{PostgresLocation, db_error, pool, schema};
use crate::store::StoreError;
use crate::store::sqlite::encoded::encode_observations;
use crate::store::sqlite::source::{
    ALARM_TEXTS, Source, SourceAlarm, SourceMerge, SourceMessage, SourcePatient,
};

/// The `meta` row naming the store a migration copies (its fingerprint).
pub const SOURCE_META: &str = "migrate:source";
/// The `meta` row holding the last message id copied (written with each batch).
pub const THROUGH_META: &str = "migrate:through";
/// The `meta` row set once the whole copy has committed.
pub const DONE_META: &str = "migrate:done";

/// Batches the SQLite reader prepares ahead of the writes.
const READ_AHEAD: usize = 2;

/// Rows per statement when the final step copies every patient or file position.
const FINAL_CHUNK: usize = 5_000;

/// How a migration runs.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// Messages per transaction.
    pub batch: usize,
    /// At most this many messages per second (to spare a database in use), if set.
    pub max_rate: Option<u32>,
}

/// How far a migration is, after each batch.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Messages copied by this run.
    pub n_copied: u64,
    /// Messages this run has to copy in all.
    pub n_total: u64,
    /// The last message id copied.
    pub through: i64,
    /// Since this run started.
    pub elapsed: Duration,
}

/// One line of the verification: a count in the SQLite store and in the copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountRow {
    /// What is counted.
    pub name: &'static str,
    /// In the SQLite store.
    pub source: i64,
    /// In PostgreSQL.
    pub target: i64,
}

/// What a migration did.
#[derive(Clone, Debug)]
pub struct MigrateReport {
    /// `migrate:through` when this run started: 0 for a new migration.
    pub resumed_after: i64,
    /// Messages this run copied.
    pub n_copied: u64,
    /// The counts on both sides.
    pub counts: Vec<CountRow>,
    /// How long this run took.
    pub elapsed: Duration,
}

impl MigrateReport {
    /// Whether every count is the same on both sides.
    pub fn verified(&self) -> bool {
        self.counts.iter().all(|row| row.source == row.target)
    }
}

/// Why a migration did not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The target holds data that no migration of this store put there.
    #[error(
        "the PostgreSQL database already holds an hl7-ihp store ({what}) that did not come from \
         a migration of this SQLite store; migrate into an empty database"
    )]
    NotEmpty {
        /// What was found, without any of its content.
        what: &'static str,
    },
    /// The target holds a migration of another SQLite store.
    #[error(
        "the PostgreSQL database holds a migration of another SQLite store; migrate into an \
         empty database"
    )]
    OtherSource,
    /// The migration finished and receivers have stored messages since.
    #[error(
        "the migration into this database finished and it has stored new messages since; \
         nothing to do"
    )]
    InUse,
    /// A database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies the SQLite database at `source` into the PostgreSQL store at `target`. Blocking;
/// `progress` is called after each batch. The caller keeps the SQLite store from changing
/// (`hl7-ihp migrate` holds the data directory's lock).
pub fn migrate(
    source: &Path,
    target: &PostgresLocation,
    options: &MigrateOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<MigrateReport, MigrateError> {
    let source = Source::open(source)?;
    let config = target.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Database(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let mut client = pool::connect(&config).await?;
        schema::migrate(&mut client).await?;
        run(&mut client, source, options, progress).await
    })
}

fn fail(e: tokio_postgres::Error) -> StoreError {
    db_error("migration failed", &e)
}

/// A batch ready for PostgreSQL.
struct Batch {
    after: i64,
    through: i64,
    messages: Vec<SourceMessage>,
    /// Each message's observations as the column holds them.
    observations: Vec<Option<String>>,
    patients: Vec<SourcePatient>,
    alarms: Vec<SourceAlarm>,
    merges: Vec<SourceMerge>,
}

/// What the target holds when a run starts.
struct TargetState {
    source: Option<i64>,
    through: Option<i64>,
    done: bool,
    /// The highest message id stored, 0 for none.
    max_message: i64,
    has_patients: bool,
    last_id: i64,
}

async fn target_state(client: &Client) -> Result<TargetState, StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT value FROM meta WHERE name = $1),
                    (SELECT value FROM meta WHERE name = $2),
                    EXISTS (SELECT 1 FROM meta WHERE name = $3),
                    (SELECT coalesce(max(id), 0) FROM messages),
                    EXISTS (SELECT 1 FROM patients),
                    (SELECT value FROM counters WHERE name = 'message_id')",
            &[&SOURCE_META, &THROUGH_META, &DONE_META],
        )
        .await
        .map_err(fail)?;
    Ok(TargetState {
        source: row.get(0),
        through: row.get(1),
        done: row.get(2),
        max_message: row.get(3),
        has_patients: row.get(4),
        last_id: row.get::<_, Option<i64>>(5).unwrap_or(0),
    })
}

/// Where this run starts: after the last message a run before committed, or at the
/// beginning of a new migration (recorded first, so an interrupted one is known as ours);
/// and whether a run before finished.
async fn start_point(client: &mut Client, fingerprint: i64) -> Result<(i64, bool), MigrateError> {
    let state = target_state(client).await?;
    match (state.source, state.through) {
        (Some(found), _) if found != fingerprint => Err(MigrateError::OtherSource),
        (Some(_), Some(through)) => {
            if state.done && state.max_message > through {
                return Err(MigrateError::InUse);
            }
            Ok((through, state.done))
        }
        (Some(_), None) => Err(MigrateError::NotEmpty {
            what: "a migration mark without its progress",
        }),
        (None, _) => {
            let what = if state.max_message > 0 {
                Some("messages")
            } else if state.has_patients {
                Some("patients")
            } else if state.last_id > 0 {
                Some("message ids handed out")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(MigrateError::NotEmpty { what });
            }
            let transaction = client.transaction().await.map_err(fail)?;
            transaction
                .execute("SELECT pg_advisory_xact_lock($1)", &[&FEED_LOCK])
                .await
                .map_err(fail)?;
            // Inserted, not upserted: of two migrations started together, one fails here.
            transaction
                .execute(
                    "INSERT INTO meta (name, value) VALUES ($1, $2), ($3, 0)",
                    &[&SOURCE_META, &fingerprint, &THROUGH_META],
                )
                .await
                .map_err(fail)?;
            transaction.commit().await.map_err(fail)?;
            Ok((0, false))
        }
    }
}

async fn run(
    client: &mut Client,
    source: Source,
    options: &MigrateOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<MigrateReport, MigrateError> {
    let started = Instant::now();
    let fingerprint = source.fingerprint()?;
    let (resumed_after, done) = start_point(client, fingerprint).await?;
    let n_total = source.count_after(resumed_after)?;
    if done && n_total == 0 {
        // Finished before, and nothing new: only verify (the last step again could move
        // a watermark the receivers moved on since back).
        return Ok(MigrateReport {
            resumed_after,
            n_copied: 0,
            counts: verify(client, &source).await?,
            elapsed: started.elapsed(),
        });
    }
    let statements = Statements::prepare(client).await.map_err(fail)?;

    // The reader: batches in id order, each with what its transaction needs besides.
    let (batches, mut incoming) =
        tokio::sync::mpsc::channel::<Result<Batch, StoreError>>(READ_AHEAD);
    let batch_size = options.batch.max(1);
    let reader = std::thread::Builder::new()
        .name("hl7-ihp-migrate-read".into())
        .spawn(move || {
            let mut after = resumed_after;
            let mut sent_patients: HashSet<i64> = HashSet::new();
            loop {
                match read_batch(&source, after, batch_size, &mut sent_patients) {
                    Ok(Some(batch)) => {
                        after = batch.through;
                        if batches.blocking_send(Ok(batch)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = batches.blocking_send(Err(e));
                        break;
                    }
                }
            }
            source
        })
        .map_err(|e| StoreError::Database(format!("cannot start the reader: {e}")))?;

    let mut n_copied: u64 = 0;
    let mut failure = None;
    while let Some(batch) = incoming.recv().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        if let Err(e) = write_batch(client, &statements, &batch).await {
            failure = Some(e);
            break;
        }
        n_copied += batch.messages.len() as u64;
        progress(&Progress {
            n_copied,
            n_total,
            through: batch.through,
            elapsed: started.elapsed(),
        });
        if let Some(rate) = options.max_rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(n_copied as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    drop(incoming);
    let source = reader
        .join()
        .map_err(|_| StoreError::Database("the SQLite reader panicked".into()))?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    finish(client, &source).await?;
    let counts = verify(client, &source).await?;
    Ok(MigrateReport {
        resumed_after,
        n_copied,
        counts,
        elapsed: started.elapsed(),
    })
}

/// The next batch after `after`, or `None` when every message is read.
fn read_batch(
    source: &Source,
    after: i64,
    limit: usize,
    sent_patients: &mut HashSet<i64>,
) -> Result<Option<Batch>, StoreError> {
    let mut messages = source.messages_after(after, limit)?;
    let Some(through) = messages.last().map(|m| m.id) else {
        return Ok(None);
    };
    let mut wanted: Vec<i64> = messages
        .iter()
        .filter_map(|m| m.patient)
        .filter(|id| !sent_patients.contains(id))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let patients = source.patients_by_id(&wanted)?;
    sent_patients.extend(wanted);
    let observations = messages
        .iter_mut()
        .map(|m| {
            // Decoded and written again by the writer's encoder: the same layout, checked
            // and without the whitespace an old SQLite migration left.
            m.observations
                .take()
                .and_then(|list| encode_observations(&list))
        })
        .collect::<Vec<_>>();
    Ok(Some(Batch {
        after,
        through,
        alarms: source.alarms_between(after, through)?,
        merges: source.merges_between(after, through)?,
        messages,
        observations,
        patients,
    }))
}

/// The statements of a batch, prepared once.
struct Statements {
    lock: tokio_postgres::Statement,
    patients: tokio_postgres::Statement,
    messages: tokio_postgres::Statement,
    keys: tokio_postgres::Statement,
    alarms: tokio_postgres::Statement,
    merges: tokio_postgres::Statement,
    counter: tokio_postgres::Statement,
    through: tokio_postgres::Statement,
}

/// Patients by their SQLite ids: a later copy (the final step's) updates the demographics.
const UPSERT_PATIENTS: &str = "INSERT INTO patients (id, key, patient_id, assigning_authority,
        identifiers, name, birth_date, sex, created_ms, updated_ms) OVERRIDING SYSTEM VALUE
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::int8[], $10::int8[])
    ON CONFLICT (id) DO UPDATE SET key = excluded.key, patient_id = excluded.patient_id,
        assigning_authority = excluded.assigning_authority, identifiers = excluded.identifiers,
        name = excluded.name, birth_date = excluded.birth_date, sex = excluded.sex,
        created_ms = excluded.created_ms, updated_ms = excluded.updated_ms";

const INSERT_MESSAGES: &str = "INSERT INTO messages (id, received_ms, peer, peer_identity,
        sending_application, sending_facility, control_id, hash, outcome, reason, message_type,
        version, location, device, patient, n_observations, observations, n_received,
        last_received_ms, ack_code, replay_of, raw_encoding, raw, device_key)
    SELECT id, received_ms, peer, peer_identity, app, fac, ctrl, hash, outcome, reason,
        message_type, version, location, device, patient, n_observations, observations::json,
        n_received, last_received_ms, ack_code, replay_of, raw_encoding, raw, device_key
    FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::bytea[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::int8[], $16::int4[], $17::text[], $18::int8[], $19::int8[],
        $20::text[], $21::int8[], $22::int2[], $23::bytea[], $24::text[])
      AS u (id, received_ms, peer, peer_identity, app, fac, ctrl, hash, outcome, reason,
        message_type, version, location, device, patient, n_observations, observations,
        n_received, last_received_ms, ack_code, replay_of, raw_encoding, raw, device_key)";

const INSERT_KEYS: &str = "INSERT INTO message_keys (sending_application, sending_facility,
        control_id, hash, sent_ms, message)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int8[], $6::int8[])
    ON CONFLICT DO NOTHING";

const INSERT_ALARMS: &str = "INSERT INTO alarms (id, message, idx, source, type_code, type_text,
        type_system, text, priority, kind, state, phase, inactivation, flags, measurement_code,
        measurement_text, measurement_value, measurement_numeric, measurement_units,
        measurement_limit, started_at, started_ms) OVERRIDING SYSTEM VALUE
    SELECT * FROM unnest($1::int8[], $2::int8[], $3::int4[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::text[], $16::text[], $17::text[], $18::float8[], $19::text[],
        $20::text[], $21::text[], $22::int8[])";

const INSERT_MERGES: &str = "INSERT INTO patient_merges (prior_key, survivor_key, message, event,
        merged_ms, n_moved)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::int8[], $6::int8[])";

const RAISE_COUNTER: &str =
    "UPDATE counters SET value = greatest(value, $1) WHERE name = 'message_id'";

/// Moves `migrate:through` on only from where this batch started: a second migration run
/// at the same time finds it moved and rolls back.
const SET_THROUGH: &str =
    "UPDATE meta SET value = $2 WHERE name = 'migrate:through' AND value = $1";

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        let (lock, patients, messages, keys) = tokio::try_join!(
            client.prepare("SELECT pg_advisory_xact_lock($1)"),
            client.prepare(UPSERT_PATIENTS),
            client.prepare(INSERT_MESSAGES),
            client.prepare(INSERT_KEYS),
        )?;
        let (alarms, merges, counter, through) = tokio::try_join!(
            client.prepare(INSERT_ALARMS),
            client.prepare(INSERT_MERGES),
            client.prepare(RAISE_COUNTER),
            client.prepare(SET_THROUGH),
        )?;
        Ok(Statements {
            lock,
            patients,
            messages,
            keys,
            alarms,
            merges,
            counter,
            through,
        })
    }
}

async fn upsert_patients(
    client: &impl tokio_postgres::GenericClient,
    statement: &tokio_postgres::Statement,
    patients: &[SourcePatient],
) -> Result<u64, tokio_postgres::Error> {
    if patients.is_empty() {
        return Ok(0);
    }
    let text = |f: fn(&SourcePatient) -> &str| -> Vec<&str> { patients.iter().map(f).collect() };
    let number = |f: fn(&SourcePatient) -> i64| -> Vec<i64> { patients.iter().map(f).collect() };
    client
        .execute(
            statement,
            &[
                &number(|p| p.id),
                &text(|p| &p.key),
                &text(|p| &p.patient_id),
                &text(|p| &p.assigning_authority),
                &text(|p| &p.identifiers),
                &text(|p| &p.name),
                &text(|p| &p.birth_date),
                &text(|p| &p.sex),
                &number(|p| p.created_ms),
                &number(|p| p.updated_ms),
            ],
        )
        .await
}

/// One batch in one transaction.
async fn write_batch(
    client: &mut Client,
    statements: &Statements,
    batch: &Batch,
) -> Result<(), StoreError> {
    let transaction = client.transaction().await.map_err(fail)?;
    transaction
        .execute(&statements.lock, &[&FEED_LOCK])
        .await
        .map_err(fail)?;
    // Patients first: the messages name them.
    upsert_patients(&transaction, &statements.patients, &batch.patients)
        .await
        .map_err(fail)?;

    let m = &batch.messages;
    let col =
        |f: fn(&SourceMessage) -> Option<&str>| -> Vec<Option<&str>> { m.iter().map(f).collect() };
    let ids: Vec<i64> = m.iter().map(|r| r.id).collect();
    let received: Vec<i64> = m.iter().map(|r| r.received_ms).collect();
    let peers: Vec<&str> = m.iter().map(|r| r.peer.as_str()).collect();
    let hashes: Vec<&[u8]> = m.iter().map(|r| r.hash.as_slice()).collect();
    let outcomes: Vec<&str> = m.iter().map(|r| r.outcome.as_str()).collect();
    let patient: Vec<Option<i64>> = m.iter().map(|r| r.patient).collect();
    let n_observations: Vec<i32> = m
        .iter()
        .map(|r| i32::try_from(r.n_observations).unwrap_or(i32::MAX))
        .collect();
    let observations: Vec<Option<&str>> = batch.observations.iter().map(|o| o.as_deref()).collect();
    let n_received: Vec<i64> = m.iter().map(|r| r.n_received).collect();
    let last_received: Vec<Option<i64>> = m.iter().map(|r| r.last_received_ms).collect();
    let replay_of: Vec<Option<i64>> = m.iter().map(|r| r.replay_of).collect();
    let encoding: Vec<Option<i16>> = m
        .iter()
        .map(|r| r.raw_encoding.and_then(|e| i16::try_from(e).ok()))
        .collect();
    let raw: Vec<&[u8]> = m.iter().map(|r| r.raw.as_slice()).collect();
    let message_params: [&(dyn ToSql + Sync); 24] = [
        &ids,
        &received,
        &peers,
        &col(|r| r.peer_identity.as_deref()),
        &col(|r| r.sending_application.as_deref()),
        &col(|r| r.sending_facility.as_deref()),
        &col(|r| r.control_id.as_deref()),
        &hashes,
        &outcomes,
        &col(|r| r.reason.as_deref()),
        &col(|r| r.message_type.as_deref()),
        &col(|r| r.version.as_deref()),
        &col(|r| r.location.as_deref()),
        &col(|r| r.device.as_deref()),
        &patient,
        &n_observations,
        &observations,
        &n_received,
        &last_received,
        &col(|r| r.ack_code.as_deref()),
        &replay_of,
        &encoding,
        &raw,
        &col(|r| r.device_key.as_deref()),
    ];

    // The duplicate index: accepted messages stored with duplicate recognition.
    let keyed: Vec<&SourceMessage> = m
        .iter()
        .filter(|r| r.keyed && r.outcome == "accepted")
        .collect();
    let key_text = |f: fn(&SourceMessage) -> Option<&str>| -> Vec<&str> {
        keyed.iter().map(|r| f(r).unwrap_or_default()).collect()
    };
    let key_apps = key_text(|r| r.sending_application.as_deref());
    let key_facs = key_text(|r| r.sending_facility.as_deref());
    let key_ctrls = key_text(|r| r.control_id.as_deref());
    let key_hashes: Vec<&[u8]> = keyed.iter().map(|r| r.hash.as_slice()).collect();
    let key_sent: Vec<Option<i64>> = keyed.iter().map(|r| r.sent_ms).collect();
    let key_ids: Vec<i64> = keyed.iter().map(|r| r.id).collect();
    let key_params: [&(dyn ToSql + Sync); 6] = [
        &key_apps,
        &key_facs,
        &key_ctrls,
        &key_hashes,
        &key_sent,
        &key_ids,
    ];

    let a = &batch.alarms;
    let alarm_ids: Vec<i64> = a.iter().map(|r| r.id).collect();
    let alarm_messages: Vec<i64> = a.iter().map(|r| r.message).collect();
    let alarm_idx: Vec<i32> = a
        .iter()
        .map(|r| i32::try_from(r.idx).unwrap_or(i32::MAX))
        .collect();
    let alarm_texts: Vec<Vec<&str>> = (0..ALARM_TEXTS.len())
        .map(|i| a.iter().map(|r| r.texts[i].as_str()).collect())
        .collect();
    let alarm_measured: Vec<Vec<Option<&str>>> = (0..3)
        .map(|i| a.iter().map(|r| r.measurement[i].as_deref()).collect())
        .collect();
    let alarm_numeric: Vec<Option<f64>> = a.iter().map(|r| r.measurement_numeric).collect();
    let alarm_units: Vec<Option<&str>> = a.iter().map(|r| r.measurement_units.as_deref()).collect();
    let alarm_limit: Vec<Option<&str>> = a.iter().map(|r| r.measurement_limit.as_deref()).collect();
    let alarm_started_at: Vec<&str> = a.iter().map(|r| r.started_at.as_str()).collect();
    let alarm_started_ms: Vec<i64> = a.iter().map(|r| r.started_ms).collect();
    let mut alarm_params: Vec<&(dyn ToSql + Sync)> = vec![&alarm_ids, &alarm_messages, &alarm_idx];
    for texts in &alarm_texts {
        alarm_params.push(texts);
    }
    for measured in &alarm_measured {
        alarm_params.push(measured);
    }
    alarm_params.extend([
        &alarm_numeric as &(dyn ToSql + Sync),
        &alarm_units,
        &alarm_limit,
        &alarm_started_at,
        &alarm_started_ms,
    ]);

    let g = &batch.merges;
    let merge_prior: Vec<&str> = g.iter().map(|r| r.prior_key.as_str()).collect();
    let merge_survivor: Vec<&str> = g.iter().map(|r| r.survivor_key.as_str()).collect();
    let merge_message: Vec<i64> = g.iter().map(|r| r.message).collect();
    let merge_event: Vec<&str> = g.iter().map(|r| r.event.as_str()).collect();
    let merge_ms: Vec<i64> = g.iter().map(|r| r.merged_ms).collect();
    let merge_moved: Vec<i64> = g.iter().map(|r| r.n_messages).collect();
    let merge_params: [&(dyn ToSql + Sync); 6] = [
        &merge_prior,
        &merge_survivor,
        &merge_message,
        &merge_event,
        &merge_ms,
        &merge_moved,
    ];

    let messages = transaction.execute(&statements.messages, &message_params);
    let keys = async {
        if keyed.is_empty() {
            Ok(0)
        } else {
            transaction.execute(&statements.keys, &key_params).await
        }
    };
    let alarms = async {
        if a.is_empty() {
            Ok(0)
        } else {
            transaction.execute(&statements.alarms, &alarm_params).await
        }
    };
    let merges = async {
        if g.is_empty() {
            Ok(0)
        } else {
            transaction.execute(&statements.merges, &merge_params).await
        }
    };
    let counter_params: [&(dyn ToSql + Sync); 1] = [&batch.through];
    let through_params: [&(dyn ToSql + Sync); 2] = [&batch.after, &batch.through];
    let counter = transaction.execute(&statements.counter, &counter_params);
    let moved = transaction.execute(&statements.through, &through_params);
    let (_, _, _, _, _, moved) =
        tokio::try_join!(messages, keys, alarms, merges, counter, moved).map_err(fail)?;
    if moved != 1 {
        return Err(StoreError::Database(
            "another migration into this database moved on meanwhile; rolled back".into(),
        ));
    }
    transaction.commit().await.map_err(fail)?;
    Ok(())
}

/// Everything but the messages, in one transaction, once every message is copied.
async fn finish(client: &mut Client, source: &Source) -> Result<(), StoreError> {
    let patients = source.patients()?;
    let marks = source.export_marks()?;
    let files = source.export_files()?;
    let (max_id, purged_through) = source.id_bounds()?;
    let transaction = client.transaction().await.map_err(fail)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&FEED_LOCK])
        .await
        .map_err(fail)?;
    let upsert = transaction.prepare(UPSERT_PATIENTS).await.map_err(fail)?;
    for chunk in patients.chunks(FINAL_CHUNK) {
        upsert_patients(&transaction, &upsert, chunk)
            .await
            .map_err(fail)?;
    }
    // What the patient list shows, from the copied messages (SQLite counts them so too).
    transaction
        .execute(
            "UPDATE patients p SET n_observations = a.n, last_message = a.last,
                 last_received_ms = m.received_ms
             FROM (SELECT patient, sum(n_observations)::int8 AS n, max(id) AS last
                   FROM messages WHERE patient IS NOT NULL GROUP BY patient) a
             JOIN messages m ON m.id = a.last
             WHERE p.id = a.patient",
            &[],
        )
        .await
        .map_err(fail)?;
    let names: Vec<&str> = marks.iter().map(|(n, _)| n.as_str()).collect();
    let values: Vec<i64> = marks.iter().map(|(_, v)| *v).collect();
    transaction
        .execute(
            "INSERT INTO meta (name, value) SELECT * FROM unnest($1::text[], $2::int8[])
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&names, &values],
        )
        .await
        .map_err(fail)?;
    for chunk in files.chunks(FINAL_CHUNK) {
        let exporters: Vec<&str> = chunk.iter().map(|f| f.exporter.as_str()).collect();
        let keys: Vec<&str> = chunk.iter().map(|f| f.patient_key.as_str()).collect();
        let through: Vec<i64> = chunk.iter().map(|f| f.through).collect();
        let length: Vec<i64> = chunk.iter().map(|f| f.length).collect();
        transaction
            .execute(
                "INSERT INTO export_files (exporter, patient_key, through, length)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
                 ON CONFLICT (exporter, patient_key)
                 DO UPDATE SET through = excluded.through, length = excluded.length",
                &[&exporters, &keys, &through, &length],
            )
            .await
            .map_err(fail)?;
    }
    // New ids above every id the SQLite store handed out, purged ones too; the identity
    // sequences past the ids copied.
    transaction
        .execute(RAISE_COUNTER, &[&max_id.max(purged_through)])
        .await
        .map_err(fail)?;
    transaction
        .batch_execute(
            "SELECT setval(pg_get_serial_sequence('patients', 'id'),
                           greatest((SELECT max(id) FROM patients), 1),
                           (SELECT max(id) FROM patients) IS NOT NULL);
             SELECT setval(pg_get_serial_sequence('alarms', 'id'),
                           greatest((SELECT max(id) FROM alarms), 1),
                           (SELECT max(id) FROM alarms) IS NOT NULL);",
        )
        .await
        .map_err(fail)?;
    transaction
        .execute(
            "INSERT INTO meta (name, value) VALUES ($1, 1) ON CONFLICT (name) DO NOTHING",
            &[&DONE_META],
        )
        .await
        .map_err(fail)?;
    transaction.commit().await.map_err(fail)?;
    Ok(())
}

/// The same counts on both sides.
async fn verify(client: &Client, source: &Source) -> Result<Vec<CountRow>, StoreError> {
    let source_counts = source.counts()?;
    let row = client
        .query_one(
            "SELECT
                (SELECT count(*) FROM messages WHERE outcome = 'accepted'),
                (SELECT count(*) FROM messages WHERE outcome = 'error'),
                (SELECT count(*) FROM messages WHERE outcome = 'rejected'),
                (SELECT coalesce(sum(n_received), 0)::int8 FROM messages),
                (SELECT coalesce(sum(n_observations), 0)::int8 FROM messages),
                (SELECT coalesce(max(id), 0) FROM messages),
                (SELECT count(*) FROM patients),
                (SELECT count(*) FROM message_keys),
                (SELECT count(*) FROM alarms),
                (SELECT count(*) FROM patient_merges),
                (SELECT count(*) FROM meta WHERE name LIKE 'export:%'),
                (SELECT count(*) FROM export_files)",
            &[],
        )
        .await
        .map_err(fail)?;
    Ok(source_counts
        .into_iter()
        .enumerate()
        .map(|(i, (name, count))| CountRow {
            name,
            source: count,
            target: row.get(i),
        })
        .collect())
}
