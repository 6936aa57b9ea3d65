//! A patient's records, paged newest first by an opaque cursor, and their numeric values
//! summarised per time bucket (count, min, median, max).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params::{self, Query};
use super::{BadParameter, NotFound, Unavailable};
use crate::documents::reading::{Reading, VitalKind};
use crate::http::HttpState;
use crate::http::problem::ApiError;
use crate::store::{
    ObservationQuery, ObservationRow, RecordPosition, TrendBucket, TrendQuery, TrendSeries,
    utc_text,
};

/// The most buckets one trends request may ask for.
pub const MAX_BUCKETS: i64 = 10_000;
/// The shortest bucket.
pub const MIN_BUCKET_MS: i64 = 1000;
/// The bucket when none is given.
const DEFAULT_BUCKET_MS: i64 = 60_000;
/// The range when `since` is not given: the hour before `until`.
const DEFAULT_RANGE_MS: i64 = 3600 * 1000;

/// The query of `GET /api/v1/patients/{key}/observations`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObservationsParams {
    /// Only this observation code (OBX-3.1).
    code: Option<String>,
    /// Only records observed at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only records observed before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// At most this many records.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
}

/// One observation record: the reading with the message's control id and device, and the
/// equipment that measured it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ObservationRecord {
    /// The observation, classified.
    #[serde(flatten)]
    pub reading: Reading,
    /// MSH-10 of its message.
    pub control_id: String,
    /// The sending device (MSH-3).
    pub device: String,
    /// OBX-18.1, the equipment (EUI-64 in IHE PCD-01).
    pub equipment: String,
}

impl From<ObservationRow> for ObservationRecord {
    fn from(row: ObservationRow) -> ObservationRecord {
        ObservationRecord {
            reading: Reading::new(&row.observation, row.message_id, row.received_at),
            control_id: row.control_id,
            device: row.device,
            equipment: row.observation.equipment,
        }
    }
}

/// A page of records, newest message first and OBX order within a message.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ObservationsPage {
    /// The records.
    pub records: Vec<ObservationRecord>,
    /// Pass it as `cursor` for the next page; `null` on the last one.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A patient's observation records.
#[utoipa::path(
    get,
    path = "/api/v1/patients/{key}/observations",
    tag = "patients",
    params(
        ("key" = String, Path, description = "The patient's identity key, percent-encoded"),
        ObservationsParams,
    ),
    responses(
        (status = 200, description = "A page of records, newest first", body = ObservationsPage),
        BadParameter,
        NotFound,
        Unavailable,
    ),
)]
pub async fn observations(
    State(state): State<HttpState>,
    key: Result<Path<String>, PathRejection>,
    Query(query): Query<ObservationsParams>,
) -> Result<Json<ObservationsPage>, ApiError> {
    let key = params::path_text(key, "key")?;
    let since = params::time("since", query.since.as_deref())?;
    let until = params::time("until", query.until.as_deref())?;
    params::range(since, until)?;
    let limit = params::limit(query.limit.as_deref())?;
    let after = params::parse_record_cursor(query.cursor.as_deref())?;
    let rows = state
        .store
        .observations(
            &key,
            ObservationQuery {
                code: query.code,
                since_ms: since.map(|t| t.as_millisecond()),
                until_ms: until.map(|t| t.as_millisecond()),
                after,
                // One more than asked: whether there is a next page, without an empty one.
                limit: limit + 1,
            },
        )
        .await?
        .ok_or_else(|| ApiError::not_found("patient"))?;
    let more = rows.len() > limit;
    let records: Vec<ObservationRecord> = rows
        .into_iter()
        .take(limit)
        .map(ObservationRecord::from)
        .collect();
    let next_cursor = match records.last() {
        Some(last) if more => Some(params::record_cursor(RecordPosition {
            message_id: last.reading.message_id,
            index: last.reading.index,
        })),
        _ => None,
    };
    Ok(Json(ObservationsPage {
        records,
        next_cursor,
    }))
}

/// The query of `GET /api/v1/patients/{key}/trends`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendsParams {
    /// Only this observation code (OBX-3.1); by default every code with numeric values.
    code: Option<String>,
    /// The range's start (RFC 3339, observation time); by default an hour before `until`.
    #[param(format = DateTime)]
    since: Option<String>,
    /// The range's end (RFC 3339); by default now.
    #[param(format = DateTime)]
    until: Option<String>,
    /// The bucket length: a number and a unit (`1500ms`, `60s`, `5m`, `1h`), at least 1s
    /// and at most 24h; the range may hold at most 10,000 buckets.
    #[param(default = "60s")]
    bucket: Option<String>,
}

/// One bucket's numeric values.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct TrendBucketBody {
    /// The bucket's start, a multiple of the bucket length since the Unix epoch.
    #[schema(format = DateTime)]
    pub start: String,
    /// How many values.
    pub count: u64,
    /// The smallest.
    pub min: f64,
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The largest.
    pub max: f64,
}

impl From<TrendBucket> for TrendBucketBody {
    fn from(bucket: TrendBucket) -> TrendBucketBody {
        TrendBucketBody {
            start: utc_text(timestamp(bucket.start_ms)),
            count: bucket.count,
            min: bucket.min,
            median: bucket.median,
            max: bucket.max,
        }
    }
}

/// One code's buckets.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct TrendSeriesBody {
    /// OBX-3.1.
    pub code: String,
    /// OBX-3.2 of the newest record in the range.
    pub code_text: String,
    /// OBX-6.1 of the newest record in the range.
    pub units: String,
    /// The bedside vital this code is, if it is one.
    #[schema(required = true)]
    pub vital: Option<VitalKind>,
    /// The buckets that hold at least one value, oldest first.
    pub buckets: Vec<TrendBucketBody>,
}

impl From<TrendSeries> for TrendSeriesBody {
    fn from(series: TrendSeries) -> TrendSeriesBody {
        TrendSeriesBody {
            vital: VitalKind::of_code(&series.code),
            code: series.code,
            code_text: series.code_text,
            units: series.units,
            buckets: series.buckets.into_iter().map(Into::into).collect(),
        }
    }
}

/// A patient's trends.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Trends {
    /// The range's start.
    #[schema(format = DateTime)]
    pub since: String,
    /// The range's end.
    #[schema(format = DateTime)]
    pub until: String,
    /// The bucket length in seconds.
    pub bucket_seconds: f64,
    /// One series per code.
    pub series: Vec<TrendSeriesBody>,
}

/// A patient's numeric values per code and time bucket.
#[utoipa::path(
    get,
    path = "/api/v1/patients/{key}/trends",
    tag = "patients",
    params(
        ("key" = String, Path, description = "The patient's identity key, percent-encoded"),
        TrendsParams,
    ),
    responses(
        (status = 200, description = "Count, min, median and max per bucket", body = Trends),
        BadParameter,
        NotFound,
        Unavailable,
    ),
)]
pub async fn trends(
    State(state): State<HttpState>,
    key: Result<Path<String>, PathRejection>,
    Query(query): Query<TrendsParams>,
) -> Result<Json<Trends>, ApiError> {
    let key = params::path_text(key, "key")?;
    let since = params::time("since", query.since.as_deref())?;
    let until = params::time("until", query.until.as_deref())?;
    params::range(since, until)?;
    let bucket_ms = match query.bucket.as_deref() {
        Some(text) => params::duration_ms("bucket", text, MIN_BUCKET_MS)?,
        None => DEFAULT_BUCKET_MS,
    };
    let until_ms = until.unwrap_or_else(jiff::Timestamp::now).as_millisecond();
    let since_ms = match since {
        Some(since) => since.as_millisecond(),
        None => until_ms - DEFAULT_RANGE_MS,
    };
    if since_ms >= until_ms {
        // Only `since` given, and it is now or later.
        return Err(ApiError::bad_parameter(
            "since",
            "expected a time before `until`",
        ));
    }
    let n_buckets = (until_ms - 1).div_euclid(bucket_ms) - since_ms.div_euclid(bucket_ms) + 1;
    if n_buckets > MAX_BUCKETS {
        return Err(ApiError::bad_parameter(
            "bucket",
            format!(
                "the range holds {n_buckets} buckets of this length, at most {MAX_BUCKETS}: \
                 make the bucket longer or the range shorter"
            ),
        ));
    }
    let series = state
        .store
        .trends(
            &key,
            TrendQuery {
                code: query.code,
                since_ms,
                until_ms,
                bucket_ms,
            },
        )
        .await?
        .ok_or_else(|| ApiError::not_found("patient"))?;
    Ok(Json(Trends {
        since: utc_text(timestamp(since_ms)),
        until: utc_text(timestamp(until_ms)),
        bucket_seconds: bucket_ms as f64 / 1000.0,
        series: series.into_iter().map(Into::into).collect(),
    }))
}

/// A time the API was given or the store computed, back as a timestamp (always in range:
/// it came from one, or from a bucket of a range between two).
fn timestamp(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}
