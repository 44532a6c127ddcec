//! Any bytes through the parser, every typed view, validation, the UAS
//! policy, printing and edits: nothing may panic, and whatever parses must
//! print to bytes that parse back to an equal message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use siproam_sip::{HeaderName, Message, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(mut msg) = Message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = msg.validate();
    let _ = msg.check_policy(&Policy::default());
    let _ = (msg.call_id(), msg.cseq(), msg.method(), msg.status(), msg.request_uri());
    let _ = msg.top_via().map(|v| (v.branch(), v.received(), v.rport(), v.keep(), v.ttl()));
    for v in msg.vias().flatten() {
        let _ = (v.host(), v.port(), v.maddr());
    }
    let _ = msg.from().map(|f| (f.tag(), f.display_name()));
    let _ = msg.to().map(|t| t.uri().as_sip().map(|u| u.user_unescaped()));
    for c in msg.contacts().flatten() {
        if let siproam_sip::Contact::Addr(a) = c {
            let _ = (a.expires(), a.q(), a.sip_instance(), a.reg_id(), a.pub_gruu());
        }
    }
    let _ = msg.routes().count() + msg.record_routes().count() + msg.paths().count();
    let _ = (msg.max_forwards(), msg.expires(), msg.rseq(), msg.rack(), msg.session_expires());
    let _ = (msg.content_type(), msg.event(), msg.subscription_state(), msg.replaces(), msg.retry_after());
    for c in msg.www_authenticate().flatten() {
        let _ = (c.realm(), c.nonce(), c.algorithm(), c.preferred_qop());
    }
    for c in msg.authorization().flatten() {
        let _ = (c.username(), c.nc(), c.qop());
    }
    // printing an unedited message reproduces it; parsing the print agrees
    let printed = msg.to_bytes();
    let again = Message::parse(printed.clone()).expect("an unedited message reparses");
    assert!(again == msg);
    // edits keep the message parseable
    let _ = msg.set_top_via_param("received", Some(Some("192.0.2.77")));
    let _ = msg.set_top_via_param("rport", Some(Some("5062")));
    let _ = msg.set_uri_param(HeaderName::Contact, 0, "ob", Some(None));
    let _ = msg.set_header_param(HeaderName::To, 0, "tag", Some(Some("fz1")));
    let _ = msg.set_header_uri(HeaderName::Contact, 0, "sip:fuzz@192.0.2.9:5070");
    let _ = msg.set_header("X-Fuzz", "1");
    let _ = msg.remove_top_via();
    let edited = msg.to_bytes();
    let reparsed = Message::parse(edited).expect("an edited message reparses");
    assert!(reparsed == msg);
});
