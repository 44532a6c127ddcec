//! `siproam demo`: the main job on an embedded default — a registrar and
//! two agents on loopback; Alice registers, calls Bob, a tone flows both
//! ways, Alice hangs up; the timeline of every stage is
//! printed with milliseconds. Halfway, Alice's address moves from
//! 127.0.0.2 to 127.0.0.3: her registration and the call follow (every
//! stage of the IP change is in the timeline) and the media continues.
//! Exits 1 naming the stage that failed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use siproam::core::{CallEvent, CallState, Config, Event, RegistrationState};
use siproam::edge::RegistrarApp;
use siproam::transport::Transport;
use siproam::{
    AccountSpec, AudioSpec, EndpointConfig, EndpointEvent, EndpointHandle, MediaReport, Phone,
    PhoneCommand, PhoneConfig,
};
use siproam_edge::Registrar;

use crate::run::emit;

fn seed(n: u64) -> u64 {
    siproam::random::os_u64().map_or(n, |r| r ^ n)
}

async fn agent(ip: &str, tone: f64) -> anyhow::Result<EndpointHandle> {
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
    Ok(EndpointHandle::start(cfg, Box::new(phone)).await?)
}

/// Fails the demo at a named stage.
fn stage_failed(json_out: bool, stage: &str, why: &str) -> anyhow::Result<ExitCode> {
    emit(
        json_out,
        json!({"event": "demo", "state": "failed", "stage": stage, "reason": why}),
    );
    eprintln!("error: the demo failed at stage {stage:?}: {why}");
    Ok(ExitCode::from(1))
}

/// Waits (bounded) for the first event of `ep` that `pick` accepts,
/// printing every call and registration event on the way.
async fn wait_for<T>(
    ep: &mut EndpointHandle,
    who: &str,
    json_out: bool,
    limit: Duration,
    mut pick: impl FnMut(&EndpointEvent) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ev = tokio::time::timeout_at(deadline, ep.next_event())
            .await
            .ok()??;
        show(who, &ev, json_out);
        if let Some(t) = pick(&ev) {
            return Some(t);
        }
    }
}

fn show(who: &str, ev: &EndpointEvent, json_out: bool) {
    let v: Option<Value> = match ev {
        EndpointEvent::Core(Event::Registration(r)) => Some(json!({
            "event": "registration", "agent": who, "account": r.account.0, "state": r.state.as_str(),
            "contact": r.contact, "code": r.code, "expires": r.expires,
        })),
        EndpointEvent::Core(Event::Call(CallEvent::State {
            call, state, code, ..
        })) => Some(json!({
            "event": "call", "agent": who, "call": call.0, "state": state.as_str(), "code": code,
        })),
        EndpointEvent::Media(m) => Some(media(who, m)),
        EndpointEvent::IpChange(c) => {
            let mut v = crate::run::ip_change_json(c);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("agent".into(), json!(who));
            }
            Some(v)
        }
        _ => None,
    };
    if let Some(v) = v {
        emit(json_out, v);
    }
}

fn media(who: &str, m: &MediaReport) -> Value {
    json!({
        "event": "media", "agent": who, "call": m.call.0, "local": m.local.to_string(),
        "remote": m.remote.map(|r| r.to_string()), "tx_packets": m.tx_packets, "rx_packets": m.rx_packets,
        "lost": m.lost, "max_gap_ms": (m.max_gap_ms * 10.0).round() / 10.0, "final": m.last,
    })
}

/// Lets the call run, printing what both agents report.
async fn talk(
    alice: &mut EndpointHandle,
    bob: &mut EndpointHandle,
    json_out: bool,
    for_: Duration,
) {
    let until = tokio::time::Instant::now() + for_;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            Some(ev) = alice.next_event() => show("alice", &ev, json_out),
            Some(ev) = bob.next_event() => show("bob", &ev, json_out),
        }
    }
}

/// Runs the demo.
pub async fn run(json_out: bool) -> anyhow::Result<ExitCode> {
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
    emit(
        json_out,
        json!({"event": "demo", "stage": "registrar", "state": "listening", "address": reg_addr.to_string()}),
    );
    let registrar_uri = format!("sip:{reg_addr}");

    let mut alice = agent("127.0.0.2", 440.0).await?;
    let mut bob = agent("127.0.0.5", 1000.0).await?;
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
    let registered = |ev: &EndpointEvent| match ev {
        EndpointEvent::Core(Event::Registration(r)) if r.state == RegistrationState::Registered => {
            Some(())
        }
        _ => None,
    };
    if wait_for(
        &mut bob,
        "bob",
        json_out,
        Duration::from_secs(5),
        registered,
    )
    .await
    .is_none()
    {
        return stage_failed(json_out, "register", "bob did not register");
    }
    if wait_for(
        &mut alice,
        "alice",
        json_out,
        Duration::from_secs(5),
        registered,
    )
    .await
    .is_none()
    {
        return stage_failed(json_out, "register", "alice did not register");
    }

    // the call
    let call = alice
        .call(
            "sip:bob@example.test",
            "sip:alice@example.test",
            Some(&registrar_uri),
        )
        .await?;
    let confirmed = |ev: &EndpointEvent| match ev {
        EndpointEvent::Core(Event::Call(CallEvent::State {
            state: CallState::Confirmed,
            ..
        })) => Some(()),
        EndpointEvent::Core(Event::Call(CallEvent::State {
            state: CallState::Disconnected,
            ..
        })) => Some(()),
        _ => None,
    };
    wait_for(
        &mut alice,
        "alice",
        json_out,
        Duration::from_secs(5),
        confirmed,
    )
    .await;
    if !matches!(
        wait_for(&mut bob, "bob", json_out, Duration::from_secs(5), confirmed).await,
        Some(())
    ) {
        return stage_failed(json_out, "call", "bob never confirmed the call");
    }

    // a second of tone both ways, then Alice's address moves
    talk(&mut alice, &mut bob, json_out, Duration::from_secs(1)).await;
    let new_ip: std::net::IpAddr = "127.0.0.3".parse()?;
    alice.ip_change(new_ip).await?;
    // the new Contact is registered (the stage is ok on the REGISTER's
    // 2xx), then everything settles (the call's refresh answered)
    let contact_updated = |ev: &EndpointEvent| match ev {
        EndpointEvent::IpChange(c) if c.stage == siproam::IpChangeStage::UpdateContact => {
            Some(c.status.is_ok() && c.address.is_some_and(|a| a.ip() == new_ip))
        }
        _ => None,
    };
    if wait_for(
        &mut alice,
        "alice",
        json_out,
        Duration::from_secs(5),
        contact_updated,
    )
    .await
        != Some(true)
    {
        return stage_failed(
            json_out,
            "update_contact",
            "alice did not re-register from 127.0.0.3",
        );
    }
    let completed = |ev: &EndpointEvent| match ev {
        EndpointEvent::IpChange(c) if c.stage == siproam::IpChangeStage::Completed => {
            Some(c.status.is_ok())
        }
        _ => None,
    };
    if wait_for(
        &mut alice,
        "alice",
        json_out,
        Duration::from_secs(5),
        completed,
    )
    .await
        != Some(true)
    {
        return stage_failed(json_out, "ip_change", "the IP change did not complete");
    }
    // another second: the call carries on from the new address
    talk(&mut alice, &mut bob, json_out, Duration::from_secs(1)).await;
    alice.phone(PhoneCommand::HangUp(call)).await?;
    let last_media = |ev: &EndpointEvent| match ev {
        EndpointEvent::Media(m) if m.last => Some(m.clone()),
        _ => None,
    };
    let a = wait_for(
        &mut alice,
        "alice",
        json_out,
        Duration::from_secs(3),
        last_media,
    )
    .await;
    let b = wait_for(
        &mut bob,
        "bob",
        json_out,
        Duration::from_secs(3),
        last_media,
    )
    .await;
    let (Some(a), Some(b)) = (a, b) else {
        return stage_failed(json_out, "media", "no final media report");
    };
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    // the media must have followed Alice to 127.0.0.3
    let followed = b.remote.is_some_and(|r| r.ip() == new_ip) && a.local.ip() == new_ip;
    let ok = a.rx_packets > 0 && b.rx_packets > 0 && a.lost <= 0 && b.lost <= 0 && followed;
    emit(
        json_out,
        json!({
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
        }),
    );
    for ep in [&alice, &bob, &registrar] {
        ep.shutdown().await;
    }
    if !ok {
        return stage_failed(
            json_out,
            "media",
            "no audio in one direction, loss, or the media did not follow the move",
        );
    }
    if !json_out {
        crate::run::out_line("demo passed: the registration and the call followed Alice from 127.0.0.2 to 127.0.0.3; the tone kept flowing both ways");
    }
    Ok(ExitCode::SUCCESS)
}
