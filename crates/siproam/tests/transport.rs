//! Transport layer on loopback only (127.0.0.0/8): UDP, TCP, TLS, framing,
//! keep-alives, connection reuse, idle close, and the operations a network
//! change needs. Every wait is bounded by a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use siproam::transport::{
    source_address_for, AddressOracle, CertificateDer, CloseReason, ConnectionDirection,
    ConnectionId, ListenError, SendError, SendTarget, TlsClientConfig, TlsServerConfig, Transport,
    TransportConfig, TransportEvent, TransportEvents, TransportManager, PING_REPORT_INTERVAL,
};
use siproam_sip::FramingError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on every wait (never reached when things work).
const WAIT: Duration = Duration::from_secs(10);

fn lo(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0)
}

/// A small SIP request whose body tells messages apart.
fn sip(tag: &str) -> Bytes {
    Bytes::from(format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK{tag}\r\n\
         From: <sip:alice@example.com>;tag=1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {tag}@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: {}\r\n\r\n{tag}",
        tag.len()
    ))
}

fn manager(config: TransportConfig) -> (TransportManager, TransportEvents) {
    TransportManager::new(config)
}

/// Waits for the first event `pick` accepts, skipping others.
async fn wait_for<T>(
    events: &mut TransportEvents,
    mut pick: impl FnMut(TransportEvent) -> Option<T>,
) -> T {
    timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event stream ended");
            if let Some(t) = pick(event) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

/// Waits for the next received message: (connection, remote, bytes).
async fn received(events: &mut TransportEvents) -> (Option<ConnectionId>, SocketAddr, Bytes) {
    wait_for(events, |e| match e {
        TransportEvent::Received {
            connection,
            remote,
            bytes,
            ..
        } => Some((connection, remote, bytes)),
        _ => None,
    })
    .await
}

async fn closed(events: &mut TransportEvents, id: ConnectionId) -> CloseReason {
    wait_for(events, |e| match e {
        TransportEvent::ConnectionClosed { info, reason } if info.id == id => Some(reason),
        _ => None,
    })
    .await
}

/// A test CA and a server certificate it signed for `localhost`,
/// 127.0.0.1 and 127.0.0.2.
struct Pki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "siproam test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "127.0.0.2".to_string(),
    ])
    .unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_der: ca_cert.der().clone(),
        ca_pem: ca_cert.pem(),
        chain_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

fn tls_server(pki: &Pki) -> TlsServerConfig {
    TlsServerConfig::from_pem(pki.chain_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap()
}

fn tls_client(pki: &Pki) -> TlsClientConfig {
    TlsClientConfig::with_roots(vec![pki.ca_der.clone()], false).unwrap()
}

// ---------------------------------------------------------------- UDP

#[tokio::test]
async fn udp_both_ways() {
    let (a, mut ea) = manager(TransportConfig::default());
    let (b, mut eb) = manager(TransportConfig::default());
    let la = a.listen(Transport::Udp, lo(1)).await.unwrap();
    let lb = b.listen(Transport::Udp, lo(1)).await.unwrap();
    assert_ne!(lb.local.port(), 0);
    assert_eq!(lb.requested, lo(1));

    let flow = a
        .send(&SendTarget::new(Transport::Udp, lb.local), sip("ab"))
        .await
        .unwrap();
    assert_eq!(flow.local, la.local);
    assert_eq!(flow.connection, None);
    let got = wait_for(&mut eb, |e| match e {
        TransportEvent::Received {
            transport,
            local,
            remote,
            connection,
            bytes,
        } => Some((transport, local, remote, connection, bytes)),
        _ => None,
    })
    .await;
    assert_eq!(got, (Transport::Udp, lb.local, la.local, None, sip("ab")));

    b.send(&SendTarget::new(Transport::Udp, got.2), sip("ba"))
        .await
        .unwrap();
    let (conn, remote, bytes) = received(&mut ea).await;
    assert_eq!((conn, remote, bytes), (None, lb.local, sip("ba")));
}

#[tokio::test]
async fn udp_local_address_picks_the_socket() {
    let (a, _ea) = manager(TransportConfig::default());
    let (b, mut eb) = manager(TransportConfig::default());
    let _a2 = a.listen(Transport::Udp, lo(2)).await.unwrap();
    let a3 = a.listen(Transport::Udp, lo(3)).await.unwrap();
    let lb = b.listen(Transport::Udp, lo(1)).await.unwrap();

    let flow = a
        .send(
            &SendTarget::new(Transport::Udp, lb.local).with_local(lo(3)),
            sip("from3"),
        )
        .await
        .unwrap();
    assert_eq!(flow.local, a3.local);
    let (_, remote, _) = received(&mut eb).await;
    assert_eq!(remote, a3.local);

    let err = a
        .send(
            &SendTarget::new(Transport::Udp, lb.local).with_local(lo(4)),
            sip("x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::NoSocket { .. }), "{err:?}");

    let big = Bytes::from(vec![b'x'; 70_000]);
    let err = a
        .send(&SendTarget::new(Transport::Udp, lb.local), big)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::TooLarge { .. }), "{err:?}");
}

// ---------------------------------------------------------------- TCP

#[tokio::test]
async fn tcp_both_ways_with_connection_reuse() {
    let (a, mut ea) = manager(TransportConfig::default());
    let (b, mut eb) = manager(TransportConfig::default());
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();

    let flow = a
        .send(&SendTarget::new(Transport::Tcp, lb.local), sip("one"))
        .await
        .unwrap();
    let ca = flow.connection.unwrap();
    let opened = wait_for(&mut ea, |e| match e {
        TransportEvent::ConnectionOpened { info } => Some(info),
        _ => None,
    })
    .await;
    assert_eq!(opened.id, ca);
    assert_eq!(opened.direction, ConnectionDirection::Outgoing);

    let incoming = wait_for(&mut eb, |e| match e {
        TransportEvent::ConnectionOpened { info } => Some(info),
        _ => None,
    })
    .await;
    assert_eq!(incoming.direction, ConnectionDirection::Incoming);
    assert_eq!(incoming.listener, Some(lb.id));
    assert_eq!(incoming.remote, flow.local);
    let (cb, remote, bytes) = received(&mut eb).await;
    assert_eq!(
        (cb, remote, bytes),
        (Some(incoming.id), flow.local, sip("one"))
    );

    // a second send reuses the connection
    let again = a
        .send(&SendTarget::new(Transport::Tcp, lb.local), sip("two"))
        .await
        .unwrap();
    assert_eq!(again.connection, Some(ca));
    assert_eq!(received(&mut eb).await.2, sip("two"));

    // the reply goes back on the connection the peer opened, found by
    // address alone, then by id
    let reply = b
        .send(&SendTarget::new(Transport::Tcp, flow.local), sip("reply"))
        .await
        .unwrap();
    assert_eq!(reply.connection, Some(incoming.id));
    let (conn, _, bytes) = received(&mut ea).await;
    assert_eq!((conn, bytes), (Some(ca), sip("reply")));
    let reply = b
        .send(
            &SendTarget::new(Transport::Tcp, flow.local).with_connection(incoming.id),
            sip("reply2"),
        )
        .await
        .unwrap();
    assert_eq!(reply.connection, Some(incoming.id));
    assert_eq!(received(&mut ea).await, (Some(ca), lb.local, sip("reply2")));

    assert_eq!(a.connections().len(), 1);
    assert_eq!(b.connections().len(), 1);
    // nothing else was opened
    assert!(!std::iter::from_fn(|| eb.try_recv())
        .any(|e| matches!(e, TransportEvent::ConnectionOpened { .. })));
}

#[tokio::test]
async fn tcp_source_address_is_bound_and_keys_reuse() {
    let (a, _ea) = manager(TransportConfig::default());
    let (b, mut eb) = manager(TransportConfig::default());
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let target = SendTarget::new(Transport::Tcp, lb.local);

    let from3 = a
        .send(&target.clone().with_local(lo(3)), sip("3"))
        .await
        .unwrap();
    assert_eq!(from3.local.ip(), lo(3).ip());
    assert_eq!(received(&mut eb).await.1.ip(), lo(3).ip());
    // another source address: another connection
    let from4 = a
        .send(&target.clone().with_local(lo(4)), sip("4"))
        .await
        .unwrap();
    assert_ne!(from4.connection, from3.connection);
    assert_eq!(received(&mut eb).await.1.ip(), lo(4).ip());
    // the same one again: reused (the port of `local` does not matter)
    let mut same = lo(3);
    same.set_port(5060);
    let again = a
        .send(&target.clone().with_local(same), sip("3b"))
        .await
        .unwrap();
    assert_eq!(again.connection, from3.connection);
    // no local address: any connection to the peer will do
    let any = a.send(&target, sip("any")).await.unwrap();
    assert!(any.connection == from3.connection || any.connection == from4.connection);
    assert_eq!(a.connections().len(), 2);
}

#[tokio::test]
async fn listen_on_a_busy_port_fails() {
    let busy = std::net::TcpListener::bind(lo(1)).unwrap();
    let (a, _ea) = manager(TransportConfig::default());
    let err = a
        .listen(Transport::Tcp, busy.local_addr().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ListenError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse),
        "{err:?}"
    );
    assert!(a.listeners().is_empty());
}

#[tokio::test]
async fn dropping_the_manager_closes_everything() {
    let (a, mut ea) = manager(TransportConfig::default());
    let (b, _eb) = manager(TransportConfig::default());
    let la = a.listen(Transport::Tcp, lo(1)).await.unwrap();
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    a.send(&SendTarget::new(Transport::Tcp, lb.local), sip("x"))
        .await
        .unwrap();
    drop(a);
    // the event stream ends once every task is gone
    timeout(WAIT, async { while ea.recv().await.is_some() {} })
        .await
        .unwrap();
    // and the listening socket is closed
    assert!(TcpStream::connect(la.local).await.is_err());
}

#[tokio::test]
async fn tcp_framing_split_and_coalesced() {
    let (b, mut eb) = manager(TransportConfig::default());
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let mut raw = TcpStream::connect(lb.local).await.unwrap();
    raw.set_nodelay(true).unwrap();

    // one message cut into many writes
    let one = sip("split");
    for chunk in one.chunks(7) {
        raw.write_all(chunk).await.unwrap();
        raw.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(received(&mut eb).await.2, one);

    // three messages (and a ping) in one write
    let mut many = Vec::new();
    many.extend_from_slice(&sip("m1"));
    many.extend_from_slice(&sip("m2"));
    many.extend_from_slice(b"\r\n\r\n");
    many.extend_from_slice(&sip("m3"));
    raw.write_all(&many).await.unwrap();
    for tag in ["m1", "m2", "m3"] {
        assert_eq!(received(&mut eb).await.2, sip(tag));
    }
    // the ping between them was answered
    let mut pong = [0u8; 2];
    timeout(WAIT, raw.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
}

/// A SIP request with a body of `size` bytes.
fn big_sip(tag: &str, size: usize) -> Bytes {
    let body: String = (0..size)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    Bytes::from(format!(
        "MESSAGE sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK{tag}\r\n\
         From: <sip:alice@example.com>;tag=1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {tag}@test\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Reads come at most 16 KiB at a time: messages far larger than that,
/// small ones and pings in the same write, all framed whole and in order.
#[tokio::test]
async fn large_messages_between_small_ones_and_pings_framed_whole() {
    let (b, mut eb) = manager(TransportConfig::default());
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let mut raw = TcpStream::connect(lb.local).await.unwrap();
    raw.set_nodelay(true).unwrap();
    let big = big_sip("big", 60_000);
    let mut all = Vec::new();
    all.extend_from_slice(&sip("s1"));
    all.extend_from_slice(&big);
    all.extend_from_slice(b"\r\n\r\n");
    all.extend_from_slice(&sip("s2"));
    all.extend_from_slice(&big_sip("big2", 20_000));
    raw.write_all(&all).await.unwrap();
    assert_eq!(received(&mut eb).await.2, sip("s1"));
    assert_eq!(received(&mut eb).await.2, big);
    assert_eq!(received(&mut eb).await.2, sip("s2"));
    assert_eq!(received(&mut eb).await.2, big_sip("big2", 20_000));
    let mut pong = [0u8; 2];
    timeout(WAIT, raw.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    // then small again, a byte at a time
    for chunk in sip("s3").chunks(1) {
        raw.write_all(chunk).await.unwrap();
    }
    assert_eq!(received(&mut eb).await.2, sip("s3"));

    // and over TLS, both ways
    let pki = pki();
    let (c, mut ec) = manager(TransportConfig {
        tls_client: Some(tls_client(&pki)),
        ..TransportConfig::default()
    });
    let (d, mut ed) = manager(TransportConfig {
        tls_server: Some(tls_server(&pki)),
        ..TransportConfig::default()
    });
    let ld = d.listen(Transport::Tls, lo(1)).await.unwrap();
    let to_d = SendTarget::new(Transport::Tls, ld.local);
    let flow = c.send(&to_d, sip("t1")).await.unwrap();
    c.send(&to_d, big.clone()).await.unwrap();
    c.send(&to_d, sip("t2")).await.unwrap();
    assert_eq!(received(&mut ed).await.2, sip("t1"));
    assert_eq!(received(&mut ed).await.2, big);
    assert_eq!(received(&mut ed).await.2, sip("t2"));
    let back = SendTarget::new(Transport::Tls, flow.local);
    d.send(&back, big.clone()).await.unwrap();
    d.send(&back, sip("t3")).await.unwrap();
    assert_eq!(received(&mut ec).await.2, big);
    assert_eq!(received(&mut ec).await.2, sip("t3"));
}

#[tokio::test]
async fn ping_is_answered_with_a_pong() {
    let (a, mut ea) = manager(TransportConfig::default());
    let (b, _eb) = manager(TransportConfig::default());
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();

    // a raw client pings the listener
    let mut raw = TcpStream::connect(lb.local).await.unwrap();
    raw.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    timeout(WAIT, raw.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");

    // a manager pings its own outgoing connection and sees the pong
    let flow = a
        .send(&SendTarget::new(Transport::Tcp, lb.local), sip("hello"))
        .await
        .unwrap();
    let ca = flow.connection.unwrap();
    a.ping(ca).unwrap();
    let got = wait_for(&mut ea, |e| match e {
        TransportEvent::PongReceived { connection } => Some(connection),
        _ => None,
    })
    .await;
    assert_eq!(got, ca);
}

#[tokio::test]
async fn framing_error_closes_the_connection() {
    let (b, mut eb) = manager(TransportConfig::default());
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let mut raw = TcpStream::connect(lb.local).await.unwrap();
    let id = wait_for(&mut eb, |e| match e {
        TransportEvent::ConnectionOpened { info } => Some(info.id),
        _ => None,
    })
    .await;
    raw.write_all(b"OPTIONS sip:b@h SIP/2.0\r\nCall-ID: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        closed(&mut eb, id).await,
        CloseReason::Framing(FramingError::MissingContentLength)
    );
    // the peer sees the close
    let mut buf = [0u8; 16];
    let n = timeout(WAIT, raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(b.connections().is_empty());
}

#[tokio::test]
async fn close_one_connection() {
    let (a, mut ea) = manager(TransportConfig::default());
    let (b, mut eb) = manager(TransportConfig::default());
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let target = SendTarget::new(Transport::Tcp, lb.local);
    let ca = a.send(&target, sip("x")).await.unwrap().connection.unwrap();
    let (cb, _, _) = received(&mut eb).await;

    assert!(a.close_connection(ca, CloseReason::KeepAliveTimeout));
    assert_eq!(closed(&mut ea, ca).await, CloseReason::KeepAliveTimeout);
    assert_eq!(closed(&mut eb, cb.unwrap()).await, CloseReason::PeerClosed);
    assert!(a.connections().is_empty());
    assert!(!a.close_connection(ca, CloseReason::Closed));

    // the flow is gone for good; a send without it opens a new connection
    let err = a
        .send(&target.clone().with_connection(ca), sip("y"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SendError::ConnectionGone(id) if id == ca),
        "{err:?}"
    );
    let again = a.send(&target, sip("z")).await.unwrap();
    assert_ne!(again.connection, Some(ca));
}

#[tokio::test]
async fn shutdown_streams_keeps_listeners() {
    let pki = pki();
    let (a, mut ea) = manager(TransportConfig {
        tls_client: Some(tls_client(&pki)),
        ..TransportConfig::default()
    });
    let (b, _eb) = manager(TransportConfig {
        tls_server: Some(tls_server(&pki)),
        ..TransportConfig::default()
    });
    let la = a.listen(Transport::Tcp, lo(1)).await.unwrap();
    let lu = a.listen(Transport::Udp, lo(1)).await.unwrap();
    let tcp = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let tls = b.listen(Transport::Tls, lo(1)).await.unwrap();
    let c1 = a
        .send(&SendTarget::new(Transport::Tcp, tcp.local), sip("1"))
        .await
        .unwrap()
        .connection
        .unwrap();
    let c2 = a
        .send(&SendTarget::new(Transport::Tls, tls.local), sip("2"))
        .await
        .unwrap()
        .connection
        .unwrap();

    assert_eq!(a.shutdown_streams(), 2);
    let mut closes = Vec::new();
    while closes.len() < 2 {
        closes.push(
            wait_for(&mut ea, |e| match e {
                TransportEvent::ConnectionClosed { info, reason } => Some((info.id, reason)),
                _ => None,
            })
            .await,
        );
    }
    closes.sort_by_key(|(id, _)| *id);
    assert_eq!(
        closes,
        vec![(c1, CloseReason::ShutDown), (c2, CloseReason::ShutDown)]
    );
    assert!(a.connections().is_empty());
    let listeners = a.listeners();
    assert_eq!(listeners.len(), 2);
    assert!(listeners.iter().any(|l| l.id == la.id));
    assert!(listeners.iter().any(|l| l.id == lu.id));

    // the TCP listener still accepts
    let mut raw = TcpStream::connect(la.local).await.unwrap();
    raw.write_all(&sip("still")).await.unwrap();
    assert_eq!(received(&mut ea).await.2, sip("still"));
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close_unless_pinned() {
    // paused clock: the timers run in virtual time, nothing waits for real
    // (shorter than the helpers' WAIT, which runs in virtual time too)
    let idle = Duration::from_secs(3);
    let (a, mut ea) = manager(TransportConfig {
        idle_timeout: None,
        ..TransportConfig::default()
    });
    let (b, mut eb) = manager(TransportConfig {
        idle_timeout: Some(idle),
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let target = SendTarget::new(Transport::Tcp, lb.local);

    // not pinned: closed after the idle time
    let ca = a.send(&target, sip("1")).await.unwrap().connection.unwrap();
    let cb = received(&mut eb).await.0.unwrap();
    let start = tokio::time::Instant::now();
    let reason = closed(&mut eb, cb).await;
    assert_eq!(reason, CloseReason::Idle);
    assert!(start.elapsed() >= idle);
    assert_eq!(closed(&mut ea, ca).await, CloseReason::PeerClosed);

    // pinned: stays open however long, closes once unpinned
    let ca = a.send(&target, sip("2")).await.unwrap().connection.unwrap();
    let cb = received(&mut eb).await.0.unwrap();
    assert!(b.set_pinned(cb, true));
    tokio::time::sleep(idle * 5).await;
    assert!(b.connections().iter().any(|c| c.id == cb));
    assert!(a.connections().iter().any(|c| c.id == ca));
    assert!(b.set_pinned(cb, false));
    let reason = closed(&mut eb, cb).await;
    assert_eq!(reason, CloseReason::Idle);
}

// ---------------------------------------------------------------- TLS

#[tokio::test]
async fn tls_both_ways_with_connection_reuse() {
    let pki = pki();
    let (a, mut ea) = manager(TransportConfig {
        tls_client: Some(tls_client(&pki)),
        ..TransportConfig::default()
    });
    let (b, mut eb) = manager(TransportConfig {
        tls_server: Some(tls_server(&pki)),
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tls, lo(1)).await.unwrap();

    // verified against the IP address, then reused
    let flow = a
        .send(&SendTarget::new(Transport::Tls, lb.local), sip("one"))
        .await
        .unwrap();
    let ca = flow.connection.unwrap();
    let (cb, remote, bytes) = received(&mut eb).await;
    assert_eq!((remote, bytes), (flow.local, sip("one")));
    let again = a
        .send(&SendTarget::new(Transport::Tls, lb.local), sip("two"))
        .await
        .unwrap();
    assert_eq!(again.connection, Some(ca));
    assert_eq!(received(&mut eb).await, (cb, flow.local, sip("two")));

    // the reply goes back on the peer's connection
    let reply = b
        .send(&SendTarget::new(Transport::Tls, flow.local), sip("reply"))
        .await
        .unwrap();
    assert_eq!(reply.connection, cb);
    assert_eq!(received(&mut ea).await, (Some(ca), lb.local, sip("reply")));

    // verified for the address, it serves a name its certificate also
    // carries (RFC 5626 §4.3), not one it does not: that one gets a
    // connection of its own, which verification refuses
    let named = a
        .send(
            &SendTarget::new(Transport::Tls, lb.local).with_server_name("localhost"),
            sip("named"),
        )
        .await
        .unwrap();
    assert_eq!(named.connection, Some(ca));
    assert_eq!(received(&mut eb).await.2, sip("named"));
    let other = a
        .send(
            &SendTarget::new(Transport::Tls, lb.local).with_server_name("other.example.test"),
            sip("other"),
        )
        .await;
    assert!(
        matches!(other, Err(SendError::TlsHandshake(_))),
        "{other:?}"
    );
    assert_eq!(a.connections().len(), 1);
}

#[tokio::test]
async fn tls_untrusted_certificate_is_rejected_by_default() {
    let pki = pki();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("siproam-tls-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, chain, key) = (
        dir.join("ca.pem"),
        dir.join("chain.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&chain, &pki.chain_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();

    let (b, mut eb) = manager(TransportConfig {
        tls_server: Some(TlsServerConfig::from_pem_files(&chain, &key).unwrap()),
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tls, lo(1)).await.unwrap();
    let target = SendTarget::new(Transport::Tls, lb.local).with_server_name("localhost");

    // default: the built-in roots only
    let (plain, _ep) = manager(TransportConfig::default());
    let err = plain.send(&target, sip("x")).await.unwrap_err();
    assert!(matches!(err, SendError::TlsHandshake(_)), "{err:?}");
    assert!(plain.connections().is_empty());

    // the CA trusted explicitly (from a PEM file)
    let (trusting, _et) = manager(TransportConfig {
        tls_client: Some(TlsClientConfig::with_ca_pem_file(&ca, true).unwrap()),
        ..TransportConfig::default()
    });
    trusting.send(&target, sip("ok")).await.unwrap();
    assert_eq!(received(&mut eb).await.2, sip("ok"));

    // a name the certificate does not carry is rejected too
    let err = trusting
        .send(
            &SendTarget::new(Transport::Tls, lb.local).with_server_name("example.com"),
            sip("x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::TlsHandshake(_)), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn tls_listener_needs_a_certificate() {
    let (a, _ea) = manager(TransportConfig::default());
    let err = a.listen(Transport::Tls, lo(1)).await.unwrap_err();
    assert!(matches!(err, ListenError::NoTlsServerConfig), "{err:?}");
}

// ---------------------------------------------------------------- network change

#[tokio::test]
async fn restart_listener_keeps_address_and_port_and_listens_again() {
    let pki = pki();
    let (b, mut eb) = manager(TransportConfig {
        tls_server: Some(tls_server(&pki)),
        ..TransportConfig::default()
    });
    let (a, _ea) = manager(TransportConfig {
        tls_client: Some(tls_client(&pki)),
        ..TransportConfig::default()
    });
    let udp = b.listen(Transport::Udp, lo(2)).await.unwrap();
    let tcp = b.listen(Transport::Tcp, lo(2)).await.unwrap();
    let tls = b.listen(Transport::Tls, lo(2)).await.unwrap();

    // a connection accepted on the TCP port stays open across the restart
    let mut kept = TcpStream::connect(tcp.local).await.unwrap();
    kept.write_all(&sip("before")).await.unwrap();
    let (kept_id, _, _) = received(&mut eb).await;

    for old in [udp, tcp, tls] {
        let new = b.restart_listener(old.id).await.unwrap();
        assert_eq!(new, old, "same id, transport, requested and bound address");
    }
    assert_eq!(b.listeners().len(), 3);
    assert!(b.connections().iter().any(|c| Some(c.id) == kept_id));

    // UDP really receives again
    let raw = tokio::net::UdpSocket::bind(lo(1)).await.unwrap();
    raw.send_to(&sip("udp"), udp.local).await.unwrap();
    assert_eq!(received(&mut eb).await.2, sip("udp"));
    // TCP accepts again
    let mut raw = TcpStream::connect(tcp.local).await.unwrap();
    raw.write_all(&sip("tcp")).await.unwrap();
    let (conn, _, bytes) = received(&mut eb).await;
    assert_eq!(bytes, sip("tcp"));
    assert_ne!(conn, kept_id);
    // TLS accepts (and handshakes) again
    a.send(&SendTarget::new(Transport::Tls, tls.local), sip("tls"))
        .await
        .unwrap();
    assert_eq!(received(&mut eb).await.2, sip("tls"));
    // and the old connection still works
    kept.write_all(&sip("after")).await.unwrap();
    assert_eq!(
        received(&mut eb).await,
        (kept_id, kept.local_addr().unwrap(), sip("after"))
    );
}

/// An address oracle whose addresses can be taken away.
#[derive(Debug, Default)]
struct FakeAddresses {
    gone: Mutex<HashSet<IpAddr>>,
}

impl AddressOracle for FakeAddresses {
    fn is_local(&self, ip: IpAddr) -> bool {
        !self.gone.lock().unwrap().contains(&ip)
    }
}

#[tokio::test]
async fn restart_listener_on_a_vanished_address_fails() {
    let oracle = Arc::new(FakeAddresses::default());
    let (b, _eb) = manager(TransportConfig {
        address_oracle: oracle.clone(),
        ..TransportConfig::default()
    });
    let udp = b.listen(Transport::Udp, lo(7)).await.unwrap();
    let tcp = b.listen(Transport::Tcp, lo(7)).await.unwrap();
    let other = b.listen(Transport::Tcp, lo(8)).await.unwrap();

    oracle.gone.lock().unwrap().insert(lo(7).ip());
    for old in [udp, tcp] {
        let err = b.restart_listener(old.id).await.unwrap_err();
        assert!(
            matches!(err, ListenError::AddressGone { ip } if ip == lo(7).ip()),
            "{err:?}"
        );
    }
    // nothing moved to another address
    assert_eq!(b.listeners(), vec![other]);
    assert!(TcpStream::connect(tcp.local).await.is_err());
    let err = b.restart_listener(udp.id).await.unwrap_err();
    assert!(matches!(err, ListenError::UnknownListener(_)), "{err:?}");
    // the listener on an address still present restarts
    assert_eq!(b.restart_listener(other.id).await.unwrap(), other);
}

#[test]
fn source_address_towards_loopback() {
    let ip = source_address_for("127.0.0.5:5060".parse().unwrap()).unwrap();
    assert!(ip.is_loopback(), "{ip}");
    assert!(matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 127));
}

#[test]
fn system_addresses_know_loopback() {
    let oracle = siproam::transport::SystemAddresses;
    assert!(oracle.is_local(lo(9).ip()));
}

// ------------------------------------------------- admission and deadlines

/// A raw TCP client bound to `from` (any 127.0.0.0/8 address).
async fn raw_from(from: SocketAddr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(from).unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits until the server closes `raw` (end of stream or reset); false if
/// it is still open after the generous wait.
async fn closed_by_server(raw: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    timeout(WAIT, async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // pongs
            }
        }
    })
    .await
    .is_ok()
}

async fn opened(events: &mut TransportEvents) -> (ConnectionId, SocketAddr) {
    wait_for(events, |e| match e {
        TransportEvent::ConnectionOpened { info } => Some((info.id, info.remote)),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn connections_beyond_the_per_source_cap_are_closed_at_once() {
    let (b, mut eb) = manager(TransportConfig {
        max_connections_per_source: 2,
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let mut first = raw_from(lo(5), lb.local).await;
    let _second = raw_from(lo(5), lb.local).await;
    opened(&mut eb).await;
    opened(&mut eb).await;

    // the third from the same address is closed without a word
    let mut third = raw_from(lo(5), lb.local).await;
    assert!(closed_by_server(&mut third).await);

    // another source is served, and so are the first two
    let mut other = raw_from(lo(6), lb.local).await;
    other.write_all(&sip("other")).await.unwrap();
    assert_eq!(received(&mut eb).await.2, sip("other"));
    first.write_all(&sip("first")).await.unwrap();
    assert_eq!(received(&mut eb).await.2, sip("first"));
    assert_eq!(b.connections().len(), 3);
}

#[tokio::test]
async fn a_full_table_evicts_the_oldest_connection_that_never_carried_sip() {
    let (b, mut eb) = manager(TransportConfig {
        max_connections: 3,
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    // a real client, then two idle sockets
    let mut real = raw_from(lo(7), lb.local).await;
    real.write_all(&sip("real")).await.unwrap();
    let (real_id, _, _) = received(&mut eb).await;
    let mut idle1 = raw_from(lo(8), lb.local).await;
    let (idle1_id, _) = opened(&mut eb).await;
    let mut idle2 = raw_from(lo(8), lb.local).await;
    let (idle2_id, _) = opened(&mut eb).await;

    // a new client takes the oldest idle socket's place
    let mut new = raw_from(lo(9), lb.local).await;
    assert_eq!(closed(&mut eb, idle1_id).await, CloseReason::Evicted);
    assert!(closed_by_server(&mut idle1).await);
    new.write_all(&sip("new")).await.unwrap();
    assert_eq!(received(&mut eb).await.2, sip("new"));

    // once every connection has carried SIP, nothing can be evicted: refused
    idle2.write_all(&sip("late")).await.unwrap();
    assert_eq!(received(&mut eb).await.0, Some(idle2_id));
    let mut refused = raw_from(lo(10), lb.local).await;
    assert!(closed_by_server(&mut refused).await);
    let open: HashSet<ConnectionId> = b.connections().iter().map(|c| c.id).collect();
    assert_eq!(open.len(), 3);
    assert!(open.contains(&real_id.unwrap()) && open.contains(&idle2_id));
    real.write_all(&sip("still")).await.unwrap();
    assert_eq!(received(&mut eb).await.2, sip("still"));
}

#[tokio::test]
async fn pinned_connections_are_never_evicted() {
    let (b, mut eb) = manager(TransportConfig {
        max_connections: 1,
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let _held = raw_from(lo(11), lb.local).await;
    let (held_id, _) = opened(&mut eb).await;
    assert!(b.set_pinned(held_id, true));
    let mut refused = raw_from(lo(12), lb.local).await;
    assert!(closed_by_server(&mut refused).await);
    assert_eq!(b.connections()[0].id, held_id);
}

/// Writes `bytes` one at a time every 50 ms until the server closes the
/// connection; returns how many were written (all of them: never closed).
async fn trickle(raw: &mut TcpStream, bytes: &[u8]) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if raw.write_all(&[*b]).await.is_err() {
            return i;
        }
        let mut buf = [0u8; 64];
        let read = timeout(Duration::from_millis(50), raw.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return i + 1;
        }
    }
    bytes.len()
}

#[tokio::test]
async fn trickled_bytes_do_not_extend_the_first_message_deadline() {
    let (b, mut eb) = manager(TransportConfig {
        idle_timeout: None,
        first_message_timeout: Some(Duration::from_millis(200)),
        message_timeout: None,
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let mut raw = raw_from(lo(13), lb.local).await;
    let (id, _) = opened(&mut eb).await;
    // 120 bytes at one per 50 ms would take 6 s; the deadline is 200 ms
    let message = sip("slow-loris-first-message-padding-padding-padding");
    let written = trickle(&mut raw, &message[..120]).await;
    assert!(written < 120, "still open after every byte");
    assert_eq!(closed(&mut eb, id).await, CloseReason::FirstMessageTimeout);
}

#[tokio::test]
async fn a_partial_message_must_complete_within_the_message_timeout() {
    let (b, mut eb) = manager(TransportConfig {
        idle_timeout: None,
        first_message_timeout: None,
        message_timeout: Some(Duration::from_millis(200)),
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    let mut raw = raw_from(lo(14), lb.local).await;
    raw.write_all(&sip("whole")).await.unwrap();
    let (id, _, bytes) = received(&mut eb).await;
    assert_eq!(bytes, sip("whole"));
    // pings between messages are fine; a message trickled is not
    raw.write_all(b"\r\n\r\n").await.unwrap();
    let message = sip("slow-loris-second-message-padding-padding-padding");
    let written = trickle(&mut raw, &message[..120]).await;
    assert!(written < 120, "still open after every byte");
    assert_eq!(
        closed(&mut eb, id.unwrap()).await,
        CloseReason::MessageTimeout
    );
}

/// The manager's deadline sweeper closes each kind of overdue connection
/// with its reason — no first message, a message left unfinished, idle —
/// leaves a pinned one alone, and ends with the manager (no task left).
#[tokio::test]
async fn the_sweeper_closes_each_kind_of_overdue_connection_and_stops_with_the_manager() {
    let (b, mut eb) = manager(TransportConfig {
        idle_timeout: Some(Duration::from_millis(1500)),
        first_message_timeout: Some(Duration::from_millis(200)),
        message_timeout: Some(Duration::from_millis(200)),
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
    // silent from the start
    let _silent = raw_from(lo(18), lb.local).await;
    let (silent, _) = opened(&mut eb).await;
    // a whole message, then part of one
    let mut partial = raw_from(lo(19), lb.local).await;
    partial.write_all(&sip("whole")).await.unwrap();
    let partial_id = received(&mut eb).await.0.unwrap();
    partial.write_all(&sip("unfinished")[..40]).await.unwrap();
    // a whole message, then nothing
    let mut idle = raw_from(lo(20), lb.local).await;
    idle.write_all(&sip("idle")).await.unwrap();
    let idle_id = received(&mut eb).await.0.unwrap();
    // the same, pinned
    let mut pinned = raw_from(lo(21), lb.local).await;
    pinned.write_all(&sip("pinned")).await.unwrap();
    let pinned_id = received(&mut eb).await.0.unwrap();
    assert!(b.set_pinned(pinned_id, true));

    let mut reasons = std::collections::HashMap::new();
    timeout(WAIT, async {
        while reasons.len() < 3 {
            match eb.recv().await.expect("event stream ended") {
                TransportEvent::ConnectionClosed { info, reason } => {
                    reasons.insert(info.id, reason);
                }
                _ => continue,
            }
        }
    })
    .await
    .expect("three connections closed");
    assert_eq!(
        reasons.get(&silent),
        Some(&CloseReason::FirstMessageTimeout)
    );
    assert_eq!(reasons.get(&partial_id), Some(&CloseReason::MessageTimeout));
    assert_eq!(reasons.get(&idle_id), Some(&CloseReason::Idle));
    assert!(!reasons.contains_key(&pinned_id));
    assert!(b.connections().iter().any(|c| c.id == pinned_id));

    // the manager gone, every task it started ends: the sweeper too
    drop((b, eb));
    let metrics = tokio::runtime::Handle::current().metrics();
    timeout(WAIT, async {
        while metrics.num_alive_tasks() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every task of the manager ended");
}

#[tokio::test]
async fn only_sip_messages_and_keepalives_on_a_sip_flow_keep_a_connection_from_idling() {
    let idle = Duration::from_millis(300);
    let (b, mut eb) = manager(TransportConfig {
        idle_timeout: Some(idle),
        first_message_timeout: None,
        message_timeout: None,
        ..TransportConfig::default()
    });
    let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();

    // pings on a connection that never carried SIP: closed while pinging
    let mut pinger = raw_from(lo(15), lb.local).await;
    let (pinger_id, _) = opened(&mut eb).await;
    let pings = b"\r\n\r\n".repeat(30);
    let written = trickle(&mut pinger, &pings).await;
    assert!(written < pings.len(), "pings kept it open");
    assert_eq!(closed(&mut eb, pinger_id).await, CloseReason::Idle);

    // a message trickled on a SIP flow does not reset the idle timer
    let mut loris = raw_from(lo(16), lb.local).await;
    loris.write_all(&sip("hello")).await.unwrap();
    let loris_id = received(&mut eb).await.0.unwrap();
    let message = sip("slow-loris-padding-padding-padding-padding-padding");
    let written = trickle(&mut loris, &message[..120]).await;
    assert!(written < 120, "trickled bytes kept it open");
    assert_eq!(closed(&mut eb, loris_id).await, CloseReason::Idle);

    // a flow that carried SIP stays up on RFC 5626 pings
    let mut flow = raw_from(lo(17), lb.local).await;
    flow.write_all(&sip("register")).await.unwrap();
    let flow_id = received(&mut eb).await.0.unwrap();
    // 20 pings 50 ms apart span more than three idle periods
    let pings = b"\r\n\r\n".repeat(20);
    let mut answered = 0;
    for ping in pings.chunks(4) {
        flow.write_all(ping).await.unwrap();
        let mut pong = [0u8; 2];
        timeout(WAIT, flow.read_exact(&mut pong))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&pong, b"\r\n");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered, 20);
    assert!(b.connections().iter().any(|c| c.id == flow_id));
    // and idles out once they stop
    assert_eq!(closed(&mut eb, flow_id).await, CloseReason::Idle);
}

/// `report_pings`: a ping on a connection that carried SIP is reported
/// (the edge proxy keeps its flows by them), a flood of pings costs at
/// most one report per `PING_REPORT_INTERVAL` per connection, and without
/// the setting none is reported; pongs go out either way.
#[tokio::test]
async fn pings_are_reported_only_when_asked_and_at_most_once_an_interval() {
    for report in [true, false] {
        let (b, mut eb) = manager(TransportConfig {
            report_pings: report,
            ..TransportConfig::default()
        });
        let lb = b.listen(Transport::Tcp, lo(1)).await.unwrap();
        let mut raw = TcpStream::connect(lb.local).await.unwrap();
        raw.write_all(&sip("first")).await.unwrap();
        let (conn, _, _) = received(&mut eb).await;
        let start = tokio::time::Instant::now();
        // a flood of 1,000 pings, then a message
        let mut flood = b"\r\n\r\n".repeat(1000);
        flood.extend_from_slice(&sip("after"));
        raw.write_all(&flood).await.unwrap();
        let mut reports = 0u64;
        timeout(WAIT, async {
            loop {
                match eb.recv().await.unwrap() {
                    TransportEvent::PingReceived { connection } => {
                        assert_eq!(Some(connection), conn);
                        reports += 1;
                    }
                    TransportEvent::Received { bytes, .. } if bytes == sip("after") => break,
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        let intervals = start.elapsed().as_secs() / PING_REPORT_INTERVAL.as_secs().max(1) + 1;
        if report {
            assert!(reports >= 1, "the first ping is reported");
            assert!(
                reports <= intervals,
                "{reports} reports in {intervals} interval(s)"
            );
        } else {
            assert_eq!(reports, 0);
        }
        // pongs go out either way (a full send queue skips some)
        let mut pong = [0u8; 2];
        timeout(WAIT, raw.read_exact(&mut pong))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&pong, b"\r\n");
    }
}
