//! Patient merges in the writer's transaction (ADT^A40, A34, A47; docs/acks.md, "Patient
//! merges"): the checks that depend on what the store holds, and the merge itself.
//!
//! Both run inside the transaction that stores the merge message, on the one writer
//! thread, so no other message can change the patients between the check and the merge,
//! and the merge commits (or rolls back) with the message. A refused merge changes nothing:
//! the message is kept as an error with the reason.

use super::writer::{Statements, TailChange, WriterState};
use super::*;
use crate::store::MergeRequest;

/// A chain of merges longer than this is not followed (a merge into a patient already
/// merged away is refused, so chains only come from merges of merged survivors' priors,
/// one link per merge; the bound only keeps a damaged table from looping).
const MAX_MERGE_HOPS: usize = 16;

pub(super) const FIND_PATIENT_ROW: &str = "SELECT id FROM patients WHERE key = ?1";

pub(super) const FIND_MERGE: &str = "SELECT survivor_key FROM patient_merges WHERE prior_key = ?1";

const INSERT_MERGE: &str = "INSERT INTO patient_merges \
     (prior_key, survivor_key, message, event, merged_ms, n_messages) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The key a patient's messages are kept under now: `key` itself, or the survivor of the
/// merges it was part of. `None` when `key` was never merged.
pub(super) fn survivor_of(
    statements: &mut Statements<'_>,
    key: &str,
) -> rusqlite::Result<Option<String>> {
    let mut current: Option<String> = None;
    for _ in 0..MAX_MERGE_HOPS {
        let next: Option<String> = statements
            .find_merge
            .query_row([current.as_deref().unwrap_or(key)], |row| row.get(0))
            .optional()?;
        match next {
            Some(next) => current = Some(next),
            None => break,
        }
    }
    Ok(current)
}

pub(super) fn patient_row_by_key(
    statements: &mut Statements<'_>,
    key: &str,
) -> rusqlite::Result<Option<i64>> {
    statements
        .find_patient_row
        .query_row([key], |row| row.get(0))
        .optional()
}

/// Checks a merge of `merge.prior` into `survivor` against the store and, when it passes,
/// makes it: `Ok(Err(reason))` when it is refused (nothing was changed). `message` is the
/// id the merge message gets.
#[allow(clippy::too_many_arguments)]
pub(super) fn merge_patients(
    conn: &Connection,
    statements: &mut Statements<'_>,
    state: &mut WriterState,
    tail: &Mutex<PatientTail>,
    change: &mut TailChange,
    merge: &MergeRequest,
    survivor: &str,
    message: i64,
    received_ms: i64,
) -> rusqlite::Result<Result<(), String>> {
    let prior = merge.prior.as_str();
    if prior == survivor {
        return Ok(Err(
            "MRG-1 names the same patient as PID-3: nothing to merge".into(),
        ));
    }
    if survivor_of(statements, prior)?.is_some() {
        return Ok(Err(
            "the prior patient (MRG-1) was already merged into another patient".into(),
        ));
    }
    if survivor_of(statements, survivor)?.is_some() {
        return Ok(Err(
            "the surviving patient (PID-3) was itself merged into another patient; \
             merge into that one"
                .into(),
        ));
    }
    let prior_row = patient_row_by_key(statements, prior)?;
    let survivor_row = patient_row_by_key(statements, survivor)?;
    let n_messages = match (prior_row, survivor_row) {
        (None, Some(_)) => {
            return Ok(Err(
                "wrong way round? MRG-1 unknown, PID-3 known: nothing to merge".into(),
            ));
        }
        // Neither is known: nothing moves, but the merge is recorded, so that messages
        // sent later under the prior identifier join the survivor.
        (None, None) => 0,
        // A rename (A47's case, or an A40 to a new identifier): the prior patient's row
        // takes the survivor's key, and every message, index entry and tail entry follows
        // without being touched.
        (Some(row), None) => {
            conn.prepare_cached("UPDATE patients SET key = ?2, updated_ms = ?3 WHERE id = ?1")?
                .execute(params![row, survivor, received_ms])?;
            state.patients.remove(prior);
            count_messages(conn, tail, change, row)?
        }
        (Some(prior_row), Some(survivor_row)) => {
            let n = repoint(conn, statements, tail, change, prior_row, survivor_row)?;
            conn.prepare_cached("DELETE FROM patients WHERE id = ?1")?
                .execute([prior_row])?;
            state.patients.remove(prior);
            n
        }
    };
    conn.prepare_cached(INSERT_MERGE)?.execute(params![
        prior,
        survivor,
        message,
        merge.event,
        received_ms,
        n_messages
    ])?;
    Ok(Ok(()))
}

/// The messages about a patient row: the index, the tail and this transaction's.
fn count_messages(
    conn: &Connection,
    tail: &Mutex<PatientTail>,
    change: &TailChange,
    row: i64,
) -> rusqlite::Result<i64> {
    let indexed: i64 = conn
        .prepare_cached("SELECT count(*) FROM patient_messages WHERE patient = ?1")?
        .query_row([row], |r| r.get(0))?;
    let in_tail = lock(tail).entries(row).len() as i64;
    let appended = change.appended.iter().filter(|(p, _)| *p == row).count() as i64;
    Ok(indexed + in_tail + appended)
}

/// Moves every message of patient row `prior` to row `survivor`: the messages' `patient`,
/// the index, the shared tail's entries of both (written into the index now and forgotten
/// from the tail once the transaction commits, so that the survivor's tail is again a run
/// of their newest messages), and this transaction's entries. Returns how many moved.
fn repoint(
    conn: &Connection,
    statements: &mut Statements<'_>,
    tail: &Mutex<PatientTail>,
    change: &mut TailChange,
    prior: i64,
    survivor: i64,
) -> rusqlite::Result<i64> {
    let (prior_tail, survivor_tail) = {
        let tail = lock(tail);
        (tail.entries(prior), tail.entries(survivor))
    };
    let mut ids: Vec<i64> = conn
        .prepare_cached("SELECT message FROM patient_messages WHERE patient = ?1")?
        .query_map([prior], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    ids.extend(prior_tail.iter().map(|e| e.message));
    for (patient, entry) in &mut change.appended {
        if *patient == prior {
            *patient = survivor;
            ids.push(entry.message);
        }
    }
    {
        let mut set = conn.prepare_cached("UPDATE messages SET patient = ?2 WHERE id = ?1")?;
        for id in &ids {
            set.execute(params![id, survivor])?;
        }
    }
    conn.prepare_cached("UPDATE patient_messages SET patient = ?2 WHERE patient = ?1")?
        .execute(params![prior, survivor])?;
    for (row, entries) in [(prior, &prior_tail), (survivor, &survivor_tail)] {
        for entry in entries {
            statements.insert_patient_entry.execute(params![
                survivor,
                entry.message,
                entry.n_observations
            ])?;
        }
        if let Some(last) = entries.last() {
            change.moved.push((row, last.message));
        }
    }
    Ok(ids.len() as i64)
}

/// Forgets the file positions (`export_files`) of the patients merged away by the merges
/// an exporter's watermark `name` passes on its way to `through`: the exporter removed
/// their files before it let the watermark pass the merge (docs/patient-files.md), so the
/// positions go in the same transaction as the watermark, and `hl7-ihp patients` and a
/// restarted NDJSON stream never see a position of a file that is gone. Not done in the
/// merge's own transaction: until the exporter has removed the file, its position is what
/// the exporter's recovery needs, and an exporter that read the prior's messages before
/// the merge may still record the prior's file with a watermark before it.
pub(super) fn forget_merged_files(
    conn: &Connection,
    name: &str,
    through: i64,
) -> rusqlite::Result<()> {
    let Some(exporter) = name.strip_prefix(super::EXPORT_WATERMARK_PREFIX) else {
        return Ok(());
    };
    conn.prepare_cached(
        "DELETE FROM export_files WHERE exporter = ?1 AND patient IN \
         (SELECT prior_key FROM patient_merges WHERE message <= ?3 AND message > \
          coalesce((SELECT value FROM meta WHERE name = ?2), 0))",
    )?
    .execute(params![exporter, name, through])?;
    Ok(())
}
