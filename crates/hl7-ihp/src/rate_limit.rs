//! Per-peer rate limiting of log lines: at most one line of a kind per peer address per
//! interval, and the lines held back are counted, never lost (item 7 of issue 8: junk costs
//! little).
//!
//! Without it, a device sending 10,000 empty frames wrote 10,000 warnings, and one that
//! reconnects in a loop two lines per connection. Each allowed line carries `n_suppressed`,
//! the lines of its kind held back for that peer since the previous one; [`RateLimit::flush`],
//! run every interval, logs a `log lines suppressed` summary for each peer whose interval
//! ended with lines held back, so the count comes out even when the peer falls silent.
//!
//! Only lines about problems and connections go through here, never one per accepted
//! message, so the mutex is not on the message path. The map is bounded: past
//! [`MAX_TRACKED`] keys, lines of new peers are held back and counted together.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a peer may log a line of one kind.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Most (peer, kind) pairs remembered; a few per connected device fit well below it.
pub const MAX_TRACKED: usize = 8192;

/// The level of a kind of line, which its summary keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Connections opening and closing.
    Info,
    /// Rejected frames, answered errors, refused connections.
    Warn,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    n_suppressed: u64,
    level: Level,
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<(IpAddr, &'static str), Window>,
    /// Lines of peers that found the map full.
    n_untracked: u64,
    /// When a full map was last flushed to make room: a full map is scanned at most once
    /// a second, so that addresses that keep changing cannot make every line a scan.
    full_flushed_at: Option<Instant>,
}

/// The limiter shared by every connection.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    max_tracked: usize,
    state: Mutex<State>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new(INTERVAL, MAX_TRACKED)
    }
}

impl RateLimit {
    /// A limiter of one line per `interval` per (peer, kind), remembering `max_tracked` pairs.
    pub fn new(interval: Duration, max_tracked: usize) -> Self {
        Self {
            interval,
            max_tracked,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a line of kind `what` about `ip` may be logged now: `Some(n_suppressed)`, the
    /// lines of this kind held back since the last one, or `None` to hold it back.
    pub fn allow(&self, ip: IpAddr, what: &'static str, level: Level) -> Option<u64> {
        self.allow_at(ip, what, level, Instant::now())
    }

    fn allow_at(&self, ip: IpAddr, what: &'static str, level: Level, now: Instant) -> Option<u64> {
        let mut state = self.lock();
        if let Some(window) = state.windows.get_mut(&(ip, what)) {
            if now.duration_since(window.started) < self.interval {
                window.n_suppressed += 1;
                return None;
            }
            window.started = now;
            return Some(std::mem::take(&mut window.n_suppressed));
        }
        if state.windows.len() >= self.max_tracked {
            let due = state
                .full_flushed_at
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
            if due {
                state.full_flushed_at = Some(now);
                self.flush_locked(&mut state, now);
            }
            if state.windows.len() >= self.max_tracked {
                state.n_untracked += 1;
                return None;
            }
        }
        state.windows.insert(
            (ip, what),
            Window {
                started: now,
                n_suppressed: 0,
                level,
            },
        );
        Some(0)
    }

    /// Logs a summary for every interval that ended with lines held back, and forgets the
    /// pairs whose interval ended.
    pub fn flush(&self) {
        let mut state = self.lock();
        self.flush_locked(&mut state, Instant::now());
    }

    fn flush_locked(&self, state: &mut State, now: Instant) {
        state.windows.retain(|&(ip, what), window| {
            if now.duration_since(window.started) < self.interval {
                return true;
            }
            let n_suppressed = window.n_suppressed;
            if n_suppressed > 0 {
                match window.level {
                    Level::Warn => {
                        tracing::warn!(peer = %ip, what, n_suppressed, "log lines suppressed");
                    }
                    Level::Info => {
                        tracing::info!(peer = %ip, what, n_suppressed, "log lines suppressed");
                    }
                }
            }
            false
        });
        let n_suppressed = std::mem::take(&mut state.n_untracked);
        if n_suppressed > 0 {
            tracing::warn!(
                n_suppressed,
                "log lines suppressed: too many peers to track each"
            );
        }
    }

    /// Runs [`flush`](Self::flush) every interval until `stop` completes, then once more.
    pub async fn run_flusher(&self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.flush(),
                () = &mut stop => break,
            }
        }
        // Whatever is still held back is said before the receiver stops.
        let mut state = self.lock();
        let far = Instant::now() + self.interval;
        self.flush_locked(&mut state, far);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn one_line_per_peer_and_kind_per_interval_with_the_count_on_the_next() {
        let limit = RateLimit::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert_eq!(limit.allow_at(A, "junk", Level::Warn, t0), Some(0));
        for n in 1..=5 {
            let at = t0 + Duration::from_secs(n);
            assert_eq!(limit.allow_at(A, "junk", Level::Warn, at), None);
        }
        // Other peers and other kinds have their own windows.
        assert_eq!(limit.allow_at(B, "junk", Level::Warn, t0), Some(0));
        assert_eq!(limit.allow_at(A, "closed", Level::Info, t0), Some(0));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(limit.allow_at(A, "junk", Level::Warn, later), Some(5));
        assert_eq!(limit.allow_at(A, "junk", Level::Warn, later), None);
    }

    #[test]
    fn flush_forgets_ended_windows_and_the_map_stays_bounded() {
        let limit = RateLimit::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(limit.allow_at(A, "junk", Level::Warn, t0), Some(0));
        assert_eq!(limit.allow_at(B, "junk", Level::Warn, t0), Some(0));
        assert_eq!(limit.allow_at(A, "junk", Level::Warn, t0), None);
        // Full: a third pair is held back and counted apart.
        assert_eq!(limit.allow_at(A, "other", Level::Warn, t0), None);
        assert_eq!(limit.lock().n_untracked, 1);
        // Once the windows ended, a full map makes room by flushing.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limit.allow_at(A, "other", Level::Warn, later), Some(0));
        let state = limit.lock();
        assert_eq!(state.windows.len(), 1);
        assert_eq!(state.n_untracked, 0);
    }
}
