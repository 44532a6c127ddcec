//! RFC 3428 MESSAGE both ways, and the refusals of a received one (413,
//! 415), in the simulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::pager::{MessageRefusal, MessageSpec, MAX_MESSAGE_BODY};
use siproam_core::{Config, Event, Target, Transport};
use siproam_sim::{NodeId, Sim};
use siproam_sip::{HeaderName, MessageBuilder, Method};

const UA: &str = "192.0.2.10";
const PEER: &str = "192.0.2.20";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn setup() -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA)], Config::default());
    let peer = sim.add_peer("peer", &[ip(PEER)]);
    (sim, ua, peer)
}

#[test]
fn a_message_goes_out_with_its_text_and_its_answer_comes_back() {
    let (mut sim, ua, peer) = setup();
    let id = sim
        .with_endpoint(ua, |ep, now| {
            ep.send_message(
                now,
                MessageSpec {
                    uri: "sip:bob@example.test".into(),
                    from: "sip:alice@example.test".into(),
                    target: Target {
                        transport: Transport::Udp,
                        remote: SocketAddr::new(ip(PEER), 5060),
                        local: None,
                        server_name: None,
                    },
                    text: "héllo bob".into(),
                },
            )
        })
        .unwrap();
    let got = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .expect("the MESSAGE");
    let m = &got.message;
    assert_eq!(m.method(), Some(Method::Message));
    assert_eq!(m.request_uri().unwrap().to_string(), "sip:bob@example.test");
    assert_eq!(m.header(HeaderName::CSeq), Some("1 MESSAGE"));
    assert_eq!(
        m.header(HeaderName::ContentType),
        Some("text/plain;charset=UTF-8")
    );
    assert_eq!(m.body().as_ref(), "héllo bob".as_bytes());
    assert!(m.from().unwrap().tag().is_some(), "From has a tag");
    assert!(
        m.header(HeaderName::Contact).is_none(),
        "no dialog, no Contact"
    );
    let ok = MessageBuilder::response_to(m, 200, "OK", Some("b1"))
        .build()
        .unwrap();
    sim.peer_reply(peer, &got, ok.to_bytes());
    sim.run_for(Duration::from_millis(100));
    let codes: Vec<_> = sim
        .take_events(ua)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Response { request, response } if request == id => response.status(),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [200]);
}

#[test]
fn a_text_over_the_limit_is_not_sent() {
    let (mut sim, ua, peer) = setup();
    let r = sim.with_endpoint(ua, |ep, now| {
        ep.send_message(
            now,
            MessageSpec {
                uri: "sip:bob@example.test".into(),
                from: "sip:alice@example.test".into(),
                target: Target {
                    transport: Transport::Tcp,
                    remote: SocketAddr::new(ip(PEER), 5060),
                    local: None,
                    server_name: None,
                },
                text: "x".repeat(MAX_MESSAGE_BODY + 1),
            },
        )
    });
    assert_eq!(r, Err(siproam_core::CoreError::MessageTooLarge));
    sim.run_for(Duration::from_millis(100));
    assert!(sim.peer_recv(peer).is_none(), "nothing went out");
}

/// A MESSAGE from the peer, the answer it got, and what the UA took.
fn receive(
    content_type: Option<&str>,
    body: &[u8],
) -> (
    u16,
    Option<String>,
    Result<siproam_core::pager::IncomingMessage, MessageRefusal>,
) {
    let (mut sim, ua, peer) = setup();
    let mut b = MessageBuilder::request(Method::Message, &format!("sip:alice@{UA}"))
        .header("Via", &format!("SIP/2.0/TCP {PEER}:5070;branch=z9hG4bKm1"))
        .header("From", "<sip:bob@example.test>;tag=b7")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", "m1@example.test")
        .header("CSeq", "1 MESSAGE")
        .header("Max-Forwards", "70");
    b = match content_type {
        Some(ct) => b.body(ct, Bytes::copy_from_slice(body)),
        None => b,
    };
    let bytes = b.build().unwrap().to_bytes();
    sim.peer_send(
        peer,
        SocketAddr::new(ip(PEER), 5070),
        SocketAddr::new(ip(UA), 5060),
        Transport::Tcp,
        bytes,
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
        .expect("the MESSAGE reaches the application");
    let taken = sim
        .with_endpoint(ua, |ep, now| ep.accept_message(now, tx, &request))
        .unwrap();
    let answer = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .expect("an answer");
    let accept = answer.message.header(HeaderName::Accept).map(str::to_owned);
    (answer.message.status().unwrap(), accept, taken)
}

#[test]
fn a_text_message_is_answered_200_and_its_text_taken() {
    let (code, _, taken) = receive(Some("text/plain;charset=utf-8"), "hi alice ☺".as_bytes());
    assert_eq!(code, 200);
    let m = taken.unwrap();
    assert_eq!(m.peer, "sip:bob@example.test");
    assert_eq!(m.text, "hi alice ☺");
}

#[test]
fn a_body_over_the_limit_is_answered_413() {
    let body = vec![b'a'; MAX_MESSAGE_BODY + 1];
    let (code, _, taken) = receive(Some("text/plain"), &body);
    assert_eq!(code, 413);
    assert_eq!(
        taken,
        Err(MessageRefusal::TooLarge {
            size: MAX_MESSAGE_BODY + 1,
            limit: MAX_MESSAGE_BODY
        })
    );
    // at the limit it is taken
    let body = vec![b'a'; MAX_MESSAGE_BODY];
    assert_eq!(receive(Some("text/plain"), &body).0, 200);
}

#[test]
fn another_type_is_answered_415_with_accept() {
    for (ct, body) in [
        ("text/html", b"<b>hi</b>".as_slice()),
        ("application/im-iscomposing+xml", b"<x/>".as_slice()),
        ("text/plain;charset=iso-8859-1", b"caf\xe9".as_slice()),
        // said UTF-8, is not
        ("text/plain;charset=utf-8", b"caf\xe9".as_slice()),
    ] {
        let (code, accept, taken) = receive(Some(ct), body);
        assert_eq!(code, 415, "{ct}");
        assert_eq!(accept.as_deref(), Some("text/plain"), "{ct}");
        assert_eq!(taken, Err(MessageRefusal::UnsupportedType), "{ct}");
    }
}
