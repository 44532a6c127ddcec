//! URIs: `sip`, `sips`, `tel`, and any other absolute URI kept opaque.
//!
//! [`Uri`] is a borrowed, validated view over URI text; it never allocates.
//! Comparison follows RFC 3261 §19.1.4 ([`Uri::equivalent`]).

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::chars::{
    is_escaped_with, is_hnv, is_host, is_paramchar, is_password, is_user, unescape,
};
use crate::error::UriError;
use crate::params::Params;

/// A parsed URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:` (RFC 3966).
    Tel(TelUri<'a>),
    /// Any other absolute URI, kept opaque.
    Other {
        /// The whole URI text.
        text: &'a str,
        /// The scheme, as written.
        scheme: &'a str,
        /// Everything after the `:`.
        rest: &'a str,
    },
}

/// A host: a name, an IPv4 address, or an IPv6 reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name as written.
    Name(&'a str),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written in brackets).
    V6(Ipv6Addr),
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

impl Host<'_> {
    fn equivalent(&self, other: &Host<'_>) -> bool {
        match (self, other) {
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }

    /// Parses a host (`example.com`, `192.0.2.1`, `[2001:db8::1]`).
    pub fn parse(s: &str) -> Result<Host<'_>, UriError> {
        parse_host(s)
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    text: &'a str,
    secure: bool,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: Host<'a>,
    host_text: &'a str,
    port: Option<u16>,
    params: &'a str,
    headers: &'a str,
}

impl<'a> SipUri<'a> {
    /// True for `sips:`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }
    /// The user part as written (escapes kept).
    pub fn user(&self) -> Option<&'a str> {
        self.user
    }
    /// The user part with `%HH` escapes decoded.
    pub fn user_unescaped(&self) -> Option<Cow<'a, [u8]>> {
        self.user.map(unescape)
    }
    /// The password, as written.
    pub fn password(&self) -> Option<&'a str> {
        self.password
    }
    /// The host.
    pub fn host(&self) -> Host<'a> {
        self.host
    }
    /// The host as written (IPv6 with brackets).
    pub fn host_str(&self) -> &'a str {
        self.host_text
    }
    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// The URI parameters (`;transport=tcp;lr;ob`).
    pub fn params(&self) -> Params<'a> {
        Params::new(self.params)
    }
    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.params().value("transport")
    }
    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params().value("maddr")
    }
    /// The `user` parameter (`phone`, `ip`).
    pub fn user_param(&self) -> Option<&'a str> {
        self.params().value("user")
    }
    /// True when the `lr` flag is present (loose routing).
    pub fn lr(&self) -> bool {
        self.params().contains("lr")
    }
    /// True when the `ob` flag is present (RFC 5626).
    pub fn ob(&self) -> bool {
        self.params().contains("ob")
    }
    /// True when the `gr` parameter is present (RFC 5627 GRUU).
    pub fn gr(&self) -> bool {
        self.params().contains("gr")
    }
    /// The headers part after `?`, as written (empty for none).
    pub fn headers(&self) -> &'a str {
        self.headers
    }
    /// Iterates the `name=value` pairs of the headers part.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.headers
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|h| h.split_once('=').unwrap_or((h, "")))
    }
    /// The whole URI text.
    pub fn as_str(&self) -> &'a str {
        self.text
    }
}

/// A `tel:` URI (RFC 3966).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelUri<'a> {
    text: &'a str,
    number: &'a str,
    params: &'a str,
}

impl<'a> TelUri<'a> {
    /// The number as written, with visual separators.
    pub fn number(&self) -> &'a str {
        self.number
    }
    /// True for a global number (`+…`).
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }
    /// The parameters (`;phone-context=…`).
    pub fn params(&self) -> Params<'a> {
        Params::new(self.params)
    }
}

impl<'a> Uri<'a> {
    /// Parses and validates a URI. `sip`, `sips` and `tel` are checked
    /// against their grammars; other schemes only for a valid scheme and
    /// no white space.
    pub fn parse(text: &'a str) -> Result<Uri<'a>, UriError> {
        if text.is_empty() {
            return Err(UriError::Empty);
        }
        if text.starts_with('<') {
            return Err(UriError::Enclosed);
        }
        if text.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(UriError::Whitespace);
        }
        let colon = text.find(':').ok_or(UriError::Scheme)?;
        let scheme = text.get(..colon).ok_or(UriError::Scheme)?;
        let rest = text.get(colon + 1..).ok_or(UriError::Scheme)?;
        if !valid_scheme(scheme) {
            return Err(UriError::Scheme);
        }
        if scheme.eq_ignore_ascii_case("sip") {
            parse_sip(text, rest, false).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            parse_sip(text, rest, true).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            parse_tel(text, rest).map(Uri::Tel)
        } else if rest.is_empty() {
            Err(UriError::Empty)
        } else {
            Ok(Uri::Other { text, scheme, rest })
        }
    }

    /// The whole URI text.
    pub fn as_str(&self) -> &'a str {
        match self {
            Uri::Sip(u) => u.text,
            Uri::Tel(t) => t.text,
            Uri::Other { text, .. } => text,
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// True for `sip:`, `sips:` and `tel:`, the schemes this stack serves.
    pub fn is_supported_scheme(&self) -> bool {
        !matches!(self, Uri::Other { .. })
    }

    /// URI equivalence per RFC 3261 §19.1.4 (and RFC 3966 for `tel`).
    pub fn equivalent(&self, other: &Uri<'_>) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => sip_equivalent(a, b),
            (Uri::Tel(a), Uri::Tel(b)) => tel_equivalent(a, b),
            (
                Uri::Other {
                    scheme: s1,
                    rest: r1,
                    ..
                },
                Uri::Other {
                    scheme: s2,
                    rest: r2,
                    ..
                },
            ) => s1.eq_ignore_ascii_case(s2) && r1 == r2,
            _ => false,
        }
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => f.write_str(u.text),
            Uri::Tel(t) => f.write_str(t.text),
            Uri::Other { text, .. } => f.write_str(text),
        }
    }
}

/// The cheap check a parser makes of a Request-URI: not empty, not in
/// `<>`, no white space, a valid scheme before a `:`.
pub(crate) fn check_shape(text: &str) -> Result<(), UriError> {
    if text.is_empty() {
        return Err(UriError::Empty);
    }
    if text.starts_with('<') {
        return Err(UriError::Enclosed);
    }
    if text
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(UriError::Whitespace);
    }
    let colon = text
        .bytes()
        .position(|b| b == b':')
        .ok_or(UriError::Scheme)?;
    if !valid_scheme(text.get(..colon).unwrap_or_default()) {
        return Err(UriError::Scheme);
    }
    Ok(())
}

fn valid_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn parse_sip<'a>(text: &'a str, rest: &'a str, secure: bool) -> Result<SipUri<'a>, UriError> {
    // userinfo ends at the last '@': neither params nor headers may hold one
    let (user, password, after_user) = match rest.rfind('@') {
        Some(at) => {
            let userinfo = rest.get(..at).unwrap_or("");
            let (u, p) = match userinfo.find(':') {
                Some(c) => (
                    userinfo.get(..c).unwrap_or(""),
                    Some(userinfo.get(c + 1..).unwrap_or("")),
                ),
                None => (userinfo, None),
            };
            if u.is_empty() || !is_escaped_with(u, is_user) {
                return Err(UriError::User);
            }
            if let Some(p) = p {
                if !is_escaped_with(p, is_password) {
                    return Err(UriError::Password);
                }
            }
            (Some(u), p, rest.get(at + 1..).unwrap_or(""))
        }
        None => (None, None, rest),
    };
    let (hostpart, headers, has_headers) = match after_user.find('?') {
        Some(q) => (
            after_user.get(..q).unwrap_or(""),
            after_user.get(q + 1..).unwrap_or(""),
            true,
        ),
        None => (after_user, "", false),
    };
    let (hostport, params) = match hostpart.find(';') {
        Some(s) => (
            hostpart.get(..s).unwrap_or(""),
            hostpart.get(s..).unwrap_or(""),
        ),
        None => (hostpart, ""),
    };
    let (host_text, port) = split_host_port(hostport)?;
    let host = parse_host(host_text)?;
    let p = Params::new(params);
    if !p.validate(
        |n| !n.is_empty() && is_escaped_with(n, is_paramchar),
        |v| !v.is_empty() && is_escaped_with(v, is_paramchar),
    ) {
        return Err(UriError::Param);
    }
    if has_headers {
        let ok = !headers.is_empty()
            && headers.split('&').all(|h| match h.split_once('=') {
                Some((n, v)) => {
                    !n.is_empty() && is_escaped_with(n, is_hnv) && is_escaped_with(v, is_hnv)
                }
                None => false,
            });
        if !ok {
            return Err(UriError::Headers);
        }
    }
    Ok(SipUri {
        text,
        secure,
        user,
        password,
        host,
        host_text,
        port,
        params,
        headers,
    })
}

/// Splits `host[:port]`, with IPv6 references in brackets.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, Option<u16>), UriError> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').ok_or(UriError::Host)?;
        let host = s.get(..=end).ok_or(UriError::Host)?;
        match s.get(end + 1..).unwrap_or("") {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or(UriError::Host)?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(parse_port(p)?),
        None => None,
    };
    Ok((host, port))
}

pub(crate) fn parse_port(p: &str) -> Result<u16, UriError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::Port);
    }
    p.parse().map_err(|_| UriError::Port)
}

pub(crate) fn parse_host(s: &str) -> Result<Host<'_>, UriError> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(UriError::Host)?;
        return inner.parse().map(Host::V6).map_err(|_| UriError::Host);
    }
    if s.is_empty() || !s.bytes().all(is_host) {
        return Err(UriError::Host);
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return s.parse().map(Host::V4).map_err(|_| UriError::Host);
    }
    // hostname: labels of alphanumerics and inner hyphens; the top label
    // starts with a letter; one trailing dot allowed.
    let name = s.strip_suffix('.').unwrap_or(s);
    let mut labels = name.split('.').peekable();
    while let Some(label) = labels.next() {
        let b = label.as_bytes();
        let ok = match (b.first(), b.last()) {
            (Some(f), Some(l)) => f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric(),
            _ => false,
        };
        if !ok {
            return Err(UriError::Host);
        }
        if labels.peek().is_none() && !b.first().is_some_and(|c| c.is_ascii_alphabetic()) {
            return Err(UriError::Host);
        }
    }
    Ok(Host::Name(s))
}

fn parse_tel<'a>(text: &'a str, rest: &'a str) -> Result<TelUri<'a>, UriError> {
    let (number, params) = match rest.find(';') {
        Some(s) => (rest.get(..s).unwrap_or(""), rest.get(s..).unwrap_or("")),
        None => (rest, ""),
    };
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty()
        || !digits
            .bytes()
            .any(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
        || !digits
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')'))
        || (number.starts_with('+')
            && !digits
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'(' | b')')))
    {
        return Err(UriError::TelNumber);
    }
    let p = Params::new(params);
    if !p.validate(
        |n| !n.is_empty() && is_escaped_with(n, is_paramchar),
        |v| !v.is_empty() && is_escaped_with(v, is_paramchar),
    ) {
        return Err(UriError::Param);
    }
    Ok(TelUri {
        text,
        number,
        params,
    })
}

fn unescaped_eq(a: &str, b: &str, case_insensitive: bool) -> bool {
    let (a, b) = (unescape(a), unescape(b));
    if case_insensitive {
        a.eq_ignore_ascii_case(&b)
    } else {
        a == b
    }
}

fn sip_equivalent(a: &SipUri<'_>, b: &SipUri<'_>) -> bool {
    if a.secure != b.secure || a.port != b.port || !a.host.equivalent(&b.host) {
        return false;
    }
    let opt_eq = |x: Option<&str>, y: Option<&str>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => unescaped_eq(x, y, false),
        _ => false,
    };
    if !opt_eq(a.user, b.user) || !opt_eq(a.password, b.password) {
        return false;
    }
    // user, ttl, method, maddr, transport: must match when either has it
    for name in ["user", "ttl", "method", "maddr", "transport"] {
        let (x, y) = (a.params().get(name), b.params().get(name));
        match (x, y) {
            (None, None) => {}
            (Some(Some(x)), Some(Some(y))) if unescaped_eq(x, y, true) => {}
            (Some(None), Some(None)) => {}
            _ => return false,
        }
    }
    // any other parameter present in both must match
    for (n, v) in a.params().iter() {
        if let Some(w) = b.params().get(n) {
            let same = match (v, w) {
                (None, None) => true,
                (Some(v), Some(w)) => unescaped_eq(v, w, true),
                _ => false,
            };
            if !same {
                return false;
            }
        }
    }
    // headers: all must match, in any order
    let count = |u: &SipUri<'_>| u.header_pairs().count();
    if count(a) != count(b) {
        return false;
    }
    a.header_pairs().all(|(n, v)| {
        b.header_pairs()
            .any(|(m, w)| unescaped_eq(n, m, true) && unescaped_eq(v, w, false))
    })
}

fn tel_equivalent(a: &TelUri<'_>, b: &TelUri<'_>) -> bool {
    let digits = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(|c| !matches!(c, b'-' | b'.' | b'(' | b')'))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    if digits(a.number) != digits(b.number) {
        return false;
    }
    let count = |t: &TelUri<'_>| t.params().iter().count();
    count(a) == count(b)
        && a.params().iter().all(|(n, v)| match b.params().get(n) {
            Some(w) => match (v, w) {
                (None, None) => true,
                (Some(v), Some(w)) => unescaped_eq(v, w, true),
                _ => false,
            },
            None => false,
        })
}

/// Returns `uri` with the URI parameter `name` set (`Some(Some(v))`), set
/// as a flag (`Some(None)`), or removed (`None`). Only SIP URIs carry
/// parameters this way.
pub fn with_param(uri: &str, name: &str, value: Option<Option<&str>>) -> Result<String, UriError> {
    let parsed = Uri::parse(uri)?;
    let sip = parsed.as_sip().ok_or(UriError::Scheme)?;
    let tail_len = if sip.headers.is_empty() {
        0
    } else {
        sip.headers.len() + 1
    };
    let params_start = uri.len().saturating_sub(tail_len + sip.params.len());
    let head = uri.get(..params_start).ok_or(UriError::Param)?;
    let tail = uri
        .get(params_start + sip.params.len()..)
        .ok_or(UriError::Param)?;
    let params = crate::params::edit(sip.params, name, value);
    Ok(format!("{head}{params}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_sip_parts() {
        let u = sip("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr;ob?subject=hi&x=y");
        assert!(u.is_secure());
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password(), Some("secret"));
        assert_eq!(
            u.host(),
            Host::V6("2001:db8::1".parse().unwrap_or(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.lr() && u.ob() && !u.gr());
        assert_eq!(u.header_pairs().count(), 2);
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert_eq!(u.host_str(), "example.com");
        let u = sip("sip:192.0.2.1");
        assert_eq!(u.host(), Host::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(u.user(), None);
    }

    #[test]
    fn rejects_bad_sip_uris() {
        for bad in [
            "sip:",
            "sip:user@",
            "sip:@host",
            "sip:host:99999",
            "sip:host:",
            "sip:[::1",
            "sip:ho st",
            "sip:host;;lr",
            "sip:host;",
            "sip:a%zz@host",
            "sip:host?",
            "sip:host?a",
            "<sip:host>",
            "sip:-bad-.com",
            "sip:300.1.1.1",
            "1sip:host",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tel_and_other() {
        let Ok(Uri::Tel(t)) = Uri::parse("tel:+1-201-555-0123;phone-context=example.com") else {
            panic!("tel")
        };
        assert!(t.is_global());
        assert!(Uri::parse("tel:+12a").is_err());
        assert!(Uri::parse("tel:").is_err());
        assert!(matches!(
            Uri::parse("soap.beep://192.0.2.103:3002"),
            Ok(Uri::Other { .. })
        ));
        assert!(!Uri::parse("urn:x")
            .map(|u| u.is_supported_scheme())
            .unwrap_or(true));
        assert!(Uri::parse("tel:+12015550123")
            .and_then(|a| Uri::parse("tel:+1-201-555-0123").map(|b| a.equivalent(&b)))
            .unwrap_or(false));
    }

    fn eq(a: &str, b: &str) -> bool {
        match (Uri::parse(a), Uri::parse(b)) {
            (Ok(a), Ok(b)) => a.equivalent(&b),
            _ => panic!("{a} {b}"),
        }
    }

    #[test]
    fn rfc3261_19_1_4_examples() {
        // equivalent
        assert!(eq(
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;security=on"
        ));
        assert!(eq(
            "sip:carol@chicago.com;newparam=5",
            "sip:carol@chicago.com;security=on"
        ));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(eq(
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x"
        ));
        // not equivalent
        assert!(!eq(
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP"
        ));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com:6000;transport=tcp"
        ));
        assert!(!eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com?Subject=next%20meeting"
        ));
        assert!(!eq("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"));
        assert!(!eq(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;security=off"
        ));
    }

    #[test]
    fn param_edit() {
        assert_eq!(
            with_param("sip:a@h;lr", "ob", Some(None)).ok().as_deref(),
            Some("sip:a@h;lr;ob")
        );
        assert_eq!(
            with_param("sip:a@h;transport=tcp?x=y", "transport", None)
                .ok()
                .as_deref(),
            Some("sip:a@h?x=y")
        );
        assert_eq!(
            with_param("sip:a@h:5060", "transport", Some(Some("tls")))
                .ok()
                .as_deref(),
            Some("sip:a@h:5060;transport=tls")
        );
    }
}
