//! Detection, a pure function of the core's state and the driver's
//! [`NetworkView`]: which accounts and calls moved, and to where; and the
//! addresses a change picks (an account's source, a call's media).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::dialog::CallId;
use crate::endpoint::Endpoint;
use crate::registration::AccountId;

use super::params::{IpChangeParams, Ipv6Use};
use super::view::{NetworkQueries, NetworkView};
use super::{AccountRoutes, RegistrarAddress};

/// A change the network made under some accounts or calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedChange {
    /// The new address.
    pub ip: IpAddr,
    /// The accounts whose path now leaves from it.
    pub accounts: Vec<AccountId>,
    /// The calls whose next hop is now reached from it (or not at all).
    pub calls: Vec<CallId>,
}

impl DetectedChange {
    /// The change to make: `template`'s knobs, for these accounts and
    /// calls only, leaving what it does not concern alone.
    pub fn params(&self, template: &IpChangeParams) -> IpChangeParams {
        IpChangeParams {
            ip: Some(self.ip),
            accounts: Some(self.accounts.clone()),
            calls: Some(self.calls.clone()),
            keep_unaffected: true,
            ..template.clone()
        }
    }
}

impl Endpoint {
    /// What the driver must look up to fill a [`NetworkView`] (besides its
    /// own listeners and connections, whose addresses it also checks):
    /// every registrar address, every call's next hop, the addresses in
    /// use.
    pub fn network_queries(&self) -> NetworkQueries {
        let mut q = NetworkQueries::default();
        for a in self.mobility.accounts.values() {
            for c in &a.routes.registrar {
                q.remote(c.addr);
            }
            if let Some(ip) = a.local_ip {
                q.address(ip);
            }
        }
        for id in self.accounts() {
            if let Some(r) = self.account_registrar(id) {
                q.remote(r);
            }
        }
        for (call, _) in self.calls() {
            if let Some(hop) = self.call_next_hop(call) {
                q.remote(hop.remote);
                if let Some(l) = hop.local {
                    q.address(l.ip());
                }
            }
        }
        if let Some(ip) = self.mobility.local_ip {
            q.address(ip);
        }
        q
    }

    /// Whether the network changed under any account or call: the source
    /// address towards a registrar (or a call's next hop) is no longer
    /// the one in use. The first new address found, with the accounts and
    /// calls that move to it; an address a listener is pinned to stays in
    /// use while it exists.
    pub fn detect_change(&self, view: &NetworkView) -> Option<DetectedChange> {
        let pinned: HashSet<IpAddr> = view
            .listeners
            .iter()
            .map(|l| l.local.ip())
            .filter(|ip| !ip.is_unspecified() && view.is_local(*ip))
            .collect();
        // one lookup per registrar and IPv6 mode, not per account
        let mut sources: HashMap<(std::net::SocketAddr, Ipv6Use), Option<IpAddr>> = HashMap::new();
        let mut accounts: Vec<AccountId> = self.mobility.accounts.keys().copied().collect();
        accounts.sort();
        let moved: Vec<(AccountId, IpAddr)> = accounts
            .into_iter()
            .filter_map(|a| {
                let state = self.mobility.accounts.get(&a)?;
                if state.local_ip.is_some_and(|ip| {
                    pinned.contains(&ip) || (self.account_pins_local(a) && view.is_local(ip))
                }) {
                    return None;
                }
                let registrar = self.account_registrar(a)?;
                let src = *sources
                    .entry((registrar, state.routes.sip))
                    .or_insert_with(|| self.account_source(view, a));
                let src = src?;
                (Some(src) != state.local_ip).then_some((a, src))
            })
            .collect();
        // (a call whose next hop is unreachable now goes with whatever
        // address the change picks: the other family's, for instance)
        let call_moves: Vec<(CallId, Option<IpAddr>)> = self
            .calls()
            .into_iter()
            .filter_map(|(call, _)| {
                let hop = self.call_next_hop(call)?;
                let current = hop
                    .local
                    .map(|a| a.ip())
                    .filter(|ip| !ip.is_unspecified())
                    .or(self.mobility.local_ip)?;
                if pinned.contains(&current) {
                    return None;
                }
                match view.source(hop.remote) {
                    Some(src) => (src != current).then_some((call, Some(src))),
                    None => Some((call, None)),
                }
            })
            .collect();
        let ip = moved
            .first()
            .map(|(_, ip)| *ip)
            .or_else(|| call_moves.iter().find_map(|(_, ip)| *ip))?;
        Some(DetectedChange {
            ip,
            accounts: moved
                .iter()
                .filter(|(_, i)| *i == ip)
                .map(|(a, _)| *a)
                .collect(),
            calls: call_moves
                .iter()
                .filter(|(_, i)| i.is_none_or(|i| i == ip))
                .map(|(c, _)| *c)
                .collect(),
        })
    }

    /// The source address towards the first of an account's registrar
    /// addresses that `keep` accepts and that has a route.
    fn route_source(
        view: &NetworkView,
        routes: &AccountRoutes,
        keep: impl Fn(&RegistrarAddress) -> bool,
    ) -> Option<IpAddr> {
        routes
            .registrar
            .iter()
            .filter(|c| keep(c))
            .find_map(|c| view.source(c.addr))
    }

    /// The address an account would register from now: the source towards
    /// its registrar, else (unreachable) towards another of the
    /// registrar's addresses its IPv6 use allows (the other family when
    /// only that one is left).
    pub(crate) fn account_source(&self, view: &NetworkView, account: AccountId) -> Option<IpAddr> {
        let registrar = self.account_registrar(account)?;
        view.source(registrar).or_else(|| {
            let routes = &self.mobility.accounts.get(&account)?.routes;
            Self::route_source(view, routes, |c| {
                c.addr != registrar && routes.sip.allows(c.addr.ip())
            })
        })
    }

    /// Where a call's media goes after a change to `ip`, given its
    /// account's IPv6 use for media: `ip` when allowed (for `prefer`, an
    /// IPv6 address first), else an address of the other family.
    pub(crate) fn media_ip_for(
        &self,
        view: &NetworkView,
        call: CallId,
        ip: IpAddr,
    ) -> Option<IpAddr> {
        let routes = self
            .call_local_uri(call)
            .and_then(|u| self.routes_for_uri(u));
        let mode = routes.map_or(Ipv6Use::Enabled, |r| r.media);
        let other_family = |want_v6: bool| {
            routes.and_then(|r| Self::route_source(view, r, |c| c.addr.is_ipv6() == want_v6))
        };
        if mode == Ipv6Use::Prefer && ip.is_ipv4() {
            if let Some(v6) = other_family(true) {
                return Some(v6);
            }
        }
        if mode.allows(ip) {
            return Some(ip);
        }
        other_family(ip.is_ipv4())
    }
}
