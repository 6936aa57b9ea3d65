//! The one shutdown signal of every command and task: Ctrl+C or SIGTERM, or a trigger of the
//! program's own (the demo stopping its receiver, a test stopping a server).
//!
//! A [`Shutdown`] is cheap to clone; every task that must stop holds one and either checks
//! [`Shutdown::is_requested`] between steps or awaits [`Shutdown::requested`]. `receive`,
//! `send` and `demo` all stop through it, so Ctrl+C and SIGTERM mean the same to each.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal as unix_signal};
use tokio::sync::watch;

/// Whether shutdown has been asked for, and a way to wait until it is.
#[derive(Clone, Debug)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

/// Asks for shutdown; dropping it does not.
#[derive(Clone, Debug)]
pub struct Trigger {
    requested: watch::Sender<bool>,
}

impl Trigger {
    /// Asks every holder of the matching [`Shutdown`] to stop.
    pub fn trigger(&self) {
        self.requested.send_replace(true);
    }
}

impl Shutdown {
    /// A shutdown that only its [`Trigger`] sets off.
    pub fn new() -> (Trigger, Shutdown) {
        let (requested, receiver) = watch::channel(false);
        (
            Trigger { requested },
            Shutdown {
                requested: receiver,
            },
        )
    }

    /// A shutdown set off by Ctrl+C or SIGTERM (or by the returned trigger); a second
    /// signal ends the process at once. The signal handlers are installed before it returns, so a Ctrl+C from then on is never the
    /// default "end the process at once". Needs a tokio runtime: a task waits for them.
    pub fn on_signals() -> (Trigger, Shutdown) {
        let (trigger, shutdown) = Shutdown::new();
        let on_signal = trigger.clone();
        let signals = installed();
        tokio::spawn(async move {
            signals.await;
            on_signal.trigger();
            // A second signal means "now": whoever waits for a slow final step (a long
            // export round, a receiver that does not answer) is not stuck with it. What was
            // acknowledged is durable, so nothing is lost.
            installed().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
        (trigger, shutdown)
    }

    /// Whether shutdown has been asked for.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Completes once shutdown is asked for (at once if it already was). If every trigger
    /// is gone without asking, it never completes.
    pub async fn requested(&mut self) {
        if self
            .requested
            .wait_for(|requested| *requested)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }

    /// [`Shutdown::requested`] as a future that owns its shutdown, for `server::run`.
    pub async fn into_requested(mut self) {
        self.requested().await;
    }
}

/// Completes on Ctrl+C or SIGTERM, with the handlers installed now instead of when the
/// future is first polled: until then a Ctrl+C still has its default effect and ends the process at once,
/// without a summary. Commands that print one call this before they start sending.
pub fn installed() -> impl Future<Output = ()> + Send + 'static {
    let interrupt = unix_signal(SignalKind::interrupt()).ok();
    let terminate = unix_signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = received(interrupt) => {}
            _ = received(terminate) => {}
        }
    }
}

/// Waits for `signal`; forever when its handler could not be installed.
async fn received(signal: Option<Signal>) {
    match signal {
        Some(mut signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_holder_sees_the_trigger() {
        let (trigger, shutdown) = Shutdown::new();
        let mut waiting = shutdown.clone();
        let waiter = tokio::spawn(async move { waiting.requested().await });
        assert!(!shutdown.is_requested());
        let early =
            tokio::time::timeout(Duration::from_millis(50), shutdown.clone().into_requested());
        assert!(early.await.is_err(), "not before the trigger");
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(shutdown.is_requested());
        // A holder that comes late sees it at once.
        tokio::time::timeout(Duration::from_secs(10), shutdown.into_requested())
            .await
            .expect("at once");
    }
}
