//! The hand-off network of `interop/netns/topology.sh` (handset with wifi
//! and cell uplinks, router, server) and the scene played on it: the
//! registrar and Bob in the server, Alice in the handset, a call between
//! them, and the checks after a change. Used by `netns.rs` and `faults.rs`.

use std::process::Command;

use serde_json::Value;

use super::*;

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The handset, router and server namespaces of
/// `interop/netns/topology.sh` (addresses there), removed on drop.
pub struct Topology {
    pub tag: String,
    pub handset: String,
    pub router: String,
    pub server: String,
}

pub const SERVER: &str = "10.9.0.2";
pub const WIFI: &str = "10.1.0.2";
pub const CELL: &str = "10.2.0.2";

impl Topology {
    pub fn new(tag: &str) -> Topology {
        let tag = format!("{}{}", tag, std::process::id() % 100_000);
        let script = repo().join("interop/netns/topology.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["up", &tag])
            .output()
            .expect("topology.sh");
        let t = Topology {
            handset: format!("srh{tag}"),
            router: format!("srr{tag}"),
            server: format!("srs{tag}"),
            tag,
        };
        assert!(
            out.status.success(),
            "topology.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    /// `siproam ARGS` inside namespace `ns`.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> Proc {
        let mut all = vec!["netns", "exec", ns, env!("CARGO_BIN_EXE_siproam")];
        all.extend_from_slice(args);
        Proc::spawn_program("ip", &all)
    }

    /// Whether a TCP connection from the server reaches `host` `port`.
    pub fn tcp_reaches(&self, host: &str, port: &str) -> bool {
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
        let _ =
            std::fs::remove_dir_all(std::env::temp_dir().join(format!("siproam-ns-{}", self.tag)));
        let _ = Command::new("bash")
            .arg(repo().join("interop/netns/topology.sh"))
            .args(["down", &self.tag])
            .status();
    }
}

/// The registrar and Bob in the server namespace, Alice in the handset
/// (wildcard listeners, detection on), in a confirmed call with media both
/// ways. Returns (registrar, bob, alice, bob's last media report).
pub fn call_over_wifi(t: &Topology) -> (Proc, Proc, Proc, Value) {
    call_over_wifi_with(t, &Options::default())
}

/// [`call_over_wifi`] with options (over wifi's IPv6 address when Alice
/// prefers IPv6).
pub fn call_over_wifi_with(t: &Topology, o: &Options) -> (Proc, Proc, Proc, Value) {
    let (registrar, bob, mut alice) = start(t, o);
    let wifi = if o.alice_prefers_ipv6 {
        "[fd01::2]:"
    } else {
        "10.1.0.2:"
    };
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    let before = bob.wait_for("bob hears alice over wifi", |v| {
        v["event"] == "media"
            && v["remote"].as_str().is_some_and(|r| r.starts_with(wifi))
            && v["rx_packets"].as_u64().unwrap_or(0) > 20
    });
    (registrar, bob, alice, before)
}

/// Removes `addr` (with its prefix) from the handset's `dev`.
pub fn del_addr(t: &Topology, addr: &str, dev: &str) {
    ip(&["-n", &t.handset, "addr", "del", addr, "dev", dev]);
}

/// How [`start`] sets the scene up.
#[derive(Default)]
pub struct Options {
    /// The registrar listens in IPv6 too, and the agents register to a name
    /// pinned to both its addresses.
    pub dual_stack: bool,
    /// Bob answers only when told (`answer`).
    pub bob_rings: bool,
    /// Alice prefers IPv6 for SIP and media (registers over wifi's IPv6).
    pub alice_prefers_ipv6: bool,
    /// Alice registers over TCP (`;transport=tcp`).
    pub alice_over_tcp: bool,
    /// More arguments for the registrar (e.g. `--min-expires 10`).
    pub registrar_args: Vec<String>,
    /// More arguments for Alice (e.g. `--expires 20`).
    pub alice_args: Vec<String>,
    /// More arguments for Bob (e.g. `--watcher sip:alice@example.test`).
    pub bob_args: Vec<String>,
}

/// `siproam registrar` in the server namespace on port 5060 (UDP and TCP;
/// IPv6 too when dual-stack), once it listens everywhere.
pub fn spawn_registrar(t: &Topology, o: &Options) -> Proc {
    let mut reg_args: Vec<String> = vec!["registrar".into(), "--json".into()];
    let mut listens = vec![format!("udp:{SERVER}:5060"), format!("tcp:{SERVER}:5060")];
    if o.dual_stack {
        listens.push("udp:[fd09::2]:5060".into());
        listens.push("tcp:[fd09::2]:5060".into());
    }
    for l in &listens {
        reg_args.push("--listen".into());
        reg_args.push(l.clone());
    }
    reg_args.extend(o.registrar_args.iter().cloned());
    let reg_args: Vec<&str> = reg_args.iter().map(String::as_str).collect();
    let registrar = t.spawn(&t.server, &reg_args);
    for _ in &listens {
        registrar.wait_for("registrar listening", |v| v["event"] == "listening");
    }
    registrar
}

/// The registrar and Bob in the server namespace, Alice registered in the
/// handset (over wifi).
pub fn start(t: &Topology, o: &Options) -> (Proc, Proc, Proc) {
    let registrar = spawn_registrar(t, o);
    let registrar_uri = if o.dual_stack {
        "sip:sip.test:5060".to_owned()
    } else {
        format!("sip:{SERVER}:5060")
    };
    let hosts = ["--host", "sip.test=10.9.0.2", "--host", "sip.test=fd09::2"];
    let mut bob_args = vec![
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &registrar_uri,
        "--listen",
        "udp:10.9.0.2:0",
        "--play",
        "tone:1000",
    ];
    if !o.bob_rings {
        bob_args.push("--auto-answer");
    }
    if o.dual_stack {
        bob_args.extend_from_slice(&hosts);
    }
    bob_args.extend(o.bob_args.iter().map(String::as_str));
    let bob = t.spawn(&t.server, &bob_args);
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    // a TLS listener too: it must listen on the new address as well
    let dir = std::env::temp_dir().join(format!("siproam-ns-{}", t.tag));
    std::fs::create_dir_all(&dir).unwrap();
    let (_ca, cert, key) = certificates(&dir);
    let (cert, key) = (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    );
    let alice_registrar = if o.alice_over_tcp {
        format!("{registrar_uri};transport=tcp")
    } else {
        registrar_uri.clone()
    };
    let mut alice_args = vec![
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &alice_registrar,
        "--listen",
        "udp:0.0.0.0:0",
        "--listen",
        "tcp:0.0.0.0:0",
        "--listen",
        "tls:0.0.0.0:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--play",
        "tone:1000",
    ];
    if o.dual_stack {
        alice_args.extend_from_slice(&hosts);
        alice_args.extend_from_slice(&["--listen", "udp:[::]:0", "--listen", "tcp:[::]:0"]);
    }
    if o.alice_prefers_ipv6 {
        alice_args.extend_from_slice(&["--ipv6-sip", "prefer", "--ipv6-media", "prefer"]);
    }
    alice_args.extend(o.alice_args.iter().map(String::as_str));
    let alice = t.spawn(&t.handset, &alice_args);
    let reg = alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let wifi = if o.alice_prefers_ipv6 {
        "[fd01::2]"
    } else {
        WIFI
    };
    assert!(
        reg["contact"].as_str().unwrap().contains(wifi),
        "registered over wifi: {reg}"
    );
    (registrar, bob, alice)
}

/// After a change Alice detected by herself: every stage ok, the binding
/// at the registrar names `new_ip`, media flows both ways on `new_ip`
/// with at most `max_lost` packets lost, the TCP listener takes a
/// connection on `new_ip`, the call is still up.
pub fn check_moved(
    t: &Topology,
    registrar: &Proc,
    bob: &Proc,
    alice: &Proc,
    before: &Value,
    new_ip: &str,
    max_lost: u64,
) {
    let at_most = |report: &Value| report["lost"].as_u64().unwrap() <= max_lost;
    check_moved_with(t, registrar, bob, alice, before, new_ip, &at_most);
}

/// [`check_moved`] with the loss judged by `lost_ok` on each side's media
/// report on the new address (cumulative `rx_packets` and `lost`); no call
/// was disconnected on either side.
pub fn check_moved_with(
    t: &Topology,
    registrar: &Proc,
    bob: &Proc,
    alice: &Proc,
    before: &Value,
    new_ip: &str,
    lost_ok: &dyn Fn(&Value) -> bool,
) {
    let media = if new_ip.contains(':') {
        format!("[{new_ip}]:")
    } else {
        format!("{new_ip}:")
    };
    let media = media.as_str();
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
    // (the 2xx that confirmed `update_contact` came before `completed`)
    let reg = alice.seen_or_wait("re-registered from the new address", |v| {
        v["event"] == "registration"
            && v["state"] == "registered"
            && v["contact"].as_str().is_some_and(|c| c.contains(new_ip))
    });
    assert_eq!(reg["code"], 200);
    wait_binding(registrar, new_ip);
    let bob_after = bob.wait_for("bob hears alice on the new address", |v| {
        v["event"] == "media"
            && v["remote"].as_str().is_some_and(|r| r.starts_with(media))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["rx_packets"].as_u64().unwrap() + 25
    });
    let alice_after = alice.wait_for("alice hears bob on the new address", |v| {
        v["event"] == "media"
            && v["local"].as_str().is_some_and(|l| l.starts_with(media))
            && v["rx_packets"].as_u64().unwrap_or(0) > before["tx_packets"].as_u64().unwrap() + 25
    });
    if std::env::var_os("NETNS_DEBUG").is_some() {
        for v in alice.seen() {
            eprintln!("alice {v}");
        }
        for v in bob.seen() {
            eprintln!("bob {v}");
        }
    }
    assert!(lost_ok(&bob_after), "bob's loss: {bob_after}");
    assert!(lost_ok(&alice_after), "alice's loss: {alice_after}");
    assert_no_call_ended(&[alice, bob]);
    check_listeners(t, alice, new_ip);
}

/// No call of these agents was disconnected (in what was read so far).
pub fn assert_no_call_ended(agents: &[&Proc]) {
    for agent in agents {
        let ended: Vec<Value> = agent
            .seen()
            .into_iter()
            .filter(|v| v["event"] == "call" && v["state"] == "disconnected")
            .collect();
        assert!(ended.is_empty(), "a call ended: {ended:?}");
    }
}

/// Alice's TCP and TLS listeners take a connection on `ip` (from the
/// server): they really listen there.
pub fn check_listeners(t: &Topology, alice: &Proc, ip: &str) {
    for transport in ["tcp", "tls"] {
        let port = alice_port(alice, transport, ip.contains(':'));
        assert!(
            t.tcp_reaches(ip, &port),
            "{transport} listener on {ip} port {port}"
        );
    }
}

/// The port of Alice's `transport` listener of a family: the one she
/// announced, or the one a change opened last.
pub fn alice_port(alice: &Proc, transport: &str, v6: bool) -> String {
    let family = |a: &str| a.starts_with('[') == v6;
    alice
        .seen()
        .iter()
        .rev()
        .find(|v| {
            (v["event"] == "listening" || v["stage"] == "restart_listener")
                && v["transport"] == transport
                && v["address"].as_str().is_some_and(family)
        })
        .and_then(|v| v["address"].as_str())
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .expect("alice's listener")
}
