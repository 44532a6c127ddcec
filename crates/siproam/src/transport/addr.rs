//! Local addresses: which ones the host has, and which one the OS would
//! send from.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Tells whether an address is (still) assigned to this host. Used when a
/// listener pinned to a literal address is restarted; tests and the
/// simulator inject their own.
pub trait AddressOracle: Send + Sync + fmt::Debug {
    /// Whether `ip` is a local address of this host now.
    fn is_local(&self, ip: IpAddr) -> bool;
}

/// The host's real addresses: an address is local if a UDP socket can be
/// bound to it (the OS answers "address not available" otherwise).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemAddresses;

impl AddressOracle for SystemAddresses {
    fn is_local(&self, ip: IpAddr) -> bool {
        match UdpSocket::bind(SocketAddr::new(ip, 0)) {
            Ok(_) => true,
            // Only a definite "not here" counts: on any other error the
            // real bind will report what is wrong.
            Err(e) => e.kind() != io::ErrorKind::AddrNotAvailable,
        }
    }
}

/// The local address the OS would use to send towards `remote`: connects an
/// unbound UDP socket (which sends no packet) and reads its local address.
/// Fails when there is no route: also when the only answer is a loopback
/// or IPv6 link-local address for a destination that is neither (some
/// network stacks give `::1` or `fe80::…` once every global IPv6 address
/// is gone).
pub fn source_address_for(remote: SocketAddr) -> io::Result<IpAddr> {
    let any: IpAddr = match remote {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0))?;
    socket.connect(remote)?;
    let ip = socket.local_addr()?.ip();
    let link_local = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    };
    if (ip.is_loopback() && !remote.ip().is_loopback())
        || (link_local(ip) && !link_local(remote.ip()))
    {
        return Err(io::Error::new(
            io::ErrorKind::NetworkUnreachable,
            format!("no route to {remote}"),
        ));
    }
    Ok(ip)
}
