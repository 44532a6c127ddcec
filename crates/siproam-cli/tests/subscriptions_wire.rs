//! Bad NOTIFYs over the wire against a running `siproam agent`, on
//! loopback. Alice subscribes to a scripted notifier (a UDP socket this
//! test speaks SIP through) and is in a call with Bob (another agent);
//! then the notifier sends her a NOTIFY for no subscription (481), one
//! with a malformed PIDF body (400 with a Warning that says what is
//! wrong), one of a type presence does not take (415 with Accept), and
//! bytes that are no SIP at all (dropped). Her subscription goes on (the
//! next good NOTIFY is taken, in the same subscription) and so does the
//! call (media still flows, nothing ends). When she quits, she
//! unsubscribes (`Expires: 0` in the dialog).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A SIP message as text: its first line and its headers by name.
struct Msg(String);

impl Msg {
    fn first_line(&self) -> &str {
        self.0.lines().next().unwrap_or_default()
    }

    /// The first value of header `name` (full name, case-insensitive).
    fn header(&self, name: &str) -> Option<String> {
        self.0
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .lines()
            .skip(1)
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
    }
}

/// The scripted notifier's socket.
struct Notifier {
    sock: UdpSocket,
    addr: SocketAddr,
    branch: u32,
}

impl Notifier {
    fn new() -> Notifier {
        let sock = UdpSocket::bind("127.0.0.5:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        Notifier {
            sock,
            addr,
            branch: 0,
        }
    }

    /// The next message that `pred` takes (others are skipped: a
    /// retransmission), within 10 s.
    fn recv(&self, what: &str, pred: impl Fn(&Msg) -> bool) -> (Msg, SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                let m = Msg(String::from_utf8_lossy(&buf[..n]).into_owned());
                if pred(&m) {
                    return (m, from);
                }
            }
        }
        panic!("the notifier got no {what}");
    }

    /// A NOTIFY in the dialog of `sub` (Alice's SUBSCRIBE, answered with
    /// our tag `n1`), or in none when `call_id` is given; its answer.
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &mut self,
        to: SocketAddr,
        sub: &Msg,
        call_id: Option<&str>,
        cseq: u32,
        content_type: &str,
        body: &str,
    ) -> Msg {
        self.branch += 1;
        let contact = sub.header("Contact").unwrap();
        let target = contact
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
        let id = call_id
            .map(str::to_owned)
            .unwrap_or_else(|| sub.header("Call-ID").unwrap());
        let branch = format!("z9hG4bKwire{}", self.branch);
        let text = format!(
            "NOTIFY {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: {from};tag=n1\r\n\
             To: {to_hdr}\r\n\
             Call-ID: {id}\r\n\
             CSeq: {cseq} NOTIFY\r\n\
             Contact: <sip:bob@{me}>\r\n\
             Event: presence\r\n\
             Subscription-State: active;expires=600\r\n\
             Content-Type: {content_type}\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            me = self.addr,
            from = sub.header("To").unwrap(),
            to_hdr = sub.header("From").unwrap(),
            len = body.len(),
        );
        self.sock.send_to(text.as_bytes(), to).unwrap();
        self.recv("the answer to a NOTIFY", |m| {
            m.first_line().starts_with("SIP/2.0 ")
                && m.header("Via").is_some_and(|v| v.contains(&branch))
        })
        .0
    }
}

fn pidf(status: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@example.test\">\
         <tuple id=\"t1\"><status><basic>{status}</basic></status></tuple></presence>\r\n"
    )
}

#[test]
fn bad_notifies_over_the_wire_get_clear_answers_and_disturb_nothing() {
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:bob@example.test",
        "--listen",
        "udp:127.0.0.3:0",
        "--auto-answer",
        "--play",
        "tone:440",
    ]);
    let bob_addr = bob.wait_for("bob listening", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut alice = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:alice@example.test",
        "--listen",
        "udp:127.0.0.2:0",
        "--play",
        "tone:440",
    ]);
    alice.wait_for("alice listening", |v| v["event"] == "listening");
    let mut n = Notifier::new();

    // the subscription: answered 200, then a NOTIFY active/open
    alice.send(&format!("subscribe sip:bob@{} presence", n.addr));
    let (sub, alice_addr) = n.recv("SUBSCRIBE", |m| m.first_line().starts_with("SUBSCRIBE "));
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=n1\r\nCall-ID: {}\r\n\
         CSeq: {}\r\nExpires: 600\r\nContact: <sip:bob@{}>\r\nContent-Length: 0\r\n\r\n",
        sub.header("Via").unwrap(),
        sub.header("From").unwrap(),
        sub.header("To").unwrap(),
        sub.header("Call-ID").unwrap(),
        sub.header("CSeq").unwrap(),
        n.addr,
    );
    n.sock.send_to(ok.as_bytes(), alice_addr).unwrap();
    let r = n.notify(
        alice_addr,
        &sub,
        None,
        1,
        "application/pidf+xml",
        &pidf("open"),
    );
    assert_eq!(r.first_line(), "SIP/2.0 200 OK");
    let active = alice.wait_for("active and open", |v| {
        v["event"] == "subscription" && v["state"] == "active"
    });
    assert_eq!(active["body"], "open", "{active}");
    let id = active["sub"].clone();

    // the call
    alice.send(&format!("call sip:bob@{bob_addr}"));
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let before = bob.wait_for("bob hears alice", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });

    // a NOTIFY for no subscription of hers: 481
    let r = n.notify(
        alice_addr,
        &sub,
        Some("no-such-subscription"),
        1,
        "application/pidf+xml",
        &pidf("open"),
    );
    assert!(
        r.first_line().starts_with("SIP/2.0 481 "),
        "{}",
        r.first_line()
    );
    // a malformed PIDF body: 400, and a Warning that says what is wrong
    let broken = "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@example.test\">\
                  <tuple id=\"t1\"><status><basic>maybe</basic>";
    let r = n.notify(alice_addr, &sub, None, 2, "application/pidf+xml", broken);
    assert_eq!(r.first_line(), "SIP/2.0 400 Bad Request");
    let warning = r.header("Warning").unwrap_or_default();
    assert!(
        warning.starts_with("399 ") && warning.contains("basic"),
        "Warning: {warning:?}"
    );
    let refused = alice.wait_for("the malformed body reported", |v| {
        v["event"] == "subscription" && v["reason"] == "malformed_body"
    });
    assert_eq!(refused["sub"], id, "{refused}");
    assert_eq!(refused["state"], "active", "{refused}");
    // a type presence does not take: 415 with what it takes
    let r = n.notify(alice_addr, &sub, None, 3, "text/plain", "open");
    assert!(
        r.first_line().starts_with("SIP/2.0 415 "),
        "{}",
        r.first_line()
    );
    assert_eq!(r.header("Accept").as_deref(), Some("application/pidf+xml"));
    // no SIP at all: dropped, no answer and nothing breaks
    n.sock
        .send_to(b"NOTIFY \x00\xff garbage\r\n\r\n", alice_addr)
        .unwrap();

    // the subscription goes on: the next good NOTIFY is taken
    let r = n.notify(
        alice_addr,
        &sub,
        None,
        4,
        "application/pidf+xml",
        &pidf("closed"),
    );
    assert_eq!(r.first_line(), "SIP/2.0 200 OK");
    let closed = alice.wait_for("closed", |v| {
        v["event"] == "subscription" && v["body"] == "closed"
    });
    assert_eq!(closed["sub"], id, "{closed}");
    assert_eq!(closed["state"], "active", "{closed}");
    // and so does the call
    bob.wait_for("bob still hears alice", |v| {
        v["event"] == "media"
            && v["rx_packets"].as_u64().unwrap_or(0) > before["rx_packets"].as_u64().unwrap() + 25
    });
    for p in [&alice, &bob] {
        assert!(
            !p.seen()
                .iter()
                .any(|v| v["event"] == "call" && v["state"] == "disconnected"),
            "a call ended: {:?}",
            p.seen()
        );
    }
    assert!(
        !alice
            .seen()
            .iter()
            .any(|v| v["event"] == "subscription" && v["state"] == "terminated"),
        "the subscription ended: {:?}",
        alice.seen()
    );
    alice.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    // Alice goes away: she unsubscribes first (Expires: 0 in the
    // dialog), and leaves once it is answered
    alice.send("quit");
    let (unsub, from) = n.recv("the unsubscribe", |m| {
        m.first_line().starts_with("SUBSCRIBE ") && m.header("Expires").as_deref() == Some("0")
    });
    assert!(
        unsub.header("To").unwrap().contains("tag=n1"),
        "in the dialog: {}",
        unsub.0
    );
    assert_eq!(unsub.header("Call-ID"), sub.header("Call-ID"));
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {}\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n",
        unsub.header("Via").unwrap(),
        unsub.header("From").unwrap(),
        unsub.header("To").unwrap(),
        unsub.header("Call-ID").unwrap(),
        unsub.header("CSeq").unwrap(),
    );
    n.sock.send_to(ok.as_bytes(), from).unwrap();
    bob.send("quit");
    let _ = alice.child.wait();
    let _ = bob.child.wait();
}
