//! What the agent knows of itself, for its `status` command: the accounts,
//! calls, flows and subscriptions as their last events told them, kept
//! here as the events go by (the core and the phone report every change),
//! and the `call` event fields that need what came before (a call's
//! direction, a hold's outcome).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};
use siproam::core::{CallEvent, CallId, CallState};
use siproam::transport::ListenerInfo;

/// A call as last reported.
#[derive(Debug)]
struct CallView {
    state: &'static str,
    peer: Option<String>,
    display: Option<String>,
    direction: &'static str,
    held: bool,
    /// A hold (`true`) or unhold asked for, until the peer answers it.
    hold_pending: Option<bool>,
    /// The last `media` event.
    media: Option<Value>,
}

/// The agent's state as its events told it.
#[derive(Debug)]
pub struct AgentState {
    aor: String,
    /// Account id → its address of record (several with `[[account]]`).
    account_aors: BTreeMap<u32, String>,
    /// Account id → its last `registration` event and when it came.
    accounts: BTreeMap<u64, (Value, Instant)>,
    calls: BTreeMap<u32, CallView>,
    /// Flow id → its last `flow` event (the live ones).
    flows: BTreeMap<u64, Value>,
    /// Subscription id → its last `subscription` event (the live ones).
    subscriptions: BTreeMap<u64, Value>,
}

impl AgentState {
    /// Nothing known yet, for the address of record `aor` (the first
    /// account's) and each account's own.
    pub fn new(aor: &str, account_aors: BTreeMap<u32, String>) -> AgentState {
        AgentState {
            aor: aor.to_owned(),
            account_aors,
            accounts: BTreeMap::new(),
            calls: BTreeMap::new(),
            flows: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
        }
    }

    /// A `registration` event.
    pub fn registration(&mut self, v: &Value, at: Instant) {
        if let Some(id) = field(v, "account").as_u64() {
            self.accounts.insert(id, (v.clone(), at));
        }
    }

    /// A `flow` event (one that ends the flow forgets it).
    pub fn flow(&mut self, v: &Value) {
        let Some(id) = field(v, "flow").as_u64() else {
            return;
        };
        if matches!(field(v, "state").as_str(), Some("closed" | "terminated")) {
            self.flows.remove(&id);
        } else {
            self.flows.insert(id, v.clone());
        }
    }

    /// A `subscription` event (`terminated` forgets it).
    pub fn subscription(&mut self, v: &Value) {
        let Some(id) = field(v, "sub").as_u64() else {
            return;
        };
        if field(v, "state") == "terminated" {
            self.subscriptions.remove(&id);
        } else {
            self.subscriptions.insert(id, v.clone());
        }
    }

    /// A `media` event.
    pub fn media(&mut self, v: &Value) {
        if let Some(c) = field(v, "call")
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .and_then(|c| self.calls.get_mut(&c))
        {
            c.media = Some(v.clone());
        }
    }

    /// A call's event: its `call` event's fields beyond the state's
    /// (`direction`, `peer` and `display` on a new call; `by` and `reason`
    /// on its end), then the call's view updated.
    pub fn call_fields(&mut self, ev: &CallEvent) -> Value {
        let CallEvent::State {
            call,
            state,
            peer,
            end,
            ..
        } = ev
        else {
            return json!({});
        };
        let mut more = serde_json::Map::new();
        match state {
            CallState::Calling | CallState::Incoming => {
                let direction = if *state == CallState::Incoming {
                    "incoming"
                } else {
                    "outgoing"
                };
                more.insert("direction".into(), json!(direction));
                if let Some(p) = peer {
                    more.insert("peer".into(), json!(p.uri));
                    more.insert("display".into(), json!(p.display));
                }
                let view = self.calls.entry(call.0).or_insert(CallView {
                    state: state.as_str(),
                    peer: None,
                    display: None,
                    direction,
                    held: false,
                    hold_pending: None,
                    media: None,
                });
                if let Some(p) = peer {
                    view.peer = Some(p.uri.clone());
                    view.display = p.display.clone();
                }
                view.state = state.as_str();
            }
            CallState::Disconnected => {
                if let Some(e) = end {
                    more.insert("by".into(), json!(e.by.as_str()));
                    more.insert("reason".into(), json!(e.reason.text()));
                }
                if let Some(v) = self.calls.remove(&call.0) {
                    more.insert("peer".into(), json!(v.peer));
                }
            }
            _ => {
                if let Some(v) = self.calls.get_mut(&call.0) {
                    v.state = state.as_str();
                }
            }
        }
        Value::Object(more)
    }

    /// `hold` (`true`) or `unhold` was sent on `call`.
    pub fn hold_asked(&mut self, call: CallId, hold: bool) {
        if let Some(v) = self.calls.get_mut(&call.0) {
            v.hold_pending = Some(hold);
        }
    }

    /// The `call` event telling a hold's outcome, once the peer answered
    /// our re-offer (`Answer`) or refused it (`RefreshFailed`): `held`
    /// true or false.
    pub fn hold_outcome(&mut self, ev: &CallEvent) -> Option<Value> {
        let (call, code) = match ev {
            CallEvent::Answer { call, .. } => (call, None),
            CallEvent::RefreshFailed { call, code } => (call, Some(*code)),
            _ => return None,
        };
        let v = self.calls.get_mut(&call.0)?;
        let asked = v.hold_pending.take()?;
        if code.is_none() {
            v.held = asked;
        }
        let mut out = json!({
            "event": "call",
            "call": call.0,
            "state": v.state,
            "held": v.held,
        });
        if let (Some(c), Some(o)) = (code, out.as_object_mut()) {
            o.insert("code".into(), json!(c));
            o.insert(
                "reason".into(),
                json!(if asked {
                    "hold refused"
                } else {
                    "unhold refused"
                }),
            );
        }
        Some(out)
    }

    /// The `status` event: every account, call, flow and subscription,
    /// and the listeners.
    pub fn status_json(&self, listeners: &[ListenerInfo], now: Instant) -> Value {
        let accounts: Vec<Value> = self
            .accounts
            .iter()
            .map(|(id, (r, at))| {
                let expires = field(r, "expires").as_u64().unwrap_or(0);
                let left = expires.saturating_sub(now.saturating_duration_since(*at).as_secs());
                let flow = self
                    .flows
                    .values()
                    .find(|f| field(f, "account").as_u64() == Some(*id));
                let contact = field(r, "contact").as_str().unwrap_or_default();
                let transport = match flow {
                    Some(f) => field(f, "transport").clone(),
                    None => json!(contact_transport(contact)),
                };
                json!({
                    "account": id,
                    "aor": u32::try_from(*id)
                        .ok()
                        .and_then(|i| self.account_aors.get(&i))
                        .unwrap_or(&self.aor),
                    "state": field(r, "state"),
                    "contact": field(r, "contact"),
                    "expires_left": if field(r, "state") == "registered" { left } else { 0 },
                    "outbound": field(r, "outbound"),
                    "flow": flow.map(|f| field(f, "flow").clone()),
                    "transport": transport,
                })
            })
            .collect();
        let calls: Vec<Value> = self
            .calls
            .iter()
            .map(|(id, c)| {
                let media = c.media.as_ref().map(|m| {
                    json!({
                        "local": field(m, "local"),
                        "remote": field(m, "remote"),
                        "tx_packets": field(m, "tx_packets"),
                        "rx_packets": field(m, "rx_packets"),
                        "lost": field(m, "lost"),
                        "srtp": field(m, "srtp"),
                    })
                });
                json!({
                    "call": id,
                    "state": c.state,
                    "peer": c.peer,
                    "display": c.display,
                    "direction": c.direction,
                    "held": c.held,
                    "media": media,
                })
            })
            .collect();
        let flows: Vec<Value> = self
            .flows
            .values()
            .map(|f| {
                json!({
                    "flow": field(f, "flow"),
                    "account": field(f, "account"),
                    "transport": field(f, "transport"),
                    "local": field(f, "local"),
                    "remote": field(f, "remote"),
                    "state": field(f, "state"),
                })
            })
            .collect();
        let subscriptions: Vec<Value> = self
            .subscriptions
            .values()
            .map(|s| {
                json!({
                    "sub": field(s, "sub"),
                    "package": field(s, "package"),
                    "role": field(s, "role"),
                    "peer": field(s, "peer"),
                    "state": field(s, "state"),
                })
            })
            .collect();
        let listeners: Vec<Value> = listeners
            .iter()
            .map(|l| {
                json!({
                    "transport": l.transport.to_string().to_ascii_lowercase(),
                    "address": l.local.to_string(),
                })
            })
            .collect();
        json!({
            "event": "status",
            "accounts": accounts,
            "calls": calls,
            "flows": flows,
            "subscriptions": subscriptions,
            "listeners": listeners,
        })
    }
}

/// `v[key]`, null when absent.
fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// The transport a Contact URI names (`udp` without a `transport`).
fn contact_transport(contact: &str) -> &'static str {
    let lower = contact.to_ascii_lowercase();
    if lower.contains("transport=tls") || lower.starts_with("sips:") {
        "tls"
    } else if lower.contains("transport=tcp") {
        "tcp"
    } else {
        "udp"
    }
}

/// The `status` event as lines for a person.
pub fn status_lines(s: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let list = |key: &str| field(s, key).as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    let accounts = list("accounts");
    if accounts.is_empty() {
        out.push("accounts: none".into());
    }
    for a in accounts {
        out.push(format!(
            "account {} {} contact {} expires in {} s via {}{}",
            text(field(&a, "aor")),
            text(field(&a, "state")),
            text(field(&a, "contact")),
            text(field(&a, "expires_left")),
            text(field(&a, "transport")),
            field(&a, "flow")
                .as_u64()
                .map(|f| format!(" (flow {f})"))
                .unwrap_or_default(),
        ));
    }
    let calls = list("calls");
    if calls.is_empty() {
        out.push("calls: none".into());
    }
    for c in calls {
        let media = &field(&c, "media");
        out.push(format!(
            "call {} {} {} {}{}{}",
            text(field(&c, "call")),
            text(field(&c, "state")),
            text(field(&c, "direction")),
            text(field(&c, "peer")),
            if field(&c, "held") == true {
                " (held)"
            } else {
                ""
            },
            if media.is_object() {
                format!(
                    ", media {} <-> {}, {} sent, {} received{}",
                    text(field(media, "local")),
                    text(field(media, "remote")),
                    text(field(media, "tx_packets")),
                    text(field(media, "rx_packets")),
                    match field(media, "srtp").as_str() {
                        Some(suite) => format!(", SRTP {suite}"),
                        None => String::new(),
                    },
                )
            } else {
                String::new()
            },
        ));
    }
    for f in list("flows") {
        out.push(format!(
            "flow {} {} {} -> {} {}",
            text(field(&f, "flow")),
            text(field(&f, "transport")),
            text(field(&f, "local")),
            text(field(&f, "remote")),
            text(field(&f, "state")),
        ));
    }
    for sub in list("subscriptions") {
        out.push(format!(
            "subscription {} {} {} {} {}",
            text(field(&sub, "sub")),
            text(field(&sub, "package")),
            text(field(&sub, "role")),
            text(field(&sub, "peer")),
            text(field(&sub, "state")),
        ));
    }
    for l in list("listeners") {
        out.push(format!(
            "listening {} {}",
            text(field(&l, "transport")),
            text(field(&l, "address"))
        ));
    }
    out
}
