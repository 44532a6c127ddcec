//! `siproam edge` with SIP software nobody here wrote, on loopback: SIPp
//! registers through the edge to `siproam registrar` with outbound
//! (`interop/sipp/register_edge_outbound.xml`: the 2xx carries `Require:
//! outbound`, the edge's `Flow-Timer` and its `Path` with a flow token and
//! `;ob`, echoed by the registrar); once SIPp is gone (its connection
//! closed), a request along its Path gets 430 Flow Failed from the edge,
//! and a call to its AoR gets 480 from the registrar (RFC 5626 §11.5: the
//! 430 is for the proxy that chose the flow, not the caller). The edge
//! in front of Kamailio as registrar: Kamailio keeps and follows its Path.
//!
//! SIPp and Kamailio come from the Debian packages (`interop/install.sh`, run by CI as
//! root). Without them a test says why it is skipped; with
//! `SIPROAM_REQUIRE_INTEROP=1` (CI sets it) a missing peer fails instead.
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
    let (registrar, registrar_uri) = tcp_registrar(&[]);
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
    let mut bob = agent_at(&registrar_uri, "bob", "tcp:127.0.0.1:0", &[]);
    bob.wait_registered("bob");
    bob.send("call sip:alice@example.test");
    let failed = bob.wait_for("the call fails", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    assert_eq!(failed["code"], 480, "{failed}");
    // the edge's answer to the registrar, seen directly along the Path
    let mut direct = std::net::TcpStream::connect(("127.0.0.1", edge_port)).unwrap();
    direct
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let me = direct.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:alice@example.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP {me};branch=z9hG4bK-sipp-path\r\n\
         Route: {path}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:bob@example.test>;tag=b9\r\n\
         To: <sip:alice@example.test>\r\n\
         Call-ID: sipp-path-1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    std::io::Write::write_all(&mut direct, options.as_bytes()).unwrap();
    let head = read_head(&mut direct);
    assert!(head.starts_with("SIP/2.0 430"), "{head}");
    bob.quit();
    let _ = std::fs::remove_dir_all(dir);
}

/// `siproam edge` in front of Kamailio 5.6 as the registrar
/// (`interop/kamailio/kamailio.cfg`, digest on REGISTER, calls not
/// challenged): an outbound agent with no listener registers through the
/// edge, Kamailio keeps the edge's Path (flow token, `;ob`) and answers
/// `Require: outbound` (it would answer 439 without the `;ob`), the edge's
/// Flow-Timer reaches the agent, and Bob's call through Kamailio reaches
/// the agent along the Path over its flow; Bob's BYE follows.
#[test]
fn kamailio_behind_siproam_edge_honours_the_path() {
    if !Kamailio::available() {
        return;
    }
    let (kam, port) = Kamailio::start_local("-A NO_CALL_AUTH", "edge");
    let kam_uri = format!("sip:127.0.0.1:{port};transport=tcp");
    let edge = edge_before(&kam_uri, &["--flow-timer", "20"]);
    let edge_tcp = listening(&edge, "tcp");
    let mut alice = outbound_agent(
        "sip:alice@example.test",
        &kam_uri,
        &edge_tcp,
        "urn:uuid:00000000-0000-1000-8000-0000000000e4",
        &["--password", "alicepw", "--auto-answer"],
    );
    let reg = alice.wait_registered("alice");
    assert_eq!(reg["outbound"], true, "{reg}");
    let up = alice.seen_or_wait("alice's flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    assert_eq!(up["flow_timer"], 20, "{up}");
    assert_eq!(up["remote"].as_str(), Some(edge_tcp.as_str()), "{up}");
    let paths = kam.bindings_with("alice@example.test", "Path");
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(
        paths[0].contains(&format!("@{edge_tcp};transport=tcp;lr;ob")),
        "{paths:?}"
    );
    let mut bob = account_agent(&kam_uri, "bob", "bobpw", "tcp:127.0.0.1:0", &[]);
    bob.wait_registered("bob");
    bob.send("call sip:alice@example.test");
    alice.wait_call("alice", "confirmed");
    bob.wait_call("bob", "confirmed");
    bob.send("hangup");
    alice.wait_call("alice", "disconnected");
    bob.quit();
    alice.quit();
}
