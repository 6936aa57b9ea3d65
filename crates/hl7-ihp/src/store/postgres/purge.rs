//! Retention on PostgreSQL: one bounded purge step in one transaction, as SQLite's
//! (store/sqlite/purge.rs, docs/storage.md "Retention"): the oldest messages first by id,
//! accepted ones only up to every enabled exporter's watermark, a message's duplicate key
//! with it, patients' rows kept. Nothing is held in a writer's memory here, so nothing else
//! bounds it. Ids are never handed out again: they come from `counters`, not from the
//! highest id left.

use tokio_postgres::Client;

use super::db_error;
use crate::store::{HoldReason, PurgeReport, PurgeRequest, StoreError};

/// A step reads at most this many rows per message it may remove (refused frames among
/// accepted ones are passed over without a long step).
const SCAN_FACTOR: usize = 8;

/// A step that stops at a bound counts the old messages held back beyond it, up to this.
const HELD_BACK_COUNT_LIMIT: i64 = 100_000;

fn fail(e: tokio_postgres::Error) -> StoreError {
    db_error("purge step failed", &e)
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One step; a dry run counts (without a limit) and removes nothing.
pub(super) async fn step(
    client: &mut Client,
    request: &PurgeRequest,
) -> Result<PurgeReport, StoreError> {
    let transaction = client.transaction().await.map_err(fail)?;
    let limit = if request.dry_run {
        usize::MAX
    } else {
        request.max_messages.max(1)
    };
    let mut report = PurgeReport {
        cursor: request.cursor,
        ..PurgeReport::default()
    };
    let (mut accepted_after, mut refused_after) = request.cursor.positions();
    let mut doomed: Vec<i64> = Vec::new();

    if let Some(cutoff) = request.accepted_before_ms {
        // The bound: the lowest watermark of the exporters that must hold a message first.
        let mut bound = (i64::MAX, None);
        for exporter in &request.exporters {
            let through: i64 = transaction
                .query_opt(
                    "SELECT value FROM meta WHERE name = $1",
                    &[&format!("export:{exporter}")],
                )
                .await
                .map_err(fail)?
                .map_or(0, |row| row.get(0));
            if through < bound.0 {
                bound = (
                    through,
                    Some(HoldReason::NotExported {
                        exporter: exporter.clone(),
                        through,
                    }),
                );
            }
        }
        let scan = limit.saturating_mul(SCAN_FACTOR);
        let rows = transaction
            .query(
                "SELECT id, received_ms, outcome = 'accepted' FROM messages
                 WHERE id > $1 ORDER BY id LIMIT $2",
                &[&accepted_after, &as_i64(scan)],
            )
            .await
            .map_err(fail)?;
        let mut held_from = None;
        let mut reached_window = false;
        for row in &rows {
            let id: i64 = row.get(0);
            if row.get::<_, i64>(1) >= cutoff {
                reached_window = true;
                break;
            }
            if !row.get::<_, bool>(2) {
                accepted_after = id;
                continue;
            }
            if id > bound.0 {
                held_from = Some(id);
                break;
            }
            doomed.push(id);
            report.n_accepted += 1;
            accepted_after = id;
            if report.n_accepted >= limit as u64 {
                report.more = true;
                break;
            }
        }
        if let Some(held_from) = held_from {
            let count_limit = if request.dry_run {
                i64::MAX
            } else {
                HELD_BACK_COUNT_LIMIT
            };
            let rows = transaction
                .query(
                    "SELECT received_ms, outcome = 'accepted' FROM messages
                     WHERE id >= $1 ORDER BY id LIMIT $2",
                    &[&held_from, &count_limit],
                )
                .await
                .map_err(fail)?;
            for row in &rows {
                if row.get::<_, i64>(0) >= cutoff {
                    break;
                }
                if row.get::<_, bool>(1) {
                    report.n_held_back += 1;
                }
            }
            report.held_by = bound.1;
        } else if !reached_window && !report.more && rows.len() >= scan {
            // The scan ended without reaching the window: more to look at next step.
            report.more = true;
        }
    }
    let left = limit.saturating_sub(usize::try_from(report.n_accepted).unwrap_or(usize::MAX));
    if let Some(cutoff) = request.refused_before_ms
        && left > 0
    {
        let rows = transaction
            .query(
                "SELECT id, received_ms FROM messages WHERE outcome <> 'accepted' AND id > $1
                 ORDER BY id LIMIT $2",
                &[&refused_after, &as_i64(left)],
            )
            .await
            .map_err(fail)?;
        let mut n = 0;
        let mut reached_window = false;
        for row in &rows {
            if row.get::<_, i64>(1) >= cutoff {
                reached_window = true;
                break;
            }
            let id: i64 = row.get(0);
            doomed.push(id);
            n += 1;
            report.n_refused += 1;
            refused_after = id;
        }
        if !reached_window && n >= left {
            report.more = true;
        }
    }
    report.cursor = crate::store::PurgeCursor::at(accepted_after, refused_after);
    if request.dry_run {
        transaction.rollback().await.map_err(fail)?;
        return Ok(report);
    }
    if !doomed.is_empty() {
        // The patient list's counts lose the removed records; the keys go with their
        // message (by the whole key and the message's id, never by time).
        transaction
            .execute(
                "UPDATE patients p SET n_observations = greatest(p.n_observations - d.n, 0)
                 FROM (SELECT patient, sum(n_observations) AS n FROM messages
                       WHERE id = ANY($1) AND patient IS NOT NULL GROUP BY patient) AS d
                 WHERE p.id = d.patient",
                &[&doomed],
            )
            .await
            .map_err(fail)?;
        transaction
            .execute(
                "DELETE FROM message_keys k USING messages m
                 WHERE m.id = ANY($1) AND k.message = m.id
                   AND k.sending_application = m.sending_application
                   AND k.sending_facility = m.sending_facility
                   AND k.control_id = m.control_id AND k.hash = m.hash",
                &[&doomed],
            )
            .await
            .map_err(fail)?;
        // An alarm goes with its message (schema version 2).
        transaction
            .execute("DELETE FROM alarms WHERE message = ANY($1)", &[&doomed])
            .await
            .map_err(fail)?;
        transaction
            .execute("DELETE FROM messages WHERE id = ANY($1)", &[&doomed])
            .await
            .map_err(fail)?;
    }
    transaction.commit().await.map_err(fail)?;
    Ok(report)
}
