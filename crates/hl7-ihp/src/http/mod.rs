//! The HTTP side: `/healthz` (the store's health) and `/metrics` (the API and dashboard
//! come later), bound to loopback by default, served by [`serve::run`] with its own limits.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::{Extra, Metrics};
use crate::store::{Health, Store};

pub mod assets;
pub mod live_api;
pub mod problem;
pub mod serve;
pub mod sse;

/// Numbers kept outside [`Metrics`] (the store's, the exporter's), read at each scrape.
pub type ExtraMetrics = Arc<dyn Fn() -> Vec<Extra> + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The receiver's metrics.
    pub metrics: Arc<Metrics>,
    /// The store's and the exporter's numbers.
    pub extra: ExtraMetrics,
    /// The store, for `/healthz`.
    pub store: Arc<dyn Store>,
    /// The live view: patients, devices, stats and the event stream.
    pub live: Arc<crate::live::Live>,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(live_api::routes())
        .merge(assets::routes())
        .with_state(state)
}

/// 200 while the store stores; 503 with the reason while it fails (a full disk, a deleted
/// database file), so that a load balancer or a monitor stops trusting this receiver.
async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    let (status, body) = match state.store.health() {
        Health::Ok => (StatusCode::OK, serde_json::json!({ "status": "ok" })),
        Health::Failing { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "failing", "reason": reason }),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&(state.extra)()),
    )
}
