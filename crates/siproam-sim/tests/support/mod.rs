//! Shared setup for the simulator's tests: a user agent and a scripted
//! registrar, and the registrar's answers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use siproam_core::{AccountConfig, Config, Event, RegistrationEvent, Target, Transport};
use siproam_sim::{NodeId, Received, Sim};
use siproam_sip::{HeaderName, MessageBuilder};

/// The user agent's address.
pub const UA: &str = "192.0.2.10";
/// The registrar's address.
pub const REG: &str = "192.0.2.20";

/// An address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A user agent (on `UA`), a scripted registrar (on `REG`) and an account
/// for it over `transport`.
pub fn setup(transport: Transport) -> (Sim, NodeId, NodeId, AccountConfig) {
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA)], Config::default());
    let reg = sim.add_peer("registrar", &[ip(REG)]);
    let target = Target {
        transport,
        remote: SocketAddr::new(ip(REG), 5060),
        local: None,
        server_name: None,
    };
    let mut cfg = AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    cfg.password = Some("alicepw".to_owned());
    cfg.expires = 300;
    (sim, ua, reg, cfg)
}

/// The registration events so far, with their time since the start.
pub fn registrations(sim: &mut Sim, ua: NodeId) -> Vec<(Duration, RegistrationEvent)> {
    let start = sim.now() - sim.elapsed();
    sim.take_events(ua)
        .into_iter()
        .filter_map(|(at, e)| match e {
            Event::Registration(r) => Some((at - start, r)),
            _ => None,
        })
        .collect()
}

/// The states of registration events.
pub fn states(evs: &[(Duration, RegistrationEvent)]) -> Vec<siproam_core::RegistrationState> {
    evs.iter().map(|(_, e)| e.state).collect()
}

/// Answers `to` with `code` and extra headers.
pub fn answer(sim: &mut Sim, reg: NodeId, to: &Received, code: u16, extra: &[(&str, &str)]) {
    let mut b = MessageBuilder::response_to(&to.message, code, "X", Some("reg1"));
    for (n, v) in extra {
        b = b.header(n, v);
    }
    sim.peer_reply(reg, to, b.build().unwrap().to_bytes());
}

/// A 200 that echoes the request's Contact with the granted expiry.
pub fn ok(sim: &mut Sim, reg: NodeId, to: &Received, granted: u32) {
    let contact = to.message.header(HeaderName::Contact).unwrap().to_owned();
    let base = contact.split(";expires").next().unwrap().to_owned();
    answer(
        sim,
        reg,
        to,
        200,
        &[("Contact", &format!("{base};expires={granted}"))],
    );
}

/// The next message the peer receives (within an hour of virtual time).
pub fn recv(sim: &mut Sim, reg: NodeId) -> Received {
    sim.run_until_peer_receives(reg, Duration::from_secs(3600))
        .expect("a message")
}

/// (first word of the first line, or the status code; sender's address)
/// of what was sent since log entry `from`.
pub fn sent_since(sim: &Sim, from: usize) -> Vec<(String, IpAddr)> {
    sim.log()
        .iter()
        .skip(from)
        .map(|e| {
            let mut words = e.first_line.split(' ');
            let first = words.next().unwrap_or_default();
            let what = if first == "SIP/2.0" {
                words.next().unwrap_or_default()
            } else {
                first
            };
            (what.to_owned(), e.from.ip())
        })
        .collect()
}
