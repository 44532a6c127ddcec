//! Several RFC 5626 flows of one identity between real processes on
//! loopback: an agent with two `--outbound-proxy` (two listen addresses of
//! one `siproam registrar`, 127.0.0.1 and 127.0.0.2) registers one flow
//! through each, with reg-id 1 and 2 and the same instance, and calls over
//! them; `--flow-from` makes one flow from each local address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

/// The address a process listens on for `transport` at `ip`.
fn listening_on(p: &Proc, transport: &str, ip: &str) -> String {
    p.wait_for(&format!("{transport} listener on {ip}"), |v| {
        v["event"] == "listening"
            && v["transport"] == transport
            && v["address"].as_str().is_some_and(|a| a.starts_with(ip))
    })["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn two_outbound_proxies_make_two_flows_with_reg_id_1_and_2() {
    const URN: &str = "urn:uuid:00000000-0000-1000-8000-0000000000f2";
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tcp:127.0.0.1:0",
        "--listen",
        "tcp:127.0.0.2:0",
        "--domain",
        "example.test",
    ]);
    let first = listening_on(&registrar, "tcp", "127.0.0.1:");
    let second = listening_on(&registrar, "tcp", "127.0.0.2:");
    let registrar_uri = format!("sip:{first};transport=tcp");
    let proxy1 = format!("sip:{first};transport=tcp");
    let proxy2 = format!("sip:{second};transport=tcp");
    let mut agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &registrar_uri,
        "--listen",
        "tcp:127.0.0.16:0",
        "--outbound",
        "--instance-id",
        URN,
        "--outbound-proxy",
        &proxy1,
        "--outbound-proxy",
        &proxy2,
    ]);
    // both flows registered with outbound in force, each reported up with
    // its reg-id towards its own proxy
    for account in [1, 2] {
        let r = agent.seen_or_wait(&format!("account {account} registered"), |v| {
            v["event"] == "registration" && v["state"] == "registered" && v["account"] == account
        });
        assert_eq!(r["outbound"], true, "{r}");
    }
    for (reg_id, proxy) in [(1, &first), (2, &second)] {
        let up = agent.seen_or_wait(&format!("flow {reg_id} up"), |v| {
            v["event"] == "flow" && v["state"] == "up" && v["reg_id"] == reg_id
        });
        assert_eq!(up["remote"].as_str(), Some(proxy.as_str()), "{up}");
    }
    // the registrar holds both: one instance, reg-id 1 and 2
    let binding = registrar.seen_or_wait("two bindings", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| c.len() == 2)
    });
    let mut reg_ids: Vec<u64> = binding["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["instance"], URN, "{binding}");
            c["reg_id"].as_u64().unwrap()
        })
        .collect();
    reg_ids.sort();
    assert_eq!(reg_ids, [1, 2], "{binding}");
    // a call goes over a flow (the proxy as a loose Route the registrar
    // takes off) and is answered
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &registrar_uri,
        "--listen",
        "tcp:127.0.0.19:0",
        "--auto-answer",
    ]);
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    agent.send("call sip:bob@example.test");
    agent.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    agent.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    bob.quit();
    agent.quit();
}

/// The same from a `--config` file, and `--flow-from` two local addresses:
/// one flow from each (reg-id 1 from 127.0.0.17, 2 from 127.0.0.18).
#[test]
fn flows_from_two_local_addresses_and_from_a_config_file() {
    const URN: &str = "urn:uuid:00000000-0000-1000-8000-0000000000f3";
    let dir = temp_dir("outbound-flows");
    let file = dir.join("agent.toml");
    std::fs::write(
        &file,
        format!(
            "outbound = true\ninstance-id = \"{URN}\"\nflow-from = [\"127.0.0.17\", \"127.0.0.18\"]\n"
        ),
    )
    .unwrap();
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tcp:127.0.0.1:0",
        "--domain",
        "example.test",
    ]);
    let addr = listening_on(&registrar, "tcp", "127.0.0.1:");
    let registrar_uri = format!("sip:{addr};transport=tcp");
    let mut agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &registrar_uri,
        "--config",
        file.to_str().unwrap(),
    ]);
    for (reg_id, local) in [(1, "127.0.0.17:"), (2, "127.0.0.18:")] {
        let up = agent.seen_or_wait(&format!("flow {reg_id} up"), |v| {
            v["event"] == "flow" && v["state"] == "up" && v["reg_id"] == reg_id
        });
        assert!(
            up["local"].as_str().is_some_and(|l| l.starts_with(local)),
            "{up}"
        );
    }
    let binding = registrar.seen_or_wait("two bindings", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| c.len() == 2)
    });
    let contacts = binding["contacts"].as_array().unwrap();
    for local in ["127.0.0.17:", "127.0.0.18:"] {
        assert!(
            contacts
                .iter()
                .any(|c| c["contact"].as_str().is_some_and(|c| c.contains(local))),
            "{binding}"
        );
    }
    agent.quit();
    let _ = std::fs::remove_dir_all(dir);
}
