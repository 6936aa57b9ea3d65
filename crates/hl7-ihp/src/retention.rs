//! Retention: the purger task that removes old messages in the background
//! (`--retention`, `--retention-rejected`), its counters, and the parsing of retention
//! durations and of `hl7-ihp purge`'s times.
//!
//! The task is off the ACK path: it asks the store for one small step at a time
//! ([`Store::purge`], at most [`STEP_MESSAGES`] messages in one transaction that the writer
//! runs between group commits), pauses between steps, and sleeps between rounds. What a
//! step may remove is bounded by the store (docs/storage.md, "Retention"): nothing the
//! patient files do not hold yet, nothing whose duplicate key is still in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::export::PatientFiles;
use crate::metrics::Extra;
use crate::shutdown::Shutdown;
use crate::store::{PurgeCursor, PurgeReport, PurgeRequest, Store};

/// Messages removed per step (one transaction of the writer). Measured with 1,000 patients
/// on a busy 2-core machine (`bench/retention.sh`): a step of 250 took 2.6 ms of the writer
/// at the median, 6.9 ms at p90 (500 took 9.5 ms when each message's patient index entry
/// was deleted with it; those now go in a sweep per patient).
pub const STEP_MESSAGES: usize = 250;

/// Pause between two steps of a round, so that commit groups always get the writer; with
/// the step's own time it bounds removal to about 25,000 messages a second.
const STEP_PAUSE: Duration = Duration::from_millis(5);

/// A round starts at most this often...
const ROUND_EVERY: Duration = Duration::from_secs(10);

/// ...and at least a quarter of the shortest retention apart, but not more often than this.
const SHORTEST_ROUND: Duration = Duration::from_secs(1);

/// The longest retention taken: a century (times are ms since the epoch in an `i64`).
const LONGEST: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// What `--retention` and `--retention-rejected` ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Accepted messages (and their observations) older than this go; `None` keeps them.
    pub accepted: Option<Duration>,
    /// Refused frames (errors and rejects) older than this go; `None` keeps them.
    pub refused: Option<Duration>,
}

impl RetentionConfig {
    /// Whether anything is ever removed.
    pub fn is_on(&self) -> bool {
        self.accepted.is_some() || self.refused.is_some()
    }

    /// The time between rounds: [`ROUND_EVERY`], or a quarter of the shortest retention
    /// when that is shorter (tests use seconds), at least [`SHORTEST_ROUND`].
    pub fn round_every(&self) -> Duration {
        let shortest = [self.accepted, self.refused]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(ROUND_EVERY);
        (shortest / 4).clamp(SHORTEST_ROUND, ROUND_EVERY)
    }
}

/// Parses a retention: `off`, or a whole number with `s`, `m`, `h` or `d` (`90d`, `12h`,
/// `10s`), at least a second and at most a century.
pub fn parse_retention(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "off" {
        return Ok(None);
    }
    parse_age(text).map(Some)
}

/// A duration with `s`, `m`, `h` or `d` (`30d`), above zero.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected `off` or a duration such as 90d, 12h, 30m or 10s";
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| EXPECTED.to_owned())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| EXPECTED.to_owned())?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| EXPECTED.to_owned())?;
    let duration = Duration::from_secs(seconds);
    if duration.is_zero() {
        return Err("expected a duration above zero".into());
    }
    if duration > LONGEST {
        return Err("expected a duration of at most a century (36600d)".into());
    }
    Ok(duration)
}

/// Parses the times `hl7-ihp purge` and `hl7-ihp replay` take: RFC 3339
/// (`2026-01-31T00:00:00Z`), `now`, or a duration ago (`30d`, `2h`, `90m`, `0s`), given the
/// time now.
pub fn parse_time(text: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp, String> {
    const EXPECTED: &str = "expected an RFC 3339 time such as 2026-01-31T00:00:00Z, `now`, or a duration ago such as 30d, 2h or 90m";
    let text = text.trim();
    if text == "now" || text.strip_suffix(['s', 'm', 'h', 'd']) == Some("0") {
        return Ok(now);
    }
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(time);
    }
    let age = parse_age(text).map_err(|_| EXPECTED.to_owned())?;
    jiff::SignedDuration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age).ok())
        .ok_or_else(|| "the duration goes back too far".to_owned())
}

/// [`parse_time`] as milliseconds since the epoch (`hl7-ihp purge --before`).
pub fn parse_before(text: &str, now: jiff::Timestamp) -> Result<i64, String> {
    parse_time(text, now).map(jiff::Timestamp::as_millisecond)
}

/// The exporters whose watermarks bound a purge, by the patient files kept.
pub fn exporters(files: PatientFiles) -> Vec<String> {
    files
        .outputs()
        .iter()
        .map(|output| output.name().to_owned())
        .collect()
}

/// The purger's numbers for `/metrics`.
#[derive(Debug, Default)]
pub struct PurgeCounters {
    /// Rounds finished.
    pub n_runs: AtomicU64,
    /// Accepted messages removed.
    pub n_accepted: AtomicU64,
    /// Refused frames removed.
    pub n_refused: AtomicU64,
    /// Steps that failed (the store's error; the next round tries again).
    pub n_failed: AtomicU64,
    /// Old accepted messages held back at the end of the last round.
    pub n_held_back: AtomicU64,
    /// When the last round ended, ms since the epoch (0: none yet).
    pub last_run_ms: AtomicI64,
}

impl PurgeCounters {
    /// The counters as `/metrics` lines.
    pub fn extras(&self) -> Vec<Extra> {
        let value = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let load = |n: &AtomicU64| value(n.load(Ordering::Relaxed));
        vec![
            Extra {
                name: "hl7ihp_purge_runs_total",
                help: "Retention rounds finished.",
                counter: true,
                value: load(&self.n_runs),
            },
            Extra {
                name: "hl7ihp_purged_messages_total",
                help: "Accepted messages removed by retention (with their observations).",
                counter: true,
                value: load(&self.n_accepted),
            },
            Extra {
                name: "hl7ihp_purged_refused_total",
                help: "Refused frames (errors and rejects) removed by retention.",
                counter: true,
                value: load(&self.n_refused),
            },
            Extra {
                name: "hl7ihp_purge_failures_total",
                help: "Retention steps that failed; the next round tries again.",
                counter: true,
                value: load(&self.n_failed),
            },
            Extra {
                name: "hl7ihp_purge_held_back_messages",
                help: "Messages older than --retention kept because the patient files or the indexes do not hold them yet.",
                counter: false,
                value: load(&self.n_held_back),
            },
            Extra {
                name: "hl7ihp_purge_last_run_timestamp_seconds",
                help: "When the last retention round ended (Unix time; 0: none yet).",
                counter: false,
                value: self.last_run_ms.load(Ordering::Relaxed) / 1000,
            },
        ]
    }
}

/// The purger task: a round every [`RetentionConfig::round_every`] until `shutdown`; each
/// round removes in steps what retention allows now. Never fails: a failing step is counted
/// and logged, and the next round tries again.
pub async fn run(
    store: Arc<dyn Store>,
    config: RetentionConfig,
    files: PatientFiles,
    counters: Arc<PurgeCounters>,
    mut shutdown: Shutdown,
) {
    if !config.is_on() {
        return;
    }
    let exporters = exporters(files);
    let every = config.round_every();
    let mut cursor = PurgeCursor::START;
    loop {
        let now = jiff::Timestamp::now().as_millisecond();
        let before = |age: Option<Duration>| {
            age.map(|age| now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)))
        };
        let request = PurgeRequest {
            accepted_before_ms: before(config.accepted),
            refused_before_ms: before(config.refused),
            exporters: exporters.clone(),
            max_messages: STEP_MESSAGES,
            cursor,
            dry_run: false,
        };
        if let Some(last) = round(store.as_ref(), request, &counters, &mut shutdown).await {
            cursor = last.cursor;
            counters
                .n_held_back
                .store(last.n_held_back, Ordering::Relaxed);
            counters.n_runs.fetch_add(1, Ordering::Relaxed);
            counters
                .last_run_ms
                .store(jiff::Timestamp::now().as_millisecond(), Ordering::Relaxed);
        }
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One round: steps until nothing more may go now; the last step's report (with the total
/// removed), or `None` when a step failed or shutdown was asked for first.
async fn round(
    store: &dyn Store,
    mut request: PurgeRequest,
    counters: &PurgeCounters,
    shutdown: &mut Shutdown,
) -> Option<PurgeReport> {
    let mut n_accepted = 0;
    let mut n_refused = 0;
    loop {
        if shutdown.is_requested() {
            return None;
        }
        let report = match store.purge(request.clone()).await {
            Ok(report) => report,
            Err(error) => {
                counters.n_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "a retention step failed; the next round tries again");
                return None;
            }
        };
        counters
            .n_accepted
            .fetch_add(report.n_accepted, Ordering::Relaxed);
        counters
            .n_refused
            .fetch_add(report.n_refused, Ordering::Relaxed);
        n_accepted += report.n_accepted;
        n_refused += report.n_refused;
        // A step that neither removed nor moved on (never expected) ends the round too.
        let stuck = report.cursor == request.cursor && report.n_accepted + report.n_refused == 0;
        if !report.more || stuck {
            if n_accepted + n_refused > 0 || report.n_held_back > 0 {
                tracing::debug!(
                    n_accepted,
                    n_refused,
                    n_held_back = report.n_held_back,
                    held_by = report.held_by.as_ref().map(ToString::to_string),
                    "retention round"
                );
            }
            return Some(PurgeReport {
                n_accepted,
                n_refused,
                ..report
            });
        }
        request.cursor = report.cursor;
        tokio::select! {
            () = shutdown.requested() => return None,
            () = tokio::time::sleep(STEP_PAUSE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_take_days_and_off() {
        assert_eq!(parse_retention("off"), Ok(None));
        assert_eq!(
            parse_retention("90d"),
            Ok(Some(Duration::from_secs(90 * 86_400)))
        );
        assert_eq!(
            parse_retention(" 12h "),
            Ok(Some(Duration::from_secs(12 * 3600)))
        );
        assert_eq!(parse_retention("10s"), Ok(Some(Duration::from_secs(10))));
        assert_eq!(parse_retention("5m"), Ok(Some(Duration::from_secs(300))));
        for bad in [
            "",
            "0d",
            "10",
            "10ms",
            "d",
            "-1d",
            "1y",
            "36601d",
            "99999999999999999999d",
        ] {
            assert!(parse_retention(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn purge_times_are_rfc3339_or_ago() {
        let now: jiff::Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            parse_before("2026-01-31T00:00:00Z", now),
            Ok("2026-01-31T00:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond())
        );
        assert_eq!(
            parse_before("1d", now),
            Ok(now.as_millisecond() - 86_400_000)
        );
        assert!(parse_before("yesterday", now).is_err());
        assert_eq!(parse_before("now", now), Ok(now.as_millisecond()));
        assert_eq!(parse_before("0s", now), Ok(now.as_millisecond()));
    }

    #[test]
    fn rounds_follow_the_shortest_retention() {
        let config = |accepted: Option<u64>, refused: Option<u64>| RetentionConfig {
            accepted: accepted.map(Duration::from_secs),
            refused: refused.map(Duration::from_secs),
        };
        assert_eq!(config(Some(90 * 86_400), None).round_every(), ROUND_EVERY);
        assert_eq!(
            config(Some(8), Some(90 * 86_400)).round_every(),
            Duration::from_secs(2)
        );
        assert_eq!(config(None, Some(2)).round_every(), SHORTEST_ROUND);
        assert!(!config(None, None).is_on());
    }

    #[test]
    fn exporters_follow_the_patient_files() {
        assert_eq!(exporters(PatientFiles::Both), ["json", "ndjson"]);
        assert!(exporters(PatientFiles::Off).is_empty());
    }
}
