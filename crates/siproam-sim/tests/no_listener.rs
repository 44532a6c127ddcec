//! A client with no listener (issue 12 item 9; PJSIP's
//! `contact_use_src_port`): with no listen point of the registrar's stream
//! transport, the flow is opened first and its own address is the Contact
//! and the Via; the registrar then reaches the UA over that flow — an
//! INVITE on the same connection is answered on it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use siproam_core::{Event, Transport};
use siproam_sip::{Contact, MessageBuilder, Method};
use support::{ip, ok, recv, registrations, setup, REG, UA};

#[test]
fn with_no_listener_the_flows_own_address_is_the_contact_and_requests_come_over_it() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let (mut sim, ua, reg, mut cfg) = setup(transport);
        cfg.password = None;
        sim.endpoint(ua).clear_listen_points();
        assert!(sim
            .endpoint(ua)
            .needs_contact_flow(transport, cfg.registrar.remote));
        // the driver opened the connection first: its ephemeral address
        let flow_addr = SocketAddr::new(ip(UA), 41234);
        cfg.registrar.local = Some(flow_addr);
        sim.with_endpoint(ua, |ep, now| ep.register(now, cfg));
        let r = recv(&mut sim, reg);
        assert_eq!(r.from, flow_addr, "{transport:?}");
        let contact = match r.message.contacts().next().unwrap().unwrap() {
            Contact::Addr(a) => a.uri().to_string(),
            Contact::Star => panic!("a star"),
        };
        let param = transport.param();
        assert_eq!(contact, format!("sip:alice@{flow_addr};transport={param}"));
        let via = r.message.top_via().unwrap();
        assert_eq!(
            (via.host_str(), via.port()),
            (UA, Some(flow_addr.port())),
            "{transport:?}"
        );
        ok(&mut sim, reg, &r, 300);
        sim.run_for(Duration::from_millis(100));
        let regs = registrations(&mut sim, ua);
        let last = &regs.last().unwrap().1;
        assert_eq!(last.contact, contact);

        // the registrar reaches the UA over the same connection
        let invite = MessageBuilder::request(Method::Invite, &contact)
            .header(
                "Via",
                &format!(
                    "SIP/2.0/{} {REG}:5060;branch=z9hG4bKnl1",
                    param.to_uppercase()
                ),
            )
            .header("From", "<sip:bob@example.test>;tag=b1")
            .header("To", "<sip:alice@example.test>")
            .header("Call-ID", "nolisten@bob")
            .header("CSeq", "1 INVITE")
            .header(
                "Contact",
                &format!("<sip:bob@{REG}:5060;transport={param}>"),
            )
            .build()
            .unwrap();
        sim.peer_reply(reg, &r, invite.to_bytes());
        sim.run_for(Duration::from_millis(50));
        let call = sim
            .take_events(ua)
            .into_iter()
            .find_map(|(_, e)| match e {
                Event::IncomingCall { call, .. } => Some(call),
                _ => None,
            })
            .expect("the INVITE over the flow reached the UA");
        sim.with_endpoint(ua, |ep, now| ep.answer(now, call, 180, None))
            .unwrap();
        let mut answers = Vec::new();
        while let Some(m) = sim.run_until_peer_receives(reg, Duration::from_secs(1)) {
            answers.push(m);
        }
        let ringing = answers
            .iter()
            .find(|m| m.message.status() == Some(180))
            .expect("a 180");
        // on the registration's connection, naming the flow's address
        assert_eq!(ringing.conn, r.conn, "{transport:?}");
        let contact_180 = match ringing.message.contacts().next().unwrap().unwrap() {
            Contact::Addr(a) => a.uri().to_string(),
            Contact::Star => panic!("a star"),
        };
        assert!(
            contact_180.starts_with(&format!("sip:alice@{flow_addr}")),
            "{contact_180}"
        );
        assert!(
            answers.iter().all(|m| m.conn == r.conn),
            "everything came over the flow"
        );
    }
}
