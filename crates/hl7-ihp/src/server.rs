//! The receiver: wires the store, the exporter, the HTTP side and the MLLP listener
//! together, and takes them down in order on shutdown.
//!
//! `run` takes already-bound listeners and a shutdown future, so `main` and the tests drive
//! the same code (STYLE.md §5).

use std::future::Future;
use std::sync::Arc;

use std::io;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ReceiveConfig;
use crate::datadir::DataDir;
use crate::events::Events;
use crate::export::{self, ExportCounters, ExportOptions};
use crate::http::ExtraMetrics;
use crate::http::{self, HttpState};
use crate::ingest::{Ingest, IngestSettings};
use crate::live::{self, Live};
use crate::metrics::{Extra, Metrics};
use crate::mllp::budget::PartialBudget;
use crate::mllp::listener;
use crate::rate_limit::RateLimit;
use crate::shutdown::Shutdown;
use crate::store::{self, Store, StoreRead};

/// Why the receiver could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// An address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A task the server started failed.
    #[error("{0}")]
    Task(String),
}

/// Binds the MLLP and (unless off) HTTP addresses of a configuration.
pub async fn bind(
    config: &ReceiveConfig,
) -> Result<(TcpListener, Option<TcpListener>), ServerError> {
    let bind = |address| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })
    };
    let mllp = bind(config.mllp.listen).await?;
    let http = match config.http.listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    Ok((mllp, http))
}

/// Runs the receiver over `data_dir` (prepared and locked by [`crate::datadir::prepare`];
/// the caller keeps it locked until the runtime has stopped) until `shutdown` completes:
/// then it stops accepting, lets connections finish and answer the message in hand, brings
/// the JSON files up to date and returns.
pub async fn run(
    config: ReceiveConfig,
    data_dir: &DataDir,
    mllp: TcpListener,
    http_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let store_config = config.store;
    let store = tokio::task::spawn_blocking(move || {
        store::open(&store_config.location, &store_config.options)
    })
    .await
    .map_err(|error| ServerError::Task(format!("opening the store: {error}")))??;
    let metrics = Arc::new(Metrics::default());
    let budget = PartialBudget::new(config.mllp.limits.max_partial_bytes);
    let events = Events::new();
    let export_counters = Arc::new(ExportCounters::new(config.export.files));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Checked and prepared by `datadir::prepare`; the exporter opens it again itself.
    let patients_dir = data_dir.patients_dir().to_path_buf();
    // The exporter stops after the connections, so its final round sees their last messages.
    let (stop_exporter, exporter_stop) = Shutdown::new();
    let exporter = tokio::spawn(export::run(
        Arc::clone(&store),
        patients_dir,
        ExportOptions {
            files: config.export.files,
            fields: config.export.fields,
            max_records: config.export.json_max_records,
            min_interval: config.export.json_min_interval,
            name_case: data_dir.name_case(),
            ..ExportOptions::default()
        },
        events.clone(),
        Arc::clone(&export_counters),
        exporter_stop,
    ));

    // The live view behind the API's patients, devices, stats and events; only when HTTP
    // serves it. It follows the store like the exporter, off the ACK path.
    let (stop_live, live_stop) = Shutdown::new();
    let live = http_listener.as_ref().map(|_| {
        let live = Live::new(config.live, Some(Arc::clone(&export_counters)));
        let task = tokio::spawn(live::run(
            Arc::clone(&live),
            Arc::clone(&store) as Arc<dyn StoreRead>,
            events.subscribe(),
            live_stop.into_requested(),
        ));
        (live, task)
    });

    let http_task = http_listener
        .zip(live.as_ref())
        .map(|(listener, (live, _))| {
            let state = HttpState {
                metrics: Arc::clone(&metrics),
                extra: extra_metrics(Arc::clone(&store), Arc::clone(&budget)),
                store: Arc::clone(&store),
                access: http::access::Access::new(config.http.token.as_ref()),
                live: Arc::clone(live),
            };
            tokio::spawn(http::serve::run(
                listener,
                http::router(state),
                config.http.limits,
                Arc::clone(&metrics),
                stop_rx.clone(),
            ))
        });

    // Its summaries of held-back lines go on until the end, after the connections' last.
    let log_limit = Arc::new(RateLimit::default());
    let (stop_flusher, flusher_stop) = Shutdown::new();
    let log_flusher = {
        let log_limit = Arc::clone(&log_limit);
        tokio::spawn(async move { log_limit.run_flusher(flusher_stop.into_requested()).await })
    };
    let ingest = Arc::new(Ingest::new(
        Arc::clone(&store),
        IngestSettings {
            ack_mode: config.mllp.ack_mode,
            ack_application: config.mllp.ack_application,
            ack_facility: config.mllp.ack_facility,
            patient_identity: config.mllp.patient_identity,
        },
        Arc::clone(&metrics),
        events,
        Arc::clone(&log_limit),
    ));
    let accept = tokio::spawn(listener::run(
        mllp,
        ingest,
        config.mllp.limits,
        Arc::clone(&metrics),
        budget,
        stop_rx,
    ));

    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing the messages in hand");
    let _ = stop_tx.send(true);
    if let Err(error) = accept.await {
        tracing::error!(%error, "the listener task failed");
    }
    // The event streams end with the live view, so none holds the HTTP side's drain up.
    stop_live.trigger();
    if let Some((_, task)) = live
        && let Err(error) = task.await
    {
        tracing::error!(%error, "the live view task failed");
    }
    stop_exporter.trigger();
    match exporter.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "the exporter failed"),
        Err(error) => tracing::error!(%error, "the exporter task failed"),
    }
    if let Some(task) = http_task {
        let _ = task.await;
    }
    stop_flusher.trigger();
    let _ = log_flusher.await;
    tracing::info!("stopped");
    Ok(())
}

/// The store's and the partial-frame budget's numbers for `/metrics` (the exporter's are
/// rendered by the handler, which reads their lag from the store).
fn extra_metrics(store: Arc<dyn Store>, budget: Arc<PartialBudget>) -> ExtraMetrics {
    Arc::new(move || {
        let stats = store.stats();
        let counter = |name, help, value: u64| Extra {
            name,
            help,
            counter: true,
            value: i64::try_from(value).unwrap_or(i64::MAX),
        };
        vec![
            counter(
                "hl7ihp_store_transactions_total",
                "Store transactions (group commits).",
                stats.n_transactions,
            ),
            counter(
                "hl7ihp_store_failed_transactions_total",
                "Store transactions rolled back.",
                stats.n_failed_transactions,
            ),
            counter(
                "hl7ihp_store_messages_total",
                "Messages stored as new.",
                stats.n_stored,
            ),
            counter(
                "hl7ihp_store_refusals_repeated_total",
                "Refused frames counted on an identical kept one instead of kept again.",
                stats.n_repeated,
            ),
            counter(
                "hl7ihp_control_ids_reused_total",
                "Messages reusing a stored control id with other content.",
                stats.n_reused_control_ids,
            ),
            Extra {
                name: "hl7ihp_partial_frame_bytes",
                help: "Bytes held now in unfinished frames, against --max-partial-bytes.",
                counter: false,
                value: i64::try_from(budget.held()).unwrap_or(i64::MAX),
            },
        ]
    })
}
