//! The kernel's TCP keep-alive (`TransportConfig::tcp_keepalive`) on
//! connections opened and accepted, read back from the sockets with
//! getsockopt. Loopback only; every wait bounded.
//!
//! The sockets belong to the transport manager, so the test finds them
//! among the process's own descriptors (`/proc/self/fd`, Linux) by their
//! addresses and reads their options through a borrowed descriptor.

#![cfg(target_os = "linux")]
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use bytes::Bytes;
use siproam::transport::{
    ConnectionDirection, ConnectionInfo, SendTarget, TcpKeepalive, Transport, TransportConfig,
    TransportEvent, TransportEvents, TransportManager,
};

const WAIT: Duration = Duration::from_secs(10);

fn options() -> Bytes {
    Bytes::from_static(
        b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
          Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKka\r\n\
          From: <sip:alice@example.com>;tag=1\r\n\
          To: <sip:bob@example.com>\r\n\
          Call-ID: ka@test\r\n\
          CSeq: 1 OPTIONS\r\n\
          Content-Length: 0\r\n\r\n",
    )
}

async fn opened(events: &mut TransportEvents) -> ConnectionInfo {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(TransportEvent::ConnectionOpened { info }) = events.recv().await {
                return info;
            }
        }
    })
    .await
    .expect("no connection opened")
}

/// The keep-alive of the process's TCP socket with these addresses:
/// `None` when SO_KEEPALIVE is off, else (idle, interval, count).
fn keepalive_of(local: SocketAddr, peer: SocketAddr) -> Option<(Duration, Duration, u32)> {
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let entry = entry.expect("fd entry");
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is open (listed just now) and nothing in
        // this test closes sockets while it is borrowed here.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&borrowed);
        let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
        if addr(sock.local_addr()) != Some(local) || addr(sock.peer_addr()) != Some(peer) {
            continue;
        }
        if !sock.keepalive().expect("SO_KEEPALIVE") {
            return None;
        }
        return Some((
            sock.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            sock.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
            sock.tcp_keepalive_retries().expect("TCP_KEEPCNT"),
        ));
    }
    panic!("no socket {local} -> {peer} in this process");
}

/// A client and a server manager, one TCP connection between them; the
/// client's outgoing and the server's accepted connection.
async fn connected(
    client: Option<TcpKeepalive>,
    server: Option<TcpKeepalive>,
) -> (
    (TransportManager, TransportManager),
    ConnectionInfo,
    ConnectionInfo,
) {
    let (a, mut ea) = TransportManager::new(TransportConfig {
        tcp_keepalive: client,
        ..TransportConfig::default()
    });
    let (b, mut eb) = TransportManager::new(TransportConfig {
        tcp_keepalive: server,
        ..TransportConfig::default()
    });
    let listener = b
        .listen(Transport::Tcp, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    a.send(&SendTarget::new(Transport::Tcp, listener.local), options())
        .await
        .unwrap();
    let out = opened(&mut ea).await;
    let inc = opened(&mut eb).await;
    assert_eq!(out.direction, ConnectionDirection::Outgoing);
    assert_eq!(inc.direction, ConnectionDirection::Incoming);
    ((a, b), out, inc)
}

#[tokio::test]
async fn configured_keepalive_is_set_on_outgoing_and_accepted_connections() {
    let client = TcpKeepalive::new(60, 10, 5).unwrap();
    let server = TcpKeepalive::new(61, 11, 6).unwrap();
    let (_managers, out, inc) = connected(Some(client), Some(server)).await;
    assert_eq!(
        keepalive_of(out.local, out.remote),
        Some((Duration::from_secs(60), Duration::from_secs(10), 5)),
        "the outgoing connection"
    );
    assert_eq!(
        keepalive_of(inc.local, inc.remote),
        Some((Duration::from_secs(61), Duration::from_secs(11), 6)),
        "the accepted connection"
    );
}

#[tokio::test]
async fn without_the_setting_the_kernel_keepalive_stays_off() {
    let (_managers, out, inc) = connected(None, None).await;
    assert_eq!(keepalive_of(out.local, out.remote), None);
    assert_eq!(keepalive_of(inc.local, inc.remote), None);
}
