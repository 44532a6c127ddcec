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
    assert!(flow_events(&mut sim, ua).is_empty());
}
