//! A hand-off as a list of timeline entries, read from the JSON events of
//! `siproam demo --json` or of an agent's `--json` log (`siproam timeline
//! LOG.jsonl`): the parties, the network change, the REGISTER and the
//! INVITE / re-INVITE / UPDATE exchanges with their answers, the media of
//! each direction with its longest gap, and notes (an incoming call, the
//! media moved). [`crate::svg`] draws it; this module only reads events
//! (unknown events and fields are ignored) and does no I/O.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{json, Value};

/// What a timeline holds: the parties (columns, left to right) and what
/// happened between them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Column names: the agent that moves (or the first agent), the
    /// registrar/proxy when there is one, the other agents (or `Peer`).
    pub parties: Vec<String>,
    /// The entries, in no particular order (each carries its times).
    pub entries: Vec<Entry>,
}

/// One thing on the diagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A request and its final answer.
    Exchange(Exchange),
    /// A network change of one party, from `started` to `completed`.
    Change(Change),
    /// The media of one direction.
    Media(MediaBar),
    /// A point on one party's line.
    Note(Note),
}

/// A request from `from` to `to` and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The sender's column.
    pub from: usize,
    /// The receiver's column.
    pub to: usize,
    /// `REGISTER`, `INVITE`, `re-INVITE`, `UPDATE`.
    pub request: String,
    /// The answer: a status code (`200`), `2xx`, or what failed.
    pub answer: String,
    /// When the request left (ms).
    pub sent_ms: f64,
    /// When its answer came (ms).
    pub answered_ms: f64,
    /// How long the answer took (ms): `answered_ms - sent_ms`, or for a
    /// network change's exchanges the difference of the stages'
    /// `elapsed_ms` (the core's own clock).
    pub took_ms: f64,
}

/// A network change of one party.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Whose address changed.
    pub party: usize,
    /// `started` (ms).
    pub start_ms: f64,
    /// `completed` (ms).
    pub end_ms: f64,
    /// What it was: trigger, new address, outcome.
    pub label: String,
}

/// The media of one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaBar {
    /// The sender's column.
    pub from: usize,
    /// The receiver's column.
    pub to: usize,
    /// From (ms): the call confirmed, or the first report.
    pub start_ms: f64,
    /// To (ms): the last report.
    pub end_ms: f64,
    /// Packets of this direction (received when the receiver reported,
    /// else sent).
    pub packets: u64,
    /// The longest gap between received packets, when known.
    pub gap: Option<Gap>,
}

/// Where the longest gap of a direction happened: between two reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The report (or start) before it (ms).
    pub start_ms: f64,
    /// The first report that showed it (ms).
    pub end_ms: f64,
    /// How long it was (ms).
    pub max_gap_ms: f64,
}

/// A point on one party's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The column.
    pub party: usize,
    /// When (ms).
    pub t_ms: f64,
    /// What.
    pub text: String,
}

/// A line of a log that is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// Reads a `--json` log: one event per line; blank lines are skipped, a
/// line that is not a JSON object with a numeric `t_ms` and a string
/// `event` is reported and skipped.
pub fn parse_log(text: &str) -> (Vec<Value>, Vec<BadLine>) {
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let reason = match serde_json::from_str::<Value>(line) {
            Err(e) => format!("not JSON: {e}"),
            Ok(v) if !v.is_object() => "not a JSON object".to_owned(),
            Ok(v) if v.get("t_ms").and_then(Value::as_f64).is_none() => {
                "no numeric t_ms".to_owned()
            }
            Ok(v) if v.get("event").and_then(Value::as_str).is_none() => "no event name".to_owned(),
            Ok(v) => {
                events.push(v);
                continue;
            }
        };
        bad.push(BadLine {
            line: i + 1,
            reason,
        });
    }
    (events, bad)
}

/// The registrar's column name.
pub const REGISTRAR: &str = "Registrar/proxy";
/// The far end's column when the log is one agent's.
pub const PEER: &str = "Peer";

/// `siproam timeline LOG --svg FILE`: each malformed line is named on
/// stderr and skipped; exit 0 when something was drawn, 1 when nothing
/// could be (or the files could not be read or written).
pub fn command(log: &str, svg: &Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let text = if log == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("reading the log from stdin")?;
        t
    } else {
        std::fs::read_to_string(log).with_context(|| format!("reading {log}"))?
    };
    let (events, bad) = parse_log(&text);
    for b in &bad {
        eprintln!("warning: {log}:{}: {}; line skipped", b.line, b.reason);
    }
    let timeline = Timeline::from_events(&events);
    if timeline.is_empty() {
        eprintln!(
            "error: nothing to draw in {log}: no registration, call, media or ip_change event among {} events",
            events.len()
        );
        return Ok(ExitCode::from(1));
    }
    write_svg(svg, &timeline)?;
    let skipped: Vec<usize> = bad.iter().map(|b| b.line).collect();
    crate::run::emit(
        json_out,
        json!({"event": "timeline", "svg": svg.display().to_string(), "entries": timeline.entries.len(), "skipped_lines": skipped}),
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the diagram of `timeline` to `path`.
pub fn write_svg(path: &Path, timeline: &Timeline) -> anyhow::Result<()> {
    std::fs::write(path, crate::svg::render(timeline))
        .with_context(|| format!("writing {}", path.display()))
}

/// One media report.
#[derive(Debug, Clone, Copy)]
struct MediaPoint {
    t: f64,
    tx: u64,
    rx: u64,
    max_gap: f64,
}

/// A stage of a change: its `t_ms` and the core's `elapsed_ms`.
#[derive(Debug, Clone, Copy, Default)]
struct StageAt {
    t: f64,
    elapsed: f64,
}

/// A network change being read. Its stages are placed by the core's
/// clock: at `anchor + elapsed_ms`, where `anchor` is the earliest
/// `t_ms - elapsed_ms` of its stages (an agent may print a stage later
/// than it happened, never earlier).
#[derive(Debug, Default)]
struct ChangeRead {
    start: f64,
    anchor: f64,
    trigger: String,
    address: Option<String>,
    /// `shutdown_registration_flow` per account (when the REGISTER left).
    register_sent: BTreeMap<u64, StageAt>,
    /// `update_contact` per account, and whether it was ok.
    registered: Vec<(u64, StageAt, bool)>,
    update_contact_at: Option<StageAt>,
    /// `refresh_calls` per call, and whether it was ok.
    refreshed: Vec<(StageAt, bool)>,
    last: StageAt,
}

/// An exchange read, its far side not yet a column.
#[derive(Debug, Clone)]
struct ExchangeRead {
    side: Side,
    request: String,
    answer: String,
    sent: f64,
    answered: f64,
    took: f64,
}

impl ExchangeRead {
    fn new(side: Side, request: &str, answer: String, sent: f64, answered: f64) -> ExchangeRead {
        ExchangeRead {
            side,
            request: request.to_owned(),
            answer,
            sent,
            answered,
            took: answered - sent,
        }
    }
}

/// What one agent's events say, read in time order.
#[derive(Debug, Default)]
struct AgentRead {
    register_pending: Option<f64>,
    invites: BTreeMap<u64, f64>,
    refreshes: BTreeMap<u64, (f64, String)>,
    confirmed: BTreeMap<u64, f64>,
    media: BTreeMap<u64, Vec<MediaPoint>>,
    change: Option<ChangeRead>,
    /// What was read: entries to add once the columns are known.
    exchanges: Vec<ExchangeRead>,
    changes: Vec<(f64, f64, String)>,
    notes: Vec<(f64, String)>,
    /// A change's refreshes, with the change's start and end.
    refreshed: Vec<(f64, f64, ExchangeRead)>,
}

/// The far side of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Registrar,
    Peer,
}

fn capitalized(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The user part of a Contact or AoR (`sip:alice@127.0.0.2:5060` → `alice`).
fn user_of(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let user = rest.split_once('@')?.0;
    (!user.is_empty()).then_some(user)
}

fn code_text(v: &Value, fallback: &str) -> String {
    v["code"]
        .as_u64()
        .map_or_else(|| fallback.to_owned(), |c| c.to_string())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl AgentRead {
    fn read(&mut self, t: f64, v: &Value) {
        let call = v["call"].as_u64().unwrap_or(0);
        match v["event"].as_str().unwrap_or("") {
            "registration" => match v["state"].as_str().unwrap_or("") {
                "registering" => self.register_pending = Some(t),
                state @ ("registered" | "failed") => match self.register_pending.take() {
                    Some(sent) => self.exchanges.push(ExchangeRead::new(
                        Side::Registrar,
                        "REGISTER",
                        code_text(v, state),
                        sent,
                        t,
                    )),
                    // a change's REGISTER is drawn from its stages
                    None if self.change.is_some() => {}
                    None => self
                        .notes
                        .push((t, format!("REGISTER {}", code_text(v, state)))),
                },
                "unregistered" => self.notes.push((t, "unregistered".into())),
                _ => {}
            },
            "call" => match v["state"].as_str().unwrap_or("") {
                "calling" => {
                    self.invites.insert(call, t);
                }
                "confirmed" => {
                    self.confirmed.entry(call).or_insert(t);
                    if let Some(sent) = self.invites.remove(&call) {
                        self.exchanges.push(ExchangeRead::new(
                            Side::Peer,
                            "INVITE",
                            code_text(v, "2xx"),
                            sent,
                            t,
                        ));
                    }
                }
                "incoming" => self.notes.push((t, "incoming call".into())),
                "disconnected" => self.notes.push((t, "call ended".into())),
                _ => {}
            },
            "call_refresh" => {
                let method = v["method"].as_str().unwrap_or("re-INVITE").to_owned();
                match v["state"].as_str().unwrap_or("") {
                    "sent" => {
                        self.refreshes.insert(call, (t, method));
                    }
                    "answered" | "failed" => {
                        if let Some((sent, method)) = self.refreshes.remove(&call) {
                            self.exchanges.push(ExchangeRead::new(
                                Side::Peer,
                                &method,
                                code_text(v, "2xx"),
                                sent,
                                t,
                            ));
                        }
                    }
                    "received" => self.notes.push((t, format!("{method} received"))),
                    _ => {}
                }
            }
            "media" => {
                let point = MediaPoint {
                    t,
                    tx: v["tx_packets"].as_u64().unwrap_or(0),
                    rx: v["rx_packets"].as_u64().unwrap_or(0),
                    max_gap: v["max_gap_ms"].as_f64().unwrap_or(0.0),
                };
                self.media.entry(call).or_default().push(point);
            }
            "media_moved" => {
                let local = v["local"].as_str().unwrap_or("a new address");
                self.notes.push((t, format!("media moved to {local}")));
            }
            "ip_change" => self.read_change(t, v),
            _ => {}
        }
    }

    fn read_change(&mut self, t: f64, v: &Value) {
        let stage = v["stage"].as_str().unwrap_or("");
        if stage == "started" {
            self.finish_change();
            self.change = Some(ChangeRead {
                start: t,
                anchor: t,
                trigger: v["trigger"].as_str().unwrap_or("change").to_owned(),
                last: StageAt { t, elapsed: 0.0 },
                ..ChangeRead::default()
            });
            return;
        }
        let Some(c) = self.change.as_mut() else {
            return;
        };
        let at = StageAt {
            t: t.max(c.start),
            elapsed: v["elapsed_ms"].as_f64().unwrap_or(t - c.start),
        };
        c.last = at;
        c.anchor = c.anchor.min(at.t - at.elapsed);
        let ok = v["status"].as_str() == Some("ok");
        let account = v["account"].as_u64().unwrap_or(0);
        if let (None, Some(a)) = (&c.address, v["address"].as_str()) {
            c.address = Some(a.to_owned());
        }
        match stage {
            "shutdown_registration_flow" => {
                c.register_sent.insert(account, at);
            }
            "update_contact" => {
                c.registered.push((account, at, ok));
                c.update_contact_at.get_or_insert(at);
            }
            "refresh_calls" => c.refreshed.push((at, ok)),
            "completed" => {
                let status = v["status"].as_str().unwrap_or("?").to_owned();
                self.finish_change_with(&status);
            }
            _ => {}
        }
    }

    fn finish_change(&mut self) {
        if self.change.is_some() {
            self.finish_change_with("not completed");
        }
    }

    fn finish_change_with(&mut self, status: &str) {
        let Some(c) = self.change.take() else {
            return;
        };
        let place = |s: StageAt| c.anchor + s.elapsed;
        let end = c.last;
        let to = c
            .address
            .as_deref()
            .map(|a| format!(" to {a}"))
            .unwrap_or_default();
        let trigger = match c.trigger.as_str() {
            "network_change" => String::new(),
            other => format!(" ({})", other.replace('_', " ")),
        };
        let label = format!(
            "network change{to}{trigger}: {status} in {} ms",
            round1(end.elapsed)
        );
        self.changes.push((c.anchor, place(end), label));
        let begin = StageAt {
            t: c.anchor,
            elapsed: 0.0,
        };
        for (account, at, ok) in &c.registered {
            let sent = c.register_sent.get(account).copied().unwrap_or(begin);
            let answer = if *ok { "200" } else { "failed" };
            let mut x = ExchangeRead::new(
                Side::Registrar,
                "REGISTER",
                answer.into(),
                place(sent),
                place(*at),
            );
            x.took = at.elapsed - sent.elapsed;
            self.exchanges.push(x);
        }
        for (at, ok) in &c.refreshed {
            let sent = c.update_contact_at.unwrap_or(begin);
            let answer = if *ok { "2xx" } else { "failed" };
            let mut x = ExchangeRead::new(
                Side::Peer,
                "re-INVITE/UPDATE",
                answer.into(),
                place(sent),
                place(*at),
            );
            x.took = at.elapsed - sent.elapsed;
            self.refreshed.push((c.anchor, place(end), x));
        }
    }

    /// The refreshes a change reported that no `call_refresh` events
    /// drew (a log from before those events): from the change's
    /// REGISTER answer (or its start) to the refresh's answer.
    fn resolve(&mut self) {
        self.finish_change();
        for (start, end, x) in std::mem::take(&mut self.refreshed) {
            let drawn = self.exchanges.iter().any(|e| {
                e.side == Side::Peer
                    && e.request != "INVITE"
                    && (start..=end + 1.0).contains(&e.answered)
            });
            if !drawn {
                self.exchanges.push(x);
            }
        }
    }
}

/// An agent's name for events without an `agent` field: the user part of
/// its first registration's Contact, else `agent`.
fn own_name(events: &[&Value]) -> String {
    events
        .iter()
        .filter(|v| v["event"] == "registration" && v.get("agent").is_none())
        .find_map(|v| v["contact"].as_str().and_then(user_of))
        .unwrap_or("agent")
        .to_owned()
}

impl Timeline {
    /// Reads events (any order; unknown events and fields ignored).
    pub fn from_events(events: &[Value]) -> Timeline {
        let mut sorted: Vec<&Value> = events.iter().filter(|v| v["t_ms"].is_number()).collect();
        sorted.sort_by(|a, b| {
            let (x, y) = (a["t_ms"].as_f64(), b["t_ms"].as_f64());
            x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
        });
        let own = own_name(&sorted);
        let mut names: Vec<String> = Vec::new();
        let mut reads: Vec<AgentRead> = Vec::new();
        let mut any_registration = false;
        for v in &sorted {
            let relevant = matches!(
                v["event"].as_str(),
                Some(
                    "registration"
                        | "call"
                        | "call_refresh"
                        | "media"
                        | "media_moved"
                        | "ip_change"
                )
            );
            if !relevant {
                continue;
            }
            any_registration |= v["event"] == "registration";
            let name = v["agent"].as_str().unwrap_or(&own);
            let i = match names.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    names.push(name.to_owned());
                    reads.push(AgentRead::default());
                    names.len() - 1
                }
            };
            if let Some(r) = reads.get_mut(i) {
                r.read(v["t_ms"].as_f64().unwrap_or(0.0), v);
            }
        }
        for r in &mut reads {
            r.resolve();
        }
        if names.is_empty() {
            return Timeline::default();
        }
        // columns: the mover first, the registrar, the others
        let first = reads
            .iter()
            .position(|r| !r.changes.is_empty())
            .unwrap_or(0);
        let mut parties = vec![capitalized(
            names.get(first).map_or("agent", |n| n.as_str()),
        )];
        let registrar = any_registration.then(|| {
            parties.push(REGISTRAR.to_owned());
            parties.len() - 1
        });
        let mut column = vec![0; names.len()];
        for (i, n) in names.iter().enumerate() {
            if i != first {
                if let Some(c) = column.get_mut(i) {
                    *c = parties.len();
                }
                parties.push(capitalized(n));
            }
        }
        let has_calls = reads
            .iter()
            .any(|r| !r.confirmed.is_empty() || r.exchanges.iter().any(|e| e.side == Side::Peer));
        let peer_column = |me: usize, parties: &mut Vec<String>| -> usize {
            // the other agent of a two-agent log, else the far end
            match column.iter().copied().find(|c| *c != me) {
                Some(c) => c,
                None => match parties.iter().position(|p| p == PEER) {
                    Some(p) => p,
                    None => {
                        parties.push(PEER.to_owned());
                        parties.len() - 1
                    }
                },
            }
        };
        let mut entries = Vec::new();
        let agents_with_media: Vec<usize> = reads
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.media.is_empty())
            .map(|(i, _)| column.get(i).copied().unwrap_or(0))
            .collect();
        for (i, r) in reads.iter().enumerate() {
            let me = column.get(i).copied().unwrap_or(0);
            let peer = if has_calls || !r.media.is_empty() {
                Some(peer_column(me, &mut parties))
            } else {
                None
            };
            for x in &r.exchanges {
                let to = match x.side {
                    Side::Registrar => registrar,
                    Side::Peer => peer,
                };
                if let Some(to) = to {
                    entries.push(Entry::Exchange(Exchange {
                        from: me,
                        to,
                        request: x.request.clone(),
                        answer: x.answer.clone(),
                        sent_ms: x.sent,
                        answered_ms: x.answered.max(x.sent),
                        took_ms: x.took.max(0.0),
                    }));
                }
            }
            for (start, end, label) in &r.changes {
                entries.push(Entry::Change(Change {
                    party: me,
                    start_ms: *start,
                    end_ms: *end,
                    label: label.clone(),
                }));
            }
            for (t, text) in &r.notes {
                entries.push(Entry::Note(Note {
                    party: me,
                    t_ms: *t,
                    text: text.clone(),
                }));
            }
            let Some(peer) = peer else { continue };
            for (call, points) in &r.media {
                let (Some(first), Some(last)) = (points.first(), points.last()) else {
                    continue;
                };
                let start = r
                    .confirmed
                    .get(call)
                    .copied()
                    .unwrap_or(first.t)
                    .min(first.t);
                entries.push(Entry::Media(MediaBar {
                    from: peer,
                    to: me,
                    start_ms: start,
                    end_ms: last.t,
                    packets: last.rx,
                    gap: gap(points, start),
                }));
                // what we sent, unless the peer reported receiving it
                if !agents_with_media.contains(&peer) {
                    entries.push(Entry::Media(MediaBar {
                        from: me,
                        to: peer,
                        start_ms: start,
                        end_ms: last.t,
                        packets: last.tx,
                        gap: None,
                    }));
                }
            }
        }
        Timeline { parties, entries }
    }

    /// True when nothing could be drawn.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The report interval in which the longest gap (the last report's
/// `max_gap_ms`) first showed.
fn gap(points: &[MediaPoint], start: f64) -> Option<Gap> {
    let max = points.last()?.max_gap;
    if max <= 0.0 {
        return None;
    }
    let i = points.iter().position(|p| p.max_gap >= max - 0.05)?;
    let end = points.get(i)?.t;
    let before = i
        .checked_sub(1)
        .and_then(|j| points.get(j))
        .map_or(start, |p| p.t);
    Some(Gap {
        start_ms: before.min(end),
        end_ms: end,
        max_gap_ms: round1(max),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_malformed_line_is_reported_with_its_number_and_skipped() {
        let text = "{\"t_ms\":1.0,\"event\":\"call\",\"state\":\"calling\"}\n\nnot json\n[1]\n{\"event\":\"x\"}\n{\"t_ms\":2,\"event\":\"call\"}\n";
        let (events, bad) = parse_log(text);
        assert_eq!(events.len(), 2);
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert!(bad[0].reason.contains("not JSON"));
        assert!(bad[2].reason.contains("t_ms"));
    }

    #[test]
    fn an_agent_log_gives_the_agent_its_registrar_and_its_peer() {
        let events = vec![
            json!({"t_ms": 10.0, "event": "registration", "state": "registering", "contact": "sip:carol@127.0.0.2:5060"}),
            json!({"t_ms": 12.5, "event": "registration", "state": "registered", "code": 200, "contact": "sip:carol@127.0.0.2:5060"}),
            json!({"t_ms": 20.0, "event": "call", "call": 1, "state": "calling"}),
            json!({"t_ms": 25.0, "event": "call", "call": 1, "state": "confirmed", "code": 200}),
            json!({"t_ms": 30.0, "event": "something_new", "x": 1}),
        ];
        let t = Timeline::from_events(&events);
        assert_eq!(t.parties, vec!["Carol", REGISTRAR, PEER]);
        let exchanges: Vec<&Exchange> = t
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Exchange(x) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(exchanges.len(), 2);
        assert_eq!(exchanges[0].request, "REGISTER");
        assert_eq!((exchanges[0].from, exchanges[0].to), (0, 1));
        assert!((exchanges[0].took_ms - 2.5).abs() < 1e-9);
        assert_eq!(exchanges[1].request, "INVITE");
        assert_eq!((exchanges[1].from, exchanges[1].to), (0, 2));
    }

    #[test]
    fn a_change_without_refresh_events_still_draws_the_register_and_the_refresh() {
        // an agent's log whose first stages were printed late, together:
        // the stages are placed by `elapsed_ms` from the earliest start
        // they imply (106.2 - 5.9 = 100.3)
        let events = vec![
            json!({"t_ms": 103.0, "event": "ip_change", "stage": "started", "trigger": "network_change", "status": "ok", "elapsed_ms": 0.0}),
            json!({"t_ms": 103.1, "event": "ip_change", "stage": "shutdown_registration_flow", "status": "ok", "elapsed_ms": 0.1, "account": 1}),
            json!({"t_ms": 106.0, "event": "registration", "state": "registered", "code": 200, "contact": "sip:a@127.0.0.3:1"}),
            json!({"t_ms": 106.1, "event": "ip_change", "stage": "update_contact", "status": "ok", "elapsed_ms": 4.1, "account": 1, "address": "127.0.0.3:1"}),
            json!({"t_ms": 106.2, "event": "ip_change", "stage": "refresh_calls", "status": "ok", "elapsed_ms": 5.9, "call": 1}),
            json!({"t_ms": 106.3, "event": "ip_change", "stage": "completed", "status": "ok", "elapsed_ms": 5.9}),
        ];
        let t = Timeline::from_events(&events);
        let find = |req: &str| {
            t.entries.iter().find_map(|e| match e {
                Entry::Exchange(x) if x.request == req => Some(x.clone()),
                _ => None,
            })
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        let reg = find("REGISTER").unwrap();
        assert!(
            close(reg.sent_ms, 100.4) && close(reg.answered_ms, 104.4),
            "{reg:?}"
        );
        assert!(close(reg.took_ms, 4.0));
        let refresh = find("re-INVITE/UPDATE").unwrap();
        assert!(close(refresh.sent_ms, 104.4) && close(refresh.answered_ms, 106.2));
        assert!(close(refresh.took_ms, 1.8));
        // no second REGISTER for the registration event of the change
        let registers = t
            .entries
            .iter()
            .filter(|e| matches!(e, Entry::Exchange(x) if x.request == "REGISTER"))
            .count();
        assert_eq!(registers, 1);
        let change = t.entries.iter().find_map(|e| match e {
            Entry::Change(c) => Some(c),
            _ => None,
        });
        let change = change.unwrap();
        assert!(close(change.start_ms, 100.3) && close(change.end_ms, 106.2));
        assert!(change.label.contains("127.0.0.3:1") && change.label.contains("ok in 5.9 ms"));
    }

    #[test]
    fn the_gap_is_placed_in_the_interval_where_it_first_showed() {
        let p = |t, g| MediaPoint {
            t,
            tx: 0,
            rx: 0,
            max_gap: g,
        };
        let g = gap(&[p(1000.0, 21.0), p(2000.0, 80.0), p(3000.0, 80.0)], 0.0).unwrap();
        assert_eq!((g.start_ms, g.end_ms, g.max_gap_ms), (1000.0, 2000.0, 80.0));
        let g = gap(&[p(1000.0, 30.0), p(2000.0, 30.0)], 40.0).unwrap();
        assert_eq!((g.start_ms, g.end_ms), (40.0, 1000.0));
        assert!(gap(&[p(1000.0, 0.0)], 0.0).is_none());
    }
}
