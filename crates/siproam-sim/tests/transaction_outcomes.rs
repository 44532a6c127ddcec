//! How each client transaction ended (for the driver's log at `-v`): a
//! final status, a timeout; with the elapsed time in virtual time, and
//! nothing kept while it is off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use siproam_core::outcomes::{TransactionOutcome, TransactionResult};
use siproam_core::{Config, Target, Transport};
use siproam_sim::{NodeId, Sim};
use siproam_sip::{MessageBuilder, Method};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn setup() -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(Instant::now(), 7);
    let ua = sim.add_endpoint(
        "ua",
        &[ip("192.0.2.10")],
        Config {
            dialogs: false,
            ..Config::default()
        },
    );
    let peer = sim.add_peer("peer", &[ip("192.0.2.20")]);
    (sim, ua, peer)
}

fn request(method: Method, n: u32) -> MessageBuilder {
    MessageBuilder::request(method, "sip:bob@192.0.2.20")
        .header("From", "<sip:alice@example.test>;tag=a1")
        .header("To", "<sip:bob@example.test>")
        .header("Call-ID", &format!("outcome-{n}@example.test"))
        .header("CSeq", &format!("1 {method}"))
}

fn target() -> Target {
    Target {
        transport: Transport::Udp,
        remote: SocketAddr::new(ip("192.0.2.20"), 5060),
        local: None,
        server_name: None,
    }
}

fn outcomes(sim: &mut Sim, ua: NodeId) -> Vec<TransactionOutcome> {
    let ep = sim.endpoint(ua);
    std::iter::from_fn(|| ep.poll_transaction_outcome()).collect()
}

#[test]
fn each_client_transaction_tells_its_method_result_and_time() {
    let (mut sim, ua, peer) = setup();
    sim.endpoint(ua).report_transaction_outcomes(true);
    let start = sim.now();
    // a REGISTER answered 200 after 1 s, an OPTIONS never answered
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Register, 1), target())
    })
    .unwrap();
    let first = sim
        .run_until_peer_receives(peer, Duration::from_secs(1))
        .unwrap();
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Options, 2), target())
    })
    .unwrap();
    sim.run_until(start + Duration::from_millis(1000));
    let ok = MessageBuilder::response_to(&first.message, 200, "OK", Some("b1"))
        .build()
        .unwrap();
    sim.peer_reply(peer, &first, ok.to_bytes());
    sim.run_for(Duration::from_secs(40));
    let got = outcomes(&mut sim, ua);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].method, "REGISTER");
    assert_eq!(got[0].result, TransactionResult::Final(200));
    assert_eq!(got[0].transport, Transport::Udp);
    // sent at 0 (first), answered a second later plus the link's delay
    assert!(
        got[0].elapsed >= Duration::from_millis(1000)
            && got[0].elapsed < Duration::from_millis(1100),
        "{:?}",
        got[0].elapsed
    );
    assert_eq!(got[1].method, "OPTIONS");
    assert_eq!(got[1].result, TransactionResult::Timeout);
    // Timer F: 64·T1
    assert_eq!(got[1].elapsed, Duration::from_secs(32));
}

#[test]
fn nothing_is_kept_while_outcomes_are_off() {
    let (mut sim, ua, _peer) = setup();
    sim.with_endpoint(ua, |ep, now| {
        ep.send_request(now, request(Method::Options, 3), target())
    })
    .unwrap();
    sim.run_for(Duration::from_secs(40));
    assert!(outcomes(&mut sim, ua).is_empty());
}
