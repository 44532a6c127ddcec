//! Call transfer between `siproam agent`s through `siproam registrar` on
//! loopback: Alice calls Bob, then transfers him (blind) to Carol; Bob's
//! new call to Carol is confirmed, Alice's call ends, and the `transfer`
//! events are seen on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use serde_json::Value;

fn registrar() -> (Proc, String) {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    (registrar, format!("sip:{addr}"))
}

fn agent(name: &str, ip: &str, reg: &str, extra: &[&str]) -> Proc {
    let aor = format!("sip:{name}@example.test");
    let udp = format!("udp:{ip}:0");
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        &aor,
        "--registrar",
        reg,
        "--listen",
        &udp,
        "--stay",
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    p.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    p
}

fn is_transfer(v: &Value, state: &str) -> bool {
    v["event"] == "transfer" && v["state"] == state
}

#[test]
fn alice_transfers_bob_to_carol_blind() {
    let (_registrar, reg) = registrar();
    let mut alice = agent("alice", "127.0.0.2", &reg, &[]);
    let mut bob = agent("bob", "127.0.0.3", &reg, &["--auto-answer"]);
    let mut carol = agent("carol", "127.0.0.4", &reg, &["--auto-answer"]);

    alice.send("call sip:bob@example.test");
    let a_call = alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    })["call"]
        .as_u64()
        .unwrap();
    let b_old = bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    })["call"]
        .as_u64()
        .unwrap();

    alice.send(&format!("transfer {a_call} sip:carol@example.test"));
    let req = alice.wait_for("alice's transfer requested", |v| {
        is_transfer(v, "requested")
    });
    assert_eq!(req["call"], a_call);
    assert_eq!(req["target"], "sip:carol@example.test");
    let ok = alice.wait_for("alice's transfer succeeded", |v| {
        is_transfer(v, "succeeded")
    });
    assert_eq!(ok["code"], 200);
    assert_eq!(ok["call"], a_call);
    // alice's call ends (her BYE)
    alice.wait_for("alice's call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected" && v["call"] == a_call
    });

    // bob: told, placed the new call, which carol answered
    let breq = bob.seen_or_wait("bob's transfer requested", |v| is_transfer(v, "requested"));
    assert_eq!(breq["call"], b_old);
    assert_eq!(breq["target"], "sip:carol@example.test");
    let bok = bob.seen_or_wait("bob's transfer succeeded", |v| is_transfer(v, "succeeded"));
    assert_eq!(bok["code"], 200);
    let b_new = bob.seen_or_wait("bob's new call confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed" && v["call"] != b_old
    });
    bob.seen_or_wait("bob's old call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected" && v["call"] == b_old
    });
    carol.seen_or_wait("carol confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    // no transfer failed anywhere
    for p in [&alice, &bob] {
        assert!(!p.seen().iter().any(|v| is_transfer(v, "failed")));
    }
    // bob and carol still talk: media flows on the new call
    let new_id = b_new["call"].clone();
    bob.wait_for("media on the new call", |v| {
        v["event"] == "media" && v["call"] == new_id && v["rx_packets"].as_u64().unwrap_or(0) > 10
    });
    bob.send("hangup");
    carol.wait_for("carol's call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    for p in [&mut alice, &mut bob, &mut carol] {
        p.quit();
    }
}

#[test]
fn alice_joins_bob_and_carol_attended() {
    let (_registrar, reg) = registrar();
    let mut alice = agent("alice", "127.0.0.2", &reg, &[]);
    let mut bob = agent("bob", "127.0.0.3", &reg, &["--auto-answer"]);
    let mut carol = agent("carol", "127.0.0.4", &reg, &["--auto-answer"]);
    let confirmed = |p: &Proc, what: &str, not: &[u64]| -> u64 {
        p.wait_for(what, |v| {
            v["event"] == "call"
                && v["state"] == "confirmed"
                && !not.iter().any(|c| v["call"] == *c)
        })["call"]
            .as_u64()
            .unwrap()
    };

    alice.send("call sip:bob@example.test");
    let ab = confirmed(&alice, "alice-bob", &[]);
    let b_old = confirmed(&bob, "bob's call", &[]);
    alice.send("call sip:carol@example.test");
    let ac = confirmed(&alice, "alice-carol", &[ab]);
    let c_old = confirmed(&carol, "carol's call", &[]);

    alice.send(&format!("transfer {ab} {ac}"));
    let ok = alice.wait_for("alice's transfer's outcome", |v| {
        is_transfer(v, "succeeded") || is_transfer(v, "failed")
    });
    assert_eq!(ok["state"], "succeeded", "{ok}");
    assert_eq!(ok["call"], ab);
    // both of alice's calls end: she hangs up on bob, carol's new call
    // replaces hers
    for c in [ab, ac] {
        alice.seen_or_wait("alice's calls end", |v| {
            v["event"] == "call" && v["state"] == "disconnected" && v["call"] == c
        });
    }
    // carol: the new call (from bob) confirmed, her call with alice ended
    let c_new = carol.seen_or_wait("carol's new call", |v| {
        v["event"] == "call" && v["state"] == "confirmed" && v["call"] != c_old
    });
    carol.seen_or_wait("carol's old call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected" && v["call"] == c_old
    });
    // bob: told, and with carol now
    bob.seen_or_wait("bob's transfer succeeded", |v| is_transfer(v, "succeeded"));
    bob.seen_or_wait("bob's new call", |v| {
        v["event"] == "call" && v["state"] == "confirmed" && v["call"] != b_old
    });
    let new_id = c_new["call"].clone();
    carol.wait_for("media on carol's new call", |v| {
        v["event"] == "media" && v["call"] == new_id && v["rx_packets"].as_u64().unwrap_or(0) > 10
    });
    for p in [&mut alice, &mut bob, &mut carol] {
        p.quit();
    }
}
