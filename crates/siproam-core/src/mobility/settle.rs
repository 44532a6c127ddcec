//! What settles a change: the REGISTER's answer and the refresh's answer
//! seen as the core's events leave, a newer change (superseded), the
//! settle timer; and a NAT rebinding, which starts a run of its own.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::dialog::{CallEvent, CallId, CallState};
use crate::endpoint::{Endpoint, Event};
use crate::registration::{AccountId, RegistrationEvent, RegistrationState};

use super::calls::CallMove;
use super::params::IpChangeParams;
use super::report::{ChangeTrigger, IpChangeError, IpChangeStage};
use super::run::{Run, Scope, Step};
use super::view::NetworkView;

/// The address of a Contact URI (`sip:user@1.2.3.4:5060;…`).
pub(super) fn contact_address(contact: &str) -> Option<SocketAddr> {
    let uri = siproam_sip::Uri::parse(contact).ok()?;
    let sip = uri.as_sip()?;
    let host = sip.host_str().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, sip.port().unwrap_or(5060)))
}

impl Endpoint {
    /// Reports every unsettled stage with `err`, then `completed`: with
    /// `err`, or (`counted`: they failed) with how many stages failed.
    pub(super) fn fail_all(
        &mut self,
        now: Instant,
        mut run: Run,
        err: IpChangeError,
        counted: bool,
    ) {
        run.failed +=
            run.confirm_accounts.len() + run.confirm_calls.len() + run.after_register.len();
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
                Scope {
                    account: Some(account),
                    transport: Some(transport),
                    address: Some(contact),
                    ..Scope::default()
                },
            );
        }
        let mut calls: Vec<_> = run
            .confirm_calls
            .drain()
            .map(|(c, w)| (c, w.stage))
            .chain(
                run.after_register
                    .drain(..)
                    .map(|(_, c, _)| (c, IpChangeStage::RefreshCalls)),
            )
            .collect();
        calls.sort_by_key(|(c, _)| *c);
        for (call, stage) in calls {
            self.report(
                &run,
                now,
                stage,
                Err(err.clone()),
                Scope {
                    call: Some(call),
                    ..Scope::default()
                },
            );
        }
        self.report(
            &run,
            now,
            IpChangeStage::Completed,
            Err(completed),
            Scope::default(),
        );
    }

    /// How long a change waits for its confirmations: a REGISTER answered
    /// after a challenge takes two transactions.
    pub(super) fn settle_limit(&self) -> Duration {
        self.config.t1x64() * 2
    }

    /// A NAT rebinding: the registrar saw the account at `public`. The
    /// account's calls take it as their Contact (sending from where they
    /// did), as stages `started`, `refresh_calls` per call, `completed`.
    pub(super) fn start_rebinding(&mut self, now: Instant, account: AccountId, public: SocketAddr) {
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
        run.trigger = ChangeTrigger::NatRebinding;
        self.report(
            &run,
            now,
            IpChangeStage::Started,
            Ok(()),
            Scope {
                account: Some(account),
                address: Some(public),
                ..Scope::default()
            },
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
            Event::Call(CallEvent::Replacing { call, code }) => {
                self.replacing_call(now, *call, *code)
            }
            Event::Call(CallEvent::State {
                call,
                state: CallState::Disconnected,
                ..
            }) => self.settle_call(now, *call, Err(IpChangeError::CallEnded)),
            _ => {}
        }
    }

    pub(super) fn settle_account(&mut self, now: Instant, r: &RegistrationEvent) {
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
            let registered = status.is_ok();
            if let Some((transport, contact)) = run.confirm_accounts.remove(&r.account) {
                run.failed += usize::from(status.is_err());
                self.report(
                    &run,
                    now,
                    IpChangeStage::UpdateContact,
                    status,
                    Scope {
                        account: Some(r.account),
                        transport: Some(transport),
                        address: Some(contact),
                        ..Scope::default()
                    },
                );
            }
            // a flow failure's calls waiting for this account's new flow
            // (registered or not, they are repaired now), and those whose
            // identity has a flow live again (this one, a sibling)
            if run.trigger == ChangeTrigger::FlowFailure {
                let (ready, rest) = run.after_register.drain(..).partition(|(a, c, _)| {
                    *a == r.account || (registered && self.live_sibling_for(*c).is_some())
                });
                run.after_register = rest;
                for (account, call, fallback) in ready {
                    // not registered: over a sibling flow that came up
                    // meanwhile, else at once along the call's own path
                    let (over, hop) = match registered && account == r.account {
                        true => (Some(account), None),
                        false => match self.live_sibling_for(call) {
                            Some((sibling, hop)) => (Some(sibling), Some(hop)),
                            None => (None, None),
                        },
                    };
                    self.repair_call(now, &mut run, call, over, hop, fallback);
                }
            }
        }
        self.mobility.run = Some(run);
        self.advance(now);
    }

    pub(super) fn settle_call(
        &mut self,
        now: Instant,
        call: CallId,
        status: Result<(), IpChangeError>,
    ) {
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
        if let Some(w) = settle.then(|| run.confirm_calls.remove(&call)).flatten() {
            run.failed += usize::from(status.is_err());
            self.report(
                &run,
                now,
                w.stage,
                status,
                Scope {
                    call: Some(call),
                    ..Scope::default()
                },
            );
        }
        self.mobility.run = Some(run);
        self.advance(now);
    }

    /// A repair's refresh found the dialog gone (`code`) and an INVITE
    /// with `Replaces` went out: `refresh_calls` is reported failed (not
    /// counted: the fallback may still save the call) and the call now
    /// waits for `replace_calls`.
    pub(super) fn replacing_call(&mut self, now: Instant, call: CallId, code: u16) {
        let Some(mut run) = self.mobility.run.take() else {
            return;
        };
        if let Some(w) = run.confirm_calls.get_mut(&call) {
            w.skip = 0;
            w.stage = IpChangeStage::ReplaceCalls;
            self.report(
                &run,
                now,
                IpChangeStage::RefreshCalls,
                Err(IpChangeError::RefreshFailed(code)),
                Scope {
                    call: Some(call),
                    ..Scope::default()
                },
            );
        }
        self.mobility.run = Some(run);
    }

    /// A registered Contact other than the last one while no change of
    /// ours moved the account: the registrar saw us at another address
    /// (`received`/`rport`: a NAT rebinding), which the registration has
    /// already re-registered.
    pub(super) fn check_rebinding(&mut self, now: Instant, r: &RegistrationEvent) {
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
