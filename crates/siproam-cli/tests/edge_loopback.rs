//! `siproam edge` between real processes on loopback: an agent with
//! outbound over TCP through the edge to `siproam registrar`, with no
//! listener of its own (`--no-listen`): its binding carries the edge's
//! Path with `;ob`, the 2xx the edge's Flow-Timer, a call from a second
//! agent reaches it over its flow through the edge, and once its
//! connection is gone the edge answers the next call 430 (480 to Bob).
//! The edge answers a CRLFCRLF ping with CRLF and a STUN Binding request
//! on its UDP port; a bad
//! `--flow-key-file` is refused with a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn an_outbound_agent_registers_and_is_called_over_its_flow_through_the_edge() {
    const URN: &str = "urn:uuid:00000000-0000-1000-8000-0000000000e1";
    let dir = temp_dir("edge-loopback");
    let key_file = dir.join("flow.key");
    let (registrar, registrar_uri) = tcp_registrar(&[]);
    let edge = edge_before(
        &registrar_uri,
        &[
            "--listen",
            "udp:127.0.0.1:0",
            "--flow-timer",
            "20",
            "--flow-key-file",
            key_file.to_str().unwrap(),
        ],
    );
    let edge_tcp = listening(&edge, "tcp");
    let edge_udp = listening(&edge, "udp");
    // the key file was made, 32 bytes, owner-only
    let meta = std::fs::metadata(&key_file).unwrap();
    assert_eq!(meta.len(), 32);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let mut alice = outbound_agent(
        "sip:alice@example.test",
        &registrar_uri,
        &edge_tcp,
        URN,
        &["--auto-answer"],
    );
    let reg = alice.wait_registered("alice");
    assert_eq!(reg["outbound"], true, "{reg}");
    // the edge's Flow-Timer in the 2xx: the flow keeps alive by it
    let up = alice.seen_or_wait("alice's flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    assert_eq!(up["flow_timer"], 20, "{up}");
    assert_eq!(up["remote"].as_str(), Some(edge_tcp.as_str()), "{up}");
    // the registrar's binding carries the edge's Path with a token and ;ob
    let binding = registrar.seen_or_wait("alice's binding", |v| {
        v["event"] == "binding" && v["contacts"].as_array().is_some_and(|c| !c.is_empty())
    });
    let path = binding["contacts"][0]["path"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let edge_host = edge_tcp.clone();
    assert!(
        path.contains(&format!("@{edge_host};transport=tcp;lr;ob")),
        "{path}"
    );
    assert_eq!(binding["contacts"][0]["instance"], URN, "{binding}");

    // Bob calls Alice: registrar → Path → edge → Alice's own connection
    let mut bob = agent_at(&registrar_uri, "bob", "tcp:127.0.0.1:0", &[]);
    bob.wait_registered("bob");
    bob.send("call sip:alice@example.test");
    alice.wait_call("alice", "confirmed");
    bob.wait_call("bob", "confirmed");
    // in-dialog: Bob's BYE comes back through the edge's Record-Route
    bob.send("hangup");
    alice.wait_call("alice", "disconnected");
    bob.wait_call("bob", "disconnected");

    // Alice's process (and so her connection) goes: her binding lives on
    // at the registrar, but the flow its Path names is gone: the edge
    // answers the registrar 430, and the registrar, with no other flow of
    // hers, answers Bob 480 (a 430 is for the proxy that chose the flow,
    // RFC 5626 §11.5: a caller would take it for its own flow failing)
    alice.child.kill().unwrap();
    let _ = alice.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    bob.send("call sip:alice@example.test");
    let failed = bob.wait_for("bob's second call fails", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    assert_eq!(failed["code"], 480, "{failed}");
    // the edge's own answer along the Path: 430 Flow Failed
    let mut direct = std::net::TcpStream::connect(&edge_tcp).unwrap();
    direct
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let me = direct.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:alice@example.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP {me};branch=z9hG4bK-along-path\r\n\
         Route: {path}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:bob@example.test>;tag=b9\r\n\
         To: <sip:alice@example.test>\r\n\
         Call-ID: along-path-1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    direct.write_all(options.as_bytes()).unwrap();
    let head = read_head(&mut direct);
    assert!(head.starts_with("SIP/2.0 430"), "{head}");

    // a CRLFCRLF ping on the edge's TCP port gets a CRLF pong at once
    let mut raw = std::net::TcpStream::connect(&edge_tcp).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    raw.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    // a STUN Binding request on its UDP port gets our mapped address
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let txid: u128 = 0x1234_5678_9abc_def0_1122_3344;
    udp.send_to(&siproam::core::stun::binding_request(txid), &edge_udp)
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    let (got_tx, mapped) = siproam::core::stun::binding_success_parts(&buf[..n]).unwrap();
    assert_eq!(got_tx, txid);
    assert_eq!(mapped, udp.local_addr().unwrap());

    bob.quit();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_flow_key_file_is_refused_with_a_clear_error() {
    let dir = temp_dir("edge-badkey");
    let key_file = dir.join("flow.key");
    std::fs::write(&key_file, b"not a key").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args([
            "edge",
            "--listen",
            "tcp:127.0.0.1:0",
            "--registrar",
            "sip:127.0.0.1:5060;transport=tcp",
            "--flow-key-file",
            key_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("9 bytes, a key is exactly 32"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["edge", "--registrar", "mailto:x@y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_registrar_puts_its_flow_timer_in_the_outbound_2xx() {
    let (_registrar, registrar_uri) = tcp_registrar(&["--flow-timer", "15"]);
    let mut alice = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &registrar_uri,
        "--outbound",
        "--instance-id",
        "urn:uuid:00000000-0000-1000-8000-0000000000e2",
        "--no-listen",
    ]);
    let up = alice.wait_for("alice's flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    assert_eq!(up["flow_timer"], 15, "{up}");
    alice.quit();
    // a zero is refused as bad usage
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["registrar", "--flow-timer", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// An outbound REGISTER of carol's instance from `s`'s address.
fn raw_register(s: &mut std::net::TcpStream, cseq: u32, call_id: &str) -> String {
    let me = s.local_addr().unwrap();
    let register = format!(
        "REGISTER sip:example.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP {me};branch=z9hG4bK-raw{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@example.test>;tag=c1\r\n\
         To: <sip:carol@example.test>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:carol@{me};transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-0000000000e3>\"\r\n\
         Supported: outbound, path\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    s.write_all(register.as_bytes()).unwrap();
    read_head(s)
}

/// True once the peer closed the stream (bounded wait).
fn closed_by_peer(s: &mut std::net::TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // pongs, stray bytes
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The edge's clean-up through the driver: a registered flow that pings
/// stays up past its Flow-Timer + grace (the pings reach the edge's
/// clock), and is closed once the pings stop; a flow without Flow-Timer
/// is closed after --flow-idle.
#[test]
fn the_edge_closes_a_flow_whose_pings_stop_and_keeps_one_that_pings() {
    let (_registrar, registrar_uri) = tcp_registrar(&[]);
    let edge = edge_before(
        &registrar_uri,
        &["--flow-timer", "2", "--flow-grace", "1", "--flow-idle", "2"],
    );
    let edge_tcp = listening(&edge, "tcp");
    let mut raw = std::net::TcpStream::connect(&edge_tcp).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = raw_register(&mut raw, 1, "raw-reg-1");
    assert!(head.starts_with("SIP/2.0 200"), "{head}");
    assert!(head.contains("\r\nFlow-Timer: 2\r\n"), "{head}");
    // eight pings a second apart: twice the 3 s it may stay silent
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        raw.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        raw.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n", "the flow stays up while it pings");
    }
    // silence: closed by the edge
    assert!(closed_by_peer(&mut raw, Duration::from_secs(30)));

    // a flow that carried a message but registered nothing: --flow-idle
    let mut other = std::net::TcpStream::connect(&edge_tcp).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let me = other.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{edge_tcp};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {me};branch=z9hG4bK-raw2;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@example.test>;tag=c2\r\n\
         To: <sip:{edge_tcp}>\r\n\
         Call-ID: raw-opt-1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    other.write_all(options.as_bytes()).unwrap();
    let head = read_head(&mut other);
    assert!(head.starts_with("SIP/2.0 200"), "{head}");
    assert!(closed_by_peer(&mut other, Duration::from_secs(30)));
}

/// `--aggressive-gc`: the same instance and reg-id registered over a new
/// connection closes the old one at once (without it, the old one stays).
#[test]
fn aggressive_gc_closes_the_older_flow_of_a_registration() {
    for aggressive in [false, true] {
        // a registrar of each run's own: the raw REGISTERs reuse their
        // Call-ID and CSeqs (a lower CSeq again would be 500)
        let (_registrar, registrar_uri) = tcp_registrar(&[]);
        let extra: &[&str] = if aggressive {
            &["--aggressive-gc"]
        } else {
            &[]
        };
        let edge = edge_before(&registrar_uri, extra);
        let edge_tcp = listening(&edge, "tcp");
        // a phone of its own each round (the first round's binding lives
        // on at the registrar: its CSeq must not go back)
        let call_id = format!("raw-reg-{aggressive}");
        let mut old = std::net::TcpStream::connect(&edge_tcp).unwrap();
        old.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = raw_register(&mut old, 1, &call_id);
        assert!(head.starts_with("SIP/2.0 200"), "{head}");
        let mut new = std::net::TcpStream::connect(&edge_tcp).unwrap();
        new.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = raw_register(&mut new, 2, &call_id);
        assert!(head.starts_with("SIP/2.0 200"), "{head}");
        if aggressive {
            assert!(closed_by_peer(&mut old, Duration::from_secs(30)));
        } else {
            // still answers a ping
            old.write_all(b"\r\n\r\n").unwrap();
            let mut pong = [0u8; 2];
            old.read_exact(&mut pong).unwrap();
            assert_eq!(&pong, b"\r\n");
        }
        new.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        new.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n");
    }
}

/// `siproam edge --config FILE`: its settings come from the TOML file
/// (here the listener, the registrar and the Flow-Timer the 2xx carries),
/// a flag wins over the file, and a store the edge does not have is bad
/// usage.
#[test]
fn the_edge_takes_its_settings_from_the_config_file_and_flags_win() {
    let dir = temp_dir("edge-config");
    let (_registrar, registrar_uri) = tcp_registrar(&[]);
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "json = true\nlisten = [\"tcp:127.0.0.1:0\"]\n\
             registrar = \"{registrar_uri}\"\nflow-timer = 7\n\
             flow-grace = 5\nstore = \"memory\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut cseq = 0;
    for (flags, flow_timer) in [(&[][..], 7), (&["--flow-timer", "9"][..], 9)] {
        let mut args = vec!["edge", "--config", config];
        args.extend_from_slice(flags);
        let edge = Proc::spawn(&args);
        let edge_tcp = listening(&edge, "tcp");
        let mut raw = std::net::TcpStream::connect(&edge_tcp).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        cseq += 1;
        let head = raw_register(&mut raw, cseq, "raw-config-1");
        assert!(head.starts_with("SIP/2.0 200"), "{head}");
        assert!(
            head.contains(&format!("\r\nFlow-Timer: {flow_timer}\r\n")),
            "{head}"
        );
    }
    for extra in [
        &["--store", "redis://127.0.0.1:1"][..],
        &["--flow-idle", "0"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siproam"))
            .args(["edge", "--config", config])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["edge", "--listen", "tcp:127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--registrar URI is required"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
