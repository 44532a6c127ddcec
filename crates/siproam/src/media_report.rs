//! What the application reports of a call's media, as
//! [`crate::EndpointEvent::Media`] and [`crate::EndpointEvent::Dtmf`], and
//! of instant messages, as [`crate::EndpointEvent::Message`]: shared by
//! the endpoint (which carries them) and the softphone (which makes them).

use std::net::SocketAddr;

use siproam_core::CallId;

/// Statistics of a call's media, reported every second and at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaReport {
    /// The call.
    pub call: CallId,
    /// Our RTP address.
    pub local: SocketAddr,
    /// Where we send (after symmetric-RTP latching).
    pub remote: Option<SocketAddr>,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// RTCP packets (compound reports) received and accepted.
    pub rtcp_rx_packets: u64,
    /// Packets lost (RFC 3550 count).
    pub lost: i64,
    /// Longest gap between received packets, in ms.
    pub max_gap_ms: f64,
    /// True for the last report of the call.
    pub last: bool,
    /// The SRTP suite protecting the stream (its SDES name), or `None`
    /// for plain RTP.
    pub srtp: Option<&'static str>,
    /// SRTP/SRTCP packets dropped: failed authentication, replayed, too
    /// old or malformed (0 without SRTP).
    pub srtp_dropped: u64,
}

/// Which way a message or a DTMF key went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We sent it.
    Sent,
    /// We received it.
    Received,
}

impl Direction {
    /// `sent` or `received` (`docs/events.md`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// An instant message (RFC 3428): one received (answered 200), or the
/// outcome of one sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageReport {
    /// Which way.
    pub direction: Direction,
    /// The other side's URI (the sender's From, or where we sent it).
    pub peer: String,
    /// The text.
    pub text: String,
    /// For a sent one, its final status (408 when nothing answered, 503
    /// when its flow failed).
    pub code: Option<u16>,
}

/// A DTMF key sent (as it starts) or received (once, on its end) on a
/// call's RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfReport {
    /// The call.
    pub call: CallId,
    /// The key.
    pub digit: siproam_media::DtmfDigit,
    /// Which way.
    pub direction: Direction,
}
