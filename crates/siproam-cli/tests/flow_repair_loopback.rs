//! A call surviving the failure of the flow it was made on, between real
//! processes on loopback: Alice registers and calls Bob through
//! `siproam registrar` over one TCP connection; the registrar stops
//! answering (SIGSTOP), the keep-alive finds the flow dead, the agent
//! says which usages it carried (`flow` `terminated`: the registration
//! re-registers, the call is repaired) and, once the registrar is back
//! and the account registered over a new connection, refreshes the call
//! (`ip_change` stages with `trigger` `flow_failure`); the call stays up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

#[test]
fn a_call_survives_the_failure_of_its_flow() {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "tcp:127.0.0.1:0"]);
    let addr = registrar.wait_for("tcp listener", |v| {
        v["event"] == "listening" && v["transport"] == "tcp"
    })["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let uri = format!("sip:{addr};transport=tcp");
    let bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &uri,
        "--listen",
        "tcp:127.0.0.3:0",
        "--listen",
        "udp:127.0.0.3:0",
        "--auto-answer",
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
        &uri,
        "--listen",
        "tcp:127.0.0.2:0",
        "--listen",
        "udp:127.0.0.2:0",
        // the pong watchdog runs with outbound in force (siproam registrar
        // says Require: outbound when asked)
        "--outbound",
        "--keepalive-stream",
        "1",
        "--pong-timeout",
        "1",
    ]);
    alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    alice.send("call sip:bob@example.test");
    let up = alice.wait_for("the call confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let call = up["call"].clone();
    // the registrar freezes: no pong, the flow fails
    signal(&registrar, "STOP");
    let failed = alice.wait_for("the flow failed", |v| {
        v["event"] == "flow" && v["state"] == "failed"
    });
    assert_eq!(failed["reason"], "pong_timeout", "{failed}");
    let carried = alice.wait_for("what the flow carried", |v| {
        v["event"] == "flow" && v["state"] == "terminated"
    });
    assert_eq!(
        carried["registrations"][0]["action"], "reregister",
        "{carried}"
    );
    assert_eq!(carried["calls"][0]["call"], call, "{carried}");
    assert_eq!(carried["calls"][0]["action"], "repair", "{carried}");
    signal(&registrar, "CONT");
    let refreshed = alice.wait_for("the call refreshed", |v| {
        v["event"] == "ip_change" && v["stage"] == "refresh_calls"
    });
    assert_eq!(refreshed["trigger"], "flow_failure", "{refreshed}");
    assert_eq!(refreshed["status"], "ok", "{refreshed}");
    assert_eq!(refreshed["call"], call, "{refreshed}");
    let done = alice.wait_for("completed", |v| {
        v["event"] == "ip_change" && v["stage"] == "completed"
    });
    assert_eq!(done["status"], "ok", "{done}");
    let ended = |v: &serde_json::Value| v["event"] == "call" && v["state"] == "disconnected";
    assert!(!alice.seen().iter().any(ended), "{:?}", alice.seen());
    bob.drain();
    assert!(!bob.seen().iter().any(ended), "{:?}", bob.seen());
    alice.send("hangup");
    alice.wait_for("the call ended by us", ended);
}
