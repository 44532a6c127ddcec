//! Stream framing for TCP/TLS: splits a byte stream into SIP messages by
//! Content-Length and recognises RFC 5626 keep-alives between messages
//! (ping `CRLFCRLF`, pong `CRLF`).
//!
//! The framer only finds message boundaries; it hands out each message's
//! exact bytes for [`crate::Message::parse`]. A framing error means the
//! stream can no longer be split reliably: the connection must be closed.

use bytes::{Bytes, BytesMut};

use crate::chars::trim_lws;
use crate::header::HeaderName;
use crate::message::Limits;

/// What the framer found next on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message (headers and body), ready to parse.
    Message(Bytes),
    /// A keep-alive ping (`CRLFCRLF`); answer with a pong.
    Ping,
    /// A keep-alive pong (`CRLF`).
    Pong,
}

/// Why a stream can no longer be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A message (or its header section) exceeds the size limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// A header line exceeds the line limit.
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A message without Content-Length (mandatory on streams).
    #[error("missing Content-Length on a stream")]
    MissingContentLength,
    /// A Content-Length that is not a number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several Content-Length values that disagree.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
}

impl FramingError {
    /// The status code to send before closing, where one applies (the
    /// request is usually unreadable, so this is best effort).
    pub fn status(&self) -> u16 {
        match self {
            FramingError::TooLarge { .. } | FramingError::LineTooLong { .. } => 513,
            _ => 400,
        }
    }
}

/// Which side of a connection the framer serves: a server receives pings
/// and waits for a whole `CRLFCRLF`; a client receives pongs and takes a
/// lone `CRLF` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Accepts connections: receives pings.
    Server,
    /// Opens connections: receives pongs.
    Client,
}

/// Splits a stream into [`Frame`]s.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    limits: Limits,
    side: Side,
    failed: Option<FramingError>,
    /// Bytes of the current message already scanned for the empty line
    /// that ends its headers: each byte is looked at once, however the
    /// stream is cut.
    scanned: usize,
    /// Where the line being scanned starts.
    line_start: usize,
    /// The whole current message's length, once its headers are in.
    pending: Option<usize>,
    /// Bytes handed to the line search so far (a test checks that a
    /// stream cut into one-byte pieces is still scanned once).
    examined: usize,
}

impl StreamFramer {
    /// A framer with the given limits.
    pub fn new(side: Side, limits: Limits) -> StreamFramer {
        StreamFramer {
            // grows with what comes: an idle connection holds nothing
            buf: BytesMut::new(),
            limits,
            side,
            failed: None,
            scanned: 0,
            line_start: 0,
            pending: None,
            examined: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether bytes of an unfinished message are buffered (not just the
    /// CR and LF of a keep-alive still coming in). A connection uses it to
    /// bound how long one message may take to arrive.
    pub fn mid_message(&self) -> bool {
        if self.failed.is_some() {
            return false;
        }
        self.pending.is_some()
            || !(self.buf.is_empty() || self.buf.starts_with(b"\r\n") || self.buf.as_ref() == b"\r")
    }

    /// The next frame, `Ok(None)` when more bytes are needed. After an
    /// error every call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.frame() {
            Err(e) => {
                self.failed = Some(e);
                self.buf.clear();
                Err(e)
            }
            ok => ok,
        }
    }

    fn frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(total) = self.pending {
            return Ok(self.take_message(total));
        }
        // keep-alives between messages
        if self.buf.starts_with(b"\r\n") {
            if self.buf.starts_with(b"\r\n\r\n") {
                let _ = self.buf.split_to(4);
                self.release_if_empty();
                return Ok(Some(Frame::Ping));
            }
            match (self.side, self.buf.get(2)) {
                (_, Some(b'\r')) if self.buf.len() == 3 => return Ok(None),
                (Side::Server, None) => return Ok(None),
                _ => {
                    let _ = self.buf.split_to(2);
                    self.release_if_empty();
                    return Ok(Some(Frame::Pong));
                }
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        // end of the header section: the first empty line
        let Some(header_end) = self.find_header_end()? else {
            return Ok(None);
        };
        let length = content_length(self.buf.get(..header_end).unwrap_or_default(), &self.limits)?;
        let total = header_end + length;
        if total > self.limits.max_message {
            return Err(FramingError::TooLarge {
                limit: self.limits.max_message,
            });
        }
        self.pending = Some(total);
        Ok(self.take_message(total))
    }

    /// Splits off the current message once all its bytes are in.
    fn take_message(&mut self, total: usize) -> Option<Frame> {
        if self.buf.len() < total {
            return None;
        }
        self.scanned = 0;
        self.line_start = 0;
        self.pending = None;
        let message = self.buf.split_to(total).freeze();
        self.release_if_empty();
        Some(Frame::Message(message))
    }

    /// With nothing buffered, lets go of the buffer: what is left of it
    /// would otherwise keep the last message's allocation (shared with the
    /// message) for as long as the connection waits for the next one.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Scans the bytes not seen yet for the empty line (CRLF or bare LF)
    /// that ends the header section; enforces the line and size limits.
    fn find_header_end(&mut self) -> Result<Option<usize>, FramingError> {
        let buf: &[u8] = &self.buf;
        while let Some(rel) = memchr::memchr(b'\n', buf.get(self.scanned..).unwrap_or_default()) {
            self.examined += rel + 1;
            let nl = self.scanned + rel;
            let line = buf.get(self.line_start..nl).unwrap_or_default();
            if line.len() > self.limits.max_line {
                return Err(FramingError::LineTooLong {
                    limit: self.limits.max_line,
                });
            }
            self.scanned = nl + 1;
            self.line_start = nl + 1;
            if line.is_empty() || line == b"\r" {
                return Ok(Some(nl + 1));
            }
        }
        self.examined += buf.len() - self.scanned;
        self.scanned = buf.len();
        if buf.len() > self.limits.max_message {
            return Err(FramingError::TooLarge {
                limit: self.limits.max_message,
            });
        }
        if buf.len() - self.line_start > self.limits.max_line {
            return Err(FramingError::LineTooLong {
                limit: self.limits.max_line,
            });
        }
        Ok(None)
    }
}

fn content_length(headers: &[u8], limits: &Limits) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    for line in headers.split(|&b| b == b'\n') {
        if line.len() > limits.max_line + 1 {
            return Err(FramingError::LineTooLong {
                limit: limits.max_line,
            });
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default();
        let name = trim_lws(std::str::from_utf8(name).unwrap_or_default());
        if HeaderName::from_bytes(name.as_bytes()) != HeaderName::ContentLength
            || line.first().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            continue;
        }
        let value = std::str::from_utf8(line.get(colon + 1..).unwrap_or_default())
            .map_err(|_| FramingError::InvalidContentLength)?;
        let n = crate::headers::delta_seconds(value)
            .map_err(|_| FramingError::InvalidContentLength)? as usize;
        if found.is_some_and(|f| f != n) {
            return Err(FramingError::ConflictingContentLength);
        }
        found = Some(n);
    }
    found.ok_or(FramingError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:b@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nl: 5\r\n\r\nhello";

    fn frames(f: &mut StreamFramer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Ok(Some(fr)) = f.next_frame() {
            out.push(fr);
        }
        out
    }

    #[test]
    fn mid_message_is_true_only_inside_a_message() {
        let mut f = StreamFramer::new(Side::Server, Limits::default());
        assert!(!f.mid_message());
        // a keep-alive arriving byte by byte is not a message
        for b in b"\r\n\r" {
            f.push(std::slice::from_ref(b));
            assert!(frames(&mut f).is_empty());
            assert!(!f.mid_message());
        }
        f.push(b"\n");
        assert_eq!(frames(&mut f), vec![Frame::Ping]);
        assert!(!f.mid_message());
        // every byte of a message but its last: inside (headers, then body)
        for b in MSG.iter().take(MSG.len() - 1) {
            f.push(std::slice::from_ref(b));
            assert!(frames(&mut f).is_empty());
            assert!(f.mid_message());
        }
        f.push(MSG.get(MSG.len() - 1..).unwrap_or_default());
        assert_eq!(
            frames(&mut f),
            vec![Frame::Message(Bytes::from_static(MSG))]
        );
        assert!(!f.mid_message());
    }

    #[test]
    fn splits_messages_and_keepalives_byte_by_byte() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(MSG);
        stream.extend_from_slice(b"\r\n\r\n");
        let mut f = StreamFramer::new(Side::Server, Limits::default());
        let mut got = Vec::new();
        for b in &stream {
            f.push(std::slice::from_ref(b));
            got.extend(frames(&mut f));
        }
        assert_eq!(
            got,
            vec![
                Frame::Ping,
                Frame::Message(Bytes::from_static(MSG)),
                Frame::Message(Bytes::from_static(MSG)),
                Frame::Ping
            ]
        );
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn a_body_with_empty_lines_is_not_taken_for_headers() {
        let msg: &[u8] = b"MESSAGE sip:b@h SIP/2.0\r\nl: 6\r\n\r\na\r\n\r\nb";
        let mut f = StreamFramer::new(Side::Server, Limits::default());
        let mut got = Vec::new();
        for chunk in msg.chunks(3) {
            f.push(chunk);
            got.extend(frames(&mut f));
        }
        assert_eq!(got, vec![Frame::Message(Bytes::from_static(msg))]);
    }

    #[test]
    fn one_byte_pieces_are_scanned_once() {
        // regression: every call rescanned the whole partial message for
        // its last line, so a peer trickling bytes cost quadratic work
        let mut msg = b"MESSAGE sip:b@h SIP/2.0\r\n".to_vec();
        for _ in 0..2000 {
            msg.extend_from_slice(b"X-Pad: 0123456789012345678901234567890\r\n");
        }
        msg.extend_from_slice(b"l: 0\r\n\r\n");
        let mut f = StreamFramer::new(
            Side::Server,
            Limits {
                max_message: 1 << 20,
                ..Limits::default()
            },
        );
        let mut got = 0;
        for b in &msg {
            f.push(std::slice::from_ref(b));
            got += frames(&mut f).len();
        }
        assert_eq!(got, 1);
        assert!(
            f.examined <= msg.len(),
            "examined {} bytes of {}",
            f.examined,
            msg.len()
        );
    }

    #[test]
    fn an_idle_framer_holds_no_buffer() {
        // the message comes in pieces (as reads bring it), then a ping
        let mut f = StreamFramer::new(Side::Server, Limits::default());
        for piece in MSG.chunks(64) {
            f.push(piece);
        }
        let message = f.next_frame();
        assert!(matches!(message, Ok(Some(Frame::Message(_)))));
        // the message lives on elsewhere; the framer keeps none of its
        // buffer for the next one
        assert_eq!(f.buf.capacity(), 0);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        assert_eq!(f.buf.capacity(), 0);
        drop(message);
    }

    #[test]
    fn client_sees_pongs() {
        let mut f = StreamFramer::new(Side::Client, Limits::default());
        f.push(b"\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Pong]);
        f.push(b"\r\n");
        f.push(MSG);
        assert_eq!(
            frames(&mut f),
            vec![Frame::Pong, Frame::Message(Bytes::from_static(MSG))]
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut f = StreamFramer::new(Side::Server, Limits::default());
        f.push(b"OPTIONS sip:b@h SIP/2.0\r\nCall-ID: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::MissingContentLength));
        f.push(MSG);
        assert_eq!(f.next_frame(), Err(FramingError::MissingContentLength));
        let mut f = StreamFramer::new(Side::Server, Limits::default());
        f.push(b"X: 1\r\nContent-Length: 3\r\nl: 4\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::ConflictingContentLength));
        let mut f = StreamFramer::new(Side::Server, Limits::default());
        f.push(b"X: 1\r\nContent-Length: -3\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::InvalidContentLength));
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_message: 100,
            max_headers: 10,
            max_line: 20,
        };
        let mut f = StreamFramer::new(Side::Server, limits);
        f.push(&[b'a'; 30]);
        assert_eq!(f.next_frame(), Err(FramingError::LineTooLong { limit: 20 }));
        let mut f = StreamFramer::new(Side::Server, limits);
        f.push(b"X: 1\r\nl: 500\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge { limit: 100 }));
        let mut f = StreamFramer::new(
            Side::Server,
            Limits {
                max_line: 1000,
                ..limits
            },
        );
        for _ in 0..20 {
            f.push(b"X: 123456\r\n");
        }
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge { limit: 100 }));
    }
}
