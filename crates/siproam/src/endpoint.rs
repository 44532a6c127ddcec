//! The running endpoint: one tokio task owns the sans-IO core and the
//! transports, feeds the core what arrives and when its timers are due,
//! and carries out what it asks (sends, connects). Commands come in over a
//! channel; core events go to an [`Application`] and then to the caller.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::{
    AccountConfig, AccountId, Config as CoreConfig, Endpoint as Core, Event, FlowCloseReason,
    FlowId, ListenPoint, Target as CoreTarget, Transport as CoreTransport,
};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::resolve::{
    Destination, FamilyPreference, HickoryDns, Resolver, StaticHosts, Target as Resolved,
};
use crate::transport::{
    CloseReason, ConnectionId, Direction, ListenError, ListenerInfo, Target, Transport,
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

/// What [`EndpointHandle::handle_ip_change`] does. The defaults are
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
    pub calls: Option<Vec<siproam_core::CallId>>,
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

    /// The resolver's family preference for this mode.
    pub fn family_preference(self) -> FamilyPreference {
        match self {
            Ipv6Use::Disabled => FamilyPreference::Ipv4Only,
            Ipv6Use::Enabled => FamilyPreference::PreferIpv4,
            Ipv6Use::Prefer => FamilyPreference::PreferIpv6,
            Ipv6Use::Only => FamilyPreference::Ipv6Only,
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

/// One stage of an IP change (`cli.md`'s `ip_change` event).
#[derive(Debug, Clone, PartialEq)]
pub struct IpChangeReport {
    /// `started`, `shutdown_transports`, `restart_listener`,
    /// `shutdown_registration_flow`, `update_contact`, `refresh_calls`,
    /// `completed`.
    pub stage: &'static str,
    /// `ok`, or what went wrong.
    pub status: String,
    /// Milliseconds since `started`.
    pub elapsed_ms: f64,
    /// The account the stage is about.
    pub account: Option<u32>,
    /// The call the stage is about.
    pub call: Option<u32>,
    /// The transport the stage is about.
    pub transport: Option<Transport>,
    /// For `restart_listener`: the new listener's address.
    pub address: Option<SocketAddr>,
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
            accounts: HashMap::new(),
            local_ip: None,
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

/// An account as the driver sees it: the registrar's addresses in every
/// family (for a switch between IPv4 and IPv6) and the IPv6 modes.
#[derive(Debug, Clone)]
struct AccountRoute {
    aor: String,
    candidates: Vec<Resolved>,
    sip: Ipv6Use,
    media: Ipv6Use,
    ip_change: Option<AccountIpChange>,
    /// The local address the account registers from, as last set (at
    /// registration, and by each change): what detection compares with.
    local_ip: Option<IpAddr>,
    /// The Contact last registered (`None` right after a change we made):
    /// a different one without a change of ours is a NAT rebinding learnt
    /// from `received`/`rport`.
    contact: Option<String>,
}

impl AccountRoute {
    /// The registrar's address for `transport` in `ip`'s family.
    fn candidate(&self, transport: Transport, ip: IpAddr) -> Option<&Resolved> {
        self.candidates
            .iter()
            .find(|c| c.transport == transport && c.addr.is_ipv4() == ip.is_ipv4())
    }

    /// Whether `addr` is one of the registrar's addresses.
    fn is_registrar(&self, transport: Transport, addr: SocketAddr) -> bool {
        self.candidates
            .iter()
            .any(|c| c.transport == transport && c.addr == addr)
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
    /// What the driver knows of each account beyond the core's view.
    accounts: HashMap<AccountId, AccountRoute>,
    /// The endpoint's address as last set (first registration or call,
    /// then each change): what detection compares calls with.
    local_ip: Option<IpAddr>,
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
                        self.ip_change(&params).await;
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

    /// The core's move of one call, then the application's part of it
    /// (its media, re-offered or re-bound) unless the core says nothing
    /// is to be done.
    fn move_call(
        &mut self,
        now: Instant,
        call: siproam_core::CallId,
        mv: siproam_core::CallMove,
        media_ip: Option<IpAddr>,
    ) -> Result<(), crate::phone::PhoneError> {
        let action = self.core.move_call(now, call, mv)?;
        if action == siproam_core::CallMoveAction::Nothing {
            return Ok(());
        }
        let cmd = crate::phone::PhoneCommand::Moved {
            call,
            media_ip,
            action,
        };
        self.app.command(&mut self.core, now, cmd).map(|_| ())
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
                if r.is_ok() {
                    self.accounts.remove(&account);
                }
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
                self.ip_change(&params).await;
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
        let family = self
            .route_for_uri(&from)
            .map_or(Ipv6Use::Enabled, |r| r.sip)
            .family_preference();
        let targets = self.resolve_targets(&hop, family).await?;
        let target = self.first_usable(&targets)?;
        if self.local_ip.is_none() {
            self.local_ip = target.local.map(|a| a.ip());
        }
        let cmd = crate::phone::PhoneCommand::Call { uri, from, target };
        match self.app.command(&mut self.core, now(), cmd)? {
            Some(id) => Ok(id),
            None => Err(EndpointError::Core(siproam_core::CoreError::InvalidState)),
        }
    }

    /// The account whose address of record is `uri` (else the first).
    fn route_for_uri(&self, uri: &str) -> Option<&AccountRoute> {
        self.account_with_aor(uri).map(|(_, r)| r).or_else(|| {
            let first = self.accounts.keys().min()?;
            self.accounts.get(first)
        })
    }

    /// The account whose address of record is `uri` (`<…>` allowed).
    fn account_with_aor(&self, uri: &str) -> Option<(AccountId, &AccountRoute)> {
        let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
        let mut found: Vec<(&AccountId, &AccountRoute)> = self
            .accounts
            .iter()
            .filter(|(_, r)| r.aor.eq_ignore_ascii_case(uri))
            .collect();
        found.sort_by_key(|(id, _)| **id);
        found.first().map(|(id, r)| (**id, *r))
    }

    /// Where a call's media goes after a change to `ip`, given its
    /// account's IPv6 use for media: `ip` when allowed (for `prefer`, an
    /// IPv6 address first), else an address of the other family.
    fn media_ip_for(&self, call: siproam_core::CallId, ip: IpAddr) -> Option<IpAddr> {
        let route = self
            .core
            .call_local_uri(call)
            .and_then(|u| self.route_for_uri(u));
        let mode = route.map_or(Ipv6Use::Enabled, |r| r.media);
        let other_family = |want_v6: bool| {
            route.and_then(|r| self.route_source(r, |c| c.addr.is_ipv6() == want_v6))
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

    /// The source address towards the first of an account's registrar
    /// addresses that `keep` accepts and that has a route.
    fn route_source(
        &self,
        route: &AccountRoute,
        keep: impl Fn(&Resolved) -> bool,
    ) -> Option<IpAddr> {
        route
            .candidates
            .iter()
            .filter(|c| keep(c))
            .find_map(|c| self.transports.source_address_for(c.addr).ok())
    }

    /// The address an account would register from now: the source towards
    /// its registrar, else (unreachable) towards another of the registrar's
    /// addresses its IPv6 use allows (the other family when only that one
    /// is left).
    fn account_source(&self, account: AccountId) -> Option<IpAddr> {
        let registrar = self.core.account_registrar(account)?;
        self.transports
            .source_address_for(registrar)
            .ok()
            .or_else(|| {
                let route = self.accounts.get(&account)?;
                self.route_source(route, |c| {
                    c.addr != registrar && route.sip.allows(c.addr.ip())
                })
            })
    }

    /// Automatic detection: handles a change when the source address
    /// towards a registrar (or a call's next hop) is no longer the one in
    /// use, for the accounts and calls it concerns only; several new
    /// addresses (accounts over different uplinks) are handled in turn.
    async fn check_network(&mut self) {
        let Some(watch) = self.watch.clone() else {
            return;
        };
        for _ in 0..4 {
            let Some((ip, accounts, calls)) = self.detect_change() else {
                return;
            };
            debug!(
                "network change detected: now {ip} for {} accounts, {} calls",
                accounts.len(),
                calls.len()
            );
            let mut params = watch.params.clone();
            params.ip = Some(ip);
            params.accounts = Some(accounts);
            params.calls = Some(calls);
            params.keep_unaffected = true;
            self.ip_change(&params).await;
        }
    }

    /// The new address and the accounts and calls that move to it, if the
    /// network changed under any of them. One route lookup per registrar
    /// (and IPv6 mode), not per account.
    fn detect_change(&self) -> Option<(IpAddr, Vec<AccountId>, Vec<siproam_core::CallId>)> {
        // an address a listener is pinned to stays in use while it exists
        let pinned: std::collections::HashSet<IpAddr> = self
            .transports
            .listeners()
            .iter()
            .map(|l| l.local.ip())
            .filter(|ip| !ip.is_unspecified() && self.transports.is_local(*ip))
            .collect();
        let mut sources: HashMap<(SocketAddr, Ipv6Use), Option<IpAddr>> = HashMap::new();
        let moved: Vec<(AccountId, IpAddr)> = self
            .core
            .accounts()
            .into_iter()
            .filter_map(|a| {
                let route = self.accounts.get(&a)?;
                if route.local_ip.is_some_and(|ip| pinned.contains(&ip)) {
                    return None;
                }
                let registrar = self.core.account_registrar(a)?;
                let src = *sources
                    .entry((registrar, route.sip))
                    .or_insert_with(|| self.account_source(a));
                let src = src?;
                (Some(src) != route.local_ip).then_some((a, src))
            })
            .collect();
        // (a call whose next hop is unreachable now goes with whatever
        // address the change picks: the other family's, for instance)
        let call_moves: Vec<(siproam_core::CallId, Option<IpAddr>)> = self
            .core
            .calls()
            .into_iter()
            .filter_map(|(call, _)| {
                let hop = self.core.call_next_hop(call)?;
                let current = hop
                    .local
                    .map(|a| a.ip())
                    .filter(|ip| !ip.is_unspecified())
                    .or(self.local_ip)?;
                if pinned.contains(&current) {
                    return None;
                }
                match self.transports.source_address_for(hop.remote) {
                    Ok(src) => (src != current).then_some((call, Some(src))),
                    Err(_) => Some((call, None)),
                }
            })
            .collect();
        let ip = moved
            .first()
            .map(|(_, ip)| *ip)
            .or_else(|| call_moves.iter().find_map(|(_, ip)| *ip))?;
        Some((
            ip,
            moved
                .iter()
                .filter(|(_, i)| *i == ip)
                .map(|(a, _)| *a)
                .collect(),
            call_moves
                .iter()
                .filter(|(_, i)| i.is_none_or(|i| i == ip))
                .map(|(c, _)| *c)
                .collect(),
        ))
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
        if let Some(route) = self.accounts.get_mut(&account) {
            if let Some(m) = ipv6_sip {
                route.sip = m;
            }
            if let Some(m) = ipv6_media {
                route.media = m;
            }
            if let Some(k) = ip_change {
                route.ip_change = k;
            }
        }
        if reregister {
            self.core.refresh_registration(now(), account)?;
        }
        Ok(())
    }

    async fn ip_change(&mut self, params: &IpChangeParams) {
        let t0 = Instant::now();
        let events = self.events.clone();
        let report = |stage: &'static str,
                      status: Result<(), String>,
                      account: Option<u32>,
                      call: Option<u32>,
                      transport: Option<Transport>,
                      address: Option<SocketAddr>| {
            let _ = events.try_send(EndpointEvent::IpChange(IpChangeReport {
                stage,
                status: status.err().unwrap_or_else(|| "ok".to_owned()),
                elapsed_ms: t0.elapsed().as_secs_f64() * 1000.0,
                account,
                call,
                transport,
                address,
            }));
        };
        report("started", Ok(()), None, None, None, None);
        // an address this host does not have: nothing could listen or send
        // there (a Contact on it would carry port 0), so nothing changes
        if let Some(ip) = params.ip.filter(|ip| !ip.is_unspecified()) {
            if !self.transports.is_local(ip) {
                report(
                    "completed",
                    Err(format!(
                        "{ip} is not an address of this host: nothing changed"
                    )),
                    None,
                    None,
                    None,
                    None,
                );
                return;
            }
        }
        // requests dying on the old path must not end calls
        self.core.begin_network_change(now());
        if params.shutdown_transports && params.keep_unaffected {
            let mut closed = 0;
            for c in self.transports.connections() {
                let stale = !self.transports.is_local(c.local.ip())
                    || self
                        .transports
                        .source_address_for(c.remote)
                        .map_or(true, |src| src != c.local.ip());
                if stale
                    && self
                        .transports
                        .close_connection(c.id, CloseReason::ShutDown)
                {
                    closed += 1;
                }
            }
            report("shutdown_transports", Ok(()), None, None, None, None);
            debug!("{closed} stale stream connections closed");
        } else if params.shutdown_transports {
            let closed = self.transports.shutdown_streams();
            report("shutdown_transports", Ok(()), None, None, None, None);
            debug!("{closed} stream connections closed");
        }
        // listeners on the new address first; the old ones close at the end
        // (retiring ones from an earlier change are not restarted again)
        let old: Vec<ListenerInfo> = self
            .transports
            .listeners()
            .into_iter()
            .filter(|l| !self.retiring.iter().any(|(_, id)| *id == l.id))
            .collect();
        // where a listener goes when its own address is gone (in place)
        // (the registrar's own family first, else the other one the
        // account allows: an IPv4 uplink gone, IPv6 left)
        let fallback = self
            .core
            .accounts()
            .first()
            .and_then(|a| self.account_source(*a));
        let mut new_points = Vec::new();
        if params.restart_listeners {
            for l in &old {
                let r = match params.ip {
                    // a wildcard listener of the new address's family
                    // already receives on it: it stays as it is
                    Some(ip)
                        if l.local.ip().is_unspecified() && l.local.is_ipv4() == ip.is_ipv4() =>
                    {
                        Ok(*l)
                    }
                    // a partial change leaves a pinned listener whose
                    // address still exists alone
                    Some(_)
                        if params.keep_unaffected
                            && !l.local.ip().is_unspecified()
                            && self.transports.is_local(l.local.ip()) =>
                    {
                        Ok(*l)
                    }
                    Some(ip) => {
                        let to = SocketAddr::new(ip, 0);
                        match self.transports.listen(l.transport, to).await {
                            Err(_) => {
                                tokio::time::sleep(params.restart_listener_delay).await;
                                self.transports.listen(l.transport, to).await
                            }
                            ok => ok,
                        }
                    }
                    None => match self.transports.restart_listener(l.id).await {
                        Err(ListenError::AddressGone { ip: gone }) => match fallback {
                            Some(to) => {
                                debug!("listener address {gone} gone: moving to {to}");
                                self.transports
                                    .listen(l.transport, SocketAddr::new(to, 0))
                                    .await
                            }
                            None => Err(ListenError::AddressGone { ip: gone }),
                        },
                        other => other,
                    },
                };
                match r {
                    Ok(info) => {
                        report(
                            "restart_listener",
                            Ok(()),
                            None,
                            None,
                            Some(l.transport),
                            Some(info.local),
                        );
                        new_points.push(info);
                    }
                    Err(e) => report(
                        "restart_listener",
                        Err(e.to_string()),
                        None,
                        None,
                        Some(l.transport),
                        None,
                    ),
                }
            }
            self.core.clear_listen_points();
            for info in &new_points {
                self.core.add_listen_point(ListenPoint {
                    transport: to_core(info.transport),
                    addr: info.local,
                });
            }
        } else {
            new_points.clone_from(&old);
        }
        // the address Contacts and media use: the one given, else the one
        // the (first) listener is on now
        let ip = params
            .ip
            .or_else(|| {
                new_points
                    .iter()
                    .map(|i| i.local.ip())
                    .find(|ip| !ip.is_unspecified())
            })
            .or(fallback)
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let port_for = |t: Transport| {
            new_points
                .iter()
                .find(|i| i.transport == t)
                .or(new_points.first())
                .map_or(0, |i| i.local.port())
        };
        let now = now();
        let defaults = AccountIpChange::from_params(params);
        for account in self.core.accounts() {
            if params
                .accounts
                .as_ref()
                .is_some_and(|only| !only.contains(&account))
            {
                continue;
            }
            let knobs = self
                .accounts
                .get(&account)
                .and_then(|r| r.ip_change)
                .unwrap_or(defaults);
            if knobs.shutdown_registration_flow {
                report(
                    "shutdown_registration_flow",
                    Ok(()),
                    Some(account.0),
                    None,
                    None,
                    None,
                );
            }
            let transport = self
                .core
                .account_transport(account)
                .map_or(Transport::Udp, from_core);
            let mut contact = SocketAddr::new(ip, port_for(transport));
            let mut keep_flow = !knobs.shutdown_registration_flow;
            // the new address is of the other family (IPv4 ↔ IPv6): the
            // account moves to the registrar's address in that family, over
            // a new flow
            let mut r = match (
                self.core.account_registrar(account),
                self.accounts.get(&account),
            ) {
                (Some(current), Some(route)) if current.is_ipv4() != ip.is_ipv4() => {
                    if !route.sip.allows(ip) {
                        Err(format!("IPv6 use for SIP is {}", route.sip.as_str()))
                    } else if let Some(c) = route.candidate(transport, ip).cloned() {
                        keep_flow = false;
                        let target = CoreTarget {
                            transport: to_core(c.transport),
                            remote: c.addr,
                            local: Some(contact),
                        };
                        if c.transport == Transport::Tls {
                            self.server_names.insert(c.addr, c.server_name.clone());
                        }
                        self.core
                            .retarget_account(account, target)
                            .map_err(|e| e.to_string())
                    } else {
                        Err(format!(
                            "the registrar has no {} address",
                            if ip.is_ipv6() { "IPv6" } else { "IPv4" }
                        ))
                    }
                }
                _ => Ok(()),
            };
            if r.is_ok() && !keep_flow {
                // no listener of the account's stream transport: the new
                // flow, opened now, is the Contact (as in `register`)
                let target = self.core.account_registrar(account).and_then(|remote| {
                    self.contact_connection(&CoreTarget {
                        transport: to_core(transport),
                        remote,
                        local: Some(contact),
                    })
                });
                if let Some(t) = target {
                    match self.transports.clone().connect(&t).await {
                        Ok(flow) => contact = flow.local,
                        Err(e) => debug!("connect for the Contact failed: {e}"),
                    }
                }
            }
            if r.is_ok() {
                r = self
                    .core
                    .move_account_with(now, account, contact, keep_flow)
                    .map_err(|e| e.to_string());
            }
            if r.is_ok() {
                if let Some(route) = self.accounts.get_mut(&account) {
                    route.local_ip = Some(ip);
                    route.contact = None;
                }
            }
            report(
                "update_contact",
                r,
                Some(account.0),
                None,
                Some(transport),
                Some(contact),
            );
        }
        self.local_ip = Some(ip);
        let call_contact = SocketAddr::new(ip, port_for(Transport::Udp));
        for (call, state) in self.core.calls() {
            if params
                .calls
                .as_ref()
                .is_some_and(|only| !only.contains(&call))
            {
                continue;
            }
            use siproam_core::CallState as S;
            // the address the call sends from (its Via) is gone: an
            // unanswered INVITE of ours is sent again (break-before-make)
            let old_path_gone = self
                .core
                .call_next_hop(call)
                .and_then(|hop| hop.local)
                .is_some_and(|a| !a.ip().is_unspecified() && !self.transports.is_local(a.ip()));
            let ringing = matches!(state, S::Incoming | S::Ringing | S::Early);
            if !ringing && state != S::Confirmed && !(state == S::Calling && old_path_gone) {
                continue;
            }
            // the knobs of the call's own account (its AoR is our URI)
            let knobs = self
                .core
                .call_local_uri(call)
                .and_then(|u| self.account_with_aor(u))
                .and_then(|(_, r)| r.ip_change)
                .unwrap_or(defaults);
            let flags = knobs.refresh;
            let stage = if state == S::Confirmed && knobs.hangup_calls {
                "hangup_calls"
            } else {
                "refresh_calls"
            };
            // in-dialog requests to a next hop of the other family (IPv4 ↔
            // IPv6) go to the same proxy's address in the new family
            let mut next_hop = None;
            if let Some(hop) = self.core.call_next_hop(call) {
                if hop.remote.is_ipv4() != ip.is_ipv4() {
                    next_hop = self
                        .accounts
                        .values()
                        .filter(|route| route.is_registrar(from_core(hop.transport), hop.remote))
                        .find_map(|route| route.candidate(from_core(hop.transport), ip))
                        .map(|c| CoreTarget {
                            transport: to_core(c.transport),
                            remote: c.addr,
                            local: None,
                        });
                    if next_hop.is_none() && !knobs.hangup_calls {
                        report(
                            stage,
                            Err("the call's next hop has no address in the new family".to_owned()),
                            None,
                            Some(call.0),
                            None,
                            None,
                        );
                        continue;
                    }
                }
            }
            let media_ip = if flags.reinit_media {
                self.media_ip_for(call, ip)
            } else {
                None
            };
            let mv = siproam_core::CallMove {
                contact: flags.update_contact.then_some(call_contact),
                via: flags.update_via.then_some(call_contact),
                next_hop,
                hang_up: knobs.hangup_calls,
                prefer_update: flags.prefer_update,
                old_path_gone,
            };
            let r = self.move_call(now, call, mv, media_ip);
            report(
                stage,
                r.map_err(|e| e.to_string()),
                None,
                Some(call.0),
                None,
                None,
            );
        }
        if params.restart_listeners {
            let until = tokio::time::Instant::now() + params.old_listener_grace;
            for l in old {
                if new_points.iter().any(|n| n.id == l.id) {
                    continue; // restarted in place: the same listener
                }
                if l.transport == Transport::Udp && !params.old_listener_grace.is_zero() {
                    self.retiring.push((until, l.id));
                } else {
                    self.transports.close_listener(l.id).await;
                }
            }
        }
        report("completed", Ok(()), None, None, None, None);
    }

    async fn register(&mut self, spec: AccountSpec) -> Result<AccountId, EndpointError> {
        // every address of the registrar the account's IPv6 use allows:
        // the first reachable one now, the others for a family switch
        let candidates = self
            .resolve_targets(&spec.registrar, spec.ipv6_sip.family_preference())
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
        if self.local_ip.is_none() {
            self.local_ip = local_ip;
        }
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
        self.accounts.insert(
            id,
            AccountRoute {
                aor: spec.aor,
                candidates,
                sip: spec.ipv6_sip,
                media: spec.ipv6_media,
                ip_change: spec.ip_change,
                local_ip,
                contact: None,
            },
        );
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
    /// A registered Contact different from the last one while no change
    /// of ours moved the account: the registrar saw us at another address
    /// (`received`/`rport`: a NAT rebinding), which the core has already
    /// re-registered. Returns that address.
    fn contact_changed(&mut self, r: &siproam_core::RegistrationEvent) -> Option<SocketAddr> {
        if r.state != siproam_core::RegistrationState::Registered {
            return None;
        }
        let route = self.accounts.get_mut(&r.account)?;
        let before = route.contact.replace(r.contact.clone())?;
        if before == r.contact {
            return None;
        }
        let uri = siproam_sip::Uri::parse(&r.contact).ok()?;
        let sip = uri.as_sip()?;
        let host = sip.host_str().trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = host.parse().ok()?;
        Some(SocketAddr::new(ip, sip.port().unwrap_or(5060)))
    }

    /// A NAT rebinding counts as a change: the account's calls take the
    /// public address as their Contact (sending from where they did), as
    /// stages `started`, `refresh_calls` (one per call), `completed`.
    fn rebound(&mut self, account: AccountId, public: SocketAddr) {
        let t0 = Instant::now();
        let events = self.events.clone();
        let report = |stage: &'static str, status: Result<(), String>, call: Option<u32>| {
            let _ = events.try_send(EndpointEvent::IpChange(IpChangeReport {
                stage,
                status: status.err().unwrap_or_else(|| "ok".to_owned()),
                elapsed_ms: t0.elapsed().as_secs_f64() * 1000.0,
                account: Some(account.0),
                call,
                transport: None,
                address: Some(public),
            }));
        };
        let Some(route) = self.accounts.get(&account) else {
            return;
        };
        let prefer_update = route
            .ip_change
            .map_or(RefreshFlags::default().prefer_update, |k| {
                k.refresh.prefer_update
            });
        debug!(
            "the registrar sees account {} at another address",
            account.0
        );
        report("started", Ok(()), None);
        let now = now();
        for (call, _) in self.core.calls() {
            let ours = self
                .core
                .call_local_uri(call)
                .and_then(|u| self.account_with_aor(u))
                .is_some_and(|(a, _)| a == account);
            if !ours {
                continue;
            }
            let sending = self.core.call_next_hop(call).and_then(|h| h.local);
            let mv = siproam_core::CallMove {
                contact: Some(public),
                via: sending,
                next_hop: None,
                hang_up: false,
                prefer_update,
                old_path_gone: false,
            };
            let r = self.move_call(now, call, mv, None);
            report("refresh_calls", r.map_err(|e| e.to_string()), Some(call.0));
        }
        report("completed", Ok(()), None);
    }

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
                if let Event::Registration(r) = &ev {
                    if let Some(public) = self.contact_changed(r) {
                        self.rebound(r.account, public);
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
