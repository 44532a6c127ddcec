//! Requests too large for a UDP datagram (RFC 3261 §18.1.1): a request
//! over [`MAX_UDP_REQUEST`] bytes whose next hop is UDP (the path MTU is
//! unknown) goes over TCP to the same address and port instead, its top
//! Via saying `TCP` — a fragmented datagram is dropped by many NATs and
//! firewalls, and the request would be lost without a trace. PJSIP does
//! the same (`PJSIP_UDP_SIZE_THRESHOLD`).
//!
//! What stays where it was:
//! - responses: they go back the way their request came (§18.2.2);
//! - a request over an RFC 5626 outbound flow (an account's registration
//!   flow with outbound asked for), and an account's REGISTER: the flow is
//!   the account's binding, which its keep-alives probe and its Contact
//!   names, so its requests keep using it;
//! - a request a proxy relays (`Endpoint::forward_request`: the edge,
//!   the registrar's proxy): it goes over the flow or to the address the
//!   client registered from, often a NAT binding that a TCP connection to
//!   the same address would not reach;
//! - an ACK of a 2xx: it has no transaction to fall back with, and goes
//!   where its dialog sends it (an ACK of a failure and a CANCEL go on
//!   their INVITE's flow, so over TCP when the INVITE went so);
//! - the Contact: a dialog's Contact stays the address the call or the
//!   registration advertises (UDP); only the hop this request takes
//!   changes, and the dialog's later requests are judged one by one.
//!
//! The module owns the decision and the fallback; the transaction table
//! and its timers stay the endpoint's (`endpoint`).
//!
//! A deviation from RFC 3261, on purpose: when the TCP connection cannot
//! be made (the driver reports [`FlowCloseReason::ConnectFailed`]:
//! refused, or timed out, before anything was sent), the same request is
//! sent once over UDP as before, in the same transaction (same branch,
//! Via back to `UDP`), so a peer that listens on UDP only still gets it.
//! The RFC would have the request fail; users expect it to arrive.
//!
//! [`FlowCloseReason::ConnectFailed`]: crate::FlowCloseReason::ConnectFailed

use std::time::Instant;

use bytes::Bytes;
use siproam_sip::{HeaderName, Message};

use crate::endpoint::{fmt_hostport, Endpoint, Target, TxOwner};
use crate::flow::{FlowId, Transport};
use crate::timers::{TimerKind, TimerOwner};

/// The largest request sent over UDP when the path MTU is unknown
/// (RFC 3261 §18.1.1).
pub const MAX_UDP_REQUEST: usize = 1300;

/// A request moved to TCP for its size: how to send it over UDP after
/// all, should the connection fail.
#[derive(Debug, Clone)]
pub(crate) struct UdpFallback {
    /// The UDP next hop the request was meant for.
    pub(crate) target: Target,
    /// The request as it would have gone over UDP (its Via `UDP`).
    pub(crate) request: Bytes,
}

/// A request as it leaves: its bytes, its flow and target, and (when it
/// was moved to TCP) how to send it over UDP instead.
pub(crate) struct Fitted {
    pub(crate) bytes: Bytes,
    pub(crate) flow: FlowId,
    pub(crate) target: Target,
    pub(crate) fallback: Option<Box<UdpFallback>>,
}

impl Endpoint {
    /// RFC 3261 §18.1.1 for a request of ours about to start its client
    /// transaction over `flow` towards `target`: over TCP to the same
    /// address when it is larger than [`MAX_UDP_REQUEST`] and would go over
    /// UDP (see the module doc for what stays); as it is otherwise.
    pub(crate) fn fit_request(
        &mut self,
        request: Message,
        flow: FlowId,
        target: Target,
        owner: TxOwner,
    ) -> Fitted {
        let bytes = request.to_bytes();
        let as_is = |bytes| Fitted {
            bytes,
            flow,
            target,
            fallback: None,
        };
        if target.transport != Transport::Udp
            || bytes.len() <= MAX_UDP_REQUEST
            || matches!(owner, TxOwner::Account(_))
            || !self.outbound_accounts_on(flow).is_empty()
        {
            return as_is(bytes);
        }
        let tcp_target = Target {
            transport: Transport::Tcp,
            server_name: None,
            ..target
        };
        let tcp_flow = self
            .flows
            .towards(Transport::Tcp, target.remote, target.local, None);
        let local = self.local_for(tcp_flow, Transport::Tcp, target.local);
        let Some(tcp) = with_top_via_transport(request, Transport::Tcp, &fmt_hostport(local))
        else {
            return as_is(bytes);
        };
        Fitted {
            bytes: tcp,
            flow: tcp_flow,
            target: tcp_target,
            fallback: Some(Box::new(UdpFallback {
                target,
                request: bytes,
            })),
        }
    }

    /// A TCP connection failed before anything went over it (refused,
    /// timed out): each pending client transaction on it that was moved
    /// there for its size is sent over UDP instead, once (the deviation
    /// the module doc states), oldest first so that an INVITE goes before
    /// its CANCEL. The others fail with the flow, as before.
    pub(crate) fn fall_back_to_udp(&mut self, now: Instant, flow: FlowId) {
        let mut ids = self
            .txs
            .client_ids_where(|t| t.flow == flow && t.is_pending() && t.udp_fallback.is_some());
        ids.sort_unstable();
        let t1 = self.config.t1;
        for id in ids {
            let Some(fallback) = self.txs.client_mut(id).and_then(|t| t.udp_fallback.take()) else {
                continue;
            };
            let UdpFallback { target, request } = *fallback;
            // the flow is found again: the first may have been tidied
            // away while the connect was pending
            let udp = self
                .flows
                .towards(Transport::Udp, target.remote, target.local, None);
            let Some(tx) = self.txs.client_mut(id) else {
                continue;
            };
            tx.flow = udp;
            tx.transport = Transport::Udp;
            tx.request = request.clone();
            tx.interval = t1;
            let invite = tx.invite;
            self.push_transmit(udp, target, request);
            // retransmitted from now on, as a UDP transaction (Timer B/F
            // keep running from the start)
            self.timers.set(
                TimerOwner::ClientTx(id),
                if invite { TimerKind::A } else { TimerKind::E },
                now + t1,
            );
        }
    }

    /// The fallback of a CANCEL for an INVITE moved to TCP: the CANCEL of
    /// the INVITE as it would go over UDP.
    pub(crate) fn cancel_fallback(
        invite_fallback: Option<&UdpFallback>,
    ) -> Option<Box<UdpFallback>> {
        let f = invite_fallback?;
        let inv = Message::parse(f.request.clone()).ok()?;
        let cancel = crate::endpoint::build_cancel(&inv).ok()?;
        Some(Box::new(UdpFallback {
            target: f.target,
            request: cancel.to_bytes(),
        }))
    }
}

/// `request` with its top Via (ours: `SIP/2.0/UDP sent-by;rport;branch=…`)
/// saying `transport` and `sent_by`, its other parameters kept.
fn with_top_via_transport(
    mut request: Message,
    transport: Transport,
    sent_by: &str,
) -> Option<Bytes> {
    let top = request
        .header(HeaderName::Via)
        .and_then(|v| siproam_sip::split_list(v).next())?
        .trim()
        .to_owned();
    // the parameters after sent-by, as they were
    let params = top.find(';').and_then(|i| top.get(i..)).unwrap_or("");
    let via = format!("SIP/2.0/{} {sent_by}{params}", transport.via_token());
    if request.vias().nth(1).is_some() {
        request.remove_top_via().ok()?;
        request.prepend_header("Via", &via).ok()?;
    } else {
        request.set_header("Via", &via).ok()?;
    }
    Some(request.to_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use siproam_sip::MessageBuilder;

    #[test]
    fn the_top_via_changes_transport_and_sent_by_and_keeps_its_params() {
        let m = MessageBuilder::request(siproam_sip::Method::Message, "sip:bob@192.0.2.2")
            .header(
                "Via",
                "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKabc, SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKold",
            )
            .header("From", "<sip:a@x>;tag=1")
            .header("To", "<sip:b@x>")
            .header("Call-ID", "c1")
            .header("CSeq", "1 MESSAGE")
            .build()
            .unwrap();
        let out = with_top_via_transport(m, Transport::Tcp, "192.0.2.1:5062").unwrap();
        let m = Message::parse(out).unwrap();
        let vias: Vec<_> = m
            .header_values(HeaderName::Via)
            .flat_map(siproam_sip::split_list)
            .map(|v| v.trim().to_owned())
            .collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/TCP 192.0.2.1:5062;rport;branch=z9hG4bKabc",
                "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKold"
            ]
        );
    }

    #[test]
    fn a_single_via_is_replaced() {
        let m = MessageBuilder::request(siproam_sip::Method::Message, "sip:bob@192.0.2.2")
            .header("Via", "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKabc")
            .header("From", "<sip:a@x>;tag=1")
            .header("To", "<sip:b@x>")
            .header("Call-ID", "c1")
            .header("CSeq", "1 MESSAGE")
            .build()
            .unwrap();
        let out = with_top_via_transport(m, Transport::Tcp, "[2001:db8::1]:5060").unwrap();
        let m = Message::parse(out).unwrap();
        assert_eq!(
            m.header(HeaderName::Via),
            Some("SIP/2.0/TCP [2001:db8::1]:5060;rport;branch=z9hG4bKabc")
        );
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKabc"));
    }
}
