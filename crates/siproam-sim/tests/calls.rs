//! Calls (INVITE dialogs) between two sans-IO user agents in the
//! simulator: answer, CANCEL (and CANCEL crossing the 200), BYE, lost 2xx
//! and ACK, glare, re-INVITE with a new address, UPDATE in an early dialog,
//! 481 for unknown dialogs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::{
    CallEnd, CallEndReason, CallEndedBy, CallEvent, CallId, CallMove, CallMoveAction, CallState,
    Config, CoreError, Event, InviteSpec, Target, Transport,
};
mod support;

use siproam_sim::{Link, NodeId, Sim};
use siproam_sip::{HeaderName, MessageBuilder, Method};
use support::sent_since;

const ALICE: &str = "192.0.2.10";
const BOB: &str = "192.0.2.20";
const BOB2: &str = "198.51.100.20";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sdp(tag: &str) -> Bytes {
    Bytes::from(format!("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns={tag}\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"))
}

struct Pair {
    sim: Sim,
    alice: NodeId,
    bob: NodeId,
}

fn pair(transport: Transport) -> Pair {
    let _ = transport;
    pair_with(&[ip(ALICE)])
}

/// Alice on `alice_addrs`, Bob on BOB and BOB2.
fn pair_with(alice_addrs: &[IpAddr]) -> Pair {
    let mut sim = Sim::new(Instant::now(), 3);
    let alice = sim.add_endpoint(
        "alice",
        alice_addrs,
        Config {
            seed: 1,
            ..Config::default()
        },
    );
    let bob = sim.add_endpoint(
        "bob",
        &[ip(BOB), ip(BOB2)],
        Config {
            seed: 2,
            ..Config::default()
        },
    );
    Pair { sim, alice, bob }
}

fn call(p: &mut Pair, transport: Transport) -> CallId {
    let spec = InviteSpec {
        uri: format!("sip:bob@{BOB}"),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport,
            remote: SocketAddr::new(ip(BOB), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    p.sim
        .with_endpoint(p.alice, |ep, now| ep.invite(now, spec))
        .unwrap()
}

/// (state, code, has body) of a node's call events, in order.
fn states(sim: &mut Sim, node: NodeId) -> Vec<(CallState, Option<u16>)> {
    sim.take_events(node)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Call(CallEvent::State { state, code, .. }) => Some((state, code)),
            _ => None,
        })
        .collect()
}

fn incoming(sim: &mut Sim, node: NodeId) -> CallId {
    let evs = sim.take_events(node);
    evs.iter()
        .find_map(|(_, e)| match e {
            Event::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
        .expect("an incoming call")
}

#[test]
fn a_call_is_answered_confirmed_and_hung_up_over_udp_and_tcp() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut p = pair(transport);
        let a = call(&mut p, transport);
        p.sim.run_for(Duration::from_millis(100));
        let b = incoming(&mut p.sim, p.bob);
        p.sim
            .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 180, None))
            .unwrap();
        p.sim.run_for(Duration::from_millis(100));
        assert_eq!(
            states(&mut p.sim, p.alice),
            [(CallState::Calling, None), (CallState::Ringing, Some(180))]
        );
        p.sim
            .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
            .unwrap();
        p.sim.run_for(Duration::from_millis(100));
        let alice_evs = p.sim.take_events(p.alice);
        let answer = alice_evs.iter().find_map(|(_, e)| match e {
            Event::Call(CallEvent::State {
                state: CallState::Confirmed,
                body,
                ..
            }) => body.clone(),
            _ => None,
        });
        assert_eq!(answer, Some(sdp("answer")), "the answer reaches the caller");
        assert_eq!(
            states(&mut p.sim, p.bob),
            [
                (CallState::Ringing, Some(180)),
                (CallState::Confirmed, Some(200))
            ],
            "bob confirms on the ACK"
        );
        p.sim
            .with_endpoint(p.alice, |ep, now| ep.hang_up(now, a))
            .unwrap();
        p.sim.run_for(Duration::from_millis(100));
        assert_eq!(states(&mut p.sim, p.bob), [(CallState::Disconnected, None)]);
        assert_eq!(
            states(&mut p.sim, p.alice),
            [(CallState::Disconnected, None)]
        );
        assert_eq!(p.sim.endpoint(p.alice).call_count(), 0);
        assert_eq!(p.sim.endpoint(p.bob).call_count(), 0);
        // no 2xx retransmission after the ACK
        p.sim.run_for(Duration::from_secs(40));
        let oks = p
            .sim
            .log()
            .iter()
            .filter(|e| e.from.ip() == ip(BOB) && e.first_line == "SIP/2.0 200 OK")
            .count();
        assert_eq!(
            oks, 2,
            "one 200 for the INVITE, one for the BYE ({transport})"
        );
    }
}

#[test]
fn cancel_before_the_answer_ends_both_sides_487() {
    let mut p = pair(Transport::Udp);
    let a = call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 180, None))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    p.sim.take_events(p.alice);
    p.sim
        .with_endpoint(p.alice, |ep, now| ep.hang_up(now, a))
        .unwrap();
    p.sim.run_for(Duration::from_millis(200));
    assert_eq!(
        states(&mut p.sim, p.bob),
        [
            (CallState::Ringing, Some(180)),
            (CallState::Disconnected, Some(487))
        ]
    );
    assert_eq!(
        states(&mut p.sim, p.alice),
        [(CallState::Disconnected, Some(487))]
    );
    p.sim.run_for(Duration::from_secs(40));
    assert_eq!(
        p.sim.endpoint(p.bob).transaction_count(),
        (0, 0),
        "the 487 was ACKed"
    );
}

#[test]
fn cancel_crossing_the_200_leaves_a_call_that_is_then_ended() {
    let mut p = pair(Transport::Udp);
    let a = call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    // both at the same instant: the 200 and the CANCEL cross on the wire
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    p.sim
        .with_endpoint(p.alice, |ep, now| ep.hang_up(now, a))
        .unwrap();
    p.sim.run_for(Duration::from_millis(300));
    let bob = states(&mut p.sim, p.bob);
    assert!(
        bob.contains(&(CallState::Confirmed, Some(200))),
        "the CANCEL came too late for bob: {bob:?}"
    );
    assert_eq!(
        bob.last(),
        Some(&(CallState::Disconnected, None)),
        "alice BYEs the call her CANCEL missed"
    );
    let alice = states(&mut p.sim, p.alice);
    assert_eq!(alice.last().map(|s| s.0), Some(CallState::Disconnected));
    assert_eq!(
        p.sim.endpoint(p.alice).call_count() + p.sim.endpoint(p.bob).call_count(),
        0
    );
}

#[test]
fn lost_2xx_is_retransmitted_until_the_ack() {
    let mut p = pair(Transport::Udp);
    call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    p.sim.set_link(
        p.alice,
        p.bob,
        Link {
            up: false,
            ..Link::default()
        },
    );
    let t0 = p.sim.now();
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    p.sim.run_for(Duration::from_millis(1200));
    p.sim.set_link(p.alice, p.bob, Link::default());
    p.sim.run_for(Duration::from_secs(3));
    // T1 doubling: 0, 0.5, 1.5 s; the one at 1.5 s gets through and is ACKed
    let sends: Vec<u128> = p
        .sim
        .log()
        .iter()
        .filter(|e| e.from.ip() == ip(BOB) && e.first_line == "SIP/2.0 200 OK" && e.at >= t0)
        .map(|e| (e.at - t0).as_millis())
        .collect();
    assert_eq!(sends, [0, 500, 1500]);
    assert_eq!(
        states(&mut p.sim, p.bob),
        [(CallState::Confirmed, Some(200))]
    );
}

#[test]
fn no_ack_at_all_ends_the_call_with_a_bye_after_64_t1() {
    let mut p = pair(Transport::Udp);
    call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    p.sim.set_link(
        p.alice,
        p.bob,
        Link {
            up: false,
            ..Link::default()
        },
    );
    let t0 = p.sim.now();
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, None))
        .unwrap();
    p.sim.run_for(Duration::from_secs(40));
    let evs: Vec<_> = p
        .sim
        .take_events(p.bob)
        .into_iter()
        .filter_map(|(at, e)| match e {
            Event::Call(CallEvent::State { state, .. }) => Some((at - t0, state)),
            _ => None,
        })
        .collect();
    assert_eq!(evs, [(Duration::from_secs(32), CallState::Disconnected)]);
    assert!(p
        .sim
        .log()
        .iter()
        .any(|e| e.from.ip() == ip(BOB) && e.first_line.starts_with("BYE ")));
}

fn confirmed(transport: Transport) -> (Pair, CallId, CallId) {
    let mut p = pair(transport);
    let a = call(&mut p, transport);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    p.sim.take_events(p.alice);
    p.sim.take_events(p.bob);
    (p, a, b)
}

#[test]
fn a_confirmed_call_is_not_answered_again() {
    let (mut p, _a, b) = confirmed(Transport::Udp);
    let t0 = p.sim.now();
    // the INVITE's server transaction still lives (Timer L), but the call
    // has no INVITE waiting for an answer any more
    for code in [200, 486] {
        let again = p
            .sim
            .with_endpoint(p.bob, |ep, now| ep.answer(now, b, code, None));
        assert_eq!(again, Err(CoreError::InvalidState), "{code}");
    }
    p.sim.run_for(Duration::from_secs(40));
    let sent: Vec<_> = p
        .sim
        .log()
        .iter()
        .filter(|e| e.from.ip() == ip(BOB) && e.at >= t0)
        .map(|e| e.first_line.clone())
        .collect();
    assert!(sent.is_empty(), "{sent:?}");
    assert_eq!(
        p.sim.with_endpoint(p.bob, |ep, _| ep.call_state(b)),
        Some(CallState::Confirmed)
    );
}

fn offers(sim: &mut Sim, node: NodeId) -> Vec<(CallId, bool)> {
    sim.take_events(node)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Call(CallEvent::Offer { call, update, .. }) => Some((call, update)),
            _ => None,
        })
        .collect()
}

#[test]
fn reinvite_with_a_new_address_moves_the_remote_target() {
    let (mut p, a, b) = confirmed(Transport::Udp);
    // bob moves to another address and tells alice with a re-INVITE
    p.sim
        .with_endpoint(p.bob, |ep, _| {
            ep.set_call_contact(b, SocketAddr::new(ip(BOB2), 5060))
        })
        .unwrap();
    p.sim
        .with_endpoint(p.bob, |ep, now| {
            ep.refresh(now, b, false, Some(sdp("moved")))
        })
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    assert_eq!(offers(&mut p.sim, p.alice), [(a, false)]);
    p.sim
        .with_endpoint(p.alice, |ep, now| ep.answer_offer(now, a, sdp("re-answer")))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    let answered = p
        .sim
        .take_events(p.bob)
        .into_iter()
        .any(|(_, e)| matches!(e, Event::Call(CallEvent::Answer { body: Some(_), .. })));
    assert!(answered);
    // alice's next request goes to bob's new address
    p.sim
        .with_endpoint(p.alice, |ep, now| ep.hang_up(now, a))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    let bye = p
        .sim
        .log()
        .iter()
        .find(|e| e.first_line.starts_with("BYE "))
        .unwrap();
    assert_eq!(bye.to.ip(), ip(BOB2), "the BYE follows the new Contact");
    assert!(bye.first_line.contains(BOB2));
    assert_eq!(states(&mut p.sim, p.bob), [(CallState::Disconnected, None)]);
}

#[test]
fn glare_both_get_491_and_retry_apart() {
    let (mut p, a, b) = confirmed(Transport::Udp);
    p.sim
        .with_endpoint(p.alice, |ep, now| {
            ep.refresh(now, a, false, Some(sdp("a2")))
        })
        .unwrap();
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.refresh(now, b, false, Some(sdp("b2"))))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    let four91 = p
        .sim
        .log()
        .iter()
        .filter(|e| e.first_line.starts_with("SIP/2.0 491"))
        .count();
    assert_eq!(four91, 2, "each side refuses the other's offer");
    // the retries are spaced (owner 2.1–4 s, other 0–2 s): answer whatever
    // offer comes, until both have had an answer
    let mut answers = (0, 0);
    for _ in 0..50 {
        p.sim.run_for(Duration::from_millis(100));
        for (node, call) in [(p.alice, a), (p.bob, b)] {
            for (_, e) in p.sim.take_events(node) {
                match e {
                    Event::Call(CallEvent::Offer { .. }) => {
                        p.sim
                            .with_endpoint(node, |ep, now| ep.answer_offer(now, call, sdp("ok")))
                            .unwrap();
                    }
                    Event::Call(CallEvent::Answer { .. }) if node == p.alice => answers.0 += 1,
                    Event::Call(CallEvent::Answer { .. }) => answers.1 += 1,
                    _ => {}
                }
            }
        }
    }
    assert_eq!(
        answers,
        (1, 1),
        "both re-INVITEs succeed after the back-off"
    );
    assert_eq!(
        p.sim.endpoint(p.alice).call_state(a),
        Some(CallState::Confirmed)
    );
}

#[test]
fn update_in_an_early_dialog() {
    let mut p = pair(Transport::Udp);
    let a = call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 180, None))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    p.sim.take_events(p.alice);
    // no re-INVITE before the dialog is confirmed (RFC 3311 §1): UPDATE
    assert_eq!(
        p.sim
            .with_endpoint(p.alice, |ep, now| ep.refresh(now, a, false, Some(sdp("x")))),
        Err(siproam_core::CoreError::InvalidState)
    );
    p.sim
        .with_endpoint(p.alice, |ep, now| {
            ep.refresh(now, a, true, Some(sdp("early-update")))
        })
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    assert_eq!(offers(&mut p.sim, p.bob), [(b, true)]);
    p.sim
        .with_endpoint(p.bob, |ep, now| {
            ep.answer_offer(now, b, sdp("early-answer"))
        })
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    let got = p
        .sim
        .take_events(p.alice)
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::Call(CallEvent::Answer { body, .. }) => body,
            _ => None,
        });
    assert_eq!(got, Some(sdp("early-answer")));
    assert_eq!(
        p.sim.endpoint(p.alice).call_state(a),
        Some(CallState::Ringing),
        "still early"
    );
}

#[test]
fn unknown_dialogs_get_481() {
    let (mut p, _a, _b) = confirmed(Transport::Udp);
    let peer = p.sim.add_peer("stranger", &[ip("192.0.2.99")]);
    let bye = MessageBuilder::request(Method::Bye, &format!("sip:bob@{BOB}"))
        .header("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKstranger")
        .header("From", "<sip:x@h>;tag=x1")
        .header("To", "<sip:bob@h>;tag=nope")
        .header("Call-ID", "unknown@h")
        .header("CSeq", "2 BYE")
        .build()
        .unwrap();
    p.sim.peer_send(
        peer,
        SocketAddr::new(ip("192.0.2.99"), 5060),
        SocketAddr::new(ip(BOB), 5060),
        Transport::Udp,
        bye.to_bytes(),
    );
    let r = p
        .sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(r.message.status(), Some(481));
}

fn peer_invite_100rel() -> siproam_sip::Message {
    MessageBuilder::request(Method::Invite, &format!("sip:bob@{BOB}"))
        .header("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKrel1")
        .header("From", "<sip:carol@example.test>;tag=c1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "rel@carol")
        .header("CSeq", "1 INVITE")
        .header("Contact", "<sip:carol@192.0.2.99:5060>")
        .header("Require", "100rel")
        .build()
        .unwrap()
}

#[test]
fn a_peer_that_requires_100rel_gets_reliable_provisionals_until_its_prack() {
    let mut p = pair(Transport::Udp);
    let peer = p.sim.add_peer("carol", &[ip("192.0.2.99")]);
    let from = SocketAddr::new(ip("192.0.2.99"), 5060);
    let bob_addr = SocketAddr::new(ip(BOB), 5060);
    p.sim.peer_send(
        peer,
        from,
        bob_addr,
        Transport::Udp,
        peer_invite_100rel().to_bytes(),
    );
    p.sim.run_for(Duration::from_millis(50));
    let b = incoming(&mut p.sim, p.bob);
    while p.sim.peer_recv(peer).is_some() {} // the 100
    let t0 = p.sim.now();
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 180, None))
        .unwrap();
    p.sim.run_for(Duration::from_millis(1600));
    let mut ringing = Vec::new();
    while let Some(r) = p.sim.peer_recv(peer) {
        ringing.push(r);
    }
    let times: Vec<u128> = ringing.iter().map(|r| (r.at - t0).as_millis()).collect();
    assert_eq!(
        times,
        [10, 510, 1510],
        "retransmitted with T1 doubling until the PRACK"
    );
    let r = &ringing[0].message;
    assert!(r.has_token(siproam_sip::HeaderName::Require, "100rel"));
    assert_eq!(r.rseq(), Some(Ok(1)));
    let tag = r.to().unwrap().tag().unwrap().to_owned();
    let prack = MessageBuilder::request(Method::Prack, &format!("sip:bob@{BOB}:5060"))
        .header("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKprack1")
        .header("From", "<sip:carol@example.test>;tag=c1")
        .header("To", &format!("<sip:bob@example.test>;tag={tag}"))
        .header("Call-ID", "rel@carol")
        .header("CSeq", "2 PRACK")
        .header("RAck", "1 1 INVITE")
        .build()
        .unwrap();
    p.sim
        .peer_send(peer, from, bob_addr, Transport::Udp, prack.to_bytes());
    let ok = p
        .sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        (ok.message.status(), ok.message.cseq().method),
        (Some(200), Method::Prack)
    );
    p.sim.run_for(Duration::from_secs(10));
    assert!(
        p.sim.peer_recv(peer).is_none(),
        "no more 180 after the PRACK"
    );
}

#[test]
fn we_prack_a_reliable_provisional_once() {
    let mut p = pair(Transport::Udp);
    let peer = p.sim.add_peer("callee", &[ip("192.0.2.98")]);
    let spec = InviteSpec {
        uri: "sip:callee@192.0.2.98".into(),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Udp,
            remote: SocketAddr::new(ip("192.0.2.98"), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    p.sim
        .with_endpoint(p.alice, |ep, now| ep.invite(now, spec))
        .unwrap();
    let inv = p
        .sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert!(inv
        .message
        .has_token(siproam_sip::HeaderName::Supported, "100rel"));
    let reliable = MessageBuilder::response_to(&inv.message, 183, "Session Progress", Some("cal1"))
        .header("Contact", "<sip:callee@192.0.2.98:5060>")
        .header("Require", "100rel")
        .header("RSeq", "7")
        .build()
        .unwrap();
    p.sim.peer_reply(peer, &inv, reliable.to_bytes());
    let prack = p
        .sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(prack.message.method(), Some(Method::Prack));
    assert_eq!(prack.message.rack().unwrap().unwrap().rseq, 7);
    assert_eq!(
        prack.message.rack().unwrap().unwrap().cseq.seq,
        inv.message.cseq().seq
    );
    assert_eq!(prack.message.to().unwrap().tag(), Some("cal1"));
    assert_eq!(
        prack.message.request_uri_str(),
        Some("sip:callee@192.0.2.98:5060"),
        "the early dialog's target"
    );
    // the same 183 again: no second PRACK
    p.sim.peer_reply(peer, &inv, reliable.to_bytes());
    p.sim.run_for(Duration::from_millis(200));
    let mut more = Vec::new();
    while let Some(r) = p.sim.peer_recv(peer) {
        more.push(r.message.method().map(|m| m.as_str().to_owned()));
    }
    assert!(!more.contains(&Some("PRACK".to_owned())), "{more:?}");
}

#[test]
fn a_reinvite_without_an_offer_gets_ours_in_the_200_and_the_answer_in_the_ack() {
    let mut p = pair(Transport::Udp);
    let peer = p.sim.add_peer("carol", &[ip("192.0.2.99")]);
    let from = SocketAddr::new(ip("192.0.2.99"), 5060);
    let bob_addr = SocketAddr::new(ip(BOB), 5060);
    // a call from carol to bob, answered and ACKed
    let mut inv = peer_invite_100rel();
    inv.remove_header("Require").unwrap();
    p.sim
        .peer_send(peer, from, bob_addr, Transport::Udp, inv.to_bytes());
    p.sim.run_for(Duration::from_millis(50));
    let b = incoming(&mut p.sim, p.bob);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("first"))))
        .unwrap();
    let ok = loop {
        let r = p
            .sim
            .run_until_peer_receives(peer, Duration::from_secs(1))
            .unwrap();
        if r.message.status() == Some(200) {
            break r;
        }
    };
    let tag = ok.message.to().unwrap().tag().unwrap().to_owned();
    let in_dialog = |method: Method, cseq: u32, branch: &str, body: Option<Bytes>| {
        let mut b = MessageBuilder::request(method, &format!("sip:bob@{BOB}:5060"))
            .header(
                "Via",
                &format!("SIP/2.0/UDP 192.0.2.99:5060;branch={branch}"),
            )
            .header("From", "<sip:carol@example.test>;tag=c1")
            .header("To", &format!("<sip:bob@example.test>;tag={tag}"))
            .header("Call-ID", "rel@carol")
            .header("CSeq", &format!("{cseq} {method}"))
            .header("Contact", "<sip:carol@192.0.2.99:5060>");
        if let Some(body) = body {
            b = b.body("application/sdp", body);
        }
        b.build().unwrap().to_bytes()
    };
    p.sim.peer_send(
        peer,
        from,
        bob_addr,
        Transport::Udp,
        in_dialog(Method::Ack, 1, "z9hG4bKack1", None),
    );
    p.sim.run_for(Duration::from_millis(50));
    p.sim.take_events(p.bob);
    // the re-INVITE without SDP
    p.sim.peer_send(
        peer,
        from,
        bob_addr,
        Transport::Udp,
        in_dialog(Method::Invite, 2, "z9hG4bKre1", None),
    );
    p.sim.run_for(Duration::from_millis(50));
    let wanted = p
        .sim
        .take_events(p.bob)
        .into_iter()
        .any(|(_, e)| matches!(e, Event::Call(CallEvent::OfferWanted { call }) if call == b));
    assert!(wanted, "bob is asked for an offer");
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer_offer(now, b, sdp("bob-offer")))
        .unwrap();
    let ok2 = loop {
        let r = p
            .sim
            .run_until_peer_receives(peer, Duration::from_secs(1))
            .unwrap();
        if r.message.status() == Some(200) && r.message.cseq().seq == 2 {
            break r;
        }
    };
    assert_eq!(ok2.message.body(), &sdp("bob-offer"));
    p.sim.peer_send(
        peer,
        from,
        bob_addr,
        Transport::Udp,
        in_dialog(Method::Ack, 2, "z9hG4bKack2", Some(sdp("carol-answer"))),
    );
    p.sim.run_for(Duration::from_millis(50));
    let answer = p
        .sim
        .take_events(p.bob)
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::Call(CallEvent::Answer { body, .. }) => body,
            _ => None,
        });
    assert_eq!(
        answer,
        Some(sdp("carol-answer")),
        "the answer from the ACK reaches bob"
    );
    assert_eq!(
        p.sim.endpoint(p.bob).call_state(b),
        Some(CallState::Confirmed)
    );
}

/// A re-INVITE sent over a path that then dies, with or without a network
/// change announced first: the alice-side call events.
fn reinvite_on_a_dead_path(announce_change: bool) -> Vec<CallEvent> {
    let (mut p, a, _b) = confirmed(Transport::Udp);
    if announce_change {
        p.sim
            .with_endpoint(p.alice, |ep, now| ep.begin_network_change(now));
    }
    p.sim
        .with_endpoint(p.alice, |ep, now| {
            ep.refresh(now, a, false, Some(sdp("re")))
        })
        .unwrap();
    p.sim.set_link(
        p.alice,
        p.bob,
        Link {
            up: false,
            ..Link::default()
        },
    );
    // past Timer B (64·T1)
    p.sim.run_for(Duration::from_secs(40));
    p.sim
        .take_events(p.alice)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Call(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn a_refresh_timing_out_during_a_network_change_does_not_end_the_call() {
    let evs = reinvite_on_a_dead_path(true);
    assert!(
        evs.iter()
            .any(|e| matches!(e, CallEvent::RefreshFailed { code: 408, .. })),
        "{evs:?}"
    );
    assert!(
        !evs.iter().any(|e| matches!(
            e,
            CallEvent::State {
                state: CallState::Disconnected,
                ..
            }
        )),
        "{evs:?}"
    );
    // outside a change, RFC 5057: the timed-out re-INVITE ends the call
    let evs = reinvite_on_a_dead_path(false);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            CallEvent::State {
                state: CallState::Disconnected,
                code: Some(408),
                ..
            }
        )),
        "{evs:?}"
    );
    // and it says we gave up on an unanswered request
    assert!(
        evs.iter().any(|e| matches!(
            e,
            CallEvent::State {
                state: CallState::Disconnected,
                end: Some(CallEnd {
                    by: CallEndedBy::Local,
                    reason: CallEndReason::Timeout,
                }),
                ..
            }
        )),
        "{evs:?}"
    );
}

#[test]
fn whether_the_peer_allows_update_is_learnt_from_its_allow_header() {
    // our own endpoints list UPDATE in Allow on the INVITE and the 2xx
    let (mut p, a, b) = confirmed(Transport::Udp);
    assert!(p
        .sim
        .with_endpoint(p.alice, |ep, _| ep.call_allows_update(a)));
    assert!(p.sim.with_endpoint(p.bob, |ep, _| ep.call_allows_update(b)));
    // a peer whose INVITE has no Allow: not assumed
    let peer = p.sim.add_peer("carol", &[ip("192.0.2.99")]);
    let invite = MessageBuilder::request(Method::Invite, &format!("sip:bob@{BOB}"))
        .header("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKnoallow")
        .header("From", "<sip:carol@example.test>;tag=c1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "noallow@carol")
        .header("CSeq", "1 INVITE")
        .header("Contact", "<sip:carol@192.0.2.99:5060>")
        .build()
        .unwrap();
    p.sim.peer_send(
        peer,
        SocketAddr::new(ip("192.0.2.99"), 5060),
        SocketAddr::new(ip(BOB), 5060),
        Transport::Udp,
        invite.to_bytes(),
    );
    p.sim.run_for(Duration::from_millis(50));
    let c = incoming(&mut p.sim, p.bob);
    assert!(!p.sim.with_endpoint(p.bob, |ep, _| ep.call_allows_update(c)));
    // one that lists INVITE, ACK, BYE only: not allowed either
    let invite = MessageBuilder::request(Method::Invite, &format!("sip:bob@{BOB}"))
        .header("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKnoupd")
        .header("From", "<sip:carol@example.test>;tag=c2")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "noupdate@carol")
        .header("CSeq", "1 INVITE")
        .header("Contact", "<sip:carol@192.0.2.99:5060>")
        .header("Allow", "INVITE, ACK, BYE, UPDATES")
        .build()
        .unwrap();
    p.sim.peer_send(
        peer,
        SocketAddr::new(ip("192.0.2.99"), 5060),
        SocketAddr::new(ip(BOB), 5060),
        Transport::Udp,
        invite.to_bytes(),
    );
    p.sim.run_for(Duration::from_millis(50));
    let d = incoming(&mut p.sim, p.bob);
    assert!(!p.sim.with_endpoint(p.bob, |ep, _| ep.call_allows_update(d)));
}

/// IPv4 → IPv6 mid-call through a record-routing proxy: with the call's
/// next hop set to the proxy's IPv6 address, the re-INVITE (and its ACK)
/// go there from our IPv6 address, with the route set, Request-URI and
/// dialog unchanged, and the new Contact and Via in IPv6.
#[test]
fn a_call_moved_to_the_other_family_sends_to_the_proxys_address_in_it() {
    const ALICE6: &str = "2001:db8::10";
    const PROXY: &str = "192.0.2.30";
    const PROXY6: &str = "2001:db8::30";
    let mut sim = Sim::new(Instant::now(), 3);
    let alice = sim.add_endpoint(
        "alice",
        &[ip(ALICE), ip(ALICE6)],
        Config {
            seed: 1,
            ..Config::default()
        },
    );
    // the proxy, answering as bob would behind it
    let proxy = sim.add_peer("proxy", &[ip(PROXY), ip(PROXY6)]);
    let spec = InviteSpec {
        uri: format!("sip:bob@{BOB}"),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Udp,
            remote: SocketAddr::new(ip(PROXY), 5060),
            local: Some(SocketAddr::new(ip(ALICE), 5060)),
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    let a = sim
        .with_endpoint(alice, |ep, now| ep.invite(now, spec))
        .unwrap();
    let invite = sim
        .run_until_peer_receives(proxy, Duration::from_secs(1))
        .unwrap();
    let ok = MessageBuilder::response_to(&invite.message, 200, "OK", Some("bob1"))
        .header("Record-Route", &format!("<sip:{PROXY}:5060;lr>"))
        .header("Contact", &format!("<sip:bob@{BOB}:5060>"))
        .body("application/sdp", sdp("answer"))
        .build()
        .unwrap();
    sim.peer_reply(proxy, &invite, ok.to_bytes());
    let ack = sim
        .run_until_peer_receives(proxy, Duration::from_secs(1))
        .unwrap();
    assert!(ack.message.method().is_some_and(|m| m.as_str() == "ACK"));
    assert_eq!(ack.to.ip(), ip(PROXY));
    assert_eq!(
        sim.endpoint(alice).call_next_hop(a).map(|t| t.remote),
        Some(SocketAddr::new(ip(PROXY), 5060))
    );

    let contact6 = SocketAddr::new(ip(ALICE6), 5060);
    let hop6 = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(PROXY6), 5060),
        local: None,
        server_name: None,
    };
    sim.with_endpoint(alice, |ep, now| {
        ep.set_call_contact(a, contact6)?;
        ep.set_call_next_hop(a, Some(hop6))?;
        ep.refresh(now, a, false, Some(sdp("moved")))
    })
    .unwrap();
    let reinvite = sim
        .run_until_peer_receives(proxy, Duration::from_secs(1))
        .unwrap();
    let m = &reinvite.message;
    assert_eq!(reinvite.to, hop6.remote, "to the proxy's IPv6 address");
    assert_eq!(reinvite.from.ip(), ip(ALICE6), "from our IPv6 address");
    assert!(m.method().is_some_and(|m| m.as_str() == "INVITE"));
    assert_eq!(
        m.request_uri_str(),
        Some(format!("sip:bob@{BOB}:5060").as_str())
    );
    assert_eq!(
        m.header(HeaderName::Route),
        Some(format!("<sip:{PROXY}:5060;lr>").as_str())
    );
    assert_eq!(m.call_id(), invite.message.call_id());
    assert!(m
        .header(HeaderName::Contact)
        .is_some_and(|c| c.contains("[2001:db8::10]:5060")));
    assert_eq!(
        m.top_via().unwrap().host(),
        siproam_sip::Host::V6(ALICE6.parse().unwrap())
    );
    let ok2 = MessageBuilder::response_to(m, 200, "OK", None)
        .header("Contact", &format!("<sip:bob@{BOB}:5060>"))
        .body("application/sdp", sdp("re-answer"))
        .build()
        .unwrap();
    sim.peer_reply(proxy, &reinvite, ok2.to_bytes());
    let ack2 = sim
        .run_until_peer_receives(proxy, Duration::from_secs(1))
        .unwrap();
    assert!(ack2.message.method().is_some_and(|m| m.as_str() == "ACK"));
    assert_eq!(ack2.to, hop6.remote);
    assert_eq!(
        ack2.message.header(HeaderName::Route),
        m.header(HeaderName::Route)
    );
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
}

// ----- network changes: Endpoint::move_call, as the driver runs it --------

const ALICE2: &str = "198.51.100.10";

/// Alice with a second address to move to (both usable: the old one
/// still receives, as when both interfaces are up).
fn pair_moving() -> Pair {
    pair_with(&[ip(ALICE), ip(ALICE2)])
}

/// A call from Alice (who can move) ringing at Bob: (pair, alice's call,
/// bob's call).
fn ringing_moving() -> (Pair, CallId, CallId) {
    let mut p = pair_moving();
    let a = call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 180, None))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    (p, a, b)
}

/// The same call answered.
fn confirmed_moving() -> (Pair, CallId, CallId) {
    let (mut p, a, b) = ringing_moving();
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    (p, a, b)
}

/// Bob hangs up; where his BYE went.
fn bob_hangs_up(p: &mut Pair, b: CallId) -> IpAddr {
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.hang_up(now, b))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    p.sim
        .log()
        .iter()
        .find(|e| e.first_line.starts_with("BYE "))
        .unwrap()
        .to
        .ip()
}

fn moved_to(addr: &str) -> CallMove {
    CallMove {
        contact: Some(SocketAddr::new(ip(addr), 5060)),
        ..CallMove::default()
    }
}

/// RFC 6141 §5.5 at a change: our re-INVITE is stuck (the peer has not
/// answered it), so the move CANCELs it from the old address, the peer
/// answers 487 (ACKed), and once that settles the fresh offer goes in a
/// re-INVITE from the new address with the new Contact and Via.
#[test]
fn a_change_with_a_reinvite_pending_cancels_it_then_reoffers_from_the_new_address() {
    let (mut p, a, b) = confirmed_moving();
    p.sim
        .with_endpoint(p.alice, |ep, now| {
            ep.refresh(now, a, false, Some(sdp("re1")))
        })
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    // bob has the offer and has not answered it
    assert_eq!(offers(&mut p.sim, p.bob), [(b, false)]);
    p.sim.take_events(p.alice);
    let mark = p.sim.log().len();

    let action = p
        .sim
        .with_endpoint(p.alice, |ep, now| ep.move_call(now, a, moved_to(ALICE2)))
        .unwrap();
    assert_eq!(action, CallMoveAction::ReofferWhenSettled { update: false });
    p.sim.run_for(Duration::from_millis(100));
    let settled = p
        .sim
        .take_events(p.alice)
        .into_iter()
        .any(|(_, e)| matches!(e, Event::Call(CallEvent::RefreshFailed { code: 487, .. })));
    assert!(settled, "the re-INVITE ended 487");
    assert!(p
        .sim
        .take_events(p.bob)
        .iter()
        .any(|(_, e)| matches!(e, Event::Call(CallEvent::OfferCancelled { .. }))));
    // the application's part: the fresh offer, now
    p.sim
        .with_endpoint(p.alice, |ep, now| {
            ep.refresh(now, a, false, Some(sdp("re2")))
        })
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    assert_eq!(offers(&mut p.sim, p.bob), [(b, false)]);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer_offer(now, b, sdp("re-answer")))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    let (al, al2, bo) = (ip(ALICE), ip(ALICE2), ip(BOB));
    assert_eq!(
        sent_since(&p.sim, mark),
        [
            ("CANCEL".to_owned(), al),
            ("200".to_owned(), bo),
            ("487".to_owned(), bo),
            ("ACK".to_owned(), al),
            ("INVITE".to_owned(), al2),
            ("100".to_owned(), bo),
            ("200".to_owned(), bo),
            ("ACK".to_owned(), al2),
        ]
    );
    // the new re-INVITE names the new address; the call is up
    let reinvite = p
        .sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("INVITE"))
        .unwrap();
    assert_eq!(reinvite.from.ip(), al2);
    assert_eq!(
        p.sim.endpoint(p.alice).call_state(a),
        Some(CallState::Confirmed)
    );
    // bob's next request goes to alice's new Contact
    let bye_to = bob_hangs_up(&mut p, b);
    assert_eq!(bye_to, al2);
}

/// An outgoing call still ringing at the change: an UPDATE without SDP
/// carries the new Contact at once (the peer allows UPDATE), the 2xx is
/// ACKed from the new address, and the application's re-offer follows.
#[test]
fn a_change_while_our_call_rings_sends_an_update_with_the_new_contact() {
    let (mut p, a, b) = ringing_moving();
    p.sim.take_events(p.alice);
    let mark = p.sim.log().len();
    let action = p
        .sim
        .with_endpoint(p.alice, |ep, now| ep.move_call(now, a, moved_to(ALICE2)))
        .unwrap();
    assert_eq!(action, CallMoveAction::Rebind);
    p.sim.run_for(Duration::from_millis(100));
    let update = p
        .sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("UPDATE"))
        .expect("an UPDATE")
        .clone();
    assert_eq!(update.from.ip(), ip(ALICE2));
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    assert_eq!(
        p.sim.endpoint(p.alice).call_state(a),
        Some(CallState::Confirmed)
    );
    // the application re-offers its new media address once answered
    p.sim
        .with_endpoint(p.alice, |ep, now| {
            ep.refresh(now, a, false, Some(sdp("moved")))
        })
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer_offer(now, b, sdp("re-answer")))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    let (al2, bo) = (ip(ALICE2), ip(BOB));
    assert_eq!(
        sent_since(&p.sim, mark),
        [
            ("UPDATE".to_owned(), al2),
            ("200".to_owned(), bo),
            ("200".to_owned(), bo),
            ("ACK".to_owned(), al2),
            ("INVITE".to_owned(), al2),
            ("100".to_owned(), bo),
            ("200".to_owned(), bo),
            ("ACK".to_owned(), al2),
        ]
    );
    // the UPDATE had no body; bob's dialog already points at the new address
    let bye_to = bob_hangs_up(&mut p, b);
    assert_eq!(bye_to, al2);
}

/// An incoming call still ringing at the change: our 2xx goes out with the
/// new Contact, so the ACK and the peer's later requests reach the new
/// address.
#[test]
fn a_change_while_a_call_rings_here_puts_the_new_contact_in_our_2xx() {
    let (mut p, a, b) = ringing_moving();
    let mark = p.sim.log().len();
    let action = p
        .sim
        .with_endpoint(p.bob, |ep, now| ep.move_call(now, b, moved_to(BOB2)))
        .unwrap();
    assert_eq!(action, CallMoveAction::Rebind);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    let log: Vec<_> = p.sim.log().iter().skip(mark).cloned().collect();
    // the 2xx leaves from where the INVITE came (RFC 3261 §18.2.2)
    assert_eq!(
        sent_since(&p.sim, mark),
        [("200".to_owned(), ip(BOB)), ("ACK".to_owned(), ip(ALICE))]
    );
    assert_eq!(log[1].to.ip(), ip(BOB2), "the ACK goes to the new Contact");
    assert_eq!(
        p.sim.endpoint(p.alice).call_state(a),
        Some(CallState::Confirmed)
    );
}

/// The other knobs: hang up instead of refreshing (a BYE, nothing for the
/// application), and UPDATE preferred when the peer allows it.
#[test]
fn a_change_hangs_up_or_prefers_update_as_asked() {
    let (mut p, a, _b) = confirmed(Transport::Udp);
    let action = p
        .sim
        .with_endpoint(p.alice, |ep, now| {
            ep.move_call(
                now,
                a,
                CallMove {
                    prefer_update: true,
                    ..CallMove::default()
                },
            )
        })
        .unwrap();
    assert_eq!(action, CallMoveAction::Reoffer { update: true });
    let mark = p.sim.log().len();
    let action = p
        .sim
        .with_endpoint(p.alice, |ep, now| {
            ep.move_call(
                now,
                a,
                CallMove {
                    hang_up: true,
                    ..CallMove::default()
                },
            )
        })
        .unwrap();
    assert_eq!(action, CallMoveAction::Nothing);
    p.sim.run_for(Duration::from_millis(100));
    assert_eq!(
        sent_since(&p.sim, mark),
        [("BYE".to_owned(), ip(ALICE)), ("200".to_owned(), ip(BOB))]
    );
    assert_eq!(
        p.sim
            .with_endpoint(p.alice, |ep, now| ep.move_call(now, a, CallMove::default())),
        Err(siproam_core::CoreError::NoSuchCall)
    );
}

/// `via` without `contact`: the refresh leaves from the new address (its
/// Via names it) while the Contact stays, so the peer's requests still
/// come to the old one.
#[test]
fn a_change_of_via_alone_sends_from_the_new_address_and_keeps_the_contact() {
    let (mut p, a, b) = confirmed_moving();
    let mark = p.sim.log().len();
    let action = p
        .sim
        .with_endpoint(p.alice, |ep, now| {
            ep.move_call(
                now,
                a,
                CallMove {
                    via: Some(SocketAddr::new(ip(ALICE2), 5060)),
                    ..CallMove::default()
                },
            )
        })
        .unwrap();
    assert_eq!(action, CallMoveAction::Reoffer { update: false });
    p.sim
        .with_endpoint(p.alice, |ep, now| {
            ep.refresh(now, a, false, Some(sdp("re")))
        })
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    p.sim.take_events(p.bob);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer_offer(now, b, sdp("re-answer")))
        .unwrap();
    p.sim.run_for(Duration::from_millis(100));
    let sent = sent_since(&p.sim, mark);
    assert_eq!(sent.first(), Some(&("INVITE".to_owned(), ip(ALICE2))));
    // the 200 goes to the Via's address; bob's BYE to the kept Contact
    let ok_to = p
        .sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("SIP/2.0 200"))
        .unwrap()
        .to;
    assert_eq!(ok_to.ip(), ip(ALICE2));
    let bye_to = bob_hangs_up(&mut p, b);
    assert_eq!(bye_to, ip(ALICE), "the Contact was kept");
}

/// The callee of the break-before-make tests: a scripted peer.
const CALLEE: &str = "192.0.2.98";

/// Alice (on ALICE and ALICE2) calls the scripted callee, which rings
/// (180 with a to-tag): (sim, alice, callee, alice's call, the INVITE).
fn ringing_at_a_peer() -> (Sim, NodeId, NodeId, CallId, siproam_sim::Received) {
    let mut sim = Sim::new(Instant::now(), 3);
    let alice = sim.add_endpoint(
        "alice",
        &[ip(ALICE), ip(ALICE2)],
        Config {
            seed: 1,
            ..Config::default()
        },
    );
    let callee = sim.add_peer("callee", &[ip(CALLEE)]);
    let spec = InviteSpec {
        uri: format!("sip:callee@{CALLEE}"),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Udp,
            remote: SocketAddr::new(ip(CALLEE), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    let a = sim
        .with_endpoint(alice, |ep, now| ep.invite(now, spec))
        .unwrap();
    let invite = sim
        .run_until_peer_receives(callee, Duration::from_secs(1))
        .unwrap();
    let ringing = MessageBuilder::response_to(&invite.message, 180, "Ringing", Some("cal1"))
        .header("Contact", &format!("<sip:callee@{CALLEE}:5060>"))
        .build()
        .unwrap();
    sim.peer_reply(callee, &invite, ringing.to_bytes());
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.endpoint(alice).call_state(a), Some(CallState::Ringing));
    (sim, alice, callee, a, invite)
}

/// A peer's response to `req`, sent where its top Via says (RFC 3261
/// §18.2.2: the sent-by, here without `received`, the peer being the
/// first hop): the address the UAC put there, dead or alive.
fn answer_per_via(
    sim: &mut Sim,
    peer: NodeId,
    req: &siproam_sip::Message,
    resp: &siproam_sip::Message,
) {
    let via = req.top_via().unwrap();
    let to = SocketAddr::new(via.host_str().parse().unwrap(), via.port().unwrap_or(5060));
    sim.peer_send(
        peer,
        SocketAddr::new(ip(CALLEE), 5060),
        to,
        Transport::Udp,
        resp.to_bytes(),
    );
}

/// Break-before-make while our call rings: the INVITE's Via names an
/// address that is gone, so the callee's 2xx could never reach us. The
/// move CANCELs the INVITE (its top Via as the INVITE's, RFC 3261 §9.1,
/// sent from the new address) and the application's fresh offer goes in a
/// new INVITE from the new address (new Call-ID and From tag: a new
/// dialog the callee cannot take for the old one); the callee's 200 to it
/// is ACKed and the call is up — the same call for the application, which
/// saw no failure.
#[test]
fn a_call_ringing_when_its_address_goes_is_cancelled_and_invited_again_from_the_new_address() {
    let (mut sim, alice, callee, a, old) = ringing_at_a_peer();
    sim.take_events(alice);
    // the wifi address goes: only ALICE2 is left
    sim.set_addresses(alice, &[ip(ALICE2)]);
    let mv = CallMove {
        old_path_gone: true,
        ..moved_to(ALICE2)
    };
    let action = sim
        .with_endpoint(alice, |ep, now| ep.move_call(now, a, mv))
        .unwrap();
    assert_eq!(action, CallMoveAction::Resend);
    // the application's part: a fresh offer with its new media address
    sim.with_endpoint(alice, |ep, now| {
        ep.resend_invite(now, a, Some(sdp("moved")))
    })
    .unwrap();

    let cancel = sim
        .run_until_peer_receives(callee, Duration::from_secs(1))
        .unwrap();
    let m = &cancel.message;
    assert_eq!(m.method(), Some(Method::Cancel));
    assert_eq!(cancel.from.ip(), ip(ALICE2), "sent from the new address");
    assert_eq!(
        m.header(HeaderName::Via),
        old.message.header(HeaderName::Via),
        "the INVITE's Via"
    );
    assert_eq!(m.call_id(), old.message.call_id());
    assert_eq!(m.cseq().seq, old.message.cseq().seq);
    assert_eq!(m.request_uri_str(), old.message.request_uri_str());

    let new = sim
        .run_until_peer_receives(callee, Duration::from_secs(1))
        .unwrap();
    let n = &new.message;
    assert_eq!(n.method(), Some(Method::Invite));
    assert_eq!(new.from.ip(), ip(ALICE2));
    assert_eq!(
        n.top_via().unwrap().host_str(),
        ALICE2,
        "the new Via names the new address"
    );
    assert!(n
        .header(HeaderName::Contact)
        .is_some_and(|c| c.contains(&format!("{ALICE2}:5060"))));
    assert_eq!(n.body(), &sdp("moved"), "the fresh offer");
    assert_eq!(n.request_uri_str(), old.message.request_uri_str());
    assert_eq!(n.to().unwrap().tag(), None);
    assert_ne!(n.call_id(), old.message.call_id(), "a new Call-ID");
    assert_ne!(n.from().unwrap().tag(), old.message.from().unwrap().tag());
    assert_eq!(n.header(HeaderName::Route), None);

    // the callee ends the old INVITE (its answers go to the dead address)
    let ok_cancel = MessageBuilder::response_to(m, 200, "OK", Some("cal1"))
        .build()
        .unwrap();
    answer_per_via(&mut sim, callee, m, &ok_cancel);
    let terminated =
        MessageBuilder::response_to(&old.message, 487, "Request Terminated", Some("cal1"))
            .build()
            .unwrap();
    answer_per_via(&mut sim, callee, &old.message, &terminated);
    let lost: Vec<_> = sim
        .log()
        .iter()
        .rev()
        .take(2)
        .map(|e| (e.to.ip(), e.fate))
        .collect();
    assert_eq!(
        lost,
        [
            (ip(ALICE), siproam_sim::Fate::Unreachable),
            (ip(ALICE), siproam_sim::Fate::Unreachable)
        ]
    );

    // ... and rings, then answers, the new one
    let ringing = MessageBuilder::response_to(n, 180, "Ringing", Some("cal2"))
        .header("Contact", &format!("<sip:callee@{CALLEE}:5060>"))
        .build()
        .unwrap();
    answer_per_via(&mut sim, callee, n, &ringing);
    let ok = MessageBuilder::response_to(n, 200, "OK", Some("cal2"))
        .header("Contact", &format!("<sip:callee@{CALLEE}:5060>"))
        .body("application/sdp", sdp("answer"))
        .build()
        .unwrap();
    answer_per_via(&mut sim, callee, n, &ok);
    let ack = sim
        .run_until_peer_receives(callee, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(ack.from.ip(), ip(ALICE2));
    assert_eq!(ack.message.call_id(), n.call_id());
    assert_eq!(ack.message.to().unwrap().tag(), Some("cal2"));
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    assert_eq!(sim.endpoint(alice).call_count(), 1);
    // the application saw its call answered, with the answer, and nothing else
    let events: Vec<_> = sim
        .take_events(alice)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Call(ev) => Some(ev),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        [CallEvent::State {
            call: a,
            state: CallState::Confirmed,
            code: Some(200),
            body: Some(sdp("answer")),
            peer: None,
            end: None,
        }]
    );

    // the callee answered the old INVITE too and that 2xx somehow reaches
    // us: ACKed and ended with a BYE (RFC 3261 §13.2.2.4), unseen by the
    // application
    let stale_ok = MessageBuilder::response_to(&old.message, 200, "OK", Some("cal1"))
        .header("Contact", &format!("<sip:callee@{CALLEE}:5060>"))
        .body("application/sdp", sdp("answer"))
        .build()
        .unwrap();
    sim.peer_send(
        callee,
        SocketAddr::new(ip(CALLEE), 5060),
        SocketAddr::new(ip(ALICE2), 5060),
        Transport::Udp,
        stale_ok.to_bytes(),
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        let r = sim
            .run_until_peer_receives(callee, Duration::from_secs(1))
            .unwrap();
        got.push((
            r.message.method().map(|m| m.as_str().to_owned()),
            r.message.call_id().to_owned(),
            r.message.cseq().seq,
            r.message.to().unwrap().tag().map(str::to_owned),
            r.message.request_uri_str().map(str::to_owned),
        ));
    }
    let old_id = old.message.call_id().to_owned();
    let target = Some(format!("sip:callee@{CALLEE}:5060"));
    assert_eq!(
        got,
        [
            (
                Some("ACK".to_owned()),
                old_id.clone(),
                1,
                Some("cal1".to_owned()),
                target.clone()
            ),
            (
                Some("BYE".to_owned()),
                old_id,
                2,
                Some("cal1".to_owned()),
                target
            ),
        ]
    );
    // the old INVITE's and the CANCEL's transactions run out (64·T1): the
    // call is untouched, the application hears nothing
    sim.run_for(Duration::from_secs(40));
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    let late: Vec<_> = sim
        .take_events(alice)
        .into_iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::Call(_) | Event::RequestFailed { .. } | Event::Response { .. }
            )
        })
        .collect();
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(sim.endpoint(alice).transaction_count().0, 0, "none left");
}

/// The same over TCP: the INVITE's connection breaks with the address
/// (during the change, so the call does not end with it), and the new
/// INVITE goes over a new connection from the new address.
#[test]
fn a_call_ringing_over_tcp_when_its_address_goes_is_invited_again_over_a_new_connection() {
    let mut sim = Sim::new(Instant::now(), 3);
    let alice = sim.add_endpoint(
        "alice",
        &[ip(ALICE), ip(ALICE2)],
        Config {
            seed: 1,
            ..Config::default()
        },
    );
    let callee = sim.add_peer("callee", &[ip(CALLEE)]);
    let spec = InviteSpec {
        uri: format!("sip:callee@{CALLEE}"),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Tcp,
            remote: SocketAddr::new(ip(CALLEE), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    let a = sim
        .with_endpoint(alice, |ep, now| ep.invite(now, spec))
        .unwrap();
    let old = sim
        .run_until_peer_receives(callee, Duration::from_secs(1))
        .unwrap();
    let ringing = MessageBuilder::response_to(&old.message, 180, "Ringing", Some("cal1"))
        .header(
            "Contact",
            &format!("<sip:callee@{CALLEE}:5060;transport=tcp>"),
        )
        .build()
        .unwrap();
    sim.peer_reply(callee, &old, ringing.to_bytes());
    sim.run_for(Duration::from_millis(100));
    sim.take_events(alice);

    // the change starts (the driver says so first), then the address and
    // its connection go
    sim.with_endpoint(alice, |ep, now| ep.begin_network_change(now));
    sim.set_addresses(alice, &[ip(ALICE2)]);
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Ringing),
        "the call outlives its INVITE's connection"
    );
    let mv = CallMove {
        old_path_gone: true,
        ..moved_to(ALICE2)
    };
    let action = sim
        .with_endpoint(alice, |ep, now| ep.move_call(now, a, mv))
        .unwrap();
    assert_eq!(action, CallMoveAction::Resend);
    sim.with_endpoint(alice, |ep, now| {
        ep.resend_invite(now, a, Some(sdp("moved")))
    })
    .unwrap();
    let new = sim
        .run_until_peer_receives(callee, Duration::from_secs(1))
        .unwrap();
    let n = &new.message;
    assert_eq!(n.method(), Some(Method::Invite));
    assert_eq!(new.transport, Transport::Tcp);
    assert_eq!(new.from.ip(), ip(ALICE2));
    assert_ne!(new.conn, old.conn, "a new connection");
    assert_ne!(n.call_id(), old.message.call_id());
    assert_eq!(n.body(), &sdp("moved"));
    let ok = MessageBuilder::response_to(n, 200, "OK", Some("cal2"))
        .header(
            "Contact",
            &format!("<sip:callee@{CALLEE}:5060;transport=tcp>"),
        )
        .body("application/sdp", sdp("answer"))
        .build()
        .unwrap();
    sim.peer_reply(callee, &new, ok.to_bytes());
    let ack = sim
        .run_until_peer_receives(callee, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    let events: Vec<_> = sim
        .take_events(alice)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Call(CallEvent::State { state, code, .. }) => Some((state, code)),
            _ => None,
        })
        .collect();
    assert_eq!(events, [(CallState::Confirmed, Some(200))]);
}

/// Our INVITE not even answered 100 yet when its address goes: no
/// provisional can reach us any more either, so it is CANCELled and sent
/// again the same way; and a call hung up between the move and the new
/// INVITE ends at once, with nothing more on the wire.
#[test]
fn a_call_not_answered_at_all_when_its_address_goes_is_sent_again_or_hung_up() {
    for hang_up in [false, true] {
        let mut sim = Sim::new(Instant::now(), 3);
        let alice = sim.add_endpoint(
            "alice",
            &[ip(ALICE), ip(ALICE2)],
            Config {
                seed: 1,
                ..Config::default()
            },
        );
        let callee = sim.add_peer("callee", &[ip(CALLEE)]);
        let spec = InviteSpec {
            uri: format!("sip:callee@{CALLEE}"),
            from: "sip:alice@example.test".into(),
            target: Target {
                transport: Transport::Udp,
                remote: SocketAddr::new(ip(CALLEE), 5060),
                local: None,
                server_name: None,
            },
            sdp: Some(sdp("offer")),
            contact_user: "alice".into(),
        };
        let a = sim
            .with_endpoint(alice, |ep, now| ep.invite(now, spec))
            .unwrap();
        let old = sim
            .run_until_peer_receives(callee, Duration::from_secs(1))
            .unwrap();
        assert_eq!(sim.endpoint(alice).call_state(a), Some(CallState::Calling));
        sim.set_addresses(alice, &[ip(ALICE2)]);
        let mv = CallMove {
            old_path_gone: true,
            ..moved_to(ALICE2)
        };
        let action = sim
            .with_endpoint(alice, |ep, now| ep.move_call(now, a, mv))
            .unwrap();
        assert_eq!(action, CallMoveAction::Resend);
        let cancel = sim
            .run_until_peer_receives(callee, Duration::from_secs(1))
            .unwrap();
        assert_eq!(cancel.message.method(), Some(Method::Cancel));
        assert_eq!(
            cancel.message.header(HeaderName::Via),
            old.message.header(HeaderName::Via)
        );
        sim.take_events(alice);
        if hang_up {
            sim.with_endpoint(alice, |ep, now| ep.hang_up(now, a))
                .unwrap();
            assert_eq!(sim.endpoint(alice).call_state(a), None);
            assert_eq!(states(&mut sim, alice), [(CallState::Disconnected, None)]);
            let mark = sim.log().len();
            sim.run_for(Duration::from_secs(40));
            let sent: Vec<_> = sent_since(&sim, mark)
                .into_iter()
                .filter(|(_, from)| *from != ip(CALLEE))
                .collect();
            // only the CANCEL's own retransmissions (its answer never comes)
            assert!(sent.iter().all(|(m, _)| m == "CANCEL"), "{sent:?}");
            continue;
        }
        sim.with_endpoint(alice, |ep, now| ep.resend_invite(now, a, None))
            .unwrap();
        let new = sim
            .run_until_peer_receives(callee, Duration::from_secs(1))
            .unwrap();
        assert_eq!(new.message.method(), Some(Method::Invite));
        assert_eq!(new.from.ip(), ip(ALICE2));
        assert_eq!(new.message.body(), &sdp("offer"), "the first offer again");
        let ok = MessageBuilder::response_to(&new.message, 200, "OK", Some("cal2"))
            .header("Contact", &format!("<sip:callee@{CALLEE}:5060>"))
            .body("application/sdp", sdp("answer"))
            .build()
            .unwrap();
        answer_per_via(&mut sim, callee, &new.message, &ok);
        sim.run_for(Duration::from_millis(100));
        assert_eq!(
            sim.endpoint(alice).call_state(a),
            Some(CallState::Confirmed)
        );
        assert_eq!(states(&mut sim, alice), [(CallState::Confirmed, Some(200))]);
    }
}

/// Make-before-break keeps today's move of a ringing call (see
/// `a_change_while_our_call_rings_sends_an_update_with_the_new_contact`):
/// with the old path alive nothing is CANCELled, and the 2xx to the
/// original INVITE still arrives and confirms the call.
#[test]
fn a_call_ringing_when_its_old_address_stays_is_not_invited_again() {
    let (mut sim, alice, callee, a, old) = ringing_at_a_peer();
    let mark = sim.log().len();
    let action = sim
        .with_endpoint(alice, |ep, now| ep.move_call(now, a, moved_to(ALICE2)))
        .unwrap();
    assert_eq!(action, CallMoveAction::Rebind);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.peer_recv(callee).is_none(), "no CANCEL, no INVITE");
    let ok = MessageBuilder::response_to(&old.message, 200, "OK", Some("cal1"))
        .header("Contact", &format!("<sip:callee@{CALLEE}:5060>"))
        .body("application/sdp", sdp("answer"))
        .build()
        .unwrap();
    answer_per_via(&mut sim, callee, &old.message, &ok);
    let ack = sim
        .run_until_peer_receives(callee, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(ack.message.call_id(), old.message.call_id());
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    assert_eq!(
        sent_since(&sim, mark),
        [
            ("200".to_owned(), ip(CALLEE)),
            ("ACK".to_owned(), ip(ALICE2))
        ]
    );
}

// ----- incoming calls from anyone: limits and the no-answer timeout -------

/// A peer's new INVITE (its own Call-ID and branch), with an offer.
fn peer_invite(n: u32) -> siproam_sip::Message {
    MessageBuilder::request(Method::Invite, &format!("sip:bob@{BOB}"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKflood{n}"),
        )
        .header("From", &format!("<sip:mallory@example.test>;tag=m{n}"))
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", &format!("flood{n}@mallory"))
        .header("CSeq", "1 INVITE")
        .header("Contact", "<sip:mallory@192.0.2.99:5060>")
        .body("application/sdp", sdp("flood"))
        .build()
        .unwrap()
}

/// Sends `count` INVITEs from a peer to Bob; returns the final statuses
/// the peer got (in order), after `settle`.
fn flood_bob(p: &mut Pair, peer: NodeId, first: u32, count: u32) -> Vec<u16> {
    let from = SocketAddr::new(ip("192.0.2.99"), 5060);
    let bob_addr = SocketAddr::new(ip(BOB), 5060);
    for n in first..first + count {
        p.sim.peer_send(
            peer,
            from,
            bob_addr,
            Transport::Udp,
            peer_invite(n).to_bytes(),
        );
    }
    p.sim.run_for(Duration::from_millis(100));
    let mut finals = Vec::new();
    while let Some(r) = p.sim.peer_recv(peer) {
        if let Some(code) = r.message.status().filter(|c| *c >= 200) {
            finals.push(code);
        }
    }
    finals
}

fn incoming_calls(sim: &mut Sim, node: NodeId) -> Vec<CallId> {
    sim.take_events(node)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::IncomingCall { call, .. } => Some(call),
            _ => None,
        })
        .collect()
}

#[test]
fn invites_beyond_the_ringing_limit_get_486_and_make_no_call() {
    let mut p = pair(Transport::Udp);
    p.sim
        .endpoint(p.bob)
        .set_incoming_call_limits(siproam_core::IncomingCallLimits {
            max_unanswered: 3,
            max_calls: 10,
            no_answer: None,
        });
    let peer = p.sim.add_peer("mallory", &[ip("192.0.2.99")]);
    let finals = flood_bob(&mut p, peer, 0, 50);
    assert_eq!(finals, vec![486; 47], "every INVITE beyond three is busy");
    let rung = incoming_calls(&mut p.sim, p.bob);
    assert_eq!(rung.len(), 3, "only three calls were made");
    assert_eq!(p.sim.endpoint(p.bob).call_count(), 3);
    let busy = p
        .sim
        .log()
        .iter()
        .find(|e| e.first_line.starts_with("SIP/2.0 486"))
        .map(|e| e.first_line.clone());
    assert_eq!(busy.as_deref(), Some("SIP/2.0 486 Busy Here"));
    // one answered: a slot frees up for a ringing call
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, rung[0], 603, None))
        .unwrap();
    assert_eq!(flood_bob(&mut p, peer, 100, 2), vec![603, 486]);
    assert_eq!(incoming_calls(&mut p.sim, p.bob).len(), 1);
}

#[test]
fn invites_beyond_the_total_limit_get_486_even_when_calls_are_answered() {
    let mut p = pair(Transport::Udp);
    p.sim
        .endpoint(p.bob)
        .set_incoming_call_limits(siproam_core::IncomingCallLimits {
            max_unanswered: 8,
            max_calls: 2,
            no_answer: None,
        });
    for _ in 0..2 {
        call(&mut p, Transport::Udp);
        p.sim.run_for(Duration::from_millis(100));
        let b = incoming(&mut p.sim, p.bob);
        p.sim
            .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
            .unwrap();
        p.sim.run_for(Duration::from_millis(100));
    }
    states(&mut p.sim, p.alice);
    call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    assert!(incoming_calls(&mut p.sim, p.bob).is_empty());
    assert_eq!(
        states(&mut p.sim, p.alice),
        [
            (CallState::Calling, None),
            (CallState::Disconnected, Some(486))
        ]
    );
}

#[test]
fn a_call_nobody_answers_is_refused_480_after_the_no_answer_time() {
    let mut p = pair(Transport::Udp);
    assert_eq!(
        p.sim.endpoint(p.bob).incoming_call_limits().no_answer,
        Some(Duration::from_secs(120)),
        "on by default"
    );
    call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 180, None))
        .unwrap();
    p.sim.run_for(Duration::from_secs(119));
    assert_eq!(
        states(&mut p.sim, p.alice),
        [(CallState::Calling, None), (CallState::Ringing, Some(180))]
    );
    assert_eq!(p.sim.endpoint(p.bob).call_count(), 1, "still ringing");
    p.sim.run_for(Duration::from_secs(2));
    assert_eq!(
        states(&mut p.sim, p.alice),
        [(CallState::Disconnected, Some(480))]
    );
    assert_eq!(p.sim.endpoint(p.bob).call_count(), 0);
    assert!(p
        .sim
        .log()
        .iter()
        .any(|e| e.first_line == "SIP/2.0 480 Temporarily Unavailable"));
}

#[test]
fn an_answered_call_is_not_ended_by_the_no_answer_time() {
    let mut p = pair(Transport::Udp);
    p.sim
        .endpoint(p.bob)
        .set_incoming_call_limits(siproam_core::IncomingCallLimits {
            no_answer: Some(Duration::from_secs(5)),
            ..Default::default()
        });
    call(&mut p, Transport::Udp);
    p.sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut p.sim, p.bob);
    p.sim
        .with_endpoint(p.bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    p.sim.run_for(Duration::from_secs(60));
    assert_eq!(
        p.sim.endpoint(p.bob).call_state(b),
        Some(CallState::Confirmed)
    );
}

#[test]
fn a_refused_call_carries_the_reason_phrase_and_extra_headers() {
    let mut p = pair(Transport::Udp);
    let peer = p.sim.add_peer("mallory", &[ip("192.0.2.99")]);
    let from = SocketAddr::new(ip("192.0.2.99"), 5060);
    p.sim.peer_send(
        peer,
        from,
        SocketAddr::new(ip(BOB), 5060),
        Transport::Udp,
        peer_invite(1).to_bytes(),
    );
    p.sim.run_for(Duration::from_millis(50));
    let b = incoming(&mut p.sim, p.bob);
    while p.sim.peer_recv(peer).is_some() {} // the 100
    p.sim
        .with_endpoint(p.bob, |ep, now| {
            ep.refuse(now, b, 503, &[("Retry-After", "30")])
        })
        .unwrap();
    let r = p
        .sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(r.message.status(), Some(503));
    assert_eq!(r.message.reason(), Some("Service Unavailable"));
    assert_eq!(r.message.header(HeaderName::RetryAfter), Some("30"));
    assert_eq!(p.sim.endpoint(p.bob).call_count(), 0);
}

/// A 2xx whose answer cannot be used (SRTP mandatory, a plain answer: the
/// phone's SDP layer says so): the caller ACKs it, then ends the call with
/// a BYE whose `Reason` gives 488 and the cause (RFC 3326), and reports
/// the call refused with 488 by itself. The text loses what cannot go in
/// a quoted string.
#[test]
fn an_unusable_answer_ends_the_call_with_a_bye_giving_488_as_reason() {
    let mut sim = Sim::new(Instant::now(), 7);
    let alice = sim.add_endpoint(
        "alice",
        &[ip(ALICE)],
        Config {
            seed: 1,
            ..Config::default()
        },
    );
    let bob = sim.add_peer("bob", &[ip(BOB)]);
    let spec = InviteSpec {
        uri: format!("sip:bob@{BOB}"),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Udp,
            remote: SocketAddr::new(ip(BOB), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer with crypto")),
        contact_user: "alice".into(),
    };
    let a = sim
        .with_endpoint(alice, |ep, now| ep.invite(now, spec))
        .unwrap();
    let invite = sim
        .run_until_peer_receives(bob, Duration::from_secs(1))
        .unwrap();
    let ok = MessageBuilder::response_to(&invite.message, 200, "OK", Some("bob1"))
        .header("Contact", &format!("<sip:bob@{BOB}:5060>"))
        .body("application/sdp", sdp("plain answer"))
        .build()
        .unwrap();
    sim.peer_reply(bob, &invite, ok.to_bytes());
    let ack = sim
        .run_until_peer_receives(bob, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(
        states(&mut sim, alice),
        [
            (CallState::Calling, None),
            (CallState::Confirmed, Some(200))
        ]
    );

    sim.with_endpoint(alice, |ep, now| {
        ep.end_unacceptable_media(
            now,
            a,
            "SRTP is \"mandatory\"\r\n and\\ the answer has none",
        )
    })
    .unwrap();
    let bye = sim
        .run_until_peer_receives(bob, Duration::from_secs(1))
        .unwrap();
    assert_eq!(bye.message.method(), Some(Method::Bye));
    assert_eq!(
        bye.message.header(HeaderName::Reason),
        Some("SIP ;cause=488 ;text=\"SRTP is mandatory and the answer has none\"")
    );
    let ended: Vec<_> = sim
        .take_events(alice)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Call(CallEvent::State {
                state: CallState::Disconnected,
                code,
                end,
                ..
            }) => Some((code, end)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        [(
            Some(488),
            Some(CallEnd {
                by: CallEndedBy::Local,
                reason: CallEndReason::Rejected {
                    code: 488,
                    phrase: "Not Acceptable Here".into()
                }
            })
        )]
    );
    assert_eq!(sim.endpoint(alice).call_count(), 0);
    // the call is gone: nothing more to end
    assert_eq!(
        sim.with_endpoint(alice, |ep, now| ep.end_unacceptable_media(now, a, "again")),
        Err(CoreError::NoSuchCall)
    );
}
