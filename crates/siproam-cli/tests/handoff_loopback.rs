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
    let registered = alice.seen_or_wait("re-registered", |v| {
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
    wait_binding(&registrar, "127.0.0.3");
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
    // the moment the peer's RTP reached the new address was reported
    assert!(
        alice.seen().iter().any(|v| v["event"] == "media_moved"
            && v["local"]
                .as_str()
                .is_some_and(|l| l.starts_with("127.0.0.3:"))),
        "a media_moved event"
    );
    // the call still ends cleanly, through the route set, from the new address
    alice.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    // Alice's log drawn: `siproam timeline` on what she printed
    alice.wait_for("alice's last media report", |v| {
        v["event"] == "media" && v["final"] == true
    });
    let log = dir.join("alice.jsonl");
    let lines: Vec<String> = alice.seen().iter().map(Value::to_string).collect();
    std::fs::write(&log, lines.join("\n")).unwrap();
    let svg = dir.join("alice.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args([
            "timeline",
            log.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_drawing(&std::fs::read_to_string(&svg).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

/// The drawing of Alice's log holds her, the registrar and her peer, the
/// change as a band, and its REGISTER and re-INVITE/UPDATE with their
/// answers and milliseconds within it.
fn check_drawing(svg: &str) {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let class = |c: &str| -> Vec<roxmltree::Node> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(c))
            .collect()
    };
    let text = |n: &roxmltree::Node| -> String {
        n.descendants()
            .filter(|d| d.is_text())
            .filter_map(|d| d.text())
            .collect()
    };
    let ms = |n: &roxmltree::Node, k: &str| -> f64 { n.attribute(k).unwrap().parse().unwrap() };
    let parties: Vec<String> = class("party").iter().map(text).collect();
    assert_eq!(parties, vec!["Alice", "Registrar/proxy", "Peer"]);
    let bands = class("change");
    assert_eq!(bands.len(), 1);
    let (start, end) = (ms(&bands[0], "data-start-ms"), ms(&bands[0], "data-end-ms"));
    let exchanges = class("exchange");
    for request in ["REGISTER", "re-INVITE|UPDATE"] {
        let x = exchanges
            .iter()
            .find(|g| {
                request
                    .split('|')
                    .any(|r| g.attribute("data-request") == Some(r))
                    && ms(g, "data-sent-ms") >= start - 0.1
                    && ms(g, "data-sent-ms") <= end + 0.1
            })
            .unwrap_or_else(|| panic!("no {request} in the change's band: {svg}"));
        let took = x.attribute("data-ms").unwrap();
        assert!(text(x).contains(&format!("({took} ms)")), "{}", text(x));
    }
    assert_eq!(class("media").len(), 2, "a bar per direction");
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

/// A port free for UDP on both 127.0.0.1 and ::1, or `None` without IPv6
/// on loopback.
fn dual_stack_port() -> Option<u16> {
    for _ in 0..100 {
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        match std::net::UdpSocket::bind(("::1", port)) {
            Ok(_) => return Some(port),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Every `ip_change` event up to `completed`, each checked `ok`.
fn stages_ok(p: &Proc) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = p.wait_for("ip_change", |v| v["event"] == "ip_change");
        assert_eq!(v["status"], "ok", "{v}");
        let done = v["stage"] == "completed";
        seen.push(v);
        if done {
            return seen;
        }
    }
}

/// The registrar on 127.0.0.1 and ::1 (one port; the name `sip.test`
/// pinned to both with `--host`), Bob on 127.0.0.5 answering, Alice on
/// 127.0.0.2 (with `alice_extra` flags) calling him over IPv4 until Bob
/// hears her; `None` (said why) without IPv6 on loopback.
fn dual_stack_call(alice_extra: &[&str]) -> Option<(Proc, Proc, Proc, Value)> {
    let Some(port) = dual_stack_port() else {
        if std::env::var_os("SIPROAM_REQUIRE_INTEROP").is_some() {
            panic!("::1 is not usable on loopback, and this run requires it");
        }
        eprintln!("skipped: no IPv6 on loopback (::1 cannot be bound)");
        return None;
    };
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        &format!("udp:127.0.0.1:{port}"),
        "--listen",
        &format!("udp:[::1]:{port}"),
    ]);
    for family in ["127.0.0.1", "[::1]"] {
        registrar.wait_for("listener", |v| {
            v["event"] == "listening"
                && v["address"].as_str().is_some_and(|a| a.starts_with(family))
        });
    }
    let agent = |user: &str, ip: &str, answer: bool, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--json".into(),
            "--aor".into(),
            format!("sip:{user}@example.test"),
            "--registrar".into(),
            format!("sip:sip.test:{port}"),
            "--host".into(),
            "sip.test=127.0.0.1".into(),
            "--host".into(),
            "sip.test=::1".into(),
            "--listen".into(),
            format!("udp:{ip}:0"),
            "--play".into(),
            "tone:1000".into(),
        ];
        if answer {
            args.push("--auto-answer".into());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = Proc::spawn(&args);
        p.wait_for(&format!("{user} registered"), |v| {
            v["event"] == "registration" && v["state"] == "registered"
        });
        p
    };
    let bob = agent("bob", "127.0.0.5", true, &[]);
    let mut alice = agent("alice", "127.0.0.2", false, alice_extra);
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let before = bob.wait_for("bob hears alice over IPv4", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    assert!(before["remote"].as_str().unwrap().starts_with("127.0.0.2:"));
    Some((registrar, bob, alice, before))
}

/// `--ipv6-media disabled`: the signalling moves to IPv6 with the address,
/// the media stays in IPv4 (re-offered from an IPv4 address, still heard
/// both ways).
#[test]
fn media_stays_in_ipv4_when_its_ipv6_use_is_disabled() {
    let Some((registrar, bob, mut alice, before)) = dual_stack_call(&["--ipv6-media", "disabled"])
    else {
        return;
    };
    alice.send("ip-change ::1");
    stages_ok(&alice);
    alice.seen_or_wait("registered over IPv6", |v| {
        v["event"] == "registration"
            && v["state"] == "registered"
            && v["contact"].as_str().is_some_and(|c| c.contains("[::1]"))
    });
    wait_binding(&registrar, "[::1]");
    // re-offered from the IPv4 address towards the registrar's (127.0.0.1)
    let after = bob.wait_for("bob hears alice's new IPv4 media address", |v| {
        v["event"] == "media"
            && v["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.1:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["rx_packets"].as_u64().unwrap() + 25
    });
    assert!(
        after["local"].as_str().unwrap().starts_with("127.0.0.5:"),
        "{after}"
    );
    assert_eq!(after["lost"], 0, "{after}");
    let moved = alice.wait_for("alice's media on 127.0.0.1", |v| {
        v["event"] == "media"
            && v["local"]
                .as_str()
                .is_some_and(|l| l.starts_with("127.0.0.1:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(moved["lost"], 0, "{moved}");
}

/// IPv4 → IPv6 → IPv4 in one call, with nothing but `ip-change ADDR`: the
/// registrar's name is pinned to 127.0.0.1 and ::1 (`--host`), Alice
/// registers and calls over IPv4, then moves to ::1: the account switches
/// to the registrar's IPv6 address on its own (new flow, REGISTER with an
/// IPv6 Contact that replaces the binding), the call's requests go to the
/// proxy's IPv6 address with the route set unchanged, the media is
/// re-offered in IPv6 and Bob answers it from IPv6. Then back to IPv4.
#[test]
fn handoff_between_ipv4_and_ipv6() {
    let Some((registrar, bob, mut alice, before)) = dual_stack_call(&[]) else {
        return;
    };

    // IPv4 → IPv6
    alice.send("ip-change ::1");
    let seen = stages_ok(&alice);
    let contact = seen
        .iter()
        .find(|v| v["stage"] == "update_contact")
        .expect("an update_contact stage");
    assert!(
        contact["address"].as_str().unwrap().starts_with("[::1]:"),
        "{contact}"
    );
    assert!(
        seen.iter().any(|v| v["stage"] == "refresh_calls"),
        "{seen:?}"
    );
    let registered = alice.seen_or_wait("registered over IPv6", |v| {
        v["event"] == "registration"
            && v["state"] == "registered"
            && v["contact"].as_str().is_some_and(|c| c.contains("[::1]"))
    });
    assert_eq!(registered["code"], 200);
    wait_binding(&registrar, "[::1]");
    let alice_v6 = alice.wait_for("alice's media in IPv6", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with("[::1]:"))
            && v["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("[::1]:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["rx_packets"].as_u64().unwrap()
    });
    let bob_v6 = bob.wait_for("bob answers in IPv6 and hears alice there", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with("[::1]:"))
            && v["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("[::1]:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["rx_packets"].as_u64().unwrap() + 25
    });
    assert_eq!(alice_v6["lost"], 0, "{alice_v6}");
    assert_eq!(bob_v6["lost"], 0, "{bob_v6}");

    // IPv6 → IPv4
    alice.send("ip-change 127.0.0.3");
    stages_ok(&alice);
    alice.seen_or_wait("registered over IPv4 again", |v| {
        v["event"] == "registration"
            && v["state"] == "registered"
            && v["contact"]
                .as_str()
                .is_some_and(|c| c.contains("127.0.0.3"))
    });
    wait_binding(&registrar, "127.0.0.3");
    let bob_v4 = bob.wait_for("bob hears alice over IPv4 again", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with("127."))
            && v["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.3:"))
            && v["rx_packets"].as_u64().unwrap_or(0) > bob_v6["rx_packets"].as_u64().unwrap() + 25
    });
    assert_eq!(bob_v4["lost"], 0, "{bob_v4}");
    // the call ends cleanly through the proxy from IPv4
    alice.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
}

/// Regression (issue 11, defect 2): `ip-change` to an address this host
/// does not have registered `sip:alice@ADDR:0` and reported `completed
/// ok`. It is refused with a clear error, nothing changes: the account
/// stays registered where it was and no Contact with port 0 is sent.
/// (192.0.2.55, TEST-NET-1, is only ever tried as a local bind: no packet
/// is addressed to it.)
#[test]
fn an_ip_change_to_an_address_we_do_not_have_is_refused() {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut alice = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &format!("sip:{addr}"),
        "--listen",
        "udp:127.0.0.2:0",
    ]);
    let first = alice.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let contact = first["contact"].as_str().unwrap().to_owned();
    alice.send("ip-change 192.0.2.55");
    let done = alice.wait_for("the change ends", |v| {
        v["event"] == "ip_change" && v["stage"] == "completed"
    });
    assert_ne!(done["status"], "ok", "{done}");
    assert!(
        done["status"].as_str().unwrap().contains("192.0.2.55"),
        "the error names the address: {done}"
    );
    // still registered where it was (`status` repeats the last
    // registration event), and nothing else moved
    alice.send("status");
    let now = alice.wait_for("status", |v| v["event"] == "registration");
    assert_eq!(now["state"], "registered", "{now}");
    assert_eq!(now["contact"], contact.as_str(), "{now}");
    for v in alice.seen() {
        if v["event"] == "registration" {
            assert_eq!(v["contact"], contact.as_str(), "{v}");
        }
        assert!(
            !v.to_string().contains(":0;") && !v.to_string().contains("192.0.2.55:0"),
            "a Contact with port 0: {v}"
        );
    }
    for v in registrar.seen() {
        if v["event"] == "binding" {
            assert!(!v.to_string().contains("192.0.2.55"), "{v}");
        }
    }
}
