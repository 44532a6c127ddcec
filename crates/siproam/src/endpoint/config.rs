//! How an endpoint, its network watch and its accounts are configured.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use siproam_core::{AccountIpChange, Config as CoreConfig, IpChangeParams, Ipv6Use};

use crate::transport::{Transport, TransportConfig};

/// Changes to an account's settings ([`EndpointHandle::modify_account`](super::EndpointHandle::modify_account));
/// `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct AccountChanges {
    /// New digest user name.
    pub username: Option<String>,
    /// New digest password.
    pub password: Option<String>,
    /// New binding lifetime, in seconds (from the next refresh).
    pub expires: Option<u32>,
    /// New IPv6 use for SIP (from the next network change).
    pub ipv6_sip: Option<Ipv6Use>,
    /// New IPv6 use for media (from the next network change).
    pub ipv6_media: Option<Ipv6Use>,
    /// New IP-change knobs for the account (`Some(None)` returns to the
    /// [`IpChangeParams`] ones).
    pub ip_change: Option<Option<AccountIpChange>>,
}

/// How to start an endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// Where to listen: `(transport, address)`; port 0 picks one.
    pub listen: Vec<(Transport, SocketAddr)>,
    /// The core's settings.
    pub core: CoreConfig,
    /// The transports' settings (TLS, limits, idle timeout).
    pub transport: TransportConfig,
    /// Host names pinned to addresses, looked up before DNS (a name may
    /// be given once per address; see [`StaticHosts`](crate::resolve::StaticHosts)).
    pub hosts: Vec<(String, IpAddr)>,
    /// Detect network changes and handle them without being told
    /// (`None`: only [`EndpointHandle::handle_ip_change`](super::EndpointHandle::handle_ip_change) moves the
    /// endpoint).
    pub watch: Option<WatchConfig>,
}

/// Automatic detection of network changes: the network monitor
/// ([`crate::netwatch`]) reports what it sees; after `settle`, and every
/// `resync`, the endpoint checks the source address the OS would now use
/// towards each account's registrar (and each call's next hop) and, when
/// it changed, handles the change with `params` (its `ip` becomes that
/// address; an account that can only be reached in the other family
/// switches family). A change seen while one is being handled is checked
/// again right after it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// How long after the first notification of a burst to decide (the
    /// burst of address, route and link messages of one change).
    pub settle: Duration,
    /// How often the monitor dumps everything again (a lost notification)
    /// and the source addresses are checked even without notifications.
    pub resync: Duration,
    /// How a detected change is handled.
    pub params: IpChangeParams,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            settle: Duration::from_millis(2),
            resync: Duration::from_secs(2),
            params: IpChangeParams::in_place(),
        }
    }
}

/// An account to register, as the application describes it.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    /// The address of record (`sip:alice@example.test`).
    pub aor: String,
    /// The registrar URI (`sip:127.0.0.1:5060;transport=tcp`, `sips:…`).
    pub registrar: String,
    /// Digest user name (defaults to the AoR's user).
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<String>,
    /// RFC 5626 `+sip.instance` (`urn:uuid:…`): with it a re-REGISTER
    /// from a new address replaces the old binding.
    pub instance_id: Option<String>,
    /// RFC 5626 outbound: register with `reg-id` and `Supported:
    /// outbound` (needs `instance_id`); a 439 falls back to a normal
    /// registration.
    pub outbound: bool,
    /// The `reg-id` of the registration's flow, with `outbound` (1 when
    /// not given).
    pub reg_id: Option<u32>,
    /// Binding lifetime requested, in seconds.
    pub expires: u32,
    /// IPv6 use for SIP: which of the registrar's addresses to register
    /// with, and whether a network change may switch family.
    pub ipv6_sip: Ipv6Use,
    /// IPv6 use for the media of this account's calls.
    pub ipv6_media: Ipv6Use,
    /// The account's own IP-change knobs; `None` uses those of each
    /// [`IpChangeParams`].
    pub ip_change: Option<AccountIpChange>,
    /// Its flow: the first hop, the local address, how it is kept alive
    /// (RFC 5626 §4.4).
    pub flow: FlowSpec,
}

impl AccountSpec {
    /// An account of `aor` at `registrar` with the usual settings: no
    /// credentials, no instance id (RFC 5626 outbound off), 600 s
    /// bindings, IPv4 and IPv6 both used, the endpoint's IP-change knobs
    /// and a default flow. Set the fields to change them:
    ///
    /// ```
    /// let mut account = siproam::AccountSpec::new("sip:alice@example.test", "sip:127.0.0.1:5060");
    /// account.password = Some("secret".into());
    /// assert_eq!(account.expires, 600);
    /// ```
    pub fn new(aor: impl Into<String>, registrar: impl Into<String>) -> AccountSpec {
        AccountSpec {
            aor: aor.into(),
            registrar: registrar.into(),
            username: None,
            password: None,
            instance_id: None,
            outbound: false,
            reg_id: None,
            expires: 600,
            ipv6_sip: Ipv6Use::Enabled,
            ipv6_media: Ipv6Use::Enabled,
            ip_change: None,
            flow: FlowSpec::default(),
        }
    }
}

/// An account's flow (RFC 5626): where it goes first, where it leaves
/// from, and how it is kept alive (§4.4.1). Several flows of one identity
/// are several accounts with the same AoR and instance and their own
/// `reg_id`, each with its own `FlowSpec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    /// An outbound proxy (`sip:proxy.example.test`, `;lr` added when
    /// missing): the REGISTER and the requests over this flow go to it
    /// with it as a pre-loaded Route (RFC 5626 §5.1); `None`: straight to
    /// the registrar.
    pub outbound_proxy: Option<String>,
    /// The local address the flow leaves from (one flow per interface);
    /// `None`: the OS's choice.
    pub local_ip: Option<IpAddr>,
    /// Keep-alive interval on a stream flow when the registrar sends no
    /// `Flow-Timer` (`None`: none); 120 s by default.
    pub keepalive_stream: Option<Duration>,
    /// Keep-alive interval (STUN) on a UDP flow when the registrar sends
    /// no `Flow-Timer`, once outbound is in force (`None`: none); 30 s by
    /// default.
    pub keepalive_datagram: Option<Duration>,
    /// No pong within this after a ping: the flow has failed; 10 s.
    pub pong_timeout: Duration,
}

impl Default for FlowSpec {
    fn default() -> Self {
        FlowSpec {
            outbound_proxy: None,
            local_ip: None,
            keepalive_stream: Some(Duration::from_secs(120)),
            keepalive_datagram: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
        }
    }
}
