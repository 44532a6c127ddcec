//! What the driver sees of the network, handed to the core as data: the
//! core asks the OS nothing itself.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::flow::Transport;

/// A listener of the driver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerView {
    /// The driver's id for it.
    pub id: u64,
    /// Its transport.
    pub transport: Transport,
    /// Where it listens (may be a wildcard).
    pub local: SocketAddr,
}

/// A stream connection of the driver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionView {
    /// The driver's id for it.
    pub id: u64,
    /// Its local address.
    pub local: SocketAddr,
    /// The peer.
    pub remote: SocketAddr,
}

/// The network as the driver sees it now. Fill it with
/// [`crate::Endpoint::network_queries`]: the source address the OS would
/// use towards each remote asked for, and which of the addresses asked
/// for are this host's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkView {
    /// remote → the local address the OS would send from (absent: no
    /// route).
    pub sources: HashMap<SocketAddr, IpAddr>,
    /// Which of the asked addresses are this host's now.
    pub local: HashSet<IpAddr>,
    /// The listeners (not those lingering after an earlier change).
    pub listeners: Vec<ListenerView>,
    /// Old UDP listeners still lingering after an earlier change (a change
    /// back to their address takes them back instead of binding anew).
    pub lingering: Vec<ListenerView>,
    /// The stream connections.
    pub connections: Vec<ConnectionView>,
}

impl NetworkView {
    /// The source address towards `remote`, if it has a route.
    pub fn source(&self, remote: SocketAddr) -> Option<IpAddr> {
        self.sources.get(&remote).copied()
    }

    /// Whether `ip` is this host's (as far as the view was asked).
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.local.contains(&ip)
    }
}

/// What the driver must look up to fill a [`NetworkView`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkQueries {
    /// Remotes whose source address is wanted.
    pub remotes: Vec<SocketAddr>,
    /// Addresses to check are this host's.
    pub addresses: Vec<IpAddr>,
}

impl NetworkQueries {
    pub(crate) fn remote(&mut self, addr: SocketAddr) {
        if !self.remotes.contains(&addr) {
            self.remotes.push(addr);
        }
    }

    pub(crate) fn address(&mut self, ip: IpAddr) {
        if !ip.is_unspecified() && !self.addresses.contains(&ip) {
            self.addresses.push(ip);
        }
    }
}
