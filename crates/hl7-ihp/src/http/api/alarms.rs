//! `GET /api/v1/alarms`: stored alarms (`ORU^R40`, IHE PCD-04) newest first, filtered by
//! patient, state and device, paged by an opaque cursor.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params::{self, Query};
use super::{BadParameter, Unavailable};
use crate::http::HttpState;
use crate::http::problem::ApiError;
use crate::live::alarms::AlarmView;
use crate::store::AlarmQuery;

/// The query of `GET /api/v1/alarms`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlarmsParams {
    /// Only this patient's alarms (identity key).
    patient: Option<String>,
    /// Only alarms in this state (`active`, `inactive`, `latched`, …; case ignored).
    state: Option<String>,
    /// Only alarms this device raised (`source`: OBX-18.1, else MSH-3), with or without a
    /// patient.
    device: Option<String>,
    /// At most this many alarms.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page, unchanged.
    cursor: Option<String>,
}

/// A page of alarms, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct AlarmsPage {
    /// The alarms.
    pub alarms: Vec<AlarmView>,
    /// Pass it as `cursor` for the next page; `null` on the last one.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Stored alarms, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/alarms",
    tag = "alarms",
    params(AlarmsParams),
    responses(
        (status = 200, description = "A page of alarms, newest first", body = AlarmsPage),
        BadParameter,
        Unavailable,
    ),
)]
pub async fn alarms(
    State(state): State<HttpState>,
    Query(query): Query<AlarmsParams>,
) -> Result<Json<AlarmsPage>, ApiError> {
    let limit = params::limit(query.limit.as_deref())?;
    let before = params::parse_message_cursor(query.cursor.as_deref())?;
    let rows = state
        .store
        .alarms(AlarmQuery {
            patient: query.patient,
            state: query.state,
            device: query.device,
            before,
            // One more than asked: whether there is a next page, without an empty one.
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() > limit;
    let shown = &rows[..rows.len().min(limit)];
    let next_cursor = match (more, shown.last()) {
        (true, Some(last)) => Some(params::message_cursor(last.id)),
        _ => None,
    };
    Ok(Json(AlarmsPage {
        alarms: shown.iter().map(AlarmView::of_row).collect(),
        next_cursor,
    }))
}
