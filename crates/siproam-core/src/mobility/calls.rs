//! What a network change does to a call, decided sans-IO so that every
//! hand-off scenario runs in the simulator with the driver's own logic.
//!
//! The driver (`siproam`'s `ip_change`) calls [`Endpoint::move_call`] for
//! each call after the accounts have moved; the SIP side happens here
//! (Contact, next hop, a CANCEL for a stuck re-INVITE, an UPDATE without
//! SDP for an outgoing early dialog, a BYE), and the returned
//! [`CallMoveAction`] tells the application what to do with the media
//! (re-offer now, re-offer once the pending refresh settles, re-open
//! the RTP socket of a call still ringing, or — our INVITE unanswered and
//! its old path gone — make the fresh offer of the INVITE sent again).

use std::net::SocketAddr;
use std::time::Instant;

use crate::dialog::{CallId, CallState};
use crate::endpoint::{CoreError, Endpoint, Event, Target};
use crate::flow::Transport;

use super::params::AccountIpChange;
use super::report::{IpChangeError, IpChangeStage};
use super::run::{Run, Scope, Step};

/// How to move one call after a network change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallMove {
    /// Our new Contact address (the next request or answer carries it,
    /// and is sent from it); `None` keeps the dialog's Contact.
    pub contact: Option<SocketAddr>,
    /// The address to send from, so the Via names it: with `contact`
    /// `None` the Contact stays; with another address than `contact`'s,
    /// the Contact names a NAT's public address and we send from ours.
    pub via: Option<SocketAddr>,
    /// The next hop for in-dialog requests after a switch between IPv4
    /// and IPv6 (the same proxy in the new family); `None` keeps it.
    pub next_hop: Option<Target>,
    /// End a confirmed call with BYE instead of refreshing it.
    pub hang_up: bool,
    /// Refresh by UPDATE when the peer's Allow lists it (RFC 3311), else
    /// by re-INVITE.
    pub prefer_update: bool,
    /// The call's old path is gone: the address its requests were sent
    /// from (their Via) is no longer one of ours, or (TCP/TLS) its flow
    /// closed (break-before-make). An outgoing call not answered yet is
    /// then CANCELled and sent again ([`CallMoveAction::Resend`]): the
    /// callee's answer would follow the old Via. With the old path alive
    /// (make-before-break, the old UDP listener lingering) the answer
    /// still arrives and the call moves as any ringing call.
    pub old_path_gone: bool,
}

/// What the application does with a moved call's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMoveAction {
    /// Nothing: the call was hung up, or is in no state to move.
    Nothing,
    /// Send a fresh offer now ([`Endpoint::refresh`] with SDP), by UPDATE
    /// when `update`.
    Reoffer {
        /// Use UPDATE rather than re-INVITE.
        update: bool,
    },
    /// A refresh of ours was still pending (its request may be stuck on
    /// the old path): a re-INVITE was CANCELled (RFC 6141 §5.5). Send the
    /// fresh offer once it settles — its answer, or
    /// [`crate::CallEvent::RefreshFailed`] (487, timeout).
    ReofferWhenSettled {
        /// Use UPDATE rather than re-INVITE.
        update: bool,
    },
    /// A call still ringing: re-open the media on the new address. An
    /// incoming call's answer then carries it; an outgoing call's offer
    /// named the old address, so re-offer once it is answered. (An
    /// outgoing early dialog whose peer allows UPDATE already got an
    /// UPDATE without SDP with the new Contact.)
    Rebind,
    /// An outgoing call not answered yet whose old path is gone
    /// ([`CallMove::old_path_gone`]): the callee's answer would follow
    /// the INVITE's Via to an address we no longer have. The INVITE was
    /// CANCELled and given up; re-open the media on the new address, make
    /// a fresh offer and give it to [`Endpoint::resend_invite`], which
    /// sends a new INVITE from the new address. The call stays the same
    /// call for the application (its state does not change; the old
    /// INVITE's 487, timeout or a late 2xx never reach it). Until then
    /// the call has no INVITE out.
    Resend,
}

impl Endpoint {
    /// Moves a call after a network change (see the module notes): the
    /// SIP side now, and what the application must do with its media.
    pub fn move_call(
        &mut self,
        now: std::time::Instant,
        call: CallId,
        mv: CallMove,
    ) -> Result<CallMoveAction, CoreError> {
        let state = self.call_state(call).ok_or(CoreError::NoSuchCall)?;
        let ringing = matches!(
            state,
            CallState::Incoming | CallState::Ringing | CallState::Early
        );
        // our INVITE, unanswered, cannot get its answer any more
        let resend = (mv.old_path_gone || self.call_invite_lost(call))
            && self.call_is_outgoing(call)
            && matches!(
                state,
                CallState::Calling | CallState::Ringing | CallState::Early
            );
        if !ringing && !resend && state != CallState::Confirmed {
            return Ok(CallMoveAction::Nothing);
        }
        if let Some(contact) = mv.contact {
            self.set_call_contact(call, contact)?;
        }
        // sending from another address than the Contact's (the Contact is
        // a NAT's public address, or only the Via moves)
        if let Some(via) = mv
            .via
            .filter(|v| Some(v.ip()) != mv.contact.map(|c| c.ip()))
        {
            self.set_call_send_from(call, via)?;
        }
        if let Some(hop) = mv.next_hop {
            self.set_call_next_hop(call, Some(hop))?;
        }
        // the BYE leaves from the new address (the old one may be gone)
        if state == CallState::Confirmed && mv.hang_up {
            self.hang_up(now, call)?;
            return Ok(CallMoveAction::Nothing);
        }
        if resend {
            self.abandon_invite(now, call)?;
            return Ok(CallMoveAction::Resend);
        }
        if ringing && !self.call_is_outgoing(call) && mv.old_path_gone {
            // the INVITE came to an address that is gone: our answer
            // leaves from the new one
            if let (Some(tx), Some(from)) = (self.call_server_tx(call), mv.via.or(mv.contact)) {
                self.move_server_tx(tx, from);
            }
        }
        if ringing {
            // an outgoing early dialog learns the new Contact at once
            if mv.contact.is_some()
                && self.call_is_outgoing(call)
                && self.call_allows_update(call)
                && !self.call_refresh_pending(call)
            {
                self.refresh(now, call, true, None)?;
            }
            return Ok(CallMoveAction::Rebind);
        }
        let update = mv.prefer_update && self.call_allows_update(call);
        if self.call_refresh_pending(call) {
            // stuck on the old path, or not answered yet: CANCEL a
            // re-INVITE (an UPDATE cannot be); the new offer follows
            let _ = self.cancel_refresh(now, call);
            return Ok(CallMoveAction::ReofferWhenSettled { update });
        }
        Ok(CallMoveAction::Reoffer { update })
    }
}

/// A call waiting for its refresh to settle.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallWait {
    /// Settling events to skip first (a CANCELled re-INVITE's own end).
    pub(super) skip: u8,
    /// The stage that settles: `refresh_calls`, or `replace_calls` once
    /// a repair fell back to an INVITE with `Replaces`.
    pub(super) stage: IpChangeStage,
}

impl Endpoint {
    pub(super) fn step_calls(&mut self, now: Instant, run: &mut Run) {
        run.step = Step::Retire;
        self.mobility.local_ip = Some(run.ip);
        let ip = run.ip;
        // subscriptions follow like calls: refreshed with the new Contact
        self.move_subscriptions(now, ip);
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
                            server_name: hop.server_name,
                        });
                    if next_hop.is_none() && !knobs.hangup_calls {
                        run.failed += 1;
                        self.report(
                            run,
                            now,
                            stage,
                            Err(IpChangeError::NoNextHopAddress),
                            Scope {
                                call: Some(call),
                                ..Scope::default()
                            },
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
    pub(super) fn move_one_call(
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
                self.report(
                    run,
                    now,
                    stage,
                    Err(e.into()),
                    Scope {
                        call: Some(call),
                        ..Scope::default()
                    },
                );
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
            CallMoveAction::Reoffer { .. } => Some(CallWait {
                skip: 0,
                stage: IpChangeStage::RefreshCalls,
            }),
            CallMoveAction::ReofferWhenSettled { .. } => Some(CallWait {
                skip: 1,
                stage: IpChangeStage::RefreshCalls,
            }),
            // an early dialog told of the new Contact by UPDATE
            CallMoveAction::Rebind if self.call_refresh_pending(call) => Some(CallWait {
                skip: 0,
                stage: IpChangeStage::RefreshCalls,
            }),
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
            None => self.report(
                run,
                now,
                stage,
                Ok(()),
                Scope {
                    call: Some(call),
                    ..Scope::default()
                },
            ),
        }
    }
}
