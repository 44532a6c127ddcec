//! The running endpoint: one tokio task owns the sans-IO core and the
//! transports, feeds the core what arrives and when its timers are due,
//! and carries out what it asks (sends, connects). Commands come in over a
//! channel; core events go to an [`Application`] and then to the caller.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::{
    AccountConfig, AccountId, AccountRoutes, Config as CoreConfig, ConnectionView,
    Endpoint as Core, Event, FlowCloseReason, FlowId, ListenFailure, ListenPoint, ListenerView,
    MobilityAction, MobilityResult, NetworkView, RegistrarAddress, Target as CoreTarget,
    Transport as CoreTransport,
};
use siproam_core::{AccountIpChange, IpChangeParams, IpChangeReport, Ipv6Use};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::resolve::{
    Destination, FamilyPreference, HickoryDns, Resolver, StaticHosts, Target as Resolved,
};
use crate::transport::{
    CloseReason, ConnectionId, Direction, ListenError, ListenerId, ListenerInfo, Target, Transport,
    TransportConfig, TransportEvent, TransportEvents, TransportManager,
};

/// What runs on the core's events inside the endpoint task: a user agent
/// that answers requests, a registrar, a proxy. It may act on the core at
/// once; returning the event passes it on to [`EndpointHandle::events`].
pub trait Application: Send + 'static {
    /// Handles one event.
    fn on_event(&mut self, core: &mut Core, now: Instant, event: Event) -> Option<Event>;

    /// Gets the channel the endpoint's events go to (for reports the
    /// application makes itself, such as media statistics).
    fn attach(&mut self, events: mpsc::Sender<EndpointEvent>) {
        let _ = events;
    }

    /// A call command ([`EndpointHandle::call`] and friends); only a phone
    /// takes them.
    fn command(
        &mut self,
        core: &mut Core,
        now: Instant,
        cmd: crate::phone::PhoneCommand,
    ) -> Result<Option<siproam_core::CallId>, crate::phone::PhoneError> {
        let _ = (core, now, cmd);
        Err(siproam_core::CoreError::InvalidState.into())
    }

    /// Sets up the core before the first event (the limits on incoming
    /// calls a phone wants).
    fn configure(&mut self, core: &mut Core) {
        let _ = core;
    }
}

/// What a running endpoint reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// An event of the core (registration, call, request …).
    Core(Event),
    /// Media statistics of a call.
    Media(crate::phone::MediaReport),
    /// A stage of an IP change ([`EndpointHandle::ip_change`]).
    IpChange(IpChangeReport),
    /// What the network monitor saw ([`EndpointConfig::watch`]).
    Network(crate::netwatch::NetworkEvent),
    /// After a move of a call's media, the first packet from the peer
    /// arrived on the new address.
    MediaMoved {
        /// The call.
        call: siproam_core::CallId,
        /// The new local RTP address.
        local: SocketAddr,
        /// When.
        first_packet: Instant,
    },
}

/// Changes to an account's settings ([`EndpointHandle::modify_account`]);
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

/// The resolver's family preference for an IPv6 use.
pub(crate) fn family_preference(mode: Ipv6Use) -> FamilyPreference {
    match mode {
        Ipv6Use::Disabled => FamilyPreference::Ipv4Only,
        Ipv6Use::Enabled => FamilyPreference::PreferIpv4,
        Ipv6Use::Prefer => FamilyPreference::PreferIpv6,
        Ipv6Use::Only => FamilyPreference::Ipv6Only,
    }
}

/// A plain user agent: answers requests it gets the default way (OPTIONS
/// 200, anything else 405/481), refuses calls with 486, and passes every
/// event on.
#[derive(Debug, Default)]
pub struct UserAgent;

impl Application for UserAgent {
    fn on_event(&mut self, core: &mut Core, now: Instant, event: Event) -> Option<Event> {
        match &event {
            Event::IncomingRequest {
                tx: Some(tx),
                request,
                ..
            } => {
                if let Err(e) = core.respond_default(now, *tx, request) {
                    debug!("no default answer: {e}");
                }
            }
            // no call handling in a plain UA: busy
            Event::IncomingCall { call, .. } => {
                if let Err(e) = core.answer(now, *call, 486, None) {
                    debug!("could not refuse a call: {e}");
                }
            }
            _ => {}
        }
        Some(event)
    }
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
    /// be given once per address; see [`StaticHosts`]).
    pub hosts: Vec<(String, IpAddr)>,
    /// Detect network changes and handle them without being told
    /// (`None`: only [`EndpointHandle::handle_ip_change`] moves the
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

/// Errors of the endpoint's commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A listener could not be opened.
    #[error("listen: {0}")]
    Listen(#[from] ListenError),
    /// The registrar URI could not be resolved.
    #[error("resolve: {0}")]
    Resolve(#[from] crate::resolve::ResolveError),
    /// The registrar URI is not a valid SIP URI.
    #[error("invalid URI: {0}")]
    Uri(#[from] siproam_sip::UriError),
    /// No listener for the transport the registrar needs.
    #[error("no {0} listener for that transport")]
    NoListener(Transport),
    /// The local address towards the registrar could not be found.
    #[error("no route to the registrar: {0}")]
    NoRoute(#[source] std::io::Error),
    /// The core refused the command.
    #[error("core: {0}")]
    Core(#[from] siproam_core::CoreError),
    /// A call's RTP socket could not be opened (out of descriptors …).
    #[error("no RTP socket: {0}")]
    Media(#[source] std::io::Error),
    /// The endpoint task has stopped.
    #[error("endpoint stopped")]
    Stopped,
    /// The network namespace could not be entered.
    #[error("network namespace: {0}")]
    Namespace(#[source] std::io::Error),
    /// The OS's random generator failed.
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
}

impl From<crate::phone::PhoneError> for EndpointError {
    fn from(e: crate::phone::PhoneError) -> Self {
        match e {
            crate::phone::PhoneError::Core(e) => EndpointError::Core(e),
            crate::phone::PhoneError::Media(e) => EndpointError::Media(e),
        }
    }
}

/// Moves the calling thread into the network namespace at `path`.
#[cfg(target_os = "linux")]
fn enter_netns(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: setns with a valid descriptor of a network namespace file
    // changes only this thread's network namespace.
    #[allow(unsafe_code)]
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
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
}

enum Command {
    Register(
        AccountSpec,
        oneshot::Sender<Result<AccountId, EndpointError>>,
    ),
    Unregister(AccountId, oneshot::Sender<Result<(), EndpointError>>),
    Modify(
        AccountId,
        AccountChanges,
        bool,
        oneshot::Sender<Result<(), EndpointError>>,
    ),
    Call {
        uri: String,
        from: String,
        via: Option<String>,
        reply: oneshot::Sender<Result<siproam_core::CallId, EndpointError>>,
    },
    Phone(
        crate::phone::PhoneCommand,
        oneshot::Sender<Result<(), EndpointError>>,
    ),
    IpChange(Box<IpChangeParams>, oneshot::Sender<()>),
    Listeners(oneshot::Sender<Vec<ListenerInfo>>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on a running endpoint.
#[derive(Debug)]
pub struct EndpointHandle {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<EndpointEvent>,
}

impl EndpointHandle {
    /// Starts an endpoint: opens the listeners, then runs until shut down.
    pub async fn start(
        config: EndpointConfig,
        mut app: Box<dyn Application>,
    ) -> Result<EndpointHandle, EndpointError> {
        let (transports, transport_events) = TransportManager::new(config.transport.clone());
        let mut core_config = config.core.clone();
        // identifiers from the OS's secure generator (the seed is for the
        // simulator's replayable runs only)
        let os_key = crate::random::os_seed()?;
        core_config.entropy.get_or_insert(os_key);
        let mut core = Core::new(core_config);
        // datagrams over their source's budget are dropped as they are read
        let admission = core.admission();
        transports.set_datagram_filter(std::sync::Arc::new(move |ip, data: &[u8]| {
            admission.admit(now(), ip, data)
        }));
        for (t, addr) in &config.listen {
            let info = transports.listen(*t, *addr).await?;
            core.add_listen_point(ListenPoint {
                transport: to_core(info.transport),
                addr: info.local,
            });
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(4096);
        app.attach(ev_tx.clone());
        app.configure(&mut core);
        let driver = Driver {
            core,
            transports,
            app,
            resolver: Resolver::new(StaticHosts::new(HickoryDns::from_system(), &config.hosts)),
            net: match &config.watch {
                Some(w) => match crate::netwatch::spawn(w.resync) {
                    Ok(rx) => Some(rx),
                    Err(e) => {
                        tracing::warn!("network monitor: {e}; the source addresses are still checked every {:?}", w.resync);
                        None
                    }
                },
                None => None,
            },
            watch: config.watch.clone(),
            flows: HashMap::new(),
            connections: HashMap::new(),
            pending: HashMap::new(),
            close_when_connected: std::collections::HashSet::new(),
            backlog: HashMap::new(),
            retiring: Vec::new(),
            server_names: HashMap::new(),
            events: ev_tx,
            rng: crate::random::os_u64()? | 1,
        };
        tokio::spawn(driver.run(cmd_rx, transport_events));
        Ok(EndpointHandle {
            commands: cmd_tx,
            events: ev_rx,
        })
    }

    /// Starts an endpoint inside the Linux network namespace at
    /// `ns_path` (`/var/run/netns/NAME`): on a thread of its own that
    /// entered the namespace, with its own runtime, so every socket it
    /// opens (listeners, connections, RTP, netlink) lives there. The handle
    /// works from any runtime; the thread lives until the process ends.
    /// For multi-namespace tests and benchmarks; needs the right to
    /// `setns` (root).
    #[cfg(target_os = "linux")]
    pub fn start_in_netns(
        ns_path: &std::path::Path,
        config: EndpointConfig,
        app: Box<dyn Application>,
    ) -> Result<EndpointHandle, EndpointError> {
        let path = ns_path.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("siproam-netns".into())
            .spawn(move || {
                let setup = enter_netns(&path).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                let rt = match setup {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(EndpointError::Namespace(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match EndpointHandle::start(config, app).await {
                        Ok(h) => {
                            let _ = tx.send(Ok(h));
                            // the driver runs on this thread; after its
                            // shutdown the thread idles until the process
                            // ends
                            std::future::pending::<()>().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(EndpointError::Namespace)?;
        let handle = rx.recv().map_err(|_| EndpointError::Stopped)??;
        Ok(handle)
    }

    /// Starts registering an account.
    pub async fn register(&self, spec: AccountSpec) -> Result<AccountId, EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Register(spec, tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// Removes an account's binding.
    pub async fn unregister(&self, account: AccountId) -> Result<(), EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Unregister(account, tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// Changes an account's settings. Nothing is sent: the next REGISTER
    /// (its refresh, a retry, a network change) carries them, so a change
    /// made while the network is going away never fires a REGISTER on a
    /// dead flow (PJSIP's `disable_reg_on_modify`, always on). Use
    /// [`EndpointHandle::reregister`] to send one now.
    pub async fn modify_account(
        &self,
        account: AccountId,
        changes: AccountChanges,
    ) -> Result<(), EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Modify(account, changes, false, tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// Sends an account's REGISTER now (with its current settings), over
    /// its flow or a new one; refused while one is pending.
    pub async fn reregister(&self, account: AccountId) -> Result<(), EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Modify(
                account,
                AccountChanges::default(),
                true,
                tx,
            ))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// The listeners as bound (real ports for port 0).
    pub async fn listeners(&self) -> Result<Vec<ListenerInfo>, EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Listeners(tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)
    }

    /// The next event the application passed on (`None` once stopped).
    pub async fn next_event(&mut self) -> Option<EndpointEvent> {
        self.events.recv().await
    }

    /// Places a call (the application must be a [`crate::Phone`]): to
    /// `uri`, from the address of record `from`, through the proxy `via`
    /// (a SIP URI) or straight to the URI's host.
    pub async fn call(
        &self,
        uri: &str,
        from: &str,
        via: Option<&str>,
    ) -> Result<siproam_core::CallId, EndpointError> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Call {
            uri: uri.to_owned(),
            from: from.to_owned(),
            via: via.map(str::to_owned),
            reply: tx,
        };
        self.commands
            .send(cmd)
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// Moves the endpoint to a new local address (a network change), stage
    /// by stage, each reported as [`EndpointEvent::IpChange`]: stream
    /// flows shut down, listeners opened on the new address, every account
    /// re-registered with the new Contact, every confirmed call refreshed
    /// (new Contact, Via and SDP; media re-opened), old listeners closed.
    pub async fn ip_change(&self, ip: std::net::IpAddr) -> Result<(), EndpointError> {
        self.handle_ip_change(IpChangeParams::new(ip)).await
    }

    /// An IP change with every knob ([`IpChangeParams`]). Changes are
    /// handled one at a time: those asked for while one runs are queued,
    /// and when it completes they are merged into one change with the
    /// newest parameters (each caller returns when that one completes).
    pub async fn handle_ip_change(&self, params: IpChangeParams) -> Result<(), EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::IpChange(Box::new(params), tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)
    }

    /// Answers, hangs up, holds or resumes a call.
    pub async fn phone(&self, cmd: crate::phone::PhoneCommand) -> Result<(), EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Phone(cmd, tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// Stops the endpoint (sockets close; bindings are not removed:
    /// unregister first for that).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The driver's end of a core flow.
#[derive(Debug, Clone, Copy)]
enum FlowPath {
    Connection(ConnectionId),
}

struct Driver {
    core: Core,
    transports: TransportManager,
    app: Box<dyn Application>,
    resolver: Resolver<StaticHosts<HickoryDns>>,
    /// Automatic detection, when on.
    watch: Option<WatchConfig>,
    /// The network monitor's events (taken by the run loop).
    net: Option<mpsc::UnboundedReceiver<crate::netwatch::MonitorMsg>>,
    /// core flow → connection (TCP/TLS)
    flows: HashMap<FlowId, FlowPath>,
    /// connection → core flow
    connections: HashMap<ConnectionId, FlowId>,
    /// messages waiting for their flow's connection to open
    pending: HashMap<FlowId, VecDeque<Bytes>>,
    /// flows a change closed before their connect was reported
    close_when_connected: std::collections::HashSet<FlowId>,
    /// messages waiting for room in their connection's send queue, in order
    backlog: HashMap<FlowId, VecDeque<Bytes>>,
    /// Old UDP listeners after an IP change, still receiving answers to
    /// requests sent before it, until their deadline.
    retiring: Vec<(tokio::time::Instant, crate::transport::ListenerId)>,
    /// TLS server names by address (from resolution)
    server_names: HashMap<SocketAddr, String>,
    events: mpsc::Sender<EndpointEvent>,
    rng: u64,
}

enum Connected {
    Done(
        FlowId,
        Result<crate::transport::Flow, crate::transport::SendError>,
    ),
}

pub(crate) fn to_core(t: Transport) -> CoreTransport {
    match t {
        Transport::Udp => CoreTransport::Udp,
        Transport::Tcp => CoreTransport::Tcp,
        Transport::Tls => CoreTransport::Tls,
    }
}

pub(crate) fn from_core(t: CoreTransport) -> Transport {
    match t {
        CoreTransport::Udp => Transport::Udp,
        CoreTransport::Tcp => Transport::Tcp,
        CoreTransport::Tls => Transport::Tls,
    }
}

fn close_reason(r: &CloseReason) -> FlowCloseReason {
    match r {
        CloseReason::PeerClosed => FlowCloseReason::PeerClosed,
        CloseReason::Reset | CloseReason::Io(_) => FlowCloseReason::Reset,
        CloseReason::Framing(_) => FlowCloseReason::FramingError,
        CloseReason::Idle => FlowCloseReason::Idle,
        CloseReason::KeepAliveTimeout => FlowCloseReason::KeepAliveTimeout,
        _ => FlowCloseReason::Local,
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    async fn run(
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
            let deadline = self
                .core
                .poll_timeout()
                .map(|(at, _)| tokio::time::Instant::from_std(at));
            let retire_at = self.retiring.iter().map(|(at, _)| *at).min();
            tokio::select! {
                msg = async { match net.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => match msg {
                    Some(crate::netwatch::MonitorMsg::Event(ev)) => {
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
                    Some(Command::IpChange(mut params, reply)) => {
                        // changes queued behind this one are merged into
                        // it: the newest parameters win, every caller hears
                        // the one completion, other commands follow in order
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
                                return;
                            }
                            self.command(cmd).await;
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
                _ = sleep_until(deadline) => self.core.handle_timeout(now()),
                // a full connection queue drains while we wait a moment
                _ = tokio::time::sleep(std::time::Duration::from_millis(2)), if !self.backlog.is_empty() => {
                    self.flush_backlog().await;
                }
            }
            self.drain(&conn_tx).await;
        }
    }

    fn random(&mut self) -> u32 {
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
            Command::Call {
                uri,
                from,
                via,
                reply,
            } => {
                let r = self.place_call(uri, from, via).await;
                let _ = reply.send(r);
            }
            Command::Phone(cmd, reply) => {
                let r = self
                    .app
                    .command(&mut self.core, now(), cmd)
                    .map(|_| ())
                    .map_err(EndpointError::from);
                let _ = reply.send(r);
            }
            Command::IpChange(params, reply) => {
                self.ip_change(*params).await;
                let _ = reply.send(());
            }
            Command::Listeners(reply) => {
                let _ = reply.send(self.transports.listeners());
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Resolves a SIP URI to every target, in order, with `family`.
    async fn resolve_targets(
        &mut self,
        uri_text: &str,
        family: FamilyPreference,
    ) -> Result<Vec<Resolved>, EndpointError> {
        let uri = siproam_sip::Uri::parse(uri_text)?;
        let dest = Destination::from_uri(&uri)?;
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

    /// The core's target for a resolved one: the local address to send
    /// from and advertise is a listener of the target's family (its own
    /// address, or the OS's source address towards the target for a
    /// wildcard listener, or `local_ip` when given).
    fn core_target(
        &mut self,
        target: &Resolved,
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
            .ok_or(EndpointError::NoListener(target.transport))?;
        let ip = match local_ip {
            Some(ip) => ip,
            None if listener.local.ip().is_unspecified() => self
                .transports
                .source_address_for(target.addr)
                .map_err(EndpointError::NoRoute)?,
            None => listener.local.ip(),
        };
        if target.transport == Transport::Tls {
            self.server_names
                .insert(target.addr, target.server_name.clone());
        }
        Ok(CoreTarget {
            transport: to_core(target.transport),
            remote: target.addr,
            local: Some(SocketAddr::new(ip, listener.local.port())),
        })
    }

    /// For a TCP/TLS target when no listener of that transport exists (of
    /// the target's family): the connection the account will register
    /// over, to be opened first so that its local address (and port) can
    /// be the Contact (RFC 5626: the flow). A Contact naming another
    /// transport's listener would send the registrar's requests to a port
    /// nothing of ours listens on for them. `None`: a listener exists.
    fn contact_connection(&self, target: &CoreTarget) -> Option<Target> {
        let transport = from_core(target.transport);
        if !transport.is_stream() {
            return None;
        }
        let has_listener = self.transports.listeners().iter().any(|l| {
            l.transport == transport
                && l.local.is_ipv4() == target.remote.is_ipv4()
                && !self.retiring.iter().any(|(_, id)| *id == l.id)
        });
        if has_listener {
            return None;
        }
        let mut t = Target::new(transport, target.remote);
        if let Some(mut l) = target.local.filter(|l| !l.ip().is_unspecified()) {
            l.set_port(0);
            t = t.with_local(l);
        }
        if transport == Transport::Tls {
            let name = self
                .server_names
                .get(&target.remote)
                .cloned()
                .unwrap_or_else(|| target.remote.ip().to_string());
            t = t.with_server_name(name);
        }
        Some(t)
    }

    /// The first of `targets` we can reach from a listener (the error of
    /// the first one when none can be).
    fn first_usable(&mut self, targets: &[Resolved]) -> Result<CoreTarget, EndpointError> {
        let mut first_error = None;
        for t in targets {
            match self.core_target(t, None) {
                Ok(ct) => return Ok(ct),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(EndpointError::Stopped))
    }

    async fn place_call(
        &mut self,
        uri: String,
        from: String,
        via: Option<String>,
    ) -> Result<siproam_core::CallId, EndpointError> {
        let hop = via.unwrap_or_else(|| uri.clone());
        let family = family_preference(
            self.core
                .routes_for_uri(&from)
                .map_or(Ipv6Use::Enabled, |r| r.sip),
        );
        let targets = self.resolve_targets(&hop, family).await?;
        let target = self.first_usable(&targets)?;
        if let Some(local) = target.local {
            self.core.note_local_ip(local.ip());
        }
        let cmd = crate::phone::PhoneCommand::Call { uri, from, target };
        match self.app.command(&mut self.core, now(), cmd)? {
            Some(id) => Ok(id),
            None => Err(EndpointError::Core(siproam_core::CoreError::InvalidState)),
        }
    }

    /// What the core needs to see of the network: the source address
    /// towards each remote it names (and each connection's peer), which
    /// addresses are this host's, the listeners (not the lingering ones)
    /// and, for a change, the stream connections.
    fn network_view(&self, extra: Option<IpAddr>, connections: bool) -> NetworkView {
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
    async fn check_network(&mut self) {
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

    /// A change: the core decides each stage (`siproam_core` mobility);
    /// the driver does the socket work it asks for.
    async fn ip_change(&mut self, params: IpChangeParams) {
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
            MobilityAction::CloseConnections(ids) => {
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
                listened(self.transports.listen(from_core(transport), addr).await)
            }
            MobilityAction::RestartListener { listener } => listened(
                self.transports
                    .restart_listener(ListenerId::from_u64(listener))
                    .await,
            ),
            MobilityAction::CloseFlow(flow) => {
                match self.flows.get(&flow) {
                    Some(FlowPath::Connection(conn)) => {
                        self.transports
                            .close_connection(*conn, CloseReason::ShutDown);
                    }
                    // its connect (and first message) is still being
                    // reported: closed as soon as it is
                    None => {
                        self.close_when_connected.insert(flow);
                    }
                }
                MobilityResult::Done
            }
            MobilityAction::Connect {
                transport,
                remote,
                local,
            } => {
                let mut t = Target::new(from_core(transport), remote).with_local(local);
                if transport == CoreTransport::Tls {
                    let name = self
                        .server_names
                        .get(&remote)
                        .cloned()
                        .unwrap_or_else(|| remote.ip().to_string());
                    t = t.with_server_name(name);
                }
                match self.transports.clone().connect(&t).await {
                    Ok(flow) => MobilityResult::Connected(flow.local),
                    Err(e) => {
                        debug!("connect for the Contact failed: {e}");
                        MobilityResult::ConnectFailed
                    }
                }
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

    async fn register(&mut self, spec: AccountSpec) -> Result<AccountId, EndpointError> {
        // every address of the registrar the account's IPv6 use allows:
        // the first reachable one now, the others for a family switch
        let candidates = self
            .resolve_targets(&spec.registrar, family_preference(spec.ipv6_sip))
            .await?;
        let mut core_target = self.first_usable(&candidates)?;
        if let Some(t) = self.contact_connection(&core_target) {
            // opened apart from `self`: the driver's future stays Send
            match self.transports.clone().connect(&t).await {
                Ok(flow) => core_target.local = Some(flow.local),
                // the REGISTER's own connect fails the same way and says so
                Err(e) => debug!("connect for the Contact failed: {e}"),
            }
        }
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
        cfg.password = spec.password;
        cfg.expires = spec.expires;
        let id = self.core.register(now(), cfg);
        // every TLS address's server name, for a later switch of family
        for c in candidates.iter().filter(|c| c.transport == Transport::Tls) {
            self.server_names.insert(c.addr, c.server_name.clone());
        }
        let routes = AccountRoutes {
            aor: spec.aor,
            registrar: candidates
                .iter()
                .map(|c| RegistrarAddress {
                    transport: to_core(c.transport),
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
                if self.transports.has_datagram_filter() {
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
                    None => self.accept(conn, transport, local, remote),
                };
                self.core.handle_stream_message(now, flow, bytes);
            }
            TransportEvent::Received { .. } => {}
            TransportEvent::ConnectionOpened { info } => {
                if info.direction == Direction::Incoming && !self.connections.contains_key(&info.id)
                {
                    self.accept(info.id, info.transport, info.local, info.remote);
                }
            }
            TransportEvent::ConnectionClosed { info, reason } => {
                if let Some(flow) = self.connections.remove(&info.id) {
                    self.flows.remove(&flow);
                    self.pending.remove(&flow);
                    self.backlog.remove(&flow);
                    self.core
                        .handle_flow_closed(now, flow, close_reason(&reason));
                }
            }
            TransportEvent::PongReceived { .. } => {}
        }
    }

    fn accept(
        &mut self,
        conn: ConnectionId,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> FlowId {
        let flow = self
            .core
            .handle_flow_accepted(to_core(transport), local, remote);
        self.connections.insert(conn, flow);
        self.flows.insert(flow, FlowPath::Connection(conn));
        flow
    }

    async fn connected(
        &mut self,
        flow: FlowId,
        result: Result<crate::transport::Flow, crate::transport::SendError>,
    ) {
        if self.close_when_connected.remove(&flow) {
            if let Ok(f) = &result {
                if let Some(conn) = f.connection {
                    self.transports
                        .close_connection(conn, CloseReason::ShutDown);
                }
            }
            self.pending.remove(&flow);
            self.core
                .handle_flow_closed(now(), flow, FlowCloseReason::Local);
            return;
        }
        match result {
            Ok(f) => {
                if let Some(conn) = f.connection {
                    self.connections.insert(conn, flow);
                    self.flows.insert(flow, FlowPath::Connection(conn));
                    self.core.handle_flow_established(flow, f.local);
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
    }

    /// Carries out what the core asked, and hands its events on.
    async fn drain(&mut self, conn_tx: &mpsc::UnboundedSender<Connected>) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.core.poll_transmit() {
                progressed = true;
                self.transmit(t, conn_tx).await;
            }
            while let Some(ev) = self.core.poll_event() {
                progressed = true;
                let at = now();
                if let Event::IpChange(r) = ev {
                    let _ = self.events.try_send(EndpointEvent::IpChange(r));
                    continue;
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
        let transport = from_core(t.transport);
        if transport == Transport::Udp {
            let local = self.udp_local(t.local, t.remote);
            let mut target = Target::new(transport, t.remote);
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
                let mut target = Target::new(transport, t.remote);
                if let Some(l) = t.local.filter(|l| !l.ip().is_unspecified()) {
                    target = target.with_local(l);
                }
                if transport == Transport::Tls {
                    let name = self
                        .server_names
                        .get(&t.remote)
                        .cloned()
                        .unwrap_or_else(|| t.remote.ip().to_string());
                    target = target.with_server_name(name);
                }
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
        let Some(info) = self
            .transports
            .connections()
            .into_iter()
            .find(|c| c.id == conn)
        else {
            return true; // closed meanwhile: its close event tells the core
        };
        let target = Target::new(info.transport, info.remote).with_connection(conn);
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending::<()>().await,
    }
}

/// The core's view of a listener.
fn listener_view(l: ListenerInfo) -> ListenerView {
    ListenerView {
        id: l.id.as_u64(),
        transport: to_core(l.transport),
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
