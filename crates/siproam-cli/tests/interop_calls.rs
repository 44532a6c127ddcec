//! Call interop on loopback with software nobody here wrote:
//! - a SIPp UAS answers a `siproam call` and echoes its RTP: the tone
//!   siproam records is the one it sent;
//! - SIPp as UAC calls `siproam agent --auto-answer` with a re-INVITE and
//!   an UPDATE that move its media;
//! - baresip (headless, `ausine`) and a siproam agent call each other,
//!   media checked both ways.
//!
//! Peers come from Debian (`interop/install.sh`); without them a test says
//! why it is skipped, and with `SIPROAM_REQUIRE_INTEROP=1` (CI) it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use common::baresip::Baresip;

use std::path::Path;
use std::process::{Command, Stdio};

/// `siproam call URI` as Alice, playing a 1000 Hz tone and recording
/// what it hears to `wav`, once confirmed.
fn confirmed_call(uri: &str, wav: &Path) -> Proc {
    let call = Proc::spawn(&[
        "call",
        uri,
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--listen",
        "udp:127.0.0.2:0",
        "--play",
        "tone:1000",
        "--record",
        wav.to_str().unwrap(),
    ]);
    call.wait_for("confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    call
}

#[test]
fn sipp_uas_echoes_a_siproam_call_and_the_tone_comes_back() {
    if !have("sipp") {
        return;
    }
    let dir = temp_dir("echo");
    let port = free_port(0);
    let mport = free_port(3);
    let mut sipp = sipp_uas("uas_echo.xml", &dir, port, mport, &[]);
    let wav = dir.join("echo.wav");
    let uri = format!("sip:echo@127.0.0.1:{port}");
    let mut call = confirmed_call(&uri, &wav);
    let m = call.wait_for("echoed media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) >= 80
    });
    assert_eq!(m["lost"], 0);
    call.send("hangup");
    call.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert!(call.child.wait().unwrap().success());
    let status = sipp.0.wait().unwrap();
    assert!(status.success(), "SIPp's UAS scenario failed: {status}");
    assert_tone(&wav, 1000.0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sipp_uac_calls_a_siproam_agent_with_reinvite_and_update() {
    if !have("sipp") {
        return;
    }
    let dir = temp_dir("uac");
    let port = free_port(0);
    let listen = format!("udp:127.0.0.1:{port}");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@127.0.0.1",
        "--listen",
        &listen,
        "--auto-answer",
        "--stay",
    ]);
    agent.wait_for("listener", |v| v["event"] == "listening");
    let lport = free_port(0);
    let mport = free_port(3);
    let status = Command::new("timeout")
        .args(["60", "sipp", "-sf"])
        .arg(repo().join("interop/sipp/uac_reinvite_update.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &lport.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &mport.to_string(),
        ])
        .args([
            "-rtp_echo",
            "-d",
            "500",
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-s",
            "bob",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "SIPp's INVITE / re-INVITE / UPDATE / BYE scenario failed: {status}"
    );
    agent.wait_for("confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let end = agent.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    // after the re-INVITE and the UPDATE our media followed SIPp's ports
    assert!(
        end["remote"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{mport}")),
        "{end}"
    );
    assert!(
        end["rx_packets"].as_u64().unwrap() > 0,
        "SIPp echoed our RTP: {end}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn siproam_and_baresip_call_each_other_with_media_both_ways() {
    if !have("baresip") {
        return;
    }
    let dir = temp_dir("baresip");
    let (port, ctrl) = (free_port(1), free_port(0));
    let bs = Baresip::start(
        port,
        ctrl,
        &dir.join("bs"),
        &["--auto-answer", "--user", "carol", "--freq", "700"],
    );
    // siproam calls baresip: we hear its 700 Hz tone
    let wav = dir.join("from-baresip.wav");
    let uri = format!("sip:carol@127.0.0.1:{port}");
    let mut call = confirmed_call(&uri, &wav);
    call.wait_for("media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) >= 80
    });
    call.send("hangup");
    call.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    let _ = call.child.wait();
    assert_tone(&wav, 700.0);
    let (sent, received) = bs.packets();
    assert!(
        sent > 50 && received > 50,
        "baresip's packets: sent {sent} received {received}"
    );

    // baresip calls a siproam agent: it hears our tone (we count its packets) and we hear its tone
    let aport = free_port(0);
    let listen = format!("udp:127.0.0.1:{aport}");
    let wav2 = dir.join("agent.wav");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:dave@127.0.0.1",
        "--listen",
        &listen,
        "--auto-answer",
        "--play",
        "tone:1000",
        "--record",
        wav2.to_str().unwrap(),
        "--stay",
    ]);
    agent.wait_for("listener", |v| v["event"] == "listening");
    bs.ctrl(&[
        "dial",
        &format!("sip:dave@127.0.0.1:{aport}"),
        "--wait",
        "CALL_ESTABLISHED",
        "--timeout",
        "10",
    ]);
    agent.wait_for("confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    agent.wait_for("media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) >= 80
    });
    bs.ctrl(&["hangup", "--wait", "CALL_CLOSED", "--timeout", "10"]);
    let end = agent.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert!(end["tx_packets"].as_u64().unwrap() > 50);
    assert_tone(&wav2, 700.0);
    let (sent, received) = bs.packets();
    assert!(
        sent > 50 && received > 50,
        "baresip's packets: sent {sent} received {received}"
    );
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}
