//! The one shutdown signal of every command and task: Ctrl+C or SIGTERM.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal as unix_signal};

/// Completes on Ctrl+C or SIGTERM.
pub async fn signal() {
    installed().await
}

/// Like [`signal`], with the handlers installed now instead of when the future is first
/// polled: until then a Ctrl+C still has its default effect and ends the process at once,
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
