//! What only real sockets show of a change: a listener configured on a
//! port comes back on that port at the new address, and the
//! registration's own TCP connection really closes (even with
//! `shutdown_transports` off) before `shutdown_registration_flow` is
//! reported.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use siproam::transport::Transport;
use siproam::{
    AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, IpChangeParams, Ipv6Use, UserAgent,
};
use siproam_sip::{HeaderName, Message, MessageBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A UDP port free on both addresses (checked by binding them).
fn port_free_on(a: IpAddr, b: IpAddr) -> u16 {
    for _ in 0..50 {
        let s = std::net::UdpSocket::bind(SocketAddr::new(a, 0)).unwrap();
        let port = s.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(SocketAddr::new(b, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both {a} and {b}");
}

/// The stage named `stage` of the next change (stages before it skipped).
async fn stage(ep: &mut EndpointHandle, stage: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ep.next_event().await {
                Some(EndpointEvent::IpChange(c)) if format!("{}", c.stage) == stage => {
                    return format!("{:?}", c.status);
                }
                Some(_) => {}
                None => panic!("the endpoint stopped"),
            }
        }
    })
    .await
    .expect("the stage in time")
}

/// `--listen udp:127.0.0.2:PORT`, then a change to 127.0.0.4: the new
/// listener is 127.0.0.4:PORT (it was an ephemeral port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_a_configured_port_comes_back_on_that_port() {
    let port = port_free_on(ip("127.0.0.2"), ip("127.0.0.4"));
    let cfg = EndpointConfig {
        listen: vec![(Transport::Udp, SocketAddr::new(ip("127.0.0.2"), port))],
        ..Default::default()
    };
    let mut ep = EndpointHandle::start(cfg, Box::new(UserAgent))
        .await
        .unwrap();
    ep.ip_change(ip("127.0.0.4")).await.unwrap();
    let status = stage(&mut ep, "restart_listener").await;
    assert_eq!(status, "Ok(())");
    let listeners = ep.listeners().await.unwrap();
    assert!(
        listeners
            .iter()
            .any(|l| l.local == SocketAddr::new(ip("127.0.0.4"), port)),
        "{listeners:?}"
    );
    // and it answers there
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let options = format!(
        "OPTIONS sip:127.0.0.4:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-o1;rport\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.4>\r\nCall-ID: port-kept\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        me = sock.local_addr().unwrap().port()
    );
    sock.send_to(options.as_bytes(), SocketAddr::new(ip("127.0.0.4"), port))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(from, SocketAddr::new(ip("127.0.0.4"), port));
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));
    ep.shutdown().await;
}

/// Reads one SIP message (headers, no body) from a stream.
async fn read_message(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Message> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let bytes: Vec<u8> = pending.drain(..end + 4).collect();
            return Message::parse(Bytes::from(bytes)).ok();
        }
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A scripted TCP registrar: every connection it accepts is handed over,
/// and every REGISTER on it answered 200 with its Contact.
async fn registrar() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if tx.send(stream).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

async fn answer_register(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    let req = tokio::time::timeout(Duration::from_secs(10), read_message(stream, pending))
        .await
        .expect("a REGISTER in time")
        .expect("a REGISTER");
    let contact = req.header(HeaderName::Contact).unwrap().to_owned();
    let resp = MessageBuilder::response_to(&req, 200, "OK", Some("reg1"))
        .header("Contact", &format!("{contact};expires=600"))
        .build()
        .unwrap();
    stream.write_all(&resp.to_bytes()).await.unwrap();
}

/// With `shutdown_transports` off and `shutdown_registration_flow` on,
/// the registration's TCP connection is closed by the change, and the
/// stage is reported once it is (it was reported while the connection
/// stayed open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registration_connection_closes_before_its_stage_is_reported() {
    let (reg_addr, mut conns) = registrar().await;
    let cfg = EndpointConfig {
        listen: vec![
            (Transport::Udp, "127.0.0.2:0".parse().unwrap()),
            (Transport::Tcp, "127.0.0.2:0".parse().unwrap()),
        ],
        ..Default::default()
    };
    let mut ep = EndpointHandle::start(cfg, Box::new(UserAgent))
        .await
        .unwrap();
    ep.register(AccountSpec {
        aor: "sip:alice@example.test".into(),
        registrar: format!("sip:{reg_addr};transport=tcp"),
        username: None,
        password: None,
        instance_id: None,
        outbound: false,
        reg_id: None,
        expires: 600,
        ipv6_sip: Ipv6Use::Enabled,
        ipv6_media: Ipv6Use::Enabled,
        ip_change: None,
        flow: Default::default(),
    })
    .await
    .unwrap();
    let mut first = tokio::time::timeout(Duration::from_secs(10), conns.recv())
        .await
        .expect("a connection in time")
        .unwrap();
    let mut pending = Vec::new();
    answer_register(&mut first, &mut pending).await;
    let mut params = IpChangeParams::new(ip("127.0.0.4"));
    params.shutdown_transports = false;
    ep.handle_ip_change(params).await.unwrap();
    assert_eq!(stage(&mut ep, "shutdown_registration_flow").await, "Ok(())");
    // the old connection is closed (EOF, or a reset)
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match first.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the registration's connection is still open"
    );
    // the REGISTER goes over a new connection
    let mut second = tokio::time::timeout(Duration::from_secs(10), conns.recv())
        .await
        .expect("a new connection in time")
        .unwrap();
    assert_eq!(second.peer_addr().unwrap().ip(), ip("127.0.0.4"));
    let mut pending = Vec::new();
    answer_register(&mut second, &mut pending).await;
    ep.shutdown().await;
}
