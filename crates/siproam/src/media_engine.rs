//! One media engine for all calls.
//!
//! A process-wide set of engine threads (one per core unless
//! [`set_media_threads`] says otherwise) carries the RTP of every call.
//! Each thread runs one `mio` poll loop: it owns its calls' RTP sockets
//! (non-blocking), their sans-IO [`MediaSession`]s, audio sources and
//! sinks, and one timer wheel ([`wheel`]) that says when each call's next
//! 20 ms frame, RTCP report, jitter-buffer wait or media report is due. A
//! new call goes to the thread with the fewest calls.
//!
//! A call's socket is read when its timer fires (at least every
//! [`READ_INTERVAL`], with batched receives), not when a datagram arrives:
//! sockets are not registered with the poll, so an arriving datagram wakes
//! nobody, and a thread wakes only on its timer grid however many calls
//! and packets it carries. The jitter buffer absorbs the wait. Only while
//! the media is moving (after a rebind, until the peer's first packet on
//! the new socket) are the new and old sockets also watched for
//! readiness, so the move is seen the moment it happens.
//!
//! The phone keeps a [`MediaHandle`] per call: commands go to the thread
//! over a channel and wake its poll; reports come back on the endpoint's
//! event channel (`try_send`, from the engine thread). Dropping the handle
//! stops the call's media (final RTCP BYE, last report).
//!
//! Each datagram that leaves passes through one place,
//! [`Call::flush`] (after `poll_transmit`, in a reusable buffer), and each
//! that arrives through one place, [`Call::received`] (in the receive
//! buffer, before `handle_rtp`).

mod rx;
mod wheel;

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use siproam_core::CallId;
use siproam_media::srtp::{SrtpKey, SrtpSession};
use siproam_media::{
    AudioSink, AudioSource, Destination, DtmfDigit, MediaDirection, MediaEvent, MediaSession,
    MediaTransmit, TransmitInfo,
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::endpoint::EndpointEvent;
use crate::media_report::{Direction, DtmfReport, MediaReport};
use rx::RxBatch;
use wheel::TimerWheel;

/// How long each DTMF key is sent.
pub(crate) const DTMF_DURATION: Duration = Duration::from_millis(100);
/// The silence between two DTMF keys, in 20 ms frames (60 ms).
pub(crate) const DTMF_GAP_FRAMES: u32 = 3;
/// The most keys waiting on a call.
pub(crate) const MAX_DTMF_QUEUE: usize = 64;
/// Between two media reports of a call.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Frames sent at once for a call whose send clock fell behind (the
/// session itself skips time beyond five).
const MAX_CATCH_UP_FRAMES: usize = 6;
/// Timers are taken in wake-ups on a grid of this many 1 ms ticks: a
/// frame leaves at most this much after its time (never before), and a
/// thread wakes for its timers at most 1000 / `WAKE_GRAIN` times a second
/// however many calls it carries.
const WAKE_GRAIN: u64 = 4;
/// Batches read from one socket in a row: one flooded by a peer leaves the
/// others their turn, and is read on at its next timer.
const MAX_BATCHES_IN_A_ROW: usize = 8;
/// The longest a call's socket goes unread (one frame): a call that sends
/// reads at each frame anyway; one on hold still reads this often.
const READ_INTERVAL: Duration = Duration::from_millis(20);
/// The waker's token: every other token is a call's socket.
const WAKER: Token = Token(usize::MAX);

/// A command to a call's media.
#[derive(Debug)]
pub(crate) enum MediaCmd {
    /// Send RTP and RTCP there from now on.
    Destination(Destination),
    /// The negotiated direction.
    Direction(MediaDirection),
    /// Send and receive on this socket from now on (a new local address);
    /// the old one keeps receiving for the grace period, until the peer
    /// sends to the new one. The session keeps its SSRC, sequence numbers
    /// and timestamps.
    Rebind(StdUdpSocket, Duration),
    /// DTMF keys to send, after those already queued.
    Dtmf(Vec<DtmfDigit>),
    /// New SRTP keys from a new negotiation (our send key, the peer's):
    /// equal keys keep their roll-over counter and replay window, a new
    /// receive key keeps the old one until a packet authenticates under
    /// the new one ([`SrtpSession::update`]).
    Srtp(Box<(SrtpKey, SrtpKey)>),
    /// End the media: RTCP BYE, last report.
    Stop,
}

/// What a call's media starts with.
pub(crate) struct CallMedia {
    /// The call.
    pub call: CallId,
    /// Its RTP socket (made non-blocking here).
    pub socket: StdUdpSocket,
    /// Its session.
    pub session: MediaSession,
    /// What it sends.
    pub source: Box<dyn AudioSource + Send>,
    /// Where what it receives goes.
    pub sink: Option<Box<dyn AudioSink + Send>>,
    /// Where its reports go.
    pub events: Option<mpsc::Sender<EndpointEvent>>,
    /// The wire tap its packets are copied to.
    pub tap: Option<crate::wiretap::WireTap>,
    /// SRTP (RFC 3711) when the call negotiated it: every RTP and RTCP
    /// packet is protected as it leaves and checked as it arrives.
    pub srtp: Option<SrtpSession>,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

/// Why a call's media could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    /// No engine thread could be started.
    #[error("no media engine thread")]
    NoEngine,
    /// The engine thread is gone.
    #[error("the media engine thread is gone")]
    Gone,
}

enum Command {
    Start(u64, Box<CallMedia>),
    Call(u64, MediaCmd),
}

/// The sending side of one engine thread.
#[derive(Debug, Clone)]
struct ThreadHandle {
    tx: std_mpsc::Sender<Command>,
    waker: Arc<Waker>,
    /// Calls on the thread.
    load: Arc<AtomicUsize>,
}

impl ThreadHandle {
    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        self.tx.send(cmd).map_err(|_| EngineError::Gone)?;
        self.waker.wake().map_err(|_| EngineError::Gone)
    }
}

/// The engine threads of the process.
#[derive(Debug)]
struct Engines {
    threads: Vec<ThreadHandle>,
    next_key: AtomicU64,
}

static ENGINES: OnceLock<Engines> = OnceLock::new();
/// The thread count asked for (0: one per core).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many media engine threads carry the process's calls (0: one per
/// core, the default). Takes effect only before the first call's media
/// starts; returns whether it did.
pub fn set_media_threads(n: usize) -> bool {
    THREADS.store(n, Ordering::Relaxed);
    ENGINES.get().is_none()
}

impl Engines {
    fn get() -> &'static Engines {
        ENGINES.get_or_init(|| {
            let n = match THREADS.load(Ordering::Relaxed) {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            };
            let threads = (0..n)
                .filter_map(|i| match spawn_thread(i) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        debug!("media engine thread {i} not started: {e}");
                        None
                    }
                })
                .collect();
            Engines {
                threads,
                next_key: AtomicU64::new(1),
            }
        })
    }
}

fn spawn_thread(i: usize) -> std::io::Result<ThreadHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = std_mpsc::channel();
    let load = Arc::new(AtomicUsize::new(0));
    let engine_load = load.clone();
    std::thread::Builder::new()
        .name(format!("siproam-media-{i}"))
        .spawn(move || EngineThread::new(poll, rx, engine_load).run())?;
    Ok(ThreadHandle { tx, waker, load })
}

/// Starts a call's media on the engine thread with the fewest calls.
pub(crate) fn start(media: CallMedia) -> Result<MediaHandle, EngineError> {
    let engines = Engines::get();
    let thread = engines
        .threads
        .iter()
        .min_by_key(|t| t.load.load(Ordering::Relaxed))
        .ok_or(EngineError::NoEngine)?;
    let key = engines.next_key.fetch_add(1, Ordering::Relaxed);
    start_on(thread, key, media)
}

/// Starts a call's media on `thread` under `key` (unique on the thread).
fn start_on(thread: &ThreadHandle, key: u64, media: CallMedia) -> Result<MediaHandle, EngineError> {
    thread.load.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = thread.send(Command::Start(key, Box::new(media))) {
        thread.load.fetch_sub(1, Ordering::Relaxed);
        return Err(e);
    }
    Ok(MediaHandle {
        thread: thread.clone(),
        key,
    })
}

/// A call's media on an engine thread. Dropping it stops the media.
#[derive(Debug)]
pub(crate) struct MediaHandle {
    thread: ThreadHandle,
    key: u64,
}

impl MediaHandle {
    /// Sends a command to the call's media.
    pub(crate) fn send(&self, cmd: MediaCmd) -> Result<(), EngineError> {
        self.thread.send(Command::Call(self.key, cmd))
    }
}

impl Drop for MediaHandle {
    fn drop(&mut self) {
        let _ = self.send(MediaCmd::Stop);
    }
}

/// Whether a send failed because the socket's source address is no longer
/// usable (removed: `EINVAL` for IPv4, `EADDRNOTAVAIL` for IPv6; its link
/// down or without a route), so another socket may succeed.
fn address_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        AddrNotAvailable | InvalidInput | NetworkUnreachable | NetworkDown | HostUnreachable
    )
}

/// The wire tap's hook for media: a packet sent or received on `local`
/// (nothing without a tap).
#[inline]
fn tap_media(
    tap: Option<&crate::wiretap::WireTap>,
    direction: crate::wiretap::WireDirection,
    local: SocketAddr,
    remote: SocketAddr,
    bytes: &[u8],
) {
    if let Some(tap) = tap {
        tap.media(direction, local, remote, bytes);
    }
}

/// RTP packets that could not leave because their socket's address is
/// gone: the address went before the media moved (break-before-make). They
/// go out from the new socket when the media moves, in order, with their
/// sequence numbers; the oldest is given up beyond [`Stranded::MAX`]
/// (500 ms of audio) and all are at the end of the call. Until sent they
/// are not counted in `tx_packets`.
#[derive(Debug, Default)]
struct Stranded(VecDeque<MediaTransmit>);

impl Stranded {
    const MAX: usize = 25;

    /// Holds `t`; returns the packet given up to make room.
    fn push(&mut self, t: MediaTransmit) -> Option<MediaTransmit> {
        let given_up = (self.0.len() >= Self::MAX)
            .then(|| self.0.pop_front())
            .flatten();
        self.0.push_back(t);
        given_up
    }

    fn take(&mut self) -> VecDeque<MediaTransmit> {
        std::mem::take(&mut self.0)
    }

    /// How many of them are counted in `packets_sent` (not resends).
    fn fresh(&self) -> u64 {
        self.0.iter().filter(|t| !t.resent).count() as u64
    }
}

/// A datagram that did not leave at once, kept (or handed back to the
/// session's counters).
fn transmit(packet: &[u8], info: TransmitInfo) -> MediaTransmit {
    MediaTransmit {
        payload: bytes::Bytes::copy_from_slice(packet),
        destination: info.destination,
        rtcp: info.rtcp,
        resent: info.resent,
    }
}

/// A socket a call still receives on after its media moved.
#[derive(Debug)]
struct OldSocket {
    socket: UdpSocket,
    local: SocketAddr,
    until: Instant,
}

/// One call's media on an engine thread.
struct Call {
    call: CallId,
    key: u64,
    socket: UdpSocket,
    local: SocketAddr,
    /// Make-before-break: after a move the old socket keeps receiving
    /// until the peer sends to the new one (or the grace period ends), so
    /// packets already on their way to the old address are not lost.
    old: Option<OldSocket>,
    /// A move waits for the peer's first packet on the new socket.
    moved: bool,
    /// The sockets are registered with the poll (while moving).
    watched: bool,
    /// When the socket must be read next at the latest.
    read_at: Instant,
    session: MediaSession,
    source: Box<dyn AudioSource + Send>,
    sink: Option<Box<dyn AudioSink + Send>>,
    events: Option<mpsc::Sender<EndpointEvent>>,
    tap: Option<crate::wiretap::WireTap>,
    report_at: Instant,
    /// RTP that could not leave because the socket's address is gone.
    stranded: Stranded,
    /// DTMF keys waiting to be sent, and the frames of silence still due
    /// before the next one.
    dtmf: VecDeque<DtmfDigit>,
    dtmf_gap: u32,
    /// The wheel tick the call's deadline holds.
    scheduled: Option<u64>,
    /// Received audio on its way to the sink (reused).
    audio: Vec<i16>,
    /// SRTP, when negotiated.
    srtp: Option<SrtpSession>,
}

impl Call {
    /// A call started at `now` (its socket made non-blocking, not yet
    /// registered).
    fn new(key: u64, media: CallMedia, now: Instant) -> std::io::Result<Self> {
        let local = media.socket.local_addr()?;
        media.socket.set_nonblocking(true)?;
        Ok(Call {
            call: media.call,
            key,
            socket: UdpSocket::from_std(media.socket),
            local,
            old: None,
            moved: false,
            watched: false,
            read_at: now + READ_INTERVAL,
            session: media.session,
            source: media.source,
            sink: media.sink,
            events: media.events,
            tap: media.tap,
            report_at: now + REPORT_INTERVAL,
            stranded: Stranded::default(),
            dtmf: VecDeque::new(),
            dtmf_gap: 0,
            scheduled: None,
            audio: Vec::new(),
            srtp: media.srtp,
        })
    }

    fn emit(&self, ev: EndpointEvent) {
        if let Some(events) = &self.events {
            if events.try_send(ev).is_err() {
                debug!("media event of {:?} dropped: the owner lags", self.call);
            }
        }
    }

    fn report(&self, last: bool) -> EndpointEvent {
        let s = self.session.stats();
        EndpointEvent::Media(MediaReport {
            call: self.call,
            local: self.local,
            remote: self.session.destination().map(|d| d.rtp()),
            // what reached the wire: the stranded ones have not (yet)
            tx_packets: s.packets_sent.saturating_sub(self.stranded.fresh()),
            rx_packets: s.packets_received,
            rtcp_rx_packets: s.rtcp_received,
            lost: s.packets_lost,
            max_gap_ms: s.longest_gap.as_secs_f64() * 1000.0,
            last,
            srtp: self.srtp.as_ref().map(|x| x.suite().sdes_name()),
            srtp_dropped: self.srtp.as_ref().map_or(0, |x| {
                let st = x.stats();
                st.auth_failures + st.replayed + st.too_old + st.malformed + st.other_errors
            }),
        })
    }

    /// When the call next needs the engine's attention.
    fn deadline(&self) -> Instant {
        [
            self.session.next_send_at(),
            self.session.poll_timeout(),
            self.old.as_ref().map(|o| o.until),
            Some(self.read_at),
        ]
        .into_iter()
        .flatten()
        .fold(self.report_at, Instant::min)
    }

    /// A datagram arrived on the current socket (`from_old`: the old one).
    /// Every received datagram enters the session here, in the receive
    /// buffer (`packet`, changeable in place).
    fn received(&mut self, from_old: bool, packet: &mut [u8], from: SocketAddr, now: Instant) {
        let local = match (&self.old, from_old) {
            (Some(o), true) => o.local,
            _ => self.local,
        };
        tap_media(
            self.tap.as_ref(),
            crate::wiretap::WireDirection::Received,
            local,
            from,
            packet,
        );
        let packet = match self.srtp.as_mut() {
            None => packet,
            Some(srtp) => {
                let r = if siproam_media::looks_like_rtcp(packet) {
                    srtp.unprotect_rtcp(packet)
                } else {
                    srtp.unprotect_rtp(packet)
                };
                match r {
                    Ok(n) => packet.get(..n).unwrap_or_default(),
                    // dropped and counted (`srtp_dropped`): a forged,
                    // replayed or plain packet never reaches the session,
                    // nor moves the media (no latching, no MediaMoved)
                    Err(e) => {
                        debug!(
                            "SRTP packet of {:?} ({} bytes) dropped: {e}",
                            self.call,
                            packet.len()
                        );
                        return;
                    }
                }
            }
        };
        let _ = self.session.handle_rtp(now, from, packet);
        if from_old {
            if self.old.as_ref().is_some_and(|o| now >= o.until) {
                self.old = None;
            }
            return;
        }
        // the peer reached the new address: the old one can go
        self.old = None;
        if std::mem::take(&mut self.moved) {
            self.emit(EndpointEvent::MediaMoved {
                call: self.call,
                local,
                first_packet: now,
            });
        }
    }

    /// Sends the frames due by `now` (or DTMF in their place), the session's
    /// timers, the media report and the old socket's end.
    fn on_timer(&mut self, now: Instant) {
        for _ in 0..MAX_CATCH_UP_FRAMES {
            if self.session.next_send_at().is_none_or(|t| t > now) {
                break;
            }
            self.next_dtmf();
            let frame = self.source.next_frame();
            self.session.send_frame(now, &frame);
        }
        self.session.handle_timeout(now);
        if now >= self.report_at {
            self.report_at += REPORT_INTERVAL;
            if self.report_at <= now {
                self.report_at = now + REPORT_INTERVAL;
            }
            self.emit(self.report(false));
        }
        if self.old.as_ref().is_some_and(|o| now >= o.until) {
            self.old = None;
        }
    }

    /// Starts the next queued DTMF key when the previous one and its gap
    /// are over.
    fn next_dtmf(&mut self) {
        if self.session.dtmf_pending() {
            return;
        }
        if self.dtmf_gap > 0 {
            self.dtmf_gap -= 1;
            return;
        }
        let Some(digit) = self.dtmf.pop_front() else {
            return;
        };
        match self.session.send_dtmf(digit, DTMF_DURATION) {
            Ok(()) => {
                self.dtmf_gap = DTMF_GAP_FRAMES;
                self.emit(EndpointEvent::Dtmf(DtmfReport {
                    call: self.call,
                    digit,
                    direction: Direction::Sent,
                }));
            }
            Err(e) => {
                debug!("DTMF of {:?} not sent: {e}", self.call);
                self.dtmf.clear();
            }
        }
    }

    /// Sends what the session has to send, plays what it received, reports
    /// received keys. Every datagram leaves here, in `buf` (reused; room to
    /// grow in place).
    fn flush(&mut self, buf: &mut Vec<u8>) {
        while let Some(info) = self.session.poll_transmit_into(buf) {
            if let Some(srtp) = self.srtp.as_mut() {
                let r = if info.rtcp {
                    srtp.protect_rtcp(buf)
                } else {
                    srtp.protect_rtp(buf)
                };
                if let Err(e) = r {
                    debug!("SRTP: a packet of {:?} not protected: {e}", self.call);
                    continue;
                }
            }
            self.send(buf, info);
        }
        while self.session.poll_audio_into(&mut self.audio) {
            if let Some(s) = self.sink.as_mut() {
                let _ = s.write(&self.audio);
            }
        }
        while let Some(ev) = self.session.poll_event() {
            if let MediaEvent::Dtmf { digit, .. } = ev {
                self.emit(EndpointEvent::Dtmf(DtmfReport {
                    call: self.call,
                    digit,
                    direction: Direction::Received,
                }));
            }
        }
    }

    /// Sends `packet` (a datagram as it goes on the wire) where `info`
    /// says.
    fn send(&mut self, packet: &[u8], info: TransmitInfo) {
        let t = info;
        // moved to the other family (IPv4 ↔ IPv6) while the peer is still
        // at its old address: keep sending from the old socket until the
        // peer's new address is known
        let from_old = self.old.as_ref().filter(|o| {
            self.local.is_ipv4() != t.destination.is_ipv4()
                && o.local.is_ipv4() == t.destination.is_ipv4()
        });
        let (socket, local) = match from_old {
            Some(o) => (&o.socket, o.local),
            None => (&self.socket, self.local),
        };
        match socket.send_to(packet, t.destination) {
            Ok(_) => tap_media(
                self.tap.as_ref(),
                crate::wiretap::WireDirection::Sent,
                local,
                t.destination,
                packet,
            ),
            // the current socket's address is gone: the media moves to a
            // new socket soon, the packet leaves from there
            Err(e) if from_old.is_none() && !t.rtcp && address_gone(&e) => {
                if let Some(given_up) = self.stranded.push(transmit(packet, t)) {
                    self.session.handle_send_failed(&given_up);
                }
            }
            Err(e) => {
                debug!("media of {:?} not sent: {e}", self.call);
                self.session.handle_send_failed(&transmit(packet, t));
            }
        }
    }

    fn command(&mut self, cmd: MediaCmd, registry: &mio::Registry, slot: usize, now: Instant) {
        match cmd {
            MediaCmd::Destination(d) => self.session.set_destination(d),
            MediaCmd::Direction(d) => {
                self.session.set_direction(d);
                // held: the keys still waiting would never go out
                if !d.sends() && !self.dtmf.is_empty() {
                    debug!(
                        "DTMF of {:?}: {} keys dropped, the media does not send",
                        self.call,
                        self.dtmf.len()
                    );
                    self.dtmf.clear();
                }
            }
            MediaCmd::Dtmf(digits) => {
                let room = MAX_DTMF_QUEUE.saturating_sub(self.dtmf.len());
                if digits.len() > room {
                    debug!(
                        "DTMF of {:?}: {} keys over the queue's room",
                        self.call,
                        digits.len() - room
                    );
                }
                self.dtmf.extend(digits.into_iter().take(room));
            }
            MediaCmd::Rebind(std_socket, grace) => {
                if let Err(e) = self.rebind(std_socket, grace, registry, slot, now) {
                    debug!("could not move the media of {:?}: {e}", self.call);
                }
            }
            MediaCmd::Srtp(keys) => {
                let (tx, rx) = *keys;
                match self.srtp.as_mut() {
                    Some(srtp) => srtp.update(&tx, &rx),
                    None => self.srtp = Some(SrtpSession::new(&tx, &rx)),
                }
            }
            // handled by the thread
            MediaCmd::Stop => {}
        }
    }

    fn rebind(
        &mut self,
        std_socket: StdUdpSocket,
        grace: Duration,
        registry: &mio::Registry,
        slot: usize,
        now: Instant,
    ) -> std::io::Result<()> {
        std_socket.set_nonblocking(true)?;
        let addr = std_socket.local_addr()?;
        let mut new = UdpSocket::from_std(std_socket);
        // watched while moving: the peer's first packet on the new socket
        // is seen at once
        registry.register(&mut new, token(slot, false), Interest::READABLE)?;
        let mut previous = std::mem::replace(&mut self.socket, new);
        let previous_local = std::mem::replace(&mut self.local, addr);
        if let Some(mut o) = self.old.take() {
            if self.watched {
                let _ = registry.deregister(&mut o.socket);
            }
        }
        let watching = if self.watched {
            registry.reregister(&mut previous, token(slot, true), Interest::READABLE)
        } else {
            registry.register(&mut previous, token(slot, true), Interest::READABLE)
        };
        self.watched = true;
        if !grace.is_zero() && watching.is_ok() {
            self.old = Some(OldSocket {
                socket: previous,
                local: previous_local,
                until: now + grace,
            });
        }
        self.moved = true;
        // break-before-make: what the old address could not send goes out
        // from the new one
        for t in self.stranded.take() {
            match self.socket.send_to(&t.payload, t.destination) {
                Ok(_) => tap_media(
                    self.tap.as_ref(),
                    crate::wiretap::WireDirection::Sent,
                    self.local,
                    t.destination,
                    &t.payload,
                ),
                Err(e) => {
                    debug!("RTP not sent from the new address either: {e}");
                    self.session.handle_send_failed(&t);
                }
            }
        }
        Ok(())
    }

    /// Stops watching the sockets once the move is seen (the peer's
    /// packet reached the new socket): from then on they are read on the
    /// call's timer only.
    fn unwatch_if_moved(&mut self, registry: &mio::Registry) {
        if !self.watched || self.moved {
            return;
        }
        self.watched = false;
        let _ = registry.deregister(&mut self.socket);
        if let Some(o) = self.old.as_mut() {
            let _ = registry.deregister(&mut o.socket);
        }
    }

    /// Ends the media: RTCP BYE, last report.
    fn stop(&mut self, now: Instant, buf: &mut Vec<u8>) {
        self.session.close(now);
        self.flush(buf);
        // never sent: the media did not move in time
        for t in self.stranded.take() {
            self.session.handle_send_failed(&t);
        }
        self.emit(self.report(true));
    }
}

/// A call's socket's token: the slot, and whether it is the old socket.
fn token(slot: usize, old: bool) -> Token {
    Token(slot << 1 | usize::from(old))
}

/// One engine thread's state.
struct EngineThread {
    poll: Poll,
    commands: std_mpsc::Receiver<Command>,
    load: Arc<AtomicUsize>,
    /// The calls, by slot (a slot's sockets' tokens name it).
    calls: Vec<Option<Call>>,
    free: Vec<usize>,
    keys: HashMap<u64, usize>,
    wheel: TimerWheel,
    rx: RxBatch,
    tx: Vec<u8>,
    due: Vec<(usize, u64)>,
}

impl EngineThread {
    fn new(poll: Poll, commands: std_mpsc::Receiver<Command>, load: Arc<AtomicUsize>) -> Self {
        EngineThread {
            poll,
            commands,
            load,
            calls: Vec::new(),
            free: Vec::new(),
            keys: HashMap::new(),
            wheel: TimerWheel::new(Instant::now()),
            rx: RxBatch::new(),
            tx: Vec::with_capacity(rx::BUF),
            due: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self
                .wheel
                .next_wake(WAKE_GRAIN)
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                debug!("media engine stopped: {e}");
                return;
            }
            let now = Instant::now();
            let mut commands = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    commands = true;
                } else {
                    self.readable(ev.token().0 >> 1, now);
                }
            }
            if commands && !self.commands(now) {
                return;
            }
            let now = Instant::now();
            let mut due = std::mem::take(&mut self.due);
            self.wheel.expire(now, &mut due);
            for (slot, tick) in due.drain(..) {
                let Some(Some(call)) = self.calls.get_mut(slot) else {
                    continue;
                };
                if call.scheduled != Some(tick) {
                    continue;
                }
                call.scheduled = None;
                // what arrived since the last read, then the frame due
                Self::read(&mut self.rx, call, now);
                call.unwatch_if_moved(self.poll.registry());
                call.on_timer(now);
                call.flush(&mut self.tx);
                Self::schedule(&mut self.wheel, slot, call);
            }
            self.due = due;
        }
    }

    /// Puts the call's deadline on the wheel, unless it holds that tick.
    fn schedule(wheel: &mut TimerWheel, slot: usize, call: &mut Call) {
        let at = call.deadline();
        if let Some(tick) = call.scheduled {
            if wheel.tick_for(at) == tick {
                return;
            }
        }
        call.scheduled = Some(wheel.insert(slot, at));
    }

    /// A watched socket of a moving call is readable: reads the call.
    fn readable(&mut self, slot: usize, now: Instant) {
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        Self::read(&mut self.rx, call, now);
        call.unwatch_if_moved(self.poll.registry());
        call.flush(&mut self.tx);
        Self::schedule(&mut self.wheel, slot, call);
    }

    /// Reads what waits on the call's old socket while the media moves,
    /// then on its socket: [`MAX_BATCHES_IN_A_ROW`] batches each at most (a
    /// flooded socket is read on at the next timer).
    fn read(rx: &mut RxBatch, call: &mut Call, now: Instant) {
        call.read_at = now + READ_INTERVAL;
        // the old socket first: what waits there came before the peer's
        // first packet on the new one, which lets the old socket go
        for old in [true, false] {
            let (mut errors, mut batches) = (0, 0);
            loop {
                let socket = match (&call.old, old) {
                    (_, false) => &call.socket,
                    (Some(o), true) => &o.socket,
                    (None, true) => break,
                };
                let n = match rx.recv(socket) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!("RTP receive of {:?}: {e}", call.call);
                        errors += 1;
                        if errors > 4 {
                            break;
                        }
                        continue;
                    }
                };
                for i in 0..n {
                    if let Some((packet, from)) = rx.datagram(i) {
                        call.received(old, packet, from, now);
                    }
                }
                batches += 1;
                if n < rx::BATCH || batches >= MAX_BATCHES_IN_A_ROW {
                    break;
                }
            }
        }
    }

    /// Takes the commands waiting; `false` when every sender is gone.
    fn commands(&mut self, now: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Start(key, media)) => self.start(key, *media, now),
                Ok(Command::Call(key, MediaCmd::Stop)) => self.stop(key, now),
                Ok(Command::Call(key, cmd)) => {
                    let Some(&slot) = self.keys.get(&key) else {
                        continue;
                    };
                    let Some(Some(call)) = self.calls.get_mut(slot) else {
                        continue;
                    };
                    call.command(cmd, self.poll.registry(), slot, now);
                    call.flush(&mut self.tx);
                    Self::schedule(&mut self.wheel, slot, call);
                }
                Err(std_mpsc::TryRecvError::Empty) => return true,
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn start(&mut self, key: u64, media: CallMedia, now: Instant) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.calls.push(None);
            self.calls.len() - 1
        });
        let id = media.call;
        // not registered with the poll: read on the call's timer
        let mut call = match Call::new(key, media, now) {
            Ok(call) => call,
            Err(e) => {
                debug!("media of {id:?} not started: {e}");
                self.free.push(slot);
                self.load.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        };
        Self::schedule(&mut self.wheel, slot, &mut call);
        if let Some(s) = self.calls.get_mut(slot) {
            *s = Some(call);
        }
        self.keys.insert(key, slot);
    }

    fn stop(&mut self, key: u64, now: Instant) {
        let Some(slot) = self.keys.remove(&key) else {
            return;
        };
        let Some(mut call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
        debug_assert_eq!(call.key, key);
        // what arrived since the last timer counts in the last report
        Self::read(&mut self.rx, &mut call, now);
        call.stop(now, &mut self.tx);
        self.free.push(slot);
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
