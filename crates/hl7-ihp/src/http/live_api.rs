//! The live view's endpoints (docs/api.md): `GET /api/v1/patients`, `/api/v1/patients/{key}`,
//! `/api/v1/devices`, `/api/v1/stats`, and the event stream `/api/v1/events` ([`super::sse`]).
//! Patients and devices come from memory ([`crate::live::Live`]), never from the store; the
//! stats ask the store only for the export lag.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use serde::Deserialize;
use utoipa::IntoParams;

use super::HttpState;
use super::api::params::{Query, path_text};
use super::api::{BadParameter, NoParams, NotFound, Unavailable};
use super::problem::{ApiError, Problem};
use super::sse;
use crate::documents::reading::{Alert, AlertLevel, Reading, ValueState, VitalKind};
use crate::live::shapes::{
    ConnectionCounts, DeviceKind, DeviceList, DeviceView, ExportLag, MinuteCounts,
    ObservationEvent, PatientBody, PatientList, PatientView, RejectedEvent, ResetEvent, Sparkline,
    Stats, Status, StatusEvent,
};
use crate::live::{MAX_QUERY_CHARS, PatientSort, millis_text};

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
    tags((name = "live", description = "The live view: devices, statistics, the event stream")),
    components(schemas(
        PatientList,
        PatientView,
        PatientBody,
        Sparkline,
        Status,
        Reading,
        VitalKind,
        ValueState,
        crate::marks::Mark,
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

/// The query of `GET /api/v1/patients`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatientsParams {
    /// A case-insensitive part of the id, the name or the location (at most 200 characters).
    q: Option<String>,
    /// `location` (default), `name`, `severity` (most severe first) or `staleness` (longest
    /// silent first).
    #[param(value_type = Option<String>, pattern = "^(location|name|severity|staleness)$")]
    sort: Option<String>,
}

/// Every patient with their status and latest values.
#[utoipa::path(
    get,
    path = "/api/v1/patients",
    tag = "patients",
    params(PatientsParams),
    responses(
        (status = 200, description = "The patients", body = PatientList),
        BadParameter,
    )
)]
async fn patients(
    State(state): State<HttpState>,
    Query(params): Query<PatientsParams>,
) -> Result<Response, ApiError> {
    let sort = match params.sort.as_deref() {
        None => PatientSort::default(),
        Some(text) => text
            .parse()
            .map_err(|detail: String| ApiError::bad_parameter("sort", detail))?,
    };
    let q = params.q.as_deref();
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
    tag = "patients",
    params(
        ("key" = String, Path, description = "The identity key, percent-encoded"),
        NoParams,
    ),
    responses(
        (status = 200, description = "The patient", body = PatientView),
        BadParameter,
        NotFound,
    )
)]
async fn patient(
    State(state): State<HttpState>,
    key: Result<Path<String>, PathRejection>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Response, ApiError> {
    let key = path_text(key, "key")?;
    state
        .live
        .patient(&key, now_ms())
        .map(json_body)
        .ok_or_else(|| ApiError::not_found("patient"))
}

/// Every device: OBX-18's equipment id, else the sending application; and the state of each
/// `--connect` link.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "live",
    params(NoParams),
    responses(
        (status = 200, description = "The devices", body = DeviceList),
        BadParameter,
    )
)]
async fn devices(
    State(state): State<HttpState>,
    Query(NoParams {}): Query<NoParams>,
) -> Json<DeviceList> {
    Json(DeviceList {
        devices: state.live.devices(now_ms()),
        links: state.links.statuses(),
    })
}

/// Messages per minute over the last 24 h, connections and the export lag.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "live",
    params(NoParams),
    responses(
        (status = 200, description = "The numbers", body = Stats),
        BadParameter,
        Unavailable,
    )
)]
async fn stats(
    State(state): State<HttpState>,
    Query(NoParams {}): Query<NoParams>,
) -> Result<Json<Stats>, ApiError> {
    use std::sync::atomic::Ordering;
    let now = now_ms();
    // The slowest output's lag: the files are as current as the least current of them.
    let slowest = match state.live.export_counters() {
        Some(counters) => crate::export::current_outputs(counters, &*state.store)
            .await
            .into_iter()
            .map(|(_, stats)| stats.watermark)
            .min(),
        None => None,
    };
    let export = match slowest {
        Some(watermark) => {
            let lag = crate::export::lag(&*state.store, watermark, now).await?;
            Some(ExportLag {
                watermark,
                newest: lag.newest,
                lag_messages: lag.messages,
                lag_seconds: lag.seconds,
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
