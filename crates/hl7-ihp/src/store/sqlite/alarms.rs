//! The `alarms` table (schema version 10): written in the alarm report's transaction,
//! read newest first for `/api/v1/alarms` and attached to the feed's `ORU^R40` messages.

use rusqlite::{CachedStatement, Connection, params};

use super::readers::instant;
use crate::alarm::{AlarmData, AlarmMeasurement};
use crate::store::{AlarmQuery, AlarmRow, FeedMessage};

/// The writer's insert of one alarm of message `?1`.
pub(super) const INSERT_ALARM: &str = "INSERT INTO alarms (message, idx, source, type_code, \
     type_text, type_system, text, priority, kind, state, phase, inactivation, flags, \
     measurement_code, measurement_text, measurement_value, measurement_numeric, \
     measurement_units, measurement_limit, started_at, started_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19, ?20, ?21)";

/// Stores one alarm of message `message` (on the writer thread, in its transaction).
pub(super) fn insert(
    statement: &mut CachedStatement<'_>,
    message: i64,
    alarm: &AlarmData,
) -> rusqlite::Result<()> {
    let m = alarm.measurement.as_ref();
    statement.execute(params![
        message,
        alarm.index,
        alarm.source,
        alarm.type_code,
        alarm.type_text,
        alarm.type_system,
        alarm.text,
        alarm.priority,
        alarm.kind,
        alarm.state,
        alarm.phase,
        alarm.inactivation,
        alarm.flags,
        m.map(|m| &m.code),
        m.map(|m| &m.code_text),
        m.map(|m| &m.value),
        m.and_then(|m| m.numeric),
        m.map(|m| &m.units),
        m.map(|m| &m.limit),
        alarm.started_at,
        alarm.started_ms,
    ])?;
    Ok(())
}

/// The alarm columns [`alarm_at`] reads, from column 0, over `alarms a`.
const ALARM_COLUMNS: &str = "a.idx, a.source, a.type_code, a.type_text, a.type_system, \
     a.text, a.priority, a.kind, a.state, a.phase, a.inactivation, a.flags, \
     a.measurement_code, a.measurement_text, a.measurement_value, a.measurement_numeric, \
     a.measurement_units, a.measurement_limit, a.started_at, a.started_ms";
const N_ALARM_COLUMNS: usize = 20;

fn alarm_at(row: &rusqlite::Row<'_>) -> rusqlite::Result<AlarmData> {
    let measurement = match row.get::<_, Option<String>>(12)? {
        Some(code) => Some(AlarmMeasurement {
            code,
            code_text: row.get::<_, Option<String>>(13)?.unwrap_or_default(),
            value: row.get::<_, Option<String>>(14)?.unwrap_or_default(),
            numeric: row.get(15)?,
            units: row.get::<_, Option<String>>(16)?.unwrap_or_default(),
            limit: row.get::<_, Option<String>>(17)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(AlarmData {
        index: row.get(0)?,
        source: row.get(1)?,
        type_code: row.get(2)?,
        type_text: row.get(3)?,
        type_system: row.get(4)?,
        text: row.get(5)?,
        priority: row.get(6)?,
        kind: row.get(7)?,
        state: row.get(8)?,
        phase: row.get(9)?,
        inactivation: row.get(10)?,
        flags: row.get(11)?,
        measurement,
        started_at: row.get(18)?,
        started_ms: row.get(19)?,
    })
}

/// Alarms newest first, with their message's arrival and patient (as stored now, so a
/// merged patient's alarms are the survivor's). Walks the primary key backwards; the
/// filters are applied on the way (alarms are few beside observations).
pub(super) fn read_alarms(
    conn: &Connection,
    query: &AlarmQuery,
) -> rusqlite::Result<Vec<AlarmRow>> {
    let sql = format!(
        "SELECT {ALARM_COLUMNS}, a.id, a.message, m.received_ms, p.key \
         FROM alarms a JOIN messages m ON m.id = a.message \
         LEFT JOIN patients p ON p.id = m.patient \
         WHERE a.id < ?1 AND (?2 IS NULL OR p.key = ?2) AND (?3 IS NULL OR a.state = ?3) \
         AND (?5 IS NULL OR a.source = ?5) ORDER BY a.id DESC LIMIT ?4"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut rows = statement.query(params![
        query.before.unwrap_or(i64::MAX),
        query.patient,
        query.state.as_deref().map(str::to_ascii_lowercase),
        limit,
        query.device,
    ])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        found.push(AlarmRow {
            alarm: alarm_at(row)?,
            id: row.get(N_ALARM_COLUMNS)?,
            message_id: row.get(N_ALARM_COLUMNS + 1)?,
            received_at: instant(row.get(N_ALARM_COLUMNS + 2)?),
            patient: row.get(N_ALARM_COLUMNS + 3)?,
        });
    }
    Ok(found)
}

/// Fills [`FeedMessage::alarms`] of the accepted alarm reports among `messages`.
pub(super) fn attach(conn: &Connection, messages: &mut [FeedMessage]) -> rusqlite::Result<()> {
    let sql = format!("SELECT {ALARM_COLUMNS} FROM alarms a WHERE a.message = ?1 ORDER BY a.idx");
    let mut statement = None;
    for message in messages.iter_mut() {
        let is_alarm = message.outcome == crate::store::Outcome::Accept
            && message.message_type.as_deref().is_some_and(|t| {
                t.split_once('^')
                    .is_some_and(|(m, e)| crate::alarm::is_alarm_message(m, e))
            });
        if !is_alarm {
            continue;
        }
        let statement = match &mut statement {
            Some(statement) => statement,
            None => statement.insert(conn.prepare_cached(&sql)?),
        };
        let mut rows = statement.query([message.id])?;
        while let Some(row) = rows.next()? {
            message.alarms.push(alarm_at(row)?);
        }
    }
    Ok(())
}
