//! Tests of the live task over an in-memory feed: filling from the store at start,
//! following commits, the patients list's filter and sort, and stopping.

use std::sync::Mutex as StdMutex;

use super::*;
use crate::events::Events;
use crate::live::log::EventKind;
use crate::store::{
    Changes as StoreChanges, Feed, MessageSummary, ObservationData, ObservationQuery,
    ObservationRow, Outcome, PatientData, PatientRecords, PatientSummary, StoreFuture, TrendQuery,
    TrendSeries,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn config() -> LiveConfig {
    LiveConfig {
        stale_after: Duration::from_secs(30),
        offline_after: Duration::from_secs(300),
    }
}

/// A store that is a list of feed messages in commit order.
#[derive(Default)]
struct FakeStore {
    messages: StdMutex<Vec<FeedMessage>>,
}

impl FakeStore {
    fn push(&self, message: FeedMessage) {
        self.messages.lock().unwrap().push(message);
    }
}

fn ready<T: Send + 'static>(value: T) -> StoreFuture<'static, T> {
    Box::pin(async move { Ok(value) })
}

impl StoreRead for FakeStore {
    fn patients(&self) -> StoreFuture<'_, Vec<PatientSummary>> {
        let messages = self.messages.lock().unwrap();
        let mut summaries: Vec<PatientSummary> = Vec::new();
        for m in messages.iter() {
            let Some(p) = &m.patient else { continue };
            summaries.retain(|s| s.key != p.key);
            summaries.push(PatientSummary {
                key: p.key.clone(),
                name: p.name.clone(),
                n_observations: 0,
                last_received_at: Some(m.received_at),
                last_message: Some(m.id),
            });
        }
        ready(summaries)
    }

    fn patient_records<'a>(
        &'a self,
        _key: &'a str,
        _limit: Option<usize>,
    ) -> StoreFuture<'a, Option<PatientRecords>> {
        ready(None)
    }

    fn messages(&self, filter: MessageFilter) -> StoreFuture<'_, Vec<MessageSummary>> {
        let messages = self.messages.lock().unwrap();
        let summaries = messages
            .iter()
            .rev()
            .filter(|m| filter.before_id.is_none_or(|b| m.id < b))
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(|m| MessageSummary {
                id: m.id,
                received_at: m.received_at,
                peer: String::new(),
                peer_identity: None,
                replay_of: None,
                replayed_as: None,
                sender: String::new(),
                control_id: String::new(),
                outcome: m.outcome,
                n_received: 1,
                reason: m.reason.clone(),
                message_type: m.message_type.clone(),
                patient: m.patient.as_ref().map(|p| p.key.clone()),
                ack_code: None,
                merge: None,
                raw: None,
            })
            .collect();
        ready(summaries)
    }

    fn changes_since(&self, after: ChangeCursor, _limit: usize) -> StoreFuture<'_, StoreChanges> {
        ready(StoreChanges {
            patients: Vec::new(),
            next: after,
        })
    }

    fn export_watermark<'a>(&'a self, _exporter: &'a str) -> StoreFuture<'a, ChangeCursor> {
        ready(ChangeCursor::START)
    }

    fn export_files<'a>(
        &'a self,
        _exporter: &'a str,
        _keys: Option<Vec<String>>,
    ) -> StoreFuture<'a, std::collections::HashMap<String, crate::store::FilePosition>> {
        ready(Default::default())
    }

    fn feed(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Feed> {
        let messages: Vec<FeedMessage> = self
            .messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.id > after.position())
            .take(limit)
            .cloned()
            .collect();
        let next = messages.last().map_or(after, |m| ChangeCursor::at(m.id));
        ready(Feed { messages, next })
    }

    fn feed_head(&self) -> StoreFuture<'_, ChangeCursor> {
        let head = self.messages.lock().unwrap().last().map_or(0, |m| m.id);
        ready(ChangeCursor::at(head))
    }

    fn patient_feed<'a>(
        &'a self,
        key: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<(PatientData, Vec<FeedMessage>)>> {
        let messages = self.messages.lock().unwrap();
        let mine: Vec<FeedMessage> = messages
            .iter()
            .rev()
            .filter(|m| m.patient.as_ref().is_some_and(|p| p.key == key))
            .take(limit)
            .cloned()
            .collect();
        let found = mine
            .first()
            .and_then(|m| m.patient.clone())
            .map(|p| (p, mine));
        ready(found)
    }

    fn observations<'a>(
        &'a self,
        _key: &'a str,
        _query: ObservationQuery,
    ) -> StoreFuture<'a, Option<Vec<ObservationRow>>> {
        ready(None)
    }

    fn trends<'a>(
        &'a self,
        _key: &'a str,
        _query: TrendQuery,
    ) -> StoreFuture<'a, Option<Vec<TrendSeries>>> {
        ready(None)
    }

    fn message(&self, _id: i64) -> StoreFuture<'_, Option<crate::store::MessageDetail>> {
        ready(None)
    }

    fn alarms(
        &self,
        _query: crate::store::AlarmQuery,
    ) -> StoreFuture<'_, Vec<crate::store::AlarmRow>> {
        ready(Vec::new())
    }
}

fn patient(key: &str, name: &str) -> PatientData {
    PatientData {
        key: key.into(),
        id: key.into(),
        assigning_authority: String::new(),
        identifiers: key.into(),
        name: name.into(),
        birth_date: String::new(),
        sex: String::new(),
        is_update: false,
    }
}

fn heart_rate(value: &str, flags: &str) -> ObservationData {
    ObservationData {
        index: 0,
        value_type: "NM".into(),
        code: "8867-4".into(),
        code_text: "Heart rate".into(),
        code_system: "LN".into(),
        sub_id: String::new(),
        value: value.into(),
        numeric: value.parse().ok(),
        units: "/min".into(),
        units_text: String::new(),
        reference_range: "60-100".into(),
        abnormal_flags: flags.into(),
        status: "F".into(),
        observed_at: String::new(),
        observed_ms: now_ms(),
        equipment: String::new(),
        mark: None,
    }
}

fn message(
    id: i64,
    key: &str,
    name: &str,
    location: &str,
    obs: Vec<ObservationData>,
) -> FeedMessage {
    FeedMessage {
        id,
        received_at: jiff::Timestamp::now(),
        outcome: Outcome::Accept,
        reason: None,
        sending_application: Some(format!("DEV-{key}")),
        sending_facility: None,
        control_id: None,
        message_type: Some("ORU^R01".into()),
        location: Some(location.into()),
        device: Some(format!("DEV-{key}")),
        patient: Some(patient(key, name)),
        observations: obs,
        merged_from: None,
        alarms: Vec::new(),
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn keys(list: &str) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(list).unwrap();
    list["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_task_fills_from_the_store_then_follows_and_stops() {
    let store = Arc::new(FakeStore::default());
    store.push(message(
        1,
        "A",
        "Anna Berg",
        "ICU^02",
        vec![heart_rate("70", "")],
    ));
    store.push(message(
        2,
        "A",
        "Anna Berg",
        "ICU^02",
        vec![heart_rate("71", "")],
    ));
    let events = Events::new();
    let live = Live::with_poll(config(), None, Duration::from_millis(200));
    let (trigger, shutdown) = crate::shutdown::Shutdown::new();
    let task = tokio::spawn(run(
        Arc::clone(&live),
        Arc::clone(&store) as Arc<dyn StoreRead>,
        events.subscribe(),
        shutdown.into_requested(),
    ));
    eventually("the seed", || live.patient("A", now_ms()).is_some()).await;
    let seeded: serde_json::Value =
        serde_json::from_str(&live.patient("A", now_ms()).unwrap()).unwrap();
    assert_eq!(
        seeded["sparklines"][0]["values"],
        serde_json::json!([70.0, 71.0])
    );
    assert_eq!(seeded["status"], "live");
    assert_eq!(
        live.minutes(now_ms())
            .iter()
            .map(|m| m.accepted)
            .sum::<u64>(),
        2
    );

    let mut start = live.start_events(None);
    store.push(message(
        3,
        "B",
        "Bo Ek",
        "ICU^01",
        vec![heart_rate("140", "H")],
    ));
    events.committed();
    let first = tokio::time::timeout(DEADLINE, start.receiver.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.kind, EventKind::Observation);
    let second = tokio::time::timeout(DEADLINE, start.receiver.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.kind, EventKind::Patient);
    assert_eq!(live.event_id(second.seq), format!("{}-2", live.log.run()));
    assert!(
        live.patient("B", now_ms()).is_some(),
        "the state is there before its event"
    );
    assert_eq!(
        live.minutes(now_ms())
            .iter()
            .map(|m| m.accepted)
            .sum::<u64>(),
        3
    );
    assert_eq!(live.devices(now_ms()).len(), 2);

    // Without a notification (another writer), the next poll reads it.
    store.push(message(4, "C", "Cid Ny", "ICU^03", vec![]));
    eventually("the poll", || live.patient("C", now_ms()).is_some()).await;

    trigger.trigger();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    tokio::time::timeout(DEADLINE, live.closed())
        .await
        .expect("closed");
}

#[tokio::test]
async fn the_list_filters_and_sorts() {
    let store = Arc::new(FakeStore::default());
    let rows = [
        ("A", "Anna Berg", "ICU^02", "70", ""),
        ("B", "Bo Ek", "ICU^01", "140", "HH"),
        ("C", "Cid Ny", "WARD^01", "110", "H"),
    ];
    for (n, (key, name, location, value, flags)) in rows.into_iter().enumerate() {
        let mut m = message(
            n as i64 + 1,
            key,
            name,
            location,
            vec![heart_rate(value, flags)],
        );
        m.received_at =
            jiff::Timestamp::from_millisecond(now_ms() - 3_000 + n as i64 * 1_000).unwrap();
        store.push(m);
    }
    let live = Live::new(config(), None);
    let (trigger, shutdown) = crate::shutdown::Shutdown::new();
    let task = tokio::spawn(run(
        Arc::clone(&live),
        Arc::clone(&store) as Arc<dyn StoreRead>,
        Events::new().subscribe(),
        shutdown.into_requested(),
    ));
    eventually("the seed", || {
        keys(&live.patient_list(None, PatientSort::Location, now_ms())).len() == 3
    })
    .await;
    let now = now_ms();
    let list = |q: Option<&str>, sort| keys(&live.patient_list(q, sort, now));
    assert_eq!(list(None, PatientSort::Location), ["B", "A", "C"]);
    assert_eq!(list(None, PatientSort::Name), ["A", "B", "C"]);
    assert_eq!(list(None, PatientSort::Severity), ["B", "C", "A"]);
    assert_eq!(list(None, PatientSort::Staleness), ["A", "B", "C"]);
    assert_eq!(list(Some("icu"), PatientSort::Location), ["B", "A"]);
    assert_eq!(list(Some("BERG"), PatientSort::Location), ["A"]);
    assert_eq!(list(Some("ny"), PatientSort::Location), ["C"]);
    assert!(list(Some("nobody"), PatientSort::Location).is_empty());
    let whole: serde_json::Value =
        serde_json::from_str(&live.patient_list(None, PatientSort::Location, now)).unwrap();
    assert_eq!(whole["stale_after_seconds"], 30.0);
    assert_eq!(whole["offline_after_seconds"], 300.0);
    assert!(whole["generated_at"].as_str().unwrap().ends_with('Z'));
    assert!("sideways".parse::<PatientSort>().is_err());
    trigger.trigger();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
}
