//! STUN (RFC 5389) on the SIP UDP port, the datagram side of RFC 5626
//! keep-alives: encoding and decoding (with the `stun-types` crate), and
//! the endpoint's entry point for STUN datagrams, [`Endpoint::handle_stun`].
//!
//! - As a client (RFC 5626 §4.4.2) an account's UDP registration flow is
//!   kept by Binding requests (see `keepalive.rs`); their answers come
//!   here, are matched by transaction id (one hash look-up: a flood of
//!   answers costs no more than that per datagram), and a success with an
//!   XOR-MAPPED-ADDRESS keeps the flow — or fails it when the mapped
//!   address changed (the NAT rebound).
//! - As a server (RFC 5626 §5.4, an edge proxy or registrar — and any
//!   endpoint: it costs a fixed amount per datagram) a Binding request is
//!   answered with a success carrying the source's XOR-MAPPED-ADDRESS.
//!
//! Anything else — garbage, truncated or oversized messages, answers to no
//! transaction of ours or from another source, error responses,
//! indications — is dropped and reported as a [`StunOutcome::Dropped`]
//! with its reason (the driver logs it at debug level), and counted.
//! Nothing here reads a clock or draws randomness: transaction ids come
//! from the endpoint's seeded generator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use stun_types::attribute::XorMappedAddress;
use stun_types::message::{
    Message, MessageClass, MessageHeader, MessageType, MessageWrite, MessageWriteExt,
    MessageWriteVec, TransactionId, BINDING, MAGIC_COOKIE,
};

use crate::endpoint::{Endpoint, Transmit};
use crate::flow::Transport;
use crate::registration::AccountId;

/// The largest STUN message looked at: a Binding request or answer is a
/// few dozen bytes; anything bigger is not one we sent or want.
pub const MAX_STUN_MESSAGE: usize = 548;

/// Whether a datagram is a STUN message rather than SIP (RFC 5389 §6,
/// RFC 7983): its first two bits are zero and bytes 4..8 hold the magic
/// cookie. (A SIP message starts with a letter, whose top bits are `01`.)
pub fn is_stun(data: &[u8]) -> bool {
    matches!(data, [first, _, _, _, c0, c1, c2, c3, ..]
        if first & 0xc0 == 0 && [*c0, *c1, *c2, *c3] == MAGIC_COOKIE.to_be_bytes())
}

/// Whether a datagram is a STUN response (success or error: the class's
/// high bit, bit 8 of the message type, is set).
pub fn is_stun_response(data: &[u8]) -> bool {
    is_stun(data) && data.first().is_some_and(|b| b & 0x01 != 0)
}

/// A Binding request with this transaction id (its low 96 bits) and no
/// attributes.
pub fn binding_request(transaction: u128) -> Bytes {
    let mtype = MessageType::from_class_method(MessageClass::Request, BINDING);
    let msg = Message::builder(
        mtype,
        TransactionId::from(transaction),
        MessageWriteVec::new(),
    );
    Bytes::from(msg.finish())
}

/// A Binding success answering the transaction `transaction`, telling the
/// requester the address it was seen from (`mapped`, as
/// XOR-MAPPED-ADDRESS).
pub fn binding_success(transaction: u128, mapped: SocketAddr) -> Bytes {
    let tid = TransactionId::from(transaction);
    let mtype = MessageType::from_class_method(MessageClass::Success, BINDING);
    let mut msg = Message::builder(mtype, tid, MessageWriteVec::new());
    // (cannot fail: an attribute of a fixed, small size into a growable
    // buffer with no integrity or fingerprint yet)
    let _ = msg.add_attribute(&XorMappedAddress::new(mapped, tid));
    Bytes::from(msg.finish())
}

/// The transaction id of a STUN message (its low 96 bits), if it has a
/// whole header.
pub fn transaction_id(data: &[u8]) -> Option<u128> {
    MessageHeader::from_bytes(data)
        .ok()
        .map(|h| h.transaction_id().into())
}

/// A Binding success's transaction id and XOR-MAPPED-ADDRESS, if `data`
/// is a well-formed one.
pub fn binding_success_parts(data: &[u8]) -> Option<(u128, SocketAddr)> {
    let (header, msg) = checked(data).ok()?;
    let mtype = header.get_type();
    if mtype.method() != BINDING || mtype.class() != MessageClass::Success {
        return None;
    }
    let tid = header.transaction_id();
    let mapped = msg.attribute::<XorMappedAddress>().ok()?;
    Some((tid.into(), mapped.addr(tid)))
}

/// What [`Endpoint::handle_stun`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunOutcome {
    /// A Binding request was answered with the source's mapped address.
    Answered,
    /// The answer to one of our keep-alives, for this account.
    KeepAlive(AccountId),
    /// Dropped, for this reason.
    Dropped(StunDrop),
}

/// Why a STUN datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunDrop {
    /// Not a STUN message, or a malformed one (bad length, broken
    /// attributes, a wrong fingerprint).
    Malformed,
    /// Larger than [`MAX_STUN_MESSAGE`].
    TooLarge,
    /// An answer to no Binding request of ours (unknown or already
    /// answered transaction id).
    UnknownTransaction,
    /// An answer to our request, but from another address than the one
    /// it went to.
    WrongSource,
    /// A Binding success without an XOR-MAPPED-ADDRESS.
    NoMappedAddress,
    /// An error response (our keep-alive then times out).
    ErrorResponse,
    /// Another method, or an indication.
    Unsupported,
}

/// What the endpoint keeps for STUN: the keep-alive requests waiting for
/// their answer (transaction id → account), and counters.
#[derive(Debug, Default)]
pub(crate) struct StunState {
    pub(crate) pending: HashMap<u128, AccountId>,
    /// Binding requests answered.
    pub(crate) answered: u64,
    /// Datagrams dropped.
    pub(crate) dropped: u64,
}

/// A header, checked: a whole one whose length matches the datagram.
fn checked_header(data: &[u8]) -> Result<MessageHeader, StunDrop> {
    if data.len() > MAX_STUN_MESSAGE {
        return Err(StunDrop::TooLarge);
    }
    let header = MessageHeader::from_bytes(data).map_err(|_| StunDrop::Malformed)?;
    let length = usize::from(header.data_length());
    if length % 4 != 0 || MessageHeader::LENGTH + length != data.len() {
        return Err(StunDrop::Malformed);
    }
    Ok(header)
}

/// A message, checked: its header, then its attributes. (The parser logs
/// what is broken as a warning: it is only given what passed the header
/// check and, for an answer, matched a request of ours, so garbage from
/// anyone cannot fill the logs.)
fn checked(data: &[u8]) -> Result<(MessageHeader, Message<'_>), StunDrop> {
    let header = checked_header(data)?;
    let msg = Message::from_bytes(data).map_err(|_| StunDrop::Malformed)?;
    Ok((header, msg))
}

impl Endpoint {
    /// A STUN datagram arrived on `local` from `remote` (the driver tells
    /// it apart from SIP with [`is_stun`]; [`Endpoint::handle_datagram`]
    /// hands STUN here too). A Binding request is answered; the answer to
    /// one of our keep-alives keeps or fails its flow; anything else is
    /// dropped. Bounded work per datagram: a header check and a hash
    /// look-up before anything is parsed.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> StunOutcome {
        self.clock = Some(now);
        let outcome = self.stun_message(now, local, remote, data);
        match outcome {
            StunOutcome::Answered => self.stun.answered += 1,
            StunOutcome::Dropped(_) => self.stun.dropped += 1,
            StunOutcome::KeepAlive(_) => {}
        }
        outcome
    }

    fn stun_message(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> StunOutcome {
        let header = match checked_header(data) {
            Ok(h) => h,
            Err(why) => return StunOutcome::Dropped(why),
        };
        let tid = header.transaction_id();
        let mtype = header.get_type();
        if mtype.method() != BINDING {
            return StunOutcome::Dropped(StunDrop::Unsupported);
        }
        match mtype.class() {
            MessageClass::Request => {
                // RFC 5626 §5.4 / RFC 5389 §10: tell the source how it is
                // seen, over the flow it came on (the answer needs nothing
                // from the request's attributes: they are not parsed)
                let flow = self.flows.inbound(Transport::Udp, local, remote);
                self.transmits.push_back(Transmit {
                    flow,
                    transport: Transport::Udp,
                    local: Some(local),
                    remote,
                    payload: binding_success(tid.into(), remote),
                });
                StunOutcome::Answered
            }
            MessageClass::Success => {
                // one look-up before anything is parsed
                let Some(account) = self.stun.pending.get(&u128::from(tid)).copied() else {
                    return StunOutcome::Dropped(StunDrop::UnknownTransaction);
                };
                if !self.keepalive_came_from(account, remote) {
                    return StunOutcome::Dropped(StunDrop::WrongSource);
                }
                let Ok((_, msg)) = checked(data) else {
                    return StunOutcome::Dropped(StunDrop::Malformed);
                };
                let Ok(mapped) = msg.attribute::<XorMappedAddress>() else {
                    return StunOutcome::Dropped(StunDrop::NoMappedAddress);
                };
                self.stun.pending.remove(&u128::from(tid));
                self.keepalive_answered(now, account, mapped.addr(tid));
                StunOutcome::KeepAlive(account)
            }
            MessageClass::Error => StunOutcome::Dropped(StunDrop::ErrorResponse),
            MessageClass::Indication => StunOutcome::Dropped(StunDrop::Unsupported),
        }
    }

    /// STUN Binding requests answered, and STUN datagrams dropped, so far.
    pub fn stun_counts(&self) -> (u64, u64) {
        (self.stun.answered, self.stun.dropped)
    }

    /// A fresh 96-bit transaction id from the seeded generator, waiting
    /// for its answer on behalf of `account`.
    pub(crate) fn stun_transaction(&mut self, account: AccountId) -> u128 {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes);
        let tid = u128::from_be_bytes(bytes) & ((1u128 << 96) - 1);
        self.stun.pending.insert(tid, account);
        tid
    }

    /// Forgets a keep-alive's transaction: a late answer is dropped.
    pub(crate) fn stun_forget(&mut self, tid: u128) {
        self.stun.pending.remove(&tid);
        if self.stun.pending.is_empty() {
            self.stun.pending.shrink_to(16);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a_request_and_its_success_round_trip() {
        let tid = 0x0123_4567_89ab_cdef_0011_2233u128;
        let req = binding_request(tid);
        assert_eq!(req.len(), 20);
        assert!(is_stun(&req));
        assert!(!is_stun_response(&req));
        assert_eq!(transaction_id(&req), Some(tid));
        let mapped: SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let ok = binding_success(tid, mapped);
        assert!(is_stun_response(&ok));
        assert_eq!(binding_success_parts(&ok), Some((tid, mapped)));
        assert_eq!(binding_success_parts(&req), None);
        let (h, m) = checked(&ok).unwrap();
        assert_eq!(h.get_type().class(), MessageClass::Success);
        let x = m.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(x.addr(h.transaction_id()), mapped);
        // IPv6 too
        let v6: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        let ok6 = binding_success(tid, v6);
        let (h, m) = checked(&ok6).unwrap();
        let x = m.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(x.addr(h.transaction_id()), v6);
    }

    #[test]
    fn sip_and_garbage_are_not_stun() {
        assert!(!is_stun(b"REGISTER sip:example.test SIP/2.0\r\n"));
        assert!(!is_stun(b"SIP/2.0 200 OK\r\n"));
        assert!(!is_stun(b"\r\n\r\n"));
        assert!(!is_stun(&[0u8; 8]));
        assert!(!is_stun(&[]));
        // the cookie but a broken length: STUN, but malformed
        let mut bad = binding_request(7).to_vec();
        bad[3] = 4;
        assert!(is_stun(&bad));
        assert!(matches!(checked_header(&bad), Err(StunDrop::Malformed)));
        let mut big = binding_request(7).to_vec();
        big.resize(MAX_STUN_MESSAGE + 4, 0);
        assert!(matches!(checked_header(&big), Err(StunDrop::TooLarge)));
    }
}
