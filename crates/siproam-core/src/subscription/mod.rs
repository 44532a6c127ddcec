//! Subscriptions (RFC 6665), both roles, and the bodies of the `presence`
//! (RFC 3856, PIDF basic) and `message-summary` (RFC 3842) packages.
//!
//! Owns every subscription we hold (we sent the SUBSCRIBE: the
//! subscriber) and serve (we received it: the notifier), their dialogs and
//! timers. The endpoint hands it every SUBSCRIBE and NOTIFY
//! ([`Endpoint::subscription_request`]) before the INVITE dialog layer, the
//! responses and failures of its transactions (`TxOwner::Subscription`),
//! its timers (`TimerOwner::Subscription`) and every flow that closed.
//!
//! Subscriber:
//! - [`Endpoint::subscribe`] sends an out-of-dialog SUBSCRIBE (Event,
//!   Expires, Accept, Contact) towards the account's first hop (over a live
//!   outbound flow when outbound is in force, like a call);
//! - its dialog is made by the 2xx or by a NOTIFY that comes first; a
//!   NOTIFY from another dialog (a forked SUBSCRIBE) gets 481: **the first
//!   dialog is kept, the others are ended** (RFC 6665 §4.1.2.4 allows
//!   either);
//! - refreshed at 85 % of the granted expiry (in-dialog SUBSCRIBE);
//!   a 423 is retried once with the `Min-Expires`;
//! - `Subscription-State` drives the state: `active` (with its `expires`
//!   shortening the refresh), `pending`, `terminated` (with `reason` and
//!   `retry-after`: `deactivated` and `timeout` subscribe again at once,
//!   `probation` and `giveup` after `retry-after`, any other reason ends
//!   it);
//! - [`Endpoint::unsubscribe`] sends `Expires: 0` and waits (64·T1 at
//!   most) for the final NOTIFY;
//! - a 489 (Bad Event) or any other failure ends it with the code;
//! - on a failed flow ([`ClientSubscriptionRecovery::Resubscribe`]) it
//!   subscribes again at once over a new flow (a new dialog);
//!   [`Endpoint::refresh_subscriptions`] re-sends every refresh with the
//!   current Contact (after a network change).
//!
//! Notifier: an agent serves its own `presence` (open or closed, set by
//! the application with [`Endpoint::set_presence`]) and its
//! `message-summary` ([`Endpoint::set_message_summary`]); any other event
//! package gets 489 with `Allow-Events`. A NOTIFY goes at once after the
//! 2xx and on every change; the final NOTIFY (`terminated`) on expiry
//! (`timeout`), on an unsubscribe, on [`Endpoint::end_served_subscriptions`]
//! and, by [`ServerSubscriptionRecovery::Terminate`], when the flow the
//! subscriber used failed (`deactivated`: it subscribes again over its new
//! flow). At most [`MAX_SERVED`] are held; beyond, 503. A NOTIFY answered
//! 481 or unanswered ends the subscription.
//!
//! Who may subscribe: a new SUBSCRIBE whose Request-URI names no user of
//! ours (`Endpoint::addressed_to_us`, the one test of our identities)
//! gets 404, one from a watcher not in [`crate::Config::watchers`]
//! ([`watchers`]: none by default, `*` for anyone) 403 (RFC 6665
//! §4.2.1.1, RFC 3856 §6.6); neither keeps any state. A refresh in the
//! dialog of a subscription we accepted is not checked again.

mod body;
mod watchers;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};

pub use body::{
    BasicStatus, BodyError, MessageCounts, MessageSummary, NotifyBody, Presence, MESSAGE_SUMMARY,
    PIDF,
};
pub use watchers::ANYONE;

use crate::dialog::{name_addr_uri, tag_param, uri_addr};
use crate::endpoint::{
    fmt_hostport, CoreError, Endpoint, Event, RequestFailure, ServerTxId, Target, TxOwner,
};
use crate::flow::{FlowCloseReason, FlowId, Transport};
use crate::flow_failure::{ClientSubscriptionRecovery, ServerSubscriptionRecovery};
use crate::timers::{TimerKind, TimerOwner};

/// Subscriptions served at once at most (SUBSCRIBEs beyond get 503).
pub const MAX_SERVED: usize = 256;
/// The shortest expiry we grant (423 below it).
const MIN_EXPIRES: u32 = 60;
/// A held subscription whose SUBSCRIBE died with a flow the policy left
/// alone tries again after this.
const IGNORED_FAILURE_RETRY: Duration = Duration::from_secs(30);
/// The longest expiry we grant, and the default.
const MAX_EXPIRES: u32 = 3600;

/// A subscription, held or served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubId(pub u32);

/// A subscription's state (RFC 6665 §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    /// Sent, or accepted but not authorized yet.
    Pending,
    /// In force.
    Active,
    /// Ended.
    Terminated,
}

impl SubscriptionState {
    /// `pending`, `active` or `terminated`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Pending => "pending",
            SubscriptionState::Active => "active",
            SubscriptionState::Terminated => "terminated",
        }
    }
}

/// Which end of a subscription we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionRole {
    /// We sent the SUBSCRIBE.
    Subscriber,
    /// We received it.
    Notifier,
}

/// Why a subscription ended or went back to pending, as the
/// `Subscription-State` reasons of RFC 6665 §4.1.3 plus our own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionReason {
    /// `deactivated`: subscribe again at once.
    Deactivated,
    /// `probation`: subscribe again after `retry-after`.
    Probation,
    /// `rejected`.
    Rejected,
    /// `timeout`: it expired.
    Timeout,
    /// `giveup`.
    Giveup,
    /// `noresource`.
    Noresource,
    /// `invariant`.
    Invariant,
    /// A reason no RFC names (the token as received).
    Other(String),
    /// Our SUBSCRIBE was answered with this failure (489 Bad Event …), or
    /// got no answer (408).
    Refused(u16),
    /// We unsubscribed (or the notifier ended it without a final NOTIFY
    /// in time).
    Unsubscribed,
    /// The flow failed; subscribing again over a new one.
    FlowFailed,
    /// A NOTIFY's body could not be read.
    MalformedBody(BodyError),
}

impl SubscriptionReason {
    fn parse(token: &str) -> SubscriptionReason {
        match token.to_ascii_lowercase().as_str() {
            "deactivated" => SubscriptionReason::Deactivated,
            "probation" => SubscriptionReason::Probation,
            "rejected" => SubscriptionReason::Rejected,
            "timeout" => SubscriptionReason::Timeout,
            "giveup" => SubscriptionReason::Giveup,
            "noresource" => SubscriptionReason::Noresource,
            "invariant" => SubscriptionReason::Invariant,
            other => SubscriptionReason::Other(other.chars().take(32).collect()),
        }
    }

    /// The text for the `reason` field (the RFC token, `bad_event` for a
    /// 489, `code_N` for another failure, `unsubscribed`, `flow_failed`,
    /// `malformed_body`).
    pub fn text(&self) -> String {
        match self {
            SubscriptionReason::Deactivated => "deactivated".into(),
            SubscriptionReason::Probation => "probation".into(),
            SubscriptionReason::Rejected => "rejected".into(),
            SubscriptionReason::Timeout => "timeout".into(),
            SubscriptionReason::Giveup => "giveup".into(),
            SubscriptionReason::Noresource => "noresource".into(),
            SubscriptionReason::Invariant => "invariant".into(),
            SubscriptionReason::Other(t) => t.clone(),
            SubscriptionReason::Refused(489) => "bad_event".into(),
            SubscriptionReason::Refused(c) => format!("code_{c}"),
            SubscriptionReason::Unsubscribed => "unsubscribed".into(),
            SubscriptionReason::FlowFailed => "flow_failed".into(),
            SubscriptionReason::MalformedBody(_) => "malformed_body".into(),
        }
    }
}

/// Something happened to a subscription ([`Event::Subscription`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEvent {
    /// The subscription.
    pub sub: SubId,
    /// Our end of it.
    pub role: SubscriptionRole,
    /// The event package (`presence`, `message-summary`, …).
    pub event: String,
    /// The other end's URI (the resource for a subscriber, the subscriber
    /// for a notifier).
    pub peer: String,
    /// The state now.
    pub state: SubscriptionState,
    /// Why, when it ended or changed for a reason.
    pub reason: Option<SubscriptionReason>,
    /// `retry-after` of a final NOTIFY.
    pub retry_after: Option<u32>,
    /// What a NOTIFY carried (subscriber), or what we sent (notifier);
    /// `None` without a body.
    pub body: Option<NotifyBody>,
}

/// How to subscribe ([`Endpoint::subscribe`]).
#[derive(Debug, Clone)]
pub struct SubscribeSpec {
    /// The resource (Request-URI and To).
    pub uri: String,
    /// Our address of record (From).
    pub from: String,
    /// The event package.
    pub event: String,
    /// The expiry to ask for.
    pub expires: u32,
    /// The next hop, already resolved.
    pub target: Target,
    /// Our Contact's user part.
    pub contact_user: String,
}

/// The dialog of a subscription (either role).
#[derive(Debug, Clone)]
struct SubDialog {
    call_id: String,
    local_tag: String,
    local_uri: String,
    remote_uri: String,
    /// `None` until the 2xx or a NOTIFY made the dialog (subscriber).
    remote_tag: Option<String>,
    remote_target: String,
    route_set: Vec<String>,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    first_hop: Target,
    flow: Option<FlowId>,
    contact_user: String,
    /// The address to send from (and so our Contact), set by a network
    /// change.
    send_from: Option<IpAddr>,
}

#[derive(Debug)]
struct ClientSub {
    event: String,
    expires: u32,
    dialog: SubDialog,
    state: SubscriptionState,
    /// A SUBSCRIBE of ours is waiting for its answer.
    in_flight: bool,
    unsubscribing: bool,
    /// A 423 was retried already.
    retried_423: bool,
}

#[derive(Debug)]
struct ServerSub {
    event: String,
    dialog: SubDialog,
    expires_at: Instant,
}

/// Every subscription, by id and by dialog.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    next: u32,
    clients: HashMap<SubId, ClientSub>,
    servers: HashMap<SubId, ServerSub>,
    /// (Call-ID, our tag) → subscription.
    by_dialog: HashMap<(String, String), SubId>,
    /// Our presence (served): `None` until the application said.
    presence_open: bool,
    summary: MessageSummary,
}

impl Subscriptions {
    fn next_id(&mut self) -> SubId {
        self.next = self.next.wrapping_add(1);
        SubId(self.next)
    }
}

fn content_type_for(event: &str) -> Option<&'static str> {
    match event {
        "presence" => Some(PIDF),
        "message-summary" => Some(MESSAGE_SUMMARY),
        _ => None,
    }
}

/// The served packages.
const SERVED: &str = "presence, message-summary";

/// The event package of a request (`Event` without its parameters, lower
/// case; `o` is its compact form, handled by the parser).
fn event_of(m: &Message) -> Option<String> {
    m.event()
        .and_then(Result::ok)
        .map(|e| e.value().to_ascii_lowercase())
}

/// When to refresh a subscription granted for `expires` seconds.
fn refresh_after(expires: u32) -> Duration {
    Duration::from_millis(u64::from(expires).saturating_mul(850)).max(Duration::from_secs(1))
}

impl Endpoint {
    fn sub_event(&mut self, ev: SubscriptionEvent) {
        self.events.push_back(Event::Subscription(ev));
    }

    /// Subscribes: an out-of-dialog SUBSCRIBE. The subscription is
    /// reported `pending` at once, then as NOTIFYs say.
    pub fn subscribe(&mut self, now: Instant, spec: SubscribeSpec) -> Result<SubId, CoreError> {
        let id = self.subscriptions.next_id();
        let dialog = self.new_client_dialog(&spec.uri, &spec.from, spec.target, spec.contact_user);
        self.subscriptions
            .by_dialog
            .insert((dialog.call_id.clone(), dialog.local_tag.clone()), id);
        let peer = dialog.remote_uri.clone();
        self.subscriptions.clients.insert(
            id,
            ClientSub {
                event: spec.event.clone(),
                expires: spec.expires,
                dialog,
                state: SubscriptionState::Pending,
                in_flight: false,
                unsubscribing: false,
                retried_423: false,
            },
        );
        self.sub_event(SubscriptionEvent {
            sub: id,
            role: SubscriptionRole::Subscriber,
            event: spec.event,
            peer,
            state: SubscriptionState::Pending,
            reason: None,
            retry_after: None,
            body: None,
        });
        self.send_subscribe(now, id, spec.expires);
        Ok(id)
    }

    fn new_client_dialog(
        &mut self,
        uri: &str,
        from: &str,
        target: Target,
        contact_user: String,
    ) -> SubDialog {
        SubDialog {
            call_id: format!("{}@siproam", self.rng.token(20)),
            local_tag: self.rng.token(10),
            local_uri: from.to_owned(),
            remote_uri: uri.to_owned(),
            remote_tag: None,
            remote_target: uri.to_owned(),
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: None,
            first_hop: target,
            flow: None,
            contact_user,
            send_from: None,
        }
    }

    /// Ends a subscription we hold: `Expires: 0`, then the final NOTIFY
    /// (or 64·T1) ends it.
    pub fn unsubscribe(&mut self, now: Instant, sub: SubId) -> Result<(), CoreError> {
        let c = self
            .subscriptions
            .clients
            .get_mut(&sub)
            .ok_or(CoreError::NoSuchSubscription)?;
        c.unsubscribing = true;
        if c.dialog.remote_tag.is_none() {
            // no dialog to unsubscribe in: forget it (a NOTIFY that still
            // comes gets 481, which ends it at the notifier)
            self.end_client(sub, SubscriptionReason::Unsubscribed, None);
            return Ok(());
        }
        self.send_subscribe(now, sub, 0);
        self.timers.set(
            TimerOwner::Subscription(sub.0),
            TimerKind::SubscriptionExpiry,
            now + self.config.t1x64(),
        );
        Ok(())
    }

    /// The subscriptions we hold and serve, with their state.
    pub fn subscriptions(&self) -> Vec<(SubId, SubscriptionRole, SubscriptionState)> {
        let mut v: Vec<_> = self
            .subscriptions
            .clients
            .iter()
            .map(|(id, c)| (*id, SubscriptionRole::Subscriber, c.state))
            .chain(
                self.subscriptions
                    .servers
                    .keys()
                    .map(|id| (*id, SubscriptionRole::Notifier, SubscriptionState::Active)),
            )
            .collect();
        v.sort_by_key(|(id, _, _)| *id);
        v
    }

    /// Sends every held subscription's refresh now, with the current
    /// Contact (after a network change moved our address).
    pub fn refresh_subscriptions(&mut self, now: Instant) {
        let ids: Vec<SubId> = self
            .subscriptions
            .clients
            .iter()
            .filter(|(_, c)| !c.unsubscribing)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(c) = self.subscriptions.clients.get_mut(&id) else {
                continue;
            };
            let expires = c.expires;
            // the old flow is no way back to us any more
            c.dialog.flow = None;
            self.disown_client_txs(now, TxOwner::Subscription(id));
            self.send_subscribe(now, id, expires);
        }
    }

    /// A network change moved us to `ip`: every subscription sends from
    /// there, those we hold refresh at once (their new Contact), and those
    /// we serve send a NOTIFY (its Contact is the new remote target).
    pub(crate) fn move_subscriptions(&mut self, now: Instant, ip: IpAddr) {
        let served: Vec<SubId> = self.subscriptions.servers.keys().copied().collect();
        for c in self.subscriptions.clients.values_mut() {
            c.dialog.send_from = Some(ip);
        }
        for id in &served {
            if let Some(s) = self.subscriptions.servers.get_mut(id) {
                s.dialog.send_from = Some(ip);
                s.dialog.flow = None;
            }
        }
        self.refresh_subscriptions(now);
        for id in served {
            self.send_notify(now, id, None);
        }
    }

    /// Sets our presence; every presence subscription served is notified
    /// when it changes.
    pub fn set_presence(&mut self, now: Instant, open: bool) {
        if self.subscriptions.presence_open == open {
            return;
        }
        self.subscriptions.presence_open = open;
        self.notify_all(now, "presence");
    }

    /// Sets our message summary; every message-summary subscription served
    /// is notified when it changes.
    pub fn set_message_summary(&mut self, now: Instant, summary: MessageSummary) {
        if self.subscriptions.summary == summary {
            return;
        }
        self.subscriptions.summary = summary;
        self.notify_all(now, "message-summary");
    }

    /// Ends every subscription served, each with a final NOTIFY
    /// (`noresource`: we go away).
    pub fn end_served_subscriptions(&mut self, now: Instant) {
        let ids: Vec<SubId> = self.subscriptions.servers.keys().copied().collect();
        for id in ids {
            self.final_notify(now, id, SubscriptionReason::Noresource);
        }
    }

    /// Ends every subscription as the application goes away: each held
    /// one unsubscribed (`Expires: 0`), each served one ended with a final
    /// NOTIFY. [`Endpoint::subscription_requests_pending`] tells when
    /// their requests are answered.
    pub fn end_all_subscriptions(&mut self, now: Instant) {
        let held: Vec<SubId> = self
            .subscriptions
            .clients
            .iter()
            .filter(|(_, c)| !c.unsubscribing)
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            let _ = self.unsubscribe(now, id);
        }
        self.end_served_subscriptions(now);
    }

    /// Whether a SUBSCRIBE or NOTIFY of ours still waits for its final
    /// answer (a challenge to it answered counts as still waiting).
    pub fn subscription_requests_pending(&self) -> bool {
        self.has_client_tx_where(|owner| matches!(owner, TxOwner::Subscription(_)))
    }

    fn notify_all(&mut self, now: Instant, event: &str) {
        let ids: Vec<SubId> = self
            .subscriptions
            .servers
            .iter()
            .filter(|(_, s)| s.event == event)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send_notify(now, id, None);
        }
    }

    // ----- requests out ----------------------------------------------

    /// The next hop of an in-dialog request (the route set's first entry,
    /// else the remote target; the dialog's flow when that is its peer).
    fn sub_target(&self, d: &SubDialog) -> Target {
        let mut t = self.sub_hop(d);
        if let Some(ip) = d.send_from {
            t.local = Some(SocketAddr::new(ip, 0));
        }
        t
    }

    fn sub_hop(&self, d: &SubDialog) -> Target {
        if d.remote_tag.is_none() {
            // out of dialog: the account's first hop, or a live outbound
            // flow of the AoR
            return self
                .outbound_target_for(&d.local_uri)
                .map(|(_, t)| t)
                .unwrap_or(d.first_hop);
        }
        let hop = d
            .route_set
            .first()
            .map(|r| name_addr_uri(r))
            .unwrap_or_else(|| d.remote_target.clone());
        let mut t = uri_addr(&hop, d.first_hop.transport).unwrap_or(d.first_hop);
        if let Some(f) = d.flow.and_then(|f| self.flows.get(f)) {
            if f.remote.ip() == t.remote.ip() && f.transport == t.transport {
                t.remote = f.remote;
                t.local = f.local.or(t.local);
            }
        }
        t
    }

    fn sub_contact(&mut self, d: &SubDialog, target: Target) -> String {
        if let Some(gruu) = self.gruu_contact_for(&d.local_uri, false) {
            return format!("<{gruu}>");
        }
        let flow = self.flows.towards(
            target.transport,
            target.remote,
            target.local,
            target.server_name,
        );
        let addr: SocketAddr = self.local_for(flow, target.transport, target.local);
        let t = if target.transport == Transport::Udp {
            String::new()
        } else {
            format!(";transport={}", target.transport.param())
        };
        let ob = if self.outbound_for(&d.local_uri) {
            ";ob"
        } else {
            ""
        };
        format!("<sip:{}@{}{t}{ob}>", d.contact_user, fmt_hostport(addr))
    }

    /// The next CSeq of a subscription's dialog, taken (a request sent
    /// again with credentials, `crate::auth`).
    pub(crate) fn subscription_next_cseq(&mut self, id: SubId) -> Option<u32> {
        let d = match self.subscriptions.clients.get_mut(&id) {
            Some(c) => &mut c.dialog,
            None => &mut self.subscriptions.servers.get_mut(&id)?.dialog,
        };
        d.local_cseq += 1;
        Some(d.local_cseq)
    }

    /// A request in the subscription's dialog (or the initial one).
    fn sub_request(&mut self, id: SubId, method: Method<'_>) -> Option<(MessageBuilder, Target)> {
        let d = match self.subscriptions.clients.get_mut(&id) {
            Some(c) => &mut c.dialog,
            None => &mut self.subscriptions.servers.get_mut(&id)?.dialog,
        };
        d.local_cseq += 1;
        let d = d.clone();
        let target = self.sub_target(&d);
        let contact = self.sub_contact(&d, target);
        let uri = if d.remote_tag.is_some() {
            &d.remote_target
        } else {
            &d.remote_uri
        };
        let mut b = MessageBuilder::request(method, uri)
            .header("From", &format!("<{}>;tag={}", d.local_uri, d.local_tag))
            .header(
                "To",
                &match &d.remote_tag {
                    Some(t) => format!("<{}>;tag={t}", d.remote_uri),
                    None => format!("<{}>", d.remote_uri),
                },
            )
            .header("Call-ID", &d.call_id)
            .header("CSeq", &format!("{} {method}", d.local_cseq));
        if d.remote_tag.is_some() {
            for r in &d.route_set {
                b = b.header("Route", r);
            }
        } else if let Some(route) = self.outbound_route_towards(target) {
            b = b.header("Route", &route);
        }
        b = b.header("Contact", &contact);
        Some((b, target))
    }

    fn send_subscribe(&mut self, now: Instant, id: SubId, expires: u32) {
        let Some(event) = self.subscriptions.clients.get(&id).map(|c| c.event.clone()) else {
            return;
        };
        let Some((mut b, target)) = self.sub_request(id, Method::Subscribe) else {
            return;
        };
        b = b
            .header("Event", &event)
            .header("Expires", &expires.to_string())
            .header(
                "Allow",
                "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, SUBSCRIBE, NOTIFY",
            );
        if let Some(ct) = content_type_for(&event) {
            b = b.header("Accept", ct);
        }
        self.timers.cancel(
            TimerOwner::Subscription(id.0),
            TimerKind::SubscriptionRefresh,
        );
        match self.start_client_tx(now, b, target, TxOwner::Subscription(id)) {
            Ok(flow) => {
                if let Some(c) = self.subscriptions.clients.get_mut(&id) {
                    c.in_flight = true;
                    if c.dialog.flow.is_none() || c.dialog.remote_tag.is_none() {
                        c.dialog.flow = Some(flow);
                    }
                }
            }
            Err(_) => self.end_client(id, SubscriptionReason::Refused(500), None),
        }
    }

    /// A NOTIFY with our state (`final_reason`: the last one, `terminated`).
    fn send_notify(
        &mut self,
        now: Instant,
        id: SubId,
        final_reason: Option<&SubscriptionReason>,
    ) -> Option<NotifyBody> {
        let s = self.subscriptions.servers.get(&id)?;
        let event = s.event.clone();
        let entity = s.dialog.local_uri.clone();
        let left = s.expires_at.saturating_duration_since(now).as_secs();
        let state = match final_reason {
            Some(r) => format!("terminated;reason={}", r.text()),
            None => format!("active;expires={left}"),
        };
        let body = match event.as_str() {
            "presence" => NotifyBody::Presence(Presence {
                entity,
                status: if self.subscriptions.presence_open {
                    BasicStatus::Open
                } else {
                    BasicStatus::Closed
                },
            }),
            _ => NotifyBody::MessageSummary(self.subscriptions.summary.clone()),
        };
        let (ct, text) = match &body {
            NotifyBody::Presence(p) => (PIDF, p.to_xml()),
            NotifyBody::MessageSummary(m) => (MESSAGE_SUMMARY, m.to_text()),
        };
        let (b, target) = self.sub_request(id, Method::Notify)?;
        let b = b
            .header("Event", &event)
            .header("Subscription-State", &state)
            .body(ct, Bytes::from(text));
        let _ = self.start_client_tx(now, b, target, TxOwner::Subscription(id));
        Some(body)
    }

    fn final_notify(&mut self, now: Instant, id: SubId, reason: SubscriptionReason) {
        let body = self.send_notify(now, id, Some(&reason));
        self.end_server(id, reason, body);
    }

    fn end_server(&mut self, id: SubId, reason: SubscriptionReason, body: Option<NotifyBody>) {
        let Some(s) = self.subscriptions.servers.remove(&id) else {
            return;
        };
        self.subscriptions
            .by_dialog
            .remove(&(s.dialog.call_id.clone(), s.dialog.local_tag.clone()));
        self.timers.cancel_all(TimerOwner::Subscription(id.0));
        self.sub_event(SubscriptionEvent {
            sub: id,
            role: SubscriptionRole::Notifier,
            event: s.event,
            peer: s.dialog.remote_uri,
            state: SubscriptionState::Terminated,
            reason: Some(reason),
            retry_after: None,
            body,
        });
    }

    fn end_client(&mut self, id: SubId, reason: SubscriptionReason, retry_after: Option<u32>) {
        let Some(c) = self.subscriptions.clients.remove(&id) else {
            return;
        };
        self.subscriptions
            .by_dialog
            .remove(&(c.dialog.call_id.clone(), c.dialog.local_tag.clone()));
        // its transactions' answers find no subscription (ids are not
        // reused) and are dropped
        self.timers.cancel_all(TimerOwner::Subscription(id.0));
        self.sub_event(SubscriptionEvent {
            sub: id,
            role: SubscriptionRole::Subscriber,
            event: c.event,
            peer: c.dialog.remote_uri,
            state: SubscriptionState::Terminated,
            reason: Some(reason),
            retry_after,
            body: None,
        });
    }

    /// Starts the subscription again in a new dialog, now or after `wait`.
    fn restart_client(&mut self, now: Instant, id: SubId, wait: Option<Duration>) {
        let Some(c) = self.subscriptions.clients.get(&id) else {
            return;
        };
        let old = (c.dialog.call_id.clone(), c.dialog.local_tag.clone());
        let (uri, from, hop, user) = (
            c.dialog.remote_uri.clone(),
            c.dialog.local_uri.clone(),
            c.dialog.first_hop,
            c.dialog.contact_user.clone(),
        );
        let send_from = c.dialog.send_from;
        let mut fresh = self.new_client_dialog(&uri, &from, hop, user);
        fresh.send_from = send_from;
        self.subscriptions.by_dialog.remove(&old);
        self.subscriptions
            .by_dialog
            .insert((fresh.call_id.clone(), fresh.local_tag.clone()), id);
        // answers to the old dialog's requests must not reach the new one
        self.disown_client_txs(now, TxOwner::Subscription(id));
        let Some(c) = self.subscriptions.clients.get_mut(&id) else {
            return;
        };
        c.dialog = fresh;
        c.state = SubscriptionState::Pending;
        c.in_flight = false;
        c.retried_423 = false;
        let expires = c.expires;
        match wait {
            Some(w) => self.timers.set(
                TimerOwner::Subscription(id.0),
                TimerKind::SubscriptionRefresh,
                now + w,
            ),
            None => self.send_subscribe(now, id, expires),
        }
    }

    // ----- responses and failures --------------------------------------

    pub(crate) fn subscription_response(&mut self, now: Instant, id: SubId, resp: Message) {
        let code = resp.status().unwrap_or(500);
        if code < 200 {
            return;
        }
        if self.subscriptions.servers.contains_key(&id) {
            // the answer to a NOTIFY of ours
            if matches!(code, 481 | 408) {
                self.end_server(id, SubscriptionReason::Refused(code), None);
            }
            return;
        }
        let Some(c) = self.subscriptions.clients.get_mut(&id) else {
            return;
        };
        c.in_flight = false;
        if (200..300).contains(&code) {
            if c.dialog.remote_tag.is_none() {
                c.dialog.remote_tag = tag_param(&resp, true);
                if let Some(t) = contact_uri(&resp) {
                    c.dialog.remote_target = t;
                }
                let mut rr: Vec<String> = resp
                    .header_values(HeaderName::RecordRoute)
                    .flat_map(siproam_sip::split_list)
                    .map(str::to_owned)
                    .collect();
                rr.reverse();
                c.dialog.route_set = rr;
            }
            if c.unsubscribing {
                return;
            }
            // RFC 6665 §4.1.2.4: a NOTIFY follows the 2xx; none within
            // 64·T1 and the subscription is over (the timer finds it)
            let no_notify_yet = c.dialog.remote_cseq.is_none();
            let granted = resp
                .expires()
                .and_then(Result::ok)
                .unwrap_or(c.expires)
                .min(c.expires.max(1));
            if granted == 0 {
                // the notifier ended it at once (a fetch): the NOTIFY
                // with `terminated` says why
                return;
            }
            // a NOTIFY that came first may have asked for an earlier one
            let at = now + refresh_after(granted);
            let key = (
                TimerOwner::Subscription(id.0),
                TimerKind::SubscriptionRefresh,
            );
            if self.timers.deadline(key.0, key.1).is_none_or(|d| d > at) {
                self.timers.set(key.0, key.1, at);
            }
            if no_notify_yet {
                self.timers.set(
                    TimerOwner::Subscription(id.0),
                    TimerKind::SubscriptionExpiry,
                    now + self.config.t1x64(),
                );
            }
            return;
        }
        if code == 423 && !c.retried_423 {
            if let Some(Ok(min)) = resp.min_expires() {
                c.retried_423 = true;
                c.expires = min.max(c.expires);
                let expires = c.expires;
                self.send_subscribe(now, id, expires);
                return;
            }
        }
        if c.unsubscribing {
            self.end_client(id, SubscriptionReason::Unsubscribed, None);
            return;
        }
        self.end_client(id, SubscriptionReason::Refused(code), None);
    }

    pub(crate) fn subscription_failed(&mut self, now: Instant, id: SubId, reason: RequestFailure) {
        if self.subscriptions.servers.contains_key(&id) {
            // our NOTIFY got no answer: the subscriber is gone
            self.end_server(id, SubscriptionReason::Refused(408), None);
            return;
        }
        let Some(c) = self.subscriptions.clients.get(&id) else {
            return;
        };
        if c.unsubscribing {
            self.end_client(id, SubscriptionReason::Unsubscribed, None);
            return;
        }
        match reason {
            // a failed flow: a subscription the policy re-subscribed
            // (`subscriptions_flow_closed`) gave its transactions away, so
            // this one was left alone (`Ignore`): it tries again later over
            // a new flow rather than stay without a refresh. One that never
            // came up is a 503.
            RequestFailure::Transport(r)
                if !matches!(r, FlowCloseReason::Local | FlowCloseReason::ConnectFailed) =>
            {
                if let Some(c) = self.subscriptions.clients.get_mut(&id) {
                    c.in_flight = false;
                }
                self.timers.set(
                    TimerOwner::Subscription(id.0),
                    TimerKind::SubscriptionRefresh,
                    now + IGNORED_FAILURE_RETRY,
                );
            }
            RequestFailure::Transport(_) => {
                self.end_client(id, SubscriptionReason::Refused(503), None)
            }
            RequestFailure::Timeout => self.end_client(id, SubscriptionReason::Refused(408), None),
        }
    }

    pub(crate) fn subscription_timer(&mut self, now: Instant, id: SubId, kind: TimerKind) {
        match kind {
            TimerKind::SubscriptionRefresh => {
                let Some(c) = self.subscriptions.clients.get(&id) else {
                    return;
                };
                let expires = c.expires;
                self.send_subscribe(now, id, expires);
            }
            TimerKind::SubscriptionExpiry => {
                if self.subscriptions.servers.contains_key(&id) {
                    self.final_notify(now, id, SubscriptionReason::Timeout);
                } else if let Some(c) = self.subscriptions.clients.get(&id) {
                    if c.unsubscribing {
                        // no final NOTIFY came after our unsubscribe
                        self.end_client(id, SubscriptionReason::Unsubscribed, None);
                    } else if c.dialog.remote_cseq.is_none() {
                        // no NOTIFY at all after the 2xx
                        self.end_client(id, SubscriptionReason::Timeout, None);
                    }
                }
            }
            _ => {}
        }
    }

    /// A flow closed: on a failure, held subscriptions over it subscribe
    /// again at once over a new flow, and served ones end with a final
    /// NOTIFY, each by its account's policy. Call with the flow already
    /// out of the table and before its transactions fail.
    pub(crate) fn subscriptions_flow_closed(
        &mut self,
        now: Instant,
        flow: FlowId,
        reason: FlowCloseReason,
    ) {
        if matches!(
            reason,
            FlowCloseReason::Local | FlowCloseReason::Idle | FlowCloseReason::ConnectFailed
        ) {
            return;
        }
        let policy_of = |ep: &Endpoint, uri: &str| {
            let account = ep.account_with_aor(uri).map(|(a, _)| a);
            ep.flow_failure_policy(account)
        };
        let mut clients: Vec<SubId> = self
            .subscriptions
            .clients
            .iter()
            .filter(|(_, c)| c.dialog.flow == Some(flow) && !c.unsubscribing)
            .filter(|(_, c)| {
                policy_of(self, &c.dialog.local_uri).client_subscription
                    == ClientSubscriptionRecovery::Resubscribe
            })
            .map(|(id, _)| *id)
            .collect();
        clients.sort();
        for id in clients {
            let (event, peer) = match self.subscriptions.clients.get(&id) {
                Some(c) => (c.event.clone(), c.dialog.remote_uri.clone()),
                None => continue,
            };
            self.restart_client(now, id, None);
            self.sub_event(SubscriptionEvent {
                sub: id,
                role: SubscriptionRole::Subscriber,
                event,
                peer,
                state: SubscriptionState::Pending,
                reason: Some(SubscriptionReason::FlowFailed),
                retry_after: None,
                body: None,
            });
        }
        let mut servers: Vec<SubId> = self
            .subscriptions
            .servers
            .iter()
            .filter(|(_, s)| s.dialog.flow == Some(flow))
            .filter(|(_, s)| {
                policy_of(self, &s.dialog.local_uri).server_subscription
                    == ServerSubscriptionRecovery::Terminate
            })
            .map(|(id, _)| *id)
            .collect();
        servers.sort();
        for id in servers {
            if let Some(s) = self.subscriptions.servers.get_mut(&id) {
                // the final NOTIFY goes over a new flow
                s.dialog.flow = None;
            }
            self.final_notify(now, id, SubscriptionReason::Deactivated);
        }
    }

    // ----- requests in -------------------------------------------------

    /// A SUBSCRIBE or NOTIFY for the subscriptions: answered here (`true`),
    /// or left to the rest of the endpoint (`false`: another package's
    /// NOTIFY, e.g. `refer`).
    pub(crate) fn subscription_request(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        flow: FlowId,
        req: &Message,
    ) -> bool {
        if !self.config.dialogs {
            return false;
        }
        let event = event_of(req);
        let to_tag = tag_param(req, true);
        let found = to_tag.as_ref().and_then(|t| {
            self.subscriptions
                .by_dialog
                .get(&(req.call_id().to_owned(), t.clone()))
                .copied()
        });
        let ours = event.as_deref().and_then(content_type_for).is_some();
        match req.method() {
            Some(Method::Notify) => match found {
                Some(id) if self.subscriptions.clients.contains_key(&id) => {
                    self.incoming_notify(now, tx, flow, id, req);
                    true
                }
                _ if ours => {
                    self.sub_respond(now, tx, req, 481, None, &[]);
                    true
                }
                _ => false,
            },
            Some(Method::Subscribe) => {
                match (to_tag, found) {
                    (None, _) => self.new_served(now, tx, flow, req, event),
                    (Some(_), Some(id)) if self.subscriptions.servers.contains_key(&id) => {
                        self.served_refresh(now, tx, id, req)
                    }
                    (Some(_), _) => self.sub_respond(now, tx, req, 481, None, &[]),
                }
                true
            }
            _ => false,
        }
    }

    fn sub_respond(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        req: &Message,
        code: u16,
        tag: Option<&str>,
        headers: &[(&str, String)],
    ) {
        let fresh;
        let tag = match tag {
            Some(t) => t,
            None => {
                fresh = self.rng.token(10);
                &fresh
            }
        };
        let mut b = MessageBuilder::response_to(req, code, sub_reason(code), Some(tag));
        for (n, v) in headers {
            b = b.header(n, v);
        }
        if let Ok(r) = b.build() {
            let _ = self.respond(now, tx, r);
        }
    }

    fn new_served(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        flow: FlowId,
        req: &Message,
        event: Option<String>,
    ) {
        // RFC 6665 §4.2.1.1: a resource that is not ours is not found
        if !self.addressed_to_us(req) {
            self.sub_respond(now, tx, req, 404, None, &[]);
            return;
        }
        let Some(event) = event.filter(|e| content_type_for(e).is_some()) else {
            self.sub_respond(
                now,
                tx,
                req,
                489,
                None,
                &[("Allow-Events", SERVED.to_owned())],
            );
            return;
        };
        // RFC 3856 §6.6: only the watchers we were told of (no state kept
        // for the others)
        let allowed = req
            .from()
            .is_ok_and(|f| watchers::may_watch(&self.config.watchers, f.uri()));
        if !allowed {
            self.sub_respond(now, tx, req, 403, None, &[]);
            return;
        }
        let Some(remote_target) = contact_uri(req) else {
            self.sub_respond(now, tx, req, 400, None, &[]);
            return;
        };
        let Some(expires) = self.served_expires(now, tx, req) else {
            return;
        };
        if self.subscriptions.servers.len() >= MAX_SERVED {
            self.sub_respond(now, tx, req, 503, None, &[("Retry-After", "30".into())]);
            return;
        }
        let (Some(remote_tag), Ok(to)) = (tag_param(req, false), req.to()) else {
            self.sub_respond(now, tx, req, 400, None, &[]);
            return;
        };
        let flow_info = self.flows.get(flow).cloned();
        let transport = flow_info.as_ref().map_or(Transport::Udp, |f| f.transport);
        let Some(remote) = flow_info.as_ref().map(|f| f.remote) else {
            return;
        };
        let local_uri = to.uri().to_string();
        let contact_user = req
            .request_uri()
            .and_then(|u| u.as_sip().and_then(|s| s.user()).map(str::to_owned))
            .unwrap_or_else(|| "siproam".into());
        let id = self.subscriptions.next_id();
        let local_tag = self.rng.token(10);
        let granted = expires.min(MAX_EXPIRES);
        let dialog = SubDialog {
            call_id: req.call_id().to_owned(),
            local_tag: local_tag.clone(),
            local_uri,
            remote_uri: req
                .from()
                .ok()
                .map(|f| f.uri().to_string())
                .unwrap_or_default(),
            remote_tag: Some(remote_tag),
            remote_target,
            route_set: req
                .header_values(HeaderName::RecordRoute)
                .flat_map(siproam_sip::split_list)
                .map(str::to_owned)
                .collect(),
            local_cseq: 0,
            remote_cseq: Some(req.cseq().seq),
            first_hop: Target {
                transport,
                remote,
                local: flow_info.as_ref().and_then(|f| f.local),
                server_name: flow_info
                    .as_ref()
                    .and_then(|f| f.server_names.first().copied()),
            },
            flow: Some(flow),
            contact_user,
            send_from: None,
        };
        let contact = self.sub_contact(&dialog, dialog.first_hop);
        let mut headers = vec![("Expires", granted.to_string()), ("Contact", contact)];
        // the proxies that Record-Routed it stay on the subscriber's path
        // too (RFC 3261 §12.1.1)
        headers.extend(
            req.header_values(HeaderName::RecordRoute)
                .map(|rr| ("Record-Route", rr.to_owned())),
        );
        self.sub_respond(now, tx, req, 200, Some(&local_tag), &headers);
        self.subscriptions
            .by_dialog
            .insert((dialog.call_id.clone(), local_tag), id);
        let peer = dialog.remote_uri.clone();
        self.subscriptions.servers.insert(
            id,
            ServerSub {
                event: event.clone(),
                dialog,
                expires_at: now + Duration::from_secs(u64::from(granted)),
            },
        );
        if granted == 0 {
            // a fetch: one NOTIFY with the state, and it is over
            self.final_notify(now, id, SubscriptionReason::Timeout);
            return;
        }
        self.timers.set(
            TimerOwner::Subscription(id.0),
            TimerKind::SubscriptionExpiry,
            now + Duration::from_secs(u64::from(granted)),
        );
        let body = self.send_notify(now, id, None);
        self.sub_event(SubscriptionEvent {
            sub: id,
            role: SubscriptionRole::Notifier,
            event,
            peer,
            state: SubscriptionState::Active,
            reason: None,
            retry_after: None,
            body,
        });
    }

    /// The expiry a SUBSCRIBE to us asks for (`MAX_EXPIRES` without an
    /// Expires), or `None` once it is answered: 400 for an unreadable
    /// Expires, 423 with `Min-Expires` for one below `MIN_EXPIRES` (0 is a
    /// fetch or an unsubscribe).
    fn served_expires(&mut self, now: Instant, tx: ServerTxId, req: &Message) -> Option<u32> {
        let expires = match req.expires() {
            None => MAX_EXPIRES,
            Some(Ok(e)) => e,
            Some(Err(_)) => {
                self.sub_respond(now, tx, req, 400, None, &[]);
                return None;
            }
        };
        if expires != 0 && expires < MIN_EXPIRES {
            self.sub_respond(
                now,
                tx,
                req,
                423,
                None,
                &[("Min-Expires", MIN_EXPIRES.to_string())],
            );
            return None;
        }
        Some(expires)
    }

    fn served_refresh(&mut self, now: Instant, tx: ServerTxId, id: SubId, req: &Message) {
        let Some(expires) = self.served_expires(now, tx, req) else {
            return;
        };
        let Some(s) = self.subscriptions.servers.get_mut(&id) else {
            return;
        };
        let cseq = req.cseq().seq;
        if s.dialog.remote_cseq.is_some_and(|r| cseq <= r) {
            let tag = s.dialog.local_tag.clone();
            self.sub_respond(now, tx, req, 500, Some(&tag), &[]);
            return;
        }
        s.dialog.remote_cseq = Some(cseq);
        if let Some(t) = contact_uri(req) {
            // a refresh after a network change brings the new Contact
            s.dialog.remote_target = t;
        }
        let granted = expires.min(MAX_EXPIRES);
        s.expires_at = now + Duration::from_secs(u64::from(granted));
        let tag = s.dialog.local_tag.clone();
        self.sub_respond(
            now,
            tx,
            req,
            200,
            Some(&tag),
            &[("Expires", granted.to_string())],
        );
        if granted == 0 {
            self.final_notify(now, id, SubscriptionReason::Timeout);
            return;
        }
        self.timers.set(
            TimerOwner::Subscription(id.0),
            TimerKind::SubscriptionExpiry,
            now + Duration::from_secs(u64::from(granted)),
        );
        // RFC 6665 §4.2.1.2: a refresh is followed by a NOTIFY
        self.send_notify(now, id, None);
    }

    fn incoming_notify(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        flow: FlowId,
        id: SubId,
        req: &Message,
    ) {
        let from_tag = tag_param(req, false);
        let Some(c) = self.subscriptions.clients.get_mut(&id) else {
            return;
        };
        let local_tag = c.dialog.local_tag.clone();
        match (&c.dialog.remote_tag, &from_tag) {
            (_, None) => {
                self.sub_respond(now, tx, req, 400, Some(&local_tag), &[]);
                return;
            }
            (Some(ours), Some(theirs)) if ours != theirs => {
                // another dialog of a forked SUBSCRIBE: the first is kept
                self.sub_respond(now, tx, req, 481, Some(&local_tag), &[]);
                return;
            }
            _ => {}
        }
        let cseq = req.cseq().seq;
        if c.dialog.remote_cseq.is_some_and(|r| cseq <= r) {
            self.sub_respond(now, tx, req, 500, Some(&local_tag), &[]);
            return;
        }
        let Some(Ok(state)) = req.subscription_state() else {
            self.sub_respond(now, tx, req, 400, Some(&local_tag), &[]);
            return;
        };
        let value = state.value().to_ascii_lowercase();
        let params = state.params();
        let expires = params
            .get("expires")
            .flatten()
            .and_then(|v| v.parse::<u32>().ok());
        let retry_after = params
            .get("retry-after")
            .flatten()
            .and_then(|v| v.parse::<u32>().ok());
        let reason = params
            .get("reason")
            .flatten()
            .map(SubscriptionReason::parse);
        // a NOTIFY before the 2xx makes the dialog (RFC 6665 §4.1.2.4)
        if c.dialog.remote_tag.is_none() {
            c.dialog.remote_tag = from_tag;
            if let Some(t) = contact_uri(req) {
                c.dialog.remote_target = t;
            }
            c.dialog.route_set = req
                .header_values(HeaderName::RecordRoute)
                .flat_map(siproam_sip::split_list)
                .map(str::to_owned)
                .collect();
        } else if let Some(t) = contact_uri(req) {
            c.dialog.remote_target = t;
        }
        c.dialog.remote_cseq = Some(cseq);
        if c.dialog.flow.is_none() {
            c.dialog.flow = Some(flow);
        }
        let body = if req.body().is_empty() {
            None
        } else {
            let ct = req
                .content_type()
                .and_then(Result::ok)
                .map(|c| c.value().to_owned())
                .unwrap_or_default();
            match NotifyBody::parse(&ct, req.body()) {
                Ok(b) => Some(b),
                Err(e) => {
                    let (event, peer, st) = (c.event.clone(), c.dialog.remote_uri.clone(), c.state);
                    // a type we do not take is 415 with what we take
                    let accept = content_type_for(&event).unwrap_or(PIDF).to_owned();
                    match e {
                        BodyError::UnsupportedType => self.sub_respond(
                            now,
                            tx,
                            req,
                            415,
                            Some(&local_tag),
                            &[("Accept", accept)],
                        ),
                        // what is wrong, said (RFC 3261 §20.43, 399: misc.)
                        _ => self.sub_respond(
                            now,
                            tx,
                            req,
                            400,
                            Some(&local_tag),
                            &[("Warning", format!("399 siproam \"{e}\""))],
                        ),
                    }
                    self.sub_event(SubscriptionEvent {
                        sub: id,
                        role: SubscriptionRole::Subscriber,
                        event,
                        peer,
                        state: st,
                        reason: Some(SubscriptionReason::MalformedBody(e)),
                        retry_after: None,
                        body: None,
                    });
                    return;
                }
            }
        };
        self.sub_respond(now, tx, req, 200, Some(&local_tag), &[]);
        // a NOTIFY came: the wait for the first one after the 2xx is over
        // (an unsubscribe's wait for the final one is not)
        if !self
            .subscriptions
            .clients
            .get(&id)
            .is_some_and(|c| c.unsubscribing)
        {
            self.timers.cancel(
                TimerOwner::Subscription(id.0),
                TimerKind::SubscriptionExpiry,
            );
        }
        let Some(c) = self.subscriptions.clients.get_mut(&id) else {
            return;
        };
        let (event, peer) = (c.event.clone(), c.dialog.remote_uri.clone());
        let new_state = match value.as_str() {
            "active" => SubscriptionState::Active,
            "pending" => SubscriptionState::Pending,
            _ => SubscriptionState::Terminated,
        };
        if new_state == SubscriptionState::Terminated {
            if c.unsubscribing {
                self.end_client(id, SubscriptionReason::Unsubscribed, None);
                return;
            }
            let reason = reason.unwrap_or(SubscriptionReason::Other("terminated".into()));
            let again = match reason {
                SubscriptionReason::Deactivated | SubscriptionReason::Timeout => Some(None),
                SubscriptionReason::Probation | SubscriptionReason::Giveup => Some(Some(
                    Duration::from_secs(u64::from(retry_after.unwrap_or(30).min(3600))),
                )),
                _ => None,
            };
            match again {
                Some(wait) => {
                    self.sub_event(SubscriptionEvent {
                        sub: id,
                        role: SubscriptionRole::Subscriber,
                        event,
                        peer,
                        state: SubscriptionState::Pending,
                        reason: Some(reason),
                        retry_after,
                        body,
                    });
                    self.restart_client(now, id, wait);
                }
                None => self.end_client_with_body(id, reason, retry_after, body),
            }
            return;
        }
        c.state = new_state;
        if let (Some(e), false) = (expires, c.unsubscribing) {
            // the notifier may shorten the subscription: refresh in time
            let at = now + refresh_after(e);
            let key = (
                TimerOwner::Subscription(id.0),
                TimerKind::SubscriptionRefresh,
            );
            if self.timers.deadline(key.0, key.1).is_none_or(|d| d > at) {
                self.timers.set(key.0, key.1, at);
            }
        }
        self.sub_event(SubscriptionEvent {
            sub: id,
            role: SubscriptionRole::Subscriber,
            event,
            peer,
            state: new_state,
            reason,
            retry_after: None,
            body,
        });
    }

    fn end_client_with_body(
        &mut self,
        id: SubId,
        reason: SubscriptionReason,
        retry_after: Option<u32>,
        body: Option<NotifyBody>,
    ) {
        self.end_client(id, reason, retry_after);
        if let (Some(body), Some(Event::Subscription(ev))) = (body, self.events.back_mut()) {
            if ev.sub == id {
                ev.body = Some(body);
            }
        }
    }
}

/// The reason phrase of an answer to a SUBSCRIBE or NOTIFY (RFC 3261
/// §21, RFC 6665 §8.3).
fn sub_reason(code: u16) -> &'static str {
    match code {
        423 => "Interval Too Brief",
        489 => "Bad Event",
        _ => crate::dialog::reason(code),
    }
}

/// The URI of a message's first Contact.
fn contact_uri(m: &Message) -> Option<String> {
    m.contacts()
        .next()
        .and_then(Result::ok)
        .and_then(|c| match c {
            siproam_sip::Contact::Addr(a) => Some(a.uri().to_string()),
            siproam_sip::Contact::Star => None,
        })
}
