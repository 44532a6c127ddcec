//! SDP offer/answer (RFC 3264) for one audio stream.
//!
//! [`SdpSession`] is the SDP state of one call: it writes our offers and
//! answers and reads the peer's, and remembers what both sides last said.
//! It is sans-IO like the rest of the core: bytes in, bytes and values out,
//! no clock, no randomness (the `o=` session id is an input).
//!
//! What it speaks:
//!
//! * one `m=audio … RTP/AVP` stream with PCMU (PT 0), PCMA (PT 8) and
//!   RFC 4733 telephone-event (dynamic PT, `a=fmtp:<pt> 0-16`), `a=ptime`;
//! * `c=IN IP4` and `c=IN IP6`, at session or media level;
//! * `a=sendrecv` / `sendonly` / `recvonly` / `inactive` at session or media
//!   level, hold and resume per RFC 3264 §8.4, and the RFC 2543 hold form
//!   `c=IN IP4 0.0.0.0` ("send nothing to me") when reading;
//! * SRTP with SDES keys (RFC 4568, in [`sdes`]) on that stream when
//!   [`MediaConfig::srtp`] allows it: `RTP/SAVP`, or `RTP/AVP` with
//!   `a=crypto` lines (best effort, as baresip's `mediaenc=srtp`);
//! * any other m-line (video, a second audio stream, DTLS-SRTP, WebRTC …) is
//!   declined with port 0 and its format list copied, as RFC 3264 §6 asks:
//!   the answer has as many m-lines as the offer, in the same order, and
//!   later offers keep those m-lines (RFC 3264 §8).
//!
//! Versioning (RFC 3264 §8): the `o=` line keeps its session id and address
//! for the life of the session; its version goes up by one whenever an SDP
//! we write differs from the previous one we wrote, and stays when nothing
//! changed (a session refresh, a retransmitted offer).
//!
//! Offer/answer exchanges:
//!
//! | we … | call |
//! |---|---|
//! | send an offer (INVITE, re-INVITE, UPDATE, offer in a 2xx) | [`SdpSession::create_offer`], then [`SdpSession::handle_answer`] with the peer's answer, or [`SdpSession::cancel_offer`] when the request failed (RFC 3261 §14.1: the session stays as it was) |
//! | receive an offer | [`SdpSession::answer`]; on [`SdpError::NoCommonCodec`] / [`SdpError::NoAudio`] / [`SdpError::MissingCrypto`] / [`SdpError::UnusableCrypto`] refuse it with [`SdpError::status_code`] (488), or, where a refusal is impossible (the offer came in a 2xx and the answer goes into the ACK), send [`SdpSession::reject`]'s answer |

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

pub mod sdes;

use sdes::{CryptoLine, KeyStore};
pub use sdes::{ParseSrtpPolicyError, SdesKeys, SdesSuite, SrtpPolicy, SDES_KEY_MATERIAL_LEN};

/// RTP clock rate of every format this module negotiates.
const CLOCK_RATE: u32 = 8000;
/// telephone-event PT used when [`MediaConfig::telephone_event_pt`] is out of range.
const DEFAULT_TELEPHONE_EVENT_PT: u8 = 101;
/// ptime used when [`MediaConfig::ptime_ms`] is zero.
const DEFAULT_PTIME_MS: u32 = 20;
/// A peer's `a=ptime` outside 1..=MAX_PTIME_MS is ignored.
const MAX_PTIME_MS: u32 = 200;

/// The transport profile of an audio stream we take part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// `RTP/AVP`: plain RTP, or SRTP when both sides wrote `a=crypto`.
    Avp,
    /// `RTP/SAVP`: SRTP only.
    Savp,
}

impl Profile {
    const fn as_str(self) -> &'static str {
        match self {
            Profile::Avp => "RTP/AVP",
            Profile::Savp => "RTP/SAVP",
        }
    }

    /// The profile of an audio m-line, if it is one we speak.
    fn of(media: &sdp_types::Media) -> Option<Profile> {
        if !media.media.eq_ignore_ascii_case("audio") {
            return None;
        }
        let proto = media.proto.trim();
        [Profile::Avp, Profile::Savp]
            .into_iter()
            .find(|p| proto.eq_ignore_ascii_case(p.as_str()))
    }
}

/// An audio codec this module can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdpCodec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl SdpCodec {
    /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
    pub const fn static_payload_type(self) -> u8 {
        match self {
            SdpCodec::Pcmu => 0,
            SdpCodec::Pcma => 8,
        }
    }

    /// The encoding name used in `a=rtpmap`: `PCMU` or `PCMA`.
    pub const fn encoding_name(self) -> &'static str {
        match self {
            SdpCodec::Pcmu => "PCMU",
            SdpCodec::Pcma => "PCMA",
        }
    }

    fn from_static_payload_type(pt: u8) -> Option<SdpCodec> {
        match pt {
            0 => Some(SdpCodec::Pcmu),
            8 => Some(SdpCodec::Pcma),
            _ => None,
        }
    }
}

/// Media direction (RFC 3264 §5.1, §6.1), always from the point of view of
/// the side that wrote it: in our SDP and in [`Negotiated`] it is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SdpDirection {
    /// Send and receive (the default when an SDP names no direction).
    #[default]
    SendRecv,
    /// Send only; the holding side's direction when it puts a call on hold.
    SendOnly,
    /// Receive only; the direction of the side being held.
    RecvOnly,
    /// Neither send nor receive.
    Inactive,
}

impl SdpDirection {
    /// Whether this direction includes sending media.
    pub const fn sends(self) -> bool {
        matches!(self, SdpDirection::SendRecv | SdpDirection::SendOnly)
    }

    /// Whether this direction includes receiving media.
    pub const fn receives(self) -> bool {
        matches!(self, SdpDirection::SendRecv | SdpDirection::RecvOnly)
    }

    const fn from_flags(send: bool, recv: bool) -> SdpDirection {
        match (send, recv) {
            (true, true) => SdpDirection::SendRecv,
            (true, false) => SdpDirection::SendOnly,
            (false, true) => SdpDirection::RecvOnly,
            (false, false) => SdpDirection::Inactive,
        }
    }

    const fn as_str(self) -> &'static str {
        match self {
            SdpDirection::SendRecv => "sendrecv",
            SdpDirection::SendOnly => "sendonly",
            SdpDirection::RecvOnly => "recvonly",
            SdpDirection::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<SdpDirection> {
        [
            SdpDirection::SendRecv,
            SdpDirection::SendOnly,
            SdpDirection::RecvOnly,
            SdpDirection::Inactive,
        ]
        .into_iter()
        .find(|d| name.trim().eq_ignore_ascii_case(d.as_str()))
    }
}

/// What we are willing to use. [`Default`] is PCMU then PCMA,
/// telephone-event on PT 101, 20 ms, no SRTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Codecs in our order of preference (the order of our offers). When
    /// answering, the offerer's order decides. Duplicates are ignored; an
    /// empty list means the default `[Pcmu, Pcma]`.
    pub codecs: Vec<SdpCodec>,
    /// Payload type we offer telephone-event (RFC 4733, events 0-16) on, or
    /// `None` to neither offer nor accept it. Must be dynamic (96..=127);
    /// anything else is replaced by 101. When answering, the offerer's PT is
    /// used.
    pub telephone_event_pt: Option<u8>,
    /// Packetisation we want to receive, written as `a=ptime`; 0 means 20.
    pub ptime_ms: u32,
    /// Whether to use SRTP with SDES keys (RFC 4568). Anything but
    /// [`SrtpPolicy::Off`] needs [`SdpSession::set_key_material`].
    pub srtp: SrtpPolicy,
    /// SRTP suites in our order of preference: the order of our offer's
    /// `a=crypto` lines, and the choice among the usable lines of a peer's
    /// offer (except that a suite already in use is kept). Duplicates are
    /// ignored; an empty list means [`SdesSuite::ALL`] (the 80-bit tag
    /// first, for interoperability).
    pub srtp_suites: Vec<SdesSuite>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            codecs: vec![SdpCodec::Pcmu, SdpCodec::Pcma],
            telephone_event_pt: Some(DEFAULT_TELEPHONE_EVENT_PT),
            ptime_ms: DEFAULT_PTIME_MS,
            srtp: SrtpPolicy::Off,
            srtp_suites: SdesSuite::ALL.to_vec(),
        }
    }
}

/// The result of a completed offer/answer exchange: how to run the audio
/// stream now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP. `None` when the peer used the RFC 2543 hold form
    /// `c=0.0.0.0` (or `::`): send nothing.
    pub remote: Option<SocketAddr>,
    /// Where to send RTCP: [`Negotiated::remote`] itself when the peer does
    /// `a=rtcp-mux` (RFC 5761), the peer's `a=rtcp` port and address
    /// (RFC 3605), else the next port up (RFC 3550 §11). `None` exactly
    /// when `remote` is.
    pub rtcp: Option<SocketAddr>,
    /// The codec to send and expect.
    pub codec: SdpCodec,
    /// The payload type of [`Negotiated::codec`] on the wire.
    pub payload_type: u8,
    /// The telephone-event payload type, if both sides do RFC 4733.
    pub telephone_event_pt: Option<u8>,
    /// Our direction: [`SdpDirection::SendOnly`] means we send and do not
    /// receive (we hold the peer), [`SdpDirection::RecvOnly`] that the peer
    /// holds us.
    pub direction: SdpDirection,
    /// Packetisation to send with: the peer's `a=ptime` if it gave a sane
    /// one, else ours.
    pub ptime_ms: u32,
    /// The SRTP suite and keys (ours to send with, the peer's to receive
    /// with), or `None` for plain RTP. Compare with the previous result to
    /// tell whether either key changed (a peer's re-offer may bring a new
    /// key; ours change only after [`SdpSession::rekey`]).
    pub srtp: Option<SdesKeys>,
}

/// Why an SDP could not be used. Unless a method says otherwise, an error
/// leaves the session as it was.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is not a syntactically valid SDP.
    #[error("malformed SDP")]
    Parse(#[source] ParseError),
    /// The audio stream has no `c=` line, neither at media nor at session level.
    #[error("no connection address for the audio stream")]
    MissingConnection,
    /// The audio stream's `c=` is not an `IN IP4` / `IN IP6` unicast IP
    /// literal of the stated family (a host name, multicast, another network type).
    #[error("unsupported connection address")]
    UnsupportedAddress,
    /// The offer has no enabled `m=audio … RTP/AVP` stream (nor, unless
    /// [`MediaConfig::srtp`] is [`SrtpPolicy::Off`], `RTP/SAVP`), or the
    /// answer's m-line in the audio slot is not one of the profile we
    /// offered.
    #[error("no usable RTP/AVP audio stream")]
    NoAudio,
    /// No codec the peer listed is one we do (or, in an answer, one we offered).
    #[error("no codec in common")]
    NoCommonCodec,
    /// The peer's answer declined our audio stream (port 0).
    #[error("the answer rejected the audio stream")]
    AudioRejected,
    /// The answer does not have one m-line per m-line of our offer.
    #[error("answer has {answered} m-lines, the offer had {offered}")]
    MediaCountMismatch {
        /// m-lines in our offer.
        offered: usize,
        /// m-lines in the answer.
        answered: usize,
    },
    /// An answer arrived but we have no offer outstanding.
    #[error("answer received without an outstanding offer")]
    NoOfferPending,
    /// An offer arrived while our own offer is outstanding (glare).
    #[error("offer received while our own offer is outstanding")]
    OfferPending,
    /// SRTP is required (an `RTP/SAVP` stream, or our
    /// [`SrtpPolicy::Mandatory`]) but the peer's audio stream has no
    /// `a=crypto` line at all.
    #[error("SRTP is required but the audio stream has no a=crypto line")]
    MissingCrypto,
    /// SRTP is required (an `RTP/SAVP` stream, our
    /// [`SrtpPolicy::Mandatory`], or an answer that has `a=crypto` lines)
    /// but none of the audio stream's `a=crypto` lines is usable: unknown
    /// suites, a key that is not base64 or not the suite's length, an MKI,
    /// an unsupported session parameter, our own key echoed, or (in an
    /// answer) no tag and suite we offered.
    #[error("no usable a=crypto line in the audio stream")]
    UnusableCrypto,
    /// SRTP is mandatory but no key material was given
    /// ([`SdpSession::set_key_material`]).
    #[error("SRTP is mandatory but no key material was set")]
    NoKeyMaterial,
}

impl SdpError {
    /// The SIP status code to refuse a request whose offer failed with this
    /// error: 400 for a malformed body, 488 (Not Acceptable Here) for
    /// media we cannot do, 491 (Request Pending) for glare, 500 for an API
    /// misuse. (An answer in a response cannot be refused; there it is only
    /// a hint of what went wrong.)
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::Parse(_)
            | SdpError::MissingConnection
            | SdpError::MediaCountMismatch { .. } => 400,
            SdpError::UnsupportedAddress
            | SdpError::NoAudio
            | SdpError::NoCommonCodec
            | SdpError::AudioRejected
            | SdpError::MissingCrypto
            | SdpError::UnusableCrypto => 488,
            SdpError::OfferPending => 491,
            SdpError::NoOfferPending | SdpError::NoKeyMaterial => 500,
        }
    }

    /// The RFC 3261 §20.43 warn-code and text for a `Warning` header on
    /// the refusal of an offer that failed with this error (`Warning: 305
    /// siproam "Incompatible media format"`).
    pub fn warning(&self) -> (u16, &'static str) {
        match self {
            SdpError::UnsupportedAddress => (301, "Incompatible network address formats"),
            SdpError::NoAudio | SdpError::AudioRejected => (304, "Media type not available"),
            SdpError::NoCommonCodec => (305, "Incompatible media format"),
            SdpError::MissingCrypto => (302, "Incompatible transport protocol"),
            SdpError::UnusableCrypto => (306, "Attribute not understood"),
            SdpError::MissingConnection => (307, "Session description parameter not understood"),
            SdpError::Parse(_) => (399, "Malformed session description"),
            SdpError::MediaCountMismatch { .. }
            | SdpError::NoOfferPending
            | SdpError::OfferPending
            | SdpError::NoKeyMaterial => (399, "Miscellaneous warning"),
        }
    }
}

/// The SDP parser's diagnosis of a malformed body (line number and field).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct ParseError(sdp_types::ParserError);

/// A set of RFC 4733 event codes, bit n = event n; we support 0-16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventSet(u32);

impl EventSet {
    /// DTMF 0-9 * # A-D (0-15) and flash (16).
    const SUPPORTED: EventSet = EventSet(0x1_FFFF);
    /// What a telephone-event without `a=fmtp` means (RFC 4733 §2.4.1).
    const DEFAULT: EventSet = EventSet(0xFFFF);
    const MAX_EVENT: u8 = 16;

    /// Parses an `a=fmtp` event list such as `0-11,16`, keeping only events
    /// we support; malformed items are skipped.
    fn parse_supported(list: &str) -> EventSet {
        let mut bits = 0u32;
        for item in list.split(',') {
            let item = item.trim();
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (lo.trim().parse::<u8>(), hi.trim().parse::<u8>()),
                None => (item.parse::<u8>(), item.parse::<u8>()),
            };
            if let (Ok(lo), Ok(hi)) = (lo, hi) {
                for event in lo..=hi.min(Self::MAX_EVENT) {
                    bits |= 1 << event;
                }
            }
        }
        EventSet(bits & Self::SUPPORTED.0)
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn contains(self, event: u8) -> bool {
        event <= Self::MAX_EVENT && self.0 & (1 << event) != 0
    }

    /// Writes the set as ranges: `0-16`, `0-11,16`.
    fn to_fmtp(self) -> String {
        let mut out = String::new();
        let mut event = 0u8;
        while event <= Self::MAX_EVENT {
            if !self.contains(event) {
                event += 1;
                continue;
            }
            let start = event;
            while event < Self::MAX_EVENT && self.contains(event + 1) {
                event += 1;
            }
            if !out.is_empty() {
                out.push(',');
            }
            if start == event {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&start.to_string());
                out.push('-');
                out.push_str(&event.to_string());
            }
            event += 1;
        }
        out
    }
}

/// One payload format of our audio m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalFormat {
    SdpCodec { pt: u8, codec: SdpCodec },
    TelephoneEvent { pt: u8, events: EventSet },
}

impl LocalFormat {
    fn pt(self) -> u8 {
        match self {
            LocalFormat::SdpCodec { pt, .. } | LocalFormat::TelephoneEvent { pt, .. } => pt,
        }
    }
}

/// One m-line of the session, in order. RFC 3264 §8: later offers keep
/// every m-line the session ever had.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// Our audio stream.
    Audio,
    /// A stream we declined; written back with port 0 and its own format list.
    Declined {
        media: String,
        proto: String,
        fmt: String,
    },
}

/// The audio m-line as we are about to write it. (No `Debug`: the crypto
/// values hold our keys.)
#[derive(Clone)]
struct AudioOut {
    port: u16,
    formats: Vec<LocalFormat>,
    direction: SdpDirection,
    profile: Profile,
    /// `a=crypto` values, in order.
    crypto: Vec<String>,
    /// Whether to write `a=rtcp-mux`: always in an offer, in an answer only
    /// when the offer had it (RFC 5761 §5.1.1).
    rtcp_mux: bool,
}

/// The last SDP we wrote. `Debug` shows its length only: it may hold our
/// SRTP keys.
#[derive(Clone)]
struct SentSdp(Bytes);

impl std::fmt::Debug for SentSdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes of SDP>", self.0.len())
    }
}

/// What we asked for in the offer that awaits an answer.
#[derive(Debug, Clone)]
struct PendingOffer {
    formats: Vec<LocalFormat>,
    direction: SdpDirection,
    audio_index: usize,
    mline_count: usize,
    profile: Profile,
    /// The tag and suite of each `a=crypto` line we offered.
    crypto: Vec<(u32, SdesSuite)>,
    /// Our keys as offered (a rekey before the answer does not change
    /// what the offer said).
    keys: Option<KeyStore>,
}

/// The SDP side of one call: our `o=` line, our RTP address, the direction
/// we want, the m-line layout, an outstanding offer and the last negotiated
/// result. See the [module documentation](self) for the flow.
#[derive(Debug, Clone)]
pub struct SdpSession {
    session_id: u64,
    version: u64,
    /// The `o=` address; fixed for the session (RFC 3264 §8), even when the
    /// RTP address moves.
    origin_ip: IpAddr,
    local: SocketAddr,
    config: MediaConfig,
    /// The direction the application asked for.
    wanted: SdpDirection,
    /// The peer's last offer said it does not want to receive (it holds
    /// us): our offers then leave out sending too (RFC 3264 §8.4).
    held_by_peer: bool,
    slots: Vec<Slot>,
    /// The audio formats of our next offer: the configured ones, or the
    /// ones of our last answer so that a refresh or hold does not reopen
    /// the codec choice.
    formats: Vec<LocalFormat>,
    pending: Option<PendingOffer>,
    last_sent: Option<SentSdp>,
    negotiated: Option<Negotiated>,
    /// Our SDES key per suite; `Debug` hides them.
    keys: Option<KeyStore>,
    /// The SRTP suite in use and the tag of its `a=crypto` line, from the
    /// last completed exchange.
    srtp_active: Option<(SdesSuite, u32)>,
    /// The audio profile of the last completed exchange.
    profile: Profile,
}

impl SdpSession {
    /// A new session. `session_id` is the `o=` session id, drawn by the
    /// caller (RFC 3264 §5 suggests an NTP timestamp; keeping it below 2^63
    /// helps peers that parse it as a signed number); the version starts
    /// at one. `local` is the address and port we receive RTP on; its IP is
    /// also the `o=` address for the whole session.
    pub fn new(session_id: u64, local: SocketAddr, config: MediaConfig) -> Self {
        let config = normalise(config);
        let formats = offer_formats(&config);
        SdpSession {
            session_id,
            version: 1,
            origin_ip: local.ip(),
            local,
            config,
            wanted: SdpDirection::SendRecv,
            held_by_peer: false,
            slots: vec![Slot::Audio],
            formats,
            pending: None,
            last_sent: None,
            negotiated: None,
            keys: None,
            srtp_active: None,
            profile: Profile::Avp,
        }
    }

    /// Gives the session our SDES keys: [`SDES_KEY_MATERIAL_LEN`] bytes
    /// from a secure random generator, one master key||salt per suite in
    /// the order of [`SdesSuite::ALL`] (bytes 0..30 for
    /// `AES_CM_128_HMAC_SHA1_80`, 30..60 for `AES_CM_128_HMAC_SHA1_32`,
    /// 60..88 for `AEAD_AES_128_GCM`), so each suite has its own key.
    /// Needed for any [`SrtpPolicy`] but [`SrtpPolicy::Off`]; call it before
    /// the first offer or answer.
    ///
    /// The keys then stay for the life of the session: re-offers (after a
    /// network change, for hold) carry the same keys, so the stream goes on
    /// with the same SRTP context and rollover counter. Once keys are set
    /// this does nothing; [`SdpSession::rekey`] replaces them.
    pub fn set_key_material(&mut self, material: [u8; SDES_KEY_MATERIAL_LEN]) {
        if self.keys.is_none() {
            self.keys = Some(KeyStore::new(material));
        }
    }

    /// Replaces our SDES keys (same layout as
    /// [`SdpSession::set_key_material`]): the next offer or answer carries
    /// the new keys, with the same tags (RFC 4568 §7.1.4, re-keying in a
    /// new offer). An outstanding offer keeps the keys it was written with.
    pub fn rekey(&mut self, material: [u8; SDES_KEY_MATERIAL_LEN]) {
        self.keys = Some(KeyStore::new(material));
    }

    /// The SRTP policy in force: the configured one, except that
    /// [`SrtpPolicy::Optional`] without keys acts as [`SrtpPolicy::Off`].
    fn srtp_policy(&self) -> SrtpPolicy {
        match (self.config.srtp, &self.keys) {
            (SrtpPolicy::Optional, None) => SrtpPolicy::Off,
            (policy, _) => policy,
        }
    }

    /// What [`choose_offered_audio`] needs to pick the crypto of an offer.
    fn srtp_context(&self) -> Result<SrtpContext<'_>, SdpError> {
        let policy = self.srtp_policy();
        let keys = match (policy, &self.keys) {
            (SrtpPolicy::Off, _) => None,
            (_, Some(keys)) => Some(keys),
            (_, None) => return Err(SdpError::NoKeyMaterial),
        };
        Ok(SrtpContext {
            policy,
            suites: &self.config.srtp_suites,
            keys,
            active: self.srtp_active.map(|(suite, _)| suite),
        })
    }

    /// Writes an offer (initial or re-offer) and makes it the outstanding
    /// one, replacing any earlier outstanding offer. The version goes up
    /// only if the SDP differs from the last one we wrote.
    ///
    /// The direction offered is the one from [`SdpSession::set_direction`],
    /// without sending if the peer's last offer put us on hold (so holding
    /// a held call offers `inactive`, RFC 3264 §8.4).
    #[must_use = "the offer must be sent"]
    pub fn create_offer(&mut self) -> Bytes {
        if !self.slots.contains(&Slot::Audio) {
            self.slots.push(Slot::Audio);
        }
        let direction = SdpDirection::from_flags(
            self.wanted.sends() && !self.held_by_peer,
            self.wanted.receives(),
        );
        let policy = self.srtp_policy();
        let profile = match policy {
            SrtpPolicy::Off => Profile::Avp,
            // Keep RTP/SAVP if the running SRTP stream was set up with it.
            SrtpPolicy::Optional if self.srtp_active.is_some() => self.profile,
            SrtpPolicy::Optional => Profile::Avp,
            SrtpPolicy::Mandatory => Profile::Savp,
        };
        let (crypto, keys) = match (policy, &self.keys) {
            (SrtpPolicy::Off, _) | (_, None) => (Vec::new(), None),
            (_, Some(keys)) => (
                sdes::offer_tags(&self.config.srtp_suites, self.srtp_active),
                Some(keys.clone()),
            ),
        };
        let audio = AudioOut {
            port: self.local.port(),
            formats: self.formats.clone(),
            direction,
            profile,
            crypto: keys
                .iter()
                .flat_map(|keys| {
                    crypto
                        .iter()
                        .map(|&(tag, suite)| sdes::crypto_value(tag, suite, keys.key(suite)))
                })
                .collect(),
            rtcp_mux: true,
        };
        let slots = self.slots.clone();
        let sdp = self.emit(&slots, Some(&audio));
        self.pending = Some(PendingOffer {
            formats: audio.formats,
            direction,
            audio_index: slots.iter().position(|s| *s == Slot::Audio).unwrap_or(0),
            mline_count: slots.len(),
            profile,
            crypto,
            keys,
        });
        sdp
    }

    /// The address and port we receive RTP on changed (a network change):
    /// the next offer or answer carries the new `c=` and port. The `o=` line
    /// keeps its address. Does not touch an outstanding offer.
    pub fn set_local_address(&mut self, addr: SocketAddr) {
        self.local = addr;
    }

    /// The direction we want, used from the next offer or answer on: set
    /// [`SdpDirection::SendOnly`] to hold (RFC 3264 §8.4) and
    /// [`SdpDirection::SendRecv`] to resume, then [`SdpSession::create_offer`].
    pub fn set_direction(&mut self, direction: SdpDirection) {
        self.wanted = direction;
    }

    /// The direction last set with [`SdpSession::set_direction`] (initially
    /// [`SdpDirection::SendRecv`]).
    pub fn direction(&self) -> SdpDirection {
        self.wanted
    }

    /// The result of the last completed exchange, if any (`None` before
    /// the first one and after the peer declined our audio).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Whether an offer of ours awaits its answer.
    pub fn has_pending_offer(&self) -> bool {
        self.pending.is_some()
    }

    /// Answers the peer's offer: accepts the first enabled `RTP/AVP` audio
    /// stream (or `RTP/SAVP`, unless SRTP is off) that has a codec we do
    /// and the crypto our [`SrtpPolicy`] needs, with the offerer's first
    /// such codec and its payload type, plus telephone-event if both sides
    /// do it; declines every other m-line with port 0. Our direction is
    /// what we want, limited by what the offer allows (sendonly is answered
    /// recvonly, and so on).
    ///
    /// SRTP: the answer keeps the offer's profile and, when SRTP is used,
    /// has one `a=crypto` line with the offer's tag, the chosen suite (the
    /// one in use if the offer still has it, else the first of
    /// [`MediaConfig::srtp_suites`] with a usable line) and our key for it.
    /// A plain `RTP/AVP` offer (or one whose `a=crypto` lines are all
    /// unusable) gets a plain answer unless the policy is mandatory.
    ///
    /// On error nothing changes and no answer exists: refuse the request
    /// with [`SdpError::status_code`], or use [`SdpSession::reject`] where
    /// an answer must be sent anyway.
    pub fn answer(&mut self, remote_offer: &[u8]) -> Result<(Bytes, Negotiated), SdpError> {
        if self.pending.is_some() {
            return Err(SdpError::OfferPending);
        }
        let offer = parse(remote_offer)?;
        let srtp = self.srtp_context()?;
        let chosen = choose_offered_audio(&offer, &self.config, &srtp)?;
        let srtp = match (&chosen.crypto, &self.keys) {
            (Some(line), Some(keys)) => Some((line.tag, keys.key(line.suite).to_vec())),
            _ => None,
        };

        let slots = offer_slots(&offer, Some(chosen.index));
        let direction = SdpDirection::from_flags(
            self.wanted.sends() && chosen.peer.receives(),
            self.wanted.receives() && chosen.peer.sends(),
        );
        let mut formats = vec![LocalFormat::SdpCodec {
            pt: chosen.payload_type,
            codec: chosen.codec,
        }];
        if let Some((pt, events)) = chosen.telephone_event {
            formats.push(LocalFormat::TelephoneEvent { pt, events });
        }
        let audio = AudioOut {
            port: self.local.port(),
            formats,
            direction,
            profile: chosen.profile,
            crypto: match (&chosen.crypto, &srtp) {
                (Some(line), Some((_, key))) => vec![sdes::crypto_value(line.tag, line.suite, key)],
                _ => Vec::new(),
            },
            rtcp_mux: chosen.rtcp_mux,
        };
        let sdp = self.emit(&slots, Some(&audio));

        let negotiated = Negotiated {
            remote: chosen.remote,
            rtcp: chosen.rtcp,
            codec: chosen.codec,
            payload_type: chosen.payload_type,
            telephone_event_pt: chosen.telephone_event.map(|(pt, _)| pt),
            direction,
            ptime_ms: chosen.ptime.unwrap_or(self.config.ptime_ms),
            srtp: chosen
                .crypto
                .as_ref()
                .zip(srtp)
                .map(|(line, (_, local))| SdesKeys {
                    suite: line.suite,
                    local,
                    remote: line.key.clone(),
                }),
        };
        self.slots = slots;
        self.formats = audio.formats;
        self.held_by_peer = !chosen.peer.receives();
        self.srtp_active = chosen.crypto.as_ref().map(|line| (line.suite, line.tag));
        self.profile = chosen.profile;
        self.negotiated = Some(negotiated.clone());
        Ok((sdp, negotiated))
    }

    /// Whether the peer's offer in a new INVITE can be answered, without
    /// answering it: checked before the call rings, so an unusable offer
    /// (malformed, out-of-range port, no audio stream, no codec in common,
    /// an address we cannot send to) is refused at once with 488 and
    /// [`SdpError::warning`]. An empty body (no offer) fails as malformed.
    pub fn check_offer(&self, remote_offer: &[u8]) -> Result<(), SdpError> {
        let offer = parse(remote_offer)?;
        choose_offered_audio(&offer, &self.config, &self.srtp_context()?).map(|_| ())
    }

    /// Where the peer's offer wants RTP sent (the audio stream
    /// [`answer`](Self::answer) would pick), without answering it: lets
    /// the answerer open its media in the offer's address family first.
    /// `None` when the offer is unusable or puts the stream on hold with
    /// no address.
    pub fn offered_address(&self, remote_offer: &[u8]) -> Option<SocketAddr> {
        let offer = parse(remote_offer).ok()?;
        choose_offered_audio(&offer, &self.config, &self.srtp_context().ok()?)
            .ok()?
            .remote
    }

    /// Writes an answer that declines every m-line of the peer's offer
    /// (port 0, formats copied): for an offer that must be answered but
    /// cannot be used, e.g. one in a 2xx whose answer goes into the ACK
    /// before a BYE. Clears the negotiated result. Later offers keep the
    /// offer's m-lines and re-enable audio in its first audio slot.
    pub fn reject(&mut self, remote_offer: &[u8]) -> Result<Bytes, SdpError> {
        if self.pending.is_some() {
            return Err(SdpError::OfferPending);
        }
        let offer = parse(remote_offer)?;
        let declined = offer_slots(&offer, None);
        let sdp = self.emit(&declined, None);
        let audio_index = offer
            .medias
            .iter()
            .position(|m| m.media.eq_ignore_ascii_case("audio"));
        self.slots = match audio_index {
            Some(index) => offer_slots(&offer, Some(index)),
            None => declined,
        };
        self.negotiated = None;
        Ok(sdp)
    }

    /// Reads the peer's answer to our outstanding offer. The offer is
    /// settled by this call whatever the outcome. On
    /// [`SdpError::AudioRejected`] the negotiated result is cleared (the
    /// stream is off); on other errors it stays as it was.
    pub fn handle_answer(&mut self, remote_answer: &[u8]) -> Result<Negotiated, SdpError> {
        let pending = self.pending.take().ok_or(SdpError::NoOfferPending)?;
        let answer = parse(remote_answer)?;
        if answer.medias.len() != pending.mline_count {
            return Err(SdpError::MediaCountMismatch {
                offered: pending.mline_count,
                answered: answer.medias.len(),
            });
        }
        // An answer keeps the offer's profile (RFC 3264 §6.1); we also take
        // the other one of the two when we offered crypto.
        let media = answer
            .medias
            .get(pending.audio_index)
            .filter(|m| match Profile::of(m) {
                Some(profile) => profile == pending.profile || !pending.crypto.is_empty(),
                None => false,
            })
            .ok_or(SdpError::NoAudio)?;
        if media.port == 0 {
            self.negotiated = None;
            return Err(SdpError::AudioRejected);
        }

        let offered_codec = |codec: SdpCodec| {
            pending
                .formats
                .iter()
                .any(|f| matches!(f, LocalFormat::SdpCodec { codec: c, .. } if *c == codec))
        };
        let offered_events = pending
            .formats
            .iter()
            .any(|f| matches!(f, LocalFormat::TelephoneEvent { .. }));
        let mut codec = None;
        let mut telephone_event = None;
        for (pt, format) in remote_formats(media) {
            match format {
                RemoteFormat::SdpCodec(c) if codec.is_none() && offered_codec(c) => {
                    codec = Some((c, pt));
                }
                RemoteFormat::TelephoneEvent if telephone_event.is_none() && offered_events => {
                    telephone_event = Some(pt);
                }
                _ => {}
            }
        }
        let (codec, payload_type) = codec.ok_or(SdpError::NoCommonCodec)?;
        let remote = remote_address(&answer, media)?;
        let peer = peer_direction(&answer, media, remote);
        let srtp = answered_crypto(&pending, media)?;

        let negotiated = Negotiated {
            remote,
            rtcp: remote_rtcp(media, remote),
            codec,
            payload_type,
            telephone_event_pt: telephone_event,
            direction: SdpDirection::from_flags(
                pending.direction.sends() && peer.receives(),
                pending.direction.receives() && peer.sends(),
            ),
            ptime_ms: ptime(&answer, media).unwrap_or(self.config.ptime_ms),
            srtp: srtp.as_ref().map(|(_, keys)| keys.clone()),
        };
        self.srtp_active = srtp.map(|(tag, keys)| (keys.suite, tag));
        self.profile = pending.profile;
        self.negotiated = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// Forgets the outstanding offer: the request that carried it failed
    /// (a non-2xx final response such as 488 or 491, a timeout) or was never
    /// sent. The session stays as it was (RFC 3261 §14.1); the version does
    /// not go back, so the next offer is still newer than the forgotten one.
    pub fn cancel_offer(&mut self) {
        self.pending = None;
    }

    /// Renders the SDP, bumping the version if it differs from the last one
    /// we wrote, and remembers it.
    fn emit(&mut self, slots: &[Slot], audio: Option<&AudioOut>) -> Bytes {
        let mut sdp = self.render(slots, audio);
        if let Some(SentSdp(last)) = &self.last_sent {
            if *last != sdp {
                self.version = self.version.wrapping_add(1);
                sdp = self.render(slots, audio);
            }
        }
        self.last_sent = Some(SentSdp(sdp.clone()));
        sdp
    }

    fn render(&self, slots: &[Slot], audio: Option<&AudioOut>) -> Bytes {
        use sdp_types::{AddrType, Connection, Media, NetType, Origin, Session, Time};

        let origin = Origin {
            username: None,
            sess_id: self.session_id.to_string(),
            sess_version: self.version,
            nettype: NetType::In,
            addrtype: AddrType::from(self.origin_ip),
            unicast_address: self.origin_ip.to_string(),
        };
        let mut session = Session::new(origin, "-");
        session.connection = Some(Connection::from_ip_addr(self.local.ip()));
        session.times.push(Time::new(0, 0));
        for slot in slots {
            let media = match (slot, audio) {
                (Slot::Audio, Some(audio)) => self.audio_media(audio),
                (Slot::Audio, None) => {
                    // The stream off (no caller passes this today): port 0.
                    let fmt = pt_list(&self.formats);
                    Media::new(
                        sdp_types::MediaType::Audio,
                        0,
                        sdp_types::TransportProto::RtpAvp,
                        fmt,
                    )
                }
                (Slot::Declined { media, proto, fmt }, _) => Media {
                    media: media.clone(),
                    port: 0,
                    num_ports: None,
                    proto: proto.clone(),
                    fmt: fmt.clone(),
                    media_title: None,
                    connections: Vec::new(),
                    bandwidths: Vec::new(),
                    key: None,
                    attributes: Vec::new(),
                },
            };
            session.medias.push(media);
        }
        let mut out = Vec::with_capacity(512);
        // Writing into a Vec<u8> cannot fail.
        let _ = session.write(&mut out);
        Bytes::from(out)
    }

    fn audio_media(&self, audio: &AudioOut) -> sdp_types::Media {
        use sdp_types::{Attribute, Media, MediaType, RtpMap, TransportProto};

        let proto = match audio.profile {
            Profile::Avp => TransportProto::RtpAvp,
            Profile::Savp => TransportProto::RtpSavp,
        };
        let mut media = Media::new(MediaType::Audio, audio.port, proto, pt_list(&audio.formats));
        for format in &audio.formats {
            match *format {
                LocalFormat::SdpCodec { pt, codec } => {
                    media.add_attribute(RtpMap::new(pt, codec.encoding_name(), CLOCK_RATE));
                }
                LocalFormat::TelephoneEvent { pt, events } => {
                    media.add_attribute(RtpMap::new(pt, "telephone-event", CLOCK_RATE));
                    media.add_attribute(Attribute::with_value(
                        "fmtp",
                        format!("{pt} {}", events.to_fmtp()),
                    ));
                }
            }
        }
        media.add_attribute(Attribute::with_value("ptime", self.config.ptime_ms));
        media.add_attribute(Attribute::new(audio.direction.as_str()));
        // We take RTCP on the RTP port (RFC 3605), muxed or not.
        media.add_attribute(Attribute::with_value("rtcp", audio.port));
        if audio.rtcp_mux {
            media.add_attribute(Attribute::new("rtcp-mux"));
        }
        for value in &audio.crypto {
            media.add_attribute(Attribute::with_value("crypto", value));
        }
        media
    }
}

fn normalise(mut config: MediaConfig) -> MediaConfig {
    let mut codecs = Vec::with_capacity(2);
    for codec in config.codecs {
        if !codecs.contains(&codec) {
            codecs.push(codec);
        }
    }
    if codecs.is_empty() {
        codecs = MediaConfig::default().codecs;
    }
    config.codecs = codecs;
    config.telephone_event_pt = config.telephone_event_pt.map(|pt| {
        if (96..=127).contains(&pt) {
            pt
        } else {
            DEFAULT_TELEPHONE_EVENT_PT
        }
    });
    if config.ptime_ms == 0 {
        config.ptime_ms = DEFAULT_PTIME_MS;
    }
    let mut suites = Vec::with_capacity(SdesSuite::ALL.len());
    for suite in config.srtp_suites {
        if !suites.contains(&suite) {
            suites.push(suite);
        }
    }
    if suites.is_empty() {
        suites = SdesSuite::ALL.to_vec();
    }
    config.srtp_suites = suites;
    config
}

fn offer_formats(config: &MediaConfig) -> Vec<LocalFormat> {
    let mut formats: Vec<LocalFormat> = config
        .codecs
        .iter()
        .map(|&codec| LocalFormat::SdpCodec {
            pt: codec.static_payload_type(),
            codec,
        })
        .collect();
    if let Some(pt) = config.telephone_event_pt {
        formats.push(LocalFormat::TelephoneEvent {
            pt,
            events: EventSet::SUPPORTED,
        });
    }
    formats
}

fn pt_list(formats: &[LocalFormat]) -> String {
    formats
        .iter()
        .map(|f| f.pt().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse(body: &[u8]) -> Result<sdp_types::Session, SdpError> {
    sdp_types::Session::parse(body).map_err(|e| SdpError::Parse(ParseError(e)))
}

/// The m-line layout of a peer's offer: the stream at `audio` becomes our
/// audio slot, every other one is declined with its own format list.
fn offer_slots(offer: &sdp_types::Session, audio: Option<usize>) -> Vec<Slot> {
    offer
        .medias
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if Some(i) == audio {
                Slot::Audio
            } else {
                Slot::Declined {
                    media: m.media.clone(),
                    proto: m.proto.clone(),
                    fmt: m.fmt.clone(),
                }
            }
        })
        .collect()
}

/// A payload format of the peer's that we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemoteFormat {
    SdpCodec(SdpCodec),
    TelephoneEvent,
}

/// The formats of an RTP m-line that we understand, in m-line order, with
/// their payload types. A PT means what its first `a=rtpmap` says, else what
/// RFC 3551's static table says; only 8 kHz mono formats qualify. Linear in
/// the size of the m-line, whatever the input.
fn remote_formats(media: &sdp_types::Media) -> Vec<(u8, RemoteFormat)> {
    // At most one entry per PT 0..=127.
    let mut rtpmaps: Vec<(u8, Option<RemoteFormat>)> = Vec::new();
    let parsed = media
        .attributes
        .iter()
        .filter(|a| a.attribute.trim().eq_ignore_ascii_case("rtpmap"))
        .filter_map(|a| a.value.as_deref())
        .filter_map(|v| v.trim().parse::<sdp_types::RtpMap>().ok());
    for rtpmap in parsed {
        if !rtpmaps.iter().any(|(pt, _)| *pt == rtpmap.payload_type) {
            rtpmaps.push((rtpmap.payload_type, rtpmap_format(&rtpmap)));
        }
    }
    media
        .fmt
        .split_ascii_whitespace()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(|pt| {
            let format = match rtpmaps.iter().find(|(p, _)| *p == pt) {
                Some((_, format)) => *format,
                None => SdpCodec::from_static_payload_type(pt).map(RemoteFormat::SdpCodec),
            };
            format.map(|f| (pt, f))
        })
        .collect()
}

fn rtpmap_format(rtpmap: &sdp_types::RtpMap) -> Option<RemoteFormat> {
    let mono = rtpmap
        .encoding_params
        .as_deref()
        .is_none_or(|channels| channels.trim() == "1");
    if rtpmap.clock_rate != CLOCK_RATE || !mono {
        return None;
    }
    let name = rtpmap.encoding_name.trim();
    [SdpCodec::Pcmu, SdpCodec::Pcma]
        .into_iter()
        .find(|c| name.eq_ignore_ascii_case(c.encoding_name()))
        .map(RemoteFormat::SdpCodec)
        .or_else(|| {
            name.eq_ignore_ascii_case("telephone-event")
                .then_some(RemoteFormat::TelephoneEvent)
        })
}

/// The event list of `a=fmtp:<pt> <events>` in `media`, if there is one.
fn fmtp(media: &sdp_types::Media, pt: u8) -> Option<&str> {
    media
        .attributes
        .iter()
        .filter(|a| a.attribute.trim().eq_ignore_ascii_case("fmtp"))
        .filter_map(|a| a.value.as_deref())
        .find_map(|v| {
            let (fmt, params) = v.trim().split_once(char::is_whitespace)?;
            (fmt.parse::<u8>().ok() == Some(pt)).then_some(params.trim())
        })
}

/// The peer's audio stream we picked from its offer.
#[derive(Debug)]
struct ChosenAudio {
    index: usize,
    profile: Profile,
    /// The peer's `a=crypto` line we accept, `None` for plain RTP.
    crypto: Option<CryptoLine>,
    codec: SdpCodec,
    payload_type: u8,
    telephone_event: Option<(u8, EventSet)>,
    remote: Option<SocketAddr>,
    /// Where to send RTCP ([`Negotiated::rtcp`]).
    rtcp: Option<SocketAddr>,
    /// The offer has `a=rtcp-mux`.
    rtcp_mux: bool,
    /// The peer's direction, with receiving removed for `c=0.0.0.0`.
    peer: SdpDirection,
    ptime: Option<u32>,
}

/// How to pick the crypto of an offer: the policy in force, our suites in
/// order, our keys (`None` exactly when the policy is off) and the suite in
/// use.
#[derive(Debug)]
struct SrtpContext<'a> {
    policy: SrtpPolicy,
    suites: &'a [SdesSuite],
    keys: Option<&'a KeyStore>,
    active: Option<SdesSuite>,
}

impl SrtpContext<'_> {
    /// The `a=crypto` line of an offered audio stream to accept: the suite
    /// in use if the offer still has it, else the first of our suites with
    /// a usable line. `None` for plain RTP; an error when SRTP is needed
    /// (RTP/SAVP or our mandatory policy) and no line is usable.
    fn select(
        &self,
        media: &sdp_types::Media,
        profile: Profile,
    ) -> Result<Option<CryptoLine>, SdpError> {
        let Some(keys) = self.keys else {
            return Ok(None);
        };
        let lines = sdes::crypto_lines(media);
        // RFC 4568 §7.1.2: the answer's key must differ from the offer's;
        // a peer that offers our own key back gets no answer with it.
        let usable = |suite: SdesSuite| {
            lines
                .usable
                .iter()
                .find(|l| l.suite == suite && l.key.as_slice() != keys.key(suite))
        };
        let chosen = self
            .active
            .filter(|suite| self.suites.contains(suite))
            .and_then(usable)
            .or_else(|| self.suites.iter().find_map(|&suite| usable(suite)));
        match chosen {
            Some(line) => Ok(Some(line.clone())),
            None if profile == Profile::Savp || self.policy == SrtpPolicy::Mandatory => {
                Err(if lines.present == 0 {
                    SdpError::MissingCrypto
                } else {
                    SdpError::UnusableCrypto
                })
            }
            None => Ok(None),
        }
    }
}

/// The SRTP result of the peer's answer to our offer: the `a=crypto` line
/// whose tag and suite are one we offered, with its tag, or `None` for
/// plain RTP. RFC 4568 §5.1.3: a crypto line that matches nothing we
/// offered fails the negotiation.
fn answered_crypto(
    pending: &PendingOffer,
    media: &sdp_types::Media,
) -> Result<Option<(u32, SdesKeys)>, SdpError> {
    let Some(keys) = &pending.keys else {
        // RTP/SAVP without crypto (mandatory without keys) cannot work.
        return match pending.profile {
            Profile::Savp => Err(SdpError::NoKeyMaterial),
            Profile::Avp => Ok(None),
        };
    };
    let lines = sdes::crypto_lines(media);
    let matched = lines.usable.iter().find(|line| {
        pending.crypto.contains(&(line.tag, line.suite))
            && line.key.as_slice() != keys.key(line.suite)
    });
    match matched {
        Some(line) => Ok(Some((
            line.tag,
            SdesKeys {
                suite: line.suite,
                local: keys.key(line.suite).to_vec(),
                remote: line.key.clone(),
            },
        ))),
        None if lines.present > 0 => Err(SdpError::UnusableCrypto),
        None if pending.profile == Profile::Savp || Profile::of(media) == Some(Profile::Savp) => {
            Err(SdpError::MissingCrypto)
        }
        None => Ok(None),
    }
}

fn choose_offered_audio(
    offer: &sdp_types::Session,
    config: &MediaConfig,
    srtp: &SrtpContext<'_>,
) -> Result<ChosenAudio, SdpError> {
    let mut saw_audio = false;
    let mut crypto_error = None;
    for (index, media) in offer.medias.iter().enumerate() {
        if media.port == 0 {
            continue;
        }
        let Some(profile) = Profile::of(media) else {
            continue;
        };
        // SRTP off: an RTP/SAVP stream is one we do not speak.
        if profile == Profile::Savp && srtp.policy == SrtpPolicy::Off {
            continue;
        }
        saw_audio = true;
        let mut codec = None;
        let mut telephone_event = None;
        // Only the first 8 kHz telephone-event counts.
        let mut seen_events = config.telephone_event_pt.is_none();
        for (pt, format) in remote_formats(media) {
            match format {
                RemoteFormat::SdpCodec(c) if codec.is_none() && config.codecs.contains(&c) => {
                    codec = Some((c, pt));
                }
                RemoteFormat::TelephoneEvent if !seen_events => {
                    seen_events = true;
                    let events =
                        fmtp(media, pt).map_or(EventSet::DEFAULT, EventSet::parse_supported);
                    if !events.is_empty() {
                        telephone_event = Some((pt, events));
                    }
                }
                _ => {}
            }
        }
        let Some((codec, payload_type)) = codec else {
            continue;
        };
        let crypto = match srtp.select(media, profile) {
            Ok(crypto) => crypto,
            Err(e) => {
                crypto_error.get_or_insert(e);
                continue;
            }
        };
        let remote = remote_address(offer, media)?;
        return Ok(ChosenAudio {
            index,
            profile,
            crypto,
            codec,
            payload_type,
            telephone_event,
            remote,
            rtcp: remote_rtcp(media, remote),
            rtcp_mux: has_attribute(media, "rtcp-mux"),
            peer: peer_direction(offer, media, remote),
            ptime: ptime(offer, media),
        });
    }
    Err(match crypto_error {
        Some(e) => e,
        None if saw_audio => SdpError::NoCommonCodec,
        None => SdpError::NoAudio,
    })
}

/// Where to send RTP for `media`: its first `c=`, else the session's;
/// `None` for the hold form `0.0.0.0` / `::`.
fn remote_address(
    session: &sdp_types::Session,
    media: &sdp_types::Media,
) -> Result<Option<SocketAddr>, SdpError> {
    use sdp_types::{AddrType, NetType};

    let connection = media
        .connections
        .first()
        .or(session.connection.as_ref())
        .ok_or(SdpError::MissingConnection)?;
    if connection.nettype != NetType::In {
        return Err(SdpError::UnsupportedAddress);
    }
    let address = connection
        .try_address()
        .map_err(|_| SdpError::UnsupportedAddress)?;
    let ip = address.ip;
    let family_ok = matches!(
        (&connection.addrtype, ip),
        (AddrType::Ip4, IpAddr::V4(_)) | (AddrType::Ip6, IpAddr::V6(_))
    );
    if !family_ok || ip.is_multicast() {
        return Err(SdpError::UnsupportedAddress);
    }
    Ok((!ip.is_unspecified()).then_some(SocketAddr::new(ip, media.port)))
}

/// Whether `media` has the attribute `name` (a flag such as `rtcp-mux`).
fn has_attribute(media: &sdp_types::Media, name: &str) -> bool {
    media
        .attributes
        .iter()
        .any(|a| a.attribute.trim().eq_ignore_ascii_case(name))
}

/// Where to send RTCP for `media`, whose RTP goes to `remote`: `remote`
/// itself with `a=rtcp-mux` (RFC 5761: an offer with it gets it back in our
/// answer, and an answer has it only if our offer did), the `a=rtcp` port
/// and address (RFC 3605), else the next port up (RFC 3550 §11). An
/// `a=rtcp` that cannot be used (port 0 or out of range, an address of
/// another family, multicast, a host name) is ignored; its unspecified
/// address (`0.0.0.0`, as JSEP writes it) means the RTP address.
fn remote_rtcp(media: &sdp_types::Media, remote: Option<SocketAddr>) -> Option<SocketAddr> {
    let remote = remote?;
    if has_attribute(media, "rtcp-mux") {
        return Some(remote);
    }
    let signalled = media
        .attributes
        .iter()
        .filter(|a| a.attribute.trim().eq_ignore_ascii_case("rtcp"))
        .find_map(|a| rtcp_attribute(a.value.as_deref()?, remote));
    Some(
        signalled.unwrap_or_else(|| match remote.port().checked_add(1) {
            Some(port) => SocketAddr::new(remote.ip(), port),
            None => remote,
        }),
    )
}

/// An `a=rtcp` value, `<port> [IN IP4|IP6 <address>]` (RFC 3605 §2.1).
fn rtcp_attribute(value: &str, remote: SocketAddr) -> Option<SocketAddr> {
    let mut words = value.split_ascii_whitespace();
    let port = words.next()?.parse::<u16>().ok().filter(|p| *p != 0)?;
    let ip = match (words.next(), words.next(), words.next()) {
        (None, _, _) => remote.ip(),
        (Some(nettype), Some(addrtype), Some(address)) if nettype.eq_ignore_ascii_case("IN") => {
            let ip = address.parse::<IpAddr>().ok()?;
            let family_ok = match ip {
                IpAddr::V4(_) => addrtype.eq_ignore_ascii_case("IP4") && remote.is_ipv4(),
                IpAddr::V6(_) => addrtype.eq_ignore_ascii_case("IP6") && remote.is_ipv6(),
            };
            if !family_ok || ip.is_multicast() {
                return None;
            }
            if ip.is_unspecified() {
                remote.ip()
            } else {
                ip
            }
        }
        _ => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

/// The peer's direction for `media` (media level, else session level, else
/// sendrecv), without receiving when it gave no address to send to.
fn peer_direction(
    session: &sdp_types::Session,
    media: &sdp_types::Media,
    remote: Option<SocketAddr>,
) -> SdpDirection {
    let named = |attrs: &[sdp_types::Attribute]| {
        attrs
            .iter()
            .find_map(|a| SdpDirection::from_attribute(&a.attribute))
    };
    let direction = named(&media.attributes)
        .or_else(|| named(&session.attributes))
        .unwrap_or_default();
    SdpDirection::from_flags(direction.sends(), direction.receives() && remote.is_some())
}

/// The peer's `a=ptime` (media level, else session level) if it is sane.
fn ptime(session: &sdp_types::Session, media: &sdp_types::Media) -> Option<u32> {
    let find = |attrs: &[sdp_types::Attribute]| {
        attrs
            .iter()
            .filter(|a| a.attribute.trim().eq_ignore_ascii_case("ptime"))
            .find_map(|a| a.value.as_deref()?.trim().parse::<u32>().ok())
    };
    find(&media.attributes)
        .or_else(|| find(&session.attributes))
        .filter(|ms| (1..=MAX_PTIME_MS).contains(ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn session(id: u64, local: &str) -> SdpSession {
        SdpSession::new(id, addr(local), MediaConfig::default())
    }

    fn with_config(id: u64, local: &str, config: MediaConfig) -> SdpSession {
        SdpSession::new(id, addr(local), config)
    }

    fn text(sdp: &[u8]) -> &str {
        std::str::from_utf8(sdp).unwrap()
    }

    fn version(sdp: &[u8]) -> u64 {
        sdp_types::Session::parse(sdp).unwrap().origin.sess_version
    }

    fn has_line(sdp: &[u8], line: &str) -> bool {
        text(sdp).split("\r\n").any(|l| l == line)
    }

    /// One full exchange: `a` offers, `b` answers, `a` reads the answer.
    fn exchange(a: &mut SdpSession, b: &mut SdpSession) -> (Negotiated, Negotiated, Bytes, Bytes) {
        let offer = a.create_offer();
        let (answer, nb) = b.answer(&offer).unwrap();
        let na = a.handle_answer(&answer).unwrap();
        (na, nb, offer, answer)
    }

    #[test]
    fn pcmu_offer_answer_between_two_sessions() {
        let mut a = session(1000, "192.0.2.10:40000");
        let mut b = session(2000, "198.51.100.20:50000");
        let (na, nb, offer, answer) = exchange(&mut a, &mut b);
        assert_eq!(
            text(&offer),
            "v=0\r\n\
             o=- 1000 1 IN IP4 192.0.2.10\r\n\
             s=-\r\n\
             c=IN IP4 192.0.2.10\r\n\
             t=0 0\r\n\
             m=audio 40000 RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n\
             a=rtcp:40000\r\n\
             a=rtcp-mux\r\n"
        );
        assert_eq!(
            text(&answer),
            "v=0\r\n\
             o=- 2000 1 IN IP4 198.51.100.20\r\n\
             s=-\r\n\
             c=IN IP4 198.51.100.20\r\n\
             t=0 0\r\n\
             m=audio 50000 RTP/AVP 0 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\n\
             a=ptime:20\r\n\
             a=sendrecv\r\n\
             a=rtcp:50000\r\n\
             a=rtcp-mux\r\n"
        );
        let expected = Negotiated {
            remote: Some(addr("198.51.100.20:50000")),
            rtcp: Some(addr("198.51.100.20:50000")),
            codec: SdpCodec::Pcmu,
            payload_type: 0,
            telephone_event_pt: Some(101),
            direction: SdpDirection::SendRecv,
            ptime_ms: 20,
            srtp: None,
        };
        assert_eq!(na, expected);
        assert_eq!(
            nb,
            Negotiated {
                remote: Some(addr("192.0.2.10:40000")),
                rtcp: Some(addr("192.0.2.10:40000")),
                ..expected
            }
        );
        assert_eq!(a.negotiated(), Some(&na));
        assert_eq!(b.negotiated(), Some(&nb));
        assert!(!a.has_pending_offer());
    }

    #[test]
    fn pcma_follows_the_offerers_order() {
        let pcma_first = MediaConfig {
            codecs: vec![SdpCodec::Pcma, SdpCodec::Pcmu],
            ..MediaConfig::default()
        };
        let mut a = with_config(1, "192.0.2.10:40000", pcma_first);
        let mut b = session(2, "198.51.100.20:50000");
        let (na, nb, offer, answer) = exchange(&mut a, &mut b);
        assert!(has_line(&offer, "m=audio 40000 RTP/AVP 8 0 101"));
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 8 101"));
        assert_eq!((na.codec, na.payload_type), (SdpCodec::Pcma, 8));
        assert_eq!((nb.codec, nb.payload_type), (SdpCodec::Pcma, 8));

        // The answerer only does PCMA: it skips the offer's PCMU.
        let mut a = session(1, "192.0.2.10:40000");
        let only_pcma = MediaConfig {
            codecs: vec![SdpCodec::Pcma],
            ..MediaConfig::default()
        };
        let mut b = with_config(2, "198.51.100.20:50000", only_pcma);
        let (na, nb, _, answer) = exchange(&mut a, &mut b);
        assert!(has_line(&answer, "a=rtpmap:8 PCMA/8000"));
        assert!(!text(&answer).contains("PCMU"));
        assert_eq!(na.codec, SdpCodec::Pcma);
        assert_eq!(nb.codec, SdpCodec::Pcma);
    }

    #[test]
    fn telephone_event_uses_the_offerers_payload_type() {
        let te96 = MediaConfig {
            telephone_event_pt: Some(96),
            ..MediaConfig::default()
        };
        let mut a = with_config(1, "192.0.2.10:40000", te96);
        let mut b = session(2, "198.51.100.20:50000");
        let (na, nb, offer, answer) = exchange(&mut a, &mut b);
        assert!(has_line(&offer, "a=fmtp:96 0-16"));
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 0 96"));
        assert!(has_line(&answer, "a=rtpmap:96 telephone-event/8000"));
        assert!(has_line(&answer, "a=fmtp:96 0-16"));
        assert_eq!(na.telephone_event_pt, Some(96));
        assert_eq!(nb.telephone_event_pt, Some(96));

        // The answerer does not do RFC 4733: it leaves it out.
        let no_te = MediaConfig {
            telephone_event_pt: None,
            ..MediaConfig::default()
        };
        let mut a = session(1, "192.0.2.10:40000");
        let mut b = with_config(2, "198.51.100.20:50000", no_te.clone());
        let (na, nb, _, answer) = exchange(&mut a, &mut b);
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 0"));
        assert!(!text(&answer).contains("telephone-event"));
        assert_eq!(na.telephone_event_pt, None);
        assert_eq!(nb.telephone_event_pt, None);

        // The offerer does not: nothing offered, nothing negotiated.
        let mut a = with_config(1, "192.0.2.10:40000", no_te);
        let mut b = session(2, "198.51.100.20:50000");
        let (na, nb, offer, _) = exchange(&mut a, &mut b);
        assert!(has_line(&offer, "m=audio 40000 RTP/AVP 0 8"));
        assert_eq!((na.telephone_event_pt, nb.telephone_event_pt), (None, None));

        // An out-of-range configured PT falls back to 101.
        let bad = MediaConfig {
            telephone_event_pt: Some(8),
            ..MediaConfig::default()
        };
        let mut a = with_config(1, "192.0.2.10:40000", bad);
        assert!(has_line(&a.create_offer(), "m=audio 40000 RTP/AVP 0 8 101"));
    }

    #[test]
    fn ipv6_connection_lines() {
        let mut a = session(7, "[2001:db8::1]:4000");
        let mut b = session(8, "[2001:db8::2]:5000");
        let (na, nb, offer, answer) = exchange(&mut a, &mut b);
        assert!(has_line(&offer, "o=- 7 1 IN IP6 2001:db8::1"));
        assert!(has_line(&offer, "c=IN IP6 2001:db8::1"));
        assert!(has_line(&answer, "c=IN IP6 2001:db8::2"));
        assert_eq!(na.remote, Some(addr("[2001:db8::2]:5000")));
        assert_eq!(nb.remote, Some(addr("[2001:db8::1]:4000")));
    }

    #[test]
    fn media_level_connection_overrides_session_level() {
        let offer = b"v=0\r\n\
            o=- 1 1 IN IP4 192.0.2.1\r\n\
            s=-\r\n\
            c=IN IP4 192.0.2.1\r\n\
            t=0 0\r\n\
            m=audio 6000 RTP/AVP 0\r\n\
            c=IN IP6 2001:db8::7\r\n";
        let mut b = session(2, "[2001:db8::2]:5000");
        let (_, nb) = b.answer(offer).unwrap();
        assert_eq!(nb.remote, Some(addr("[2001:db8::7]:6000")));
    }

    #[test]
    fn hold_and_resume_sequences() {
        let mut a = session(1, "192.0.2.10:40000");
        let mut b = session(2, "198.51.100.20:50000");
        exchange(&mut a, &mut b);

        // A holds B: sendonly is answered recvonly.
        a.set_direction(SdpDirection::SendOnly);
        let (na, nb, offer, answer) = exchange(&mut a, &mut b);
        assert!(has_line(&offer, "a=sendonly"));
        assert!(has_line(&answer, "a=recvonly"));
        assert_eq!(na.direction, SdpDirection::SendOnly);
        assert_eq!(nb.direction, SdpDirection::RecvOnly);

        // B holds too while held: a recvonly stream is held with inactive
        // (RFC 3264 §8.4), answered inactive.
        b.set_direction(SdpDirection::SendOnly);
        let (nb, na, offer, answer) = exchange(&mut b, &mut a);
        assert!(has_line(&offer, "a=inactive"));
        assert!(has_line(&answer, "a=inactive"));
        assert_eq!(
            (na.direction, nb.direction),
            (SdpDirection::Inactive, SdpDirection::Inactive)
        );

        // A resumes: it wants sendrecv, but B holds it, so it offers
        // recvonly and B answers sendonly.
        a.set_direction(SdpDirection::SendRecv);
        let (na, nb, offer, answer) = exchange(&mut a, &mut b);
        assert!(has_line(&offer, "a=recvonly"));
        assert!(has_line(&answer, "a=sendonly"));
        assert_eq!(na.direction, SdpDirection::RecvOnly);
        assert_eq!(nb.direction, SdpDirection::SendOnly);

        // B resumes: back to sendrecv both ways.
        b.set_direction(SdpDirection::SendRecv);
        let (nb, na, offer, answer) = exchange(&mut b, &mut a);
        assert!(has_line(&offer, "a=sendrecv"));
        assert!(has_line(&answer, "a=sendrecv"));
        assert_eq!(
            (na.direction, nb.direction),
            (SdpDirection::SendRecv, SdpDirection::SendRecv)
        );

        // And A can hold again with plain sendonly.
        a.set_direction(SdpDirection::SendOnly);
        let (_, _, offer, _) = exchange(&mut a, &mut b);
        assert!(has_line(&offer, "a=sendonly"));

        // Inactive is answered inactive, whatever the answerer wants.
        a.set_direction(SdpDirection::Inactive);
        let (na, nb, offer, answer) = exchange(&mut a, &mut b);
        assert!(has_line(&offer, "a=inactive"));
        assert!(has_line(&answer, "a=inactive"));
        assert_eq!(
            (na.direction, nb.direction),
            (SdpDirection::Inactive, SdpDirection::Inactive)
        );
        assert_eq!(a.direction(), SdpDirection::Inactive);
    }

    #[test]
    fn a_recvonly_offer_is_answered_sendonly() {
        let offer = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 6000 RTP/AVP 0\r\na=recvonly\r\n";
        let mut b = session(2, "198.51.100.20:50000");
        let (answer, nb) = b.answer(offer).unwrap();
        assert!(has_line(&answer, "a=sendonly"));
        assert_eq!(nb.direction, SdpDirection::SendOnly);

        // A session-level direction counts when the media names none.
        let offer = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            a=sendonly\r\nm=audio 6000 RTP/AVP 0\r\n";
        let mut b = session(2, "198.51.100.20:50000");
        let (answer, nb) = b.answer(offer).unwrap();
        assert!(has_line(&answer, "a=recvonly"));
        assert_eq!(nb.direction, SdpDirection::RecvOnly);
    }

    #[test]
    fn old_style_hold_with_zero_address() {
        let mut b = session(2, "198.51.100.20:50000");
        // A Cisco-style re-INVITE: c=0.0.0.0 and no direction attribute.
        let offer = b"v=0\r\n\
            o=CiscoSystemsSIP-GW-UserAgent 4753 2 IN IP4 192.0.2.50\r\n\
            s=SIP Call\r\n\
            c=IN IP4 0.0.0.0\r\n\
            t=0 0\r\n\
            m=audio 19580 RTP/AVP 0 101\r\n\
            a=rtpmap:0 PCMU/8000\r\n\
            a=rtpmap:101 telephone-event/8000\r\n\
            a=fmtp:101 0-15\r\n";
        let (answer, nb) = b.answer(offer).unwrap();
        assert_eq!(nb.remote, None);
        assert_eq!(nb.direction, SdpDirection::RecvOnly);
        assert!(has_line(&answer, "a=recvonly"));
        assert!(has_line(&answer, "a=fmtp:101 0-15"));
        // While held that way, our own offers do not send either.
        assert!(has_line(&b.create_offer(), "a=recvonly"));
    }

    #[test]
    fn reoffer_with_new_address_moves_the_peer_and_bumps_the_version() {
        let mut a = session(1, "192.0.2.10:40000");
        let mut b = session(2, "198.51.100.20:50000");
        let (_, _, offer1, answer1) = exchange(&mut a, &mut b);
        assert_eq!(version(&offer1), 1);

        // A moves (Wi-Fi to cellular): new c= and port, version 2.
        a.set_local_address(addr("203.0.113.5:41000"));
        let (na, nb, offer2, answer2) = exchange(&mut a, &mut b);
        assert_eq!(version(&offer2), 2);
        assert!(has_line(&offer2, "c=IN IP4 203.0.113.5"));
        assert!(has_line(&offer2, "m=audio 41000 RTP/AVP 0 8 101"));
        assert!(
            has_line(&offer2, "o=- 1 2 IN IP4 192.0.2.10"),
            "o= keeps its address"
        );
        assert_eq!(nb.remote, Some(addr("203.0.113.5:41000")));
        assert_eq!(na.remote, Some(addr("198.51.100.20:50000")));
        // B's answer did not change: same bytes, same version.
        assert_eq!(answer2, answer1);

        // B moves to IPv6; A, which offered last time, now answers.
        b.set_local_address(addr("[2001:db8::20]:52000"));
        let (nb, na, offer3, answer3) = exchange(&mut b, &mut a);
        assert_eq!(version(&offer3), 2);
        assert!(has_line(&offer3, "c=IN IP6 2001:db8::20"));
        assert!(has_line(&offer3, "o=- 2 2 IN IP4 198.51.100.20"));
        assert_eq!(na.remote, Some(addr("[2001:db8::20]:52000")));
        assert_eq!(nb.remote, Some(addr("203.0.113.5:41000")));
        // A's answer lists only the chosen codec: it differs from A's last
        // SDP (its full offer), so its version goes up.
        assert_eq!(version(&answer3), 3);
    }

    #[test]
    fn unchanged_reoffer_keeps_the_version() {
        let mut a = session(1, "192.0.2.10:40000");
        let mut b = session(2, "198.51.100.20:50000");
        let (_, _, offer1, answer1) = exchange(&mut a, &mut b);
        let (_, _, offer2, answer2) = exchange(&mut a, &mut b);
        assert_eq!(offer2, offer1);
        assert_eq!(answer2, answer1);

        // B re-offers (a session refresh): it repeats its answer's formats,
        // so its SDP and version do not change either.
        let offer3 = b.create_offer();
        assert_eq!(offer3, answer1);
        let (answer3, _) = a.answer(&offer3).unwrap();
        b.handle_answer(&answer3).unwrap();
        let offer4 = b.create_offer();
        assert_eq!(version(&offer4), version(&answer1));
    }

    #[test]
    fn cancelled_offer_keeps_the_session_and_the_version_moves_on() {
        let mut a = session(1, "192.0.2.10:40000");
        let mut b = session(2, "198.51.100.20:50000");
        let (na, _, offer1, _) = exchange(&mut a, &mut b);

        a.set_direction(SdpDirection::SendOnly);
        let hold = a.create_offer();
        assert_eq!(version(&hold), 2);
        // Glare: B has an offer of its own out.
        let b_offer = b.create_offer();
        assert_eq!(b.answer(&hold), Err(SdpError::OfferPending));
        assert_eq!(SdpError::OfferPending.status_code(), 491);
        // A's re-INVITE got 491: the offer is forgotten, nothing changed.
        a.cancel_offer();
        assert!(!a.has_pending_offer());
        assert_eq!(a.negotiated(), Some(&na));
        assert_eq!(a.handle_answer(&offer1), Err(SdpError::NoOfferPending));
        // A answers B's offer instead; then offers again with sendrecv:
        // different from its last SDP, so a new version.
        let (answer, _) = a.answer(&b_offer).unwrap();
        b.handle_answer(&answer).unwrap();
        a.set_direction(SdpDirection::SendRecv);
        let again = a.create_offer();
        assert!(version(&again) > version(&hold));
    }

    const VIDEO_AND_AUDIO: &[u8] = b"v=0\r\n\
        o=- 3456 3456 IN IP4 192.0.2.30\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.30\r\n\
        t=0 0\r\n\
        m=video 9078 RTP/AVP 96 97\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:97 H264/90000\r\n\
        m=audio 7078 RTP/AVP 8 0 101\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n";

    #[test]
    fn video_is_declined_and_kept_in_later_offers() {
        let mut b = session(2, "198.51.100.20:50000");
        let (answer, nb) = b.answer(VIDEO_AND_AUDIO).unwrap();
        let parsed = sdp_types::Session::parse(&answer).unwrap();
        assert_eq!(parsed.medias.len(), 2);
        assert_eq!(parsed.medias[0].media, "video");
        assert_eq!(parsed.medias[0].port, 0);
        assert_eq!(parsed.medias[0].fmt, "96 97");
        assert!(has_line(&answer, "m=video 0 RTP/AVP 96 97"));
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 8 101"));
        assert_eq!(nb.remote, Some(addr("192.0.2.30:7078")));
        assert_eq!((nb.codec, nb.payload_type), (SdpCodec::Pcma, 8));

        // B's re-offer keeps the declined video m-line in first place, and a
        // peer's answer with two m-lines is understood.
        let offer = b.create_offer();
        let text = text(&offer);
        let video = text.find("m=video 0 RTP/AVP 96 97").unwrap();
        let audio = text.find("m=audio 50000 RTP/AVP 8 101").unwrap();
        assert!(video < audio);
        let mut c = session(3, "192.0.2.31:7000");
        let (answer, nc) = c.answer(&offer).unwrap();
        assert!(has_line(&answer, "m=video 0 RTP/AVP 96 97"));
        assert_eq!(nc.remote, Some(addr("198.51.100.20:50000")));
        let nb = b.handle_answer(&answer).unwrap();
        assert_eq!(nb.remote, Some(addr("192.0.2.31:7000")));

        // An answer with the wrong number of m-lines is an error.
        let _ = b.create_offer();
        let one_line =
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.31\r\ns=-\r\nc=IN IP4 192.0.2.31\r\nt=0 0\r\n\
            m=audio 7000 RTP/AVP 8\r\n";
        assert_eq!(
            b.handle_answer(one_line),
            Err(SdpError::MediaCountMismatch {
                offered: 2,
                answered: 1
            })
        );
    }

    #[test]
    fn no_common_codec_is_refused_or_rejected_with_port_zero() {
        let offer = b"v=0\r\n\
            o=- 1 1 IN IP4 192.0.2.1\r\n\
            s=-\r\n\
            c=IN IP4 192.0.2.1\r\n\
            t=0 0\r\n\
            m=audio 6000 RTP/AVP 9 18\r\n\
            a=rtpmap:9 G722/8000\r\n\
            a=rtpmap:18 G729/8000\r\n";
        let mut b = session(2, "198.51.100.20:50000");
        let err = b.answer(offer).unwrap_err();
        assert_eq!(err, SdpError::NoCommonCodec);
        assert_eq!(err.status_code(), 488);
        assert_eq!(b.negotiated(), None);

        let answer = b.reject(offer).unwrap();
        assert!(has_line(&answer, "m=audio 0 RTP/AVP 9 18"));
        assert_eq!(version(&answer), 1);
        assert_eq!(b.negotiated(), None);
        // A later offer re-enables audio in the same slot.
        assert!(has_line(&b.create_offer(), "m=audio 50000 RTP/AVP 0 8 101"));

        // A peer that declines our audio: AudioRejected clears the result.
        let mut a = session(1, "192.0.2.10:40000");
        let mut peer = session(2, "198.51.100.20:50000");
        exchange(&mut a, &mut peer);
        let _ = a.create_offer();
        let declined = b"v=0\r\no=- 2 2 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\n\
            t=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(a.handle_answer(declined), Err(SdpError::AudioRejected));
        assert_eq!(a.negotiated(), None);

        // A peer that answers with a codec we did not offer.
        let _ = a.create_offer();
        let g729 = b"v=0\r\no=- 2 3 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\n\
            t=0 0\r\nm=audio 50000 RTP/AVP 18\r\n";
        assert_eq!(a.handle_answer(g729), Err(SdpError::NoCommonCodec));
        assert!(!a.has_pending_offer());
    }

    // ---- SDPs as real user agents write them (addresses moved to the
    // documentation ranges) ----

    /// SIPp's built-in `uac` scenario.
    const SIPP_UAC: &[u8] = b"v=0\r\n\
        o=user1 53655765 2353687637 IN IP4 192.0.2.5\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.5\r\n\
        t=0 0\r\n\
        m=audio 6000 RTP/AVP 0\r\n\
        a=rtpmap:0 PCMU/8000\r\n";

    /// SIPp's built-in `uac_pcap` scenario (PCMA and DTMF from a pcap).
    const SIPP_UAC_PCAP: &[u8] = b"v=0\r\n\
        o=user1 53655765 2353687637 IN IP4 192.0.2.5\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.5\r\n\
        t=0 0\r\n\
        m=audio 6000 RTP/AVP 8 101\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-11,16\r\n";

    /// baresip with its default module set.
    const BARESIP: &[u8] = b"v=0\r\n\
        o=- 1282930203 2541924345 IN IP4 192.0.2.37\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.37\r\n\
        t=0 0\r\n\
        a=tool:baresip 3.10.1\r\n\
        m=audio 10450 RTP/AVP 96 9 0 8 101\r\n\
        b=AS:64\r\n\
        a=rtpmap:96 opus/48000/2\r\n\
        a=fmtp:96 stereo=1;sprop-stereo=1\r\n\
        a=rtpmap:9 G722/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n\
        a=label:1\r\n\
        a=rtcp-rsize\r\n\
        a=ssrc:1505293546 cname:fe3cd2b1-7ea4-4e37-8f51-96d4af2b5a1e\r\n";

    /// linphone with video enabled; its 8 kHz telephone-event is PT 100.
    const LINPHONE: &[u8] = b"v=0\r\n\
        o=alice 3062 2612 IN IP4 192.0.2.60\r\n\
        s=Talk\r\n\
        c=IN IP4 192.0.2.60\r\n\
        t=0 0\r\n\
        a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
        m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100\r\n\
        a=rtpmap:96 opus/48000/2\r\n\
        a=fmtp:96 useinbandfec=1\r\n\
        a=rtpmap:97 SILK/16000\r\n\
        a=rtpmap:98 speex/16000\r\n\
        a=fmtp:98 vbr=on\r\n\
        a=fmtp:18 annexb=yes\r\n\
        a=rtpmap:101 telephone-event/48000\r\n\
        a=rtpmap:99 telephone-event/16000\r\n\
        a=rtpmap:100 telephone-event/8000\r\n\
        a=rtcp-fb:* trr-int 1000\r\n\
        a=rtcp-fb:* ccm tmmbr\r\n\
        m=video 9078 RTP/AVP 102 103\r\n\
        a=rtpmap:102 VP8/90000\r\n\
        a=rtpmap:103 H264/90000\r\n\
        a=fmtp:103 profile-level-id=42801F\r\n\
        a=rtcp-fb:* trr-int 1000\r\n\
        a=rtcp-fb:102 nack pli\r\n";

    /// pjsua over IPv6: no session-level c=, a=rtcp, b=TIAS, ssrc.
    const PJSUA_IPV6: &[u8] = b"v=0\r\n\
        o=- 3832457153 3832457153 IN IP6 2001:db8::10\r\n\
        s=pjmedia\r\n\
        b=AS:84\r\n\
        t=0 0\r\n\
        a=X-nat:0\r\n\
        m=audio 4000 RTP/AVP 8 0 96\r\n\
        c=IN IP6 2001:db8::10\r\n\
        b=TIAS:64000\r\n\
        a=rtcp:4001 IN IP6 2001:db8::10\r\n\
        a=sendrecv\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:96 telephone-event/8000\r\n\
        a=fmtp:96 0-16\r\n\
        a=ssrc:1170911479 cname:0b9a6e2c3f2a4d5e\r\n";

    #[test]
    fn answers_real_world_offers() {
        let mut b = session(2, "198.51.100.20:50000");
        let (answer, n) = b.answer(SIPP_UAC).unwrap();
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 0"));
        assert_eq!(n.remote, Some(addr("192.0.2.5:6000")));
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event_pt),
            (SdpCodec::Pcmu, 0, None)
        );

        let mut b = session(2, "198.51.100.20:50000");
        let (answer, n) = b.answer(SIPP_UAC_PCAP).unwrap();
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 8 101"));
        assert!(has_line(&answer, "a=fmtp:101 0-11,16"));
        assert_eq!((n.codec, n.telephone_event_pt), (SdpCodec::Pcma, Some(101)));

        let mut b = session(2, "198.51.100.20:50000");
        let (answer, n) = b.answer(BARESIP).unwrap();
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 0 101"));
        assert!(has_line(&answer, "a=fmtp:101 0-15"));
        assert_eq!(n.remote, Some(addr("192.0.2.37:10450")));
        assert_eq!((n.codec, n.payload_type), (SdpCodec::Pcmu, 0));

        let mut b = session(2, "198.51.100.20:50000");
        let (answer, n) = b.answer(LINPHONE).unwrap();
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 0 100"));
        assert!(has_line(&answer, "m=video 0 RTP/AVP 102 103"));
        assert!(has_line(&answer, "a=fmtp:100 0-15"), "no fmtp means 0-15");
        assert_eq!(n.telephone_event_pt, Some(100));
        assert_eq!(n.remote, Some(addr("192.0.2.60:7078")));

        let mut b = session(2, "[2001:db8::20]:50000");
        let (answer, n) = b.answer(PJSUA_IPV6).unwrap();
        assert!(has_line(&answer, "m=audio 50000 RTP/AVP 8 96"));
        assert_eq!(n.remote, Some(addr("[2001:db8::10]:4000")));
        assert_eq!((n.codec, n.telephone_event_pt), (SdpCodec::Pcma, Some(96)));
    }

    #[test]
    fn reads_real_world_answers() {
        // Asterisk (chan_pjsip) answering our default offer.
        let asterisk = b"v=0\r\n\
            o=- 1234 1236 IN IP4 203.0.113.9\r\n\
            s=Asterisk\r\n\
            c=IN IP4 203.0.113.9\r\n\
            t=0 0\r\n\
            m=audio 14562 RTP/AVP 0 101\r\n\
            a=rtpmap:0 PCMU/8000\r\n\
            a=rtpmap:101 telephone-event/8000\r\n\
            a=fmtp:101 0-16\r\n\
            a=ptime:20\r\n\
            a=maxptime:150\r\n\
            a=sendrecv\r\n";
        let mut a = session(1, "192.0.2.10:40000");
        let _ = a.create_offer();
        let n = a.handle_answer(asterisk).unwrap();
        assert_eq!(n.remote, Some(addr("203.0.113.9:14562")));
        assert_eq!(
            (n.codec, n.telephone_event_pt, n.ptime_ms),
            (SdpCodec::Pcmu, Some(101), 20)
        );

        // FreeSWITCH picking PCMA at 30 ms, LF-only line endings.
        let freeswitch = b"v=0\n\
            o=FreeSWITCH 1718000000 1718000001 IN IP4 203.0.113.10\n\
            s=FreeSWITCH\n\
            c=IN IP4 203.0.113.10\n\
            t=0 0\n\
            m=audio 16384 RTP/AVP 8 101\n\
            a=rtpmap:8 PCMA/8000\n\
            a=rtpmap:101 telephone-event/8000\n\
            a=fmtp:101 0-16\n\
            a=ptime:30\n\
            a=sendrecv\n\
            a=rtcp:16385 IN IP4 203.0.113.10\n";
        let mut a = session(1, "192.0.2.10:40000");
        let _ = a.create_offer();
        let n = a.handle_answer(freeswitch).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.ptime_ms),
            (SdpCodec::Pcma, 8, 30)
        );

        // SIPp's uas answering a hold offer with recvonly.
        let sipp_uas = b"v=0\r\n\
            o=user1 53655765 2353687637 IN IP4 192.0.2.5\r\n\
            s=-\r\n\
            c=IN IP4 192.0.2.5\r\n\
            t=0 0\r\n\
            m=audio 6000 RTP/AVP 0\r\n\
            a=rtpmap:0 PCMU/8000\r\n\
            a=recvonly\r\n";
        let mut a = session(1, "192.0.2.10:40000");
        a.set_direction(SdpDirection::SendOnly);
        let _ = a.create_offer();
        let n = a.handle_answer(sipp_uas).unwrap();
        assert_eq!(
            (n.direction, n.telephone_event_pt),
            (SdpDirection::SendOnly, None)
        );
    }

    #[test]
    fn offers_we_cannot_use() {
        let mut b = session(2, "198.51.100.20:50000");
        // SDES-SRTP only.
        let srtp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 6000 RTP/SAVP 0 8\r\n\
            a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
        assert_eq!(b.answer(srtp), Err(SdpError::NoAudio));
        // WebRTC.
        let webrtc = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n";
        assert_eq!(b.answer(webrtc), Err(SdpError::NoAudio));
        // Only a disabled audio stream.
        let disabled = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 0 RTP/AVP 0\r\n";
        assert_eq!(b.answer(disabled), Err(SdpError::NoAudio));
        // No c= anywhere.
        let no_c = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(b.answer(no_c), Err(SdpError::MissingConnection));
        // A host name, a family mismatch, multicast.
        for c in [
            "c=IN IP4 media.example.com",
            "c=IN IP6 192.0.2.1",
            "c=IN IP4 224.2.1.1/127",
        ] {
            let sdp = format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n{c}\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
            );
            assert_eq!(
                b.answer(sdp.as_bytes()),
                Err(SdpError::UnsupportedAddress),
                "{c}"
            );
        }
        // Malformed.
        let err = b.answer(b"v=1\r\n").unwrap_err();
        assert!(matches!(err, SdpError::Parse(_)));
        assert_eq!(err.status_code(), 400);
        assert_eq!(
            b.answer(b""),
            Err(SdpError::Parse(ParseError(
                sdp_types::ParserError::NoVersion
            )))
        );
        // None of it changed the session.
        assert_eq!(b.negotiated(), None);
        assert_eq!(version(&b.create_offer()), 1);
    }

    #[test]
    fn our_sdp_survives_a_round_trip_and_dynamic_pcmu() {
        // A peer that maps PCMU to a dynamic PT keeps it.
        let offer = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 6000 RTP/AVP 97 0\r\na=rtpmap:97 pcmu/8000/1\r\n";
        let mut b = session(2, "198.51.100.20:50000");
        let (answer, n) = b.answer(offer).unwrap();
        assert_eq!((n.codec, n.payload_type), (SdpCodec::Pcmu, 97));
        assert!(has_line(&answer, "a=rtpmap:97 PCMU/8000"));
        // A static PT remapped by rtpmap to something else is not PCMU.
        let offer = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/16000\r\n";
        assert_eq!(
            session(2, "198.51.100.20:50000").answer(offer),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn event_sets() {
        assert_eq!(EventSet::SUPPORTED.to_fmtp(), "0-16");
        assert_eq!(EventSet::DEFAULT.to_fmtp(), "0-15");
        assert_eq!(EventSet::parse_supported("0-11,16").to_fmtp(), "0-11,16");
        assert_eq!(
            EventSet::parse_supported(" 0-15 , 32-63,255").to_fmtp(),
            "0-15"
        );
        assert_eq!(
            EventSet::parse_supported("1,3,5-6,x,9-").to_fmtp(),
            "1,3,5-6"
        );
        assert_eq!(EventSet::parse_supported("16-0"), EventSet(0));
        assert!(EventSet::parse_supported("200-255").is_empty());
        assert_eq!(EventSet::parse_supported("0-255"), EventSet::SUPPORTED);
    }

    #[test]
    fn huge_offers_are_handled() {
        // ~60 kB of payload types and rtpmaps: work stays linear.
        let mut sdp = String::from(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP",
        );
        for i in 0..15_000 {
            sdp.push_str(if i % 2 == 0 { " 96" } else { " 127" });
        }
        sdp.push_str(" 8\r\n");
        for pt in (0..1_500).map(|i| 96 + (i % 32)) {
            sdp.push_str(&format!("a=rtpmap:{pt} opus/48000/2\r\n"));
        }
        let (_, n) = session(2, "198.51.100.20:50000")
            .answer(sdp.as_bytes())
            .unwrap();
        assert_eq!((n.codec, n.payload_type), (SdpCodec::Pcma, 8));
        // Many declined m-lines.
        let mut sdp = String::from(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n",
        );
        for _ in 0..3_000 {
            sdp.push_str("m=video 5000 RTP/AVP 96\r\n");
        }
        sdp.push_str("m=audio 6000 RTP/AVP 0\r\n");
        let mut b = session(2, "198.51.100.20:50000");
        let (answer, _) = b.answer(sdp.as_bytes()).unwrap();
        assert_eq!(
            sdp_types::Session::parse(&answer).unwrap().medias.len(),
            3_001
        );
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Feeds `input` to every entry point; must not panic, and whatever we
    /// write must parse again.
    fn feed(input: &[u8]) {
        let mut b = session(2, "198.51.100.20:50000");
        if let Ok((answer, _)) = b.answer(input) {
            sdp_types::Session::parse(&answer).unwrap();
        }
        let mut c = session(3, "198.51.100.30:50000");
        if let Ok(rejection) = c.reject(input) {
            sdp_types::Session::parse(&rejection).unwrap();
        }
        let mut a = session(1, "[2001:db8::1]:40000");
        let _ = a.create_offer();
        let _ = a.handle_answer(input);
        let reoffer = a.create_offer();
        sdp_types::Session::parse(&reoffer).unwrap();
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let samples: [&[u8]; 8] = [
            SIPP_UAC,
            SIPP_UAC_PCAP,
            BARESIP,
            LINPHONE,
            PJSUA_IPV6,
            VIDEO_AND_AUDIO,
            &session(9, "192.0.2.1:1").create_offer(),
            &session(9, "[2001:db8::9]:65535").create_offer(),
        ];
        // Every prefix and every single-byte corruption of real SDPs.
        const NASTY: &[u8] = b"\0\r\n =:/-0 9x\xff\xc3";
        for sample in samples {
            for end in 0..=sample.len() {
                feed(&sample[..end]);
            }
            let mut copy = sample.to_vec();
            for i in 0..copy.len() {
                let keep = copy[i];
                for &byte in NASTY {
                    copy[i] = byte;
                    feed(&copy);
                }
                copy[i] = keep;
            }
        }
        // Random bytes, and random lines built from SDP-ish pieces.
        let mut rng = Rng(0x5eed_f00d_5d95);
        const PIECES: &[&str] = &[
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "o=",
            "s=-",
            "c=IN IP4 0.0.0.0",
            "c=IN IP6 ::",
            "c=IN IP4 192.0.2.1/127/3",
            "c=IN IP6 2001:db8::1",
            "c=IN",
            "t=0 0",
            "t=",
            "r=1 1",
            "m=audio 6000 RTP/AVP 0 8 101",
            "m=audio 0 RTP/AVP 0",
            "m=video 1 RTP/AVP 96",
            "m=audio 65536 RTP/AVP 0",
            "m=audio 6000/2 RTP/AVP 8",
            "m=audio x",
            "m=",
            "a=rtpmap:101 telephone-event/8000",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8",
            "a=rtpmap:255 PCMA/8000",
            "a=fmtp:101 0-255,x",
            "a=fmtp:",
            "a=ptime:0",
            "a=ptime:4294967296",
            "a=sendonly",
            "a=recvonly",
            "a=inactive",
            "a=",
            "b=AS:",
            "z=0 -1h",
            "k=clear",
            "i=x",
            "garbage",
            "=",
            "",
        ];
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 2 == 0 {
                let len = rng.below(300);
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut s = String::from("v=0\r\n");
                for _ in 0..rng.below(14) {
                    s.push_str(PIECES[rng.below(PIECES.len())]);
                    s.push_str(if rng.below(4) == 0 { "\n" } else { "\r\n" });
                }
                s.into_bytes()
            };
            feed(&input);
        }
    }

    // ----- an incoming INVITE's offer, checked before it rings ----------

    /// An offer from 192.0.2.1:4000 with `extra` media attributes.
    fn offer_with(extra: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\n{extra}"
        )
    }

    #[test]
    fn rtcp_goes_where_the_peer_says_and_we_take_it_on_the_rtp_port() {
        // Ours: RTCP on the RTP port, and rtcp-mux offered.
        let mut a = session(1, "192.0.2.10:40000");
        let offer = a.create_offer();
        assert!(has_line(&offer, "a=rtcp:40000"));
        assert!(has_line(&offer, "a=rtcp-mux"));

        // What the peer's offer says, and where its RTCP goes.
        let cases: &[(&str, &str)] = &[
            ("", "192.0.2.1:4001"),
            ("a=rtcp-mux\r\n", "192.0.2.1:4000"),
            ("a=rtcp:4001\r\na=rtcp-mux\r\n", "192.0.2.1:4000"),
            ("a=rtcp:5005\r\n", "192.0.2.1:5005"),
            ("a=rtcp:5005 IN IP4 198.51.100.7\r\n", "198.51.100.7:5005"),
            ("a=rtcp:9 IN IP4 0.0.0.0\r\n", "192.0.2.1:9"),
            // unusable a=rtcp lines are ignored: the next port up
            ("a=rtcp:0\r\n", "192.0.2.1:4001"),
            ("a=rtcp:70000\r\n", "192.0.2.1:4001"),
            ("a=rtcp:port\r\n", "192.0.2.1:4001"),
            ("a=rtcp\r\n", "192.0.2.1:4001"),
            ("a=rtcp:5005 IN IP6 2001:db8::1\r\n", "192.0.2.1:4001"),
            ("a=rtcp:5005 IN IP4 2001:db8::1\r\n", "192.0.2.1:4001"),
            ("a=rtcp:5005 IN IP4 224.0.0.1\r\n", "192.0.2.1:4001"),
            ("a=rtcp:5005 IN IP4 host.example\r\n", "192.0.2.1:4001"),
            ("a=rtcp:5005 IN\r\n", "192.0.2.1:4001"),
            (
                "a=rtcp:5005 IN IP4 198.51.100.7 extra\r\n",
                "192.0.2.1:4001",
            ),
            ("a=rtcp:5005 ATM NSAP 47.0005\r\n", "192.0.2.1:4001"),
        ];
        for (extra, rtcp) in cases {
            let mut b = session(2, "198.51.100.20:50000");
            let (answer, n) = b.answer(offer_with(extra).as_bytes()).unwrap();
            assert_eq!(n.remote, Some(addr("192.0.2.1:4000")), "{extra}");
            assert_eq!(n.rtcp, Some(addr(rtcp)), "{extra}");
            assert!(has_line(&answer, "a=rtcp:50000"), "{extra}");
            // rtcp-mux is answered only when offered (RFC 5761 §5.1.1)
            assert_eq!(
                has_line(&answer, "a=rtcp-mux"),
                extra.contains("rtcp-mux"),
                "{extra}"
            );
        }

        // The top port has no next port: RTCP shares it.
        let top = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                   m=audio 65535 RTP/AVP 0\r\n";
        let (_, n) = session(2, "198.51.100.20:50000")
            .answer(top.as_bytes())
            .unwrap();
        assert_eq!(n.rtcp, Some(addr("192.0.2.1:65535")));

        // IPv6, and hold without an address: no RTCP either.
        let v6 = "v=0\r\no=- 1 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n\
                  m=audio 4000 RTP/AVP 0\r\na=rtcp:4100 IN IP6 2001:db8::6\r\n";
        let (_, n) = session(2, "[2001:db8::20]:50000")
            .answer(v6.as_bytes())
            .unwrap();
        assert_eq!(n.rtcp, Some(addr("[2001:db8::6]:4100")));
        let hold = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\na=rtcp-mux\r\n";
        let (_, n) = session(2, "198.51.100.20:50000")
            .answer(hold.as_bytes())
            .unwrap();
        assert_eq!((n.remote, n.rtcp), (None, None));

        // Our offer answered: muxed between two siproam sessions, the next
        // port up from a peer that ignores both attributes.
        let mut b = session(2, "198.51.100.20:50000");
        let (na, nb, _, _) = exchange(&mut a, &mut b);
        assert_eq!(na.rtcp, na.remote);
        assert_eq!(nb.rtcp, nb.remote);
        let mut a = session(1, "192.0.2.10:40000");
        let _ = a.create_offer();
        let plain = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
                     m=audio 6000 RTP/AVP 0\r\n";
        let n = a.handle_answer(plain.as_bytes()).unwrap();
        assert_eq!(n.rtcp, Some(addr("192.0.2.5:6001")));
    }

    const GOOD_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    #[test]
    fn a_usable_offer_passes_the_check_and_an_unusable_one_names_its_warning() {
        let s = session(1, "192.0.2.2:5000");
        assert_eq!(s.check_offer(GOOD_OFFER.as_bytes()), Ok(()));
        let cases: [(&str, u16); 5] = [
            ("garbage \u{1}\u{2} not sdp", 399),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n",
                304,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n",
                399,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n",
                305,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 224.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
                301,
            ),
        ];
        for (offer, warn) in cases {
            let e = s.check_offer(offer.as_bytes()).unwrap_err();
            assert_eq!(e.warning().0, warn, "{offer:?}: {e}");
        }
        assert!(s.check_offer(b"").is_err(), "no offer at all");
    }
}
