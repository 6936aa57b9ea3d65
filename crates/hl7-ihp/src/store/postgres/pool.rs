//! A small bounded pool of reader connections: at most `size` at once, a closed one
//! replaced on its next use (so reads work again after the database restarts).
//!
//! Each connection keeps the statements it has prepared, by their text: a read of the
//! change feed, done many times a second, is then one round trip and no planning, where
//! `Client::query` with a text prepares it anew each time (a round trip of its own, and
//! about a millisecond of planning for the feed's query).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::db_error;
use crate::store::StoreError;

/// Connects, driving the connection on the current runtime (the store's).
///
/// Without JIT compilation (`jit = off`, added to the URL's own `options`): the feed's
/// read, estimated dear from its correlated subquery, was compiled at every execution,
/// half a second of CPU each time for a statement that runs in milliseconds.
pub(super) async fn connect(config: &Config) -> Result<Client, StoreError> {
    let mut config = config.clone();
    let options = match config.get_options() {
        Some(own) if !own.trim().is_empty() => format!("{own} -c jit=off"),
        _ => "-c jit=off".to_owned(),
    };
    config.options(&options);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| db_error("cannot connect to PostgreSQL", &e))?;
    tokio::spawn(async move {
        // Its error reaches the client's next call, which reports it.
        let _ = connection.await;
    });
    Ok(client)
}

/// Statements kept per connection at most; past it the cache starts again (the texts the
/// readers build are a few dozen).
const MAX_STATEMENTS: usize = 256;

/// The pool.
pub(super) struct Pool {
    config: Config,
    runtime: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

/// A connection and the statements prepared on it.
struct Connection {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

/// A connection lent by the pool; back to it when dropped (unless closed).
pub(super) struct Pooled<'a> {
    connection: Option<Connection>,
    pool: &'a Pool,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.connection().client
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.connection.as_mut().expect("a lent connection").client
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !connection.client.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(connection);
        }
    }
}

impl Pooled<'_> {
    fn connection(&self) -> &Connection {
        self.connection.as_ref().expect("a lent connection")
    }

    /// `sql` prepared on this connection, once.
    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let connection = self.connection();
        let cached = connection
            .statements
            .lock()
            .ok()
            .and_then(|s| s.get(sql).cloned());
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = connection.client.prepare(sql).await?;
        if let Ok(mut statements) = connection.statements.lock() {
            if statements.len() >= MAX_STATEMENTS {
                statements.clear();
            }
            statements.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    /// [`Client::query`] with the statement prepared once per connection.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.connection().client.query(&statement, params).await
    }

    /// [`Client::query_one`] with the statement prepared once per connection.
    pub(super) async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.connection().client.query_one(&statement, params).await
    }

    /// [`Client::query_opt`] with the statement prepared once per connection.
    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.connection().client.query_opt(&statement, params).await
    }
}

impl Pool {
    pub(super) fn new(config: Config, runtime: tokio::runtime::Handle, size: usize) -> Pool {
        Pool {
            config,
            runtime,
            permits: Arc::new(Semaphore::new(size)),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A connection, waiting (without a thread) while all are lent.
    pub(super) async fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = loop {
            let next = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            match next {
                Some(connection) if connection.client.is_closed() => continue,
                other => break other,
            }
        };
        let connection = match idle {
            Some(connection) => connection,
            None => {
                let config = self.config.clone();
                let client = self
                    .runtime
                    .spawn(async move { connect(&config).await })
                    .await
                    .map_err(|_| StoreError::Closed)??;
                Connection {
                    client,
                    statements: Mutex::new(HashMap::new()),
                }
            }
        };
        Ok(Pooled {
            connection: Some(connection),
            pool: self,
            _permit: permit,
        })
    }
}
