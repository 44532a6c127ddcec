//! Typed progress of a change: its stages (the `ip_change` event of
//! `docs/events.md`), what went wrong in one, and the report itself.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::dialog::CallId;
use crate::endpoint::CoreError;
use crate::flow::Transport;
use crate::registration::{AccountId, RegistrationFailure};

use super::params::Ipv6Use;

/// A stage of a change, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpChangeStage {
    /// The change began.
    Started,
    /// Stream connections were closed (all, or the stale ones).
    ShutdownTransports,
    /// A listener is open on the new address (one report per listener).
    RestartListener,
    /// An account's registration flow was dropped.
    ShutdownRegistrationFlow,
    /// An account registered its new Contact (ok on the REGISTER's 2xx).
    UpdateContact,
    /// A confirmed call was hung up.
    HangupCalls,
    /// A call was moved (ok on its refresh's 2xx).
    RefreshCalls,
    /// A call whose refresh after a flow failure found its dialog gone
    /// (481, 408) was given a new one by an INVITE with `Replaces` (ok on
    /// its 2xx).
    ReplaceCalls,
    /// Everything above settled.
    Completed,
}

impl IpChangeStage {
    /// The name used in JSON events (`docs/events.md`).
    pub fn as_str(self) -> &'static str {
        match self {
            IpChangeStage::Started => "started",
            IpChangeStage::ShutdownTransports => "shutdown_transports",
            IpChangeStage::RestartListener => "restart_listener",
            IpChangeStage::ShutdownRegistrationFlow => "shutdown_registration_flow",
            IpChangeStage::UpdateContact => "update_contact",
            IpChangeStage::HangupCalls => "hangup_calls",
            IpChangeStage::RefreshCalls => "refresh_calls",
            IpChangeStage::ReplaceCalls => "replace_calls",
            IpChangeStage::Completed => "completed",
        }
    }
}

impl std::fmt::Display for IpChangeStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a run of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChangeTrigger {
    /// A network change (detected, or asked for by the application).
    #[default]
    NetworkChange,
    /// The registrar saw us at another public address (NAT rebinding).
    NatRebinding,
    /// A flow failed (RFC 5626: no pong, reset, closed …): its calls are
    /// repaired over the new flow.
    FlowFailure,
}

impl ChangeTrigger {
    /// The name used in JSON events (`ip_change`'s `trigger`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeTrigger::NetworkChange => "network_change",
            ChangeTrigger::NatRebinding => "nat_rebinding",
            ChangeTrigger::FlowFailure => "flow_failure",
        }
    }
}

/// Why a listener could not be opened (the driver's socket error, kept to
/// what the change decides on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListenFailure {
    /// The port is taken at that address.
    #[error("address in use")]
    AddrInUse,
    /// The address is not (any more) one of this host's.
    #[error("address not available")]
    AddressGone,
    /// Another socket error.
    #[error("socket error ({0:?})")]
    Io(std::io::ErrorKind),
}

/// What went wrong in a stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpChangeError {
    /// The new address is not one of this host's: nothing changed.
    #[error("{0} is not an address of this host: nothing changed")]
    NotLocal(IpAddr),
    /// The listener's port is taken at the new address; it listens on
    /// another port instead.
    #[error("port {port} is taken on {ip}: listening on {fallback} instead")]
    PortTaken {
        /// The new address.
        ip: IpAddr,
        /// The port it had.
        port: u16,
        /// Where it listens now.
        fallback: SocketAddr,
    },
    /// The listener could not be opened.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: ListenFailure,
    },
    /// The account's IPv6 use forbids the new address's family.
    #[error("IPv6 use for SIP is {}", .0.as_str())]
    FamilyNotAllowed(Ipv6Use),
    /// The registrar has no address in the new family.
    #[error("the registrar has no {} address", if *.ipv6 { "IPv6" } else { "IPv4" })]
    NoRegistrarAddress {
        /// The family wanted.
        ipv6: bool,
    },
    /// The call's next hop has no address in the new family.
    #[error("the call's next hop has no address in the new family")]
    NoNextHopAddress,
    /// The REGISTER with the new Contact failed.
    #[error("registration failed: {0:?}")]
    Registration(Option<RegistrationFailure>),
    /// The account was removed during the change.
    #[error("the account was removed")]
    AccountGone,
    /// The call's refresh failed (the call stays up).
    #[error("the refresh failed with {0}")]
    RefreshFailed(u16),
    /// The call ended during the change.
    #[error("the call ended")]
    CallEnded,
    /// No answer came in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A newer change (or a NAT rebinding) took over before this stage
    /// settled.
    #[error("superseded by a newer change")]
    Superseded,
    /// Some stages failed (for `completed`).
    #[error("{0} stage(s) failed")]
    Incomplete(usize),
    /// The core refused the step.
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// One stage of a change, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpChangeReport {
    /// The stage.
    pub stage: IpChangeStage,
    /// What started the run.
    pub trigger: ChangeTrigger,
    /// Ok, or what went wrong.
    pub status: Result<(), IpChangeError>,
    /// Since `started`.
    pub elapsed: Duration,
    /// When it was reported (the `now` the core was given).
    pub at: Instant,
    /// The account the stage is about.
    pub account: Option<AccountId>,
    /// The call the stage is about.
    pub call: Option<CallId>,
    /// The transport the stage is about.
    pub transport: Option<Transport>,
    /// For `restart_listener`, the listener's address; for
    /// `update_contact`, the Contact's; for a NAT rebinding, the public
    /// address.
    pub address: Option<SocketAddr>,
}

impl IpChangeReport {
    /// Milliseconds since `started`.
    pub fn elapsed_ms(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0
    }

    /// `ok`, or the error's text (`status` of `docs/events.md`).
    pub fn status_text(&self) -> String {
        match &self.status {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    }
}
