//! A failed flow's usages, handled by policy (RFC 5626 §4.5, resiprocate's
//! `flowTerminated`), in virtual time: a call whose TCP flow fails by
//! pong timeout is repaired over the account's new flow once it is
//! registered (re-INVITE with our Contact, 2xx, the call still up); a
//! refresh answered 481 or timing out falls back to an INVITE with
//! `Replaces` (RFC 3891); the fallback off ends the call; `HangUp` ends
//! it, `Ignore` leaves it and says so. And an INVITE with `Replaces`
//! received: matched, not matched (481), malformed (400).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use siproam_core::{
    AccountId, CallEvent, CallId, CallMoveAction, CallState, ChangeTrigger, Event, FlowCloseReason,
    FlowFailurePolicy, FlowTerminated, InviteRecovery, InviteSpec, IpChangeError, IpChangeStage,
    RegistrationRecovery, Target, Transport,
};
use siproam_sim::{Link, NodeId, Received, Sim};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};
use support::{answer, ip, recv, setup, REG, UA};

/// Bob's Contact (behind the proxy: reached only through it).
const BOB_CONTACT: &str = "<sip:bob@192.0.2.30:5060;transport=tcp>";
/// The proxy's Record-Route (the registrar's address).
const RR: &str = "<sip:192.0.2.20:5060;transport=tcp;lr>";

fn sdp(tag: &str) -> Bytes {
    Bytes::from(format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns={tag}\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    ))
}

/// A 200 to a REGISTER echoing its Contact, with `Flow-Timer: 30`.
fn registered_ok(sim: &mut Sim, reg: NodeId, to: &Received) {
    let contact = to.message.header(HeaderName::Contact).unwrap().to_owned();
    let base = contact.split(";expires").next().unwrap().to_owned();
    let contact = format!("{base};expires=3600");
    answer(
        sim,
        reg,
        to,
        200,
        &[("Contact", contact.as_str()), ("Flow-Timer", "30")],
    );
}

/// Bob's 2xx (through the proxy, tag `tag`) to an INVITE, with an answer.
fn bob_ok(sim: &mut Sim, reg: NodeId, to: &Received, tag: &str) {
    let resp = MessageBuilder::response_to(&to.message, 200, "OK", Some(tag))
        .header("Record-Route", RR)
        .header("Contact", BOB_CONTACT)
        .header("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE")
        .header("Supported", "replaces")
        .body("application/sdp", sdp("bob"))
        .build()
        .unwrap();
    sim.peer_reply(reg, to, resp.to_bytes());
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

/// Alice registered over TCP to the registrar (a scripted peer, which is
/// also the proxy to Bob) and in a call with Bob over that same
/// connection: (sim, alice, registrar, account, call, the INVITE as the
/// proxy got it).
struct Scene {
    sim: Sim,
    ua: NodeId,
    reg: NodeId,
    acc: AccountId,
    call: CallId,
    invite: Received,
}

fn call_over_the_registration_flow(policy: Option<FlowFailurePolicy>) -> Scene {
    let (mut sim, ua, reg, mut cfg) = setup(Transport::Tcp);
    cfg.password = None;
    cfg.expires = 3600;
    if let Some(p) = policy {
        sim.endpoint(ua).set_flow_failure_policy(p);
    }
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r = recv(&mut sim, reg);
    registered_ok(&mut sim, reg, &r);
    sim.run_for(Duration::from_millis(100));
    let spec = InviteSpec {
        uri: "sip:bob@example.test".into(),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Tcp,
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
    let invite = recv(&mut sim, reg);
    assert_eq!(invite.conn, r.conn, "the call uses the registration's flow");
    bob_ok(&mut sim, reg, &invite, "bob1");
    let ack = recv(&mut sim, reg);
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
        reg,
        acc,
        call,
        invite,
    }
}

impl Scene {
    /// The registrar stops answering pings: the flow fails at the pong
    /// timeout and the account's REGISTER comes over a new connection
    /// (returned, not answered yet).
    fn fail_the_flow(&mut self) -> Received {
        self.sim.set_pong(self.reg, false);
        let again = recv(&mut self.sim, self.reg);
        assert_eq!(again.message.method(), Some(Method::Register));
        assert_ne!(again.conn, self.invite.conn, "a new connection");
        self.sim.set_pong(self.reg, true);
        again
    }

    fn events(&mut self) -> Vec<Event> {
        self.sim
            .take_events(self.ua)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }
}

/// The `FlowTerminated` among `evs`.
fn terminated(evs: &[Event]) -> Vec<FlowTerminated> {
    evs.iter()
        .filter_map(|e| match e {
            Event::FlowTerminated(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// The machine's reports among `evs`: (stage, trigger, status).
fn reports(evs: &[Event]) -> Vec<(IpChangeStage, ChangeTrigger, Result<(), IpChangeError>)> {
    evs.iter()
        .filter_map(|e| match e {
            Event::IpChange(r) => Some((r.stage, r.trigger, r.status.clone())),
            _ => None,
        })
        .collect()
}

fn flow_failure(
    stages: &[(IpChangeStage, Result<(), IpChangeError>)],
) -> Vec<(IpChangeStage, ChangeTrigger, Result<(), IpChangeError>)> {
    stages
        .iter()
        .map(|(s, r)| (*s, ChangeTrigger::FlowFailure, r.clone()))
        .collect()
}

/// The default policy: the failed flow's usages are told (the account
/// re-registers, the call is repaired); nothing goes to the call before
/// the account's new flow is registered; then a re-INVITE with our
/// Contact and the fresh offer goes over that new connection; its 2xx
/// settles the repair and the call is still up.
#[test]
fn a_call_whose_flow_fails_is_refreshed_over_the_new_flow_once_registered() {
    let mut s = call_over_the_registration_flow(None);
    let register = s.fail_the_flow();
    // nothing for the call while the new flow is not registered
    s.sim.run_for(Duration::from_secs(2));
    assert!(
        s.sim.peer_recv(s.reg).is_none(),
        "no refresh before the 2xx"
    );
    let evs = s.events();
    let t = terminated(&evs);
    assert_eq!(t.len(), 1, "{evs:#?}");
    assert_eq!(t[0].reason, FlowCloseReason::KeepAliveTimeout);
    assert_eq!(t[0].transport, Transport::Tcp);
    assert_eq!(t[0].remote, SocketAddr::new(ip(REG), 5060));
    assert_eq!(
        t[0].registrations,
        [(s.acc, RegistrationRecovery::Reregister)]
    );
    assert_eq!(
        t[0].calls,
        [(
            s.call,
            InviteRecovery::Repair {
                replaces_fallback: true
            }
        )]
    );
    assert_eq!(
        reports(&evs),
        flow_failure(&[(IpChangeStage::Started, Ok(()))])
    );
    registered_ok(&mut s.sim, s.reg, &register);
    let reinvite = recv(&mut s.sim, s.reg);
    assert_eq!(reinvite.message.method(), Some(Method::Invite));
    assert_eq!(reinvite.conn, register.conn, "over the new flow");
    assert_eq!(
        reinvite.message.to().unwrap().tag(),
        Some("bob1"),
        "in the dialog"
    );
    assert!(reinvite
        .message
        .header(HeaderName::Contact)
        .unwrap()
        .contains(&format!("alice@{UA}:5060;transport=tcp")));
    assert_eq!(reinvite.message.body(), &sdp("repaired"));
    bob_ok(&mut s.sim, s.reg, &reinvite, "bob1");
    let ack = recv(&mut s.sim, s.reg);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(ack.conn, register.conn);
    let evs = s.events();
    assert_eq!(
        reports(&evs),
        flow_failure(&[
            (IpChangeStage::UpdateContact, Ok(())),
            (IpChangeStage::RefreshCalls, Ok(())),
            (IpChangeStage::Completed, Ok(())),
        ])
    );
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
}

/// A re-INVITE of ours still unanswered when the flow fails dies with it,
/// but does not end the call (RFC 5057 would): the call is repaired like
/// any other once the new flow is registered.
#[test]
fn a_refresh_dying_with_the_flow_does_not_end_the_call() {
    let mut s = call_over_the_registration_flow(None);
    // the ping that will go unanswered, then our re-INVITE behind it
    s.sim.set_pong(s.reg, false);
    let pinged = |sim: &Sim| sim.log().iter().any(|e| e.first_line.is_empty());
    for _ in 0..400 {
        if pinged(&s.sim) {
            break;
        }
        s.sim.run_for(Duration::from_millis(100));
    }
    assert!(pinged(&s.sim));
    s.sim
        .with_endpoint(s.ua, |ep, now| {
            ep.refresh(now, s.call, false, Some(sdp("hold")))
        })
        .unwrap();
    let stuck = recv(&mut s.sim, s.reg);
    assert_eq!(stuck.message.method(), Some(Method::Invite));
    let register = s.fail_the_flow();
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
    registered_ok(&mut s.sim, s.reg, &register);
    let reinvite = recv(&mut s.sim, s.reg);
    assert_eq!(reinvite.message.method(), Some(Method::Invite));
    assert_eq!(reinvite.conn, register.conn);
    bob_ok(&mut s.sim, s.reg, &reinvite, "bob1");
    recv(&mut s.sim, s.reg);
    let evs = s.events();
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::Call(CallEvent::RefreshFailed { code: 503, .. }))));
    assert_eq!(
        reports(&evs),
        flow_failure(&[
            (IpChangeStage::Started, Ok(())),
            (IpChangeStage::UpdateContact, Ok(())),
            (IpChangeStage::RefreshCalls, Ok(())),
            (IpChangeStage::Completed, Ok(())),
        ])
    );
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
}

/// The refresh finds the dialog gone — 481, or no answer (408) — so an
/// INVITE with `Replaces` naming the old dialog goes over the new flow
/// with a new Call-ID and tag and the same offer; its 2xx makes the new
/// dialog the call's: ACKed, reported (`refresh_calls` failed,
/// `replace_calls` ok), the call still up; a BYE for the old dialog gets
/// 200 and leaves it up; our BYE then ends the new dialog.
#[test]
fn a_refresh_finding_the_dialog_gone_falls_back_to_an_invite_with_replaces() {
    for code in [481u16, 408] {
        let mut s = call_over_the_registration_flow(None);
        let old_call_id = s.invite.message.call_id().to_owned();
        let our_tag = s.invite.message.from().unwrap().tag().unwrap().to_owned();
        let register = s.fail_the_flow();
        registered_ok(&mut s.sim, s.reg, &register);
        let reinvite = recv(&mut s.sim, s.reg);
        assert_eq!(reinvite.message.method(), Some(Method::Invite));
        let mark = s.sim.now();
        if code == 481 {
            answer(&mut s.sim, s.reg, &reinvite, 481, &[]);
        }
        // (408: nothing comes back; Timer B, 64·T1, ends it)
        let mut replacing = recv(&mut s.sim, s.reg);
        if code == 481 {
            // the 481's own ACK first
            assert_eq!(replacing.message.method(), Some(Method::Ack));
            assert_eq!(replacing.message.call_id(), old_call_id);
            replacing = recv(&mut s.sim, s.reg);
        }
        if code == 408 {
            assert!(replacing.at - mark >= Duration::from_secs(32), "Timer B");
        }
        let m = &replacing.message;
        assert_eq!(m.method(), Some(Method::Invite), "{code}");
        assert_eq!(replacing.conn, register.conn, "over the new flow");
        assert_eq!(
            m.request_uri_str(),
            Some("sip:bob@192.0.2.30:5060;transport=tcp")
        );
        assert_ne!(m.call_id(), old_call_id, "a new dialog");
        assert_eq!(m.to().unwrap().tag(), None);
        assert_ne!(m.from().unwrap().tag(), Some(our_tag.as_str()));
        assert_eq!(
            m.header(HeaderName::Replaces),
            Some(format!("{old_call_id};to-tag=bob1;from-tag={our_tag}").as_str())
        );
        assert!(
            m.has_token(HeaderName::Require, "replaces"),
            "Bob said he supports it"
        );
        assert_eq!(m.body(), &sdp("repaired"));
        assert_eq!(m.header(HeaderName::Route), None, "out of the old dialog");
        bob_ok(&mut s.sim, s.reg, &replacing, "bob2");
        let ack = recv(&mut s.sim, s.reg);
        assert_eq!(ack.message.method(), Some(Method::Ack));
        assert_eq!(ack.message.call_id(), m.call_id());
        assert_eq!(ack.message.to().unwrap().tag(), Some("bob2"));
        let evs = s.events();
        assert!(evs.iter().any(|e| matches!(
            e,
            Event::Call(CallEvent::Replacing { call, code: c }) if *call == s.call && *c == code
        )));
        assert_eq!(
            reports(&evs),
            flow_failure(&[
                (IpChangeStage::Started, Ok(())),
                (IpChangeStage::UpdateContact, Ok(())),
                (
                    IpChangeStage::RefreshCalls,
                    Err(IpChangeError::RefreshFailed(code))
                ),
                (IpChangeStage::ReplaceCalls, Ok(())),
                (IpChangeStage::Completed, Ok(())),
            ]),
            "{code}"
        );
        assert_eq!(
            s.sim.endpoint(s.ua).call_state(s.call),
            Some(CallState::Confirmed)
        );
        // Bob ends the replaced dialog: 200, and the call lives on
        let bye =
            MessageBuilder::request(Method::Bye, &format!("sip:alice@{UA}:5060;transport=tcp"))
                .header("Via", "SIP/2.0/TCP 192.0.2.20:5060;branch=z9hG4bKoldbye")
                .header("Max-Forwards", "70")
                .header("From", "<sip:bob@example.test>;tag=bob1")
                .header("To", &format!("<sip:alice@example.test>;tag={our_tag}"))
                .header("Call-ID", &old_call_id)
                .header("CSeq", "7 BYE")
                .build()
                .unwrap();
        s.sim.peer_reply(s.reg, &register, bye.to_bytes());
        let ok = recv(&mut s.sim, s.reg);
        assert_eq!(ok.message.status(), Some(200));
        assert_eq!(
            s.sim.endpoint(s.ua).call_state(s.call),
            Some(CallState::Confirmed)
        );
        // the call's requests are the new dialog's
        s.sim
            .with_endpoint(s.ua, |ep, now| ep.hang_up(now, s.call))
            .unwrap();
        let our_bye = recv(&mut s.sim, s.reg);
        assert_eq!(our_bye.message.method(), Some(Method::Bye));
        assert_eq!(our_bye.message.call_id(), m.call_id());
        assert_eq!(our_bye.message.to().unwrap().tag(), Some("bob2"));
        assert_eq!(our_bye.message.cseq().seq, 2);
    }
}

/// The outbound case proper: a call that came in over our registration's
/// flow (the proxy used it to reach us) is repaired the same way from the
/// callee's side — re-INVITE in its dialog over the new flow, and on 481
/// an INVITE with `Replaces` naming it from our side (to-tag the caller's,
/// from-tag ours), from our AoR to the caller's Contact.
#[test]
fn a_call_that_came_in_over_the_flow_is_repaired_from_our_side() {
    let (mut sim, ua, reg, mut cfg) = setup(Transport::Tcp);
    cfg.password = None;
    cfg.expires = 3600;
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r = recv(&mut sim, reg);
    registered_ok(&mut sim, reg, &r);
    sim.run_for(Duration::from_millis(100));
    sim.set_handler(
        ua,
        Box::new(|ep, now, ev| {
            match &ev {
                Event::IncomingCall { call, .. } => {
                    ep.answer(now, *call, 200, Some(sdp("alice"))).unwrap()
                }
                Event::CallMoved {
                    call,
                    action: CallMoveAction::Reoffer { update },
                    ..
                } => ep
                    .refresh(now, *call, *update, Some(sdp("repaired")))
                    .unwrap(),
                _ => {}
            }
            Some(ev)
        }),
    );
    // Bob's INVITE, proxied to us over our registration's connection
    let invite = MessageBuilder::request(
        Method::Invite,
        &format!("sip:alice@{UA}:5060;transport=tcp"),
    )
    .header("Via", "SIP/2.0/TCP 192.0.2.20:5060;branch=z9hG4bKin1")
    .header("Max-Forwards", "69")
    .header("Record-Route", RR)
    .header("From", "<sip:bob@example.test>;tag=bobx")
    .header("To", "<sip:alice@example.test>")
    .header("Call-ID", "in1@proxy")
    .header("CSeq", "1 INVITE")
    .header("Contact", BOB_CONTACT)
    .header("Supported", "replaces")
    .body("application/sdp", sdp("bob"))
    .build()
    .unwrap();
    sim.peer_reply(reg, &r, invite.to_bytes());
    let mut ok = recv(&mut sim, reg);
    while ok.message.status() != Some(200) {
        ok = recv(&mut sim, reg);
    }
    let our_tag = ok.message.to().unwrap().tag().unwrap().to_owned();
    let ack = MessageBuilder::request(Method::Ack, &format!("sip:alice@{UA}:5060;transport=tcp"))
        .header("Via", "SIP/2.0/TCP 192.0.2.20:5060;branch=z9hG4bKin1ack")
        .header("Max-Forwards", "69")
        .header("From", "<sip:bob@example.test>;tag=bobx")
        .header("To", &format!("<sip:alice@example.test>;tag={our_tag}"))
        .header("Call-ID", "in1@proxy")
        .header("CSeq", "1 ACK")
        .build()
        .unwrap();
    sim.peer_reply(reg, &r, ack.to_bytes());
    sim.run_for(Duration::from_millis(100));
    let call = sim.endpoint(ua).calls()[0].0;
    assert_eq!(
        sim.endpoint(ua).call_state(call),
        Some(CallState::Confirmed)
    );
    sim.take_events(ua);
    // the flow fails; registered again over a new one
    sim.set_pong(reg, false);
    let register = recv(&mut sim, reg);
    assert_eq!(register.message.method(), Some(Method::Register));
    sim.set_pong(reg, true);
    registered_ok(&mut sim, reg, &register);
    let reinvite = recv(&mut sim, reg);
    assert_eq!(reinvite.message.method(), Some(Method::Invite));
    assert_eq!(reinvite.conn, register.conn);
    assert_eq!(reinvite.message.call_id(), "in1@proxy");
    assert_eq!(
        reinvite.message.from().unwrap().tag(),
        Some(our_tag.as_str())
    );
    assert_eq!(reinvite.message.to().unwrap().tag(), Some("bobx"));
    answer(&mut sim, reg, &reinvite, 481, &[]);
    let mut replacing = recv(&mut sim, reg);
    while replacing.message.method() == Some(Method::Ack) {
        replacing = recv(&mut sim, reg);
    }
    let m = &replacing.message;
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(replacing.conn, register.conn);
    assert_eq!(
        m.request_uri_str(),
        Some("sip:bob@192.0.2.30:5060;transport=tcp")
    );
    assert_eq!(
        m.header(HeaderName::Replaces),
        Some(format!("in1@proxy;to-tag=bobx;from-tag={our_tag}").as_str())
    );
    assert_eq!(
        m.from().unwrap().uri().to_string(),
        "sip:alice@example.test"
    );
    assert_eq!(m.to().unwrap().uri().to_string(), "sip:bob@example.test");
    bob_ok(&mut sim, reg, &replacing, "bob2");
    let ack = recv(&mut sim, reg);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(ack.message.call_id(), m.call_id());
    let evs: Vec<Event> = sim.take_events(ua).into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        reports(&evs),
        flow_failure(&[
            (IpChangeStage::Started, Ok(())),
            (IpChangeStage::UpdateContact, Ok(())),
            (
                IpChangeStage::RefreshCalls,
                Err(IpChangeError::RefreshFailed(481))
            ),
            (IpChangeStage::ReplaceCalls, Ok(())),
            (IpChangeStage::Completed, Ok(())),
        ])
    );
    assert_eq!(
        sim.endpoint(ua).call_state(call),
        Some(CallState::Confirmed)
    );
}

/// A per-account policy wins over the endpoint's: the account says
/// `HangUp`, so its call gets a BYE although the endpoint repairs.
#[test]
fn an_accounts_own_policy_wins_over_the_endpoints() {
    let mut s = call_over_the_registration_flow(None);
    s.sim
        .endpoint(s.ua)
        .set_account_flow_failure_policy(
            s.acc,
            Some(FlowFailurePolicy {
                invite: InviteRecovery::HangUp,
                ..FlowFailurePolicy::default()
            }),
        )
        .unwrap();
    s.sim.set_pong(s.reg, false);
    let first = recv(&mut s.sim, s.reg);
    let second = recv(&mut s.sim, s.reg);
    let methods = [first.message.method(), second.message.method()];
    assert!(methods.contains(&Some(Method::Bye)), "{methods:?}");
    assert_eq!(s.sim.endpoint(s.ua).call_state(s.call), None);
    assert_eq!(
        s.sim.endpoint(s.ua).flow_failure_policy(Some(s.acc)).invite,
        InviteRecovery::HangUp
    );
    assert_eq!(
        s.sim.endpoint(s.ua).flow_failure_policy(None).invite,
        InviteRecovery::default()
    );
}

/// The fallback turned off: the refresh's 481 ends the call, told as the
/// refresh's failure and the call's end with 481.
#[test]
fn without_the_fallback_a_refresh_finding_the_dialog_gone_ends_the_call() {
    let mut s = call_over_the_registration_flow(Some(FlowFailurePolicy {
        invite: InviteRecovery::Repair {
            replaces_fallback: false,
        },
        ..FlowFailurePolicy::default()
    }));
    let register = s.fail_the_flow();
    registered_ok(&mut s.sim, s.reg, &register);
    let reinvite = recv(&mut s.sim, s.reg);
    answer(&mut s.sim, s.reg, &reinvite, 481, &[]);
    s.sim.run_for(Duration::from_secs(1));
    // only the ACK of the 481: no INVITE with Replaces
    let ack = recv(&mut s.sim, s.reg);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    s.sim.run_for(Duration::from_secs(40));
    assert!(s.sim.peer_recv(s.reg).is_none());
    assert_eq!(s.sim.endpoint(s.ua).call_state(s.call), None);
    let evs = s.events();
    assert!(evs.iter().any(|e| matches!(
        e,
        Event::Call(CallEvent::State {
            call,
            state: CallState::Disconnected,
            code: Some(481),
            ..
        }) if *call == s.call
    )));
    assert_eq!(
        reports(&evs),
        flow_failure(&[
            (IpChangeStage::Started, Ok(())),
            (IpChangeStage::UpdateContact, Ok(())),
            (
                IpChangeStage::RefreshCalls,
                Err(IpChangeError::RefreshFailed(481))
            ),
            (IpChangeStage::Completed, Err(IpChangeError::Incomplete(1))),
        ])
    );
}

/// `HangUp`: the call ends with a BYE over a new flow at once; no repair
/// runs.
#[test]
fn the_hang_up_policy_ends_the_call() {
    let mut s = call_over_the_registration_flow(Some(FlowFailurePolicy {
        invite: InviteRecovery::HangUp,
        ..FlowFailurePolicy::default()
    }));
    let first = s.fail_the_flow();
    let bye = recv(&mut s.sim, s.reg);
    let (register, bye) = if first.message.method() == Some(Method::Bye) {
        (bye, first)
    } else {
        (first, bye)
    };
    assert_eq!(register.message.method(), Some(Method::Register));
    assert_eq!(bye.message.method(), Some(Method::Bye));
    assert_eq!(bye.message.call_id(), s.invite.message.call_id());
    assert_eq!(s.sim.endpoint(s.ua).call_state(s.call), None);
    let evs = s.events();
    assert_eq!(
        terminated(&evs)[0].calls,
        [(s.call, InviteRecovery::HangUp)]
    );
    assert!(reports(&evs).is_empty(), "{evs:#?}");
}

/// `Ignore` for calls and registrations: nothing is sent at all — no
/// REGISTER, no refresh, no BYE — the call stays up, and the event says
/// what the flow carried.
#[test]
fn the_ignore_policy_does_nothing_but_tells() {
    let mut s = call_over_the_registration_flow(Some(FlowFailurePolicy {
        registration: RegistrationRecovery::Ignore,
        invite: InviteRecovery::Ignore,
        ..FlowFailurePolicy::default()
    }));
    s.sim.set_pong(s.reg, false);
    s.sim.run_for(Duration::from_secs(60));
    assert!(s.sim.peer_recv(s.reg).is_none(), "nothing sent");
    assert!(!s.sim.conn_open(s.invite.conn.unwrap()), "the flow closed");
    assert_eq!(
        s.sim.endpoint(s.ua).call_state(s.call),
        Some(CallState::Confirmed)
    );
    let evs = s.events();
    let t = terminated(&evs);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].registrations, [(s.acc, RegistrationRecovery::Ignore)]);
    assert_eq!(t[0].calls, [(s.call, InviteRecovery::Ignore)]);
    assert!(reports(&evs).is_empty());
    assert!(!evs.iter().any(|e| matches!(e, Event::CallMoved { .. })));
}

/// A flow the endpoint closes itself (a network change, an idle
/// connection) has not failed: no call is touched and nothing is told.
#[test]
fn a_flow_closed_by_us_is_no_failure() {
    for reason in [FlowCloseReason::Local, FlowCloseReason::Idle] {
        let mut s = call_over_the_registration_flow(None);
        let flow = s
            .sim
            .endpoint(s.ua)
            .account_flow(s.acc)
            .expect("the registration's flow");
        s.sim
            .with_endpoint(s.ua, |ep, now| ep.handle_flow_closed(now, flow, reason));
        s.sim.run_for(Duration::from_secs(1));
        let evs = s.events();
        assert!(terminated(&evs).is_empty(), "{reason:?}");
        assert!(reports(&evs).is_empty(), "{reason:?}");
        assert!(
            !evs.iter().any(|e| matches!(e, Event::CallMoved { .. })),
            "{reason:?}"
        );
    }
}

// ----- both ends siproam: the fallback against a siproam peer ----------

const ALICE: &str = "192.0.2.10";
const BOB: &str = "192.0.2.30";

/// Answers every incoming call at once (an auto-answering phone).
fn answering_app() -> siproam_sim::Handler {
    Box::new(|ep, now, ev| {
        if let Event::IncomingCall { call, .. } = &ev {
            ep.answer(now, *call, 200, Some(sdp("bob"))).unwrap();
        }
        Some(ev)
    })
}

/// Over UDP between two siproam endpoints: Alice's flow to Bob fails (a
/// socket error), her refresh is lost and times out (408), so her INVITE
/// with `Replaces` reaches Bob, who matches his dialog, answers the new
/// call and ends the old one with a BYE, which Alice answers 200: one
/// call on each side, Alice's the same call in a new dialog.
#[test]
fn the_replaces_fallback_works_against_a_siproam_peer() {
    let mut sim = Sim::new(std::time::Instant::now(), 5);
    let alice = sim.add_endpoint("alice", &[ip(ALICE)], siproam_core::Config::default());
    let bob = sim.add_endpoint(
        "bob",
        &[ip(BOB)],
        siproam_core::Config {
            seed: 9,
            ..siproam_core::Config::default()
        },
    );
    sim.set_handler(bob, answering_app());
    let spec = InviteSpec {
        uri: format!("sip:bob@{BOB}"),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Udp,
            remote: SocketAddr::new(ip(BOB), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    let a = sim
        .with_endpoint(alice, |ep, now| ep.invite(now, spec))
        .unwrap();
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    let b_old = sim.endpoint(bob).calls()[0].0;
    sim.take_events(alice);
    sim.take_events(bob);
    sim.set_handler(alice, reoffering_app());
    // the path breaks, and Alice's socket reports an error
    sim.set_link(
        alice,
        bob,
        Link {
            loss: 1.0,
            ..Link::default()
        },
    );
    let flow = sim
        .endpoint(alice)
        .flows()
        .find(|f| f.remote == SocketAddr::new(ip(BOB), 5060))
        .map(|f| f.id)
        .unwrap();
    sim.with_endpoint(alice, |ep, now| {
        ep.handle_flow_closed(now, flow, FlowCloseReason::Reset)
    });
    // the re-INVITE (at once: UDP, no account) is retransmitted until
    // 31.5 s; the path comes back before Timer B
    sim.run_for(Duration::from_millis(31_800));
    sim.set_link(alice, bob, Link::default());
    sim.run_for(Duration::from_secs(2));
    let evs: Vec<Event> = sim.take_events(alice).into_iter().map(|(_, e)| e).collect();
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::Call(CallEvent::Replacing { code: 408, .. }))));
    assert_eq!(
        reports(&evs).last().map(|r| (r.0, r.2.clone())),
        Some((IpChangeStage::Completed, Ok(())))
    );
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    assert_eq!(sim.endpoint(alice).call_count(), 1);
    // Bob: the old call ended, the new one is up and replaced it
    let bob_calls = sim.endpoint(bob).calls();
    assert_eq!(bob_calls.len(), 1, "{bob_calls:?}");
    let (b_new, state) = bob_calls[0];
    assert_ne!(b_new, b_old);
    assert_eq!(state, CallState::Confirmed);
    let bevs: Vec<Event> = sim.take_events(bob).into_iter().map(|(_, e)| e).collect();
    assert!(bevs.iter().any(|e| matches!(
        e,
        Event::Call(CallEvent::ReplacesCall { call, replaced }) if *call == b_new && *replaced == b_old
    )));
    assert!(bevs.iter().any(|e| matches!(
        e,
        Event::Call(CallEvent::State { call, state: CallState::Disconnected, .. }) if *call == b_old
    )));
    // the BYE of the old dialog was answered 200 by Alice
    let bye_ok = sim
        .log()
        .iter()
        .filter(|e| e.from.ip() == ip(ALICE))
        .any(|e| e.first_line == "SIP/2.0 200 OK");
    assert!(bye_ok);
    // and the two ends share the new dialog: Alice's BYE ends Bob's call
    sim.with_endpoint(alice, |ep, now| ep.hang_up(now, a))
        .unwrap();
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.endpoint(bob).call_count(), 0);
}

/// A path that is down: the connection resets, the repair's re-INVITE
/// cannot connect — that refresh fails (503) and the repair ends there,
/// reported; no new repair for the connection that never came up, so no
/// loop of connects. The call stays up (the peer may still come back).
#[test]
fn a_repair_whose_refresh_cannot_connect_ends_without_looping() {
    let mut sim = Sim::new(std::time::Instant::now(), 5);
    let alice = sim.add_endpoint("alice", &[ip(ALICE)], siproam_core::Config::default());
    let bob = sim.add_endpoint(
        "bob",
        &[ip(BOB)],
        siproam_core::Config {
            seed: 9,
            ..siproam_core::Config::default()
        },
    );
    sim.set_handler(bob, answering_app());
    let spec = InviteSpec {
        uri: format!("sip:bob@{BOB};transport=tcp"),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Tcp,
            remote: SocketAddr::new(ip(BOB), 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    let a = sim
        .with_endpoint(alice, |ep, now| ep.invite(now, spec))
        .unwrap();
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    sim.take_events(alice);
    sim.set_handler(alice, reoffering_app());
    sim.set_handler(
        bob,
        Box::new(|_, _, ev| Some(ev)), // Bob leaves his call alone
    );
    sim.endpoint(bob)
        .set_flow_failure_policy(FlowFailurePolicy {
            invite: InviteRecovery::Ignore,
            ..FlowFailurePolicy::default()
        });
    let mark = sim.log().len();
    sim.set_link(
        alice,
        bob,
        Link {
            up: false,
            ..Link::default()
        },
    );
    sim.run_for(Duration::from_secs(70));
    let invites = sim
        .log()
        .iter()
        .skip(mark)
        .filter(|e| e.first_line.starts_with("INVITE "))
        .count();
    assert_eq!(invites, 1, "one refresh, no loop");
    let evs: Vec<Event> = sim.take_events(alice).into_iter().map(|(_, e)| e).collect();
    assert_eq!(terminated(&evs).len(), 1, "{evs:#?}");
    assert_eq!(
        reports(&evs),
        flow_failure(&[
            (IpChangeStage::Started, Ok(())),
            (
                IpChangeStage::RefreshCalls,
                Err(IpChangeError::RefreshFailed(503))
            ),
            (IpChangeStage::Completed, Err(IpChangeError::Incomplete(1))),
        ])
    );
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
}

// ----- receiving an INVITE with Replaces --------------------------------

const PEER: &str = "192.0.2.40";

/// Bob (an endpoint answering calls) in a call placed by a scripted peer
/// over UDP: (sim, bob, peer, bob's call, the peer's INVITE, Bob's tag).
fn peer_calls_bob() -> (Sim, NodeId, NodeId, CallId, Message, String) {
    let mut sim = Sim::new(std::time::Instant::now(), 11);
    let bob = sim.add_endpoint("bob", &[ip(BOB)], siproam_core::Config::default());
    let peer = sim.add_peer("peer", &[ip(PEER)]);
    sim.set_handler(bob, answering_app());
    let invite = peer_invite("c1@peer", "p1", None);
    send(&mut sim, peer, &invite);
    let ok = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    let ok = if ok.message.status() == Some(100) {
        sim.run_until_peer_receives(peer, Duration::from_secs(1))
            .unwrap()
    } else {
        ok
    };
    assert_eq!(ok.message.status(), Some(200));
    let tag = ok.message.to().unwrap().tag().unwrap().to_owned();
    send(&mut sim, peer, &peer_ack(&ok.message));
    sim.run_for(Duration::from_millis(100));
    let call = sim.endpoint(bob).calls()[0].0;
    assert_eq!(
        sim.endpoint(bob).call_state(call),
        Some(CallState::Confirmed)
    );
    sim.take_events(bob);
    (sim, bob, peer, call, invite, tag)
}

fn peer_invite(call_id: &str, tag: &str, replaces: Option<&[&str]>) -> Message {
    let mut b = MessageBuilder::request(Method::Invite, &format!("sip:bob@{BOB}"))
        .header(
            "Via",
            &format!(
                "SIP/2.0/UDP {PEER}:5060;branch=z9hG4bK{}{tag}",
                call_id.replace('@', "at")
            ),
        )
        .header("Max-Forwards", "70")
        .header("From", &format!("<sip:peer@example.test>;tag={tag}"))
        .header("To", &format!("<sip:bob@{BOB}>"))
        .header("Call-ID", call_id)
        .header("CSeq", "1 INVITE")
        .header("Contact", &format!("<sip:peer@{PEER}:5060>"));
    for r in replaces.unwrap_or_default() {
        b = b.header("Replaces", r);
    }
    b.body("application/sdp", sdp("peer")).build().unwrap()
}

fn peer_ack(ok: &Message) -> Message {
    MessageBuilder::request(Method::Ack, &format!("sip:bob@{BOB}:5060"))
        .header(
            "Via",
            &format!(
                "SIP/2.0/UDP {PEER}:5060;branch=z9hG4bKack{}",
                ok.call_id().replace('@', "at")
            ),
        )
        .header("Max-Forwards", "70")
        .header("From", ok.header(HeaderName::From).unwrap())
        .header("To", ok.header(HeaderName::To).unwrap())
        .header("Call-ID", ok.call_id())
        .header("CSeq", "1 ACK")
        .build()
        .unwrap()
}

fn send(sim: &mut Sim, peer: NodeId, m: &Message) {
    sim.peer_send(
        peer,
        SocketAddr::new(ip(PEER), 5060),
        SocketAddr::new(ip(BOB), 5060),
        Transport::Udp,
        m.to_bytes(),
    );
}

/// The final status the peer gets for `m` (the 100 and what belongs to
/// earlier requests skipped).
fn final_status(sim: &mut Sim, peer: NodeId, m: &Message) -> u16 {
    send(sim, peer, m);
    loop {
        let r = sim
            .run_until_peer_receives(peer, Duration::from_secs(1))
            .expect("an answer");
        if r.message.call_id() != m.call_id() {
            continue; // a retransmission of an earlier answer
        }
        match r.message.status() {
            Some(100) => continue,
            Some(code) => return code,
            None => panic!("a request: {:?}", r.message.method()),
        }
    }
}

/// A matching `Replaces`: a new call, told as replacing the old one and
/// answered; once it is confirmed (the ACK) the old call is ended with a
/// BYE in its own dialog.
#[test]
fn a_matching_replaces_makes_a_new_call_and_ends_the_old_one() {
    let (mut sim, bob, peer, old, _, tag) = peer_calls_bob();
    let replaces = format!("c1@peer;to-tag={tag};from-tag=p1");
    let invite = peer_invite("c2@peer", "p2", Some(&[replaces.as_str()]));
    send(&mut sim, peer, &invite);
    let mut ok = None;
    while ok.is_none() {
        let r = sim
            .run_until_peer_receives(peer, Duration::from_secs(1))
            .unwrap();
        if r.message.status() == Some(200) {
            ok = Some(r);
        }
    }
    let ok = ok.unwrap();
    assert_eq!(ok.message.call_id(), "c2@peer");
    let evs: Vec<Event> = sim.take_events(bob).into_iter().map(|(_, e)| e).collect();
    let new = evs
        .iter()
        .find_map(|e| match e {
            Event::Call(CallEvent::ReplacesCall { call, replaced }) if *replaced == old => {
                Some(*call)
            }
            _ => None,
        })
        .expect("told it replaces the old call");
    assert_eq!(sim.endpoint(bob).call_replaces(new), Some(old));
    // not before the new call is confirmed
    assert_eq!(
        sim.endpoint(bob).call_state(old),
        Some(CallState::Confirmed)
    );
    send(&mut sim, peer, &peer_ack(&ok.message));
    let bye = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(bye.message.method(), Some(Method::Bye));
    assert_eq!(bye.message.call_id(), "c1@peer");
    assert_eq!(sim.endpoint(bob).call_state(old), None);
    assert_eq!(
        sim.endpoint(bob).call_state(new),
        Some(CallState::Confirmed)
    );
}

/// No dialog matches (wrong tags, unknown Call-ID): 481 and no call.
#[test]
fn a_replaces_matching_no_dialog_gets_481() {
    let (mut sim, bob, peer, _, _, tag) = peer_calls_bob();
    for (i, r) in [
        "c1@peer;to-tag=nope;from-tag=p1".to_owned(),
        format!("c1@peer;to-tag={tag};from-tag=nope"),
        format!("other@peer;to-tag={tag};from-tag=p1"),
        // the tags the wrong way round
        format!("c1@peer;to-tag=p1;from-tag={tag}"),
    ]
    .iter()
    .enumerate()
    {
        let invite = peer_invite(&format!("x{i}@peer"), "px", Some(&[r.as_str()]));
        assert_eq!(final_status(&mut sim, peer, &invite), 481, "{r}");
    }
    assert_eq!(sim.endpoint(bob).call_count(), 1);
    assert!(!sim
        .take_events(bob)
        .iter()
        .any(|(_, e)| matches!(e, Event::IncomingCall { .. })));
}

/// Only the dialog's peer may replace it: the same tags in an INVITE from
/// someone else get 403.
#[test]
fn a_replaces_from_another_party_is_refused() {
    let (mut sim, bob, peer, old, _, tag) = peer_calls_bob();
    let replaces = format!("c1@peer;to-tag={tag};from-tag=p1");
    let invite = peer_invite("c3@peer", "p3", Some(&[replaces.as_str()]));
    let mut text = String::from_utf8(invite.to_bytes().to_vec()).unwrap();
    text = text.replace("sip:peer@example.test", "sip:mallory@example.test");
    let invite = Message::parse(Bytes::from(text)).unwrap();
    assert_eq!(final_status(&mut sim, peer, &invite), 403);
    assert_eq!(sim.endpoint(bob).call_count(), 1);
    assert_eq!(
        sim.endpoint(bob).call_state(old),
        Some(CallState::Confirmed)
    );
}

/// Malformed: no tags, two `Replaces`, an empty Call-ID — 400; a
/// confirmed dialog asked for `early-only` — 486. No call is made and
/// nothing panics.
#[test]
fn a_malformed_replaces_gets_400() {
    let (mut sim, bob, peer, old, _, tag) = peer_calls_bob();
    let good = format!("c1@peer;to-tag={tag};from-tag=p1");
    let cases: Vec<(Vec<String>, u16)> = vec![
        (vec!["c1@peer".into()], 400),
        (vec![format!("c1@peer;to-tag={tag}")], 400),
        (vec![format!("c1@peer;to-tag={tag};from-tag=")], 400),
        (vec![good.clone(), good.clone()], 400),
        (vec![";to-tag=a;from-tag=b".into()], 400),
        (vec![format!("{good};early-only")], 486),
    ];
    for (i, (values, want)) in cases.iter().enumerate() {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let invite = peer_invite(&format!("m{i}@peer"), "pm", Some(&refs));
        assert_eq!(final_status(&mut sim, peer, &invite), *want, "{values:?}");
    }
    // in a request other than INVITE: 400 as well (RFC 3891 §3)
    let options = MessageBuilder::request(Method::Options, &format!("sip:bob@{BOB}"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP {PEER}:5060;branch=z9hG4bKopt1"),
        )
        .header("Max-Forwards", "70")
        .header("From", "<sip:peer@example.test>;tag=po")
        .header("To", &format!("<sip:bob@{BOB}>"))
        .header("Call-ID", "opt@peer")
        .header("CSeq", "1 OPTIONS")
        .header("Replaces", &good)
        .build()
        .unwrap();
    assert_eq!(final_status(&mut sim, peer, &options), 400);
    assert_eq!(sim.endpoint(bob).call_count(), 1);
    assert_eq!(
        sim.endpoint(bob).call_state(old),
        Some(CallState::Confirmed)
    );
}
