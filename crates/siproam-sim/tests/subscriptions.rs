//! Subscriptions (RFC 6665) in the simulator: two agents (presence open
//! then closed, refresh, unsubscribe, expiry), a scripted notifier (a
//! NOTIFY before the 2xx, forked NOTIFYs, 481, a malformed body) and a
//! scripted subscriber (489, final NOTIFY on expiry and on a failed flow),
//! and a subscription over a failed flow subscribing again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::subscription::{BasicStatus, NotifyBody, Presence};
use siproam_core::{
    Config, Event, SubId, SubscribeSpec, SubscriptionEvent, SubscriptionReason, SubscriptionRole,
    SubscriptionState, Target, Transport,
};
use siproam_sim::{NodeId, Received, Sim};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};

const ALICE: &str = "192.0.2.10";
const BOB: &str = "192.0.2.20";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bob_addr() -> SocketAddr {
    SocketAddr::new(ip(BOB), 5060)
}

/// An agent `name` on `ips` whose randomness is drawn from `seed`.
fn agent(sim: &mut Sim, name: &str, ips: &[IpAddr], seed: u64) -> NodeId {
    sim.add_endpoint(
        name,
        ips,
        Config {
            seed,
            ..Config::default()
        },
    )
}

/// Alice an agent, Bob a scripted peer.
fn sim_with_peer_bob() -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(Instant::now(), 5);
    let alice = agent(&mut sim, "alice", &[ip(ALICE)], 1);
    let bob = sim.add_peer("bob", &[ip(BOB)]);
    (sim, alice, bob)
}

/// Alice and Bob both agents.
fn sim_with_agents() -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(Instant::now(), 5);
    let alice = agent(&mut sim, "alice", &[ip(ALICE)], 1);
    let bob = sim.add_endpoint("bob", &[ip(BOB)], bob_config(&["sip:alice@example.test"]));
    (sim, alice, bob)
}

/// Bob's agent: `sip:bob@example.test` (no account registers it), serving
/// `watchers`.
fn bob_config(watchers: &[&str]) -> Config {
    Config {
        seed: 2,
        local_aors: vec!["sip:bob@example.test".into()],
        watchers: watchers.iter().map(|w| (*w).to_owned()).collect(),
        ..Config::default()
    }
}

/// Alice (an agent) subscribes to the scripted Bob's presence over
/// `transport`; Bob answers 200 with `Expires: 600` and `extra`. Returns
/// (sim, alice, bob, her subscription, her SUBSCRIBE as Bob got it).
fn subscribed_to_peer_bob(
    transport: Transport,
    extra: &[(&str, &str)],
) -> (Sim, NodeId, NodeId, SubId, Received) {
    let (mut sim, alice, bob) = sim_with_peer_bob();
    let sub = subscribe(&mut sim, alice, "presence", transport);
    let s = recv(&mut sim, bob);
    let mut headers = vec![("Expires", "600")];
    headers.extend_from_slice(extra);
    reply(&mut sim, bob, &s, 200, &headers);
    (sim, alice, bob, sub, s)
}

/// Bob an agent (the notifier), Alice a scripted peer: (sim, bob, alice).
fn sim_with_peer_alice() -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(Instant::now(), 5);
    let bob = sim.add_endpoint("bob", &[ip(BOB)], bob_config(&["sip:alice@example.test"]));
    let alice = sim.add_peer("alice", &[ip(ALICE)]);
    (sim, bob, alice)
}

/// The scripted Alice's SUBSCRIBE to the agent Bob over `transport`
/// (Call-ID `call_id`, Via branch `z9hG4bK{branch}`, CSeq 1, no Contact
/// nor Expires yet).
fn subscribe_to_bob(transport: Transport, call_id: &str, branch: &str) -> MessageBuilder {
    let (uri, via) = match transport {
        Transport::Tcp => (format!("sip:bob@{BOB};transport=tcp"), "TCP"),
        _ => (format!("sip:bob@{BOB}"), "UDP"),
    };
    MessageBuilder::request(Method::Subscribe, &uri)
        .header(
            "Via",
            &format!("SIP/2.0/{via} {ALICE}:5060;branch=z9hG4bK{branch}"),
        )
        .header("Max-Forwards", "70")
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", &format!("<sip:bob@{BOB}>"))
        .header("Call-ID", call_id)
        .header("CSeq", "1 SUBSCRIBE")
        .header("Event", "presence")
}

/// The scripted Alice sends `req` to Bob from her `port`.
fn send_to_bob(sim: &mut Sim, alice: NodeId, port: u16, transport: Transport, req: Message) {
    sim.peer_send(
        alice,
        SocketAddr::new(ip(ALICE), port),
        bob_addr(),
        transport,
        req.to_bytes(),
    );
}

fn subscribe(sim: &mut Sim, alice: NodeId, event: &str, transport: Transport) -> SubId {
    let spec = SubscribeSpec {
        uri: format!("sip:bob@{BOB}"),
        from: "sip:alice@example.test".into(),
        event: event.into(),
        expires: 600,
        target: Target {
            transport,
            remote: bob_addr(),
            local: None,
            server_name: None,
        },
        contact_user: "alice".into(),
    };
    sim.with_endpoint(alice, |ep, now| ep.subscribe(now, spec))
        .unwrap()
}

fn sub_events(sim: &mut Sim, node: NodeId) -> Vec<SubscriptionEvent> {
    sim.take_events(node)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Subscription(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn presence_of(e: &SubscriptionEvent) -> Option<BasicStatus> {
    match &e.body {
        Some(NotifyBody::Presence(p)) => Some(p.status),
        _ => None,
    }
}

fn recv(sim: &mut Sim, peer: NodeId) -> Received {
    sim.run_until_peer_receives(peer, Duration::from_secs(4000))
        .expect("a message")
}

/// Bob's answer to a request Alice sent him.
fn reply(sim: &mut Sim, bob: NodeId, to: &Received, code: u16, extra: &[(&str, &str)]) {
    let mut b = MessageBuilder::response_to(&to.message, code, "X", Some("b1"));
    for (n, v) in extra {
        b = b.header(n, v);
    }
    sim.peer_reply(bob, to, b.build().unwrap().to_bytes());
}

/// A NOTIFY from the scripted Bob in the dialog of Alice's SUBSCRIBE
/// `sub`, with `bob_tag` as his tag.
fn notify(sub: &Message, bob_tag: &str, cseq: u32, state: &str, body: Option<&str>) -> Bytes {
    let alice_from = sub.header(HeaderName::From).unwrap();
    let mut b = MessageBuilder::request(Method::Notify, &format!("sip:alice@{ALICE}"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP {BOB}:5060;branch=z9hG4bKn{bob_tag}{cseq}"),
        )
        .header("Max-Forwards", "70")
        .header("From", &format!("<sip:bob@{BOB}>;tag={bob_tag}"))
        .header("To", alice_from)
        .header("Call-ID", sub.call_id())
        .header("CSeq", &format!("{cseq} NOTIFY"))
        .header("Contact", &format!("<sip:bob@{BOB}>"))
        .header("Event", "presence")
        .header("Subscription-State", state);
    if let Some(body) = body {
        b = b.body("application/pidf+xml", Bytes::from(body.to_owned()));
    }
    b.build().unwrap().to_bytes()
}

fn pidf(status: &str) -> String {
    format!(
        "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@{BOB}\"><tuple id=\"t\"><status><basic>{status}</basic></status></tuple></presence>"
    )
}

fn send_to_alice(sim: &mut Sim, bob: NodeId, bytes: Bytes) {
    sim.peer_send(
        bob,
        bob_addr(),
        SocketAddr::new(ip(ALICE), 5060),
        Transport::Udp,
        bytes,
    );
}

fn subscribes_sent(sim: &Sim) -> usize {
    sim.log()
        .iter()
        .filter(|e| e.first_line.starts_with("SUBSCRIBE"))
        .count()
}

#[test]
fn a_presence_subscription_sees_open_then_closed_and_is_refreshed_before_expiry() {
    let (mut sim, alice, bob) = sim_with_agents();
    sim.with_endpoint(bob, |ep, now| ep.set_presence(now, true));
    let sub = subscribe(&mut sim, alice, "presence", Transport::Udp);
    sim.run_for(Duration::from_millis(200));
    let evs = sub_events(&mut sim, alice);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(evs[0].state, SubscriptionState::Pending);
    assert_eq!(evs[1].sub, sub);
    assert_eq!(evs[1].state, SubscriptionState::Active);
    assert_eq!(presence_of(&evs[1]), Some(BasicStatus::Open));
    assert_eq!(
        evs[1].body,
        Some(NotifyBody::Presence(Presence {
            entity: format!("sip:bob@{BOB}"),
            status: BasicStatus::Open
        }))
    );
    let served = sub_events(&mut sim, bob);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].role, SubscriptionRole::Notifier);
    assert_eq!(served[0].peer, "sip:alice@example.test");

    sim.with_endpoint(bob, |ep, now| ep.set_presence(now, false));
    sim.run_for(Duration::from_millis(200));
    let evs = sub_events(&mut sim, alice);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].state, SubscriptionState::Active);
    assert_eq!(presence_of(&evs[0]), Some(BasicStatus::Closed));

    // granted 600 s: refreshed at 85 %, three times over half an hour,
    // and never lapses at Bob (no final NOTIFY)
    let before = subscribes_sent(&sim);
    sim.run_for(Duration::from_secs(510 + 5));
    assert_eq!(subscribes_sent(&sim) - before, 1, "one refresh by 515 s");
    sim.run_for(Duration::from_secs(1800));
    assert!(subscribes_sent(&sim) - before >= 3);
    let evs = sub_events(&mut sim, alice);
    assert!(!evs.is_empty(), "each refresh is followed by a NOTIFY");
    assert!(evs.iter().all(|e| e.state == SubscriptionState::Active));
    assert!(sub_events(&mut sim, bob).is_empty());
    assert_eq!(
        sim.endpoint(alice).subscriptions(),
        [(sub, SubscriptionRole::Subscriber, SubscriptionState::Active)]
    );
}

#[test]
fn unsubscribing_ends_with_the_final_notify_on_both_sides() {
    let (mut sim, alice, bob) = sim_with_agents();
    let sub = subscribe(&mut sim, alice, "message-summary", Transport::Udp);
    sim.run_for(Duration::from_millis(200));
    let evs = sub_events(&mut sim, alice);
    assert_eq!(evs.last().unwrap().state, SubscriptionState::Active);
    assert!(matches!(
        evs.last().unwrap().body,
        Some(NotifyBody::MessageSummary(ref s)) if !s.waiting
    ));
    sub_events(&mut sim, bob);
    sim.with_endpoint(alice, |ep, now| ep.unsubscribe(now, sub))
        .unwrap();
    sim.run_for(Duration::from_millis(200));
    let evs = sub_events(&mut sim, alice);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].state, SubscriptionState::Terminated);
    assert_eq!(evs[0].reason, Some(SubscriptionReason::Unsubscribed));
    let served = sub_events(&mut sim, bob);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].state, SubscriptionState::Terminated);
    assert_eq!(served[0].reason, Some(SubscriptionReason::Timeout));
    assert!(sim.endpoint(alice).subscriptions().is_empty());
    assert!(sim.endpoint(bob).subscriptions().is_empty());
}

#[test]
fn an_unknown_event_package_gets_489_and_ends_the_subscription() {
    let (mut sim, alice, bob) = sim_with_agents();
    subscribe(&mut sim, alice, "dialog", Transport::Udp);
    sim.run_for(Duration::from_millis(200));
    let evs = sub_events(&mut sim, alice);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1].state, SubscriptionState::Terminated);
    assert_eq!(evs[1].reason, Some(SubscriptionReason::Refused(489)));
    assert_eq!(evs[1].reason.as_ref().unwrap().text(), "bad_event");
    assert!(sim
        .log()
        .iter()
        .any(|e| e.first_line.starts_with("SIP/2.0 489")));
    assert!(sim.endpoint(bob).subscriptions().is_empty());
}

#[test]
fn a_served_subscription_expires_with_a_final_notify_terminated_timeout() {
    let (mut sim, agent, peer) = sim_with_peer_alice();
    sim.with_endpoint(agent, |ep, now| ep.set_presence(now, true));
    let sub = subscribe_to_bob(Transport::Udp, "sub1@alice", "s1")
        .header("Contact", &format!("<sip:alice@{ALICE}>"))
        .header("Expires", "60")
        .build()
        .unwrap();
    send_to_bob(&mut sim, peer, 5060, Transport::Udp, sub);
    let ok = recv(&mut sim, peer);
    assert_eq!(ok.message.status(), Some(200));
    assert_eq!(ok.message.header(HeaderName::Expires), Some("60"));
    let first = recv(&mut sim, peer);
    assert_eq!(first.message.method(), Some(Method::Notify));
    assert!(first
        .message
        .header(HeaderName::SubscriptionState)
        .unwrap()
        .starts_with("active"));
    assert!(String::from_utf8_lossy(first.message.body()).contains("<basic>open</basic>"));
    reply(&mut sim, peer, &first, 200, &[]);
    let last = recv(&mut sim, peer);
    assert_eq!(last.message.method(), Some(Method::Notify));
    assert_eq!(
        last.message.header(HeaderName::SubscriptionState),
        Some("terminated;reason=timeout")
    );
    assert!(last.at - first.at >= Duration::from_secs(59));
    reply(&mut sim, peer, &last, 200, &[]);
    assert!(sim.endpoint(agent).subscriptions().is_empty());
}

#[test]
fn a_notify_before_the_2xx_makes_the_dialog_and_the_refresh_goes_in_it() {
    let (mut sim, alice, bob) = sim_with_peer_bob();
    subscribe(&mut sim, alice, "presence", Transport::Udp);
    let s = recv(&mut sim, bob);
    assert_eq!(s.message.method(), Some(Method::Subscribe));
    assert_eq!(s.message.header(HeaderName::Event), Some("presence"));
    assert_eq!(s.message.header(HeaderName::Expires), Some("600"));
    assert_eq!(
        s.message.header(HeaderName::Accept),
        Some("application/pidf+xml")
    );
    // the NOTIFY overtakes the 2xx
    send_to_alice(
        &mut sim,
        bob,
        notify(
            &s.message,
            "b1",
            1,
            "active;expires=300",
            Some(&pidf("open")),
        ),
    );
    let answer = recv(&mut sim, bob);
    assert_eq!(answer.message.status(), Some(200));
    reply(&mut sim, bob, &s, 200, &[("Expires", "600")]);
    sim.run_for(Duration::from_millis(100));
    let evs = sub_events(&mut sim, alice);
    assert_eq!(evs.last().unwrap().state, SubscriptionState::Active);
    assert_eq!(presence_of(evs.last().unwrap()), Some(BasicStatus::Open));
    // the NOTIFY's expires (300) is what the refresh follows, in the dialog
    let refresh = recv(&mut sim, bob);
    assert_eq!(refresh.message.method(), Some(Method::Subscribe));
    assert_eq!(refresh.message.call_id(), s.message.call_id());
    assert_eq!(refresh.message.to().unwrap().tag(), Some("b1"));
    assert_eq!(refresh.message.cseq().seq, 2);
    let start = sim.now() - sim.elapsed();
    let at = refresh.at - start;
    assert!(
        at >= Duration::from_secs(250) && at <= Duration::from_secs(260),
        "{at:?}"
    );
}

#[test]
fn a_notify_for_no_subscription_gets_481() {
    let (mut sim, alice, bob) = sim_with_peer_bob();
    let fake = MessageBuilder::request(Method::Subscribe, "sip:x@example.test")
        .header("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKf")
        .header("From", "<sip:alice@example.test>;tag=nope")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "unknown@x")
        .header("CSeq", "1 SUBSCRIBE")
        .build()
        .unwrap();
    send_to_alice(
        &mut sim,
        bob,
        notify(&fake, "b9", 1, "active", Some(&pidf("open"))),
    );
    let r = recv(&mut sim, bob);
    assert_eq!(r.message.status(), Some(481));
    assert!(sub_events(&mut sim, alice).is_empty());
}

#[test]
fn forked_notifies_keep_the_first_dialog_and_end_the_others_with_481() {
    let (mut sim, alice, bob) = sim_with_peer_bob();
    let sub = subscribe(&mut sim, alice, "presence", Transport::Udp);
    let s = recv(&mut sim, bob);
    send_to_alice(
        &mut sim,
        bob,
        notify(&s.message, "fork1", 1, "active", Some(&pidf("open"))),
    );
    assert_eq!(recv(&mut sim, bob).message.status(), Some(200));
    send_to_alice(
        &mut sim,
        bob,
        notify(&s.message, "fork2", 1, "active", Some(&pidf("closed"))),
    );
    assert_eq!(recv(&mut sim, bob).message.status(), Some(481));
    let evs = sub_events(&mut sim, alice);
    let active: Vec<_> = evs
        .iter()
        .filter(|e| e.state == SubscriptionState::Active)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].sub, sub);
    assert_eq!(presence_of(active[0]), Some(BasicStatus::Open));
}

#[test]
fn a_final_notify_reports_its_reason_and_retry_after_and_a_malformed_body_is_refused() {
    let (mut sim, alice, bob, sub, s) = subscribed_to_peer_bob(Transport::Udp, &[]);
    send_to_alice(
        &mut sim,
        bob,
        notify(&s.message, "b1", 1, "active", Some("<presence><basic>")),
    );
    assert_eq!(recv(&mut sim, bob).message.status(), Some(400));
    send_to_alice(
        &mut sim,
        bob,
        notify(
            &s.message,
            "b1",
            2,
            "terminated;reason=rejected;retry-after=90",
            None,
        ),
    );
    assert_eq!(recv(&mut sim, bob).message.status(), Some(200));
    sim.run_for(Duration::from_millis(50));
    let evs = sub_events(&mut sim, alice);
    assert!(matches!(
        evs[1].reason,
        Some(SubscriptionReason::MalformedBody(_))
    ));
    let last = evs.last().unwrap();
    assert_eq!(last.sub, sub);
    assert_eq!(last.state, SubscriptionState::Terminated);
    assert_eq!(last.reason, Some(SubscriptionReason::Rejected));
    assert_eq!(last.retry_after, Some(90));
    assert!(sim.endpoint(alice).subscriptions().is_empty());
}

#[test]
fn a_deactivated_subscription_subscribes_again_at_once_in_a_new_dialog() {
    let (mut sim, _alice, bob, _sub, s) = subscribed_to_peer_bob(Transport::Udp, &[]);
    send_to_alice(
        &mut sim,
        bob,
        notify(&s.message, "b1", 1, "terminated;reason=deactivated", None),
    );
    assert_eq!(recv(&mut sim, bob).message.status(), Some(200));
    let again = recv(&mut sim, bob);
    assert_eq!(again.message.method(), Some(Method::Subscribe));
    assert_ne!(again.message.call_id(), s.message.call_id());
    assert_eq!(again.message.to().unwrap().tag(), None);
}

#[test]
fn a_subscription_over_a_failed_flow_subscribes_again_at_once_over_a_new_one() {
    let (mut sim, alice, bob, sub, s) = subscribed_to_peer_bob(Transport::Tcp, &[]);
    sim.run_for(Duration::from_millis(100));
    sub_events(&mut sim, alice);
    let conn = s.conn.expect("a TCP connection");
    sim.peer_close(conn);
    let again = recv(&mut sim, bob);
    assert_eq!(again.message.method(), Some(Method::Subscribe));
    assert_ne!(again.conn, Some(conn), "over a new connection");
    assert_ne!(again.message.call_id(), s.message.call_id());
    let evs = sub_events(&mut sim, alice);
    assert!(evs.iter().any(|e| e.sub == sub
        && e.state == SubscriptionState::Pending
        && e.reason == Some(SubscriptionReason::FlowFailed)));
}

#[test]
fn a_served_subscription_over_a_failed_flow_ends_with_a_final_notify() {
    let (mut sim, agent, peer) = sim_with_peer_alice();
    let sub = subscribe_to_bob(Transport::Tcp, "sub2@alice", "s1")
        .header(
            "Contact",
            &format!("<sip:alice@{ALICE}:5060;transport=tcp>"),
        )
        .build()
        .unwrap();
    send_to_bob(&mut sim, peer, 40000, Transport::Tcp, sub);
    let ok = recv(&mut sim, peer);
    assert_eq!(ok.message.status(), Some(200));
    let first = recv(&mut sim, peer);
    assert_eq!(first.message.method(), Some(Method::Notify));
    reply(&mut sim, peer, &first, 200, &[]);
    sim.run_for(Duration::from_millis(50));
    sim.peer_close(ok.conn.unwrap());
    let last = recv(&mut sim, peer);
    assert_eq!(last.message.method(), Some(Method::Notify));
    assert_eq!(
        last.message.header(HeaderName::SubscriptionState),
        Some("terminated;reason=deactivated")
    );
    assert_eq!(last.to, SocketAddr::new(ip(ALICE), 5060), "to its Contact");
    let evs = sub_events(&mut sim, agent);
    assert_eq!(evs.last().unwrap().state, SubscriptionState::Terminated);
    assert_eq!(
        evs.last().unwrap().reason,
        Some(SubscriptionReason::Deactivated)
    );
}

#[test]
fn after_an_address_change_the_subscription_is_refreshed_with_the_new_contact() {
    const NEW: &str = "192.0.2.11";
    let mut sim = Sim::new(Instant::now(), 5);
    let alice = agent(&mut sim, "alice", &[ip(ALICE), ip(NEW)], 1);
    let bob = sim.add_endpoint("bob", &[ip(BOB)], bob_config(&["sip:alice@example.test"]));
    sim.with_endpoint(bob, |ep, now| ep.set_presence(now, true));
    let sub = subscribe(&mut sim, alice, "presence", Transport::Udp);
    sim.run_for(Duration::from_millis(200));
    sub_events(&mut sim, alice);
    let mark = sim.log().len();
    sim.ip_change(alice, siproam_core::IpChangeParams::new(ip(NEW)));
    sim.run_for(Duration::from_millis(200));
    let refresh = sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("SUBSCRIBE"))
        .expect("a refresh after the change")
        .clone();
    assert_eq!(refresh.from.ip(), ip(NEW));
    // Bob's NOTIFYs now go to the new Contact
    sim.with_endpoint(bob, |ep, now| ep.set_presence(now, false));
    sim.run_for(Duration::from_millis(200));
    let notify = sim
        .log()
        .iter()
        .rev()
        .find(|e| e.first_line.starts_with("NOTIFY"))
        .unwrap()
        .clone();
    assert_eq!(notify.to.ip(), ip(NEW));
    let evs = sub_events(&mut sim, alice);
    let last = evs.last().unwrap();
    assert_eq!(last.sub, sub);
    assert_eq!(last.state, SubscriptionState::Active);
    assert_eq!(presence_of(last), Some(BasicStatus::Closed));
}

#[test]
fn a_423_is_retried_once_with_the_min_expires() {
    let (mut sim, alice, bob) = sim_with_peer_bob();
    subscribe(&mut sim, alice, "presence", Transport::Udp);
    let s = recv(&mut sim, bob);
    reply(&mut sim, bob, &s, 423, &[("Min-Expires", "1200")]);
    let again = recv(&mut sim, bob);
    assert_eq!(again.message.method(), Some(Method::Subscribe));
    assert_eq!(again.message.header(HeaderName::Expires), Some("1200"));
    reply(&mut sim, bob, &again, 423, &[("Min-Expires", "2400")]);
    sim.run_for(Duration::from_millis(100));
    let evs = sub_events(&mut sim, alice);
    assert_eq!(evs.last().unwrap().state, SubscriptionState::Terminated);
    assert_eq!(
        evs.last().unwrap().reason,
        Some(SubscriptionReason::Refused(423))
    );
}

/// A SUBSCRIBE to us with an Expires below 60 s gets 423 with
/// `Min-Expires: 60`, an unreadable one 400, both as a new subscription
/// and as a refresh (which leaves the subscription as it was).
#[test]
fn a_served_subscribe_too_short_gets_423_and_an_unreadable_expires_400() {
    let (mut sim, agent, peer) = sim_with_peer_alice();
    let ask = |expires: &str, cseq: u32, to_tag: Option<&str>| {
        let mut m = subscribe_to_bob(Transport::Udp, "sub3@alice", &format!("x{cseq}"))
            .header("Contact", &format!("<sip:alice@{ALICE}>"))
            .header("Expires", expires)
            .build()
            .unwrap();
        m.set_header("CSeq", &format!("{cseq} SUBSCRIBE")).unwrap();
        if let Some(tag) = to_tag {
            m.set_header("To", &format!("<sip:bob@{BOB}>;tag={tag}"))
                .unwrap();
        }
        m
    };
    let answer = |sim: &mut Sim, req: Message| {
        send_to_bob(sim, peer, 5060, Transport::Udp, req);
        recv(sim, peer)
    };
    // a new subscription
    let r = answer(&mut sim, ask("59", 1, None));
    assert_eq!(r.message.status(), Some(423));
    assert_eq!(r.message.header(HeaderName::MinExpires), Some("60"));
    let r = answer(&mut sim, ask("soon", 2, None));
    assert_eq!(r.message.status(), Some(400));
    assert!(sim.endpoint(agent).subscriptions().is_empty());
    // 60 s is long enough
    let r = answer(&mut sim, ask("60", 3, None));
    assert_eq!(r.message.status(), Some(200));
    let tag = r.message.to().unwrap().tag().unwrap().to_owned();
    let first = recv(&mut sim, peer);
    assert_eq!(first.message.method(), Some(Method::Notify));
    reply(&mut sim, peer, &first, 200, &[]);
    // its refreshes
    let r = answer(&mut sim, ask("1", 4, Some(&tag)));
    assert_eq!(r.message.status(), Some(423));
    assert_eq!(r.message.header(HeaderName::MinExpires), Some("60"));
    let r = answer(&mut sim, ask("-5", 5, Some(&tag)));
    assert_eq!(r.message.status(), Some(400));
    assert_eq!(sim.endpoint(agent).subscriptions().len(), 1);
    let r = answer(&mut sim, ask("600", 6, Some(&tag)));
    assert_eq!(r.message.status(), Some(200));
    assert_eq!(r.message.header(HeaderName::Expires), Some("600"));
}

#[test]
fn probation_subscribes_again_after_retry_after() {
    let (mut sim, _alice, bob, _sub, s) = subscribed_to_peer_bob(Transport::Udp, &[]);
    send_to_alice(
        &mut sim,
        bob,
        notify(
            &s.message,
            "b1",
            1,
            "terminated;reason=probation;retry-after=40",
            None,
        ),
    );
    let ok = recv(&mut sim, bob);
    assert_eq!(ok.message.status(), Some(200));
    let again = recv(&mut sim, bob);
    assert_eq!(again.message.method(), Some(Method::Subscribe));
    assert_ne!(again.message.call_id(), s.message.call_id());
    let waited = again.at - ok.at;
    assert!(
        waited >= Duration::from_secs(40) && waited < Duration::from_secs(41),
        "{waited:?}"
    );
}

#[test]
fn broken_notifies_get_clear_answers_and_change_nothing() {
    let (mut sim, alice, bob, sub, s) = subscribed_to_peer_bob(Transport::Udp, &[]);
    // no Subscription-State: 400
    let mut cseq = 1;
    let without = {
        let m =
            siproam_sip::Message::parse(notify(&s.message, "b1", cseq, "active", None)).unwrap();
        let mut m = m;
        m.remove_header("Subscription-State").unwrap();
        m.to_bytes()
    };
    send_to_alice(&mut sim, bob, without);
    assert_eq!(recv(&mut sim, bob).message.status(), Some(400));
    // a body type the package does not take: 415 with Accept
    cseq += 1;
    let mut m =
        siproam_sip::Message::parse(notify(&s.message, "b1", cseq, "active", None)).unwrap();
    m.set_body(Bytes::from_static(b"<x/>"), Some("application/xpidf+xml"))
        .unwrap();
    send_to_alice(&mut sim, bob, m.to_bytes());
    let r = recv(&mut sim, bob);
    assert_eq!(r.message.status(), Some(415));
    assert_eq!(
        r.message.header(HeaderName::Accept),
        Some("application/pidf+xml")
    );
    // garbage bodies of every shape: 400, never a panic
    for garbage in [
        &b"\xff\xfe\x00"[..],
        b"<presence entity=",
        b"<presence entity=\"x\"><basic>",
        b"<<<<>>>>",
        b"",
    ] {
        cseq += 1;
        let mut m =
            siproam_sip::Message::parse(notify(&s.message, "b1", cseq, "active", None)).unwrap();
        m.set_body(
            Bytes::copy_from_slice(garbage),
            Some("application/pidf+xml"),
        )
        .unwrap();
        send_to_alice(&mut sim, bob, m.to_bytes());
        let code = recv(&mut sim, bob).message.status();
        let want = if garbage.is_empty() { 200 } else { 400 };
        assert_eq!(code, Some(want), "{garbage:?}");
    }
    // still there
    assert_eq!(sim.endpoint(alice).subscriptions().len(), 1);
    assert_eq!(sim.endpoint(alice).subscriptions()[0].0, sub);
}

#[test]
fn with_the_ignore_policy_a_subscribe_lost_with_its_flow_is_tried_again_later() {
    let (mut sim, alice, bob) = sim_with_peer_bob();
    sim.endpoint(alice)
        .set_flow_failure_policy(siproam_core::FlowFailurePolicy {
            client_subscription: siproam_core::ClientSubscriptionRecovery::Ignore,
            ..Default::default()
        });
    let sub = subscribe(&mut sim, alice, "presence", Transport::Tcp);
    let s = recv(&mut sim, bob);
    // no answer: the connection closes under the SUBSCRIBE
    sim.peer_close(s.conn.unwrap());
    let again = recv(&mut sim, bob);
    assert_eq!(again.message.method(), Some(Method::Subscribe));
    assert_eq!(again.message.call_id(), s.message.call_id(), "same dialog");
    assert!(again.at - s.at >= Duration::from_secs(30));
    let evs = sub_events(&mut sim, alice);
    assert!(evs
        .iter()
        .all(|e| e.sub == sub && e.state == SubscriptionState::Pending));
}

/// The answers to SUBSCRIBE and NOTIFY carry their codes' reason phrases
/// (baresip showed `SIP/2.0 200 Error` for our 200s).
#[test]
fn answers_to_subscribe_and_notify_carry_their_reason_phrases() {
    let (mut sim, alice, _bob) = sim_with_agents();
    subscribe(&mut sim, alice, "presence", Transport::Udp);
    subscribe(&mut sim, alice, "dialog", Transport::Udp);
    sim.run_for(Duration::from_millis(200));
    let lines: Vec<String> = sim
        .log()
        .iter()
        .filter(|e| e.first_line.starts_with("SIP/2.0 "))
        .map(|e| e.first_line.clone())
        .collect();
    for code in ["200", "489"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("SIP/2.0 {code} "))),
            "no {code}: {lines:?}"
        );
    }
    let wrong: Vec<&String> = lines
        .iter()
        .filter(|l| {
            !(l.starts_with("SIP/2.0 200 OK")
                || l.starts_with("SIP/2.0 489 Bad Event")
                || l.starts_with("SIP/2.0 401 ")
                || l.starts_with("SIP/2.0 100 "))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// A SUBSCRIBE that came through Record-Routing proxies is answered with
/// their Record-Route (RFC 3261 §12.1.1): the subscriber's refreshes and
/// un-SUBSCRIBE go through them too (baresip's went straight to us after
/// Kamailio, and a NOTIFY's route set is the notifier's own).
#[test]
fn the_2xx_to_a_subscribe_carries_its_record_route() {
    let (mut sim, _bob, peer) = sim_with_peer_alice();
    let sub = subscribe_to_bob(Transport::Udp, "subrr@alice", "rr1")
        .header("Record-Route", "<sip:p2.example.test;lr>")
        .header("Record-Route", &format!("<sip:{ALICE}:5060;lr>"))
        .header("Contact", "<sip:alice@192.0.2.99>")
        .header("Expires", "600")
        .build()
        .unwrap();
    send_to_bob(&mut sim, peer, 5060, Transport::Udp, sub);
    let ok = recv(&mut sim, peer);
    assert_eq!(ok.message.status(), Some(200));
    let rr: Vec<&str> = ok.message.header_values(HeaderName::RecordRoute).collect();
    assert_eq!(
        rr.iter()
            .flat_map(|v| siproam_sip::split_list(v))
            .map(str::trim)
            .collect::<Vec<_>>(),
        [
            "<sip:p2.example.test;lr>",
            &format!("<sip:{ALICE}:5060;lr>")
        ],
        "{:?}",
        ok.message
    );
    // and its NOTIFY goes by that route set (a UAS keeps their order)
    let first = recv(&mut sim, peer);
    assert_eq!(first.message.method(), Some(Method::Notify));
    let route: Vec<String> = first
        .message
        .header_values(HeaderName::Route)
        .flat_map(siproam_sip::split_list)
        .map(|r| r.trim().to_owned())
        .collect();
    assert_eq!(
        route,
        [
            "<sip:p2.example.test;lr>".to_owned(),
            format!("<sip:{ALICE}:5060;lr>")
        ]
    );
}

/// RFC 6665 §4.1.2.4: a 2xx to our SUBSCRIBE with no NOTIFY after it
/// within 64·T1 ends the subscription (it stayed `pending` for ever).
#[test]
fn a_2xx_never_followed_by_a_notify_ends_the_subscription() {
    let (mut sim, alice, _bob, sub, s) =
        subscribed_to_peer_bob(Transport::Udp, &[("Contact", &format!("<sip:bob@{BOB}>"))]);
    assert_eq!(s.message.method(), Some(Method::Subscribe));
    sim.run_for(Duration::from_secs(20));
    assert!(
        sub_events(&mut sim, alice)
            .iter()
            .all(|e| e.state != SubscriptionState::Terminated),
        "still waiting at 20 s"
    );
    sim.run_for(Duration::from_secs(20));
    let evs = sub_events(&mut sim, alice);
    let last = evs.last().expect("an event");
    assert_eq!(last.sub, sub);
    assert_eq!(last.state, SubscriptionState::Terminated);
    assert_eq!(last.reason, Some(SubscriptionReason::Timeout));
    assert!(sim.endpoint(alice).subscriptions().is_empty());
}

/// A NOTIFY after the 2xx keeps it: the same wait does not end it.
#[test]
fn a_notify_after_the_2xx_keeps_the_subscription() {
    let (mut sim, alice, bob, sub, s) =
        subscribed_to_peer_bob(Transport::Udp, &[("Contact", &format!("<sip:bob@{BOB}>"))]);
    sim.run_for(Duration::from_secs(5));
    send_to_alice(
        &mut sim,
        bob,
        notify(
            &s.message,
            "b1",
            1,
            "active;expires=595",
            Some(&pidf("open")),
        ),
    );
    sim.run_for(Duration::from_secs(60));
    assert_eq!(
        sim.endpoint(alice).subscriptions(),
        [(sub, SubscriptionRole::Subscriber, SubscriptionState::Active)]
    );
}

// ----- who may subscribe (RFC 6665 §4.2.1, RFC 3856 §6.6) ---------------

/// A new SUBSCRIBE from the scripted subscriber to `request_uri`, from
/// `from` (a name-addr with its tag), for presence.
fn subscribe_from(request_uri: &str, from: &str, call_id: &str) -> Bytes {
    MessageBuilder::request(Method::Subscribe, request_uri)
        .header(
            "Via",
            &format!(
                "SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bK{}",
                call_id.replace('@', "-")
            ),
        )
        .header("Max-Forwards", "70")
        .header("From", from)
        .header("To", &format!("<{request_uri}>"))
        .header("Call-ID", call_id)
        .header("CSeq", "1 SUBSCRIBE")
        .header("Contact", &format!("<sip:alice@{ALICE}>"))
        .header("Event", "presence")
        .header("Expires", "600")
        .build()
        .unwrap()
        .to_bytes()
}

/// Bob's agent with `watchers`, and a scripted subscriber at Alice's
/// address.
fn agent_and_subscriber(watchers: &[&str]) -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(Instant::now(), 5);
    let agent = sim.add_endpoint("bob", &[ip(BOB)], bob_config(watchers));
    let peer = sim.add_peer("alice", &[ip(ALICE)]);
    sim.with_endpoint(agent, |ep, now| ep.set_presence(now, true));
    (sim, agent, peer)
}

fn send_bytes_to_bob(sim: &mut Sim, peer: NodeId, bytes: Bytes) {
    sim.peer_send(
        peer,
        SocketAddr::new(ip(ALICE), 5060),
        bob_addr(),
        Transport::Udp,
        bytes,
    );
}

/// What Bob's agent sent, first lines.
fn sent_by_bob(sim: &Sim) -> Vec<String> {
    sim.log()
        .iter()
        .filter(|e| e.from.ip() == ip(BOB))
        .map(|e| e.first_line.clone())
        .collect()
}

/// `from` subscribes to Bob's presence at `request_uri`: the answer's
/// status.
fn answer_to(sim: &mut Sim, peer: NodeId, request_uri: &str, from: &str) -> u16 {
    send_bytes_to_bob(sim, peer, subscribe_from(request_uri, from, "w1@alice"));
    let answer = recv(sim, peer);
    answer.message.status().unwrap()
}

#[test]
fn a_subscribe_to_a_user_not_ours_gets_404_and_makes_no_subscription() {
    let (mut sim, agent, peer) = agent_and_subscriber(&["*"]);
    let code = answer_to(
        &mut sim,
        peer,
        &format!("sip:carol@{BOB}"),
        "<sip:alice@example.test>;tag=a1",
    );
    assert_eq!(code, 404);
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sent_by_bob(&sim).len(), 1, "{:?}", sent_by_bob(&sim));
    assert!(sub_events(&mut sim, agent).is_empty());
    assert!(sim.endpoint(agent).subscriptions().is_empty());
    // no user at all is not ours either
    send_bytes_to_bob(
        &mut sim,
        peer,
        subscribe_from(
            &format!("sip:{BOB}"),
            "<sip:alice@example.test>;tag=a2",
            "w2@alice",
        ),
    );
    assert_eq!(recv(&mut sim, peer).message.status(), Some(404));
    assert!(sim.endpoint(agent).subscriptions().is_empty());
}

#[test]
fn a_subscribe_from_a_watcher_not_listed_gets_403_and_nothing_follows() {
    let (mut sim, agent, peer) = agent_and_subscriber(&["sip:alice@example.test"]);
    for (i, from) in [
        "<sip:mallory@example.test>;tag=m1",
        // the user is case-sensitive (RFC 3261 §19.1.4)
        "<sip:Alice@example.test>;tag=m2",
        "<sip:alice@example.org>;tag=m3",
        "<sips:alice@example.test>;tag=m4",
        "<tel:+15551234>;tag=m5",
    ]
    .into_iter()
    .enumerate()
    {
        send_bytes_to_bob(
            &mut sim,
            peer,
            subscribe_from(&format!("sip:bob@{BOB}"), from, &format!("m{i}@x")),
        );
        assert_eq!(recv(&mut sim, peer).message.status(), Some(403), "{from}");
    }
    sim.run_for(Duration::from_secs(60));
    let sent = sent_by_bob(&sim);
    assert_eq!(sent.len(), 5, "{sent:?}");
    assert!(
        sent.iter().all(|l| l.starts_with("SIP/2.0 403 ")),
        "{sent:?}"
    );
    assert!(sub_events(&mut sim, agent).is_empty());
    assert!(sim.endpoint(agent).subscriptions().is_empty());
}

#[test]
fn by_default_nobody_may_subscribe() {
    let (mut sim, agent, peer) = agent_and_subscriber(&[]);
    let code = answer_to(
        &mut sim,
        peer,
        &format!("sip:bob@{BOB}"),
        "<sip:alice@example.test>;tag=a1",
    );
    assert_eq!(code, 403);
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sent_by_bob(&sim).len(), 1);
    assert!(sim.endpoint(agent).subscriptions().is_empty());
}

#[test]
fn a_listed_watcher_gets_200_and_a_notify() {
    // the host is not case-sensitive; display names and parameters are
    // ignored
    let (mut sim, agent, peer) = agent_and_subscriber(&["sip:alice@EXAMPLE.test;transport=tcp"]);
    let code = answer_to(
        &mut sim,
        peer,
        &format!("sip:bob@{BOB}"),
        "\"Alice\" <sip:alice@example.TEST:5062;user=phone>;tag=a1",
    );
    assert_eq!(code, 200);
    let first = recv(&mut sim, peer);
    assert_eq!(first.message.method(), Some(Method::Notify));
    assert!(String::from_utf8_lossy(first.message.body()).contains("<basic>open</basic>"));
    let evs = sub_events(&mut sim, agent);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].state, SubscriptionState::Active);
    assert_eq!(sim.endpoint(agent).subscriptions().len(), 1);
}

#[test]
fn a_star_lets_anyone_subscribe() {
    let (mut sim, agent, peer) = agent_and_subscriber(&["*"]);
    let code = answer_to(
        &mut sim,
        peer,
        // the AoR's user at another host is ours too
        "sip:bob@example.test",
        "<sip:someone@elsewhere.example>;tag=s1",
    );
    assert_eq!(code, 200);
    assert_eq!(recv(&mut sim, peer).message.method(), Some(Method::Notify));
    assert_eq!(sim.endpoint(agent).subscriptions().len(), 1);
}

/// A refresh in the dialog of an accepted subscription is not checked
/// again: even one whose Request-URI names no user of ours (some
/// subscribers send it to a bare host) is refreshed.
#[test]
fn a_refresh_of_an_accepted_subscription_still_works() {
    let (mut sim, agent, peer) = agent_and_subscriber(&["sip:alice@example.test"]);
    send_bytes_to_bob(
        &mut sim,
        peer,
        subscribe_from(
            &format!("sip:bob@{BOB}"),
            "<sip:alice@example.test>;tag=a1",
            "r1@alice",
        ),
    );
    let ok = recv(&mut sim, peer);
    assert_eq!(ok.message.status(), Some(200));
    let bob_tag = ok.message.to().unwrap().tag().unwrap().to_owned();
    let first = recv(&mut sim, peer);
    reply(&mut sim, peer, &first, 200, &[]);
    sim.run_for(Duration::from_secs(100));
    let refresh = MessageBuilder::request(Method::Subscribe, &format!("sip:{BOB}"))
        .header("Via", &format!("SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bKr2"))
        .header("Max-Forwards", "70")
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", &format!("<sip:bob@{BOB}>;tag={bob_tag}"))
        .header("Call-ID", "r1@alice")
        .header("CSeq", "2 SUBSCRIBE")
        .header("Contact", &format!("<sip:alice@{ALICE}>"))
        .header("Event", "presence")
        .header("Expires", "600")
        .build()
        .unwrap();
    send_bytes_to_bob(&mut sim, peer, refresh.to_bytes());
    let ok2 = recv(&mut sim, peer);
    assert_eq!(ok2.message.status(), Some(200));
    assert_eq!(ok2.message.header(HeaderName::Expires), Some("600"));
    let again = recv(&mut sim, peer);
    assert_eq!(again.message.method(), Some(Method::Notify));
    reply(&mut sim, peer, &again, 200, &[]);
    // alive past the first grant's end (600 s from the start)
    sim.run_for(Duration::from_secs(550));
    assert_eq!(sim.endpoint(agent).subscriptions().len(), 1);
}
