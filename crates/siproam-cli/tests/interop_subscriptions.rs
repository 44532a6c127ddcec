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
//! Kamailio comes from Debian (`interop/install.sh`); without it the test
//! says why it is skipped, and with `SIPROAM_REQUIRE_INTEROP=1` (CI) it
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::time::{Duration, Instant};

/// Kamailio's `callauth:` lines (`407 METHOD CSEQ from USER`,
/// `ok METHOD CSEQ from USER`) once `pred` holds for them (60 s at most).
fn auth_lines(kam: &Kamailio, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines: Vec<String> = kam
            .log()
            .lines()
            .filter_map(|l| l.split("callauth: ").nth(1))
            .map(|l| l.trim().to_owned())
            .collect();
        if pred(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "Kamailio never logged {what}: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn presence_through_kamailio_with_every_request_challenged() {
    if !have("kamailio") || !have("kamcmd") {
        return;
    }
    let port = free_port(0);
    let kam = Kamailio::start_in(
        None,
        port,
        "-A WITH_QOP -A WITH_DIALOG_AUTH",
        &format!("subs-{}-{port}", std::process::id()),
    );
    let registrar = format!("sip:127.0.0.1:{port}");
    let agent = |user: &str, password: &str, listen: &str| {
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
        ])
    };
    let mut bob = agent("bob", "bobpw", "udp:127.0.0.1:0");
    let mut alice = agent("alice", "alicepw", "udp:127.0.0.1:0");
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
