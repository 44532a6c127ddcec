//! # siproam-media — the sans-IO RTP/RTCP media session
//!
//! One audio stream with one peer: G.711 µ-law and A-law ([`g711`]),
//! RFC 4733 telephone-events for DTMF ([`dtmf`]), a fixed-depth reordering
//! jitter buffer, symmetric RTP (the destination follows the peer's source
//! address after a few consecutive packets), RFC 3550 statistics and RTCP
//! sender/receiver reports, and hold through the media direction.
//!
//! The session **never reads a clock, never touches a socket and never draws
//! unseeded randomness**: every input carries `now`, the SSRC and the first
//! sequence number and timestamp come from [`MediaConfig::seed`], and every
//! output is a value the driver acts on. The driver owns the sockets; when a
//! network change makes it re-open them, the session goes on with the same
//! SSRC, sequence numbers and timestamps.
//!
//! Inputs: [`MediaSession::handle_rtp`], [`MediaSession::handle_rtcp`],
//! [`MediaSession::handle_timeout`], [`MediaSession::send_frame`] and the
//! commands ([`MediaSession::set_destination`],
//! [`MediaSession::set_direction`], [`MediaSession::send_dtmf`],
//! [`MediaSession::close`]). After each, drain
//! [`MediaSession::poll_transmit`], [`MediaSession::poll_event`] and
//! [`MediaSession::poll_audio`] (or [`MediaSession::poll_transmit_into`]
//! and [`MediaSession::poll_audio_into`], which reuse the driver's buffers
//! and allocate nothing per packet), then sleep until the earlier of
//! [`MediaSession::poll_timeout`] and [`MediaSession::next_send_at`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use siproam_media::{AudioSource, Destination, MediaConfig, MediaSession, ToneSource};
//!
//! let start = Instant::now(); // the driver's clock; the session never reads one
//! let mut session = MediaSession::new(MediaConfig::new(42), start)?;
//! session.set_destination(Destination::new("192.0.2.2:5000".parse()?));
//! let mut tone = ToneSource::new(1000.0, 8000);
//! let mut now = start;
//! for _ in 0..3 {
//!     // A real driver sleeps until the earlier of these two.
//!     let _deadline = session.poll_timeout();
//!     if session.next_send_at().is_some_and(|t| t <= now) {
//!         session.send_frame(now, &tone.next_frame());
//!     }
//!     while let Some(t) = session.poll_transmit() {
//!         // socket.send_to(&t.payload, t.destination), RTCP socket if t.rtcp
//!         assert_eq!(t.payload.len(), 12 + 160);
//!     }
//!     now += Duration::from_millis(20);
//! }
//! assert_eq!(session.stats().packets_sent, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Audio comes from an [`AudioSource`] ([`ToneSource`], [`WavSource`],
//! [`SilenceSource`]) and goes to an [`AudioSink`] ([`WavSink`],
//! [`NullSink`]); those are plain values the driver calls, and the only
//! place in the crate that does file I/O.
//!
//! [`srtp`] protects and unprotects the packets (SRTP and SRTCP, RFC 3711 and
//! RFC 7714) in place, also sans-IO, for the driver to apply between the
//! session and the sockets.

#![warn(missing_docs)]

mod audio;
pub mod dtmf;
pub mod g711;
mod jitter;
mod rng;
mod rtcp;
mod session;
pub mod srtp;
mod stats;

pub use audio::{
    AudioSink, AudioSource, NullSink, SilenceSource, ToneSource, WavError, WavSink, WavSource,
};
pub use dtmf::{DtmfDigit, TelephoneEvent};
pub use g711::{Codec, Frame, FRAME_SAMPLES, SAMPLE_RATE};
pub use rtcp::{ReportBlockInfo, RtcpReport, SenderInfo};
pub use session::{
    looks_like_rtcp, Destination, MediaConfig, MediaDirection, MediaError, MediaEvent,
    MediaSession, MediaTransmit, PacketError, TransmitInfo, PTIME,
};
pub use stats::MediaStats;

/// Any instant will do as the base of a test's virtual clock.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_instant() -> std::time::Instant {
    std::time::Instant::now()
}
