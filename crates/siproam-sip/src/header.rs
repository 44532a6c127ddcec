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
        match name {
            [c] => match c.to_ascii_lowercase() {
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
            },
            _ if name.len() == 2 => {
                if name.eq_ignore_ascii_case(b"To") {
                    return To;
                }
                Other
            }
            _ if name.len() == 3 => {
                if name.eq_ignore_ascii_case(b"Via") {
                    return Via;
                }
                Other
            }
            _ if name.len() == 4 => {
                if name.eq_ignore_ascii_case(b"CSeq") {
                    return CSeq;
                }
                if name.eq_ignore_ascii_case(b"Date") {
                    return Date;
                }
                if name.eq_ignore_ascii_case(b"From") {
                    return From;
                }
                if name.eq_ignore_ascii_case(b"Path") {
                    return Path;
                }
                if name.eq_ignore_ascii_case(b"RAck") {
                    return RAck;
                }
                if name.eq_ignore_ascii_case(b"RSeq") {
                    return RSeq;
                }
                Other
            }
            _ if name.len() == 5 => {
                if name.eq_ignore_ascii_case(b"Allow") {
                    return Allow;
                }
                if name.eq_ignore_ascii_case(b"Event") {
                    return Event;
                }
                if name.eq_ignore_ascii_case(b"Route") {
                    return Route;
                }
                Other
            }
            _ if name.len() == 6 => {
                if name.eq_ignore_ascii_case(b"Accept") {
                    return Accept;
                }
                if name.eq_ignore_ascii_case(b"Min-SE") {
                    return MinSe;
                }
                if name.eq_ignore_ascii_case(b"Reason") {
                    return Reason;
                }
                if name.eq_ignore_ascii_case(b"Server") {
                    return Server;
                }
                Other
            }
            _ if name.len() == 7 => {
                if name.eq_ignore_ascii_case(b"Call-ID") {
                    return CallId;
                }
                if name.eq_ignore_ascii_case(b"Contact") {
                    return Contact;
                }
                if name.eq_ignore_ascii_case(b"Expires") {
                    return Expires;
                }
                if name.eq_ignore_ascii_case(b"Require") {
                    return Require;
                }
                if name.eq_ignore_ascii_case(b"Subject") {
                    return Subject;
                }
                if name.eq_ignore_ascii_case(b"Warning") {
                    return Warning;
                }
                Other
            }
            _ if name.len() == 8 => {
                if name.eq_ignore_ascii_case(b"Priority") {
                    return Priority;
                }
                if name.eq_ignore_ascii_case(b"Refer-To") {
                    return ReferTo;
                }
                if name.eq_ignore_ascii_case(b"Replaces") {
                    return Replaces;
                }
                if name.eq_ignore_ascii_case(b"Reply-To") {
                    return ReplyTo;
                }
                Other
            }
            _ if name.len() == 9 => {
                if name.eq_ignore_ascii_case(b"Call-Info") {
                    return CallInfo;
                }
                if name.eq_ignore_ascii_case(b"Supported") {
                    return Supported;
                }
                if name.eq_ignore_ascii_case(b"Timestamp") {
                    return Timestamp;
                }
                Other
            }
            _ if name.len() == 10 => {
                if name.eq_ignore_ascii_case(b"Alert-Info") {
                    return AlertInfo;
                }
                if name.eq_ignore_ascii_case(b"Error-Info") {
                    return ErrorInfo;
                }
                if name.eq_ignore_ascii_case(b"Flow-Timer") {
                    return FlowTimer;
                }
                if name.eq_ignore_ascii_case(b"User-Agent") {
                    return UserAgent;
                }
                Other
            }
            _ if name.len() == 11 => {
                if name.eq_ignore_ascii_case(b"In-Reply-To") {
                    return InReplyTo;
                }
                if name.eq_ignore_ascii_case(b"Min-Expires") {
                    return MinExpires;
                }
                if name.eq_ignore_ascii_case(b"Referred-By") {
                    return ReferredBy;
                }
                if name.eq_ignore_ascii_case(b"Retry-After") {
                    return RetryAfter;
                }
                if name.eq_ignore_ascii_case(b"Unsupported") {
                    return Unsupported;
                }
                Other
            }
            _ if name.len() == 12 => {
                if name.eq_ignore_ascii_case(b"Allow-Events") {
                    return AllowEvents;
                }
                if name.eq_ignore_ascii_case(b"Content-Type") {
                    return ContentType;
                }
                if name.eq_ignore_ascii_case(b"Max-Forwards") {
                    return MaxForwards;
                }
                if name.eq_ignore_ascii_case(b"MIME-Version") {
                    return MimeVersion;
                }
                if name.eq_ignore_ascii_case(b"Organization") {
                    return Organization;
                }
                if name.eq_ignore_ascii_case(b"Record-Route") {
                    return RecordRoute;
                }
                Other
            }
            _ if name.len() == 13 => {
                if name.eq_ignore_ascii_case(b"Authorization") {
                    return Authorization;
                }
                if name.eq_ignore_ascii_case(b"Proxy-Require") {
                    return ProxyRequire;
                }
                if name.eq_ignore_ascii_case(b"Service-Route") {
                    return ServiceRoute;
                }
                Other
            }
            _ if name.len() == 14 => {
                if name.eq_ignore_ascii_case(b"Content-Length") {
                    return ContentLength;
                }
                Other
            }
            _ if name.len() == 15 => {
                if name.eq_ignore_ascii_case(b"Accept-Encoding") {
                    return AcceptEncoding;
                }
                if name.eq_ignore_ascii_case(b"Accept-Language") {
                    return AcceptLanguage;
                }
                if name.eq_ignore_ascii_case(b"Session-Expires") {
                    return SessionExpires;
                }
                if name.eq_ignore_ascii_case(b"Security-Client") {
                    return SecurityClient;
                }
                if name.eq_ignore_ascii_case(b"Security-Server") {
                    return SecurityServer;
                }
                if name.eq_ignore_ascii_case(b"Security-Verify") {
                    return SecurityVerify;
                }
                Other
            }
            _ if name.len() == 16 => {
                if name.eq_ignore_ascii_case(b"Content-Encoding") {
                    return ContentEncoding;
                }
                if name.eq_ignore_ascii_case(b"Content-Language") {
                    return ContentLanguage;
                }
                if name.eq_ignore_ascii_case(b"WWW-Authenticate") {
                    return WwwAuthenticate;
                }
                Other
            }
            _ if name.len() == 18 => {
                if name.eq_ignore_ascii_case(b"Proxy-Authenticate") {
                    return ProxyAuthenticate;
                }
                if name.eq_ignore_ascii_case(b"Subscription-State") {
                    return SubscriptionState;
                }
                Other
            }
            _ if name.len() == 19 => {
                if name.eq_ignore_ascii_case(b"Authentication-Info") {
                    return AuthenticationInfo;
                }
                if name.eq_ignore_ascii_case(b"Content-Disposition") {
                    return ContentDisposition;
                }
                if name.eq_ignore_ascii_case(b"Proxy-Authorization") {
                    return ProxyAuthorization;
                }
                if name.eq_ignore_ascii_case(b"P-Asserted-Identity") {
                    return PAssertedIdentity;
                }
                Other
            }
            _ => Other,
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
