//! The receiver's counters and gauges, rendered in the Prometheus text format for `/metrics`.
//!
//! Plain atomics: a handful of numbers updated per message do not need a metrics framework.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Every metric of the receiver.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused by the per-peer limit.
    pub connections_refused: AtomicU64,
    /// Connections refused by the allowlist.
    pub connections_refused_allowlist: AtomicU64,
    /// Connections refused for their PROXY header (missing, invalid, or untrusted).
    pub connections_refused_proxy: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes failed or timed out.
    pub tls_handshake_failures: AtomicU64,
    /// HTTPS handshakes failed or timed out.
    pub http_tls_handshake_failures: AtomicU64,
    /// TLS configurations reloaded.
    pub tls_reloads: AtomicU64,
    /// TLS reloads refused (the old configuration stayed).
    pub tls_reload_failures: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicI64,
    /// Connections closed for silence or a frame that took too long.
    pub connections_timed_out: AtomicU64,
    /// Connections closed because unfinished frames took more than the budget.
    pub connections_closed_over_budget: AtomicU64,
    /// HTTP connections open now.
    pub http_connections_open: AtomicI64,
    /// HTTP connections closed by the header or the idle timeout.
    pub http_connections_timed_out: AtomicU64,
    /// Accept failures (file descriptors exhausted and others).
    pub accept_errors: AtomicU64,
    /// Frames read whole.
    pub frames: AtomicU64,
    /// Messages stored and acknowledged positively.
    pub messages_accepted: AtomicU64,
    /// Messages answered with AE/CE.
    pub messages_error: AtomicU64,
    /// Messages answered with AR/CR (unreadable, oversized, store failure).
    pub messages_rejected: AtomicU64,
    /// Retransmissions recognised and not stored again.
    pub messages_duplicate: AtomicU64,
    /// Frames over the size limit.
    pub frames_oversized: AtomicU64,
    /// Bytes outside MLLP frames, skipped.
    pub mllp_bytes_skipped: AtomicU64,
    /// Frames ended by `0x1C` without `0x0D`.
    pub mllp_frames_without_cr: AtomicU64,
    /// Partial frames dropped because `0x0B` came again.
    pub mllp_frames_restarted: AtomicU64,
    /// Messages whose MSH-18 names an unknown charset.
    pub charset_unknown: AtomicU64,
    /// Store commits that failed.
    pub store_failures: AtomicU64,
    /// ACKs written.
    pub acks_sent: AtomicU64,
    /// Connection tasks that panicked (a bug; the server goes on).
    pub connection_panics: AtomicU64,
    /// New accepted messages with a waveform (an `ORU^W01` or an `NA`/`MA` row).
    pub waveform_messages: AtomicU64,
    /// Their waveform OBX rows, stored raw and not extracted ([`crate::waveform`]).
    pub waveform_observations: AtomicU64,
    /// Messages read as bare HL7, without MLLP framing (`--framing auto|none`).
    pub unframed_messages: AtomicU64,
    /// Demographic queries answered with the patients found ([`crate::query`]).
    pub queries_answered: AtomicU64,
    /// Of those, the ones that found nobody (`NF`).
    pub queries_not_found: AtomicU64,
}

impl Metrics {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`; adding nothing does not touch the counter, which every connection shares.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition, with the store's and the exporter's numbers.
    pub fn render(&self, extra: &[Extra]) -> String {
        let mut out = String::with_capacity(2048);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 30] = [
            (
                "hl7ihp_connections_accepted_total",
                "Connections accepted.",
                get(&self.connections_accepted),
            ),
            (
                "hl7ihp_connections_refused_total",
                "Connections refused by the per-peer limit.",
                get(&self.connections_refused),
            ),
            (
                "hl7ihp_connections_refused_allowlist_total",
                "Connections refused by --allow before a byte was read.",
                get(&self.connections_refused_allowlist),
            ),
            (
                "hl7ihp_connections_refused_proxy_total",
                "Connections refused for their PROXY header (missing, invalid or untrusted).",
                get(&self.connections_refused_proxy),
            ),
            (
                "hl7ihp_tls_handshakes_total",
                "TLS handshakes completed.",
                get(&self.tls_handshakes),
            ),
            (
                "hl7ihp_tls_handshake_failures_total",
                "TLS handshakes failed or timed out (the audit trail has each reason).",
                get(&self.tls_handshake_failures),
            ),
            (
                "hl7ihp_http_tls_handshake_failures_total",
                "HTTPS handshakes failed or timed out.",
                get(&self.http_tls_handshake_failures),
            ),
            (
                "hl7ihp_tls_reloads_total",
                "TLS configurations reloaded (SIGHUP or changed files).",
                get(&self.tls_reloads),
            ),
            (
                "hl7ihp_tls_reload_failures_total",
                "TLS reloads refused; the previous configuration stayed.",
                get(&self.tls_reload_failures),
            ),
            (
                "hl7ihp_connections_timed_out_total",
                "Connections closed for silence or a slow frame.",
                get(&self.connections_timed_out),
            ),
            (
                "hl7ihp_connections_closed_over_budget_total",
                "Connections closed because unfinished frames took more than their budget.",
                get(&self.connections_closed_over_budget),
            ),
            (
                "hl7ihp_http_connections_timed_out_total",
                "HTTP connections closed by the header or the idle timeout.",
                get(&self.http_connections_timed_out),
            ),
            (
                "hl7ihp_accept_errors_total",
                "Failed accepts.",
                get(&self.accept_errors),
            ),
            (
                "hl7ihp_frames_total",
                "MLLP frames read whole.",
                get(&self.frames),
            ),
            (
                "hl7ihp_frames_oversized_total",
                "Frames over the size limit.",
                get(&self.frames_oversized),
            ),
            (
                "hl7ihp_mllp_bytes_skipped_total",
                "Bytes outside MLLP frames.",
                get(&self.mllp_bytes_skipped),
            ),
            (
                "hl7ihp_mllp_frames_without_cr_total",
                "Frames ended by 0x1C without 0x0D.",
                get(&self.mllp_frames_without_cr),
            ),
            (
                "hl7ihp_mllp_frames_restarted_total",
                "Partial frames dropped by a new 0x0B.",
                get(&self.mllp_frames_restarted),
            ),
            (
                "hl7ihp_charset_unknown_total",
                "Messages whose MSH-18 is not understood.",
                get(&self.charset_unknown),
            ),
            (
                "hl7ihp_store_failures_total",
                "Failed store commits.",
                get(&self.store_failures),
            ),
            ("hl7ihp_acks_total", "ACKs written.", get(&self.acks_sent)),
            (
                "hl7ihp_connection_panics_total",
                "Connection tasks that panicked.",
                get(&self.connection_panics),
            ),
            (
                "hl7ihp_messages_accepted_total",
                "Messages stored and acknowledged positively.",
                get(&self.messages_accepted),
            ),
            (
                "hl7ihp_messages_error_total",
                "Messages answered AE/CE.",
                get(&self.messages_error),
            ),
            (
                "hl7ihp_messages_rejected_total",
                "Messages answered AR/CR.",
                get(&self.messages_rejected),
            ),
            (
                "hl7ihp_waveform_messages_total",
                "New accepted messages with a waveform (ORU^W01, or an NA/MA row).",
                get(&self.waveform_messages),
            ),
            (
                "hl7ihp_waveform_observations_total",
                "Waveform OBX rows stored raw and not extracted as observations.",
                get(&self.waveform_observations),
            ),
            (
                "hl7ihp_unframed_messages_total",
                "Messages read as bare HL7, without MLLP framing.",
                get(&self.unframed_messages),
            ),
            (
                "hl7ihp_queries_answered_total",
                "Demographic queries (QRY^A19, QBP^Q22) answered with the patients found.",
                get(&self.queries_answered),
            ),
            (
                "hl7ihp_queries_not_found_total",
                "Demographic queries that found nobody (NF).",
                get(&self.queries_not_found),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hl7ihp_messages_duplicate_total Retransmissions recognised and not stored again.\n# TYPE hl7ihp_messages_duplicate_total counter\nhl7ihp_messages_duplicate_total {}",
            get(&self.messages_duplicate)
        );
        let _ = writeln!(
            out,
            "# HELP hl7ihp_connections_open Connections open now.\n# TYPE hl7ihp_connections_open gauge\nhl7ihp_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP hl7ihp_http_connections_open HTTP connections open now.\n# TYPE hl7ihp_http_connections_open gauge\nhl7ihp_http_connections_open {}",
            self.http_connections_open.load(Ordering::Relaxed)
        );
        for metric in extra {
            let kind = if metric.counter { "counter" } else { "gauge" };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}",
                name = metric.name,
                help = metric.help,
                value = metric.value
            );
        }
        out
    }
}

/// A number kept elsewhere (the store, the exporter), rendered with the others.
#[derive(Clone, Copy, Debug)]
pub struct Extra {
    /// Metric name.
    pub name: &'static str,
    /// One-line help.
    pub help: &'static str,
    /// Counter (true) or gauge.
    pub counter: bool,
    /// The value.
    pub value: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        Metrics::inc(&metrics.messages_accepted);
        Metrics::add(&metrics.mllp_bytes_skipped, 5);
        let text = metrics.render(&[Extra {
            name: "hl7ihp_store_transactions_total",
            help: "Store transactions.",
            counter: true,
            value: 3,
        }]);
        assert!(text.contains(
            "# TYPE hl7ihp_store_transactions_total counter\nhl7ihp_store_transactions_total 3\n"
        ));
        assert!(
            text.contains("\nhl7ihp_messages_accepted_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nhl7ihp_mllp_bytes_skipped_total 5\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE hl7ihp_connections_open gauge"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("hl7ihp_"));
            assert!(value.parse::<i64>().is_ok(), "{line}");
        }
    }
}
