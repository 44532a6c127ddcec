//! A fleet on loopback: one Redis, two `siproam registrar --store
//! redis://…` processes (R1, R2) and two `siproam edge` proxies (A in front
//! of R1, B in front of R2). Alice (`siproam agent --outbound`, no
//! listener) holds two flows, reg-id 1 through edge A and reg-id 2 through
//! edge B, flow 1 registered last (R1 is frozen while she starts) so it
//! is her newest; Bob registers through edge B. Bob's call entering edge
//! B goes to R2, which finds flow 1 in the shared store and sends it
//! along its Path through edge A; edge A is killed (SIGKILL) with the
//! call up: Alice's side repairs the call over flow 2 (her events say
//! so), and a new call from Bob still reaches her, R2 failing over from
//! the dead edge to flow 2.
//!
//! Needs `redis-server` and `redis-cli` (Debian package `redis-server`,
//! installed by `interop/install.sh`). Without them the test says why it
//! is skipped; with `SIPROAM_REQUIRE_INTEROP=1` (CI) it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::cell::RefCell;

use serde_json::Value;

/// The address a process listens on for `transport`.
fn registrar(ip: &str, redis: &str) -> (Proc, String) {
    let p = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        &format!("tcp:{ip}:0"),
        "--domain",
        "example.test",
        "--store",
        redis,
    ]);
    let addr = listening(&p, "tcp");
    (p, format!("sip:{addr};transport=tcp"))
}

fn edge(ip: &str, registrar: &str) -> (Proc, String) {
    let p = Proc::spawn(&[
        "edge",
        "--json",
        "--listen",
        &format!("tcp:{ip}:0"),
        "--registrar",
        registrar,
    ]);
    let addr = listening(&p, "tcp");
    (p, addr)
}

/// On a failure, prints every event each agent sent (what the fleet did
/// is otherwise lost).
struct DumpOnPanic<'a>(Vec<(&'a str, &'a RefCell<Proc>)>);

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, p) in &self.0 {
                let Ok(p) = p.try_borrow() else { continue };
                p.drain();
                for v in p.seen().iter().filter(|v| v["event"] != "media") {
                    eprintln!("{name}: {v}");
                }
            }
        }
    }
}

fn confirmed(v: &Value) -> bool {
    v["event"] == "call" && v["state"] == "confirmed"
}

fn disconnected(v: &Value) -> bool {
    v["event"] == "call" && v["state"] == "disconnected"
}

#[test]
fn a_call_entering_the_other_edge_reaches_alice_and_survives_her_edge_dying() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    let (r1, r1_uri) = registrar("127.0.0.31", &url);
    let (_r2, r2_uri) = registrar("127.0.0.32", &url);
    let (mut edge_a, a_addr) = edge("127.0.0.33", &r1_uri);
    let (_edge_b, b_addr) = edge("127.0.0.34", &r2_uri);
    let proxy_a = format!("sip:{a_addr};transport=tcp");
    let proxy_b = format!("sip:{b_addr};transport=tcp");

    // R1 frozen while Alice starts: flow 2 registers first, so flow 1 is
    // her newest flow, the one a call goes to — the flow edge A holds
    signal(&r1, "STOP");
    let alice = RefCell::new(Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &r1_uri,
        "--outbound",
        "--instance-id",
        "urn:uuid:00000000-0000-1000-8000-0000000000a1",
        "--outbound-proxy",
        &proxy_a,
        "--outbound-proxy",
        &proxy_b,
        "--no-listen",
        "--auto-answer",
    ]));
    alice.borrow().wait_for("alice's flow 2 up", |v| {
        v["event"] == "flow" && v["state"] == "up" && v["reg_id"] == 2
    });
    signal(&r1, "CONT");
    for reg_id in [1, 2] {
        let up = alice
            .borrow()
            .seen_or_wait(&format!("alice's flow {reg_id} up"), |v| {
                v["event"] == "flow" && v["state"] == "up" && v["reg_id"] == reg_id
            });
        let via = if reg_id == 1 { &a_addr } else { &b_addr };
        assert_eq!(up["remote"].as_str(), Some(via.as_str()), "{up}");
    }
    // both flows are in the shared store, each with its edge's Path
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let record = redis.cli(&["GET", "siproam:loc:alice@example.test"]);
        if record.contains(&a_addr) && record.contains(&b_addr) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice's two flows never both reached the store: {record}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let bob = RefCell::new(Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &r2_uri,
        "--outbound",
        "--instance-id",
        "urn:uuid:00000000-0000-1000-8000-0000000000b1",
        "--outbound-proxy",
        &proxy_b,
        "--no-listen",
    ]));
    let _dump = DumpOnPanic(vec![("alice", &alice), ("bob", &bob)]);
    bob.borrow().wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });

    // Bob's call enters edge B, goes to R2, and reaches Alice
    bob.borrow_mut().send("call sip:alice@example.test");
    let bob_call = bob.borrow().wait_for("bob's call confirmed", confirmed)["call"].clone();
    let alice_call = alice.borrow().wait_for("alice's call confirmed", confirmed)["call"].clone();

    // edge A dies with the call up
    edge_a.child.kill().unwrap();
    let _ = edge_a.child.wait();
    let failed = alice.borrow().wait_for("alice's flow 1 failed", |v| {
        v["event"] == "flow" && v["state"] == "failed" && v["reg_id"] == 1
    });
    assert_eq!(failed["remote"].as_str(), Some(a_addr.as_str()), "{failed}");
    let carried = alice.borrow().wait_for("what flow 1 carried", |v| {
        v["event"] == "flow"
            && v["state"] == "terminated"
            && v["remote"].as_str() == Some(a_addr.as_str())
    });
    // the call was on flow 1 (her newest): Alice's side repairs it over
    // flow 2 — a refresh, or, edge B refusing (403) a request whose Route
    // names edge A, a new dialog through edge B replacing it (RFC 3891)
    assert_eq!(carried["calls"][0]["call"], alice_call, "{carried}");
    assert_eq!(carried["calls"][0]["action"], "repair", "{carried}");
    let repaired = alice.borrow().wait_for("the call repaired", |v| {
        v["event"] == "ip_change"
            && v["trigger"] == "flow_failure"
            && (v["stage"] == "refresh_calls" || v["stage"] == "replace_calls")
            && v["status"] == "ok"
    });
    assert_eq!(repaired["call"], alice_call, "{repaired}");
    // Bob's side of it: the same call refreshed, or the new dialog that
    // replaced it (the old one ends without a code)
    let bob_now = if repaired["stage"] == "replace_calls" {
        bob.borrow().wait_for("bob's new dialog", |v| {
            confirmed(v) && v["call"] != bob_call
        })["call"]
            .clone()
    } else {
        bob_call.clone()
    };
    alice.borrow().drain();
    assert!(
        !alice.borrow().seen().iter().any(disconnected),
        "alice's call ended"
    );
    if bob_now != bob_call {
        // the replaced dialog ends first (then `hangup` means the new one)
        bob.borrow()
            .seen_or_wait("bob's replaced dialog ended", |v| {
                disconnected(v) && v["call"] == bob_call
            });
    }
    bob.borrow_mut().send("hangup");
    bob.borrow().seen_or_wait("bob's call ended", |v| {
        disconnected(v) && v["call"] == bob_now
    });
    alice.borrow().wait_for("alice's call ended by bob", |v| {
        disconnected(v) && v["call"] == alice_call
    });

    // a new call from Bob still reaches Alice: over flow 2, edge A's flow
    // being dead
    bob.borrow_mut().send("call sip:alice@example.test");
    let earlier = [bob_call, bob_now];
    let second = bob
        .borrow()
        .wait_for("bob's second call answered or failed", |v| {
            (confirmed(v) || disconnected(v)) && !earlier.contains(&v["call"])
        });
    assert!(confirmed(&second), "{second}");
    let alice_second = alice
        .borrow()
        .wait_for("alice's second call confirmed", |v| {
            confirmed(v) && v["call"] != alice_call
        });
    bob.borrow_mut().send("hangup");
    bob.borrow().wait_for("bob's second call ended", |v| {
        disconnected(v) && v["call"] == second["call"]
    });
    alice.borrow().wait_for("alice's second call ended", |v| {
        disconnected(v) && v["call"] == alice_second["call"]
    });
}
