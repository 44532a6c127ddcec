//! RFC 3263 server location: from a SIP or SIPS URI to an ordered list of
//! `(transport, address, TLS server name)` targets to try in turn.
//!
//! The procedure (RFC 3263 §4, client side):
//!
//! 1. **Transport.** A `;transport=` parameter wins. Otherwise a numeric host
//!    or an explicit port means UDP for `sip:` and TLS (over TCP) for `sips:`.
//!    Otherwise NAPTR records (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`) choose the
//!    transports, in their `order` / `preference` order; a `sips:` URI uses
//!    `SIPS+D2T` only.
//! 2. **Port and address.** A numeric host needs no DNS. An explicit port
//!    means A/AAAA only. Otherwise SRV records (`_sip._udp`, `_sip._tcp`,
//!    `_sips._tcp`) are ordered by priority and, within one priority, by
//!    RFC 2782 weighted random selection; each SRV target is then looked up
//!    with A/AAAA. Without NAPTR records, an SRV query is made for each
//!    transport the client supports, in the client's order of preference.
//!    Without SRV records, the host's A/AAAA records are used on the default
//!    port (5060, or 5061 for TLS).
//!
//! `maddr` overrides the host. Literal IPv4 and bracketed IPv6 hosts never
//! touch DNS. A [`FamilyPreference`] filters or orders the addresses of each
//! host (it never reorders SRV targets, whose priority the server's
//! administrator chose).
//!
//! Randomness is an input: [`Resolver::resolve`] takes a `FnMut() -> u32`,
//! so a seeded generator makes the order reproducible.
//!
//! DNS is reached through the small [`Dns`] trait, so the RFC 3263 logic runs
//! against a fake table in tests and the simulator. [`HickoryDns`] is the real
//! implementation, on `hickory-resolver`. When the machine has no resolver
//! configuration, or no name server can be reached, it falls back to the
//! operating system's resolver (`getaddrinfo`, which reads `/etc/hosts`) for
//! A/AAAA, so `sip:localhost` and hosts-file names work without DNS.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use siproam_sip::Uri;
//! use siproam::resolve::{Destination, Resolver, Transport};
//! let resolver = Resolver::from_system()
//!     .with_transports(&[Transport::Udp, Transport::Tcp, Transport::Tls]);
//! let uri = Uri::parse("sip:example.com")?;
//! let dest = Destination::from_uri(&uri)?;
//! let mut state = 0x2545_f491_u32; // the caller's seeded RNG
//! let mut rng = move || {
//!     state ^= state << 13;
//!     state ^= state >> 17;
//!     state ^= state << 5;
//!     state
//! };
//! for target in resolver.resolve(&dest, &mut rng).await? {
//!     println!("{} {} ({})", target.transport, target.addr, target.server_name);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::config::{LookupIpStrategy, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use siproam_sip::{Host, SipUri, Uri, UriError};
use tracing::{debug, warn};

/// At most this many NAPTR records are followed for one name.
const MAX_NAPTR: usize = 8;
/// At most this many SRV records are used from one SRV record set.
const MAX_SRV: usize = 16;
/// At most this many addresses are kept for one host name.
const MAX_ADDRS_PER_HOST: usize = 16;

// ---------------------------------------------------------------------------
// Public vocabulary
// ---------------------------------------------------------------------------

pub use crate::transport::Transport;

/// What RFC 3263 needs to know of a transport (the core's [`Transport`];
/// its default port is [`Transport::default_port`] and a `;transport=`
/// value is parsed by [`Transport::from_token`]).
pub trait Rfc3263Transport {
    /// The SRV service and protocol labels for this transport
    /// (`_sip._udp`, `_sip._tcp`, `_sips._tcp`; RFC 3263 §4.2).
    fn srv_prefix(self) -> &'static str;

    /// The NAPTR service field for this transport
    /// (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`; RFC 3263 §4.1).
    fn naptr_service(self) -> &'static str;
}

impl Rfc3263Transport for Transport {
    fn srv_prefix(self) -> &'static str {
        match self {
            Transport::Udp => "_sip._udp",
            Transport::Tcp => "_sip._tcp",
            Transport::Tls => "_sips._tcp",
        }
    }

    fn naptr_service(self) -> &'static str {
        match self {
            Transport::Udp => "SIP+D2U",
            Transport::Tcp => "SIP+D2T",
            Transport::Tls => "SIPS+D2T",
        }
    }
}

/// The transport of a NAPTR service field (case-insensitive).
fn transport_from_naptr_service(service: &str) -> Option<Transport> {
    [Transport::Udp, Transport::Tcp, Transport::Tls]
        .into_iter()
        .find(|t| t.naptr_service().eq_ignore_ascii_case(service))
}

/// One place to send a request to: try the targets of a resolution in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolvedTarget {
    /// The transport to use.
    pub transport: Transport,
    /// The server's address and port.
    pub addr: SocketAddr,
    /// The name to send as TLS SNI and to check the server's certificate
    /// against (RFC 5922 §4): the host of the URI being resolved, never a
    /// name learnt from NAPTR or SRV records, which DNS does not protect.
    /// For a numeric host it is the address in text form (no brackets).
    /// Present for every transport; only TLS uses it.
    pub server_name: String,
}

/// Which address families to use, and which first.
///
/// The ordering applies to the addresses of each host name separately: the
/// order of SRV targets and NAPTR records is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FamilyPreference {
    /// IPv4 addresses only.
    Ipv4Only,
    /// IPv6 addresses only.
    Ipv6Only,
    /// Both families, IPv4 addresses first (the default: most SIP services
    /// are reachable over IPv4; the driver should set this from the local
    /// addresses it has).
    #[default]
    PreferIpv4,
    /// Both families, IPv6 addresses first.
    PreferIpv6,
}

impl FamilyPreference {
    fn allows(self, ip: &IpAddr) -> bool {
        match self {
            FamilyPreference::Ipv4Only => ip.is_ipv4(),
            FamilyPreference::Ipv6Only => ip.is_ipv6(),
            FamilyPreference::PreferIpv4 | FamilyPreference::PreferIpv6 => true,
        }
    }

    /// Keeps the allowed addresses, preferred family first, otherwise in the
    /// order given, without duplicates.
    fn apply(self, ips: Vec<IpAddr>) -> Vec<IpAddr> {
        let mut seen = HashSet::new();
        let mut kept: Vec<IpAddr> = ips
            .into_iter()
            .filter(|ip| self.allows(ip) && seen.insert(*ip))
            .collect();
        match self {
            // `sort_by_key` is stable: the DNS order is kept within a family.
            FamilyPreference::PreferIpv4 => kept.sort_by_key(IpAddr::is_ipv6),
            FamilyPreference::PreferIpv6 => kept.sort_by_key(IpAddr::is_ipv4),
            FamilyPreference::Ipv4Only | FamilyPreference::Ipv6Only => {}
        }
        kept.truncate(MAX_ADDRS_PER_HOST);
        kept
    }
}

/// A host to resolve: a domain name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NameOrIp {
    /// A domain name (looked up in DNS).
    Name(String),
    /// A literal address (never looked up).
    Ip(IpAddr),
}

impl NameOrIp {
    fn from_host(host: Host<'_>) -> NameOrIp {
        match host {
            Host::Name(n) => NameOrIp::Name(n.to_owned()),
            Host::V4(a) => NameOrIp::Ip(IpAddr::V4(a)),
            Host::V6(a) => NameOrIp::Ip(IpAddr::V6(a)),
        }
    }

    /// Parses `example.com`, `192.0.2.1`, `[2001:db8::1]` or a bare
    /// `2001:db8::1`.
    fn parse(text: &str) -> Result<NameOrIp, UriError> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(NameOrIp::Ip(ip));
        }
        Host::parse(text).map(NameOrIp::from_host)
    }

    /// The TLS server name for this host: the name without a trailing dot,
    /// or the address in text form.
    fn server_name(&self) -> String {
        match self {
            NameOrIp::Name(n) => n.strip_suffix('.').unwrap_or(n).to_owned(),
            NameOrIp::Ip(ip) => ip.to_string(),
        }
    }
}

/// What to resolve: the parts of a SIP/SIPS URI that RFC 3263 looks at.
///
/// Build it with [`Destination::from_uri`] / [`Destination::from_sip_uri`],
/// or from a host/port/transport triple with [`Destination::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The host to look up: the URI's `maddr` parameter if present,
    /// otherwise its host.
    pub host: NameOrIp,
    /// The explicit port, if any.
    pub port: Option<u16>,
    /// The transport from the `;transport=` parameter, if any.
    pub transport: Option<Transport>,
    /// True for a `sips:` URI: only TLS may be used.
    pub secure: bool,
    /// The name for TLS SNI and certificate checks (see
    /// [`ResolvedTarget::server_name`]): the URI's host, even when `maddr` is given.
    pub server_name: String,
}

impl Destination {
    /// A destination from a host (`example.com`, `192.0.2.1`,
    /// `[2001:db8::1]` or `2001:db8::1`), an optional port and an optional
    /// transport. It is a `sip:` destination; see [`Destination::secure`].
    pub fn new(
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
    ) -> Result<Destination, ResolveError> {
        if port == Some(0) {
            return Err(ResolveError::ZeroPort);
        }
        let host = NameOrIp::parse(host).map_err(ResolveError::InvalidHost)?;
        Ok(Destination {
            server_name: host.server_name(),
            host,
            port,
            transport,
            secure: false,
        })
    }

    /// Marks the destination as `sips:` (TLS only) or not.
    #[must_use]
    pub fn secure(mut self, secure: bool) -> Destination {
        self.secure = secure;
        self
    }

    /// The destination of a `sip:` or `sips:` URI. Other schemes give
    /// [`ResolveError::NotSip`].
    pub fn from_uri(uri: &Uri<'_>) -> Result<Destination, ResolveError> {
        match uri.as_sip() {
            Some(sip) => Destination::from_sip_uri(sip),
            None => Err(ResolveError::NotSip),
        }
    }

    /// The destination of a SIP or SIPS URI: host (or `maddr`), port,
    /// `;transport=` and scheme.
    pub fn from_sip_uri(uri: &SipUri<'_>) -> Result<Destination, ResolveError> {
        let transport = match uri.transport() {
            None => None,
            Some(t) => Some(Transport::from_token(t).ok_or(ResolveError::UnknownTransport)?),
        };
        if uri.port() == Some(0) {
            return Err(ResolveError::ZeroPort);
        }
        let host = match uri.maddr() {
            Some(maddr) => NameOrIp::parse(maddr).map_err(ResolveError::InvalidMaddr)?,
            None => NameOrIp::from_host(uri.host()),
        };
        Ok(Destination {
            host,
            port: uri.port(),
            transport,
            secure: uri.is_secure(),
            server_name: NameOrIp::from_host(uri.host()).server_name(),
        })
    }
}

/// A NAPTR record (RFC 3403), as the RFC 3263 logic needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Naptr {
    /// Processing order; lower first.
    pub order: u16,
    /// Preference among records of equal order; lower first.
    pub preference: u16,
    /// Flags; SIP uses `S` (the replacement is an SRV name).
    pub flags: String,
    /// Service field, e.g. `SIP+D2U`.
    pub services: String,
    /// Regular expression; empty for SIP.
    pub regexp: String,
    /// The replacement domain name (the SRV name to query).
    pub replacement: String,
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Srv {
    /// Priority; lower first.
    pub priority: u16,
    /// Relative weight among records of equal priority.
    pub weight: u16,
    /// The port of the service.
    pub port: u16,
    /// The target host; `.` means the service is not available.
    pub target: String,
}

/// Why a DNS query failed. A query that finds no records (NXDOMAIN or no
/// data) is not an error: it answers an empty list.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// No name server is configured, or none could be reached (connection
    /// refused, network unreachable).
    #[error("no DNS server could be reached")]
    NoConnection,
    /// The name servers did not answer in time.
    #[error("DNS query timed out")]
    Timeout,
    /// A name server answered with an error code (SERVFAIL, REFUSED, …).
    #[error("DNS server answered with response code {rcode}")]
    ServerFailure {
        /// The DNS response code.
        rcode: u16,
    },
    /// The name is not a valid domain name.
    #[error("not a valid domain name")]
    InvalidName,
    /// The operating system's resolver failed (or does not know the name).
    #[error("system resolver failed")]
    System(#[source] Arc<io::Error>),
    /// Any other failure of the DNS library.
    #[error("DNS lookup failed")]
    Other(#[source] Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl DnsError {
    /// True when DNS itself is out of reach ([`DnsError::NoConnection`] or
    /// [`DnsError::Timeout`]): further NAPTR and SRV queries would fail the
    /// same way, so resolution goes straight to A/AAAA (where
    /// [`HickoryDns`] falls back to the operating system's resolver).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DnsError::NoConnection | DnsError::Timeout)
    }
}

/// Why a destination could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The URI is neither `sip:` nor `sips:`.
    #[error("not a sip: or sips: URI")]
    NotSip,
    /// The `;transport=` parameter names a transport this resolver does not
    /// know (only `udp`, `tcp` and `tls` are known).
    #[error("unknown transport parameter")]
    UnknownTransport,
    /// A `sips:` URI with `;transport=udp`: SIPS needs TLS.
    #[error("sips: URI with transport=udp")]
    SecureOverUdp,
    /// The URI requires a transport the client does not support.
    #[error("the client does not support {0}")]
    TransportNotSupported(Transport),
    /// None of the client's transports can be used for this destination
    /// (an empty transport list, or a `sips:` URI without TLS support).
    #[error("no usable transport for this destination")]
    NoUsableTransport,
    /// The host is not a valid host name or address.
    #[error("invalid host")]
    InvalidHost(#[source] UriError),
    /// The `maddr` parameter is not a valid host.
    #[error("invalid maddr parameter")]
    InvalidMaddr(#[source] UriError),
    /// The URI's port is 0.
    #[error("port 0 is not a destination")]
    ZeroPort,
    /// The only addresses found are of a family the preference excludes.
    #[error("no address of the allowed family")]
    NoAddressInFamily,
    /// DNS failed and nothing was found.
    #[error("DNS lookup failed")]
    Dns(#[source] DnsError),
    /// DNS answered, but with no usable record.
    #[error("no server found for the destination")]
    NotFound,
}

// ---------------------------------------------------------------------------
// The DNS abstraction
// ---------------------------------------------------------------------------

/// The DNS queries RFC 3263 needs. An empty list means no such records
/// (NXDOMAIN or no data); an error means the question was not answered.
///
/// [`HickoryDns`] is the real implementation; tests and the simulator use a
/// table.
pub trait Dns {
    /// NAPTR records of `name`.
    fn naptr(&self, name: &str) -> impl Future<Output = Result<Vec<Naptr>, DnsError>> + Send;
    /// SRV records of `name` (e.g. `_sip._udp.example.com`), unordered.
    fn srv(&self, name: &str) -> impl Future<Output = Result<Vec<Srv>, DnsError>> + Send;
    /// A and AAAA records of `name`. `family` is a hint: an implementation
    /// may skip the query for an excluded family; the caller filters and
    /// orders the result anyway.
    fn ip(
        &self,
        name: &str,
        family: FamilyPreference,
    ) -> impl Future<Output = Result<Vec<IpAddr>, DnsError>> + Send;
}

/// A shared [`Dns`] is a [`Dns`].
impl<D: Dns> Dns for Arc<D> {
    fn naptr(&self, name: &str) -> impl Future<Output = Result<Vec<Naptr>, DnsError>> + Send {
        (**self).naptr(name)
    }
    fn srv(&self, name: &str) -> impl Future<Output = Result<Vec<Srv>, DnsError>> + Send {
        (**self).srv(name)
    }
    fn ip(
        &self,
        name: &str,
        family: FamilyPreference,
    ) -> impl Future<Output = Result<Vec<IpAddr>, DnsError>> + Send {
        (**self).ip(name, family)
    }
}

// ---------------------------------------------------------------------------
// Resolver
// ---------------------------------------------------------------------------

/// RFC 3263 resolution over a [`Dns`] implementation, with the client's
/// transports and address-family preference.
#[derive(Debug, Clone)]
pub struct Resolver<D = HickoryDns> {
    dns: D,
    transports: Vec<Transport>,
    family: FamilyPreference,
}

impl Resolver<HickoryDns> {
    /// A resolver on the system's DNS configuration ([`HickoryDns::from_system`]),
    /// supporting UDP, TCP and TLS, preferring IPv4.
    pub fn from_system() -> Resolver<HickoryDns> {
        Resolver::new(HickoryDns::from_system())
    }
}

impl<D: Dns> Resolver<D> {
    /// A resolver over `dns`, supporting UDP, TCP and TLS (in that order of
    /// preference), with [`FamilyPreference::PreferIpv4`].
    pub fn new(dns: D) -> Resolver<D> {
        Resolver {
            dns,
            transports: vec![Transport::Udp, Transport::Tcp, Transport::Tls],
            family: FamilyPreference::default(),
        }
    }

    /// Sets the transports the client supports, most preferred first. The
    /// order decides which SRV records come first when the domain has no
    /// NAPTR records, and which transport a numeric host gets when the
    /// client lacks UDP.
    #[must_use]
    pub fn with_transports(mut self, transports: &[Transport]) -> Resolver<D> {
        self.set_transports(transports);
        self
    }

    /// Sets the address-family preference.
    #[must_use]
    pub fn with_family(mut self, family: FamilyPreference) -> Resolver<D> {
        self.family = family;
        self
    }

    /// Replaces the supported transports (see [`Resolver::with_transports`]).
    pub fn set_transports(&mut self, transports: &[Transport]) {
        self.transports.clear();
        for t in transports {
            if !self.transports.contains(t) {
                self.transports.push(*t);
            }
        }
    }

    /// Replaces the address-family preference, e.g. after a network change.
    pub fn set_family(&mut self, family: FamilyPreference) {
        self.family = family;
    }

    /// The supported transports, most preferred first.
    pub fn transports(&self) -> &[Transport] {
        &self.transports
    }

    /// The address-family preference.
    pub fn family(&self) -> FamilyPreference {
        self.family
    }

    /// The DNS implementation.
    pub fn dns(&self) -> &D {
        &self.dns
    }

    /// Resolves a `sip:` or `sips:` URI ([`Destination::from_uri`], then
    /// [`Resolver::resolve`]).
    pub async fn resolve_uri<R>(
        &self,
        uri: &Uri<'_>,
        rng: &mut R,
    ) -> Result<Vec<ResolvedTarget>, ResolveError>
    where
        R: FnMut() -> u32,
    {
        let dest = Destination::from_uri(uri)?;
        self.resolve(&dest, rng).await
    }

    /// Resolves a destination to the targets to try, in order. The list is
    /// never empty, and has no duplicate `(transport, addr)`.
    ///
    /// `rng` supplies the randomness for RFC 2782 weighted SRV selection; it
    /// is called only where records of equal priority must be ordered.
    pub async fn resolve<R>(
        &self,
        dest: &Destination,
        rng: &mut R,
    ) -> Result<Vec<ResolvedTarget>, ResolveError>
    where
        R: FnMut() -> u32,
    {
        let mut run = Run {
            dns: &self.dns,
            family: self.family,
            server_name: &dest.server_name,
            targets: Vec::new(),
            seen: HashSet::new(),
            error: None,
            filtered: false,
            unreachable: false,
        };
        run.resolve(dest, &self.transports, rng).await?;
        run.finish()
    }
}

/// The state of one resolution.
struct Run<'a, D> {
    dns: &'a D,
    family: FamilyPreference,
    server_name: &'a str,
    targets: Vec<ResolvedTarget>,
    seen: HashSet<(Transport, SocketAddr)>,
    /// The first DNS failure, reported when nothing is found.
    error: Option<DnsError>,
    /// True when addresses were found but the family preference removed them.
    filtered: bool,
    /// True once DNS was found out of reach: no more NAPTR/SRV queries.
    unreachable: bool,
}

impl<D: Dns> Run<'_, D> {
    async fn resolve<R: FnMut() -> u32>(
        &mut self,
        dest: &Destination,
        supported: &[Transport],
        rng: &mut R,
    ) -> Result<(), ResolveError> {
        if supported.is_empty() {
            return Err(ResolveError::NoUsableTransport);
        }
        // §4.1: an explicit transport parameter.
        let explicit = match dest.transport {
            None => None,
            Some(t) => {
                let t = match (dest.secure, t) {
                    (true, Transport::Udp) => return Err(ResolveError::SecureOverUdp),
                    (true, _) => Transport::Tls,
                    (false, t) => t,
                };
                if !supported.contains(&t) {
                    return Err(ResolveError::TransportNotSupported(t));
                }
                Some(t)
            }
        };

        let name = match &dest.host {
            NameOrIp::Ip(ip) => {
                // Numeric host: no DNS at all.
                let transport = match explicit {
                    Some(t) => t,
                    None => default_transport(dest.secure, supported)?,
                };
                let port = dest.port.unwrap_or(transport.default_port());
                debug!(%ip, port, %transport, "RFC 3263: numeric host");
                self.add_addrs(transport, vec![*ip], port);
                return Ok(());
            }
            NameOrIp::Name(name) => name.as_str(),
        };

        if let Some(port) = dest.port {
            // §4.2: an explicit port means A/AAAA only.
            let transport = match explicit {
                Some(t) => t,
                None => default_transport(dest.secure, supported)?,
            };
            debug!(name, port, %transport, "RFC 3263: explicit port, A/AAAA only");
            self.lookup_host(transport, name, port).await;
            return Ok(());
        }

        // Transports to try SRV for, in order, when NAPTR does not decide.
        let srv_transports: Vec<Transport> = match explicit {
            Some(t) => vec![t],
            None => supported
                .iter()
                .copied()
                .filter(|t| !dest.secure || *t == Transport::Tls)
                .collect(),
        };
        if srv_transports.is_empty() {
            return Err(ResolveError::NoUsableTransport);
        }

        let mut queried_srv: HashSet<(Transport, String)> = HashSet::new();
        let mut srv_found = false;

        if explicit.is_none() {
            // §4.1: NAPTR.
            let records = self.naptr(name).await;
            let usable = usable_naptr(records, dest.secure, supported);
            debug!(name, count = usable.len(), "RFC 3263: usable NAPTR records");
            for (transport, replacement) in usable {
                if self.unreachable {
                    break;
                }
                if !queried_srv.insert((transport, normalize(&replacement))) {
                    continue;
                }
                srv_found |= self.srv_then_hosts(transport, &replacement, rng).await;
            }
        }

        if self.targets.is_empty() && !self.unreachable {
            // §4.1: no (usable) NAPTR: SRV for each supported transport.
            for transport in &srv_transports {
                if self.unreachable {
                    break;
                }
                let srv_name = format!("{}.{}", transport.srv_prefix(), name);
                if !queried_srv.insert((*transport, normalize(&srv_name))) {
                    continue;
                }
                srv_found |= self.srv_then_hosts(*transport, &srv_name, rng).await;
            }
        }

        if self.targets.is_empty() && !srv_found {
            // §4.2: no SRV records: A/AAAA on the default port.
            let transport = match explicit {
                Some(t) => t,
                None => default_transport(dest.secure, supported)?,
            };
            let port = transport.default_port();
            debug!(name, port, %transport, "RFC 3263: no SRV, A/AAAA on default port");
            self.lookup_host(transport, name, port).await;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<ResolvedTarget>, ResolveError> {
        if !self.targets.is_empty() {
            return Ok(self.targets);
        }
        if let Some(e) = self.error {
            return Err(ResolveError::Dns(e));
        }
        if self.filtered {
            return Err(ResolveError::NoAddressInFamily);
        }
        Err(ResolveError::NotFound)
    }

    fn note_error(&mut self, e: DnsError) {
        if e.is_unreachable() {
            self.unreachable = true;
        }
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    async fn naptr(&mut self, name: &str) -> Vec<Naptr> {
        match self.dns.naptr(name).await {
            Ok(records) => records,
            Err(e) => {
                debug!(name, error = %e, "NAPTR query failed; treated as no records");
                self.note_error(e);
                Vec::new()
            }
        }
    }

    /// SRV query on `srv_name`, then A/AAAA for each target in RFC 2782
    /// order. Returns true when the SRV record set was not empty (even if
    /// it only said "not available" or its targets had no address).
    async fn srv_then_hosts<R: FnMut() -> u32>(
        &mut self,
        transport: Transport,
        srv_name: &str,
        rng: &mut R,
    ) -> bool {
        let records = match self.dns.srv(srv_name).await {
            Ok(records) => records,
            Err(e) => {
                debug!(srv_name, error = %e, "SRV query failed; treated as no records");
                self.note_error(e);
                return false;
            }
        };
        if records.is_empty() {
            return false;
        }
        let ordered = order_srv(records, rng);
        debug!(srv_name, count = ordered.len(), %transport, "RFC 3263: SRV records");
        for srv in ordered.into_iter().take(MAX_SRV) {
            if is_root(&srv.target) || srv.port == 0 {
                // "." means the service is decidedly not available here.
                continue;
            }
            self.lookup_host(transport, &srv.target, srv.port).await;
        }
        true
    }

    async fn lookup_host(&mut self, transport: Transport, name: &str, port: u16) {
        match self.dns.ip(name, self.family).await {
            Ok(ips) => self.add_addrs(transport, ips, port),
            Err(e) => {
                debug!(name, error = %e, "A/AAAA query failed");
                self.note_error(e);
            }
        }
    }

    fn add_addrs(&mut self, transport: Transport, ips: Vec<IpAddr>, port: u16) {
        let had_any = !ips.is_empty();
        let ips = self.family.apply(ips);
        if had_any && ips.is_empty() {
            self.filtered = true;
        }
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            if self.seen.insert((transport, addr)) {
                self.targets.push(ResolvedTarget {
                    transport,
                    addr,
                    server_name: self.server_name.to_owned(),
                });
            }
        }
    }
}

/// The transport for a numeric host, an explicit port, or a domain without
/// SRV records (RFC 3263 §4.1): UDP for `sip:` (or, if the client lacks
/// UDP, TCP, then TLS), TLS for `sips:`.
fn default_transport(secure: bool, supported: &[Transport]) -> Result<Transport, ResolveError> {
    let candidates: &[Transport] = if secure {
        &[Transport::Tls]
    } else {
        &[Transport::Udp, Transport::Tcp, Transport::Tls]
    };
    candidates
        .iter()
        .copied()
        .find(|t| supported.contains(t))
        .ok_or(ResolveError::NoUsableTransport)
}

/// NAPTR records SIP can use, in processing order, as `(transport, SRV
/// name)`: terminal (`S` flag) records with a service the client supports
/// (only `SIPS+D2T` for a `sips:` URI), no regular expression and a
/// replacement. Sorted by order, then preference.
fn usable_naptr(
    mut records: Vec<Naptr>,
    secure: bool,
    supported: &[Transport],
) -> Vec<(Transport, String)> {
    records.sort_by_key(|r| (r.order, r.preference));
    records
        .into_iter()
        .filter_map(|r| {
            if !r.flags.eq_ignore_ascii_case("s") || !r.regexp.is_empty() {
                return None;
            }
            if is_root(&r.replacement) {
                return None;
            }
            let transport = transport_from_naptr_service(&r.services)?;
            if secure && transport != Transport::Tls {
                return None;
            }
            if !supported.contains(&transport) {
                return None;
            }
            Some((transport, r.replacement))
        })
        .take(MAX_NAPTR)
        .collect()
}

/// Orders SRV records as RFC 2782 says: by priority, lowest first; within
/// one priority, by weighted random selection (records of weight 0 first in
/// the running sum, so they are picked only when `rng` lands on 0).
///
/// `rng` is called once per selection among two or more records, so a
/// single record per priority consumes no randomness.
pub fn order_srv<R: FnMut() -> u32>(mut records: Vec<Srv>, rng: &mut R) -> Vec<Srv> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let priority = first.priority;
        let mut group = vec![first];
        while let Some(r) = rest.next_if(|r| r.priority == priority) {
            group.push(r);
        }
        // Stable: zero weights first, otherwise as received.
        group.sort_by_key(|r| r.weight != 0);
        while group.len() > 1 {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = u64::from(rng()) % (total + 1);
            let mut running = 0u64;
            let index = group
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= pick
                })
                .unwrap_or(group.len() - 1);
            out.push(group.remove(index));
        }
        out.append(&mut group);
    }
    out
}

fn is_root(name: &str) -> bool {
    name.is_empty() || name == "."
}

/// Lower case, without a trailing dot: for comparing names.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

// ---------------------------------------------------------------------------
// hickory-resolver
// ---------------------------------------------------------------------------

/// The real [`Dns`]: `hickory-resolver` on tokio, falling back to the
/// operating system's resolver when DNS is absent.
///
/// The fallback: when the system has no resolver configuration (no
/// `/etc/resolv.conf`, or no `nameserver` in it), NAPTR and SRV queries
/// answer "no records" and A/AAAA queries go to `getaddrinfo`
/// (`tokio::net::lookup_host`), which reads `/etc/hosts`. When DNS is
/// configured but unreachable (no connection, or a timeout), A/AAAA queries
/// fall back the same way.
///
/// Unreachable DNS is only known once a query has failed: the NAPTR query
/// waits for the configured timeout (`ResolverOpts::timeout` × `attempts`),
/// the RFC 3263 logic then skips the SRV queries, and the A/AAAA query
/// waits once more before it falls back. The driver bounds the whole
/// resolution with its own deadline.
///
/// Cloning is cheap and clones share the cache. After a network change the
/// name servers may have changed: build a new one with
/// [`HickoryDns::from_system`].
#[derive(Debug, Clone)]
pub struct HickoryDns {
    /// `None`: no DNS configured; the operating system's resolver only.
    resolver: Option<TokioResolver>,
}

impl HickoryDns {
    /// A resolver on the system configuration (`/etc/resolv.conf` on Unix),
    /// with `/etc/hosts` consulted first. Without a usable configuration it
    /// uses the operating system's resolver only (a warning is logged).
    pub fn from_system() -> HickoryDns {
        let builder = match TokioResolver::builder_tokio() {
            Ok(builder) => builder,
            Err(e) => {
                warn!(error = %e, "no usable DNS configuration; using the system resolver for A/AAAA only");
                return HickoryDns::system_only();
            }
        };
        let mut builder = builder;
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        match builder.build() {
            Ok(resolver) => HickoryDns {
                resolver: Some(resolver),
            },
            Err(e) => {
                warn!(error = %e, "DNS resolver could not be built; using the system resolver for A/AAAA only");
                HickoryDns::system_only()
            }
        }
    }

    /// A resolver with an explicit configuration (for instance name servers
    /// learnt from DHCP, or a test server on loopback). A configuration with
    /// no name server gives the operating system's resolver only.
    pub fn from_config(
        config: ResolverConfig,
        options: ResolverOpts,
    ) -> Result<HickoryDns, DnsError> {
        if config.name_servers().is_empty() {
            return Ok(HickoryDns::system_only());
        }
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = options;
        let resolver = builder.build().map_err(|e| DnsError::Other(Arc::new(e)))?;
        Ok(HickoryDns {
            resolver: Some(resolver),
        })
    }

    /// No DNS: NAPTR and SRV find nothing; A/AAAA use the operating
    /// system's resolver.
    pub fn system_only() -> HickoryDns {
        HickoryDns { resolver: None }
    }

    /// True when this uses the operating system's resolver only.
    pub fn is_system_only(&self) -> bool {
        self.resolver.is_none()
    }

    /// Empties the DNS cache (e.g. after a network change).
    pub fn clear_cache(&self) {
        if let Some(r) = &self.resolver {
            r.clear_cache();
        }
    }

    async fn lookup(
        resolver: &TokioResolver,
        name: &str,
        record_type: RecordType,
    ) -> Result<Vec<RData>, DnsError> {
        let name = Name::from_utf8(name).map_err(|_| DnsError::InvalidName)?;
        match resolver.lookup(name, record_type).await {
            Ok(lookup) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) => map_net_error(e).map(|()| Vec::new()),
        }
    }
}

/// `Ok(())` for "no records", otherwise the typed error.
fn map_net_error(e: NetError) -> Result<(), DnsError> {
    if e.is_no_records_found() {
        return Ok(());
    }
    match &e {
        NetError::NoConnections => Err(DnsError::NoConnection),
        NetError::Timeout => Err(DnsError::Timeout),
        NetError::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::AddrNotAvailable => Err(DnsError::NoConnection),
            io::ErrorKind::TimedOut => Err(DnsError::Timeout),
            _ => Err(DnsError::Other(Arc::new(e))),
        },
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => Err(DnsError::ServerFailure {
            rcode: u16::from(*code),
        }),
        _ => Err(DnsError::Other(Arc::new(e))),
    }
}

/// A/AAAA through the operating system's resolver (`getaddrinfo`, which
/// reads `/etc/hosts`).
async fn system_lookup(name: &str) -> Result<Vec<IpAddr>, DnsError> {
    let host = name.strip_suffix('.').unwrap_or(name);
    let addrs = tokio::net::lookup_host((host, 0u16))
        .await
        .map_err(|e| DnsError::System(Arc::new(e)))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    Ok(ips)
}

/// Host names pinned to addresses in the configuration, looked up before
/// DNS (the stack's own hosts file): a pinned name gets no NAPTR or SRV
/// records and exactly its pinned addresses, whatever DNS would say. For
/// devices that ship with their SIP server's addresses, and for tests that
/// need a name with both an IPv4 and an IPv6 address.
#[derive(Debug, Clone)]
pub struct StaticHosts<D> {
    dns: D,
    hosts: Arc<std::collections::HashMap<String, Vec<IpAddr>>>,
}

impl<D> StaticHosts<D> {
    /// `dns` behind the pinned `(name, address)` pairs (a name may be
    /// given several times: its addresses keep their order).
    pub fn new(dns: D, pinned: &[(String, IpAddr)]) -> StaticHosts<D> {
        let mut hosts: std::collections::HashMap<String, Vec<IpAddr>> =
            std::collections::HashMap::new();
        for (name, ip) in pinned {
            let list = hosts.entry(host_key(name)).or_default();
            if !list.contains(ip) {
                list.push(*ip);
            }
        }
        StaticHosts {
            dns,
            hosts: Arc::new(hosts),
        }
    }

    /// The DNS behind the pinned names.
    pub fn inner(&self) -> &D {
        &self.dns
    }

    /// Whether `name`, or the domain an SRV name (`_sip._udp.NAME`) is
    /// for, is pinned.
    fn pinned(&self, name: &str) -> Option<&Vec<IpAddr>> {
        let mut key = host_key(name);
        while let Some(rest) = key.strip_prefix('_').and_then(|r| r.split_once('.')) {
            key = rest.1.to_owned();
        }
        self.hosts.get(&key)
    }
}

fn host_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl<D: Dns + Sync> Dns for StaticHosts<D> {
    async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, DnsError> {
        if self.pinned(name).is_some() {
            return Ok(Vec::new());
        }
        self.dns.naptr(name).await
    }

    async fn srv(&self, name: &str) -> Result<Vec<Srv>, DnsError> {
        if self.pinned(name).is_some() {
            return Ok(Vec::new());
        }
        self.dns.srv(name).await
    }

    async fn ip(&self, name: &str, family: FamilyPreference) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(ips) = self.hosts.get(&host_key(name)) {
            return Ok(ips.clone());
        }
        self.dns.ip(name, family).await
    }
}

impl Dns for HickoryDns {
    async fn naptr(&self, name: &str) -> Result<Vec<Naptr>, DnsError> {
        let Some(resolver) = &self.resolver else {
            return Ok(Vec::new());
        };
        let data = HickoryDns::lookup(resolver, name, RecordType::NAPTR).await?;
        Ok(data
            .into_iter()
            .filter_map(|d| match d {
                RData::NAPTR(n) => Some(Naptr {
                    order: n.order,
                    preference: n.preference,
                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                    services: String::from_utf8_lossy(&n.services).into_owned(),
                    regexp: String::from_utf8_lossy(&n.regexp).into_owned(),
                    replacement: n.replacement.to_ascii(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn srv(&self, name: &str) -> Result<Vec<Srv>, DnsError> {
        let Some(resolver) = &self.resolver else {
            return Ok(Vec::new());
        };
        let data = HickoryDns::lookup(resolver, name, RecordType::SRV).await?;
        Ok(data
            .into_iter()
            .filter_map(|d| match d {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: if s.target.is_root() {
                        ".".to_owned()
                    } else {
                        s.target.to_ascii()
                    },
                }),
                _ => None,
            })
            .collect())
    }

    async fn ip(&self, name: &str, family: FamilyPreference) -> Result<Vec<IpAddr>, DnsError> {
        let Some(resolver) = &self.resolver else {
            return system_lookup(name).await;
        };
        let dns_name = Name::from_utf8(name).map_err(|_| DnsError::InvalidName)?;
        let result = match family {
            FamilyPreference::Ipv4Only => resolver
                .lookup(dns_name, RecordType::A)
                .await
                .map(|l| ips_of(l.answers())),
            FamilyPreference::Ipv6Only => resolver
                .lookup(dns_name, RecordType::AAAA)
                .await
                .map(|l| ips_of(l.answers())),
            FamilyPreference::PreferIpv4 | FamilyPreference::PreferIpv6 => resolver
                .lookup_ip(dns_name)
                .await
                .map(|l| l.iter().collect()),
        };
        match result {
            Ok(ips) => Ok(ips),
            Err(e) => match map_net_error(e) {
                Ok(()) => Ok(Vec::new()),
                Err(e) if e.is_unreachable() => {
                    warn!(name, error = %e, "DNS unreachable; falling back to the system resolver");
                    system_lookup(name).await
                }
                Err(e) => Err(e),
            },
        }
    }
}

fn ips_of(records: &[hickory_resolver::proto::rr::Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;

    // -- the fake DNS table ------------------------------------------------

    #[derive(Default)]
    struct FakeDns {
        naptr: HashMap<String, Result<Vec<Naptr>, DnsError>>,
        srv: HashMap<String, Result<Vec<Srv>, DnsError>>,
        ip: HashMap<String, Result<Vec<IpAddr>, DnsError>>,
        log: Mutex<Vec<String>>,
    }

    impl FakeDns {
        fn naptr(mut self, name: &str, records: &[(u16, u16, &str, &str)]) -> Self {
            let v = records
                .iter()
                .map(|(order, preference, services, replacement)| Naptr {
                    order: *order,
                    preference: *preference,
                    flags: "S".into(),
                    services: (*services).into(),
                    regexp: String::new(),
                    replacement: (*replacement).into(),
                })
                .collect();
            self.naptr.insert(normalize(name), Ok(v));
            self
        }
        fn raw_naptr(mut self, name: &str, records: Vec<Naptr>) -> Self {
            self.naptr.insert(normalize(name), Ok(records));
            self
        }
        fn srv(mut self, name: &str, records: &[(u16, u16, u16, &str)]) -> Self {
            let v = records
                .iter()
                .map(|(priority, weight, port, target)| Srv {
                    priority: *priority,
                    weight: *weight,
                    port: *port,
                    target: (*target).into(),
                })
                .collect();
            self.srv.insert(normalize(name), Ok(v));
            self
        }
        fn ips(mut self, name: &str, ips: &[&str]) -> Self {
            let v = ips.iter().map(|s| s.parse().unwrap()).collect();
            self.ip.insert(normalize(name), Ok(v));
            self
        }
        fn naptr_err(mut self, name: &str, e: DnsError) -> Self {
            self.naptr.insert(normalize(name), Err(e));
            self
        }
        fn srv_err(mut self, name: &str, e: DnsError) -> Self {
            self.srv.insert(normalize(name), Err(e));
            self
        }
        fn ip_err(mut self, name: &str, e: DnsError) -> Self {
            self.ip.insert(normalize(name), Err(e));
            self
        }
        fn record(&self, what: &str, name: &str) {
            self.log
                .lock()
                .unwrap()
                .push(format!("{what} {}", normalize(name)));
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Dns for FakeDns {
        fn naptr(&self, name: &str) -> impl Future<Output = Result<Vec<Naptr>, DnsError>> + Send {
            self.record("NAPTR", name);
            std::future::ready(
                self.naptr
                    .get(&normalize(name))
                    .cloned()
                    .unwrap_or(Ok(vec![])),
            )
        }
        fn srv(&self, name: &str) -> impl Future<Output = Result<Vec<Srv>, DnsError>> + Send {
            self.record("SRV", name);
            std::future::ready(
                self.srv
                    .get(&normalize(name))
                    .cloned()
                    .unwrap_or(Ok(vec![])),
            )
        }
        fn ip(
            &self,
            name: &str,
            _family: FamilyPreference,
        ) -> impl Future<Output = Result<Vec<IpAddr>, DnsError>> + Send {
            self.record("A/AAAA", name);
            std::future::ready(self.ip.get(&normalize(name)).cloned().unwrap_or(Ok(vec![])))
        }
    }

    /// An RNG that must not be called.
    fn no_rng() -> impl FnMut() -> u32 {
        || panic!("the RNG was called")
    }

    /// An RNG returning the given values in turn, then panicking.
    fn fixed_rng(values: &[u32]) -> impl FnMut() -> u32 {
        let mut v = Vec::from(values).into_iter();
        move || v.next().expect("RNG called more often than expected")
    }

    fn t(transport: Transport, addr: &str, server_name: &str) -> ResolvedTarget {
        ResolvedTarget {
            transport,
            addr: addr.parse().unwrap(),
            server_name: server_name.into(),
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn resolve_with<D: Dns>(
        resolver: &Resolver<D>,
        uri: &str,
        rng: &mut impl FnMut() -> u32,
    ) -> Result<Vec<ResolvedTarget>, ResolveError> {
        let uri = Uri::parse(uri).unwrap();
        block_on(resolver.resolve_uri(&uri, rng))
    }

    const ALL: &[Transport] = &[Transport::Udp, Transport::Tcp, Transport::Tls];

    // -- transport selection and NAPTR ------------------------------------

    /// A domain with NAPTR, SRV and A records for all three transports.
    fn full_zone() -> FakeDns {
        FakeDns::default()
            .naptr(
                "example.com",
                &[
                    (20, 10, "SIP+D2U", "_sip._udp.example.com."),
                    (10, 20, "SIP+D2T", "_sip._tcp.example.com."),
                    (10, 10, "SIPS+D2T", "_sips._tcp.example.com."),
                ],
            )
            .srv("_sip._udp.example.com", &[(0, 0, 5060, "udp.example.com.")])
            .srv("_sip._tcp.example.com", &[(0, 0, 5070, "tcp.example.com.")])
            .srv(
                "_sips._tcp.example.com",
                &[(0, 0, 5071, "tls.example.com.")],
            )
            .ips("udp.example.com", &["192.0.2.1"])
            .ips("tcp.example.com", &["192.0.2.2"])
            .ips("tls.example.com", &["192.0.2.3"])
            .ips("example.com", &["192.0.2.99"])
    }

    #[test]
    fn static_hosts_pin_a_name_to_both_families() {
        let pinned: Vec<(String, IpAddr)> = vec![
            ("Sip.Test".into(), "127.0.0.1".parse().unwrap()),
            ("sip.test".into(), "::1".parse().unwrap()),
        ];
        // DNS would say otherwise: the pinned name never reaches it
        let make = |family| {
            let dns = full_zone().ips("sip.test", &["192.0.2.50"]);
            Resolver::new(StaticHosts::new(dns, &pinned))
                .with_transports(ALL)
                .with_family(family)
        };
        let r = make(FamilyPreference::PreferIpv4);
        let got = resolve_with(&r, "sip:sip.test:5070", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![
                t(Transport::Udp, "127.0.0.1:5070", "sip.test"),
                t(Transport::Udp, "[::1]:5070", "sip.test"),
            ]
        );
        // no port: no NAPTR or SRV lookup goes to DNS either
        let v6 = make(FamilyPreference::PreferIpv6);
        let got = resolve_with(&v6, "sip:sip.test;transport=tcp", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![
                t(Transport::Tcp, "[::1]:5060", "sip.test"),
                t(Transport::Tcp, "127.0.0.1:5060", "sip.test"),
            ]
        );
        let only4 = make(FamilyPreference::Ipv4Only);
        let got = resolve_with(&only4, "sip:sip.test", &mut no_rng()).unwrap();
        assert_eq!(got, vec![t(Transport::Udp, "127.0.0.1:5060", "sip.test")]);
        for r in [&r, &v6, &only4] {
            assert!(
                r.dns().inner().log().is_empty(),
                "{:?}",
                r.dns().inner().log()
            );
        }
        // other names still go to DNS
        let got = resolve_with(&r, "sip:example.com;transport=tcp", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![t(Transport::Tcp, "192.0.2.2:5070", "example.com")]
        );
    }

    #[test]
    fn naptr_order_then_preference() {
        let r = Resolver::new(full_zone()).with_transports(ALL);
        let got = resolve_with(&r, "sip:alice@example.com", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![
                t(Transport::Tls, "192.0.2.3:5071", "example.com"),
                t(Transport::Tcp, "192.0.2.2:5070", "example.com"),
                t(Transport::Udp, "192.0.2.1:5060", "example.com"),
            ]
        );
        assert_eq!(
            r.dns().log(),
            [
                "NAPTR example.com",
                "SRV _sips._tcp.example.com",
                "A/AAAA tls.example.com",
                "SRV _sip._tcp.example.com",
                "A/AAAA tcp.example.com",
                "SRV _sip._udp.example.com",
                "A/AAAA udp.example.com",
            ]
        );
    }

    #[test]
    fn naptr_skips_transports_the_client_lacks() {
        let r = Resolver::new(full_zone()).with_transports(&[Transport::Udp, Transport::Tcp]);
        let got = resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap();
        let transports: Vec<_> = got.iter().map(|t| t.transport).collect();
        assert_eq!(transports, [Transport::Tcp, Transport::Udp]);
    }

    #[test]
    fn naptr_ignores_unusable_records() {
        let rec = |flags: &str, services: &str, regexp: &str, replacement: &str| Naptr {
            order: 1,
            preference: 1,
            flags: flags.into(),
            services: services.into(),
            regexp: regexp.into(),
            replacement: replacement.into(),
        };
        let dns = FakeDns::default()
            .raw_naptr(
                "example.com",
                vec![
                    rec("U", "E2U+sip", "!^.*$!sip:info@example.com!", "."),
                    rec("", "SIP+D2U", "", "_sip._udp.example.com"),
                    rec("S", "SIP+D2S", "", "_sip._sctp.example.com"),
                    rec("S", "SIP+D2U", "!x!y!", "_sip._udp.example.com"),
                    rec("S", "SIP+D2U", "", "."),
                    Naptr {
                        order: 2,
                        ..rec("s", "sip+d2t", "", "_sip._tcp.example.com")
                    },
                ],
            )
            .srv("_sip._tcp.example.com", &[(0, 0, 5070, "tcp.example.com")])
            .ips("tcp.example.com", &["192.0.2.2"]);
        let r = Resolver::new(dns);
        let got = resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![t(Transport::Tcp, "192.0.2.2:5070", "example.com")]
        );
        assert_eq!(
            r.dns().log(),
            [
                "NAPTR example.com",
                "SRV _sip._tcp.example.com",
                "A/AAAA tcp.example.com"
            ]
        );
    }

    #[test]
    fn naptr_without_any_usable_record_falls_back_to_srv() {
        let dns = FakeDns::default()
            .naptr(
                "example.com",
                &[(10, 10, "SIP+D2S", "_sip._sctp.example.com")],
            )
            .srv("_sip._udp.example.com", &[(0, 0, 5090, "udp.example.com")])
            .ips("udp.example.com", &["192.0.2.1"]);
        let r = Resolver::new(dns).with_transports(&[Transport::Udp]);
        let got = resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![t(Transport::Udp, "192.0.2.1:5090", "example.com")]
        );
    }

    #[test]
    fn sips_uses_only_sips_naptr_records() {
        let r = Resolver::new(full_zone()).with_transports(ALL);
        let got = resolve_with(&r, "sips:example.com", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![t(Transport::Tls, "192.0.2.3:5071", "example.com")]
        );
    }

    #[test]
    fn sips_without_naptr_queries_only_sips_srv() {
        let dns = FakeDns::default()
            .srv("_sips._tcp.example.com", &[(0, 0, 5071, "tls.example.com")])
            .ips("tls.example.com", &["192.0.2.3"]);
        let r = Resolver::new(dns).with_transports(ALL);
        let got = resolve_with(&r, "sips:example.com", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![t(Transport::Tls, "192.0.2.3:5071", "example.com")]
        );
        assert_eq!(
            r.dns().log(),
            [
                "NAPTR example.com",
                "SRV _sips._tcp.example.com",
                "A/AAAA tls.example.com"
            ]
        );
    }

    #[test]
    fn sips_needs_tls_support() {
        let r = Resolver::new(full_zone()).with_transports(&[Transport::Udp, Transport::Tcp]);
        let err = resolve_with(&r, "sips:example.com", &mut no_rng()).unwrap_err();
        assert!(matches!(err, ResolveError::NoUsableTransport), "{err:?}");
        let err = resolve_with(&r, "sips:192.0.2.1", &mut no_rng()).unwrap_err();
        assert!(matches!(err, ResolveError::NoUsableTransport), "{err:?}");
    }

    // -- no NAPTR, no SRV ---------------------------------------------------

    #[test]
    fn no_naptr_queries_srv_per_transport_in_client_order() {
        let dns = FakeDns::default()
            .srv("_sip._udp.example.com", &[(0, 0, 5060, "udp.example.com")])
            .srv("_sip._tcp.example.com", &[(0, 0, 5070, "tcp.example.com")])
            .ips("udp.example.com", &["192.0.2.1"])
            .ips("tcp.example.com", &["192.0.2.2"]);
        let r =
            Resolver::new(dns).with_transports(&[Transport::Tcp, Transport::Udp, Transport::Tls]);
        let got = resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![
                t(Transport::Tcp, "192.0.2.2:5070", "example.com"),
                t(Transport::Udp, "192.0.2.1:5060", "example.com"),
            ]
        );
        assert_eq!(
            r.dns().log(),
            [
                "NAPTR example.com",
                "SRV _sip._tcp.example.com",
                "A/AAAA tcp.example.com",
                "SRV _sip._udp.example.com",
                "A/AAAA udp.example.com",
                "SRV _sips._tcp.example.com",
            ]
        );
    }

    #[test]
    fn no_srv_uses_a_aaaa_on_the_default_port() {
        let dns = || FakeDns::default().ips("example.com", &["192.0.2.7"]);
        let r = Resolver::new(dns()).with_transports(ALL);
        assert_eq!(
            resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap(),
            vec![t(Transport::Udp, "192.0.2.7:5060", "example.com")]
        );
        assert_eq!(
            r.dns().log(),
            [
                "NAPTR example.com",
                "SRV _sip._udp.example.com",
                "SRV _sip._tcp.example.com",
                "SRV _sips._tcp.example.com",
                "A/AAAA example.com",
            ]
        );
        assert_eq!(
            resolve_with(&r, "sips:example.com", &mut no_rng()).unwrap(),
            vec![t(Transport::Tls, "192.0.2.7:5061", "example.com")]
        );
        // A client without UDP uses TCP.
        let r = Resolver::new(dns()).with_transports(&[Transport::Tcp]);
        assert_eq!(
            resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap(),
            vec![t(Transport::Tcp, "192.0.2.7:5060", "example.com")]
        );
    }

    #[test]
    fn srv_target_dot_means_not_available_and_blocks_the_a_fallback() {
        let dns = FakeDns::default()
            .srv("_sip._udp.example.com", &[(0, 0, 5060, ".")])
            .ips("example.com", &["192.0.2.7"]);
        let r = Resolver::new(dns).with_transports(&[Transport::Udp]);
        let err = resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap_err();
        assert!(matches!(err, ResolveError::NotFound), "{err:?}");
    }

    #[test]
    fn a_failing_srv_target_is_skipped() {
        let dns = FakeDns::default()
            .srv(
                "_sip._udp.example.com",
                &[
                    (1, 0, 5060, "dead.example.com"),
                    (2, 0, 5062, "ok.example.com"),
                ],
            )
            .ip_err("dead.example.com", DnsError::ServerFailure { rcode: 2 })
            .ips("ok.example.com", &["192.0.2.8"]);
        let r = Resolver::new(dns).with_transports(&[Transport::Udp]);
        let got = resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap();
        assert_eq!(
            got,
            vec![t(Transport::Udp, "192.0.2.8:5062", "example.com")]
        );
    }

    // -- SRV ordering ---------------------------------------------------------

    fn weighted_zone() -> FakeDns {
        FakeDns::default()
            .srv(
                "_sip._udp.example.com",
                &[
                    (20, 0, 5003, "c.example.com"),
                    (10, 10, 5001, "a.example.com"),
                    (10, 90, 5002, "b.example.com"),
                ],
            )
            .ips("a.example.com", &["192.0.2.1"])
            .ips("b.example.com", &["192.0.2.2"])
            .ips("c.example.com", &["192.0.2.3"])
    }

    #[test]
    fn srv_priority_then_weight_with_a_fixed_rng() {
        let r = Resolver::new(weighted_zone()).with_transports(&[Transport::Udp]);
        // Priority 10 holds a (10) and b (90): running sums 10, 100; the
        // draw is rng % 101. 5 picks a; one record is left, so no second
        // draw; then priority 20.
        let got = resolve_with(&r, "sip:example.com", &mut fixed_rng(&[5])).unwrap();
        let ports: Vec<u16> = got.iter().map(|t| t.addr.port()).collect();
        assert_eq!(ports, [5001, 5002, 5003]);
        // 50 picks b.
        let got = resolve_with(&r, "sip:example.com", &mut fixed_rng(&[50])).unwrap();
        let ports: Vec<u16> = got.iter().map(|t| t.addr.port()).collect();
        assert_eq!(ports, [5002, 5001, 5003]);
        // 101 + 10 wraps to 10: the boundary belongs to a.
        let got = resolve_with(&r, "sip:example.com", &mut fixed_rng(&[111])).unwrap();
        let ports: Vec<u16> = got.iter().map(|t| t.addr.port()).collect();
        assert_eq!(ports, [5001, 5002, 5003]);
    }

    fn srv(priority: u16, weight: u16, port: u16) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: "x.example.com".into(),
        }
    }

    #[test]
    fn order_srv_zero_weights_first_in_the_running_sum() {
        let records = vec![srv(0, 5, 1), srv(0, 0, 2)];
        // Draw 0 picks the zero-weight record (placed first).
        let got = order_srv(records.clone(), &mut fixed_rng(&[0]));
        assert_eq!(got.iter().map(|s| s.port).collect::<Vec<_>>(), [2, 1]);
        // Any draw in 1..=5 picks the weighted one.
        let got = order_srv(records, &mut fixed_rng(&[3]));
        assert_eq!(got.iter().map(|s| s.port).collect::<Vec<_>>(), [1, 2]);
        // All zero: the first is picked on every draw.
        let got = order_srv(
            vec![srv(0, 0, 1), srv(0, 0, 2), srv(0, 0, 3)],
            &mut fixed_rng(&[7, 9]),
        );
        assert_eq!(got.iter().map(|s| s.port).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn order_srv_follows_the_weights_over_many_draws() {
        // xorshift32, seeded: deterministic.
        let mut state = 0x9e37_79b9_u32;
        let mut rng = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut heavy_first = 0;
        for _ in 0..10_000 {
            let got = order_srv(vec![srv(0, 10, 1), srv(0, 90, 2)], &mut rng);
            assert_eq!(got.len(), 2);
            if got[0].port == 2 {
                heavy_first += 1;
            }
        }
        // Expected 90/101 of 10 000 = 8 911.
        assert!((8_700..9_100).contains(&heavy_first), "{heavy_first}");
    }

    // -- explicit port, transport parameter, maddr ---------------------------

    #[test]
    fn explicit_port_means_a_aaaa_only() {
        let r = Resolver::new(full_zone()).with_transports(ALL);
        assert_eq!(
            resolve_with(&r, "sip:example.com:5080", &mut no_rng()).unwrap(),
            vec![t(Transport::Udp, "192.0.2.99:5080", "example.com")]
        );
        assert_eq!(r.dns().log(), ["A/AAAA example.com"]);
        assert_eq!(
            resolve_with(&r, "sips:example.com:5081", &mut no_rng()).unwrap(),
            vec![t(Transport::Tls, "192.0.2.99:5081", "example.com")]
        );
        assert_eq!(
            resolve_with(&r, "sip:example.com:5082;transport=tcp", &mut no_rng()).unwrap(),
            vec![t(Transport::Tcp, "192.0.2.99:5082", "example.com")]
        );
    }

    #[test]
    fn transport_param_skips_naptr_and_queries_its_srv() {
        let r = Resolver::new(full_zone()).with_transports(ALL);
        assert_eq!(
            resolve_with(&r, "sip:example.com;transport=TCP", &mut no_rng()).unwrap(),
            vec![t(Transport::Tcp, "192.0.2.2:5070", "example.com")]
        );
        assert_eq!(
            r.dns().log(),
            ["SRV _sip._tcp.example.com", "A/AAAA tcp.example.com"]
        );
        assert_eq!(
            resolve_with(&r, "sip:example.com;transport=tls", &mut no_rng()).unwrap(),
            vec![t(Transport::Tls, "192.0.2.3:5071", "example.com")]
        );
        // sips + transport=tcp is TLS.
        assert_eq!(
            resolve_with(&r, "sips:example.com;transport=tcp", &mut no_rng()).unwrap(),
            vec![t(Transport::Tls, "192.0.2.3:5071", "example.com")]
        );
    }

    #[test]
    fn transport_param_without_srv_uses_its_default_port() {
        let dns = FakeDns::default().ips("example.com", &["192.0.2.7"]);
        let r = Resolver::new(dns).with_transports(ALL);
        assert_eq!(
            resolve_with(&r, "sip:example.com;transport=tls", &mut no_rng()).unwrap(),
            vec![t(Transport::Tls, "192.0.2.7:5061", "example.com")]
        );
        assert_eq!(
            r.dns().log(),
            ["SRV _sips._tcp.example.com", "A/AAAA example.com"]
        );
    }

    #[test]
    fn transport_param_errors() {
        let r = Resolver::new(full_zone()).with_transports(&[Transport::Udp]);
        let e = resolve_with(&r, "sips:example.com;transport=udp", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::SecureOverUdp), "{e:?}");
        let e = resolve_with(&r, "sip:example.com;transport=sctp", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::UnknownTransport), "{e:?}");
        let e = resolve_with(&r, "sip:example.com;transport=tcp", &mut no_rng()).unwrap_err();
        assert!(
            matches!(e, ResolveError::TransportNotSupported(Transport::Tcp)),
            "{e:?}"
        );
        assert!(r.dns().log().is_empty());
    }

    #[test]
    fn maddr_overrides_the_host() {
        let dns = FakeDns::default()
            .srv(
                "_sip._udp.proxy.example.net",
                &[(0, 0, 5099, "p1.example.net")],
            )
            .ips("p1.example.net", &["198.51.100.1"]);
        let r = Resolver::new(dns).with_transports(&[Transport::Udp]);
        // A numeric maddr: no DNS at all; the TLS name stays the URI host.
        assert_eq!(
            resolve_with(&r, "sip:alice@example.com;maddr=192.0.2.9", &mut no_rng()).unwrap(),
            vec![t(Transport::Udp, "192.0.2.9:5060", "example.com")]
        );
        assert!(r.dns().log().is_empty());
        // A name: RFC 3263 runs on it.
        assert_eq!(
            resolve_with(
                &r,
                "sip:alice@example.com;maddr=proxy.example.net",
                &mut no_rng()
            )
            .unwrap(),
            vec![t(Transport::Udp, "198.51.100.1:5099", "example.com")]
        );
        assert_eq!(
            r.dns().log(),
            [
                "NAPTR proxy.example.net",
                "SRV _sip._udp.proxy.example.net",
                "A/AAAA p1.example.net"
            ]
        );
        // An IPv6 maddr, bracketed, with an explicit port.
        assert_eq!(
            resolve_with(
                &r,
                "sip:example.com:5070;maddr=[2001:db8::5]",
                &mut no_rng()
            )
            .unwrap(),
            vec![t(Transport::Udp, "[2001:db8::5]:5070", "example.com")]
        );
        let e = resolve_with(&r, "sip:example.com;maddr=bad_host!", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::InvalidMaddr(_)), "{e:?}");
    }

    // -- literal addresses -------------------------------------------------

    #[test]
    fn literal_ipv4_and_ipv6_never_touch_dns() {
        let r = Resolver::new(FakeDns::default()).with_transports(ALL);
        assert_eq!(
            resolve_with(&r, "sip:192.0.2.1", &mut no_rng()).unwrap(),
            vec![t(Transport::Udp, "192.0.2.1:5060", "192.0.2.1")]
        );
        assert_eq!(
            resolve_with(
                &r,
                "sip:bob@[2001:db8::1]:5070;transport=tcp",
                &mut no_rng()
            )
            .unwrap(),
            vec![t(Transport::Tcp, "[2001:db8::1]:5070", "2001:db8::1")]
        );
        assert_eq!(
            resolve_with(&r, "sips:[::1]", &mut no_rng()).unwrap(),
            vec![t(Transport::Tls, "[::1]:5061", "::1")]
        );
        assert_eq!(
            resolve_with(&r, "sips:192.0.2.1;transport=tcp", &mut no_rng()).unwrap(),
            vec![t(Transport::Tls, "192.0.2.1:5061", "192.0.2.1")]
        );
        assert!(r.dns().log().is_empty());
    }

    #[test]
    fn destination_from_a_triple() {
        let r = Resolver::new(FakeDns::default()).with_transports(ALL);
        for host in ["2001:db8::2", "[2001:db8::2]"] {
            let dest = Destination::new(host, Some(5070), Some(Transport::Tcp)).unwrap();
            assert_eq!(
                block_on(r.resolve(&dest, &mut no_rng())).unwrap(),
                vec![t(Transport::Tcp, "[2001:db8::2]:5070", "2001:db8::2")]
            );
        }
        let dest = Destination::new("192.0.2.1", None, None)
            .unwrap()
            .secure(true);
        assert_eq!(
            block_on(r.resolve(&dest, &mut no_rng())).unwrap(),
            vec![t(Transport::Tls, "192.0.2.1:5061", "192.0.2.1")]
        );
        assert!(matches!(
            Destination::new("bad host", None, None),
            Err(ResolveError::InvalidHost(_))
        ));
        assert!(matches!(
            Destination::new("example.com", Some(0), None),
            Err(ResolveError::ZeroPort)
        ));
        let dest = Destination::new("Example.COM.", None, None).unwrap();
        assert_eq!(dest.server_name, "Example.COM");
    }

    #[test]
    fn other_schemes_are_refused() {
        let r = Resolver::new(FakeDns::default());
        let e = resolve_with(&r, "tel:+15551234567", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::NotSip), "{e:?}");
        let e = resolve_with(&r, "mailto:a@example.com", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::NotSip), "{e:?}");
        let r = Resolver::new(FakeDns::default()).with_transports(&[]);
        let e = resolve_with(&r, "sip:192.0.2.1", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::NoUsableTransport), "{e:?}");
    }

    // -- address families --------------------------------------------------

    fn dual_stack() -> FakeDns {
        FakeDns::default().ips(
            "example.com",
            &["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2"],
        )
    }

    fn addrs(targets: &[ResolvedTarget]) -> Vec<String> {
        targets.iter().map(|t| t.addr.to_string()).collect()
    }

    #[test]
    fn family_preference_orders_and_filters() {
        let uri = "sip:example.com:5060";
        let r = Resolver::new(dual_stack()).with_family(FamilyPreference::PreferIpv4);
        assert_eq!(
            addrs(&resolve_with(&r, uri, &mut no_rng()).unwrap()),
            [
                "192.0.2.1:5060",
                "192.0.2.2:5060",
                "[2001:db8::1]:5060",
                "[2001:db8::2]:5060"
            ]
        );
        let r = r.with_family(FamilyPreference::PreferIpv6);
        assert_eq!(
            addrs(&resolve_with(&r, uri, &mut no_rng()).unwrap()),
            [
                "[2001:db8::1]:5060",
                "[2001:db8::2]:5060",
                "192.0.2.1:5060",
                "192.0.2.2:5060"
            ]
        );
        let r = r.with_family(FamilyPreference::Ipv4Only);
        assert_eq!(
            addrs(&resolve_with(&r, uri, &mut no_rng()).unwrap()),
            ["192.0.2.1:5060", "192.0.2.2:5060"]
        );
        let r = r.with_family(FamilyPreference::Ipv6Only);
        assert_eq!(
            addrs(&resolve_with(&r, uri, &mut no_rng()).unwrap()),
            ["[2001:db8::1]:5060", "[2001:db8::2]:5060"]
        );
        // A literal of the excluded family.
        let e = resolve_with(&r, "sip:192.0.2.1", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::NoAddressInFamily), "{e:?}");
        let r = r.with_family(FamilyPreference::Ipv4Only);
        let e = resolve_with(&r, "sip:[2001:db8::1]", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::NoAddressInFamily), "{e:?}");
    }

    #[test]
    fn family_preference_keeps_the_srv_order() {
        let dns = FakeDns::default()
            .srv(
                "_sip._udp.example.com",
                &[
                    (1, 0, 5001, "v6.example.com"),
                    (2, 0, 5002, "dual.example.com"),
                ],
            )
            .ips("v6.example.com", &["2001:db8::6"])
            .ips("dual.example.com", &["2001:db8::7", "192.0.2.7"]);
        let r = Resolver::new(dns)
            .with_transports(&[Transport::Udp])
            .with_family(FamilyPreference::PreferIpv4);
        assert_eq!(
            addrs(&resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap()),
            ["[2001:db8::6]:5001", "192.0.2.7:5002", "[2001:db8::7]:5002"]
        );
    }

    // -- DNS failures ----------------------------------------------------------

    #[test]
    fn unreachable_dns_goes_straight_to_a_aaaa() {
        let dns = FakeDns::default()
            .naptr_err("example.com", DnsError::NoConnection)
            .ips("example.com", &["127.0.0.1"]);
        let r = Resolver::new(dns).with_transports(ALL);
        assert_eq!(
            resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap(),
            vec![t(Transport::Udp, "127.0.0.1:5060", "example.com")]
        );
        assert_eq!(r.dns().log(), ["NAPTR example.com", "A/AAAA example.com"]);

        // A timeout on an SRV query stops the remaining SRV queries too.
        let dns = FakeDns::default()
            .srv_err("_sip._udp.example.com", DnsError::Timeout)
            .ips("example.com", &["127.0.0.1"]);
        let r = Resolver::new(dns).with_transports(ALL);
        assert_eq!(
            resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap(),
            vec![t(Transport::Udp, "127.0.0.1:5060", "example.com")]
        );
        assert_eq!(
            r.dns().log(),
            [
                "NAPTR example.com",
                "SRV _sip._udp.example.com",
                "A/AAAA example.com"
            ]
        );
    }

    #[test]
    fn server_failure_is_not_fatal_but_is_reported_when_nothing_is_found() {
        let dns = FakeDns::default()
            .naptr_err("example.com", DnsError::ServerFailure { rcode: 2 })
            .ips("example.com", &["192.0.2.1"]);
        let r = Resolver::new(dns).with_transports(&[Transport::Udp]);
        assert_eq!(
            resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap(),
            vec![t(Transport::Udp, "192.0.2.1:5060", "example.com")]
        );
        assert_eq!(
            r.dns().log(),
            [
                "NAPTR example.com",
                "SRV _sip._udp.example.com",
                "A/AAAA example.com"
            ]
        );

        let dns = FakeDns::default().ip_err("example.com", DnsError::ServerFailure { rcode: 5 });
        let r = Resolver::new(dns).with_transports(&[Transport::Udp]);
        let e = resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap_err();
        assert!(
            matches!(e, ResolveError::Dns(DnsError::ServerFailure { rcode: 5 })),
            "{e:?}"
        );

        let r = Resolver::new(FakeDns::default());
        let e = resolve_with(&r, "sip:nowhere.example", &mut no_rng()).unwrap_err();
        assert!(matches!(e, ResolveError::NotFound), "{e:?}");
    }

    #[test]
    fn duplicate_targets_are_dropped() {
        let dns = FakeDns::default()
            .naptr(
                "example.com",
                &[
                    (10, 10, "SIP+D2U", "_sip._udp.example.com"),
                    (20, 10, "SIP+D2U", "_sip._udp.example.com"),
                ],
            )
            .srv(
                "_sip._udp.example.com",
                &[(0, 0, 5060, "a.example.com"), (1, 0, 5060, "b.example.com")],
            )
            .ips("a.example.com", &["192.0.2.1", "192.0.2.1"])
            .ips("b.example.com", &["192.0.2.1"]);
        let r = Resolver::new(dns).with_transports(&[Transport::Udp]);
        assert_eq!(
            resolve_with(&r, "sip:example.com", &mut no_rng()).unwrap(),
            vec![t(Transport::Udp, "192.0.2.1:5060", "example.com")]
        );
    }

    // -- the real hickory path --------------------------------------------

    /// `sip:localhost` on a machine without DNS: HickoryDns with no name
    /// server uses the system resolver, which reads /etc/hosts. No packet
    /// leaves the machine: NAPTR/SRV are not asked, and `localhost` is in
    /// the hosts file.
    #[tokio::test]
    async fn hickory_localhost_through_the_hosts_file_fallback() {
        let dns = HickoryDns::from_config(
            ResolverConfig::from_parts(None, vec![], vec![]),
            ResolverOpts::default(),
        )
        .unwrap();
        assert!(dns.is_system_only());
        let r = Resolver::new(dns).with_transports(ALL);
        let uri = Uri::parse("sip:localhost").unwrap();
        let got = r.resolve_uri(&uri, &mut no_rng()).await.unwrap();
        assert!(
            got.contains(&t(Transport::Udp, "127.0.0.1:5060", "localhost")),
            "{got:?}"
        );
        assert!(got.iter().all(|t| t.addr.ip().is_loopback()), "{got:?}");
        assert!(got.iter().all(|t| t.transport == Transport::Udp), "{got:?}");

        let uri = Uri::parse("sips:localhost:5071").unwrap();
        let got = r.resolve_uri(&uri, &mut no_rng()).await.unwrap();
        assert!(
            got.contains(&t(Transport::Tls, "127.0.0.1:5071", "localhost")),
            "{got:?}"
        );
    }

    // A tiny authoritative DNS server on 127.0.0.1, for hickory to query.

    mod fake_server {
        use hickory_resolver::proto::op::{Message, ResponseCode};
        use hickory_resolver::proto::rr::rdata::{A, AAAA, NAPTR, SRV};
        use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
        use std::collections::HashMap;
        use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
        use std::sync::{Arc, Mutex};
        use tokio::net::UdpSocket;

        #[derive(Default)]
        pub struct Zone {
            records: HashMap<(String, RecordType), Vec<RData>>,
            servfail: Vec<String>,
            pub queries: Mutex<Vec<String>>,
        }

        fn key(name: &str) -> String {
            name.trim_end_matches('.').to_ascii_lowercase()
        }

        fn name(s: &str) -> Name {
            Name::from_ascii(s).unwrap()
        }

        impl Zone {
            fn add(&mut self, owner: &str, data: RData) {
                self.records
                    .entry((key(owner), data.record_type()))
                    .or_default()
                    .push(data);
            }
            pub fn naptr(
                mut self,
                owner: &str,
                order: u16,
                pref: u16,
                svc: &str,
                repl: &str,
            ) -> Self {
                let d = NAPTR::new(
                    order,
                    pref,
                    b"S".to_vec().into_boxed_slice(),
                    svc.as_bytes().to_vec().into_boxed_slice(),
                    Vec::new().into_boxed_slice(),
                    name(repl),
                );
                self.add(owner, RData::NAPTR(d));
                self
            }
            pub fn srv(
                mut self,
                owner: &str,
                prio: u16,
                weight: u16,
                port: u16,
                target: &str,
            ) -> Self {
                self.add(
                    owner,
                    RData::SRV(SRV::new(prio, weight, port, name(target))),
                );
                self
            }
            pub fn a(mut self, owner: &str, ip: Ipv4Addr) -> Self {
                self.add(owner, RData::A(A(ip)));
                self
            }
            pub fn aaaa(mut self, owner: &str, ip: Ipv6Addr) -> Self {
                self.add(owner, RData::AAAA(AAAA(ip)));
                self
            }
            pub fn servfail(mut self, owner: &str) -> Self {
                self.servfail.push(key(owner));
                self
            }
            fn exists(&self, k: &str) -> bool {
                self.records.keys().any(|(n, _)| n == k)
            }
        }

        /// Binds 127.0.0.1:0 and answers queries from `zone` until the
        /// test's runtime stops.
        pub async fn start(zone: Arc<Zone>) -> SocketAddr {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = sock.local_addr().unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(req) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
                    resp.metadata.recursion_desired = req.metadata.recursion_desired;
                    resp.metadata.recursion_available = true;
                    resp.metadata.authoritative = true;
                    resp.edns = req.edns.clone();
                    for q in &req.queries {
                        resp.add_query(q.clone());
                        let k = key(&q.name().to_ascii());
                        zone.queries
                            .lock()
                            .unwrap()
                            .push(format!("{} {k}", q.query_type()));
                        if zone.servfail.contains(&k) {
                            resp.metadata.response_code = ResponseCode::ServFail;
                        } else if let Some(data) = zone.records.get(&(k.clone(), q.query_type())) {
                            for d in data {
                                resp.add_answer(Record::from_rdata(
                                    q.name().clone(),
                                    60,
                                    d.clone(),
                                ));
                            }
                        } else if !zone.exists(&k) {
                            resp.metadata.response_code = ResponseCode::NXDomain;
                        }
                    }
                    let Ok(bytes) = resp.to_vec() else { continue };
                    let _ = sock.send_to(&bytes, peer).await;
                }
            });
            addr
        }
    }

    fn hickory_at(server: SocketAddr, timeout_ms: u64) -> HickoryDns {
        let mut conn = hickory_resolver::config::ConnectionConfig::udp();
        conn.port = server.port();
        let ns = hickory_resolver::config::NameServerConfig::new(server.ip(), true, vec![conn]);
        let mut opts = ResolverOpts::default();
        opts.timeout = std::time::Duration::from_millis(timeout_ms);
        opts.attempts = 1;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        HickoryDns::from_config(ResolverConfig::from_parts(None, vec![], vec![ns]), opts).unwrap()
    }

    #[tokio::test]
    async fn hickory_against_a_loopback_dns_server() {
        let zone = Arc::new(
            fake_server::Zone::default()
                .naptr(
                    "example.test",
                    10,
                    10,
                    "SIPS+D2T",
                    "_sips._tcp.example.test.",
                )
                .naptr("example.test", 20, 10, "SIP+D2U", "_sip._udp.example.test.")
                .srv("_sips._tcp.example.test", 10, 0, 5061, "tls1.example.test.")
                .srv("_sip._udp.example.test", 10, 60, 5060, "a.example.test.")
                .srv("_sip._udp.example.test", 10, 40, 5062, "b.example.test.")
                .srv("_sip._udp.example.test", 20, 0, 5064, "c.example.test.")
                .a("tls1.example.test", Ipv4Addr::new(127, 0, 0, 11))
                .a("a.example.test", Ipv4Addr::new(127, 0, 0, 12))
                .aaaa("a.example.test", Ipv6Addr::LOCALHOST)
                .a("b.example.test", Ipv4Addr::new(127, 0, 0, 13))
                .a("c.example.test", Ipv4Addr::new(127, 0, 0, 14))
                .a("nosrv.test", Ipv4Addr::new(127, 0, 0, 20))
                .servfail("broken.test"),
        );
        let server = fake_server::start(zone.clone()).await;
        let dns = hickory_at(server, 2_000);
        assert!(!dns.is_system_only());

        // The record conversions.
        let mut naptr = dns.naptr("example.test").await.unwrap();
        naptr.sort_by_key(|n| n.order);
        assert_eq!(naptr.len(), 2);
        assert_eq!(naptr[0].services, "SIPS+D2T");
        assert_eq!(naptr[0].flags, "S");
        assert_eq!(normalize(&naptr[0].replacement), "_sips._tcp.example.test");
        let srv = dns.srv("_sips._tcp.example.test").await.unwrap();
        assert_eq!(srv.len(), 1);
        assert_eq!(
            (srv[0].port, normalize(&srv[0].target).as_str()),
            (5061, "tls1.example.test")
        );
        // NXDOMAIN and no-data are empty answers, SERVFAIL an error.
        assert_eq!(dns.srv("_sip._tcp.nosrv.test").await.unwrap(), vec![]);
        assert_eq!(dns.naptr("nosrv.test").await.unwrap(), vec![]);
        assert!(matches!(
            dns.naptr("broken.test").await,
            Err(DnsError::ServerFailure { rcode: 2 })
        ));

        // The whole procedure. In priority 10 of _sip._udp, the running
        // sums are a 60, b 100 and the draw is rng % 101: 0 picks a.
        let r = Resolver::new(dns.clone())
            .with_transports(ALL)
            .with_family(FamilyPreference::PreferIpv6);
        let uri = Uri::parse("sip:example.test").unwrap();
        let got = r.resolve_uri(&uri, &mut fixed_rng(&[0])).await.unwrap();
        assert_eq!(
            got,
            vec![
                t(Transport::Tls, "127.0.0.11:5061", "example.test"),
                t(Transport::Udp, "[::1]:5060", "example.test"),
                t(Transport::Udp, "127.0.0.12:5060", "example.test"),
                t(Transport::Udp, "127.0.0.13:5062", "example.test"),
                t(Transport::Udp, "127.0.0.14:5064", "example.test"),
            ]
        );
        // 70 > 60 picks b first. Shared through an Arc, IPv4 only.
        let r = Resolver::new(Arc::new(dns.clone()))
            .with_transports(ALL)
            .with_family(FamilyPreference::Ipv4Only);
        let got = r.resolve_uri(&uri, &mut fixed_rng(&[70])).await.unwrap();
        assert_eq!(
            addrs(&got),
            [
                "127.0.0.11:5061",
                "127.0.0.13:5062",
                "127.0.0.12:5060",
                "127.0.0.14:5064"
            ]
        );

        // No NAPTR, no SRV: A on the default port.
        let uri = Uri::parse("sip:nosrv.test").unwrap();
        let got = r.resolve_uri(&uri, &mut no_rng()).await.unwrap();
        assert_eq!(
            got,
            vec![t(Transport::Udp, "127.0.0.20:5060", "nosrv.test")]
        );
        let log = zone.queries.lock().unwrap().clone();
        for q in [
            "NAPTR nosrv.test",
            "SRV _sip._udp.nosrv.test",
            "SRV _sip._tcp.nosrv.test",
            "SRV _sips._tcp.nosrv.test",
            "A nosrv.test",
        ] {
            assert!(log.iter().any(|l| l == q), "{q} not in {log:?}");
        }

        // localhost is answered by hickory itself (RFC 6761), no query.
        let before = zone.queries.lock().unwrap().len();
        let uri = Uri::parse("sip:localhost").unwrap();
        let got = r.resolve_uri(&uri, &mut no_rng()).await.unwrap();
        assert_eq!(got, vec![t(Transport::Udp, "127.0.0.1:5060", "localhost")]);
        assert_eq!(zone.queries.lock().unwrap().len(), before);
    }

    /// A name server on a loopback port nobody listens on: queries fail as
    /// unreachable (no connection or timeout), never as "no records".
    #[tokio::test]
    async fn hickory_dead_server_is_unreachable() {
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let dns = hickory_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), 300);
        let e = dns.srv("_sip._udp.example.test").await.unwrap_err();
        eprintln!("dead server: {e:?}");
        assert!(e.is_unreachable(), "{e:?}");
    }

    #[test]
    fn from_system_builds_without_a_runtime_and_resolution_is_send() {
        // Reads the system configuration; sends nothing.
        let r = Resolver::from_system();
        let dest = Destination::new("192.0.2.1", None, None).unwrap();
        let mut rng = || 4_u32;
        fn assert_send<T: Send>(_: &T) {}
        let fut = r.resolve(&dest, &mut rng);
        assert_send(&fut);
        // A numeric host: resolved without DNS, whatever the configuration.
        assert_eq!(
            block_on(fut).unwrap(),
            vec![t(Transport::Udp, "192.0.2.1:5060", "192.0.2.1")]
        );
    }

    #[test]
    fn transport_helpers() {
        assert_eq!(Transport::from_token("UdP"), Some(Transport::Udp));
        assert_eq!(Transport::from_token("ws"), None);
        assert_eq!(Transport::Tls.default_port(), 5061);
        assert_eq!(Transport::Tcp.to_string(), "tcp");
        assert_eq!(Transport::Tls.srv_prefix(), "_sips._tcp");
        assert_eq!(
            transport_from_naptr_service("sips+d2t"),
            Some(Transport::Tls)
        );
        let _ = (Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
    }
}
