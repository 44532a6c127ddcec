//! An outgoing TCP connection whose answer comes before the driver hears
//! that its connect is done: the connect runs in a task of its own that
//! reports on another channel than the connection's events, so the
//! registrar's 200 can be read first. It must still arrive on the flow the
//! REGISTER went out on: when it made a second flow for the same
//! connection, the registrar closing that connection later went unnoticed
//! by the account (its flow was the other one) and the REGISTER sent "at
//! once" went to the dead second flow and was lost - no binding until the
//! transaction timed out (`faults.rs`
//! `a_restarted_registrar_gets_the_binding_back_at_once_over_tcp`, about 1
//! run in 12 with four of them in parallel).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use siproam::core::{Event, RegistrationState};
use siproam::transport::Transport;
use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, Ipv6Use, UserAgent};
use siproam_sip::{HeaderName, Message, MessageBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// The registrar closes the registration's connection right after each
/// binding (a restart): every time, the account registers again at once
/// over a new connection. 30 rounds; each waits up to 10 s for the next
/// REGISTER (a lost one would only be retried after its 32 s timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_registration_connection_brings_a_new_register_every_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reg_addr = listener.local_addr().unwrap();
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
    for round in 0..30 {
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap_or_else(|_| panic!("round {round}: no new connection within 10 s"))
            .unwrap();
        let mut pending = Vec::new();
        let req = tokio::time::timeout(
            Duration::from_secs(10),
            read_message(&mut stream, &mut pending),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: no REGISTER within 10 s"))
        .expect("a REGISTER");
        // answered at once: the 200 races the driver's news of the connect
        let contact = req.header(HeaderName::Contact).unwrap().to_owned();
        let resp = MessageBuilder::response_to(&req, 200, "OK", Some("reg1"))
            .header("Contact", &format!("{contact};expires=600"))
            .build()
            .unwrap();
        stream.write_all(&resp.to_bytes()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ep.next_event().await {
                    Some(EndpointEvent::Core(Event::Registration(r)))
                        if r.state == RegistrationState::Registered =>
                    {
                        return;
                    }
                    Some(_) => {}
                    None => panic!("the endpoint stopped"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: not registered within 10 s"));
        // the registrar goes away: FIN
        drop(stream);
    }
    ep.shutdown().await;
}
