//! Presence subscriptions with real peers.
//!
//! Through Kamailio 5.6 (`interop/kamailio/kamailio.cfg`, a registrar and
//! proxy that relays SUBSCRIBE to the registered contact and Record-Routes
//! it; no presence server): two `siproam agent`s registered there, Alice
//! subscribes to Bob's presence. Kamailio challenges every request of its
//! users (`-A WITH_DIALOG_AUTH`, qop): the SUBSCRIBE and Bob's NOTIFYs.
//! Alice sees Bob `active` and `open`, then `closed` and the subscription
//! `terminated` when he quits (unregisters).
//!
//! With baresip 1.0.0 (its `presence.so` and `contact.so`), both
//! registered through that Kamailio: Alice subscribes to baresip's presence
//! and follows it (`presence_offline`, `presence_online`), and baresip
//! subscribes to Alice's (its contact list holds her with
//! `;presence=p2p`) and shows her `Online`, then not once she quits.
//!
//! Kamailio and baresip come from Debian (`interop/install.sh`); without
//! them each test says why it is skipped, and with
//! `SIPROAM_REQUIRE_INTEROP=1` (CI) it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use common::baresip::Baresip;

use std::time::{Duration, Instant};

#[test]
fn presence_through_kamailio_with_every_request_challenged() {
    if !Kamailio::available() {
        return;
    }
    let (kam, port) = Kamailio::start_local("-A WITH_QOP -A WITH_DIALOG_AUTH", "subs");
    let registrar = format!("sip:127.0.0.1:{port}");
    // each may follow the other's presence
    let agent = |user: &str, password: &str, listen: &str, watcher: &str| {
        let aor = format!("sip:{user}@example.test");
        Proc::spawn(&[
            "agent",
            "--json",
            "--aor",
            &aor,
            "--registrar",
            &registrar,
            "--password",
            password,
            "--listen",
            listen,
            "--watcher",
            watcher,
        ])
    };
    let mut bob = agent("bob", "bobpw", "udp:127.0.0.1:0", "sip:alice@example.test");
    let mut alice = agent(
        "alice",
        "alicepw",
        "udp:127.0.0.1:0",
        "sip:bob@example.test",
    );
    for (who, p) in [("bob", &bob), ("alice", &alice)] {
        p.wait_for(&format!("{who} registered"), |v| {
            v["event"] == "registration" && v["state"] == "registered"
        });
    }
    alice.send("subscribe sip:bob@example.test presence");
    let active = alice.wait_for("alice's subscription active", |v| {
        v["event"] == "subscription" && v["state"] == "active"
    });
    assert_eq!(active["package"], "presence", "{active}");
    assert_eq!(active["role"], "subscriber", "{active}");
    assert_eq!(active["peer"], "sip:bob@example.test", "{active}");
    assert_eq!(active["body"], "open", "{active}");
    let sub = active["sub"].as_u64().unwrap();
    let served = bob.wait_for("bob serves it", |v| {
        v["event"] == "subscription" && v["role"] == "notifier"
    });
    assert_eq!(served["state"], "active", "{served}");
    assert_eq!(served["peer"], "sip:alice@example.test", "{served}");
    // Kamailio challenged the SUBSCRIBE, then let it through; Bob's NOTIFY
    // (in the dialog, from one of its users) was challenged and answered
    let lines = auth_lines(&kam, "the SUBSCRIBE and a NOTIFY let through", |l| {
        l.iter().any(|x| x.starts_with("ok SUBSCRIBE"))
            && l.iter().any(|x| x.starts_with("ok NOTIFY"))
    });
    assert!(
        lines.iter().any(|x| x == "407 SUBSCRIBE 1 from alice"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|x| x == "ok SUBSCRIBE 2 from alice"),
        "{lines:?}"
    );
    // Bob quits: his final NOTIFY says closed, the subscription ends
    bob.quit();
    let closed = alice.wait_for("closed", |v| {
        v["event"] == "subscription" && v["sub"].as_u64() == Some(sub) && v["body"] == "closed"
    });
    assert_ne!(closed["state"], "pending", "{closed}");
    let end = alice.seen_or_wait("terminated", |v| {
        v["event"] == "subscription" && v["sub"].as_u64() == Some(sub) && v["state"] == "terminated"
    });
    assert_eq!(end["reason"], "noresource", "{end}");
    // presence closed, then the final NOTIFY: both carried the answer to
    // the challenge Bob already had (before this was sent ahead of the
    // unregistration, the account was gone: both were refused with 407)
    let lines = auth_lines(&kam, "Bob's final NOTIFY let through", |l| {
        l.iter().any(|x| x == "ok NOTIFY 4 from bob")
    });
    assert_eq!(
        lines,
        [
            "407 SUBSCRIBE 1 from alice",
            "ok SUBSCRIBE 2 from alice",
            "407 NOTIFY 1 from bob",
            "ok NOTIFY 2 from bob",
            "ok NOTIFY 3 from bob",
            "ok NOTIFY 4 from bob",
        ],
        "each challenged once at most, nothing refused"
    );
    alice.quit();
}

#[test]
fn presence_both_ways_between_siproam_and_baresip_through_kamailio() {
    if !Kamailio::available() || !have("baresip") {
        return;
    }
    let (kam, port) = Kamailio::start_local("", "subsbs");
    let registrar = format!("sip:127.0.0.1:{port}");
    let dir = temp_dir("baresip-presence");
    let (bport, ctrl) = (free_port(1), free_port(0));
    // baresip is bob: registered through Kamailio (its outbound proxy too)
    let bs = Baresip::start(
        bport,
        ctrl,
        &dir.join("bs"),
        &[
            "--user",
            "bob",
            "--registrar",
            &registrar,
            "--password",
            "bobpw",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while kam.bindings("bob@example.test").is_empty() {
        assert!(Instant::now() < deadline, "baresip never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut alice = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &registrar,
        "--password",
        "alicepw",
        "--listen",
        "udp:127.0.0.1:0",
        // baresip (bob) may follow her presence
        "--watcher",
        "sip:bob@example.test",
    ]);
    alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });

    // siproam -> baresip: Alice follows bob's presence (baresip serves it
    // to the contacts of its list only: Alice is one)
    std::fs::write(
        dir.join("bs/contacts"),
        "\"Alice\" <sip:alice@example.test>;presence=p2p\n",
    )
    .unwrap();
    bs.ctrl(&["insmod", "contact.so"]);
    bs.ctrl(&["insmod", "presence.so"]);
    // baresip's own presence starts unknown, which it sends as
    // `<basic>?</basic>` (not PIDF: refused with 400): set it first
    bs.ctrl(&["presence_online"]);
    alice.send("subscribe sip:bob@example.test presence");
    let active = alice.wait_for("bob's presence active", |v| {
        v["event"] == "subscription" && v["role"] == "subscriber" && v["state"] == "active"
    });
    assert_eq!(active["package"], "presence", "{active}");
    assert_eq!(active["body"], "open", "{active}");
    let sub = active["sub"].as_u64().unwrap();
    let ours =
        move |v: &serde_json::Value| v["event"] == "subscription" && v["sub"].as_u64() == Some(sub);
    bs.ctrl(&["presence_offline"]);
    let off = alice.wait_for("bob closed", |v| ours(v) && v["body"] == "closed");
    assert_eq!(off["state"], "active", "{off}");
    bs.ctrl(&["presence_online"]);
    let on = alice.wait_for("bob open again", |v| ours(v) && v["body"] == "open");
    assert_eq!(on["state"], "active", "{on}");

    // baresip -> siproam: baresip's subscription to Alice, served by her
    let served = alice.seen_or_wait("alice serves baresip", |v| {
        v["event"] == "subscription" && v["role"] == "notifier"
    });
    assert_eq!(served["package"], "presence", "{served}");
    assert_eq!(served["state"], "active", "{served}");
    assert_eq!(served["body"], "open", "{served}");
    bs.contact_until("sip:alice@example.test", "Alice online", |l| {
        l.contains("Online")
    });
    // Alice quits: her closed and final NOTIFYs reach baresip
    alice.quit();
    let line = bs.contact_until("sip:alice@example.test", "Alice gone", |l| {
        !l.contains("Online")
    });
    assert!(!line.is_empty(), "alice left baresip's list");
    // stop.sh needs the pid file in the work dir: stop it first
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}
