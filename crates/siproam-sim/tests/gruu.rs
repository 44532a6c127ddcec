//! GRUU (RFC 5627) on the client side: the `pub-gruu` / `temp-gruu` of
//! the registrar's 2xx (on the Contact that is ours) are kept with the
//! account and reported; the public GRUU is then the Contact of the
//! dialogs the account forms (INVITE and the answers to one), with `;ob`
//! when outbound is in force. Quoted, escaped, malformed or non-SIP GRUUs
//! never panic; what is not a SIP URI is ignored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use siproam_core::{AccountConfig, AccountId, InviteSpec, RegistrationState, Target, Transport};
mod support;

use siproam_sim::{NodeId, Sim};
use siproam_sip::{Contact, MessageBuilder, Method};
use support::{answer, ip, recv, registrations, setup, REG, UA};

const INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-0000000000aa";
const PUB: &str = "sip:alice@example.test;gr=urn:uuid:00000000-0000-1000-8000-0000000000aa";
const TEMP: &str = "sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@example.test;gr";

/// An account with an instance (GRUUs are per instance), no password.
fn gruu_setup(outbound: bool) -> (Sim, NodeId, NodeId, AccountConfig) {
    let (sim, ua, reg, mut cfg) = setup(Transport::Udp);
    cfg.password = None;
    cfg.instance_id = Some(INSTANCE.into());
    cfg.outbound = outbound;
    (sim, ua, reg, cfg)
}

/// Registers, answering the REGISTER with a 200 whose Contacts are
/// `contacts` (each a full Contact header value; `{ours}` stands for the
/// REGISTER's own Contact URI), plus `extra` headers.
fn register_with(
    sim: &mut Sim,
    ua: NodeId,
    reg: NodeId,
    cfg: AccountConfig,
    contacts: &[String],
    extra: &[(&str, &str)],
) -> AccountId {
    let acc = sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
    let r = recv(sim, reg);
    assert_eq!(r.message.method(), Some(Method::Register));
    let Some(Ok(Contact::Addr(c))) = r.message.contacts().next() else {
        panic!("no Contact in the REGISTER");
    };
    let ours = c.uri().as_str().to_owned();
    let mut b = MessageBuilder::response_to(&r.message, 200, "OK", Some("reg1"));
    for c in contacts {
        b = b.header("Contact", &c.replace("{ours}", &ours));
    }
    for (n, v) in extra {
        b = b.header(n, v);
    }
    sim.peer_reply(reg, &r, b.build().unwrap().to_bytes());
    sim.run_for(Duration::from_millis(100));
    acc
}

/// Our Contact as Kamailio gives it back, with GRUUs.
fn contact_with_gruus(pub_gruu: &str, temp_gruu: &str) -> String {
    format!(
        "<{{ours}}>;expires=300;+sip.instance=\"<{INSTANCE}>\";reg-id=1;\
         pub-gruu=\"{pub_gruu}\";temp-gruu=\"{temp_gruu}\""
    )
}

/// Calls bob through the registrar; the INVITE's Contact URI.
fn invite_contact(sim: &mut Sim, ua: NodeId, reg: NodeId) -> String {
    let spec = InviteSpec {
        uri: "sip:bob@example.test".into(),
        from: "sip:alice@example.test".into(),
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

/// An INVITE from carol to the account, answered 200 by the UA: the
/// 200's Contact URI.
fn answer_contact(sim: &mut Sim, ua: NodeId, reg: NodeId) -> String {
    let inv = MessageBuilder::request(Method::Invite, &format!("sip:alice@{UA}:5060"))
        .header("Via", "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKgruu1")
        .header("From", "<sip:carol@example.test>;tag=c1")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", "gruu@carol")
        .header("CSeq", "1 INVITE")
        .header("Contact", "<sip:carol@192.0.2.20:5060>")
        .build()
        .unwrap();
    sim.peer_send(
        reg,
        SocketAddr::new(ip(REG), 5060),
        SocketAddr::new(ip(UA), 5060),
        Transport::Udp,
        inv.to_bytes(),
    );
    sim.run_for(Duration::from_millis(50));
    let call = sim
        .take_events(ua)
        .into_iter()
        .find_map(|(_, e)| match e {
            siproam_core::Event::IncomingCall { call, .. } => Some(call),
            _ => None,
        })
        .expect("an incoming call");
    sim.with_endpoint(ua, |ep, now| ep.answer(now, call, 200, None))
        .unwrap();
    loop {
        let r = recv(sim, reg);
        if r.message.status() == Some(200) {
            let Some(Ok(Contact::Addr(c))) = r.message.contacts().next() else {
                panic!("no Contact in the 200");
            };
            return c.uri().as_str().to_owned();
        }
    }
}

#[test]
fn a_registrars_pub_gruu_becomes_the_contact_of_invites_and_answers() {
    let (mut sim, ua, reg, cfg) = gruu_setup(false);
    let acc = register_with(
        &mut sim,
        ua,
        reg,
        cfg,
        &[contact_with_gruus(PUB, TEMP)],
        &[],
    );
    let evs = registrations(&mut sim, ua);
    let last = &evs.last().unwrap().1;
    assert_eq!(last.state, RegistrationState::Registered);
    assert_eq!(last.gruu.as_deref(), Some(PUB), "reported with the event");
    let gruu = sim.with_endpoint(ua, |ep, _| ep.account_gruu(acc)).unwrap();
    assert_eq!(
        (gruu.public.as_deref(), gruu.temp.as_deref()),
        (Some(PUB), Some(TEMP))
    );
    assert_eq!(invite_contact(&mut sim, ua, reg), PUB);
    assert_eq!(answer_contact(&mut sim, ua, reg), PUB);
}

#[test]
fn with_outbound_in_force_the_gruu_contact_carries_ob() {
    let (mut sim, ua, reg, cfg) = gruu_setup(true);
    register_with(
        &mut sim,
        ua,
        reg,
        cfg,
        &[contact_with_gruus(PUB, TEMP)],
        &[("Require", "outbound")],
    );
    assert_eq!(invite_contact(&mut sim, ua, reg), format!("{PUB};ob"));
}

#[test]
fn without_gruus_the_contact_is_as_before() {
    let (mut sim, ua, reg, cfg) = gruu_setup(false);
    let acc = register_with(
        &mut sim,
        ua,
        reg,
        cfg,
        &[format!(
            "<{{ours}}>;expires=300;+sip.instance=\"<{INSTANCE}>\""
        )],
        &[],
    );
    assert_eq!(sim.with_endpoint(ua, |ep, _| ep.account_gruu(acc)), None);
    let evs = registrations(&mut sim, ua);
    assert_eq!(evs.last().unwrap().1.gruu, None);
    assert_eq!(
        invite_contact(&mut sim, ua, reg),
        format!("sip:alice@{UA}:5060")
    );
}

#[test]
fn the_gruu_of_another_instances_contact_is_not_ours() {
    let (mut sim, ua, reg, cfg) = gruu_setup(false);
    let other = "urn:uuid:00000000-0000-1000-8000-0000000000bb";
    let acc = register_with(
        &mut sim,
        ua,
        reg,
        cfg,
        &[
            format!(
                "<sip:alice@198.51.100.7:5060>;expires=100;+sip.instance=\"<{other}>\";\
                 pub-gruu=\"sip:alice@example.test;gr={other}\""
            ),
            "<{ours}>;expires=300".to_owned(),
        ],
        &[],
    );
    assert_eq!(sim.with_endpoint(ua, |ep, _| ep.account_gruu(acc)), None);
    assert_eq!(
        invite_contact(&mut sim, ua, reg),
        format!("sip:alice@{UA}:5060")
    );
}

#[test]
fn our_contact_matched_by_uri_alone_gives_its_gruu_and_escapes_are_decoded() {
    let (mut sim, ua, reg, cfg) = gruu_setup(false);
    // no +sip.instance echoed; a quoted-pair inside the quoted value
    let acc = register_with(
        &mut sim,
        ua,
        reg,
        cfg,
        &["<{ours}>;expires=300;pub-gruu=\"sip:alice@example.test;gr=urn:uuid:\\1\"".to_owned()],
        &[],
    );
    let gruu = sim.with_endpoint(ua, |ep, _| ep.account_gruu(acc)).unwrap();
    assert_eq!(
        gruu.public.as_deref(),
        Some("sip:alice@example.test;gr=urn:uuid:1")
    );
    assert_eq!(gruu.temp, None);
    assert_eq!(
        invite_contact(&mut sim, ua, reg),
        "sip:alice@example.test;gr=urn:uuid:1"
    );
}

#[test]
fn malformed_or_non_sip_gruus_are_ignored_without_a_panic() {
    for (pub_gruu, temp_gruu) in [
        ("tel:+15551234567", "mailto:a@example.test"),
        ("", ""),
        ("sip:", "sip:@"),
        ("<sip:alice@example.test;gr>", "sip:alice@example.test;gr>x"),
        ("sip:alice@exa mple.test", "sip:alice@example.test\\"),
        ("\\", "\\\\"),
        ("sip:alice@example.test;gr=\\\"x", "sips:a@[::1"),
        ("https://example.test/gruu", "urn:uuid:1"),
    ] {
        let (mut sim, ua, reg, cfg) = gruu_setup(false);
        let acc = register_with(
            &mut sim,
            ua,
            reg,
            cfg,
            &[contact_with_gruus(pub_gruu, temp_gruu)],
            &[],
        );
        let evs = registrations(&mut sim, ua);
        let last = &evs.last().unwrap().1;
        assert_eq!(
            last.state,
            RegistrationState::Registered,
            "{pub_gruu:?}: still registered"
        );
        assert_eq!(
            sim.with_endpoint(ua, |ep, _| ep.account_gruu(acc)),
            None,
            "{pub_gruu:?} / {temp_gruu:?}"
        );
        assert_eq!(
            invite_contact(&mut sim, ua, reg),
            format!("sip:alice@{UA}:5060"),
            "{pub_gruu:?}"
        );
    }
    // an unquoted URI is no valid parameter value: that Contact is
    // skipped (the registration stands, on the Expires header)
    let (mut sim, ua, reg, cfg) = gruu_setup(false);
    let acc = register_with(
        &mut sim,
        ua,
        reg,
        cfg,
        &["<{ours}>;expires=300;pub-gruu=sip:alice@example.test;gr".to_owned()],
        &[("Expires", "300")],
    );
    assert_eq!(
        registrations(&mut sim, ua).last().unwrap().1.state,
        RegistrationState::Registered
    );
    assert_eq!(sim.with_endpoint(ua, |ep, _| ep.account_gruu(acc)), None);
    // a bare flag is no GRUU; the other one still counts
    let (mut sim, ua, reg, cfg) = gruu_setup(false);
    let acc = register_with(
        &mut sim,
        ua,
        reg,
        cfg,
        &["<{ours}>;expires=300;pub-gruu;temp-gruu=\"sip:t@example.test\"".to_owned()],
        &[],
    );
    let gruu = sim.with_endpoint(ua, |ep, _| ep.account_gruu(acc)).unwrap();
    assert_eq!(
        (gruu.public.as_deref(), gruu.temp.as_deref()),
        (None, Some("sip:t@example.test"))
    );
    // no public GRUU: the Contact stays ours (a temporary GRUU is for
    // anonymous calls, which this stack does not make)
    assert_eq!(
        invite_contact(&mut sim, ua, reg),
        format!("sip:alice@{UA}:5060")
    );
}

#[test]
fn a_later_2xx_without_gruus_forgets_them() {
    let (mut sim, ua, reg, cfg) = gruu_setup(false);
    let acc = register_with(
        &mut sim,
        ua,
        reg,
        cfg,
        &[contact_with_gruus(PUB, TEMP)],
        &[],
    );
    assert!(sim
        .with_endpoint(ua, |ep, _| ep.account_gruu(acc))
        .is_some());
    // the refresh's 2xx has none
    let r = recv(&mut sim, reg);
    assert_eq!(r.message.method(), Some(Method::Register));
    let contact = r
        .message
        .header(siproam_sip::HeaderName::Contact)
        .unwrap()
        .to_owned();
    answer(
        &mut sim,
        reg,
        &r,
        200,
        &[("Contact", &format!("{contact};expires=300"))],
    );
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.with_endpoint(ua, |ep, _| ep.account_gruu(acc)), None);
    assert_eq!(
        invite_contact(&mut sim, ua, reg),
        format!("sip:alice@{UA}:5060")
    );
}
