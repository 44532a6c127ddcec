//! `siproam edge` with SIP software nobody here wrote, on loopback: SIPp
//! registers through the edge to `siproam registrar` with outbound
//! (`interop/sipp/register_edge_outbound.xml`: the 2xx carries `Require:
//! outbound`, the edge's `Flow-Timer` and its `Path` with a flow token and
//! `;ob`, echoed by the registrar); once SIPp is gone (its connection
//! closed), a call to its AoR gets 430 Flow Failed from the edge.
//!
//! SIPp comes from the Debian package (`interop/install.sh`, run by CI as
//! root). Without it the test says why it is skipped; with
//! `SIPROAM_REQUIRE_INTEROP=1` (CI sets it) a missing SIPp fails instead.
//! SIPp cannot send a bare CRLFCRLF ping; the pong is proved with a plain
//! TCP socket in `edge_loopback.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::{Command, Stdio};

#[test]
fn sipp_registers_through_siproam_edge_with_outbound_then_its_flow_gets_430() {
    if !have("sipp") {
        return;
    }
    let dir = temp_dir("sipp-edge");
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tcp:127.0.0.1:0",
        "--domain",
        "example.test",
    ]);
    let reg_addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let registrar_uri = format!("sip:{reg_addr};transport=tcp");
    let edge_port = free_port(0);
    let edge = Proc::spawn(&[
        "edge",
        "--json",
        "--listen",
        &format!("tcp:127.0.0.1:{edge_port}"),
        "--registrar",
        &registrar_uri,
        "--flow-timer",
        "20",
    ]);
    edge.wait_for("edge listener", |v| v["event"] == "listening");
    let sipp_port = free_port(0);
    let status = Command::new("timeout")
        .args(["30", "sipp", "-sf"])
        .arg(repo().join("interop/sipp/register_edge_outbound.xml"))
        .args(["-m", "1", "-nostdin", "-s", "alice"])
        .arg(format!("127.0.0.1:{edge_port}"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &sipp_port.to_string(),
            "-t",
            "t1",
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
        "SIPp's outbound REGISTER through the edge failed: {status}"
    );
    // the registrar holds SIPp's binding with the edge's Path and ;ob
    let binding = registrar.seen_or_wait("binding", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
    });
    let path = binding["contacts"][0]["path"][0].as_str().unwrap();
    assert!(
        path.contains(&format!("@127.0.0.1:{edge_port};transport=tcp;lr;ob")),
        "{binding}"
    );
    // SIPp exited: its connection is gone, and with it the flow the Path
    // names
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &registrar_uri,
        "--listen",
        "tcp:127.0.0.1:0",
    ]);
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    bob.send("call sip:alice@example.test");
    let failed = bob.wait_for("the call fails", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    assert_eq!(failed["code"], 430, "{failed}");
    bob.quit();
    let _ = std::fs::remove_dir_all(dir);
}
