#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use siproam_media::{MediaConfig, SilenceSource, ToneSource};

fn loopback_socket() -> (StdUdpSocket, SocketAddr) {
    let s = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

/// Waits for the last media report of `call`.
fn last_report(rx: &mut mpsc::Receiver<EndpointEvent>, call: CallId) -> MediaReport {
    loop {
        match rx.blocking_recv().expect("a last report") {
            EndpointEvent::Media(r) if r.last && r.call == call => return r,
            _ => {}
        }
    }
}

/// Starts call `key` (its SSRC seeded by the key) on `thread`: a 440 Hz
/// tone from `socket` to `peer`, reports to `events`, with `srtp` if given.
fn tone_call(
    thread: &ThreadHandle,
    key: u64,
    socket: StdUdpSocket,
    peer: SocketAddr,
    now: Instant,
    events: &mpsc::Sender<EndpointEvent>,
    srtp: Option<SrtpSession>,
) -> MediaHandle {
    let mut session = MediaSession::new(MediaConfig::new(key), now).unwrap();
    session.set_destination(Destination::new(peer));
    start_on(
        thread,
        key,
        CallMedia {
            call: CallId(key as u32),
            socket,
            session,
            source: Box::new(ToneSource::new(440.0, 8000)),
            sink: None,
            events: Some(events.clone()),
            tap: None,
            srtp,
        },
    )
    .unwrap()
}

/// Two calls on one engine thread send each other 20 ms frames over
/// loopback: both send and receive, nothing is lost, the reports name the
/// calls, and stopping them frees the thread.
#[test]
fn two_calls_on_one_thread_exchange_media() {
    let thread = spawn_thread(99).unwrap();
    let (sa, a) = loopback_socket();
    let (sb, b) = loopback_socket();
    let now = Instant::now();
    let (events, mut reports) = mpsc::channel(1024);
    let ha = tone_call(&thread, 1, sa, b, now, &events, None);
    let hb = tone_call(&thread, 2, sb, a, now, &events, None);
    assert_eq!(thread.load.load(Ordering::Relaxed), 2);
    // a periodic report comes after a second
    let periodic = loop {
        match reports.blocking_recv().unwrap() {
            EndpointEvent::Media(r) if !r.last => break r,
            _ => {}
        }
    };
    assert!(periodic.tx_packets > 0);
    drop(ha);
    let ra = last_report(&mut reports, CallId(1));
    drop(hb);
    let rb = last_report(&mut reports, CallId(2));
    assert_eq!((ra.local, ra.remote), (a, Some(b)));
    assert_eq!((rb.local, rb.remote), (b, Some(a)));
    for r in [&ra, &rb] {
        assert!(r.tx_packets >= 40, "about 50 frames a second: {r:?}");
        assert!(r.rx_packets >= 40, "{r:?}");
        assert_eq!(r.lost, 0, "{r:?}");
    }
    // B received all A sent (A stopped first); A received what B sent
    // before A stopped
    assert_eq!(rb.rx_packets, ra.tx_packets);
    assert!(ra.rx_packets <= rb.tx_packets);
    // the load goes back once the engine took both stops
    let t0 = Instant::now();
    while thread.load.load(Ordering::Relaxed) != 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(thread.load.load(Ordering::Relaxed), 0);
}

/// A UDP socket bound to an address this host does not have, as a call's
/// RTP socket is once its address was removed: every send fails.
fn socket_on_a_removed_address() -> StdUdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_freebind_v4(true).unwrap();
    // TEST-NET-1: never a local address
    s.bind(&SocketAddr::from(([192, 0, 2, 7], 0)).into())
        .unwrap();
    s.into()
}

/// Break-before-make: the RTP socket's address is gone before the media
/// moves. What could not leave goes out on the new socket once it comes,
/// and `tx_packets` is exactly what reached the receiver.
#[test]
fn rtp_that_cannot_leave_a_removed_address_goes_out_on_the_new_socket() {
    let thread = spawn_thread(98).unwrap();
    let receiver = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let peer = receiver.local_addr().unwrap();
    let old = socket_on_a_removed_address();
    assert!(
        old.send_to(b"x", peer).is_err(),
        "the old address must not send"
    );
    let mut session = MediaSession::new(MediaConfig::new(7), Instant::now()).unwrap();
    session.set_destination(Destination::new(peer));
    let first_seq = session.next_sequence();
    let (events, mut reports) = mpsc::channel(64);
    let handle = start_on(
        &thread,
        1,
        CallMedia {
            call: CallId(1),
            socket: old,
            session,
            source: Box::new(SilenceSource),
            sink: None,
            events: Some(events),
            tap: None,
            srtp: None,
        },
    )
    .unwrap();
    // a few frames are due while the address is gone
    std::thread::sleep(Duration::from_millis(70));
    let new = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    handle.send(MediaCmd::Rebind(new, Duration::ZERO)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(handle);
    let last = last_report(&mut reports, CallId(1));
    // every datagram sent on loopback is already queued at the receiver
    let mut seqs = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = receiver.recv_from(&mut buf) {
        let packet = &buf[..n];
        if !(192..=223).contains(&packet[1]) {
            seqs.push(u16::from_be_bytes([packet[2], packet[3]]));
        }
    }
    assert_eq!(
        last.tx_packets,
        seqs.len() as u64,
        "tx_packets counts what left"
    );
    assert_eq!(
        seqs.first(),
        Some(&first_seq),
        "the first frame, due while the address was gone, went out late"
    );
    let contiguous: Vec<u16> = (0..seqs.len())
        .map(|i| first_seq.wrapping_add(i as u16))
        .collect();
    assert_eq!(seqs, contiguous, "no frame missing, none twice");
    assert!(seqs.len() > 5, "frames before and after the move: {seqs:?}");
}

/// Make-before-break: after a rebind with a grace period, packets to the
/// old socket still count, and the first packet at the new socket is
/// reported as `MediaMoved` with the new address.
#[test]
fn a_rebind_keeps_the_old_socket_until_the_peer_follows() {
    let thread = spawn_thread(97).unwrap();
    let (ours, old_addr) = loopback_socket();
    let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut session = MediaSession::new(MediaConfig::new(3), Instant::now()).unwrap();
    session.set_destination(Destination::new(peer_addr));
    let (events, mut reports) = mpsc::channel(256);
    let handle = start_on(
        &thread,
        1,
        CallMedia {
            call: CallId(5),
            socket: ours,
            session,
            source: Box::new(SilenceSource),
            sink: None,
            events: Some(events),
            tap: None,
            srtp: None,
        },
    )
    .unwrap();
    let (new, new_addr) = loopback_socket();
    handle
        .send(MediaCmd::Rebind(new, Duration::from_secs(5)))
        .unwrap();
    // the peer's stream: first to the old address, then to the new one
    let mut peer_session = MediaSession::new(MediaConfig::new(4), Instant::now()).unwrap();
    let t0 = Instant::now();
    let mut send = |to: SocketAddr, i: u32| {
        peer_session.set_destination(Destination::new(to));
        peer_session.send_frame(t0 + PTIME_FOR_TEST * i, &[0; 160]);
        while let Some(t) = peer_session.poll_transmit() {
            if !t.rtcp && !t.resent {
                peer.send_to(&t.payload, to).unwrap();
            }
        }
    };
    for i in 0..5 {
        send(old_addr, i);
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 5..10 {
        send(new_addr, i);
        std::thread::sleep(Duration::from_millis(5));
    }
    let moved = loop {
        if let EndpointEvent::MediaMoved { call, local, .. } = reports.blocking_recv().unwrap() {
            break (call, local);
        }
    };
    assert_eq!(moved, (CallId(5), new_addr));
    drop(handle);
    let last = last_report(&mut reports, CallId(5));
    assert_eq!(last.rx_packets, 10, "the old socket's packets count too");
    assert_eq!(last.local, new_addr);
}

const PTIME_FOR_TEST: Duration = siproam_media::PTIME;

/// A socket with more datagrams waiting than one turn reads (a burst, or a
/// flooding peer) is read on at the call's next timers: nothing is left
/// behind, on a call that does not even send (no destination).
#[test]
fn a_burst_longer_than_a_turn_is_read_whole() {
    let thread = spawn_thread(96).unwrap();
    let (ours, our_addr) = loopback_socket();
    let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let mut peer_session = MediaSession::new(MediaConfig::new(4), Instant::now()).unwrap();
    peer_session.set_destination(Destination::new(our_addr));
    let t0 = Instant::now();
    let burst = rx::BATCH * MAX_BATCHES_IN_A_ROW + 36;
    let mut sent = 0;
    for i in 0..burst as u32 {
        peer_session.send_frame(t0 + PTIME_FOR_TEST * i, &[0; 160]);
        while let Some(t) = peer_session.poll_transmit() {
            if !t.rtcp {
                peer.send_to(&t.payload, our_addr).unwrap();
                sent += 1;
            }
        }
    }
    assert_eq!(sent, burst);
    // all of it waits before the engine takes the socket
    let session = MediaSession::new(MediaConfig::new(3), Instant::now()).unwrap();
    let (events, mut reports) = mpsc::channel(256);
    let handle = start_on(
        &thread,
        1,
        CallMedia {
            call: CallId(8),
            socket: ours,
            session,
            source: Box::new(SilenceSource),
            sink: None,
            events: Some(events),
            tap: None,
            srtp: None,
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(handle);
    let last = last_report(&mut reports, CallId(8));
    assert_eq!(last.rx_packets, burst as u64);
    assert_eq!(last.lost, 0);
}

/// With a simulated clock stepping 1 ms, a call wants the engine exactly
/// when a frame is due: one packet every 20 ms, sequence numbers and
/// timestamps in step, and the first media report after a second.
#[test]
fn a_call_sends_a_frame_every_20_ms_of_simulated_time() {
    let receiver = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let (socket, _) = loopback_socket();
    let t0 = Instant::now();
    let mut session = MediaSession::new(MediaConfig::new(9), t0).unwrap();
    session.set_destination(Destination::new(receiver.local_addr().unwrap()));
    let (events, mut reports) = mpsc::channel(16);
    let media = CallMedia {
        call: CallId(3),
        socket,
        session,
        source: Box::new(ToneSource::new(1000.0, 8000)),
        sink: None,
        events: Some(events),
        tap: None,
        srtp: None,
    };
    let mut call = Call::new(1, media, t0).unwrap();
    let mut buf = Vec::new();
    let mut rx = RxBatch::new();
    let mut woken = Vec::new();
    for step in 0..=1000u64 {
        let now = t0 + Duration::from_millis(step);
        if call.deadline() <= now {
            woken.push(step);
            // as the engine does: read the socket, then the frame due
            EngineThread::read(&mut rx, &mut call, now);
            call.on_timer(now);
            call.flush(&mut buf);
        }
    }
    let frames: Vec<u64> = woken.iter().copied().filter(|s| s % 20 == 0).collect();
    assert_eq!(frames, (0..=50).map(|i| i * 20).collect::<Vec<_>>());
    // the other wake-ups: the first RTCP report (2.5 s) is not due yet,
    // the media report is, at 1 s (a frame's time too)
    assert_eq!(woken, frames, "woken only when something was due");
    let mut packets = Vec::new();
    let mut b = [0u8; 2048];
    while let Ok((n, _)) = receiver.recv_from(&mut b) {
        packets.push(b[..n].to_vec());
    }
    assert_eq!(packets.len(), 51);
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.len(), 12 + 160);
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        let first_seq = u16::from_be_bytes([packets[0][2], packets[0][3]]);
        let first_ts =
            u32::from_be_bytes([packets[0][4], packets[0][5], packets[0][6], packets[0][7]]);
        assert_eq!(seq, first_seq.wrapping_add(i as u16));
        assert_eq!(ts, first_ts.wrapping_add(160 * i as u32));
    }
    match reports.try_recv() {
        Ok(EndpointEvent::Media(r)) => {
            assert!(!r.last);
            assert_eq!(r.tx_packets, 51);
        }
        other => panic!("a media report after a second: {other:?}"),
    }
}

/// Two SRTP calls (AES_CM_128_HMAC_SHA1_80, keys crossed) exchange media;
/// a forged packet (bad tag), a replayed one and a plain RTP packet sent to
/// one of them are dropped and counted, and the call is unharmed: it keeps
/// receiving, nothing is lost, the report names the suite.
#[test]
fn srtp_calls_drop_forged_replayed_and_plain_packets_unharmed() {
    use siproam_media::srtp::{SrtpContext, SrtpKey, SrtpSuite};
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let ka = SrtpKey::new(suite, &[1u8; 30]).unwrap();
    let kb = SrtpKey::new(suite, &[2u8; 30]).unwrap();
    let thread = spawn_thread(97).unwrap();
    let (sa, a) = loopback_socket();
    let (sb, b) = loopback_socket();
    let now = Instant::now();
    let (events, mut reports) = mpsc::channel(1024);
    let ha = tone_call(
        &thread,
        1,
        sa,
        b,
        now,
        &events,
        Some(SrtpSession::new(&ka, &kb)),
    );
    let hb = tone_call(
        &thread,
        2,
        sb,
        a,
        now,
        &events,
        Some(SrtpSession::new(&kb, &ka)),
    );
    std::thread::sleep(Duration::from_millis(300));
    // an attacker's packets to B: a valid one under A's key (another SSRC),
    // then the same again (a replay), one with a bad tag, one in plain RTP
    let attacker = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forger = SrtpContext::new(&ka);
    let mut rtp = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
    rtp.extend_from_slice(&[0xff; 160]);
    let plain = rtp.clone();
    forger.protect_rtp(&mut rtp).unwrap();
    attacker.send_to(&rtp, b).unwrap();
    attacker.send_to(&rtp, b).unwrap();
    let mut bad = rtp.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    attacker.send_to(&bad, b).unwrap();
    attacker.send_to(&plain, b).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(ha);
    let ra = last_report(&mut reports, CallId(1));
    drop(hb);
    let rb = last_report(&mut reports, CallId(2));
    assert_eq!(rb.srtp, Some("AES_CM_128_HMAC_SHA1_80"));
    assert_eq!(rb.srtp_dropped, 3, "replay, bad tag, plain: {rb:?}");
    assert_eq!(ra.srtp_dropped, 0, "{ra:?}");
    assert!(rb.rx_packets >= 20, "{rb:?}");
    assert_eq!(rb.lost, 0, "{rb:?}");
    assert_eq!(
        rb.remote,
        Some(a),
        "the forged packets did not move B's media"
    );
}
