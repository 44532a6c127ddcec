//! Flows: the paths messages take, as a first-class idea (RFC 5626).
//!
//! A flow is (transport, local address, remote address) and, on TCP/TLS,
//! one connection. Every transaction and registration knows its flow; when
//! a flow is closed or declared dead, everything using it is told. The
//! table owns flow identities; the driver owns the sockets behind them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

/// A flow's identity, allocated by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u64);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow#{}", self.0)
    }
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// UDP: unreliable, retransmissions by the transaction layer.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// True for TCP and TLS: no retransmissions, connection-oriented.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The `;transport=` value.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The default port (5060, or 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }

    /// Parses a Via transport token or URI transport parameter.
    pub fn from_token(s: &str) -> Option<Transport> {
        if s.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if s.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if s.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.param())
    }
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowCloseReason {
    /// The peer closed the connection.
    PeerClosed,
    /// The connection was reset or an I/O error occurred.
    Reset,
    /// The connection could not be established.
    ConnectFailed,
    /// Closed for being idle.
    Idle,
    /// No keep-alive pong in time (RFC 5626 §4.4.1).
    KeepAliveTimeout,
    /// No answer to a UDP flow's STUN keep-alive in time (RFC 5626
    /// §4.4.2).
    StunTimeout,
    /// A UDP flow's STUN keep-alive came back with another mapped address
    /// than before: the NAT rebound (RFC 5626 §4.4.2).
    StunChanged,
    /// The stream could no longer be framed.
    FramingError,
    /// Closed on request (shutdown, network change).
    Local,
    /// A request over it was answered 430 Flow Failed (RFC 5626 §11.5).
    FlowFailed,
    /// The account unregistered: it no longer uses the flow.
    Unregistered,
    /// The account registered over a newer flow and left this one.
    Replaced,
}

impl fmt::Display for FlowCloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlowCloseReason::PeerClosed => "peer closed",
            FlowCloseReason::Reset => "reset",
            FlowCloseReason::ConnectFailed => "connect failed",
            FlowCloseReason::Idle => "idle",
            FlowCloseReason::KeepAliveTimeout => "keep-alive timeout",
            FlowCloseReason::StunTimeout => "STUN keep-alive timeout",
            FlowCloseReason::StunChanged => "STUN mapped address changed",
            FlowCloseReason::FramingError => "framing error",
            FlowCloseReason::Local => "closed locally",
            FlowCloseReason::FlowFailed => "430 flow failed",
            FlowCloseReason::Unregistered => "unregistered",
            FlowCloseReason::Replaced => "replaced by a newer flow",
        })
    }
}

/// A flow as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Its identity.
    pub id: FlowId,
    /// Its transport.
    pub transport: Transport,
    /// The local address, once known (an outgoing TCP connection learns
    /// its port when connected).
    pub local: Option<SocketAddr>,
    /// The remote address.
    pub remote: SocketAddr,
    /// True when the peer opened it (an accepted connection, or UDP
    /// traffic that arrived first).
    pub inbound: bool,
}

/// Every live flow.
#[derive(Debug, Default)]
pub(crate) struct FlowTable {
    flows: HashMap<FlowId, Flow>,
    by_path: HashMap<(Transport, SocketAddr), Vec<FlowId>>,
    next: u64,
}

impl FlowTable {
    pub(crate) fn get(&self, id: FlowId) -> Option<&Flow> {
        self.flows.get(&id)
    }

    fn insert(
        &mut self,
        transport: Transport,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        inbound: bool,
    ) -> FlowId {
        self.next += 1;
        let id = FlowId(self.next);
        self.flows.insert(
            id,
            Flow {
                id,
                transport,
                local,
                remote,
                inbound,
            },
        );
        self.by_path
            .entry((transport, remote))
            .or_default()
            .push(id);
        id
    }

    /// The flow to use towards `remote`: an existing one (either
    /// direction, RFC 3261 §18 connection reuse) whose local address
    /// matches `local` when given, or a new one.
    pub(crate) fn towards(
        &mut self,
        transport: Transport,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> FlowId {
        if let Some(ids) = self.by_path.get(&(transport, remote)) {
            for id in ids {
                let Some(f) = self.flows.get(id) else {
                    continue;
                };
                let local_ok = match (local, f.local) {
                    (None, _) => true,
                    // a connection's local port is ephemeral: only the
                    // address says which interface it uses
                    (Some(want), Some(have)) if transport.is_reliable() => {
                        want.ip().is_unspecified()
                            || have.ip().is_unspecified()
                            || want.ip() == have.ip()
                    }
                    (Some(want), Some(have)) => same_local(want, have),
                    // an outgoing connection whose local port is not known yet
                    (Some(_), None) => transport.is_reliable(),
                };
                if local_ok {
                    return *id;
                }
            }
        }
        self.insert(transport, local, remote, false)
    }

    /// The flow for traffic that arrived on `local` from `remote` (UDP), or
    /// a connection the driver accepted.
    pub(crate) fn inbound(
        &mut self,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> FlowId {
        if !transport.is_reliable() {
            if let Some(ids) = self.by_path.get(&(transport, remote)) {
                for id in ids {
                    if self
                        .flows
                        .get(id)
                        .is_some_and(|f| f.local.is_some_and(|l| same_local(local, l)))
                    {
                        return *id;
                    }
                }
            }
        }
        self.insert(transport, Some(local), remote, true)
    }

    /// Records the local address of a flow once the driver knows it.
    pub(crate) fn set_local(&mut self, id: FlowId, local: SocketAddr) {
        if let Some(f) = self.flows.get_mut(&id) {
            f.local = Some(local);
        }
    }

    /// Forgets a flow; returns it if it existed.
    pub(crate) fn remove(&mut self, id: FlowId) -> Option<Flow> {
        let flow = self.flows.remove(&id)?;
        if let Some(ids) = self.by_path.get_mut(&(flow.transport, flow.remote)) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_path.remove(&(flow.transport, flow.remote));
            }
        }
        Some(flow)
    }

    /// Forgets the UDP flows nothing uses any more (a UDP flow is only an
    /// identity: it is made anew when traffic comes again), so a flood
    /// from many source ports leaves no memory behind. Returns how many
    /// went.
    pub(crate) fn reclaim_udp(&mut self, in_use: &std::collections::HashSet<FlowId>) -> usize {
        let before = self.flows.len();
        self.flows
            .retain(|id, f| f.transport.is_reliable() || in_use.contains(id));
        let flows = &self.flows;
        self.by_path.retain(|_, ids| {
            ids.retain(|id| flows.contains_key(id));
            !ids.is_empty()
        });
        crate::admission::shrink(&mut self.flows);
        crate::admission::shrink(&mut self.by_path);
        before - self.flows.len()
    }

    /// How many flows there are.
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// Every flow.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }
}

/// Same local address, where a wildcard IP or port 0 matches anything.
fn same_local(a: SocketAddr, b: SocketAddr) -> bool {
    let ip_ok = a.ip().is_unspecified() || b.ip().is_unspecified() || a.ip() == b.ip();
    let port_ok = a.port() == 0 || b.port() == 0 || a.port() == b.port();
    ip_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    #[test]
    fn reuse_and_remove() {
        let mut t = FlowTable::default();
        let a = t.towards(Transport::Tcp, addr("127.0.0.9:5060"), None);
        assert_eq!(t.towards(Transport::Tcp, addr("127.0.0.9:5060"), None), a);
        let u = t.towards(
            Transport::Udp,
            addr("127.0.0.9:5060"),
            Some(addr("127.0.0.2:5060")),
        );
        assert_ne!(u, a);
        assert_eq!(
            t.inbound(
                Transport::Udp,
                addr("127.0.0.2:5060"),
                addr("127.0.0.9:5060")
            ),
            u
        );
        let other = t.towards(
            Transport::Udp,
            addr("127.0.0.9:5060"),
            Some(addr("127.0.0.3:5060")),
        );
        assert_ne!(other, u, "another local address is another flow");
        // an established connection (ephemeral local port) is reused by a
        // sender that names only its interface and listening port
        let c = t.towards(
            Transport::Tcp,
            addr("127.0.0.8:5060"),
            Some(addr("127.0.0.2:5070")),
        );
        t.set_local(c, addr("127.0.0.2:40123"));
        assert_eq!(
            t.towards(
                Transport::Tcp,
                addr("127.0.0.8:5060"),
                Some(addr("127.0.0.2:5070"))
            ),
            c
        );
        assert_ne!(
            t.towards(
                Transport::Tcp,
                addr("127.0.0.8:5060"),
                Some(addr("127.0.0.3:5070"))
            ),
            c
        );
        assert!(t.remove(a).is_some());
        assert_ne!(t.towards(Transport::Tcp, addr("127.0.0.9:5060"), None), a);
    }
}
