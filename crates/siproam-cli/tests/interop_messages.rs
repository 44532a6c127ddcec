//! MESSAGE (RFC 3428) and DTMF (RFC 4733) interop with baresip 1.0.0 on
//! loopback: a MESSAGE each way between a `siproam agent` and baresip, and
//! DTMF keys a siproam call sends seen by baresip (its `CALL_DTMF_START`
//! events), in order.
//!
//! baresip comes from Debian (`interop/install.sh`); without it the test
//! says why it is skipped, and with `SIPROAM_REQUIRE_INTEROP=1` (CI) it
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use common::baresip::Baresip;

#[test]
fn siproam_and_baresip_exchange_messages_and_baresip_sees_our_dtmf() {
    if !have("baresip") {
        return;
    }
    let dir = temp_dir("baresip-im");
    let (port, ctrl) = (free_port(1), free_port(0));
    let bs = Baresip::start(
        port,
        ctrl,
        &dir.join("bs"),
        &["--auto-answer", "--user", "carol"],
    );
    let aport = free_port(0);
    let listen = format!("udp:127.0.0.1:{aport}");
    let mut alice = Proc::spawn(&[
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:alice@example.test",
        "--listen",
        &listen,
    ]);
    alice.wait_for("listener", |v| v["event"] == "listening");
    let carol = format!("sip:carol@127.0.0.1:{port}");

    // siproam -> baresip: answered 200, the text in what baresip received
    alice.send(&format!("message {carol} hello carol, from siproam"));
    let sent = alice.wait_for("the outcome", |v| {
        v["event"] == "message" && v["direction"] == "sent"
    });
    assert_eq!(sent["code"], 200, "{sent}");
    let log = bs.log();
    assert!(
        log.contains(&format!("MESSAGE {carol} SIP/2.0"))
            && log.contains("hello carol, from siproam"),
        "baresip got no such MESSAGE"
    );

    // baresip -> siproam: its contact.so sends to the current contact
    std::fs::write(
        dir.join("bs/contacts"),
        format!("\"Alice\" <sip:alice@127.0.0.1:{aport}>\n"),
    )
    .unwrap();
    bs.ctrl(&["insmod", "contact.so"]);
    let current = bs.ctrl(&["contact_next"]);
    assert!(current.contains(&format!("127.0.0.1:{aport}")), "{current}");
    bs.ctrl(&["message", "hi alice, from baresip"]);
    let got = alice.wait_for("baresip's message", |v| {
        v["event"] == "message" && v["direction"] == "received"
    });
    assert_eq!(got["text"], "hi alice, from baresip");
    assert!(
        got["peer"].as_str().unwrap().starts_with("sip:carol"),
        "{got}"
    );

    // DTMF: only the newest ctrl_tcp connection gets events, so this
    // listener is the last connection made to baresip
    let events = bs.events("CALL_CLOSED", 40);
    alice.send(&format!("call {carol}"));
    alice.wait_for("confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    alice.wait_for("media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 10
    });
    let keys = "123#*9";
    alice.send(&format!("dtmf {keys}"));
    for k in keys.chars() {
        let v = alice.wait_for("a sent key", |v| {
            v["event"] == "dtmf" && v["direction"] == "sent"
        });
        assert_eq!(v["digit"], k.to_string());
    }
    // the last key's packets (100 ms, then the end three times) go out
    // before the hang-up
    alice.wait_for("a media report after the keys", |v| v["event"] == "media");
    alice.send("hangup");
    alice.wait_for("disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    let out = events.wait_with_output().unwrap();
    let seen: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "CALL_DTMF_START")
        .map(|v| v["param"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(seen, keys, "the keys baresip saw, in order");
    alice.send("quit");
    let _ = alice.child.wait();
    // stop.sh reads baresip's pid file in the work dir: stop it first
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}
