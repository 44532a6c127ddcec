//! Seeing the SIP: `--pcap` and `--trace` on real `siproam` processes on
//! loopback. A registrar, Bob over TCP writing a pcap file, Alice over UDP
//! tracing on stderr (at `-vv`); Alice calls Bob with a 440 Hz tone for a
//! second. The pcap file is parsed back (`pcap-file`) and its IP, UDP and
//! TCP headers checked by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
use common::*;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

fn listening(p: &Proc, transport: &str) -> String {
    p.wait_for(&format!("{transport} listener"), |v| {
        v["event"] == "listening" && v["transport"] == transport
    })["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One packet of the capture: its transport, ends and payload (TCP: with
/// its sequence and acknowledgement numbers).
#[derive(Debug, Clone)]
struct Packet {
    tcp: Option<(u32, u32)>,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

impl Packet {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The packets of a LINKTYPE_RAW capture of IPv4 loopback traffic.
fn read_pcap(path: &Path) -> Vec<Packet> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    assert_eq!(reader.header().datalink, pcap_file::DataLink::RAW, "raw IP");
    let mut out = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        let d = &p.data;
        assert_eq!(p.orig_len as usize, d.len(), "nothing cut");
        assert_eq!(d[0], 0x45, "IPv4 without options");
        assert_eq!(be16(d, 2) as usize, d.len(), "IPv4 total length");
        let ip = |i: usize| Ipv4Addr::new(d[i], d[i + 1], d[i + 2], d[i + 3]);
        let (src_ip, dst_ip) = (ip(12), ip(16));
        let l4 = &d[20..];
        let src = SocketAddr::V4(SocketAddrV4::new(src_ip, be16(l4, 0)));
        let dst = SocketAddr::V4(SocketAddrV4::new(dst_ip, be16(l4, 2)));
        match d[9] {
            17 => {
                assert_eq!(be16(l4, 4) as usize, l4.len(), "UDP length");
                out.push(Packet {
                    tcp: None,
                    src,
                    dst,
                    payload: l4[8..].to_vec(),
                });
            }
            6 => {
                let offset = usize::from(l4[12] >> 4) * 4;
                assert_eq!(offset, 20);
                out.push(Packet {
                    tcp: Some((be32(l4, 4), be32(l4, 8))),
                    src,
                    dst,
                    payload: l4[offset..].to_vec(),
                });
            }
            other => panic!("protocol {other}"),
        }
    }
    out
}

#[test]
fn pcap_and_trace_show_the_registration_the_call_and_its_rtp() {
    let dir = temp_dir("wire-trace");
    let pcap = dir.join("bob.pcap");
    let trace = dir.join("alice.stderr");
    let registrar = Proc::spawn(&[
        "registrar",
        "--json",
        "--listen",
        "udp:127.0.0.1:0",
        "--listen",
        "tcp:127.0.0.1:0",
    ]);
    let udp = listening(&registrar, "udp");
    let tcp = listening(&registrar, "tcp");
    let tcp_addr: SocketAddr = tcp.parse().unwrap();
    let udp_addr: SocketAddr = udp.parse().unwrap();

    let bob_reg = format!("sip:{tcp};transport=tcp");
    let mut bob = Proc::spawn(&[
        "agent",
        "--json",
        "--aor",
        "sip:bob@example.test",
        "--registrar",
        &bob_reg,
        "--listen",
        "tcp:127.0.0.3:0",
        "--auto-answer",
        "--play",
        "tone:440",
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    bob.wait_for("bob registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    // Alice's stderr goes to a file (not a terminal)
    let alice_reg = format!("sip:{udp}");
    let mut alice = Proc::spawn_program(
        "sh",
        &[
            "-c",
            "f=$1; shift; exec \"$@\" 2>\"$f\"",
            "sh",
            trace.to_str().unwrap(),
            env!("CARGO_BIN_EXE_siproam"),
            "agent",
            "-vv",
            "--json",
            "--trace",
            "--aor",
            "sip:alice@example.test",
            "--registrar",
            &alice_reg,
            "--listen",
            "udp:127.0.0.2:0",
            "--play",
            "tone:440",
        ],
    );
    alice.wait_for("alice registered", |v| {
        v["event"] == "registration" && v["state"] == "registered"
    });
    alice.send("call sip:bob@example.test");
    bob.wait_for("bob confirmed", |v| {
        v["event"] == "call" && v["state"] == "confirmed"
    });
    // a second of media at least
    let media = bob.wait_for("bob's media", |v| {
        v["event"] == "media" && v["rx_packets"].as_u64().unwrap_or(0) > 50
    });
    let rtp_local: SocketAddr = media["local"].as_str().unwrap().parse().unwrap();
    let rtp_remote: SocketAddr = media["remote"].as_str().unwrap().parse().unwrap();
    alice.send("hangup");
    bob.wait_for("bob disconnected", |v| {
        v["event"] == "call" && v["state"] == "disconnected"
    });
    bob.quit();
    alice.quit();

    // --- the pcap file, parsed back
    let packets = read_pcap(&pcap);
    let sip: Vec<&Packet> = packets.iter().filter(|p| p.tcp.is_some()).collect();
    let starts = |p: &&Packet, s: &str| p.payload.starts_with(s.as_bytes());
    let register = sip
        .iter()
        .find(|p| starts(p, "REGISTER "))
        .expect("a REGISTER");
    assert_eq!(register.dst, tcp_addr, "sent to the registrar's TCP port");
    assert_eq!(
        register.src.ip(),
        "127.0.0.3".parse::<std::net::IpAddr>().unwrap()
    );
    assert!(
        sip.iter().any(|p| starts(p, "SIP/2.0 200")
            && p.text().contains(" REGISTER\r\n")
            && p.src == tcp_addr
            && p.dst == register.src),
        "the REGISTER's 200, received on the same connection"
    );
    let invite = sip
        .iter()
        .find(|p| starts(p, "INVITE "))
        .expect("an INVITE");
    assert_eq!(invite.src.ip(), tcp_addr.ip());
    assert!(
        sip.iter().any(|p| starts(p, "SIP/2.0 200")
            && p.text().contains(" INVITE\r\n")
            && p.src == invite.dst
            && p.dst == invite.src),
        "the INVITE's 200, sent back the way it came"
    );
    // every direction of every connection: each segment starts where the
    // one before ended, and acknowledges what the other side has sent
    let mut next: HashMap<(SocketAddr, SocketAddr), u32> = HashMap::new();
    for p in &sip {
        let (seq, ack) = p.tcp.unwrap();
        if let Some(expected) = next.get(&(p.src, p.dst)) {
            assert_eq!(seq, *expected, "sequence of {} -> {}", p.src, p.dst);
        }
        if let Some(other) = next.get(&(p.dst, p.src)) {
            assert_eq!(ack, *other, "ack of {} -> {}", p.src, p.dst);
        }
        next.insert((p.src, p.dst), seq.wrapping_add(p.payload.len() as u32));
    }
    assert!(sip.len() >= 6, "{} SIP segments", sip.len());
    // RTP both ways between the media addresses: version 2, PCMU or PCMA
    let rtp = |src: SocketAddr, dst: SocketAddr| {
        packets
            .iter()
            .filter(|p| p.tcp.is_none() && p.src == src && p.dst == dst)
            .filter(|p| p.payload.len() >= 12 && p.payload[0] >> 6 == 2)
            .filter(|p| matches!(p.payload[1] & 0x7f, 0 | 8))
            .count()
    };
    let sent = rtp(rtp_local, rtp_remote);
    let received = rtp(rtp_remote, rtp_local);
    assert!(sent > 40, "{sent} RTP packets sent");
    assert!(received > 40, "{received} RTP packets received");
    // no SIP of Bob's went over UDP
    assert!(packets
        .iter()
        .filter(|p| p.tcp.is_none())
        .all(|p| !p.payload.starts_with(b"REGISTER ")));

    // --- Alice's trace on stderr
    let stderr = std::fs::read_to_string(&trace).unwrap();
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a file:\n{stderr}"
    );
    let blocks: Vec<&str> = stderr.split("\n--- ").collect();
    let sent_register = blocks
        .iter()
        .find(|b| b.contains(" sent UDP 127.0.0.2:") && b.contains("\nREGISTER sip:"))
        .unwrap_or_else(|| panic!("no sent REGISTER in:\n{stderr}"));
    let header = sent_register.lines().next().unwrap();
    assert!(
        header.contains(&format!(" -> {udp_addr}, ")) && header.ends_with(" bytes"),
        "{header}"
    );
    assert!(
        blocks.iter().any(|b| {
            let mut lines = b.lines();
            let header = lines.next().unwrap_or_default();
            header.contains(" received UDP 127.0.0.2:")
                && header.contains(&format!(" <- {udp_addr}, "))
                && lines.next().is_some_and(|l| l.starts_with("SIP/2.0 200"))
                && b.contains(" REGISTER\n")
        }),
        "no received 200 to the REGISTER in:\n{stderr}"
    );
    assert!(!stderr.contains("\r\n"), "CRLF shown as line breaks");
    // the INVITE's way too, and Alice's RTP is not in the trace
    assert!(stderr.contains("\nINVITE sip:bob@example.test SIP/2.0\n"));
    let _ = std::fs::remove_dir_all(dir);
}
