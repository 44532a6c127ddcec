//! Dialog repair after a flow failure, and RFC 3891 `Replaces` both ways.
//!
//! Sending: a call being repaired (`crate::flow_failure`) whose target
//! refresh failed with 481 or 408 gets an INVITE with `Replaces` naming
//! its dialog (`call-id;to-tag=<the peer's tag>;from-tag=<ours>`), with a
//! new Call-ID and From tag, to the peer's remote target through the
//! call's first hop, carrying the refresh's offer. Its 2xx makes the new
//! dialog the call's (the call keeps its [`CallId`] and stays confirmed);
//! a BYE for the old dialog then gets 200. Its failure ends the call.
//!
//! Receiving (RFC 3891 §3): an INVITE with one well-formed `Replaces` that
//! names a confirmed dialog of ours (its Call-ID, our tag as `to-tag`, the
//! peer's as `from-tag`) becomes an incoming call like any other, told as
//! [`CallEvent::ReplacesCall`]; once it is confirmed the replaced call is
//! ended with a BYE. No such dialog (or an early one: not replaced here)
//! is 481, `early-only` against a confirmed dialog 486, a malformed or
//! repeated `Replaces` (or one in a request other than INVITE) 400, and
//! one from anyone but the dialog's peer (its From URI is not the
//! dialog's remote URI, nor is its `Referred-By` — attended transfer)
//! 403.

use std::time::Instant;

use bytes::Bytes;
use siproam_sip::{HeaderName, Message, MessageBuilder, Method, ParamValue};

use super::{allow_update, reason, tag_param, CallEvent, CallId, CallPhase, Replacing, Role};
use crate::endpoint::{Endpoint, ServerTxId, TxOwner};
use crate::flow::{Flow, FlowId};
use crate::timers::{TimerKind, TimerOwner};

impl Endpoint {
    /// Whether the call's dialog uses `flow` (already out of the table):
    /// it was made on it, or its in-dialog requests go where the flow
    /// went — over UDP always (a path may have more than one flow id:
    /// the one we sent on, the one answers came in on), over a stream
    /// when the call's own connection is unknown or gone.
    pub(crate) fn call_uses_flow(&self, call: CallId, flow: &Flow) -> bool {
        let Some(c) = self.calls.get(call) else {
            return false;
        };
        if c.flow == Some(flow.id) {
            return true;
        }
        let hop = self.in_dialog_target(c);
        let same_local = match (hop.local, flow.local) {
            (Some(a), Some(b)) => {
                a.ip().is_unspecified() || b.ip().is_unspecified() || a.ip() == b.ip()
            }
            _ => true,
        };
        (!flow.transport.is_reliable() || c.flow.is_none_or(|f| self.flows.get(f).is_none()))
            && hop.transport == flow.transport
            && hop.remote == flow.remote
            && same_local
    }

    /// The call's flow is gone: its next request picks a new one.
    pub(crate) fn forget_call_flow(&mut self, call: CallId) {
        if let Some(c) = self.calls.get_mut(call) {
            c.flow = None;
        }
    }

    /// Marks a call as being repaired after a flow failure: its next
    /// refresh answered 481 or 408 is followed by an INVITE with
    /// `Replaces` when `replaces_fallback`, else ends the call.
    pub(crate) fn set_call_repair(&mut self, call: CallId, replaces_fallback: bool) {
        if let Some(c) = self.calls.get_mut(call) {
            c.repair = Some(replaces_fallback);
        }
    }

    /// The call an incoming call replaces (RFC 3891), until it is ended.
    pub fn call_replaces(&self, call: CallId) -> Option<CallId> {
        self.calls.get(call).and_then(|c| c.replaces)
    }

    /// The refresh got 481 or 408 (`code`): the dialog is gone. A call
    /// being repaired with the fallback gets an INVITE with `Replaces`
    /// carrying `offer`; otherwise (or with no offer to carry) it ends,
    /// a repair's end told first as the refresh's failure.
    pub(super) fn dialog_gone(
        &mut self,
        now: Instant,
        id: CallId,
        code: u16,
        offer: Option<Bytes>,
    ) {
        let repair = self.calls.get(id).and_then(|c| c.repair);
        if repair == Some(true) && self.start_replaces(now, id, code, offer) {
            return;
        }
        if repair.is_some() {
            self.call_event(CallEvent::RefreshFailed { call: id, code });
        }
        self.end_call(
            id,
            Some(code),
            None,
            super::CallEnd::rejected(super::CallEndedBy::Remote, code, ""),
        );
    }

    /// Sends the INVITE with `Replaces` for the call's dialog; false when
    /// it cannot be made (no offer, no peer tag or target).
    fn start_replaces(
        &mut self,
        now: Instant,
        id: CallId,
        code: u16,
        offer: Option<Bytes>,
    ) -> bool {
        let Some(offer) = offer else {
            return false;
        };
        let call_id = format!("{}@siproam", self.rng.token(20));
        let local_tag = self.rng.token(10);
        let Some(c) = self.calls.get(id) else {
            return false;
        };
        let Some(remote_tag) = c.remote_tag.as_deref() else {
            return false;
        };
        // out of the old dialog: to its first hop (our proxy, or the peer)
        let mut target = match c.role {
            Role::Uac => c.next_hop.unwrap_or(c.first_hop),
            Role::Uas => self.in_dialog_target(c),
        };
        if let Some(a) = c.source_ip() {
            target.local = Some(a);
        }
        let ob = if self.outbound_for(&c.local_uri) {
            ";ob"
        } else {
            ""
        };
        let mut b = MessageBuilder::request(Method::Invite, &c.remote_target)
            .header("From", &format!("<{}>;tag={local_tag}", c.local_uri))
            .header("To", &format!("<{}>", c.remote_uri))
            .header("Call-ID", &call_id)
            .header("CSeq", "1 INVITE")
            .header(
                "Contact",
                &self.contact_header_with(c, target.transport, ob),
            )
            .header(
                "Replaces",
                &format!("{};to-tag={remote_tag};from-tag={}", c.call_id, c.local_tag),
            )
            .header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE")
            // (no 100rel: a reliable provisional would need a PRACK in a
            // dialog not made yet)
            .header("Supported", "replaces");
        if c.peer_supports_replaces {
            b = b.header("Require", "replaces");
        }
        // out of the dialog over a flow through an outbound proxy: that
        // proxy as its pre-loaded Route
        if let Some(route) = self.outbound_route_towards(target) {
            b = b.header("Route", &route);
        }
        let b = b.body("application/sdp", offer);
        if self
            .start_client_tx(now, b, target, TxOwner::Call(id))
            .is_err()
        {
            return false;
        }
        if let Some(c) = self.calls.get_mut(id) {
            c.repair = None;
            c.replacing = Some(Replacing {
                call_id,
                local_tag,
                target,
            });
        }
        self.call_event(CallEvent::Replacing { call: id, code });
        true
    }

    /// A response to our INVITE with `Replaces`: a 2xx makes its dialog
    /// the call's (ACKed, the answer told); a failure ends the call.
    pub(super) fn replacing_response(
        &mut self,
        now: Instant,
        id: CallId,
        resp: &Message,
        code: u16,
        body: Option<Bytes>,
    ) {
        if code < 200 {
            return;
        }
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let Some(r) = c.replacing.take() else {
            return;
        };
        if code >= 300 {
            self.end_call(
                id,
                Some(code),
                None,
                super::CallEnd::rejected(super::CallEndedBy::Remote, code, ""),
            );
            return;
        }
        let old_call_id = std::mem::replace(&mut c.call_id, r.call_id);
        let old_tag = std::mem::replace(&mut c.local_tag, r.local_tag);
        c.replaced = Some((old_call_id, old_tag, c.remote_tag.take()));
        c.remote_tag = tag_param(resp, true);
        if let Some(Ok(siproam_sip::Contact::Addr(a))) = resp.contacts().next() {
            c.remote_target = a.uri().to_string();
        }
        let mut rr: Vec<String> = resp
            .header_values(HeaderName::RecordRoute)
            .flat_map(siproam_sip::split_list)
            .map(str::to_owned)
            .collect();
        rr.reverse();
        c.route_set = rr;
        c.role = Role::Uac;
        c.local_cseq = 1;
        c.remote_cseq = 0;
        c.first_hop = r.target;
        c.next_hop = None;
        c.flow = None;
        c.rseq = 0;
        c.remote_rseq = 0;
        c.refresh = None;
        c.pending_offer = None;
        c.glare_retry = None;
        if let Some(allows) = allow_update(resp) {
            c.peer_allows_update = allows;
        }
        c.peer_supports_replaces = resp.has_token(HeaderName::Supported, "replaces");
        c.phase = CallPhase::Confirmed {
            invite_tx: None,
            unacked_2xx: None,
        };
        for kind in [
            TimerKind::Retransmit2xx,
            TimerKind::AckTimeout,
            TimerKind::Glare,
        ] {
            self.timers.cancel(TimerOwner::Call(id.0), kind);
        }
        self.send_ack(now, id, resp);
        self.call_event(CallEvent::Answer { call: id, body });
    }

    /// The dialog an INVITE of ours with `Replaces` replaced that `req`
    /// belongs to: the call now in its place.
    pub(super) fn replaced_dialog(&self, req: &Message) -> Option<CallId> {
        let (to, from) = (tag_param(req, true)?, tag_param(req, false));
        self.calls
            .iter()
            .find(|(_, c)| {
                c.replaced.as_ref().is_some_and(|(id, local, remote)| {
                    id == req.call_id() && *local == to && *remote == from
                })
            })
            .map(|(id, _)| id)
    }

    /// Answers an in-dialog request with `code` and the call's tag (a
    /// fresh one without a call).
    pub(super) fn respond_in_dialog(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        req: &Message,
        code: u16,
        call: Option<CallId>,
    ) {
        let tag = match call.and_then(|id| self.calls.get(id)) {
            Some(c) => tag_param(req, true).unwrap_or_else(|| c.local_tag.clone()),
            None => self.rng.token(10),
        };
        if let Ok(r) = MessageBuilder::response_to(req, code, reason(code), Some(&tag)).build() {
            let _ = self.respond(now, tx, r);
        }
    }

    /// An INVITE with `Replaces` (RFC 3891 §3).
    pub(super) fn incoming_replaces(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        flow: FlowId,
        req: &Message,
    ) {
        let code = match self.replaces_target(req) {
            Ok(old) => {
                if let Some(new) = self.incoming_call(now, tx, flow, req) {
                    if let Some(c) = self.calls.get_mut(new) {
                        c.replaces = Some(old);
                    }
                    self.call_event(CallEvent::ReplacesCall {
                        call: new,
                        replaced: old,
                    });
                }
                return;
            }
            Err(code) => code,
        };
        self.respond_in_dialog(now, tx, req, code, None);
    }

    /// The confirmed call a `Replaces` names, or the status to refuse it
    /// with.
    fn replaces_target(&self, req: &Message) -> Result<CallId, u16> {
        let mut values = req.header_values(HeaderName::Replaces);
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(400); // none, or more than one (RFC 3891 §3)
        };
        let p = ParamValue::parse(value).map_err(|_| 400u16)?;
        let params = p.params();
        let (Some(to_tag), Some(from_tag)) = (params.value("to-tag"), params.value("from-tag"))
        else {
            return Err(400);
        };
        let call_id = p.value();
        if call_id.is_empty() || to_tag.is_empty() || from_tag.is_empty() {
            return Err(400);
        }
        let (id, c) = self
            .calls
            .iter()
            .find(|(_, c)| {
                c.call_id == call_id
                    && c.local_tag == to_tag
                    && c.remote_tag.as_deref() == Some(from_tag)
            })
            .ok_or(481u16)?;
        if !matches!(c.phase, CallPhase::Confirmed { .. }) {
            return Err(481);
        }
        if params.get("early-only").is_some() {
            return Err(486);
        }
        // only the dialog's peer may replace it (RFC 3891 §3 asks for an
        // authorization check: the tags alone are seen by every proxy) —
        // itself, or someone it referred (attended transfer: `Referred-By`
        // names the peer, RFC 3891 §6)
        let peer = siproam_sip::Uri::parse(&c.remote_uri);
        let is_peer =
            |uri: Option<String>| match (uri.as_deref().map(siproam_sip::Uri::parse), &peer) {
                (Some(Ok(a)), Ok(b)) => a.equivalent(b),
                _ => false,
            };
        let from = req.from().ok().map(|f| f.uri().to_string());
        let referred_by = req
            .header(HeaderName::ReferredBy)
            .and_then(|v| siproam_sip::NameAddr::parse(v.trim()).ok())
            .map(|n| n.uri().to_string());
        if !is_peer(from) && !is_peer(referred_by) {
            return Err(403);
        }
        Ok(id)
    }
}
