//! Floods in the simulator (issue 10, finding 1): a registrar flooded with
//! unauthenticated requests keeps serving legitimate clients, holds
//! bounded state during the flood and gives it back afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// the simulation starts its virtual clock at an arbitrary real instant
#![allow(clippy::disallowed_methods)]

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::{
    AccountConfig, AdmissionConfig, Config, Event, RegistrationState, Target, Transport,
};
use siproam_edge::{Registrar, RegistrarConfig};
use siproam_sim::{NodeId, Sim};

mod common;
use common::{ip, registrar_node, REG};

fn registrar(sim: &mut Sim, admission: AdmissionConfig) -> (NodeId, Rc<RefCell<Registrar>>) {
    let config = RegistrarConfig {
        domain: Some("example.test".into()),
        users: RegistrarConfig::parse_users("alice:alicepw\n").unwrap(),
        ..RegistrarConfig::default()
    };
    registrar_node(
        sim,
        config,
        Config {
            seed: 99,
            admission,
            ..Config::default()
        },
    )
}

fn request(method: &str, from: SocketAddr, n: u64) -> Bytes {
    let host = from.ip();
    let port = from.port();
    Bytes::from(format!(
        "{method} sip:example.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKflood{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:mallory@example.test>;tag=f{n}\r\n\
         To: <sip:alice@example.test>\r\n\
         Call-ID: flood{n}@{host}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:mallory@{host}:{port}>\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

fn alice(sim: &mut Sim) -> NodeId {
    let ua = sim.add_endpoint("alice", &[ip("192.0.2.10")], Config::default());
    let target = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(REG), 5060),
        local: None,
        server_name: None,
    };
    let mut cfg = AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    cfg.password = Some("alicepw".into());
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    ua
}

/// How many messages Alice has sent so far.
fn alice_requests(sim: &Sim) -> usize {
    sim.log()
        .iter()
        .filter(|e| e.from.ip() == ip("192.0.2.10"))
        .count()
}

fn registered(sim: &mut Sim, ua: NodeId) -> bool {
    sim.take_events(ua).into_iter().any(
        |(_, e)| matches!(e, Event::Registration(r) if r.state == RegistrationState::Registered),
    )
}

/// 100,000 unauthenticated REGISTERs in 10 s from one source: the
/// registrar answers only what the source's budget allows, holds a
/// bounded number of transactions, registers Alice (another source) in
/// the middle of the flood at her first try, and holds nothing of the
/// flood a minute later. Before admission control it answered every one
/// (100,000 challenges) and held 100,000 transactions for 32 s each.
#[test]
fn a_register_flood_from_one_source_is_shed_and_forgotten() {
    let mut sim = Sim::new(Instant::now(), 5);
    let (reg, _registrar) = registrar(&mut sim, AdmissionConfig::default());
    let attacker = sim.add_peer("mallory", &[ip("192.0.2.66")]);
    let from = SocketAddr::new(ip("192.0.2.66"), 5060);
    let to = SocketAddr::new(ip(REG), 5060);
    let mut peak = 0;
    let mut ua = None;
    for n in 0..100_000u64 {
        sim.peer_send(
            attacker,
            from,
            to,
            Transport::Udp,
            request("REGISTER", from, n),
        );
        sim.run_for(Duration::from_micros(100));
        if n == 50_000 {
            ua = Some(alice(&mut sim));
        }
        peak = peak.max(sim.endpoint(reg).stats().server_transactions);
    }
    let ua = ua.unwrap();
    let mut answered = 0;
    while sim.peer_recv(attacker).is_some() {
        answered += 1;
    }
    let budget = 400 + 200 * 10; // burst + rate × 10 s
    assert!(answered <= budget + 10, "the flood got {answered} answers");
    assert!(peak <= budget + 10, "{peak} transactions held at once");
    assert!(
        registered(&mut sim, ua),
        "Alice registered during the flood"
    );
    // no retransmission was needed: one REGISTER and its challenge, then
    // one authenticated REGISTER
    assert_eq!(alice_requests(&sim), 2);
    let stats = sim.endpoint(reg).stats();
    assert!(
        stats.shed >= 100_000 - budget as u64 - 1_000,
        "{} shed",
        stats.shed
    );
    // a minute later nothing of the flood is held
    sim.run_for(Duration::from_secs(70));
    sim.with_endpoint(reg, |ep, now| ep.handle_timeout(now));
    let after = sim.endpoint(reg).stats();
    assert_eq!(after.server_transactions, 0);
    assert!(after.flows <= 2, "{} flows kept", after.flows);
    assert_eq!(after.sources, 0);
}

/// Many sources (5,000 addresses, 10 OPTIONS each, in 1 s): the table of
/// transactions is capped, requests beyond the cap get a stateless 503
/// with Retry-After, and every flow, bucket and transaction is given back
/// afterwards.
#[test]
fn a_flood_from_many_sources_hits_the_cap_and_is_given_back() {
    let mut sim = Sim::new(Instant::now(), 6);
    let (reg, _r) = registrar(
        &mut sim,
        AdmissionConfig {
            max_server_transactions: 2_000,
            ..AdmissionConfig::default()
        },
    );
    // Alice registers (with digest) before the flood: a source that
    // proved who it is
    let ua = alice(&mut sim);
    sim.run_for(Duration::from_secs(1));
    assert!(registered(&mut sim, ua));
    let to = SocketAddr::new(ip(REG), 5060);
    let addrs: Vec<IpAddr> = (0..5_000u32)
        .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + i))) // 198.51.100.0/..
        .collect();
    let attacker = sim.add_peer("botnet", &addrs);
    let mut n = 0u64;
    for _round in 0..10 {
        for a in &addrs {
            let from = SocketAddr::new(*a, 5060);
            sim.peer_send(
                attacker,
                from,
                to,
                Transport::Udp,
                request("OPTIONS", from, n),
            );
            n += 1;
        }
        sim.run_for(Duration::from_millis(100));
    }
    let peak = sim.endpoint(reg).stats();
    assert!(peak.server_transactions <= 2_000);
    assert!(peak.overloaded > 0);
    // the table is full, yet Alice's refresh is taken (trusted source),
    // at its first try
    let sent_before = alice_requests(&sim);
    sim.with_endpoint(ua, |ep, now| {
        ep.refresh_registration(now, siproam_core::AccountId(1))
    })
    .unwrap();
    sim.run_for(Duration::from_millis(300));
    assert!(registered(&mut sim, ua), "Alice refreshed during the flood");
    assert_eq!(alice_requests(&sim), sent_before + 1, "no retransmission");
    let mut with_retry_after = 0;
    let mut unavailable = 0;
    while let Some(r) = sim.peer_recv(attacker) {
        if r.message.status() == Some(503) {
            unavailable += 1;
            with_retry_after += usize::from(
                r.message
                    .header_values(siproam_sip::HeaderName::RetryAfter)
                    .any(|v| v.trim() == "5"),
            );
        }
    }
    assert!(unavailable > 0);
    assert_eq!(with_retry_after, unavailable);
    sim.run_for(Duration::from_secs(70));
    sim.with_endpoint(reg, |ep, now| ep.handle_timeout(now));
    let after = sim.endpoint(reg).stats();
    assert_eq!(after.server_transactions, 0);
    assert_eq!(after.flows, 0, "the flood's UDP flows are forgotten");
    assert_eq!(after.sources, 0);
}

/// A REGISTER flood from ever-new source addresses (each within its own
/// budget, as a spoofing attacker's would be): the challenges keep no
/// state (the nonce validates itself), so the flood never fills the
/// transaction table and Alice registers at her first try. Before the
/// challenges were stateless, every 401 held a transaction for 32 s and
/// the table's cap turned everyone away with 503.
#[test]
fn a_register_flood_from_ever_new_sources_holds_no_state() {
    let mut sim = Sim::new(Instant::now(), 7);
    let (reg, _r) = registrar(
        &mut sim,
        AdmissionConfig {
            max_server_transactions: 1_000,
            ..AdmissionConfig::default()
        },
    );
    let to = SocketAddr::new(ip(REG), 5060);
    let addrs: Vec<IpAddr> = (0..20_000u32)
        .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i))) // 198.18.0.0/15
        .collect();
    let attacker = sim.add_peer("spoofer", &addrs);
    let mut peak = 0;
    let mut ua = None;
    for (n, a) in addrs.iter().enumerate() {
        let from = SocketAddr::new(*a, 5060);
        sim.peer_send(
            attacker,
            from,
            to,
            Transport::Udp,
            request("REGISTER", from, n as u64),
        );
        sim.run_for(Duration::from_micros(200));
        if n == 10_000 {
            ua = Some(alice(&mut sim));
        }
        peak = peak.max(sim.endpoint(reg).stats().server_transactions);
    }
    sim.run_for(Duration::from_millis(500));
    let ua = ua.unwrap();
    assert!(
        registered(&mut sim, ua),
        "Alice registered during the flood"
    );
    assert_eq!(
        alice_requests(&sim),
        2,
        "REGISTER, challenge, REGISTER: no retry"
    );
    let stats = sim.endpoint(reg).stats();
    assert_eq!(stats.overloaded, 0, "nobody was turned away");
    assert!(peak <= 10, "{peak} transactions held at once");
    let mut challenged = 0;
    while let Some(r) = sim.peer_recv(attacker) {
        challenged += usize::from(r.message.status() == Some(401));
    }
    assert_eq!(challenged, addrs.len());
}
