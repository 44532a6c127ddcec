//! The demo's hand-off between `siproam` processes on loopback, over UDP,
//! TCP and TLS: Alice and Bob register to `siproam registrar`, Alice calls
//! Bob through it, then Alice's agent moves from 127.0.0.2 to 127.0.0.3
//! (`ip-change 127.0.0.3` on stdin). Every stage must succeed, the
//! registrar must hold the new Contact, and media must flow both ways on
//! the new address without loss.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use serde_json::Value;

const STAGES: [&str; 6] = [
    "started",
    "shutdown_transports",
    "restart_listener",
    "shutdown_registration_flow",
    "update_contact",
    "refresh_calls",
];

fn handoff_over(transport: &str) {
    let dir = temp_dir(&format!("handoff-{transport}"));
    let mut reg_args: Vec<String> = vec![
        "registrar".into(),
        "--json".into(),
        "--listen".into(),
        format!("{transport}:127.0.0.1:0"),
    ];
    let mut agent_extra: Vec<String> = Vec::new();
    if transport == "tls" {
        let (ca, cert, key) = certificates(&dir);
        for (flag, path) in [("--tls-cert", &cert), ("--tls-key", &key)] {
            reg_args.push(flag.into());
            reg_args.push(path.to_str().unwrap().into());
        }
        agent_extra.push("--ca".into());
        agent_extra.push(ca.to_str().unwrap().into());
    }
    let reg_args: Vec<&str> = reg_args.iter().map(String::as_str).collect();
    let registrar = Proc::spawn(&reg_args);
    let addr = registrar.wait_for("listener", |v| {
        v["event"] == "listening" && v["transport"] == transport
    })["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let reg = if transport == "udp" {
        format!("sip:{addr}")
    } else {
        format!("sip:{addr};transport={transport}")
    };
    let agent = |user: &str, ip: &str, answer: bool| {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--json".into(),
            "--aor".into(),
            format!("sip:{user}@example.test"),
            "--registrar".into(),
            reg.clone(),
            "--listen".into(),
            format!("udp:{ip}:0"),
            "--play".into(),
            "tone:1000".into(),
        ];
        if transport == "tcp" {
            args.push("--listen".into());
            args.push(format!("tcp:{ip}:0"));
        }
        if answer {
            args.push("--auto-answer".into());
        }
        args.extend(agent_extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = Proc::spawn(&args);
        let tcp = (transport == "tcp").then(|| {
            p.wait_for("tcp listener", |v| {
                v["event"] == "listening" && v["transport"] == "tcp"
            })["address"]
                .as_str()
                .unwrap()
                .to_owned()
        });
        p.wait_for(&format!("{user} registered"), |v| {
            v["event"] == "registration" && v["state"] == "registered"
        });
        (p, tcp)
    };
    let (bob, _) = agent("bob", "127.0.0.5", true);
    let (mut alice, old_tcp) = agent("alice", "127.0.0.2", false);
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let before = bob.wait_for("bob hears alice", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    assert!(before["remote"].as_str().unwrap().starts_with("127.0.0.2:"));

    alice.send("ip-change 127.0.0.3");
    let mut seen: Vec<Value> = Vec::new();
    loop {
        let v = alice.wait_for("ip_change", |v| v["event"] == "ip_change");
        let done = v["stage"] == "completed";
        seen.push(v);
        if done {
            break;
        }
    }
    for v in &seen {
        assert_eq!(v["status"], "ok", "{v}");
    }
    // the restarted listeners are really there: a stream listener takes a
    // connection on the new address, the old one is closed
    let restarted: Vec<&Value> = seen
        .iter()
        .filter(|v| v["stage"] == "restart_listener")
        .collect();
    assert!(!restarted.is_empty());
    for v in &restarted {
        let address = v["address"].as_str().unwrap();
        assert!(address.starts_with("127.0.0.3:"), "{v}");
        if v["transport"] == "tcp" {
            std::net::TcpStream::connect(address).expect("the new TCP listener accepts");
        }
    }
    if let Some(old) = old_tcp {
        assert!(restarted.iter().any(|v| v["transport"] == "tcp"));
        assert!(
            std::net::TcpStream::connect(&old).is_err(),
            "the old TCP listener {old} is closed"
        );
    }
    for stage in STAGES {
        assert!(
            seen.iter().any(|v| v["stage"] == stage),
            "no {stage} stage: {seen:?}"
        );
    }
    let registered = alice.wait_for("re-registered", |v| {
        v["event"] == "registration"
            && v["state"] == "registered"
            && v["contact"]
                .as_str()
                .is_some_and(|c| c.contains("127.0.0.3"))
    });
    assert_eq!(registered["code"], 200);
    if transport != "udp" {
        let contact = registered["contact"].as_str().unwrap();
        assert!(
            contact.contains(&format!("transport={transport}")),
            "{contact}"
        );
    }
    // the registrar binds the new Contact and no longer the old one
    registrar.wait_for("new binding", |v| {
        v["event"] == "binding"
            && v["aor"] == "sip:alice@example.test"
            && v["contacts"].as_array().is_some_and(|c| {
                c.len() == 1 && c[0]["contact"].as_str().unwrap().contains("127.0.0.3")
            })
    });
    // media: alice sends and receives on the new address, bob follows
    let moved = alice.wait_for("alice's media on the new address", |v| {
        v["event"] == "media"
            && v["local"]
                .as_str()
                .is_some_and(|l| l.starts_with("127.0.0.3:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    let after = bob.wait_for("bob's media from the new address", |v| {
        v["event"] == "media"
            && v["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.3:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["rx_packets"].as_u64().unwrap() + 25
    });
    assert_eq!(moved["lost"], 0, "{moved}");
    assert_eq!(after["lost"], 0, "{after}");
    // the call still ends cleanly, through the route set, from the new address
    alice.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn handoff_over_udp() {
    handoff_over("udp");
}

#[test]
fn handoff_over_tcp() {
    handoff_over("tcp");
}

#[test]
fn handoff_over_tls() {
    handoff_over("tls");
}
