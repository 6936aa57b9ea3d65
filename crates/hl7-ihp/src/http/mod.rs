//! The HTTP side: `/healthz` (the store's health), `/metrics`, and the JSON API under
//! `/api/v1` ([`api`], described by [`openapi`]), all but `/healthz` behind the bearer token
//! when one is set ([`access`]), and the dashboard's files ([`assets`]) outside it; bound to
//! loopback by default, served by [`serve::run`] with its own limits.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::{Extra, Metrics};
use crate::store::{Health, Store};

pub mod access;
pub mod api;
pub mod assets;
pub mod live_api;
pub mod openapi;
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
    /// The store, for `/healthz` and the API.
    pub store: Arc<dyn Store>,
    /// Whether requests need the bearer token.
    pub access: access::Access,
    /// The live view: patients, devices, stats and the event stream.
    pub live: Arc<crate::live::Live>,
    /// The `--connect` links' states (none without client mode).
    pub links: Arc<crate::links::Links>,
    /// The leases this receiver asked for (`/metrics`).
    pub leases: Arc<crate::store::lease::Leases>,
}

/// The router: every path but the dashboard's files behind [`access::require_token`], which
/// runs first.
pub fn router(state: HttpState) -> Router {
    let guarded = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .merge(live_api::routes())
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::require_token,
        ))
        .with_state(state);
    // The dashboard's files outside the token's layer: they hold no patient data, and a
    // browser cannot send the token when it opens a page (the page then asks for it).
    // Every other path, unknown ones too, goes through the layer.
    assets::routes().fallback_service(guarded)
}

/// Whether the receiver can store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Storing works.
    Ok,
    /// Storing fails; messages get a reject.
    Failing,
}

/// What `/healthz` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HealthBody {
    /// Whether the store stores.
    pub status: HealthStatus,
    /// Why it fails, without patient data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// 200 while the store stores; 503 with the reason while it fails (a full disk, a deleted
/// database file), so that a load balancer or a monitor stops trusting this receiver.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The store stores", body = HealthBody),
        (status = 503, description = "The store fails", body = HealthBody),
    ),
)]
async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    let (status, body) = match state.store.health() {
        Health::Ok => (
            StatusCode::OK,
            HealthBody {
                status: HealthStatus::Ok,
                reason: None,
            },
        ),
        Health::Failing { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            HealthBody {
                status: HealthStatus::Failing,
                reason: Some(reason),
            },
        ),
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}

/// The receiver's counters in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String,
         content_type = "text/plain; version=0.0.4"),
    ),
)]
async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let mut text = state.metrics.render(&(state.extra)());
    state.links.render_metrics(&mut text);
    state.leases.render_metrics(&mut text);
    if let Some(counters) = state.live.export_counters() {
        export_metrics(&mut text, &*state.store, counters).await;
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The exporter's numbers, one series per output (`output="json"`, `output="ndjson"`),
/// with the lag read from the store now: a stuck exporter's lag keeps growing.
async fn export_metrics(
    out: &mut String,
    store: &dyn crate::store::StoreRead,
    counters: &crate::export::ExportCounters,
) {
    use std::fmt::Write as _;
    let outputs = crate::export::current_outputs(counters, store).await;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut lags = Vec::with_capacity(outputs.len());
    for (output, stats) in &outputs {
        // A store that cannot answer now leaves the lag out rather than reporting 0.
        if let Ok(lag) = crate::export::lag(store, stats.watermark, now_ms).await {
            lags.push((*output, lag));
        }
    }
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&crate::export::OutputStats) -> u64,
    );
    let series: [Series; 5] = [
        (
            "hl7ihp_export_rounds_total",
            "counter",
            "Exporter flushes.",
            |s| s.n_rounds,
        ),
        (
            "hl7ihp_export_files_written_total",
            "counter",
            "Patient files written (replaced or appended to).",
            |s| s.n_files_written,
        ),
        (
            "hl7ihp_export_write_failures_total",
            "counter",
            "Patient files that could not be written (retried).",
            |s| s.n_write_failures,
        ),
        (
            "hl7ihp_export_bytes_written_total",
            "counter",
            "Bytes written to patient files.",
            |s| s.n_bytes_written,
        ),
        (
            "hl7ihp_export_rebuilt_total",
            "counter",
            "Patient files rebuilt from the store rather than from their last version.",
            |s| s.n_rebuilt,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (output, stats) in &outputs {
            let _ = writeln!(
                out,
                "{name}{{output=\"{}\"}} {}",
                output.name(),
                value(stats)
            );
        }
    }
    let watermarks = outputs.iter().map(|(o, s)| (*o, s.watermark.to_string()));
    gauge(
        out,
        "hl7ihp_export_watermark",
        "Every message up to this id is in the output's files.",
        watermarks,
    );
    let messages = lags.iter().map(|(o, lag)| (*o, lag.messages.to_string()));
    gauge(
        out,
        "hl7ihp_export_lag_messages",
        "Messages stored and not yet in the output's files.",
        messages,
    );
    let seconds = lags
        .iter()
        .map(|(o, lag)| (*o, format!("{:.3}", lag.seconds)));
    gauge(
        out,
        "hl7ihp_export_lag_seconds",
        "Age of the oldest message not yet in the output's files (0 when current): the one to alert on.",
        seconds,
    );
}

/// One gauge with a series per output.
fn gauge(
    out: &mut String,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (crate::export::Output, String)>,
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (output, value) in values {
        let _ = writeln!(out, "{name}{{output=\"{}\"}} {value}", output.name());
    }
}
