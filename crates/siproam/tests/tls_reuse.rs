//! RFC 5626 §4.3 TLS flow reuse on loopback: a send for a name that a
//! subject alternative name of an open TLS connection's certificate covers
//! (wildcards by RFC 6125: the whole left-most label, one label) goes over
//! that connection; any other name opens a new one, which verification
//! refuses. Every wait bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use siproam::transport::{
    ConnectionDirection, SendError, SendTarget, TlsClientConfig, TlsServerConfig, Transport,
    TransportConfig, TransportEvent, TransportEvents, TransportManager,
};

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
