//! `siproam registrar` and `siproam agent`: long-running commands on the
//! tokio driver, with JSON events on stdout (`docs/events.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use siproam::core::subscription::NotifyBody;
use siproam::core::{
    CallEvent, CallId, CallState, Event, RegistrationState, SubId, SubscriptionEvent,
    SubscriptionReason, SubscriptionRole, SubscriptionState, TransferEvent, TransferRole,
    TransferState,
};
use siproam::edge::RegistrarApp;
use siproam::transport::{TlsClientConfig, TlsServerConfig, Transport, TransportConfig};
use siproam::{
    AccountSpec, AudioSpec, EndpointConfig, EndpointEvent, EndpointHandle, MediaReport, Phone,
    PhoneCommand, PhoneConfig,
};
use siproam_edge::{Registrar, RegistrarConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Process start, for `t_ms`.
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A random `urn:uuid:` (version 4) for `+sip.instance`, from the OS's
/// secure generator. `salt` only tells apart two ids drawn in one process
/// should the OS generator ever fail (it is not a seed).
pub fn instance_id(salt: u64) -> String {
    siproam::random::instance_id().unwrap_or_else(|_| {
        let mut rng = siproam::core::Rng::new(salt ^ fallback_seed());
        rng.uuid_urn()
    })
}

/// The instance id kept for `aor` in `dir` (default: the XDG state
/// directory), so that a restarted agent replaces its binding. A file
/// holding no valid id is replaced with a warning; one that cannot be read
/// or written is an error. With no state directory at all (no
/// `$XDG_STATE_HOME`, no `$HOME`) a new id is drawn, with a warning.
fn kept_instance_id(aor: &str, dir: Option<&std::path::Path>) -> anyhow::Result<String> {
    use siproam::instance::{default_state_dir, stored_instance_id, InstanceOrigin};
    let Some(dir) = dir.map(PathBuf::from).or_else(default_state_dir) else {
        tracing::warn!(
            "no state directory ($XDG_STATE_HOME and $HOME unset, no --state-dir): \
             a new instance id for this run"
        );
        return Ok(instance_id(seed()));
    };
    let (urn, origin) = stored_instance_id(&dir, aor).with_context(|| {
        format!(
            "keeping the instance id in {} (give --instance-id URN or another --state-dir)",
            dir.display()
        )
    })?;
    if origin == InstanceOrigin::Replaced {
        tracing::warn!(
            file = %siproam::instance::instance_file(&dir, aor).display(),
            "the stored instance id was unreadable; a new one replaces it"
        );
    }
    Ok(urn)
}

/// Only when the OS generator fails (never seen on Linux): the clock.
fn fallback_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

pub fn mark_start() {
    START.get_or_init(Instant::now);
}

fn ms_since_start(at: Instant) -> f64 {
    START.get().map_or(0.0, |s| {
        at.saturating_duration_since(*s).as_secs_f64() * 1000.0
    })
}

/// The agent's stdin commands, one a line (`agent --help`).
pub const AGENT_COMMANDS_HELP: &str = "\
Commands on stdin, one a line (CALL is a call's number, the current call when left out):
  call URI                   place a call
  answer [CALL]              answer an incoming call
  hangup [CALL]              end a call (BYE, CANCEL, or 486 to an incoming one)
  hold [CALL]                put a call on hold (a re-INVITE, sendonly)
  unhold [CALL]              take it off hold
  rekey [CALL]               new SRTP keys for an SRTP call (a re-INVITE)
  ip-change [ADDR]           move to a new local address (none: restart in place)
  dtmf [CALL] DIGITS         send DTMF digits (RFC 4733)
  transfer [CALL] URI        blind transfer (REFER)
  transfer CALL OTHER_CALL   attended transfer (REFER with Replaces)
  subscribe URI EVENT        subscribe to presence or message-summary
  unsubscribe SUB            end a subscription
  message URI TEXT           send a MESSAGE
  status                     accounts, calls, flows, subscriptions and addresses
  quit                       unregister and exit";

/// The commands in brief, for an unknown command's `error` event.
const AGENT_COMMANDS_BRIEF: &str = "call, answer, hangup, hold, unhold, rekey, ip-change, dtmf, \
transfer, subscribe, unsubscribe, message, status, quit";

/// Prints one event: JSON when asked, a short line otherwise.
pub fn emit(json_out: bool, v: Value) {
    emit_at(json_out, v, Instant::now());
}

/// Prints one event that happened `at`, and returns it with its `t_ms`.
pub fn emit_at(json_out: bool, mut v: Value, at: Instant) -> Value {
    let t_ms = ms_since_start(at);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("t_ms".into(), json!((t_ms * 1000.0).round() / 1000.0));
        obj.shift_remove("t_ms")
            .map(|t| obj.shift_insert(0, "t_ms".into(), t));
    }
    if json_out {
        out_line(&v.to_string());
    } else if let Some(obj) = v.as_object() {
        let line: Vec<String> = obj
            .iter()
            .filter(|(k, _)| k.as_str() != "t_ms")
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        out_line(&format!("[{t_ms:>9.3} ms] {}", line.join(" ")));
    }
    v
}

/// Set once stdout's reader has gone away (`| head -1`).
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Woken once stdout's reader has gone away.
fn stdout_gone() -> &'static tokio::sync::Notify {
    static GONE: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    GONE.get_or_init(tokio::sync::Notify::new)
}

/// Writes one line on stdout. A closed pipe (its reader went away) is
/// not an error to shout about: nothing more is written, and a
/// long-running command stops ([`stdout_gone`]). (`println!` panics on
/// it; Rust ignores SIGPIPE, so the write returns EPIPE.)
pub fn out_line(line: &str) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let r = writeln!(out, "{line}").and_then(|()| out.flush());
    if let Err(e) = r {
        if !STDOUT_GONE.swap(true, Ordering::Relaxed) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("error: writing to stdout: {e}");
            }
            stdout_gone().notify_one();
        }
    }
}

/// Resolves when SIGTERM comes (or never, where there is none).
pub async fn sigterm() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// Ctrl-C or SIGTERM: time to stop (cleanly: unregister, hang up).
pub async fn stop_signal() {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm() => {}
    }
}

/// Parses `PROTO:HOST:PORT` (`udp:127.0.0.1:5060`, `tcp:[::1]:0`).
pub fn parse_listen(s: &str) -> anyhow::Result<(Transport, SocketAddr)> {
    let (proto, addr) = s.split_once(':').context("expected PROTO:HOST:PORT")?;
    let t = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        other => bail!("unknown transport {other:?} (udp, tcp or tls)"),
    };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr:?} (HOST:PORT, IPv6 in brackets)"))?;
    Ok((t, addr))
}

/// TLS settings shared by both commands.
#[derive(Debug, clap::Args, Clone, Default)]
pub struct TlsArgs {
    /// Certificate chain (PEM) for TLS listeners.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for TLS listeners.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Trust this CA (PEM) for TLS servers, as well as the usual roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

fn transport_config(tls: &TlsArgs) -> anyhow::Result<TransportConfig> {
    let mut cfg = TransportConfig::default();
    if let (Some(cert), Some(key)) = (&tls.tls_cert, &tls.tls_key) {
        cfg.tls_server = Some(
            TlsServerConfig::from_pem_files(cert, key).context("loading the TLS certificate")?,
        );
    } else if tls.tls_cert.is_some() || tls.tls_key.is_some() {
        bail!("--tls-cert and --tls-key go together");
    }
    if let Some(ca) = &tls.ca {
        cfg.tls_client =
            Some(TlsClientConfig::with_ca_pem_file(ca, true).context("loading the CA")?);
    }
    Ok(cfg)
}

fn seed() -> u64 {
    // SSRCs and the core's replay seed (the driver keys the core's
    // generator from the OS itself): from the OS's secure generator
    siproam::random::os_u64().unwrap_or_else(|_| fallback_seed())
}

/// A registrar configuration with a fresh HMAC key (nonces and
/// Record-Route tokens) from the operating system's secure generator.
pub(crate) fn registrar_config() -> anyhow::Result<RegistrarConfig> {
    let key = siproam::random::os_seed()?;
    Ok(RegistrarConfig {
        key,
        ..RegistrarConfig::default()
    })
}

async fn announce_listeners(ep: &EndpointHandle, json_out: bool) -> anyhow::Result<()> {
    for l in ep.listeners().await? {
        emit(
            json_out,
            json!({"event": "listening", "transport": l.transport.to_string().to_ascii_lowercase(), "address": l.local.to_string()}),
        );
    }
    Ok(())
}

/// The registrar's limits on bindings and connections (flags or config
/// file).
#[derive(Debug, Clone, Copy, Default)]
pub struct BindingLimits {
    /// Most bindings per AoR (`--max-bindings`).
    pub max_bindings: Option<u32>,
    /// Shortest lifetime granted (`--min-expires`).
    pub min_expires: Option<u32>,
    /// Most TCP/TLS connections at once (`--max-connections`).
    pub max_connections: Option<u32>,
}

/// The registrar's connections: TLS, the kernel's TCP keep-alive and the
/// RFC 5626 Flow-Timer.
#[derive(Debug, Clone, Default)]
pub struct RegistrarTransport {
    /// Certificate, key and trusted CAs.
    pub tls: TlsArgs,
    /// `--tcp-keepalive` (or `tcp-keepalive` in the file).
    pub tcp_keepalive: Option<siproam::transport::TcpKeepalive>,
    /// `--flow-timer` (or `flow-timer` in the file): the Flow-Timer of
    /// outbound registrations' 2xx.
    pub flow_timer: Option<u32>,
}

/// Where the registrar keeps its bindings, and what its 2xx tells the
/// registered UA.
#[derive(Debug, clap::Args, Clone)]
pub struct StoreArgs {
    /// The location store: `memory` (this process only; the default) or
    /// `redis://HOST:PORT` (shared by every registrar using it: a request
    /// entering any of them reaches a user registered at another).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// A `Service-Route` (RFC 3608) for every REGISTER 2xx, in order
    /// (repeatable): the route the registered UA pre-loads.
    #[arg(long = "service-route", value_name = "URI")]
    pub service_routes: Vec<String>,
}

/// `siproam registrar`.
#[allow(clippy::too_many_arguments)]
pub async fn registrar(
    listen: Vec<String>,
    users: Option<PathBuf>,
    domain: Option<String>,
    max_rate_per_source: u32,
    limits: BindingLimits,
    transport: RegistrarTransport,
    store: StoreArgs,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let mut config = RegistrarConfig {
        domain,
        flow_timer: transport.flow_timer,
        ..registrar_config()?
    };
    for uri in &store.service_routes {
        if siproam_sip::Uri::parse(uri).is_err() {
            bail!("--service-route {uri}: not a URI");
        }
    }
    config.service_routes = store.service_routes.clone();
    let redis_url = match store.store.as_deref().unwrap_or("memory") {
        "memory" => None,
        url if url.starts_with("redis://") => Some(url.to_owned()),
        other => bail!("--store {other}: expected memory or redis://HOST:PORT"),
    };
    if let Some(n) = limits.max_bindings {
        config.max_bindings_per_aor = usize::try_from(n)?;
    }
    if let Some(secs) = limits.min_expires {
        config.min_expires = secs;
    }
    if let Some(path) = users {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        config.users = RegistrarConfig::parse_users(&text)
            .with_context(|| format!("in {}", path.display()))?;
    }
    let listen = if listen.is_empty() {
        vec!["udp:127.0.0.1:5060".to_owned()]
    } else {
        listen
    };
    let listen: Vec<_> = listen
        .iter()
        .map(|s| parse_listen(s))
        .collect::<Result<_, _>>()?;
    let mut app = RegistrarApp::new(Registrar::new(config));
    let registrar = app.registrar();
    // the shared store: connected and loaded before the first request
    let mut shared = match redis_url {
        Some(url) => {
            let origin = seed();
            let s = siproam::location::RedisStore::connect(
                siproam::location::RedisConfig::new(&url),
                registrar.clone(),
                origin,
            )
            .await
            .with_context(|| format!("--store {url}"))?;
            app = app.with_shared_store(s.sender());
            Some(s)
        }
        None => None,
    };
    let ep_cfg = EndpointConfig {
        listen,
        // a registrar and proxy: every request goes to the application
        core: siproam::core::Config {
            seed: seed(),
            dialogs: false,
            admission: siproam::core::AdmissionConfig {
                per_source_rate: max_rate_per_source,
                per_source_burst: max_rate_per_source.saturating_mul(2),
                ..Default::default()
            },
            ..Default::default()
        },
        transport: {
            let mut t = TransportConfig {
                tcp_keepalive: transport.tcp_keepalive,
                ..transport_config(&transport.tls)?
            };
            if let Some(n) = limits.max_connections {
                t.max_connections = usize::try_from(n)?;
            }
            t
        },
        hosts: Vec::new(),
        watch: None,
    };
    if let Some(n) = limits.max_connections {
        // a descriptor per connection, and some to spare
        siproam::raise_open_files_limit_to(u64::from(n) + 256)?;
    }
    let mut ep = EndpointHandle::start(ep_cfg, Box::new(app)).await?;
    if let Some(s) = &mut shared {
        s.start(ep.app_commander());
    }
    announce_listeners(&ep, json_out).await?;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            ev = ep.next_event() => match ev {
                Some(EndpointEvent::Core(Event::IncomingRequest { request, .. })) if request.method() == Some(siproam_sip::Method::Register) => {
                    let aor = request.to().ok().map(|t| t.uri().to_string()).unwrap_or_default();
                    let now = Instant::now();
                    let guard = registrar.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let contacts: Vec<Value> = guard
                        .lookup(&aor, now)
                        .iter()
                        .map(|b| json!({"contact": b.contact, "expires": b.expires_at.saturating_duration_since(now).as_secs(), "instance": b.instance, "reg_id": b.reg_id, "path": b.path}))
                        .collect();
                    drop(guard);
                    emit(json_out, json!({"event": "binding", "aor": aor, "contacts": contacts}));
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    ep.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Agent options (the subset that works today).
#[derive(Debug, clap::Args, Clone)]
pub struct AgentArgs {
    /// The address of record (`sip:alice@example.test`).
    #[arg(long)]
    pub aor: Option<String>,
    /// The registrar (`sip:HOST[:PORT][;transport=tcp|tls]`, `sips:…`).
    #[arg(long)]
    pub registrar: Option<String>,
    /// Digest user name (defaults to the AoR's user).
    #[arg(long)]
    pub user: Option<String>,
    /// Digest password. Visible to other users in the process list:
    /// prefer `--password-file` or the `SIPROAM_PASSWORD` environment
    /// variable.
    #[arg(long)]
    pub password: Option<String>,
    /// Read the digest password from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "password")]
    pub password_file: Option<PathBuf>,
    /// Where to listen (`PROTO:HOST:PORT`, repeatable); default
    /// `udp:0.0.0.0:0` and `tcp:0.0.0.0:0`.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Open no listening socket: the Contact is the registration flow's
    /// own address (a TCP/TLS connection opened first, or a UDP socket on
    /// a port of the OS's choosing), and requests to the agent come over
    /// that flow — no open port needed behind a NAT.
    #[arg(long, conflicts_with = "listen")]
    pub no_listen: bool,
    /// Binding lifetime to request, in seconds (default 600).
    #[arg(long)]
    pub expires: Option<u32>,
    /// RFC 5626 outbound: register with `+sip.instance`, `reg-id` and
    /// `Supported: outbound`; a first hop answering 439 gets a normal
    /// registration instead.
    #[arg(long)]
    pub outbound: bool,
    /// The registration flow's `reg-id`, with `--outbound` (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub reg_id: Option<u32>,
    /// The `+sip.instance` (`urn:uuid:…`); default: the one kept for the
    /// AoR in `--state-dir` (made there on the first run).
    #[arg(long, value_name = "URN")]
    pub instance_id: Option<String>,
    /// An outbound proxy (repeatable): each one a flow of its own, with
    /// reg-id 1, 2, … (several need `--outbound`); the REGISTER and the
    /// requests over a flow go to its proxy with it as a loose Route.
    #[arg(long, value_name = "URI")]
    pub outbound_proxy: Vec<String>,
    /// A local interface or address a flow leaves from (repeatable; with
    /// `--outbound` one flow from each). With `--outbound-proxy` too, the
    /// i-th flow takes the i-th of each (the last one repeated).
    #[arg(long, value_name = "IFACE|ADDR")]
    pub flow_from: Vec<String>,
    /// Where the instance id of each AoR is kept (default
    /// `$XDG_STATE_HOME/siproam`, else `~/.local/state/siproam`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep running when stdin ends (for scripts).
    #[arg(long)]
    pub stay: bool,
    /// Turn off automatic network-change detection (netlink on Linux plus
    /// a periodic check of the source address towards the registrar).
    #[arg(long)]
    pub no_watch: bool,
    /// IPv6 use for SIP: disabled, enabled (either family; after a change,
    /// the new address's), prefer or only.
    #[arg(long, value_name = "MODE")]
    pub ipv6_sip: Option<siproam::Ipv6Use>,
    /// IPv6 use for media: disabled, enabled, prefer or only.
    #[arg(long, value_name = "MODE")]
    pub ipv6_media: Option<siproam::Ipv6Use>,
    /// Pin a host name to an address, before DNS (`NAME=IP`, repeatable:
    /// one per address, e.g. an IPv4 and an IPv6 one).
    #[arg(long, value_name = "NAME=IP")]
    pub host: Vec<String>,
    /// Keep-alive interval for the registration's flow, in seconds, when
    /// the registrar sends no Flow-Timer (datagram — STUN, default 30 —
    /// and stream; 0: none).
    #[arg(long, value_name = "SECS")]
    pub keepalive: Option<u64>,
    /// The same for stream flows alone (default 120).
    #[arg(long, value_name = "SECS")]
    pub keepalive_stream: Option<u64>,
    /// No pong within this many seconds after a keep-alive ping: the flow
    /// has failed (default 10; only with outbound in force or a
    /// `Flow-Timer` from the registrar).
    #[arg(long, value_name = "SECS")]
    pub pong_timeout: Option<u64>,
    /// The kernel's TCP keep-alive on every TCP/TLS connection: seconds
    /// idle before the first probe, seconds between probes, probes
    /// unanswered before the connection is dropped (e.g. 60,10,5;
    /// default off).
    #[arg(long, value_name = "IDLE,INTERVAL,COUNT")]
    pub tcp_keepalive: Option<siproam::transport::TcpKeepalive>,
    /// Who may subscribe to this agent's presence and message summary
    /// (repeatable): a SIP URI, compared with the subscriber's From by
    /// scheme, user and host (the user case-sensitive, parameters and
    /// display name ignored), or `*` for anyone. Default: nobody — a
    /// SUBSCRIBE from anyone else gets 403, and one to a user that is not
    /// this agent's 404.
    #[arg(long, value_name = "URI", value_parser = parse_watcher)]
    pub watcher: Vec<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The identities after the first (`[[account]]` tables of the
    /// `--config` file), each registered with its own flows.
    #[arg(skip)]
    pub more_accounts: Vec<AgentArgs>,
}

/// A `--watcher`: `*` or a `sip:`/`sips:` URI.
fn parse_watcher(w: &str) -> Result<String, String> {
    let w = w.trim();
    if w == siproam::core::subscription::ANYONE
        || siproam_sip::Uri::parse(w).is_ok_and(|u| u.as_sip().is_some())
    {
        Ok(w.to_owned())
    } else {
        Err(format!("{w:?} is not a SIP URI (sip:user@host) or *"))
    }
}

impl AgentArgs {
    /// How the registration's flow is kept alive.
    fn flow_spec(&self) -> anyhow::Result<siproam::FlowSpec> {
        let mut spec = siproam::FlowSpec::default();
        if let Some(secs) = self.keepalive_stream.or(self.keepalive) {
            spec.keepalive_stream = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(secs) = self.keepalive {
            spec.keepalive_datagram = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(secs) = self.pong_timeout {
            anyhow::ensure!(secs > 0, "pong-timeout must be at least 1");
            spec.pong_timeout = Duration::from_secs(secs);
        }
        Ok(spec)
    }

    /// The flows to register (RFC 5626: several per identity), each with
    /// its reg-id and first hop: one per `--outbound-proxy` /
    /// `--flow-from`, at least one.
    fn flows(&self) -> anyhow::Result<Vec<(Option<u32>, siproam::FlowSpec)>> {
        let base = self.flow_spec()?;
        let n = self.outbound_proxy.len().max(self.flow_from.len()).max(1);
        anyhow::ensure!(
            n == 1 || self.outbound,
            "several flows (--outbound-proxy, --flow-from) need --outbound"
        );
        let locals = self
            .flow_from
            .iter()
            .map(|f| flow_from_address(f))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let first_reg_id = self.reg_id.unwrap_or(1);
        Ok((0..n)
            .map(|i| {
                let mut spec = base.clone();
                spec.outbound_proxy = pick(&self.outbound_proxy, i);
                spec.local_ip = pick(&locals, i);
                let reg_id = if n == 1 {
                    self.reg_id
                } else {
                    u32::try_from(i)
                        .ok()
                        .and_then(|i| first_reg_id.checked_add(i))
                };
                (reg_id, spec)
            })
            .collect())
    }
}

/// The `i`-th of `v`, the last one past its end.
fn pick<T: Clone>(v: &[T], i: usize) -> Option<T> {
    v.get(i).or(v.last()).cloned()
}

/// A `--flow-from`: an address, or an interface's first address (IPv4
/// first).
fn flow_from_address(from: &str) -> anyhow::Result<std::net::IpAddr> {
    if let Ok(ip) = from.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(ip);
    }
    siproam::netwatch::interface_addresses(from)
        .with_context(|| format!("--flow-from {from}"))?
        .into_iter()
        .find(|a| !matches!(a, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .with_context(|| {
            format!("--flow-from {from}: no such interface or no usable address on it")
        })
}

/// `NAME=IP` pairs of `--host`.
pub(crate) fn parse_hosts(hosts: &[String]) -> anyhow::Result<Vec<(String, std::net::IpAddr)>> {
    hosts
        .iter()
        .map(|h| {
            let (name, ip) = h.split_once('=').context("--host expects NAME=IP")?;
            let ip = ip
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .with_context(|| format!("--host {h}: bad address"))?;
            Ok((name.to_owned(), ip))
        })
        .collect()
}

fn registration_json(r: &siproam::core::RegistrationEvent, aor: Option<&String>) -> Value {
    json!({
        "event": "registration",
        "account": r.account.0,
        "aor": aor,
        "state": r.state.as_str(),
        "contact": r.contact,
        "code": r.code,
        "expires": r.expires,
        "outbound": r.outbound,
        "gruu": r.gruu,
    })
}

/// The settings a `--config` TOML file may hold: the same names as the
/// flags (`listen = ["udp:127.0.0.1:5060"]`, `tls-cert = "…"`); flags win.
/// Several identities go in `[[account]]` tables, the call options in
/// `[call]`, the registrar's and the edge's own settings in `[registrar]`
/// and `[edge]` (over the top-level keys, for that command alone).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    json: Option<bool>,
    verbose: Option<u8>,
    trace: Option<bool>,
    pcap: Option<PathBuf>,
    listen: Option<Vec<String>>,
    users: Option<PathBuf>,
    domain: Option<String>,
    max_bindings: Option<u32>,
    min_expires: Option<u32>,
    flow_timer: Option<u32>,
    aor: Option<String>,
    registrar: Option<RegistrarKey>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    expires: Option<u32>,
    outbound: Option<bool>,
    reg_id: Option<u32>,
    instance_id: Option<String>,
    outbound_proxy: Option<Vec<String>>,
    flow_from: Option<Vec<String>>,
    state_dir: Option<PathBuf>,
    stay: Option<bool>,
    no_listen: Option<bool>,
    no_watch: Option<bool>,
    ipv6_sip: Option<String>,
    ipv6_media: Option<String>,
    keepalive: Option<u64>,
    keepalive_stream: Option<u64>,
    pong_timeout: Option<u64>,
    tcp_keepalive: Option<String>,
    host: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ca: Option<PathBuf>,
    max_ringing: Option<usize>,
    max_calls: Option<usize>,
    no_answer: Option<u64>,
    store: Option<String>,
    service_route: Option<Vec<String>>,
    flow_grace: Option<u64>,
    flow_idle: Option<u64>,
    flow_key_file: Option<PathBuf>,
    aggressive_gc: Option<bool>,
    max_connections: Option<u32>,
    max_rate_per_source: Option<u32>,
    #[serde(alias = "watcher")]
    watchers: Option<Vec<String>>,
    #[serde(rename = "account")]
    accounts: Option<Vec<AccountTable>>,
    call: Option<CallTable>,
    edge: Option<EdgeTable>,
}

/// The top-level `registrar`: the agent's (or the edge's) registrar URI,
/// or the `[registrar]` table of `siproam registrar`'s own settings.
#[derive(Debug, Clone)]
enum RegistrarKey {
    Uri(String),
    Table(Box<RegistrarTable>),
}

impl<'de> serde::Deserialize<'de> for RegistrarKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(d)? {
            toml::Value::String(uri) => Ok(RegistrarKey::Uri(uri)),
            t @ toml::Value::Table(_) => t
                .try_into()
                .map(|t| RegistrarKey::Table(Box::new(t)))
                .map_err(|e| D::Error::custom(format!("[registrar]: {e}"))),
            _ => Err(D::Error::custom(
                "registrar: a URI (the agent's or the edge's) or the [registrar] table",
            )),
        }
    }
}

impl RegistrarKey {
    fn uri(&self) -> Option<&String> {
        match self {
            RegistrarKey::Uri(u) => Some(u),
            RegistrarKey::Table(_) => None,
        }
    }
}

/// `[registrar]`: `siproam registrar`'s settings (over the top-level
/// ones).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RegistrarTable {
    listen: Option<Vec<String>>,
    users: Option<PathBuf>,
    domain: Option<String>,
    max_bindings: Option<u32>,
    min_expires: Option<u32>,
    flow_timer: Option<u32>,
    tcp_keepalive: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ca: Option<PathBuf>,
    store: Option<String>,
    service_route: Option<Vec<String>>,
    max_connections: Option<u32>,
    max_rate_per_source: Option<u32>,
}

/// `[edge]`: `siproam edge`'s settings (over the top-level ones).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EdgeTable {
    listen: Option<Vec<String>>,
    registrar: Option<String>,
    flow_timer: Option<u32>,
    flow_grace: Option<u64>,
    flow_idle: Option<u64>,
    flow_key_file: Option<PathBuf>,
    aggressive_gc: Option<bool>,
    max_connections: Option<u32>,
    max_rate_per_source: Option<u32>,
    store: Option<String>,
}

/// `[call]`: the call options of `agent` and `call`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CallTable {
    auto_answer: Option<bool>,
    play: Option<String>,
    record: Option<PathBuf>,
    max_ringing: Option<usize>,
    max_calls: Option<usize>,
    no_answer: Option<u64>,
    #[serde(default, deserialize_with = "srtp_policy")]
    srtp: Option<siproam::core::sdp::SrtpPolicy>,
}

/// `srtp = "off" | "optional" | "mandatory"` in the config file.
fn srtp_policy<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<siproam::core::sdp::SrtpPolicy>, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("srtp: {s:?} is not off, optional or mandatory"))
    })
}

/// One `[[account]]`: an identity the agent registers, with its flows.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AccountTable {
    aor: Option<String>,
    registrar: Option<String>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    expires: Option<u32>,
    outbound: Option<bool>,
    reg_id: Option<u32>,
    instance_id: Option<String>,
    outbound_proxy: Option<Vec<String>>,
    flow_from: Option<Vec<String>>,
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<FileConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::load_str(&text, path)
    }

    fn load_str(text: &str, path: &std::path::Path) -> anyhow::Result<FileConfig> {
        toml::from_str(text).with_context(|| format!("in {}", path.display()))
    }

    /// `--json` from the file when the flag was not given.
    pub fn json(&self, flag: bool) -> bool {
        flag || self.json.unwrap_or(false)
    }

    /// `-v`, `--trace` and `--pcap` from the file when the flags were not
    /// given (`verbose = 2` is `-vv`).
    pub fn globals(&self, verbose: &mut u8, trace: &mut bool, pcap: &mut Option<PathBuf>) {
        if *verbose == 0 {
            *verbose = self.verbose.unwrap_or(0);
        }
        *trace |= self.trace.unwrap_or(false);
        fill(pcap, &self.pcap);
    }

    /// What `siproam registrar` reads: the top-level keys with its
    /// `[registrar]` table over them.
    pub fn for_registrar(&self) -> FileConfig {
        let mut f = self.clone();
        if let Some(RegistrarKey::Table(t)) = &self.registrar {
            let t = t.as_ref().clone();
            over(&mut f.listen, t.listen);
            over(&mut f.users, t.users);
            over(&mut f.domain, t.domain);
            over(&mut f.max_bindings, t.max_bindings);
            over(&mut f.min_expires, t.min_expires);
            over(&mut f.flow_timer, t.flow_timer);
            over(&mut f.tcp_keepalive, t.tcp_keepalive);
            over(&mut f.tls_cert, t.tls_cert);
            over(&mut f.tls_key, t.tls_key);
            over(&mut f.ca, t.ca);
            over(&mut f.store, t.store);
            over(&mut f.service_route, t.service_route);
            over(&mut f.max_connections, t.max_connections);
            over(&mut f.max_rate_per_source, t.max_rate_per_source);
        }
        f
    }

    /// What `siproam edge` reads: the top-level keys with its `[edge]`
    /// table over them.
    pub fn for_edge(&self) -> FileConfig {
        let mut f = self.clone();
        if let Some(t) = self.edge.clone() {
            over(&mut f.listen, t.listen);
            if let Some(uri) = t.registrar {
                f.registrar = Some(RegistrarKey::Uri(uri));
            }
            over(&mut f.flow_timer, t.flow_timer);
            over(&mut f.flow_grace, t.flow_grace);
            over(&mut f.flow_idle, t.flow_idle);
            over(&mut f.flow_key_file, t.flow_key_file);
            over(&mut f.aggressive_gc, t.aggressive_gc);
            over(&mut f.max_connections, t.max_connections);
            over(&mut f.max_rate_per_source, t.max_rate_per_source);
            over(&mut f.store, t.store);
        }
        f
    }

    /// The registrar's `max-connections` and `max-rate-per-source` from
    /// the file when the flags were not given.
    pub fn registrar_limits(
        &self,
        max_connections: &mut Option<u32>,
        max_rate_per_source: &mut Option<u32>,
    ) -> anyhow::Result<()> {
        if max_connections.is_none() {
            anyhow::ensure!(
                self.max_connections != Some(0),
                "max-connections must be at least 1"
            );
            *max_connections = self.max_connections;
        }
        fill(max_rate_per_source, &self.max_rate_per_source);
        Ok(())
    }

    /// What the agent reads for its first identity: the top-level keys,
    /// or the first `[[account]]` (the two forms cannot go together).
    fn first_account(&self) -> anyhow::Result<FileConfig> {
        let Some(first) = self.accounts.as_ref().and_then(|a| a.first()) else {
            return Ok(self.clone());
        };
        let top: Vec<&str> = [
            ("aor", self.aor.is_some()),
            (
                "registrar",
                self.registrar.as_ref().is_some_and(|r| r.uri().is_some()),
            ),
            ("user", self.user.is_some()),
            ("password", self.password.is_some()),
            ("password-file", self.password_file.is_some()),
            ("expires", self.expires.is_some()),
            ("outbound", self.outbound.is_some()),
            ("reg-id", self.reg_id.is_some()),
            ("instance-id", self.instance_id.is_some()),
            ("outbound-proxy", self.outbound_proxy.is_some()),
            ("flow-from", self.flow_from.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        anyhow::ensure!(
            top.is_empty(),
            "{} at the top level and [[account]] tables cannot go together: \
             move them into an [[account]] (the first one is the top-level form)",
            top.join(", ")
        );
        let a = first.clone();
        let mut f = self.clone();
        f.aor = a.aor;
        f.registrar = a.registrar.map(RegistrarKey::Uri);
        f.user = a.user;
        f.password = a.password;
        f.password_file = a.password_file;
        f.expires = a.expires;
        f.outbound = a.outbound;
        f.reg_id = a.reg_id;
        f.instance_id = a.instance_id;
        f.outbound_proxy = a.outbound_proxy;
        f.flow_from = a.flow_from;
        Ok(f)
    }

    /// Fills what the registrar's flags left out.
    pub fn registrar(
        &self,
        listen: &mut Vec<String>,
        users: &mut Option<PathBuf>,
        domain: &mut Option<String>,
        max_bindings: &mut Option<u32>,
        min_expires: &mut Option<u32>,
        tls: &mut TlsArgs,
    ) -> anyhow::Result<()> {
        if listen.is_empty() {
            listen.extend(self.listen.clone().unwrap_or_default());
        }
        fill(users, &self.users);
        fill(domain, &self.domain);
        if max_bindings.is_none() {
            if self.max_bindings == Some(0) {
                anyhow::bail!("max-bindings must be at least 1");
            }
            *max_bindings = self.max_bindings;
        }
        if min_expires.is_none() {
            if self.min_expires == Some(0) {
                anyhow::bail!("min-expires must be at least 1");
            }
            *min_expires = self.min_expires;
        }
        self.tls(tls);
        Ok(())
    }

    /// The registrar's `flow-timer` from the file when the flag was not
    /// given.
    pub fn flow_timer(&self, slot: &mut Option<u32>) -> anyhow::Result<()> {
        if slot.is_none() {
            if self.flow_timer == Some(0) {
                anyhow::bail!("flow-timer must be at least 1");
            }
            *slot = self.flow_timer;
        }
        Ok(())
    }

    /// `store` and `service-route` from the file when the flags were not
    /// given.
    pub fn store(&self, s: &mut StoreArgs) {
        fill(&mut s.store, &self.store);
        if s.service_routes.is_empty() {
            s.service_routes
                .extend(self.service_route.clone().unwrap_or_default());
        }
    }

    /// Fills what `siproam edge`'s flags left out (`listen`, `registrar`,
    /// `flow-timer`, `flow-grace`, `flow-idle`, `flow-key-file`,
    /// `aggressive-gc`, `max-connections`, `max-rate-per-source`,
    /// `store`).
    pub fn edge(&self, e: &mut crate::edge_cmd::EdgeArgs) -> anyhow::Result<()> {
        if e.listen.is_empty() {
            e.listen.extend(self.listen.clone().unwrap_or_default());
        }
        fill(
            &mut e.registrar,
            &self.registrar.as_ref().and_then(RegistrarKey::uri).cloned(),
        );
        self.flow_timer(&mut e.flow_timer)?;
        fill(&mut e.flow_grace, &self.flow_grace);
        if e.flow_idle.is_none() {
            anyhow::ensure!(self.flow_idle != Some(0), "flow-idle must be at least 1");
            e.flow_idle = self.flow_idle;
        }
        fill(&mut e.flow_key_file, &self.flow_key_file);
        e.aggressive_gc |= self.aggressive_gc.unwrap_or(false);
        if e.max_connections.is_none() {
            anyhow::ensure!(
                self.max_connections != Some(0),
                "max-connections must be at least 1"
            );
            e.max_connections = self.max_connections;
        }
        fill(&mut e.max_rate_per_source, &self.max_rate_per_source);
        fill(&mut e.store, &self.store);
        Ok(())
    }

    /// `tcp-keepalive` from the file when the flag was not given (agent
    /// and registrar alike).
    pub fn tcp_keepalive(
        &self,
        slot: &mut Option<siproam::transport::TcpKeepalive>,
    ) -> anyhow::Result<()> {
        if let (None, Some(k)) = (&slot, &self.tcp_keepalive) {
            *slot = Some(
                k.parse()
                    .with_context(|| format!("tcp-keepalive = {k:?}"))?,
            );
        }
        Ok(())
    }

    fn tls(&self, tls: &mut TlsArgs) {
        fill(&mut tls.tls_cert, &self.tls_cert);
        fill(&mut tls.tls_key, &self.tls_key);
        fill(&mut tls.ca, &self.ca);
    }

    /// Fills the call options the flags left out (from `[call]`, else
    /// the top-level `max-ringing`, `max-calls`, `no-answer`).
    pub fn calls(&self, c: &mut CallArgs) {
        let t = self.call.clone().unwrap_or_default();
        c.auto_answer |= t.auto_answer.unwrap_or(false);
        fill(&mut c.play, &t.play);
        fill(&mut c.record, &t.record);
        fill(&mut c.max_ringing, &t.max_ringing.or(self.max_ringing));
        fill(&mut c.max_calls, &t.max_calls.or(self.max_calls));
        fill(&mut c.no_answer, &t.no_answer.or(self.no_answer));
        fill(&mut c.srtp, &t.srtp);
    }

    /// Fills what the agent's flags left out: its first identity from the
    /// top-level keys or the first `[[account]]`, the other accounts in
    /// `more_accounts`.
    pub fn agent(&self, a: &mut AgentArgs) -> anyhow::Result<()> {
        let first = self.first_account()?;
        first.agent_first(a)?;
        for (i, acc) in self.accounts.iter().flatten().enumerate().skip(1) {
            a.more_accounts.push(
                acc.identity(a)
                    .with_context(|| format!("[[account]] {}", i + 1))?,
            );
        }
        Ok(())
    }

    fn agent_first(&self, a: &mut AgentArgs) -> anyhow::Result<()> {
        if self.no_listen == Some(true) && self.listen.as_ref().is_some_and(|l| !l.is_empty()) {
            anyhow::bail!("no-listen and listen cannot go together");
        }
        a.no_listen |= a.listen.is_empty() && self.no_listen.unwrap_or(false);
        if a.listen.is_empty() && !a.no_listen {
            a.listen.extend(self.listen.clone().unwrap_or_default());
        }
        if a.host.is_empty() {
            a.host.extend(self.host.clone().unwrap_or_default());
        }
        if a.outbound_proxy.is_empty() {
            a.outbound_proxy
                .extend(self.outbound_proxy.clone().unwrap_or_default());
        }
        if a.flow_from.is_empty() {
            a.flow_from
                .extend(self.flow_from.clone().unwrap_or_default());
        }
        for (slot, from) in [
            (&mut a.ipv6_sip, &self.ipv6_sip),
            (&mut a.ipv6_media, &self.ipv6_media),
        ] {
            if let (None, Some(mode)) = (&slot, from) {
                *slot = Some(mode.parse()?);
            }
        }
        fill(&mut a.aor, &self.aor);
        fill(
            &mut a.registrar,
            &self.registrar.as_ref().and_then(RegistrarKey::uri).cloned(),
        );
        fill(&mut a.keepalive, &self.keepalive);
        fill(&mut a.keepalive_stream, &self.keepalive_stream);
        fill(&mut a.pong_timeout, &self.pong_timeout);
        self.tcp_keepalive(&mut a.tcp_keepalive)?;
        fill(&mut a.user, &self.user);
        self.password(a)?;
        if a.expires.is_none() {
            a.expires = self.expires;
        }
        a.outbound |= self.outbound.unwrap_or(false);
        if self.reg_id == Some(0) {
            anyhow::bail!("reg-id must be at least 1");
        }
        fill(&mut a.reg_id, &self.reg_id);
        fill(&mut a.instance_id, &self.instance_id);
        fill(&mut a.state_dir, &self.state_dir);
        a.stay |= self.stay.unwrap_or(false);
        a.no_watch |= self.no_watch.unwrap_or(false);
        if a.watcher.is_empty() {
            for w in self.watchers.iter().flatten() {
                a.watcher
                    .push(parse_watcher(w).map_err(|e| anyhow::anyhow!("watchers: {e}"))?);
            }
        }
        self.tls(&mut a.tls);
        Ok(())
    }
}

/// The environment variable the agent reads its digest password from.
pub const PASSWORD_ENV: &str = "SIPROAM_PASSWORD";

impl FileConfig {
    /// The agent's password, from the first of: `--password` (with a
    /// warning: the process list shows it), `--password-file`,
    /// `SIPROAM_PASSWORD`, the file's `password-file`, the file's
    /// `password`.
    fn password(&self, a: &mut AgentArgs) -> anyhow::Result<()> {
        if a.password.is_some() {
            tracing::info!(
                "--password is visible to other users in the process list; \
                 use --password-file FILE or {PASSWORD_ENV} instead"
            );
            return Ok(());
        }
        if let Some(path) = &a.password_file {
            a.password = Some(read_password_file(path)?);
            return Ok(());
        }
        if let Some(pw) = std::env::var_os(PASSWORD_ENV).filter(|v| !v.is_empty()) {
            let pw = pw
                .into_string()
                .map_err(|_| anyhow::anyhow!("{PASSWORD_ENV} is not valid UTF-8"))?;
            a.password = Some(pw);
            return Ok(());
        }
        if let Some(path) = &self.password_file {
            a.password = Some(read_password_file(path)?);
            return Ok(());
        }
        fill(&mut a.password, &self.password);
        Ok(())
    }
}

/// The first line of a password file (without its line ending).
fn read_password_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    anyhow::ensure!(
        !line.is_empty(),
        "the password file {} is empty",
        path.display()
    );
    Ok(line.to_owned())
}

impl AccountTable {
    /// The agent's settings for this account: the first identity's with
    /// this account's own keys instead (the flags set the first alone).
    fn identity(&self, first: &AgentArgs) -> anyhow::Result<AgentArgs> {
        let aor = self.aor.clone().context("aor is required")?;
        anyhow::ensure!(self.reg_id != Some(0), "reg-id must be at least 1");
        let password = match (&self.password_file, &self.password) {
            (Some(path), _) => Some(read_password_file(path)?),
            (None, p) => p.clone(),
        };
        Ok(AgentArgs {
            aor: Some(aor),
            registrar: self.registrar.clone(),
            user: self.user.clone(),
            password,
            password_file: None,
            expires: self.expires,
            outbound: self.outbound.unwrap_or(false),
            reg_id: self.reg_id,
            instance_id: self.instance_id.clone(),
            outbound_proxy: self.outbound_proxy.clone().unwrap_or_default(),
            flow_from: self.flow_from.clone().unwrap_or_default(),
            more_accounts: Vec::new(),
            ..first.clone()
        })
    }
}

/// `from` over `slot` when it is set.
fn over<T>(slot: &mut Option<T>, from: Option<T>) {
    if from.is_some() {
        *slot = from;
    }
}

fn fill<T: Clone>(slot: &mut Option<T>, from: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(from);
    }
}

/// Call options shared by `agent` and `call`.
#[derive(Debug, clap::Args, Clone, Default)]
pub struct CallArgs {
    /// Answer incoming calls at once.
    #[arg(long)]
    pub auto_answer: bool,
    /// What to send: `tone:HZ` or a WAV file (16-bit, mono, 8 kHz).
    #[arg(long, value_name = "tone:HZ|FILE")]
    pub play: Option<String>,
    /// Write what is heard to a WAV file.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Incoming calls that may ring at once; an INVITE beyond is answered
    /// 486 Busy Here (default 8).
    #[arg(long, value_name = "N")]
    pub max_ringing: Option<usize>,
    /// Incoming calls at once, ringing or answered; beyond, 486 (default 64).
    #[arg(long, value_name = "N")]
    pub max_calls: Option<usize>,
    /// Seconds an incoming call rings before it is refused 480 Temporarily
    /// Unavailable (default 120; 0 = until the caller gives up).
    #[arg(long, value_name = "SECS")]
    pub no_answer: Option<u64>,
    /// SRTP (keys in SDP, RFC 4568): `off` (plain RTP only, the default),
    /// `optional` (offered, used when the peer takes it) or `mandatory`
    /// (`RTP/SAVP`; a call that would be plain is refused or ended).
    #[arg(long, value_name = "off|optional|mandatory")]
    pub srtp: Option<siproam::core::sdp::SrtpPolicy>,
}

impl CallArgs {
    /// The limits on incoming calls these flags ask for.
    fn incoming(&self) -> siproam::core::IncomingCallLimits {
        let d = siproam::core::IncomingCallLimits::default();
        siproam::core::IncomingCallLimits {
            max_unanswered: self.max_ringing.unwrap_or(d.max_unanswered),
            max_calls: self.max_calls.unwrap_or(d.max_calls),
            no_answer: match self.no_answer {
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
                None => d.no_answer,
            },
        }
    }
}

/// The `transfer` event (`role` besides the contract's fields).
fn transfer_json(t: &TransferEvent) -> Value {
    json!({
        "event": "transfer",
        "call": t.call.0,
        "state": t.state.as_str(),
        "target": t.target,
        "code": t.code,
        "role": match t.role {
            TransferRole::Transferor => "transferor",
            TransferRole::Transferee => "transferee",
        },
    })
}

/// The `subscription` event. The package is `package`: `event` is the
/// event kind of every line.
fn subscription_json(s: &SubscriptionEvent) -> Value {
    let body = match &s.body {
        Some(NotifyBody::Presence(p)) => json!(p.status.as_str()),
        Some(NotifyBody::MessageSummary(m)) => {
            let counts = m.voice.unwrap_or_default();
            json!({"messages_waiting": m.waiting, "new": counts.new, "old": counts.old})
        }
        None => Value::Null,
    };
    let mut v = json!({
        "event": "subscription",
        "sub": s.sub.0,
        "package": s.event,
        "role": match s.role {
            SubscriptionRole::Subscriber => "subscriber",
            SubscriptionRole::Notifier => "notifier",
        },
        "peer": s.peer,
        "state": s.state.as_str(),
        "reason": s.reason.as_ref().map(SubscriptionReason::text),
        "body": body,
    });
    if let (Some(r), Some(obj)) = (s.retry_after, v.as_object_mut()) {
        obj.insert("retry_after".into(), json!(r));
    }
    v
}

fn call_json(ev: &CallEvent) -> Option<Value> {
    match ev {
        CallEvent::State {
            call, state, code, ..
        } => Some(json!({
            "event": "call",
            "call": call.0,
            "state": state.as_str(),
            "code": code,
        })),
        _ => None,
    }
}

/// The `call_refresh` event (README, "Seeing a hand-off"): `sent` when a
/// network change re-offers a call (`method` `re-INVITE` or `UPDATE`),
/// `answered` on the peer's 2xx to a re-INVITE or UPDATE of ours,
/// `failed` with its `code`, `received` for the peer's re-offer.
pub fn call_refresh_json(ev: &Event) -> Option<Value> {
    use siproam::core::CallMoveAction;
    let method = |update: bool| if update { "UPDATE" } else { "re-INVITE" };
    let (call, state, fields) = match ev {
        Event::CallMoved {
            call,
            action: CallMoveAction::Reoffer { update },
            ..
        } => (call, "sent", json!({"method": method(*update)})),
        Event::Call(CallEvent::Answer { call, .. }) => (call, "answered", json!({})),
        Event::Call(CallEvent::RefreshFailed { call, code }) => {
            (call, "failed", json!({"code": code}))
        }
        Event::Call(CallEvent::Offer { call, update, .. }) => {
            (call, "received", json!({"method": method(*update)}))
        }
        _ => return None,
    };
    let mut v = json!({"event": "call_refresh", "call": call.0, "state": state});
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), fields) {
        obj.extend(more);
    }
    Some(v)
}

/// `network` of `docs/events.md` event: what the network monitor saw.
pub fn network_json(n: &siproam::netwatch::NetworkEvent) -> Value {
    json!({
        "event": "network",
        "kind": n.kind.as_str(),
        "interface": n.interface,
        "address": n.address.map(|a| a.to_string()),
    })
}

/// `flow` of `docs/events.md` event.
pub fn flow_json(f: &siproam::core::FlowEvent) -> Value {
    json!({
        "event": "flow",
        "flow": f.flow.0,
        "account": f.account.0,
        "reg_id": f.reg_id,
        "state": f.state.as_str(),
        "transport": f.transport.param(),
        "local": f.local.map(|a| a.to_string()),
        "remote": f.remote.to_string(),
        "flow_timer": f.flow_timer,
        "reason": f.reason.map(flow_reason),
    })
}

/// A failed flow's usages and what is done with each: a `flow` event
/// with `state` `terminated` (after the accounts' `failed`), whose
/// `registrations` and `calls` list `{account|call, action}`.
pub fn flow_terminated_json(t: &siproam::core::FlowTerminated) -> Value {
    use siproam::core::{InviteRecovery, RegistrationRecovery};
    let registrations: Vec<Value> = t
        .registrations
        .iter()
        .map(|(a, r)| {
            let action = match r {
                RegistrationRecovery::Reregister => "reregister",
                RegistrationRecovery::Ignore => "ignore",
            };
            json!({"account": a.0, "action": action})
        })
        .collect();
    let calls: Vec<Value> = t
        .calls
        .iter()
        .map(|(c, r)| {
            let action = match r {
                InviteRecovery::Repair { .. } => "repair",
                InviteRecovery::HangUp => "hangup",
                InviteRecovery::Ignore => "ignore",
            };
            json!({"call": c.0, "action": action})
        })
        .collect();
    json!({
        "event": "flow",
        "flow": t.flow.0,
        "state": "terminated",
        "transport": t.transport.param(),
        "local": t.local.map(|a| a.to_string()),
        "remote": t.remote.to_string(),
        "reason": flow_reason(t.reason),
        "registrations": registrations,
        "calls": calls,
    })
}

/// the name in `docs/events.md` for why a flow failed.
pub(crate) fn flow_reason(r: siproam::core::FlowCloseReason) -> &'static str {
    use siproam::core::FlowCloseReason as R;
    match r {
        R::KeepAliveTimeout => "pong_timeout",
        R::StunTimeout => "stun_timeout",
        R::StunChanged => "stun_changed",
        R::PeerClosed => "closed",
        R::Reset => "reset",
        R::ConnectFailed => "connect_failed",
        R::Idle => "idle",
        R::FramingError => "framing_error",
        R::Local => "closed_locally",
        R::FlowFailed => "430",
        R::Unregistered => "unregistered",
        R::Replaced => "replaced",
        _ => "other",
    }
}

/// `ip_change` of `docs/events.md` event.
pub fn ip_change_json(c: &siproam::IpChangeReport) -> Value {
    let mut v = json!({
        "event": "ip_change",
        "stage": c.stage.as_str(),
        "trigger": c.trigger.as_str(),
        "status": c.status_text(),
        "elapsed_ms": (c.elapsed_ms() * 1000.0).round() / 1000.0,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(a) = c.account {
            obj.insert("account".into(), json!(a.0));
        }
        if let Some(call) = c.call {
            obj.insert("call".into(), json!(call.0));
        }
        if let Some(t) = c.transport {
            obj.insert("transport".into(), json!(t.param()));
        }
        if let Some(a) = c.address {
            obj.insert("address".into(), json!(a.to_string()));
        }
    }
    v
}

fn media_json(m: &MediaReport) -> Value {
    json!({
        "event": "media",
        "call": m.call.0,
        "local": m.local.to_string(),
        "remote": m.remote.map(|r| r.to_string()),
        "tx_packets": m.tx_packets,
        "rx_packets": m.rx_packets,
        "rtcp_rx_packets": m.rtcp_rx_packets,
        "lost": m.lost,
        "max_gap_ms": (m.max_gap_ms * 10.0).round() / 10.0,
        "srtp": m.srtp,
        "srtp_dropped": m.srtp_dropped,
        "final": m.last,
    })
}

/// `siproam agent` (and `siproam call`, which sets `call_now` and
/// `exit_after_call`).
/// The text of a `message URI TEXT` line: everything after the URI, as
/// typed (inner spaces kept).
fn message_text(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("message")?.trim_start();
    let uri_end = rest.find(char::is_whitespace)?;
    let text = rest.get(uri_end..)?.trim();
    (!text.is_empty()).then_some(text)
}

fn message_json(m: &siproam::MessageReport) -> Value {
    let mut v = json!({
        "event": "message",
        "direction": m.direction.as_str(),
        "peer": m.peer,
        "text": m.text,
    });
    if let (Some(code), Some(obj)) = (m.code, v.as_object_mut()) {
        obj.insert("code".into(), json!(code));
    }
    v
}

pub async fn agent(
    args: AgentArgs,
    calls: CallArgs,
    json_out: bool,
    call_now: Option<String>,
) -> anyhow::Result<ExitCode> {
    let aor = args
        .aor
        .clone()
        .context("--aor is required (or aor = … in --config)")?;
    let listen = if args.no_listen {
        Vec::new()
    } else if args.listen.is_empty() {
        vec!["udp:0.0.0.0:0".to_owned(), "tcp:0.0.0.0:0".to_owned()]
    } else {
        args.listen.clone()
    };
    let listen: Vec<_> = listen
        .iter()
        .map(|s| parse_listen(s))
        .collect::<Result<_, _>>()?;
    let play = match &calls.play {
        Some(p) => AudioSpec::parse(p)
            .with_context(|| format!("--play {p}: tone:HZ (1–3999) or a WAV file"))?,
        None => AudioSpec::Tone(1000.0),
    };
    let phone = Phone::new(
        PhoneConfig {
            auto_answer: calls.auto_answer,
            play,
            record: calls.record.clone(),
            media_ip: None,
            ipv6_media: args.ipv6_media.unwrap_or_default(),
            incoming: calls.incoming(),
            srtp: calls.srtp.unwrap_or_default(),
            ..Default::default()
        },
        seed(),
    );
    let ep_cfg = EndpointConfig {
        listen,
        core: siproam::core::Config {
            seed: seed(),
            // SUBSCRIBEs to our AoR's user (registered or not), from the
            // watchers we were given
            local_aors: std::iter::once(aor.clone())
                .chain(args.more_accounts.iter().filter_map(|a| a.aor.clone()))
                .collect(),
            watchers: args.watcher.clone(),
            ..Default::default()
        },
        transport: TransportConfig {
            tcp_keepalive: args.tcp_keepalive,
            ..transport_config(&args.tls)?
        },
        hosts: parse_hosts(&args.host)?,
        watch: (!args.no_watch).then(siproam::WatchConfig::default),
    };
    let mut ep = EndpointHandle::start(ep_cfg, Box::new(phone)).await?;
    announce_listeners(&ep, json_out).await?;
    // one account per flow of each identity (RFC 5626: the same AoR and
    // instance, reg-id 1, 2, …); the identities of `[[account]]` tables
    // after the first
    let mut accounts = Vec::new();
    // each account's address of record (several with `[[account]]`)
    let mut account_aors = std::collections::BTreeMap::new();
    for id in std::iter::once(&args).chain(&args.more_accounts) {
        let (Some(registrar), Some(aor)) = (&id.registrar, &id.aor) else {
            continue;
        };
        let instance = match &id.instance_id {
            Some(urn) => urn.clone(),
            None => kept_instance_id(aor, id.state_dir.as_deref())?,
        };
        for (reg_id, flow) in id.flows()? {
            let first_hop_of_account = flow.outbound_proxy.clone();
            accounts.push(
                ep.register(AccountSpec {
                    aor: aor.clone(),
                    registrar: registrar.clone(),
                    username: id.user.clone(),
                    password: id.password.clone(),
                    instance_id: Some(instance.clone()),
                    outbound: id.outbound,
                    reg_id,
                    expires: id.expires.unwrap_or(600),
                    ipv6_sip: id.ipv6_sip.unwrap_or_default(),
                    ipv6_media: id.ipv6_media.unwrap_or_default(),
                    ip_change: None,
                    flow,
                })
                .await
                .map_err(|e| {
                    let (role, hop) = match &first_hop_of_account {
                        Some(p) => ("outbound proxy", p.as_str()),
                        None => ("registrar", registrar.as_str()),
                    };
                    crate::errors::register_error(e, role, hop)
                })?,
            );
            if let Some(acc) = accounts.last() {
                account_aors.insert(acc.0, aor.clone());
            }
        }
    }
    // calls go to the first outbound proxy, else the registrar (with
    // outbound in force the core picks a live flow)
    let first_hop = args
        .outbound_proxy
        .first()
        .or(args.registrar.as_ref())
        .map(String::as_str);
    let exit_after_call = call_now.is_some();
    let mut current: Option<CallId> = None;
    // the calls not ended yet, oldest first
    let mut live: Vec<CallId> = Vec::new();
    // the call `siproam call` placed: its end ends the command
    let mut placed: Option<CallId> = None;
    if let Some(uri) = call_now {
        let id = ep
            .call(&uri, &aor, first_hop)
            .await
            .map_err(|e| crate::errors::call_error(e, &uri, first_hop))?;
        current = Some(id);
        placed = Some(id);
    }
    // `siproam call`: why it failed, said on stderr as it ends
    let mut call_failure: Option<String> = None;
    // a normally ended `siproam call` waits this long for its final media
    // report
    let mut ending: Option<tokio::time::Instant> = None;
    // the last registration failure told, per account (said once, not at
    // every retry)
    let mut told: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    let digest_user = args.user.clone().unwrap_or_else(|| {
        siproam_sip::Uri::parse(&aor)
            .ok()
            .and_then(|u| u.as_sip().and_then(|s| s.user().map(str::to_owned)))
            .unwrap_or_default()
    });
    let timeout_secs = siproam::core::Config::default().t1x64().as_secs();
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut last: Option<Value> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut failed_call = false;
    let mut answered = false;
    // the last wrong-password report, told with the call it ends
    let mut auth_failure: Option<String> = None;
    // the subscriptions we serve, ended with a final NOTIFY when we quit
    // the subscriptions held and served, ended when we go away
    let mut subscriptions = std::collections::HashSet::new();
    // what the events told, for `status`
    let mut state = crate::agent_state::AgentState::new(&aor, account_aors.clone());
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = stdout_gone().notified() => break,
            () = async {
                match ending {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => break,
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    let mut words = line.split_whitespace();
                    let cmd = words.next().unwrap_or_default();
                    let arg = words.next();
                    let target = arg.and_then(|a| a.parse::<u32>().ok()).map(CallId).or(current);
                    let r = match (cmd, target) {
                        ("", _) => Ok(()),
                        ("quit", _) => break,
                        ("status", _) => match ep.listeners().await {
                            Ok(listeners) => {
                                let s = state.status_json(&listeners, Instant::now());
                                if json_out {
                                    // the last registration event first, as
                                    // `status` told before the `status` event
                                    emit(json_out, last.clone().unwrap_or_else(|| json!({"event": "registration", "state": "unregistered"})));
                                    emit(json_out, s);
                                } else {
                                    for l in crate::agent_state::status_lines(&s) {
                                        println!("{l}");
                                    }
                                }
                                Ok(())
                            }
                            Err(e) => Err(e.into()),
                        },
                        ("call", _) => match arg {
                            Some(uri) => match crate::errors::check_call_uri("call", uri) {
                                Ok(()) => ep.call(uri, &aor, first_hop).await.map(|id| {
                                    current = Some(id);
                                }).map_err(|e| crate::errors::call_error(e, uri, first_hop)),
                                Err(e) => Err(e),
                            },
                            None => Err(anyhow::anyhow!("call URI")),
                        },
                        ("answer", Some(c)) => ep.phone(PhoneCommand::Answer(c)).await.map_err(anyhow::Error::from),
                        ("hangup", Some(c)) => ep.phone(PhoneCommand::HangUp(c)).await.map_err(anyhow::Error::from),
                        ("hold" | "unhold", Some(c)) => {
                            let hold = cmd == "hold";
                            ep.phone(PhoneCommand::Hold(c, hold)).await.map(|_| state.hold_asked(c, hold)).map_err(anyhow::Error::from)
                        }
                        // new SRTP keys, offered in a re-INVITE
                        ("rekey", Some(c)) => ep.phone(PhoneCommand::Rekey(c)).await.map(|_| ()).map_err(anyhow::Error::from),
                        ("answer" | "hangup" | "hold" | "unhold" | "rekey", None) => Err(anyhow::anyhow!("no call")),
                        // `dtmf [CALL] DIGITS`: digits alone look like a
                        // call number, so the count of words decides
                        ("dtmf", _) => match (arg, words.next()) {
                            (Some(c), Some(keys)) => match c.parse::<u32>() {
                                Ok(c) => ep.phone(PhoneCommand::Dtmf(CallId(c), keys.to_owned())).await.map_err(anyhow::Error::from),
                                Err(_) => Err(anyhow::anyhow!("dtmf [CALL] DIGITS: CALL a number")),
                            },
                            (Some(keys), None) => match current {
                                Some(c) => ep.phone(PhoneCommand::Dtmf(c, keys.to_owned())).await.map_err(anyhow::Error::from),
                                None => Err(anyhow::anyhow!("no call")),
                            },
                            (None, _) => Err(anyhow::anyhow!("dtmf [CALL] DIGITS")),
                        },
                        // `message URI TEXT`: the text is the rest of the line
                        ("message", _) => match (arg, message_text(&line)) {
                            (Some(uri), Some(text)) => ep.message(uri, &aor, first_hop, text).await.map_err(anyhow::Error::from),
                            _ => Err(anyhow::anyhow!("message URI TEXT")),
                        },
                        ("ip-change", _) => match arg.map(str::parse::<std::net::IpAddr>) {
                            Some(Ok(ip)) => ep.ip_change(ip).await.map_err(anyhow::Error::from),
                            Some(Err(_)) => Err(anyhow::anyhow!("ip-change ADDR: an IP address")),
                            // restart in place: pinned listeners stay while their address exists
                            None => ep.handle_ip_change(siproam::IpChangeParams::in_place()).await.map_err(anyhow::Error::from),
                        },
                        ("subscribe", _) => match (arg, words.next()) {
                            (Some(uri), Some(event)) => ep.subscribe(uri, &aor, first_hop, event).await.map_err(anyhow::Error::from),
                            _ => Err(anyhow::anyhow!("subscribe URI EVENT")),
                        },
                        // `transfer [CALL] URI` (blind) or `transfer CALL
                        // OTHER_CALL` (attended)
                        ("transfer", _) => match (arg, words.next()) {
                            (Some(c), Some(to)) => match (c.parse::<u32>(), to.parse::<u32>()) {
                                (Ok(c), Ok(other)) => ep.transfer_attended(CallId(c), CallId(other)).await.map_err(anyhow::Error::from),
                                (Ok(c), Err(_)) => ep.transfer(CallId(c), to).await.map_err(anyhow::Error::from),
                                (Err(_), _) => Err(anyhow::anyhow!("transfer [CALL] URI: CALL a number")),
                            },
                            (Some(uri), None) => match current {
                                Some(c) => ep.transfer(c, uri).await.map_err(anyhow::Error::from),
                                None => Err(anyhow::anyhow!("no call")),
                            },
                            (None, _) => Err(anyhow::anyhow!("transfer [CALL] URI | transfer CALL OTHER_CALL")),
                        },
                        ("unsubscribe", _) => match arg.and_then(|a| a.parse::<u32>().ok()) {
                            Some(id) => ep.unsubscribe(SubId(id)).await.map_err(anyhow::Error::from),
                            None => Err(anyhow::anyhow!("unsubscribe SUB")),
                        },
                        (other, _) => Err(anyhow::anyhow!("unknown command {other:?} (commands: {AGENT_COMMANDS_BRIEF})")),
                    };
                    if let Err(e) = r {
                        emit(json_out, json!({"event": "error", "command": cmd, "reason": crate::errors::report(&e)}));
                    }
                }
                Ok(None) | Err(_) => {
                    stdin_open = false;
                    if !args.stay && !exit_after_call {
                        break;
                    }
                }
            },
            ev = ep.next_event() => match ev {
                Some(EndpointEvent::Core(Event::Registration(r))) => {
                    let v = registration_json(&r, account_aors.get(&r.account.0));
                    state.registration(&v, Instant::now());
                    last = Some(v.clone());
                    emit(json_out, v);
                    if r.state == RegistrationState::Failed {
                        let said = crate::errors::registration_failure(
                            r.failure,
                            r.code,
                            &digest_user,
                            args.password.is_some(),
                            args.registrar.as_deref().unwrap_or_default(),
                            timeout_secs,
                        );
                        if let Some(said) = said {
                            if told.get(&r.account.0) != Some(&said) {
                                eprintln!("error: {said}");
                                told.insert(r.account.0, said);
                            }
                        }
                    } else if r.state == RegistrationState::Registered {
                        told.remove(&r.account.0);
                    }
                }
                Some(EndpointEvent::Core(Event::AuthenticationFailed { user, realm, .. })) => {
                    // said with the call it ends (the user's own output,
                    // not a log)
                    auth_failure = Some(format!("authentication failed for {user} at realm {realm}"));
                }
                Some(EndpointEvent::Core(ev @ Event::CallMoved { .. })) => {
                    if let Some(v) = call_refresh_json(&ev) {
                        emit(json_out, v);
                    }
                }
                Some(EndpointEvent::Core(Event::Call(c))) => {
                    if let Some(v) = call_refresh_json(&Event::Call(c.clone())) {
                        emit(json_out, v);
                    }
                    let mut reason = None;
                    if let CallEvent::State { call, state, code, .. } = &c {
                        if *state == CallState::Disconnected && matches!(code, Some(401 | 407)) {
                            reason = auth_failure.take();
                        }
                        if *state == CallState::Incoming && current.is_none() {
                            current = Some(*call);
                        }
                        if *state != CallState::Disconnected && !live.contains(call) {
                            live.push(*call);
                        }
                        if *state == CallState::Disconnected {
                            live.retain(|c| c != call);
                            // the default call ends: the newest still up
                            // (e.g. the one that replaced it, RFC 3891)
                            // becomes the default
                            if current == Some(*call) {
                                current = live.last().copied();
                            }
                            failed_call = code.is_some_and(|c| c >= 300);
                            if placed == Some(*call) {
                                if failed_call || !answered {
                                    let mut why = crate::errors::call_failure(
                                        *code,
                                        reason.as_deref(),
                                        args.password.is_some(),
                                    );
                                    if *code == Some(488) && calls.srtp == Some(siproam::core::sdp::SrtpPolicy::Mandatory) {
                                        if answered {
                                            // the peer answered plain: we
                                            // ended it (BYE, Reason 488)
                                            why = "call failed: SRTP is mandatory and the peer's answer has no usable crypto (ended with a BYE giving 488)".to_owned();
                                        } else {
                                            why.push_str(" (SRTP is mandatory: the peer did not take the encrypted offer)");
                                        }
                                    }
                                    call_failure = Some(why);
                                    failed_call = true;
                                } else {
                                    // its final media report, then exit
                                    ending = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                                }
                            }
                        }
                        if *state == CallState::Confirmed && placed == Some(*call) {
                            answered = true;
                        }
                    }
                    let fields = state.call_fields(&c);
                    if let Some(mut v) = call_json(&c) {
                        if let (Some(o), Value::Object(more)) = (v.as_object_mut(), fields) {
                            o.extend(more);
                        }
                        if let (Some(r), Some(o)) = (reason, v.as_object_mut()) {
                            o.insert("reason".into(), json!(r));
                        }
                        emit(json_out, v);
                    }
                    if let Some(v) = state.hold_outcome(&c) {
                        emit(json_out, v);
                    }
                    if exit_after_call && call_failure.is_some() {
                        break;
                    }
                }
                Some(EndpointEvent::IpChange(c)) => emit(json_out, ip_change_json(&c)),
                Some(EndpointEvent::Core(Event::Flow(f))) => {
                    let v = flow_json(&f);
                    state.flow(&v);
                    emit(json_out, v);
                }
                Some(EndpointEvent::Core(Event::FlowTerminated(t))) => {
                    emit(json_out, flow_terminated_json(&t))
                }
                Some(EndpointEvent::Network(n)) => emit(json_out, network_json(&n)),
                Some(EndpointEvent::Core(Event::Transfer(t))) => {
                    emit(json_out, transfer_json(&t));
                    // the peer asked us to call someone: we do, through
                    // our usual first hop (a failure gives the transfer up)
                    if t.role == TransferRole::Transferee && t.state == TransferState::Requested {
                        if let Err(e) = ep.follow_transfer(t.transfer, &t.target, &aor, first_hop).await {
                            emit(json_out, json!({"event": "error", "command": "transfer", "reason": format!("{e:#}")}));
                        }
                    }
                }
                Some(EndpointEvent::Core(Event::Subscription(s))) => {
                    if s.state == SubscriptionState::Terminated {
                        subscriptions.remove(&s.sub);
                    } else {
                        subscriptions.insert(s.sub);
                    }
                    let v = subscription_json(&s);
                    state.subscription(&v);
                    emit(json_out, v);
                }
                // the peer's first RTP packet on our new media address
                Some(EndpointEvent::MediaMoved { call, local, .. }) => emit(
                    json_out,
                    json!({"event": "media_moved", "call": call.0, "local": local.to_string()}),
                ),
                Some(EndpointEvent::Media(m)) => {
                    let v = media_json(&m);
                    state.media(&v);
                    emit(json_out, v);
                    if m.last && exit_after_call {
                        break;
                    }
                }
                Some(EndpointEvent::Message(m)) => emit(json_out, message_json(&m)),
                Some(EndpointEvent::Dtmf(d)) => emit(
                    json_out,
                    json!({"event": "dtmf", "call": d.call.0, "digit": d.digit.as_char().to_string(), "direction": d.direction.as_str()}),
                ),
                Some(_) => {}
                None => break,
            },
        }
    }
    if let Some(c) = current {
        let _ = ep.phone(PhoneCommand::HangUp(c)).await;
        // let the final media report and the BYE go out
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(ev) = ep.next_event().await {
                match ev {
                    EndpointEvent::Media(m) if m.last => {
                        emit(json_out, media_json(&m));
                        break;
                    }
                    EndpointEvent::Core(Event::Call(c)) => {
                        let fields = state.call_fields(&c);
                        if let Some(mut v) = call_json(&c) {
                            if let (Some(o), Value::Object(more)) = (v.as_object_mut(), fields) {
                                o.extend(more);
                            }
                            emit(json_out, v);
                        }
                    }
                    _ => {}
                }
            }
        })
        .await;
    }
    if !subscriptions.is_empty() {
        // the notifiers hear that we unsubscribe; our subscribers that we
        // went away (presence `closed`, then a final NOTIFY each) — before
        // the unregistration, while the account is there to answer a
        // proxy's challenge to them (it is forgotten once the registrar
        // answers the un-REGISTER). Bounded: a request unanswered ends by
        // its own timeout (64*T1) or this wait.
        let _ = ep.end_all_subscriptions().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    ev = ep.next_event() => match ev {
                        Some(EndpointEvent::Core(Event::Subscription(s))) => {
                            emit(json_out, subscription_json(&s));
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = tick.tick() => {
                        if !ep.subscription_requests_pending().await.unwrap_or(false) {
                            break;
                        }
                    }
                }
            }
        })
        .await;
    }
    // remove the bindings before leaving (bounded wait)
    let mut pending = 0;
    for acc in accounts {
        if ep.unregister(acc).await.is_ok() {
            pending += 1;
        }
    }
    if pending > 0 {
        let wait = async {
            while let Some(ev) = ep.next_event().await {
                match ev {
                    EndpointEvent::Core(Event::Registration(r)) => {
                        emit(
                            json_out,
                            registration_json(&r, account_aors.get(&r.account.0)),
                        );
                        if r.state == RegistrationState::Unregistered {
                            pending -= 1;
                            if pending == 0 {
                                break;
                            }
                        }
                    }
                    // (its flow reported closed)
                    EndpointEvent::Core(Event::Flow(f)) => emit(json_out, flow_json(&f)),
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    }
    ep.shutdown().await;
    if let Some(why) = &call_failure {
        eprintln!("error: {why}");
    }
    Ok(if exit_after_call && failed_call {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn spec(args: &[&str], toml_text: &str) -> siproam::FlowSpec {
        let mut a = Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .unwrap()
            .agent;
        let file: FileConfig = toml::from_str(toml_text).unwrap();
        file.agent(&mut a).unwrap();
        a.flow_spec().unwrap()
    }

    /// The README's example config file: every command reads its part.
    fn readme_example() -> FileConfig {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\njson = true").unwrap() + "```toml\n".len();
        let len = readme[start..].find("```").unwrap();
        FileConfig::load_str(&readme[start..start + len], std::path::Path::new("README")).unwrap()
    }

    #[test]
    fn the_readme_example_config_gives_each_command_its_part() {
        let file = readme_example();
        // the flags set the first account and win over the file
        let mut a = Cli::try_parse_from(["agent", "--password", "x", "--expires", "90"])
            .unwrap()
            .agent;
        file.agent(&mut a).unwrap();
        assert_eq!(a.aor.as_deref(), Some("sip:alice@example.test"));
        assert_eq!(a.password.as_deref(), Some("x"));
        assert_eq!(a.expires, Some(90));
        assert!(a.outbound);
        assert_eq!(a.flows().unwrap().len(), 2);
        assert_eq!(a.watcher, ["sip:carol@example.test"]);
        assert_eq!(a.more_accounts.len(), 1);
        let work = &a.more_accounts[0];
        assert_eq!(work.aor.as_deref(), Some("sip:alice.work@example.test"));
        assert_eq!(work.registrar.as_deref(), Some("sip:pbx.example.test"));
        assert_eq!(work.user.as_deref(), Some("alice"));
        assert_eq!(work.password.as_deref(), Some("secret"));
        assert_eq!(work.expires, Some(300));
        assert!(!work.outbound);
        assert_eq!(work.flows().unwrap().len(), 1);
        // the shared settings come along
        assert_eq!(work.keepalive, Some(30));
        assert_eq!(work.listen, a.listen);
        let mut c = CallArgs::default();
        file.calls(&mut c);
        assert!(c.auto_answer);
        assert_eq!(c.play.as_deref(), Some("tone:440"));
        assert_eq!(c.record, Some(PathBuf::from("heard.wav")));
        let r = file.for_registrar();
        assert_eq!(r.listen, Some(vec!["udp:127.0.0.1:5060".to_owned()]));
        assert_eq!(r.min_expires, Some(60));
        let e = file.for_edge();
        assert_eq!(
            e.registrar
                .as_ref()
                .and_then(RegistrarKey::uri)
                .map(String::as_str),
            Some("sip:127.0.0.1:5070;transport=tcp")
        );
        assert_eq!(e.flow_timer, Some(30));
        // the agent's listeners stay the top-level ones
        assert_eq!(e.listen, file.listen);
    }

    #[test]
    fn the_aor_flag_replaces_the_first_account_alone() {
        let file: FileConfig = toml::from_str(
            "[[account]]\naor = \"sip:a@example.test\"\nregistrar = \"sip:r.example.test\"\n\
             [[account]]\naor = \"sip:b@example.test\"\n",
        )
        .unwrap();
        let mut a = Cli::try_parse_from(["agent", "--aor", "sip:c@example.test"])
            .unwrap()
            .agent;
        file.agent(&mut a).unwrap();
        assert_eq!(a.aor.as_deref(), Some("sip:c@example.test"));
        assert_eq!(a.registrar.as_deref(), Some("sip:r.example.test"));
        assert_eq!(
            a.more_accounts[0].aor.as_deref(),
            Some("sip:b@example.test")
        );
        // an account without its aor is refused, naming which
        let file: FileConfig = toml::from_str(
            "[[account]]\naor = \"sip:a@example.test\"\n[[account]]\nuser = \"b\"\n",
        )
        .unwrap();
        let mut a = Cli::try_parse_from(["agent"]).unwrap().agent;
        let e = format!("{:#}", file.agent(&mut a).unwrap_err());
        assert!(e.contains("[[account]] 2") && e.contains("aor"), "{e}");
    }

    /// `--keepalive` sets the datagram (STUN) and the stream interval,
    /// `--keepalive-stream` the stream one alone; the TOML file the same.
    #[test]
    fn keepalive_feeds_the_datagram_and_the_stream_interval() {
        let secs = |s| Some(Duration::from_secs(s));
        let d = spec(&[], "");
        assert_eq!(
            (d.keepalive_datagram, d.keepalive_stream),
            (secs(30), secs(120))
        );
        let s = spec(&["--keepalive", "5"], "");
        assert_eq!(
            (s.keepalive_datagram, s.keepalive_stream),
            (secs(5), secs(5))
        );
        let s = spec(&["--keepalive", "5", "--keepalive-stream", "60"], "");
        assert_eq!(
            (s.keepalive_datagram, s.keepalive_stream),
            (secs(5), secs(60))
        );
        let s = spec(&["--keepalive", "0"], "");
        assert_eq!((s.keepalive_datagram, s.keepalive_stream), (None, None));
        let s = spec(&[], "keepalive = 7\nkeepalive-stream = 90\n");
        assert_eq!(
            (s.keepalive_datagram, s.keepalive_stream),
            (secs(7), secs(90))
        );
    }

    #[derive(Debug, clap::Parser)]
    struct StoreCli {
        #[command(flatten)]
        store: StoreArgs,
    }

    /// `--store` and `--service-route` (repeatable, in order), or the
    /// file's `store` / `service-route` when the flags are absent.
    #[test]
    fn store_and_service_routes_from_flags_or_the_file() {
        let parse = |args: &[&str], toml_text: &str| {
            let mut s = StoreCli::try_parse_from(std::iter::once("r").chain(args.iter().copied()))
                .unwrap()
                .store;
            let file: FileConfig = toml::from_str(toml_text).unwrap();
            file.store(&mut s);
            (s.store, s.service_routes)
        };
        assert_eq!(parse(&[], ""), (None, Vec::new()));
        let file = "store = \"redis://127.0.0.1:6379\"\nservice-route = [\"sip:a;lr\"]\n";
        assert_eq!(
            parse(&[], file),
            (
                Some("redis://127.0.0.1:6379".to_owned()),
                vec!["sip:a;lr".to_owned()]
            )
        );
        assert_eq!(
            parse(
                &[
                    "--store",
                    "memory",
                    "--service-route",
                    "sip:x;lr",
                    "--service-route",
                    "sip:y;lr"
                ],
                file
            ),
            (
                Some("memory".to_owned()),
                vec!["sip:x;lr".to_owned(), "sip:y;lr".to_owned()]
            )
        );
    }

    #[derive(Debug, clap::Parser)]
    struct EdgeCli {
        #[command(flatten)]
        edge: crate::edge_cmd::EdgeArgs,
    }

    /// `siproam edge` takes every setting from the file too; its flags win.
    #[test]
    fn the_edge_reads_the_file_and_its_flags_win() {
        let parse = |args: &[&str], toml_text: &str| {
            let mut e =
                EdgeCli::try_parse_from(std::iter::once("edge").chain(args.iter().copied()))
                    .unwrap()
                    .edge;
            let file: FileConfig = toml::from_str(toml_text).unwrap();
            file.edge(&mut e).and_then(|()| e.check()).map(|()| e)
        };
        let file = "listen = [\"tcp:127.0.0.1:5062\"]\n\
                    registrar = \"sip:127.0.0.1:5070;transport=tcp\"\n\
                    flow-timer = 20\nflow-grace = 5\nflow-idle = 60\n\
                    flow-key-file = \"edge.key\"\naggressive-gc = true\n\
                    max-connections = 100\nmax-rate-per-source = 0\nstore = \"memory\"\n";
        let e = parse(&[], file).unwrap();
        assert_eq!(e.listen, ["tcp:127.0.0.1:5062"]);
        assert_eq!(
            e.registrar.as_deref(),
            Some("sip:127.0.0.1:5070;transport=tcp")
        );
        assert_eq!(
            (e.flow_timer, e.flow_grace, e.flow_idle),
            (Some(20), Some(5), Some(60))
        );
        assert_eq!(e.flow_key_file, Some(PathBuf::from("edge.key")));
        assert!(e.aggressive_gc);
        assert_eq!(
            (e.max_connections, e.max_rate_per_source),
            (Some(100), Some(0))
        );
        let e = parse(
            &[
                "--listen",
                "udp:127.0.0.1:5064",
                "--registrar",
                "sip:127.0.0.2",
                "--flow-timer",
                "9",
                "--flow-grace",
                "1",
            ],
            file,
        )
        .unwrap();
        assert_eq!(e.listen, ["udp:127.0.0.1:5064"]);
        assert_eq!(e.registrar.as_deref(), Some("sip:127.0.0.2"));
        assert_eq!((e.flow_timer, e.flow_grace), (Some(9), Some(1)));
        // nothing given: the defaults, but a registrar is needed
        let e = parse(&["--registrar", "sip:127.0.0.2"], "").unwrap();
        assert_eq!((e.flow_grace, e.flow_idle, e.store), (None, None, None));
        assert!(parse(&[], "").is_err());
        // zeros and a store the edge does not have are refused
        assert!(parse(&[], "registrar = \"sip:x\"\nflow-idle = 0\n").is_err());
        assert!(parse(&["--store", "redis://127.0.0.1:6379"], file).is_err());
        assert!(parse(&[], "registrar = \"sip:x\"\nstore = \"redis://h:1\"\n").is_err());
    }

    /// (reg-id, outbound proxy, local address) of a flow.
    type Flow = (Option<u32>, Option<String>, Option<String>);

    fn flows(args: &[&str]) -> anyhow::Result<Vec<Flow>> {
        let a = Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .unwrap()
            .agent;
        Ok(a.flows()?
            .into_iter()
            .map(|(r, f)| (r, f.outbound_proxy, f.local_ip.map(|i| i.to_string())))
            .collect())
    }

    /// One flow per `--outbound-proxy` / `--flow-from` (the i-th of each,
    /// the last one repeated), reg-id 1, 2, … (from `--reg-id` when
    /// given); several need `--outbound`; none: one flow as before.
    #[test]
    fn a_message_line_keeps_its_text() {
        assert_eq!(
            message_text("message sip:bob@example.test hello  there, bob "),
            Some("hello  there, bob")
        );
        assert_eq!(message_text("  message   sip:b@h   x"), Some("x"));
        assert_eq!(message_text("message sip:bob@example.test"), None);
        assert_eq!(message_text("message sip:bob@example.test   "), None);
        assert_eq!(message_text("message"), None);
    }

    #[test]
    fn flows_from_the_outbound_proxies_and_local_addresses() {
        let p = |s: &str| Some(s.to_owned());
        assert_eq!(flows(&[]).unwrap(), [(None, None, None)]);
        assert_eq!(
            flows(&["--outbound-proxy", "sip:p1"]).unwrap(),
            [(None, p("sip:p1"), None)]
        );
        assert_eq!(
            flows(&[
                "--outbound",
                "--outbound-proxy",
                "sip:p1",
                "--outbound-proxy",
                "sip:p2"
            ])
            .unwrap(),
            [(Some(1), p("sip:p1"), None), (Some(2), p("sip:p2"), None)]
        );
        assert_eq!(
            flows(&[
                "--outbound",
                "--reg-id",
                "5",
                "--flow-from",
                "127.0.0.7",
                "--flow-from",
                "127.0.0.8",
                "--outbound-proxy",
                "sip:p1",
            ])
            .unwrap(),
            [
                (Some(5), p("sip:p1"), p("127.0.0.7")),
                (Some(6), p("sip:p1"), p("127.0.0.8"))
            ]
        );
        assert!(flows(&["--outbound-proxy", "sip:p1", "--outbound-proxy", "sip:p2"]).is_err());
        assert!(flows(&["--outbound", "--flow-from", "no-such-interface-xyz"]).is_err());
    }

    /// `--flow-from IFACE`: the interface's address (IPv4 first).
    #[cfg(target_os = "linux")]
    #[test]
    fn flow_from_an_interface_takes_its_address() {
        assert_eq!(
            flows(&["--flow-from", "lo"]).unwrap(),
            [(None, None, Some("127.0.0.1".to_owned()))]
        );
    }
}
