//! Typed, borrowed views of header values.
//!
//! Each view parses one header value (or one element of a list) on demand
//! and borrows from it; nothing here allocates. The message keeps the raw
//! text, so an unparsed header costs nothing.

use crate::chars::{is_lws, is_token, parse_u32, trim_lws};
use crate::error::ValueError;
use crate::method::Method;
use crate::name_addr::check_header_params;
use crate::params::Params;
use crate::uri::{parse_host, parse_port, Host};

/// A cursor over a header value.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, i: 0 }
    }
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }
    /// Skips LWS; returns whether any was skipped.
    fn lws(&mut self) -> bool {
        let start = self.i;
        while self.peek().is_some_and(is_lws) {
            self.i += 1;
        }
        self.i > start
    }
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(&pred) {
            self.i += 1;
        }
        self.s.get(start..self.i).unwrap_or("")
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn rest(&self) -> &'a str {
        self.s.get(self.i..).unwrap_or("")
    }
    fn token(&mut self) -> Result<&'a str, ValueError> {
        let t = self.take_while(is_token);
        if t.is_empty() {
            Err(ValueError::Syntax)
        } else {
            Ok(t)
        }
    }
}

/// One Via element: `SIP/2.0/UDP host:port;branch=…;received=…;rport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    protocol: &'a str,
    version: &'a str,
    transport: &'a str,
    host: Host<'a>,
    host_text: &'a str,
    port: Option<u16>,
    params: Params<'a>,
}

impl<'a> Via<'a> {
    /// Parses one Via element (LWS is allowed around `/`, `:` and `;`).
    pub fn parse(text: &'a str) -> Result<Via<'a>, ValueError> {
        let mut c = Cursor::new(trim_lws(text));
        let protocol = c.token()?;
        c.lws();
        if !c.eat(b'/') {
            return Err(ValueError::Syntax);
        }
        c.lws();
        let version = c.token()?;
        c.lws();
        if !c.eat(b'/') {
            return Err(ValueError::Syntax);
        }
        c.lws();
        let transport = c.token()?;
        if !c.lws() {
            return Err(ValueError::Syntax);
        }
        let host_text = if c.peek() == Some(b'[') {
            let h = c.take_while(|b| b != b']');
            if !c.eat(b']') {
                return Err(ValueError::Syntax);
            }
            c.s.get(c.i - h.len() - 1..c.i).unwrap_or("")
        } else {
            c.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        let host = parse_host(host_text)?;
        let save = c.i;
        c.lws();
        let port = if c.eat(b':') {
            c.lws();
            Some(parse_port(c.take_while(|b| b.is_ascii_digit()))?)
        } else {
            c.i = save;
            None
        };
        // Only the shape is checked here (parameters start with `;`); the
        // parameters' grammar is checked by `Message::validate`, so reading
        // a branch stays cheap.
        let rest = c.rest();
        if !trim_lws(rest).is_empty() && !trim_lws(rest).starts_with(';') {
            return Err(ValueError::Syntax);
        }
        let params = Params::new(rest);
        Ok(Via {
            protocol,
            version,
            transport,
            host,
            host_text,
            port,
            params,
        })
    }

    /// The protocol name (`SIP`).
    pub fn protocol(&self) -> &'a str {
        self.protocol
    }
    /// The protocol version (`2.0`).
    pub fn version(&self) -> &'a str {
        self.version
    }
    /// The transport (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, …) as written.
    pub fn transport(&self) -> &'a str {
        self.transport
    }
    /// The sent-by host.
    pub fn host(&self) -> Host<'a> {
        self.host
    }
    /// The sent-by host as written.
    pub fn host_str(&self) -> &'a str {
        self.host_text
    }
    /// The sent-by port, if written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// All parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.value("branch")
    }
    /// True when the branch carries the RFC 3261 magic cookie.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        self.params.value("received")
    }
    /// `rport`: `None` absent, `Some(None)` present without value (a
    /// request asking for it), `Some(Some(port))` filled in by a server.
    pub fn rport(&self) -> Option<Option<u16>> {
        match self.params.get("rport")? {
            None => Some(None),
            Some(v) => parse_port(v).ok().map(Some),
        }
    }
    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.value("maddr")
    }
    /// The `ttl` parameter (0–255).
    pub fn ttl(&self) -> Option<u8> {
        self.params.value("ttl").and_then(|v| v.parse().ok())
    }
    /// RFC 6223 `keep`: `Some(None)` when asked for, `Some(Some(secs))`
    /// when granted.
    pub fn keep(&self) -> Option<Option<u32>> {
        match self.params.get("keep")? {
            None => Some(None),
            Some(v) => parse_u32(v).map(Some),
        }
    }

    fn validate(&self) -> Result<(), ValueError> {
        check_header_params(self.params)?;
        for (n, v) in self.params.iter() {
            let ok = match n.to_ascii_lowercase().as_str() {
                "ttl" => self.ttl().is_some(),
                "rport" => v.is_none() || self.rport().is_some_and(|p| p.is_some()),
                "received" => v.is_some_and(|v| {
                    parse_host(v).is_ok() || v.parse::<std::net::IpAddr>().is_ok()
                }),
                "branch" | "maddr" => v.is_some(),
                "keep" => v.is_none() || self.keep().is_some_and(|k| k.is_some()),
                _ => true,
            };
            if !ok {
                return Err(ValueError::Syntax);
            }
        }
        Ok(())
    }
}

/// The CSeq header: sequence number and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number (below 2^31, RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// The method.
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(text: &'a str) -> Result<CSeq<'a>, ValueError> {
        let mut c = Cursor::new(trim_lws(text));
        let num = c.take_while(|b| b.is_ascii_digit());
        if num.is_empty() || !c.lws() {
            return Err(ValueError::Syntax);
        }
        let seq = parse_u32(num)
            .filter(|&n| n < 1 << 31)
            .ok_or(ValueError::OutOfRange)?;
        let method = c.token()?;
        if !c.rest().is_empty() {
            return Err(ValueError::Syntax);
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

/// RAck (RFC 3262): `response-num CSeq-num Method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RAck<'a> {
    /// The RSeq being acknowledged.
    pub rseq: u32,
    /// The CSeq of the acknowledged response.
    pub cseq: CSeq<'a>,
}

impl<'a> RAck<'a> {
    /// Parses `1*DIGIT LWS 1*DIGIT LWS Method`.
    pub fn parse(text: &'a str) -> Result<RAck<'a>, ValueError> {
        let mut c = Cursor::new(trim_lws(text));
        let num = c.take_while(|b| b.is_ascii_digit());
        if !c.lws() {
            return Err(ValueError::Syntax);
        }
        let rseq = parse_u32(num)
            .filter(|&n| n > 0 && n < 1 << 31)
            .ok_or(ValueError::OutOfRange)?;
        Ok(RAck {
            rseq,
            cseq: CSeq::parse(c.rest())?,
        })
    }
}

/// A value followed by header parameters: Event, Subscription-State,
/// Replaces, Session-Expires, Retry-After, Content-Type,
/// Content-Disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamValue<'a> {
    value: &'a str,
    params: Params<'a>,
}

impl<'a> ParamValue<'a> {
    /// Splits at the first `;` outside quotes and checks the parameters.
    pub fn parse(text: &'a str) -> Result<ParamValue<'a>, ValueError> {
        let text = trim_lws(text);
        let (value, params) = match crate::chars::find_unquoted(text, 0, false, b';') {
            Some(i) => (
                trim_lws(text.get(..i).unwrap_or("")),
                text.get(i..).unwrap_or(""),
            ),
            None => (text, ""),
        };
        if value.is_empty() {
            return Err(ValueError::Empty);
        }
        let params = Params::new(params);
        check_header_params(params)?;
        Ok(ParamValue { value, params })
    }
    /// The value before the parameters.
    pub fn value(&self) -> &'a str {
        self.value
    }
    /// The parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// The value as delta-seconds (Session-Expires, Retry-After,
    /// Min-SE, Expires, Min-Expires, Flow-Timer).
    pub fn seconds(&self) -> Option<u32> {
        // Retry-After may carry a comment after the number
        let num = self
            .value
            .split(|c: char| c == '(' || (c.is_ascii() && is_lws(c as u8)))
            .next()
            .unwrap_or("");
        parse_u32(num)
    }
}

/// Iterates the option tags / tokens of Supported, Require, Allow, ….
pub fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(trim_lws).filter(|t| !t.is_empty())
}

/// Parses a delta-seconds header (Expires, Min-Expires, Flow-Timer,
/// Min-SE): digits only, at most 2^32 − 1.
pub fn delta_seconds(value: &str) -> Result<u32, ValueError> {
    let v = trim_lws(value);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Syntax);
    }
    parse_u32(v).ok_or(ValueError::OutOfRange)
}

/// Parses Max-Forwards: 0–255 (larger values are refused as overlarge).
pub fn max_forwards(value: &str) -> Result<u8, ValueError> {
    let v = trim_lws(value);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Syntax);
    }
    parse_u32(v)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or(ValueError::OutOfRange)
}

/// Checks an RFC 1123 date in GMT (`Sat, 13 Nov 2010 23:29:00 GMT`).
pub fn check_date(value: &str) -> Result<(), ValueError> {
    let v = trim_lws(value);
    let parts: Vec<&str> = v.split(' ').filter(|p| !p.is_empty()).collect();
    let ok = match parts.as_slice() {
        [wk, day, mon, year, time, "GMT"] => {
            ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(wk)
                && day.len() == 2
                && day.parse::<u8>().is_ok_and(|d| (1..=31).contains(&d))
                && [
                    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                    "Dec",
                ]
                .contains(mon)
                && year.len() == 4
                && year.bytes().all(|b| b.is_ascii_digit())
                && time.len() == 8
                && time.split(':').count() == 3
                && time
                    .split(':')
                    .all(|t| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ValueError::Date)
    }
}

/// Checks a Call-ID: `word [ "@" word ]`.
pub fn check_call_id(value: &str) -> Result<(), ValueError> {
    let v = trim_lws(value);
    let (a, b) = match v.split_once('@') {
        Some((a, b)) => (a, Some(b)),
        None => (v, None),
    };
    let word = |w: &str| !w.is_empty() && w.bytes().all(crate::chars::is_word);
    if word(a) && b.is_none_or(word) {
        Ok(())
    } else {
        Err(ValueError::Syntax)
    }
}

/// Checks a Via element fully (syntax and the known parameters).
pub(crate) fn check_via(value: &str) -> Result<(), ValueError> {
    Via::parse(value)?.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_forms() {
        let v = Via::parse("SIP  / 2.0  / UDP  192.0.2.2;branch=390skdjuw")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.transport(), "UDP");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert_eq!(v.port(), None);
        let v =
            Via::parse("SIP/2.0/TCP [2001:db8::9]:5070 ;rport=5071; received=2001:db8::1;keep=30")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.host_str(), "[2001:db8::9]");
        assert_eq!(v.port(), Some(5070));
        assert_eq!(v.rport(), Some(Some(5071)));
        assert_eq!(v.received(), Some("2001:db8::1"));
        assert_eq!(v.keep(), Some(Some(30)));
        let v = Via::parse("SIP/2.0/UDP h.example.com : 5060;rport;maddr=239.1.1.1;ttl=16")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.ttl(), Some(16));
        assert!(check_via("SIP/2.0/UDP h;ttl=300").is_err());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(check_via("SIP/2.0/UDP h;;").is_err());
        assert!(Via::parse("SIP/2.0/UDP h x").is_err());
        assert!(Via::parse("SIP/2.0 UDP h").is_err());
    }

    #[test]
    fn scalars() {
        assert_eq!(CSeq::parse("4711 INVITE").map(|c| c.seq), Ok(4711));
        assert!(CSeq::parse("36893488147419103232 INVITE").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("1INVITE").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
        assert_eq!(max_forwards("70"), Ok(70));
        assert_eq!(max_forwards("300"), Err(ValueError::OutOfRange));
        assert_eq!(delta_seconds("4294967296"), Err(ValueError::OutOfRange));
        assert_eq!(RAck::parse("776656 1 INVITE").map(|r| r.rseq), Ok(776656));
        let e = ParamValue::parse("dialog;id=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.params().value("id"), Some("1"));
        assert_eq!(
            ParamValue::parse("120 (I'm in a meeting);duration=60")
                .ok()
                .and_then(|p| p.seconds()),
            Some(120)
        );
        assert!(check_date("Sat, 13 Nov 2010 23:29:00 GMT").is_ok());
        assert!(check_date("Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(check_call_id("abc@host").is_ok());
        assert!(check_call_id("a b").is_err());
        assert_eq!(
            tokens(" 100rel, timer ,path").collect::<Vec<_>>(),
            ["100rel", "timer", "path"]
        );
    }
}
