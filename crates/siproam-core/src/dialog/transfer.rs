//! Call transfer: REFER (RFC 3515) in a call's dialog, both roles, with
//! its implicit subscription's `message/sipfrag` NOTIFYs, `Referred-By`
//! (RFC 3892) and attended transfer with `Replaces` (RFC 3891).
//!
//! Transferor ([`Endpoint::transfer`], [`Endpoint::transfer_attended`]): a
//! REFER in the call's dialog with `Refer-To` (for an attended transfer
//! the other call's remote target with `?Replaces=` naming that call's
//! dialog, escaped) and `Referred-By` our AoR. The NOTIFYs that follow are
//! answered 200 and told as [`TransferState::Trying`] (a 1xx sipfrag),
//! [`TransferState::Succeeded`] (2xx: the original call is then hung up)
//! or [`TransferState::Failed`] (a final failure, the REFER refused or
//! lost, the call ended first). A NOTIFY `refer` for no transfer of the
//! call gets 481.
//!
//! Transferee: a REFER in a confirmed call's dialog with one `Refer-To`
//! naming a `sip:`/`sips:`/`tel:` URI is answered 202 and followed by a
//! NOTIFY `SIP/2.0 100 Trying`; the application is told
//! ([`TransferState::Requested`] with the target and any `Replaces`) and
//! places the new call with [`Endpoint::transfer_invite`] (it carries
//! `Referred-By` and the `Replaces`) — or gives up with
//! [`Endpoint::refuse_transfer`]. The new call's first ringing (180/183)
//! is sent once as a NOTIFY, its final answer as the last (`terminated`). A `Refer-To` that does not parse (or
//! none, or several) gets 400, another scheme 403; a REFER outside any
//! dialog 403 (not supported), in an unconfirmed call 481; beyond
//! [`MAX_TRANSFERS`] at once 503. Nothing else changes.
//!
//! A transfer lives no longer than its call (on the transferee side, no
//! longer than the new call either): bounded by the calls alive.

use std::time::Instant;

use bytes::Bytes;
use siproam_sip::{HeaderName, Message, MessageBuilder, Method};

use super::{reason, CallId, CallPhase, CallState, InviteSpec};
use crate::endpoint::{CoreError, Endpoint, Event, RequestFailure, ServerTxId, TxOwner};
use crate::timers::{TimerKind, TimerOwner};

/// The most transfers (both roles) at once.
pub const MAX_TRANSFERS: usize = 32;

/// A transfer (one REFER, sent or received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u32);

/// Our side of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferRole {
    /// We sent the REFER.
    Transferor,
    /// We received it and place the new call.
    Transferee,
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// The REFER was sent (transferor) or accepted (transferee).
    Requested,
    /// The new call is being placed.
    Trying,
    /// The new call was answered.
    Succeeded,
    /// It failed (`code` says how, when known).
    Failed,
}

impl TransferState {
    /// The name used in events (`requested`, `trying`, `succeeded`,
    /// `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Requested => "requested",
            TransferState::Trying => "trying",
            TransferState::Succeeded => "succeeded",
            TransferState::Failed => "failed",
        }
    }
}

/// Something happened to a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEvent {
    /// The transfer.
    pub transfer: TransferId,
    /// The call the REFER went in.
    pub call: CallId,
    /// Our side.
    pub role: TransferRole,
    /// Its state.
    pub state: TransferState,
    /// Where the call is transferred (the `Refer-To` URI, without its
    /// headers part).
    pub target: String,
    /// The status that decided the state (a sipfrag's, the REFER's, the
    /// new call's).
    pub code: Option<u16>,
    /// The `Replaces` the new call carries (transferee, attended).
    pub replaces: Option<String>,
    /// The new call (transferee, once placed).
    pub new_call: Option<CallId>,
}

/// Why a REFER was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferRefusal {
    /// No `Refer-To`, several, or one that does not parse (400).
    #[error("no usable Refer-To")]
    BadReferTo,
    /// A scheme we cannot call (403).
    #[error("Refer-To scheme not supported")]
    Scheme,
}

#[derive(Debug)]
struct Transfer {
    call: CallId,
    role: TransferRole,
    target: String,
    replaces: Option<String>,
    /// Transferor: the REFER's CSeq (the NOTIFYs' `Event` id).
    /// Transferee: the received REFER's CSeq.
    refer_cseq: u32,
    /// Transferee: the new call.
    new_call: Option<CallId>,
    /// Transferee: who referred (for the new call's `Referred-By`).
    referred_by: Option<String>,
    /// A final state was told.
    done: bool,
    /// Transferee: the new call's ringing was sent to the transferor
    /// (once: RFC 3515 §2.4.5 asks for few NOTIFYs).
    ringing_told: bool,
}

/// The transfers in progress.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    next: u32,
    live: std::collections::BTreeMap<TransferId, Transfer>,
}

/// `%`-escapes what may not stand in a URI header value (RFC 3261 §25.1
/// `hvalue`: unreserved and `[]/?:+$` stay).
fn escape_hvalue(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()[]/?:+$".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes `%`-escapes (a broken escape stays as written); `None` for a
/// result that is not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The status code of a `message/sipfrag` body's status line (bounded:
/// only the first line, at most 256 bytes, is read).
fn sipfrag_code(body: &[u8]) -> Option<u16> {
    let head = body.get(..body.len().min(256))?;
    let line = head.split(|b| *b == b'\r' || *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    words
        .next()?
        .parse::<u16>()
        .ok()
        .filter(|c| (100..700).contains(c))
}

/// The target and `Replaces` of a REFER's one `Refer-To`.
pub fn parse_refer_to(req: &Message) -> Result<(String, Option<String>), ReferRefusal> {
    let mut values = req.header_values(HeaderName::ReferTo);
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ReferRefusal::BadReferTo);
    };
    let na = siproam_sip::NameAddr::parse(value.trim()).map_err(|_| ReferRefusal::BadReferTo)?;
    let uri = na.uri();
    if !uri.is_supported_scheme() {
        return Err(ReferRefusal::Scheme);
    }
    let full = uri.as_str();
    let Some(sip) = uri.as_sip() else {
        // tel: no headers part
        return Ok((full.to_owned(), None));
    };
    let mut replaces = None;
    for (name, value) in sip.header_pairs() {
        if name.eq_ignore_ascii_case("Replaces") {
            if replaces.is_some() {
                return Err(ReferRefusal::BadReferTo);
            }
            let v = unescape(value).ok_or(ReferRefusal::BadReferTo)?;
            // it must be a well-formed Replaces value
            let p = siproam_sip::ParamValue::parse(&v).map_err(|_| ReferRefusal::BadReferTo)?;
            if p.value().is_empty()
                || p.params().value("to-tag").is_none()
                || p.params().value("from-tag").is_none()
            {
                return Err(ReferRefusal::BadReferTo);
            }
            replaces = Some(v);
        }
    }
    let target = match full.split_once('?') {
        Some((t, _)) => t,
        None => full,
    };
    Ok((target.to_owned(), replaces))
}

/// Whether a NOTIFY is for the `refer` package.
fn is_refer_notify(req: &Message) -> bool {
    req.header(HeaderName::Event).is_some_and(|e| {
        e.split(';')
            .next()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("refer"))
    })
}

/// The `id` parameter of a NOTIFY's `Event`.
fn event_id(req: &Message) -> Option<u32> {
    let e = req.header(HeaderName::Event)?;
    e.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("id")
            .then(|| v.trim().parse().ok())?
    })
}

impl Endpoint {
    fn new_transfer(&mut self, t: Transfer) -> TransferId {
        self.transfers.next = self.transfers.next.wrapping_add(1);
        let id = TransferId(self.transfers.next);
        self.transfers.live.insert(id, t);
        id
    }

    fn transfer_event(&mut self, id: TransferId, state: TransferState, code: Option<u16>) {
        let Some(t) = self.transfers.live.get_mut(&id) else {
            return;
        };
        if t.done {
            return;
        }
        if matches!(state, TransferState::Succeeded | TransferState::Failed) {
            t.done = true;
        }
        let ev = TransferEvent {
            transfer: id,
            call: t.call,
            role: t.role,
            state,
            target: t.target.clone(),
            code,
            replaces: t.replaces.clone(),
            new_call: t.new_call,
        };
        self.events.push_back(Event::Transfer(ev));
    }

    /// Blind transfer: sends a REFER in `call`'s (confirmed) dialog with
    /// `Refer-To: <target>` and `Referred-By` our AoR. Its progress comes
    /// as [`Event::Transfer`].
    pub fn transfer(
        &mut self,
        now: Instant,
        call: CallId,
        target: &str,
    ) -> Result<TransferId, CoreError> {
        let uri = siproam_sip::Uri::parse(target).map_err(|_| CoreError::InvalidState)?;
        if !uri.is_supported_scheme() {
            return Err(CoreError::InvalidState);
        }
        self.send_refer(now, call, target.to_owned(), None)
    }

    /// Attended transfer: sends a REFER in `call`'s dialog whose
    /// `Refer-To` is `other`'s remote target with `?Replaces=` naming
    /// `other`'s dialog (RFC 3891 §7): the peer of `call` calls the peer
    /// of `other`, replacing our call with it.
    pub fn transfer_attended(
        &mut self,
        now: Instant,
        call: CallId,
        other: CallId,
    ) -> Result<TransferId, CoreError> {
        if call == other {
            return Err(CoreError::InvalidState);
        }
        let o = self.calls.get(other).ok_or(CoreError::NoSuchCall)?;
        if !matches!(o.phase, CallPhase::Confirmed { .. }) {
            return Err(CoreError::InvalidState);
        }
        let remote_tag = o.remote_tag.clone().ok_or(CoreError::InvalidState)?;
        // the third party's view: its tag is the to-tag, ours the from-tag
        let replaces = format!("{};to-tag={remote_tag};from-tag={}", o.call_id, o.local_tag);
        let base = match o.remote_target.split_once('?') {
            Some((b, _)) => b.to_owned(),
            None => o.remote_target.clone(),
        };
        self.send_refer(now, call, base, Some(replaces))
    }

    fn send_refer(
        &mut self,
        now: Instant,
        call: CallId,
        target: String,
        replaces: Option<String>,
    ) -> Result<TransferId, CoreError> {
        let c = self.calls.get(call).ok_or(CoreError::NoSuchCall)?;
        if !matches!(c.phase, CallPhase::Confirmed { .. }) {
            return Err(CoreError::InvalidState);
        }
        if self.transfers.live.len() >= MAX_TRANSFERS {
            return Err(CoreError::InvalidState);
        }
        let local_uri = c.local_uri.clone();
        let (b, hop) = self
            .in_dialog_request(call, Method::Refer, None)
            .ok_or(CoreError::NoSuchCall)?;
        let cseq = self.calls.get(call).map_or(0, |c| c.local_cseq);
        let refer_to = match &replaces {
            Some(r) => format!("<{target}?Replaces={}>", escape_hvalue(r)),
            None => format!("<{target}>"),
        };
        let contact = match self.calls.get(call) {
            Some(c) => self.contact_header_with(c, hop.transport, ""),
            None => return Err(CoreError::NoSuchCall),
        };
        let b = b
            .header("Refer-To", &refer_to)
            .header("Referred-By", &format!("<{local_uri}>"))
            .header("Contact", &contact);
        let id = self.new_transfer(Transfer {
            call,
            role: TransferRole::Transferor,
            target,
            replaces,
            refer_cseq: cseq,
            new_call: None,
            referred_by: None,
            done: false,
            ringing_told: false,
        });
        if let Err(e) = self.start_client_tx(now, b, hop, TxOwner::Transfer(id)) {
            self.transfers.live.remove(&id);
            return Err(e);
        }
        self.transfer_event(id, TransferState::Requested, None);
        Ok(id)
    }

    /// The CSeq of a transfer's request sent again after a challenge: the
    /// call's next; a REFER's is remembered (its NOTIFYs name it).
    pub(crate) fn transfer_next_cseq(&mut self, id: TransferId, method: &str) -> Option<u32> {
        let call = self.transfers.live.get(&id)?.call;
        let next = self.call_next_cseq(call)?;
        if method == "REFER" {
            if let Some(t) = self.transfers.live.get_mut(&id) {
                t.refer_cseq = next;
            }
        }
        Some(next)
    }

    /// A final response to a transfer's REFER or NOTIFY.
    pub(crate) fn transfer_response(&mut self, now: Instant, id: TransferId, resp: Message) {
        let Some(code) = resp.status() else { return };
        if code < 200 {
            return;
        }
        let Some(t) = self.transfers.live.get(&id) else {
            return;
        };
        if resp.cseq().method == Method::Refer {
            if code >= 300 {
                self.transfer_event(id, TransferState::Failed, Some(code));
                self.transfers.live.remove(&id);
            } else if t.role == TransferRole::Transferor {
                // accepted: a NOTIFY must follow (RFC 3515 §2.4.4, RFC
                // 6665 §4.1.2.4); none within 64·T1 and it has failed
                self.timers.set(
                    TimerOwner::Transfer(id.0),
                    TimerKind::SubscriptionExpiry,
                    now + self.config.t1x64(),
                );
            }
        } else if t.role == TransferRole::Transferee && t.done {
            // the last NOTIFY answered: the transfer is over
            self.transfers.live.remove(&id);
        }
    }

    /// No NOTIFY came for a REFER the peer accepted: the transfer failed
    /// (408), the call stays.
    pub(crate) fn transfer_timer(&mut self, now: Instant, id: TransferId) {
        let _ = now;
        if self
            .transfers
            .live
            .get(&id)
            .is_some_and(|t| t.role == TransferRole::Transferor)
        {
            self.transfer_event(id, TransferState::Failed, Some(408));
            self.transfers.live.remove(&id);
        }
    }

    /// A transfer's REFER (or NOTIFY) got no answer.
    pub(crate) fn transfer_failed(&mut self, now: Instant, id: TransferId, why: RequestFailure) {
        let _ = now;
        let Some((role, done)) = self.transfers.live.get(&id).map(|t| (t.role, t.done)) else {
            return;
        };
        if role == TransferRole::Transferor {
            let code = match why {
                RequestFailure::Timeout => 408,
                RequestFailure::Transport(_) => 503,
            };
            self.transfer_event(id, TransferState::Failed, Some(code));
        }
        if role == TransferRole::Transferor || done {
            self.transfers.live.remove(&id);
        }
    }

    /// A REFER in a call's dialog (transferee).
    pub(super) fn incoming_refer(
        &mut self,
        now: Instant,
        call: CallId,
        tx: ServerTxId,
        req: &Message,
    ) {
        let confirmed = self
            .calls
            .get(call)
            .is_some_and(|c| matches!(c.phase, CallPhase::Confirmed { .. }));
        if !confirmed {
            self.respond_in_dialog(now, tx, req, 481, Some(call));
            return;
        }
        let (target, replaces) = match parse_refer_to(req) {
            Ok(t) => t,
            Err(e) => {
                let code = match e {
                    ReferRefusal::BadReferTo => 400,
                    ReferRefusal::Scheme => 403,
                };
                self.respond_in_dialog(now, tx, req, code, Some(call));
                return;
            }
        };
        if self.transfers.live.len() >= MAX_TRANSFERS {
            self.respond_in_dialog(now, tx, req, 503, Some(call));
            return;
        }
        let referred_by = req
            .header(HeaderName::ReferredBy)
            .and_then(|v| siproam_sip::NameAddr::parse(v.trim()).ok())
            .map(|n| n.uri().as_str().to_owned())
            .filter(|u| u.len() <= 512);
        let tag = self
            .calls
            .get(call)
            .map(|c| c.local_tag.clone())
            .unwrap_or_default();
        let Ok(mut accepted) =
            MessageBuilder::response_to(req, 202, "Accepted", Some(&tag)).build()
        else {
            return;
        };
        if let Some(c) = self.calls.get(call) {
            let transport = self.in_dialog_target(c).transport;
            let _ = accepted.push_header("Contact", &self.contact_header_with(c, transport, ""));
        }
        if self.respond(now, tx, accepted).is_err() {
            return;
        }
        let id = self.new_transfer(Transfer {
            call,
            role: TransferRole::Transferee,
            target,
            replaces,
            refer_cseq: req.cseq().seq,
            new_call: None,
            referred_by,
            done: false,
            ringing_told: false,
        });
        self.send_sipfrag(now, id, 100, false);
        self.transfer_event(id, TransferState::Requested, None);
    }

    /// Sends the transferee's NOTIFY with `SIP/2.0 <code>`, `terminated`
    /// when `last`. Nothing when the call is gone.
    fn send_sipfrag(&mut self, now: Instant, id: TransferId, code: u16, last: bool) {
        let Some(t) = self.transfers.live.get(&id) else {
            return;
        };
        let (call, cseq) = (t.call, t.refer_cseq);
        let Some((b, hop)) = self.in_dialog_request(call, Method::Notify, None) else {
            if last {
                self.transfers.live.remove(&id);
            }
            return;
        };
        let Some(contact) = self
            .calls
            .get(call)
            .map(|c| self.contact_header_with(c, hop.transport, ""))
        else {
            return;
        };
        let state = if last {
            "terminated;reason=noresource".to_owned()
        } else {
            "active;expires=60".to_owned()
        };
        let b = b
            .header("Event", &format!("refer;id={cseq}"))
            .header("Subscription-State", &state)
            .header("Contact", &contact)
            .body(
                "message/sipfrag;version=2.0",
                Bytes::from(format!("SIP/2.0 {code} {}\r\n", reason(code))),
            );
        let _ = self.start_client_tx(now, b, hop, TxOwner::Transfer(id));
    }

    /// Places the new call of a transfer we accepted (transferee): `spec`
    /// as for [`Endpoint::invite`] (its `uri` normally the event's
    /// target), with `Referred-By` and the `Replaces` the `Refer-To`
    /// carried. Its progress is sent to the transferor and told as
    /// [`Event::Transfer`].
    pub fn transfer_invite(
        &mut self,
        now: Instant,
        transfer: TransferId,
        spec: InviteSpec,
    ) -> Result<CallId, CoreError> {
        let t = self
            .transfers
            .live
            .get(&transfer)
            .filter(|t| t.role == TransferRole::Transferee && t.new_call.is_none() && !t.done)
            .ok_or(CoreError::InvalidState)?;
        let mut headers = Vec::new();
        if let Some(by) = &t.referred_by {
            headers.push(("Referred-By".to_owned(), format!("<{by}>")));
        }
        if let Some(r) = &t.replaces {
            headers.push(("Replaces".to_owned(), r.clone()));
        }
        let new = self.invite_with(now, spec, headers)?;
        if let Some(t) = self.transfers.live.get_mut(&transfer) {
            t.new_call = Some(new);
        }
        self.transfer_event(transfer, TransferState::Trying, None);
        // (a call that failed at once has told its end already)
        if self.calls.get(new).is_none() {
            self.transfer_call_state(now, new, CallState::Disconnected, Some(500));
        }
        Ok(new)
    }

    /// Gives up a transfer we accepted without placing its call
    /// (transferee): the transferor hears `code` (a final failure) and the
    /// application a failed transfer.
    pub fn refuse_transfer(
        &mut self,
        now: Instant,
        transfer: TransferId,
        code: u16,
    ) -> Result<(), CoreError> {
        let ok =
            self.transfers.live.get(&transfer).is_some_and(|t| {
                t.role == TransferRole::Transferee && t.new_call.is_none() && !t.done
            });
        if !ok {
            return Err(CoreError::InvalidState);
        }
        let code = if (300..700).contains(&code) {
            code
        } else {
            503
        };
        self.transfer_event(transfer, TransferState::Failed, Some(code));
        self.send_sipfrag(now, transfer, code, true);
        Ok(())
    }

    /// A call's state changed: what that means for the transfers on it
    /// (hooked where call states are told).
    pub(super) fn transfer_call_state(
        &mut self,
        now: Instant,
        call: CallId,
        state: CallState,
        code: Option<u16>,
    ) {
        if self.transfers.live.is_empty() {
            return;
        }
        let ids: Vec<(TransferId, bool)> = self
            .transfers
            .live
            .iter()
            .filter(|(_, t)| t.call == call || t.new_call == Some(call))
            .map(|(id, t)| (*id, t.new_call == Some(call)))
            .collect();
        for (id, is_new) in ids {
            match (is_new, state) {
                (true, CallState::Confirmed) => {
                    self.transfer_event(id, TransferState::Succeeded, Some(code.unwrap_or(200)));
                    self.send_sipfrag(now, id, code.unwrap_or(200), true);
                }
                (true, CallState::Ringing | CallState::Early) => {
                    let first = self
                        .transfers
                        .live
                        .get_mut(&id)
                        .is_some_and(|t| !std::mem::replace(&mut t.ringing_told, true));
                    if first {
                        let code = code.filter(|c| (101..200).contains(c)).unwrap_or(180);
                        self.send_sipfrag(now, id, code, false);
                    }
                }
                (true, CallState::Disconnected) => {
                    let code = code.filter(|c| *c >= 300).unwrap_or(487);
                    let told = self.transfers.live.get(&id).is_some_and(|t| t.done);
                    if !told {
                        self.transfer_event(id, TransferState::Failed, Some(code));
                        self.send_sipfrag(now, id, code, true);
                    }
                    // (the NOTIFY's transaction keeps it until answered)
                    if let Some(t) = self.transfers.live.get_mut(&id) {
                        t.new_call = None;
                    }
                }
                (false, CallState::Disconnected) => {
                    // the call the REFER went in ended
                    let t = self.transfers.live.get(&id);
                    let transferor = t.is_some_and(|t| t.role == TransferRole::Transferor);
                    if transferor {
                        self.transfer_event(id, TransferState::Failed, code);
                        self.transfers.live.remove(&id);
                    } else if t.is_some_and(|t| t.new_call.is_none()) {
                        self.transfers.live.remove(&id);
                    }
                }
                _ => {}
            }
        }
        // a transferee's transfer whose call and new call both ended
        let calls = &self.calls;
        self.transfers.live.retain(|_, t| {
            t.role == TransferRole::Transferor
                || calls.contains(t.call)
                || t.new_call.is_some_and(|n| calls.contains(n))
        });
    }

    /// A NOTIFY of the `refer` package in a call's dialog (transferor):
    /// 200 and its sipfrag told; 481 when no transfer of ours waits for it.
    pub(super) fn refer_notify(
        &mut self,
        now: Instant,
        call: CallId,
        tx: ServerTxId,
        req: &Message,
    ) -> bool {
        if !is_refer_notify(req) {
            return false;
        }
        let want = event_id(req);
        let found = self
            .transfers
            .live
            .iter()
            .rev()
            .filter(|(_, t)| t.call == call && t.role == TransferRole::Transferor)
            .filter(|(_, t)| want.is_none_or(|w| w == t.refer_cseq))
            .map(|(id, _)| *id)
            .next();
        let Some(id) = found else {
            self.respond_in_dialog(now, tx, req, 481, Some(call));
            return true;
        };
        self.timers
            .cancel(TimerOwner::Transfer(id.0), TimerKind::SubscriptionExpiry);
        let code = sipfrag_code(req.body());
        let Some(code) = code else {
            self.respond_in_dialog(now, tx, req, 400, Some(call));
            return true;
        };
        self.respond_in_dialog(now, tx, req, 200, Some(call));
        let terminated = req.header(HeaderName::SubscriptionState).is_some_and(|s| {
            s.trim_start()
                .to_ascii_lowercase()
                .starts_with("terminated")
        });
        match code {
            100..=199 => {
                self.transfer_event(id, TransferState::Trying, Some(code));
                if terminated {
                    // ended without a final word
                    self.transfer_event(id, TransferState::Failed, None);
                    self.transfers.live.remove(&id);
                }
            }
            200..=299 => {
                self.transfer_event(id, TransferState::Succeeded, Some(code));
                self.transfers.live.remove(&id);
                // the transferee is with the target now: our call ends
                let _ = self.hang_up(now, call);
            }
            _ => {
                self.transfer_event(id, TransferState::Failed, Some(code));
                self.transfers.live.remove(&id);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn replaces_escapes_and_comes_back() {
        let r = "abc@h;to-tag=x1;from-tag=y 2";
        let e = escape_hvalue(r);
        assert!(!e.contains(';') && !e.contains('=') && !e.contains(' ') && !e.contains('@'));
        assert_eq!(unescape(&e).unwrap(), r);
    }

    #[test]
    fn sipfrag_status_lines() {
        assert_eq!(sipfrag_code(b"SIP/2.0 100 Trying\r\n"), Some(100));
        assert_eq!(sipfrag_code(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(
            sipfrag_code(b"SIP/2.0 486 Busy Here\r\nX: y\r\n"),
            Some(486)
        );
        assert_eq!(sipfrag_code(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_code(b"SIP/2.0 99 Low"), None);
        assert_eq!(sipfrag_code(b""), None);
    }
}
