//! HTTP Digest access authentication as used by SIP.
//!
//! Implements RFC 3261 §22 (SIP's use of Digest), RFC 2617, RFC 7616 and
//! RFC 8760: the `MD5`, `MD5-sess`, `SHA-256`, `SHA-256-sess`, `SHA-512-256`
//! and `SHA-512-256-sess` algorithms, `qop=auth`, `qop=auth-int`, and the
//! RFC 2069 compatible form without `qop`. `userhash` and the extended
//! `username*` parameter are not supported.
//!
//! The module works on header *values*: the text after `WWW-Authenticate:`,
//! `Proxy-Authenticate:`, `Authorization:` or `Proxy-Authorization:`. It
//! never draws randomness and never reads a clock: the caller supplies the
//! client nonce (`cnonce`), the nonce count and the server nonce, and decides
//! itself whether a nonce is stale.
//!
//! * Client side: [`Challenge::parse`] a challenge, then [`respond`] with a
//!   [`ClientInput`] to get the credentials header value.
//! * Server side: print a challenge with [`ServerChallenge`], then
//!   [`Credentials::parse`] the answer and [`verify`] it against a
//!   [`Secret`] (a password or a precomputed HA1, see [`compute_ha1`]).
//!
//! ```
//! use siproam_sip::digest::{
//!     respond, verify, Algorithm, Challenge, ClientInput, Credentials, Qop, Secret,
//!     ServerChallenge,
//! };
//!
//! // Server: challenge a REGISTER.
//! let mut challenge = ServerChallenge::new("atlanta.example.com", "bm9uY2UtMQ");
//! challenge.algorithm = Algorithm::Sha256;
//! challenge.qop = &[Qop::Auth];
//! let www_authenticate = challenge.to_header_value()?;
//!
//! // Client: answer it.
//! let parsed = Challenge::parse(&www_authenticate)?;
//! let authorization = respond(
//!     &parsed,
//!     &ClientInput {
//!         username: "alice",
//!         password: "secret",
//!         method: "REGISTER",
//!         uri: "sip:atlanta.example.com",
//!         cnonce: "Y25vbmNl",
//!         nc: 1,
//!         body: b"",
//!     },
//! )?;
//!
//! // Server: check the answer; then check nonce freshness and `nc` replay.
//! let credentials = Credentials::parse(&authorization)?;
//! let verified = verify(&credentials, "REGISTER", Secret::Password("secret"), b"")?;
//! assert_eq!(verified.nonce, "bm9uY2UtMQ");
//! assert_eq!(verified.nc, Some(1));
//! # Ok::<(), siproam_sip::digest::DigestError>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

/// Most parameters accepted in one header value; more is rejected as
/// malformed (bounds the duplicate check on hostile input).
const MAX_PARAMS: usize = 64;

/// Errors from parsing, answering or verifying Digest authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The header value is not valid `scheme [auth-param *("," auth-param)]`
    /// syntax; `at` is the byte offset where parsing stopped.
    #[error("malformed authentication header value at byte {at}")]
    Malformed {
        /// Byte offset into the parsed value.
        at: usize,
    },
    /// A parameter name occurs twice (case-insensitively); `at` is the byte
    /// offset of the second occurrence.
    #[error("duplicate authentication parameter at byte {at}")]
    DuplicateParam {
        /// Byte offset into the parsed value.
        at: usize,
    },
    /// A parameter needed for the operation is absent (or, for a client
    /// input, empty).
    #[error("missing digest parameter `{0}`")]
    MissingParam(&'static str),
    /// A parameter is present but its value is not acceptable (bad `nc`
    /// syntax, control characters in a value to print, `userhash=true`...).
    #[error("invalid value for digest parameter `{0}`")]
    InvalidParam(&'static str),
    /// The scheme is not `Digest`.
    #[error("authentication scheme is not Digest")]
    UnsupportedScheme,
    /// The `algorithm` parameter names an algorithm this module does not know.
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    /// The challenge offers, or the credentials use, no known `qop`.
    #[error("unsupported digest qop")]
    UnsupportedQop,
    /// A precomputed HA1 is not lowercase or uppercase hex of the length the
    /// credentials' algorithm produces.
    #[error("precomputed HA1 does not fit the digest algorithm")]
    InvalidHa1,
    /// The credentials are well formed but the `response` does not match:
    /// wrong password, or a tampered parameter, method or body.
    #[error("digest response does not match")]
    BadResponse,
}

/// A Digest hash algorithm (the `algorithm` parameter).
///
/// The `-sess` variants hash the client nonce into HA1 (RFC 7616 §3.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// `MD5`, the default when the parameter is absent (RFC 2617, RFC 3261).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256`, i.e. SHA-512/256 (RFC 7616, RFC 8760).
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
}

#[derive(Clone, Copy)]
enum HashKind {
    Md5,
    Sha256,
    Sha512_256,
}

impl Algorithm {
    /// Parses an `algorithm` token, case-insensitively; `None` if unknown.
    pub fn from_token(token: &str) -> Option<Self> {
        const ALL: [Algorithm; 6] = [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ];
        ALL.into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(token))
    }

    /// The canonical token, as printed in header values (e.g. `SHA-256-sess`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
            Self::Sha512_256 => "SHA-512-256",
            Self::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Whether this is a `-sess` variant.
    pub const fn is_session(self) -> bool {
        matches!(
            self,
            Self::Md5Sess | Self::Sha256Sess | Self::Sha512_256Sess
        )
    }

    /// Length in characters of this algorithm's hex digests (HA1, response).
    pub const fn hex_len(self) -> usize {
        match self.hash_kind() {
            HashKind::Md5 => 32,
            HashKind::Sha256 | HashKind::Sha512_256 => 64,
        }
    }

    const fn hash_kind(self) -> HashKind {
        match self {
            Self::Md5 | Self::Md5Sess => HashKind::Md5,
            Self::Sha256 | Self::Sha256Sess => HashKind::Sha256,
            Self::Sha512_256 | Self::Sha512_256Sess => HashKind::Sha512_256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quality of protection (the `qop` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: authentication of method and request-URI.
    Auth,
    /// `auth-int`: `auth` plus integrity of the message body.
    AuthInt,
}

impl Qop {
    /// Parses a `qop` token, case-insensitively; `None` if unknown.
    pub fn from_token(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("auth") {
            Some(Self::Auth)
        } else if token.eq_ignore_ascii_case("auth-int") {
            Some(Self::AuthInt)
        } else {
            None
        }
    }

    /// The token as printed in header values.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }
}

impl fmt::Display for Qop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Generic `scheme auth-param, ...` parsing
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Param<'a> {
    name: &'a str,
    value: Cow<'a, str>,
    quoted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthValue<'a> {
    scheme: &'a str,
    token68: Option<&'a str>,
    params: Vec<Param<'a>>,
}

/// RFC 3261 `token` and RFC 7230 `tchar` characters (their union).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Characters allowed unescaped inside a quoted string.
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || b >= 0x80 || ((0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Characters allowed after a backslash. Stricter than RFC 3261 (no control
/// characters but HTAB), so parsed values can always be printed back.
fn is_quoted_pair_char(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b)
}

fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

struct Cursor<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn malformed(&self) -> DigestError {
        DigestError::Malformed { at: self.pos }
    }

    /// Skips whitespace; tells whether any was skipped.
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(crate::chars::is_lws) {
            self.pos += 1;
        }
        self.pos != start
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if start == self.pos {
            None
        } else {
            self.src.get(start..self.pos)
        }
    }

    /// Parses a quoted string; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<Cow<'a, str>, DigestError> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if is_quoted_pair_char(b) => self.pos += 1,
                        _ => return Err(self.malformed()),
                    }
                }
                Some(b) if is_qdtext(b) => self.pos += 1,
                _ => return Err(self.malformed()),
            }
        }
        let raw = self
            .src
            .get(start..self.pos)
            .ok_or_else(|| self.malformed())?;
        self.pos += 1;
        Ok(if escaped {
            Cow::Owned(crate::chars::unescape_quoted_pairs(raw))
        } else {
            Cow::Borrowed(raw)
        })
    }
}

fn parse_params<'a>(cur: &mut Cursor<'a>) -> Result<Vec<Param<'a>>, DigestError> {
    let mut params: Vec<Param<'a>> = Vec::new();
    loop {
        cur.skip_ws();
        match cur.peek() {
            None => break,
            // Empty list elements are allowed (RFC 7230 §7).
            Some(b',') => {
                cur.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name_at = cur.pos;
        let name = cur.token().ok_or_else(|| cur.malformed())?;
        cur.skip_ws();
        if cur.peek() != Some(b'=') {
            return Err(cur.malformed());
        }
        cur.pos += 1;
        cur.skip_ws();
        let (value, quoted) = if cur.peek() == Some(b'"') {
            (cur.quoted()?, true)
        } else {
            let token = cur.token().ok_or_else(|| cur.malformed())?;
            (Cow::Borrowed(token), false)
        };
        if params.iter().any(|p| p.name.eq_ignore_ascii_case(name)) {
            return Err(DigestError::DuplicateParam { at: name_at });
        }
        if params.len() >= MAX_PARAMS {
            return Err(DigestError::Malformed { at: name_at });
        }
        params.push(Param {
            name,
            value,
            quoted,
        });
        cur.skip_ws();
        match cur.peek() {
            None => break,
            Some(b',') => cur.pos += 1,
            Some(_) => return Err(cur.malformed()),
        }
    }
    Ok(params)
}

impl<'a> AuthValue<'a> {
    fn parse(input: &'a str) -> Result<Self, DigestError> {
        let mut cur = Cursor { src: input, pos: 0 };
        cur.skip_ws();
        let scheme = cur.token().ok_or_else(|| cur.malformed())?;
        let had_ws = cur.skip_ws();
        let mut value = AuthValue {
            scheme,
            token68: None,
            params: Vec::new(),
        };
        if cur.peek().is_none() {
            return Ok(value);
        }
        if !had_ws {
            return Err(cur.malformed());
        }
        let rest_at = cur.pos;
        match parse_params(&mut cur) {
            Ok(params) => {
                value.params = params;
                Ok(value)
            }
            Err(err) => {
                // Other schemes (e.g. `Basic`) may carry a token68 instead.
                if !value.is_digest() {
                    let rest = input
                        .get(rest_at..)
                        .map(|r| r.trim_end_matches([' ', '\t', '\r', '\n']));
                    if let Some(rest) = rest.filter(|r| is_token68(r)) {
                        value.token68 = Some(rest);
                        return Ok(value);
                    }
                }
                Err(err)
            }
        }
    }

    fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("Digest")
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_ref())
    }

    fn params(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.params.iter().map(|p| (p.name, p.value.as_ref()))
    }

    fn algorithm(&self) -> Result<Algorithm, DigestError> {
        match self.get("algorithm") {
            None => Ok(Algorithm::Md5),
            Some(token) => Algorithm::from_token(token.trim_matches([' ', '\t']))
                .ok_or(DigestError::UnsupportedAlgorithm),
        }
    }
}

impl fmt::Display for AuthValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme)?;
        if let Some(token68) = self.token68 {
            f.write_str(" ")?;
            f.write_str(token68)?;
        }
        for (i, p) in self.params.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            f.write_str(p.name)?;
            f.write_str("=")?;
            if p.quoted {
                f.write_str("\"")?;
                for c in p.value.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    fmt::Write::write_char(f, c)?;
                }
                f.write_str("\"")?;
            } else {
                f.write_str(&p.value)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Challenge
// ---------------------------------------------------------------------------

/// A parsed `WWW-Authenticate` / `Proxy-Authenticate` header value,
/// borrowing from the input.
///
/// Any scheme parses (so a server or proxy can inspect and answer it), but
/// [`respond`] only accepts `Digest`. Parameter names are matched
/// case-insensitively; unknown parameters are kept and reachable through
/// [`Challenge::param`]. Quoted values are unescaped, copying only when they
/// contain backslash escapes. [`fmt::Display`] prints the value back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge<'a> {
    inner: AuthValue<'a>,
}

impl<'a> Challenge<'a> {
    /// Parses a challenge header value such as
    /// `Digest realm="x", nonce="y", algorithm=MD5, qop="auth"`.
    ///
    /// Only syntax is checked here; missing or unknown digest parameters are
    /// reported by the accessors and by [`respond`].
    pub fn parse(value: &'a str) -> Result<Self, DigestError> {
        AuthValue::parse(value).map(|inner| Self { inner })
    }

    /// The authentication scheme as written (e.g. `Digest`, `Basic`).
    pub fn scheme(&self) -> &'a str {
        self.inner.scheme
    }

    /// Whether the scheme is `Digest` (case-insensitive).
    pub fn is_digest(&self) -> bool {
        self.inner.is_digest()
    }

    /// The token68 of a non-Digest scheme (e.g. `Negotiate abc==`), if any.
    pub fn token68(&self) -> Option<&'a str> {
        self.inner.token68
    }

    /// The (unescaped) value of a parameter, by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.inner.get(name)
    }

    /// All parameters as `(name, unescaped value)`, in input order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.inner.params()
    }

    /// The `realm` parameter.
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    /// The `nonce` parameter.
    pub fn nonce(&self) -> Option<&str> {
        self.param("nonce")
    }

    /// The `opaque` parameter.
    pub fn opaque(&self) -> Option<&str> {
        self.param("opaque")
    }

    /// The `domain` parameter (a space-separated URI list), unsplit.
    pub fn domain(&self) -> Option<&str> {
        self.param("domain")
    }

    /// The `algorithm` parameter: [`Algorithm::Md5`] when absent,
    /// [`DigestError::UnsupportedAlgorithm`] when unknown.
    pub fn algorithm(&self) -> Result<Algorithm, DigestError> {
        self.inner.algorithm()
    }

    /// The comma-separated tokens of the `qop` parameter, trimmed, unknown
    /// ones included; empty when the parameter is absent.
    pub fn qop_options(&self) -> impl Iterator<Item = &str> + '_ {
        crate::headers::tokens(self.param("qop").unwrap_or(""))
    }

    /// The `qop` a client should use: `auth` if offered, else `auth-int`;
    /// `None` when the challenge has no `qop` parameter (RFC 2069 mode);
    /// [`DigestError::UnsupportedQop`] when it offers neither.
    pub fn preferred_qop(&self) -> Result<Option<Qop>, DigestError> {
        if self.param("qop").is_none() {
            return Ok(None);
        }
        let mut auth_int = false;
        for option in self.qop_options() {
            match Qop::from_token(option) {
                Some(Qop::Auth) => return Ok(Some(Qop::Auth)),
                Some(Qop::AuthInt) => auth_int = true,
                None => {}
            }
        }
        if auth_int {
            Ok(Some(Qop::AuthInt))
        } else {
            Err(DigestError::UnsupportedQop)
        }
    }

    /// Whether `stale` is `true` (case-insensitive); `false` when absent.
    pub fn stale(&self) -> bool {
        self.param("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"))
    }
}

impl fmt::Display for Challenge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

/// A parsed `Authorization` / `Proxy-Authorization` header value, borrowing
/// from the input.
///
/// Any scheme parses; [`verify`] only accepts `Digest`. The string accessors
/// return the unescaped parameter values; the typed ones validate.
/// [`fmt::Display`] prints the value back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    inner: AuthValue<'a>,
}

impl<'a> Credentials<'a> {
    /// Parses a credentials header value such as
    /// `Digest username="bob", realm="x", nonce="y", uri="sip:x", response="..."`.
    ///
    /// Only syntax is checked here; [`verify`] checks the digest parameters.
    pub fn parse(value: &'a str) -> Result<Self, DigestError> {
        AuthValue::parse(value).map(|inner| Self { inner })
    }

    /// The authentication scheme as written.
    pub fn scheme(&self) -> &'a str {
        self.inner.scheme
    }

    /// Whether the scheme is `Digest` (case-insensitive).
    pub fn is_digest(&self) -> bool {
        self.inner.is_digest()
    }

    /// The token68 of a non-Digest scheme (e.g. `Basic QWxhZGRpbg==`), if any.
    pub fn token68(&self) -> Option<&'a str> {
        self.inner.token68
    }

    /// The (unescaped) value of a parameter, by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.inner.get(name)
    }

    /// All parameters as `(name, unescaped value)`, in input order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.inner.params()
    }

    /// The `username` parameter.
    pub fn username(&self) -> Option<&str> {
        self.param("username")
    }

    /// The `realm` parameter.
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    /// The `nonce` parameter.
    pub fn nonce(&self) -> Option<&str> {
        self.param("nonce")
    }

    /// The `uri` parameter (the digest-uri, to compare with the Request-URI).
    pub fn uri(&self) -> Option<&str> {
        self.param("uri")
    }

    /// The `response` parameter (the request digest, in hex).
    pub fn response(&self) -> Option<&str> {
        self.param("response")
    }

    /// The `cnonce` parameter.
    pub fn cnonce(&self) -> Option<&str> {
        self.param("cnonce")
    }

    /// The `opaque` parameter.
    pub fn opaque(&self) -> Option<&str> {
        self.param("opaque")
    }

    /// The `algorithm` parameter: [`Algorithm::Md5`] when absent,
    /// [`DigestError::UnsupportedAlgorithm`] when unknown.
    pub fn algorithm(&self) -> Result<Algorithm, DigestError> {
        self.inner.algorithm()
    }

    /// The `qop` parameter: `None` when absent (RFC 2069 mode),
    /// [`DigestError::UnsupportedQop`] when unknown.
    pub fn qop(&self) -> Result<Option<Qop>, DigestError> {
        match self.param("qop") {
            None => Ok(None),
            Some(token) => Qop::from_token(token.trim_matches([' ', '\t']))
                .map(Some)
                .ok_or(DigestError::UnsupportedQop),
        }
    }

    /// The `nc` parameter: `None` when absent,
    /// [`DigestError::InvalidParam`] unless exactly 8 hex digits.
    pub fn nc(&self) -> Result<Option<u32>, DigestError> {
        match self.param("nc") {
            None => Ok(None),
            Some(raw) => parse_nc(raw).map(Some),
        }
    }
}

impl fmt::Display for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

fn parse_nc(raw: &str) -> Result<u32, DigestError> {
    if raw.len() != 8 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DigestError::InvalidParam("nc"));
    }
    u32::from_str_radix(raw, 16).map_err(|_| DigestError::InvalidParam("nc"))
}

// ---------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------

fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            let c = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + (nibble - 10)
            };
            out.push(char::from(c));
        }
    }
}

fn digest_hex<D: Digest>(parts: &[&[u8]]) -> String {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(digest.len() * 2);
    push_hex(&mut out, &digest);
    out
}

/// Lowercase hex of `H(part1 ":" part2 ":" ...)`.
fn h_bytes(algorithm: Algorithm, parts: &[&[u8]]) -> String {
    match algorithm.hash_kind() {
        HashKind::Md5 => digest_hex::<Md5>(parts),
        HashKind::Sha256 => digest_hex::<Sha256>(parts),
        HashKind::Sha512_256 => digest_hex::<Sha512_256>(parts),
    }
}

fn h(algorithm: Algorithm, parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    h_bytes(algorithm, &bytes)
}

/// Computes the base HA1, `H(username ":" realm ":" password)`, in
/// lowercase hex, with the hash of `algorithm` (a `-sess` variant hashes
/// like its base algorithm: the session part is applied per request).
///
/// A server can store this instead of the password and pass it to
/// [`verify`] as [`Secret::Ha1`]; it is valid for one realm and one hash.
pub fn compute_ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    h(algorithm, &[username, realm, password])
}

struct RequestDigest<'x> {
    algorithm: Algorithm,
    /// Base HA1 (lowercase hex).
    ha1: &'x str,
    nonce: &'x str,
    /// `(qop, nc as sent, cnonce)`.
    qop: Option<(Qop, &'x str, &'x str)>,
    /// Needed for `-sess` algorithms.
    cnonce: &'x str,
    method: &'x str,
    uri: &'x str,
    body: &'x [u8],
}

impl RequestDigest<'_> {
    fn response(&self) -> String {
        let alg = self.algorithm;
        let session_ha1;
        let ha1 = if alg.is_session() {
            session_ha1 = h(alg, &[self.ha1, self.nonce, self.cnonce]);
            session_ha1.as_str()
        } else {
            self.ha1
        };
        let ha2 = match self.qop {
            Some((Qop::AuthInt, _, _)) => {
                let body_hash = h_bytes(alg, &[self.body]);
                h(alg, &[self.method, self.uri, &body_hash])
            }
            _ => h(alg, &[self.method, self.uri]),
        };
        match self.qop {
            Some((qop, nc, cnonce)) => h(alg, &[ha1, self.nonce, nc, cnonce, qop.as_str(), &ha2]),
            None => h(alg, &[ha1, self.nonce, &ha2]),
        }
    }
}

/// Compares a computed lowercase hex digest with a received one,
/// ASCII-case-insensitively, without early exit on the first difference.
fn hex_matches(expected: &str, received: &str) -> bool {
    if expected.len() != received.len() {
        return false;
    }
    let diff = expected
        .bytes()
        .zip(received.bytes())
        .fold(0u8, |acc, (e, r)| acc | (e ^ r.to_ascii_lowercase()));
    diff == 0
}

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

/// Rejects values that cannot be printed inside a quoted string (control
/// characters other than HTAB, including CR and LF).
fn check_printable(value: &str, name: &'static str) -> Result<(), DigestError> {
    if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
        Err(DigestError::InvalidParam(name))
    } else {
        Ok(())
    }
}

fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn push_param_quoted(out: &mut String, name: &str, value: &str) {
    out.push_str(", ");
    out.push_str(name);
    out.push('=');
    push_quoted(out, value);
}

fn push_param_token(out: &mut String, name: &str, value: &str) {
    out.push_str(", ");
    out.push_str(name);
    out.push('=');
    out.push_str(value);
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// A challenge to send in `WWW-Authenticate` (401) or `Proxy-Authenticate`
/// (407). Build with [`ServerChallenge::new`] and adjust the fields.
///
/// The nonce and opaque are the caller's: this module keeps no state and
/// draws no randomness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerChallenge<'a> {
    /// The `realm` (quoted).
    pub realm: &'a str,
    /// The `nonce` (quoted).
    pub nonce: &'a str,
    /// The `opaque` (quoted), if any.
    pub opaque: Option<&'a str>,
    /// The `domain` (quoted, a space-separated URI list), if any.
    pub domain: Option<&'a str>,
    /// The `algorithm` (unquoted; always printed).
    pub algorithm: Algorithm,
    /// The offered `qop` options (printed quoted and comma-separated); empty
    /// omits the parameter (RFC 2069 compatible challenge).
    pub qop: &'a [Qop],
    /// Prints `stale=TRUE` when set: the previous nonce was stale but the
    /// response was right, so the client may retry without asking the user.
    pub stale: bool,
}

impl<'a> ServerChallenge<'a> {
    /// A challenge for `realm` and `nonce` with `algorithm=MD5`,
    /// `qop="auth"`, no opaque, no domain, not stale.
    pub fn new(realm: &'a str, nonce: &'a str) -> Self {
        Self {
            realm,
            nonce,
            opaque: None,
            domain: None,
            algorithm: Algorithm::Md5,
            qop: &[Qop::Auth],
            stale: false,
        }
    }

    /// Prints the header value, e.g.
    /// `Digest realm="r", nonce="n", algorithm=MD5, qop="auth"`.
    ///
    /// Fails with [`DigestError::InvalidParam`] if a quoted value holds a
    /// control character (other than HTAB) that cannot be quoted.
    pub fn to_header_value(&self) -> Result<String, DigestError> {
        check_printable(self.realm, "realm")?;
        check_printable(self.nonce, "nonce")?;
        if let Some(opaque) = self.opaque {
            check_printable(opaque, "opaque")?;
        }
        if let Some(domain) = self.domain {
            check_printable(domain, "domain")?;
        }
        let mut out = String::with_capacity(96 + self.realm.len() + self.nonce.len());
        out.push_str("Digest realm=");
        push_quoted(&mut out, self.realm);
        if let Some(domain) = self.domain {
            push_param_quoted(&mut out, "domain", domain);
        }
        push_param_quoted(&mut out, "nonce", self.nonce);
        if let Some(opaque) = self.opaque {
            push_param_quoted(&mut out, "opaque", opaque);
        }
        if self.stale {
            push_param_token(&mut out, "stale", "TRUE");
        }
        push_param_token(&mut out, "algorithm", self.algorithm.as_str());
        if !self.qop.is_empty() {
            out.push_str(", qop=\"");
            for (i, qop) in self.qop.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(qop.as_str());
            }
            out.push('"');
        }
        Ok(out)
    }
}

/// The server's secret for one user: the password, or a precomputed HA1.
#[derive(Clone, Copy)]
pub enum Secret<'a> {
    /// The plain password.
    Password(&'a str),
    /// `H(username ":" realm ":" password)` in hex (see [`compute_ha1`]),
    /// computed with the hash of the credentials' algorithm; never the
    /// `-sess` form.
    Ha1(&'a str),
}

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(<redacted>)"),
            Self::Ha1(_) => f.write_str("Ha1(<redacted>)"),
        }
    }
}

/// What a successful [`verify`] vouches for, for the caller's nonce
/// freshness and replay checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified<'c> {
    /// The algorithm the credentials used.
    pub algorithm: Algorithm,
    /// The `qop` used; `None` in RFC 2069 mode.
    pub qop: Option<Qop>,
    /// The server nonce the client answered: the caller checks it is one it
    /// issued and still fresh (else re-challenge with `stale=TRUE`).
    pub nonce: &'c str,
    /// The nonce count, when a `qop` was used: the caller checks it grows.
    pub nc: Option<u32>,
    /// The client nonce, when a `qop` was used (always so for `-sess`).
    pub cnonce: Option<&'c str>,
}

/// Verifies received Digest credentials against the user's secret.
///
/// `method` is the request's method and `body` its body (used only for
/// `qop=auth-int`). Returns [`DigestError::BadResponse`] when the response
/// does not match (wrong password, or tampered parameters); the
/// `Unsupported*` errors when the client chose something this module does
/// not implement; `MissingParam` / `InvalidParam` for incomplete
/// credentials.
///
/// This checks the digest only. The caller still has to look the user up by
/// [`Credentials::username`] and [`Credentials::realm`] (and check the realm
/// is its own), check that [`Verified::nonce`] is a fresh nonce it issued
/// (and the `opaque` echoes its own), that [`Verified::nc`] was not seen
/// before, and that [`Credentials::uri`] designates the Request-URI.
pub fn verify<'c>(
    credentials: &'c Credentials<'_>,
    method: &str,
    secret: Secret<'_>,
    body: &[u8],
) -> Result<Verified<'c>, DigestError> {
    if !credentials.is_digest() {
        return Err(DigestError::UnsupportedScheme);
    }
    let algorithm = credentials.algorithm()?;
    let username = credentials
        .username()
        .ok_or(DigestError::MissingParam("username"))?;
    let realm = credentials
        .realm()
        .ok_or(DigestError::MissingParam("realm"))?;
    let nonce = credentials
        .nonce()
        .ok_or(DigestError::MissingParam("nonce"))?;
    let uri = credentials.uri().ok_or(DigestError::MissingParam("uri"))?;
    let response = credentials
        .response()
        .ok_or(DigestError::MissingParam("response"))?;
    if credentials
        .param("userhash")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(DigestError::InvalidParam("userhash"));
    }
    let qop = credentials.qop()?;
    let cnonce = credentials.cnonce();
    if algorithm.is_session() && qop.is_none() {
        return Err(DigestError::MissingParam("qop"));
    }
    let (qop_parts, nc) = match qop {
        None => (None, None),
        Some(qop) => {
            let raw_nc = credentials
                .param("nc")
                .ok_or(DigestError::MissingParam("nc"))?;
            let nc = parse_nc(raw_nc)?;
            let cnonce = cnonce.ok_or(DigestError::MissingParam("cnonce"))?;
            (Some((qop, raw_nc, cnonce)), Some(nc))
        }
    };
    let ha1 = match secret {
        Secret::Password(password) => compute_ha1(algorithm, username, realm, password),
        Secret::Ha1(hex) => {
            if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DigestError::InvalidHa1);
            }
            hex.to_ascii_lowercase()
        }
    };
    let expected = RequestDigest {
        algorithm,
        ha1: &ha1,
        nonce,
        qop: qop_parts,
        cnonce: cnonce.unwrap_or(""),
        method,
        uri,
        body,
    }
    .response();
    if !hex_matches(&expected, response) {
        return Err(DigestError::BadResponse);
    }
    Ok(Verified {
        algorithm,
        qop,
        nonce,
        nc,
        cnonce: if qop.is_some() { cnonce } else { None },
    })
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// What a client needs besides the challenge to build credentials.
///
/// `cnonce` and `nc` are inputs: the caller draws the client nonce and
/// counts how many requests it sent with the same server nonce (starting
/// at 1).
#[derive(Clone, Copy, Default)]
pub struct ClientInput<'a> {
    /// The user name (printed quoted in `username`).
    pub username: &'a str,
    /// The password (never printed).
    pub password: &'a str,
    /// The request method, e.g. `REGISTER`.
    pub method: &'a str,
    /// The digest-uri: the Request-URI of the request, e.g.
    /// `sip:registrar.example.com`.
    pub uri: &'a str,
    /// The client nonce; used only when the challenge offers a `qop`.
    pub cnonce: &'a str,
    /// The nonce count, printed as 8 hex digits; used only with a `qop`.
    pub nc: u32,
    /// The request body; hashed only for `qop=auth-int`.
    pub body: &'a [u8],
}

impl fmt::Debug for ClientInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInput")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("cnonce", &self.cnonce)
            .field("nc", &self.nc)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Builds the `Authorization` / `Proxy-Authorization` header value that
/// answers a Digest `challenge`.
///
/// Uses `qop=auth` when offered, else `qop=auth-int`, else (no `qop` in the
/// challenge) the RFC 2069 form without `qop`, `nc` and `cnonce`. Prints
/// `username`, `realm`, `nonce`, `uri`, `response` and `cnonce`/`opaque`
/// quoted; `algorithm`, `qop` and `nc` (8 hex digits) unquoted.
///
/// Errors: [`DigestError::UnsupportedScheme`] for a non-Digest challenge,
/// [`DigestError::MissingParam`] without `realm` or `nonce` (or an empty
/// `cnonce` when one is needed), [`DigestError::UnsupportedAlgorithm`],
/// [`DigestError::UnsupportedQop`], and [`DigestError::InvalidParam`] when
/// `username`, `uri` or `cnonce` holds a control character.
pub fn respond(challenge: &Challenge<'_>, input: &ClientInput<'_>) -> Result<String, DigestError> {
    if !challenge.is_digest() {
        return Err(DigestError::UnsupportedScheme);
    }
    let realm = challenge
        .realm()
        .ok_or(DigestError::MissingParam("realm"))?;
    let nonce = challenge
        .nonce()
        .ok_or(DigestError::MissingParam("nonce"))?;
    let algorithm = challenge.algorithm()?;
    let qop = challenge.preferred_qop()?;
    if algorithm.is_session() && qop.is_none() {
        // RFC 2617 forbids a cnonce without qop, and -sess needs one.
        return Err(DigestError::MissingParam("qop"));
    }
    check_printable(input.username, "username")?;
    check_printable(input.uri, "uri")?;
    if qop.is_some() {
        if input.cnonce.is_empty() {
            return Err(DigestError::MissingParam("cnonce"));
        }
        check_printable(input.cnonce, "cnonce")?;
    }
    let mut nc = String::with_capacity(8);
    push_hex(&mut nc, &input.nc.to_be_bytes());
    let ha1 = compute_ha1(algorithm, input.username, realm, input.password);
    let response = RequestDigest {
        algorithm,
        ha1: &ha1,
        nonce,
        qop: qop.map(|q| (q, nc.as_str(), input.cnonce)),
        cnonce: input.cnonce,
        method: input.method,
        uri: input.uri,
        body: input.body,
    }
    .response();

    let mut out = String::with_capacity(
        160 + input.username.len() + realm.len() + nonce.len() + input.uri.len(),
    );
    out.push_str("Digest username=");
    push_quoted(&mut out, input.username);
    push_param_quoted(&mut out, "realm", realm);
    push_param_quoted(&mut out, "nonce", nonce);
    push_param_quoted(&mut out, "uri", input.uri);
    push_param_quoted(&mut out, "response", &response);
    push_param_token(&mut out, "algorithm", algorithm.as_str());
    if let Some(qop) = qop {
        push_param_quoted(&mut out, "cnonce", input.cnonce);
        push_param_token(&mut out, "qop", qop.as_str());
        push_param_token(&mut out, "nc", &nc);
    }
    if let Some(opaque) = challenge.opaque() {
        push_param_quoted(&mut out, "opaque", opaque);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1.
    const R7616_REALM: &str = "http-auth@example.org";
    const R7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const R7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const R7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn rfc7616_challenge(algorithm: &str) -> String {
        format!(
            "Digest\r\n    realm=\"{R7616_REALM}\",\r\n    qop=\"auth, auth-int\",\r\n    \
             algorithm={algorithm},\r\n    nonce=\"{R7616_NONCE}\",\r\n    opaque=\"{R7616_OPAQUE}\""
        )
    }

    fn rfc7616_input(body: &[u8]) -> ClientInput<'_> {
        ClientInput {
            username: "Mufasa",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
            cnonce: R7616_CNONCE,
            nc: 1,
            body,
        }
    }

    /// Answers the RFC 7616 challenge with `algorithm` and the given offered
    /// qops, checks the response, and verifies it back on the server side.
    fn check_rfc7616(algorithm: &str, qop_offer: &str, body: &[u8], expected: &str) {
        let value = rfc7616_challenge(algorithm).replace("auth, auth-int", qop_offer);
        let challenge = Challenge::parse(&value).unwrap();
        let header = respond(&challenge, &rfc7616_input(body)).unwrap();
        let creds = Credentials::parse(&header).unwrap();
        assert_eq!(creds.response(), Some(expected), "{algorithm} {qop_offer}");
        assert_eq!(creds.algorithm().unwrap().as_str(), algorithm);
        let ok = verify(&creds, "GET", Secret::Password("Circle of Life"), body).unwrap();
        assert_eq!(ok.nonce, R7616_NONCE);
        assert_eq!(ok.nc, Some(1));
        assert_eq!(ok.cnonce, Some(R7616_CNONCE));
        assert_eq!(
            verify(&creds, "GET", Secret::Password("Circle Of Life"), body),
            Err(DigestError::BadResponse)
        );
    }

    #[test]
    fn rfc7616_md5_example() {
        let value = rfc7616_challenge("MD5");
        let challenge = Challenge::parse(&value).unwrap();
        let header = respond(&challenge, &rfc7616_input(b"")).unwrap();
        assert_eq!(
            header,
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", uri=\"/dir/index.html\", \
             response=\"8ca523f5e9506fed4657c9700eebdbec\", algorithm=MD5, \
             cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, nc=00000001, \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        );
        check_rfc7616(
            "MD5",
            "auth, auth-int",
            b"",
            "8ca523f5e9506fed4657c9700eebdbec",
        );
    }

    #[test]
    fn rfc7616_sha256_example() {
        check_rfc7616(
            "SHA-256",
            "auth, auth-int",
            b"",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        );
        // The RFC's own Authorization header, verified as received.
        let received = "Digest username=\"Mufasa\",\n realm=\"http-auth@example.org\",\n \
            uri=\"/dir/index.html\",\n algorithm=SHA-256,\n \
            nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\n nc=00000001,\n \
            cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\",\n qop=auth,\n \
            response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\",\n \
            opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let creds = Credentials::parse(received).unwrap();
        assert_eq!(creds.opaque(), Some(R7616_OPAQUE));
        let ok = verify(&creds, "GET", Secret::Password("Circle of Life"), b"").unwrap();
        assert_eq!(ok.algorithm, Algorithm::Sha256);
        assert_eq!(ok.qop, Some(Qop::Auth));
    }

    // The remaining RFC 7616 inputs were cross-computed with Python's hashlib
    // (SHA-512/256, -sess, auth-int); the RFC prints no vector for them.
    #[test]
    fn other_algorithms_and_auth_int() {
        check_rfc7616(
            "SHA-512-256",
            "auth",
            b"",
            "430d05014cecc49cab6fbe03176d41a1da86cbfe24a16580e22aaad928d960d0",
        );
        check_rfc7616("MD5-sess", "auth", b"", "e783283f46242139c486a698fec7211d");
        check_rfc7616(
            "SHA-256-sess",
            "auth",
            b"",
            "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7",
        );
        check_rfc7616(
            "SHA-512-256-sess",
            "auth",
            b"",
            "3f2a34f923c38b0fb26dce2fdfc2ce326c23cecf86fbb1444f3e51fbbc2cb92e",
        );
        let body = b"v=0\r\n";
        check_rfc7616("MD5", "auth-int", body, "d1b8e2ac3f6782372de4bf3d8735b406");
        check_rfc7616(
            "SHA-256",
            "auth-int",
            body,
            "385d2de062660ced11876f42d9497c69cacf5caaf3d951dd424aee9f7157d563",
        );
        check_rfc7616(
            "SHA-512-256",
            "auth-int",
            body,
            "5e69357dfa951887c95e88aae45b1f7f834aeba94f85648b86d532e82afdb589",
        );
        check_rfc7616("MD5", "auth-int", b"", "8804a53d3640a40a4f73cea12c5ba451");
        // auth-int protects the body.
        let value = rfc7616_challenge("MD5").replace("auth, auth-int", "auth-int");
        let header = respond(&Challenge::parse(&value).unwrap(), &rfc7616_input(body)).unwrap();
        assert!(header.contains(", qop=auth-int, "), "{header}");
        let creds = Credentials::parse(&header).unwrap();
        assert_eq!(
            verify(
                &creds,
                "GET",
                Secret::Password("Circle of Life"),
                b"v=1\r\n"
            ),
            Err(DigestError::BadResponse)
        );
    }

    // RFC 2617 §3.5.
    const R2617_CHALLENGE: &str = "Digest\n                 realm=\"testrealm@host.com\",\n                 \
        qop=\"auth,auth-int\",\n                 nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\n                 \
        opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
    const R2617_CREDENTIALS: &str = "Digest username=\"Mufasa\",\n                 \
        realm=\"testrealm@host.com\",\n                 nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\n                 \
        uri=\"/dir/index.html\",\n                 qop=auth,\n                 nc=00000001,\n                 \
        cnonce=\"0a4f113b\",\n                 response=\"6629fae49393a05397450978507c4ef1\",\n                 \
        opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

    fn rfc2617_input() -> ClientInput<'static> {
        ClientInput {
            username: "Mufasa",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            cnonce: "0a4f113b",
            nc: 1,
            body: b"",
        }
    }

    #[test]
    fn rfc2617_example_with_qop() {
        let challenge = Challenge::parse(R2617_CHALLENGE).unwrap();
        assert_eq!(challenge.algorithm(), Ok(Algorithm::Md5));
        assert_eq!(challenge.preferred_qop(), Ok(Some(Qop::Auth)));
        let header = respond(&challenge, &rfc2617_input()).unwrap();
        let mine = Credentials::parse(&header).unwrap();
        assert_eq!(mine.response(), Some("6629fae49393a05397450978507c4ef1"));
        assert_eq!(mine.opaque(), Some("5ccc069c403ebaf9f0171e9517f40e41"));

        let theirs = Credentials::parse(R2617_CREDENTIALS).unwrap();
        let ok = verify(&theirs, "GET", Secret::Password("Circle Of Life"), b"").unwrap();
        assert_eq!(ok.nonce, "dcd98b7102dd2f0e8b11d0f600bfb0c093");
        assert_eq!(ok.cnonce, Some("0a4f113b"));
        // Same via a precomputed HA1, in either hex case.
        let ha1 = compute_ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(verify(&theirs, "GET", Secret::Ha1(&ha1), b"").is_ok());
        assert!(verify(&theirs, "GET", Secret::Ha1(&ha1.to_ascii_uppercase()), b"").is_ok());
        assert_eq!(
            verify(&theirs, "GET", Secret::Ha1(&ha1[..31]), b""),
            Err(DigestError::InvalidHa1)
        );
        assert_eq!(
            verify(&theirs, "GET", Secret::Ha1(&"z".repeat(32)), b""),
            Err(DigestError::InvalidHa1)
        );
        assert_eq!(
            verify(&theirs, "POST", Secret::Password("Circle Of Life"), b""),
            Err(DigestError::BadResponse)
        );
    }

    #[test]
    fn rfc2617_example_without_qop() {
        // RFC 2069 compatibility: no qop offered, so none used; value
        // cross-computed with Python's hashlib.
        let value = R2617_CHALLENGE.replace("qop=\"auth,auth-int\",", "");
        let challenge = Challenge::parse(&value).unwrap();
        assert_eq!(challenge.preferred_qop(), Ok(None));
        let header = respond(&challenge, &rfc2617_input()).unwrap();
        assert_eq!(
            header,
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             response=\"670fd8c2df070c60b045671b8b24ff02\", algorithm=MD5, \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""
        );
        let creds = Credentials::parse(&header).unwrap();
        let ok = verify(&creds, "GET", Secret::Password("Circle Of Life"), b"").unwrap();
        assert_eq!((ok.qop, ok.nc, ok.cnonce), (None, None, None));
        assert_eq!(
            verify(&creds, "GET", Secret::Password("circle of life"), b""),
            Err(DigestError::BadResponse)
        );
    }

    #[test]
    fn sip_register_round_trip() {
        for algorithm in [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256Sess] {
            let mut server =
                ServerChallenge::new("atlanta.example.com", "ea9c8e88df84f1cec4341ae6cbe5a359");
            server.algorithm = algorithm;
            server.opaque = Some("");
            server.qop = &[Qop::Auth, Qop::AuthInt];
            let www = server.to_header_value().unwrap();
            let challenge = Challenge::parse(&www).unwrap();
            assert_eq!(challenge.realm(), Some("atlanta.example.com"));
            assert_eq!(challenge.algorithm(), Ok(algorithm));
            assert_eq!(
                challenge.qop_options().collect::<Vec<_>>(),
                ["auth", "auth-int"]
            );
            assert!(!challenge.stale());

            let input = ClientInput {
                username: "alice",
                password: "s3cr\"et",
                method: "REGISTER",
                uri: "sip:atlanta.example.com",
                cnonce: "0a4f113b",
                nc: 0x1a,
                body: b"",
            };
            let authz = respond(&challenge, &input).unwrap();
            assert!(authz.contains(", nc=0000001a"), "{authz}");
            assert!(authz.contains(", qop=auth, "), "{authz}");
            assert!(authz.ends_with(", opaque=\"\""), "{authz}");

            let creds = Credentials::parse(&authz).unwrap();
            assert_eq!(creds.username(), Some("alice"));
            assert_eq!(creds.uri(), Some("sip:atlanta.example.com"));
            let ok = verify(&creds, "REGISTER", Secret::Password("s3cr\"et"), b"").unwrap();
            assert_eq!(ok.nonce, "ea9c8e88df84f1cec4341ae6cbe5a359");
            assert_eq!(ok.nc, Some(0x1a));
            assert_eq!(ok.algorithm, algorithm);

            let ha1 = compute_ha1(algorithm, "alice", "atlanta.example.com", "s3cr\"et");
            assert!(verify(&creds, "REGISTER", Secret::Ha1(&ha1), b"").is_ok());

            // Wrong password.
            assert_eq!(
                verify(&creds, "REGISTER", Secret::Password("secret"), b""),
                Err(DigestError::BadResponse)
            );
            // Wrong method.
            assert_eq!(
                verify(&creds, "INVITE", Secret::Password("s3cr\"et"), b""),
                Err(DigestError::BadResponse)
            );
            // Tampered parameters.
            for (from, to) in [
                (
                    "uri=\"sip:atlanta.example.com\"",
                    "uri=\"sip:evil.example.com\"",
                ),
                ("nc=0000001a", "nc=0000001b"),
                ("cnonce=\"0a4f113b\"", "cnonce=\"0a4f113c\""),
                ("username=\"alice\"", "username=\"bob\""),
                ("nonce=\"ea9c", "nonce=\"fa9c"),
            ] {
                let tampered = authz.replace(from, to);
                assert_ne!(tampered, authz);
                let creds = Credentials::parse(&tampered).unwrap();
                assert_eq!(
                    verify(&creds, "REGISTER", Secret::Password("s3cr\"et"), b""),
                    Err(DigestError::BadResponse),
                    "{tampered}"
                );
            }
        }
    }

    #[test]
    fn server_challenge_printing() {
        let mut c = ServerChallenge::new("a \"quoted\\\" realm", "n");
        assert_eq!(
            c.to_header_value().unwrap(),
            "Digest realm=\"a \\\"quoted\\\\\\\" realm\", nonce=\"n\", algorithm=MD5, qop=\"auth\""
        );
        c.stale = true;
        c.opaque = Some("op");
        c.domain = Some("sip:a.example.com sip:b.example.com");
        c.algorithm = Algorithm::Sha256Sess;
        c.qop = &[];
        let value = c.to_header_value().unwrap();
        assert_eq!(
            value,
            "Digest realm=\"a \\\"quoted\\\\\\\" realm\", domain=\"sip:a.example.com sip:b.example.com\", \
             nonce=\"n\", opaque=\"op\", stale=TRUE, algorithm=SHA-256-sess"
        );
        let parsed = Challenge::parse(&value).unwrap();
        assert_eq!(parsed.realm(), Some("a \"quoted\\\" realm"));
        assert!(parsed.stale());
        assert_eq!(parsed.qop_options().count(), 0);

        c.nonce = "n\r\nVia: injected";
        assert_eq!(c.to_header_value(), Err(DigestError::InvalidParam("nonce")));
    }

    #[test]
    fn client_rejects_unprintable_input_and_unsupported_challenges() {
        let challenge = Challenge::parse(R2617_CHALLENGE).unwrap();
        let mut input = rfc2617_input();
        input.username = "bob\r\nX: y";
        assert_eq!(
            respond(&challenge, &input),
            Err(DigestError::InvalidParam("username"))
        );
        let mut input = rfc2617_input();
        input.cnonce = "";
        assert_eq!(
            respond(&challenge, &input),
            Err(DigestError::MissingParam("cnonce"))
        );

        let cases = [
            ("Basic realm=\"x\"", DigestError::UnsupportedScheme),
            ("Digest nonce=\"n\"", DigestError::MissingParam("realm")),
            ("Digest realm=\"r\"", DigestError::MissingParam("nonce")),
            (
                "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1",
                DigestError::UnsupportedAlgorithm,
            ),
            (
                "Digest realm=\"r\", nonce=\"n\", qop=\"auth-conf\"",
                DigestError::UnsupportedQop,
            ),
            (
                "Digest realm=\"r\", nonce=\"n\", qop=\"\"",
                DigestError::UnsupportedQop,
            ),
            (
                "Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess",
                DigestError::MissingParam("qop"),
            ),
        ];
        for (value, err) in cases {
            let challenge = Challenge::parse(value).unwrap();
            assert_eq!(respond(&challenge, &rfc2617_input()), Err(err), "{value}");
        }
    }

    #[test]
    fn verify_rejects_incomplete_credentials() {
        let base = R2617_CREDENTIALS;
        let cases = [
            (
                base.replace("Digest", "Basic"),
                DigestError::UnsupportedScheme,
            ),
            (
                base.replace("username=\"Mufasa\",", ""),
                DigestError::MissingParam("username"),
            ),
            (
                base.replace("uri=\"/dir/index.html\",", ""),
                DigestError::MissingParam("uri"),
            ),
            (
                base.replace("nc=00000001,", ""),
                DigestError::MissingParam("nc"),
            ),
            (
                base.replace("cnonce=\"0a4f113b\",", ""),
                DigestError::MissingParam("cnonce"),
            ),
            (
                base.replace("nc=00000001", "nc=1"),
                DigestError::InvalidParam("nc"),
            ),
            (
                base.replace("nc=00000001", "nc=+0000001"),
                DigestError::InvalidParam("nc"),
            ),
            (
                base.replace("qop=auth", "qop=auth-conf"),
                DigestError::UnsupportedQop,
            ),
            (
                base.replace("qop=auth", "algorithm=MD6"),
                DigestError::UnsupportedAlgorithm,
            ),
            (
                base.replace("qop=auth,", "algorithm=MD5-sess,"),
                DigestError::MissingParam("qop"),
            ),
            (
                base.replace("qop=auth", "qop=auth, userhash=TRUE"),
                DigestError::InvalidParam("userhash"),
            ),
            (
                base.replace(
                    "response=\"6629fae49393a05397450978507c4ef1\"",
                    "response=\"\"",
                ),
                DigestError::BadResponse,
            ),
        ];
        for (value, err) in cases {
            let creds = Credentials::parse(&value).unwrap();
            assert_eq!(
                verify(&creds, "GET", Secret::Password("Circle Of Life"), b""),
                Err(err),
                "{value}"
            );
        }
        // Uppercase hex response and a quoted qop are tolerated.
        let value = base
            .replace(
                "6629fae49393a05397450978507c4ef1",
                "6629FAE49393A05397450978507C4EF1",
            )
            .replace("qop=auth", "qop=\"auth\"");
        let creds = Credentials::parse(&value).unwrap();
        assert!(verify(&creds, "GET", Secret::Password("Circle Of Life"), b"").is_ok());
    }

    #[test]
    fn parse_lws_case_and_unknown_params() {
        let value = "  dIgEsT   REALM = \"r\" ,NONCE=\"n\"\t,\t  Algorithm = sha-256 , \
                     QOP=\"auth-int ,  auth\", stale=true, x-ext=tok , y=\"q\",";
        let c = Challenge::parse(value).unwrap();
        assert!(c.is_digest());
        assert_eq!(c.scheme(), "dIgEsT");
        assert_eq!(c.realm(), Some("r"));
        assert_eq!(c.nonce(), Some("n"));
        assert_eq!(c.algorithm(), Ok(Algorithm::Sha256));
        assert_eq!(c.qop_options().collect::<Vec<_>>(), ["auth-int", "auth"]);
        assert_eq!(c.preferred_qop(), Ok(Some(Qop::Auth)));
        assert!(c.stale());
        assert_eq!(c.param("X-EXT"), Some("tok"));
        assert_eq!(c.param("y"), Some("q"));
        assert_eq!(c.opaque(), None);
        assert_eq!(c.params().count(), 7);
        assert_eq!(
            c.to_string(),
            "dIgEsT REALM=\"r\", NONCE=\"n\", Algorithm=sha-256, QOP=\"auth-int ,  auth\", \
             stale=true, x-ext=tok, y=\"q\""
        );
        assert!(!Challenge::parse("Digest realm=\"r\", stale=FALSE")
            .unwrap()
            .stale());
        assert!(Challenge::parse("Digest realm=\"r\", stale=\"TRUE\"")
            .unwrap()
            .stale());
        assert!(!Challenge::parse("Digest realm=\"r\"").unwrap().stale());
        // Empty list elements are skipped.
        let c = Challenge::parse("Digest , ,realm=\"r\",, nonce=n ,").unwrap();
        assert_eq!((c.realm(), c.nonce()), (Some("r"), Some("n")));
    }

    #[test]
    fn parse_quoted_strings() {
        let c =
            Credentials::parse(r#"Digest username="a\"b\\c", realm="", uri="sip:x;a=\b""#).unwrap();
        assert_eq!(c.username(), Some("a\"b\\c"));
        assert_eq!(c.realm(), Some(""));
        assert_eq!(c.uri(), Some("sip:x;a=b"));
        // Zero-copy when nothing is escaped.
        assert!(matches!(c.inner.params[1].value, Cow::Borrowed("")));
        assert!(matches!(c.inner.params[0].value, Cow::Owned(_)));
        assert_eq!(
            c.to_string(),
            r#"Digest username="a\"b\\c", realm="", uri="sip:x;a=b""#
        );
        // Non-ASCII and tabs inside quotes.
        let c = Credentials::parse("Digest username=\"J\u{e4}s\u{f8}n\tDoe\"").unwrap();
        assert_eq!(c.username(), Some("J\u{e4}s\u{f8}n\tDoe"));
        // Commas and equals signs inside quotes are not separators.
        let c = Challenge::parse("Digest realm=\"a, b=c\", nonce=\"n\"").unwrap();
        assert_eq!(c.realm(), Some("a, b=c"));
    }

    #[test]
    fn parse_other_schemes() {
        let c = Credentials::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap();
        assert_eq!(c.scheme(), "Basic");
        assert!(!c.is_digest());
        assert_eq!(c.token68(), Some("QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
        assert_eq!(c.to_string(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(
            verify(&c, "GET", Secret::Password("x"), b""),
            Err(DigestError::UnsupportedScheme)
        );
        let c = Challenge::parse("Basic realm=\"WallyWorld\"").unwrap();
        assert_eq!(c.realm(), Some("WallyWorld"));
        assert_eq!(c.token68(), None);
        let c = Challenge::parse("Negotiate").unwrap();
        assert_eq!((c.scheme(), c.params().count()), ("Negotiate", 0));
        // Digest never takes a token68.
        assert_eq!(
            Challenge::parse("Digest abc=="),
            Err(DigestError::Malformed { at: 11 })
        );
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, DigestError)] = &[
            ("", DigestError::Malformed { at: 0 }),
            ("   ", DigestError::Malformed { at: 3 }),
            ("\"Digest\"", DigestError::Malformed { at: 0 }),
            ("Digest,realm=\"r\"", DigestError::Malformed { at: 6 }),
            ("Digest realm", DigestError::Malformed { at: 12 }),
            ("Digest realm=", DigestError::Malformed { at: 13 }),
            ("Digest realm=,", DigestError::Malformed { at: 13 }),
            ("Digest realm=\"r", DigestError::Malformed { at: 15 }),
            ("Digest realm=\"r\\", DigestError::Malformed { at: 16 }),
            (
                "Digest realm=\"r\" nonce=\"n\"",
                DigestError::Malformed { at: 17 },
            ),
            ("Digest realm=\"r\"x", DigestError::Malformed { at: 16 }),
            ("Digest realm=\"a\r\nb\"", DigestError::Malformed { at: 15 }),
            ("Digest realm=\"a\\\nb\"", DigestError::Malformed { at: 16 }),
            ("Digest realm=\"a\u{0}\"", DigestError::Malformed { at: 15 }),
            ("Digest realm=a/b", DigestError::Malformed { at: 14 }),
            ("Digest =x", DigestError::Malformed { at: 7 }),
            (
                "Digest realm=\"r\", REALM=\"s\"",
                DigestError::DuplicateParam { at: 18 },
            ),
            (
                "WWW-Authenticate: Digest realm=\"r\"",
                DigestError::Malformed { at: 16 },
            ),
        ];
        for (value, err) in cases {
            assert_eq!(Challenge::parse(value), Err(*err), "{value:?}");
            assert_eq!(Credentials::parse(value), Err(*err), "{value:?}");
        }
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=v,")).collect();
        assert!(matches!(
            Challenge::parse(&format!("Digest {many}")),
            Err(DigestError::Malformed { .. })
        ));
    }

    #[test]
    fn algorithm_and_qop_tokens() {
        for alg in [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ] {
            assert_eq!(Algorithm::from_token(alg.as_str()), Some(alg));
            assert_eq!(
                Algorithm::from_token(&alg.to_string().to_ascii_lowercase()),
                Some(alg)
            );
            assert_eq!(compute_ha1(alg, "u", "r", "p").len(), alg.hex_len());
        }
        assert_eq!(Algorithm::from_token("SHA-512"), None);
        assert_eq!(Algorithm::from_token(""), None);
        assert_eq!(Qop::from_token("AUTH-INT"), Some(Qop::AuthInt));
        assert_eq!(Qop::AuthInt.to_string(), "auth-int");
        assert_eq!(Qop::from_token("auth-conf"), None);
        // Secrets stay out of debug output.
        let input = rfc2617_input();
        assert!(!format!("{input:?}").contains("Circle"));
        assert!(!format!("{:?}", Secret::Password("Circle")).contains("Circle"));
        assert!(!format!("{:?}", Secret::Ha1("abcd")).contains("abcd"));
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Runs every entry point on `value`; nothing may panic, and whatever
    /// parses must print back to something that parses to the same thing.
    fn exercise(value: &str) {
        if let Ok(c) = Challenge::parse(value) {
            let printed = c.to_string();
            assert_eq!(
                Challenge::parse(&printed).as_ref(),
                Ok(&c),
                "{value:?} -> {printed:?}"
            );
            let _ = (
                c.realm(),
                c.nonce(),
                c.opaque(),
                c.domain(),
                c.stale(),
                c.algorithm(),
            );
            let _ = (c.qop_options().count(), c.preferred_qop(), c.token68());
            if let Ok(header) = respond(&c, &rfc2617_input()) {
                let creds = Credentials::parse(&header).unwrap();
                verify(&creds, "GET", Secret::Password("Circle Of Life"), b"").unwrap();
            }
        }
        if let Ok(c) = Credentials::parse(value) {
            let printed = c.to_string();
            assert_eq!(
                Credentials::parse(&printed).as_ref(),
                Ok(&c),
                "{value:?} -> {printed:?}"
            );
            let _ = (
                c.username(),
                c.realm(),
                c.nonce(),
                c.uri(),
                c.response(),
                c.cnonce(),
            );
            let _ = (c.opaque(), c.algorithm(), c.qop(), c.nc(), c.token68());
            let _ = verify(&c, "GET", Secret::Password("Circle Of Life"), b"body");
            let _ = verify(
                &c,
                "GET",
                Secret::Ha1("0123456789abcdef0123456789ABCDEF"),
                b"",
            );
            let _ = verify(&c, "GET", Secret::Ha1("\u{e9}"), b"");
        }
    }

    #[test]
    fn fuzz_garbage_and_truncations() {
        let valid = [
            R2617_CHALLENGE.to_string(),
            R2617_CREDENTIALS.to_string(),
            rfc7616_challenge("SHA-256"),
            r#"Digest username="a\"b\\c", realm="r", nonce="n", uri="sip:x", response="00", qop=auth-int, nc=0000000f, cnonce="c", algorithm=MD5-sess"#.to_string(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".to_string(),
            "Digest realm=\"J\u{e4}s\u{f8}n\", nonce=\"\u{1F600}\", stale=TRUE".to_string(),
        ];
        // Every prefix, and every single-byte deletion.
        for v in &valid {
            exercise(v);
            for i in 0..=v.len() {
                if let Some(prefix) = v.get(..i) {
                    exercise(prefix);
                }
                if let (Some(a), Some(b)) = (v.get(..i), v.get(i + 1..)) {
                    exercise(&format!("{a}{b}"));
                }
            }
        }
        // Random sequences of syntax-heavy pieces, and random bytes.
        let pieces = [
            "Digest",
            "Basic",
            " ",
            "\t",
            "\r\n ",
            ",",
            "=",
            "\"",
            "\\",
            "realm",
            "nonce",
            "qop",
            "auth",
            "auth-int",
            "algorithm",
            "MD5",
            "SHA-256-sess",
            "nc",
            "00000001",
            "cnonce",
            "username",
            "uri",
            "response",
            "opaque",
            "stale",
            "TRUE",
            "userhash",
            "x",
            "==",
            "\u{e9}",
            "\u{0}",
            "\u{7f}",
            "/",
            "\u{1F600}",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..rng.below(24) {
                s.push_str(pieces[rng.below(pieces.len())]);
            }
            exercise(&s);
            let bytes: Vec<u8> = (0..rng.below(48)).map(|_| rng.next() as u8).collect();
            exercise(&String::from_utf8_lossy(&bytes));
            // Mutate a valid value at a random byte.
            let v = valid[rng.below(valid.len())].as_bytes();
            let mut m = v.to_vec();
            let at = rng.below(m.len());
            m[at] = rng.next() as u8;
            exercise(&String::from_utf8_lossy(&m));
        }
    }
}
