//! Calls between `siproam` processes on loopback: the demo, and two agents
//! through `siproam registrar` where the callee records the caller's tone
//! (measured with a Goertzel filter).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

#[test]
fn the_demo_passes() {
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["demo", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let done = events
        .iter()
        .find(|v| v["event"] == "demo" && v["stage"] == "completed")
        .unwrap();
    assert_eq!(done["state"], "passed");
    assert!(done["alice_rx_packets"].as_u64().unwrap() > 50);
    assert!(done["bob_rx_packets"].as_u64().unwrap() > 50);
    for stage in ["registration", "call", "media"] {
        assert!(
            events.iter().any(|v| v["event"] == stage),
            "no {stage} event"
        );
        assert!(events.iter().all(|v| v["t_ms"].is_number()));
    }
}

#[test]
fn an_agent_calls_another_through_the_registrar_and_the_tone_is_heard() {
    let dir = std::env::temp_dir().join(format!("siproam-calls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("bob.wav");
    let registrar = Proc::spawn(&["registrar", "--json", "--listen", "udp:127.0.0.1:0"]);
    let addr = registrar.wait_for("listener", |v| v["event"] == "listening")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let reg = format!("sip:{addr}");
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.3:0",
        "--auto-answer",
        "--play",
        "tone:440",
        "--record",
        wav.to_str().unwrap(),
    ]);
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    let mut alice = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:alice@example.test",
        "--registrar",
        &reg,
        "--listen",
        "udp:127.0.0.2:0",
        "--play",
        "tone:1000",
    ]);
    alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    alice.send("call sip:bob@example.test");
    alice.wait_for("alice confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    // media events at least once a second, packets both ways
    let m = alice.wait_for("media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 40
    });
    assert_eq!(m["lost"], 0);
    // bob has heard more than a second of it (reports come every second)
    bob.wait_for("bob's media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 60
    });
    alice.send("hangup");
    let last = alice.wait_for("final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    assert!(last["tx_packets"].as_u64().unwrap() > 40);
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    bob.wait_for("bob final media", |v| {
        v["event"] == "media" && v["final"] == true
    });
    bob.send("quit");
    let _ = bob.child.wait();
    // what bob recorded is alice's 1 kHz tone
    let samples: Vec<i16> = hound::WavReader::open(&wav)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect();
    assert!(
        samples.len() > 8000,
        "at least a second recorded: {}",
        samples.len()
    );
    let window = &samples[samples.len() / 2 - 2000..samples.len() / 2 + 2000];
    let at_1k = goertzel(window, 1000.0);
    for other in [440.0, 500.0, 1500.0] {
        let p = goertzel(window, other);
        assert!(at_1k > 100.0 * p, "1 kHz {at_1k:e} vs {other} Hz {p:e}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A new INVITE from a scripted peer, with a usable offer.
fn raw_invite(n: u32, peer: std::net::SocketAddr, to: &str) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:bob@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {peer};branch=z9hG4bKlim{n}\r\nMax-Forwards: 70\r\nFrom: <sip:mallory@example.test>;tag=l{n}\r\nTo: <sip:bob@example.test>\r\nCall-ID: lim{n}@mallory\r\nCSeq: 1 INVITE\r\nContact: <sip:mallory@{peer}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// The status line of the next response on `sock` to Call-ID `call_id`
/// whose code is `>= min` (bounded wait).
fn next_status(sock: &std::net::UdpSocket, call_id: &str, min: u16) -> String {
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock.recv(&mut buf).expect("a response in time");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status = text.lines().next().unwrap_or_default().to_owned();
        let code: u16 = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if text.contains(&format!("Call-ID: {call_id}\r\n")) && code >= min {
            return status;
        }
    }
}

#[test]
fn the_agent_takes_its_incoming_call_limits_from_flags_or_the_config_file() {
    let dir = std::env::temp_dir().join(format!("siproam-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("agent.toml");
    std::fs::write(&conf, "max-ringing = 1\nno-answer = 1\n").unwrap();
    let conf = conf.to_str().unwrap().to_owned();
    let base = [
        "agent",
        "--json",
        "--no-watch",
        "--aor",
        "sip:bob@example.test",
        "--listen",
        "udp:127.0.0.61:0",
    ];
    let flags = ["--max-ringing", "1", "--no-answer", "1"];
    let file = ["--config", conf.as_str()];
    for extra in [&flags[..], &file[..]] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let bob = Proc::spawn(&args);
        let addr = bob.wait_for("listener", |v| v["event"] == "listening")["address"]
            .as_str()
            .unwrap()
            .to_owned();
        let peer = std::net::UdpSocket::bind("127.0.0.62:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        peer.send_to(&raw_invite(1, peer_addr, &addr), &addr)
            .unwrap();
        assert_eq!(
            next_status(&peer, "lim1@mallory", 180),
            "SIP/2.0 180 Ringing"
        );
        peer.send_to(&raw_invite(2, peer_addr, &addr), &addr)
            .unwrap();
        assert_eq!(
            next_status(&peer, "lim2@mallory", 200),
            "SIP/2.0 486 Busy Here",
            "{extra:?}: one call rings at a time"
        );
        assert_eq!(
            next_status(&peer, "lim1@mallory", 200),
            "SIP/2.0 480 Temporarily Unavailable",
            "{extra:?}: nobody answered"
        );
        bob.wait_for("the call's end", |v| {
            v["event"] == "call" && v["state"] == "disconnected" && v["code"] == 480
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_draws_its_hand_off_and_tells_it_in_time_order() {
    let dir = temp_dir("demo-svg");
    let svg_path = dir.join("handoff.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_siproam"))
        .args(["demo", "--json", "--svg", svg_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    // the timeline in true time order: Bob's incoming before Alice's
    // confirmed, every t_ms not below the one before
    let times: Vec<f64> = events.iter().map(|v| v["t_ms"].as_f64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {times:?}"
    );
    let at = |agent: &str, event: &str, state: &str| {
        events
            .iter()
            .position(|v| v["agent"] == agent && v["event"] == event && v["state"] == state)
            .unwrap_or_else(|| panic!("no {agent} {event} {state}"))
    };
    assert!(at("bob", "call", "incoming") < at("alice", "call", "confirmed"));
    // the REGISTER 2xx, the refresh 2xx after the change, the media moved
    let change = events
        .iter()
        .position(|v| v["agent"] == "alice" && v["event"] == "ip_change" && v["stage"] == "started")
        .unwrap();
    assert!(events[..change]
        .iter()
        .any(|v| v["agent"] == "alice" && v["event"] == "registration" && v["code"] == 200));
    assert!(events[change..]
        .iter()
        .any(|v| v["agent"] == "alice" && v["event"] == "registration" && v["code"] == 200));
    assert!(events[change..].iter().any(|v| v["agent"] == "alice"
        && v["event"] == "call_refresh"
        && v["state"] == "answered"));
    assert!(events[change..]
        .iter()
        .any(|v| v["agent"] == "alice" && v["event"] == "media_moved"));

    // the picture
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let parties: Vec<String> = svg_groups(&svg, "party").into_iter().map(|g| g.1).collect();
    assert_eq!(parties, vec!["Alice", "Registrar/proxy", "Bob"]);
    let bands = svg_groups(&svg, "change");
    assert_eq!(bands.len(), 1, "one change band");
    assert!(bands[0].1.contains("127.0.0.3"), "{}", bands[0].1);
    let ms = |g: &(std::collections::HashMap<String, String>, String), k: &str| -> f64 {
        g.0[k].parse().unwrap()
    };
    let (start, end) = (ms(&bands[0], "data-start-ms"), ms(&bands[0], "data-end-ms"));
    assert!(start < end);
    let exchanges = svg_groups(&svg, "exchange");
    let in_band = |g: &&(std::collections::HashMap<String, String>, String)| {
        ms(g, "data-sent-ms") >= start - 0.1 && ms(g, "data-answered-ms") <= end + 5.0
    };
    let register = exchanges
        .iter()
        .filter(|g| g.0["data-request"] == "REGISTER")
        .find(in_band)
        .expect("the REGISTER of the change");
    assert_eq!(register.0["data-answer"], "200");
    assert!(register
        .1
        .contains(&format!("200 ({} ms)", register.0["data-ms"])));
    let refresh = exchanges
        .iter()
        .filter(|g| ["re-INVITE", "UPDATE"].contains(&g.0["data-request"].as_str()))
        .find(in_band)
        .expect("the re-INVITE/UPDATE of the change");
    assert!(refresh
        .1
        .contains(&format!("({} ms)", refresh.0["data-ms"])));
    assert!(exchanges
        .iter()
        .any(|g| g.0["data-request"] == "REGISTER" && ms(g, "data-answered-ms") < start));
    let media: Vec<String> = svg_groups(&svg, "media")
        .into_iter()
        .map(|g| g.0["data-direction"].clone())
        .collect();
    assert_eq!(media.len(), 2, "{media:?}");
    assert!(media.contains(&"Alice → Bob".to_owned()) && media.contains(&"Bob → Alice".to_owned()));
    assert_eq!(svg_groups(&svg, "gap").len(), 2, "a gap mark per direction");
    let _ = std::fs::remove_dir_all(dir);
}
