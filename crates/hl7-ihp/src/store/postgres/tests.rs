//! The PostgreSQL store's tests: the store contract against a real server
//! (`testdb.rs`), and what several receivers on one database need.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::testdb;
use super::{PgStore, PostgresLocation};
use crate::store::{ObservationData, Store, StoreOptions};

/// The database a test folder's store lives in: a fresh one the first time, the same one
/// when the folder is opened again (the contract reopens stores).
fn database_for(dir: &Path) -> Option<String> {
    static DATABASES: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
    let server = testdb::server()?;
    let mut databases = DATABASES.lock().unwrap();
    let databases = databases.get_or_insert_with(HashMap::new);
    let name = databases
        .entry(dir.to_path_buf())
        .or_insert_with(|| server.create_database());
    Some(server.url(name))
}

fn open(dir: &Path, options: &StoreOptions) -> Option<Arc<dyn Store>> {
    let url = database_for(dir)?;
    let location = PostgresLocation::parse(&url).expect("the test server's URL");
    Some(Arc::new(
        PgStore::open(&location, options).expect("open the PostgreSQL store"),
    ))
}

// The whole store contract, the same list as SQLite's; each test skipped (one line,
// passing; failing under `CI=true`) without PostgreSQL binaries.
crate::store_contract!(
    |dir: &Path, options: &StoreOptions| -> Arc<dyn Store> {
        open(dir, options).expect("the test server runs (checked first)")
    },
    skip_unless = testdb::server().is_some()
);

use crate::store::contract::{new_id, oru, patient};
use crate::store::{ChangeCursor, Health, Stored, Verdict};

/// The test server, the database's name and two stores on it.
type TwoReceivers = (
    &'static testdb::TestServer,
    String,
    Arc<dyn Store>,
    Arc<dyn Store>,
);

/// Two stores on one database: what two receivers behind a balancer are.
fn two_receivers() -> Option<TwoReceivers> {
    let server = testdb::server()?;
    let db = server.create_database();
    let location = PostgresLocation::parse(&server.url(&db)).unwrap();
    let options = StoreOptions::default();
    let a: Arc<dyn Store> = Arc::new(PgStore::open(&location, &options).unwrap());
    let b: Arc<dyn Store> = Arc::new(PgStore::open(&location, &options).unwrap());
    Some((server, db, a, b))
}

/// A retransmission that reaches the other receiver is a duplicate there: the unique
/// index, not a receiver's memory, recognises it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_recognised_across_receivers() {
    let Some((_, _, a, b)) = two_receivers() else {
        return;
    };
    let message = oru("1", Some(patient("P1", "EVE", false)), &["1"], "");
    let first = new_id(&a.commit(vec![message.clone()]).await.unwrap()[0]);
    assert_eq!(
        b.commit(vec![message]).await.unwrap(),
        vec![Stored::Duplicate {
            id: first,
            verdict: Verdict::Accept
        }]
    );
    assert_eq!(b.messages(Default::default()).await.unwrap().len(), 1);
}

/// The same messages reaching both receivers at the same moment (a sender that times out
/// and sends again through the balancer): each stored once, whichever commits first; the
/// other's answer is a duplicate of it. A receiver's lookups run before it takes the feed
/// lock, so the other may store a key in between: the unique index fails that transaction
/// and the writer writes the group again with the lock taken first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_on_both_receivers_at_once_is_stored_once() {
    let Some((_, _, a, b)) = two_receivers() else {
        return;
    };
    const N: usize = 60;
    let mut answers = Vec::new();
    for n in 0..N {
        let message = oru(
            &format!("race{n}"),
            Some(patient("P1", "EVE", false)),
            &["1"],
            "",
        );
        let (x, y) = tokio::join!(a.commit(vec![message.clone()]), b.commit(vec![message]));
        answers.push((x.unwrap().remove(0), y.unwrap().remove(0)));
    }
    let stored = a.messages(Default::default()).await.unwrap();
    assert_eq!(stored.len(), N, "each message once");
    for (n, (x, y)) in answers.into_iter().enumerate() {
        let (new, other) = match (&x, &y) {
            (Stored::New { id }, other) | (other, Stored::New { id }) => (*id, other.clone()),
            _ => panic!("message {n}: neither receiver stored it: {x:?}, {y:?}"),
        };
        assert_eq!(
            other,
            Stored::Duplicate {
                id: new,
                verdict: Verdict::Accept
            },
            "message {n}"
        );
    }
    let patients = a.patients().await.unwrap();
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0].n_observations, N as u64, "counted once each");
}

/// Two receivers committing at once: every message once, ids distinct, and a reader that
/// follows the feed while they write (taking "everything after the last id seen") misses
/// none, because ids are handed out in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_is_in_commit_order_with_two_receivers_writing() {
    let Some((_, _, a, b)) = two_receivers() else {
        return;
    };
    const N_TASKS: usize = 8;
    const N_EACH: usize = 40;
    let mut tasks = Vec::new();
    for task in 0..N_TASKS {
        let store = Arc::clone(if task % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move {
            for n in 0..N_EACH {
                let who = patient(&format!("P{}", task % 3), "EVE", false);
                let message = oru(&format!("{task}-{n}"), Some(who), &["1"], "");
                new_id(&store.commit(vec![message]).await.unwrap()[0]);
            }
        }));
    }
    let follower = Arc::clone(&a);
    let follow = tokio::spawn(async move {
        let mut cursor = ChangeCursor::START;
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while seen.len() < N_TASKS * N_EACH {
            assert!(
                std::time::Instant::now() < deadline,
                "the feed stopped at {}",
                seen.len()
            );
            let feed = follower.feed(cursor, 7).await.unwrap();
            seen.extend(feed.messages.iter().map(|m| m.id));
            cursor = feed.next;
            if feed.messages.is_empty() {
                tokio::task::yield_now().await;
            }
        }
        seen
    });
    for task in tasks {
        task.await.unwrap();
    }
    let seen = follow.await.unwrap();
    let all: Vec<i64> = b
        .feed(ChangeCursor::START, 10_000)
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(all.len(), N_TASKS * N_EACH);
    assert_eq!(seen, all, "the follower saw every message, in order, once");
    let stored: u64 = [&a, &b].iter().map(|s| s.stats().n_stored).sum();
    assert_eq!(stored, (N_TASKS * N_EACH) as u64);
}

/// A commit on one receiver wakes what follows the feed on the other (LISTEN/NOTIFY), long
/// before the live view's 30 s poll would have read it; each later one too. (Its own
/// commits are told by its ingest; the listener leaves them out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_receiver_wakes_the_followers_of_the_other() {
    let Some((_server, _db, a, b)) = two_receivers() else {
        return;
    };
    let events = crate::events::Events::new();
    let mut woken = events.subscribe();
    a.watch_other_writers(events.clone());
    // The listener's first wake-up says it listens: whatever came before is read then.
    let deadline = std::time::Duration::from_secs(20);
    tokio::time::timeout(deadline, woken.changed())
        .await
        .expect("the listener started");
    for n in 0..3 {
        let before = woken.n_commits();
        new_id(
            &b.commit(vec![oru(&format!("w{n}"), None, &["1"], "")])
                .await
                .unwrap()[0],
        );
        tokio::time::timeout(deadline, woken.changed())
            .await
            .expect("a commit of the other receiver woke this one's followers");
        assert!(woken.n_commits() > before);
    }
}

/// The database going away fails commits (the devices get a reject) and `/healthz`, and
/// storing resumes by itself when it comes back, without reopening the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_fails_commits_and_recovers() {
    let Some((server, db, a, _b)) = two_receivers() else {
        return;
    };
    new_id(&a.commit(vec![oru("0", None, &["1"], "")]).await.unwrap()[0]);
    // Nobody may connect, and everyone connected is thrown out.
    server.psql(
        "postgres",
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"),
    );
    server.psql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}'"
        ),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut n = 0;
    loop {
        n += 1;
        let result = a
            .commit(vec![oru(&format!("down{n}"), None, &["1"], "")])
            .await;
        if result.is_err() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "commits kept working");
    }
    assert!(
        matches!(a.health(), Health::Failing { .. }),
        "{:?}",
        a.health()
    );
    server.psql(
        "postgres",
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(stored) = a.commit(vec![oru("back", None, &["1"], "")]).await {
            new_id(&stored[0]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "storing did not resume"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(a.health(), Health::Ok);
}

/// A merge made through one receiver holds for the other at once: its next message under
/// the prior key joins the survivor, and the same merge sent to it again is a duplicate
/// (the duplicate index, not memory), not judged again and refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_on_one_receiver_holds_on_the_other() {
    let Some((_, _, a, b)) = two_receivers() else {
        return;
    };
    let who = |key: &str| Some(patient(key, "X", false));
    a.commit(vec![
        oru("a1", who("A"), &["1"], ""),
        oru("b1", who("B"), &["2"], ""),
    ])
    .await
    .unwrap();
    let merge = crate::store::contract::merge("m1", "B", "A", "A40");
    let merge_id = new_id(&a.commit(vec![merge.clone()]).await.unwrap()[0]);
    assert_eq!(
        b.commit(vec![merge]).await.unwrap(),
        vec![Stored::Duplicate {
            id: merge_id,
            verdict: Verdict::Accept
        }]
    );
    let later = new_id(
        &b.commit(vec![oru("a2", who("A"), &["3"], "")])
            .await
            .unwrap()[0],
    );
    let detail = a.message(later).await.unwrap().unwrap();
    assert_eq!(detail.summary.patient.as_deref(), Some("B"));
    let keys: Vec<String> = a
        .patients()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, ["B"]);
    let records = b.patient_records("B", None).await.unwrap().unwrap();
    let ids: Vec<&str> = records
        .records
        .iter()
        .map(|r| r.control_id.as_str())
        .collect();
    assert_eq!(ids, ["a2", "b1", "a1"]);
}

/// A database of schema version 1 with a message on it is migrated to the current version
/// at start: the old row reads back (an observation without a `mark` field has no mark; a
/// marked one, as version 2 wrote it, keeps its mark through version 3's compact layout), has
/// no device key, and the store then writes alarms and device keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated_and_its_rows_read_back() {
    use crate::store::StoreRead as _;
    let Some(server) = testdb::server() else {
        return;
    };
    let db = server.create_database();
    server.psql(
        &db,
        "CREATE TABLE schema_version (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    );
    server.psql(&db, include_str!("migrations/0001_schema.sql"));
    server.psql(&db, "INSERT INTO schema_version (version) VALUES (1)");
    let observation = crate::store::contract::observation(0, "42");
    let mut old =
        serde_json::to_value(JsonObservation::from(&observation)).expect("an observation as JSON");
    old.as_object_mut().expect("an object").remove("mark");
    // Version 2 added a mark to a value that is not a measurement; version 3 keeps it.
    let mut marked = crate::store::contract::observation(1, "-999");
    marked.mark = Some(crate::marks::Mark::Placeholder);
    marked.numeric = None;
    let marked_json =
        serde_json::to_value(JsonObservation::from(&marked)).expect("an observation as JSON");
    server.psql(
        &db,
        &format!(
            "UPDATE counters SET value = 1 WHERE name = 'message_id';
             INSERT INTO messages (id, received_ms, peer, hash, outcome, message_type, device,
                 n_observations, observations, raw)
             VALUES (1, 1700000000123, 'peer', '\\x00', 'accepted', 'ORU^R01', 'DEV', 2,
                 '[{old}, {marked_json}]'::jsonb, 'MSH|')"
        ),
    );

    let location = PostgresLocation::parse(&server.url(&db)).unwrap();
    let store = PgStore::open(&location, &StoreOptions::default()).unwrap();
    assert_eq!(
        server.psql(&db, "SELECT max(version) FROM schema_version"),
        super::schema::supported().to_string(),
        "migrated to the newest version"
    );
    let detail = store.message(1).await.unwrap().unwrap();
    assert_eq!(detail.observations, [observation, marked]);
    // SQL users read them through the `observations` view.
    assert_eq!(
        server.psql(
            &db,
            "SELECT position, code, value, numeric, mark FROM observations ORDER BY position"
        ),
        format!(
            "0|{}|42|42|\n1|{}|-999||placeholder",
            detail.observations[0].code, detail.observations[1].code
        )
    );
    assert_eq!(
        server.psql(
            &db,
            "SELECT count(*) FROM messages WHERE device_key IS NOT NULL"
        ),
        "0"
    );

    let report = crate::store::contract::alarm_report(
        "a1",
        None,
        vec![crate::store::contract::alarm(0, "MON-1", "active", true)],
    );
    let id = new_id(&store.commit(vec![report]).await.unwrap()[0]);
    assert_eq!(id, 2);
    let alarms = store
        .alarms(crate::store::AlarmQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(alarms.len(), 1);
    assert_eq!(
        server.psql(&db, "SELECT device_key FROM messages WHERE id = 2"),
        "MON-1"
    );
}

/// One observation as versions 1 and 2 kept it in the `observations` column (a `jsonb`
/// object per observation), for the migration tests.
#[derive(serde::Serialize, serde::Deserialize)]
struct JsonObservation {
    index: u32,
    value_type: String,
    code: String,
    code_text: String,
    code_system: String,
    sub_id: String,
    value: String,
    numeric: Option<f64>,
    units: String,
    units_text: String,
    reference_range: String,
    abnormal_flags: String,
    status: String,
    observed_at: String,
    observed_ms: i64,
    equipment: String,
    /// Why the value is not a measurement (`crate::marks`), by its name; absent when it is
    /// one (and in every row written before marks existed). A name this version does not
    /// know reads as no mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mark: Option<String>,
}

impl From<&ObservationData> for JsonObservation {
    fn from(o: &ObservationData) -> Self {
        JsonObservation {
            index: o.index,
            value_type: o.value_type.clone(),
            code: o.code.clone(),
            code_text: o.code_text.clone(),
            code_system: o.code_system.clone(),
            sub_id: o.sub_id.clone(),
            value: o.value.clone(),
            // A marked value is never a number, whatever the caller left in `numeric` (as
            // SQLite's writer): no trend point or latest vital from it.
            numeric: o.numeric.filter(|n| n.is_finite() && o.mark.is_none()),
            units: o.units.clone(),
            units_text: o.units_text.clone(),
            reference_range: o.reference_range.clone(),
            abnormal_flags: o.abnormal_flags.clone(),
            status: o.status.clone(),
            observed_at: o.observed_at.clone(),
            observed_ms: o.observed_ms,
            equipment: o.equipment.clone(),
            mark: o.mark.map(|m| m.name().to_owned()),
        }
    }
}
