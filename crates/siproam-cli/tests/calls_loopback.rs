//! Calls between `siproam` processes on loopback: the demo, and two agents
//! through `siproam registrar` where the callee records the caller's tone
//! (measured with a Goertzel filter).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

#[test]
fn the_demo_passes() {
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["demo", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let done = events
        .iter()
        .find(|v| v["event"] == "demo" && v["stage"] == "completed")
        .unwrap();
    assert_eq!(done["state"], "passed");
    assert!(done["alice_rx_packets"].as_u64().unwrap() > 50);
    assert!(done["bob_rx_packets"].as_u64().unwrap() > 50);
    for stage in ["registration", "call", "media"] {
        assert!(
            events.iter().any(|v| v["event"] == stage),
            "no {stage} event"
        );
        assert!(events.iter().all(|v| v["t_ms"].is_number()));
    }
}

#[test]
fn an_agent_calls_another_through_the_registrar_and_the_tone_is_heard() {
    let dir = std::env::temp_dir().join(format!("siproam-calls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("bob.wav");
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let reg = format!("sip:{addr}");
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.3:0",
        "--auto-answer",
        "--play",
        "tone:440",
        "--record",
        wav.to_str().unwrap(),
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
        &reg,
        "--listen",
        "udp:127.0.0.2:0",
        "--play",
        "tone:1000",
    ]);
    alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    // media events at least once a second, packets both ways
    let m = alice.wait_for("media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 40
    });
    assert_eq!(m["lost"], 0);
    // bob has heard more than a second of it (reports come every second)
    bob.wait_for("bob's media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 60
    });
    alice.send("hangup");
    let last = alice.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert!(last["tx_packets"].as_u64().unwrap() > 40);
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    bob.wait_for("bob final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    bob.send("quit");
    let _ = bob.child.wait();
    // what bob recorded is alice's 1 kHz tone
    let samples: Vec<i16> = hound::WavReader::open(&wav)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect();
    assert!(
        samples.len() > 8000,
        "at least a second recorded: {}",
        samples.len()
    );
    let window = &samples[samples.len() / 2 - 2000..samples.len() / 2 + 2000];
    let at_1k = goertzel(window, 1000.0);
    for other in [440.0, 500.0, 1500.0] {
        let p = goertzel(window, other);
        assert!(at_1k > 100.0 * p, "1 kHz {at_1k:e} vs {other} Hz {p:e}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
