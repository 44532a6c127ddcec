//! The softphone application: calls with SDP offer/answer and RTP media.
//!
//! Runs inside the endpoint task as its [`Application`]: an incoming call
//! rings (or is answered at once with `auto_answer`), an outgoing call
//! offers PCMU/PCMA/telephone-event, and each confirmed call's RTP socket
//! and sans-IO [`MediaSession`] go to the media engine
//! ([`crate::media_engine`]: a few threads carry every call), which sends
//! the configured source every 20 ms, writes what it hears to the sink, and
//! reports statistics every second and at the end.
//!
//! Anyone can send an INVITE, so an incoming call costs as little as
//! possible until it is answered: its offer is checked first (an unusable
//! one is refused 488 with a `Warning`), the core's limits refuse calls
//! beyond [`PhoneConfig::incoming`] with 486 and end one that rings too
//! long with 480, and its RTP socket is bound only when it is answered
//! (a socket that cannot be opened then refuses it 503 with
//! `Retry-After`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siproam_core::pager::{MessageRefusal, MessageSpec};
use siproam_core::sdp::{
    MediaConfig as SdpConfig, Negotiated, SdesKeys, SdesSuite, SdpDirection, SdpSession,
    SrtpPolicy, SDES_KEY_MATERIAL_LEN,
};
use siproam_core::{
    CallEvent, CallId, CallMoveAction, CallState, CoreError, Endpoint as Core, Event,
    IncomingCallLimits, InviteSpec, RequestFailure, RequestId, Target as CoreTarget,
};
use siproam_media::srtp::{SrtpKey, SrtpSession, SrtpSuite};
use siproam_media::{
    AudioSink, AudioSource, Destination, DtmfDigit, MediaConfig, MediaError, MediaSession,
    SilenceSource, ToneSource, WavSink, WavSource,
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::endpoint::{AppCommand, Application, CommandError, EndpointError, EndpointEvent};
use crate::media_engine::{CallMedia, MediaCmd, MediaHandle};
use crate::media_report::{Direction, MessageReport};
use crate::EndpointHandle;

/// What a phone plays into its calls.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioSpec {
    /// Silence.
    Silence,
    /// A sine tone of this frequency (Hz).
    Tone(f64),
    /// A WAV file (16-bit PCM, mono, 8 kHz), looped.
    Wav(PathBuf),
}

impl AudioSpec {
    /// Parses `tone:HZ` or a WAV path (the agent's `--play`).
    pub fn parse(s: &str) -> Option<AudioSpec> {
        match s.strip_prefix("tone:") {
            Some(hz) => hz
                .parse::<f64>()
                .ok()
                .filter(|f| *f > 0.0 && *f < 4000.0)
                .map(AudioSpec::Tone),
            None => Some(AudioSpec::Wav(PathBuf::from(s))),
        }
    }

    /// Whether it can be played: a WAV file is read whole (a tone or
    /// silence always can). A call whose file cannot be read sends silence,
    /// so check it before starting.
    pub fn check(&self) -> Result<(), siproam_media::WavError> {
        if let AudioSpec::Wav(path) = self {
            WavSource::open(path)?;
        }
        Ok(())
    }
}

/// How the phone behaves.
#[derive(Debug, Clone)]
pub struct PhoneConfig {
    /// Answer incoming calls at once.
    pub auto_answer: bool,
    /// What to send.
    pub play: AudioSpec,
    /// Where to write what is received (a WAV file), per call `-CALL.wav`
    /// when several calls exist.
    pub record: Option<PathBuf>,
    /// The address RTP sockets bind to (the SIP listener's address when
    /// `None`).
    pub media_ip: Option<IpAddr>,
    /// After a move of a call's media, how long the old RTP socket keeps
    /// receiving while the peer has not yet sent to the new one
    /// (make-before-break). Zero closes it at once, as when the old
    /// interface is gone (break-before-make).
    pub old_media_grace: Duration,
    /// IPv6 use for media when answering: an offer in the other address
    /// family than our RTP socket (a peer that moved between IPv4 and
    /// IPv6) is answered from a new socket in the offer's family when this
    /// allows it (and `media_ip` is not fixed).
    pub ipv6_media: crate::Ipv6Use,
    /// How many incoming calls ring at once (8) and in all (64), beyond
    /// which an INVITE is answered 486 Busy Here, and how long one rings
    /// before it is refused 480 Temporarily Unavailable (120 s).
    pub incoming: IncomingCallLimits,
    /// The `Retry-After` (seconds) of the 503 that refuses a call whose RTP
    /// socket cannot be opened.
    pub retry_after: u32,
    /// Where a copy of each RTP/RTCP packet sent and received goes
    /// (`--pcap`); the default is the process's tap
    /// ([`crate::wiretap::install`]), if any.
    pub wiretap: Option<crate::wiretap::WireTap>,
    /// SRTP (RFC 3711, keys by SDES, RFC 4568): `Off` offers and accepts
    /// plain RTP only; `Optional` offers `RTP/AVP` with `a=crypto` and
    /// takes SRTP when the peer does; `Mandatory` offers `RTP/SAVP` and
    /// refuses (488) or ends a call that would be plain. The keys come
    /// from the OS's secure generator, one per suite and call, and stay
    /// the same across a network change.
    pub srtp: SrtpPolicy,
}

/// Why a phone command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The core refused it.
    #[error("core: {0}")]
    Core(#[from] CoreError),
    /// A call's RTP socket could not be opened (out of descriptors …).
    #[error("no RTP socket: {0}")]
    Media(#[source] std::io::Error),
    /// The call's media refused it (DTMF without telephone-event …).
    #[error("media: {0}")]
    MediaRefused(#[from] MediaError),
    /// The call has no media (yet).
    #[error("the call has no media")]
    NoMedia,
    /// Too many MESSAGEs wait for their answer, or too many DTMF keys
    /// were given at once.
    #[error("too much waiting already")]
    Busy,
    /// The call's media is not SRTP (a re-key asked of a plain call).
    #[error("the call's media is not SRTP")]
    NoSrtp,
}

impl From<PhoneError> for CommandError {
    fn from(e: PhoneError) -> Self {
        match e {
            PhoneError::Core(e) => CommandError::Core(e),
            PhoneError::Media(e) => CommandError::Socket(e),
            PhoneError::MediaRefused(e) => CommandError::Media(e),
            PhoneError::NoMedia => CommandError::NoMedia,
            PhoneError::Busy => CommandError::Busy,
            PhoneError::NoSrtp => CommandError::NoSrtp,
        }
    }
}

/// The phone's commands on a running endpoint whose application is a
/// [`Phone`].
impl EndpointHandle {
    /// Places a call: to `uri`, from the address of record `from`, through
    /// the proxy `via` (a SIP URI) or straight to the URI's host.
    pub async fn call(
        &self,
        uri: &str,
        from: &str,
        via: Option<&str>,
    ) -> Result<CallId, EndpointError> {
        let hop = via.unwrap_or(uri);
        let (uri, from_aor) = (uri.to_owned(), from.to_owned());
        let make = move |target| -> AppCommand {
            Box::new(PhoneCommand::Call {
                uri,
                from: from_aor,
                target,
            })
        };
        match self.command_via(hop, from, make).await? {
            Some(id) => Ok(id),
            None => Err(EndpointError::Core(CoreError::InvalidState)),
        }
    }

    /// Sends an instant message (RFC 3428): to `uri`, from the address of
    /// record `from`, through the proxy `via` (a SIP URI) or straight to
    /// the URI's host. Its outcome comes as [`EndpointEvent::Message`].
    pub async fn message(
        &self,
        uri: &str,
        from: &str,
        via: Option<&str>,
        text: &str,
    ) -> Result<(), EndpointError> {
        let hop = via.unwrap_or(uri);
        let (uri, from_aor, text) = (uri.to_owned(), from.to_owned(), text.to_owned());
        let make = move |target| -> AppCommand {
            Box::new(PhoneCommand::Message {
                uri,
                from: from_aor,
                target,
                text,
            })
        };
        self.command_via(hop, from, make).await.map(|_| ())
    }

    /// Answers, hangs up, holds or resumes a call.
    pub async fn phone(&self, cmd: PhoneCommand) -> Result<(), EndpointError> {
        self.command(cmd).await.map(|_| ())
    }
}

impl Default for PhoneConfig {
    fn default() -> Self {
        PhoneConfig {
            auto_answer: false,
            play: AudioSpec::Tone(1000.0),
            record: None,
            media_ip: None,
            old_media_grace: Duration::from_secs(2),
            ipv6_media: crate::Ipv6Use::Enabled,
            incoming: IncomingCallLimits::default(),
            retry_after: 30,
            wiretap: crate::wiretap::global(),
            srtp: SrtpPolicy::Off,
        }
    }
}

/// Commands a phone takes from its owner.
#[derive(Debug, Clone)]
pub enum PhoneCommand {
    /// Place a call to a URI through a next hop.
    Call {
        /// The Request-URI.
        uri: String,
        /// Our address of record.
        from: String,
        /// The next hop.
        target: CoreTarget,
    },
    /// Answer a ringing call.
    Answer(CallId),
    /// Hang up.
    HangUp(CallId),
    /// Put on hold (`true`) or resume.
    Hold(CallId, bool),
    /// New SRTP keys for an SRTP call (88 bytes from the OS, one key per
    /// suite), offered in a re-INVITE with the same crypto tags (RFC 4568
    /// §7.1.4). We send with the old key until the answer comes; the
    /// peer's old key stays accepted until a packet authenticates under
    /// its new one, so the stream loses nothing. A plain call is refused
    /// ([`PhoneError::NoSrtp`]).
    Rekey(CallId),
    /// Re-open the call's RTP socket on another local address (a network
    /// change) and re-offer it in a re-INVITE; the stream keeps its SSRC,
    /// sequence numbers and timestamps.
    MoveMedia(CallId, IpAddr),
    /// Refreshes a call after a network change: with `media_ip`, the RTP
    /// socket is re-opened there first (as [`PhoneCommand::MoveMedia`]);
    /// the new offer goes in an UPDATE when `update` is set, else in a
    /// re-INVITE.
    Refresh {
        /// The call.
        call: CallId,
        /// Where to re-open the media, if anywhere.
        media_ip: Option<IpAddr>,
        /// Use UPDATE (the caller checked the peer allows it).
        update: bool,
    },
    /// Re-opens the RTP socket of a call not answered yet on another local
    /// address, without a refresh: the answer we send carries it.
    Rebind(CallId, IpAddr),
    /// Send DTMF keys (`0`–`9`, `*`, `#`, `A`–`D`) on a call's RTP stream
    /// as RFC 4733 telephone-events, one after the other.
    Dtmf(CallId, String),
    /// Send an instant message (RFC 3428) through a next hop.
    Message {
        /// The Request-URI.
        uri: String,
        /// Our address of record.
        from: String,
        /// The next hop.
        target: CoreTarget,
        /// The text.
        text: String,
    },
}

/// The most keys one command takes (as many as may wait on a call).
const MAX_DTMF_QUEUE: usize = crate::media_engine::MAX_DTMF_QUEUE;
/// The most MESSAGEs waiting for their answer at once.
const MAX_PENDING_MESSAGES: usize = 64;
/// How long a sent MESSAGE is waited for at most (twice Timer F).
const MESSAGE_GIVE_UP: Duration = Duration::from_secs(64);

struct PhoneCall {
    sdp: SdpSession,
    socket: Option<StdUdpSocket>,
    /// Our RTP address; while `unbound`, the address it will be opened on
    /// (port 0).
    local: SocketAddr,
    /// An incoming call not answered yet has no RTP socket: it is opened
    /// on `local`'s address when the call is answered.
    unbound: bool,
    /// The call's media on the engine (dropping it stops the media).
    media: Option<MediaHandle>,
    /// An incoming call's offer, until answered.
    offer: Option<Bytes>,
    /// A refresh asked for while another was in progress (a network
    /// change): sent, with a fresh offer, once that one settles.
    /// `Some(update)`.
    queued_refresh: Option<bool>,
    /// An outgoing call whose media moved before the answer: its offer
    /// named the old address, so a re-INVITE follows the 2xx.
    reoffer_when_confirmed: bool,
    /// The telephone-event payload type both sides agreed on (RFC 4733).
    telephone_event: Option<u8>,
    /// The media direction last negotiated.
    direction: siproam_media::MediaDirection,
}

/// A non-blocking UDP socket on `ip`, any port.
fn rtp_socket(ip: IpAddr) -> std::io::Result<(StdUdpSocket, SocketAddr)> {
    let socket = StdUdpSocket::bind(SocketAddr::new(ip, 0))?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    Ok((socket, local))
}

impl PhoneCall {
    /// Opens the call's RTP socket where it was meant to go, if it has
    /// none yet.
    fn bind(&mut self) -> std::io::Result<()> {
        if !self.unbound {
            return Ok(());
        }
        let (socket, local) = rtp_socket(self.local.ip())?;
        self.socket = Some(socket);
        self.local = local;
        self.unbound = false;
        self.sdp.set_local_address(local);
        Ok(())
    }

    /// Sends a fresh offer in a re-INVITE (or UPDATE); if it cannot go,
    /// the offer is withdrawn so the next one can be made.
    fn reoffer(
        &mut self,
        core: &mut Core,
        now: Instant,
        call: CallId,
        update: bool,
    ) -> Result<(), CoreError> {
        let offer = self.sdp.create_offer();
        let r = core.refresh(now, call, update, Some(offer));
        if r.is_err() {
            self.sdp.cancel_offer();
        }
        r
    }
}

/// The softphone application.
pub struct Phone {
    config: PhoneConfig,
    calls: HashMap<CallId, PhoneCall>,
    events: Option<mpsc::Sender<EndpointEvent>>,
    seed: u64,
    /// MESSAGEs sent and not answered yet: their peer, text and when.
    messages: HashMap<RequestId, (String, String, Instant)>,
    /// The accounts registered now: our presence is open while any is.
    registered: std::collections::HashSet<siproam_core::AccountId>,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phone")
            .field("calls", &self.calls.len())
            .finish()
    }
}

/// The media crate's SRTP keys (ours to send, the peer's to receive) for
/// the negotiated SDES keys (`None` for key material of the wrong length,
/// which the SDP layer already refuses).
/// Where the negotiation says to send RTP and RTCP (`None` on hold).
fn media_destination(neg: &Negotiated) -> Option<Destination> {
    let rtp = neg.remote?;
    Some(Destination::with_rtcp(rtp, neg.rtcp.unwrap_or(rtp)))
}

fn srtp_keys(k: &SdesKeys) -> Option<(SrtpKey, SrtpKey)> {
    let suite = match k.suite {
        SdesSuite::AesCm128HmacSha1_80 => SrtpSuite::AesCm128HmacSha1_80,
        SdesSuite::AesCm128HmacSha1_32 => SrtpSuite::AesCm128HmacSha1_32,
        SdesSuite::AeadAes128Gcm => SrtpSuite::AeadAes128Gcm,
    };
    let tx = SrtpKey::new(suite, &k.local).ok()?;
    let rx = SrtpKey::new(suite, &k.remote).ok()?;
    Some((tx, rx))
}

fn to_media_direction(d: SdpDirection) -> siproam_media::MediaDirection {
    match d {
        SdpDirection::SendRecv => siproam_media::MediaDirection::SendRecv,
        SdpDirection::SendOnly => siproam_media::MediaDirection::SendOnly,
        SdpDirection::RecvOnly => siproam_media::MediaDirection::RecvOnly,
        SdpDirection::Inactive => siproam_media::MediaDirection::Inactive,
    }
}

impl Phone {
    /// A phone.
    pub fn new(config: PhoneConfig, seed: u64) -> Phone {
        Phone {
            config,
            calls: HashMap::new(),
            events: None,
            seed,
            messages: HashMap::new(),
            registered: std::collections::HashSet::new(),
        }
    }

    /// A call's RTP socket: on `media_ip` when configured, else on the
    /// address the call's signalling uses (`hint`: the source address
    /// towards its next hop, needed with wildcard listeners), else on the
    /// first listener's address.
    fn media_ip(&self, core: &Core, hint: Option<IpAddr>) -> IpAddr {
        self.config.media_ip.unwrap_or_else(|| {
            hint.filter(|ip| !ip.is_unspecified()).unwrap_or_else(|| {
                core.listen_points()
                    .iter()
                    .map(|p| p.addr.ip())
                    .find(|ip| !ip.is_unspecified())
                    .unwrap_or(IpAddr::from([127, 0, 0, 1]))
            })
        })
    }

    /// A call's media, its RTP socket not opened yet (`unbound`): on
    /// `media_ip` when configured, else on the address the call's
    /// signalling uses (`hint`: the source address towards its next hop,
    /// needed with wildcard listeners), else on the first listener's
    /// address.
    /// A call's SDP session, with its SRTP keys (from the OS) when the
    /// policy may use them.
    fn new_sdp_session(&self, local: SocketAddr) -> SdpSession {
        let config = SdpConfig {
            srtp: self.config.srtp,
            ..SdpConfig::default()
        };
        let mut sdp = SdpSession::new(self.seed, local, config);
        if self.config.srtp != SrtpPolicy::Off {
            let mut keys = [0u8; SDES_KEY_MATERIAL_LEN];
            match getrandom::fill(&mut keys) {
                Ok(()) => sdp.set_key_material(keys),
                // (without keys an optional call is plain, a mandatory
                // one is refused)
                Err(e) => debug!("no SRTP keys: {e}"),
            }
        }
        sdp
    }

    fn new_call_media(&mut self, core: &Core, hint: Option<IpAddr>) -> PhoneCall {
        let local = SocketAddr::new(self.media_ip(core, hint), 0);
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        PhoneCall {
            sdp: self.new_sdp_session(local),
            socket: None,
            local,
            unbound: true,
            media: None,
            offer: None,
            queued_refresh: None,
            reoffer_when_confirmed: false,
            telephone_event: None,
            direction: siproam_media::MediaDirection::SendRecv,
        }
    }

    fn source(&self) -> Box<dyn AudioSource + Send> {
        match &self.config.play {
            AudioSpec::Silence => Box::new(SilenceSource),
            AudioSpec::Tone(hz) => Box::new(ToneSource::new(*hz, 8000)),
            AudioSpec::Wav(path) => match WavSource::open(path) {
                Ok(w) => Box::new(w),
                Err(e) => {
                    debug!("cannot play {}: {e}", path.display());
                    Box::new(SilenceSource)
                }
            },
        }
    }

    /// Starts (or retargets) a call's media after a negotiation.
    fn media_negotiated(&mut self, call: CallId, neg: &Negotiated) {
        let source = self.source();
        let record = self.config.record.clone();
        let events = self.events.clone();
        let tap = self.config.wiretap.clone().filter(|t| t.writes_pcap());
        let seed = self.seed ^ u64::from(call.0);
        let Some(pc) = self.calls.get_mut(&call) else {
            return;
        };
        let direction = to_media_direction(neg.direction);
        pc.telephone_event = neg.telephone_event_pt;
        pc.direction = direction;
        let srtp = neg.srtp.as_ref().and_then(srtp_keys);
        if let Some(media) = &pc.media {
            if let Some(destination) = media_destination(neg) {
                let _ = media.send(MediaCmd::Destination(destination));
            }
            if let Some(keys) = srtp {
                let _ = media.send(MediaCmd::Srtp(Box::new(keys)));
            }
            let _ = media.send(MediaCmd::Direction(direction));
            return;
        }
        let Some(socket) = pc.socket.take() else {
            return;
        };
        let mut cfg = MediaConfig::new(seed);
        cfg.codec = match neg.codec {
            siproam_core::sdp::SdpCodec::Pcmu => siproam_media::Codec::Pcmu,
            siproam_core::sdp::SdpCodec::Pcma => siproam_media::Codec::Pcma,
        };
        cfg.telephone_event = neg.telephone_event_pt;
        cfg.direction = direction;
        // received audio is decoded only to be recorded
        cfg.playout = record.is_some();
        // the engine's clock (the session is sans-IO)
        let Ok(mut session) = MediaSession::new(cfg, Instant::now()) else {
            return;
        };
        if let Some(destination) = media_destination(neg) {
            session.set_destination(destination);
        }
        let sink: Option<Box<dyn AudioSink + Send>> =
            record.and_then(|p| match WavSink::create(&p) {
                Ok(s) => Some(Box::new(s) as Box<dyn AudioSink + Send>),
                Err(e) => {
                    debug!("cannot record to {}: {e}", p.display());
                    None
                }
            });
        match crate::media_engine::start(CallMedia {
            call,
            socket,
            session,
            source,
            sink,
            events,
            tap,
            srtp: srtp.map(|(tx, rx)| SrtpSession::new(&tx, &rx)),
        }) {
            Ok(handle) => pc.media = Some(handle),
            Err(e) => debug!("media of {call:?} not started: {e}"),
        }
    }

    /// Forgets a call; dropping its media handle stops its media.
    fn stop_media(&mut self, call: CallId) {
        self.calls.remove(&call);
    }

    /// Places a call with its media (an offer on a new RTP socket); for
    /// a transfer we accepted, as its new call (`transfer`).
    pub(crate) fn place_call(
        &mut self,
        core: &mut Core,
        now: Instant,
        uri: String,
        from: String,
        target: CoreTarget,
        transfer: Option<siproam_core::TransferId>,
    ) -> Result<CallId, PhoneError> {
        let user = siproam_sip::Uri::parse(&from)
            .ok()
            .and_then(|u| u.as_sip().and_then(|s| s.user()).map(str::to_owned))
            .unwrap_or_else(|| "siproam".into());
        let hint = target
            .local
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .or_else(|| crate::transport::source_address_for(target.remote).ok());
        let mut pc = self.new_call_media(core, hint);
        pc.bind().map_err(|e| {
            debug!("no RTP socket for a new call: {e}");
            PhoneError::Media(e)
        })?;
        let offer = pc.sdp.create_offer();
        let spec = InviteSpec {
            uri,
            from,
            target,
            sdp: Some(offer),
            contact_user: user,
        };
        let id = match transfer {
            Some(t) => core.transfer_invite(now, t, spec)?,
            None => core.invite(now, spec)?,
        };
        pc.offer = None;
        self.calls.insert(id, pc);
        Ok(id)
    }

    fn handle_command(
        &mut self,
        core: &mut Core,
        now: Instant,
        cmd: PhoneCommand,
    ) -> Result<Option<CallId>, PhoneError> {
        match cmd {
            PhoneCommand::Call { uri, from, target } => self
                .place_call(core, now, uri, from, target, None)
                .map(Some),
            PhoneCommand::Answer(call) => {
                self.answer_call(core, now, call)?;
                Ok(Some(call))
            }
            PhoneCommand::HangUp(call) => {
                core.hang_up(now, call)?;
                Ok(Some(call))
            }
            PhoneCommand::MoveMedia(call, ip) => self.handle_command(
                core,
                now,
                PhoneCommand::Refresh {
                    call,
                    media_ip: Some(ip),
                    update: false,
                },
            ),
            PhoneCommand::Refresh {
                call,
                media_ip,
                update,
            } => {
                let action = if core.call_refresh_pending(call) {
                    // a re-INVITE is stuck on the old path, or an offer is
                    // still out: CANCEL it where possible, re-offer after
                    let _ = core.cancel_refresh(now, call);
                    CallMoveAction::ReofferWhenSettled { update }
                } else {
                    CallMoveAction::Reoffer { update }
                };
                self.apply_move(core, now, call, media_ip, action)?;
                Ok(Some(call))
            }
            PhoneCommand::Rebind(call, ip) => {
                self.apply_move(core, now, call, Some(ip), CallMoveAction::Rebind)?;
                Ok(Some(call))
            }
            PhoneCommand::Dtmf(call, keys) => {
                let pc = self.calls.get(&call).ok_or(CoreError::NoSuchCall)?;
                let media = pc.media.as_ref().ok_or(PhoneError::NoMedia)?;
                // never in-band tones: without telephone-event, nothing
                if pc.telephone_event.is_none() {
                    return Err(MediaError::NoTelephoneEvent.into());
                }
                // held by the peer (or inactive): nothing of ours goes out
                if !pc.direction.sends() {
                    return Err(MediaError::NotSending(pc.direction).into());
                }
                let digits = keys
                    .chars()
                    .take(MAX_DTMF_QUEUE + 1)
                    .map(|c| DtmfDigit::from_char(c).ok_or(MediaError::NotADtmfKey(c)))
                    .collect::<Result<Vec<_>, _>>()?;
                if digits.len() > MAX_DTMF_QUEUE {
                    return Err(PhoneError::Busy);
                }
                media
                    .send(MediaCmd::Dtmf(digits))
                    .map_err(|_| PhoneError::NoMedia)?;
                Ok(Some(call))
            }
            PhoneCommand::Message {
                uri,
                from,
                target,
                text,
            } => {
                self.expire_messages(now);
                if self.messages.len() >= MAX_PENDING_MESSAGES {
                    return Err(PhoneError::Busy);
                }
                let peer = uri.clone();
                let id = core.send_message(
                    now,
                    MessageSpec {
                        uri,
                        from,
                        target,
                        text: text.clone(),
                    },
                )?;
                self.messages.insert(id, (peer, text, now));
                Ok(None)
            }
            PhoneCommand::Rekey(call) => {
                let pc = self.calls.get_mut(&call).ok_or(CoreError::NoSuchCall)?;
                if pc.sdp.negotiated().and_then(|n| n.srtp.as_ref()).is_none() {
                    return Err(PhoneError::NoSrtp);
                }
                let mut keys = [0u8; SDES_KEY_MATERIAL_LEN];
                getrandom::fill(&mut keys).map_err(|e| PhoneError::Media(e.into()))?;
                pc.sdp.rekey(keys);
                // refused (an offer outstanding …): the new keys go in the
                // next offer instead
                pc.reoffer(core, now, call, false)?;
                Ok(Some(call))
            }
            PhoneCommand::Hold(call, hold) => {
                let pc = self.calls.get_mut(&call).ok_or(CoreError::NoSuchCall)?;
                let before = pc.sdp.direction();
                pc.sdp.set_direction(if hold {
                    SdpDirection::SendOnly
                } else {
                    SdpDirection::SendRecv
                });
                // refused: no offer is left outstanding, the direction
                // stays as it was
                if let Err(e) = pc.reoffer(core, now, call, false) {
                    pc.sdp.set_direction(before);
                    return Err(e.into());
                }
                Ok(Some(call))
            }
        }
    }

    /// Re-opens a call's RTP socket on `ip` (make-before-break: the old one
    /// receives until the peer follows); a call not answered yet only
    /// notes where its socket will be opened.
    fn rebind_media(&mut self, call: CallId, ip: IpAddr) -> Result<(), PhoneError> {
        let pc = self.calls.get_mut(&call).ok_or(CoreError::NoSuchCall)?;
        if pc.unbound {
            pc.local = SocketAddr::new(ip, 0);
            pc.sdp.set_local_address(pc.local);
            return Ok(());
        }
        let (socket, local) = rtp_socket(ip).map_err(PhoneError::Media)?;
        match &pc.media {
            Some(m) => {
                let _ = m.send(MediaCmd::Rebind(socket, self.config.old_media_grace));
            }
            None => pc.socket = Some(socket),
        }
        pc.local = local;
        pc.sdp.set_local_address(local);
        Ok(())
    }

    /// An offer in the other address family than the call's RTP socket
    /// (the peer moved between IPv4 and IPv6): re-opens the call's media
    /// in the offer's family, where allowed, so the answer names an
    /// address the peer can reach.
    fn follow_offer_family(&mut self, call: CallId, offer: &[u8]) {
        if self.config.media_ip.is_some() {
            return;
        }
        let Some(pc) = self.calls.get(&call) else {
            return;
        };
        let Some(remote) = pc.sdp.offered_address(offer) else {
            return;
        };
        if remote.is_ipv4() == pc.local.is_ipv4() || !self.config.ipv6_media.allows(remote.ip()) {
            return;
        }
        match crate::transport::source_address_for(remote) {
            Ok(ip) => {
                if let Err(e) = self.rebind_media(call, ip) {
                    debug!("cannot open media on {ip}: {e}");
                }
            }
            Err(e) => debug!("no local address towards the offered media: {e}"),
        }
    }

    /// The media side of a moved call: re-open the RTP socket on
    /// `media_ip` (if given), then re-offer now, queue the re-offer behind
    /// the pending refresh, or (a call still ringing) re-offer an outgoing
    /// call once it is answered.
    fn apply_move(
        &mut self,
        core: &mut Core,
        now: Instant,
        call: CallId,
        media_ip: Option<IpAddr>,
        action: CallMoveAction,
    ) -> Result<(), PhoneError> {
        if action == CallMoveAction::Nothing {
            return Ok(());
        }
        if let Some(ip) = media_ip {
            self.rebind_media(call, ip)?;
        }
        let pc = self.calls.get_mut(&call).ok_or(CoreError::NoSuchCall)?;
        match action {
            CallMoveAction::Nothing => Ok(()),
            CallMoveAction::Rebind => {
                // its offer named the old address: re-offer once answered
                if media_ip.is_some() && core.call_is_outgoing(call) {
                    pc.reoffer_when_confirmed = true;
                }
                Ok(())
            }
            CallMoveAction::Reoffer { update } => Ok(pc.reoffer(core, now, call, update)?),
            CallMoveAction::ReofferWhenSettled { update } => {
                pc.queued_refresh = Some(update);
                Ok(())
            }
            CallMoveAction::Resend => {
                // the INVITE was given up: a new one with a fresh offer
                // naming the new media address (the old offer was never
                // answered)
                pc.sdp.cancel_offer();
                let offer = pc.sdp.create_offer();
                Ok(core.resend_invite(now, call, Some(offer))?)
            }
        }
    }

    /// Answers an incoming call: its RTP socket is opened now; if it
    /// cannot be (out of descriptors), the call is refused 503 with
    /// `Retry-After` and the error returned.
    fn answer_call(
        &mut self,
        core: &mut Core,
        now: Instant,
        call: CallId,
    ) -> Result<(), PhoneError> {
        let pc = self.calls.get_mut(&call).ok_or(CoreError::NoSuchCall)?;
        if let Err(e) = pc.bind() {
            debug!("no RTP socket for {call:?}: {e}");
            let retry_after = self.config.retry_after.to_string();
            core.refuse(now, call, 503, &[("Retry-After", &retry_after)])?;
            return Err(PhoneError::Media(e));
        }
        let offer = pc.offer.take().unwrap_or_default();
        match pc.sdp.answer(&offer) {
            Ok((answer, neg)) => {
                core.answer(now, call, 200, Some(answer))?;
                self.media_negotiated(call, &neg);
                Ok(())
            }
            Err(e) => {
                debug!("cannot answer the offer: {e}");
                Ok(core.answer(now, call, e.status_code(), None)?)
            }
        }
    }

    /// An answer we cannot use: with SRTP mandatory, an answer without
    /// usable crypto ends the call (never plain media: a BYE with `Reason:
    /// SIP ;cause=488`, the call refused with 488); else it is only logged,
    /// as before.
    fn unusable_answer(
        &mut self,
        core: &mut Core,
        now: Instant,
        call: CallId,
        e: &siproam_core::sdp::SdpError,
    ) {
        use siproam_core::sdp::SdpError;
        if matches!(
            e,
            SdpError::MissingCrypto | SdpError::UnusableCrypto | SdpError::NoKeyMaterial
        ) {
            tracing::warn!(
                "call ended: SRTP is mandatory and the answer has no usable crypto ({e})"
            );
            // a BYE giving 488 and why; the call ends refused with 488
            if let Err(e) = core.end_unacceptable_media(
                now,
                call,
                "SRTP is mandatory and the answer has no usable crypto",
            ) {
                debug!("could not end {call:?}: {e}");
            }
        } else {
            debug!("bad answer: {e}");
        }
    }

    /// A new incoming call: its offer is checked (refused 488 with a
    /// `Warning` when unusable), then it rings or, with `auto_answer`, is
    /// answered. No RTP socket is opened before the answer.
    fn incoming_call(&mut self, core: &mut Core, now: Instant, call: CallId, offer: &Bytes) {
        // the address the peer reaches us on: where our listener is
        // pinned, else the source address towards its Contact
        let pinned = core
            .listen_points()
            .iter()
            .map(|p| p.addr.ip())
            .find(|ip| !ip.is_unspecified());
        let hint = pinned.or_else(|| {
            core.call_next_hop(call)
                .and_then(|hop| crate::transport::source_address_for(hop.remote).ok())
        });
        let mut pc = self.new_call_media(core, hint);
        if let Err(e) = pc.sdp.check_offer(offer) {
            debug!("refusing {call:?}: {e}");
            let (code, text) = e.warning();
            let warning = format!("{code} siproam \"{text}\"");
            if let Err(e) = core.refuse(now, call, 488, &[("Warning", &warning)]) {
                debug!("could not refuse {call:?}: {e}");
            }
            return;
        }
        pc.offer = Some(offer.clone());
        self.calls.insert(call, pc);
        self.follow_offer_family(call, offer);
        // a call replacing one of ours (RFC 3891) is taken at once
        let r = if self.config.auto_answer || core.call_replaces(call).is_some() {
            self.answer_call(core, now, call)
        } else {
            core.answer(now, call, 180, None).map_err(PhoneError::from)
        };
        if let Err(e) = r {
            debug!("incoming {call:?}: {e}");
        }
    }
}

impl Phone {
    /// Hands a report to the endpoint's owner (dropped when it lags).
    fn report(&self, ev: EndpointEvent) {
        if let Some(events) = &self.events {
            if events.try_send(ev).is_err() {
                debug!("event dropped: the owner lags");
            }
        }
    }

    /// MESSAGEs whose transaction must have ended long ago (Timer F is
    /// 32 s) without a word: reported as unanswered (408), so a lost
    /// report cannot hold a slot for good.
    fn expire_messages(&mut self, now: Instant) {
        let stale: Vec<RequestId> = self
            .messages
            .iter()
            .filter(|(_, (_, _, at))| now.saturating_duration_since(*at) > MESSAGE_GIVE_UP)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.message_done(id, 408);
        }
    }

    /// A MESSAGE we sent got its final answer (or none).
    fn message_done(&mut self, request: RequestId, code: u16) {
        if let Some((peer, text, _)) = self.messages.remove(&request) {
            self.report(EndpointEvent::Message(MessageReport {
                direction: Direction::Sent,
                peer,
                text,
                code: Some(code),
            }));
        }
    }
}

impl Application for Phone {
    fn attach(&mut self, events: mpsc::Sender<EndpointEvent>) {
        self.events = Some(events);
    }

    fn configure(&mut self, core: &mut Core) {
        core.set_incoming_call_limits(self.config.incoming);
    }

    fn command(
        &mut self,
        core: &mut Core,
        now: Instant,
        cmd: AppCommand,
    ) -> Result<Option<CallId>, CommandError> {
        let cmd = match cmd.downcast::<PhoneCommand>() {
            Ok(cmd) => cmd,
            Err(other) => {
                let other = match crate::subscribe::downcast(other) {
                    Ok(cmd) => return crate::subscribe::perform(core, now, *cmd),
                    Err(other) => other,
                };
                let cmd =
                    crate::transfer::downcast(other).map_err(|_| CommandError::Unsupported)?;
                return crate::transfer::perform(self, core, now, *cmd);
            }
        };
        Ok(self.handle_command(core, now, *cmd)?)
    }

    fn on_event(&mut self, core: &mut Core, now: Instant, event: Event) -> Option<Event> {
        match &event {
            Event::IncomingRequest {
                tx: Some(tx),
                request,
                ..
            } => match core.accept_message(now, *tx, request) {
                Ok(Ok(m)) => self.report(EndpointEvent::Message(MessageReport {
                    direction: Direction::Received,
                    peer: m.peer,
                    text: m.text,
                    code: None,
                })),
                Ok(Err(MessageRefusal::NotAMessage)) => {
                    let _ = core.respond_default(now, *tx, request);
                }
                // (no text, no sender in the log)
                Ok(Err(refusal)) => debug!("MESSAGE refused: {refusal}"),
                Err(e) => debug!("MESSAGE not answered: {e}"),
            },
            Event::Response { request, response } => {
                if let Some(code) = response.status().filter(|c| *c >= 200) {
                    self.message_done(*request, code);
                }
            }
            Event::RequestFailed { request, reason } => self.message_done(
                *request,
                match reason {
                    RequestFailure::Timeout => 408,
                    RequestFailure::Transport(_) => 503,
                },
            ),
            Event::IncomingCall { call, request } => {
                self.incoming_call(core, now, *call, request.body());
            }
            // our presence (served to subscribers): open while registered
            Event::Registration(r) => {
                // (a refresh in progress changes nothing)
                match r.state {
                    siproam_core::RegistrationState::Registered => {
                        self.registered.insert(r.account);
                    }
                    siproam_core::RegistrationState::Registering => {}
                    _ => {
                        self.registered.remove(&r.account);
                    }
                }
                core.set_presence(now, !self.registered.is_empty());
            }
            // a network change moved the call: its media part
            Event::CallMoved {
                call,
                media_ip,
                action,
            } => {
                if let Err(e) = self.apply_move(core, now, *call, *media_ip, *action) {
                    debug!("media of {call:?} not moved: {e}");
                }
            }
            Event::Call(CallEvent::State {
                call,
                state: CallState::Confirmed | CallState::Early,
                body,
                ..
            }) => {
                // our INVITE's answer
                if let (Some(body), Some(pc)) = (body, self.calls.get_mut(call)) {
                    if pc.sdp.has_pending_offer() {
                        match pc.sdp.handle_answer(body) {
                            Ok(neg) => self.media_negotiated(*call, &neg),
                            Err(e) => self.unusable_answer(core, now, *call, &e),
                        }
                    }
                }
            }
            Event::Call(CallEvent::Offer { call, body, .. }) => {
                self.follow_offer_family(*call, body);
                if let Some(pc) = self.calls.get_mut(call) {
                    match pc.sdp.answer(body) {
                        Ok((answer, neg)) => {
                            let _ = core.answer_offer(now, *call, answer);
                            self.media_negotiated(*call, &neg);
                        }
                        Err(e) => debug!("cannot answer the re-offer: {e}"),
                    }
                }
            }
            Event::Call(CallEvent::OfferWanted { call }) => {
                if let Some(pc) = self.calls.get_mut(call) {
                    let offer = pc.sdp.create_offer();
                    let _ = core.answer_offer(now, *call, offer);
                }
            }
            Event::Call(CallEvent::Answer {
                call,
                body: Some(body),
            }) => {
                if let Some(pc) = self.calls.get_mut(call) {
                    match pc.sdp.handle_answer(body) {
                        Ok(neg) => self.media_negotiated(*call, &neg),
                        Err(e) => self.unusable_answer(core, now, *call, &e),
                    }
                }
            }
            Event::Call(CallEvent::RefreshFailed { call, .. }) => {
                if let Some(pc) = self.calls.get_mut(call) {
                    pc.sdp.cancel_offer();
                }
            }
            _ => {}
        }
        // the owner hears of the end before the media's last report, which
        // the engine thread sends once the media stopped
        if let Event::Call(CallEvent::State {
            call,
            state: CallState::Disconnected,
            ..
        }) = &event
        {
            let call = *call;
            if self.calls.contains_key(&call) {
                self.report(EndpointEvent::Core(event));
                self.stop_media(call);
                return None;
            }
        }
        // answered after its media moved: re-offer the new address
        if let Event::Call(CallEvent::State {
            call,
            state: CallState::Confirmed,
            ..
        }) = &event
        {
            if let Some(pc) = self.calls.get_mut(call) {
                if std::mem::take(&mut pc.reoffer_when_confirmed) {
                    if core.call_refresh_pending(*call) {
                        // the early UPDATE is still out: after it settles
                        pc.queued_refresh = Some(false);
                    } else {
                        let _ = pc.reoffer(core, now, *call, false);
                    }
                }
            }
        }
        // the refresh in progress settled: send the one queued behind it
        if let Event::Call(CallEvent::Answer { call, .. } | CallEvent::RefreshFailed { call, .. }) =
            &event
        {
            if let Some(pc) = self.calls.get_mut(call) {
                if let Some(update) = pc.queued_refresh.take() {
                    let _ = pc.reoffer(core, now, *call, update);
                }
            }
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    /// A sent MESSAGE whose report never comes (a transaction the core
    /// dropped without a word) does not hold its slot for good: after
    /// `MESSAGE_GIVE_UP` it is reported unanswered (408), not before.
    #[test]
    fn a_message_without_a_report_is_given_up_as_408() {
        let mut phone = Phone::new(PhoneConfig::default(), 1);
        let (tx, mut rx) = mpsc::channel(8);
        phone.attach(tx);
        let t0 = Instant::now();
        phone.messages.insert(
            RequestId(7),
            ("sip:bob@example.test".into(), "hi".into(), t0),
        );
        phone.expire_messages(t0 + MESSAGE_GIVE_UP);
        assert_eq!(phone.messages.len(), 1, "not before its time");
        assert!(rx.try_recv().is_err());
        phone.expire_messages(t0 + MESSAGE_GIVE_UP + Duration::from_secs(1));
        assert!(phone.messages.is_empty());
        match rx.try_recv() {
            Ok(EndpointEvent::Message(m)) => {
                assert_eq!(m.direction, Direction::Sent);
                assert_eq!(m.code, Some(408));
                assert_eq!(m.peer, "sip:bob@example.test");
            }
            other => panic!("{other:?}"),
        }
    }
}
