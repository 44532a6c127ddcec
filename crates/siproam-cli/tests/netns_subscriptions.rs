//! A held presence subscription across a network change, on the hand-off
//! network of `interop/netns/topology.sh`: Alice (handset) subscribes to
//! Bob's presence (server) and calls him; her wifi address is removed, she
//! moves to cell by herself. Her subscription is refreshed with the new
//! Contact and Bob's NOTIFYs reach her on cell (the old address is gone,
//! so nothing else could bring them): the NOTIFY that answers the refresh,
//! and the final one when Bob quits. The call survives the change.
//!
//! Needs root (namespaces, veth): without it the test says it is skipped;
//! CI (root, SIPROAM_REQUIRE_INTEROP set) requires it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::netns::*;
use common::*;

use serde_json::Value;

/// The first event read after `from` (an index into `p.seen()`) matching
/// `pred`, waiting for it when it has not come yet.
fn after(p: &Proc, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let seen = p.seen();
    match seen.iter().skip(from).find(|v| pred(v)) {
        Some(v) => v.clone(),
        None => p.wait_for(what, pred),
    }
}

#[test]
fn a_held_subscription_follows_a_network_change_and_the_call_survives() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("sb");
    // Alice may follow Bob's presence
    let o = Options {
        bob_args: vec!["--watcher".into(), "sip:alice@example.test".into()],
        ..Options::default()
    };
    let (registrar, mut bob, mut alice) = start(&t, &o);
    alice.send("subscribe sip:bob@example.test presence");
    let active = alice.wait_for("alice's subscription active and open", |v| {
        v["event"] == "subscription" && v["state"] == "active"
    });
    assert_eq!(active["package"], "presence", "{active}");
    assert_eq!(active["body"], "open", "{active}");
    let sub = active["sub"].as_u64().unwrap();
    let is_ours = move |v: &Value| v["event"] == "subscription" && v["sub"].as_u64() == Some(sub);
    bob.wait_for("bob serves it", |v| {
        v["event"] == "subscription" && v["role"] == "notifier" && v["state"] == "active"
    });
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let before = bob.wait_for("bob hears alice over wifi", |v| {
        v["event"] == "media"
            && v["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("10.1.0.2:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    let mark = alice.seen().len();
    del_addr(&t, "10.1.0.2/24", "wifi0");
    check_moved(&t, &registrar, &bob, &alice, &before, CELL, 3);
    // the refresh's NOTIFY came after the change, to the cell address (the
    // only one she has): the subscription is still active and open
    let again = after(&alice, mark, "a NOTIFY after the change", |v| {
        is_ours(v) && v["state"] == "active"
    });
    assert_eq!(again["body"], "open", "{again}");
    assert!(
        !alice
            .seen()
            .iter()
            .skip(mark)
            .any(|v| is_ours(v) && v["state"] == "terminated"),
        "the subscription ended: {:?}",
        alice.seen()
    );
    // Bob quits: his final NOTIFY (closed) follows the refreshed Contact
    bob.send("quit");
    let _ = bob.child.wait();
    let closed = alice.wait_for("closed after bob quit", |v| {
        is_ours(v) && v["body"] == "closed"
    });
    assert_ne!(closed["state"], "pending", "{closed}");
    let end = alice.seen_or_wait("terminated", |v| is_ours(v) && v["state"] == "terminated");
    assert_eq!(end["reason"], "noresource", "{end}");
    alice.send("quit");
    let _ = alice.child.wait();
}
