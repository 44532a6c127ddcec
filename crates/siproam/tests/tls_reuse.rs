//! RFC 5626 §4.3 TLS flow reuse on loopback: a send for a name that a
//! subject alternative name of an open TLS connection's certificate covers
//! (wildcards by RFC 6125: the whole left-most label, one label) goes over
//! that connection; any other name opens a new one, which verification
//! refuses; the core, too, picks a TLS flow by the name its certificate
//! covers. Every wait bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use siproam::core::{CallId, Endpoint as Core, Event, FlowId, Target};
use siproam::transport::{
    ConnectionDirection, SendError, SendTarget, TlsClientConfig, TlsServerConfig, Transport,
    TransportConfig, TransportEvent, TransportEvents, TransportManager,
};
use siproam::{
    AppCommand, Application, CommandError, EndpointConfig, EndpointEvent, EndpointHandle,
};
use siproam_sip::{MessageBuilder, Method};

const WAIT: Duration = Duration::from_secs(10);

fn options(tag: &str) -> Bytes {
    Bytes::from(format!(
        "OPTIONS sip:bob@example.test SIP/2.0\r\n\
         Via: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK{tag}\r\n\
         From: <sip:alice@example.test>;tag=1\r\n\
         To: <sip:bob@example.test>\r\n\
         Call-ID: {tag}@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

/// A server for `a.example.test` and `*.b.example.test`, and a client that
/// trusts its CA.
fn configs() -> (TlsServerConfig, TlsClientConfig) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "siproam test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![
        "a.example.test".to_owned(),
        "*.b.example.test".to_owned(),
    ])
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let server =
        TlsServerConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let client = TlsClientConfig::with_roots(vec![ca.der().clone()], false).unwrap();
    (server, client)
}

/// Messages the server received, until `n` have come.
async fn received(events: &mut TransportEvents, n: usize) {
    let mut got = 0;
    tokio::time::timeout(WAIT, async {
        while got < n {
            if let Some(TransportEvent::Received { .. }) = events.recv().await {
                got += 1;
            }
        }
    })
    .await
    .expect("messages at the server");
}

#[tokio::test]
async fn a_name_the_certificate_covers_reuses_the_tls_connection() {
    let (server_cfg, client_cfg) = configs();
    let (server, mut server_events) = TransportManager::new(TransportConfig {
        tls_server: Some(server_cfg),
        ..TransportConfig::default()
    });
    let (client, _client_events) = TransportManager::new(TransportConfig {
        tls_client: Some(client_cfg),
        ..TransportConfig::default()
    });
    let listener = server
        .listen(Transport::Tls, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let to = |name: &str| SendTarget::new(Transport::Tls, listener.local).with_server_name(name);
    let first = client
        .send(&to("a.example.test"), options("a"))
        .await
        .unwrap();
    let conn = first.connection.unwrap();
    // the wildcard's one label, and the other name itself
    for (i, name) in ["x.b.example.test", "other.b.example.test", "a.example.test"]
        .into_iter()
        .enumerate()
    {
        let flow = client
            .send(&to(name), options(&format!("r{i}")))
            .await
            .unwrap();
        assert_eq!(flow.connection, Some(conn), "{name}");
    }
    received(&mut server_events, 4).await;
    let accepted = server
        .connections()
        .into_iter()
        .filter(|c| c.direction == ConnectionDirection::Incoming)
        .count();
    assert_eq!(accepted, 1, "one connection accepted at the server");
    assert_eq!(
        client
            .tls_connection_serving("y.b.example.test", None)
            .map(|c| c.id),
        Some(conn)
    );
    assert_eq!(
        client
            .tls_connection_serving("y.b.example.test", Some(listener.local.port()))
            .map(|c| c.id),
        Some(conn)
    );
    let other_port = listener.local.port().wrapping_add(1);
    assert!(client
        .tls_connection_serving("y.b.example.test", Some(other_port))
        .is_none());

    // not covered: two labels under the wildcard, the wildcard's parent,
    // another domain. A new connection, which verification refuses.
    for name in ["y.x.b.example.test", "b.example.test", "c.example.test"] {
        assert!(
            client.tls_connection_serving(name, None).is_none(),
            "{name}"
        );
        let r = client.send(&to(name), options("no")).await;
        assert!(
            matches!(r, Err(SendError::TlsHandshake(_))),
            "{name}: {r:?}"
        );
    }
    assert_eq!(client.connections().len(), 1);
    // an incoming connection (its peer never authenticated) is never one
    assert!(server
        .tls_connection_serving("a.example.test", None)
        .is_none());
}

/// An application that sends an OPTIONS to each next hop it is handed and
/// notes the TLS flows the core has right after.
struct Probe {
    tls_flows: Arc<Mutex<Vec<Vec<FlowId>>>>,
}

impl Application for Probe {
    fn on_event(&mut self, _core: &mut Core, _now: Instant, event: Event) -> Option<Event> {
        Some(event)
    }

    fn command(
        &mut self,
        core: &mut Core,
        now: Instant,
        cmd: AppCommand,
    ) -> Result<Option<CallId>, CommandError> {
        let target = *cmd
            .downcast::<Target>()
            .map_err(|_| CommandError::Unsupported)?;
        let n = self.tls_flows.lock().unwrap().len();
        let request = MessageBuilder::request(Method::Options, "sip:bob@example.test")
            .header("From", "<sip:alice@example.test>;tag=p1")
            .header("To", "<sip:bob@example.test>")
            .header("Call-ID", &format!("probe-{n}@test"))
            .header("CSeq", "1 OPTIONS");
        core.send_request(now, request, target)?;
        let mut tls: Vec<FlowId> = core
            .flows()
            .filter(|f| f.transport == Transport::Tls)
            .map(|f| f.id)
            .collect();
        tls.sort();
        self.tls_flows.lock().unwrap().push(tls);
        Ok(None)
    }
}

/// Hands the probe a next hop for `name`, resolved by the endpoint.
async fn send(ep: &EndpointHandle, port: u16, name: &str) {
    let hop = format!("sip:{name}:{port};transport=tls");
    ep.command_via(&hop, "sip:alice@example.test", |t| {
        Box::new(t) as AppCommand
    })
    .await
    .unwrap();
}

/// RFC 5626 §4.3 / RFC 5922 §7 at the endpoint: three names resolve to
/// the one TLS listener. `a.example.test` opens a flow; `x.b.example.test`,
/// which the certificate covers, goes over it (the driver tells the core
/// so: still one TLS flow); `c.example.test`, which it does not cover, gets
/// a flow and a connection of its own — refused by verification — instead
/// of the open one (the core chose flows by address alone); `a` again
/// keeps its flow.
#[tokio::test]
async fn the_core_picks_a_tls_flow_by_the_name_its_certificate_covers() {
    let (server_cfg, client_cfg) = configs();
    let (server, mut server_events) = TransportManager::new(TransportConfig {
        tls_server: Some(server_cfg),
        ..TransportConfig::default()
    });
    let listener = server
        .listen(Transport::Tls, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tls_flows = Arc::new(Mutex::new(Vec::new()));
    let host = |name: &str| (name.to_owned(), "127.0.0.1".parse().unwrap());
    let mut ep = EndpointHandle::start(
        EndpointConfig {
            listen: vec![(Transport::Udp, "127.0.0.31:0".parse().unwrap())],
            transport: TransportConfig {
                tls_client: Some(client_cfg),
                ..TransportConfig::default()
            },
            hosts: vec![
                host("a.example.test"),
                host("x.b.example.test"),
                host("c.example.test"),
            ],
            ..Default::default()
        },
        Box::new(Probe {
            tls_flows: tls_flows.clone(),
        }),
    )
    .await
    .unwrap();
    let port = listener.local.port();
    send(&ep, port, "a.example.test").await;
    received(&mut server_events, 1).await;
    send(&ep, port, "x.b.example.test").await;
    received(&mut server_events, 1).await;
    send(&ep, port, "c.example.test").await;
    // c's request fails on its own connection
    tokio::time::timeout(WAIT, async {
        loop {
            match ep.next_event().await {
                Some(EndpointEvent::Core(Event::RequestFailed { .. })) => break,
                Some(_) => {}
                None => panic!("the endpoint stopped"),
            }
        }
    })
    .await
    .expect("c.example.test's request failed");
    send(&ep, port, "a.example.test").await;
    received(&mut server_events, 1).await;
    let seen = tls_flows.lock().unwrap().clone();
    let [a, x, c, again] = &seen[..] else {
        panic!("four requests: {seen:?}");
    };
    assert_eq!(a.len(), 1, "{seen:?}");
    assert_eq!(x, a, "x.b.example.test over a.example.test's flow");
    assert_eq!(c.len(), 2, "c.example.test on a flow of its own: {seen:?}");
    assert_eq!(again, a, "a.example.test keeps its flow (c's has failed)");
    // one connection carried a's and x.b's requests
    let deadline = tokio::time::Instant::now() + WAIT;
    let accepted = || {
        server
            .connections()
            .into_iter()
            .filter(|c| c.direction == ConnectionDirection::Incoming)
            .count()
    };
    while accepted() != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted(), 1);
    ep.shutdown().await;
}
