//! Keep-alives on an account's stream flow (RFC 5626 §4.4.1): a CRLFCRLF
//! ping at a random 80–100 % of the interval — the registrar's
//! `Flow-Timer`, else the account's `keepalive_stream` — and a pong
//! watchdog: no CRLF back within `pong_timeout` and the flow has failed.
//! A failed flow is closed (the driver is asked through
//! [`Endpoint::poll_close`]) and the account registers again at once over
//! a new one, as for any flow that dies. Each step is a [`FlowEvent`].
//!
//! (UDP flows are kept by STUN, RFC 5626 §4.4.2: not built yet.)

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

/// A flow's state, as reported (`cli.md`'s `flow` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// The account registered over it: keep-alives start.
    Up,
    /// A pong came back.
    KeepaliveOk,
    /// It failed (no pong, closed, reset …): a new one is being made.
    Failed,
}

impl FlowState {
    /// The name used in JSON events.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Up => "up",
            FlowState::KeepaliveOk => "keepalive_ok",
            FlowState::Failed => "failed",
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
    /// Why it failed.
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

/// One account's keep-alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepAlive {
    flow: FlowId,
    interval: Duration,
    flow_timer: Option<u32>,
    /// A ping is out, unanswered.
    awaiting: bool,
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
        if !f.transport.is_reliable() {
            return;
        }
        let flow_timer = resp.flow_timer().and_then(Result::ok);
        // `Flow-Timer: 0` says nothing useful: the configured time
        let interval = match flow_timer.filter(|s| *s > 0) {
            Some(s) => Duration::from_secs(u64::from(s)).min(MAX_INTERVAL),
            None => match configured {
                Some(d) if !d.is_zero() => d,
                _ => return,
            },
        };
        let fresh = self.keepalives.get(&account).is_none_or(|k| k.flow != flow);
        self.keepalives.insert(
            account,
            KeepAlive {
                flow,
                interval,
                flow_timer,
                awaiting: false,
            },
        );
        if fresh {
            self.flow_event(account, flow, FlowState::Up, None);
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
            self.keepalive_stop(account);
            return;
        }
        match kind {
            TimerKind::KeepAlive => {
                self.transmit_ping(k.flow);
                if let Some(k) = self.keepalives.get_mut(&account) {
                    k.awaiting = true;
                }
                let pong_timeout = self.account_pong_timeout(account);
                self.timers.set(
                    TimerOwner::Account(account.0),
                    TimerKind::PongTimeout,
                    now + pong_timeout,
                );
            }
            TimerKind::PongTimeout if k.awaiting => {
                // no pong: the flow has failed (RFC 5626 §4.4.1)
                self.flow_failed(now, k.flow, FlowCloseReason::KeepAliveTimeout);
            }
            _ => {}
        }
    }

    /// A pong (CRLF) arrived on `flow`.
    pub fn handle_pong(&mut self, now: Instant, flow: FlowId) {
        self.clock = Some(now);
        let accounts: Vec<AccountId> = self
            .keepalives
            .iter()
            .filter(|(_, k)| k.flow == flow && k.awaiting)
            .map(|(a, _)| *a)
            .collect();
        for account in accounts {
            if let Some(k) = self.keepalives.get_mut(&account) {
                k.awaiting = false;
            }
            self.timers
                .cancel(TimerOwner::Account(account.0), TimerKind::PongTimeout);
            self.flow_event(account, flow, FlowState::KeepaliveOk, None);
            self.schedule_ping(now, account);
        }
    }

    /// A flow of ours failed (no pong, a keep-alive decided it): it is
    /// closed, and what used it learns so at once (accounts register again
    /// over a new flow).
    pub(crate) fn flow_failed(&mut self, now: Instant, flow: FlowId, reason: FlowCloseReason) {
        self.closes.push_back(flow);
        self.handle_flow_closed(now, flow, reason);
    }

    /// A flow an account used is gone: report it, stop its keep-alive.
    pub(crate) fn keepalive_flow_gone(&mut self, flow: FlowId, reason: FlowCloseReason) {
        let accounts: Vec<AccountId> = self
            .keepalives
            .iter()
            .filter(|(_, k)| k.flow == flow)
            .map(|(a, _)| *a)
            .collect();
        for account in accounts {
            self.flow_event(account, flow, FlowState::Failed, Some(reason));
            self.keepalive_stop(account);
        }
    }

    pub(crate) fn keepalive_stop(&mut self, account: AccountId) {
        self.keepalives.remove(&account);
        self.timers
            .cancel(TimerOwner::Account(account.0), TimerKind::KeepAlive);
        self.timers
            .cancel(TimerOwner::Account(account.0), TimerKind::PongTimeout);
    }

    fn transmit_ping(&mut self, flow: FlowId) {
        if let Some(f) = self.flows.get(flow) {
            self.transmits.push_back(crate::endpoint::Transmit {
                flow,
                transport: f.transport,
                local: f.local,
                remote: f.remote,
                payload: Bytes::from_static(b"\r\n\r\n"),
            });
        }
    }

    pub(crate) fn flow_event(
        &mut self,
        account: AccountId,
        flow: FlowId,
        state: FlowState,
        reason: Option<FlowCloseReason>,
    ) {
        let Some(f) = self.flows.get(flow) else {
            // (a flow already forgotten: what it was is still known to
            // the keep-alive)
            if let (Some(k), Some(remote)) = (
                self.keepalives.get(&account),
                self.account_registrar(account),
            ) {
                let ev = FlowEvent {
                    account,
                    flow,
                    reg_id: self.account_reg_id(account),
                    state,
                    reason,
                    transport: self.account_transport(account).unwrap_or(Transport::Tcp),
                    local: None,
                    remote,
                    flow_timer: k.flow_timer,
                };
                self.events.push_back(Event::Flow(ev));
            }
            return;
        };
        let ev = FlowEvent {
            account,
            flow,
            reg_id: self.account_reg_id(account),
            state,
            reason,
            transport: f.transport,
            local: f.local,
            remote: f.remote,
            flow_timer: self.keepalives.get(&account).and_then(|k| k.flow_timer),
        };
        self.events.push_back(Event::Flow(ev));
    }

    /// The next flow the driver must close (a failed one).
    pub fn poll_close(&mut self) -> Option<FlowId> {
        self.closes.pop_front()
    }

    /// The keep-alive interval of an account's flow, if it has one running.
    pub fn keepalive_interval(&self, account: AccountId) -> Option<Duration> {
        self.keepalives.get(&account).map(|k| k.interval)
    }
}
