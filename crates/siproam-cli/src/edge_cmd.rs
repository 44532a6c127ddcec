//! `siproam edge`: an RFC 5626 edge proxy in front of a registrar (the
//! sans-IO `siproam_edge::EdgeProxy` run by the driver's `EdgeApp`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use siproam::core::Target;
use siproam::edge::{load_or_create_flow_key, EdgeApp, EdgeConfig, EdgeProxy};
use siproam::transport::{Transport, TransportConfig};
use siproam::{EndpointConfig, EndpointEvent, EndpointHandle};

use crate::run::{emit, parse_listen};

/// `siproam edge` flags.
#[derive(Debug, clap::Args, Clone)]
pub struct EdgeArgs {
    /// Where to listen (`PROTO:HOST:PORT`, repeatable); default
    /// udp:127.0.0.1:5060 and tcp:127.0.0.1:5060.
    #[arg(long)]
    pub listen: Vec<String>,
    /// The registrar (or home proxy) behind the edge:
    /// `sip:HOST[:PORT][;transport=udp|tcp|tls]` (required, here or in
    /// the --config file).
    #[arg(long, value_name = "URI")]
    pub registrar: Option<String>,
    /// Flow-Timer (seconds) to put in the REGISTER 2xx relayed with
    /// outbound in force; flows with one are closed after it plus
    /// --flow-grace with nothing received.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub flow_timer: Option<u32>,
    /// Grace beyond the Flow-Timer before a silent flow is closed
    /// (default 30).
    #[arg(long, value_name = "SECS")]
    pub flow_grace: Option<u64>,
    /// Flows without a Flow-Timer are closed after this long with nothing
    /// received (default 7200: 2 hours).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_idle: Option<u64>,
    /// The key that signs flow tokens: read when the file exists (exactly
    /// 32 bytes), else drawn from the OS and written there (0600), so
    /// tokens survive a restart. Without it, a new key each run.
    #[arg(long, value_name = "FILE")]
    pub flow_key_file: Option<PathBuf>,
    /// Close a flow as soon as the same instance and reg-id registered
    /// over a newer one.
    #[arg(long)]
    pub aggressive_gc: bool,
    /// Most TCP/TLS connections open at once (default 1024).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// New requests per second one source address may send (bursts of
    /// twice that); 0 turns the limit off (default 200).
    #[arg(long, value_name = "N")]
    pub max_rate_per_source: Option<u32>,
    /// Where the edge keeps its flows: `memory`, this process (the only
    /// store it has: its flow tokens name the flow themselves, so a
    /// registrar of a fleet needs no shared record of them to reach it).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

/// The default `--flow-grace`, seconds.
const FLOW_GRACE: u64 = 30;
/// The default `--flow-idle`, seconds.
const FLOW_IDLE: u64 = 7200;
/// The default `--max-rate-per-source`.
const MAX_RATE_PER_SOURCE: u32 = 200;

impl EdgeArgs {
    /// Checks what the flags and the config file gave together: the
    /// registrar is there and the store is one the edge has.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.registrar.is_none() {
            bail!("--registrar URI is required (or registrar = \"URI\" in the --config file)");
        }
        match self.store.as_deref() {
            None | Some("memory") => Ok(()),
            Some(other) => bail!(
                "--store {other}: the edge keeps its flows in memory only (its flow \
                 tokens name the flow; a shared store is the registrar's: \
                 siproam registrar --store redis://HOST:PORT)"
            ),
        }
    }
}

/// The next hop a `--registrar` URI names: an IP literal, or a name
/// resolved once at start.
pub async fn registrar_target(uri: Option<&str>) -> anyhow::Result<Target> {
    let Some(uri) = uri else {
        bail!("--registrar URI is required");
    };
    let parsed =
        siproam_sip::Uri::parse(uri).map_err(|e| anyhow::anyhow!("--registrar {uri:?}: {e}"))?;
    let Some(sip) = parsed.as_sip() else {
        bail!("--registrar {uri:?}: a sip: or sips: URI");
    };
    let transport = match sip.transport() {
        Some(t) => Transport::from_token(t)
            .with_context(|| format!("--registrar {uri:?}: unknown transport {t:?}"))?,
        None if sip.is_secure() => Transport::Tls,
        None => Transport::Udp,
    };
    let port = sip.port().unwrap_or(transport.default_port());
    let host = sip.host_str().trim_start_matches('[').trim_end_matches(']');
    let remote = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?,
    };
    Ok(Target {
        transport,
        remote,
        local: None,
        server_name: None,
    })
}

/// The flow-token key: from `--flow-key-file`, or fresh.
pub fn flow_key(file: Option<&std::path::Path>) -> anyhow::Result<[u8; 32]> {
    match file {
        Some(path) => Ok(load_or_create_flow_key(path)?),
        None => Ok(siproam::random::os_seed()?),
    }
}

/// `siproam edge`.
pub async fn edge(
    args: EdgeArgs,
    registrar: Target,
    key: [u8; 32],
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let mut config = EdgeConfig::new(registrar, key);
    config.flow_timer = args.flow_timer;
    config.flow_grace = Duration::from_secs(args.flow_grace.unwrap_or(FLOW_GRACE));
    config.flow_idle = Duration::from_secs(args.flow_idle.unwrap_or(FLOW_IDLE));
    config.aggressive_gc = args.aggressive_gc;
    let listen = if args.listen.is_empty() {
        vec![
            "udp:127.0.0.1:5060".to_owned(),
            "tcp:127.0.0.1:5060".to_owned(),
        ]
    } else {
        args.listen.clone()
    };
    let listen: Vec<_> = listen
        .iter()
        .map(|s| parse_listen(s))
        .collect::<Result<_, _>>()?;
    let app = EdgeApp::new(EdgeProxy::new(config));
    let mut transport = TransportConfig {
        // the edge closes idle flows itself (Flow-Timer + grace, or
        // --flow-idle); connections that never bring a message still go
        // after the first-message deadline
        idle_timeout: None,
        // the pings keep flows alive: the edge hears of them (at most one
        // a second per connection)
        report_pings: true,
        ..TransportConfig::default()
    };
    if let Some(n) = args.max_connections {
        transport.max_connections = usize::try_from(n)?;
        siproam::raise_open_files_limit_to(u64::from(n) + 256)?;
    }
    let rate = args.max_rate_per_source.unwrap_or(MAX_RATE_PER_SOURCE);
    let ep_cfg = EndpointConfig {
        listen,
        core: siproam::core::Config {
            seed: siproam::random::os_u64()?,
            // a proxy: every request goes to the application
            dialogs: false,
            admission: siproam::core::AdmissionConfig {
                per_source_rate: rate,
                per_source_burst: rate.saturating_mul(2),
                ..Default::default()
            },
            ..Default::default()
        },
        transport,
        hosts: Vec::new(),
        watch: None,
    };
    let mut ep = EndpointHandle::start(ep_cfg, Box::new(app)).await?;
    for l in ep.listeners().await? {
        emit(
            json_out,
            json!({"event": "listening", "transport": l.transport.to_string().to_ascii_lowercase(), "address": l.local.to_string()}),
        );
    }
    let stop = crate::run::stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            ev = ep.next_event() => match ev {
                Some(EndpointEvent::Core(siproam::core::Event::FlowClosed { flow, reason })) => {
                    tracing::debug!(%flow, %reason, "edge: flow closed");
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    ep.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
