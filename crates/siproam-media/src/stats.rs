//! Statistics: what was sent, what arrived, what was lost (RFC 3550 A.1,
//! A.3), interarrival jitter (A.8) and the longest silence between packets.

use std::time::{Duration, Instant};

use crate::g711::SAMPLE_RATE;
use crate::rtcp::ReportBlockInfo;

/// A snapshot of one session's counters ([`MediaSession::stats`]).
///
/// [`MediaSession::stats`]: crate::MediaSession::stats
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MediaStats {
    /// RTP packets sent (audio and telephone-events).
    pub packets_sent: u64,
    /// RTP packets sent again to a new destination when the peer moved
    /// (not counted in `packets_sent`).
    pub packets_resent: u64,
    /// RTP datagram bytes sent, headers included.
    pub bytes_sent: u64,
    /// RTP payload octets sent (the sender report's octet count).
    pub payload_bytes_sent: u64,
    /// RTP packets received and accepted (duplicates and ignored packets
    /// are not counted; late ones are).
    pub packets_received: u64,
    /// RTP datagram bytes of the packets counted in `packets_received`.
    pub bytes_received: u64,
    /// Packets the sequence numbers say should have arrived (RFC 3550 A.3),
    /// summed over every source the peer used.
    pub packets_expected: u64,
    /// Packets lost: expected minus received (RFC 3550 A.3).
    pub packets_lost: i64,
    /// Packets that arrived after their turn to play: dropped.
    pub packets_late: u64,
    /// Packets that arrived twice: the second copy dropped.
    pub packets_duplicate: u64,
    /// Packets that arrived after a later one and were put back in order.
    pub packets_reordered: u64,
    /// Sequence numbers the jitter buffer gave up waiting for (lost, or
    /// later too late), played as silence.
    pub packets_concealed: u64,
    /// Packets not used: received while the direction does not receive, of a
    /// payload type this session does not know, from another source than
    /// the peer's, or malformed.
    pub packets_ignored: u64,
    /// The longest time between two consecutive received RTP packets.
    pub longest_gap: Duration,
    /// Interarrival jitter (RFC 3550 A.8) of the current source.
    pub jitter: Duration,
    /// RTCP compound packets sent.
    pub rtcp_sent: u64,
    /// RTCP compound packets received and parsed.
    pub rtcp_received: u64,
    /// What the peer last reported about our stream.
    pub remote_report: Option<ReportBlockInfo>,
    /// Round-trip time from the peer's last report block (RFC 3550 §6.4.1).
    pub round_trip_time: Option<Duration>,
}

/// The RTP sequence-number modulus.
const SEQ_MOD: u32 = 1 << 16;
/// RFC 3550 A.1: a forward jump this large is a dropout, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a backward jump this small is misordering.
const MAX_MISORDER: u16 = 100;

/// What one packet did to the sequence state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqUpdate {
    /// A valid packet, with its extended sequence number.
    Valid(u64),
    /// The source restarted its sequence: state reset, and this is the
    /// packet's extended sequence number in the new numbering.
    Restarted(u64),
    /// A lone packet far from the others: not counted (RFC 3550 A.1).
    Invalid,
}

/// Per-source reception state (RFC 3550 A.1, A.3, A.8).
#[derive(Debug)]
pub(crate) struct ReceiveState {
    pub ssrc: u32,
    max_seq: u16,
    /// Sequence wraps, pre-shifted by 16.
    cycles: u64,
    base_seq: u64,
    bad_seq: u32,
    pub received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Relative transit time of the previous packet (RTP units, wrapping).
    transit: Option<u32>,
    /// Interarrival jitter in RTP units, scaled by 16 (RFC 3550 A.8's
    /// integer form).
    jitter_q4: u64,
}

impl ReceiveState {
    pub fn new(ssrc: u32, seq: u16) -> Self {
        let mut s = ReceiveState {
            ssrc,
            max_seq: seq,
            cycles: 0,
            base_seq: 0,
            bad_seq: SEQ_MOD + 1,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
        };
        s.init_seq(seq);
        s
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u64::from(seq);
        self.max_seq = seq;
        self.bad_seq = SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.transit = None;
        self.jitter_q4 = 0;
    }

    fn extended(&self, seq: u16) -> u64 {
        let ext_max = self.cycles | u64::from(self.max_seq);
        let diff = i64::from(seq.wrapping_sub(self.max_seq) as i16);
        ext_max.saturating_add_signed(diff)
    }

    /// RFC 3550 A.1 `update_seq`, without probation: the first packet of a
    /// source is trusted (the peer was chosen by signalling).
    pub fn update_seq(&mut self, seq: u16) -> SeqUpdate {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += u64::from(SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a big jump: the source restarted.
                self.init_seq(seq);
                self.received = 1;
                return SeqUpdate::Restarted(self.extended(seq));
            }
            self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
            return SeqUpdate::Invalid;
        }
        // else: duplicate or misordered, counted as received.
        self.received += 1;
        SeqUpdate::Valid(self.extended(seq))
    }

    /// Undoes the count of a packet found to be a duplicate.
    pub fn uncount(&mut self) {
        self.received = self.received.saturating_sub(1);
    }

    pub fn extended_max(&self) -> u64 {
        self.cycles | u64::from(self.max_seq)
    }

    pub fn expected(&self) -> u64 {
        (self.extended_max() + 1).saturating_sub(self.base_seq)
    }

    pub fn lost(&self) -> i64 {
        i64::try_from(self.expected()).unwrap_or(i64::MAX)
            - i64::try_from(self.received).unwrap_or(i64::MAX)
    }

    /// RFC 3550 A.3: the fraction lost since the last call, out of 256.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            u8::try_from((lost_interval << 8) / expected_interval).unwrap_or(u8::MAX)
        }
    }

    /// RFC 3550 A.8: updates the jitter with a packet sent at `rtp_ts` that
    /// arrived at `arrival` (in RTP units on the receiver's clock).
    pub fn update_jitter(&mut self, arrival: u32, rtp_ts: u32) {
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(previous) = self.transit {
            let d = u64::from((transit.wrapping_sub(previous) as i32).unsigned_abs());
            // J += (|D| - J) / 16, with J kept scaled by 16.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Jitter in RTP units.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    pub fn jitter_duration(&self) -> Duration {
        Duration::from_micros(u64::from(self.jitter()) * 1_000_000 / u64::from(SAMPLE_RATE))
    }
}

/// Arrival gaps between received packets.
#[derive(Debug, Default)]
pub(crate) struct GapTracker {
    last: Option<Instant>,
    pub longest: Duration,
}

impl GapTracker {
    pub fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.longest = self.longest.max(now.saturating_duration_since(last));
        }
        self.last = Some(now);
    }

    /// The next arrival starts afresh (after a hold nothing was expected).
    pub fn forget_last(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_from_gaps() {
        let mut s = ReceiveState::new(1, 100);
        for seq in [100u16, 101, 103, 104, 107] {
            assert!(matches!(s.update_seq(seq), SeqUpdate::Valid(_)));
        }
        assert_eq!(s.expected(), 8);
        assert_eq!(s.received, 5);
        assert_eq!(s.lost(), 3);
        assert_eq!(s.take_fraction_lost(), 96, "3/8 of 256");
        assert_eq!(s.take_fraction_lost(), 0);
    }

    #[test]
    fn wraps_and_reorders() {
        let mut s = ReceiveState::new(1, 65534);
        assert_eq!(s.update_seq(65534), SeqUpdate::Valid(65534));
        assert_eq!(s.update_seq(0), SeqUpdate::Valid(65536));
        assert_eq!(s.update_seq(65535), SeqUpdate::Valid(65535));
        assert_eq!(s.update_seq(1), SeqUpdate::Valid(65537));
        assert_eq!(s.lost(), 0);
        assert_eq!(s.extended_max(), 65537);
    }

    #[test]
    fn restart_after_two_sequential_far_packets() {
        let mut s = ReceiveState::new(1, 10);
        s.update_seq(10);
        assert_eq!(s.update_seq(40_000), SeqUpdate::Invalid);
        assert_eq!(s.update_seq(40_001), SeqUpdate::Restarted(40_001));
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn jitter_of_a_steady_stream_is_zero() {
        let mut s = ReceiveState::new(1, 0);
        for i in 0..50u32 {
            s.update_jitter(5 + i * 160, i * 160);
        }
        assert_eq!(s.jitter(), 0);
        // Alternating ±40 units of delay converges towards 80.
        for i in 50..400u32 {
            let delay = if i % 2 == 0 { 0 } else { 80 };
            s.update_jitter(i * 160 + delay, i * 160);
        }
        assert!((70..=80).contains(&s.jitter()), "{}", s.jitter());
    }
}
