//! The handle on a running endpoint, its commands, events and errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use siproam_core::{
    AccountId, CallId, Endpoint as Core, Event, IpChangeParams, IpChangeReport, ListenPoint,
    Target as CoreTarget,
};
use tokio::sync::{mpsc, oneshot};

use crate::resolve::{HickoryDns, Resolver, StaticHosts};
use crate::transport::{ListenError, ListenerInfo, Transport, TransportManager};

use super::driver::{now, Driver};
use super::{AccountChanges, AccountSpec, AppCommand, Application, CommandError, EndpointConfig};

/// What a running endpoint reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// An event of the core (registration, call, request …).
    Core(Event),
    /// Media statistics of a call.
    Media(crate::media_report::MediaReport),
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
    /// An instant message (RFC 3428) received, or the outcome of one sent.
    Message(crate::media_report::MessageReport),
    /// A DTMF key sent or received on a call (RFC 4733).
    Dtmf(crate::media_report::DtmfReport),
}

/// Errors of the endpoint's commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A listener could not be opened.
    #[error("{0}")]
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
    /// A socket the application needed (a call's RTP socket) could not be
    /// opened (out of descriptors …).
    #[error("no RTP socket: {0}")]
    Media(#[source] std::io::Error),
    /// A call's media refused the command (DTMF to a peer that takes no
    /// telephone-events …).
    #[error("media: {0}")]
    MediaRefused(siproam_media::MediaError),
    /// The call has no media (yet): not answered, or ended.
    #[error("the call has no media")]
    NoMedia,
    /// Too much waits already (MESSAGEs without an answer, DTMF keys).
    #[error("too much waiting already")]
    Busy,
    /// The call's media is not SRTP (a re-key asked of a plain call).
    #[error("the call's media is not SRTP")]
    NoSrtp,
    /// The endpoint task has stopped.
    #[error("endpoint stopped")]
    Stopped,
    /// The application takes no command of that type.
    #[error("the application takes no such command")]
    UnsupportedCommand,
    /// The network namespace could not be entered.
    #[error("network namespace: {0}")]
    Namespace(#[source] std::io::Error),
    /// The OS's random generator failed.
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
}

impl From<CommandError> for EndpointError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Unsupported => EndpointError::UnsupportedCommand,
            CommandError::Core(e) => EndpointError::Core(e),
            CommandError::Socket(e) => EndpointError::Media(e),
            CommandError::Media(e) => EndpointError::MediaRefused(e),
            CommandError::NoMedia => EndpointError::NoMedia,
            CommandError::Busy => EndpointError::Busy,
            CommandError::NoSrtp => EndpointError::NoSrtp,
        }
    }
}

/// Builds an application command for the next hop the endpoint found
/// ([`EndpointHandle::command_via`]).
pub type CommandFor = Box<dyn FnOnce(CoreTarget) -> AppCommand + Send>;

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

pub(super) enum Command {
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
    /// An application command built for a resolved next hop.
    Via {
        hop: String,
        from: String,
        make: CommandFor,
        reply: oneshot::Sender<Result<Option<CallId>, EndpointError>>,
    },
    App(
        AppCommand,
        oneshot::Sender<Result<Option<CallId>, EndpointError>>,
    ),
    IpChange(Box<IpChangeParams>, oneshot::Sender<()>),
    /// Register at once every account waiting out a back-off.
    RetryRegistrations(oneshot::Sender<Vec<AccountId>>),
    Listeners(oneshot::Sender<Vec<ListenerInfo>>),
    Shutdown(oneshot::Sender<()>),
}

/// Sends commands of the application's own type to a running endpoint
/// ([`EndpointHandle::app_commander`]); cloneable.
#[derive(Debug, Clone)]
pub struct AppCommander {
    commands: mpsc::Sender<Command>,
}

impl AppCommander {
    /// As [`EndpointHandle::command`].
    pub async fn command<C: std::any::Any + Send>(
        &self,
        cmd: C,
    ) -> Result<Option<CallId>, EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::App(Box::new(cmd), tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }
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
        // each client transaction's outcome is logged at info (`-v`)
        core.report_transaction_outcomes(tracing::enabled!(tracing::Level::INFO));
        // datagrams over their source's budget are dropped as they are read
        let admission = core.admission();
        transports.set_datagram_filter(std::sync::Arc::new(move |ip, data: &[u8]| {
            admission.admit(now(), ip, data)
        }));
        for (t, addr) in &config.listen {
            let info = transports.listen(*t, *addr).await?;
            core.add_listen_point(ListenPoint {
                transport: info.transport,
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
            pin_when_connected: std::collections::HashSet::new(),
            backlog: HashMap::new(),
            unclaimed: HashMap::new(),
            retiring: Vec::new(),
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

    /// Registers at once every account waiting out a back-off after a
    /// failure (RFC 5626 §4.5's forced retry; the network watch does the
    /// same on every network event). Returns the accounts that register
    /// again.
    pub async fn retry_registrations(&self) -> Result<Vec<AccountId>, EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::RetryRegistrations(tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)
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

    /// Hands the application a command of its own type
    /// ([`Application::command`]); the call it names, if any.
    pub async fn command<C: std::any::Any + Send>(
        &self,
        cmd: C,
    ) -> Result<Option<CallId>, EndpointError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::App(Box::new(cmd), tx))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        rx.await.map_err(|_| EndpointError::Stopped)?
    }

    /// A cloneable sender of application commands, for a task of the
    /// application's own that reports back into the endpoint task (the
    /// shared location store's writer acknowledging a write).
    pub fn app_commander(&self) -> AppCommander {
        AppCommander {
            commands: self.commands.clone(),
        }
    }

    /// Resolves `hop` (a SIP URI: a proxy, or the callee's URI) to the
    /// first next hop reachable from a listener, with the IPv6 use of the
    /// account whose address of record is `from`, and hands the
    /// application the command `make` builds for it (a new call, in the
    /// endpoint task, so nothing moves in between).
    pub async fn command_via<F>(
        &self,
        hop: &str,
        from: &str,
        make: F,
    ) -> Result<Option<CallId>, EndpointError>
    where
        F: FnOnce(CoreTarget) -> AppCommand + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Via {
            hop: hop.to_owned(),
            from: from.to_owned(),
            make: Box::new(make),
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

    /// Stops the endpoint (sockets close; bindings are not removed:
    /// unregister first for that).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
