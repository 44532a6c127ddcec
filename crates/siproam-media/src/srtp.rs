//! SRTP and SRTCP (RFC 3711, RFC 7714), sans-IO: packets are protected and
//! unprotected in place, with no clock, no socket and no allocation per packet.
//!
//! Three crypto suites ([`SrtpSuite`]): `AES_CM_128_HMAC_SHA1_80`,
//! `AES_CM_128_HMAC_SHA1_32` (RFC 3711, RFC 4568) and `AEAD_AES_128_GCM`
//! (RFC 7714). A [`SrtpKey`] is the master key and master salt that SDES
//! carries; a [`SrtpContext`] is one direction's crypto context (the session
//! keys derived with the AES-CM PRF at key derivation rate 0, the per-SSRC
//! rollover counters and replay windows, the SRTCP index); a [`SrtpSession`]
//! is both directions of one stream, with the re-keying rules of a new offer
//! or answer ([`SrtpSession::update`]).
//!
//! The AES key schedules, the GHASH keys and the keyed HMAC-SHA1 states are
//! computed once, when a context is made; a packet costs a stack copy of
//! those, the cipher and the MAC, and nothing else. The primitives come from
//! the RustCrypto crates `aes`, `ctr`, `aes-gcm`, `hmac` and `sha1`, which use
//! AES-NI and PCLMULQDQ when the processor has them.
//!
//! ```
//! use siproam_media::srtp::{SrtpKey, SrtpSession, SrtpSuite};
//!
//! let suite = SrtpSuite::AesCm128HmacSha1_80;
//! let ours = SrtpKey::new(suite, &[1; 30])?;
//! let theirs = SrtpKey::new(suite, &[2; 30])?;
//! let mut alice = SrtpSession::new(&ours, &theirs);
//! let mut bob = SrtpSession::new(&theirs, &ours);
//!
//! // V=2, PT 0, sequence number 1, timestamp 160, SSRC 0x11223344, then 4 payload octets.
//! let plain = [0x80, 0, 0, 1, 0, 0, 0, 160, 0x11, 0x22, 0x33, 0x44, 1, 2, 3, 4];
//! let mut packet = plain.to_vec();
//! alice.protect_rtp(&mut packet)?;
//! assert_eq!(packet.len(), plain.len() + suite.rtp_tag_len());
//! let len = bob.unprotect_rtp(&mut packet)?;
//! assert_eq!(&packet[..len], &plain[..]);
//! # Ok::<(), siproam_media::srtp::SrtpError>(())
//! ```

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use aes::Aes128;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::Aes128Gcm;
use hmac::{Hmac, Mac};
use sha1::Sha1;

#[cfg(test)]
mod tests;

type AesCtr = ctr::Ctr128BE<Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// The most SSRCs one [`SrtpContext`] keeps state for; the one used least
/// recently is forgotten to make room for a new one.
pub const MAX_SSRCS: usize = 16;

/// The width of the replay windows, in packets (RFC 3711 §3.3.2).
pub const REPLAY_WINDOW: u64 = 64;

/// The highest SRTP packet index (48 bits, RFC 3711 §3.2.1).
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;

/// The highest SRTCP index (31 bits, RFC 3711 §3.4).
const MAX_RTCP_INDEX: u32 = 0x7fff_ffff;

/// The E bit of the SRTCP trailer word: the packet is encrypted.
const E_FLAG: u32 = 0x8000_0000;

/// The length of the HMAC-SHA1 session authentication key (RFC 3711 §8.2).
const AUTH_KEY_LEN: usize = 20;

/// The tag of SRTCP under both AES-CM suites: 80 bits (RFC 4568 §6.2).
const CM_RTCP_TAG_LEN: usize = 10;

/// The tag of AEAD_AES_128_GCM, SRTP and SRTCP alike (RFC 7714 §14.2).
const GCM_TAG_LEN: usize = 16;

/// The SRTCP trailer: the E bit and the 31-bit SRTCP index.
const RTCP_INDEX_LEN: usize = 4;

/// The fixed RTP header (RFC 3550 §5.1).
const RTP_HEADER_LEN: usize = 12;

/// The RTCP header and the sender's SSRC, never encrypted (RFC 3711 §3.4).
const RTCP_HEADER_LEN: usize = 8;

/// The key derivation labels of RFC 3711 §4.3.1 and §4.3.2.
mod label {
    pub const RTP_ENCRYPTION: u8 = 0x00;
    pub const RTP_AUTH: u8 = 0x01;
    pub const RTP_SALT: u8 = 0x02;
    pub const RTCP_ENCRYPTION: u8 = 0x03;
    pub const RTCP_AUTH: u8 = 0x04;
    pub const RTCP_SALT: u8 = 0x05;
}

/// An SRTP crypto suite, as named in SDES `a=crypto` lines (RFC 4568 §6.2,
/// RFC 7714 §14.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// AES-128 in counter mode, HMAC-SHA1 with an 80-bit tag on SRTP and SRTCP.
    AesCm128HmacSha1_80,
    /// AES-128 in counter mode, HMAC-SHA1 with a 32-bit tag on SRTP and an
    /// 80-bit tag on SRTCP.
    AesCm128HmacSha1_32,
    /// AES-128 in Galois/counter mode with a 128-bit tag (RFC 7714).
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// The name in SDES: `AES_CM_128_HMAC_SHA1_80`, `AES_CM_128_HMAC_SHA1_32`
    /// or `AEAD_AES_128_GCM`.
    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite an SDES name stands for (exact, case-sensitive, as RFC 4568
    /// registers them); `None` for a suite this module does not implement.
    pub fn from_sdes_name(s: &str) -> Option<SrtpSuite> {
        [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
            SrtpSuite::AeadAes128Gcm,
        ]
        .into_iter()
        .find(|suite| suite.sdes_name() == s)
    }

    /// The master key length in octets: 16.
    pub fn master_key_len(self) -> usize {
        16
    }

    /// The master salt length in octets: 14 for the AES-CM suites, 12 for
    /// AEAD_AES_128_GCM.
    pub fn master_salt_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => 14,
            SrtpSuite::AeadAes128Gcm => 12,
        }
    }

    /// The master key and the master salt together, what an SDES `inline:`
    /// carries: 30 octets for the AES-CM suites, 28 for AEAD_AES_128_GCM.
    pub fn key_material_len(self) -> usize {
        self.master_key_len() + self.master_salt_len()
    }

    /// The octets an SRTP packet grows by: the authentication tag, 10, 4 or 16.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }

    /// The octets an SRTCP packet grows by: the E bit and SRTCP index (4) and
    /// the tag (10 for both AES-CM suites, 16 for AEAD_AES_128_GCM).
    pub fn rtcp_overhead(self) -> usize {
        RTCP_INDEX_LEN + self.rtcp_tag_len()
    }

    /// The SRTCP tag length.
    fn rtcp_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => CM_RTCP_TAG_LEN,
            SrtpSuite::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }
}

impl std::fmt::Display for SrtpSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sdes_name())
    }
}

/// Why a packet was not protected or not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The packet is not a well-formed RTP or RTCP packet (wrong version,
    /// too short, a CSRC list or header extension past its end), or too short
    /// to hold the SRTP/SRTCP trailer.
    #[error("malformed packet")]
    Malformed,
    /// The authentication tag does not match.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// A packet with this index was already accepted.
    #[error("replayed packet")]
    Replayed,
    /// The packet is older than the replay window, or its index would be
    /// below zero.
    #[error("packet older than the replay window")]
    TooOld,
    /// The key material has the wrong length for the suite.
    #[error("key material of {got} octets; {suite} needs {expected}")]
    BadKeyLength {
        /// The suite the key is for.
        suite: SrtpSuite,
        /// The length the suite needs (master key and master salt).
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The packet index space of this key is used up (2^48 SRTP packets of
    /// one SSRC, or 2^31 SRTCP packets); a new key is needed.
    #[error("packet index space exhausted; a new key is needed")]
    KeyExhausted,
}

/// A master key and master salt for one suite: what one side's SDES
/// `a=crypto` line carries. Its `Debug` shows the suite only, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKey {
    suite: SrtpSuite,
    key: [u8; 16],
    /// The master salt; for AEAD_AES_128_GCM the last two octets are zero.
    salt: [u8; 14],
}

impl SrtpKey {
    /// A key from the master key followed by the master salt
    /// ([`SrtpSuite::key_material_len`] octets).
    pub fn new(suite: SrtpSuite, key_material: &[u8]) -> Result<SrtpKey, SrtpError> {
        let expected = suite.key_material_len();
        let bad = SrtpError::BadKeyLength {
            suite,
            expected,
            got: key_material.len(),
        };
        if key_material.len() != expected {
            return Err(bad);
        }
        let (key, salt) = key_material.split_at(suite.master_key_len());
        let key: [u8; 16] = key.try_into().map_err(|_| bad)?;
        let mut padded = [0u8; 14];
        padded
            .get_mut(..salt.len())
            .ok_or(bad)?
            .copy_from_slice(salt);
        Ok(SrtpKey {
            suite,
            key,
            salt: padded,
        })
    }

    /// The suite this key is for.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }
}

impl std::fmt::Debug for SrtpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKey")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.3 at key derivation rate 0: the keystream
/// of AES-CM under the master key, from the IV (master salt XOR label at octet
/// 7) * 2^16. A 12-octet (GCM) master salt is zero-padded to 14 on the right,
/// as libsrtp does.
fn derive(master: &Aes128, master_salt: &[u8; 14], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    aes_ctr(master, iv).apply_keystream(out);
}

/// AES in counter mode from `iv`, with a copy of the key schedule of `cipher`.
fn aes_ctr(cipher: &Aes128, iv: [u8; 16]) -> AesCtr {
    AesCtr::from_core(ctr::CtrCore::inner_iv_init(cipher.clone(), &iv.into()))
}

/// The AES-CM IV of RFC 3711 §4.1.1: (salt * 2^16) XOR (SSRC * 2^64) XOR
/// (index * 2^16).
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..16].iter_mut().zip((index << 16).to_be_bytes()) {
        *d ^= s;
    }
    iv
}

/// The AEAD_AES_128_GCM IV: 00 00 || SSRC || 4 octets || 2 octets, XOR the
/// session salt (RFC 7714 §8.1 with ROC || SEQ, §9.1 with 00 00 || index).
fn gcm_iv(salt: &[u8; 12], ssrc: u32, tail: [u8; 6]) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&tail);
    for (d, s) in iv.iter_mut().zip(salt) {
        *d ^= s;
    }
    iv
}

/// An HMAC-SHA1 keyed with a 20-octet key. HMAC zero-pads a key shorter than
/// the block to the block size, so the padded key is the same key; this way
/// keying cannot fail.
fn hmac_sha1(key: &[u8; AUTH_KEY_LEN]) -> HmacSha1 {
    let mut block = [0u8; 64];
    block[..AUTH_KEY_LEN].copy_from_slice(key);
    <HmacSha1 as KeyInit>::new(&block.into())
}

/// One direction's session keys of one of the suites.
#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per context, made once and never moved per packet; a box would add an indirection per packet"
)]
enum Transform {
    AesCm {
        rtp_cipher: Aes128,
        rtp_salt: [u8; 14],
        rtp_auth: HmacSha1,
        rtcp_cipher: Aes128,
        rtcp_salt: [u8; 14],
        rtcp_auth: HmacSha1,
        rtp_tag_len: usize,
    },
    Gcm {
        rtp: Aes128Gcm,
        rtp_salt: [u8; 12],
        rtcp: Aes128Gcm,
        rtcp_salt: [u8; 12],
    },
}

impl Transform {
    fn new(key: &SrtpKey) -> Transform {
        let master = Aes128::new(&key.key.into());
        let cipher = |label| {
            let mut k = [0u8; 16];
            derive(&master, &key.salt, label, &mut k);
            k
        };
        match key.suite {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => {
                let salt = |label| {
                    let mut s = [0u8; 14];
                    derive(&master, &key.salt, label, &mut s);
                    s
                };
                let auth = |label| {
                    let mut a = [0u8; AUTH_KEY_LEN];
                    derive(&master, &key.salt, label, &mut a);
                    hmac_sha1(&a)
                };
                Transform::AesCm {
                    rtp_cipher: Aes128::new(&cipher(label::RTP_ENCRYPTION).into()),
                    rtp_salt: salt(label::RTP_SALT),
                    rtp_auth: auth(label::RTP_AUTH),
                    rtcp_cipher: Aes128::new(&cipher(label::RTCP_ENCRYPTION).into()),
                    rtcp_salt: salt(label::RTCP_SALT),
                    rtcp_auth: auth(label::RTCP_AUTH),
                    rtp_tag_len: key.suite.rtp_tag_len(),
                }
            }
            SrtpSuite::AeadAes128Gcm => {
                let salt = |label| {
                    let mut s = [0u8; 12];
                    derive(&master, &key.salt, label, &mut s);
                    s
                };
                Transform::gcm(
                    &cipher(label::RTP_ENCRYPTION),
                    salt(label::RTP_SALT),
                    &cipher(label::RTCP_ENCRYPTION),
                    salt(label::RTCP_SALT),
                )
            }
        }
    }

    fn gcm(
        rtp_key: &[u8; 16],
        rtp_salt: [u8; 12],
        rtcp_key: &[u8; 16],
        rtcp_salt: [u8; 12],
    ) -> Self {
        Transform::Gcm {
            rtp: Aes128Gcm::new(&(*rtp_key).into()),
            rtp_salt,
            rtcp: Aes128Gcm::new(&(*rtcp_key).into()),
            rtcp_salt,
        }
    }
}

/// A 64-packet replay window (RFC 3711 §3.3.2): the highest index accepted
/// and a bitmask of the indices below it (bit n: highest - n was accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReplayWindow {
    highest: u64,
    mask: u64,
}

impl ReplayWindow {
    fn new(index: u64) -> Self {
        ReplayWindow {
            highest: index,
            mask: 1,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(delta) = self.highest.checked_sub(index) else {
            return Ok(());
        };
        if delta >= REPLAY_WINDOW {
            Err(SrtpError::TooOld)
        } else if self.mask & (1 << delta) != 0 {
            Err(SrtpError::Replayed)
        } else {
            Ok(())
        }
    }

    fn accept(&mut self, index: u64) {
        match self.highest.checked_sub(index) {
            None => {
                let shift = index - self.highest;
                self.mask = if shift >= REPLAY_WINDOW {
                    0
                } else {
                    self.mask << shift
                };
                self.mask |= 1;
                self.highest = index;
            }
            Some(delta) if delta < REPLAY_WINDOW => self.mask |= 1 << delta,
            Some(_) => {}
        }
    }
}

/// The index of a packet with sequence number `seq`, guessed from the highest
/// index so far (RFC 3711 Appendix A): the rollover counter of the highest
/// index, one less or one more, whichever puts `seq` nearest to it. `None`
/// when the guess is below zero or past 2^48.
fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = highest >> 16;
    let s_l = (highest & 0xffff) as u16;
    let v = if s_l < 0x8000 {
        if u32::from(seq) > u32::from(s_l) + 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if u32::from(s_l) - 0x8000 > u32::from(seq) {
        roc + 1
    } else {
        roc
    };
    let index = (v << 16) | u64::from(seq);
    (index <= MAX_RTP_INDEX).then_some(index)
}

/// What a context keeps about one SSRC: for a sender the highest SRTP index
/// sent, for a receiver the SRTP and SRTCP replay windows.
#[derive(Debug, Clone, Copy)]
struct SsrcState {
    ssrc: u32,
    rtp: Option<ReplayWindow>,
    rtcp: Option<ReplayWindow>,
    last_used: u64,
}

/// At most [`MAX_SSRCS`] states, the least recently used forgotten first.
/// The vector is allocated once, at its full capacity.
#[derive(Debug, Clone)]
struct SsrcTable {
    entries: Vec<SsrcState>,
    tick: u64,
}

impl SsrcTable {
    fn new() -> Self {
        SsrcTable {
            entries: Vec::with_capacity(MAX_SSRCS),
            tick: 0,
        }
    }

    fn get(&self, ssrc: u32) -> Option<&SsrcState> {
        self.entries.iter().find(|e| e.ssrc == ssrc)
    }

    /// Runs `f` on the state of `ssrc`, made first (in place of the least
    /// recently used one when the table is full) when there is none.
    fn update(&mut self, ssrc: u32, f: impl FnOnce(&mut SsrcState)) {
        self.tick += 1;
        let tick = self.tick;
        if !self.entries.iter().any(|e| e.ssrc == ssrc) {
            if self.entries.len() >= MAX_SSRCS {
                let oldest = self
                    .entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(i, _)| i);
                if let Some(i) = oldest {
                    self.entries.swap_remove(i);
                }
            }
            // within the capacity reserved at creation: no allocation
            self.entries.push(SsrcState {
                ssrc,
                rtp: None,
                rtcp: None,
                last_used: tick,
            });
        }
        if let Some(state) = self.entries.iter_mut().find(|e| e.ssrc == ssrc) {
            state.last_used = tick;
            f(state);
        }
    }
}

fn be16(p: &[u8], at: usize) -> Result<u16, SrtpError> {
    match p.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(SrtpError::Malformed),
    }
}

fn be32(p: &[u8], at: usize) -> Result<u32, SrtpError> {
    match p.get(at..at + 4) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(SrtpError::Malformed),
    }
}

/// The parts of an RTP header SRTP needs.
struct RtpHeader {
    /// The header length: fixed header, CSRCs and header extension.
    len: usize,
    seq: u16,
    ssrc: u32,
}

/// Parses the RTP header at the start of `p` (all of `p` is the packet, the
/// SRTP tag already taken off).
fn rtp_header(p: &[u8]) -> Result<RtpHeader, SrtpError> {
    let first = *p.first().ok_or(SrtpError::Malformed)?;
    if p.len() < RTP_HEADER_LEN || first >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = be16(p, len + 2)?;
        len += 4 + 4 * usize::from(words);
    }
    if len > p.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(RtpHeader {
        len,
        seq: be16(p, 2)?,
        ssrc: be32(p, 8)?,
    })
}

/// The SSRC of the RTCP packet at the start of `p`, checking the version.
fn rtcp_ssrc(p: &[u8]) -> Result<u32, SrtpError> {
    let first = *p.first().ok_or(SrtpError::Malformed)?;
    if p.len() < RTCP_HEADER_LEN || first >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    be32(p, 4)
}

/// One direction's SRTP crypto context: the session keys derived from one
/// [`SrtpKey`], the per-SSRC rollover counters and replay windows (for at
/// most [`MAX_SSRCS`] SSRCs) and the SRTCP index. Use one context to protect
/// and another, made from the peer's key, to unprotect.
///
/// A packet that fails leaves both the context and the packet's bytes as
/// they were.
#[derive(Clone)]
pub struct SrtpContext {
    suite: SrtpSuite,
    transform: Transform,
    ssrcs: SsrcTable,
    /// The SRTCP index of the next packet sent (RFC 3711 §3.4: from zero).
    rtcp_index: u32,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("ssrcs", &self.ssrcs.entries.len())
            .field("rtcp_index", &self.rtcp_index)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// A context with the session keys derived from `key` (key derivation
    /// rate 0) and no SSRC seen yet.
    pub fn new(key: &SrtpKey) -> SrtpContext {
        SrtpContext {
            suite: key.suite,
            transform: Transform::new(key),
            ssrcs: SsrcTable::new(),
            rtcp_index: 0,
        }
    }

    /// The suite of this context.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// The rollover counter of `ssrc`: for a sender that of the highest
    /// index sent, for a receiver that of the highest index accepted. `None`
    /// for an SSRC with no state.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        let window = self.ssrcs.get(ssrc)?.rtp?;
        u32::try_from(window.highest >> 16).ok()
    }

    /// Encrypts and authenticates an RTP packet in place: the vector grows by
    /// the tag ([`SrtpSuite::rtp_tag_len`]), without allocating when it has the
    /// capacity. The sender's rollover counter of the packet's SSRC goes up
    /// when the sequence number wraps (the index is guessed as a receiver
    /// would, so a packet sent again or late keeps its index).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header = rtp_header(packet)?;
        let window = self.ssrcs.get(header.ssrc).and_then(|s| s.rtp);
        let index = match window {
            None => u64::from(header.seq),
            Some(w) => estimate_index(w.highest, header.seq).ok_or(if w.highest >> 16 == 0 {
                SrtpError::TooOld
            } else {
                SrtpError::KeyExhausted
            })?,
        };
        let roc = (index >> 16) as u32;
        match &self.transform {
            Transform::AesCm {
                rtp_cipher,
                rtp_salt,
                rtp_auth,
                rtp_tag_len,
                ..
            } => {
                let iv = cm_iv(rtp_salt, header.ssrc, index);
                let payload = packet.get_mut(header.len..).ok_or(SrtpError::Malformed)?;
                aes_ctr(rtp_cipher, iv).apply_keystream(payload);
                let mut mac = rtp_auth.clone();
                mac.update(packet);
                mac.update(&roc.to_be_bytes());
                let tag = mac.finalize().into_bytes();
                packet.extend_from_slice(tag.get(..*rtp_tag_len).ok_or(SrtpError::Malformed)?);
            }
            Transform::Gcm { rtp, rtp_salt, .. } => {
                let mut tail = [0u8; 6];
                tail[..4].copy_from_slice(&roc.to_be_bytes());
                tail[4..].copy_from_slice(&header.seq.to_be_bytes());
                let iv = gcm_iv(rtp_salt, header.ssrc, tail);
                if header.len > packet.len() {
                    return Err(SrtpError::Malformed);
                }
                let (aad, payload) = packet.split_at_mut(header.len);
                let tag = rtp
                    .encrypt_in_place_detached(&iv.into(), aad, payload)
                    .map_err(|_| SrtpError::Malformed)?;
                packet.extend_from_slice(&tag);
            }
        }
        self.ssrcs
            .update(header.ssrc, |state| match &mut state.rtp {
                Some(w) => w.accept(index),
                None => state.rtp = Some(ReplayWindow::new(index)),
            });
        Ok(())
    }

    /// Checks and decrypts an SRTP packet in place; returns the length of the
    /// RTP packet (the tag taken off). A bad tag, a replay, a packet older than
    /// the replay window or a malformed packet is an error, and leaves the
    /// context and the bytes unchanged. The rollover counter is guessed from
    /// the highest index accepted (RFC 3711 Appendix A) and moves on only
    /// once the packet authenticates; the first packet of an SSRC starts it
    /// at zero.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let end = packet
            .len()
            .checked_sub(tag_len)
            .ok_or(SrtpError::Malformed)?;
        if end < RTP_HEADER_LEN {
            return Err(SrtpError::Malformed);
        }
        let (body, tag) = packet.split_at_mut(end);
        let header = rtp_header(body)?;
        let window = self.ssrcs.get(header.ssrc).and_then(|s| s.rtp);
        let index = match window {
            None => u64::from(header.seq),
            Some(w) => {
                let index = estimate_index(w.highest, header.seq).ok_or(SrtpError::TooOld)?;
                w.check(index)?;
                index
            }
        };
        let roc = (index >> 16) as u32;
        match &self.transform {
            Transform::AesCm {
                rtp_cipher,
                rtp_salt,
                rtp_auth,
                ..
            } => {
                let mut mac = rtp_auth.clone();
                mac.update(body);
                mac.update(&roc.to_be_bytes());
                mac.verify_truncated_left(tag)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
                let iv = cm_iv(rtp_salt, header.ssrc, index);
                let payload = body.get_mut(header.len..).ok_or(SrtpError::Malformed)?;
                aes_ctr(rtp_cipher, iv).apply_keystream(payload);
            }
            Transform::Gcm { rtp, rtp_salt, .. } => {
                let mut tail = [0u8; 6];
                tail[..4].copy_from_slice(&roc.to_be_bytes());
                tail[4..].copy_from_slice(&header.seq.to_be_bytes());
                let iv = gcm_iv(rtp_salt, header.ssrc, tail);
                let tag: [u8; GCM_TAG_LEN] =
                    (&*tag).try_into().map_err(|_| SrtpError::Malformed)?;
                if header.len > body.len() {
                    return Err(SrtpError::Malformed);
                }
                let (aad, payload) = body.split_at_mut(header.len);
                // aes-gcm checks the tag before it decrypts: a failure leaves the bytes
                rtp.decrypt_in_place_detached(&iv.into(), aad, payload, &tag.into())
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
            }
        }
        self.ssrcs
            .update(header.ssrc, |state| match &mut state.rtp {
                Some(w) => w.accept(index),
                None => state.rtp = Some(ReplayWindow::new(index)),
            });
        Ok(end)
    }

    /// Encrypts and authenticates an RTCP packet (compound or not) in place:
    /// everything after the first 8 octets is encrypted, the E bit is set and
    /// the SRTCP index of this context is appended, then the tag (for
    /// AEAD_AES_128_GCM the tag comes before the index, RFC 7714 §9.2). The
    /// vector grows by [`SrtpSuite::rtcp_overhead`].
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let ssrc = rtcp_ssrc(packet)?;
        let index = self.rtcp_index;
        if index > MAX_RTCP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        let word = (E_FLAG | index).to_be_bytes();
        match &self.transform {
            Transform::AesCm {
                rtcp_cipher,
                rtcp_salt,
                rtcp_auth,
                ..
            } => {
                let iv = cm_iv(rtcp_salt, ssrc, u64::from(index));
                let payload = packet
                    .get_mut(RTCP_HEADER_LEN..)
                    .ok_or(SrtpError::Malformed)?;
                aes_ctr(rtcp_cipher, iv).apply_keystream(payload);
                packet.extend_from_slice(&word);
                let mut mac = rtcp_auth.clone();
                mac.update(packet);
                let tag = mac.finalize().into_bytes();
                packet.extend_from_slice(tag.get(..CM_RTCP_TAG_LEN).ok_or(SrtpError::Malformed)?);
            }
            Transform::Gcm {
                rtcp, rtcp_salt, ..
            } => {
                let iv = gcm_rtcp_iv(rtcp_salt, ssrc, index);
                let mut aad = [0u8; RTCP_HEADER_LEN + RTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN]
                    .copy_from_slice(packet.get(..RTCP_HEADER_LEN).ok_or(SrtpError::Malformed)?);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
                let payload = packet
                    .get_mut(RTCP_HEADER_LEN..)
                    .ok_or(SrtpError::Malformed)?;
                let tag = rtcp
                    .encrypt_in_place_detached(&iv.into(), &aad, payload)
                    .map_err(|_| SrtpError::Malformed)?;
                packet.extend_from_slice(&tag);
                packet.extend_from_slice(&word);
            }
        }
        self.rtcp_index = index + 1;
        Ok(())
    }

    /// Checks and decrypts an SRTCP packet in place; returns the length of the
    /// RTCP packet (index and tag taken off). A packet with the E bit clear is
    /// authenticated only, as RFC 3711 §3.4 allows. Errors as
    /// [`SrtpContext::unprotect_rtp`]; each SSRC has its own SRTCP replay
    /// window.
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let overhead = self.suite.rtcp_overhead();
        let plain_len = packet
            .len()
            .checked_sub(overhead)
            .ok_or(SrtpError::Malformed)?;
        let ssrc = rtcp_ssrc(packet.get(..plain_len).ok_or(SrtpError::Malformed)?)?;
        let word_at = match self.suite {
            SrtpSuite::AeadAes128Gcm => plain_len + GCM_TAG_LEN,
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::AesCm128HmacSha1_32 => plain_len,
        };
        let word = be32(packet, word_at)?;
        let encrypted = word & E_FLAG != 0;
        let index = word & MAX_RTCP_INDEX;
        let window = self.ssrcs.get(ssrc).and_then(|s| s.rtcp);
        if let Some(w) = window {
            w.check(u64::from(index))?;
        }
        match &self.transform {
            Transform::AesCm {
                rtcp_cipher,
                rtcp_salt,
                rtcp_auth,
                ..
            } => {
                let (body, tag) = packet.split_at_mut(plain_len + RTCP_INDEX_LEN);
                let mut mac = rtcp_auth.clone();
                mac.update(body);
                mac.verify_truncated_left(tag)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
                if encrypted {
                    let iv = cm_iv(rtcp_salt, ssrc, u64::from(index));
                    let payload = body
                        .get_mut(RTCP_HEADER_LEN..plain_len)
                        .ok_or(SrtpError::Malformed)?;
                    aes_ctr(rtcp_cipher, iv).apply_keystream(payload);
                }
            }
            Transform::Gcm {
                rtcp, rtcp_salt, ..
            } => {
                let iv = gcm_rtcp_iv(rtcp_salt, ssrc, index);
                let word_bytes = word.to_be_bytes();
                if encrypted {
                    let (body, rest) = packet.split_at_mut(plain_len);
                    let tag: [u8; GCM_TAG_LEN] = rest
                        .get(..GCM_TAG_LEN)
                        .and_then(|t| t.try_into().ok())
                        .ok_or(SrtpError::Malformed)?;
                    let mut aad = [0u8; RTCP_HEADER_LEN + RTCP_INDEX_LEN];
                    aad[..RTCP_HEADER_LEN]
                        .copy_from_slice(body.get(..RTCP_HEADER_LEN).ok_or(SrtpError::Malformed)?);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&word_bytes);
                    let payload = body
                        .get_mut(RTCP_HEADER_LEN..)
                        .ok_or(SrtpError::Malformed)?;
                    rtcp.decrypt_in_place_detached(&iv.into(), &aad, payload, &tag.into())
                        .map_err(|_| SrtpError::AuthenticationFailed)?;
                } else {
                    // RFC 7714 §9.2 with E = 0: the whole packet and the trailer word
                    // are associated data, nothing is encrypted. The word is moved in
                    // front of the tag so that the data is one slice, and moved back
                    // if the tag is wrong.
                    let trailer = packet.get_mut(plain_len..).ok_or(SrtpError::Malformed)?;
                    trailer.rotate_right(RTCP_INDEX_LEN);
                    let (aad, tag) = packet.split_at_mut(plain_len + RTCP_INDEX_LEN);
                    let tag: [u8; GCM_TAG_LEN] =
                        (&*tag).try_into().map_err(|_| SrtpError::Malformed)?;
                    let checked =
                        rtcp.decrypt_in_place_detached(&iv.into(), aad, &mut [], &tag.into());
                    if checked.is_err() {
                        if let Some(trailer) = packet.get_mut(plain_len..) {
                            trailer.rotate_left(RTCP_INDEX_LEN);
                        }
                        return Err(SrtpError::AuthenticationFailed);
                    }
                }
            }
        }
        self.ssrcs.update(ssrc, |state| match &mut state.rtcp {
            Some(w) => w.accept(u64::from(index)),
            None => state.rtcp = Some(ReplayWindow::new(u64::from(index))),
        });
        Ok(plain_len)
    }
}

/// The AEAD_AES_128_GCM SRTCP IV (RFC 7714 §9.1): 00 00 || SSRC || 00 00 ||
/// 0 || SRTCP index, XOR the session salt.
fn gcm_rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut tail = [0u8; 6];
    tail[2..].copy_from_slice(&(index & MAX_RTCP_INDEX).to_be_bytes());
    gcm_iv(salt, ssrc, tail)
}

/// Counters of one [`SrtpSession`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpStats {
    /// SRTP packets protected.
    pub rtp_protected: u64,
    /// SRTP packets accepted.
    pub rtp_unprotected: u64,
    /// SRTCP packets protected.
    pub rtcp_protected: u64,
    /// SRTCP packets accepted.
    pub rtcp_unprotected: u64,
    /// Packets (SRTP or SRTCP) refused because their tag did not match.
    pub auth_failures: u64,
    /// Packets refused as replays.
    pub replayed: u64,
    /// Packets refused as older than the replay window.
    pub too_old: u64,
    /// Packets refused as malformed.
    pub malformed: u64,
    /// Packets refused or not protected for another reason (index space
    /// exhausted).
    pub other_errors: u64,
    /// Packets accepted under the previous receive key after a re-key.
    pub old_key_packets: u64,
}

impl SrtpStats {
    fn count(&mut self, error: SrtpError) {
        let counter = match error {
            SrtpError::AuthenticationFailed => &mut self.auth_failures,
            SrtpError::Replayed => &mut self.replayed,
            SrtpError::TooOld => &mut self.too_old,
            SrtpError::Malformed => &mut self.malformed,
            SrtpError::BadKeyLength { .. } | SrtpError::KeyExhausted => &mut self.other_errors,
        };
        *counter += 1;
    }
}

/// Both directions of one call's SRTP stream: the context that protects with
/// our key, the one that unprotects with the peer's, and the re-keying rules
/// of [`SrtpSession::update`].
#[derive(Debug, Clone)]
pub struct SrtpSession {
    tx_key: SrtpKey,
    tx: SrtpContext,
    rx_key: SrtpKey,
    rx: SrtpContext,
    /// The previous receive key and context after a re-key, until a packet
    /// authenticates under the new key.
    old_rx: Option<(SrtpKey, SrtpContext)>,
    stats: SrtpStats,
}

/// Which of the two unprotect operations.
#[derive(Clone, Copy)]
enum Kind {
    Rtp,
    Rtcp,
}

impl SrtpSession {
    /// A session that protects with `tx` (our key, from our SDP) and
    /// unprotects with `rx` (the peer's).
    pub fn new(tx: &SrtpKey, rx: &SrtpKey) -> SrtpSession {
        SrtpSession {
            tx_key: tx.clone(),
            tx: SrtpContext::new(tx),
            rx_key: rx.clone(),
            rx: SrtpContext::new(rx),
            old_rx: None,
            stats: SrtpStats::default(),
        }
    }

    /// The suite packets are protected with (that of the transmit key).
    pub fn suite(&self) -> SrtpSuite {
        self.tx_key.suite
    }

    /// The keys of a new negotiation (a re-INVITE or UPDATE after a network
    /// change, or a re-key). A key equal to the current one keeps its context:
    /// the same rollover counters and replay windows, so the stream goes on
    /// across an address move. A changed receive key gets a fresh context and
    /// the old one is kept: a packet that fails under the new key is tried
    /// under the old, until the first packet authenticates under the new key
    /// (RFC 4568 §7.1.4: packets under the old key may still be in flight);
    /// then the old one is dropped. A changed transmit key gets a fresh
    /// context (the peer learns the key from our SDP).
    pub fn update(&mut self, tx: &SrtpKey, rx: &SrtpKey) {
        if *tx != self.tx_key {
            self.tx_key = tx.clone();
            self.tx = SrtpContext::new(tx);
        }
        if *rx != self.rx_key {
            let previous = match self.old_rx.take() {
                // back to the key before: its context still has its state
                Some((old_key, old_ctx)) if old_key == *rx => old_ctx,
                _ => SrtpContext::new(rx),
            };
            let key = std::mem::replace(&mut self.rx_key, rx.clone());
            let ctx = std::mem::replace(&mut self.rx, previous);
            self.old_rx = Some((key, ctx));
        }
    }

    /// Protects an RTP packet with the transmit context
    /// ([`SrtpContext::protect_rtp`]).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let result = self.tx.protect_rtp(packet);
        match result {
            Ok(()) => self.stats.rtp_protected += 1,
            Err(e) => self.stats.count(e),
        }
        result
    }

    /// Protects an RTCP packet with the transmit context
    /// ([`SrtpContext::protect_rtcp`]).
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let result = self.tx.protect_rtcp(packet);
        match result {
            Ok(()) => self.stats.rtcp_protected += 1,
            Err(e) => self.stats.count(e),
        }
        result
    }

    /// Unprotects an SRTP packet with the receive context, or after a re-key
    /// with the previous one ([`SrtpSession::update`]); returns the RTP
    /// packet's length. On error the bytes are unchanged.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        self.unprotect(Kind::Rtp, packet)
    }

    /// Unprotects an SRTCP packet as [`SrtpSession::unprotect_rtp`] does;
    /// returns the RTCP packet's length.
    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        self.unprotect(Kind::Rtcp, packet)
    }

    fn unprotect(&mut self, kind: Kind, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let run = |ctx: &mut SrtpContext, packet: &mut [u8]| match kind {
            Kind::Rtp => ctx.unprotect_rtp(packet),
            Kind::Rtcp => ctx.unprotect_rtcp(packet),
        };
        let result = match run(&mut self.rx, packet) {
            Ok(len) => {
                self.old_rx = None;
                Ok(len)
            }
            Err(error) => match &mut self.old_rx {
                Some((_, old)) => match run(old, packet) {
                    Ok(len) => {
                        self.stats.old_key_packets += 1;
                        Ok(len)
                    }
                    Err(_) => Err(error),
                },
                None => Err(error),
            },
        };
        match (result, kind) {
            (Ok(_), Kind::Rtp) => self.stats.rtp_unprotected += 1,
            (Ok(_), Kind::Rtcp) => self.stats.rtcp_unprotected += 1,
            (Err(e), _) => self.stats.count(e),
        }
        result
    }

    /// The counters so far.
    pub fn stats(&self) -> SrtpStats {
        self.stats
    }

    /// The rollover counter of `ssrc` in the transmit context.
    pub fn tx_roc(&self, ssrc: u32) -> Option<u32> {
        self.tx.roc(ssrc)
    }

    /// The rollover counter of `ssrc` in the (current) receive context.
    pub fn rx_roc(&self, ssrc: u32) -> Option<u32> {
        self.rx.roc(ssrc)
    }
}
