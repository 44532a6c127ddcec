//! Resolution: registrars and next hops into the core's targets, and
//! registration.

use std::net::{IpAddr, SocketAddr};

use siproam_core::{
    AccountConfig, AccountId, AccountRoutes, CallId, Ipv6Use, RegistrarAddress,
    Target as CoreTarget,
};
use tracing::debug;

use crate::resolve::{Destination, FamilyPreference, NameOrIp, ResolvedTarget};
use crate::transport::{ListenerInfo, SendTarget, Transport};

use super::driver::{now, Driver};
use super::{AccountSpec, CommandFor, EndpointError};

/// The resolver's family preference for an IPv6 use.
pub(super) fn family_preference(mode: Ipv6Use) -> FamilyPreference {
    match mode {
        Ipv6Use::Disabled => FamilyPreference::Ipv4Only,
        Ipv6Use::Enabled => FamilyPreference::PreferIpv4,
        Ipv6Use::Prefer => FamilyPreference::PreferIpv6,
        Ipv6Use::Only => FamilyPreference::Ipv6Only,
    }
}

impl Driver {
    /// Resolves a SIP URI to every target, in order, with `family`.
    async fn resolve_targets(
        &mut self,
        uri_text: &str,
        family: FamilyPreference,
    ) -> Result<Vec<ResolvedTarget>, EndpointError> {
        let uri = siproam_sip::Uri::parse(uri_text)?;
        let dest = Destination::from_uri(&uri)?;
        if let Some(reused) = self.tls_flow_for(&dest, family) {
            return Ok(vec![reused]);
        }
        let mut rng_state = self.random();
        let mut rng = move || {
            rng_state = rng_state
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            rng_state
        };
        self.resolver.set_family(family);
        Ok(self.resolver.resolve(&dest, &mut rng).await?)
    }

    /// RFC 5626 §4.3: a TLS destination named by a domain (no `maddr`)
    /// that the certificate of an open outgoing TLS connection covers (a
    /// subject alternative name, a wildcard as RFC 6125 allows) goes over
    /// that connection, without a look-up: the certificate already proves
    /// the server serves the domain. An explicit port must be the
    /// connection's. The core hears that the connection's flow covers the
    /// name, so it picks that flow for it.
    fn tls_flow_for(
        &mut self,
        dest: &Destination,
        family: FamilyPreference,
    ) -> Option<ResolvedTarget> {
        let tls = dest.secure || dest.transport == Some(Transport::Tls);
        let named =
            matches!(&dest.host, NameOrIp::Name(n) if n.eq_ignore_ascii_case(&dest.server_name));
        if !tls || !named {
            return None;
        }
        let conn = self
            .transports
            .tls_connection_serving(&dest.server_name, dest.port)?;
        let allowed = match family {
            FamilyPreference::Ipv4Only => conn.remote.is_ipv4(),
            FamilyPreference::Ipv6Only => conn.remote.is_ipv6(),
            FamilyPreference::PreferIpv4 | FamilyPreference::PreferIpv6 => true,
        };
        if !allowed {
            return None;
        }
        debug!(connection = %conn.id, "TLS flow reused for a domain its certificate covers");
        if let Some(flow) = self.connections.get(&conn.id).copied() {
            let name = self.core.server_name(&dest.server_name);
            self.core.handle_tls_name_covered(flow, name);
        }
        Some(ResolvedTarget {
            transport: Transport::Tls,
            addr: conn.remote,
            server_name: dest.server_name.clone(),
        })
    }

    /// The core's target for a resolved one: the local address to send
    /// from and advertise is a listener of the target's family (its own
    /// address, or the OS's source address towards the target for a
    /// wildcard listener, or `local_ip` when given).
    fn core_target(
        &mut self,
        target: &ResolvedTarget,
        local_ip: Option<IpAddr>,
    ) -> Result<CoreTarget, EndpointError> {
        let listeners: Vec<ListenerInfo> = self
            .transports
            .listeners()
            .into_iter()
            .filter(|l| !self.retiring.iter().any(|(_, id)| *id == l.id))
            .filter(|l| l.local.is_ipv4() == target.addr.is_ipv4())
            .collect();
        let listener = listeners
            .iter()
            .find(|l| l.transport == target.transport)
            // no listener of that transport: the peer reaches us over the
            // connection we open; advertise another listener's port
            .or(listeners.first())
            .map(|l| l.local);
        // no listener at all (a client with no listener): a stream target
        // is reached over the connection opened first, whose own address
        // is the Contact ([`Driver::contact_connection`])
        let listener = match listener {
            Some(l) => l,
            None if target.transport.is_reliable() => {
                SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0)
            }
            None => return Err(EndpointError::NoListener(target.transport)),
        };
        let ip = match local_ip {
            Some(ip) => ip,
            None if listener.ip().is_unspecified() => self
                .transports
                .source_address_for(target.addr)
                .map_err(EndpointError::NoRoute)?,
            None => listener.ip(),
        };
        // TLS: the name the certificate must cover; a flow the core opened
        // for another name is not used for it (RFC 5626 §4.3). An address
        // is no name: any connection to it serves it.
        let named = target.server_name.parse::<IpAddr>().is_err();
        let server_name = (target.transport == Transport::Tls && named)
            .then(|| self.core.server_name(&target.server_name));
        Ok(CoreTarget {
            transport: target.transport,
            remote: target.addr,
            local: Some(SocketAddr::new(ip, listener.port())),
            server_name,
        })
    }

    /// A UDP target with no UDP socket of its family to send from (a
    /// client with no listener): one is bound on the source address the OS
    /// uses towards it, on a port of the OS's choosing — it must exist to
    /// receive the answers, and its address is the Contact. It is not
    /// a configured listener, but it is one for the core from now on.
    async fn ensure_udp_socket(&mut self, targets: &[ResolvedTarget]) -> Result<(), EndpointError> {
        let Some(target) = targets.iter().find(|t| t.transport == Transport::Udp) else {
            return Ok(());
        };
        let has_socket = self.transports.listeners().iter().any(|l| {
            l.transport == Transport::Udp
                && l.local.is_ipv4() == target.addr.is_ipv4()
                && !self.retiring.iter().any(|(_, id)| *id == l.id)
        });
        if has_socket {
            return Ok(());
        }
        let ip = self
            .transports
            .source_address_for(target.addr)
            .map_err(EndpointError::NoRoute)?;
        // opened apart from `self`: the driver's future stays Send
        let info = self
            .transports
            .clone()
            .listen(Transport::Udp, SocketAddr::new(ip, 0))
            .await?;
        debug!(local = %info.local, "no UDP listener: a socket for the flow");
        self.core.add_listen_point(siproam_core::ListenPoint {
            transport: Transport::Udp,
            addr: info.local,
        });
        Ok(())
    }

    /// Opens the connection a stream target's Contact must name, when the
    /// core asks for it ([`Driver::contact_connection`]), and makes its
    /// local address the target's.
    async fn connect_first(&mut self, target: &mut CoreTarget) {
        if let Some(t) = self.contact_connection(target) {
            // opened apart from `self`: the driver's future stays Send
            match self.transports.clone().connect(&t).await {
                Ok(flow) => target.local = Some(flow.local),
                // the request's own connect fails the same way and says so
                Err(e) => debug!("connect for the Contact failed: {e}"),
            }
        }
    }

    /// The connection an account will register over, to be opened first
    /// when the core says its own address must be the Contact
    /// (`needs_contact_flow`: TCP/TLS with no listener of that transport);
    /// `None`: a listener exists.
    fn contact_connection(&self, target: &CoreTarget) -> Option<SendTarget> {
        let transport = target.transport;
        if !self.core.needs_contact_flow(transport, target.remote) {
            return None;
        }
        let mut t = SendTarget::new(transport, target.remote);
        if let Some(mut l) = target.local.filter(|l| !l.ip().is_unspecified()) {
            l.set_port(0);
            t = t.with_local(l);
        }
        let name = target
            .server_name
            .and_then(|n| self.core.server_name_text(n).map(str::to_owned));
        Some(tls_target(t, name))
    }

    /// The first of `targets` we can reach from a listener (the error of
    /// the first one when none can be), sent from `local_ip` when given
    /// (then only targets of its family).
    fn first_usable(
        &mut self,
        targets: &[ResolvedTarget],
        local_ip: Option<IpAddr>,
    ) -> Result<CoreTarget, EndpointError> {
        let mut first_error = None;
        let family = |t: &&ResolvedTarget| local_ip.is_none_or(|l| l.is_ipv4() == t.addr.is_ipv4());
        for t in targets.iter().filter(family) {
            match self.core_target(t, local_ip) {
                Ok(ct) => return Ok(ct),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(EndpointError::Stopped))
    }

    /// An application command for the next hop `hop` (a SIP URI),
    /// resolved with the IPv6 use of the account of `from` (a new call).
    pub(super) async fn command_via(
        &mut self,
        hop: String,
        from: String,
        make: CommandFor,
    ) -> Result<Option<CallId>, EndpointError> {
        let family = family_preference(
            self.core
                .routes_for_uri(&from)
                .map_or(Ipv6Use::Enabled, |r| r.sip),
        );
        let targets = self.resolve_targets(&hop, family).await?;
        self.ensure_udp_socket(&targets).await?;
        let mut target = self.first_usable(&targets, None)?;
        self.connect_first(&mut target).await;
        if let Some(local) = target.local {
            self.core.note_local_ip(local.ip());
        }
        Ok(self.app.command(&mut self.core, now(), make(target))?)
    }

    pub(super) async fn register(&mut self, spec: AccountSpec) -> Result<AccountId, EndpointError> {
        // every address of the first hop (the flow's outbound proxy, else
        // the registrar) the account's IPv6 use allows: the first
        // reachable one now, the others for a family switch
        let first_hop = spec
            .flow
            .outbound_proxy
            .clone()
            .unwrap_or_else(|| spec.registrar.clone());
        let candidates = self
            .resolve_targets(&first_hop, family_preference(spec.ipv6_sip))
            .await?;
        self.ensure_udp_socket(&candidates).await?;
        let mut core_target = self.first_usable(&candidates, spec.flow.local_ip)?;
        self.connect_first(&mut core_target).await;
        let local_ip = core_target.local.map(|a| a.ip());
        let uri = siproam_sip::Uri::parse(&spec.registrar)?;
        // the Request-URI of a REGISTER is the registrar's domain
        let registrar_uri = match uri.as_sip() {
            Some(s) => format!(
                "{}:{}",
                if s.is_secure() { "sips" } else { "sip" },
                s.host_str()
            ),
            None => spec.registrar.clone(),
        };
        let mut cfg = AccountConfig::new(&spec.aor, &registrar_uri, core_target);
        cfg.username = spec.username;
        cfg.instance_id = spec.instance_id;
        cfg.outbound = spec.outbound;
        cfg.reg_id = spec.reg_id;
        cfg.password = spec.password;
        cfg.expires = spec.expires;
        cfg.keepalive_stream = spec.flow.keepalive_stream;
        cfg.keepalive_datagram = spec.flow.keepalive_datagram;
        cfg.pong_timeout = spec.flow.pong_timeout;
        cfg.outbound_proxy = spec.flow.outbound_proxy.as_deref().map(loose_route);
        cfg.pin_local = spec.flow.local_ip.is_some();
        let id = self.core.register(now(), cfg);
        let routes = AccountRoutes {
            aor: spec.aor,
            registrar: candidates
                .iter()
                .map(|c| RegistrarAddress {
                    transport: c.transport,
                    addr: c.addr,
                })
                .collect(),
            sip: spec.ipv6_sip,
            media: spec.ipv6_media,
            ip_change: spec.ip_change,
        };
        self.core.set_account_routes(id, routes, local_ip)?;
        Ok(id)
    }
}

/// A TLS send target verifies `name`, or the remote IP address without
/// one; other transports are left as they are.
pub(super) fn tls_target(t: SendTarget, name: Option<String>) -> SendTarget {
    if t.transport != Transport::Tls {
        return t;
    }
    let name = name.unwrap_or_else(|| t.remote.ip().to_string());
    t.with_server_name(name)
}

/// An outbound proxy's URI as a loose Route (`;lr` added when missing).
fn loose_route(uri: &str) -> String {
    let has_lr = uri
        .split(['?', '>'])
        .next()
        .unwrap_or_default()
        .split(';')
        .skip(1)
        .any(|p| {
            p.split('=')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("lr"))
        });
    if has_lr {
        uri.to_owned()
    } else {
        format!("{uri};lr")
    }
}

#[cfg(test)]
mod tests {
    use super::loose_route;

    #[test]
    fn an_outbound_proxy_gets_lr_once() {
        assert_eq!(loose_route("sip:p.example.test"), "sip:p.example.test;lr");
        assert_eq!(
            loose_route("sip:10.0.0.1:5060;transport=tcp"),
            "sip:10.0.0.1:5060;transport=tcp;lr"
        );
        assert_eq!(
            loose_route("sip:p.example.test;LR"),
            "sip:p.example.test;LR"
        );
        assert_eq!(loose_route("sip:lr.example.test"), "sip:lr.example.test;lr");
    }
}
