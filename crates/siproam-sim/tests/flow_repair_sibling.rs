//! A call of an identity with several flows (RFC 5626 §4.2.1, issue 12
//! item 6), in virtual time: when the call's flow fails, its target
//! refresh goes at once over a live sibling flow (its proxy, its Contact
//! with `;ob`), without waiting for the failed flow's re-registration;
//! the call then belongs to that flow — the failed one recovering in the
//! background does not move it back, and when the sibling fails in turn
//! the call moves back over the recovered flow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use siproam_core::{
    AccountConfig, CallId, CallMoveAction, CallState, ChangeTrigger, Config, Event,
    FlowCloseReason, InviteSpec, IpChangeStage, Target, Transport,
};
use siproam_sim::{NodeId, Received, Sim};
use siproam_sip::{HeaderName, MessageBuilder, Method};
use support::{answer, ip, recv, UA};

const PROXY1: &str = "192.0.2.30";
const PROXY2: &str = "192.0.2.31";
const INSTANCE: &str = "urn:uuid:00000000-0000-4000-8000-000000000001";
/// Bob's Contact (reached through the proxies).
const BOB_CONTACT: &str = "<sip:bob@192.0.2.40:5060;transport=tcp>";

fn sdp(tag: &str) -> Bytes {
    Bytes::from(format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns={tag}\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    ))
}

/// One flow of `sip:alice@example.test` through the outbound proxy at
/// `proxy`, with `reg_id`, pinged every 30 s.
fn flow_config(proxy: &str, reg_id: u32) -> AccountConfig {
    let target = Target {
        transport: Transport::Tcp,
        remote: SocketAddr::new(ip(proxy), 5060),
        local: None,
        server_name: None,
    };
    let mut cfg = AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    cfg.expires = 3600;
    cfg.instance_id = Some(INSTANCE.to_owned());
    cfg.outbound = true;
    cfg.reg_id = Some(reg_id);
    cfg.outbound_proxy = Some(format!("sip:{proxy};lr"));
    cfg.keepalive_stream = Some(Duration::from_secs(30));
    cfg
}

/// A 200 for an outbound REGISTER: its Contact echoed, `Require: outbound`.
fn ok_outbound(sim: &mut Sim, peer: NodeId, to: &Received) {
    let contact = to.message.header(HeaderName::Contact).unwrap().to_owned();
    let base = contact.split(";expires").next().unwrap().to_owned();
    answer(
        sim,
        peer,
        to,
        200,
        &[
            ("Contact", &format!("{base};expires=3600")),
            ("Require", "outbound"),
        ],
    );
}

/// Bob's 2xx (through the proxy, which record-routes when `rr`).
fn bob_ok(sim: &mut Sim, proxy: NodeId, to: &Received, rr: Option<&str>) {
    let mut b = MessageBuilder::response_to(&to.message, 200, "OK", Some("bob1"))
        .header("Contact", BOB_CONTACT)
        .header("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE")
        .header("Supported", "replaces")
        .body("application/sdp", sdp("bob"));
    if let Some(rr) = rr {
        b = b.header("Record-Route", rr);
    }
    sim.peer_reply(proxy, to, b.build().unwrap().to_bytes());
}

/// The application's media part of a repair: a fresh offer on
/// `CallMoved`.
fn reoffering_app() -> siproam_sim::Handler {
    Box::new(|ep, now, ev| {
        if let Event::CallMoved {
            call,
            action: CallMoveAction::Reoffer { update },
            ..
        } = &ev
        {
            ep.refresh(now, *call, *update, Some(sdp("repaired")))
                .unwrap();
        }
        Some(ev)
    })
}

/// The next request a peer receives, skipping ACKs.
fn recv_request(sim: &mut Sim, peer: NodeId) -> Received {
    loop {
        let r = recv(sim, peer);
        if r.message.method() != Some(Method::Ack) {
            return r;
        }
    }
}

struct Scene {
    sim: Sim,
    ua: NodeId,
    proxies: [NodeId; 2],
    registers: Vec<Received>,
    call: CallId,
}

/// Alice with two flows (reg-id 1 through PROXY1, 2 through PROXY2), in
/// a confirmed call made over flow 1 (PROXY1 record-routed).
fn call_over_flow_1() -> Scene {
    let mut sim = Sim::new(std::time::Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA)], Config::default());
    let p1 = sim.add_peer("proxy1", &[ip(PROXY1)]);
    let p2 = sim.add_peer("proxy2", &[ip(PROXY2)]);
    let mut registers = Vec::new();
    for (i, (p, addr)) in [(p1, PROXY1), (p2, PROXY2)].into_iter().enumerate() {
        let cfg = flow_config(addr, i as u32 + 1);
        sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
        let r = recv(&mut sim, p);
        ok_outbound(&mut sim, p, &r);
        registers.push(r);
    }
    sim.run_for(Duration::from_millis(100));
    let spec = InviteSpec {
        uri: "sip:bob@example.test".into(),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Tcp,
            remote: SocketAddr::new(ip(PROXY1), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    let call = sim
        .with_endpoint(ua, |ep, now| ep.invite(now, spec))
        .unwrap();
    let invite = recv(&mut sim, p1);
    assert_eq!(invite.conn, registers[0].conn, "over flow 1");
    let rr1 = format!("<sip:{PROXY1}:5060;transport=tcp;lr>");
    bob_ok(&mut sim, p1, &invite, Some(&rr1));
    let ack = recv(&mut sim, p1);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(
        sim.endpoint(ua).call_state(call),
        Some(CallState::Confirmed)
    );
    sim.take_events(ua);
    sim.set_handler(ua, reoffering_app());
    Scene {
        sim,
        ua,
        proxies: [p1, p2],
        registers,
        call,
    }
}

impl Scene {
    fn events(&mut self) -> Vec<Event> {
        self.sim
            .take_events(self.ua)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }
}

/// The re-INVITE of a repair: in the dialog, our Contact with `;ob`, the
/// fresh offer.
fn assert_repair_reinvite(r: &Received) {
    assert_eq!(r.message.method(), Some(Method::Invite));
    assert_eq!(r.message.to().unwrap().tag(), Some("bob1"), "in the dialog");
    let contact = r.message.header(HeaderName::Contact).unwrap();
    assert!(contact.contains(&format!("alice@{UA}")), "{contact}");
    assert!(contact.contains(";ob"), "{contact}");
    assert_eq!(r.message.body(), &sdp("repaired"));
}

/// Flow 1 fails by pong timeout: the re-INVITE goes at once over flow 2
/// (to PROXY2, over its registration's connection) while flow 1's
/// REGISTER is still unanswered; its 2xx keeps the call up. Flow 1
/// registering again does not move the call back. Then flow 2 fails: the
/// call is repaired over flow 1 (its new connection) at once.
#[test]
fn a_call_on_a_failed_flow_moves_to_the_live_sibling_flow_at_once() {
    let mut s = call_over_flow_1();
    let [p1, p2] = s.proxies;
    s.sim.set_pong(p1, false);
    // flow 1's REGISTER over a new connection: left unanswered for now
    let again1 = recv_request(&mut s.sim, p1);
    assert_eq!(again1.message.method(), Some(Method::Register));
    assert_ne!(again1.conn, s.registers[0].conn);
    s.sim.set_pong(p1, true);
    let reinvite = s
        .sim
        .run_until_peer_receives(p2, Duration::from_secs(5))
        .expect("the refresh over flow 2, before flow 1 is registered again");
    assert_repair_reinvite(&reinvite);
    assert_eq!(
        reinvite.conn, s.registers[1].conn,
        "over flow 2's connection"
    );
    bob_ok(&mut s.sim, p2, &reinvite, None);
    let ack = recv(&mut s.sim, p2);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(ack.conn, s.registers[1].conn);
    let evs = s.events();
    let failed = evs.iter().any(|e| {
        matches!(e, Event::FlowTerminated(t)
            if t.reason == FlowCloseReason::KeepAliveTimeout && t.calls.len() == 1)
    });
    assert!(failed, "{evs:#?}");
    let stages: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Event::IpChange(r) if r.trigger == ChangeTrigger::FlowFailure => {
                Some((r.stage, r.status.is_ok()))
            }
            _ => None,
        })
        .collect();
    assert!(
        stages.contains(&(IpChangeStage::RefreshCalls, true))
            && stages.contains(&(IpChangeStage::Completed, true)),
        "{stages:?}"
    );
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );

    // flow 1 recovers in the background: the call stays on flow 2
    ok_outbound(&mut s.sim, p1, &again1);
    s.sim.run_for(Duration::from_secs(5));
    assert!(
        s.sim.peer_recv(p1).is_none(),
        "nothing moves back to flow 1"
    );
    assert!(s.sim.peer_recv(p2).is_none());
    s.events();

    // flow 2 fails: the call goes over flow 1 (registered again) at once
    s.sim.set_pong(p2, false);
    let again2 = recv_request(&mut s.sim, p2);
    assert_eq!(again2.message.method(), Some(Method::Register));
    s.sim.set_pong(p2, true);
    let back = s
        .sim
        .run_until_peer_receives(p1, Duration::from_secs(5))
        .expect("the refresh over flow 1");
    assert_repair_reinvite(&back);
    assert_eq!(back.conn, again1.conn, "over flow 1's new connection");
    bob_ok(&mut s.sim, p1, &back, None);
    let ack = recv(&mut s.sim, p1);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
}

/// The refresh over the sibling flow finds the dialog gone (481, or
/// `code`): the INVITE with `Replaces` over the same flow, answered; the
/// call stays up.
fn refresh_over_flow_2_refused_then_replaced(code: u16) {
    let mut s = call_over_flow_1();
    let [p1, p2] = s.proxies;
    s.sim.set_pong(p1, false);
    let again1 = recv_request(&mut s.sim, p1);
    assert_eq!(again1.message.method(), Some(Method::Register));
    s.sim.set_pong(p1, true);
    let reinvite = s
        .sim
        .run_until_peer_receives(p2, Duration::from_secs(5))
        .expect("the refresh over flow 2");
    assert_repair_reinvite(&reinvite);
    // the dialog's route set still names PROXY1 (it record-routed)
    assert_eq!(
        reinvite.message.header(HeaderName::Route),
        Some(format!("<sip:{PROXY1}:5060;transport=tcp;lr>").as_str())
    );
    answer(&mut s.sim, p2, &reinvite, code, &[]);
    let replacing = recv_request(&mut s.sim, p2);
    assert_eq!(replacing.message.method(), Some(Method::Invite));
    assert_eq!(replacing.conn, s.registers[1].conn, "over flow 2");
    assert!(replacing.message.header(HeaderName::Replaces).is_some());
    let rr2 = format!("<sip:{PROXY2}:5060;transport=tcp;lr>");
    bob_ok(&mut s.sim, p2, &replacing, Some(&rr2));
    let ack = recv(&mut s.sim, p2);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
}

/// The sibling's proxy refuses to route to the failed flow's proxy that
/// record-routed the dialog (403, as `siproam registrar` does for a Route
/// to another): the path is broken, as with a 408, and the `Replaces`
/// fallback makes a new dialog over the sibling flow.
#[test]
fn a_refresh_over_the_sibling_refused_by_its_proxy_falls_back_to_replaces() {
    refresh_over_flow_2_refused_then_replaced(403);
    refresh_over_flow_2_refused_then_replaced(503);
}

/// A 488 to the refresh over the sibling flow reached the peer (the path
/// works; the offer did not): no `Replaces`, the call stays.
#[test]
fn a_refresh_over_the_sibling_refused_by_the_peer_keeps_the_call() {
    let mut s = call_over_flow_1();
    let [p1, p2] = s.proxies;
    s.sim.set_pong(p1, false);
    recv_request(&mut s.sim, p1);
    s.sim.set_pong(p1, true);
    let reinvite = s
        .sim
        .run_until_peer_receives(p2, Duration::from_secs(5))
        .expect("the refresh over flow 2");
    answer(&mut s.sim, p2, &reinvite, 488, &[]);
    s.sim.run_for(Duration::from_secs(2));
    while let Some(r) = s.sim.peer_recv(p2) {
        assert_eq!(r.message.method(), Some(Method::Ack), "no Replaces");
    }
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
}

/// The refresh over the sibling flow finds the dialog gone (481): the
/// INVITE with `Replaces` goes over that same flow, out of the dialog —
/// to PROXY2 over flow 2's connection, PROXY2 as its pre-loaded Route,
/// `;ob` in its Contact — still before flow 1 is registered again; its
/// 2xx keeps the call up.
#[test]
fn the_replaces_fallback_goes_over_the_sibling_flow_too() {
    let mut s = call_over_flow_1();
    let [p1, p2] = s.proxies;
    s.sim.set_pong(p1, false);
    let again1 = recv_request(&mut s.sim, p1);
    assert_eq!(again1.message.method(), Some(Method::Register));
    s.sim.set_pong(p1, true);
    let reinvite = s
        .sim
        .run_until_peer_receives(p2, Duration::from_secs(5))
        .expect("the refresh over flow 2");
    assert_repair_reinvite(&reinvite);
    answer(&mut s.sim, p2, &reinvite, 481, &[]);
    let replacing = recv_request(&mut s.sim, p2);
    assert_eq!(replacing.message.method(), Some(Method::Invite));
    assert_eq!(replacing.conn, s.registers[1].conn, "over flow 2");
    assert!(
        replacing.message.to().unwrap().tag().is_none(),
        "a new dialog"
    );
    assert!(replacing.message.header(HeaderName::Replaces).is_some());
    assert_eq!(
        replacing.message.header(HeaderName::Route),
        Some(format!("<sip:{PROXY2};lr>").as_str())
    );
    let contact = replacing.message.header(HeaderName::Contact).unwrap();
    assert!(contact.contains(";ob"), "{contact}");
    let rr2 = format!("<sip:{PROXY2}:5060;transport=tcp;lr>");
    bob_ok(&mut s.sim, p2, &replacing, Some(&rr2));
    let ack = recv(&mut s.sim, p2);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(ack.conn, s.registers[1].conn);
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
}

/// Both flows fail at once: no sibling is live, so the call waits for its
/// own flow's new registration. Flow 2 comes back first: the call moves
/// over it at once, flow 1's REGISTER still unanswered; flow 1's
/// REGISTER then failing (503) does not move the call again.
#[test]
fn a_waiting_call_moves_to_the_first_sibling_flow_that_comes_back() {
    let mut s = call_over_flow_1();
    let [p1, p2] = s.proxies;
    s.sim.set_pong(p1, false);
    s.sim.set_pong(p2, false);
    let again1 = recv_request(&mut s.sim, p1);
    assert_eq!(again1.message.method(), Some(Method::Register));
    let again2 = recv_request(&mut s.sim, p2);
    assert_eq!(again2.message.method(), Some(Method::Register));
    s.sim.set_pong(p1, true);
    s.sim.set_pong(p2, true);
    s.sim.run_for(Duration::from_secs(1));
    assert!(
        s.sim.peer_recv(p1).is_none(),
        "nothing before a flow is back"
    );
    assert!(
        s.sim.peer_recv(p2).is_none(),
        "nothing before a flow is back"
    );
    ok_outbound(&mut s.sim, p2, &again2);
    let reinvite = s
        .sim
        .run_until_peer_receives(p2, Duration::from_secs(5))
        .expect("the refresh over flow 2 once it is back");
    assert_repair_reinvite(&reinvite);
    assert_eq!(reinvite.conn, again2.conn, "over flow 2's new connection");
    bob_ok(&mut s.sim, p2, &reinvite, None);
    let ack = recv(&mut s.sim, p2);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    answer(&mut s.sim, p1, &again1, 503, &[]);
    s.sim.run_for(Duration::from_secs(2));
    assert!(s.sim.peer_recv(p1).is_none(), "the call is not moved again");
    assert!(s.sim.peer_recv(p2).is_none(), "the call is not moved again");
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
}
