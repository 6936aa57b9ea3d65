//! The receiver-wide budget for bytes held in unfinished frames: past it, the
//! connections holding the most are told to close, and the others are served.
//!
//! The frame limit bounds one connection, the connection limit their number, but their
//! product (4,096 × 1 MiB) is more memory than the host has. So every connection charges
//! what its read buffer holds while a frame is unfinished to one shared counter.
//!
//! Cost: a connection touches the shared counter only when its charge changes, that is while
//! a frame spans reads; a message that arrives in one read charges nothing. Each connection
//! has a [`Slot`] (its charge and a close signal) in a registry behind a mutex, which is
//! locked when a connection opens or closes and when the budget is exceeded, never per
//! message. Over budget, the registry is scanned (at most the connection limit) and the
//! largest holders are told to close until the total is an eighth below the limit, so that
//! a steady attack costs one scan per eighth of the budget, not one per read.
//!
//! A told connection's charge stays in the total until it has closed and freed its buffer:
//! on a starved machine a told connection may wait a while for its next step, and the
//! memory it holds meanwhile is real. The connections told in one scan are those that bring
//! the total an eighth below the limit counting their charges as gone; when earlier told
//! connections have not closed yet, a later scan tells more, so the memory held stays near
//! the limit however late the closes come.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The shared budget: a limit, the total charged, and every open connection's slot.
#[derive(Debug)]
pub struct PartialBudget {
    limit: usize,
    /// Signed because a connection and the registry each move a slot's charge in two steps
    /// (swap, then add); the total may dip below zero between them, never for long.
    total: AtomicIsize,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
}

/// One connection's charge and its "close now" signal.
#[derive(Debug)]
struct Slot {
    bytes: AtomicUsize,
    told: AtomicBool,
    /// A oneshot rather than a `Notify`: waiting on it registers the waker with atomics,
    /// where a `Notify` takes its lock at every read the connection waits for. Only
    /// [`PartialBudget::enforce`] takes this lock.
    tell: Mutex<Option<oneshot::Sender<()>>>,
}

/// A connection's place in the budget; leaving it (drop) gives its charge back.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<PartialBudget>,
    id: u64,
    slot: Arc<Slot>,
    told: oneshot::Receiver<()>,
}

impl PartialBudget {
    /// A budget of `limit` bytes for all connections together.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            total: AtomicIsize::new(0),
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Bytes charged now, for `/metrics`.
    pub fn held(&self) -> usize {
        usize::try_from(self.total.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Registers a new connection, with nothing charged.
    pub fn open(self: &Arc<Self>) -> Charge {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tell, told) = oneshot::channel();
        let slot = Arc::new(Slot {
            bytes: AtomicUsize::new(0),
            told: AtomicBool::new(false),
            tell: Mutex::new(Some(tell)),
        });
        self.lock().insert(id, Arc::clone(&slot));
        Charge {
            budget: Arc::clone(self),
            id,
            slot,
            told,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self, delta: isize) -> isize {
        self.total.fetch_add(delta, Ordering::Relaxed) + delta
    }

    fn total(&self) -> isize {
        self.total.load(Ordering::Relaxed)
    }

    /// Over the limit: tells the largest holders to close until the total is an eighth
    /// below it.
    fn enforce(&self) {
        let slots = self.lock();
        // Another connection may have done it while this one waited for the lock.
        if self.held() <= self.limit {
            return;
        }
        let mut holders: Vec<(usize, &Arc<Slot>)> = slots
            .values()
            .filter(|slot| !slot.told.load(Ordering::Relaxed))
            .map(|slot| (slot.bytes.load(Ordering::Relaxed), slot))
            .filter(|&(bytes, _)| bytes > 0)
            .collect();
        holders.sort_unstable_by_key(|&(bytes, _)| std::cmp::Reverse(bytes));
        let target = (self.limit - self.limit / 8) as isize;
        let (mut n_told, mut n_bytes) = (0usize, 0usize);
        for (bytes, slot) in holders {
            if self.total() - n_bytes as isize <= target {
                break;
            }
            // The slot's charge stays in the total until its connection has closed.
            slot.told.store(true, Ordering::Relaxed);
            let tell = slot
                .tell
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(tell) = tell {
                let _ = tell.send(());
            }
            n_told += 1;
            n_bytes += bytes;
        }
        if n_told > 0 {
            tracing::warn!(
                n_connections = n_told,
                n_bytes,
                limit = self.limit,
                "over the budget for unfinished frames: closing the connections holding the most"
            );
        }
    }
}

impl Charge {
    /// Sets what this connection holds in unfinished frames; over budget, the largest
    /// holders (perhaps this one) are told to close.
    pub fn set(&self, bytes: usize) {
        // Unchanged (nothing held between frames, the usual case) touches nothing shared; a
        // told connection is closing and its charge leaves the total when it has closed.
        if self.slot.bytes.load(Ordering::Relaxed) == bytes || self.is_told() {
            return;
        }
        let before = self.slot.bytes.swap(bytes, Ordering::Relaxed);
        let total = self.budget.add(bytes as isize - before as isize);
        if bytes > before && total > self.budget.limit as isize {
            self.budget.enforce();
        }
    }

    /// Whether this connection was told to close.
    pub fn is_told(&self) -> bool {
        self.slot.told.load(Ordering::Relaxed)
    }

    /// Completes when this connection is told to close.
    pub async fn told(&mut self) {
        if (&mut self.told).await.is_err() {
            // The sender lives in the slot as long as this charge; never, but not a close.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        // Under the lock, so that a scan never counts a charge twice or tells a closed slot.
        let mut slots = self.budget.lock();
        slots.remove(&self.id);
        let bytes = self.slot.bytes.swap(0, Ordering::Relaxed);
        self.budget.add(-(bytes as isize));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_and_leave_with_their_connection() {
        let budget = PartialBudget::new(1000);
        let a = budget.open();
        let b = budget.open();
        a.set(300);
        b.set(200);
        assert_eq!(budget.held(), 500);
        a.set(100);
        assert_eq!(budget.held(), 300);
        drop(b);
        assert_eq!(budget.held(), 100);
        assert!(!a.is_told());
        drop(a);
        assert_eq!(budget.held(), 0);
        assert!(budget.lock().is_empty());
    }

    #[test]
    fn over_budget_the_largest_holders_are_told_until_an_eighth_below() {
        let budget = PartialBudget::new(800);
        let charges: Vec<Charge> = (0..8).map(|_| budget.open()).collect();
        for (n, charge) in charges.iter().enumerate() {
            charge.set(50 + 10 * n);
        }
        assert_eq!(budget.held(), 680);
        assert!(charges.iter().all(|c| !c.is_told()));
        // 680 + 200 = 880 > 800: told from the largest down until at most 700 remain.
        let small = budget.open();
        small.set(200);
        assert!(small.is_told(), "the largest holder is told first");
        assert!(charges.iter().all(|c| !c.is_told()));
        // Its buffer is held until it closes; told, it changes nothing more.
        assert_eq!(budget.held(), 880);
        small.set(500);
        assert_eq!(budget.held(), 880);
        drop(small);
        assert_eq!(budget.held(), 680);
        let big = budget.open();
        big.set(150);
        // 830 > 800: 150 (big) alone brings it to 680 <= 700.
        assert!(big.is_told());
        assert!(charges.iter().all(|c| !c.is_told()));
        drop(big);
        assert_eq!(budget.held(), 680);
    }

    #[test]
    fn told_connections_that_have_not_closed_yet_still_count() {
        let budget = PartialBudget::new(800);
        let charges: Vec<Charge> = (0..8).map(|_| budget.open()).collect();
        for charge in &charges[..7] {
            charge.set(100);
        }
        // 900 > 800: one is told, and it has not closed (a starved task) when more arrives.
        charges[7].set(200);
        assert!(charges[7].is_told());
        assert_eq!(budget.held(), 900);
        let late = budget.open();
        late.set(50);
        // 950, of which the told one's 200 is still held: this scan tells the largest until
        // the total less what it told is <= 700, three of the 100s (950 - 300 = 650).
        assert!(!late.is_told());
        let n_told = charges.iter().filter(|c| c.is_told()).count();
        assert_eq!(n_told, 4, "the one told before and three of the 100s");
        drop(charges);
        drop(late);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_told_connection_hears_it() {
        let budget = PartialBudget::new(10);
        let mut charge = budget.open();
        charge.set(11);
        tokio::time::timeout(std::time::Duration::from_secs(5), charge.told())
            .await
            .expect("told");
    }
}
