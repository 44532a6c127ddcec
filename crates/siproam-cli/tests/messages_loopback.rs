//! Instant messages (RFC 3428) and DTMF (RFC 4733) between two `siproam
//! agent`s through `siproam registrar` on loopback, from their stdin
//! commands to their JSON events; and MESSAGEs an agent must refuse (413,
//! 415, 1 MB over TCP) without anything else being disturbed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

fn registrar() -> (Proc, String) {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    (registrar, format!("sip:{addr}"))
}

/// An agent registered at `reg`, listening on UDP and TCP at `ip`; its TCP
/// address.
fn agent(name: &str, ip: &str, reg: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let aor = format!("sip:{name}@example.test");
    let udp = format!("udp:{ip}:0");
    let tcp = format!("tcp:{ip}:0");
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        &aor,
        "--registrar",
        reg,
        "--listen",
        &udp,
        "--listen",
        &tcp,
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    let tcp_addr = p.wait_for("tcp listener", |v| {
        v["event"] == "listening" && v["transport"] == "tcp"
    })["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    p.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    (p, tcp_addr)
}

fn is_message(v: &Value, direction: &str) -> bool {
    v["event"] == "message" && v["direction"] == direction
}

#[test]
fn a_message_goes_each_way_through_the_registrar() {
    let (_registrar, reg) = registrar();
    let (mut alice, _) = agent("alice", "127.0.0.2", &reg, &[]);
    let (mut bob, _) = agent("bob", "127.0.0.3", &reg, &[]);

    alice.send("message sip:bob@example.test Hello Bob,  are you there? ☺");
    let got = bob.wait_for("bob's message", |v| is_message(v, "received"));
    assert_eq!(got["peer"], "sip:alice@example.test");
    assert_eq!(got["text"], "Hello Bob,  are you there? ☺");
    let sent = alice.wait_for("alice's outcome", |v| is_message(v, "sent"));
    assert_eq!(sent["peer"], "sip:bob@example.test");
    assert_eq!(sent["text"], "Hello Bob,  are you there? ☺");
    assert_eq!(sent["code"], 200);

    bob.send("message sip:alice@example.test yes");
    let got = alice.wait_for("alice's message", |v| is_message(v, "received"));
    assert_eq!(got["peer"], "sip:bob@example.test");
    assert_eq!(got["text"], "yes");
    let sent = bob.wait_for("bob's outcome", |v| is_message(v, "sent"));
    assert_eq!(sent["code"], 200);

    // nobody of that name: the registrar's final answer is the outcome
    alice.send("message sip:nobody@example.test hello?");
    let sent = alice.wait_for("outcome to nobody", |v| is_message(v, "sent"));
    assert_eq!(sent["peer"], "sip:nobody@example.test");
    assert_eq!(sent["code"], 404);

    // no text: a usage error, nothing sent
    alice.send("message sip:bob@example.test");
    let e = alice.wait_for("usage error", |v| v["event"] == "error");
    assert_eq!(e["command"], "message");
    alice.quit();
    bob.quit();
}

#[test]
fn dtmf_keys_sent_by_one_agent_arrive_in_order_at_the_other() {
    let (_registrar, reg) = registrar();
    let (mut alice, _) = agent("alice", "127.0.0.2", &reg, &[]);
    let (mut bob, _) = agent("bob", "127.0.0.3", &reg, &["--auto-answer"]);

    // no call yet: an error, not a crash
    alice.send("dtmf 1");
    let e = alice.wait_for("no call", |v| v["event"] == "error");
    assert_eq!(e["command"], "dtmf");

    alice.send("call sip:bob@example.test");
    let c = alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let call = c["call"].as_u64().unwrap();
    bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    // media flows both ways (the telephone-events ride on it)
    bob.wait_for("bob hears alice", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 10
    });

    // a key that is not one: refused whole, nothing sent
    alice.send("dtmf 12x");
    let e = alice.wait_for("bad key", |v| v["event"] == "error");
    assert_eq!(e["command"], "dtmf");

    let keys = "159*#0A";
    alice.send(&format!("dtmf {keys}"));
    // and two more, naming the call
    alice.send(&format!("dtmf {call} 77"));
    let all = format!("{keys}77");
    let mut got = String::new();
    for _ in all.chars() {
        let v = bob.wait_for("a received key", |v| {
            v["event"] == "dtmf" && v["direction"] == "received"
        });
        got.push_str(v["digit"].as_str().unwrap());
    }
    assert_eq!(got, all, "every key once, in order");
    let mut sent = String::new();
    alice.drain();
    for v in alice.seen() {
        if v["event"] == "dtmf" && v["direction"] == "sent" {
            assert_eq!(v["call"].as_u64(), Some(call));
            sent.push_str(v["digit"].as_str().unwrap());
        }
    }
    while sent.len() < all.len() {
        let v = alice.wait_for("a sent key", |v| {
            v["event"] == "dtmf" && v["direction"] == "sent"
        });
        sent.push_str(v["digit"].as_str().unwrap());
    }
    assert_eq!(sent, all);
    // no key twice (three end packets each, deduplicated)
    bob.wait_quiet(Duration::from_millis(700));
    let received = bob
        .seen()
        .iter()
        .filter(|v| v["event"] == "dtmf" && v["direction"] == "received")
        .count();
    assert_eq!(received, all.len());

    // bob holds the call: alice's side sends nothing, so no keys either
    // (a key asked for before the re-INVITE lands may go out, or be
    // dropped with the queue when the hold comes: ask again until refused,
    // bounded)
    bob.send("hold");
    alice.drain();
    let from = alice.seen().len();
    let mut refused = None;
    for _ in 0..50 {
        alice.send("dtmf 5");
        std::thread::sleep(Duration::from_millis(200));
        alice.drain();
        refused = alice.seen()[from..]
            .iter()
            .find(|v| v["event"] == "error" && v["command"] == "dtmf")
            .cloned();
        if refused.is_some() {
            break;
        }
    }
    let refused = refused.expect("dtmf refused while held");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("does not send"),
        "{refused}"
    );

    alice.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    alice.quit();
    bob.quit();
}

/// A raw MESSAGE to `to` over TCP from `from`, with this body and type.
fn raw_message(from: SocketAddr, to: SocketAddr, n: u32, ct: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "MESSAGE sip:bob@{to} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {from};branch=z9hG4bKraw{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:mallory@example.test>;tag=m{n}\r\n\
         To: <sip:bob@example.test>\r\n\
         Call-ID: raw{n}@example.test\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: {ct}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

/// Sends one MESSAGE on a new connection and reads the status of its
/// answer (`None` when the connection closed without one).
fn exchange(to: SocketAddr, n: u32, ct: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let from = s.local_addr().unwrap();
    // a peer that closes on us mid-write is an answer too
    let _ = s.write_all(&raw_message(from, to, n, ct, body));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()?;
    if status == 415 {
        assert!(
            text.to_ascii_lowercase().contains("\r\naccept: text/plain"),
            "{text}"
        );
    }
    Some(status)
}

#[test]
fn oversized_and_non_text_messages_are_refused_and_nothing_else_is_disturbed() {
    let (_registrar, reg) = registrar();
    let (mut alice, _) = agent("alice", "127.0.0.2", &reg, &[]);
    let (mut bob, bob_tcp) = agent("bob", "127.0.0.3", &reg, &["--auto-answer"]);
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });

    assert_eq!(exchange(bob_tcp, 1, "text/plain", b"hi"), Some(200));
    // over the 16 KiB body limit, under the transport's 64 KiB
    assert_eq!(
        exchange(bob_tcp, 2, "text/plain", &vec![b'a'; 20 * 1024]),
        Some(413)
    );
    assert_eq!(exchange(bob_tcp, 3, "text/html", b"<b>hi</b>"), Some(415));
    // 1 MB: over what the transport takes at all; the connection is
    // closed without reading it
    assert_eq!(
        exchange(bob_tcp, 4, "text/plain", &vec![b'a'; 1 << 20]),
        None
    );
    // bob still takes messages, on a new connection and through the
    // registrar, and the call goes on
    assert_eq!(
        exchange(bob_tcp, 5, "text/plain", b"still there?"),
        Some(200)
    );
    alice.send("message sip:bob@example.test after the flood");
    let sent = alice.wait_for("alice's outcome", |v| is_message(v, "sent"));
    assert_eq!(sent["code"], 200);
    let received: Vec<String> = {
        bob.wait_for("bob's last message", |v| {
            is_message(v, "received") && v["text"] == "after the flood"
        });
        bob.seen()
            .iter()
            .filter(|v| is_message(v, "received"))
            .map(|v| v["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(received, ["hi", "still there?", "after the flood"]);
    let before = alice.wait_for("media", |v| v["event"] == "media")["rx_packets"]
        .as_u64()
        .unwrap();
    let after = alice.wait_for("media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > before
    });
    assert_eq!(after["lost"], 0);
    assert!(!bob
        .seen()
        .iter()
        .any(|v| v["event"] == "call" && v["state"] == "disconnected"));
    alice.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    alice.quit();
    bob.quit();
}

/// A peer whose offer has no telephone-event: `dtmf` is an error, and no
/// tone nor event goes out in its place.
#[test]
fn dtmf_to_a_peer_without_telephone_event_is_refused() {
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:bob@example.test",
        "--listen",
        "udp:127.0.0.63:0",
        "--auto-answer",
        "--play",
        "tone:440",
    ]);
    let addr = bob.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let peer = std::net::UdpSocket::bind("127.0.0.64:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let rtp = std::net::UdpSocket::bind("127.0.0.64:0").unwrap();
    let rtp_port = rtp.local_addr().unwrap().port();
    // PCMU alone
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.64\r\ns=-\r\nc=IN IP4 127.0.0.64\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\n"
    );
    let invite = format!(
        "INVITE sip:bob@{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {peer_addr};branch=z9hG4bKnote1\r\nMax-Forwards: 70\r\nFrom: <sip:carol@example.test>;tag=c1\r\nTo: <sip:bob@example.test>\r\nCall-ID: note1@carol\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{peer_addr}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    peer.send_to(invite.as_bytes(), &addr).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let ok = loop {
        let n = peer.recv(&mut buf).expect("an answer in time");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            break text;
        }
    };
    assert!(!ok.contains("telephone-event"), "{ok}");
    let to = ok
        .lines()
        .find(|l| l.starts_with("To:") || l.starts_with("t:"))
        .unwrap()
        .to_owned();
    let ack = format!(
        "ACK sip:bob@{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {peer_addr};branch=z9hG4bKnote2\r\nMax-Forwards: 70\r\nFrom: <sip:carol@example.test>;tag=c1\r\n{to}\r\nCall-ID: note1@carol\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    peer.send_to(ack.as_bytes(), &addr).unwrap();
    bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    bob.send("dtmf 123");
    let e = bob.wait_for("the refusal", |v| v["event"] == "error");
    assert_eq!(e["command"], "dtmf");
    assert!(
        e["reason"].as_str().unwrap().contains("telephone-event"),
        "{e}"
    );
    // what bob sends is PCMU audio, nothing else (no event, no other type)
    rtp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut seen = 0;
    while seen < 25 {
        let n = rtp.recv(&mut buf).expect("bob's RTP");
        if n >= 12 && !(192..=223).contains(&buf[1]) {
            assert_eq!(buf[1] & 0x7F, 0, "only PCMU");
            seen += 1;
        }
    }
    assert!(!bob.seen().iter().any(|v| v["event"] == "dtmf"));
    bob.send("quit");
    let _ = bob.child.wait();
}
