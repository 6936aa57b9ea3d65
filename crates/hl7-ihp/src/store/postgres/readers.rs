//! The PostgreSQL store's reads ([`StoreRead`] on the pool): each one statement (or a few
//! pages of one) on a pooled connection, so each sees one committed state.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Row as PgRow;
use tokio_postgres::types::ToSql;

use super::db_error;
use super::pool::{Pool, Pooled};
use crate::store::{
    AlarmQuery, AlarmRow, ChangeCursor, Changes, DeviceRecords, Feed, FeedMessage, FilePosition,
    MergeNote, MessageDetail, MessageFilter, MessageSummary, ObservationData, ObservationQuery,
    ObservationRow, Outcome, PatientData, PatientRecords, PatientSummary, StoreError, StoreFuture,
    StoreRead, TrendBucket, TrendQuery, TrendSeries, outcome_name,
};

/// How far from their arrival observations are looked for by time filters (as SQLite's).
const HOUR_MS: i64 = 3_600_000;

/// Messages read per page while collecting a patient's records.
const PAGE: i64 = 256;

fn fail(e: tokio_postgres::Error) -> StoreError {
    db_error("store read failed", &e)
}

/// The columns every message read selects, in the order [`MessageRow::from`] reads them.
///
/// The replay link is grouped by `replay_of` so that PostgreSQL answers it from the
/// `messages_replays` index: as a bare `min(id)` it was planned as a walk of the primary key
/// filtered by `replay_of`, once per message read (118 ms per read of the change feed at
/// 13,000 messages, the writer starved of CPU).
fn select(with_raw: bool) -> String {
    format!(
        "SELECT m.id, m.received_ms, m.peer, m.peer_identity, m.sending_application,
             m.sending_facility, m.control_id, m.outcome, m.reason, m.message_type, m.version,
             m.location, m.device, m.n_received, m.last_received_ms, m.ack_code, m.replay_of,
             m.observations::text,
             (SELECT min(r.id) FROM messages r WHERE r.replay_of = m.id GROUP BY r.replay_of),
             p.key, p.patient_id, p.assigning_authority, p.identifiers, p.name, p.birth_date,
             p.sex, {}, m.raw_encoding, g.prior_key, g.survivor_key, g.event
         FROM messages m LEFT JOIN patients p ON p.id = m.patient
         LEFT JOIN patient_merges g ON g.message = m.id",
        if with_raw { "m.raw" } else { "NULL::bytea" }
    )
}

/// A message as read, before it becomes a summary, a feed message or a detail.
struct MessageRow {
    id: i64,
    received_ms: i64,
    peer: String,
    peer_identity: Option<String>,
    sending_application: Option<String>,
    sending_facility: Option<String>,
    control_id: Option<String>,
    outcome: Outcome,
    reason: Option<String>,
    message_type: Option<String>,
    version: Option<String>,
    location: Option<String>,
    device: Option<String>,
    n_received: i64,
    last_received_ms: Option<i64>,
    ack_code: Option<String>,
    replay_of: Option<i64>,
    observations: Option<String>,
    replayed_as: Option<i64>,
    patient: Option<PatientData>,
    raw: Option<Vec<u8>>,
    /// The patient merge the message made, if it made one.
    merge: Option<MergeNote>,
}

fn outcome(name: &str) -> Result<Outcome, StoreError> {
    [Outcome::Accept, Outcome::Error, Outcome::Reject]
        .into_iter()
        .find(|o| outcome_name(*o) == name)
        .ok_or_else(|| StoreError::Database(format!("unknown outcome {name:?} in the store")))
}

fn time(ms: i64) -> Result<jiff::Timestamp, StoreError> {
    jiff::Timestamp::from_millisecond(ms)
        .map_err(|_| StoreError::Database("a stored time is out of range".into()))
}

fn observations(json: Option<&str>) -> Result<Vec<ObservationData>, StoreError> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    crate::store::sqlite::encoded::decode(json.as_bytes())
        .map_err(|e| StoreError::Database(format!("a stored observations column is damaged: {e}")))
}

impl MessageRow {
    fn from(row: &PgRow) -> Result<MessageRow, StoreError> {
        let patient = row.get::<_, Option<String>>(19).map(|key| PatientData {
            key,
            id: row.get(20),
            assigning_authority: row.get(21),
            identifiers: row.get(22),
            name: row.get(23),
            birth_date: row.get(24),
            sex: row.get(25),
            is_update: false,
        });
        let raw = match row.get::<_, Option<Vec<u8>>>(26) {
            Some(stored) => {
                let encoding: Option<i16> = row.get(27);
                Some(
                    crate::store::sqlite::raw::decode(stored, encoding.map(i64::from))
                        .map_err(|e| StoreError::Database(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok(MessageRow {
            id: row.get(0),
            received_ms: row.get(1),
            peer: row.get(2),
            peer_identity: row.get(3),
            sending_application: row.get(4),
            sending_facility: row.get(5),
            control_id: row.get(6),
            outcome: outcome(row.get(7))?,
            reason: row.get(8),
            message_type: row.get(9),
            version: row.get(10),
            location: row.get(11),
            device: row.get(12),
            n_received: row.get(13),
            last_received_ms: row.get(14),
            ack_code: row.get(15),
            replay_of: row.get(16),
            observations: row.get(17),
            replayed_as: row.get(18),
            patient,
            raw,
            merge: row.get::<_, Option<String>>(28).map(|prior| MergeNote {
                prior,
                survivor: row.get(29),
                event: row.get(30),
            }),
        })
    }

    fn summary(&self) -> Result<MessageSummary, StoreError> {
        Ok(MessageSummary {
            id: self.id,
            received_at: time(self.received_ms)?,
            peer: self.peer.clone(),
            peer_identity: self.peer_identity.clone(),
            sender: match (&self.sending_application, &self.sending_facility) {
                (Some(app), Some(fac)) => format!("{app}|{fac}"),
                _ => String::new(),
            },
            control_id: self.control_id.clone().unwrap_or_default(),
            outcome: self.outcome,
            n_received: u64::try_from(self.n_received).unwrap_or(0),
            reason: self.reason.clone(),
            message_type: self.message_type.clone(),
            patient: self.patient.as_ref().map(|p| p.key.clone()),
            ack_code: self.ack_code.clone(),
            merge: self.merge.clone(),
            raw: self.raw.clone(),
            replay_of: self.replay_of,
            replayed_as: self.replayed_as,
        })
    }

    fn feed_message(self) -> Result<FeedMessage, StoreError> {
        Ok(FeedMessage {
            id: self.id,
            received_at: time(self.received_ms)?,
            outcome: self.outcome,
            observations: observations(self.observations.as_deref())?,
            reason: self.reason,
            sending_application: self.sending_application,
            sending_facility: self.sending_facility,
            control_id: self.control_id,
            message_type: self.message_type,
            location: self.location,
            device: self.device,
            patient: self.patient,
            merged_from: self.merge.map(|m| m.prior),
            alarms: Vec::new(),
        })
    }
}

async fn patient_row(
    client: &Pooled<'_>,
    key: &str,
) -> Result<Option<(i64, PatientData)>, StoreError> {
    let row = client
        .query_opt(
            "SELECT id, key, patient_id, assigning_authority, identifiers, name, birth_date, sex
             FROM patients WHERE key = $1",
            &[&key],
        )
        .await
        .map_err(fail)?;
    Ok(row.map(|row| {
        (
            row.get(0),
            PatientData {
                key: row.get(1),
                id: row.get(2),
                assigning_authority: row.get(3),
                identifiers: row.get(4),
                name: row.get(5),
                birth_date: row.get(6),
                sex: row.get(7),
                is_update: false,
            },
        )
    }))
}

/// A message of a patient with records, as the record reads need it.
struct RecordMessage {
    id: i64,
    control_id: String,
    received_at: jiff::Timestamp,
    device: String,
    observations: Vec<ObservationData>,
}

/// A page of a patient's messages with observations, newest first, at or below `upper`,
/// received within `[from_ms, to_ms)`.
async fn record_messages(
    client: &Pooled<'_>,
    patient: i64,
    upper: i64,
    from_ms: i64,
    to_ms: i64,
    limit: i64,
) -> Result<Vec<RecordMessage>, StoreError> {
    let rows = client
        .query(
            "SELECT id, control_id, received_ms, device, observations::text FROM messages
             WHERE patient = $1 AND outcome = 'accepted' AND n_observations > 0 AND id <= $2
               AND received_ms >= $3 AND received_ms < $4
             ORDER BY id DESC LIMIT $5",
            &[&patient, &upper, &from_ms, &to_ms, &limit],
        )
        .await
        .map_err(fail)?;
    rows.iter()
        .map(|row| {
            Ok(RecordMessage {
                id: row.get(0),
                control_id: row.get::<_, Option<String>>(1).unwrap_or_default(),
                received_at: time(row.get(2))?,
                device: row.get::<_, Option<String>>(3).unwrap_or_default(),
                observations: observations(row.get::<_, Option<&str>>(4))?,
            })
        })
        .collect()
}

impl RecordMessage {
    fn record(&self, observation: &ObservationData) -> ObservationRow {
        ObservationRow {
            observation: observation.clone(),
            message_id: self.id,
            control_id: self.control_id.clone(),
            received_at: self.received_at,
            device: self.device.clone(),
        }
    }
}

fn limit(n: Option<usize>) -> i64 {
    n.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// Whether a device marked the value wrong or not done (OBX-11 `W`, `X`, `N`): no trend
/// point (as SQLite's trends).
fn is_void(status: &str) -> bool {
    ["W", "X", "N"]
        .iter()
        .any(|s| status.trim().eq_ignore_ascii_case(s))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

impl StoreRead for Pool {
    fn patients(&self) -> StoreFuture<'_, Vec<PatientSummary>> {
        Box::pin(async move {
            let client = self.get().await?;
            let rows = client
                .query(
                    "SELECT key, name, n_observations, last_received_ms, last_message
                     FROM patients ORDER BY key",
                    &[],
                )
                .await
                .map_err(fail)?;
            rows.iter()
                .map(|row| {
                    Ok(PatientSummary {
                        key: row.get(0),
                        name: row.get(1),
                        n_observations: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                        last_received_at: row.get::<_, Option<i64>>(3).map(time).transpose()?,
                        last_message: row.get(4),
                    })
                })
                .collect()
        })
    }

    fn patient_records<'a>(
        &'a self,
        key: &'a str,
        n: Option<usize>,
    ) -> StoreFuture<'a, Option<PatientRecords>> {
        Box::pin(async move {
            let client = self.get().await?;
            let Some((id, patient)) = patient_row(&client, key).await? else {
                return Ok(None);
            };
            let wanted = n.unwrap_or(usize::MAX);
            let mut records = Vec::new();
            if wanted > 0 {
                // Every message read has at least one record: `wanted` messages suffice.
                let messages =
                    record_messages(&client, id, i64::MAX, i64::MIN, i64::MAX, limit(n)).await?;
                'messages: for message in &messages {
                    for observation in &message.observations {
                        if records.len() >= wanted {
                            break 'messages;
                        }
                        records.push(message.record(observation));
                    }
                }
            }
            Ok(Some(PatientRecords { patient, records }))
        })
    }

    fn messages(&self, filter: MessageFilter) -> StoreFuture<'_, Vec<MessageSummary>> {
        Box::pin(async move {
            let mut sql = select(filter.with_raw);
            sql.push_str(" WHERE true");
            let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            let mut bind = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
                params.push(value);
                sql.push_str(&clause.replace('?', &format!("${}", params.len())));
            };
            if filter.rejected_only {
                sql.push_str(" AND m.outcome <> 'accepted'");
            }
            if let Some(o) = filter.outcome {
                bind(&mut sql, " AND m.outcome = ?", Box::new(outcome_name(o)));
            }
            if let Some(t) = filter.message_type {
                bind(&mut sql, " AND m.message_type = ?", Box::new(t));
            }
            if let Some(f) = filter.facility {
                bind(&mut sql, " AND m.sending_facility = ?", Box::new(f));
            }
            if let Some(p) = filter.patient {
                bind(
                    &mut sql,
                    " AND m.patient = (SELECT id FROM patients WHERE key = ?)",
                    Box::new(p),
                );
            }
            if let Some(ms) = filter.since_ms {
                bind(&mut sql, " AND m.received_ms >= ?", Box::new(ms));
            }
            if let Some(ms) = filter.until_ms {
                bind(&mut sql, " AND m.received_ms < ?", Box::new(ms));
            }
            if let Some(id) = filter.before_id {
                bind(&mut sql, " AND m.id < ?", Box::new(id));
            }
            sql.push_str(" ORDER BY m.id DESC");
            if filter.limit.is_some() {
                bind(&mut sql, " LIMIT ?", Box::new(limit(filter.limit)));
            }
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let client = self.get().await?;
            let rows = client.query(&sql, &refs).await.map_err(fail)?;
            rows.iter()
                .map(|row| MessageRow::from(row)?.summary())
                .collect()
        })
    }

    fn changes_since(&self, after: ChangeCursor, n: usize) -> StoreFuture<'_, Changes> {
        Box::pin(async move {
            let client = self.get().await?;
            let rows = client
                .query(
                    "SELECT m.id, p.key, m.outcome = 'accepted' FROM messages m
                     LEFT JOIN patients p ON p.id = m.patient
                     WHERE m.id > $1 ORDER BY m.id LIMIT $2",
                    &[&after.position(), &limit(Some(n))],
                )
                .await
                .map_err(fail)?;
            let mut patients: Vec<String> = Vec::new();
            let mut next = after;
            for row in &rows {
                next = ChangeCursor::at(row.get(0));
                if let (Some(key), true) = (row.get::<_, Option<String>>(1), row.get::<_, bool>(2))
                    && !patients.contains(&key)
                {
                    patients.push(key);
                }
            }
            // A merge changed the prior patient too: their records are gone (now the
            // survivor's), so their files must go.
            if next > after {
                let merged = client
                    .query(
                        "SELECT prior_key FROM patient_merges WHERE message > $1 AND message <= $2
                         ORDER BY message",
                        &[&after.position(), &next.position()],
                    )
                    .await
                    .map_err(fail)?;
                for row in &merged {
                    let key: String = row.get(0);
                    if !patients.contains(&key) {
                        patients.push(key);
                    }
                }
            }
            Ok(Changes { patients, next })
        })
    }

    fn export_watermark<'a>(&'a self, exporter: &'a str) -> StoreFuture<'a, ChangeCursor> {
        Box::pin(async move {
            let client = self.get().await?;
            let row = client
                .query_opt(
                    "SELECT value FROM meta WHERE name = $1",
                    &[&format!("export:{exporter}")],
                )
                .await
                .map_err(fail)?;
            Ok(row.map_or(ChangeCursor::START, |r| ChangeCursor::at(r.get(0))))
        })
    }

    fn export_files<'a>(
        &'a self,
        exporter: &'a str,
        keys: Option<Vec<String>>,
    ) -> StoreFuture<'a, HashMap<String, FilePosition>> {
        Box::pin(async move {
            let client = self.get().await?;
            let rows = match keys {
                Some(keys) => {
                    client
                        .query(
                            "SELECT patient_key, through, length FROM export_files
                         WHERE exporter = $1 AND patient_key = ANY($2)",
                            &[&exporter, &keys],
                        )
                        .await
                }
                None => {
                    client
                        .query(
                            "SELECT patient_key, through, length FROM export_files
                         WHERE exporter = $1",
                            &[&exporter],
                        )
                        .await
                }
            }
            .map_err(fail)?;
            Ok(rows
                .iter()
                .map(|row| {
                    (
                        row.get(0),
                        FilePosition {
                            through: row.get(1),
                            length: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                        },
                    )
                })
                .collect())
        })
    }

    fn feed(&self, after: ChangeCursor, n: usize) -> StoreFuture<'_, Feed> {
        Box::pin(async move {
            let client = self.get().await?;
            // The messages first, then their patients: with the limit outside the joins, the
            // generic plan joined every patient to every message by a filter (50 ms for
            // 1,000 messages against 5 ms this way).
            let sql = select(false).replace(
                "FROM messages m",
                "FROM (SELECT * FROM messages WHERE id > $1 ORDER BY id LIMIT $2) m",
            ) + " ORDER BY m.id";
            let rows = client
                .query(&sql, &[&after.position(), &limit(Some(n))])
                .await
                .map_err(fail)?;
            let mut messages = rows
                .iter()
                .map(|row| MessageRow::from(row)?.feed_message())
                .collect::<Result<Vec<_>, _>>()?;
            super::alarms::attach(&client, &mut messages).await?;
            let next = messages.last().map_or(after, |m| ChangeCursor::at(m.id));
            Ok(Feed { messages, next })
        })
    }

    fn feed_head(&self) -> StoreFuture<'_, ChangeCursor> {
        Box::pin(async move {
            let client = self.get().await?;
            let row = client
                .query_one("SELECT value FROM counters WHERE name = 'message_id'", &[])
                .await
                .map_err(fail)?;
            Ok(ChangeCursor::at(row.get(0)))
        })
    }

    fn device_records<'a>(
        &'a self,
        device: &'a str,
        n: Option<usize>,
    ) -> StoreFuture<'a, Option<DeviceRecords>> {
        Box::pin(async move {
            let client = self.get().await?;
            let wanted = n.unwrap_or(usize::MAX);
            let mut found = false;
            let mut location: Option<String> = None;
            let mut records = Vec::new();
            let mut upper = i64::MAX;
            // Pages of the device's messages, newest first (the partial
            // `messages_by_device_key` index), until enough records and a location are read.
            loop {
                let rows = client
                    .query(
                        "SELECT id, control_id, received_ms, device, observations::text, location
                         FROM messages WHERE device_key = $1 AND id <= $2
                         ORDER BY id DESC LIMIT $3",
                        &[&device, &upper, &PAGE],
                    )
                    .await
                    .map_err(fail)?;
                for row in &rows {
                    found = true;
                    if location.is_none() {
                        location = row.get::<_, Option<String>>(5).filter(|l| !l.is_empty());
                    }
                    if records.len() < wanted {
                        let message = RecordMessage {
                            id: row.get(0),
                            control_id: row.get::<_, Option<String>>(1).unwrap_or_default(),
                            received_at: time(row.get(2))?,
                            device: row.get::<_, Option<String>>(3).unwrap_or_default(),
                            observations: observations(row.get::<_, Option<&str>>(4))?,
                        };
                        for observation in &message.observations {
                            if records.len() >= wanted {
                                break;
                            }
                            records.push(message.record(observation));
                        }
                    }
                    if records.len() >= wanted && location.is_some() {
                        break;
                    }
                }
                let done = records.len() >= wanted && location.is_some();
                match rows.last() {
                    Some(last) if !done && rows.len() as i64 == PAGE => {
                        upper = last.get::<_, i64>(0) - 1;
                    }
                    _ => break,
                }
            }
            Ok(found.then(|| DeviceRecords {
                device: device.to_owned(),
                location,
                records,
            }))
        })
    }

    fn device_feeds(&self, n_devices: usize, n: usize) -> StoreFuture<'_, Vec<Vec<FeedMessage>>> {
        Box::pin(async move {
            let client = self.get().await?;
            // The devices by their newest message, then each one's newest messages.
            let keys: Vec<String> = client
                .query(
                    "SELECT device_key, max(id) AS newest FROM messages
                     WHERE device_key IS NOT NULL
                     GROUP BY device_key ORDER BY newest DESC LIMIT $1",
                    &[&limit(Some(n_devices))],
                )
                .await
                .map_err(fail)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let sql = format!(
                "{} WHERE m.device_key = $1 ORDER BY m.id DESC LIMIT $2",
                select(false)
            );
            let mut feeds = Vec::with_capacity(keys.len());
            for key in keys {
                let rows = client
                    .query(&sql, &[&key, &limit(Some(n))])
                    .await
                    .map_err(fail)?;
                let mut messages = rows
                    .iter()
                    .map(|row| {
                        let mut message = MessageRow::from(row)?.feed_message()?;
                        message.patient = None;
                        Ok(message)
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                super::alarms::attach(&client, &mut messages).await?;
                feeds.push(messages);
            }
            Ok(feeds)
        })
    }

    fn alarms(&self, query: AlarmQuery) -> StoreFuture<'_, Vec<AlarmRow>> {
        Box::pin(async move {
            let client = self.get().await?;
            super::alarms::read_alarms(&client, &query).await
        })
    }

    fn patient_feed<'a>(
        &'a self,
        key: &'a str,
        n: usize,
    ) -> StoreFuture<'a, Option<(PatientData, Vec<FeedMessage>)>> {
        Box::pin(async move {
            let client = self.get().await?;
            let Some((id, patient)) = patient_row(&client, key).await? else {
                return Ok(None);
            };
            let sql = format!(
                "{} WHERE m.patient = $1 AND m.outcome = 'accepted' ORDER BY m.id DESC LIMIT $2",
                select(false)
            );
            let rows = client
                .query(&sql, &[&id, &limit(Some(n))])
                .await
                .map_err(fail)?;
            let mut messages = rows
                .iter()
                .map(|row| MessageRow::from(row)?.feed_message())
                .collect::<Result<Vec<_>, _>>()?;
            super::alarms::attach(&client, &mut messages).await?;
            Ok(Some((patient, messages)))
        })
    }

    fn observations<'a>(
        &'a self,
        key: &'a str,
        query: ObservationQuery,
    ) -> StoreFuture<'a, Option<Vec<ObservationRow>>> {
        Box::pin(async move {
            let client = self.get().await?;
            let Some((id, _)) = patient_row(&client, key).await? else {
                return Ok(None);
            };
            let mut records = Vec::new();
            if query.limit == 0 {
                return Ok(Some(records));
            }
            let from_ms = query
                .since_ms
                .map_or(i64::MIN, |s| s.saturating_sub(HOUR_MS));
            let to_ms = query
                .until_ms
                .map_or(i64::MAX, |u| u.saturating_add(HOUR_MS));
            let mut upper = query.after.map_or(i64::MAX, |a| a.message_id);
            loop {
                let page = record_messages(&client, id, upper, from_ms, to_ms, PAGE).await?;
                let n_page = page.len();
                for message in &page {
                    for observation in &message.observations {
                        if let Some(after) = query.after
                            && message.id == after.message_id
                            && observation.index <= after.index
                        {
                            continue;
                        }
                        if query.code.as_ref().is_some_and(|c| *c != observation.code)
                            || query.since_ms.is_some_and(|s| observation.observed_ms < s)
                            || query.until_ms.is_some_and(|u| observation.observed_ms >= u)
                        {
                            continue;
                        }
                        records.push(message.record(observation));
                        if records.len() >= query.limit {
                            return Ok(Some(records));
                        }
                    }
                }
                match page.last() {
                    Some(last) if n_page as i64 == PAGE => upper = last.id - 1,
                    _ => return Ok(Some(records)),
                }
            }
        })
    }

    fn trends<'a>(
        &'a self,
        key: &'a str,
        query: TrendQuery,
    ) -> StoreFuture<'a, Option<Vec<TrendSeries>>> {
        Box::pin(async move {
            let client = self.get().await?;
            let Some((id, _)) = patient_row(&client, key).await? else {
                return Ok(None);
            };
            let messages = record_messages(
                &client,
                id,
                i64::MAX,
                query.since_ms.saturating_sub(HOUR_MS),
                query.until_ms.saturating_add(HOUR_MS),
                i64::MAX,
            )
            .await?;
            let bucket_ms = query.bucket_ms.max(1);
            // Per code: text and units of the newest record, values per bucket.
            type Series = (String, String, BTreeMap<i64, Vec<f64>>);
            let mut series: BTreeMap<String, Series> = BTreeMap::new();
            for message in &messages {
                for o in &message.observations {
                    let Some(value) = o.numeric else { continue };
                    if query.code.as_ref().is_some_and(|c| *c != o.code)
                        || is_void(&o.status)
                        || o.observed_ms < query.since_ms
                        || o.observed_ms >= query.until_ms
                    {
                        continue;
                    }
                    let entry = series
                        .entry(o.code.clone())
                        .or_insert_with(|| (o.code_text.clone(), o.units.clone(), BTreeMap::new()));
                    entry
                        .2
                        .entry(o.observed_ms.div_euclid(bucket_ms) * bucket_ms)
                        .or_default()
                        .push(value);
                }
            }
            Ok(Some(
                series
                    .into_iter()
                    .map(|(code, (code_text, units, buckets))| TrendSeries {
                        code,
                        code_text,
                        units,
                        buckets: buckets
                            .into_iter()
                            .map(|(start_ms, mut values)| TrendBucket {
                                start_ms,
                                count: values.len() as u64,
                                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                                median: median(&mut values),
                            })
                            .collect(),
                    })
                    .collect(),
            ))
        })
    }

    fn message(&self, id: i64) -> StoreFuture<'_, Option<MessageDetail>> {
        Box::pin(async move {
            let client = self.get().await?;
            let sql = format!("{} WHERE m.id = $1", select(true));
            let Some(row) = client.query_opt(&sql, &[&id]).await.map_err(fail)? else {
                return Ok(None);
            };
            let row = MessageRow::from(&row)?;
            let summary = row.summary()?;
            Ok(Some(MessageDetail {
                summary,
                sending_application: row.sending_application.clone(),
                sending_facility: row.sending_facility.clone(),
                version: row.version.clone(),
                location: row.location.clone(),
                device: row.device.clone(),
                last_received_at: row.last_received_ms.map(time).transpose()?,
                observations: observations(row.observations.as_deref())?,
            }))
        })
    }
}
