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

use serde_json::Value;
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

/// RFC 5626 §11.6 against SIPp as the registrar
/// (`interop/sipp/uas_register_439.xml`): the outbound REGISTER is
/// answered 439 First Hop Lacks Outbound Support; the agent registers again
/// at once without `reg-id` and without `Supported: outbound` (the scenario
/// fails otherwise) and reports the fallback: a `failed` 439, then
/// `registered` with `outbound` false.
#[test]
fn sipp_answering_439_gets_a_register_without_outbound_and_the_agent_reports_the_fallback() {
    if !have("sipp") {
        return;
    }
    let dir = temp_dir("sipp-439");
    let port = free_port(0);
    let mut sipp = Command::new("timeout")
        .args(["40", "sipp", "-sf"])
        .arg(repo().join("interop/sipp/uas_register_439.xml"))
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", "u1"])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .args(["-trace_err", "-trace_msg"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_udp_bound("127.0.0.1", port);
    let registrar = format!("sip:127.0.0.1:{port}");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &registrar,
        "--outbound",
        "--instance-id",
        "urn:uuid:00000000-0000-4000-8000-000000000439",
        "--listen",
        "udp:127.0.0.1:0",
        "--stay",
    ]);
    let ok = agent.wait_for("registered after the 439", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let status = sipp.wait().unwrap();
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success(),
        "SIPp's 439 scenario failed: {status}\n{log}"
    );
    assert_eq!(ok["outbound"], false, "{ok}");
    assert_eq!(ok["code"], 200);
    let regs: Vec<(String, Value)> = agent
        .seen()
        .into_iter()
        .filter(|v| v["event"] == "registration")
        .map(|v| {
            (
                v["state"].as_str().unwrap_or("").to_owned(),
                v["code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        regs,
        [
            ("registering".to_owned(), Value::Null),
            ("failed".to_owned(), Value::from(439)),
            ("registering".to_owned(), Value::Null),
            ("registered".to_owned(), Value::from(200)),
        ],
        "the 439 is reported, then the registration without outbound"
    );
    // what SIPp saw: one REGISTER with reg-id, one without
    let registers = log.matches("REGISTER sip:").count();
    assert_eq!(registers, 2, "{log}");
    assert_eq!(log.matches("reg-id=1").count(), 1, "{log}");
    let _ = std::fs::remove_dir_all(dir);
}
