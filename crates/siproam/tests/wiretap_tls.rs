//! The wire tap on a TLS connection: what goes over it is written to the
//! pcap file as its plaintext over TCP with the connection's real ports,
//! each message one segment, the keep-alive ping and its pong too, with
//! sequence numbers that follow on. Loopback only; every wait bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rcgen::{CertificateParams, KeyPair};
use siproam::transport::{
    SendTarget, TlsClientConfig, TlsServerConfig, Transport, TransportConfig, TransportEvent,
    TransportManager,
};
use siproam::wiretap::{WireTap, WireTapOptions};

const WAIT: Duration = Duration::from_secs(10);

fn configs() -> (TlsServerConfig, TlsClientConfig) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["a.example.test".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let server =
        TlsServerConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let client = TlsClientConfig::with_roots(vec![cert.der().clone()], false).unwrap();
    (server, client)
}

/// (source, destination, seq, ack, payload) of each TCP packet of a
/// LINKTYPE_RAW IPv4 capture.
type Segment = (SocketAddr, SocketAddr, u32, u32, Vec<u8>);

fn segments(file: &[u8]) -> Vec<Segment> {
    let u32ne = |i: usize| u32::from_ne_bytes([file[i], file[i + 1], file[i + 2], file[i + 3]]);
    assert_eq!(u32ne(0), 0xa1b2_c3d4);
    assert_eq!(u32ne(20), 101, "LINKTYPE_RAW");
    let mut out = Vec::new();
    let mut i = 24;
    while i < file.len() {
        let len = u32ne(i + 8) as usize;
        let p = &file[i + 16..i + 16 + len];
        i += 16 + len;
        assert_eq!(p[0], 0x45);
        assert_eq!(p[9], 6, "TCP");
        let be16 = |j: usize| u16::from_be_bytes([p[j], p[j + 1]]);
        let be32 = |j: usize| u32::from_be_bytes([p[j], p[j + 1], p[j + 2], p[j + 3]]);
        let ip = |j: usize| std::net::Ipv4Addr::new(p[j], p[j + 1], p[j + 2], p[j + 3]);
        let src = SocketAddr::new(ip(12).into(), be16(20));
        let dst = SocketAddr::new(ip(16).into(), be16(22));
        out.push((src, dst, be32(24), be32(28), p[40..].to_vec()));
    }
    out
}

#[tokio::test]
async fn tls_is_written_as_its_plaintext_over_tcp_with_sequence_numbers() {
    let dir = std::env::temp_dir().join(format!("siproam-wiretap-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("client.pcap");
    let tap = WireTap::start(WireTapOptions {
        trace: false,
        pcap: Some(path.clone()),
        pcap_limit: None,
    })
    .unwrap();
    let (server_cfg, client_cfg) = configs();
    let (server, mut server_events) = TransportManager::new(TransportConfig {
        tls_server: Some(server_cfg),
        wiretap: None,
        ..TransportConfig::default()
    });
    let (client, mut client_events) = TransportManager::new(TransportConfig {
        tls_client: Some(client_cfg),
        wiretap: Some(tap.clone()),
        ..TransportConfig::default()
    });
    let listener = server
        .listen(Transport::Tls, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let options = Bytes::from_static(
        b"OPTIONS sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bKt1\r\n\
          From: <sip:a@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: t1@test\r\n\
          CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    let target = SendTarget::new(Transport::Tls, listener.local).with_server_name("a.example.test");
    let flow = client.send(&target, options.clone()).await.unwrap();
    let conn = flow.connection.unwrap();
    // the server answers
    let (remote, incoming) = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(TransportEvent::Received {
                remote, connection, ..
            }) = server_events.recv().await
            {
                return (remote, connection.unwrap());
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(remote, flow.local);
    let answer = Bytes::from_static(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bKt1\r\n\
          From: <sip:a@example.test>;tag=1\r\nTo: <sip:bob@example.test>;tag=2\r\n\
          Call-ID: t1@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    server
        .send(
            &SendTarget::new(Transport::Tls, remote).with_connection(incoming),
            answer.clone(),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(TransportEvent::Received { .. }) = client_events.recv().await {
                return;
            }
        }
    })
    .await
    .unwrap();
    // then a keep-alive ping, answered with a pong
    client.ping(conn).unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(TransportEvent::PongReceived { .. }) = client_events.recv().await {
                return;
            }
        }
    })
    .await
    .unwrap();
    tap.finish();

    let file = std::fs::read(&path).unwrap();
    let segs = segments(&file);
    let (local, server_addr) = (flow.local, listener.local);
    let expected: Vec<(SocketAddr, SocketAddr, &[u8])> = vec![
        (local, server_addr, &options[..]),
        (server_addr, local, &answer[..]),
        (local, server_addr, b"\r\n\r\n"),
        (server_addr, local, b"\r\n"),
    ];
    assert_eq!(segs.len(), expected.len(), "{segs:?}");
    for (seg, (src, dst, payload)) in segs.iter().zip(&expected) {
        assert_eq!((seg.0, seg.1), (*src, *dst));
        assert_eq!(&seg.4[..], *payload, "the plaintext");
    }
    // sequence numbers follow on each way; each acknowledges the other
    let n = |i: usize| segs[i].4.len() as u32;
    assert_eq!(segs[2].2, segs[0].2 + n(0));
    assert_eq!(segs[3].2, segs[1].2 + n(1));
    assert_eq!(segs[1].3, segs[0].2 + n(0));
    assert_eq!(segs[2].3, segs[1].2 + n(1));
    let _ = std::fs::remove_dir_all(dir);
}
