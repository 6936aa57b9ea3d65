//! Patient merges on PostgreSQL (ADT^A40, A34, A47; docs/acks.md, "Patient merges"), with
//! SQLite's semantics (`store/sqlite/merge.rs`): the checks that depend on what the store
//! holds, and the merge itself.
//!
//! A merge is one step of the writer's transaction ([`super::writer`]'s `write`), after the
//! rows before it in the batch are written and before the rows after it are: that
//! transaction holds the feed lock, so no other receiver changes the patients between the
//! check and the merge, and the merge commits (or rolls back) with its message. A refused
//! merge changes nothing: the message is kept as an error with the reason.
//!
//! Merges are rare: the statements here are not prepared ahead, and the batch's own rows
//! are not pipelined around them.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;
use tokio_postgres::Row as PgRow;

use super::db_error;
use super::writer::{End, Row, Statements, Tally, write_rows};
use crate::store::{MergeRequest, MessageKey, StoreError, Stored};

/// A chain of merges longer than this is not followed (as SQLite's `MAX_MERGE_HOPS`: the
/// bound only keeps a damaged table from looping).
const MAX_MERGE_HOPS: i32 = 16;

/// For each key, the survivor at the end of its chain of merges.
const SURVIVORS: &str = "WITH RECURSIVE chain (prior, current, hops) AS (
        SELECT prior_key, survivor_key, 1 FROM patient_merges WHERE prior_key = ANY($1::text[])
        UNION ALL
        SELECT c.prior, g.survivor_key, c.hops + 1
        FROM chain c JOIN patient_merges g ON g.prior_key = c.current
        WHERE c.hops < $2
    )
    SELECT DISTINCT ON (prior) prior, current FROM chain ORDER BY prior, hops DESC";

const IS_STORED: &str = "SELECT 1 FROM message_keys
    WHERE sending_application = $1 AND sending_facility = $2 AND control_id = $3 AND hash = $4";

const INSERT_MERGE: &str = "INSERT INTO patient_merges
    (prior_key, survivor_key, message, event, merged_ms, n_moved)
    VALUES ($1, $2, $3, $4, $5, $6)";

fn fail(e: tokio_postgres::Error) -> StoreError {
    db_error("patient merge failed", &e)
}

/// The survivors of the keys among `keys` that have no patient row (`found` holds the
/// rows found, key first): `prior → survivor` for those merged away, and the survivors'
/// patient rows (read with `find_patients`) that are not among `found`. No statement at
/// all when every key has a row, as in nearly every batch.
pub(super) async fn survivors(
    transaction: &Client,
    statements: &Statements,
    keys: &[&str],
    found: &[PgRow],
) -> Result<(HashMap<String, String>, Vec<PgRow>), tokio_postgres::Error> {
    let known: HashSet<&str> = found.iter().map(|row| row.get::<_, &str>(0)).collect();
    let missing: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !known.contains(k))
        .collect();
    if missing.is_empty() {
        return Ok((HashMap::new(), Vec::new()));
    }
    let redirect: HashMap<String, String> = transaction
        .query(SURVIVORS, &[&missing, &MAX_MERGE_HOPS])
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut wanted: Vec<&str> = redirect
        .values()
        .map(String::as_str)
        .filter(|s| !known.contains(s))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let rows = if wanted.is_empty() {
        Vec::new()
    } else {
        transaction
            .query(&statements.find_patients, &[&wanted])
            .await?
    };
    Ok((redirect, rows))
}

/// Stores one accepted merge message: checks the merge against the store and makes it, then
/// writes the message (as a refused one, with the reason, if it was refused). A
/// retransmission of a stored merge is a duplicate, as any message.
pub(super) async fn write_merge(
    transaction: &Client,
    statements: &Statements,
    row: &Row,
    dedupe: bool,
) -> Result<(Vec<Stored>, Tally), StoreError> {
    let one = std::slice::from_ref(row);
    let (Some(merge), Some(survivor)) = (&row.merge, &row.patient) else {
        return write_rows(transaction, statements, one, dedupe, None, End::Open).await;
    };
    if dedupe
        && let Some(key) = &row.key
        && is_stored(transaction, key, &row.hash).await?
    {
        return write_rows(transaction, statements, one, dedupe, None, End::Open).await;
    }
    let last: i64 = transaction
        .query_one(&statements.last_id, &[])
        .await
        .map_err(fail)?
        .get(0);
    let id = last + 1;
    let result =
        match merge_patients(transaction, merge, &survivor.key, id, row.received_ms).await? {
            Ok(()) => write_rows(transaction, statements, one, dedupe, None, End::Open).await?,
            Err(reason) => {
                let refused = row.clone().refuse(reason);
                write_rows(
                    transaction,
                    statements,
                    std::slice::from_ref(&refused),
                    dedupe,
                    None,
                    End::Open,
                )
                .await?
            }
        };
    match result.0.first() {
        Some(Stored::New { id: got } | Stored::Refused { id: got, .. }) if *got == id => Ok(result),
        _ => Err(StoreError::Database(
            "a patient merge was not stored with the id it was recorded under; rolled back".into(),
        )),
    }
}

async fn is_stored(
    transaction: &Client,
    key: &MessageKey,
    hash: &[u8],
) -> Result<bool, StoreError> {
    Ok(transaction
        .query_opt(
            IS_STORED,
            &[
                &key.sending_application,
                &key.sending_facility,
                &key.control_id,
                &hash,
            ],
        )
        .await
        .map_err(fail)?
        .is_some())
}

/// A patient row's id and what the patient list shows of it.
struct PatientRow {
    id: i64,
    n_observations: i64,
    last_message: Option<i64>,
    last_received_ms: Option<i64>,
}

/// Checks a merge of `merge.prior` into `survivor` against the store and, when it passes,
/// makes it: `Ok(Err(reason))` when it is refused (nothing was changed). `message` is the
/// id the merge message gets. The reasons are SQLite's, word for word.
async fn merge_patients(
    transaction: &Client,
    merge: &MergeRequest,
    survivor: &str,
    message: i64,
    received_ms: i64,
) -> Result<Result<(), String>, StoreError> {
    let prior = merge.prior.as_str();
    if prior == survivor {
        return Ok(Err(
            "MRG-1 names the same patient as PID-3: nothing to merge".into(),
        ));
    }
    let both = [prior, survivor];
    let merged_away: HashSet<String> = transaction
        .query(
            "SELECT prior_key FROM patient_merges WHERE prior_key = ANY($1::text[])",
            &[&&both[..]],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if merged_away.contains(prior) {
        return Ok(Err(
            "the prior patient (MRG-1) was already merged into another patient".into(),
        ));
    }
    if merged_away.contains(survivor) {
        return Ok(Err(
            "the surviving patient (PID-3) was itself merged into another patient; \
             merge into that one"
                .into(),
        ));
    }
    let mut rows: HashMap<String, PatientRow> = transaction
        .query(
            "SELECT key, id, n_observations, last_message, last_received_ms FROM patients
             WHERE key = ANY($1::text[]) FOR UPDATE",
            &[&&both[..]],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|row| {
            (
                row.get(0),
                PatientRow {
                    id: row.get(1),
                    n_observations: row.get(2),
                    last_message: row.get(3),
                    last_received_ms: row.get(4),
                },
            )
        })
        .collect();
    let n_moved: i64 = match (rows.remove(prior), rows.remove(survivor)) {
        (None, Some(_)) => {
            return Ok(Err(
                "wrong way round? MRG-1 unknown, PID-3 known: nothing to merge".into(),
            ));
        }
        // Neither is known: nothing moves, but the merge is recorded, so that messages
        // sent later under the prior identifier join the survivor.
        (None, None) => 0,
        // A rename (A47's case, or an A40 to a new identifier): the prior patient's row
        // takes the survivor's key, and every message follows without being touched.
        (Some(row), None) => {
            transaction
                .execute(
                    "UPDATE patients SET key = $2, updated_ms = $3 WHERE id = $1",
                    &[&row.id, &survivor, &received_ms],
                )
                .await
                .map_err(fail)?;
            transaction
                .query_one(
                    "SELECT count(*) FROM messages WHERE patient = $1",
                    &[&row.id],
                )
                .await
                .map_err(fail)?
                .get(0)
        }
        // Both known: the prior's messages become the survivor's (what the patient list
        // counts too), and the prior's row goes.
        (Some(from), Some(into)) => {
            let moved = transaction
                .execute(
                    "UPDATE messages SET patient = $2 WHERE patient = $1",
                    &[&from.id, &into.id],
                )
                .await
                .map_err(fail)?;
            transaction
                .execute(
                    "UPDATE patients SET n_observations = n_observations + $2,
                         last_message = greatest(last_message, $3),
                         last_received_ms = greatest(last_received_ms, $4),
                         updated_ms = $5
                     WHERE id = $1",
                    &[
                        &into.id,
                        &from.n_observations,
                        &from.last_message,
                        &from.last_received_ms,
                        &received_ms,
                    ],
                )
                .await
                .map_err(fail)?;
            transaction
                .execute("DELETE FROM patients WHERE id = $1", &[&from.id])
                .await
                .map_err(fail)?;
            i64::try_from(moved).unwrap_or(i64::MAX)
        }
    };
    transaction
        .execute(
            INSERT_MERGE,
            &[
                &prior,
                &survivor,
                &message,
                &merge.event,
                &received_ms,
                &n_moved,
            ],
        )
        .await
        .map_err(fail)?;
    Ok(Ok(()))
}
