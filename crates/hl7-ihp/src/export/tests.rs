//! The exporter's tests, against an in-memory store: pacing, coalescing, the watermark,
//! failures and shutdown.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::documents::patient::tests::{glucose, prototype_patient};
use crate::events::Events;
use crate::store::{Changes, ObservationRow, PatientRecords, StoreFuture, StoreRead};
use crate::store::{
    MessageFilter, MessageSummary, NewMessage, ObservationData, PatientData, PatientSummary, Stored,
};

// ---- the exporter, against an in-memory store ----

struct MemMessage {
    id: i64,
    patient: PatientData,
    observations: Vec<ObservationData>,
}

#[derive(Default)]
struct MemInner {
    messages: Vec<MemMessage>,
    watermark: i64,
    n_watermark_writes: u64,
}

/// Just enough of a store for the exporter: messages with a patient and observations,
/// and the watermark.
#[derive(Clone, Default)]
struct MemStore {
    inner: Arc<Mutex<MemInner>>,
}

impl MemStore {
    fn add(&self, patient: PatientData, observations: Vec<ObservationData>) -> i64 {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.messages.len() as i64 + 1;
        inner.messages.push(MemMessage {
            id,
            patient,
            observations,
        });
        id
    }

    fn watermark(&self) -> i64 {
        self.inner.lock().unwrap().watermark
    }
}

impl StoreRead for MemStore {
    fn patients(&self) -> StoreFuture<'_, Vec<PatientSummary>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn patient_records<'a>(
        &'a self,
        key: &'a str,
        limit: Option<usize>,
    ) -> StoreFuture<'a, Option<PatientRecords>> {
        let inner = self.inner.lock().unwrap();
        let mut patient: Option<PatientData> = None;
        for message in inner.messages.iter().filter(|m| m.patient.key == key) {
            if patient.is_none() || message.patient.is_update {
                patient = Some(message.patient.clone());
            }
        }
        let Some(patient) = patient else {
            return Box::pin(async { Ok(None) });
        };
        let received_at: jiff::Timestamp = "2025-08-04T12:01:00Z".parse().unwrap();
        let records = inner
            .messages
            .iter()
            .rev()
            .filter(|m| m.patient.key == key)
            .flat_map(|m| {
                m.observations.iter().map(move |o| ObservationRow {
                    observation: o.clone(),
                    message_id: m.id,
                    control_id: format!("MSG-{}", m.id),
                    received_at,
                    device: "GHH LAB".into(),
                })
            })
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        Box::pin(async move { Ok(Some(PatientRecords { patient, records })) })
    }

    fn messages(&self, _: MessageFilter) -> StoreFuture<'_, Vec<MessageSummary>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn changes_since(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Changes> {
        let inner = self.inner.lock().unwrap();
        let mut next = after;
        let mut patients = Vec::new();
        for message in inner
            .messages
            .iter()
            .filter(|m| m.id > after.position())
            .take(limit)
        {
            patients.push(message.patient.key.clone());
            next = ChangeCursor::at(message.id);
        }
        Box::pin(async move { Ok(Changes { patients, next }) })
    }

    fn export_watermark<'a>(&'a self, exporter: &'a str) -> StoreFuture<'a, ChangeCursor> {
        assert_eq!(exporter, EXPORTER_NAME);
        let watermark = self.inner.lock().unwrap().watermark;
        Box::pin(async move { Ok(ChangeCursor::at(watermark)) })
    }

    fn feed(&self, _: ChangeCursor, _: usize) -> StoreFuture<'_, crate::store::Feed> {
        unreachable!("the exporter does not read the feed")
    }

    fn feed_head(&self) -> StoreFuture<'_, ChangeCursor> {
        unreachable!("the exporter does not read the feed")
    }

    fn patient_feed<'a>(
        &'a self,
        _: &'a str,
        _: usize,
    ) -> StoreFuture<'a, Option<(PatientData, Vec<crate::store::FeedMessage>)>> {
        unreachable!("the exporter does not read the feed")
    }

    fn observations<'a>(
        &'a self,
        _: &'a str,
        _: crate::store::ObservationQuery,
    ) -> StoreFuture<'a, Option<Vec<ObservationRow>>> {
        unreachable!("the exporter reads records with patient_records")
    }

    fn trends<'a>(
        &'a self,
        _: &'a str,
        _: crate::store::TrendQuery,
    ) -> StoreFuture<'a, Option<Vec<crate::store::TrendSeries>>> {
        unreachable!("the exporter does not read trends")
    }

    fn message(&self, _: i64) -> StoreFuture<'_, Option<crate::store::MessageDetail>> {
        unreachable!("the exporter does not read messages")
    }
}

impl Store for MemStore {
    fn stats(&self) -> crate::store::StoreStats {
        crate::store::StoreStats::default()
    }

    fn health(&self) -> crate::store::Health {
        crate::store::Health::Ok
    }

    fn commit(&self, _: Vec<NewMessage>) -> StoreFuture<'_, Vec<Stored>> {
        Box::pin(async { Err(StoreError::Database("not in the test double".into())) })
    }

    fn set_export_watermark<'a>(
        &'a self,
        exporter: &'a str,
        cursor: ChangeCursor,
    ) -> StoreFuture<'a, ()> {
        assert_eq!(exporter, EXPORTER_NAME);
        let mut inner = self.inner.lock().unwrap();
        inner.watermark = cursor.position();
        inner.n_watermark_writes += 1;
        Box::pin(async { Ok(()) })
    }
}

fn patient(key: &str) -> PatientData {
    PatientData {
        key: key.into(),
        id: key.into(),
        ..prototype_patient()
    }
}

/// Polls `condition` every few milliseconds; fails after 30 s.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The receiver's side of a running exporter: it announces commits and reads counters.
#[derive(Clone)]
struct Handle {
    events: Events,
    counters: Arc<ExportCounters>,
}

impl Handle {
    fn changed(&self) {
        self.events.committed();
    }

    fn stats(&self) -> ExportStats {
        self.counters.stats()
    }
}

struct Running {
    handle: Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ExportError>>,
}

impl Running {
    async fn stop(self) -> Result<(), ExportError> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

fn start(store: &MemStore, dir: &Path, options: ExportOptions) -> Running {
    let handle = Handle {
        events: Events::new(),
        counters: Arc::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run(
        Arc::new(store.clone()),
        dir.to_path_buf(),
        options,
        handle.events.subscribe(),
        Arc::clone(&handle.counters),
        async {
            let _ = stopped.await;
        },
    ));
    Running { handle, stop, task }
}

fn fast() -> ExportOptions {
    ExportOptions {
        min_interval: Duration::from_millis(1),
        ..ExportOptions::default()
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn values(document: &serde_json::Value) -> Vec<String> {
    document["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ObservationValue"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_change_and_a_wake_up_write_a_private_file() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("patients");
    let store = MemStore::default();
    let running = start(&store, &dir, fast());
    wait_for("the first round", || running.handle.stats().n_rounds >= 1).await;

    let last = store.add(prototype_patient(), vec![glucose(0, "182")]);
    running.handle.changed();
    wait_for("the watermark", || store.watermark() == last).await;

    let path = dir.join("patient_555-44-4444.json");
    let document = read_json(&path);
    assert_eq!(document["PatientInfo"]["PatientName"], "EVE EVERYWOMAN");
    assert_eq!(values(&document), ["182"]);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);

    // A later message goes to the front, ADT updates PatientInfo.
    let mut update = prototype_patient();
    update.name = "EVE NEWNAME".into();
    update.is_update = true;
    store.add(update, vec![]);
    let last = store.add(
        prototype_patient(),
        vec![glucose(0, "180"), glucose(1, "7")],
    );
    running.handle.changed();
    wait_for("the watermark", || store.watermark() == last).await;
    let document = read_json(&path);
    assert_eq!(document["PatientInfo"]["PatientName"], "EVE NEWNAME");
    assert_eq!(values(&document), ["180", "7", "182"]);

    running.stop().await.unwrap();
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["patient_555-44-4444.json"],
        "no temporary file left"
    );
}

#[tokio::test]
async fn files_hold_the_newest_max_records() {
    let temp = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    for m in 1..=5 {
        let observations = (0..3).map(|i| glucose(i, &format!("{m}.{i}"))).collect();
        store.add(prototype_patient(), observations);
    }
    let options = ExportOptions {
        max_records: 4,
        ..fast()
    };
    run_once(&store, temp.path(), options).await;
    let document = read_json(&temp.path().join("patient_555-44-4444.json"));
    assert_eq!(values(&document), ["5.0", "5.1", "5.2", "4.0"]);

    // 0 is no limit.
    let options = ExportOptions {
        max_records: 0,
        ..fast()
    };
    store.inner.lock().unwrap().watermark = 0;
    run_once(&store, temp.path(), options).await;
    let document = read_json(&temp.path().join("patient_555-44-4444.json"));
    assert_eq!(values(&document).len(), 15);
}

#[tokio::test]
async fn where_case_is_ignored_ids_that_differ_in_case_get_their_own_files() {
    let temp = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    store.add(patient("abc"), vec![glucose(0, "1")]);
    store.add(patient("ABC"), vec![glucose(0, "2")]);
    let options = ExportOptions {
        name_case: NameCase::Insensitive,
        ..fast()
    };
    run_once(&store, temp.path(), options).await;
    let lower = read_json(&temp.path().join("patient_abc.json"));
    let upper = read_json(&temp.path().join("patient_%41%42%43.json"));
    assert_eq!(
        (values(&lower), values(&upper)),
        (vec!["1".to_owned()], vec!["2".to_owned()])
    );
}

/// Runs an exporter until it has caught up, then stops it.
async fn run_once(store: &MemStore, dir: &Path, options: ExportOptions) -> ExportStats {
    let running = start(store, dir, options);
    let last = store.inner.lock().unwrap().messages.len() as i64;
    wait_for("the watermark", || running.handle.stats().watermark == last).await;
    let handle = running.handle.clone();
    running.stop().await.unwrap();
    handle.stats()
}

#[tokio::test]
async fn many_messages_coalesce_into_one_rewrite_per_patient() {
    let temp = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    for i in 0..300 {
        let key = ["alpha", "beta", "gamma"][i % 3];
        store.add(patient(key), vec![glucose(0, &i.to_string())]);
    }
    let stats = run_once(&store, temp.path(), fast()).await;
    assert_eq!(stats.n_files_written, 3);
    assert_eq!(store.inner.lock().unwrap().n_watermark_writes, 1);
    assert_eq!(
        values(&read_json(&temp.path().join("patient_beta.json")))[0],
        "298"
    );

    // While running, with wake-ups after every message: fewer rewrites than messages,
    // and never more than one per patient per round.
    let options = ExportOptions {
        min_interval: Duration::from_millis(50),
        ..ExportOptions::default()
    };
    let running = start(&store, temp.path(), options);
    wait_for("the first round", || running.handle.stats().n_rounds >= 1).await;
    let before = running.handle.stats();
    let mut last = 0;
    for i in 0..2_000 {
        last = store.add(patient("alpha"), vec![glucose(0, &i.to_string())]);
        running.handle.changed();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_for("the watermark", || running.handle.stats().watermark == last).await;
    let handle = running.handle.clone();
    running.stop().await.unwrap();
    let after = handle.stats();
    let n_written = after.n_files_written - before.n_files_written;
    assert!(n_written >= 1);
    assert!(n_written <= after.n_rounds - before.n_rounds);
    assert!(n_written < 100, "{n_written} rewrites for 2,000 messages");
    assert_eq!(
        values(&read_json(&temp.path().join("patient_alpha.json")))[0],
        "1999"
    );
}

#[tokio::test]
async fn the_rest_after_a_round_ends_when_messages_stop_arriving() {
    let temp = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    store.add(patient("alpha"), vec![glucose(0, "1")]);
    // Any round makes the rest after it hours long.
    let options = ExportOptions {
        min_interval: Duration::from_millis(20),
        rest_factor: u32::MAX,
        ..ExportOptions::default()
    };
    let running = start(&store, temp.path(), options);
    wait_for("the first round", || running.handle.stats().n_rounds >= 1).await;
    let last = store.add(patient("alpha"), vec![glucose(0, "2")]);
    running.handle.changed();
    // No more messages: the rest ends after one quiet interval.
    wait_for("the second message in the file", || {
        running.handle.stats().watermark == last
    })
    .await;
    running.stop().await.unwrap();
    assert_eq!(
        values(&read_json(&temp.path().join("patient_alpha.json"))),
        ["2", "1"]
    );
}

#[tokio::test]
async fn a_restart_writes_what_is_pending() {
    let temp = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    store.add(patient("done"), vec![glucose(0, "1")]);
    store.add(patient("pending"), vec![glucose(0, "2")]);
    let last = store.add(patient("pending"), vec![glucose(0, "3")]);
    // The previous run had written the first message's file and stopped.
    store.inner.lock().unwrap().watermark = 1;
    fs::write(temp.path().join(".tmp-1-1"), b"half a file").unwrap();

    let stats = run_once(&store, temp.path(), fast()).await;
    assert_eq!(stats.n_files_written, 1);
    assert_eq!(store.watermark(), last);
    assert!(!temp.path().join("patient_done.json").exists());
    assert_eq!(
        values(&read_json(&temp.path().join("patient_pending.json"))),
        ["3", "2"]
    );
    assert!(
        !temp.path().join(".tmp-1-1").exists(),
        "stale temporary file removed"
    );
}

#[tokio::test]
async fn shutdown_makes_the_files_current() {
    let temp = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    let options = ExportOptions {
        // No second round would start during the test.
        min_interval: Duration::from_secs(3_600),
        ..ExportOptions::default()
    };
    let running = start(&store, temp.path(), options);
    wait_for("the first round", || running.handle.stats().n_rounds >= 1).await;
    let last = store.add(patient("late"), vec![glucose(0, "42")]);
    running.handle.changed();
    running.stop().await.unwrap();
    assert_eq!(store.watermark(), last);
    assert_eq!(
        values(&read_json(&temp.path().join("patient_late.json"))),
        ["42"]
    );
}

#[tokio::test]
async fn a_file_that_cannot_be_written_holds_the_watermark_back_and_is_retried() {
    let temp = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    store.add(patient("blocked"), vec![glucose(0, "1")]);
    let last = store.add(patient("free"), vec![glucose(0, "2")]);
    // A folder where the file should be: the rename over it fails.
    let blocked = temp.path().join("patient_blocked.json");
    fs::create_dir(&blocked).unwrap();

    let running = start(&store, temp.path(), fast());
    wait_for("a failure", || running.handle.stats().n_write_failures >= 1).await;
    wait_for("the other file", || {
        temp.path().join("patient_free.json").exists()
    })
    .await;
    assert_eq!(store.watermark(), 0);

    fs::remove_dir(&blocked).unwrap();
    wait_for("the watermark", || store.watermark() == last).await;
    assert_eq!(values(&read_json(&blocked)), ["1"]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_failure_in_the_final_round_is_returned() {
    let temp = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    store.add(patient("blocked"), vec![glucose(0, "1")]);
    fs::create_dir(temp.path().join("patient_blocked.json")).unwrap();
    let running = start(&store, temp.path(), fast());
    wait_for("a failure", || running.handle.stats().n_write_failures >= 1).await;
    let error = running.stop().await.unwrap_err();
    assert!(
        matches!(error, ExportError::Files { n_failed: 1, .. }),
        "{error}"
    );
    assert_eq!(store.watermark(), 0);
}
