//! `siproam bench keepalive --netns`: how long a silently dead flow takes
//! to be found and replaced, on real (namespaced) networks.
//!
//! The topology is `interop/netns/topology.sh`. The registrar runs in the
//! server namespace, Alice in the handset one, both in this process; Alice
//! registers over TCP with outbound and a short keep-alive interval. Each
//! run makes her registration flow silently dead: an nftables rule in the
//! router drops that connection's packets both ways (the path failure the
//! keep-alive exists for; a blackhole route would fail the send at once).
//! `tcpdump` in the handset namespace gives the kernel's time of the
//! first ping (CRLFCRLF, four bytes) that crosses after the rule; the
//! bench takes the time of the `flow failed` event and of the next
//! REGISTER 2xx. RFC 5626 §4.4.1 wants the failure found within the pong
//! timeout of that ping.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;
use siproam::core::{Config, Event, FlowState, RegistrationState};
use siproam::edge::RegistrarApp;
use siproam::transport::Transport;
use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, FlowSpec, UserAgent};
use siproam_edge::Registrar;

use crate::bench_netns::{start_in, Topology};
use crate::run::emit;

const SERVER: &str = "10.9.0.2";

/// Seconds since the Unix epoch, now (the clock tcpdump stamps with).
fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `tcpdump` in a namespace, printing one line per captured packet with
/// its kernel time; the lines come through a channel. Killed on drop.
struct Capture {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Capture {
    fn start(ns: &str, iface: &str, filter: &str) -> anyhow::Result<Capture> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", iface])
            .args(["-l", "-n", "-tt", "--immediate-mode", "-Q", "out"])
            .arg(filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (Debian package tcpdump)")?;
        let out = child.stdout.take().context("tcpdump stdout")?;
        let err = child.stderr.take().context("tcpdump stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // tcpdump says "listening on …" on stderr once it captures
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
            }
        });
        if ready.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("tcpdump did not start capturing in the handset namespace");
        }
        Ok(Capture { child, lines })
    }

    /// The kernel time of the first captured packet stamped at or after
    /// `since`, waiting up to `wait`.
    fn first_after(&self, since: f64, wait: Duration) -> Option<f64> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let t: f64 = line.split_whitespace().next()?.parse().ok()?;
            if t >= since {
                return Some(t);
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `nft -f -` with `script` in namespace `ns`.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (Debian package nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One run's figures, in seconds of the wall clock.
struct Run {
    ping: f64,
    failed: f64,
    registered: f64,
}

/// `siproam bench keepalive --netns`.
pub async fn netns(
    runs: usize,
    keepalive: u64,
    pong_timeout: u64,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    if keepalive == 0 || pong_timeout == 0 {
        bail!("--interval and --pong-timeout must be at least 1 second");
    }
    let topo = Topology::up()?;
    let (h, r, s) = (topo.ns('h'), topo.ns('r'), topo.ns('s'));
    let mut registrar = start_in(
        &s,
        EndpointConfig {
            listen: vec![(Transport::Tcp, format!("{SERVER}:5060").parse()?)],
            core: Config {
                dialogs: false,
                ..Config::default()
            },
            ..Default::default()
        },
        Box::new(RegistrarApp::new(Registrar::new(
            crate::run::registrar_config()?,
        ))),
    )?;
    let registrar_task =
        tokio::spawn(async move { while registrar.next_event().await.is_some() {} });
    let mut alice = start_in(
        &h,
        EndpointConfig {
            listen: vec![(Transport::Tcp, "0.0.0.0:0".parse()?)],
            ..Default::default()
        },
        Box::new(UserAgent),
    )?;
    // only pings: a TCP payload of exactly CRLFCRLF
    let capture = Capture::start(
        &h,
        "wifi0",
        &format!("tcp and dst host {SERVER} and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x0d0a0d0a"),
    )?;
    let instance = siproam::random::instance_id()?;
    alice
        .register(AccountSpec {
            aor: "sip:alice@example.test".to_owned(),
            registrar: format!("sip:{SERVER}:5060;transport=tcp"),
            username: None,
            password: None,
            instance_id: Some(instance),
            outbound: true,
            reg_id: Some(1),
            expires: 3600,
            ipv6_sip: siproam::Ipv6Use::Enabled,
            ipv6_media: siproam::Ipv6Use::Enabled,
            ip_change: None,
            flow: FlowSpec {
                keepalive_stream: Some(Duration::from_secs(keepalive)),
                pong_timeout: Duration::from_secs(pong_timeout),
                ..FlowSpec::default()
            },
        })
        .await?;
    let patience = Duration::from_secs(keepalive + pong_timeout + 30);
    let mut local = wait_flow_up(&mut alice, patience).await?;
    let mut done = Vec::new();
    for _ in 0..runs {
        // a pong first: the flow works before it is cut
        wait_flow(&mut alice, FlowState::KeepaliveOk, patience).await?;
        let cut = wall();
        let port = local.port();
        nft(
            &r,
            &format!(
                "table inet srbench {{\n chain c {{\n  type filter hook forward priority 0;\n  \
                 tcp sport {port} drop\n  tcp dport {port} drop\n }}\n}}\n"
            ),
        )?;
        let failed = wait_flow(&mut alice, FlowState::Failed, patience).await?;
        // the next REGISTER 2xx (over a new connection, which the rule
        // lets through) and the new flow
        let registered = wait_registered(&mut alice, patience).await?;
        local = wait_flow_up(&mut alice, patience).await?;
        nft(&r, "delete table inet srbench\n")?;
        let ping = capture
            .first_after(cut, Duration::from_secs(1))
            .context("no ping captured after the cut")?;
        done.push(Run {
            ping,
            failed,
            registered,
        });
    }
    drop(capture);
    alice.shutdown().await;
    registrar_task.abort();
    drop(topo);

    let ms = |x: f64| (x * 1000.0 * 10.0).round() / 10.0;
    let mut to_failed: Vec<f64> = done.iter().map(|r| ms(r.failed - r.ping)).collect();
    let mut to_registered: Vec<f64> = done.iter().map(|r| ms(r.registered - r.ping)).collect();
    let mut over: Vec<f64> = to_failed
        .iter()
        .map(|f| ms(f / 1000.0 - pong_timeout as f64))
        .collect();
    for v in [&mut to_failed, &mut to_registered, &mut over] {
        v.sort_by(f64::total_cmp);
    }
    let stat = |v: &Vec<f64>| {
        json!({
            "p50": crate::bench::percentile(v, 0.5),
            "max": v.last().copied().unwrap_or(0.0),
            "n": v.len(),
        })
    };
    emit(
        json_out,
        json!({
            "event": "bench",
            "bench": "keepalive-netns",
            "runs": runs,
            "keepalive_s": keepalive,
            "pong_timeout_s": pong_timeout,
            "ping_to_failed_ms": stat(&to_failed),
            "failed_beyond_pong_timeout_ms": stat(&over),
            "ping_to_register_2xx_ms": stat(&to_registered),
            "from": "the kernel's time of the first unanswered ping (tcpdump in the handset namespace)",
        }),
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits for the flow to come up; returns its local address.
async fn wait_flow_up(alice: &mut EndpointHandle, wait: Duration) -> anyhow::Result<SocketAddr> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, alice.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Flow(f)))) if f.state == FlowState::Up => {
                return f.local.context("the flow's local address is unknown");
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("Alice's endpoint stopped"),
            Err(_) => bail!("no flow came up within {wait:?}"),
        }
    }
}

/// Waits for a flow event in `state`; returns its wall time.
async fn wait_flow(
    alice: &mut EndpointHandle,
    state: FlowState,
    wait: Duration,
) -> anyhow::Result<f64> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, alice.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Flow(f)))) if f.state == state => return Ok(wall()),
            Ok(Some(_)) => {}
            Ok(None) => bail!("Alice's endpoint stopped"),
            Err(_) => bail!("no flow {} within {wait:?}", state.as_str()),
        }
    }
}

/// Waits for a REGISTER 2xx; returns its wall time.
async fn wait_registered(alice: &mut EndpointHandle, wait: Duration) -> anyhow::Result<f64> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, alice.next_event()).await {
            Ok(Some(EndpointEvent::Core(Event::Registration(r))))
                if r.state == RegistrationState::Registered =>
            {
                return Ok(wall())
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("Alice's endpoint stopped"),
            Err(_) => bail!("not registered again within {wait:?}"),
        }
    }
}
