//! `siproam agent` flow options on loopback: the kernel's TCP keep-alive
//! (`--tcp-keepalive`), an agent with no listener (`--no-listen`) and the
//! instance id kept per AoR (`--state-dir`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

fn listening(p: &Proc, transport: &str) -> String {
    p.wait_for(&format!("{transport} listener"), |v| {
        v["event"] == "listening" && v["transport"] == transport
    })["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn registered(agent: &Proc) -> String {
    agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    })["contact"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `siproam ARGS` run to its end: (exit code, stderr).
fn run_siproam(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `/proc/net/tcp` line of the connection from `local` to `remote`,
/// split into fields (addresses as little-endian hex).
#[cfg(target_os = "linux")]
fn proc_tcp_line(
    local: std::net::SocketAddrV4,
    remote: std::net::SocketAddrV4,
) -> Option<Vec<String>> {
    let hex = |a: std::net::SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        )
    };
    let (l, r) = (hex(local), hex(remote));
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|f| f.len() > 5 && f[1] == l && f[2] == r)
}

#[test]
fn bad_tcp_keepalive_values_and_no_listen_with_listen_are_bad_usage() {
    for bad in ["0,10,5", "60,10", "60,10,200", "x,y,z"] {
        let (code, err) = run_siproam(&[
            "agent",
            "--aor",
            "sip:a@example.test",
            "--tcp-keepalive",
            bad,
        ]);
        assert_eq!(code, Some(2), "--tcp-keepalive {bad}: {err}");
        assert!(err.contains("tcp-keepalive"), "{err}");
    }
    let (_, err) = run_siproam(&["agent", "--tcp-keepalive", "0,10,5"]);
    assert!(
        err.contains("the idle time (seconds) must be between 1 and 32767, not 0"),
        "{err}"
    );
    // the same in the config file
    let dir = temp_dir("tcp-keepalive-config");
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        "aor = \"sip:a@example.test\"\ntcp-keepalive = \"60,0,5\"\n",
    )
    .unwrap();
    let (code, err) = run_siproam(&["agent", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("tcp-keepalive") && err.contains("interval"),
        "{err}"
    );
    // --no-listen and --listen exclude each other, in the file too
    let (code, err) = run_siproam(&["agent", "--no-listen", "--listen", "udp:127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    std::fs::write(&cfg, "no-listen = true\nlisten = [\"udp:127.0.0.1:0\"]\n").unwrap();
    let (code, err) = run_siproam(&["agent", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no-listen"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(target_os = "linux")]
#[test]
fn the_agents_tcp_registration_connection_carries_the_kernel_keepalive() {
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "tcp:127.0.0.1:0"]);
    let addr = listening(&registrar, "tcp");
    let uri = format!("sip:{addr};transport=tcp");
    let dir = temp_dir("tcp-keepalive-file");
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, "tcp-keepalive = \"45,7,3\"\n").unwrap();
    // from the config file; no TCP listener: the Contact is the connection
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--listen",
        "udp:127.0.0.11:0",
        "--stay",
    ]);
    let contact = registered(&agent);
    let local: std::net::SocketAddrV4 = contact
        .strip_prefix("sip:alice@")
        .and_then(|c| c.strip_suffix(";transport=tcp"))
        .unwrap_or_else(|| panic!("unexpected contact {contact}"))
        .parse()
        .unwrap();
    let line = proc_tcp_line(local, addr.parse().unwrap())
        .unwrap_or_else(|| panic!("no connection {local} -> {addr}"));
    // "tr:tm->when": timer 2 is the keep-alive timer, due within the idle
    // time (in hundredths of a second)
    let (timer, when) = line[5].split_once(':').unwrap();
    assert_eq!(
        timer, "02",
        "no keep-alive timer on the connection: {line:?}"
    );
    let when = u64::from_str_radix(when, 16).unwrap();
    assert!(
        when > 0 && when <= 4500,
        "keep-alive due in {when}/100 s: {line:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The registrar takes `--tcp-keepalive` (and `tcp-keepalive` in its
/// file) as the agent does: a connection it accepts carries the kernel's
/// keep-alive timer, due within the idle time; bad values are bad usage.
#[cfg(target_os = "linux")]
#[test]
fn the_registrars_accepted_connections_carry_the_kernel_keepalive() {
    let dir = temp_dir("registrar-tcp-keepalive");
    let cfg = dir.join("registrar.toml");
    std::fs::write(&cfg, "tcp-keepalive = \"45,7,3\"\n").unwrap();
    let from_flag = ["--tcp-keepalive", "45,7,3"];
    let from_file = ["--config", cfg.to_str().unwrap()];
    for (how, args) in [("flag", from_flag), ("file", from_file)] {
        let mut argv = vec!["registrar", "--json", "--listen", "tcp:127.0.0.1:0"];
        argv.extend(args);
        let registrar = Proc::spawn(&argv);
        let addr: std::net::SocketAddrV4 = listening(&registrar, "tcp").parse().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let std::net::SocketAddr::V4(local) = client.local_addr().unwrap() else {
            panic!("an IPv4 connection");
        };
        // the accepted side: its options are set as it is accepted
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let line = loop {
            let line = proc_tcp_line(addr, local);
            let armed = line.as_ref().is_some_and(|f| f[5].starts_with("02:"));
            if armed || std::time::Instant::now() > deadline {
                break line.unwrap_or_else(|| panic!("{how}: no connection {addr} -> {local}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let (timer, when) = line[5].split_once(':').unwrap();
        assert_eq!(
            timer, "02",
            "{how}: no keep-alive timer on the accepted connection: {line:?}"
        );
        let when = u64::from_str_radix(when, 16).unwrap();
        assert!(
            when > 0 && when <= 4500,
            "{how}: keep-alive due in {when}/100 s: {line:?}"
        );
        drop(client);
    }
    for bad in ["0,10,5", "60,10", "x,y,z"] {
        let (code, err) = run_siproam(&["registrar", "--tcp-keepalive", bad]);
        assert_eq!(code, Some(2), "--tcp-keepalive {bad}: {err}");
        assert!(err.contains("tcp-keepalive"), "{err}");
    }
    std::fs::write(&cfg, "tcp-keepalive = \"60,0,5\"\n").unwrap();
    let (code, err) = run_siproam(&["registrar", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("tcp-keepalive") && err.contains("interval"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The registrar's binding event for Alice once it names `contact`.
fn binding_with(registrar: &Proc, contact: &str) -> serde_json::Value {
    registrar.wait_for(&format!("a binding of {contact}"), |v| {
        v["event"] == "binding"
            && v["aor"] == "sip:alice@example.test"
            && v["contacts"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["contact"] == contact))
    })
}

#[test]
fn a_restarted_agent_keeps_its_instance_and_replaces_its_binding() {
    let dir = temp_dir("state-dir");
    let state = dir.join("state");
    let state = state.to_str().unwrap();
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let uri = format!("sip:{}", listening(&registrar, "udp"));
    let agent = |ip: &str| {
        Proc::spawn(&[
            "agent",
            "--json",
            "--aor",
            "sip:alice@example.test",
            "--registrar",
            &uri,
            "--listen",
            &format!("udp:{ip}:0"),
            "--state-dir",
            state,
            "--stay",
        ])
    };
    let first = agent("127.0.0.12");
    let contact = registered(&first);
    let binding = binding_with(&registrar, &contact);
    let instance = binding["contacts"][0]["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(instance.starts_with("urn:uuid:"), "{binding}");
    // killed, not quit: its binding stays at the registrar
    drop(first);
    let second = agent("127.0.0.13");
    let contact = registered(&second);
    let binding = binding_with(&registrar, &contact);
    let contacts = binding["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 1, "the old binding was replaced: {binding}");
    assert_eq!(contacts[0]["instance"], instance.as_str(), "{binding}");
    // one file, named without the AoR, holding that id, the owner's alone
    let files: Vec<_> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        !name.contains("alice") && !name.contains("example"),
        "{name}"
    );
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap().trim(), instance);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(std::path::Path::new(state)), 0o700);
        assert_eq!(mode(&files[0]), 0o600);
    }
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

/// The inodes of the sockets process `pid` holds.
#[cfg(target_os = "linux")]
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect()
}

/// The lines of `/proc/net/{table}` (split) of the sockets of `pid`.
#[cfg(target_os = "linux")]
fn sockets_of(pid: u32, table: &str) -> Vec<Vec<String>> {
    let inodes = socket_inodes(pid);
    std::fs::read_to_string(format!("/proc/net/{table}"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && inodes.contains(&f[9]))
        .collect()
}

/// `/proc/net` hex `0100007F:1F90` to `127.0.0.1:8080`.
#[cfg(target_os = "linux")]
fn from_hex(a: &str) -> std::net::SocketAddrV4 {
    let (ip, port) = a.split_once(':').unwrap();
    let ip = u32::from_str_radix(ip, 16).unwrap().to_le_bytes();
    std::net::SocketAddrV4::new(ip.into(), u16::from_str_radix(port, 16).unwrap())
}

/// Alice with `--no-listen` registers over `transport`: her Contact is her
/// flow's own address, she announces no listener and holds no listening
/// TCP socket, and Bob's call reaches her over that flow.
#[cfg(target_os = "linux")]
fn no_listen_over(transport: &str) {
    let dir = temp_dir(&format!("no-listen-{transport}"));
    let (ca, cert, key) = certificates(&dir);
    let (ca, cert, key) = (
        ca.to_str().unwrap().to_owned(),
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    );
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        &format!("{transport}:127.0.0.1:0"),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let addr = listening(&registrar, transport);
    let uri = match transport {
        "udp" => format!("sip:{addr}"),
        _ => format!("sip:{addr};transport={transport}"),
    };
    // over UDP from the config file, over TCP/TLS from the flag
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, "no-listen = true\nstay = true\n").unwrap();
    let no_listen = match transport {
        "udp" => ["--config", cfg.to_str().unwrap()],
        _ => ["--no-listen", "--stay"],
    };
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--no-watch",
        "--auto-answer",
        "--ca",
        &ca,
    ];
    args.extend_from_slice(&no_listen);
    let alice = Proc::spawn(&args);
    let contact = registered(&alice);
    let pid = alice.child.id();
    let suffix = match transport {
        "udp" => String::new(),
        t => format!(";transport={t}"),
    };
    let named: std::net::SocketAddrV4 = contact
        .strip_prefix("sip:alice@")
        .and_then(|c| c.strip_suffix(suffix.as_str()))
        .unwrap_or_else(|| panic!("unexpected contact {contact}"))
        .parse()
        .unwrap();
    assert!(
        alice.seen().iter().all(|v| v["event"] != "listening"),
        "{:?}",
        alice.seen()
    );
    let tcp = sockets_of(pid, "tcp");
    assert!(
        tcp.iter().all(|f| f[3] != "0A"),
        "a listening TCP socket: {tcp:?}"
    );
    let registrar_addr: std::net::SocketAddrV4 = addr.parse().unwrap();
    if transport == "udp" {
        // the one socket towards the registrar, on a port the OS chose
        let udp: Vec<_> = sockets_of(pid, "udp")
            .iter()
            .map(|f| from_hex(&f[1]))
            .collect();
        assert_eq!(udp, vec![named], "her UDP sockets");
    } else {
        // the Contact is her end of the connection to the registrar
        let flows: Vec<_> = tcp
            .iter()
            .filter(|f| f[3] == "01")
            .map(|f| (from_hex(&f[1]), from_hex(&f[2])))
            .collect();
        assert_eq!(flows, vec![(named, registrar_addr)], "her connections");
    }
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &uri,
        "--listen",
        "udp:127.0.0.21:0",
        "--no-watch",
        "--ca",
        &ca,
    ]);
    registered(&bob);
    bob.send("call sip:alice@example.test");
    alice.wait_for("alice's call confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    bob.wait_for("bob's call confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    // still no listener, and no connection but the flow
    assert!(sockets_of(pid, "tcp").iter().all(|f| f[3] != "0A"));
    if transport != "udp" {
        let flows: Vec<_> = sockets_of(pid, "tcp")
            .iter()
            .filter(|f| f[3] == "01")
            .map(|f| (from_hex(&f[1]), from_hex(&f[2])))
            .collect();
        assert_eq!(
            flows,
            vec![(named, registrar_addr)],
            "the call came over the flow"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(target_os = "linux")]
#[test]
fn an_agent_with_no_listener_registers_and_is_called_over_its_tcp_flow() {
    no_listen_over("tcp");
}

#[cfg(target_os = "linux")]
#[test]
fn an_agent_with_no_listener_registers_and_is_called_over_its_tls_flow() {
    no_listen_over("tls");
}

#[cfg(target_os = "linux")]
#[test]
fn an_agent_with_no_listener_registers_and_is_called_over_its_udp_socket() {
    no_listen_over("udp");
}

/// A CA, and a server certificate for `a.example.test` and
/// `*.b.example.test`, as PEM files (ca, cert, key).
fn san_certificates(dir: &std::path::Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "siproam test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![
        "a.example.test".to_owned(),
        "*.b.example.test".to_owned(),
    ])
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = [
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ];
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    (s(&paths[0]), s(&paths[1]), s(&paths[2]))
}

/// Connections the server on `addr` has accepted and holds open.
#[cfg(target_os = "linux")]
fn accepted_at(addr: std::net::SocketAddrV4) -> usize {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.len() > 3 && f[3] == "01" && from_hex(&f[1]) == addr)
        .count()
}

/// The code of the agent's next call that ends.
fn call_ended(agent: &Proc) -> Option<u64> {
    agent.wait_for("a call ended", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    })["code"]
        .as_u64()
}

/// RFC 5626 §4.3: a request to `x.b.example.test`, which the registrar's
/// certificate covers with `*.b.example.test`, goes over the connection
/// opened for `a.example.test` — although the name itself points at
/// another address, where nothing listens; `c.example.test`, not covered,
/// gets a connection of its own (to the registrar's second TLS listener,
/// same certificate), which verification refuses.
#[cfg(target_os = "linux")]
#[test]
fn a_request_to_a_domain_the_tls_certificate_covers_goes_over_the_open_connection() {
    let dir = temp_dir("tls-san");
    let (ca, cert, key) = san_certificates(&dir);
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tls:127.0.0.1:0",
        "--listen",
        "tls:127.0.0.3:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let addr: std::net::SocketAddrV4 = listening(&registrar, "tls").parse().unwrap();
    let second: std::net::SocketAddrV4 = listening(&registrar, "tls").parse().unwrap();
    let port = addr.port();
    let mut agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--ca",
        &ca,
        "--host",
        "a.example.test=127.0.0.1",
        "--host",
        "x.b.example.test=127.0.0.2",
        "--host",
        "c.example.test=127.0.0.3",
        "--listen",
        "udp:127.0.0.22:0",
        "--no-watch",
        "--stay",
    ]);
    // bob is not registered: the registrar's answer ends each call
    agent.send(&format!("call sip:bob@a.example.test:{port};transport=tls"));
    let answer = call_ended(&agent);
    assert!(
        answer.is_some_and(|c| c != 503 && c != 408),
        "the registrar answered: {answer:?}"
    );
    assert_eq!(accepted_at(addr), 1);
    agent.send(&format!(
        "call sip:bob@x.b.example.test:{port};transport=tls"
    ));
    assert_eq!(
        call_ended(&agent),
        answer,
        "x.b.example.test reached the registrar"
    );
    assert_eq!(accepted_at(addr), 1, "over the same connection");
    let port = second.port();
    agent.send(&format!("call sip:bob@c.example.test:{port};transport=tls"));
    let refused = call_ended(&agent);
    assert_eq!(refused, Some(503), "c.example.test is not the registrar's");
    assert_eq!(accepted_at(addr), 1);
    assert_eq!(accepted_at(second), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// RFC 5626 §4.3 / RFC 5922 §7: `c.example.test` resolves to the very
/// address of the open TLS connection to `a.example.test`, but the
/// certificate does not cover it: a request for it must not go over that
/// connection (the core picked flows by address alone and reused it) — it
/// gets a connection of its own, which verification refuses. Names the
/// certificate covers (`a.example.test` itself, `x.b.example.test` by its
/// wildcard) keep going over the one connection.
#[cfg(target_os = "linux")]
#[test]
fn a_name_at_the_same_address_that_the_certificate_does_not_cover_gets_no_reuse() {
    let dir = temp_dir("tls-same-addr");
    let (ca, cert, key) = san_certificates(&dir);
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tls:127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let addr: std::net::SocketAddrV4 = listening(&registrar, "tls").parse().unwrap();
    let port = addr.port();
    let mut agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--ca",
        &ca,
        "--host",
        "a.example.test=127.0.0.1",
        "--host",
        "c.example.test=127.0.0.1",
        "--host",
        "x.b.example.test=127.0.0.1",
        "--listen",
        "udp:127.0.0.23:0",
        "--no-watch",
        "--stay",
    ]);
    // bob is not registered: the registrar's answer ends each call
    agent.send(&format!("call sip:bob@a.example.test:{port};transport=tls"));
    let answer = call_ended(&agent);
    assert!(
        answer.is_some_and(|c| c != 503 && c != 408),
        "the registrar answered: {answer:?}"
    );
    assert_eq!(accepted_at(addr), 1);
    agent.send(&format!("call sip:bob@c.example.test:{port};transport=tls"));
    assert_eq!(
        call_ended(&agent),
        Some(503),
        "c.example.test did not reach the registrar over a.example.test's connection"
    );
    for name in ["a.example.test", "x.b.example.test"] {
        agent.send(&format!("call sip:bob@{name}:{port};transport=tls"));
        assert_eq!(call_ended(&agent), answer, "{name} reached the registrar");
    }
    // the refused connection goes; the first one stays the only one
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while accepted_at(addr) != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(accepted_at(addr), 1, "one connection carried them all");
    let _ = std::fs::remove_dir_all(dir);
}

/// An agent with no listener moves with its address: after `ip-change`
/// its Contact is its new flow's own address, and it still listens on
/// nothing.
#[cfg(target_os = "linux")]
#[test]
fn an_agent_with_no_listener_moves_its_flow_on_an_address_change() {
    for transport in ["udp", "tcp"] {
        let registrar = Proc::spawn(&[
            "registrar",
            "--json",
            "--listen",
            &format!("{transport}:127.0.0.1:0"),
        ]);
        let addr = listening(&registrar, transport);
        let uri = match transport {
            "udp" => format!("sip:{addr}"),
            t => format!("sip:{addr};transport={t}"),
        };
        let mut alice = Proc::spawn(&[
            "agent",
            "--json",
            "--aor",
            "sip:alice@example.test",
            "--registrar",
            &uri,
            "--no-listen",
            "--no-watch",
            "--stay",
        ]);
        let before = registered(&alice);
        assert!(before.starts_with("sip:alice@127.0.0.1:"), "{before}");
        alice.send("ip-change 127.0.0.24");
        let after = alice.wait_for("registered from the new address", |v| {
            v["event"] == "registration"
                && v["state"] == "registered"
                && v["contact"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("sip:alice@127.0.0.24:"))
        });
        alice.wait_for("completed", |v| {
            v["event"] == "ip_change" && v["stage"] == "completed" && v["status"] == "ok"
        });
        let contact = after["contact"].as_str().unwrap();
        let pid = alice.child.id();
        let tcp = sockets_of(pid, "tcp");
        assert!(tcp.iter().all(|f| f[3] != "0A"), "{transport}: {tcp:?}");
        let named: std::net::SocketAddrV4 = contact
            .strip_prefix("sip:alice@")
            .map(|c| c.split(';').next().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        if transport == "udp" {
            // (the old socket lingers a moment for late answers)
            let old: std::net::SocketAddrV4 =
                before.strip_prefix("sip:alice@").unwrap().parse().unwrap();
            let mut udp: Vec<_> = sockets_of(pid, "udp")
                .iter()
                .map(|f| from_hex(&f[1]))
                .collect();
            udp.retain(|a| *a != old);
            assert_eq!(udp, vec![named], "{transport}");
        } else {
            let flows: Vec<_> = tcp
                .iter()
                .filter(|f| f[3] == "01")
                .map(|f| from_hex(&f[1]))
                .collect();
            assert_eq!(flows, vec![named], "{transport}");
        }
    }
}
