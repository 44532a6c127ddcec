//! The run loop: the task that owns the core and the transports, command
//! dispatch, transport events, sends and their backlog.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use siproam_core::{AccountId, Endpoint as Core, Event, FlowCloseReason, FlowId, IpChangeParams};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::resolve::{HickoryDns, Resolver, StaticHosts};
use crate::transport::{
    CloseReason, ConnectionDirection, ConnectionId, SendTarget, Transport, TransportEvent,
    TransportEvents, TransportManager,
};

use super::handle::Command;
use super::{AccountChanges, Application, EndpointError, EndpointEvent, WatchConfig};

/// The driver's end of a core flow.
#[derive(Debug, Clone, Copy)]
pub(super) enum FlowPath {
    Connection(ConnectionId),
}

pub(super) struct Driver {
    pub(super) core: Core,
    pub(super) transports: TransportManager,
    pub(super) app: Box<dyn Application>,
    pub(super) resolver: Resolver<StaticHosts<HickoryDns>>,
    /// Automatic detection, when on.
    pub(super) watch: Option<WatchConfig>,
    /// The network monitor's events (taken by the run loop).
    pub(super) net: Option<mpsc::UnboundedReceiver<crate::netwatch::MonitorMsg>>,
    /// core flow → connection (TCP/TLS)
    pub(super) flows: HashMap<FlowId, FlowPath>,
    /// connection → core flow
    pub(super) connections: HashMap<ConnectionId, FlowId>,
    /// messages waiting for their flow's connection to open
    pub(super) pending: HashMap<FlowId, VecDeque<Bytes>>,
    /// flows a change closed before their connect was reported
    pub(super) close_when_connected: std::collections::HashSet<FlowId>,
    /// registration flows to pin once their connect is reported
    pub(super) pin_when_connected: std::collections::HashSet<FlowId>,
    /// messages waiting for room in their connection's send queue, in order
    pub(super) backlog: HashMap<FlowId, VecDeque<Bytes>>,
    /// Outgoing connections whose flow is not known yet: a connect's task
    /// reports on `conn_rx`, apart from the connection's own events, so an
    /// answer to what it carried (and its close) can come first. Claimed
    /// by [`Driver::connected`]; a closed one is kept only while a connect
    /// is pending.
    pub(super) unclaimed: HashMap<ConnectionId, Unclaimed>,
    /// Old UDP listeners after an IP change, still receiving answers to
    /// requests sent before it, until their deadline.
    pub(super) retiring: Vec<(tokio::time::Instant, crate::transport::ListenerId)>,
    pub(super) events: mpsc::Sender<EndpointEvent>,
    pub(super) rng: u64,
}

/// What came on an outgoing connection before its flow was known.
#[derive(Debug, Default)]
pub(super) struct Unclaimed {
    messages: Vec<Bytes>,
    closed: Option<FlowCloseReason>,
}

/// At most this many messages are kept for an unclaimed connection.
const UNCLAIMED_MESSAGES: usize = 32;

pub(super) enum Connected {
    Done(
        FlowId,
        Result<crate::transport::OpenedFlow, crate::transport::SendError>,
    ),
}

fn close_reason(r: &CloseReason) -> FlowCloseReason {
    match r {
        CloseReason::PeerClosed => FlowCloseReason::PeerClosed,
        CloseReason::Reset | CloseReason::Io(_) => FlowCloseReason::Reset,
        CloseReason::Framing(_) => FlowCloseReason::FramingError,
        CloseReason::Idle => FlowCloseReason::Idle,
        CloseReason::KeepAliveTimeout => FlowCloseReason::KeepAliveTimeout,
        CloseReason::FlowFailed => FlowCloseReason::FlowFailed,
        _ => FlowCloseReason::Local,
    }
}

/// How the connection of a flow the core gave up on is closed: with the
/// core's reason.
fn failed_flow_close(r: FlowCloseReason) -> CloseReason {
    match r {
        FlowCloseReason::KeepAliveTimeout | FlowCloseReason::StunTimeout => {
            CloseReason::KeepAliveTimeout
        }
        FlowCloseReason::FlowFailed => CloseReason::FlowFailed,
        _ => CloseReason::Closed,
    }
}

pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut transport_events: TransportEvents,
    ) {
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<Connected>();
        let mut net = self.net.take();
        let mut settle_at: Option<tokio::time::Instant> = None;
        let mut resync_at = self
            .watch
            .as_ref()
            .map(|w| tokio::time::Instant::now() + w.resync);
        loop {
            // pings due within a few ms of each other go in one wake-up
            let deadline = self
                .core
                .poll_timeout_coalesced(KEEPALIVE_SLACK)
                .map(|(at, _)| at)
                .into_iter()
                .chain(self.app.poll_timeout())
                .min()
                .map(tokio::time::Instant::from_std);
            let retire_at = self.retiring.iter().map(|(at, _)| *at).min();
            tokio::select! {
                msg = async { match net.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => match msg {
                    Some(crate::netwatch::MonitorMsg::Event(ev)) => {
                        // the network changed: a flow waiting out its
                        // back-off tries again now (RFC 5626 §4.5)
                        let retried = self.core.retry_failed_registrations(now());
                        if !retried.is_empty() {
                            debug!("network event: {} registration(s) retried", retried.len());
                        }
                        let _ = self.events.try_send(EndpointEvent::Network(ev));
                        if let (None, Some(w)) = (settle_at, &self.watch) {
                            settle_at = Some(tokio::time::Instant::now() + w.settle);
                        }
                    }
                    None => net = None,
                },
                _ = sleep_until(settle_at), if settle_at.is_some() => {
                    settle_at = None;
                    self.check_network().await;
                }
                _ = sleep_until(resync_at), if resync_at.is_some() => {
                    resync_at = self
                        .watch
                        .as_ref()
                        .map(|w| tokio::time::Instant::now() + w.resync);
                    self.check_network().await;
                }
                _ = async { match retire_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    let now = tokio::time::Instant::now();
                    let (due, keep): (Vec<_>, Vec<_>) =
                        self.retiring.drain(..).partition(|(at, _)| *at <= now);
                    self.retiring = keep;
                    for (_, id) in due {
                        self.transports.close_listener(id).await;
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::IpChange(params, reply)) => {
                        if self.merged_ip_change(params, reply, &mut commands).await {
                            return;
                        }
                    }
                    Some(cmd) => self.command(cmd).await,
                    None => return,
                },
                ev = transport_events.recv() => match ev {
                    Some(ev) => self.transport_event(ev),
                    None => return,
                },
                Some(Connected::Done(flow, result)) = conn_rx.recv() => self.connected(flow, result).await,
                _ = sleep_until(deadline) => {
                    let now = now();
                    self.core.handle_timeout(now);
                    if self.app.poll_timeout().is_some_and(|at| at <= now) {
                        self.app.handle_timeout(&mut self.core, now);
                    }
                }
                // a full connection queue drains while we wait a moment
                _ = tokio::time::sleep(std::time::Duration::from_millis(2)), if !self.backlog.is_empty() => {
                    self.flush_backlog().await;
                }
            }
            self.drain(&conn_tx).await;
        }
    }

    /// A change and the changes queued behind it, merged into one: the
    /// newest parameters win, every caller hears the one completion, other
    /// commands follow in order. True when one of them was a shutdown.
    async fn merged_ip_change(
        &mut self,
        mut params: Box<IpChangeParams>,
        reply: oneshot::Sender<()>,
        commands: &mut mpsc::Receiver<Command>,
    ) -> bool {
        let mut replies = vec![reply];
        let mut after = Vec::new();
        while let Ok(next) = commands.try_recv() {
            match next {
                Command::IpChange(p, r) => {
                    params = p;
                    replies.push(r);
                }
                other => after.push(other),
            }
        }
        self.ip_change(*params).await;
        for r in replies {
            let _ = r.send(());
        }
        for cmd in after {
            if let Command::Shutdown(done) = cmd {
                let _ = done.send(());
                return true;
            }
            self.command(cmd).await;
        }
        false
    }

    pub(super) fn random(&mut self) -> u32 {
        // xorshift: only orders SRV records of equal priority
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as u32
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Register(spec, reply) => {
                let r = self.register(spec).await;
                let _ = reply.send(r);
            }
            Command::Unregister(account, reply) => {
                let r = self
                    .core
                    .unregister(now(), account)
                    .map_err(EndpointError::from);
                let _ = reply.send(r);
            }
            Command::Modify(account, changes, reregister, reply) => {
                let _ = reply.send(self.modify(account, changes, reregister));
            }
            Command::Via {
                hop,
                from,
                make,
                reply,
            } => {
                let r = self.command_via(hop, from, make).await;
                let _ = reply.send(r);
            }
            Command::App(cmd, reply) => {
                let r = self
                    .app
                    .command(&mut self.core, now(), cmd)
                    .map_err(EndpointError::from);
                let _ = reply.send(r);
            }
            Command::IpChange(params, reply) => {
                self.ip_change(*params).await;
                let _ = reply.send(());
            }
            Command::RetryRegistrations(reply) => {
                let _ = reply.send(self.core.retry_failed_registrations(now()));
            }
            Command::Listeners(reply) => {
                let _ = reply.send(self.transports.listeners());
            }
            Command::Shutdown(_) => {}
        }
    }

    fn modify(
        &mut self,
        account: AccountId,
        changes: AccountChanges,
        reregister: bool,
    ) -> Result<(), EndpointError> {
        let AccountChanges {
            username,
            password,
            expires,
            ipv6_sip,
            ipv6_media,
            ip_change,
        } = changes;
        self.core.modify_account(account, |c| {
            if let Some(u) = username {
                c.username = Some(u);
            }
            if let Some(p) = password {
                c.password = Some(p);
            }
            if let Some(e) = expires {
                c.expires = e;
            }
        })?;
        self.core.modify_account_routes(account, |route| {
            if let Some(m) = ipv6_sip {
                route.sip = m;
            }
            if let Some(m) = ipv6_media {
                route.media = m;
            }
            if let Some(k) = ip_change {
                route.ip_change = k;
            }
        })?;
        if reregister {
            self.core.refresh_registration(now(), account)?;
        }
        Ok(())
    }

    fn transport_event(&mut self, ev: TransportEvent) {
        let now = now();
        match ev {
            TransportEvent::Received {
                transport: Transport::Udp,
                local,
                remote,
                bytes,
                ..
            } => {
                if self.transports.has_datagram_filter() && siproam_core::stun::is_stun(&bytes) {
                    // STUN on the SIP port (RFC 5626 keep-alives): to the
                    // core's STUN side, not the SIP parser
                    let outcome = self.core.handle_stun(now, local, remote, &bytes);
                    match outcome {
                        siproam_core::stun::StunOutcome::Dropped(why) => {
                            debug!(%remote, ?why, "STUN datagram dropped");
                        }
                        siproam_core::stun::StunOutcome::Answered => {
                            // a UDP flow's keep-alive (RFC 5626 §4.4.2)
                            self.app
                                .on_keepalive(now, Transport::Udp, local, remote, None);
                        }
                        _ => {}
                    }
                } else if self.transports.has_datagram_filter() {
                    self.core
                        .handle_admitted_datagram(now, local, remote, bytes);
                } else {
                    self.core.handle_datagram(now, local, remote, bytes);
                }
            }
            TransportEvent::Received {
                transport,
                local,
                remote,
                connection: Some(conn),
                bytes,
            } => {
                let flow = match self.connections.get(&conn) {
                    Some(f) => *f,
                    None => {
                        if let Some(u) = self.unclaimed.get_mut(&conn) {
                            // ours, its flow not known yet: it gets them
                            // (a second flow for it would be a dead one)
                            if u.messages.len() < UNCLAIMED_MESSAGES {
                                u.messages.push(bytes);
                            } else {
                                debug!("{conn}: message before its connect was reported dropped");
                            }
                            return;
                        }
                        self.accept(conn, transport, local, remote)
                    }
                };
                self.core.handle_stream_message(now, flow, bytes);
            }
            TransportEvent::Received { .. } => {}
            TransportEvent::ConnectionOpened { info } => {
                if !self.connections.contains_key(&info.id) {
                    match info.direction {
                        ConnectionDirection::Incoming => {
                            self.accept(info.id, info.transport, info.local, info.remote);
                        }
                        ConnectionDirection::Outgoing => {
                            self.unclaimed.insert(info.id, Unclaimed::default());
                        }
                    }
                }
            }
            TransportEvent::ConnectionClosed { info, reason } => {
                if let Some(flow) = self.connections.remove(&info.id) {
                    self.flows.remove(&flow);
                    self.pending.remove(&flow);
                    self.backlog.remove(&flow);
                    self.core
                        .handle_flow_closed(now, flow, close_reason(&reason));
                } else if self.pending.is_empty() {
                    // no connect left to claim it
                    self.unclaimed.remove(&info.id);
                } else if let Some(u) = self.unclaimed.get_mut(&info.id) {
                    u.closed = Some(close_reason(&reason));
                }
            }
            TransportEvent::PingReceived { connection } => {
                if let (Some(flow), Some(info)) = (
                    self.connections.get(&connection),
                    self.transports.connection(connection),
                ) {
                    self.app.on_keepalive(
                        now,
                        info.transport,
                        info.local,
                        info.remote,
                        Some(*flow),
                    );
                }
            }
            TransportEvent::PongReceived { connection } => {
                if let Some(flow) = self.connections.get(&connection) {
                    self.core.handle_pong(now, *flow);
                }
            }
        }
    }

    fn accept(
        &mut self,
        conn: ConnectionId,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> FlowId {
        let flow = self.core.handle_flow_accepted(transport, local, remote);
        self.connections.insert(conn, flow);
        self.flows.insert(flow, FlowPath::Connection(conn));
        flow
    }

    async fn connected(
        &mut self,
        flow: FlowId,
        result: Result<crate::transport::OpenedFlow, crate::transport::SendError>,
    ) {
        // (a flow to pin is pinned below, or forgotten: nothing lingers)
        let pin = self.pin_when_connected.remove(&flow);
        if self.close_when_connected.remove(&flow) {
            if let Ok(f) = &result {
                if let Some(conn) = f.connection {
                    self.unclaimed.remove(&conn);
                    self.transports
                        .close_connection(conn, CloseReason::ShutDown);
                }
            }
            self.pending.remove(&flow);
            self.forget_unclaimed_closed();
            self.core
                .handle_flow_closed(now(), flow, FlowCloseReason::Local);
            return;
        }
        match result {
            Ok(f) => {
                if let Some(conn) = f.connection {
                    let early = self.unclaimed.remove(&conn).unwrap_or_default();
                    if pin {
                        self.transports.set_pinned(conn, true);
                    }
                    self.connections.insert(conn, flow);
                    self.flows.insert(flow, FlowPath::Connection(conn));
                    self.core.handle_flow_established(flow, f.local);
                    // what came on it before we knew, on its own flow
                    let now = now();
                    for bytes in early.messages {
                        self.core.handle_stream_message(now, flow, bytes);
                    }
                    if let Some(reason) = early.closed {
                        self.connections.remove(&conn);
                        self.flows.remove(&flow);
                        self.pending.remove(&flow);
                        self.forget_unclaimed_closed();
                        self.core.handle_flow_closed(now, flow, reason);
                        return;
                    }
                    let queued = self.pending.remove(&flow).unwrap_or_default();
                    for bytes in queued {
                        self.send_stream(flow, conn, bytes).await;
                    }
                }
            }
            Err(e) => {
                debug!("connect failed: {e}");
                self.pending.remove(&flow);
                self.core
                    .handle_flow_closed(now(), flow, FlowCloseReason::ConnectFailed);
            }
        }
        self.forget_unclaimed_closed();
    }

    /// With no connect pending, closed connections nobody claimed are
    /// forgotten (nothing will).
    fn forget_unclaimed_closed(&mut self) {
        if self.pending.is_empty() {
            self.unclaimed.retain(|_, u| u.closed.is_none());
        }
    }

    /// Carries out what the core asked, and hands its events on.
    /// Closes a flow's connection (or does so as soon as its connect is
    /// reported).
    pub(super) fn close_flow_connection(&mut self, flow: FlowId, reason: CloseReason) {
        match self.flows.get(&flow) {
            Some(FlowPath::Connection(conn)) => {
                self.transports.close_connection(*conn, reason);
            }
            None => {
                self.close_when_connected.insert(flow);
            }
        }
    }

    /// Pins a flow's connection: no idle close (or as soon as its connect
    /// is reported).
    fn pin_flow(&mut self, flow: FlowId) {
        match self.flows.get(&flow) {
            Some(FlowPath::Connection(conn)) => {
                self.transports.set_pinned(*conn, true);
            }
            None => {
                self.pin_when_connected.insert(flow);
            }
        }
    }

    async fn drain(&mut self, conn_tx: &mpsc::UnboundedSender<Connected>) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.core.poll_transmit() {
                progressed = true;
                self.transmit(t, conn_tx).await;
            }
            // a flow the core found dead (no pong, 430): its connection
            // goes, closed with the core's reason
            while let Some((flow, reason)) = self.core.poll_close() {
                progressed = true;
                self.close_flow_connection(flow, failed_flow_close(reason));
            }
            // how each client transaction ended: method, status or
            // failure, time (no URI: personal data stays out of the log)
            while let Some(o) = self.core.poll_transaction_outcome() {
                tracing::info!(
                    transport = %o.transport,
                    "{} transaction: {} after {} ms",
                    o.method,
                    o.result,
                    o.elapsed.as_millis()
                );
            }
            while let Some(ev) = self.core.poll_event() {
                progressed = true;
                let at = now();
                if let Event::IpChange(r) = ev {
                    let _ = self.events.try_send(EndpointEvent::IpChange(r));
                    continue;
                }
                if let Event::AuthenticationFailed {
                    account,
                    user,
                    realm,
                    method,
                } = &ev
                {
                    // once per request (the core never retries it); the
                    // user name only at debug (personal data). The event
                    // goes on to the application, which tells the user:
                    // not a warning of its own besides
                    info!(
                        "authentication failed for account {} at realm {realm} ({method})",
                        account.0
                    );
                    debug!("authentication failed for {user} at realm {realm}");
                }
                if let Event::Retransmission {
                    method,
                    attempt,
                    next,
                    remote,
                } = &ev
                {
                    // no URI at info (personal data); the address at debug
                    info!(
                        %method,
                        attempt,
                        next_ms = u64::try_from(next.as_millis()).unwrap_or(u64::MAX),
                        "retransmitting an unanswered request"
                    );
                    debug!(%method, attempt, %remote, "retransmitted to");
                }
                // a registration's flow is never closed for idleness
                if let Event::Flow(f) = &ev {
                    if f.state == siproam_core::FlowState::Up && f.transport.is_reliable() {
                        self.pin_flow(f.flow);
                    }
                }
                if let Some(ev) = self.app.on_event(&mut self.core, at, ev) {
                    if self.events.try_send(EndpointEvent::Core(ev)).is_err() {
                        debug!("event dropped: nobody is reading");
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    async fn transmit(
        &mut self,
        t: siproam_core::Transmit,
        conn_tx: &mpsc::UnboundedSender<Connected>,
    ) {
        let transport = t.transport;
        if transport == Transport::Udp {
            let local = self.udp_local(t.local, t.remote);
            let mut target = SendTarget::new(transport, t.remote);
            if let Some(l) = local {
                target = target.with_local(l);
            }
            if let Err(e) = self.transports.send(&target, t.payload).await {
                debug!("UDP send failed: {e}");
            }
            return;
        }
        match self.flows.get(&t.flow) {
            Some(FlowPath::Connection(conn)) => {
                let conn = *conn;
                self.send_stream(t.flow, conn, t.payload).await;
            }
            None => {
                // a new connection: queue behind the connect
                if let Some(q) = self.pending.get_mut(&t.flow) {
                    q.push_back(t.payload);
                    return;
                }
                self.pending.insert(t.flow, VecDeque::new());
                let mut target = SendTarget::new(transport, t.remote);
                if let Some(l) = t.local.filter(|l| !l.ip().is_unspecified()) {
                    target = target.with_local(l);
                }
                // TLS: the name the core opened the flow for
                let name = self.core.flow_server_name(t.flow).map(str::to_owned);
                target = super::targets::tls_target(target, name);
                let transports = self.transports.clone();
                let tx = conn_tx.clone();
                let flow = t.flow;
                tokio::spawn(async move {
                    let r = transports.send(&target, t.payload).await;
                    let _ = tx.send(Connected::Done(flow, r));
                });
            }
        }
    }

    /// Sends on a connection, in order behind anything already waiting;
    /// a full send queue keeps the message for a later try (a stream has no
    /// retransmissions: dropping it would lose it).
    async fn send_stream(&mut self, flow: FlowId, conn: ConnectionId, bytes: Bytes) {
        if let Some(q) = self.backlog.get_mut(&flow) {
            q.push_back(bytes);
            return;
        }
        if !self.try_send_stream(flow, conn, bytes).await {
            // kept in the backlog by try_send_stream
        }
    }

    /// One send; on a full queue the message goes to the front of the
    /// flow's backlog and false comes back.
    async fn try_send_stream(&mut self, flow: FlowId, conn: ConnectionId, bytes: Bytes) -> bool {
        let Some(info) = self.transports.connection(conn) else {
            return true; // closed meanwhile: its close event tells the core
        };
        let target = SendTarget::new(info.transport, info.remote).with_connection(conn);
        match self.transports.send(&target, bytes.clone()).await {
            Ok(_) => true,
            Err(crate::transport::SendError::QueueFull(_)) => {
                self.backlog.entry(flow).or_default().push_front(bytes);
                false
            }
            Err(e) => {
                debug!("send on {conn} failed: {e}");
                true
            }
        }
    }

    async fn flush_backlog(&mut self) {
        let flows: Vec<FlowId> = self.backlog.keys().copied().collect();
        for flow in flows {
            let Some(FlowPath::Connection(conn)) = self.flows.get(&flow).copied() else {
                self.backlog.remove(&flow);
                continue;
            };
            let mut queue = self.backlog.remove(&flow).unwrap_or_default();
            while let Some(bytes) = queue.pop_front() {
                if !self.try_send_stream(flow, conn, bytes).await {
                    // the rest waits behind the one just put back
                    if let Some(q) = self.backlog.get_mut(&flow) {
                        q.extend(queue.drain(..));
                    }
                    break;
                }
            }
        }
    }

    /// The UDP listener to send from (of `remote`'s family): the one bound
    /// to `local`, else one on the same port bound to the wildcard, else
    /// one on the same address, else any.
    fn udp_local(&self, local: Option<SocketAddr>, remote: SocketAddr) -> Option<SocketAddr> {
        let udp: Vec<SocketAddr> = self
            .transports
            .listeners()
            .into_iter()
            .filter(|l| l.transport == Transport::Udp && l.local.is_ipv4() == remote.is_ipv4())
            .map(|l| l.local)
            .collect();
        let want = local?;
        udp.iter()
            .find(|a| **a == want)
            .or_else(|| {
                udp.iter()
                    .find(|a| a.ip().is_unspecified() && a.port() == want.port())
            })
            .or_else(|| udp.iter().find(|a| a.ip() == want.ip()))
            .or(udp.first())
            .copied()
    }
}

/// How late a keep-alive ping may go so that the pings due together are
/// sent in one wake-up of the driver (RFC 5626 draws each at 80-100 % of
/// the interval; 20 ms is noise beside a NAT's timeout).
const KEEPALIVE_SLACK: std::time::Duration = std::time::Duration::from_millis(20);

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending::<()>().await,
    }
}
