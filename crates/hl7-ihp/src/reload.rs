//! SIGHUP, the operator's "reload": the TLS listeners read their files again and the audit
//! trail reopens its file (after log rotation). Each part holds a receiver of one counter
//! that every SIGHUP increments; the TLS files are also polled, so a renewed certificate is
//! picked up without a signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::{Audit, AuditEvent};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::tls::ServerTls;

/// How often the TLS files are looked at for a change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A counter of SIGHUPs received, from now on; the signal's handler lives as long as the
/// runtime. Without a signal handler (it cannot be installed) the counter never moves.
pub fn hangups() -> (watch::Sender<u64>, watch::Receiver<u64>) {
    let (sender, receiver) = watch::channel(0u64);
    let counter = sender.clone();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut signal) => {
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    counter.send_modify(|n| *n += 1);
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot handle SIGHUP; TLS files are still polled"),
    }
    (sender, receiver)
}

/// Reloads a listener's TLS files on SIGHUP and when they change, until `stop`. A refused
/// reload (unreadable file, key not matching the certificate, …) is logged and audited, and
/// the old configuration stays; the same files are not tried again until they change.
pub async fn watch_tls(
    listener: &'static str,
    tls: Arc<ServerTls>,
    mut hangups: watch::Receiver<u64>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    stop: Shutdown,
) {
    let mut stopped = std::pin::pin!(stop.into_requested());
    loop {
        let signalled = tokio::select! {
            () = &mut stopped => return,
            changed = hangups.changed() => changed.is_ok(),
            () = tokio::time::sleep(POLL_INTERVAL) => false,
        };
        if !signalled && !tls.changed() {
            continue;
        }
        let why = if signalled { "SIGHUP" } else { "files changed" };
        let tried = Arc::clone(&tls);
        let result = tokio::task::spawn_blocking(move || tried.reload()).await;
        match result {
            Ok(Ok(())) => {
                Metrics::inc(&metrics.tls_reloads);
                tracing::info!(
                    listener,
                    why,
                    "TLS configuration reloaded; new connections use it"
                );
                audit.record(AuditEvent::ConfigurationReloaded { listener });
            }
            Ok(Err(error)) => {
                Metrics::inc(&metrics.tls_reload_failures);
                tracing::warn!(listener, why, %error, "TLS reload refused; the previous configuration stays");
                audit.record(AuditEvent::ConfigurationReloadFailed {
                    listener,
                    reason: error.to_string(),
                });
            }
            Err(error) => tracing::error!(%error, "the TLS reload task failed"),
        }
    }
}
