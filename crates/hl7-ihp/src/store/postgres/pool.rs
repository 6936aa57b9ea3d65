//! A small bounded pool of reader connections: at most `size` at once, a closed one
//! replaced on its next use (so reads work again after the database restarts).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls};

use super::db_error;
use crate::store::StoreError;

/// Connects, driving the connection on the current runtime (the store's).
pub(super) async fn connect(config: &Config) -> Result<Client, StoreError> {
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

/// The pool.
pub(super) struct Pool {
    config: Config,
    runtime: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
    idle: std::sync::Mutex<Vec<Client>>,
}

/// A connection lent by the pool; back to it when dropped (unless closed).
pub(super) struct Pooled<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("a lent connection")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("a lent connection")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(client);
        }
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
                Some(client) if client.is_closed() => continue,
                other => break other,
            }
        };
        let client = match idle {
            Some(client) => client,
            None => {
                let config = self.config.clone();
                self.runtime
                    .spawn(async move { connect(&config).await })
                    .await
                    .map_err(|_| StoreError::Closed)??
            }
        };
        Ok(Pooled {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}
