//! "Committed" notifications: `ingest` says that messages were stored (accepted or
//! refused: every commit that added a message to the store's feed), and whoever keeps
//! something derived from the store (the JSON exporter, the live event stream) subscribes.
//! The exporter finds no patient to rewrite after a refused message and goes back to
//! waiting. The notification carries no data: the store is the truth, and a subscriber
//! reads what changed from it, so a slow subscriber only coalesces wake-ups and never slows
//! the ACK path.
//!
//! A subscriber is woken at most once every [`WAKE_GAP`]: each wake-up is a read of the
//! store, and at hundreds of commits a second (small transactions, at a few connections)
//! a read per commit cost the store more than the commits did.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The shortest time between two wake-ups of one subscription.
pub const WAKE_GAP: Duration = Duration::from_millis(50);

/// The publishing side: cheap to clone, never waits.
#[derive(Clone, Debug)]
pub struct Events {
    commits: watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A new channel with no subscriber yet.
    pub fn new() -> Self {
        Events {
            commits: watch::Sender::new(0),
        }
    }

    /// Says that a commit kept at least one new message, accepted or refused.
    pub fn committed(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A subscription that sees every commit from now on (coalesced while it is busy).
    pub fn subscribe(&self) -> Subscription {
        let mut commits = self.commits.subscribe();
        // Whatever happened before subscribing is the subscriber's first read of the store.
        commits.mark_unchanged();
        Subscription {
            commits,
            last_wake: None,
        }
    }
}

/// The subscribing side.
#[derive(Debug)]
pub struct Subscription {
    commits: watch::Receiver<u64>,
    last_wake: Option<Instant>,
}

impl Subscription {
    /// Waits for a commit after the last one this subscription saw, and for [`WAKE_GAP`]
    /// after the last wake-up. Commits while the subscriber was busy collapse into one
    /// wake-up. Never completes once every publisher is gone. Cancel-safe: dropped before
    /// it completes, it has consumed nothing.
    pub async fn changed(&mut self) {
        if let Some(last) = self.last_wake {
            tokio::time::sleep_until(last + WAKE_GAP).await;
        }
        if self.commits.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.last_wake = Some(Instant::now());
    }

    /// How many commits have been announced so far: whether messages still arrive.
    pub fn n_commits(&self) -> u64 {
        *self.commits.borrow()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn commits_wake_each_subscriber_once_however_many_arrived() {
        let events = Events::new();
        events.committed();
        let mut first = events.subscribe();
        let mut second = events.subscribe();
        let early = tokio::time::timeout(Duration::from_millis(50), first.changed()).await;
        assert!(
            early.is_err(),
            "a commit before subscribing is not a wake-up"
        );
        events.committed();
        events.committed();
        tokio::time::timeout(Duration::from_secs(10), first.changed())
            .await
            .expect("woken");
        tokio::time::timeout(Duration::from_secs(10), second.changed())
            .await
            .expect("woken");
        assert_eq!(first.n_commits(), 3);
        let again = tokio::time::timeout(Duration::from_millis(50), first.changed()).await;
        assert!(again.is_err(), "two commits while busy are one wake-up");
    }

    /// A commit right after a wake-up is told once the gap is over, never before; a wait
    /// given up within the gap loses nothing.
    #[tokio::test]
    async fn a_commit_within_the_gap_wakes_after_it_and_is_not_lost() {
        let events = Events::new();
        let mut subscription = events.subscribe();
        events.committed();
        subscription.changed().await;
        let woken_at = Instant::now();
        events.committed();
        // Given up (unless this machine stalled past the gap: then it was told already).
        let early = tokio::time::timeout(Duration::from_millis(1), subscription.changed()).await;
        if early.is_err() {
            tokio::time::timeout(Duration::from_secs(10), subscription.changed())
                .await
                .expect("the commit is still told after a wait was given up");
        }
        assert!(Instant::now() >= woken_at + WAKE_GAP, "not within the gap");
    }
}
