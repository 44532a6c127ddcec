//! A fixed-depth reordering jitter buffer.
//!
//! Packets are keyed by extended sequence number. The next expected packet
//! leaves at once; a packet behind a hole waits until the hole fills, until
//! more than `depth` packets wait, or until the oldest waiting packet has
//! waited `max_wait` — then the hole is given up as lost. A packet whose turn
//! has passed is late and dropped; a second copy of a packet is a duplicate
//! and dropped.

//!
//! The packets wait in a ring of slots indexed by extended sequence number
//! modulo its capacity, their payload held in the slot (no allocation per
//! packet); the rare packet whose slot another one holds (a jump in
//! sequence numbers wider than the ring) waits beside it.

use std::time::{Duration, Instant};

/// The largest payload the buffer holds (60 ms of G.711); a longer one is
/// not held (the session counts it as ignored).
pub(crate) const MAX_HELD_PAYLOAD: usize = 480;

/// A payload kept inline.
#[derive(Clone)]
pub(crate) struct Payload {
    len: usize,
    bytes: [u8; MAX_HELD_PAYLOAD],
}

impl Payload {
    /// `bytes` copied, or `None` when longer than [`MAX_HELD_PAYLOAD`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut p = Payload {
            len: bytes.len(),
            bytes: [0; MAX_HELD_PAYLOAD],
        };
        p.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(p)
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len)
    }
}

/// One received RTP packet waiting its turn.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub arrived: Instant,
    pub payload_type: u8,
    pub timestamp: u32,
    pub payload: Payload,
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
    /// The ring: slot `seq % len` holds packet `seq`.
    ring: Vec<Option<(u64, Held)>>,
    /// Packets whose ring slot was taken by another (rare).
    beside: Vec<(u64, Held)>,
    /// Packets held, in the ring and beside it.
    count: usize,
    /// Bit i set: sequence number `next - 1 - i` was played (not given up).
    played: u64,
}

impl JitterBuffer {
    pub fn new(depth: usize, max_wait: Duration) -> Self {
        let capacity = depth.saturating_add(1).next_power_of_two().clamp(8, 1024);
        JitterBuffer {
            depth,
            max_wait,
            next: None,
            ring: (0..capacity).map(|_| None).collect(),
            beside: Vec::new(),
            count: 0,
            played: 0,
        }
    }

    /// Forgets everything (a new source, or a restarted sequence).
    pub fn reset(&mut self) {
        self.next = None;
        self.ring.iter_mut().for_each(|s| *s = None);
        self.beside.clear();
        self.count = 0;
        self.played = 0;
    }

    fn slot_index(&self, seq: u64) -> usize {
        // the ring's length is a power of two
        usize::try_from(seq).unwrap_or(usize::MAX) & (self.ring.len() - 1)
    }

    /// Every packet held: its sequence number and itself.
    fn all(&self) -> impl Iterator<Item = &(u64, Held)> {
        self.ring.iter().flatten().chain(self.beside.iter())
    }

    fn contains(&self, seq: u64) -> bool {
        let in_ring = self
            .ring
            .get(self.slot_index(seq))
            .is_some_and(|s| s.as_ref().is_some_and(|(k, _)| *k == seq));
        in_ring || self.beside.iter().any(|(k, _)| *k == seq)
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
        if self.contains(ext_seq) {
            return Insert::Duplicate;
        }
        let reordered = self.all().any(|(k, _)| *k > ext_seq);
        let i = self.slot_index(ext_seq);
        match self.ring.get_mut(i) {
            Some(slot @ None) => *slot = Some((ext_seq, held)),
            _ => self.beside.push((ext_seq, held)),
        }
        self.count += 1;
        Insert::Accepted { reordered }
    }

    fn oldest_arrival(&self) -> Option<Instant> {
        if self.count == 0 {
            return None;
        }
        self.all().map(|(_, h)| h.arrived).min()
    }

    /// The lowest sequence number held.
    fn head(&self) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        self.all().map(|(k, _)| *k).min()
    }

    /// Takes packet `seq` out.
    fn take(&mut self, seq: u64) -> Option<Held> {
        let i = self.slot_index(seq);
        let mask = self.ring.len() - 1;
        let taken = match self.ring.get_mut(i) {
            Some(slot) if slot.as_ref().is_some_and(|(k, _)| *k == seq) => {
                let held = slot.take().map(|(_, h)| h);
                // one waiting beside for this slot moves in
                if let Some(j) = self
                    .beside
                    .iter()
                    .position(|(k, _)| usize::try_from(*k).unwrap_or(usize::MAX) & mask == i)
                {
                    *slot = Some(self.beside.swap_remove(j));
                }
                held
            }
            _ => {
                let j = self.beside.iter().position(|(k, _)| *k == seq)?;
                Some(self.beside.swap_remove(j).1)
            }
        };
        if taken.is_some() {
            self.count -= 1;
        }
        taken
    }

    /// Whether packet `ext_seq` leaves at once without being held: nothing
    /// waits and it is the next one expected (or the first). It is then
    /// recorded as played, as [`pop`](Self::pop) would have.
    pub fn pass_through(&mut self, ext_seq: u64) -> bool {
        if self.count != 0 || self.next.is_some_and(|n| n != ext_seq) {
            return false;
        }
        self.played = (self.played << 1) | 1;
        self.next = Some(ext_seq + 1);
        true
    }

    /// The next packet allowed to leave at `now`, if any.
    pub fn pop(&mut self, now: Instant) -> Option<Released> {
        let head = self.head()?;
        let in_turn = self.next.is_none_or(|next| head == next);
        let overflow = self.count > self.depth;
        let waited = !in_turn
            && !overflow
            && self
                .oldest_arrival()
                .is_some_and(|t| now >= t + self.max_wait);
        if !(in_turn || overflow || waited) {
            return None;
        }
        let held = self.take(head)?;
        let missing = self.next.map_or(0, |next| head.saturating_sub(next));
        let shift = missing.saturating_add(1);
        self.played = if shift >= 64 { 0 } else { self.played << shift } | 1;
        self.next = Some(head + 1);
        Some(Released { held, missing })
    }

    /// When a packet waiting behind a hole gives the hole up.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest_arrival().map(|t| t + self.max_wait)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
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
            payload: Payload::new(&[]).unwrap(),
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

    /// Sequence numbers further apart than the ring is long share a slot:
    /// they still leave in order, each once.
    #[test]
    fn packets_sharing_a_slot_leave_in_order() {
        let t = crate::test_instant();
        let mut jb = JitterBuffer::new(3, Duration::from_millis(60));
        jb.insert(0, held(t, 0));
        assert_eq!(drain(&mut jb, t), [(0, 0)]);
        // 9, 17 and 1 all fall in slot 1 of the 8-slot ring
        assert_eq!(
            jb.insert(9, held(t, 9)),
            Insert::Accepted { reordered: false }
        );
        assert_eq!(
            jb.insert(17, held(t, 17)),
            Insert::Accepted { reordered: false }
        );
        assert_eq!(jb.insert(17, held(t, 17)), Insert::Duplicate);
        assert_eq!(
            jb.insert(1, held(t, 1)),
            Insert::Accepted { reordered: true }
        );
        assert_eq!(jb.len(), 3);
        assert_eq!(drain(&mut jb, t), [(1, 0)]);
        assert_eq!(jb.insert(9, held(t, 9)), Insert::Duplicate);
        assert_eq!(
            drain(&mut jb, t + Duration::from_millis(60)),
            [(9, 7), (17, 7)]
        );
        assert_eq!(jb.len(), 0);
        assert_eq!(jb.deadline(), None);
    }

    /// A payload longer than the buffer holds is refused, a shorter one
    /// kept exactly.
    #[test]
    fn payloads_are_kept_inline_up_to_the_limit() {
        assert!(Payload::new(&[1; MAX_HELD_PAYLOAD + 1]).is_none());
        let p = Payload::new(&[7; 160]).unwrap();
        assert_eq!(&*p, &[7u8; 160][..]);
    }

    /// A packet passed through unheld counts as played: a second copy is a
    /// duplicate, the next one passes too, one after a hole is held.
    #[test]
    fn pass_through_is_the_in_turn_path_without_holding() {
        let t = crate::test_instant();
        let mut jb = JitterBuffer::new(3, Duration::from_millis(60));
        assert!(jb.pass_through(5), "the first packet");
        assert_eq!(jb.insert(5, held(t, 5)), Insert::Duplicate);
        assert!(jb.pass_through(6));
        assert!(!jb.pass_through(8), "behind a hole");
        jb.insert(8, held(t, 8));
        assert!(!jb.pass_through(7), "a packet is held");
        jb.insert(7, held(t, 7));
        assert_eq!(drain(&mut jb, t), [(7, 0), (8, 0)]);
        assert!(jb.pass_through(9));
    }
}
