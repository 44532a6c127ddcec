//! SDES key exchange (RFC 4568): the `a=crypto` lines of an SRTP audio
//! stream, read and written.
//!
//! Direction of the keys: in SDES each side's `a=crypto` line carries the
//! master key and salt that side uses to protect the media it sends; the
//! other side uses it to unprotect that media (RFC 4568 §6.1, the SRTP
//! `inline` key parameter, with the offer/answer rules of §7.1; §7.1.2 has
//! the answer's master key differ from the offer's, so each direction has
//! its own key). So in [`SdesKeys`], `local` is the key in our own SDP (we
//! encrypt with it) and `remote` the key in the peer's SDP (we decrypt with
//! it). baresip's srtp module works the same way: the key in its own
//! `a=crypto` is its transmit key, the peer's its receive key.
//!
//! Syntax (RFC 4568 §9.1, §9.2):
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
//! key-params = "inline:" key-salt ["|" lifetime] ["|" mki-value ":" mki-length]
//! ```
//!
//! What this module accepts: one `inline:` key parameter whose key||salt is
//! base64 (RFC 4648 standard alphabet, padding optional) of exactly the
//! suite's length, an optional lifetime (decimal or `2^N`), no MKI, and the
//! session parameters `KDR=0` and `WSH=<n>` (n >= 64) only. Anything else
//! makes the line unusable; an unusable line is skipped, never an error by
//! itself. Work is bounded: at most [`MAX_CRYPTO_LINES`] lines of a stream
//! are looked at, and a line longer than [`MAX_CRYPTO_LINE_LEN`] is
//! skipped without being parsed.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// At most this many `a=crypto` lines of one m-line are read; the rest are
/// ignored (an offer has one line per suite, so a handful is plenty).
pub const MAX_CRYPTO_LINES: usize = 32;

/// An `a=crypto` value longer than this is unusable without being parsed.
pub const MAX_CRYPTO_LINE_LEN: usize = 512;

/// Length of the key material [`SdpSession::set_key_material`] and
/// [`SdpSession::rekey`] take: one master key||salt per suite, in the
/// order of [`SdesSuite::ALL`] (30 bytes for `AES_CM_128_HMAC_SHA1_80`,
/// 30 for `AES_CM_128_HMAC_SHA1_32`, 28 for `AEAD_AES_128_GCM`).
///
/// [`SdpSession::set_key_material`]: super::SdpSession::set_key_material
/// [`SdpSession::rekey`]: super::SdpSession::rekey
pub const SDES_KEY_MATERIAL_LEN: usize = 88;

/// Longest base64 key-salt we decode: 30 bytes are 40 characters.
const MAX_KEY_SALT_B64: usize = 44;

/// Decodes key-salt with or without `=` padding (libsrtp and baresip pad,
/// some stacks do not).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether calls use SRTP with SDES keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SrtpPolicy {
    /// Plain RTP only: offers carry no `a=crypto`, an offer whose only
    /// audio is `RTP/SAVP` is refused (488), `a=crypto` in an `RTP/AVP`
    /// offer is ignored.
    #[default]
    Off,
    /// SRTP when the peer does it (baresip's `mediaenc=srtp`): offers are
    /// `RTP/AVP` with `a=crypto` lines, and a plain answer or offer gives
    /// plain RTP. An `RTP/SAVP` offer is answered with SRTP.
    Optional,
    /// SRTP or no call (baresip's `mediaenc=srtp-mand`): offers are
    /// `RTP/SAVP` with `a=crypto` lines, and an offer or answer without a
    /// usable `a=crypto` fails.
    Mandatory,
}

impl SrtpPolicy {
    /// The policy's name: `off`, `optional` or `mandatory`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SrtpPolicy::Off => "off",
            SrtpPolicy::Optional => "optional",
            SrtpPolicy::Mandatory => "mandatory",
        }
    }
}

impl fmt::Display for SrtpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not `off`, `optional` or `mandatory`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SRTP policy {0:?} (expected off, optional or mandatory)")]
pub struct ParseSrtpPolicyError(pub String);

impl FromStr for SrtpPolicy {
    type Err = ParseSrtpPolicyError;

    /// Reads `off`, `optional` or `mandatory` (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [SrtpPolicy::Off, SrtpPolicy::Optional, SrtpPolicy::Mandatory]
            .into_iter()
            .find(|p| s.eq_ignore_ascii_case(p.as_str()))
            .ok_or_else(|| ParseSrtpPolicyError(s.to_owned()))
    }
}

/// An SRTP crypto suite we negotiate (RFC 4568 §6.2, RFC 7714 §12 for GCM).
/// The names mirror `siproam_media`'s `SrtpSuite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdesSuite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag.
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit tag.
    AesCm128HmacSha1_32,
    /// AES-128 GCM (RFC 7714), 16-byte tag.
    AeadAes128Gcm,
}

impl SdesSuite {
    /// Every suite, in our default order of preference: the 80-bit tag
    /// first because it is what every SDES peer (baresip, Asterisk,
    /// FreeSWITCH, libsrtp users) offers and accepts; GCM last because
    /// fewer peers do it.
    pub const ALL: [SdesSuite; 3] = [
        SdesSuite::AesCm128HmacSha1_80,
        SdesSuite::AesCm128HmacSha1_32,
        SdesSuite::AeadAes128Gcm,
    ];

    /// The suite's name in `a=crypto`: `AES_CM_128_HMAC_SHA1_80`,
    /// `AES_CM_128_HMAC_SHA1_32` or `AEAD_AES_128_GCM`.
    pub const fn name(self) -> &'static str {
        match self {
            SdesSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SdesSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SdesSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// Bytes of master key plus master salt in the `inline:` parameter:
    /// 16 + 14 = 30 for the AES-CM suites, 16 + 12 = 28 for GCM.
    pub const fn key_material_len(self) -> usize {
        match self {
            SdesSuite::AesCm128HmacSha1_80 | SdesSuite::AesCm128HmacSha1_32 => 30,
            SdesSuite::AeadAes128Gcm => 28,
        }
    }

    /// The suite called `name` (ASCII case ignored), if we do it.
    pub fn from_name(name: &str) -> Option<SdesSuite> {
        SdesSuite::ALL
            .into_iter()
            .find(|s| name.eq_ignore_ascii_case(s.name()))
    }

    /// Where this suite's key lies in the key material.
    const fn material_range(self) -> (usize, usize) {
        match self {
            SdesSuite::AesCm128HmacSha1_80 => (0, 30),
            SdesSuite::AesCm128HmacSha1_32 => (30, 60),
            SdesSuite::AeadAes128Gcm => (60, 88),
        }
    }
}

impl fmt::Display for SdesSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SRTP keys of a negotiated stream. `local` protects what we send,
/// `remote` is the peer's and unprotects what we receive (RFC 4568 §6.1:
/// each side's `a=crypto` carries its own sending key). Both are master
/// key followed by master salt, [`SdesSuite::key_material_len`] bytes.
/// `Debug` prints the suite and the lengths, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKeys {
    /// The suite both directions use.
    pub suite: SdesSuite,
    /// Our sending key||salt (the one in our SDP).
    pub local: Vec<u8>,
    /// The peer's sending key||salt (the one in the peer's SDP).
    pub remote: Vec<u8>,
}

impl fmt::Debug for SdesKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdesKeys")
            .field("suite", &self.suite)
            .field("local", &format_args!("<{} bytes>", self.local.len()))
            .field("remote", &format_args!("<{} bytes>", self.remote.len()))
            .finish()
    }
}

/// Our key per suite, from the driver's secure generator. `Debug` hides
/// the bytes.
#[derive(Clone)]
pub(super) struct KeyStore([u8; SDES_KEY_MATERIAL_LEN]);

impl KeyStore {
    pub(super) fn new(material: [u8; SDES_KEY_MATERIAL_LEN]) -> Self {
        KeyStore(material)
    }

    /// Our key||salt for `suite`.
    pub(super) fn key(&self, suite: SdesSuite) -> &[u8] {
        let (start, end) = suite.material_range();
        self.0.get(start..end).unwrap_or_default()
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyStore(<hidden>)")
    }
}

/// A usable `a=crypto` line of the peer's.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct CryptoLine {
    pub(super) tag: u32,
    pub(super) suite: SdesSuite,
    /// key||salt, exactly `suite.key_material_len()` bytes.
    pub(super) key: Vec<u8>,
}

impl fmt::Debug for CryptoLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoLine")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// The `a=crypto` lines of a media section: how many there were (up to
/// [`MAX_CRYPTO_LINES`]) and the usable ones, in order.
#[derive(Debug, Default)]
pub(super) struct CryptoLines {
    pub(super) present: usize,
    pub(super) usable: Vec<CryptoLine>,
}

/// Reads the `a=crypto` attributes of `media` (media level only: RFC 4568
/// §4 allows it nowhere else).
pub(super) fn crypto_lines(media: &sdp_types::Media) -> CryptoLines {
    let mut lines = CryptoLines::default();
    let values = media
        .attributes
        .iter()
        .filter(|a| a.attribute.trim().eq_ignore_ascii_case("crypto"))
        .take(MAX_CRYPTO_LINES);
    for attribute in values {
        lines.present += 1;
        if let Some(line) = attribute.value.as_deref().and_then(parse_crypto) {
            lines.usable.push(line);
        }
    }
    lines
}

/// Parses one `a=crypto` value; `None` when it is malformed or uses
/// anything we do not support.
pub(super) fn parse_crypto(value: &str) -> Option<CryptoLine> {
    if value.len() > MAX_CRYPTO_LINE_LEN {
        return None;
    }
    let mut fields = value.split_ascii_whitespace();
    let tag = fields.next()?;
    if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tag = tag.parse::<u32>().ok()?;
    let suite = SdesSuite::from_name(fields.next()?)?;
    let key = parse_key_params(fields.next()?, suite)?;
    if !fields.all(supported_session_param) {
        return None;
    }
    Some(CryptoLine { tag, suite, key })
}

/// `inline:<key||salt>[|lifetime]`, one key parameter, no MKI.
fn parse_key_params(params: &str, suite: SdesSuite) -> Option<Vec<u8>> {
    // Several key parameters (";"-separated) only make sense with MKIs.
    if params.contains(';') {
        return None;
    }
    let (method, info) = params.split_once(':')?;
    if !method.eq_ignore_ascii_case("inline") {
        return None;
    }
    let mut parts = info.split('|');
    let key_salt = parts.next()?;
    match (parts.next(), parts.next()) {
        (None, _) => {}
        // One more field: a lifetime, or an MKI (which has a colon).
        (Some(lifetime), None) if valid_lifetime(lifetime) => {}
        _ => return None,
    }
    if key_salt.is_empty() || key_salt.len() > MAX_KEY_SALT_B64 {
        return None;
    }
    let key = LENIENT.decode(key_salt).ok()?;
    (key.len() == suite.key_material_len()).then_some(key)
}

/// `2^N` (N <= 64) or a positive decimal number (RFC 4568 §6.1).
fn valid_lifetime(lifetime: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    match lifetime.strip_prefix("2^") {
        Some(exponent) => digits(exponent) && exponent.parse::<u32>().is_ok_and(|n| n <= 64),
        None => digits(lifetime) && lifetime.parse::<u64>().is_ok_and(|n| n > 0),
    }
}

/// The session parameters we can honour: `KDR=0` (no key derivation
/// rate, what we do anyway) and `WSH=<n>` with n >= 64 (a replay window
/// hint; ours is at least that). Everything else (`KDR` other than 0,
/// `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`, `UNAUTHENTICATED_SRTP`,
/// `FEC_ORDER`, `FEC_KEY`, unknown ones) makes the line unusable.
fn supported_session_param(param: &str) -> bool {
    let Some((name, value)) = param.split_once('=') else {
        return false;
    };
    let number = || {
        (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<u64>().ok())
            .flatten()
    };
    if name.eq_ignore_ascii_case("KDR") {
        number() == Some(0)
    } else if name.eq_ignore_ascii_case("WSH") {
        number().is_some_and(|n| n >= 64)
    } else {
        false
    }
}

/// The value of an `a=crypto` attribute of ours.
pub(super) fn crypto_value(tag: u32, suite: SdesSuite, key: &[u8]) -> String {
    format!("{tag} {} inline:{}", suite.name(), STANDARD.encode(key))
}

/// The tags of our offer's `a=crypto` lines: the suite in use (if any)
/// first with its tag, the others in `suites` order with the smallest
/// tags not taken, from 1.
pub(super) fn offer_tags(
    suites: &[SdesSuite],
    active: Option<(SdesSuite, u32)>,
) -> Vec<(u32, SdesSuite)> {
    let mut out: Vec<(u32, SdesSuite)> = Vec::with_capacity(suites.len());
    if let Some((suite, tag)) = active {
        if suites.contains(&suite) {
            out.push((tag, suite));
        }
    }
    let mut next = 1u32;
    for &suite in suites {
        if out.iter().any(|(_, s)| *s == suite) {
            continue;
        }
        while out.iter().any(|(t, _)| *t == next) {
            next += 1;
        }
        out.push((next, suite));
        next += 1;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn policy_and_suite_names() {
        assert_eq!("off".parse::<SrtpPolicy>(), Ok(SrtpPolicy::Off));
        assert_eq!("Optional".parse::<SrtpPolicy>(), Ok(SrtpPolicy::Optional));
        assert_eq!("mandatory".parse::<SrtpPolicy>(), Ok(SrtpPolicy::Mandatory));
        assert_eq!(
            "required".parse::<SrtpPolicy>(),
            Err(ParseSrtpPolicyError("required".into()))
        );
        assert_eq!(SrtpPolicy::default(), SrtpPolicy::Off);
        for suite in SdesSuite::ALL {
            assert_eq!(SdesSuite::from_name(suite.name()), Some(suite));
            let (start, end) = suite.material_range();
            assert_eq!(end - start, suite.key_material_len());
        }
        assert_eq!(
            SdesSuite::AeadAes128Gcm.material_range().1,
            SDES_KEY_MATERIAL_LEN
        );
        assert_eq!(SdesSuite::from_name("AES_256_CM_HMAC_SHA1_80"), None);
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let keys = SdesKeys {
            suite: SdesSuite::AesCm128HmacSha1_80,
            local: vec![0xAB; 30],
            remote: vec![0xCD; 30],
        };
        let shown = format!("{keys:?}");
        assert!(shown.contains("AesCm128HmacSha1_80"), "{shown}");
        assert!(shown.contains("<30 bytes>"), "{shown}");
        assert!(!shown.contains("171") && !shown.contains("205"), "{shown}");
        let store = format!("{:?}", KeyStore::new([7; SDES_KEY_MATERIAL_LEN]));
        assert!(!store.contains('7'), "{store}");
    }

    #[test]
    fn parses_the_forms_we_accept() {
        let key = b64(&[1; 30]);
        let line = parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}")).unwrap();
        assert_eq!(
            (line.tag, line.suite, line.key.clone()),
            (1, SdesSuite::AesCm128HmacSha1_80, vec![1; 30])
        );
        for lifetime in ["2^31", "2^20", "1048576"] {
            let v = format!("7 AES_CM_128_HMAC_SHA1_32 inline:{key}|{lifetime}");
            assert_eq!(parse_crypto(&v).unwrap().tag, 7, "{v}");
        }
        let v = format!("3  aes_cm_128_hmac_sha1_80   inline:{key} KDR=0 WSH=128");
        assert!(parse_crypto(&v).is_some(), "{v}");
        // GCM: 28 bytes, padded or not.
        let gcm = b64(&[2; 28]);
        assert!(gcm.ends_with('='));
        let v = format!("2 AEAD_AES_128_GCM inline:{gcm}");
        assert_eq!(parse_crypto(&v).unwrap().key, vec![2; 28]);
        let v = format!("2 AEAD_AES_128_GCM inline:{}", gcm.trim_end_matches('='));
        assert_eq!(parse_crypto(&v).unwrap().key, vec![2; 28]);
    }

    #[test]
    fn refuses_what_we_do_not_support() {
        let key = b64(&[1; 30]);
        let bad = [
            String::new(),
            "1".into(),
            format!("x AES_CM_128_HMAC_SHA1_80 inline:{key}"),
            format!("-1 AES_CM_128_HMAC_SHA1_80 inline:{key}"),
            format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{key}"),
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{key}"),
            format!("1 F8_128_HMAC_SHA1_80 inline:{key}"),
            "1 AES_CM_128_HMAC_SHA1_80".into(),
            format!("1 AES_CM_128_HMAC_SHA1_80 uri:{key}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 {key}"),
            // MKI, with and without a lifetime; two key parameters
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|1:4"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4;inline:{key}|2^20|2:4"),
            // bad lifetimes
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^99"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|0"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|"),
            // bad base64, wrong lengths
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!notbase64!!!!".into(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", b64(&[1; 29])),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", b64(&[1; 31])),
            format!("1 AEAD_AES_128_GCM inline:{key}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{}", b64(&[1; 300])),
            "1 AES_CM_128_HMAC_SHA1_80 inline:".into(),
            // session parameters
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNENCRYPTED_SRTP"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNENCRYPTED_SRTCP"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNAUTHENTICATED_SRTP"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} KDR=1"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} KDR="),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} FEC_ORDER=FEC_SRTP"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} WSH=10"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} -FOO=1"),
            // too long to look at
            format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{key} {}",
                "WSH=64 ".repeat(100)
            ),
        ];
        for value in bad {
            assert_eq!(parse_crypto(&value), None, "{value:?}");
        }
    }

    #[test]
    fn offer_tags_put_the_suite_in_use_first() {
        let all = SdesSuite::ALL;
        assert_eq!(
            offer_tags(&all, None),
            vec![
                (1, SdesSuite::AesCm128HmacSha1_80),
                (2, SdesSuite::AesCm128HmacSha1_32),
                (3, SdesSuite::AeadAes128Gcm)
            ]
        );
        assert_eq!(
            offer_tags(&all, Some((SdesSuite::AesCm128HmacSha1_32, 2))),
            vec![
                (2, SdesSuite::AesCm128HmacSha1_32),
                (1, SdesSuite::AesCm128HmacSha1_80),
                (3, SdesSuite::AeadAes128Gcm)
            ]
        );
        assert_eq!(
            offer_tags(&all, Some((SdesSuite::AeadAes128Gcm, 1))),
            vec![
                (1, SdesSuite::AeadAes128Gcm),
                (2, SdesSuite::AesCm128HmacSha1_80),
                (3, SdesSuite::AesCm128HmacSha1_32)
            ]
        );
        // A suite in use that we no longer configure is not offered.
        assert_eq!(
            offer_tags(
                &[SdesSuite::AesCm128HmacSha1_80],
                Some((SdesSuite::AeadAes128Gcm, 9))
            ),
            vec![(1, SdesSuite::AesCm128HmacSha1_80)]
        );
    }

    #[test]
    fn crypto_value_round_trips() {
        let value = crypto_value(4, SdesSuite::AeadAes128Gcm, &[9; 28]);
        assert!(value.starts_with("4 AEAD_AES_128_GCM inline:"), "{value}");
        let line = parse_crypto(&value).unwrap();
        assert_eq!(
            (line.tag, line.suite, line.key),
            (4, SdesSuite::AeadAes128Gcm, vec![9; 28])
        );
    }
}
