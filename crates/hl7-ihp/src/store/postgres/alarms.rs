//! The `alarms` table (schema version 2) read back: newest first for `/api/v1/alarms`
//! ([`read_alarms`], as SQLite's `store/sqlite/alarms.rs`) and attached to the feed's
//! `ORU^R40` messages ([`attach`]). The writer inserts them (`writer.rs`).

use std::collections::HashMap;

use tokio_postgres::Row;

use super::pool::Pooled;

use super::db_error;
use crate::alarm::{AlarmData, AlarmMeasurement};
use crate::store::{AlarmQuery, AlarmRow, FeedMessage, Outcome, StoreError};

fn fail(e: tokio_postgres::Error) -> StoreError {
    db_error("alarm read failed", &e)
}

/// The alarm columns [`alarm_at`] reads, from column 0, over `alarms a`.
const ALARM_COLUMNS: &str = "a.idx, a.source, a.type_code, a.type_text, a.type_system, \
     a.text, a.priority, a.kind, a.state, a.phase, a.inactivation, a.flags, \
     a.measurement_code, a.measurement_text, a.measurement_value, a.measurement_numeric, \
     a.measurement_units, a.measurement_limit, a.started_at, a.started_ms";
const N_ALARM_COLUMNS: usize = 20;

fn alarm_at(row: &Row) -> AlarmData {
    let measurement = row
        .get::<_, Option<String>>(12)
        .map(|code| AlarmMeasurement {
            code,
            code_text: row.get::<_, Option<String>>(13).unwrap_or_default(),
            value: row.get::<_, Option<String>>(14).unwrap_or_default(),
            numeric: row.get(15),
            units: row.get::<_, Option<String>>(16).unwrap_or_default(),
            limit: row.get::<_, Option<String>>(17).unwrap_or_default(),
        });
    AlarmData {
        index: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
        source: row.get(1),
        type_code: row.get(2),
        type_text: row.get(3),
        type_system: row.get(4),
        text: row.get(5),
        priority: row.get(6),
        kind: row.get(7),
        state: row.get(8),
        phase: row.get(9),
        inactivation: row.get(10),
        flags: row.get(11),
        measurement,
        started_at: row.get(18),
        started_ms: row.get(19),
    }
}

/// Alarms newest first, with their message's arrival and patient (as stored now), filtered
/// by patient key, state (compared lower-cased, as stored), source device and the id
/// cursor, as SQLite's.
pub(super) async fn read_alarms(
    client: &Pooled<'_>,
    query: &AlarmQuery,
) -> Result<Vec<AlarmRow>, StoreError> {
    let sql = format!(
        "SELECT {ALARM_COLUMNS}, a.id, a.message, m.received_ms, p.key
         FROM alarms a JOIN messages m ON m.id = a.message
         LEFT JOIN patients p ON p.id = m.patient
         WHERE a.id < $1 AND ($2::text IS NULL OR p.key = $2)
           AND ($3::text IS NULL OR a.state = $3) AND ($5::text IS NULL OR a.source = $5)
         ORDER BY a.id DESC LIMIT $4"
    );
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let state = query.state.as_deref().map(str::to_ascii_lowercase);
    let rows = client
        .query(
            &sql,
            &[
                &query.before.unwrap_or(i64::MAX),
                &query.patient,
                &state,
                &limit,
                &query.device,
            ],
        )
        .await
        .map_err(fail)?;
    rows.iter()
        .map(|row| {
            let received_ms: i64 = row.get(N_ALARM_COLUMNS + 2);
            Ok(AlarmRow {
                alarm: alarm_at(row),
                id: row.get(N_ALARM_COLUMNS),
                message_id: row.get(N_ALARM_COLUMNS + 1),
                received_at: jiff::Timestamp::from_millisecond(received_ms)
                    .map_err(|_| StoreError::Database("a stored time is out of range".into()))?,
                patient: row.get(N_ALARM_COLUMNS + 3),
            })
        })
        .collect()
}

/// Fills [`FeedMessage::alarms`] of the accepted alarm reports among `messages`, in one
/// statement for all of them.
pub(super) async fn attach(
    client: &Pooled<'_>,
    messages: &mut [FeedMessage],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = messages
        .iter()
        .filter(|m| {
            m.outcome == Outcome::Accept
                && m.message_type.as_deref().is_some_and(|t| {
                    t.split_once('^')
                        .is_some_and(|(m, e)| crate::alarm::is_alarm_message(m, e))
                })
        })
        .map(|m| m.id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT {ALARM_COLUMNS}, a.message FROM alarms a
         WHERE a.message = ANY($1) ORDER BY a.message, a.idx"
    );
    let rows = client.query(&sql, &[&ids]).await.map_err(fail)?;
    let mut by_message: HashMap<i64, Vec<AlarmData>> = HashMap::new();
    for row in &rows {
        by_message
            .entry(row.get(N_ALARM_COLUMNS))
            .or_default()
            .push(alarm_at(row));
    }
    for message in messages.iter_mut() {
        if let Some(alarms) = by_message.remove(&message.id) {
            message.alarms = alarms;
        }
    }
    Ok(())
}
