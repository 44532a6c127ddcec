//! Network changes, decided sans-IO: what moves where and in which order,
//! so that every hand-off scenario runs in the simulator.
//!
//! One change walks through these files:
//!
//! - `params`: what the change is asked to do (pure data);
//! - `view`: what the driver sees of the network ([`NetworkView`]);
//! - `detect`: whether the network changed under an account or a call
//!   ([`crate::Endpoint::detect_change`]), and where media goes;
//! - `run`: the change itself, a state machine that asks the driver for
//!   socket work ([`crate::Endpoint::poll_mobility`] /
//!   [`crate::Endpoint::handle_mobility`]) stage by stage;
//! - `listeners`: `shutdown_transports`, `restart_listener`, the old
//!   listeners at the end;
//! - `accounts`: `shutdown_registration_flow`, `update_contact`;
//! - `calls`: `refresh_calls` / `hangup_calls`, and what a change does to
//!   one call;
//! - `repair`: a failed flow's calls, repaired through the same machine
//!   (`started`, `update_contact` when the account registers over its
//!   new flow, `refresh_calls`, `replace_calls` for the `Replaces`
//!   fallback, `completed`; [`ChangeTrigger::FlowFailure`]);
//! - `settle`: each stage reported when its effect is confirmed (the
//!   REGISTER's 2xx, the refresh's 2xx), `completed`; NAT rebinding
//!   learnt from `received`/`rport`, which runs through the same machine;
//! - `report`: the typed stages and errors.

mod accounts;
mod calls;
mod detect;
mod listeners;
mod params;
mod repair;
mod report;
mod run;
mod settle;
mod view;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

pub use calls::{CallMove, CallMoveAction};
pub use detect::DetectedChange;
pub use params::{AccountIpChange, IpChangeParams, Ipv6Use, RefreshFlags, UnknownIpv6Use};
pub use report::{ChangeTrigger, IpChangeError, IpChangeReport, IpChangeStage, ListenFailure};
pub use run::{MobilityAction, MobilityResult};
pub use view::{ConnectionView, ListenerView, NetworkQueries, NetworkView};

use crate::endpoint::{CoreError, Endpoint};
use crate::flow::Transport;
use crate::registration::AccountId;

/// One address of an account's registrar (all of them are kept: the
/// account switches to another family's when its own is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrarAddress {
    /// The transport.
    pub transport: Transport,
    /// The address.
    pub addr: SocketAddr,
}

/// What a change needs to know of an account beyond its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRoutes {
    /// The address of record (its calls are those whose local URI it is).
    pub aor: String,
    /// Every address of the registrar its IPv6 use allows.
    pub registrar: Vec<RegistrarAddress>,
    /// IPv6 use for SIP.
    pub sip: Ipv6Use,
    /// IPv6 use for media.
    pub media: Ipv6Use,
    /// The account's own knobs (else the change's).
    pub ip_change: Option<AccountIpChange>,
}

impl AccountRoutes {
    /// The registrar's address for `transport` in `ip`'s family.
    fn candidate(&self, transport: Transport, ip: IpAddr) -> Option<RegistrarAddress> {
        self.registrar
            .iter()
            .find(|c| c.transport == transport && c.addr.is_ipv4() == ip.is_ipv4())
            .copied()
    }

    /// Whether `addr` is one of the registrar's addresses.
    fn is_registrar(&self, transport: Transport, addr: SocketAddr) -> bool {
        self.registrar
            .iter()
            .any(|c| c.transport == transport && c.addr == addr)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AccountState {
    routes: AccountRoutes,
    /// The local address the account registers from, as last set: what
    /// detection compares with.
    local_ip: Option<IpAddr>,
    /// The Contact last registered (`None` right after a change of ours):
    /// another one without a change of ours is a NAT rebinding.
    contact: Option<String>,
}

/// The mobility part of the endpoint's state.
#[derive(Debug, Default)]
pub(crate) struct Mobility {
    accounts: HashMap<AccountId, AccountState>,
    /// The endpoint's address as last set (first registration or call,
    /// then each change): what detection compares calls with.
    local_ip: Option<IpAddr>,
    /// The change in progress.
    run: Option<run::Run>,
}

impl Endpoint {
    /// Tells the core how an account may move ([`Endpoint::register`]
    /// first); `local_ip` is the address it registers from now.
    pub fn set_account_routes(
        &mut self,
        account: AccountId,
        routes: AccountRoutes,
        local_ip: Option<IpAddr>,
    ) -> Result<(), CoreError> {
        if !self.accounts.contains(account) {
            return Err(CoreError::NoSuchAccount);
        }
        if self.mobility.local_ip.is_none() {
            self.mobility.local_ip = local_ip;
        }
        let contact = self
            .mobility
            .accounts
            .get(&account)
            .and_then(|a| a.contact.clone());
        self.mobility.accounts.insert(
            account,
            AccountState {
                routes,
                local_ip,
                contact,
            },
        );
        Ok(())
    }

    /// Changes how an account may move (from the next change).
    pub fn modify_account_routes(
        &mut self,
        account: AccountId,
        f: impl FnOnce(&mut AccountRoutes),
    ) -> Result<(), CoreError> {
        let a = self
            .mobility
            .accounts
            .get_mut(&account)
            .ok_or(CoreError::NoSuchAccount)?;
        f(&mut a.routes);
        Ok(())
    }

    /// How an account may move.
    pub fn account_routes(&self, account: AccountId) -> Option<&AccountRoutes> {
        self.mobility.accounts.get(&account).map(|a| &a.routes)
    }

    /// Notes the endpoint's own address when none is known yet (the
    /// first call placed without an account).
    pub fn note_local_ip(&mut self, ip: IpAddr) {
        if self.mobility.local_ip.is_none() && !ip.is_unspecified() {
            self.mobility.local_ip = Some(ip);
        }
    }

    /// The account whose address of record is `uri` (`<…>` allowed).
    pub(crate) fn account_with_aor(&self, uri: &str) -> Option<(AccountId, &AccountRoutes)> {
        let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
        self.mobility
            .accounts
            .iter()
            .filter(|(_, a)| a.routes.aor.eq_ignore_ascii_case(uri))
            .min_by_key(|(id, _)| **id)
            .map(|(id, a)| (*id, &a.routes))
    }

    /// The routes of the account whose AoR is `uri`, else the first's.
    pub fn routes_for_uri(&self, uri: &str) -> Option<&AccountRoutes> {
        self.account_with_aor(uri).map(|(_, r)| r).or_else(|| {
            let first = self.mobility.accounts.keys().min()?;
            self.mobility.accounts.get(first).map(|a| &a.routes)
        })
    }

    /// The account is gone: forget how it moves.
    pub(crate) fn forget_account_routes(&mut self, account: AccountId) {
        self.mobility.accounts.remove(&account);
    }
}
