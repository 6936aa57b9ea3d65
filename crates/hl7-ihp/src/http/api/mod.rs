//! The JSON API under `/api/v1` (docs/api.md): a patient's observations and trends, the
//! message browser, the OpenAPI document, and problem details for every path under it that
//! does not exist. The live view's endpoints (patients, devices, stats, events) are merged in
//! by the router next to these.
//!
//! - [`params`]: the query string, times, durations, page sizes and cursors, read once.
//! - [`observations`]: `/patients/{key}/observations` and `/patients/{key}/trends`.
//! - [`messages`]: `/messages` and `/messages/{id}`, with the parsed tree of a message.

pub mod alarms;
pub mod messages;
pub mod observations;
pub mod params;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};

use self::params::Query;
use super::HttpState;
use super::problem::{ApiError, Problem};

/// The routes of this module, to merge into the router.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/api/v1/patients/{key}/observations",
            get(observations::observations),
        )
        .route("/api/v1/patients/{key}/trends", get(observations::trends))
        .route("/api/v1/messages", get(messages::messages))
        .route("/api/v1/messages/{id}", get(messages::message))
        .route("/api/v1/alarms", get(alarms::alarms))
        .route("/api/v1/openapi.json", get(openapi_document))
        // Below every route under /api/v1, more specific routes win: what is left is unknown.
        .route("/api/v1", any(not_found))
        .route("/api/v1/", any(not_found))
        .route("/api/v1/{*rest}", any(not_found))
}

/// 404 for a path under `/api/v1` that names nothing.
async fn not_found() -> ApiError {
    ApiError::not_found("resource")
}

/// 405 for a path that exists, asked with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// The OpenAPI 3.1 document of this receiver's HTTP side.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    params(NoParams),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", body = Object),
        BadParameter,
    ),
)]
pub async fn openapi_document(Query(NoParams {}): Query<NoParams>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document_json(),
    )
}

/// The query of an endpoint that takes none.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NoParams {}

/// A parameter is wrong; `parameter` names it.
#[derive(utoipa::IntoResponses)]
#[response(status = 400, content_type = "application/problem+json")]
pub struct BadParameter(pub Problem);

/// No such resource (patient, message).
#[derive(utoipa::IntoResponses)]
#[response(status = 404, content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

/// The store could not answer now.
#[derive(utoipa::IntoResponses)]
#[response(status = 503, content_type = "application/problem+json")]
pub struct Unavailable(pub Problem);

#[cfg(test)]
mod tests;
