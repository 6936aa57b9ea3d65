//! The HTTP side: `/healthz` and `/metrics` (the API and dashboard come later), bound to
//! loopback by default (DESIGN.md §8), served by [`serve::run`] with its own limits.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::{Extra, Metrics};

pub mod serve;

/// Numbers kept outside [`Metrics`] (the store's, the exporter's), read at each scrape.
pub type ExtraMetrics = Arc<dyn Fn() -> Vec<Extra> + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The receiver's metrics.
    pub metrics: Arc<Metrics>,
    /// The store's and the exporter's numbers.
    pub extra: ExtraMetrics,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}\n",
    )
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&(state.extra)()),
    )
}
