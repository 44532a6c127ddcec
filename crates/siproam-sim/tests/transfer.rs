//! Call transfer (`siproam_core` `dialog/transfer`): REFER (RFC 3515) sent
//! and its NOTIFY progress told, REFER received and acted on (the new call
//! with `Referred-By`, sipfrag NOTIFYs back), attended transfer with
//! `Replaces` (RFC 3891) ending in the third party's call replaced, bad
//! `Refer-To`s refused without disturbing the call, a REFER outside a
//! dialog refused, and a challenged REFER answered (`auth`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use siproam_core::{
    CallEvent, CallId, CallState, Config, Event, InviteSpec, Target, TransferEvent, TransferRole,
    TransferState, Transport,
};
use siproam_sim::{NodeId, Sim};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};

const ALICE: &str = "192.0.2.10";
const BOB: &str = "192.0.2.20";
const CAROL: &str = "192.0.2.30";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sdp(tag: &str) -> Bytes {
    Bytes::from(format!("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns={tag}\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"))
}

fn udp_to(host: &str) -> Target {
    Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(host), 5060),
        local: None,
        server_name: None,
    }
}

/// What a node's handler saw.
#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    /// The INVITEs of incoming calls.
    invites: Vec<Message>,
}

const ALICE_N: usize = 0;
const BOB_N: usize = 1;
const CAROL_N: usize = 2;

struct Three {
    sim: Sim,
    alice: NodeId,
    bob: NodeId,
    carol: NodeId,
    seen: [Rc<RefCell<Seen>>; 3],
}

impl Three {
    fn node(&self, i: usize) -> NodeId {
        [self.alice, self.bob, self.carol][i]
    }
}

/// Three agents; each answers incoming calls at once and follows a REFER
/// it accepts by calling its target straight (the host in the URI).
fn three() -> Three {
    let mut sim = Sim::new(std::time::Instant::now(), 5);
    let mut nodes = Vec::new();
    let mut seen = Vec::new();
    for (i, (name, host)) in [("alice", ALICE), ("bob", BOB), ("carol", CAROL)]
        .into_iter()
        .enumerate()
    {
        let node = sim.add_endpoint(
            name,
            &[ip(host)],
            Config {
                seed: 10 + i as u64,
                ..Config::default()
            },
        );
        let log: Rc<RefCell<Seen>> = Rc::default();
        let l = log.clone();
        let me = format!("sip:{name}@example.test");
        sim.set_handler(
            node,
            Box::new(move |ep, now, ev| {
                match &ev {
                    Event::IncomingCall { call, request } => {
                        l.borrow_mut().invites.push(request.clone());
                        ep.answer(now, *call, 200, Some(sdp("answer"))).unwrap();
                    }
                    Event::Transfer(TransferEvent {
                        transfer,
                        role: TransferRole::Transferee,
                        state: TransferState::Requested,
                        target,
                        ..
                    }) => {
                        let host = siproam_sip::Uri::parse(target)
                            .unwrap()
                            .as_sip()
                            .unwrap()
                            .host_str()
                            .to_owned();
                        ep.transfer_invite(
                            now,
                            *transfer,
                            InviteSpec {
                                uri: target.clone(),
                                from: me.clone(),
                                target: udp_to(&host),
                                sdp: Some(sdp("offer")),
                                contact_user: "me".into(),
                            },
                        )
                        .unwrap();
                    }
                    _ => {}
                }
                l.borrow_mut().events.push(ev.clone());
                Some(ev)
            }),
        );
        nodes.push(node);
        seen.push(log);
    }
    Three {
        sim,
        alice: nodes[0],
        bob: nodes[1],
        carol: nodes[2],
        seen: [seen[0].clone(), seen[1].clone(), seen[2].clone()],
    }
}

/// `from` calls `to` (straight), answered: its call id.
fn call(t: &mut Three, from: usize, name: &str, to: &str, user: &str) -> CallId {
    let spec = InviteSpec {
        uri: format!("sip:{user}@{to}"),
        from: format!("sip:{name}@example.test"),
        target: udp_to(to),
        sdp: Some(sdp("offer")),
        contact_user: name.into(),
    };
    let from = t.node(from);
    let id = t
        .sim
        .with_endpoint(from, |ep, now| ep.invite(now, spec))
        .unwrap();
    t.sim.run_for(Duration::from_millis(200));
    assert_eq!(
        t.sim.with_endpoint(from, |ep, _| ep.call_state(id)),
        Some(CallState::Confirmed)
    );
    id
}

fn transfers(seen: &Rc<RefCell<Seen>>) -> Vec<(TransferRole, TransferState, Option<u16>)> {
    seen.borrow()
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Transfer(t) => Some((t.role, t.state, t.code)),
            _ => None,
        })
        .collect()
}

fn calls(t: &mut Three, node: usize) -> Vec<(CallId, CallState)> {
    let node = t.node(node);
    t.sim.with_endpoint(node, |ep, _| ep.calls())
}

#[test]
fn a_blind_transfer_moves_the_call_to_the_target_and_both_sides_tell_it() {
    let mut t = three();
    let a = call(&mut t, ALICE_N, "alice", BOB, "bob");
    let target = format!("sip:carol@{CAROL}");
    let tid = t
        .sim
        .with_endpoint(t.alice, |ep, now| ep.transfer(now, a, &target))
        .unwrap();
    t.sim.run_for(Duration::from_secs(2));

    // the REFER: in the dialog, Refer-To and Referred-By
    let refer_line = t
        .sim
        .log()
        .iter()
        .find(|e| e.first_line.starts_with("REFER "))
        .map(|e| e.first_line.clone())
        .expect("a REFER");
    assert!(refer_line.contains(BOB), "{refer_line}");

    // alice: requested, trying (100), succeeded (200), and her call ended
    use TransferRole::*;
    use TransferState::*;
    assert_eq!(
        transfers(&t.seen[0]),
        vec![
            (Transferor, Requested, None),
            (Transferor, Trying, Some(100)),
            (Transferor, Succeeded, Some(200)),
        ]
    );
    let ev = t.seen[0]
        .borrow()
        .events
        .iter()
        .find_map(|e| match e {
            Event::Transfer(x) => Some(x.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (ev.transfer, ev.call, ev.target.as_str()),
        (tid, a, &*target)
    );
    assert!(calls(&mut t, ALICE_N).is_empty(), "alice hung up");

    // bob: accepted, placed the call, which carol answered
    assert_eq!(
        transfers(&t.seen[1]),
        vec![
            (Transferee, Requested, None),
            (Transferee, Trying, None),
            (Transferee, Succeeded, Some(200)),
        ]
    );
    let bob_calls = calls(&mut t, BOB_N);
    assert_eq!(bob_calls.len(), 1, "{bob_calls:?}");
    assert_eq!(bob_calls[0].1, CallState::Confirmed);
    let carol_calls = calls(&mut t, CAROL_N);
    assert_eq!(carol_calls.len(), 1);
    assert_eq!(carol_calls[0].1, CallState::Confirmed);
    // carol's INVITE came from bob, referred by alice
    let inv = t.seen[2].borrow().invites[0].clone();
    assert_eq!(
        inv.from().unwrap().uri().to_string(),
        "sip:bob@example.test"
    );
    assert_eq!(
        inv.header(HeaderName::ReferredBy),
        Some("<sip:alice@example.test>")
    );
    assert!(inv.header(HeaderName::Replaces).is_none());

    // the NOTIFYs went alice-ward, each answered 200 (none refused)
    let log: Vec<String> = t.sim.log().iter().map(|e| e.first_line.clone()).collect();
    let notifies = log.iter().filter(|l| l.starts_with("NOTIFY ")).count();
    assert_eq!(notifies, 2, "{log:?}");
    assert!(!log.iter().any(|l| l.starts_with("SIP/2.0 481")), "{log:?}");
}

#[test]
fn the_transfer_target_ringing_is_told_to_the_transferor_once() {
    let mut t = three();
    let a = call(&mut t, ALICE_N, "alice", BOB, "bob");
    // carol rings (twice) and answers only when told
    let ringing: Rc<RefCell<Option<CallId>>> = Rc::default();
    let r = ringing.clone();
    t.sim.set_handler(
        t.carol,
        Box::new(move |ep, now, ev| {
            if let Event::IncomingCall { call, .. } = &ev {
                ep.answer(now, *call, 180, None).unwrap();
                ep.answer(now, *call, 180, None).unwrap();
                *r.borrow_mut() = Some(*call);
            }
            Some(ev)
        }),
    );
    let target = format!("sip:carol@{CAROL}");
    t.sim
        .with_endpoint(t.alice, |ep, now| ep.transfer(now, a, &target))
        .unwrap();
    t.sim.run_for(Duration::from_secs(1));
    use TransferRole::*;
    use TransferState::*;
    assert_eq!(
        transfers(&t.seen[0]),
        vec![
            (Transferor, Requested, None),
            (Transferor, Trying, Some(100)),
            (Transferor, Trying, Some(180)),
        ]
    );
    let carol_call = ringing.borrow().expect("carol was called");
    t.sim
        .with_endpoint(t.carol, |ep, now| {
            ep.answer(now, carol_call, 200, Some(sdp("answer")))
        })
        .unwrap();
    t.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        transfers(&t.seen[0]).last(),
        Some(&(Transferor, Succeeded, Some(200)))
    );
    let log: Vec<String> = t.sim.log().iter().map(|e| e.first_line.clone()).collect();
    let notifies = log.iter().filter(|l| l.starts_with("NOTIFY ")).count();
    assert_eq!(notifies, 3, "100, one 180, 200: {log:?}");
}

#[test]
fn a_refused_transfer_call_is_told_failed_on_both_sides_and_the_call_stays() {
    let mut t = three();
    let a = call(&mut t, ALICE_N, "alice", BOB, "bob");
    // carol refuses every call
    let rc = t.seen[2].clone();
    t.sim.set_handler(
        t.carol,
        Box::new(move |ep, now, ev| {
            if let Event::IncomingCall { call, .. } = &ev {
                ep.answer(now, *call, 486, None).unwrap();
            }
            rc.borrow_mut().events.push(ev.clone());
            Some(ev)
        }),
    );
    let target = format!("sip:carol@{CAROL}");
    t.sim
        .with_endpoint(t.alice, |ep, now| ep.transfer(now, a, &target))
        .unwrap();
    t.sim.run_for(Duration::from_secs(2));
    use TransferRole::*;
    use TransferState::*;
    assert_eq!(
        transfers(&t.seen[0]),
        vec![
            (Transferor, Requested, None),
            (Transferor, Trying, Some(100)),
            (Transferor, Failed, Some(486)),
        ]
    );
    assert_eq!(
        transfers(&t.seen[1]),
        vec![
            (Transferee, Requested, None),
            (Transferee, Trying, None),
            (Transferee, Failed, Some(486)),
        ]
    );
    // the original call is still up on both sides
    assert_eq!(calls(&mut t, ALICE_N), vec![(a, CallState::Confirmed)]);
    assert_eq!(calls(&mut t, BOB_N).len(), 1);
}

#[test]
fn an_attended_transfer_replaces_the_third_partys_call() {
    let mut t = three();
    let ab = call(&mut t, ALICE_N, "alice", BOB, "bob");
    let ac = call(&mut t, ALICE_N, "alice", CAROL, "carol");
    let carol_old = calls(&mut t, CAROL_N)[0].0;
    t.sim
        .with_endpoint(t.alice, |ep, now| ep.transfer_attended(now, ab, ac))
        .unwrap();
    t.sim.run_for(Duration::from_secs(3));

    // bob's INVITE to carol carries Replaces naming carol's call with alice
    let invites = t.seen[2].borrow().invites.clone();
    assert_eq!(invites.len(), 2);
    let inv = &invites[1];
    assert_eq!(
        inv.from().unwrap().uri().to_string(),
        "sip:bob@example.test"
    );
    let first = &invites[0];
    let want = format!(
        "{};to-tag=",
        first.call_id() // carol's dialog: alice's Call-ID
    );
    let replaces = inv.header(HeaderName::Replaces).expect("Replaces");
    assert!(replaces.starts_with(&want), "{replaces}");
    assert!(
        replaces.ends_with(&format!(
            "from-tag={}",
            first.from().unwrap().tag().unwrap()
        )),
        "{replaces}"
    );
    // carol took it as replacing her call with alice, which ended
    let replaced = t.seen[2].borrow().events.iter().find_map(|e| match e {
        Event::Call(CallEvent::ReplacesCall { replaced, .. }) => Some(*replaced),
        _ => None,
    });
    assert_eq!(replaced, Some(carol_old));
    let carol_calls = calls(&mut t, CAROL_N);
    assert_eq!(carol_calls.len(), 1, "{carol_calls:?}");
    assert_ne!(carol_calls[0].0, carol_old);
    assert_eq!(carol_calls[0].1, CallState::Confirmed);
    // bob is with carol, alice with nobody
    let bob_calls = calls(&mut t, BOB_N);
    assert_eq!(bob_calls.len(), 1, "{bob_calls:?}");
    assert!(calls(&mut t, ALICE_N).is_empty());
    assert!(transfers(&t.seen[0]).contains(&(
        TransferRole::Transferor,
        TransferState::Succeeded,
        Some(200)
    )));
}

/// A scripted peer on ALICE in a confirmed call with bob (the endpoint on
/// BOB): the dialog's (Call-ID, our tag, bob's tag).
fn scripted_call(sim: &mut Sim, peer: NodeId, bob: NodeId) -> (String, String, String) {
    let from = SocketAddr::new(ip(ALICE), 5060);
    let to = SocketAddr::new(ip(BOB), 5060);
    let inv = MessageBuilder::request(Method::Invite, &format!("sip:bob@{BOB}"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bKinv1"),
        )
        .header("From", "<sip:alice@example.test>;tag=at1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "scripted-1")
        .header("CSeq", "1 INVITE")
        .header("Contact", &format!("<sip:alice@{ALICE}:5060>"))
        .header("Max-Forwards", "70")
        .body("application/sdp", sdp("offer"))
        .build()
        .unwrap();
    sim.peer_send(peer, from, to, Transport::Udp, inv.to_bytes());
    sim.run_for(Duration::from_millis(100));
    let call = sim
        .take_events(bob)
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::IncomingCall { call, .. } => Some(call),
            _ => None,
        })
        .expect("a call");
    sim.with_endpoint(bob, |ep, now| ep.answer(now, call, 200, Some(sdp("a"))))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    let mut ok = None;
    while let Some(r) = sim.peer_recv(peer) {
        if r.message.status() == Some(200) {
            ok = Some(r);
        }
    }
    let ok = ok.expect("200");
    let bob_tag = ok.message.to().unwrap().tag().unwrap().to_owned();
    let ack = MessageBuilder::request(Method::Ack, &format!("sip:bob@{BOB}"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bKack1"),
        )
        .header("From", "<sip:alice@example.test>;tag=at1")
        .header("To", &format!("<sip:bob@example.test>;tag={bob_tag}"))
        .header("Call-ID", "scripted-1")
        .header("CSeq", "1 ACK")
        .header("Max-Forwards", "70")
        .build()
        .unwrap();
    sim.peer_send(peer, from, to, Transport::Udp, ack.to_bytes());
    sim.run_for(Duration::from_millis(100));
    sim.take_events(bob);
    ("scripted-1".into(), "at1".into(), bob_tag)
}

fn refer(bob_tag: Option<&str>, cseq: u32, refer_to: Option<&str>) -> Bytes {
    let to = match bob_tag {
        Some(t) => format!("<sip:bob@example.test>;tag={t}"),
        None => "<sip:bob@example.test>".into(),
    };
    let mut b = MessageBuilder::request(Method::Refer, &format!("sip:bob@{BOB}"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bKref{cseq}"),
        )
        .header("From", "<sip:alice@example.test>;tag=at1")
        .header("To", &to)
        .header("Call-ID", "scripted-1")
        .header("CSeq", &format!("{cseq} REFER"))
        .header("Contact", &format!("<sip:alice@{ALICE}:5060>"))
        .header("Max-Forwards", "70");
    if let Some(r) = refer_to {
        b = b.header("Refer-To", r);
    }
    b.build().unwrap().to_bytes()
}

#[test]
fn bad_refer_tos_are_refused_and_nothing_else_moves() {
    let mut sim = Sim::new(std::time::Instant::now(), 9);
    let bob = sim.add_endpoint(
        "bob",
        &[ip(BOB)],
        Config {
            seed: 4,
            ..Config::default()
        },
    );
    let peer = sim.add_peer("alice", &[ip(ALICE)]);
    let (_, _, bob_tag) = scripted_call(&mut sim, peer, bob);
    let from = SocketAddr::new(ip(ALICE), 5060);
    let to = SocketAddr::new(ip(BOB), 5060);
    let cases: [(Option<&str>, u16); 7] = [
        // a Replaces that would smuggle a header line into our INVITE
        (Some("<sip:carol@192.0.2.30?Replaces=a%3Bto-tag%3Dx%3Bfrom-tag%3Dy%0D%0AX-Evil%3A%201>"), 400),
        (Some("<sip:carol@"), 400),
        (None, 400),
        (Some("<http://example.test/x>"), 403),
        (Some("<mailto:carol@example.test>"), 403),
        // a Replaces that is not one
        (Some("<sip:carol@192.0.2.30?Replaces=nothing>"), 400),
        (Some("<sip:carol@192.0.2.30?Replaces=a%3Bto-tag%3Dx&Replaces=b%3Bto-tag%3Dy%3Bfrom-tag%3Dz>"), 400),
    ];
    for (i, (r, code)) in cases.iter().enumerate() {
        let cseq = 2 + i as u32;
        sim.peer_send(
            peer,
            from,
            to,
            Transport::Udp,
            refer(Some(&bob_tag), cseq, *r),
        );
        sim.run_for(Duration::from_millis(100));
        let got = sim.peer_recv(peer).expect("an answer");
        assert_eq!(got.message.status(), Some(*code), "{r:?}");
        assert_eq!(got.message.to().unwrap().tag(), Some(&*bob_tag));
        assert!(sim.peer_recv(peer).is_none(), "nothing else: {r:?}");
    }
    // out of any dialog: 403
    sim.peer_send(
        peer,
        from,
        to,
        Transport::Udp,
        refer(None, 20, Some("<sip:carol@192.0.2.30>")),
    );
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.peer_recv(peer).unwrap().message.status(), Some(403));
    // nothing told, the call unchanged, no call placed
    let evs = sim.take_events(bob);
    assert!(
        !evs.iter()
            .any(|(_, e)| matches!(e, Event::Transfer(_) | Event::Call(_))),
        "{evs:?}"
    );
    let calls = sim.with_endpoint(bob, |ep, _| ep.calls());
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, CallState::Confirmed);
    assert!(!sim
        .log()
        .iter()
        .any(|e| e.first_line.starts_with("INVITE ") && e.from.ip() == ip(BOB)));

    // a good one is accepted: 202, then NOTIFY 100 Trying with the REFER's id
    sim.peer_send(
        peer,
        from,
        to,
        Transport::Udp,
        refer(Some(&bob_tag), 30, Some("<sip:carol@192.0.2.30>")),
    );
    sim.run_for(Duration::from_millis(100));
    let accepted = sim.peer_recv(peer).unwrap();
    assert_eq!(accepted.message.status(), Some(202));
    let notify = sim.peer_recv(peer).unwrap();
    assert_eq!(notify.message.method(), Some(Method::Notify));
    assert_eq!(
        notify.message.header(HeaderName::Event),
        Some("refer;id=30")
    );
    assert_eq!(&notify.message.body()[..], b"SIP/2.0 100 Trying\r\n");
    assert!(notify
        .message
        .header(HeaderName::ContentType)
        .unwrap()
        .starts_with("message/sipfrag"));
    let evs = sim.take_events(bob);
    let requested = evs.iter().find_map(|(_, e)| match e {
        Event::Transfer(t) => Some(t.clone()),
        _ => None,
    });
    let requested = requested.expect("told");
    assert_eq!(requested.state, TransferState::Requested);
    assert_eq!(requested.target, "sip:carol@192.0.2.30");
    // the application gives up (no route to the target): a final NOTIFY
    sim.with_endpoint(bob, |ep, now| {
        ep.refuse_transfer(now, requested.transfer, 404)
    })
    .unwrap();
    sim.run_for(Duration::from_millis(100));
    let last = sim.peer_recv(peer).unwrap();
    assert_eq!(last.message.method(), Some(Method::Notify));
    assert!(last
        .message
        .header(HeaderName::SubscriptionState)
        .unwrap()
        .starts_with("terminated"));
    assert!(last.message.body().starts_with(b"SIP/2.0 404"));
}

#[test]
fn a_notify_refer_for_no_transfer_gets_481() {
    let mut sim = Sim::new(std::time::Instant::now(), 9);
    let bob = sim.add_endpoint("bob", &[ip(BOB)], Config::default());
    let peer = sim.add_peer("alice", &[ip(ALICE)]);
    let (_, _, bob_tag) = scripted_call(&mut sim, peer, bob);
    let n = MessageBuilder::request(Method::Notify, &format!("sip:bob@{BOB}"))
        .header("Via", &format!("SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bKn1"))
        .header("From", "<sip:alice@example.test>;tag=at1")
        .header("To", &format!("<sip:bob@example.test>;tag={bob_tag}"))
        .header("Call-ID", "scripted-1")
        .header("CSeq", "5 NOTIFY")
        .header("Event", "refer")
        .header("Subscription-State", "active")
        .header("Max-Forwards", "70")
        .body("message/sipfrag", Bytes::from_static(b"SIP/2.0 200 OK\r\n"))
        .build()
        .unwrap();
    sim.peer_send(
        peer,
        SocketAddr::new(ip(ALICE), 5060),
        SocketAddr::new(ip(BOB), 5060),
        Transport::Udp,
        n.to_bytes(),
    );
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.peer_recv(peer).unwrap().message.status(), Some(481));
    assert_eq!(sim.with_endpoint(bob, |ep, _| ep.calls()).len(), 1);
}

#[test]
fn a_challenged_refer_is_answered_and_its_notifies_follow_the_new_cseq() {
    use siproam_sip::digest::{verify, Secret, ServerChallenge};
    use support::{recv, REG};
    let (mut sim, ua, peer, call) = registered_call();

    sim.with_endpoint(ua, |ep, now| {
        ep.transfer(now, call, "sip:carol@example.test")
    })
    .unwrap();
    let refer1 = recv(&mut sim, peer);
    assert_eq!(refer1.message.method(), Some(Method::Refer));
    assert_eq!(refer1.message.cseq().seq, 2);
    let ch = ServerChallenge::new("example.test", "n1")
        .to_header_value()
        .unwrap();
    let r407 = MessageBuilder::response_to(&refer1.message, 407, "X", Some("callee"))
        .header("Proxy-Authenticate", &ch)
        .build()
        .unwrap();
    sim.peer_reply(peer, &refer1, r407.to_bytes());
    let refer2 = recv(&mut sim, peer);
    assert_eq!(refer2.message.method(), Some(Method::Refer));
    assert_eq!(refer2.message.cseq().seq, 3, "the dialog's next CSeq");
    assert_eq!(
        refer2.message.header(HeaderName::ReferTo),
        Some("<sip:carol@example.test>")
    );
    let creds: Vec<_> = refer2
        .message
        .proxy_authorization()
        .map(Result::unwrap)
        .collect();
    assert_eq!(creds.len(), 1);
    assert!(verify(&creds[0], "REFER", Secret::Password("alicepw"), b"").is_ok());
    let accepted = MessageBuilder::response_to(&refer2.message, 202, "Accepted", Some("callee"))
        .build()
        .unwrap();
    sim.peer_reply(peer, &refer2, accepted.to_bytes());
    sim.run_for(Duration::from_millis(100));
    // the transferee's NOTIFY names the REFER that was accepted (id=3)
    let notify = |cseq: u32, id: u32, frag: &str, state: &str| {
        MessageBuilder::request(Method::Notify, "sip:alice@192.0.2.10")
            .header(
                "Via",
                &format!("SIP/2.0/UDP {REG}:5060;branch=z9hG4bKnt{cseq}"),
            )
            .header("From", "<sip:bob@example.test>;tag=callee")
            .header(
                "To",
                &format!(
                    "<sip:alice@example.test>;tag={}",
                    refer2.message.from().unwrap().tag().unwrap()
                ),
            )
            .header("Call-ID", refer2.message.call_id())
            .header("CSeq", &format!("{cseq} NOTIFY"))
            .header("Event", &format!("refer;id={id}"))
            .header("Subscription-State", state)
            .header("Max-Forwards", "70")
            .body("message/sipfrag;version=2.0", Bytes::from(frag.to_owned()))
            .build()
            .unwrap()
            .to_bytes()
    };
    let (from, to) = (
        SocketAddr::new(ip(REG), 5060),
        SocketAddr::new(ip(support::UA), 5060),
    );
    // one for the challenged REFER's CSeq is no transfer of ours
    sim.peer_send(
        peer,
        from,
        to,
        Transport::Udp,
        notify(2, 2, "SIP/2.0 100 Trying\r\n", "active"),
    );
    assert_eq!(recv(&mut sim, peer).message.status(), Some(481));
    sim.peer_send(
        peer,
        from,
        to,
        Transport::Udp,
        notify(3, 3, "SIP/2.0 200 OK\r\n", "terminated"),
    );
    assert_eq!(recv(&mut sim, peer).message.status(), Some(200));
    // success: the call is hung up
    let bye = recv(&mut sim, peer);
    assert_eq!(bye.message.method(), Some(Method::Bye));
    let evs = sim.take_events(ua);
    let states: Vec<TransferState> = evs
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Transfer(t) => Some(t.state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![TransferState::Requested, TransferState::Succeeded]
    );
}

/// A REFER accepted (202) and never followed by a NOTIFY: after 64·T1
/// the transfer is told failed (408) and the call stays (it waited as
/// long as the call lasted).
#[test]
fn an_accepted_refer_with_no_notify_fails_after_64_t1_and_the_call_stays() {
    use support::recv;
    let (mut sim, ua, peer, call) = registered_call();
    sim.with_endpoint(ua, |ep, now| {
        ep.transfer(now, call, "sip:carol@example.test")
    })
    .unwrap();
    let refer = recv(&mut sim, peer);
    assert_eq!(refer.message.method(), Some(Method::Refer));
    let accepted = MessageBuilder::response_to(&refer.message, 202, "Accepted", Some("callee"))
        .build()
        .unwrap();
    sim.peer_reply(peer, &refer, accepted.to_bytes());
    let told = |sim: &mut Sim| -> Vec<(TransferState, Option<u16>)> {
        sim.take_events(ua)
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Transfer(t) => Some((t.state, t.code)),
                _ => None,
            })
            .collect()
    };
    sim.run_for(Duration::from_secs(20));
    assert!(
        !told(&mut sim)
            .iter()
            .any(|(s, _)| *s == TransferState::Failed),
        "still waiting at 20 s"
    );
    sim.run_for(Duration::from_secs(20));
    assert_eq!(told(&mut sim), [(TransferState::Failed, Some(408))]);
    let calls = sim.with_endpoint(ua, |ep, _| ep.calls());
    assert_eq!(calls.len(), 1, "the call stays");
}

/// Alice registered with the scripted proxy on REG (password `alicepw`)
/// and in a confirmed call with it (the proxy is also the callee).
fn registered_call() -> (Sim, NodeId, NodeId, CallId) {
    use support::{ok, recv, setup, REG};
    let (mut sim, ua, peer, cfg) = setup(Transport::Udp);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r = recv(&mut sim, peer);
    ok(&mut sim, peer, &r, 3600);
    sim.run_for(Duration::from_millis(100));
    let spec = InviteSpec {
        uri: "sip:bob@example.test".into(),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Udp,
            remote: SocketAddr::new(ip(REG), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    let call = sim
        .with_endpoint(ua, |ep, now| ep.invite(now, spec))
        .unwrap();
    let inv = recv(&mut sim, peer);
    let resp = MessageBuilder::response_to(&inv.message, 200, "OK", Some("callee"))
        .header("Contact", &format!("<sip:bob@{REG}:5060>"))
        .body("application/sdp", sdp("answer"))
        .build()
        .unwrap();
    sim.peer_reply(peer, &inv, resp.to_bytes());
    let ack = recv(&mut sim, peer);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    sim.run_for(Duration::from_millis(100));
    sim.take_events(ua);
    (sim, ua, peer, call)
}
