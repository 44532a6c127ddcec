//! An RFC 5626 §5 edge proxy in front of a registrar: the first hop of
//! clients that keep flows (outbound), keeping its side of each flow.
//!
//! What it does with a request that arrives on a flow:
//! - a top `Route` naming this edge with a flow token ([`crate::flow_token`])
//!   that does not verify: **403**, nobody is contacted;
//! - a token naming another flow than the one the request came on (a
//!   request *for* a client, routed by its `Path` or by our
//!   `Record-Route`): out over exactly that flow — the same connection, or
//!   for UDP the same local and remote address — and **430 Flow Failed**
//!   when that flow is gone;
//! - anything else is a request *from* a client (with the token of its own
//!   flow, a pre-loaded `Route` naming us, or no `Route` at all): it goes
//!   to the registrar (the configured next hop) and nowhere else — a
//!   remaining `Route` must name the registrar (403 otherwise), so the edge
//!   is no open relay; a `REGISTER` gets a `Path` with the token of its
//!   flow (and `;ob` when its Contact has `reg-id` and `+sip.instance`), a
//!   dialog-forming request (INVITE, SUBSCRIBE, REFER) a `Record-Route`
//!   with it, so the far side's in-dialog requests come back here;
//! - a request naming the edge itself, with no `Route`, is the caller's to
//!   answer ([`Routed::ForUs`]); one that already went through us (our
//!   address in a `Via`) gets 482.
//!
//! Responses go back the way their request came (the core's Via
//! handling). A REGISTER 2xx with `Require: outbound` gets the edge's
//! `Flow-Timer` when one is configured.
//!
//! **Flow clean-up**, all decided here from the `now` given: a flow with a
//! Flow-Timer (the one in the REGISTER 2xx it carried) is closed when
//! nothing arrived on it — a message or a keep-alive, reported with
//! [`EdgeProxy::handle_keepalive`] — for Flow-Timer + `flow_grace`; other
//! flows after `flow_idle`. With `aggressive_gc`, a new registration of
//! the same AoR, instance and reg-id over another flow closes the old one.
//! A connection is closed through [`Endpoint::close_flow`] (the driver
//! performs it from `poll_close`); a UDP flow is only forgotten (its
//! tokens get 430 from then on).
//!
//! Work per message is bounded: a token costs one HMAC, the flow table
//! holds the connections the transport admitted and at most
//! `max_udp_flows` UDP flows, and expiry costs a B-tree step per flow.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use siproam_core::{
    CoreError, Endpoint, Event, FlowCloseReason, FlowId, ListenPoint, RequestFailure, RequestId,
    ServerTxId, Target, Transport,
};
use siproam_sip::{Contact, HeaderName, Message, MessageBuilder, Uri};

use crate::flow_token::{FlowToken, FlowTokenKey};
use crate::proxy::{is_us, remove_top_route, uri_target};
use crate::registrar::{aor_key, shrink};
use crate::relay;
use crate::Routed;

/// The edge proxy's settings.
#[derive(Clone)]
pub struct EdgeConfig {
    /// The registrar (or home proxy): where requests from clients go.
    pub registrar: Target,
    /// The key that signs flow tokens (32 bytes from a secure generator,
    /// or a key file so tokens outlive a restart).
    pub key: [u8; 32],
    /// `Flow-Timer` to put in the REGISTER 2xx it relays with outbound in
    /// force (replacing the registrar's).
    pub flow_timer: Option<u32>,
    /// A flow with a Flow-Timer is closed after Flow-Timer + this long
    /// with nothing received (30 s).
    pub flow_grace: Duration,
    /// A flow without a Flow-Timer is closed after this long with nothing
    /// received (2 hours).
    pub flow_idle: Duration,
    /// Close a flow as soon as the same AoR, instance and reg-id
    /// registered over a newer one (repro's `EnableAgressiveGc`).
    pub aggressive_gc: bool,
    /// Most UDP flows kept (a UDP flow is an address pair: it is kept once
    /// it registered or made a dialog through us). Beyond, a new one's
    /// request gets 503.
    pub max_udp_flows: usize,
    /// A connection that carried requests but never a registration (a
    /// REGISTER 2xx) nor a dialog-forming request is closed after this
    /// long with no request on it, keep-alives or not (60 s, beyond the
    /// 32 s a transaction may take): nobody can reach a client over it, and
    /// it must not hold one of the transport's connection slots for
    /// `flow_idle` (the shorter of the two applies).
    pub unregistered_idle: Duration,
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("registrar", &self.registrar)
            .field("key", &"<redacted>")
            .field("flow_timer", &self.flow_timer)
            .field("flow_grace", &self.flow_grace)
            .field("flow_idle", &self.flow_idle)
            .field("aggressive_gc", &self.aggressive_gc)
            .field("max_udp_flows", &self.max_udp_flows)
            .field("unregistered_idle", &self.unregistered_idle)
            .finish()
    }
}

impl EdgeConfig {
    /// Defaults in front of `registrar`, with `key`.
    pub fn new(registrar: Target, key: [u8; 32]) -> EdgeConfig {
        EdgeConfig {
            registrar,
            key,
            flow_timer: None,
            flow_grace: Duration::from_secs(30),
            flow_idle: Duration::from_secs(2 * 3600),
            aggressive_gc: false,
            max_udp_flows: 100_000,
            unregistered_idle: Duration::from_secs(60),
        }
    }
}

/// Most of the edge's own entries on top of a request's Route set (a
/// double Record-Route and a pre-loaded route need three); more is 403.
pub const MAX_OWN_ROUTES: usize = 8;

/// Most registrations (AoR, instance, reg-id) remembered per flow.
pub const MAX_REGS_PER_FLOW: usize = 16;

/// A flow as the edge names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct FlowKey {
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
}

/// An AoR's registration over one flow (RFC 5626 §6): AoR, instance,
/// reg-id.
type RegKey = (String, String, u32);

#[derive(Debug)]
struct FlowEntry {
    /// The core's flow (connections; UDP flows come and go in the core).
    id: FlowId,
    last_seen: Instant,
    flow_timer: Option<u32>,
    /// The deadline this flow is queued at in `deadlines`.
    queued: Instant,
    /// The registrations it carries (newest last, at most
    /// [`MAX_REGS_PER_FLOW`]), for aggressive clean-up.
    regs: Vec<RegKey>,
    /// It registered or made a dialog through us (else a connection is
    /// closed after `unregistered_idle`).
    kept: bool,
}

#[derive(Debug, Clone)]
enum Leg {
    /// From a client towards the registrar.
    Upstream { register: Option<RegisterSeen> },
    /// Towards a client over the flow a token named.
    Downstream { to: FlowKey },
}

#[derive(Debug, Clone)]
struct RegisterSeen {
    from: FlowKey,
    id: FlowId,
    reg: Option<RegKey>,
}

#[derive(Debug)]
struct Pending {
    server: ServerTxId,
    since: Instant,
    invite_branch: Option<String>,
    leg: Leg,
}

impl relay::Pending for Pending {
    fn since(&self) -> Instant {
        self.since
    }

    fn invite_branch(&self) -> Option<&str> {
        self.invite_branch.as_deref()
    }
}

/// What the edge holds, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeSizes {
    /// Flows it keeps (connections and UDP flows).
    pub flows: usize,
    /// Of which UDP.
    pub udp_flows: usize,
    /// Forwarded requests waiting for their answer.
    pub pending: usize,
    /// Registrations known by flow (for aggressive clean-up).
    pub registrations: usize,
    /// Flow tokens checked (HMACs computed) so far.
    pub token_checks: u64,
}

/// The edge proxy (sans-IO: the driver feeds it the events of the core
/// endpoint it runs in, keep-alives and the time).
#[derive(Debug)]
pub struct EdgeProxy {
    config: EdgeConfig,
    tokens: FlowTokenKey,
    pending: HashMap<RequestId, Pending>,
    invites: HashMap<String, RequestId>,
    flows: HashMap<FlowKey, FlowEntry>,
    udp_flows: usize,
    /// Connections' core flows, for keep-alives and closes.
    by_core: HashMap<FlowId, FlowKey>,
    /// When each flow is due to be looked at (lazily moved: activity only
    /// updates `last_seen`).
    deadlines: BTreeSet<(Instant, FlowKey)>,
    /// Which flow each registration is on (aggressive clean-up).
    registrations: HashMap<RegKey, FlowKey>,
    last_sweep: Option<Instant>,
    token_checks: u64,
}

fn flow_key(ep: &Endpoint, flow: FlowId) -> Option<FlowKey> {
    let f = ep.flow(flow)?;
    Some(FlowKey {
        transport: f.transport,
        local: f
            .local
            .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
        remote: f.remote,
    })
}

fn is_dialog_forming(method: &str) -> bool {
    matches!(method, "INVITE" | "SUBSCRIBE" | "REFER")
}

/// The listen point to name in a URI for a leg of `transport` and family.
fn point_for(points: &[ListenPoint], transport: Transport, v4: bool) -> Option<ListenPoint> {
    let usable = |p: &&ListenPoint| p.transport == transport && !p.addr.ip().is_unspecified();
    points
        .iter()
        .filter(usable)
        .find(|p| p.addr.is_ipv4() == v4)
        .or_else(|| points.iter().find(usable))
        .or_else(|| points.iter().find(|p| p.transport == transport))
        .or(points.first())
        .copied()
}

/// A URI naming this edge at `p` with a flow token in its user part.
fn token_uri(p: &ListenPoint, token: &str, ob: bool) -> String {
    let transport = if p.transport == Transport::Udp {
        String::new()
    } else {
        format!(";transport={}", p.transport.param())
    };
    let host = match p.addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let ob = if ob { ";ob" } else { "" };
    format!("<sip:{token}@{host}{transport};lr{ob}>")
}

impl EdgeProxy {
    /// An edge proxy with no flows.
    pub fn new(config: EdgeConfig) -> EdgeProxy {
        EdgeProxy {
            tokens: FlowTokenKey::new(&config.key),
            config,
            pending: HashMap::new(),
            invites: HashMap::new(),
            flows: HashMap::new(),
            udp_flows: 0,
            by_core: HashMap::new(),
            deadlines: BTreeSet::new(),
            registrations: HashMap::new(),
            last_sweep: None,
            token_checks: 0,
        }
    }

    /// Sets up the core it runs in, before the first event: the
    /// registrar's address is exempt from the per-source rate limit (it
    /// is one source for the requests towards every client behind us).
    pub fn configure(&self, ep: &Endpoint) {
        if !ep.admission().exempt(self.config.registrar.remote.ip()) {
            tracing::warn!("edge: the registrar could not be exempted from the rate limit");
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// What it holds.
    pub fn sizes(&self) -> EdgeSizes {
        EdgeSizes {
            flows: self.flows.len(),
            udp_flows: self.udp_flows,
            pending: self.pending.len(),
            registrations: self.registrations.len(),
            token_checks: self.token_checks,
        }
    }

    /// The flow token of a core flow (what this edge would put in a Path
    /// for a REGISTER arriving on it).
    pub fn token_for(&self, ep: &Endpoint, flow: FlowId) -> Option<String> {
        let key = flow_key(ep, flow)?;
        self.tokens.sign(&Self::token_of(key, flow))
    }

    fn token_of(key: FlowKey, id: FlowId) -> FlowToken {
        FlowToken {
            transport: key.transport,
            local: key.local,
            remote: key.remote,
            flow: if key.transport.is_reliable() {
                id
            } else {
                FlowId(0)
            },
        }
    }

    fn timeout_of(&self, entry: &FlowEntry) -> Duration {
        if !entry.kept {
            return self.config.unregistered_idle.min(self.config.flow_idle);
        }
        match entry.flow_timer {
            Some(ft) => Duration::from_secs(u64::from(ft)) + self.config.flow_grace,
            None => self.config.flow_idle,
        }
    }

    /// Something arrived on a flow: its idle clock starts again. A UDP
    /// flow is only kept when `keep` (it registered or made a dialog);
    /// false when it should have been kept and the table is full.
    fn touch(&mut self, now: Instant, key: FlowKey, id: FlowId, keep: bool) -> bool {
        if let Some(e) = self.flows.get_mut(&key) {
            e.last_seen = now;
            e.kept |= keep;
            if key.transport.is_reliable() && e.id != id {
                // the same addresses, another connection
                self.by_core.remove(&e.id);
                e.id = id;
                self.by_core.insert(id, key);
            }
            return true;
        }
        let udp = !key.transport.is_reliable();
        if udp && !keep {
            return true;
        }
        if udp && self.udp_flows >= self.config.max_udp_flows {
            return false;
        }
        let entry = FlowEntry {
            id,
            last_seen: now,
            flow_timer: None,
            queued: now,
            regs: Vec::new(),
            kept: keep,
        };
        let due = now + self.timeout_of(&entry);
        self.flows.insert(
            key,
            FlowEntry {
                queued: due,
                ..entry
            },
        );
        self.deadlines.insert((due, key));
        if udp {
            self.udp_flows += 1;
        } else {
            self.by_core.insert(id, key);
        }
        true
    }

    /// A keep-alive arrived: a CRLFCRLF ping on a connection (`flow`), or
    /// a STUN Binding request on a UDP flow (`local`, `remote`).
    pub fn handle_keepalive(
        &mut self,
        now: Instant,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        flow: Option<FlowId>,
    ) {
        let key = match flow.and_then(|f| self.by_core.get(&f)) {
            Some(k) => *k,
            None => FlowKey {
                transport,
                local,
                remote,
            },
        };
        // a keep-alive keeps a flow, not a connection that never became one
        if let Some(e) = self.flows.get_mut(&key).filter(|e| e.kept) {
            e.last_seen = now;
        }
    }

    /// A flow of the core ended (closed by the peer, reset, or by us).
    pub fn handle_flow_closed(&mut self, flow: FlowId) {
        if let Some(key) = self.by_core.remove(&flow) {
            self.forget_flow(key);
        }
    }

    fn forget_flow(&mut self, key: FlowKey) -> Option<FlowEntry> {
        let entry = self.flows.remove(&key)?;
        if key.transport.is_reliable() {
            if self.by_core.get(&entry.id) == Some(&key) {
                self.by_core.remove(&entry.id);
            }
        } else {
            self.udp_flows = self.udp_flows.saturating_sub(1);
        }
        for reg in &entry.regs {
            if self.registrations.get(reg) == Some(&key) {
                self.registrations.remove(reg);
            }
        }
        Some(entry)
    }

    /// Closes a flow: a connection through the core (the driver closes
    /// it), a UDP flow by forgetting it.
    fn close(&mut self, ep: &mut Endpoint, now: Instant, key: FlowKey, reason: FlowCloseReason) {
        if let Some(entry) = self.forget_flow(key) {
            if key.transport.is_reliable()
                && ep
                    .flow(entry.id)
                    .is_some_and(|f| f.remote == key.remote && f.transport == key.transport)
            {
                ep.close_flow(now, entry.id, reason);
            }
        }
    }

    /// One event of the core endpoint the edge runs in (a core without a
    /// dialog layer): requests are routed, answers to what it forwarded
    /// go back, a closed flow is forgotten. Returns the event when the
    /// application should see it too (a closed flow, and what is not the
    /// edge's).
    pub fn handle_event(&mut self, ep: &mut Endpoint, now: Instant, event: Event) -> Option<Event> {
        match event {
            Event::IncomingRequest { tx, flow, request } => {
                match self.handle_request(ep, now, tx, flow, request.clone()) {
                    Ok(Routed::ForUs) => {
                        if let Some(tx) = tx {
                            let _ = ep.respond_default(now, tx, &request);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("edge: request not routed: {e}");
                        if let Some(tx) = tx {
                            let _ = ep.respond_status(now, tx, 500, "Server Internal Error");
                        }
                    }
                }
                None
            }
            Event::Response { request, response } => {
                if self.handle_response(ep, now, request, response.clone()) {
                    None
                } else {
                    Some(Event::Response { request, response })
                }
            }
            Event::RequestFailed { request, reason } => {
                if self.handle_failure(ep, now, request, reason) {
                    None
                } else {
                    Some(Event::RequestFailed { request, reason })
                }
            }
            Event::FlowClosed { flow, reason } => {
                self.handle_flow_closed(flow);
                Some(Event::FlowClosed { flow, reason })
            }
            other => Some(other),
        }
    }

    /// When [`EdgeProxy::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Closes the flows idle past their time at `now`.
    pub fn handle_timeout(&mut self, ep: &mut Endpoint, now: Instant) {
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let due = match self.flows.get(&key) {
                // a stale entry (the flow was re-queued or is gone)
                Some(e) if e.queued != at => continue,
                None => continue,
                Some(e) => e.last_seen + self.timeout_of(e),
            };
            if due > now {
                if let Some(e) = self.flows.get_mut(&key) {
                    e.queued = due;
                }
                self.deadlines.insert((due, key));
                continue;
            }
            tracing::debug!(transport = %key.transport, "edge: idle flow closed");
            self.close(ep, now, key, FlowCloseReason::Idle);
        }
    }

    /// Is the flow a token names still there?
    fn alive(&self, ep: &Endpoint, token: &FlowToken) -> bool {
        let key = FlowKey {
            transport: token.transport,
            local: token.local,
            remote: token.remote,
        };
        if token.transport.is_reliable() {
            ep.flow(token.flow).is_some_and(|f| {
                f.transport == token.transport
                    && f.remote == token.remote
                    && f.local.is_none_or(|l| l == token.local)
            })
        } else {
            self.flows.contains_key(&key)
        }
    }

    fn refuse(
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        req: &Message,
        code: u16,
        reason: &str,
    ) -> Result<Routed, CoreError> {
        match tx {
            // no state kept for a refusal
            Some(tx) => {
                let tag = ep.random_token(10);
                let resp = MessageBuilder::response_to(req, code, reason, Some(&tag)).build()?;
                ep.respond_stateless(now, tx, resp)?;
                Ok(Routed::Answered(code))
            }
            None => Ok(Routed::Answered(0)),
        }
    }

    /// Routes one request the core reported (any method: the edge's core
    /// runs without a dialog layer).
    pub fn handle_request(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        flow: FlowId,
        mut req: Message,
    ) -> Result<Routed, CoreError> {
        self.sweep(now);
        let Some(arrived) = flow_key(ep, flow) else {
            return Self::refuse(ep, now, tx, &req, 500, "Server Internal Error");
        };
        // the registrar's connections are kept like flows (they carry the
        // requests towards every client); a client's only once it
        // registered or made a dialog
        let from_registrar = arrived.transport.is_reliable()
            && arrived.remote.ip() == self.config.registrar.remote.ip();
        self.touch(now, arrived, flow, from_registrar);
        let points = ep.listen_points().to_vec();
        let method = req
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        if method == "CANCEL" {
            let Some(tx) = tx else {
                return Ok(Routed::Answered(0));
            };
            let branch = req
                .top_via()
                .ok()
                .and_then(|v| v.branch())
                .unwrap_or_default()
                .to_owned();
            return match self.invites.get(&branch).copied() {
                Some(invite) => {
                    let tag = ep.random_token(10);
                    ep.respond(
                        now,
                        tx,
                        MessageBuilder::response_to(&req, 200, "OK", Some(&tag)).build()?,
                    )?;
                    let _ = ep.cancel(now, invite);
                    Ok(Routed::Answered(200))
                }
                None => Self::refuse(
                    ep,
                    now,
                    Some(tx),
                    &req,
                    481,
                    "Call/Transaction Does Not Exist",
                ),
            };
        }
        if req.max_forwards().and_then(Result::ok) == Some(0) {
            return Self::refuse(ep, now, tx, &req, 483, "Too Many Hops");
        }
        // a request that already went through us is a loop
        let looped = req.vias().filter_map(Result::ok).any(|v| {
            v.host_str()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| {
                    points.iter().any(|p| {
                        p.addr.ip() == ip
                            && v.port().unwrap_or(p.transport.default_port()) == p.addr.port()
                    })
                })
        });
        if looped {
            return Self::refuse(ep, now, tx, &req, 482, "Loop Detected");
        }
        // our Route entries on top: the first with a token says where the
        // request goes; those without one are a client's pre-loaded route.
        // Bounded: at most MAX_OWN_ROUTES of them, and a token text checked
        // once (a double Record-Route repeats it)
        let mut token = None;
        let mut verified: Vec<String> = Vec::new();
        let mut own = 0usize;
        loop {
            let user = match req.routes().next() {
                None => break,
                Some(Err(_)) => return Self::refuse(ep, now, tx, &req, 400, "Bad Request"),
                Some(Ok(r)) => {
                    if !is_us(r.uri(), &points) {
                        break;
                    }
                    r.uri().as_sip().and_then(|s| s.user()).map(str::to_owned)
                }
            };
            own += 1;
            if own > MAX_OWN_ROUTES {
                return Self::refuse(ep, now, tx, &req, 403, "Forbidden");
            }
            if let Some(u) = user.filter(|u| !verified.contains(u)) {
                self.token_checks += 1;
                match self.tokens.verify(&u) {
                    Err(e) => {
                        tracing::debug!("edge: {e}");
                        return Self::refuse(ep, now, tx, &req, 403, "Forbidden");
                    }
                    Ok(t) => {
                        token.get_or_insert(t);
                        verified.push(u);
                    }
                }
            }
            remove_top_route(&mut req)?;
        }
        let arrived_token = Self::token_of(arrived, flow);
        match token {
            Some(t) if t != arrived_token => self.route_to_client(ep, now, tx, &method, req, t),
            _ => {
                let routed = req.routes().next().is_some();
                if !routed
                    && method != "REGISTER"
                    && req.request_uri().is_some_and(|u| {
                        is_us(&u, &points) && u.as_sip().is_some_and(|s| s.user().is_none())
                    })
                {
                    return Ok(Routed::ForUs);
                }
                self.route_from_client(ep, now, tx, flow, arrived, &method, req)
            }
        }
    }

    /// A request for a client: out over exactly the flow its token names,
    /// or 430 when that flow is gone.
    fn route_to_client(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        method: &str,
        mut req: Message,
        token: FlowToken,
    ) -> Result<Routed, CoreError> {
        if !self.alive(ep, &token) {
            return Self::refuse(ep, now, tx, &req, 430, "Flow Failed");
        }
        let to = FlowKey {
            transport: token.transport,
            local: token.local,
            remote: token.remote,
        };
        let out_of_dialog = req.to().ok().is_some_and(|t| t.tag().is_none());
        if is_dialog_forming(method) && out_of_dialog {
            // stay on the dialog's path: the far side's later requests come
            // back here and go out over the same flow
            if let Some(signed) = self.tokens.sign(&token) {
                self.record_route(
                    ep,
                    &mut req,
                    &signed,
                    (token.transport, token.remote.is_ipv4()),
                    true,
                )?;
            }
        }
        let local =
            (!token.local.ip().is_unspecified() || token.local.port() != 0).then_some(token.local);
        let target = Target {
            transport: token.transport,
            remote: token.remote,
            local,
            server_name: None,
        };
        self.forward(ep, now, tx, method, req, target, Leg::Downstream { to })
    }

    /// A request from a client: to the registrar, with Path or
    /// Record-Route naming its flow.
    #[allow(clippy::too_many_arguments)]
    fn route_from_client(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        flow: FlowId,
        arrived: FlowKey,
        method: &str,
        mut req: Message,
    ) -> Result<Routed, CoreError> {
        let registrar = self.config.registrar;
        // a Route left must name the registrar: no relaying elsewhere
        if let Some(route) = req.routes().next().and_then(Result::ok) {
            let next = uri_target(route.uri(), Transport::Udp);
            if next.is_none_or(|t| t.remote != registrar.remote) {
                return Self::refuse(ep, now, tx, &req, 403, "Not Relaying");
            }
        }
        let token = Self::token_of(arrived, flow);
        let Some(signed) = self.tokens.sign(&token) else {
            return Self::refuse(ep, now, tx, &req, 500, "Server Internal Error");
        };
        let out_of_dialog = req.to().ok().is_some_and(|t| t.tag().is_none());
        let mut register = None;
        if method == "REGISTER" {
            let outbound = req.contacts().filter_map(Result::ok).find_map(|c| match c {
                Contact::Addr(na) => na
                    .sip_instance()
                    .zip(na.reg_id())
                    .map(|(i, r)| (i.to_owned(), r)),
                Contact::Star => None,
            });
            let aor = req.to().ok().and_then(|t| aor_key(t.uri()));
            let points = ep.listen_points().to_vec();
            if let Some(p) = point_for(&points, registrar.transport, registrar.remote.is_ipv4()) {
                req.prepend_header("Path", &token_uri(&p, &signed, outbound.is_some()))?;
            }
            register = Some(RegisterSeen {
                from: arrived,
                id: flow,
                reg: outbound
                    .zip(aor)
                    .map(|((instance, reg_id), aor)| (aor, instance, reg_id)),
            });
        } else if is_dialog_forming(method) && out_of_dialog {
            // the flow must outlive the dialog's later requests
            if !self.touch(now, arrived, flow, true) {
                return Self::refuse(ep, now, tx, &req, 503, "Service Unavailable");
            }
            self.record_route(
                ep,
                &mut req,
                &signed,
                (arrived.transport, arrived.remote.is_ipv4()),
                false,
            )?;
        }
        self.forward(
            ep,
            now,
            tx,
            method,
            req,
            registrar,
            Leg::Upstream { register },
        )
    }

    /// Record-Route with a flow token: one entry, or two when the client's
    /// leg and the registrar's differ in transport or family (RFC 5118
    /// §4); the one facing the request's next hop on top (towards the
    /// client when `to_client`).
    fn record_route(
        &self,
        ep: &Endpoint,
        req: &mut Message,
        token: &str,
        (client_transport, client_v4): (Transport, bool),
        to_client: bool,
    ) -> Result<(), CoreError> {
        let points = ep.listen_points();
        let registrar = self.config.registrar;
        let client_side = point_for(points, client_transport, client_v4);
        let registrar_side = point_for(points, registrar.transport, registrar.remote.is_ipv4());
        // prepended in order: the last one ends on top
        let (first, second) = if to_client {
            (registrar_side, client_side)
        } else {
            (client_side, registrar_side)
        };
        for p in [first, second.filter(|s| Some(*s) != first)]
            .into_iter()
            .flatten()
        {
            req.prepend_header("Record-Route", &token_uri(&p, token, false))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        method: &str,
        req: Message,
        target: Target,
        leg: Leg,
    ) -> Result<Routed, CoreError> {
        let upstream_branch = req
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .unwrap_or_default()
            .to_owned();
        let sent = ep.forward_request(now, req, target)?;
        if let (Some(id), Some(server)) = (sent, tx) {
            let invite_branch = (method == "INVITE").then_some(upstream_branch);
            if let Some(branch) = &invite_branch {
                self.invites.insert(branch.clone(), id);
            }
            self.pending.insert(
                id,
                Pending {
                    server,
                    since: now,
                    invite_branch,
                    leg,
                },
            );
        }
        Ok(Routed::Forwarded)
    }

    /// A response to a request the edge forwarded goes back upstream;
    /// false when the request was not the edge's.
    pub fn handle_response(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        request: RequestId,
        mut response: Message,
    ) -> bool {
        let Some(pending) = self.pending.get(&request) else {
            return false;
        };
        let server = pending.server;
        let leg = pending.leg.clone();
        let is_invite = pending.invite_branch.is_some();
        if let Leg::Downstream { to } = &leg {
            if let Some(e) = self.flows.get_mut(to) {
                e.last_seen = now;
            }
        }
        let code = response.status().unwrap_or(0);
        if code == 100 {
            return true;
        }
        if let Leg::Upstream {
            register: Some(reg),
        } = &leg
        {
            if (200..300).contains(&code) {
                self.registered(ep, now, reg, &mut response);
            }
        }
        if response.remove_top_via().is_ok() {
            if code >= 200 && !is_invite {
                // a non-INVITE's final answer keeps no transaction: 32 s of
                // Timer J per relayed REGISTER filled the core's cap under
                // load; a retransmission is relayed again and answered as
                // the same change (the registrar takes an equal CSeq so)
                let _ = ep.respond_stateless(now, server, response);
            } else {
                let _ = ep.respond(now, server, response);
            }
        }
        if code >= 300 || (code >= 200 && !is_invite) {
            self.forget(request);
        }
        true
    }

    /// A REGISTER from a client was accepted: the Flow-Timer goes in, the
    /// flow is kept with it, and (aggressive clean-up) an older flow of
    /// the same registration is closed.
    fn registered(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        reg: &RegisterSeen,
        response: &mut Message,
    ) {
        let outbound = response.has_token(HeaderName::Require, "outbound");
        if outbound {
            if let Some(ft) = self.config.flow_timer {
                if let Err(e) = response.set_header("Flow-Timer", &ft.to_string()) {
                    tracing::debug!("edge: Flow-Timer not set: {e}");
                }
            }
        }
        let flow_timer = response.flow_timer().and_then(Result::ok);
        if !self.touch(now, reg.from, reg.id, true) {
            return;
        }
        let timeout = {
            let Some(e) = self.flows.get_mut(&reg.from) else {
                return;
            };
            e.flow_timer = flow_timer;
            match e.flow_timer {
                Some(ft) => Duration::from_secs(u64::from(ft)) + self.config.flow_grace,
                None => self.config.flow_idle,
            }
        };
        // the registrations a flow carries are bounded: the oldest goes
        // (it only loses its aggressive clean-up)
        let mut dropped = None;
        if let (true, Some(key), Some(e)) = (outbound, &reg.reg, self.flows.get_mut(&reg.from)) {
            if !e.regs.contains(key) {
                e.regs.push(key.clone());
                if e.regs.len() > MAX_REGS_PER_FLOW {
                    dropped = Some(e.regs.remove(0));
                }
            }
        }
        if let Some(old) = dropped {
            if self.registrations.get(&old) == Some(&reg.from) {
                self.registrations.remove(&old);
            }
        }
        // a shorter timeout than the one queued: queue the earlier one
        if let Some(e) = self.flows.get_mut(&reg.from) {
            let due = e.last_seen + timeout;
            if due < e.queued {
                e.queued = due;
                self.deadlines.insert((due, reg.from));
            }
        }
        if let (true, Some(key)) = (outbound, reg.reg.clone()) {
            let old = self.registrations.insert(key.clone(), reg.from);
            if let Some(old) = old.filter(|o| *o != reg.from) {
                if self.config.aggressive_gc {
                    tracing::debug!("edge: older flow of a registration closed");
                    self.close(ep, now, old, FlowCloseReason::Replaced);
                } else if let Some(e) = self.flows.get_mut(&old) {
                    e.regs.retain(|r| *r != key);
                }
            }
        }
    }

    /// A forwarded request got no response: 430 when the client's flow
    /// failed under it, 408 on a timeout, 503 when the registrar could not
    /// be reached.
    pub fn handle_failure(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        request: RequestId,
        reason: RequestFailure,
    ) -> bool {
        let Some(pending) = self.pending.get(&request) else {
            return false;
        };
        let server = pending.server;
        let downstream = matches!(pending.leg, Leg::Downstream { .. });
        self.forget(request);
        let (code, phrase) = match reason {
            RequestFailure::Timeout => (408, "Request Timeout"),
            RequestFailure::Transport(_) if downstream => (430, "Flow Failed"),
            RequestFailure::Transport(_) => (503, "Service Unavailable"),
        };
        let _ = ep.respond_status(now, server, code, phrase);
        true
    }

    fn forget(&mut self, request: RequestId) {
        relay::forget(&mut self.pending, &mut self.invites, request);
    }

    /// Drops pending state older than the longest transaction and shrinks
    /// the tables; at most every 10 s.
    fn sweep(&mut self, now: Instant) {
        if !relay::sweep(
            &mut self.last_sweep,
            &mut self.pending,
            &mut self.invites,
            now,
        ) {
            return;
        }
        shrink(&mut self.flows);
        shrink(&mut self.by_core);
        shrink(&mut self.registrations);
    }
}

/// Whether a URI is one of the edge's with a flow token (for tests and
/// tools reading Path and Record-Route).
pub fn has_flow_token(uri: &Uri<'_>) -> bool {
    uri.as_sip()
        .and_then(|s| s.user())
        .is_some_and(|u| u.len() > 32 && u.bytes().all(|b| b.is_ascii_hexdigit()))
}
