//! Transports: UDP sockets, TCP and TLS listeners and connections.
//!
//! A [`TransportManager`] owns every socket of an endpoint. It moves whole
//! SIP messages as bytes and knows nothing of their meaning: the sans-IO
//! core parses what arrives ([`TransportEvent::Received`]) and says where
//! each message goes ([`SendTarget`]).
//!
//! - **Listeners** ([`TransportManager::listen`]): a UDP socket, or a TCP or
//!   TLS listening socket, bound to an address (port 0 picks a free one).
//! - **Connections** (TCP and TLS): opened by [`TransportManager::send`]
//!   when no open connection can be reused (RFC 3261 §18), or accepted by a
//!   listener. Each runs in its own task that frames the byte stream with
//!   [`siproam_sip::StreamFramer`], answers a keep-alive ping (`CRLFCRLF`)
//!   with a pong (`CRLF`) and closes the connection after an idle period.
//! - **Admission** (what anyone on the network can make a listener do is
//!   bounded): [`TransportConfig::max_connections`] overall and
//!   [`TransportConfig::max_connections_per_source`] per peer IP address;
//!   with the table full, a new connection takes the place of the oldest
//!   incoming one that has never carried a SIP message (never a pinned
//!   one), else it is refused. An incoming connection must bring a whole
//!   message within [`TransportConfig::first_message_timeout`], every
//!   message must arrive within [`TransportConfig::message_timeout`] of its
//!   first byte, and only whole messages (and keep-alives on a connection
//!   that has carried SIP) reset the idle timer, so a peer sending one byte
//!   at a time cannot hold a connection. Refusals, evictions and failed TLS
//!   handshakes are logged at most once per [`REFUSAL_LOG_INTERVAL`], with
//!   a count.
//! - **Events** ([`TransportEvents`]): received messages, connections opened
//!   and closed (with a typed [`CloseReason`]), pongs.
//! - **Network changes**: [`TransportManager::close_connection`],
//!   [`TransportManager::shutdown_streams`],
//!   [`TransportManager::restart_listener`] and [`source_address_for`].
//!
//! Every queue is bounded: a full event queue stops the reading of sockets
//! (TCP flow control pushes back on the peer, UDP datagrams are dropped by
//! the kernel), a full per-connection send queue makes
//! [`TransportManager::send`] fail with [`SendError::QueueFull`], and
//! [`TransportConfig::max_connections`] caps the connections (see
//! Admission above).
//!
//! Every method that opens sockets or spawns tasks must run inside a Tokio
//! runtime.

mod addr;
mod error;
mod listener;
mod queue;
mod sockopt;
mod stream;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use siproam_sip::{FramingError, Limits};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use addr::{source_address_for, AddressOracle, SystemAddresses};
pub use error::{ListenError, SendError, TlsConfigError};
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use sockopt::{
    TcpKeepalive, TcpKeepaliveError, TcpKeepaliveField, MAX_KEEPALIVE_COUNT, MAX_KEEPALIVE_SECS,
};
pub use tls::{TlsClientConfig, TlsServerConfig};

use stream::ConnShared;

/// The SIP transport: the core's own type, one for the whole stack.
pub use siproam_core::Transport;

/// Identifies a listener; stays the same across
/// [`TransportManager::restart_listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u64);

impl ListenerId {
    /// The number behind the id (unique within one manager).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The id of that number (as [`ListenerId::as_u64`] gave it).
    pub fn from_u64(n: u64) -> ListenerId {
        ListenerId(n)
    }
}

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}

/// Identifies a TCP or TLS connection (a flow, in RFC 5626 terms). Ids are
/// never reused within one manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The number behind the id (unique within one manager).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The id of that number (as [`ConnectionId::as_u64`] gave it).
    pub fn from_u64(n: u64) -> ConnectionId {
        ConnectionId(n)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "C{}", self.0)
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionDirection {
    /// This manager connected to the peer.
    Outgoing,
    /// The peer connected to one of this manager's listeners.
    Incoming,
}

/// Where [`TransportManager::send`] sends a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTarget {
    /// The transport to use.
    pub transport: Transport,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The local address to send from. UDP: the listener socket bound to
    /// this address (with port 0, any UDP listener on this IP address).
    /// TCP/TLS: only the IP address counts; a new connection binds it as
    /// its source address and a reused one must have it.
    pub local: Option<SocketAddr>,
    /// Send on this connection and no other (TCP/TLS; ignored for UDP).
    /// When it has closed, the send fails with
    /// [`SendError::ConnectionGone`] rather than opening another one.
    pub connection: Option<ConnectionId>,
    /// TLS: the name the server's certificate must carry. Without it the
    /// certificate must carry the remote IP address. An incoming TLS
    /// connection (whose peer was never authenticated) is reused only when
    /// this is `None`.
    pub server_name: Option<String>,
}

impl SendTarget {
    /// A target with no local address, connection or server name.
    pub fn new(transport: Transport, remote: SocketAddr) -> SendTarget {
        SendTarget {
            transport,
            remote,
            local: None,
            connection: None,
            server_name: None,
        }
    }

    /// Sends from this local address (see [`SendTarget::local`]).
    pub fn with_local(mut self, local: SocketAddr) -> SendTarget {
        self.local = Some(local);
        self
    }

    /// Sends on this connection only (see [`SendTarget::connection`]).
    pub fn with_connection(mut self, connection: ConnectionId) -> SendTarget {
        self.connection = Some(connection);
        self
    }

    /// Verifies the TLS server against this name (see
    /// [`SendTarget::server_name`]).
    pub fn with_server_name(mut self, name: impl Into<String>) -> SendTarget {
        self.server_name = Some(name.into());
        self
    }
}

/// The path a message went out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpenedFlow {
    /// The transport.
    pub transport: Transport,
    /// The local address (for a UDP socket bound to the wildcard address,
    /// the wildcard address).
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The connection (TCP/TLS), `None` for UDP.
    pub connection: Option<ConnectionId>,
}

/// A listener as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerInfo {
    /// Its id.
    pub id: ListenerId,
    /// Its transport.
    pub transport: Transport,
    /// The address asked for in [`TransportManager::listen`] (maybe port 0
    /// or the wildcard address).
    pub requested: SocketAddr,
    /// The address the socket is bound to (the real port).
    pub local: SocketAddr,
}

/// A TCP or TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Its id.
    pub id: ConnectionId,
    /// TCP or TLS.
    pub transport: Transport,
    /// The local address of the connection.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Who opened it.
    pub direction: ConnectionDirection,
    /// The listener that accepted it (incoming connections).
    pub listener: Option<ListenerId>,
}

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the connection.
    PeerClosed,
    /// The peer reset the connection (or it broke: reset, aborted, broken
    /// pipe).
    Reset,
    /// Another I/O error (including a TLS error after the handshake).
    Io(io::ErrorKind),
    /// The peer sent bytes that cannot be split into SIP messages.
    Framing(FramingError),
    /// No SIP message in either direction (nor, on a connection that has
    /// carried one, a keep-alive) for [`TransportConfig::idle_timeout`].
    Idle,
    /// An incoming connection brought no whole SIP message within
    /// [`TransportConfig::first_message_timeout`].
    FirstMessageTimeout,
    /// A message did not arrive whole within
    /// [`TransportConfig::message_timeout`] of its first byte.
    MessageTimeout,
    /// The connection table was full and a new connection took the place
    /// of this one, which had never carried a SIP message.
    Evicted,
    /// The keep-alive logic gave up on the flow (given by the caller of
    /// [`TransportManager::close_connection`]).
    KeepAliveTimeout,
    /// A request over it was answered 430 Flow Failed (RFC 5626 §11.5;
    /// given by the caller of [`TransportManager::close_connection`]).
    FlowFailed,
    /// Closed by [`TransportManager::close_connection`].
    Closed,
    /// Closed by [`TransportManager::shutdown_streams`].
    ShutDown,
    /// The manager was dropped.
    Stopped,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Reset => f.write_str("reset"),
            CloseReason::Io(kind) => write!(f, "I/O error: {kind}"),
            CloseReason::Framing(e) => write!(f, "framing error: {e}"),
            CloseReason::Idle => f.write_str("idle"),
            CloseReason::FirstMessageTimeout => f.write_str("no SIP message in time"),
            CloseReason::MessageTimeout => f.write_str("message not completed in time"),
            CloseReason::Evicted => f.write_str("evicted for a new connection"),
            CloseReason::KeepAliveTimeout => f.write_str("keep-alive timeout"),
            CloseReason::FlowFailed => f.write_str("flow failed (430)"),
            CloseReason::Closed => f.write_str("closed"),
            CloseReason::ShutDown => f.write_str("shut down"),
            CloseReason::Stopped => f.write_str("transport stopped"),
        }
    }
}

/// What happened on the transports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// One whole message (a datagram, or one message framed off a stream).
    /// UDP datagrams that are only CR and LF (keep-alives) are not
    /// reported; any other datagram is (STUN included: telling it apart is
    /// the caller's job).
    Received {
        /// The transport it came on.
        transport: Transport,
        /// The local address it came to (for a UDP socket bound to the
        /// wildcard address, the wildcard address).
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// The connection (TCP/TLS).
        connection: Option<ConnectionId>,
        /// The message's bytes.
        bytes: Bytes,
    },
    /// A connection was opened (by us, or accepted and, for TLS, after the
    /// handshake). Comes before any message received on it.
    ConnectionOpened {
        /// The connection.
        info: ConnectionInfo,
    },
    /// A connection closed; it is gone from the manager. Comes after every
    /// message received on it.
    ConnectionClosed {
        /// The connection.
        info: ConnectionInfo,
        /// Why.
        reason: CloseReason,
    },
    /// A keep-alive ping (`CRLFCRLF`) arrived on a connection that has
    /// carried SIP (it was answered with a pong at once); only with
    /// [`TransportConfig::report_pings`], at most one per connection per
    /// [`PING_REPORT_INTERVAL`].
    PingReceived {
        /// The connection.
        connection: ConnectionId,
    },
    /// A keep-alive pong (`CRLF`) arrived on a connection we opened.
    PongReceived {
        /// The connection.
        connection: ConnectionId,
    },
}

/// The receiving end of a manager's events (a bounded queue: while it is
/// full, sockets are not read).
#[derive(Debug)]
pub struct TransportEvents {
    rx: mpsc::Receiver<TransportEvent>,
}

impl TransportEvents {
    /// The next event; `None` once the manager and all its tasks are gone.
    pub async fn recv(&mut self) -> Option<TransportEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<TransportEvent> {
        self.rx.try_recv().ok()
    }

    /// Polls for the next event (for hand-written futures).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// Settings of a [`TransportManager`].
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Message size limits: a larger datagram is dropped, a larger message
    /// on a stream closes the connection
    /// ([`CloseReason::Framing`]), a larger send is refused.
    pub limits: Limits,
    /// Close a connection after this long without a SIP message in either
    /// direction, unless it is pinned ([`TransportManager::set_pinned`]).
    /// On a connection that has carried a SIP message, RFC 5626 keep-alives
    /// (a ping received, a pong received) count too; other bytes (a
    /// message still arriving, pings on a connection that never carried
    /// SIP) do not. `None`: never. Default 300 s.
    pub idle_timeout: Option<Duration>,
    /// An incoming connection (TLS: from the TCP accept) that has not
    /// brought a whole SIP message this long after it opened is closed
    /// ([`CloseReason::FirstMessageTimeout`]). `None`: no limit. Default
    /// 20 s.
    pub first_message_timeout: Option<Duration>,
    /// A message (either direction's framing: incoming bytes) must arrive
    /// whole within this long of its first byte, or the connection is
    /// closed ([`CloseReason::MessageTimeout`]); pinned connections too.
    /// `None`: no limit. Default 20 s.
    pub message_timeout: Option<Duration>,
    /// How long a TCP connect may take. Default 10 s.
    pub connect_timeout: Duration,
    /// How long a TLS handshake may take (both directions). Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Capacity of the event queue. Default 1024.
    pub event_capacity: usize,
    /// Messages queued per connection before sends fail with
    /// [`SendError::QueueFull`]. Default 64.
    pub send_queue: usize,
    /// Most TCP/TLS connections open at once (both directions, TLS
    /// handshakes included). When they are all open, a new connection
    /// (accepted or opened by a send) takes the place of the oldest
    /// incoming connection that has never carried a SIP message and is not
    /// pinned ([`CloseReason::Evicted`]); when there is none, an accepted
    /// connection is closed at once and a send fails with
    /// [`SendError::TooManyConnections`]. Default 1024.
    pub max_connections: usize,
    /// Most incoming connections from one IP address at once (TLS
    /// handshakes included); further accepted ones are closed at once.
    /// Default 64.
    pub max_connections_per_source: usize,
    /// When rebinding a listener finds its address still in use, wait this
    /// long and try once more. Default 10 ms.
    pub rebind_retry_delay: Duration,
    /// Certificate verification for outgoing TLS. `None`: the Mozilla root
    /// certificates of `webpki-roots`.
    pub tls_client: Option<TlsClientConfig>,
    /// Certificate and key for TLS listeners; without it TLS listeners
    /// cannot be opened.
    pub tls_server: Option<TlsServerConfig>,
    /// Tells whether an address is still on this host (used by
    /// [`TransportManager::restart_listener`]).
    pub address_oracle: Arc<dyn AddressOracle>,
    /// The kernel's TCP keep-alive on every TCP/TLS connection, opened or
    /// accepted (`SO_KEEPALIVE` with idle time, interval and probe
    /// count). `None` (the default): off.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Report keep-alive pings ([`TransportEvent::PingReceived`]) on
    /// connections that have carried SIP, at most one per connection per
    /// [`PING_REPORT_INTERVAL`], so a CRLF flood costs no more events
    /// than that. Off by default (the pongs are sent either way); an edge
    /// proxy that keeps its flows by what arrives on them turns it on.
    pub report_pings: bool,
    /// Where a copy of every message sent and received goes (`--trace`,
    /// `--pcap`); the default is the process's tap
    /// ([`crate::wiretap::install`]), if any. `None`: no copy, and no
    /// cost but one check per message.
    pub wiretap: Option<crate::wiretap::WireTap>,
}

/// At most one [`TransportEvent::PingReceived`] per connection this often.
pub const PING_REPORT_INTERVAL: Duration = Duration::from_secs(1);

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            limits: Limits::default(),
            idle_timeout: Some(Duration::from_secs(300)),
            first_message_timeout: Some(Duration::from_secs(20)),
            message_timeout: Some(Duration::from_secs(20)),
            connect_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            event_capacity: 1024,
            send_queue: 64,
            max_connections: 1024,
            max_connections_per_source: 64,
            rebind_retry_delay: Duration::from_millis(10),
            tls_client: None,
            tls_server: None,
            address_oracle: Arc::new(SystemAddresses),
            tcp_keepalive: None,
            report_pings: false,
            wiretap: crate::wiretap::global(),
        }
    }
}

/// Owns the sockets of an endpoint. Cheap to clone; when the last clone is
/// dropped every listener and connection closes.
#[derive(Debug, Clone)]
pub struct TransportManager {
    shared: Arc<Shared>,
    _guard: Arc<DropGuard>,
}

/// Cancels everything when the last handle goes.
#[derive(Debug)]
struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// State shared by the handles and the tasks.
/// A check on each received datagram: `(source IP, bytes) -> keep?`.
pub type DatagramFilter = Arc<dyn Fn(IpAddr, &[u8]) -> bool + Send + Sync>;

pub(crate) struct Shared {
    limits: Limits,
    deadlines: stream::Deadlines,
    connect_timeout: Duration,
    tls_handshake_timeout: Duration,
    send_queue: usize,
    max_connections: usize,
    max_per_source: usize,
    rebind_retry_delay: Duration,
    tcp_keepalive: Option<TcpKeepalive>,
    report_pings: bool,
    /// The copy of what is sent and received (see [`crate::wiretap`]).
    wiretap: Option<crate::wiretap::WireTap>,
    tls_connector: Option<tokio_rustls::TlsConnector>,
    tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    oracle: Arc<dyn AddressOracle>,
    events: mpsc::Sender<TransportEvent>,
    /// Cancelled when the manager is dropped.
    stop: CancellationToken,
    next_id: AtomicU64,
    /// Connections open or in their TLS handshake (each holds a
    /// [`StreamSlot`]).
    live_streams: Arc<AtomicUsize>,
    /// Incoming connections per peer IP address (each counted by a
    /// [`SourceSlot`]).
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Asked about every datagram as it is read (source, bytes): false
    /// drops it there, before it is copied or queued (admission control).
    datagram_filter: std::sync::OnceLock<DatagramFilter>,
    /// Rate-limited warnings.
    refused_log: LogLimiter,
    evicted_log: LogLimiter,
    tls_log: LogLimiter,
    /// Whether the deadline sweeper runs (see [`start_sweeper`]).
    sweeper_started: AtomicBool,
    state: Mutex<State>,
}

/// The wait for room in the event queue (see [`Shared::emit`]).
type EmitWait<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// How often the sweeper looks for connections past a deadline (or a
/// quarter of the shortest deadline, when that is shorter): a connection
/// closes at most this late.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Connections the sweeper checks before it lets other tasks run.
const SWEEP_CHUNK: usize = 512;

/// Starts the manager's deadline sweeper, once (with the first
/// connection; a manager without deadlines needs none): one task that
/// scans the connections every [`SWEEP_INTERVAL`] and closes those past
/// their first-message, message or idle deadline, rather than a timer in
/// every connection. It ends when the manager stops.
fn start_sweeper(shared: &Arc<Shared>) {
    let d = shared.deadlines;
    let Some(shortest) = [d.idle, d.first_message, d.message]
        .into_iter()
        .flatten()
        .min()
    else {
        return;
    };
    if shared.sweeper_started.swap(true, Ordering::AcqRel) {
        return;
    }
    let period = SWEEP_INTERVAL
        .min(shortest / 4)
        .max(Duration::from_millis(1));
    let weak = Arc::downgrade(shared);
    let stop = shared.stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = tokio::time::Instant::now();
            let mut after = None;
            loop {
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                after = shared.sweep(after, now);
                drop(shared);
                if after.is_none() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    });
}

/// How often at most a kind of refusal (connection refused, evicted, TLS
/// handshake failed) is logged; the line counts those in between.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Logs a kind of event at most once per interval, with how many happened
/// since the last line.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    /// When the last line was written, and the events since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one event; returns the count to log (this one included) when
    /// a line is due now.
    pub(crate) fn hit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let due = state
            .0
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        let count = state.1;
        *state = (Some(now), 0);
        Some(count)
    }
}

/// Why an accepted connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// [`TransportConfig::max_connections_per_source`] reached.
    PerSource,
    /// [`TransportConfig::max_connections`] reached and nothing to evict.
    Full,
}

#[derive(Debug, Default)]
struct State {
    listeners: BTreeMap<ListenerId, ListenerEntry>,
    connections: BTreeMap<ConnectionId, ConnEntry>,
    /// Incoming connections (TLS handshakes included) that have not
    /// carried a SIP message yet, oldest first: what may be evicted.
    unproven: BTreeMap<u64, Arc<ConnShared>>,
}

#[derive(Debug)]
struct ListenerEntry {
    info: ListenerInfo,
    token: CancellationToken,
    task: JoinHandle<()>,
    udp: Option<Arc<tokio::net::UdpSocket>>,
}

#[derive(Debug)]
struct ConnEntry {
    info: ConnectionInfo,
    /// What an outgoing TLS connection verified of its server.
    verified: tls::VerifiedServer,
    tx: Arc<queue::SendQueue>,
    shared: Arc<ConnShared>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .field("deadlines", &self.deadlines)
            .field("tls_client", &self.tls_connector.is_some())
            .field("tls_server", &self.tls_acceptor.is_some())
            .field("live_streams", &self.live_streams)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends an event if there is room now; else the wait for room (until
    /// the manager stops or nobody listens), boxed, so the task of every
    /// connection (each holds an `emit` in its state) does not carry that
    /// future's size, nor the event's.
    fn emit(&self, event: TransportEvent) -> Option<EmitWait<'_>> {
        let event = match self.events.try_send(event) {
            Ok(()) => return None,
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        Some(Box::pin(async {
            tokio::select! {
                _ = self.events.send(event) => {}
                () = self.stop.cancelled() => {}
            }
        }))
    }

    /// Closes every connection a deadline of which has passed: the
    /// connections in order of their id, at most [`SWEEP_CHUNK`] after
    /// `after`; where to go on from, `None` when the table is done.
    fn sweep(&self, after: Option<ConnectionId>, now: Instant) -> Option<ConnectionId> {
        let mut overdue = Vec::new();
        let mut last = None;
        {
            let state = self.state();
            let from = after.map_or(Bound::Unbounded, Bound::Excluded);
            for (id, entry) in state
                .connections
                .range((from, Bound::Unbounded))
                .take(SWEEP_CHUNK)
            {
                last = Some(*id);
                if let Some(reason) = entry.shared.overdue(&self.deadlines, now) {
                    overdue.push((entry.shared.clone(), reason));
                }
            }
        }
        for (conn, reason) in overdue {
            conn.close(reason);
        }
        last
    }

    /// The wire tap's hook: every message (and keep-alive) sent or
    /// received on any transport passes here; nothing is done without a
    /// tap.
    #[inline]
    fn tap(
        &self,
        direction: crate::wiretap::WireDirection,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &Bytes,
    ) {
        if let Some(tap) = &self.wiretap {
            tap.sip(direction, transport, local, remote, bytes);
        }
    }

    fn remove_connection(&self, id: ConnectionId) {
        self.state().connections.remove(&id);
    }

    /// A place for a new connection: a free one, else the one of the
    /// oldest incoming connection that never carried SIP and is not pinned
    /// (which is closed as [`CloseReason::Evicted`]).
    fn stream_slot(&self) -> Option<StreamSlot> {
        if let Some(slot) = StreamSlot::acquire(&self.live_streams, self.max_connections) {
            return Some(slot);
        }
        let mut state = self.state();
        let mut skipped = Vec::new();
        let mut found = None;
        while let Some((seq, conn)) = state.unproven.pop_first() {
            if conn.is_pinned() {
                skipped.push((seq, conn));
                continue;
            }
            if let Some(slot) = conn.take_slot() {
                conn.close(CloseReason::Evicted);
                found = Some(slot);
                break;
            }
        }
        state.unproven.extend(skipped);
        drop(state);
        if found.is_some() {
            if let Some(n) = self.evicted_log.hit(Instant::now()) {
                tracing::warn!(
                    evicted = n,
                    limit = self.max_connections,
                    "connection limit reached: {n} idle connection(s) that never carried SIP closed for new ones"
                );
            }
        }
        found
    }

    /// Admits a connection accepted from `ip`: its per-source count and a
    /// place in the table.
    fn admit(&self, ip: IpAddr) -> Result<(StreamSlot, SourceSlot), Refusal> {
        let source = SourceSlot::acquire(&self.sources, ip, self.max_per_source)
            .ok_or(Refusal::PerSource)?;
        let slot = self.stream_slot().ok_or(Refusal::Full)?;
        Ok((slot, source))
    }

    /// Logs a refusal (rate limited).
    fn refused(&self, refusal: Refusal, ip: IpAddr) {
        let Some(n) = self.refused_log.hit(Instant::now()) else {
            return;
        };
        match refusal {
            Refusal::PerSource => tracing::warn!(
                refused = n,
                last_source = %ip,
                limit = self.max_per_source,
                "{n} connection(s) refused: too many from one address (last from {ip})"
            ),
            Refusal::Full => tracing::warn!(
                refused = n,
                limit = self.max_connections,
                "{n} connection(s) refused: connection limit reached and none idle to close"
            ),
        }
    }

    /// Logs a failed TLS handshake (rate limited) with its reason and the
    /// peer's IP address.
    fn tls_failed(&self, direction: ConnectionDirection, ip: IpAddr, error: &dyn fmt::Display) {
        if let Some(n) = self.tls_log.hit(Instant::now()) {
            let side = match direction {
                ConnectionDirection::Incoming => "from",
                ConnectionDirection::Outgoing => "to",
            };
            tracing::warn!(
                failed = n,
                peer = %ip,
                "TLS handshake {side} {ip} failed: {error} ({n} failed since the last report)"
            );
        }
    }

    /// Forgets an incoming connection as a candidate for eviction.
    fn forget_unproven(&self, seq: u64) {
        self.state().unproven.remove(&seq);
    }
}

/// A place for one connection, counted against
/// [`TransportConfig::max_connections`]; freed on drop.
#[derive(Debug)]
pub(crate) struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn acquire(live: &Arc<AtomicUsize>, max: usize) -> Option<StreamSlot> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| StreamSlot(live.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One incoming connection counted against
/// [`TransportConfig::max_connections_per_source`]; freed on drop.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    fn acquire(
        sources: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<SourceSlot> {
        let mut map = sources.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl TransportManager {
    /// A manager with no sockets yet, and the receiving end of its events.
    pub fn new(config: TransportConfig) -> (TransportManager, TransportEvents) {
        let (tx, rx) = mpsc::channel(config.event_capacity.max(1));
        let client = match config.tls_client {
            Some(c) => Some(c),
            None => match TlsClientConfig::with_webpki_roots() {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "no default TLS client configuration");
                    None
                }
            },
        };
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            limits: config.limits,
            deadlines: stream::Deadlines {
                idle: config.idle_timeout,
                first_message: config.first_message_timeout,
                message: config.message_timeout,
            },
            connect_timeout: config.connect_timeout,
            tls_handshake_timeout: config.tls_handshake_timeout,
            send_queue: config.send_queue.max(1),
            max_connections: config.max_connections,
            max_per_source: config.max_connections_per_source,
            rebind_retry_delay: config.rebind_retry_delay,
            tcp_keepalive: config.tcp_keepalive,
            report_pings: config.report_pings,
            wiretap: config.wiretap,
            tls_connector: client.map(|c| tokio_rustls::TlsConnector::from(c.into_rustls())),
            tls_acceptor: config
                .tls_server
                .map(|s| tokio_rustls::TlsAcceptor::from(s.into_rustls())),
            oracle: config.address_oracle,
            events: tx,
            stop: stop.clone(),
            next_id: AtomicU64::new(1),
            live_streams: Arc::new(AtomicUsize::new(0)),
            sources: Arc::new(Mutex::new(HashMap::new())),
            datagram_filter: std::sync::OnceLock::new(),
            refused_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            evicted_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            tls_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            sweeper_started: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        });
        (
            TransportManager {
                shared,
                _guard: Arc::new(DropGuard(stop)),
            },
            TransportEvents { rx },
        )
    }

    /// Opens a listener: a UDP socket, or a TCP or TLS listening socket,
    /// bound to `addr` (port 0: a free port, see [`ListenerInfo::local`]).
    /// TCP/TLS listeners set `SO_REUSEADDR`; IPv6 sockets are IPv6-only.
    pub async fn listen(
        &self,
        transport: Transport,
        addr: SocketAddr,
    ) -> Result<ListenerInfo, ListenError> {
        if self.shared.stop.is_cancelled() {
            return Err(ListenError::ShutDown);
        }
        if transport == Transport::Tls && self.shared.tls_acceptor.is_none() {
            return Err(ListenError::NoTlsServerConfig);
        }
        let bound = listener::bind(transport, addr, self.shared.rebind_retry_delay)
            .await
            .map_err(|source| ListenError::Bind {
                transport,
                addr,
                source,
            })?;
        let id = ListenerId(self.shared.next_id());
        let info = self.start_listener(id, transport, addr, bound)?;
        tracing::info!(listener = %id, %transport, local = %info.local, "listening");
        Ok(info)
    }

    fn start_listener(
        &self,
        id: ListenerId,
        transport: Transport,
        requested: SocketAddr,
        bound: listener::Bound,
    ) -> Result<ListenerInfo, ListenError> {
        let local = bound.local_addr().map_err(|source| ListenError::Bind {
            transport,
            addr: requested,
            source,
        })?;
        let info = ListenerInfo {
            id,
            transport,
            requested,
            local,
        };
        let token = self.shared.stop.child_token();
        let (task, udp) = listener::spawn(self.shared.clone(), info, bound, token.clone());
        self.shared.state().listeners.insert(
            id,
            ListenerEntry {
                info,
                token,
                task,
                udp,
            },
        );
        Ok(info)
    }

    /// Closes a listener and waits until its socket is closed (connections
    /// it accepted stay open). `false` if there is no such listener.
    pub async fn close_listener(&self, id: ListenerId) -> bool {
        let Some(entry) = self.shared.state().listeners.remove(&id) else {
            return false;
        };
        stop_listener(entry).await;
        tracing::info!(listener = %id, "listener closed");
        true
    }

    /// Closes a listener and binds it again, keeping its id (connections it
    /// accepted stay open).
    ///
    /// A listener asked for on a literal address stays on that address: if
    /// the [`AddressOracle`] says the address is no longer on the host, the
    /// listener is closed and forgotten and the error is
    /// [`ListenError::AddressGone`] (never a silent move to the wildcard
    /// address). The port stays the one bound before; if it is still in use
    /// after one retry ([`TransportConfig::rebind_retry_delay`]) and the
    /// listener was asked for on port 0, another free port is taken. On any
    /// error the listener is closed and forgotten.
    pub async fn restart_listener(&self, id: ListenerId) -> Result<ListenerInfo, ListenError> {
        let Some(entry) = self.shared.state().listeners.remove(&id) else {
            return Err(ListenError::UnknownListener(id));
        };
        let old = entry.info;
        stop_listener(entry).await;
        if self.shared.stop.is_cancelled() {
            return Err(ListenError::ShutDown);
        }
        let ip = old.requested.ip();
        if !ip.is_unspecified() && !self.shared.oracle.is_local(ip) {
            tracing::info!(listener = %id, "listener address gone; listener closed");
            return Err(ListenError::AddressGone { ip });
        }
        let mut addr = old.requested;
        addr.set_port(old.local.port());
        let delay = self.shared.rebind_retry_delay;
        let bound = match listener::bind(old.transport, addr, delay).await {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && old.requested.port() == 0 => {
                tracing::info!(listener = %id, port = addr.port(), "port still in use; taking another");
                listener::bind(old.transport, old.requested, delay).await
            }
            other => other,
        }
        .map_err(|source| ListenError::Bind {
            transport: old.transport,
            addr,
            source,
        })?;
        let info = self.start_listener(id, old.transport, old.requested, bound)?;
        tracing::info!(listener = %id, transport = %info.transport, local = %info.local, "listener restarted");
        Ok(info)
    }

    /// Installs the check every received datagram passes where it is read
    /// (once; false if one is already installed).
    pub fn set_datagram_filter(&self, filter: DatagramFilter) -> bool {
        self.shared.datagram_filter.set(filter).is_ok()
    }

    /// Whether a datagram filter is installed (the datagrams delivered
    /// have passed it).
    pub fn has_datagram_filter(&self) -> bool {
        self.shared.datagram_filter.get().is_some()
    }

    /// The listeners, by id.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.shared
            .state()
            .listeners
            .values()
            .map(|l| l.info)
            .collect()
    }

    /// The open TCP/TLS connections, by id (oldest first).
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.shared
            .state()
            .connections
            .values()
            .filter(|c| !c.shared.is_closing())
            .map(|c| c.info)
            .collect()
    }

    /// One open TCP/TLS connection, by id (`None` once it is closing).
    pub fn connection(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        self.shared
            .state()
            .connections
            .get(&id)
            .filter(|c| !c.shared.is_closing())
            .map(|c| c.info)
    }

    /// Sends one message (queues it, for TCP/TLS) and tells which flow it
    /// went out on.
    ///
    /// UDP: from the listener socket chosen by [`SendTarget::local`] (without
    /// it: a wildcard-bound socket of the remote's address family, else the
    /// one on the source address the OS would pick, else any of that
    /// family).
    ///
    /// TCP/TLS: on [`SendTarget::connection`] if given; otherwise on the newest
    /// open connection of the same transport to the same remote address
    /// (and local IP, if given), whoever opened it (RFC 3261 §18); otherwise
    /// on a new connection. Two concurrent first sends to one peer may open
    /// two connections.
    pub async fn send(&self, target: &SendTarget, bytes: Bytes) -> Result<OpenedFlow, SendError> {
        let limit = self.shared.limits.max_message;
        if bytes.len() > limit {
            return Err(SendError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        if self.shared.stop.is_cancelled() {
            return Err(SendError::ShutDown);
        }
        match target.transport {
            Transport::Udp => self.send_udp(target, bytes).await,
            Transport::Tcp | Transport::Tls => self.send_stream(target, bytes).await,
        }
    }

    async fn send_udp(&self, target: &SendTarget, bytes: Bytes) -> Result<OpenedFlow, SendError> {
        let (socket, local) = self.pick_udp(target)?;
        socket
            .send_to(&bytes, target.remote)
            .await
            .map_err(SendError::Io)?;
        self.shared.tap(
            crate::wiretap::WireDirection::Sent,
            Transport::Udp,
            local,
            target.remote,
            &bytes,
        );
        Ok(OpenedFlow {
            transport: Transport::Udp,
            local,
            remote: target.remote,
            connection: None,
        })
    }

    fn pick_udp(
        &self,
        target: &SendTarget,
    ) -> Result<(Arc<tokio::net::UdpSocket>, SocketAddr), SendError> {
        let remote = target.remote;
        let state = self.shared.state();
        let mut candidates = state.listeners.values().filter_map(|l| {
            let socket = l.udp.as_ref()?;
            (l.info.local.is_ipv4() == remote.is_ipv4()).then_some((socket, l.info.local))
        });
        let found = match target.local {
            Some(want) => candidates
                .find(|(_, local)| *local == want || (want.port() == 0 && local.ip() == want.ip())),
            None => {
                let all: Vec<_> = candidates.collect();
                let wildcard = all.iter().find(|(_, local)| local.ip().is_unspecified());
                match (wildcard, all.as_slice()) {
                    (Some(w), _) => Some(*w),
                    (None, [one]) => Some(*one),
                    (None, many) => {
                        let source = source_address_for(remote).ok();
                        many.iter()
                            .find(|(_, local)| Some(local.ip()) == source)
                            .or_else(|| many.first())
                            .copied()
                    }
                }
            }
        };
        found
            .map(|(socket, local)| (socket.clone(), local))
            .ok_or(SendError::NoSocket {
                local: target.local,
            })
    }

    async fn send_stream(
        &self,
        target: &SendTarget,
        bytes: Bytes,
    ) -> Result<OpenedFlow, SendError> {
        if let Some(id) = target.connection {
            let (info, tx) = {
                let state = self.shared.state();
                let entry = state
                    .connections
                    .get(&id)
                    .filter(|c| !c.shared.is_closing())
                    .ok_or(SendError::ConnectionGone(id))?;
                (entry.info, entry.tx.clone())
            };
            if info.transport != target.transport {
                return Err(SendError::WrongTransport {
                    connection: id,
                    transport: info.transport,
                });
            }
            return enqueue(&tx, id, bytes).map(|()| flow_of(&info));
        }
        let mut bytes = bytes;
        while let Some((info, tx)) = self.find_reusable(target) {
            match tx.try_send(bytes) {
                Ok(()) => return Ok(flow_of(&info)),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(SendError::QueueFull(info.id))
                }
                Err(mpsc::error::TrySendError::Closed(b)) => {
                    // its task has ended but not yet removed it
                    bytes = b;
                    self.shared.remove_connection(info.id);
                }
            }
        }
        let (info, tx) = stream::connect(&self.shared, target).await?;
        enqueue(&tx, info.id, bytes).map(|()| flow_of(&info))
    }

    /// Opens a TCP or TLS connection for `target` without sending
    /// anything (or finds an open one that [`TransportManager::send`] would
    /// reuse) and tells its flow: its local address is what a Contact names
    /// when no listener of that transport exists (RFC 5626: the flow).
    pub async fn connect(&self, target: &SendTarget) -> Result<OpenedFlow, SendError> {
        if !target.transport.is_reliable() {
            return Err(SendError::NotAStream(target.transport));
        }
        if self.shared.stop.is_cancelled() {
            return Err(SendError::ShutDown);
        }
        if let Some((info, _)) = self.find_reusable(target) {
            return Ok(flow_of(&info));
        }
        let (info, _) = stream::connect(&self.shared, target).await?;
        Ok(flow_of(&info))
    }

    fn find_reusable(
        &self,
        target: &SendTarget,
    ) -> Option<(ConnectionInfo, Arc<queue::SendQueue>)> {
        let state = self.shared.state();
        state
            .connections
            .values()
            .rev()
            .find(|c| {
                c.info.transport == target.transport
                    && c.info.remote == target.remote
                    && target.local.is_none_or(|l| l.ip() == c.info.local.ip())
                    && !c.shared.is_closing()
                    && (target.transport != Transport::Tls
                        || match c.info.direction {
                            // the name verified, or one its certificate covers
                            ConnectionDirection::Outgoing => {
                                c.verified.serves(target.server_name.as_deref())
                            }
                            ConnectionDirection::Incoming => target.server_name.is_none(),
                        })
            })
            .map(|c| (c.info, c.tx.clone()))
    }

    /// The newest open outgoing TLS connection whose server's certificate
    /// covers `name` (a subject alternative name, wildcards as RFC 6125
    /// allows them), on `port` if given: a request for that domain may
    /// reuse it instead of opening another (RFC 5626 §4.3).
    pub fn tls_connection_serving(&self, name: &str, port: Option<u16>) -> Option<ConnectionInfo> {
        let state = self.shared.state();
        state
            .connections
            .values()
            .rev()
            .find(|c| {
                c.info.transport == Transport::Tls
                    && c.info.direction == ConnectionDirection::Outgoing
                    && !c.shared.is_closing()
                    && port.is_none_or(|p| p == c.info.remote.port())
                    && c.verified.serves(Some(name))
            })
            .map(|c| c.info)
    }

    /// Sends a keep-alive ping (`CRLFCRLF`, RFC 5626 §4.4.1) on a
    /// connection; the pong comes as [`TransportEvent::PongReceived`].
    pub fn ping(&self, connection: ConnectionId) -> Result<(), SendError> {
        let tx = self
            .shared
            .state()
            .connections
            .get(&connection)
            .filter(|c| !c.shared.is_closing())
            .map(|c| c.tx.clone())
            .ok_or(SendError::ConnectionGone(connection))?;
        enqueue(&tx, connection, Bytes::from_static(b"\r\n\r\n"))
    }

    /// Closes a connection; [`TransportEvent::ConnectionClosed`] follows
    /// with `reason`. Messages still queued for it are dropped. `false` if
    /// there is no such connection.
    pub fn close_connection(&self, connection: ConnectionId, reason: CloseReason) -> bool {
        match self.shared.state().connections.get(&connection) {
            Some(c) => {
                c.shared.close(reason);
                true
            }
            None => false,
        }
    }

    /// Closes every TCP and TLS connection ([`CloseReason::ShutDown`]);
    /// listeners stay open. Returns how many were closed; their
    /// [`TransportEvent::ConnectionClosed`] events follow.
    pub fn shutdown_streams(&self) -> usize {
        let state = self.shared.state();
        let mut n = 0;
        for c in state.connections.values() {
            if !c.shared.is_closing() {
                c.shared.close(CloseReason::ShutDown);
                n += 1;
            }
        }
        tracing::info!(connections = n, "stream connections shut down");
        n
    }

    /// Pins a connection (a flow in use: a registration, a call) so the
    /// idle timeout never closes it and it is never evicted, or unpins it. `false` if there is no
    /// such connection.
    pub fn set_pinned(&self, connection: ConnectionId, pinned: bool) -> bool {
        match self.shared.state().connections.get(&connection) {
            Some(c) => {
                c.shared.set_pinned(pinned);
                true
            }
            None => false,
        }
    }

    /// Whether `ip` is one of the host's addresses (the [`AddressOracle`]).
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.shared.oracle.is_local(ip)
    }

    /// The local address the OS would send from towards `remote` (see
    /// [`source_address_for`]).
    pub fn source_address_for(&self, remote: SocketAddr) -> io::Result<IpAddr> {
        source_address_for(remote)
    }
}

fn flow_of(info: &ConnectionInfo) -> OpenedFlow {
    OpenedFlow {
        transport: info.transport,
        local: info.local,
        remote: info.remote,
        connection: Some(info.id),
    }
}

fn enqueue(tx: &queue::SendQueue, id: ConnectionId, bytes: Bytes) -> Result<(), SendError> {
    tx.try_send(bytes).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => SendError::QueueFull(id),
        mpsc::error::TrySendError::Closed(_) => SendError::ConnectionGone(id),
    })
}

/// Stops a listener's task and waits until it (and so its socket) is gone.
async fn stop_listener(entry: ListenerEntry) {
    entry.token.cancel();
    drop(entry.udp);
    let _ = entry.task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_at_most_once_per_interval_with_a_count() {
        let limiter = LogLimiter::new(Duration::from_secs(5));
        let t0 = Instant::now();
        // the first one at once
        assert_eq!(limiter.hit(t0), Some(1));
        // a flood within the interval: silent, counted
        for i in 0..1000 {
            assert_eq!(limiter.hit(t0 + Duration::from_millis(i)), None);
        }
        // the next line after the interval carries the count
        assert_eq!(limiter.hit(t0 + Duration::from_secs(5)), Some(1001));
        assert_eq!(limiter.hit(t0 + Duration::from_secs(6)), None);
        assert_eq!(limiter.hit(t0 + Duration::from_secs(11)), Some(2));
    }

    #[test]
    fn per_source_counts_are_bounded_and_forgotten() {
        let sources = Arc::new(Mutex::new(HashMap::new()));
        let ip: IpAddr = "127.0.0.9".parse().unwrap_or(IpAddr::from([127, 0, 0, 9]));
        let a = SourceSlot::acquire(&sources, ip, 2);
        let b = SourceSlot::acquire(&sources, ip, 2);
        assert!(a.is_some() && b.is_some());
        assert!(SourceSlot::acquire(&sources, ip, 2).is_none());
        drop(a);
        let c = SourceSlot::acquire(&sources, ip, 2);
        assert!(c.is_some());
        drop((b, c));
        // no entry left behind per address that came and went
        assert!(sources.lock().map(|m| m.is_empty()).unwrap_or(false));
        assert!(SourceSlot::acquire(&sources, ip, 0).is_none());
        assert!(sources.lock().map(|m| m.is_empty()).unwrap_or(false));
    }
}
