//! Calls: INVITE dialogs (RFC 3261 §12–§15) as a user agent — outgoing and
//! incoming INVITE, provisional and final responses, ACK (with the UAS's
//! 2xx retransmission), CANCEL, BYE, re-INVITE and UPDATE as target
//! refresh and new offer, 491 glare with the RFC's retry timers, 481 for
//! unknown dialogs. Bodies (SDP) are opaque here: the application makes
//! and reads them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_sip::{HeaderName, Message, MessageBuilder, Method, Uri};

use crate::endpoint::{
    fmt_hostport, CoreError, Endpoint, Event, RequestFailure, RequestId, ServerTxId, Target,
    TxOwner,
};
use crate::flow::{FlowId, Transport};
use crate::timers::{TimerKind, TimerOwner};

mod replaces;
pub mod transfer;

/// A call's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u32);

/// A call's state, as reported (`docs/events.md` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// We sent an INVITE; nothing but 100 yet.
    Calling,
    /// An INVITE arrived; not answered yet.
    Incoming,
    /// 180 (either side).
    Ringing,
    /// 183 or another provisional with a body (early media).
    Early,
    /// 2xx and ACK: the call is up.
    Confirmed,
    /// It ended.
    Disconnected,
}

impl CallState {
    /// The name used in JSON events.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Calling => "calling",
            CallState::Incoming => "incoming",
            CallState::Ringing => "ringing",
            CallState::Early => "early",
            CallState::Confirmed => "confirmed",
            CallState::Disconnected => "disconnected",
        }
    }
}

/// The other party of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPeer {
    /// Its URI (the callee's, or the caller's From URI).
    pub uri: String,
    /// Its display name (the caller's From), if it gave one.
    pub display: Option<String>,
}

/// Which side ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEndedBy {
    /// We did (hung up, cancelled, refused, or gave up on the network).
    Local,
    /// The peer did (BYE, CANCEL, or a failure response).
    Remote,
}

impl CallEndedBy {
    /// `local` or `remote` (the `call` event's `by`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallEndedBy::Local => "local",
            CallEndedBy::Remote => "remote",
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEndReason {
    /// A BYE.
    Hangup,
    /// A CANCEL before the answer.
    Cancelled,
    /// A final failure response to the INVITE (sent or received).
    Rejected {
        /// Its status.
        code: u16,
        /// Its reason phrase.
        phrase: String,
    },
    /// A request got no answer.
    Timeout,
    /// The connection or the packet's way failed.
    TransportFailure,
}

impl CallEndReason {
    /// The `call` event's `reason`: `hangup`, `cancelled`, `486 Busy
    /// Here`, `timeout`, `transport failure`.
    pub fn text(&self) -> String {
        match self {
            CallEndReason::Hangup => "hangup".into(),
            CallEndReason::Cancelled => "cancelled".into(),
            CallEndReason::Rejected { code, phrase } => format!("{code} {phrase}"),
            CallEndReason::Timeout => "timeout".into(),
            CallEndReason::TransportFailure => "transport failure".into(),
        }
    }
}

/// Who ended a call and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// Which side.
    pub by: CallEndedBy,
    /// Why.
    pub reason: CallEndReason,
}

impl CallEnd {
    fn new(by: CallEndedBy, reason: CallEndReason) -> CallEnd {
        CallEnd { by, reason }
    }

    /// A final failure response `code` (with the standard phrase when
    /// `phrase` is empty).
    fn rejected(by: CallEndedBy, code: u16, phrase: &str) -> CallEnd {
        let phrase = if phrase.is_empty() {
            reason(code)
        } else {
            phrase
        };
        CallEnd::new(
            by,
            CallEndReason::Rejected {
                code,
                phrase: phrase.to_owned(),
            },
        )
    }
}

/// What happened to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEvent {
    /// The call changed state.
    State {
        /// The call.
        call: CallId,
        /// Its new state.
        state: CallState,
        /// The status code that caused it, if any.
        code: Option<u16>,
        /// The peer's body (an SDP offer or answer) that came with it.
        body: Option<Bytes>,
        /// Who the call is with: on `Calling` and `Incoming` (the callee's
        /// URI, or the caller's From).
        peer: Option<CallPeer>,
        /// Who ended the call and why: on `Disconnected`.
        end: Option<CallEnd>,
    },
    /// The peer sent a new offer in a re-INVITE or UPDATE: answer it with
    /// [`Endpoint::answer_offer`] (or the request is answered 488 after
    /// the transaction timer).
    Offer {
        /// The call.
        call: CallId,
        /// The offer.
        body: Bytes,
        /// True for UPDATE, false for re-INVITE.
        update: bool,
    },
    /// The peer sent a re-INVITE without an offer: make one and give it to
    /// [`Endpoint::answer_offer`]; the peer's answer comes back as
    /// [`CallEvent::Answer`] (from its ACK).
    OfferWanted {
        /// The call.
        call: CallId,
    },
    /// The peer answered our re-INVITE / UPDATE.
    Answer {
        /// The call.
        call: CallId,
        /// The answer (may be absent for a target refresh without SDP).
        body: Option<Bytes>,
    },
    /// The peer CANCELled its re-INVITE before we answered it (RFC 6141
    /// §5.5: its offer went stale in a network change): the re-INVITE was
    /// answered 487 and its [`CallEvent::Offer`] is void; the peer's next
    /// offer follows.
    OfferCancelled {
        /// The call.
        call: CallId,
    },
    /// Our re-INVITE / UPDATE failed (not fatal for the call).
    RefreshFailed {
        /// The call.
        call: CallId,
        /// The status.
        code: u16,
    },
    /// The target refresh repairing the call after a flow failure failed
    /// with `code` (481, or 408 for no answer): the dialog is gone, so an
    /// INVITE with `Replaces` (RFC 3891) carrying the same offer went out
    /// to make a new one for the call. Its answer comes as
    /// [`CallEvent::Answer`] (the call stays confirmed and keeps its id);
    /// if it fails, the call ends.
    Replacing {
        /// The call.
        call: CallId,
        /// What the refresh got.
        code: u16,
    },
    /// An incoming call replaces one of ours (an INVITE with `Replaces`
    /// naming a confirmed dialog, RFC 3891 §3): answer it as any call —
    /// typically at once, with the media of `replaced`; once it is
    /// confirmed, `replaced` is ended with a BYE.
    ReplacesCall {
        /// The new, incoming call.
        call: CallId,
        /// The call it replaces.
        replaced: CallId,
    },
}

/// How to place a call.
#[derive(Debug, Clone)]
pub struct InviteSpec {
    /// The Request-URI (`sip:bob@example.test`).
    pub uri: String,
    /// Our address of record (From).
    pub from: String,
    /// The next hop (a proxy, or the callee), already resolved.
    pub target: Target,
    /// The offer, if any (`application/sdp`).
    pub sdp: Option<Bytes>,
    /// Our Contact's user part.
    pub contact_user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uac,
    Uas,
}

/// A message retransmitted until it is acknowledged (our 2xx until its
/// ACK, a reliable provisional until its PRACK), and the current interval.
#[derive(Debug)]
struct Unacked {
    message: Message,
    interval: Duration,
}

/// How far an INVITE not answered yet has come (a provisional response
/// sent or received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Nothing but 100 yet.
    None,
    /// 180.
    Ringing,
    /// 183 or another provisional (early media).
    Early,
}

/// Where a call is in its life: what only some phases have is carried by
/// their variants (a call that ended is removed, it has no phase).
#[derive(Debug)]
enum CallPhase {
    /// We placed the call and no final response came yet (`Calling`,
    /// `Ringing`, `Early`).
    Outgoing {
        progress: Progress,
        /// Our INVITE's transaction (`None` once given up after a
        /// network change, until [`Endpoint::resend_invite`]).
        invite: Option<RequestId>,
        /// The offer our INVITE carried (sent again when no fresh one
        /// comes).
        offer: Option<Bytes>,
        /// We CANCELled our INVITE: a 2xx that still comes is ACKed and
        /// BYEd.
        cancelled: bool,
    },
    /// An INVITE came and we sent no final response yet (`Incoming`,
    /// `Ringing`, `Early`).
    Incoming {
        progress: Progress,
        /// Its server transaction, which our answers go through.
        tx: ServerTxId,
        /// The INVITE.
        request: Message,
        /// The peer requires reliable provisional responses (RFC 3262).
        reliable_1xx: bool,
        /// Our reliable provisional awaiting its PRACK.
        unacked_1xx: Option<Unacked>,
    },
    /// We answered the peer's INVITE with a 2xx and wait for its ACK (the
    /// state reported stays what it was until the ACK).
    Answered {
        progress: Progress,
        tx: ServerTxId,
        request: Message,
        /// Our 2xx, retransmitted until the ACK.
        ok: Unacked,
    },
    /// 2xx and ACK: the call is up.
    Confirmed {
        /// The INVITE's server transaction of a call we answered: a 2xx
        /// awaiting its ACK is retransmitted through it.
        invite_tx: Option<ServerTxId>,
        /// Our 2xx to the peer's re-INVITE, retransmitted until its ACK.
        unacked_2xx: Option<Unacked>,
    },
}

impl CallPhase {
    /// The state reported for the phase.
    fn state(&self) -> CallState {
        let early = |p: Progress, none: CallState| match p {
            Progress::None => none,
            Progress::Ringing => CallState::Ringing,
            Progress::Early => CallState::Early,
        };
        match self {
            CallPhase::Outgoing { progress, .. } => early(*progress, CallState::Calling),
            CallPhase::Incoming { progress, .. } | CallPhase::Answered { progress, .. } => {
                early(*progress, CallState::Incoming)
            }
            CallPhase::Confirmed { .. } => CallState::Confirmed,
        }
    }
}

/// One call: what every call has (its dialog's identifiers, addresses,
/// route set, sequence numbers, the offer/answer exchanges in progress),
/// and its [`CallPhase`].
#[derive(Debug)]
pub(crate) struct Call {
    role: Role,
    phase: CallPhase,
    call_id: String,
    local_tag: String,
    /// The peer's tag: `None` before an early dialog of ours exists, or
    /// from a peer that sends none (RFC 2543).
    remote_tag: Option<String>,
    local_uri: String,
    remote_uri: String,
    local_cseq: u32,
    remote_cseq: u32,
    remote_target: String,
    route_set: Vec<String>,
    contact_user: String,
    /// Our Contact address (changed in place by a network change).
    contact: SocketAddr,
    /// The first hop used for the INVITE (a proxy, or the peer).
    first_hop: Target,
    /// A re-INVITE or UPDATE of ours in progress: (its transaction,
    /// update, its offer).
    refresh: Option<(RequestId, bool, Option<Bytes>)>,
    /// A peer's re-INVITE / UPDATE waiting for our answer.
    pending_offer: Option<(ServerTxId, Message)>,
    /// A refresh to retry after a 491: (update, body).
    glare_retry: Option<(bool, Option<Bytes>)>,
    /// The flow the dialog was made on (`None` after a network change
    /// moved the call, until its next request picks one).
    flow: Option<FlowId>,
    /// Our last RSeq (RFC 3262).
    rseq: u32,
    /// The peer's last RSeq we PRACKed.
    remote_rseq: u32,
    /// The peer's last Allow header listed UPDATE (RFC 3311 §5.1).
    peer_allows_update: bool,
    /// Where in-dialog requests go instead of the route set's first hop
    /// (or the remote target), which is unreachable from our address
    /// family after a network change: the same proxy reached in the other
    /// family. The Route headers are unchanged.
    next_hop: Option<Target>,
    /// The address to send from (and so put in Via) when it is not the
    /// Contact's: a network change that updates the Via but keeps the
    /// Contact (PJSIP's `UPDATE_VIA` without `UPDATE_CONTACT`).
    send_from: Option<SocketAddr>,
    /// Being repaired after a flow failure: the next refresh's 481 or 408
    /// is followed by an INVITE with `Replaces` when this says so
    /// (`crate::flow_failure`).
    repair: Option<bool>,
    /// Our INVITE with `Replaces` making a new dialog for the call.
    replacing: Option<Replacing>,
    /// The dialog an INVITE with `Replaces` replaced (a BYE for it gets
    /// 200 and leaves the call alone): Call-ID, local tag, remote tag.
    replaced: Option<(String, String, Option<String>)>,
    /// The call an incoming INVITE with `Replaces` replaces, ended once
    /// this one is confirmed.
    replaces: Option<CallId>,
    /// The peer listed `replaces` in Supported.
    peer_supports_replaces: bool,
    /// Headers our INVITE carries besides the usual (a transfer's
    /// `Referred-By` and `Replaces`, `transfer`).
    invite_headers: Vec<(String, String)>,
}

/// Our INVITE with `Replaces` (RFC 3891), not answered yet: the new
/// dialog's identifiers.
#[derive(Debug)]
struct Replacing {
    call_id: String,
    local_tag: String,
    /// Where it went (the new dialog's first hop).
    target: Target,
}

/// Whether a message's Allow lists UPDATE (`None` without an Allow).
fn allow_update(m: &Message) -> Option<bool> {
    m.header(HeaderName::Allow)
        .map(|_| m.has_token(HeaderName::Allow, "UPDATE"))
}

/// How many incoming calls an endpoint takes at once, and how long one
/// may ring. Every INVITE from anyone creates a call, so these bound the
/// work and state an unauthenticated sender can make us hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingCallLimits {
    /// Incoming calls not answered yet (no final response sent); a new
    /// INVITE beyond is answered 486 Busy Here and no call is made.
    pub max_unanswered: usize,
    /// Incoming calls in all (ringing or answered); a new INVITE beyond
    /// is answered 486 Busy Here.
    pub max_calls: usize,
    /// An incoming call not answered within this time is refused with 480
    /// Temporarily Unavailable (RFC 3261 §21.4.18). `None`: it rings until
    /// the caller gives up.
    pub no_answer: Option<Duration>,
}

impl Default for IncomingCallLimits {
    fn default() -> Self {
        IncomingCallLimits {
            max_unanswered: 8,
            max_calls: 64,
            no_answer: Some(Duration::from_secs(120)),
        }
    }
}

impl Call {
    /// Whether a request with this Call-ID and tags belongs to the call's
    /// dialog (an early dialog of ours matches the peer's tag or, before
    /// we know it, our own as the To tag).
    pub(crate) fn is_in_dialog(
        &self,
        call_id: &str,
        from_tag: Option<&str>,
        to_tag: Option<&str>,
    ) -> bool {
        let local = Some(self.local_tag.as_str());
        self.call_id == call_id
            && match self.role {
                Role::Uas => {
                    from_tag == self.remote_tag.as_deref() && (to_tag.is_none() || to_tag == local)
                }
                Role::Uac => to_tag == local || from_tag == self.remote_tag.as_deref(),
            }
    }

    /// The flow the dialog uses, if one is known.
    pub(crate) fn flow(&self) -> Option<FlowId> {
        self.flow
    }

    /// Whether the peer placed the call.
    pub(crate) fn is_incoming(&self) -> bool {
        self.role == Role::Uas
    }

    /// An incoming call we have not sent a final response to.
    pub(crate) fn is_unanswered_incoming(&self) -> bool {
        matches!(self.phase, CallPhase::Incoming { .. })
    }

    /// The state reported.
    fn state(&self) -> CallState {
        self.phase.state()
    }

    /// Our address to send from: [`Call::send_from`], else the Contact's
    /// (none while it is a wildcard).
    fn source_ip(&self) -> Option<SocketAddr> {
        Some(self.send_from.unwrap_or(self.contact))
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| SocketAddr::new(a.ip(), 0))
    }
}

pub(crate) fn tag_param(m: &Message, to: bool) -> Option<String> {
    let na = if to { m.to().ok()? } else { m.from().ok()? };
    na.tag().map(str::to_owned)
}

pub(crate) fn name_addr_uri(value: &str) -> String {
    siproam_sip::NameAddr::parse(value)
        .map(|n| n.uri().to_string())
        .unwrap_or_default()
}

/// The address a URI names (IP literals only: the core does no DNS).
pub(crate) fn uri_addr(uri: &str, default_transport: Transport) -> Option<Target> {
    let parsed = Uri::parse(uri).ok()?;
    let sip = parsed.as_sip()?;
    let host = sip.host_str().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = sip.maddr().unwrap_or(host).parse().ok()?;
    let transport = sip
        .transport()
        .and_then(Transport::from_token)
        .unwrap_or(default_transport);
    Some(Target {
        transport,
        remote: SocketAddr::new(ip, sip.port().unwrap_or(transport.default_port())),
        local: None,
        server_name: None,
    })
}

impl Endpoint {
    fn new_call(&mut self, call: Call) -> CallId {
        self.calls.insert(call)
    }

    fn call_event(&mut self, ev: CallEvent) {
        self.events.push_back(Event::Call(ev));
    }

    fn state_event(
        &mut self,
        call: CallId,
        state: CallState,
        code: Option<u16>,
        body: Option<Bytes>,
    ) {
        let peer = match state {
            CallState::Calling | CallState::Incoming => self.calls.get(call).map(|c| CallPeer {
                uri: c.remote_uri.clone(),
                display: match &c.phase {
                    CallPhase::Incoming { request, .. } => request
                        .from()
                        .ok()
                        .and_then(|f| f.display_name().map(|d| d.into_owned()))
                        .filter(|d| !d.is_empty()),
                    _ => None,
                },
            }),
            _ => None,
        };
        self.call_event(CallEvent::State {
            call,
            state,
            code,
            body,
            peer,
            end: None,
        });
        self.after_state(call, state, code);
    }

    /// What follows a call's state change (a transfer's progress).
    fn after_state(&mut self, call: CallId, state: CallState, code: Option<u16>) {
        if let Some(now) = self.clock {
            self.transfer_call_state(now, call, state, code);
        }
    }

    /// A provisional response sent or received on a call not answered
    /// yet: reported when the state changes (or a body came).
    fn set_progress(&mut self, id: CallId, to: Progress, code: Option<u16>, body: Option<Bytes>) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let before = c.state();
        match &mut c.phase {
            CallPhase::Outgoing { progress, .. }
            | CallPhase::Incoming { progress, .. }
            | CallPhase::Answered { progress, .. } => *progress = to,
            // an answered call does not ring again
            CallPhase::Confirmed { .. } => return,
        }
        let state = c.state();
        if state != before || body.is_some() {
            self.state_event(id, state, code, body);
        }
    }

    /// The call is up (the ACK of our 2xx came, or the 2xx of our INVITE).
    fn set_confirmed(&mut self, id: CallId, code: Option<u16>, body: Option<Bytes>) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let invite_tx = match &c.phase {
            CallPhase::Confirmed { .. } => return,
            CallPhase::Answered { tx, .. } | CallPhase::Incoming { tx, .. } => Some(*tx),
            CallPhase::Outgoing { .. } => None,
        };
        c.phase = CallPhase::Confirmed {
            invite_tx,
            unacked_2xx: None,
        };
        self.state_event(id, CallState::Confirmed, code, body);
    }

    /// The call ended: reported, its timers cancelled, forgotten.
    fn end_call(&mut self, id: CallId, code: Option<u16>, body: Option<Bytes>, end: CallEnd) {
        if self.calls.remove(id).is_none() {
            return;
        }
        self.call_event(CallEvent::State {
            call: id,
            state: CallState::Disconnected,
            code,
            body,
            peer: None,
            end: Some(end),
        });
        self.after_state(id, CallState::Disconnected, code);
        self.timers.cancel_all(TimerOwner::Call(id.0));
    }

    /// The state of a call, if it exists.
    pub fn call_state(&self, call: CallId) -> Option<CallState> {
        self.calls.get(call).map(Call::state)
    }

    /// How many calls exist.
    pub fn call_count(&self) -> usize {
        self.calls.count()
    }

    /// Sets how many incoming calls are taken at once and how long one
    /// rings (applies to INVITEs that arrive from now on).
    pub fn set_incoming_call_limits(&mut self, limits: IncomingCallLimits) {
        self.calls.set_limits(limits);
    }

    /// The limits on incoming calls in force.
    pub fn incoming_call_limits(&self) -> IncomingCallLimits {
        self.calls.limits()
    }

    /// Refuses an incoming call not answered yet with a final status
    /// (>= 300) and extra headers (a `Warning` with a 488, a
    /// `Retry-After` with a 503).
    pub fn refuse(
        &mut self,
        now: Instant,
        call: CallId,
        code: u16,
        headers: &[(&str, &str)],
    ) -> Result<(), CoreError> {
        if code < 300 {
            return Err(CoreError::InvalidState);
        }
        self.respond_to_invite(now, call, code, None, headers)
    }

    fn contact_header(&self, c: &Call, transport: Transport) -> String {
        self.contact_header_with(c, transport, "")
    }

    /// Our Contact with `uri_params` (`;ob`) added to its URI.
    fn contact_header_with(&self, c: &Call, transport: Transport, uri_params: &str) -> String {
        // the account's public GRUU, when the registrar gave one (RFC 5627
        // §4.2); `ob` goes on it as on any Contact URI (RFC 5626 §4.3)
        if let Some(gruu) = self.gruu_contact_for(&c.local_uri, uri_params == ";ob") {
            return format!("<{gruu}>");
        }
        let addr = c.contact;
        let t = if transport == Transport::Udp {
            String::new()
        } else {
            format!(";transport={}", transport.param())
        };
        format!(
            "<sip:{}@{}{t}{uri_params}>",
            c.contact_user,
            fmt_hostport(addr)
        )
    }

    /// Places a call: an INVITE (with the offer, if given).
    pub fn invite(&mut self, now: Instant, spec: InviteSpec) -> Result<CallId, CoreError> {
        self.invite_with(now, spec, Vec::new())
    }

    /// [`Endpoint::invite`] with more headers on the INVITE.
    pub(crate) fn invite_with(
        &mut self,
        now: Instant,
        mut spec: InviteSpec,
        invite_headers: Vec<(String, String)>,
    ) -> Result<CallId, CoreError> {
        // with outbound in force the call goes over a live flow of the
        // AoR's flow set (RFC 5626 §4.3, §5.1)
        if let Some((_, target)) = self.outbound_target_for(&spec.from) {
            spec.target = target;
        }
        let flow = self.flows.towards(
            spec.target.transport,
            spec.target.remote,
            spec.target.local,
            spec.target.server_name,
        );
        let local = self.local_for(flow, spec.target.transport, spec.target.local);
        let call = Call {
            role: Role::Uac,
            phase: CallPhase::Outgoing {
                progress: Progress::None,
                invite: None,
                offer: spec.sdp.clone(),
                cancelled: false,
            },
            call_id: format!("{}@siproam", self.rng.token(20)),
            local_tag: self.rng.token(10),
            remote_tag: None,
            local_uri: spec.from.clone(),
            remote_uri: spec.uri.clone(),
            local_cseq: 1,
            remote_cseq: 0,
            remote_target: spec.uri.clone(),
            route_set: Vec::new(),
            contact_user: spec.contact_user.clone(),
            contact: local,
            first_hop: spec.target,
            refresh: None,
            pending_offer: None,
            glare_retry: None,
            flow: Some(flow),
            rseq: 0,
            remote_rseq: 0,
            peer_allows_update: false,
            next_hop: None,
            send_from: None,
            repair: None,
            replacing: None,
            replaced: None,
            replaces: None,
            peer_supports_replaces: false,
            invite_headers,
        };
        let b = self.initial_invite(&call, spec.target.transport, spec.sdp);
        let id = self.new_call(call);
        let _ = self.start_client_tx(now, b, spec.target, TxOwner::Call(id));
        if let Some(rid) = self.last_request_id() {
            if let Some(CallPhase::Outgoing { invite, .. }) =
                self.calls.get_mut(id).map(|c| &mut c.phase)
            {
                *invite = Some(rid);
            }
        }
        self.state_event(id, CallState::Calling, None, None);
        Ok(id)
    }

    /// A call's INVITE (the first, or one sent again after a network
    /// change): Request-URI and To the callee's URI, CSeq 1.
    fn initial_invite(&self, c: &Call, transport: Transport, sdp: Option<Bytes>) -> MessageBuilder {
        let mut b = MessageBuilder::request(Method::Invite, &c.remote_uri)
            .header("From", &format!("<{}>;tag={}", c.local_uri, c.local_tag))
            .header("To", &format!("<{}>", c.remote_uri))
            .header("Call-ID", &c.call_id)
            .header("CSeq", &format!("{} INVITE", c.local_cseq))
            .header(
                "Contact",
                // dialog-forming over an outbound flow (RFC 5626 §4.3)
                &self.contact_header_with(
                    c,
                    transport,
                    if self.outbound_for(&c.local_uri) {
                        ";ob"
                    } else {
                        ""
                    },
                ),
            )
            .header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE")
            .header("Supported", "100rel, replaces, timer");
        for (name, value) in &c.invite_headers {
            b = b.header(name, value);
        }
        // the pre-loaded Route of a flow through an outbound proxy
        if let Some(route) = self.outbound_route_towards(c.next_hop.unwrap_or(c.first_hop)) {
            b = b.header("Route", &route);
        }
        if let Some(sdp) = sdp {
            b = b.body("application/sdp", sdp);
        }
        b
    }

    /// Gives up our INVITE not answered yet, whose path is gone (a network
    /// change took the address its Via names, so no answer can reach us):
    /// a CANCEL for it (its top Via, RFC 3261 §9.1, sent from the call's
    /// new address — best effort: its answer goes to the old address),
    /// and every pending transaction of the call is abandoned (a 2xx that
    /// still comes is ACKed and BYEd, the rest dropped, nothing reaches
    /// the call). The early dialog (to-tag, remote target, route set) is
    /// forgotten. The call waits for [`Endpoint::resend_invite`].
    pub(crate) fn abandon_invite(&mut self, now: Instant, call: CallId) -> Result<(), CoreError> {
        let c = self.calls.get(call).ok_or(CoreError::NoSuchCall)?;
        let CallPhase::Outgoing { invite, .. } = c.phase else {
            return Err(CoreError::InvalidState);
        };
        let local = c.source_ip();
        if let Some(invite) = invite {
            // before any provisional (state Calling) too: none can reach
            // us any more, and the callee may have the INVITE
            let _ = self.cancel_from(now, invite, local, Some(TxOwner::Abandoned));
        }
        self.disown_client_txs(now, TxOwner::Call(call));
        self.timers.cancel_all(TimerOwner::Call(call.0));
        if let Some(c) = self.calls.get_mut(call) {
            if let CallPhase::Outgoing { invite, .. } = &mut c.phase {
                *invite = None;
            }
            c.remote_tag = None;
            c.remote_target = c.remote_uri.clone();
            c.route_set.clear();
            c.refresh = None;
            c.glare_retry = None;
            c.remote_rseq = 0;
            c.peer_allows_update = false;
            c.flow = None;
        }
        Ok(())
    }

    /// Sends the INVITE of a call given up by a network change
    /// ([`crate::CallMoveAction::Resend`]) again, from the call's new
    /// address (new Via and Contact) to the same next hop, with `sdp` (the
    /// fresh offer naming the new media address; `None` sends the first
    /// INVITE's offer again). It is a new dialog — new Call-ID, From tag
    /// and branch — so the callee cannot merge it with the old INVITE it
    /// may still hold (RFC 3261 §8.2.2.2); the call keeps its [`CallId`]
    /// and state, and the application sees its answer as for any INVITE.
    pub fn resend_invite(
        &mut self,
        now: Instant,
        call: CallId,
        sdp: Option<Bytes>,
    ) -> Result<(), CoreError> {
        let call_id = format!("{}@siproam", self.rng.token(20));
        let local_tag = self.rng.token(10);
        let c = self.calls.get_mut(call).ok_or(CoreError::NoSuchCall)?;
        let CallPhase::Outgoing {
            invite: None,
            offer,
            cancelled,
            ..
        } = &mut c.phase
        else {
            return Err(CoreError::InvalidState);
        };
        *cancelled = false;
        if sdp.is_some() {
            *offer = sdp;
        }
        let offer = offer.clone();
        c.call_id = call_id;
        c.local_tag = local_tag;
        c.local_cseq = 1;
        let mut target = c.next_hop.unwrap_or(c.first_hop);
        if let Some(a) = c.source_ip() {
            target.local = Some(a);
        }
        let c = self.calls.get(call).ok_or(CoreError::NoSuchCall)?;
        let b = self.initial_invite(c, target.transport, offer);
        let flow = self.start_client_tx(now, b, target, TxOwner::Call(call))?;
        let rid = self.last_request_id();
        if let Some(c) = self.calls.get_mut(call) {
            if let CallPhase::Outgoing { invite, .. } = &mut c.phase {
                *invite = rid;
            }
            c.flow = Some(flow);
        }
        Ok(())
    }

    /// Sends our INVITE again, over `target` from `contact`, after a final
    /// answer that said its flow had failed (430, RFC 5626 §11.5): the
    /// early dialog is forgotten and a new INVITE goes out
    /// ([`resend_invite`](Self::resend_invite)).
    pub(crate) fn reroute_invite(
        &mut self,
        now: Instant,
        call: CallId,
        target: Target,
        contact: Option<SocketAddr>,
    ) -> Result<(), CoreError> {
        let c = self.calls.get_mut(call).ok_or(CoreError::NoSuchCall)?;
        let CallPhase::Outgoing { invite, .. } = &mut c.phase else {
            return Err(CoreError::InvalidState);
        };
        *invite = None;
        c.first_hop = target;
        c.next_hop = None;
        c.flow = None;
        c.send_from = None;
        if let Some(contact) = contact {
            c.contact = contact;
        }
        c.remote_tag = None;
        c.remote_target = c.remote_uri.clone();
        c.route_set.clear();
        c.remote_rseq = 0;
        self.resend_invite(now, call, None)
    }

    /// ACKs a 2xx to an INVITE nobody wants any more (one given up after a
    /// network change) and, when `bye`, ends the dialog it made with a
    /// BYE (RFC 3261 §13.2.2.4, §15): both built from the INVITE and the
    /// 2xx (its Contact, Record-Route, To tag), sent the way it came.
    pub(crate) fn end_stray_2xx(
        &mut self,
        now: Instant,
        invite: &Bytes,
        resp: &Message,
        flow: FlowId,
        bye: bool,
    ) {
        let Ok(inv) = Message::parse(invite.clone()) else {
            return;
        };
        let Some((from, to)) = inv
            .header(HeaderName::From)
            .zip(resp.header(HeaderName::To))
        else {
            return;
        };
        let target_uri = match resp.contacts().next() {
            Some(Ok(siproam_sip::Contact::Addr(a))) => a.uri().to_string(),
            _ => inv.request_uri_str().unwrap_or_default().to_owned(),
        };
        let mut routes: Vec<String> = resp
            .header_values(HeaderName::RecordRoute)
            .flat_map(siproam_sip::split_list)
            .map(str::to_owned)
            .collect();
        routes.reverse();
        let Some(path) = self.flows.get(flow).map(|f| {
            (
                f.transport,
                f.remote,
                f.local,
                f.server_names.first().copied(),
            )
        }) else {
            return;
        };
        let hop = routes
            .first()
            .map(|r| name_addr_uri(r))
            .unwrap_or_else(|| target_uri.clone());
        let mut target = uri_addr(&hop, path.0).unwrap_or(Target {
            transport: path.0,
            remote: path.1,
            local: None,
            server_name: path.3,
        });
        target.local = path.2;
        let seq = inv.cseq().seq;
        let sends: &[(Method<'_>, u32)] = if bye {
            &[(Method::Ack, seq), (Method::Bye, seq.saturating_add(1))]
        } else {
            &[(Method::Ack, seq)]
        };
        for (method, n) in sends {
            let mut b = MessageBuilder::request(*method, &target_uri)
                .header("From", from)
                .header("To", to)
                .header("Call-ID", inv.call_id())
                .header("CSeq", &format!("{n} {method}"));
            for r in &routes {
                b = b.header("Route", r);
            }
            let _ = self.start_client_tx(now, b, target, TxOwner::Abandoned);
        }
    }

    /// The next hop and Request-URI for an in-dialog request.
    fn in_dialog_target(&self, c: &Call) -> Target {
        if let Some(mut t) = c.next_hop {
            t.local = c.source_ip().or(t.local);
            return t;
        }
        let hop = c
            .route_set
            .first()
            .map(|r| name_addr_uri(r))
            .unwrap_or_else(|| c.remote_target.clone());
        let mut t = uri_addr(&hop, c.first_hop.transport).unwrap_or(c.first_hop);
        // stay on the dialog's flow when the hop is the peer it came from
        if let Some(f) = c.flow.and_then(|f| self.flows.get(f)) {
            if f.remote.ip() == t.remote.ip() && f.transport == t.transport {
                t.remote = f.remote;
            }
        }
        t.local = c.source_ip().or(c.first_hop.local);
        t
    }

    /// Whether a failure `code` to the refresh of a call repaired with
    /// the `Replaces` fallback over another first hop than its route
    /// set's (a sibling flow's proxy) means the path is broken: a 403,
    /// 404 or 5xx other than a challenge or an offer refused.
    fn sibling_path_refused(&self, id: CallId, code: u16) -> bool {
        let Some(c) = self.calls.get(id) else {
            return false;
        };
        let Some(hop) = c.next_hop else {
            return false;
        };
        let route_hop = c
            .route_set
            .first()
            .and_then(|r| uri_addr(&name_addr_uri(r), c.first_hop.transport));
        c.repair == Some(true)
            && route_hop.is_some_and(|r| r.remote != hop.remote)
            && matches!(code, 403 | 404 | 480 | 500..=599)
    }

    fn in_dialog_request(
        &mut self,
        id: CallId,
        method: Method<'_>,
        body: Option<Bytes>,
    ) -> Option<(MessageBuilder, Target)> {
        self.in_dialog_request_numbered(id, method, body, None)
    }

    /// An in-dialog request; `cseq` (an ACK's: its INVITE's number) or the
    /// dialog's next local CSeq.
    fn in_dialog_request_numbered(
        &mut self,
        id: CallId,
        method: Method<'_>,
        body: Option<Bytes>,
        cseq: Option<u32>,
    ) -> Option<(MessageBuilder, Target)> {
        let c = self.calls.get_mut(id)?;
        if cseq.is_none() && method != Method::Ack && method != Method::Cancel {
            c.local_cseq += 1;
        }
        let c = self.calls.get(id)?;
        let target = self.in_dialog_target(c);
        let cseq = cseq.unwrap_or(c.local_cseq);
        let (from_uri, to_uri) = (c.local_uri.clone(), c.remote_uri.clone());
        let mut b = MessageBuilder::request(method, &c.remote_target)
            .header("From", &format!("<{from_uri}>;tag={}", c.local_tag))
            .header(
                "To",
                &match &c.remote_tag {
                    Some(t) => format!("<{to_uri}>;tag={t}"),
                    None => format!("<{to_uri}>"),
                },
            )
            .header("Call-ID", &c.call_id)
            .header("CSeq", &format!("{cseq} {method}"));
        for r in &c.route_set {
            b = b.header("Route", r);
        }
        if matches!(method, Method::Invite | Method::Update) {
            // a target refresh keeps `ob` (RFC 5626 §4.3): the new remote
            // target still reaches us over a flow
            let ob = if self.outbound_for(&c.local_uri) {
                ";ob"
            } else {
                ""
            };
            b = b.header(
                "Contact",
                &self.contact_header_with(c, target.transport, ob),
            );
        }
        if let Some(body) = body {
            b = b.body("application/sdp", body);
        }
        Some((b, target))
    }

    /// The CSeq of a call's request sent again (after a challenge,
    /// `crate::auth`): the dialog's next local CSeq, taken.
    pub(crate) fn call_next_cseq(&mut self, call: CallId) -> Option<u32> {
        let c = self.calls.get_mut(call)?;
        c.local_cseq = c.local_cseq.saturating_add(1);
        Some(c.local_cseq)
    }

    /// Whether a challenged INVITE of a call is not worth sending again:
    /// the call ended or was hung up (CANCELled) meanwhile.
    pub(crate) fn call_gave_up_invite(&self, call: CallId, method: &str) -> bool {
        if method != "INVITE" {
            return false;
        }
        match self.calls.get(call) {
            None => true,
            Some(c) => matches!(
                c.phase,
                CallPhase::Outgoing {
                    cancelled: true,
                    ..
                }
            ),
        }
    }

    /// A call's request `old` was sent again as `new` (after a
    /// challenge): the INVITE or refresh the call follows is `new` now.
    pub(crate) fn call_request_resent(&mut self, call: CallId, old: RequestId, new: RequestId) {
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        if let CallPhase::Outgoing { invite, .. } = &mut c.phase {
            if *invite == Some(old) {
                *invite = Some(new);
            }
        }
        if let Some((rid, _, _)) = c.refresh.as_mut() {
            if *rid == old {
                *rid = new;
            }
        }
    }

    /// Answers (or rings) an incoming call: 180 for `code` 180, 183 with a
    /// body for early media, 200 with the answer.
    pub fn answer(
        &mut self,
        now: Instant,
        call: CallId,
        code: u16,
        body: Option<Bytes>,
    ) -> Result<(), CoreError> {
        self.respond_to_invite(now, call, code, body, &[])
    }

    fn respond_to_invite(
        &mut self,
        now: Instant,
        call: CallId,
        code: u16,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(), CoreError> {
        let c = self.calls.get(call).ok_or(CoreError::NoSuchCall)?;
        let (tx, req, reliable_1xx) = match &c.phase {
            CallPhase::Incoming {
                tx,
                request,
                reliable_1xx,
                ..
            } => (*tx, request.clone(), *reliable_1xx),
            // a 2xx again (a 1xx or a failure is refused by the transaction)
            CallPhase::Answered { tx, request, .. } => (*tx, request.clone(), false),
            _ => return Err(CoreError::InvalidState),
        };
        let mut b = MessageBuilder::response_to(&req, code, reason(code), Some(&c.local_tag));
        for rr in req.header_values(HeaderName::RecordRoute) {
            b = b.header("Record-Route", rr);
        }
        for (name, value) in headers {
            b = b.header(name, value);
        }
        // RFC 3262: a peer that requires 100rel gets reliable provisionals
        let reliable = reliable_1xx && (101..200).contains(&code);
        let rseq = c.rseq + 1;
        if reliable {
            b = b
                .header("Require", "100rel")
                .header("RSeq", &rseq.to_string());
        }
        if code < 300 {
            b = b.header(
                "Contact",
                &self.contact_header(
                    c,
                    self.flows
                        .get(c.flow.unwrap_or(crate::FlowId(0)))
                        .map_or(Transport::Udp, |f| f.transport),
                ),
            );
            b = b.header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE");
        }
        if let Some(body) = body {
            b = b.body("application/sdp", body);
        }
        let resp = b.build()?;
        self.respond(now, tx, resp.clone())?;
        if reliable {
            if let Some(c) = self.calls.get_mut(call) {
                c.rseq = rseq;
                if let CallPhase::Incoming { unacked_1xx, .. } = &mut c.phase {
                    *unacked_1xx = Some(Unacked {
                        message: resp.clone(),
                        interval: self.config.t1,
                    });
                }
            }
            self.timers.set(
                TimerOwner::Call(call.0),
                TimerKind::Reliable1xx,
                now + self.config.t1,
            );
        }
        if code >= 200 {
            // a final response ends the provisional's retransmission and
            // the wait for an answer
            self.timers
                .cancel(TimerOwner::Call(call.0), TimerKind::Reliable1xx);
            self.timers
                .cancel(TimerOwner::Call(call.0), TimerKind::NoAnswer);
        }
        match code {
            180 => self.set_progress(call, Progress::Ringing, Some(180), None),
            181..=199 => self.set_progress(call, Progress::Early, Some(code), None),
            200..=299 => self.await_ack(now, call, resp),
            // 487: the caller's CANCEL
            487 => self.end_call(
                call,
                Some(code),
                None,
                CallEnd::new(CallEndedBy::Remote, CallEndReason::Cancelled),
            ),
            _ => self.end_call(
                call,
                Some(code),
                None,
                CallEnd::rejected(CallEndedBy::Local, code, ""),
            ),
        }
        Ok(())
    }

    /// Ends a call: BYE when confirmed, CANCEL while our INVITE is
    /// pending, 486 for an incoming call not yet answered.
    pub fn hang_up(&mut self, now: Instant, call: CallId) -> Result<(), CoreError> {
        let c = self.calls.get_mut(call).ok_or(CoreError::NoSuchCall)?;
        match &mut c.phase {
            CallPhase::Confirmed { .. } | CallPhase::Answered { .. } => {
                self.send_bye(now, call, CallEndReason::Hangup)
            }
            CallPhase::Outgoing { invite: None, .. } => {
                // its INVITE was given up and not sent again: nothing to
                // CANCEL
                self.end_call(
                    call,
                    None,
                    None,
                    CallEnd::new(CallEndedBy::Local, CallEndReason::Cancelled),
                );
                Ok(())
            }
            CallPhase::Outgoing {
                invite: Some(invite),
                cancelled,
                ..
            } => {
                let invite = *invite;
                *cancelled = true;
                self.cancel(now, invite)?;
                Ok(())
            }
            CallPhase::Incoming { .. } => self.answer(now, call, 486, None),
        }
    }

    /// Ends a call whose peer's answer cannot be used (for instance one
    /// without usable SRTP crypto where SRTP is mandatory; RFC 3264 §6
    /// leaves the offerer only this way out once the 2xx is in): a BYE
    /// with `Reason: SIP ;cause=488 ;text="…"` (RFC 3326) naming `why`,
    /// and the call ends as refused with 488 by us
    /// ([`CallEndReason::Rejected`], [`CallEndedBy::Local`]). No media
    /// need flow first. A call not answered yet is hung up as by
    /// [`Core::hang_up`]. `why` is cut to printable ASCII without quotes.
    pub fn end_unacceptable_media(
        &mut self,
        now: Instant,
        call: CallId,
        why: &str,
    ) -> Result<(), CoreError> {
        let c = self.calls.get(call).ok_or(CoreError::NoSuchCall)?;
        if !matches!(
            c.phase,
            CallPhase::Confirmed { .. } | CallPhase::Answered { .. }
        ) {
            return self.hang_up(now, call);
        }
        let text: String = why
            .chars()
            .filter(|ch| ch.is_ascii_graphic() || *ch == ' ')
            .filter(|ch| !matches!(ch, '"' | '\\'))
            .take(200)
            .collect();
        if let Some((b, target)) = self.in_dialog_request(call, Method::Bye, None) {
            let b = b.header("Reason", &format!("SIP ;cause=488 ;text=\"{text}\""));
            self.start_client_tx(now, b, target, TxOwner::Call(call))?;
        }
        self.end_call(
            call,
            Some(488),
            None,
            CallEnd::rejected(CallEndedBy::Local, 488, ""),
        );
        Ok(())
    }

    fn send_bye(
        &mut self,
        now: Instant,
        call: CallId,
        why: CallEndReason,
    ) -> Result<(), CoreError> {
        if let Some((b, target)) = self.in_dialog_request(call, Method::Bye, None) {
            self.start_client_tx(now, b, target, TxOwner::Call(call))?;
        }
        self.end_call(call, None, None, CallEnd::new(CallEndedBy::Local, why));
        Ok(())
    }

    /// Sends a re-INVITE (`update` false) or UPDATE (`update` true) with a
    /// new offer, or without a body as a pure target refresh (new Contact).
    pub fn refresh(
        &mut self,
        now: Instant,
        call: CallId,
        update: bool,
        body: Option<Bytes>,
    ) -> Result<(), CoreError> {
        let c = self.calls.get(call).ok_or(CoreError::NoSuchCall)?;
        // one refresh of ours at a time; a re-INVITE only in a confirmed
        // dialog with no INVITE of the peer's in progress (RFC 3261 §14.1,
        // RFC 3311 §1); an UPDATE once a dialog exists
        let allowed = if update {
            !matches!(c.state(), CallState::Calling | CallState::Incoming)
        } else {
            c.state() == CallState::Confirmed
                && !c
                    .pending_offer
                    .as_ref()
                    .is_some_and(|(_, r)| r.method() == Some(Method::Invite))
        };
        // (nor while an INVITE with Replaces is making a new dialog)
        if c.refresh.is_some() || c.replacing.is_some() || !allowed {
            return Err(CoreError::InvalidState);
        }
        let method = if update {
            Method::Update
        } else {
            Method::Invite
        };
        let (b, target) = self
            .in_dialog_request(call, method, body.clone())
            .ok_or(CoreError::NoSuchCall)?;
        self.start_client_tx(now, b, target, TxOwner::Call(call))?;
        let rid = self.last_request_id().ok_or(CoreError::InvalidState)?;
        if let Some(c) = self.calls.get_mut(call) {
            c.refresh = Some((rid, update, body));
        }
        Ok(())
    }

    /// Answers the peer's new offer ([`CallEvent::Offer`]).
    pub fn answer_offer(
        &mut self,
        now: Instant,
        call: CallId,
        body: Bytes,
    ) -> Result<(), CoreError> {
        let c = self.calls.get_mut(call).ok_or(CoreError::NoSuchCall)?;
        let (tx, req) = c.pending_offer.take().ok_or(CoreError::InvalidState)?;
        let c = self.calls.get(call).ok_or(CoreError::NoSuchCall)?;
        let transport = self
            .flows
            .get(c.flow.unwrap_or(crate::FlowId(0)))
            .map_or(Transport::Udp, |f| f.transport);
        let resp = MessageBuilder::response_to(&req, 200, "OK", Some(&c.local_tag))
            .header("Contact", &self.contact_header(c, transport))
            .body("application/sdp", body)
            .build()?;
        self.respond(now, tx, resp.clone())?;
        if req.method() == Some(Method::Invite) {
            self.await_ack(now, call, resp);
        }
        Ok(())
    }

    /// Whether the peer's last Allow header listed UPDATE (RFC 3311), so a
    /// refresh may use UPDATE instead of a re-INVITE.
    pub fn call_allows_update(&self, call: CallId) -> bool {
        self.calls.get(call).is_some_and(|c| c.peer_allows_update)
    }

    /// CANCELs our re-INVITE in progress on the call (RFC 6141 §5.5: a
    /// network change makes its offer stale). Its 487 then comes as
    /// [`CallEvent::RefreshFailed`]. An UPDATE cannot be cancelled:
    /// [`CoreError::InvalidState`].
    pub fn cancel_refresh(&mut self, now: Instant, call: CallId) -> Result<(), CoreError> {
        let c = self.calls.get(call).ok_or(CoreError::NoSuchCall)?;
        match c.refresh {
            Some((rid, false, _)) => self.cancel(now, rid).map(|_| ()),
            _ => Err(CoreError::InvalidState),
        }
    }

    /// Our 2xx to an INVITE went out: retransmit it (T1 doubling to T2)
    /// until the ACK, and give up after 64·T1 (RFC 3261 §13.3.1.4).
    fn await_ack(&mut self, now: Instant, call: CallId, resp: Message) {
        let ok = Unacked {
            message: resp,
            interval: self.config.t1,
        };
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        // the phase is taken out for the move (a placeholder in between)
        let phase = std::mem::replace(
            &mut c.phase,
            CallPhase::Confirmed {
                invite_tx: None,
                unacked_2xx: None,
            },
        );
        c.phase = match phase {
            CallPhase::Incoming {
                progress,
                tx,
                request,
                ..
            }
            | CallPhase::Answered {
                progress,
                tx,
                request,
                ..
            } => CallPhase::Answered {
                progress,
                tx,
                request,
                ok,
            },
            CallPhase::Confirmed { invite_tx, .. } => CallPhase::Confirmed {
                invite_tx,
                unacked_2xx: Some(ok),
            },
            // a call we placed answers re-INVITEs only once confirmed
            outgoing @ CallPhase::Outgoing { .. } => {
                c.phase = outgoing;
                return;
            }
        };
        self.timers.set(
            TimerOwner::Call(call.0),
            TimerKind::Retransmit2xx,
            now + self.config.t1,
        );
        self.timers.set(
            TimerOwner::Call(call.0),
            TimerKind::AckTimeout,
            now + self.config.t1x64(),
        );
    }

    /// Whether we placed the call (we are its UAC).
    pub fn call_is_outgoing(&self, call: CallId) -> bool {
        self.calls.get(call).is_some_and(|c| c.role == Role::Uac)
    }

    /// Whether our INVITE of a call not answered yet was lost (its
    /// connection closed during a network change) or given up, and not
    /// sent again yet.
    pub(crate) fn call_invite_lost(&self, call: CallId) -> bool {
        self.calls
            .get(call)
            .is_some_and(|c| matches!(c.phase, CallPhase::Outgoing { invite: None, .. }))
    }

    /// Whether a re-INVITE or UPDATE of ours is in progress on the call.
    pub fn call_refresh_pending(&self, call: CallId) -> bool {
        self.calls.get(call).is_some_and(|c| c.refresh.is_some())
    }

    /// Tells the core a network change starts at `now`: for the next
    /// 2·64·T1 (so that requests in flight on the old path and the
    /// refreshes sent at the change both get their whole 64·T1), a
    /// re-INVITE or UPDATE that times out or cannot be sent reports
    /// [`CallEvent::RefreshFailed`] and leaves the call up, instead of
    /// ending it as RFC 5057 would. A later change extends the window.
    pub fn begin_network_change(&mut self, now: Instant) {
        self.change_window_until = Some(now + self.config.t1x64() * 2);
    }

    /// Changes our Contact address for a call (a network change); the
    /// next request or answer carries it.
    pub fn set_call_contact(&mut self, call: CallId, addr: SocketAddr) -> Result<(), CoreError> {
        let c = self.calls.get_mut(call).ok_or(CoreError::NoSuchCall)?;
        c.contact = addr;
        c.send_from = None;
        c.flow = None;
        Ok(())
    }

    /// Sends the call's requests from `addr` (so its Via names it) while
    /// the Contact stays as it is (a network change with the Via updated
    /// but not the Contact).
    pub fn set_call_send_from(&mut self, call: CallId, addr: SocketAddr) -> Result<(), CoreError> {
        let c = self.calls.get_mut(call).ok_or(CoreError::NoSuchCall)?;
        c.send_from = Some(addr);
        c.flow = None;
        Ok(())
    }

    /// The INVITE server transaction of a call not answered yet.
    pub(crate) fn call_server_tx(&self, call: CallId) -> Option<ServerTxId> {
        match self.calls.get(call).map(|c| &c.phase) {
            Some(CallPhase::Incoming { tx, .. } | CallPhase::Answered { tx, .. }) => Some(*tx),
            _ => None,
        }
    }

    /// Where the call's next in-dialog request goes: the route set's first
    /// hop (or the remote target), unless
    /// [`set_call_next_hop`](Self::set_call_next_hop) overrode it.
    pub fn call_next_hop(&self, call: CallId) -> Option<Target> {
        self.calls.get(call).map(|c| self.in_dialog_target(c))
    }

    /// Sends the call's in-dialog requests to `hop` (with the route set
    /// unchanged) instead of the route set's first hop: the same proxy in
    /// the other address family after an IPv4 ↔ IPv6 change. `None`
    /// returns to the route set. The dialog's flow is dropped.
    pub fn set_call_next_hop(
        &mut self,
        call: CallId,
        hop: Option<Target>,
    ) -> Result<(), CoreError> {
        let c = self.calls.get_mut(call).ok_or(CoreError::NoSuchCall)?;
        c.next_hop = hop;
        c.flow = None;
        Ok(())
    }

    /// Our URI in the call (the From of a call we made, the To of one we
    /// answered): the account it belongs to.
    pub fn call_local_uri(&self, call: CallId) -> Option<&str> {
        self.calls.get(call).map(|c| c.local_uri.as_str())
    }

    /// Every call and its state.
    pub fn calls(&self) -> Vec<(CallId, CallState)> {
        let mut v: Vec<_> = self.calls.iter().map(|(id, c)| (id, c.state())).collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    // ----- from the transaction layer ------------------------------------

    /// A request for the dialog layer; returns false when it is not a
    /// call's (the application gets it).
    pub(crate) fn dialog_request(
        &mut self,
        now: Instant,
        tx: Option<ServerTxId>,
        flow: FlowId,
        req: &Message,
    ) -> bool {
        if !self.config.dialogs {
            return false;
        }
        let Some(method) = req.method() else {
            return false;
        };
        if let (Some(tx), false) = (tx, matches!(method, Method::Invite | Method::Ack)) {
            if req.header(HeaderName::Replaces).is_some() {
                // `Replaces` belongs in an INVITE only (RFC 3891 §3)
                self.respond_in_dialog(now, tx, req, 400, None);
                return true;
            }
        }
        let to_tag = tag_param(req, true);
        let from_tag = tag_param(req, false);
        let found = self
            .calls
            .find_dialog(req.call_id(), from_tag.as_deref(), to_tag.as_deref());
        match (method, found, tx) {
            (Method::Invite, None, Some(tx))
                if to_tag.is_none() && req.header(HeaderName::Replaces).is_some() =>
            {
                self.incoming_replaces(now, tx, flow, req);
                true
            }
            (Method::Invite, None, Some(tx)) if to_tag.is_none() => {
                self.incoming_call(now, tx, flow, req);
                true
            }
            (Method::Bye, None, Some(tx)) if self.replaced_dialog(req).is_some() => {
                // the dialog one of our INVITEs with Replaces replaced:
                // ended, and the call lives on in its new dialog
                self.respond_in_dialog(now, tx, req, 200, self.replaced_dialog(req));
                true
            }
            (Method::Ack, Some(id), _) => {
                // the ACK of our 2xx: to the INVITE (the call is up) or to
                // a re-INVITE
                let acked = match self.calls.get_mut(id).map(|c| &mut c.phase) {
                    Some(CallPhase::Answered { .. }) => Some(true),
                    Some(CallPhase::Confirmed { unacked_2xx, .. }) => {
                        unacked_2xx.take().map(|_| false)
                    }
                    _ => None,
                };
                self.timers
                    .cancel(TimerOwner::Call(id.0), TimerKind::Retransmit2xx);
                self.timers
                    .cancel(TimerOwner::Call(id.0), TimerKind::AckTimeout);
                let body = (!req.body().is_empty()).then(|| req.body().clone());
                if acked == Some(true) {
                    self.set_confirmed(id, Some(200), body);
                    // a call that replaces another: that one ends now
                    // (RFC 3891 §3)
                    let replaced = self.calls.get_mut(id).and_then(|c| c.replaces.take());
                    if let Some(old) = replaced {
                        let _ = self.hang_up(now, old);
                    }
                } else if let (Some(false), Some(body)) = (acked, body) {
                    // the answer to the offer we put in a re-INVITE's 200
                    self.call_event(CallEvent::Answer {
                        call: id,
                        body: Some(body),
                    });
                }
                true
            }
            (Method::Cancel, Some(id), Some(tx)) => {
                let tag = self
                    .calls
                    .get(id)
                    .map(|c| c.local_tag.clone())
                    .unwrap_or_default();
                if let Ok(ok) = MessageBuilder::response_to(req, 200, "OK", Some(&tag)).build() {
                    let _ = self.respond(now, tx, ok);
                }
                // CANCEL after the 2xx changes nothing (RFC 3261 §9.2)
                let answered = self.calls.get(id).is_some_and(|c| {
                    matches!(
                        c.phase,
                        CallPhase::Answered { .. } | CallPhase::Confirmed { .. }
                    )
                });
                if !answered {
                    let _ = self.answer(now, id, 487, None);
                } else {
                    self.cancel_peer_reinvite(now, id, req);
                }
                true
            }
            (Method::Prack, Some(id), Some(tx)) => {
                let rack = req
                    .rack()
                    .and_then(Result::ok)
                    .map(|r| (r.rseq, r.cseq.seq));
                let c = self.calls.get_mut(id);
                let expected = c.as_ref().map(|c| (c.rseq, c.remote_cseq));
                let (code, phrase) = match (rack, expected) {
                    (Some(got), Some(want)) if got == want => {
                        if let Some(CallPhase::Incoming { unacked_1xx, .. }) =
                            self.calls.get_mut(id).map(|c| &mut c.phase)
                        {
                            *unacked_1xx = None;
                        }
                        self.timers
                            .cancel(TimerOwner::Call(id.0), TimerKind::Reliable1xx);
                        (200, "OK")
                    }
                    _ => (481, "Call/Transaction Does Not Exist"),
                };
                let tag = self
                    .calls
                    .get(id)
                    .map(|c| c.local_tag.clone())
                    .unwrap_or_default();
                if let Ok(r) = MessageBuilder::response_to(req, code, phrase, Some(&tag)).build() {
                    let _ = self.respond(now, tx, r);
                }
                true
            }
            (Method::Bye, Some(id), Some(tx)) => {
                let tag = self
                    .calls
                    .get(id)
                    .map(|c| c.local_tag.clone())
                    .unwrap_or_default();
                if let Ok(ok) = MessageBuilder::response_to(req, 200, "OK", Some(&tag)).build() {
                    let _ = self.respond(now, tx, ok);
                }
                self.end_call(
                    id,
                    None,
                    None,
                    CallEnd::new(CallEndedBy::Remote, CallEndReason::Hangup),
                );
                true
            }
            (Method::Invite | Method::Update, Some(id), Some(tx))
                if to_tag.is_some() || method == Method::Update =>
            {
                self.in_dialog_offer(now, id, tx, req);
                true
            }
            (Method::Refer, Some(id), Some(tx)) if to_tag.is_some() => {
                self.incoming_refer(now, id, tx, req);
                true
            }
            (Method::Notify, Some(id), Some(tx)) => self.refer_notify(now, id, tx, req),
            (Method::Refer, _, Some(tx)) if to_tag.is_none() => {
                // REFER outside a dialog is not supported (`transfer`)
                self.respond_in_dialog(now, tx, req, 403, None);
                true
            }
            (Method::Ack, None, _) => false,
            (_, None, Some(tx)) if to_tag.is_some() => {
                // an in-dialog request for a dialog we do not know
                let tag = self.rng.token(10);
                if let Ok(r) = MessageBuilder::response_to(
                    req,
                    481,
                    "Call/Transaction Does Not Exist",
                    Some(&tag),
                )
                .build()
                {
                    let _ = self.respond(now, tx, r);
                }
                true
            }
            _ => false,
        }
    }

    fn incoming_call(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        flow: FlowId,
        req: &Message,
    ) -> Option<CallId> {
        if !self.calls.admits_incoming() {
            // no call is made: nothing is held for it but its transaction
            let tag = self.rng.token(10);
            if let Ok(r) = MessageBuilder::response_to(req, 486, reason(486), Some(&tag)).build() {
                let _ = self.respond(now, tx, r);
            }
            return None;
        }
        let remote_target = req
            .contacts()
            .next()
            .and_then(Result::ok)
            .and_then(|c| match c {
                siproam_sip::Contact::Addr(a) => Some(a.uri().to_string()),
                siproam_sip::Contact::Star => None,
            });
        let flow_info = self.flows.get(flow).cloned();
        let transport = flow_info.as_ref().map_or(Transport::Udp, |f| f.transport);
        let local = self.local_for(flow, transport, flow_info.as_ref().and_then(|f| f.local));
        let first_hop = Target {
            transport,
            remote: flow_info.as_ref().map_or(local, |f| f.remote),
            local: None,
            server_name: flow_info
                .as_ref()
                .and_then(|f| f.server_names.first().copied()),
        };
        let contact_user = req
            .request_uri()
            .and_then(|u| u.as_sip().and_then(|s| s.user()).map(str::to_owned))
            .unwrap_or_else(|| "siproam".into());
        let call = Call {
            role: Role::Uas,
            phase: CallPhase::Incoming {
                progress: Progress::None,
                tx,
                request: req.clone(),
                reliable_1xx: req.has_token(HeaderName::Require, "100rel"),
                unacked_1xx: None,
            },
            call_id: req.call_id().to_owned(),
            local_tag: self.rng.token(10),
            remote_tag: tag_param(req, false),
            local_uri: req
                .to()
                .ok()
                .map(|t| t.uri().to_string())
                .unwrap_or_default(),
            remote_uri: req
                .from()
                .ok()
                .map(|f| f.uri().to_string())
                .unwrap_or_default(),
            local_cseq: 0,
            remote_cseq: req.cseq().seq,
            remote_target: remote_target.unwrap_or_default(),
            route_set: req
                .header_values(HeaderName::RecordRoute)
                .flat_map(siproam_sip::split_list)
                .map(str::to_owned)
                .collect(),
            contact_user,
            contact: local,
            first_hop,
            refresh: None,
            pending_offer: None,
            glare_retry: None,
            flow: Some(flow),
            rseq: 0,
            remote_rseq: 0,
            peer_allows_update: allow_update(req).unwrap_or(false),
            next_hop: None,
            send_from: None,
            repair: None,
            replacing: None,
            replaced: None,
            replaces: None,
            peer_supports_replaces: req.has_token(HeaderName::Supported, "replaces"),
            invite_headers: Vec::new(),
        };
        let id = self.new_call(call);
        if let Some(wait) = self.calls.limits().no_answer {
            self.timers
                .set(TimerOwner::Call(id.0), TimerKind::NoAnswer, now + wait);
        }
        let body = (!req.body().is_empty()).then(|| req.body().clone());
        self.events.push_back(Event::IncomingCall {
            call: id,
            request: req.clone(),
        });
        self.state_event(id, CallState::Incoming, None, body);
        Some(id)
    }

    /// A CANCEL for the peer's re-INVITE still waiting for our answer
    /// (same branch): 487 it and drop its offer.
    fn cancel_peer_reinvite(&mut self, now: Instant, id: CallId, cancel: &Message) {
        let branch = |m: &Message| m.top_via().ok().and_then(|v| v.branch().map(str::to_owned));
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let matches = c.pending_offer.as_ref().is_some_and(|(_, r)| {
            r.method() == Some(Method::Invite) && branch(r).is_some() && branch(r) == branch(cancel)
        });
        if !matches {
            return;
        }
        let Some((tx, reinvite)) = c.pending_offer.take() else {
            return;
        };
        let tag = c.local_tag.clone();
        if let Ok(r) = MessageBuilder::response_to(&reinvite, 487, reason(487), Some(&tag)).build()
        {
            let _ = self.respond(now, tx, r);
        }
        self.call_event(CallEvent::OfferCancelled { call: id });
    }

    fn in_dialog_offer(&mut self, now: Instant, id: CallId, tx: ServerTxId, req: &Message) {
        let update = req.method() == Some(Method::Update);
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        // glare: our own offer is outstanding (RFC 3261 §14.2, RFC 3311 §5.2)
        if c.refresh.is_some() || c.pending_offer.is_some() {
            let tag = c.local_tag.clone();
            if let Ok(r) =
                MessageBuilder::response_to(req, 491, "Request Pending", Some(&tag)).build()
            {
                let _ = self.respond(now, tx, r);
            }
            return;
        }
        // a target refresh: the new Contact is the remote target
        if let Some(Ok(siproam_sip::Contact::Addr(a))) = req.contacts().next() {
            c.remote_target = a.uri().to_string();
        }
        if let Some(allows) = allow_update(req) {
            c.peer_allows_update = allows;
        }
        c.remote_cseq = req.cseq().seq;
        if req.body().is_empty() && !update {
            // a re-INVITE without an offer (RFC 3264 §5, delayed offer): our
            // offer goes in the 200, the peer's answer comes in the ACK
            c.pending_offer = Some((tx, req.clone()));
            self.call_event(CallEvent::OfferWanted { call: id });
            return;
        }
        if req.body().is_empty() {
            // an UPDATE without an offer: a pure target refresh
            let tag = c.local_tag.clone();
            let code = 200;
            let transport = c.first_hop.transport;
            let contact = self
                .calls
                .get(id)
                .map(|c| self.contact_header(c, transport))
                .unwrap_or_default();
            if let Ok(r) = MessageBuilder::response_to(req, code, reason(code), Some(&tag))
                .header("Contact", &contact)
                .build()
            {
                let _ = self.respond(now, tx, r);
            }
            return;
        }
        c.pending_offer = Some((tx, req.clone()));
        self.call_event(CallEvent::Offer {
            call: id,
            body: req.body().clone(),
            update,
        });
    }

    pub(crate) fn call_response(&mut self, now: Instant, id: CallId, resp: Message) {
        let Some(c) = self.calls.get(id) else {
            // a 2xx for a call we already ended: ACK and BYE it (RFC 3261 §15)
            return;
        };
        let code = resp.status().unwrap_or(0);
        let method = resp.cseq().method.as_str().to_owned();
        let body = (!resp.body().is_empty()).then(|| resp.body().clone());
        if method == "INVITE"
            && c.replacing
                .as_ref()
                .is_some_and(|r| r.call_id == resp.call_id())
        {
            self.replacing_response(now, id, &resp, code, body);
            return;
        }
        // our re-INVITE (confirmed dialog) or UPDATE (early or confirmed)
        let is_refresh = c.refresh.as_ref().is_some_and(|(_, update, _)| {
            if *update {
                method == "UPDATE"
            } else {
                method == "INVITE" && c.state() == CallState::Confirmed
            }
        });
        if method == "INVITE" && !is_refresh {
            match code {
                100 => {}
                101..=199 => {
                    if let Some(c) = self.calls.get_mut(id) {
                        if let Some(allows) = allow_update(&resp) {
                            c.peer_allows_update = allows;
                        }
                        if c.remote_tag.is_none() {
                            c.remote_tag = tag_param(&resp, true);
                            // the early dialog's target and route set
                            if let Some(Ok(siproam_sip::Contact::Addr(a))) = resp.contacts().next()
                            {
                                c.remote_target = a.uri().to_string();
                            }
                            let mut rr: Vec<String> = resp
                                .header_values(HeaderName::RecordRoute)
                                .flat_map(siproam_sip::split_list)
                                .map(str::to_owned)
                                .collect();
                            rr.reverse();
                            c.route_set = rr;
                        }
                    }
                    self.prack(now, id, &resp);
                    let progress = if code == 180 {
                        Progress::Ringing
                    } else {
                        Progress::Early
                    };
                    self.set_progress(id, progress, Some(code), body);
                }
                200..=299 => self.confirm_uac(now, id, &resp, body),
                _ => {
                    let cancelled = matches!(
                        self.calls.get(id).map(|c| &c.phase),
                        Some(CallPhase::Outgoing {
                            cancelled: true,
                            ..
                        })
                    );
                    let end = if cancelled && code == 487 {
                        CallEnd::new(CallEndedBy::Local, CallEndReason::Cancelled)
                    } else {
                        CallEnd::rejected(CallEndedBy::Remote, code, resp.reason().unwrap_or(""))
                    };
                    self.end_call(id, Some(code), None, end)
                }
            }
            return;
        }
        if method == "INVITE" && (200..300).contains(&code) {
            // the 2xx to our re-INVITE: ACK it
            self.send_ack(now, id, &resp);
        }
        if is_refresh && code >= 200 {
            let refresh = self.calls.get_mut(id).and_then(|c| c.refresh.take());
            match code {
                200..=299 => {
                    if let Some(Ok(siproam_sip::Contact::Addr(a))) = resp.contacts().next() {
                        let t = a.uri().to_string();
                        if let Some(c) = self.calls.get_mut(id) {
                            c.remote_target = t;
                        }
                    }
                    // repaired
                    if let Some(c) = self.calls.get_mut(id) {
                        c.repair = None;
                    }
                    if let (Some(allows), Some(c)) = (allow_update(&resp), self.calls.get_mut(id)) {
                        c.peer_allows_update = allows;
                    }
                    self.call_event(CallEvent::Answer { call: id, body });
                }
                491 => {
                    // retry after 2.1–4 s if we own the Call-ID, else 0–2 s
                    let owner = self.calls.get(id).is_some_and(|c| c.role == Role::Uac);
                    let unit = self.rng.unit();
                    let wait = if owner {
                        Duration::from_millis(2100 + (unit * 1900.0) as u64)
                    } else {
                        Duration::from_millis((unit * 2000.0) as u64)
                    };
                    if let (Some(c), Some((_, update, b))) = (self.calls.get_mut(id), refresh) {
                        c.glare_retry = Some((update, b));
                    }
                    self.timers
                        .set(TimerOwner::Call(id.0), TimerKind::Glare, now + wait);
                }
                481 | 408 => {
                    // RFC 5057: the dialog is gone; a call being repaired
                    // after a flow failure gets a new one (RFC 3891)
                    let offer = refresh.and_then(|(_, _, b)| b);
                    self.dialog_gone(now, id, code, offer);
                }
                // a repair over a sibling flow whose path still names the
                // failed flow's proxy, refused on the way (the sibling's
                // proxy cannot or will not route there): the path is as
                // gone as after a 408 (a peer's 488 / 606 / 3xx, or a
                // challenge, says the path works)
                _ if self.sibling_path_refused(id, code) => {
                    let offer = refresh.and_then(|(_, _, b)| b);
                    self.dialog_gone(now, id, code, offer);
                }
                _ => {
                    if let Some(c) = self.calls.get_mut(id) {
                        c.repair = None;
                    }
                    self.call_event(CallEvent::RefreshFailed { call: id, code })
                }
            }
        }
    }

    fn confirm_uac(&mut self, now: Instant, id: CallId, resp: &Message, body: Option<Bytes>) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        if let Some(allows) = allow_update(resp) {
            c.peer_allows_update = allows;
        }
        if resp.header(HeaderName::Supported).is_some() {
            c.peer_supports_replaces = resp.has_token(HeaderName::Supported, "replaces");
        }
        let cancelled = matches!(
            c.phase,
            CallPhase::Outgoing {
                cancelled: true,
                ..
            }
        );
        if c.state() != CallState::Confirmed {
            c.remote_tag = tag_param(resp, true).or(c.remote_tag.take());
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
        }
        self.send_ack(now, id, resp);
        self.set_confirmed(id, resp.status(), body);
        // the 2xx crossed our CANCEL: the call exists, end it (RFC 3261 §9.1)
        if cancelled && self.calls.contains(id) {
            let _ = self.send_bye(now, id, CallEndReason::Cancelled);
        }
    }

    /// ACKs a 2xx to our INVITE or re-INVITE (a retransmitted 2xx gets a
    /// fresh copy: the ACK of a 2xx is end to end, not a transaction).
    fn send_ack(&mut self, now: Instant, id: CallId, resp: &Message) {
        // the ACK carries the CSeq number of the INVITE it acknowledges
        // (RFC 3261 §13.2.2.4), not a later UPDATE's
        let invite_cseq = resp.cseq().seq;
        let Some((b, target)) =
            self.in_dialog_request_numbered(id, Method::Ack, None, Some(invite_cseq))
        else {
            return;
        };
        let _ = self.start_client_tx(now, b, target, TxOwner::Call(id));
    }

    /// Acknowledges a reliable provisional response (RFC 3262 §4) once per
    /// RSeq.
    fn prack(&mut self, now: Instant, id: CallId, resp: &Message) {
        if !resp.has_token(HeaderName::Require, "100rel") {
            return;
        }
        let Some(Ok(rseq)) = resp.rseq() else { return };
        let cseq = resp.cseq().seq;
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        if rseq <= c.remote_rseq {
            return; // a retransmission: already acknowledged
        }
        c.remote_rseq = rseq;
        if let Some((b, target)) = self.in_dialog_request(id, Method::Prack, None) {
            let b = b.header("RAck", &format!("{rseq} {cseq} INVITE"));
            let _ = self.start_client_tx(now, b, target, TxOwner::Call(id));
        }
    }

    pub(crate) fn call_failed(&mut self, now: Instant, id: CallId, reason: RequestFailure) {
        let Some(c) = self.calls.get(id) else {
            return;
        };
        let code = match reason {
            RequestFailure::Timeout => 408,
            RequestFailure::Transport(_) => 503,
        };
        let changing = self.change_window_until.is_some_and(|until| now < until);
        if let (CallPhase::Outgoing { invite, .. }, true, RequestFailure::Transport(_)) =
            (&c.phase, changing, reason)
        {
            // the connection went with the old address during a change:
            // the call stays, its INVITE (if that died) is sent again by
            // the move (`CallMoveAction::Resend`)
            let invite_gone = invite.is_some_and(|rid| !self.client_tx_exists(rid));
            if let (true, Some(CallPhase::Outgoing { invite, .. })) =
                (invite_gone, self.calls.get_mut(id).map(|c| &mut c.phase))
            {
                *invite = None;
            }
            return;
        }
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let end = CallEnd::new(
            CallEndedBy::Local,
            match reason {
                RequestFailure::Timeout => CallEndReason::Timeout,
                RequestFailure::Transport(_) => CallEndReason::TransportFailure,
            },
        );
        let confirmed = c.state() == CallState::Confirmed;
        if confirmed && c.replacing.take().is_some() {
            // our INVITE with Replaces got no answer: the call is lost
            self.end_call(id, Some(code), None, end);
            return;
        }
        if confirmed && reason == RequestFailure::Timeout && c.repair.is_some() {
            if let Some((_, _, offer)) = c.refresh.take() {
                // a repair's refresh timed out: as a 408 (RFC 5057)
                self.dialog_gone(now, id, 408, offer);
                return;
            }
        }
        if confirmed && c.refresh.is_some() && changing {
            // the request died on the old path: the call stays
            c.refresh = None;
            self.call_event(CallEvent::RefreshFailed { call: id, code });
        } else if confirmed && c.refresh.is_some() {
            c.refresh = None;
            // RFC 5057: a timeout on a re-INVITE ends the invite usage
            self.end_call(id, Some(code), None, end);
        } else if !confirmed {
            self.end_call(id, Some(code), None, end);
        }
    }

    pub(crate) fn call_timer(&mut self, now: Instant, id: CallId, kind: TimerKind) {
        match kind {
            TimerKind::Retransmit2xx => {
                let (ok, tx) = match self.calls.get_mut(id).map(|c| &mut c.phase) {
                    Some(CallPhase::Answered { ok, tx, .. }) => (ok, Some(*tx)),
                    Some(CallPhase::Confirmed {
                        unacked_2xx: Some(ok),
                        invite_tx,
                    }) => (ok, *invite_tx),
                    _ => return,
                };
                let next = (ok.interval * 2).min(self.config.t2);
                ok.interval = next;
                let resp = ok.message.clone();
                if let Some(tx) = tx {
                    let _ = self.respond(now, tx, resp);
                }
                self.timers
                    .set(TimerOwner::Call(id.0), TimerKind::Retransmit2xx, now + next);
            }
            TimerKind::AckTimeout => {
                // no ACK: confirm and hang up (RFC 3261 §13.3.1.4)
                if let Some(CallPhase::Confirmed { unacked_2xx, .. }) =
                    self.calls.get_mut(id).map(|c| &mut c.phase)
                {
                    *unacked_2xx = None;
                }
                self.timers
                    .cancel(TimerOwner::Call(id.0), TimerKind::Retransmit2xx);
                let _ = self.send_bye(now, id, CallEndReason::Timeout);
            }
            TimerKind::Reliable1xx => {
                let Some(CallPhase::Incoming {
                    unacked_1xx, tx, ..
                }) = self.calls.get_mut(id).map(|c| &mut c.phase)
                else {
                    return;
                };
                let tx = *tx;
                let Some(unacked) = unacked_1xx.as_mut() else {
                    return;
                };
                unacked.interval *= 2;
                // RFC 3262 §3: give up after 64·T1 (the INVITE then fails)
                if unacked.interval > self.config.t1x64() {
                    *unacked_1xx = None;
                    let _ = self.answer(now, id, 504, None);
                    return;
                }
                let (resp, next) = (unacked.message.clone(), unacked.interval);
                let _ = self.respond(now, tx, resp);
                self.timers
                    .set(TimerOwner::Call(id.0), TimerKind::Reliable1xx, now + next);
            }
            // nobody answered: 480 (RFC 3261 §21.4.18)
            TimerKind::NoAnswer if self.calls.get(id).is_some_and(Call::is_unanswered_incoming) => {
                let _ = self.answer(now, id, 480, None);
            }
            TimerKind::Glare => {
                let retry = self.calls.get_mut(id).and_then(|c| c.glare_retry.take());
                if let Some((update, body)) = retry {
                    let _ = self.refresh(now, id, update, body);
                }
            }
            _ => {}
        }
    }
}

/// The reason phrase for a status a call's INVITE is answered with (RFC
/// 3261 §21); a code without one gets its class's name.
pub(crate) fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        606 => "Not Acceptable",
        _ => match code / 100 {
            1 => "Session Progress",
            2 => "OK",
            3 => "Redirection",
            4 => "Request Failure",
            5 => "Server Failure",
            _ => "Global Failure",
        },
    }
}

#[cfg(test)]
mod peer_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::Config;

    /// Issue 15: an incoming call names its caller — the From URI and
    /// display name on its `Incoming` event.
    #[test]
    #[allow(clippy::disallowed_methods)] // any base instant will do in a test
    fn an_incoming_call_names_its_caller() {
        let now = Instant::now();
        let mut ep = Endpoint::new(Config::default());
        let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let remote: SocketAddr = "127.0.0.2:5070".parse().unwrap();
        let invite = "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-peer-1\r\n\
            Max-Forwards: 70\r\n\
            From: \"Alice Liddell\" <sip:alice@example.test>;tag=a1\r\n\
            To: <sip:bob@example.test>\r\n\
            Call-ID: peer-test-1\r\n\
            CSeq: 1 INVITE\r\n\
            Contact: <sip:alice@127.0.0.2:5070>\r\n\
            Content-Length: 0\r\n\r\n";
        ep.handle_datagram(now, local, remote, Bytes::from(invite));
        let peer = std::iter::from_fn(|| ep.poll_event())
            .find_map(|e| match e {
                Event::Call(CallEvent::State {
                    state: CallState::Incoming,
                    peer,
                    ..
                }) => Some(peer),
                _ => None,
            })
            .expect("an incoming call");
        assert_eq!(
            peer,
            Some(CallPeer {
                uri: "sip:alice@example.test".into(),
                display: Some("Alice Liddell".into()),
            })
        );
    }
}
