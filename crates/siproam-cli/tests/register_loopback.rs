//! `siproam registrar` and `siproam agent` on loopback: digest
//! registration over UDP, TCP and TLS (certificates made here with rcgen),
//! checked from both sides' JSON events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

fn listening(p: &Proc, transport: &str) -> String {
    p.wait_for(&format!("{transport} listener"), |v| {
        v["event"] == "listening" && v["transport"] == transport
    })["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn register_over(
    transport: &str,
    registrar_uri: impl Fn(&str) -> String,
    extra_registrar: &[&str],
    extra_agent: &[&str],
    agent_listen: &[&str],
) {
    let dir = temp_dir(transport);
    let users = dir.join("users.txt");
    std::fs::write(&users, "alice:alicepw\n").unwrap();
    let listen = format!("{transport}:127.0.0.1:0");
    let mut reg_args = vec![
        "registrar",
        "--json",
        "--listen",
        &listen,
        "--users",
        users.to_str().unwrap(),
        "--domain",
        "example.test",
    ];
    reg_args.extend_from_slice(extra_registrar);
    let registrar = Proc::spawn(&reg_args);
    let addr = listening(&registrar, transport);
    let uri = registrar_uri(&addr);
    let mut agent_args = vec![
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--password",
        "alicepw",
    ];
    for l in agent_listen {
        agent_args.extend_from_slice(&["--listen", l]);
    }
    agent_args.extend_from_slice(extra_agent);
    let mut agent = Proc::spawn(&agent_args);
    let registered = agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    assert_eq!(registered["code"], 200);
    assert_eq!(registered["expires"], 600);
    let contact = registered["contact"].as_str().unwrap().to_owned();
    assert!(contact.starts_with("sip:alice@127.0.0."), "{contact}");
    // the registrar holds exactly that contact
    let binding = registrar.wait_for("binding", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
    });
    assert_eq!(binding["aor"], "sip:alice@example.test");
    assert_eq!(binding["contacts"][0]["contact"], contact.as_str());
    // status repeats the state; quit unregisters and exits cleanly
    agent.send("status");
    agent.wait_for("status", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    agent.send("quit");
    agent.wait_for("unregistered", |v| {
        v["event"] == "registration" && v["state"] == "unregistered"
    });
    let status = agent.child.wait().unwrap();
    assert!(status.success());
    let gone = registrar.wait_for("binding removed", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| c.is_empty())
    });
    assert_eq!(gone["aor"], "sip:alice@example.test");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn register_over_udp() {
    register_over(
        "udp",
        |a| format!("sip:{a}"),
        &[],
        &[],
        &["udp:127.0.0.2:0"],
    );
}

#[test]
fn register_over_tcp() {
    register_over(
        "tcp",
        |a| format!("sip:{a};transport=tcp"),
        &[],
        &[],
        &["udp:127.0.0.3:0", "tcp:127.0.0.3:0"],
    );
}

#[test]
fn register_over_tls() {
    let dir = temp_dir("tls-certs");
    let (ca, cert, key) = certificates(&dir);
    let (ca, cert, key) = (
        ca.to_str().unwrap().to_owned(),
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    );
    register_over(
        "tls",
        |a| format!("sip:{a};transport=tls"),
        &["--tls-cert", &cert, "--tls-key", &key],
        &["--ca", &ca],
        &["udp:127.0.0.4:0"],
    );
}

#[test]
fn tls_registrar_with_an_untrusted_certificate_is_refused() {
    let dir = temp_dir("tls-untrusted");
    let (_ca, cert, key) = certificates(&dir);
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tls:127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = listening(&registrar, "tls");
    let uri = format!("sip:{addr};transport=tls");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--listen",
        "udp:127.0.0.5:0",
        "--stay",
    ]);
    let failed = agent.wait_for("failure", |v| {
        v["event"] == "registration" && v["state"] == "failed"
    });
    assert_eq!(
        failed["code"], 503,
        "the TLS handshake fails: a transport error"
    );
}

#[test]
fn many_accounts_over_one_tcp_connection_all_register() {
    // regression: with hundreds of REGISTERs queued behind one connect, the
    // connection's send queue overflowed and the extra messages were lost
    // (streams have no retransmission), so some accounts never registered
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args([
            "bench",
            "register",
            "--accounts",
            "3000",
            "--transport",
            "tcp",
            "--window",
            "1000",
            "--json",
        ])
        .output()
        .unwrap();
    let v: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(v["registered"], 3000, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert!(out.status.success());
}

#[test]
fn settings_from_a_config_file_and_flags_win() {
    let dir = temp_dir("config");
    let users = dir.join("users.txt");
    std::fs::write(&users, "carol:carolpw\n").unwrap();
    let reg_cfg = dir.join("registrar.toml");
    std::fs::write(&reg_cfg, format!("json = true\nlisten = [\"udp:127.0.0.1:0\"]\nusers = {:?}\ndomain = \"example.test\"\n", users.to_str().unwrap())).unwrap();
    let registrar = Proc::spawn(&["registrar", "--config", reg_cfg.to_str().unwrap()]);
    let addr = listening(&registrar, "udp");
    let agent_cfg = dir.join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!("json = true\naor = \"sip:carol@example.test\"\nregistrar = \"sip:{addr}\"\npassword = \"wrong\"\nexpires = 300\nlisten = [\"udp:127.0.0.6:0\"]\n"),
    )
    .unwrap();
    // the flag's password beats the file's
    let agent = Proc::spawn(&[
        "agent",
        "--config",
        agent_cfg.to_str().unwrap(),
        "--password",
        "carolpw",
    ]);
    let r = agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    assert_eq!(r["expires"], 300);
    assert!(r["contact"]
        .as_str()
        .unwrap()
        .starts_with("sip:carol@127.0.0.6:"));
    // an unknown setting is bad usage
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "colour = \"blue\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["agent", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
    // so is a bad value of a known one (regression: it exited 1)
    std::fs::write(&bad, "ipv6-sip = \"sometimes\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["agent", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sometimes"));
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}
