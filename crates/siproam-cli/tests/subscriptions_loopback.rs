//! Presence between two `siproam agent`s through `siproam registrar` on
//! loopback: Alice subscribes to Bob's presence (`subscribe`), sees it
//! `active` and `open`, a 489 for an unknown package, Bob's message
//! summary, an unsubscribe; Bob quits (unregisters) and Alice sees him
//! `closed` and the subscription `terminated`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

#[test]
fn alice_sees_bob_open_then_closed_and_terminated_when_he_quits() {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let reg = format!("sip:{addr}");
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.3:0",
    ]);
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let mut alice = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.2:0",
    ]);
    alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    alice.send("subscribe sip:bob@example.test presence");
    let pending = alice.wait_for("pending", |v| {
        v["event"] == "subscription" && v["state"] == "pending"
    });
    assert_eq!(pending["package"], "presence");
    assert_eq!(pending["peer"], "sip:bob@example.test");
    let sub = pending["sub"].as_u64().unwrap();
    let active = alice.wait_for("active and open", |v| {
        v["event"] == "subscription" && v["state"] == "active"
    });
    assert_eq!(active["sub"].as_u64(), Some(sub));
    assert_eq!(active["body"], "open");
    assert_eq!(active["role"], "subscriber");
    let served = bob.wait_for("bob serves it", |v| {
        v["event"] == "subscription" && v["role"] == "notifier"
    });
    assert_eq!(served["state"], "active");
    assert_eq!(served["peer"], "sip:alice@example.test");
    // an unknown package is refused by Bob with 489
    alice.send("subscribe sip:bob@example.test dialog");
    alice.wait_for("489", |v| {
        v["event"] == "subscription" && v["state"] == "terminated" && v["reason"] == "bad_event"
    });
    // Bob's message summary: nothing waiting; then Alice unsubscribes
    alice.send("subscribe sip:bob@example.test message-summary");
    let mwi = alice.wait_for("message-summary active", |v| {
        v["event"] == "subscription" && v["package"] == "message-summary" && v["state"] == "active"
    });
    assert_eq!(mwi["body"]["messages_waiting"], false);
    assert_eq!(mwi["body"]["new"], 0);
    alice.send(&format!("unsubscribe {}", mwi["sub"]));
    let gone = alice.wait_for("unsubscribed", |v| {
        v["event"] == "subscription" && v["sub"] == mwi["sub"] && v["state"] == "terminated"
    });
    assert_eq!(gone["reason"], "unsubscribed");
    alice.send("unsubscribe 999");
    alice.wait_for("an error for an unknown subscription", |v| {
        v["event"] == "error" && v["command"] == "unsubscribe"
    });
    bob.send("quit");
    let _ = bob.child.wait();
    alice.wait_for("closed", |v| {
        v["event"] == "subscription" && v["sub"].as_u64() == Some(sub) && v["body"] == "closed"
    });
    let end = alice.wait_for("terminated", |v| {
        v["event"] == "subscription" && v["sub"].as_u64() == Some(sub) && v["state"] == "terminated"
    });
    assert_eq!(end["reason"], "noresource");
    alice.send("quit");
    let _ = alice.child.wait();
}
