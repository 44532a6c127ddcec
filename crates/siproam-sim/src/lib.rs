//! # siproam-sim — a deterministic network for tests
//!
//! A virtual clock that jumps to the next deadline, hosts with addresses,
//! links with latency, loss and an up/down state, addresses that come and
//! go, all seeded. Nodes are either a sans-IO [`Endpoint`] driven by the
//! simulator, or a scripted *peer* whose received messages a test reads and
//! answers by hand. Minutes of protocol time run in milliseconds.
//!
//! TCP/TLS are modelled as reliable, ordered message flows: the first
//! message of a flow "connects" (the receiver gets
//! `handle_flow_accepted`), and a flow whose path fails is reported closed
//! to both ends.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::{
    Config, ConnectionView, Endpoint, Event, FlowCloseReason, FlowId, IpChangeParams,
    IpChangeReport, ListenFailure, ListenPoint, ListenerView, MobilityAction, MobilityResult,
    NetworkView, Rng, Transport,
};
use siproam_sip::Message;

/// A node's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// A path between two nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One-way delay.
    pub latency: Duration,
    /// Probability in `[0, 1]` that a datagram is lost (streams do not
    /// lose, they retransmit underneath).
    pub loss: f64,
    /// A link that is down delivers nothing.
    pub up: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            latency: Duration::from_millis(10),
            loss: 0.0,
            up: true,
        }
    }
}

/// A message a scripted peer received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// The sender's address.
    pub from: SocketAddr,
    /// The address it arrived on.
    pub to: SocketAddr,
    /// The transport.
    pub transport: Transport,
    /// The stream connection, for TCP/TLS (answer on it with
    /// [`Sim::peer_reply`]).
    pub conn: Option<ConnId>,
    /// The parsed message.
    pub message: Message,
}

/// A simulated stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// One line of the simulator's log: every send, with its fate.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// When it was sent.
    pub at: Instant,
    /// From.
    pub from: SocketAddr,
    /// To.
    pub to: SocketAddr,
    /// The transport.
    pub transport: Transport,
    /// The first line of the message.
    pub first_line: String,
    /// Delivered, or why not.
    pub fate: Fate,
}

/// What happened to a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It will arrive (or did).
    Delivered,
    /// Lost to the link's loss rate.
    Lost,
    /// The link was down or no host has the address.
    Unreachable,
}

/// Code run on each event of an endpoint node as it happens (an
/// application: a registrar, an auto-answering UA). Returning the event
/// keeps it for [`Sim::take_events`]; returning `None` consumes it.
pub type Handler = Box<dyn FnMut(&mut Endpoint, Instant, Event) -> Option<Event>>;

enum NodeKind {
    Endpoint {
        ep: Box<Endpoint>,
        events: Vec<(Instant, Event)>,
        handler: Option<Handler>,
    },
    Peer {
        inbox: VecDeque<Received>,
    },
}

struct Node {
    name: String,
    addrs: Vec<IpAddr>,
    kind: NodeKind,
}

/// One end of a simulated stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// An endpoint's flow.
    Flow(NodeId, FlowId),
    /// A scripted peer.
    Peer(NodeId),
}

#[derive(Debug, Clone)]
struct Conn {
    transport: Transport,
    a: End,
    a_addr: SocketAddr,
    b: End,
    b_addr: SocketAddr,
}

#[derive(Debug, Clone)]
struct InFlight {
    to_node: NodeId,
    from: SocketAddr,
    to: SocketAddr,
    transport: Transport,
    conn: Option<(ConnId, bool)>,
    payload: Bytes,
}

/// The simulated network.
pub struct Sim {
    start: Instant,
    now: Instant,
    rng: Rng,
    nodes: Vec<Node>,
    links: HashMap<(NodeId, NodeId), Link>,
    default_link: Link,
    queue: BTreeMap<(Instant, u64), InFlight>,
    seq: u64,
    conns: HashMap<ConnId, Conn>,
    flow_conns: HashMap<(NodeId, FlowId), ConnId>,
    next_conn: u64,
    next_port: u16,
    log: Vec<LogEntry>,
    /// Addresses some other program holds (a listener cannot open there).
    taken: Vec<SocketAddr>,
    /// Old listeners a change left lingering, per node (they still hold
    /// their address).
    lingering: HashMap<NodeId, Vec<ListenerView>>,
    /// Nodes that answer no keep-alive ping.
    no_pong: Vec<NodeId>,
    /// Nodes that accept no stream connection (they listen on UDP only).
    no_streams: Vec<NodeId>,
    /// Peers that answer no STUN Binding request.
    no_stun: Vec<NodeId>,
    /// The address a peer reports in its STUN answers, when not the
    /// source's (a NAT that rebound).
    stun_mapped: HashMap<NodeId, SocketAddr>,
    /// STUN datagrams each peer received.
    stun_seen: HashMap<NodeId, Vec<StunDatagram>>,
}

/// A STUN datagram a scripted peer received (on UDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunDatagram {
    /// When it arrived.
    pub at: Instant,
    /// The sender's address.
    pub from: SocketAddr,
    /// The address it arrived on.
    pub to: SocketAddr,
    /// Its transaction id.
    pub transaction: u128,
    /// Whether it is a Binding request (the peer answers those).
    pub request: bool,
    /// The bytes.
    pub payload: Bytes,
}

/// One step of a change as the simulator carried it out: the socket
/// work the core asked for, and the stages it reported, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeStep {
    /// The core asked for this, and the simulator did it.
    Action(MobilityAction),
    /// The core reported this stage.
    Stage(IpChangeReport),
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("elapsed", &self.elapsed())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Sim {
    /// A network whose clock starts at `start` (any instant: the sim never
    /// reads the real clock itself) and whose randomness is seeded.
    pub fn new(start: Instant, seed: u64) -> Sim {
        Sim {
            start,
            now: start,
            rng: Rng::new(seed),
            nodes: Vec::new(),
            links: HashMap::new(),
            default_link: Link::default(),
            queue: BTreeMap::new(),
            seq: 0,
            conns: HashMap::new(),
            flow_conns: HashMap::new(),
            next_conn: 0,
            next_port: 40000,
            log: Vec::new(),
            taken: Vec::new(),
            lingering: HashMap::new(),
            no_pong: Vec::new(),
            no_streams: Vec::new(),
            no_stun: Vec::new(),
            stun_mapped: HashMap::new(),
            stun_seen: HashMap::new(),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a node driven by a sans-IO endpoint, listening on port 5060 of
    /// each of its addresses for UDP and TCP (and 5061 for TLS).
    pub fn add_endpoint(&mut self, name: &str, addrs: &[IpAddr], config: Config) -> NodeId {
        let mut ep = Endpoint::new(config);
        for ip in addrs {
            for (t, port) in [
                (Transport::Udp, 5060),
                (Transport::Tcp, 5060),
                (Transport::Tls, 5061),
            ] {
                ep.add_listen_point(ListenPoint {
                    transport: t,
                    addr: SocketAddr::new(*ip, port),
                });
            }
        }
        self.nodes.push(Node {
            name: name.to_owned(),
            addrs: addrs.to_vec(),
            kind: NodeKind::Endpoint {
                ep: Box::new(ep),
                events: Vec::new(),
                handler: None,
            },
        });
        NodeId(self.nodes.len() - 1)
    }

    /// Adds a scripted peer: the test reads what it receives
    /// ([`Sim::peer_recv`]) and sends what it wants ([`Sim::peer_send`]).
    pub fn add_peer(&mut self, name: &str, addrs: &[IpAddr]) -> NodeId {
        self.nodes.push(Node {
            name: name.to_owned(),
            addrs: addrs.to_vec(),
            kind: NodeKind::Peer {
                inbox: VecDeque::new(),
            },
        });
        NodeId(self.nodes.len() - 1)
    }

    /// A node's name.
    pub fn name(&self, node: NodeId) -> &str {
        self.nodes.get(node.0).map_or("?", |n| n.name.as_str())
    }

    /// Sets the link between two nodes (both directions).
    pub fn set_link(&mut self, a: NodeId, b: NodeId, link: Link) {
        self.links.insert((a, b), link);
        self.links.insert((b, a), link);
        if !link.up {
            self.break_conns(|c| {
                (end_node(c.a) == a && end_node(c.b) == b)
                    || (end_node(c.a) == b && end_node(c.b) == a)
            });
        }
    }

    /// Sets the link used between nodes without their own.
    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    /// Replaces a node's addresses; stream connections on removed
    /// addresses break.
    pub fn set_addresses(&mut self, node: NodeId, addrs: &[IpAddr]) {
        if let Some(n) = self.nodes.get_mut(node.0) {
            n.addrs = addrs.to_vec();
        }
        let kept = addrs.to_vec();
        self.break_conns(|c| {
            (end_node(c.a) == node && !kept.contains(&c.a_addr.ip()))
                || (end_node(c.b) == node && !kept.contains(&c.b_addr.ip()))
        });
    }

    /// The sans-IO endpoint of a node (to issue commands). Call
    /// [`Sim::flush`] after a command so its output enters the network.
    pub fn endpoint(&mut self, node: NodeId) -> &mut Endpoint {
        match self.nodes.get_mut(node.0).map(|n| &mut n.kind) {
            Some(NodeKind::Endpoint { ep, .. }) => ep,
            _ => panic!("node {node:?} is not an endpoint"),
        }
    }

    /// Runs a command on a node's endpoint at the current time, then moves
    /// its output into the network.
    pub fn with_endpoint<R>(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut Endpoint, Instant) -> R,
    ) -> R {
        let now = self.now;
        let r = f(self.endpoint(node), now);
        self.flush(node);
        r
    }

    /// Events an endpoint reported so far (and forgets them).
    pub fn take_events(&mut self, node: NodeId) -> Vec<(Instant, Event)> {
        match self.nodes.get_mut(node.0).map(|n| &mut n.kind) {
            Some(NodeKind::Endpoint { events, .. }) => std::mem::take(events),
            _ => Vec::new(),
        }
    }

    /// The next message a peer received, if any.
    pub fn peer_recv(&mut self, node: NodeId) -> Option<Received> {
        match self.nodes.get_mut(node.0).map(|n| &mut n.kind) {
            Some(NodeKind::Peer { inbox }) => inbox.pop_front(),
            _ => None,
        }
    }

    /// Sends bytes from a peer as a datagram (or, for TCP/TLS, on a new
    /// connection).
    pub fn peer_send(
        &mut self,
        node: NodeId,
        from: SocketAddr,
        to: SocketAddr,
        transport: Transport,
        payload: Bytes,
    ) {
        if transport.is_reliable() {
            let conn = self.open_conn(transport, End::Peer(node), from, to);
            self.send_on(conn, true, payload);
        } else {
            self.route(from, to, transport, None, payload);
        }
    }

    /// Answers on the connection a [`Received`] came on, or to its source
    /// for UDP.
    pub fn peer_reply(&mut self, node: NodeId, to: &Received, payload: Bytes) {
        match to.conn {
            Some(conn) => {
                let a_is_peer = self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| c.a == End::Peer(node));
                self.send_on(conn, a_is_peer, payload);
            }
            None => self.route(to.to, to.from, to.transport, None, payload),
        }
    }

    /// Closes a peer's stream connection (as a peer closing it would).
    pub fn peer_close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.close_end(c.a, FlowCloseReason::PeerClosed);
            self.close_end(c.b, FlowCloseReason::PeerClosed);
        }
    }

    /// Marks an address as held by another program: a listener asked for
    /// there fails with "address in use".
    pub fn occupy(&mut self, addr: SocketAddr) {
        self.taken.push(addr);
    }

    /// Whether a node answers keep-alive pings on its streams (it does
    /// unless told not to: a peer whose pongs get lost).
    pub fn set_pong(&mut self, node: NodeId, pong: bool) {
        self.no_pong.retain(|n| *n != node);
        if !pong {
            self.no_pong.push(node);
        }
    }

    /// Whether a node accepts stream (TCP/TLS) connections (it does unless
    /// told not to: a host that listens on UDP only). A connection to one
    /// that does not fails before anything is delivered, reported to the
    /// connecting endpoint as [`FlowCloseReason::ConnectFailed`], as the
    /// driver reports a refused connect.
    pub fn set_accepts_streams(&mut self, node: NodeId, accepts: bool) {
        self.no_streams.retain(|n| *n != node);
        if !accepts {
            self.no_streams.push(node);
        }
    }

    /// Whether a scripted peer answers STUN Binding requests on UDP (it
    /// does unless told not to, as an RFC 5626 edge proxy or registrar
    /// does on its SIP port).
    pub fn set_stun(&mut self, node: NodeId, answer: bool) {
        self.no_stun.retain(|n| *n != node);
        if !answer {
            self.no_stun.push(node);
        }
    }

    /// The address a scripted peer tells in its STUN answers (`None`: the
    /// request's source, as seen). Another address plays a NAT that
    /// rebound the flow to a new public port.
    pub fn set_stun_mapped(&mut self, node: NodeId, mapped: Option<SocketAddr>) {
        match mapped {
            Some(a) => {
                self.stun_mapped.insert(node, a);
            }
            None => {
                self.stun_mapped.remove(&node);
            }
        }
    }

    /// The STUN datagrams a scripted peer received so far (and forgets
    /// them).
    pub fn take_stun(&mut self, node: NodeId) -> Vec<StunDatagram> {
        self.stun_seen.remove(&node).unwrap_or_default()
    }

    /// Whether a stream connection is still open.
    pub fn conn_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// What a node's driver would see of the network: its addresses are
    /// local, the source towards anything is its first address of that
    /// family, its listeners are its listen points, its connections the
    /// simulator's.
    pub fn network_view(&mut self, node: NodeId) -> NetworkView {
        let queries = self.endpoint(node).network_queries();
        let addrs = self
            .nodes
            .get(node.0)
            .map(|n| n.addrs.clone())
            .unwrap_or_default();
        let listeners: Vec<ListenerView> = self
            .endpoint(node)
            .listen_points()
            .iter()
            .enumerate()
            .map(|(i, p)| ListenerView {
                id: i as u64,
                transport: p.transport,
                local: p.addr,
            })
            .collect();
        let mut connections = Vec::new();
        for (id, c) in &self.conns {
            for (end, local, remote) in [(c.a, c.a_addr, c.b_addr), (c.b, c.b_addr, c.a_addr)] {
                if end_node(end) == node {
                    connections.push(ConnectionView {
                        id: id.0,
                        local,
                        remote,
                    });
                }
            }
        }
        connections.sort_by_key(|c| c.id);
        let mut view = NetworkView {
            listeners,
            connections,
            lingering: self.lingering.get(&node).cloned().unwrap_or_default(),
            ..NetworkView::default()
        };
        let remotes = queries
            .remotes
            .iter()
            .copied()
            .chain(view.connections.iter().map(|c| c.remote))
            .collect::<Vec<_>>();
        for r in remotes {
            if let Some(ip) = self.node_addr_towards(node, r) {
                view.sources.insert(r, ip);
            }
        }
        view.local = addrs.into_iter().collect();
        view
    }

    /// A network change on a node, as its driver would make it: the core
    /// decides, the simulator does the socket work it asks for (listeners
    /// are virtual: one opens wherever the node has the address and no
    /// other program holds it). Returns the steps in order.
    pub fn ip_change(&mut self, node: NodeId, params: IpChangeParams) -> Vec<ChangeStep> {
        let view = self.network_view(node);
        let listeners = view.listeners.clone();
        let now = self.now;
        let mut steps = Vec::new();
        let mut seen = self.events_len(node);
        if let Err(e) = self.endpoint(node).start_ip_change(now, params, view) {
            panic!("change refused: {e}");
        }
        loop {
            self.flush(node);
            seen = self.stages_since(node, seen, &mut steps);
            let Some(action) = self.endpoint(node).poll_mobility() else {
                break;
            };
            steps.push(ChangeStep::Action(action.clone()));
            let result = self.perform(node, &listeners, action);
            let now = self.now;
            self.endpoint(node).handle_mobility(now, result);
        }
        steps
    }

    fn events_len(&self, node: NodeId) -> usize {
        match self.nodes.get(node.0).map(|n| &n.kind) {
            Some(NodeKind::Endpoint { events, .. }) => events.len(),
            _ => 0,
        }
    }

    fn stages_since(&self, node: NodeId, from: usize, steps: &mut Vec<ChangeStep>) -> usize {
        match self.nodes.get(node.0).map(|n| &n.kind) {
            Some(NodeKind::Endpoint { events, .. }) => {
                for (_, ev) in events.iter().skip(from) {
                    if let Event::IpChange(r) = ev {
                        steps.push(ChangeStep::Stage(r.clone()));
                    }
                }
                events.len()
            }
            _ => from,
        }
    }

    fn perform(
        &mut self,
        node: NodeId,
        listeners: &[ListenerView],
        action: MobilityAction,
    ) -> MobilityResult {
        let has =
            |sim: &Sim, ip: IpAddr| sim.nodes.get(node.0).is_some_and(|n| n.addrs.contains(&ip));
        match action {
            MobilityAction::CloseConnections(ids) => {
                for id in ids {
                    self.local_close(ConnId(id));
                }
                MobilityResult::Done
            }
            MobilityAction::CloseAllStreams => {
                let mine: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| end_node(c.a) == node || end_node(c.b) == node)
                    .map(|(id, _)| *id)
                    .collect();
                for id in mine {
                    self.local_close(id);
                }
                MobilityResult::Done
            }
            MobilityAction::Listen {
                transport, addr, ..
            } => {
                if !has(self, addr.ip()) {
                    return MobilityResult::ListenFailed(ListenFailure::AddressGone);
                }
                let held = self.lingering.get(&node).is_some_and(|ls| {
                    ls.iter()
                        .any(|l| l.transport == transport && l.local == addr)
                });
                if self.taken.contains(&addr) || held {
                    return MobilityResult::ListenFailed(ListenFailure::AddrInUse);
                }
                let mut local = addr;
                if local.port() == 0 {
                    self.next_port = self.next_port.wrapping_add(1).max(40000);
                    local.set_port(self.next_port);
                }
                self.next_conn += 1;
                MobilityResult::Listening(ListenerView {
                    id: (1 << 32) | self.next_conn,
                    transport,
                    local,
                })
            }
            MobilityAction::RestartListener { listener } => {
                match listeners.iter().find(|l| l.id == listener) {
                    Some(l) if l.local.ip().is_unspecified() || has(self, l.local.ip()) => {
                        MobilityResult::Listening(*l)
                    }
                    _ => MobilityResult::ListenFailed(ListenFailure::AddressGone),
                }
            }
            MobilityAction::CloseFlow(flow) => {
                if let Some(conn) = self.flow_conns.get(&(node, flow)).copied() {
                    self.local_close(conn);
                }
                MobilityResult::Done
            }
            // the simulator opens connections on their first message
            MobilityAction::Connect { .. } => MobilityResult::ConnectFailed,
            MobilityAction::RetireListener { listener, .. } => {
                if let Some(l) = listeners.iter().find(|l| l.id == listener) {
                    // (lingering ids are kept apart from the listen points')
                    let mut l = *l;
                    l.id |= 1 << 40;
                    self.lingering.entry(node).or_default().push(l);
                }
                MobilityResult::Done
            }
            MobilityAction::ReclaimListener(id) => {
                if let Some(ls) = self.lingering.get_mut(&node) {
                    ls.retain(|l| l.id != id);
                }
                MobilityResult::Done
            }
            MobilityAction::CloseListener(_) => MobilityResult::Done,
        }
    }

    /// A node closes a connection itself: both ends hear of it.
    fn local_close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.close_end(c.a, FlowCloseReason::Local);
            self.close_end(c.b, FlowCloseReason::Local);
        }
    }

    /// Every message sent so far, with its fate.
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }

    /// Installs the code that handles an endpoint's events as they happen.
    pub fn set_handler(&mut self, node: NodeId, handler: Handler) {
        if let Some(NodeKind::Endpoint { handler: h, .. }) =
            self.nodes.get_mut(node.0).map(|n| &mut n.kind)
        {
            *h = Some(handler);
        }
    }

    /// Moves an endpoint's pending transmits and events out of it (events
    /// go through its handler first, if it has one).
    pub fn flush(&mut self, node: NodeId) {
        let now = self.now;
        loop {
            let mut transmits = Vec::new();
            let mut closes = Vec::new();
            let mut handled = false;
            match self.nodes.get_mut(node.0).map(|n| &mut n.kind) {
                Some(NodeKind::Endpoint {
                    ep,
                    events,
                    handler,
                }) => {
                    while let Some(ev) = ep.poll_event() {
                        handled = true;
                        let kept = match handler.as_mut() {
                            Some(h) => h(ep, now, ev),
                            None => Some(ev),
                        };
                        if let Some(ev) = kept {
                            events.push((now, ev));
                        }
                    }
                    while let Some(t) = ep.poll_transmit() {
                        transmits.push(t);
                    }
                    while let Some((f, _)) = ep.poll_close() {
                        closes.push(f);
                    }
                }
                _ => return,
            }
            for f in closes {
                if let Some(conn) = self.flow_conns.get(&(node, f)).copied() {
                    self.local_close(conn);
                }
            }
            if transmits.is_empty() && !handled {
                return;
            }
            for t in transmits {
                self.send_transmit(node, t);
            }
        }
    }

    /// The node's first address of `remote`'s family (as an OS picks a
    /// source address), else its first address.
    fn node_addr_towards(&self, node: NodeId, remote: SocketAddr) -> Option<IpAddr> {
        let addrs = &self.nodes.get(node.0)?.addrs;
        addrs
            .iter()
            .find(|a| a.is_ipv4() == remote.is_ipv4())
            .or(addrs.first())
            .copied()
    }

    fn owner_of(&self, ip: IpAddr) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.addrs.contains(&ip))
            .map(NodeId)
    }

    fn send_transmit(&mut self, node: NodeId, t: siproam_core::Transmit) {
        let local_ip = t
            .local
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .or_else(|| self.node_addr_towards(node, t.remote));
        let Some(local_ip) = local_ip else { return };
        if t.transport.is_reliable() {
            let conn = match self.flow_conns.get(&(node, t.flow)) {
                Some(c) => *c,
                None => {
                    // a port the target names that nothing listens on: a
                    // connection opened first for its own address (a
                    // client with no listener), as the driver's connect
                    let named = t.local.map(|a| a.port()).filter(|p| {
                        *p != 0
                            && !self
                                .endpoint(node)
                                .listen_points()
                                .iter()
                                .any(|l| l.addr.port() == *p)
                    });
                    let port = named.unwrap_or_else(|| {
                        self.next_port = self.next_port.wrapping_add(1).max(40000);
                        self.next_port
                    });
                    let from = SocketAddr::new(local_ip, port);
                    let c = self.open_conn(t.transport, End::Flow(node, t.flow), from, t.remote);
                    self.endpoint(node).handle_flow_established(t.flow, from);
                    c
                }
            };
            let a_side = self
                .conns
                .get(&conn)
                .is_some_and(|c| c.a == End::Flow(node, t.flow));
            self.send_on(conn, a_side, t.payload);
        } else {
            let port = t
                .local
                .map_or(5060, |a| if a.port() == 0 { 5060 } else { a.port() });
            self.route(
                SocketAddr::new(local_ip, port),
                t.remote,
                t.transport,
                None,
                t.payload,
            );
        }
    }

    fn open_conn(
        &mut self,
        transport: Transport,
        a: End,
        a_addr: SocketAddr,
        b_addr: SocketAddr,
    ) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        let b_node = self.owner_of(b_addr.ip());
        // the far end is bound when the first message arrives
        let b = b_node.map_or(End::Peer(NodeId(usize::MAX)), End::Peer);
        self.conns.insert(
            id,
            Conn {
                transport,
                a,
                a_addr,
                b,
                b_addr,
            },
        );
        if let End::Flow(n, f) = a {
            self.flow_conns.insert((n, f), id);
        }
        id
    }

    fn send_on(&mut self, conn: ConnId, from_a: bool, payload: Bytes) {
        let Some(c) = self.conns.get(&conn).cloned() else {
            return;
        };
        let (from, to) = if from_a {
            (c.a_addr, c.b_addr)
        } else {
            (c.b_addr, c.a_addr)
        };
        self.route(from, to, c.transport, Some((conn, from_a)), payload);
    }

    fn link(&self, a: NodeId, b: NodeId) -> Link {
        self.links
            .get(&(a, b))
            .copied()
            .unwrap_or(self.default_link)
    }

    fn route(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        transport: Transport,
        conn: Option<(ConnId, bool)>,
        payload: Bytes,
    ) {
        let first_line = if siproam_core::stun::is_stun(&payload) {
            "STUN".to_owned()
        } else {
            payload
                .split(|b| *b == b'\n')
                .next()
                .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
                .unwrap_or_default()
        };
        let src = self.owner_of(from.ip());
        let dst = self.owner_of(to.ip());
        let fate = match (src, dst) {
            (Some(s), Some(d)) => {
                let link = self.link(s, d);
                if !link.up || (conn.is_some() && self.no_streams.contains(&d)) {
                    Fate::Unreachable
                } else if !transport.is_reliable() && link.loss > 0.0 && self.rng.unit() < link.loss
                {
                    Fate::Lost
                } else {
                    self.seq += 1;
                    let at = self.now + link.latency;
                    self.queue.insert(
                        (at, self.seq),
                        InFlight {
                            to_node: d,
                            from,
                            to,
                            transport,
                            conn,
                            payload,
                        },
                    );
                    Fate::Delivered
                }
            }
            _ => Fate::Unreachable,
        };
        self.log.push(LogEntry {
            at: self.now,
            from,
            to,
            transport,
            first_line,
            fate,
        });
        if fate == Fate::Unreachable {
            if let Some((conn, _)) = conn {
                // a stream that cannot reach its peer fails
                if let Some(c) = self.conns.remove(&conn) {
                    let reason = FlowCloseReason::ConnectFailed;
                    self.close_end(c.a, reason);
                    self.close_end(c.b, reason);
                }
            }
        }
    }

    fn close_end(&mut self, end: End, reason: FlowCloseReason) {
        if let End::Flow(node, flow) = end {
            self.flow_conns.remove(&(node, flow));
            let now = self.now;
            if let Some(NodeKind::Endpoint { ep, .. }) =
                self.nodes.get_mut(node.0).map(|n| &mut n.kind)
            {
                ep.handle_flow_closed(now, flow, reason);
            }
            self.flush(node);
        }
    }

    fn break_conns(&mut self, pred: impl Fn(&Conn) -> bool) {
        let broken: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(id, _)| *id)
            .collect();
        for id in broken {
            if let Some(c) = self.conns.remove(&id) {
                self.close_end(c.a, FlowCloseReason::Reset);
                self.close_end(c.b, FlowCloseReason::Reset);
            }
        }
    }

    fn deliver(&mut self, m: InFlight) {
        // the destination may have lost the address meanwhile
        if self.owner_of(m.to.ip()) != Some(m.to_node) {
            return;
        }
        let now = self.now;
        let node = m.to_node;
        // bind the receiving end of a connection on its first message
        let mut flow = None;
        if let Some((conn, from_a)) = m.conn {
            let Some(c) = self.conns.get(&conn).cloned() else {
                return;
            };
            let (here, _) = if from_a { (c.b, c.a) } else { (c.a, c.b) };
            match here {
                End::Flow(_, f) => flow = Some(f),
                End::Peer(_) => {
                    if let Some(NodeKind::Endpoint { ep, .. }) =
                        self.nodes.get_mut(node.0).map(|n| &mut n.kind)
                    {
                        let f = ep.handle_flow_accepted(m.transport, m.to, m.from);
                        flow = Some(f);
                        if let Some(c) = self.conns.get_mut(&conn) {
                            if from_a {
                                c.b = End::Flow(node, f);
                            } else {
                                c.a = End::Flow(node, f);
                            }
                        }
                        self.flow_conns.insert((node, f), conn);
                    } else if let Some(c) = self.conns.get_mut(&conn) {
                        if from_a {
                            c.b = End::Peer(node);
                        } else {
                            c.a = End::Peer(node);
                        }
                    }
                }
            }
        }
        // RFC 5626 keep-alives on streams, as a transport layer handles
        // them: a ping is answered with a pong (unless the peer is told
        // not to), a pong is handed to the endpoint
        if let (Some((conn, from_a)), true) = (m.conn, m.payload.as_ref() == b"\r\n\r\n") {
            if !self.no_pong.contains(&node) {
                self.send_on(conn, !from_a, Bytes::from_static(b"\r\n"));
            }
            return;
        }
        if m.conn.is_some() && m.payload.as_ref() == b"\r\n" {
            if let (Some(f), Some(NodeKind::Endpoint { ep, .. })) =
                (flow, self.nodes.get_mut(node.0).map(|n| &mut n.kind))
            {
                ep.handle_pong(now, f);
                self.flush(node);
            }
            return;
        }
        // STUN on a peer's SIP UDP port, as an RFC 5626 edge answers it
        // (an endpoint node's core answers by itself)
        let to_peer = matches!(
            self.nodes.get(node.0).map(|n| &n.kind),
            Some(NodeKind::Peer { .. })
        );
        if to_peer && m.conn.is_none() && siproam_core::stun::is_stun(&m.payload) {
            self.peer_stun(node, &m);
            return;
        }
        match self.nodes.get_mut(node.0).map(|n| &mut n.kind) {
            Some(NodeKind::Endpoint { ep, .. }) => {
                match flow {
                    Some(f) => ep.handle_stream_message(now, f, m.payload),
                    None => ep.handle_datagram(now, m.to, m.from, m.payload),
                }
                self.flush(node);
            }
            Some(NodeKind::Peer { inbox }) => {
                if let Ok(message) = Message::parse(m.payload) {
                    inbox.push_back(Received {
                        at: now,
                        from: m.from,
                        to: m.to,
                        transport: m.transport,
                        conn: m.conn.map(|c| c.0),
                        message,
                    });
                }
            }
            None => {}
        }
    }

    /// A scripted peer got a STUN datagram: it is noted, and a Binding
    /// request is answered (unless the peer is told not to).
    fn peer_stun(&mut self, node: NodeId, m: &InFlight) {
        let Some(transaction) = siproam_core::stun::transaction_id(&m.payload) else {
            return;
        };
        // a Binding request: method 1, class request
        let request = m.payload.get(0..2) == Some(&[0, 1][..]);
        self.stun_seen.entry(node).or_default().push(StunDatagram {
            at: self.now,
            from: m.from,
            to: m.to,
            transaction,
            request,
            payload: m.payload.clone(),
        });
        if !request || self.no_stun.contains(&node) {
            return;
        }
        let mapped = self.stun_mapped.get(&node).copied().unwrap_or(m.from);
        let answer = siproam_core::stun::binding_success(transaction, mapped);
        self.route(m.to, m.from, Transport::Udp, None, answer);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let q = self.queue.keys().next().map(|k| k.0);
        let t = self
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Endpoint { ep, .. } => ep.poll_timeout().map(|t| t.0),
                NodeKind::Peer { .. } => None,
            })
            .min();
        match (q, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs everything due up to `until`, jumping over idle time; the clock
    /// ends at `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(next) = self.next_deadline() {
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for a span of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until a peer has received something (or `limit` passes);
    /// returns it.
    pub fn run_until_peer_receives(&mut self, peer: NodeId, limit: Duration) -> Option<Received> {
        let until = self.now + limit;
        loop {
            if let Some(r) = self.peer_recv(peer) {
                return Some(r);
            }
            let next = self.next_deadline()?;
            if next > until {
                self.now = until;
                return None;
            }
            self.now = self.now.max(next);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        // deliveries due
        while let Some((&key, _)) = self.queue.iter().next() {
            if key.0 > now {
                break;
            }
            if let Some(m) = self.queue.remove(&key) {
                self.deliver(m);
            }
        }
        // timers due
        for i in 0..self.nodes.len() {
            let due = matches!(self.nodes.get(i).map(|n| &n.kind), Some(NodeKind::Endpoint { ep, .. }) if ep.poll_timeout().is_some_and(|t| t.0 <= now));
            if due {
                if let Some(NodeKind::Endpoint { ep, .. }) =
                    self.nodes.get_mut(i).map(|n| &mut n.kind)
                {
                    ep.handle_timeout(now);
                }
                self.flush(NodeId(i));
            }
        }
    }
}

fn end_node(e: End) -> NodeId {
    match e {
        End::Flow(n, _) | End::Peer(n) => n,
    }
}
