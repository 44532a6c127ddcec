//! Presence between two `siproam agent`s through `siproam registrar` on
//! loopback: Alice subscribes to Bob's presence (`subscribe`), sees it
//! `active` and `open`, a 489 for an unknown package, Bob's message
//! summary, an unsubscribe; Bob quits (unregisters) and Alice sees him
//! `closed` and the subscription `terminated`.
//!
//! Who may subscribe to an agent (`--watcher`, `watchers = […]` in
//! `--config`): a scripted subscriber (a UDP socket) is answered 200 when
//! listed, 403 when not, 404 for a user that is not the agent's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn alice_sees_bob_open_then_closed_and_terminated_when_he_quits() {
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
        // Alice may follow Bob's presence
        "--watcher",
        "sip:alice@example.test",
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
    ]);
    alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    alice.send("subscribe sip:bob@example.test presence");
    let pending = alice.wait_for("pending", |v| {
        v["event"] == "subscription" && v["state"] == "pending"
    });
    assert_eq!(pending["package"], "presence");
    assert_eq!(pending["peer"], "sip:bob@example.test");
    let sub = pending["sub"].as_u64().unwrap();
    let active = alice.wait_for("active and open", |v| {
        v["event"] == "subscription" && v["state"] == "active"
    });
    assert_eq!(active["sub"].as_u64(), Some(sub));
    assert_eq!(active["body"], "open");
    assert_eq!(active["role"], "subscriber");
    let served = bob.wait_for("bob serves it", |v| {
        v["event"] == "subscription" && v["role"] == "notifier"
    });
    assert_eq!(served["state"], "active");
    assert_eq!(served["peer"], "sip:alice@example.test");
    // an unknown package is refused by Bob with 489
    alice.send("subscribe sip:bob@example.test dialog");
    alice.wait_for("489", |v| {
        v["event"] == "subscription" && v["state"] == "terminated" && v["reason"] == "bad_event"
    });
    // Bob's message summary: nothing waiting; then Alice unsubscribes
    alice.send("subscribe sip:bob@example.test message-summary");
    let mwi = alice.wait_for("message-summary active", |v| {
        v["event"] == "subscription" && v["package"] == "message-summary" && v["state"] == "active"
    });
    assert_eq!(mwi["body"]["messages_waiting"], false);
    assert_eq!(mwi["body"]["new"], 0);
    alice.send(&format!("unsubscribe {}", mwi["sub"]));
    let gone = alice.wait_for("unsubscribed", |v| {
        v["event"] == "subscription" && v["sub"] == mwi["sub"] && v["state"] == "terminated"
    });
    assert_eq!(gone["reason"], "unsubscribed");
    alice.send("unsubscribe 999");
    alice.wait_for("an error for an unknown subscription", |v| {
        v["event"] == "error" && v["command"] == "unsubscribe"
    });
    bob.send("quit");
    let _ = bob.child.wait();
    alice.wait_for("closed", |v| {
        v["event"] == "subscription" && v["sub"].as_u64() == Some(sub) && v["body"] == "closed"
    });
    let end = alice.wait_for("terminated", |v| {
        v["event"] == "subscription" && v["sub"].as_u64() == Some(sub) && v["state"] == "terminated"
    });
    assert_eq!(end["reason"], "noresource");
    alice.send("quit");
    let _ = alice.child.wait();
}

/// A SUBSCRIBE for presence from `from` (a name-addr) to `to_user` at `agent`, sent from
/// `sock`: the status of its answer (10 s at most).
fn subscribe_status(sock: &UdpSocket, agent: SocketAddr, to_user: &str, from: &str, n: u32) -> u16 {
    let me = sock.local_addr().unwrap();
    let text = format!(
        "SUBSCRIBE sip:{to_user}@{agent} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bKwatch{n}\r\n\
         Max-Forwards: 70\r\n\
         From: {from};tag=w{n}\r\n\
         To: <sip:{to_user}@{agent}>\r\n\
         Call-ID: watch{n}@{me}\r\n\
         CSeq: 1 SUBSCRIBE\r\n\
         Contact: <sip:w@{me}>\r\n\
         Event: presence\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(text.as_bytes(), agent).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
            // the answer to this SUBSCRIBE (a NOTIFY after a 2xx is skipped)
            if msg.starts_with("SIP/2.0 ") && msg.contains(&format!("watch{n}@")) {
                return msg[8..11].parse().unwrap();
            }
        }
    }
    panic!("no answer to SUBSCRIBE {n}");
}

/// `--watcher` on the command line and `watchers` in the config file say
/// who may subscribe to an agent (here one that does not register: its
/// `--aor`'s user is its own); anyone else gets 403, a user not the
/// agent's 404; a bad entry is bad usage.
#[test]
fn watchers_from_the_flag_or_the_config_file_decide_who_may_subscribe() {
    let dir = temp_dir("watchers-config");
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        "aor = \"sip:bob@example.test\"\nwatchers = [\"sip:alice@example.test\", \"sip:carol@example.test\"]\n",
    )
    .unwrap();
    let from_flags = [
        "--aor",
        "sip:bob@example.test",
        "--watcher",
        "sip:alice@example.test",
        "--watcher",
        "sip:carol@example.test",
    ];
    let from_file = ["--config", cfg.to_str().unwrap()];
    for (i, (how, args)) in [("flags", &from_flags[..]), ("file", &from_file[..])]
        .into_iter()
        .enumerate()
    {
        let listen = format!("udp:127.0.0.{}:0", 61 + i);
        let mut argv = vec!["agent", "--json", "--no-watch", "--listen", &listen];
        argv.extend(args);
        let mut bob = Proc::spawn(&argv);
        let addr: SocketAddr = bob.wait_for("listening", |v| v["event"] == "listening")["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let sock = UdpSocket::bind("127.0.0.5:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let n = 10 * u32::try_from(i).unwrap();
        assert_eq!(
            subscribe_status(&sock, addr, "bob", "<sip:alice@example.test>", n + 1),
            200,
            "{how}"
        );
        assert_eq!(
            subscribe_status(
                &sock,
                addr,
                "bob",
                "\"Carol\" <sip:carol@EXAMPLE.test;transport=udp>",
                n + 2
            ),
            200,
            "{how}"
        );
        assert_eq!(
            subscribe_status(&sock, addr, "bob", "<sip:mallory@example.test>", n + 3),
            403,
            "{how}"
        );
        assert_eq!(
            subscribe_status(&sock, addr, "dave", "<sip:alice@example.test>", n + 4),
            404,
            "{how}"
        );
        bob.wait_for("carol served", |v| {
            v["event"] == "subscription"
                && v["role"] == "notifier"
                && v["peer"] == "sip:carol@EXAMPLE.test;transport=udp"
        });
        let served: Vec<_> = bob
            .seen()
            .into_iter()
            .filter(|v| v["event"] == "subscription" && v["role"] == "notifier")
            .collect();
        assert_eq!(served.len(), 2, "{how}: {served:?}");
        bob.send("quit");
        let _ = bob.child.wait();
    }
    // a watcher that is neither a SIP URI nor * is bad usage, flag or file
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[
        "agent",
        "--aor",
        "sip:bob@example.test",
        "--watcher",
        "alice",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("watcher"), "{err}");
    std::fs::write(
        &cfg,
        "aor = \"sip:bob@example.test\"\nwatchers = [\"tel:+1555\"]\n",
    )
    .unwrap();
    let (code, err) = run(&["agent", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("watchers"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
