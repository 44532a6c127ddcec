//! RFC 5626 §4.5's forced retry through the driver: an account waiting
//! out its back-off (30–60 s after a first failure) registers again at
//! once when the application asks (`EndpointHandle::retry_registrations`,
//! what the network watch does on every network event), against a
//! scripted registrar on 127.0.0.1 that answers the first REGISTER 503 and
//! the next ones 200.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use siproam::core::{Event, RegistrationEvent, RegistrationState};
use siproam::transport::Transport;
use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, Ipv6Use, UserAgent};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};
use tokio::net::UdpSocket;

/// The scripted registrar's port: 503 to the first REGISTER, 200 after.
async fn registrar() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let mut seen = 0;
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            if m.method() != Some(Method::Register) {
                continue;
            }
            seen += 1;
            let contact = m.header(HeaderName::Contact).unwrap_or_default().to_owned();
            let resp = if seen == 1 {
                MessageBuilder::response_to(&m, 503, "Service Unavailable", Some("reg"))
            } else {
                MessageBuilder::response_to(&m, 200, "OK", Some("reg"))
                    .header("Contact", &contact)
                    .header("Require", "outbound")
            };
            let _ = sock.send_to(&resp.build().unwrap().to_bytes(), from).await;
        }
    });
    port
}

async fn next_registration(ep: &mut EndpointHandle) -> RegistrationEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::Core(Event::Registration(r))) = ep.next_event().await {
                if r.state != RegistrationState::Registering {
                    return r;
                }
            }
        }
    })
    .await
    .expect("a registration event within 10 s")
}

#[tokio::test]
async fn a_forced_retry_registers_an_account_waiting_out_its_back_off_at_once() {
    let port = registrar().await;
    let cfg = EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.1:0".parse().unwrap())],
        ..Default::default()
    };
    let mut ep = EndpointHandle::start(cfg, Box::new(UserAgent))
        .await
        .unwrap();
    let account = ep
        .register(AccountSpec {
            aor: "sip:alice@example.test".into(),
            registrar: format!("sip:127.0.0.1:{port}"),
            username: None,
            password: None,
            instance_id: Some("urn:uuid:00000000-0000-1000-8000-0000000000f4".into()),
            outbound: true,
            reg_id: None,
            expires: 600,
            ipv6_sip: Ipv6Use::Enabled,
            ipv6_media: Ipv6Use::Enabled,
            ip_change: None,
            flow: Default::default(),
        })
        .await
        .unwrap();
    let failed = next_registration(&mut ep).await;
    assert_eq!(failed.state, RegistrationState::Failed);
    assert_eq!(failed.code, Some(503));
    // RFC 5626 §4.5, every flow failed: 30–60 s
    let wait = failed
        .retry_at
        .unwrap()
        .saturating_duration_since(std::time::Instant::now());
    assert!(wait > Duration::from_secs(29), "{wait:?}");
    assert_eq!(ep.retry_registrations().await.unwrap(), vec![account]);
    let registered = next_registration(&mut ep).await;
    assert_eq!(registered.state, RegistrationState::Registered);
    assert!(registered.outbound);
    // nothing waits any more
    assert!(ep.retry_registrations().await.unwrap().is_empty());
    ep.shutdown().await;
}
