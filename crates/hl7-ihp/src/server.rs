//! The receiver: wires the store, the exporter, the HTTP side and the MLLP listener
//! together, and takes them down in order on shutdown.
//!
//! `run` takes already-bound listeners and a shutdown future, so `main` and the tests drive
//! the same code (STYLE.md §5).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::io;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::{Audit, AuditEvent};
use crate::config::ReceiveConfig;
use crate::datadir::DataDir;
use crate::events::Events;
use crate::export::{self, ExportCounters, ExportOptions};
use crate::http::ExtraMetrics;
use crate::http::{self, HttpState};
use crate::ingest::{Ingest, IngestSettings};
use crate::links::{LinkContext, Links};
use crate::live::{self, Live};
use crate::metrics::{Extra, Metrics};
use crate::mllp::budget::PartialBudget;
use crate::mllp::listener::{self, Gate, Transport};
use crate::rate_limit::RateLimit;
use crate::reload;
use crate::shutdown::Shutdown;
use crate::store::{self, Store, StoreRead};
use crate::tls::ServerTls;

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
    /// A listener's TLS files could not be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The audit trail's file could not be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The file.
        path: std::path::PathBuf,
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

/// The bound listeners of a receiver, with the TLS configurations loaded from their files.
#[derive(Debug)]
pub struct Listeners {
    /// Plain MLLP, unless `--listen off`.
    pub mllp: Option<TcpListener>,
    /// MLLP over TLS.
    pub mllp_tls: Option<(TcpListener, Arc<ServerTls>)>,
    /// HTTP, unless `--http off`.
    pub http: Option<TcpListener>,
    /// HTTPS's configuration, when HTTP is served over TLS.
    pub http_tls: Option<Arc<ServerTls>>,
    /// The extra plain MLLP listener of `--query-listen`.
    pub mllp_query: Option<TcpListener>,
}

impl Listeners {
    /// The plain MLLP listener's address.
    pub fn mllp_addr(&self) -> Option<SocketAddr> {
        self.mllp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The TLS MLLP listener's address.
    pub fn mllp_tls_addr(&self) -> Option<SocketAddr> {
        self.mllp_tls
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
    }

    /// The `--query-listen` listener's address.
    pub fn mllp_query_addr(&self) -> Option<SocketAddr> {
        self.mllp_query.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Loads the TLS files (a bad one is an error before anything listens) and binds the MLLP
/// and HTTP addresses of a configuration.
pub async fn bind(config: &ReceiveConfig) -> Result<Listeners, ServerError> {
    crate::tls::install_provider();
    let bind = |address| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })
    };
    let mllp_tls_config = match &config.mllp.tls {
        Some(tls) => Some((tls.listen, ServerTls::load(tls.files.clone())?)),
        None => None,
    };
    let http_tls = match &config.http.tls {
        Some(files) => Some(ServerTls::load(files.clone())?),
        None => None,
    };
    let mllp = match config.mllp.listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let mllp_tls = match mllp_tls_config {
        Some((address, tls)) => Some((bind(address).await?, tls)),
        None => None,
    };
    let http = match config.http.listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let mllp_query = match config.mllp.query_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    Ok(Listeners {
        mllp,
        mllp_tls,
        http,
        http_tls,
        mllp_query,
    })
}

/// Runs the receiver over `data_dir` (prepared and locked by [`crate::datadir::prepare`];
/// the caller keeps it locked until the runtime has stopped) until `shutdown` completes:
/// then it stops accepting, lets connections finish and answer the message in hand, brings
/// the JSON files up to date and returns.
pub async fn run(
    config: ReceiveConfig,
    data_dir: &DataDir,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let Listeners {
        mllp,
        mllp_tls,
        http: http_listener,
        http_tls,
        mllp_query,
    } = listeners;
    let (_hangup_sender, hangups) = reload::hangups();
    let (stop_audit, audit_stop) = Shutdown::new();
    let (audit, audit_task) = match &config.audit_log {
        Some(path) => {
            let (audit, writer) = Audit::open(path).map_err(|source| ServerError::Audit {
                path: path.clone(),
                source,
            })?;
            let task = tokio::spawn(writer.run(hangups.clone(), audit_stop));
            (audit, Some(task))
        }
        None => (Audit::off(), None),
    };
    let mut described = Vec::new();
    if let Some(address) = mllp.as_ref().and_then(|l| l.local_addr().ok()) {
        described.push(format!("mllp tcp {address}"));
    }
    if let Some(address) = mllp_tls.as_ref().and_then(|(l, _)| l.local_addr().ok()) {
        described.push(format!("mllp tls {address}"));
    }
    if let Some(address) = http_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        let scheme = if http_tls.is_some() { "https" } else { "http" };
        described.push(format!("{scheme} {address}"));
    }
    for target in &config.links.targets {
        described.push(format!("link {} {}", target.name, target.address));
    }
    audit.record(AuditEvent::ReceiverStarted {
        version: env!("CARGO_PKG_VERSION"),
        listeners: described,
    });
    // The links' TLS files are loaded before anything is opened: a bad one stops the start.
    let link_tls = match &config.links.tls {
        None => None,
        Some(tls) => {
            let client = crate::tls::client_config(
                tls.ca.as_deref(),
                tls.cert_and_key
                    .as_ref()
                    .map(|(cert, key)| (cert.as_path(), key.as_path())),
            )?;
            let server_name = match &tls.server_name {
                // Checked by the setting's parser.
                Some(name) => Some(
                    rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|_| ServerError::Task("bad --connect-tls-server-name".into()))?,
                ),
                None => None,
            };
            Some(crate::links::LinkTls {
                config: client,
                server_name,
            })
        }
    };
    let link_targets = config.links.targets.clone();
    let links = Links::new(&link_targets, link_tls.is_some());
    let store_config = config.store;
    let store = tokio::task::spawn_blocking(move || {
        store::open(&store_config.location, &store_config.options)
    })
    .await
    .map_err(|error| ServerError::Task(format!("opening the store: {error}")))??;
    let metrics = Arc::new(Metrics::default());
    // Who of several receivers on one store writes the patient files and reads each link
    // (store::lease); on SQLite every lease is held.
    let leases = crate::store::lease::Leases::new(Arc::clone(&store));
    // The TLS files are watched from the start: a renewed certificate needs no restart.
    let (stop_watchers, watchers_stop) = Shutdown::new();
    let mut watchers = Vec::new();
    for (name, tls) in [
        ("mllp", mllp_tls.as_ref().map(|(_, tls)| tls)),
        ("http", http_tls.as_ref()),
    ] {
        if let Some(tls) = tls {
            watchers.push(tokio::spawn(reload::watch_tls(
                name,
                Arc::clone(tls),
                hangups.clone(),
                Arc::clone(&audit),
                Arc::clone(&metrics),
                watchers_stop.clone(),
            )));
        }
    }
    let budget = PartialBudget::new(config.mllp.limits.max_partial_bytes);
    let events = Events::new();
    store.watch_other_writers(events.clone());
    let export_counters = Arc::new(ExportCounters::with_devices(
        config.export.files,
        config.export.device_files,
    ));
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
            device_files: config.export.device_files,
            ..ExportOptions::default()
        },
        events.clone(),
        Arc::clone(&export_counters),
        leases.take(crate::store::lease::EXPORT_LEASE),
        exporter_stop,
    ));

    // Retention: removes old messages in small steps through the writer, off the ACK path.
    let purge_counters = Arc::new(crate::retention::PurgeCounters::default());
    let (stop_purger, purger_stop) = Shutdown::new();
    let purger = tokio::spawn(crate::retention::run(
        Arc::clone(&store),
        config.retention,
        config.export.files,
        Arc::clone(&purge_counters),
        purger_stop,
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
                extra: extra_metrics(
                    Arc::clone(&store),
                    Arc::clone(&budget),
                    Arc::clone(&audit),
                    Arc::clone(&purge_counters),
                ),
                store: Arc::clone(&store),
                access: http::access::Access::new(config.http.token.as_ref()),
                live: Arc::clone(live),
                links: Arc::clone(&links),
                leases: Arc::clone(&leases),
            };
            tokio::spawn(http::serve::run(
                listener,
                http_tls.clone(),
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
    let ingest = Arc::new(
        Ingest::new(
            Arc::clone(&store),
            IngestSettings {
                ack_mode: config.mllp.ack_mode,
                ack_application: config.mllp.ack_application,
                ack_facility: config.mllp.ack_facility,
                patient_identity: config.mllp.patient_identity,
                time_zone: config.mllp.time_zone,
                placeholder_values: config.mllp.placeholder_values,
            },
            Arc::clone(&metrics),
            events,
            Arc::clone(&log_limit),
        )
        .with_audit(Arc::clone(&audit)),
    );
    let access = config.mllp.access;
    let gate = Gate::new(
        config.mllp.limits,
        access.allow,
        access.proxy_from,
        access.handshake_timeout,
        Arc::clone(&audit),
    );
    let mut accepts = Vec::new();
    let plain = mllp.map(|listener| (listener, Transport::Tcp));
    let tls = mllp_tls.map(|(listener, tls)| (listener, Transport::Tls(tls)));
    // `--query-listen` is one more plain listener with the same ingest (and framing).
    let query = mllp_query.map(|listener| (listener, Transport::Tcp));
    for (listener, transport) in plain.into_iter().chain(tls).chain(query) {
        accepts.push(tokio::spawn(listener::run(
            listener,
            transport,
            Arc::clone(&gate),
            Arc::clone(&ingest),
            Arc::clone(&metrics),
            Arc::clone(&budget),
            stop_rx.clone(),
        )));
    }
    if !link_targets.is_empty() {
        let numbers = {
            let gate = Arc::clone(&gate);
            Arc::new(move || gate.next_connection_number())
        };
        accepts.push(tokio::spawn(crate::links::run(
            link_targets,
            Arc::clone(&links),
            LinkContext {
                ingest: Arc::clone(&ingest),
                limits: config.mllp.limits,
                metrics: Arc::clone(&metrics),
                budget: Arc::clone(&budget),
                audit: Arc::clone(&audit),
                tls: link_tls,
                numbers,
                leases: Arc::clone(&leases),
            },
            stop_rx.clone(),
        )));
    }
    drop(ingest);

    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing the messages in hand");
    let _ = stop_tx.send(true);
    for accept in accepts {
        if let Err(error) = accept.await {
            tracing::error!(%error, "the listener task failed");
        }
    }
    stop_watchers.trigger();
    for watcher in watchers {
        let _ = watcher.await;
    }
    // The event streams end with the live view, so none holds the HTTP side's drain up.
    stop_live.trigger();
    if let Some((_, task)) = live
        && let Err(error) = task.await
    {
        tracing::error!(%error, "the live view task failed");
    }
    stop_purger.trigger();
    if let Err(error) = purger.await {
        tracing::error!(%error, "the retention task failed");
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
    audit.record(AuditEvent::ReceiverStopped);
    stop_audit.trigger();
    if let Some(task) = audit_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The store's, the partial-frame budget's and the audit trail's numbers for `/metrics` (the
/// exporter's are rendered by the handler, which reads their lag from the store).
fn extra_metrics(
    store: Arc<dyn Store>,
    budget: Arc<PartialBudget>,
    audit: Arc<Audit>,
    purges: Arc<crate::retention::PurgeCounters>,
) -> ExtraMetrics {
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
            counter(
                "hl7ihp_store_key_races_total",
                "PostgreSQL: transactions written again because another receiver stored one of their messages meanwhile.",
                stats.n_key_races,
            ),
            counter(
                "hl7ihp_audit_events_total",
                "Audit events written and synced to --audit-log.",
                audit.n_written.load(Ordering::Relaxed),
            ),
            counter(
                "hl7ihp_audit_events_dropped_total",
                "Audit events dropped: queue full, writer stopped or write failed.",
                audit.n_dropped.load(Ordering::Relaxed),
            ),
            Extra {
                name: "hl7ihp_partial_frame_bytes",
                help: "Bytes held now in unfinished frames, against --max-partial-bytes.",
                counter: false,
                value: i64::try_from(budget.held()).unwrap_or(i64::MAX),
            },
        ]
        .into_iter()
        .chain(purges.extras())
        .collect()
    })
}
