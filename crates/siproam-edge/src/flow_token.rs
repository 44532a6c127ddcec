//! RFC 5626 §5.2 flow tokens: what the edge proxy puts in the user part of
//! its `Path` and `Record-Route` URIs so that a request routed back to it
//! names the flow to send it over.
//!
//! A token names a flow — its transport, the edge's local address, the
//! client's address and, for a connection, the core's [`FlowId`] (so a new
//! connection from the same address and port is another flow) — and is
//! signed with HMAC-SHA256 ([`crate::mac`]) under the edge's key: nobody
//! without the key can make one or change one. It is the lower-case hex of
//! the fields followed by 32 hex digits of the tag; every character is
//! legal in a SIP URI's user part. Checking one costs a length check, a hex
//! decode of at most [`MAX_TOKEN_LEN`] characters and one HMAC: never a
//! panic, whatever the input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use siproam_core::{FlowId, Transport};

use crate::mac::Mac;

const TOKEN_LABEL: &[u8] = b"siproam-flow-token";
/// Hex digits of the tag.
const TAG_HEX: usize = 32;
/// Bytes of the fields: transport, family, flow id, local and remote
/// (address and port), for IPv4 and IPv6.
const FIELDS_V4: usize = 1 + 1 + 8 + (4 + 2) * 2;
const FIELDS_V6: usize = 1 + 1 + 8 + (16 + 2) * 2;
/// The longest token (an IPv6 flow): anything longer is refused before
/// any work.
pub const MAX_TOKEN_LEN: usize = FIELDS_V6 * 2 + TAG_HEX;

/// The flow a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowToken {
    /// The flow's transport.
    pub transport: Transport,
    /// The edge's address on the flow (a UDP listener's, possibly the
    /// wildcard address).
    pub local: SocketAddr,
    /// The client's address on the flow.
    pub remote: SocketAddr,
    /// The core's flow of a connection; `FlowId(0)` for UDP, whose flow is
    /// the address pair alone.
    pub flow: FlowId,
}

/// Why a token was refused (the edge answers 403 to all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of ours: wrong length, not hex, unknown transport or
    /// family, addresses of two families.
    #[error("malformed flow token")]
    Malformed,
    /// Well formed, but the tag is not ours: forged, altered, or signed
    /// with another key.
    #[error("flow token does not verify")]
    BadSignature,
}

/// Signs and checks flow tokens with the edge's key.
#[derive(Debug, Clone)]
pub struct FlowTokenKey {
    mac: Mac,
}

fn transport_code(t: Transport) -> u8 {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    }
}

fn transport_of(code: u8) -> Option<Transport> {
    match code {
        0 => Some(Transport::Udp),
        1 => Some(Transport::Tcp),
        2 => Some(Transport::Tls),
        _ => None,
    }
}

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// The token's fields as bytes; `None` for a flow whose two addresses are
/// of different families (no such flow exists).
fn fields(token: &FlowToken) -> Option<Vec<u8>> {
    let v4 = token.local.is_ipv4();
    if token.remote.is_ipv4() != v4 {
        return None;
    }
    let mut out = Vec::with_capacity(FIELDS_V6);
    out.push(transport_code(token.transport));
    out.push(if v4 { 4 } else { 6 });
    out.extend_from_slice(&token.flow.0.to_be_bytes());
    push_addr(&mut out, token.local);
    push_addr(&mut out, token.remote);
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| match p {
            [h, l] => Some(hex_value(*h)? << 4 | hex_value(*l)?),
            _ => None,
        })
        .collect()
}

/// Reads `N` bytes from the front of `b`.
fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = b.split_first_chunk::<N>()?;
    *b = rest;
    Some(*head)
}

fn read_addr(b: &mut &[u8], v4: bool) -> Option<SocketAddr> {
    let ip = if v4 {
        IpAddr::V4(Ipv4Addr::from(take::<4>(b)?))
    } else {
        IpAddr::V6(Ipv6Addr::from(take::<16>(b)?))
    };
    Some(SocketAddr::new(ip, u16::from_be_bytes(take::<2>(b)?)))
}

fn parse_fields(mut b: &[u8]) -> Option<FlowToken> {
    let transport = transport_of(take::<1>(&mut b)?[0])?;
    let v4 = match take::<1>(&mut b)?[0] {
        4 => true,
        6 => false,
        _ => return None,
    };
    let flow = FlowId(u64::from_be_bytes(take::<8>(&mut b)?));
    let local = read_addr(&mut b, v4)?;
    let remote = read_addr(&mut b, v4)?;
    b.is_empty().then_some(FlowToken {
        transport,
        local,
        remote,
        flow,
    })
}

impl FlowTokenKey {
    /// A key (32 bytes from a secure generator, or a key file).
    pub fn new(key: &[u8; 32]) -> FlowTokenKey {
        FlowTokenKey { mac: Mac::new(key) }
    }

    /// The signed token of a flow; `None` for a flow whose addresses are
    /// of two families (the core never makes one).
    pub fn sign(&self, token: &FlowToken) -> Option<String> {
        let fields = fields(token)?;
        let mut out = String::with_capacity(fields.len() * 2 + TAG_HEX);
        for b in &fields {
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
        let tag = self.mac.tag(TOKEN_LABEL, &fields);
        out.push_str(&tag);
        Some(out)
    }

    /// The flow a token names, when it is one of ours, unaltered.
    pub fn verify(&self, text: &str) -> Result<FlowToken, TokenError> {
        let bytes = text.as_bytes();
        let fields_hex = bytes
            .len()
            .checked_sub(TAG_HEX)
            .ok_or(TokenError::Malformed)?;
        if fields_hex != FIELDS_V4 * 2 && fields_hex != FIELDS_V6 * 2 {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = text
            .split_at_checked(fields_hex)
            .ok_or(TokenError::Malformed)?;
        let fields = unhex(body.as_bytes()).ok_or(TokenError::Malformed)?;
        if !self.mac.verify(TOKEN_LABEL, &fields, tag) {
            return Err(TokenError::BadSignature);
        }
        parse_fields(&fields).ok_or(TokenError::Malformed)
    }
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;

    use super::*;

    fn tcp_v4() -> FlowToken {
        FlowToken {
            transport: Transport::Tcp,
            local: "192.0.2.1:5060".parse().unwrap(),
            remote: "198.51.100.7:40312".parse().unwrap(),
            flow: FlowId(42),
        }
    }

    #[test]
    fn a_token_verifies_to_the_flow_it_was_signed_for_v4_and_v6() {
        let key = FlowTokenKey::new(&[9; 32]);
        let udp_v6 = FlowToken {
            transport: Transport::Udp,
            local: "[2001:db8::1]:5060".parse().unwrap(),
            remote: "[2001:db8::99]:7000".parse().unwrap(),
            flow: FlowId(0),
        };
        for t in [tcp_v4(), udp_v6] {
            let s = key.sign(&t).unwrap();
            assert!(s.len() <= MAX_TOKEN_LEN);
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(key.verify(&s), Ok(t));
        }
    }

    #[test]
    fn another_key_or_an_altered_token_does_not_verify() {
        let key = FlowTokenKey::new(&[9; 32]);
        let s = key.sign(&tcp_v4()).unwrap();
        assert_eq!(
            FlowTokenKey::new(&[8; 32]).verify(&s),
            Err(TokenError::BadSignature)
        );
        // every single hex digit changed, in the fields and in the tag
        for i in 0..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(b).unwrap();
            assert!(key.verify(&altered).is_err(), "digit {i} altered verified");
        }
        // another flow id signed under the same key is another token
        let other = FlowToken {
            flow: FlowId(43),
            ..tcp_v4()
        };
        assert_ne!(key.sign(&other).unwrap(), s);
        assert_eq!(key.verify(""), Err(TokenError::Malformed));
        assert_eq!(key.verify(&s.to_uppercase()), Err(TokenError::Malformed));
        assert_eq!(key.verify(&s[..s.len() - 1]), Err(TokenError::Malformed));
    }

    #[test]
    fn a_flow_of_two_families_has_no_token() {
        let key = FlowTokenKey::new(&[9; 32]);
        let mixed = FlowToken {
            remote: "[2001:db8::99]:7000".parse().unwrap(),
            ..tcp_v4()
        };
        assert_eq!(key.sign(&mixed), None);
    }

    proptest! {
        #[test]
        fn garbage_never_verifies_and_never_panics(s in "\\PC{0,200}") {
            let key = FlowTokenKey::new(&[3; 32]);
            prop_assert!(key.verify(&s).is_err());
        }

        #[test]
        fn hex_of_the_right_length_without_our_tag_never_verifies(
            s in "[0-9a-f]{76}|[0-9a-f]{124}"
        ) {
            let key = FlowTokenKey::new(&[3; 32]);
            prop_assert!(key.verify(&s).is_err());
        }

        #[test]
        fn any_flow_round_trips(
            transport in 0u8..3,
            flow in any::<u64>(),
            l in any::<[u8; 4]>(), lp in any::<u16>(),
            r in any::<[u8; 4]>(), rp in any::<u16>(),
        ) {
            let key = FlowTokenKey::new(&[5; 32]);
            let t = FlowToken {
                transport: transport_of(transport).unwrap(),
                local: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(l)), lp),
                remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(r)), rp),
                flow: FlowId(flow),
            };
            let s = key.sign(&t).unwrap();
            prop_assert_eq!(key.verify(&s), Ok(t));
        }
    }
}
