//! The IPv6 use modes of an account for SIP (PJSIP's `ipv6_sip_use`),
//! against a scripted registrar on 127.0.0.1 and ::1 (one port, one name
//! pinned to both addresses): which address the account registers with,
//! and whether an IP change to the other family may switch it.
//!
//! Skipped, saying so, when ::1 cannot be bound (no IPv6 on loopback);
//! CI (SIPROAM_REQUIRE_INTEROP set) requires it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use siproam::core::{Event, RegistrationState};
use siproam::transport::Transport;
use siproam::{
    AccountChanges, AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, Ipv6Use, UserAgent,
};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The scripted registrar: a socket on 127.0.0.1 and one on ::1, same
/// port; every REGISTER is answered 200 (Contact echoed) and reported as
/// (the address it arrived on, its Contact).
struct Registrar {
    port: u16,
    seen: mpsc::UnboundedReceiver<(SocketAddr, String)>,
}

async fn registrar() -> Option<Registrar> {
    let (tx, seen) = mpsc::unbounded_channel();
    for _ in 0..100 {
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = match UdpSocket::bind(("::1", port)).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(_) => break,
        };
        for sock in [v4, v6] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let local = sock.local_addr().unwrap();
                let mut buf = vec![0u8; 65_535];
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
                    let contact = m.header(HeaderName::Contact).unwrap_or_default().to_owned();
                    let _ = tx.send((local, contact.clone()));
                    let resp = MessageBuilder::response_to(&m, 200, "OK", Some("reg"))
                        .header("Contact", &contact)
                        .build()
                        .unwrap();
                    let _ = sock.send_to(&resp.to_bytes(), from).await;
                }
            });
        }
        return Some(Registrar { port, seen });
    }
    if std::env::var_os("SIPROAM_REQUIRE_INTEROP").is_some() {
        panic!("::1 is not usable on loopback, and this run requires it");
    }
    eprintln!("skipped: no IPv6 on loopback (::1 cannot be bound)");
    None
}

impl Registrar {
    async fn next(&mut self) -> (SocketAddr, String) {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("a REGISTER in time")
            .unwrap()
    }
}

/// An endpoint listening on 127.0.0.2 and ::1, registering `sip.test`
/// (pinned to 127.0.0.1 and ::1) with `mode` for SIP.
async fn endpoint(reg: &Registrar, mode: Ipv6Use) -> (EndpointHandle, siproam::core::AccountId) {
    let cfg = EndpointConfig {
        listen: vec![
            (Transport::Udp, "127.0.0.2:0".parse().unwrap()),
            (Transport::Udp, "[::1]:0".parse().unwrap()),
        ],
        hosts: vec![
            ("sip.test".into(), "127.0.0.1".parse().unwrap()),
            ("sip.test".into(), "::1".parse().unwrap()),
        ],
        ..Default::default()
    };
    let ep = EndpointHandle::start(cfg, Box::new(UserAgent))
        .await
        .unwrap();
    let account = ep
        .register(AccountSpec {
            aor: "sip:alice@example.test".into(),
            registrar: format!("sip:sip.test:{}", reg.port),
            username: None,
            password: None,
            instance_id: Some("urn:uuid:00000000-0000-1000-8000-00000000000a".into()),
            outbound: false,
            reg_id: None,
            expires: 600,
            ipv6_sip: mode,
            ipv6_media: Ipv6Use::Enabled,
            ip_change: None,
            flow: Default::default(),
        })
        .await
        .unwrap();
    (ep, account)
}

async fn registered(ep: &mut EndpointHandle) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::Core(Event::Registration(r))) = ep.next_event().await {
                if r.state == RegistrationState::Registered {
                    return r.contact;
                }
            }
        }
    })
    .await
    .expect("registered in time")
}

/// The `update_contact` stage of the next IP change (reported once the
/// REGISTER is answered).
async fn update_contact(ep: &mut EndpointHandle) -> siproam::IpChangeReport {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::IpChange(c)) = ep.next_event().await {
                if c.stage == siproam::IpChangeStage::UpdateContact {
                    return c;
                }
            }
        }
    })
    .await
    .expect("the update_contact stage in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_registers_with_the_registrars_address_of_its_family() {
    let Some(mut reg) = registrar().await else {
        return;
    };
    for (mode, v6) in [
        (Ipv6Use::Enabled, false),
        (Ipv6Use::Disabled, false),
        (Ipv6Use::Prefer, true),
        (Ipv6Use::Only, true),
    ] {
        let (mut ep, _) = endpoint(&reg, mode).await;
        let (to, contact) = reg.next().await;
        assert_eq!(to.is_ipv6(), v6, "{mode:?}: REGISTER sent to {to}");
        let want = if v6 { "@[::1]:" } else { "@127.0.0.2:" };
        assert!(contact.contains(want), "{mode:?}: Contact {contact}");
        assert!(registered(&mut ep).await.contains(want));
        ep.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_ipv6_switches_an_enabled_account_and_not_a_disabled_one() {
    let Some(mut reg) = registrar().await else {
        return;
    };
    // enabled: the account follows the new address into IPv6
    let (mut ep, _) = endpoint(&reg, Ipv6Use::Enabled).await;
    let (to, _) = reg.next().await;
    assert!(to.is_ipv4());
    registered(&mut ep).await;
    ep.ip_change("::1".parse().unwrap()).await.unwrap();
    let (to, contact) = reg.next().await;
    assert!(to.is_ipv6(), "REGISTER sent to {to}");
    assert!(contact.contains("@[::1]:"), "Contact {contact}");
    // ok once registered there
    let report = update_contact(&mut ep).await;
    assert_eq!(report.status, Ok(()), "{report:?}");
    assert!(report.address.is_some_and(|a| a.is_ipv6()), "{report:?}");
    ep.shutdown().await;

    // disabled: the change is refused for the account, nothing goes out
    // in IPv6; set by modify_account, which itself sends nothing
    let (mut ep, account) = endpoint(&reg, Ipv6Use::Enabled).await;
    let (to, _) = reg.next().await;
    assert!(to.is_ipv4());
    registered(&mut ep).await;
    ep.modify_account(
        account,
        AccountChanges {
            ipv6_sip: Some(Ipv6Use::Disabled),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ep.ip_change("::1".parse().unwrap()).await.unwrap();
    let report = update_contact(&mut ep).await;
    assert_eq!(
        report.status,
        Err(siproam::IpChangeError::FamilyNotAllowed(Ipv6Use::Disabled))
    );
    assert!(report.status_text().contains("disabled"), "{report:?}");
    // the next REGISTER is the explicit one asked for now, still IPv4
    ep.reregister(account).await.unwrap();
    let (to, contact) = reg.next().await;
    assert!(to.is_ipv4(), "REGISTER sent to {to}");
    assert!(contact.contains("@127.0.0.2:"), "Contact {contact}");
    ep.shutdown().await;
}
