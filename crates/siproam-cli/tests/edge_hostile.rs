//! `siproam edge` under bad input, between real processes on loopback
//! (issue 13, item 4; the REGISTER flood and the idle connections are
//! `bench attack --target edge` in attack.rs): garbage and truncated
//! messages over UDP and TCP, oversized messages (a datagram beyond the
//! limit, a Content-Length far too big on TCP, a header section that never
//! ends), and slow-loris peers. After each: the edge still runs, Alice —
//! registered through it with outbound before — is still called over her
//! flow (so the registrar still has her binding and the edge her flow,
//! which never went down), a new client registers through the edge, and
//! the edge's resident memory is bounded. Outcomes only, no duration is
//! asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const URN: &str = "urn:uuid:00000000-0000-1000-8000-0000000000f1";

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// A registrar, the edge in front of it, Alice registered through the
/// edge with outbound over TCP, Bob registered at the registrar.
struct World {
    _registrar: Proc,
    edge: Proc,
    alice: Proc,
    bob: Proc,
    registrar_uri: String,
    edge_tcp: SocketAddr,
    edge_udp: SocketAddr,
    rss_baseline: u64,
    new_clients: u32,
}

fn world() -> World {
    let (registrar, registrar_uri) = tcp_registrar(&[]);
    let edge = edge_before(
        &registrar_uri,
        &["--listen", "udp:127.0.0.1:0", "--flow-timer", "20"],
    );
    let edge_tcp: SocketAddr = listening(&edge, "tcp").parse().unwrap();
    let edge_udp: SocketAddr = listening(&edge, "udp").parse().unwrap();
    let alice = outbound_agent(
        "sip:alice@example.test",
        &registrar_uri,
        &edge_tcp.to_string(),
        URN,
        &["--auto-answer"],
    );
    alice.wait_registered("alice");
    alice.seen_or_wait("alice's flow up", |v| {
        v["event"] == "flow" && v["state"] == "up"
    });
    let bob = agent_at(&registrar_uri, "bob", "tcp:127.0.0.1:0", &[]);
    bob.wait_registered("bob");
    let mut w = World {
        _registrar: registrar,
        edge,
        alice,
        bob,
        registrar_uri,
        edge_tcp,
        edge_udp,
        rss_baseline: 0,
        new_clients: 0,
    };
    // one call first: what the edge holds once warmed up is the baseline
    w.call_alice("warm-up");
    std::thread::sleep(Duration::from_millis(500));
    w.rss_baseline = rss_of(w.edge.child.id());
    w
}

impl World {
    /// Bob calls Alice: registrar → her Path → the edge → her flow; the
    /// BYE comes back through the edge's Record-Route.
    fn call_alice(&mut self, case: &str) {
        self.bob.send("call sip:alice@example.test");
        self.alice.wait_call(&format!("{case}: alice"), "confirmed");
        self.bob.wait_call(&format!("{case}: bob"), "confirmed");
        self.bob.send("hangup");
        self.alice
            .wait_call(&format!("{case}: alice"), "disconnected");
        self.bob.wait_call(&format!("{case}: bob"), "disconnected");
    }

    /// The edge's memory now, checked against a generous bound.
    fn assert_memory_bounded(&self, case: &str, factor: u64) -> u64 {
        let rss = rss_of(self.edge.child.id());
        assert!(
            rss <= factor * self.rss_baseline,
            "{case}: the edge's memory {} -> {rss}",
            self.rss_baseline
        );
        rss
    }

    /// The edge keeps serving: it runs, Alice's flow never went down and
    /// she is still called over it, a new client registers through it,
    /// and its memory is bounded.
    fn assert_still_serving(&mut self, case: &str) {
        assert!(
            self.edge.child.try_wait().unwrap().is_none(),
            "{case}: the edge exited"
        );
        self.call_alice(case);
        self.alice.drain();
        let down: Vec<_> = self
            .alice
            .seen()
            .into_iter()
            .filter(|v| v["event"] == "flow" && v["state"] != "up" && v["state"] != "keepalive_ok")
            .collect();
        assert!(down.is_empty(), "{case}: alice's flow: {down:?}");
        self.new_clients += 1;
        let n = self.new_clients;
        let carol = outbound_agent(
            &format!("sip:carol{n}@example.test"),
            &self.registrar_uri,
            &self.edge_tcp.to_string(),
            &format!("urn:uuid:00000000-0000-1000-8000-0000000001{n:02}"),
            &[],
        );
        carol.wait_registered(&format!("{case}: a new client"));
        drop(carol);
        let rss = self.assert_memory_bounded(case, 2);
        eprintln!("{case}: edge rss {} -> {rss}", self.rss_baseline);
    }
}

/// A small seeded generator (no dependency; the same bytes every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn register_text(me: SocketAddr, transport: &str, n: u32) -> String {
    format!(
        "REGISTER sip:example.test SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {me};branch=z9hG4bK-bad{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:mallory@example.test>;tag=m{n}\r\n\
         To: <sip:mallory@example.test>\r\n\
         Call-ID: bad{n}@mallory\r\n\
         CSeq: 1 REGISTER\r\n\
         Route: <sip:ffff{n:08x}@{me};lr>\r\n\
         Contact: <sip:mallory@{me};ob>;reg-id=1;+sip.instance=\"<urn:uuid:0>\"\r\n\
         Supported: outbound, path\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Hostile payloads: random bytes, a REGISTER cut at many lengths, and
/// messages broken in the places a parser trips on.
fn garbage(me: SocketAddr, transport: &str, edge: SocketAddr) -> Vec<Vec<u8>> {
    let mut rng = Lcg(0x5eed);
    let mut out = Vec::new();
    for i in 0..60 {
        let len = 1 + (rng.next() as usize % 1400);
        out.push(rng.bytes(len));
        // random bytes after a plausible request line
        let mut m = b"INVITE sip:alice@example.test SIP/2.0\r\nVia: ".to_vec();
        m.extend(rng.bytes(1 + i * 7));
        out.push(m);
    }
    let whole = register_text(me, transport, 1);
    for cut in (1..whole.len()).step_by(13) {
        out.push(whole.as_bytes()[..cut].to_vec());
    }
    let broken = [
        // a Content-Length longer than what came
        whole.replace("Content-Length: 0", "Content-Length: 500"),
        // a negative / non-numeric Content-Length
        whole.replace("Content-Length: 0", "Content-Length: -5"),
        whole.replace("Content-Length: 0", "Content-Length: zz"),
        // no Via, no Call-ID, a header without a colon
        whole.replace("Via: ", "Vai "),
        whole.replace("Call-ID: ", "X-No: "),
        // a Route naming the edge with a forged token, with a huge user
        whole.replace(
            &format!("Route: <sip:ffff00000001@{me};lr>"),
            &format!("Route: <sip:{}@{edge};lr>", "ab".repeat(4000)),
        ),
        // a forged token that looks right
        whole.replace(
            &format!("Route: <sip:ffff00000001@{me};lr>"),
            &format!("Route: <sip:{}@{edge};lr>", "0a".repeat(40)),
        ),
        // NUL bytes and a stray response
        "REGISTER sip:\0\0\0 SIP/2.0\r\n\r\n".to_owned(),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n".to_owned(),
        "\r\n\r\n\r\n".to_owned(),
    ];
    out.extend(broken.into_iter().map(String::into_bytes));
    out
}

/// True once the peer closed the stream (bounded wait).
fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionReset
                    || e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                return true
            }
            Err(_) => continue,
        }
    }
    false
}

fn tcp_from(ip: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    let src: SocketAddr = format!("{ip}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    TcpStream::from(sock)
}

#[test]
fn garbage_and_truncated_messages_over_udp_and_tcp_leave_the_edge_serving() {
    let mut w = world();
    // UDP: each payload once, from one source, at a pace its rate allows
    let udp = UdpSocket::bind("127.0.0.7:0").unwrap();
    let me = udp.local_addr().unwrap();
    let payloads = garbage(me, "UDP", w.edge_udp);
    for (i, p) in payloads.iter().enumerate() {
        udp.send_to(p, w.edge_udp).unwrap();
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(600));
        }
    }
    w.assert_still_serving("garbage over UDP");

    // TCP: each payload on a connection of its own, then the connection
    // is left half-open (written, never finished) or closed
    let mut held = Vec::new();
    for (i, p) in garbage(me, "TCP", w.edge_tcp).iter().enumerate() {
        let mut s = tcp_from("127.0.0.8", w.edge_tcp);
        let _ = s.write_all(p);
        if i % 2 == 0 && held.len() < 32 {
            held.push(s);
        }
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    w.assert_still_serving("garbage over TCP");
    // what the edge holds of them goes: each is closed (framing error or
    // its message deadline)
    let mut open = 0;
    for s in &mut held {
        open += usize::from(!closed_by_peer(s, Duration::from_secs(60)));
    }
    assert_eq!(open, 0, "connections with broken messages left open");
    w.assert_still_serving("after the garbage connections");
}

#[test]
fn oversized_messages_are_refused_and_the_edge_keeps_serving() {
    let mut w = world();
    let udp = UdpSocket::bind("127.0.0.7:0").unwrap();
    let me = udp.local_addr().unwrap();
    // datagrams beyond the 64 KiB message limit cannot be sent over UDP;
    // the biggest that can, and a header line beyond the line limit
    let big_header = format!("X-Big: {}\r\n", "a".repeat(60_000));
    let oversized =
        register_text(me, "UDP", 2).replace("Max-Forwards", &format!("{big_header}Max-Forwards"));
    for _ in 0..20 {
        udp.send_to(oversized.as_bytes(), w.edge_udp).unwrap();
    }
    let many_headers: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let too_many =
        register_text(me, "UDP", 3).replace("Max-Forwards", &format!("{many_headers}Max-Forwards"));
    for _ in 0..20 {
        udp.send_to(too_many.as_bytes(), w.edge_udp).unwrap();
    }
    w.assert_still_serving("oversized datagrams");

    // TCP: a Content-Length far too big, then body bytes: closed
    let mut conns = Vec::new();
    for (i, len) in [100_000_000u64, 4_294_967_296, 65_537].iter().enumerate() {
        let mut s = tcp_from("127.0.0.9", w.edge_tcp);
        let me = s.local_addr().unwrap();
        let msg = register_text(me, "TCP", 10 + i as u32)
            .replace("Content-Length: 0", &format!("Content-Length: {len}"));
        s.write_all(msg.as_bytes()).unwrap();
        let _ = s.write_all(&vec![b'x'; 70_000]);
        conns.push(s);
    }
    // a header section that never ends: 200 KB of headers
    let mut s = tcp_from("127.0.0.9", w.edge_tcp);
    let me = s.local_addr().unwrap();
    let _ = s.write_all(
        format!("REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-h\r\n")
            .as_bytes(),
    );
    for i in 0..10_000 {
        if s.write_all(format!("X-Pad{i}: 0123456789\r\n").as_bytes())
            .is_err()
        {
            break;
        }
    }
    conns.push(s);
    for (i, s) in conns.iter_mut().enumerate() {
        assert!(
            closed_by_peer(s, Duration::from_secs(60)),
            "oversized message {i}: the connection stays open"
        );
    }
    w.assert_still_serving("oversized messages over TCP");
}

#[test]
fn slow_loris_peers_are_closed_and_the_edge_keeps_serving() {
    let mut w = world();
    // 40 connections from one source: 20 trickle a REGISTER a byte at a
    // time, never finishing it; 20 never send a byte
    let n = 40;
    let mut conns: Vec<TcpStream> = (0..n).map(|_| tcp_from("127.0.0.10", w.edge_tcp)).collect();
    let me = conns[0].local_addr().unwrap();
    let text = register_text(me, "TCP", 20);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let mut writers: Vec<TcpStream> = conns
            .iter()
            .take(n / 2)
            .map(|c| c.try_clone().unwrap())
            .collect();
        std::thread::spawn(move || {
            // one byte a second on each: the message would take minutes;
            // bounded at 90 s in all
            let start = Instant::now();
            let bytes = text.as_bytes();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(90)
                && i < bytes.len() - 4
            {
                writers.retain_mut(|s| s.write_all(&bytes[i..i + 1]).is_ok());
                if writers.is_empty() {
                    break;
                }
                i += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // served while they trickle
    w.assert_still_serving("during the slow-loris");
    // every one of them is closed by the edge (its deadlines)
    let mut open = 0;
    for s in &mut conns {
        open += usize::from(!closed_by_peer(s, Duration::from_secs(90)));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickler.join().unwrap();
    assert_eq!(open, 0, "slow-loris connections left open");
    w.assert_still_serving("after the slow-loris");
}

/// A REGISTER of a fresh instance over `s`; the status of the answer (0
/// when the connection was closed or nothing came).
fn try_register(s: &mut TcpStream, n: u32) -> u16 {
    let me = s.local_addr().unwrap();
    let msg = format!(
        "REGISTER sip:example.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP {me};branch=z9hG4bK-new{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dave@example.test>;tag=d{n}\r\n\
         To: <sip:dave@example.test>\r\n\
         Call-ID: new{n}@dave\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:dave@{me};transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-0000000000d1>\"\r\n\
         Supported: outbound, path\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    if s.write_all(msg.as_bytes()).is_err() {
        return 0;
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = read_head(s);
    if !head.ends_with("\r\n\r\n") {
        return 0;
    }
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Connections that each send one request and then sit idle (the
/// transport evicts only connections that never carried SIP): the edge
/// closes them after its short idle time for connections that never
/// registered, so a new client gets in (before: they were kept as flows
/// for --flow-idle, 2 hours, and every new connection was refused).
#[test]
fn connections_that_sent_one_request_and_went_idle_do_not_lock_new_clients_out() {
    let (_registrar, registrar_uri) = tcp_registrar(&[]);
    let edge = edge_before(&registrar_uri, &["--max-connections", "16"]);
    let edge_tcp: SocketAddr = listening(&edge, "tcp").parse().unwrap();
    // the attacker fills every slot with a connection that carried SIP
    // (each OPTIONS answered), until the edge takes no more
    let mut idle = Vec::new();
    for i in 0..24 {
        let mut s = tcp_from("127.0.0.12", edge_tcp);
        let me = s.local_addr().unwrap();
        let options = format!(
            "OPTIONS sip:{edge_tcp};transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/TCP {me};branch=z9hG4bK-fill{i};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:mallory@example.test>;tag=f{i}\r\n\
             To: <sip:{edge_tcp}>\r\n\
             Call-ID: fill{i}@mallory\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        if s.write_all(options.as_bytes()).is_err() {
            break;
        }
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if !read_head(&mut s).starts_with("SIP/2.0 200") {
            break;
        }
        idle.push(s);
    }
    assert!(idle.len() >= 15, "only {} connections held", idle.len());
    // locked out now
    let mut s = tcp_from("127.0.0.13", edge_tcp);
    assert_eq!(try_register(&mut s, 0), 0, "the edge was not full");
    // a new client keeps trying (bounded: 150 s)
    let start = Instant::now();
    let mut served = false;
    let mut n = 0;
    while !served && start.elapsed() < Duration::from_secs(150) {
        n += 1;
        let mut s = tcp_from("127.0.0.13", edge_tcp);
        served = try_register(&mut s, n) == 200;
        if !served {
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    assert!(served, "a new client was locked out ({n} tries)");
    // the idle connections are the ones closed (bounded: 90 s in all)
    let end = Instant::now() + Duration::from_secs(90);
    let mut open = 0;
    for s in &mut idle {
        let left = end.saturating_duration_since(Instant::now());
        open += usize::from(!closed_by_peer(s, left.max(Duration::from_secs(1))));
    }
    assert_eq!(open, 0, "idle connections left open");
}
