//! An account with no registrar (a direct call) also moves: after
//! `ip_change`, the re-INVITE to a scripted peer on a raw UDP socket
//! carries the new address in its Via sent-by, its Contact and its SDP,
//! comes from the new address, and so does the ACK and the RTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use siproam::core::{CallEvent, CallState, Event};
use siproam::transport::Transport;
use siproam::{AudioSpec, EndpointConfig, EndpointEvent, EndpointHandle, Phone, PhoneConfig};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};
use tokio::net::UdpSocket;

/// The next request of `method` on the peer's SIP socket (others skipped).
async fn next_request(sock: &UdpSocket, method: Method<'_>) -> (Message, SocketAddr) {
    let mut buf = vec![0u8; 65_535];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            if m.method() == Some(method) {
                return (m, from);
            }
        }
    })
    .await
    .expect("the request in time")
}

fn answer_sdp(rtp: SocketAddr) -> Bytes {
    Bytes::from(format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=sendrecv\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    ))
}

async fn ok(sock: &UdpSocket, req: &Message, to: SocketAddr, contact: SocketAddr, rtp: SocketAddr) {
    let resp = MessageBuilder::response_to(req, 200, "OK", Some("peer1"))
        .header("Contact", &format!("<sip:bob@{contact}>"))
        .body("application/sdp", answer_sdp(rtp))
        .build()
        .unwrap();
    sock.send_to(&resp.to_bytes(), to).await.unwrap();
}

fn assert_moved(m: &Message, ip: &str) {
    let via = m.top_via().unwrap();
    assert_eq!(via.host_str(), ip, "Via sent-by");
    if m.method() == Some(Method::Invite) {
        let contact = m.header(HeaderName::Contact).unwrap();
        assert!(contact.contains(&format!("@{ip}:")), "Contact {contact}");
        let sdp = std::str::from_utf8(m.body()).unwrap();
        assert!(sdp.contains(&format!("c=IN IP4 {ip}")), "SDP {sdp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_moves_via_contact_and_media() {
    let peer = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let peer_rtp = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let (peer_addr, rtp_addr) = (peer.local_addr().unwrap(), peer_rtp.local_addr().unwrap());
    let phone = Phone::new(
        PhoneConfig {
            play: AudioSpec::Tone(1000.0),
            ..Default::default()
        },
        4,
    );
    let cfg = EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.2:0".parse().unwrap())],
        ..Default::default()
    };
    let mut alice = EndpointHandle::start(cfg, Box::new(phone)).await.unwrap();
    alice
        .call(
            &format!("sip:bob@{peer_addr}"),
            "sip:alice@example.test",
            None,
        )
        .await
        .unwrap();
    let (invite, from) = next_request(&peer, Method::Invite).await;
    assert_moved(&invite, "127.0.0.2");
    ok(&peer, &invite, from, peer_addr, rtp_addr).await;
    let (ack, _) = next_request(&peer, Method::Ack).await;
    assert_moved(&ack, "127.0.0.2");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::Core(Event::Call(CallEvent::State {
                state: CallState::Confirmed,
                ..
            }))) = alice.next_event().await
            {
                break;
            }
        }
    })
    .await
    .unwrap();

    alice.ip_change("127.0.0.4".parse().unwrap()).await.unwrap();
    let (reinvite, from) = next_request(&peer, Method::Invite).await;
    assert_eq!(reinvite.call_id(), invite.call_id(), "the same dialog");
    assert!(reinvite.cseq().seq > invite.cseq().seq);
    assert_eq!(
        from.ip(),
        "127.0.0.4".parse::<IpAddr>().unwrap(),
        "sent from the new address"
    );
    assert_moved(&reinvite, "127.0.0.4");
    ok(&peer, &reinvite, from, peer_addr, rtp_addr).await;
    let (ack, from) = next_request(&peer, Method::Ack).await;
    assert_eq!(from.ip(), "127.0.0.4".parse::<IpAddr>().unwrap());
    assert_moved(&ack, "127.0.0.4");
    // RTP follows: packets from the new address reach the peer
    let mut buf = [0u8; 2048];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (_, src) = peer_rtp.recv_from(&mut buf).await.unwrap();
            if src.ip() == "127.0.0.4".parse::<IpAddr>().unwrap() {
                break;
            }
        }
    })
    .await
    .expect("RTP from the new address");
}
