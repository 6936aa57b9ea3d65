//! The live view: every patient's latest values and status, the devices, messages per
//! minute and the event log, in memory, derived from the store's change feed, for the API's
//! patients, devices, stats and event stream (docs/api.md).
//!
//! - Derived, never on the ACK path: [`run`] follows [`crate::events`]' commit notifications
//!   (which carry no data and never wait) and reads what changed through
//!   [`StoreRead::feed`], in batches of [`FEED_BATCH`], at most [`MAX_READS_PER_WAKE`] reads
//!   before it looks at the clock and the shutdown again. It also reads once a
//!   [`POLL`] without being told, so what another writer of the same store adds is seen too.
//! - At start it fills itself from the store: the patients silent the shortest first (at
//!   most [`view::MAX_PATIENTS`]), each with their last [`SEED_MESSAGES_PER_PATIENT`]
//!   messages ([`StoreRead::patient_feed`]), then the unassigned devices' tiles the same
//!   way ([`StoreRead::device_feeds`]), and the per-minute counts from the messages of
//!   the last 24 h (at most [`MAX_SEED_MESSAGES`]).
//! - The task owns the state ([`view::View`]); readers get immutable snapshots (each
//!   patient's JSON rendered once per change) behind a lock held only to swap pointers, so
//!   an answer never waits for the task, nor the task for an answer. A status is computed
//!   from the time of each answer; a [`TICK`] finds the changes and announces them.
//! - Events ([`log`]) are published without waiting; a slow client is dropped.
//!
//! No log line here carries patient data: counts and store errors only.

pub mod alarms;
pub mod log;
pub mod minutes;
pub mod shapes;
pub mod view;

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::receive::LiveConfig;
use crate::events::Subscription;
use crate::export::ExportCounters;
use crate::store::{ChangeCursor, FeedMessage, MessageFilter, StoreError, StoreRead, utc_text};

use self::log::{EventLog, Start};
use self::minutes::Minutes;
use self::shapes::{DeviceView, MinuteCounts};
use self::view::{Changes, DeviceSnapshot, PatientSnapshot, View};

/// Feed messages read at once.
pub const FEED_BATCH: usize = 1_000;
/// Reads of the feed in one go, before the clock and the shutdown are looked at again.
pub const MAX_READS_PER_WAKE: usize = 16;
/// How often statuses are checked.
pub const TICK: Duration = Duration::from_secs(1);
/// How long the feed goes unread without a notification before it is read anyway, for
/// commits no notification told of (another writer of the same store). Rare: each read
/// runs on the blocking pool, and a pool thread kept busy forever never exits, and so
/// never gives the allocator the moment at which it returns memory freed after a burst.
pub const POLL: Duration = Duration::from_secs(30);
/// A patient's newest messages read at start: enough to fill the sparklines.
pub const SEED_MESSAGES_PER_PATIENT: usize = view::SPARKLINE_POINTS;
/// Messages of the last 24 h read at start for the per-minute counts; older minutes past
/// it start empty.
pub const MAX_SEED_MESSAGES: usize = 100_000;
/// Messages per read of the per-minute seed.
const SEED_PAGE: usize = 10_000;
/// How long after a store failure the task tries again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest `q` of the patients list.
pub const MAX_QUERY_CHARS: usize = 200;

/// How the patients list is sorted (`sort`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatientSort {
    /// By location, then name (the default).
    #[default]
    Location,
    /// By name.
    Name,
    /// Most severe first, then by location.
    Severity,
    /// Longest silent first, then by location.
    Staleness,
}

impl FromStr for PatientSort {
    type Err = String;

    fn from_str(text: &str) -> Result<PatientSort, String> {
        match text {
            "location" => Ok(PatientSort::Location),
            "name" => Ok(PatientSort::Name),
            "severity" => Ok(PatientSort::Severity),
            "staleness" => Ok(PatientSort::Staleness),
            _ => Err("expected `location`, `name`, `severity` or `staleness`".into()),
        }
    }
}

#[derive(Default)]
struct Published {
    patients: HashMap<String, Arc<PatientSnapshot>>,
    devices: HashMap<String, DeviceSnapshot>,
}

/// The shared side of the live view: what the HTTP handlers read.
pub struct Live {
    config: LiveConfig,
    log: EventLog,
    published: RwLock<Published>,
    minutes: Mutex<Minutes>,
    export: Option<Arc<ExportCounters>>,
    closed: watch::Sender<bool>,
    /// True once [`run`] has filled the view from the store (or stopped).
    seeded: watch::Sender<bool>,
    /// [`POLL`], shorter in tests.
    poll: Duration,
}

impl Live {
    /// An empty view with these thresholds; `export` is the exporter's progress, for the
    /// stats' export lag. [`run`] fills it.
    pub fn new(config: LiveConfig, export: Option<Arc<ExportCounters>>) -> Arc<Live> {
        Live::with_poll(config, export, POLL)
    }

    fn with_poll(
        config: LiveConfig,
        export: Option<Arc<ExportCounters>>,
        poll: Duration,
    ) -> Arc<Live> {
        Arc::new(Live {
            config,
            log: EventLog::new(crate::ids::run_id()),
            published: RwLock::default(),
            minutes: Mutex::default(),
            export,
            closed: watch::Sender::new(false),
            seeded: watch::Sender::new(false),
            poll,
        })
    }

    /// A view whose event log keeps `window` events and lets a client fall `capacity`
    /// behind, with `publish` to add events by hand (tests of the event stream).
    #[cfg(test)]
    pub(crate) fn for_tests(window: usize, capacity: usize) -> Arc<Live> {
        let config = LiveConfig {
            stale_after: Duration::from_secs(30),
            offline_after: Duration::from_secs(300),
        };
        let live = Live::with_poll(config, None, POLL);
        let live = Arc::new(Live {
            log: EventLog::with_window("TEST".into(), window, capacity),
            ..Arc::into_inner(live).expect("not shared yet")
        });
        live.seeded.send_replace(true);
        live
    }

    /// Publishes one event (tests of the event stream).
    #[cfg(test)]
    pub(crate) fn publish_for_tests(&self, kind: log::EventKind, data: &str) {
        self.log.publish(kind, data.to_owned());
    }

    /// Says that the task has stopped (tests of the event stream).
    #[cfg(test)]
    pub(crate) fn close_for_tests(&self) {
        self.close();
    }

    /// The thresholds.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// The patients matching `q` (case-insensitive, id, name or location), sorted, as the
    /// JSON of `GET /api/v1/patients` at `now_ms`.
    pub fn patient_list(&self, q: Option<&str>, sort: PatientSort, now_ms: i64) -> String {
        let needle = q.map(str::to_lowercase).filter(|q| !q.is_empty());
        let mut patients: Vec<Arc<PatientSnapshot>> = {
            let published = self.read();
            published
                .patients
                .values()
                .filter(|p| needle.as_deref().is_none_or(|n| p.matches(n)))
                .cloned()
                .collect()
        };
        sort_patients(&mut patients, sort);
        let capacity = patients.iter().map(|p| p.json_len() + 1).sum::<usize>() + 160;
        let mut out = String::with_capacity(capacity);
        out.push_str(r#"{"generated_at":"#);
        push_json_string(&mut out, &millis_text(now_ms));
        out.push_str(&format!(
            r#","stale_after_seconds":{:?},"offline_after_seconds":{:?},"patients":["#,
            self.config.stale_after.as_secs_f64(),
            self.config.offline_after.as_secs_f64()
        ));
        for (n, patient) in patients.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            patient.write_json(&mut out, now_ms, &self.config);
        }
        out.push_str("]}");
        out
    }

    /// One patient's JSON at `now_ms`; `None` for a key the view does not hold.
    pub fn patient(&self, key: &str, now_ms: i64) -> Option<String> {
        let patient = self.read().patients.get(key).cloned()?;
        Some(patient.json(now_ms, &self.config))
    }

    /// Every device at `now_ms`, by id.
    pub fn devices(&self, now_ms: i64) -> Vec<DeviceView> {
        let mut devices: Vec<DeviceView> = self
            .read()
            .devices
            .values()
            .map(|d| d.view(now_ms, &self.config))
            .collect();
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        devices
    }

    /// The minutes of the last 24 h up to `now_ms` that saw messages, oldest first.
    pub fn minutes(&self, now_ms: i64) -> Vec<MinuteCounts> {
        self.lock_minutes().recent(now_ms)
    }

    /// The exporter's progress, when there is an exporter.
    pub fn export_counters(&self) -> Option<&ExportCounters> {
        self.export.as_deref()
    }

    /// Where an event-stream client with `last_event_id` starts ([`EventLog::start`]).
    pub fn start_events(&self, last_event_id: Option<&str>) -> Start {
        self.log.start(last_event_id)
    }

    /// The SSE id of the event with sequence `seq`.
    pub fn event_id(&self, seq: u64) -> String {
        self.log.id(seq)
    }

    /// Completes once the live task has stopped (at shutdown): event streams end then.
    pub async fn closed(&self) {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Completes once the view has been filled from the store (or the task has stopped).
    /// An event stream starts only then: a message stored while the view was being filled
    /// is part of the filled view and announced to no one, so a client that had connected
    /// before it would never hear of it.
    pub async fn seeded(&self) {
        let mut seeded = self.seeded.subscribe();
        let _ = seeded.wait_for(|seeded| *seeded).await;
    }

    /// Says that the task has stopped.
    fn close(&self) {
        self.seeded.send_replace(true);
        self.closed.send_replace(true);
    }

    /// Hands a batch's snapshots to the readers, then its events to the clients, so a
    /// client that reacts to an event reads the state after it.
    fn publish(&self, changes: Changes) {
        if !changes.patients.is_empty()
            || !changes.devices.is_empty()
            || !changes.removed_patients.is_empty()
            || !changes.removed_devices.is_empty()
        {
            let mut published = self.write();
            for key in &changes.removed_patients {
                published.patients.remove(key);
            }
            for id in &changes.removed_devices {
                published.devices.remove(id);
            }
            for patient in changes.patients {
                published.patients.insert(patient.key.clone(), patient);
            }
            for device in changes.devices {
                published.devices.insert(device.id.clone(), device);
            }
        }
        for (kind, data) in changes.events {
            self.log.publish(kind, data);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Published> {
        // Changes are whole inserts and removals: a panic elsewhere leaves the maps whole.
        self.published.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Published> {
        self.published.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_minutes(&self) -> MutexGuard<'_, Minutes> {
        self.minutes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn sort_patients(patients: &mut [Arc<PatientSnapshot>], sort: PatientSort) {
    let by_location = |a: &PatientSnapshot, b: &PatientSnapshot| {
        // Patients without a location after those with one.
        (a.location.is_none(), &a.location, &a.name, &a.key).cmp(&(
            b.location.is_none(),
            &b.location,
            &b.name,
            &b.key,
        ))
    };
    match sort {
        PatientSort::Location => patients.sort_by(|a, b| by_location(a, b)),
        PatientSort::Name => patients.sort_by(|a, b| (&a.name, &a.key).cmp(&(&b.name, &b.key))),
        PatientSort::Severity => {
            patients.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| by_location(a, b)))
        }
        // `None` (never a message) sorts first: silent longest of all.
        PatientSort::Staleness => {
            patients.sort_by(|a, b| a.last_ms.cmp(&b.last_ms).then_with(|| by_location(a, b)))
        }
    }
}

fn push_json_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
}

/// A time in ms since the epoch as the API writes it.
pub fn millis_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(utc_text)
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Keeps `live` current from `store` until `shutdown` completes, then says it has closed
/// (ending the event streams). Reads when `subscription` says something was committed, and
/// once a [`TICK`] anyway; store errors are logged and retried after [`RETRY_DELAY`].
pub async fn run(
    live: Arc<Live>,
    store: Arc<dyn StoreRead>,
    mut subscription: Subscription,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut view = View::new(live.config);
    let seeded = loop {
        let started = Instant::now();
        tokio::select! {
            seeded = seed(&live, &*store, &mut view) => match seeded {
                Ok(seeded) => {
                    let (n_patients, n_devices) = view.len();
                    tracing::info!(
                        n_patients,
                        n_devices,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "live view filled from the store"
                    );
                    break Some(seeded);
                }
                Err(error) => {
                    tracing::warn!(%error, "live view not filled from the store; will retry");
                    view = View::new(live.config);
                }
            },
            () = &mut shutdown => break None,
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_DELAY) => {}
            () = &mut shutdown => break None,
        }
    };
    live.seeded.send_replace(true);
    if let Some(Seeded {
        cursor,
        counted_up_to,
    }) = seeded
    {
        let mut follower = Follower {
            live: &live,
            store: &*store,
            view,
            cursor,
            counted_up_to,
        };
        follower.follow(&mut subscription, &mut shutdown).await;
    }
    live.close();
}

struct Seeded {
    /// Where following starts.
    cursor: ChangeCursor,
    /// Messages with ids up to this one are in the per-minute counts already.
    counted_up_to: i64,
}

/// Fills the view from the store (see the module documentation).
async fn seed(live: &Live, store: &dyn StoreRead, view: &mut View) -> Result<Seeded, StoreError> {
    // The feed's head first: whatever commits during the seed is read by following, and
    // applied once (a patient or device skips a message it has seen).
    let cursor = store.feed_head().await?;
    let mut summaries = store.patients().await?;
    summaries.sort_by_key(|s| std::cmp::Reverse(s.last_received_at));
    summaries.truncate(view::MAX_PATIENTS);
    let mut changes = Changes::default();
    for summary in &summaries {
        let Some((data, mut messages)) = store
            .patient_feed(&summary.key, SEED_MESSAGES_PER_PATIENT)
            .await?
        else {
            continue;
        };
        view.add_patient(&data, &mut changes);
        // Only what was committed before the head read above: a message committed since is
        // applied by following, which announces it (applied here, silently, it would be
        // seen and never announced: a client that connected before it would miss it).
        messages.retain(|m| m.id <= cursor.position());
        messages.reverse();
        for message in &mut messages {
            message.patient.get_or_insert_with(|| data.clone());
        }
        let applied = view.apply(&messages, now_ms(), false);
        merge(&mut changes, applied);
        if changes.patients.len() >= 256 {
            live.publish(std::mem::take(&mut changes));
        }
    }
    // The unassigned devices' tiles, as the patients': their messages carry no patient,
    // so applying them makes the `device:<id>` entries (the view's bound counts them too).
    let feeds = store
        .device_feeds(view::MAX_PATIENTS, SEED_MESSAGES_PER_PATIENT)
        .await?;
    for mut messages in feeds {
        messages.retain(|m| m.id <= cursor.position());
        messages.reverse();
        let applied = view.apply(&messages, now_ms(), false);
        merge(&mut changes, applied);
        if changes.patients.len() >= 256 {
            live.publish(std::mem::take(&mut changes));
        }
    }
    live.publish(changes);

    let now = now_ms();
    let mut counted_up_to = 0;
    let mut filter = MessageFilter {
        since_ms: Some(now - minutes::MINUTES as i64 * 60_000),
        limit: Some(SEED_PAGE),
        ..MessageFilter::default()
    };
    let mut n_counted = 0;
    let mut minutes = Minutes::default();
    while n_counted < MAX_SEED_MESSAGES {
        let page = store.messages(filter.clone()).await?;
        let Some(last) = page.last() else { break };
        filter.before_id = Some(last.id);
        for message in &page {
            counted_up_to = counted_up_to.max(message.id);
            minutes.record(
                message.received_at.as_millisecond(),
                message.outcome,
                message.message_type.as_deref(),
            );
        }
        n_counted += page.len();
        if page.len() < SEED_PAGE {
            break;
        }
    }
    *live.lock_minutes() = minutes;
    Ok(Seeded {
        cursor,
        counted_up_to,
    })
}

fn merge(into: &mut Changes, from: Changes) {
    into.events.extend(from.events);
    into.patients.extend(from.patients);
    into.removed_patients.extend(from.removed_patients);
    into.devices.extend(from.devices);
    into.removed_devices.extend(from.removed_devices);
}

struct Follower<'a> {
    live: &'a Live,
    store: &'a dyn StoreRead,
    view: View,
    cursor: ChangeCursor,
    counted_up_to: i64,
}

enum Read {
    CaughtUp,
    More,
    Failed,
}

impl Follower<'_> {
    async fn follow(
        &mut self,
        subscription: &mut Subscription,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) {
        let mut next_tick = Instant::now() + TICK;
        let mut next_poll = Instant::now() + self.live.poll;
        let mut read = Read::CaughtUp;
        loop {
            let mut reading = true;
            match read {
                Read::More => {}
                Read::CaughtUp => tokio::select! {
                    () = subscription.changed() => {}
                    () = tokio::time::sleep_until(next_tick.min(next_poll)) => {
                        reading = Instant::now() >= next_poll;
                    }
                    () = shutdown.as_mut() => return,
                },
                Read::Failed => tokio::select! {
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                    () = shutdown.as_mut() => return,
                },
            }
            if reading {
                read = self.read().await;
                next_poll = Instant::now() + self.live.poll;
            }
            if Instant::now() >= next_tick {
                let events = self.view.tick(now_ms());
                self.live.publish(Changes {
                    events,
                    ..Changes::default()
                });
                next_tick = Instant::now() + TICK;
            }
        }
    }

    /// Reads and applies the feed until caught up, or for [`MAX_READS_PER_WAKE`] reads.
    async fn read(&mut self) -> Read {
        for _ in 0..MAX_READS_PER_WAKE {
            let feed = match self.store.feed(self.cursor, FEED_BATCH).await {
                Ok(feed) => feed,
                Err(error) => {
                    tracing::warn!(%error, "live view not updated from the store; will retry");
                    return Read::Failed;
                }
            };
            let caught_up = feed.messages.len() < FEED_BATCH || feed.next <= self.cursor;
            self.cursor = feed.next;
            self.apply(&feed.messages);
            if caught_up {
                return Read::CaughtUp;
            }
        }
        Read::More
    }

    fn apply(&mut self, messages: &[FeedMessage]) {
        if messages.is_empty() {
            return;
        }
        {
            let mut minutes = self.live.lock_minutes();
            for message in messages.iter().filter(|m| m.id > self.counted_up_to) {
                minutes.record(
                    message.received_at.as_millisecond(),
                    message.outcome,
                    message.message_type.as_deref(),
                );
            }
        }
        let changes = self.view.apply(messages, now_ms(), true);
        self.live.publish(changes);
    }
}

#[cfg(test)]
mod tests;
