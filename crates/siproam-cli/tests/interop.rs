//! Interop with SIP software nobody here wrote, on loopback:
//! - Kamailio as registrar: a `siproam agent` registers over UDP and TCP
//!   with digest auth, and Kamailio's location table (`kamcmd ul.lookup`,
//!   via `interop/kamailio/bindings.sh`) shows both contacts.
//! - SIPp as a UAC registers with digest auth to `siproam registrar`.
//!
//! The peers come from Debian packages (`interop/install.sh`, run by CI as
//! root). Without them a test says why it is skipped; with
//! `SIPROAM_REQUIRE_INTEROP=1` (CI sets it) a missing peer fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::{Command, Stdio};

#[test]
fn kamailio_registers_siproam_over_udp_and_tcp_with_digest() {
    if !have("kamailio") || !have("kamcmd") {
        return;
    }
    let port = free_port(0);
    let kam = Kamailio::start(port);
    let udp_reg = format!("sip:127.0.0.1:{port}");
    let tcp_reg = format!("sip:127.0.0.1:{port};transport=tcp");
    let mut udp = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &udp_reg,
        "--password",
        "alicepw",
        "--listen",
        "udp:127.0.0.1:0",
    ]);
    let mut tcp = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &tcp_reg,
        "--password",
        "alicepw",
        "--listen",
        "udp:127.0.0.1:0",
        "--listen",
        "tcp:127.0.0.1:0",
    ]);
    let u = udp.wait_for("UDP registration", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let t = tcp.wait_for("TCP registration", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let mut expected = vec![
        u["contact"].as_str().unwrap().to_owned(),
        t["contact"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert!(expected[0].contains("transport=tcp") || expected[1].contains("transport=tcp"));
    assert_eq!(
        kam.bindings("alice@example.test"),
        expected,
        "Kamailio's location table holds both contacts"
    );
    // unregistering removes them from Kamailio too
    udp.quit();
    tcp.quit();
    assert!(kam.bindings("alice@example.test").is_empty());
    // a wrong password is refused by Kamailio
    let bad = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &udp_reg,
        "--password",
        "wrong",
        "--listen",
        "udp:127.0.0.1:0",
        "--stay",
    ]);
    let f = bad.wait_for("failure", |v| {
        v["event"] == "registration" && v["state"] == "failed"
    });
    assert_eq!(f["code"], 401);
}

#[test]
fn sipp_registers_to_siproam_registrar_with_digest() {
    if !have("sipp") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("siproam-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users.txt");
    std::fs::write(&users, "alice:alicepw\n").unwrap();
    let port = free_port(0);
    let listen = format!("udp:127.0.0.1:{port}");
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        &listen,
        "--users",
        users.to_str().unwrap(),
        "--domain",
        "example.test",
    ]);
    registrar.wait_for("listener", |v| v["event"] == "listening");
    let sipp_port = free_port(0);
    let status = Command::new("timeout")
        .args(["30", "sipp", "-sf"])
        .arg(repo().join("interop/sipp/register_auth.xml"))
        .args([
            "-m", "1", "-nostdin", "-au", "alice", "-ap", "alicepw", "-s", "alice",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &sipp_port.to_string(),
            "-t",
            "u1",
            "-timeout",
            "20s",
            "-timeout_error",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "SIPp's REGISTER scenario failed: {status}"
    );
    let binding = registrar.wait_for("binding", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
    });
    assert_eq!(binding["aor"], "sip:alice@example.test");
    let contact = binding["contacts"][0]["contact"].as_str().unwrap();
    assert!(
        contact.contains(&format!("127.0.0.1:{sipp_port}")),
        "{contact}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
