//! The sans-IO RTP/RTCP media session.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtp_types::RtpPacket;

use crate::dtmf::{DtmfDigit, DtmfSender, TelephoneEvent, MAX_EVENT_FRAMES};
use crate::g711::{Codec, Frame, FRAME_SAMPLES, SAMPLE_RATE};
use crate::jitter::{Held, Insert, JitterBuffer, Payload, Released, MAX_HELD_PAYLOAD};
use crate::rng::SplitMix64;
use crate::rtcp::{self, OutgoingBlock, RtcpReport, SenderInfo};
use crate::stats::{GapTracker, MediaStats, ReceiveState, SeqUpdate};

/// The packetisation time: one packet per 20 ms frame.
pub const PTIME: Duration = Duration::from_millis(20);

/// How far (in frames) the driver may fall behind the send clock before the
/// session treats the missing frames as skipped time rather than lateness.
const SEND_SLACK_FRAMES: u64 = 5;
/// The longest hole (in samples, 1 s) filled with silence on playout; a
/// longer jump in timestamps is a discontinuity, not a hole.
const MAX_FILL_SAMPLES: u32 = SAMPLE_RATE;
/// Decoded chunks kept for [`MediaSession::poll_audio`] before the oldest is
/// dropped (250 × 20 ms = 5 s).
const MAX_AUDIO_CHUNKS: usize = 250;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// The media direction of RFC 3264 §6.1, used for hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MediaDirection {
    /// Send and receive.
    #[default]
    SendRecv,
    /// Send only: received media is ignored (we put the peer on hold).
    SendOnly,
    /// Receive only: nothing is sent (the peer put us on hold).
    RecvOnly,
    /// Neither: nothing is sent and received media is ignored.
    Inactive,
}

impl MediaDirection {
    /// Whether RTP goes out.
    pub fn sends(self) -> bool {
        matches!(self, MediaDirection::SendRecv | MediaDirection::SendOnly)
    }

    /// Whether received RTP is played.
    pub fn receives(self) -> bool {
        matches!(self, MediaDirection::SendRecv | MediaDirection::RecvOnly)
    }

    /// The SDP attribute name (`sendrecv`, `sendonly`, `recvonly`, `inactive`).
    pub fn as_sdp(self) -> &'static str {
        match self {
            MediaDirection::SendRecv => "sendrecv",
            MediaDirection::SendOnly => "sendonly",
            MediaDirection::RecvOnly => "recvonly",
            MediaDirection::Inactive => "inactive",
        }
    }

    /// The direction an SDP attribute name stands for.
    pub fn from_sdp(attribute: &str) -> Option<MediaDirection> {
        match attribute {
            "sendrecv" => Some(MediaDirection::SendRecv),
            "sendonly" => Some(MediaDirection::SendOnly),
            "recvonly" => Some(MediaDirection::RecvOnly),
            "inactive" => Some(MediaDirection::Inactive),
            _ => None,
        }
    }
}

/// Where the peer's RTP and RTCP go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    rtp: SocketAddr,
    rtcp: SocketAddr,
    muxed: bool,
}

fn next_port(addr: SocketAddr) -> SocketAddr {
    let mut rtcp = addr;
    rtcp.set_port(addr.port().checked_add(1).unwrap_or(addr.port()));
    rtcp
}

impl Destination {
    /// RTP to `rtp`, RTCP to the next port up (RFC 3550 §11).
    pub fn new(rtp: SocketAddr) -> Self {
        Destination {
            rtp,
            rtcp: next_port(rtp),
            muxed: false,
        }
    }

    /// RTP and RTCP both to `rtp` (RFC 5761 `a=rtcp-mux`).
    pub fn muxed(rtp: SocketAddr) -> Self {
        Destination {
            rtp,
            rtcp: rtp,
            muxed: true,
        }
    }

    /// RTP and RTCP to separate given addresses (RFC 3605 `a=rtcp`).
    pub fn with_rtcp(rtp: SocketAddr, rtcp: SocketAddr) -> Self {
        Destination {
            rtp,
            rtcp,
            muxed: rtp == rtcp,
        }
    }

    /// Where RTP goes.
    pub fn rtp(&self) -> SocketAddr {
        self.rtp
    }

    /// Where RTCP goes.
    pub fn rtcp(&self) -> SocketAddr {
        self.rtcp
    }

    /// Whether RTCP shares the RTP address.
    pub fn is_muxed(&self) -> bool {
        self.muxed
    }

    /// The destination after the peer's RTP moved to `rtp`: RTCP follows
    /// (same address when muxed, else the next port up).
    fn moved_to(self, rtp: SocketAddr) -> Self {
        if self.muxed {
            Destination::muxed(rtp)
        } else {
            Destination::new(rtp)
        }
    }
}

/// How a session is set up. Start from [`MediaConfig::new`] and change fields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MediaConfig {
    /// Seeds the SSRC and the initial sequence number and timestamp.
    pub seed: u64,
    /// The codec sent. Both PCMU and PCMA are always received.
    pub codec: Codec,
    /// The dynamic payload type of `telephone-event/8000` (RFC 4733), or
    /// `None` when the peer did not offer it. Default 101.
    pub telephone_event: Option<u8>,
    /// The initial direction. Default send and receive.
    pub direction: MediaDirection,
    /// Whether to follow the peer's source address (symmetric RTP). Default on.
    pub symmetric_rtp: bool,
    /// Consecutive packets from a new source address before the destination
    /// moves there. Default 3; at least 1.
    pub latch_after: u32,
    /// Packets the jitter buffer holds while waiting for a missing one; the
    /// wait is also bounded to `jitter_depth` × 20 ms. Default 3.
    pub jitter_depth: usize,
    /// Time between RTCP reports (the first goes out after half of it).
    /// Default 5 s.
    pub rtcp_interval: Duration,
    /// The RTCP CNAME. Default `siproam-<ssrc in hex>`.
    pub cname: Option<String>,
    /// Whether received audio is decoded for [`MediaSession::poll_audio`].
    /// Off, nothing is decoded (received DTMF is still reported): for a
    /// driver with nowhere to play it. Default on.
    pub playout: bool,
    /// The wall clock at the `now` given to [`MediaSession::new`], for the
    /// NTP timestamps of sender reports. Without it they count from the
    /// session's start (RFC 3550 §6.4.1 allows that).
    pub wallclock: Option<SystemTime>,
}

impl MediaConfig {
    /// The defaults, with this seed.
    pub fn new(seed: u64) -> Self {
        MediaConfig {
            seed,
            codec: Codec::Pcmu,
            telephone_event: Some(101),
            direction: MediaDirection::SendRecv,
            symmetric_rtp: true,
            latch_after: 3,
            jitter_depth: 3,
            rtcp_interval: Duration::from_secs(5),
            cname: None,
            playout: true,
            wallclock: None,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig::new(0)
    }
}

/// Why a configuration or a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// telephone-event needs a dynamic payload type (96–127).
    #[error("telephone-event payload type {0} is not dynamic (96-127)")]
    TelephoneEventPayloadType(u8),
    /// `latch_after` was 0.
    #[error("latch_after must be at least 1")]
    LatchAfterZero,
    /// `rtcp_interval` was zero.
    #[error("the RTCP interval must be longer than zero")]
    RtcpIntervalZero,
    /// A digit was to be sent but the peer takes no telephone-events.
    #[error("no telephone-event payload type is configured")]
    NoTelephoneEvent,
    /// The character is not a DTMF key.
    #[error("{0:?} is not a DTMF key")]
    NotADtmfKey(char),
    /// The direction does not send.
    #[error("the media direction {} does not send", .0.as_sdp())]
    NotSending(MediaDirection),
    /// The session was closed.
    #[error("the media session is closed")]
    Closed,
}

/// Why a received datagram was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Not an RTP version 2 packet, or truncated.
    #[error("malformed RTP packet")]
    MalformedRtp,
    /// Not a valid compound RTCP packet.
    #[error("malformed RTCP packet")]
    MalformedRtcp,
}

/// A datagram for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTransmit {
    /// The datagram.
    pub payload: Bytes,
    /// Where it goes.
    pub destination: SocketAddr,
    /// Whether it is RTCP: send it from the RTCP socket (the RTP socket when
    /// muxed).
    pub rtcp: bool,
    /// Whether it is the last RTP packet sent again to a new destination
    /// (counted in `packets_resent`, not `packets_sent`).
    pub resent: bool,
}

/// Where a datagram from [`MediaSession::poll_transmit_into`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmitInfo {
    /// Where it goes.
    pub destination: SocketAddr,
    /// Whether it is RTCP: send it from the RTCP socket (the RTP socket when
    /// muxed).
    pub rtcp: bool,
    /// Whether it is the last RTP packet sent again to a new destination
    /// (counted in `packets_resent`, not `packets_sent`).
    pub resent: bool,
}

/// Something the application may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// Symmetric RTP moved the destination to where the peer sends from.
    Latched {
        /// The destination before (`None` if there was none).
        previous: Option<SocketAddr>,
        /// The destination now.
        current: SocketAddr,
        /// Whether the RTCP destination moved (else the RTP one, RTCP
        /// following it).
        rtcp: bool,
    },
    /// The peer's stream began, or its SSRC changed.
    RemoteSsrc {
        /// The peer's SSRC.
        ssrc: u32,
    },
    /// A DTMF key arrived (reported on its end packet, once).
    Dtmf {
        /// The key.
        digit: DtmfDigit,
        /// How long it was held.
        duration: Duration,
    },
    /// An RTCP sender or receiver report arrived.
    Report(RtcpReport),
    /// The peer sent an RTCP BYE.
    RemoteBye {
        /// The source that left.
        ssrc: u32,
    },
}

/// The last sender report received, for the LSR/DLSR of our reports.
#[derive(Debug, Clone, Copy)]
struct LastSr {
    ssrc: u32,
    middle: u32,
    at: Instant,
}

/// Sequence numbers and timestamps of sent packets.
#[derive(Debug)]
struct SendClock {
    /// The next sequence number.
    seq: u16,
    /// The RTP timestamp of frame slot 0.
    ts_base: u32,
    /// When slot 0 was sent (`None` before the first packet).
    epoch: Option<Instant>,
    /// The next frame slot.
    next_slot: u64,
    /// When the last RTP packet went out.
    last_sent: Option<Instant>,
}

impl SendClock {
    /// Takes the frame slot for a packet sent at `now`: its RTP timestamp,
    /// and whether it begins a talkspurt (first packet, or after a pause).
    fn take_slot(&mut self, now: Instant) -> (u32, bool) {
        let mut fresh = false;
        match self.epoch {
            None => {
                self.epoch = Some(now);
                self.next_slot = 0;
                fresh = true;
            }
            Some(epoch) => {
                let elapsed = now.saturating_duration_since(epoch);
                let due = u64::try_from(elapsed.as_nanos() / PTIME.as_nanos()).unwrap_or(u64::MAX);
                if due > self.next_slot.saturating_add(SEND_SLACK_FRAMES) {
                    self.next_slot = due;
                    fresh = true;
                }
            }
        }
        let ts = self.slot_timestamp(self.next_slot);
        self.next_slot += 1;
        self.last_sent = Some(now);
        (ts, fresh)
    }

    fn slot_timestamp(&self, slot: u64) -> u32 {
        let samples = slot.wrapping_mul(FRAME_SAMPLES as u64);
        self.ts_base.wrapping_add(samples as u32)
    }

    /// The RTP timestamp of the sampling instant `now`.
    fn timestamp_at(&self, now: Instant) -> u32 {
        match self.epoch {
            None => self.ts_base,
            Some(epoch) => {
                let samples = rtp_units(now.saturating_duration_since(epoch));
                self.ts_base.wrapping_add(samples as u32)
            }
        }
    }

    fn next_send_at(&self, fallback: Instant) -> Instant {
        match self.epoch {
            None => fallback,
            Some(epoch) => {
                let slot = u32::try_from(self.next_slot).unwrap_or(u32::MAX);
                epoch + PTIME.saturating_mul(slot)
            }
        }
    }
}

/// A duration in 8 kHz RTP units.
fn rtp_units(d: Duration) -> u64 {
    u64::try_from(d.as_nanos() * u128::from(SAMPLE_RATE) / 1_000_000_000).unwrap_or(u64::MAX)
}

/// A duration as 64-bit NTP (32.32 fixed point); seconds wrap per NTP era.
fn ntp_from_duration(d: Duration) -> u64 {
    let secs = d.as_secs() & 0xFFFF_FFFF;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A duration in 1/65536 s (the DLSR unit), saturating.
fn units_65536(d: Duration) -> u32 {
    u32::try_from(d.as_nanos() * 65_536 / 1_000_000_000).unwrap_or(u32::MAX)
}

/// An RTP packet's fields the session needs, copied out of the datagram.
struct RtpFields {
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload_start: usize,
    payload_end: usize,
}

fn parse_rtp(bytes: &[u8]) -> Option<RtpFields> {
    let packet = RtpPacket::parse(bytes).ok()?;
    let payload_start = packet.payload_offset();
    Some(RtpFields {
        payload_type: packet.payload_type(),
        seq: packet.sequence_number(),
        timestamp: packet.timestamp(),
        ssrc: packet.ssrc(),
        payload_start,
        payload_end: payload_start + packet.payload_len(),
    })
}

/// Whether a datagram on the RTP port is RTCP (RFC 5761 §4: the second byte
/// is an RTCP packet type, 192–223).
pub fn looks_like_rtcp(bytes: &[u8]) -> bool {
    matches!(bytes, [first, second, ..] if first >> 6 == 2 && (192..=223).contains(second))
}

/// One RTP/RTCP audio session with one peer.
///
/// Inputs: [`handle_rtp`](Self::handle_rtp), [`handle_rtcp`](Self::handle_rtcp),
/// [`handle_timeout`](Self::handle_timeout), [`send_frame`](Self::send_frame)
/// and the commands. After each, drain [`poll_transmit`](Self::poll_transmit),
/// [`poll_event`](Self::poll_event) and [`poll_audio`](Self::poll_audio); then
/// sleep until the earlier of [`poll_timeout`](Self::poll_timeout) and
/// [`next_send_at`](Self::next_send_at).
#[derive(Debug)]
pub struct MediaSession {
    ssrc: u32,
    cname: String,
    codec: Codec,
    telephone_event: Option<u8>,
    symmetric_rtp: bool,
    latch_after: u32,
    rtcp_interval: Duration,
    wallclock: Option<SystemTime>,
    playout: bool,
    created: Instant,
    direction: MediaDirection,
    destination: Option<Destination>,
    closed: bool,

    send: SendClock,
    dtmf: DtmfSender,

    recv: Option<ReceiveState>,
    jitter: JitterBuffer,
    gaps: GapTracker,
    play_ts: Option<u32>,
    last_event_end: Option<u32>,
    /// Expected and received counts of the peer's earlier sources.
    prior_expected: u64,
    prior_received: u64,

    /// The next packet of the current stream restarts the sequence state
    /// (set when receiving resumes after hold).
    resync: bool,

    latch_candidate: Option<(SocketAddr, u32)>,

    next_rtcp: Instant,
    last_sr: Option<LastSr>,

    /// The last RTP packet sent, resent to a new destination at once.
    last_rtp: Option<Vec<u8>>,

    stats: MediaStats,
    /// Datagrams to send: where each goes, and its bytes in `tx_bytes`.
    transmits: VecDeque<(TransmitInfo, std::ops::Range<usize>)>,
    /// The bytes of the datagrams in `transmits` (emptied, not freed, when
    /// they are all taken).
    tx_bytes: Vec<u8>,
    events: VecDeque<MediaEvent>,
    audio: VecDeque<Vec<i16>>,
    /// Emptied audio buffers, reused.
    spare_audio: Vec<Vec<i16>>,
}

impl MediaSession {
    /// A session created at `now`, sending nowhere until
    /// [`set_destination`](Self::set_destination) (or symmetric RTP) gives it
    /// a destination.
    pub fn new(config: MediaConfig, now: Instant) -> Result<Self, MediaError> {
        if let Some(pt) = config.telephone_event {
            if !(96..=127).contains(&pt) {
                return Err(MediaError::TelephoneEventPayloadType(pt));
            }
        }
        if config.latch_after == 0 {
            return Err(MediaError::LatchAfterZero);
        }
        if config.rtcp_interval.is_zero() {
            return Err(MediaError::RtcpIntervalZero);
        }
        let mut rng = SplitMix64::new(config.seed);
        let ssrc = rng.next_u32();
        let seq = rng.next_u32() as u16;
        let ts_base = rng.next_u32();
        let cname = config
            .cname
            .clone()
            .unwrap_or_else(|| format!("siproam-{ssrc:08x}"));
        let max_wait = PTIME.saturating_mul(u32::try_from(config.jitter_depth).unwrap_or(u32::MAX));
        Ok(MediaSession {
            ssrc,
            cname,
            codec: config.codec,
            telephone_event: config.telephone_event,
            symmetric_rtp: config.symmetric_rtp,
            latch_after: config.latch_after,
            rtcp_interval: config.rtcp_interval,
            wallclock: config.wallclock,
            playout: config.playout,
            created: now,
            direction: config.direction,
            destination: None,
            closed: false,
            send: SendClock {
                seq,
                ts_base,
                epoch: None,
                next_slot: 0,
                last_sent: None,
            },
            dtmf: DtmfSender::default(),
            recv: None,
            jitter: JitterBuffer::new(config.jitter_depth, max_wait),
            gaps: GapTracker::default(),
            play_ts: None,
            last_event_end: None,
            prior_expected: 0,
            prior_received: 0,
            resync: false,
            latch_candidate: None,
            next_rtcp: now + config.rtcp_interval / 2,
            last_sr: None,
            stats: MediaStats::default(),
            last_rtp: None,
            transmits: VecDeque::new(),
            tx_bytes: Vec::new(),
            events: VecDeque::new(),
            audio: VecDeque::new(),
            spare_audio: Vec::new(),
        })
    }

    // ----- accessors -------------------------------------------------

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number the next RTP packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.send.seq
    }

    /// The peer's SSRC, once its media arrived.
    pub fn remote_ssrc(&self) -> Option<u32> {
        self.recv.as_ref().map(|r| r.ssrc)
    }

    /// Where media goes now.
    pub fn destination(&self) -> Option<Destination> {
        self.destination
    }

    /// The current direction.
    pub fn direction(&self) -> MediaDirection {
        self.direction
    }

    /// The codec sent.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Our RTCP CNAME.
    pub fn cname(&self) -> &str {
        &self.cname
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MediaStats {
        let mut stats = self.stats.clone();
        let (expected, received) = self
            .recv
            .as_ref()
            .map_or((0, 0), |r| (r.expected(), r.received));
        stats.packets_expected = self.prior_expected + expected;
        stats.packets_lost = i64::try_from(stats.packets_expected).unwrap_or(i64::MAX)
            - i64::try_from(self.prior_received + received).unwrap_or(i64::MAX);
        stats.jitter = self
            .recv
            .as_ref()
            .map_or(Duration::ZERO, ReceiveState::jitter_duration);
        stats.longest_gap = self.gaps.longest;
        stats
    }

    // ----- commands ----------------------------------------------------

    /// Sends to `destination` from now on. SSRC, sequence numbers and
    /// timestamps go on unchanged: a new address (ours, after a network
    /// change, or the peer's, from a re-INVITE) is not a new stream.
    ///
    /// When the RTP address really changes (the peer moved), the last packet
    /// sent goes to the new address at once, before the next 20 ms frame:
    /// the new path carries media without waiting a packet interval, and
    /// the frame that went to the old, perhaps dead, address is delivered
    /// after all (a peer that had it drops it as a duplicate).
    pub fn set_destination(&mut self, destination: Destination) {
        let moved = self.destination.is_some_and(|d| d.rtp != destination.rtp);
        self.destination = Some(destination);
        self.latch_candidate = None;
        if moved && !self.closed && self.direction.sends() {
            if let Some(packet) = self.last_rtp.take() {
                self.stats.packets_resent += 1;
                self.queue_transmit(
                    &packet,
                    TransmitInfo {
                        destination: destination.rtp,
                        rtcp: false,
                        resent: true,
                    },
                );
                self.last_rtp = Some(packet);
            }
        }
    }

    /// Changes the direction (hold and resume). Stopping sending drops any
    /// digits not yet sent; stopping receiving drops media waiting to play.
    pub fn set_direction(&mut self, direction: MediaDirection) {
        if !direction.sends() {
            self.dtmf.clear();
        }
        if !direction.receives() {
            self.jitter.reset();
            self.play_ts = None;
        } else if !self.direction.receives() {
            // Packets ignored on hold are neither lost nor a gap: count
            // afresh from the first packet after the resume.
            self.resync = true;
            self.gaps.forget_last();
        }
        self.direction = direction;
    }

    /// Queues a DTMF key as RFC 4733 telephone-events. It goes out in place
    /// of audio in the next [`send_frame`](Self::send_frame) slots: one
    /// packet per 20 ms for `duration` (rounded up to 20 ms, at most 8.18 s),
    /// the last repeated three times.
    pub fn send_dtmf(&mut self, digit: DtmfDigit, duration: Duration) -> Result<(), MediaError> {
        if self.closed {
            return Err(MediaError::Closed);
        }
        if self.telephone_event.is_none() {
            return Err(MediaError::NoTelephoneEvent);
        }
        if !self.direction.sends() {
            return Err(MediaError::NotSending(self.direction));
        }
        let frames = duration.as_nanos().div_ceil(PTIME.as_nanos());
        let frames = u32::try_from(frames)
            .unwrap_or(MAX_EVENT_FRAMES)
            .clamp(1, MAX_EVENT_FRAMES);
        self.dtmf.push(digit, frames);
        Ok(())
    }

    /// Queues keys given as characters (`0`–`9`, `*`, `#`, `A`–`D`), each
    /// lasting `duration`. Nothing is queued if one is not a key.
    pub fn send_dtmf_str(&mut self, keys: &str, duration: Duration) -> Result<(), MediaError> {
        let digits = keys
            .chars()
            .map(|c| DtmfDigit::from_char(c).ok_or(MediaError::NotADtmfKey(c)))
            .collect::<Result<Vec<_>, _>>()?;
        for digit in digits {
            self.send_dtmf(digit, duration)?;
        }
        Ok(())
    }

    /// Whether digits are being sent or wait to be.
    pub fn dtmf_pending(&self) -> bool {
        self.dtmf.is_busy()
    }

    /// Ends the session: an RTCP report with BYE goes out, and nothing after.
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.send_report(now, true);
        self.closed = true;
        self.dtmf.clear();
    }

    // ----- inputs --------------------------------------------------------

    /// Sends one 20 ms frame of audio taken at `now` (or, while a digit is
    /// being sent, the digit's next packet instead). Returns whether a packet
    /// was queued: nothing goes out while the direction does not send, with
    /// no destination, or after [`close`](Self::close).
    ///
    /// Call it every 20 ms ([`next_send_at`](Self::next_send_at) says when).
    /// Timestamps advance 160 per packet; when the calls fall more than
    /// 100 ms behind (after hold, or a stalled driver) the timestamp jumps to
    /// the real time and the packet carries the marker bit, while the
    /// sequence number still goes up by one.
    pub fn send_frame(&mut self, now: Instant, frame: &Frame) -> bool {
        if self.closed || !self.direction.sends() {
            return false;
        }
        let Some(destination) = self.destination else {
            return false;
        };
        let (slot_ts, fresh) = self.send.take_slot(now);
        let event_pt = self.telephone_event;
        // the packet is written straight into the transmit queue's bytes
        let start = self.tx_bytes.len();
        self.tx_bytes.extend_from_slice(&[0; 12]);
        let (pt, ts, marker) = match (event_pt, self.dtmf.next_packet(slot_ts)) {
            (Some(pt), Some(event)) => {
                self.tx_bytes.extend_from_slice(&event.payload.to_bytes());
                (pt, event.timestamp, event.marker)
            }
            _ => {
                self.codec.encode(frame, &mut self.tx_bytes);
                (self.codec.payload_type(), slot_ts, fresh)
            }
        };
        let seq = self.send.seq;
        // RFC 3550 §5.1: version 2, no padding, extension or CSRCs
        let (q, t, c) = (seq.to_be_bytes(), ts.to_be_bytes(), self.ssrc.to_be_bytes());
        let header = [
            0x80,
            (pt & 0x7F) | (u8::from(marker) << 7),
            q[0],
            q[1],
            t[0],
            t[1],
            t[2],
            t[3],
            c[0],
            c[1],
            c[2],
            c[3],
        ];
        let end = self.tx_bytes.len();
        let Some(packet) = self.tx_bytes.get_mut(start..end) else {
            return false;
        };
        if let Some(h) = packet.get_mut(..12) {
            h.copy_from_slice(&header);
        }
        let payload_len = packet.len() - 12;
        self.send.seq = seq.wrapping_add(1);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += packet.len() as u64;
        self.stats.payload_bytes_sent += payload_len as u64;
        let last = self.last_rtp.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(packet);
        self.transmits.push_back((
            TransmitInfo {
                destination: destination.rtp,
                rtcp: false,
                resent: false,
            },
            start..end,
        ));
        true
    }

    /// A datagram arrived on the RTP socket from `source`. RTCP multiplexed
    /// on the RTP port (RFC 5761) is recognised and handled as RTCP.
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        source: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), PacketError> {
        if looks_like_rtcp(bytes) {
            return self.handle_rtcp(now, source, bytes);
        }
        if self.closed {
            return Ok(());
        }
        let Some(fields) = parse_rtp(bytes) else {
            self.stats.packets_ignored += 1;
            return Err(PacketError::MalformedRtp);
        };
        self.latch(source);
        if !self.direction.receives() {
            self.stats.packets_ignored += 1;
            return Ok(());
        }
        let is_event = Some(fields.payload_type) == self.telephone_event;
        if !is_event && Codec::from_payload_type(fields.payload_type).is_none() {
            self.stats.packets_ignored += 1;
            return Ok(());
        }
        if !self.accept_source(source, fields.ssrc, fields.seq) {
            self.stats.packets_ignored += 1;
            return Ok(());
        }
        let Some(recv) = self.recv.as_mut() else {
            return Ok(());
        };
        let ext_seq = match recv.update_seq(fields.seq) {
            SeqUpdate::Valid(ext) => ext,
            SeqUpdate::Restarted(ext) => {
                self.jitter.reset();
                self.play_ts = None;
                ext
            }
            SeqUpdate::Invalid => {
                self.stats.packets_ignored += 1;
                return Ok(());
            }
        };
        let Some(payload) = bytes
            .get(fields.payload_start..fields.payload_end)
            .filter(|p| p.len() <= MAX_HELD_PAYLOAD)
        else {
            // longer than the buffer holds (more than 60 ms of G.711)
            recv.uncount();
            self.stats.packets_ignored += 1;
            return Ok(());
        };
        if self.jitter.pass_through(ext_seq) {
            // the next one expected, nothing waiting: played at once,
            // never copied into the buffer
            if !is_event {
                let arrival = rtp_units(now.saturating_duration_since(self.created));
                recv.update_jitter(arrival as u32, fields.timestamp);
            }
            self.stats.packets_received += 1;
            self.stats.bytes_received += bytes.len() as u64;
            self.gaps.arrived(now);
            self.play(0, fields.payload_type, fields.timestamp, payload);
            return Ok(());
        }
        let Some(payload) = Payload::new(payload) else {
            return Ok(());
        };
        let held = Held {
            arrived: now,
            payload_type: fields.payload_type,
            timestamp: fields.timestamp,
            payload,
        };
        match self.jitter.insert(ext_seq, held) {
            Insert::Duplicate => {
                recv.uncount();
                self.stats.packets_duplicate += 1;
                return Ok(());
            }
            Insert::Late => self.stats.packets_late += 1,
            Insert::Accepted { reordered } => {
                if reordered {
                    self.stats.packets_reordered += 1;
                }
            }
        }
        if !is_event {
            let arrival = rtp_units(now.saturating_duration_since(self.created));
            recv.update_jitter(arrival as u32, fields.timestamp);
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        self.gaps.arrived(now);
        self.release(now);
        Ok(())
    }

    /// A datagram arrived on the RTCP socket from `source`.
    pub fn handle_rtcp(
        &mut self,
        now: Instant,
        source: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), PacketError> {
        if self.closed {
            return Ok(());
        }
        let parsed = rtcp::parse(bytes).ok_or(PacketError::MalformedRtcp)?;
        self.stats.rtcp_received += 1;
        let remote = self.remote_ssrc();
        for report in parsed.reports {
            if report.ssrc == self.ssrc {
                // Our own report looped back, or an SSRC collision: not the peer.
                continue;
            }
            if let Some(sender) = report.sender {
                if remote.is_none_or(|r| r == report.ssrc) {
                    self.last_sr = Some(LastSr {
                        ssrc: report.ssrc,
                        middle: (sender.ntp_timestamp >> 16) as u32,
                        at: now,
                    });
                }
            }
            if let Some(block) = report.blocks.iter().find(|b| b.ssrc == self.ssrc) {
                self.stats.remote_report = Some(*block);
                if block.last_sr != 0 {
                    let arrival = (self.ntp_at(now) >> 16) as u32;
                    let rtt = arrival
                        .wrapping_sub(block.last_sr)
                        .wrapping_sub(block.delay_since_last_sr);
                    if rtt < 0x8000_0000 {
                        let nanos = u64::from(rtt) * 1_000_000_000 / 65_536;
                        self.stats.round_trip_time = Some(Duration::from_nanos(nanos));
                    }
                }
            }
            if Some(report.ssrc) == remote {
                self.latch_rtcp(source);
            }
            self.events.push_back(MediaEvent::Report(report));
        }
        for ssrc in parsed.byes {
            if ssrc != self.ssrc {
                self.events.push_back(MediaEvent::RemoteBye { ssrc });
            }
        }
        Ok(())
    }

    /// Time passed: sends a due RTCP report and plays out packets that
    /// waited too long behind a missing one.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if now >= self.next_rtcp {
            self.send_report(now, false);
            let next = self.next_rtcp + self.rtcp_interval;
            self.next_rtcp = if next > now {
                next
            } else {
                now + self.rtcp_interval
            };
        }
        self.release(now);
    }

    /// The driver could not send `transmit`, taken from
    /// [`poll_transmit`](Self::poll_transmit) (its socket's address is gone,
    /// no route): the counters take it back, so they say what reached the
    /// wire. A transmit the driver sends later after all (on a new socket)
    /// is simply not reported here.
    pub fn handle_send_failed(&mut self, transmit: &MediaTransmit) {
        let stats = &mut self.stats;
        if transmit.rtcp {
            stats.rtcp_sent = stats.rtcp_sent.saturating_sub(1);
        } else if transmit.resent {
            stats.packets_resent = stats.packets_resent.saturating_sub(1);
        } else {
            let payload = parse_rtp(&transmit.payload)
                .map_or(0, |f| f.payload_end.saturating_sub(f.payload_start));
            stats.packets_sent = stats.packets_sent.saturating_sub(1);
            stats.bytes_sent = stats
                .bytes_sent
                .saturating_sub(transmit.payload.len() as u64);
            stats.payload_bytes_sent = stats.payload_bytes_sent.saturating_sub(payload as u64);
        }
    }

    // ----- outputs -------------------------------------------------------

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<MediaTransmit> {
        let mut packet = Vec::new();
        let info = self.poll_transmit_into(&mut packet)?;
        Some(MediaTransmit {
            payload: Bytes::from(packet),
            destination: info.destination,
            rtcp: info.rtcp,
            resent: info.resent,
        })
    }

    /// The next datagram to send, written into `packet` (emptied first;
    /// it keeps its capacity, so a driver reusing one buffer allocates
    /// nothing per packet). Returns where it goes, `None` (and `packet`
    /// empty) when there is nothing to send.
    pub fn poll_transmit_into(&mut self, packet: &mut Vec<u8>) -> Option<TransmitInfo> {
        packet.clear();
        let (info, range) = self.transmits.pop_front()?;
        packet.extend_from_slice(self.tx_bytes.get(range).unwrap_or_default());
        if self.transmits.is_empty() {
            self.tx_bytes.clear();
        }
        Some(info)
    }

    /// Queues a datagram.
    fn queue_transmit(&mut self, packet: &[u8], info: TransmitInfo) {
        let start = self.tx_bytes.len();
        self.tx_bytes.extend_from_slice(packet);
        self.transmits.push_back((info, start..self.tx_bytes.len()));
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// The next received audio, decoded, in play order; holes left by lost
    /// packets (up to 1 s) come back as silence. At most 5 s wait here: the
    /// oldest is dropped when the driver does not drain.
    pub fn poll_audio(&mut self) -> Option<Vec<i16>> {
        self.audio.pop_front()
    }

    /// As [`poll_audio`](Self::poll_audio), into `samples` (emptied first):
    /// the buffers are exchanged, so a driver reusing one allocates nothing
    /// per packet. Returns whether there was audio.
    pub fn poll_audio_into(&mut self, samples: &mut Vec<i16>) -> bool {
        let Some(mut chunk) = self.audio.pop_front() else {
            samples.clear();
            return false;
        };
        std::mem::swap(samples, &mut chunk);
        chunk.clear();
        if self.spare_audio.len() < 4 {
            self.spare_audio.push(chunk);
        }
        true
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (RTCP, or a
    /// jitter-buffer wait), or `None` after [`close`](Self::close).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let jitter = self.jitter.deadline();
        Some(jitter.map_or(self.next_rtcp, |j| j.min(self.next_rtcp)))
    }

    /// When [`send_frame`](Self::send_frame) is next due, or `None` while
    /// nothing can be sent (direction, no destination, closed). Before the
    /// first frame it is the session's creation time: due at once.
    pub fn next_send_at(&self) -> Option<Instant> {
        if self.closed || !self.direction.sends() || self.destination.is_none() {
            return None;
        }
        Some(self.send.next_send_at(self.created))
    }

    // ----- internals -----------------------------------------------------

    /// Symmetric RTP: counts consecutive packets from a source that is not
    /// the destination, and moves there after `latch_after` of them.
    fn latch(&mut self, source: SocketAddr) {
        if !self.symmetric_rtp {
            return;
        }
        let current = self.destination.map(|d| d.rtp);
        if current == Some(source) {
            self.latch_candidate = None;
            return;
        }
        let count = match self.latch_candidate {
            Some((addr, n)) if addr == source => n.saturating_add(1),
            _ => 1,
        };
        if count < self.latch_after {
            self.latch_candidate = Some((source, count));
            return;
        }
        self.latch_candidate = None;
        self.destination = Some(match self.destination {
            Some(d) => d.moved_to(source),
            None => Destination::new(source),
        });
        self.events.push_back(MediaEvent::Latched {
            previous: current,
            current: source,
            rtcp: false,
        });
    }

    /// Symmetric RTCP: the peer's reports from its RTP host but another port
    /// than we send RTCP to (a NAT mapped it elsewhere) move the RTCP
    /// destination at once.
    fn latch_rtcp(&mut self, source: SocketAddr) {
        if !self.symmetric_rtp {
            return;
        }
        let Some(dest) = self.destination else {
            return;
        };
        if dest.muxed || dest.rtcp == source || dest.rtp.ip() != source.ip() {
            return;
        }
        self.destination = Some(Destination::with_rtcp(dest.rtp, source));
        self.events.push_back(MediaEvent::Latched {
            previous: Some(dest.rtcp),
            current: source,
            rtcp: true,
        });
    }

    /// Whether a packet of `ssrc` from `source` belongs to the peer's stream,
    /// switching to a new stream when the destination itself sends one.
    fn accept_source(&mut self, source: SocketAddr, ssrc: u32, seq: u16) -> bool {
        let from_destination = self.destination.map(|d| d.rtp) == Some(source);
        match &self.recv {
            Some(r) if r.ssrc == ssrc && !self.resync => return true,
            Some(r) if r.ssrc == ssrc => {
                self.prior_expected += r.expected();
                self.prior_received += r.received;
                self.recv = Some(ReceiveState::new(ssrc, seq));
                self.jitter.reset();
                self.play_ts = None;
                self.resync = false;
                return true;
            }
            // Another stream from elsewhere: a stray, not the peer.
            Some(_) if !from_destination => return false,
            Some(r) => {
                // The peer started a new stream from where we send to.
                self.prior_expected += r.expected();
                self.prior_received += r.received;
            }
            None => {}
        }
        self.start_stream(ssrc, seq);
        true
    }

    fn start_stream(&mut self, ssrc: u32, seq: u16) {
        self.recv = Some(ReceiveState::new(ssrc, seq));
        self.resync = false;
        self.jitter.reset();
        self.play_ts = None;
        self.last_event_end = None;
        self.events.push_back(MediaEvent::RemoteSsrc { ssrc });
    }

    /// Plays every packet the jitter buffer lets go at `now`.
    fn release(&mut self, now: Instant) {
        while let Some(Released { held, missing }) = self.jitter.pop(now) {
            self.play(missing, held.payload_type, held.timestamp, &held.payload);
        }
    }

    /// Plays a packet's payload, `missing` packets after the one before.
    fn play(&mut self, missing: u64, payload_type: u8, timestamp: u32, payload: &[u8]) {
        self.stats.packets_concealed += missing;
        if Some(payload_type) == self.telephone_event {
            let Some(event) = TelephoneEvent::parse(payload) else {
                return;
            };
            if event.end && self.last_event_end != Some(timestamp) {
                self.last_event_end = Some(timestamp);
                if let Some(digit) = DtmfDigit::from_event_code(event.event) {
                    let micros = u64::from(event.duration) * 1_000_000 / u64::from(SAMPLE_RATE);
                    self.events.push_back(MediaEvent::Dtmf {
                        digit,
                        duration: Duration::from_micros(micros),
                    });
                }
            }
            return;
        }
        if !self.playout {
            return;
        }
        let Some(codec) = Codec::from_payload_type(payload_type) else {
            return;
        };
        let mut out = self
            .spare_audio
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(payload.len()));
        out.clear();
        if let Some(expected) = self.play_ts {
            let hole = timestamp.wrapping_sub(expected);
            if hole > 0 && hole <= MAX_FILL_SAMPLES {
                out.resize(hole as usize, 0);
            }
        }
        codec.decode(payload, &mut out);
        self.play_ts =
            Some(timestamp.wrapping_add(u32::try_from(payload.len()).unwrap_or(u32::MAX)));
        if self.audio.len() >= MAX_AUDIO_CHUNKS {
            self.audio.pop_front();
        }
        self.audio.push_back(out);
    }

    /// The 64-bit NTP wallclock at `now`.
    fn ntp_at(&self, now: Instant) -> u64 {
        let since_start = now.saturating_duration_since(self.created);
        let base = self.wallclock.map_or(Duration::ZERO, |w| {
            w.duration_since(UNIX_EPOCH).unwrap_or_default()
                + Duration::from_secs(NTP_UNIX_OFFSET_SECS)
        });
        ntp_from_duration(base + since_start)
    }

    /// Queues a compound report (SR when we sent RTP in the last two
    /// intervals, else RR; with SDES CNAME; with BYE if `bye`).
    fn send_report(&mut self, now: Instant, bye: bool) {
        let Some(destination) = self.destination else {
            return;
        };
        let recent = self.rtcp_interval.saturating_mul(2);
        let is_sender = self
            .send
            .last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < recent);
        let sender = is_sender.then(|| SenderInfo {
            ntp_timestamp: self.ntp_at(now),
            rtp_timestamp: self.send.timestamp_at(now),
            packet_count: self.stats.packets_sent as u32,
            octet_count: self.stats.payload_bytes_sent as u32,
        });
        let last_sr = self.last_sr;
        let block = self.recv.as_mut().map(|r| {
            let (lsr, dlsr) = match last_sr {
                Some(sr) if sr.ssrc == r.ssrc => {
                    (sr.middle, units_65536(now.saturating_duration_since(sr.at)))
                }
                _ => (0, 0),
            };
            OutgoingBlock {
                ssrc: r.ssrc,
                fraction_lost: r.take_fraction_lost(),
                cumulative_lost: r.lost(),
                extended_highest_sequence: r.extended_max() as u32,
                jitter: r.jitter(),
                last_sr: lsr,
                delay_since_last_sr: dlsr,
            }
        });
        let Some(packet) = rtcp::build(self.ssrc, sender, block, &self.cname, bye) else {
            return;
        };
        self.stats.rtcp_sent += 1;
        self.queue_transmit(
            &packet,
            TransmitInfo {
                destination: destination.rtcp,
                rtcp: true,
                resent: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_conversion() {
        assert_eq!(
            ntp_from_duration(Duration::from_millis(1500)),
            (1 << 32) | (1 << 31)
        );
        assert_eq!(units_65536(Duration::from_millis(500)), 32_768);
        assert_eq!(rtp_units(Duration::from_millis(20)), 160);
    }

    #[test]
    fn rtcp_is_told_from_rtp() {
        assert!(looks_like_rtcp(&[0x80, 200]));
        assert!(looks_like_rtcp(&[0x81, 201]));
        assert!(!looks_like_rtcp(&[0x80, 0]));
        assert!(!looks_like_rtcp(&[0x80, 0x80 | 101]));
        assert!(!looks_like_rtcp(&[0x80]));
    }

    #[test]
    fn destinations() {
        let a: SocketAddr = "192.0.2.1:4000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(Destination::new(a).rtcp().port(), 4001);
        assert_eq!(Destination::muxed(a).rtcp(), a);
        assert!(Destination::with_rtcp(a, a).is_muxed());
        let b: SocketAddr = "192.0.2.2:5000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(Destination::new(a).moved_to(b), Destination::new(b));
        assert_eq!(Destination::muxed(a).moved_to(b), Destination::muxed(b));
        assert_eq!(
            MediaDirection::from_sdp("sendonly"),
            Some(MediaDirection::SendOnly)
        );
        assert_eq!(MediaDirection::Inactive.as_sdp(), "inactive");
    }
}
