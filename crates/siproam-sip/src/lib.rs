//! # siproam-sip — the SIP message layer
//!
//! This crate owns the SIP message model and nothing else: URIs (`sip`,
//! `sips`, `tel`), name-addr values, typed header views, a zero-copy parser
//! over [`bytes::Bytes`], a printer and an editing API that keeps untouched
//! headers byte-for-byte, stream framing for TCP/TLS, and digest
//! authentication. It performs no I/O, reads no clock and draws no
//! randomness.
//!
//! ```
//! use bytes::Bytes;
//! use siproam_sip::Message;
//!
//! let raw = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
//!            Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
//!            From: <sip:alice@example.com>;tag=1928301774\r\n\
//!            To: <sip:bob@example.com>\r\n\
//!            Call-ID: a84b4c76e66710@pc33.example.com\r\n\
//!            CSeq: 63104 OPTIONS\r\n\
//!            Content-Length: 0\r\n\r\n";
//! let mut msg = Message::parse(Bytes::from_static(raw.as_bytes())).unwrap();
//! assert_eq!(msg.call_id(), "a84b4c76e66710@pc33.example.com");
//! assert_eq!(msg.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
//! msg.set_top_via_param("received", Some(Some("198.51.100.7"))).unwrap();
//! assert_eq!(msg.top_via().unwrap().received(), Some("198.51.100.7"));
//! ```

#![warn(missing_docs)]

pub(crate) mod chars;
pub mod digest;
mod error;
pub mod framing;
mod header;
pub mod headers;
mod message;
mod method;
mod name_addr;
mod params;
pub mod uri;

pub use error::{Answer, ErrorKind, MessageKind, ParseError, UriError, ValueError};
pub use framing::{Frame, FramingError, Side, StreamFramer};
pub use header::HeaderName;
pub use headers::{CSeq, ParamValue, RAck, Via};
pub use message::{
    Contact, EditError, HeaderRef, Limits, Message, MessageBuilder, Policy, SUPPORTED_OPTION_TAGS,
};
pub use method::Method;
pub use name_addr::{split_list, NameAddr};
pub use params::{Params, ParamsIter};
pub use uri::{Host, SipUri, TelUri, Uri};
