//! A call surviving the failure of its flow by moving to the identity's
//! other flow, between real processes on loopback: two registrars (A on
//! 127.0.0.1, B on 127.0.0.2), Alice and Bob each with a flow through
//! each (reg-id 1 to A, 2 to B). Alice calls Bob over flow 1; A freezes
//! (SIGSTOP): Alice's keep-alive finds flow 1 dead, and the call is
//! repaired over flow 2 through B while A is still frozen (so before flow
//! 1 could register again) — `ip_change` with `trigger` `flow_failure`,
//! and the call stays up. A (`siproam registrar`) record-routed the
//! dialog, and B refuses a request routed to another proxy (403): the
//! refresh over flow 2 fails on the way, and the `Replaces` fallback makes
//! a new dialog through B (`replace_calls`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

/// The address a process listens on for `transport` at `ip`.
fn listening_on(p: &Proc, transport: &str, ip: &str) -> String {
    p.wait_for(&format!("{transport} listener on {ip}"), |v| {
        v["event"] == "listening"
            && v["transport"] == transport
            && v["address"].as_str().is_some_and(|a| a.starts_with(ip))
    })["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_call_moves_to_the_other_flow_when_its_proxy_freezes() {
    let spawn_registrar = |ip: &str| {
        Proc::spawn(&[
            "registrar",
            "--json",
            "--listen",
            &format!("tcp:{ip}:0"),
            "--domain",
            "example.test",
        ])
    };
    let a = spawn_registrar("127.0.0.1");
    let b = spawn_registrar("127.0.0.2");
    let a_addr = listening_on(&a, "tcp", "127.0.0.1:");
    let b_addr = listening_on(&b, "tcp", "127.0.0.2:");
    let registrar_uri = format!("sip:{a_addr};transport=tcp");
    let proxy_a = format!("sip:{a_addr};transport=tcp");
    let proxy_b = format!("sip:{b_addr};transport=tcp");
    let agent = |aor: &str, listen: &str, urn: &str, extra: &[&str]| {
        let mut args = vec![
            "agent",
            "--json",
            "--aor",
            aor,
            "--registrar",
            &registrar_uri,
            "--listen",
            listen,
            "--outbound",
            "--instance-id",
            urn,
            "--outbound-proxy",
            &proxy_a,
            "--outbound-proxy",
            &proxy_b,
        ];
        args.extend_from_slice(extra);
        Proc::spawn(&args)
    };
    let bob = agent(
        "sip:bob@example.test",
        "tcp:127.0.0.23:0",
        "urn:uuid:00000000-0000-1000-8000-0000000000f8",
        &["--auto-answer"],
    );
    let mut alice = agent(
        "sip:alice@example.test",
        "tcp:127.0.0.22:0",
        "urn:uuid:00000000-0000-1000-8000-0000000000f7",
        &["--keepalive-stream", "1", "--pong-timeout", "1"],
    );
    for p in [&bob, &alice] {
        for reg_id in [1, 2] {
            p.seen_or_wait(&format!("flow {reg_id} up"), |v| {
                v["event"] == "flow" && v["state"] == "up" && v["reg_id"] == reg_id
            });
        }
    }
    alice.send("call sip:bob@example.test");
    let up = alice.wait_for("the call confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let call = up["call"].clone();
    let flow_1_registered = |v: &serde_json::Value| {
        v["event"] == "registration" && v["account"] == 1 && v["state"] == "registered"
    };
    let registered_before = alice.seen().iter().filter(|v| flow_1_registered(v)).count();
    assert!(registered_before > 0, "{:?}", alice.seen());
    // A freezes: no pong on alice's flow 1
    signal(&a, "STOP");
    let failed = alice.wait_for("alice's flow 1 failed", |v| {
        v["event"] == "flow" && v["state"] == "failed" && v["reg_id"] == 1
    });
    assert_eq!(failed["reason"], "pong_timeout", "{failed}");
    assert_eq!(failed["remote"].as_str(), Some(a_addr.as_str()), "{failed}");
    let carried = alice.wait_for("what the flow carried", |v| {
        v["event"] == "flow" && v["state"] == "terminated"
    });
    assert_eq!(carried["calls"][0]["call"], call, "{carried}");
    assert_eq!(carried["calls"][0]["action"], "repair", "{carried}");
    // repaired over flow 2 with A still frozen: a refresh, or (A having
    // record-routed the dialog) the INVITE with Replaces through B
    let repaired = alice.wait_for("the call repaired", |v| {
        v["event"] == "ip_change"
            && v["trigger"] == "flow_failure"
            && (v["stage"] == "refresh_calls" || v["stage"] == "replace_calls")
            && v["status"] == "ok"
    });
    assert_eq!(repaired["call"], call, "{repaired}");
    let ended = |v: &serde_json::Value| v["event"] == "call" && v["state"] == "disconnected";
    assert!(!alice.seen().iter().any(ended), "{:?}", alice.seen());
    // flow 1 was not registered again meanwhile (A is still frozen)
    assert_eq!(
        alice.seen().iter().filter(|v| flow_1_registered(v)).count(),
        registered_before,
        "{:?}",
        alice.seen()
    );
    // Bob has the call too: the same dialog refreshed, or the new one
    // that replaced it (A record-routes, so B cannot reach the old path)
    let bob_first = bob.seen_or_wait("bob's call", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    })["call"]
        .clone();
    if repaired["stage"] == "replace_calls" {
        bob.wait_for("bob's new dialog", |v| {
            v["event"] == "call" && v["state"] == "confirmed" && v["call"] != bob_first
        });
    } else {
        bob.drain();
        assert!(!bob.seen().iter().any(ended), "{:?}", bob.seen());
    }
    signal(&a, "CONT");
    alice.send("hangup");
    alice.wait_for("the call ended by us", ended);
    drop(bob);
}
