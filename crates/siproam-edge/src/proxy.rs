//! A stateful, record-routing proxy for the AoRs the registrar holds
//! (RFC 3261 §16), so two agents can call each other through it.
//!
//! No forking yet: a request for an AoR goes to its best binding. Loose
//! routing (`;lr`) only.
//!
//! It forwards only what it is responsible for: requests for the AoRs the
//! registrar holds (and their registered Contacts), and requests of
//! dialogs it record-routed, recognised by a token in its Record-Route (an
//! HMAC of the Call-ID under the configured key). Anything else gets 403
//! (404 for an unknown user of our domain) without contacting the target.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use siproam_core::{
    CoreError, Endpoint, FlowId, ListenPoint, RequestFailure, RequestId, ServerTxId, Target,
    Transport,
};
use siproam_sip::{HeaderName, Message, MessageBuilder, NameAddr, Uri};

use crate::registrar::aor_key;
use crate::{Binding, Registrar};

/// The Record-Route URI parameter that carries the dialog's token.
const TOKEN_PARAM: &str = "rrt";

/// What the proxy did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Forwarded downstream.
    Forwarded,
    /// Answered here (an error, or a CANCEL).
    Answered(u16),
    /// Addressed to this element itself (the caller answers it).
    ForUs,
}

#[derive(Debug, Clone)]
struct Pending {
    server: ServerTxId,
    since: Instant,
    /// The upstream branch of a forwarded INVITE (its key in `invites`).
    invite_branch: Option<String>,
    /// Sent to a flow of an instance (an outbound binding): what trying
    /// its other flows needs, should this one fail.
    retry: Option<Box<FlowRetry>>,
}

impl crate::relay::Pending for Pending {
    fn since(&self) -> Instant {
        self.since
    }

    fn invite_branch(&self) -> Option<&str> {
        self.invite_branch.as_deref()
    }
}

/// A request sent to one flow of an instance, kept so that when the flow
/// fails — 430 or 408 from the edge proxy, no answer, the next hop
/// unreachable — it goes to the same instance's next flow (RFC 5626
/// §5.3), before the UA has registered again. Any other final answer is
/// the instance's own and goes upstream.
#[derive(Debug, Clone)]
struct FlowRetry {
    /// The request as it was before it was aimed at a binding.
    request: Message,
    /// The flow it came in on (the caller's leg of the Record-Route).
    inbound: FlowId,
    /// The AoR's location key.
    aor: String,
    /// `+sip.instance`.
    instance: String,
    /// The reg-ids tried, the current one last (at most the AoR's
    /// bindings, bounded by `max_bindings_per_aor`).
    tried: Vec<u32>,
}

/// The proxy's transaction state: which server transaction each forwarded
/// request answers to.
#[derive(Debug, Default)]
pub struct Proxy {
    pending: HashMap<RequestId, Pending>,
    /// Forwarded INVITEs by the upstream branch, for CANCEL.
    invites: HashMap<String, RequestId>,
    /// When state was last swept (at most every 10 s: a sweep is linear).
    last_sweep: Option<Instant>,
}

/// The address a SIP URI names (IP literals only; the proxy does no DNS).
/// Without `;transport=` a numeric `sip:` URI means `default` — UDP, as
/// RFC 3263 §4.1 says, never the transport the request came in on.
pub(crate) fn uri_target(uri: &Uri<'_>, default: Transport) -> Option<Target> {
    let sip = uri.as_sip()?;
    let host = sip.host_str().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = sip.maddr().unwrap_or(host).parse().ok()?;
    let transport = sip
        .transport()
        .and_then(Transport::from_token)
        .unwrap_or(if sip.is_secure() {
            Transport::Tls
        } else {
            default
        });
    let port = sip.port().unwrap_or(transport.default_port());
    Some(Target {
        transport,
        remote: SocketAddr::new(ip, port),
        local: None,
        server_name: None,
    })
}

pub(crate) fn is_us(uri: &Uri<'_>, points: &[ListenPoint]) -> bool {
    let Some(sip) = uri.as_sip() else {
        return false;
    };
    let host = sip.host_str().trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = host.parse::<IpAddr>() else {
        return false;
    };
    points.iter().any(|p| {
        (p.addr.ip() == ip || p.addr.ip().is_unspecified())
            && sip.port().unwrap_or(p.transport.default_port()) == p.addr.port()
    })
}

impl Proxy {
    /// A proxy with nothing pending.
    pub fn new() -> Proxy {
        Proxy::default()
    }

    fn reply(
        ep: &mut Endpoint,
        now: Instant,
        tx: ServerTxId,
        req: &Message,
        code: u16,
        reason: &str,
    ) -> Result<Routed, CoreError> {
        let tag = ep.random_token(10);
        ep.respond(
            now,
            tx,
            MessageBuilder::response_to(req, code, reason, Some(&tag)).build()?,
        )?;
        Ok(Routed::Answered(code))
    }

    /// Answers `code` when there is a transaction (an ACK is dropped).
    fn refuse(
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        req: &Message,
        code: u16,
        reason: &str,
    ) -> Result<Routed, CoreError> {
        match tx {
            // a refusal costs nothing to give again: no state is kept for
            // it (a flood of relay attempts holds no transactions)
            Some(tx) => {
                let tag = ep.random_token(10);
                let resp = MessageBuilder::response_to(req, code, reason, Some(&tag)).build()?;
                ep.respond_stateless(now, tx, resp)?;
                Ok(Routed::Answered(code))
            }
            None => Ok(Routed::Answered(0)),
        }
    }

    /// A request we are not responsible for: 403, unless the policy lets
    /// authenticated users out (`relay_authenticated`), then 407 until
    /// the `Proxy-Authorization` verifies. `None`: go on and forward.
    fn foreign(
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        req: &Message,
        registrar: &mut Registrar,
    ) -> Result<Option<Routed>, CoreError> {
        let config = registrar.config();
        if !config.relay_authenticated || config.users.is_empty() {
            return Self::refuse(ep, now, tx, req, 403, "Forbidden").map(Some);
        }
        let stale = match registrar.authenticate_proxy(now, req) {
            Ok(_user) => return Ok(None),
            Err(stale) => stale,
        };
        // an ACK cannot be challenged: dropped
        let Some(tx) = tx else {
            return Ok(Some(Routed::Answered(0)));
        };
        let value = registrar.challenge(ep, now, stale)?;
        let tag = ep.random_token(10);
        let resp =
            MessageBuilder::response_to(req, 407, "Proxy Authentication Required", Some(&tag))
                .header("Proxy-Authenticate", &value)
                .build()?;
        ep.respond(now, tx, resp)?;
        Ok(Some(Routed::Answered(407)))
    }

    /// Routes a request that is not a REGISTER.
    pub fn handle_request(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        flow: FlowId,
        mut req: Message,
        registrar: &mut Registrar,
    ) -> Result<Routed, CoreError> {
        self.sweep(now);
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
                    // a cancelled INVITE tries no other flow
                    if let Some(p) = self.pending.get_mut(&invite) {
                        p.retry = None;
                    }
                    Self::reply(ep, now, tx, &req, 200, "OK")?;
                    // the INVITE's own 487 comes back from downstream
                    let _ = ep.cancel(now, invite);
                    Ok(Routed::Answered(200))
                }
                None => Self::reply(ep, now, tx, &req, 481, "Call/Transaction Does Not Exist"),
            };
        }
        if req.max_forwards().and_then(Result::ok) == Some(0) {
            return match tx {
                Some(tx) => Self::reply(ep, now, tx, &req, 483, "Too Many Hops"),
                None => Ok(Routed::Answered(0)),
            };
        }
        // Only what we are responsible for is forwarded (else we would be
        // an open relay and, by how fast a closed port fails, a port
        // scanner): requests of a dialog we record-routed (our Route with
        // a token that verifies for the Call-ID), and requests for our
        // AoRs or their registered Contacts. Everything else is refused
        // before any target is contacted, so the answer says nothing
        // about reachability.
        let call_id = req.call_id().to_owned();
        // a Route naming us with no token on a request outside any dialog
        // is a client's pre-loaded one (we are its outbound proxy, RFC
        // 5626 §5.1): taken off (RFC 3261 §16.4); what is left is judged
        // like any request
        let out_of_dialog = req.to().ok().is_some_and(|t| t.tag().is_none());
        while out_of_dialog
            && req.routes().next().and_then(Result::ok).is_some_and(|r| {
                is_us(r.uri(), &points)
                    && r.uri()
                        .as_sip()
                        .is_some_and(|s| s.params().value(TOKEN_PARAM).is_none())
            })
        {
            remove_top_route(&mut req)?;
        }
        // the top Route: none, ours (with whether its token verifies), or
        // another's; a malformed one is a bad request
        let top = match req.routes().next() {
            None => None,
            Some(Err(_)) => return Self::refuse(ep, now, tx, &req, 400, "Bad Request"),
            Some(Ok(route)) => Some(is_us(route.uri(), &points).then(|| {
                route
                    .uri()
                    .as_sip()
                    .and_then(|s| s.params().value(TOKEN_PARAM))
                    .is_some_and(|t| registrar.route_token_valid(&call_id, t))
            })),
        };
        let in_dialog = match top {
            None => false,
            Some(Some(true)) => {
                // a double Record-Route (two legs of different families
                // or transports, RFC 5118 §4) leaves a second entry naming
                // us: remove both
                while req
                    .routes()
                    .next()
                    .and_then(Result::ok)
                    .is_some_and(|r| is_us(r.uri(), &points))
                {
                    remove_top_route(&mut req)?;
                }
                true
            }
            // our Route with a bad or missing token
            Some(Some(false)) => return Self::refuse(ep, now, tx, &req, 403, "Forbidden"),
            // someone else's route with none of ours before it: only for
            // an authenticated user, if the policy allows
            Some(None) => {
                if let Some(answered) = Self::foreign(ep, now, tx, &req, registrar)? {
                    return Ok(answered);
                }
                true
            }
        };
        let next_route = req
            .routes()
            .next()
            .and_then(Result::ok)
            .and_then(|r| uri_target(r.uri(), Transport::Udp));
        let target = match next_route {
            Some(t) => t,
            None => {
                let ruri = req.request_uri_str().unwrap_or_default().to_owned();
                let parsed = Uri::parse(&ruri).map_err(siproam_sip::EditError::from)?;
                let key = aor_key(&parsed);
                let bindings = key
                    .as_deref()
                    .map(|k| registrar.lookup(k, now))
                    .unwrap_or_default();
                let ip_host = parsed.as_sip().is_some_and(|s| {
                    s.host_str()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .is_ok()
                });
                if let Some(b) = bindings.first() {
                    let retry = match (&b.instance, b.reg_id, key, tx) {
                        (Some(instance), Some(reg_id), Some(aor), Some(_)) => {
                            Some(Box::new(FlowRetry {
                                request: req.clone(),
                                inbound: flow,
                                aor,
                                instance: instance.clone(),
                                tried: vec![reg_id],
                            }))
                        }
                        _ => None,
                    };
                    return match aim_at_binding(ep, &mut req, b)? {
                        Some(target) => {
                            self.forward(ep, now, tx, flow, req, target, registrar, retry)
                        }
                        None => Self::refuse(ep, now, tx, &req, 480, "Temporarily Unavailable"),
                    };
                } else if is_us(&parsed, &points) {
                    return Ok(Routed::ForUs);
                } else if in_dialog || (ip_host && registrar.is_bound_contact(&parsed)) {
                    // the dialog's remote target (it may have moved), or a
                    // Contact registered here: along its binding's Path or
                    // over its flow when it is one of the To AoR's (only
                    // they reach a Contact behind an edge, RFC 5626 §5.3)
                    if let Some(b) = binding_of_contact(registrar, &req, &parsed, now) {
                        return match aim_at_binding(ep, &mut req, &b)? {
                            Some(target) => {
                                self.forward(ep, now, tx, flow, req, target, registrar, None)
                            }
                            None => Self::refuse(ep, now, tx, &req, 480, "Temporarily Unavailable"),
                        };
                    }
                    match uri_target(&parsed, Transport::Udp) {
                        Some(t) => t,
                        None => return Self::refuse(ep, now, tx, &req, 404, "Not Found"),
                    }
                } else if parsed.as_sip().is_some_and(|s| s.user().is_none()) {
                    return Ok(Routed::ForUs);
                } else if key.is_some()
                    && !ip_host
                    && parsed
                        .as_sip()
                        .is_some_and(|s| registrar.serves_domain(s.host_str()))
                {
                    return Self::refuse(ep, now, tx, &req, 404, "Not Found");
                } else {
                    // an address or a domain that is not ours
                    if let Some(answered) = Self::foreign(ep, now, tx, &req, registrar)? {
                        return Ok(answered);
                    }
                    match uri_target(&parsed, Transport::Udp) {
                        Some(t) => t,
                        // no DNS here
                        None => return Self::refuse(ep, now, tx, &req, 404, "Not Found"),
                    }
                }
            }
        };
        self.forward(ep, now, tx, flow, req, target, registrar, None)
    }

    /// Record-routes (dialog-creating requests) and forwards `req` to
    /// `target`, remembering which server transaction it answers.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: Option<ServerTxId>,
        flow: FlowId,
        mut req: Message,
        target: Target,
        registrar: &Registrar,
        retry: Option<Box<FlowRetry>>,
    ) -> Result<Routed, CoreError> {
        let points = ep.listen_points().to_vec();
        let inbound = ep.flow(flow).map(|f| f.transport).unwrap_or(Transport::Udp);
        let method = req
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let call_id = req.call_id().to_owned();
        // stay on the dialog's path: record-route dialog-creating requests,
        // with our address on the caller's leg and, when the callee's leg
        // is of another family or transport, a second entry on top with
        // our address on that leg (RFC 5118 §4 double Record-Route)
        if method == "INVITE" || method == "SUBSCRIBE" || method == "REFER" {
            let inbound_v4 = ep.flow(flow).is_none_or(|f| f.remote.is_ipv4());
            let point = |transport: Transport, v4: bool| {
                let usable =
                    |p: &&ListenPoint| p.transport == transport && !p.addr.ip().is_unspecified();
                points
                    .iter()
                    .filter(usable)
                    .find(|p| p.addr.is_ipv4() == v4)
                    .or_else(|| points.iter().find(usable))
                    .or(points.first())
                    .copied()
            };
            let token = registrar.route_token(&call_id);
            let caller_side = point(inbound, inbound_v4);
            let callee_side = point(target.transport, target.remote.is_ipv4());
            for p in [caller_side, callee_side.filter(|c| Some(*c) != caller_side)]
                .into_iter()
                .flatten()
            {
                req.prepend_header("Record-Route", &record_route(&p, &token))?;
            }
        }
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
                    retry,
                },
            );
        }
        Ok(Routed::Forwarded)
    }

    /// The flow a request was sent on failed: sends it to the same
    /// instance's most recently registered flow not tried yet. False when
    /// there is none (or the request was not sent to a flow of an
    /// instance); the caller then answers upstream.
    fn next_flow(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        request: RequestId,
        registrar: &mut Registrar,
    ) -> bool {
        let Some(retry) = self.pending.get(&request).and_then(|p| p.retry.as_ref()) else {
            return false;
        };
        let next = registrar.lookup(&retry.aor, now).into_iter().find(|b| {
            b.instance.as_deref() == Some(retry.instance.as_str())
                && b.reg_id.is_some_and(|r| !retry.tried.contains(&r))
        });
        let Some((next, reg_id)) = next.and_then(|b| b.reg_id.map(|r| (b, r))) else {
            return false;
        };
        let Some(mut pending) = self.pending.remove(&request) else {
            return false;
        };
        let Some(mut retry) = pending.retry.take() else {
            return false;
        };
        let mut req = retry.request.clone();
        let target = match aim_at_binding(ep, &mut req, &next) {
            Ok(Some(t)) => t,
            // this binding cannot be aimed at: the caller answers
            _ => {
                pending.retry = Some(retry);
                self.pending.insert(request, pending);
                return false;
            }
        };
        if let Some(branch) = &pending.invite_branch {
            self.invites.remove(branch);
        }
        retry.tried.push(reg_id);
        let inbound = retry.inbound;
        tracing::debug!(reg_id, "flow failed: the instance's next flow");
        match self.forward(
            ep,
            now,
            Some(pending.server),
            inbound,
            req,
            target,
            registrar,
            Some(retry),
        ) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("forwarding to the next flow: {e}");
                let _ = ep.respond_status(now, pending.server, 503, "Service Unavailable");
                true
            }
        }
    }

    /// Passes a response to a forwarded request upstream; false when the
    /// request was not the proxy's.
    ///
    /// A 430 or 408 to a request sent to a flow of an instance sends it
    /// to the instance's next flow instead (RFC 5626 §5.3); after a 430
    /// the registrar forgets the failed flow's binding.
    pub fn handle_response(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        request: RequestId,
        mut response: Message,
        registrar: &mut Registrar,
    ) -> bool {
        let Some(server) = self.pending.get(&request).map(|p| p.server) else {
            return false;
        };
        let code = response.status().unwrap_or(0);
        if code == 100 {
            return true; // hop by hop: never forwarded
        }
        if code == 430 || code == 408 {
            let to_instance = self.pending.get(&request).and_then(|p| p.retry.as_ref());
            if let Some(retry) = to_instance {
                if code == 430 {
                    if let Some(reg_id) = retry.tried.last() {
                        registrar.forget_flow(&retry.aor, &retry.instance, *reg_id);
                    }
                }
            }
            let to_instance = to_instance.is_some();
            if self.next_flow(ep, now, request, registrar) {
                return true;
            }
            if code == 430 && to_instance {
                // every flow of the callee failed; a 430 upstream would
                // tell the caller its own flow failed (it would register
                // again): the callee is temporarily unavailable
                self.forget(request);
                let _ = ep.respond_status(now, server, 480, "Temporarily Unavailable");
                return true;
            }
        }
        if response.remove_top_via().is_ok() {
            let _ = ep.respond(now, server, response);
        }
        if code >= 300 {
            self.forget(request);
        }
        true
    }

    /// A forwarded request got no response: answer upstream (408 on
    /// timeout, 503 when the next hop could not be reached).
    ///
    /// A request sent to a flow of an instance goes to the instance's
    /// next flow instead (RFC 5626 §5.3).
    pub fn handle_failure(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        request: RequestId,
        reason: RequestFailure,
        registrar: &mut Registrar,
    ) -> bool {
        let Some(server) = self.pending.get(&request).map(|p| p.server) else {
            return false;
        };
        if self.next_flow(ep, now, request, registrar) {
            return true;
        }
        self.forget(request);
        let (code, phrase) = match reason {
            RequestFailure::Timeout => (408, "Request Timeout"),
            RequestFailure::Transport(_) => (503, "Service Unavailable"),
        };
        // the original request is gone; answer from what the server
        // transaction needs: a minimal response built by the core
        let _ = ep.respond_status(now, server, code, phrase);
        true
    }

    /// How many forwarded requests and INVITEs are pending, with the
    /// capacities of their maps (for tests and metrics).
    pub fn sizes(&self) -> [(usize, usize); 2] {
        [
            (self.pending.len(), self.pending.capacity()),
            (self.invites.len(), self.invites.capacity()),
        ]
    }

    fn forget(&mut self, request: RequestId) {
        crate::relay::forget(&mut self.pending, &mut self.invites, request);
    }

    /// Drops state older than the longest transaction (64·T1 plus slack),
    /// and gives memory back after a flood; at most every 10 s.
    fn sweep(&mut self, now: Instant) {
        crate::relay::sweep(
            &mut self.last_sweep,
            &mut self.pending,
            &mut self.invites,
            now,
        );
    }
}

pub(crate) fn remove_top_route(req: &mut Message) -> Result<(), CoreError> {
    let values: Vec<String> = req
        .header_values(HeaderName::Route)
        .map(str::to_owned)
        .collect();
    let mut elements: Vec<String> = values
        .iter()
        .flat_map(|v| siproam_sip::split_list(v).map(str::to_owned))
        .filter(|e| !e.is_empty())
        .collect();
    if !elements.is_empty() {
        elements.remove(0);
    }
    req.remove_header("Route")?;
    for e in elements {
        req.push_header("Route", &e)?;
    }
    Ok(())
}

/// Aims a request at a binding: its Contact as the Request-URI and, for a
/// binding registered through proxies, its Path as the route (RFC 3327
/// §5.3; the edge proxy's entry carries the flow, RFC 5626 §5.3). The
/// next hop: the first Path entry; else the flow the REGISTER came on when
/// it was a connection (the UA may not be reachable otherwise); else the
/// Contact's address. `None` when none of them names an address.
fn aim_at_binding(
    ep: &Endpoint,
    req: &mut Message,
    b: &Binding,
) -> Result<Option<Target>, CoreError> {
    req.set_request_uri(&b.contact)?;
    if !b.path.is_empty() {
        let mut first = None;
        for entry in b
            .path
            .iter()
            .flat_map(|v| siproam_sip::split_list(v))
            .filter(|e| !e.is_empty())
        {
            req.push_header("Route", entry)?;
            if first.is_none() {
                first = Some(
                    NameAddr::parse(entry)
                        .ok()
                        .and_then(|na| uri_target(na.uri(), Transport::Udp)),
                );
            }
        }
        return Ok(first.flatten());
    }
    let over_flow = b
        .flow
        .and_then(|f| ep.flow(f))
        .filter(|f| f.transport.is_reliable())
        .map(|f| Target {
            transport: f.transport,
            remote: f.remote,
            local: f.local,
            server_name: None,
        });
    let contact = Uri::parse(&b.contact)
        .ok()
        .and_then(|u| uri_target(&u, Transport::Udp));
    Ok(over_flow.or(contact))
}

/// The binding of the request's To AoR whose Contact is `uri` (the
/// newest), when it is reached otherwise than at that Contact: along a
/// Path, or over the flow it registered on.
fn binding_of_contact(
    registrar: &Registrar,
    req: &Message,
    uri: &Uri<'_>,
    now: Instant,
) -> Option<Binding> {
    let to = req.to().ok()?;
    let key = aor_key(to.uri())?;
    registrar
        .lookup(&key, now)
        .into_iter()
        .filter(|b| !b.path.is_empty() || b.flow.is_some())
        .find(|b| Uri::parse(&b.contact).is_ok_and(|c| c.equivalent(uri)))
}

/// A Record-Route entry naming a listen point, with the dialog's token.
fn record_route(p: &ListenPoint, token: &str) -> String {
    let transport = if p.transport == Transport::Udp {
        String::new()
    } else {
        format!(";transport={}", p.transport.param())
    };
    let host = match p.addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    format!("<sip:{host}{transport};lr;{TOKEN_PARAM}={token}>")
}
