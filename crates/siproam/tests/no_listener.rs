//! An endpoint with no listener of a request's transport (a client with
//! no listener, issue 12 item 9): the Contact of a call names the flow's
//! own address — the connection opened first (TCP), or a UDP socket bound
//! for the purpose — never another transport's port. Loopback only; every
//! wait bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use siproam::transport::Transport;
use siproam::{AudioSpec, EndpointConfig, EndpointHandle, Phone, PhoneConfig};
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(10);

async fn phone(listen: Vec<(Transport, std::net::SocketAddr)>) -> EndpointHandle {
    let p = Phone::new(
        PhoneConfig {
            play: AudioSpec::Tone(1000.0),
            ..Default::default()
        },
        9,
    );
    let cfg = EndpointConfig {
        listen,
        ..Default::default()
    };
    EndpointHandle::start(cfg, Box::new(p)).await.unwrap()
}

/// The Contact header's value in a message's text.
fn contact_of(text: &str) -> String {
    text.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            (name.eq_ignore_ascii_case("contact") || name == "m").then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Contact in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tcp_with_only_a_udp_listener_names_its_connection() {
    let alice = phone(vec![(Transport::Udp, "127.0.0.2:0".parse().unwrap())]).await;
    let udp = alice.listeners().await.unwrap()[0].local;
    let bob = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bob_addr = bob.local_addr().unwrap();
    let _call = alice
        .call(
            &format!("sip:bob@{bob_addr};transport=tcp"),
            "sip:alice@example.test",
            None,
        )
        .await
        .unwrap();
    let (mut conn, from) = tokio::time::timeout(WAIT, bob.accept())
        .await
        .unwrap()
        .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the INVITE: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.starts_with("INVITE "), "{text}");
    let contact = contact_of(&text);
    assert!(
        contact.contains(&format!("@{from};transport=tcp")),
        "the Contact names the connection {from}, not the UDP listener {udp}: {contact}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_udp_with_no_listener_at_all_binds_a_socket_and_names_it() {
    let alice = phone(Vec::new()).await;
    assert!(alice.listeners().await.unwrap().is_empty());
    let bob = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bob_addr = bob.local_addr().unwrap();
    let _call = alice
        .call(
            &format!("sip:bob@{bob_addr}"),
            "sip:alice@example.test",
            None,
        )
        .await
        .unwrap();
    let mut buf = [0u8; 8192];
    let (n, from) = tokio::time::timeout(WAIT, bob.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.starts_with("INVITE "), "{text}");
    let contact = contact_of(&text);
    assert!(contact.contains(&format!("@{from}")), "{from}: {contact}");
    // the socket is on the address towards Bob, on a port the OS chose
    let listeners = alice.listeners().await.unwrap();
    assert_eq!(listeners.len(), 1);
    assert_eq!(
        (listeners[0].transport, listeners[0].local),
        (Transport::Udp, from)
    );
}
