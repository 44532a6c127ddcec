//! The RFC 5626 edge proxy in the simulator, between a scripted client and
//! a scripted registrar: Path with a signed flow token and `;ob`, the
//! Flow-Timer in the relayed 2xx, requests routed back over exactly the
//! flow a token names, 430 once that flow is gone, 403 for a forged token
//! and for relaying elsewhere, Record-Route with the token, idle clean-up
//! on virtual time, aggressive clean-up, UDP flows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// the simulation starts its virtual clock at an arbitrary real instant
#![allow(clippy::disallowed_methods)]

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::{Config, Target, Transport};
use siproam_edge::{EdgeConfig, EdgeProxy, FlowTokenKey};
use siproam_sim::{NodeId, Received, Sim};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};

const EDGE: &str = "192.0.2.5";
const REG: &str = "192.0.2.1";
const ALICE: &str = "192.0.2.10";
const KEY: [u8; 32] = [0x5a; 32];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(s), port)
}

struct World {
    sim: Sim,
    edge: NodeId,
    reg: NodeId,
    alice: NodeId,
    proxy: Rc<RefCell<EdgeProxy>>,
}

fn world(tune: impl FnOnce(&mut EdgeConfig)) -> World {
    let mut sim = Sim::new(Instant::now(), 11);
    let edge = sim.add_endpoint(
        "edge",
        &[ip(EDGE)],
        Config {
            dialogs: false,
            ..Config::default()
        },
    );
    let reg = sim.add_peer("registrar", &[ip(REG)]);
    let alice = sim.add_peer("alice", &[ip(ALICE)]);
    let mut config = EdgeConfig::new(
        Target {
            transport: Transport::Tcp,
            remote: addr(REG, 5060),
            local: None,
            server_name: None,
        },
        KEY,
    );
    tune(&mut config);
    let proxy = Rc::new(RefCell::new(EdgeProxy::new(config)));
    proxy.borrow().configure(sim.endpoint(edge));
    let p = proxy.clone();
    sim.set_handler(
        edge,
        Box::new(move |ep, now, ev| p.borrow_mut().handle_event(ep, now, ev)),
    );
    World {
        sim,
        edge,
        reg,
        alice,
        proxy,
    }
}

const INSTANCE: &str = "urn:uuid:00000000-0000-0000-0000-0000000000a1";

fn register(port: u16, transport: Transport, cseq: u32) -> Bytes {
    let t = transport.param();
    MessageBuilder::request(Method::Register, "sip:example.test")
        .header(
            "Via",
            &format!("SIP/2.0/{} {ALICE}:{port};branch=z9hG4bK-r{cseq}-{port};rport", t.to_uppercase()),
        )
        .header("Max-Forwards", "70")
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", "reg-1@alice")
        .header("CSeq", &format!("{cseq} REGISTER"))
        .header("Route", &format!("<sip:{EDGE}:5060;transport={t};lr>"))
        .header(
            "Contact",
            &format!(
                "<sip:alice@{ALICE}:{port};transport={t};ob>;reg-id=1;+sip.instance=\"<{INSTANCE}>\""
            ),
        )
        .header("Supported", "outbound, path")
        .header("Expires", "600")
        .build()
        .unwrap()
        .to_bytes()
}

fn next(sim: &mut Sim, peer: NodeId) -> Received {
    sim.run_until_peer_receives(peer, Duration::from_secs(5))
        .expect("the peer receives a message")
}

/// The next request the peer receives (responses skipped).
fn next_request(sim: &mut Sim, peer: NodeId) -> Received {
    loop {
        let r = next(sim, peer);
        if r.message.is_request() {
            return r;
        }
    }
}

/// The next final response for `call_id` the peer receives.
fn next_final(sim: &mut Sim, peer: NodeId, call_id: &str) -> Message {
    loop {
        let r = next(sim, peer);
        if r.message.status().is_some_and(|c| c >= 200) && r.message.call_id() == call_id {
            return r.message;
        }
    }
}

/// The registrar's 2xx to a REGISTER it got: echoes Path and Contact,
/// outbound in force.
fn reg_ok(w: &mut World, got: &Received, flow_timer: Option<u32>) {
    let m = &got.message;
    let mut b = MessageBuilder::response_to(m, 200, "OK", Some("r1"))
        .header(
            "Contact",
            &format!("{};expires=600", m.header(HeaderName::Contact).unwrap()),
        )
        .header("Require", "outbound");
    for p in m.header_values(HeaderName::Path) {
        b = b.header("Path", p);
    }
    if let Some(ft) = flow_timer {
        b = b.header("Flow-Timer", &ft.to_string());
    }
    w.sim.peer_reply(w.reg, got, b.build().unwrap().to_bytes());
}

/// Alice registers over `transport` from `port`; returns the Path URI
/// the registrar saw, the 2xx Alice got, and what Alice's flow is.
fn registered(w: &mut World, port: u16, transport: Transport, cseq: u32) -> (String, Received) {
    w.sim.peer_send(
        w.alice,
        addr(ALICE, port),
        addr(EDGE, 5060),
        transport,
        register(port, transport, cseq),
    );
    let got = next(&mut w.sim, w.reg);
    assert_eq!(got.message.method(), Some(Method::Register));
    let path = got.message.header(HeaderName::Path).unwrap().to_owned();
    reg_ok(w, &got, Some(60));
    let ok = next(&mut w.sim, w.alice);
    assert_eq!(ok.message.status(), Some(200));
    (path, ok)
}

/// The URI inside `<…>`.
fn uri_of(name_addr: &str) -> &str {
    name_addr
        .trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
}

fn invite_via(route: &str, call: &str) -> Bytes {
    MessageBuilder::request(
        Method::Invite,
        &format!("sip:alice@{ALICE}:40000;transport=tcp;ob"),
    )
    .header(
        "Via",
        &format!("SIP/2.0/TCP {REG}:5060;branch=z9hG4bK-{call}"),
    )
    .header("Max-Forwards", "69")
    .header("Route", route)
    .header("From", "<sip:bob@example.test>;tag=b1")
    .header("To", "<sip:alice@example.test>")
    .header("Call-ID", call)
    .header("CSeq", "1 INVITE")
    .header("Contact", &format!("<sip:bob@{REG}:5060;transport=tcp>"))
    .build()
    .unwrap()
    .to_bytes()
}

fn send_from_registrar(w: &mut World, bytes: Bytes) {
    w.sim.peer_send(
        w.reg,
        addr(REG, 5090),
        addr(EDGE, 5060),
        Transport::Tcp,
        bytes,
    );
}

#[test]
fn a_register_gets_a_path_with_a_signed_flow_token_and_ob_and_its_2xx_the_flow_timer() {
    let mut w = world(|c| c.flow_timer = Some(25));
    let (path, ok) = registered(&mut w, 40000, Transport::Tcp, 1);
    let uri = siproam_sip::Uri::parse(uri_of(&path)).unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!(sip.host_str(), EDGE);
    assert!(sip.lr(), "{path}");
    assert!(sip.params().contains("ob"), "{path}");
    let token = FlowTokenKey::new(&KEY).verify(sip.user().unwrap()).unwrap();
    assert_eq!(token.transport, Transport::Tcp);
    assert_eq!(token.remote, addr(ALICE, 40000));
    assert_eq!(token.local.ip(), ip(EDGE));
    // the edge's Flow-Timer replaces the registrar's 60
    assert_eq!(ok.message.flow_timer(), Some(Ok(25)));
    assert_eq!(ok.message.vias().count(), 1, "the edge's Via is taken off");
    // a REGISTER without reg-id gets a token but no ;ob
    let plain = MessageBuilder::request(Method::Register, "sip:example.test")
        .header(
            "Via",
            &format!("SIP/2.0/TCP {ALICE}:40001;branch=z9hG4bK-p1"),
        )
        .header("From", "<sip:carol@example.test>;tag=c1")
        .header("To", "<sip:carol@example.test>")
        .header("Call-ID", "reg-2@carol")
        .header("CSeq", "1 REGISTER")
        .header(
            "Contact",
            &format!("<sip:carol@{ALICE}:40001;transport=tcp>"),
        )
        .build()
        .unwrap()
        .to_bytes();
    w.sim.peer_send(
        w.alice,
        addr(ALICE, 40001),
        addr(EDGE, 5060),
        Transport::Tcp,
        plain,
    );
    let got = next(&mut w.sim, w.reg);
    let path = got.message.header(HeaderName::Path).unwrap().to_owned();
    assert!(!path.contains(";ob"), "{path}");
    assert!(siproam_edge::has_flow_token(
        &siproam_sip::Uri::parse(uri_of(&path)).unwrap()
    ));
}

#[test]
fn a_request_with_the_paths_token_goes_out_over_that_flow_and_430_once_it_is_gone() {
    let mut w = world(|_| {});
    let (path, ok) = registered(&mut w, 40000, Transport::Tcp, 1);
    let alice_conn = ok.conn.unwrap();
    send_from_registrar(&mut w, invite_via(&path, "call-1"));
    let inv = next_request(&mut w.sim, w.alice);
    assert_eq!(inv.message.method(), Some(Method::Invite));
    // over exactly the connection Alice registered on
    assert_eq!(inv.conn, Some(alice_conn));
    assert!(
        inv.message.routes().next().is_none(),
        "our Route is taken off"
    );
    // the edge record-routes with the flow token
    let rr = inv.message.record_routes().next().unwrap().unwrap();
    assert!(siproam_edge::has_flow_token(rr.uri()));
    assert_eq!(rr.uri().as_sip().unwrap().host_str(), EDGE);
    // Alice answers; the 200 reaches the registrar
    let resp = MessageBuilder::response_to(&inv.message, 200, "OK", Some("a9"))
        .header(
            "Record-Route",
            inv.message.header(HeaderName::RecordRoute).unwrap(),
        )
        .header(
            "Contact",
            &format!("<sip:alice@{ALICE}:40000;transport=tcp;ob>"),
        )
        .build()
        .unwrap();
    w.sim.peer_reply(w.alice, &inv, resp.to_bytes());
    let back = next_final(&mut w.sim, w.reg, "call-1");
    assert_eq!(back.status(), Some(200));
    assert_eq!(back.vias().count(), 1);

    // Alice's connection goes: the next request for her flow gets 430,
    // and nothing is sent towards her
    w.sim.peer_close(alice_conn);
    w.sim.run_for(Duration::from_millis(100));
    send_from_registrar(&mut w, invite_via(&path, "call-2"));
    assert_eq!(next_final(&mut w.sim, w.reg, "call-2").status(), Some(430));
    w.sim.run_for(Duration::from_secs(1));
    assert!(w.sim.peer_recv(w.alice).is_none());
}

#[test]
fn a_forged_or_altered_token_gets_403_and_nothing_is_sent_on() {
    let mut w = world(|_| {});
    let (path, _) = registered(&mut w, 40000, Transport::Tcp, 1);
    let uri = uri_of(&path).to_owned();
    let user = uri
        .trim_start_matches("sip:")
        .split('@')
        .next()
        .unwrap()
        .to_owned();
    // one digit changed
    let mut altered = user.clone().into_bytes();
    altered[3] = if altered[3] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap();
    // signed with another key
    let other = FlowTokenKey::new(&[1; 32])
        .sign(&FlowTokenKey::new(&KEY).verify(&user).unwrap())
        .unwrap();
    for (i, bad) in [altered, other, "zz".to_owned(), "0".repeat(200)]
        .iter()
        .enumerate()
    {
        let route = format!("<sip:{bad}@{EDGE}:5060;transport=tcp;lr;ob>");
        send_from_registrar(&mut w, invite_via(&route, &format!("forged-{i}")));
        let refused = next_final(&mut w.sim, w.reg, &format!("forged-{i}"));
        assert_eq!(refused.status(), Some(403), "{bad}");
    }
    w.sim.run_for(Duration::from_secs(1));
    assert!(w.sim.peer_recv(w.alice).is_none());
}

#[test]
fn requests_from_a_client_go_to_the_registrar_and_nowhere_else() {
    let mut w = world(|_| {});
    let other = w.sim.add_peer("elsewhere", &[ip("192.0.2.99")]);
    // a Route naming another host: refused, nobody contacted
    let relay = MessageBuilder::request(Method::Invite, "sip:x@192.0.2.99")
        .header(
            "Via",
            &format!("SIP/2.0/TCP {ALICE}:40002;branch=z9hG4bK-x1"),
        )
        .header("Route", &format!("<sip:{EDGE}:5060;transport=tcp;lr>"))
        .header("Route", "<sip:192.0.2.99:5060;transport=tcp;lr>")
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", "<sip:x@192.0.2.99>")
        .header("Call-ID", "relay-1")
        .header("CSeq", "1 INVITE")
        .header(
            "Contact",
            &format!("<sip:alice@{ALICE}:40002;transport=tcp>"),
        )
        .build()
        .unwrap();
    w.sim.peer_send(
        w.alice,
        addr(ALICE, 40002),
        addr(EDGE, 5060),
        Transport::Tcp,
        relay.to_bytes(),
    );
    let refused = loop {
        let r = next(&mut w.sim, w.alice);
        if r.message.status().is_some_and(|c| c >= 200) {
            break r;
        }
    };
    assert_eq!(refused.message.status(), Some(403));
    assert_eq!(refused.message.call_id(), "relay-1");
    // a request for a foreign address with no Route goes to the registrar
    // (its policy decides), with a Record-Route naming Alice's flow
    let out = MessageBuilder::request(Method::Invite, "sip:x@192.0.2.99")
        .header(
            "Via",
            &format!("SIP/2.0/TCP {ALICE}:40002;branch=z9hG4bK-x2"),
        )
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", "<sip:x@192.0.2.99>")
        .header("Call-ID", "relay-2")
        .header("CSeq", "1 INVITE")
        .header(
            "Contact",
            &format!("<sip:alice@{ALICE}:40002;transport=tcp>"),
        )
        .build()
        .unwrap();
    w.sim.peer_reply(w.alice, &refused, out.to_bytes());
    let at_reg = next_request(&mut w.sim, w.reg);
    assert_eq!(at_reg.message.method(), Some(Method::Invite));
    let rr = at_reg.message.record_routes().next().unwrap().unwrap();
    let token = FlowTokenKey::new(&KEY)
        .verify(rr.uri().as_sip().unwrap().user().unwrap())
        .unwrap();
    assert_eq!(token.remote, addr(ALICE, 40002));
    w.sim.run_for(Duration::from_secs(1));
    assert!(
        w.sim.peer_recv(other).is_none(),
        "nothing reached the other host"
    );
    // an OPTIONS to the edge itself is answered by it
    let options = MessageBuilder::request(Method::Options, &format!("sip:{EDGE}:5060"))
        .header(
            "Via",
            &format!("SIP/2.0/TCP {ALICE}:40002;branch=z9hG4bK-o1"),
        )
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", &format!("<sip:{EDGE}>"))
        .header("Call-ID", "opt-1")
        .header("CSeq", "1 OPTIONS")
        .build()
        .unwrap();
    w.sim.peer_reply(w.alice, &refused, options.to_bytes());
    assert_eq!(next_final(&mut w.sim, w.alice, "opt-1").status(), Some(200));
}

#[test]
fn the_client_side_of_a_dialog_goes_back_to_the_registrar_through_its_own_token() {
    let mut w = world(|_| {});
    let (path, ok) = registered(&mut w, 40000, Transport::Tcp, 1);
    send_from_registrar(&mut w, invite_via(&path, "call-9"));
    let inv = next_request(&mut w.sim, w.alice);
    let rr = inv
        .message
        .header(HeaderName::RecordRoute)
        .unwrap()
        .to_owned();
    // Alice's BYE follows her route set: our Record-Route (her own
    // flow's token), then the registrar's
    let bye = MessageBuilder::request(Method::Bye, &format!("sip:bob@{REG}:5060;transport=tcp"))
        .header(
            "Via",
            &format!("SIP/2.0/TCP {ALICE}:40000;branch=z9hG4bK-bye1"),
        )
        .header("Route", &rr)
        .header("Route", &format!("<sip:{REG}:5060;transport=tcp;lr>"))
        .header("From", "<sip:alice@example.test>;tag=a9")
        .header("To", "<sip:bob@example.test>;tag=b1")
        .header("Call-ID", "call-9")
        .header("CSeq", "2 BYE")
        .build()
        .unwrap();
    w.sim.peer_reply(w.alice, &ok, bye.to_bytes());
    let at_reg = next_request(&mut w.sim, w.reg);
    assert_eq!(at_reg.message.method(), Some(Method::Bye));
    let routes: Vec<String> = at_reg
        .message
        .routes()
        .map(|r| r.unwrap().uri().to_string())
        .collect();
    assert_eq!(routes, vec![format!("sip:{REG}:5060;transport=tcp;lr")]);
}

fn edge_timeout(w: &mut World) {
    let p = w.proxy.clone();
    w.sim
        .with_endpoint(w.edge, |ep, now| p.borrow_mut().handle_timeout(ep, now));
    w.sim.run_for(Duration::from_millis(100));
}

#[test]
fn a_flow_with_a_flow_timer_is_closed_after_timer_plus_grace_with_nothing_received() {
    let mut w = world(|c| {
        c.flow_timer = Some(25);
        c.flow_grace = Duration::from_secs(30);
    });
    let (path, ok) = registered(&mut w, 40000, Transport::Tcp, 1);
    let conn = ok.conn.unwrap();
    let start = w.sim.now();
    let deadline = w.proxy.borrow().poll_timeout().unwrap();
    // 25 s + 30 s grace from the REGISTER's arrival (just before the 2xx)
    let first = deadline.duration_since(start);
    assert!(
        first > Duration::from_secs(54) && first <= Duration::from_secs(55),
        "{first:?}"
    );
    // a keep-alive at 40 s pushes it to 95 s
    w.sim.run_for(Duration::from_secs(40));
    let (local, remote) = (addr(EDGE, 5060), addr(ALICE, 40000));
    let flow = w.sim.with_endpoint(w.edge, |ep, _| {
        ep.flows().find(|f| f.remote == remote).map(|f| f.id)
    });
    let now = w.sim.now();
    w.proxy
        .borrow_mut()
        .handle_keepalive(now, Transport::Tcp, local, remote, flow);
    w.sim.run_until(start + Duration::from_secs(60));
    edge_timeout(&mut w);
    assert!(w.sim.conn_open(conn), "kept alive by the ping at 40 s");
    w.sim.run_until(start + Duration::from_secs(94));
    edge_timeout(&mut w);
    assert!(w.sim.conn_open(conn));
    w.sim.run_until(start + Duration::from_secs(96));
    edge_timeout(&mut w);
    assert!(!w.sim.conn_open(conn), "closed 55 s after the last ping");
    assert_eq!(w.proxy.borrow().sizes().flows, 0);
    send_from_registrar(&mut w, invite_via(&path, "late"));
    assert_eq!(next_final(&mut w.sim, w.reg, "late").status(), Some(430));
}

#[test]
fn a_flow_without_a_flow_timer_is_closed_after_the_idle_time() {
    let mut w = world(|c| c.flow_idle = Duration::from_secs(7200));
    // the registrar sends no Flow-Timer and neither does the edge
    w.sim.peer_send(
        w.alice,
        addr(ALICE, 40000),
        addr(EDGE, 5060),
        Transport::Tcp,
        register(40000, Transport::Tcp, 1),
    );
    let got = next(&mut w.sim, w.reg);
    reg_ok(&mut w, &got, None);
    let ok = next(&mut w.sim, w.alice);
    assert_eq!(ok.message.flow_timer(), None);
    let conn = ok.conn.unwrap();
    let start = w.sim.now();
    w.sim.run_until(start + Duration::from_secs(7199));
    edge_timeout(&mut w);
    assert!(w.sim.conn_open(conn));
    w.sim.run_until(start + Duration::from_secs(7201));
    edge_timeout(&mut w);
    assert!(!w.sim.conn_open(conn));
}

#[test]
fn aggressive_clean_up_closes_the_older_flow_of_a_registration() {
    for aggressive in [false, true] {
        let mut w = world(|c| c.aggressive_gc = aggressive);
        let (_, first) = registered(&mut w, 40000, Transport::Tcp, 1);
        let (_, second) = registered(&mut w, 40010, Transport::Tcp, 2);
        assert_ne!(first.conn, second.conn);
        w.sim.run_for(Duration::from_millis(100));
        assert_eq!(w.sim.conn_open(first.conn.unwrap()), !aggressive);
        assert!(w.sim.conn_open(second.conn.unwrap()));
    }
}

#[test]
fn a_udp_flow_is_the_address_pair_and_430_once_the_edge_forgot_it() {
    let mut w = world(|c| c.flow_timer = Some(20));
    let (path, _) = registered(&mut w, 41000, Transport::Udp, 1);
    let uri = siproam_sip::Uri::parse(uri_of(&path)).unwrap();
    let token = FlowTokenKey::new(&KEY)
        .verify(uri.as_sip().unwrap().user().unwrap())
        .unwrap();
    assert_eq!(token.transport, Transport::Udp);
    assert_eq!(token.remote, addr(ALICE, 41000));
    send_from_registrar(&mut w, invite_via(&path, "udp-1"));
    let inv = next_request(&mut w.sim, w.alice);
    assert_eq!(inv.transport, Transport::Udp);
    assert_eq!(inv.from, addr(EDGE, 5060));
    assert_eq!(inv.to, addr(ALICE, 41000));
    // a STUN keep-alive counts as something received
    let start = w.sim.now();
    w.sim.run_for(Duration::from_secs(40));
    let now = w.sim.now();
    w.proxy.borrow_mut().handle_keepalive(
        now,
        Transport::Udp,
        addr(EDGE, 5060),
        addr(ALICE, 41000),
        None,
    );
    w.sim.run_until(start + Duration::from_secs(60));
    edge_timeout(&mut w);
    assert_eq!(w.proxy.borrow().sizes().udp_flows, 1);
    w.sim.run_until(start + Duration::from_secs(100));
    edge_timeout(&mut w);
    assert_eq!(w.proxy.borrow().sizes().udp_flows, 0);
    send_from_registrar(&mut w, invite_via(&path, "udp-2"));
    assert_eq!(next_final(&mut w.sim, w.reg, "udp-2").status(), Some(430));
}

/// The edge in front of the crate's own registrar and proxy: the binding
/// keeps the Path with `;ob`, and an INVITE for the AoR from elsewhere
/// reaches Alice along it, over the connection she registered on.
#[test]
fn the_registrar_routes_to_a_binding_along_its_path_through_the_edge() {
    use siproam_edge::{Dispatcher, Proxy, Registrar, RegistrarConfig};
    let mut sim = Sim::new(Instant::now(), 12);
    let edge = sim.add_endpoint(
        "edge",
        &[ip(EDGE)],
        Config {
            dialogs: false,
            ..Config::default()
        },
    );
    let reg = sim.add_endpoint(
        "registrar",
        &[ip(REG)],
        Config {
            dialogs: false,
            seed: 4,
            ..Config::default()
        },
    );
    let alice = sim.add_peer("alice", &[ip(ALICE)]);
    let bob = sim.add_peer("bob", &[ip("192.0.2.30")]);
    let mut config = EdgeConfig::new(
        Target {
            transport: Transport::Tcp,
            remote: addr(REG, 5060),
            local: None,
            server_name: None,
        },
        KEY,
    );
    config.flow_timer = Some(25);
    let proxy = Rc::new(RefCell::new(EdgeProxy::new(config)));
    proxy.borrow().configure(sim.endpoint(edge));
    let p = proxy.clone();
    sim.set_handler(
        edge,
        Box::new(move |ep, now, ev| p.borrow_mut().handle_event(ep, now, ev)),
    );
    let registrar = Rc::new(RefCell::new(Registrar::new(RegistrarConfig {
        key: [7; 32],
        ..RegistrarConfig::default()
    })));
    let r = registrar.clone();
    let mut px = Proxy::new();
    let mut dispatcher = Dispatcher::new();
    sim.set_handler(
        reg,
        Box::new(move |ep, now, ev| {
            dispatcher.handle_event(&mut r.borrow_mut(), &mut px, ep, now, ev)
        }),
    );
    sim.peer_send(
        alice,
        addr(ALICE, 40000),
        addr(EDGE, 5060),
        Transport::Tcp,
        register(40000, Transport::Tcp, 1),
    );
    let ok = loop {
        let r = next(&mut sim, alice);
        if r.message.status().is_some_and(|c| c >= 200) {
            break r;
        }
    };
    assert_eq!(ok.message.status(), Some(200));
    assert!(ok.message.has_token(HeaderName::Require, "outbound"));
    assert_eq!(ok.message.flow_timer(), Some(Ok(25)));
    let now = sim.now();
    let bindings = registrar.borrow().lookup("alice@example.test", now);
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].path.len(), 1);
    assert!(
        bindings[0].path[0].contains(";ob"),
        "{:?}",
        bindings[0].path
    );
    // Bob calls Alice's AoR at the registrar
    let inv = MessageBuilder::request(Method::Invite, "sip:alice@example.test")
        .header("Via", "SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bK-bob1")
        .header("Max-Forwards", "70")
        .header("From", "<sip:bob@example.test>;tag=b1")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", "call-bob")
        .header("CSeq", "1 INVITE")
        .header("Contact", "<sip:bob@192.0.2.30:5060>")
        .build()
        .unwrap();
    sim.peer_send(
        bob,
        addr("192.0.2.30", 5060),
        addr(REG, 5060),
        Transport::Udp,
        inv.to_bytes(),
    );
    let got = next_request(&mut sim, alice);
    assert_eq!(got.message.method(), Some(Method::Invite));
    assert_eq!(got.conn, ok.conn, "over the connection Alice registered on");
    assert_eq!(got.message.vias().count(), 3, "bob, registrar, edge");
    assert!(got.message.routes().next().is_none());
}

/// The edge relays a REGISTER's final answer without keeping the server
/// transaction (32 s of Timer J per REGISTER over UDP filled the core's
/// cap under load and every REGISTER got 503); a retransmitted REGISTER
/// is then relayed again, and the registrar answers it as the same
/// change.
#[test]
fn a_relayed_register_answer_keeps_no_server_transaction() {
    let mut w = world(|_| {});
    let (_, ok) = registered(&mut w, 40100, Transport::Udp, 1);
    assert_eq!(ok.message.status(), Some(200));
    assert_eq!(
        w.sim.endpoint(w.edge).stats().server_transactions,
        0,
        "nothing held after the 2xx went back"
    );
    // the same REGISTER again (its 2xx lost): relayed, answered again
    w.sim.peer_send(
        w.alice,
        addr(ALICE, 40100),
        addr(EDGE, 5060),
        Transport::Udp,
        register(40100, Transport::Udp, 1),
    );
    let got = next(&mut w.sim, w.reg);
    assert_eq!(got.message.method(), Some(Method::Register));
    reg_ok(&mut w, &got, None);
    let again = next(&mut w.sim, w.alice);
    assert_eq!(again.message.status(), Some(200));
}

/// The registrar is one source sending the requests of every client
/// behind the edge: the edge's per-source rate limit (200/s, bursts of
/// 400 by default) is for clients, not for the registrar it forwards to.
/// 1,000 requests from the registrar at once all reach Alice (before: 400
/// did, the rest were shed as a flood).
#[test]
fn requests_from_the_registrar_are_not_shed_by_the_per_source_rate_limit() {
    let mut w = world(|_| {});
    let (path, _) = registered(&mut w, 40000, Transport::Tcp, 1);
    let route = path.clone();
    for i in 0..1000 {
        let msg = MessageBuilder::request(
            Method::Message,
            &format!("sip:alice@{ALICE}:40000;transport=tcp;ob"),
        )
        .header(
            "Via",
            &format!("SIP/2.0/TCP {REG}:5060;branch=z9hG4bK-m{i}"),
        )
        .header("Max-Forwards", "69")
        .header("Route", &route)
        .header("From", "<sip:bob@example.test>;tag=b1")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", &format!("msg-{i}"))
        .header("CSeq", "1 MESSAGE")
        .build()
        .unwrap()
        .to_bytes();
        send_from_registrar(&mut w, msg);
    }
    w.sim.run_for(Duration::from_millis(500));
    let mut got = 0;
    while let Some(r) = w.sim.peer_recv(w.alice) {
        if r.message.method() == Some(Method::Message) {
            got += 1;
        }
    }
    assert_eq!(got, 1000, "requests from the registrar were shed");
    // a client's flood is still shed: 1,000 from Alice's address at once
    for i in 0..1000 {
        let msg = MessageBuilder::request(Method::Options, "sip:bob@example.test")
            .header(
                "Via",
                &format!("SIP/2.0/UDP {ALICE}:40002;branch=z9hG4bK-o{i}"),
            )
            .header("Max-Forwards", "70")
            .header("From", "<sip:alice@example.test>;tag=a2")
            .header("To", "<sip:bob@example.test>")
            .header("Call-ID", &format!("opt-{i}"))
            .header("CSeq", "1 OPTIONS")
            .build()
            .unwrap()
            .to_bytes();
        w.sim.peer_send(
            w.alice,
            addr(ALICE, 40002),
            addr(EDGE, 5060),
            Transport::Udp,
            msg,
        );
    }
    w.sim.run_for(Duration::from_millis(500));
    let mut forwarded = 0;
    while let Some(r) = w.sim.peer_recv(w.reg) {
        if r.message.method() == Some(Method::Options) {
            forwarded += 1;
        }
    }
    assert!(
        forwarded > 0 && forwarded < 1000,
        "a client's flood: {forwarded} of 1000 forwarded"
    );
}

/// A connection that carried a request but never a registration or a
/// dialog is no flow anyone can reach: it goes after `unregistered_idle`
/// (60 s), pings or not, not after the 2 hours of a registered flow — so
/// connections that each send one request and then sit idle cannot hold
/// the edge's connection slots (the transport evicts only connections
/// that never carried SIP) for hours. Before: still open at 2 hours.
#[test]
fn a_connection_that_never_registered_is_closed_after_a_short_idle_time() {
    let mut w = world(|c| c.flow_idle = Duration::from_secs(7200));
    let options =
        MessageBuilder::request(Method::Options, &format!("sip:{EDGE}:5060;transport=tcp"))
            .header(
                "Via",
                &format!("SIP/2.0/TCP {ALICE}:40020;branch=z9hG4bK-idle1"),
            )
            .header("Max-Forwards", "70")
            .header("From", "<sip:mallory@example.test>;tag=m1")
            .header("To", &format!("<sip:{EDGE}:5060>"))
            .header("Call-ID", "idle-1")
            .header("CSeq", "1 OPTIONS")
            .build()
            .unwrap()
            .to_bytes();
    w.sim.peer_send(
        w.alice,
        addr(ALICE, 40020),
        addr(EDGE, 5060),
        Transport::Tcp,
        options,
    );
    let ok = loop {
        let r = next(&mut w.sim, w.alice);
        if r.message.status().is_some_and(|c| c >= 200) {
            break r;
        }
    };
    assert_eq!(ok.message.status(), Some(200));
    let conn = ok.conn.unwrap();
    let start = w.sim.now();
    let (local, remote) = (addr(EDGE, 5060), addr(ALICE, 40020));
    let flow = w.sim.with_endpoint(w.edge, |ep, _| {
        ep.flows().find(|f| f.remote == remote).map(|f| f.id)
    });
    // pings every 20 s do not keep it
    for i in 1..=6 {
        w.sim.run_until(start + Duration::from_secs(20 * i));
        let now = w.sim.now();
        w.proxy
            .borrow_mut()
            .handle_keepalive(now, Transport::Tcp, local, remote, flow);
        edge_timeout(&mut w);
    }
    assert!(!w.sim.conn_open(conn), "an unregistered connection kept");
    assert_eq!(w.proxy.borrow().sizes().flows, 0);
    // a registered flow stays (its Flow-Timer of 60 s + 30 s grace)
    let (_, reg) = registered(&mut w, 40000, Transport::Tcp, 1);
    let start = w.sim.now();
    w.sim.run_until(start + Duration::from_secs(85));
    edge_timeout(&mut w);
    assert!(w.sim.conn_open(reg.conn.unwrap()));
}

/// One connection registering ever new instances (an open registrar
/// accepts them all): the edge's table of registrations (for aggressive
/// clean-up) holds at most a few per flow, and nothing once the flow is
/// gone. Before: one entry per instance, kept after the flow closed — a
/// leak of 200 entries a second at the rate limit.
#[test]
fn registrations_over_one_flow_are_bounded_and_forgotten_with_it() {
    let mut w = world(|_| {});
    let mut conn = None;
    for i in 0..300u32 {
        let msg = MessageBuilder::request(Method::Register, "sip:example.test")
            .header(
                "Via",
                &format!("SIP/2.0/TCP {ALICE}:40030;branch=z9hG4bK-many{i};rport"),
            )
            .header("Max-Forwards", "70")
            .header("From", &format!("<sip:u{i}@example.test>;tag=u{i}"))
            .header("To", &format!("<sip:u{i}@example.test>"))
            .header("Call-ID", &format!("many-{i}"))
            .header("CSeq", "1 REGISTER")
            .header(
                "Contact",
                &format!(
                    "<sip:u{i}@{ALICE}:40030;transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-{i:012}>\""
                ),
            )
            .header("Supported", "outbound, path")
            .header("Expires", "600")
            .build()
            .unwrap()
            .to_bytes();
        w.sim.peer_send(
            w.alice,
            addr(ALICE, 40030),
            addr(EDGE, 5060),
            Transport::Tcp,
            msg,
        );
        let got = next(&mut w.sim, w.reg);
        reg_ok(&mut w, &got, Some(60));
        let ok = next(&mut w.sim, w.alice);
        assert_eq!(ok.message.status(), Some(200));
        conn = ok.conn;
    }
    let held = w.proxy.borrow().sizes().registrations;
    assert!(held <= 16, "{held} registrations held for one flow");
    w.sim.peer_close(conn.unwrap());
    w.sim.run_for(Duration::from_millis(100));
    let sizes = w.proxy.borrow().sizes();
    assert_eq!((sizes.flows, sizes.registrations), (0, 0), "{sizes:?}");
}

/// The token check is bounded per request: a request that repeats a
/// valid token in hundreds of Route entries costs one HMAC, not one per
/// entry (before: one per entry), and a request with more of our own
/// Route entries than a path ever holds is refused without being walked.
#[test]
fn a_request_stacking_our_route_entries_costs_one_token_check() {
    let mut w = world(|_| {});
    let (path, ok) = registered(&mut w, 40000, Transport::Tcp, 1);
    let conn = ok.conn.unwrap();
    let route = uri_of(&path).replace(";ob", "");
    let send = |w: &mut World, n: usize, call: &str| {
        let mut msg = MessageBuilder::request(
            Method::Message,
            &format!("sip:alice@{ALICE}:40000;transport=tcp;ob"),
        )
        .header(
            "Via",
            &format!("SIP/2.0/TCP {REG}:5060;branch=z9hG4bK-{call}"),
        )
        .header("Max-Forwards", "70")
        .header("From", "<sip:bob@example.test>;tag=b5")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", call)
        .header("CSeq", "1 MESSAGE");
        // one header line each (a line is at most 16 KiB)
        for _ in 0..n {
            msg = msg.header("Route", &format!("<{route}>"));
        }
        send_from_registrar(w, msg.build().unwrap().to_bytes());
    };
    // two of our entries (a double Record-Route): forwarded, one check
    let before = w.proxy.borrow().sizes().token_checks;
    send(&mut w, 2, "stack-2");
    let got = next_request(&mut w.sim, w.alice);
    assert_eq!(got.message.call_id(), "stack-2");
    assert_eq!(got.conn, Some(conn));
    assert_eq!(w.proxy.borrow().sizes().token_checks - before, 1);
    // two hundred: refused, and not one check per entry
    let before = w.proxy.borrow().sizes().token_checks;
    send(&mut w, 200, "stack-200");
    let refused = next_final(&mut w.sim, w.reg, "stack-200");
    assert_eq!(refused.status(), Some(403));
    let checks = w.proxy.borrow().sizes().token_checks - before;
    assert!(checks <= 1, "{checks} token checks for one request");
}
