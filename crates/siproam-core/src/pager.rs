//! RFC 3428 instant messages (MESSAGE, "pager mode"): out of any dialog,
//! each one a non-INVITE transaction of its own.
//!
//! Sending goes through [`Endpoint::send_request`], the generic client
//! transaction (so an account's outbound flow, and whatever that path does
//! with challenges, covers it); its final answer comes back as
//! [`Event::Response`](crate::Event::Response) (or
//! [`Event::RequestFailed`](crate::Event::RequestFailed)) with the returned
//! [`RequestId`].
//!
//! Receiving: the application hands an incoming MESSAGE to
//! [`Endpoint::accept_message`], which answers it — 200, or 413 for a body
//! over [`MAX_MESSAGE_BODY`], or 415 (with `Accept: text/plain`) for any
//! other type than `text/plain` in UTF-8 or US-ASCII — and returns the text.

use std::time::Instant;

use bytes::Bytes;
use siproam_sip::{Message, MessageBuilder, Method};

use crate::endpoint::{CoreError, Endpoint, RequestId, ServerTxId, Target};

/// The largest MESSAGE body taken (bytes). RFC 3428 §9 bounds a MESSAGE
/// sent without congestion control at 1300 bytes; over TCP more is fine,
/// but a chat line needs little, and the whole SIP message is bounded by
/// the transport's `Limits::max_message` (64 KiB) anyway: bodies between
/// this and that get 413, larger messages are refused by the transport.
pub const MAX_MESSAGE_BODY: usize = 16 * 1024;

/// A MESSAGE to send.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    /// The Request-URI and To (`sip:bob@example.test`).
    pub uri: String,
    /// Our address of record (From).
    pub from: String,
    /// The next hop (a proxy, or the peer), already resolved.
    pub target: Target,
    /// The text (sent as `text/plain;charset=UTF-8`).
    pub text: String,
}

/// Why a received MESSAGE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageRefusal {
    /// The body is over [`MAX_MESSAGE_BODY`] (answered 413).
    #[error("body of {size} bytes over the {limit}-byte limit")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not `text/plain` in UTF-8 or US-ASCII, or not valid UTF-8
    /// (answered 415).
    #[error("unsupported content type")]
    UnsupportedType,
    /// Not a MESSAGE (nothing answered).
    #[error("not a MESSAGE")]
    NotAMessage,
}

impl MessageRefusal {
    /// The status the refusal is answered with (0 when none).
    pub fn status(self) -> u16 {
        match self {
            MessageRefusal::TooLarge { .. } => 413,
            MessageRefusal::UnsupportedType => 415,
            MessageRefusal::NotAMessage => 0,
        }
    }
}

/// A MESSAGE taken and answered 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The sender (the From URI).
    pub peer: String,
    /// The text.
    pub text: String,
}

/// Checks a received MESSAGE and returns its sender and text, or why it
/// is refused (nothing is answered: see [`Endpoint::accept_message`]).
pub fn check_message(request: &Message) -> Result<IncomingMessage, MessageRefusal> {
    if request.method() != Some(Method::Message) {
        return Err(MessageRefusal::NotAMessage);
    }
    let body = request.body();
    if body.len() > MAX_MESSAGE_BODY {
        return Err(MessageRefusal::TooLarge {
            size: body.len(),
            limit: MAX_MESSAGE_BODY,
        });
    }
    let plain = match request.content_type() {
        Some(Ok(ct)) => {
            ct.value().eq_ignore_ascii_case("text/plain")
                && ct.params().value("charset").is_none_or(|c| {
                    let c = c.trim_matches('"');
                    c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii")
                })
        }
        // RFC 3428 §7: a MESSAGE without a body needs no type
        None => body.is_empty(),
        Some(Err(_)) => false,
    };
    if !plain {
        return Err(MessageRefusal::UnsupportedType);
    }
    let text = std::str::from_utf8(body).map_err(|_| MessageRefusal::UnsupportedType)?;
    let peer = request
        .from()
        .map(|f| f.uri().to_string())
        .unwrap_or_default();
    Ok(IncomingMessage {
        peer,
        text: text.to_owned(),
    })
}

impl Endpoint {
    /// Sends a MESSAGE (RFC 3428) out of any dialog in a new client
    /// transaction ([`Endpoint::send_request`]): From our AoR with a fresh
    /// tag, a fresh Call-ID, CSeq 1, `text/plain;charset=UTF-8`. A text
    /// over [`MAX_MESSAGE_BODY`] is refused here (no peer of ours would
    /// take it).
    pub fn send_message(
        &mut self,
        now: Instant,
        spec: MessageSpec,
    ) -> Result<RequestId, CoreError> {
        if spec.text.len() > MAX_MESSAGE_BODY {
            return Err(CoreError::MessageTooLarge);
        }
        let tag = self.rng.token(10);
        let call_id = format!("{}@siproam", self.rng.token(20));
        let b = MessageBuilder::request(Method::Message, &spec.uri)
            .header("From", &format!("<{}>;tag={tag}", spec.from))
            .header("To", &format!("<{}>", spec.uri))
            .header("Call-ID", &call_id)
            .header("CSeq", "1 MESSAGE")
            .body("text/plain;charset=UTF-8", Bytes::from(spec.text));
        self.send_request(now, b, spec.target)
    }

    /// Answers a received MESSAGE (from [`Event::IncomingRequest`]
    /// (crate::Event::IncomingRequest)): 200 and its sender and text when
    /// [`check_message`] takes it, else 413 or 415 (with `Accept:
    /// text/plain`), kept without a transaction (a refusal costs nothing
    /// to give again). A request that is not a MESSAGE is not answered.
    pub fn accept_message(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: &Message,
    ) -> Result<Result<IncomingMessage, MessageRefusal>, CoreError> {
        let checked = check_message(request);
        let tag = self.rng.token(10);
        match &checked {
            Ok(_) => {
                let resp = MessageBuilder::response_to(request, 200, "OK", Some(&tag)).build()?;
                self.respond(now, tx, resp)?;
            }
            Err(MessageRefusal::NotAMessage) => {}
            Err(r @ MessageRefusal::TooLarge { .. }) => {
                let resp = MessageBuilder::response_to(
                    request,
                    r.status(),
                    "Request Entity Too Large",
                    Some(&tag),
                )
                .build()?;
                self.respond_stateless(now, tx, resp)?;
            }
            Err(r @ MessageRefusal::UnsupportedType) => {
                let resp = MessageBuilder::response_to(
                    request,
                    r.status(),
                    "Unsupported Media Type",
                    Some(&tag),
                )
                .header("Accept", "text/plain")
                .build()?;
                self.respond_stateless(now, tx, resp)?;
            }
        }
        Ok(checked)
    }
}
