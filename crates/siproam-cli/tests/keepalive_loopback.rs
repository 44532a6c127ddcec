//! Keep-alives on the registration's TCP flow between real processes on
//! loopback: the agent's CRLFCRLF pings are answered by `siproam
//! registrar`'s transport; with outbound in force a registrar that stops
//! answering (SIGSTOP) makes the flow fail on the pong timeout, and the
//! agent registers again over a new connection once the registrar is back. Over UDP the same with STUN
//! Binding requests (`stun_timeout`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

#[test]
fn a_registration_flow_is_kept_alive_and_replaced_when_pongs_stop() {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "tcp:127.0.0.1:0"]);
    let addr = registrar.wait_for("tcp listener", |v| {
        v["event"] == "listening" && v["transport"] == "tcp"
    })["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let uri = format!("sip:{addr};transport=tcp");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--listen",
        "udp:127.0.0.2:0",
        // (the pong watchdog needs a registrar known to answer pings:
        // outbound in force)
        "--outbound",
        "--keepalive-stream",
        "1",
        "--pong-timeout",
        "1",
    ]);
    let registered = agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    assert_eq!(registered["outbound"], true, "{registered}");
    let up = agent.seen_or_wait("the flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    assert_eq!(up["transport"], "tcp", "{up}");
    assert_eq!(up["remote"], addr.as_str(), "{up}");
    agent.wait_for("a pong", |v| {
        v["event"] == "flow" && v["state"] == "keepalive_ok"
    });
    // the registrar stops answering anything, pings included
    signal(&registrar, "STOP");
    let failed = agent.wait_for("the flow failed", |v| {
        v["event"] == "flow" && v["state"] == "failed"
    });
    assert_eq!(failed["reason"], "pong_timeout", "{failed}");
    // what the (now closed) flow was
    assert_eq!(failed["local"], up["local"], "{failed}");
    assert_eq!(failed["remote"], up["remote"], "{failed}");
    signal(&registrar, "CONT");
    // registered again, over a new connection, kept alive in turn
    agent.wait_for("registered again", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let again = agent.wait_for("the new flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    assert_ne!(again["local"], up["local"], "a new connection: {again}");
    agent.wait_for("a pong on it", |v| {
        v["event"] == "flow" && v["state"] == "keepalive_ok"
    });
    // leaving, the agent unregisters: its flow is closed on purpose
    signal(&agent, "INT");
    let closed = agent.wait_for("the flow closed", |v| {
        v["event"] == "flow" && v["state"] == "closed"
    });
    assert_eq!(closed["reason"], "unregistered", "{closed}");
    assert_eq!(closed["flow"], again["flow"], "{closed}");
    assert_eq!(closed["local"], again["local"], "{closed}");
}

/// The same over UDP (RFC 5626 §4.4.2): with outbound in force the agent
/// keeps its flow with STUN Binding requests on the SIP 5-tuple, which
/// `siproam registrar` answers on its SIP port; a registrar that stops
/// answering (SIGSTOP) fails the flow with `stun_timeout`, and the agent
/// registers again once it is back.
#[test]
fn a_udp_registration_flow_is_kept_alive_by_stun_and_fails_when_answers_stop() {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("udp listener", |v| {
        v["event"] == "listening" && v["transport"] == "udp"
    })["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let uri = format!("sip:{addr}");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--listen",
        "udp:127.0.0.2:0",
        "--outbound",
        "--keepalive",
        "1",
        "--pong-timeout",
        "1",
    ]);
    let registered = agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    assert_eq!(registered["outbound"], true, "{registered}");
    let up = agent.seen_or_wait("the flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    assert_eq!(up["transport"], "udp", "{up}");
    assert!(
        up["local"].as_str().unwrap().starts_with("127.0.0.2:"),
        "{up}"
    );
    assert_eq!(up["remote"], addr.as_str(), "{up}");
    // several answers in a row: each Binding request is answered
    for i in 0..3 {
        agent.wait_for(&format!("STUN answer {i}"), |v| {
            v["event"] == "flow" && v["state"] == "keepalive_ok"
        });
    }
    // the registrar stops answering anything, STUN included
    signal(&registrar, "STOP");
    let failed = agent.wait_for("the flow failed", |v| {
        v["event"] == "flow" && v["state"] == "failed"
    });
    assert_eq!(failed["reason"], "stun_timeout", "{failed}");
    assert_eq!(failed["transport"], "udp", "{failed}");
    assert_eq!(failed["local"], up["local"], "{failed}");
    signal(&registrar, "CONT");
    // registered again over UDP, kept alive in turn
    agent.wait_for("registered again", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    agent.wait_for("the new flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    agent.wait_for("a STUN answer on it", |v| {
        v["event"] == "flow" && v["state"] == "keepalive_ok"
    });
}
