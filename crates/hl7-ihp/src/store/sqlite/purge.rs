//! Retention: removing old messages in small steps on the writer thread, between group
//! commits, so that a step never holds a commit group up for more than a few milliseconds
//! (docs/storage.md, "Retention").
//!
//! What may go is bounded three ways. Accepted messages only up to every enabled exporter's
//! watermark (`export:<name>` in `meta`: the patient files hold them), and only up to
//! `key_index_through` and `patient_index_through`, below which nothing of them is in the
//! writer's memory (pending keys, the patient tail). A message's `message_keys` row goes by
//! its own id with it (never by `sent_ms`: the key of a message still kept is what
//! recognises its retransmission), and its `patient_messages` row too. Patients' rows stay:
//! their demographics are what the next message about them is merged with.
//!
//! Message ids follow the time received, so the oldest messages are the lowest ids: a step
//! reads from its cursor in id order and stops at the first message inside the window. The
//! highest id removed is recorded (`purged_through`), so that ids are never handed out
//! again even when every message is gone.

use super::*;
use crate::store::{HoldReason, PurgeReport, PurgeRequest};

/// The `meta` row holding the highest message id ever removed: the next id is above it.
pub(super) const PURGED_THROUGH: &str = "purged_through";

/// The `meta` row below which (inclusive) every accepted message has been removed.
const PURGED_ACCEPTED_THROUGH: &str = "purged_accepted_through";

/// The `meta` row below which (inclusive) the removed messages' `patient_messages` entries
/// are gone too.
const PURGE_SWEPT_THROUGH: &str = "purge_swept_through";

/// The patient index entries of removed messages are deleted per patient, a range each, at
/// the end of a round or once this many are waiting: one by one they would cost a leaf page
/// of the index per message (each message's patient has its own page), several times what
/// the message's own row costs.
const SWEEP_AFTER: usize = 20_000;

/// A step reads at most this many rows per message it may remove: refused frames kept
/// among accepted ones (or the reverse) are passed over without holding the writer long.
const SCAN_FACTOR: usize = 8;

/// A step that stops at a bound counts the old messages held back beyond it, up to this.
const HELD_BACK_COUNT_LIMIT: usize = 100_000;

/// One message the step removes.
struct Doomed {
    id: i64,
    patient: Option<i64>,
    /// (sent_ms or [`NO_TIME`], key hash, hash prefix) of an accepted message with a key.
    key: Option<(i64, i64, i64)>,
}

impl Writer {
    /// Runs one purge step in its own transaction (a dry run in a read transaction that is
    /// rolled back) and answers it. Before a real step, a transaction without messages moves
    /// the settled keys and patient entries into their tables and records how far they are
    /// complete, so that an idle receiver's last messages are not held back for good.
    pub(super) fn purge(
        &mut self,
        request: PurgeRequest,
        reply: oneshot::Sender<Result<PurgeReport, StoreError>>,
    ) {
        if !request.dry_run {
            self.check_next = true;
            self.run_group(Vec::new(), 0, false);
        }
        if self
            .counters
            .file
            .as_ref()
            .is_some_and(FileWatch::known_lost)
        {
            let _ = reply.send(Err(StoreError::Database(FILE_LOST.into())));
            return;
        }
        let started = Instant::now();
        let result = self.purge_transaction(&request);
        if let Ok(report) = &result
            && !request.dry_run
        {
            let counters = &self.counters;
            counters
                .n_purged
                .fetch_add(report.n_accepted + report.n_refused, Ordering::Relaxed);
            // How long the writer was busy with it: what a commit group may have waited.
            tracing::debug!(
                n_removed = report.n_accepted + report.n_refused,
                step_us = started.elapsed().as_micros() as u64,
                "purge step"
            );
        }
        let _ = reply.send(result.map_err(database_error));
    }

    fn purge_transaction(&mut self, request: &PurgeRequest) -> rusqlite::Result<PurgeReport> {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        self.conn.execute_batch(if request.dry_run {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        })?;
        let result = purge_step(&self.conn, request).and_then(|(report, entries)| {
            let sweep =
                !request.dry_run && (!report.more || self.unswept + entries.len() >= SWEEP_AFTER);
            if sweep {
                sweep_entries(&self.conn, self.stale.as_ref(), &entries)?;
            }
            Ok((report, entries, sweep))
        });
        let result = match result {
            Ok((report, ..)) if request.dry_run => {
                self.conn.execute_batch("ROLLBACK").map(|()| report)
            }
            Ok((report, entries, sweep)) => self.conn.execute_batch("COMMIT").map(|()| {
                // Only what committed: the patients whose entries wait for the next sweep.
                if sweep {
                    self.stale = Some(HashMap::new());
                    self.unswept = 0;
                } else {
                    if let Some(stale) = self.stale.as_mut() {
                        for (patient, id) in &entries {
                            let through = stale.entry(*patient).or_insert(*id);
                            *through = (*through).max(*id);
                        }
                    }
                    self.unswept += entries.len();
                }
                report
            }),
            Err(error) => Err(error),
        };
        if result.is_err()
            && !self.conn.is_autocommit()
            && let Err(error) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(%error, "store rollback failed");
        }
        result
    }
}

/// Deletes the `patient_messages` entries of the removed accepted messages: per patient, the
/// range up to `purged_accepted_through`. The patients are those of `stale` and `entries`
/// when the writer knows them all since the last sweep, else every patient (once after a
/// start that left entries unswept).
fn sweep_entries(
    conn: &Connection,
    stale: Option<&HashMap<i64, i64>>,
    entries: &[(i64, i64)],
) -> rusqlite::Result<()> {
    let through = meta_value(conn, PURGED_ACCEPTED_THROUGH)?;
    if through <= meta_value(conn, PURGE_SWEPT_THROUGH)? {
        return Ok(());
    }
    let patients: Vec<i64> = match stale {
        Some(stale) => {
            let mut patients: Vec<i64> = stale
                .keys()
                .copied()
                .chain(entries.iter().map(|(patient, _)| *patient))
                .collect();
            patients.sort_unstable();
            patients.dedup();
            patients
        }
        None => conn
            .prepare("SELECT id FROM patients ORDER BY id")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?,
    };
    let mut delete =
        conn.prepare_cached("DELETE FROM patient_messages WHERE patient = ?1 AND message <= ?2")?;
    for patient in patients {
        delete.execute([patient, through])?;
    }
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        params![PURGE_SWEPT_THROUGH, through],
    )?;
    Ok(())
}

/// The highest accepted message id that may go, and what sets it when it is not the
/// newest message.
fn accepted_bound(
    conn: &Connection,
    exporters: &[String],
) -> rusqlite::Result<(i64, Option<HoldReason>)> {
    let keys = meta_value(conn, KEY_INDEX_THROUGH)?;
    let patients = meta_value(conn, PATIENT_INDEX_THROUGH)?;
    let indexed = keys.min(patients);
    let mut bound = (indexed, Some(HoldReason::IndexPending { through: indexed }));
    for exporter in exporters {
        let through = meta_value(conn, &format!("{EXPORT_WATERMARK_PREFIX}{exporter}"))?;
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
    Ok(bound)
}

/// One step: the accepted messages first, then the refused frames, at most
/// `max_messages` in all (a dry run counts without a limit).
pub(super) fn purge_step(
    conn: &Connection,
    request: &PurgeRequest,
) -> rusqlite::Result<(PurgeReport, Vec<(i64, i64)>)> {
    let limit = if request.dry_run {
        usize::MAX
    } else {
        request.max_messages.max(1)
    };
    let mut report = PurgeReport {
        cursor: request.cursor,
        ..PurgeReport::default()
    };
    let mut doomed = Vec::new();
    if let Some(cutoff) = request.accepted_before_ms {
        let (bound, reason) = accepted_bound(conn, &request.exporters)?;
        scan_accepted(
            conn,
            cutoff,
            bound,
            reason,
            limit,
            request.dry_run,
            &mut report,
            &mut doomed,
        )?;
    }
    let left = limit.saturating_sub(usize::try_from(report.n_accepted).unwrap_or(usize::MAX));
    if let Some(cutoff) = request.refused_before_ms
        && left > 0
    {
        scan_refused(
            conn,
            cutoff,
            left,
            request.dry_run,
            &mut report,
            &mut doomed,
        )?;
    }
    if !request.dry_run && !doomed.is_empty() {
        remove(conn, &doomed, report.cursor.accepted_after)?;
    }
    let entries = doomed
        .iter()
        .filter_map(|d| d.patient.map(|patient| (patient, d.id)))
        .collect();
    Ok((report, entries))
}

#[allow(clippy::too_many_arguments)]
fn scan_accepted(
    conn: &Connection,
    cutoff: i64,
    bound: i64,
    reason: Option<HoldReason>,
    limit: usize,
    dry_run: bool,
    report: &mut PurgeReport,
    doomed: &mut Vec<Doomed>,
) -> rusqlite::Result<()> {
    let scan = limit.saturating_mul(SCAN_FACTOR);
    let mut statement = conn.prepare_cached(
        "SELECT id, received_ms, outcome = 'accepted', patient, sent_ms, key_hash, hash_prefix \
         FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut rows = statement.query(params![
        report.cursor.accepted_after,
        i64::try_from(scan).unwrap_or(i64::MAX)
    ])?;
    let mut n_scanned = 0;
    let mut held_from = None;
    while let Some(row) = rows.next()? {
        n_scanned += 1;
        let id: i64 = row.get(0)?;
        let received_ms: i64 = row.get(1)?;
        if received_ms >= cutoff {
            return Ok(());
        }
        if !row.get::<_, bool>(2)? {
            report.cursor.accepted_after = id;
            continue;
        }
        if id > bound {
            held_from = Some(id);
            break;
        }
        let key = match (row.get::<_, Option<i64>>(5)?, row.get::<_, Option<i64>>(6)?) {
            (Some(key_hash), Some(prefix)) => Some((
                row.get::<_, Option<i64>>(4)?.unwrap_or(NO_TIME),
                key_hash,
                prefix,
            )),
            _ => None,
        };
        if !dry_run {
            doomed.push(Doomed {
                id,
                patient: row.get(3)?,
                key,
            });
        }
        report.n_accepted += 1;
        report.cursor.accepted_after = id;
        if report.n_accepted >= limit as u64 {
            report.more = true;
            return Ok(());
        }
    }
    drop(rows);
    let Some(held_from) = held_from else {
        // The scan's end without reaching the window: more to look at next step.
        if n_scanned >= scan {
            report.more = true;
        }
        return Ok(());
    };
    // Held back from `held_from` on: count the old accepted messages there.
    let count_limit = if dry_run {
        i64::MAX
    } else {
        HELD_BACK_COUNT_LIMIT as i64
    };
    let mut count = conn.prepare_cached(
        "SELECT received_ms, outcome = 'accepted' FROM messages WHERE id >= ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut rows = count.query(params![held_from, count_limit])?;
    while let Some(row) = rows.next()? {
        if row.get::<_, i64>(0)? >= cutoff {
            break;
        }
        if row.get::<_, bool>(1)? {
            report.n_held_back += 1;
        }
    }
    report.held_by = reason;
    Ok(())
}

fn scan_refused(
    conn: &Connection,
    cutoff: i64,
    limit: usize,
    dry_run: bool,
    report: &mut PurgeReport,
    doomed: &mut Vec<Doomed>,
) -> rusqlite::Result<()> {
    // Through the `messages_refused` index: only the refused frames are read.
    let mut statement = conn.prepare_cached(
        "SELECT id, received_ms FROM messages WHERE outcome <> 'accepted' AND id > ?1 \
         ORDER BY id LIMIT ?2",
    )?;
    let mut rows = statement.query(params![
        report.cursor.refused_after,
        i64::try_from(limit).unwrap_or(i64::MAX)
    ])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if row.get::<_, i64>(1)? >= cutoff {
            return Ok(());
        }
        if !dry_run {
            doomed.push(Doomed {
                id,
                patient: None,
                key: None,
            });
        }
        n += 1;
        report.n_refused += 1;
        report.cursor.refused_after = id;
    }
    if n >= limit {
        report.more = true;
    }
    Ok(())
}

/// Deletes the messages with their duplicate keys, and records the highest id removed and
/// how far every accepted message is gone (their patient index entries go in the next
/// sweep, [`sweep_entries`]).
fn remove(conn: &Connection, doomed: &[Doomed], accepted_through: i64) -> rusqlite::Result<()> {
    let mut message = conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
    // An alarm goes with its message (schema version 10).
    let mut alarms = conn.prepare_cached("DELETE FROM alarms WHERE message = ?1")?;
    let mut key = conn.prepare_cached(
        "DELETE FROM message_keys \
         WHERE sent_ms = ?1 AND key_hash = ?2 AND hash_prefix = ?3 AND message = ?4",
    )?;
    let mut highest = 0;
    for d in doomed {
        message.execute([d.id])?;
        alarms.execute([d.id])?;
        if let Some((sent, key_hash, prefix)) = d.key {
            key.execute([sent, key_hash, prefix, d.id])?;
        }
        highest = highest.max(d.id);
    }
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        params![PURGED_THROUGH, highest],
    )?;
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        params![PURGED_ACCEPTED_THROUGH, accepted_through],
    )?;
    Ok(())
}
