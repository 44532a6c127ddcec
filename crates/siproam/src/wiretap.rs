//! Seeing the SIP: a copy of every message the transports send and
//! receive, printed on stderr (`--trace`) and written to a pcap file
//! (`--pcap FILE`, with the RTP of calls too).
//!
//! The hooks sit where bytes meet sockets: [`crate::transport`] taps each
//! datagram sent and received, and each framed message (and keep-alive)
//! written to or read from a TCP or TLS connection (TLS as its
//! plaintext); the media engine taps each RTP/RTCP packet. A hook is
//! one `Option` check when no tap is installed. With one, the hook takes
//! the time and queues a record (the bytes are reference-counted, not
//! copied) on a bounded channel to one writer thread, which formats the
//! trace and writes the pcap: a full channel drops the record (counted,
//! told once) rather than holding up the SIP task. The pcap file is
//! buffered, flushed whenever the writer has been idle or 250 ms have
//! passed, and on [`WireTap::finish`]; past its size limit the writer
//! stops adding to it, with one warning.
//!
//! A tap is given to a manager in [`crate::transport::TransportConfig`]
//! and to a phone in [`crate::PhoneConfig`]; both default to the process's
//! tap installed with [`install`] (the command line installs one for
//! `--trace` / `--pcap`).

pub mod pcap;

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::transport::Transport;
use pcap::{PcapWriter, Way};

/// Records waiting for the writer at most; past it they are dropped.
const QUEUE: usize = 8192;
/// The writer flushes the pcap file at least this often while records
/// come.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// The default bound on the pcap file (1 GiB).
pub const DEFAULT_PCAP_LIMIT: u64 = 1 << 30;
/// How long [`WireTap::finish`] waits for the writer.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireDirection {
    /// We sent it.
    Sent,
    /// We received it.
    Received,
}

/// What carried a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireKind {
    /// SIP (or a keep-alive, or STUN on a SIP port) on this transport.
    Sip(Transport),
    /// RTP or RTCP (UDP).
    Media,
}

/// What to do with what is tapped.
#[derive(Debug, Clone, Default)]
pub struct WireTapOptions {
    /// Print each SIP message on stderr.
    pub trace: bool,
    /// Write SIP and RTP to this pcap file (created, or truncated).
    pub pcap: Option<PathBuf>,
    /// Stop writing the pcap file past this many bytes
    /// ([`DEFAULT_PCAP_LIMIT`] when `None`).
    pub pcap_limit: Option<u64>,
}

/// Why a tap could not start.
#[derive(Debug, thiserror::Error)]
pub enum WireTapError {
    /// The pcap file could not be created or written.
    #[error("cannot write the pcap file {path}: {source}")]
    Pcap {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the trace writer: {0}")]
    Thread(io::Error),
}

/// A tap: cheap to clone, all clones feed one writer.
#[derive(Clone)]
pub struct WireTap {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WireTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTap")
            .field("trace", &self.inner.trace)
            .field("pcap", &self.inner.pcap)
            .finish_non_exhaustive()
    }
}

struct Inner {
    trace: bool,
    pcap: bool,
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
    drop_told: AtomicBool,
    finished: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Record {
    time: SystemTime,
    direction: WireDirection,
    kind: WireKind,
    local: SocketAddr,
    remote: SocketAddr,
    bytes: Bytes,
}

enum Msg {
    Record(Record),
    /// Flush, then answer.
    Finish(SyncSender<()>),
}

impl WireTap {
    /// Starts a tap: opens the pcap file and starts the writer thread,
    /// which prints the trace on stderr.
    pub fn start(options: WireTapOptions) -> Result<WireTap, WireTapError> {
        let trace: Option<Box<dyn Write + Send>> = options
            .trace
            .then(|| Box::new(io::stderr()) as Box<dyn Write + Send>);
        let pcap = match &options.pcap {
            Some(path) => {
                let file = File::create(path).map_err(|source| WireTapError::Pcap {
                    path: path.clone(),
                    source,
                })?;
                let writer = PcapWriter::new(BufWriter::with_capacity(256 * 1024, file)).map_err(
                    |source| WireTapError::Pcap {
                        path: path.clone(),
                        source,
                    },
                )?;
                Some(writer)
            }
            None => None,
        };
        Self::with_outputs(
            trace,
            pcap,
            options.pcap_limit.unwrap_or(DEFAULT_PCAP_LIMIT),
        )
    }

    fn with_outputs<P: Write + Send + 'static>(
        trace: Option<Box<dyn Write + Send>>,
        pcap: Option<PcapWriter<P>>,
        limit: u64,
    ) -> Result<WireTap, WireTapError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let inner = Arc::new(Inner {
            trace: trace.is_some(),
            pcap: pcap.is_some(),
            tx,
            dropped: AtomicU64::new(0),
            drop_told: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let mut writer = Writer {
            trace,
            pcap,
            limit,
            over_limit: false,
        };
        let thread = std::thread::Builder::new()
            .name("siproam-wiretap".into())
            .spawn(move || writer.run(&rx))
            .map_err(WireTapError::Thread)?;
        *inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(WireTap { inner })
    }

    /// Whether SIP is traced on stderr.
    pub fn traces(&self) -> bool {
        self.inner.trace
    }

    /// Whether a pcap file is written.
    pub fn writes_pcap(&self) -> bool {
        self.inner.pcap
    }

    /// A SIP message (or keep-alive) sent or received.
    pub fn sip(
        &self,
        direction: WireDirection,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &Bytes,
    ) {
        self.record(direction, WireKind::Sip(transport), local, remote, bytes);
    }

    /// An RTP or RTCP packet sent or received (only into the pcap file).
    pub fn media(
        &self,
        direction: WireDirection,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        if self.inner.pcap {
            self.record(
                direction,
                WireKind::Media,
                local,
                remote,
                &Bytes::copy_from_slice(bytes),
            );
        }
    }

    fn record(
        &self,
        direction: WireDirection,
        kind: WireKind,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &Bytes,
    ) {
        if self.inner.finished.load(Ordering::Relaxed) {
            return;
        }
        let record = Record {
            time: SystemTime::now(),
            direction,
            kind,
            local,
            remote,
            bytes: bytes.clone(),
        };
        match self.inner.tx.try_send(Msg::Record(record)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.inner.drop_told.swap(true, Ordering::Relaxed) {
                    tracing::warn!("trace/pcap writer behind: messages left out of the trace");
                }
            }
        }
    }

    /// Records dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Writes out everything queued, flushes the pcap file and stops the
    /// writer (later records are ignored). Waits for it (a few seconds at
    /// most); calling it again does nothing.
    pub fn finish(&self) {
        if self.inner.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        // blocks only while the queue is full, which the writer drains
        if self.inner.tx.send(Msg::Finish(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(FINISH_WAIT);
        }
        let dropped = self.dropped();
        if dropped > 0 {
            tracing::warn!(dropped, "{dropped} message(s) left out of the trace/pcap");
        }
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(thread);
    }
}

struct Writer<P: Write> {
    trace: Option<Box<dyn Write + Send>>,
    pcap: Option<PcapWriter<P>>,
    limit: u64,
    over_limit: bool,
}

impl<P: Write> Writer<P> {
    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        let mut last_flush = std::time::Instant::now();
        let mut dirty = false;
        loop {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(Msg::Record(r)) => {
                    self.write(&r);
                    dirty = true;
                    if last_flush.elapsed() >= FLUSH_EVERY {
                        self.flush();
                        dirty = false;
                        last_flush = std::time::Instant::now();
                    }
                }
                Ok(Msg::Finish(done)) => {
                    // what was queued before the finish is written
                    while let Ok(Msg::Record(r)) = rx.try_recv() {
                        self.write(&r);
                    }
                    self.flush();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if dirty {
                        self.flush();
                        dirty = false;
                        last_flush = std::time::Instant::now();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Some(p) = &mut self.pcap {
            if let Err(e) = p.flush() {
                tracing::warn!(error = %e, "pcap file not written; no more will be");
                self.pcap = None;
            }
        }
        if let Some(t) = &mut self.trace {
            let _ = t.flush();
        }
    }

    fn write(&mut self, r: &Record) {
        // a socket bound to the wildcard address: named by the source
        // address the OS picks towards the peer (a look-up done here, off
        // the SIP task)
        let mut local = r.local;
        if local.ip().is_unspecified() {
            if let Ok(ip) = crate::transport::source_address_for(r.remote) {
                local.set_ip(ip);
            }
        }
        if let (Some(out), WireKind::Sip(transport)) = (&mut self.trace, r.kind) {
            let text = format_trace(r.time, r.direction, transport, local, r.remote, &r.bytes);
            // one write per message, so lines of the log do not land
            // inside it
            let _ = out.write_all(text.as_bytes());
        }
        let Some(p) = &mut self.pcap else {
            return;
        };
        if self.over_limit {
            return;
        }
        if p.written().saturating_add(r.bytes.len() as u64 + 120) > self.limit {
            self.over_limit = true;
            tracing::warn!(
                limit = self.limit,
                "pcap file reached its size limit ({} bytes): no more is written to it",
                self.limit
            );
            return;
        }
        let way = match r.direction {
            WireDirection::Sent => Way::Out,
            WireDirection::Received => Way::In,
        };
        let result = match r.kind {
            WireKind::Sip(Transport::Udp) | WireKind::Media => {
                p.udp(r.time, way, local, r.remote, &r.bytes)
            }
            WireKind::Sip(Transport::Tcp | Transport::Tls) => {
                p.tcp(r.time, way, local, r.remote, &r.bytes)
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "pcap file not written; no more will be");
            self.pcap = None;
        }
    }
}

/// Whether bytes are only CR and LF: a keep-alive (RFC 5626 ping
/// `CRLFCRLF`, pong `CRLF`; on UDP, any run of them).
fn is_keepalive(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'\r' | b'\n'))
}

/// Whether a body reads as text (UTF-8 without control characters other
/// than tab, CR and LF).
fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| {
        !s.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    })
}

/// The trace of one message: a header line (time, direction, transport,
/// local and remote address, size), the message as text with its CRLFs as
/// line breaks (a body that is not text summarised by its length), a
/// blank line. A keep-alive is one line.
pub fn format_trace(
    time: SystemTime,
    direction: WireDirection,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    bytes: &[u8],
) -> String {
    let (verb, arrow) = match direction {
        WireDirection::Sent => ("sent", "->"),
        WireDirection::Received => ("received", "<-"),
    };
    let transport = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    };
    let mut out = String::with_capacity(bytes.len() + 128);
    let _ = write!(
        out,
        "--- {} {verb} {transport} {local} {arrow} {remote}, {} bytes",
        wall_clock(time),
        bytes.len()
    );
    if is_keepalive(bytes) {
        let what = match bytes {
            b"\r\n\r\n" => "keep-alive ping (CRLFCRLF)",
            b"\r\n" => "keep-alive pong (CRLF)",
            _ => "keep-alive (CR/LF only)",
        };
        let _ = writeln!(out, ": {what}");
        return out;
    }
    out.push('\n');
    let split = memchr_crlf2(bytes);
    let (head, body) = match split {
        Some(i) => (
            bytes.get(..i).unwrap_or_default(),
            bytes.get(i + 4..).unwrap_or_default(),
        ),
        None => (bytes, &[][..]),
    };
    if !is_text(head) {
        let _ = writeln!(out, "[{} bytes that are not SIP text]", bytes.len());
        out.push('\n');
        return out;
    }
    push_lines(&mut out, head);
    out.push('\n');
    if split.is_some() {
        out.push('\n');
    }
    if !body.is_empty() {
        if is_text(body) {
            push_lines(&mut out, body);
            if !body.ends_with(b"\n") {
                out.push('\n');
            }
        } else {
            let _ = writeln!(out, "[binary body, {} bytes]", body.len());
        }
    }
    out.push('\n');
    out
}

fn memchr_crlf2(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Text with CRLF (and lone CR) as line breaks.
fn push_lines(out: &mut String, text: &[u8]) {
    let s = String::from_utf8_lossy(text);
    out.push_str(&s.replace("\r\n", "\n").replace('\r', "\n"));
}

/// `YYYY-MM-DD HH:MM:SS.mmmmmmZ` (UTC).
fn wall_clock(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // civil from days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

static GLOBAL: OnceLock<WireTap> = OnceLock::new();

/// Installs the process's tap (once; false if one is installed): the
/// default of [`crate::transport::TransportConfig::wiretap`] and
/// [`crate::PhoneConfig::wiretap`] from then on.
pub fn install(tap: WireTap) -> bool {
    GLOBAL.set(tap).is_ok()
}

/// The process's tap, if one is installed.
pub fn global() -> Option<WireTap> {
    GLOBAL.get().cloned()
}

/// Finishes the process's tap, if one is installed (see
/// [`WireTap::finish`]).
pub fn finish_global() {
    if let Some(tap) = GLOBAL.get() {
        tap.finish();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "127.0.0.1:5070".parse().unwrap(),
            "127.0.0.2:5060".parse().unwrap(),
        )
    }

    #[test]
    fn a_message_is_traced_as_text_with_a_header_line_and_a_blank_line() {
        let (l, r) = addrs();
        let t = UNIX_EPOCH + Duration::from_micros(1_764_793_453_123_456);
        let msg =
            b"REGISTER sip:example.test SIP/2.0\r\nCSeq: 1 REGISTER\r\nContent-Length: 2\r\n\r\nhi";
        let s = format_trace(t, WireDirection::Sent, Transport::Udp, l, r, msg);
        assert_eq!(
            s,
            format!(
                "--- 2025-12-03 20:24:13.123456Z sent UDP 127.0.0.1:5070 -> 127.0.0.2:5060, {} bytes\n\
                 REGISTER sip:example.test SIP/2.0\nCSeq: 1 REGISTER\nContent-Length: 2\n\nhi\n\n",
                msg.len()
            )
        );
        assert!(!s.contains('\r'));
        let s = format_trace(
            t,
            WireDirection::Received,
            Transport::Tls,
            l,
            r,
            b"SIP/2.0 200 OK\r\n\r\n",
        );
        assert!(s.starts_with("--- 2025-12-03 20:24:13.123456Z received TLS 127.0.0.1:5070 <- 127.0.0.2:5060, 18 bytes\nSIP/2.0 200 OK\n\n"), "{s}");
    }

    #[test]
    fn a_binary_body_and_a_keepalive_are_summarised() {
        let (l, r) = addrs();
        let msg = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\n\x00\xff\x01";
        let s = format_trace(UNIX_EPOCH, WireDirection::Sent, Transport::Tcp, l, r, msg);
        assert!(
            s.ends_with("Content-Length: 3\n\n[binary body, 3 bytes]\n\n"),
            "{s}"
        );
        let s = format_trace(
            UNIX_EPOCH,
            WireDirection::Sent,
            Transport::Tcp,
            l,
            r,
            b"\r\n\r\n",
        );
        assert_eq!(
            s,
            "--- 1970-01-01 00:00:00.000000Z sent TCP 127.0.0.1:5070 -> 127.0.0.2:5060, 4 bytes: keep-alive ping (CRLFCRLF)\n"
        );
        let s = format_trace(
            UNIX_EPOCH,
            WireDirection::Received,
            Transport::Udp,
            l,
            r,
            &[0, 1, 0, 8, 0x21, 0x12],
        );
        assert!(
            s.ends_with("6 bytes\n[6 bytes that are not SIP text]\n\n"),
            "{s}"
        );
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn finish_writes_out_what_was_queued_and_the_limit_stops_the_pcap() {
        let (l, r) = addrs();
        let trace = Shared::default();
        let pcap = Shared::default();
        let tap = WireTap::with_outputs(
            Some(Box::new(trace.clone())),
            Some(PcapWriter::new(pcap.clone()).unwrap()),
            24 + 3 * (16 + 28 + 100) + 120,
        )
        .unwrap();
        for _ in 0..5 {
            tap.sip(
                WireDirection::Sent,
                Transport::Udp,
                l,
                r,
                &Bytes::from(vec![b'x'; 100]),
            );
        }
        tap.media(WireDirection::Received, l, r, &[0x80; 20]);
        tap.finish();
        // after finish: ignored
        tap.sip(
            WireDirection::Sent,
            Transport::Udp,
            l,
            r,
            &Bytes::from_static(b"late"),
        );
        let traced = String::from_utf8(trace.0.lock().unwrap().clone()).unwrap();
        assert_eq!(traced.matches("--- ").count(), 5, "RTP is not traced");
        // 3 whole records fit under the limit, then nothing more
        assert_eq!(pcap.0.lock().unwrap().len(), 24 + 3 * (16 + 28 + 100));
        assert_eq!(tap.dropped(), 0);
    }
}
