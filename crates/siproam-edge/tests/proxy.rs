//! The record-routing proxy in the simulator: an INVITE for a registered
//! AoR reaches its contact, responses come back with the proxy's Via
//! removed, the ACK follows the Record-Route, CANCEL is relayed, unknown
//! users and exhausted Max-Forwards are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// the simulation starts its virtual clock at an arbitrary real instant
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use siproam_core::{AccountConfig, Config, Event, RequestId, ServerTxId, Target, Transport};
use siproam_edge::{Dispatcher, Proxy, Registrar, RegistrarConfig};
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
        server_name: None,
    }
}

/// The registrar and the proxy run `node`'s events through a
/// [`Dispatcher`], as the driver's `RegistrarApp` does; they are shared so
/// the test can look at them.
fn run_edge(
    sim: &mut Sim,
    node: NodeId,
    registrar: Registrar,
) -> (Arc<Mutex<Registrar>>, Arc<Mutex<Proxy>>) {
    let registrar = Arc::new(Mutex::new(registrar));
    let proxy = Arc::new(Mutex::new(Proxy::new()));
    let (r, p) = (registrar.clone(), proxy.clone());
    let mut dispatcher = Dispatcher::new();
    sim.set_handler(
        node,
        Box::new(move |ep, now, ev| {
            dispatcher.handle_event(&mut r.lock().unwrap(), &mut p.lock().unwrap(), ep, now, ev)
        }),
    );
    (registrar, proxy)
}

struct World {
    sim: Sim,
    alice: NodeId,
    bob: NodeId,
    registrar: Arc<Mutex<Registrar>>,
    proxy: Arc<Mutex<Proxy>>,
}

fn world(bob_transport: Transport) -> World {
    world_with(bob_transport, RegistrarConfig::default())
}

fn world_with(bob_transport: Transport, config: RegistrarConfig) -> World {
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
    let (registrar, proxy_state) = run_edge(&mut sim, proxy, Registrar::new(config));
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
    World {
        sim,
        alice,
        bob,
        registrar,
        proxy: proxy_state,
    }
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

fn call_through_the_proxy(bob_transport: Transport, alice_transport: Transport) {
    let mut w = world(bob_transport);
    let id = w
        .sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite("sip:bob@example.test"),
                proxy_target(alice_transport),
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
            ep.send_request(now, ack, proxy_target(alice_transport))
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let events = w.sim.take_events(w.bob);
    let ack_flows: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::IncomingRequest { flow, request, .. }
                if request.method() == Some(Method::Ack) =>
            {
                Some(*flow)
            }
            _ => None,
        })
        .collect();
    if bob_transport == Transport::Udp {
        // a Contact without `;transport=`: UDP (RFC 3263 §4.1), whatever
        // the caller's leg was
        let transports: Vec<_> = ack_flows
            .iter()
            .map(|f| w.sim.endpoint(w.bob).flow(*f).map(|f| f.transport))
            .collect();
        assert_eq!(transports, [Some(Transport::Udp)]);
    }
    let got: Vec<_> = events
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::IncomingRequest { tx, request, .. } => Some((tx, request)),
            _ => None,
        })
        .collect();
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
    call_through_the_proxy(Transport::Udp, Transport::Udp);
}

#[test]
fn invite_ack_through_the_proxy_to_a_tcp_binding_over_its_connection() {
    call_through_the_proxy(Transport::Tcp, Transport::Udp);
}

/// Regression (found by the namespace fault tests): a caller over TCP
/// calling a callee registered over UDP never got its ACK or BYE through:
/// the proxy sent in-dialog requests to the callee's Contact (no
/// `;transport=`) over the transport they arrived on, TCP, instead of UDP
/// (RFC 3263 §4.1 for a numeric `sip:` address).
#[test]
fn a_tcp_caller_reaches_a_udp_callee_in_dialog() {
    call_through_the_proxy(Transport::Udp, Transport::Tcp);
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
    run_edge(&mut sim, proxy, Registrar::new(RegistrarConfig::default()));
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
        server_name: None,
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
    // each entry carries the dialog's token (the same on both)
    let (bare, tokens): (Vec<&str>, Vec<&str>) =
        rr.iter().map(|r| r.split_once(";rrt=").unwrap()).unzip();
    assert_eq!(
        bare,
        [
            format!("sip:{PROXY}:5060;lr"),
            format!("sip:[{PROXY6}]:5060;lr")
        ]
    );
    assert_eq!(tokens[0].len(), 32);
    assert_eq!(tokens[0], tokens[1]);
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

// ---------------------------------------------------------------------------
// No open relay, no port scanner (issue 10, finding 2)
// ---------------------------------------------------------------------------

const VICTIM: &str = "192.0.2.30";

/// The final status of each request alice sends to the proxy, in order.
fn final_codes(w: &mut World, reqs: Vec<MessageBuilder>) -> Vec<u16> {
    let ids: Vec<RequestId> = reqs
        .into_iter()
        .map(|r| {
            w.sim
                .with_endpoint(w.alice, |ep, now| {
                    ep.send_request(now, r, proxy_target(Transport::Udp))
                })
                .unwrap()
        })
        .collect();
    w.sim.run_for(Duration::from_secs(2));
    let resp = responses(&mut w.sim, w.alice);
    ids.iter()
        .map(|id| {
            resp.iter()
                .filter(|(r, m)| r == id && m.status().unwrap() >= 200)
                .map(|(_, m)| m.status().unwrap())
                .next()
                .unwrap_or(0)
        })
        .collect()
}

/// What the proxy sent to the victim's address (anything at all).
fn sent_to_victim(w: &World) -> Vec<String> {
    w.sim
        .log()
        .iter()
        .filter(|e| e.to.ip() == ip(VICTIM))
        .map(|e| format!("{} {:?}", e.first_line, e.transport))
        .collect()
}

fn invite_with(ruri: &str, call_id: &str) -> MessageBuilder {
    MessageBuilder::request(Method::Invite, ruri)
        .header("From", "<sip:alice@example.test>;tag=al1")
        .header("To", &format!("<{ruri}>"))
        .header("Call-ID", call_id)
        .header("CSeq", "1 INVITE")
        .header("Contact", &format!("<sip:alice@{ALICE}:5060>"))
}

fn victim_world() -> World {
    let mut w = world_with(
        Transport::Udp,
        RegistrarConfig {
            key: [9; 32],
            ..RegistrarConfig::default()
        },
    );
    // something listening on the victim's 5060 (UDP and TCP)
    w.sim.add_endpoint(
        "victim",
        &[ip(VICTIM)],
        Config {
            seed: 4,
            dialogs: false,
            ..Config::default()
        },
    );
    w
}

/// Regression: an IP-literal Request-URI made the proxy forward anywhere,
/// over UDP or TCP, and a closed port's quick 503 told it from an open one.
/// Now: 403 whatever the port, and nothing is sent there.
#[test]
fn an_ip_literal_request_uri_that_is_not_ours_is_refused_unsent() {
    let mut w = victim_world();
    let codes = final_codes(
        &mut w,
        vec![
            invite_with(&format!("sip:x@{VICTIM}:5060"), "r1"),
            invite_with(&format!("sip:x@{VICTIM}:5060;transport=tcp"), "r2"),
            invite_with(&format!("sip:x@{VICTIM}:9999"), "r3"),
            invite_with(&format!("sip:x@{VICTIM}:9999;transport=tcp"), "r4"),
            invite_with(&format!("sip:x@{VICTIM}:5060;maddr=192.0.2.20"), "r5"),
        ],
    );
    assert_eq!(codes, [403, 403, 403, 403, 403]);
    assert_eq!(sent_to_victim(&w), Vec::<String>::new());
    assert!(incoming(&mut w.sim, w.bob).is_empty());
}

/// Regression: a Route naming another host was followed for anyone; our
/// own Route is followed only with a token that verifies for the Call-ID.
#[test]
fn a_route_elsewhere_or_our_route_without_a_valid_token_is_refused() {
    let mut w = victim_world();
    // a real call gives alice a genuine token for call "c1"
    w.sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite_with("sip:bob@example.test", "c1"),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let (_, inv) = incoming(&mut w.sim, w.bob).into_iter().next().unwrap();
    let rr = inv.header(HeaderName::RecordRoute).unwrap().to_owned();
    assert!(rr.contains(";rrt="), "{rr}");
    let bye = |route: &str, call_id: &str| {
        MessageBuilder::request(Method::Bye, &format!("sip:x@{VICTIM}:5060"))
            .header("Route", route)
            .header("From", "<sip:alice@example.test>;tag=al1")
            .header("To", "<sip:x@example.test>;tag=x1")
            .header("Call-ID", call_id)
            .header("CSeq", "2 BYE")
    };
    let codes = final_codes(
        &mut w,
        vec![
            // someone else's route first
            bye(&format!("<sip:{VICTIM}:5060;lr>"), "c2"),
            invite_with("sip:bob@example.test", "c3")
                .header("Route", &format!("<sip:{VICTIM}:9999;lr;transport=tcp>")),
            // ours, without a token
            bye(&format!("<sip:{PROXY}:5060;lr>"), "c4"),
            // ours, with a made-up token
            bye(
                &format!("<sip:{PROXY}:5060;lr;rrt=00000000000000000000000000000000>"),
                "c5",
            ),
            // ours, with c1's genuine token on another Call-ID
            bye(&rr, "c6"),
            // ours then someone else's, with a bad token
            bye(&format!("<sip:{PROXY}:5060;lr>, <sip:{VICTIM};lr>"), "c7"),
        ],
    );
    assert_eq!(codes, [403, 403, 403, 403, 403, 403]);
    // an ACK (no transaction, no answer) is dropped the same way
    let ack = MessageBuilder::request(Method::Ack, &format!("sip:x@{VICTIM}:5060"))
        .header("Route", &format!("<sip:{PROXY}:5060;lr>"))
        .header("From", "<sip:alice@example.test>;tag=al1")
        .header("To", "<sip:x@example.test>;tag=x1")
        .header("Call-ID", "c8")
        .header("CSeq", "1 ACK");
    w.sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(now, ack, proxy_target(Transport::Udp))
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    assert_eq!(sent_to_victim(&w), Vec::<String>::new());
    // the genuine token on its own Call-ID is followed, to wherever the
    // dialog's target is now (the token does not name the target)
    // (the victim does not answer: retransmissions follow)
    let codes = final_codes(&mut w, vec![bye(&rr, "c1")]);
    assert_eq!(codes, [0], "forwarded: no answer from the proxy itself");
    let sent = sent_to_victim(&w);
    assert!(!sent.is_empty());
    assert!(
        sent.iter()
            .all(|l| l == "BYE sip:x@192.0.2.30:5060 SIP/2.0 Udp"),
        "{sent:?}"
    );
}

/// A client's pre-loaded Route naming the proxy (its outbound proxy, RFC
/// 5626 §5.1) on an INVITE outside any dialog is taken off and the INVITE
/// forwarded to our AoR's binding without it; with a Request-URI that is
/// not ours, or in a dialog, such a Route is still refused.
#[test]
fn a_preloaded_route_naming_the_proxy_is_taken_off_an_initial_request() {
    let mut w = victim_world();
    let ours = format!("<sip:{PROXY}:5060;lr>");
    w.sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite_with("sip:bob@example.test", "p1").header("Route", &ours),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let got = incoming(&mut w.sim, w.bob);
    let (_, inv) = got.first().expect("bob gets the INVITE");
    assert_eq!(inv.call_id(), "p1");
    assert!(
        inv.header_values(HeaderName::Route)
            .all(|r| !r.contains(PROXY)),
        "{inv:?}"
    );
    let codes = final_codes(
        &mut w,
        vec![invite_with(&format!("sip:x@{VICTIM}:5060"), "p2").header("Route", &ours)],
    );
    assert_eq!(codes, [403]);
    assert_eq!(sent_to_victim(&w), Vec::<String>::new());
}

/// Regression: with a domain configured, a request for another domain
/// was answered 404 like an unknown user; it is not ours: 403. An unknown
/// user of our domain stays 404.
#[test]
fn another_domain_is_forbidden_and_an_unknown_user_of_ours_not_found() {
    let mut w = world_with(
        Transport::Udp,
        RegistrarConfig {
            domain: Some("example.test".into()),
            ..RegistrarConfig::default()
        },
    );
    let codes = final_codes(
        &mut w,
        vec![
            invite_with("sip:carol@elsewhere.test", "d1"),
            invite_with("sip:nobody@example.test", "d2"),
            invite_with("sip:bob@example.test", "d3"),
        ],
    );
    assert_eq!(&codes[..2], [403, 404]);
    assert_eq!(incoming(&mut w.sim, w.bob).len(), 1, "bob's call goes on");
}

/// A request addressed to a registered Contact itself is forwarded (it is
/// one of ours), without a Route.
#[test]
fn a_request_for_a_registered_contact_is_forwarded() {
    let mut w = world(Transport::Udp);
    let contact = w
        .registrar
        .lock()
        .unwrap()
        .lookup("sip:bob@example.test", w.sim.now())[0]
        .contact
        .clone();
    w.sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite_with(&contact, "e1"),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(200));
    let got = incoming(&mut w.sim, w.bob);
    assert_eq!(got.len(), 1, "{contact}");
    assert_eq!(got[0].1.request_uri_str(), Some(contact.as_str()));
}

/// Regression (finding 1, memory): the proxy's maps never shrank, so a
/// flood of forwarded requests kept its memory. Once they are over (here:
/// bob answers only 100, so they are swept after 200 s), the next sweep
/// gives it back.
#[test]
fn the_proxy_gives_memory_back_after_a_flood() {
    let mut w = world(Transport::Udp);
    let mut proxy_sizes = Vec::new();
    // bob never answers: every INVITE stays pending (sent at 160 a
    // second, within alice's per-source budget of the core's admission
    // control, so every one reaches the proxy)
    for i in 0..2000 {
        if i % 80 == 79 {
            w.sim.run_for(Duration::from_millis(500));
        }
        w.sim
            .with_endpoint(w.alice, |ep, now| {
                ep.send_request(
                    now,
                    invite_with("sip:bob@example.test", &format!("f{i}")),
                    proxy_target(Transport::Udp),
                )
            })
            .unwrap();
    }
    w.sim.run_for(Duration::from_millis(500));
    proxy_sizes.push(w.proxy.lock().unwrap().sizes());
    w.sim.run_for(Duration::from_secs(210));
    // one more request sweeps
    w.sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite_with("sip:bob@example.test", "after"),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap();
    w.sim.run_for(Duration::from_millis(100));
    proxy_sizes.push(w.proxy.lock().unwrap().sizes());
    assert_eq!(proxy_sizes[0][0].0, 2000, "{proxy_sizes:?}");
    assert_eq!(proxy_sizes[0][1].0, 2000, "{proxy_sizes:?}");
    for (len, cap) in proxy_sizes[1] {
        assert!(len <= 1 && cap <= 64, "{proxy_sizes:?}");
    }
}

/// The `relay_authenticated` policy: a request the proxy is not
/// responsible for is challenged (407) and forwarded once the user's
/// Proxy-Authorization verifies; without the policy the same credentials
/// get 403 and nothing leaves.
#[test]
fn relay_authenticated_lets_a_known_user_out_after_a_407() {
    for policy in [true, false] {
        let mut w = world_with(
            Transport::Udp,
            RegistrarConfig {
                key: [9; 32],
                users: RegistrarConfig::parse_users("alice:alicepw\n").unwrap(),
                relay_authenticated: policy,
                ..RegistrarConfig::default()
            },
        );
        w.sim.add_endpoint(
            "victim",
            &[ip(VICTIM)],
            Config {
                seed: 4,
                dialogs: false,
                ..Config::default()
            },
        );
        let ruri = format!("sip:x@{VICTIM}:5060");
        let first = w
            .sim
            .with_endpoint(w.alice, |ep, now| {
                ep.send_request(now, invite_with(&ruri, "g1"), proxy_target(Transport::Udp))
            })
            .unwrap();
        w.sim.run_for(Duration::from_millis(200));
        let resp = responses(&mut w.sim, w.alice);
        let (_, challenge) = resp
            .iter()
            .find(|(r, m)| *r == first && m.status().unwrap() >= 400)
            .unwrap();
        if !policy {
            assert_eq!(challenge.status(), Some(403));
            assert!(sent_to_victim(&w).is_empty());
            continue;
        }
        assert_eq!(challenge.status(), Some(407));
        let ch = siproam_sip::digest::Challenge::parse(
            challenge.header(HeaderName::ProxyAuthenticate).unwrap(),
        )
        .unwrap();
        let creds = |password: &str, nc: u32| {
            siproam_sip::digest::respond(
                &ch,
                &siproam_sip::digest::ClientInput {
                    username: "alice",
                    password,
                    method: "INVITE",
                    uri: &ruri,
                    cnonce: "c0ffee",
                    nc,
                    body: b"",
                },
            )
            .unwrap()
        };
        let wrong = invite_with(&ruri, "g2").header("Proxy-Authorization", &creds("nope", 1));
        let right = invite_with(&ruri, "g3").header("Proxy-Authorization", &creds("alicepw", 1));
        let codes = final_codes(&mut w, vec![wrong]);
        assert_eq!(codes, [407]);
        assert!(sent_to_victim(&w).is_empty());
        final_codes(&mut w, vec![right]);
        let sent = sent_to_victim(&w);
        assert!(
            !sent.is_empty() && sent.iter().all(|l| l.starts_with("INVITE")),
            "{sent:?}"
        );
    }
}

// ---- RFC 5626 §5.3 / §6: an instance's flows, through edge proxies ----

const EDGE_A: &str = "192.0.2.50";
const EDGE_B: &str = "192.0.2.51";
const CAROL_INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-00000000ca01";

/// Carol's phone registers flow `reg_id` through the scripted edge proxy
/// `edge` at `edge_ip` (its Via over the phone's, its Path with `;ob`),
/// over `transport`. Returns the status of the answer.
fn register_through_edge(
    w: &mut World,
    edge: NodeId,
    edge_ip: &str,
    reg_id: u32,
    transport: Transport,
) -> u16 {
    let path = format!("<sip:{edge_ip};lr;ob>");
    register_with_path(w, edge, edge_ip, reg_id, transport, &path)
}

fn register_with_path(
    w: &mut World,
    edge: NodeId,
    edge_ip: &str,
    reg_id: u32,
    transport: Transport,
    path: &str,
) -> u16 {
    let n = w.sim.log().len();
    let t = transport.param().to_ascii_uppercase();
    let m = MessageBuilder::request(Method::Register, "sip:example.test")
        .header("Via", &format!("SIP/2.0/{t} {edge_ip}:5060;branch=z9hG4bKe{n}"))
        .header("Via", &format!("SIP/2.0/TCP 198.51.100.7:40000;branch=z9hG4bKc{n}"))
        .header("Path", path)
        .header("From", "<sip:carol@example.test>;tag=c1")
        .header("To", "<sip:carol@example.test>")
        .header("Call-ID", &format!("carol-{reg_id}"))
        .header("CSeq", &format!("{n} REGISTER"))
        .header("Supported", "outbound, path")
        .header(
            "Contact",
            &format!(
                "<sip:carol@198.51.100.7:40000;transport=tcp;ob>;+sip.instance=\"<{CAROL_INSTANCE}>\";reg-id={reg_id};expires=600"
            ),
        )
        .build()
        .unwrap();
    w.sim.peer_send(
        edge,
        SocketAddr::new(ip(edge_ip), 5060),
        SocketAddr::new(ip(PROXY), 5060),
        transport,
        m.to_bytes(),
    );
    let r = w
        .sim
        .run_until_peer_receives(edge, Duration::from_secs(1))
        .unwrap();
    r.message.status().unwrap()
}

/// Carol registered flow 1 through edge A, then flow 2 through edge B.
fn carol_with_two_flows() -> (World, NodeId, NodeId) {
    let mut w = world(Transport::Udp);
    let a = w.sim.add_peer("edge-a", &[ip(EDGE_A)]);
    let b = w.sim.add_peer("edge-b", &[ip(EDGE_B)]);
    assert_eq!(
        register_through_edge(&mut w, a, EDGE_A, 1, Transport::Udp),
        200
    );
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        register_through_edge(&mut w, b, EDGE_B, 2, Transport::Udp),
        200
    );
    (w, a, b)
}

/// The next request an edge peer receives (skipping ACKs).
fn edge_request(w: &mut World, edge: NodeId, limit: Duration) -> Option<siproam_sim::Received> {
    let until = w.sim.now() + limit;
    while w.sim.now() < until {
        let left = until.saturating_duration_since(w.sim.now());
        let r = w.sim.run_until_peer_receives(edge, left)?;
        if r.message.method() != Some(Method::Ack) && r.message.is_request() {
            return Some(r);
        }
    }
    None
}

fn reply(w: &mut World, edge: NodeId, to: &siproam_sim::Received, code: u16, reason: &str) {
    let mut b = MessageBuilder::response_to(&to.message, code, reason, Some("c1x"));
    if code < 300 {
        b = b.header("Contact", "<sip:carol@198.51.100.7:40000;transport=tcp;ob>");
    }
    w.sim.peer_reply(edge, to, b.build().unwrap().to_bytes());
}

fn alice_invites_carol(w: &mut World) -> RequestId {
    w.sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(
                now,
                invite_with("sip:carol@example.test", "carol-call"),
                proxy_target(Transport::Udp),
            )
        })
        .unwrap()
}

fn alice_finals(w: &mut World) -> Vec<u16> {
    responses(&mut w.sim, w.alice)
        .iter()
        .map(|(_, m)| m.status().unwrap())
        .filter(|c| *c >= 200)
        .collect()
}

fn carol_reg_ids(w: &World) -> Vec<Option<u32>> {
    w.registrar
        .lock()
        .unwrap()
        .lookup("sip:carol@example.test", w.sim.now())
        .iter()
        .map(|b| b.reg_id)
        .collect()
}

#[test]
fn a_request_to_an_instance_goes_along_the_path_of_its_newest_flow() {
    let (mut w, a, b) = carol_with_two_flows();
    alice_invites_carol(&mut w);
    let got = edge_request(&mut w, b, Duration::from_secs(1)).expect("edge B, the newest flow");
    let inv = &got.message;
    assert_eq!(
        inv.request_uri_str(),
        Some("sip:carol@198.51.100.7:40000;transport=tcp;ob")
    );
    let routes: Vec<String> = inv
        .header_values(HeaderName::Route)
        .map(str::to_owned)
        .collect();
    assert_eq!(
        routes,
        [format!("<sip:{EDGE_B};lr;ob>")],
        "the Path as Route"
    );
    assert!(
        w.sim.peer_recv(a).is_none(),
        "one flow of an instance at a time"
    );
}

#[test]
fn a_430_from_the_edge_fails_over_to_the_instances_other_flow_and_forgets_the_dead_one() {
    let (mut w, a, b) = carol_with_two_flows();
    alice_invites_carol(&mut w);
    let first = edge_request(&mut w, b, Duration::from_secs(1)).expect("edge B first");
    reply(&mut w, b, &first, 430, "Flow Failed");
    let second = edge_request(&mut w, a, Duration::from_secs(1)).expect("then edge A");
    let routes: Vec<String> = second
        .message
        .header_values(HeaderName::Route)
        .map(str::to_owned)
        .collect();
    assert_eq!(routes, [format!("<sip:{EDGE_A};lr;ob>")]);
    assert_eq!(second.message.call_id(), "carol-call");
    assert_eq!(
        second.message.record_routes().count(),
        1,
        "record-routed once"
    );
    reply(&mut w, a, &second, 200, "OK");
    w.sim.run_for(Duration::from_millis(300));
    assert_eq!(alice_finals(&mut w), [200], "the caller never sees the 430");
    assert_eq!(carol_reg_ids(&w), [Some(1)], "flow 2 is gone");
}

#[test]
fn a_408_or_a_timeout_fails_over_but_a_busy_here_does_not() {
    // 408 from the edge: the other flow
    let (mut w, a, b) = carol_with_two_flows();
    alice_invites_carol(&mut w);
    let first = edge_request(&mut w, b, Duration::from_secs(1)).unwrap();
    reply(&mut w, b, &first, 408, "Request Timeout");
    let second = edge_request(&mut w, a, Duration::from_secs(1)).expect("408: edge A");
    reply(&mut w, a, &second, 486, "Busy Here");
    w.sim.run_for(Duration::from_millis(300));
    assert_eq!(alice_finals(&mut w), [486]);

    // no answer at all (Timer B): the other flow
    let (mut w, a, b) = carol_with_two_flows();
    alice_invites_carol(&mut w);
    let first = edge_request(&mut w, b, Duration::from_secs(1)).unwrap();
    assert_eq!(first.message.method(), Some(Method::Invite));
    let second = edge_request(&mut w, a, Duration::from_secs(40)).expect("timeout: edge A");
    reply(&mut w, a, &second, 200, "OK");
    w.sim.run_for(Duration::from_millis(300));
    assert_eq!(alice_finals(&mut w), [200]);

    // any other final answer is the instance's answer (§5.3: MUST NOT try
    // another flow of the same instance)
    let (mut w, a, b) = carol_with_two_flows();
    alice_invites_carol(&mut w);
    let first = edge_request(&mut w, b, Duration::from_secs(1)).unwrap();
    reply(&mut w, b, &first, 486, "Busy Here");
    w.sim.run_for(Duration::from_millis(500));
    assert_eq!(alice_finals(&mut w), [486]);
    assert!(edge_request(&mut w, a, Duration::from_secs(1)).is_none());
    assert_eq!(carol_reg_ids(&w).len(), 2, "nothing forgotten");
}

/// (Regression: the last 430 went upstream, where a caller using
/// outbound takes it for the failure of its own flow and registers again.)
#[test]
fn when_every_flow_failed_the_caller_gets_480_not_430() {
    let (mut w, a, b) = carol_with_two_flows();
    alice_invites_carol(&mut w);
    let first = edge_request(&mut w, b, Duration::from_secs(1)).unwrap();
    reply(&mut w, b, &first, 430, "Flow Failed");
    let second = edge_request(&mut w, a, Duration::from_secs(1)).unwrap();
    reply(&mut w, a, &second, 430, "Flow Failed");
    w.sim.run_for(Duration::from_millis(500));
    assert_eq!(alice_finals(&mut w), [480]);
    assert!(carol_reg_ids(&w).is_empty());
    assert!(edge_request(&mut w, b, Duration::from_millis(500)).is_none());
}

#[test]
fn an_edge_connection_closing_keeps_the_bindings_registered_through_it() {
    let mut w = world(Transport::Udp);
    let a = w.sim.add_peer("edge-a", &[ip(EDGE_A)]);
    assert_eq!(
        register_through_edge(&mut w, a, EDGE_A, 1, Transport::Tcp),
        200
    );
    // the edge's connection to the registrar closes: the phone's own flow
    // is the edge's, not this one, and the binding stays reachable along
    // its Path
    w.sim.set_addresses(a, &[]);
    w.sim.run_for(Duration::from_millis(200));
    assert_eq!(carol_reg_ids(&w), [Some(1)]);
    // a phone's own flow (no Path) closing takes its outbound binding
    let phone = w.sim.add_peer("phone", &[ip("192.0.2.70")]);
    let m = MessageBuilder::request(Method::Register, "sip:example.test")
        .header("Via", "SIP/2.0/TCP 192.0.2.70:40000;branch=z9hG4bKdirect")
        .header("From", "<sip:carol@example.test>;tag=c2")
        .header("To", "<sip:carol@example.test>")
        .header("Call-ID", "carol-direct")
        .header("CSeq", "1 REGISTER")
        .header("Supported", "outbound, path")
        .header(
            "Contact",
            &format!("<sip:carol@192.0.2.70:40000;transport=tcp;ob>;+sip.instance=\"<{CAROL_INSTANCE}>\";reg-id=2;expires=600"),
        )
        .build()
        .unwrap();
    w.sim.peer_send(
        phone,
        SocketAddr::new(ip("192.0.2.70"), 40000),
        SocketAddr::new(ip(PROXY), 5060),
        Transport::Tcp,
        m.to_bytes(),
    );
    let r = w
        .sim
        .run_until_peer_receives(phone, Duration::from_secs(1))
        .unwrap();
    assert_eq!(r.message.status(), Some(200));
    assert_eq!(carol_reg_ids(&w).len(), 2);
    w.sim.peer_close(r.conn.unwrap());
    w.sim.run_for(Duration::from_millis(200));
    assert_eq!(carol_reg_ids(&w), [Some(1)], "the phone's flow is gone");
}

#[test]
fn an_edge_that_cannot_be_reached_fails_over_to_the_instances_other_flow() {
    let mut w = world(Transport::Udp);
    let a = w.sim.add_peer("edge-a", &[ip(EDGE_A)]);
    let b = w.sim.add_peer("edge-b", &[ip(EDGE_B)]);
    assert_eq!(
        register_through_edge(&mut w, a, EDGE_A, 1, Transport::Udp),
        200
    );
    w.sim.run_for(Duration::from_secs(1));
    let path_b = format!("<sip:{EDGE_B};transport=tcp;lr;ob>");
    assert_eq!(
        register_with_path(&mut w, b, EDGE_B, 2, Transport::Udp, &path_b),
        200
    );
    // edge B is gone: the connection towards it cannot be opened
    w.sim.set_addresses(b, &[]);
    alice_invites_carol(&mut w);
    let got = edge_request(&mut w, a, Duration::from_secs(5)).expect("edge A instead");
    assert_eq!(got.message.method(), Some(Method::Invite));
    reply(&mut w, a, &got, 200, "OK");
    w.sim.run_for(Duration::from_millis(300));
    assert_eq!(alice_finals(&mut w), [200]);
}

/// A request addressed to a Contact registered through an edge proxy
/// (the callee's Contact as the Request-URI, as in an INVITE with
/// `Replaces` after a flow failure, RFC 5626 §5.3 / RFC 3891) goes along
/// that binding's Path, not straight at a Contact only its flow reaches.
#[test]
fn a_request_for_a_contact_registered_through_an_edge_goes_along_its_path() {
    let mut w = world(Transport::Udp);
    let a = w.sim.add_peer("edge-a", &[ip(EDGE_A)]);
    assert_eq!(
        register_through_edge(&mut w, a, EDGE_A, 1, Transport::Udp),
        200
    );
    let contact = "sip:carol@198.51.100.7:40000;transport=tcp;ob";
    let m = MessageBuilder::request(Method::Invite, contact)
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", "<sip:carol@example.test>")
        .header("Call-ID", "replacing-1")
        .header("CSeq", "1 INVITE")
        .header("Contact", &format!("<sip:alice@{ALICE}:5060>"));
    w.sim
        .with_endpoint(w.alice, |ep, now| {
            ep.send_request(now, m, proxy_target(Transport::Udp))
        })
        .unwrap();
    let got = edge_request(&mut w, a, Duration::from_secs(1)).expect("along the Path: edge A");
    assert_eq!(got.message.request_uri_str(), Some(contact));
    let routes: Vec<String> = got
        .message
        .header_values(HeaderName::Route)
        .map(str::to_owned)
        .collect();
    assert_eq!(routes, [format!("<sip:{EDGE_A};lr;ob>")]);
}
