//! `siproam bench soak --handoffs N`: N detected hand-offs in a row with
//! one call up, in the namespace topology of `bench handoff --netns` (same
//! setting: [`NetnsCall`]), alternating break-before-make (wifi's address
//! removed) and make-before-break (wifi back and preferred).
//!
//! Each hand-off is followed until it has settled, by events and not by
//! sleeps: the REGISTER 2xx with Alice's new address, the call refresh's
//! 2xx, Bob's first RTP on Alice's new media address, then a media report
//! of each side showing RTP still arriving (Bob sending to the new
//! address). Then it records: whether the call was lost (ended, or its RTP
//! stopped either way), whether the registrar's binding for Alice was lost
//! (missing, or not on her current address), the RTP packets lost in that
//! hand-off (both directions, from the media reports), and this process's
//! open descriptors and resident memory (the registrar, Bob and Alice all
//! run in it).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};
use siproam::core::{CallEvent, CallState, Event, RegistrationState};
use siproam::EndpointEvent;

use crate::bench_netns::{settle, Lost, NetnsCall, CELL, WIFI};
use crate::run::emit;

/// How long one hand-off may take to settle before what is missing counts
/// as lost.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// Open descriptors of this process (`/proc/self/fd`, less the one the
/// listing itself holds).
fn fd_count() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// What was seen while one hand-off settled.
#[derive(Default, Debug)]
struct Followed {
    detected: bool,
    registered: bool,
    refreshed: bool,
    media_moved: bool,
    /// Alice's RTP counters grew in a report after the media moved.
    alice_hears: bool,
    /// Bob sends to Alice's new address and his counters grew.
    bob_hears: bool,
    ended: bool,
}

impl Followed {
    fn settled(&self) -> bool {
        self.registered && self.refreshed && self.media_moved && self.alice_hears && self.bob_hears
    }

    fn call_lost(&self) -> bool {
        self.ended || !(self.media_moved && self.alice_hears && self.bob_hears)
    }

    /// The first thing missing, for the report of a lost call.
    fn missing(&self) -> &'static str {
        if self.ended {
            "call ended"
        } else if !self.detected {
            "change not detected"
        } else if !self.refreshed {
            "no refresh 2xx"
        } else if !self.media_moved {
            "no RTP on the new address"
        } else if !self.bob_hears {
            "Bob's RTP does not reach Alice's new address or Alice's does not reach Bob"
        } else if !self.alice_hears {
            "Alice's RTP stopped"
        } else {
            "registration 2xx missing"
        }
    }
}

/// Follows one hand-off towards `new_ip` until it settled or
/// [`SETTLE_LIMIT`]; `last` holds the media counters before it and is
/// updated with every report seen.
async fn follow(net: &mut NetnsCall, new_ip: &str, last: &mut Lost) -> Followed {
    let mut f = Followed::default();
    let contact_at = format!("@{new_ip}:");
    let rtp_to = format!("{new_ip}:");
    let until = tokio::time::Instant::now() + SETTLE_LIMIT;
    while !f.settled() && !f.ended {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            ev = net.alice.next_event() => match ev {
                Some(EndpointEvent::IpChange(c)) if c.stage == siproam::IpChangeStage::Started => f.detected = true,
                Some(EndpointEvent::Core(Event::Registration(r)))
                    if r.state == RegistrationState::Registered && r.contact.contains(&contact_at) =>
                {
                    f.registered = true
                }
                Some(EndpointEvent::Core(Event::Call(CallEvent::Answer { call, .. })))
                    if call == net.call && f.detected =>
                {
                    f.refreshed = true
                }
                Some(EndpointEvent::Core(Event::Call(CallEvent::State {
                    call,
                    state: CallState::Disconnected,
                    ..
                }))) if call == net.call => f.ended = true,
                Some(EndpointEvent::MediaMoved { call, .. }) if call == net.call => f.media_moved = true,
                Some(EndpointEvent::Media(m)) if m.call == net.call => {
                    if f.media_moved && m.rx_packets > last.alice_rx {
                        f.alice_hears = true;
                    }
                    last.alice = m.lost.max(0);
                    last.alice_rx = m.rx_packets;
                }
                Some(_) => {}
                None => break,
            },
            ev = net.bob.next_event() => match ev {
                Some(EndpointEvent::Media(m)) => {
                    let to_new = m.remote.is_some_and(|r| r.to_string().starts_with(&rtp_to));
                    if f.media_moved && to_new && m.rx_packets > last.bob_rx {
                        f.bob_hears = true;
                    }
                    last.bob = m.lost.max(0);
                    last.bob_rx = m.rx_packets;
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    f
}

/// Whether the registrar holds Alice's binding on `ip` and no other.
fn binding_on(net: &NetnsCall, ip: &str) -> bool {
    let contact_at = format!("@{ip}:");
    let bindings = net
        .location
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .lookup("sip:alice@example.test", Instant::now());
    !bindings.is_empty() && bindings.iter().all(|b| b.contact.contains(&contact_at))
}

/// p50, p95 and max of RTP loss per hand-off.
fn loss_stats(per_handoff: &[u64]) -> Value {
    let mut v: Vec<f64> = per_handoff.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    json!({
        "p50": crate::bench::percentile(&v, 0.5),
        "p95": crate::bench::percentile(&v, 0.95),
        "max": v.last().copied().unwrap_or(f64::NAN),
        "total": per_handoff.iter().sum::<u64>(),
    })
}

/// Growth from `at` to `end`, in percent (one decimal).
fn growth_pct(at: u64, end: u64) -> f64 {
    if at == 0 {
        return f64::NAN;
    }
    ((end as f64 - at as f64) / at as f64 * 1000.0).round() / 10.0
}

/// Where the "last 500" window starts: hand-off N − 500, or the middle of
/// a shorter soak.
fn mark_of(handoffs: usize) -> usize {
    handoffs.saturating_sub(500).max(handoffs / 2).max(1)
}

pub async fn soak(handoffs: usize, max_secs: u64, json_out: bool) -> anyhow::Result<ExitCode> {
    if handoffs == 0 {
        bail!("--handoffs must be at least 1");
    }
    let began = Instant::now();
    let limit = Duration::from_secs(max_secs);
    let mut net = NetnsCall::up().await?;
    let mut last = settle(&mut net.alice, &mut net.bob, Lost::default()).await;
    let mark = mark_of(handoffs);
    let (fds_start, rss_start) = (
        fd_count().unwrap_or(0),
        crate::bench::rss_bytes().unwrap_or(0),
    );
    let (mut fds_mark, mut rss_mark) = (0u64, 0u64);
    let (mut fds_end, mut rss_end) = (fds_start, rss_start);
    let mut losses: Vec<u64> = Vec::with_capacity(handoffs);
    let (mut calls_lost, mut bindings_lost, mut undetected) = (0usize, 0usize, 0usize);
    let (mut window_calls, mut window_bindings) = (0usize, 0usize);
    let mut done = 0usize;
    let mut reasons: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut progress = crate::progress::Progress::new("hand-offs", handoffs as u64);
    for i in 0..handoffs {
        progress.set(i as u64);
        if began.elapsed() > limit {
            break;
        }
        let bbm = i % 2 == 0;
        let new_ip = if bbm {
            net.topo.break_wifi()?;
            CELL
        } else {
            net.topo.restore_wifi()?;
            WIFI
        };
        let before = last;
        let f = follow(&mut net, new_ip, &mut last).await;
        done += 1;
        let lost = (last.alice - before.alice).max(0) + (last.bob - before.bob).max(0);
        losses.push(lost.unsigned_abs());
        undetected += usize::from(!f.detected);
        if f.call_lost() {
            calls_lost += 1;
            window_calls += 1;
            *reasons.entry(f.missing()).or_default() += 1;
            tracing::warn!("hand-off {}: call lost: {}", i + 1, f.missing());
        }
        if !binding_on(&net, new_ip) {
            bindings_lost += 1;
            window_bindings += 1;
            tracing::warn!("hand-off {}: Alice's binding is missing or stale", i + 1);
        }
        fds_end = fd_count().unwrap_or(0);
        rss_end = crate::bench::rss_bytes().unwrap_or(0);
        if i + 1 == mark {
            (fds_mark, rss_mark) = (fds_end, rss_end);
        }
        if f.ended {
            // a lost call is counted; place a new one so the soak goes on
            net.recall().await?;
            last = settle(&mut net.alice, &mut net.bob, Lost::default()).await;
        }
        if (i + 1) % 100 == 0 {
            let window = losses.get(i + 1 - 100..).unwrap_or_default();
            // (the line is drawn again at the next hand-off)
            progress.finish();
            emit(
                json_out,
                json!({
                    "event": "bench",
                    "bench": "soak-progress",
                    "handoffs": i + 1,
                    "calls_lost": window_calls,
                    "bindings_lost": window_bindings,
                    "rtp_lost_per_handoff": loss_stats(window),
                    "fds": fds_end,
                    "rss_bytes": rss_end,
                    "seconds": (began.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                }),
            );
            (window_calls, window_bindings) = (0, 0);
        }
    }
    progress.finish();
    net.down().await;
    let completed = done == handoffs;
    let (fds_growth, rss_growth) = (growth_pct(fds_mark, fds_end), growth_pct(rss_mark, rss_end));
    let flat = fds_growth < 10.0 && rss_growth < 10.0;
    emit(
        json_out,
        json!({
            "event": "bench",
            "bench": "soak",
            "handoffs_requested": handoffs,
            "handoffs": done,
            "completed": completed,
            "break_before_make": done.div_ceil(2),
            "make_before_break": done / 2,
            "calls_lost": calls_lost,
            "call_loss_reasons": reasons,
            "bindings_lost": bindings_lost,
            "undetected": undetected,
            "rtp_lost_per_handoff": loss_stats(&losses),
            "fds": {
                "start": fds_start,
                "at_handoff": mark,
                "at_mark": fds_mark,
                "end": fds_end,
                "growth_pct": fds_growth,
            },
            "rss_bytes": {
                "start": rss_start,
                "at_handoff": mark,
                "at_mark": rss_mark,
                "end": rss_end,
                "growth_pct": rss_growth,
            },
            "flat": flat,
            "seconds": (began.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        }),
    );
    Ok(if completed && calls_lost == 0 && bindings_lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
