//! Faults in the namespace topology (`interop/netns/topology.sh`): a lossy
//! new link during a hand-off, a registrar that stops or restarts, a link
//! that flaps, a registration connection reset. Each scenario checks
//! outcomes — the registrar's binding, the call, RTP both ways, bounded
//! loss — never how long something took. Loss is made by nftables in the
//! router namespace (`numgen random` drop rules; no netem on this kernel).
//!
//! Needs root (namespaces, veth) and `nft`: without them each test says it
//! is skipped; CI (root, SIPROAM_REQUIRE_INTEROP set) requires them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::netns::*;
use common::*;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Root, iproute2 and nftables; says why not otherwise (fails under
/// SIPROAM_REQUIRE_INTEROP).
fn can_run() -> bool {
    can_build_namespaces() && have("nft")
}

/// Runs an nftables script in namespace `ns`; it must succeed.
fn nft(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Drops `percent` % of the packets the router forwards to and from its
/// interface `dev`, each direction drawn on its own.
fn lossy_link(t: &Topology, dev: &str, percent: u32) {
    nft(
        &t.router,
        &format!(
            "table inet faults {{
               chain loss {{
                 type filter hook forward priority 0;
                 iifname \"{dev}\" numgen random mod 100 < {percent} counter drop
                 oifname \"{dev}\" numgen random mod 100 < {percent} counter drop
               }}
             }}"
        ),
    );
}

/// Packets the `loss` chain of [`lossy_link`] dropped so far.
fn dropped(t: &Topology) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &t.router, "nft", "list", "chain", "inet", "faults", "loss",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .map(|w| w[1].parse::<u64>().unwrap())
        .sum()
}

/// The source address the handset's kernel would use towards the server.
fn preferred_source(t: &Topology) -> String {
    let out = Command::new("ip")
        .args(["-n", &t.handset, "route", "get", SERVER])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "src")
        .map(|w| w[1].to_owned())
        .unwrap_or_else(|| panic!("no source towards the server: {text}"))
}

/// The local ports of the handset's established TCP connections to the
/// registrar.
fn registrar_connections(t: &Topology) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.handset,
            "ss",
            "-Htn",
            "state",
            "established",
            "dst",
            SERVER,
            "dport",
            "=",
            "5060",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

/// Alice's `registration` events read so far.
fn registrations(alice: &Proc) -> Vec<Value> {
    alice
        .seen()
        .into_iter()
        .filter(|v| v["event"] == "registration")
        .collect()
}

/// Media flows both ways on `ip`: Bob receives from there more than 25
/// packets beyond `bob_rx`, Alice on it more than 25 beyond `alice_rx`.
fn media_both_ways_on(bob: &Proc, alice: &Proc, bob_rx: u64, alice_rx: u64, ip: &str) {
    let media = format!("{ip}:");
    let media = media.as_str();
    bob.wait_for("bob hears alice", |v| {
        v["event"] == "media"
            && v["remote"].as_str().is_some_and(|r| r.starts_with(media))
            && v["rx_packets"].as_u64().unwrap_or(0) > bob_rx + 25
    });
    alice.wait_for("alice hears bob", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with(media))
            && v["rx_packets"].as_u64().unwrap_or(0) > alice_rx + 25
    });
}

/// Alice hangs up: her BYE reaches Bob through the registrar's proxy (the
/// dialog and its route survived), both see the call end.
fn hang_up_through_the_proxy(alice: &mut Proc, bob: &Proc) {
    assert_no_call_ended(&[alice, bob]);
    alice.send("hangup");
    bob.wait_for("bob gets the BYE", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    alice.wait_for("alice's call ends", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
}

/// `rx_packets` of the last media report read from `p`.
fn last_rx(p: &Proc) -> u64 {
    p.seen()
        .iter()
        .rev()
        .find(|v| v["event"] == "media")
        .and_then(|v| v["rx_packets"].as_u64())
        .unwrap_or(0)
}

/// The Contacts of Alice's last binding the registrar reported.
fn last_binding(registrar: &Proc) -> Value {
    registrar
        .seen()
        .into_iter()
        .rev()
        .find(|v| v["event"] == "binding" && v["aor"] == "sip:alice@example.test")
        .map(|v| v["contacts"].clone())
        .unwrap_or(Value::Null)
}

/// 30 % loss both ways on cell while Alice moves there from wifi (wifi's
/// address removed): the REGISTER and the re-INVITE get through by
/// retransmission, the binding and the call follow, RTP resumes on cell
/// with the loss the link makes and no more than a bounded gap.
#[test]
fn thirty_percent_loss_on_the_new_link_during_a_handoff() {
    if !can_run() {
        return;
    }
    let t = Topology::new("fl");
    let (registrar, bob, mut alice, before) = call_over_wifi(&t);
    lossy_link(&t, "rcell", 30);
    del_addr(&t, "10.1.0.2/24", "wifi0");
    // no loss before the change (clean wifi)
    assert_eq!(before["lost"], 0, "{before}");
    check_moved_with(&t, &registrar, &bob, &alice, &before, CELL, &|_| true);
    // 150 more packets each way (3 s of RTP) on cell: each side lost what
    // the link takes (30 % of what was sent since the change, with the
    // hand-off's own gap on top), and no more than 45 %
    let (bob_rx, alice_rx) = (
        before["rx_packets"].as_u64().unwrap(),
        before["tx_packets"].as_u64().unwrap(),
    );
    let cell = format!("{CELL}:");
    let bob_after = bob.wait_for("bob hears alice on cell", |v| {
        v["event"] == "media"
            && v["remote"].as_str().is_some_and(|r| r.starts_with(&cell))
            && v["rx_packets"].as_u64().unwrap_or(0) > bob_rx + 150
    });
    let alice_after = alice.wait_for("alice hears bob on cell", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with(&cell))
            && v["rx_packets"].as_u64().unwrap_or(0) > alice_rx + 150
    });
    for (report, rx_before) in [(&bob_after, bob_rx), (&alice_after, alice_rx)] {
        let lost = report["lost"].as_u64().unwrap() as f64;
        let rx = (report["rx_packets"].as_u64().unwrap() - rx_before) as f64;
        let share = lost / (lost + rx);
        assert!(
            (0.1..=0.45).contains(&share),
            "lost {:.0} % since the change: {report}",
            share * 100.0
        );
    }
    assert!(dropped(&t) > 0, "the link really lost packets");
    hang_up_through_the_proxy(&mut alice, &bob);
}

/// The registrar is frozen (SIGSTOP) while Alice moves from wifi to cell
/// and thawed (SIGCONT) four seconds later: the REGISTER and the call's
/// re-INVITE (through the registrar's proxy) are retransmitted until it
/// answers; Alice ends registered with the cell Contact and the call
/// survives with RTP both ways on cell.
#[test]
fn the_registrar_stopped_during_a_change_then_resumed() {
    if !can_run() {
        return;
    }
    let t = Topology::new("fs");
    let (registrar, bob, mut alice, before) = call_over_wifi(&t);
    signal(&registrar, "STOP");
    del_addr(&t, "10.1.0.2/24", "wifi0");
    alice.wait_for("the change starts", |v| {
        v["event"] == "ip_change" && v["stage"] == "started"
    });
    std::thread::sleep(Duration::from_secs(4));
    signal(&registrar, "CONT");
    // Bob loses what Alice sent from wifi while the re-INVITE waited: at
    // most the frozen seconds' worth (50 packets/s), plus a margin
    check_moved(&t, &registrar, &bob, &alice, &before, CELL, 300);
    hang_up_through_the_proxy(&mut alice, &bob);
}

/// The registrar restarted (killed, started again on the same address
/// and port, its bindings lost) while Alice is registered over UDP with a
/// 20 s lifetime: nothing tells her, and her next refresh (due 10 s after
/// the last 2xx) binds her again — the first registration event after the
/// restart is that refresh's `registered`, with no failure before it.
#[test]
fn a_restarted_registrar_gets_the_binding_back_at_the_next_refresh_over_udp() {
    if !can_run() {
        return;
    }
    let t = Topology::new("fu");
    let o = Options {
        registrar_args: vec!["--min-expires".into(), "10".into()],
        alice_args: vec!["--expires".into(), "20".into()],
        ..Options::default()
    };
    let (registrar, _bob, alice) = start(&t, &o);
    let first = registrations(&alice).last().cloned().unwrap();
    assert_eq!(first["expires"], 20, "the short lifetime granted: {first}");
    drop(registrar);
    let registrar = spawn_registrar(&t, &o);
    wait_binding(&registrar, WIFI);
    // the refresh that re-bound her is her first registration event after
    // the one seen before the restart: nothing failed in between
    let next = alice.wait_for("alice's next registration event", |v| {
        v["event"] == "registration"
    });
    assert_eq!(next["state"], "registered", "{next}");
    assert!(next["contact"].as_str().unwrap().contains(WIFI), "{next}");
}

/// The registrar restarted while Alice is registered over TCP (600 s
/// lifetime: her refresh is due 590 s after her 2xx). The old process's
/// close (its FIN) reaches her once the new one listens — the router holds
/// the server's TCP packets while it restarts — and she registers again at
/// once over a new connection: her next registration event is the 2xx
/// (no failure, no retry), before the refresh was due, and the new
/// registrar holds the binding.
#[test]
fn a_restarted_registrar_gets_the_binding_back_at_once_over_tcp() {
    if !can_run() {
        return;
    }
    let t = Topology::new("ft");
    let o = Options {
        alice_over_tcp: true,
        ..Options::default()
    };
    let (registrar, _bob, alice) = start(&t, &o);
    let first = registrations(&alice).last().cloned().unwrap();
    let lifetime = first["expires"].as_f64().unwrap();
    let refresh_due =
        first["t_ms"].as_f64().unwrap() + (lifetime - 10.0).max(lifetime / 2.0) * 1000.0;
    let old = registrar_connections(&t);
    assert_eq!(old.len(), 1, "one registration connection: {old:?}");
    nft(
        &t.router,
        &format!(
            "table inet hold {{
               chain restart {{
                 type filter hook forward priority 0;
                 ip saddr {SERVER} tcp sport 5060 counter drop
               }}
             }}"
        ),
    );
    drop(registrar);
    let registrar = spawn_registrar(&t, &o);
    nft(&t.router, "delete table inet hold");
    wait_binding(&registrar, WIFI);
    let again = alice.wait_for("alice's next registration event", |v| {
        v["event"] == "registration"
    });
    assert_eq!(again["state"], "registered", "at the first try: {again}");
    assert!(
        again["t_ms"].as_f64().unwrap() < refresh_due,
        "re-registered before the refresh was due ({refresh_due} ms): {again}"
    );
    let new = registrar_connections(&t);
    assert_eq!(new.len(), 1, "one registration connection: {new:?}");
    assert_ne!(new, old, "a new connection");
}

/// The wifi link flaps ten times in five seconds (down, then up with its
/// routes back as a DHCP client would put them) with cell up throughout:
/// at the end Alice is registered on the address the kernel prefers
/// towards the registrar, the call is up and RTP flows both ways there.
#[test]
fn a_link_flapping_ten_times_in_five_seconds() {
    if !can_run() {
        return;
    }
    let t = Topology::new("ff");
    let (registrar, bob, mut alice, _before) = call_over_wifi(&t);
    wait_binding(&registrar, WIFI);
    for _ in 0..10 {
        ip(&["-n", &t.handset, "link", "set", "wifi0", "down"]);
        std::thread::sleep(Duration::from_millis(250));
        ip(&["-n", &t.handset, "link", "set", "wifi0", "up"]);
        for table in [None, Some("101")] {
            let mut args = vec![
                "-n", &t.handset, "route", "replace", "default", "via", "10.1.0.1", "dev", "wifi0",
                "metric", "100",
            ];
            if let Some(table) = table {
                args.truncate(9);
                args.extend_from_slice(&["table", table]);
            }
            ip(&args);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let preferred = preferred_source(&t);
    assert_eq!(preferred, WIFI, "wifi is preferred again");
    // the network is still now: once the registrar has heard nothing for
    // 5 s (a resync runs every 2 s), Alice's last binding is the final one
    registrar.wait_quiet(Duration::from_secs(5));
    let seen = registrar.seen();
    let moves = seen
        .iter()
        .filter(|v| v["event"] == "binding" && v["aor"] == "sip:alice@example.test")
        .count();
    assert!(moves > 1, "alice moved while wifi flapped: {seen:?}");
    let contacts = last_binding(&registrar);
    assert!(
        contacts.as_array().is_some_and(|c| c.len() == 1
            && c[0]["contact"]
                .as_str()
                .is_some_and(|c| c.contains(&preferred))),
        "alice's one binding on {preferred}: {contacts}"
    );
    alice.drain();
    bob.drain();
    let registered = registrations(&alice);
    let last = registered.last().unwrap();
    assert_eq!(last["state"], "registered", "{registered:?}");
    assert!(
        last["contact"].as_str().unwrap().contains(&preferred),
        "{last}"
    );
    media_both_ways_on(&bob, &alice, last_rx(&bob), last_rx(&alice), &preferred);
    hang_up_through_the_proxy(&mut alice, &bob);
}

/// The registration connection is reset under Alice (`ss -K` in the
/// handset aborts it: the registrar gets a RST): she notices, registers
/// again over a new connection at once, and the registrar's binding is
/// live afterwards; the call is untouched.
#[test]
fn a_reset_registration_connection_is_replaced() {
    if !can_run() {
        return;
    }
    let t = Topology::new("fr");
    let o = Options {
        alice_over_tcp: true,
        ..Options::default()
    };
    let (registrar, bob, mut alice) = start(&t, &o);
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let before = bob.wait_for("bob hears alice", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    wait_binding(&registrar, WIFI);
    let old = registrar_connections(&t);
    assert_eq!(old.len(), 1, "one registration connection: {old:?}");
    let out = Command::new("ip")
        .args([
            "netns", "exec", &t.handset, "ss", "-K", "dst", SERVER, "dport", "=", "5060",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&old[0]),
        "ss -K killed the connection: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_binding(&registrar, WIFI);
    let new = registrar_connections(&t);
    assert_eq!(new.len(), 1, "one registration connection: {new:?}");
    assert_ne!(new, old, "a new connection");
    let (bob_rx, alice_rx) = (
        before["rx_packets"].as_u64().unwrap(),
        before["tx_packets"].as_u64().unwrap(),
    );
    media_both_ways_on(&bob, &alice, bob_rx, alice_rx, WIFI);
    assert_no_call_ended(&[&alice, &bob]);
    // her BYE reaches Bob (registered over UDP) through the proxy: it went
    // over TCP to his Contact before the proxy's RFC 3263 fix
    hang_up_through_the_proxy(&mut alice, &bob);
}
