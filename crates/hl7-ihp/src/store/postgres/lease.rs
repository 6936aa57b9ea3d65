//! Leases on PostgreSQL (docs/storage.md, "Leases"): one task per lease on the store's
//! runtime, with a connection of its own (never the pool's), that
//!
//! - takes the lease with `pg_try_advisory_lock` (session level, so PostgreSQL releases it
//!   the moment the connection ends, also when the receiver is killed) and then increments
//!   the lease's fencing number in `leases`, in one statement after the lock is held;
//! - while holding it, checks the connection every [`CHECK_EVERY`] with a round trip and
//!   stamps each success; a check that fails or takes longer than [`CHECK_TIMEOUT`] loses
//!   the lease at once (the connection is dropped, so the lock goes with it), and a
//!   [`Lease`] whose last success is older than [`FRESH_FOR`] no longer counts as held even
//!   before that;
//! - while not holding it, tries again every 1–2 s (jittered), reconnecting as needed.
//!
//! The connection has TCP keepalives both ways: the client's, so a dead server is noticed,
//! and the server's (`tcp_keepalives_*`, `tcp_user_timeout`, set for the session), so a
//! receiver host that vanished without closing its socket loses the lock after about
//! [`SERVER_GIVES_UP`], longer than [`FRESH_FOR`] plus one check: by then it has stopped
//! writing, whether it noticed or not.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::{Client, Config};

use super::db_error;
use crate::store::StoreError;
use crate::store::lease::{Lease, LeaseState};

/// How often a held lease is checked.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A check slower than this loses the lease.
pub(super) const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one successful check lets the receiver count the lease as held.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(5);
/// About how long the server waits on a silent receiver before it ends its session (and
/// its lock): keepalives after 5 s idle, every 2 s, 3 unanswered; unacknowledged data 12 s.
#[cfg_attr(not(test), allow(dead_code))] // the bound the tests check the others against
pub(super) const SERVER_GIVES_UP: Duration = Duration::from_secs(11);

/// The first half of a lease lock's two-part advisory key (`'hl7l'`); the one-part keys
/// (the feed lock, the migration lock) are another key space.
const LEASE_LOCK_CLASS: i32 = 0x686c_376c;

/// The second half of the key: a stable 32-bit hash (FNV-1a) of the lease's name. Two names
/// with one hash would share one lock: still one holder each, never two.
fn lock_key(name: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}

/// Who this receiver is, in `leases.holder`: host and pid.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().chars().take(64).collect::<String>())
        .unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

/// Starts keeping the lease `name` on `runtime`; the task ends (and the lease is given up)
/// when the last clone of the returned [`Lease`] is dropped.
pub(super) fn start(config: &Config, runtime: &tokio::runtime::Handle, name: &str) -> Lease {
    let (sender, state) = watch::channel(LeaseState::Standby);
    let confirmed = Arc::new(Mutex::new(Instant::now()));
    let mut config = config.clone();
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(12))
        .application_name("hl7-ihp lease");
    runtime.spawn(keep(
        config,
        name.to_owned(),
        sender,
        Arc::clone(&confirmed),
    ));
    Lease::kept(name, state, confirmed, FRESH_FOR)
}

/// Connects the lease's own connection and sets the server's side of the keepalives.
async fn connect(config: &Config) -> Result<Client, StoreError> {
    let client = super::pool::connect(config).await?;
    // Best effort, each on its own: an older server without one of them still works.
    for setting in [
        "SET tcp_keepalives_idle = 5",
        "SET tcp_keepalives_interval = 2",
        "SET tcp_keepalives_count = 3",
        "SET tcp_user_timeout = 12000",
    ] {
        let _ = client.batch_execute(setting).await;
    }
    Ok(client)
}

/// Takes the lock if it is free and then the next fence; `None` when another session holds
/// the lock.
async fn try_take(client: &Client, name: &str, holder: &str) -> Result<Option<i64>, StoreError> {
    let taken: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&LEASE_LOCK_CLASS, &lock_key(name)],
        )
        .await
        .map_err(|e| db_error("cannot try the lease", &e))?
        .get(0);
    if !taken {
        return Ok(None);
    }
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let fence: i64 = client
        .query_one(
            "INSERT INTO leases (name, fence, holder, acquired_ms) VALUES ($1, 1, $2, $3)
             ON CONFLICT (name) DO UPDATE
             SET fence = leases.fence + 1, holder = excluded.holder,
                 acquired_ms = excluded.acquired_ms
             RETURNING fence",
            &[&name, &holder, &now_ms],
        )
        .await
        .map_err(|e| db_error("cannot record the lease", &e))?
        .get(0);
    Ok(Some(fence))
}

/// A pause of 1–2 s, so receivers started together do not all try at the same instant.
fn retry_pause() -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(1_000 + random % 1_000)
}

/// The keeper's loop; see the module documentation.
async fn keep(
    config: Config,
    name: String,
    sender: watch::Sender<LeaseState>,
    confirmed: Arc<Mutex<Instant>>,
) {
    let holder = holder();
    let mut client: Option<Client> = None;
    let mut held: Option<i64> = None;
    let mut complained = false;
    loop {
        let step = async {
            let connection = match client.take() {
                Some(c) if !c.is_closed() => c,
                // The lock lived on the connection that closed: a new one holds nothing.
                _ if held.is_some() => {
                    return Err(StoreError::Database("the lease's connection closed".into()));
                }
                _ => connect(&config).await?,
            };
            let result = match held {
                Some(fence) => connection
                    .simple_query("SELECT 1")
                    .await
                    .map(|_| Some(fence))
                    .map_err(|e| db_error("the lease's connection failed", &e)),
                None => try_take(&connection, &name, &holder).await,
            };
            // The connection is kept only when it worked: a failed one is closed, so the lock
            // (if the server still thinks it is held) goes with it.
            if result.is_ok() {
                client = Some(connection);
            }
            result
        };
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, step).await {
            Ok(outcome) => outcome,
            Err(_) => {
                client = None;
                Err(StoreError::Database("the lease's check timed out".into()))
            }
        };
        match (held, outcome) {
            (_, Ok(Some(fence))) => {
                if let Ok(mut at) = confirmed.lock() {
                    *at = Instant::now();
                }
                if held.is_none() {
                    tracing::info!(lease = %name, fence, "lease taken");
                    held = Some(fence);
                    sender.send_replace(LeaseState::Held { fence });
                }
                complained = false;
            }
            (_, Ok(None)) => {
                sender.send_if_modified(|state| {
                    let changed = *state != LeaseState::Standby;
                    *state = LeaseState::Standby;
                    changed
                });
            }
            (Some(fence), Err(error)) => {
                held = None;
                sender.send_replace(LeaseState::Standby);
                tracing::info!(lease = %name, fence, %error, "lease lost");
            }
            (None, Err(error)) => {
                if !complained {
                    tracing::warn!(lease = %name, %error, "cannot try the lease; will retry");
                    complained = true;
                }
            }
        }
        let pause = if held.is_some() {
            CHECK_EVERY
        } else {
            retry_pause()
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = sender.closed() => break,
        }
    }
    if let (Some(fence), Some(client)) = (held, client) {
        // Given up on purpose: unlocked now, not when the connection's end is noticed.
        let _ = client
            .query_one(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&LEASE_LOCK_CLASS, &lock_key(&name)],
            )
            .await;
        tracing::info!(lease = %name, fence, "lease given up");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_tell_names_apart() {
        assert_eq!(lock_key("export"), lock_key("export"));
        assert_ne!(lock_key("export"), lock_key("link:bed-12"));
        assert_ne!(lock_key("link:bed-12"), lock_key("link:bed-13"));
    }

    use crate::store::postgres::{PgStore, PostgresLocation, testdb};
    use crate::store::{ChangeCursor, FilePosition, Store, StoreError, StoreOptions, StoreRead};

    const DEADLINE: Duration = Duration::from_secs(60);

    fn open(url: &str) -> PgStore {
        let location = PostgresLocation::parse(url).expect("the test server's URL");
        PgStore::open(&location, &StoreOptions::default()).expect("open the store")
    }

    async fn within<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, work)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    fn position(through: i64) -> FilePosition {
        FilePosition {
            through,
            length: 10,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_loses_the_lease_and_a_stale_fence_is_refused() {
        let Some(server) = testdb::server() else {
            return;
        };
        let db = server.create_database();
        let url = server.url(&db);
        let (a, b) = tokio::task::spawn_blocking(move || (open(&url), open(&url)))
            .await
            .unwrap();
        let mut lease_a = a.lease("export");
        let first = within("A to take the lease", lease_a.acquired()).await;
        assert_eq!(first, 1, "the first acquisition");
        a.set_export_progress_fenced("json", ChangeCursor::at(5), vec![], "export", first)
            .await
            .expect("the holder's write");

        // A's own connection ends (as when PostgreSQL or the network drops it): the lease is
        // lost at once, and taken again with the next fence, nobody else wanting it.
        server.psql(
            &db,
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND objsubid = 2 AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        );
        within("A to notice the loss", lease_a.lost(first)).await;
        let second = within("A to take it again", lease_a.acquired()).await;
        assert_eq!(second, first + 1);

        // B wants it too; A gives it up (its connection closes): B takes it with the next fence.
        let mut lease_b = b.lease("export");
        assert_eq!(lease_b.fence(), None, "one holder at a time");
        drop(lease_a);
        let third = within("B to take the lease", lease_b.acquired()).await;
        assert_eq!(third, second + 1);

        // A's write with its old fence is refused, and moves nothing.
        let stale = a
            .set_export_progress_fenced(
                "json",
                ChangeCursor::at(99),
                vec![("P1".into(), position(99))],
                "export",
                second,
            )
            .await;
        assert!(
            matches!(&stale, Err(StoreError::LeaseLost { fence, .. }) if *fence == second),
            "{stale:?}"
        );
        assert_eq!(
            a.export_watermark("json").await.unwrap(),
            ChangeCursor::at(5)
        );
        assert!(a.export_files("json", None).await.unwrap().is_empty());
        // B's write with the current fence goes through.
        b.set_export_progress_fenced(
            "json",
            ChangeCursor::at(7),
            vec![("P1".into(), position(7))],
            "export",
            third,
        )
        .await
        .expect("the new holder's write");
        assert_eq!(
            a.export_watermark("json").await.unwrap(),
            ChangeCursor::at(7)
        );
        assert_eq!(
            server.psql(&db, "SELECT fence FROM leases WHERE name = 'export'"),
            third.to_string()
        );
    }

    #[test]
    fn the_server_gives_up_after_the_receiver_stopped_counting_the_lease() {
        assert!(SERVER_GIVES_UP > FRESH_FOR + CHECK_TIMEOUT);
        assert!(FRESH_FOR > CHECK_EVERY + CHECK_TIMEOUT);
    }
}
