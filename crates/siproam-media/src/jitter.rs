//! A fixed-depth reordering jitter buffer.
//!
//! Packets are keyed by extended sequence number. The next expected packet
//! leaves at once; a packet behind a hole waits until the hole fills, until
//! more than `depth` packets wait, or until the oldest waiting packet has
//! waited `max_wait` — then the hole is given up as lost. A packet whose turn
//! has passed is late and dropped; a second copy of a packet is a duplicate
//! and dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One received RTP packet waiting its turn.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub arrived: Instant,
    pub payload_type: u8,
    pub timestamp: u32,
    pub payload: Bytes,
}

/// What became of an inserted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Held; `reordered` if a later packet had already arrived.
    Accepted { reordered: bool },
    /// Already held or already played.
    Duplicate,
    /// Its turn has passed.
    Late,
}

/// A packet leaving the buffer, and how many sequence numbers before it
/// were given up.
#[derive(Debug)]
pub(crate) struct Released {
    pub held: Held,
    pub missing: u64,
}

#[derive(Debug)]
pub(crate) struct JitterBuffer {
    depth: usize,
    max_wait: Duration,
    /// The next extended sequence number to release.
    next: Option<u64>,
    held: BTreeMap<u64, Held>,
    /// Bit i set: sequence number `next - 1 - i` was played (not given up).
    played: u64,
}

impl JitterBuffer {
    pub fn new(depth: usize, max_wait: Duration) -> Self {
        JitterBuffer {
            depth,
            max_wait,
            next: None,
            held: BTreeMap::new(),
            played: 0,
        }
    }

    /// Forgets everything (a new source, or a restarted sequence).
    pub fn reset(&mut self) {
        self.next = None;
        self.held.clear();
        self.played = 0;
    }

    pub fn insert(&mut self, ext_seq: u64, held: Held) -> Insert {
        if let Some(next) = self.next {
            if ext_seq < next {
                let age = next - 1 - ext_seq;
                let was_played = age < 64 && (self.played >> age) & 1 == 1;
                return if was_played {
                    Insert::Duplicate
                } else {
                    Insert::Late
                };
            }
        }
        if self.held.contains_key(&ext_seq) {
            return Insert::Duplicate;
        }
        let reordered = self
            .held
            .last_key_value()
            .is_some_and(|(last, _)| *last > ext_seq);
        self.held.insert(ext_seq, held);
        Insert::Accepted { reordered }
    }

    fn oldest_arrival(&self) -> Option<Instant> {
        self.held.values().map(|h| h.arrived).min()
    }

    /// The next packet allowed to leave at `now`, if any.
    pub fn pop(&mut self, now: Instant) -> Option<Released> {
        let (&head, _) = self.held.first_key_value()?;
        let in_turn = self.next.is_none_or(|next| head == next);
        let overflow = self.held.len() > self.depth;
        let waited = self
            .oldest_arrival()
            .is_some_and(|t| now >= t + self.max_wait);
        if !(in_turn || overflow || waited) {
            return None;
        }
        let (seq, held) = self.held.pop_first()?;
        let missing = self.next.map_or(0, |next| seq.saturating_sub(next));
        let shift = missing.saturating_add(1);
        self.played = if shift >= 64 { 0 } else { self.played << shift } | 1;
        self.next = Some(seq + 1);
        Some(Released { held, missing })
    }

    /// When a packet waiting behind a hole gives the hole up.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest_arrival().map(|t| t + self.max_wait)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn held(at: Instant, ts: u32) -> Held {
        Held {
            arrived: at,
            payload_type: 0,
            timestamp: ts,
            payload: Bytes::new(),
        }
    }

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        while let Some(r) = jb.pop(now) {
            out.push((r.held.timestamp, r.missing));
        }
        out
    }

    #[test]
    fn in_order_passes_straight_through() {
        let t = crate::test_instant();
        let mut jb = JitterBuffer::new(3, Duration::from_millis(60));
        for s in 0..5u64 {
            assert_eq!(
                jb.insert(s, held(t, s as u32)),
                Insert::Accepted { reordered: false }
            );
            assert_eq!(drain(&mut jb, t), [(s as u32, 0)]);
        }
    }

    #[test]
    fn reorders_within_depth() {
        let t = crate::test_instant();
        let mut jb = JitterBuffer::new(3, Duration::from_millis(60));
        jb.insert(10, held(t, 10));
        assert_eq!(drain(&mut jb, t), [(10, 0)]);
        jb.insert(12, held(t, 12));
        assert!(drain(&mut jb, t).is_empty());
        assert_eq!(
            jb.insert(11, held(t, 11)),
            Insert::Accepted { reordered: true }
        );
        assert_eq!(drain(&mut jb, t), [(11, 0), (12, 0)]);
        assert_eq!(jb.insert(11, held(t, 11)), Insert::Duplicate);
    }

    #[test]
    fn gives_up_a_hole_on_overflow_and_drops_the_late_packet() {
        let t = crate::test_instant();
        let mut jb = JitterBuffer::new(2, Duration::from_secs(10));
        jb.insert(0, held(t, 0));
        drain(&mut jb, t);
        for s in 2..=4u64 {
            jb.insert(s, held(t, s as u32));
        }
        assert_eq!(drain(&mut jb, t), [(2, 1), (3, 0), (4, 0)]);
        assert_eq!(jb.insert(1, held(t, 1)), Insert::Late);
        assert_eq!(jb.insert(0, held(t, 0)), Insert::Duplicate);
        assert_eq!(jb.insert(3, held(t, 3)), Insert::Duplicate);
    }

    #[test]
    fn gives_up_a_hole_after_max_wait() {
        let t = crate::test_instant();
        let mut jb = JitterBuffer::new(3, Duration::from_millis(60));
        jb.insert(0, held(t, 0));
        drain(&mut jb, t);
        jb.insert(2, held(t, 2));
        assert!(drain(&mut jb, t + Duration::from_millis(59)).is_empty());
        assert_eq!(jb.deadline(), Some(t + Duration::from_millis(60)));
        assert_eq!(drain(&mut jb, t + Duration::from_millis(60)), [(2, 1)]);
        assert_eq!(jb.len(), 0);
        assert_eq!(jb.deadline(), None);
    }
}
