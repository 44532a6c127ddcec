//! RFC 5626 with several flows per identity, in virtual time: two flows
//! through two outbound proxies (reg-id 1 and 2, a pre-loaded Route),
//! new requests over a live flow, the §4.5 back-off, the forced retry and
//! 430 Flow Failed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use siproam_core::{
    AccountConfig, AccountId, CallEvent, CallState, Config, Event, FlowCloseReason, FlowEvent,
    FlowState, InviteSpec, RegistrationEvent, RegistrationFailure, RegistrationState, Target,
    Transport,
};
use siproam_sim::{NodeId, Received, Sim};
use siproam_sip::{HeaderName, Method};
use support::{answer, ip, recv, UA};

const PROXY1: &str = "192.0.2.30";
const PROXY2: &str = "192.0.2.31";
const INSTANCE: &str = "urn:uuid:00000000-0000-4000-8000-000000000001";

struct Flows {
    sim: Sim,
    ua: NodeId,
    proxies: Vec<NodeId>,
}

/// One flow of `sip:alice@example.test` through the outbound proxy at
/// `proxy`, with `reg_id`.
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
    cfg.keepalive_stream = None;
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

/// The user agent with `n` flows (proxies at PROXY1, PROXY2), each
/// registered; the REGISTERs the proxies got.
fn registered(n: usize) -> (Flows, Vec<Received>) {
    let mut sim = Sim::new(std::time::Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA)], Config::default());
    let mut proxies = Vec::new();
    let mut registers = Vec::new();
    for (i, addr) in [PROXY1, PROXY2].iter().take(n).enumerate() {
        let p = sim.add_peer(&format!("proxy{}", i + 1), &[ip(addr)]);
        proxies.push(p);
        let cfg = flow_config(addr, i as u32 + 1);
        sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    }
    for p in &proxies {
        let r = recv(&mut sim, *p);
        ok_outbound(&mut sim, *p, &r);
        registers.push(r);
    }
    sim.run_for(Duration::from_millis(100));
    sim.take_events(ua);
    (Flows { sim, ua, proxies }, registers)
}

fn invite(f: &mut Flows) -> siproam_core::CallId {
    let spec = InviteSpec {
        uri: "sip:bob@example.test".into(),
        from: "sip:alice@example.test".into(),
        // the next hop the application gave: overridden by the flow
        target: Target {
            transport: Transport::Tcp,
            remote: SocketAddr::new(ip(PROXY1), 5060),
            local: None,
            server_name: None,
        },
        sdp: None,
        contact_user: "alice".into(),
    };
    f.sim
        .with_endpoint(f.ua, |ep, now| ep.invite(now, spec))
        .unwrap()
}

/// The next request a peer receives other than an ACK (the ACK of a 430
/// goes out as its flow is closed).
fn recv_request(sim: &mut Sim, peer: NodeId) -> Received {
    loop {
        let r = recv(sim, peer);
        if r.message.method() != Some(Method::Ack) {
            return r;
        }
    }
}

/// The registration events, each with its wait before the retry (for
/// `Failed`: `retry_at` less the time it was reported).
fn registration_events(sim: &mut Sim, ua: NodeId) -> Vec<(Duration, RegistrationEvent)> {
    sim.take_events(ua)
        .into_iter()
        .filter_map(|(at, e)| match e {
            Event::Registration(r) => Some((
                r.retry_at
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(at)),
                r,
            )),
            _ => None,
        })
        .collect()
}

/// Every failure's wait before its retry.
fn waits(evs: &[(Duration, RegistrationEvent)], account: AccountId) -> Vec<Duration> {
    evs.iter()
        .filter(|(_, e)| e.account == account && e.state == RegistrationState::Failed)
        .map(|(wait, _)| *wait)
        .collect()
}

/// Two flows through two proxies: each REGISTER goes to its own proxy
/// with its reg-id (1, 2), the same +sip.instance, and the proxy as a
/// pre-loaded loose Route; both are reported with outbound in force.
#[test]
fn two_flows_register_through_their_proxies_with_reg_id_1_and_2_and_a_loose_route() {
    let (mut f, registers) = registered(2);
    for (i, r) in registers.iter().enumerate() {
        let proxy = [PROXY1, PROXY2][i];
        assert_eq!(r.message.method(), Some(Method::Register));
        assert_eq!(r.to.ip(), ip(proxy));
        assert_eq!(r.message.request_uri_str(), Some("sip:example.test"));
        assert_eq!(
            r.message.header(HeaderName::Route),
            Some(format!("<sip:{proxy};lr>").as_str())
        );
        let contact = r.message.header(HeaderName::Contact).unwrap();
        assert!(contact.contains(&format!(";reg-id={}", i + 1)), "{contact}");
        assert!(contact.contains(INSTANCE), "{contact}");
    }
    let ep = f.sim.endpoint(f.ua);
    assert!(ep.account_outbound(AccountId(1)) && ep.account_outbound(AccountId(2)));
    assert_eq!(ep.account_reg_id(AccountId(1)), Some(1));
    assert_eq!(ep.account_reg_id(AccountId(2)), Some(2));
}

/// A new INVITE goes over the flow of reg-id 1 (its proxy as Route, `;ob`
/// in the Contact); when that flow fails, the next INVITE goes over the
/// other flow at once, while the failed one registers again.
#[test]
fn when_one_flow_fails_new_requests_go_over_the_other_at_once() {
    let (mut f, registers) = registered(2);
    invite(&mut f);
    let inv = recv(&mut f.sim, f.proxies[0]);
    assert_eq!(inv.message.method(), Some(Method::Invite));
    assert_eq!(inv.conn, registers[0].conn, "over the registration's flow");
    assert_eq!(
        inv.message.header(HeaderName::Route),
        Some(format!("<sip:{PROXY1};lr>").as_str())
    );
    assert!(inv
        .message
        .header(HeaderName::Contact)
        .unwrap()
        .contains(";ob"));
    // flow 1 dies
    f.sim.peer_close(registers[0].conn.unwrap());
    f.sim.run_for(Duration::from_millis(1));
    let t = f.sim.now();
    invite(&mut f);
    let inv2 = recv(&mut f.sim, f.proxies[1]);
    assert_eq!(inv2.message.method(), Some(Method::Invite));
    assert_eq!(inv2.conn, registers[1].conn);
    assert!(inv2.at - t < Duration::from_millis(50), "sent at once");
    assert_eq!(
        inv2.message.header(HeaderName::Route),
        Some(format!("<sip:{PROXY2};lr>").as_str())
    );
    // flow 1 registers again over a new connection meanwhile
    let again = recv(&mut f.sim, f.proxies[0]);
    assert_eq!(again.message.method(), Some(Method::Register));
    assert_ne!(again.conn, registers[0].conn);
    assert!(again.at - t < Duration::from_millis(50), "at once");
}

/// Fails flow `i` (its connection closed) and answers its REGISTERs 503
/// `times` times; returns the registration events.
fn fail_flow(f: &mut Flows, i: usize, conn: siproam_sim::ConnId, times: usize) {
    f.sim.peer_close(conn);
    for _ in 0..times {
        let r = recv(&mut f.sim, f.proxies[i]);
        assert_eq!(r.message.method(), Some(Method::Register));
        answer(&mut f.sim, f.proxies[i], &r, 503, &[]);
        f.sim.run_for(Duration::from_millis(10));
    }
}

/// RFC 5626 §4.5 while another flow works: the failed flow waits
/// U(50–100 %) of 90 s × 2^n (n its consecutive failures) — 90–180 s, then
/// 180–360 s, 360–720 s.
#[test]
fn with_another_flow_alive_the_back_off_starts_from_90_s() {
    let (mut f, registers) = registered(2);
    fail_flow(&mut f, 0, registers[0].conn.unwrap(), 3);
    let evs = registration_events(&mut f.sim, f.ua);
    let w = waits(&evs, AccountId(1));
    assert_eq!(w.len(), 3, "{evs:?}");
    for (n, wait) in w.iter().enumerate() {
        let top = Duration::from_secs(90 << (n + 1));
        assert!(
            *wait >= top / 2 && *wait <= top,
            "failure {}: {wait:?}",
            n + 1
        );
    }
    // flow 2 untouched
    assert!(f.sim.endpoint(f.ua).account_outbound(AccountId(2)));
}

/// With every flow failed the base is 30 s: 30–60 s, 60–120 s …; the wait
/// never exceeds 1800 s (U(50–100 %) of it, so at least 900 s once
/// capped), the factor is drawn (not always the same), and a success
/// resets the count.
#[test]
fn with_every_flow_failed_the_back_off_starts_from_30_s_up_to_1800_s_and_resets() {
    let (mut f, registers) = registered(1);
    fail_flow(&mut f, 0, registers[0].conn.unwrap(), 9);
    let evs = registration_events(&mut f.sim, f.ua);
    let w = waits(&evs, AccountId(1));
    assert_eq!(w.len(), 9, "{evs:?}");
    for (n, wait) in w.iter().enumerate() {
        let top = Duration::from_secs(30 << (n + 1)).min(Duration::from_secs(1800));
        assert!(
            *wait >= top / 2 && *wait <= top,
            "failure {}: {wait:?}",
            n + 1
        );
    }
    assert!(w[6..].iter().all(|w| *w >= Duration::from_secs(900)));
    let factors: Vec<f64> = w
        .iter()
        .enumerate()
        .map(|(n, w)| {
            w.as_secs_f64()
                / Duration::from_secs(30 << (n + 1))
                    .min(Duration::from_secs(1800))
                    .as_secs_f64()
        })
        .collect();
    assert!(
        factors.iter().any(|x| (x - factors[0]).abs() > 1e-6),
        "{factors:?}"
    );
    // success, then a new failure: back to 30–60 s
    let r = recv(&mut f.sim, f.proxies[0]);
    ok_outbound(&mut f.sim, f.proxies[0], &r);
    f.sim.run_for(Duration::from_millis(10));
    f.sim.take_events(f.ua);
    fail_flow(&mut f, 0, r.conn.unwrap(), 1);
    let evs = registration_events(&mut f.sim, f.ua);
    let w = waits(&evs, AccountId(1));
    assert_eq!(w.len(), 1, "{evs:?}");
    assert!(
        w[0] >= Duration::from_secs(30) && w[0] <= Duration::from_secs(60),
        "{w:?}"
    );
}

/// Both flows fail: each waits from the 30 s base (no flow works).
#[test]
fn when_both_flows_fail_each_backs_off_from_30_s() {
    let (mut f, registers) = registered(2);
    f.sim.peer_close(registers[0].conn.unwrap());
    f.sim.peer_close(registers[1].conn.unwrap());
    for i in 0..2 {
        let r = recv(&mut f.sim, f.proxies[i]);
        answer(&mut f.sim, f.proxies[i], &r, 503, &[]);
    }
    f.sim.run_for(Duration::from_millis(10));
    let evs = registration_events(&mut f.sim, f.ua);
    for a in [AccountId(1), AccountId(2)] {
        let w = waits(&evs, a);
        assert_eq!(w.len(), 1, "{evs:?}");
        assert!(
            w[0] >= Duration::from_secs(30) && w[0] <= Duration::from_secs(60),
            "{w:?}"
        );
    }
}

/// A forced retry (a network event, or the application) registers a flow
/// waiting out its back-off at once, and the back-off's timer is gone: no
/// second REGISTER when it would have fired.
#[test]
fn a_forced_retry_registers_at_once_and_cancels_the_back_off() {
    let (mut f, registers) = registered(2);
    fail_flow(&mut f, 0, registers[0].conn.unwrap(), 1);
    let evs = registration_events(&mut f.sim, f.ua);
    let retry_in = waits(&evs, AccountId(1))[0];
    f.sim.run_for(Duration::from_secs(5));
    let t = f.sim.now();
    let retried = f
        .sim
        .with_endpoint(f.ua, |ep, now| ep.retry_failed_registrations(now));
    assert_eq!(retried, vec![AccountId(1)], "only the failed flow");
    let r = recv(&mut f.sim, f.proxies[0]);
    assert_eq!(r.message.method(), Some(Method::Register));
    assert!(r.at - t < Duration::from_millis(50), "at once");
    // registered: nothing more goes out at the cancelled back-off's time
    ok_outbound(&mut f.sim, f.proxies[0], &r);
    let before = f.sim.log().len();
    f.sim.run_for(retry_in);
    let registers_sent = f.sim.log()[before..]
        .iter()
        .filter(|e| e.first_line.starts_with("REGISTER"))
        .count();
    assert_eq!(
        registers_sent, 0,
        "no REGISTER at the cancelled back-off's time"
    );
    let evs = registration_events(&mut f.sim, f.ua);
    assert_eq!(
        evs.last().unwrap().1.state,
        RegistrationState::Registered,
        "{evs:?}"
    );
    // refresh_registration also cuts a back-off short
    fail_flow(&mut f, 0, r.conn.unwrap(), 1);
    // refresh_registration also cuts a back-off short
    let t = f.sim.now();
    f.sim
        .with_endpoint(f.ua, |ep, now| ep.refresh_registration(now, AccountId(1)))
        .unwrap();
    let r = recv(&mut f.sim, f.proxies[0]);
    assert_eq!(r.message.method(), Some(Method::Register));
    assert!(r.at - t < Duration::from_millis(50), "at once");
}

fn call_states(evs: &[(std::time::Instant, Event)]) -> Vec<(CallState, Option<u16>)> {
    evs.iter()
        .filter_map(|(_, e)| match e {
            Event::Call(CallEvent::State { state, code, .. }) => Some((*state, *code)),
            _ => None,
        })
        .collect()
}

/// 430 to an INVITE over flow 1: flow 1 is reported failed (reason 430,
/// reg-id 1) and closed, it registers again over a new connection, and
/// the INVITE goes again once over flow 2; a 430 there too is the call's
/// failure.
#[test]
fn a_430_fails_the_flow_registers_again_and_retries_once_over_a_live_flow() {
    let (mut f, registers) = registered(2);
    let call = invite(&mut f);
    let inv = recv_request(&mut f.sim, f.proxies[0]);
    answer(&mut f.sim, f.proxies[0], &inv, 430, &[]);
    let inv2 = recv_request(&mut f.sim, f.proxies[1]);
    assert_eq!(inv2.message.method(), Some(Method::Invite));
    assert_eq!(inv2.conn, registers[1].conn);
    assert_eq!(
        inv2.message.header(HeaderName::Route),
        Some(format!("<sip:{PROXY2};lr>").as_str())
    );
    let again = recv_request(&mut f.sim, f.proxies[0]);
    assert_eq!(again.message.method(), Some(Method::Register));
    assert_ne!(again.conn, registers[0].conn, "a new flow");
    assert!(
        !f.sim.conn_open(registers[0].conn.unwrap()),
        "the failed one closed"
    );
    let evs = f.sim.take_events(f.ua);
    let flows: Vec<&FlowEvent> = evs
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Flow(fe) => Some(fe),
            _ => None,
        })
        .collect();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0].state, FlowState::Failed);
    assert_eq!(flows[0].reason, Some(FlowCloseReason::FlowFailed));
    assert_eq!(flows[0].reg_id, Some(1));
    assert_eq!(flows[0].account, AccountId(1));
    // the call is still calling: the 430 did not reach it
    assert!(
        call_states(&evs)
            .iter()
            .all(|(s, _)| *s != CallState::Disconnected),
        "{evs:?}"
    );
    // a second 430: the call fails with it
    answer(&mut f.sim, f.proxies[1], &inv2, 430, &[]);
    f.sim.run_for(Duration::from_millis(100));
    let evs = f.sim.take_events(f.ua);
    assert_eq!(
        call_states(&evs).last(),
        Some(&(CallState::Disconnected, Some(430))),
        "{evs:?}"
    );
    assert!(f.sim.endpoint(f.ua).call_state(call).is_none());
    // flow 2 failed too, and registers again
    let flows: Vec<_> = evs
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Flow(fe) => Some((fe.reg_id, fe.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(flows, vec![(Some(2), Some(FlowCloseReason::FlowFailed))]);
    let r = recv_request(&mut f.sim, f.proxies[1]);
    assert_eq!(r.message.method(), Some(Method::Register));
}

/// A 430 to a flow's REGISTER: registered again at once over a new
/// connection; a second 430 in a row fails the registration (and backs
/// off).
#[test]
fn a_430_to_a_register_retries_once_over_a_new_flow() {
    let (mut f, registers) = registered(1);
    f.sim
        .with_endpoint(f.ua, |ep, now| ep.refresh_registration(now, AccountId(1)))
        .unwrap();
    let r = recv_request(&mut f.sim, f.proxies[0]);
    assert_eq!(r.conn, registers[0].conn);
    answer(&mut f.sim, f.proxies[0], &r, 430, &[]);
    let r2 = recv_request(&mut f.sim, f.proxies[0]);
    assert_eq!(r2.message.method(), Some(Method::Register));
    assert_ne!(r2.conn, r.conn, "a new flow");
    answer(&mut f.sim, f.proxies[0], &r2, 430, &[]);
    f.sim.run_for(Duration::from_millis(10));
    let evs = registration_events(&mut f.sim, f.ua);
    let (_, last) = evs.last().unwrap();
    assert_eq!(last.state, RegistrationState::Failed);
    assert_eq!(last.failure, Some(RegistrationFailure::Status(430)));
    assert!(last.retry_at.is_some());
}

/// A flow that leaves from a chosen local address (`--flow-from`) stays
/// there: network-change detection does not move it to the address the
/// OS would route from while its own exists; it moves once that is gone.
#[test]
fn a_flow_pinned_to_its_local_address_is_not_moved_by_detection() {
    const SECOND: &str = "192.0.2.11";
    let mut sim = Sim::new(std::time::Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA), ip(SECOND)], Config::default());
    let p1 = sim.add_peer("proxy1", &[ip(PROXY1)]);
    let p2 = sim.add_peer("proxy2", &[ip(PROXY2)]);
    for (proxy, reg_id, local, peer) in [(PROXY1, 1, UA, p1), (PROXY2, 2, SECOND, p2)] {
        let mut cfg = flow_config(proxy, reg_id);
        cfg.registrar.local = Some(SocketAddr::new(ip(local), 5060));
        cfg.pin_local = reg_id == 2;
        let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
        sim.with_endpoint(ua, |ep, _| {
            ep.set_account_routes(
                acc,
                siproam_core::AccountRoutes {
                    aor: "sip:alice@example.test".into(),
                    registrar: vec![siproam_core::RegistrarAddress {
                        transport: Transport::Tcp,
                        addr: SocketAddr::new(ip(proxy), 5060),
                    }],
                    sip: siproam_core::Ipv6Use::Enabled,
                    media: siproam_core::Ipv6Use::Enabled,
                    ip_change: None,
                },
                Some(ip(local)),
            )
        })
        .unwrap();
        let r = recv(&mut sim, peer);
        assert_eq!(
            r.from.ip(),
            ip(local),
            "flow {reg_id} leaves from its address"
        );
        ok_outbound(&mut sim, peer, &r);
    }
    sim.run_for(Duration::from_millis(100));
    let mut view = sim.network_view(ua);
    // wildcard listeners (nothing pinned by a listener); the OS routes to
    // both proxies from UA
    for l in &mut view.listeners {
        l.local = SocketAddr::new("0.0.0.0".parse().unwrap(), l.local.port());
    }
    view.sources
        .insert(SocketAddr::new(ip(PROXY1), 5060), ip(UA));
    view.sources
        .insert(SocketAddr::new(ip(PROXY2), 5060), ip(UA));
    assert_eq!(sim.endpoint(ua).detect_change(&view), None, "{view:?}");
    // its address gone: it moves
    view.local.remove(&ip(SECOND));
    let change = sim.endpoint(ua).detect_change(&view).unwrap();
    assert_eq!(change.ip, ip(UA));
    assert_eq!(change.accounts, [AccountId(2)]);
}

/// An out-of-dialog request the application sends (a MESSAGE) from the
/// AoR goes over a live flow too, with that flow's proxy as Route: flow 1
/// while it works, flow 2 once flow 1 has failed.
#[test]
fn an_application_request_goes_over_a_live_flow() {
    let (mut f, registers) = registered(2);
    let message = || {
        siproam_sip::MessageBuilder::request(Method::Message, "sip:bob@example.test")
            .header("From", "<sip:alice@example.test>;tag=m1")
            .header("To", "<sip:bob@example.test>")
            .header("Call-ID", "msg-1@ua")
            .header("CSeq", "1 MESSAGE")
    };
    // the application names some other next hop: the flow wins
    let elsewhere = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip("192.0.2.99"), 5060),
        local: None,
        server_name: None,
    };
    f.sim
        .with_endpoint(f.ua, |ep, now| ep.send_request(now, message(), elsewhere))
        .unwrap();
    let m = recv(&mut f.sim, f.proxies[0]);
    assert_eq!(m.message.method(), Some(Method::Message));
    assert_eq!(m.conn, registers[0].conn);
    assert_eq!(
        m.message.header(HeaderName::Route),
        Some(format!("<sip:{PROXY1};lr>").as_str())
    );
    f.sim.peer_close(registers[0].conn.unwrap());
    f.sim.run_for(Duration::from_millis(1));
    f.sim
        .with_endpoint(f.ua, |ep, now| ep.send_request(now, message(), elsewhere))
        .unwrap();
    let m = recv(&mut f.sim, f.proxies[1]);
    assert_eq!(m.message.method(), Some(Method::Message));
    assert_eq!(m.conn, registers[1].conn);
    assert_eq!(
        m.message.header(HeaderName::Route),
        Some(format!("<sip:{PROXY2};lr>").as_str())
    );
}

/// An application's request over flow 1 answered 430: flow 1 fails and
/// registers again, the request goes once more over flow 2 (a new
/// transaction: the next CSeq, flow 2's proxy as Route), and its answer is
/// what the application sees; a second 430 reaches it.
#[test]
fn an_application_request_answered_430_is_sent_again_once_over_a_live_flow() {
    let (mut f, registers) = registered(2);
    let message = siproam_sip::MessageBuilder::request(Method::Message, "sip:bob@example.test")
        .header("From", "<sip:alice@example.test>;tag=m1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "msg-430@ua")
        .header("CSeq", "7 MESSAGE");
    let target = Target {
        transport: Transport::Tcp,
        remote: SocketAddr::new(ip(PROXY1), 5060),
        local: None,
        server_name: None,
    };
    let id = f
        .sim
        .with_endpoint(f.ua, |ep, now| ep.send_request(now, message, target))
        .unwrap();
    let m = recv(&mut f.sim, f.proxies[0]);
    assert_eq!(m.message.method(), Some(Method::Message));
    answer(&mut f.sim, f.proxies[0], &m, 430, &[]);
    let again = recv_request(&mut f.sim, f.proxies[1]);
    assert_eq!(again.message.method(), Some(Method::Message));
    assert_eq!(again.conn, registers[1].conn);
    assert_eq!(again.message.cseq().seq, 8);
    assert_eq!(again.message.call_id(), "msg-430@ua");
    assert_eq!(
        again
            .message
            .header_values(HeaderName::Route)
            .collect::<Vec<_>>(),
        [format!("<sip:{PROXY2};lr>")]
    );
    assert_eq!(again.message.header_values(HeaderName::Via).count(), 1);
    let evs = f.sim.take_events(f.ua);
    assert!(
        !evs.iter().any(|(_, e)| matches!(e, Event::Response { .. })),
        "the first 430 is not the application's: {evs:?}"
    );
    assert!(evs.iter().any(|(_, e)| matches!(
        e,
        Event::Flow(fe) if fe.reg_id == Some(1) && fe.reason == Some(FlowCloseReason::FlowFailed)
    )));
    let reregister = recv_request(&mut f.sim, f.proxies[0]);
    assert_eq!(reregister.message.method(), Some(Method::Register));
    // the second 430 is the answer
    answer(&mut f.sim, f.proxies[1], &again, 430, &[]);
    f.sim.run_for(Duration::from_millis(100));
    let codes: Vec<u16> = f
        .sim
        .take_events(f.ua)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Response { request, response } if request == id => response.status(),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [430]);
}
