//! Hostile TCP peers against `siproam registrar` on loopback (issue 10,
//! finding 4): idle connections by the thousand must not lock out a new
//! client, and the binary raises its descriptor limit to hold them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

fn listening(p: &Proc, transport: &str) -> SocketAddr {
    p.wait_for(&format!("{transport} listener"), |v| {
        v["event"] == "listening" && v["transport"] == transport
    })["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Opens `per_source` idle connections from each of `sources` loopback
/// addresses 127.0.S.x; every connect is bounded in time. Returns those
/// that opened (the server may close them later).
async fn idle_connections(
    to: SocketAddr,
    sources: u8,
    per_source: usize,
    third_octet: u8,
) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::new();
    for s in 0..sources {
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, third_octet, 10 + s)), 0);
        for _ in 0..per_source {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(from).unwrap();
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(5), socket.connect(to)).await
            {
                open.push(stream);
            }
        }
    }
    open
}

fn register_tcp(registrar: SocketAddr, listen: &str) -> Proc {
    Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &format!("sip:{registrar};transport=tcp"),
        "--listen",
        listen,
        "--stay",
    ])
}

#[test]
fn a_new_tcp_client_registers_while_thousands_of_idle_connections_are_open() {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "tcp:127.0.0.1:0"]);
    let addr = listening(&registrar, "tcp");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // 3,000 idle sockets from 60 addresses (50 each, under the per-source
    // cap): three times the registrar's connection limit, then 500 more
    // from one address (beyond the per-source cap)
    let held = rt.block_on(idle_connections(addr, 60, 50, 1));
    assert!(held.len() > 1024, "only {} connections opened", held.len());
    let flood = rt.block_on(idle_connections(addr, 1, 500, 2));
    assert!(!flood.is_empty());

    // a real client still registers
    let agent = register_tcp(addr, "udp:127.0.0.6:0");
    let registered = agent.wait_for("registered", |v| {
        v["event"] == "registration" && (v["state"] == "registered" || v["state"] == "failed")
    });
    assert_eq!(registered["state"], "registered", "{registered}");
    assert_eq!(registered["code"], 200);
    drop((held, flood));
}

#[cfg(target_os = "linux")]
#[test]
fn the_binary_raises_its_descriptor_limit_to_the_hard_limit() {
    if !have("prlimit") {
        return;
    }
    let registrar = Proc::spawn_program(
        "prlimit",
        &[
            "--nofile=256:",
            env!("CARGO_BIN_EXE_siproam"),
            "registrar",
            "--json",
            "--listen",
            "tcp:127.0.0.1:0",
        ],
    );
    listening(&registrar, "tcp");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", registrar.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files SOFT HARD files"
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "256", "{line}");
}
