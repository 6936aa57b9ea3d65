//! Commits of every writer of the database, as wake-ups: each transaction that adds to the
//! change feed sends `NOTIFY hl7ihp_feed` (delivered when it commits), and a connection of
//! each store listens. So a receiver's exporter and live view read what another receiver,
//! a replay or a migration stored as soon as it is committed, not at their next poll.
//!
//! The notification carries nothing: the store is the truth ([`crate::events`]). This
//! receiver's own commits are told by its ingest already, so notifications from its
//! writer's connection are ignored; the others' wake-ups are passed on at most once per
//! [`FORWARD_EVERY`], so that another busy receiver's hundreds of commits a second become
//! a few reads of the feed, not one read each. A lost connection is opened again after
//! [`RETRY`]; then one wake-up is sent regardless, since a commit may have gone unheard
//! meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Config, NoTls};

use super::writer::Counters;
use crate::events::Events;

/// The channel the writer notifies and the listeners listen on.
pub(super) const CHANNEL: &str = "hl7ihp_feed";

/// How long after a lost or refused connection the listener tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Other writers' commits wake this receiver's followers at most this often.
const FORWARD_EVERY: Duration = Duration::from_millis(50);

/// Listens until the store's runtime ends (the last handle to the store goes).
pub(super) async fn run(config: Config, events: Events, counters: Arc<Counters>) {
    loop {
        if let Err(error) = listen(&config, &events, &counters).await {
            tracing::debug!(%error, "PostgreSQL commit notifications interrupted; listening again");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One connection's worth: until it fails.
async fn listen(
    config: &Config,
    events: &Events,
    counters: &Counters,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel::<i32>();
    // The connection is polled here, not spawned blindly: notifications arrive through it.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if heard.send(notification.process_id()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(error) = listening {
        driver.abort();
        return Err(error);
    }
    // Whatever was committed while no one listened is read now.
    events.committed();
    let own = || counters.writer_pid.load(Ordering::Relaxed);
    while let Some(pid) = hearing.recv().await {
        if pid == own() {
            continue;
        }
        events.committed();
        // Coalesced: whatever is heard meanwhile is one more wake-up after the pause.
        tokio::time::sleep(FORWARD_EVERY).await;
        let mut more = false;
        while let Ok(pid) = hearing.try_recv() {
            more |= pid != own();
        }
        if more {
            events.committed();
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}
