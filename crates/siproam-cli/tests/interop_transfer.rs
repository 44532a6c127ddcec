//! Call transfer interop with baresip 1.0.0 on loopback: a `siproam agent`
//! (Alice) calls baresip, then transfers it (blind REFER) to a second
//! `siproam agent` (Carol). Baresip follows the REFER and reports its
//! progress in NOTIFYs; Alice sees `transfer` `succeeded` and hangs up,
//! Carol gets baresip's call. And the other way: baresip calls a siproam
//! agent (Bob) and transfers him to Carol; Bob accepts baresip's REFER,
//! calls Carol and tells baresip in NOTIFYs.
//!
//! baresip comes from Debian (`interop/install.sh`); without it the test
//! says why it is skipped, and with `SIPROAM_REQUIRE_INTEROP=1` (CI) it
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use common::baresip::Baresip;

fn agent(name: &str, port: u16, extra: &[&str]) -> Proc {
    let aor = format!("sip:{name}@example.test");
    let listen = format!("udp:127.0.0.1:{port}");
    let mut args = vec![
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        &aor,
        "--listen",
        &listen,
        "--stay",
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args);
    p.wait_for("listener", |v| v["event"] == "listening");
    p
}

#[test]
fn siproam_transfers_a_call_with_baresip_to_another_siproam_agent() {
    if !have("baresip") {
        return;
    }
    let dir = temp_dir("baresip-transfer");
    let (port, ctrl) = (free_port(1), free_port(0));
    let bs = Baresip::start(
        port,
        ctrl,
        &dir.join("bs"),
        &["--auto-answer", "--user", "bob"],
    );
    let mut alice = agent("alice", free_port(0), &[]);
    let cport = free_port(0);
    let mut carol = agent("carol", cport, &["--auto-answer"]);

    alice.send(&format!("call sip:bob@127.0.0.1:{port}"));
    let call = alice.wait_for("confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    })["call"]
        .as_u64()
        .unwrap();
    alice.wait_for("media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 10
    });
    let target = format!("sip:carol@127.0.0.1:{cport}");
    alice.send(&format!("transfer {call} {target}"));
    let ok = alice.wait_for("the transfer's outcome", |v| {
        v["event"] == "transfer" && (v["state"] == "succeeded" || v["state"] == "failed")
    });
    assert_eq!(ok["state"], "succeeded", "{ok}\n{}", bs.log());
    assert_eq!(ok["code"], 200);
    assert_eq!(ok["target"], target.as_str());
    alice.seen_or_wait("alice's call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected" && v["call"] == call
    });
    // carol has baresip's call, media both ways
    carol.seen_or_wait("carol confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    carol.wait_for("media from baresip", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 10
    });
    let log = bs.log();
    assert!(log.contains("REFER sip:"), "baresip got no REFER");
    assert!(
        log.contains(&format!("INVITE {target}")),
        "baresip did not call the target"
    );
    carol.send("hangup");
    carol.wait_for("carol's call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    for p in [&mut alice, &mut carol] {
        p.send("quit");
        let _ = p.child.wait();
    }
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn baresip_transfers_a_siproam_agent_to_another_one() {
    if !have("baresip") {
        return;
    }
    let dir = temp_dir("baresip-transferor");
    let (port, ctrl) = (free_port(1), free_port(0));
    let bs = Baresip::start(port, ctrl, &dir.join("bs"), &["--user", "alice"]);
    let bport = free_port(0);
    let mut bob = agent("bob", bport, &["--auto-answer"]);
    let cport = free_port(0);
    let mut carol = agent("carol", cport, &["--auto-answer"]);

    bs.ctrl(&[
        "dial",
        &format!("sip:bob@127.0.0.1:{bport}"),
        "--wait",
        "CALL_ESTABLISHED",
        "--timeout",
        "10",
    ]);
    let old = bob.wait_call("bob", "confirmed")["call"].as_u64().unwrap();
    let target = format!("sip:carol@127.0.0.1:{cport}");
    bs.ctrl(&["transfer", &target]);
    let req = bob.wait_for("bob's transfer requested", |v| {
        v["event"] == "transfer" && v["state"] == "requested"
    });
    assert_eq!(req["call"], old);
    assert_eq!(req["target"], target.as_str());
    let done = bob.wait_for("bob's transfer's outcome", |v| {
        v["event"] == "transfer" && (v["state"] == "succeeded" || v["state"] == "failed")
    });
    assert_eq!(done["state"], "succeeded", "{done}\n{}", bs.log());
    assert_eq!(done["code"], 200);
    carol.seen_or_wait("carol confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    carol.wait_for("media from bob", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 10
    });
    // baresip heard the outcome in a NOTIFY and took it (200)
    let log = bs.log();
    assert!(log.contains("NOTIFY sip:"), "baresip got no NOTIFY");
    assert!(
        log.contains("Content-Type: message/sipfrag")
            && log.contains("Subscription-State: terminated"),
        "no final sipfrag NOTIFY seen"
    );
    bob.send("hangup");
    carol.wait_for("carol's call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    for p in [&mut bob, &mut carol] {
        p.send("quit");
        let _ = p.child.wait();
    }
    drop(bs);
    let _ = std::fs::remove_dir_all(dir);
}
