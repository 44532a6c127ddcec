//! The editing API, limits and error answers of `Message`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use siproam_sip::{
    Answer, EditError, ErrorKind, HeaderName, Limits, Message, MessageBuilder, Method,
};

const REGISTER: &str = "REGISTER sip:registrar.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKnashds7;rport, SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: Bob <sip:bob@example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: sip:bob@10.0.0.2:5060;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1\r\n\
X-Custom:   keep   me  \r\n\
Content-Length: 0\r\n\r\n";

fn reg() -> Message {
    Message::parse(Bytes::from_static(REGISTER.as_bytes())).unwrap()
}

#[test]
fn contact_rewrite_after_an_ip_change() {
    let mut m = reg();
    m.set_header_uri(HeaderName::Contact, 0, "sip:bob@203.0.113.9:5062")
        .unwrap();
    m.set_uri_param(HeaderName::Contact, 0, "ob", Some(None))
        .unwrap();
    let out = m.to_bytes();
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.contains(
        "Contact: <sip:bob@203.0.113.9:5062;ob>;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1\r\n"
    ), "{text}");
    assert!(
        text.contains("X-Custom:   keep   me  \r\n"),
        "untouched headers keep their bytes"
    );
    let back = Message::parse(out).unwrap();
    let Some(Ok(siproam_sip::Contact::Addr(c))) = back.contacts().next() else {
        panic!()
    };
    assert_eq!(c.reg_id(), Some(1));
    assert!(c.uri().as_sip().unwrap().ob());
    assert_eq!(
        c.sip_instance(),
        Some("urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF")
    );
}

#[test]
fn via_received_and_rport_on_the_top_element_only() {
    let mut m = reg();
    m.set_top_via_param("received", Some(Some("198.51.100.4")))
        .unwrap();
    m.set_top_via_param("rport", Some(Some("40123"))).unwrap();
    let back = Message::parse(m.to_bytes()).unwrap();
    let vias: Vec<_> = back.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias[0].received(), Some("198.51.100.4"));
    assert_eq!(vias[0].rport(), Some(Some(40123)));
    assert_eq!(vias[1].received(), None);
    assert_eq!(vias[1].branch(), Some("z9hG4bKp1"));
    // a proxy strips its Via
    let mut m = back;
    m.remove_top_via().unwrap();
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKp1"));
    assert_eq!(
        m.remove_top_via(),
        Err(EditError::Mandatory(HeaderName::Via))
    );
}

#[test]
fn header_set_insert_remove() {
    let mut m = reg();
    assert_eq!(
        m.remove_header("Call-ID"),
        Err(EditError::Mandatory(HeaderName::CallId))
    );
    assert_eq!(
        m.remove_header("f"),
        Err(EditError::Mandatory(HeaderName::From))
    );
    assert_eq!(
        m.set_header("Call-ID", "a b"),
        Err(EditError::InvalidValue(siproam_sip::ValueError::Syntax))
    );
    assert_eq!(
        m.set_header("CSeq", "1827 INVITE"),
        Err(EditError::InvalidValue(siproam_sip::ValueError::Syntax)),
        "method must match"
    );
    m.set_header("CSeq", "1827 REGISTER").unwrap();
    assert_eq!(m.cseq().seq, 1827);
    assert_eq!(
        m.set_header("X-Evil", "a\r\nVia: injected"),
        Err(EditError::InvalidValue(siproam_sip::ValueError::Syntax))
    );
    assert_eq!(m.set_header("Bad Name", "x"), Err(EditError::InvalidName));
    m.push_header("Supported", "outbound, path").unwrap();
    m.prepend_header("Via", "SIP/2.0/TCP edge.example.com;branch=z9hG4bKe1")
        .unwrap();
    assert_eq!(
        m.insert_header(3, "Call-ID", "x@y"),
        Err(EditError::InvalidValue(
            siproam_sip::ValueError::MultipleValues
        ))
    );
    assert_eq!(m.remove_header("x-custom"), Ok(1));
    let back = Message::parse(m.to_bytes()).unwrap();
    assert_eq!(back.top_via().unwrap().host_str(), "edge.example.com");
    assert!(back.has_token(HeaderName::Supported, "OUTBOUND"));
    assert_eq!(back.header_by_name("X-Custom"), None);
    assert_eq!(back, m);
}

#[test]
fn set_header_replaces_all_occurrences_in_place() {
    let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nX-A: 1\r\nX-B: 2\r\nx-a: 3\r\nContent-Length: 0\r\n\r\n";
    let mut m = Message::parse(Bytes::from_static(raw.as_bytes())).unwrap();
    m.set_header("X-A", "9").unwrap();
    let out = String::from_utf8(m.to_bytes().to_vec()).unwrap();
    assert!(
        out.contains("X-A: 9\r\nX-B: 2\r\nContent-Length: 0\r\n"),
        "{out}"
    );
}

#[test]
fn request_uri_and_body() {
    let mut m = reg();
    m.set_request_uri("sip:other.example.com;transport=tcp")
        .unwrap();
    assert_eq!(
        m.set_request_uri("not a uri"),
        Err(EditError::InvalidUri(siproam_sip::UriError::Whitespace))
    );
    m.set_body(Bytes::from_static(b"v=0\r\n"), Some("application/sdp"))
        .unwrap();
    let back = Message::parse(m.to_bytes()).unwrap();
    assert_eq!(
        back.request_uri_str(),
        Some("sip:other.example.com;transport=tcp")
    );
    assert_eq!(back.body().as_ref(), b"v=0\r\n");
    assert_eq!(back.header(HeaderName::ContentLength), Some("5"));
    assert_eq!(
        back.content_type().unwrap().unwrap().value(),
        "application/sdp"
    );
}

#[test]
fn unedited_messages_are_not_copied() {
    let raw = Bytes::from_static(REGISTER.as_bytes());
    let m = Message::parse(raw.clone()).unwrap();
    let out = m.to_bytes();
    assert_eq!(
        out.as_ptr(),
        raw.as_ptr(),
        "printing an unedited message hands back the same bytes"
    );
}

#[test]
fn limits_answer_513() {
    let mut big = String::from(
        REGISTER
            .trim_end_matches("\r\n\r\n")
            .trim_end_matches("Content-Length: 0"),
    );
    big.push_str(&"X-Pad: 0123456789\r\n".repeat(300));
    big.push_str("Content-Length: 0\r\n\r\n");
    let err = Message::parse(Bytes::from(big.clone())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooManyHeaders { limit: 256 });
    assert_eq!(err.answer(), Answer::Respond(513));
    let limits = Limits {
        max_message: 1000,
        max_headers: 1000,
        max_line: 16 * 1024,
    };
    let err = Message::parse_with(Bytes::from(big), &limits).unwrap_err();
    assert_eq!(err.answer(), Answer::Respond(513));
    let long = REGISTER.replace("keep   me", &"k".repeat(20_000));
    let err = Message::parse(Bytes::from(long)).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::LineTooLong { .. }),
        "{err:?}"
    );
}

#[test]
fn builder_cannot_inject_headers() {
    let m = MessageBuilder::request(Method::Options, "sip:b@h")
        .header("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")
        .header("From", "<sip:a@h>;tag=1")
        .header("To", "<sip:b@h>")
        .header("Call-ID", "c@h")
        .header("CSeq", "1 OPTIONS")
        .header("Subject", "hi\r\nContact: <sip:evil@h>")
        .build()
        .unwrap();
    assert_eq!(m.contacts().count(), 0);
    assert_eq!(
        m.header(HeaderName::Subject),
        Some("hi  Contact: <sip:evil@h>")
    );
}

#[test]
fn mandatory_headers_and_mismatches() {
    let missing_to = REGISTER.replace("To: Bob <sip:bob@example.com>\r\n", "");
    let err = Message::parse(Bytes::from(missing_to)).unwrap_err();
    assert_eq!(
        (err.kind(), err.answer()),
        (
            ErrorKind::MissingHeader(HeaderName::To),
            Answer::Respond(400)
        )
    );
    let dup = REGISTER.replace(
        "CSeq: 1826 REGISTER\r\n",
        "CSeq: 1826 REGISTER\r\nCSeq: 1827 REGISTER\r\n",
    );
    assert_eq!(
        Message::parse(Bytes::from(dup)).unwrap_err().kind(),
        ErrorKind::DuplicateHeader(HeaderName::CSeq)
    );
    let trunc = REGISTER.replace("Content-Length: 0", "Content-Length: 10");
    assert_eq!(
        Message::parse(Bytes::from(trunc)).unwrap_err().kind(),
        ErrorKind::BodyTruncated {
            declared: 10,
            available: 0
        }
    );
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    assert_eq!(
        Message::parse(Bytes::from_static(resp.as_bytes()))
            .unwrap_err()
            .answer(),
        Answer::Drop
    );
}

#[test]
fn empty_via_elements_do_not_count_as_vias() {
    // regression (fuzz): a trailing comma made an empty second element, the
    // only real Via was removed and the message no longer parsed
    let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1,\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    let mut m = Message::parse(Bytes::from_static(raw.as_bytes())).unwrap();
    assert_eq!(
        m.remove_top_via(),
        Err(EditError::Mandatory(HeaderName::Via))
    );
    let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1 ,,\r\n  SIP/2.0/TCP p;branch=z9hG4bK2\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    let mut m = Message::parse(Bytes::from_static(raw.as_bytes())).unwrap();
    m.remove_top_via().unwrap();
    let back = Message::parse(m.to_bytes()).unwrap();
    assert_eq!(back.top_via().unwrap().branch(), Some("z9hG4bK2"));
    assert_eq!(
        back.header(HeaderName::Via),
        Some("SIP/2.0/TCP p;branch=z9hG4bK2")
    );
}

#[test]
fn only_lws_separates_via_elements() {
    // regression (fuzz): a form feed is not LWS, so "\x0c" is a (bad) Via
    // element; removing the top Via must keep it rather than drop the field
    let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1,\t\x0c\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    let mut m = Message::parse(Bytes::from_static(raw.as_bytes())).unwrap();
    m.remove_top_via().unwrap();
    let back = Message::parse(m.to_bytes()).unwrap();
    assert_eq!(back.header(HeaderName::Via), Some("\x0c"));
}

#[test]
fn response_to_copies_the_transaction_headers() {
    let req = reg();
    let resp = MessageBuilder::response_to(&req, 401, "Unauthorized", Some("srv1"))
        .header(
            "WWW-Authenticate",
            "Digest realm=\"example.com\", nonce=\"n1\"",
        )
        .build()
        .unwrap();
    assert_eq!(resp.status(), Some(401));
    assert_eq!(resp.vias().count(), 2);
    assert_eq!(resp.top_via().unwrap().branch(), Some("z9hG4bKnashds7"));
    assert_eq!(resp.call_id(), req.call_id());
    assert_eq!(resp.cseq(), req.cseq());
    assert_eq!(resp.to().unwrap().tag(), Some("srv1"));
    assert_eq!(resp.from().unwrap().tag(), Some("456248"));
    let trying = MessageBuilder::response_to(&req, 100, "Trying", Some("srv1"))
        .build()
        .unwrap();
    assert_eq!(trying.to().unwrap().tag(), None, "no To tag on 100");
}

/// A builder's header value, by full or compact name, trimmed; the first
/// of several; none when absent.
#[test]
fn a_builder_gives_back_a_header_value() {
    let b = MessageBuilder::request(Method::Message, "sip:bob@example.test")
        .header("f", " <sip:alice@example.test>;tag=1 ")
        .header("Route", "<sip:p1;lr>")
        .header("Route", "<sip:p2;lr>");
    assert_eq!(
        b.header_value(HeaderName::From),
        Some("<sip:alice@example.test>;tag=1")
    );
    assert_eq!(b.header_value(HeaderName::Route), Some("<sip:p1;lr>"));
    assert_eq!(b.header_value(HeaderName::To), None);
}
