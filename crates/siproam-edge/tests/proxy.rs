//! The record-routing proxy in the simulator: an INVITE for a registered
//! AoR reaches its contact, responses come back with the proxy's Via
//! removed, the ACK follows the Record-Route, CANCEL is relayed, unknown
//! users and exhausted Max-Forwards are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// the simulation starts its virtual clock at an arbitrary real instant
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use siproam::Application;
use siproam_core::{AccountConfig, Config, Event, RequestId, ServerTxId, Target, Transport};
use siproam_edge::{Registrar, RegistrarApp, RegistrarConfig};
use siproam_sim::{NodeId, Sim};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};

const PROXY: &str = "192.0.2.1";
const ALICE: &str = "192.0.2.10";
const BOB: &str = "192.0.2.20";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn proxy_target(transport: Transport) -> Target {
    Target {
        transport,
        remote: SocketAddr::new(ip(PROXY), 5060),
        local: None,
    }
}

struct World {
    sim: Sim,
    alice: NodeId,
    bob: NodeId,
}

fn world(bob_transport: Transport) -> World {
    let mut sim = Sim::new(Instant::now(), 5);
    let proxy = sim.add_endpoint(
        "proxy",
        &[ip(PROXY)],
        Config {
            seed: 1,
            // the test plays every application: no dialog layer
            dialogs: false,
            ..Config::default()
        },
    );
    let mut app = RegistrarApp::new(Registrar::new(RegistrarConfig::default()));
    sim.set_handler(
        proxy,
        Box::new(move |ep, now, ev| app.on_event(ep, now, ev)),
    );
    let alice = sim.add_endpoint(
        "alice",
        &[ip(ALICE)],
        Config {
            seed: 2,
            // the test plays every application: no dialog layer
            dialogs: false,
            ..Config::default()
        },
    );
    let bob = sim.add_endpoint(
        "bob",
        &[ip(BOB)],
        Config {
            seed: 3,
            // the test plays every application: no dialog layer
            dialogs: false,
            ..Config::default()
        },
    );
    let cfg = AccountConfig::new(
        "sip:bob@example.test",
        "sip:example.test",
        proxy_target(bob_transport),
    );
    sim.with_endpoint(bob, |ep, now| ep.register(now, cfg));
    sim.run_for(Duration::from_secs(1));
    sim.take_events(bob);
    World { sim, alice, bob }
}

fn invite(to: &str) -> MessageBuilder {
    MessageBuilder::request(Method::Invite, to)
        .header("From", "<sip:alice@example.test>;tag=al1")
        .header("To", &format!("<{to}>"))
        .header("Call-ID", "call-1@alice")
        .header("CSeq", "1 INVITE")
        .header("Contact", &format!("<sip:alice@{ALICE}:5060>"))
}

fn incoming(sim: &mut Sim, node: NodeId) -> Vec<(Option<ServerTxId>, Message)> {
    sim.take_events(node)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::IncomingRequest { tx, request, .. } => Some((tx, request)),
            _ => None,
        })
        .collect()
}

fn responses(sim: &mut Sim, node: NodeId) -> Vec<(RequestId, Message)> {
    sim.take_events(node)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Response { request, response } => Some((request, response)),
            _ => None,
        })
        .collect()
}

/// The UAS's answer: copies Record-Route (RFC 3261 §12.1.1) and adds a Contact.
fn answer(req: &Message, code: u16) -> Message {
    let mut b = MessageBuilder::response_to(req, code, "X", Some("bob1"));
    for rr in req.header_values(HeaderName::RecordRoute) {
        b = b.header("Record-Route", rr);
    }
    if code < 300 {
        b = b.header("Contact", &format!("<sip:bob@{BOB}:5060>"));
    }
    b.build().unwrap()
}

fn call_through_the_proxy(bob_transport: Transport) {
    let mut w = world(bob_transport);
    let id = w
        .sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite("sip:bob@example.test"),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let got = incoming(&mut w.sim, w.bob);
    assert_eq!(got.len(), 1);
    let (tx, inv) = got.into_iter().next().unwrap();
    let tx = tx.unwrap();
    assert!(
        inv.request_uri_str()
            .unwrap()
            .starts_with(&format!("sip:bob@{BOB}")),
        "{:?}",
        inv.request_uri_str()
    );
    assert_eq!(inv.vias().count(), 2, "the proxy's Via on top of alice's");
    assert_eq!(inv.top_via().unwrap().host_str(), PROXY);
    assert_eq!(inv.max_forwards(), Some(Ok(69)));
    let rr = inv.record_routes().next().unwrap().unwrap();
    assert!(rr.uri().as_sip().unwrap().lr());
    assert_eq!(rr.uri().as_sip().unwrap().host_str(), PROXY);
    w.sim
        .with_endpoint(w.bob, |ep, now| ep.respond(now, tx, answer(&inv, 180)))
        .unwrap();
    w.sim
        .with_endpoint(w.bob, |ep, now| ep.respond(now, tx, answer(&inv, 200)))
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let resp = responses(&mut w.sim, w.alice);
    let codes: Vec<_> = resp
        .iter()
        .map(|(r, m)| (*r, m.status().unwrap()))
        .collect();
    // one 100: the proxy's own (bob's 100 is hop by hop and stops there)
    assert_eq!(codes, [(id, 100), (id, 180), (id, 200)]);
    let ok = &resp[2].1;
    assert_eq!(ok.vias().count(), 1, "the proxy removed its Via");
    // the ACK follows the Record-Route through the proxy to bob's contact
    let route = ok.header(HeaderName::RecordRoute).unwrap().to_owned();
    let ack = MessageBuilder::request(Method::Ack, &format!("sip:bob@{BOB}:5060"))
        .header("Route", &route)
        .header("From", "<sip:alice@example.test>;tag=al1")
        .header("To", ok.header(HeaderName::To).unwrap())
        .header("Call-ID", "call-1@alice")
        .header("CSeq", "1 ACK");
    w.sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(now, ack, proxy_target(Transport::Udp))
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let got = incoming(&mut w.sim, w.bob);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, None, "an ACK for a 2xx has no transaction");
    assert_eq!(got[0].1.method(), Some(Method::Ack));
    assert!(
        got[0].1.routes().next().is_none(),
        "the proxy removed its own Route"
    );
}

#[test]
fn invite_ack_through_the_proxy_to_a_udp_binding() {
    call_through_the_proxy(Transport::Udp);
}

#[test]
fn invite_ack_through_the_proxy_to_a_tcp_binding_over_its_connection() {
    call_through_the_proxy(Transport::Tcp);
}

#[test]
fn cancel_is_relayed_and_the_invite_ends_487() {
    let mut w = world(Transport::Udp);
    let id = w
        .sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite("sip:bob@example.test"),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let (tx, inv) = incoming(&mut w.sim, w.bob).into_iter().next().unwrap();
    let tx = tx.unwrap();
    w.sim
        .with_endpoint(w.bob, |ep, now| ep.respond(now, tx, answer(&inv, 180)))
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let cancel_id = w
        .sim
        .with_endpoint(w.alice, |ep, now| ep.cancel(now, id))
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let got = incoming(&mut w.sim, w.bob);
    let (ctx, cancel) = got
        .into_iter()
        .find(|(_, m)| m.method() == Some(Method::Cancel))
        .expect("bob gets the CANCEL");
    assert_eq!(
        cancel.top_via().unwrap().branch(),
        inv.top_via().unwrap().branch(),
        "same branch as the INVITE it cancels"
    );
    w.sim
        .with_endpoint(w.bob, |ep, now| {
            ep.respond(now, ctx.unwrap(), answer(&cancel, 200))
        })
        .unwrap();
    w.sim
        .with_endpoint(w.bob, |ep, now| ep.respond(now, tx, answer(&inv, 487)))
        .unwrap();
    w.sim.run_for(Duration::from_millis(500));
    let resp = responses(&mut w.sim, w.alice);
    let codes: Vec<_> = resp
        .iter()
        .map(|(r, m)| (*r, m.status().unwrap()))
        .collect();
    assert!(codes.contains(&(cancel_id, 200)), "{codes:?}");
    assert!(codes.contains(&(id, 487)), "{codes:?}");
    // the 487 was ACKed hop by hop: bob's INVITE transaction is confirmed
    w.sim.run_for(Duration::from_secs(40));
    assert_eq!(w.sim.endpoint(w.bob).transaction_count().1, 0);
}

#[test]
fn unknown_users_and_exhausted_max_forwards() {
    let mut w = world(Transport::Udp);
    let id = w
        .sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite("sip:nobody@example.test"),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap();
    let hops = invite("sip:bob@example.test").header("Max-Forwards", "0");
    let id2 = w
        .sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(now, hops, proxy_target(Transport::Udp))
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let codes: Vec<_> = responses(&mut w.sim, w.alice)
        .iter()
        .map(|(r, m)| (*r, m.status().unwrap()))
        .filter(|(_, c)| *c >= 200)
        .collect();
    assert!(codes.contains(&(id, 404)), "{codes:?}");
    assert!(codes.contains(&(id2, 483)), "{codes:?}");
    assert!(incoming(&mut w.sim, w.bob).is_empty());
    // OPTIONS to the proxy itself is answered by it
    let opt = MessageBuilder::request(Method::Options, &format!("sip:{PROXY}"))
        .header("From", "<sip:alice@example.test>;tag=o1")
        .header("To", &format!("<sip:{PROXY}>"))
        .header("Call-ID", "opt@alice")
        .header("CSeq", "1 OPTIONS");
    let oid = w
        .sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(now, opt, proxy_target(Transport::Udp))
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let codes: Vec<_> = responses(&mut w.sim, w.alice)
        .iter()
        .map(|(r, m)| (*r, m.status().unwrap()))
        .collect();
    assert_eq!(codes, [(oid, 200)]);
}

#[test]
fn a_dead_downstream_gets_503_upstream() {
    let mut w = world(Transport::Tcp);
    // bob's connection dies and bob is gone: the binding's flow is closed
    w.sim.set_addresses(w.bob, &[]);
    w.sim.run_for(Duration::from_millis(100));
    let id = w
        .sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite("sip:bob@example.test"),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap();
    w.sim.run_for(Duration::from_secs(1));
    let codes: Vec<_> = responses(&mut w.sim, w.alice)
        .iter()
        .map(|(r, m)| (*r, m.status().unwrap()))
        .filter(|(_, c)| *c >= 200)
        .collect();
    assert_eq!(
        codes,
        [(id, 503)],
        "the proxy could not reach bob's contact"
    );
}

/// A caller on IPv6, a callee bound over IPv4: the proxy record-routes
/// twice (RFC 5118 §4), its IPv4 address on top for the callee and its IPv6
/// one below for the caller, and a request along the route set that names
/// both is forwarded once (both entries removed) to the IPv6 Contact.
/// (Regressions: one entry, in the first listen point's family, whatever
/// the legs were; and a bracketed IPv6 Request-URI host taken for a domain
/// name, answered 404.)
#[test]
fn a_call_between_families_is_record_routed_twice() {
    const PROXY6: &str = "2001:db8::1";
    const ALICE6: &str = "2001:db8::10";
    let mut sim = Sim::new(Instant::now(), 5);
    let proxy = sim.add_endpoint(
        "proxy",
        &[ip(PROXY), ip(PROXY6)],
        Config {
            seed: 1,
            dialogs: false,
            ..Config::default()
        },
    );
    let mut app = RegistrarApp::new(Registrar::new(RegistrarConfig::default()));
    sim.set_handler(
        proxy,
        Box::new(move |ep, now, ev| app.on_event(ep, now, ev)),
    );
    let no_dialogs = |seed| Config {
        seed,
        dialogs: false,
        ..Config::default()
    };
    let alice = sim.add_endpoint("alice", &[ip(ALICE6)], no_dialogs(2));
    let bob = sim.add_endpoint("bob", &[ip(BOB)], no_dialogs(3));
    let cfg = AccountConfig::new(
        "sip:bob@example.test",
        "sip:example.test",
        proxy_target(Transport::Udp),
    );
    sim.with_endpoint(bob, |ep, now| ep.register(now, cfg));
    sim.run_for(Duration::from_secs(1));
    sim.take_events(bob);
    let to_proxy6 = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(PROXY6), 5060),
        local: None,
    };
    let inv =
        invite("sip:bob@example.test").header("Contact", &format!("<sip:alice@[{ALICE6}]:5060>"));
    sim.with_endpoint(alice, |ep, now| ep.send_request(now, inv, to_proxy6))
        .unwrap();
    sim.run_for(Duration::from_millis(200));
    let (tx, inv) = incoming(&mut sim, bob).into_iter().next().unwrap();
    let rr: Vec<String> = inv
        .record_routes()
        .map(|r| r.unwrap().uri().to_string())
        .collect();
    assert_eq!(
        rr,
        [
            format!("sip:{PROXY}:5060;lr"),
            format!("sip:[{PROXY6}]:5060;lr")
        ]
    );
    sim.with_endpoint(bob, |ep, now| {
        ep.respond(now, tx.unwrap(), answer(&inv, 200))
    })
    .unwrap();
    sim.run_for(Duration::from_millis(200));
    // bob's BYE along its route set (top first) reaches alice over IPv6
    let bye = MessageBuilder::request(Method::Bye, &format!("sip:alice@[{ALICE6}]:5060"))
        .header("Route", &format!("<{}>", rr[0]))
        .header("Route", &format!("<{}>", rr[1]))
        .header("From", "<sip:bob@example.test>;tag=bob1")
        .header("To", "<sip:alice@example.test>;tag=al1")
        .header("Call-ID", "call-1@alice")
        .header("CSeq", "1 BYE");
    sim.with_endpoint(bob, |ep, now| {
        ep.send_request(now, bye, proxy_target(Transport::Udp))
    })
    .unwrap();
    sim.run_for(Duration::from_millis(200));
    let got: Vec<Message> = incoming(&mut sim, alice)
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.method() == Some(Method::Bye))
        .collect();
    assert_eq!(got.len(), 1, "the BYE reached alice");
    assert!(
        got[0].routes().next().is_none(),
        "both of the proxy's routes removed"
    );
    assert_eq!(got[0].top_via().unwrap().host_str(), format!("[{PROXY6}]"));
}
