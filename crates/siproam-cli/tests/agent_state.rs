//! The agent tells its state (issue 15, item 3): `agent --help` lists the
//! stdin commands, `status` shows the accounts, calls, flows,
//! subscriptions and addresses, `hold`/`unhold` give `call` events, an
//! incoming call names its caller, and a disconnect says who ended it and
//! why. Two agents through `siproam registrar`, on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

const COMMANDS: [&str; 14] = [
    "call URI",
    "answer [CALL]",
    "hangup [CALL]",
    "hold [CALL]",
    "unhold [CALL]",
    "ip-change [ADDR]",
    "dtmf [CALL] DIGITS",
    "transfer [CALL] URI",
    "transfer CALL OTHER_CALL",
    "subscribe URI EVENT",
    "unsubscribe SUB",
    "message URI TEXT",
    "status",
    "quit",
];

#[test]
fn agent_help_lists_the_stdin_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["agent", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for c in COMMANDS {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(c)),
            "no line for {c:?} in:\n{help}"
        );
    }
}

/// A registrar on loopback: (it, its URI).
fn registrar() -> (Proc, String) {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    (registrar, format!("sip:{addr}"))
}

fn agent(user: &str, ip: &str, reg: &str, extra: &[&str]) -> Proc {
    let aor = format!("sip:{user}@example.test");
    let listen = format!("udp:{ip}:0");
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        &aor,
        "--registrar",
        reg,
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    p.wait_registered(user);
    p
}

fn call_event(p: &Proc, who: &str, pred: impl Fn(&Value) -> bool) -> Value {
    p.wait_for(who, |v| v["event"] == "call" && pred(v))
}

#[test]
fn an_unknown_command_lists_the_commands() {
    let (_registrar, reg) = registrar();
    let mut alice = agent("alice", "127.0.0.2", &reg, &[]);
    alice.send("frobnicate now");
    let e = alice.wait_for("error", |v| v["event"] == "error");
    let reason = e["reason"].as_str().unwrap();
    assert!(reason.contains("frobnicate"), "{reason}");
    for c in [
        "call",
        "hangup",
        "hold",
        "transfer",
        "subscribe",
        "status",
        "quit",
    ] {
        assert!(reason.contains(c), "{c} not in {reason}");
    }
}

#[test]
fn status_shows_accounts_calls_flows_and_addresses_and_hold_is_told() {
    let (_registrar, reg) = registrar();
    let bob = agent("bob", "127.0.0.3", &reg, &["--auto-answer"]);
    let mut alice = agent("alice", "127.0.0.2", &reg, &[]);
    alice.send("call sip:bob@example.test");
    let confirmed = alice.wait_call("alice", "confirmed");
    let id = confirmed["call"].as_u64().unwrap();
    bob.wait_call("bob", "confirmed");
    alice.wait_for("media", |v| {
        v["event"] == "media" && v["tx_packets"].as_u64().unwrap_or(0) > 0
    });
    alice.send("status");
    let s = alice.wait_for("status", |v| v["event"] == "status");
    let accounts = s["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{s}");
    let a = &accounts[0];
    assert_eq!(a["aor"], "sip:alice@example.test", "{s}");
    assert_eq!(a["state"], "registered", "{s}");
    assert!(a["contact"].as_str().unwrap().contains("127.0.0.2"), "{s}");
    assert!(a["expires_left"].as_u64().unwrap() > 0, "{s}");
    let calls = s["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{s}");
    let c = &calls[0];
    assert_eq!(c["call"].as_u64(), Some(id), "{s}");
    assert_eq!(c["state"], "confirmed", "{s}");
    assert_eq!(c["peer"], "sip:bob@example.test", "{s}");
    assert_eq!(c["direction"], "outgoing", "{s}");
    assert_eq!(c["held"], false, "{s}");
    assert!(
        c["media"]["local"].as_str().unwrap().contains("127.0.0.2"),
        "{s}"
    );
    assert!(
        c["media"]["remote"].as_str().unwrap().contains("127.0.0.3"),
        "{s}"
    );
    assert!(c["media"]["tx_packets"].as_u64().unwrap() > 0, "{s}");
    assert!(s["flows"].is_array(), "{s}");
    assert!(s["subscriptions"].is_array(), "{s}");
    let listeners = s["listeners"].as_array().unwrap();
    assert!(
        listeners
            .iter()
            .any(|l| l["transport"] == "udp"
                && l["address"].as_str().unwrap().starts_with("127.0.0.2:")),
        "{s}"
    );

    alice.send("hold");
    let held = call_event(&alice, "held", |v| v["held"] == true);
    assert_eq!(held["call"].as_u64(), Some(id));
    assert_eq!(held["state"], "confirmed");
    alice.send("status");
    let s = alice.wait_for("status", |v| v["event"] == "status");
    assert_eq!(s["calls"][0]["held"], true, "{s}");
    alice.send("unhold");
    let unheld = call_event(&alice, "unheld", |v| v["held"] == false);
    assert_eq!(unheld["call"].as_u64(), Some(id));

    // bob hangs up: alice hears it was bob, bob that it was him
    let mut bob = bob;
    bob.send("hangup");
    let d = alice.wait_call("alice", "disconnected");
    assert_eq!(d["by"], "remote", "{d}");
    assert_eq!(d["reason"], "hangup", "{d}");
    let d = bob.wait_call("bob", "disconnected");
    assert_eq!(d["by"], "local", "{d}");
    assert_eq!(d["reason"], "hangup", "{d}");
    alice.send("status");
    let s = alice.wait_for("status", |v| v["event"] == "status");
    assert_eq!(s["calls"].as_array().unwrap().len(), 0, "{s}");
}

#[test]
fn an_incoming_call_names_the_caller_and_a_refusal_says_486() {
    let (_registrar, reg) = registrar();
    let mut bob = agent("bob", "127.0.0.3", &reg, &[]);
    let mut alice = agent("alice", "127.0.0.2", &reg, &[]);
    alice.send("call sip:bob@example.test");
    let inc = call_event(&bob, "incoming", |v| v["state"] == "incoming");
    assert_eq!(inc["peer"], "sip:alice@example.test", "{inc}");
    assert_eq!(inc["direction"], "incoming", "{inc}");
    bob.send("hangup");
    let d = alice.wait_call("alice", "disconnected");
    assert_eq!(d["by"], "remote", "{d}");
    assert_eq!(d["code"], 486, "{d}");
    assert_eq!(d["reason"], "486 Busy Here", "{d}");
    let d = bob.wait_call("bob", "disconnected");
    assert_eq!(d["by"], "local", "{d}");

    // alice calls again and gives up before bob answers: a CANCEL
    alice.send("call sip:bob@example.test");
    call_event(&bob, "incoming again", |v| v["state"] == "incoming");
    alice.send("hangup");
    let d = alice.wait_call("alice", "disconnected");
    assert_eq!(d["by"], "local", "{d}");
    assert_eq!(d["reason"], "cancelled", "{d}");
    let d = bob.wait_call("bob", "disconnected");
    assert_eq!(d["by"], "remote", "{d}");
    assert_eq!(d["reason"], "cancelled", "{d}");
}

#[test]
fn status_without_json_is_readable() {
    let (_registrar, reg) = registrar();
    let aor = "sip:carol@example.test";
    let mut p = std::process::Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args([
            "agent",
            "--aor",
            aor,
            "--registrar",
            &reg,
            "--listen",
            "udp:127.0.0.4:0",
        ])
        .env("XDG_STATE_HOME", temp_dir("agent-state-text"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::{BufRead, Write};
    let mut stdin = p.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(p.stdout.take().unwrap()).lines();
    // registered first, then the status
    for line in out.by_ref() {
        if line.unwrap().contains("registered") {
            break;
        }
    }
    writeln!(stdin, "status").unwrap();
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    let rest: Vec<String> = out.map_while(Result::ok).collect();
    let _ = p.wait();
    let text = rest.join("\n");
    assert!(text.contains("account sip:carol@example.test"), "{text}");
    assert!(text.contains("listening udp 127.0.0.4:"), "{text}");
    assert!(text.contains("calls: none"), "{text}");
}
