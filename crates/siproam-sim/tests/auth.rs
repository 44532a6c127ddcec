//! Digest authentication of every request an account sends, and its route
//! set (`siproam_core::auth`): a scripted proxy on REG challenges the
//! INVITE, re-INVITE, BYE and an application's request; several
//! challenges at once, a chain of them, `stale=true`, a wrong password
//! (reported once, no loop), pre-emptive answers with `nc` counting up,
//! and the outbound proxy and `Service-Route` as the Route of a later
//! INVITE.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use siproam_core::{
    AccountConfig, CallEvent, CallId, CallState, Event, InviteSpec, Target, Transport,
};
use siproam_sim::{NodeId, Received, Sim};
use siproam_sip::digest::{verify, Credentials, Secret, ServerChallenge};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};
use support::{ip, ok, recv, setup, REG};

fn sdp(tag: &str) -> Bytes {
    Bytes::from(format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns={tag}\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    ))
}

fn challenge(realm: &str, nonce: &str, stale: bool) -> String {
    ServerChallenge {
        stale,
        ..ServerChallenge::new(realm, nonce)
    }
    .to_header_value()
    .unwrap()
}

fn target() -> Target {
    Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(REG), 5060),
        local: None,
        server_name: None,
    }
}

/// A user agent with a registered account (password `alicepw`) whose
/// registrar / proxy is the scripted peer on REG; `service_route` in the
/// REGISTER's 2xx.
fn registered(
    edit: impl FnOnce(&mut AccountConfig),
    service_route: Option<&str>,
) -> (Sim, NodeId, NodeId) {
    let (mut sim, ua, reg, mut cfg) = setup(Transport::Udp);
    edit(&mut cfg);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r = recv(&mut sim, reg);
    assert_eq!(r.message.method(), Some(Method::Register));
    match service_route {
        None => ok(&mut sim, reg, &r, 3600),
        Some(sr) => {
            let contact = r.message.header(HeaderName::Contact).unwrap().to_owned();
            let base = contact.split(";expires").next().unwrap().to_owned();
            let resp = MessageBuilder::response_to(&r.message, 200, "OK", Some("reg1"))
                .header("Contact", &format!("{base};expires=3600"))
                .header("Service-Route", sr)
                .build()
                .unwrap();
            sim.peer_reply(reg, &r, resp.to_bytes());
        }
    }
    sim.run_for(Duration::from_millis(100));
    sim.take_events(ua);
    (sim, ua, reg)
}

fn place_call(sim: &mut Sim, ua: NodeId) -> CallId {
    let spec = InviteSpec {
        uri: "sip:bob@example.test".into(),
        from: "sip:alice@example.test".into(),
        target: target(),
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    sim.with_endpoint(ua, |ep, now| ep.invite(now, spec))
        .unwrap()
}

/// Answers `to` with `code` and these headers (To tag `callee`).
fn reply(sim: &mut Sim, peer: NodeId, to: &Received, code: u16, extra: &[(&str, &str)]) {
    let mut b = MessageBuilder::response_to(&to.message, code, "X", Some("callee"));
    for (n, v) in extra {
        b = b.header(n, v);
    }
    sim.peer_reply(peer, to, b.build().unwrap().to_bytes());
}

/// The proxy's 407 to `to`, one challenge of realm `example.test` with
/// `nonce`.
/// The final status codes the application was told for its request `id`
/// (provisional ones left out).
fn final_codes(sim: &mut Sim, ua: NodeId, id: siproam_core::RequestId) -> Vec<u16> {
    sim.take_events(ua)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Response { request, response } if request == id => response.status(),
            _ => None,
        })
        .filter(|c| *c >= 200)
        .collect()
}

/// How many INVITEs went out (retransmissions counted).
fn invites_sent(sim: &Sim) -> usize {
    sim.log()
        .iter()
        .filter(|e| e.first_line.starts_with("INVITE "))
        .count()
}

fn challenge_407(sim: &mut Sim, peer: NodeId, to: &Received, nonce: &str) {
    reply(
        sim,
        peer,
        to,
        407,
        &[(
            "Proxy-Authenticate",
            &challenge("example.test", nonce, false),
        )],
    );
}

/// A call straight to another user agent (Carol, a scripted peer on
/// 192.0.2.30), not through the proxy: the INVITE she receives.
fn call_carol_directly(sim: &mut Sim, ua: NodeId) -> Received {
    let carol = sim.add_peer("carol", &[ip("192.0.2.30")]);
    let spec = InviteSpec {
        uri: "sip:carol@192.0.2.30".into(),
        from: "sip:alice@example.test".into(),
        target: Target {
            remote: SocketAddr::new(ip("192.0.2.30"), 5060),
            ..target()
        },
        sdp: Some(sdp("offer")),
        contact_user: "alice".into(),
    };
    sim.with_endpoint(ua, |ep, now| ep.invite(now, spec))
        .unwrap();
    recv(sim, carol)
}

/// A 2xx to an INVITE, with a Contact on REG (so the ACK and in-dialog
/// requests come to the peer).
fn accept(sim: &mut Sim, peer: NodeId, to: &Received) {
    let resp = MessageBuilder::response_to(&to.message, 200, "OK", Some("callee"))
        .header("Contact", &format!("<sip:bob@{REG}:5060>"))
        .body("application/sdp", sdp("answer"))
        .build()
        .unwrap();
    sim.peer_reply(peer, to, resp.to_bytes());
}

fn proxy_creds(m: &Message) -> Vec<Credentials<'_>> {
    m.proxy_authorization().map(Result::unwrap).collect()
}

fn www_creds(m: &Message) -> Vec<Credentials<'_>> {
    m.authorization().map(Result::unwrap).collect()
}

fn good(c: &Credentials<'_>, method: &str, body: &[u8]) -> bool {
    verify(c, method, Secret::Password("alicepw"), body).is_ok()
}

fn call_states(sim: &mut Sim, ua: NodeId) -> (Vec<(CallState, Option<u16>)>, Vec<Event>) {
    let evs: Vec<Event> = sim.take_events(ua).into_iter().map(|(_, e)| e).collect();
    let states = evs
        .iter()
        .filter_map(|e| match e {
            Event::Call(CallEvent::State { state, code, .. }) => Some((*state, *code)),
            _ => None,
        })
        .collect();
    (states, evs)
}

fn auth_failures(evs: &[Event]) -> Vec<(String, String)> {
    evs.iter()
        .filter_map(|e| match e {
            Event::AuthenticationFailed { realm, method, .. } => {
                Some((realm.clone(), method.clone()))
            }
            _ => None,
        })
        .collect()
}

fn top_branch(m: &Message) -> String {
    m.top_via().unwrap().branch().unwrap().to_owned()
}

/// A call whose INVITE the proxy challenges (407) and then accepts;
/// returns the peer's view of the confirmed call.
fn challenged_call(sim: &mut Sim, ua: NodeId, peer: NodeId) -> CallId {
    let call = place_call(sim, ua);
    let inv1 = recv(sim, peer);
    assert_eq!(inv1.message.method(), Some(Method::Invite));
    assert!(proxy_creds(&inv1.message).is_empty(), "nothing cached yet");
    challenge_407(sim, peer, &inv1, "n1");
    // the transaction ACKs the 407 (same branch, CSeq 1 ACK)
    let ack = recv(sim, peer);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(top_branch(&ack.message), top_branch(&inv1.message));
    assert_eq!(ack.message.cseq().seq, 1);
    // a new INVITE transaction: CSeq 2, same Call-ID and From tag
    let inv2 = recv(sim, peer);
    assert_eq!(inv2.message.method(), Some(Method::Invite));
    assert_eq!(inv2.message.cseq().seq, 2);
    assert_ne!(top_branch(&inv2.message), top_branch(&inv1.message));
    assert_eq!(inv2.message.call_id(), inv1.message.call_id());
    assert_eq!(
        inv2.message.from().unwrap().tag(),
        inv1.message.from().unwrap().tag()
    );
    let creds = proxy_creds(&inv2.message);
    assert_eq!(creds.len(), 1);
    assert!(good(&creds[0], "INVITE", b""));
    assert_eq!(creds[0].uri(), Some("sip:bob@example.test"));
    assert_eq!(creds[0].nc(), Ok(Some(1)));
    assert_eq!(inv2.message.body(), &sdp("offer"), "the same offer");
    accept(sim, peer, &inv2);
    let ack2 = recv(sim, peer);
    assert_eq!(ack2.message.method(), Some(Method::Ack));
    assert_eq!(ack2.message.cseq().seq, 2);
    sim.run_for(Duration::from_millis(100));
    let (states, evs) = call_states(sim, ua);
    assert_eq!(
        states,
        [
            (CallState::Calling, None),
            (CallState::Confirmed, Some(200))
        ],
        "the 407 never reaches the call"
    );
    assert!(auth_failures(&evs).is_empty());
    call
}

#[test]
fn an_invite_challenged_407_is_acked_and_sent_again_with_credentials() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    challenged_call(&mut sim, ua, peer);
}

#[test]
fn later_requests_answer_the_cached_challenge_with_nc_counting_up() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let call = challenged_call(&mut sim, ua, peer);
    // the BYE carries the cached answer pre-emptively (nc 2)
    sim.with_endpoint(ua, |ep, now| ep.hang_up(now, call))
        .unwrap();
    let bye = recv(&mut sim, peer);
    assert_eq!(bye.message.method(), Some(Method::Bye));
    assert_eq!(bye.message.cseq().seq, 3);
    let creds = proxy_creds(&bye.message);
    assert_eq!(creds.len(), 1);
    assert!(good(&creds[0], "BYE", b""));
    assert_eq!(creds[0].nc(), Ok(Some(2)));
    reply(&mut sim, peer, &bye, 200, &[]);
    // a new call: its first INVITE too (nc 3)
    place_call(&mut sim, ua);
    let inv = recv(&mut sim, peer);
    let creds = proxy_creds(&inv.message);
    assert_eq!(creds.len(), 1);
    assert!(good(&creds[0], "INVITE", b""));
    assert_eq!(creds[0].nc(), Ok(Some(3)));
    assert_eq!(inv.message.cseq().seq, 1);
}

/// A call the proxy accepts without a challenge.
fn plain_call(sim: &mut Sim, ua: NodeId, peer: NodeId) -> CallId {
    let call = place_call(sim, ua);
    let inv = recv(sim, peer);
    accept(sim, peer, &inv);
    let ack = recv(sim, peer);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    sim.run_for(Duration::from_millis(100));
    sim.take_events(ua);
    call
}

#[test]
fn a_bye_challenged_401_is_sent_again_with_the_next_cseq() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let call = plain_call(&mut sim, ua, peer);
    sim.with_endpoint(ua, |ep, now| ep.hang_up(now, call))
        .unwrap();
    let bye1 = recv(&mut sim, peer);
    assert_eq!(bye1.message.method(), Some(Method::Bye));
    assert_eq!(bye1.message.cseq().seq, 2);
    assert!(www_creds(&bye1.message).is_empty());
    reply(
        &mut sim,
        peer,
        &bye1,
        401,
        &[("WWW-Authenticate", &challenge("example.test", "b1", false))],
    );
    let bye2 = recv(&mut sim, peer);
    assert_eq!(bye2.message.method(), Some(Method::Bye));
    assert_eq!(bye2.message.cseq().seq, 3);
    assert_eq!(bye2.message.call_id(), bye1.message.call_id());
    assert_eq!(
        bye2.message.to().unwrap().tag(),
        Some("callee"),
        "in the dialog"
    );
    let creds = www_creds(&bye2.message);
    assert_eq!(creds.len(), 1);
    assert!(good(&creds[0], "BYE", b""));
    assert_eq!(creds[0].uri(), Some(&*format!("sip:bob@{REG}:5060")));
    reply(&mut sim, peer, &bye2, 200, &[]);
    sim.run_for(Duration::from_secs(40));
    let byes = sim
        .log()
        .iter()
        .filter(|e| e.first_line.starts_with("BYE "))
        .count();
    assert_eq!(byes, 2, "one BYE answered once");
}

#[test]
fn a_reinvite_challenged_is_sent_again_and_the_dialog_cseq_follows() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let call = plain_call(&mut sim, ua, peer);
    sim.with_endpoint(ua, |ep, now| {
        ep.refresh(now, call, false, Some(sdp("hold")))
    })
    .unwrap();
    let re1 = recv(&mut sim, peer);
    assert_eq!(re1.message.method(), Some(Method::Invite));
    assert_eq!(re1.message.cseq().seq, 2);
    challenge_407(&mut sim, peer, &re1, "r1");
    let ack = recv(&mut sim, peer);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(ack.message.cseq().seq, 2);
    let re2 = recv(&mut sim, peer);
    assert_eq!(re2.message.method(), Some(Method::Invite));
    assert_eq!(re2.message.cseq().seq, 3);
    assert_eq!(re2.message.to().unwrap().tag(), Some("callee"));
    assert_eq!(re2.message.body(), &sdp("hold"));
    let creds = proxy_creds(&re2.message);
    assert_eq!(creds.len(), 1);
    assert!(good(&creds[0], "INVITE", b""));
    accept(&mut sim, peer, &re2);
    let ack2 = recv(&mut sim, peer);
    assert_eq!(ack2.message.method(), Some(Method::Ack));
    assert_eq!(ack2.message.cseq().seq, 3);
    sim.run_for(Duration::from_millis(100));
    let (states, evs) = call_states(&mut sim, ua);
    assert!(states.is_empty(), "the call stays up: {states:?}");
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Call(CallEvent::Answer { call: c, .. }) if *c == call)),
        "the refresh's answer reaches the call"
    );
    // the dialog's CSeq went on from the re-sent re-INVITE
    sim.with_endpoint(ua, |ep, now| ep.hang_up(now, call))
        .unwrap();
    let bye = recv(&mut sim, peer);
    assert_eq!(bye.message.method(), Some(Method::Bye));
    assert_eq!(bye.message.cseq().seq, 4);
}

#[test]
fn several_challenges_at_once_and_a_chain_of_proxies_are_all_answered() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    place_call(&mut sim, ua);
    let inv1 = recv(&mut sim, peer);
    // two proxies' challenges in one 407
    let resp = MessageBuilder::response_to(&inv1.message, 407, "X", Some("p"))
        .header("Proxy-Authenticate", &challenge("a.test", "na", false))
        .header("Proxy-Authenticate", &challenge("b.test", "nb", false))
        .build()
        .unwrap();
    sim.peer_reply(peer, &inv1, resp.to_bytes());
    assert_eq!(recv(&mut sim, peer).message.method(), Some(Method::Ack));
    let inv2 = recv(&mut sim, peer);
    let creds = proxy_creds(&inv2.message);
    let mut realms: Vec<&str> = creds.iter().map(|c| c.realm().unwrap()).collect();
    realms.sort();
    assert_eq!(realms, ["a.test", "b.test"]);
    assert!(creds.iter().all(|c| good(c, "INVITE", b"")));
    // a third proxy further on challenges too (401): all three answered
    reply(
        &mut sim,
        peer,
        &inv2,
        401,
        &[("WWW-Authenticate", &challenge("c.test", "nc", false))],
    );
    assert_eq!(recv(&mut sim, peer).message.method(), Some(Method::Ack));
    let inv3 = recv(&mut sim, peer);
    assert_eq!(inv3.message.cseq().seq, 3);
    let p = proxy_creds(&inv3.message);
    let w = www_creds(&inv3.message);
    assert_eq!(p.len(), 2);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].realm(), Some("c.test"));
    assert!(p.iter().chain(w.iter()).all(|c| good(c, "INVITE", b"")));
    // the earlier realms' nonces are used a second time
    assert!(p.iter().all(|c| c.nc() == Ok(Some(2))));
    accept(&mut sim, peer, &inv3);
    sim.run_for(Duration::from_millis(100));
    let (states, _) = call_states(&mut sim, ua);
    assert_eq!(states.last(), Some(&(CallState::Confirmed, Some(200))));
}

#[test]
fn a_stale_challenge_is_answered_again_without_failing() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    place_call(&mut sim, ua);
    let inv1 = recv(&mut sim, peer);
    challenge_407(&mut sim, peer, &inv1, "s1");
    recv(&mut sim, peer); // ACK
    let inv2 = recv(&mut sim, peer);
    assert_eq!(proxy_creds(&inv2.message)[0].nonce(), Some("s1"));
    // the same realm again, but stale: a new nonce, not a wrong password
    reply(
        &mut sim,
        peer,
        &inv2,
        407,
        &[("Proxy-Authenticate", &challenge("example.test", "s2", true))],
    );
    recv(&mut sim, peer); // ACK
    let inv3 = recv(&mut sim, peer);
    assert_eq!(inv3.message.cseq().seq, 3);
    let creds = proxy_creds(&inv3.message);
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].nonce(), Some("s2"));
    assert_eq!(creds[0].nc(), Ok(Some(1)));
    assert!(good(&creds[0], "INVITE", b""));
    accept(&mut sim, peer, &inv3);
    sim.run_for(Duration::from_millis(100));
    let (states, evs) = call_states(&mut sim, ua);
    assert_eq!(states.last(), Some(&(CallState::Confirmed, Some(200))));
    assert!(auth_failures(&evs).is_empty());
}

#[test]
fn a_wrong_password_ends_the_call_once_with_one_report_and_no_loop() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    place_call(&mut sim, ua);
    let inv1 = recv(&mut sim, peer);
    challenge_407(&mut sim, peer, &inv1, "w1");
    recv(&mut sim, peer); // ACK
    let inv2 = recv(&mut sim, peer);
    assert_eq!(proxy_creds(&inv2.message).len(), 1);
    // challenged again for the realm just answered, not stale
    challenge_407(&mut sim, peer, &inv2, "w2");
    let ack = recv(&mut sim, peer);
    assert_eq!(ack.message.method(), Some(Method::Ack));
    assert_eq!(ack.message.cseq().seq, 2);
    // nothing more is sent: no third INVITE, however long we wait
    assert!(sim
        .run_until_peer_receives(peer, Duration::from_secs(120))
        .is_none());
    let invites = sim
        .log()
        .iter()
        .filter(|e| e.first_line.starts_with("INVITE "))
        .count();
    assert_eq!(invites, 2);
    let (states, evs) = call_states(&mut sim, ua);
    assert_eq!(
        states,
        [
            (CallState::Calling, None),
            (CallState::Disconnected, Some(407))
        ]
    );
    assert_eq!(
        auth_failures(&evs),
        [("example.test".to_owned(), "INVITE".to_owned())],
        "reported once"
    );
}

#[test]
fn an_application_request_challenged_is_answered_and_only_its_final_answer_reported() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let req = MessageBuilder::request(Method::Options, "sip:bob@example.test")
        .header("From", "<sip:alice@example.test>;tag=o1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "opt1@test")
        .header("CSeq", "7 OPTIONS");
    let id = sim
        .with_endpoint(ua, |ep, now| ep.send_request(now, req, target()))
        .unwrap();
    let o1 = recv(&mut sim, peer);
    challenge_407(&mut sim, peer, &o1, "o1");
    let o2 = recv(&mut sim, peer);
    assert_eq!(o2.message.method(), Some(Method::Options));
    assert_eq!(o2.message.cseq().seq, 8);
    assert!(good(&proxy_creds(&o2.message)[0], "OPTIONS", b""));
    reply(&mut sim, peer, &o2, 200, &[]);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        final_codes(&mut sim, ua, id),
        [200],
        "the 407 is not the application's"
    );
}

#[test]
fn the_service_route_is_the_route_of_a_later_invite() {
    let sr = "<sip:orig@192.0.2.20;lr>";
    let (mut sim, ua, peer) = registered(|_| {}, Some(sr));
    place_call(&mut sim, ua);
    let inv = recv(&mut sim, peer);
    let routes: Vec<&str> = inv.message.header_values(HeaderName::Route).collect();
    assert_eq!(routes, [sr]);
    // a call sent straight to another user agent takes no route set
    let inv = call_carol_directly(&mut sim, ua);
    assert_eq!(inv.message.header(HeaderName::Route), None);
}

#[test]
fn the_outbound_proxy_then_the_service_route_lead_an_invite() {
    let sr = "<sip:orig@192.0.2.20;lr>, <sip:scscf.example.test;lr>";
    let (mut sim, ua, peer) = registered(
        |cfg| cfg.outbound_proxy = Some(format!("sip:{REG};lr")),
        Some(sr),
    );
    place_call(&mut sim, ua);
    let inv = recv(&mut sim, peer);
    let routes: Vec<String> = inv
        .message
        .header_values(HeaderName::Route)
        .flat_map(siproam_sip::split_list)
        .map(|r| r.trim().to_owned())
        .collect();
    assert_eq!(
        routes,
        [
            format!("<sip:{REG};lr>"),
            "<sip:orig@192.0.2.20;lr>".to_owned(),
            "<sip:scscf.example.test;lr>".to_owned()
        ]
    );
    // an in-dialog request follows the dialog's route set instead
    accept(&mut sim, peer, &inv);
    let ack = recv(&mut sim, peer);
    assert_eq!(ack.message.header(HeaderName::Route), None);
}

#[test]
fn a_challenge_to_an_invite_hung_up_meanwhile_is_not_answered() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let call = place_call(&mut sim, ua);
    let inv1 = recv(&mut sim, peer);
    reply(&mut sim, peer, &inv1, 100, &[]);
    sim.run_for(Duration::from_millis(50));
    sim.with_endpoint(ua, |ep, now| ep.hang_up(now, call))
        .unwrap();
    let cancel = recv(&mut sim, peer);
    assert_eq!(cancel.message.method(), Some(Method::Cancel));
    // the proxy's 407 crosses the CANCEL
    challenge_407(&mut sim, peer, &inv1, "c1");
    reply(&mut sim, peer, &cancel, 200, &[]);
    sim.run_for(Duration::from_secs(40));
    assert_eq!(invites_sent(&sim), 1, "a hung-up call is not sent again");
    let (states, _) = call_states(&mut sim, ua);
    assert_eq!(states.last(), Some(&(CallState::Disconnected, Some(407))));
}

#[test]
fn a_challenge_to_an_application_invite_cancelled_meanwhile_is_not_answered() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let req = MessageBuilder::request(Method::Invite, "sip:bob@example.test")
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", "appinv1@test")
        .header("CSeq", "1 INVITE")
        .header("Contact", "<sip:alice@192.0.2.10:5060>");
    let id = sim
        .with_endpoint(ua, |ep, now| ep.send_request(now, req, target()))
        .unwrap();
    let inv1 = recv(&mut sim, peer);
    reply(&mut sim, peer, &inv1, 100, &[]);
    sim.run_for(Duration::from_millis(50));
    sim.with_endpoint(ua, |ep, now| ep.cancel(now, id)).unwrap();
    let cancel = recv(&mut sim, peer);
    assert_eq!(cancel.message.method(), Some(Method::Cancel));
    // the proxy's 407 crosses the CANCEL
    challenge_407(&mut sim, peer, &inv1, "a1");
    reply(&mut sim, peer, &cancel, 200, &[]);
    sim.run_for(Duration::from_secs(40));
    assert_eq!(
        invites_sent(&sim),
        1,
        "a cancelled INVITE is not sent again"
    );
    assert_eq!(
        final_codes(&mut sim, ua, id),
        [407],
        "the application sees its INVITE's final answer"
    );
}

#[test]
fn a_cached_answer_goes_only_to_the_hop_that_challenged() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let call = challenged_call(&mut sim, ua, peer);
    sim.with_endpoint(ua, |ep, now| ep.hang_up(now, call))
        .unwrap();
    let bye = recv(&mut sim, peer);
    reply(&mut sim, peer, &bye, 200, &[]);
    // a call straight to another user agent carries no credentials
    let inv = call_carol_directly(&mut sim, ua);
    assert_eq!(inv.message.method(), Some(Method::Invite));
    assert!(proxy_creds(&inv.message).is_empty());
    assert!(www_creds(&inv.message).is_empty());
}

#[test]
fn an_update_challenged_is_sent_again_with_the_next_cseq() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let call = plain_call(&mut sim, ua, peer);
    sim.with_endpoint(ua, |ep, now| ep.refresh(now, call, true, Some(sdp("upd"))))
        .unwrap();
    let u1 = recv(&mut sim, peer);
    assert_eq!(u1.message.method(), Some(Method::Update));
    assert_eq!(u1.message.cseq().seq, 2);
    challenge_407(&mut sim, peer, &u1, "u1");
    let u2 = recv(&mut sim, peer);
    assert_eq!(u2.message.method(), Some(Method::Update));
    assert_eq!(u2.message.cseq().seq, 3);
    assert!(good(&proxy_creds(&u2.message)[0], "UPDATE", b""));
    let resp = MessageBuilder::response_to(&u2.message, 200, "OK", None)
        .header("Contact", &format!("<sip:bob@{REG}:5060>"))
        .body("application/sdp", sdp("answer2"))
        .build()
        .unwrap();
    sim.peer_reply(peer, &u2, resp.to_bytes());
    sim.run_for(Duration::from_millis(100));
    let (_, evs) = call_states(&mut sim, ua);
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::Call(CallEvent::Answer { call: c, .. }) if *c == call)));
}

/// A SUBSCRIBE challenged is sent again with credentials and the next
/// CSeq of its dialog: the refresh after it goes on counting from there
/// (it reused the answered CSeq before, which the notifier refuses as
/// old).
#[test]
fn a_subscribe_challenged_is_answered_and_its_refresh_counts_on() {
    let (mut sim, ua, peer) = registered(|_| {}, None);
    let spec = siproam_core::SubscribeSpec {
        uri: "sip:bob@example.test".into(),
        from: "sip:alice@example.test".into(),
        event: "presence".into(),
        expires: 600,
        target: target(),
        contact_user: "alice".into(),
    };
    sim.with_endpoint(ua, |ep, now| ep.subscribe(now, spec))
        .unwrap();
    let s1 = recv(&mut sim, peer);
    assert_eq!(s1.message.method(), Some(Method::Subscribe));
    challenge_407(&mut sim, peer, &s1, "s1");
    let s2 = recv(&mut sim, peer);
    assert_eq!(s2.message.method(), Some(Method::Subscribe));
    assert_eq!(s2.message.cseq().seq, s1.message.cseq().seq + 1);
    assert!(good(&proxy_creds(&s2.message)[0], "SUBSCRIBE", b""));
    let resp = MessageBuilder::response_to(&s2.message, 200, "OK", Some("callee"))
        .header("Contact", &format!("<sip:bob@{REG}:5060>"))
        .header("Expires", "600")
        .build()
        .unwrap();
    sim.peer_reply(peer, &s2, resp.to_bytes());
    // the notifier's first NOTIFY (without one the subscription would
    // end after 64·T1)
    let n = MessageBuilder::request(Method::Notify, &format!("sip:alice@{}", support::UA))
        .header("Via", &format!("SIP/2.0/UDP {REG}:5060;branch=z9hG4bKsn1"))
        .header("From", "<sip:bob@example.test>;tag=callee")
        .header(
            "To",
            &format!(
                "<sip:alice@example.test>;tag={}",
                s2.message.from().unwrap().tag().unwrap()
            ),
        )
        .header("Call-ID", s2.message.call_id())
        .header("CSeq", "1 NOTIFY")
        .header("Event", "presence")
        .header("Subscription-State", "active;expires=600")
        .header("Contact", &format!("<sip:bob@{REG}:5060>"))
        .header("Max-Forwards", "70")
        .build()
        .unwrap();
    sim.peer_send(
        peer,
        SocketAddr::new(ip(REG), 5060),
        SocketAddr::new(ip(support::UA), 5060),
        Transport::Udp,
        n.to_bytes(),
    );
    let ok200 = recv(&mut sim, peer);
    assert_eq!(ok200.message.status(), Some(200));
    // the refresh, in the dialog, at 85 % of 600 s
    let s3 = sim
        .run_until_peer_receives(peer, Duration::from_secs(600))
        .expect("a refresh");
    assert_eq!(s3.message.method(), Some(Method::Subscribe));
    assert!(
        s3.message.cseq().seq > s2.message.cseq().seq,
        "{} after {}",
        s3.message.cseq().seq,
        s2.message.cseq().seq
    );
}
