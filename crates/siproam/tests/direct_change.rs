//! An account with no registrar (a direct call) also moves: after
//! `ip_change`, the re-INVITE to a scripted peer on a raw UDP socket
//! carries the new address in its Via sent-by, its Contact and its SDP,
//! comes from the new address, and so does the ACK and the RTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use siproam::core::{CallEvent, CallId, CallState, Event};
use siproam::transport::Transport;
use siproam::{
    AudioSpec, EndpointConfig, EndpointEvent, EndpointHandle, IpChangeParams, Phone, PhoneConfig,
};
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
    ok_allowing(sock, req, to, contact, rtp, "INVITE, ACK, BYE, CANCEL").await;
}

async fn ok_allowing(
    sock: &UdpSocket,
    req: &Message,
    to: SocketAddr,
    contact: SocketAddr,
    rtp: SocketAddr,
    allow: &str,
) {
    let resp = MessageBuilder::response_to(req, 200, "OK", Some("peer1"))
        .header("Contact", &format!("<sip:bob@{contact}>"))
        .header("Allow", allow)
        .body("application/sdp", answer_sdp(rtp))
        .build()
        .unwrap();
    sock.send_to(&resp.to_bytes(), to).await.unwrap();
}

fn assert_moved(m: &Message, ip: &str) {
    let via = m.top_via().unwrap();
    assert_eq!(via.host_str(), ip, "Via sent-by");
    if matches!(m.method(), Some(Method::Invite | Method::Update)) {
        let contact = m.header(HeaderName::Contact).unwrap();
        assert!(contact.contains(&format!("@{ip}:")), "Contact {contact}");
        let sdp = std::str::from_utf8(m.body()).unwrap();
        assert!(sdp.contains(&format!("c=IN IP4 {ip}")), "SDP {sdp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_moves_via_contact_and_media() {
    let s = setup("INVITE, ACK, BYE, CANCEL").await;
    assert_moved(&s.invite, "127.0.0.2");
    let Setup {
        alice,
        peer,
        peer_addr,
        rtp_addr,
        peer_rtp,
        invite,
    } = s;
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

/// A phone on 127.0.0.2 (UDP), playing a 1 kHz tone.
async fn start_alice() -> EndpointHandle {
    let cfg = EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.2:0".parse().unwrap())],
        ..Default::default()
    };
    let phone = Phone::new(
        PhoneConfig {
            play: AudioSpec::Tone(1000.0),
            ..Default::default()
        },
        4,
    );
    EndpointHandle::start(cfg, Box::new(phone)).await.unwrap()
}

/// Alice on 127.0.0.2 calls a scripted peer on 127.0.0.5 (its SIP and
/// RTP sockets): the peer's view of the INVITE and where it came from.
async fn place_call() -> (EndpointHandle, UdpSocket, UdpSocket, Message, SocketAddr) {
    let peer = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let peer_rtp = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let alice = start_alice().await;
    alice
        .call(
            &format!("sip:bob@{}", peer.local_addr().unwrap()),
            "sip:alice@example.test",
            None,
        )
        .await
        .unwrap();
    let (invite, from) = next_request(&peer, Method::Invite).await;
    (alice, peer, peer_rtp, invite, from)
}

/// A scripted peer on 127.0.0.5 calls Alice (not answering by herself);
/// returns once the call rings: (alice, the peer's socket, the call).
async fn ringing_here(call_id: &str) -> (EndpointHandle, UdpSocket, CallId) {
    let peer = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut alice = start_alice().await;
    let alice_addr = alice.listeners().await.unwrap()[0].local;
    let invite = MessageBuilder::request(Method::Invite, &format!("sip:alice@{alice_addr}"))
        .header(
            "Via",
            &format!(
                "SIP/2.0/UDP {peer_addr};branch=z9hG4bK{};rport",
                call_id.replace('@', ".")
            ),
        )
        .header("From", "<sip:bob@example.test>;tag=b1")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", call_id)
        .header("CSeq", "1 INVITE")
        .header("Contact", &format!("<sip:bob@{peer_addr}>"))
        .header("Max-Forwards", "70")
        .body("application/sdp", answer_sdp(peer_addr))
        .build()
        .unwrap();
    peer.send_to(&invite.to_bytes(), alice_addr).await.unwrap();
    let call = wait_state(&mut alice, |s| {
        matches!(s, CallState::Incoming | CallState::Ringing)
    })
    .await;
    (alice, peer, call)
}

/// Waits for the first call state `want` accepts; returns the call.
async fn wait_state(alice: &mut EndpointHandle, want: impl Fn(CallState) -> bool) -> CallId {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::Core(Event::Call(CallEvent::State {
                call, state, ..
            }))) = alice.next_event().await
            {
                if want(state) {
                    return call;
                }
            }
        }
    })
    .await
    .expect("the call state in time")
}

/// A confirmed call from a phone on 127.0.0.2 to a scripted peer whose 2xx
/// lists `allow`.
struct Setup {
    alice: EndpointHandle,
    peer: UdpSocket,
    peer_addr: SocketAddr,
    rtp_addr: SocketAddr,
    peer_rtp: UdpSocket,
    invite: Message,
}

async fn setup(allow: &str) -> Setup {
    let (mut alice, peer, peer_rtp, invite, from) = place_call().await;
    let (peer_addr, rtp_addr) = (peer.local_addr().unwrap(), peer_rtp.local_addr().unwrap());
    ok_allowing(&peer, &invite, from, peer_addr, rtp_addr, allow).await;
    next_request(&peer, Method::Ack).await;
    wait_state(&mut alice, |s| s == CallState::Confirmed).await;
    Setup {
        alice,
        peer,
        peer_addr,
        rtp_addr,
        peer_rtp,
        invite,
    }
}

fn new_ip() -> IpAddr {
    "127.0.0.4".parse().unwrap()
}

/// The stages the change reported, up to `completed`.
async fn stages(alice: &mut EndpointHandle) -> Vec<String> {
    stages_until(alice, siproam::IpChangeStage::Completed).await
}

/// The stages the change reported, up to `last`.
async fn stages_until(alice: &mut EndpointHandle, last: siproam::IpChangeStage) -> Vec<String> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::IpChange(c)) = alice.next_event().await {
                assert_eq!(c.status, Ok(()), "{c:?}");
                out.push(c.stage.as_str().to_owned());
                if c.stage == last {
                    break;
                }
            }
        }
    })
    .await
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reinit_media_the_signalling_moves_and_the_sdp_stays() {
    let mut s = setup("INVITE, ACK, BYE").await;
    let mut params = IpChangeParams::new(new_ip());
    params.refresh.reinit_media = false;
    s.alice.handle_ip_change(params).await.unwrap();
    let (reinvite, from) = next_request(&s.peer, Method::Invite).await;
    assert_eq!(from.ip(), new_ip());
    assert_eq!(reinvite.top_via().unwrap().host_str(), "127.0.0.4");
    let contact = reinvite.header(HeaderName::Contact).unwrap();
    assert!(contact.contains("@127.0.0.4:"), "{contact}");
    let sdp = std::str::from_utf8(reinvite.body()).unwrap();
    assert!(sdp.contains("c=IN IP4 127.0.0.2"), "media kept: {sdp}");
    ok(&s.peer, &reinvite, from, s.peer_addr, s.rtp_addr).await;
    stages(&mut s.alice).await;
}

/// Everything off but the refresh: listeners, flows, Contact and media
/// stay (an old address that survives, e.g. a VPN coming up); the dialog
/// keeps sending from its address, so Via and Contact are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_knob_off_the_call_is_refreshed_in_place() {
    let mut s = setup("INVITE, ACK, BYE").await;
    let mut params = IpChangeParams::new(new_ip());
    params.shutdown_transports = false;
    params.restart_listeners = false;
    params.refresh.reinit_media = false;
    params.refresh.update_contact = false;
    params.refresh.update_via = false;
    s.alice.handle_ip_change(params).await.unwrap();
    let (reinvite, from) = next_request(&s.peer, Method::Invite).await;
    assert_eq!(from.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(reinvite.top_via().unwrap().host_str(), "127.0.0.2");
    let contact = reinvite.header(HeaderName::Contact).unwrap();
    assert!(contact.contains("@127.0.0.2:"), "Contact kept: {contact}");
    let sdp = std::str::from_utf8(reinvite.body()).unwrap();
    assert!(sdp.contains("c=IN IP4 127.0.0.2"), "media kept: {sdp}");
    ok(&s.peer, &reinvite, from, s.peer_addr, s.rtp_addr).await;
    next_request(&s.peer, Method::Ack).await;
    let st = stages(&mut s.alice).await;
    assert!(!st.contains(&"shutdown_transports".to_owned()), "{st:?}");
    assert!(!st.contains(&"restart_listener".to_owned()), "{st:?}");
}

/// A change while our re-INVITE is stuck (PJSIP fails here, RFC 6141
/// §5.5): the stuck re-INVITE is CANCELled, and once its 487 settles it
/// the call is re-offered from the new address, with no help from the
/// application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_during_a_pending_reinvite_cancels_it_then_reoffers() {
    let mut s = setup("INVITE, ACK, BYE").await;
    let call = siproam::core::CallId(1);
    // hold: a re-INVITE the peer leaves unanswered
    s.alice
        .phone(siproam::PhoneCommand::Hold(call, true))
        .await
        .unwrap();
    let (stuck, from) = next_request(&s.peer, Method::Invite).await;
    assert!(stuck.cseq().seq > s.invite.cseq().seq);
    s.alice.ip_change(new_ip()).await.unwrap();
    let (cancel, cancel_from) = next_request(&s.peer, Method::Cancel).await;
    assert_eq!(cancel.cseq().seq, stuck.cseq().seq);
    assert_eq!(
        cancel.top_via().unwrap().branch(),
        stuck.top_via().unwrap().branch(),
        "the CANCEL matches the stuck re-INVITE"
    );
    // the peer gives up on the stuck re-INVITE
    let ok_cancel = MessageBuilder::response_to(&cancel, 200, "OK", Some("peer1"))
        .build()
        .unwrap();
    s.peer
        .send_to(&ok_cancel.to_bytes(), cancel_from)
        .await
        .unwrap();
    let terminated = MessageBuilder::response_to(&stuck, 487, "Request Terminated", Some("peer1"))
        .build()
        .unwrap();
    s.peer.send_to(&terminated.to_bytes(), from).await.unwrap();
    let (ack, _) = next_request(&s.peer, Method::Ack).await;
    assert_eq!(ack.cseq().seq, stuck.cseq().seq, "the 487 is ACKed");
    // then the re-offer from the new address
    let (reoffer, from) = next_request(&s.peer, Method::Invite).await;
    assert!(reoffer.cseq().seq > stuck.cseq().seq);
    assert_eq!(from.ip(), new_ip());
    assert_moved(&reoffer, "127.0.0.4");
    ok(&s.peer, &reoffer, from, s.peer_addr, s.rtp_addr).await;
    let (ack, _) = next_request(&s.peer, Method::Ack).await;
    assert_eq!(ack.cseq().seq, reoffer.cseq().seq);
    // the call's stage is ok once the re-offer (not the CANCELled
    // re-INVITE) is answered
    let st = stages(&mut s.alice).await;
    assert_eq!(
        st.iter().rev().take(2).collect::<Vec<_>>(),
        ["completed", "refresh_calls"],
        "{st:?}"
    );
}

/// An outgoing call still ringing survives: the early dialog gets an
/// UPDATE without SDP carrying the new Contact (the peer allows UPDATE),
/// the ACK of the later 2xx comes from the new address, and a re-INVITE
/// then moves the media the INVITE's offer had on the old address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_ringing_call_is_moved_with_an_update() {
    outgoing_ringing(false).await;
}

/// The same, with the 2xx to the INVITE arriving before the answer to the
/// UPDATE: the re-offer waits for the UPDATE to settle instead of being
/// lost (it was, before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_call_answered_while_its_update_is_out_still_reoffers() {
    outgoing_ringing(true).await;
}

async fn outgoing_ringing(answer_before_update_ok: bool) {
    let (mut alice, peer, peer_rtp, invite, from) = place_call().await;
    let (peer_addr, rtp_addr) = (peer.local_addr().unwrap(), peer_rtp.local_addr().unwrap());
    let ringing = MessageBuilder::response_to(&invite, 180, "Ringing", Some("peer1"))
        .header("Contact", &format!("<sip:bob@{peer_addr}>"))
        .header("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")
        .build()
        .unwrap();
    peer.send_to(&ringing.to_bytes(), from).await.unwrap();
    wait_state(&mut alice, |s| s == CallState::Ringing).await;
    alice.ip_change(new_ip()).await.unwrap();
    let (update, ufrom) = next_request(&peer, Method::Update).await;
    assert_eq!(ufrom.ip(), new_ip());
    assert_eq!(update.call_id(), invite.call_id());
    assert!(update.body().is_empty(), "a target refresh, no offer");
    let contact = update.header(HeaderName::Contact).unwrap();
    assert!(contact.contains("@127.0.0.4:"), "{contact}");
    assert_eq!(update.top_via().unwrap().host_str(), "127.0.0.4");
    let uok = MessageBuilder::response_to(&update, 200, "OK", Some("peer1"))
        .build()
        .unwrap();
    // the answer: the ACK comes from the new address
    if answer_before_update_ok {
        ok(&peer, &invite, from, peer_addr, rtp_addr).await;
        let (ack, afrom) = next_request(&peer, Method::Ack).await;
        assert_eq!(afrom.ip(), new_ip());
        assert_eq!(ack.cseq().seq, invite.cseq().seq);
        peer.send_to(&uok.to_bytes(), ufrom).await.unwrap();
    } else {
        peer.send_to(&uok.to_bytes(), ufrom).await.unwrap();
        ok(&peer, &invite, from, peer_addr, rtp_addr).await;
    }
    let ack = if answer_before_update_ok {
        None
    } else {
        Some(next_request(&peer, Method::Ack).await)
    };
    if let Some((ack, afrom)) = ack {
        assert_eq!(afrom.ip(), new_ip());
        assert_eq!(ack.top_via().unwrap().host_str(), "127.0.0.4");
    }
    // the INVITE's offer named the old media address: a re-INVITE with
    // the new one follows the answer
    let (reinvite, rfrom) = next_request(&peer, Method::Invite).await;
    assert!(reinvite.cseq().seq > invite.cseq().seq);
    assert_moved(&reinvite, "127.0.0.4");
    ok(&peer, &reinvite, rfrom, peer_addr, rtp_addr).await;
    next_request(&peer, Method::Ack).await;
}

/// An incoming call still ringing survives: answered after the change,
/// our 2xx carries the new Contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_ringing_call_is_answered_with_the_new_contact() {
    let (alice, peer, call) = ringing_here("ringing@bob").await;
    alice.ip_change(new_ip()).await.unwrap();
    alice
        .phone(siproam::PhoneCommand::Answer(call))
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let ok = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (n, _) = peer.recv_from(&mut buf).await.unwrap();
            // the call's RTP comes to this socket too (the SDP names it)
            let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            if m.status() == Some(200) {
                return m;
            }
        }
    })
    .await
    .unwrap();
    let contact = ok.header(HeaderName::Contact).unwrap();
    assert!(contact.contains("@127.0.0.4:"), "{contact}");
    let sdp = std::str::from_utf8(ok.body()).unwrap();
    assert!(sdp.contains("c=IN IP4 127.0.0.4"), "{sdp}");
}

/// Three changes asked for at once are queued and merged, not refused:
/// one change runs, every caller returns, and the call ends up on the
/// newest address. On one thread, so "at once" is exact: all three are
/// queued before the driver takes the first. (With worker threads the
/// driver can take the first before the others are sent; they then run
/// as a second change that supersedes the first while it waits for its
/// 2xx - `Superseded` reports, covered by the sim's
/// `a_second_change_supersedes_one_waiting_for_its_2xx`.)
#[tokio::test(flavor = "current_thread")]
async fn changes_asked_for_together_are_merged_and_the_newest_wins() {
    let mut s = setup("INVITE, ACK, BYE, CANCEL").await;
    let (a, b, c) = tokio::join!(
        s.alice.ip_change("127.0.0.4".parse().unwrap()),
        s.alice.ip_change("127.0.0.6".parse().unwrap()),
        s.alice.ip_change("127.0.0.7".parse().unwrap()),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    // the peer answers whatever comes until the re-INVITE from 127.0.0.7
    let mut buf = vec![0u8; 65_535];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (n, from) = s.peer.recv_from(&mut buf).await.unwrap();
            let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            match m.method() {
                Some(Method::Invite) => {
                    ok(&s.peer, &m, from, s.peer_addr, s.rtp_addr).await;
                    if m.header(HeaderName::Contact)
                        .is_some_and(|c| c.contains("@127.0.0.7:"))
                    {
                        assert_moved(&m, "127.0.0.7");
                        break;
                    }
                }
                Some(Method::Cancel) => {
                    let r = MessageBuilder::response_to(&m, 200, "OK", Some("peer1"))
                        .build()
                        .unwrap();
                    s.peer.send_to(&r.to_bytes(), from).await.unwrap();
                }
                _ => {}
            }
        }
    })
    .await
    .expect("a re-INVITE from the newest address");
    // every report up to the change's completion
    let mut started = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::IpChange(r)) = s.alice.next_event().await {
                assert_eq!(r.status, Ok(()), "{r:?}");
                started += usize::from(r.stage == siproam::IpChangeStage::Started);
                if r.stage == siproam::IpChangeStage::Completed {
                    break;
                }
            }
        }
    })
    .await
    .expect("the change completes");
    assert_eq!(started, 1, "the three changes ran as one");
}

/// A change without a new address restarts the listeners in place: a
/// listener pinned to 127.0.0.2, which still exists, stays there on its
/// port (not the wildcard, not the host's main address), really listens,
/// and the call is refreshed from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_change_keeps_a_pinned_listener_on_its_address() {
    let mut s = setup("INVITE, ACK, BYE").await;
    let before = s.alice.listeners().await.unwrap()[0].local;
    s.alice
        .handle_ip_change(IpChangeParams::in_place())
        .await
        .unwrap();
    let (reinvite, from) = next_request(&s.peer, Method::Invite).await;
    assert_eq!(from, before, "sent from the same pinned listener");
    assert_moved(&reinvite, "127.0.0.2");
    ok(&s.peer, &reinvite, from, s.peer_addr, s.rtp_addr).await;
    next_request(&s.peer, Method::Ack).await;
    let mut restarted = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::IpChange(c)) = s.alice.next_event().await {
                assert_eq!(c.status, Ok(()), "{c:?}");
                if c.stage == siproam::IpChangeStage::RestartListener {
                    restarted.push(c.address);
                }
                if c.stage == siproam::IpChangeStage::Completed {
                    break;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(restarted, [Some(before)]);
    let after = s.alice.listeners().await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].local, before);
    // it really listens: an OPTIONS to it is answered
    let options = MessageBuilder::request(Method::Options, &format!("sip:alice@{before}"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP {};branch=z9hG4bKopt1;rport", s.peer_addr),
        )
        .header("From", "<sip:bob@example.test>;tag=o1")
        .header("To", "<sip:alice@example.test>")
        .header("Call-ID", "options@bob")
        .header("CSeq", "1 OPTIONS")
        .header("Max-Forwards", "70")
        .build()
        .unwrap();
    s.peer.send_to(&options.to_bytes(), before).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let resp = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (n, _) = s.peer.recv_from(&mut buf).await.unwrap();
            // the call's RTP comes to this socket too (the SDP names it)
            let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            if m.cseq().method == Method::Options {
                return m;
            }
        }
    })
    .await
    .expect("an answer to OPTIONS");
    assert_eq!(resp.status(), Some(200));
}

/// An account's own knobs win over the change's for its calls: the
/// change says refresh, Alice's account says hang up, so her call (From
/// her AoR) gets a BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_own_knobs_apply_to_its_calls() {
    let mut s = setup("INVITE, ACK, BYE").await;
    let mut knobs = siproam::AccountIpChange::from_params(&IpChangeParams::new(new_ip()));
    knobs.hangup_calls = true;
    // the account registers to the peer, which never answers: only its
    // AoR and knobs matter here
    s.alice
        .register(siproam::AccountSpec {
            aor: "sip:alice@example.test".into(),
            registrar: format!("sip:{}", s.peer_addr),
            username: None,
            password: None,
            instance_id: None,
            outbound: false,
            reg_id: None,
            expires: 600,
            ipv6_sip: siproam::Ipv6Use::Enabled,
            ipv6_media: siproam::Ipv6Use::Enabled,
            ip_change: Some(knobs),
            flow: Default::default(),
        })
        .await
        .unwrap();
    s.alice.ip_change(new_ip()).await.unwrap();
    let (bye, _) = next_request(&s.peer, Method::Bye).await;
    assert_eq!(bye.call_id(), s.invite.call_id());
    // (the REGISTER is never answered: `completed` waits for it)
    let st = stages_until(&mut s.alice, siproam::IpChangeStage::HangupCalls).await;
    assert!(st.contains(&"hangup_calls".to_owned()), "{st:?}");
    assert!(!st.contains(&"refresh_calls".to_owned()), "{st:?}");
}

/// A hold that cannot be sent (the call is still ringing here) is refused
/// and leaves no offer behind: answering the call afterwards still works.
/// (Regression: the refused hold's offer stayed outstanding, so the answer
/// to the peer's offer failed and the call was refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hold_leaves_no_offer_behind() {
    let (alice, peer, call) = ringing_here("hold-refused@bob").await;
    assert!(alice
        .phone(siproam::PhoneCommand::Hold(call, true))
        .await
        .is_err());
    alice
        .phone(siproam::PhoneCommand::Answer(call))
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (n, _) = peer.recv_from(&mut buf).await.unwrap();
            // the call's RTP comes to this socket too (the SDP names it)
            let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                continue;
            };
            if let Some(code) = m.status().filter(|c| *c >= 200) {
                return (code, m);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(status.0, 200, "the call is answered");
    let sdp = std::str::from_utf8(status.1.body()).unwrap();
    assert!(sdp.contains("a=sendrecv"), "not on hold: {sdp}");
}

/// A NAT rebinding counts as a change: the registrar sees the account at
/// another address (`received`/`rport` in its answer to a refresh), the
/// core re-registers that Contact, and the account's call is refreshed
/// with it as its Contact, still sent from our own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_received_rport_refreshes_the_accounts_calls() {
    let registrar = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let reg_addr = registrar.local_addr().unwrap();
    let (mut alice, peer, peer_rtp, invite, from) = place_call().await;
    let (peer_addr, rtp_addr) = (peer.local_addr().unwrap(), peer_rtp.local_addr().unwrap());
    ok(&peer, &invite, from, peer_addr, rtp_addr).await;
    next_request(&peer, Method::Ack).await;
    wait_state(&mut alice, |s| s == CallState::Confirmed).await;
    let account = alice
        .register(siproam::AccountSpec {
            aor: "sip:alice@example.test".into(),
            registrar: format!("sip:{reg_addr}"),
            username: None,
            password: None,
            instance_id: None,
            outbound: false,
            reg_id: None,
            expires: 600,
            ipv6_sip: siproam::Ipv6Use::Enabled,
            ipv6_media: siproam::Ipv6Use::Enabled,
            ip_change: None,
            flow: Default::default(),
        })
        .await
        .unwrap();
    // answer a REGISTER, as seen from `seen_as` when given
    let answer = |req: Message, to: SocketAddr, seen_as: Option<(&'static str, &'static str)>| {
        let registrar = &registrar;
        async move {
            let contact = req.header(HeaderName::Contact).unwrap().to_owned();
            let mut resp = MessageBuilder::response_to(&req, 200, "OK", Some("reg"))
                .header("Contact", &contact)
                .build()
                .unwrap();
            if let Some((ip, port)) = seen_as {
                resp.set_top_via_param("received", Some(Some(ip))).unwrap();
                resp.set_top_via_param("rport", Some(Some(port))).unwrap();
            }
            registrar.send_to(&resp.to_bytes(), to).await.unwrap();
        }
    };
    let (r1, from) = next_request(&registrar, Method::Register).await;
    answer(r1, from, None).await;
    // wait for the first binding before the rebinding
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(EndpointEvent::Core(Event::Registration(r))) = alice.next_event().await {
                if r.state == siproam::core::RegistrationState::Registered {
                    return;
                }
            }
        }
    })
    .await
    .unwrap();
    alice.reregister(account).await.unwrap();
    let (r2, from) = next_request(&registrar, Method::Register).await;
    answer(r2, from, Some(("127.0.0.9", "5555"))).await;
    let (r3, from) = next_request(&registrar, Method::Register).await;
    let contact = r3.header(HeaderName::Contact).unwrap().to_owned();
    assert!(contact.contains("127.0.0.9:5555"), "rewritten: {contact}");
    answer(r3, from, Some(("127.0.0.9", "5555"))).await;
    let (reinvite, from) = next_request(&peer, Method::Invite).await;
    assert_eq!(reinvite.call_id(), invite.call_id());
    let contact = reinvite.header(HeaderName::Contact).unwrap();
    assert!(
        contact.contains("@127.0.0.9:5555"),
        "public Contact: {contact}"
    );
    assert_eq!(reinvite.top_via().unwrap().host_str(), "127.0.0.2");
    assert_eq!(from.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
}
