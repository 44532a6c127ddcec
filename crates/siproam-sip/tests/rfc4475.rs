//! The RFC 4475 torture tests, bit-exact from the RFC's archive
//! (`tests/rfc4475/*.dat`, expectations in `MANIFEST.tsv`).
//!
//! Every message is run through what the stack does with a datagram:
//! `Message::parse`, `Message::validate`, then the UAS policy
//! (`Message::check_policy`). Valid ones must pass with the right values;
//! invalid ones must be rejected with the status the RFC names (or
//! dropped, for responses).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;

use bytes::Bytes;
use siproam_sip::{Answer, Contact, HeaderName, Host, Message, Method, Policy, Uri};

fn load(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/rfc4475")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Parse, validate and apply the default UAS policy, as the stack does.
fn accept(bytes: Bytes) -> Result<Message, Answer> {
    let msg = Message::parse(bytes).map_err(|e| e.answer())?;
    msg.validate().map_err(|e| e.answer())?;
    msg.check_policy(&Policy::default())
        .map_err(|e| e.answer())?;
    Ok(msg)
}

fn parse_ok(name: &str) -> Message {
    let msg = Message::parse(load(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    msg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    msg
}

fn sip_user(uri: &Uri<'_>) -> Vec<u8> {
    uri.as_sip()
        .and_then(|u| u.user_unescaped())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

#[test]
fn manifest_outcomes() {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rfc4475/MANIFEST.tsv"),
    )
    .unwrap();
    let mut count = 0;
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (name, expected, notes) = (cols[0], cols[2], cols.get(3).copied().unwrap_or(""));
        let outcome = accept(load(name)).map(|_| ());
        // application-level answers our UAS policy gives
        let app: Option<u16> = match name {
            "unkscm.dat" | "novelsc.dat" => Some(416),
            "bext01.dat" => Some(420),
            "invut.dat" => Some(415),
            "sdp01.dat" => Some(406),
            _ => None,
        };
        match (expected, app) {
            ("valid", None) => assert!(
                outcome.is_ok(),
                "{name} must be accepted: {:?} ({notes})",
                outcome.err()
            ),
            ("valid", Some(code)) => {
                assert!(
                    Message::parse(load(name))
                        .and_then(|m| m.validate())
                        .is_ok(),
                    "{name} must parse"
                );
                assert_eq!(outcome.err(), Some(Answer::Respond(code)), "{name}");
            }
            ("drop", _) => assert_eq!(outcome.err(), Some(Answer::Drop), "{name}"),
            // RFC 4475 §3.1.2.18: 501 preferred, 400 acceptable
            ("501", _) => assert!(
                matches!(outcome, Err(Answer::Respond(400 | 501))),
                "{name}: {:?}",
                outcome.err()
            ),
            (code, _) => {
                let code: u16 = code.parse().unwrap();
                assert_eq!(
                    outcome.err(),
                    Some(Answer::Respond(code)),
                    "{name} ({notes})"
                );
            }
        }
        count += 1;
    }
    assert_eq!(count, 49, "every RFC 4475 message is in the manifest");
}

#[test]
fn wsinv() {
    let m = parse_ok("wsinv.dat");
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(
        m.request_uri_str(),
        Some("sip:vivekg@chair-dnrc.example.com;unknownparam")
    );
    assert!(m
        .request_uri()
        .unwrap()
        .as_sip()
        .unwrap()
        .params()
        .contains("unknownparam"));
    assert_eq!(m.to().unwrap().tag(), Some("1918181833n"));
    let from = m.from().unwrap();
    assert_eq!(from.display_name().as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(m.max_forwards(), Some(Ok(68)));
    assert_eq!(m.call_id(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!((m.cseq().seq, m.cseq().method), (9, Method::Invite));
    assert_eq!(m.body().len(), 150);
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(
        vias.iter().map(|v| v.transport()).collect::<Vec<_>>(),
        ["UDP", "TCP", "UDP"]
    );
    assert_eq!(
        vias.iter().map(|v| v.branch().unwrap()).collect::<Vec<_>>(),
        ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    );
    assert_eq!(vias[2].host(), Host::V4("192.168.255.111".parse().unwrap()));
    let nf = m.header_by_name("NewFangledHeader").unwrap();
    assert!(nf.starts_with("newfangled value") && nf.ends_with("continued newfangled value"));
    assert_eq!(
        m.header_by_name("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
        panic!("contact")
    };
    assert_eq!(c.display_name().as_deref(), Some("Quoted string \"\""));
    assert_eq!(c.params().value("newparam"), Some("newvalue"));
    assert!(c.params().contains("secondparam"));
    assert_eq!(c.q(), Some(330));
    assert!(m
        .routes()
        .next()
        .unwrap()
        .unwrap()
        .uri()
        .as_sip()
        .unwrap()
        .lr());
    assert_eq!(m.header(HeaderName::Subject), Some(""));
}

#[test]
fn intmeth() {
    let m = parse_ok("intmeth.dat");
    assert_eq!(
        m.method(),
        Some(Method::Extension(
            "!interesting-Method0123456789_*+`.%indeed'~"
        ))
    );
    let uri = m.request_uri().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!(
        sip.user(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        sip.password(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(sip.host_str(), "example.com");
    assert_eq!(
        m.to().unwrap().display_name().as_deref(),
        Some("BEL:\x07 NUL:\0 DEL:\x7f")
    );
    assert_eq!(m.call_id(), "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
    assert_eq!(
        m.header_by_name("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
}

#[test]
fn escapes() {
    let m = parse_ok("esc01.dat");
    assert_eq!(
        sip_user(&m.request_uri().unwrap()),
        b"sips:user@example.com"
    );
    assert_eq!(
        m.request_uri().unwrap().as_sip().unwrap().host_str(),
        "example.net"
    );
    assert_eq!(sip_user(m.to().unwrap().uri()), b"user");
    assert_eq!(sip_user(m.from().unwrap().uri()), b"I have spaces");
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
        panic!()
    };
    assert_eq!(sip_user(c.uri()), b"caller");

    let m = parse_ok("escnull.dat");
    assert_eq!(sip_user(m.to().unwrap().uri()), b"null-\0-null");
    let contacts: Vec<_> = m
        .contacts()
        .map(|c| match c.unwrap() {
            Contact::Addr(a) => *a.uri(),
            Contact::Star => panic!(),
        })
        .collect();
    assert_eq!(contacts.len(), 2);
    assert_eq!(sip_user(&contacts[0]), b"\0");
    assert_eq!(sip_user(&contacts[1]), b"\0\0");
    assert!(!contacts[0].equivalent(&contacts[1]));

    let m = parse_ok("esc02.dat");
    assert_eq!(m.method(), Some(Method::Extension("RE%47IST%45R")));
    assert_ne!(m.method(), Some(Method::Register));
    assert_eq!(m.to().unwrap().display_name().as_deref(), Some("%Z%45"));
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(
        m.header_by_name("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK209%fzsnel234"));

    let m = parse_ok("semiuri.dat");
    assert_eq!(
        sip_user(&m.request_uri().unwrap()),
        b"user;par=u@example.net"
    );
    assert_eq!(m.elements(HeaderName::Accept).count(), 6);
}

#[test]
fn odd_but_valid_forms() {
    let m = parse_ok("lwsdisp.dat");
    assert_eq!(m.from().unwrap().display_name().as_deref(), Some("caller"));

    let m = parse_ok("longreq.dat");
    assert_eq!(m.vias().count(), 34);
    assert!(m.vias().all(|v| v.is_ok()));
    assert!(m
        .to()
        .unwrap()
        .display_name()
        .unwrap()
        .contains("extremeextreme"));

    let raw = load("dblreq.dat");
    let m = parse_ok("dblreq.dat");
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(
        m.to_bytes(),
        raw.slice(..300),
        "only the first message is taken"
    );
    assert!(m.body().is_empty());

    let m = parse_ok("transports.dat");
    let t: Vec<_> = m.vias().map(|v| v.unwrap().transport()).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    assert_eq!(m.call_id(), "transports.kijh4akdnaqjkwendsasfdj");

    let m = parse_ok("mpart01.dat");
    assert_eq!(m.body().len(), 553);
    let ct = m.content_type().unwrap().unwrap();
    assert_eq!(ct.value(), "multipart/mixed");
    assert_eq!(ct.params().value("boundary"), Some("7a9cbec02ceef655"));

    let m = parse_ok("unreason.dat");
    assert_eq!(m.status(), Some(200));
    assert_eq!(
        m.reason(),
        Some("= 2**3 * 5**2 но сто девяносто девять - простое")
    );
    let m = parse_ok("noreason.dat");
    assert_eq!((m.status(), m.reason()), (Some(100), Some("")));

    let m = parse_ok("badbranch.dat");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK"));

    let m = parse_ok("unksm2.dat");
    assert!(matches!(
        m.to().unwrap().uri(),
        Uri::Other { scheme: "isbn", .. }
    ));

    let m = parse_ok("regaut01.dat");
    let creds = m.authorization().next().unwrap().unwrap();
    assert_eq!(creds.scheme(), "NoOneKnowsThisScheme");
    assert!(!creds.is_digest());

    let m = parse_ok("bcast.dat");
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias[1].host(), Host::V4(std::net::Ipv4Addr::BROADCAST));

    assert_eq!(parse_ok("zeromf.dat").max_forwards(), Some(Ok(0)));

    let m = parse_ok("inv2543.dat");
    assert_eq!(m.top_via().unwrap().branch(), None);
    assert_eq!(m.body().len(), 105);
    assert_eq!(m.from().unwrap().tag(), None);
}

#[test]
fn contact_parameters_by_form() {
    let m = parse_ok("cparam01.dat");
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
        panic!()
    };
    assert!(
        c.params().contains("unknownparam"),
        "addr-spec form: a header parameter"
    );
    assert!(!c.uri().as_sip().unwrap().params().contains("unknownparam"));

    let m = parse_ok("cparam02.dat");
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
        panic!()
    };
    assert!(!c.params().contains("unknownparam"));
    assert!(
        c.uri().as_sip().unwrap().params().contains("unknownparam"),
        "inside <>: a URI parameter"
    );

    let m = parse_ok("regescrt.dat");
    let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
        panic!()
    };
    assert_eq!(
        c.uri().as_sip().unwrap().headers(),
        "Route=%3Csip:sip.example.com%3E"
    );
}

#[test]
fn valid_messages_print_back_and_survive_an_edit() {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rfc4475/MANIFEST.tsv"),
    )
    .unwrap();
    for line in manifest.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.get(2) != Some(&"valid") {
            continue;
        }
        let raw = load(cols[0]);
        let mut m = Message::parse(raw.clone()).unwrap();
        let printed = m.to_bytes();
        assert!(
            raw.starts_with(&printed),
            "{}: unedited message prints as received",
            cols[0]
        );
        m.set_top_via_param("received", Some(Some("198.51.100.9")))
            .unwrap_or_else(|e| panic!("{}: {e}", cols[0]));
        let edited = Message::parse(m.to_bytes()).unwrap_or_else(|e| panic!("{}: {e}", cols[0]));
        assert_eq!(
            edited.top_via().unwrap().received(),
            Some("198.51.100.9"),
            "{}",
            cols[0]
        );
        assert_eq!(edited, m, "{}", cols[0]);
        // every field but the edited top Via is byte-for-byte the same
        let before: Vec<_> = Message::parse(raw.clone())
            .unwrap()
            .headers()
            .map(|h| (h.name_text.to_owned(), h.value.to_owned()))
            .collect();
        let after: Vec<_> = edited
            .headers()
            .map(|h| (h.name_text.to_owned(), h.value.to_owned()))
            .collect();
        let first_via = before
            .iter()
            .position(|(n, _)| HeaderName::from_bytes(n.as_bytes()) == HeaderName::Via)
            .unwrap();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            if i != first_via {
                assert_eq!(b, a, "{}: field {i} changed", cols[0]);
            }
        }
        assert_eq!(edited.body(), Message::parse(raw).unwrap().body());
    }
}
