//! What the application reports of a call's media, as
//! [`crate::EndpointEvent::Media`]: shared by the endpoint (which carries
//! it) and the softphone (which makes it).

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
    /// Packets lost (RFC 3550 count).
    pub lost: i64,
    /// Longest gap between received packets, in ms.
    pub max_gap_ms: f64,
    /// True for the last report of the call.
    pub last: bool,
}
