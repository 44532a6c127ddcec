//! Two softphones on loopback in one process: a direct call with a tone
//! both ways, then the caller's media moves to another local address (a
//! network change) with a re-INVITE, and the stream carries on without
//! loss to the new address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::IpAddr;
use std::time::Duration;

use siproam::core::{CallEvent, CallState, Event};
use siproam::transport::Transport;
use siproam::{
    AudioSpec, EndpointConfig, EndpointEvent, EndpointHandle, MediaReport, Phone, PhoneCommand,
    PhoneConfig,
};

async fn phone(ip: &str, auto_answer: bool) -> EndpointHandle {
    let p = Phone::new(
        PhoneConfig {
            auto_answer,
            play: AudioSpec::Tone(1000.0),
            record: None,
            media_ip: None,
            ..Default::default()
        },
        9,
    );
    let cfg = EndpointConfig {
        listen: vec![(Transport::Udp, format!("{ip}:0").parse().unwrap())],
        ..Default::default()
    };
    EndpointHandle::start(cfg, Box::new(p)).await.unwrap()
}

async fn until<T>(ep: &mut EndpointHandle, mut pick: impl FnMut(EndpointEvent) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(t) = ep.next_event().await.and_then(&mut pick) {
                return t;
            }
        }
    })
    .await
    .expect("in time")
}

fn confirmed(ev: EndpointEvent) -> Option<()> {
    matches!(
        ev,
        EndpointEvent::Core(Event::Call(CallEvent::State {
            state: CallState::Confirmed,
            ..
        }))
    )
    .then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_moves_to_a_new_local_address_and_keeps_flowing() {
    let mut alice = phone("127.0.0.2", false).await;
    let mut bob = phone("127.0.0.3", true).await;
    let bob_addr = bob.listeners().await.unwrap()[0].local;
    let call = alice
        .call(
            &format!("sip:bob@{bob_addr}"),
            "sip:alice@example.test",
            None,
        )
        .await
        .unwrap();
    until(&mut alice, confirmed).await;
    until(&mut bob, confirmed).await;
    let before: MediaReport = until(&mut bob, |ev| match ev {
        EndpointEvent::Media(m) if m.rx_packets > 20 => Some(m),
        _ => None,
    })
    .await;
    assert!(before.remote.unwrap().ip() == "127.0.0.2".parse::<IpAddr>().unwrap());
    // alice's address changes: her RTP socket is re-opened and re-offered
    alice
        .phone(PhoneCommand::MoveMedia(call, "127.0.0.4".parse().unwrap()))
        .await
        .unwrap();
    // the first packet from bob on the new address is reported once
    let (moved_call, moved_local) = until(&mut alice, |ev| match ev {
        EndpointEvent::MediaMoved { call, local, .. } => Some((call, local)),
        _ => None,
    })
    .await;
    assert_eq!(moved_call, call);
    assert_eq!(moved_local.ip(), "127.0.0.4".parse::<IpAddr>().unwrap());
    let moved: MediaReport = until(&mut alice, |ev| match ev {
        EndpointEvent::Media(m)
            if m.local.ip() == "127.0.0.4".parse::<IpAddr>().unwrap()
                && m.rx_packets > before.rx_packets + 40 =>
        {
            Some(m)
        }
        _ => None,
    })
    .await;
    assert_eq!(moved.lost, 0);
    let after: MediaReport = until(&mut bob, |ev| match ev {
        EndpointEvent::Media(m)
            if m.remote
                .is_some_and(|r| r.ip() == "127.0.0.4".parse::<IpAddr>().unwrap())
                && m.rx_packets > before.rx_packets + 40 =>
        {
            Some(m)
        }
        _ => None,
    })
    .await;
    assert_eq!(
        after.lost, 0,
        "one stream across the move: no sequence gap at bob"
    );
    alice.phone(PhoneCommand::HangUp(call)).await.unwrap();
    let last: MediaReport = until(&mut bob, |ev| match ev {
        EndpointEvent::Media(m) if m.last => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(last.lost, 0);
    assert!(last.rx_packets >= after.rx_packets);
}

/// The endpoint carries application commands without knowing their type:
/// a phone takes its own and refuses any other type, a plain user agent
/// takes none (and places no call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_of_a_type_the_application_does_not_take_are_refused() {
    let alice = phone("127.0.0.2", false).await;
    let refused = alice.command(42_u32).await;
    assert!(
        matches!(refused, Err(siproam::EndpointError::UnsupportedCommand)),
        "{refused:?}"
    );
    // the phone's own command reaches it: no such call, the core refuses
    let unknown = alice
        .phone(PhoneCommand::Answer(siproam::core::CallId(999)))
        .await;
    assert!(
        matches!(unknown, Err(siproam::EndpointError::Core(_))),
        "{unknown:?}"
    );

    let cfg = EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.3:0".parse().unwrap())],
        ..Default::default()
    };
    let ua = EndpointHandle::start(cfg, Box::new(siproam::UserAgent))
        .await
        .unwrap();
    let bob_addr = ua.listeners().await.unwrap()[0].local;
    let call = ua
        .call(
            &format!("sip:bob@{bob_addr}"),
            "sip:carol@example.test",
            None,
        )
        .await;
    assert!(
        matches!(call, Err(siproam::EndpointError::UnsupportedCommand)),
        "{call:?}"
    );
    let hangup = ua
        .phone(PhoneCommand::HangUp(siproam::core::CallId(1)))
        .await;
    assert!(
        matches!(hangup, Err(siproam::EndpointError::UnsupportedCommand)),
        "{hangup:?}"
    );
    alice.shutdown().await;
    ua.shutdown().await;
}
