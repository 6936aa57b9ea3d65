//! The reader connections: a few, so that a slow read (a day's trend, a long message list)
//! never holds up the exporter or the live view, and a bounded few, so that reads cannot
//! take more connections, memory and cores than the ACK path can spare.
//!
//! A read waits (asynchronously, holding no thread) for a permit, then runs on a blocking
//! thread with a connection of its own in one snapshot. Reads whose cost grows with what
//! they scan take a second permit first, of which there are fewer than connections: the
//! quick reads (the feed, one patient's records, one message, watermarks) always find a
//! connection free after at most one quick read's wait.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::*;

/// Reader connections per store. Each has its own page cache ([`READER_CACHE_KIB`]).
pub(super) const READERS: usize = 4;

/// Of the [`READERS`], at most this many run slow reads at once.
pub(super) const SLOW_READERS: usize = 2;

/// How costly a read may be, which decides the permits it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cost {
    /// Bounded by what it returns, which is small: the feed, a patient's page of
    /// records, one message.
    Quick,
    /// Grows with what it scans: trends, filtered record pages, message lists, the
    /// patient list.
    Slow,
}

/// See the module documentation.
pub(super) struct ReaderPool {
    connections: Mutex<Vec<Connection>>,
    /// One permit per connection: holding one means a connection is free to take.
    free: Arc<Semaphore>,
    slow: Arc<Semaphore>,
}

impl ReaderPool {
    /// Opens [`READERS`] connections to the database file.
    pub(super) fn open(path: &Path) -> Result<ReaderPool, StoreError> {
        let connections = (0..READERS)
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReaderPool {
            connections: Mutex::new(connections),
            free: Arc::new(Semaphore::new(READERS)),
            slow: Arc::new(Semaphore::new(SLOW_READERS)),
        })
    }

    /// Runs `read` on a connection of the pool in one snapshot, off the async workers.
    pub(super) async fn read<T, F>(self: &Arc<Self>, cost: Cost, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read_with_helper(cost, false, |conn, _| read(conn))
            .await
    }

    /// Runs a slow `read` as [`ReaderPool::read`] does, handing it a second connection
    /// (outside any transaction) when one is free beside a slow permit, so that it can
    /// read part of what it needs on another core.
    pub(super) async fn read_parallel<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Option<&mut Connection>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read_with_helper(Cost::Slow, true, read).await
    }

    async fn read_with_helper<T, F>(
        self: &Arc<Self>,
        cost: Cost,
        helper: bool,
        read: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Option<&mut Connection>) -> rusqlite::Result<T> + Send + 'static,
    {
        let closed = |_| StoreError::Closed;
        // Moved into the blocking task: if the caller goes away meanwhile, the permits are
        // given back only once the connection is.
        let slow = match cost {
            Cost::Slow => Some(
                Arc::clone(&self.slow)
                    .acquire_owned()
                    .await
                    .map_err(closed)?,
            ),
            Cost::Quick => None,
        };
        let free = Arc::clone(&self.free)
            .acquire_owned()
            .await
            .map_err(closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permits = (free, slow);
            let connection = Borrowed {
                pool: &pool,
                connection: lock(&pool.connections).pop(),
            };
            let Some(conn) = connection.connection.as_ref() else {
                unreachable!("a permit is held for every connection taken");
            };
            // Only if free now: a read never waits for its helper.
            let mut extra = None;
            if helper
                && let Ok(slow) = Arc::clone(&pool.slow).try_acquire_owned()
                && let Ok(free) = Arc::clone(&pool.free).try_acquire_owned()
            {
                let borrowed = Borrowed {
                    pool: &pool,
                    connection: lock(&pool.connections).pop(),
                };
                extra = Some((borrowed, slow, free));
            }
            let helper = extra
                .as_mut()
                .and_then(|(borrowed, _, _)| borrowed.connection.as_mut());
            // One snapshot for all the statements of a read.
            let snapshot = conn.unchecked_transaction().map_err(database_error)?;
            let value = read(&snapshot, helper).map_err(database_error)?;
            snapshot.commit().map_err(database_error)?;
            Ok(value)
        })
        .await
        .map_err(|_| StoreError::Database("the reader task failed".into()))?
    }

    /// Connections not in use now (tests).
    #[cfg(test)]
    pub(super) fn n_free(&self) -> usize {
        lock(&self.connections).len()
    }
}

/// A connection out of the pool; it goes back when dropped, also after a panic in a read,
/// out of any transaction the read left open.
struct Borrowed<'p> {
    pool: &'p ReaderPool,
    connection: Option<Connection>,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            lock(&self.pool.connections).push(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::SQLITE_FILE_NAME;

    /// Closed until opened: what a held read waits for.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: Condvar,
    }

    impl Gate {
        fn wait(&self) {
            let mut open = lock(&self.open);
            while !*open {
                open = self
                    .opened
                    .wait(open)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }

        fn open(&self) {
            *lock(&self.open) = true;
            self.opened.notify_all();
        }
    }

    /// A read that waits at `gate`, in a snapshot of the pool.
    fn held(
        pool: &Arc<ReaderPool>,
        cost: Cost,
        gate: &Arc<Gate>,
    ) -> tokio::task::JoinHandle<Result<i64, StoreError>> {
        let (pool, gate) = (Arc::clone(pool), Arc::clone(gate));
        tokio::spawn(async move {
            pool.read(cost, move |conn| {
                gate.wait();
                conn.query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
            })
            .await
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_reads_leave_connections_for_quick_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SQLITE_FILE_NAME);
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let pool = Arc::new(ReaderPool::open(&path).unwrap());
        let gate = Arc::new(Gate::default());
        let slow: Vec<_> = (0..SLOW_READERS + 1)
            .map(|_| held(&pool, Cost::Slow, &gate))
            .collect();
        let mut waited = 0;
        while pool.n_free() > READERS - SLOW_READERS && waited < 10_000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += 1;
        }
        assert_eq!(pool.n_free(), READERS - SLOW_READERS, "two slow reads run");
        // A quick read runs beside them, however long they take.
        let quick = pool
            .read(Cost::Quick, |conn| {
                conn.query_row("SELECT count(*) FROM messages", [], |row| {
                    row.get::<_, i64>(0)
                })
            })
            .await
            .unwrap();
        assert_eq!(quick, 0);
        // The third slow read waits for a slow permit, without a connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.n_free(), READERS - SLOW_READERS);
        gate.open();
        for read in slow {
            assert_eq!(read.await.unwrap().unwrap(), 0);
        }
        assert_eq!(pool.n_free(), READERS);
    }

    #[tokio::test]
    async fn a_read_that_panics_gives_its_connection_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SQLITE_FILE_NAME);
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let pool = Arc::new(ReaderPool::open(&path).unwrap());
        for _ in 0..READERS + 1 {
            let failed = pool
                .read(Cost::Quick, |_| -> rusqlite::Result<()> {
                    panic!("a broken invariant in a read")
                })
                .await;
            assert!(matches!(failed, Err(StoreError::Database(_))));
        }
        assert_eq!(pool.n_free(), READERS);
        let fine = pool
            .read(Cost::Slow, |conn| {
                conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
            })
            .await
            .unwrap();
        assert_eq!(fine, 1);
    }
}
