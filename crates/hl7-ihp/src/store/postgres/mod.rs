//! The PostgreSQL store (`--store postgres://…`): [`PgStore`] and [`PgReader`] on
//! tokio-postgres, for several receivers on one database (docs/storage.md, "PostgreSQL").
//!
//! The store runs its connections and its writer on a runtime of its own (one thread), so
//! that [`open`](PgStore::open) can be called from anywhere, as SQLite's is, and a caller's
//! runtime ending never leaves a connection half-driven. No TLS to the database yet
//! (`NoTls`): put the database on a trusted network or a local socket.

mod alarms;
pub mod import;
mod lease;
mod listen;
mod merge;
mod pool;
mod purge;
mod readers;
mod schema;
mod writer;

#[cfg(test)]
pub(crate) mod testdb;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use pool::Pool;
use writer::{Counters, Request};

use super::{
    AlarmQuery, AlarmRow, ChangeCursor, Changes, DeviceRecords, Feed, FeedMessage, FilePosition,
    Health, MessageDetail, MessageFilter, ObservationQuery, ObservationRow, PatientData,
    PatientRecords, PatientSummary, PurgeReport, PurgeRequest, Store, StoreError, StoreFuture,
    StoreOptions, StoreRead, StoreStats, Stored, TrendQuery, TrendSeries,
};

/// Reader connections per store (the writer has its own).
const N_READERS: usize = 4;

/// Batches waiting for the writer; past this, callers wait (the devices slow down).
const MAX_QUEUED: usize = 4096;

/// Messages in one transaction at most.
const MAX_BATCH: usize = 1024;

/// Where a PostgreSQL store is: `postgres://user[:password]@host[:port]/db[?…]` and the
/// password from `--store-password-file`, if given. `Debug` and [`redacted`](Self::redacted)
/// never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresLocation {
    url: String,
    password: Option<String>,
}

impl PostgresLocation {
    /// Parses a `postgres://` or `postgresql://` URL; the error names no part of it.
    pub fn parse(text: &str) -> Result<PostgresLocation, String> {
        let config: tokio_postgres::Config = text.parse().map_err(|_| {
            "invalid PostgreSQL location; expected postgres://user[:password]@host[:port]/db"
                .to_string()
        })?;
        if config.get_dbname().is_none() {
            return Err("the PostgreSQL location names no database (…/db)".into());
        }
        if config.get_user().is_none() {
            return Err("the PostgreSQL location names no user (postgres://user@…)".into());
        }
        Ok(PostgresLocation {
            url: text.to_string(),
            password: None,
        })
    }

    /// The same location with the password read from a file (it wins over the URL's).
    pub fn with_password(mut self, password: String) -> PostgresLocation {
        self.password = Some(password);
        self
    }

    /// The URL with its password (if any) as `***`, for logs and `Debug`.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }

    fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|_| StoreError::Database("invalid PostgreSQL location".into()))?;
        if let Some(password) = &self.password {
            config.password(password.as_bytes());
        }
        if config.get_application_name().is_none() {
            config.application_name("hl7-ihp");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        Ok(config)
    }
}

impl std::fmt::Debug for PostgresLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())?;
        if self.password.is_some() {
            write!(f, " (password from a file)")?;
        }
        Ok(())
    }
}

/// `scheme://user:secret@host/…` as `scheme://user:***@host/…`; a `password=` query
/// parameter as `password=***`.
fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |n| rest_start + n);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let parts: Vec<String> = tail
            .split('&')
            .map(|p| {
                if p.to_ascii_lowercase().starts_with("password=") {
                    "password=***".to_string()
                } else {
                    p.to_string()
                }
            })
            .collect();
        out = format!("{head}{}", parts.join("&"));
    }
    out
}

/// The store's own runtime: one thread that drives the connections and the writer, until
/// the last handle goes.
struct Runtime {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Runtime {
    fn start() -> Result<Arc<Runtime>, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start the store's runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("hl7-ihp-postgres".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| StoreError::Database(format!("cannot start the store's thread: {e}")))?;
        Ok(Arc::new(Runtime {
            handle,
            stop: Mutex::new(Some(stop)),
        }))
    }

    /// Runs `work` on the store's runtime and waits for it from this (any) thread.
    fn block_on<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = done.send(work.await);
        });
        result.recv().map_err(|_| StoreError::Closed)?
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
    }
}

/// A PostgreSQL store read by the inspection commands: no writer, no migrations (a
/// database of another schema version is refused).
pub struct PgReader {
    pool: Arc<Pool>,
    _runtime: Arc<Runtime>,
}

impl PgReader {
    /// Connects and checks the schema version. Blocking.
    pub fn open(location: &PostgresLocation) -> Result<PgReader, StoreError> {
        let runtime = Runtime::start()?;
        let pool = Arc::new(Pool::new(
            location.config()?,
            runtime.handle.clone(),
            N_READERS,
        ));
        let check = Arc::clone(&pool);
        runtime.block_on(async move {
            let client = check.get().await?;
            schema::check(&client).await
        })?;
        Ok(PgReader {
            pool,
            _runtime: runtime,
        })
    }
}

/// The receiver's PostgreSQL store: a writer task with its own connection that commits
/// every waiting batch in one transaction (group commit), and a pool of readers.
pub struct PgStore {
    reader: PgReader,
    /// For the connections of its own: the leases', the commit listener's.
    config: tokio_postgres::Config,
    requests: tokio::sync::mpsc::Sender<Request>,
    counters: Arc<Counters>,
    health: Arc<Mutex<Health>>,
}

impl PgStore {
    /// Connects, creates or migrates the schema, and starts the writer. Blocking.
    pub fn open(
        location: &PostgresLocation,
        options: &StoreOptions,
    ) -> Result<PgStore, StoreError> {
        let runtime = Runtime::start()?;
        let config = location.config()?;
        let pool = Arc::new(Pool::new(config.clone(), runtime.handle.clone(), N_READERS));
        let migrate = config.clone();
        runtime.block_on(async move {
            let mut client = pool::connect(&migrate).await?;
            schema::migrate(&mut client).await
        })?;
        let counters = Arc::new(Counters::default());
        let health = Arc::new(Mutex::new(Health::Ok));
        let (requests, queue) = tokio::sync::mpsc::channel(MAX_QUEUED);
        runtime.handle.spawn(writer::run(writer::Writer {
            config: config.clone(),
            client: None,
            requests: queue,
            dedupe: options.dedupe,
            max_batch: MAX_BATCH,
            counters: Arc::clone(&counters),
            health: Arc::clone(&health),
            notified: (None, false),
        }));
        Ok(PgStore {
            config,
            reader: PgReader {
                pool,
                _runtime: runtime,
            },
            requests,
            counters,
            health,
        })
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

macro_rules! delegate_reads {
    ($ty:ty, $($path:tt)+) => {
        impl StoreRead for $ty {
            fn patients(&self) -> StoreFuture<'_, Vec<PatientSummary>> {
                self.$($path)+.patients()
            }
            fn patient_records<'a>(
                &'a self,
                key: &'a str,
                limit: Option<usize>,
            ) -> StoreFuture<'a, Option<PatientRecords>> {
                self.$($path)+.patient_records(key, limit)
            }
            fn messages(
                &self,
                filter: MessageFilter,
            ) -> StoreFuture<'_, Vec<super::MessageSummary>> {
                self.$($path)+.messages(filter)
            }
            fn device_records<'a>(
                &'a self,
                device: &'a str,
                limit: Option<usize>,
            ) -> StoreFuture<'a, Option<DeviceRecords>> {
                self.$($path)+.device_records(device, limit)
            }
            fn device_feeds(
                &self,
                n_devices: usize,
                limit: usize,
            ) -> StoreFuture<'_, Vec<Vec<FeedMessage>>> {
                self.$($path)+.device_feeds(n_devices, limit)
            }
            fn alarms(&self, query: AlarmQuery) -> StoreFuture<'_, Vec<AlarmRow>> {
                self.$($path)+.alarms(query)
            }
            fn changes_since(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Changes> {
                self.$($path)+.changes_since(after, limit)
            }
            fn export_watermark<'a>(&'a self, exporter: &'a str) -> StoreFuture<'a, ChangeCursor> {
                self.$($path)+.export_watermark(exporter)
            }
            fn export_files<'a>(
                &'a self,
                exporter: &'a str,
                keys: Option<Vec<String>>,
            ) -> StoreFuture<'a, std::collections::HashMap<String, FilePosition>> {
                self.$($path)+.export_files(exporter, keys)
            }
            fn feed(&self, after: ChangeCursor, limit: usize) -> StoreFuture<'_, Feed> {
                self.$($path)+.feed(after, limit)
            }
            fn feed_head(&self) -> StoreFuture<'_, ChangeCursor> {
                self.$($path)+.feed_head()
            }
            fn patient_feed<'a>(
                &'a self,
                key: &'a str,
                limit: usize,
            ) -> StoreFuture<'a, Option<(PatientData, Vec<FeedMessage>)>> {
                self.$($path)+.patient_feed(key, limit)
            }
            fn observations<'a>(
                &'a self,
                key: &'a str,
                query: ObservationQuery,
            ) -> StoreFuture<'a, Option<Vec<ObservationRow>>> {
                self.$($path)+.observations(key, query)
            }
            fn trends<'a>(
                &'a self,
                key: &'a str,
                query: TrendQuery,
            ) -> StoreFuture<'a, Option<Vec<TrendSeries>>> {
                self.$($path)+.trends(key, query)
            }
            fn message(&self, id: i64) -> StoreFuture<'_, Option<MessageDetail>> {
                self.$($path)+.message(id)
            }
        }
    };
}

delegate_reads!(PgReader, pool);
delegate_reads!(PgStore, reader.pool);

impl Store for PgStore {
    fn commit(&self, messages: Vec<super::NewMessage>) -> StoreFuture<'_, Vec<Stored>> {
        Box::pin(async move {
            if messages.is_empty() {
                return Ok(Vec::new());
            }
            // Prepared here, on the caller's thread: the writer only binds values.
            let rows: Vec<writer::Row> = messages.into_iter().map(writer::Row::new).collect();
            self.request(|reply| Request::Commit { rows, reply }).await
        })
    }

    fn set_export_progress<'a>(
        &'a self,
        exporter: &'a str,
        cursor: ChangeCursor,
        files: Vec<(String, FilePosition)>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let client = self.reader.pool.get().await?;
            writer::set_export_progress(&client, exporter, cursor, files, None).await
        })
    }

    fn set_export_progress_fenced<'a>(
        &'a self,
        exporter: &'a str,
        cursor: ChangeCursor,
        files: Vec<(String, FilePosition)>,
        lease: &'a str,
        fence: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let client = self.reader.pool.get().await?;
            writer::set_export_progress(&client, exporter, cursor, files, Some((lease, fence)))
                .await
        })
    }

    fn lease(&self, name: &str) -> crate::store::lease::Lease {
        lease::start(&self.config, &self.reader._runtime.handle, name)
    }

    fn purge(&self, request: PurgeRequest) -> StoreFuture<'_, PurgeReport> {
        Box::pin(async move {
            let mut client = self.reader.pool.get().await?;
            let report = purge::step(&mut client, &request).await?;
            if !request.dry_run {
                self.counters.n_purged.fetch_add(
                    report.n_accepted + report.n_refused,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            Ok(report)
        })
    }

    fn stats(&self) -> StoreStats {
        self.counters.stats()
    }

    fn watch_other_writers(&self, events: crate::events::Events) {
        self.reader._runtime.handle.spawn(listen::run(
            self.config.clone(),
            events,
            Arc::clone(&self.counters),
        ));
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .map(|h| h.clone())
            .unwrap_or(Health::Failing {
                reason: "the store's state is poisoned".into(),
            })
    }
}

/// A database error as the store reports it: its SQLSTATE and message, never the
/// statement's parameters (which hold patient data).
fn db_error(context: &str, error: &tokio_postgres::Error) -> StoreError {
    let detail = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    };
    StoreError::Database(format!("{context}: {detail}"))
}

#[cfg(test)]
mod location_tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        let location = PostgresLocation::parse("postgres://hl7:s3cret@db:5433/hl7").unwrap();
        assert_eq!(location.redacted(), "postgres://hl7:***@db:5433/hl7");
        let debug = format!("{location:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let query =
            PostgresLocation::parse("postgresql://hl7@db/hl7?password=s3cret&sslmode=disable")
                .unwrap();
        assert_eq!(
            query.redacted(),
            "postgresql://hl7@db/hl7?password=***&sslmode=disable"
        );
        let from_file = PostgresLocation::parse("postgres://hl7@db/hl7")
            .unwrap()
            .with_password("s3cret".into());
        let debug = format!("{from_file:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("file"),
            "{debug}"
        );
    }

    #[test]
    fn bad_locations_are_refused_without_echoing_them() {
        for text in ["postgres://hl7:s3cret@db:notaport/hl7", "postgres://db"] {
            let error = PostgresLocation::parse(text).unwrap_err();
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
