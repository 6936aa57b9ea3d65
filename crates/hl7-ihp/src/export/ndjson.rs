//! The NDJSON streams: one `patient_<id>.ndjson` per patient, one record a line, oldest
//! first, appended and synced in batches, never rewritten (module docs of `export`).
//!
//! # Exactly once across crashes
//!
//! The store records, with the watermark, each stream's position: the newest message whose
//! lines it holds and its length then. A flush appends, syncs, and only then records. So
//! after a crash a stream may hold more than its recorded length: complete lines appended
//! but not recorded, and perhaps a torn last line. When the stream is next opened:
//! - a torn last line (bytes after the last newline) is cut;
//! - the complete lines after the recorded length are kept, and compared with the records
//!   that come next from the feed (the feed is read again from the watermark, and a line
//!   is rendered the same way from the same record): each one that matches is not written
//!   again; at the first that differs, the rest is cut and written anew;
//! - lines that nothing in the store matches (a database restored from an older copy)
//!   are cut once the feed has been read up to where it ended at start;
//! - a stream shorter than recorded (someone truncated or removed it) is rebuilt whole
//!   from the store, atomically.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::sync::Arc;

use tokio::time::Instant;

use super::{Context, Flushed, Folder, NDJSON_INTERVAL, NameCase, Sink, ndjson_file_name};
use crate::documents::patient::{Fields, RecordSource, write_message_records, write_record};
use crate::store::{ChangeCursor, FeedMessage, FilePosition, Store, StoreError};

pub(super) struct NdjsonSink {
    store: Arc<dyn Store>,
    folder: Arc<Folder>,
    fields: Fields,
    name_case: NameCase,
    exporter: &'static str,
    patients: HashMap<String, Stream>,
    pending_bytes: usize,
    last_flush: Option<Instant>,
    /// The feed's end at the first flush: once read past it, unmatched lines are orphans.
    head_at_start: Option<ChangeCursor>,
    /// Streams of patients merged into another, to remove at the next flush (before the
    /// merge message, pending on the survivor's stream, lets the watermark pass it).
    merged_away: Vec<String>,
}

/// What the exporter knows of one stream.
#[derive(Default)]
struct Stream {
    /// `None` until opened in this run (or after a failure).
    at: Option<At>,
    /// Pending lines (each ending in `\n`), oldest first, with each message's id and end.
    lines: Vec<u8>,
    messages: Vec<(i64, usize)>,
}

/// A stream's verified state.
#[derive(Clone)]
struct At {
    /// The newest message whose lines it holds.
    through: i64,
    /// Its length up to the end of what is verified.
    length: u64,
    /// Complete lines after `length`, found at opening, still to be matched.
    extra: VecDeque<Vec<u8>>,
}

impl NdjsonSink {
    pub(super) fn new(context: &Context) -> NdjsonSink {
        NdjsonSink {
            store: Arc::clone(&context.store),
            folder: Arc::clone(&context.folder),
            fields: context.options.fields,
            name_case: context.options.name_case,
            exporter: context.output.name(),
            patients: HashMap::new(),
            pending_bytes: 0,
            last_flush: None,
            head_at_start: None,
            merged_away: Vec::new(),
        }
    }
}

impl Sink for NdjsonSink {
    fn take(&mut self, message: &FeedMessage) {
        let Some(data) = message.accepted_patient() else {
            return;
        };
        if let Some(prior) = &message.merged_from {
            if let Some(gone) = self.patients.remove(prior) {
                self.pending_bytes -= gone.lines.len();
            }
            self.merged_away.push(prior.clone());
        }
        let stream = self.patients.entry(data.key.clone()).or_default();
        if stream
            .at
            .as_ref()
            .is_some_and(|at| message.id <= at.through)
        {
            return;
        }
        let before = stream.lines.len();
        write_message_records(&mut stream.lines, message, self.fields, b"", b"\n");
        // Also without records (an ADT), so the recorded position names the patient's
        // newest message.
        stream.messages.push((message.id, stream.lines.len()));
        self.pending_bytes += stream.lines.len() - before;
    }

    async fn flush(
        &mut self,
        now: Instant,
        all: bool,
        read: ChangeCursor,
    ) -> Result<Flushed, StoreError> {
        let mut flushed = Flushed::default();
        if !all && self.last_flush.is_some_and(|at| now < at + NDJSON_INTERVAL) {
            return Ok(flushed);
        }
        self.last_flush = Some(now);
        if !self.merged_away.is_empty() {
            let names: Vec<String> = self
                .merged_away
                .iter()
                .map(|key| ndjson_file_name(key, self.name_case))
                .collect();
            match Arc::clone(&self.folder).remove_all(names).await {
                Ok(()) => self.merged_away.clear(),
                Err(error) => {
                    flushed.failed = Some((self.merged_away.len(), error));
                    return Ok(flushed);
                }
            }
        }
        let head = match self.head_at_start {
            Some(head) => head,
            None => {
                let head = self.store.feed_head().await?;
                self.head_at_start = Some(head);
                head
            }
        };
        let past_start = read >= head;
        let mut keys: Vec<String> = self
            .patients
            .iter()
            .filter(|(_, s)| {
                !s.messages.is_empty()
                    || (past_start && s.at.as_ref().is_some_and(|a| !a.extra.is_empty()))
            })
            .map(|(key, _)| key.clone())
            .collect();
        if keys.is_empty() {
            return Ok(flushed);
        }
        keys.sort_unstable();
        // Where the streams not yet opened in this run stand, as recorded.
        let unopened: Vec<String> = keys
            .iter()
            .filter(|key| self.patients.get(*key).is_some_and(|s| s.at.is_none()))
            .cloned()
            .collect();
        let recorded = if unopened.is_empty() {
            HashMap::new()
        } else {
            self.store
                .export_files(self.exporter, Some(unopened))
                .await?
        };
        // Streams shorter than recorded are rebuilt whole from the store.
        let mut rebuilt: HashMap<String, (i64, u64)> = HashMap::new();
        for key in &keys {
            let Some(position) = recorded.get(key) else {
                continue;
            };
            let name = ndjson_file_name(key, self.name_case);
            let length = self
                .folder
                .identity(&name)
                .ok()
                .flatten()
                .map_or(0, |i| i.size());
            if length >= position.length {
                continue;
            }
            let Some(records) = self.store.patient_records(key, None).await? else {
                continue;
            };
            let through = records
                .records
                .iter()
                .map(|r| r.message_id)
                .max()
                .unwrap_or(0);
            let folder = Arc::clone(&self.folder);
            let fields = self.fields;
            let result = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                for row in records.records.iter().rev() {
                    write_record(&mut bytes, RecordSource::from(row), fields);
                    bytes.push(b'\n');
                }
                folder.write_atomically(&name, &bytes).map(|i| i.size())
            })
            .await
            .unwrap_or_else(|_| Err(io::Error::other("file writer task failed")));
            match result {
                Ok(length) => {
                    tracing::warn!(
                        "an NDJSON stream was shorter than recorded; rebuilt from the store"
                    );
                    flushed.n_rebuilt += 1;
                    flushed.n_bytes += length;
                    rebuilt.insert(key.clone(), (through, length));
                }
                Err(error) => note_failure(&mut flushed, error),
            }
        }

        // The appends, each synced by one `syncfs` below.
        let mut work = Vec::with_capacity(keys.len());
        for key in &keys {
            let Some(stream) = self.patients.get_mut(key) else {
                continue;
            };
            let start = match stream.at.take() {
                Some(at) => Start::Known(at),
                None => match rebuilt.get(key) {
                    Some(&(through, length)) => Start::Known(At {
                        through,
                        length,
                        extra: VecDeque::new(),
                    }),
                    None => Start::Recorded(recorded.get(key).copied().unwrap_or_default()),
                },
            };
            let lines = std::mem::take(&mut stream.lines);
            let messages = std::mem::take(&mut stream.messages);
            self.pending_bytes -= lines.len();
            work.push(Append {
                key: key.clone(),
                name: ndjson_file_name(key, self.name_case),
                start,
                lines,
                messages,
            });
        }
        let folder = Arc::clone(&self.folder);
        let done = tokio::task::spawn_blocking(move || {
            let results: Vec<(Append, io::Result<(At, u64)>)> = work
                .into_iter()
                .map(|append| {
                    let result = append.run(&folder, past_start);
                    (append, result)
                })
                .collect();
            let synced = folder.sync_files();
            (results, synced)
        })
        .await;
        let Ok((results, synced)) = done else {
            // The task's lines are gone with it: every stream is checked again from what
            // is recorded, and nothing after the watermark is lost (it did not move).
            self.patients.clear();
            self.pending_bytes = 0;
            note_failure(&mut flushed, io::Error::other("file writer task failed"));
            return Ok(flushed);
        };
        if let Err(error) = synced {
            for (append, _) in results {
                self.put_back(append);
            }
            note_failure(&mut flushed, error);
            return Ok(flushed);
        }
        for (append, result) in results {
            let key = append.key.clone();
            match result {
                Ok((at, n_bytes)) => {
                    let Some(stream) = self.patients.get_mut(&key) else {
                        continue;
                    };
                    flushed.n_bytes += n_bytes;
                    flushed.files.push((
                        key,
                        FilePosition {
                            through: at.through,
                            length: at.length,
                        },
                    ));
                    stream.at = Some(at);
                }
                Err(error) => {
                    // Tried again at the next flush, from the state before this one (a
                    // partial append is then found as lines after it, and matched).
                    self.put_back(append);
                    note_failure(&mut flushed, error);
                }
            }
        }
        Ok(flushed)
    }

    fn watermark(&self, read: ChangeCursor) -> ChangeCursor {
        self.patients
            .values()
            .filter_map(|s| s.messages.first().map(|(id, _)| *id))
            .min()
            .map_or(read, |first| ChangeCursor::at(first - 1).min(read))
    }

    fn next_due(&self) -> Option<Instant> {
        let pending = self.patients.values().any(|s| !s.messages.is_empty());
        pending.then(|| {
            self.last_flush
                .map_or_else(Instant::now, |at| at + NDJSON_INTERVAL)
        })
    }

    fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }
}

impl NdjsonSink {
    /// A stream whose flush failed: its lines pending again, before any taken since, and
    /// its state as it was.
    fn put_back(&mut self, append: Append) {
        let stream = self.patients.entry(append.key).or_default();
        stream.at = match append.start {
            Start::Known(at) => Some(at),
            Start::Recorded(_) => None,
        };
        let mut lines = append.lines;
        let offset = lines.len();
        let mut messages = append.messages;
        messages.extend(stream.messages.iter().map(|&(id, end)| (id, end + offset)));
        lines.extend_from_slice(&stream.lines);
        self.pending_bytes += offset;
        stream.lines = lines;
        stream.messages = messages;
    }
}

fn note_failure(flushed: &mut Flushed, error: io::Error) {
    match &mut flushed.failed {
        Some((n, _)) => *n += 1,
        None => flushed.failed = Some((1, error)),
    }
}

enum Start {
    /// Verified earlier in this run.
    Known(At),
    /// Not opened yet in this run: what the store recorded (zero when nothing).
    Recorded(FilePosition),
}

/// One stream's part of a flush.
struct Append {
    key: String,
    name: String,
    start: Start,
    lines: Vec<u8>,
    messages: Vec<(i64, usize)>,
}

impl Append {
    /// Opens the stream, checks it, appends the lines not already there; returns the new
    /// state and the bytes written. Not synced: the caller syncs the batch.
    fn run(&self, folder: &Folder, past_start: bool) -> io::Result<(At, u64)> {
        let mut file = folder.open_append(&self.name)?;
        let size = file.metadata()?.len();
        let mut at = match &self.start {
            Start::Known(at) => {
                let at = at.clone();
                let expected = at.length + at.extra.iter().map(|l| l.len() as u64).sum::<u64>();
                if size == expected {
                    at
                } else {
                    // Changed by someone else since: checked again from what is known.
                    open(&mut file, size, at.through, at.length)?
                }
            }
            Start::Recorded(position) => open(&mut file, size, position.through, position.length)?,
        };
        let mut out: Vec<u8> = Vec::with_capacity(self.lines.len());
        let mut start = 0;
        for &(id, end) in &self.messages {
            let message_lines = &self.lines[start..end];
            start = end;
            if id <= at.through {
                continue;
            }
            for line in message_lines.split_inclusive(|b| *b == b'\n') {
                if let Some(next) = at.extra.front() {
                    if next.as_slice() == line && out.is_empty() {
                        at.length += line.len() as u64;
                        at.extra.pop_front();
                        continue;
                    }
                    // Not what belongs here: what follows the verified part goes.
                    cut(&mut file, at.length, &mut at.extra)?;
                }
                out.extend_from_slice(line);
            }
            at.through = id;
        }
        if past_start && !at.extra.is_empty() {
            tracing::warn!("lines in an NDJSON stream matched no stored record; cut");
            cut(&mut file, at.length, &mut at.extra)?;
        }
        if !out.is_empty() {
            if !at.extra.is_empty() {
                cut(&mut file, at.length, &mut at.extra)?;
            }
            file.write_all(&out)?;
            at.length += out.len() as u64;
        }
        Ok((at, out.len() as u64))
    }
}

/// A stream's state from a recorded position: a stream shorter than that was rebuilt
/// before; a torn last line is cut; complete lines after it are kept for matching.
fn open(file: &mut fs::File, size: u64, through: i64, length: u64) -> io::Result<At> {
    let mut at = At {
        through,
        length: length.min(size),
        extra: VecDeque::new(),
    };
    if size <= at.length {
        return Ok(at);
    }
    let mut tail = Vec::with_capacity(usize::try_from(size - at.length).unwrap_or(0));
    file.seek(io::SeekFrom::Start(at.length))?;
    file.take(size - at.length).read_to_end(&mut tail)?;
    let complete = memchr::memrchr(b'\n', &tail).map_or(0, |i| i + 1);
    if complete < tail.len() {
        tracing::info!("cut a torn last line of an NDJSON stream");
        file.set_len(at.length + complete as u64)?;
    }
    at.extra = tail[..complete]
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    Ok(at)
}

/// Cuts the stream at `length`, dropping the unmatched lines after it.
fn cut(file: &mut fs::File, length: u64, extra: &mut VecDeque<Vec<u8>>) -> io::Result<()> {
    if !extra.is_empty() {
        file.set_len(length)?;
        extra.clear();
    }
    Ok(())
}
