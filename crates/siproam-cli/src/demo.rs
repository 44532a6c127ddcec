//! `siproam demo`: the main job on an embedded default — a registrar and
//! two agents on loopback; Alice registers, calls Bob, a tone flows both
//! ways, Alice hangs up; the timeline of every stage is
//! printed with milliseconds. Halfway, Alice's address moves from
//! 127.0.0.2 to 127.0.0.3: her registration and the call follow (every
//! stage of the IP change is in the timeline) and the media continues.
//! Exits 1 naming the stage that failed. Both agents' events are printed
//! merged in the order they happened; `--svg` draws them
//! ([`crate::timeline`], [`crate::svg`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use siproam::core::{
    CallEvent, CallId, CallState, Config, Endpoint as Core, Event, FlowId, RegistrationState,
};
use siproam::edge::RegistrarApp;
use siproam::transport::Transport;
use siproam::{
    AccountSpec, AppCommand, Application, AudioSpec, CommandError, EndpointConfig, EndpointEvent,
    EndpointHandle, MediaReport, Phone, PhoneCommand, PhoneConfig,
};
use siproam_edge::Registrar;
use tokio::sync::mpsc;

use crate::timeline::Timeline;

fn seed(n: u64) -> u64 {
    siproam::random::os_u64().map_or(n, |r| r ^ n)
}

async fn agent(
    ip: &str,
    tone: f64,
    who: &'static str,
    lines: mpsc::UnboundedSender<Line>,
) -> anyhow::Result<EndpointHandle> {
    let phone = Phone::new(
        PhoneConfig {
            auto_answer: true,
            play: AudioSpec::Tone(tone),
            record: None,
            media_ip: None,
            ..Default::default()
        },
        seed(7),
    );
    let cfg = EndpointConfig {
        listen: vec![(Transport::Udp, format!("{ip}:0").parse()?)],
        core: Config {
            seed: seed(11),
            ..Config::default()
        },
        ..Default::default()
    };
    let app = Stamping {
        phone,
        who,
        lines,
        placed: None,
    };
    Ok(EndpointHandle::start(cfg, Box::new(app)).await?)
}

/// One line of the timeline: when it happened, and the event.
type Line = (Instant, Value);

/// The phone of a demo agent, which also notes each core event it passes
/// on with the moment the endpoint handled it (the `now` it is given; for
/// a call's `calling`, the command that placed it): the agents' events
/// are read later, and not in the order they happened across the two
/// agents.
struct Stamping {
    phone: Phone,
    who: &'static str,
    lines: mpsc::UnboundedSender<Line>,
    placed: Option<Instant>,
}

impl Application for Stamping {
    fn on_event(&mut self, core: &mut Core, now: Instant, event: Event) -> Option<Event> {
        let event = self.phone.on_event(core, now, event)?;
        if let Some(v) = core_json(self.who, &event) {
            let at = match &event {
                Event::Call(CallEvent::State {
                    state: CallState::Calling,
                    ..
                }) => self.placed.take().unwrap_or(now),
                _ => now,
            };
            let _ = self.lines.send((at, v));
        }
        Some(event)
    }
    fn attach(&mut self, events: mpsc::Sender<EndpointEvent>) {
        self.phone.attach(events);
    }
    fn command(
        &mut self,
        core: &mut Core,
        now: Instant,
        cmd: AppCommand,
    ) -> Result<Option<CallId>, CommandError> {
        let placed = self.phone.command(core, now, cmd)?;
        if placed.is_some() {
            self.placed = Some(now);
        }
        Ok(placed)
    }
    fn on_keepalive(
        &mut self,
        now: Instant,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        flow: Option<FlowId>,
    ) {
        self.phone.on_keepalive(now, transport, local, remote, flow);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.phone.poll_timeout()
    }
    fn handle_timeout(&mut self, core: &mut Core, now: Instant) {
        self.phone.handle_timeout(core, now);
    }
    fn configure(&mut self, core: &mut Core) {
        self.phone.configure(core);
    }
}

/// The demo's events: both agents' read as they come (to wait for
/// stages), and the timeline, each line with the moment it happened,
/// printed in that order once the demo is over (or failed): the core
/// events with the moment their endpoint handled them ([`Stamping`]), a
/// change's stages with the core's, the media moved with its first
/// packet's, a media report as it is read. What was printed is kept for
/// the picture.
struct Events {
    lines_tx: mpsc::UnboundedSender<Line>,
    lines_rx: mpsc::UnboundedReceiver<Line>,
    lines: Vec<Line>,
    json_out: bool,
    printed: Vec<Value>,
}

impl Events {
    fn new(json_out: bool) -> Events {
        let (lines_tx, lines_rx) = mpsc::unbounded_channel();
        Events {
            lines_tx,
            lines_rx,
            lines: Vec::new(),
            json_out,
            printed: Vec::new(),
        }
    }

    /// Adds what `who`'s handle passed on beyond the core's events (its
    /// [`Stamping`] noted those) to the timeline.
    fn note(&mut self, who: &str, ev: &EndpointEvent) {
        let at = match ev {
            EndpointEvent::IpChange(c) => c.at,
            EndpointEvent::MediaMoved { first_packet, .. } => *first_packet,
            _ => Instant::now(),
        };
        if let Some(v) = handle_json(who, ev) {
            self.lines.push((at, v));
        }
    }

    /// One of the demo's own events, now.
    fn own(&mut self, v: Value) {
        self.lines.push((Instant::now(), v));
    }

    /// Prints the timeline so far in the order it happened.
    fn print(&mut self) {
        while let Ok(line) = self.lines_rx.try_recv() {
            self.lines.push(line);
        }
        self.lines.sort_by_key(|(at, _)| *at);
        for (at, v) in std::mem::take(&mut self.lines) {
            let v = crate::run::emit_at(self.json_out, v, at);
            self.printed.push(v);
        }
    }

    /// Reads both agents' events until `done` says so (true), or `limit`
    /// passes (false).
    async fn until(
        &mut self,
        alice: &mut EndpointHandle,
        bob: &mut EndpointHandle,
        limit: Duration,
        mut done: impl FnMut(&'static str, &EndpointEvent) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (who, ev) = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                Some(ev) = alice.next_event() => ("alice", ev),
                Some(ev) = bob.next_event() => ("bob", ev),
            };
            self.note(who, &ev);
            if done(who, &ev) {
                return true;
            }
        }
    }

    /// Fails the demo at a named stage.
    fn failed(&mut self, stage: &str, why: &str) -> anyhow::Result<ExitCode> {
        self.own(json!({"event": "demo", "state": "failed", "stage": stage, "reason": why}));
        self.print();
        eprintln!("error: the demo failed at stage {stage:?}: {why}");
        Ok(ExitCode::from(1))
    }
}

/// A core event an agent passed on, for the timeline.
fn core_json(who: &str, ev: &Event) -> Option<Value> {
    let v = match ev {
        Event::Registration(r) => json!({
            "event": "registration", "account": r.account.0, "state": r.state.as_str(),
            "contact": r.contact, "code": r.code, "expires": r.expires,
        }),
        Event::Call(CallEvent::State {
            call, state, code, ..
        }) => json!({
            "event": "call", "call": call.0, "state": state.as_str(), "code": code,
        }),
        ev => crate::run::call_refresh_json(ev)?,
    };
    Some(with_agent(v, who))
}

/// The agent's name second, after the event's name.
fn with_agent(mut v: Value, who: &str) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.shift_insert(1, "agent".into(), json!(who));
    }
    v
}

/// What the handle tells beyond the core's events, for the timeline.
fn handle_json(who: &str, ev: &EndpointEvent) -> Option<Value> {
    let v = match ev {
        EndpointEvent::Media(m) => media(m),
        EndpointEvent::MediaMoved { call, local, .. } => {
            json!({"event": "media_moved", "call": call.0, "local": local.to_string()})
        }
        EndpointEvent::IpChange(c) => crate::run::ip_change_json(c),
        _ => return None,
    };
    Some(with_agent(v, who))
}

fn media(m: &MediaReport) -> Value {
    json!({
        "event": "media", "call": m.call.0, "local": m.local.to_string(),
        "remote": m.remote.map(|r| r.to_string()), "tx_packets": m.tx_packets, "rx_packets": m.rx_packets,
        "rtcp_rx_packets": m.rtcp_rx_packets, "lost": m.lost, "max_gap_ms": (m.max_gap_ms * 10.0).round() / 10.0,
        "srtp": m.srtp, "srtp_dropped": m.srtp_dropped, "final": m.last,
    })
}

/// Runs the demo; with `svg`, draws its hand-off there.
pub async fn run(json_out: bool, svg: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut events = Events::new(json_out);
    let code = demo(&mut events).await?;
    if let Some(path) = svg {
        let timeline = Timeline::from_events(&events.printed);
        crate::timeline::write_svg(&path, &timeline)?;
        if !json_out {
            crate::run::out_line(&format!("the hand-off is drawn in {}", path.display()));
        }
    }
    Ok(code)
}

async fn demo(events: &mut Events) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // the registrar (and proxy)
    let reg_cfg = EndpointConfig {
        listen: vec![(Transport::Udp, "127.0.0.1:0".parse()?)],
        core: Config {
            seed: seed(3),
            dialogs: false,
            ..Config::default()
        },
        ..Default::default()
    };
    let registrar = EndpointHandle::start(
        reg_cfg,
        Box::new(RegistrarApp::new(Registrar::new(
            crate::run::registrar_config()?,
        ))),
    )
    .await?;
    let reg_addr = registrar
        .listeners()
        .await?
        .first()
        .map(|l| l.local)
        .context("registrar listener")?;
    events.own(
        json!({"event": "demo", "stage": "registrar", "state": "listening", "address": reg_addr.to_string()}),
    );
    let registrar_uri = format!("sip:{reg_addr}");

    let mut alice = agent("127.0.0.2", 440.0, "alice", events.lines_tx.clone()).await?;
    let mut bob = agent("127.0.0.5", 1000.0, "bob", events.lines_tx.clone()).await?;
    for (ep, user) in [(&alice, "alice"), (&bob, "bob")] {
        ep.register(AccountSpec {
            aor: format!("sip:{user}@example.test"),
            registrar: registrar_uri.clone(),
            username: None,
            password: None,
            instance_id: Some(crate::run::instance_id(seed(user.len() as u64))),
            outbound: false,
            reg_id: None,
            expires: 600,
            ipv6_sip: siproam::Ipv6Use::Enabled,
            ipv6_media: siproam::Ipv6Use::Enabled,
            ip_change: None,
            flow: Default::default(),
        })
        .await?;
    }
    let mut registered: Vec<&'static str> = Vec::new();
    let both = events
        .until(&mut alice, &mut bob, Duration::from_secs(5), |who, ev| {
            if let EndpointEvent::Core(Event::Registration(r)) = ev {
                if r.state == RegistrationState::Registered && !registered.contains(&who) {
                    registered.push(who);
                }
            }
            registered.len() == 2
        })
        .await;
    if !both {
        return events.failed("register", "alice and bob did not both register");
    }

    // the call
    let call = alice
        .call(
            "sip:bob@example.test",
            "sip:alice@example.test",
            Some(&registrar_uri),
        )
        .await?;
    let (mut alice_up, mut bob_up) = (false, false);
    events
        .until(&mut alice, &mut bob, Duration::from_secs(5), |who, ev| {
            if let EndpointEvent::Core(Event::Call(CallEvent::State { state, .. })) = ev {
                let up = *state == CallState::Confirmed;
                let flag = if who == "alice" {
                    &mut alice_up
                } else {
                    &mut bob_up
                };
                *flag = up;
                // the call ended before both confirmed it: stop waiting
                if *state == CallState::Disconnected {
                    return true;
                }
            }
            alice_up && bob_up
        })
        .await;
    if !(alice_up && bob_up) {
        return events.failed("call", "the call was not confirmed by both agents");
    }

    // a second of tone both ways, then Alice's address moves
    events
        .until(&mut alice, &mut bob, Duration::from_secs(1), |_, _| false)
        .await;
    let new_ip: std::net::IpAddr = "127.0.0.3".parse()?;
    // (the command returns when the change completes; the events of its
    // stages are read meanwhile)
    alice.ip_change(new_ip).await?;
    // the new Contact is registered (the stage is ok on the REGISTER's
    // 2xx), then everything settles (the call's refresh answered)
    let (mut contact_updated, mut completed) = (None, None);
    events
        .until(&mut alice, &mut bob, Duration::from_secs(5), |who, ev| {
            if let (EndpointEvent::IpChange(c), "alice") = (ev, who) {
                match c.stage {
                    siproam::IpChangeStage::UpdateContact => {
                        contact_updated =
                            Some(c.status.is_ok() && c.address.is_some_and(|a| a.ip() == new_ip));
                    }
                    siproam::IpChangeStage::Completed => completed = Some(c.status.is_ok()),
                    _ => {}
                }
            }
            completed.is_some()
        })
        .await;
    if contact_updated != Some(true) {
        return events.failed("update_contact", "alice did not re-register from 127.0.0.3");
    }
    if completed != Some(true) {
        return events.failed("ip_change", "the IP change did not complete");
    }
    // another second: the call carries on from the new address
    events
        .until(&mut alice, &mut bob, Duration::from_secs(1), |_, _| false)
        .await;
    alice.phone(PhoneCommand::HangUp(call)).await?;
    let (mut a, mut b) = (None, None);
    events
        .until(&mut alice, &mut bob, Duration::from_secs(3), |who, ev| {
            if let EndpointEvent::Media(m) = ev {
                if m.last {
                    let slot = if who == "alice" { &mut a } else { &mut b };
                    *slot = Some(m.clone());
                }
            }
            a.is_some() && b.is_some()
        })
        .await;
    let (Some(a), Some(b)) = (a, b) else {
        return events.failed("media", "no final media report");
    };
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    // the media must have followed Alice to 127.0.0.3
    let followed = b.remote.is_some_and(|r| r.ip() == new_ip) && a.local.ip() == new_ip;
    let ok = a.rx_packets > 0 && b.rx_packets > 0 && a.lost <= 0 && b.lost <= 0 && followed;
    for ep in [&alice, &bob, &registrar] {
        ep.shutdown().await;
    }
    events.own(json!({
        "event": "demo",
        "state": if ok { "passed" } else { "failed" },
        "stage": "completed",
        "alice_rx_packets": a.rx_packets,
        "bob_rx_packets": b.rx_packets,
        "lost": a.lost.max(0) + b.lost.max(0),
        "max_gap_ms": (a.max_gap_ms.max(b.max_gap_ms) * 10.0).round() / 10.0,
        "alice_moved_to": a.local.to_string(),
        "bob_sends_to": b.remote.map(|r| r.to_string()),
        "total_ms": (total_ms * 10.0).round() / 10.0,
    }));
    events.print();
    if !ok {
        return events.failed(
            "media",
            "no audio in one direction, loss, or the media did not follow the move",
        );
    }
    if !events.json_out {
        crate::run::out_line("demo passed: the registration and the call followed Alice from 127.0.0.2 to 127.0.0.3; the tone kept flowing both ways");
    }
    Ok(ExitCode::SUCCESS)
}
