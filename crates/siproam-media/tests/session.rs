//! Two media sessions talking through a virtual network: audio fidelity,
//! loss, reordering, symmetric RTP, continuity across address changes, RTCP,
//! hold and DTMF. Time is virtual: nothing here waits or measures real time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtp_types::RtpPacket;
use siproam_media::{
    AudioSource, Codec, Destination, DtmfDigit, MediaConfig, MediaDirection, MediaError,
    MediaEvent, MediaSession, MediaTransmit, ToneSource, FRAME_SAMPLES, PTIME,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Any instant will do as the base of the virtual clock.
fn t0() -> Instant {
    Instant::now()
}

fn session(seed: u64, codec: Codec, now: Instant) -> MediaSession {
    let mut config = MediaConfig::new(seed);
    config.codec = codec;
    MediaSession::new(config, now).unwrap()
}

fn transmits(s: &mut MediaSession) -> Vec<MediaTransmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn rtp_only(s: &mut MediaSession) -> Vec<MediaTransmit> {
    transmits(s).into_iter().filter(|t| !t.rtcp).collect()
}

fn events(s: &mut MediaSession) -> Vec<MediaEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn audio(s: &mut MediaSession) -> Vec<i16> {
    std::iter::from_fn(|| s.poll_audio()).flatten().collect()
}

struct Header {
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
}

fn header(bytes: &[u8]) -> Header {
    let p = RtpPacket::parse(bytes).unwrap();
    Header {
        pt: p.payload_type(),
        seq: p.sequence_number(),
        ts: p.timestamp(),
        ssrc: p.ssrc(),
        marker: p.marker_bit(),
    }
}

/// Power of `samples` at `freq` (Goertzel).
fn goertzel(samples: &[i16], freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s = f64::from(*x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn db(a: f64, b: f64) -> f64 {
    10.0 * (a / b).log10()
}

/// Sends `frames` frames of a 1 kHz tone from A to B, packets going straight
/// over (10 ms one way), and returns what B played.
fn tone_through(codec: Codec, frames: u32) -> (Vec<i16>, MediaSession, MediaSession) {
    let start = t0();
    let (a_addr, b_addr) = (addr("192.0.2.1:4000"), addr("192.0.2.2:5000"));
    let mut a = session(1, codec, start);
    let mut b = session(2, codec, start);
    a.set_destination(Destination::new(b_addr));
    b.set_destination(Destination::new(a_addr));
    let mut tone = ToneSource::new(1000.0, 8000);
    let mut played = Vec::new();
    for i in 0..frames {
        let now = start + PTIME * i;
        assert!(a.send_frame(now, &tone.next_frame()));
        for t in rtp_only(&mut a) {
            assert_eq!(t.destination, b_addr);
            b.handle_rtp(now + ms(10), a_addr, &t.payload).unwrap();
        }
        played.extend(audio(&mut b));
    }
    (played, a, b)
}

fn assert_is_1khz(samples: &[i16]) {
    let p1000 = goertzel(samples, 1000.0);
    let p500 = goertzel(samples, 500.0);
    let p1500 = goertzel(samples, 1500.0);
    let p2000 = goertzel(samples, 2000.0);
    eprintln!(
        "1 kHz over 500 Hz: {:.1} dB, over 1500 Hz: {:.1} dB, over 2 kHz: {:.1} dB",
        db(p1000, p500),
        db(p1000, p1500),
        db(p1000, p2000)
    );
    // 1 kHz is periodic in 8 samples, so the quantisation error is too: it
    // can only land on the harmonics. The first one stays far below.
    assert!(
        db(p1000, p2000) > 20.0,
        "1 kHz vs 2 kHz: {} dB",
        db(p1000, p2000)
    );
    assert!(
        db(p1000, p500) > 20.0,
        "1 kHz vs 500 Hz: {} dB",
        db(p1000, p500)
    );
    assert!(
        db(p1000, p1500) > 20.0,
        "1 kHz vs 1500 Hz: {} dB",
        db(p1000, p1500)
    );
    // The tone is strong in absolute terms too: at least half its energy
    // survives (a 8000-peak sine has power (A·N/2)² in its own bin).
    let n = samples.len() as f64;
    let ideal = (8000.0 * n / 2.0).powi(2);
    assert!(p1000 > ideal / 2.0, "{p1000} vs ideal {ideal}");
}

#[test]
fn pcmu_tone_survives_two_sessions() {
    let (played, a, b) = tone_through(Codec::Pcmu, 100);
    assert_eq!(played.len(), 100 * FRAME_SAMPLES);
    assert_is_1khz(&played);
    assert_eq!(a.stats().packets_sent, 100);
    assert_eq!(a.stats().payload_bytes_sent, 100 * 160);
    assert_eq!(a.stats().bytes_sent, 100 * (12 + 160));
    let s = b.stats();
    assert_eq!(s.packets_received, 100);
    assert_eq!(s.bytes_received, 100 * 172);
    assert_eq!(s.packets_lost, 0);
    assert_eq!(s.longest_gap, ms(20));
    assert_eq!(s.jitter, Duration::ZERO);
}

#[test]
fn pcma_tone_survives_two_sessions() {
    let (played, _a, b) = tone_through(Codec::Pcma, 100);
    assert_eq!(played.len(), 100 * FRAME_SAMPLES);
    assert_is_1khz(&played);
    assert_eq!(b.stats().packets_lost, 0);
}

#[test]
fn codecs_carry_their_payload_type() {
    let start = t0();
    for (codec, pt) in [(Codec::Pcmu, 0), (Codec::Pcma, 8)] {
        let mut a = session(1, codec, start);
        a.set_destination(Destination::new(addr("192.0.2.2:5000")));
        a.send_frame(start, &[0; FRAME_SAMPLES]);
        let t = rtp_only(&mut a);
        let h = header(&t[0].payload);
        assert_eq!(h.pt, pt);
        assert!(h.marker, "the first packet starts a talkspurt");
    }
}

#[test]
fn the_seed_fixes_ssrc_sequence_and_timestamp() {
    let start = t0();
    let first = |seed| {
        let mut a = session(seed, Codec::Pcmu, start);
        a.set_destination(Destination::new(addr("192.0.2.2:5000")));
        a.send_frame(start, &[0; FRAME_SAMPLES]);
        let h = header(&rtp_only(&mut a)[0].payload);
        (h.ssrc, h.seq, h.ts)
    };
    assert_eq!(first(7), first(7));
    assert_ne!(first(7), first(8));
}

/// Sends 200 frames A→B, dropping the packets whose index `drop` names.
fn send_with_loss(drop: &[u32]) -> (MediaSession, Vec<i16>) {
    let start = t0();
    let (a_addr, b_addr) = (addr("192.0.2.1:4000"), addr("192.0.2.2:5000"));
    let mut a = session(3, Codec::Pcmu, start);
    let mut b = session(4, Codec::Pcmu, start);
    a.set_destination(Destination::new(b_addr));
    b.set_destination(Destination::new(a_addr));
    let mut tone = ToneSource::new(440.0, 5000);
    let mut played = Vec::new();
    for i in 0..200u32 {
        let now = start + PTIME * i;
        a.send_frame(now, &tone.next_frame());
        for t in rtp_only(&mut a) {
            if !drop.contains(&i) {
                b.handle_rtp(now, a_addr, &t.payload).unwrap();
            }
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now);
        }
        played.extend(audio(&mut b));
    }
    // Let anything held behind a hole play out.
    b.handle_timeout(start + PTIME * 200 + ms(100));
    played.extend(audio(&mut b));
    (b, played)
}

#[test]
fn loss_is_counted_from_sequence_gaps() {
    let (b, played) = send_with_loss(&[10, 11, 50, 199]);
    let s = b.stats();
    // The last packet's loss is invisible: nothing after it tells.
    assert_eq!(s.packets_expected, 199);
    assert_eq!(s.packets_received, 196);
    assert_eq!(s.packets_lost, 3);
    assert_eq!(s.packets_concealed, 3);
    assert_eq!(s.packets_late, 0);
    assert_eq!(s.longest_gap, ms(60), "packets 9 → 12");
    // Holes are filled with silence: the played audio keeps its length.
    assert_eq!(played.len(), 199 * FRAME_SAMPLES);
    assert!(played[10 * 160..12 * 160].iter().all(|x| *x == 0));
    assert!(played[12 * 160..13 * 160].iter().any(|x| *x != 0));
}

#[test]
fn no_loss_no_count() {
    let (b, played) = send_with_loss(&[]);
    assert_eq!(b.stats().packets_lost, 0);
    assert_eq!(b.stats().longest_gap, ms(20));
    assert_eq!(played.len(), 200 * FRAME_SAMPLES);
}

#[test]
fn the_jitter_buffer_reorders_and_drops_late_and_duplicate_packets() {
    let start = t0();
    let (a_addr, b_addr) = (addr("192.0.2.1:4000"), addr("192.0.2.2:5000"));
    let mut a = session(5, Codec::Pcma, start);
    let mut b = session(6, Codec::Pcma, start);
    a.set_destination(Destination::new(b_addr));
    let mut tone = ToneSource::new(700.0, 9000);
    let mut sent_frames = Vec::new();
    let mut packets = Vec::new();
    for i in 0..40u32 {
        let frame = tone.next_frame();
        sent_frames.push(frame);
        a.send_frame(start + PTIME * i, &frame);
        packets.extend(rtp_only(&mut a).into_iter().map(|t| t.payload));
    }
    // Arrival order: 5 and 6 swapped, 20 arrives after 21 and 22, 8 twice,
    // 30 far too late (after 35).
    let mut order: Vec<usize> = (0..40).collect();
    order.swap(5, 6);
    order.retain(|i| *i != 20 && *i != 30);
    let at22 = order.iter().position(|i| *i == 22).unwrap();
    order.insert(at22 + 1, 20);
    let at8 = order.iter().position(|i| *i == 8).unwrap();
    order.insert(at8 + 1, 8);
    let at35 = order.iter().position(|i| *i == 35).unwrap();
    order.insert(at35 + 1, 30);

    let mut played = Vec::new();
    for (k, i) in order.iter().enumerate() {
        let now = start + PTIME * k as u32;
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now);
        }
        b.handle_rtp(now, a_addr, &packets[*i]).unwrap();
        played.extend(audio(&mut b));
    }
    b.handle_timeout(start + Duration::from_secs(2));
    played.extend(audio(&mut b));

    let s = b.stats();
    assert_eq!(s.packets_reordered, 2, "6 before 5, 21/22 before 20");
    assert_eq!(s.packets_duplicate, 1);
    assert_eq!(s.packets_late, 1, "30");
    assert_eq!(s.packets_concealed, 1, "30 gave way to silence");
    assert_eq!(s.packets_received, 40);
    assert_eq!(s.packets_lost, 0, "late is not lost");

    // What played is what was sent, in order, bar 30's silence.
    let mut expected = Vec::new();
    for (i, frame) in sent_frames.iter().enumerate() {
        if i == 30 {
            expected.extend([0i16; FRAME_SAMPLES]);
        } else {
            expected.extend(
                frame
                    .iter()
                    .map(|x| Codec::Pcma.decode_sample(Codec::Pcma.encode_sample(*x))),
            );
        }
    }
    assert_eq!(played.len(), expected.len());
    assert!(
        played == expected,
        "played audio differs from the sent order"
    );
}

/// A sends to B at `b1`; B's packets reach A from the addresses in `from`.
/// Returns A and the events it reported.
fn latch_run(latch_after: u32, from: &[SocketAddr]) -> (MediaSession, Vec<MediaEvent>) {
    let start = t0();
    let mut config = MediaConfig::new(10);
    config.latch_after = latch_after;
    let mut a = MediaSession::new(config, start).unwrap();
    let mut b = session(11, Codec::Pcmu, start);
    a.set_destination(Destination::new(addr("192.0.2.2:5000")));
    b.set_destination(Destination::new(addr("192.0.2.1:4000")));
    let mut evs = Vec::new();
    for (i, source) in from.iter().enumerate() {
        let now = start + PTIME * i as u32;
        b.send_frame(now, &[100; FRAME_SAMPLES]);
        for t in rtp_only(&mut b) {
            a.handle_rtp(now, *source, &t.payload).unwrap();
        }
        evs.extend(events(&mut a));
    }
    (a, evs)
}

fn latched(evs: &[MediaEvent]) -> Vec<&MediaEvent> {
    evs.iter()
        .filter(|e| matches!(e, MediaEvent::Latched { .. }))
        .collect()
}

#[test]
fn symmetric_rtp_ignores_a_single_stray_packet() {
    let (b1, b2) = (addr("192.0.2.2:5000"), addr("198.51.100.7:6000"));
    let (mut a, evs) = latch_run(3, &[b1, b1, b2, b1, b1, b2, b2, b1, b1]);
    assert!(latched(&evs).is_empty(), "{evs:?}");
    assert_eq!(a.destination().unwrap().rtp(), b1);
    a.send_frame(t0() + Duration::from_secs(1), &[0; FRAME_SAMPLES]);
    assert_eq!(rtp_only(&mut a)[0].destination, b1);
}

#[test]
fn symmetric_rtp_follows_a_moved_peer_after_n_packets() {
    let (b1, b2) = (addr("192.0.2.2:5000"), addr("198.51.100.7:6000"));
    let (mut a, evs) = latch_run(3, &[b1, b1, b2, b2, b2, b2]);
    assert_eq!(
        latched(&evs),
        [&MediaEvent::Latched {
            previous: Some(b1),
            current: b2,
            rtcp: false
        }]
    );
    let dest = a.destination().unwrap();
    assert_eq!(dest.rtp(), b2);
    assert_eq!(dest.rtcp(), addr("198.51.100.7:6001"));
    a.send_frame(t0() + Duration::from_secs(1), &[0; FRAME_SAMPLES]);
    assert_eq!(rtp_only(&mut a)[0].destination, b2);
    // Every packet of the moved peer was played: none lost in the move.
    assert_eq!(a.stats().packets_received, 6);
    assert_eq!(a.stats().packets_lost, 0);
}

#[test]
fn symmetric_rtp_count_is_configurable() {
    let (b1, b2) = (addr("192.0.2.2:5000"), addr("198.51.100.7:6000"));
    let (a, evs) = latch_run(5, &[b1, b2, b2, b2, b2]);
    assert!(latched(&evs).is_empty());
    assert_eq!(a.destination().unwrap().rtp(), b1);
    let (a, evs) = latch_run(5, &[b1, b2, b2, b2, b2, b2]);
    assert_eq!(latched(&evs).len(), 1);
    assert_eq!(a.destination().unwrap().rtp(), b2);
    // Off: never moves.
    let start = t0();
    let mut config = MediaConfig::new(10);
    config.symmetric_rtp = false;
    let mut a = MediaSession::new(config, start).unwrap();
    let mut b = session(11, Codec::Pcmu, start);
    a.set_destination(Destination::new(b1));
    b.set_destination(Destination::new(addr("192.0.2.1:4000")));
    for i in 0..10 {
        b.send_frame(start + PTIME * i, &[0; FRAME_SAMPLES]);
        for t in rtp_only(&mut b) {
            a.handle_rtp(start + PTIME * i, b2, &t.payload).unwrap();
        }
    }
    assert_eq!(a.destination().unwrap().rtp(), b1);
    assert!(latched(&events(&mut a)).is_empty());
}

#[test]
fn a_stray_stream_is_not_played() {
    let start = t0();
    let (a_addr, b_addr, x) = (
        addr("192.0.2.1:4000"),
        addr("192.0.2.2:5000"),
        addr("203.0.113.9:7000"),
    );
    let mut a = session(20, Codec::Pcmu, start);
    let mut b = session(21, Codec::Pcmu, start);
    let mut stray = session(22, Codec::Pcmu, start);
    a.set_destination(Destination::new(b_addr));
    b.set_destination(Destination::new(a_addr));
    stray.set_destination(Destination::new(a_addr));
    for i in 0..5 {
        let now = start + PTIME * i;
        b.send_frame(now, &[1000; FRAME_SAMPLES]);
        for t in rtp_only(&mut b) {
            a.handle_rtp(now, b_addr, &t.payload).unwrap();
        }
    }
    stray.send_frame(start + ms(105), &[-1000; FRAME_SAMPLES]);
    for t in rtp_only(&mut stray) {
        a.handle_rtp(start + ms(105), x, &t.payload).unwrap();
    }
    let s = a.stats();
    assert_eq!(s.packets_received, 5);
    assert_eq!(s.packets_ignored, 1);
    assert_eq!(a.remote_ssrc(), Some(b.ssrc()));
    assert!(audio(&mut a).iter().all(|x| *x > 0));
}

#[test]
fn ssrc_sequence_and_timestamp_continue_across_address_changes() {
    let start = t0();
    let (a1, a2) = (addr("192.0.2.1:4000"), addr("10.9.8.7:4100"));
    let (b1, b2) = (addr("192.0.2.2:5000"), addr("[2001:db8::2]:5002"));
    let mut a = session(30, Codec::Pcmu, start);
    let mut b = session(31, Codec::Pcmu, start);
    a.set_destination(Destination::new(b1));
    b.set_destination(Destination::new(a1));
    let mut tone = ToneSource::new(1000.0, 4000);
    let mut headers = Vec::new();
    for i in 0..150u32 {
        let now = start + PTIME * i;
        if i == 50 {
            // The peer re-INVITEd from a new address: the last packet goes
            // there at once, and b drops it as the duplicate it is.
            a.set_destination(Destination::new(b2));
            let resent = rtp_only(&mut a);
            assert_eq!(resent.len(), 1);
            assert_eq!(resent[0].destination, b2);
            let h = header(&resent[0].payload);
            assert_eq!(h.seq, headers.last().map(|h: &Header| h.seq).unwrap());
            b.handle_rtp(now, a1, &resent[0].payload).unwrap();
            assert_eq!(b.stats().packets_duplicate, 1);
            // the same destination again is no move
            a.set_destination(Destination::new(b2));
            assert!(rtp_only(&mut a).is_empty());
        }
        // From 100 on, A's own address changed: the driver re-opened its
        // sockets on a2 and keeps feeding the same session.
        let a_source = if i < 100 { a1 } else { a2 };
        a.send_frame(now, &tone.next_frame());
        for t in rtp_only(&mut a) {
            assert_eq!(t.destination, if i < 50 { b1 } else { b2 });
            headers.push(header(&t.payload));
            b.handle_rtp(now, a_source, &t.payload).unwrap();
        }
    }
    assert_eq!(headers.len(), 150);
    for w in headers.windows(2) {
        assert_eq!(w[1].ssrc, w[0].ssrc);
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
        assert!(!w[1].marker);
    }
    assert_eq!(headers[0].ssrc, a.ssrc());
    // The receiver saw one stream, with nothing lost, and latched to a2.
    let evs = events(&mut b);
    let ssrcs: Vec<_> = evs
        .iter()
        .filter(|e| matches!(e, MediaEvent::RemoteSsrc { .. }))
        .collect();
    assert_eq!(ssrcs.len(), 1);
    assert_eq!(latched(&evs).len(), 1);
    assert_eq!(b.destination().unwrap().rtp(), a2);
    assert_eq!(b.stats().packets_lost, 0);
    assert_eq!(b.stats().packets_received, 150);
    assert_eq!(a.stats().packets_resent, 1);
    assert_eq!(a.stats().packets_sent, 150);
}

/// Break-before-make: the peer's old address is already dead when its
/// re-INVITE arrives, so the packet sent there just before is lost. The
/// move resends it to the new address, and nothing is lost or concealed.
#[test]
fn a_move_recovers_the_packet_lost_to_the_old_address() {
    let start = t0();
    let a_addr = addr("192.0.2.1:4000");
    let (b1, b2) = (addr("192.0.2.2:5000"), addr("192.0.2.22:5000"));
    let mut a = session(40, Codec::Pcmu, start);
    let mut b = session(41, Codec::Pcmu, start);
    a.set_destination(Destination::new(b1));
    b.set_destination(Destination::new(a_addr));
    let mut tone = ToneSource::new(1000.0, 4000);
    let mut played = Vec::new();
    for i in 0..100u32 {
        let now = start + PTIME * i;
        if i == 50 {
            a.set_destination(Destination::new(b2));
        }
        a.send_frame(now, &tone.next_frame());
        for t in rtp_only(&mut a) {
            // packet 49 went to b1, which no longer reaches b
            if t.destination == b2 || i < 49 {
                b.handle_rtp(now, a_addr, &t.payload).unwrap();
            }
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now);
        }
        played.extend(audio(&mut b));
    }
    b.handle_timeout(start + PTIME * 100 + ms(100));
    played.extend(audio(&mut b));
    let s = b.stats();
    assert_eq!(s.packets_lost, 0);
    assert_eq!(s.packets_concealed, 0);
    assert_eq!(s.packets_received, 100);
    assert_eq!(played.len(), 100 * FRAME_SAMPLES);
}

#[test]
fn timestamps_jump_after_a_pause_but_sequence_numbers_do_not() {
    let start = t0();
    let mut a = session(32, Codec::Pcmu, start);
    a.set_destination(Destination::new(addr("192.0.2.2:5000")));
    a.send_frame(start, &[0; FRAME_SAMPLES]);
    a.send_frame(start + ms(20), &[0; FRAME_SAMPLES]);
    // The driver stalled for a second (a hand-off).
    a.send_frame(start + ms(1040), &[0; FRAME_SAMPLES]);
    let h: Vec<Header> = rtp_only(&mut a)
        .iter()
        .map(|t| header(&t.payload))
        .collect();
    assert_eq!(h[1].seq, h[0].seq.wrapping_add(1));
    assert_eq!(h[2].seq, h[1].seq.wrapping_add(1));
    assert_eq!(h[2].ts, h[0].ts.wrapping_add(52 * 160));
    assert!(h[2].marker);
    assert_eq!(a.next_send_at(), Some(start + ms(1060)));
}

// ----- a small discrete-event network for the timed tests ---------------

struct Peer {
    session: MediaSession,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    tone: ToneSource,
    audio: Vec<i16>,
    events: Vec<(Instant, MediaEvent)>,
    sent: Vec<(Instant, MediaTransmit)>,
}

struct InFlight {
    at: Instant,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Bytes,
}

type DropRule = Box<dyn FnMut(usize, &MediaTransmit) -> bool>;

struct Net {
    now: Instant,
    peers: Vec<Peer>,
    wire: Vec<InFlight>,
    latency: Duration,
    /// Drops a packet when it returns true: (sender index, transmit).
    drop: DropRule,
}

impl Net {
    fn new(start: Instant, a: MediaSession, b: MediaSession, latency: Duration) -> Net {
        let mk = |session, rtp: &str, rtcp: &str, f| Peer {
            session,
            rtp: addr(rtp),
            rtcp: addr(rtcp),
            tone: ToneSource::new(f, 6000),
            audio: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
        };
        let mut peers = vec![
            mk(a, "192.0.2.1:4000", "192.0.2.1:4001", 1000.0),
            mk(b, "192.0.2.2:5000", "192.0.2.2:5001", 600.0),
        ];
        let (a_rtp, b_rtp) = (peers[0].rtp, peers[1].rtp);
        peers[0].session.set_destination(Destination::new(b_rtp));
        peers[1].session.set_destination(Destination::new(a_rtp));
        Net {
            now: start,
            peers,
            wire: Vec::new(),
            latency,
            drop: Box::new(|_, _| false),
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for p in &self.peers {
            consider(p.session.poll_timeout());
            consider(p.session.next_send_at());
        }
        for f in &self.wire {
            consider(Some(f.at));
        }
        next
    }

    fn run_until(&mut self, end: Instant) {
        for _ in 0..1_000_000 {
            let Some(next) = self.next_time() else { break };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            self.step();
        }
        self.now = end;
    }

    fn step(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|f| f.at <= now);
        self.wire = later;
        for f in due {
            for p in self.peers.iter_mut() {
                if f.to == p.rtp {
                    let _ = p.session.handle_rtp(now, f.from, &f.bytes);
                } else if f.to == p.rtcp {
                    p.session.handle_rtcp(now, f.from, &f.bytes).unwrap();
                }
            }
        }
        for (i, p) in self.peers.iter_mut().enumerate() {
            if p.session.next_send_at().is_some_and(|t| t <= now) {
                let frame = p.tone.next_frame();
                assert!(p.session.send_frame(now, &frame));
            }
            if p.session.poll_timeout().is_some_and(|t| t <= now) {
                p.session.handle_timeout(now);
            }
            while let Some(t) = p.session.poll_transmit() {
                p.sent.push((now, t.clone()));
                if (self.drop)(i, &t) {
                    continue;
                }
                self.wire.push(InFlight {
                    at: now + self.latency,
                    from: if t.rtcp { p.rtcp } else { p.rtp },
                    to: t.destination,
                    bytes: t.payload,
                });
            }
        }
        for p in self.peers.iter_mut() {
            while let Some(e) = p.session.poll_event() {
                p.events.push((now, e));
            }
            while let Some(chunk) = p.session.poll_audio() {
                p.audio.extend(chunk);
            }
        }
    }
}

#[test]
fn rtcp_sender_and_receiver_reports_round_trip() {
    let start = t0();
    let a = session(40, Codec::Pcmu, start);
    let mut cfg = MediaConfig::new(41);
    cfg.direction = MediaDirection::RecvOnly;
    let b = MediaSession::new(cfg, start).unwrap();
    let mut net = Net::new(start, a, b, ms(30));
    // Lose 5 of A's RTP packets.
    let mut counter = 0u32;
    net.drop = Box::new(move |from, t| {
        if from == 0 && !t.rtcp {
            counter += 1;
            return [30, 31, 32, 200, 300].contains(&counter);
        }
        false
    });
    net.run_until(start + Duration::from_secs(13));

    let (a_ssrc, b_ssrc) = (net.peers[0].session.ssrc(), net.peers[1].session.ssrc());
    // Reports every 5 s, the first after 2.5 s.
    for p in &net.peers {
        let times: Vec<Duration> = p
            .sent
            .iter()
            .filter(|(_, t)| t.rtcp)
            .map(|(at, _)| *at - start)
            .collect();
        assert_eq!(times, [ms(2500), ms(7500), ms(12500)]);
        assert!(p
            .sent
            .iter()
            .filter(|(_, t)| t.rtcp)
            .all(|(_, t)| t.destination.port() % 2 == 1));
    }
    // B, receive-only, sent nothing but RTCP.
    assert!(net.peers[1].sent.iter().all(|(_, t)| t.rtcp));

    // B parsed A's sender reports.
    let srs: Vec<_> = net.peers[1]
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            MediaEvent::Report(r) => Some((*at, r.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(srs.len(), 3);
    for (at, r) in &srs {
        assert_eq!(r.ssrc, a_ssrc);
        let info = r.sender.expect("A sends, so it reports as a sender");
        // Sent at `at - 30 ms`, 20 ms per packet from t = 0.
        let sent_at = *at - ms(30) - start;
        assert_eq!(u128::from(info.packet_count), sent_at.as_millis() / 20 + 1);
        assert_eq!(info.octet_count, info.packet_count * 160);
        // A has no wall clock: NTP counts from its start.
        assert_eq!(info.ntp_timestamp >> 32, sent_at.as_secs());
    }

    // A parsed B's receiver reports about A's stream.
    let rrs: Vec<_> = net.peers[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Report(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rrs.len(), 3);
    assert!(rrs.iter().all(|r| r.ssrc == b_ssrc && r.sender.is_none()));
    let first = rrs[0].blocks[0];
    assert_eq!(first.ssrc, a_ssrc);
    assert_eq!(first.cumulative_lost, 3);
    assert_eq!(first.last_sr, 0, "B had no SR when it first reported");
    let last = rrs[2].blocks[0];
    assert_eq!(last.cumulative_lost, 5);
    assert_ne!(last.last_sr, 0);
    assert_eq!(last.fraction_lost, 0, "no loss in the last interval");
    let second = rrs[1].blocks[0];
    // 2 lost of the 250 expected between the first and second reports.
    assert_eq!(second.fraction_lost, (2 * 256 / 250) as u8);

    let stats = net.peers[0].session.stats();
    assert_eq!(stats.remote_report, Some(last));
    let rtt = stats.round_trip_time.expect("an RTT from LSR/DLSR");
    assert!(rtt >= ms(59) && rtt <= ms(61), "{rtt:?}");
    assert_eq!(stats.rtcp_sent, 3);
    assert_eq!(stats.rtcp_received, 3);
    assert_eq!(net.peers[1].session.stats().packets_lost, 5);
}

#[test]
fn rtcp_muxed_on_the_rtp_port_is_recognised() {
    let start = t0();
    let mut a = session(42, Codec::Pcmu, start);
    let mut b = session(43, Codec::Pcmu, start);
    let (a_addr, b_addr) = (addr("192.0.2.1:4000"), addr("192.0.2.2:5000"));
    a.set_destination(Destination::muxed(b_addr));
    b.set_destination(Destination::muxed(a_addr));
    for i in 0..200 {
        let now = start + PTIME * i;
        a.send_frame(now, &[0; FRAME_SAMPLES]);
        if a.poll_timeout().is_some_and(|t| t <= now) {
            a.handle_timeout(now);
        }
        for t in transmits(&mut a) {
            assert_eq!(t.destination, b_addr);
            b.handle_rtp(now, a_addr, &t.payload).unwrap();
        }
    }
    let evs = events(&mut b);
    assert!(evs
        .iter()
        .any(|e| matches!(e, MediaEvent::Report(r) if r.sender.is_some())));
    assert_eq!(b.stats().rtcp_received, 1);
    assert_eq!(b.stats().packets_received, 200);
}

#[test]
fn close_sends_bye() {
    let start = t0();
    let mut a = session(44, Codec::Pcmu, start);
    let mut b = session(45, Codec::Pcmu, start);
    let b_addr = addr("192.0.2.2:5000");
    a.set_destination(Destination::new(b_addr));
    a.close(start + ms(100));
    let t = transmits(&mut a);
    assert_eq!(t.len(), 1);
    assert!(t[0].rtcp);
    assert_eq!(t[0].destination, addr("192.0.2.2:5001"));
    b.handle_rtcp(start + ms(100), addr("192.0.2.1:4001"), &t[0].payload)
        .unwrap();
    assert!(events(&mut b).contains(&MediaEvent::RemoteBye { ssrc: a.ssrc() }));
    assert!(!a.send_frame(start + ms(120), &[0; FRAME_SAMPLES]));
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.send_dtmf(DtmfDigit::D1, ms(100)), Err(MediaError::Closed));
}

#[test]
fn hold_stops_sending_and_resume_continues_the_stream() {
    let start = t0();
    let a = session(50, Codec::Pcmu, start);
    let b = session(51, Codec::Pcmu, start);
    let mut net = Net::new(start, a, b, ms(10));
    net.run_until(start + ms(990));
    let sent_before = net.peers[0].session.stats().packets_sent;
    assert_eq!(sent_before, 50);
    let b_recv_before = net.peers[1].session.stats().packets_received;

    // A puts B on hold: A sends nothing, and ignores what B sends.
    net.peers[0].session.set_direction(MediaDirection::Inactive);
    assert_eq!(net.peers[0].session.next_send_at(), None);
    assert!(!net.peers[0]
        .session
        .send_frame(net.now, &[0; FRAME_SAMPLES]));
    assert_eq!(
        net.peers[0].session.send_dtmf(DtmfDigit::D1, ms(100)),
        Err(MediaError::NotSending(MediaDirection::Inactive))
    );
    let a_audio_before = net.peers[0].audio.len();
    let a_ignored_before = net.peers[0].session.stats().packets_ignored;
    net.run_until(start + ms(5990));
    assert_eq!(net.peers[0].session.stats().packets_sent, sent_before);
    assert!(
        net.peers[0]
            .sent
            .iter()
            .filter(|(at, _)| *at > start + ms(990))
            .all(|(_, t)| t.rtcp),
        "only RTCP during hold"
    );
    assert_eq!(net.peers[1].session.stats().packets_received, b_recv_before);
    assert_eq!(net.peers[0].audio.len(), a_audio_before, "A plays nothing");
    assert_eq!(
        net.peers[0].session.stats().packets_ignored - a_ignored_before,
        250
    );

    // recvonly: A plays B again but still sends nothing.
    net.peers[0].session.set_direction(MediaDirection::RecvOnly);
    net.run_until(start + ms(6990));
    assert_eq!(net.peers[0].session.stats().packets_sent, sent_before);
    assert!(net.peers[0].audio.len() > a_audio_before);

    // Resume: the same stream goes on, one sequence number further, the
    // timestamp moved on by the real time, the marker set.
    net.peers[0].session.set_direction(MediaDirection::SendRecv);
    net.run_until(start + ms(7990));
    let a_rtp: Vec<Header> = net.peers[0]
        .sent
        .iter()
        .filter(|(_, t)| !t.rtcp)
        .map(|(_, t)| header(&t.payload))
        .collect();
    // 50 before the hold; after it, slots 349 (6980 ms, sent late at
    // 6990 ms) to 399.
    assert_eq!(a_rtp.len(), 101);
    let (last_before, first_after) = (&a_rtp[49], &a_rtp[50]);
    assert_eq!(first_after.ssrc, last_before.ssrc);
    assert_eq!(first_after.seq, last_before.seq.wrapping_add(1));
    assert!(first_after.marker);
    let ts_gap = first_after.ts.wrapping_sub(last_before.ts);
    assert_eq!(ts_gap, (6980 - 980) / 20 * 160);
    // B saw no loss: the pause was silence, not missing packets.
    assert_eq!(net.peers[1].session.stats().packets_lost, 0);
    // Nor did A: what it ignored on hold is neither lost nor a gap.
    let a_stats = net.peers[0].session.stats();
    assert_eq!(a_stats.packets_lost, 0);
    assert_eq!(a_stats.longest_gap, ms(20));
}

#[test]
fn dtmf_digit_goes_out_as_telephone_events() {
    let start = t0();
    let a = session(60, Codec::Pcmu, start);
    let b = session(61, Codec::Pcmu, start);
    let mut net = Net::new(start, a, b, ms(10));
    net.run_until(start + ms(190));
    net.peers[0]
        .session
        .send_dtmf(DtmfDigit::Pound, ms(100))
        .unwrap();
    assert!(net.peers[0].session.dtmf_pending());
    net.run_until(start + ms(600));
    assert!(!net.peers[0].session.dtmf_pending());

    let a_rtp: Vec<(Header, Bytes)> = net.peers[0]
        .sent
        .iter()
        .filter(|(_, t)| !t.rtcp)
        .map(|(_, t)| (header(&t.payload), t.payload.clone()))
        .collect();
    // Packets 0..10 audio, 10..17 the event (5 updates + 2 repeats of the end),
    // then audio again; sequence numbers never skip.
    let pts: Vec<u8> = a_rtp[8..19].iter().map(|(h, _)| h.pt).collect();
    assert_eq!(pts, [0, 0, 101, 101, 101, 101, 101, 101, 101, 0, 0]);
    for w in a_rtp.windows(2) {
        assert_eq!(w[1].0.seq, w[0].0.seq.wrapping_add(1));
    }
    let event_ts = a_rtp[10].0.ts;
    assert_eq!(event_ts, a_rtp[9].0.ts.wrapping_add(160));
    assert!(a_rtp[10].0.marker);
    let mut durations = Vec::new();
    for (h, bytes) in &a_rtp[10..17] {
        assert_eq!(h.ts, event_ts);
        let p = RtpPacket::parse(bytes).unwrap();
        let payload = siproam_media::TelephoneEvent::parse(p.payload()).unwrap();
        assert_eq!(payload.event, 11);
        durations.push((payload.duration, payload.end));
    }
    assert_eq!(
        durations,
        [
            (160, false),
            (320, false),
            (480, false),
            (640, false),
            (800, true),
            (800, true),
            (800, true)
        ]
    );
    // Audio resumes on the sample clock.
    assert_eq!(a_rtp[17].0.ts, event_ts.wrapping_add(7 * 160));

    let digits: Vec<_> = net.peers[1]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Dtmf { digit, duration } => Some((*digit, *duration)),
            _ => None,
        })
        .collect();
    assert_eq!(digits, [(DtmfDigit::Pound, ms(100))]);
    assert_eq!(net.peers[1].session.stats().packets_lost, 0);
}

#[test]
fn config_is_checked() {
    let start = t0();
    let mut c = MediaConfig::new(1);
    c.telephone_event = Some(13);
    assert_eq!(
        MediaSession::new(c, start).unwrap_err(),
        MediaError::TelephoneEventPayloadType(13)
    );
    let mut c = MediaConfig::new(1);
    c.latch_after = 0;
    assert_eq!(
        MediaSession::new(c, start).unwrap_err(),
        MediaError::LatchAfterZero
    );
    let mut c = MediaConfig::new(1);
    c.rtcp_interval = Duration::ZERO;
    assert_eq!(
        MediaSession::new(c, start).unwrap_err(),
        MediaError::RtcpIntervalZero
    );
    let mut c = MediaConfig::new(1);
    c.telephone_event = None;
    let mut s = MediaSession::new(c, start).unwrap();
    assert_eq!(
        s.send_dtmf(DtmfDigit::D1, ms(100)),
        Err(MediaError::NoTelephoneEvent)
    );
    let mut s2 = session(1, Codec::Pcmu, start);
    assert_eq!(
        s2.send_dtmf_str("12x", ms(100)),
        Err(MediaError::NotADtmfKey('x'))
    );
    assert!(!s2.dtmf_pending());
    assert_eq!(
        s.handle_rtp(start, addr("192.0.2.9:1"), b"junk"),
        Err(siproam_media::PacketError::MalformedRtp)
    );
}

#[test]
fn wav_file_in_tone_out_through_two_sessions_into_a_wav_file() {
    use siproam_media::{AudioSink, WavSink, WavSource};
    let dir = std::env::temp_dir().join(format!("siproam-media-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.wav");
    let output = dir.join("out.wav");
    // A 1 kHz tone file, 0.5 s: the source loops it.
    let mut tone = ToneSource::new(1000.0, 8000);
    let mut sink = WavSink::create(&input).unwrap();
    for _ in 0..25 {
        sink.write(&tone.next_frame()).unwrap();
    }
    sink.finalize().unwrap();

    let mut source = WavSource::open(&input).unwrap();
    assert_eq!(source.len(), 25 * FRAME_SAMPLES);
    let start = t0();
    let (a_addr, b_addr) = (addr("192.0.2.1:4000"), addr("192.0.2.2:5000"));
    let mut a = session(70, Codec::Pcma, start);
    let mut b = session(71, Codec::Pcmu, start);
    a.set_destination(Destination::new(b_addr));
    let mut out = WavSink::create(&output).unwrap();
    for i in 0..100u32 {
        let now = start + PTIME * i;
        a.send_frame(now, &source.next_frame());
        for t in rtp_only(&mut a) {
            b.handle_rtp(now, a_addr, &t.payload).unwrap();
        }
        while let Some(chunk) = b.poll_audio() {
            out.write(&chunk).unwrap();
        }
    }
    out.finalize().unwrap();

    let mut back = WavSource::open(&output).unwrap();
    assert_eq!(back.len(), 100 * FRAME_SAMPLES);
    let samples: Vec<i16> = (0..100).flat_map(|_| back.next_frame()).collect();
    assert_is_1khz(&samples);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the driver could not send is taken out of the counters (RTP, a
/// resend, RTCP), so they count only what reached the wire.
#[test]
fn a_transmit_the_driver_could_not_send_is_not_counted() {
    let start = t0();
    let mut a = session(40, Codec::Pcmu, start);
    a.set_destination(Destination::new(addr("192.0.2.2:5000")));
    let mut tone = ToneSource::new(1000.0, 4000);
    for i in 0..3u32 {
        a.send_frame(start + PTIME * i, &tone.next_frame());
    }
    let sent = transmits(&mut a);
    let before = a.stats();
    assert_eq!(before.packets_sent, 3);
    // the second packet could not leave
    let failed = sent.iter().filter(|t| !t.rtcp).nth(1).unwrap();
    assert!(!failed.resent);
    a.handle_send_failed(failed);
    let after = a.stats();
    assert_eq!(after.packets_sent, 2);
    assert_eq!(
        after.bytes_sent,
        before.bytes_sent - failed.payload.len() as u64
    );
    assert_eq!(after.payload_bytes_sent, before.payload_bytes_sent - 160);
    // a resend to a new destination that could not leave
    a.set_destination(Destination::new(addr("192.0.2.3:5000")));
    let resent = rtp_only(&mut a);
    assert!(resent[0].resent);
    assert_eq!(a.stats().packets_resent, 1);
    a.handle_send_failed(&resent[0]);
    assert_eq!(a.stats().packets_resent, 0);
    assert_eq!(a.stats().packets_sent, 2);
    // an RTCP report that could not leave
    a.close(start + PTIME * 4);
    let report = transmits(&mut a).into_iter().find(|t| t.rtcp).unwrap();
    let rtcp = a.stats().rtcp_sent;
    a.handle_send_failed(&report);
    assert_eq!(a.stats().rtcp_sent, rtcp - 1);
    assert_eq!(a.stats().packets_sent, 2);
}

/// `poll_transmit_into` gives the same datagrams, in the same order and to
/// the same places, as `poll_transmit`, into one reused buffer.
#[test]
fn poll_transmit_into_gives_what_poll_transmit_gives() {
    let start = Instant::now();
    let mut a = MediaSession::new(MediaConfig::new(11), start).unwrap();
    let mut b = MediaSession::new(MediaConfig::new(11), start).unwrap();
    let peer = addr("192.0.2.2:5000");
    for s in [&mut a, &mut b] {
        s.set_destination(Destination::new(peer));
        s.send_dtmf(DtmfDigit::D1, ms(40)).unwrap();
        for i in 0..6u32 {
            s.send_frame(start + PTIME * i, &[i as i16 * 100; FRAME_SAMPLES]);
        }
        s.handle_timeout(start + ms(2600));
        s.set_destination(Destination::new(addr("192.0.2.3:6000")));
    }
    let mut buf = Vec::with_capacity(256);
    let mut n = 0;
    while let Some(t) = a.poll_transmit() {
        let info = b.poll_transmit_into(&mut buf).unwrap();
        assert_eq!(&buf[..], &t.payload[..]);
        assert_eq!(
            (info.destination, info.rtcp, info.resent),
            (t.destination, t.rtcp, t.resent)
        );
        n += 1;
    }
    assert!(b.poll_transmit_into(&mut buf).is_none());
    assert!(buf.is_empty());
    assert_eq!(n, 6 + 1 + 1, "frames, the RTCP report and the resend");
}

/// Without playout nothing is decoded, while the stream is still counted
/// and its DTMF still reported.
#[test]
fn without_playout_nothing_is_decoded_but_dtmf_is_reported() {
    let start = Instant::now();
    let mut a = MediaSession::new(MediaConfig::new(1), start).unwrap();
    let mut config = MediaConfig::new(2);
    config.playout = false;
    let mut b = MediaSession::new(config, start).unwrap();
    let b_addr = addr("192.0.2.2:5000");
    let a_addr = addr("192.0.2.1:4000");
    a.set_destination(Destination::new(b_addr));
    a.send_dtmf(DtmfDigit::D5, ms(40)).unwrap();
    for i in 0..10u32 {
        let now = start + PTIME * i;
        a.send_frame(now, &[1000; FRAME_SAMPLES]);
        while let Some(t) = a.poll_transmit() {
            if !t.rtcp {
                b.handle_rtp(now, a_addr, &t.payload).unwrap();
            }
        }
    }
    assert_eq!(b.poll_audio(), None);
    assert_eq!(b.stats().packets_received, 10);
    assert!(events(&mut b).iter().any(|e| matches!(
        e,
        MediaEvent::Dtmf {
            digit: DtmfDigit::D5,
            ..
        }
    )));
}
