//! RFC 3261 §18.1.1 in the simulator: a request over 1300 bytes whose
//! next hop is UDP goes over TCP to the same address (top Via `TCP`); a
//! small one stays on UDP; a CANCEL and the ACK of a failure follow their
//! INVITE over the connection; a peer that takes no TCP connection gets the
//! request over UDP after all; an RFC 5626 outbound flow over UDP keeps
//! its requests; responses go back the way the request came.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::pager::MessageSpec;
use siproam_core::{CallState, Config, Event, InviteSpec, RequestId, Target, Transport};
use siproam_sim::{Fate, NodeId, Received, Sim};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};
use support::{answer, ip, recv, UA};

const PEER: &str = "192.0.2.40";

fn setup() -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA)], Config::default());
    let peer = sim.add_peer("peer", &[ip(PEER)]);
    (sim, ua, peer)
}

fn udp_target(addr: &str) -> Target {
    Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(addr), 5060),
        local: None,
        server_name: None,
    }
}

fn send_message(sim: &mut Sim, ua: NodeId, len: usize) -> RequestId {
    sim.with_endpoint(ua, |ep, now| {
        ep.send_message(
            now,
            MessageSpec {
                uri: format!("sip:bob@{PEER}"),
                from: "sip:alice@example.test".into(),
                target: udp_target(PEER),
                text: "x".repeat(len),
            },
        )
    })
    .unwrap()
}

/// The top Via's transport token.
fn via_transport(m: &Message) -> String {
    m.top_via().unwrap().transport().to_owned()
}

/// The final statuses `request` got, and whether it failed.
fn outcome(sim: &mut Sim, ua: NodeId, request: RequestId) -> (Vec<u16>, bool) {
    let mut codes = Vec::new();
    let mut failed = false;
    for (_, e) in sim.take_events(ua) {
        match e {
            Event::Response {
                request: r,
                response,
            } if r == request => {
                codes.push(response.status().unwrap());
            }
            Event::RequestFailed { request: r, .. } if r == request => failed = true,
            _ => {}
        }
    }
    (codes, failed)
}

/// The transports the log shows for requests whose first line starts
/// with `method`, with their fate.
fn sent(sim: &Sim, method: &str) -> Vec<(Transport, Fate)> {
    sim.log()
        .iter()
        .filter(|e| e.first_line.starts_with(&format!("{method} ")))
        .map(|e| (e.transport, e.fate))
        .collect()
}

#[test]
fn a_4k_message_to_a_udp_target_goes_over_tcp_with_a_tcp_via() {
    let (mut sim, ua, peer) = setup();
    let id = send_message(&mut sim, ua, 4096);
    let got = recv(&mut sim, peer);
    assert_eq!(got.message.method(), Some(Method::Message));
    assert_eq!(got.transport, Transport::Tcp, "over TCP");
    assert_eq!(got.to, SocketAddr::new(ip(PEER), 5060), "same address");
    assert_eq!(via_transport(&got.message), "TCP");
    assert_eq!(got.message.body().len(), 4096);
    assert_eq!(sent(&sim, "MESSAGE"), [(Transport::Tcp, Fate::Delivered)]);
    answer(&mut sim, peer, &got, 200, &[]);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(outcome(&mut sim, ua, id), (vec![200], false));
    // nothing more: no retransmission over UDP, no second copy
    sim.run_for(Duration::from_secs(40));
    assert!(sim.peer_recv(peer).is_none());
    assert_eq!(sim.endpoint(ua).transaction_count(), (0, 0));
}

#[test]
fn a_200_byte_message_stays_on_udp() {
    let (mut sim, ua, peer) = setup();
    let id = send_message(&mut sim, ua, 200);
    let got = recv(&mut sim, peer);
    assert_eq!(got.transport, Transport::Udp);
    assert_eq!(via_transport(&got.message), "UDP");
    assert!(got.message.to_bytes().len() <= 1300);
    answer(&mut sim, peer, &got, 200, &[]);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(outcome(&mut sim, ua, id), (vec![200], false));
}

#[test]
fn when_the_tcp_connect_fails_the_request_goes_over_udp_and_completes() {
    let (mut sim, ua, peer) = setup();
    sim.set_accepts_streams(peer, false);
    let id = send_message(&mut sim, ua, 4096);
    let got = recv(&mut sim, peer);
    assert_eq!(got.transport, Transport::Udp, "the fallback");
    assert_eq!(via_transport(&got.message), "UDP", "its Via says so");
    assert_eq!(got.message.body().len(), 4096);
    // the refused connect, then the datagram
    assert_eq!(
        sent(&sim, "MESSAGE"),
        [
            (Transport::Tcp, Fate::Unreachable),
            (Transport::Udp, Fate::Delivered)
        ]
    );
    // a UDP transaction from then on: retransmitted until answered
    let again = recv(&mut sim, peer);
    assert_eq!(again.transport, Transport::Udp);
    assert_eq!(
        again.message.top_via().unwrap().branch(),
        got.message.top_via().unwrap().branch(),
        "a retransmission of the same transaction"
    );
    answer(&mut sim, peer, &again, 200, &[]);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(outcome(&mut sim, ua, id), (vec![200], false));
}

#[test]
fn a_request_refused_over_tcp_and_lost_over_udp_times_out_once() {
    let (mut sim, ua, peer) = setup();
    sim.set_accepts_streams(peer, false);
    let id = send_message(&mut sim, ua, 4096);
    sim.run_for(Duration::from_secs(40));
    let mut got = 0;
    while let Some(r) = sim.peer_recv(peer) {
        assert_eq!(r.transport, Transport::Udp);
        got += 1;
    }
    assert!(got > 1, "retransmitted over UDP ({got})");
    let tcp_tries = sent(&sim, "MESSAGE")
        .iter()
        .filter(|(t, _)| *t == Transport::Tcp)
        .count();
    assert_eq!(tcp_tries, 1, "TCP is tried once");
    let (codes, failed) = outcome(&mut sim, ua, id);
    assert!(codes.is_empty());
    assert!(failed, "Timer F ends it");
}

/// An SDP offer of more than `len` bytes.
fn big_sdp(len: usize) -> Bytes {
    let mut s = format!(
        "v=0\r\no=alice 1 1 IN IP4 {UA}\r\ns=-\r\nc=IN IP4 {UA}\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let mut i = 0;
    while s.len() <= len {
        s.push_str(&format!("a=x-filler-{i}:{}\r\n", "f".repeat(60)));
        i += 1;
    }
    Bytes::from(s)
}

fn call(sim: &mut Sim, ua: NodeId, sdp_len: usize) -> siproam_core::CallId {
    let spec = InviteSpec {
        uri: format!("sip:bob@{PEER}"),
        from: "sip:alice@example.test".into(),
        target: udp_target(PEER),
        sdp: Some(big_sdp(sdp_len)),
        contact_user: "alice".into(),
    };
    sim.with_endpoint(ua, |ep, now| ep.invite(now, spec))
        .unwrap()
}

/// The next request other than a retransmission of `skip`'s method.
fn recv_method(sim: &mut Sim, peer: NodeId, method: Method<'_>) -> Received {
    loop {
        let r = recv(sim, peer);
        if r.message.method() == Some(method) {
            return r;
        }
    }
}

#[test]
fn a_large_invite_goes_over_tcp_and_its_cancel_and_ack_follow_it() {
    let (mut sim, ua, peer) = setup();
    let call = call(&mut sim, ua, 3000);
    let inv = recv(&mut sim, peer);
    assert_eq!(inv.message.method(), Some(Method::Invite));
    assert_eq!(inv.transport, Transport::Tcp);
    assert_eq!(via_transport(&inv.message), "TCP");
    // the Contact stays the UDP one the call was placed with
    let contact = inv.message.header(HeaderName::Contact).unwrap();
    assert!(!contact.contains("transport=tcp"), "{contact}");
    answer(&mut sim, peer, &inv, 180, &[]);
    sim.run_for(Duration::from_millis(100));
    sim.with_endpoint(ua, |ep, now| ep.hang_up(now, call))
        .unwrap();
    let cancel = recv_method(&mut sim, peer, Method::Cancel);
    assert_eq!(cancel.transport, Transport::Tcp, "where the INVITE went");
    assert_eq!(cancel.conn, inv.conn, "on its connection");
    assert_eq!(
        cancel.message.header(HeaderName::Via),
        inv.message.header(HeaderName::Via),
        "the INVITE's Via"
    );
    answer(&mut sim, peer, &cancel, 200, &[]);
    answer(&mut sim, peer, &inv, 487, &[]);
    let ack = recv_method(&mut sim, peer, Method::Ack);
    assert_eq!(ack.transport, Transport::Tcp);
    assert_eq!(ack.conn, inv.conn);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.endpoint(ua).call_state(call), None, "the call is over");
    // nothing went over UDP
    assert!(sim
        .log()
        .iter()
        .filter(|e| e.from.ip() == ip(UA))
        .all(|e| e.transport == Transport::Tcp));
}

#[test]
fn a_large_invite_answered_2xx_gets_its_ack_and_bye_to_the_remote_target() {
    let (mut sim, ua, peer) = setup();
    let call = call(&mut sim, ua, 3000);
    let inv = recv(&mut sim, peer);
    assert_eq!(inv.transport, Transport::Tcp);
    let answer_sdp = String::from_utf8(big_sdp(100).to_vec()).unwrap();
    let ok = MessageBuilder::response_to(&inv.message, 200, "OK", Some("b1"))
        .header("Contact", &format!("<sip:bob@{PEER}:5060>"))
        .body("application/sdp", Bytes::from(answer_sdp))
        .build()
        .unwrap();
    sim.peer_reply(peer, &inv, ok.to_bytes());
    // the ACK is a request of its own to the remote target (a UDP URI),
    // small: over UDP
    let ack = recv_method(&mut sim, peer, Method::Ack);
    assert_eq!(ack.transport, Transport::Udp);
    assert_eq!(via_transport(&ack.message), "UDP");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        sim.endpoint(ua).call_state(call),
        Some(CallState::Confirmed)
    );
    sim.with_endpoint(ua, |ep, now| ep.hang_up(now, call))
        .unwrap();
    let bye = recv_method(&mut sim, peer, Method::Bye);
    assert_eq!(bye.transport, Transport::Udp);
    assert_eq!(via_transport(&bye.message), "UDP");
    answer(&mut sim, peer, &bye, 200, &[]);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.endpoint(ua).call_state(call), None);
}

#[test]
fn a_large_request_over_a_udp_outbound_flow_stays_on_the_flow() {
    let (mut sim, ua, reg, mut cfg) = support::setup(Transport::Udp);
    sim.add_peer("peer", &[ip(PEER)]);
    cfg.outbound = true;
    cfg.instance_id = Some("urn:uuid:00000000-0000-4000-8000-000000000001".to_owned());
    cfg.reg_id = Some(1);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let register = recv(&mut sim, reg);
    assert_eq!(register.transport, Transport::Udp);
    let contact = register
        .message
        .header(HeaderName::Contact)
        .unwrap()
        .to_owned();
    let base = contact.split(";expires").next().unwrap().to_owned();
    answer(
        &mut sim,
        reg,
        &register,
        200,
        &[
            ("Contact", &format!("{base};expires=300")),
            ("Require", "outbound"),
        ],
    );
    sim.run_for(Duration::from_millis(100));
    sim.take_events(ua);
    let id = send_message(&mut sim, ua, 4096);
    let got = recv(&mut sim, reg);
    assert_eq!(got.message.method(), Some(Method::Message));
    assert_eq!(got.transport, Transport::Udp, "over the flow");
    assert_eq!(got.from, register.from, "the flow's own path");
    assert_eq!(via_transport(&got.message), "UDP");
    assert!(sent(&sim, "MESSAGE")
        .iter()
        .all(|(t, _)| *t == Transport::Udp));
    answer(&mut sim, reg, &got, 200, &[]);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(outcome(&mut sim, ua, id), (vec![200], false));
}

#[test]
fn a_large_response_goes_back_over_udp_the_way_the_request_came() {
    let (mut sim, ua, peer) = setup();
    let req = MessageBuilder::request(Method::Options, &format!("sip:alice@{UA}"))
        .header("Via", &format!("SIP/2.0/UDP {PEER}:5060;branch=z9hG4bKo1"))
        .header("From", "<sip:bob@example.test>;tag=b7")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", "o1@example.test")
        .header("CSeq", "1 OPTIONS")
        .header("Max-Forwards", "70")
        .build()
        .unwrap();
    sim.peer_send(
        peer,
        SocketAddr::new(ip(PEER), 5060),
        SocketAddr::new(ip(UA), 5060),
        Transport::Udp,
        req.to_bytes(),
    );
    sim.run_for(Duration::from_millis(100));
    let (tx, request) = sim
        .take_events(ua)
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::IncomingRequest {
                tx: Some(tx),
                request,
                ..
            } => Some((tx, request)),
            _ => None,
        })
        .unwrap();
    let resp = MessageBuilder::response_to(&request, 200, "OK", Some("a1"))
        .body("text/plain", Bytes::from("y".repeat(4096)))
        .build()
        .unwrap();
    sim.with_endpoint(ua, |ep, now| ep.respond(now, tx, resp))
        .unwrap();
    let got = recv(&mut sim, peer);
    assert_eq!(got.message.status(), Some(200));
    assert_eq!(got.transport, Transport::Udp);
    assert_eq!(got.message.body().len(), 4096);
}

#[test]
fn a_large_invite_refused_over_tcp_goes_over_udp_and_its_cancel_follows() {
    let (mut sim, ua, peer) = setup();
    sim.set_accepts_streams(peer, false);
    let call = call(&mut sim, ua, 3000);
    let inv = recv(&mut sim, peer);
    assert_eq!(inv.message.method(), Some(Method::Invite));
    assert_eq!(inv.transport, Transport::Udp);
    assert_eq!(via_transport(&inv.message), "UDP");
    answer(&mut sim, peer, &inv, 180, &[]);
    sim.run_for(Duration::from_millis(100));
    sim.with_endpoint(ua, |ep, now| ep.hang_up(now, call))
        .unwrap();
    let cancel = recv_method(&mut sim, peer, Method::Cancel);
    assert_eq!(cancel.transport, Transport::Udp);
    assert_eq!(
        cancel.message.header(HeaderName::Via),
        inv.message.header(HeaderName::Via)
    );
    answer(&mut sim, peer, &cancel, 200, &[]);
    answer(&mut sim, peer, &inv, 487, &[]);
    let ack = recv_method(&mut sim, peer, Method::Ack);
    assert_eq!(ack.transport, Transport::Udp);
    assert_eq!(via_transport(&ack.message), "UDP");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.endpoint(ua).call_state(call), None);
}

/// The driver reports a connect failure after the application already
/// cancelled (both queued behind the connect): the INVITE and then its
/// CANCEL go over UDP, the CANCEL with the INVITE's (UDP) Via.
#[test]
fn an_invite_and_its_cancel_queued_behind_a_failed_connect_both_go_over_udp() {
    let (mut sim, ua, _peer) = setup();
    let now = sim.now();
    let spec = InviteSpec {
        uri: format!("sip:bob@{PEER}"),
        from: "sip:alice@example.test".into(),
        target: udp_target(PEER),
        sdp: Some(big_sdp(3000)),
        contact_user: "alice".into(),
    };
    // driven by hand: no simulated network in between
    let ep = sim.endpoint(ua);
    let call = ep.invite(now, spec).unwrap();
    ep.hang_up(now, call).unwrap();
    let mut queued = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        queued.push(t);
    }
    assert_eq!(queued.len(), 2, "the INVITE and its CANCEL");
    assert!(queued.iter().all(|t| t.transport == Transport::Tcp));
    assert_eq!(queued[0].flow, queued[1].flow);
    let flow = queued[0].flow;
    ep.handle_flow_closed(now, flow, siproam_core::FlowCloseReason::ConnectFailed);
    let mut resent = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        resent.push(t);
    }
    let msgs: Vec<Message> = resent
        .iter()
        .map(|t| Message::parse(t.payload.clone()).unwrap())
        .collect();
    let methods: Vec<_> = msgs
        .iter()
        .map(|m| m.method().unwrap().as_str().to_owned())
        .collect();
    assert_eq!(methods, ["INVITE", "CANCEL"]);
    assert!(resent
        .iter()
        .all(|t| t.transport == Transport::Udp && t.remote == SocketAddr::new(ip(PEER), 5060)));
    assert_eq!(via_transport(&msgs[0]), "UDP");
    assert_eq!(
        msgs[1].header(HeaderName::Via),
        msgs[0].header(HeaderName::Via),
        "the CANCEL carries the INVITE's Via"
    );
    assert_eq!(
        ep.call_state(call),
        Some(CallState::Calling),
        "the call goes on"
    );
}

/// A proxy's forwarding (`forward_request`: the edge, the registrar's
/// proxy) is left alone: it relays over the flow or address the client
/// registered from — a NAT binding that a TCP connection would not reach.
#[test]
fn a_large_request_forwarded_by_a_proxy_stays_on_udp() {
    let (mut sim, proxy, peer) = setup();
    let req = MessageBuilder::request(Method::Message, &format!("sip:bob@{PEER}"))
        .header("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKup1")
        .header("From", "<sip:carol@example.test>;tag=c1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "f1@example.test")
        .header("CSeq", "1 MESSAGE")
        .header("Max-Forwards", "70")
        .body("text/plain", Bytes::from("z".repeat(4096)))
        .build()
        .unwrap();
    sim.with_endpoint(proxy, |ep, now| {
        ep.forward_request(now, req, udp_target(PEER))
    })
    .unwrap();
    let got = recv(&mut sim, peer);
    assert_eq!(got.transport, Transport::Udp);
    assert_eq!(via_transport(&got.message), "UDP");
    assert_eq!(got.message.vias().count(), 2, "ours on top of the client's");
}
