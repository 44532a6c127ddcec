//! Network changes on real (namespaced) networks, detected by the agent on
//! its own: no `ip-change` is ever typed. Each test builds its own
//! namespaces: a handset with two uplinks (wifi, cell) routed through a
//! router namespace to a server namespace where `siproam registrar` and
//! Bob's agent run; Alice's agent runs in the handset, registers, calls
//! Bob, and the test changes the handset's network under her.
//!
//! Needs root (namespaces, veth): without it each test says it is skipped;
//! CI (root, SIPROAM_REQUIRE_INTEROP set) requires them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sysctl -w` inside a namespace.
fn sysctl(ns: &str, setting: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", setting])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "sysctl {setting} in {ns}");
}

/// Whether this process may build namespaces; says why not otherwise.
fn can_build_namespaces() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let have_ip = Command::new("ip").arg("-V").output().is_ok();
    if root && have_ip {
        return true;
    }
    if std::env::var_os("SIPROAM_REQUIRE_INTEROP").is_some() {
        panic!("the namespace tests need root and iproute2, and this run requires them");
    }
    eprintln!("skipped: the namespace tests need root and iproute2 (`ip netns`)");
    false
}

/// The handset, router and server namespaces, removed on drop.
///
/// handset wifi0 10.1.0.2/24 fd01::2/64 — router rwifi 10.1.0.1 fd01::1
/// handset cell0 10.2.0.2/24 fd02::2/64 — router rcell 10.2.0.1 fd02::1
/// server  srv0  10.9.0.2/24 fd09::2/64 — router rsrv  10.9.0.1 fd09::1
///
/// The handset's default route goes over wifi (metric 100) and cell (200);
/// source-based rules keep a socket bound to one uplink's address on it.
struct Topology {
    handset: String,
    router: String,
    server: String,
}

const SERVER: &str = "10.9.0.2";
const WIFI: &str = "10.1.0.2";
const CELL: &str = "10.2.0.2";

impl Topology {
    fn new(tag: &str) -> Topology {
        let id = format!("{}{}", tag, std::process::id() % 100_000);
        let t = Topology {
            handset: format!("srh{id}"),
            router: format!("srr{id}"),
            server: format!("srs{id}"),
        };
        for ns in [&t.handset, &t.router, &t.server] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            sysctl(ns, "net.ipv6.conf.all.accept_ra=0");
            sysctl(ns, "net.ipv4.conf.all.rp_filter=0");
            sysctl(ns, "net.ipv4.conf.default.rp_filter=0");
        }
        sysctl(&t.router, "net.ipv4.ip_forward=1");
        sysctl(&t.router, "net.ipv6.conf.all.forwarding=1");
        let (h, r, s) = (&t.handset, &t.router, &t.server);
        for (dev, peer, ns, n) in [
            ("wifi0", "rwifi", h, "1"),
            ("cell0", "rcell", h, "2"),
            ("srv0", "rsrv", s, "9"),
        ] {
            ip(&[
                "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", r,
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.{n}.0.2/24"),
                "dev",
                dev,
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd0{n}::2/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&[
                "-n",
                r,
                "addr",
                "add",
                &format!("10.{n}.0.1/24"),
                "dev",
                peer,
            ]);
            ip(&[
                "-n",
                r,
                "addr",
                "add",
                &format!("fd0{n}::1/64"),
                "dev",
                peer,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", r, "link", "set", peer, "up"]);
        }
        ip(&["-n", s, "route", "add", "default", "via", "10.9.0.1"]);
        ip(&["-n", s, "-6", "route", "add", "default", "via", "fd09::1"]);
        for (dev, n, metric, table) in [("wifi0", "1", "100", "101"), ("cell0", "2", "200", "102")]
        {
            let gw = format!("10.{n}.0.1");
            ip(&[
                "-n", h, "route", "add", "default", "via", &gw, "dev", dev, "metric", metric,
            ]);
            ip(&[
                "-n", h, "route", "add", "default", "via", &gw, "dev", dev, "table", table,
            ]);
            ip(&[
                "-n",
                h,
                "rule",
                "add",
                "from",
                &format!("10.{n}.0.2"),
                "table",
                table,
            ]);
            let gw6 = format!("fd0{n}::1");
            ip(&[
                "-n", h, "-6", "route", "add", "default", "via", &gw6, "dev", dev, "metric", metric,
            ]);
        }
        t
    }

    /// `siproam ARGS` inside namespace `ns`.
    fn spawn(&self, ns: &str, args: &[&str]) -> Proc {
        let mut all = vec!["netns", "exec", ns, env!("CARGO_BIN_EXE_siproam")];
        all.extend_from_slice(args);
        Proc::spawn_program("ip", &all)
    }

    /// Whether a TCP connection from the server reaches `addr`.
    fn tcp_reaches(&self, addr: &str) -> bool {
        let (host, port) = addr.rsplit_once(':').unwrap();
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server,
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{host}/{port}"),
            ])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.handset, &self.router, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The registrar and Bob in the server namespace, Alice in the handset
/// (wildcard listeners, detection on), in a confirmed call with media both
/// ways. Returns (registrar, bob, alice, bob's last media report).
fn call_over_wifi(t: &Topology) -> (Proc, Proc, Proc, Value) {
    let registrar = t.spawn(
        &t.server,
        &[
            "registrar",
            "--json",
            "--listen",
            &format!("udp:{SERVER}:5060"),
            "--listen",
            &format!("tcp:{SERVER}:5060"),
        ],
    );
    registrar.wait_for("registrar listening", |v| {
        v["event"] == "listening" && v["transport"] == "tcp"
    });
    let bob = t.spawn(
        &t.server,
        &[
            "agent",
            "--json",
            "--no-watch",
            "--aor",
            "sip:bob@example.test",
            "--registrar",
            &format!("sip:{SERVER}:5060"),
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
    let mut alice = t.spawn(
        &t.handset,
        &[
            "agent",
            "--json",
            "--aor",
            "sip:alice@example.test",
            "--registrar",
            &format!("sip:{SERVER}:5060"),
            "--listen",
            "udp:0.0.0.0:0",
            "--listen",
            "tcp:0.0.0.0:0",
            "--play",
            "tone:1000",
        ],
    );
    let reg = alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    assert!(
        reg["contact"].as_str().unwrap().contains(WIFI),
        "registered over wifi: {reg}"
    );
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let before = bob.wait_for("bob hears alice over wifi", |v| {
        v["event"] == "media"
            && v["remote"].as_str().is_some_and(|r| r.starts_with(WIFI))
            && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    (registrar, bob, alice, before)
}

/// After a change Alice detected by herself: every stage ok, the binding
/// at the registrar names `new_ip`, media flows both ways on `new_ip`
/// with at most `max_lost` packets lost, the TCP listener takes a
/// connection on `new_ip`, the call is still up.
fn check_moved(
    t: &Topology,
    registrar: &Proc,
    bob: &Proc,
    alice: &Proc,
    before: &Value,
    new_ip: &str,
    max_lost: u64,
) {
    let mut seen: Vec<Value> = Vec::new();
    loop {
        let v = alice.wait_for("ip_change", |v| v["event"] == "ip_change");
        assert_eq!(v["status"], "ok", "{v}");
        let done = v["stage"] == "completed";
        seen.push(v);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().any(|v| v["stage"] == "refresh_calls"),
        "{seen:?}"
    );
    let reg = alice.wait_for("re-registered from the new address", |v| {
        v["event"] == "registration"
            && v["state"] == "registered"
            && v["contact"].as_str().is_some_and(|c| c.contains(new_ip))
    });
    assert_eq!(reg["code"], 200);
    registrar.wait_for("the binding names the new address", |v| {
        v["event"] == "binding"
            && v["aor"] == "sip:alice@example.test"
            && v["contacts"]
                .as_array()
                .is_some_and(|c| c.len() == 1 && c[0]["contact"].as_str().unwrap().contains(new_ip))
    });
    let bob_after = bob.wait_for("bob hears alice on the new address", |v| {
        v["event"] == "media"
            && v["remote"].as_str().is_some_and(|r| r.starts_with(new_ip))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["rx_packets"].as_u64().unwrap() + 25
    });
    let alice_after = alice.wait_for("alice hears bob on the new address", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with(new_ip))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["tx_packets"].as_u64().unwrap() + 25
    });
    assert!(
        bob_after["lost"].as_u64().unwrap() <= max_lost,
        "{bob_after}"
    );
    assert!(
        alice_after["lost"].as_u64().unwrap() <= max_lost,
        "{alice_after}"
    );
    if std::env::var_os("NETNS_DEBUG").is_some() {
        for v in alice.seen() {
            eprintln!("{v}");
        }
    }
    // the TCP listener really listens on the new address
    let tcp = alice_tcp_port(alice);
    assert!(
        t.tcp_reaches(&format!("{new_ip}:{tcp}")),
        "TCP listener on {new_ip}:{tcp}"
    );
}

fn alice_tcp_port(alice: &Proc) -> String {
    alice
        .seen()
        .iter()
        .find(|v| v["event"] == "listening" && v["transport"] == "tcp")
        .and_then(|v| v["address"].as_str())
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .expect("alice's TCP listener")
}

/// Break-before-make: the wifi address is removed; Alice notices, moves to
/// the cell address, re-registers, refreshes the call, media resumes.
#[test]
fn wifi_address_removed_then_cell_used() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("b");
    let (registrar, bob, alice, before) = call_over_wifi(&t);
    ip(&[
        "-n",
        &t.handset,
        "addr",
        "del",
        &format!("{WIFI}/24"),
        "dev",
        "wifi0",
    ]);
    alice.wait_for("the monitor saw the address go", |v| {
        v["event"] == "network" && v["kind"] == "address_removed" && v["address"] == WIFI
    });
    check_moved(&t, &registrar, &bob, &alice, &before, CELL, 3);
}

/// Make-before-break: cell becomes the preferred uplink while wifi still
/// works; Alice moves over cell first, the old path keeps receiving until
/// Bob follows: no packet lost.
#[test]
fn cell_preferred_while_wifi_still_works() {
    if !can_build_namespaces() {
        return;
    }
    let t = Topology::new("m");
    let (registrar, bob, alice, before) = call_over_wifi(&t);
    ip(&[
        "-n", &t.handset, "route", "add", "default", "via", "10.2.0.1", "dev", "cell0", "metric",
        "50",
    ]);
    alice.wait_for("the monitor saw the route change", |v| {
        v["event"] == "network" && v["kind"] == "route_changed"
    });
    check_moved(&t, &registrar, &bob, &alice, &before, CELL, 0);
}
