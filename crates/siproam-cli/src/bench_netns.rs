//! `siproam bench handoff --netns`: the hand-off on real (namespaced)
//! networks, detected by the endpoint itself. The topology is
//! `interop/netns/topology.sh` (a handset with wifi and cell uplinks, a
//! router, a server). The registrar and Bob run in the server namespace,
//! Alice in the handset one, each endpoint on a thread that entered its
//! namespace (so all its sockets, netlink included, live there), all in
//! this process so one clock times everything.
//!
//! Each run: the wifi address is removed (break-before-make: Alice must
//! notice and move to cell), then put back with its routes (make-before-
//! break: wifi is preferred again while cell still works). Timed from just
//! before the `ip` command that makes the change: handling started
//! (detection), REGISTER 2xx with the new Contact, call refresh 2xx, first
//! RTP from Bob on the new address; RTP lost per hand-off from both sides'
//! media reports.

use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use siproam::core::Config;
use siproam::edge::RegistrarApp;
use siproam::transport::Transport;
use siproam::{
    AudioSpec, EndpointConfig, EndpointEvent, EndpointHandle, Phone, PhoneCommand, PhoneConfig,
    WatchConfig,
};
use siproam_edge::Registrar;
use tokio::sync::oneshot;

use crate::run::emit;

pub(crate) const WIFI: &str = "10.1.0.2";
pub(crate) const CELL: &str = "10.2.0.2";
const SERVER: &str = "10.9.0.2";

/// The namespaces, torn down on drop.
pub(crate) struct Topology {
    script: std::path::PathBuf,
    tag: String,
}

impl Topology {
    pub(crate) fn up() -> anyhow::Result<Topology> {
        let script = script_path()?;
        let tag = format!("B{}", std::process::id() % 100_000);
        let out = Command::new("bash")
            .arg(&script)
            .args(["up", &tag])
            .output()
            .context("running topology.sh (needs bash and iproute2)")?;
        let t = Topology { script, tag };
        if !out.status.success() {
            bail!(
                "topology.sh up: {} (the --netns benchmark needs root)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(t)
    }

    pub(crate) fn ns(&self, which: char) -> String {
        format!("sr{which}{}", self.tag)
    }

    /// `ip -n HANDSET ARGS`.
    fn handset(&self, args: &[&str]) -> anyhow::Result<()> {
        let ns = self.ns('h');
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        let out = Command::new("ip").args(&all).output().context("ip")?;
        if !out.status.success() {
            bail!(
                "ip {}: {}",
                all.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Break-before-make: removes wifi's address (its routes go with it),
    /// so Alice must move to cell. Returns the instant just before.
    pub(crate) fn break_wifi(&self) -> anyhow::Result<Instant> {
        let start = Instant::now();
        self.handset(&["addr", "del", &format!("{WIFI}/24"), "dev", "wifi0"])?;
        Ok(start)
    }

    /// Make-before-break: puts wifi's address and routes back, wifi
    /// preferred again while cell still works. Returns the instant just
    /// before the default route that makes wifi preferred.
    pub(crate) fn restore_wifi(&self) -> anyhow::Result<Instant> {
        self.handset(&["addr", "add", &format!("{WIFI}/24"), "dev", "wifi0"])?;
        self.handset(&[
            "route", "replace", "default", "via", "10.1.0.1", "dev", "wifi0", "table", "101",
        ])?;
        let start = Instant::now();
        self.handset(&[
            "route", "add", "default", "via", "10.1.0.1", "dev", "wifi0", "metric", "100",
        ])?;
        Ok(start)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["down", &self.tag])
            .status();
    }
}

/// `interop/netns/topology.sh`, found above the working directory or the
/// binary (in a cargo target directory inside the repository).
fn script_path() -> anyhow::Result<std::path::PathBuf> {
    let rel = "interop/netns/topology.sh";
    let cwd = std::env::current_dir()?;
    let mut candidates: Vec<std::path::PathBuf> = cwd.ancestors().map(|d| d.join(rel)).collect();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            candidates.push(dir.join(rel));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("interop/netns/topology.sh not found: run from the repository")
}

/// Starts an endpoint inside namespace `ns`.
pub(crate) fn start_in(
    ns: &str,
    config: EndpointConfig,
    app: Box<dyn siproam::Application>,
) -> anyhow::Result<EndpointHandle> {
    let path = std::path::PathBuf::from(format!("/var/run/netns/{ns}"));
    start_in_netns(&path, config, app)
}

#[cfg(target_os = "linux")]
fn start_in_netns(
    path: &std::path::Path,
    config: EndpointConfig,
    app: Box<dyn siproam::Application>,
) -> anyhow::Result<EndpointHandle> {
    Ok(EndpointHandle::start_in_netns(path, config, app)?)
}

#[cfg(not(target_os = "linux"))]
fn start_in_netns(
    _path: &std::path::Path,
    _config: EndpointConfig,
    _app: Box<dyn siproam::Application>,
) -> anyhow::Result<EndpointHandle> {
    bail!("network namespaces are Linux only")
}

fn phone(auto_answer: bool, seed: u64) -> Box<Phone> {
    Box::new(Phone::new(
        PhoneConfig {
            auto_answer,
            play: AudioSpec::Tone(1000.0),
            ..PhoneConfig::default()
        },
        seed,
    ))
}

/// Media counters of both sides as last reported: packets lost and
/// received.
#[derive(Default, Clone, Copy)]
pub(crate) struct Lost {
    pub alice: i64,
    pub bob: i64,
    pub alice_rx: u64,
    pub bob_rx: u64,
}

/// The hand-off bench's setting: the namespaces, the registrar and Bob in
/// the server namespace, Alice in the handset (wildcard listeners,
/// detection on), in a confirmed call through the registrar over wifi.
pub(crate) struct NetnsCall {
    pub topo: Topology,
    pub alice: EndpointHandle,
    pub bob: EndpointHandle,
    pub call: siproam::core::CallId,
    /// The registrar's location service, to look Alice's binding up.
    pub location: Arc<Mutex<Registrar>>,
    registrar: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl NetnsCall {
    /// Builds the namespaces, starts the three endpoints, registers Alice
    /// and Bob and has Alice call Bob.
    pub(crate) async fn up() -> anyhow::Result<NetnsCall> {
        let topo = Topology::up()?;
        let (h, s) = (topo.ns('h'), topo.ns('s'));
        let app = RegistrarApp::new(Registrar::new(crate::run::registrar_config()?));
        let location = app.registrar();
        let mut registrar = start_in(
            &s,
            EndpointConfig {
                listen: vec![(Transport::Udp, format!("{SERVER}:5060").parse()?)],
                core: Config {
                    dialogs: false,
                    ..Config::default()
                },
                ..Default::default()
            },
            Box::new(app),
        )?;
        // its events (a 200 to every REGISTER) are drained so none waits
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    ev = registrar.next_event() => if ev.is_none() { break },
                }
            }
            registrar.shutdown().await;
        });
        let reg = registrar_uri();
        let mut bob = start_in(
            &s,
            EndpointConfig {
                listen: vec![(Transport::Udp, format!("{SERVER}:0").parse()?)],
                ..Default::default()
            },
            phone(true, 7),
        )?;
        let mut alice = start_in(
            &h,
            EndpointConfig {
                listen: vec![
                    (Transport::Udp, "0.0.0.0:0".parse()?),
                    (Transport::Tcp, "0.0.0.0:0".parse()?),
                ],
                watch: Some(WatchConfig::default()),
                ..Default::default()
            },
            phone(false, 5),
        )?;
        let call = crate::bench::register_and_call(&mut alice, &mut bob, &reg).await?;
        Ok(NetnsCall {
            topo,
            alice,
            bob,
            call,
            location,
            registrar: Some((stop, task)),
        })
    }

    /// After a lost call: Alice calls Bob again.
    pub(crate) async fn recall(&mut self) -> anyhow::Result<()> {
        self.call =
            crate::bench::call_bob(&mut self.alice, &mut self.bob, &registrar_uri()).await?;
        Ok(())
    }

    /// Hangs up and stops the endpoints; the namespaces go when dropped.
    pub(crate) async fn down(mut self) {
        let _ = self.alice.phone(PhoneCommand::HangUp(self.call)).await;
        self.alice.shutdown().await;
        self.bob.shutdown().await;
        if let Some((stop, task)) = self.registrar.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

fn registrar_uri() -> String {
    format!("sip:{SERVER}:5060")
}

pub async fn handoff_netns(runs: usize, json_out: bool) -> anyhow::Result<ExitCode> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut net = NetnsCall::up().await?;
    let (alice, bob) = (&mut net.alice, &mut net.bob);
    let mut lost = settle(alice, bob, Lost::default()).await;
    let (mut bbm, mut mbb) = (
        crate::bench::Times::default(),
        crate::bench::Times::default(),
    );
    let mut progress = crate::progress::Progress::new("hand-off pairs", runs as u64);
    for run in 0..runs {
        progress.set(run as u64);
        // break-before-make: wifi's address goes; Alice must move to cell
        let start = net.topo.break_wifi()?;
        crate::bench::measure(alice, bob, start, CELL, &mut bbm).await;
        lost = count_loss(alice, bob, lost, &mut bbm).await;
        // make-before-break: wifi comes back, preferred, cell still works
        let start = net.topo.restore_wifi()?;
        crate::bench::measure(alice, bob, start, WIFI, &mut mbb).await;
        lost = count_loss(alice, bob, lost, &mut mbb).await;
    }
    progress.finish();
    net.down().await;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    for (mode, t) in [
        ("break-before-make (wifi address removed)", &mut bbm),
        (
            "make-before-break (wifi back and preferred, cell still up)",
            &mut mbb,
        ),
    ] {
        for v in [&mut t.detect, &mut t.register, &mut t.refresh, &mut t.media] {
            v.sort_by(f64::total_cmp);
        }
        let stat = |v: &Vec<f64>| json!({"p50": r3(crate::bench::percentile(v, 0.5)), "p95": r3(crate::bench::percentile(v, 0.95)), "n": v.len()});
        emit(
            json_out,
            json!({
                "event": "bench",
                "bench": "handoff-netns",
                "mode": mode,
                "runs": t.runs,
                "detection_ms": stat(&t.detect),
                "register_2xx_ms": stat(&t.register),
                "refresh_2xx_ms": stat(&t.refresh),
                "media_resumed_ms": stat(&t.media),
                "rtp_lost_total": t.lost,
                "rtp_lost_per_handoff": r3(t.lost as f64 / t.runs.max(1) as f64),
                "from": "just before the `ip` command that makes the change",
            }),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Lets a media report of both sides pass, returning their loss counters.
pub(crate) async fn settle(
    alice: &mut EndpointHandle,
    bob: &mut EndpointHandle,
    last: Lost,
) -> Lost {
    let mut now = last;
    let (mut a, mut b) = (false, false);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while !(a && b) {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            ev = alice.next_event() => if let Some(EndpointEvent::Media(m)) = ev { now.alice = m.lost.max(0); now.alice_rx = m.rx_packets; a = true },
            ev = bob.next_event() => if let Some(EndpointEvent::Media(m)) = ev { now.bob = m.lost.max(0); now.bob_rx = m.rx_packets; b = true },
        }
    }
    now
}

/// Adds the packets lost since `before` (both directions) to `t`, after
/// the next reports of both sides.
async fn count_loss(
    alice: &mut EndpointHandle,
    bob: &mut EndpointHandle,
    before: Lost,
    t: &mut crate::bench::Times,
) -> Lost {
    let after = settle(alice, bob, before).await;
    let lost = (after.alice - before.alice).max(0) + (after.bob - before.bob).max(0);
    t.lost += lost.unsigned_abs();
    after
}
