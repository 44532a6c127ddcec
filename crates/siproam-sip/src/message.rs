//! The SIP message: zero-copy parse, typed access, editing, printing.
//!
//! A [`Message`] keeps the bytes it was parsed from (`bytes::Bytes`) and a
//! table of header fields as offsets into them; nothing is copied while
//! parsing. Typed views ([`Via`], [`NameAddr`], [`CSeq`], …) are parsed on
//! demand and borrow from the message. Edits replace a field's value with
//! owned text; every untouched field prints byte-for-byte as it came.
//!
//! Invariants, kept by parsing and by every edit: a message has exactly one
//! valid Call-ID and CSeq, exactly one From and one To, and a request's
//! CSeq method equals its method.

use bytes::Bytes;

use crate::chars::{is_lws, is_token, is_token_str, trim_lws};
use crate::digest::{Challenge, Credentials};
use crate::error::{ErrorKind, MessageKind, ParseError, UriError, ValueError};
use crate::header::HeaderName;
use crate::headers::{self, CSeq, ParamValue, RAck, Via};
use crate::method::Method;
use crate::name_addr::{split_list, NameAddr};
use crate::params;
use crate::uri::Uri;

/// Limits applied while parsing, against memory exhaustion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (start line, headers and body), in bytes.
    pub max_message: usize,
    /// Most header fields (lines after unfolding).
    pub max_headers: usize,
    /// Longest physical line, in bytes.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 64 * 1024,
            max_headers: 256,
            max_line: 16 * 1024,
        }
    }
}

/// A range of the message's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        // Messages are bounded by `Limits::max_message`, far below 4 GiB.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Text that is either a span of the parsed bytes or, after an edit, an
/// index into the message's owned strings (this keeps a field small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    Span(Span),
    Owned(u32),
}

#[derive(Debug, Clone)]
struct Field {
    name: HeaderName,
    name_text: Text,
    value: Text,
    /// The field's lines as received, CRLF included; `None` once edited.
    raw: Option<Span>,
}

#[derive(Debug, Clone)]
enum Start {
    Request { method: Text, uri: Text },
    Response { code: u16, reason: Text },
}

/// A parsed SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Bytes,
    start: Start,
    /// The start line as received, CRLF included; `None` once edited.
    start_raw: Option<Span>,
    fields: Vec<Field>,
    body: Bytes,
    /// Text written by edits; `Text::Owned` indexes it.
    owned: Vec<Box<str>>,
    edited: bool,
    /// Where the fields every transaction needs are, kept by `reindex`.
    index: Index,
}

/// The texts of the Call-ID, the CSeq and the top Via element, found once
/// after parsing and after each edit.
#[derive(Debug, Clone, Copy)]
struct Index {
    call_id: Text,
    cseq_seq: u32,
    cseq_method: Text,
    top_via: Option<Text>,
}

const NO_TEXT: Text = Text::Span(Span { start: 0, end: 0 });

/// One header field, as seen through [`Message::headers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    /// The recognised name ([`HeaderName::Other`] for unknown ones).
    pub name: HeaderName,
    /// The name as written (a compact form stays compact).
    pub name_text: &'a str,
    /// The value, LWS-trimmed; folded lines keep their CRLF and LWS.
    pub value: &'a str,
}

/// A Contact header element: `*` or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *` (remove all bindings).
    Star,
    /// A contact address with its parameters.
    Addr(NameAddr<'a>),
}

/// Why an edit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The header name is not a token.
    #[error("invalid header name")]
    InvalidName,
    /// The value contains CR or LF, or does not follow the header's grammar.
    #[error("invalid value: {0}")]
    InvalidValue(#[from] ValueError),
    /// The URI is invalid.
    #[error("invalid URI: {0}")]
    InvalidUri(#[from] UriError),
    /// The header is mandatory and cannot be removed.
    #[error("{0} is mandatory")]
    Mandatory(HeaderName),
    /// The header or element to edit is not there.
    #[error("no such header element")]
    NotFound,
    /// The edit applies to requests only.
    #[error("not a request")]
    NotRequest,
}

fn text_of<'a>(buf: &'a [u8], owned: &'a [Box<str>], t: &Text) -> &'a str {
    let bytes: &[u8] = match t {
        Text::Span(s) => buf.get(s.range()).unwrap_or_default(),
        Text::Owned(i) => return owned.get(*i as usize).map(|b| &**b).unwrap_or_default(),
    };
    // The header section was checked to be UTF-8 while parsing and owned
    // text comes from `&str`; the fallback is unreachable.
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn find_crlf_line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    // returns (end of line content, start of next line)
    let rel = memchr::memchr(b'\n', buf.get(from..)?)?;
    let nl = from + rel;
    let end = if nl > from && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

impl Message {
    /// Parses a message from a datagram or a framed stream message, with
    /// the default [`Limits`]. Leading CRLFs are skipped; bytes after the
    /// body (by Content-Length) are ignored, as RFC 3261 §18.3 says.
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        Self::parse_with(buf, &Limits::default())
    }

    /// Parses with explicit limits.
    pub fn parse_with(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        Parser {
            limits,
            kind: MessageKind::Unknown,
        }
        .parse(&buf)
    }

    fn text(&self, t: &Text) -> &str {
        text_of(&self.buf, &self.owned, t)
    }

    // ----- start line -------------------------------------------------

    /// True for a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }

    /// The request's method (`None` for a response).
    pub fn method(&self) -> Option<Method<'_>> {
        match &self.start {
            Start::Request { method, .. } => Some(Method::from_token(self.text(method))),
            Start::Response { .. } => None,
        }
    }

    /// The Request-URI text (`None` for a response).
    pub fn request_uri_str(&self) -> Option<&str> {
        match &self.start {
            Start::Request { uri, .. } => Some(self.text(uri)),
            Start::Response { .. } => None,
        }
    }

    /// The parsed Request-URI (`None` for a response, or when it does not
    /// follow its scheme's grammar, which [`Message::validate`] reports).
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        self.request_uri_str().and_then(|u| Uri::parse(u).ok())
    }

    /// The status code (`None` for a request).
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            Start::Response { code, .. } => Some(*code),
            Start::Request { .. } => None,
        }
    }

    /// The reason phrase (`None` for a request).
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            Start::Response { reason, .. } => Some(self.text(reason)),
            Start::Request { .. } => None,
        }
    }

    // ----- headers ----------------------------------------------------

    /// All header fields in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> {
        self.fields.iter().map(|f| HeaderRef {
            name: f.name,
            name_text: self.text(&f.name_text),
            value: self.text(&f.value),
        })
    }

    /// The value of the first field with this name.
    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.header_values(name).next()
    }

    /// The values of every field with this name, one per header line.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |f| f.name == name)
            .map(|f| self.text(&f.value))
    }

    /// The value of the first field whose name (not a known one) matches
    /// case-insensitively.
    pub fn header_by_name(&self, name: &str) -> Option<&str> {
        let known = HeaderName::from_bytes(name.as_bytes());
        self.fields
            .iter()
            .find(|f| {
                f.name == known
                    && (known != HeaderName::Other
                        || self.text(&f.name_text).eq_ignore_ascii_case(name))
            })
            .map(|f| self.text(&f.value))
    }

    /// The comma-separated elements of a list header across all its lines.
    pub fn elements(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.header_values(name).flat_map(split_list)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &str {
        self.text(&self.index.call_id)
    }

    /// The CSeq.
    pub fn cseq(&self) -> CSeq<'_> {
        CSeq {
            seq: self.index.cseq_seq,
            method: Method::from_token(self.text(&self.index.cseq_method)),
        }
    }

    /// The top Via element.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        let first = self
            .index
            .top_via
            .ok_or_else(|| self.error(ErrorKind::MissingHeader(HeaderName::Via)))?;
        Via::parse(self.text(&first)).map_err(|e| self.header_error(HeaderName::Via, e))
    }

    /// Every Via element, top first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ValueError>> {
        self.elements(HeaderName::Via).map(Via::parse)
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        self.single_name_addr(HeaderName::From)
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        self.single_name_addr(HeaderName::To)
    }

    fn single_name_addr(&self, name: HeaderName) -> Result<NameAddr<'_>, ParseError> {
        let v = self
            .header(name)
            .ok_or_else(|| self.error(ErrorKind::MissingHeader(name)))?;
        NameAddr::parse(v).map_err(|e| self.header_error(name, e))
    }

    /// Contact elements in order.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, ValueError>> {
        self.elements(HeaderName::Contact).map(|e| {
            if e == "*" {
                Ok(Contact::Star)
            } else {
                NameAddr::parse(e).map(Contact::Addr)
            }
        })
    }

    /// Route elements in order.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ValueError>> {
        self.elements(HeaderName::Route).map(NameAddr::parse)
    }

    /// Record-Route elements in order.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ValueError>> {
        self.elements(HeaderName::RecordRoute).map(NameAddr::parse)
    }

    /// Path elements in order (RFC 3327).
    pub fn paths(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ValueError>> {
        self.elements(HeaderName::Path).map(NameAddr::parse)
    }

    /// Content-Length, if present (parsing checked it; on a datagram a
    /// message may omit it, and then the body is the rest of the datagram).
    pub fn content_length(&self) -> Option<usize> {
        self.header(HeaderName::ContentLength)
            .and_then(|v| headers::delta_seconds(v).ok())
            .map(|n| n as usize)
    }

    /// Max-Forwards, if present.
    pub fn max_forwards(&self) -> Option<Result<u8, ValueError>> {
        self.header(HeaderName::MaxForwards)
            .map(headers::max_forwards)
    }

    /// Expires, if present.
    pub fn expires(&self) -> Option<Result<u32, ValueError>> {
        self.header(HeaderName::Expires).map(headers::delta_seconds)
    }

    /// Min-Expires, if present.
    pub fn min_expires(&self) -> Option<Result<u32, ValueError>> {
        self.header(HeaderName::MinExpires)
            .map(headers::delta_seconds)
    }

    /// Flow-Timer (RFC 5626), if present.
    pub fn flow_timer(&self) -> Option<Result<u32, ValueError>> {
        self.header(HeaderName::FlowTimer)
            .map(headers::delta_seconds)
    }

    /// Min-SE (RFC 4028), if present.
    pub fn min_se(&self) -> Option<Result<u32, ValueError>> {
        self.header(HeaderName::MinSe)
            .map(|v| ParamValue::parse(v).and_then(|p| p.seconds().ok_or(ValueError::Syntax)))
    }

    /// RSeq (RFC 3262), if present.
    pub fn rseq(&self) -> Option<Result<u32, ValueError>> {
        self.header(HeaderName::RSeq).map(|v| {
            headers::delta_seconds(v).and_then(|n| {
                if n > 0 && n < 1 << 31 {
                    Ok(n)
                } else {
                    Err(ValueError::OutOfRange)
                }
            })
        })
    }

    /// RAck (RFC 3262), if present.
    pub fn rack(&self) -> Option<Result<RAck<'_>, ValueError>> {
        self.header(HeaderName::RAck).map(RAck::parse)
    }

    /// Content-Type, if present.
    pub fn content_type(&self) -> Option<Result<ParamValue<'_>, ValueError>> {
        self.header(HeaderName::ContentType).map(ParamValue::parse)
    }

    /// Event, if present.
    pub fn event(&self) -> Option<Result<ParamValue<'_>, ValueError>> {
        self.header(HeaderName::Event).map(ParamValue::parse)
    }

    /// Subscription-State, if present.
    pub fn subscription_state(&self) -> Option<Result<ParamValue<'_>, ValueError>> {
        self.header(HeaderName::SubscriptionState)
            .map(ParamValue::parse)
    }

    /// Session-Expires (RFC 4028), if present.
    pub fn session_expires(&self) -> Option<Result<ParamValue<'_>, ValueError>> {
        self.header(HeaderName::SessionExpires)
            .map(ParamValue::parse)
    }

    /// Retry-After, if present.
    pub fn retry_after(&self) -> Option<Result<ParamValue<'_>, ValueError>> {
        self.header(HeaderName::RetryAfter).map(ParamValue::parse)
    }

    /// Replaces (RFC 3891), if present.
    pub fn replaces(&self) -> Option<Result<ParamValue<'_>, ValueError>> {
        self.header(HeaderName::Replaces).map(ParamValue::parse)
    }

    /// The option tags or methods of a token-list header (Supported,
    /// Require, Proxy-Require, Unsupported, Allow, Allow-Events).
    pub fn tokens(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.header_values(name).flat_map(headers::tokens)
    }

    /// True when a token-list header lists `tag` (case-insensitively).
    pub fn has_token(&self, name: HeaderName, tag: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(tag))
    }

    /// WWW-Authenticate challenges, one per line.
    pub fn www_authenticate(
        &self,
    ) -> impl Iterator<Item = Result<Challenge<'_>, crate::digest::DigestError>> {
        self.header_values(HeaderName::WwwAuthenticate)
            .map(Challenge::parse)
    }

    /// Proxy-Authenticate challenges, one per line.
    pub fn proxy_authenticate(
        &self,
    ) -> impl Iterator<Item = Result<Challenge<'_>, crate::digest::DigestError>> {
        self.header_values(HeaderName::ProxyAuthenticate)
            .map(Challenge::parse)
    }

    /// Authorization credentials, one per line.
    pub fn authorization(
        &self,
    ) -> impl Iterator<Item = Result<Credentials<'_>, crate::digest::DigestError>> {
        self.header_values(HeaderName::Authorization)
            .map(Credentials::parse)
    }

    /// Proxy-Authorization credentials, one per line.
    pub fn proxy_authorization(
        &self,
    ) -> impl Iterator<Item = Result<Credentials<'_>, crate::digest::DigestError>> {
        self.header_values(HeaderName::ProxyAuthorization)
            .map(Credentials::parse)
    }

    /// User-Agent, if present.
    pub fn user_agent(&self) -> Option<&str> {
        self.header(HeaderName::UserAgent)
    }

    /// Server, if present.
    pub fn server(&self) -> Option<&str> {
        self.header(HeaderName::Server)
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    fn kind(&self) -> MessageKind {
        if self.is_request() {
            MessageKind::Request
        } else {
            MessageKind::Response
        }
    }

    fn error(&self, kind: ErrorKind) -> ParseError {
        ParseError::new(kind, self.kind())
    }

    fn header_error(&self, header: HeaderName, reason: ValueError) -> ParseError {
        ParseError::header(header, reason, self.kind())
    }

    // ----- validation -------------------------------------------------

    /// Checks every known header against its grammar (parsing only checks
    /// what every message needs: start line, Call-ID, CSeq, Content-Length
    /// and the presence of Via, From and To). Returns the first problem.
    pub fn validate(&self) -> Result<(), ParseError> {
        let mut first = None;
        self.check_fields(|_, e| {
            first = Some(e);
            false
        });
        first.map_or(Ok(()), Err)
    }

    /// Every problem [`Message::validate`] would find, not only the first,
    /// each with the 1-based line it stands on in the message as received
    /// (`None` for a field added by an edit). For a linter: a stack
    /// answers the first.
    pub fn problems(&self) -> Vec<(Option<usize>, ParseError)> {
        let mut all = Vec::new();
        self.check_fields(|line, e| {
            all.push((line, e));
            true
        });
        all
    }

    /// The 1-based line a span of the received bytes starts on.
    fn line_at(&self, at: usize) -> usize {
        self.buf
            .get(..at)
            .map_or(0, |b| memchr::memchr_iter(b'\n', b).count())
            + 1
    }

    /// Runs the grammar checks, handing each problem and its line to
    /// `found`, which says whether to go on.
    fn check_fields(&self, mut found: impl FnMut(Option<usize>, ParseError) -> bool) {
        if let Some(uri) = self.request_uri_str() {
            let bad = match Uri::parse(uri) {
                Err(e) => Some(ErrorKind::InvalidRequestUri(e)),
                Ok(Uri::Sip(s)) if !s.headers().is_empty() => {
                    Some(ErrorKind::InvalidRequestUri(UriError::Headers))
                }
                Ok(_) => None,
            };
            if let Some(kind) = bad {
                let line = self.start_raw.map(|_| 1);
                if !found(line, self.error(kind)) {
                    return;
                }
            }
        }
        for f in &self.fields {
            let v = self.text(&f.value);
            let fail = |e: ValueError| self.header_error(f.name, e);
            let r: Result<(), ValueError> = match f.name {
                HeaderName::Via => each(v, headers::check_via),
                HeaderName::From | HeaderName::To => {
                    single(v).and_then(|e| NameAddr::parse(e).map(drop))
                }
                HeaderName::Contact => {
                    if trim_lws(v) == "*" {
                        Ok(())
                    } else {
                        each(v, |e| {
                            let n = NameAddr::parse(e)?;
                            check_contact_params(&n)
                        })
                    }
                }
                HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Path
                | HeaderName::ServiceRoute
                | HeaderName::PAssertedIdentity => each(v, |e| NameAddr::parse(e).map(drop)),
                HeaderName::ReferTo | HeaderName::ReferredBy | HeaderName::ReplyTo => {
                    single(v).and_then(|e| NameAddr::parse(e).map(drop))
                }
                HeaderName::MaxForwards => headers::max_forwards(v).map(drop),
                HeaderName::Expires | HeaderName::MinExpires | HeaderName::FlowTimer => {
                    headers::delta_seconds(v).map(drop)
                }
                HeaderName::RSeq => self.rseq().unwrap_or(Ok(0)).map(drop),
                HeaderName::RAck => RAck::parse(v).map(drop),
                HeaderName::MinSe | HeaderName::SessionExpires | HeaderName::RetryAfter => {
                    ParamValue::parse(v)
                        .and_then(|p| p.seconds().map(drop).ok_or(ValueError::OutOfRange))
                }
                HeaderName::Supported
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Unsupported
                | HeaderName::Allow
                | HeaderName::AllowEvents
                | HeaderName::ContentEncoding => {
                    if headers::tokens(v).all(is_token_str) {
                        Ok(())
                    } else {
                        Err(ValueError::Syntax)
                    }
                }
                HeaderName::Event
                | HeaderName::SubscriptionState
                | HeaderName::ContentDisposition => ParamValue::parse(v).and_then(|p| {
                    if is_token_str(p.value()) {
                        Ok(())
                    } else {
                        Err(ValueError::Syntax)
                    }
                }),
                HeaderName::ContentType => {
                    ParamValue::parse(v).and_then(|p| check_media_type(p.value()))
                }
                HeaderName::Accept => each_allow_empty(v, |e| {
                    ParamValue::parse(e).and_then(|p| check_media_type(p.value()))
                }),
                HeaderName::Replaces => {
                    ParamValue::parse(v).and_then(|p| headers::check_call_id(p.value()))
                }
                HeaderName::Date => headers::check_date(v),
                HeaderName::Warning => each(v, check_warning),
                HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate => Challenge::parse(v)
                    .map(drop)
                    .map_err(|_| ValueError::Syntax),
                HeaderName::Authorization | HeaderName::ProxyAuthorization => Credentials::parse(v)
                    .map(drop)
                    .map_err(|_| ValueError::Syntax),
                _ => Ok(()),
            };
            if let Err(e) = r {
                let line = f.raw.map(|r| self.line_at(r.start as usize));
                if !found(line, fail(e)) {
                    return;
                }
            }
        }
    }

    /// Applies a UAS's policy on top of [`Message::validate`]: the
    /// Request-URI scheme (416), required extensions (420), the body type
    /// (415) and the Accept header (406). Responses pass unchanged.
    pub fn check_policy(&self, policy: &Policy<'_>) -> Result<(), ParseError> {
        let Some(method) = self.method() else {
            return Ok(());
        };
        if !self.request_uri().is_some_and(|u| u.is_supported_scheme()) {
            return Err(self.error(ErrorKind::UnsupportedUriScheme));
        }
        if !matches!(method, Method::Ack | Method::Cancel) {
            let mut required = self.tokens(HeaderName::Require).chain(
                self.tokens(HeaderName::ProxyRequire)
                    .filter(|_| policy.is_proxy),
            );
            if required.any(|t| !policy.supported.iter().any(|s| s.eq_ignore_ascii_case(t))) {
                return Err(self.error(ErrorKind::UnsupportedExtension));
            }
        }
        let session = matches!(
            method,
            Method::Invite | Method::Update | Method::Prack | Method::Ack
        );
        if session && !self.body.is_empty() && !policy.is_proxy {
            let disposition_session = self
                .header(HeaderName::ContentDisposition)
                .and_then(|d| ParamValue::parse(d).ok())
                .is_none_or(|d| d.value().eq_ignore_ascii_case("session"));
            let ct = self.content_type().and_then(|c| c.ok()).map(|c| c.value());
            let acceptable = ct.is_some_and(|t| {
                t.eq_ignore_ascii_case("application/sdp")
                    || t.get(..10)
                        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
            });
            if disposition_session && !acceptable {
                return Err(self.error(ErrorKind::UnsupportedMediaType));
            }
        }
        if matches!(method, Method::Invite) && !policy.is_proxy {
            let mut accepts = self.elements(HeaderName::Accept).peekable();
            if accepts.peek().is_some() {
                let ok = accepts.filter_map(|a| ParamValue::parse(a).ok()).any(|a| {
                    let t = a.value();
                    t.eq_ignore_ascii_case("application/sdp")
                        || t == "*/*"
                        || t.eq_ignore_ascii_case("application/*")
                });
                if !ok {
                    return Err(self.error(ErrorKind::NotAcceptable));
                }
            }
        }
        Ok(())
    }

    // ----- printing ---------------------------------------------------

    /// Appends the message's bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if !self.edited {
            out.extend_from_slice(&self.buf);
            return;
        }
        match (&self.start, self.start_raw) {
            (_, Some(raw)) => out.extend_from_slice(self.buf.get(raw.range()).unwrap_or_default()),
            (Start::Request { method, uri }, None) => {
                out.extend_from_slice(self.text(method).as_bytes());
                out.push(b' ');
                out.extend_from_slice(self.text(uri).as_bytes());
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            (Start::Response { code, reason }, None) => {
                out.extend_from_slice(format!("SIP/2.0 {code} ").as_bytes());
                out.extend_from_slice(self.text(reason).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        for f in &self.fields {
            match f.raw {
                Some(raw) => out.extend_from_slice(self.buf.get(raw.range()).unwrap_or_default()),
                None => {
                    out.extend_from_slice(self.text(&f.name_text).as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(self.text(&f.value).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    /// The message's bytes. An unedited message returns the bytes it was
    /// parsed from, without copying.
    pub fn to_bytes(&self) -> Bytes {
        if !self.edited {
            return self.buf.clone();
        }
        // sized exactly, so the Vec becomes a Bytes without another
        // allocation
        let len = self.printed_len();
        let mut out = Vec::with_capacity(len);
        self.write_to(&mut out);
        debug_assert_eq!(out.len(), len, "printed_len mirrors write_to");
        Bytes::from(out)
    }

    /// The exact length [`Message::write_to`] produces.
    fn printed_len(&self) -> usize {
        let start = match (&self.start, self.start_raw) {
            (_, Some(raw)) => raw.range().len(),
            (Start::Request { method, uri }, None) => {
                self.text(method).len() + 1 + self.text(uri).len() + 10
            }
            (Start::Response { reason, .. }, None) => 12 + self.text(reason).len() + 2,
        };
        let fields: usize = self
            .fields
            .iter()
            .map(|f| match f.raw {
                Some(raw) => raw.range().len(),
                None => self.text(&f.name_text).len() + 2 + self.text(&f.value).len() + 2,
            })
            .sum();
        start + fields + 2 + self.body.len()
    }

    // ----- editing ----------------------------------------------------

    /// Marks the message edited and finds Call-ID, CSeq and the top Via
    /// again. Edits check their values first, so this cannot fail here.
    fn touch(&mut self) {
        self.edited = true;
        if let Ok(index) = self.reindex() {
            self.index = index;
        }
    }

    /// A part of a text: a narrower span, or a new owned string.
    fn sub(&mut self, t: Text, range: std::ops::Range<usize>) -> Text {
        match t {
            Text::Span(s) => Text::Span(Span::new(
                s.start as usize + range.start,
                s.start as usize + range.end,
            )),
            Text::Owned(_) => {
                let part = self.text(&t).get(range).unwrap_or_default().to_owned();
                self.own(&part)
            }
        }
    }

    /// Finds and checks Call-ID, CSeq (and its method against the
    /// request's) and the top Via element.
    fn reindex(&mut self) -> Result<Index, ParseError> {
        let (mut call_id, mut cseq, mut via) = (None, None, None);
        for f in &self.fields {
            match f.name {
                HeaderName::CallId if call_id.is_none() => call_id = Some(f.value),
                HeaderName::CSeq if cseq.is_none() => cseq = Some(f.value),
                HeaderName::Via if via.is_none() => via = Some(f.value),
                _ => {}
            }
        }
        let call_id =
            call_id.ok_or_else(|| self.error(ErrorKind::MissingHeader(HeaderName::CallId)))?;
        headers::check_call_id(self.text(&call_id))
            .map_err(|e| self.header_error(HeaderName::CallId, e))?;
        let cseq_text =
            cseq.ok_or_else(|| self.error(ErrorKind::MissingHeader(HeaderName::CSeq)))?;
        let value = self.text(&cseq_text);
        let parsed = CSeq::parse(value).map_err(|e| self.header_error(HeaderName::CSeq, e))?;
        if self
            .method()
            .is_some_and(|m| m.as_str() != parsed.method.as_str())
        {
            return Err(self.error(ErrorKind::CSeqMethodMismatch));
        }
        let (seq, method_len, value_len) = (parsed.seq, parsed.method.as_str().len(), value.len());
        let cseq_method = self.sub(cseq_text, value_len - method_len..value_len);
        let top_via = match via {
            Some(v) => {
                let value = self.text(&v);
                let end = crate::chars::find_unquoted(value, 0, true, b',').unwrap_or(value.len());
                let element = value.get(..end).unwrap_or_default();
                let trimmed = element
                    .trim_end_matches(|c: char| c.is_ascii() && is_lws(c as u8))
                    .len();
                Some(self.sub(v, 0..trimmed))
            }
            None => None,
        };
        Ok(Index {
            call_id,
            cseq_seq: seq,
            cseq_method,
            top_via,
        })
    }

    fn own(&mut self, s: &str) -> Text {
        self.owned.push(s.into());
        Text::Owned((self.owned.len() - 1) as u32)
    }

    fn check_value(name: HeaderName, value: &str) -> Result<(), EditError> {
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(EditError::InvalidValue(ValueError::Syntax));
        }
        match name {
            HeaderName::CallId => headers::check_call_id(value)?,
            HeaderName::CSeq => drop(CSeq::parse(value)?),
            HeaderName::From | HeaderName::To => drop(NameAddr::parse(single(value)?)?),
            HeaderName::ContentLength => drop(headers::delta_seconds(value)?),
            _ => {}
        }
        Ok(())
    }

    fn new_field(&mut self, name: HeaderName, name_text: &str, value: &str) -> Field {
        let name_text = self.own(name_text);
        let value = self.own(value);
        Field {
            name,
            name_text,
            value,
            raw: None,
        }
    }

    /// True when field `f` is a header called `name` (`known` is its
    /// recognised form; unknown names compare their text).
    fn is_named(&self, f: &Field, known: HeaderName, name: &str) -> bool {
        f.name == known
            && (known != HeaderName::Other || self.text(&f.name_text).eq_ignore_ascii_case(name))
    }

    /// Replaces field `i`'s value with owned text.
    fn replace_value(&mut self, i: usize, value: &str) {
        let t = self.own(value);
        if let Some(f) = self.fields.get_mut(i) {
            f.value = t;
            f.raw = None;
        }
    }

    /// Removes the fields for which `drop` is true; returns how many.
    fn remove_fields(&mut self, drop: impl Fn(&Message, usize, &Field) -> bool) -> usize {
        let mask: Vec<bool> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| drop(self, i, f))
            .collect();
        let mut it = mask.iter();
        let before = self.fields.len();
        self.fields.retain(|_| !it.next().copied().unwrap_or(false));
        before - self.fields.len()
    }

    fn resolve_name(name: &str) -> Result<(HeaderName, &str), EditError> {
        if !is_token_str(name) {
            return Err(EditError::InvalidName);
        }
        let known = HeaderName::from_bytes(name.as_bytes());
        Ok((known, known.as_str().unwrap_or(name)))
    }

    /// Sets a header by name (`"Contact"`, `"X-Foo"`): the first field
    /// with that name gets the value in place, further ones are removed;
    /// appended at the end when absent.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), EditError> {
        let (known, canonical) = Self::resolve_name(name)?;
        let value = trim_lws(value);
        Self::check_value(known, value)?;
        if known == HeaderName::CSeq {
            self.check_cseq_method(value)?;
        }
        let first = self
            .fields
            .iter()
            .position(|f| self.is_named(f, known, name));
        match first {
            Some(i) => {
                self.remove_fields(|m, idx, f| idx > i && m.is_named(f, known, name));
                self.replace_value(i, value);
            }
            None => {
                let f = self.new_field(known, canonical, value);
                self.fields.push(f);
            }
        }
        self.touch();
        Ok(())
    }

    fn check_cseq_method(&self, value: &str) -> Result<(), EditError> {
        if let (Some(m), Ok(c)) = (self.method(), CSeq::parse(value)) {
            if m.as_str() != c.method.as_str() {
                return Err(EditError::InvalidValue(ValueError::Syntax));
            }
        }
        Ok(())
    }

    /// Appends a header field after the existing ones.
    pub fn push_header(&mut self, name: &str, value: &str) -> Result<(), EditError> {
        let len = self.fields.len();
        self.insert_header(len, name, value)
    }

    /// Inserts a header field before any other (a proxy adding its Via, a
    /// Record-Route, a Route).
    pub fn prepend_header(&mut self, name: &str, value: &str) -> Result<(), EditError> {
        self.insert_header(0, name, value)
    }

    /// Inserts a header field at position `index` among the fields.
    pub fn insert_header(
        &mut self,
        index: usize,
        name: &str,
        value: &str,
    ) -> Result<(), EditError> {
        let (known, canonical) = Self::resolve_name(name)?;
        let value = trim_lws(value);
        Self::check_value(known, value)?;
        if known.is_single()
            && self.fields.iter().any(|f| f.name == known)
            && known != HeaderName::Other
        {
            return Err(EditError::InvalidValue(ValueError::MultipleValues));
        }
        let index = index.min(self.fields.len());
        let f = self.new_field(known, canonical, value);
        self.fields.insert(index, f);
        self.touch();
        Ok(())
    }

    /// Removes every field with this name; returns how many went.
    /// Call-ID, CSeq, From and To cannot be removed.
    pub fn remove_header(&mut self, name: &str) -> Result<usize, EditError> {
        let (known, _) = Self::resolve_name(name)?;
        if matches!(
            known,
            HeaderName::CallId | HeaderName::CSeq | HeaderName::From | HeaderName::To
        ) {
            return Err(EditError::Mandatory(known));
        }
        let removed = self.remove_fields(|m, _, f| m.is_named(f, known, name));
        if removed > 0 {
            self.touch();
        }
        Ok(removed)
    }

    /// Finds the `occurrence`-th element of a list header across lines:
    /// (field index, element byte range within the field's value).
    fn locate(
        &self,
        name: HeaderName,
        occurrence: usize,
    ) -> Option<(usize, std::ops::Range<usize>)> {
        let mut n = 0;
        for (i, f) in self.fields.iter().enumerate() {
            if f.name != name {
                continue;
            }
            let v = self.text(&f.value);
            let single_valued = !name.is_list();
            let mut start = 0;
            loop {
                let end = if single_valued {
                    None
                } else {
                    crate::chars::find_unquoted(v, start, true, b',')
                };
                let stop = end.unwrap_or(v.len());
                if n == occurrence {
                    // trim the element's LWS
                    let raw = v.get(start..stop)?;
                    let lead = raw.len()
                        - raw
                            .trim_start_matches(|c: char| c.is_ascii() && is_lws(c as u8))
                            .len();
                    let trail = raw.len()
                        - raw
                            .trim_end_matches(|c: char| c.is_ascii() && is_lws(c as u8))
                            .len();
                    return Some((i, start + lead..stop - trail));
                }
                n += 1;
                match end {
                    Some(e) => start = e + 1,
                    None => break,
                }
            }
        }
        None
    }

    /// Replaces the `occurrence`-th element of a header (counting list
    /// elements across lines) with what `edit` makes of it.
    fn edit_element(
        &mut self,
        name: HeaderName,
        occurrence: usize,
        edit: impl FnOnce(&str) -> Result<String, EditError>,
    ) -> Result<(), EditError> {
        let (i, range) = self.locate(name, occurrence).ok_or(EditError::NotFound)?;
        let field = self.fields.get(i).ok_or(EditError::NotFound)?;
        let value = self.text(&field.value);
        let element = value.get(range.clone()).ok_or(EditError::NotFound)?;
        let folded = value.bytes().any(|b| b == b'\r' || b == b'\n');
        let unfolded: String = if folded {
            element
                .chars()
                .filter(|&c| c != '\r' && c != '\n')
                .collect()
        } else {
            element.to_owned()
        };
        let replacement = edit(&unfolded)?;
        if replacement
            .bytes()
            .any(|b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(EditError::InvalidValue(ValueError::Syntax));
        }
        // An edited field is printed on one line: folding (CRLF before
        // white space) in the rest of the value is unfolded.
        let mut new_value = String::with_capacity(value.len() + replacement.len());
        let before = value.get(..range.start).unwrap_or_default();
        let after = value.get(range.end..).unwrap_or_default();
        if folded {
            new_value.extend(before.chars().filter(|&c| c != '\r' && c != '\n'));
            new_value.push_str(&replacement);
            new_value.extend(after.chars().filter(|&c| c != '\r' && c != '\n'));
        } else {
            new_value.push_str(before);
            new_value.push_str(&replacement);
            new_value.push_str(after);
        }
        Self::check_value(name, &new_value)?;
        self.replace_value(i, &new_value);
        self.touch();
        Ok(())
    }

    /// Sets (`Some(Some(v))`), flags (`Some(None)`) or removes (`None`) a
    /// header parameter on the `occurrence`-th element of a header: Via
    /// `received`/`rport`, Contact `expires`/`reg-id`, To `tag`, ….
    pub fn set_header_param(
        &mut self,
        name: HeaderName,
        occurrence: usize,
        param: &str,
        value: Option<Option<&str>>,
    ) -> Result<(), EditError> {
        check_param(param, value)?;
        self.edit_element(name, occurrence, |element| {
            let split = param_split(name, element)?;
            let (head, params) = element.split_at(split.min(element.len()));
            Ok(format!("{head}{}", params::edit(params, param, value)))
        })
    }

    /// Sets, flags or removes several parameters of one header element
    /// in one edit (as [`Message::set_header_param`] each in turn, with
    /// one re-check of the message instead of one per parameter).
    pub fn set_header_params(
        &mut self,
        name: HeaderName,
        occurrence: usize,
        edits: &[(&str, Option<Option<&str>>)],
    ) -> Result<(), EditError> {
        for (param, value) in edits {
            check_param(param, *value)?;
        }
        self.edit_element(name, occurrence, |element| {
            let split = param_split(name, element)?;
            let (head, params) = element.split_at(split.min(element.len()));
            let mut params = params.to_owned();
            for (param, value) in edits {
                params = params::edit(&params, param, *value);
            }
            Ok(format!("{head}{params}"))
        })
    }

    /// Sets a parameter on the top Via (`received`, `rport`, `branch`).
    pub fn set_top_via_param(
        &mut self,
        param: &str,
        value: Option<Option<&str>>,
    ) -> Result<(), EditError> {
        self.set_header_param(HeaderName::Via, 0, param, value)
    }

    /// Removes the top Via element (a proxy forwarding a response). The
    /// last Via cannot be removed: a response with one Via left is for
    /// this element and is not forwarded.
    pub fn remove_top_via(&mut self) -> Result<(), EditError> {
        if self
            .elements(HeaderName::Via)
            .filter(|e| !e.is_empty())
            .nth(1)
            .is_none()
        {
            return Err(EditError::Mandatory(HeaderName::Via));
        }
        let (i, range) = self.locate(HeaderName::Via, 0).ok_or(EditError::NotFound)?;
        let field = self.fields.get(i).ok_or(EditError::NotFound)?;
        let value = self.text(&field.value);
        // drop the element, the separating comma(s) and the LWS after it
        let rest = value
            .get(range.end..)
            .unwrap_or_default()
            .trim_start_matches(|c: char| c == ',' || (c.is_ascii() && is_lws(c as u8)));
        if rest.is_empty() {
            self.fields.remove(i);
        } else {
            let rest: String = rest.chars().filter(|&c| c != '\r' && c != '\n').collect();
            self.replace_value(i, &rest);
        }
        self.touch();
        Ok(())
    }

    /// Sets a URI parameter on the URI of the `occurrence`-th element of a
    /// name-addr header (`;ob` on a Contact, `;transport=tcp` on a
    /// Route). An addr-spec element is rewritten into `<…>` form so the
    /// parameter stays a URI parameter.
    pub fn set_uri_param(
        &mut self,
        name: HeaderName,
        occurrence: usize,
        param: &str,
        value: Option<Option<&str>>,
    ) -> Result<(), EditError> {
        check_param(param, value)?;
        self.edit_element(name, occurrence, |element| {
            let na = NameAddr::parse(element)?;
            let uri = na.uri().as_str();
            let new_uri = crate::uri::with_param(uri, param, value)?;
            if na.is_name_addr() {
                Ok(element.replacen(&format!("<{uri}>"), &format!("<{new_uri}>"), 1))
            } else {
                let params = na.params().as_str();
                Ok(format!("<{new_uri}>{params}"))
            }
        })
    }

    /// Replaces the URI of the `occurrence`-th element of a name-addr
    /// header (the Contact a network change rewrites), keeping the display
    /// name and header parameters.
    pub fn set_header_uri(
        &mut self,
        name: HeaderName,
        occurrence: usize,
        uri: &str,
    ) -> Result<(), EditError> {
        Uri::parse(uri)?;
        self.edit_element(name, occurrence, |element| {
            let na = NameAddr::parse(element)?;
            let old = na.uri().as_str();
            if na.is_name_addr() {
                Ok(element.replacen(&format!("<{old}>"), &format!("<{uri}>"), 1))
            } else {
                Ok(format!("<{uri}>{}", na.params().as_str()))
            }
        })
    }

    /// Replaces the Request-URI.
    pub fn set_request_uri(&mut self, new_uri: &str) -> Result<(), EditError> {
        Uri::parse(new_uri)?;
        if !self.is_request() {
            return Err(EditError::NotRequest);
        }
        let t = self.own(new_uri);
        if let Start::Request { uri, .. } = &mut self.start {
            *uri = t;
        }
        self.start_raw = None;
        self.touch();
        Ok(())
    }

    /// Replaces the body, setting Content-Length and (when given)
    /// Content-Type; with an empty body and no type, Content-Type goes.
    pub fn set_body(&mut self, body: Bytes, content_type: Option<&str>) -> Result<(), EditError> {
        match content_type {
            Some(ct) => self.set_header("Content-Type", ct)?,
            None if body.is_empty() => drop(self.remove_header("Content-Type")?),
            None => {}
        }
        self.set_header("Content-Length", &body.len().to_string())?;
        self.body = body;
        self.touch();
        Ok(())
    }
}

/// Where a header element's parameters begin (the first `;` that is not
/// inside the URI).
fn param_split(name: HeaderName, element: &str) -> Result<usize, EditError> {
    let start = match name {
        HeaderName::From
        | HeaderName::To
        | HeaderName::Contact
        | HeaderName::Route
        | HeaderName::RecordRoute
        | HeaderName::Path
        | HeaderName::ServiceRoute
        | HeaderName::ReferTo
        | HeaderName::ReferredBy => {
            let na = NameAddr::parse(element)?;
            return Ok(element.len() - na.params().as_str().len());
        }
        _ => 0,
    };
    Ok(crate::chars::find_unquoted(element, start, false, b';').unwrap_or(element.len()))
}

fn check_param(param: &str, value: Option<Option<&str>>) -> Result<(), EditError> {
    if !is_token_str(param) {
        return Err(EditError::InvalidName);
    }
    if let Some(Some(v)) = value {
        if !crate::params::is_gen_value(v) {
            return Err(EditError::InvalidValue(ValueError::Syntax));
        }
    }
    Ok(())
}

fn each(v: &str, check: impl Fn(&str) -> Result<(), ValueError>) -> Result<(), ValueError> {
    for e in split_list(v) {
        if e.is_empty() {
            return Err(ValueError::EmptyElement);
        }
        check(e)?;
    }
    Ok(())
}

fn each_allow_empty(
    v: &str,
    check: impl Fn(&str) -> Result<(), ValueError>,
) -> Result<(), ValueError> {
    if trim_lws(v).is_empty() {
        return Ok(());
    }
    each(v, check)
}

fn single(v: &str) -> Result<&str, ValueError> {
    let mut it = split_list(v);
    let first = it.next().unwrap_or_default();
    if it.next().is_some() {
        return Err(ValueError::MultipleValues);
    }
    Ok(first)
}

fn check_contact_params(n: &NameAddr<'_>) -> Result<(), ValueError> {
    let p = n.params();
    if p.get("expires").is_some() && n.expires().is_none() {
        return Err(ValueError::OutOfRange);
    }
    if p.get("q").is_some() && n.q().is_none() {
        return Err(ValueError::Syntax);
    }
    if p.get("reg-id").is_some() && n.reg_id().is_none() {
        return Err(ValueError::Syntax);
    }
    Ok(())
}

fn check_media_type(t: &str) -> Result<(), ValueError> {
    match t.split_once('/') {
        Some((a, b)) if is_token_str(trim_lws(a)) && is_token_str(trim_lws(b)) => Ok(()),
        _ => Err(ValueError::Syntax),
    }
}

fn check_warning(e: &str) -> Result<(), ValueError> {
    let mut parts = e.splitn(3, ' ');
    let code = parts.next().unwrap_or_default();
    let agent = parts.next().unwrap_or_default();
    let text = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::OutOfRange);
    }
    if agent.is_empty()
        || crate::chars::quoted_string_len(trim_lws(text)) != Some(trim_lws(text).len())
    {
        return Err(ValueError::Syntax);
    }
    Ok(())
}

/// What a UAS (or proxy) supports, for [`Message::check_policy`].
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Option tags this element supports.
    pub supported: &'a [&'a str],
    /// Acting as a proxy: Proxy-Require is checked, the body is not.
    pub is_proxy: bool,
}

/// The option tags siproam supports.
pub const SUPPORTED_OPTION_TAGS: &[&str] =
    &["outbound", "path", "100rel", "replaces", "timer", "gruu"];

impl Default for Policy<'static> {
    fn default() -> Self {
        Policy {
            supported: SUPPORTED_OPTION_TAGS,
            is_proxy: false,
        }
    }
}

impl PartialEq for Message {
    /// Messages are equal when their start lines, header fields (names
    /// compared case-insensitively, values exactly) and bodies are.
    fn eq(&self, other: &Message) -> bool {
        let start_eq = match (&self.start, &other.start) {
            (
                Start::Request {
                    method: m1,
                    uri: u1,
                },
                Start::Request {
                    method: m2,
                    uri: u2,
                },
            ) => self.text(m1) == other.text(m2) && self.text(u1) == other.text(u2),
            (
                Start::Response {
                    code: c1,
                    reason: r1,
                },
                Start::Response {
                    code: c2,
                    reason: r2,
                },
            ) => c1 == c2 && self.text(r1) == other.text(r2),
            _ => false,
        };
        start_eq
            && self.body == other.body
            && self.fields.len() == other.fields.len()
            && self.headers().zip(other.headers()).all(|(a, b)| {
                a.name == b.name
                    && a.name_text.eq_ignore_ascii_case(b.name_text)
                    && a.value == b.value
            })
    }
}

impl Eq for Message {}

// ----- the parser ------------------------------------------------------

struct Parser<'b> {
    limits: &'b Limits,
    kind: MessageKind,
}

impl Parser<'_> {
    fn err(&self, kind: ErrorKind) -> ParseError {
        ParseError::new(kind, self.kind)
    }

    fn parse(mut self, input: &Bytes) -> Result<Message, ParseError> {
        let all: &[u8] = input;
        // skip leading CRLFs (RFC 3261 §7.5)
        let skip = all
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let data = all.get(skip..).unwrap_or_default();
        if data.is_empty() {
            return Err(self.err(ErrorKind::Empty));
        }
        // start line
        let (line_end, mut pos) = match find_crlf_line(data, 0) {
            Some(x) => x,
            None => {
                self.kind = classify(data);
                return Err(self.err(ErrorKind::Unterminated));
            }
        };
        if line_end > self.limits.max_line {
            self.kind = classify(data);
            return Err(self.err(ErrorKind::LineTooLong {
                limit: self.limits.max_line,
            }));
        }
        let line = data.get(..line_end).unwrap_or_default();
        let start = self.start_line(line, skip)?;
        let start_raw = Span::new(skip, skip + pos);

        // header section: find its end first, check UTF-8 once
        let mut fields: Vec<Field> = Vec::with_capacity(24);
        let mut content_length: Option<usize> = None;
        // which of Via, From, To, Call-ID, CSeq have been seen (bit per header)
        let mut seen = 0u8;
        let mut line_no = 1;
        let header_end;
        loop {
            let (end, next) = match find_crlf_line(data, pos) {
                Some(x) => x,
                None => return Err(self.err(ErrorKind::Unterminated)),
            };
            line_no += 1;
            if end > self.limits.max_message {
                return Err(self.err(ErrorKind::TooLarge {
                    limit: self.limits.max_message,
                }));
            }
            if end - pos > self.limits.max_line {
                return Err(self.err(ErrorKind::LineTooLong {
                    limit: self.limits.max_line,
                }));
            }
            if end == pos {
                header_end = next;
                break;
            }
            let line = data.get(pos..end).unwrap_or_default();
            // a continuation line before any header is malformed
            if matches!(line.first(), Some(b' ') | Some(b'\t')) {
                return Err(self.err(ErrorKind::MalformedHeader { line: line_no }));
            }
            // name: a token, optional SP/HTAB, then the colon
            let name_len = line
                .iter()
                .position(|&b| !is_token(b))
                .unwrap_or(line.len());
            let mut colon = name_len;
            while matches!(line.get(colon), Some(b' ') | Some(b'\t')) {
                colon += 1;
            }
            if name_len == 0 || line.get(colon) != Some(&b':') {
                return Err(self.err(ErrorKind::MalformedHeader { line: line_no }));
            }
            let name_bytes = line.get(..name_len).unwrap_or_default();
            let mut vstart = pos + colon + 1;
            while matches!(data.get(vstart), Some(b' ') | Some(b'\t')) {
                vstart += 1;
            }
            // folded continuation lines
            let mut vend = end;
            let mut field_next = next;
            while matches!(data.get(field_next), Some(b' ') | Some(b'\t')) {
                let (e, n) = find_crlf_line(data, field_next)
                    .ok_or_else(|| self.err(ErrorKind::Unterminated))?;
                line_no += 1;
                if e - field_next > self.limits.max_line {
                    return Err(self.err(ErrorKind::LineTooLong {
                        limit: self.limits.max_line,
                    }));
                }
                vend = e;
                field_next = n;
            }
            while vend > vstart
                && matches!(
                    data.get(vend - 1),
                    Some(b' ') | Some(b'\t') | Some(b'\r') | Some(b'\n')
                )
            {
                vend -= 1;
            }
            // a value that starts on a continuation line
            while vstart < vend
                && matches!(
                    data.get(vstart),
                    Some(b' ') | Some(b'\t') | Some(b'\r') | Some(b'\n')
                )
            {
                vstart += 1;
            }
            vstart = vstart.min(vend);
            if fields.len() >= self.limits.max_headers {
                return Err(self.err(ErrorKind::TooManyHeaders {
                    limit: self.limits.max_headers,
                }));
            }
            let name = HeaderName::from_bytes(name_bytes);
            let value = data.get(vstart..vend).unwrap_or_default();
            let bit = mandatory_bit(name);
            if bit != 0 {
                // Via may repeat; the other four may not
                if seen & bit != 0 && name != HeaderName::Via {
                    return Err(self.err(ErrorKind::DuplicateHeader(name)));
                }
                seen |= bit;
            } else if name == HeaderName::ContentLength {
                let v = std::str::from_utf8(value).map_err(|_| self.err(ErrorKind::InvalidUtf8))?;
                let n = headers::delta_seconds(v)
                    .map_err(|e| ParseError::header(name, e, self.kind))?
                    as usize;
                if content_length.is_some_and(|c| c != n) {
                    return Err(self.err(ErrorKind::ContentLengthConflict));
                }
                content_length = Some(n);
            }
            fields.push(Field {
                name,
                name_text: Text::Span(Span::new(skip + pos, skip + pos + name_len)),
                value: Text::Span(Span::new(skip + vstart, skip + vend)),
                raw: Some(Span::new(skip + pos, skip + field_next)),
            });
            pos = field_next;
        }
        let section = data.get(..header_end).unwrap_or_default();
        if !section.is_ascii() && std::str::from_utf8(section).is_err() {
            return Err(self.err(ErrorKind::InvalidUtf8));
        }
        for name in [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            if seen & mandatory_bit(name) == 0 {
                return Err(self.err(ErrorKind::MissingHeader(name)));
            }
        }
        // body
        let available = data.len() - header_end;
        let body_len = match content_length {
            Some(n) if n > available => {
                return Err(self.err(ErrorKind::BodyTruncated {
                    declared: n,
                    available,
                }));
            }
            Some(n) => n,
            None => available,
        };
        let total = header_end + body_len;
        if total > self.limits.max_message {
            return Err(self.err(ErrorKind::TooLarge {
                limit: self.limits.max_message,
            }));
        }
        let buf = input.slice(skip..skip + total);
        // spans were computed against `input`; rebase them onto `buf`
        let rebase = |s: Span| Span::new(s.start as usize - skip, s.end as usize - skip);
        let rebase_text = |t: Text| match t {
            Text::Span(s) => Text::Span(rebase(s)),
            o => o,
        };
        for f in &mut fields {
            f.name_text = rebase_text(std::mem::replace(
                &mut f.name_text,
                Text::Span(Span::new(0, 0)),
            ));
            f.value = rebase_text(std::mem::replace(&mut f.value, Text::Span(Span::new(0, 0))));
            f.raw = f.raw.map(rebase);
        }
        let start = match start {
            Start::Request { method, uri } => Start::Request {
                method: rebase_text(method),
                uri: rebase_text(uri),
            },
            Start::Response { code, reason } => Start::Response {
                code,
                reason: rebase_text(reason),
            },
        };
        let body = buf.slice(header_end..total);
        let mut msg = Message {
            buf,
            start,
            start_raw: Some(rebase(start_raw)),
            fields,
            body,
            owned: Vec::new(),
            edited: false,
            index: Index {
                call_id: NO_TEXT,
                cseq_seq: 0,
                cseq_method: NO_TEXT,
                top_via: None,
            },
        };
        msg.index = msg.reindex()?;
        Ok(msg)
    }

    fn start_line(&mut self, line: &[u8], offset: usize) -> Result<Start, ParseError> {
        self.kind = classify(line);
        if self.kind == MessageKind::Response {
            // SIP-Version SP Status-Code SP Reason-Phrase
            let sp1 = memchr::memchr(b' ', line)
                .ok_or_else(|| self.err(ErrorKind::MalformedStatusLine))?;
            let version = line.get(..sp1).unwrap_or_default();
            if !version.eq_ignore_ascii_case(b"SIP/2.0") {
                return Err(self.err(ErrorKind::UnsupportedVersion));
            }
            let rest = line.get(sp1 + 1..).unwrap_or_default();
            let code_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if code_len != 3 {
                return Err(self.err(ErrorKind::InvalidStatusCode));
            }
            let code = rest
                .get(..3)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (100..=699).contains(c))
                .ok_or_else(|| self.err(ErrorKind::InvalidStatusCode))?;
            let reason_start = match rest.get(3) {
                Some(b' ') => sp1 + 1 + 4,
                None => sp1 + 1 + 3, // missing SP and reason: accept liberally
                Some(_) => return Err(self.err(ErrorKind::MalformedStatusLine)),
            };
            let reason = line.get(reason_start..).unwrap_or_default();
            if std::str::from_utf8(reason).is_err() {
                return Err(self.err(ErrorKind::InvalidUtf8));
            }
            if reason.iter().any(|&b| b == b'\r' || b == b'\n') {
                return Err(self.err(ErrorKind::MalformedStatusLine));
            }
            return Ok(Start::Response {
                code,
                reason: Text::Span(Span::new(offset + reason_start, offset + line.len())),
            });
        }
        // Method SP Request-URI SP SIP-Version, single spaces
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.kind = MessageKind::Request;
            return Err(self.err(ErrorKind::MalformedRequestLine));
        };
        self.kind = MessageKind::Request;
        if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
            return Err(self.err(ErrorKind::InvalidMethod));
        }
        if uri.is_empty() || version.is_empty() {
            return Err(self.err(ErrorKind::MalformedRequestLine));
        }
        if !version.eq_ignore_ascii_case(b"SIP/2.0") {
            let looks_like_sip = version
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"));
            return Err(self.err(if looks_like_sip {
                ErrorKind::UnsupportedVersion
            } else {
                ErrorKind::MalformedRequestLine
            }));
        }
        // The URI's shape is checked here; its full grammar by `validate`
        // (typed values are parsed lazily).
        let uri_str = std::str::from_utf8(uri).map_err(|_| self.err(ErrorKind::InvalidUtf8))?;
        crate::uri::check_shape(uri_str).map_err(|e| self.err(ErrorKind::InvalidRequestUri(e)))?;
        let m_end = offset + method.len();
        Ok(Start::Request {
            method: Text::Span(Span::new(offset, m_end)),
            uri: Text::Span(Span::new(m_end + 1, m_end + 1 + uri.len())),
        })
    }
}

/// A bit for each header every message must carry; 0 for the others.
fn mandatory_bit(name: HeaderName) -> u8 {
    match name {
        HeaderName::Via => 1,
        HeaderName::From => 2,
        HeaderName::To => 4,
        HeaderName::CallId => 8,
        HeaderName::CSeq => 16,
        _ => 0,
    }
}

fn classify(line: &[u8]) -> MessageKind {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        MessageKind::Response
    } else if line.iter().take(32).any(|&b| b == b' ') {
        MessageKind::Request
    } else {
        MessageKind::Unknown
    }
}

/// Builds a message as text and parses it, so every built message obeys
/// the same invariants as a received one.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    text: Vec<u8>,
    /// Where the header lines begin (after the start line).
    headers_at: usize,
    body: Bytes,
}

impl MessageBuilder {
    /// Starts a request.
    pub fn request(method: Method<'_>, uri: &str) -> MessageBuilder {
        let mut text = Vec::with_capacity(512);
        text.extend_from_slice(method.as_str().as_bytes());
        text.push(b' ');
        text.extend_from_slice(uri.as_bytes());
        text.extend_from_slice(b" SIP/2.0\r\n");
        let headers_at = text.len();
        MessageBuilder {
            text,
            headers_at,
            body: Bytes::new(),
        }
    }

    /// Starts a response.
    pub fn response(code: u16, reason: &str) -> MessageBuilder {
        let mut text = Vec::with_capacity(512);
        text.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes());
        let headers_at = text.len();
        MessageBuilder {
            text,
            headers_at,
            body: Bytes::new(),
        }
    }

    /// Starts a response to `request` per RFC 3261 §8.2.6.2: its Via
    /// headers (all, in order), From, To (with `to_tag` added when the To
    /// has none and the code is above 100), Call-ID and CSeq are copied.
    /// Add further headers, then [`MessageBuilder::build`].
    pub fn response_to(
        request: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> MessageBuilder {
        let mut b = MessageBuilder::response(code, reason);
        for v in request.header_values(HeaderName::Via) {
            b = b.header("Via", v);
        }
        if let Some(from) = request.header(HeaderName::From) {
            b = b.header("From", from);
        }
        if let Some(to) = request.header(HeaderName::To) {
            let has_tag = request.to().is_ok_and(|t| t.tag().is_some());
            b = match to_tag {
                Some(tag) if !has_tag && code > 100 => b.header("To", &format!("{to};tag={tag}")),
                _ => b.header("To", to),
            };
        }
        b = b.header("Call-ID", request.call_id());
        let cseq = request.cseq();
        b.header("CSeq", &format!("{} {}", cseq.seq, cseq.method))
    }

    /// Adds a header line. CR and LF in the value are replaced by spaces
    /// so a value can never inject a header.
    pub fn header(mut self, name: &str, value: &str) -> MessageBuilder {
        self.text.extend_from_slice(name.as_bytes());
        self.text.extend_from_slice(b": ");
        self.text.extend(
            value
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.text.extend_from_slice(b"\r\n");
        self
    }

    /// Adds a header line before all others (a Via added by the
    /// transaction layer). CR and LF become spaces, as in
    /// [`MessageBuilder::header`].
    pub fn prepend_header(mut self, name: &str, value: &str) -> MessageBuilder {
        let mut line = Vec::with_capacity(name.len() + value.len() + 4);
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(b": ");
        line.extend(
            value
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        line.extend_from_slice(b"\r\n");
        let at = self.headers_at.min(self.text.len());
        self.text.splice(at..at, line);
        self
    }

    /// True when a header line with this name was added (compact forms
    /// count).
    pub fn has_header(&self, name: HeaderName) -> bool {
        self.text
            .get(self.headers_at..)
            .unwrap_or_default()
            .split(|&b| b == b'\n')
            .filter_map(|line| line.split(|&b| b == b':').next())
            .any(|n| HeaderName::from_bytes(n.trim_ascii()) == name)
    }

    /// The value of the first header line added with this name (compact
    /// forms count), trimmed; `None` when there is none or it is not
    /// UTF-8.
    pub fn header_value(&self, name: HeaderName) -> Option<&str> {
        self.text
            .get(self.headers_at..)
            .unwrap_or_default()
            .split(|&b| b == b'\n')
            .find_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let (n, v) = line.split_at(colon);
                (HeaderName::from_bytes(n.trim_ascii()) == name)
                    .then(|| std::str::from_utf8(v.get(1..)?.trim_ascii()).ok())
                    .flatten()
            })
    }

    /// Sets the body and its Content-Type.
    pub fn body(self, content_type: &str, body: Bytes) -> MessageBuilder {
        let mut b = self.header("Content-Type", content_type);
        b.body = body;
        b
    }

    /// Adds Content-Length and parses the result.
    pub fn build(mut self) -> Result<Message, ParseError> {
        let body = std::mem::take(&mut self.body);
        let mut text = self.header("Content-Length", &body.len().to_string()).text;
        text.extend_from_slice(b"\r\n");
        text.extend_from_slice(&body);
        Message::parse(Bytes::from(text))
    }
}
