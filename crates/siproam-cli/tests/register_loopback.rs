//! `siproam registrar` and `siproam agent` on loopback: digest
//! registration over UDP, TCP and TLS (certificates made here with rcgen),
//! checked from both sides' JSON events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

fn listening(p: &Proc, transport: &str) -> String {
    p.wait_for(&format!("{transport} listener"), |v| {
        v["event"] == "listening" && v["transport"] == transport
    })["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn register_over(
    transport: &str,
    registrar_uri: impl Fn(&str) -> String,
    extra_registrar: &[&str],
    extra_agent: &[&str],
    agent_listen: &[&str],
) {
    let dir = temp_dir(transport);
    let users = dir.join("users.txt");
    std::fs::write(&users, "alice:alicepw\n").unwrap();
    let listen = format!("{transport}:127.0.0.1:0");
    let mut reg_args = vec![
        "registrar",
        "--json",
        "--listen",
        &listen,
        "--users",
        users.to_str().unwrap(),
        "--domain",
        "example.test",
    ];
    reg_args.extend_from_slice(extra_registrar);
    let registrar = Proc::spawn(&reg_args);
    let addr = listening(&registrar, transport);
    let uri = registrar_uri(&addr);
    let mut agent_args = vec![
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--password",
        "alicepw",
    ];
    for l in agent_listen {
        agent_args.extend_from_slice(&["--listen", l]);
    }
    agent_args.extend_from_slice(extra_agent);
    let mut agent = Proc::spawn(&agent_args);
    let registered = agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    assert_eq!(registered["code"], 200);
    assert_eq!(registered["expires"], 600);
    let contact = registered["contact"].as_str().unwrap().to_owned();
    assert!(contact.starts_with("sip:alice@127.0.0."), "{contact}");
    // the registrar holds exactly that contact
    let binding = registrar.wait_for("binding", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
    });
    assert_eq!(binding["aor"], "sip:alice@example.test");
    assert_eq!(binding["contacts"][0]["contact"], contact.as_str());
    // status repeats the state; quit unregisters and exits cleanly
    agent.send("status");
    agent.wait_for("status", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    agent.send("quit");
    agent.wait_for("unregistered", |v| {
        v["event"] == "registration" && v["state"] == "unregistered"
    });
    let status = agent.child.wait().unwrap();
    assert!(status.success());
    let gone = registrar.wait_for("binding removed", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| c.is_empty())
    });
    assert_eq!(gone["aor"], "sip:alice@example.test");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn register_over_udp() {
    register_over(
        "udp",
        |a| format!("sip:{a}"),
        &[],
        &[],
        &["udp:127.0.0.2:0"],
    );
}

#[test]
fn register_over_tcp() {
    register_over(
        "tcp",
        |a| format!("sip:{a};transport=tcp"),
        &[],
        &[],
        &["udp:127.0.0.3:0", "tcp:127.0.0.3:0"],
    );
}

#[test]
fn register_over_tls() {
    let dir = temp_dir("tls-certs");
    let (ca, cert, key) = certificates(&dir);
    let (ca, cert, key) = (
        ca.to_str().unwrap().to_owned(),
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    );
    register_over(
        "tls",
        |a| format!("sip:{a};transport=tls"),
        &["--tls-cert", &cert, "--tls-key", &key],
        &["--ca", &ca],
        &["udp:127.0.0.4:0"],
    );
}

#[test]
fn tls_registrar_with_an_untrusted_certificate_is_refused() {
    let dir = temp_dir("tls-untrusted");
    let (_ca, cert, key) = certificates(&dir);
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tls:127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = listening(&registrar, "tls");
    let uri = format!("sip:{addr};transport=tls");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--listen",
        "udp:127.0.0.5:0",
        "--stay",
    ]);
    let failed = agent.wait_for("failure", |v| {
        v["event"] == "registration" && v["state"] == "failed"
    });
    assert_eq!(
        failed["code"], 503,
        "the TLS handshake fails: a transport error"
    );
}

#[test]
fn many_accounts_over_one_tcp_connection_all_register() {
    // regression: with hundreds of REGISTERs queued behind one connect, the
    // connection's send queue overflowed and the extra messages were lost
    // (streams have no retransmission), so some accounts never registered
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args([
            "bench",
            "register",
            "--accounts",
            "3000",
            "--transport",
            "tcp",
            "--window",
            "1000",
            "--json",
        ])
        .output()
        .unwrap();
    let v: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(v["registered"], 3000, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert!(out.status.success());
}

#[test]
fn settings_from_a_config_file_and_flags_win() {
    let dir = temp_dir("config");
    let users = dir.join("users.txt");
    std::fs::write(&users, "carol:carolpw\n").unwrap();
    let reg_cfg = dir.join("registrar.toml");
    std::fs::write(&reg_cfg, format!("json = true\nlisten = [\"udp:127.0.0.1:0\"]\nusers = {:?}\ndomain = \"example.test\"\n", users.to_str().unwrap())).unwrap();
    let registrar = Proc::spawn(&["registrar", "--config", reg_cfg.to_str().unwrap()]);
    let addr = listening(&registrar, "udp");
    let agent_cfg = dir.join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!("json = true\naor = \"sip:carol@example.test\"\nregistrar = \"sip:{addr}\"\npassword = \"wrong\"\nexpires = 300\nlisten = [\"udp:127.0.0.6:0\"]\n"),
    )
    .unwrap();
    // the flag's password beats the file's
    let agent = Proc::spawn(&[
        "agent",
        "--config",
        agent_cfg.to_str().unwrap(),
        "--password",
        "carolpw",
    ]);
    let r = agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    assert_eq!(r["expires"], 300);
    assert!(r["contact"]
        .as_str()
        .unwrap()
        .starts_with("sip:carol@127.0.0.6:"));
    // an unknown setting is bad usage
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "colour = \"blue\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["agent", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
    // so is a bad value of a known one (regression: it exited 1)
    std::fs::write(&bad, "ipv6-sip = \"sometimes\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["agent", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sometimes"));
    drop(agent);
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether a TCP connection from `local` to `remote` is established (from
/// /proc/net/tcp: addresses as little-endian hex).
#[cfg(target_os = "linux")]
fn tcp_established(local: std::net::SocketAddrV4, remote: std::net::SocketAddrV4) -> bool {
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
        .any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3 && f[1] == l && f[2] == r && f[3] == "01"
        })
}

#[cfg(target_os = "linux")]
#[test]
fn a_tls_registration_without_a_tls_listener_names_its_connection_in_the_contact() {
    // regression: the Contact carried the UDP listener's port with
    // transport=tls, where nothing of ours listens for TLS
    let dir = temp_dir("tls-contact");
    let (ca, cert, key) = certificates(&dir);
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tls:127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = listening(&registrar, "tls");
    let uri = format!("sip:{addr};transport=tls");
    let agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--ca",
        ca.to_str().unwrap(),
        "--listen",
        "udp:127.0.0.7:0",
        "--stay",
    ]);
    let udp = listening(&agent, "udp");
    let registered = agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let contact = registered["contact"].as_str().unwrap().to_owned();
    let binding = registrar.wait_for("binding", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
    });
    assert_eq!(binding["contacts"][0]["contact"], contact.as_str());
    let hostport = contact
        .strip_prefix("sip:alice@")
        .and_then(|c| c.strip_suffix(";transport=tls"))
        .unwrap_or_else(|| panic!("unexpected contact {contact}"));
    let named: std::net::SocketAddrV4 = hostport.parse().unwrap();
    assert_ne!(hostport, udp, "the UDP listener's port with transport=tls");
    // the Contact is the agent's own end of its TLS connection
    assert!(
        tcp_established(named, addr.parse().unwrap()),
        "{contact}: no connection from there to {addr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts `siproam ARGS` with its stderr lines on a channel.
fn spawn_reading_stderr(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(args)
        // the agent's instance id is kept here, not in the home directory
        .env("XDG_STATE_HOME", temp_dir("stderr-state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The first stderr line containing `needle` (bounded wait).
fn stderr_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no stderr line with {needle:?}: {e}"),
        }
    }
}

#[test]
fn a_refused_tls_handshake_is_logged_with_its_reason_at_the_default_level() {
    // regression: the reason (unknown issuer) showed only at debug level
    let dir = temp_dir("tls-refusal-log");
    let (_ca, cert, key) = certificates(&dir);
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tls:127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = listening(&registrar, "tls");
    let uri = format!("sip:{addr};transport=tls");
    let (mut agent, lines) = spawn_reading_stderr(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--listen",
        "udp:127.0.0.8:0",
        "--stay",
    ]);
    let line = stderr_line(&lines, "TLS handshake");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(line.contains("127.0.0.1"), "{line}");
    assert!(!line.contains("alice"), "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Alice registers (digest) with a password given by `how`; the first
/// registration event that is not `registering`.
fn register_with_password(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let dir = temp_dir(name);
    let users = dir.join("users.txt");
    std::fs::write(&users, "alice:s3cret pw\n").unwrap();
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "udp:127.0.0.1:0",
        "--users",
        users.to_str().unwrap(),
        "--domain",
        "example.test",
    ]);
    let addr = listening(&registrar, "udp");
    let uri = format!("sip:{addr}");
    let mut args = vec![
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--listen",
        "udp:127.0.0.9:0",
        "--stay",
    ];
    let pw_file = dir.join("password");
    std::fs::write(&pw_file, "s3cret pw\n").unwrap();
    let pw_path = pw_file.to_str().unwrap().to_owned();
    for a in extra {
        args.push(if *a == "PWFILE" { &pw_path } else { a });
    }
    let agent = Proc::spawn_with_env(&args, env);
    let v = agent.wait_for("registration outcome", |v| {
        v["event"] == "registration" && v["state"] != "registering"
    });
    let _ = std::fs::remove_dir_all(dir);
    v
}

#[test]
fn the_password_comes_from_a_file_or_the_environment() {
    let from_file = register_with_password("pw-file", &["--password-file", "PWFILE"], &[]);
    assert_eq!(from_file["state"], "registered", "{from_file}");
    let from_env = register_with_password("pw-env", &[], &[("SIPROAM_PASSWORD", "s3cret pw")]);
    assert_eq!(from_env["state"], "registered", "{from_env}");
    // the flag wins over the environment; a wrong one fails
    let wrong = register_with_password(
        "pw-wrong",
        &["--password", "wrong"],
        &[("SIPROAM_PASSWORD", "s3cret pw")],
    );
    assert_eq!(wrong["state"], "failed", "{wrong}");
}

#[test]
fn a_password_on_the_command_line_is_warned_about() {
    let (mut agent, lines) = spawn_reading_stderr(&[
        "agent",
        "-v",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        "sip:127.0.0.1:9",
        "--listen",
        "udp:127.0.0.10:0",
        "--password",
        "s3cret",
        "--stay",
    ]);
    let line = stderr_line(&lines, "--password");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(line.contains("process list"), "{line}");
    assert!(line.contains("SIPROAM_PASSWORD"), "{line}");
    assert!(!line.contains("s3cret"), "{line}");
}

#[cfg(target_os = "linux")]
#[test]
fn after_an_ip_change_a_tls_registration_without_a_tls_listener_names_its_new_connection() {
    let dir = temp_dir("tls-contact-move");
    let (ca, cert, key) = certificates(&dir);
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "tls:127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = listening(&registrar, "tls");
    let uri = format!("sip:{addr};transport=tls");
    let mut agent = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &uri,
        "--ca",
        ca.to_str().unwrap(),
        "--listen",
        "udp:127.0.0.11:0",
        "--no-watch",
        "--stay",
    ]);
    agent.wait_for("registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    agent.send("ip-change 127.0.0.12");
    let moved = agent.wait_for("registered on the new address", |v| {
        v["event"] == "registration"
            && v["state"] == "registered"
            && v["contact"]
                .as_str()
                .is_some_and(|c| c.contains("127.0.0.12"))
    });
    let contact = moved["contact"].as_str().unwrap().to_owned();
    let hostport = contact
        .strip_prefix("sip:alice@")
        .and_then(|c| c.strip_suffix(";transport=tls"))
        .unwrap_or_else(|| panic!("unexpected contact {contact}"));
    let named: std::net::SocketAddrV4 = hostport.parse().unwrap();
    assert!(
        tcp_established(named, addr.parse().unwrap()),
        "{contact}: no connection from there to {addr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `siproam agent --outbound --reg-id 2 --instance-id URN` against
/// `siproam registrar` (which grants outbound): the binding carries the
/// instance and reg-id, and the agent reports outbound in force; the same
/// from a `--config` file; without `--outbound` the agent registers as a
/// normal client.
#[test]
fn an_agent_with_outbound_registers_its_instance_and_reg_id_and_outbound_is_in_force() {
    const URN: &str = "urn:uuid:00000000-0000-1000-8000-0000000000c1";
    let dir = temp_dir("outbound");
    let file = dir.join("agent.toml");
    std::fs::write(
        &file,
        format!("outbound = true\nreg-id = 3\ninstance-id = \"{URN}\"\n"),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // (extra agent arguments, local address, reg-id expected)
    let cases: [(&[&str], &str, Option<u32>); 3] = [
        (
            &["--instance-id", URN, "--outbound", "--reg-id", "2"],
            "127.0.0.13",
            Some(2),
        ),
        (&["--config", file], "127.0.0.14", Some(3)),
        (&["--instance-id", URN], "127.0.0.15", None),
    ];
    for (extra, ip, reg_id) in cases {
        let registrar = Proc::spawn(&[
            "registrar",
            "--json",
            "--listen",
            "tcp:127.0.0.1:0",
            "--domain",
            "example.test",
        ]);
        let addr = listening(&registrar, "tcp");
        let uri = format!("sip:{addr};transport=tcp");
        let listen = format!("tcp:{ip}:0");
        let mut args = vec![
            "agent",
            "--json",
            "--aor",
            "sip:alice@example.test",
            "--registrar",
            &uri,
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        let mut agent = Proc::spawn(&args);
        let registered = agent.wait_for("registered", |v| {
            v["event"] == "registration" && v["state"] == "registered"
        });
        assert_eq!(registered["outbound"], reg_id.is_some(), "{registered}");
        let binding = registrar.wait_for("binding", |v| {
            v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
        });
        assert_eq!(binding["contacts"][0]["instance"], URN, "{binding}");
        assert_eq!(
            binding["contacts"][0]["reg_id"].as_u64(),
            reg_id.map(u64::from),
            "{binding}"
        );
        agent.quit();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A `binding` event says the bindings changed: a refresh (same Contact,
/// a new CSeq) is answered 200 and not reported, a new Contact is. (One
/// event per refresh cost more than the registration itself at
/// thousands a second.)
#[test]
fn a_refresh_is_answered_but_not_reported_as_a_binding_change() {
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "udp:127.0.0.1:0",
        "--domain",
        "example.test",
    ]);
    let addr: std::net::SocketAddr = listening(&registrar, "udp").parse().unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.7:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let register = |cseq: u32, port: u16| {
        let m = format!(
            "REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKref{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:rita@example.test>;tag=r1\r\nTo: <sip:rita@example.test>\r\n\
             Call-ID: refresh-test\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:rita@127.0.0.7:{port}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(m.as_bytes(), addr).unwrap();
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"SIP/2.0 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    };
    register(1, 5060);
    registrar.wait_for("the new binding", |v| {
        v["event"] == "binding" && v["aor"] == "sip:rita@example.test"
    });
    register(2, 5060);
    register(3, 5060);
    // a change after the refreshes: its event is the second one
    register(4, 5070);
    registrar.wait_for("the moved binding", |v| {
        v["event"] == "binding"
            && v["contacts"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|b| b["contact"].as_str().is_some_and(|s| s.ends_with(":5070")))
            })
    });
    let events = registrar
        .seen()
        .into_iter()
        .filter(|v| v["event"] == "binding")
        .count();
    assert_eq!(events, 2, "{:?}", registrar.seen());
}
