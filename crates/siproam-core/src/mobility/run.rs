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

use crate::dialog::{CallEvent, CallId, CallState};
use crate::endpoint::{CoreError, Endpoint, Event, ListenPoint, Target};
use crate::flow::{FlowId, Transport};
use crate::registration::{AccountId, RegistrationEvent, RegistrationState};
use crate::timers::{TimerKind, TimerOwner};

use super::calls::{CallMove, CallMoveAction};
use super::params::{AccountIpChange, IpChangeParams};
use super::report::{IpChangeError, IpChangeReport, IpChangeStage, ListenFailure};
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
enum Step {
    Transports,
    Listeners,
    Accounts,
    Calls,
    Retire,
    Confirm,
}

/// What the outstanding action was for.
#[derive(Debug)]
enum Waiting {
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

/// One account being moved.
#[derive(Debug, Clone, Copy)]
struct AccountMoveState {
    account: AccountId,
    knobs: AccountIpChange,
    transport: Transport,
    contact: SocketAddr,
    keep_flow: bool,
}

/// A call waiting for its refresh to settle.
#[derive(Debug, Clone, Copy)]
struct CallWait {
    /// Settling events to skip first (a CANCELled re-INVITE's own end).
    skip: u8,
}

#[derive(Debug)]
pub(crate) struct Run {
    params: IpChangeParams,
    started: Instant,
    view: NetworkView,
    step: Step,
    action: Option<MobilityAction>,
    waiting: Option<Waiting>,
    old: Vec<ListenerView>,
    queue: VecDeque<ListenerView>,
    new_points: Vec<ListenerView>,
    fallback: Option<IpAddr>,
    ip: IpAddr,
    accounts: VecDeque<AccountId>,
    confirm_accounts: HashMap<AccountId, (Transport, SocketAddr)>,
    confirm_calls: HashMap<CallId, CallWait>,
    failed: usize,
}

impl Run {
    fn new(params: IpChangeParams, started: Instant, view: NetworkView) -> Run {
        Run {
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
            failed: 0,
        }
    }

    fn ask(&mut self, action: MobilityAction, waiting: Waiting) {
        self.action = Some(action);
        self.waiting = Some(waiting);
    }

    fn port_for(&self, t: Transport) -> u16 {
        self.new_points
            .iter()
            .find(|i| i.transport == t)
            .or(self.new_points.first())
            .map_or(0, |i| i.local.port())
    }
}

/// What to do with one listener.
enum ListenerPlan {
    Keep,
    Reclaim(ListenerView),
    Listen(SocketAddr),
    Restart,
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
        self.report(
            &run,
            now,
            IpChangeStage::Started,
            Ok(()),
            None,
            None,
            None,
            None,
        );
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
                    None,
                    None,
                    None,
                    None,
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
    fn supersede(&mut self, now: Instant) -> Result<(), CoreError> {
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

    /// Reports every unsettled stage with `err`, then `completed`: with
    /// `err`, or (`counted`: they failed) with how many stages failed.
    fn fail_all(&mut self, now: Instant, mut run: Run, err: IpChangeError, counted: bool) {
        run.failed += run.confirm_accounts.len() + run.confirm_calls.len();
        let completed = if counted {
            IpChangeError::Incomplete(run.failed)
        } else {
            err.clone()
        };
        let mut accounts: Vec<_> = run.confirm_accounts.drain().collect();
        accounts.sort_by_key(|(a, _)| *a);
        for (account, (transport, contact)) in accounts {
            self.report(
                &run,
                now,
                IpChangeStage::UpdateContact,
                Err(err.clone()),
                Some(account),
                None,
                Some(transport),
                Some(contact),
            );
        }
        let mut calls: Vec<_> = run.confirm_calls.drain().map(|(c, _)| c).collect();
        calls.sort();
        for call in calls {
            self.report(
                &run,
                now,
                IpChangeStage::RefreshCalls,
                Err(err.clone()),
                None,
                Some(call),
                None,
                None,
            );
        }
        self.report(
            &run,
            now,
            IpChangeStage::Completed,
            Err(completed),
            None,
            None,
            None,
            None,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        run: &Run,
        now: Instant,
        stage: IpChangeStage,
        status: Result<(), IpChangeError>,
        account: Option<AccountId>,
        call: Option<CallId>,
        transport: Option<Transport>,
        address: Option<SocketAddr>,
    ) {
        self.events.push_back(Event::IpChange(IpChangeReport {
            stage,
            status,
            elapsed: now.saturating_duration_since(run.started),
            account,
            call,
            transport,
            address,
        }));
    }

    /// Walks the stages until one needs the driver or a confirmation.
    fn advance(&mut self, now: Instant) {
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
                if run.confirm_accounts.is_empty() && run.confirm_calls.is_empty() {
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
                        None,
                        None,
                        None,
                        None,
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

    /// How long a change waits for its confirmations: a REGISTER answered
    /// after a challenge takes two transactions.
    fn settle_limit(&self) -> Duration {
        self.config.t1x64() * 2
    }

    fn step_transports(&mut self, run: &mut Run) {
        run.step = Step::Listeners;
        run.old.clone_from(&run.view.listeners);
        run.queue = run.view.listeners.iter().copied().collect();
        run.fallback = self
            .accounts()
            .first()
            .and_then(|a| self.account_source(&run.view, *a));
        if !run.params.restart_listeners {
            run.new_points.clone_from(&run.old);
            run.queue.clear();
        }
        if !run.params.shutdown_transports {
            return;
        }
        if run.params.keep_unaffected {
            // only the stale ones: their address gone, or no longer the
            // one the OS would use towards their peer
            let view = &run.view;
            let stale: Vec<u64> = view
                .connections
                .iter()
                .filter(|c| {
                    !view.is_local(c.local.ip()) || view.source(c.remote) != Some(c.local.ip())
                })
                .map(|c| c.id)
                .collect();
            run.ask(MobilityAction::CloseConnections(stale), Waiting::Shutdown);
        } else {
            run.ask(MobilityAction::CloseAllStreams, Waiting::Shutdown);
        }
    }

    fn plan_listener(&self, run: &Run, l: &ListenerView) -> ListenerPlan {
        match run.params.ip {
            // already there, or a wildcard of the new address's family
            // (it already receives on it)
            Some(ip)
                if l.local.ip() == ip
                    || (l.local.ip().is_unspecified() && l.local.is_ipv4() == ip.is_ipv4()) =>
            {
                ListenerPlan::Keep
            }
            // a partial change leaves a pinned listener whose address
            // still exists alone
            Some(_)
                if run.params.keep_unaffected
                    && !l.local.ip().is_unspecified()
                    && run.view.is_local(l.local.ip()) =>
            {
                ListenerPlan::Keep
            }
            // the new address, on the listener's own port (PJSIP's
            // restart keeps it; port forwards and firewall rules rely on
            // it): the one an earlier change left lingering there, or a
            // new one
            Some(ip) => {
                let addr = SocketAddr::new(ip, l.local.port());
                match run
                    .view
                    .lingering
                    .iter()
                    .find(|g| g.transport == l.transport && g.local == addr)
                {
                    Some(g) => ListenerPlan::Reclaim(*g),
                    None => ListenerPlan::Listen(addr),
                }
            }
            None => ListenerPlan::Restart,
        }
    }

    fn step_listener(&mut self, now: Instant, run: &mut Run) {
        let Some(l) = run.queue.pop_front() else {
            self.listeners_done(run);
            return;
        };
        match self.plan_listener(run, &l) {
            ListenerPlan::Keep => {
                self.report(
                    run,
                    now,
                    IpChangeStage::RestartListener,
                    Ok(()),
                    None,
                    None,
                    Some(l.transport),
                    Some(l.local),
                );
                run.new_points.push(l);
            }
            ListenerPlan::Listen(addr) => run.ask(
                MobilityAction::Listen {
                    transport: l.transport,
                    addr,
                    after: Duration::ZERO,
                },
                Waiting::Listen {
                    old: l,
                    addr,
                    attempt: 1,
                },
            ),
            ListenerPlan::Reclaim(lingering) => run.ask(
                MobilityAction::ReclaimListener(lingering.id),
                Waiting::Reclaim { old: l, lingering },
            ),
            ListenerPlan::Restart => run.ask(
                MobilityAction::RestartListener { listener: l.id },
                Waiting::Restart { old: l },
            ),
        }
    }

    fn listeners_done(&mut self, run: &mut Run) {
        if run.params.restart_listeners {
            self.clear_listen_points();
            for l in &run.new_points {
                self.add_listen_point(ListenPoint {
                    transport: l.transport,
                    addr: l.local,
                });
            }
        }
        // the address Contacts and media use: the one given, else the one
        // the (first) listener is on now
        run.ip = run
            .params
            .ip
            .or_else(|| {
                run.new_points
                    .iter()
                    .map(|i| i.local.ip())
                    .find(|ip| !ip.is_unspecified())
            })
            .or(run.fallback)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let mut accounts = self.accounts();
        accounts.retain(|a| {
            run.params
                .accounts
                .as_ref()
                .is_none_or(|only| only.contains(a))
        });
        run.accounts = accounts.into();
        run.step = Step::Accounts;
    }

    fn on_result(&mut self, now: Instant, run: &mut Run, waiting: Waiting, result: MobilityResult) {
        match waiting {
            Waiting::Shutdown => {
                self.report(
                    run,
                    now,
                    IpChangeStage::ShutdownTransports,
                    Ok(()),
                    None,
                    None,
                    None,
                    None,
                );
            }
            Waiting::Listen { old, addr, attempt } => {
                self.on_listen(now, run, old, addr, attempt, result)
            }
            Waiting::Restart { old } => match result {
                MobilityResult::Listening(l) => {
                    self.report(
                        run,
                        now,
                        IpChangeStage::RestartListener,
                        Ok(()),
                        None,
                        None,
                        Some(old.transport),
                        Some(l.local),
                    );
                    run.new_points.push(l);
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
                        None,
                        None,
                        Some(old.transport),
                        None,
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
                self.report(
                    run,
                    now,
                    IpChangeStage::RestartListener,
                    Ok(()),
                    None,
                    None,
                    Some(old.transport),
                    Some(lingering.local),
                );
                run.new_points.push(lingering);
            }
            Waiting::Retire => {}
        }
    }

    fn on_listen(
        &mut self,
        now: Instant,
        run: &mut Run,
        old: ListenerView,
        addr: SocketAddr,
        attempt: u8,
        result: MobilityResult,
    ) {
        let failure = match result {
            MobilityResult::Listening(l) => {
                // the third attempt is the fallback to another port
                let status = if attempt >= 3 {
                    run.failed += 1;
                    Err(IpChangeError::PortTaken {
                        ip: addr.ip(),
                        port: old.local.port(),
                        fallback: l.local,
                    })
                } else {
                    Ok(())
                };
                self.report(
                    run,
                    now,
                    IpChangeStage::RestartListener,
                    status,
                    None,
                    None,
                    Some(old.transport),
                    Some(l.local),
                );
                run.new_points.push(l);
                return;
            }
            MobilityResult::ListenFailed(f) => f,
            _ => ListenFailure::Io(std::io::ErrorKind::Other),
        };
        let retry = match attempt {
            // once more after a moment (PJSIP's `restart_lis_delay`)
            1 => Some((addr, run.params.restart_listener_delay)),
            // the port is taken there: any port
            2 if failure == ListenFailure::AddrInUse && addr.port() != 0 => {
                Some((SocketAddr::new(addr.ip(), 0), Duration::ZERO))
            }
            _ => None,
        };
        match retry {
            Some((to, after)) => run.ask(
                MobilityAction::Listen {
                    transport: old.transport,
                    addr: to,
                    after,
                },
                Waiting::Listen {
                    old,
                    addr,
                    attempt: attempt + 1,
                },
            ),
            None => {
                run.failed += 1;
                let err = IpChangeError::Listen {
                    addr,
                    reason: failure,
                };
                self.report(
                    run,
                    now,
                    IpChangeStage::RestartListener,
                    Err(err),
                    None,
                    None,
                    Some(old.transport),
                    None,
                );
            }
        }
    }

    fn step_account(&mut self, now: Instant, run: &mut Run) {
        let Some(account) = run.accounts.pop_front() else {
            run.step = Step::Calls;
            return;
        };
        let defaults = AccountIpChange::from_params(&run.params);
        let knobs = self
            .account_routes(account)
            .and_then(|r| r.ip_change)
            .unwrap_or(defaults);
        let transport = self.account_transport(account).unwrap_or(Transport::Udp);
        let mut st = AccountMoveState {
            account,
            knobs,
            transport,
            contact: SocketAddr::new(run.ip, run.port_for(transport)),
            keep_flow: !knobs.shutdown_registration_flow,
        };
        // the new address is of the other family (IPv4 ↔ IPv6): the
        // account moves to the registrar's address in that family, over a
        // new flow
        if let Err(err) = self.switch_family(run, &mut st) {
            run.failed += 1;
            self.report(
                run,
                now,
                IpChangeStage::UpdateContact,
                Err(err),
                Some(account),
                None,
                Some(transport),
                Some(st.contact),
            );
            return;
        }
        if let Some(state) = self.mobility.accounts.get_mut(&account) {
            state.local_ip = Some(run.ip);
            state.contact = None;
        }
        // the registration's own flow is closed first (PJSIP's
        // `ip_change_cfg.shutdown_tp`, even if shared)
        let stream_flow = self.account_flow(account).filter(|f| {
            self.flows
                .get(*f)
                .is_some_and(|f| f.transport.is_reliable())
        });
        match stream_flow {
            Some(flow) if !st.keep_flow => {
                self.detach_account_flow(account);
                run.ask(MobilityAction::CloseFlow(flow), Waiting::AccountFlow(st));
            }
            _ => {
                self.connect_for_contact(run, &mut st);
                if run.action.is_none() {
                    self.move_account_now(now, run, st);
                }
            }
        }
    }

    fn switch_family(&mut self, run: &Run, st: &mut AccountMoveState) -> Result<(), IpChangeError> {
        let ip = run.ip;
        let Some(current) = self.account_registrar(st.account) else {
            return Ok(());
        };
        let Some(routes) = self.account_routes(st.account) else {
            return Ok(());
        };
        if current.is_ipv4() == ip.is_ipv4() {
            return Ok(());
        }
        if !routes.sip.allows(ip) {
            return Err(IpChangeError::FamilyNotAllowed(routes.sip));
        }
        let c = routes
            .candidate(st.transport, ip)
            .ok_or(IpChangeError::NoRegistrarAddress { ipv6: ip.is_ipv6() })?;
        st.keep_flow = false;
        self.retarget_account(
            st.account,
            Target {
                transport: c.transport,
                remote: c.addr,
                local: Some(st.contact),
            },
        )?;
        Ok(())
    }

    /// No listener of the account's stream transport in the registrar's
    /// family: the new flow, opened now, is the Contact (RFC 5626: the
    /// flow), as at registration.
    fn connect_for_contact(&mut self, run: &mut Run, st: &mut AccountMoveState) {
        if st.keep_flow || !st.transport.is_reliable() {
            return;
        }
        let Some(remote) = self.account_registrar(st.account) else {
            return;
        };
        let has_listener = run
            .new_points
            .iter()
            .any(|l| l.transport == st.transport && l.local.is_ipv4() == remote.is_ipv4());
        if has_listener {
            return;
        }
        run.ask(
            MobilityAction::Connect {
                transport: st.transport,
                remote,
                local: SocketAddr::new(st.contact.ip(), 0),
            },
            Waiting::AccountConnect(*st),
        );
    }

    fn move_account_now(&mut self, now: Instant, run: &mut Run, st: AccountMoveState) {
        match self.move_account_with(now, st.account, st.contact, st.keep_flow) {
            Ok(()) => {
                if st.knobs.shutdown_registration_flow {
                    self.report(
                        run,
                        now,
                        IpChangeStage::ShutdownRegistrationFlow,
                        Ok(()),
                        Some(st.account),
                        None,
                        Some(st.transport),
                        None,
                    );
                }
                run.confirm_accounts
                    .insert(st.account, (st.transport, st.contact));
            }
            Err(e) => {
                run.failed += 1;
                self.report(
                    run,
                    now,
                    IpChangeStage::UpdateContact,
                    Err(e.into()),
                    Some(st.account),
                    None,
                    Some(st.transport),
                    Some(st.contact),
                );
            }
        }
    }

    fn step_calls(&mut self, now: Instant, run: &mut Run) {
        run.step = Step::Retire;
        self.mobility.local_ip = Some(run.ip);
        let ip = run.ip;
        let call_contact = SocketAddr::new(ip, run.port_for(Transport::Udp));
        let defaults = AccountIpChange::from_params(&run.params);
        for (call, state) in self.calls() {
            if run
                .params
                .calls
                .as_ref()
                .is_some_and(|only| !only.contains(&call))
            {
                continue;
            }
            use CallState as S;
            let ringing = matches!(state, S::Incoming | S::Ringing | S::Early | S::Calling);
            if !ringing && state != S::Confirmed {
                continue;
            }
            // the knobs of the call's own account (its AoR is our URI)
            let knobs = self
                .call_local_uri(call)
                .and_then(|u| self.account_with_aor(u))
                .and_then(|(_, r)| r.ip_change)
                .unwrap_or(defaults);
            let flags = knobs.refresh;
            let stage = if state == S::Confirmed && knobs.hangup_calls {
                IpChangeStage::HangupCalls
            } else {
                IpChangeStage::RefreshCalls
            };
            // in-dialog requests to a next hop of the other family (IPv4
            // ↔ IPv6) go to the same proxy's address in the new family
            let mut next_hop = None;
            if let Some(hop) = self.call_next_hop(call) {
                if hop.remote.is_ipv4() != ip.is_ipv4() {
                    next_hop = self
                        .mobility
                        .accounts
                        .values()
                        .filter(|a| a.routes.is_registrar(hop.transport, hop.remote))
                        .find_map(|a| a.routes.candidate(hop.transport, ip))
                        .map(|c| Target {
                            transport: c.transport,
                            remote: c.addr,
                            local: None,
                        });
                    if next_hop.is_none() && !knobs.hangup_calls {
                        run.failed += 1;
                        self.report(
                            run,
                            now,
                            stage,
                            Err(IpChangeError::NoNextHopAddress),
                            None,
                            Some(call),
                            None,
                            None,
                        );
                        continue;
                    }
                }
            }
            let media_ip = if flags.reinit_media {
                self.media_ip_for(&run.view, call, ip)
            } else {
                None
            };
            // the address the call sends from (its Via) is gone: an
            // unanswered INVITE of ours is sent again (break-before-make)
            let old_path_gone = self
                .call_next_hop(call)
                .and_then(|hop| hop.local)
                .is_some_and(|a| !a.ip().is_unspecified() && !run.view.is_local(a.ip()));
            let mv = CallMove {
                contact: flags.update_contact.then_some(call_contact),
                via: flags.update_via.then_some(call_contact),
                next_hop,
                hang_up: knobs.hangup_calls,
                prefer_update: flags.prefer_update,
                old_path_gone,
            };
            self.move_one_call(now, run, call, state, mv, media_ip, stage);
        }
    }

    /// Moves one call, hands the media part to the application
    /// ([`Event::CallMoved`]) and notes what confirms the move.
    #[allow(clippy::too_many_arguments)]
    fn move_one_call(
        &mut self,
        now: Instant,
        run: &mut Run,
        call: CallId,
        state: CallState,
        mv: CallMove,
        media_ip: Option<std::net::IpAddr>,
        stage: IpChangeStage,
    ) {
        let action = match self.move_call(now, call, mv) {
            Ok(a) => a,
            Err(e) => {
                run.failed += 1;
                self.report(run, now, stage, Err(e.into()), None, Some(call), None, None);
                return;
            }
        };
        if action != CallMoveAction::Nothing {
            self.events.push_back(Event::CallMoved {
                call,
                media_ip,
                action,
            });
        }
        let wait = match action {
            CallMoveAction::Reoffer { .. } => Some(CallWait { skip: 0 }),
            CallMoveAction::ReofferWhenSettled { .. } => Some(CallWait { skip: 1 }),
            // an early dialog told of the new Contact by UPDATE
            CallMoveAction::Rebind if self.call_refresh_pending(call) => Some(CallWait { skip: 0 }),
            CallMoveAction::Rebind => None,
            // our INVITE sent again from the new address: the call rings
            // again, its answer is the user's
            CallMoveAction::Resend => None,
            CallMoveAction::Nothing if state == CallState::Confirmed && mv.hang_up => None,
            // a call in no state to move (an INVITE not answered at all)
            CallMoveAction::Nothing => return,
        };
        match wait {
            Some(w) => {
                run.confirm_calls.insert(call, w);
            }
            None => self.report(run, now, stage, Ok(()), None, Some(call), None, None),
        }
    }

    fn step_retire(&mut self, run: &mut Run) {
        if !run.params.restart_listeners {
            run.step = Step::Confirm;
            return;
        }
        let Some(pos) = run
            .old
            .iter()
            .position(|l| !run.new_points.iter().any(|n| n.id == l.id))
        else {
            run.step = Step::Confirm;
            return;
        };
        let l = run.old.remove(pos);
        let action = if l.transport == Transport::Udp && !run.params.old_listener_grace.is_zero() {
            MobilityAction::RetireListener {
                listener: l.id,
                grace: run.params.old_listener_grace,
            }
        } else {
            MobilityAction::CloseListener(l.id)
        };
        run.ask(action, Waiting::Retire);
    }

    /// A NAT rebinding: the registrar saw the account at `public`. The
    /// account's calls take it as their Contact (sending from where they
    /// did), as stages `started`, `refresh_calls` per call, `completed`.
    fn start_rebinding(&mut self, now: Instant, account: AccountId, public: SocketAddr) {
        if self.supersede(now).is_err() {
            return;
        }
        let prefer_update = self
            .account_routes(account)
            .and_then(|r| r.ip_change)
            .map_or(super::params::RefreshFlags::default().prefer_update, |k| {
                k.refresh.prefer_update
            });
        let params = IpChangeParams {
            restart_listeners: false,
            shutdown_transports: false,
            ..IpChangeParams::in_place()
        };
        let mut run = Run::new(params, now, NetworkView::default());
        self.report(
            &run,
            now,
            IpChangeStage::Started,
            Ok(()),
            Some(account),
            None,
            None,
            Some(public),
        );
        for (call, state) in self.calls() {
            let ours = self
                .call_local_uri(call)
                .and_then(|u| self.account_with_aor(u))
                .is_some_and(|(a, _)| a == account);
            if !ours {
                continue;
            }
            let sending = self.call_next_hop(call).and_then(|h| h.local);
            let mv = CallMove {
                contact: Some(public),
                via: sending,
                next_hop: None,
                hang_up: false,
                prefer_update,
                old_path_gone: false,
            };
            self.move_one_call(
                now,
                &mut run,
                call,
                state,
                mv,
                None,
                IpChangeStage::RefreshCalls,
            );
        }
        run.step = Step::Confirm;
        self.mobility.run = Some(run);
        self.advance(now);
    }

    /// The settle timer fired: what is still unconfirmed timed out.
    pub(crate) fn mobility_timer(&mut self, now: Instant) {
        let limit = self.settle_limit();
        if let Some(run) = self.mobility.run.take() {
            if run.waiting.is_some() || run.action.is_some() {
                self.mobility.run = Some(run);
                return;
            }
            self.fail_all(now, run, IpChangeError::Timeout(limit), true);
        }
    }

    /// Looks at an event on its way out: the confirmations a change waits
    /// for, and a NAT rebinding.
    pub(crate) fn observe_for_mobility(&mut self, now: Instant, ev: &Event) {
        match ev {
            Event::Registration(r) => {
                self.settle_account(now, r);
                self.check_rebinding(now, r);
            }
            Event::Call(CallEvent::Answer { call, .. }) => self.settle_call(now, *call, Ok(())),
            Event::Call(CallEvent::RefreshFailed { call, code }) => {
                self.settle_call(now, *call, Err(IpChangeError::RefreshFailed(*code)))
            }
            Event::Call(CallEvent::State {
                call,
                state: CallState::Disconnected,
                ..
            }) => self.settle_call(now, *call, Err(IpChangeError::CallEnded)),
            _ => {}
        }
    }

    fn settle_account(&mut self, now: Instant, r: &RegistrationEvent) {
        let Some(mut run) = self.mobility.run.take() else {
            return;
        };
        let status = match r.state {
            RegistrationState::Registering => None,
            RegistrationState::Registered => Some(Ok(())),
            RegistrationState::Failed => Some(Err(IpChangeError::Registration(r.failure))),
            RegistrationState::Unregistered => Some(Err(IpChangeError::AccountGone)),
        };
        if let Some(status) = status {
            if let Some((transport, contact)) = run.confirm_accounts.remove(&r.account) {
                run.failed += usize::from(status.is_err());
                self.report(
                    &run,
                    now,
                    IpChangeStage::UpdateContact,
                    status,
                    Some(r.account),
                    None,
                    Some(transport),
                    Some(contact),
                );
            }
        }
        self.mobility.run = Some(run);
        self.advance(now);
    }

    fn settle_call(&mut self, now: Instant, call: CallId, status: Result<(), IpChangeError>) {
        let Some(mut run) = self.mobility.run.take() else {
            return;
        };
        let ended = matches!(status, Err(IpChangeError::CallEnded));
        let settle = match run.confirm_calls.get_mut(&call) {
            Some(w) if w.skip > 0 && !ended => {
                w.skip -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if settle {
            run.confirm_calls.remove(&call);
            run.failed += usize::from(status.is_err());
            self.report(
                &run,
                now,
                IpChangeStage::RefreshCalls,
                status,
                None,
                Some(call),
                None,
                None,
            );
        }
        self.mobility.run = Some(run);
        self.advance(now);
    }

    /// A registered Contact other than the last one while no change of
    /// ours moved the account: the registrar saw us at another address
    /// (`received`/`rport`: a NAT rebinding), which the registration has
    /// already re-registered.
    fn check_rebinding(&mut self, now: Instant, r: &RegistrationEvent) {
        if r.state != RegistrationState::Registered {
            return;
        }
        let Some(state) = self.mobility.accounts.get_mut(&r.account) else {
            return;
        };
        let Some(before) = state.contact.replace(r.contact.clone()) else {
            return;
        };
        if before == r.contact {
            return;
        }
        let Some(public) = contact_address(&r.contact) else {
            return;
        };
        self.start_rebinding(now, r.account, public);
    }
}

/// The address of a Contact URI (`sip:user@1.2.3.4:5060;…`).
fn contact_address(contact: &str) -> Option<SocketAddr> {
    let uri = siproam_sip::Uri::parse(contact).ok()?;
    let sip = uri.as_sip()?;
    let host = sip.host_str().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, sip.port().unwrap_or(5060)))
}
