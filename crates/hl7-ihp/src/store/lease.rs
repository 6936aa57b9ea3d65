//! Leases: which of several receivers on one store does a job only one may do at a time
//! (writing the patient files, reading a `--connect` device), docs/storage.md, "Leases".
//!
//! [`Store::lease`](super::Store::lease) hands out a [`Lease`]: whether this receiver holds
//! the lease now and its *fencing number*, which grows by one on every new acquisition, so a
//! write carrying an old number can be refused by the store
//! ([`Store::set_export_progress_fenced`](super::Store::set_export_progress_fenced)). On
//! PostgreSQL a lease is a session-level advisory lock held on a connection of its own,
//! checked every second: a receiver whose check has not succeeded lately no longer counts as
//! holding it ([`Lease::holds`]). On SQLite the data directory's one-receiver lock already
//! makes the receiver alone, so every lease is held, with fence 1.
//!
//! Lease names are configuration (`export`, `link:<name>`), never patient data.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Store;

/// The lease of the patient-file exporter.
pub const EXPORT_LEASE: &str = "export";

/// The lease of a `--connect` link named `link` (`link:<name>`).
pub fn link_lease(link: &str) -> String {
    format!("link:{link}")
}

/// Where a lease is, as its keeper last found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Not held by this receiver: another one holds it, or the store cannot be reached.
    Standby,
    /// Held by this receiver since it took it with this fencing number.
    Held {
        /// Grows by one on every acquisition, by any receiver.
        fence: i64,
    },
}

/// One lease as this receiver sees it; clones share it. The lease is given up when the
/// last clone is dropped (on PostgreSQL its connection closes).
#[derive(Clone)]
pub struct Lease {
    name: Arc<str>,
    state: watch::Receiver<LeaseState>,
    /// When the keeper last confirmed the lease, and how long that confirmation lasts;
    /// `None`: held for good (SQLite).
    freshness: Option<(Arc<Mutex<Instant>>, Duration)>,
    /// Keeps an always-held lease's channel open.
    _sender: Option<Arc<watch::Sender<LeaseState>>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// A lease held for good with fence 1: a store that only one receiver can open.
    pub fn always_held(name: &str) -> Lease {
        let (sender, state) = watch::channel(LeaseState::Held { fence: 1 });
        Lease {
            name: Arc::from(name),
            state,
            freshness: None,
            _sender: Some(Arc::new(sender)),
        }
    }

    /// A lease kept by a task that sends its state on `state` and stamps `confirmed` each
    /// time it has checked the lease still holds; a confirmation older than `fresh_for`
    /// counts as lost.
    pub fn kept(
        name: &str,
        state: watch::Receiver<LeaseState>,
        confirmed: Arc<Mutex<Instant>>,
        fresh_for: Duration,
    ) -> Lease {
        Lease {
            name: Arc::from(name),
            state,
            freshness: Some((confirmed, fresh_for)),
            _sender: None,
        }
    }

    /// Whether other receivers may share the store (the lease can be lost): then what they
    /// commit is not announced on this receiver's events, and a follower polls the feed.
    pub fn is_shared(&self) -> bool {
        self.freshness.is_some()
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state the keeper last sent ([`LeaseState::Standby`] once the keeper is gone).
    pub fn state(&self) -> LeaseState {
        if self.state.has_changed().is_err() {
            return LeaseState::Standby;
        }
        *self.state.borrow()
    }

    /// The fencing number, while this receiver holds the lease and its keeper confirmed it
    /// lately.
    pub fn fence(&self) -> Option<i64> {
        match self.state() {
            LeaseState::Held { fence } if self.fresh() => Some(fence),
            _ => None,
        }
    }

    /// Whether this receiver still holds the lease it took with `fence`.
    pub fn holds(&self, fence: i64) -> bool {
        self.fence() == Some(fence)
    }

    fn fresh(&self) -> bool {
        match &self.freshness {
            None => true,
            Some((confirmed, fresh_for)) => confirmed
                .lock()
                .map(|at| at.elapsed() < *fresh_for)
                .unwrap_or(false),
        }
    }

    /// Waits until the keeper sends a new state (forever once it is gone).
    pub async fn changed(&mut self) {
        if self.state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until this receiver holds the lease; its fence.
    pub async fn acquired(&mut self) -> i64 {
        loop {
            if let Some(fence) = self.fence() {
                return fence;
            }
            tokio::select! {
                () = self.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Resolves once this receiver no longer holds the lease it took with `fence`: the
    /// keeper said so, or its confirmation grew stale. Cancel-safe.
    pub async fn lost(&self, fence: i64) {
        let mut watch = self.clone();
        while watch.holds(fence) {
            if watch.freshness.is_none() {
                // Nothing grows stale: only a new state can end it.
                watch.changed().await;
                continue;
            }
            tokio::select! {
                () = watch.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// Every lease this receiver asked for, for `/metrics`; hands them out from the store.
pub struct Leases {
    store: Option<Arc<dyn Store>>,
    leases: Mutex<Vec<Lease>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").finish_non_exhaustive()
    }
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            store: None,
            leases: Mutex::new(Vec::new()),
        }
    }
}

impl Leases {
    /// Leases from `store`.
    pub fn new(store: Arc<dyn Store>) -> Arc<Leases> {
        Arc::new(Leases {
            store: Some(store),
            leases: Mutex::new(Vec::new()),
        })
    }

    /// The lease `name` from the store (always held without one), registered for metrics.
    pub fn take(&self, name: &str) -> Lease {
        let lease = match &self.store {
            Some(store) => store.lease(name),
            None => Lease::always_held(name),
        };
        if let Ok(mut leases) = self.leases.lock() {
            leases.push(lease.clone());
        }
        lease
    }

    /// Appends `hl7ihp_lease_held` and `hl7ihp_lease_fence` per lease (nothing without
    /// any). Names are `export` or `link:<name>` with a checked link name: no escaping.
    pub fn render_metrics(&self, out: &mut String) {
        let leases: Vec<(String, Option<i64>)> = match self.leases.lock() {
            Ok(leases) => leases
                .iter()
                .map(|l| (l.name().to_owned(), l.fence()))
                .collect(),
            Err(_) => return,
        };
        if leases.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP hl7ihp_lease_held 1 while this receiver holds the lease.\n\
             # TYPE hl7ihp_lease_held gauge"
        );
        for (name, fence) in &leases {
            let _ = writeln!(
                out,
                "hl7ihp_lease_held{{name=\"{name}\"}} {}",
                i64::from(fence.is_some())
            );
        }
        let _ = writeln!(
            out,
            "# HELP hl7ihp_lease_fence The lease's fencing number while held here (0: not held).\n\
             # TYPE hl7ihp_lease_fence gauge"
        );
        for (name, fence) in &leases {
            let _ = writeln!(
                out,
                "hl7ihp_lease_fence{{name=\"{name}\"}} {}",
                fence.unwrap_or(0)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_always_held_lease_has_fence_one_and_renders() {
        let leases = Leases::default();
        let lease = leases.take(EXPORT_LEASE);
        assert_eq!(lease.fence(), Some(1));
        assert!(lease.holds(1));
        let mut text = String::new();
        leases.render_metrics(&mut text);
        assert!(
            text.contains("hl7ihp_lease_held{name=\"export\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hl7ihp_lease_fence{name=\"export\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_stale_confirmation_is_not_held() {
        let (sender, state) = watch::channel(LeaseState::Held { fence: 4 });
        let confirmed = Arc::new(Mutex::new(Instant::now()));
        let lease = Lease::kept("export", state, Arc::clone(&confirmed), Duration::ZERO);
        assert_eq!(lease.fence(), None, "a confirmation lasts no time here");
        let lease = Lease::kept(
            "export",
            sender.subscribe(),
            confirmed,
            Duration::from_secs(60),
        );
        assert!(lease.holds(4));
        sender.send_replace(LeaseState::Standby);
        assert!(!lease.holds(4));
        drop(sender);
        assert_eq!(lease.state(), LeaseState::Standby);
    }
}
