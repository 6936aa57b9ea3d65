//! Messages per minute for the last 24 hours, by outcome and by message type: a ring of
//! [`MINUTES`] slots, each reused when its minute comes round again. Pure; the caller gives
//! the times.

use std::collections::BTreeMap;

use crate::store::{Outcome, utc_text};

use super::shapes::MinuteCounts;

/// The minutes kept: 24 hours.
pub const MINUTES: usize = 24 * 60;
/// Message types counted apart per minute; the rest count as [`OTHER_TYPES`].
pub const MAX_TYPES_PER_MINUTE: usize = 32;
/// The key under which types past [`MAX_TYPES_PER_MINUTE`] are counted.
pub const OTHER_TYPES: &str = "other";

const MINUTE_MS: i64 = 60_000;

#[derive(Clone, Debug, Default)]
struct Slot {
    /// Minutes since the Unix epoch; `None` while unused.
    minute: Option<i64>,
    accepted: u64,
    error: u64,
    rejected: u64,
    by_type: Vec<(String, u64)>,
}

/// The ring of minutes.
#[derive(Clone, Debug)]
pub struct Minutes {
    slots: Vec<Slot>,
}

impl Default for Minutes {
    fn default() -> Self {
        Minutes {
            slots: vec![Slot::default(); MINUTES],
        }
    }
}

impl Minutes {
    /// Counts one message received at `received_ms` (ms since the epoch). A message older
    /// than the minute its slot holds now is outside the window and not counted.
    pub fn record(&mut self, received_ms: i64, outcome: Outcome, message_type: Option<&str>) {
        let minute = received_ms.div_euclid(MINUTE_MS);
        let slot = &mut self.slots[minute.rem_euclid(MINUTES as i64) as usize];
        match slot.minute {
            Some(held) if held == minute => {}
            Some(held) if held > minute => return,
            _ => {
                *slot = Slot {
                    minute: Some(minute),
                    ..Slot::default()
                };
            }
        }
        match outcome {
            Outcome::Accept => slot.accepted += 1,
            Outcome::Error => slot.error += 1,
            Outcome::Reject => slot.rejected += 1,
        }
        let Some(message_type) = message_type else {
            return;
        };
        if let Some((_, n)) = slot.by_type.iter_mut().find(|(t, _)| t == message_type) {
            *n += 1;
        } else if slot.by_type.len() < MAX_TYPES_PER_MINUTE {
            slot.by_type.push((message_type.to_owned(), 1));
        } else if let Some((_, n)) = slot.by_type.iter_mut().find(|(t, _)| t == OTHER_TYPES) {
            *n += 1;
        } else {
            slot.by_type.push((OTHER_TYPES.to_owned(), 1));
        }
    }

    /// The minutes of the 24 hours up to `now_ms` that saw messages, oldest first.
    pub fn recent(&self, now_ms: i64) -> Vec<MinuteCounts> {
        let now = now_ms.div_euclid(MINUTE_MS);
        let oldest = now - MINUTES as i64 + 1;
        let mut slots: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|slot| slot.minute.is_some_and(|m| m >= oldest && m <= now))
            .collect();
        slots.sort_by_key(|slot| slot.minute);
        slots
            .into_iter()
            .map(|slot| {
                let start = slot.minute.unwrap_or_default() * MINUTE_MS;
                MinuteCounts {
                    start: jiff::Timestamp::from_millisecond(start)
                        .map(utc_text)
                        .unwrap_or_default(),
                    accepted: slot.accepted,
                    error: slot.error,
                    rejected: slot.rejected,
                    by_type: slot
                        .by_type
                        .iter()
                        .map(|(t, n)| (t.clone(), *n))
                        .collect::<BTreeMap<_, _>>(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_590_400_000; // 2025-12-01T12:00:00Z

    #[test]
    fn counts_by_minute_outcome_and_type() {
        let mut minutes = Minutes::default();
        minutes.record(T0 + 1_000, Outcome::Accept, Some("ORU^R01"));
        minutes.record(T0 + 59_999, Outcome::Accept, Some("ORU^R01"));
        minutes.record(T0 + 30_000, Outcome::Reject, None);
        minutes.record(T0 + 60_000, Outcome::Error, None);
        minutes.record(T0 + 61_000, Outcome::Accept, Some("ADT^A01"));
        let recent = minutes.recent(T0 + 90_000);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].start, "2025-12-01T12:00:00.000Z");
        assert_eq!(
            (recent[0].accepted, recent[0].error, recent[0].rejected),
            (2, 0, 1)
        );
        assert_eq!(recent[0].by_type.get("ORU^R01"), Some(&2));
        assert_eq!((recent[1].accepted, recent[1].error), (1, 1));
        assert_eq!(recent[1].by_type.get("ADT^A01"), Some(&1));
    }

    #[test]
    fn only_the_last_24_hours_are_kept() {
        let mut minutes = Minutes::default();
        minutes.record(T0, Outcome::Accept, Some("ORU^R01"));
        let day = MINUTES as i64 * MINUTE_MS;
        assert_eq!(minutes.recent(T0 + day - 1).len(), 1);
        assert!(
            minutes.recent(T0 + day).is_empty(),
            "a day later it is gone"
        );
        // The same slot a day later starts again from zero, and a message from the old
        // minute that arrives late is not counted in it.
        minutes.record(T0 + day, Outcome::Accept, None);
        minutes.record(T0, Outcome::Accept, None);
        let recent = minutes.recent(T0 + day);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].accepted, 1);
        assert!(recent[0].by_type.is_empty());
    }

    #[test]
    fn types_past_the_limit_count_as_other() {
        let mut minutes = Minutes::default();
        for n in 0..MAX_TYPES_PER_MINUTE + 5 {
            minutes.record(T0, Outcome::Accept, Some(&format!("T{n}")));
        }
        let recent = minutes.recent(T0);
        assert_eq!(recent[0].by_type.len(), MAX_TYPES_PER_MINUTE + 1);
        assert_eq!(recent[0].by_type.get(OTHER_TYPES), Some(&5));
    }
}
