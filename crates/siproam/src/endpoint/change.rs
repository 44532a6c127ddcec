//! The network side of a change: what the core sees of the network
//! (`NetworkView`) and the socket work of each `MobilityAction`. Every
//! decision is the core's (`siproam_core` mobility).

use std::net::{IpAddr, SocketAddr};

use siproam_core::{
    ConnectionView, FlowId, IpChangeParams, ListenFailure, ListenerView, MobilityAction,
    MobilityResult, NetworkView,
};
use tracing::debug;

use crate::transport::{
    CloseReason, ConnectionId, ListenError, ListenerId, ListenerInfo, SendTarget, Transport,
};

use super::driver::{now, Driver};
use super::targets::tls_target;

impl Driver {
    /// What the core needs to see of the network: the source address
    /// towards each remote it names (and each connection's peer), which
    /// addresses are this host's, the listeners (not the lingering ones)
    /// and, for a change, the stream connections.
    pub(super) fn network_view(&self, extra: Option<IpAddr>, connections: bool) -> NetworkView {
        let queries = self.core.network_queries();
        let (lingering, listeners): (Vec<ListenerInfo>, Vec<ListenerInfo>) = self
            .transports
            .listeners()
            .into_iter()
            .partition(|l| self.retiring.iter().any(|(_, id)| *id == l.id));
        let mut view = NetworkView {
            listeners: listeners.into_iter().map(listener_view).collect(),
            lingering: lingering.into_iter().map(listener_view).collect(),
            ..NetworkView::default()
        };
        if connections {
            view.connections = self
                .transports
                .connections()
                .into_iter()
                .map(|c| ConnectionView {
                    id: c.id.as_u64(),
                    local: c.local,
                    remote: c.remote,
                })
                .collect();
        }
        let remotes = queries
            .remotes
            .iter()
            .copied()
            .chain(view.connections.iter().map(|c| c.remote));
        for remote in remotes {
            if view.sources.contains_key(&remote) {
                continue;
            }
            if let Ok(ip) = self.transports.source_address_for(remote) {
                view.sources.insert(remote, ip);
            }
        }
        let addresses: Vec<IpAddr> = queries
            .addresses
            .iter()
            .copied()
            .chain(extra)
            .chain(view.listeners.iter().map(|l| l.local.ip()))
            .chain(view.connections.iter().map(|c| c.local.ip()))
            .collect();
        for ip in addresses {
            if !ip.is_unspecified() && !view.local.contains(&ip) && self.transports.is_local(ip) {
                view.local.insert(ip);
            }
        }
        view
    }

    /// Automatic detection: the core compares the network now with the
    /// addresses in use, and a change it finds is made for the accounts
    /// and calls it concerns only; several new addresses (accounts over
    /// different uplinks) are handled in turn.
    pub(super) async fn check_network(&mut self) {
        let Some(watch) = self.watch.clone() else {
            return;
        };
        for _ in 0..4 {
            let view = self.network_view(None, false);
            let Some(change) = self.core.detect_change(&view) else {
                return;
            };
            debug!(
                "network change detected: now {} for {} accounts, {} calls",
                change.ip,
                change.accounts.len(),
                change.calls.len()
            );
            self.ip_change(change.params(&watch.params)).await;
        }
    }

    /// A change: the core decides each stage (`siproam_core` mobility);
    /// the driver does the socket work it asks for.
    pub(super) async fn ip_change(&mut self, params: IpChangeParams) {
        let view = self.network_view(params.ip, params.shutdown_transports);
        if let Err(e) = self.core.start_ip_change(now(), params, view) {
            debug!("network change not started: {e}");
        }
        while let Some(action) = self.core.poll_mobility() {
            let result = self.perform(action).await;
            self.core.handle_mobility(now(), result);
        }
    }

    /// One piece of socket work of a change.
    async fn perform(&mut self, action: MobilityAction) -> MobilityResult {
        match action {
            MobilityAction::CloseConnections(ids) => self.close_connections(ids),
            MobilityAction::CloseAllStreams => {
                let closed = self.transports.shutdown_streams();
                debug!("{closed} stream connections closed");
                MobilityResult::Done
            }
            MobilityAction::Listen {
                transport,
                addr,
                after,
            } => {
                if !after.is_zero() {
                    tokio::time::sleep(after).await;
                }
                listened(self.transports.listen(transport, addr).await)
            }
            MobilityAction::RestartListener { listener } => listened(
                self.transports
                    .restart_listener(ListenerId::from_u64(listener))
                    .await,
            ),
            MobilityAction::CloseFlow(flow) => self.close_flow(flow),
            MobilityAction::Connect {
                transport,
                remote,
                local,
                server_name,
            } => {
                let name =
                    server_name.and_then(|n| self.core.server_name_text(n).map(str::to_owned));
                self.connect_for_contact(transport, remote, local, name)
                    .await
            }
            MobilityAction::ReclaimListener(id) => {
                let id = ListenerId::from_u64(id);
                self.retiring.retain(|(_, l)| *l != id);
                MobilityResult::Done
            }
            MobilityAction::CloseListener(id) => {
                self.transports
                    .close_listener(ListenerId::from_u64(id))
                    .await;
                MobilityResult::Done
            }
            MobilityAction::RetireListener { listener, grace } => {
                let until = tokio::time::Instant::now() + grace;
                self.retiring.push((until, ListenerId::from_u64(listener)));
                MobilityResult::Done
            }
        }
    }

    /// Closes the stream connections a change found stale.
    fn close_connections(&mut self, ids: Vec<u64>) -> MobilityResult {
        let mut closed = 0;
        for id in ids {
            closed += usize::from(
                self.transports
                    .close_connection(ConnectionId::from_u64(id), CloseReason::ShutDown),
            );
        }
        debug!("{closed} stale stream connections closed");
        MobilityResult::Done
    }

    /// Closes an account's registration flow.
    fn close_flow(&mut self, flow: FlowId) -> MobilityResult {
        // (a connect still being reported is closed as soon as it is)
        self.close_flow_connection(flow, CloseReason::ShutDown);
        MobilityResult::Done
    }

    /// Opens the stream connection whose local address becomes an
    /// account's Contact.
    async fn connect_for_contact(
        &mut self,
        transport: Transport,
        remote: SocketAddr,
        local: SocketAddr,
        server_name: Option<String>,
    ) -> MobilityResult {
        let t = tls_target(
            SendTarget::new(transport, remote).with_local(local),
            server_name,
        );
        match self.transports.clone().connect(&t).await {
            Ok(flow) => MobilityResult::Connected(flow.local),
            Err(e) => {
                debug!("connect for the Contact failed: {e}");
                MobilityResult::ConnectFailed
            }
        }
    }
}

/// The core's view of a listener.
fn listener_view(l: ListenerInfo) -> ListenerView {
    ListenerView {
        id: l.id.as_u64(),
        transport: l.transport,
        local: l.local,
    }
}

/// A listener opened (or not), for the core.
fn listened(r: Result<ListenerInfo, ListenError>) -> MobilityResult {
    match r {
        Ok(info) => MobilityResult::Listening(listener_view(info)),
        Err(e) => {
            debug!("listen failed: {e}");
            MobilityResult::ListenFailed(listen_failure(&e))
        }
    }
}

/// Why a listener could not be opened, as the core decides on it.
fn listen_failure(e: &ListenError) -> ListenFailure {
    match e {
        ListenError::AddressGone { .. } => ListenFailure::AddressGone,
        ListenError::Bind { source, .. } => match source.kind() {
            std::io::ErrorKind::AddrInUse => ListenFailure::AddrInUse,
            std::io::ErrorKind::AddrNotAvailable => ListenFailure::AddressGone,
            kind => ListenFailure::Io(kind),
        },
        #[allow(unreachable_patterns)]
        _ => ListenFailure::Io(std::io::ErrorKind::Other),
    }
}
