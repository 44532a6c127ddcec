//! Watching the network for changes: on Linux, a netlink socket subscribed
//! to link, address and route notifications (through `rtnetlink`), plus a
//! periodic resync that dumps the addresses and links again and reports
//! what changed, so a lost notification (the socket's buffer overflowed)
//! cannot leave the endpoint stale.
//!
//! The monitor only reports what it saw ([`NetworkEvent`]); the endpoint
//! decides whether that changed anything for its accounts and calls (the
//! source address towards their registrar or peer), after a short settle
//! window that coalesces a burst of notifications.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::mpsc;

/// What the monitor saw (`network` of `docs/events.md` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkEvent {
    /// What happened.
    pub kind: NetworkEventKind,
    /// The interface's name (its index when the name is unknown).
    pub interface: String,
    /// The address added or removed, or a default route's gateway.
    pub address: Option<IpAddr>,
}

/// The kinds of [`NetworkEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkEventKind {
    /// An address appeared on an interface.
    AddressAdded,
    /// An address went away.
    AddressRemoved,
    /// A link went down (or was deleted).
    LinkDown,
    /// A link came up.
    LinkUp,
    /// A default route was added, changed or removed.
    RouteChanged,
}

impl NetworkEventKind {
    /// The name in `docs/events.md` (`address_added`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkEventKind::AddressAdded => "address_added",
            NetworkEventKind::AddressRemoved => "address_removed",
            NetworkEventKind::LinkDown => "link_down",
            NetworkEventKind::LinkUp => "link_up",
            NetworkEventKind::RouteChanged => "route_changed",
        }
    }
}

/// The addresses of the interface `name` (`--flow-from IFACE`), IPv4
/// first; empty when it has none or does not exist.
#[cfg(unix)]
pub fn interface_addresses(name: &str) -> std::io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    #[allow(unsafe_code)]
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet
        // freed; its name is a NUL-terminated string and `ifa_addr`, when
        // not null, points at a sockaddr of the family it names.
        #[allow(unsafe_code)]
        let (ifa_name, addr) = unsafe {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            let ifa_name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            let addr = if ifa.ifa_addr.is_null() {
                None
            } else {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                    }
                    _ => None,
                }
            };
            (ifa_name.into_owned(), addr)
        };
        if let (true, Some(addr)) = (ifa_name == name, addr) {
            found.push(addr);
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    #[allow(unsafe_code)]
    unsafe {
        libc::freeifaddrs(list)
    };
    found.sort_by_key(|a| !a.is_ipv4());
    Ok(found)
}

/// What the monitor sends the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MonitorMsg {
    /// A notification (or a difference found by a resync).
    Event(NetworkEvent),
}

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The netlink socket could not be opened or subscribed.
    #[error("netlink: {0}")]
    Netlink(#[source] std::io::Error),
    /// No monitor exists for this operating system (the periodic check of
    /// the source addresses still runs).
    #[error("no network monitor on this platform")]
    Unsupported,
}

/// The addresses and link states last known, by interface index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Snapshot {
    names: HashMap<u32, String>,
    up: HashMap<u32, bool>,
    addrs: HashSet<(u32, IpAddr)>,
}

impl Snapshot {
    fn name(&self, index: u32) -> String {
        self.names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| index.to_string())
    }

    /// The events that turn `self` into `new` (links first, then
    /// addresses), in a stable order.
    fn diff(&self, new: &Snapshot) -> Vec<NetworkEvent> {
        let mut out = Vec::new();
        let mut links: Vec<(&u32, &bool)> = new.up.iter().collect();
        links.sort();
        for (index, up) in links {
            if self.up.get(index).copied().unwrap_or(false) != *up {
                out.push(NetworkEvent {
                    kind: if *up {
                        NetworkEventKind::LinkUp
                    } else {
                        NetworkEventKind::LinkDown
                    },
                    interface: new.name(*index),
                    address: None,
                });
            }
        }
        let mut gone_links: Vec<&u32> = self
            .up
            .iter()
            .filter(|(i, up)| **up && !new.up.contains_key(i))
            .map(|(i, _)| i)
            .collect();
        gone_links.sort();
        for index in gone_links {
            out.push(NetworkEvent {
                kind: NetworkEventKind::LinkDown,
                interface: self.name(*index),
                address: None,
            });
        }
        let mut removed: Vec<&(u32, IpAddr)> = self.addrs.difference(&new.addrs).collect();
        removed.sort();
        for (index, ip) in removed {
            out.push(NetworkEvent {
                kind: NetworkEventKind::AddressRemoved,
                interface: self.name(*index),
                address: Some(*ip),
            });
        }
        let mut added: Vec<&(u32, IpAddr)> = new.addrs.difference(&self.addrs).collect();
        added.sort();
        for (index, ip) in added {
            out.push(NetworkEvent {
                kind: NetworkEventKind::AddressAdded,
                interface: new.name(*index),
                address: Some(*ip),
            });
        }
        out
    }
}

/// Starts the monitor; its events arrive on the returned channel until it
/// is dropped. `resync` is how often everything is dumped again and
/// compared.
#[cfg(target_os = "linux")]
pub(crate) fn spawn(resync: Duration) -> Result<mpsc::UnboundedReceiver<MonitorMsg>, WatchError> {
    linux::spawn(resync)
}

/// No monitor on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn spawn(_resync: Duration) -> Result<mpsc::UnboundedReceiver<MonitorMsg>, WatchError> {
    Err(WatchError::Unsupported)
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{MonitorMsg, NetworkEvent, NetworkEventKind, Snapshot, WatchError};
    use std::net::IpAddr;
    use std::time::Duration;

    use futures_util::stream::{StreamExt, TryStreamExt};
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
    use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::{new_multicast_connection, Handle, MulticastGroup};
    use tokio::sync::mpsc;
    use tracing::debug;

    pub(super) fn spawn(
        resync: Duration,
    ) -> Result<mpsc::UnboundedReceiver<MonitorMsg>, WatchError> {
        let (conn, handle, mut messages) = new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ])
        .map_err(WatchError::Netlink)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(conn);
        tokio::spawn(async move {
            let mut known = dump(&handle).await.unwrap_or_default();
            let mut tick = tokio::time::interval(resync.max(Duration::from_millis(10)));
            tick.tick().await;
            loop {
                tokio::select! {
                    msg = messages.next() => {
                        let Some((msg, _)) = msg else {
                            debug!("netlink monitor closed");
                            return;
                        };
                        let NetlinkPayload::InnerMessage(m) = msg.payload else {
                            continue;
                        };
                        for ev in translate(&mut known, m) {
                            if tx.send(MonitorMsg::Event(ev)).is_err() {
                                return;
                            }
                        }
                    }
                    _ = tick.tick() => {
                        let Ok(now) = dump(&handle).await else {
                            continue;
                        };
                        let events = known.diff(&now);
                        known = now;
                        for ev in events {
                            debug!(?ev, "netlink resync found a change");
                            if tx.send(MonitorMsg::Event(ev)).is_err() {
                                return;
                            }
                        }
                        if tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Every link's name and state and every address, as the kernel has
    /// them now.
    async fn dump(handle: &Handle) -> Result<Snapshot, rtnetlink::Error> {
        let mut snap = Snapshot::default();
        let mut links = handle.link().get().execute();
        while let Some(link) = links.try_next().await? {
            record_link(&mut snap, &link);
        }
        let mut addrs = handle.address().get().execute();
        while let Some(addr) = addrs.try_next().await? {
            if let Some(ip) = address_of(&addr) {
                snap.addrs.insert((addr.header.index, ip));
            }
        }
        Ok(snap)
    }

    fn record_link(snap: &mut Snapshot, link: &LinkMessage) -> bool {
        let index = link.header.index;
        for a in &link.attributes {
            if let LinkAttribute::IfName(name) = a {
                snap.names.insert(index, name.clone());
            }
        }
        let flags = link.header.flags;
        let up = flags.contains(LinkFlags::Up)
            && (flags.contains(LinkFlags::Running) || flags.contains(LinkFlags::LowerUp));
        snap.up.insert(index, up) != Some(up)
    }

    fn address_of(m: &AddressMessage) -> Option<IpAddr> {
        // IFA_LOCAL is the local address (IFA_ADDRESS is the peer's on a
        // point-to-point link); IPv6 has only IFA_ADDRESS
        let mut address = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => return Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                _ => {}
            }
        }
        address
    }

    fn route_gateway(m: &RouteMessage) -> (Option<u32>, Option<IpAddr>) {
        let mut oif = None;
        let mut gw = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(IpAddr::V4(*ip)),
                RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gw = Some(IpAddr::V6(*ip)),
                _ => {}
            }
        }
        (oif, gw)
    }

    /// One notification as events, keeping `known` up to date.
    fn translate(known: &mut Snapshot, m: RouteNetlinkMessage) -> Vec<NetworkEvent> {
        let mut out = Vec::new();
        match m {
            RouteNetlinkMessage::NewAddress(a) => {
                if let Some(ip) = address_of(&a) {
                    if known.addrs.insert((a.header.index, ip)) {
                        out.push(NetworkEvent {
                            kind: NetworkEventKind::AddressAdded,
                            interface: known.name(a.header.index),
                            address: Some(ip),
                        });
                    }
                }
            }
            RouteNetlinkMessage::DelAddress(a) => {
                if let Some(ip) = address_of(&a) {
                    known.addrs.remove(&(a.header.index, ip));
                    out.push(NetworkEvent {
                        kind: NetworkEventKind::AddressRemoved,
                        interface: known.name(a.header.index),
                        address: Some(ip),
                    });
                }
            }
            RouteNetlinkMessage::NewLink(l) if record_link(known, &l) => {
                let up = known.up.get(&l.header.index).copied().unwrap_or(false);
                out.push(NetworkEvent {
                    kind: if up {
                        NetworkEventKind::LinkUp
                    } else {
                        NetworkEventKind::LinkDown
                    },
                    interface: known.name(l.header.index),
                    address: None,
                });
            }
            RouteNetlinkMessage::DelLink(l) => {
                let index = l.header.index;
                let name = known.name(index);
                known.up.remove(&index);
                known.addrs.retain(|(i, _)| *i != index);
                out.push(NetworkEvent {
                    kind: NetworkEventKind::LinkDown,
                    interface: name,
                    address: None,
                });
            }
            RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r)
                if r.header.destination_prefix_length == 0 =>
            {
                let (oif, gw) = route_gateway(&r);
                out.push(NetworkEvent {
                    kind: NetworkEventKind::RouteChanged,
                    interface: oif.map(|i| known.name(i)).unwrap_or_default(),
                    address: gw,
                });
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn snap(up: &[(u32, &str, bool)], addrs: &[(u32, &str)]) -> Snapshot {
        Snapshot {
            names: up.iter().map(|(i, n, _)| (*i, (*n).to_owned())).collect(),
            up: up.iter().map(|(i, _, u)| (*i, *u)).collect(),
            addrs: addrs
                .iter()
                .map(|(i, a)| (*i, a.parse().unwrap()))
                .collect(),
        }
    }

    #[test]
    fn a_resync_reports_what_changed_links_first() {
        let before = snap(
            &[(1, "lo", true), (2, "wifi", true), (3, "cell", false)],
            &[(1, "127.0.0.1"), (2, "10.1.0.2")],
        );
        let after = snap(
            &[(1, "lo", true), (2, "wifi", false), (3, "cell", true)],
            &[(1, "127.0.0.1"), (3, "10.2.0.2"), (3, "fd00:2::2")],
        );
        let got: Vec<(NetworkEventKind, String, Option<IpAddr>)> = before
            .diff(&after)
            .into_iter()
            .map(|e| (e.kind, e.interface, e.address))
            .collect();
        assert_eq!(
            got,
            vec![
                (NetworkEventKind::LinkDown, "wifi".into(), None),
                (NetworkEventKind::LinkUp, "cell".into(), None),
                (
                    NetworkEventKind::AddressRemoved,
                    "wifi".into(),
                    Some("10.1.0.2".parse().unwrap())
                ),
                (
                    NetworkEventKind::AddressAdded,
                    "cell".into(),
                    Some("10.2.0.2".parse().unwrap())
                ),
                (
                    NetworkEventKind::AddressAdded,
                    "cell".into(),
                    Some("fd00:2::2".parse().unwrap())
                ),
            ]
        );
        assert!(after.diff(&after).is_empty());
        // a link that disappeared altogether is down
        let gone = snap(&[(1, "lo", true)], &[(1, "127.0.0.1")]);
        let kinds: Vec<NetworkEventKind> = after.diff(&gone).into_iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&NetworkEventKind::LinkDown), "{kinds:?}");
        assert_eq!(NetworkEventKind::RouteChanged.as_str(), "route_changed");
    }
}
