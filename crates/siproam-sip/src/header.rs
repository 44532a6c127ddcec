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

impl HeaderName {
    /// Recognises a header name, case-insensitively, including the compact
    /// forms (`v`, `f`, `t`, `i`, `m`, `l`, `c`, `k`, `s`, `e`, `o`, `u`, `r`,
    /// `b`, `x`).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        let Some(&first) = name.first() else {
            return Other;
        };
        let first = first.to_ascii_lowercase();
        if name.len() == 1 {
            return match first {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'k' => Supported,
                b's' => Subject,
                b'e' => ContentEncoding,
                b'o' => Event,
                b'u' => AllowEvents,
                b'r' => ReferTo,
                b'b' => ReferredBy,
                b'x' => SessionExpires,
                _ => Other,
            };
        }
        let candidates: &[(&[u8], HeaderName)] = match (name.len(), first) {
            (2, b't') => &[(b"To", To)],
            (3, b'v') => &[(b"Via", Via)],
            (4, b'c') => &[(b"CSeq", CSeq)],
            (4, b'd') => &[(b"Date", Date)],
            (4, b'f') => &[(b"From", From)],
            (4, b'p') => &[(b"Path", Path)],
            (4, b'r') => &[(b"RAck", RAck), (b"RSeq", RSeq)],
            (5, b'a') => &[(b"Allow", Allow)],
            (5, b'e') => &[(b"Event", Event)],
            (5, b'r') => &[(b"Route", Route)],
            (6, b'a') => &[(b"Accept", Accept)],
            (6, b'm') => &[(b"Min-SE", MinSe)],
            (6, b'r') => &[(b"Reason", Reason)],
            (6, b's') => &[(b"Server", Server)],
            (7, b'c') => &[(b"Call-ID", CallId), (b"Contact", Contact)],
            (7, b'e') => &[(b"Expires", Expires)],
            (7, b'r') => &[(b"Require", Require)],
            (7, b's') => &[(b"Subject", Subject)],
            (7, b'w') => &[(b"Warning", Warning)],
            (8, b'p') => &[(b"Priority", Priority)],
            (8, b'r') => &[
                (b"Refer-To", ReferTo),
                (b"Replaces", Replaces),
                (b"Reply-To", ReplyTo),
            ],
            (9, b'c') => &[(b"Call-Info", CallInfo)],
            (9, b's') => &[(b"Supported", Supported)],
            (9, b't') => &[(b"Timestamp", Timestamp)],
            (10, b'a') => &[(b"Alert-Info", AlertInfo)],
            (10, b'e') => &[(b"Error-Info", ErrorInfo)],
            (10, b'f') => &[(b"Flow-Timer", FlowTimer)],
            (10, b'u') => &[(b"User-Agent", UserAgent)],
            (11, b'i') => &[(b"In-Reply-To", InReplyTo)],
            (11, b'm') => &[(b"Min-Expires", MinExpires)],
            (11, b'r') => &[(b"Referred-By", ReferredBy), (b"Retry-After", RetryAfter)],
            (11, b'u') => &[(b"Unsupported", Unsupported)],
            (12, b'a') => &[(b"Allow-Events", AllowEvents)],
            (12, b'c') => &[(b"Content-Type", ContentType)],
            (12, b'm') => &[
                (b"Max-Forwards", MaxForwards),
                (b"MIME-Version", MimeVersion),
            ],
            (12, b'o') => &[(b"Organization", Organization)],
            (12, b'r') => &[(b"Record-Route", RecordRoute)],
            (13, b'a') => &[(b"Authorization", Authorization)],
            (13, b'p') => &[(b"Proxy-Require", ProxyRequire)],
            (13, b's') => &[(b"Service-Route", ServiceRoute)],
            (14, b'c') => &[(b"Content-Length", ContentLength)],
            (15, b'a') => &[
                (b"Accept-Encoding", AcceptEncoding),
                (b"Accept-Language", AcceptLanguage),
            ],
            (15, b's') => &[
                (b"Session-Expires", SessionExpires),
                (b"Security-Client", SecurityClient),
                (b"Security-Server", SecurityServer),
                (b"Security-Verify", SecurityVerify),
            ],
            (16, b'c') => &[
                (b"Content-Encoding", ContentEncoding),
                (b"Content-Language", ContentLanguage),
            ],
            (16, b'w') => &[(b"WWW-Authenticate", WwwAuthenticate)],
            (18, b'p') => &[(b"Proxy-Authenticate", ProxyAuthenticate)],
            (18, b's') => &[(b"Subscription-State", SubscriptionState)],
            (19, b'a') => &[(b"Authentication-Info", AuthenticationInfo)],
            (19, b'c') => &[(b"Content-Disposition", ContentDisposition)],
            (19, b'p') => &[
                (b"Proxy-Authorization", ProxyAuthorization),
                (b"P-Asserted-Identity", PAssertedIdentity),
            ],
            _ => return Other,
        };
        candidates
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Other, |&(_, h)| h)
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
