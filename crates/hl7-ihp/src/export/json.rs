//! The JSON documents: one `patient_<id>.json` per patient, rewritten at most once every
//! `min_interval`, mostly by copying its previous version (module docs of `export`).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Context, Flushed, Folder, Identity, NameCase, Sink, file_name, record_limit};
use crate::documents::patient::{
    DOCUMENT_END, Fields, assemble, render_document, write_header, write_message_records,
};
use crate::store::{ChangeCursor, FeedMessage, FilePosition, PatientData, Store, StoreError};

/// JSON flushes happen on this grid, each writing every file due by then: fewer, larger
/// batches (one `syncfs`, one folder sync, one store write each) for up to this much delay.
const FLUSH_GRID: Duration = Duration::from_millis(500);

/// Unwritten lines one patient may hold; past it (or past the cap) the file is rebuilt
/// from the store instead, which costs the same and holds nothing in memory.
const MAX_PENDING_PER_PATIENT: usize = 256 << 10;

pub(super) struct JsonSink {
    store: Arc<dyn Store>,
    folder: Arc<Folder>,
    fields: Fields,
    cap: Option<usize>,
    min_interval: Duration,
    name_case: NameCase,
    patients: HashMap<String, Patient>,
    pending_bytes: usize,
    /// Files of patients merged into another (`FeedMessage::merged_from`), to remove before
    /// the next files are written: the watermark passes the merge only after that.
    merged_away: Vec<String>,
    /// Where [`FLUSH_GRID`] starts.
    epoch: Instant,
}

/// The version of a file the exporter last wrote.
struct Written {
    /// The newest message whose records it holds.
    through: i64,
    identity: Identity,
}

struct Patient {
    /// As the store has them now (the latest feed message's copy).
    data: PatientData,
    /// `None`: not written in this run, or the last write failed: rebuild from the store.
    file: Option<Written>,
    /// Record lines not yet in the file: one block per message, oldest message first, each
    /// its records in OBX order joined by `,\n`; where each block ends and its records.
    lines: Vec<u8>,
    ends: Vec<(usize, usize)>,
    /// Records in `lines`.
    n_lines: usize,
    /// The newest message taken.
    through: i64,
    /// The oldest message taken and not yet in the file: the patient is pending.
    first_pending: Option<i64>,
    /// The lines were dropped (too many): rebuild from the store.
    rebuild: bool,
    last_write: Option<Instant>,
}

impl JsonSink {
    pub(super) fn new(context: &Context) -> JsonSink {
        JsonSink {
            store: Arc::clone(&context.store),
            folder: Arc::clone(&context.folder),
            fields: context.options.fields,
            cap: record_limit(context.options.max_records),
            min_interval: context.options.min_interval,
            name_case: context.options.name_case,
            patients: HashMap::new(),
            pending_bytes: 0,
            merged_away: Vec::new(),
            epoch: Instant::now(),
        }
    }

    /// `at`, or the next point of [`FLUSH_GRID`] after it.
    fn on_grid(&self, at: Instant) -> Instant {
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let grid = FLUSH_GRID.as_nanos();
        let steps = since.div_ceil(grid);
        self.epoch + Duration::from_nanos(u64::try_from(steps * grid).unwrap_or(u64::MAX))
    }

    fn due(&self, patient: &Patient, now: Instant, all: bool) -> bool {
        patient.first_pending.is_some()
            && (all
                || patient
                    .last_write
                    .is_none_or(|at| now >= at + self.min_interval))
    }
}

impl Sink for JsonSink {
    fn take(&mut self, message: &FeedMessage) {
        let Some(data) = message.accepted_patient() else {
            return;
        };
        if let Some(prior) = &message.merged_from {
            // The prior patient's records are the survivor's now: their file goes, and
            // the survivor's is rebuilt from the store with both histories.
            if let Some(gone) = self.patients.remove(prior) {
                self.pending_bytes -= gone.lines.len();
            }
            self.merged_away.push(prior.clone());
            if let Some(survivor) = self.patients.get_mut(&data.key) {
                survivor.rebuild = true;
            }
        }
        let patient = self
            .patients
            .entry(data.key.clone())
            .or_insert_with(|| Patient {
                data: data.clone(),
                file: None,
                lines: Vec::new(),
                ends: Vec::new(),
                n_lines: 0,
                through: 0,
                first_pending: None,
                rebuild: false,
                last_write: None,
            });
        if patient
            .file
            .as_ref()
            .is_some_and(|w| message.id <= w.through)
        {
            // Read from the store with an earlier rebuild.
            return;
        }
        patient.data.clone_from(data);
        patient.through = patient.through.max(message.id);
        patient.first_pending.get_or_insert(message.id);
        if patient.file.is_none() || patient.rebuild {
            return;
        }
        if message.observations.is_empty() {
            return;
        }
        let before = patient.lines.len();
        write_message_records(&mut patient.lines, message, self.fields, b",\n", b"");
        patient
            .ends
            .push((patient.lines.len(), message.observations.len()));
        patient.n_lines += message.observations.len();
        self.pending_bytes += patient.lines.len() - before;
        if self.cap.is_some_and(|cap| patient.n_lines >= cap)
            || patient.lines.len() > MAX_PENDING_PER_PATIENT
        {
            self.pending_bytes -= patient.lines.len();
            patient.rebuild = true;
            patient.lines = Vec::new();
            patient.ends = Vec::new();
            patient.n_lines = 0;
        }
    }

    async fn flush(
        &mut self,
        now: Instant,
        all: bool,
        _read: ChangeCursor,
    ) -> Result<Flushed, StoreError> {
        if !self.merged_away.is_empty() {
            let names: Vec<String> = self
                .merged_away
                .iter()
                .map(|key| file_name(key, self.name_case))
                .collect();
            match Arc::clone(&self.folder).remove_all(names).await {
                Ok(()) => self.merged_away.clear(),
                Err(error) => {
                    return Ok(Flushed {
                        failed: Some((self.merged_away.len(), error)),
                        ..Flushed::default()
                    });
                }
            }
        }
        if !all && self.next_due().is_none_or(|at| now < at) {
            return Ok(Flushed::default());
        }
        let mut due: Vec<String> = self
            .patients
            .iter()
            .filter(|(_, p)| self.due(p, now, all))
            .map(|(key, _)| key.clone())
            .collect();
        due.sort_unstable();
        let mut flushed = Flushed::default();
        // Written under temporary names, made durable together, then renamed.
        let mut renames: Vec<(String, String, String, Written)> = Vec::new();
        for key in due {
            let Some(patient) = self.patients.get_mut(&key) else {
                continue;
            };
            let name = file_name(&key, self.name_case);
            let mut written = None;
            if let Some(previous) = patient.file.as_ref().filter(|_| !patient.rebuild) {
                let folder = Arc::clone(&self.folder);
                let mut header = Vec::new();
                write_header(&mut header, &patient.data, self.fields);
                let lines = std::mem::take(&mut patient.lines);
                let ends = std::mem::take(&mut patient.ends);
                let (identity, cap, name_) = (previous.identity, self.cap, name.clone());
                let result = tokio::task::spawn_blocking(move || {
                    let outcome = (|| -> io::Result<Option<(String, Identity)>> {
                        let Some((old, found)) = folder.read(&name_)? else {
                            return Ok(None);
                        };
                        if found != identity {
                            return Ok(None);
                        }
                        let Some(bytes) = splice(&old, &header, &lines, &ends, cap) else {
                            return Ok(None);
                        };
                        folder.write_temp(&bytes).map(Some)
                    })();
                    (outcome, lines, ends)
                })
                .await;
                let (outcome, lines, ends) = match result {
                    Ok(parts) => parts,
                    Err(_) => (
                        Err(io::Error::other("file writer task failed")),
                        Vec::new(),
                        Vec::new(),
                    ),
                };
                patient.lines = lines;
                patient.ends = ends;
                match outcome {
                    Ok(Some(temp)) => written = Some(temp),
                    // Not the version written last (changed by someone, or gone): rebuild.
                    Ok(None) => {}
                    Err(error) => {
                        fail(&mut flushed, patient, &mut self.pending_bytes, now, error);
                        continue;
                    }
                }
            }
            let through = if written.is_some() {
                patient.through
            } else {
                // From the store: the first write in this run, or the lines were dropped.
                let Some(records) = self.store.patient_records(&key, self.cap).await? else {
                    // A patient the store does not know: nothing to write.
                    self.pending_bytes -= patient.lines.len();
                    patient.lines.clear();
                    patient.ends.clear();
                    patient.n_lines = 0;
                    patient.first_pending = None;
                    continue;
                };
                let through = records
                    .records
                    .iter()
                    .map(|r| r.message_id)
                    .max()
                    .unwrap_or(0)
                    .max(patient.through);
                let folder = Arc::clone(&self.folder);
                let fields = self.fields;
                let result = tokio::task::spawn_blocking(move || {
                    folder.write_temp(&render_document(&records, fields))
                })
                .await
                .unwrap_or_else(|_| Err(io::Error::other("file writer task failed")));
                match result {
                    Ok(temp) => {
                        written = Some(temp);
                        flushed.n_rebuilt += 1;
                    }
                    Err(error) => {
                        fail(&mut flushed, patient, &mut self.pending_bytes, now, error);
                        continue;
                    }
                }
                through
            };
            let Some((temp, identity)) = written else {
                continue;
            };
            flushed.n_bytes += identity.size();
            renames.push((key, name, temp, Written { through, identity }));
        }
        if renames.is_empty() {
            return Ok(flushed);
        }
        let folder = Arc::clone(&self.folder);
        let names: Vec<(String, String)> = renames
            .iter()
            .map(|(_, name, temp, _)| (temp.clone(), name.clone()))
            .collect();
        let synced = tokio::task::spawn_blocking(move || folder.publish(&names))
            .await
            .unwrap_or_else(|_| Err(io::Error::other("folder sync task failed")));
        if let Err(error) = synced {
            // Some may have been renamed: their state is unknown, so all are rebuilt.
            let n = renames.len();
            for (key, ..) in renames {
                if let Some(patient) = self.patients.get_mut(&key) {
                    fail(
                        &mut Flushed::default(),
                        patient,
                        &mut self.pending_bytes,
                        now,
                        io::Error::other(""),
                    );
                }
            }
            flushed.n_bytes = 0;
            flushed.failed = Some((n, error));
            return Ok(flushed);
        }
        for (key, _, _, written) in renames {
            let Some(patient) = self.patients.get_mut(&key) else {
                continue;
            };
            self.pending_bytes -= patient.lines.len();
            patient.lines.clear();
            patient.ends.clear();
            patient.n_lines = 0;
            patient.first_pending = None;
            patient.rebuild = false;
            patient.last_write = Some(now);
            flushed.files.push((
                key,
                FilePosition {
                    through: written.through,
                    length: written.identity.size(),
                },
            ));
            patient.file = Some(written);
        }
        Ok(flushed)
    }

    fn watermark(&self, read: ChangeCursor) -> ChangeCursor {
        self.patients
            .values()
            .filter_map(|p| p.first_pending)
            .min()
            .map_or(read, |first| ChangeCursor::at(first - 1).min(read))
    }

    fn next_due(&self) -> Option<Instant> {
        self.patients
            .values()
            .filter(|p| p.first_pending.is_some())
            .map(|p| p.last_write.map_or(self.epoch, |at| at + self.min_interval))
            .min()
            .map(|due| self.on_grid(due))
    }

    fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }
}

/// A file that failed stays pending and is rebuilt from the store, no sooner than
/// `min_interval` later.
fn fail(
    flushed: &mut Flushed,
    patient: &mut Patient,
    pending_bytes: &mut usize,
    now: Instant,
    error: io::Error,
) {
    *pending_bytes -= patient.lines.len();
    patient.lines = Vec::new();
    patient.ends = Vec::new();
    patient.n_lines = 0;
    patient.file = None;
    patient.rebuild = false;
    patient.last_write = Some(now);
    match &mut flushed.failed {
        Some((n, _)) => *n += 1,
        None => flushed.failed = Some((1, error)),
    }
}

/// The new document from the old one: `header`, the new records (`blocks` split at
/// `ends`, one block per message, oldest message first, so written in reverse; each end
/// with its number of records), then the old records up to `cap` in all. `None` when `old`
/// is not in the layout [`crate::documents::patient::assemble`] writes, or when the new
/// records alone fill the cap (nothing of the old file is left: render it whole instead).
pub(super) fn splice(
    old: &[u8],
    header: &[u8],
    blocks: &[u8],
    ends: &[(usize, usize)],
    cap: Option<usize>,
) -> Option<Vec<u8>> {
    let n_new: usize = ends.iter().map(|(_, n)| n).sum();
    if cap.is_some_and(|cap| n_new >= cap) && n_new > 0 {
        return None;
    }
    let first_line = memchr::memchr(b'\n', old)?;
    if !old[..first_line].ends_with(br#","Records":["#) {
        return None;
    }
    let body = old[first_line + 1..].strip_suffix(DOCUMENT_END)?;
    // `body` is empty or `{…},\n…{…}\n`.
    if !body.is_empty() && !body.ends_with(b"}\n") {
        return None;
    }
    let keep = cap.map_or(usize::MAX, |cap| cap.saturating_sub(n_new));
    let kept: &[u8] = if keep == 0 || body.is_empty() {
        &[]
    } else {
        // The end of the `keep`-th line, without its newline and comma.
        let cut = memchr::memchr_iter(b'\n', body)
            .nth(keep - 1)
            .unwrap_or(body.len() - 1);
        let line = &body[..cut];
        line.strip_suffix(b",").unwrap_or(line)
    };
    let mut out = Vec::with_capacity(header.len() + blocks.len() + 2 * ends.len() + kept.len() + 8);
    let new = (0..ends.len()).rev().map(|i| {
        let start = if i == 0 { 0 } else { ends[i - 1].0 };
        &blocks[start..ends[i].0]
    });
    let lines = new
        .chain(std::iter::once(kept))
        .filter(|block| !block.is_empty());
    assemble(&mut out, header, lines);
    Some(out)
}
