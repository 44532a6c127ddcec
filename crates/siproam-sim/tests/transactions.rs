//! RFC 3261 §17 (with RFC 6026) transactions, every timer, run in the
//! simulator: a 32-second Timer B runs in virtual time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::{Config, Event, FlowCloseReason, RequestFailure, Target, Transport};
use siproam_sim::{Fate, Link, NodeId, Received, Sim};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};

const UA: &str = "192.0.2.10";
const PEER: &str = "192.0.2.20";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn peer_addr() -> SocketAddr {
    SocketAddr::new(ip(PEER), 5060)
}

fn setup() -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(Instant::now(), 42);
    // the transaction layer alone: the test plays the application
    let ua = sim.add_endpoint(
        "ua",
        &[ip(UA)],
        Config {
            dialogs: false,
            ..Config::default()
        },
    );
    let peer = sim.add_peer("peer", &[ip(PEER)]);
    (sim, ua, peer)
}

fn request(method: Method) -> MessageBuilder {
    MessageBuilder::request(method, "sip:bob@192.0.2.20")
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "tx-test@example.test")
        .header("CSeq", &format!("1 {method}"))
}

fn target(transport: Transport) -> Target {
    Target {
        transport,
        remote: peer_addr(),
        local: None,
        server_name: None,
    }
}

fn respond(sim: &mut Sim, peer: NodeId, to: &Received, code: u16) {
    let resp = MessageBuilder::response_to(&to.message, code, "X", Some("b1"))
        .build()
        .unwrap();
    sim.peer_reply(peer, to, resp.to_bytes());
}

/// Times (ms since start) at which the UA sent a message whose first line
/// starts with `prefix`.
fn sends(sim: &Sim, start: Instant, prefix: &str) -> Vec<u128> {
    sim.log()
        .iter()
        .filter(|e| e.from.ip() == ip(UA) && e.first_line.starts_with(prefix))
        .map(|e| (e.at - start).as_millis())
        .collect()
}

fn responses(events: &[(Instant, Event)]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Response { response, .. } => response.status(),
            _ => None,
        })
        .collect()
}

#[test]
fn non_invite_client_retransmits_then_times_out_with_timer_f() {
    let (mut sim, ua, peer) = setup();
    let start = sim.now();
    let id = sim
        .with_endpoint(ua, |ep, now| {
            ep.send_request(now, request(Method::Options), target(Transport::Udp))
        })
        .unwrap();
    sim.run_for(Duration::from_secs(40));
    // Timer E: 500 ms doubling up to T2 = 4 s; Timer F at 64·T1 = 32 s
    assert_eq!(
        sends(&sim, start, "OPTIONS"),
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let events = sim.take_events(ua);
    let failed: Vec<_> = events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::RequestFailed { request, reason } => Some((*at - start, *request, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed,
        [(Duration::from_secs(32), id, RequestFailure::Timeout)]
    );
    assert_eq!(sim.endpoint(ua).transaction_count(), (0, 0));
    // every copy reached the peer
    let mut n = 0;
    while sim.peer_recv(peer).is_some() {
        n += 1;
    }
    assert_eq!(n, 11);
}

#[test]
fn non_invite_client_proceeding_retransmits_every_t2_and_completes() {
    let (mut sim, ua, peer) = setup();
    let start = sim.now();
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Register), target(Transport::Udp))
    })
    .unwrap();
    let first = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    respond(&mut sim, peer, &first, 100);
    sim.run_until(start + Duration::from_millis(9_000));
    // 0, then E at 500 ms; the 100 arrives at 20 ms so from then on
    // Proceeding retransmits every T2 (4 s) after the next firing
    let got = sends(&sim, start, "REGISTER");
    assert_eq!(got, [0, 500, 4500, 8500]);
    let req = loop {
        let r = sim.peer_recv(peer).unwrap();
        if sim.peer_recv(peer).is_none() {
            break r;
        }
    };
    respond(&mut sim, peer, &req, 200);
    respond(&mut sim, peer, &req, 200); // a retransmitted final
    sim.run_for(Duration::from_secs(1));
    let codes = responses(&sim.take_events(ua));
    assert_eq!(codes, [100, 200], "the retransmitted 200 is absorbed");
    // Timer K = T4 on UDP keeps the transaction a while, then it goes
    assert_eq!(sim.endpoint(ua).transaction_count().0, 1);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.endpoint(ua).transaction_count().0, 0);
    assert_eq!(
        sends(&sim, start, "REGISTER").len(),
        4,
        "no retransmission after the final"
    );
}

#[test]
fn reliable_transport_never_retransmits() {
    let (mut sim, ua, peer) = setup();
    let start = sim.now();
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Options), target(Transport::Tcp))
    })
    .unwrap();
    let got = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(got.transport, Transport::Tcp);
    assert!(got.message.top_via().unwrap().transport() == "TCP");
    sim.run_for(Duration::from_secs(40));
    assert_eq!(sends(&sim, start, "OPTIONS"), [0]);
    let events = sim.take_events(ua);
    assert!(events.iter().any(|(at, e)| matches!(
        e,
        Event::RequestFailed {
            reason: RequestFailure::Timeout,
            ..
        }
    ) && *at - start == Duration::from_secs(32)));
}

#[test]
fn invite_client_timer_a_and_b() {
    let (mut sim, ua, _peer) = setup();
    let start = sim.now();
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Invite), target(Transport::Udp))
    })
    .unwrap();
    sim.run_for(Duration::from_secs(33));
    // Timer A doubles without cap: 0.5, 1, 2, 4, 8, 16 s
    assert_eq!(
        sends(&sim, start, "INVITE"),
        [0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    let events = sim.take_events(ua);
    let at = events.iter().find_map(|(at, e)| {
        matches!(
            e,
            Event::RequestFailed {
                reason: RequestFailure::Timeout,
                ..
            }
        )
        .then_some(*at - start)
    });
    assert_eq!(at, Some(Duration::from_secs(32)), "Timer B = 64·T1");
}

#[test]
fn invite_client_failure_is_acked_and_absorbed_then_timer_d() {
    let (mut sim, ua, peer) = setup();
    let start = sim.now();
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Invite), target(Transport::Udp))
    })
    .unwrap();
    let inv = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    respond(&mut sim, peer, &inv, 180);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sends(&sim, start, "INVITE"),
        [0],
        "a provisional stops Timer A"
    );
    respond(&mut sim, peer, &inv, 486);
    let ack = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ack.message.method(), Some(Method::Ack));
    // same branch as the INVITE, the response's To tag
    assert_eq!(
        ack.message.top_via().unwrap().branch(),
        inv.message.top_via().unwrap().branch()
    );
    assert_eq!(ack.message.to().unwrap().tag(), Some("b1"));
    assert_eq!(ack.message.cseq().seq, inv.message.cseq().seq);
    respond(&mut sim, peer, &inv, 486); // retransmitted failure
    let ack2 = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ack2.message.method(), Some(Method::Ack));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        responses(&sim.take_events(ua)),
        [180, 486],
        "the second 486 is not passed up"
    );
    assert_eq!(sim.endpoint(ua).transaction_count().0, 1);
    sim.run_for(Duration::from_secs(32));
    assert_eq!(sim.endpoint(ua).transaction_count().0, 0, "Timer D");
}

#[test]
fn invite_client_accepted_passes_every_2xx_up_rfc6026() {
    let (mut sim, ua, peer) = setup();
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Invite), target(Transport::Udp))
    })
    .unwrap();
    let inv = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    respond(&mut sim, peer, &inv, 200);
    sim.run_for(Duration::from_secs(2));
    respond(&mut sim, peer, &inv, 200);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(responses(&sim.take_events(ua)), [200, 200]);
    assert!(
        sim.peer_recv(peer).is_none(),
        "the transaction does not ACK a 2xx"
    );
    sim.run_for(Duration::from_secs(32));
    assert_eq!(sim.endpoint(ua).transaction_count().0, 0, "Timer M");
}

fn incoming(sim: &mut Sim, ua: NodeId) -> (siproam_core::ServerTxId, Message) {
    for (_, e) in sim.take_events(ua) {
        if let Event::IncomingRequest {
            tx: Some(tx),
            request,
            ..
        } = e
        {
            return (tx, request);
        }
    }
    panic!("no incoming request");
}

fn peer_invite(branch: &str) -> Message {
    MessageBuilder::request(Method::Invite, "sip:alice@192.0.2.10")
        .header("Via", &format!("SIP/2.0/UDP {PEER}:5060;branch={branch}"))
        .header("From", "<sip:bob@example.test>;tag=b9")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", "ist@example.test")
        .header("CSeq", "7 INVITE")
        .build()
        .unwrap()
}

fn ua_addr() -> SocketAddr {
    SocketAddr::new(ip(UA), 5060)
}

#[test]
fn invite_server_100_retransmission_timer_g_and_h() {
    let (mut sim, ua, peer) = setup();
    let inv = peer_invite("z9hG4bKist1");
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, inv.to_bytes());
    let trying = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(trying.message.status(), Some(100));
    // a retransmitted INVITE gets the 100 again and is not passed up twice
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, inv.to_bytes());
    let again = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(again.message.status(), Some(100));
    let (tx, req) = incoming(&mut sim, ua);
    assert!(sim.take_events(ua).is_empty());
    let busy = MessageBuilder::response_to(&req, 486, "Busy Here", Some("a7"))
        .build()
        .unwrap();
    let t0 = sim.now();
    sim.with_endpoint(ua, |ep, now| ep.respond(now, tx, busy))
        .unwrap();
    sim.run_for(Duration::from_secs(40));
    // Timer G: 500 ms doubling to T2; Timer H ends it at 32 s
    let times: Vec<u128> = sim
        .log()
        .iter()
        .filter(|e| e.from.ip() == ip(UA) && e.first_line.contains("486") && e.at >= t0)
        .map(|e| (e.at - t0).as_millis())
        .collect();
    assert_eq!(
        times,
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let timeouts: Vec<_> = sim
        .take_events(ua)
        .into_iter()
        .filter(|(_, e)| matches!(e, Event::AckTimeout { .. }))
        .map(|(at, _)| at - t0)
        .collect();
    assert_eq!(timeouts, [Duration::from_secs(32)]);
    assert_eq!(sim.endpoint(ua).transaction_count().1, 0);
}

#[test]
fn invite_server_ack_confirms_and_timer_i_ends_it() {
    let (mut sim, ua, peer) = setup();
    let inv = peer_invite("z9hG4bKist2");
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, inv.to_bytes());
    sim.run_for(Duration::from_millis(50));
    let (tx, req) = incoming(&mut sim, ua);
    let busy = MessageBuilder::response_to(&req, 486, "Busy Here", Some("a7"))
        .build()
        .unwrap();
    sim.with_endpoint(ua, |ep, now| ep.respond(now, tx, busy))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    let ack = MessageBuilder::request(Method::Ack, "sip:alice@192.0.2.10")
        .header(
            "Via",
            &format!("SIP/2.0/UDP {PEER}:5060;branch=z9hG4bKist2"),
        )
        .header("From", "<sip:bob@example.test>;tag=b9")
        .header("To", "<sip:alice@example.test>;tag=a7")
        .header("Call-ID", "ist@example.test")
        .header("CSeq", "7 ACK")
        .build()
        .unwrap();
    let t_ack = sim.now();
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, ack.to_bytes());
    sim.run_for(Duration::from_secs(3));
    let resent_after_ack = sim
        .log()
        .iter()
        .filter(|e| {
            e.from.ip() == ip(UA)
                && e.first_line.contains("486")
                && e.at > t_ack + Duration::from_millis(10)
        })
        .count();
    assert_eq!(resent_after_ack, 0, "the ACK stops Timer G");
    assert!(
        sim.take_events(ua).is_empty(),
        "the ACK of a failure stays in the transaction"
    );
    assert_eq!(sim.endpoint(ua).transaction_count().1, 1);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.endpoint(ua).transaction_count().1, 0, "Timer I = T4");
}

#[test]
fn invite_server_2xx_accepted_absorbs_retransmissions_timer_l() {
    let (mut sim, ua, peer) = setup();
    let inv = peer_invite("z9hG4bKist3");
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, inv.to_bytes());
    sim.run_for(Duration::from_millis(50));
    let (tx, req) = incoming(&mut sim, ua);
    let ok = MessageBuilder::response_to(&req, 200, "OK", Some("a7"))
        .build()
        .unwrap();
    sim.with_endpoint(ua, |ep, now| ep.respond(now, tx, ok))
        .unwrap();
    sim.run_for(Duration::from_millis(50));
    while sim.peer_recv(peer).is_some() {}
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, inv.to_bytes());
    sim.run_for(Duration::from_millis(50));
    assert!(
        sim.peer_recv(peer).is_none(),
        "RFC 6026: a retransmitted INVITE is absorbed in Accepted"
    );
    assert!(sim.take_events(ua).is_empty());
    sim.run_for(Duration::from_secs(32));
    assert_eq!(sim.endpoint(ua).transaction_count().1, 0, "Timer L");
}

fn peer_options(branch: &str) -> Message {
    MessageBuilder::request(Method::Options, "sip:alice@192.0.2.10")
        .header(
            "Via",
            &format!("SIP/2.0/UDP {PEER}:5060;branch={branch};rport"),
        )
        .header("From", "<sip:bob@example.test>;tag=b9")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", "nist@example.test")
        .header("CSeq", "3 OPTIONS")
        .build()
        .unwrap()
}

#[test]
fn non_invite_server_absorbs_then_repeats_final_until_timer_j() {
    let (mut sim, ua, peer) = setup();
    let opt = peer_options("z9hG4bKnist1");
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, opt.to_bytes());
    sim.run_for(Duration::from_millis(50));
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, opt.to_bytes());
    sim.run_for(Duration::from_millis(50));
    assert!(
        sim.peer_recv(peer).is_none(),
        "Trying absorbs retransmissions"
    );
    let (tx, req) = incoming(&mut sim, ua);
    // the request was stamped with where it came from
    assert_eq!(req.top_via().unwrap().rport(), Some(Some(5060)));
    assert_eq!(req.top_via().unwrap().received(), Some(PEER));
    sim.with_endpoint(ua, |ep, now| ep.respond_default(now, tx, &req))
        .unwrap();
    let ok = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ok.message.status(), Some(200));
    assert!(ok.message.has_token(HeaderName::Allow, "INVITE"));
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, opt.to_bytes());
    let again = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        again.message.status(),
        Some(200),
        "Completed repeats the final"
    );
    assert!(sim.take_events(ua).is_empty());
    sim.run_for(Duration::from_secs(32));
    assert_eq!(sim.endpoint(ua).transaction_count().1, 0, "Timer J = 64·T1");
    // now the same request is a new transaction
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, opt.to_bytes());
    sim.run_for(Duration::from_millis(50));
    assert!(matches!(
        sim.take_events(ua).as_slice(),
        [(_, Event::IncomingRequest { tx: Some(_), .. })]
    ));
}

#[test]
fn rfc2543_requests_match_without_a_magic_cookie() {
    let (mut sim, ua, peer) = setup();
    let opt = peer_options("oldbranch1");
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, opt.to_bytes());
    sim.run_for(Duration::from_millis(50));
    let (tx, req) = incoming(&mut sim, ua);
    sim.with_endpoint(ua, |ep, now| ep.respond_default(now, tx, &req))
        .unwrap();
    sim.run_for(Duration::from_millis(50));
    assert!(sim.peer_recv(peer).is_some());
    sim.peer_send(peer, peer_addr(), ua_addr(), Transport::Udp, opt.to_bytes());
    sim.run_for(Duration::from_millis(50));
    assert!(
        sim.take_events(ua).is_empty(),
        "matched by the RFC 2543 rules"
    );
    assert_eq!(
        sim.peer_recv(peer).map(|r| r.message.status()),
        Some(Some(200))
    );
}

#[test]
fn non_invite_server_over_tcp_ends_at_once() {
    let (mut sim, ua, peer) = setup();
    let opt = peer_options("z9hG4bKtcp1");
    sim.peer_send(
        peer,
        SocketAddr::new(ip(PEER), 41000),
        ua_addr(),
        Transport::Tcp,
        opt.to_bytes(),
    );
    sim.run_for(Duration::from_millis(50));
    let (tx, req) = incoming(&mut sim, ua);
    sim.with_endpoint(ua, |ep, now| ep.respond_default(now, tx, &req))
        .unwrap();
    let ok = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        ok.transport,
        Transport::Tcp,
        "the response goes back on the connection"
    );
    assert_eq!(ok.to.port(), 41000);
    assert_eq!(
        sim.endpoint(ua).transaction_count().1,
        0,
        "Timer J = 0 on reliable transports"
    );
}

#[test]
fn lossy_link_retransmissions_get_through() {
    let (mut sim, ua, peer) = setup();
    sim.set_link(
        ua,
        peer,
        Link {
            latency: Duration::from_millis(40),
            loss: 0.5,
            up: true,
        },
    );
    let start = sim.now();
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Options), target(Transport::Udp))
    })
    .unwrap();
    let got = sim
        .run_until_peer_receives(peer, Duration::from_secs(32))
        .unwrap();
    respond(&mut sim, peer, &got, 200);
    // the 200 may be lost too: answer every retransmission until done
    for _ in 0..20 {
        sim.run_for(Duration::from_secs(2));
        while let Some(r) = sim.peer_recv(peer) {
            respond(&mut sim, peer, &r, 200);
        }
    }
    let events = sim.take_events(ua);
    assert_eq!(responses(&events), [200], "exactly one 200 reaches the TU");
    let lost = sim.log().iter().filter(|e| e.fate == Fate::Lost).count();
    assert!(lost > 0, "the seeded loss dropped something");
    assert!(sends(&sim, start, "OPTIONS").len() > 1);
}

#[test]
fn a_dead_stream_fails_its_transactions() {
    let (mut sim, ua, peer) = setup();
    let id = sim
        .with_endpoint(ua, |ep, now| {
            ep.send_request(now, request(Method::Options), target(Transport::Tcp))
        })
        .unwrap();
    let got = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    sim.peer_close(got.conn.unwrap());
    let events = sim.take_events(ua);
    assert!(events.iter().any(|(_, e)| matches!(e, Event::RequestFailed { request, reason: RequestFailure::Transport(FlowCloseReason::PeerClosed) } if *request == id)));
    assert!(events
        .iter()
        .any(|(_, e)| matches!(e, Event::FlowClosed { .. })));
    assert_eq!(sim.endpoint(ua).transaction_count().0, 0);
}

#[test]
fn unreachable_stream_fails_at_once() {
    let (mut sim, ua, peer) = setup();
    sim.set_link(
        ua,
        peer,
        Link {
            up: false,
            ..Link::default()
        },
    );
    let id = sim
        .with_endpoint(ua, |ep, now| {
            ep.send_request(now, request(Method::Options), target(Transport::Tcp))
        })
        .unwrap();
    let events = sim.take_events(ua);
    assert!(events.iter().any(|(_, e)| matches!(e, Event::RequestFailed { request, reason: RequestFailure::Transport(FlowCloseReason::ConnectFailed) } if *request == id)));
}

#[test]
fn stray_and_broken_messages() {
    let (mut sim, ua, peer) = setup();
    // a response matching no transaction is dropped silently
    let stray = MessageBuilder::response(200, "OK")
        .header("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnothing")
        .header("From", "<sip:a@h>;tag=1")
        .header("To", "<sip:b@h>;tag=2")
        .header("Call-ID", "stray@h")
        .header("CSeq", "1 OPTIONS")
        .build()
        .unwrap();
    sim.peer_send(
        peer,
        peer_addr(),
        ua_addr(),
        Transport::Udp,
        stray.to_bytes(),
    );
    // a request with a bad header gets a stateless 400
    let bad = "OPTIONS sip:alice@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKbad\r\nFrom: <sip:b@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: bad@h\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 300\r\nContent-Length: 0\r\n\r\n";
    sim.peer_send(
        peer,
        peer_addr(),
        ua_addr(),
        Transport::Udp,
        Bytes::from_static(bad.as_bytes()),
    );
    // garbage is dropped and reported
    sim.peer_send(
        peer,
        peer_addr(),
        ua_addr(),
        Transport::Udp,
        Bytes::from_static(b"SIP/2.0 999999 nope\r\n\r\n"),
    );
    sim.run_for(Duration::from_millis(100));
    let r = sim.peer_recv(peer).unwrap();
    assert_eq!(r.message.status(), Some(400));
    assert!(sim.peer_recv(peer).is_none());
    let events = sim.take_events(ua);
    assert_eq!(
        events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Dropped { .. }))
            .count(),
        1
    );
    assert!(!events
        .iter()
        .any(|(_, e)| matches!(e, Event::IncomingRequest { .. } | Event::Response { .. })));
}

#[test]
fn timer_b_takes_virtual_not_real_time() {
    // many 32-second transactions in one test: only virtual time passes
    let (mut sim, ua, _peer) = setup();
    for _ in 0..100 {
        sim.with_endpoint(ua, |ep, now| {
            ep.send_request(now, request(Method::Invite), target(Transport::Udp))
        })
        .unwrap();
    }
    sim.run_for(Duration::from_secs(33));
    let timeouts = sim
        .take_events(ua)
        .iter()
        .filter(|(_, e)| matches!(e, Event::RequestFailed { .. }))
        .count();
    assert_eq!(timeouts, 100);
    assert_eq!(sim.elapsed(), Duration::from_secs(33));
}

/// A dual-stack endpoint (IPv4 listen points first) sending to an IPv6
/// peer with no local address given (a proxy forwarding to a binding in
/// IPv6) puts an IPv6 sent-by in its Via and sends from IPv6: an IPv4 Via
/// would send the answer where the request did not come from.
/// (Regression: the first listen point of the transport was used.)
#[test]
fn the_via_of_a_request_to_ipv6_names_our_ipv6_address() {
    const UA6: &str = "2001:db8::10";
    const PEER6: &str = "2001:db8::20";
    let mut sim = Sim::new(Instant::now(), 5);
    let ua = sim.add_endpoint("ua", &[ip(UA), ip(UA6)], Config::default());
    let peer = sim.add_peer("peer", &[ip(PEER6)]);
    for transport in [Transport::Udp, Transport::Tcp] {
        let target = Target {
            transport,
            remote: SocketAddr::new(ip(PEER6), 5060),
            local: None,
            server_name: None,
        };
        sim.with_endpoint(ua, |ep, now| {
            ep.send_request(now, request(Method::Options), target)
        })
        .unwrap();
        let r = sim
            .run_until_peer_receives(peer, Duration::from_secs(1))
            .expect("the OPTIONS");
        assert_eq!(r.from.ip(), ip(UA6), "{transport:?}");
        let via = r.message.top_via().unwrap();
        assert_eq!(
            via.host(),
            siproam_sip::Host::V6(UA6.parse().unwrap()),
            "{transport:?}"
        );
        assert_eq!(via.port(), Some(5060));
    }
}
