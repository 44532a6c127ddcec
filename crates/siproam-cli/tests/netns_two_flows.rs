//! Two RFC 5626 flows of one instance through two local interfaces
//! (issue 12, item 6 and "Real components"), against Kamailio 5.6 in
//! network namespaces (`interop/netns/topology.sh`, no NAT):
//!
//! ```text
//!   handset (alice: siproam agent --outbound, TCP,
//!            --flow-from wifi0 --flow-from cell0)
//!     wifi0 10.1.0.2 -- router (nftables: the wifi path dropped on demand)
//!     cell0 10.2.0.2 --        -- srv0 10.9.0.2  server:
//!                                  Kamailio edge (edge.cfg)      :5060
//!                                  Kamailio registrar (kamailio.cfg) :5070,
//!                                    outbound, Path, GRUU, Flow-Timer 5
//!                                  bob (siproam agent, UDP, to :5070)
//! ```
//!
//! One edge and `--flow-from` rather than two edges as two
//! `--outbound-proxy`: the two flows differ by their local interface, which
//! is what item 6 asks for, and the edge's flow token already tells the two
//! connections apart (the registrar tries the other flow of the instance
//! on a 430, `t_next_contact_flow`).
//!
//! Checked: both flows up, reg-id 1 from wifi0's address and reg-id 2 from
//! cell0's; the registrar holds two bindings of the one instance (reg-id 1
//! and 2), the edge two connections, one from each interface's address;
//! a call alice → bob; then the wifi path silently dropped in the router
//! (an nftables drop of 10.1.0.0/24 forwarding, not a route change) →
//! flow 1 reported failed (`pong_timeout`), flow 2 not; a new call from
//! bob reaches alice (over flow 2: nothing else is left) and bob's BYE of
//! it, an in-dialog request, too; the drop lifted → flow 1 up again from
//! wifi0 and registered.
//!
//! The call made before the drop continues over flow 2: it moves at once
//! to the live sibling flow when its own fails. Through this edge the repair is an INVITE with Replaces: the edge's
//! Record-Route names flow 1 (flow token), so a refresh sent over flow 2
//! is forwarded to flow 1 and times out (408); the new dialog's
//! Record-Route names flow 2, and bob's BYE then reaches alice.
//!
//! Needs root, iproute2, nftables, ss and Kamailio with its outbound
//! module (`interop/install.sh`): without them the test says why it is
//! skipped; with `SIPROAM_REQUIRE_INTEROP=1` (CI) it fails instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::netns::*;
use common::*;

use std::process::{Command, Stdio};

use serde_json::Value;

/// The Flow-Timer the registrar sends, seconds.
const FLOW_TIMER: u32 = 5;
/// Alice's instance.
const INSTANCE: &str = "urn:uuid:00000000-0000-4000-8000-0000000005a7";

fn can_run() -> bool {
    can_build_namespaces() && have("kamailio") && have("kamcmd") && have("nft") && have("ss")
}

/// Runs `PROGRAM ARGS` in namespace `ns`; it must succeed; its stdout.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft -f -` of `script` in the router.
fn nft(t: &Topology, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &t.router, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "nft: {script}");
}

/// The wifi path silently dropped in the router, both ways (counted).
fn drop_wifi(t: &Topology) {
    nft(
        t,
        r#"
table inet srg_drop {
    counter dropped { }
    chain forward {
        type filter hook forward priority filter; policy accept;
        ip saddr 10.1.0.0/24 counter name dropped drop
        ip daddr 10.1.0.0/24 counter name dropped drop
    }
}
"#,
    );
}

/// Packets the wifi drop counted.
fn dropped(t: &Topology) -> u64 {
    let out = in_ns(
        &t.router,
        "nft",
        &["list", "counter", "inet", "srg_drop", "dropped"],
    );
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {out}"))
}

/// The peers' addresses of the edge's established connections on 5060.
fn edge_peers(t: &Topology) -> Vec<String> {
    let out = in_ns(
        &t.server,
        "ss",
        &["-Htn", "state", "established", "( sport = :5060 )"],
    );
    let mut peers: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter_map(|p| p.rsplit_once(':').map(|(ip, _)| ip.to_owned()))
        .collect();
    peers.sort();
    peers
}

fn flow_up(reg_id: u64) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == "flow" && v["state"] == "up" && v["reg_id"] == reg_id
}

fn call_state<'a>(state: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v| v["event"] == "call" && v["state"] == state
}

#[test]
fn two_flows_through_wifi_and_cell_one_path_dropped_calls_go_over_the_other() {
    if !can_run() {
        return;
    }
    let t = Topology::new("g");
    let registrar = Kamailio::start_cfg(
        Some(&t.server),
        5070,
        &format!("-A SIP_ADDR={SERVER} -A FLOW_TIMER={FLOW_TIMER} -A NO_CALL_AUTH"),
        &format!("{}-reg", t.tag),
        "kamailio.cfg",
    );
    let _edge = Kamailio::start_cfg(
        Some(&t.server),
        5060,
        &format!("-A SIP_ADDR={SERVER} -A REGISTRAR=\"sip:{SERVER}:5070\""),
        &format!("{}-edge", t.tag),
        "edge.cfg",
    );
    let mut alice = t.spawn(
        &t.handset,
        &[
            "agent",
            "--json",
            "--no-watch",
            "--aor",
            "sip:alice@example.test",
            "--registrar",
            &format!("sip:{SERVER}:5060;transport=tcp"),
            "--password",
            "alicepw",
            "--outbound",
            "--instance-id",
            INSTANCE,
            "--flow-from",
            "wifi0",
            "--flow-from",
            "cell0",
            "--listen",
            "tcp:0.0.0.0:0",
            "--pong-timeout",
            "3",
            "--auto-answer",
            "--play",
            "tone:1000",
        ],
    );

    // (1) two flows up, each from its own interface's address
    let one = alice.wait_for("flow 1 up", flow_up(1));
    let two = alice.seen_or_wait("flow 2 up", flow_up(2));
    assert!(
        one["local"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{WIFI}:")),
        "flow 1 leaves from wifi0: {one}"
    );
    assert!(
        two["local"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{CELL}:")),
        "flow 2 leaves from cell0: {two}"
    );
    assert_eq!(
        (one["flow_timer"].as_u64(), two["flow_timer"].as_u64()),
        (Some(5), Some(5))
    );
    let registered: Vec<Value> = alice
        .seen()
        .into_iter()
        .filter(|v| v["event"] == "registration" && v["state"] == "registered")
        .collect();
    assert_eq!(registered.len(), 2, "{registered:?}");
    assert!(
        registered.iter().all(|r| r["outbound"] == true),
        "{registered:?}"
    );
    // the registrar: two bindings of the one instance, reg-id 1 and 2
    let b = registrar.bindings_with("alice@example.test", "Instance,Reg-Id");
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(b.iter().all(|l| l.contains(INSTANCE)), "{b:?}");
    assert!(
        b.iter().any(|l| l.ends_with("\t1")) && b.iter().any(|l| l.ends_with("\t2")),
        "{b:?}"
    );
    // the edge: one connection from each interface's address
    assert_eq!(edge_peers(&t), vec![WIFI.to_owned(), CELL.to_owned()]);

    // (2) bob, and a call alice → bob
    let mut bob = t.spawn(
        &t.server,
        &[
            "agent",
            "--json",
            "--no-watch",
            "--aor",
            "sip:bob@example.test",
            "--registrar",
            &format!("sip:{SERVER}:5070"),
            "--password",
            "bobpw",
            "--listen",
            &format!("udp:{SERVER}:0"),
            "--auto-answer",
            "--play",
            "tone:1000",
        ],
    );
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    alice.send("call sip:bob@example.test");
    let a = alice.wait_for("alice's call to bob answered", |v| {
        v["event"] == "call" && matches!(v["state"].as_str(), Some("confirmed" | "disconnected"))
    });
    assert_eq!(a["state"], "confirmed", "{a}");
    let first_call = bob.wait_for("bob's call from alice", call_state("confirmed"));

    // (3) the wifi path silently dropped: flow 1 fails for want of a
    // pong, flow 2 does not
    drop_wifi(&t);
    let failed = alice.wait_for("flow 1 failed", |v| {
        v["event"] == "flow" && v["state"] == "failed"
    });
    assert_eq!(
        (failed["reg_id"].as_u64(), failed["reason"].as_str()),
        (Some(1), Some("pong_timeout")),
        "{failed}"
    );
    assert!(dropped(&t) > 0, "the router dropped nothing");

    // the call made over flow 1 is repaired over flow 2 (the edge's
    // Record-Route names flow 1, so a refresh is sent back to it and
    // times out; an INVITE with Replaces makes a new dialog over flow
    // 2): nothing ended, and then bob's BYE reaches alice
    let done = alice.wait_for("alice's call repair", |v| {
        v["event"] == "ip_change" && v["trigger"] == "flow_failure" && v["stage"] == "completed"
    });
    let events = |p: &Proc| {
        p.seen()
            .into_iter()
            .filter(|v| v["event"] != "media" && v["state"] != "keepalive_ok")
            .collect::<Vec<_>>()
    };
    assert_eq!(done["status"], "ok", "{:#?}", events(&alice));
    assert_no_call_ended(&[&alice]);
    // bob's side: the same call (refreshed), or the one an INVITE with
    // Replaces made (bob reports media every second: bounded)
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let replaced = bob.wait_for("bob's side of the repaired call", |v| {
        (v["event"] == "call" && v["state"] == "confirmed" && v["call"] != first_call["call"])
            || std::time::Instant::now() > until
    });
    let live = if replaced["event"] == "call" {
        &replaced["call"]
    } else {
        &first_call["call"]
    };
    bob.send(&format!("hangup {live}"));
    let ended = alice.wait_for("bob's BYE reaches alice", call_state("disconnected"));
    assert!(ended["code"].is_null(), "{ended}: {:#?}", events(&alice));

    // (4) a new call from bob reaches alice over flow 2 (wifi is dropped
    // both ways), and so does bob's BYE of it
    bob.send("call sip:alice@example.test");
    let calling = bob.wait_for("bob calling alice", call_state("calling"));
    let b_call = bob.wait_for("bob's call to alice answered", |v| {
        v["event"] == "call"
            && v["call"] == calling["call"]
            && matches!(v["state"].as_str(), Some("confirmed" | "disconnected"))
    });
    assert_eq!(b_call["state"], "confirmed", "{b_call}");
    let incoming = alice.wait_for("alice's call from bob", call_state("incoming"));
    alice.wait_for("alice's call from bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed" && v["call"] == incoming["call"]
    });
    bob.send(&format!("hangup {}", b_call["call"]));
    alice.wait_for("bob's BYE reaches alice", |v| {
        v["event"] == "call" && v["state"] == "disconnected" && v["call"] == incoming["call"]
    });
    let failed2: Vec<Value> = alice
        .seen()
        .into_iter()
        .filter(|v| v["event"] == "flow" && v["state"] == "failed" && v["reg_id"] == 2)
        .collect();
    assert!(failed2.is_empty(), "flow 2 failed: {failed2:?}");

    // (5) the drop lifted: flow 1 comes back from wifi0 and registers —
    // at once when its reconnect is still under way, else after the RFC
    // 5626 §4.5 back-off (90 s base with flow 2 alive, doubled per failure,
    // 50-100 %: at most 180 s here); flow 2's keep-alives and the media
    // reports keep events coming, so the waits below end by their deadline
    in_ns(&t.router, "nft", &["delete", "table", "inet", "srg_drop"]);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(200);
    let back = loop {
        let step = std::time::Instant::now() + std::time::Duration::from_secs(100);
        let v = alice.wait_for("flow 1 up again", |v| {
            flow_up(1)(v) || std::time::Instant::now() > step
        });
        if flow_up(1)(&v) {
            break v;
        }
        assert!(
            std::time::Instant::now() < until,
            "flow 1 not up again within 200 s of the drop lifted"
        );
    };
    assert!(
        back["local"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{WIFI}:")),
        "{back}"
    );
    let b = registrar.bindings_with("alice@example.test", "Instance,Reg-Id");
    assert_eq!(b.len(), 2, "{b:?}");
    if std::env::var_os("NETNS_DEBUG").is_some() {
        for v in alice.seen() {
            eprintln!("alice {v}");
        }
        for v in bob.seen() {
            eprintln!("bob {v}");
        }
    }
    bob.quit();
    alice.quit();
}
