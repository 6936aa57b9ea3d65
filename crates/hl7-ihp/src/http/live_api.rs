//! The live view's endpoints (docs/api.md): `GET /api/v1/patients`, `/api/v1/patients/{key}`,
//! `/api/v1/devices`, `/api/v1/stats`, and the event stream `/api/v1/events` ([`super::sse`]).
//! Patients and devices come from memory ([`crate::live::Live`]), never from the store; the
//! stats ask the store only for the export lag.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use super::HttpState;
use super::problem::{ApiError, Problem};
use super::sse;
use crate::documents::reading::{Alert, AlertLevel, Reading, ValueState, VitalKind};
use crate::live::shapes::{
    ConnectionCounts, DeviceKind, DeviceList, DeviceView, ExportLag, MinuteCounts,
    ObservationEvent, PatientBody, PatientList, PatientView, RejectedEvent, ResetEvent, Sparkline,
    Stats, Status, StatusEvent,
};
use crate::live::{MAX_QUERY_CHARS, PatientSort, millis_text};
use crate::store::ChangeCursor;

/// The live view's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/patients", get(patients))
        .route("/api/v1/patients/{key}", get(patient))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/events", get(sse::events))
}

/// The live view's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(patients, patient, devices, stats, sse::events),
    components(schemas(
        PatientList,
        PatientView,
        PatientBody,
        Sparkline,
        Status,
        Reading,
        VitalKind,
        ValueState,
        Alert,
        AlertLevel,
        DeviceList,
        DeviceView,
        DeviceKind,
        Stats,
        MinuteCounts,
        ConnectionCounts,
        ExportLag,
        ObservationEvent,
        RejectedEvent,
        StatusEvent,
        ResetEvent,
        Problem
    ))
)]
pub struct LiveApi;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A JSON body already rendered.
fn json_body(body: String) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The query parameters, the last of each name winning; a query that cannot be read is a
/// bad parameter, not a 500.
fn parameters(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(pairs) = query.map_err(|_| {
        ApiError::bad_parameter("query", "the query string cannot be read as parameters")
    })?;
    Ok(pairs.into_iter().collect())
}

/// Every patient with their status and latest values.
#[utoipa::path(
    get,
    path = "/api/v1/patients",
    params(
        ("q" = Option<String>, Query,
            description = "Case-insensitive substring of the id, the name or the location"),
        ("sort" = Option<String>, Query,
            description = "`location` (default), `name`, `severity` (most severe first) or \
                `staleness` (longest silent first)"),
    ),
    responses(
        (status = 200, description = "The patients", body = PatientList),
        (status = 400, description = "A bad parameter", body = Problem,
            content_type = "application/problem+json"),
    )
)]
async fn patients(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let parameters = parameters(query)?;
    let sort = match parameters.get("sort").map(String::as_str) {
        None | Some("") => PatientSort::default(),
        Some(text) => text
            .parse()
            .map_err(|detail: String| ApiError::bad_parameter("sort", detail))?,
    };
    let q = parameters.get("q").map(String::as_str);
    if q.is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS) {
        return Err(ApiError::bad_parameter(
            "q",
            format!("expected at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(json_body(state.live.patient_list(q, sort, now_ms())))
}

/// One patient, as in the list.
#[utoipa::path(
    get,
    path = "/api/v1/patients/{key}",
    params(("key" = String, Path, description = "The identity key, percent-encoded")),
    responses(
        (status = 200, description = "The patient", body = PatientView),
        (status = 400, description = "A key that is not UTF-8", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem,
            content_type = "application/problem+json"),
    )
)]
async fn patient(
    State(state): State<HttpState>,
    key: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = key.map_err(|_| {
        ApiError::bad_parameter("key", "expected a percent-encoded UTF-8 identity key")
    })?;
    state
        .live
        .patient(&key, now_ms())
        .map(json_body)
        .ok_or_else(|| ApiError::not_found("patient"))
}

/// Every device: OBX-18's equipment id, else the sending application.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    responses((status = 200, description = "The devices", body = DeviceList))
)]
async fn devices(State(state): State<HttpState>) -> Json<DeviceList> {
    Json(DeviceList {
        devices: state.live.devices(now_ms()),
    })
}

/// Messages per minute over the last 24 h, connections and the export lag.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    responses(
        (status = 200, description = "The numbers", body = Stats),
        (status = 503, description = "The store did not answer", body = Problem,
            content_type = "application/problem+json"),
    )
)]
async fn stats(State(state): State<HttpState>) -> Result<Json<Stats>, ApiError> {
    use std::sync::atomic::Ordering;
    let now = now_ms();
    let export = match state.live.export_counters() {
        Some(counters) => {
            let watermark = counters.stats().watermark;
            let newest = state.store.feed_head().await?.position();
            let lag_messages = (newest - watermark).max(0);
            let mut lag_seconds = 0.0;
            if lag_messages > 0 {
                let oldest = state.store.feed(ChangeCursor::at(watermark), 1).await?;
                if let Some(message) = oldest.messages.first() {
                    let ms = now - message.received_at.as_millisecond();
                    lag_seconds = ms.max(0) as f64 / 1000.0;
                }
            }
            Some(ExportLag {
                watermark,
                newest,
                lag_messages,
                lag_seconds,
            })
        }
        None => None,
    };
    Ok(Json(Stats {
        generated_at: millis_text(now),
        minutes: state.live.minutes(now),
        connections: ConnectionCounts {
            open: state.metrics.connections_open.load(Ordering::Relaxed),
            total: state.metrics.connections_accepted.load(Ordering::Relaxed),
        },
        export,
    }))
}
