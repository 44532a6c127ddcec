//! The registrar, driven by a core endpoint in the simulator, against
//! siproam's own registration client and a scripted peer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// the simulation starts its virtual clock at an arbitrary real instant
#![allow(clippy::disallowed_methods)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use siproam_core::{
    AccountConfig, Config, Event, RegistrationFailure, RegistrationState, Target, Transport,
};
use siproam_edge::{Registrar, RegistrarConfig};
use siproam_sim::{NodeId, Sim};
use siproam_sip::{HeaderName, MessageBuilder, Method};

mod common;
use common::{ip, registrar_node, REG};

struct World {
    sim: Sim,
    reg: NodeId,
    registrar: Rc<RefCell<Registrar>>,
}

fn world(config: RegistrarConfig) -> World {
    let mut sim = Sim::new(Instant::now(), 11);
    let (reg, registrar) = registrar_node(
        &mut sim,
        config,
        Config {
            seed: 99,
            // the registrar's own bounds are under test here (floods from
            // one peer); the core's per-source budget is tested in flood.rs
            admission: siproam_core::AdmissionConfig {
                per_source_rate: 0,
                max_server_transactions: usize::MAX,
                ..Default::default()
            },
            ..Config::default()
        },
    );
    World {
        sim,
        reg,
        registrar,
    }
}

fn users() -> RegistrarConfig {
    RegistrarConfig {
        domain: Some("example.test".into()),
        users: RegistrarConfig::parse_users("# test users\nalice:alicepw\nbob:bobpw\n").unwrap(),
        ..RegistrarConfig::default()
    }
}

fn account(user: &str, password: &str, transport: Transport) -> AccountConfig {
    let target = Target {
        transport,
        remote: SocketAddr::new(ip(REG), 5060),
        local: None,
        server_name: None,
    };
    let mut cfg = AccountConfig::new(
        &format!("sip:{user}@example.test"),
        "sip:example.test",
        target,
    );
    cfg.password = Some(password.into());
    cfg
}

fn last_state(
    sim: &mut Sim,
    ua: NodeId,
) -> Option<(RegistrationState, Option<u16>, Option<RegistrationFailure>)> {
    sim.take_events(ua)
        .into_iter()
        .rev()
        .find_map(|(_, e)| match e {
            Event::Registration(r) => Some((r.state, r.code, r.failure)),
            _ => None,
        })
}

#[test]
fn registers_with_digest_over_udp_and_tcp() {
    let mut w = world(users());
    let ua = w
        .sim
        .add_endpoint("alice", &[ip("192.0.2.10")], Config::default());
    w.sim.with_endpoint(ua, |ep, now| {
        ep.register(now, account("alice", "alicepw", Transport::Udp))
    });
    let ua2 = w
        .sim
        .add_endpoint("alice-tcp", &[ip("192.0.2.11")], Config::default());
    w.sim.with_endpoint(ua2, |ep, now| {
        ep.register(now, account("alice", "alicepw", Transport::Tcp))
    });
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        last_state(&mut w.sim, ua),
        Some((RegistrationState::Registered, Some(200), None))
    );
    assert_eq!(
        last_state(&mut w.sim, ua2),
        Some((RegistrationState::Registered, Some(200), None))
    );
    let now = w.sim.now();
    let bindings = w.registrar.borrow().lookup("sip:alice@example.test", now);
    let mut contacts: Vec<_> = bindings.iter().map(|b| b.contact.clone()).collect();
    contacts.sort();
    assert_eq!(
        contacts,
        [
            "sip:alice@192.0.2.10:5060",
            "sip:alice@192.0.2.11:5060;transport=tcp"
        ]
    );
    // the challenge really happened: 2 REGISTERs per account
    let registers = w
        .sim
        .log()
        .iter()
        .filter(|e| e.first_line.starts_with("REGISTER"))
        .count();
    assert_eq!(registers, 4);
    // the flow is remembered (the TCP binding's flow is a connection)
    let tcp = bindings.iter().find(|b| b.contact.contains("tcp")).unwrap();
    assert_eq!(
        w.sim
            .endpoint(w.reg)
            .flow(tcp.flow.unwrap())
            .map(|f| f.transport),
        Some(Transport::Tcp)
    );
}

#[test]
fn wrong_password_and_wrong_user_fail() {
    let mut w = world(users());
    let ua = w
        .sim
        .add_endpoint("alice", &[ip("192.0.2.10")], Config::default());
    w.sim.with_endpoint(ua, |ep, now| {
        ep.register(now, account("alice", "nope", Transport::Udp))
    });
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        last_state(&mut w.sim, ua),
        Some((
            RegistrationState::Failed,
            Some(401),
            Some(RegistrationFailure::AuthenticationFailed)
        ))
    );
    // bob's credentials for alice's AoR: 403
    let ua2 = w
        .sim
        .add_endpoint("mallory", &[ip("192.0.2.12")], Config::default());
    let mut cfg = account("alice", "bobpw", Transport::Udp);
    cfg.username = Some("bob".into());
    w.sim.with_endpoint(ua2, |ep, now| ep.register(now, cfg));
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        last_state(&mut w.sim, ua2).map(|s| (s.0, s.1)),
        Some((RegistrationState::Failed, Some(403)))
    );
    assert!(w
        .registrar
        .borrow()
        .lookup("alice@example.test", w.sim.now())
        .is_empty());
}

#[test]
fn min_expires_is_negotiated_and_bindings_lapse() {
    let mut w = world(RegistrarConfig {
        min_expires: 120,
        ..RegistrarConfig::default()
    });
    let ua = w
        .sim
        .add_endpoint("alice", &[ip("192.0.2.10")], Config::default());
    let mut cfg = account("alice", "x", Transport::Udp);
    cfg.expires = 30;
    let acc = w.sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        last_state(&mut w.sim, ua).map(|s| s.0),
        Some(RegistrationState::Registered)
    );
    let b = w
        .registrar
        .borrow()
        .lookup("alice@example.test", w.sim.now());
    assert_eq!(b.len(), 1);
    let left = b[0].expires_at - w.sim.now();
    assert!(
        left > Duration::from_secs(118) && left <= Duration::from_secs(120),
        "{left:?}"
    );
    // the UA refreshes, so the binding stays across several lifetimes
    w.sim.run_for(Duration::from_secs(600));
    assert_eq!(
        w.registrar
            .borrow()
            .lookup("alice@example.test", w.sim.now())
            .len(),
        1
    );
    // once the UA unregisters nothing is left
    w.sim
        .with_endpoint(ua, |ep, now| ep.unregister(now, acc))
        .unwrap();
    w.sim.run_for(Duration::from_secs(1));
    assert!(w
        .registrar
        .borrow()
        .lookup("alice@example.test", w.sim.now())
        .is_empty());
    assert_eq!(
        last_state(&mut w.sim, ua).map(|s| s.0),
        Some(RegistrationState::Unregistered)
    );
}

#[test]
fn a_binding_lapses_when_not_refreshed() {
    let mut w = world(RegistrarConfig::default());
    let peer = w.sim.add_peer("peer", &[ip("192.0.2.30")]);
    let reg_msg = MessageBuilder::request(Method::Register, "sip:example.test")
        .header("Via", "SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKlapse")
        .header("From", "<sip:carol@example.test>;tag=c1")
        .header("To", "<sip:carol@example.test>")
        .header("Call-ID", "lapse@x")
        .header("CSeq", "1 REGISTER")
        .header("Contact", "<sip:carol@192.0.2.30>;expires=100")
        .build()
        .unwrap();
    w.sim.peer_send(
        peer,
        SocketAddr::new(ip("192.0.2.30"), 5060),
        SocketAddr::new(ip(REG), 5060),
        Transport::Udp,
        reg_msg.to_bytes(),
    );
    let ok = w
        .sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ok.message.status(), Some(200));
    let c = ok.message.contacts().next().unwrap().unwrap();
    assert!(matches!(c, siproam_sip::Contact::Addr(a) if a.expires() == Some(100)));
    w.sim.run_for(Duration::from_secs(99));
    assert_eq!(
        w.registrar
            .borrow()
            .lookup("carol@example.test", w.sim.now())
            .len(),
        1
    );
    w.sim.run_for(Duration::from_secs(2));
    assert!(w
        .registrar
        .borrow()
        .lookup("carol@example.test", w.sim.now())
        .is_empty());
    w.registrar.borrow_mut().purge(w.sim.now());
    assert!(w.registrar.borrow().aors(w.sim.now()).is_empty());
}

#[test]
fn instance_and_reg_id_replace_the_old_binding_and_outbound_is_granted() {
    let mut w = world(RegistrarConfig {
        flow_timer: Some(30),
        ..RegistrarConfig::default()
    });
    let peer = w
        .sim
        .add_peer("phone", &[ip("192.0.2.40"), ip("192.0.2.41")]);
    let send = |w: &mut World, from: &str, cseq: u32, call_id: &str| {
        let branch = w.sim.log().len();
        let m = MessageBuilder::request(Method::Register, "sip:example.test")
            .header("Via", &format!("SIP/2.0/UDP {from}:5060;branch=z9hG4bK{branch}x{cseq}{call_id}"))
            .header("From", "<sip:dave@example.test>;tag=d1")
            .header("To", "<sip:dave@example.test>")
            .header("Call-ID", call_id)
            .header("CSeq", &format!("{cseq} REGISTER"))
            .header("Supported", "outbound, path")
            .header("Contact", &format!("<sip:dave@{from};ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1;expires=600"))
            .build()
            .unwrap();
        w.sim.peer_send(
            peer,
            SocketAddr::new(ip(from), 5060),
            SocketAddr::new(ip(REG), 5060),
            Transport::Udp,
            m.to_bytes(),
        );
        w.sim
            .run_until_peer_receives(peer, Duration::from_secs(1))
            .unwrap()
    };
    let r1 = send(&mut w, "192.0.2.40", 1, "cid-a");
    assert_eq!(r1.message.status(), Some(200));
    assert!(r1.message.has_token(HeaderName::Require, "outbound"));
    assert_eq!(r1.message.flow_timer(), Some(Ok(30)));
    // the phone moved: new address, new Call-ID, same instance and reg-id
    let r2 = send(&mut w, "192.0.2.41", 1, "cid-b");
    assert_eq!(r2.message.status(), Some(200));
    let b = w
        .registrar
        .borrow()
        .lookup("dave@example.test", w.sim.now());
    assert_eq!(b.len(), 1, "replaced, not added");
    assert_eq!(b[0].contact, "sip:dave@192.0.2.41;ob");
    assert_eq!(b[0].reg_id, Some(1));
    assert_eq!(r2.message.contacts().count(), 1);
    // a newer CSeq refreshes; an older one on the same Call-ID is refused
    let r3 = send(&mut w, "192.0.2.41", 2, "cid-b");
    assert_eq!(r3.message.status(), Some(200));
    let r4 = send(&mut w, "192.0.2.41", 1, "cid-b");
    assert_eq!(r4.message.status(), Some(500));
}

/// A REGISTER is answered without keeping a transaction (32 s of Timer J
/// per REGISTER would hold more memory than the bindings themselves at
/// thousands a second); its retransmission, arriving after the 2xx was
/// lost, is the same request again and gets the same 200 with the binding
/// unchanged, not a 500 for an equal CSeq.
#[test]
fn a_register_keeps_no_transaction_and_its_retransmission_gets_the_same_200() {
    let mut w = world(RegistrarConfig::default());
    let peer = w.sim.add_peer("phone", &[ip("192.0.2.50")]);
    let m = MessageBuilder::request(Method::Register, "sip:example.test")
        .header("Via", "SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKretrans1")
        .header("From", "<sip:erin@example.test>;tag=e1")
        .header("To", "<sip:erin@example.test>")
        .header("Call-ID", "cid-retrans")
        .header("CSeq", "7 REGISTER")
        .header("Contact", "<sip:erin@192.0.2.50:5060>;expires=600")
        .build()
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        w.sim.peer_send(
            peer,
            SocketAddr::new(ip("192.0.2.50"), 5060),
            SocketAddr::new(ip(REG), 5060),
            Transport::Udp,
            m.to_bytes(),
        );
        let r = w
            .sim
            .run_until_peer_receives(peer, Duration::from_secs(1))
            .unwrap();
        answers.push(r.message.status());
        assert_eq!(
            w.sim.endpoint(w.reg).stats().server_transactions,
            0,
            "no transaction held after the answer"
        );
    }
    assert_eq!(answers, [Some(200), Some(200)]);
    let b = w
        .registrar
        .borrow()
        .lookup("erin@example.test", w.sim.now());
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].cseq, 7);
}

#[test]
fn several_contacts_and_wildcard_removal() {
    let mut w = world(RegistrarConfig::default());
    for (i, addr) in ["192.0.2.50", "192.0.2.51"].iter().enumerate() {
        let ua = w.sim.add_endpoint(
            &format!("eve{i}"),
            &[ip(addr)],
            Config {
                seed: i as u64 + 1,
                ..Config::default()
            },
        );
        w.sim.with_endpoint(ua, |ep, now| {
            ep.register(now, account("eve", "x", Transport::Udp))
        });
    }
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        w.registrar
            .borrow()
            .lookup("eve@example.test", w.sim.now())
            .len(),
        2
    );
    let peer = w.sim.add_peer("admin", &[ip("192.0.2.60")]);
    let star = |cseq: u32, expires: &str| {
        MessageBuilder::request(Method::Register, "sip:example.test")
            .header(
                "Via",
                &format!("SIP/2.0/UDP 192.0.2.60:5060;branch=z9hG4bKstar{cseq}"),
            )
            .header("From", "<sip:eve@example.test>;tag=s1")
            .header("To", "<sip:eve@example.test>")
            .header("Call-ID", "star@x")
            .header("CSeq", &format!("{cseq} REGISTER"))
            .header("Contact", "*")
            .header("Expires", expires)
            .build()
            .unwrap()
    };
    let from = SocketAddr::new(ip("192.0.2.60"), 5060);
    let to = SocketAddr::new(ip(REG), 5060);
    w.sim
        .peer_send(peer, from, to, Transport::Udp, star(1, "10").to_bytes());
    let bad = w
        .sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        bad.message.status(),
        Some(400),
        "Contact: * needs Expires: 0"
    );
    w.sim
        .peer_send(peer, from, to, Transport::Udp, star(2, "0").to_bytes());
    let ok = w
        .sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    assert_eq!(ok.message.status(), Some(200));
    assert!(w
        .registrar
        .borrow()
        .lookup("eve@example.test", w.sim.now())
        .is_empty());
}

#[test]
fn other_domains_and_users_files() {
    let mut w = world(users());
    let ua = w
        .sim
        .add_endpoint("alice", &[ip("192.0.2.10")], Config::default());
    let target = Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip(REG), 5060),
        local: None,
        server_name: None,
    };
    let cfg = AccountConfig::new("sip:alice@elsewhere.test", "sip:elsewhere.test", target);
    w.sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(last_state(&mut w.sim, ua).map(|s| s.1), Some(Some(404)));
    assert!(RegistrarConfig::parse_users("nocolon\n").is_err());
    let u: HashMap<String, String> = RegistrarConfig::parse_users("a:b:c\n\n").unwrap();
    assert_eq!(
        u.get("a").map(String::as_str),
        Some("b:c"),
        "passwords may hold colons"
    );
}

#[test]
fn stale_nonce_is_answered_again() {
    let mut w = world(RegistrarConfig {
        nonce_lifetime: Duration::from_secs(100),
        ..users()
    });
    let ua = w
        .sim
        .add_endpoint("alice", &[ip("192.0.2.10")], Config::default());
    let mut cfg = account("alice", "alicepw", Transport::Udp);
    cfg.expires = 300;
    w.sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        last_state(&mut w.sim, ua).map(|s| s.0),
        Some(RegistrationState::Registered)
    );
    // the refresh at ~290 s reuses a nonce that expired at 100 s: the
    // registrar says stale=true and the UA answers the new nonce at once
    w.sim.run_for(Duration::from_secs(295));
    assert_eq!(
        last_state(&mut w.sim, ua).map(|s| s.0),
        Some(RegistrationState::Registered)
    );
    assert!(w
        .sim
        .log()
        .iter()
        .any(|e| e.first_line.starts_with("SIP/2.0 401")));
    assert_eq!(
        w.registrar
            .borrow()
            .lookup("alice@example.test", w.sim.now())
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------
// Digest per RFC 7616 and self-validating nonces (issue 10, findings 6, 8)
// ---------------------------------------------------------------------------

const PEER: &str = "192.0.2.70";

/// A scripted client: REGISTERs built by hand, answers read raw.
struct Client {
    peer: NodeId,
    branch: u32,
}

impl Client {
    fn new(w: &mut World) -> Client {
        Client {
            peer: w.sim.add_peer("client", &[ip(PEER)]),
            branch: 0,
        }
    }

    /// Sends a REGISTER for alice and returns the answer.
    fn register(
        &mut self,
        w: &mut World,
        call_id: &str,
        cseq: u32,
        contact: &str,
        auth: Option<&str>,
    ) -> siproam_sip::Message {
        self.branch += 1;
        let mut b = MessageBuilder::request(Method::Register, "sip:example.test")
            .header(
                "Via",
                &format!("SIP/2.0/UDP {PEER}:5060;branch=z9hG4bKc{}", self.branch),
            )
            .header("From", "<sip:alice@example.test>;tag=a1")
            .header("To", "<sip:alice@example.test>")
            .header("Call-ID", call_id)
            .header("CSeq", &format!("{cseq} REGISTER"))
            .header("Contact", contact)
            .header("Expires", "600");
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        w.sim.peer_send(
            self.peer,
            SocketAddr::new(ip(PEER), 5060),
            SocketAddr::new(ip(REG), 5060),
            Transport::Udp,
            b.build().unwrap().to_bytes(),
        );
        w.sim
            .run_until_peer_receives(self.peer, Duration::from_secs(1))
            .expect("an answer")
            .message
    }

    /// The challenge of a fresh 401.
    fn challenge(&mut self, w: &mut World) -> String {
        let r = self.register(w, "challenge-me", 1, "<sip:alice@192.0.2.70>", None);
        assert_eq!(r.status(), Some(401));
        r.header(HeaderName::WwwAuthenticate).unwrap().to_owned()
    }
}

/// Alice's Authorization for `challenge` with digest-uri `uri` and `nc`.
fn answer_challenge(challenge: &str, uri: &str, nc: u32) -> String {
    let ch = siproam_sip::digest::Challenge::parse(challenge).unwrap();
    siproam_sip::digest::respond(
        &ch,
        &siproam_sip::digest::ClientInput {
            username: "alice",
            password: "alicepw",
            method: "REGISTER",
            uri,
            cnonce: "c0ffee",
            nc,
            body: b"",
        },
    )
    .unwrap()
}

fn alice_contacts(w: &World) -> Vec<String> {
    let mut v: Vec<String> = w
        .registrar
        .borrow()
        .lookup("alice@example.test", w.sim.now())
        .into_iter()
        .map(|b| b.contact)
        .collect();
    v.sort();
    v
}

/// Regression: the challenge offers qop="auth" but an answer without qop
/// (RFC 2069 form: no nc, no cnonce) was accepted, and as it has no nc it
/// could be replayed for the nonce's lifetime with any Call-ID and Contact.
#[test]
fn an_answer_without_qop_is_refused_and_cannot_be_replayed() {
    let mut w = world(users());
    let mut c = Client::new(&mut w);
    let ch = c.challenge(&mut w);
    let no_qop = ch.replace(", qop=\"auth\"", "");
    assert_ne!(no_qop, ch, "the challenge offers qop=auth");
    let auth = answer_challenge(&no_qop, "sip:example.test", 1);
    assert!(!auth.contains("qop"), "{auth}");
    let r = c.register(&mut w, "cid-1", 2, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(401));
    // the captured answer replayed by someone else
    let r = c.register(
        &mut w,
        "cid-evil",
        1,
        "<sip:mallory@192.0.2.66>",
        Some(&auth),
    );
    assert_eq!(r.status(), Some(401));
    assert!(alice_contacts(&w).is_empty());
}

/// A captured answer with qop (nc=1) replayed with another Call-ID and
/// Contact is refused: nc must grow per nonce.
#[test]
fn a_captured_answer_replayed_with_another_call_id_is_refused() {
    let mut w = world(users());
    let mut c = Client::new(&mut w);
    let ch = c.challenge(&mut w);
    let auth = answer_challenge(&ch, "sip:example.test", 1);
    let r = c.register(&mut w, "cid-1", 2, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(200));
    let r = c.register(
        &mut w,
        "cid-evil",
        1,
        "<sip:mallory@192.0.2.66>",
        Some(&auth),
    );
    assert_eq!(r.status(), Some(401));
    assert_eq!(alice_contacts(&w), ["sip:alice@192.0.2.70"]);
    // the owner counting up is still served
    let auth2 = answer_challenge(&ch, "sip:example.test", 2);
    let r = c.register(&mut w, "cid-1", 3, "<sip:alice@192.0.2.70>", Some(&auth2));
    assert_eq!(r.status(), Some(200));
}

/// Regression: the digest-uri was not compared with the Request-URI.
#[test]
fn an_answer_for_another_uri_is_refused() {
    let mut w = world(users());
    let mut c = Client::new(&mut w);
    let ch = c.challenge(&mut w);
    let auth = answer_challenge(&ch, "sip:elsewhere.test", 1);
    let r = c.register(&mut w, "cid-1", 2, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(401));
    assert!(alice_contacts(&w).is_empty());
}

/// SIPp (and some phones) answer a REGISTER's challenge with the
/// registrar's own address as digest-uri: it designates the same server
/// and is accepted; another IP address or port is not (found by the SIPp
/// interop test when the uri check came in).
#[test]
fn a_register_answer_naming_the_registrar_itself_is_accepted() {
    let mut w = world(users());
    let mut c = Client::new(&mut w);
    let ch = c.challenge(&mut w);
    let auth = answer_challenge(&ch, &format!("sip:{REG}:5099"), 1);
    let r = c.register(&mut w, "cid-1", 2, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(401), "another port of our address");
    let ch = c.challenge(&mut w);
    let auth = answer_challenge(&ch, &format!("sip:{REG}"), 1);
    let r = c.register(&mut w, "cid-1", 4, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(200));
    assert_eq!(alice_contacts(&w).len(), 1);
}

fn nonce_of(challenge: &str) -> String {
    siproam_sip::digest::Challenge::parse(challenge)
        .unwrap()
        .nonce()
        .unwrap()
        .to_owned()
}

/// A nonce we did not sign (made up, or one of ours altered) is refused
/// even when the digest over it is right.
#[test]
fn forged_and_altered_nonces_are_refused() {
    let mut w = world(users());
    let mut c = Client::new(&mut w);
    let ch = c.challenge(&mut w);
    let nonce = nonce_of(&ch);
    // altered: the timestamp moved forward by one
    let mut bytes = nonce.clone().into_bytes();
    bytes[15] = if bytes[15] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(bytes).unwrap();
    let made_up = "0".repeat(nonce.len());
    for (i, forged) in [altered, made_up, "x".to_owned()].iter().enumerate() {
        let ch = ch.replace(&nonce, forged);
        let auth = answer_challenge(&ch, "sip:example.test", 1);
        let r = c.register(
            &mut w,
            &format!("cid-{i}"),
            2,
            "<sip:alice@192.0.2.70>",
            Some(&auth),
        );
        assert_eq!(r.status(), Some(401), "{forged}");
    }
    assert!(alice_contacts(&w).is_empty());
    assert_eq!(w.registrar.borrow().tracked_nonces(), 0);
}

/// Regression (finding 8): each challenge stored its nonce for 300 s, so a
/// flood of unauthenticated REGISTERs grew a map without bound. Nonces are
/// signed now: 100,000 challenges leave nothing behind.
#[test]
fn a_flood_of_unauthenticated_registers_stores_no_nonce() {
    let mut w = world(users());
    let peer = w.sim.add_peer("flood", &[ip("192.0.2.80")]);
    let from = SocketAddr::new(ip("192.0.2.80"), 5060);
    let to = SocketAddr::new(ip(REG), 5060);
    let mut challenged = 0;
    for batch in 0..100 {
        for i in 0..1000 {
            let m = MessageBuilder::request(Method::Register, "sip:example.test")
                .header(
                    "Via",
                    &format!("SIP/2.0/UDP 192.0.2.80:5060;branch=z9hG4bKf{batch}x{i}"),
                )
                .header("From", "<sip:alice@example.test>;tag=f")
                .header("To", "<sip:alice@example.test>")
                .header("Call-ID", &format!("flood-{batch}-{i}"))
                .header("CSeq", "1 REGISTER")
                .header("Contact", "<sip:alice@192.0.2.80>")
                .build()
                .unwrap();
            w.sim
                .peer_send(peer, from, to, Transport::Udp, m.to_bytes());
        }
        w.sim.run_for(Duration::from_millis(10));
        while let Some(r) = w.sim.peer_recv(peer) {
            assert_eq!(r.message.status(), Some(401));
            challenged += 1;
        }
    }
    w.sim.run_for(Duration::from_millis(100));
    while let Some(r) = w.sim.peer_recv(peer) {
        assert_eq!(r.message.status(), Some(401));
        challenged += 1;
    }
    assert_eq!(challenged, 100_000);
    assert_eq!(w.registrar.borrow().tracked_nonces(), 0);
    // and a legitimate client is still served
    let mut c = Client::new(&mut w);
    let ch = c.challenge(&mut w);
    let auth = answer_challenge(&ch, "sip:example.test", 1);
    let r = c.register(&mut w, "cid-1", 2, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(200));
    assert_eq!(w.registrar.borrow().tracked_nonces(), 1);
}

/// The nc table is bounded: when a nonce is forgotten to make room, its
/// next use is answered stale=true (it might be a replay), not accepted;
/// and a lapsed nonce is answered stale=true and purged.
#[test]
fn forgotten_and_lapsed_nonces_are_stale() {
    let mut w = world(RegistrarConfig {
        max_tracked_nonces: 1,
        nonce_lifetime: Duration::from_secs(100),
        ..users()
    });
    let mut c = Client::new(&mut w);
    let first = c.challenge(&mut w);
    let second = c.challenge(&mut w);
    assert_ne!(nonce_of(&first), nonce_of(&second));
    let auth = answer_challenge(&first, "sip:example.test", 1);
    let r = c.register(&mut w, "cid-1", 2, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(200));
    let auth = answer_challenge(&second, "sip:example.test", 1);
    let r = c.register(&mut w, "cid-1", 3, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(200));
    assert_eq!(w.registrar.borrow().tracked_nonces(), 1);
    // the first nonce was forgotten: its nc=2 could be a replay
    let auth = answer_challenge(&first, "sip:example.test", 2);
    let r = c.register(&mut w, "cid-1", 4, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(401));
    let ch = r.header(HeaderName::WwwAuthenticate).unwrap();
    assert!(siproam_sip::digest::Challenge::parse(ch).unwrap().stale());
    // the second one lapses after 100 s
    w.sim.run_for(Duration::from_secs(101));
    let auth = answer_challenge(&second, "sip:example.test", 2);
    let r = c.register(&mut w, "cid-1", 5, "<sip:alice@192.0.2.70>", Some(&auth));
    assert_eq!(r.status(), Some(401));
    let ch = r.header(HeaderName::WwwAuthenticate).unwrap();
    assert!(siproam_sip::digest::Challenge::parse(ch).unwrap().stale());
    w.registrar.borrow_mut().purge(w.sim.now());
    assert_eq!(w.registrar.borrow().tracked_nonces(), 0);
}

// ---------------------------------------------------------------------------
// Bindings per AoR (issue 10, finding 5)
// ---------------------------------------------------------------------------

fn register_contacts(
    w: &mut World,
    peer: NodeId,
    call_id: &str,
    contacts: &[String],
) -> siproam_sip::Message {
    let mut b = MessageBuilder::request(Method::Register, "sip:example.test")
        .header(
            "Via",
            &format!("SIP/2.0/UDP 192.0.2.90:5060;branch=z9hG4bKb{call_id}"),
        )
        .header("From", "<sip:frank@example.test>;tag=f1")
        .header("To", "<sip:frank@example.test>")
        .header("Call-ID", call_id)
        .header("CSeq", "1 REGISTER");
    for c in contacts {
        b = b.header("Contact", c);
    }
    w.sim.peer_send(
        peer,
        SocketAddr::new(ip("192.0.2.90"), 5060),
        SocketAddr::new(ip(REG), 5060),
        Transport::Udp,
        b.build().unwrap().to_bytes(),
    );
    w.sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .expect("an answer")
        .message
}

fn frank_bindings(w: &World) -> usize {
    w.registrar
        .borrow()
        .lookup("frank@example.test", w.sim.now())
        .len()
}

/// Regression: bindings per AoR were unbounded (from the 251st the 200 OK
/// outgrew the header limit and was never sent, while the binding was
/// stored). The 17th binding is refused now and nothing is stored.
#[test]
fn bindings_per_aor_are_capped_and_nothing_is_stored_beyond() {
    let mut w = world(RegistrarConfig::default());
    let peer = w.sim.add_peer("frank", &[ip("192.0.2.90")]);
    for i in 0..16 {
        let r = register_contacts(
            &mut w,
            peer,
            &format!("cid-{i}"),
            &[format!("<sip:frank@192.0.2.90:{}>", 5000 + i)],
        );
        assert_eq!(r.status(), Some(200), "binding {i}");
        assert_eq!(r.contacts().count(), i + 1);
    }
    let r = register_contacts(
        &mut w,
        peer,
        "cid-16",
        &["<sip:frank@192.0.2.90:6000>".into()],
    );
    assert_eq!(r.status(), Some(403));
    assert_eq!(r.reason(), Some("Too Many Registered Contacts"));
    assert_eq!(frank_bindings(&w), 16);
    // refreshing one that exists is still fine
    let r = register_contacts(
        &mut w,
        peer,
        "cid-0b",
        &["<sip:frank@192.0.2.90:5000>".into()],
    );
    assert_eq!(r.status(), Some(200));
    assert_eq!(frank_bindings(&w), 16);
}

/// One REGISTER with more Contacts than the cap is refused whole (and its
/// Contacts beyond the cap are not even parsed).
#[test]
fn a_register_with_too_many_contacts_is_refused_whole() {
    let mut w = world(RegistrarConfig {
        max_bindings_per_aor: 4,
        ..RegistrarConfig::default()
    });
    let peer = w.sim.add_peer("frank", &[ip("192.0.2.90")]);
    let five: Vec<String> = (0..5)
        .map(|i| format!("<sip:frank@192.0.2.90:{}>", 5000 + i))
        .collect();
    let r = register_contacts(&mut w, peer, "cid-a", &five);
    assert_eq!(r.status(), Some(403));
    assert_eq!(frank_bindings(&w), 0);
    let r = register_contacts(&mut w, peer, "cid-b", &five[..4]);
    assert_eq!(r.status(), Some(200));
    assert_eq!(frank_bindings(&w), 4);
}

/// Regression (finding 1, memory): maps never shrank, so memory taken by
/// a flood of bindings was kept after they lapsed. `purge` gives it back.
#[test]
fn purge_gives_memory_back_after_a_flood_of_bindings() {
    let mut w = world(RegistrarConfig::default());
    let peer = w.sim.add_peer("flood", &[ip("192.0.2.80")]);
    let from = SocketAddr::new(ip("192.0.2.80"), 5060);
    let to = SocketAddr::new(ip(REG), 5060);
    for i in 0..5000 {
        let m = MessageBuilder::request(Method::Register, "sip:example.test")
            .header(
                "Via",
                &format!("SIP/2.0/UDP 192.0.2.80:5060;branch=z9hG4bKm{i}"),
            )
            .header("From", &format!("<sip:u{i}@example.test>;tag=f"))
            .header("To", &format!("<sip:u{i}@example.test>"))
            .header("Call-ID", &format!("mem-{i}"))
            .header("CSeq", "1 REGISTER")
            .header("Contact", &format!("<sip:u{i}@192.0.2.80>;expires=60"))
            .build()
            .unwrap();
        w.sim
            .peer_send(peer, from, to, Transport::Udp, m.to_bytes());
    }
    w.sim.run_for(Duration::from_millis(100));
    let [(aors, aor_cap), (contacts, _), _] = w.registrar.borrow().sizes();
    assert_eq!((aors, contacts), (5000, 5000));
    assert!(aor_cap >= 5000);
    w.sim.run_for(Duration::from_secs(61));
    w.registrar.borrow_mut().purge(w.sim.now());
    let sizes = w.registrar.borrow().sizes();
    for (len, cap) in sizes {
        assert_eq!(len, 0);
        assert!(cap <= 64, "{sizes:?}");
    }
}

const DAVE_INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-000A95A0E128";

/// A REGISTER for dave from a scripted peer at 192.0.2.50 (a proxy when
/// `vias` has more than one entry: its Via on top of the phone's), with
/// `path` as its Path headers (top first) and the Contact asking for
/// outbound when `reg_id` is set. Returns the final answer.
fn register_via(
    w: &mut World,
    peer: NodeId,
    vias: usize,
    path: &[&str],
    reg_id: Option<u32>,
) -> siproam_sip::Message {
    let n = w.sim.log().len();
    let mut b = MessageBuilder::request(Method::Register, "sip:example.test");
    b = b.header(
        "Via",
        &format!("SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKedge{n}"),
    );
    for i in 1..vias {
        b = b.header(
            "Via",
            &format!("SIP/2.0/UDP 198.51.100.{i}:5060;branch=z9hG4bKua{n}x{i}"),
        );
    }
    for p in path {
        b = b.header("Path", p);
    }
    let contact = match reg_id {
        Some(r) => format!(
            "<sip:dave@198.51.100.1;ob>;+sip.instance=\"<{DAVE_INSTANCE}>\";reg-id={r};expires=600"
        ),
        None => "<sip:dave@198.51.100.1>;expires=600".to_owned(),
    };
    let m = b
        .header("From", "<sip:dave@example.test>;tag=d1")
        .header("To", "<sip:dave@example.test>")
        .header("Call-ID", &format!("cid-path-{n}"))
        .header("CSeq", "1 REGISTER")
        .header("Supported", "outbound, path")
        .header("Contact", &contact)
        .build()
        .unwrap();
    w.sim.peer_send(
        peer,
        SocketAddr::new(ip("192.0.2.50"), 5060),
        SocketAddr::new(ip(REG), 5060),
        Transport::Udp,
        m.to_bytes(),
    );
    w.sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap()
        .message
}

fn dave_bindings(w: &World) -> usize {
    w.registrar
        .borrow()
        .lookup("dave@example.test", w.sim.now())
        .len()
}

#[test]
fn outbound_through_a_first_hop_without_ob_gets_439_and_stores_nothing() {
    let mut w = world(RegistrarConfig::default());
    let edge = w.sim.add_peer("edge", &[ip("192.0.2.50")]);
    // the first hop (the bottom-most Path entry, the proxy nearest the
    // phone) did not say it keeps the flow: 439, nothing bound
    let r = register_via(&mut w, edge, 2, &["<sip:192.0.2.50;lr>"], Some(1));
    assert_eq!(r.status(), Some(439));
    assert_eq!(r.reason(), Some("First Hop Lacks Outbound Support"));
    assert_eq!(dave_bindings(&w), 0);
    // a proxy in between with no Path at all: the first hop is unknown
    let r = register_via(&mut w, edge, 2, &[], Some(1));
    assert_eq!(r.status(), Some(439));
    // ;ob only on the top entry (the proxy nearest us) is not enough
    let r = register_via(
        &mut w,
        edge,
        3,
        &["<sip:192.0.2.50;lr;ob>", "<sip:192.0.2.60;lr>"],
        Some(1),
    );
    assert_eq!(r.status(), Some(439));
    assert_eq!(dave_bindings(&w), 0);
}

#[test]
fn outbound_through_a_first_hop_with_ob_or_straight_from_the_phone_is_bound() {
    let mut w = world(RegistrarConfig::default());
    let edge = w.sim.add_peer("edge", &[ip("192.0.2.50")]);
    // the bottom-most Path entry carries ;ob (two proxies on the way)
    let r = register_via(
        &mut w,
        edge,
        3,
        &["<sip:192.0.2.60;lr>", "<sip:192.0.2.50;lr;ob>"],
        Some(1),
    );
    assert_eq!(r.status(), Some(200));
    assert!(r.has_token(HeaderName::Require, "outbound"));
    assert_eq!(dave_bindings(&w), 1);
    // no outbound asked: a Path without ;ob is fine
    let r = register_via(&mut w, edge, 2, &["<sip:192.0.2.50;lr>"], None);
    assert_eq!(r.status(), Some(200));
    // straight from the phone (one Via, no Path): we are the first hop
    let r = register_via(&mut w, edge, 1, &[], Some(2));
    assert_eq!(r.status(), Some(200));
    assert!(r.has_token(HeaderName::Require, "outbound"));
    assert_eq!(dave_bindings(&w), 3);
}

#[test]
fn a_registrar_without_outbound_ignores_reg_id_and_sends_no_439() {
    let mut w = world(RegistrarConfig {
        outbound: false,
        ..RegistrarConfig::default()
    });
    let edge = w.sim.add_peer("edge", &[ip("192.0.2.50")]);
    let r = register_via(&mut w, edge, 2, &["<sip:192.0.2.50;lr>"], Some(1));
    assert_eq!(r.status(), Some(200));
    assert!(!r.has_token(HeaderName::Require, "outbound"));
}

#[test]
fn the_register_2xx_carries_the_configured_service_route() {
    let mut w = world(RegistrarConfig {
        service_routes: vec![
            "sip:orig@192.0.2.1;lr".to_owned(),
            "sip:as.example.test;lr".to_owned(),
        ],
        ..RegistrarConfig::default()
    });
    let edge = w.sim.add_peer("edge", &[ip("192.0.2.50")]);
    let r = register_via(&mut w, edge, 1, &[], None);
    assert_eq!(r.status(), Some(200));
    let routes: Vec<String> = r
        .header_values(HeaderName::ServiceRoute)
        .flat_map(|v| siproam_sip::split_list(v).map(str::to_owned))
        .collect();
    assert_eq!(
        routes,
        ["<sip:orig@192.0.2.1;lr>", "<sip:as.example.test;lr>"],
        "in the configured order"
    );
    // a refusal carries none
    let mut w = world(RegistrarConfig {
        service_routes: vec!["sip:orig@192.0.2.1;lr".to_owned()],
        ..RegistrarConfig::default()
    });
    let edge = w.sim.add_peer("edge", &[ip("192.0.2.50")]);
    let r = register_via(&mut w, edge, 2, &["<sip:192.0.2.50;lr>"], Some(1));
    assert_eq!(r.status(), Some(439));
    assert_eq!(r.header_values(HeaderName::ServiceRoute).count(), 0);
}

// ---- a store shared with other processes ----

fn shared_world() -> (World, NodeId) {
    let mut w = world(RegistrarConfig::default());
    w.registrar.borrow_mut().set_shared(true);
    let edge = w.sim.add_peer("edge", &[ip("192.0.2.50")]);
    (w, edge)
}

/// Sends dave's REGISTER (straight from the phone) without waiting for
/// an answer.
fn send_register(w: &mut World, peer: NodeId, cseq: u32, expires: u32) {
    let m = MessageBuilder::request(Method::Register, "sip:example.test")
        .header(
            "Via",
            &format!("SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKsh{cseq}"),
        )
        .header("From", "<sip:dave@example.test>;tag=d1")
        .header("To", "<sip:dave@example.test>")
        .header("Call-ID", "cid-shared")
        .header("CSeq", &format!("{cseq} REGISTER"))
        .header(
            "Contact",
            &format!("<sip:dave@192.0.2.50>;expires={expires}"),
        )
        .build()
        .unwrap();
    w.sim.peer_send(
        peer,
        SocketAddr::new(ip("192.0.2.50"), 5060),
        SocketAddr::new(ip(REG), 5060),
        Transport::Udp,
        m.to_bytes(),
    );
}

fn final_answer(w: &mut World, peer: NodeId, limit: Duration) -> Option<u16> {
    let until = w.sim.now() + limit;
    while w.sim.now() < until {
        let left = until.saturating_duration_since(w.sim.now());
        let r = w.sim.run_until_peer_receives(peer, left)?;
        if r.message.status().is_some_and(|c| c >= 200) {
            return r.message.status();
        }
    }
    None
}

#[test]
fn with_a_shared_store_the_2xx_waits_for_the_write_to_be_acknowledged() {
    let (mut w, edge) = shared_world();
    send_register(&mut w, edge, 1, 600);
    // the phone retransmits meanwhile; nothing is answered
    assert_eq!(final_answer(&mut w, edge, Duration::from_secs(2)), None);
    let op = w.registrar.borrow_mut().poll_store_op().expect("a write");
    assert!(
        w.registrar.borrow_mut().poll_store_op().is_none(),
        "one write"
    );
    assert_eq!(op.aor, "dave@example.test");
    assert_eq!(op.bindings.len(), 1);
    assert_eq!(op.bindings[0].contact, "sip:dave@192.0.2.50");
    let life = op.lifetime(w.sim.now()).unwrap();
    assert!(life <= Duration::from_secs(600) && life > Duration::from_secs(590));
    let reg = w.registrar.clone();
    let sent = w.sim.with_endpoint(w.reg, |ep, now| {
        reg.borrow_mut().store_done(ep, now, op.id, true)
    });
    assert_eq!(sent, Some(200));
    assert_eq!(
        final_answer(&mut w, edge, Duration::from_secs(1)),
        Some(200)
    );
    assert_eq!(dave_bindings(&w), 1);
    assert_eq!(w.registrar.borrow().store_waits(), 0);
    // a fetch (no Contact) changes nothing: answered at once, no write
    let m = MessageBuilder::request(Method::Register, "sip:example.test")
        .header("Via", "SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKfetch")
        .header("From", "<sip:dave@example.test>;tag=d1")
        .header("To", "<sip:dave@example.test>")
        .header("Call-ID", "cid-shared")
        .header("CSeq", "2 REGISTER")
        .build()
        .unwrap();
    w.sim.peer_send(
        edge,
        SocketAddr::new(ip("192.0.2.50"), 5060),
        SocketAddr::new(ip(REG), 5060),
        Transport::Udp,
        m.to_bytes(),
    );
    assert_eq!(
        final_answer(&mut w, edge, Duration::from_secs(1)),
        Some(200)
    );
    assert!(w.registrar.borrow_mut().poll_store_op().is_none());
}

#[test]
fn with_a_shared_store_a_failed_write_is_a_503_and_undone() {
    let (mut w, edge) = shared_world();
    send_register(&mut w, edge, 1, 600);
    w.sim.run_for(Duration::from_millis(100));
    let op = w.registrar.borrow_mut().poll_store_op().unwrap();
    let reg = w.registrar.clone();
    let sent = w.sim.with_endpoint(w.reg, |ep, now| {
        reg.borrow_mut().store_done(ep, now, op.id, false)
    });
    assert_eq!(sent, Some(503));
    assert_eq!(
        final_answer(&mut w, edge, Duration::from_secs(1)),
        Some(503)
    );
    assert_eq!(dave_bindings(&w), 0, "not acknowledged: not bound");
    // a write never reported is failed once it waited too long
    send_register(&mut w, edge, 2, 600);
    w.sim.run_for(Duration::from_millis(100));
    assert!(w.registrar.borrow_mut().poll_store_op().is_some());
    assert_eq!(dave_bindings(&w), 1, "bound locally while the write is out");
    w.sim
        .run_for(siproam_edge::AWAIT_LIMIT + Duration::from_secs(1));
    let reg = w.registrar.clone();
    w.sim.with_endpoint(w.reg, |ep, now| {
        reg.borrow_mut().expire_store_waits(ep, now)
    });
    assert_eq!(
        final_answer(&mut w, edge, Duration::from_secs(1)),
        Some(503)
    );
    assert_eq!(dave_bindings(&w), 0);
    assert_eq!(w.registrar.borrow().store_waits(), 0);
}

#[test]
fn bindings_another_process_wrote_are_found_and_carry_no_flow() {
    let (w, _edge) = shared_world();
    let now = w.sim.now();
    let theirs = vec![siproam_edge::Binding {
        contact: "sip:erin@192.0.2.77".to_owned(),
        expires_at: now + Duration::from_secs(60),
        instance: None,
        reg_id: None,
        call_id: "x".to_owned(),
        cseq: 1,
        flow: None,
        q: None,
        path: Vec::new(),
    }];
    let text = siproam_edge::encode_shared(&theirs, now, 5_000_000, 1);
    let back = siproam_edge::decode_shared(&text, now, 5_000_000, 2, 16).unwrap();
    w.registrar
        .borrow_mut()
        .apply_shared("erin@example.test", back);
    let b = w.registrar.borrow().lookup("sip:erin@example.test", now);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].flow, None);
    assert!(
        w.registrar.borrow_mut().poll_store_op().is_none(),
        "not written back"
    );
    w.registrar
        .borrow_mut()
        .apply_shared("erin@example.test", Vec::new());
    assert!(w
        .registrar
        .borrow()
        .lookup("sip:erin@example.test", now)
        .is_empty());
}

#[test]
fn with_a_shared_store_a_closed_flow_writes_its_aors_remaining_bindings() {
    let (mut w, _edge) = shared_world();
    let phone = w.sim.add_peer("phone", &[ip("192.0.2.70")]);
    let m = MessageBuilder::request(Method::Register, "sip:example.test")
        .header("Via", "SIP/2.0/TCP 192.0.2.70:40000;branch=z9hG4bKflow")
        .header("From", "<sip:dave@example.test>;tag=d9")
        .header("To", "<sip:dave@example.test>")
        .header("Call-ID", "cid-flow")
        .header("CSeq", "1 REGISTER")
        .header("Supported", "outbound, path")
        .header(
            "Contact",
            &format!("<sip:dave@192.0.2.70:40000;transport=tcp;ob>;+sip.instance=\"<{DAVE_INSTANCE}>\";reg-id=1;expires=600"),
        )
        .build()
        .unwrap();
    w.sim.peer_send(
        phone,
        SocketAddr::new(ip("192.0.2.70"), 40000),
        SocketAddr::new(ip(REG), 5060),
        Transport::Tcp,
        m.to_bytes(),
    );
    w.sim.run_for(Duration::from_millis(100));
    let op = w.registrar.borrow_mut().poll_store_op().unwrap();
    let reg = w.registrar.clone();
    w.sim.with_endpoint(w.reg, |ep, now| {
        reg.borrow_mut().store_done(ep, now, op.id, true)
    });
    let r = w
        .sim
        .run_until_peer_receives(phone, Duration::from_secs(1))
        .unwrap();
    assert_eq!(r.message.status(), Some(200));
    // the registrar is driven by hand here: tell it the flow closed
    let flow = w
        .registrar
        .borrow()
        .lookup("dave@example.test", w.sim.now())[0]
        .flow
        .unwrap();
    assert_eq!(w.registrar.borrow_mut().flow_failed(flow), 1);
    let op = w.registrar.borrow_mut().poll_store_op().expect("a write");
    assert_eq!(op.aor, "dave@example.test");
    assert!(op.bindings.is_empty(), "the shared copy forgets it too");
    assert_eq!(op.lifetime(w.sim.now()), None);
}
