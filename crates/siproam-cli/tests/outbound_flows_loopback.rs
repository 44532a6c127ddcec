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

/// Failover between real processes: two registrars (A on 127.0.0.1, B on
/// 127.0.0.2), alice and bob each with a flow through each (reg-id 1 to
/// A, 2 to B). A dies: alice's flow 1 fails, and her next call goes over
/// flow 2 through B at once and is answered.
#[test]
fn when_one_proxy_dies_the_next_call_goes_over_the_other_flow() {
    let spawn_registrar = |ip: &str| {
        Proc::spawn(&[
            "registrar",
            "--json",
            "--listen",
            &format!("tcp:{ip}:0"),
            "--domain",
            "example.test",
        ])
    };
    let mut a = spawn_registrar("127.0.0.1");
    let b = spawn_registrar("127.0.0.2");
    let a_addr = listening_on(&a, "tcp", "127.0.0.1:");
    let b_addr = listening_on(&b, "tcp", "127.0.0.2:");
    let registrar_uri = format!("sip:{a_addr};transport=tcp");
    let proxy_a = format!("sip:{a_addr};transport=tcp");
    let proxy_b = format!("sip:{b_addr};transport=tcp");
    let agent = |aor: &str, listen: &str, urn: &str, extra: &[&str]| {
        let mut args = vec![
            "agent",
            "--json",
            "--aor",
            aor,
            "--registrar",
            &registrar_uri,
            "--listen",
            listen,
            "--outbound",
            "--instance-id",
            urn,
            "--outbound-proxy",
            &proxy_a,
            "--outbound-proxy",
            &proxy_b,
        ];
        args.extend_from_slice(extra);
        Proc::spawn(&args)
    };
    let mut bob = agent(
        "sip:bob@example.test",
        "tcp:127.0.0.21:0",
        "urn:uuid:00000000-0000-1000-8000-0000000000f6",
        &["--auto-answer"],
    );
    let mut alice = agent(
        "sip:alice@example.test",
        "tcp:127.0.0.20:0",
        "urn:uuid:00000000-0000-1000-8000-0000000000f5",
        &[],
    );
    for p in [&bob, &alice] {
        for reg_id in [1, 2] {
            p.seen_or_wait(&format!("flow {reg_id} up"), |v| {
                v["event"] == "flow" && v["state"] == "up" && v["reg_id"] == reg_id
            });
        }
    }
    // A goes away: alice's flow 1 (and bob's) fail
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let failed = alice.wait_for("alice's flow 1 failed", |v| {
        v["event"] == "flow" && v["state"] == "failed" && v["reg_id"] == 1
    });
    assert_eq!(failed["remote"].as_str(), Some(a_addr.as_str()), "{failed}");
    bob.wait_for("bob's flow 1 failed", |v| {
        v["event"] == "flow" && v["state"] == "failed" && v["reg_id"] == 1
    });
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    alice.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    bob.quit();
    alice.quit();
}
