//! RFC 3261 §18.1.1 on loopback between two `siproam agent`s: a 6 KiB
//! `message` to a UDP URI goes over TCP to the same address and port when
//! the peer listens there, and still arrives (over UDP, the core's
//! fallback) when the peer listens on UDP only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use serde_json::Value;

/// A port free on `ip` for both UDP and TCP.
fn free_port_on(ip: Ipv4Addr) -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for UDP and TCP on {ip}");
}

/// An agent with no registrar listening on `listen`; waits until each
/// listener is up.
fn agent(aor: &str, listen: &[String]) -> Proc {
    let mut args = vec!["agent", "--json", "--no-watch", "--aor", aor];
    for l in listen {
        args.push("--listen");
        args.push(l);
    }
    let p = Proc::spawn(&args);
    for l in listen {
        let transport = l.split(':').next().unwrap().to_owned();
        p.wait_for(&format!("{l} listening"), |v| {
            v["event"] == "listening" && v["transport"] == transport.as_str()
        });
    }
    p
}

/// 6 KiB of text without spaces, not all the same character.
fn six_kib() -> String {
    let alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    alphabet.chars().cycle().take(6 * 1024).collect()
}

/// Sends `quit` and reaps it (no registration to end).
fn stop(mut p: Proc) {
    p.send("quit");
    let _ = p.child.wait();
}

fn is_message(v: &Value, direction: &str) -> bool {
    v["event"] == "message" && v["direction"] == direction
}

/// Whether an established TCP connection goes from an address on `from`
/// to `to` (Linux: `/proc/net/tcp`, addresses in the kernel's hex).
fn tcp_established(from: Ipv4Addr, to: SocketAddrV4) -> bool {
    let hex_ip = |ip: Ipv4Addr| format!("{:08X}", u32::from_le_bytes(ip.octets()));
    let want_from = format!("{}:", hex_ip(from));
    let want_to = format!("{}:{:04X}", hex_ip(*to.ip()), to.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].starts_with(&want_from) && f[2] == want_to && f[3] == "01"
    })
}

/// Alice sends the 6 KiB text to `sip:bob@to`; bob's `message` event has
/// it whole, alice's outcome is 200.
fn send_and_check(alice: &mut Proc, bob: &Proc, to: SocketAddrV4) {
    let text = six_kib();
    alice.send(&format!("message sip:bob@{to} {text}"));
    let got = bob.wait_for("bob's message", |v| is_message(v, "received"));
    let got_text = got["text"].as_str().unwrap();
    assert_eq!(got_text.len(), 6 * 1024);
    assert_eq!(got_text, text);
    let sent = alice.wait_for("alice's outcome", |v| is_message(v, "sent"));
    assert_eq!(sent["code"], 200, "{sent}");
}

#[test]
fn a_6k_message_to_an_agent_on_udp_and_tcp_goes_over_tcp_and_arrives() {
    let (alice_ip, bob_ip) = (Ipv4Addr::new(127, 0, 0, 71), Ipv4Addr::new(127, 0, 0, 72));
    let port = free_port_on(bob_ip);
    let bob_addr = SocketAddrV4::new(bob_ip, port);
    let bob = agent(
        "sip:bob@example.test",
        &[format!("udp:{bob_addr}"), format!("tcp:{bob_addr}")],
    );
    let mut alice = agent("sip:alice@example.test", &[format!("udp:{alice_ip}:0")]);
    send_and_check(&mut alice, &bob, bob_addr);
    // it went over a connection of alice's to bob's port
    assert!(
        tcp_established(alice_ip, bob_addr),
        "a TCP connection from {alice_ip} to {bob_addr}"
    );
    stop(alice);
    stop(bob);
}

#[test]
fn a_6k_message_to_an_agent_on_udp_only_still_arrives() {
    let (alice_ip, bob_ip) = (Ipv4Addr::new(127, 0, 0, 73), Ipv4Addr::new(127, 0, 0, 74));
    let port = free_port_on(bob_ip);
    let bob_addr = SocketAddrV4::new(bob_ip, port);
    // nothing listens on TCP there: the connect is refused
    let bob = agent("sip:bob@example.test", &[format!("udp:{bob_addr}")]);
    let mut alice = agent("sip:alice@example.test", &[format!("udp:{alice_ip}:0")]);
    send_and_check(&mut alice, &bob, bob_addr);
    assert!(!tcp_established(alice_ip, bob_addr));
    stop(alice);
    stop(bob);
}
