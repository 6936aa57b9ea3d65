//! Tests of the stored bytes' encoding (schema version 9): every frame comes back byte for
//! byte, rows written before compression still read, and the `observations` view gives the
//! same values for old rows and new.

use super::*;
use crate::store::contract::{new_id, oru, patient};
use crate::store::{MessageFilter, SQLITE_FILE_NAME};

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join(SQLITE_FILE_NAME), SqliteOptions::default())
        .expect("open the store")
}

fn sql(dir: &Path) -> Connection {
    Connection::open(dir.join(SQLITE_FILE_NAME)).unwrap()
}

/// `message` with other bytes (and their hash).
fn with_raw(mut message: NewMessage, raw: Vec<u8>) -> NewMessage {
    message.hash = Sha256::digest(&raw).into();
    message.raw = raw;
    message
}

/// Bytes of every value, without a pattern zstd can use.
fn noise(n: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A vitals-like ORU: seven OBX of the kind the dictionary was trained on.
fn vitals_body(n: usize) -> String {
    (1..=7)
        .map(|set| {
            format!(
                "OBX|{set}|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.{set}.1.1|{}|262688^MDC_DIM_PERCENT^MDC|90-100|N|||R|||20261201201017+0000||||0012A3FFFE450231^EUI-64\r",
                90 + (n + set) % 10
            )
        })
        .collect()
}

fn refused(message: NewMessage, reason: &str) -> NewMessage {
    let mut message = message;
    message.verdict = Verdict::Reject {
        reason: reason.into(),
    };
    message.content = None;
    message
}

#[tokio::test]
async fn every_frame_comes_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let vitals = oru(
        "V1",
        Some(patient("P1", "EVE", false)),
        &["97"],
        &vitals_body(1),
    );
    let mut large = b"MSH|^~\\&|DEV|FAC|||20240101||ORU^R01|L1|P|2.6\r".to_vec();
    while large.len() < 3_000_000 {
        large.extend_from_slice(vitals_body(large.len()).as_bytes());
    }
    large.extend_from_slice(&noise(100_000));
    let large = with_raw(oru("L1", None, &["1"], ""), large);
    // Binary, with the MLLP bytes and NULs in it: no MSH, refused.
    let mut binary = noise(5_000);
    binary.extend_from_slice(&[0x0B, 0x1C, 0x0D, 0x00, 0xFF]);
    let mut binary = refused(with_raw(oru("B1", None, &[], ""), binary), "unreadable");
    binary.key = None;
    // A compressible refused frame, and an oversized frame's 64 KiB head.
    let rejected = refused(
        oru("R1", None, &[], &vitals_body(2)),
        "message type not allowed",
    );
    let head: Vec<u8> = b"MSH|^~\\&|DEV|FAC|||20240101||ORU^R01|O1|P|2.6\r"
        .iter()
        .copied()
        .chain(vitals_body(3).bytes().cycle())
        .take(64 * 1024)
        .collect();
    let mut oversized = refused(with_raw(oru("O1", None, &[], ""), head), "oversized");
    oversized.key = None;
    let empty = refused(with_raw(oru("E1", None, &[], ""), Vec::new()), "empty");
    let sent = vec![vitals, large, binary, rejected, oversized, empty];
    let stored = store.commit(sent.clone()).await.unwrap();
    let ids: Vec<i64> = stored.iter().map(new_id).collect();
    for (id, message) in ids.iter().zip(&sent) {
        let detail = store.message(*id).await.unwrap().unwrap();
        assert!(
            detail.summary.raw.as_deref() == Some(&message.raw[..]),
            "message {id} changed"
        );
    }
    let listed = store
        .messages(MessageFilter {
            with_raw: true,
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), sent.len());
    for summary in &listed {
        let index = ids.iter().position(|id| *id == summary.id).unwrap();
        assert!(summary.raw.as_deref() == Some(&sent[index].raw[..]));
    }
    // Compressed where that pays: the vitals message to a fraction, noise kept as it is.
    let conn = sql(dir.path());
    let stored_as = |id: i64| -> (i64, Option<i64>) {
        conn.query_row(
            "SELECT length(raw), raw_encoding FROM messages WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
    };
    let (length, encoding) = stored_as(ids[0]);
    assert_eq!(encoding, Some(raw::ZSTD_DICTIONARY_1));
    assert!((length as usize) * 4 < sent[0].raw.len(), "{length}");
    assert_eq!(stored_as(ids[2]).1, None);
    assert_eq!(stored_as(ids[3]).1, Some(raw::ZSTD_DICTIONARY_1));
    assert_eq!(stored_as(ids[5]), (0, None));
}

/// The `observations` view's rows of one message, without the message id.
fn view_rows(conn: &Connection, message: i64) -> Vec<Vec<rusqlite::types::Value>> {
    let mut statement = conn
        .prepare("SELECT * FROM observations WHERE message = ?1 ORDER BY position")
        .unwrap();
    let n = statement.column_count();
    statement
        .query_map([message], |row| {
            (1..n).map(|i| row.get(i)).collect::<rusqlite::Result<_>>()
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[tokio::test]
async fn a_version_6_database_reads_after_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let old = oru(
        "OLD1",
        Some(patient("P1", "EVE", false)),
        &["182", "7"],
        &vitals_body(1),
    );
    {
        // Version 6's schema, and a row as its writer wrote it: the bytes as received.
        let conn = sql(dir.path());
        for migration in &MIGRATIONS[..6] {
            conn.execute_batch(migration.sql).unwrap();
            if let Some(then) = migration.then {
                then(&conn).unwrap();
            }
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        conn.execute(
            "INSERT INTO patients VALUES (1, 'P1', 'P1', 'AUTH', 'P1^^^AUTH^MR', 'EVE', \
             '1970-01-01', 'F', 0, 0)",
            [],
        )
        .unwrap();
        let key = old.key.clone().unwrap();
        let content = old.content.as_ref().unwrap();
        conn.execute(
            "INSERT INTO messages (id, received_ms, peer, sending_application, \
             sending_facility, control_id, hash, outcome, message_type, version, location, \
             device, patient, n_observations, sent_ms, key_hash, hash_prefix, observations, \
             raw, ack_code) VALUES (1, 1700000000123, '127.0.0.1:40000', 'DEV', 'FAC', \
             'OLD1', ?1, 'accepted', 'ORU^R01', '2.6', 'ICU^1', 'DEV', 1, 2, ?2, ?3, ?4, ?5, \
             ?6, 'AA')",
            params![
                &old.hash[..],
                key.sent_ms,
                key_hash(&key),
                hash_prefix(&old.hash),
                encode_observations(&content.observations),
                old.raw
            ],
        )
        .unwrap();
    }
    let store = open(dir.path());
    let conn = sql(dir.path());
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    let detail = store.message(1).await.unwrap().unwrap();
    assert!(detail.summary.raw.as_deref() == Some(&old.raw[..]));
    assert_eq!(
        detail.observations,
        old.content.as_ref().unwrap().observations
    );
    // The same message again is still recognised as a duplicate of the old row.
    let again = store.commit(vec![old.clone()]).await.unwrap();
    assert!(matches!(again[0], Stored::Duplicate { .. }), "{again:?}");
    // A new row beside it, compressed, with the same observations.
    let new = oru(
        "NEW1",
        Some(patient("P1", "EVE", false)),
        &["182", "7"],
        &vitals_body(1),
    );
    let id = new_id(&store.commit(vec![new.clone()]).await.unwrap()[0]);
    let encoding: Option<i64> = conn
        .query_row(
            "SELECT raw_encoding FROM messages WHERE id = ?1",
            [id],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(encoding, Some(raw::ZSTD_DICTIONARY_1));
    let detail = store.message(id).await.unwrap().unwrap();
    assert!(detail.summary.raw.as_deref() == Some(&new.raw[..]));
    let old_rows = view_rows(&conn, 1);
    assert_eq!(old_rows.len(), 2);
    assert_eq!(old_rows, view_rows(&conn, id));
    // And both through the patient's records.
    let listed = store
        .messages(MessageFilter {
            with_raw: true,
            patient: Some("P1".into()),
            ..MessageFilter::default()
        })
        .await
        .unwrap();
    let raws: Vec<_> = listed.iter().map(|m| m.raw.clone().unwrap()).collect();
    assert_eq!(raws, vec![new.raw, old.raw]);
}
