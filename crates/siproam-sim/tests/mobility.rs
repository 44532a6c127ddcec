//! Whole network changes in the simulator: the core's mobility machine
//! decides every stage, the simulator does the socket work it asks for,
//! and the tests read the exact actions, stages and messages in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use siproam_core::{
    AccountId, AccountRoutes, CallEvent, CallId, CallMoveAction, CallState, Event, InviteSpec,
    IpChangeError, IpChangeParams, IpChangeReport, IpChangeStage, Ipv6Use, MobilityAction,
    RegistrarAddress, Target, Transport,
};
use siproam_sim::{ChangeStep, NodeId, Sim};
use siproam_sip::HeaderName;
use support::{ip, ok, recv, sent_since, setup, REG, UA};

const NEW: &str = "192.0.2.11";
const OTHER: &str = "192.0.2.12";

/// A user agent registered over `transport` (the 2xx received), with its
/// account's routes told to the core.
fn registered(transport: Transport) -> (Sim, NodeId, NodeId, AccountId) {
    let (mut sim, ua, reg, mut cfg) = setup(transport);
    cfg.password = None;
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    sim.with_endpoint(ua, |ep, _| {
        ep.set_account_routes(
            acc,
            AccountRoutes {
                aor: "sip:alice@example.test".into(),
                registrar: vec![RegistrarAddress {
                    transport,
                    addr: SocketAddr::new(ip(REG), 5060),
                }],
                sip: Ipv6Use::Enabled,
                media: Ipv6Use::Enabled,
                ip_change: None,
            },
            Some(ip(UA)),
        )
    })
    .unwrap();
    let r = recv(&mut sim, reg);
    ok(&mut sim, reg, &r, 300);
    sim.run_for(Duration::from_millis(100));
    sim.take_events(ua);
    (sim, ua, reg, acc)
}

/// The stages among `steps`.
fn stages(steps: &[ChangeStep]) -> Vec<IpChangeStage> {
    steps
        .iter()
        .filter_map(|s| match s {
            ChangeStep::Stage(r) => Some(r.stage),
            ChangeStep::Action(_) => None,
        })
        .collect()
}

/// The change reports among a node's events so far.
fn reports(sim: &mut Sim, ua: NodeId) -> Vec<IpChangeReport> {
    sim.take_events(ua)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::IpChange(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn addr(s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(s), port)
}

/// Make-before-break over UDP: every stage in order, the listeners
/// re-opened at the new address on their own ports, the REGISTER from
/// there; `update_contact` and `completed` wait for the 2xx.
#[test]
fn a_change_walks_every_stage_in_order_and_confirms_on_the_2xx() {
    let (mut sim, ua, reg, acc) = registered(Transport::Udp);
    sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
    let steps = sim.ip_change(ua, IpChangeParams::new(ip(NEW)));
    let listen = |t, port| {
        ChangeStep::Action(MobilityAction::Listen {
            transport: t,
            addr: addr(NEW, port),
            after: Duration::ZERO,
        })
    };
    assert_eq!(
        steps[1],
        ChangeStep::Action(MobilityAction::CloseAllStreams)
    );
    assert_eq!(steps[3], listen(Transport::Udp, 5060));
    assert_eq!(steps[5], listen(Transport::Tcp, 5060));
    assert_eq!(steps[7], listen(Transport::Tls, 5061));
    assert_eq!(
        stages(&steps),
        [
            IpChangeStage::Started,
            IpChangeStage::ShutdownTransports,
            IpChangeStage::RestartListener,
            IpChangeStage::RestartListener,
            IpChangeStage::RestartListener,
            IpChangeStage::ShutdownRegistrationFlow,
        ],
        "{steps:#?}"
    );
    // the old UDP listener lingers for late answers; the stream ones close
    let tail: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            ChangeStep::Action(a @ MobilityAction::RetireListener { .. })
            | ChangeStep::Action(a @ MobilityAction::CloseListener(_)) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        tail,
        [
            MobilityAction::RetireListener {
                listener: 0,
                grace: Duration::from_secs(32)
            },
            MobilityAction::CloseListener(1),
            MobilityAction::CloseListener(2),
        ]
    );
    let restarted: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            ChangeStep::Stage(r) if r.stage == IpChangeStage::RestartListener => {
                Some((r.status.clone(), r.address))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        restarted,
        [
            (Ok(()), Some(addr(NEW, 5060))),
            (Ok(()), Some(addr(NEW, 5060))),
            (Ok(()), Some(addr(NEW, 5061))),
        ]
    );
    // the REGISTER leaves from the new address with the new Contact
    let r = recv(&mut sim, reg);
    assert_eq!(r.from, addr(NEW, 5060));
    let contact = r.message.header(HeaderName::Contact).unwrap();
    assert!(
        contact.starts_with("<sip:alice@192.0.2.11:5060"),
        "{contact}"
    );
    // not confirmed yet
    let before = reports(&mut sim, ua);
    assert!(
        before
            .iter()
            .all(|r| r.stage != IpChangeStage::UpdateContact),
        "{before:?}"
    );
    ok(&mut sim, reg, &r, 300);
    sim.run_for(Duration::from_millis(100));
    let after = reports(&mut sim, ua);
    assert_eq!(
        after
            .iter()
            .map(|r| (r.stage, r.status.clone(), r.account))
            .collect::<Vec<_>>(),
        [
            (IpChangeStage::UpdateContact, Ok(()), Some(acc)),
            (IpChangeStage::Completed, Ok(()), None),
        ]
    );
    assert_eq!(after[0].address, Some(addr(NEW, 5060)));
    // its elapsed time counts from `started` up to the 2xx (two hops of
    // 10 ms each way)
    assert!(after[0].elapsed >= Duration::from_millis(20), "{after:?}");
}

/// A listener's port is taken at the new address: it is tried again
/// after the restart delay, then opened on another port, and the stage
/// says so (the change completes, with that stage counted as failed).
#[test]
fn a_listener_whose_port_is_taken_falls_back_and_says_so() {
    let (mut sim, ua, reg, _) = registered(Transport::Udp);
    sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
    sim.occupy(addr(NEW, 5061));
    let steps = sim.ip_change(ua, IpChangeParams::new(ip(NEW)));
    let tls_listens: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            ChangeStep::Action(MobilityAction::Listen {
                transport: Transport::Tls,
                addr,
                after,
            }) => Some((*addr, *after)),
            _ => None,
        })
        .collect();
    assert_eq!(
        tls_listens,
        [
            (addr(NEW, 5061), Duration::ZERO),
            (addr(NEW, 5061), Duration::from_millis(10)),
            (addr(NEW, 0), Duration::ZERO),
        ]
    );
    let tls = steps
        .iter()
        .find_map(|s| match s {
            ChangeStep::Stage(r)
                if r.stage == IpChangeStage::RestartListener
                    && r.transport == Some(Transport::Tls) =>
            {
                Some(r.clone())
            }
            _ => None,
        })
        .unwrap();
    let fallback = tls.address.unwrap();
    assert_eq!(fallback.ip(), ip(NEW));
    assert_ne!(fallback.port(), 5061);
    assert_eq!(
        tls.status,
        Err(IpChangeError::PortTaken {
            ip: ip(NEW),
            port: 5061,
            fallback
        })
    );
    assert_eq!(
        tls.status_text(),
        format!("port 5061 is taken on 192.0.2.11: listening on {fallback} instead")
    );
    let r = recv(&mut sim, reg);
    ok(&mut sim, reg, &r, 300);
    sim.run_for(Duration::from_millis(100));
    let last = reports(&mut sim, ua).pop().unwrap();
    assert_eq!(last.stage, IpChangeStage::Completed);
    assert_eq!(last.status, Err(IpChangeError::Incomplete(1)));
}

/// A change to an address the host does not have is refused at once:
/// nothing is asked of the driver, nothing is sent, the account stays.
#[test]
fn a_change_to_an_address_the_host_lacks_is_refused() {
    let (mut sim, ua, reg, acc) = registered(Transport::Udp);
    let steps = sim.ip_change(ua, IpChangeParams::new(ip(OTHER)));
    assert_eq!(
        stages(&steps),
        [IpChangeStage::Started, IpChangeStage::Completed]
    );
    assert!(steps.iter().all(|s| matches!(s, ChangeStep::Stage(_))));
    let ChangeStep::Stage(done) = &steps[1] else {
        unreachable!()
    };
    assert_eq!(done.status, Err(IpChangeError::NotLocal(ip(OTHER))));
    assert!(sim
        .run_until_peer_receives(reg, Duration::from_secs(60))
        .is_none_or(|r| {
            // only the refresh, much later, still from the old address
            r.from.ip() == ip(UA)
        }));
    assert_eq!(
        sim.endpoint(ua).account_registrar(acc),
        Some(addr(REG, 5060))
    );
}

/// With `shutdown_transports` off, the registration's own TCP flow is
/// still closed (PJSIP's `ip_change_cfg.shutdown_tp`), and
/// `shutdown_registration_flow` is reported after it is.
#[test]
fn the_registration_flow_is_closed_before_its_stage_is_reported() {
    let (mut sim, ua, reg, _) = registered(Transport::Tcp);
    assert!(sim.log().iter().any(|l| l.transport == Transport::Tcp));
    sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
    let mut params = IpChangeParams::new(ip(NEW));
    params.shutdown_transports = false;
    let steps = sim.ip_change(ua, params);
    let close = steps
        .iter()
        .position(|s| matches!(s, ChangeStep::Action(MobilityAction::CloseFlow(_))))
        .expect("the registration flow closed");
    let reported = steps
        .iter()
        .position(
            |s| matches!(s, ChangeStep::Stage(r) if r.stage == IpChangeStage::ShutdownRegistrationFlow),
        )
        .expect("its stage reported");
    assert!(close < reported, "{steps:#?}");
    // the REGISTER goes over a new connection from the new address
    let r = recv(&mut sim, reg);
    assert_eq!(r.transport, Transport::Tcp);
    assert_eq!(r.from.ip(), ip(NEW));
}

/// A second change while the first waits for its 2xx supersedes it: the
/// first's unsettled stage and its `completed` say so, the second
/// registers its own Contact and completes on its 2xx; the first
/// REGISTER's late answer changes nothing.
#[test]
fn a_second_change_supersedes_one_waiting_for_its_2xx() {
    let (mut sim, ua, reg, acc) = registered(Transport::Udp);
    sim.set_addresses(ua, &[ip(UA), ip(NEW), ip(OTHER)]);
    sim.ip_change(ua, IpChangeParams::new(ip(NEW)));
    let first = recv(&mut sim, reg);
    assert_eq!(first.from.ip(), ip(NEW));
    let steps = sim.ip_change(ua, IpChangeParams::new(ip(OTHER)));
    let superseded: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            ChangeStep::Stage(r) if r.status == Err(IpChangeError::Superseded) => Some(r.stage),
            _ => None,
        })
        .collect();
    assert_eq!(
        superseded,
        [IpChangeStage::UpdateContact, IpChangeStage::Completed]
    );
    let second = recv(&mut sim, reg);
    assert_eq!(second.from.ip(), ip(OTHER));
    ok(&mut sim, reg, &first, 300);
    ok(&mut sim, reg, &second, 300);
    sim.run_for(Duration::from_millis(100));
    let evs = sim.take_events(ua);
    let regs: Vec<_> = evs
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Registration(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let after: Vec<_> = evs
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::IpChange(r) => Some(r),
            _ => None,
        })
        .filter(|r| r.stage == IpChangeStage::UpdateContact || r.stage == IpChangeStage::Completed)
        .filter(|r| r.status != Err(IpChangeError::Superseded))
        .map(|r| (r.stage, r.status, r.address))
        .collect();
    assert_eq!(
        after,
        [
            (
                IpChangeStage::UpdateContact,
                Ok(()),
                Some(addr(OTHER, 5060))
            ),
            (IpChangeStage::Completed, Ok(()), None),
        ]
    );
    assert!(
        regs.last()
            .is_some_and(|e| e.account == acc && e.contact.contains("192.0.2.12")),
        "{regs:?}"
    );
}

/// A change into the other family moves the account to the registrar's
/// address in that family, over a new flow, from the new address.
#[test]
fn a_change_into_ipv6_moves_the_account_to_the_registrars_ipv6_address() {
    const UA6: &str = "2001:db8::10";
    const REG6: &str = "2001:db8::20";
    let (mut sim, ua, reg, acc) = registered(Transport::Udp);
    sim.set_addresses(reg, &[ip(REG), ip(REG6)]);
    sim.set_addresses(ua, &[ip(UA), ip(UA6)]);
    sim.with_endpoint(ua, |ep, _| {
        ep.modify_account_routes(acc, |r| {
            r.registrar.push(RegistrarAddress {
                transport: Transport::Udp,
                addr: addr(REG6, 5060),
            })
        })
    })
    .unwrap();
    sim.ip_change(ua, IpChangeParams::new(ip(UA6)));
    let r = recv(&mut sim, reg);
    assert_eq!(r.to, addr(REG6, 5060));
    assert_eq!(r.from.ip(), ip(UA6));
    let contact = r.message.header(HeaderName::Contact).unwrap();
    assert!(
        contact.starts_with("<sip:alice@[2001:db8::10]:5060"),
        "{contact}"
    );
    ok(&mut sim, reg, &r, 300);
    sim.run_for(Duration::from_millis(100));
    let last = reports(&mut sim, ua).pop().unwrap();
    assert_eq!(
        (last.stage, last.status),
        (IpChangeStage::Completed, Ok(()))
    );
    // an account whose IPv6 use is disabled refuses the same change
    sim.with_endpoint(ua, |ep, _| {
        ep.modify_account_routes(acc, |r| r.sip = Ipv6Use::Disabled)
    })
    .unwrap();
    sim.set_addresses(ua, &[ip(UA), ip(UA6), ip("2001:db8::11")]);
    sim.ip_change(ua, IpChangeParams::new(ip(UA)));
    let r = recv(&mut sim, reg);
    ok(&mut sim, reg, &r, 300);
    sim.run_for(Duration::from_millis(100));
    reports(&mut sim, ua);
    let steps = sim.ip_change(ua, IpChangeParams::new(ip("2001:db8::11")));
    let refused = steps.iter().find_map(|s| match s {
        ChangeStep::Stage(r) if r.stage == IpChangeStage::UpdateContact => Some(r.status.clone()),
        _ => None,
    });
    assert_eq!(
        refused,
        Some(Err(IpChangeError::FamilyNotAllowed(Ipv6Use::Disabled)))
    );
}

/// A registration that fails after the change reports `update_contact`
/// with the failure, and `completed` counts it.
#[test]
fn a_refused_register_after_a_change_is_reported() {
    let (mut sim, ua, reg, _) = registered(Transport::Udp);
    sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
    sim.ip_change(ua, IpChangeParams::new(ip(NEW)));
    let r = recv(&mut sim, reg);
    reports(&mut sim, ua);
    support::answer(&mut sim, reg, &r, 403, &[]);
    sim.run_for(Duration::from_millis(100));
    let got: Vec<_> = reports(&mut sim, ua)
        .into_iter()
        .map(|r| (r.stage, r.status))
        .collect();
    assert_eq!(
        got,
        [
            (
                IpChangeStage::UpdateContact,
                Err(IpChangeError::Registration(Some(
                    siproam_core::RegistrationFailure::Status(403)
                )))
            ),
            (IpChangeStage::Completed, Err(IpChangeError::Incomplete(1))),
        ]
    );
}

// ----- calls through the machine ---------------------------------------

const BOB: &str = "192.0.2.30";

fn sdp(tag: &str) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns={tag}\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    ))
}

/// Alice on `addrs` and Bob (a sans-IO endpoint on BOB).
fn alice_and_bob(addrs: &[std::net::IpAddr]) -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(std::time::Instant::now(), 3);
    let alice = sim.add_endpoint("alice", addrs, siproam_core::Config::default());
    let bob = sim.add_endpoint(
        "bob",
        &[ip(BOB)],
        siproam_core::Config {
            seed: 2,
            ..siproam_core::Config::default()
        },
    );
    (sim, alice, bob)
}

/// Alice calls Bob over UDP (from `local` when given), with an offer.
fn call_bob(sim: &mut Sim, alice: NodeId, local: Option<SocketAddr>) -> CallId {
    let spec = InviteSpec {
        uri: format!("sip:bob@{BOB}"),
        from: "sip:alice@example.test".into(),
        target: Target {
            transport: Transport::Udp,
            remote: addr(BOB, 5060),
            local,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    sim.with_endpoint(alice, |ep, now| ep.invite(now, spec))
        .unwrap()
}

/// The call that just arrived at `node`.
fn incoming(sim: &mut Sim, node: NodeId) -> CallId {
    sim.take_events(node)
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::IncomingCall { call, .. } => Some(call),
            _ => None,
        })
        .expect("an incoming call")
}

/// The reports since the last look are exactly: the call's
/// `refresh_calls` ok, then `completed` ok.
fn assert_call_settled(sim: &mut Sim, node: NodeId, call: CallId) {
    let got: Vec<_> = reports(sim, node)
        .into_iter()
        .map(|r| (r.stage, r.status, r.call))
        .collect();
    assert_eq!(
        got,
        [
            (IpChangeStage::RefreshCalls, Ok(()), Some(call)),
            (IpChangeStage::Completed, Ok(()), None),
        ]
    );
}

/// The application's media part of a move, as the `Phone` does it: a
/// fresh offer now, or once the pending refresh settles.
fn reoffering_app() -> siproam_sim::Handler {
    let mut queued: std::collections::HashMap<CallId, bool> = std::collections::HashMap::new();
    Box::new(move |ep, now, ev| {
        match &ev {
            Event::CallMoved {
                call,
                action: CallMoveAction::Reoffer { update },
                ..
            } => ep.refresh(now, *call, *update, Some(sdp("moved"))).unwrap(),
            Event::CallMoved {
                call,
                action: CallMoveAction::ReofferWhenSettled { update },
                ..
            } => {
                queued.insert(*call, *update);
            }
            Event::CallMoved {
                call,
                action: CallMoveAction::Resend,
                ..
            } => ep.resend_invite(now, *call, Some(sdp("again"))).unwrap(),
            Event::Call(CallEvent::Answer { call, .. } | CallEvent::RefreshFailed { call, .. }) => {
                if let Some(update) = queued.remove(call) {
                    ep.refresh(now, *call, update, Some(sdp("moved"))).unwrap();
                }
            }
            _ => {}
        }
        Some(ev)
    })
}

/// Alice (on UA and NEW, with the re-offering application) in a call
/// with Bob (a sans-IO endpoint on BOB): (sim, alice, bob, alice's call,
/// bob's call).
fn call_up() -> (Sim, NodeId, NodeId, CallId, CallId) {
    let (mut sim, alice, bob) = alice_and_bob(&[ip(UA), ip(NEW)]);
    let a = call_bob(&mut sim, alice, None);
    sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut sim, bob);
    sim.with_endpoint(bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    sim.take_events(alice);
    sim.take_events(bob);
    sim.set_handler(alice, reoffering_app());
    (sim, alice, bob, a, b)
}

/// Bob answers the offer he got (the re-offer of a moved call).
fn bob_answers(sim: &mut Sim, bob: NodeId, b: CallId) {
    let offered = sim
        .take_events(bob)
        .into_iter()
        .any(|(_, e)| matches!(e, Event::Call(CallEvent::Offer { call, .. }) if call == b));
    assert!(offered, "bob got the re-offer");
    sim.with_endpoint(bob, |ep, now| ep.answer_offer(now, b, sdp("re-answer")))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
}

/// A confirmed call moves: the application's re-offer goes in a re-INVITE
/// from the new address; `refresh_calls` and `completed` wait for Bob's
/// 2xx.
#[test]
fn a_confirmed_call_is_refreshed_from_the_new_address_and_confirmed_on_its_2xx() {
    let (mut sim, alice, bob, a, b) = call_up();
    let mark = sim.log().len();
    let steps = sim.ip_change(alice, IpChangeParams::new(ip(NEW)));
    assert_eq!(
        *stages(&steps).last().unwrap(),
        IpChangeStage::RestartListener
    );
    // (the reports so far are those in `steps`)
    sim.take_events(alice);
    sim.run_for(Duration::from_millis(100));
    assert!(reports(&mut sim, alice).is_empty(), "nothing settled yet");
    bob_answers(&mut sim, bob, b);
    let (al2, bo) = (ip(NEW), ip(BOB));
    assert_eq!(
        sent_since(&sim, mark),
        [
            ("INVITE".to_owned(), al2),
            ("100".to_owned(), bo),
            ("200".to_owned(), bo),
            ("ACK".to_owned(), al2),
        ]
    );
    let reinvite = sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("INVITE"))
        .unwrap();
    assert_eq!(reinvite.from, addr(NEW, 5060));
    assert_call_settled(&mut sim, alice, a);
}

/// RFC 6141 §5.5 through the machine: our re-INVITE is stuck at the
/// change, so it is CANCELled from the old address; its 487 is ACKed, and
/// only then the fresh offer goes from the new address. `refresh_calls`
/// is not settled by the CANCELled re-INVITE's 487 but by the new one's
/// 2xx.
#[test]
fn a_change_with_a_reinvite_pending_cancels_it_and_settles_on_the_new_offer() {
    let (mut sim, alice, bob, a, b) = call_up();
    sim.with_endpoint(alice, |ep, now| ep.refresh(now, a, false, Some(sdp("re1"))))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    sim.take_events(bob);
    let mark = sim.log().len();
    sim.ip_change(alice, IpChangeParams::new(ip(NEW)));
    sim.take_events(alice);
    sim.run_for(Duration::from_millis(100));
    assert!(
        reports(&mut sim, alice)
            .iter()
            .all(|r| r.stage != IpChangeStage::RefreshCalls),
        "the 487 does not settle the move"
    );
    bob_answers(&mut sim, bob, b);
    let (al, al2, bo) = (ip(UA), ip(NEW), ip(BOB));
    assert_eq!(
        sent_since(&sim, mark),
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
    let got: Vec<_> = reports(&mut sim, alice)
        .into_iter()
        .map(|r| (r.stage, r.status))
        .collect();
    assert_eq!(
        got,
        [
            (IpChangeStage::RefreshCalls, Ok(())),
            (IpChangeStage::Completed, Ok(())),
        ]
    );
}

/// `hangup_calls`: the call ends with a BYE from the new address and the
/// stage is reported at once; nothing else waits.
#[test]
fn hangup_calls_ends_the_call_and_completes() {
    let (mut sim, alice, _bob, a, _) = call_up();
    let mut params = IpChangeParams::new(ip(NEW));
    params.hangup_calls = true;
    let steps = sim.ip_change(alice, params);
    let tail: Vec<_> = stages(&steps).into_iter().rev().take(2).collect();
    assert_eq!(tail, [IpChangeStage::Completed, IpChangeStage::HangupCalls]);
    sim.run_for(Duration::from_millis(100));
    assert!(sim
        .log()
        .iter()
        .any(|e| e.first_line.starts_with("BYE ") && e.from.ip() == ip(NEW)));
    assert_eq!(sim.endpoint(alice).call_state(a), None);
}

/// The application never re-offers a moved call (it ignores
/// `CallMoved`): the change stops waiting after 2·64·T1 and says so.
#[test]
fn a_move_nobody_settles_times_out() {
    let (mut sim, alice, _bob, a, _) = call_up();
    sim.set_handler(alice, Box::new(|_, _, ev| Some(ev)));
    sim.ip_change(alice, IpChangeParams::new(ip(NEW)));
    sim.take_events(alice);
    sim.run_for(Duration::from_secs(63));
    assert!(reports(&mut sim, alice).is_empty());
    sim.run_for(Duration::from_secs(2));
    let got: Vec<_> = reports(&mut sim, alice)
        .into_iter()
        .map(|r| (r.stage, r.status, r.call))
        .collect();
    assert_eq!(
        got,
        [
            (
                IpChangeStage::RefreshCalls,
                Err(IpChangeError::Timeout(Duration::from_secs(64))),
                Some(a)
            ),
            (
                IpChangeStage::Completed,
                Err(IpChangeError::Incomplete(1)),
                None
            ),
        ]
    );
}

/// A change back to the address an earlier change left within its grace:
/// the lingering UDP listener is taken back (not bound anew, which its
/// socket would refuse, costing the retry delay and a port fallback), the
/// stream listeners are opened on their ports again.
#[test]
fn a_change_back_takes_back_the_lingering_listener() {
    let (mut sim, ua, reg, _) = registered(Transport::Udp);
    sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
    sim.ip_change(ua, IpChangeParams::new(ip(NEW)));
    let r = recv(&mut sim, reg);
    ok(&mut sim, reg, &r, 300);
    sim.run_for(Duration::from_millis(100));
    let steps = sim.ip_change(ua, IpChangeParams::new(ip(UA)));
    let actions: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            ChangeStep::Action(
                a @ (MobilityAction::ReclaimListener(_) | MobilityAction::Listen { .. }),
            ) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert!(
        matches!(actions[0], MobilityAction::ReclaimListener(_)),
        "{actions:?}"
    );
    assert_eq!(
        actions[1..],
        [
            MobilityAction::Listen {
                transport: Transport::Tcp,
                addr: addr(UA, 5060),
                after: Duration::ZERO
            },
            MobilityAction::Listen {
                transport: Transport::Tls,
                addr: addr(UA, 5061),
                after: Duration::ZERO
            },
        ]
    );
    let restarted: Vec<_> = steps
        .iter()
        .filter_map(|s| match s {
            ChangeStep::Stage(r) if r.stage == IpChangeStage::RestartListener => {
                Some((r.status.clone(), r.address))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        restarted,
        [
            (Ok(()), Some(addr(UA, 5060))),
            (Ok(()), Some(addr(UA, 5060))),
            (Ok(()), Some(addr(UA, 5061))),
        ]
    );
}

/// Break-before-make while our call rings: the address the INVITE left
/// from is gone, so the machine sees its path gone and the INVITE is
/// CANCELled and sent again from the new address; the same call is then
/// answered there.
#[test]
fn our_ringing_call_whose_address_went_is_invited_again_from_the_new_one() {
    let (mut sim, alice, bob) = alice_and_bob(&[ip(UA), ip(NEW)]);
    let a = call_bob(&mut sim, alice, Some(addr(UA, 5060)));
    sim.run_for(Duration::from_millis(100));
    let first = incoming(&mut sim, bob);
    sim.with_endpoint(bob, |ep, now| ep.answer(now, first, 180, None))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    sim.set_handler(alice, reoffering_app());
    sim.set_addresses(alice, &[ip(NEW)]);
    let mark = sim.log().len();
    sim.ip_change(alice, IpChangeParams::new(ip(NEW)));
    sim.run_for(Duration::from_millis(100));
    let sent = sent_since(&sim, mark);
    assert_eq!(sent[0], ("CANCEL".to_owned(), ip(NEW)), "{sent:?}");
    assert!(
        sent.contains(&("INVITE".to_owned(), ip(NEW))),
        "sent again from the new address: {sent:?}"
    );
    let second = incoming(&mut sim, bob);
    sim.with_endpoint(bob, |ep, now| {
        ep.answer(now, second, 200, Some(sdp("answer")))
    })
    .unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
}

/// A call ringing here at the change: nothing is sent (the peer's INVITE
/// is not ours to move), the stage is ok at once, and our 2xx carries the
/// new Contact: the peer's ACK comes to the new address.
#[test]
fn a_call_ringing_here_is_answered_with_the_new_contact() {
    ringing_here_then_answered(false);
}

/// The same when the old address is gone (break-before-make): the answer
/// cannot leave from the address the INVITE came to, so it leaves from
/// the new one, and the call is set up.
#[test]
fn a_call_ringing_here_when_its_address_went_is_answered_from_the_new_one() {
    ringing_here_then_answered(true);
}

fn ringing_here_then_answered(break_before_make: bool) {
    let (mut sim, alice, bob) = alice_and_bob(&[ip(UA), ip(NEW)]);
    let spec = InviteSpec {
        uri: format!("sip:alice@{UA}"),
        from: "sip:bob@example.test".into(),
        target: Target {
            transport: Transport::Udp,
            remote: addr(UA, 5060),
            local: None,
            server_name: None,
        },
        sdp: Some(sdp("offer")),
        contact_user: "bob".into(),
    };
    sim.with_endpoint(bob, |ep, now| ep.invite(now, spec))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    let a = incoming(&mut sim, alice);
    sim.with_endpoint(alice, |ep, now| ep.answer(now, a, 180, None))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    if break_before_make {
        sim.set_addresses(alice, &[ip(NEW)]);
    }
    let mark = sim.log().len();
    let steps = sim.ip_change(alice, IpChangeParams::new(ip(NEW)));
    let moved = steps.iter().find_map(|s| match s {
        ChangeStep::Stage(r) if r.stage == IpChangeStage::RefreshCalls => {
            Some((r.status.clone(), r.call))
        }
        _ => None,
    });
    assert_eq!(moved, Some((Ok(()), Some(a))));
    assert_eq!(*stages(&steps).last().unwrap(), IpChangeStage::Completed);
    sim.run_for(Duration::from_millis(100));
    assert!(
        sent_since(&sim, mark).is_empty(),
        "nothing sent at the change"
    );
    sim.with_endpoint(alice, |ep, now| ep.answer(now, a, 200, Some(sdp("answer"))))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    let ack = sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("ACK "))
        .unwrap();
    assert_eq!(ack.to.ip(), ip(NEW), "the ACK goes to the new Contact");
    assert_eq!(
        sim.endpoint(alice).call_state(a),
        Some(CallState::Confirmed)
    );
    let b = sim.endpoint(bob).calls().first().map(|(c, _)| *c).unwrap();
    assert_eq!(sim.endpoint(bob).call_state(b), Some(CallState::Confirmed));
    let fates: Vec<_> = sim
        .log()
        .iter()
        .skip(mark)
        .map(|e| (e.first_line.clone(), e.fate))
        .collect();
    assert!(
        fates
            .iter()
            .all(|(_, f)| *f == siproam_sim::Fate::Delivered),
        "{fates:?}"
    );
}

/// A NAT rebinding: the registrar's answer to a refresh shows another
/// public address (`received`/`rport`); the registration re-registers it,
/// and the machine moves the account's call: `started` with the public
/// address, the call re-offered with it as Contact while still sent from
/// our address, `refresh_calls` on its 2xx, `completed`.
#[test]
fn a_nat_rebinding_moves_the_accounts_calls_through_the_machine() {
    let (mut sim, alice, bob) = alice_and_bob(&[ip(UA)]);
    let reg = sim.add_peer("registrar", &[ip(REG)]);
    let target = Target {
        transport: Transport::Udp,
        remote: addr(REG, 5060),
        local: None,
        server_name: None,
    };
    let mut cfg =
        siproam_core::AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    cfg.expires = 300;
    let acc = sim.with_endpoint(alice, |ep, now| ep.register(now, cfg));
    sim.with_endpoint(alice, |ep, _| {
        ep.set_account_routes(
            acc,
            AccountRoutes {
                aor: "sip:alice@example.test".into(),
                registrar: vec![RegistrarAddress {
                    transport: Transport::Udp,
                    addr: addr(REG, 5060),
                }],
                sip: Ipv6Use::Enabled,
                media: Ipv6Use::Enabled,
                ip_change: None,
            },
            Some(ip(UA)),
        )
    })
    .unwrap();
    let r = recv(&mut sim, reg);
    ok(&mut sim, reg, &r, 300);
    sim.run_for(Duration::from_millis(100));
    // a call of the account's (its AoR is the call's local URI)
    let a = call_bob(&mut sim, alice, None);
    sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut sim, bob);
    sim.with_endpoint(bob, |ep, now| ep.answer(now, b, 200, Some(sdp("answer"))))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    sim.take_events(alice);
    sim.take_events(bob);
    sim.set_handler(alice, reoffering_app());
    // the refresh's answer shows the NAT's new mapping
    let refresh = recv(&mut sim, reg);
    let contact = refresh
        .message
        .header(HeaderName::Contact)
        .unwrap()
        .to_owned();
    let mut resp =
        siproam_sip::MessageBuilder::response_to(&refresh.message, 200, "OK", Some("reg1"))
            .header("Contact", &contact)
            .build()
            .unwrap();
    resp.set_top_via_param("received", Some(Some("198.51.100.77")))
        .unwrap();
    resp.set_top_via_param("rport", Some(Some("40123")))
        .unwrap();
    sim.peer_reply(reg, &refresh, resp.to_bytes());
    let rewritten = recv(&mut sim, reg);
    assert!(rewritten
        .message
        .header(HeaderName::Contact)
        .unwrap()
        .contains("198.51.100.77:40123"));
    let mark = sim.log().len();
    ok(&mut sim, reg, &rewritten, 300);
    sim.run_for(Duration::from_millis(100));
    let started = reports(&mut sim, alice);
    assert_eq!(
        started
            .iter()
            .map(|r| (r.stage, r.account, r.address))
            .collect::<Vec<_>>(),
        [(
            IpChangeStage::Started,
            Some(acc),
            Some(addr("198.51.100.77", 40123))
        )]
    );
    // the re-INVITE names the public address and leaves from ours
    let reinvite = sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("INVITE "))
        .expect("a re-INVITE")
        .clone();
    assert_eq!(reinvite.from.ip(), ip(UA));
    bob_answers(&mut sim, bob, b);
    assert_call_settled(&mut sim, alice, a);
}

/// Detection is a pure function of the core's state and a view: an
/// account whose registrar is now reached from another address moves
/// there, unless a listener is pinned to its address and that address
/// still exists; a call whose next hop is reached from another address
/// moves with it.
#[test]
fn detection_reads_the_view() {
    let (mut sim, ua, _reg, acc) = registered(Transport::Udp);
    let base = sim.network_view(ua);
    assert_eq!(sim.endpoint(ua).detect_change(&base), None, "{base:?}");
    // the route to the registrar now leaves from NEW
    let mut view = base.clone();
    view.sources.insert(addr(REG, 5060), ip(NEW));
    view.local.insert(ip(NEW));
    // the sim's listen points are pinned to UA, which still exists
    assert_eq!(sim.endpoint(ua).detect_change(&view), None);
    // with wildcard listeners nothing is pinned
    for l in &mut view.listeners {
        l.local = SocketAddr::new("0.0.0.0".parse().unwrap(), l.local.port());
    }
    let change = sim.endpoint(ua).detect_change(&view).unwrap();
    assert_eq!(change.ip, ip(NEW));
    assert_eq!(change.accounts, [acc]);
    assert!(change.calls.is_empty());
    let params = change.params(&IpChangeParams::new(ip(UA)));
    assert_eq!(params.ip, Some(ip(NEW)));
    assert_eq!(params.accounts, Some(vec![acc]));
    assert!(params.keep_unaffected);
    // the old address gone too: the same, and only the stale connections
    // would be closed
    view.local.remove(&ip(UA));
    assert_eq!(sim.endpoint(ua).detect_change(&view).unwrap().ip, ip(NEW));
}

/// `prefer_update` with a peer that allows UPDATE: the application is
/// asked for its re-offer by UPDATE, which leaves from the new address.
#[test]
fn prefer_update_moves_the_call_with_an_update() {
    let (mut sim, alice, bob, a, b) = call_up();
    let mut params = IpChangeParams::new(ip(NEW));
    params.refresh.prefer_update = true;
    let mark = sim.log().len();
    sim.ip_change(alice, params);
    let moved = sim
        .take_events(alice)
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::CallMoved { call, action, .. } => Some((call, action)),
            _ => None,
        });
    assert_eq!(moved, Some((a, CallMoveAction::Reoffer { update: true })));
    sim.run_for(Duration::from_millis(100));
    bob_answers(&mut sim, bob, b);
    let sent = sent_since(&sim, mark);
    assert_eq!(sent[0], ("UPDATE".to_owned(), ip(NEW)), "{sent:?}");
    assert!(!sent.iter().any(|(m, _)| m == "INVITE"), "{sent:?}");
}

/// `update_via` alone (`update_contact` and `reinit_media` off): the
/// re-INVITE leaves from the new address, its Via names it, the Contact
/// stays, and the application re-offers no new media address.
#[test]
fn update_via_alone_moves_the_via_and_keeps_the_contact() {
    let (mut sim, alice, bob, a, b) = call_up();
    let mut params = IpChangeParams::new(ip(NEW));
    params.refresh.update_contact = false;
    params.refresh.reinit_media = false;
    let mark = sim.log().len();
    sim.ip_change(alice, params);
    let moved = sim
        .take_events(alice)
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::CallMoved { call, media_ip, .. } => Some((call, media_ip)),
            _ => None,
        });
    assert_eq!(moved, Some((a, None)));
    sim.run_for(Duration::from_millis(100));
    let reinvite = sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("INVITE "))
        .expect("a re-INVITE")
        .clone();
    assert_eq!(reinvite.from.ip(), ip(NEW));
    // the dialog's Contact is still the old address: once the re-offer is
    // answered, Bob's BYE goes there
    bob_answers(&mut sim, bob, b);
    sim.with_endpoint(bob, |ep, now| ep.hang_up(now, b))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    let bye = sim
        .log()
        .iter()
        .skip(mark)
        .find(|e| e.first_line.starts_with("BYE "))
        .expect("Bob's BYE");
    assert_eq!(bye.to.ip(), ip(UA), "the Contact stayed");
}

/// A partial change (what detection makes: `keep_unaffected`, only some
/// accounts): a listener pinned to an address that still exists stays,
/// only the stale stream connections are closed (their local address no
/// longer the source towards their peer), and only the named account
/// registers again.
#[test]
fn a_partial_change_keeps_what_it_does_not_concern() {
    let (mut sim, ua, reg, acc) = registered(Transport::Tcp);
    sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
    let view = sim.network_view(ua);
    assert_eq!(view.connections.len(), 1, "{view:?}");
    let stale = view.connections[0].id;
    // the route to the registrar now leaves from NEW; the listeners stay
    // pinned on UA, which still exists
    let mut view = view;
    view.sources.insert(addr(REG, 5060), ip(NEW));
    let params = siproam_core::DetectedChange {
        ip: ip(NEW),
        accounts: vec![acc],
        calls: vec![],
    }
    .params(&IpChangeParams::new(ip(NEW)));
    let now = sim.now();
    sim.endpoint(ua).start_ip_change(now, params, view).unwrap();
    let mut actions = Vec::new();
    while let Some(a) = sim.endpoint(ua).poll_mobility() {
        actions.push(a.clone());
        let now = sim.now();
        sim.endpoint(ua)
            .handle_mobility(now, siproam_core::MobilityResult::Done);
    }
    assert_eq!(actions[0], MobilityAction::CloseConnections(vec![stale]));
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            MobilityAction::Listen { .. } | MobilityAction::CloseListener(_)
        )),
        "pinned listeners stay: {actions:?}"
    );
    sim.flush(ua);
    let restarted: Vec<_> = reports(&mut sim, ua)
        .into_iter()
        .filter(|r| r.stage == IpChangeStage::RestartListener)
        .map(|r| r.address)
        .collect();
    assert_eq!(
        restarted,
        [
            Some(addr(UA, 5060)),
            Some(addr(UA, 5060)),
            Some(addr(UA, 5061))
        ]
    );
    let r = recv(&mut sim, reg);
    assert_eq!(r.message.method(), Some(siproam_sip::Method::Register));
}

/// Make-before-break while our call rings at a peer that allows UPDATE:
/// the early dialog gets an UPDATE without SDP from the new address at
/// once, and `refresh_calls` is ok on its 2xx.
#[test]
fn our_ringing_call_with_its_old_path_alive_gets_an_update() {
    let (mut sim, alice, bob) = alice_and_bob(&[ip(UA), ip(NEW)]);
    let a = call_bob(&mut sim, alice, Some(addr(UA, 5060)));
    sim.run_for(Duration::from_millis(100));
    let b = incoming(&mut sim, bob);
    sim.with_endpoint(bob, |ep, now| ep.answer(now, b, 180, None))
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    assert!(sim.endpoint(alice).call_allows_update(a));
    sim.take_events(alice);
    let mark = sim.log().len();
    let steps = sim.ip_change(alice, IpChangeParams::new(ip(NEW)));
    assert_ne!(*stages(&steps).last().unwrap(), IpChangeStage::Completed);
    sim.take_events(alice);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        sent_since(&sim, mark),
        [("UPDATE".to_owned(), ip(NEW)), ("200".to_owned(), ip(BOB)),]
    );
    assert_call_settled(&mut sim, alice, a);
}
