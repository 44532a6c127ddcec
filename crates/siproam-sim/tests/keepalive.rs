//! RFC 5626 §4.4.1 keep-alives on an account's stream flow, in virtual
//! time: the ping interval within 80–100 % of `Flow-Timer` (or of the
//! configured time), the pong watchdog, and a failed flow replaced at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use siproam_core::{Event, FlowCloseReason, FlowEvent, FlowState, Transport};
use siproam_sim::{NodeId, Received, Sim};
use siproam_sip::HeaderName;
use support::{answer, ip, recv, setup, UA};

/// A 200 echoing the Contact, with `extra` headers.
fn ok_with(sim: &mut Sim, reg: NodeId, to: &Received, extra: &[(&str, &str)]) {
    let contact = to.message.header(HeaderName::Contact).unwrap().to_owned();
    let base = contact.split(";expires").next().unwrap().to_owned();
    let contact = format!("{base};expires=3600");
    let mut headers = vec![("Contact", contact.as_str())];
    headers.extend_from_slice(extra);
    answer(sim, reg, to, 200, &headers);
}

/// An account registered over TCP, its 2xx carrying `extra`; keep-alives
/// configured every `keepalive`.
fn registered_tcp(
    extra: &[(&str, &str)],
    keepalive: Option<Duration>,
) -> (Sim, NodeId, NodeId, Received) {
    let (mut sim, ua, reg, mut cfg) = setup(Transport::Tcp);
    cfg.password = None;
    cfg.expires = 3600;
    cfg.keepalive_stream = keepalive;
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r = recv(&mut sim, reg);
    ok_with(&mut sim, reg, &r, extra);
    sim.run_for(Duration::from_millis(100));
    (sim, ua, reg, r)
}

/// When the UA sent each keep-alive ping (from the start).
fn pings(sim: &Sim) -> Vec<Duration> {
    let start = sim.now() - sim.elapsed();
    sim.log()
        .iter()
        .filter(|e| {
            e.from.ip() == ip(UA) && e.transport == Transport::Tcp && e.first_line.is_empty()
        })
        .map(|e| e.at - start)
        .collect()
}

fn flow_events(sim: &mut Sim, ua: NodeId) -> Vec<FlowEvent> {
    sim.take_events(ua)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Flow(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// `Flow-Timer: 30`: pings every 24–30 s (80–100 %), each answered, the
/// flow reported up then kept alive.
#[test]
fn pings_follow_the_flow_timer_within_80_to_100_percent() {
    let (mut sim, ua, _reg, _) =
        registered_tcp(&[("Flow-Timer", "30")], Some(Duration::from_secs(120)));
    let registered_at = sim.elapsed();
    sim.run_for(Duration::from_secs(600));
    let at = pings(&sim);
    assert!(at.len() >= 20, "{at:?}");
    let mut last = registered_at;
    for t in &at {
        let gap = *t - last;
        // the first gap counts from the 2xx, which came a hop before the
        // test's mark
        assert!(
            gap >= Duration::from_millis(23_900) && gap <= Duration::from_secs(30),
            "gap {gap:?} in {at:?}"
        );
        last = *t;
    }
    // not all the same: drawn at random
    let gaps: Vec<_> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().any(|g| *g != gaps[0]), "{gaps:?}");
    let evs = flow_events(&mut sim, ua);
    assert_eq!(evs[0].state, FlowState::Up);
    assert_eq!(evs[0].flow_timer, Some(30));
    assert!(evs[1..].iter().all(|e| e.state == FlowState::KeepaliveOk));
    assert_eq!(evs.len(), 1 + at.len());
}

/// No `Flow-Timer` (or `Flow-Timer: 0`): the configured interval; a huge
/// `Flow-Timer` is held to an hour.
#[test]
fn without_a_flow_timer_the_configured_interval_is_used() {
    for (extra, want) in [
        (&[][..], 120),
        (&[("Flow-Timer", "0")][..], 120),
        (&[("Flow-Timer", "100000")][..], 3600),
    ] {
        let (mut sim, ua, _reg, _) = registered_tcp(extra, Some(Duration::from_secs(120)));
        let acc = siproam_core::AccountId(1);
        assert_eq!(
            sim.endpoint(ua).keepalive_interval(acc),
            Some(Duration::from_secs(want)),
            "{extra:?}"
        );
        sim.run_for(Duration::from_secs(want + 1));
        let at = pings(&sim);
        assert_eq!(at.len(), 1, "{extra:?}: {at:?}");
        assert!(at[0] >= Duration::from_secs(want) * 8 / 10, "{at:?}");
    }
    // and with keep-alives off and no Flow-Timer, none
    let (mut sim, ua, _reg, _) = registered_tcp(&[], None);
    sim.run_for(Duration::from_secs(600));
    assert!(pings(&sim).is_empty());
    assert!(flow_events(&mut sim, ua).is_empty());
}

/// The pong never comes: 10 s after the ping the flow has failed — reported
/// with the reason, its connection closed — and the account registers
/// again at once over a new connection.
#[test]
fn a_missing_pong_fails_the_flow_and_registers_again_over_a_new_one() {
    let (mut sim, ua, reg, first) = registered_tcp(&[("Flow-Timer", "30")], None);
    let first_conn = first.conn.unwrap();
    sim.set_pong(reg, false);
    flow_events(&mut sim, ua);
    let again = recv(&mut sim, reg);
    let start = sim.now() - sim.elapsed();
    let ping = pings(&sim)[0];
    assert_eq!(again.message.method(), Some(siproam_sip::Method::Register));
    assert_ne!(again.conn, Some(first_conn), "a new connection");
    assert!(!sim.conn_open(first_conn), "the dead one closed");
    // sent at the pong timeout (one hop later here)
    let sent = again.at - start;
    assert!(
        sent >= ping + Duration::from_secs(10) && sent <= ping + Duration::from_millis(10_050),
        "ping {ping:?}, REGISTER {sent:?}"
    );
    let evs = flow_events(&mut sim, ua);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].state, FlowState::Failed);
    assert_eq!(evs[0].reason, Some(FlowCloseReason::KeepAliveTimeout));
    // what the flow was, though it is gone
    assert_eq!(evs[0].local, Some(first.from));
    assert_eq!(evs[0].remote, first.to);
    assert_eq!(evs[0].transport, Transport::Tcp);
    assert_eq!(evs[0].flow_timer, Some(30));
    // the new flow is kept alive in turn once registered
    sim.set_pong(reg, true);
    ok_with(&mut sim, reg, &again, &[("Flow-Timer", "30")]);
    sim.run_for(Duration::from_secs(31));
    let evs = flow_events(&mut sim, ua);
    assert_eq!(
        evs.iter().map(|e| e.state).collect::<Vec<_>>(),
        [FlowState::Up, FlowState::KeepaliveOk]
    );
}

/// The registrar closes the connection: the flow failure is reported and
/// the account registers again at once.
#[test]
fn a_closed_flow_is_reported_failed_and_replaced() {
    let (mut sim, ua, reg, first) = registered_tcp(&[("Flow-Timer", "30")], None);
    flow_events(&mut sim, ua);
    sim.peer_close(first.conn.unwrap());
    let again = recv(&mut sim, reg);
    assert_eq!(again.message.method(), Some(siproam_sip::Method::Register));
    let evs = flow_events(&mut sim, ua);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].state, FlowState::Failed);
    assert_eq!(evs[0].reason, Some(FlowCloseReason::PeerClosed));
    assert_eq!(evs[0].local, Some(first.from));
    assert_eq!(evs[0].remote, first.to);
}

/// A UDP account gets no CRLF keep-alives (UDP flows are kept by STUN).
#[test]
fn udp_flows_get_no_crlf_pings() {
    let (mut sim, ua, reg, mut cfg) = setup(Transport::Udp);
    cfg.password = None;
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r = recv(&mut sim, reg);
    ok_with(&mut sim, reg, &r, &[("Flow-Timer", "30")]);
    sim.run_for(Duration::from_secs(120));
    assert!(sim.log().iter().all(|e| !e.first_line.is_empty()));
    assert!(sim.log().iter().any(|e| e.first_line == "STUN"));
    assert!(flow_events(&mut sim, ua)
        .iter()
        .all(|e| e.state != FlowState::Failed));
}

/// RFC 5626 §4.4.2: STUN Binding requests keep an account's UDP flow.
mod stun_keepalives {
    use std::net::SocketAddr;

    use bytes::Bytes;
    use siproam_core::stun;
    use siproam_core::AccountId;

    use super::*;
    use support::REG;

    /// An account registered over UDP asking for outbound; the registrar's
    /// 2xx carries `extra`.
    fn registered_udp(
        extra: &[(&str, &str)],
        tweak: impl FnOnce(&mut siproam_core::AccountConfig),
    ) -> (Sim, NodeId, NodeId, Received) {
        let (mut sim, ua, reg, mut cfg) = setup(Transport::Udp);
        cfg.password = None;
        cfg.expires = 3600;
        cfg.outbound = true;
        cfg.instance_id = Some("urn:uuid:00000000-0000-4000-8000-000000000001".to_owned());
        tweak(&mut cfg);
        sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
        let r = recv(&mut sim, reg);
        ok_with(&mut sim, reg, &r, extra);
        sim.run_for(Duration::from_millis(100));
        (sim, ua, reg, r)
    }

    /// When the UA sent each STUN datagram (from the start).
    fn stun_sends(sim: &Sim) -> Vec<Duration> {
        let start = sim.now() - sim.elapsed();
        sim.log()
            .iter()
            .filter(|e| e.from.ip() == ip(UA) && e.first_line == "STUN")
            .map(|e| e.at - start)
            .collect()
    }

    fn reg_addr() -> SocketAddr {
        SocketAddr::new(ip(REG), 5060)
    }

    fn ua_addr() -> SocketAddr {
        SocketAddr::new(ip(UA), 5060)
    }

    const OUTBOUND: (&str, &str) = ("Require", "outbound");

    /// `Flow-Timer: 30` on UDP: a Binding request every 24–30 s, each with
    /// a fresh transaction id, each answered: the flow is up, then kept
    /// alive, and the mapped address is learnt.
    #[test]
    fn binding_requests_follow_the_flow_timer_within_80_to_100_percent() {
        let (mut sim, ua, reg, _) = registered_udp(&[OUTBOUND, ("Flow-Timer", "30")], |_| {});
        let registered_at = sim.elapsed();
        sim.run_for(Duration::from_secs(600));
        let at = stun_sends(&sim);
        assert!(at.len() >= 20, "{at:?}");
        let mut last = registered_at;
        for t in &at {
            let gap = *t - last;
            assert!(
                gap >= Duration::from_millis(23_900) && gap <= Duration::from_secs(30),
                "gap {gap:?} in {at:?}"
            );
            last = *t;
        }
        let gaps: Vec<_> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().any(|g| *g != gaps[0]), "{gaps:?}");
        // every one a Binding request with its own transaction id
        let seen = sim.take_stun(reg);
        assert_eq!(seen.len(), at.len());
        assert!(seen.iter().all(|d| d.request && d.from == ua_addr()));
        let mut ids: Vec<u128> = seen.iter().map(|d| d.transaction).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), seen.len(), "transaction ids repeat");
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs[0].state, FlowState::Up);
        assert_eq!(evs[0].transport, Transport::Udp);
        assert_eq!(evs[0].flow_timer, Some(30));
        assert!(evs[1..].iter().all(|e| e.state == FlowState::KeepaliveOk));
        assert_eq!(evs.len(), 1 + at.len());
        assert_eq!(
            sim.endpoint(ua).keepalive_mapped(AccountId(1)),
            Some(ua_addr())
        );
    }

    /// Without a `Flow-Timer` the account's `keepalive_datagram` (30 s)
    /// once outbound is in force; with neither outbound in force nor a
    /// `Flow-Timer` (a plain registrar, which answers no STUN) none.
    #[test]
    fn without_a_flow_timer_the_datagram_interval_is_used_once_outbound_is_in_force() {
        let (mut sim, ua, _reg, _) = registered_udp(&[OUTBOUND], |_| {});
        assert_eq!(
            sim.endpoint(ua).keepalive_interval(AccountId(1)),
            Some(Duration::from_secs(30))
        );
        sim.run_for(Duration::from_secs(31));
        let at = stun_sends(&sim);
        assert_eq!(at.len(), 1, "{at:?}");
        assert!(at[0] >= Duration::from_secs(24), "{at:?}");

        let (mut sim, ua, _reg, _) = registered_udp(&[OUTBOUND], |c| {
            c.keepalive_datagram = Some(Duration::from_secs(10));
        });
        assert_eq!(
            sim.endpoint(ua).keepalive_interval(AccountId(1)),
            Some(Duration::from_secs(10))
        );

        for extra in [&[][..], &[("Flow-Timer", "0")][..]] {
            let (mut sim, ua, _reg, _) = registered_udp(extra, |_| {});
            sim.run_for(Duration::from_secs(600));
            assert!(stun_sends(&sim).is_empty(), "{extra:?}");
            assert!(flow_events(&mut sim, ua).is_empty());
        }
        let (mut sim, ua, _reg, _) = registered_udp(&[OUTBOUND], |c| c.keepalive_datagram = None);
        sim.run_for(Duration::from_secs(600));
        assert!(stun_sends(&sim).is_empty());
        assert!(flow_events(&mut sim, ua).is_empty());
    }

    /// The registrar never answers: the request is sent again 0.5, 1.5,
    /// 3.5 and 7.5 s after (RFC 5389 §7.2.1, within the 10 s pong
    /// timeout) with the same transaction id; at 10 s the flow has failed
    /// (`StunTimeout`) and a REGISTER goes out at once.
    #[test]
    fn an_unanswered_binding_request_fails_the_flow_and_registers_again() {
        let (mut sim, ua, reg, _) = registered_udp(&[OUTBOUND, ("Flow-Timer", "30")], |_| {});
        sim.set_stun(reg, false);
        flow_events(&mut sim, ua);
        let again = recv(&mut sim, reg);
        assert_eq!(again.message.method(), Some(siproam_sip::Method::Register));
        let start = sim.now() - sim.elapsed();
        let at = stun_sends(&sim);
        let first = at[0];
        let offsets: Vec<Duration> = at.iter().map(|t| *t - first).collect();
        assert_eq!(
            offsets,
            [0, 500, 1500, 3500, 7500].map(Duration::from_millis),
            "{at:?}"
        );
        let seen = sim.take_stun(reg);
        assert!(seen.iter().all(|d| d.transaction == seen[0].transaction));
        let sent = again.at - start;
        assert!(
            sent >= first + Duration::from_secs(10)
                && sent <= first + Duration::from_millis(10_050),
            "first request {first:?}, REGISTER {sent:?}"
        );
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].state, FlowState::Failed);
        assert_eq!(evs[0].reason, Some(FlowCloseReason::StunTimeout));
        assert_eq!(evs[0].transport, Transport::Udp);
        assert_eq!(evs[0].local, Some(ua_addr()));
        assert_eq!(evs[0].remote, reg_addr());
        // the new flow is kept alive in turn once registered
        sim.set_stun(reg, true);
        ok_with(&mut sim, reg, &again, &[OUTBOUND, ("Flow-Timer", "30")]);
        sim.run_for(Duration::from_secs(31));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::Up, FlowState::KeepaliveOk]
        );
    }

    /// An answer with another mapped address than the first: the NAT
    /// rebound — the flow has failed (`StunChanged`) and the account
    /// registers again at once; the new flow learns the new address.
    #[test]
    fn a_changed_mapped_address_fails_the_flow_and_registers_again() {
        let (mut sim, ua, reg, _) = registered_udp(&[OUTBOUND, ("Flow-Timer", "30")], |_| {});
        sim.run_for(Duration::from_secs(31));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::Up, FlowState::KeepaliveOk]
        );
        let public: SocketAddr = "198.51.100.7:61000".parse().unwrap();
        sim.set_stun_mapped(reg, Some(public));
        let again = recv(&mut sim, reg);
        assert_eq!(again.message.method(), Some(siproam_sip::Method::Register));
        let start = sim.now() - sim.elapsed();
        let answered = *stun_sends(&sim).last().unwrap() + Duration::from_millis(20);
        assert!(
            again.at - start <= answered + Duration::from_millis(10),
            "REGISTER at {:?}, answer at {answered:?}",
            again.at - start
        );
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].state, FlowState::Failed);
        assert_eq!(evs[0].reason, Some(FlowCloseReason::StunChanged));
        // the registrar sees the REGISTER from the new public address
        // (received/rport): the Contact is rewritten to it and bound
        let contact = again.message.header(HeaderName::Contact).unwrap();
        let mut resp = siproam_sip::MessageBuilder::response_to(&again.message, 200, "OK", None)
            .header("Contact", contact)
            .header("Require", "outbound")
            .header("Flow-Timer", "30")
            .build()
            .unwrap();
        resp.set_top_via_param("received", Some(Some("198.51.100.7")))
            .unwrap();
        resp.set_top_via_param("rport", Some(Some("61000")))
            .unwrap();
        sim.peer_reply(reg, &again, resp.to_bytes());
        let rewritten = recv(&mut sim, reg);
        let contact = rewritten.message.header(HeaderName::Contact).unwrap();
        assert!(contact.contains("@198.51.100.7:61000"), "{contact}");
        ok_with(&mut sim, reg, &rewritten, &[OUTBOUND, ("Flow-Timer", "30")]);
        sim.run_for(Duration::from_secs(31));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::Up, FlowState::KeepaliveOk]
        );
        assert_eq!(
            sim.endpoint(ua).keepalive_mapped(AccountId(1)),
            Some(public)
        );
        assert_eq!(
            sim.endpoint(ua).account_contact(AccountId(1)).as_deref(),
            Some("sip:alice@198.51.100.7:61000")
        );
    }

    /// Refreshes over the same flow keep it and its mapped address: ten
    /// refreshes (every 40 s) with keep-alives every 24–30 s between
    /// them, one `Up`, no failure; a rebinding seen after a refresh is
    /// still a change.
    #[test]
    fn refreshes_keep_the_flow_and_its_mapped_address() {
        let (mut sim, ua, reg, _) = registered_udp(&[OUTBOUND, ("Flow-Timer", "30")], |c| {
            c.expires = 50;
        });
        for _ in 0..10 {
            let r = recv(&mut sim, reg);
            assert_eq!(r.message.method(), Some(siproam_sip::Method::Register));
            let contact = r.message.header(HeaderName::Contact).unwrap();
            let base = contact.split(";expires").next().unwrap().to_owned();
            let contact = format!("{base};expires=50");
            answer(
                &mut sim,
                reg,
                &r,
                200,
                &[("Contact", &contact), OUTBOUND, ("Flow-Timer", "30")],
            );
        }
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs[0].state, FlowState::Up);
        assert!(evs.len() > 10, "{evs:?}");
        assert!(
            evs[1..].iter().all(|e| e.state == FlowState::KeepaliveOk),
            "{evs:?}"
        );
        assert_eq!(
            sim.endpoint(ua).keepalive_mapped(AccountId(1)),
            Some(ua_addr())
        );
        // the keep-alive after the last refresh (24–30 s after it; the
        // next refresh is due 40 s after it, before the one after) …
        sim.run_for(Duration::from_secs(31));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::KeepaliveOk]
        );
        // … then the NAT rebinds; a refresh comes first — it must not make
        // the flow forget what it was mapped to
        sim.set_stun_mapped(reg, Some("198.51.100.7:61000".parse().unwrap()));
        let r = recv(&mut sim, reg);
        let contact = r.message.header(HeaderName::Contact).unwrap();
        let base = contact.split(";expires").next().unwrap().to_owned();
        let contact = format!("{base};expires=50");
        answer(
            &mut sim,
            reg,
            &r,
            200,
            &[("Contact", &contact), OUTBOUND, ("Flow-Timer", "30")],
        );
        let again = recv(&mut sim, reg);
        assert_eq!(again.message.method(), Some(siproam_sip::Method::Register));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| (e.state, e.reason)).collect::<Vec<_>>(),
            [(FlowState::Failed, Some(FlowCloseReason::StunChanged))]
        );
    }

    /// Garbage, truncated and oversized messages, answers with another
    /// transaction id, error responses, a success without a mapped address
    /// and an answer from another address are all dropped (and counted);
    /// the right answer still keeps the flow. A flood of answers to no
    /// request of ours changes nothing and sends nothing.
    #[test]
    fn garbage_and_wrong_answers_are_dropped_and_the_right_one_counts() {
        let (mut sim, ua, reg, _) = registered_udp(&[OUTBOUND, ("Flow-Timer", "30")], |_| {});
        let other = sim.add_peer("stranger", &[ip("192.0.2.99")]);
        sim.set_stun(reg, false);
        flow_events(&mut sim, ua);
        sim.run_for(Duration::from_secs(30));
        let req = sim.take_stun(reg)[0].clone();
        let tid = req.transaction;
        let good = stun::binding_success(tid, ua_addr());
        let mut truncated = good.to_vec();
        truncated.truncate(24);
        let mut error = good.to_vec();
        error[0] = 0x01;
        error[1] = 0x11; // Binding error response
        let mut no_mapped = stun::binding_request(tid).to_vec();
        no_mapped[1] = 0x01; // success, no attributes
        no_mapped[0] = 0x01;
        let mut huge = good.to_vec();
        huge.resize(stun::MAX_STUN_MESSAGE + 8, 0);
        let len = (huge.len() - 20) as u16;
        huge[2..4].copy_from_slice(&len.to_be_bytes());
        let mut garbage = vec![0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        garbage.extend_from_slice(&[0xff; 40]);
        // the right id, a broken attribute (longer than the message)
        let mut broken = good.to_vec();
        broken[22] = 0x00;
        broken[23] = 0xf0;
        let bad: Vec<Vec<u8>> = vec![
            garbage,
            broken,
            truncated,
            error,
            no_mapped,
            huge,
            stun::binding_success(tid ^ 1, ua_addr()).to_vec(),
        ];
        let n = bad.len() as u64;
        for b in bad {
            sim.peer_send(reg, reg_addr(), ua_addr(), Transport::Udp, Bytes::from(b));
        }
        // the right answer, but from someone else
        sim.peer_send(
            other,
            SocketAddr::new(ip("192.0.2.99"), 5060),
            ua_addr(),
            Transport::Udp,
            good.clone(),
        );
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.endpoint(ua).stun_counts().1, n + 1);
        assert!(flow_events(&mut sim, ua).is_empty());
        // now the right one, from the registrar
        sim.peer_send(reg, reg_addr(), ua_addr(), Transport::Udp, good.clone());
        sim.run_for(Duration::from_millis(100));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].state, FlowState::KeepaliveOk);
        // it again (answered already), and a flood of strangers' answers
        let log_before = sim.log().len();
        let flows_before = sim.endpoint(ua).stats().flows;
        sim.peer_send(reg, reg_addr(), ua_addr(), Transport::Udp, good);
        for i in 0..1000u128 {
            let b = stun::binding_success(i << 40, ua_addr());
            sim.peer_send(reg, reg_addr(), ua_addr(), Transport::Udp, b);
        }
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.endpoint(ua).stun_counts().1, n + 1 + 1001);
        assert!(flow_events(&mut sim, ua).is_empty());
        assert_eq!(sim.endpoint(ua).stats().flows, flows_before);
        // nothing sent back (the log holds only what the test sent)
        assert!(sim.log()[log_before..]
            .iter()
            .all(|e| e.from.ip() != ip(UA)));
        // and the flow lives on: the next request is answered
        sim.set_stun(reg, true);
        sim.run_for(Duration::from_secs(31));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::KeepaliveOk]
        );
    }

    /// Any endpoint answers a Binding request on its SIP UDP port with
    /// the source's XOR-MAPPED-ADDRESS (RFC 5626 §5.4), and a flood of
    /// them from one source is held to its admission budget.
    #[test]
    fn a_binding_request_is_answered_with_the_source_address() {
        let (mut sim, ua, reg, _) = setup(Transport::Udp);
        let from = SocketAddr::new(ip(REG), 41000);
        sim.peer_send(
            reg,
            from,
            ua_addr(),
            Transport::Udp,
            stun::binding_request(77),
        );
        sim.run_for(Duration::from_millis(100));
        let got = sim.take_stun(reg);
        assert_eq!(got.len(), 1);
        assert!(!got[0].request);
        assert_eq!(got[0].from, ua_addr());
        assert_eq!(got[0].to, from);
        assert_eq!(
            stun::binding_success_parts(&got[0].payload),
            Some((77, from))
        );
        assert_eq!(sim.endpoint(ua).stun_counts(), (1, 0));
        // no SIP request came of it
        assert!(sim.take_events(ua).is_empty());
        // a burst of 2000 from one source: at most its budget answered
        for i in 0..2000u128 {
            sim.peer_send(
                reg,
                from,
                ua_addr(),
                Transport::Udp,
                stun::binding_request(i),
            );
        }
        sim.run_for(Duration::from_millis(100));
        let answered = sim.take_stun(reg).len();
        assert!(answered > 0 && answered <= 400, "{answered}");
    }
}

/// A flow the account stops using on purpose — unregistered, closed for a
/// network change, replaced by a newer one — is reported `closed` with
/// its reason, not `failed` (or not at all).
mod closed_flows {
    use std::net::SocketAddr;

    use siproam_core::{AccountId, AccountRoutes, IpChangeParams, Ipv6Use, RegistrarAddress};

    use super::*;
    use support::REG;

    const NEW: &str = "192.0.2.11";

    fn acc() -> AccountId {
        AccountId(1)
    }

    /// Registered over TCP with `Flow-Timer: 30`; the `up` event taken.
    fn registered() -> (Sim, NodeId, NodeId, Received, FlowEvent) {
        let (mut sim, ua, reg, first) = registered_tcp(&[("Flow-Timer", "30")], None);
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].state, FlowState::Up);
        let up = evs[0].clone();
        (sim, ua, reg, first, up)
    }

    #[test]
    fn unregistering_reports_the_flow_closed() {
        let (mut sim, ua, reg, first, up) = registered();
        sim.with_endpoint(ua, |ep, now| ep.unregister(now, acc()))
            .unwrap();
        let r = recv(&mut sim, reg);
        assert_eq!(r.conn, first.conn, "over the same flow");
        answer(&mut sim, reg, &r, 200, &[]);
        sim.run_for(Duration::from_secs(120));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].state, FlowState::Closed);
        assert_eq!(evs[0].reason, Some(FlowCloseReason::Unregistered));
        assert_eq!(evs[0].flow, up.flow);
        assert_eq!(evs[0].local, Some(first.from));
        assert!(pings(&sim).is_empty(), "no keep-alives after");
    }

    /// A network change closes the registration flow itself: `closed`
    /// (`Local`), then the new flow from the new address is `up`.
    #[test]
    fn a_flow_closed_for_a_network_change_is_reported_closed() {
        let (mut sim, ua, reg, first, up) = registered();
        sim.with_endpoint(ua, |ep, _| {
            ep.set_account_routes(
                acc(),
                AccountRoutes {
                    aor: "sip:alice@example.test".into(),
                    registrar: vec![RegistrarAddress {
                        transport: Transport::Tcp,
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
        sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
        let mut params = IpChangeParams::new(ip(NEW));
        params.shutdown_transports = false;
        sim.ip_change(ua, params);
        let r = recv(&mut sim, reg);
        assert_eq!(r.from.ip(), ip(NEW));
        assert!(!sim.conn_open(first.conn.unwrap()));
        ok_with(&mut sim, reg, &r, &[("Flow-Timer", "30")]);
        sim.run_for(Duration::from_millis(100));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::Closed, FlowState::Up],
            "{evs:?}"
        );
        assert_eq!(evs[0].reason, Some(FlowCloseReason::Local));
        assert_eq!(evs[0].flow, up.flow);
        assert_eq!(evs[0].local, Some(first.from));
        assert_ne!(evs[1].flow, up.flow);
        assert_eq!(evs[1].local.map(|a| a.ip()), Some(ip(NEW)));
    }

    /// The account moves to a new flow while the old one stays open: once
    /// the new one is registered the old one is reported `closed`
    /// (`Replaced`) and gets no more keep-alives.
    #[test]
    fn a_flow_replaced_by_a_newer_one_is_reported_closed() {
        let (mut sim, ua, reg, first, up) = registered();
        sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
        sim.with_endpoint(ua, |ep, now| {
            ep.move_account_with(now, acc(), SocketAddr::new(ip(NEW), 0), false)
        })
        .unwrap();
        let r = recv(&mut sim, reg);
        assert_ne!(r.conn, first.conn, "a new flow");
        ok_with(&mut sim, reg, &r, &[("Flow-Timer", "30")]);
        sim.run_for(Duration::from_millis(100));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::Closed, FlowState::Up],
            "{evs:?}"
        );
        assert_eq!(evs[0].reason, Some(FlowCloseReason::Replaced));
        assert_eq!(evs[0].flow, up.flow);
        assert_eq!(evs[0].local, Some(first.from));
        assert_ne!(evs[1].flow, up.flow);
        // keep-alives go on over the new flow only
        let log_from = sim.log().len();
        sim.run_for(Duration::from_secs(61));
        let old_pings = sim.log()[log_from..]
            .iter()
            .filter(|e| e.first_line.is_empty() && e.from == first.from)
            .count();
        assert_eq!(old_pings, 0);
        assert!(flow_events(&mut sim, ua)
            .iter()
            .all(|e| e.state == FlowState::KeepaliveOk && e.flow == evs[1].flow));
    }

    /// Moved, but the new flow's 2xx has not come when the old flow's
    /// keep-alive falls due: the old one is reported `closed` then,
    /// without a ping.
    #[test]
    fn a_flow_left_before_its_next_ping_is_reported_closed_then() {
        let (mut sim, ua, reg, first, up) = registered();
        sim.set_addresses(ua, &[ip(UA), ip(NEW)]);
        sim.with_endpoint(ua, |ep, now| {
            ep.move_account_with(now, acc(), SocketAddr::new(ip(NEW), 0), false)
        })
        .unwrap();
        let _unanswered = recv(&mut sim, reg);
        sim.run_for(Duration::from_secs(31));
        assert!(pings(&sim).is_empty(), "{:?}", pings(&sim));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].state, FlowState::Closed);
        assert_eq!(evs[0].reason, Some(FlowCloseReason::Replaced));
        assert_eq!(evs[0].flow, up.flow);
        assert_eq!(evs[0].local, Some(first.from));
    }
}

/// RFC 5626 §4.4.1 obliges only a registrar that takes part in outbound to
/// answer CRLF pings: without outbound in force and without a
/// `Flow-Timer` the pings still go (they keep a NAT binding; an RFC 3261
/// server ignores them), but a missing pong does not fail the flow.
mod watchdog {
    use super::*;

    #[test]
    fn without_outbound_or_a_flow_timer_a_missing_pong_does_not_fail_the_flow() {
        let (mut sim, ua, reg, first) = registered_tcp(&[], Some(Duration::from_secs(30)));
        sim.set_pong(reg, false);
        sim.run_for(Duration::from_secs(600));
        // pinged all along, at the configured interval, over the one flow
        let at = pings(&sim);
        assert!(at.len() >= 19, "{at:?}");
        assert!(sim.conn_open(first.conn.unwrap()));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0].state, FlowState::Up);
        // no REGISTER beyond the first (the binding lasts an hour)
        assert!(sim.peer_recv(reg).is_none());
        // a pong that does come is still reported
        sim.set_pong(reg, true);
        sim.run_for(Duration::from_secs(31));
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::KeepaliveOk]
        );
    }

    /// Outbound in force (the 2xx's `Require: outbound`) with no
    /// `Flow-Timer`: the configured interval, and the watchdog.
    #[test]
    fn with_outbound_in_force_a_missing_pong_fails_the_flow() {
        let (mut sim, ua, reg, mut cfg) = setup(Transport::Tcp);
        cfg.password = None;
        cfg.expires = 3600;
        cfg.keepalive_stream = Some(Duration::from_secs(30));
        cfg.outbound = true;
        cfg.instance_id = Some("urn:uuid:00000000-0000-4000-8000-000000000001".to_owned());
        sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
        let r = recv(&mut sim, reg);
        ok_with(&mut sim, reg, &r, &[("Require", "outbound")]);
        sim.run_for(Duration::from_millis(100));
        sim.set_pong(reg, false);
        let again = recv(&mut sim, reg);
        assert_eq!(again.message.method(), Some(siproam_sip::Method::Register));
        assert_ne!(again.conn, r.conn);
        let evs = flow_events(&mut sim, ua);
        assert_eq!(
            evs.iter().map(|e| e.state).collect::<Vec<_>>(),
            [FlowState::Up, FlowState::Failed]
        );
        assert_eq!(evs[1].reason, Some(FlowCloseReason::KeepAliveTimeout));
    }
}

/// Issue 12, bad input: a registrar flooding stray CRLFs (pongs nobody
/// asked for) at the registration flow: each costs the core a look-up,
/// only the pong to an actual ping counts (one `keepalive_ok` per ping),
/// and the flow and the binding stay as they are.
#[test]
fn a_flood_of_stray_pongs_changes_nothing() {
    let (mut sim, ua, reg, first) = registered_tcp(&[("Flow-Timer", "30")], None);
    flow_events(&mut sim, ua);
    for round in 0..10 {
        for _ in 0..1_000 {
            sim.peer_reply(reg, &first, bytes::Bytes::from_static(b"\r\n"));
        }
        sim.run_for(Duration::from_secs(30));
        assert!(sim.conn_open(first.conn.unwrap()), "round {round}");
    }
    let evs = flow_events(&mut sim, ua);
    let oks = evs
        .iter()
        .filter(|e| e.state == FlowState::KeepaliveOk)
        .count();
    assert_eq!(oks, pings(&sim).len(), "{evs:?}");
    assert!(evs.iter().all(|e| e.state == FlowState::KeepaliveOk));
    assert!(sim.peer_recv(reg).is_none(), "no REGISTER again");
}
