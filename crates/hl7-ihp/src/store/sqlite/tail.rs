//! The patient index's tail: the entries the SQLite writer has not yet moved into the
//! `patient_messages` table, kept in memory and shared with the readers.
//!
//! An index keyed by patient takes one entry per message on that patient's own page, so a
//! transaction of 30 messages about 30 patients writes 30 pages of it to the WAL, more than
//! the messages themselves (measured: about a sixth of the receiver's throughput at 64
//! connections and 1,000 patients). The writer instead collects each patient's entries here
//! and moves them into the table once a patient has [`FLUSH_ENTRIES`] of them, or they are
//! [`FLUSH_AGE`] old (looked at once every few transactions; everything at shutdown): one
//! page write then carries many entries.
//!
//! A patient's entries here are always a contiguous run of their newest messages (up to
//! [`PatientTail::known_through`]): appending adds every new message, and the writer only
//! forgets a prefix once its move has committed. So a reader gets every message of a
//! patient exactly once from three parts: the table below the run's first id, the run, and
//! (written by another process) the messages after `known_through`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

// The writer's side of the tail (loading it, moving entries into the table) uses the
// store's connection and statements.
use super::writer::{Statements, TailChange};
use super::*;

/// A patient's entries are moved into the table once there are this many.
pub const FLUSH_ENTRIES: usize = 16;

/// ... or once the oldest is this old.
pub const FLUSH_AGE: Duration = Duration::from_secs(2);

/// One message in the patient index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The message id.
    pub message: i64,
    /// Its number of observations.
    pub n_observations: i64,
}

/// A patient's part of the tail, per [`PatientTail::totals`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// The first (lowest) message id in the tail.
    pub first: i64,
    /// The last (highest) message id in the tail.
    pub last: i64,
    /// Observations of the messages in the tail.
    pub n_observations: i64,
}

#[derive(Debug)]
struct Pending {
    entries: Vec<Entry>,
    since: Instant,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct PatientTail {
    pending: HashMap<i64, Pending>,
    /// The patients with at least [`FLUSH_ENTRIES`] entries: what is due without looking at
    /// every patient (there may be many thousands).
    full: BTreeSet<i64>,
    known_through: i64,
}

impl PatientTail {
    /// An empty tail; every message up to `known_through` is in the table.
    pub fn new(known_through: i64) -> PatientTail {
        PatientTail {
            pending: HashMap::new(),
            full: BTreeSet::new(),
            known_through,
        }
    }

    /// The highest message id this process has written or loaded; messages above it were
    /// written by another process.
    pub fn known_through(&self) -> i64 {
        self.known_through
    }

    /// Notes that every message up to `id` is known (written, loaded, or not about a patient).
    pub fn know_through(&mut self, id: i64) {
        self.known_through = self.known_through.max(id);
    }

    /// Adds a message about `patient`; ids only grow.
    pub fn append(&mut self, patient: i64, entry: Entry, now: Instant) {
        let pending = self.pending.entry(patient).or_insert_with(|| Pending {
            entries: Vec::new(),
            since: now,
        });
        pending.entries.push(entry);
        if pending.entries.len() == FLUSH_ENTRIES {
            self.full.insert(patient);
        }
        self.know_through(entry.message);
    }

    /// Undoes the appends of a transaction that rolled back: forgets every entry from
    /// message `first` on, and restores `known_through`.
    pub fn roll_back(&mut self, first: i64, known_through: i64) {
        let full = &mut self.full;
        self.pending.retain(|patient, pending| {
            pending.entries.retain(|entry| entry.message < first);
            if pending.entries.len() < FLUSH_ENTRIES {
                full.remove(patient);
            }
            !pending.entries.is_empty()
        });
        self.known_through = known_through;
    }

    /// The patients whose entries are due to move, with copies of those entries, by
    /// patient: everything when `all`, else those with at least [`FLUSH_ENTRIES`] entries
    /// and, when `check_age` (the only case that looks at every patient), those whose
    /// oldest entry is older than [`FLUSH_AGE`].
    pub fn due(&self, all: bool, check_age: bool, now: Instant) -> Vec<(i64, Vec<Entry>)> {
        let mut due: Vec<(i64, Vec<Entry>)> = if all || check_age {
            self.pending
                .iter()
                .filter(|(_, pending)| {
                    all || pending.entries.len() >= FLUSH_ENTRIES
                        || now.duration_since(pending.since) >= FLUSH_AGE
                })
                .map(|(patient, pending)| (*patient, pending.entries.clone()))
                .collect()
        } else {
            self.full
                .iter()
                .filter_map(|patient| {
                    let pending = self.pending.get(patient)?;
                    Some((*patient, pending.entries.clone()))
                })
                .collect()
        };
        due.sort_unstable_by_key(|(patient, _)| *patient);
        due
    }

    /// The lowest message id in the tail apart from `except`'s entries (those about to
    /// move), if any. Looks at every patient.
    pub fn first_except(&self, except: &[(i64, Vec<Entry>)]) -> Option<i64> {
        self.pending
            .iter()
            .filter(|(patient, _)| except.binary_search_by_key(*patient, |(p, _)| *p).is_err())
            .filter_map(|(_, pending)| pending.entries.first().map(|e| e.message))
            .min()
    }

    /// Forgets `patient`'s entries up to message `through`, once they are in the table.
    pub fn forget(&mut self, patient: i64, through: i64, now: Instant) {
        if let Some(pending) = self.pending.get_mut(&patient) {
            pending.entries.retain(|entry| entry.message > through);
            if pending.entries.len() < FLUSH_ENTRIES {
                self.full.remove(&patient);
            }
            if pending.entries.is_empty() {
                self.pending.remove(&patient);
            } else {
                pending.since = now;
            }
        }
    }

    /// A patient's entries, oldest first.
    pub fn entries(&self, patient: i64) -> Vec<Entry> {
        self.pending
            .get(&patient)
            .map(|pending| pending.entries.clone())
            .unwrap_or_default()
    }

    /// Every patient's part of the tail, counting the messages up to `newest` (the entries
    /// after it belong to a transaction the reader's snapshot does not hold). `first` is
    /// the first entry even so: the table holds none of a patient's messages from there.
    pub fn totals(&self, newest: i64) -> HashMap<i64, Totals> {
        self.pending
            .iter()
            .filter_map(|(patient, pending)| {
                let first = pending.entries.first()?.message;
                let counted = pending.entries.iter().filter(|e| e.message <= newest);
                let last = counted.clone().next_back()?.message;
                let n_observations = counted.map(|e| e.n_observations).sum();
                Some((
                    *patient,
                    Totals {
                        first,
                        last,
                        n_observations,
                    },
                ))
            })
            .collect()
    }

    /// Number of entries in the tail.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.values().map(|p| p.entries.len()).sum()
    }
}

// ---------------------------------------------------------------------------------------
// Loading the tail and moving its entries into `patient_messages`

/// Adds a transaction's patient entries to the shared tail and moves the entries that are
/// due into `patient_messages`, inside the transaction. The entries join the tail before
/// the commit, so that a reader whose snapshot holds the messages also finds them there.
pub(super) fn move_patient_entries(
    statements: &mut Statements<'_>,
    tail: &Mutex<PatientTail>,
    change: &mut TailChange,
) -> rusqlite::Result<()> {
    let (move_all, check_age) = (change.move_all, change.check_age);
    let now = Instant::now();
    let (due, through) = {
        let mut tail = lock(tail);
        change.shared = Some(tail.known_through());
        for (patient, entry) in &change.appended {
            tail.append(*patient, *entry, now);
        }
        tail.know_through(change.last_id);
        let due = tail.due(move_all, check_age, now);
        // Every message below the first one left in the tail is in the table after this.
        // Worked out now and then only (it looks at every patient): the next start loads
        // the tail from there, and an older value only loads more.
        let through = check_age.then(|| {
            tail.first_except(&due)
                .map_or(tail.known_through(), |first| first - 1)
        });
        if due.is_empty() && through.is_none() {
            return Ok(());
        }
        (due, through)
    };
    for (patient, entries) in &due {
        for entry in entries {
            statements.insert_patient_entry.execute(params![
                patient,
                entry.message,
                entry.n_observations
            ])?;
        }
        if let Some(last) = entries.last() {
            change.moved.push((*patient, last.message));
        }
    }
    if let Some(through) = through {
        statements
            .set_meta
            .execute(params![PATIENT_INDEX_THROUGH, through])?;
    }
    Ok(())
}

/// The tail when the store opens: the messages about patients after
/// `patient_index_through` (few, unless the last run stopped abruptly under load).
pub(super) fn load_tail(conn: &Connection) -> rusqlite::Result<PatientTail> {
    // One snapshot: `known_through` must not pass a message the scan did not see.
    let snapshot = conn.unchecked_transaction()?;
    let tail = load_tail_in(&snapshot)?;
    snapshot.commit()?;
    Ok(tail)
}

pub(super) fn load_tail_in(conn: &Connection) -> rusqlite::Result<PatientTail> {
    let through = meta_value(conn, PATIENT_INDEX_THROUGH)?;
    let mut tail = PatientTail::new(through);
    let now = Instant::now();
    let mut statement = conn.prepare(
        "SELECT id, patient, n_observations FROM messages \
         WHERE id > ?1 AND patient IS NOT NULL ORDER BY id",
    )?;
    let mut rows = statement.query([through])?;
    while let Some(row) = rows.next()? {
        let entry = Entry {
            message: row.get(0)?,
            n_observations: row.get(2)?,
        };
        tail.append(row.get(1)?, entry, now);
    }
    let last: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |row| {
        row.get(0)
    })?;
    tail.know_through(last);
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(message: i64) -> Entry {
        Entry {
            message,
            n_observations: 7,
        }
    }

    #[test]
    fn a_patient_is_due_after_enough_entries_or_time() {
        let start = Instant::now();
        let mut tail = PatientTail::new(0);
        for id in 1..FLUSH_ENTRIES as i64 {
            tail.append(1, entry(id), start);
        }
        tail.append(2, entry(100), start);
        assert!(tail.due(false, true, start).is_empty());
        tail.append(1, entry(200), start);
        let due = tail.due(false, true, start);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, 1);
        assert_eq!(due[0].1.len(), FLUSH_ENTRIES);
        // Patient 2 waits for its age, and only when ages are checked.
        let later = start + FLUSH_AGE;
        assert_eq!(tail.due(false, false, later).len(), 1);
        assert_eq!(tail.due(false, true, later).len(), 2);
        assert_eq!(tail.due(true, false, start).len(), 2);
        assert_eq!(tail.known_through(), 200);
    }

    #[test]
    fn forgetting_keeps_the_newer_run_and_first_skips_the_moving_patients() {
        let now = Instant::now();
        let mut tail = PatientTail::new(0);
        for id in [3, 5, 9] {
            tail.append(1, entry(id), now);
        }
        tail.append(2, entry(4), now);
        let moving = vec![(2, tail.entries(2))];
        assert_eq!(tail.first_except(&moving), Some(3));
        assert_eq!(tail.first_except(&[]), Some(3));
        tail.forget(1, 5, now);
        assert_eq!(tail.entries(1), vec![entry(9)]);
        tail.forget(2, 4, now);
        assert!(tail.entries(2).is_empty());
        assert_eq!(tail.len(), 1);
        let totals = tail.totals(i64::MAX);
        assert!(tail.totals(8).is_empty(), "9 is not in the snapshot");
        assert_eq!(
            totals[&1],
            Totals {
                first: 9,
                last: 9,
                n_observations: 7
            }
        );
    }

    #[test]
    fn a_full_patient_stops_being_due_once_moved_or_rolled_back() {
        let now = Instant::now();
        let mut tail = PatientTail::new(0);
        for id in 1..=FLUSH_ENTRIES as i64 {
            tail.append(7, entry(id), now);
        }
        assert_eq!(tail.due(false, false, now).len(), 1);
        tail.roll_back(FLUSH_ENTRIES as i64, FLUSH_ENTRIES as i64 - 1);
        assert!(tail.due(false, false, now).is_empty());
        tail.append(7, entry(100), now);
        assert_eq!(tail.due(false, false, now).len(), 1);
        tail.forget(7, 100, now);
        assert!(tail.due(false, false, now).is_empty());
        assert!(tail.entries(7).is_empty());
    }

    #[test]
    fn a_rolled_back_transaction_leaves_no_entries() {
        let now = Instant::now();
        let mut tail = PatientTail::new(10);
        tail.append(1, entry(11), now);
        tail.append(1, entry(12), now);
        tail.append(2, entry(13), now);
        tail.roll_back(12, 11);
        assert_eq!(tail.entries(1), vec![entry(11)]);
        assert!(tail.entries(2).is_empty());
        assert_eq!(tail.known_through(), 11);
    }
}
