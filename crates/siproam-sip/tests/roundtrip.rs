//! Property tests: what the printer produces parses back to an equal
//! message, and an edit leaves every other header byte-for-byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use proptest::prelude::*;
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,11}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,8}(\\.[a-z][a-z0-9]{0,8}){0,2}",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        (0u16..=0xffff, 1u16..=0xffff).prop_map(|(a, b)| format!("[2001:db8::{a:x}:{b:x}]")),
    ]
}

fn sip_uri() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,10}|[a-z]{1,4}%[0-9A-F]{2}[a-z]{0,3}"),
        host(),
        prop::option::of(1u16..=65535),
        prop::collection::vec(
            (
                "[a-z][a-z0-9-]{0,6}",
                prop::option::of("[a-zA-Z0-9.-]{1,8}"),
            ),
            0..3,
        ),
        prop::bool::ANY,
    )
        .prop_map(|(user, host, port, params, secure)| {
            let mut s = String::from(if secure { "sips:" } else { "sip:" });
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for (n, v) in params {
                s.push(';');
                s.push_str(&n);
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(&v);
                }
            }
            s
        })
}

fn display() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z]{1,8}( [a-zA-Z]{1,8}){0,2}".prop_map(|d| format!("{d} ")),
        "[a-zA-Z ,;<>@é]{0,12}".prop_map(|d| format!("\"{}\" ", d)),
        "[a-z]{1,5}".prop_map(|d| format!("\"{d} \\\"q\\\"\" ")),
    ]
}

fn name_addr(tag: bool) -> impl Strategy<Value = String> {
    (display(), sip_uri(), prop::option::of("[a-zA-Z0-9]{1,10}")).prop_map(move |(d, u, t)| {
        let mut s = format!("{d}<{u}>");
        if let (true, Some(t)) = (tag, t) {
            s.push_str(&format!(";tag={t}"));
        }
        s
    })
}

fn via() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("UDP"), Just("TCP"), Just("TLS"), Just("WS")],
        host(),
        prop::option::of(1u16..=65535),
        "[a-zA-Z0-9]{1,16}",
        prop::bool::ANY,
    )
        .prop_map(|(t, h, p, b, rport)| {
            let port = p.map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "SIP/2.0/{t} {h}{port};branch=z9hG4bK{b}{}",
                if rport { ";rport" } else { "" }
            )
        })
}

/// A header line as text: a (possibly compact, oddly spaced) name and a
/// value that may be folded.
fn extra_header() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        "X-[A-Za-z0-9-]{1,10}",
        Just("Subject".to_owned()),
        Just("User-Agent".to_owned()),
        Just("Supported".to_owned()),
        Just("Allow".to_owned()),
        Just("Record-Route".to_owned()),
        Just("Route".to_owned()),
        Just("Contact".to_owned()),
        Just("Via".to_owned()),
        Just("Expires".to_owned()),
    ];
    let value = prop_oneof![
        "[ -~]{0,30}".prop_map(|s| s.trim().to_owned()),
        "[a-zA-Zé日本 ]{1,12}".prop_map(|s| s.trim().to_owned()),
        "[a-z]{1,6}".prop_map(|s| format!("{s}\r\n  continued")),
    ];
    (name, value)
}

#[derive(Debug, Clone)]
struct Generated {
    text: Vec<u8>,
    /// The exact bytes of each header line, in order.
    lines: Vec<Vec<u8>>,
}

fn message() -> impl Strategy<Value = Generated> {
    (
        prop::bool::ANY,
        prop_oneof![
            Just("INVITE".to_owned()),
            Just("REGISTER".to_owned()),
            Just("OPTIONS".to_owned()),
            Just("BYE".to_owned()),
            token()
        ],
        sip_uri(),
        (100u16..=699, "[a-zA-Z ]{0,12}"),
        prop::collection::vec(via(), 1..4),
        name_addr(true),
        name_addr(true),
        "[a-zA-Z0-9.-]{1,20}(@[a-z0-9.]{1,10})?",
        0u32..(1 << 31),
        prop::collection::vec(extra_header(), 0..8),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::bool::ANY,
    )
        .prop_map(
            |(
                is_req,
                method,
                uri,
                (code, reason),
                vias,
                from,
                to,
                call_id,
                seq,
                extras,
                body,
                compact,
            )| {
                let start = if is_req {
                    format!("{method} {uri} SIP/2.0\r\n")
                } else {
                    format!("SIP/2.0 {code} {}\r\n", reason.trim())
                };
                let cseq_method = if is_req { method.as_str() } else { "INVITE" };
                let mut lines: Vec<Vec<u8>> = Vec::new();
                let mut push = |n: &str, v: &str| lines.push(format!("{n}: {v}\r\n").into_bytes());
                for v in &vias {
                    push(if compact { "v" } else { "Via" }, v);
                }
                push(if compact { "f" } else { "From" }, &from);
                push("To", &to);
                push(if compact { "i" } else { "Call-ID" }, &call_id);
                push("CSeq", &format!("{seq} {cseq_method}"));
                for (n, v) in &extras {
                    push(n, v);
                }
                push(
                    if compact { "l" } else { "Content-Length" },
                    &body.len().to_string(),
                );
                let mut text = start.into_bytes();
                for l in &lines {
                    text.extend_from_slice(l);
                }
                text.extend_from_slice(b"\r\n");
                text.extend_from_slice(&body);
                Generated { text, lines }
            },
        )
}

/// Checks that `needles` appear in `hay` in order, each byte-for-byte.
fn appear_in_order(hay: &[u8], needles: &[&[u8]]) -> bool {
    let mut from = 0;
    for n in needles {
        match hay[from..].windows(n.len()).position(|w| w == *n) {
            Some(p) => from += p + n.len(),
            None => return false,
        }
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_messages_parse_and_print_back(g in message()) {
        let msg = Message::parse(Bytes::from(g.text.clone())).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&g.text))))?;
        prop_assert_eq!(&msg.to_bytes()[..], &g.text[..]);
        let again = Message::parse(msg.to_bytes()).unwrap();
        prop_assert_eq!(&again, &msg);
        prop_assert_eq!(msg.headers().count(), g.lines.len());
    }

    #[test]
    fn edited_messages_print_and_parse_back_equal(g in message(), which in 0usize..6, val in "[a-zA-Z0-9]{1,10}") {
        let mut msg = Message::parse(Bytes::from(g.text.clone())).unwrap();
        // empty list elements are not Vias (see message_api's regression tests)
        let vias = msg.elements(HeaderName::Via).filter(|e| !e.is_empty()).count();
        let edited_name = match which {
            0 => { msg.set_top_via_param("received", Some(Some("198.51.100.1"))).unwrap(); HeaderName::Via }
            1 => { msg.set_header_param(HeaderName::To, 0, "tag", Some(Some(&val))).unwrap(); HeaderName::To }
            2 => { msg.set_header("X-Added", &val).unwrap(); HeaderName::Other }
            3 => { msg.set_uri_param(HeaderName::From, 0, "ob", Some(None)).unwrap(); HeaderName::From }
            4 => {
                let r = msg.remove_top_via();
                prop_assert_eq!(r.is_ok(), vias > 1, "only the last Via is refused");
                HeaderName::Via
            }
            _ => { msg.set_body(Bytes::from(val.clone().into_bytes()), Some("text/plain")).unwrap(); HeaderName::ContentLength }
        };
        let printed = msg.to_bytes();
        let back = Message::parse(printed.clone()).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&printed))))?;
        prop_assert_eq!(&back, &msg);
        if which == 4 && vias > 1 {
            prop_assert_eq!(back.elements(HeaderName::Via).filter(|e| !e.is_empty()).count(), vias - 1);
        }
        // every header line not of the edited kind is still there, byte-for-byte, in order
        let untouched: Vec<&[u8]> = g.lines.iter().map(|l| l.as_slice()).filter(|l| {
            let name = l.split(|&b| b == b':').next().unwrap_or_default();
            let n = HeaderName::from_bytes(name);
            n != edited_name && !(which == 5 && n == HeaderName::ContentType) && !(which == 2 && name.eq_ignore_ascii_case(b"X-Added"))
        }).collect();
        prop_assert!(appear_in_order(&printed, &untouched), "{}", String::from_utf8_lossy(&printed));
    }

    #[test]
    fn builder_output_parses(uri in sip_uri(), from in name_addr(true), to in name_addr(false), body in "[ -~]{0,40}") {
        let msg = MessageBuilder::request(Method::Message, &uri)
            .header("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx")
            .header("From", &from)
            .header("To", &to)
            .header("Call-ID", "b1@h")
            .header("CSeq", "1 MESSAGE")
            .body("text/plain", Bytes::from(body.clone().into_bytes()))
            .build()
            .unwrap();
        prop_assert_eq!(msg.body().as_ref(), body.as_bytes());
        prop_assert!(msg.validate().is_ok());
        prop_assert_eq!(Message::parse(msg.to_bytes()).unwrap(), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = Message::parse(Bytes::from(data)) {
            let _ = m.validate();
            let _ = m.to_bytes();
        }
    }
}
