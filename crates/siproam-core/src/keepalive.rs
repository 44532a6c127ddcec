//! Keep-alives on an account's registration flow (RFC 5626 §4.4): a ping
//! at a random 80–100 % of the interval — the registrar's `Flow-Timer`,
//! else the account's configured time — and a watchdog: no answer within
//! `pong_timeout` and the flow has failed. The watchdog only where the far
//! end is known to answer: outbound in force or a `Flow-Timer` in the 2xx
//! (§4.4.1 obliges only such a registrar); towards a plain RFC 3261
//! registrar CRLF pings still go at the configured interval, to keep a NAT
//! binding open (it ignores them), and a pong that comes is reported.
//!
//! - Stream flows (§4.4.1): the ping is CRLFCRLF, the pong CRLF
//!   (`keepalive_stream`, 120 s by default).
//! - UDP flows (§4.4.2): the ping is a STUN Binding request (RFC 5389)
//!   over the SIP 5-tuple, with a fresh 96-bit transaction id from the
//!   seeded generator, sent again 0.5, 1.5, 3.5, 7.5 s … after (RFC 5389
//!   §7.2.1's doubling from 500 ms) while the pong timeout has not passed;
//!   the pong is a Binding success with that id and an XOR-MAPPED-ADDRESS
//!   (decoded in `stun.rs`). The first mapped address is remembered; a
//!   later answer with another one means the NAT rebound: the flow has
//!   failed (`StunChanged`). No answer in time: `StunTimeout`. Only when
//!   outbound is in force or the registrar sent a `Flow-Timer`
//!   (`keepalive_datagram`, 30 s, otherwise): a registrar that did not
//!   take part in outbound is not assumed to answer STUN on its SIP port,
//!   and its flow would fail at every interval.
//!
//! A flow the account leaves on purpose is reported `Closed` with its
//! reason (`Unregistered`, `Replaced` by a newer flow, `Local`: closed for
//! a network change or shutdown); a lost one `Failed`.
//!
//! A failed flow is closed (a connection: the driver is asked through
//! [`Endpoint::poll_close`]; a UDP flow is only forgotten) and the account
//! registers again at once over a new one, as for any flow that dies —
//! after a NAT rebinding that REGISTER's answer shows the new public
//! address (`received`/`rport`) and the Contact is rewritten. Each step is
//! a [`FlowEvent`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_sip::Message;

use crate::endpoint::{Endpoint, Event};
use crate::flow::{FlowCloseReason, FlowId, Transport};
use crate::registration::AccountId;
use crate::timers::{TimerKind, TimerOwner};

/// The longest keep-alive interval taken from a `Flow-Timer` (a huge value
/// would let a NAT forget the flow).
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// A flow's state, as reported (`flow` of `docs/events.md` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// The account registered over it: keep-alives start.
    Up,
    /// A pong came back.
    KeepaliveOk,
    /// It failed (no pong, closed, reset …): a new one is being made.
    Failed,
    /// The account stopped using it on purpose (unregistered, closed for
    /// a network change, replaced by a newer flow).
    Closed,
}

impl FlowState {
    /// The name used in JSON events.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Up => "up",
            FlowState::KeepaliveOk => "keepalive_ok",
            FlowState::Failed => "failed",
            FlowState::Closed => "closed",
        }
    }
}

/// What happened to an account's flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEvent {
    /// The account.
    pub account: AccountId,
    /// The flow.
    pub flow: FlowId,
    /// The account's `reg-id` (RFC 5626), when it is one flow of an
    /// outbound flow set.
    pub reg_id: Option<u32>,
    /// What happened.
    pub state: FlowState,
    /// Why it failed or was closed.
    pub reason: Option<FlowCloseReason>,
    /// The transport.
    pub transport: Transport,
    /// Our end, when known.
    pub local: Option<SocketAddr>,
    /// The far end.
    pub remote: SocketAddr,
    /// The registrar's `Flow-Timer`, if it sent one.
    pub flow_timer: Option<u32>,
}

/// Whether a flow ended because we chose so (then it is reported
/// `closed`, else `failed`).
fn is_deliberate(reason: FlowCloseReason) -> bool {
    matches!(
        reason,
        FlowCloseReason::Local | FlowCloseReason::Unregistered | FlowCloseReason::Replaced
    )
}

/// The first STUN retransmission comes this long after the request
/// (RFC 5389 §7.2.1's RTO), each later one twice as long after the last.
const STUN_RTO: Duration = Duration::from_millis(500);

/// One account's keep-alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepAlive {
    flow: FlowId,
    interval: Duration,
    flow_timer: Option<u32>,
    /// A ping is out, unanswered.
    awaiting: bool,
    /// A missing pong fails the flow: the far end is known to answer
    /// (outbound in force, or it sent a `Flow-Timer`).
    watchdog: bool,
    /// UDP: the STUN Binding request out (its transaction id) …
    stun: Option<u128>,
    /// … and how often it was sent again.
    retransmits: u32,
    /// UDP: the address the registrar first saw us as.
    mapped: Option<SocketAddr>,
    /// What the flow was (its events still say so once it is gone).
    transport: Transport,
    local: Option<SocketAddr>,
    remote: SocketAddr,
}

/// The accounts' keep-alives, found by account and by flow (a pong or a
/// flow's end costs a look-up and the flow's own accounts, not a scan of
/// every account).
#[derive(Debug, Default)]
pub(crate) struct KeepAliveTable {
    by_account: HashMap<AccountId, KeepAlive>,
    by_flow: HashMap<FlowId, Vec<AccountId>>,
    /// Keep-alive entries looked at to find a flow's accounts (tests count
    /// the work a pong costs).
    visited: u64,
}

impl KeepAliveTable {
    pub(crate) fn get(&self, account: &AccountId) -> Option<&KeepAlive> {
        self.by_account.get(account)
    }

    fn get_mut(&mut self, account: &AccountId) -> Option<&mut KeepAlive> {
        self.by_account.get_mut(account)
    }

    fn insert(&mut self, account: AccountId, k: KeepAlive) {
        let flow = k.flow;
        if let Some(old) = self.by_account.insert(account, k) {
            if old.flow == flow {
                return;
            }
            self.unindex(old.flow, account);
        }
        self.by_flow.entry(flow).or_default().push(account);
    }

    fn remove(&mut self, account: &AccountId) -> Option<KeepAlive> {
        let k = self.by_account.remove(account)?;
        self.unindex(k.flow, *account);
        if self.by_account.is_empty() {
            self.by_account.shrink_to(16);
            self.by_flow.shrink_to(16);
        }
        Some(k)
    }

    fn unindex(&mut self, flow: FlowId, account: AccountId) {
        if let Some(accounts) = self.by_flow.get_mut(&flow) {
            accounts.retain(|a| *a != account);
            if accounts.is_empty() {
                self.by_flow.remove(&flow);
            }
        }
    }

    /// The accounts whose keep-alive runs on `flow`.
    fn on_flow(&mut self, flow: FlowId) -> Vec<AccountId> {
        let found = self.by_flow.get(&flow).cloned().unwrap_or_default();
        self.visited += found.len() as u64;
        found
    }
}

impl Endpoint {
    /// The account registered over `flow` (its 2xx is `resp`): keep-alives
    /// on a stream flow start, or go on with the interval the 2xx gives.
    pub(crate) fn keepalive_start(
        &mut self,
        now: Instant,
        account: AccountId,
        flow: FlowId,
        resp: &Message,
        configured: Option<Duration>,
    ) {
        let Some(f) = self.flows.get(flow) else {
            return;
        };
        let (transport, remote) = (f.transport, f.remote);
        let local = self.flow_local(flow);
        let udp = !transport.is_reliable();
        let flow_timer = resp.flow_timer().and_then(Result::ok);
        // a registrar that takes part in outbound answers pings (RFC 5626
        // §4.4.1) and STUN on its SIP port (§5.4); a plain RFC 3261 one
        // need not
        let answers = self.account_outbound(account) || flow_timer.is_some_and(|s| s > 0);
        let configured = if udp {
            // STUN only towards one that answers: a Binding request does
            // nothing else
            if !answers {
                return;
            }
            self.account_keepalive_datagram(account)
        } else {
            configured
        };
        // `Flow-Timer: 0` says nothing useful: the configured time
        let interval = match flow_timer.filter(|s| *s > 0) {
            Some(s) => Duration::from_secs(u64::from(s)).min(MAX_INTERVAL),
            None => match configured {
                Some(d) if !d.is_zero() => d,
                _ => return,
            },
        };
        let prev = self.keepalives.get(&account).copied();
        let fresh = prev.is_none_or(|k| k.flow != flow);
        if prev.is_some() && fresh {
            // the account left its flow for this one
            self.keepalive_closed(account, FlowCloseReason::Replaced);
        }
        let prev = prev.filter(|k| k.flow == flow);
        // (a refresh over the same flow keeps the mapped address learnt)
        let mapped = prev.and_then(|k| k.mapped);
        if let Some(tid) = prev.and_then(|k| k.stun) {
            self.stun_forget(tid);
        }
        let owner = TimerOwner::Account(account.0);
        self.timers.cancel(owner, TimerKind::PongTimeout);
        self.timers.cancel(owner, TimerKind::StunRetransmit);
        self.keepalives.insert(
            account,
            KeepAlive {
                flow,
                interval,
                flow_timer,
                awaiting: false,
                watchdog: answers,
                stun: None,
                retransmits: 0,
                mapped,
                transport,
                local,
                remote,
            },
        );
        if fresh {
            self.flow_event(account, FlowState::Up, None);
        }
        self.schedule_ping(now, account);
    }

    fn schedule_ping(&mut self, now: Instant, account: AccountId) {
        let Some(k) = self.keepalives.get(&account) else {
            return;
        };
        // uniformly within 80–100 % of the interval (RFC 5626 §4.4.1)
        let factor = 0.8 + 0.2 * self.rng.unit();
        let at = now + k.interval.mul_f64(factor);
        self.timers
            .set(TimerOwner::Account(account.0), TimerKind::KeepAlive, at);
    }

    /// A keep-alive timer of `account` fired.
    pub(crate) fn keepalive_timer(&mut self, now: Instant, account: AccountId, kind: TimerKind) {
        let Some(k) = self.keepalives.get(&account).copied() else {
            return;
        };
        // the account moved to another flow (or none): this one is not
        // its to keep any more
        if self.account_flow(account) != Some(k.flow) || self.flows.get(k.flow).is_none() {
            self.keepalive_closed(account, FlowCloseReason::Replaced);
            return;
        }
        let owner = TimerOwner::Account(account.0);
        let udp = self
            .flows
            .get(k.flow)
            .is_some_and(|f| !f.transport.is_reliable());
        match kind {
            TimerKind::KeepAlive => {
                let stun = if udp {
                    if let Some(old) = k.stun {
                        self.stun_forget(old);
                    }
                    let tid = self.stun_transaction(account);
                    self.transmit_keepalive(k.flow, crate::stun::binding_request(tid));
                    self.timers
                        .set(owner, TimerKind::StunRetransmit, now + STUN_RTO);
                    Some(tid)
                } else {
                    self.transmit_keepalive(k.flow, Bytes::from_static(b"\r\n\r\n"));
                    None
                };
                if let Some(k) = self.keepalives.get_mut(&account) {
                    k.awaiting = true;
                    k.stun = stun;
                    k.retransmits = 0;
                }
                if k.watchdog {
                    let pong_timeout = self.account_pong_timeout(account);
                    self.timers
                        .set(owner, TimerKind::PongTimeout, now + pong_timeout);
                } else {
                    // CRLF pings only to keep a NAT binding open: the next
                    // one whether a pong comes or not
                    self.schedule_ping(now, account);
                }
            }
            TimerKind::StunRetransmit => {
                // RFC 5389 §7.2.1: the same request again, each wait twice
                // the last, while the answer may still come in time
                let Some(tid) = k.stun.filter(|_| k.awaiting) else {
                    return;
                };
                self.transmit_keepalive(k.flow, crate::stun::binding_request(tid));
                let retransmits = k.retransmits.saturating_add(1);
                if let Some(k) = self.keepalives.get_mut(&account) {
                    k.retransmits = retransmits;
                }
                let next = now + STUN_RTO * 2u32.saturating_pow(retransmits.min(16));
                if self
                    .timers
                    .deadline(owner, TimerKind::PongTimeout)
                    .is_some_and(|deadline| next < deadline)
                {
                    self.timers.set(owner, TimerKind::StunRetransmit, next);
                }
            }
            TimerKind::PongTimeout if k.awaiting => {
                // no pong: the flow has failed (RFC 5626 §4.4.1, §4.4.2)
                let reason = match k.stun {
                    Some(tid) => {
                        self.stun_forget(tid);
                        FlowCloseReason::StunTimeout
                    }
                    None => FlowCloseReason::KeepAliveTimeout,
                };
                self.timers.cancel(owner, TimerKind::StunRetransmit);
                self.flow_failed(now, k.flow, reason);
            }
            _ => {}
        }
    }

    /// A pong (CRLF) arrived on `flow`.
    pub fn handle_pong(&mut self, now: Instant, flow: FlowId) {
        self.clock = Some(now);
        for account in self.keepalives.on_flow(flow) {
            let watchdog = match self.keepalives.get_mut(&account) {
                Some(k) if k.awaiting => {
                    k.awaiting = false;
                    k.watchdog
                }
                _ => continue,
            };
            self.flow_event(account, FlowState::KeepaliveOk, None);
            if watchdog {
                self.timers
                    .cancel(TimerOwner::Account(account.0), TimerKind::PongTimeout);
                self.schedule_ping(now, account);
            }
        }
    }

    /// Whether an answer from `remote` can be the one to `account`'s
    /// STUN keep-alive: the flow's far end sent it.
    pub(crate) fn keepalive_came_from(&self, account: AccountId, remote: SocketAddr) -> bool {
        self.keepalives
            .get(&account)
            .and_then(|k| self.flows.get(k.flow))
            .is_some_and(|f| f.remote == remote)
    }

    /// The answer to `account`'s STUN keep-alive came, saying the
    /// registrar sees us as `mapped`: the flow lives — unless the address
    /// changed, then the NAT rebound and the flow has failed.
    pub(crate) fn keepalive_answered(
        &mut self,
        now: Instant,
        account: AccountId,
        mapped: SocketAddr,
    ) {
        let Some(k) = self.keepalives.get(&account).copied() else {
            return;
        };
        if self.account_flow(account) != Some(k.flow) || !k.awaiting {
            return;
        }
        let owner = TimerOwner::Account(account.0);
        self.timers.cancel(owner, TimerKind::PongTimeout);
        self.timers.cancel(owner, TimerKind::StunRetransmit);
        if let Some(k) = self.keepalives.get_mut(&account) {
            k.awaiting = false;
            k.stun = None;
        }
        match k.mapped {
            Some(before) if before != mapped => {
                self.flow_failed(now, k.flow, FlowCloseReason::StunChanged);
            }
            _ => {
                if let Some(k) = self.keepalives.get_mut(&account) {
                    k.mapped = Some(mapped);
                }
                self.flow_event(account, FlowState::KeepaliveOk, None);
                self.schedule_ping(now, account);
            }
        }
    }

    /// The address the registrar saw an account's UDP flow as, by its last
    /// STUN answer.
    pub fn keepalive_mapped(&self, account: AccountId) -> Option<SocketAddr> {
        self.keepalives.get(&account).and_then(|k| k.mapped)
    }

    /// The application closes a flow (an edge proxy's idle clean-up): a
    /// connection is handed to the driver to close ([`Endpoint::poll_close`]),
    /// a UDP flow is only forgotten, and what used it is told at once.
    pub fn close_flow(&mut self, now: Instant, flow: FlowId, reason: FlowCloseReason) {
        self.flow_failed(now, flow, reason);
    }

    /// A flow of ours failed (no pong, a keep-alive decided it): it is
    /// closed, and what used it learns so at once (accounts register again
    /// over a new flow).
    pub(crate) fn flow_failed(&mut self, now: Instant, flow: FlowId, reason: FlowCloseReason) {
        // a connection is closed by the driver; a UDP flow has nothing to
        // close (its socket is the listener's)
        if self
            .flows
            .get(flow)
            .is_some_and(|f| f.transport.is_reliable())
        {
            self.closes.push_back((flow, reason));
        }
        self.handle_flow_closed(now, flow, reason);
    }

    /// A flow an account used is gone: report it, stop its keep-alive.
    pub(crate) fn keepalive_flow_gone(&mut self, flow: FlowId, reason: FlowCloseReason) {
        // closed on purpose (a network change, shutdown) or lost
        let state = if is_deliberate(reason) {
            FlowState::Closed
        } else {
            FlowState::Failed
        };
        for account in self.keepalives.on_flow(flow) {
            self.flow_event(account, state, Some(reason));
            self.keepalive_stop(account);
        }
    }

    /// The account stops using its keep-alive flow on purpose (`reason`:
    /// unregistered, replaced by a newer flow): reported `closed`, its
    /// keep-alive stopped.
    pub(crate) fn keepalive_closed(&mut self, account: AccountId, reason: FlowCloseReason) {
        if self.keepalives.get(&account).is_none() {
            return;
        }
        self.flow_event(account, FlowState::Closed, Some(reason));
        self.keepalive_stop(account);
    }

    pub(crate) fn keepalive_stop(&mut self, account: AccountId) {
        if let Some(tid) = self.keepalives.remove(&account).and_then(|k| k.stun) {
            self.stun_forget(tid);
        }
        let owner = TimerOwner::Account(account.0);
        self.timers.cancel(owner, TimerKind::KeepAlive);
        self.timers.cancel(owner, TimerKind::PongTimeout);
        self.timers.cancel(owner, TimerKind::StunRetransmit);
    }

    fn transmit_keepalive(&mut self, flow: FlowId, payload: Bytes) {
        if let Some(f) = self.flows.get(flow) {
            self.transmits.push_back(crate::endpoint::Transmit {
                flow,
                transport: f.transport,
                local: f.local,
                remote: f.remote,
                payload,
            });
        }
    }

    /// Our end of a flow, when known (a UDP flow sends from the listener
    /// its requests name).
    fn flow_local(&self, flow: FlowId) -> Option<SocketAddr> {
        let f = self.flows.get(flow)?;
        f.local.or_else(|| {
            (!f.transport.is_reliable()).then(|| self.local_for(flow, f.transport, None))
        })
    }

    /// Reports what happened to `flow`, a flow of `account` with no
    /// keep-alive running (a datagram flow without one, say).
    pub(crate) fn flow_event_on(
        &mut self,
        account: AccountId,
        flow: FlowId,
        state: FlowState,
        reason: Option<FlowCloseReason>,
    ) {
        let Some(f) = self.flows.get(flow) else {
            return;
        };
        let (transport, remote) = (f.transport, f.remote);
        let local = self.flow_local(flow);
        self.events.push_back(Event::Flow(FlowEvent {
            account,
            flow,
            reg_id: self.account_reg_id(account),
            state,
            reason,
            transport,
            local,
            remote,
            flow_timer: None,
        }));
    }

    /// Reports what happened to `account`'s keep-alive flow: the flow as
    /// it is, or — once forgotten (closed, failed) — as it was.
    pub(crate) fn flow_event(
        &mut self,
        account: AccountId,
        state: FlowState,
        reason: Option<FlowCloseReason>,
    ) {
        let Some(k) = self.keepalives.get(&account).copied() else {
            return;
        };
        let (transport, local, remote) = match self.flows.get(k.flow) {
            Some(f) => (f.transport, self.flow_local(k.flow).or(k.local), f.remote),
            None => (k.transport, k.local, k.remote),
        };
        self.events.push_back(Event::Flow(FlowEvent {
            account,
            flow: k.flow,
            reg_id: self.account_reg_id(account),
            state,
            reason,
            transport,
            local,
            remote,
            flow_timer: k.flow_timer,
        }));
    }

    /// The next flow the driver must close (a failed one), and why.
    pub fn poll_close(&mut self) -> Option<(FlowId, FlowCloseReason)> {
        self.closes.pop_front()
    }

    /// The keep-alive interval of an account's flow, if it has one running.
    pub fn keepalive_interval(&self, account: AccountId) -> Option<Duration> {
        self.keepalives.get(&account).map(|k| k.interval)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::config::Config;

    fn keepalive(flow: FlowId, awaiting: bool) -> KeepAlive {
        KeepAlive {
            flow,
            interval: Duration::from_secs(120),
            flow_timer: None,
            awaiting,
            watchdog: true,
            stun: None,
            retransmits: 0,
            mapped: None,
            transport: Transport::Tcp,
            local: None,
            remote: SocketAddr::new([127, 0, 0, 2].into(), 5060),
        }
    }

    /// Issue 12: a pong used to scan every account's keep-alive, so a peer
    /// flooding CRLFs at one of 10,000 registration flows cost
    /// 10,000 × CRLFs. Now a pong looks only at the keep-alives of its own
    /// flow.
    #[test]
    #[allow(clippy::disallowed_methods)] // any base instant will do in a test
    fn a_pong_visits_only_the_keepalives_of_its_flow() {
        let now = Instant::now();
        let mut ep = Endpoint::new(Config::default());
        let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let accounts = 10_000u32;
        let mut flows = Vec::new();
        for i in 0..accounts {
            let remote = SocketAddr::new([127, 0, 0, 2].into(), 10_000 + (i as u16));
            let flow = ep.handle_flow_accepted(Transport::Tcp, local, remote);
            flows.push(flow);
            ep.keepalives.insert(AccountId(i), keepalive(flow, true));
        }
        // two more accounts on the first flow
        for i in accounts..accounts + 2 {
            ep.keepalives
                .insert(AccountId(i), keepalive(flows[0], true));
        }
        let flood = 10_000u64;
        for _ in 0..flood {
            ep.handle_pong(now, flows[0]);
        }
        // the three accounts on that flow were looked at per pong, no other
        assert_eq!(ep.keepalives.visited, 3 * flood);
        // the first pong answered each of them once, the others nothing
        let oks = std::iter::from_fn(|| ep.poll_event())
            .filter(|e| matches!(e, Event::Flow(f) if f.state == FlowState::KeepaliveOk))
            .count();
        assert_eq!(oks, 3);
        assert!(ep.keepalives.get(&AccountId(1)).unwrap().awaiting);
        assert!(!ep.keepalives.get(&AccountId(0)).unwrap().awaiting);
        // a flow's failure finds its accounts the same way
        ep.keepalives.visited = 0;
        ep.handle_flow_closed(now, flows[7], FlowCloseReason::Reset);
        assert_eq!(ep.keepalives.visited, 1);
        assert!(ep.keepalives.get(&AccountId(7)).is_none());
    }

    /// Issue 12 (bench keepalive: each ping was a wake-up of its own):
    /// pings due within the slack of the first one are answered by one
    /// deadline, but a timer of another kind in that window comes first,
    /// and a first timer of another kind is never delayed.
    #[test]
    #[allow(clippy::disallowed_methods)] // any base instant will do in a test
    fn keepalive_pings_coalesce_within_the_slack_and_nothing_else_waits() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let slack = Duration::from_millis(20);
        let mut ep = Endpoint::new(Config::default());
        assert_eq!(ep.poll_timeout_coalesced(slack), None);
        for (i, at) in [0, 5, 19, 40].into_iter().enumerate() {
            ep.timers
                .set(TimerOwner::Account(i as u32), TimerKind::KeepAlive, ms(at));
        }
        let (at, why) = ep.poll_timeout_coalesced(slack).unwrap();
        assert_eq!((at, why.kind), (ms(20), TimerKind::KeepAlive));
        // plain poll_timeout is unchanged
        assert_eq!(ep.poll_timeout().unwrap().0, ms(0));
        // a pong timeout inside the window is not delayed
        ep.timers
            .set(TimerOwner::Account(9), TimerKind::PongTimeout, ms(7));
        let (at, why) = ep.poll_timeout_coalesced(slack).unwrap();
        assert_eq!((at, why.kind), (ms(7), TimerKind::PongTimeout));
        // nor a first timer that is no ping
        ep.timers
            .set(TimerOwner::Account(9), TimerKind::PongTimeout, ms(0));
        ep.timers
            .cancel(TimerOwner::Account(0), TimerKind::KeepAlive);
        let (at, why) = ep.poll_timeout_coalesced(slack).unwrap();
        assert_eq!((at, why.kind), (ms(0), TimerKind::PongTimeout));
    }
}
