//! The change itself: a state machine that walks the stages in order,
//! asks the driver for socket work one action at a time
//! ([`Endpoint::poll_mobility`], answered by [`Endpoint::handle_mobility`])
//! and reports each stage when its effect is confirmed.
//!
//! Stages: `started` → `shutdown_transports` (the driver closed the stale
//! connections) → `restart_listener` per listener (opened at the new
//! address on its own port; a taken port falls back to another one and
//! says so) → per account `shutdown_registration_flow` (its flow closed)
//! and `update_contact` (on the REGISTER's 2xx) → per call
//! `refresh_calls` (on the refresh's 2xx) or `hangup_calls` → old
//! listeners closed or left to linger → `completed` once everything
//! settled (or timed out).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::dialog::CallId;
use crate::endpoint::{CoreError, Endpoint, Event};
use crate::flow::{FlowId, Transport};
use crate::registration::AccountId;
use crate::timers::{TimerKind, TimerOwner};

use super::accounts::AccountMoveState;
use super::calls::CallWait;
use super::params::IpChangeParams;
use super::report::{ChangeTrigger, IpChangeError, IpChangeReport, IpChangeStage, ListenFailure};
use super::view::{ListenerView, NetworkView};

/// Socket work the driver does for a change; answer each with
/// [`Endpoint::handle_mobility`] before polling the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MobilityAction {
    /// Close these stream connections (the view's ids); answer `Done`.
    CloseConnections(Vec<u64>),
    /// Close every stream connection; answer `Done`.
    CloseAllStreams,
    /// Open a listener, after waiting `after`; answer `Listening` or
    /// `ListenFailed`.
    Listen {
        /// Its transport.
        transport: Transport,
        /// Where.
        addr: SocketAddr,
        /// Wait this long first (a retry).
        after: Duration,
    },
    /// Re-open a listener where it is (a change in place); answer
    /// `Listening` or `ListenFailed`.
    RestartListener {
        /// The view's id.
        listener: u64,
    },
    /// Close the connection of this flow (an account's registration
    /// flow); answer `Done`.
    CloseFlow(FlowId),
    /// Open a stream connection whose local address becomes the
    /// account's Contact (no listener of its transport); answer
    /// `Connected` or `ConnectFailed`.
    Connect {
        /// The transport.
        transport: Transport,
        /// The registrar.
        remote: SocketAddr,
        /// The local address (port 0).
        local: SocketAddr,
        /// TLS: the registrar's name, for the certificate.
        server_name: Option<crate::ServerName>,
    },
    /// Take back a listener left lingering by an earlier change (the
    /// change returns to its address): it is a listener again, and is not
    /// to be closed when its grace ends; answer `Done`.
    ReclaimListener(u64),
    /// Close a listener now; answer `Done`.
    CloseListener(u64),
    /// Let an old UDP listener receive for `grace` more (answers to
    /// requests sent before the change), then close it; answer `Done`.
    RetireListener {
        /// The view's id.
        listener: u64,
        /// How long.
        grace: Duration,
    },
}

/// The result of a [`MobilityAction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MobilityResult {
    /// Done.
    Done,
    /// The listener is open.
    Listening(ListenerView),
    /// It could not be opened.
    ListenFailed(ListenFailure),
    /// The connection is open, from this address.
    Connected(SocketAddr),
    /// It could not be opened.
    ConnectFailed,
}

#[derive(Debug)]
pub(super) enum Step {
    Transports,
    Listeners,
    Accounts,
    Calls,
    Retire,
    Confirm,
}

/// What the outstanding action was for.
#[derive(Debug)]
pub(super) enum Waiting {
    Shutdown,
    Listen {
        old: ListenerView,
        addr: SocketAddr,
        attempt: u8,
    },
    Restart {
        old: ListenerView,
    },
    Reclaim {
        old: ListenerView,
        lingering: ListenerView,
    },
    AccountFlow(AccountMoveState),
    AccountConnect(AccountMoveState),
    Retire,
}

/// What a report is about (all optional).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Scope {
    pub(super) account: Option<AccountId>,
    pub(super) call: Option<CallId>,
    pub(super) transport: Option<Transport>,
    pub(super) address: Option<SocketAddr>,
}

#[derive(Debug)]
pub(crate) struct Run {
    pub(super) trigger: ChangeTrigger,
    pub(super) params: IpChangeParams,
    pub(super) started: Instant,
    pub(super) view: NetworkView,
    pub(super) step: Step,
    pub(super) action: Option<MobilityAction>,
    pub(super) waiting: Option<Waiting>,
    pub(super) old: Vec<ListenerView>,
    pub(super) queue: VecDeque<ListenerView>,
    pub(super) new_points: Vec<ListenerView>,
    pub(super) fallback: Option<IpAddr>,
    pub(super) ip: IpAddr,
    pub(super) accounts: VecDeque<AccountId>,
    pub(super) confirm_accounts: HashMap<AccountId, (Transport, SocketAddr)>,
    pub(super) confirm_calls: HashMap<CallId, CallWait>,
    /// Calls to repair once an account registered over its new flow (a
    /// flow failure): (the account, the call, the `Replaces` fallback).
    pub(super) after_register: Vec<(AccountId, CallId, bool)>,
    pub(super) failed: usize,
}

impl Run {
    pub(super) fn new(params: IpChangeParams, started: Instant, view: NetworkView) -> Run {
        Run {
            trigger: ChangeTrigger::NetworkChange,
            params,
            started,
            view,
            step: Step::Transports,
            action: None,
            waiting: None,
            old: Vec::new(),
            queue: VecDeque::new(),
            new_points: Vec::new(),
            fallback: None,
            ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            accounts: VecDeque::new(),
            confirm_accounts: HashMap::new(),
            confirm_calls: HashMap::new(),
            after_register: Vec::new(),
            failed: 0,
        }
    }

    pub(super) fn ask(&mut self, action: MobilityAction, waiting: Waiting) {
        self.action = Some(action);
        self.waiting = Some(waiting);
    }

    pub(super) fn port_for(&self, t: Transport) -> u16 {
        self.new_points
            .iter()
            .find(|i| i.transport == t)
            .or(self.new_points.first())
            .map_or(0, |i| i.local.port())
    }
}

impl Endpoint {
    /// Starts a change (see the module notes): reports `started`, and
    /// then asks for socket work through [`Endpoint::poll_mobility`].
    /// A change still waiting for its confirmations is superseded (its
    /// unsettled stages report [`IpChangeError::Superseded`]). Refused
    /// (`InvalidState`) while a change is still doing its socket work:
    /// the driver merges changes asked for meanwhile.
    pub fn start_ip_change(
        &mut self,
        now: Instant,
        params: IpChangeParams,
        view: NetworkView,
    ) -> Result<(), CoreError> {
        self.supersede(now)?;
        let run = Run::new(params, now, view);
        self.report(&run, now, IpChangeStage::Started, Ok(()), Scope::default());
        // an address this host does not have: nothing could listen or
        // send there (a Contact on it would carry port 0)
        if let Some(ip) = run.params.ip.filter(|ip| !ip.is_unspecified()) {
            if !run.view.is_local(ip) {
                let err = IpChangeError::NotLocal(ip);
                self.report(
                    &run,
                    now,
                    IpChangeStage::Completed,
                    Err(err),
                    Scope::default(),
                );
                return Ok(());
            }
        }
        // requests dying on the old path must not end calls
        self.begin_network_change(now);
        self.mobility.run = Some(run);
        self.advance(now);
        Ok(())
    }

    /// The next socket action of the change in progress.
    pub fn poll_mobility(&mut self) -> Option<MobilityAction> {
        self.mobility.run.as_mut()?.action.take()
    }

    /// Whether a change is doing socket work (more actions will come).
    pub fn mobility_busy(&self) -> bool {
        self.mobility
            .run
            .as_ref()
            .is_some_and(|r| r.waiting.is_some() || r.action.is_some())
    }

    /// The result of the last [`MobilityAction`].
    pub fn handle_mobility(&mut self, now: Instant, result: MobilityResult) {
        let Some(mut run) = self.mobility.run.take() else {
            return;
        };
        run.action = None;
        if let Some(waiting) = run.waiting.take() {
            self.on_result(now, &mut run, waiting, result);
        }
        self.mobility.run = Some(run);
        self.advance(now);
    }

    /// Ends a change still waiting for confirmations.
    pub(super) fn supersede(&mut self, now: Instant) -> Result<(), CoreError> {
        let Some(run) = self.mobility.run.take() else {
            return Ok(());
        };
        if run.waiting.is_some() || run.action.is_some() {
            self.mobility.run = Some(run);
            return Err(CoreError::InvalidState);
        }
        self.timers
            .cancel(TimerOwner::Mobility, TimerKind::MobilitySettle);
        self.fail_all(now, run, IpChangeError::Superseded, false);
        Ok(())
    }

    pub(super) fn report(
        &mut self,
        run: &Run,
        now: Instant,
        stage: IpChangeStage,
        status: Result<(), IpChangeError>,
        scope: Scope,
    ) {
        self.events.push_back(Event::IpChange(IpChangeReport {
            stage,
            trigger: run.trigger,
            status,
            elapsed: now.saturating_duration_since(run.started),
            at: now,
            account: scope.account,
            call: scope.call,
            transport: scope.transport,
            address: scope.address,
        }));
    }

    /// Walks the stages until one needs the driver or a confirmation.
    pub(super) fn advance(&mut self, now: Instant) {
        while let Some(mut run) = self.mobility.run.take() {
            if run.action.is_some() || run.waiting.is_some() {
                self.mobility.run = Some(run);
                return;
            }
            let done = match run.step {
                Step::Transports => {
                    self.step_transports(&mut run);
                    false
                }
                Step::Listeners => {
                    self.step_listener(now, &mut run);
                    false
                }
                Step::Accounts => {
                    self.step_account(now, &mut run);
                    false
                }
                Step::Calls => {
                    self.step_calls(now, &mut run);
                    false
                }
                Step::Retire => {
                    self.step_retire(&mut run);
                    false
                }
                Step::Confirm => true,
            };
            if done {
                if run.confirm_accounts.is_empty()
                    && run.confirm_calls.is_empty()
                    && run.after_register.is_empty()
                {
                    self.timers
                        .cancel(TimerOwner::Mobility, TimerKind::MobilitySettle);
                    let status = match run.failed {
                        0 => Ok(()),
                        n => Err(IpChangeError::Incomplete(n)),
                    };
                    self.report(
                        &run,
                        now,
                        IpChangeStage::Completed,
                        status,
                        Scope::default(),
                    );
                } else {
                    if self
                        .timers
                        .deadline(TimerOwner::Mobility, TimerKind::MobilitySettle)
                        .is_none()
                    {
                        let at = now + self.settle_limit();
                        self.timers
                            .set(TimerOwner::Mobility, TimerKind::MobilitySettle, at);
                    }
                    self.mobility.run = Some(run);
                }
                return;
            }
            self.mobility.run = Some(run);
        }
    }

    pub(super) fn on_result(
        &mut self,
        now: Instant,
        run: &mut Run,
        waiting: Waiting,
        result: MobilityResult,
    ) {
        match waiting {
            Waiting::Shutdown => {
                self.report(
                    run,
                    now,
                    IpChangeStage::ShutdownTransports,
                    Ok(()),
                    Scope::default(),
                );
            }
            Waiting::Listen { old, addr, attempt } => {
                self.on_listen(now, run, old, addr, attempt, result)
            }
            Waiting::Restart { old } => match result {
                MobilityResult::Listening(l) => {
                    self.listener_opened(run, now, old.transport, l, Ok(()));
                }
                // its address is gone: to where the first account's
                // registrar is reached from now
                MobilityResult::ListenFailed(ListenFailure::AddressGone)
                    if run.fallback.is_some() =>
                {
                    let ip = run.fallback.unwrap_or(old.local.ip());
                    let addr = SocketAddr::new(ip, old.local.port());
                    run.ask(
                        MobilityAction::Listen {
                            transport: old.transport,
                            addr,
                            after: Duration::ZERO,
                        },
                        Waiting::Listen {
                            old,
                            addr,
                            attempt: 1,
                        },
                    );
                }
                other => {
                    let reason = match other {
                        MobilityResult::ListenFailed(r) => r,
                        _ => ListenFailure::Io(std::io::ErrorKind::Other),
                    };
                    run.failed += 1;
                    let err = IpChangeError::Listen {
                        addr: old.local,
                        reason,
                    };
                    self.report(
                        run,
                        now,
                        IpChangeStage::RestartListener,
                        Err(err),
                        Scope {
                            transport: Some(old.transport),
                            ..Scope::default()
                        },
                    );
                }
            },
            Waiting::AccountFlow(mut st) => {
                self.connect_for_contact(run, &mut st);
                if run.action.is_none() {
                    self.move_account_now(now, run, st);
                }
            }
            Waiting::AccountConnect(mut st) => {
                if let MobilityResult::Connected(local) = result {
                    st.contact = local;
                }
                self.move_account_now(now, run, st);
            }
            Waiting::Reclaim { old, lingering } => {
                self.listener_opened(run, now, old.transport, lingering, Ok(()));
            }
            Waiting::Retire => {}
        }
    }
}
