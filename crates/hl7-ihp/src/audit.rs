//! The audit trail (`--audit-log FILE`): one JSON line per security-relevant fact, in the
//! spirit of IHE ATNA's audit message.
//!
//! What is audited is [`AuditEvent`]: the receiver starting and stopping; connections refused
//! (allowlist, PROXY header, per-address limit) and failed TLS authentications; connections
//! opened (with the peer's TLS identity, version and suite) and closed; each message received
//! and answered, by its control id, sender, patient key, outcome and ACK code; TLS reloads,
//! done or refused. Never patient names nor message bodies: no event has a field for them,
//! and none must get one.
//!
//! A line is `{"time":"2026-12-01T17:00:00.123Z","event":"connection_opened",…}`: the time
//! [`Audit::record`] was called (UTC, milliseconds), then the event's fields in the order
//! they are declared.
//!
//! [`Audit::record`] never blocks and never fails: it stamps the event and offers it to a
//! queue of [`QUEUE_CAPACITY`] events. When the queue is full (the disk has been slower than
//! the events for that long) or the writer has stopped, the event is dropped and counted
//! (`n_dropped`, `hl7ihp_audit_events_dropped_total`); ingest never waits for the audit
//! trail. `record` is on the ACK path, so it does not serialise: the writer does.
//!
//! The [`AuditWriter`] takes up to [`BATCH_MAX`] queued events at a time, appends them with
//! one write and syncs the file (`fdatasync`) once per batch, on a blocking thread, never on
//! an async worker. `n_written` (`hl7ihp_audit_events_total`) counts the events written and
//! synced. A write that fails is logged (a line a minute at most, with the number of events
//! lost), its events are counted as dropped, and the file is opened again for the next
//! batch; a line cut short by it (or by a crash) is ended before the next one is appended.
//!
//! The file is created with mode 0600 and only appended to; a regular file that exists with
//! wider permissions is tightened to 0600, with a warning. Rotation: SIGHUP makes the writer
//! open the file again by its path, so `logrotate` with `postrotate kill -HUP <pid>` works
//! (the old file is moved away, the signal creates the new one, the events queued at the
//! signal go to the new file). `copytruncate` is not needed, and would lose the lines
//! written between its copy and its truncation. If the new file cannot be opened, the writer
//! goes on with the old one and tries again at each batch.
//!
//! On shutdown the writer closes the queue, writes and syncs what is in it, and returns.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use tokio::sync::{mpsc, watch};

use crate::shutdown::Shutdown;

/// Events the queue holds between [`Audit::record`] and the writer; one more is dropped.
pub const QUEUE_CAPACITY: usize = 8192;

/// Events written with one write and one sync at most.
pub const BATCH_MAX: usize = 1024;

/// The least time between two log lines about failing writes.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The audit log's mode: the receiver's user alone reads it.
const MODE: u32 = 0o600;

/// One audited fact. Serialised as `{"time":…,"event":"<snake_case name>",…fields}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// The receiver started.
    ReceiverStarted {
        /// hl7-ihp's version.
        version: &'static str,
        /// Each listener, `mllp tcp 0.0.0.0:2575`, `mllp tls …`, `http …`.
        listeners: Vec<String>,
    },
    /// The receiver stopped.
    ReceiverStopped,
    /// TLS authentication of a peer failed.
    NodeAuthenticationFailure {
        /// The device's address.
        peer: SocketAddr,
        /// The load balancer's, when a PROXY header named the device.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<SocketAddr>,
        /// `no certificate`, `unknown CA`, `revoked`, `expired`, `handshake timeout`,
        /// `old TLS version`, `not TLS`, … ([`crate::tls::handshake_failure`]).
        reason: &'static str,
    },
    /// A connection was closed before a byte of it was read.
    ConnectionRefused {
        /// The address refused (the device's, or the socket's peer for a PROXY refusal).
        peer: SocketAddr,
        /// The load balancer's, when a PROXY header named the device.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<SocketAddr>,
        /// `not in the allowlist`, `PROXY header from an untrusted address`,
        /// `invalid PROXY header`, `too many connections from this address`.
        reason: String,
        /// Refusals of this address for this reason since the last one audited, not
        /// audited each (at most one event per address and reason per 10 s, so that a host
        /// that is refused cannot flood the trail or crowd other events out of its queue).
        #[serde(skip_serializing_if = "is_zero")]
        suppressed: u64,
    },
    /// A connection was accepted (after the allowlist, the PROXY header and TLS).
    ConnectionOpened {
        /// The connection's number in this run, which its other events repeat.
        connection: u64,
        /// The device's address.
        peer: SocketAddr,
        /// The load balancer's, when a PROXY header named the device.
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<SocketAddr>,
        /// `tcp` or `tls`.
        transport: &'static str,
        /// The client certificate's subject and SANs.
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// `TLSv1_3`, `TLSv1_2`.
        #[serde(skip_serializing_if = "Option::is_none")]
        tls_version: Option<String>,
        /// The negotiated suite.
        #[serde(skip_serializing_if = "Option::is_none")]
        cipher_suite: Option<String>,
    },
    /// A connection ended.
    ConnectionClosed {
        /// As in its `connection_opened`.
        connection: u64,
        /// The device's address.
        peer: SocketAddr,
        /// The client certificate's identity, as when it opened.
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// Why it ended (`peer closed`, `idle timeout`, `shutdown`, …).
        reason: &'static str,
        /// Frames read on it.
        frames: u64,
    },
    /// A message was received and answered.
    MessageReceived {
        /// The connection it came on.
        connection: u64,
        /// The device's address.
        peer: SocketAddr,
        /// The client certificate's identity.
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// The stored message's id (`hl7-ihp show`, `/api/v1/messages/{id}`).
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<i64>,
        /// MSH-10.
        control_id: String,
        /// MSH-3.
        sending_application: String,
        /// MSH-4.
        sending_facility: String,
        /// The patient's key, never the name.
        #[serde(skip_serializing_if = "Option::is_none")]
        patient: Option<String>,
        /// `accepted`, `error`, `rejected`, `duplicate`.
        outcome: &'static str,
        /// The ACK code sent (`AA`, `CE`, …), none when the sender asked for none.
        #[serde(skip_serializing_if = "Option::is_none")]
        ack_code: Option<String>,
    },
    /// A listener's TLS files were loaded again (new connections use them).
    ConfigurationReloaded {
        /// `mllp` or `http`.
        listener: &'static str,
    },
    /// A reload was refused; the old configuration stays.
    ConfigurationReloadFailed {
        /// `mllp` or `http`.
        listener: &'static str,
        /// Why.
        reason: String,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The handle every part records through; cheap to share.
#[derive(Debug, Default)]
pub struct Audit {
    /// Events written and synced.
    pub n_written: AtomicU64,
    /// Events dropped: the queue was full, the writer had stopped, or their write failed.
    pub n_dropped: AtomicU64,
    /// None when off.
    queue: Option<mpsc::Sender<Stamped>>,
}

/// An event and when it was recorded.
#[derive(Debug)]
struct Stamped {
    time: jiff::Timestamp,
    event: AuditEvent,
}

/// One line of the file, the time first.
#[derive(Serialize)]
struct Line<'a> {
    time: Millis,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// RFC 3339 in UTC with milliseconds, `2026-12-01T17:00:00.123Z`.
struct Millis(jiff::Timestamp);

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:.3}", self.0))
    }
}

impl Audit {
    /// An audit trail that records nothing (no `--audit-log`).
    pub fn off() -> Arc<Audit> {
        Arc::new(Audit::default())
    }

    /// Whether events are kept (callers skip building one when not).
    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues an event; never blocks. A full queue (or a stopped writer) drops it and counts
    /// it in `n_dropped`.
    pub fn record(&self, event: AuditEvent) {
        let Some(queue) = &self.queue else {
            return;
        };
        let stamped = Stamped {
            time: jiff::Timestamp::now(),
            event,
        };
        if queue.try_send(stamped).is_err() {
            self.n_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Opens (creates, mode 0600) `path` for appending and returns the handle and the
    /// writer task to spawn.
    pub fn open(path: &Path) -> io::Result<(Arc<Audit>, AuditWriter)> {
        Audit::open_with_capacity(path, QUEUE_CAPACITY)
    }

    /// [`Audit::open`] with a queue of `capacity` events.
    pub(crate) fn open_with_capacity(
        path: &Path,
        capacity: usize,
    ) -> io::Result<(Arc<Audit>, AuditWriter)> {
        let file = open_file(path)?;
        let (sender, receiver) = mpsc::channel(capacity);
        let audit = Arc::new(Audit {
            n_written: AtomicU64::new(0),
            n_dropped: AtomicU64::new(0),
            queue: Some(sender),
        });
        let sink = Sink {
            path: path.to_path_buf(),
            file: Some(file),
            stale: false,
            lines: Vec::new(),
        };
        let writer = AuditWriter {
            audit: Arc::clone(&audit),
            queue: receiver,
            sink: Arc::new(Mutex::new(sink)),
            trouble: Trouble::default(),
        };
        Ok((audit, writer))
    }
}

/// The task that writes the queued events.
#[derive(Debug)]
pub struct AuditWriter {
    /// For its counters.
    audit: Arc<Audit>,
    queue: mpsc::Receiver<Stamped>,
    /// Used on a blocking thread, one batch at a time; behind a mutex so that a panic there
    /// does not take the file with it.
    sink: Arc<Mutex<Sink>>,
    trouble: Trouble,
}

impl AuditWriter {
    /// Writes events until `stop`, then what is still queued; reopens the file (log
    /// rotation) each time `hangups` changes.
    pub async fn run(mut self, mut hangups: watch::Receiver<u64>, stop: Shutdown) {
        let mut stopped = std::pin::pin!(stop.into_requested());
        let mut batch = Vec::with_capacity(BATCH_MAX);
        let mut signals = true;
        loop {
            // Biased: a stop or a rotation is seen before more events, so the events queued
            // at a SIGHUP go to the new file.
            tokio::select! {
                biased;
                () = &mut stopped => break,
                changed = hangups.changed(), if signals => match changed {
                    Ok(()) => self.reopen().await,
                    Err(_) => signals = false,
                },
                n = self.queue.recv_many(&mut batch, BATCH_MAX) => {
                    if n == 0 {
                        break;
                    }
                    batch = self.write(batch).await;
                }
            }
        }
        // What is queued now is all there will be: later events are dropped and counted.
        self.queue.close();
        loop {
            while batch.len() < BATCH_MAX {
                match self.queue.try_recv() {
                    Ok(stamped) => batch.push(stamped),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            batch = self.write(batch).await;
        }
        self.trouble.finish();
    }

    /// Writes and syncs `batch`, counts it, and hands the emptied vector back.
    async fn write(&mut self, batch: Vec<Stamped>) -> Vec<Stamped> {
        let n = batch.len() as u64;
        let sink = Arc::clone(&self.sink);
        let done = tokio::task::spawn_blocking(move || {
            let mut batch = batch;
            let result = lock(&sink).write(&batch);
            batch.clear();
            (batch, result)
        })
        .await;
        let (batch, result) = match done {
            Ok(done) => done,
            Err(error) => (
                Vec::with_capacity(BATCH_MAX),
                Err(io::Error::other(format!(
                    "the writing thread failed: {error}"
                ))),
            ),
        };
        match result {
            Ok(()) => {
                self.audit.n_written.fetch_add(n, Ordering::Relaxed);
                self.trouble.succeeded();
            }
            Err(error) => {
                self.audit.n_dropped.fetch_add(n, Ordering::Relaxed);
                self.trouble.failed(&error, n);
            }
        }
        batch
    }

    /// Opens the file again by its path (after log rotation).
    async fn reopen(&mut self) {
        let sink = Arc::clone(&self.sink);
        match tokio::task::spawn_blocking(move || lock(&sink).reopen()).await {
            Ok(Ok(())) => tracing::info!("audit log opened again"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot open the audit log again; writing on to the old file");
            }
            Err(error) => tracing::warn!(%error, "cannot open the audit log again"),
        }
    }
}

/// The sink, whatever a panic while it was held left it as (it is always consistent: at worst
/// without a file, which the next batch opens).
fn lock(sink: &Mutex<Sink>) -> std::sync::MutexGuard<'_, Sink> {
    sink.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The file and its path; used on a blocking thread.
#[derive(Debug)]
struct Sink {
    path: PathBuf,
    /// None after a failed write: opened again by the next batch.
    file: Option<File>,
    /// A SIGHUP asked for the file to be opened again and that failed: each batch tries.
    stale: bool,
    /// The batch's lines, kept for the next batch's.
    lines: Vec<u8>,
}

impl Sink {
    /// Appends `batch` with one write and syncs it.
    fn write(&mut self, batch: &[Stamped]) -> io::Result<()> {
        self.lines.clear();
        for stamped in batch {
            let line = Line {
                time: Millis(stamped.time),
                event: &stamped.event,
            };
            // Cannot fail for these types (strings, numbers, addresses); if it ever did,
            // the batch would be counted as dropped like a failed write.
            serde_json::to_writer(&mut self.lines, &line)?;
            self.lines.push(b'\n');
        }
        if self.stale && self.reopen().is_ok() {
            tracing::info!("audit log opened again");
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_file(&self.path)?),
        };
        let written = file.write_all(&self.lines).and_then(|()| file.sync_data());
        if written.is_err() {
            self.file = None;
        }
        written
    }

    /// Opens the file by its path; on failure keeps the old one, and `stale` says so.
    fn reopen(&mut self) -> io::Result<()> {
        match open_file(&self.path) {
            Ok(file) => {
                self.file = Some(file);
                self.stale = false;
                Ok(())
            }
            Err(error) => {
                self.stale = true;
                Err(error)
            }
        }
    }
}

/// Opens `path` for appending, creating it with mode 0600 or tightening a wider mode to it,
/// and ends a line left unfinished.
fn open_file(path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(MODE)
        .open(path)?;
    let metadata = file.metadata()?;
    // Only a regular file: a FIFO or a device (`/dev/stdout`) is not the log's to change.
    if metadata.is_file() {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & !MODE != 0 {
            file.set_permissions(Permissions::from_mode(MODE))?;
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "the audit log was open to others; its mode is now 600"
            );
        }
        let len = metadata.len();
        if len > 0 {
            let mut last = [0u8];
            file.read_exact_at(&mut last, len - 1)?;
            if last != *b"\n" {
                file.write_all(b"\n")?;
            }
        }
    }
    Ok(file)
}

/// Failed writes not yet told, so that a failing disk gives a line a minute, not one a
/// batch.
#[derive(Debug, Default)]
struct Trouble {
    /// When the last line about it was logged.
    last_line: Option<Instant>,
    /// Whether the last line said the writes were failing.
    said_failing: bool,
    /// Failed writes since the last line.
    n_failures: u64,
    /// Events they lost.
    n_lost: u64,
}

impl Trouble {
    fn may_log(&self) -> bool {
        self.last_line
            .is_none_or(|last| last.elapsed() >= WARN_INTERVAL)
    }

    fn failed(&mut self, error: &io::Error, n: u64) {
        self.n_failures += 1;
        self.n_lost += n;
        if self.may_log() {
            tracing::warn!(
                %error,
                n_failures = self.n_failures,
                n_lost = self.n_lost,
                "cannot write the audit log; its events are dropped"
            );
            self.told(true);
        }
    }

    fn succeeded(&mut self) {
        if (self.said_failing || self.n_failures > 0) && self.may_log() {
            tracing::info!(
                n_failures = self.n_failures,
                n_lost = self.n_lost,
                "the audit log is written again"
            );
            self.told(false);
        }
    }

    /// At the end, what was not yet told.
    fn finish(&mut self) {
        if self.n_failures > 0 {
            tracing::warn!(
                n_failures = self.n_failures,
                n_lost = self.n_lost,
                "the audit log lost events since the last warning"
            );
        }
    }

    fn told(&mut self, failing: bool) {
        self.last_line = Some(Instant::now());
        self.said_failing = failing;
        self.n_failures = 0;
        self.n_lost = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::task::JoinHandle;

    use super::*;
    use crate::shutdown::Trigger;

    /// Generous: the machine may be busy with other builds.
    const DEADLINE: Duration = Duration::from_secs(30);

    fn opened(connection: u64) -> AuditEvent {
        AuditEvent::ConnectionOpened {
            connection,
            peer: "192.0.2.7:40001".parse().unwrap(),
            via: None,
            transport: "tls",
            identity: Some("CN=monitor-7".into()),
            tls_version: Some("TLSv1_3".into()),
            cipher_suite: None,
        }
    }

    struct Running {
        audit: Arc<Audit>,
        hangup: watch::Sender<u64>,
        stop: Trigger,
        task: JoinHandle<()>,
    }

    fn start(path: &Path) -> Running {
        let (audit, writer) = Audit::open(path).unwrap();
        let (hangup, hangups) = watch::channel(0);
        let (stop, shutdown) = Shutdown::new();
        let task = tokio::spawn(writer.run(hangups, shutdown));
        Running {
            audit,
            hangup,
            stop,
            task,
        }
    }

    impl Running {
        async fn stop(self) -> Arc<Audit> {
            self.stop.trigger();
            tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("the writer stops")
                .unwrap();
            drop(self.hangup);
            self.audit
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        match std::fs::read_to_string(path) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits until `what` holds, polling; panics at the deadline.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_are_json_lines_with_the_time_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let running = start(&path);
        assert!(running.audit.is_on());
        running.audit.record(AuditEvent::ReceiverStarted {
            version: "1.2.3",
            listeners: vec!["mllp tcp 127.0.0.1:2575".into()],
        });
        running.audit.record(opened(7));
        running.audit.record(AuditEvent::ReceiverStopped);
        until("three lines", || lines(&path).len() == 3).await;
        let audit = running.stop().await;
        assert_eq!(audit.n_written.load(Ordering::Relaxed), 3);
        assert_eq!(audit.n_dropped.load(Ordering::Relaxed), 0);

        // Always three digits, zeros too.
        let whole = jiff::Timestamp::from_second(1_796_144_400).unwrap();
        assert_eq!(
            serde_json::to_string(&Millis(whole)).unwrap(),
            r#""2026-12-01T17:00:00.000Z""#
        );
        let lines = lines(&path);
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let time = value["time"].as_str().unwrap();
            // 2026-12-01T17:00:00.123Z: milliseconds, UTC.
            assert_eq!(time.len(), 24, "{time}");
            assert_eq!(&time[19..20], ".", "{time}");
            assert!(time.ends_with('Z'), "{time}");
            let when: jiff::Timestamp = time.parse().unwrap();
            let age = jiff::Timestamp::now().duration_since(when);
            assert!(age.unsigned_abs() < DEADLINE * 2, "{time}");
            assert!(line.starts_with(r#"{"time":""#), "{line}");
            assert_eq!(&line[33..44], r#"","event":""#, "{line}");
        }
        assert!(lines[0].contains(
            r#""event":"receiver_started","version":"1.2.3","listeners":["mllp tcp 127.0.0.1:2575"]}"#
        ));
        // The fields in their declared order, the absent ones left out.
        assert!(
            lines[1].ends_with(
                r#","event":"connection_opened","connection":7,"peer":"192.0.2.7:40001","transport":"tls","identity":"CN=monitor-7","tls_version":"TLSv1_3"}"#
            ),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with(r#","event":"receiver_stopped"}"#));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_is_private_even_if_it_was_not() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.log");
        let (_audit, _writer) = Audit::open(&new).unwrap();
        assert_eq!(mode(&new), 0o600);

        let old = dir.path().join("old.log");
        std::fs::write(&old, "{\"kept\":true}\n").unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        let running = start(&old);
        assert_eq!(mode(&old), 0o600);
        running.audit.record(AuditEvent::ReceiverStopped);
        until("the event appended", || lines(&old).len() == 2).await;
        running.stop().await;
        assert_eq!(lines(&old)[0], "{\"kept\":true}", "appended, not truncated");
        assert_eq!(mode(&old), 0o600);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_line_left_unfinished_is_ended_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "{\"cut\":").unwrap();
        let running = start(&path);
        running.audit.record(AuditEvent::ReceiverStopped);
        until("the event appended", || lines(&path).len() == 2).await;
        running.stop().await;
        let lines = lines(&path);
        assert_eq!(lines[0], "{\"cut\":");
        serde_json::from_str::<serde_json::Value>(&lines[1]).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (audit, writer) = Audit::open_with_capacity(&path, 4).unwrap();
        // The writer is not running: the queue fills and stays full.
        for connection in 0..10 {
            audit.record(opened(connection));
        }
        assert_eq!(audit.n_dropped.load(Ordering::Relaxed), 6);
        let (_hangup, hangups) = watch::channel(0);
        let (stop, shutdown) = Shutdown::new();
        stop.trigger();
        tokio::time::timeout(DEADLINE, writer.run(hangups, shutdown))
            .await
            .expect("the writer stops");
        let lines = lines(&path);
        assert_eq!(lines.len(), 4);
        assert!(
            lines[3].contains(r#""connection":3,"#),
            "the first four kept"
        );
        assert_eq!(audit.n_written.load(Ordering::Relaxed), 4);
        assert_eq!(audit.n_dropped.load(Ordering::Relaxed), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hangup_reopens_the_file_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let running = start(&path);
        running.audit.record(opened(1));
        until("the first event", || lines(&path).len() == 1).await;
        std::fs::rename(&path, &rotated).unwrap();
        running.hangup.send_modify(|n| *n += 1);
        until("a new file", || path.exists()).await;
        assert_eq!(mode(&path), 0o600);
        running.audit.record(opened(2));
        until("the second event", || lines(&path).len() == 1).await;
        let audit = running.stop().await;
        assert_eq!(audit.n_written.load(Ordering::Relaxed), 2);
        let old = lines(&rotated);
        assert_eq!(old.len(), 1);
        assert!(old[0].contains(r#""connection":1,"#));
        let new = lines(&path);
        assert_eq!(new.len(), 1);
        assert!(new[0].contains(r#""connection":2,"#));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_writes_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (audit, writer) = Audit::open(&path).unwrap();
        let n = BATCH_MAX as u64 * 2 + 10;
        for connection in 0..n {
            audit.record(opened(connection));
        }
        audit.record(AuditEvent::ReceiverStopped);
        let (_hangup, hangups) = watch::channel(0);
        let (stop, shutdown) = Shutdown::new();
        // As the server does: the last event, then the stop, before the writer ran at all.
        stop.trigger();
        tokio::time::timeout(DEADLINE, writer.run(hangups, shutdown))
            .await
            .expect("the writer stops");
        let lines = lines(&path);
        assert_eq!(lines.len() as u64, n + 1);
        assert!(lines[lines.len() - 1].ends_with(r#""event":"receiver_stopped"}"#));
        assert_eq!(audit.n_written.load(Ordering::Relaxed), n + 1);
        // Once stopped, an event is dropped and counted, not queued for nobody.
        audit.record(AuditEvent::ReceiverStopped);
        assert_eq!(audit.n_dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_while_writing_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let running = start(&path);
        for connection in 0..3000 {
            running.audit.record(opened(connection));
        }
        running.audit.record(AuditEvent::ReceiverStopped);
        let audit = running.stop().await;
        let lines = lines(&path);
        assert_eq!(lines.len(), 3001);
        assert!(lines[3000].ends_with(r#""event":"receiver_stopped"}"#));
        assert_eq!(audit.n_written.load(Ordering::Relaxed), 3001);
        assert_eq!(audit.n_dropped.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_counts_its_events_as_dropped() {
        // Every write to /dev/full fails with ENOSPC; it is not a regular file, so its mode
        // is left alone.
        let path = Path::new("/dev/full");
        let before = mode(path);
        let running = start(path);
        for connection in 0..5 {
            running.audit.record(opened(connection));
        }
        let audit = Arc::clone(&running.audit);
        until("five dropped", || {
            audit.n_dropped.load(Ordering::Relaxed) == 5
        })
        .await;
        // The writer keeps going: the next events are tried again (and fail again).
        running.audit.record(AuditEvent::ReceiverStopped);
        let audit = running.stop().await;
        assert_eq!(audit.n_dropped.load(Ordering::Relaxed), 6);
        assert_eq!(audit.n_written.load(Ordering::Relaxed), 0);
        assert_eq!(mode(path), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn off_records_nothing() {
        let audit = Audit::off();
        assert!(!audit.is_on());
        audit.record(AuditEvent::ReceiverStopped);
        assert_eq!(audit.n_written.load(Ordering::Relaxed), 0);
        assert_eq!(audit.n_dropped.load(Ordering::Relaxed), 0);
    }
}
