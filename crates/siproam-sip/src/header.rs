//! Header names: the known ones as an enum, compact forms, case rules.
//!
//! Owns the mapping from the bytes of a header name to [`HeaderName`]; it
//! never looks at header values.

use std::fmt;

/// A header field name. Known names are variants; any other name is
/// [`HeaderName::Other`] and its text stays in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    /// `Accept`
    Accept,
    /// `Accept-Encoding`
    AcceptEncoding,
    /// `Accept-Language`
    AcceptLanguage,
    /// `Alert-Info`
    AlertInfo,
    /// `Allow`
    Allow,
    /// `Allow-Events`
    AllowEvents,
    /// `Authentication-Info`
    AuthenticationInfo,
    /// `Authorization`
    Authorization,
    /// `Call-ID`
    CallId,
    /// `Call-Info`
    CallInfo,
    /// `Contact`
    Contact,
    /// `Content-Disposition`
    ContentDisposition,
    /// `Content-Encoding`
    ContentEncoding,
    /// `Content-Language`
    ContentLanguage,
    /// `Content-Length`
    ContentLength,
    /// `Content-Type`
    ContentType,
    /// `CSeq`
    CSeq,
    /// `Date`
    Date,
    /// `Error-Info`
    ErrorInfo,
    /// `Event`
    Event,
    /// `Expires`
    Expires,
    /// `Flow-Timer`
    FlowTimer,
    /// `From`
    From,
    /// `In-Reply-To`
    InReplyTo,
    /// `Max-Forwards`
    MaxForwards,
    /// `Min-Expires`
    MinExpires,
    /// `Min-SE`
    MinSe,
    /// `MIME-Version`
    MimeVersion,
    /// `Organization`
    Organization,
    /// `Path`
    Path,
    /// `Priority`
    Priority,
    /// `Proxy-Authenticate`
    ProxyAuthenticate,
    /// `Proxy-Authorization`
    ProxyAuthorization,
    /// `Proxy-Require`
    ProxyRequire,
    /// `RAck`
    RAck,
    /// `Reason`
    Reason,
    /// `Record-Route`
    RecordRoute,
    /// `Refer-To`
    ReferTo,
    /// `Referred-By`
    ReferredBy,
    /// `Replaces`
    Replaces,
    /// `Reply-To`
    ReplyTo,
    /// `Require`
    Require,
    /// `Retry-After`
    RetryAfter,
    /// `Route`
    Route,
    /// `RSeq`
    RSeq,
    /// `Server`
    Server,
    /// `Service-Route`
    ServiceRoute,
    /// `Session-Expires`
    SessionExpires,
    /// `Subject`
    Subject,
    /// `Subscription-State`
    SubscriptionState,
    /// `Supported`
    Supported,
    /// `Timestamp`
    Timestamp,
    /// `To`
    To,
    /// `Unsupported`
    Unsupported,
    /// `User-Agent`
    UserAgent,
    /// `Via`
    Via,
    /// `Warning`
    Warning,
    /// `WWW-Authenticate`
    WwwAuthenticate,
    /// `P-Asserted-Identity`
    PAssertedIdentity,
    /// `Security-Client`
    SecurityClient,
    /// `Security-Server`
    SecurityServer,
    /// `Security-Verify`
    SecurityVerify,
    /// Any header this crate has no name for; kept raw.
    Other,
}

/// Known names (canonical spelling) by perfect-hash slot; see [`HeaderName::from_bytes`].
static NAME_TABLE: [(&[u8], HeaderName); 256] = [
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Content-Disposition", HeaderName::ContentDisposition),
    (b"Min-SE", HeaderName::MinSe),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Call-ID", HeaderName::CallId),
    (b"Session-Expires", HeaderName::SessionExpires),
    (b"", HeaderName::Other),
    (b"r", HeaderName::ReferTo),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Error-Info", HeaderName::ErrorInfo),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Accept-Encoding", HeaderName::AcceptEncoding),
    (b"MIME-Version", HeaderName::MimeVersion),
    (b"Replaces", HeaderName::Replaces),
    (b"Unsupported", HeaderName::Unsupported),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Timestamp", HeaderName::Timestamp),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"i", HeaderName::CallId),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Content-Language", HeaderName::ContentLanguage),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Content-Type", HeaderName::ContentType),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Content-Length", HeaderName::ContentLength),
    (b"Server", HeaderName::Server),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Allow-Events", HeaderName::AllowEvents),
    (b"", HeaderName::Other),
    (b"CSeq", HeaderName::CSeq),
    (b"From", HeaderName::From),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Security-Server", HeaderName::SecurityServer),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"s", HeaderName::Subject),
    (b"Date", HeaderName::Date),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Accept", HeaderName::Accept),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"e", HeaderName::ContentEncoding),
    (b"", HeaderName::Other),
    (b"x", HeaderName::SessionExpires),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Content-Encoding", HeaderName::ContentEncoding),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Subject", HeaderName::Subject),
    (b"RAck", HeaderName::RAck),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"WWW-Authenticate", HeaderName::WwwAuthenticate),
    (b"Organization", HeaderName::Organization),
    (b"", HeaderName::Other),
    (b"o", HeaderName::Event),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Security-Client", HeaderName::SecurityClient),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"t", HeaderName::To),
    (b"", HeaderName::Other),
    (b"Proxy-Authorization", HeaderName::ProxyAuthorization),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"P-Asserted-Identity", HeaderName::PAssertedIdentity),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Priority", HeaderName::Priority),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"f", HeaderName::From),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"User-Agent", HeaderName::UserAgent),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Contact", HeaderName::Contact),
    (b"k", HeaderName::Supported),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Allow", HeaderName::Allow),
    (b"", HeaderName::Other),
    (b"Warning", HeaderName::Warning),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Record-Route", HeaderName::RecordRoute),
    (b"Alert-Info", HeaderName::AlertInfo),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Max-Forwards", HeaderName::MaxForwards),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Proxy-Authenticate", HeaderName::ProxyAuthenticate),
    (b"", HeaderName::Other),
    (b"Min-Expires", HeaderName::MinExpires),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Proxy-Require", HeaderName::ProxyRequire),
    (b"", HeaderName::Other),
    (b"Expires", HeaderName::Expires),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"b", HeaderName::ReferredBy),
    (b"", HeaderName::Other),
    (b"u", HeaderName::AllowEvents),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Reason", HeaderName::Reason),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Event", HeaderName::Event),
    (b"Flow-Timer", HeaderName::FlowTimer),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Referred-By", HeaderName::ReferredBy),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Authorization", HeaderName::Authorization),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"In-Reply-To", HeaderName::InReplyTo),
    (b"l", HeaderName::ContentLength),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Refer-To", HeaderName::ReferTo),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Retry-After", HeaderName::RetryAfter),
    (b"Reply-To", HeaderName::ReplyTo),
    (b"", HeaderName::Other),
    (b"Call-Info", HeaderName::CallInfo),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Authentication-Info", HeaderName::AuthenticationInfo),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Route", HeaderName::Route),
    (b"", HeaderName::Other),
    (b"Require", HeaderName::Require),
    (b"Supported", HeaderName::Supported),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Via", HeaderName::Via),
    (b"c", HeaderName::ContentType),
    (b"", HeaderName::Other),
    (b"v", HeaderName::Via),
    (b"", HeaderName::Other),
    (b"Security-Verify", HeaderName::SecurityVerify),
    (b"Path", HeaderName::Path),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"RSeq", HeaderName::RSeq),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Accept-Language", HeaderName::AcceptLanguage),
    (b"Service-Route", HeaderName::ServiceRoute),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"Subscription-State", HeaderName::SubscriptionState),
    (b"", HeaderName::Other),
    (b"", HeaderName::Other),
    (b"To", HeaderName::To),
    (b"", HeaderName::Other),
    (b"m", HeaderName::Contact),
];

impl HeaderName {
    /// Recognises a header name, case-insensitively, including the compact
    /// forms (`v`, `f`, `t`, `i`, `m`, `l`, `c`, `k`, `s`, `e`, `o`, `u`, `r`,
    /// `b`, `x`).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        // A perfect hash over the known (lower-case) names: length, first,
        // middle and last byte pick the one candidate to compare with.
        let (Some(&first), Some(&last), Some(&mid)) =
            (name.first(), name.last(), name.get(name.len() / 2))
        else {
            return HeaderName::Other;
        };
        let key = name
            .len()
            .wrapping_add(usize::from(first.to_ascii_lowercase()) * 29)
            .wrapping_add(usize::from(last.to_ascii_lowercase()) * 24)
            .wrapping_add(usize::from(mid.to_ascii_lowercase()))
            % 256;
        match NAME_TABLE.get(key) {
            // the usual spelling compares as plain bytes; any other case
            // spelling falls back to a case-insensitive compare
            Some((candidate, header))
                if *candidate == name || candidate.eq_ignore_ascii_case(name) =>
            {
                *header
            }
            _ => HeaderName::Other,
        }
    }

    /// The canonical spelling (`Call-ID`, `CSeq`, `WWW-Authenticate`, …);
    /// `None` for [`HeaderName::Other`].
    pub fn as_str(self) -> Option<&'static str> {
        use HeaderName::*;
        Some(match self {
            Accept => "Accept",
            AcceptEncoding => "Accept-Encoding",
            AcceptLanguage => "Accept-Language",
            AlertInfo => "Alert-Info",
            Allow => "Allow",
            AllowEvents => "Allow-Events",
            AuthenticationInfo => "Authentication-Info",
            Authorization => "Authorization",
            CallId => "Call-ID",
            CallInfo => "Call-Info",
            Contact => "Contact",
            ContentDisposition => "Content-Disposition",
            ContentEncoding => "Content-Encoding",
            ContentLanguage => "Content-Language",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            CSeq => "CSeq",
            Date => "Date",
            ErrorInfo => "Error-Info",
            Event => "Event",
            Expires => "Expires",
            FlowTimer => "Flow-Timer",
            From => "From",
            InReplyTo => "In-Reply-To",
            MaxForwards => "Max-Forwards",
            MinExpires => "Min-Expires",
            MinSe => "Min-SE",
            MimeVersion => "MIME-Version",
            Organization => "Organization",
            Path => "Path",
            Priority => "Priority",
            ProxyAuthenticate => "Proxy-Authenticate",
            ProxyAuthorization => "Proxy-Authorization",
            ProxyRequire => "Proxy-Require",
            RAck => "RAck",
            Reason => "Reason",
            RecordRoute => "Record-Route",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            Replaces => "Replaces",
            ReplyTo => "Reply-To",
            Require => "Require",
            RetryAfter => "Retry-After",
            Route => "Route",
            RSeq => "RSeq",
            Server => "Server",
            ServiceRoute => "Service-Route",
            SessionExpires => "Session-Expires",
            Subject => "Subject",
            SubscriptionState => "Subscription-State",
            Supported => "Supported",
            Timestamp => "Timestamp",
            To => "To",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Via => "Via",
            Warning => "Warning",
            WwwAuthenticate => "WWW-Authenticate",
            PAssertedIdentity => "P-Asserted-Identity",
            SecurityClient => "Security-Client",
            SecurityServer => "Security-Server",
            SecurityVerify => "Security-Verify",
            Other => return None,
        })
    }

    /// The compact form's letter, where the name has one.
    pub fn compact(self) -> Option<&'static str> {
        use HeaderName::*;
        Some(match self {
            Via => "v",
            From => "f",
            To => "t",
            CallId => "i",
            Contact => "m",
            ContentLength => "l",
            ContentType => "c",
            Supported => "k",
            Subject => "s",
            ContentEncoding => "e",
            Event => "o",
            AllowEvents => "u",
            ReferTo => "r",
            ReferredBy => "b",
            SessionExpires => "x",
            _ => return None,
        })
    }

    /// True for headers whose value is a comma-separated list that may be
    /// split across several header lines (RFC 3261 §7.3.1).
    pub fn is_list(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Via | Contact
                | Route
                | RecordRoute
                | Path
                | ServiceRoute
                | Supported
                | Require
                | ProxyRequire
                | Unsupported
                | Allow
                | AllowEvents
                | Accept
                | AcceptEncoding
                | AcceptLanguage
                | ContentEncoding
                | ContentLanguage
                | Warning
                | AlertInfo
                | CallInfo
                | ErrorInfo
                | InReplyTo
                | PAssertedIdentity
                | Reason
                | SecurityClient
                | SecurityServer
                | SecurityVerify
        )
    }

    /// True for headers a message may carry at most once.
    pub fn is_single(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            CallId
                | CSeq
                | From
                | To
                | MaxForwards
                | ContentLength
                | ContentType
                | Expires
                | MinExpires
                | FlowTimer
                | RSeq
                | RAck
                | SessionExpires
                | MinSe
                | RetryAfter
                | Replaces
                | Event
                | SubscriptionState
                | ContentDisposition
                | MimeVersion
                | Date
                | Timestamp
                | ReferTo
                | ReferredBy
        )
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str().unwrap_or("(other header)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        let all = [
            HeaderName::Accept,
            HeaderName::AcceptEncoding,
            HeaderName::AcceptLanguage,
            HeaderName::AlertInfo,
            HeaderName::Allow,
            HeaderName::AllowEvents,
            HeaderName::AuthenticationInfo,
            HeaderName::Authorization,
            HeaderName::CallId,
            HeaderName::CallInfo,
            HeaderName::Contact,
            HeaderName::ContentDisposition,
            HeaderName::ContentEncoding,
            HeaderName::ContentLanguage,
            HeaderName::ContentLength,
            HeaderName::ContentType,
            HeaderName::CSeq,
            HeaderName::Date,
            HeaderName::ErrorInfo,
            HeaderName::Event,
            HeaderName::Expires,
            HeaderName::FlowTimer,
            HeaderName::From,
            HeaderName::InReplyTo,
            HeaderName::MaxForwards,
            HeaderName::MinExpires,
            HeaderName::MinSe,
            HeaderName::MimeVersion,
            HeaderName::Organization,
            HeaderName::Path,
            HeaderName::Priority,
            HeaderName::ProxyAuthenticate,
            HeaderName::ProxyAuthorization,
            HeaderName::ProxyRequire,
            HeaderName::RAck,
            HeaderName::Reason,
            HeaderName::RecordRoute,
            HeaderName::ReferTo,
            HeaderName::ReferredBy,
            HeaderName::Replaces,
            HeaderName::ReplyTo,
            HeaderName::Require,
            HeaderName::RetryAfter,
            HeaderName::Route,
            HeaderName::RSeq,
            HeaderName::Server,
            HeaderName::ServiceRoute,
            HeaderName::SessionExpires,
            HeaderName::Subject,
            HeaderName::SubscriptionState,
            HeaderName::Supported,
            HeaderName::Timestamp,
            HeaderName::To,
            HeaderName::Unsupported,
            HeaderName::UserAgent,
            HeaderName::Via,
            HeaderName::Warning,
            HeaderName::WwwAuthenticate,
            HeaderName::PAssertedIdentity,
            HeaderName::SecurityClient,
            HeaderName::SecurityServer,
            HeaderName::SecurityVerify,
        ];
        for h in all {
            let s = h.as_str().unwrap_or_default();
            assert_eq!(HeaderName::from_bytes(s.as_bytes()), h, "{s}");
            assert_eq!(HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()), h);
            assert_eq!(HeaderName::from_bytes(s.to_ascii_uppercase().as_bytes()), h);
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(c.as_bytes()), h);
                assert_eq!(HeaderName::from_bytes(c.to_ascii_uppercase().as_bytes()), h);
            }
        }
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
    }
}
