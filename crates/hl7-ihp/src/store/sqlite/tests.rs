//! The SQLite store's own tests: its writer, indexes, checkpoints and files.

use super::*;
use crate::store::contract::{new_id, oru, patient};
use crate::store::{SQLITE_FILE_NAME, StoreOptions};

crate::store_contract!(|dir: &Path, options: &StoreOptions| -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(
            &dir.join(SQLITE_FILE_NAME),
            SqliteOptions {
                dedupe: options.dedupe,
                ..SqliteOptions::default()
            },
        )
        .expect("open the store"),
    )
});

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join(SQLITE_FILE_NAME), SqliteOptions::default())
        .expect("open the store")
}

fn read_only(dir: &Path) -> Result<SqliteReader, StoreError> {
    SqliteReader::open(&dir.join(SQLITE_FILE_NAME))
}

fn sql(dir: &Path) -> Connection {
    Connection::open(dir.join(SQLITE_FILE_NAME)).unwrap()
}

fn count(conn: &Connection, query: &str) -> i64 {
    conn.query_row(query, [], |row| row.get(0)).unwrap()
}

/// Commits each message as its own batch while the writer is held, waits until every
/// batch is queued behind it, then lets the writer go and waits for all of them.
async fn commit_behind_a_held_writer(store: &SqliteStore, messages: Vec<NewMessage>) {
    let (release, held) = std::sync::mpsc::channel();
    store.send(Request::Hold(held)).await.unwrap();
    let n = messages.len();
    let tasks: Vec<_> = messages
        .into_iter()
        .map(|message| {
            let store = store.clone();
            tokio::spawn(async move { store.commit(vec![message]).await })
        })
        .collect();
    let requests = store.inner.requests.clone().unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while requests.max_capacity() - requests.capacity() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the batches are queued");
    drop(release);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

/// Runs SQL on the writer's connection, between transactions.
async fn exec(store: &SqliteStore, sql: &str) {
    let (reply, answer) = oneshot::channel();
    store
        .send(Request::Exec {
            sql: sql.into(),
            reply,
        })
        .await
        .unwrap();
    answer.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_batches_share_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let messages = (0..64)
        .map(|n| {
            oru(
                &n.to_string(),
                Some(patient("P1", "EVE", false)),
                &["1"],
                "",
            )
        })
        .collect();
    let before = store.stats().n_transactions;
    commit_behind_a_held_writer(&store, messages).await;
    assert_eq!(store.stats().n_transactions, before + 1);
    assert_eq!(store.stats().n_stored, 64);
}

#[tokio::test]
async fn observations_without_a_patient_belong_to_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let stored = store
        .commit(vec![oru("1", None, &["5", "6"], "")])
        .await
        .unwrap();
    let id = new_id(&stored[0]);
    assert!(store.patients().await.unwrap().is_empty());
    let conn = sql(dir.path());
    let device: String = conn
        .query_row(
            "SELECT device FROM messages WHERE id = ?1 AND patient IS NULL",
            [id],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(device, "DEV");
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM observations WHERE patient IS NULL AND message = 1"
        ),
        2
    );
    // The device's time series is indexed.
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE device = 'DEV' AND patient IS NULL",
            [],
            |row| row.get(3),
        )
        .unwrap();
    assert!(plan.contains("messages_by_device"), "{plan}");
    let changes = store.changes_since(ChangeCursor::START, 10).await.unwrap();
    assert!(changes.patients.is_empty());
    assert_eq!(changes.next, ChangeCursor::at(id));
}

#[test]
fn pending_keys_move_by_their_second_without_a_time_at_once_and_after_the_longest_wait() {
    let start = Instant::now();
    let mut keys = PendingKeys {
        latest: NO_TIME,
        ..PendingKeys::default()
    };
    keys.add((NO_TIME, 5, 0, 1), start);
    keys.add((1_000_000, 9, 0, 2), start);
    keys.add((1_000_500, 3, 0, 3), start);
    assert_eq!(keys.take_settled(false, start), [(NO_TIME, 5, 0, 1)]);
    // A device whose clock runs far ahead makes every earlier second settle ...
    keys.add((9_000_000_000, 1, 0, 4), start);
    assert_eq!(
        keys.take_settled(false, start),
        [(1_000_000, 9, 0, 2), (1_000_500, 3, 0, 3)]
    );
    assert_eq!(keys.first_message(), Some(4));
    // ... and its own key moves once it has waited long enough.
    assert!(
        keys.take_settled(false, start + KEY_MAX_WAIT / 2)
            .is_empty()
    );
    assert_eq!(
        keys.take_settled(false, start + KEY_MAX_WAIT),
        [(9_000_000_000, 1, 0, 4)]
    );
    assert_eq!(keys.first_message(), None);
    assert!(keys.order.is_empty());
}

#[tokio::test]
async fn retransmissions_are_found_while_their_keys_wait_and_after_they_moved() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let duplicate_of = |id| {
        vec![Stored::Duplicate {
            id,
            verdict: Verdict::Accept,
        }]
    };
    let first = oru("A", None, &["1"], "");
    let a = new_id(&store.commit(vec![first.clone()]).await.unwrap()[0]);
    assert_eq!(
        store.commit(vec![first.clone()]).await.unwrap(),
        duplicate_of(a)
    );
    let keys = |dir: &Path| count(&sql(dir), "SELECT count(*) FROM message_keys");
    assert_eq!(
        keys(dir.path()),
        0,
        "a key waits while its second is recent"
    );

    // A message sent ten seconds later settles the first one's second.
    let mut later = oru("B", None, &["2"], "");
    later.key.as_mut().unwrap().sent_ms = Some(1_704_067_210_000);
    let b = new_id(&store.commit(vec![later.clone()]).await.unwrap()[0]);
    assert_eq!(keys(dir.path()), 1);
    assert_eq!(
        store.commit(vec![first.clone()]).await.unwrap(),
        duplicate_of(a)
    );
    drop(store);
    assert_eq!(keys(dir.path()), 2, "stopping moves every key");

    // A stop that left keys waiting: the next start finds them in the messages.
    sql(dir.path())
        .execute_batch(
            "DELETE FROM message_keys; \
             UPDATE meta SET value = 0 WHERE name = 'key_index_through';",
        )
        .unwrap();
    let store = open(dir.path());
    assert_eq!(store.commit(vec![first]).await.unwrap(), duplicate_of(a));
    assert_eq!(store.commit(vec![later]).await.unwrap(), duplicate_of(b));
}

/// Message ids of a patient's records, newest first, each message once.
async fn record_messages(store: &dyn StoreRead, key: &str) -> Vec<i64> {
    let records = store.patient_records(key, None).await.unwrap().unwrap();
    let mut ids: Vec<i64> = records.records.iter().map(|r| r.message_id).collect();
    assert!(ids.windows(2).all(|w| w[0] >= w[1]), "{ids:?}");
    ids.dedup();
    ids
}

/// Message ids of a patient's feed, newest first; checked against their records, which
/// also read the same page by page through `observations`, and their trend.
async fn feed_messages(store: &dyn StoreRead, key: &str) -> Vec<i64> {
    let (_, messages) = store.patient_feed(key, usize::MAX).await.unwrap().unwrap();
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, record_messages(store, key).await);
    let records = store.patient_records(key, None).await.unwrap().unwrap();
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let query = crate::store::ObservationQuery {
            code: None,
            since_ms: None,
            until_ms: None,
            after,
            limit: 3,
        };
        let page = store.observations(key, query).await.unwrap().unwrap();
        let Some(last) = page.last() else { break };
        after = Some(crate::store::RecordPosition {
            message_id: last.message_id,
            index: last.observation.index,
        });
        paged.extend(page);
    }
    assert_eq!(paged, records.records);
    // The fixtures' values are observed in one second of 2002.
    let query = crate::store::TrendQuery {
        code: None,
        since_ms: 0,
        until_ms: i64::MAX / 2,
        bucket_ms: 1000,
    };
    let trends = store.trends(key, query).await.unwrap().unwrap();
    let n_values: u64 = trends
        .iter()
        .flat_map(|s| &s.buckets)
        .map(|b| b.count)
        .sum();
    let n_numeric = records
        .records
        .iter()
        .filter(|r| r.observation.numeric.is_some())
        .count();
    assert_eq!(n_values, n_numeric as u64);
    ids
}

#[tokio::test]
async fn records_come_from_the_tail_and_the_table_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ids = Vec::new();
    // Enough for P1's entries to move into the table twice, P2's to stay in the tail.
    for n in 0..(2 * super::tail::FLUSH_ENTRIES + 5) {
        let message = oru(
            &n.to_string(),
            Some(patient("P1", "EVE", false)),
            &["1", "2"],
            "",
        );
        ids.push(new_id(&store.commit(vec![message]).await.unwrap()[0]));
        if n % 10 == 0 {
            let other = oru(
                &format!("o{n}"),
                Some(patient("P2", "ADA", false)),
                &["9"],
                "",
            );
            store.commit(vec![other]).await.unwrap();
        }
    }
    ids.reverse();
    assert_eq!(feed_messages(&store, "P1").await, ids);
    let (_, newest) = store.patient_feed("P1", 3).await.unwrap().unwrap();
    assert_eq!(
        newest.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    let moved = count(
        &sql(dir.path()),
        "SELECT count(*) FROM patient_messages WHERE patient = 1",
    );
    assert_eq!(moved, 2 * super::tail::FLUSH_ENTRIES as i64);
    assert_eq!(record_messages(&store, "P1").await, ids);
    let limited = store.patient_records("P1", Some(5)).await.unwrap().unwrap();
    assert_eq!(limited.records.len(), 5);
    assert_eq!(limited.records[0].message_id, ids[0]);
    let summaries = store.patients().await.unwrap();
    assert_eq!(summaries[0].n_observations, 2 * ids.len() as u64);
    assert_eq!(summaries[1].n_observations, 4);

    // Stopping moves the whole tail into the table; a restart finds the same.
    drop(store);
    assert_eq!(
        count(&sql(dir.path()), "SELECT count(*) FROM patient_messages"),
        ids.len() as i64 + 4
    );
    let store = open(dir.path());
    assert_eq!(record_messages(&store, "P1").await, ids);
    assert_eq!(store.patients().await.unwrap(), summaries);
}

#[tokio::test]
async fn another_process_sees_what_was_written_after_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path());
    let first = oru("1", Some(patient("P1", "EVE", false)), &["1"], "");
    writer.commit(vec![first]).await.unwrap();
    // Like `hl7-ihp show` while a receiver runs: a read-only store over the database. (A
    // second writing store is refused: see the test below.)
    let inspector = read_only(dir.path()).unwrap();
    for n in 2..=40 {
        let message = oru(
            &n.to_string(),
            Some(patient("P1", "EVE", false)),
            &["1"],
            "",
        );
        writer.commit(vec![message]).await.unwrap();
    }
    let expected: Vec<i64> = (1..=40).rev().collect();
    for store in [&inspector as &dyn StoreRead, &writer] {
        assert_eq!(record_messages(store, "P1").await, expected);
        assert_eq!(feed_messages(store, "P1").await, expected);
        assert_eq!(store.patients().await.unwrap()[0].n_observations, 40);
        assert_eq!(store.feed_head().await.unwrap(), ChangeCursor::at(40));
        let feed = store.feed(ChangeCursor::at(30), 100).await.unwrap();
        assert_eq!(feed.messages.len(), 10);
        assert_eq!(feed.next, ChangeCursor::at(40));
        let filter = MessageFilter {
            patient: Some("P1".into()),
            before_id: Some(40),
            ..MessageFilter::default()
        };
        let listed = store.messages(filter).await.unwrap();
        assert_eq!(listed.len(), 39);
        assert_eq!(listed[0].patient.as_deref(), Some("P1"));
        let detail = store.message(40).await.unwrap().unwrap();
        assert_eq!(detail.summary.control_id, "40");
    }
    drop(writer);
    assert_eq!(record_messages(&inspector, "P1").await, expected);
    // The next writer finds them all too, from the table and the reloaded tail.
    let next = open(dir.path());
    assert_eq!(record_messages(&next, "P1").await, expected);
}

#[test]
fn a_read_only_store_needs_this_programs_schema() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_only(dir.path()).is_err(), "no database yet");
    drop(open(dir.path()));
    sql(dir.path())
        .execute_batch("PRAGMA user_version = 1")
        .unwrap();
    let error = read_only(dir.path()).err().unwrap();
    assert!(error.to_string().contains("upgrades it"), "{error}");
}

#[tokio::test]
async fn a_version_1_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let message = oru("OLD1", Some(patient("P1", "EVE", false)), &["182", "7"], "");
    let key = message.key.clone().unwrap();
    {
        let conn = sql(dir.path());
        conn.execute_batch(MIGRATIONS[0].sql).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO patients VALUES (1, 'P1', 'P1', 'AUTH', 'P1^^^AUTH^MR', 'EVE', \
             '1970-01-01', 'F', 0, 0)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO messages VALUES (1, 1700000000123, '127.0.0.1:40000', 'DEV', \
             'FAC', 'OLD1', ?1, 'accepted', NULL, 'ORU^R01', '2.6', 'ICU^1', 'DEV', 1, \
             1, 2, ?2, ?3, ?4)",
            params![
                &message.hash[..],
                key_hash(&key),
                hash_prefix(&message.hash),
                message.raw
            ],
        )
        .unwrap();
        for (id, value) in [(1, "182"), (2, "7")] {
            conn.execute(
                "INSERT INTO observations VALUES (?1, 1, 1, ?2, 'NM', '1554-5', 'GLUCOSE', \
                 'LN', '', ?3, ?3, 'mg/dl', '', '70_105', 'H', 'F', \
                 '2002-02-15T07:30:00', 1013758200000, 'EQ')",
                params![id, id - 1, value],
            )
            .unwrap();
        }
    }
    let store = open(dir.path());
    let records = store.patient_records("P1", None).await.unwrap().unwrap();
    let values: Vec<&str> = records
        .records
        .iter()
        .map(|r| r.observation.value.as_str())
        .collect();
    assert_eq!(values, ["182", "7"]);
    assert_eq!(records.records[0].observation.numeric, Some(182.0));
    assert_eq!(records.records[1].observation.index, 1);
    let conn = sql(dir.path());
    assert_eq!(
        count(&conn, "SELECT sent_ms FROM messages WHERE id = 1"),
        key.sent_ms.unwrap()
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM observations WHERE value = '182' AND numeric = 182"
        ),
        1
    );
    // A retransmission of a message stored before the migration is still recognised.
    assert_eq!(
        store.commit(vec![message]).await.unwrap(),
        vec![Stored::Duplicate {
            id: 1,
            verdict: Verdict::Accept
        }]
    );
}

#[tokio::test]
async fn the_writer_recovers_after_a_failed_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit(vec![oru(
            "1",
            Some(patient("P1", "EVE", false)),
            &["1"],
            "",
        )])
        .await
        .unwrap();
    // A full disk: the database may not grow by a single page.
    let n_pages = count(&sql(dir.path()), "PRAGMA page_count");
    exec(&store, &format!("PRAGMA max_page_count = {n_pages}")).await;
    let big = incompressible(200_000);
    let batch = vec![
        oru("2", Some(patient("P2", "NEW", false)), &["2"], ""),
        oru("3", Some(patient("P1", "EVE", false)), &["3"], &big),
    ];
    let error = store.commit(batch.clone()).await.unwrap_err();
    assert_eq!(error.to_string(), "store failure: database or disk is full");
    assert_eq!(store.stats().n_failed_transactions, 1);
    assert!(
        matches!(&store.health(), Health::Failing { reason } if reason.contains("full")),
        "{:?}",
        store.health()
    );
    assert!(store.patient_records("P2", None).await.unwrap().is_none());

    // Room again: the same store, without reopening, stores the batch.
    exec(&store, "PRAGMA max_page_count = 1073741823").await;
    let stored = store.commit(batch).await.unwrap();
    assert_eq!(store.health(), Health::Ok);
    assert_eq!(new_id(&stored[0]), 2);
    assert_eq!(new_id(&stored[1]), 3);
    // The patient created by the failed transaction was forgotten with it.
    let records = store.patient_records("P2", None).await.unwrap().unwrap();
    assert_eq!(records.records.len(), 1);
    assert_eq!(store.patients().await.unwrap().len(), 2);
    // Nothing of the failed attempt is left in the patient tail either.
    assert_eq!(record_messages(&store, "P1").await, [3, 1]);
    let conn = sql(dir.path());
    assert_eq!(count(&conn, "SELECT count(*) FROM messages"), 3);
    assert_eq!(count(&conn, "SELECT count(*) FROM observations"), 3);
}

#[test]
fn of_two_stores_opening_one_new_database_at_once_one_writes_and_one_is_refused() {
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let openers: Vec<_> = (0..2)
            .map(|_| {
                let path = dir.path().join("data");
                let barrier = std::sync::Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&path.join(SQLITE_FILE_NAME), SqliteOptions::default())
                        .map(drop)
                })
            })
            .collect();
        let results: Vec<_> = openers.into_iter().map(|o| o.join().unwrap()).collect();
        // The first one holds it until dropped; the other may also come after that drop.
        let refused: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert!(results.iter().any(Result::is_ok), "{refused:?}");
        assert!(
            refused
                .iter()
                .all(|e| e.contains("another receiver is writing")),
            "{refused:?}"
        );
    }
    // And while one is open, a second is refused.
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let error = SqliteStore::open(&dir.path().join(SQLITE_FILE_NAME), SqliteOptions::default())
        .err()
        .expect("a second writer is refused");
    assert!(
        error.to_string().contains("another receiver is writing"),
        "{error}"
    );
    drop(first);
    drop(open(dir.path()));
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    sql(dir.path())
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    match SqliteStore::open(&dir.path().join(SQLITE_FILE_NAME), SqliteOptions::default()) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (99, MIGRATIONS.len() as i64));
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[tokio::test]
async fn files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data/dir");
    let store = open(&data);
    store.commit(vec![oru("1", None, &[], "")]).await.unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join(SQLITE_FILE_NAME)), 0o600);
    assert_eq!(mode(&data.join(format!("{SQLITE_FILE_NAME}-wal"))), 0o600);
}

#[test]
fn the_hot_queries_use_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(&dir.path().join(SQLITE_FILE_NAME), SqliteOptions::default()).unwrap());
    let conn = sql(dir.path());
    let plan = |query: &str| -> String {
        let mut statement = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap();
        let n_params = statement.parameter_count();
        let rows = statement
            .query_map(rusqlite::params_from_iter(vec![0; n_params]), |row| {
                row.get::<_, String>(3)
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let detail = message_detail();
    for (query, index) in [
        (
            FIND_KEY,
            "PRIMARY KEY (sent_ms=? AND key_hash=? AND hash_prefix=?)",
        ),
        (MESSAGE_KEY, "INTEGER PRIMARY KEY (rowid=?)"),
        (
            message_by_id(RECORD_COLUMNS).as_str(),
            "INTEGER PRIMARY KEY (rowid=?)",
        ),
        (FIND_PATIENT, "sqlite_autoindex_patients_1"),
        (
            patient_messages(RECORD_COLUMNS).as_str(),
            "PRIMARY KEY (patient=? AND message>? AND message<?)",
        ),
        (
            patient_messages_beyond(RECORD_COLUMNS).as_str(),
            "INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
        ),
        (CHANGED_SINCE, "INTEGER PRIMARY KEY"),
        (FEED, "INTEGER PRIMARY KEY (rowid>?)"),
        (MESSAGE_FROM, "INTEGER PRIMARY KEY (rowid>?)"),
        (ID_RANGE, "SEARCH messages"),
        (detail.as_str(), "INTEGER PRIMARY KEY (rowid=?)"),
        // A message's first replay: the replays' partial index, not a scan.
        (detail.as_str(), "messages_replays (replay_of=?)"),
        (
            messages_query(false, false).as_str(),
            "INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
        ),
        (
            messages_query(true, true).as_str(),
            "messages_refused (id>? AND id<?)",
        ),
    ] {
        let plan = plan(query);
        assert!(plan.contains(index), "{query}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{query}: {plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_holds_at_most_max_batch_messages() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        max_batch: 2,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&dir.path().join(SQLITE_FILE_NAME), options).unwrap();
    let messages = (0..6)
        .map(|n| oru(&n.to_string(), None, &["1"], ""))
        .collect();
    commit_behind_a_held_writer(&store, messages).await;
    assert_eq!(store.stats().n_transactions, 3);
}

#[test]
fn the_writer_finishes_a_checkpoint_only_after_the_checkpoint_thread() {
    let signal = CheckpointSignal::default();
    let long = CHECKPOINT_FRAMES;
    assert!(!signal.after_commit(10));
    // A long WAL asks the checkpoint thread for a pass, once.
    assert!(!signal.after_commit(long));
    assert!(signal.wait());
    assert!(!signal.after_commit(long + 100));
    signal.done();
    // Then the writer copies the rest itself.
    assert!(signal.after_commit(long + 200));
    assert!(!signal.after_commit(10));
    // A pass that ends after the WAL started over leaves nothing for the writer.
    assert!(!signal.after_commit(long));
    assert!(signal.wait());
    signal.done();
    assert!(!signal.after_commit(10));
    assert!(!signal.after_commit(long));
    signal.shut_down();
    assert!(!signal.wait());
}

#[tokio::test]
async fn a_deleted_or_replaced_database_file_fails_every_commit() {
    for replace in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let message = |n: &str| oru(n, Some(patient("P1", "EVE", false)), &["1"], "");
        store.commit(vec![message("1")]).await.unwrap();
        assert_eq!(store.health(), Health::Ok);
        let path = dir.path().join(SQLITE_FILE_NAME);
        if replace {
            // What a restore over a running receiver does: another file takes the name.
            let copy = dir.path().join("copy");
            std::fs::copy(&path, &copy).unwrap();
            std::fs::rename(&copy, &path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        // Whatever the writer would write now goes to a file no one opens again: refused.
        let error = store.commit(vec![message("2")]).await.unwrap_err();
        assert!(error.to_string().contains("deleted or replaced"), "{error}");
        assert!(
            matches!(&store.health(), Health::Failing { reason } if reason.contains("restart")),
            "{:?}",
            store.health()
        );
        // And it stays so: the file does not come back by itself.
        assert!(store.commit(vec![message("3")]).await.is_err());
    }
}

#[tokio::test]
async fn a_closed_store_leaves_everything_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // A reader open beside it, as the demo's table is: it closes last, and cannot checkpoint.
    let inspector = read_only(dir.path()).unwrap();
    for n in 1..=10 {
        let message = oru(
            &n.to_string(),
            Some(patient("P1", "EVE", false)),
            &["1"],
            "",
        );
        store.commit(vec![message]).await.unwrap();
    }
    drop(store);
    let wal = dir.path().join(format!("{SQLITE_FILE_NAME}-wal"));
    assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
    drop(inspector);

    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join(SQLITE_FILE_NAME),
        copy.path().join(SQLITE_FILE_NAME),
    )
    .unwrap();
    assert_eq!(
        count(&sql(copy.path()), "SELECT count(*) FROM messages"),
        10
    );
}

#[tokio::test]
async fn a_refusal_rolled_back_with_its_transaction_is_not_counted_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit(vec![oru("1", None, &["1"], "")])
        .await
        .unwrap();
    let n_pages = count(&sql(dir.path()), "PRAGMA page_count");
    exec(&store, &format!("PRAGMA max_page_count = {n_pages}")).await;
    // The refused frame is written first, then the group fails on the big message.
    let big = incompressible(200_000);
    let failing = vec![
        crate::store::contract::rejected("R", ""),
        oru("2", None, &["2"], &big),
    ];
    assert!(store.commit(failing).await.is_err());
    exec(&store, "PRAGMA max_page_count = 1073741823").await;
    // Its row went with the transaction: the same bytes again are a new row, then repeats.
    let first = store
        .commit(vec![crate::store::contract::rejected("R", "")])
        .await
        .unwrap();
    let id = new_id(&first[0]);
    let again = store
        .commit(vec![crate::store::contract::rejected("R", "")])
        .await
        .unwrap();
    assert_eq!(again, vec![Stored::Repeated { id }]);
    assert_eq!(count(&sql(dir.path()), "SELECT count(*) FROM messages"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trend_read_in_two_halves_is_the_trend_read_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let n = super::readers::PARALLEL_TREND_IDS + 1000;
    let t0 = 1_800_000_000_000;
    let mut batch = Vec::new();
    for i in 0..n {
        let at = t0 + i * 1000;
        let mut message = oru(&i.to_string(), Some(patient("P1", "EVE", false)), &[], "");
        message.received_at = jiff::Timestamp::from_millisecond(at).unwrap();
        message.content.as_mut().unwrap().observations = (0..2)
            .map(|index| ObservationData {
                code: format!("C{index}"),
                code_text: format!("TEXT {}", i / 5000),
                numeric: Some(((i * 7 + index) % 13) as f64),
                observed_ms: at,
                ..crate::store::contract::observation(index as u32, "1")
            })
            .collect();
        batch.push(message);
        if batch.len() == 1000 {
            store.commit(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    store.commit(batch).await.unwrap();
    let query = TrendQuery {
        code: None,
        since_ms: t0,
        until_ms: t0 + n * 1000,
        bucket_ms: 60_000,
    };
    let parallel = store.trends("P1", query.clone()).await.unwrap().unwrap();
    let tail = store.inner.tail.clone();
    let single = store
        .inner
        .readers
        .read(Cost::Slow, move |conn| {
            read_trends(conn, None, tail.as_deref(), "P1", &query)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parallel, single);
    assert_eq!(parallel.len(), 2);
    let n_values: u64 = parallel[0].buckets.iter().map(|b| b.count).sum();
    assert_eq!(n_values, n as u64);
    assert_eq!(parallel[0].code_text, format!("TEXT {}", (n - 1) / 5000));
}

/// Text that compression does not shrink (the stored bytes are zstd): a frame that needs
/// about `n` bytes of pages whatever the encoding.
fn incompressible(n: usize) -> String {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'A' + (state % 26) as u8)
        })
        .collect()
}

/// A purge request for everything received before `before_ms`, without patient files.
fn purge_all_before(before_ms: i64) -> crate::store::PurgeRequest {
    crate::store::PurgeRequest {
        accepted_before_ms: Some(before_ms),
        refused_before_ms: None,
        exporters: Vec::new(),
        max_messages: 500,
        cursor: crate::store::PurgeCursor::START,
        dry_run: false,
    }
}

/// Keys and patient entries the writer still holds in memory hold their messages back: a
/// purge right after the commit removes nothing, and the retransmission is still found.
/// After they are written out (here: a reopening), the purge takes the message, its key row
/// and its patient index row, and nothing of another message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_wait_for_the_indexes_and_take_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let who = || Some(patient("P1", "EVE", false));
    let first = new_id(
        &store
            .commit(vec![oru("1", who(), &["1"], "")])
            .await
            .unwrap()[0],
    );
    let report = store.purge(purge_all_before(i64::MAX)).await.unwrap();
    assert_eq!(report.n_accepted, 0);
    assert_eq!(report.n_held_back, 1);
    assert!(matches!(
        report.held_by,
        Some(crate::store::HoldReason::IndexPending { .. })
    ));
    assert_eq!(
        store
            .commit(vec![oru("1", who(), &["1"], "")])
            .await
            .unwrap(),
        vec![Stored::Duplicate {
            id: first,
            verdict: Verdict::Accept
        }]
    );
    let second = new_id(
        &store
            .commit(vec![oru("2", who(), &["1"], "")])
            .await
            .unwrap()[0],
    );
    drop(store);
    {
        let conn = sql(dir.path());
        assert_eq!(count(&conn, "SELECT count(*) FROM message_keys"), 2);
        assert_eq!(count(&conn, "SELECT count(*) FROM patient_messages"), 2);
        // The first message only: received before the second.
        conn.execute("UPDATE messages SET received_ms = 1 WHERE id = ?1", [first])
            .unwrap();
    }
    let store = open(dir.path());
    let report = store.purge(purge_all_before(2)).await.unwrap();
    assert_eq!((report.n_accepted, report.n_held_back), (1, 0));
    drop(store);
    let conn = sql(dir.path());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM message_keys WHERE message = 2"),
        1
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM message_keys"), 1);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM patient_messages WHERE message = 2"
        ),
        1
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM patient_messages"), 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM patients"), 1);
    assert_eq!(
        count(
            &conn,
            "SELECT value FROM meta WHERE name = 'purged_through'"
        ),
        first
    );
    assert_eq!(second, 2);
}

/// An idle writer's last messages are not held back for good: a purge step first writes
/// out the keys and patient entries that are due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_writes_out_what_is_due_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // MSH-7 unknown: the key is due at once; the patient entry once 2 s old.
    let mut message = oru("1", Some(patient("P1", "EVE", false)), &["1"], "");
    if let Some(key) = message.key.as_mut() {
        key.sent_ms = None;
    }
    store.commit(vec![message]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = store.purge(purge_all_before(i64::MAX)).await.unwrap();
        if report.n_accepted == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "still held back: {report:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store.stats().n_purged, 1);
}

/// The patient index entries of removed messages go at the end of a round, per patient; a
/// store closed between steps sweeps every patient's at the next round's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_messages_index_entries_are_swept_at_a_rounds_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = Vec::new();
    for n in 0..12 {
        let mut message = oru(
            &format!("{n}"),
            Some(patient(&format!("P{}", n % 4), "EVE", false)),
            &["1"],
            "",
        );
        message.received_at = jiff::Timestamp::from_millisecond(1_000 + n).unwrap();
        batch.push(message);
    }
    store.commit(batch).await.unwrap();
    drop(store);
    let entries = |dir: &Path| count(&sql(dir), "SELECT count(*) FROM patient_messages");
    assert_eq!(entries(dir.path()), 12);
    let store = open(dir.path());
    let step = crate::store::PurgeRequest {
        max_messages: 3,
        ..purge_all_before(1_008)
    };
    let first = store.purge(step.clone()).await.unwrap();
    assert!(first.more);
    drop(store);
    // Removed, their entries not yet swept (readers skip them: they join the messages).
    assert_eq!(count(&sql(dir.path()), "SELECT count(*) FROM messages"), 9);
    assert_eq!(entries(dir.path()), 12);
    let store = open(dir.path());
    assert_eq!(
        store
            .patient_records("P0", None)
            .await
            .unwrap()
            .unwrap()
            .records
            .len(),
        2
    );
    let mut request = crate::store::PurgeRequest {
        cursor: first.cursor,
        ..step
    };
    loop {
        let report = store.purge(request.clone()).await.unwrap();
        if !report.more {
            break;
        }
        request.cursor = report.cursor;
    }
    drop(store);
    assert_eq!(count(&sql(dir.path()), "SELECT count(*) FROM messages"), 4);
    assert_eq!(entries(dir.path()), 4);
}

/// A merge between two purge steps of a round moves the prior's index entries, including
/// those of messages the first step removed, to the survivor: the round's sweep must still
/// take them (it then looks at every patient, not only at those its steps noted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_between_purge_steps_leaves_no_entry_of_a_removed_message() {
    const OLD: i64 = 1_700_000_000_000;
    const NEW: i64 = OLD + 3_600_000;
    let aged = |control_id: &str, who: &str, received_ms: i64| {
        let mut message = oru(control_id, Some(patient(who, "EVE", false)), &["1"], "");
        message.received_at = jiff::Timestamp::from_millisecond(received_ms).unwrap();
        message
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let stored = store
        .commit(vec![
            aged("1", "A", OLD),
            aged("2", "C", OLD + 1),
            aged("3", "B", NEW),
        ])
        .await
        .unwrap();
    let a1 = new_id(&stored[0]);
    // Reopened: the keys and index entries are in their tables.
    drop(store);
    let store = open(dir.path());
    // A round that removes nothing but sweeps: from here on the writer keeps the list of
    // patients whose entries wait.
    let report = store.purge(purge_all_before(OLD - 1)).await.unwrap();
    assert_eq!((report.n_accepted, report.more), (0, false));
    // One message per step: A's goes, and its entry waits for the round's sweep.
    let step = |cursor| crate::store::PurgeRequest {
        max_messages: 1,
        cursor,
        ..purge_all_before(NEW - 1)
    };
    let first = store
        .purge(step(crate::store::PurgeCursor::START))
        .await
        .unwrap();
    assert_eq!((first.n_accepted, first.more), (1, true));
    // A merges into B: A's entries, the removed message's too, are B's now.
    let merged = store
        .commit(vec![crate::store::contract::merge("M", "B", "A", "A40")])
        .await
        .unwrap();
    assert!(matches!(merged[0], Stored::New { .. }), "{merged:?}");
    // The next steps (C's message, then nothing) end the round with its sweep.
    let mut cursor = first.cursor;
    let mut n_removed = 0;
    for _ in 0..4 {
        let report = store.purge(step(cursor)).await.unwrap();
        n_removed += report.n_accepted;
        cursor = report.cursor;
        if !report.more {
            break;
        }
    }
    assert_eq!(n_removed, 1);
    drop(store);
    let conn = sql(dir.path());
    assert_eq!(
        count(
            &conn,
            &format!("SELECT count(*) FROM patient_messages WHERE message = {a1}")
        ),
        0
    );
}
