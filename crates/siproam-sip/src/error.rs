//! Parse and validation errors, and what the stack answers to each.
//!
//! Like rustls maps an error to the alert it sends, every [`ParseError`]
//! maps to an [`Answer`]: the status code a UAS sends back, or
//! [`Answer::Drop`] where nothing may be sent (a broken response, or bytes
//! that are not a request at all).

use crate::header::HeaderName;

/// What the stack does with a message it could not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Send a response with this status code.
    Respond(u16),
    /// Discard the message silently (and log it).
    Drop,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Respond(code) => write!(f, "{code}"),
            Answer::Drop => f.write_str("drop"),
        }
    }
}

/// Which kind of message the bytes were, as far as the start line told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A request line was recognised.
    Request,
    /// A status line was recognised.
    Response,
    /// Not even the start line could be classified.
    Unknown,
}

/// Why a URI was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Nothing where a URI must be.
    #[error("empty URI")]
    Empty,
    /// No `scheme:` prefix, or an invalid scheme.
    #[error("missing or invalid URI scheme")]
    Scheme,
    /// White space inside a URI.
    #[error("white space inside a URI")]
    Whitespace,
    /// Invalid character or escape in the user part.
    #[error("invalid user part")]
    User,
    /// Invalid character or escape in the password.
    #[error("invalid password")]
    Password,
    /// Invalid host name, IPv4 address or IPv6 reference.
    #[error("invalid host")]
    Host,
    /// Port not a number in 0–65535.
    #[error("invalid port")]
    Port,
    /// Invalid URI parameter.
    #[error("invalid URI parameter")]
    Param,
    /// Invalid URI header (`?name=value`).
    #[error("invalid URI header")]
    Headers,
    /// A `tel` URI whose number is not a valid global or local number.
    #[error("invalid telephone number")]
    TelNumber,
    /// The URI is enclosed in `<>` where a bare URI is required.
    #[error("URI enclosed in <>")]
    Enclosed,
}

/// Why a header value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value does not follow the header's grammar.
    #[error("syntax error")]
    Syntax,
    /// The value is empty where something is required.
    #[error("empty value")]
    Empty,
    /// A number too large for the field.
    #[error("number out of range")]
    OutOfRange,
    /// A quoted string that never ends.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// An empty element in a comma-separated list, or an empty parameter.
    #[error("empty list element or parameter")]
    EmptyElement,
    /// Several values where the header allows one.
    #[error("several values in a single-value header")]
    MultipleValues,
    /// A display name that is neither a token sequence nor a quoted string.
    #[error("invalid display name")]
    DisplayName,
    /// A URI inside the value is invalid.
    #[error("{0}")]
    Uri(#[from] UriError),
    /// A date that is not an RFC 1123 date in GMT.
    #[error("invalid date")]
    Date,
    /// The value is not valid UTF-8 (only edits can produce this).
    #[error("value is not UTF-8")]
    Utf8,
}

/// What was wrong with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No bytes, or only CRLFs.
    #[error("empty message")]
    Empty,
    /// The message is larger than the configured limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// A line is longer than the configured limit.
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// More header fields than the configured limit.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// The header section is not valid UTF-8.
    #[error("header section is not UTF-8")]
    InvalidUtf8,
    /// The header section never ends with an empty line.
    #[error("header section not terminated by an empty line")]
    Unterminated,
    /// A request line that is not `Method SP Request-URI SP SIP-Version`.
    #[error("malformed request line")]
    MalformedRequestLine,
    /// A status line that is not `SIP-Version SP Status-Code SP Reason-Phrase`.
    #[error("malformed status line")]
    MalformedStatusLine,
    /// The method is not a token.
    #[error("invalid method")]
    InvalidMethod,
    /// The Request-URI is malformed.
    #[error("invalid Request-URI: {0}")]
    InvalidRequestUri(UriError),
    /// The Request-URI's scheme is not one this stack serves.
    #[error("unsupported Request-URI scheme")]
    UnsupportedUriScheme,
    /// A SIP version other than 2.0.
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// A status code outside 100–699.
    #[error("invalid status code")]
    InvalidStatusCode,
    /// A header line without a valid name and colon.
    #[error("malformed header line {line}")]
    MalformedHeader {
        /// 1-based line number in the message.
        line: usize,
    },
    /// A header value that does not follow its grammar.
    #[error("invalid {header} header: {reason}")]
    InvalidHeader {
        /// The header.
        header: HeaderName,
        /// What was wrong.
        reason: ValueError,
    },
    /// A mandatory header is absent.
    #[error("missing {0} header")]
    MissingHeader(HeaderName),
    /// A single-value header appears more than once.
    #[error("{0} header appears more than once")]
    DuplicateHeader(HeaderName),
    /// The CSeq method differs from the request's method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// Several Content-Length values that disagree.
    #[error("conflicting Content-Length values")]
    ContentLengthConflict,
    /// Content-Length larger than the bytes that follow the headers.
    #[error("body shorter than Content-Length ({available} of {declared} bytes)")]
    BodyTruncated {
        /// The declared length.
        declared: usize,
        /// The bytes present.
        available: usize,
    },
    /// A message on a stream without Content-Length.
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Require or Proxy-Require names an extension this stack lacks.
    #[error("unsupported extension required")]
    UnsupportedExtension,
    /// The body's type cannot be handled.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The request's Accept header excludes every type we could answer with.
    #[error("no acceptable response body type")]
    NotAcceptable,
}

/// A message that could not be accepted: what was wrong, and about which
/// kind of message, which together decide the [`Answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    kind: ErrorKind,
    message: MessageKind,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind, message: MessageKind) -> Self {
        ParseError { kind, message }
    }

    pub(crate) fn header(header: HeaderName, reason: ValueError, message: MessageKind) -> Self {
        ParseError::new(ErrorKind::InvalidHeader { header, reason }, message)
    }

    /// What was wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the bytes were a request, a response, or unknown.
    pub fn message_kind(&self) -> MessageKind {
        self.message
    }

    /// What a UAS does with the message: a status code for a request, or
    /// drop. Responses and unclassifiable bytes are always dropped.
    pub fn answer(&self) -> Answer {
        if self.message != MessageKind::Request {
            return Answer::Drop;
        }
        Answer::Respond(match self.kind {
            ErrorKind::TooLarge { .. }
            | ErrorKind::LineTooLong { .. }
            | ErrorKind::TooManyHeaders { .. } => 513,
            ErrorKind::UnsupportedUriScheme => 416,
            ErrorKind::UnsupportedVersion => 505,
            ErrorKind::UnsupportedExtension => 420,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::NotAcceptable => 406,
            _ => 400,
        })
    }
}
