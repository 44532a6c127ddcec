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

/// What the fake registrar of the flood test saw and did.
#[derive(Default)]
struct FakeRegistrar {
    /// REGISTERs answered with a 200.
    registers: std::sync::atomic::AtomicUsize,
    /// The agent's pings (CRLFCRLF) it answered.
    pings: std::sync::atomic::AtomicUsize,
    /// CRLF pongs from the agent (answers to the flood).
    pongs: std::sync::atomic::AtomicUsize,
    /// Connections accepted.
    accepted: std::sync::atomic::AtomicUsize,
}

/// Serves one registration connection: frames what the agent sends,
/// answers its pings with a pong and each REGISTER with a 200 (the
/// Contact echoed with `expires=4`, `Flow-Timer: 1` so the pong watchdog
/// runs); writes go through `wr`, shared with the flood.
fn serve_registrations(
    stream: std::net::TcpStream,
    wr: std::sync::Arc<std::sync::Mutex<std::net::TcpStream>>,
    seen: std::sync::Arc<FakeRegistrar>,
) {
    use siproam_sip::{Frame, HeaderName, Limits, Message, MessageBuilder, Side, StreamFramer};
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let mut rd = stream;
    let mut framer = StreamFramer::new(Side::Server, Limits::default());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rd.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        while let Ok(Some(frame)) = framer.next_frame() {
            let reply = match frame {
                Frame::Ping => {
                    seen.pings.fetch_add(1, Ordering::Relaxed);
                    bytes::Bytes::from_static(b"\r\n")
                }
                Frame::Pong => {
                    seen.pongs.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Frame::Message(m) => {
                    let Ok(req) = Message::parse(m) else { return };
                    let contact = req.header(HeaderName::Contact).unwrap_or_default();
                    let base = contact.split(";expires").next().unwrap_or_default();
                    let resp = MessageBuilder::response_to(&req, 200, "OK", Some("fake"))
                        .header("Contact", &format!("{base};expires=4"))
                        .header("Flow-Timer", "1")
                        .build()
                        .unwrap();
                    seen.registers.fetch_add(1, Ordering::Relaxed);
                    resp.to_bytes()
                }
            };
            if wr.lock().unwrap().write_all(&reply).is_err() {
                return;
            }
        }
    }
}

/// Issue 12, bad input: a server floods CRLFs (read as pings and stray
/// pongs) at the agent's registration connection — 2 MiB of them, in
/// 64 KiB writes, then it answers normally. The agent stays registered
/// over the same connection and goes on refreshing, its flow never fails
/// (its own pings are still answered and seen), and its answers to the
/// flood are bounded (no more pongs than pings, the transport skipping
/// pongs when its send queue is full).
#[test]
fn a_crlf_flood_at_the_registration_connection_changes_nothing() {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(FakeRegistrar::default());
    let (conn_tx, conn_rx) = std::sync::mpsc::channel();
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                seen.accepted.fetch_add(1, Ordering::Relaxed);
                let wr = Arc::new(Mutex::new(stream.try_clone().unwrap()));
                let _ = conn_tx.send(wr.clone());
                let seen = seen.clone();
                std::thread::spawn(move || serve_registrations(stream, wr, seen));
            }
        });
    }
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
        "--pong-timeout",
        "1",
    ]);
    agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let up = agent.seen_or_wait("the flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    assert_eq!(up["flow_timer"], 1, "{up}");
    let wr = conn_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    // the flood: bounded in count (2 MiB) and time (each write waits for
    // the agent to read; a stuck agent fails the write after 20 s)
    let chunk = b"\r\n".repeat(32 * 1024);
    let flood_bytes = 2 * 1024 * 1024;
    {
        use std::io::Write;
        let mut sent = 0;
        while sent < flood_bytes {
            let mut w = wr.lock().unwrap();
            w.set_write_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            w.write_all(&chunk).expect("the agent reads the flood");
            sent += chunk.len();
        }
    }
    let flood_pings = flood_bytes / 4;
    // then normal service: refreshes every couple of seconds go on
    let after_flood = seen.registers.load(Ordering::Relaxed);
    for i in 0..3 {
        agent.wait_for(&format!("refresh {i} after the flood"), |v| {
            v["event"] == "registration" && v["state"] == "registered"
        });
    }
    assert!(seen.registers.load(Ordering::Relaxed) >= after_flood + 3);
    // its own pings answered (kept alive) after the flood too
    agent.wait_for("a pong after the flood", |v| {
        v["event"] == "flow" && v["state"] == "keepalive_ok"
    });
    let events = agent.seen();
    assert!(
        !events.iter().any(|v| v["state"] == "failed"),
        "nothing failed: {:?}",
        events
            .iter()
            .filter(|v| v["state"] == "failed")
            .collect::<Vec<_>>()
    );
    assert!(
        !events
            .iter()
            .any(|v| v["event"] == "flow" && v["state"] == "up" && v["flow"] != up["flow"]),
        "the same flow all along"
    );
    assert_eq!(seen.accepted.load(Ordering::Relaxed), 1, "one connection");
    // answers to the flood: bounded by it
    let pongs = seen.pongs.load(Ordering::Relaxed) + 2 * seen.pings.load(Ordering::Relaxed);
    assert!(
        pongs <= flood_pings + 16,
        "{pongs} CRLFs back for {flood_pings} pings"
    );
}
