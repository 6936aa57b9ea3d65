//! The store contract: what every backend must do, written once against `dyn Store` and run
//! against each backend by [`store_contract!`](crate::store_contract), which takes the one
//! function that opens a fresh store of that backend (and, for a backend that needs a
//! server, a check that skips the tests without one). SQLite runs it in
//! `store/sqlite/tests.rs`, PostgreSQL in `store/postgres/tests.rs`: both run the one list
//! below, so a new contract test runs on every backend.
//!
//! The fixtures (`oru`, `patient`, …) are shared with the backends' own tests.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{
    ChangeCursor, Content, FilePosition, Health, MergeRequest, MessageFilter, MessageKey,
    MessageSummary, NewMessage, ObservationData, ObservationQuery, ObservationRow, Outcome,
    PatientData, PatientSummary, PurgeCursor, PurgeRequest, RecordPosition, Store, StoreOptions,
    Stored, TrendBucket, TrendQuery, Verdict,
};

/// Opens a fresh (or, given the same folder again, the same) store of one backend in `dir`.
pub type Open = fn(&Path, &StoreOptions) -> Arc<dyn Store>;

/// One `#[tokio::test]` per property of the contract, for the backend that `$open` opens;
/// with `skip_unless = $ready`, each test first evaluates `$ready` (a `bool`) and passes
/// without running when it is false (a backend whose server is missing says so itself).
#[macro_export]
macro_rules! store_contract {
    ($open:expr) => {
        $crate::store_contract!($open, skip_unless = true);
    };
    ($open:expr, skip_unless = $ready:expr) => {
        $crate::store_contract!(@tests $open, $ready;
            commit_and_read_back,
            concurrent_committers_are_each_stored_once,
            retransmissions_are_recognised,
            rejected_messages_are_kept_but_never_matched,
            without_dedupe_every_frame_is_stored,
            adt_updates_the_patient_and_other_messages_only_fill_in,
            observations_without_a_patient_change_no_patient,
            patient_records_are_newest_first_and_limited,
            messages_are_listed_newest_first_and_filtered,
            a_reopened_store_finds_everything,
            the_change_feed_names_each_changed_patient_once,
            exporters_keep_their_own_watermarks,
            file_positions_are_recorded_with_the_watermark,
            a_working_store_is_healthy,
            the_feed_holds_every_message_in_commit_order,
            a_patient_feed_is_their_newest_messages,
            messages_are_filtered_by_every_condition,
            messages_page_by_their_cursor,
            one_message_reads_back_whole,
            observations_page_in_record_order_while_data_arrives,
            observations_are_filtered_by_code_and_observation_time,
            trends_summarise_each_code_per_bucket,
            a_merge_of_two_known_patients_moves_the_history,
            a_merge_into_an_unknown_patient_renames,
            a_merge_of_two_unknown_patients_is_recorded_for_later_messages,
            merges_the_store_contradicts_are_refused_and_change_nothing,
            a_merge_in_the_same_batch_as_the_prior_patients_messages,
            the_change_feed_reports_both_patients_of_a_merge,
            a_merged_patients_file_positions_go_when_the_watermark_passes_the_merge,
            purges_remove_only_what_retention_allows,
            purges_go_in_bounded_steps_and_never_reuse_ids,
            alarms_are_stored_read_filtered_and_purged,
            marked_values_read_back_marked_and_never_as_numbers,
            observations_without_a_patient_are_their_devices,
        );
    };
    (@tests $open:expr, $ready:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let ready: bool = $ready;
                if !ready {
                    return;
                }
                $crate::store::contract::$name($open).await;
            }
        )*
    };
}

/// The duplicate key the fixtures use.
pub fn key(control_id: &str) -> MessageKey {
    MessageKey {
        sending_application: "DEV".into(),
        sending_facility: "FAC".into(),
        control_id: control_id.into(),
        sent_ms: Some(1_704_067_200_000),
    }
}

/// A patient with the fixtures' authority and birth date.
pub fn patient(key: &str, name: &str, is_update: bool) -> PatientData {
    PatientData {
        key: key.into(),
        id: key.into(),
        assigning_authority: "AUTH".into(),
        identifiers: format!("{key}^^^AUTH^MR"),
        name: name.into(),
        birth_date: "1970-01-01".into(),
        sex: "F".into(),
        is_update,
    }
}

/// A glucose OBX with this value.
pub fn observation(index: u32, value: &str) -> ObservationData {
    ObservationData {
        index,
        value_type: "NM".into(),
        code: "1554-5".into(),
        code_text: "GLUCOSE".into(),
        code_system: "LN".into(),
        sub_id: String::new(),
        value: value.into(),
        numeric: value.parse().ok(),
        units: "mg/dl".into(),
        units_text: String::new(),
        reference_range: "70_105".into(),
        abnormal_flags: "H".into(),
        status: "F".into(),
        observed_at: "2002-02-15T07:30:00".into(),
        observed_ms: 1_013_758_200_000 + i64::from(index),
        equipment: "0012345678ABCDEF".into(),
        mark: None,
    }
}

/// An accepted ORU; `body` makes its bytes differ.
pub fn oru(
    control_id: &str,
    patient: Option<PatientData>,
    values: &[&str],
    body: &str,
) -> NewMessage {
    let raw = format!("MSH|^~\\&|DEV|FAC|||20240101||ORU^R01|{control_id}|P|2.6\r{body}");
    NewMessage {
        received_at: jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap(),
        peer: "127.0.0.1:40000".into(),
        peer_identity: None,
        replay_of: None,
        hash: Sha256::digest(raw.as_bytes()).into(),
        raw: raw.into_bytes(),
        key: Some(key(control_id)),
        verdict: Verdict::Accept,
        ack_code: None,
        content: Some(Content {
            message_type: "ORU".into(),
            trigger: "R01".into(),
            version: "2.6".into(),
            patient,
            device: "DEV".into(),
            location: Some("ICU^1".into()),
            observations: values
                .iter()
                .enumerate()
                .map(|(n, value)| observation(n as u32, value))
                .collect(),
            merge: None,
            alarms: Vec::new(),
        }),
    }
}

/// An ADT^`event` (A40, A34, A47) that passed ingest's checks: merge `prior` into
/// `survivor`, answered `AE` if the store refuses it.
pub fn merge(control_id: &str, survivor: &str, prior: &str, event: &str) -> NewMessage {
    let mut message = oru(
        control_id,
        Some(patient(survivor, "MERGED", true)),
        &[],
        &format!("MRG|{prior}\r"),
    );
    let content = message.content.as_mut().expect("oru has content");
    content.message_type = "ADT".into();
    content.trigger = event.into();
    content.merge = Some(MergeRequest {
        prior: prior.into(),
        event: event.into(),
        refused_ack_code: Some("AE".into()),
    });
    message.ack_code = Some("AA".into());
    message
}

/// A rejected copy of [`oru`].
pub fn rejected(control_id: &str, body: &str) -> NewMessage {
    let mut message = oru(control_id, Some(patient("P1", "EVE", false)), &["1"], body);
    message.verdict = Verdict::Reject {
        reason: "message type not allowed".into(),
    };
    message
}

/// The id of a message stored as new; panics on a duplicate.
pub fn new_id(stored: &Stored) -> i64 {
    match stored {
        Stored::New { id } => *id,
        Stored::Duplicate { .. } | Stored::Repeated { .. } | Stored::Refused { .. } => {
            panic!("expected a new message, got {stored:?}")
        }
    }
}

fn options() -> StoreOptions {
    StoreOptions::default()
}

async fn n_messages(store: &dyn Store) -> usize {
    store
        .messages(MessageFilter::default())
        .await
        .unwrap()
        .len()
}

async fn n_records(store: &dyn Store, key: &str) -> usize {
    store
        .patient_records(key, None)
        .await
        .unwrap()
        .map_or(0, |r| r.records.len())
}

/// Reads the whole change feed from the start.
async fn all_changes(store: &dyn Store) -> (Vec<String>, ChangeCursor) {
    let changes = store
        .changes_since(ChangeCursor::START, 1000)
        .await
        .unwrap();
    (changes.patients, changes.next)
}

/// What is committed reads back: records, the patient, the message and its bytes.
pub async fn commit_and_read_back(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let message = oru(
        "1",
        Some(patient("P1", "EVE EVERYWOMAN", false)),
        &["184", "90"],
        "",
    );
    let stored = store.commit(vec![message.clone()]).await.unwrap();
    let id = new_id(&stored[0]);

    let records = store.patient_records("P1", None).await.unwrap().unwrap();
    assert_eq!(records.patient, patient("P1", "EVE EVERYWOMAN", false));
    assert_eq!(records.records.len(), 2);
    let first = &records.records[0];
    assert_eq!(first.observation, observation(0, "184"));
    assert_eq!(records.records[1].observation, observation(1, "90"));
    assert_eq!(first.message_id, id);
    assert_eq!(first.control_id, "1");
    assert_eq!(first.device, "DEV");
    assert_eq!(first.received_at, message.received_at);

    let patients = store.patients().await.unwrap();
    assert_eq!(
        patients,
        vec![PatientSummary {
            key: "P1".into(),
            name: "EVE EVERYWOMAN".into(),
            n_observations: 2,
            last_received_at: Some(message.received_at),
            last_message: Some(id),
        }]
    );

    let messages = store
        .messages(MessageFilter {
            with_raw: true,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].id, id);
    assert_eq!(messages[0].sender, "DEV|FAC");
    assert_eq!(messages[0].outcome, Outcome::Accept);
    assert_eq!(messages[0].received_at, message.received_at);
    assert_eq!(messages[0].raw.as_deref(), Some(&message.raw[..]));
    assert!(
        store
            .patient_records("nobody", None)
            .await
            .unwrap()
            .is_none()
    );
}

/// Many callers at once: every message stored once, with its own id.
pub async fn concurrent_committers_are_each_stored_once(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let mut tasks = Vec::new();
    for task in 0..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..20 {
                let control_id = format!("{task}-{n}");
                let who = patient(&format!("P{}", task % 5), "EVE", false);
                let message = oru(&control_id, Some(who), &["1", "2"], "");
                let stored = store.commit(vec![message]).await.unwrap();
                ids.push(new_id(&stored[0]));
            }
            ids
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(ids.insert(id), "id {id} given twice");
        }
    }
    assert_eq!(ids.len(), 640);
    assert_eq!(n_messages(store.as_ref()).await, 640);
    let patients = store.patients().await.unwrap();
    assert_eq!(patients.len(), 5);
    assert_eq!(patients.iter().map(|p| p.n_observations).sum::<u64>(), 1280);
    let stats = store.stats();
    assert_eq!(stats.n_stored, 640);
    assert!(stats.n_transactions <= 640);
}

/// Same key and bytes is a retransmission, answered like the first; same key with other
/// bytes is a sender reusing control ids, stored and counted.
pub async fn retransmissions_are_recognised(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let who = || Some(patient("P1", "EVE", false));
    let first = new_id(
        &store
            .commit(vec![oru("1", who(), &["1"], "")])
            .await
            .unwrap()[0],
    );

    let again = store
        .commit(vec![oru("1", who(), &["1"], "")])
        .await
        .unwrap();
    let duplicate = Stored::Duplicate {
        id: first,
        verdict: Verdict::Accept,
    };
    assert_eq!(again, vec![duplicate.clone()]);

    // Within one batch too.
    let batch = store
        .commit(vec![
            oru("2", who(), &["1"], ""),
            oru("2", who(), &["1"], ""),
        ])
        .await
        .unwrap();
    let second = new_id(&batch[0]);
    assert_eq!(
        batch[1],
        Stored::Duplicate {
            id: second,
            verdict: Verdict::Accept
        }
    );
    assert_eq!(store.stats().n_reused_control_ids, 0);

    let reused = store
        .commit(vec![oru("1", who(), &["1"], "OBX|x\r")])
        .await
        .unwrap();
    assert!(new_id(&reused[0]) > second);
    let stats = store.stats();
    assert_eq!(stats.n_reused_control_ids, 1);
    assert_eq!(stats.n_duplicates, 2);
    assert_eq!(stats.n_stored, 3);
    // The first copy is still the one a retransmission is matched with.
    let again = store
        .commit(vec![oru("1", who(), &["1"], "")])
        .await
        .unwrap();
    assert_eq!(again, vec![duplicate]);

    assert_eq!(n_messages(store.as_ref()).await, 3);
    assert_eq!(n_records(store.as_ref(), "P1").await, 3);
}

/// Rejects are kept for inspection with their reason and make no records. They are never
/// duplicates of accepted messages, nor accepted messages of them; the same refused bytes
/// again are counted on the row already kept, not kept again (junk costs one row).
pub async fn rejected_messages_are_kept_but_never_matched(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let stored = store
        .commit(vec![
            rejected("1", ""),
            rejected("1", ""),
            rejected("1", "other"),
        ])
        .await
        .unwrap();
    let first = new_id(&stored[0]);
    assert_eq!(stored[1], Stored::Repeated { id: first });
    let other = new_id(&stored[2]);
    let accepted = store
        .commit(vec![oru(
            "1",
            Some(patient("P1", "EVE", false)),
            &["1"],
            "",
        )])
        .await
        .unwrap();
    new_id(&accepted[0]);
    assert_eq!(
        store.commit(vec![rejected("1", "")]).await.unwrap(),
        vec![Stored::Repeated { id: first }]
    );
    assert_eq!(store.stats().n_repeated, 2);

    assert_eq!(n_messages(store.as_ref()).await, 3);
    assert_eq!(n_records(store.as_ref(), "P1").await, 1);
    let rejects = store
        .messages(MessageFilter {
            rejected_only: true,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let seen: Vec<_> = rejects.iter().map(|m| (m.id, m.n_received)).collect();
    assert_eq!(seen, [(other, 1), (first, 3)]);
    assert!(rejects.iter().all(|m| m.outcome == Outcome::Reject
        && m.reason.as_deref() == Some("message type not allowed")
        && m.raw.is_none()));
    // An accepted message is always received once.
    let all = store.messages(MessageFilter::default()).await.unwrap();
    assert_eq!(all[0].n_received, 1);
}

/// With duplicate recognition off, every frame is a new message.
pub async fn without_dedupe_every_frame_is_stored(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &StoreOptions { dedupe: false });
    let message = oru("1", Some(patient("P1", "EVE", false)), &["1"], "");
    let stored = store
        .commit(vec![message.clone(), message.clone()])
        .await
        .unwrap();
    assert_ne!(new_id(&stored[0]), new_id(&stored[1]));
    new_id(&store.commit(vec![message]).await.unwrap()[0]);
    assert_eq!(store.stats().n_stored, 3);
    assert_eq!(store.stats().n_duplicates, 0);
}

/// An ADT replaces the patient fields it carries (and keeps what it leaves empty); other
/// messages only fill empty ones; the same after a reopen.
pub async fn adt_updates_the_patient_and_other_messages_only_fill_in(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let info = |store: Arc<dyn Store>| async move {
        store
            .patient_records("P1", None)
            .await
            .unwrap()
            .unwrap()
            .patient
    };
    let mut first = patient("P1", "", false);
    first.sex = String::new();
    store
        .commit(vec![oru("1", Some(first), &[], "")])
        .await
        .unwrap();
    // An ORU fills in what is missing and changes nothing else.
    let mut fill = patient("P1", "EVE", false);
    fill.birth_date = "1999-09-09".into();
    store
        .commit(vec![oru("2", Some(fill), &[], "")])
        .await
        .unwrap();
    let stored = info(Arc::clone(&store)).await;
    assert_eq!(stored.name, "EVE");
    assert_eq!(stored.sex, "F");
    assert_eq!(stored.birth_date, "1970-01-01");

    let mut adt = patient("P1", "EVE EVERYWOMAN", true);
    adt.sex = String::new();
    adt.birth_date = "1971-02-03".into();
    let mut message = oru("3", Some(adt), &[], "");
    message.content.as_mut().unwrap().message_type = "ADT".into();
    store.commit(vec![message]).await.unwrap();
    let stored = info(Arc::clone(&store)).await;
    assert_eq!(stored.name, "EVE EVERYWOMAN");
    assert_eq!(stored.birth_date, "1971-02-03");
    assert_eq!(stored.sex, "F");

    // After a reopen (a writer's memory is empty) the same rules hold.
    drop(store);
    let store = open(dir.path(), &options());
    let other = oru("4", Some(patient("P1", "SOMEONE ELSE", false)), &[], "");
    store.commit(vec![other]).await.unwrap();
    assert_eq!(info(Arc::clone(&store)).await.name, "EVE EVERYWOMAN");
    assert_eq!(store.patients().await.unwrap().len(), 1);
}

/// A message without a patient is stored, and changes no patient.
pub async fn observations_without_a_patient_change_no_patient(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let stored = store
        .commit(vec![oru("1", None, &["5", "6"], "")])
        .await
        .unwrap();
    new_id(&stored[0]);
    assert!(store.patients().await.unwrap().is_empty());
    assert_eq!(n_messages(store.as_ref()).await, 1);
    let (patients, next) = all_changes(store.as_ref()).await;
    assert!(patients.is_empty());
    assert!(next > ChangeCursor::START, "the feed moves past it");
}

/// Records come newest message first, OBX order within a message, and stop at the limit.
pub async fn patient_records_are_newest_first_and_limited(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let who = || Some(patient("P1", "EVE", false));
    let mut ids = Vec::new();
    for (n, values) in [["a1", "a2", "a3"], ["b1", "b2", "b3"], ["c1", "c2", "c3"]]
        .iter()
        .enumerate()
    {
        let stored = store
            .commit(vec![
                oru(&n.to_string(), who(), values, ""),
                oru(
                    &format!("other{n}"),
                    Some(patient("P2", "ADAM", false)),
                    &["x"],
                    "",
                ),
            ])
            .await
            .unwrap();
        ids.push(new_id(&stored[0]));
    }
    let records = store
        .patient_records("P1", Some(5))
        .await
        .unwrap()
        .unwrap()
        .records;
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.message_id, r.observation.value.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[2], "c1"),
            (ids[2], "c2"),
            (ids[2], "c3"),
            (ids[1], "b1"),
            (ids[1], "b2")
        ]
    );
    let all = store
        .patient_records("P1", None)
        .await
        .unwrap()
        .unwrap()
        .records;
    assert_eq!(all.len(), 9);
    assert_eq!(all[8].observation.value, "a3");
    let none = store.patient_records("P1", Some(0)).await.unwrap().unwrap();
    assert!(none.records.is_empty());
    let summaries = store.patients().await.unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!(
        (summaries[0].key.as_str(), summaries[0].n_observations),
        ("P1", 9)
    );
    assert_eq!(
        (summaries[1].key.as_str(), summaries[1].n_observations),
        ("P2", 3)
    );
}

/// The message list is newest first, filters rejects, limits, and has bytes on request.
pub async fn messages_are_listed_newest_first_and_filtered(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let mut unreadable = rejected("", "junk");
    unreadable.key = None;
    unreadable.content = None;
    let mut error = oru("3", None, &[], "");
    error.verdict = Verdict::Error {
        reason: "MSH-9 missing".into(),
    };
    let stored = store
        .commit(vec![
            oru("1", None, &[], ""),
            rejected("2", ""),
            error,
            unreadable,
        ])
        .await
        .unwrap();
    let stored: Vec<i64> = stored.iter().map(new_id).collect();
    let all = store.messages(MessageFilter::default()).await.unwrap();
    let ids: Vec<_> = all.iter().map(|m| m.id).collect();
    assert_eq!(ids, stored.iter().rev().copied().collect::<Vec<_>>());
    assert!(all.iter().all(|m| m.raw.is_none()));
    assert_eq!(
        (all[0].sender.as_str(), all[0].control_id.as_str()),
        ("", "")
    );
    assert_eq!(all[1].outcome, Outcome::Error);
    assert_eq!(all[1].reason.as_deref(), Some("MSH-9 missing"));
    assert_eq!(all[3].reason, None);
    let limited = store
        .messages(MessageFilter {
            limit: Some(2),
            with_raw: true,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
    assert!(limited[1].raw.as_deref().unwrap().starts_with(b"MSH|"));
    let rejects = store
        .messages(MessageFilter {
            rejected_only: true,
            limit: Some(1),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].id, stored[3]);
    let rejects = store
        .messages(MessageFilter {
            rejected_only: true,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = rejects.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![stored[3], stored[2], stored[1]]);
}

/// Everything survives a reopen: records, the watermark, duplicate recognition, and ids
/// keep increasing.
pub async fn a_reopened_store_finds_everything(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let message = oru("1", Some(patient("P1", "EVE", false)), &["1", "2"], "");
    let first = new_id(&store.commit(vec![message.clone()]).await.unwrap()[0]);
    let (_, cursor) = all_changes(store.as_ref()).await;
    store.set_export_watermark("json", cursor).await.unwrap();
    drop(store);

    let store = open(dir.path(), &options());
    assert_eq!(store.export_watermark("json").await.unwrap(), cursor);
    assert_eq!(n_records(store.as_ref(), "P1").await, 2);
    assert_eq!(
        store.commit(vec![message]).await.unwrap(),
        vec![Stored::Duplicate {
            id: first,
            verdict: Verdict::Accept
        }]
    );
    let next = oru("2", Some(patient("P1", "EVE", false)), &["3"], "");
    let second = new_id(&store.commit(vec![next]).await.unwrap()[0]);
    assert!(second > first);
    let records = store.patient_records("P1", None).await.unwrap().unwrap();
    assert_eq!(records.records[0].observation.value, "3");
    assert_eq!(records.records.len(), 3);
}

/// The change feed names each patient whose records changed once per read, in commit
/// order, skips rejects and patient-less messages, pages by its limit, and never goes back.
pub async fn the_change_feed_names_each_changed_patient_once(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let start = store.changes_since(ChangeCursor::START, 10).await.unwrap();
    assert!(start.patients.is_empty());
    assert_eq!(start.next, ChangeCursor::START);
    let who = |key: &str| Some(patient(key, "X", false));
    store
        .commit(vec![
            oru("1", who("B"), &["1"], ""),
            oru("2", who("A"), &["1"], ""),
            oru("3", who("B"), &["1"], ""),
            rejected("4", ""),
            oru("5", None, &["1"], ""),
            oru("6", who("C"), &["1"], ""),
        ])
        .await
        .unwrap();
    let (patients, end) = all_changes(store.as_ref()).await;
    assert_eq!(patients, ["B", "A", "C"]);
    // Page by page, the same patients come out, and the pages end where one read ended.
    let mut cursor = ChangeCursor::START;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = store.changes_since(cursor, 2).await.unwrap();
        if page.next == cursor {
            break;
        }
        assert!(page.next > cursor);
        seen.extend(page.patients);
        cursor = page.next;
    }
    assert_eq!(cursor, end);
    seen.dedup();
    assert!(
        seen.starts_with(&["B".to_string(), "A".to_string()]),
        "{seen:?}"
    );
    assert!(seen.contains(&"C".to_string()));
    // A later commit is after the end.
    store
        .commit(vec![oru("7", who("D"), &["1"], "")])
        .await
        .unwrap();
    let later = store.changes_since(end, 10).await.unwrap();
    assert_eq!(later.patients, ["D"]);
    assert!(later.next > end);
}

/// Each exporter's watermark is its own, and starts at the beginning.
pub async fn exporters_keep_their_own_watermarks(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    assert_eq!(
        store.export_watermark("json").await.unwrap(),
        ChangeCursor::START
    );
    store
        .commit(vec![oru("1", Some(patient("A", "X", false)), &["1"], "")])
        .await
        .unwrap();
    let (_, cursor) = all_changes(store.as_ref()).await;
    store.set_export_watermark("json", cursor).await.unwrap();
    assert_eq!(store.export_watermark("json").await.unwrap(), cursor);
    assert_eq!(
        store.export_watermark("ndjson").await.unwrap(),
        ChangeCursor::START
    );
    store.set_export_watermark("ndjson", cursor).await.unwrap();
    store
        .set_export_watermark("json", ChangeCursor::START)
        .await
        .unwrap();
    assert_eq!(store.export_watermark("ndjson").await.unwrap(), cursor);
    assert_eq!(
        store.export_watermark("json").await.unwrap(),
        ChangeCursor::START
    );
}

/// An exporter's file positions are kept per exporter and patient, with its watermark,
/// replaced by the next, and survive a reopening.
pub async fn file_positions_are_recorded_with_the_watermark(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    assert!(store.export_files("ndjson", None).await.unwrap().is_empty());
    let at = |through, length| FilePosition { through, length };
    store
        .set_export_progress(
            "ndjson",
            ChangeCursor::at(7),
            vec![("A".into(), at(5, 100)), ("B/2".into(), at(7, 40))],
        )
        .await
        .unwrap();
    store
        .set_export_progress("json", ChangeCursor::at(3), vec![("A".into(), at(3, 9))])
        .await
        .unwrap();
    store
        .set_export_progress(
            "ndjson",
            ChangeCursor::at(9),
            vec![("A".into(), at(9, 160))],
        )
        .await
        .unwrap();
    drop(store);
    let store = open(dir.path(), &options());
    assert_eq!(
        store.export_watermark("ndjson").await.unwrap(),
        ChangeCursor::at(9)
    );
    let all = store.export_files("ndjson", None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["A"], at(9, 160));
    assert_eq!(all["B/2"], at(7, 40));
    let some = store
        .export_files("ndjson", Some(vec!["B/2".into(), "nobody".into()]))
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some["B/2"], at(7, 40));
    assert_eq!(
        store.export_files("json", None).await.unwrap()["A"],
        at(3, 9)
    );
}

/// A store that stores says so.
pub async fn a_working_store_is_healthy(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    assert_eq!(store.health(), Health::Ok);
    store
        .commit(vec![oru("1", None, &["1"], "")])
        .await
        .unwrap();
    assert_eq!(store.health(), Health::Ok);
}

/// The feed holds every new message, accepted or refused, in commit order, with its content
/// and its patient as stored now; it pages by its limit and ends where the head is.
pub async fn the_feed_holds_every_message_in_commit_order(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    assert_eq!(store.feed_head().await.unwrap(), ChangeCursor::START);
    let empty = store.feed(ChangeCursor::START, 10).await.unwrap();
    assert!(empty.messages.is_empty());
    assert_eq!(empty.next, ChangeCursor::START);

    let mut unreadable = rejected("", "junk");
    unreadable.key = None;
    unreadable.content = None;
    let mut error = oru("3", None, &[], "");
    error.verdict = Verdict::Error {
        reason: "MSH-9 missing".into(),
    };
    error.content = None;
    let stored = store
        .commit(vec![
            oru("1", Some(patient("P1", "EVE", false)), &["184", "90"], ""),
            rejected("2", ""),
            error,
            unreadable,
            oru("5", None, &["7"], ""),
        ])
        .await
        .unwrap();
    let ids: Vec<i64> = stored.iter().map(new_id).collect();
    // The patient's data as stored now, not as the message had it.
    store
        .commit(vec![oru(
            "6",
            Some(patient("P1", "EVE EVERYWOMAN", true)),
            &[],
            "",
        )])
        .await
        .unwrap();
    let head = store.feed_head().await.unwrap();

    let feed = store.feed(ChangeCursor::START, 100).await.unwrap();
    assert_eq!(feed.next, head);
    let got: Vec<i64> = feed.messages.iter().map(|m| m.id).collect();
    assert_eq!(&got[..5], &ids[..]);
    assert_eq!(got.len(), 6);
    let first = &feed.messages[0];
    assert_eq!(first.outcome, Outcome::Accept);
    assert_eq!(first.reason, None);
    assert_eq!(first.sending_application.as_deref(), Some("DEV"));
    assert_eq!(first.sending_facility.as_deref(), Some("FAC"));
    assert_eq!(first.control_id.as_deref(), Some("1"));
    assert_eq!(first.message_type.as_deref(), Some("ORU^R01"));
    assert_eq!(first.location.as_deref(), Some("ICU^1"));
    assert_eq!(first.device.as_deref(), Some("DEV"));
    assert_eq!(
        first.patient,
        Some(patient("P1", "EVE EVERYWOMAN", false)),
        "the patient's current data"
    );
    assert_eq!(
        first.observations,
        vec![observation(0, "184"), observation(1, "90")]
    );
    assert_eq!(first.received_at.as_millisecond(), 1_700_000_000_123);
    let refused = &feed.messages[1];
    assert_eq!(refused.outcome, Outcome::Reject);
    assert_eq!(refused.reason.as_deref(), Some("message type not allowed"));
    assert_eq!(refused.control_id.as_deref(), Some("2"));
    assert_eq!(refused.patient, None, "a refused message is about no one");
    assert!(refused.observations.is_empty());
    let error = &feed.messages[2];
    assert_eq!(error.outcome, Outcome::Error);
    assert_eq!(error.reason.as_deref(), Some("MSH-9 missing"));
    assert_eq!(error.message_type, None);
    let unreadable = &feed.messages[3];
    assert_eq!(unreadable.sending_application, None);
    assert_eq!(unreadable.control_id, None);
    let without_patient = &feed.messages[4];
    assert_eq!(without_patient.patient, None);
    assert_eq!(without_patient.observations, vec![observation(0, "7")]);

    // Page by page: the same messages, each once, ending at the head.
    let mut cursor = ChangeCursor::START;
    let mut paged = Vec::new();
    loop {
        let page = store.feed(cursor, 4).await.unwrap();
        assert!(page.messages.len() <= 4);
        if page.messages.is_empty() {
            assert_eq!(page.next, cursor);
            break;
        }
        assert_eq!(
            page.next,
            ChangeCursor::at(page.messages.last().unwrap().id)
        );
        paged.extend(page.messages);
        cursor = page.next;
    }
    assert_eq!(paged, feed.messages);
    assert_eq!(cursor, head);
    // What commits later is after the head.
    let later = store.commit(vec![rejected("7", "later")]).await.unwrap();
    let after = store.feed(head, 10).await.unwrap();
    assert_eq!(after.messages.len(), 1);
    assert_eq!(after.messages[0].id, new_id(&later[0]));
    assert!(after.next > head);
    assert_eq!(store.feed_head().await.unwrap(), after.next);
}

/// A patient's feed is their newest messages, newest first, with their data.
pub async fn a_patient_feed_is_their_newest_messages(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let mut ids = Vec::new();
    for n in 0..3 {
        let stored = store
            .commit(vec![
                oru(
                    &n.to_string(),
                    Some(patient("P1", "EVE", false)),
                    &[&n.to_string()],
                    "",
                ),
                oru(
                    &format!("o{n}"),
                    Some(patient("P2", "ADAM", false)),
                    &["x"],
                    "",
                ),
                rejected(&format!("r{n}"), ""),
            ])
            .await
            .unwrap();
        ids.push(new_id(&stored[0]));
    }
    let (data, messages) = store.patient_feed("P1", 2).await.unwrap().unwrap();
    assert_eq!(data, patient("P1", "EVE", false));
    let got: Vec<i64> = messages.iter().map(|m| m.id).collect();
    assert_eq!(got, [ids[2], ids[1]]);
    assert!(
        messages
            .iter()
            .all(|m| m.patient.as_ref() == Some(&data) && m.outcome == Outcome::Accept)
    );
    assert_eq!(messages[0].observations, vec![observation(0, "2")]);
    let (_, all) = store.patient_feed("P1", 100).await.unwrap().unwrap();
    assert_eq!(all.len(), 3);
    let (_, none) = store.patient_feed("P1", 0).await.unwrap().unwrap();
    assert!(none.is_empty());
    assert!(store.patient_feed("nobody", 10).await.unwrap().is_none());
}

/// A message received at `ms`, answered with `ack_code`.
fn at(mut message: NewMessage, ms: i64, ack_code: &str) -> NewMessage {
    message.received_at = jiff::Timestamp::from_millisecond(ms).unwrap();
    message.ack_code = Some(ack_code.into());
    message
}

/// The ids of a listing.
async fn listed(store: &dyn Store, filter: MessageFilter) -> Vec<i64> {
    let messages: Vec<MessageSummary> = store.messages(filter).await.unwrap();
    assert!(
        messages.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    messages.iter().map(|m| m.id).collect()
}

/// Every condition of the message list holds, alone and together, and the listing carries
/// each message's type, patient and ACK code.
pub async fn messages_are_filtered_by_every_condition(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let t = 1_800_000_000_000;
    let minute = 60_000;
    let mut adt = oru("2", Some(patient("P2", "ADAM", true)), &[], "");
    adt.content.as_mut().unwrap().message_type = "ADT".into();
    adt.content.as_mut().unwrap().trigger = "A08".into();
    let mut other_facility = oru("3", Some(patient("P1", "EVE", false)), &["1"], "");
    other_facility.key.as_mut().unwrap().sending_facility = "WARD".into();
    let mut error = oru("5", None, &[], "");
    error.verdict = Verdict::Error {
        reason: "MSH-9 missing".into(),
    };
    error.content = None;
    let mut no_ack = oru("6", Some(patient("P1", "EVE", false)), &["2"], "");
    no_ack.received_at = jiff::Timestamp::from_millisecond(t + 50 * minute).unwrap();
    let stored = store
        .commit(vec![
            at(
                oru("1", Some(patient("P1", "EVE", false)), &["1"], ""),
                t,
                "AA",
            ),
            at(adt, t + 10 * minute, "CA"),
            at(other_facility, t + 20 * minute, "AA"),
            at(rejected("4", ""), t + 30 * minute, "AR"),
            at(error, t + 40 * minute, "AE"),
            no_ack,
        ])
        .await
        .unwrap();
    let id: Vec<i64> = stored.iter().map(new_id).collect();
    let all = store.messages(MessageFilter::default()).await.unwrap();
    assert_eq!(all.len(), 6);
    let by_id = |n: usize| all.iter().find(|m| m.id == id[n]).unwrap();
    assert_eq!(by_id(0).message_type.as_deref(), Some("ORU^R01"));
    assert_eq!(by_id(0).patient.as_deref(), Some("P1"));
    assert_eq!(by_id(0).ack_code.as_deref(), Some("AA"));
    assert_eq!(by_id(1).message_type.as_deref(), Some("ADT^A08"));
    assert_eq!(by_id(1).patient.as_deref(), Some("P2"));
    assert_eq!(by_id(1).ack_code.as_deref(), Some("CA"));
    assert_eq!(by_id(3).ack_code.as_deref(), Some("AR"));
    assert_eq!(by_id(3).patient, None);
    assert_eq!(by_id(4).ack_code.as_deref(), Some("AE"));
    assert_eq!(by_id(4).message_type, None);
    assert_eq!(by_id(5).ack_code, None, "the sender asked for no ACK");

    let filter = MessageFilter::default;
    let ids = |ns: &[usize]| ns.iter().rev().map(|&n| id[n]).collect::<Vec<_>>();
    let cases: Vec<(MessageFilter, Vec<i64>)> = vec![
        (
            MessageFilter {
                outcome: Some(Outcome::Accept),
                ..filter()
            },
            ids(&[0, 1, 2, 5]),
        ),
        (
            MessageFilter {
                outcome: Some(Outcome::Reject),
                ..filter()
            },
            ids(&[3]),
        ),
        (
            MessageFilter {
                outcome: Some(Outcome::Error),
                ..filter()
            },
            ids(&[4]),
        ),
        (
            MessageFilter {
                rejected_only: true,
                ..filter()
            },
            ids(&[3, 4]),
        ),
        (
            MessageFilter {
                rejected_only: true,
                outcome: Some(Outcome::Accept),
                ..filter()
            },
            vec![],
        ),
        (
            MessageFilter {
                message_type: Some("ORU^R01".into()),
                ..filter()
            },
            // The reject kept its type: it helps whoever inspects it.
            ids(&[0, 2, 3, 5]),
        ),
        (
            MessageFilter {
                message_type: Some("ADT^A08".into()),
                ..filter()
            },
            ids(&[1]),
        ),
        (
            MessageFilter {
                message_type: Some("ORU".into()),
                ..filter()
            },
            vec![],
        ),
        (
            MessageFilter {
                facility: Some("WARD".into()),
                ..filter()
            },
            ids(&[2]),
        ),
        (
            MessageFilter {
                patient: Some("P1".into()),
                ..filter()
            },
            ids(&[0, 2, 5]),
        ),
        (
            MessageFilter {
                patient: Some("P1".into()),
                facility: Some("FAC".into()),
                ..filter()
            },
            ids(&[0, 5]),
        ),
        (
            MessageFilter {
                patient: Some("P1".into()),
                rejected_only: true,
                ..filter()
            },
            vec![],
        ),
        (
            MessageFilter {
                patient: Some("nobody".into()),
                ..filter()
            },
            vec![],
        ),
        (
            MessageFilter {
                since_ms: Some(t + 10 * minute),
                until_ms: Some(t + 40 * minute),
                ..filter()
            },
            ids(&[1, 2, 3]),
        ),
        (
            MessageFilter {
                since_ms: Some(t + 10 * minute + 1),
                ..filter()
            },
            ids(&[2, 3, 4, 5]),
        ),
        (
            MessageFilter {
                until_ms: Some(t + 10 * minute),
                ..filter()
            },
            ids(&[0]),
        ),
        (
            MessageFilter {
                patient: Some("P1".into()),
                since_ms: Some(t + minute),
                until_ms: Some(t + 50 * minute),
                ..filter()
            },
            ids(&[2]),
        ),
        (
            MessageFilter {
                rejected_only: true,
                since_ms: Some(t + 35 * minute),
                ..filter()
            },
            ids(&[4]),
        ),
        (
            MessageFilter {
                before_id: Some(id[3]),
                outcome: Some(Outcome::Accept),
                ..filter()
            },
            ids(&[0, 1, 2]),
        ),
        (
            MessageFilter {
                before_id: Some(id[5]),
                patient: Some("P1".into()),
                limit: Some(1),
                ..filter()
            },
            ids(&[2]),
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            listed(store.as_ref(), filter.clone()).await,
            expected,
            "{filter:?}"
        );
    }
}

/// Pages of the message list, each starting below the last id of the one before, read
/// every message once, also while new messages arrive.
pub async fn messages_page_by_their_cursor(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let mut expected = Vec::new();
    for n in 0..7 {
        let message = if n % 3 == 2 {
            rejected(&n.to_string(), "")
        } else {
            oru(
                &n.to_string(),
                Some(patient("P1", "EVE", false)),
                &["1"],
                "",
            )
        };
        expected.push(new_id(&store.commit(vec![message]).await.unwrap()[0]));
    }
    expected.reverse();
    assert_eq!(
        listed(store.as_ref(), MessageFilter::default()).await,
        expected
    );
    for filter in [
        MessageFilter::default(),
        MessageFilter {
            patient: Some("P1".into()),
            ..MessageFilter::default()
        },
        MessageFilter {
            rejected_only: true,
            ..MessageFilter::default()
        },
    ] {
        let all = listed(store.as_ref(), filter.clone()).await;
        let mut paged = Vec::new();
        let mut before_id = None;
        for page in 0.. {
            let ids = listed(
                store.as_ref(),
                MessageFilter {
                    before_id,
                    limit: Some(2),
                    ..filter.clone()
                },
            )
            .await;
            if ids.is_empty() {
                break;
            }
            assert!(ids.len() <= 2);
            before_id = ids.last().copied();
            paged.extend(ids);
            // What arrives meanwhile is newer than every page.
            let n = format!("late{page}");
            store
                .commit(vec![oru(&n, Some(patient("P1", "EVE", false)), &["1"], "")])
                .await
                .unwrap();
        }
        assert_eq!(paged, all, "{filter:?}");
    }
}

/// One message reads back with its bytes and everything the browser shows.
pub async fn one_message_reads_back_whole(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let message = at(
        oru(
            "1",
            Some(patient("P1", "EVE", false)),
            &["184", "90"],
            "OBX|1\r",
        ),
        1_800_000_000_000,
        "CA",
    );
    let id = new_id(&store.commit(vec![message.clone()]).await.unwrap()[0]);
    let detail = store.message(id).await.unwrap().unwrap();
    assert_eq!(detail.summary.id, id);
    assert_eq!(detail.summary.raw.as_deref(), Some(&message.raw[..]));
    assert_eq!(detail.summary.received_at, message.received_at);
    assert_eq!(detail.summary.peer, "127.0.0.1:40000");
    assert_eq!(detail.summary.sender, "DEV|FAC");
    assert_eq!(detail.summary.control_id, "1");
    assert_eq!(detail.summary.outcome, Outcome::Accept);
    assert_eq!(detail.summary.message_type.as_deref(), Some("ORU^R01"));
    assert_eq!(detail.summary.patient.as_deref(), Some("P1"));
    assert_eq!(detail.summary.ack_code.as_deref(), Some("CA"));
    assert_eq!(detail.summary.n_received, 1);
    assert_eq!(detail.sending_application.as_deref(), Some("DEV"));
    assert_eq!(detail.sending_facility.as_deref(), Some("FAC"));
    assert_eq!(detail.version.as_deref(), Some("2.6"));
    assert_eq!(detail.location.as_deref(), Some("ICU^1"));
    assert_eq!(detail.device.as_deref(), Some("DEV"));
    assert_eq!(detail.last_received_at, None);
    assert_eq!(
        detail.observations,
        vec![observation(0, "184"), observation(1, "90")]
    );

    // A refused frame received twice: counted, with the time of the last copy.
    let first = at(rejected("2", ""), 1_800_000_001_000, "AR");
    let refused = new_id(&store.commit(vec![first.clone()]).await.unwrap()[0]);
    let again = at(first, 1_800_000_002_000, "AR");
    store.commit(vec![again.clone()]).await.unwrap();
    let detail = store.message(refused).await.unwrap().unwrap();
    assert_eq!(detail.summary.outcome, Outcome::Reject);
    assert_eq!(
        detail.summary.reason.as_deref(),
        Some("message type not allowed")
    );
    assert_eq!(detail.summary.n_received, 2);
    assert_eq!(detail.summary.ack_code.as_deref(), Some("AR"));
    assert_eq!(detail.summary.patient, None);
    assert_eq!(detail.last_received_at, Some(again.received_at));
    assert!(detail.observations.is_empty());
    assert_eq!(detail.device, None);

    let mut unreadable = rejected("", "junk");
    unreadable.key = None;
    unreadable.content = None;
    let junk = new_id(&store.commit(vec![unreadable]).await.unwrap()[0]);
    let detail = store.message(junk).await.unwrap().unwrap();
    assert_eq!(detail.sending_application, None);
    assert_eq!(detail.summary.sender, "");
    assert_eq!(detail.version, None);
    assert!(store.message(junk + 100).await.unwrap().is_none());
}

/// The contract's clock for time filters: messages arrive when their values were observed.
const T0: i64 = 1_800_000_000_000;

/// An OBX of `code` with this value (numeric when it is a number), observed at `ms`.
fn vital(index: u32, code: &str, value: &str, ms: i64) -> ObservationData {
    ObservationData {
        code: code.into(),
        code_text: format!("{code} TEXT"),
        units: format!("{code} UNITS"),
        observed_ms: ms,
        ..observation(index, value)
    }
}

/// An accepted ORU about P1 with these OBX, received at `ms`.
fn vitals(control_id: &str, ms: i64, observations: Vec<ObservationData>) -> NewMessage {
    let mut message = oru(control_id, Some(patient("P1", "EVE", false)), &[], "");
    message.received_at = jiff::Timestamp::from_millisecond(ms).unwrap();
    message.content.as_mut().unwrap().observations = observations;
    message
}

/// Records as (message, index, value).
fn positions(records: &[ObservationRow]) -> Vec<(i64, u32, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.message_id,
                r.observation.index,
                r.observation.value.clone(),
            )
        })
        .collect()
}

/// Reads every page of a query, committing a new message for the patient between pages.
async fn every_page(store: &dyn Store, query: ObservationQuery) -> Vec<ObservationRow> {
    let mut all = Vec::new();
    let mut after = None;
    for page in 0.. {
        let records = store
            .observations(
                "P1",
                ObservationQuery {
                    after,
                    ..query.clone()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert!(records.len() <= query.limit);
        let Some(last) = records.last() else {
            break;
        };
        after = Some(RecordPosition {
            message_id: last.message_id,
            index: last.observation.index,
        });
        all.extend(records);
        // New data between pages is newer than every page: never inside a later one.
        let late = vitals(
            &format!("late{page}"),
            T0 + 10_000,
            vec![vital(0, "HR", "999", T0 + 10_000)],
        );
        store.commit(vec![late]).await.unwrap();
    }
    all
}

fn all_records() -> ObservationQuery {
    ObservationQuery {
        code: None,
        since_ms: None,
        until_ms: None,
        after: None,
        limit: 1000,
    }
}

/// A patient's records page newest message first and in OBX order within a message, each
/// page after the last record of the one before: no record twice, none skipped, also
/// while new data arrives between pages and when a page ends inside a message.
pub async fn observations_page_in_record_order_while_data_arrives(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let mut ids = Vec::new();
    for n in 0..5i64 {
        let at = T0 + n * 1000;
        let message = vitals(
            &n.to_string(),
            at,
            (0..3)
                .map(|i| vital(i, "HR", &format!("{n}.{i}"), at))
                .collect(),
        );
        let other = oru(
            &format!("other{n}"),
            Some(patient("P2", "ADAM", false)),
            &["x"],
            "",
        );
        let stored = store
            .commit(vec![message, other, rejected(&format!("r{n}"), "")])
            .await
            .unwrap();
        ids.push(new_id(&stored[0]));
    }
    // A message without observations has no records.
    store
        .commit(vec![vitals("empty", T0 + 6000, vec![])])
        .await
        .unwrap();
    let expected: Vec<(i64, u32, String)> = ids
        .iter()
        .enumerate()
        .rev()
        .flat_map(|(n, &id)| (0..3).map(move |i| (id, i, format!("{n}.{i}"))))
        .collect();
    let whole = store
        .observations("P1", all_records())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(positions(&whole), expected);
    let first = &whole[0];
    assert_eq!(first.control_id, "4");
    assert_eq!(first.device, "DEV");
    assert_eq!(first.received_at.as_millisecond(), T0 + 4000);
    assert_eq!(first.observation, vital(0, "HR", "4.0", T0 + 4000));
    for limit in [1, 2, 3, 4, 7, 15, 16] {
        let paged = every_page(
            store.as_ref(),
            ObservationQuery {
                limit,
                ..all_records()
            },
        )
        .await;
        // Pages read after the first see the late messages only if the first page did.
        let paged: Vec<_> = positions(&paged)
            .into_iter()
            .filter(|(_, _, value)| value != "999")
            .collect();
        assert_eq!(paged, expected, "limit {limit}");
    }
    let none = store
        .observations(
            "P1",
            ObservationQuery {
                limit: 0,
                ..all_records()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(none.is_empty());
    assert!(
        store
            .observations("nobody", all_records())
            .await
            .unwrap()
            .is_none()
    );
}

/// The code filter is on OBX-3.1; `since` is inclusive and `until` exclusive, on the
/// observation time; both hold across pages.
pub async fn observations_are_filtered_by_code_and_observation_time(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let second = 1000;
    let mut messages = Vec::new();
    for n in 0..10i64 {
        let at = T0 + n * second;
        messages.push(vitals(
            &n.to_string(),
            at,
            vec![
                vital(0, "HR", &format!("hr{n}"), at),
                vital(1, "SPO2", &format!("spo2-{n}"), at),
                // Observed a little before it arrived, as a monitor's values are.
                vital(2, "HR", &format!("hr{n}b"), at - 500),
            ],
        ));
    }
    store.commit(messages).await.unwrap();
    let values = |records: &[ObservationRow]| -> Vec<String> {
        records
            .iter()
            .map(|r| r.observation.value.clone())
            .collect()
    };
    let hr = |n: i64| vec![format!("hr{n}"), format!("hr{n}b")];

    let codes = ObservationQuery {
        code: Some("SPO2".into()),
        ..all_records()
    };
    let spo2 = store
        .observations("P1", codes.clone())
        .await
        .unwrap()
        .unwrap();
    let expected: Vec<String> = (0..10).rev().map(|n| format!("spo2-{n}")).collect();
    assert_eq!(values(&spo2), expected);
    let paged = every_page(store.as_ref(), ObservationQuery { limit: 3, ..codes }).await;
    assert_eq!(values(&paged), expected);

    let window = ObservationQuery {
        code: Some("HR".into()),
        since_ms: Some(T0 + 3 * second),
        until_ms: Some(T0 + 6 * second),
        ..all_records()
    };
    let in_window = store
        .observations("P1", window.clone())
        .await
        .unwrap()
        .unwrap();
    // hr3b was observed before `since`; hr6 at `until`, hr6b before it.
    let mut expected = vec!["hr6b".to_string()];
    expected.extend(hr(5));
    expected.extend(hr(4));
    expected.push("hr3".into());
    assert_eq!(values(&in_window), expected);
    for record in &in_window {
        let observed = record.observation.observed_ms;
        assert!((T0 + 3 * second..T0 + 6 * second).contains(&observed));
    }
    let paged = every_page(
        store.as_ref(),
        ObservationQuery {
            limit: 2,
            ..window.clone()
        },
    )
    .await;
    assert_eq!(values(&paged), expected);
    let since_only = store
        .observations(
            "P1",
            ObservationQuery {
                since_ms: Some(T0 + 8 * second),
                // The late messages of the paging above are observed at 10 s.
                until_ms: Some(T0 + 10 * second),
                code: None,
                ..window.clone()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        values(&since_only),
        ["hr9", "spo2-9", "hr9b", "hr8", "spo2-8"]
    );
    let until_only = store
        .observations(
            "P1",
            ObservationQuery {
                since_ms: None,
                until_ms: Some(T0 + second),
                ..window.clone()
            },
        )
        .await
        .unwrap()
        .unwrap();
    // hr1b was observed half a second before its message, within the first second.
    assert_eq!(values(&until_only), ["hr1b", "hr0", "hr0b"]);
    let nothing = store
        .observations(
            "P1",
            ObservationQuery {
                code: Some("NONE".into()),
                ..window
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(nothing.is_empty());
}

fn bucket(start_ms: i64, count: u64, min: f64, median: f64, max: f64) -> TrendBucket {
    TrendBucket {
        start_ms,
        count,
        min,
        median,
        max,
    }
}

/// A trend has per code (ordered by code) the buckets with numeric values in range,
/// oldest first, aligned to multiples of the bucket length: count, min, median (the mean
/// of the middle two for an even count) and max; text and units of the newest record.
pub async fn trends_summarise_each_code_per_bucket(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let minute = 60_000;
    // T0 is a multiple of a minute.
    assert_eq!(T0 % minute, 0);
    let hr = |index, value: &str, at| vital(index, "HR", value, at);
    let messages = vec![
        // Before the range.
        vitals("0", T0 - 1, vec![hr(0, "500", T0 - 1)]),
        // Minute 0: 1, 3, 2 (and a value that is no number, and one marked wrong).
        vitals(
            "1",
            T0 + 1000,
            vec![
                hr(0, "1", T0 + 1000),
                vital(1, "SPO2", "97", T0 + 1000),
                hr(2, "3", T0 + 2000),
            ],
        ),
        vitals(
            "2",
            T0 + 59_999,
            vec![
                hr(0, "2", T0 + 59_999),
                hr(1, "NAV", T0 + 59_999),
                // Marked wrong by its device (OBX-11 `W`): no point of the trend.
                ObservationData {
                    status: "W".into(),
                    ..hr(2, "900", T0 + 59_999)
                },
            ],
        ),
        // Minute 2: 4, 1, 3, 2.
        vitals(
            "3",
            T0 + 2 * minute,
            vec![hr(0, "4", T0 + 2 * minute), hr(1, "1", T0 + 2 * minute + 1)],
        ),
        vitals(
            "4",
            T0 + 2 * minute + 10,
            vec![hr(0, "3", T0 + 2 * minute + 10)],
        ),
        vitals(
            "5",
            T0 + 3 * minute - 1,
            vec![
                ObservationData {
                    code_text: "HR NEWEST".into(),
                    units: "bpm".into(),
                    ..hr(0, "2", T0 + 3 * minute - 1)
                },
                vital(1, "SPO2", "95", T0 + 3 * minute - 1),
                vital(2, "ABC", "-1.5", T0 + 3 * minute - 1),
            ],
        ),
        // At the range's end: out.
        vitals("6", T0 + 3 * minute, vec![hr(0, "700", T0 + 3 * minute)]),
    ];
    store.commit(messages).await.unwrap();
    // Another patient's values are not in it.
    let mut other = oru("o", Some(patient("P2", "ADAM", false)), &["1"], "");
    other.received_at = jiff::Timestamp::from_millisecond(T0 + 1000).unwrap();
    other.content.as_mut().unwrap().observations = vec![hr(0, "1000", T0 + 1000)];
    store.commit(vec![other]).await.unwrap();

    let query = TrendQuery {
        code: None,
        since_ms: T0,
        until_ms: T0 + 3 * minute,
        bucket_ms: minute,
    };
    let series = store.trends("P1", query.clone()).await.unwrap().unwrap();
    let codes: Vec<&str> = series.iter().map(|s| s.code.as_str()).collect();
    assert_eq!(codes, ["ABC", "HR", "SPO2"]);
    let heart = &series[1];
    assert_eq!(heart.code_text, "HR NEWEST");
    assert_eq!(heart.units, "bpm");
    assert_eq!(
        heart.buckets,
        vec![
            bucket(T0, 3, 1.0, 2.0, 3.0),
            bucket(T0 + 2 * minute, 4, 1.0, 2.5, 4.0),
        ]
    );
    assert_eq!(
        series[0].buckets,
        vec![bucket(T0 + 2 * minute, 1, -1.5, -1.5, -1.5)]
    );
    assert_eq!(series[2].code_text, "SPO2 TEXT");
    assert_eq!(series[2].units, "SPO2 UNITS");
    assert_eq!(
        series[2].buckets,
        vec![
            bucket(T0, 1, 97.0, 97.0, 97.0),
            bucket(T0 + 2 * minute, 1, 95.0, 95.0, 95.0),
        ]
    );

    // One code; larger buckets (aligned to the epoch, not to `since`).
    let one = store
        .trends(
            "P1",
            TrendQuery {
                code: Some("HR".into()),
                since_ms: T0 + 1500,
                bucket_ms: 2 * minute,
                ..query.clone()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0].buckets,
        vec![
            bucket(T0, 2, 2.0, 2.5, 3.0),
            bucket(T0 + 2 * minute, 4, 1.0, 2.5, 4.0),
        ]
    );
    let empty = store
        .trends(
            "P1",
            TrendQuery {
                since_ms: T0 + 10 * minute,
                until_ms: T0 + 20 * minute,
                ..query.clone()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(empty.is_empty());
    assert!(store.trends("nobody", query).await.unwrap().is_none());
}

/// The control ids of a patient's records, newest first.
async fn record_ids(store: &dyn Store, key: &str) -> Option<Vec<String>> {
    store
        .patient_records(key, None)
        .await
        .unwrap()
        .map(|r| r.records.into_iter().map(|r| r.control_id).collect())
}

/// The keys `patients` lists.
async fn patient_keys(store: &dyn Store) -> Vec<String> {
    store
        .patients()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect()
}

/// The listed message with this id.
async fn summary(store: &dyn Store, id: i64) -> MessageSummary {
    store
        .messages(MessageFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("message {id} is not listed"))
}

/// Both known: the prior's messages (in the index and in the recent tail) become the
/// survivor's, the prior is listed no more, the merge is recorded on its message, and a
/// later message under the prior key joins the survivor.
pub async fn a_merge_of_two_known_patients_moves_the_history(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let who = |key: &str| Some(patient(key, "X", false));
    store
        .commit(vec![
            oru("a1", who("A"), &["1", "2"], ""),
            oru("b1", who("B"), &["3"], ""),
        ])
        .await
        .unwrap();
    store
        .commit(vec![oru("a2", who("A"), &["4"], "")])
        .await
        .unwrap();
    let stored = store
        .commit(vec![merge("m1", "B", "A", "A40")])
        .await
        .unwrap();
    let merge_id = new_id(&stored[0]);

    assert_eq!(record_ids(store.as_ref(), "A").await, None);
    assert_eq!(
        record_ids(store.as_ref(), "B").await.unwrap(),
        ["a2", "b1", "a1", "a1"]
    );
    assert_eq!(patient_keys(store.as_ref()).await, ["B"]);
    let listed = summary(store.as_ref(), merge_id).await;
    assert_eq!(listed.outcome, Outcome::Accept);
    assert_eq!(listed.patient.as_deref(), Some("B"));
    let note = listed.merge.expect("the merge is shown on its message");
    assert_eq!((note.prior.as_str(), note.survivor.as_str()), ("A", "B"));
    assert_eq!(note.event, "A40");
    // The survivor's message list holds the prior's messages too.
    let of_b = store
        .messages(MessageFilter {
            patient: Some("B".into()),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = of_b.iter().map(|m| m.control_id.as_str()).collect();
    assert_eq!(ids, ["m1", "a2", "b1", "a1"]);
    assert!(of_b.iter().all(|m| m.patient.as_deref() == Some("B")));

    // A later message under the prior key is the survivor's; its demographics do not
    // replace the survivor's.
    store
        .commit(vec![oru(
            "a3",
            Some(patient("A", "OTHER NAME", true)),
            &["5"],
            "",
        )])
        .await
        .unwrap();
    assert_eq!(record_ids(store.as_ref(), "A").await, None);
    let b = store.patient_records("B", Some(1)).await.unwrap().unwrap();
    assert_eq!(b.records[0].control_id, "a3");
    assert_eq!(b.patient.name, "MERGED");
    assert_eq!(patient_keys(store.as_ref()).await, ["B"]);

    // All of it survives a reopen.
    drop(store);
    let store = open(dir.path(), &options());
    assert_eq!(
        record_ids(store.as_ref(), "B").await.unwrap(),
        ["a3", "a2", "b1", "a1", "a1"]
    );
    assert_eq!(record_ids(store.as_ref(), "A").await, None);
}

/// The prior known, the survivor unknown (A47's change of identifier): the prior takes the
/// new key with all their messages.
pub async fn a_merge_into_an_unknown_patient_renames(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    store
        .commit(vec![oru("a1", Some(patient("A", "X", false)), &["1"], "")])
        .await
        .unwrap();
    let stored = store
        .commit(vec![merge("m1", "NEW", "A", "A47")])
        .await
        .unwrap();
    let merge_id = new_id(&stored[0]);
    assert_eq!(patient_keys(store.as_ref()).await, ["NEW"]);
    assert_eq!(record_ids(store.as_ref(), "NEW").await.unwrap(), ["a1"]);
    assert_eq!(record_ids(store.as_ref(), "A").await, None);
    let note = summary(store.as_ref(), merge_id).await.merge.unwrap();
    assert_eq!((note.prior.as_str(), note.survivor.as_str()), ("A", "NEW"));
    // The old key now leads to the new one.
    store
        .commit(vec![oru("a2", Some(patient("A", "X", false)), &["2"], "")])
        .await
        .unwrap();
    assert_eq!(
        record_ids(store.as_ref(), "NEW").await.unwrap(),
        ["a2", "a1"]
    );
    assert_eq!(patient_keys(store.as_ref()).await, ["NEW"]);
}

/// Neither known: accepted, nothing moves, but the merge is recorded, so the prior key's
/// later messages are the survivor's.
pub async fn a_merge_of_two_unknown_patients_is_recorded_for_later_messages(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let stored = store
        .commit(vec![merge("m1", "B", "A", "A40")])
        .await
        .unwrap();
    let merge_id = new_id(&stored[0]);
    let note = summary(store.as_ref(), merge_id).await.merge.unwrap();
    assert_eq!((note.prior.as_str(), note.survivor.as_str()), ("A", "B"));
    store
        .commit(vec![oru("a1", Some(patient("A", "X", false)), &["1"], "")])
        .await
        .unwrap();
    assert_eq!(record_ids(store.as_ref(), "A").await, None);
    assert_eq!(record_ids(store.as_ref(), "B").await.unwrap(), ["a1"]);
    assert_eq!(patient_keys(store.as_ref()).await, ["B"]);
}

/// Each merge the store's state contradicts is kept as an error with its reason and the
/// refused ACK code, about no one, and changes nothing: no patient moves, none is created,
/// no merge is recorded (a later message under the prior key stays the prior's).
pub async fn merges_the_store_contradicts_are_refused_and_change_nothing(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let who = |key: &str| Some(patient(key, "X", false));
    store
        .commit(vec![
            oru("a1", who("A"), &["1"], ""),
            oru("b1", who("B"), &["2"], ""),
            oru("c1", who("C"), &["3"], ""),
            oru("d1", who("D"), &["4"], ""),
        ])
        .await
        .unwrap();
    // C into D is the one accepted merge: C is merged away, D a survivor.
    new_id(
        &store
            .commit(vec![merge("m0", "D", "C", "A40")])
            .await
            .unwrap()[0],
    );
    let before_patients = patient_keys(store.as_ref()).await;
    assert_eq!(before_patients, ["A", "B", "D"]);
    let (_, before_changes) = all_changes(store.as_ref()).await;

    let cases = [
        // MRG-1 names the survivor itself.
        (merge("r1", "A", "A", "A40"), "same patient"),
        // The prior unknown, the survivor known: PID-3 and MRG-1 swapped?
        (merge("r2", "A", "NOBODY", "A40"), "wrong way round"),
        // The prior was merged away already (into D).
        (merge("r3", "B", "C", "A40"), "already merged"),
        (merge("r4", "NEWCOMER", "C", "A47"), "already merged"),
        // The survivor was itself merged away.
        (merge("r5", "C", "A", "A40"), "merge into that one"),
    ];
    for (message, expected) in cases {
        let control_id = message.key.as_ref().unwrap().control_id.clone();
        let stored = store.commit(vec![message]).await.unwrap();
        let (id, reason) = match &stored[0] {
            Stored::Refused { id, reason } => (*id, reason.clone()),
            other => panic!("{control_id}: expected a refusal, got {other:?}"),
        };
        assert!(reason.contains(expected), "{control_id}: {reason}");
        let listed = summary(store.as_ref(), id).await;
        assert_eq!(listed.outcome, Outcome::Error, "{control_id}");
        assert_eq!(listed.reason.as_deref(), Some(reason.as_str()));
        assert_eq!(listed.ack_code.as_deref(), Some("AE"), "{control_id}");
        assert_eq!(listed.patient, None, "{control_id}");
        assert_eq!(listed.merge, None, "{control_id}");
        let detail = store.message(id).await.unwrap().unwrap();
        assert!(detail.observations.is_empty());
    }
    assert_eq!(patient_keys(store.as_ref()).await, before_patients);
    assert_eq!(record_ids(store.as_ref(), "A").await.unwrap(), ["a1"]);
    assert_eq!(record_ids(store.as_ref(), "B").await.unwrap(), ["b1"]);
    assert_eq!(record_ids(store.as_ref(), "NEWCOMER").await, None);
    // The refused messages changed no patient file.
    let later = store.changes_since(before_changes, 100).await.unwrap();
    assert!(later.patients.is_empty(), "{:?}", later.patients);
    // No merge was recorded: A's and NOBODY's later messages stay theirs.
    store
        .commit(vec![
            oru("a2", who("A"), &["5"], ""),
            oru("n1", who("NOBODY"), &["6"], ""),
        ])
        .await
        .unwrap();
    assert_eq!(record_ids(store.as_ref(), "A").await.unwrap(), ["a2", "a1"]);
    assert_eq!(record_ids(store.as_ref(), "NOBODY").await.unwrap(), ["n1"]);
    // A refused merge is judged again when it comes back, not taken as a duplicate.
    let again = store
        .commit(vec![merge("r2", "A", "NOBODY", "A40")])
        .await
        .unwrap();
    assert!(matches!(again[0], Stored::New { .. }), "{:?}", again[0]);
    assert_eq!(
        record_ids(store.as_ref(), "A").await.unwrap(),
        ["n1", "a2", "a1"]
    );
}

/// A merge committed in the same batch as messages of the prior patient (their index
/// entries still this transaction's own) takes those messages too, and the ones after it
/// in the batch go to the survivor.
pub async fn a_merge_in_the_same_batch_as_the_prior_patients_messages(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let who = |key: &str| Some(patient(key, "X", false));
    store
        .commit(vec![oru("b0", who("B"), &["1"], "")])
        .await
        .unwrap();
    let stored = store
        .commit(vec![
            oru("a1", who("A"), &["2"], ""),
            oru("b1", who("B"), &["3"], ""),
            oru("a2", who("A"), &["4", "5"], ""),
            merge("m1", "B", "A", "A40"),
            oru("a3", who("A"), &["6"], ""),
        ])
        .await
        .unwrap();
    assert!(
        stored.iter().all(|s| matches!(s, Stored::New { .. })),
        "{stored:?}"
    );
    let expected = ["a3", "a2", "a2", "b1", "a1", "b0"];
    assert_eq!(record_ids(store.as_ref(), "B").await.unwrap(), expected);
    assert_eq!(record_ids(store.as_ref(), "A").await, None);
    assert_eq!(patient_keys(store.as_ref()).await, ["B"]);
    let summaries = store.patients().await.unwrap();
    assert_eq!(summaries[0].n_observations, 6);
    // And so it stays once the index is read back from the database.
    drop(store);
    let store = open(dir.path(), &options());
    assert_eq!(record_ids(store.as_ref(), "B").await.unwrap(), expected);
    assert_eq!(record_ids(store.as_ref(), "A").await, None);
}

/// The change feed names the survivor and the prior patient of a merge (the prior's files
/// must go), also when the prior's own messages were read before.
pub async fn the_change_feed_reports_both_patients_of_a_merge(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let who = |key: &str| Some(patient(key, "X", false));
    store
        .commit(vec![
            oru("a1", who("A"), &["1"], ""),
            oru("b1", who("B"), &["2"], ""),
        ])
        .await
        .unwrap();
    let (_, before) = all_changes(store.as_ref()).await;
    store
        .commit(vec![merge("m1", "B", "A", "A40")])
        .await
        .unwrap();
    let changes = store.changes_since(before, 100).await.unwrap();
    let mut patients = changes.patients.clone();
    patients.sort();
    assert_eq!(patients, ["A", "B"]);
    assert!(changes.next > before);
    // The feed carries the merge on its message.
    let feed = store.feed(before, 100).await.unwrap();
    assert_eq!(feed.messages.len(), 1);
    assert_eq!(feed.messages[0].merged_from.as_deref(), Some("A"));
    assert_eq!(
        feed.messages[0].accepted_patient().map(|p| p.key.as_str()),
        Some("B")
    );
}

/// The prior patient's file positions stay while the exporter has not passed the merge
/// (its file is still there; the exporter may record it again), and go, for that exporter
/// only, in the transaction that moves its watermark past the merge.
pub async fn a_merged_patients_file_positions_go_when_the_watermark_passes_the_merge(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let who = |key: &str| Some(patient(key, "X", false));
    let stored = store
        .commit(vec![
            oru("a1", who("A"), &["1"], ""),
            oru("b1", who("B"), &["2"], ""),
        ])
        .await
        .unwrap();
    let (a1, b1) = (new_id(&stored[0]), new_id(&stored[1]));
    let at = |through, length| FilePosition { through, length };
    for exporter in ["json", "ndjson"] {
        store
            .set_export_progress(
                exporter,
                ChangeCursor::at(b1),
                vec![("A".into(), at(a1, 10)), ("B".into(), at(b1, 20))],
            )
            .await
            .unwrap();
    }
    let merge_id = new_id(
        &store
            .commit(vec![merge("m1", "B", "A", "A40")])
            .await
            .unwrap()[0],
    );
    let keys = |files: std::collections::HashMap<String, FilePosition>| {
        let mut keys: Vec<String> = files.into_keys().collect();
        keys.sort();
        keys
    };
    // An exporter that read the prior's messages before the merge records their file again,
    // with a watermark short of the merge: kept.
    store
        .set_export_progress(
            "json",
            ChangeCursor::at(merge_id - 1),
            vec![("A".into(), at(a1, 11))],
        )
        .await
        .unwrap();
    assert_eq!(
        keys(store.export_files("json", None).await.unwrap()),
        ["A", "B"]
    );
    // Past the merge: the prior's position goes, the survivor's is written.
    store
        .set_export_progress(
            "json",
            ChangeCursor::at(merge_id),
            vec![("B".into(), at(merge_id, 30))],
        )
        .await
        .unwrap();
    assert_eq!(keys(store.export_files("json", None).await.unwrap()), ["B"]);
    assert_eq!(
        store.export_files("json", None).await.unwrap()["B"],
        at(merge_id, 30)
    );
    // The other exporter has not passed it yet.
    assert_eq!(
        keys(store.export_files("ndjson", None).await.unwrap()),
        ["A", "B"]
    );
    // A watermark alone (no files) passing the merge is enough.
    store
        .set_export_watermark("ndjson", ChangeCursor::at(merge_id + 5))
        .await
        .unwrap();
    assert_eq!(
        keys(store.export_files("ndjson", None).await.unwrap()),
        ["B"]
    );
    // And it stays so after a reopen.
    drop(store);
    let store = open(dir.path(), &options());
    assert_eq!(keys(store.export_files("json", None).await.unwrap()), ["B"]);
    assert_eq!(
        keys(store.export_files("ndjson", None).await.unwrap()),
        ["B"]
    );
}

/// [`oru`] received at `received_ms` (its MSH-7 a second per message later, so that the
/// earlier ones' keys settle).
fn aged(control_id: &str, who: &str, received_ms: i64, n: i64) -> NewMessage {
    let mut message = oru(
        control_id,
        Some(patient(who, "EVE", false)),
        &["1", "2"],
        "",
    );
    message.received_at = jiff::Timestamp::from_millisecond(received_ms).unwrap();
    if let Some(key) = message.key.as_mut() {
        key.sent_ms = Some(1_704_067_200_000 + n * 1000);
    }
    message
}

/// A purge of everything received before `before_ms` that the `json` files hold.
fn purge_before(before_ms: i64) -> PurgeRequest {
    PurgeRequest {
        accepted_before_ms: Some(before_ms),
        refused_before_ms: None,
        exporters: vec!["json".into()],
        max_messages: 500,
        cursor: PurgeCursor::START,
        dry_run: false,
    }
}

async fn ids(store: &dyn Store) -> Vec<i64> {
    let mut ids: Vec<i64> = store
        .messages(MessageFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// A purge removes the messages received before the cutoff that the patient files hold,
/// with their records and their duplicate keys, and nothing else: not a newer message, not
/// one above the exporter's watermark (counted as held back, and still a duplicate when
/// sent again), not a refused frame unless asked; a dry run only counts.
pub async fn purges_remove_only_what_retention_allows(open: Open) {
    const OLD: i64 = 1_700_000_000_000;
    const NEW: i64 = OLD + 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let stored = store
        .commit(vec![
            aged("1", "P1", OLD, 1),
            aged("2", "P1", OLD + 1, 2),
            aged("3", "P2", OLD + 2, 3),
        ])
        .await
        .unwrap();
    let [a, b, c] = [0, 1, 2].map(|n| new_id(&stored[n]));
    let mut junk = rejected("9", "");
    junk.received_at = jiff::Timestamp::from_millisecond(OLD + 3).unwrap();
    let junk = new_id(&store.commit(vec![junk]).await.unwrap()[0]);
    let d = new_id(&store.commit(vec![aged("4", "P1", NEW, 20)]).await.unwrap()[0]);
    // The patient files hold a and b only.
    store
        .set_export_watermark("json", ChangeCursor::at(b))
        .await
        .unwrap();
    // Reopened: whatever a backend keeps in memory is written out.
    drop(store);
    let store = open(dir.path(), &options());

    let cutoff = NEW - 1;
    let dry = store
        .purge(PurgeRequest {
            dry_run: true,
            ..purge_before(cutoff)
        })
        .await
        .unwrap();
    assert_eq!((dry.n_accepted, dry.n_refused, dry.n_held_back), (2, 0, 1));
    assert_eq!(
        dry.held_by,
        Some(super::HoldReason::NotExported {
            exporter: "json".into(),
            through: b
        })
    );
    assert_eq!(ids(store.as_ref()).await, [a, b, c, junk, d]);

    let report = store.purge(purge_before(cutoff)).await.unwrap();
    assert_eq!(
        (report.n_accepted, report.n_refused, report.n_held_back),
        (2, 0, 1)
    );
    assert!(!report.more);
    assert_eq!(ids(store.as_ref()).await, [c, junk, d]);
    assert_eq!(store.stats().n_purged, 2);
    assert!(store.message(a).await.unwrap().is_none());
    // P1 keeps only d's records; the patient stays.
    assert_eq!(n_records(store.as_ref(), "P1").await, 2);
    assert_eq!(n_records(store.as_ref(), "P2").await, 2);
    let patients = store.patients().await.unwrap();
    assert_eq!(patients.len(), 2);
    // A kept message's key still recognises its retransmission; a removed one's is gone
    // with it (it is outside the window).
    assert_eq!(
        store.commit(vec![aged("3", "P2", NEW, 3)]).await.unwrap(),
        vec![Stored::Duplicate {
            id: c,
            verdict: Verdict::Accept
        }]
    );
    assert_eq!(
        store.commit(vec![aged("4", "P1", NEW, 20)]).await.unwrap(),
        vec![Stored::Duplicate {
            id: d,
            verdict: Verdict::Accept
        }]
    );
    let again = new_id(&store.commit(vec![aged("1", "P1", NEW, 1)]).await.unwrap()[0]);
    assert!(again > d);

    // Once the files hold c, it goes; the refused frame only when asked for.
    store
        .set_export_watermark("json", ChangeCursor::at(d))
        .await
        .unwrap();
    drop(store);
    let store = open(dir.path(), &options());
    let report = store.purge(purge_before(cutoff)).await.unwrap();
    assert_eq!(
        (report.n_accepted, report.n_refused, report.n_held_back),
        (1, 0, 0)
    );
    assert_eq!(report.held_by, None);
    assert_eq!(ids(store.as_ref()).await, [junk, d, again]);
    let report = store
        .purge(PurgeRequest {
            refused_before_ms: Some(cutoff),
            ..purge_before(cutoff)
        })
        .await
        .unwrap();
    assert_eq!((report.n_accepted, report.n_refused), (0, 1));
    assert_eq!(ids(store.as_ref()).await, [d, again]);
    assert!(
        store
            .messages(MessageFilter {
                rejected_only: true,
                ..MessageFilter::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

/// A purge step removes at most its batch and says there is more; the next goes on from
/// its cursor. Without patient files nothing bounds it. Ids are never handed out again,
/// also when every message is gone and the store is reopened.
pub async fn purges_go_in_bounded_steps_and_never_reuse_ids(open: Open) {
    const OLD: i64 = 1_700_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let batch: Vec<NewMessage> = (0..10)
        .map(|n| aged(&format!("{n}"), &format!("P{}", n % 3), OLD + n, n))
        .collect();
    let stored = store.commit(batch).await.unwrap();
    let last = new_id(&stored[9]);
    drop(store);
    let store = open(dir.path(), &options());
    let mut request = PurgeRequest {
        exporters: Vec::new(),
        max_messages: 3,
        ..purge_before(OLD + 1_000)
    };
    let mut steps = Vec::new();
    loop {
        let report = store.purge(request.clone()).await.unwrap();
        assert!(report.n_accepted <= 3);
        steps.push(report.n_accepted);
        if !report.more {
            break;
        }
        request.cursor = report.cursor;
    }
    assert_eq!(steps.iter().sum::<u64>(), 10, "{steps:?}");
    assert!(steps.len() >= 4, "{steps:?}");
    assert!(ids(store.as_ref()).await.is_empty());
    drop(store);
    let store = open(dir.path(), &options());
    let next = new_id(
        &store
            .commit(vec![aged("new", "P1", OLD + 5_000, 50)])
            .await
            .unwrap()[0],
    );
    assert!(next > last, "{next} after {last}");
}

/// One alarm of an `ORU^R40` as ingest extracts it.
pub fn alarm(index: u32, source: &str, state: &str, measured: bool) -> crate::alarm::AlarmData {
    crate::alarm::AlarmData {
        index,
        source: source.into(),
        type_code: "196670".into(),
        type_text: "MDC_EVT_LO_VAL_LT_LIM".into(),
        type_system: "MDC".into(),
        text: "SPO2 LOW".into(),
        priority: "high".into(),
        kind: "physiological".into(),
        state: state.into(),
        phase: "start".into(),
        inactivation: String::new(),
        flags: "PH~SP".into(),
        measurement: measured.then(|| crate::alarm::AlarmMeasurement {
            code: "150456".into(),
            code_text: "MDC_PULS_OXIM_SAT_O2".into(),
            value: "88".into(),
            numeric: Some(88.0),
            units: "262688^MDC_DIM_PERCENT".into(),
            limit: "90-100".into(),
        }),
        started_at: "2024-01-01T00:00:00Z".into(),
        started_ms: 1_704_067_200_000 + i64::from(index),
    }
}

/// An accepted `ORU^R40` with these alarms and no observations.
pub fn alarm_report(
    control_id: &str,
    patient: Option<PatientData>,
    alarms: Vec<crate::alarm::AlarmData>,
) -> NewMessage {
    let mut message = oru(control_id, patient, &[], "OBR|1\r");
    let content = message.content.as_mut().expect("oru has content");
    content.trigger = "R40".into();
    content.alarms = alarms;
    message
}

/// Alarms of accepted `ORU^R40`s read back whole, newest first, filtered by patient, state
/// (without regard to case), source device, paged by id; the feed's alarm reports carry
/// them in order; a refused report stores none; a report without a patient belongs to its
/// alarm's source; a purge takes them with their message.
pub async fn alarms_are_stored_read_filtered_and_purged(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let with_patient = alarm_report(
        "a1",
        Some(patient("P1", "EVE", false)),
        vec![
            alarm(0, "MON-1", "active", true),
            alarm(1, "MON-1", "inactive", false),
        ],
    );
    let without_patient = alarm_report("a2", None, vec![alarm(0, "MON-2", "latched", false)]);
    let mut refused = alarm_report("a3", None, vec![alarm(0, "MON-3", "active", false)]);
    refused.verdict = Verdict::Reject {
        reason: "message type not allowed".into(),
    };
    let stored = store
        .commit(vec![with_patient, without_patient, refused])
        .await
        .unwrap();
    let [m1, m2, _] = [0, 1, 2].map(|n| new_id(&stored[n]));

    let all = store
        .alarms(super::AlarmQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let summary: Vec<(i64, Option<&str>, &str, u32)> = all
        .iter()
        .map(|r| {
            (
                r.message_id,
                r.patient.as_deref(),
                r.alarm.source.as_str(),
                r.alarm.index,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (m2, None, "MON-2", 0),
            (m1, Some("P1"), "MON-1", 1),
            (m1, Some("P1"), "MON-1", 0)
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(all[2].alarm, alarm(0, "MON-1", "active", true));
    assert_eq!(all[0].alarm, alarm(0, "MON-2", "latched", false));
    assert_eq!(
        all[0].received_at,
        jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap()
    );

    let query =
        |patient: Option<&str>, state: Option<&str>, device: Option<&str>| super::AlarmQuery {
            patient: patient.map(str::to_owned),
            state: state.map(str::to_owned),
            device: device.map(str::to_owned),
            before: None,
            limit: 10,
        };
    let ids = |rows: Vec<super::AlarmRow>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    let by_patient = store.alarms(query(Some("P1"), None, None)).await.unwrap();
    assert_eq!(ids(by_patient), [all[1].id, all[2].id]);
    let active = store
        .alarms(query(None, Some("ACTIVE"), None))
        .await
        .unwrap();
    assert_eq!(ids(active), [all[2].id]);
    let by_device = store
        .alarms(query(None, None, Some("MON-2")))
        .await
        .unwrap();
    assert_eq!(ids(by_device), [all[0].id]);
    let page = store
        .alarms(super::AlarmQuery {
            before: Some(all[0].id),
            limit: 1,
            ..query(None, None, None)
        })
        .await
        .unwrap();
    assert_eq!(ids(page), [all[1].id]);

    let feed = store.feed(ChangeCursor::START, 10).await.unwrap();
    let alarms_of = |id: i64| {
        feed.messages
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.alarms.clone())
            .unwrap()
    };
    assert_eq!(
        alarms_of(m1),
        [
            alarm(0, "MON-1", "active", true),
            alarm(1, "MON-1", "inactive", false)
        ]
    );
    assert_eq!(alarms_of(m2), [alarm(0, "MON-2", "latched", false)]);
    assert!(feed.messages[2].alarms.is_empty(), "a refused report");
    let (_, patient_feed) = store.patient_feed("P1", 10).await.unwrap().unwrap();
    assert_eq!(patient_feed[0].alarms.len(), 2);
    // The report without a patient is its alarm source's; the refused one is no one's.
    let devices = store.device_feeds(10, 10).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0][0].id, m2);
    assert_eq!(devices[0][0].alarms, [alarm(0, "MON-2", "latched", false)]);
    assert_eq!(store.patients().await.unwrap()[0].n_observations, 0);

    let head = store.feed_head().await.unwrap();
    store.set_export_watermark("json", head).await.unwrap();
    // Reopened: whatever a backend keeps in memory (SQLite's pending keys) is written out.
    drop(store);
    let store = open(dir.path(), &options());
    let report = store
        .purge(purge_before(1_700_000_000_123 + 3_600_000))
        .await
        .unwrap();
    assert_eq!(report.n_accepted, 2, "{report:?}");
    assert!(
        store
            .alarms(query(None, None, None))
            .await
            .unwrap()
            .is_empty()
    );
}

/// A marked value (`crate::marks`) reads back with its mark and never as a number,
/// whatever number it was given; an unmarked one beside it is untouched; no trend has it.
pub async fn marked_values_read_back_marked_and_never_as_numbers(open: Open) {
    use crate::marks::Mark;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let mut message = oru("1", Some(patient("P1", "EVE", false)), &["-999", "90"], "");
    message.content.as_mut().unwrap().observations[0].mark = Some(Mark::Placeholder);
    let id = new_id(&store.commit(vec![message]).await.unwrap()[0]);
    let marked = ObservationData {
        mark: Some(Mark::Placeholder),
        numeric: None,
        ..observation(0, "-999")
    };
    let expected = [marked, observation(1, "90")];

    let records = store.patient_records("P1", None).await.unwrap().unwrap();
    let read: Vec<ObservationData> = records
        .records
        .iter()
        .map(|r| r.observation.clone())
        .collect();
    assert_eq!(read, expected);
    let detail = store.message(id).await.unwrap().unwrap();
    assert_eq!(detail.observations, expected);
    let feed = store.feed(ChangeCursor::START, 10).await.unwrap();
    assert_eq!(feed.messages[0].observations, expected);
    let trends = store
        .trends(
            "P1",
            TrendQuery {
                code: None,
                since_ms: 0,
                until_ms: 2_000_000_000_000,
                bucket_ms: 1_000_000_000_000,
            },
        )
        .await
        .unwrap()
        .unwrap();
    let counts: Vec<u64> = trends
        .iter()
        .flat_map(|s| s.buckets.iter().map(|b| b.count))
        .collect();
    assert_eq!(counts, [1]);
}

/// Accepted observations without a patient are their device's (the first OBX-18.1): its
/// records newest first, limited, with its location; its feed without a patient; an
/// unknown device has none, and a patient's messages are no device's.
pub async fn observations_without_a_patient_are_their_devices(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &options());
    let stored = store
        .commit(vec![
            oru("1", None, &["5", "6"], ""),
            oru("2", Some(patient("P1", "EVE", false)), &["7"], ""),
            oru("3", None, &["8"], ""),
        ])
        .await
        .unwrap();
    let [first, _, last] = [0, 1, 2].map(|n| new_id(&stored[n]));
    let device = "0012345678ABCDEF";

    let records = store.device_records(device, None).await.unwrap().unwrap();
    assert_eq!(records.device, device);
    assert_eq!(records.location.as_deref(), Some("ICU^1"));
    let read: Vec<(i64, String)> = records
        .records
        .iter()
        .map(|r| (r.message_id, r.observation.value.clone()))
        .collect();
    assert_eq!(
        read,
        [
            (last, "8".to_string()),
            (first, "5".to_string()),
            (first, "6".to_string())
        ]
    );
    let limited = store
        .device_records(device, Some(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(limited.records.len(), 2);
    assert!(
        store
            .device_records("NO-SUCH", None)
            .await
            .unwrap()
            .is_none()
    );

    let feeds = store.device_feeds(10, 10).await.unwrap();
    assert_eq!(feeds.len(), 1);
    let ids: Vec<i64> = feeds[0].iter().map(|m| m.id).collect();
    assert_eq!(ids, [last, first]);
    assert!(feeds[0].iter().all(|m| m.patient.is_none()));
    assert_eq!(store.device_feeds(10, 1).await.unwrap()[0].len(), 1);
    assert!(store.device_feeds(0, 10).await.unwrap().is_empty());
}
