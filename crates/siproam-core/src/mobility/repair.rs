//! A failed flow's calls, repaired by the machine that runs a network
//! change ([`ChangeTrigger::FlowFailure`]; the policy and the report of
//! what the flow carried are `crate::flow_failure`'s).
//!
//! `started` (with the flow's transport and far end, and the account
//! that registers again), then — at once over a live sibling flow of the
//! call's identity when there is one (its Contact, its first hop as the
//! call's next hop: the call belongs to that flow from then on), else
//! over a stream, once that account's
//! REGISTER over its new flow is answered (`update_contact`), else at
//! once — each call moved as after a change: its Contact is the
//! account's Contact, [`crate::Event::CallMoved`] asks the application for the
//! fresh offer of the target refresh, and `refresh_calls` settles on its
//! 2xx. A refresh answered 481 or 408 reports `refresh_calls` failed and,
//! with the fallback, `replace_calls` settles on the 2xx of the INVITE
//! with `Replaces` (`dialog`). Then `completed`.
//!
//! A flow failing while such a run still waits joins it; one failing
//! while a change does its socket work is left to that change (it moves
//! every call); one failing while an earlier change waits for its
//! confirmations supersedes it, as a newer change would.

use std::time::Instant;

use crate::dialog::{CallId, CallState};
use crate::endpoint::{Endpoint, Target};
use crate::flow::Flow;
use crate::registration::AccountId;

use super::calls::CallMove;
use super::params::{IpChangeParams, RefreshFlags};
use super::report::{ChangeTrigger, IpChangeError, IpChangeStage};
use super::run::{Run, Scope, Step};
use super::settle::contact_address;
use super::view::NetworkView;

impl Endpoint {
    /// Repairs `calls` (with their `Replaces` fallback) of the failed
    /// `flow`: after `wait_for`'s REGISTER over its new flow is answered,
    /// or at once.
    pub(crate) fn start_flow_repair(
        &mut self,
        now: Instant,
        flow: &Flow,
        wait_for: Option<AccountId>,
        calls: &[(CallId, bool)],
    ) {
        let extend = self.mobility.run.as_ref().is_some_and(|r| {
            r.trigger == ChangeTrigger::FlowFailure && r.waiting.is_none() && r.action.is_none()
        });
        let mut run = match self.mobility.run.take() {
            Some(run) if extend => run,
            other => {
                self.mobility.run = other;
                if self.supersede(now).is_err() {
                    return; // a change doing its socket work moves the calls
                }
                let params = IpChangeParams {
                    restart_listeners: false,
                    shutdown_transports: false,
                    ..IpChangeParams::in_place()
                };
                let mut run = Run::new(params, now, NetworkView::default());
                run.trigger = ChangeTrigger::FlowFailure;
                run.step = Step::Confirm;
                run
            }
        };
        self.report(
            &run,
            now,
            IpChangeStage::Started,
            Ok(()),
            Scope {
                account: wait_for,
                transport: Some(flow.transport),
                address: Some(flow.remote),
                ..Scope::default()
            },
        );
        // a call this run already repairs is not moved again (its refresh
        // settles it): a path failing over and over cannot loop
        let calls: Vec<(CallId, bool)> = calls
            .iter()
            .filter(|(c, _)| {
                !run.confirm_calls.contains_key(c) && !run.after_register.iter().any(|w| w.1 == *c)
            })
            .copied()
            .collect();
        // a call whose identity has another live flow moves over it at
        // once (RFC 5626 §4.2.1: no waiting for the failed flow's new
        // registration, which goes on in the background)
        let mut waiting = Vec::new();
        for (call, fallback) in calls {
            match self.live_sibling_for(call) {
                Some((sibling, hop)) => {
                    self.repair_call(now, &mut run, call, Some(sibling), Some(hop), fallback)
                }
                None => waiting.push((call, fallback)),
            }
        }
        match wait_for {
            Some(account) if !waiting.is_empty() => {
                let transport = self.account_transport(account).unwrap_or(flow.transport);
                let contact = self
                    .account_contact(account)
                    .as_deref()
                    .and_then(contact_address)
                    .unwrap_or(flow.remote);
                run.confirm_accounts.insert(account, (transport, contact));
                run.after_register
                    .extend(waiting.iter().map(|(c, f)| (account, *c, *f)));
            }
            _ => {
                for (call, fallback) in waiting {
                    self.repair_call(now, &mut run, call, None, None, fallback);
                }
            }
        }
        self.mobility.run = Some(run);
        self.advance(now);
    }

    /// The live flow of the call's identity (its local URI's flow set)
    /// the call moves over: its account and first hop.
    pub(super) fn live_sibling_for(&self, call: CallId) -> Option<(AccountId, Target)> {
        self.call_local_uri(call)
            .and_then(|u| self.live_flow_for(u))
    }

    /// Moves one call of a failed flow: its Contact becomes `over`'s (the
    /// account that registered over the new flow, or a live sibling flow
    /// of the call's identity — then with that flow's first hop as the
    /// call's next hop, so the call belongs to that flow from now on), it
    /// is marked for the `Replaces` fallback, and the application is
    /// asked for the offer.
    pub(super) fn repair_call(
        &mut self,
        now: Instant,
        run: &mut Run,
        call: CallId,
        over: Option<AccountId>,
        next_hop: Option<Target>,
        fallback: bool,
    ) {
        if self.call_state(call) != Some(CallState::Confirmed) {
            run.failed += 1;
            self.report(
                run,
                now,
                IpChangeStage::RefreshCalls,
                Err(IpChangeError::CallEnded),
                Scope {
                    call: Some(call),
                    ..Scope::default()
                },
            );
            return;
        }
        let contact = over
            .and_then(|a| self.account_contact(a))
            .as_deref()
            .and_then(contact_address);
        let via = over
            .and_then(|a| self.account_flow(a))
            .and_then(|f| self.flows.get(f))
            .and_then(|f| f.local);
        let prefer_update = self
            .call_local_uri(call)
            .and_then(|u| self.account_with_aor(u))
            .and_then(|(_, r)| r.ip_change)
            .map_or(RefreshFlags::default().prefer_update, |k| {
                k.refresh.prefer_update
            });
        self.set_call_repair(call, fallback);
        let mv = CallMove {
            contact,
            via,
            next_hop,
            hang_up: false,
            prefer_update,
            old_path_gone: false,
        };
        self.move_one_call(
            now,
            run,
            call,
            CallState::Confirmed,
            mv,
            None,
            IpChangeStage::RefreshCalls,
        );
    }
}
