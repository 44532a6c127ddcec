//! The sans-IO endpoint: inputs (`handle_*`, commands), outputs
//! (`poll_transmit`, `poll_event`, `poll_timeout`), and the transaction
//! layer of RFC 3261 §17 with RFC 6026.
//!
//! Call order, as in quinn-proto: feed an input, then drain
//! `poll_transmit` and `poll_event` until they return `None`, then sleep
//! until `poll_timeout` and call `handle_timeout`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_sip::{Answer, HeaderName, Message, MessageBuilder, Method};

use crate::admission::SharedAdmission;
use crate::config::Config;
use crate::flow::{Flow, FlowCloseReason, FlowId, FlowTable, ServerName, Transport};
use crate::registration::AccountId;
use crate::rng::Rng;
use crate::timers::{TimeoutReason, TimerKind, TimerOwner, TimerTable};
use crate::transactions::{ClientState, ClientTx, ServerState, ServerTx, Transactions};

/// A message for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The flow it belongs to (the driver maps it to a socket or
    /// connection, opening one if needed).
    pub flow: FlowId,
    /// The transport.
    pub transport: Transport,
    /// The local address to send from, when the core knows it.
    pub local: Option<SocketAddr>,
    /// Where to send it.
    pub remote: SocketAddr,
    /// The bytes.
    pub payload: Bytes,
}

/// Where to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The transport.
    pub transport: Transport,
    /// The next hop's address (already resolved: the core does no DNS).
    pub remote: SocketAddr,
    /// The local address to send from, if it matters.
    pub local: Option<SocketAddr>,
    /// TLS: the name the server's certificate must cover (from
    /// [`Endpoint::server_name`]); a TLS flow is reused only for a name
    /// its certificate is known to cover (RFC 5626 §4.3). `None`: the next
    /// hop is its IP address — any flow to it serves, a new connection
    /// verifies the address. Ignored for UDP and TCP.
    pub server_name: Option<ServerName>,
}

/// A client transaction started by [`Endpoint::send_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A server transaction, to answer with [`Endpoint::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(pub u64);

/// Why a client transaction failed without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    /// Timer B or F fired (treated as a 408).
    Timeout,
    /// The flow failed (treated as a 503, RFC 3261 §8.1.3.1).
    Transport(FlowCloseReason),
}

/// What the endpoint reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A request arrived. Answer it with [`Endpoint::respond`] (`tx` is
    /// `None` for an ACK to a 2xx, which has no transaction).
    IncomingRequest {
        /// The server transaction.
        tx: Option<ServerTxId>,
        /// The flow it came on.
        flow: FlowId,
        /// The request (Via already stamped with `received`/`rport`).
        request: Message,
    },
    /// A response to a request sent with [`Endpoint::send_request`].
    Response {
        /// The request.
        request: RequestId,
        /// The response.
        response: Message,
    },
    /// A request sent with [`Endpoint::send_request`] got no response.
    RequestFailed {
        /// The request.
        request: RequestId,
        /// Why.
        reason: RequestFailure,
    },
    /// An INVITE server transaction sent a failure response and no ACK came
    /// (Timer H).
    AckTimeout {
        /// The transaction.
        tx: ServerTxId,
    },
    /// A request of an account was challenged again for a realm right
    /// after it answered that realm's challenge (not `stale`): the
    /// credentials are wrong. The request ends with that 401/407 (a call:
    /// `Disconnected` with it); reported once per request, never retried.
    AuthenticationFailed {
        /// The account.
        account: AccountId,
        /// Its digest user name (personal data: keep out of default logs).
        user: String,
        /// The realm that refused it.
        realm: String,
        /// The request's method.
        method: String,
    },
    /// A registration changed state.
    Registration(crate::registration::RegistrationEvent),
    /// An INVITE created a call: ring or answer it with
    /// [`Endpoint::answer`], or reject it.
    IncomingCall {
        /// The call.
        call: crate::dialog::CallId,
        /// The INVITE.
        request: Message,
    },
    /// Something happened to a call.
    Call(crate::dialog::CallEvent),
    /// A flow ended (the driver reported it, or the core closed it).
    FlowClosed {
        /// The flow.
        flow: FlowId,
        /// Why.
        reason: FlowCloseReason,
    },
    /// A message could not be used and was dropped (a broken response, or
    /// a request too broken to answer).
    Dropped {
        /// Where it came from.
        remote: SocketAddr,
        /// Why.
        error: siproam_sip::ParseError,
    },
    /// A stage of a network change ([`Endpoint::start_ip_change`]).
    IpChange(crate::mobility::IpChangeReport),
    /// Something happened to an account's flow (up, a keep-alive answered,
    /// failed).
    Flow(crate::keepalive::FlowEvent),
    /// A flow failed: the registrations and calls it carried, and what the
    /// policy does with each ([`Endpoint::set_flow_failure_policy`]).
    FlowTerminated(crate::flow_failure::FlowTerminated),
    /// A network change moved a call: the application does the media part
    /// — re-open the RTP socket on `media_ip` (if given), then what
    /// `action` says.
    CallMoved {
        /// The call.
        call: crate::dialog::CallId,
        /// Where to re-open the media, if anywhere.
        media_ip: Option<std::net::IpAddr>,
        /// What the move asks of the media.
        action: crate::mobility::CallMoveAction,
    },
    /// Something happened to a subscription (`subscription`).
    Subscription(crate::subscription::SubscriptionEvent),
    /// Something happened to a call transfer (`dialog/transfer`).
    Transfer(crate::dialog::transfer::TransferEvent),
    /// A request went out again, unanswered so far (Timer A or E, over
    /// UDP): for the log.
    Retransmission {
        /// The request's method.
        method: String,
        /// Which sending this was (2 for the first retransmission).
        attempt: u32,
        /// When the next one is due if no answer comes.
        next: Duration,
        /// Where it went.
        remote: SocketAddr,
    },
}

/// Errors from the endpoint's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The server transaction is gone (already answered or timed out).
    #[error("no such transaction")]
    NoSuchTransaction,
    /// The account is unknown.
    #[error("no such account")]
    NoSuchAccount,
    /// The call is unknown (or already ended).
    #[error("no such call")]
    NoSuchCall,
    /// A message could not be built or edited.
    #[error("invalid message: {0}")]
    Edit(#[from] siproam_sip::EditError),
    /// A message could not be built.
    #[error("invalid message: {0}")]
    Build(#[from] siproam_sip::ParseError),
    /// A response was given that does not fit the transaction (a 1xx
    /// after a final, a response to an ACK …).
    #[error("response not allowed in this transaction state")]
    InvalidState,
    /// A MESSAGE's text is over [`crate::pager::MAX_MESSAGE_BODY`].
    #[error("message text too large")]
    MessageTooLarge,
    /// The subscription is unknown (or already ended).
    #[error("no such subscription")]
    NoSuchSubscription,
}

/// Who a client transaction reports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxOwner {
    App(RequestId),
    Account(AccountId),
    Call(crate::dialog::CallId),
    /// A subscription's SUBSCRIBE or NOTIFY (`subscription`).
    Subscription(crate::subscription::SubId),
    /// A transfer's REFER or NOTIFY (`dialog/transfer`).
    Transfer(crate::dialog::transfer::TransferId),
    /// Nobody any more: a call's INVITE given up after a network change
    /// (and its CANCEL, and what ends a 2xx that still comes for it).
    /// Responses and failures are dropped, but a 2xx to the INVITE is
    /// ACKed and ended with a BYE (RFC 3261 §13.2.2.4).
    Abandoned,
}

/// A place the endpoint listens on, as the driver bound it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenPoint {
    /// The transport.
    pub transport: Transport,
    /// The bound address (may be a wildcard).
    pub addr: SocketAddr,
}

/// The sans-IO SIP endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    pub(crate) flows: FlowTable,
    pub(crate) timers: TimerTable,
    /// Every client and server transaction.
    pub(crate) txs: Transactions,
    pub(crate) accounts: crate::accounts::Accounts,
    pub(crate) calls: crate::calls::Calls,
    pub(crate) listen_points: Vec<ListenPoint>,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    /// Until then, in-dialog timeouts and transport failures do not end
    /// calls (a network change: requests die on the dead path).
    pub(crate) change_window_until: Option<Instant>,
    /// Per-source budgets and the cap on server transactions.
    admission: SharedAdmission,
    /// When idle UDP flows and refilled source buckets were last tidied.
    tidied: Option<Instant>,
    /// Network changes: how accounts move, the change in progress.
    pub(crate) mobility: crate::mobility::Mobility,
    /// The time of the last input (for what is decided as events leave).
    pub(crate) clock: Option<Instant>,
    /// Keep-alives of the accounts' stream flows.
    pub(crate) keepalives: crate::keepalive::KeepAliveTable,
    /// Failed flows the driver must close.
    pub(crate) closes: VecDeque<(FlowId, FlowCloseReason)>,
    /// STUN keep-alives waiting for their answer, and counters.
    pub(crate) stun: crate::stun::StunState,
    /// What a failed flow does to its usages.
    pub(crate) flow_failure: crate::flow_failure::FlowFailurePolicies,
    /// Calls whose INVITE was sent again after a 430 (once only).
    retried_430: std::collections::HashSet<crate::dialog::CallId>,
    /// Application requests sent again after a 430 (once only).
    retried_430_requests: std::collections::HashSet<RequestId>,
    /// The digest challenges each account answers (`crate::auth`).
    pub(crate) auth: crate::auth::AuthCache,
    /// Subscriptions held and served (`subscription`).
    pub(crate) subscriptions: crate::subscription::Subscriptions,
    /// Call transfers in progress (`dialog/transfer`).
    pub(crate) transfers: crate::dialog::transfer::Transfers,
    /// How client transactions ended, for the driver's log (`outcomes`).
    outcomes: crate::outcomes::Outcomes,
}

/// What the endpoint holds and has shed: for monitoring, benchmarks and
/// tests (memory after a flood must come back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Client transactions pending.
    pub client_transactions: usize,
    /// Server transactions held (including those waiting for
    /// retransmissions).
    pub server_transactions: usize,
    /// Flows known.
    pub flows: usize,
    /// Timers pending.
    pub timers: usize,
    /// Requests dropped unparsed for exceeding their source's rate.
    pub shed: u64,
    /// Requests answered 503 because too many transactions were held.
    pub overloaded: u64,
    /// Sources tracked by admission control.
    pub sources: usize,
}

impl Endpoint {
    /// A new endpoint.
    pub fn new(config: Config) -> Endpoint {
        let admission = config.admission;
        let rng = match config.entropy {
            Some(key) => Rng::from_seed(key),
            None => Rng::new(config.seed),
        };
        Endpoint {
            config,
            rng,
            flows: FlowTable::default(),
            timers: TimerTable::default(),
            txs: Transactions::default(),
            change_window_until: None,
            admission: SharedAdmission::new(admission),
            tidied: None,
            mobility: crate::mobility::Mobility::default(),
            clock: None,
            keepalives: crate::keepalive::KeepAliveTable::default(),
            closes: VecDeque::new(),
            stun: crate::stun::StunState::default(),
            flow_failure: Default::default(),
            retried_430: std::collections::HashSet::new(),
            retried_430_requests: std::collections::HashSet::new(),
            auth: crate::auth::AuthCache::default(),
            subscriptions: Default::default(),
            transfers: Default::default(),
            outcomes: Default::default(),
            accounts: crate::accounts::Accounts::default(),
            calls: crate::calls::Calls::default(),
            listen_points: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- outputs ------------------------------------------------------

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Keep (or stop keeping) how each client transaction ends, for
    /// [`Endpoint::poll_transaction_outcome`]. Off by default.
    pub fn report_transaction_outcomes(&mut self, on: bool) {
        self.outcomes.set_enabled(on);
    }

    /// The next client transaction's outcome (with
    /// [`Endpoint::report_transaction_outcomes`] on).
    pub fn poll_transaction_outcome(&mut self) -> Option<crate::outcomes::TransactionOutcome> {
        self.outcomes.pop()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Some(now) = self.clock {
            self.observe_for_mobility(now, &ev);
        }
        Some(ev)
    }

    /// [`Endpoint::poll_timeout`], letting keep-alive pings wait up to
    /// `slack` so that one wake-up sends every ping due meanwhile: when the
    /// next timer is a keep-alive ping, the answer is `slack` after it —
    /// unless another kind of timer is due before that, which then comes
    /// first. Only pings wait (never a retransmission, a pong timeout or a
    /// transaction timer); a driver with many flows wakes once per `slack`
    /// for them instead of once per ping.
    pub fn poll_timeout_coalesced(&self, slack: Duration) -> Option<(Instant, TimeoutReason)> {
        let (first_at, first) = self.timers.next()?;
        if first.kind != TimerKind::KeepAlive {
            return Some((first_at, first));
        }
        let limit = first_at + slack;
        for (at, reason) in self.timers.upcoming() {
            if at > limit {
                break;
            }
            if reason.kind != TimerKind::KeepAlive {
                return Some((at, reason));
            }
        }
        Some((limit, first))
    }

    /// When to call [`Endpoint::handle_timeout`] next, and why.
    pub fn poll_timeout(&self) -> Option<(Instant, TimeoutReason)> {
        self.timers.next()
    }

    /// When a timer fires, if it is set (for tests and diagnostics).
    pub fn timer_deadline(&self, owner: TimerOwner, kind: TimerKind) -> Option<Instant> {
        self.timers.deadline(owner, kind)
    }

    /// How many timers are pending.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// How many transactions are alive (client, server).
    pub fn transaction_count(&self) -> (usize, usize) {
        self.txs.counts()
    }

    /// A flow's details.
    pub fn flow(&self, id: FlowId) -> Option<&Flow> {
        self.flows.get(id)
    }

    /// Every flow the core knows.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.iter()
    }

    /// The core's id of a TLS server name (ASCII case ignored), for
    /// [`Target::server_name`]; the same name always gets the same id.
    pub fn server_name(&mut self, name: &str) -> ServerName {
        self.flows.names.intern(name)
    }

    /// The text of a server name id.
    pub fn server_name_text(&self, name: ServerName) -> Option<&str> {
        self.flows.names.text(name)
    }

    /// The name a TLS flow was opened for: the one a new connection for it
    /// must verify (`None`: the remote IP address).
    pub fn flow_server_name(&self, flow: FlowId) -> Option<&str> {
        let name = self.flows.get(flow)?.server_names.first().copied()?;
        self.flows.names.text(name)
    }

    // ----- inputs from the driver --------------------------------------

    /// Tells the core where the driver listens (used for Via and Contact
    /// when a flow's local address is not known yet).
    pub fn add_listen_point(&mut self, point: ListenPoint) {
        self.listen_points
            .retain(|p| p.transport != point.transport || p.addr != point.addr);
        self.listen_points.push(point);
    }

    /// Where the driver listens.
    pub fn listen_points(&self) -> &[ListenPoint] {
        &self.listen_points
    }

    /// Forgets every listen point (before a listener restart re-adds them).
    pub fn clear_listen_points(&mut self) {
        self.listen_points.clear();
    }

    /// A UDP datagram arrived on `local` from `remote`. A STUN message
    /// goes to [`Endpoint::handle_stun`], not to the SIP parser.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: Bytes,
    ) {
        // a request over its source's budget is dropped before it costs a
        // parse or a flow (a keep-alive costs no budget)
        if is_keepalive(&data) || self.admit(now, remote, &data) {
            self.handle_admitted_datagram(now, local, remote, data);
        }
    }

    /// A UDP datagram the driver already passed through
    /// [`Endpoint::admission`] where it read it (so it is not counted
    /// twice).
    pub fn handle_admitted_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: Bytes,
    ) {
        if is_keepalive(&data) {
            return; // not a message
        }
        self.tidy(now);
        if crate::stun::is_stun(&data) {
            // STUN on the SIP port (RFC 5626 §4.4.2, §5.4): not for the
            // SIP parser
            self.handle_stun(now, local, remote, &data);
            return;
        }
        let flow = self.flows.inbound(Transport::Udp, local, remote);
        self.handle_message(now, flow, remote, data);
    }

    /// The endpoint's admission control, for the driver to drop datagrams
    /// over their source's budget as soon as it reads them.
    pub fn admission(&self) -> SharedAdmission {
        self.admission.clone()
    }

    /// Admission control for one received message: responses pass, a
    /// request must fit its source's budget.
    fn admit(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) -> bool {
        self.admission.admit(now, remote.ip(), data)
    }

    /// Now and then (every 32 s of traffic or timers): forget UDP flows
    /// nothing uses and source buckets that have refilled, and give the
    /// maps' memory back.
    fn tidy(&mut self, now: Instant) {
        self.clock = Some(now);
        if self
            .tidied
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(32))
        {
            return;
        }
        self.tidied = Some(now);
        self.admission.lock().tidy(now);
        let mut in_use: std::collections::HashSet<FlowId> = self
            .txs
            .flows_in_use()
            .chain(self.accounts.flows_in_use())
            .collect();
        in_use.extend(self.calls.flows_in_use());
        self.flows.reclaim_udp(&in_use);
        self.txs.shrink();
        self.transmits.shrink_to(64);
        self.events.shrink_to(64);
    }

    /// What the endpoint holds and has shed.
    pub fn stats(&self) -> EndpointStats {
        let a = self.admission.lock().stats();
        let (client_transactions, server_transactions) = self.txs.counts();
        EndpointStats {
            client_transactions,
            server_transactions,
            flows: self.flows.len(),
            timers: self.timers.len(),
            shed: a.shed,
            overloaded: a.overloaded,
            sources: a.sources,
        }
    }

    /// The driver accepted a TCP/TLS connection: returns its flow.
    pub fn handle_flow_accepted(
        &mut self,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> FlowId {
        self.flows.inbound(transport, local, remote)
    }

    /// An outgoing connection is up; its local address is now known.
    pub fn handle_flow_established(&mut self, flow: FlowId, local: SocketAddr) {
        self.flows.set_local(flow, local);
    }

    /// The certificate of a TLS flow's connection covers `name` too (the
    /// driver checked it, RFC 5922 §7.2): requests for `name` to the
    /// flow's address may go over it (RFC 5626 §4.3). Without this, a
    /// TLS flow serves only the name it was opened for.
    pub fn handle_tls_name_covered(&mut self, flow: FlowId, name: ServerName) {
        self.flows.add_server_name(flow, name);
    }

    /// A whole message arrived on a TCP/TLS flow (framed by the driver).
    pub fn handle_stream_message(&mut self, now: Instant, flow: FlowId, data: Bytes) {
        let Some(remote) = self.flows.get(flow).map(|f| f.remote) else {
            return;
        };
        self.tidy(now);
        if !self.admit(now, remote, &data) {
            // a stream has no retransmission: a request dropped here would
            // be lost for good, so it is told to come back later (the
            // connection's own limits bound what a source can send)
            if let Ok(req) = Message::parse_with(data, &self.config.limits) {
                if req.method() != Some(Method::Ack) {
                    self.overloaded_response(flow, &req);
                }
            }
            return;
        }
        self.handle_message(now, flow, remote, data);
    }

    /// A flow ended: everything using it is told.
    pub fn handle_flow_closed(&mut self, now: Instant, flow: FlowId, reason: FlowCloseReason) {
        self.clock = Some(now);
        let Some(gone) = self.flows.remove(flow) else {
            return;
        };
        // what it carried, by policy (before its transactions fail)
        let carried = self.flow_failure_begin(now, gone, reason);
        self.subscriptions_flow_closed(now, flow, reason);
        if reason == FlowCloseReason::ConnectFailed {
            // requests moved to TCP for their size go over UDP after all
            // (`large_request`)
            self.fall_back_to_udp(now, flow);
        }
        // client transactions still waiting fail with a transport error
        let failed = self
            .txs
            .client_ids_where(|t| t.flow == flow && t.is_pending());
        for id in failed {
            if let Some(tx) = self.remove_client(id) {
                self.outcomes.push(
                    now,
                    tx.started,
                    &tx.method,
                    tx.transport,
                    crate::outcomes::TransactionResult::TransportError,
                );
                self.client_failed(now, tx.owner, RequestFailure::Transport(reason));
            }
        }
        for id in self.txs.server_ids_on(flow) {
            self.remove_server(id);
        }
        self.events.push_back(Event::FlowClosed { flow, reason });
        self.keepalive_flow_gone(flow, reason);
        self.accounts_flow_closed(now, flow, reason);
        if let Some(carried) = carried {
            self.flow_failure_end(now, carried);
        }
    }

    /// Timers due at `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tidy(now);
        while let Some(reason) = self.timers.pop_due(now) {
            match reason.owner {
                TimerOwner::ClientTx(id) => self.client_timer(now, id, reason.kind),
                TimerOwner::ServerTx(id) => self.server_timer(now, id, reason.kind),
                TimerOwner::Account(id) => match reason.kind {
                    TimerKind::KeepAlive | TimerKind::PongTimeout | TimerKind::StunRetransmit => {
                        self.keepalive_timer(now, AccountId(id), reason.kind)
                    }
                    _ => self.account_timer(now, AccountId(id)),
                },
                TimerOwner::Call(id) => {
                    self.call_timer(now, crate::dialog::CallId(id), reason.kind)
                }
                TimerOwner::Flow(_) => {}
                TimerOwner::Mobility => self.mobility_timer(now),
                TimerOwner::Subscription(id) => {
                    self.subscription_timer(now, crate::subscription::SubId(id), reason.kind)
                }
                TimerOwner::Transfer(id) => self.transfer_timer(now, crate::TransferId(id)),
            }
        }
    }

    fn handle_message(&mut self, now: Instant, flow: FlowId, remote: SocketAddr, data: Bytes) {
        let msg = match Message::parse_with(data, &self.config.limits) {
            Ok(m) => m,
            Err(error) => {
                self.events.push_back(Event::Dropped { remote, error });
                return;
            }
        };
        if msg.is_request() {
            self.handle_request(now, flow, remote, msg);
        } else {
            self.handle_response(now, msg, remote);
        }
    }

    // ----- client transactions -----------------------------------------

    /// The address to put in Via and Contact for a flow: its local
    /// address, else a listen point of its transport, else the target's
    /// local address.
    pub(crate) fn local_for(
        &self,
        flow: FlowId,
        transport: Transport,
        hint: Option<SocketAddr>,
    ) -> SocketAddr {
        let known = self
            .flows
            .get(flow)
            .and_then(|f| f.local)
            .filter(|a| !a.ip().is_unspecified());
        // a listen point of the remote's family (IPv4 or IPv6) first
        let remote_v4 = self.flows.get(flow).map(|f| f.remote.is_ipv4());
        let same_family = |p: &&ListenPoint| remote_v4.is_none_or(|v4| p.addr.is_ipv4() == v4);
        let points_of = |pred: &dyn Fn(&ListenPoint) -> bool| {
            self.listen_points
                .iter()
                .filter(|p| pred(p))
                .find(same_family)
                .or_else(|| self.listen_points.iter().find(|p| pred(p)))
                .map(|p| p.addr)
        };
        let point =
            points_of(&|p: &ListenPoint| p.transport == transport && !p.addr.ip().is_unspecified());
        let any_point = points_of(&|p: &ListenPoint| p.transport == transport);
        let mut addr = known
            .or(hint.filter(|a| !a.ip().is_unspecified()))
            .or(point)
            .or(hint)
            .or(any_point)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        // a stream's ephemeral port is useless to the peer: advertise the
        // listening port of that transport when there is one
        // (and a datagram listener's port when the address had none)
        if transport.is_reliable() || addr.port() == 0 {
            if let Some(p) = any_point {
                addr.set_port(p.port());
            }
        }
        addr
    }

    /// Sends a request in a new client transaction. Build it without a
    /// Via: the core adds the top Via (with a fresh branch and `rport`),
    /// Max-Forwards and User-Agent when absent. Responses come back as
    /// [`Event::Response`]. A request from an AoR with RFC 5626 outbound
    /// in force goes over a live flow of its set instead of `target`
    /// (with that flow's outbound proxy as Route, when it has one).
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: MessageBuilder,
        mut target: Target,
    ) -> Result<RequestId, CoreError> {
        let from = request
            .header_value(HeaderName::From)
            .and_then(|f| siproam_sip::NameAddr::parse(f).ok())
            .map(|f| f.uri().to_string())
            // an account's REGISTER takes its own flow
            .filter(|_| {
                !request
                    .header_value(HeaderName::CSeq)
                    .is_some_and(|c| c.ends_with("REGISTER"))
            });
        if let Some((_, flow_target)) = from.and_then(|f| self.outbound_target_for(&f)) {
            target = flow_target;
            if let (false, Some(route)) = (
                request.has_header(HeaderName::Route),
                self.outbound_route_towards(target),
            ) {
                request = request.header("Route", &route);
            }
        }
        let id = RequestId(self.txs.next_id());
        self.start_client_tx(now, request, target, TxOwner::App(id))?;
        Ok(id)
    }

    /// Forwards a received request (a proxy, RFC 3261 §16.6): adds our
    /// Via on top of the existing ones and decrements Max-Forwards (70
    /// when absent); an ACK goes out without a transaction (`Ok(None)`).
    /// Other edits (Request-URI, Record-Route, Route) are the caller's.
    pub fn forward_request(
        &mut self,
        now: Instant,
        mut request: Message,
        target: Target,
    ) -> Result<Option<RequestId>, CoreError> {
        let hops = request.max_forwards().and_then(Result::ok).unwrap_or(71);
        request.set_header("Max-Forwards", &hops.saturating_sub(1).to_string())?;
        let id = RequestId(self.txs.next_id());
        let is_ack = request.method() == Some(Method::Ack);
        // relayed over the flow or address the client came from (a NAT
        // binding a TCP connection would not reach): not moved to TCP for
        // its size (`large_request`)
        self.start_tx_relayed(now, request, target, TxOwner::App(id), false)?;
        Ok((!is_ack).then_some(id))
    }

    /// Cancels an INVITE sent with [`Endpoint::send_request`] or
    /// [`Endpoint::forward_request`] that has no final response yet
    /// (RFC 3261 §9.1): a CANCEL with the INVITE's top Via (same branch),
    /// Request-URI, Call-ID, From, To, CSeq number and Route, in its own
    /// transaction on the same flow.
    pub fn cancel(&mut self, now: Instant, request: RequestId) -> Result<RequestId, CoreError> {
        self.cancel_from(now, request, None, None)
    }

    /// [`Endpoint::cancel`], sent from `local` (the INVITE's own address is
    /// gone: a new flow to the same next hop; the Via stays the INVITE's)
    /// and reporting to `owner` (else to the application).
    pub(crate) fn cancel_from(
        &mut self,
        now: Instant,
        request: RequestId,
        local: Option<SocketAddr>,
        owner: Option<TxOwner>,
    ) -> Result<RequestId, CoreError> {
        let (invite, flow, transport, udp_fallback) = self
            .txs
            .clients_mut()
            .find(|(id, t)| {
                (t.owner == TxOwner::App(request) || *id == request.0)
                    && t.invite
                    && matches!(t.state, ClientState::Calling | ClientState::Proceeding)
            })
            .map(|(_, t)| {
                // a challenge crossing the CANCEL is not answered: the
                // INVITE is not sent again
                t.auth = None;
                (
                    t.request.clone(),
                    t.flow,
                    t.transport,
                    // an INVITE moved to TCP for its size: its CANCEL
                    // falls back to UDP with it (`large_request`)
                    Self::cancel_fallback(t.udp_fallback.as_deref()),
                )
            })
            .ok_or(CoreError::NoSuchTransaction)?;
        let flow = match (local, self.flows.get(flow)) {
            (Some(local), Some(f)) => {
                let (remote, name) = (f.remote, f.server_names.first().copied());
                self.flows.towards(transport, remote, Some(local), name)
            }
            _ => flow,
        };
        let cancel = build_cancel(&Message::parse(invite)?)?;
        let branch = cancel
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .unwrap_or_default()
            .to_owned();
        let tid = self.txs.next_id();
        let id = RequestId(tid);
        let bytes = cancel.to_bytes();
        self.transmit_on(flow, bytes.clone());
        let timer = TimerOwner::ClientTx(tid);
        if !transport.is_reliable() {
            self.timers.set(timer, TimerKind::E, now + self.config.t1);
        }
        self.timers
            .set(timer, TimerKind::F, now + self.config.t1x64());
        self.txs.insert_client(
            tid,
            ClientTx {
                invite: false,
                state: ClientState::Trying,
                branch,
                method: "CANCEL".to_owned(),
                request: bytes,
                flow,
                transport,
                owner: owner.unwrap_or(TxOwner::App(id)),
                interval: self.config.t1,
                sends: 1,
                ack: None,
                auth: None,
                udp_fallback,
                started: now,
            },
        );
        Ok(id)
    }

    pub(crate) fn start_client_tx(
        &mut self,
        now: Instant,
        request: MessageBuilder,
        target: Target,
        owner: TxOwner,
    ) -> Result<FlowId, CoreError> {
        let flow = self.flows.towards(
            target.transport,
            target.remote,
            target.local,
            target.server_name,
        );
        let local = self.local_for(flow, target.transport, target.local);
        let branch = format!("z9hG4bK{}", self.rng.token(16));
        let via = format!(
            "SIP/2.0/{} {};rport;branch={}",
            target.transport.via_token(),
            fmt_hostport(local),
            branch
        );
        let mut b = request.prepend_header("Via", &via);
        if !b.has_header(HeaderName::MaxForwards) {
            b = b.header("Max-Forwards", "70");
        }
        if let (false, Some(ua)) = (
            b.has_header(HeaderName::UserAgent),
            self.config.user_agent.as_deref(),
        ) {
            b = b.header("User-Agent", ua);
        }
        let mut request = b.build()?;
        // an account's request: its route set and cached credentials
        let attempt = self.prepare_account_request(&mut request, target.remote);
        let flow = self.start_tx_sent(now, request, flow, target, branch, owner, true)?;
        if let (Some(attempt), Some(id)) = (attempt, self.last_request_id()) {
            self.set_client_auth(id, attempt);
        }
        Ok(flow)
    }

    /// Keeps what a request of an account needs to answer a challenge on
    /// its client transaction.
    pub(crate) fn set_client_auth(&mut self, id: RequestId, attempt: crate::auth::AuthAttempt) {
        if let Some(tx) = self.txs.client_mut(id.0) {
            tx.auth = Some(Box::new(attempt));
        }
    }

    /// Starts a client transaction for an already built request by adding
    /// the top Via (a request of ours sent again).
    pub(crate) fn start_tx_with(
        &mut self,
        now: Instant,
        request: Message,
        target: Target,
        owner: TxOwner,
    ) -> Result<FlowId, CoreError> {
        self.start_tx_relayed(now, request, target, owner, true)
    }

    /// [`Endpoint::start_tx_with`]; `fit`: whether a request too large for
    /// UDP may go over TCP (`large_request`; not for a proxy's relaying).
    fn start_tx_relayed(
        &mut self,
        now: Instant,
        mut request: Message,
        target: Target,
        owner: TxOwner,
        fit: bool,
    ) -> Result<FlowId, CoreError> {
        let flow = self.flows.towards(
            target.transport,
            target.remote,
            target.local,
            target.server_name,
        );
        let local = self.local_for(flow, target.transport, target.local);
        let branch = format!("z9hG4bK{}", self.rng.token(16));
        let via = format!(
            "SIP/2.0/{} {};rport;branch={}",
            target.transport.via_token(),
            fmt_hostport(local),
            branch
        );
        request.prepend_header("Via", &via)?;
        self.start_tx_sent(now, request, flow, target, branch, owner, fit)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_tx_sent(
        &mut self,
        now: Instant,
        request: Message,
        flow: FlowId,
        target: Target,
        branch: String,
        owner: TxOwner,
        fit: bool,
    ) -> Result<FlowId, CoreError> {
        let method = request
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let invite = method == "INVITE";
        if method == "ACK" {
            // an ACK (to a 2xx) has no transaction
            self.push_transmit(flow, target, request.to_bytes());
            return Ok(flow);
        }
        // RFC 3261 §18.1.1: too large for UDP, over TCP (`large_request`);
        // the caller keeps the target's flow as its usage's path
        let target_flow = flow;
        let crate::large_request::Fitted {
            bytes,
            flow,
            target,
            fallback,
        } = if fit {
            self.fit_request(request, flow, target, owner)
        } else {
            crate::large_request::Fitted {
                bytes: request.to_bytes(),
                flow,
                target,
                fallback: None,
            }
        };
        let id = self.txs.next_id();
        let tx = ClientTx {
            invite,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            branch: branch.clone(),
            method: method.clone(),
            request: bytes.clone(),
            flow,
            transport: target.transport,
            owner,
            interval: self.config.t1,
            sends: 1,
            ack: None,
            auth: None,
            udp_fallback: fallback,
            started: now,
        };
        self.push_transmit(flow, target, bytes);
        let owner_key = TimerOwner::ClientTx(id);
        if !target.transport.is_reliable() {
            self.timers.set(
                owner_key,
                if invite { TimerKind::A } else { TimerKind::E },
                now + self.config.t1,
            );
        }
        self.timers.set(
            owner_key,
            if invite { TimerKind::B } else { TimerKind::F },
            now + self.config.t1x64(),
        );
        self.txs.insert_client(id, tx);
        self.txs.set_last_client(id);
        Ok(target_flow)
    }

    pub(crate) fn push_transmit(&mut self, flow: FlowId, target: Target, payload: Bytes) {
        let local = self.flows.get(flow).and_then(|f| f.local).or(target.local);
        self.transmits.push_back(Transmit {
            flow,
            transport: target.transport,
            local,
            remote: target.remote,
            payload,
        });
    }

    /// The id of the client transaction started last.
    pub(crate) fn last_request_id(&self) -> Option<RequestId> {
        self.txs.last_client().map(RequestId)
    }

    /// Reports a retransmission ([`retransmission`]) sent on `flow`.
    fn report_retransmission(
        &mut self,
        flow: FlowId,
        (method, attempt, next): (String, u32, Duration),
    ) {
        if let Some(remote) = self.flows.get(flow).map(|f| f.remote) {
            self.events.push_back(Event::Retransmission {
                method,
                attempt,
                next,
                remote,
            });
        }
    }

    fn transmit_on(&mut self, flow: FlowId, payload: Bytes) {
        if let Some(f) = self.flows.get(flow) {
            self.transmits.push_back(Transmit {
                flow,
                transport: f.transport,
                local: f.local,
                remote: f.remote,
                payload,
            });
        }
    }

    /// Whether `owner` has a client transaction still waiting for its
    /// final response.
    pub(crate) fn has_client_tx(&self, owner: TxOwner) -> bool {
        self.txs
            .clients()
            .any(|(_, tx)| tx.owner == owner && tx.is_pending())
    }

    /// Whether a client transaction whose owner `f` picks still waits
    /// for its final response.
    pub(crate) fn has_client_tx_where(&self, f: impl Fn(TxOwner) -> bool) -> bool {
        self.txs
            .clients()
            .any(|(_, tx)| f(tx.owner) && tx.is_pending())
    }

    /// Forgets the pending client transactions of `owner`: no more
    /// retransmissions, and a late answer is a stray response (dropped).
    pub(crate) fn abandon_client_txs(&mut self, owner: TxOwner) -> usize {
        let ids = self.txs.client_ids_where(|tx| tx.owner == owner);
        for id in &ids {
            self.remove_client(*id);
        }
        ids.len()
    }

    /// Whether the client transaction `id` still exists.
    pub(crate) fn client_tx_exists(&self, id: RequestId) -> bool {
        self.txs.client(id.0).is_some()
    }

    /// Gives `owner`'s client transactions to [`TxOwner::Abandoned`]:
    /// their answers no longer reach it. An INVITE without a final
    /// response stops retransmitting and is destroyed after 64·T1 (RFC
    /// 3261 §9.1, the wait for the answer to its CANCEL).
    pub(crate) fn disown_client_txs(&mut self, now: Instant, owner: TxOwner) {
        let t1x64 = self.config.t1x64();
        for (id, tx) in self.txs.clients_mut().filter(|(_, t)| t.owner == owner) {
            tx.owner = TxOwner::Abandoned;
            if tx.invite && matches!(tx.state, ClientState::Calling | ClientState::Proceeding) {
                let timer = TimerOwner::ClientTx(id);
                self.timers.cancel(timer, TimerKind::A);
                self.timers.set(timer, TimerKind::B, now + t1x64);
            }
        }
    }

    fn remove_client(&mut self, id: u64) -> Option<ClientTx> {
        let tx = self.txs.remove_client(id)?;
        self.timers.cancel_all(TimerOwner::ClientTx(id));
        Some(tx)
    }

    fn client_failed(&mut self, now: Instant, owner: TxOwner, reason: RequestFailure) {
        match owner {
            TxOwner::App(request) => self
                .events
                .push_back(Event::RequestFailed { request, reason }),
            TxOwner::Account(account) => self.account_failed(now, account, reason),
            TxOwner::Call(call) => self.call_failed(now, call, reason),
            TxOwner::Subscription(sub) => self.subscription_failed(now, sub, reason),
            TxOwner::Transfer(t) => self.transfer_failed(now, t, reason),
            TxOwner::Abandoned => {}
        }
    }

    fn client_response(
        &mut self,
        now: Instant,
        owner: TxOwner,
        sent: (FlowId, Option<Bytes>),
        response: Message,
        remote: SocketAddr,
        auth: Option<(u64, crate::auth::AuthAttempt)>,
    ) {
        if response.status() == Some(430) && self.flow_failed_430(now, owner, sent.clone()) {
            return;
        }
        // a challenge to an account's request: answered and sent again
        if let (Some(401 | 407), Some((id, attempt)), (flow, Some(request))) =
            (response.status(), auth, sent)
        {
            if self.auth_challenged(now, owner, (id, flow, request), Some(attempt), &response) {
                return;
            }
        }
        match owner {
            TxOwner::App(request) => self.events.push_back(Event::Response { request, response }),
            TxOwner::Account(account) => self.account_response(now, account, response, remote),
            TxOwner::Call(call) => self.call_response(now, call, response),
            TxOwner::Subscription(sub) => self.subscription_response(now, sub, response),
            TxOwner::Transfer(t) => self.transfer_response(now, t, response),
            TxOwner::Abandoned => {}
        }
    }

    /// A request of ours sent over an outbound account's flow was answered
    /// 430 Flow Failed (RFC 5626 §11.5): the flow is reported failed
    /// (reason 430) and closed, the accounts on it register again over a
    /// new flow, and the request is sent once more over a live flow — a
    /// REGISTER over its new flow, a call's INVITE or an application's
    /// request over a live flow of its AoR's set. Returns true when the
    /// 430 was taken care of (the owner does not see it); a second 430
    /// reaches the owner.
    fn flow_failed_430(
        &mut self,
        now: Instant,
        owner: TxOwner,
        (flow, request): (FlowId, Option<Bytes>),
    ) -> bool {
        let accounts = self.outbound_accounts_on(flow);
        if accounts.is_empty() {
            return false;
        }
        let retry_call = match owner {
            TxOwner::Call(call) => !self.retried_430.contains(&call),
            _ => false,
        };
        let retry_request = match owner {
            TxOwner::App(id) => !self.retried_430_requests.contains(&id),
            _ => false,
        };
        // the failed flow's pre-loaded Route, replaced on a retry
        let old_route = self.flows.get(flow).and_then(|f| {
            self.outbound_route_towards(Target {
                transport: f.transport,
                remote: f.remote,
                local: None,
                server_name: f.server_names.first().copied(),
            })
        });
        // the keep-alive of a stream flow reports its failure as it
        // stops; the others are reported here
        for a in &accounts {
            if self.keepalives.get(a).is_none() {
                self.flow_event_on(
                    *a,
                    flow,
                    crate::keepalive::FlowState::Failed,
                    Some(FlowCloseReason::FlowFailed),
                );
            }
        }
        self.flow_failed(now, flow, FlowCloseReason::FlowFailed);
        match owner {
            TxOwner::Account(id) => {
                self.account_430(now, id);
                true
            }
            TxOwner::Call(call) if retry_call => {
                let Some(from) = self.call_local_uri(call).map(str::to_owned) else {
                    return false;
                };
                let Some((account, target)) = self.outbound_target_for(&from) else {
                    return false;
                };
                let contact = self.account_contact_addr(account);
                // calls that ended meanwhile are forgotten (bounded by the
                // calls alive)
                let calls = &self.calls;
                self.retried_430.retain(|c| calls.get(*c).is_some());
                self.retried_430.insert(call);
                self.reroute_invite(now, call, target, contact).is_ok()
            }
            TxOwner::App(id) if retry_request => {
                let Some(request) = request else {
                    return false;
                };
                // only what has not ended keeps its mark (bounded by the
                // requests pending)
                let txs = &self.txs;
                self.retried_430_requests
                    .retain(|r| txs.clients().any(|(_, t)| t.owner == TxOwner::App(*r)));
                self.retried_430_requests.insert(id);
                self.resend_after_430(now, id, request, old_route)
            }
            _ => false,
        }
    }

    /// An application's request answered 430 sent once more, as a new
    /// transaction (our Via off, the next CSeq) over a live flow of its
    /// From's flow set, its first Route the new flow's proxy when the old
    /// one was the failed flow's. False when there is no flow to go over.
    fn resend_after_430(
        &mut self,
        now: Instant,
        id: RequestId,
        request: Bytes,
        old_route: Option<String>,
    ) -> bool {
        let Ok(mut msg) = Message::parse(request) else {
            return false;
        };
        let Some(from) = msg.from().ok().map(|f| f.uri().to_string()) else {
            return false;
        };
        let Some((_, target)) = self.outbound_target_for(&from) else {
            return false;
        };
        let cseq = msg.cseq();
        let next = format!("{} {}", cseq.seq.saturating_add(1), cseq.method.as_str());
        let first_route = msg
            .header_values(HeaderName::Route)
            .flat_map(siproam_sip::split_list)
            .map(|r| r.trim().to_owned())
            .next();
        let new_route = self.outbound_route_towards(target);
        let edited = (|| -> Result<(), siproam_sip::EditError> {
            msg.remove_header("Via")?;
            msg.set_header("CSeq", &next)?;
            if first_route.is_some() && first_route == old_route {
                let rest: Vec<String> = msg
                    .header_values(HeaderName::Route)
                    .flat_map(siproam_sip::split_list)
                    .skip(1)
                    .map(|r| r.trim().to_owned())
                    .collect();
                msg.remove_header("Route")?;
                for r in new_route.iter().chain(rest.iter()) {
                    msg.push_header("Route", r)?;
                }
            }
            Ok(())
        })();
        edited.is_ok()
            && self
                .start_tx_with(now, msg, target, TxOwner::App(id))
                .is_ok()
    }

    fn handle_response(&mut self, now: Instant, resp: Message, remote: SocketAddr) {
        let Ok(via) = resp.top_via() else {
            return;
        };
        let Some(branch) = via.branch() else {
            return;
        };
        let Some(id) = self.txs.client_for(branch, resp.cseq().method.as_str()) else {
            return; // a stray or late response: dropped (RFC 3261 §18.1.2)
        };
        let code = resp.status().unwrap_or(0);
        let Some(tx) = self.txs.client_mut(id) else {
            return;
        };
        let owner = tx.owner;
        // the flow it went over, and (for a 430 or a challenge) the
        // request itself
        let tx_sent = (
            tx.flow,
            matches!(code, 401 | 407 | 430).then(|| tx.request.clone()),
        );
        // a final challenge takes what answers it (once: a retransmitted
        // challenge finds nothing)
        let auth = match code {
            401 | 407 if tx.is_pending() => tx.auth.take().map(|a| (id, *a)),
            _ => None,
        };
        let reliable = tx.transport.is_reliable();
        // its final response: the outcome, when they are kept
        if code >= 200 && tx.is_pending() && self.outcomes.enabled() {
            self.outcomes.push(
                now,
                tx.started,
                &tx.method,
                tx.transport,
                crate::outcomes::TransactionResult::Final(code),
            );
        }
        let timer = TimerOwner::ClientTx(id);
        match (tx.invite, tx.state, code) {
            (
                _,
                ClientState::Calling | ClientState::Trying | ClientState::Proceeding,
                100..=199,
            ) => {
                tx.state = ClientState::Proceeding;
                if tx.invite {
                    self.timers.cancel(timer, TimerKind::A);
                    // RFC 3261 §17.1.1.2: Timer B only bounds Calling
                    self.timers.cancel(timer, TimerKind::B);
                }
                self.client_response(now, owner, tx_sent.clone(), resp, remote, auth.clone());
            }
            (true, ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                tx.state = ClientState::Accepted;
                let (invite, flow) = (tx.request.clone(), tx.flow);
                self.timers.cancel(timer, TimerKind::A);
                self.timers.cancel(timer, TimerKind::B);
                self.timers
                    .set(timer, TimerKind::M, now + self.config.t1x64());
                if owner == TxOwner::Abandoned {
                    self.end_stray_2xx(now, &invite, &resp, flow, true);
                } else {
                    self.client_response(now, owner, tx_sent.clone(), resp, remote, auth.clone());
                }
            }
            (true, ClientState::Accepted, 200..=299) if owner == TxOwner::Abandoned => {
                // a retransmission: ACKed again, ended already
                let (invite, flow) = (tx.request.clone(), tx.flow);
                self.end_stray_2xx(now, &invite, &resp, flow, false);
            }
            (true, ClientState::Accepted, 200..=299) => {
                // RFC 6026: retransmitted or forked 2xx go to the TU
                self.client_response(now, owner, tx_sent.clone(), resp, remote, auth.clone());
            }
            (true, ClientState::Calling | ClientState::Proceeding, 300..=699) => {
                let ack = build_ack(&tx.request, &resp);
                tx.state = ClientState::Completed;
                tx.ack = ack.clone();
                let flow = tx.flow;
                self.timers.cancel(timer, TimerKind::A);
                self.timers.cancel(timer, TimerKind::B);
                if let Some(ack) = ack {
                    self.transmit_on(flow, ack);
                }
                if reliable {
                    self.remove_client(id);
                } else {
                    self.timers
                        .set(timer, TimerKind::D, now + self.config.timer_d);
                }
                self.client_response(now, owner, tx_sent.clone(), resp, remote, auth.clone());
            }
            (true, ClientState::Completed, 300..=699) => {
                // retransmitted failure: ACK again, not passed up
                if let Some(ack) = tx.ack.clone() {
                    let flow = tx.flow;
                    self.transmit_on(flow, ack);
                }
            }
            (false, ClientState::Trying | ClientState::Proceeding, 200..=699) => {
                tx.state = ClientState::Completed;
                self.timers.cancel(timer, TimerKind::E);
                self.timers.cancel(timer, TimerKind::F);
                if reliable {
                    self.remove_client(id);
                } else {
                    self.timers.set(timer, TimerKind::K, now + self.config.t4);
                }
                self.client_response(now, owner, tx_sent.clone(), resp, remote, auth.clone());
            }
            _ => {} // absorbed
        }
    }

    fn client_timer(&mut self, now: Instant, id: u64, kind: TimerKind) {
        let Some(tx) = self.txs.client_mut(id) else {
            return;
        };
        let timer = TimerOwner::ClientTx(id);
        match kind {
            TimerKind::A if tx.state == ClientState::Calling => {
                tx.interval *= 2;
                tx.sends = tx.sends.saturating_add(1);
                let (flow, bytes, next) = (tx.flow, tx.request.clone(), now + tx.interval);
                let ev = retransmission(tx);
                self.transmit_on(flow, bytes);
                self.timers.set(timer, TimerKind::A, next);
                self.report_retransmission(flow, ev);
            }
            TimerKind::E if matches!(tx.state, ClientState::Trying | ClientState::Proceeding) => {
                // Trying: double up to T2; Proceeding: every T2
                tx.interval = if tx.state == ClientState::Proceeding {
                    self.config.t2
                } else {
                    (tx.interval * 2).min(self.config.t2)
                };
                tx.sends = tx.sends.saturating_add(1);
                let (flow, bytes, next) = (tx.flow, tx.request.clone(), now + tx.interval);
                let ev = retransmission(tx);
                self.transmit_on(flow, bytes);
                self.timers.set(timer, TimerKind::E, next);
                self.report_retransmission(flow, ev);
            }
            TimerKind::B | TimerKind::F => {
                if let Some(tx) = self.remove_client(id) {
                    self.outcomes.push(
                        now,
                        tx.started,
                        &tx.method,
                        tx.transport,
                        crate::outcomes::TransactionResult::Timeout,
                    );
                    self.client_failed(now, tx.owner, RequestFailure::Timeout);
                }
            }
            TimerKind::D | TimerKind::K | TimerKind::M => {
                self.remove_client(id);
            }
            _ => {}
        }
    }

    // ----- server transactions -----------------------------------------

    fn handle_request(&mut self, now: Instant, flow: FlowId, remote: SocketAddr, mut req: Message) {
        // RFC 3261 §18.2.1 and RFC 3581: note where it really came from
        stamp_received(&mut req, remote);
        if let Err(e) = req.validate() {
            if let Answer::Respond(code) = e.answer() {
                if req.method() != Some(Method::Ack) {
                    self.stateless_response(flow, &req, code, reason_phrase(code));
                }
            } else {
                self.events.push_back(Event::Dropped { remote, error: e });
            }
            return;
        }
        let method = req
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let key = server_key(&req, &method);
        if let Some(id) = self.txs.server_for(&key) {
            self.server_retransmission(now, id, &method);
            return;
        }
        if method == "ACK" {
            // an ACK matching no transaction: the ACK for a 2xx, for the TU
            if self.dialog_request(now, None, flow, &req) {
                return;
            }
            self.events.push_back(Event::IncomingRequest {
                tx: None,
                flow,
                request: req,
            });
            return;
        }
        let cap = self.admission.config().max_server_transactions;
        let held = self.txs.counts().1;
        // a source that proved who it is gets in while a flood fills the
        // table, up to twice the cap
        if held >= cap
            && (held >= cap.saturating_mul(2) || !self.admission.is_trusted(now, remote.ip()))
        {
            // too much held already: answer without keeping anything
            self.admission.lock().stats.overloaded += 1;
            self.overloaded_response(flow, &req);
            return;
        }
        let id = self.txs.next_id();
        let invite = method == "INVITE";
        let tx = ServerTx {
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            key: key.clone(),
            flow,
            request: req.to_bytes(),
            last_response: None,
            interval: self.config.t1,
        };
        self.txs.insert_server(id, tx);
        if invite && self.config.send_100_trying {
            if let Ok(trying) = MessageBuilder::response_to(&req, 100, "Trying", None).build() {
                let bytes = trying.to_bytes();
                if let Some(tx) = self.txs.server_mut(id) {
                    tx.last_response = Some(bytes.clone());
                }
                self.transmit_on(flow, bytes);
            }
        }
        if self.subscription_request(now, ServerTxId(id), flow, &req)
            || self.dialog_request(now, Some(ServerTxId(id)), flow, &req)
        {
            return;
        }
        self.events.push_back(Event::IncomingRequest {
            tx: Some(ServerTxId(id)),
            flow,
            request: req,
        });
    }

    fn server_retransmission(&mut self, now: Instant, id: u64, method: &str) {
        let Some(tx) = self.txs.server_mut(id) else {
            return;
        };
        let timer = TimerOwner::ServerTx(id);
        if method == "ACK" {
            if tx.invite && tx.state == ServerState::Completed {
                tx.state = ServerState::Confirmed;
                self.timers.cancel(timer, TimerKind::G);
                self.timers.cancel(timer, TimerKind::H);
                let reliable = self
                    .flows
                    .get(tx.flow)
                    .is_some_and(|f| f.transport.is_reliable());
                if reliable {
                    self.remove_server(id);
                } else {
                    self.timers.set(timer, TimerKind::I, now + self.config.t4);
                }
            }
            return;
        }
        // a retransmitted request: resend the last response (not in
        // Trying, and an INVITE in Accepted is absorbed, RFC 6026)
        match tx.state {
            ServerState::Proceeding | ServerState::Completed => {
                if let Some(bytes) = tx.last_response.clone() {
                    let flow = tx.flow;
                    self.transmit_on(flow, bytes);
                }
            }
            _ => {}
        }
    }

    /// Sends a UDP server transaction's responses from `local` from now on
    /// (a network change took the address its request came to; RFC 3261
    /// §18.2.2 names where a response goes, not where it leaves from).
    /// A stream transaction stays on its connection.
    pub(crate) fn move_server_tx(&mut self, tx: ServerTxId, local: SocketAddr) {
        let Some(remote) = self
            .txs
            .server(tx.0)
            .and_then(|t| self.flows.get(t.flow))
            .filter(|f| !f.transport.is_reliable())
            .map(|f| f.remote)
        else {
            return;
        };
        let flow = self.flows.inbound(Transport::Udp, local, remote);
        if let Some(t) = self.txs.server_mut(tx.0) {
            t.flow = flow;
        }
    }

    /// Answers a request received as [`Event::IncomingRequest`].
    pub fn respond(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        response: Message,
    ) -> Result<(), CoreError> {
        let id = tx.0;
        let code = response.status().ok_or(CoreError::InvalidState)?;
        let bytes = response.to_bytes();
        let t = self
            .txs
            .server_mut(id)
            .ok_or(CoreError::NoSuchTransaction)?;
        let timer = TimerOwner::ServerTx(id);
        let flow = t.flow;
        let reliable = self
            .flows
            .get(flow)
            .is_none_or(|f| f.transport.is_reliable());
        match (t.invite, t.state, code) {
            (_, ServerState::Trying | ServerState::Proceeding, 100..=199) => {
                t.state = ServerState::Proceeding;
                t.last_response = Some(bytes.clone());
            }
            (true, ServerState::Proceeding, 200..=299) => {
                t.state = ServerState::Accepted;
                t.last_response = Some(bytes.clone());
                self.timers
                    .set(timer, TimerKind::L, now + self.config.t1x64());
            }
            (true, ServerState::Accepted, 200..=299) => {
                // the TU retransmits its 2xx through the transaction
            }
            (true, ServerState::Proceeding, 300..=699) => {
                t.state = ServerState::Completed;
                t.last_response = Some(bytes.clone());
                if !reliable {
                    self.timers.set(timer, TimerKind::G, now + self.config.t1);
                }
                self.timers
                    .set(timer, TimerKind::H, now + self.config.t1x64());
            }
            (false, ServerState::Trying | ServerState::Proceeding, 200..=699) => {
                t.state = ServerState::Completed;
                t.last_response = Some(bytes.clone());
                if reliable {
                    self.transmit_on(flow, bytes);
                    self.remove_server(id);
                    return Ok(());
                }
                self.timers
                    .set(timer, TimerKind::J, now + self.config.t1x64());
            }
            _ => return Err(CoreError::InvalidState),
        }
        self.transmit_on(flow, bytes);
        Ok(())
    }

    /// Answers a server transaction with a bare status (a proxy whose
    /// downstream failed: 408, 503).
    pub fn respond_status(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        code: u16,
        reason: &str,
    ) -> Result<(), CoreError> {
        let request = self
            .txs
            .server(tx.0)
            .map(|t| t.request.clone())
            .ok_or(CoreError::NoSuchTransaction)?;
        let req = Message::parse(request)?;
        let tag = self.rng.token(10);
        let resp = MessageBuilder::response_to(&req, code, reason, Some(&tag)).build()?;
        self.respond(now, tx, resp)
    }

    fn server_timer(&mut self, now: Instant, id: u64, kind: TimerKind) {
        let Some(tx) = self.txs.server_mut(id) else {
            return;
        };
        let timer = TimerOwner::ServerTx(id);
        match kind {
            TimerKind::G if tx.state == ServerState::Completed => {
                tx.interval = (tx.interval * 2).min(self.config.t2);
                let (flow, bytes, next) = (tx.flow, tx.last_response.clone(), now + tx.interval);
                if let Some(bytes) = bytes {
                    self.transmit_on(flow, bytes);
                }
                self.timers.set(timer, TimerKind::G, next);
            }
            TimerKind::H => {
                self.remove_server(id);
                self.events
                    .push_back(Event::AckTimeout { tx: ServerTxId(id) });
            }
            TimerKind::I | TimerKind::J | TimerKind::L => {
                self.remove_server(id);
            }
            _ => {}
        }
    }

    fn remove_server(&mut self, id: u64) {
        if self.txs.remove_server(id).is_some() {
            self.timers.cancel_all(TimerOwner::ServerTx(id));
        }
    }

    /// 503 with `Retry-After`, keeping no state.
    fn overloaded_response(&mut self, flow: FlowId, req: &Message) {
        let retry = self.admission.config().retry_after.to_string();
        let tag = self.rng.token(10);
        if let Ok(resp) = MessageBuilder::response_to(req, 503, "Service Unavailable", Some(&tag))
            .header("Retry-After", &retry)
            .build()
        {
            self.transmit_on(flow, resp.to_bytes());
        }
    }

    fn stateless_response(&mut self, flow: FlowId, req: &Message, code: u16, reason: &str) {
        let tag = self.rng.token(10);
        if let Ok(resp) = MessageBuilder::response_to(req, code, reason, Some(&tag)).build() {
            self.transmit_on(flow, resp.to_bytes());
        }
    }

    /// Answers a request the application does not handle the way a plain
    /// user agent would: OPTIONS → 200 with Allow/Accept/Supported, BYE
    /// and CANCEL with no dialog → 481, anything else → 405 with Allow.
    pub fn respond_default(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: &Message,
    ) -> Result<(), CoreError> {
        let tag = self.rng.token(10);
        let allow = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO, NOTIFY, MESSAGE";
        let b = match request.method() {
            Some(Method::Options) => MessageBuilder::response_to(request, 200, "OK", Some(&tag))
                .header("Allow", allow)
                .header("Accept", "application/sdp")
                .header("Supported", &siproam_sip::SUPPORTED_OPTION_TAGS.join(", ")),
            Some(Method::Bye | Method::Cancel) => MessageBuilder::response_to(
                request,
                481,
                "Call/Transaction Does Not Exist",
                Some(&tag),
            ),
            _ => MessageBuilder::response_to(request, 405, "Method Not Allowed", Some(&tag))
                .header("Allow", allow),
        };
        let b = match &self.config.user_agent {
            Some(ua) => b.header("Server", ua),
            None => b,
        };
        self.respond(now, tx, b.build()?)
    }

    /// Sends a final response to a non-INVITE request and forgets the
    /// transaction at once, keeping nothing for retransmissions (a
    /// retransmitted request is then answered anew): for answers that cost
    /// nothing to give again, such as a challenge with a self-validating
    /// nonce or a refusal, so that a flood of them holds no state.
    pub fn respond_stateless(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        response: Message,
    ) -> Result<(), CoreError> {
        let code = response.status().ok_or(CoreError::InvalidState)?;
        let t = self.txs.server(tx.0).ok_or(CoreError::NoSuchTransaction)?;
        if t.invite || code < 200 {
            // an INVITE's final answer is retransmitted until its ACK
            return self.respond(now, tx, response);
        }
        let flow = t.flow;
        self.transmit_on(flow, response.to_bytes());
        self.remove_server(tx.0);
        Ok(())
    }

    /// Trusts the source of a request that proved who it sent it (see
    /// [`SharedAdmission::trust`]) for an hour.
    pub fn trust_source(&mut self, now: Instant, source: std::net::IpAddr) {
        self.admission.trust(now, source, Duration::from_secs(3600));
    }

    /// Draws a random token from the core's seeded generator (tags,
    /// Call-IDs).
    pub fn random_token(&mut self, len: usize) -> String {
        self.rng.token(len)
    }
}

/// A datagram of CRLFs only (RFC 5626 keep-alive) or empty.
fn is_keepalive(data: &[u8]) -> bool {
    data.iter().all(|b| *b == b'\r' || *b == b'\n')
}

/// `host:port`, with IPv6 in brackets.
pub(crate) fn fmt_hostport(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// RFC 3261 §17.2.3 matching key (branch, sent-by, method with ACK as
/// INVITE), or the RFC 2543 fallback when the branch lacks the cookie.
fn server_key(req: &Message, method: &str) -> String {
    let method = if method == "ACK" { "INVITE" } else { method };
    let via = req.top_via().ok();
    match via.and_then(|v| {
        v.branch()
            .filter(|b| b.starts_with("z9hG4bK") && b.len() > 7)
            .map(|b| (v, b))
    }) {
        Some((v, branch)) => format!(
            "3261|{branch}|{}:{}|{method}",
            v.host_str(),
            v.port().unwrap_or(0)
        ),
        None => {
            // RFC 2543: Request-URI, To tag, From tag, Call-ID, CSeq number,
            // top Via; the ACK's To tag is the response's, so it is left out
            let to_tag = if method == "INVITE" {
                String::new()
            } else {
                req.to()
                    .ok()
                    .and_then(|t| t.tag())
                    .unwrap_or_default()
                    .to_owned()
            };
            format!(
                "2543|{}|{}|{}|{}|{}|{}|{method}",
                req.request_uri_str().unwrap_or_default(),
                to_tag,
                req.from().ok().and_then(|f| f.tag()).unwrap_or_default(),
                req.call_id(),
                req.cseq().seq,
                req.header(HeaderName::Via)
                    .and_then(|v| siproam_sip::split_list(v).next())
                    .unwrap_or_default(),
            )
        }
    }
}

/// Adds `received` (when the source differs from sent-by) and fills
/// `rport` (when asked) on the top Via.
fn stamp_received(req: &mut Message, remote: SocketAddr) {
    let ip = remote.ip().to_string();
    let (sent_by_matches, wants_rport) = match req.top_via() {
        Ok(v) => (
            v.host_str().trim_start_matches('[').trim_end_matches(']') == ip,
            v.rport() == Some(None),
        ),
        Err(_) => return,
    };
    // one edit of the Via for both (each edit re-checks the message)
    if wants_rport {
        let port = remote.port().to_string();
        let _ = req.set_header_params(
            HeaderName::Via,
            0,
            &[("received", Some(Some(&ip))), ("rport", Some(Some(&port)))],
        );
    } else if !sent_by_matches {
        let _ = req.set_top_via_param("received", Some(Some(&ip)));
    }
}

/// The CANCEL of an INVITE (RFC 3261 §9.1): its top Via (same branch),
/// Request-URI, Call-ID, From, To, CSeq number and Route.
pub(crate) fn build_cancel(inv: &Message) -> Result<Message, siproam_sip::ParseError> {
    let mut b = MessageBuilder::request(Method::Cancel, inv.request_uri_str().unwrap_or_default());
    if let Some(via) = inv
        .header(HeaderName::Via)
        .and_then(|v| siproam_sip::split_list(v).next())
    {
        b = b.header("Via", via);
    }
    for (name, h) in [
        ("From", HeaderName::From),
        ("To", HeaderName::To),
        ("Max-Forwards", HeaderName::MaxForwards),
    ] {
        if let Some(v) = inv.header(h) {
            b = b.header(name, v);
        }
    }
    b = b
        .header("Call-ID", inv.call_id())
        .header("CSeq", &format!("{} CANCEL", inv.cseq().seq));
    for r in inv.header_values(HeaderName::Route) {
        b = b.header("Route", r);
    }
    b.build()
}

/// The ACK for a failure response to an INVITE (RFC 3261 §17.1.1.3): the
/// request's Request-URI, top Via, From, Call-ID, CSeq number and Route;
/// the response's To.
fn build_ack(invite: &Bytes, resp: &Message) -> Option<Bytes> {
    let req = Message::parse(invite.clone()).ok()?;
    let mut b = MessageBuilder::request(Method::Ack, req.request_uri_str()?);
    b = b.header("Via", req.header(HeaderName::Via)?);
    b = b.header("Max-Forwards", "70");
    b = b.header("From", req.header(HeaderName::From)?);
    b = b.header("To", resp.header(HeaderName::To)?);
    b = b.header("Call-ID", req.call_id());
    b = b.header("CSeq", &format!("{} ACK", req.cseq().seq));
    for r in req.header_values(HeaderName::Route) {
        b = b.header("Route", r);
    }
    b.build().ok().map(|m| m.to_bytes())
}

/// A reason phrase for the status codes the core sends itself.
/// A client transaction's retransmission: method, attempt and the next
/// interval.
fn retransmission(tx: &ClientTx) -> (String, u32, Duration) {
    (tx.method.clone(), tx.sends, tx.interval)
}

pub(crate) fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Error",
    }
}
