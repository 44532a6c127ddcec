//! One timer wheel for all the calls of an engine thread.
//!
//! Time is cut into 1 ms ticks counted from the wheel's origin. A deadline
//! within the next [`SPAN`] ticks goes into the slot of its tick; a later one
//! waits in an ordered overflow set until the wheel comes near it. A
//! deadline is rounded up to its tick, so an entry never fires early, and at
//! most 1 ms late.
//!
//! Entries are never removed: an owner that moves its deadline inserts it
//! again and remembers the tick it holds now ([`TimerWheel::insert`] returns
//! it); when an entry fires for a tick its owner no longer holds, the owner
//! ignores it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The ticks the wheel's slots cover (a 20 ms frame interval fits well
/// within).
pub(crate) const SPAN: u64 = 64;
/// One tick.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Deadlines of many owners (`usize` keys) in 1 ms slots.
#[derive(Debug)]
pub(crate) struct TimerWheel {
    origin: Instant,
    /// Every tick before this one has fired.
    current: u64,
    /// `SPAN` slots: the entries (owner, tick) whose tick is in
    /// `current..current + SPAN`, at `tick % SPAN`.
    slots: Vec<Vec<(usize, u64)>>,
    /// Entries (tick, owner) at or beyond `current + SPAN`.
    overflow: BTreeSet<(u64, usize)>,
    /// How many entries the slots hold.
    len: usize,
}

impl TimerWheel {
    /// An empty wheel whose tick 0 is `origin`.
    pub(crate) fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            current: 0,
            slots: (0..SPAN).map(|_| Vec::new()).collect(),
            overflow: BTreeSet::new(),
            len: 0,
        }
    }

    /// The tick `at` falls in, rounded up.
    fn tick_at_or_after(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        let tick = nanos.div_ceil(TICK.as_nanos());
        u64::try_from(tick).unwrap_or(u64::MAX)
    }

    /// The tick `now` is in, rounded down.
    fn tick_of(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos / TICK.as_nanos()).unwrap_or(u64::MAX)
    }

    fn slot_mut(&mut self, tick: u64) -> Option<&mut Vec<(usize, u64)>> {
        let i = usize::try_from(tick % SPAN).unwrap_or(0);
        self.slots.get_mut(i)
    }

    /// The tick an entry for `at` inserted now would hold.
    pub(crate) fn tick_for(&self, at: Instant) -> u64 {
        self.tick_at_or_after(at).max(self.current)
    }

    /// Fires `owner` at `at` (at once, on the next [`expire`](Self::expire),
    /// when `at` has passed); returns the tick the entry holds.
    pub(crate) fn insert(&mut self, owner: usize, at: Instant) -> u64 {
        let tick = self.tick_for(at);
        if tick - self.current < SPAN {
            if let Some(slot) = self.slot_mut(tick) {
                slot.push((owner, tick));
                self.len += 1;
            }
        } else {
            self.overflow.insert((tick, owner));
        }
        tick
    }

    /// When the earliest entry fires, rounded up to a multiple of `grain`
    /// ticks (at least 1) from the origin, so that entries due close
    /// together are taken in one wake-up; `None` when there is none.
    pub(crate) fn next_wake(&self, grain: u64) -> Option<Instant> {
        let grain = grain.max(1);
        let tick = self.next_tick()?.div_ceil(grain).saturating_mul(grain);
        let millis = u32::try_from(tick).unwrap_or(u32::MAX);
        Some(self.origin + TICK.saturating_mul(millis))
    }

    /// When the earliest entry fires, `None` when there is none.
    #[cfg(test)]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.next_wake(1)
    }

    /// The earliest entry's tick.
    fn next_tick(&self) -> Option<u64> {
        let in_slots = (self.len > 0)
            .then(|| {
                (self.current..self.current + SPAN).find(|t| {
                    let i = usize::try_from(t % SPAN).unwrap_or(0);
                    self.slots.get(i).is_some_and(|s| !s.is_empty())
                })
            })
            .flatten();
        in_slots.or_else(|| self.overflow.first().map(|(t, _)| *t))
    }

    /// Takes every entry whose tick has come by `now` into `due` as
    /// (owner, tick), earliest tick first.
    pub(crate) fn expire(&mut self, now: Instant, due: &mut Vec<(usize, u64)>) {
        let now_tick = self.tick_of(now);
        if now_tick < self.current {
            return;
        }
        // one turn at most: every slot is visited once
        let last = now_tick.min(self.current + SPAN - 1);
        for tick in self.current..=last {
            if self.len == 0 {
                break;
            }
            let Some(slot) = self.slot_mut(tick) else {
                continue;
            };
            let before = slot.len();
            // entries of a later turn cannot be here: the slots only hold
            // ticks in current..current + SPAN
            due.append(slot);
            self.len -= before;
        }
        self.current = now_tick + 1;
        // the overflow's entries that came due, or near
        while let Some(&(tick, owner)) = self.overflow.first() {
            if tick >= self.current + SPAN {
                break;
            }
            self.overflow.pop_first();
            if tick <= now_tick {
                due.push((owner, tick));
            } else if let Some(slot) = self.slot_mut(tick) {
                slot.push((owner, tick));
                self.len += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Entries fire in tick order, never before their deadline, at most one
    /// tick after it; later ticks stay.
    #[test]
    fn entries_fire_at_their_tick_and_not_before() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(1, t0 + ms(20));
        w.insert(2, t0 + ms(5) + Duration::from_micros(300));
        w.insert(3, t0 + ms(40));
        assert_eq!(w.next_deadline(), Some(t0 + ms(6)), "rounded up");
        let mut due = Vec::new();
        w.expire(t0 + ms(5) + Duration::from_micros(900), &mut due);
        assert!(due.is_empty(), "not before its deadline");
        w.expire(t0 + ms(20), &mut due);
        assert_eq!(due, vec![(2, 6), (1, 20)]);
        due.clear();
        assert_eq!(w.next_deadline(), Some(t0 + ms(40)));
        w.expire(t0 + ms(39), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + ms(41), &mut due);
        assert_eq!(due, vec![(3, 40)]);
        assert_eq!(w.next_deadline(), None);
    }

    /// A deadline already past fires on the next expiry.
    #[test]
    fn a_past_deadline_fires_at_once() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut due = Vec::new();
        w.expire(t0 + ms(100), &mut due);
        let tick = w.insert(7, t0 + ms(50));
        assert_eq!(tick, 101, "the current tick");
        assert_eq!(w.next_deadline(), Some(t0 + ms(101)));
        w.expire(t0 + ms(100), &mut due);
        assert!(due.is_empty(), "tick 100 is over");
        w.expire(t0 + ms(101), &mut due);
        assert_eq!(due, vec![(7, 101)]);
    }

    /// Deadlines beyond the wheel's span wait in the overflow and fire on
    /// time, also after a long stall that skips more than a turn.
    #[test]
    fn far_deadlines_and_long_stalls() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(1, t0 + ms(1000));
        w.insert(2, t0 + ms(70));
        w.insert(3, t0 + ms(10));
        assert_eq!(w.next_deadline(), Some(t0 + ms(10)));
        let mut due = Vec::new();
        w.expire(t0 + ms(30), &mut due);
        assert_eq!(due, vec![(3, 10)]);
        due.clear();
        // 70 is within the span now: moved into the slots
        assert_eq!(w.next_deadline(), Some(t0 + ms(70)));
        w.expire(t0 + ms(69), &mut due);
        assert!(due.is_empty());
        // a stall of several turns
        w.expire(t0 + ms(5000), &mut due);
        due.sort_unstable();
        assert_eq!(due, vec![(1, 1000), (2, 70)]);
        assert_eq!(w.next_deadline(), None);
    }

    /// Wake-ups are rounded up to the grain: never before the deadline.
    #[test]
    fn wake_ups_round_up_to_the_grain() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(1, t0 + ms(21));
        assert_eq!(w.next_wake(1), Some(t0 + ms(21)));
        assert_eq!(w.next_wake(4), Some(t0 + ms(24)));
        assert_eq!(w.next_wake(0), Some(t0 + ms(21)));
        w.insert(2, t0 + ms(20));
        assert_eq!(w.next_wake(4), Some(t0 + ms(20)));
    }

    /// A 20 ms cadence kept by re-inserting at each firing: each firing
    /// comes exactly at its tick with a clock that steps 1 ms.
    #[test]
    fn a_periodic_owner_fires_every_twenty_ticks() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut next = t0 + ms(20);
        w.insert(0, next);
        let mut fired = Vec::new();
        let mut due = Vec::new();
        for step in 0..=200u64 {
            let now = t0 + ms(step);
            w.expire(now, &mut due);
            for (owner, tick) in due.drain(..) {
                assert_eq!(owner, 0);
                fired.push(tick);
                next += ms(20);
                w.insert(0, next);
            }
        }
        assert_eq!(fired, (1..=10).map(|i| i * 20).collect::<Vec<_>>());
    }
}
