//! Commits of every writer of the database, as wake-ups: each transaction that adds to the
//! change feed sends `NOTIFY hl7ihp_feed` (delivered when it commits), and a connection of
//! each store listens. So a receiver's exporter and live view read what another receiver,
//! a replay or a migration stored as soon as it is committed, not at their next poll.
//!
//! The notification carries nothing: the store is the truth ([`crate::events`]). A lost
//! connection is opened again after [`RETRY`]; then one wake-up is sent regardless, since
//! a commit may have gone unheard meanwhile.

use std::time::Duration;

use tokio_postgres::{AsyncMessage, Config, NoTls};

use crate::events::Events;

/// The channel the writer notifies and the listeners listen on.
pub(super) const CHANNEL: &str = "hl7ihp_feed";

/// How long after a lost or refused connection the listener tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Listens until the store's runtime ends (the last handle to the store goes).
pub(super) async fn run(config: Config, events: Events) {
    loop {
        if let Err(error) = listen(&config, &events).await {
            tracing::debug!(%error, "PostgreSQL commit notifications interrupted; listening again");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One connection's worth: until it fails.
async fn listen(config: &Config, events: &Events) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel::<()>();
    // The connection is polled here, not spawned blindly: notifications arrive through it.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if heard.send(()).is_err() {
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
    while hearing.recv().await.is_some() {
        // Coalesced: one wake-up for everything heard until now.
        while hearing.try_recv().is_ok() {}
        events.committed();
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}
