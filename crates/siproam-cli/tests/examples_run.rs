//! The library's examples (`crates/siproam/examples`) run against
//! `siproam registrar` on loopback: `register` registers and removes its
//! binding, `call` places a call through the registrar to an agent that
//! answers and follows a move from 127.0.0.2 to 127.0.0.3, `edge` fronts
//! the registrar for an agent that registers through it.
//!
//! The examples are built by `cargo test --workspace` (cargo builds every
//! example when testing); run alone, this test needs `cargo build -p
//! siproam --examples` first and says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The example's binary beside `siproam`'s, if built.
fn example(name: &str) -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_siproam"));
    let path = bin.parent()?.join("examples").join(name);
    path.exists().then_some(path)
}

/// Runs an example to its end (bounded: killed after 60 s); its stdout.
fn run(path: &PathBuf, args: &[&str]) -> String {
    let mut child = Command::new(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(status.success(), "{path:?} failed ({status}):\n{text}");
            return text;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{path:?} did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn examples() -> Option<[PathBuf; 3]> {
    let found = (example("register"), example("call"), example("edge"));
    match found {
        (Some(r), Some(c), Some(e)) => Some([r, c, e]),
        _ => {
            let msg = "the examples are not built: `cargo test --workspace` builds them \
                       (or `cargo build -p siproam --examples`)";
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("skipped: {msg}");
            None
        }
    }
}

fn registrar() -> (Proc, String) {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    (registrar, addr)
}

#[test]
fn register_example_registers_and_removes_its_binding() {
    let Some([register, _, _]) = examples() else {
        return;
    };
    let (registrar, addr) = registrar();
    let out = run(
        &register,
        &["sip:dora@example.test", &format!("sip:{addr}"), "2"],
    );
    assert!(out.contains("registration registered"), "{out}");
    assert!(out.contains("registration unregistered"), "{out}");
    let b = registrar.seen_or_wait("dora's binding", |v| {
        v["event"] == "binding" && v["aor"] == "sip:dora@example.test"
    });
    assert!(!b["contacts"].as_array().unwrap().is_empty(), "{b}");
    registrar.wait_for("dora's binding removed", |v| {
        v["event"] == "binding"
            && v["aor"] == "sip:dora@example.test"
            && v["contacts"].as_array().is_some_and(Vec::is_empty)
    });
}

#[test]
fn call_example_calls_and_follows_the_move() {
    let Some([_, call, _]) = examples() else {
        return;
    };
    let (_registrar, addr) = registrar();
    let reg = format!("sip:{addr}");
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.5:0",
        "--auto-answer",
        "--play",
        "tone:1000",
    ]);
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let out = run(
        &call,
        &[
            "sip:alice@example.test",
            &reg,
            "sip:bob@example.test",
            "127.0.0.2",
            "127.0.0.3",
        ],
    );
    assert!(out.contains("registration registered"), "{out}");
    assert!(out.contains("call 1 confirmed"), "{out}");
    assert!(out.contains("ip change: completed ok"), "{out}");
    assert!(out.contains("call 1 disconnected"), "{out}");
    // after the move Bob's media comes from Alice's new address
    bob.wait_for("bob's call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    let last = bob
        .seen()
        .into_iter()
        .rev()
        .find(|v| v["event"] == "media")
        .expect("bob reported media");
    assert!(
        last["remote"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.3:"),
        "{last}"
    );
    bob.quit();
}

#[test]
fn edge_example_fronts_the_registrar() {
    let Some([_, _, edge]) = examples() else {
        return;
    };
    let (registrar, addr) = registrar();
    let port = free_port(0);
    let listen = format!("127.0.0.1:{port}");
    let edge_path = edge.clone();
    let edge_listen = listen.clone();
    let edge_run = std::thread::spawn(move || run(&edge_path, &[&edge_listen, &addr, "8"]));
    wait_udp_bound("127.0.0.1", port);
    let mut carol = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:carol@example.test",
        "--registrar",
        &format!("sip:{listen}"),
        "--listen",
        "udp:127.0.0.6:0",
    ]);
    carol.wait_for("carol registered through the edge", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    registrar.seen_or_wait("carol's binding", |v| {
        v["event"] == "binding" && v["aor"] == "sip:carol@example.test"
    });
    carol.quit();
    let out = edge_run.join().unwrap();
    assert!(
        out.contains("edge listening on") && out.contains(&listen),
        "{out}"
    );
}
