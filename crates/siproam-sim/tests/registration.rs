//! The registration client in the simulator: challenge, refresh, 423,
//! 503, an unreachable server, Contact rewrite on a 401, unregister, and
//! a dead registration flow; RFC 5626 outbound (`+sip.instance`,
//! `reg-id`, `Require: outbound`, `;ob`, the 439 fallback).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use siproam_core::{
    AccountConfig, AccountId, Config, RegistrationFailure, RegistrationState, Target, Transport,
};
mod support;

use siproam_sim::{Link, Received, Sim};
use siproam_sip::digest::{verify, Secret, ServerChallenge};
use siproam_sip::{Contact, HeaderName, MessageBuilder, Method};
use support::{answer, ip, ok, recv, registrations, setup, states, REG, UA};

fn challenge(nonce: &str) -> String {
    ServerChallenge::new("example.test", nonce)
        .to_header_value()
        .unwrap()
}

#[test]
fn digest_challenge_then_registered_then_refreshed() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    assert_eq!(r1.message.method(), Some(Method::Register));
    assert_eq!(r1.message.expires(), Some(Ok(300)));
    assert!(r1.message.authorization().next().is_none());
    answer(
        &mut sim,
        reg,
        &r1,
        401,
        &[("WWW-Authenticate", &challenge("n1"))],
    );
    let r2 = recv(&mut sim, reg);
    let creds = r2.message.authorization().next().unwrap().unwrap();
    assert!(
        verify(&creds, "REGISTER", Secret::Password("alicepw"), b"").is_ok(),
        "a correct digest"
    );
    assert_eq!(creds.uri(), Some("sip:example.test"));
    assert_eq!(r2.message.call_id(), r1.message.call_id(), "same Call-ID");
    assert_eq!(
        r2.message.cseq().seq,
        r1.message.cseq().seq + 1,
        "CSeq counts up"
    );
    ok(&mut sim, reg, &r2, 120);
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        states(&evs),
        [
            RegistrationState::Registering,
            RegistrationState::Registered
        ]
    );
    assert_eq!(evs[1].1.expires, Some(120));
    assert_eq!(evs[1].1.code, Some(200));
    assert_eq!(evs[1].1.account, acc);
    assert_eq!(evs[1].1.contact, "sip:alice@192.0.2.10:5060");
    // refresh 10 s before expiry: the nonce is reused with nc=2
    let t_ok = sim.now();
    let r3 = recv(&mut sim, reg);
    let waited = r3.at - t_ok;
    assert!(
        waited >= Duration::from_secs(109) && waited <= Duration::from_secs(110),
        "{waited:?}"
    );
    let c3 = r3.message.authorization().next().unwrap().unwrap();
    assert_eq!(c3.nc(), Ok(Some(2)));
    assert!(verify(&c3, "REGISTER", Secret::Password("alicepw"), b"").is_ok());
    ok(&mut sim, reg, &r3, 120);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        states(&registrations(&mut sim, ua)),
        [RegistrationState::Registered]
    );
}

#[test]
fn proxy_challenge_407() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    answer(
        &mut sim,
        reg,
        &r1,
        407,
        &[("Proxy-Authenticate", &challenge("p1"))],
    );
    let r2 = recv(&mut sim, reg);
    assert!(r2.message.authorization().next().is_none());
    let creds = r2.message.proxy_authorization().next().unwrap().unwrap();
    assert!(verify(&creds, "REGISTER", Secret::Password("alicepw"), b"").is_ok());
}

#[test]
fn wrong_password_fails_and_backs_off() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    answer(
        &mut sim,
        reg,
        &r1,
        401,
        &[("WWW-Authenticate", &challenge("n1"))],
    );
    let r2 = recv(&mut sim, reg);
    answer(
        &mut sim,
        reg,
        &r2,
        401,
        &[("WWW-Authenticate", &challenge("n2"))],
    );
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    let failed = evs.last().unwrap();
    assert_eq!(failed.1.state, RegistrationState::Failed);
    assert_eq!(
        failed.1.failure,
        Some(RegistrationFailure::AuthenticationFailed)
    );
    assert_eq!(failed.1.code, Some(401));
    // no third REGISTER until the back-off: 50–100 % of 30 s
    let retry_in = failed.1.retry_at.unwrap() - sim.now();
    assert!(
        retry_in >= Duration::from_secs(14) && retry_in <= Duration::from_secs(30),
        "{retry_in:?}"
    );
    assert!(sim
        .run_until_peer_receives(reg, Duration::from_secs(14))
        .is_none());
    let r3 = recv(&mut sim, reg);
    assert!(
        r3.message.authorization().next().is_none(),
        "a retry starts afresh"
    );
}

#[test]
fn interval_too_brief_423_raises_expires() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    answer(&mut sim, reg, &r1, 423, &[("Min-Expires", "1800")]);
    let r2 = recv(&mut sim, reg);
    assert_eq!(r2.message.expires(), Some(Ok(1800)));
    let Some(Ok(Contact::Addr(c))) = r2.message.contacts().next() else {
        panic!()
    };
    assert_eq!(c.expires(), Some(1800));
    ok(&mut sim, reg, &r2, 1800);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        registrations(&mut sim, ua)
            .last()
            .map(|e| (e.1.state, e.1.expires)),
        Some((RegistrationState::Registered, Some(1800)))
    );
}

#[test]
fn service_unavailable_503_honours_retry_after() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    answer(&mut sim, reg, &r1, 503, &[("Retry-After", "120")]);
    sim.run_for(Duration::from_millis(50));
    let t_fail = sim.now();
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        evs.last().map(|e| (e.1.state, e.1.code)),
        Some((RegistrationState::Failed, Some(503)))
    );
    let r2 = recv(&mut sim, reg);
    let waited = r2.at - t_fail;
    assert!(
        waited >= Duration::from_secs(119) && waited <= Duration::from_secs(121),
        "{waited:?}"
    );
    ok(&mut sim, reg, &r2, 300);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        registrations(&mut sim, ua).last().map(|e| e.1.state),
        Some(RegistrationState::Registered)
    );
}

#[test]
fn unreachable_registrar_times_out_and_backs_off_exponentially() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    sim.set_link(
        ua,
        reg,
        Link {
            up: false,
            ..Link::default()
        },
    );
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    sim.run_for(Duration::from_secs(33));
    let evs = registrations(&mut sim, ua);
    let failed = evs.last().unwrap();
    assert_eq!(failed.1.state, RegistrationState::Failed);
    assert_eq!(failed.1.failure, Some(RegistrationFailure::Timeout));
    assert_eq!(failed.1.code, Some(408));
    assert_eq!(failed.0, Duration::from_secs(32), "Timer F");
    let first_wait = failed.1.retry_at.unwrap() - (sim.now() - sim.elapsed() + failed.0);
    assert!(
        first_wait >= Duration::from_secs(15) && first_wait <= Duration::from_secs(30),
        "{first_wait:?}"
    );
    // the second failure waits 30–60 s
    sim.run_for(Duration::from_secs(100));
    let evs = registrations(&mut sim, ua);
    let second = evs
        .iter()
        .find(|e| e.1.state == RegistrationState::Failed)
        .unwrap();
    let second_wait = second.1.retry_at.unwrap() - (sim.now() - sim.elapsed() + second.0);
    assert!(
        second_wait >= Duration::from_secs(30) && second_wait <= Duration::from_secs(60),
        "{second_wait:?}"
    );
    // the registrar comes back: the next retry succeeds and the back-off resets
    sim.set_link(ua, reg, Link::default());
    while sim.peer_recv(reg).is_some() {}
    let r = recv(&mut sim, reg);
    ok(&mut sim, reg, &r, 300);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        registrations(&mut sim, ua).last().map(|e| e.1.state),
        Some(RegistrationState::Registered)
    );
}

#[test]
fn contact_rewritten_from_received_rport_in_a_401() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    // the registrar saw us behind a NAT
    let mut resp = MessageBuilder::response_to(&r1.message, 401, "Unauthorized", Some("reg1"))
        .header("WWW-Authenticate", &challenge("n1"))
        .build()
        .unwrap();
    resp.set_top_via_param("received", Some(Some("198.51.100.77")))
        .unwrap();
    resp.set_top_via_param("rport", Some(Some("40123")))
        .unwrap();
    sim.peer_reply(reg, &r1, resp.to_bytes());
    let r2 = recv(&mut sim, reg);
    let Some(Ok(Contact::Addr(c))) = r2.message.contacts().next() else {
        panic!()
    };
    assert_eq!(c.uri().as_str(), "sip:alice@198.51.100.77:40123");
    assert!(r2.message.authorization().next().is_some());
    ok(&mut sim, reg, &r2, 300);
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        evs.last().map(|e| (e.1.state, e.1.contact.clone())),
        Some((
            RegistrationState::Registered,
            "sip:alice@198.51.100.77:40123".to_owned()
        ))
    );
}

#[test]
fn contact_rewrite_after_a_2xx_registers_the_new_address() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    let contact = r1.message.header(HeaderName::Contact).unwrap().to_owned();
    let mut resp = MessageBuilder::response_to(&r1.message, 200, "OK", Some("reg1"))
        .header("Contact", &contact)
        .build()
        .unwrap();
    resp.set_top_via_param("received", Some(Some("198.51.100.77")))
        .unwrap();
    resp.set_top_via_param("rport", Some(Some("40123")))
        .unwrap();
    sim.peer_reply(reg, &r1, resp.to_bytes());
    let r2 = recv(&mut sim, reg);
    assert!(r2
        .message
        .header(HeaderName::Contact)
        .unwrap()
        .contains("198.51.100.77:40123"));
    ok(&mut sim, reg, &r2, 300);
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        states(&evs),
        [
            RegistrationState::Registering,
            RegistrationState::Registered
        ]
    );
}

#[test]
fn no_rewrite_to_a_private_address_between_public_ones() {
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip("203.0.113.10")], Config::default());
    let reg = sim.add_peer("registrar", &[ip("203.0.113.20")]);
    let target = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip("203.0.113.20"), 5060),
        local: None,
        server_name: None,
    };
    let cfg = AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    let contact = r1.message.header(HeaderName::Contact).unwrap().to_owned();
    let mut resp = MessageBuilder::response_to(&r1.message, 200, "OK", Some("reg1"))
        .header("Contact", &contact)
        .build()
        .unwrap();
    resp.set_top_via_param("received", Some(Some("10.1.2.3")))
        .unwrap();
    sim.peer_reply(reg, &r1, resp.to_bytes());
    sim.run_for(Duration::from_millis(100));
    assert!(
        sim.peer_recv(reg).is_none(),
        "no re-REGISTER towards a private address"
    );
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        evs.last().map(|e| e.1.contact.clone()),
        Some("sip:alice@203.0.113.10:5060".to_owned())
    );
}

#[test]
fn unregister_sends_expires_zero() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    let acc: AccountId = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    sim.with_endpoint(ua, |ep, now| ep.unregister(now, acc))
        .unwrap();
    let r2 = recv(&mut sim, reg);
    assert_eq!(r2.message.expires(), Some(Ok(0)));
    let Some(Ok(Contact::Addr(c))) = r2.message.contacts().next() else {
        panic!()
    };
    assert_eq!(c.expires(), Some(0));
    answer(&mut sim, reg, &r2, 200, &[]);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        registrations(&mut sim, ua).last().map(|e| e.1.state),
        Some(RegistrationState::Unregistered)
    );
    assert_eq!(sim.endpoint(ua).account_count(), 0);
    sim.run_for(Duration::from_secs(600));
    assert!(
        sim.peer_recv(reg).is_none(),
        "no refresh after unregistering"
    );
}

/// Regression (issue 10, finding 7): a de-REGISTER challenged with a
/// stale nonce (the agent quit long after its last challenge) was never
/// retried, so the binding stayed on the registrar. It is answered once
/// with the new nonce; a registrar that keeps refusing ends it.
#[test]
fn a_challenged_unregister_is_answered_once() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    let acc: AccountId = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    sim.with_endpoint(ua, |ep, now| ep.unregister(now, acc))
        .unwrap();
    let r2 = recv(&mut sim, reg);
    assert_eq!(r2.message.expires(), Some(Ok(0)));
    let mut ch = ServerChallenge::new("example.test", "nonce-after-a-long-time");
    ch.stale = true;
    let value = ch.to_header_value().unwrap();
    answer(&mut sim, reg, &r2, 401, &[("WWW-Authenticate", &value)]);
    // the de-REGISTER again, now with credentials for the new nonce
    let r3 = recv(&mut sim, reg);
    assert_eq!(r3.message.expires(), Some(Ok(0)));
    assert!(r3.message.cseq().seq > r2.message.cseq().seq);
    let creds = r3
        .message
        .authorization()
        .next()
        .expect("credentials")
        .unwrap();
    assert_eq!(creds.nonce(), Some("nonce-after-a-long-time"));
    assert!(verify(&creds, "REGISTER", Secret::Password("alicepw"), b"").is_ok());
    // refused again with the same nonce: no loop, the account ends
    answer(&mut sim, reg, &r3, 401, &[("WWW-Authenticate", &value)]);
    sim.run_for(Duration::from_secs(5));
    assert!(sim.peer_recv(reg).is_none(), "no third de-REGISTER");
    assert_eq!(sim.endpoint(ua).account_count(), 0);
    assert_eq!(
        registrations(&mut sim, ua).last().map(|e| e.1.state),
        Some(RegistrationState::Unregistered)
    );
}

#[test]
fn tcp_registration_reregisters_when_its_flow_dies() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Tcp);
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    assert_eq!(r1.transport, Transport::Tcp);
    assert!(r1
        .message
        .header(HeaderName::Contact)
        .unwrap()
        .contains(";transport=tcp"));
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    let first_flow = sim.endpoint(ua).account_flow(acc).unwrap();
    sim.peer_close(r1.conn.unwrap());
    let r2 = recv(&mut sim, reg);
    assert_ne!(r2.conn, r1.conn, "a new connection");
    ok(&mut sim, reg, &r2, 300);
    sim.run_for(Duration::from_millis(100));
    assert_ne!(sim.endpoint(ua).account_flow(acc), Some(first_flow));
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        evs.last().map(|e| e.1.state),
        Some(RegistrationState::Registered)
    );
}

#[test]
fn several_accounts_on_one_endpoint() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    let mut ids = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut c = cfg.clone();
        c.aor = format!("sip:{user}@example.test");
        ids.push(sim.with_endpoint(ua, |ep, now| ep.register(now, c)));
    }
    let mut call_ids = std::collections::HashSet::new();
    let mut aors = std::collections::HashSet::new();
    for _ in 0..3 {
        let r = recv(&mut sim, reg);
        call_ids.insert(r.message.call_id().to_owned());
        aors.insert(r.message.to().unwrap().uri().to_string());
        ok(&mut sim, reg, &r, 300);
    }
    assert_eq!(call_ids.len(), 3, "one Call-ID per account");
    assert_eq!(aors.len(), 3);
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    let registered: Vec<AccountId> = evs
        .iter()
        .filter(|e| e.1.state == RegistrationState::Registered)
        .map(|e| e.1.account)
        .collect();
    assert_eq!(registered.len(), 3);
    for id in ids {
        assert!(registered.contains(&id));
    }
}

#[test]
fn a_moved_account_registers_its_new_contact_at_once_from_the_new_address() {
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA), ip("198.51.100.10")], Config::default());
    let reg = sim.add_peer("registrar", &[ip(REG)]);
    let target = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(REG), 5060),
        local: Some(SocketAddr::new(ip(UA), 5060)),
        server_name: None,
    };
    let mut cfg = AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    cfg.instance_id = Some("urn:uuid:00000000-0000-1000-8000-000000000001".into());
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    registrations(&mut sim, ua);
    let new = SocketAddr::new(ip("198.51.100.10"), 5060);
    sim.with_endpoint(ua, |ep, now| ep.move_account(now, acc, new))
        .unwrap();
    let r2 = recv(&mut sim, reg);
    assert_eq!(r2.from.ip(), new.ip(), "sent from the new address");
    assert_eq!(
        r2.message.call_id(),
        r1.message.call_id(),
        "same registration (Call-ID)"
    );
    assert!(r2.message.cseq().seq > r1.message.cseq().seq);
    let Some(Ok(Contact::Addr(c))) = r2.message.contacts().next() else {
        panic!()
    };
    assert_eq!(c.uri().as_str(), "sip:alice@198.51.100.10:5060");
    assert_eq!(
        c.sip_instance(),
        Some("urn:uuid:00000000-0000-1000-8000-000000000001")
    );
    assert!(r2
        .message
        .top_via()
        .unwrap()
        .host_str()
        .starts_with("198.51.100.10"));
    ok(&mut sim, reg, &r2, 300);
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        evs.last().map(|e| (e.1.state, e.1.contact.clone())),
        Some((
            RegistrationState::Registered,
            "sip:alice@198.51.100.10:5060".to_owned()
        ))
    );
}

/// Two address changes in a row, the second before the first REGISTER is
/// answered: each change sends a REGISTER with its own Contact, the
/// answer to the stale one (even a failure) does not change the outcome,
/// no de-REGISTER names the newest Contact, and the account ends
/// registered at the newest address.
#[test]
fn two_changes_in_a_row_each_update_the_contact_and_the_last_wins() {
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint(
        "ua",
        &[ip(UA), ip("198.51.100.10"), ip("203.0.113.10")],
        Config::default(),
    );
    let reg = sim.add_peer("registrar", &[ip(REG)]);
    let target = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(REG), 5060),
        local: Some(SocketAddr::new(ip(UA), 5060)),
        server_name: None,
    };
    let mut cfg = AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    cfg.instance_id = Some("urn:uuid:00000000-0000-1000-8000-000000000001".into());
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    registrations(&mut sim, ua);
    let b = SocketAddr::new(ip("198.51.100.10"), 5060);
    let c = SocketAddr::new(ip("203.0.113.10"), 5060);
    sim.with_endpoint(ua, |ep, now| ep.move_account(now, acc, b))
        .unwrap();
    let r2 = recv(&mut sim, reg);
    // the second change comes before the registrar answered the first
    sim.with_endpoint(ua, |ep, now| ep.move_account(now, acc, c))
        .unwrap();
    let r3 = recv(&mut sim, reg);
    let contact_of = |r: &Received| match r.message.contacts().next() {
        Some(Ok(Contact::Addr(a))) => a.uri().as_str().to_owned(),
        _ => panic!("no Contact"),
    };
    assert_eq!(contact_of(&r2), "sip:alice@198.51.100.10:5060");
    assert_eq!(contact_of(&r3), "sip:alice@203.0.113.10:5060");
    assert_eq!(r3.from.ip(), c.ip());
    assert_eq!(r3.message.call_id(), r1.message.call_id());
    assert!(r3.message.cseq().seq > r2.message.cseq().seq);
    // the registrar applies the newest first; the stale one then fails
    // its CSeq check (RFC 3261 §10.3 step 7)
    ok(&mut sim, reg, &r3, 300);
    answer(&mut sim, reg, &r2, 500, &[]);
    sim.run_for(Duration::from_secs(5));
    // nothing else was sent: no retry of the stale REGISTER, no de-REGISTER
    assert!(sim
        .run_until_peer_receives(reg, Duration::from_secs(60))
        .is_none_or(|r| !r.message.header(HeaderName::Contact).is_some_and(|h| {
            h.contains("203.0.113.10") && (h.contains("expires=0") || h == "*")
        }) && r.message.header(HeaderName::Expires) != Some("0")));
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        evs.last().map(|e| (e.1.state, e.1.contact.clone())),
        Some((
            RegistrationState::Registered,
            "sip:alice@203.0.113.10:5060".to_owned()
        )),
        "{evs:?}"
    );
}

/// The REGISTER pending at a change is never answered (it went out on the
/// old, dead path): its transaction timeout must not fail the account
/// registered at the new address, and it is not retransmitted.
#[test]
fn a_register_pending_at_a_change_that_times_out_does_not_fail_the_account() {
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA), ip("198.51.100.10")], Config::default());
    let reg = sim.add_peer("registrar", &[ip(REG)]);
    let target = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(REG), 5060),
        local: Some(SocketAddr::new(ip(UA), 5060)),
        server_name: None,
    };
    let cfg = AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    let new = SocketAddr::new(ip("198.51.100.10"), 5060);
    sim.with_endpoint(ua, |ep, now| ep.move_account(now, acc, new))
        .unwrap();
    let r2 = recv(&mut sim, reg);
    assert!(r2.message.cseq().seq > r1.message.cseq().seq);
    ok(&mut sim, reg, &r2, 3600);
    // well past Timer F (64·T1 = 32 s): only the new REGISTER counts
    while let Some(r) = sim.run_until_peer_receives(reg, Duration::from_secs(60)) {
        assert_ne!(
            r.message.cseq().seq,
            r1.message.cseq().seq,
            "the abandoned REGISTER was retransmitted"
        );
    }
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        evs.last().map(|e| (e.1.state, e.1.contact.clone())),
        Some((
            RegistrationState::Registered,
            "sip:alice@198.51.100.10:5060".to_owned()
        )),
        "{evs:?}"
    );
}

/// Keeping the registration flow at a change (PJSIP's `shutdown_tp` off):
/// the REGISTER with the new Contact goes over the same connection.
#[test]
fn a_move_that_keeps_the_flow_registers_the_new_contact_over_the_same_connection() {
    let (mut sim, ua, reg, mut cfg) = setup(Transport::Tcp);
    cfg.password = None;
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    let flow = sim.endpoint(ua).account_flow(acc);
    // a second address comes up; the first one stays
    sim.set_addresses(ua, &[ip(UA), ip("198.51.100.10")]);
    let new = SocketAddr::new(ip("198.51.100.10"), 5060);
    sim.with_endpoint(ua, |ep, now| ep.move_account_with(now, acc, new, true))
        .unwrap();
    let r2 = recv(&mut sim, reg);
    assert_eq!(r2.conn, r1.conn, "the same connection");
    assert_eq!(sim.endpoint(ua).account_flow(acc), flow);
    let contact = r2.message.header(HeaderName::Contact).unwrap();
    assert!(
        contact.contains("sip:alice@198.51.100.10:5060"),
        "{contact}"
    );
    // and the default drops it: a new connection
    sim.with_endpoint(ua, |ep, now| ep.move_account(now, acc, new))
        .unwrap();
    let r3 = recv(&mut sim, reg);
    assert_ne!(r3.conn, r1.conn, "a new connection");
}

/// IPv4 → IPv6: the account moves to the registrar's IPv6 address (its
/// own choice of target, given by the driver from the registrar's
/// addresses) and its IPv6 Contact, over a new flow from the IPv6 address;
/// the REGISTER keeps the Call-ID and instance so it replaces the IPv4
/// binding; nothing more goes to the IPv4 address (no de-REGISTER).
#[test]
fn an_account_switching_family_registers_at_the_registrars_other_address() {
    const UA6: &str = "2001:db8::10";
    const REG6: &str = "2001:db8::20";
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint("ua", &[ip(UA), ip(UA6)], Config::default());
    let reg = sim.add_peer("registrar", &[ip(REG), ip(REG6)]);
    let target = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(REG), 5060),
        local: Some(SocketAddr::new(ip(UA), 5060)),
        server_name: None,
    };
    let mut cfg = AccountConfig::new("sip:alice@example.test", "sip:example.test", target);
    cfg.instance_id = Some("urn:uuid:00000000-0000-1000-8000-000000000001".into());
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    assert_eq!(r1.to.ip(), ip(REG));
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    registrations(&mut sim, ua);

    let contact6 = SocketAddr::new(ip(UA6), 5060);
    let target6 = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(REG6), 5060),
        local: Some(contact6),
        server_name: None,
    };
    sim.with_endpoint(ua, |ep, now| {
        ep.retarget_account(acc, target6)?;
        ep.move_account(now, acc, contact6)
    })
    .unwrap();
    assert_eq!(
        sim.endpoint(ua).account_registrar(acc),
        Some(target6.remote)
    );
    let r2 = recv(&mut sim, reg);
    assert_eq!(
        r2.to, target6.remote,
        "sent to the registrar's IPv6 address"
    );
    assert_eq!(r2.from.ip(), ip(UA6), "from the IPv6 address");
    let contact = r2.message.header(HeaderName::Contact).unwrap();
    assert!(
        contact.starts_with("<sip:alice@[2001:db8::10]:5060>"),
        "{contact}"
    );
    assert!(contact.contains("+sip.instance"), "{contact}");
    let via = r2.message.top_via().unwrap();
    assert_eq!(
        via.host(),
        siproam_sip::Host::V6("2001:db8::10".parse().unwrap())
    );
    assert_eq!(r2.message.call_id(), r1.message.call_id());
    assert!(r2.message.cseq().seq > r1.message.cseq().seq);
    ok(&mut sim, reg, &r2, 300);
    sim.run_for(Duration::from_secs(5));
    let evs = registrations(&mut sim, ua);
    assert_eq!(
        evs.last().map(|e| (e.1.state, e.1.contact.clone())),
        Some((
            RegistrationState::Registered,
            "sip:alice@[2001:db8::10]:5060".to_owned()
        )),
        "{evs:?}"
    );
    // the next message is the refresh, to the IPv6 address again
    let r3 = recv(&mut sim, reg);
    assert_eq!(r3.to, target6.remote);
    assert!(r3
        .message
        .header(HeaderName::Contact)
        .unwrap()
        .contains("[2001:db8::10]"));
}

/// Changing an account's settings sends nothing (the network may be
/// going away: no REGISTER on a dead flow); the next refresh carries them.
/// An explicit refresh goes at once, and is refused while one is pending.
#[test]
fn modifying_an_account_sends_nothing_until_its_next_register() {
    let (mut sim, ua, reg, cfg) = setup(Transport::Udp);
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    sim.with_endpoint(ua, |ep, _| {
        ep.modify_account(acc, |c| {
            c.expires = 1200;
            c.password = Some("newpw".into());
        })
    })
    .unwrap();
    // nothing before the refresh, which comes at the usual time
    let before = sim.elapsed();
    let r2 = recv(&mut sim, reg);
    assert!(
        sim.elapsed() - before > Duration::from_secs(100),
        "a REGISTER went out {:?} after the change",
        sim.elapsed() - before
    );
    assert_eq!(r2.message.header(HeaderName::Expires), Some("1200"));
    ok(&mut sim, reg, &r2, 1200);
    sim.run_for(Duration::from_millis(100));
    // an explicit refresh goes now; a second one while it is pending is refused
    sim.with_endpoint(ua, |ep, now| ep.refresh_registration(now, acc))
        .unwrap();
    assert_eq!(
        sim.with_endpoint(ua, |ep, now| ep.refresh_registration(now, acc)),
        Err(siproam_core::CoreError::InvalidState)
    );
    let r3 = sim
        .run_until_peer_receives(reg, Duration::from_millis(10))
        .expect("the explicit refresh, at once");
    assert!(r3.message.cseq().seq > r2.message.cseq().seq);
    assert_eq!(
        sim.with_endpoint(ua, |ep, _| ep.modify_account(AccountId(99), |_| {})),
        Err(siproam_core::CoreError::NoSuchAccount)
    );
}

// ---- RFC 5626 Outbound, client side: registration, `;ob`, 439 ----

const INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-000000000001";

/// An account asking for outbound (RFC 5626 §4.2) over UDP.
fn outbound_setup() -> (Sim, siproam_sim::NodeId, siproam_sim::NodeId, AccountConfig) {
    let (sim, ua, reg, mut cfg) = setup(Transport::Udp);
    cfg.password = None;
    cfg.instance_id = Some(INSTANCE.into());
    cfg.outbound = true;
    (sim, ua, reg, cfg)
}

/// The REGISTER's Contact: (URI, `+sip.instance`, `reg-id`).
fn register_contact(r: &Received) -> (String, Option<String>, Option<u32>) {
    let Some(Ok(Contact::Addr(c))) = r.message.contacts().next() else {
        panic!("no Contact in {:?}", r.message);
    };
    (
        c.uri().as_str().to_owned(),
        c.sip_instance().map(str::to_owned),
        c.reg_id(),
    )
}

/// A call from `from` to `sip:bob@example.test` through the registrar
/// (as outbound proxy); the INVITE's Contact URI as the registrar sees it.
fn invite_contact(
    sim: &mut Sim,
    ua: siproam_sim::NodeId,
    reg: siproam_sim::NodeId,
    from: &str,
) -> String {
    let spec = siproam_core::InviteSpec {
        uri: "sip:bob@example.test".into(),
        from: from.into(),
        target: Target {
            transport: Transport::Udp,
            remote: SocketAddr::new(ip(REG), 5060),
            local: None,
            server_name: None,
        },
        sdp: None,
        contact_user: "alice".into(),
    };
    sim.with_endpoint(ua, |ep, now| ep.invite(now, spec))
        .unwrap();
    let r = recv(sim, reg);
    assert_eq!(r.message.method(), Some(Method::Invite));
    let Some(Ok(Contact::Addr(c))) = r.message.contacts().next() else {
        panic!("no Contact in the INVITE");
    };
    c.uri().as_str().to_owned()
}

#[test]
fn an_outbound_register_carries_the_instance_a_reg_id_and_supported_outbound_path_gruu() {
    let (mut sim, ua, reg, cfg) = outbound_setup();
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    assert_eq!(
        register_contact(&r1),
        (
            "sip:alice@192.0.2.10:5060".to_owned(),
            Some(INSTANCE.to_owned()),
            Some(1)
        ),
        "reg-id 1 by default; no `ob` in a REGISTER's Contact"
    );
    assert_eq!(
        r1.message.header(HeaderName::Supported),
        Some("outbound, path, gruu")
    );
    // a reg-id of its own is kept
    let (mut sim, ua, reg, mut cfg) = outbound_setup();
    cfg.reg_id = Some(2);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    assert_eq!(register_contact(&recv(&mut sim, reg)).2, Some(2));
    // reg-id is positive (RFC 5626 §4.2.1): 0 is taken as unset
    let (mut sim, ua, reg, mut cfg) = outbound_setup();
    cfg.reg_id = Some(0);
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    assert_eq!(register_contact(&recv(&mut sim, reg)).2, Some(1));
}

#[test]
fn without_outbound_a_register_has_no_reg_id_and_no_supported_outbound() {
    let (mut sim, ua, reg, mut cfg) = outbound_setup();
    cfg.outbound = false;
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    assert_eq!(
        register_contact(&r1),
        (
            "sip:alice@192.0.2.10:5060".to_owned(),
            Some(INSTANCE.to_owned()),
            None
        )
    );
    assert!(!r1.message.has_token(HeaderName::Supported, "outbound"));
}

#[test]
fn a_2xx_requiring_outbound_puts_it_in_force_and_the_accounts_invites_carry_ob() {
    let (mut sim, ua, reg, cfg) = outbound_setup();
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    let contact = r1.message.header(HeaderName::Contact).unwrap().to_owned();
    let base = contact.split(";expires").next().unwrap().to_owned();
    answer(
        &mut sim,
        reg,
        &r1,
        200,
        &[
            ("Contact", &format!("{base};expires=300")),
            ("Require", "outbound"),
        ],
    );
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    let last = &evs.last().unwrap().1;
    assert_eq!(
        (last.state, last.outbound),
        (RegistrationState::Registered, true)
    );
    assert!(sim.with_endpoint(ua, |ep, _| ep.account_outbound(acc)));
    assert_eq!(
        invite_contact(&mut sim, ua, reg, "sip:alice@example.test"),
        "sip:alice@192.0.2.10:5060;ob"
    );
    // a call under another identity is not the account's
    assert_eq!(
        invite_contact(&mut sim, ua, reg, "sip:carol@example.test"),
        "sip:alice@192.0.2.10:5060"
    );
}

#[test]
fn a_2xx_without_require_outbound_leaves_a_normal_client_without_ob() {
    let (mut sim, ua, reg, cfg) = outbound_setup();
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    ok(&mut sim, reg, &r1, 300);
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    let last = &evs.last().unwrap().1;
    assert_eq!(
        (last.state, last.outbound),
        (RegistrationState::Registered, false)
    );
    assert!(!sim.with_endpoint(ua, |ep, _| ep.account_outbound(acc)));
    assert_eq!(
        invite_contact(&mut sim, ua, reg, "sip:alice@example.test"),
        "sip:alice@192.0.2.10:5060"
    );
}

#[test]
fn a_439_retries_at_once_without_reg_id_and_the_account_remembers_it() {
    let (mut sim, ua, reg, cfg) = outbound_setup();
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    assert_eq!(register_contact(&r1).2, Some(1));
    let t439 = sim.now();
    answer(&mut sim, reg, &r1, 439, &[]);
    let r2 = recv(&mut sim, reg);
    assert!(
        r2.at - t439 < Duration::from_secs(1),
        "at once, not after a back-off: {:?}",
        r2.at - t439
    );
    assert_eq!(r2.message.call_id(), r1.message.call_id());
    assert_eq!(
        register_contact(&r2),
        (
            "sip:alice@192.0.2.10:5060".to_owned(),
            Some(INSTANCE.to_owned()),
            None
        ),
        "the instance kept, the reg-id dropped (RFC 5626 §11.6)"
    );
    assert!(!r2.message.has_token(HeaderName::Supported, "outbound"));
    ok(&mut sim, reg, &r2, 120);
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    let seen: Vec<_> = evs
        .iter()
        .map(|(_, e)| (e.state, e.code, e.failure, e.outbound))
        .collect();
    assert_eq!(
        seen,
        [
            (RegistrationState::Registering, None, None, false),
            (
                RegistrationState::Failed,
                Some(439),
                Some(RegistrationFailure::OutboundUnsupported),
                false
            ),
            (RegistrationState::Registering, None, None, false),
            (RegistrationState::Registered, Some(200), None, false),
        ]
    );
    assert!(!sim.with_endpoint(ua, |ep, _| ep.account_outbound(acc)));
    // the refresh does not ask again
    let r3 = recv(&mut sim, reg);
    assert_eq!(register_contact(&r3).2, None);
    assert!(!r3.message.has_token(HeaderName::Supported, "outbound"));
}

#[test]
fn with_the_fallback_off_a_439_fails_the_registration() {
    let (mut sim, ua, reg, mut cfg) = outbound_setup();
    cfg.outbound_fallback = false;
    sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r1 = recv(&mut sim, reg);
    let t439 = sim.now();
    answer(&mut sim, reg, &r1, 439, &[]);
    sim.run_for(Duration::from_millis(100));
    let evs = registrations(&mut sim, ua);
    let last = &evs.last().unwrap().1;
    assert_eq!(
        (last.state, last.code, last.failure),
        (
            RegistrationState::Failed,
            Some(439),
            Some(RegistrationFailure::OutboundUnsupported)
        )
    );
    // the retry waits out the back-off (30 s × 50–100 %) and still asks
    // for outbound
    let r2 = recv(&mut sim, reg);
    assert!(
        r2.at - t439 >= Duration::from_secs(15),
        "{:?}",
        r2.at - t439
    );
    assert_eq!(register_contact(&r2).2, Some(1));
}
