//! RFC 4733 telephone-events (DTMF digits carried in RTP).

use std::collections::VecDeque;

use crate::g711::FRAME_SAMPLES;

/// One DTMF key: the sixteen events 0–15 of RFC 4733 §3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfDigit {
    /// `0`
    D0,
    /// `1`
    D1,
    /// `2`
    D2,
    /// `3`
    D3,
    /// `4`
    D4,
    /// `5`
    D5,
    /// `6`
    D6,
    /// `7`
    D7,
    /// `8`
    D8,
    /// `9`
    D9,
    /// `*` (event 10)
    Star,
    /// `#` (event 11)
    Pound,
    /// `A` (event 12)
    A,
    /// `B` (event 13)
    B,
    /// `C` (event 14)
    C,
    /// `D` (event 15)
    D,
}

const DIGITS: [DtmfDigit; 16] = [
    DtmfDigit::D0,
    DtmfDigit::D1,
    DtmfDigit::D2,
    DtmfDigit::D3,
    DtmfDigit::D4,
    DtmfDigit::D5,
    DtmfDigit::D6,
    DtmfDigit::D7,
    DtmfDigit::D8,
    DtmfDigit::D9,
    DtmfDigit::Star,
    DtmfDigit::Pound,
    DtmfDigit::A,
    DtmfDigit::B,
    DtmfDigit::C,
    DtmfDigit::D,
];

const CHARS: &[u8; 16] = b"0123456789*#ABCD";

impl DtmfDigit {
    /// The RFC 4733 event code (0–15).
    pub fn event_code(self) -> u8 {
        self as u8
    }

    /// The digit an RFC 4733 event code names (0–15), if any.
    pub fn from_event_code(code: u8) -> Option<DtmfDigit> {
        DIGITS.get(usize::from(code)).copied()
    }

    /// The key for `0`–`9`, `*`, `#`, `A`–`D` (lower case accepted).
    pub fn from_char(c: char) -> Option<DtmfDigit> {
        let upper = c.to_ascii_uppercase();
        CHARS
            .iter()
            .position(|b| char::from(*b) == upper)
            .and_then(|i| DIGITS.get(i).copied())
    }

    /// The key as a character.
    pub fn as_char(self) -> char {
        CHARS
            .get(usize::from(self.event_code()))
            .map_or('?', |b| char::from(*b))
    }
}

/// The 4-byte RFC 4733 §2.3 payload of a telephone-event packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code (0–15 for DTMF).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in timestamp units (8 kHz samples).
    pub duration: u16,
}

impl TelephoneEvent {
    /// The payload's size on the wire.
    pub const LEN: usize = 4;

    /// The payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        let flags = (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F);
        [self.event, flags, d0, d1]
    }

    /// Parses the first four bytes of a payload.
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        match payload {
            [event, flags, d0, d1, ..] => Some(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => None,
        }
    }
}

/// The default power level of sent digits, −10 dBm0.
pub(crate) const DEFAULT_VOLUME: u8 = 10;
/// How many times the final (E-bit) packet of an event is sent (RFC 4733 §2.5.1.4).
const END_REPEATS: u32 = 3;
/// The longest event one packet series can describe: a 16-bit duration in 8 kHz
/// samples, rounded down to whole frames (409 × 20 ms = 8.18 s).
pub(crate) const MAX_EVENT_FRAMES: u32 = u16::MAX as u32 / FRAME_SAMPLES as u32;

/// One event packet to send: its payload, the RTP timestamp of the event's
/// start, and whether it carries the marker bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventPacket {
    pub payload: TelephoneEvent,
    pub timestamp: u32,
    pub marker: bool,
}

#[derive(Debug)]
struct ActiveEvent {
    digit: DtmfDigit,
    /// RTP timestamp of the frame slot the event started in.
    timestamp: u32,
    /// Length of the event in frames (≥ 1).
    frames: u32,
    /// Packets sent so far.
    sent: u32,
}

/// Paces queued digits out, one packet per 20 ms frame slot, in place of audio.
#[derive(Debug, Default)]
pub(crate) struct DtmfSender {
    queue: VecDeque<(DtmfDigit, u32)>,
    active: Option<ActiveEvent>,
}

impl DtmfSender {
    /// Queues a digit lasting `frames` frame slots (clamped to 1..=409).
    pub fn push(&mut self, digit: DtmfDigit, frames: u32) {
        self.queue
            .push_back((digit, frames.clamp(1, MAX_EVENT_FRAMES)));
    }

    /// Whether a digit is being sent or waits to be.
    pub fn is_busy(&self) -> bool {
        self.active.is_some() || !self.queue.is_empty()
    }

    /// Forgets the queued and current digits.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.active = None;
    }

    /// The packet for the frame slot whose RTP timestamp is `slot_ts`, or
    /// `None` when no digit is due (audio goes out in that slot).
    pub fn next_packet(&mut self, slot_ts: u32) -> Option<EventPacket> {
        if self.active.is_none() {
            let (digit, frames) = self.queue.pop_front()?;
            self.active = Some(ActiveEvent {
                digit,
                timestamp: slot_ts,
                frames,
                sent: 0,
            });
        }
        let active = self.active.as_mut()?;
        active.sent += 1;
        let k = active.sent;
        let end = k >= active.frames;
        let duration_frames = k.min(active.frames);
        let duration = u16::try_from(duration_frames * FRAME_SAMPLES as u32).unwrap_or(u16::MAX);
        let packet = EventPacket {
            payload: TelephoneEvent {
                event: active.digit.event_code(),
                end,
                volume: DEFAULT_VOLUME,
                duration,
            },
            timestamp: active.timestamp,
            marker: k == 1,
        };
        if k >= active.frames + END_REPEATS - 1 {
            self.active = None;
        }
        Some(packet)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn digits_and_chars() {
        for (i, c) in "0123456789*#ABCD".chars().enumerate() {
            let d = DtmfDigit::from_char(c).unwrap();
            assert_eq!(usize::from(d.event_code()), i);
            assert_eq!(d.as_char(), c);
            assert_eq!(DtmfDigit::from_event_code(i as u8), Some(d));
        }
        assert_eq!(DtmfDigit::from_char('b'), Some(DtmfDigit::B));
        assert_eq!(DtmfDigit::from_char('x'), None);
        assert_eq!(DtmfDigit::from_event_code(16), None);
    }

    #[test]
    fn payload_round_trip() {
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1600,
        };
        assert_eq!(ev.to_bytes(), [11, 0x8A, 0x06, 0x40]);
        assert_eq!(TelephoneEvent::parse(&ev.to_bytes()), Some(ev));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn sender_paces_an_event_and_repeats_the_end() {
        let mut s = DtmfSender::default();
        s.push(DtmfDigit::D5, 3);
        let mut ts = 1000u32;
        let mut packets = Vec::new();
        while let Some(p) = s.next_packet(ts) {
            packets.push(p);
            ts += 160;
        }
        assert_eq!(packets.len(), 5);
        assert!(packets[0].marker);
        assert!(packets[1..].iter().all(|p| !p.marker));
        assert!(packets.iter().all(|p| p.timestamp == 1000));
        let durations: Vec<u16> = packets.iter().map(|p| p.payload.duration).collect();
        assert_eq!(durations, [160, 320, 480, 480, 480]);
        let ends: Vec<bool> = packets.iter().map(|p| p.payload.end).collect();
        assert_eq!(ends, [false, false, true, true, true]);
        assert!(!s.is_busy());
    }
}
