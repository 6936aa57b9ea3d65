//! The event log: every event the live view emits gets the next sequence number and goes
//! into a bounded ring ([`EVENT_WINDOW`], for clients that reconnect) and onto a
//! `tokio::sync::broadcast` channel ([`BROADCAST_CAPACITY`], for clients that follow).
//!
//! Publishing never waits: a client that falls more than the channel's capacity behind is
//! told so by its receiver (and the event stream then ends it), the ring drops its oldest
//! event. An event id is `<run>-<sequence>`, with a run id fresh at each start of the
//! receiver, so an id from an earlier run is recognised as such and answered with `reset`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

/// Events kept for clients that reconnect with `Last-Event-ID` (docs/api.md).
pub const EVENT_WINDOW: usize = 10_000;
/// Events a following client may fall behind before it is disconnected (docs/api.md).
pub const BROADCAST_CAPACITY: usize = 4_096;

/// What an event is about: its SSE `event` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A message's observations.
    Observation,
    /// A patient after a message about them.
    Patient,
    /// A message answered with an error or a reject.
    Rejected,
    /// A patient's or a device's status changed.
    Status,
    /// The events after the client's last id are no longer known.
    Reset,
    /// An alarm of an `ORU^R40` ([`super::alarms::AlarmView`]).
    Alarm,
}

impl EventKind {
    /// The SSE `event` name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Observation => "observation",
            EventKind::Patient => "patient",
            EventKind::Rejected => "rejected",
            EventKind::Status => "status",
            EventKind::Reset => "reset",
            EventKind::Alarm => "alarm",
        }
    }
}

/// One event: its place in this run's sequence, its kind and its JSON data (one line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveEvent {
    /// From 1, one more for each event of this run.
    pub seq: u64,
    /// The kind.
    pub kind: EventKind,
    /// The JSON data, rendered once for every client.
    pub data: String,
}

/// Where a client starts: what it missed (or a reset), then the live events after it.
#[derive(Debug)]
pub struct Start {
    /// A `reset` event to send first, when what the client missed is not known any more.
    pub reset: Option<LiveEvent>,
    /// The events after the client's last id, oldest first.
    pub backlog: Vec<Arc<LiveEvent>>,
    /// The events from now on. It may repeat the end of `backlog`: skip events whose
    /// sequence is not above `after`.
    pub receiver: broadcast::Receiver<Arc<LiveEvent>>,
    /// The last sequence the client has (or is given in `backlog`).
    pub after: u64,
}

struct Ring {
    events: VecDeque<Arc<LiveEvent>>,
    next_seq: u64,
}

/// The ring and the channel, one lock for both so a new client sees every event exactly
/// once: either in its backlog or on its receiver.
pub struct EventLog {
    run: String,
    ring: Mutex<Ring>,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    window: usize,
}

impl EventLog {
    /// An empty log for the run `run` (an id without `-`).
    pub fn new(run: String) -> EventLog {
        EventLog::with_window(run, EVENT_WINDOW, BROADCAST_CAPACITY)
    }

    /// An empty log keeping `window` events, with a channel of `capacity` (tests).
    pub fn with_window(run: String, window: usize, capacity: usize) -> EventLog {
        EventLog {
            run,
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(window.min(1024)),
                next_seq: 1,
            }),
            sender: broadcast::Sender::new(capacity),
            window,
        }
    }

    /// This run's id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The id of the event with sequence `seq`.
    pub fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.run)
    }

    /// Appends an event and sends it to every following client; never waits.
    pub fn publish(&self, kind: EventKind, data: String) {
        let mut ring = self.lock();
        let event = Arc::new(LiveEvent {
            seq: ring.next_seq,
            kind,
            data,
        });
        ring.next_seq += 1;
        if ring.events.len() >= self.window {
            ring.events.pop_front();
        }
        ring.events.push_back(Arc::clone(&event));
        // No receiver is not an error: nobody follows now.
        let _ = self.sender.send(event);
    }

    /// Where a client with `last_event_id` (the `Last-Event-ID` header) starts. Without one
    /// it gets the events from now on. With one of this run whose successors are all still
    /// in the ring, it gets them first. With one of another run, an unknown one, or one
    /// older than the ring, it gets a `reset` first.
    pub fn start(&self, last_event_id: Option<&str>) -> Start {
        let ring = self.lock();
        let receiver = self.sender.subscribe();
        let last = ring.next_seq - 1;
        let first = ring.events.front().map_or(ring.next_seq, |e| e.seq);
        let Some(id) = last_event_id.map(str::trim).filter(|id| !id.is_empty()) else {
            return Start {
                reset: None,
                backlog: Vec::new(),
                receiver,
                after: last,
            };
        };
        let seen = id
            .rsplit_once('-')
            .filter(|(run, _)| *run == self.run)
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .filter(|&seq| seq <= last && seq + 1 >= first);
        match seen {
            Some(seen) => {
                let skip = usize::try_from(seen + 1 - first).unwrap_or(usize::MAX);
                Start {
                    reset: None,
                    backlog: ring.events.iter().skip(skip).cloned().collect(),
                    receiver,
                    after: last,
                }
            }
            None => Start {
                // Its id is the position now: a client that reconnects after it resumes here.
                reset: Some(LiveEvent {
                    seq: last,
                    kind: EventKind::Reset,
                    data: r#"{"reason":"missed"}"#.into(),
                }),
                backlog: Vec::new(),
                receiver,
                after: last,
            },
        }
    }

    /// The sequence of the newest event, 0 before the first.
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Every change to the ring is one push and one pop: a panic elsewhere leaves it whole.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(window: usize) -> EventLog {
        let log = EventLog::with_window("RUN1".into(), window, 16);
        for n in 1..=5 {
            log.publish(EventKind::Observation, format!("{{\"n\":{n}}}"));
        }
        log
    }

    fn seqs(start: &Start) -> Vec<u64> {
        start.backlog.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_client_resuming_gets_exactly_what_it_missed() {
        let log = log(10);
        let start = log.start(Some("RUN1-2"));
        assert!(start.reset.is_none());
        assert_eq!(seqs(&start), [3, 4, 5]);
        assert_eq!(start.after, 5);
        let start = log.start(Some("RUN1-5"));
        assert!(start.reset.is_none() && start.backlog.is_empty());
        let start = log.start(Some("RUN1-0"));
        assert_eq!(seqs(&start), [1, 2, 3, 4, 5], "from before the first event");
        assert_eq!(log.id(5), "RUN1-5");
    }

    #[test]
    fn a_new_client_gets_what_comes_next() {
        let log = log(10);
        let mut start = log.start(None);
        assert!(start.reset.is_none() && start.backlog.is_empty());
        log.publish(EventKind::Rejected, "{}".into());
        let event = start.receiver.try_recv().unwrap();
        assert_eq!((event.seq, event.kind), (6, EventKind::Rejected));
    }

    #[test]
    fn ids_older_than_the_window_or_of_another_run_get_a_reset() {
        let log = log(3);
        // The ring holds 3, 4, 5: after 2 everything is there, after 1 the 2 is lost.
        assert_eq!(seqs(&log.start(Some("RUN1-2"))), [3, 4, 5]);
        for id in ["RUN1-1", "RUN0-4", "RUN1-9", "RUN1-x", "garbage", "-"] {
            let start = log.start(Some(id));
            let reset = start.reset.expect(id);
            assert_eq!(reset.kind, EventKind::Reset, "{id}");
            assert_eq!(reset.seq, 5, "{id}: the reset's id is the position now");
            assert_eq!(&*reset.data, r#"{"reason":"missed"}"#);
            assert!(start.backlog.is_empty(), "{id}");
        }
        // After the reset the client resumes from its id.
        assert!(log.start(Some("RUN1-5")).reset.is_none());
        // An empty header is no header.
        assert!(log.start(Some(" ")).reset.is_none());
    }

    #[test]
    fn the_window_is_bounded() {
        let log = log(3);
        for _ in 0..100 {
            log.publish(EventKind::Status, "{}".into());
        }
        assert_eq!(log.lock().events.len(), 3);
        assert_eq!(log.last_seq(), 105);
    }

    #[test]
    fn a_client_that_falls_behind_the_channel_is_told() {
        let log = EventLog::with_window("R".into(), 100, 4);
        let mut start = log.start(None);
        for _ in 0..10 {
            log.publish(EventKind::Observation, "{}".into());
        }
        assert!(matches!(
            start.receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
