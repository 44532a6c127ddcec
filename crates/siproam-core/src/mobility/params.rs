//! What a change is asked to do: the parameters as pure data (PJSIP's
//! `pjsua_ip_change_param`, `ip_change_cfg`, `ipv6_sip_use`), the
//! per-account knobs and the IPv6 use modes.

use std::net::IpAddr;
use std::time::Duration;

use crate::dialog::CallId;
use crate::registration::AccountId;

/// What `EndpointHandle::handle_ip_change` (in `siproam`) does. The defaults are
/// PJSIP's (`mobility-reference.md`): shut down stream flows, restart
/// listeners (one retry after 10 ms), re-register over a new flow, refresh
/// calls with new media, Contact and Via by re-INVITE.
#[derive(Debug, Clone, PartialEq)]
pub struct IpChangeParams {
    /// The new local address; `None` restarts every listener in place: a
    /// listener pinned to a literal address stays on it while the address
    /// exists, and only a listener whose address is gone moves, to the
    /// address the OS would use towards the first account's registrar.
    pub ip: Option<std::net::IpAddr>,
    /// Close every TCP/TLS connection first.
    pub shutdown_transports: bool,
    /// Open the listeners on the new address (the old ones close at the
    /// end). Off: listeners, Via and Contact ports stay as they are; only
    /// the address published in Contacts changes (for wildcard listeners).
    pub restart_listeners: bool,
    /// A listener that fails to open is retried once after this delay.
    pub restart_listener_delay: Duration,
    /// Per account: drop the registration's flow, so the REGISTER goes out
    /// over a new one from the new address. Off: the existing flow is
    /// reused (only the Contact changes).
    pub shutdown_registration_flow: bool,
    /// Hang up confirmed calls instead of refreshing them.
    pub hangup_calls: bool,
    /// Old UDP listeners keep receiving this long after the change, so
    /// answers to requests sent before it still arrive (a CANCELled
    /// re-INVITE's 487, a late 2xx) when the old address still works.
    /// Stream listeners close at once. Zero closes all at once.
    pub old_listener_grace: Duration,
    /// How confirmed calls are refreshed.
    pub refresh: RefreshFlags,
    /// Only these accounts move (`None`: all). Automatic detection sets it
    /// to the accounts whose path changed.
    pub accounts: Option<Vec<AccountId>>,
    /// Only these calls move (`None`: all).
    pub calls: Option<Vec<CallId>>,
    /// A partial change: `shutdown_transports` closes only the stale
    /// connections (their local address gone, or no longer the one the OS
    /// would use towards their peer), and listeners pinned to an address
    /// that still exists stay (others still move to `ip`). Automatic
    /// detection sets it, so what the change did not touch keeps working.
    pub keep_unaffected: bool,
}

/// How a call is refreshed after an IP change (PJSIP's `reinvite_flags`
/// and `reinv_use_update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshFlags {
    /// Re-open the RTP socket on the new address and re-offer it.
    pub reinit_media: bool,
    /// Put the new address in the dialog's Contact (and send from it).
    pub update_contact: bool,
    /// Send the dialog's requests from the new address, so their Via
    /// names it (with `update_contact` off: the Contact stays).
    pub update_via: bool,
    /// Send the refresh with UPDATE when the peer's Allow lists it
    /// (RFC 3311), else re-INVITE.
    pub prefer_update: bool,
}

impl Default for RefreshFlags {
    fn default() -> Self {
        RefreshFlags {
            reinit_media: true,
            update_contact: true,
            update_via: true,
            prefer_update: false,
        }
    }
}

/// An account's own IP-change knobs (PJSIP's per-account
/// `ip_change_cfg`), used instead of the [`IpChangeParams`] ones for the
/// account and for its calls (the calls whose local URI is its AoR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountIpChange {
    /// Drop the registration's flow (else the REGISTER reuses it).
    pub shutdown_registration_flow: bool,
    /// Hang up confirmed calls instead of refreshing them.
    pub hangup_calls: bool,
    /// How confirmed calls are refreshed.
    pub refresh: RefreshFlags,
}

impl AccountIpChange {
    /// The knobs of `params`, as an account's.
    pub fn from_params(params: &IpChangeParams) -> AccountIpChange {
        AccountIpChange {
            shutdown_registration_flow: params.shutdown_registration_flow,
            hangup_calls: params.hangup_calls,
            refresh: params.refresh,
        }
    }
}

/// How an account uses IPv6, for SIP or for media (PJSIP's
/// `ipv6_sip_use` and `ipv6_media_use`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ipv6Use {
    /// IPv4 only.
    Disabled,
    /// Either family: IPv4 first when both work; after a network change,
    /// the family of the new address (the account switches by itself when
    /// only the other family is left).
    #[default]
    Enabled,
    /// IPv6 first whenever a usable IPv6 address exists.
    Prefer,
    /// IPv6 only.
    Only,
}

impl Ipv6Use {
    /// Whether an address of `ip`'s family may be used.
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            Ipv6Use::Disabled => ip.is_ipv4(),
            Ipv6Use::Only => ip.is_ipv6(),
            Ipv6Use::Enabled | Ipv6Use::Prefer => true,
        }
    }

    /// The mode's name (`disabled`, `enabled`, `prefer`, `only`).
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv6Use::Disabled => "disabled",
            Ipv6Use::Enabled => "enabled",
            Ipv6Use::Prefer => "prefer",
            Ipv6Use::Only => "only",
        }
    }
}

/// Not one of `disabled`, `enabled`, `prefer`, `only`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown IPv6 use {0:?} (disabled, enabled, prefer or only)")]
pub struct UnknownIpv6Use(pub String);

impl std::str::FromStr for Ipv6Use {
    type Err = UnknownIpv6Use;

    fn from_str(s: &str) -> Result<Ipv6Use, UnknownIpv6Use> {
        match s.to_ascii_lowercase().as_str() {
            "disabled" | "off" => Ok(Ipv6Use::Disabled),
            "enabled" | "on" => Ok(Ipv6Use::Enabled),
            "prefer" => Ok(Ipv6Use::Prefer),
            "only" => Ok(Ipv6Use::Only),
            _ => Err(UnknownIpv6Use(s.to_owned())),
        }
    }
}

impl IpChangeParams {
    /// The defaults, restarting listeners in place (`ip: None`): the
    /// agent's bare `ip-change`.
    pub fn in_place() -> IpChangeParams {
        IpChangeParams {
            ip: None,
            ..IpChangeParams::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        }
    }

    /// The defaults, moving to `ip`.
    pub fn new(ip: std::net::IpAddr) -> IpChangeParams {
        IpChangeParams {
            ip: Some(ip),
            shutdown_transports: true,
            restart_listeners: true,
            restart_listener_delay: Duration::from_millis(10),
            shutdown_registration_flow: true,
            hangup_calls: false,
            old_listener_grace: Duration::from_secs(32),
            refresh: RefreshFlags::default(),
            accounts: None,
            calls: None,
            keep_unaffected: false,
        }
    }
}
