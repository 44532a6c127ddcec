//! What a failed flow does to the usages it carried (RFC 5626 §4.4.1,
//! §4.5; resiprocate's `flowTerminated`): each usage is handled by the
//! policy the application set ([`FlowFailurePolicy`], for the endpoint or
//! per account), and the application is told which usages the flow
//! carried and what is done with each ([`FlowTerminated`]), so it can act
//! itself where it chose `Ignore`.
//!
//! - registrations register again at once over a new flow (the account's
//!   own machinery, `registration`), unless `Ignore`;
//! - confirmed calls are repaired through the mobility machine, as one
//!   more trigger of the same recovery as an address change
//!   ([`crate::ChangeTrigger::FlowFailure`]): a target refresh at once
//!   over a live sibling flow of the call's identity (RFC 5626 §4.2.1;
//!   the call then belongs to that flow), else over the new flow once
//!   the account registered over it (at once over UDP, or when no account
//!   re-registers), and, when that refresh fails with 481
//!   or 408, an INVITE with `Replaces` (RFC 3891) that makes a new dialog
//!   for the call (`dialog`); or hung up; or left alone;
//! - subscriptions (not built yet) will take `client_subscription` /
//!   `server_subscription` from the same policy.
//!
//! A flow the endpoint closed itself ([`FlowCloseReason::Local`]: a
//! network change, a shutdown; [`FlowCloseReason::Idle`]: a connection
//! nothing used for a while) has not failed, nor has one that never came
//! up ([`FlowCloseReason::ConnectFailed`]: what was sent on it fails on
//! its own — a repair's refresh with 503, a REGISTER into its back-off):
//! nothing here applies to them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::dialog::{CallId, CallState};
use crate::endpoint::{CoreError, Endpoint, Event};
use crate::flow::{Flow, FlowCloseReason, FlowId, Transport};
use crate::registration::AccountId;

/// What becomes of a registration whose flow failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrationRecovery {
    /// Register again at once over a new flow (RFC 5626 §4.5); when that
    /// fails, the account's back-off applies.
    #[default]
    Reregister,
    /// Do nothing now: the binding is refreshed when its timer says, or
    /// when the application asks ([`Endpoint::refresh_registration`]).
    Ignore,
}

/// What becomes of a confirmed call whose dialog used a failed flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRecovery {
    /// Repair it: a target refresh (re-INVITE, or UPDATE when preferred
    /// and allowed) with our Contact over the new flow, as soon as there
    /// is one — the application re-offers on [`Event::CallMoved`] as
    /// after an address change. With `replaces_fallback`, a refresh
    /// answered 481 or timing out (408) is followed by an INVITE with
    /// `Replaces` (RFC 3891) carrying the same offer, which makes a new
    /// dialog for the call ([`crate::CallEvent::Replacing`]); without it,
    /// the call ends with that code (RFC 5057). A refresh moved to a
    /// sibling flow's proxy while the route set still names the failed
    /// one falls back on a 403, 404, 480 or 5xx too (the way is refused).
    Repair {
        /// Fall back to an INVITE with `Replaces`.
        replaces_fallback: bool,
    },
    /// End it with a BYE (over a new flow).
    HangUp,
    /// Do nothing (the call's next request opens a new flow).
    Ignore,
}

impl Default for InviteRecovery {
    fn default() -> Self {
        InviteRecovery::Repair {
            replaces_fallback: true,
        }
    }
}

/// What becomes of a subscription we hold (SUBSCRIBE sent) whose flow
/// failed. Subscriptions are not built yet: the policy is kept for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientSubscriptionRecovery {
    /// Subscribe again at once over a new flow.
    #[default]
    Resubscribe,
    /// Do nothing.
    Ignore,
}

/// What becomes of a subscription we serve (SUBSCRIBE received) whose
/// flow failed. Subscriptions are not built yet: the policy is kept for
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerSubscriptionRecovery {
    /// End it (the subscriber subscribes again over its new flow).
    #[default]
    Terminate,
    /// Do nothing.
    Ignore,
}

/// How each usage of a failed flow is handled (resiprocate's
/// `flowTerminated` defaults: re-register, repair calls, re-subscribe,
/// end served subscriptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowFailurePolicy {
    /// Registrations.
    pub registration: RegistrationRecovery,
    /// Confirmed calls.
    pub invite: InviteRecovery,
    /// Subscriptions we hold (once subscriptions exist).
    pub client_subscription: ClientSubscriptionRecovery,
    /// Subscriptions we serve (once subscriptions exist).
    pub server_subscription: ServerSubscriptionRecovery,
}

/// A flow failed: the usages it carried and what is done with each
/// ([`Event::FlowTerminated`]). Sent only when it carried something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTerminated {
    /// The flow.
    pub flow: FlowId,
    /// Why it failed.
    pub reason: FlowCloseReason,
    /// Its transport.
    pub transport: Transport,
    /// Our end, when known.
    pub local: Option<SocketAddr>,
    /// The far end.
    pub remote: SocketAddr,
    /// The accounts registered over it, and what is done for each.
    pub registrations: Vec<(AccountId, RegistrationRecovery)>,
    /// The confirmed calls whose dialog used it, and what is done for each.
    pub calls: Vec<(CallId, InviteRecovery)>,
}

/// The policies in force.
#[derive(Debug, Default)]
pub(crate) struct FlowFailurePolicies {
    endpoint: FlowFailurePolicy,
    accounts: HashMap<AccountId, FlowFailurePolicy>,
}

/// What a failed flow carried, found before anything reacts to its loss.
#[derive(Debug)]
pub(crate) struct Carried {
    flow: Flow,
    reason: FlowCloseReason,
    registrations: Vec<(AccountId, RegistrationRecovery)>,
    calls: Vec<(CallId, InviteRecovery)>,
}

impl Endpoint {
    /// Sets how the usages of a failed flow are handled, for every account
    /// without its own policy and for calls of no account.
    pub fn set_flow_failure_policy(&mut self, policy: FlowFailurePolicy) {
        self.flow_failure.endpoint = policy;
    }

    /// Sets (or, with `None`, drops) an account's own policy: it applies
    /// to its registration and to the calls whose local URI is its AoR.
    pub fn set_account_flow_failure_policy(
        &mut self,
        account: AccountId,
        policy: Option<FlowFailurePolicy>,
    ) -> Result<(), CoreError> {
        if !self.accounts.contains(account) {
            return Err(CoreError::NoSuchAccount);
        }
        match policy {
            Some(p) => self.flow_failure.accounts.insert(account, p),
            None => self.flow_failure.accounts.remove(&account),
        };
        Ok(())
    }

    /// The policy in force for an account (its own, else the endpoint's).
    pub fn flow_failure_policy(&self, account: Option<AccountId>) -> FlowFailurePolicy {
        account
            .and_then(|a| self.flow_failure.accounts.get(&a))
            .copied()
            .unwrap_or(self.flow_failure.endpoint)
    }

    /// A call's policy: that of the account whose AoR is its local URI,
    /// else of the first account registered over the failed flow, else
    /// the endpoint's.
    fn call_flow_failure_policy(&self, call: CallId, on_flow: &[AccountId]) -> FlowFailurePolicy {
        let account = self
            .call_local_uri(call)
            .and_then(|u| self.account_with_aor(u))
            .map(|(a, _)| a)
            .or_else(|| on_flow.first().copied());
        self.flow_failure_policy(account)
    }

    /// A flow is gone (`flow`, already out of the table): when it failed,
    /// what it carried, before its transactions fail. Ignored
    /// registrations let go of it (so they do not register again), and a
    /// repair opens the network-change window (a refresh dying on the dead
    /// flow must not end its call).
    pub(crate) fn flow_failure_begin(
        &mut self,
        now: Instant,
        flow: Flow,
        reason: FlowCloseReason,
    ) -> Option<Carried> {
        if matches!(
            reason,
            FlowCloseReason::Local | FlowCloseReason::Idle | FlowCloseReason::ConnectFailed
        ) {
            return None;
        }
        let mut on_flow: Vec<AccountId> = self
            .accounts()
            .into_iter()
            .filter(|a| self.account_flow(*a) == Some(flow.id))
            .collect();
        on_flow.sort();
        let registrations: Vec<_> = on_flow
            .iter()
            .map(|a| (*a, self.flow_failure_policy(Some(*a)).registration))
            .collect();
        for (account, recovery) in &registrations {
            if *recovery == RegistrationRecovery::Ignore {
                self.detach_account_flow(*account);
            }
        }
        let calls: Vec<_> = self
            .calls()
            .into_iter()
            .filter(|(c, s)| *s == CallState::Confirmed && self.call_uses_flow(*c, &flow))
            .map(|(c, _)| (c, self.call_flow_failure_policy(c, &on_flow).invite))
            .collect();
        for (call, _) in &calls {
            self.forget_call_flow(*call);
        }
        if calls
            .iter()
            .any(|(_, r)| matches!(r, InviteRecovery::Repair { .. }))
        {
            self.begin_network_change(now);
        }
        if registrations.is_empty() && calls.is_empty() {
            return None;
        }
        Some(Carried {
            flow,
            reason,
            registrations,
            calls,
        })
    }

    /// After the accounts reacted (those re-registering have sent their
    /// REGISTER over a new flow): the calls, and the report.
    pub(crate) fn flow_failure_end(&mut self, now: Instant, carried: Carried) {
        let Carried {
            flow,
            reason,
            registrations,
            calls,
        } = carried;
        // calls wait for the new flow of an account that registers again
        // over it (a stream; over UDP the refresh goes at once)
        let reregistering: Vec<AccountId> = registrations
            .iter()
            .filter(|(_, r)| *r == RegistrationRecovery::Reregister)
            .map(|(a, _)| *a)
            .filter(|a| self.account_flow(*a).is_some())
            .collect();
        let wait_for = reregistering
            .first()
            .copied()
            .filter(|_| flow.transport.is_reliable());
        let mut repairs = Vec::new();
        for (call, recovery) in &calls {
            match recovery {
                InviteRecovery::Repair { replaces_fallback } => {
                    repairs.push((*call, *replaces_fallback));
                }
                InviteRecovery::HangUp => {
                    let _ = self.hang_up(now, *call);
                }
                InviteRecovery::Ignore => {}
            }
        }
        self.events.push_back(Event::FlowTerminated(FlowTerminated {
            flow: flow.id,
            reason,
            transport: flow.transport,
            local: flow.local,
            remote: flow.remote,
            registrations,
            calls,
        }));
        if !repairs.is_empty() {
            self.start_flow_repair(now, &flow, wait_for, &repairs);
        }
    }
}
