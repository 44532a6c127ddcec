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

use crate::dialog::{CallId, CallState};
use crate::endpoint::{CoreError, Endpoint, Target};

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
