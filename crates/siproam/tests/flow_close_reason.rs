//! The driver closes a flow the core gave up on with the core's reason:
//! a TCP flow whose request was answered 430 Flow Failed (RFC 5626 §11.5)
//! is closed as a failed flow, not as a keep-alive timeout (the label the
//! transport logs and reports). Against a scripted outbound registrar on
//! 127.0.0.1 (TCP): 200 with `Require: outbound` to the first REGISTER,
//! 430 to the second, 200 after. The transport's `connection closed`
//! debug records are caught by a small subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use siproam::core::{Event, FlowState, RegistrationState};
use siproam::transport::Transport;
use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, Ipv6Use, UserAgent};
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};

/// The `reason` of every `connection closed` record.
#[derive(Clone, Default)]
struct Closes(Arc<Mutex<Vec<String>>>);

#[derive(Default)]
struct Fields {
    message: String,
    reason: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "reason" => self.reason = format!("{value:?}"),
            _ => {}
        }
    }
}

impl Subscriber for Closes {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if f.message == "connection closed" {
            self.0.lock().unwrap().push(f.reason);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The scripted registrar: its port. Each REGISTER is answered on its
/// connection: the second one 430, the others 200 with `Require:
/// outbound` (the Contact echoed).
async fn registrar() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(0u32));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut text: Vec<u8> = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    // one request a time, no body (REGISTER)
                    let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => text.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head: Vec<u8> = text.drain(..end + 4).collect();
                    if head.iter().all(|b| *b == b'\r' || *b == b'\n') {
                        continue; // a keep-alive
                    }
                    let Ok(m) = Message::parse(Bytes::from(head)) else {
                        return;
                    };
                    if m.method() != Some(Method::Register) {
                        continue;
                    }
                    let n = {
                        let mut s = seen.lock().unwrap();
                        *s += 1;
                        *s
                    };
                    let contact = m.header(HeaderName::Contact).unwrap_or_default().to_owned();
                    let resp = if n == 2 {
                        MessageBuilder::response_to(&m, 430, "Flow Failed", Some("reg"))
                    } else {
                        MessageBuilder::response_to(&m, 200, "OK", Some("reg"))
                            .header("Contact", &contact)
                            .header("Require", "outbound")
                    };
                    let bytes = resp.build().unwrap().to_bytes();
                    if conn.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The next core event `pred` accepts, within 10 s.
async fn next(ep: &mut EndpointHandle, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::Core(ev)) = ep.next_event().await {
                if pred(&ev) {
                    return ev;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 10 s"))
}

#[tokio::test]
async fn a_flow_answered_430_is_closed_as_failed_not_as_a_keepalive_timeout() {
    let closes = Closes::default();
    tracing::subscriber::set_global_default(closes.clone()).unwrap();
    let port = registrar().await;
    let cfg = EndpointConfig {
        listen: vec![(Transport::Tcp, "127.0.0.1:0".parse().unwrap())],
        ..Default::default()
    };
    let mut ep = EndpointHandle::start(cfg, Box::new(UserAgent))
        .await
        .unwrap();
    let account = ep
        .register(AccountSpec {
            aor: "sip:alice@example.test".into(),
            registrar: format!("sip:127.0.0.1:{port};transport=tcp"),
            username: None,
            password: None,
            instance_id: Some("urn:uuid:00000000-0000-1000-8000-0000000000f5".into()),
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
    let registered = |ev: &Event| matches!(ev, Event::Registration(r) if r.state == RegistrationState::Registered);
    let Event::Registration(r) = next(&mut ep, "registered", registered).await else {
        unreachable!()
    };
    assert!(r.outbound, "{r:?}");
    // the refresh is answered 430: the flow fails, the account registers
    // again over a new one
    ep.reregister(account).await.unwrap();
    let failed = next(
        &mut ep,
        "the flow failed",
        |ev| matches!(ev, Event::Flow(f) if f.state == FlowState::Failed),
    )
    .await;
    let Event::Flow(f) = failed else {
        unreachable!()
    };
    assert_eq!(
        f.reason,
        Some(siproam::core::FlowCloseReason::FlowFailed),
        "{f:?}"
    );
    next(&mut ep, "registered again", registered).await;
    // (the connection's task logs its close)
    for _ in 0..100 {
        if !closes.0.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reasons = closes.0.lock().unwrap().clone();
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| r == "flow failed (430)"),
        "the failed flow's connection was closed as: {reasons:?}"
    );
    ep.shutdown().await;
}
