//! TCP and TLS connections: opening, accepting, and the task that drives
//! each one (framing, keep-alive answers); the idle, first-message and
//! message deadlines each connection keeps, which the manager's sweeper
//! checks ([`super::Shared::sweep`]).

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::ServerName;
use siproam_sip::{Frame, Side, StreamFramer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::wiretap::WireDirection;

use super::queue::SendQueue;
use super::{
    sockopt, tls::VerifiedServer, CloseReason, ConnEntry, ConnectionDirection, ConnectionId,
    ConnectionInfo, ListenerInfo, SendError, SendTarget, Shared, SourceSlot, StreamSlot, Transport,
    TransportEvent,
};

/// Most bytes read from a stream at a time. They are read into a buffer
/// on the stack of the poll that reads them and handed to the framer at
/// once: a connection waiting for bytes holds no read buffer.
const READ_CHUNK: usize = 16 * 1024;

/// How long a closing connection may take to send its FIN (and TLS
/// close_notify).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// No message under way (see [`ConnShared::message_started`]).
const NO_MESSAGE: u64 = u64::MAX;

/// The deadlines of a connection (from [`super::TransportConfig`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    /// Without a SIP message (or a keep-alive on a connection that has
    /// carried one), unless pinned.
    pub(super) idle: Option<Duration>,
    /// From the opening of an incoming connection to its first whole
    /// message.
    pub(super) first_message: Option<Duration>,
    /// From the first byte of a message to its last.
    pub(super) message: Option<Duration>,
}

/// What the handles and a connection's task share.
#[derive(Debug)]
pub(super) struct ConnShared {
    /// Cancelled to close the connection (a child of the manager's stop
    /// token).
    token: CancellationToken,
    /// Why it is being closed, when a handle closed it.
    reason: Mutex<Option<CloseReason>>,
    pinned: AtomicBool,
    /// Whether the peer connected to us.
    incoming: bool,
    /// Its key among the eviction candidates (incoming connections).
    seq: u64,
    /// A whole SIP message has gone either way.
    carried_sip: AtomicBool,
    /// Nanoseconds after `base` of the last SIP message (or keep-alive on
    /// a connection that carried SIP); `base` is when it opened.
    last_activity: AtomicU64,
    /// Nanoseconds after `base` of the first byte of the message being
    /// received, or [`NO_MESSAGE`].
    message_started: AtomicU64,
    base: Instant,
    /// Its place in the table; taken away when it is evicted.
    slot: Mutex<Option<StreamSlot>>,
    /// Its count for its source address (incoming connections).
    source: Mutex<Option<SourceSlot>>,
}

impl ConnShared {
    fn new(
        stop: &CancellationToken,
        incoming: bool,
        seq: u64,
        slot: Option<StreamSlot>,
        source: Option<SourceSlot>,
    ) -> ConnShared {
        ConnShared {
            token: stop.child_token(),
            reason: Mutex::new(None),
            pinned: AtomicBool::new(false),
            incoming,
            seq,
            carried_sip: AtomicBool::new(false),
            last_activity: AtomicU64::new(0),
            message_started: AtomicU64::new(NO_MESSAGE),
            base: Instant::now(),
            slot: Mutex::new(slot),
            source: Mutex::new(source),
        }
    }

    pub(super) fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Takes its place in the table (eviction); `None` if already gone.
    pub(super) fn take_slot(&self) -> Option<StreamSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Gives back its place and its per-source count.
    fn release(&self) {
        drop(self.take_slot());
        drop(self.source.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    fn since_base(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(NO_MESSAGE - 1)
    }

    fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }

    /// A whole SIP message went either way: the connection can no longer
    /// be evicted, and the idle timer restarts.
    fn carried(&self, shared: &Shared) {
        if !self.carried_sip.swap(true, Ordering::Relaxed) && self.incoming {
            shared.forget_unproven(self.seq);
        }
        self.touch();
    }

    /// Whether a SIP message went either way on it.
    fn has_carried_sip(&self) -> bool {
        self.carried_sip.load(Ordering::Relaxed)
    }

    /// A keep-alive: restarts the idle timer on a connection that has
    /// carried SIP.
    fn keepalive(&self) {
        if self.carried_sip.load(Ordering::Relaxed) {
            self.touch();
        }
    }

    /// Whether a message is being received; `restart` when a new one began
    /// (one finished in the same read).
    fn set_mid_message(&self, mid: bool, restart: bool) {
        if !mid {
            self.message_started.store(NO_MESSAGE, Ordering::Relaxed);
        } else if restart || self.message_started.load(Ordering::Relaxed) == NO_MESSAGE {
            self.message_started
                .store(self.since_base(), Ordering::Relaxed);
        }
    }

    /// The deadline that has passed at `now`, if one has: what the
    /// manager's sweeper closes the connection for. Each is computed from
    /// the shared state when asked, so bytes that do not count never push
    /// one back.
    pub(super) fn overdue(&self, d: &Deadlines, now: Instant) -> Option<CloseReason> {
        self.next_deadline(d)
            .and_then(|(at, reason)| (now >= at).then_some(reason))
    }

    /// The nearest deadline and what happens then.
    fn next_deadline(&self, d: &Deadlines) -> Option<(Instant, CloseReason)> {
        let mut next: Option<(Instant, CloseReason)> = None;
        let mut consider = |at: Instant, reason: CloseReason| {
            if next.as_ref().is_none_or(|(n, _)| at < *n) {
                next = Some((at, reason));
            }
        };
        if let Some(t) = d.first_message {
            if self.incoming && !self.carried_sip.load(Ordering::Relaxed) {
                consider(self.base + t, CloseReason::FirstMessageTimeout);
            }
        }
        if let Some(t) = d.message {
            let started = self.message_started.load(Ordering::Relaxed);
            if started != NO_MESSAGE {
                consider(self.at(started) + t, CloseReason::MessageTimeout);
            }
        }
        if let Some(t) = d.idle {
            if !self.is_pinned() {
                consider(self.last_activity() + t, CloseReason::Idle);
            }
        }
        next
    }

    pub(super) fn close(&self, reason: CloseReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() && !self.token.is_cancelled() {
            *slot = Some(reason);
        }
        drop(slot);
        self.token.cancel();
    }

    pub(super) fn is_closing(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(super) fn set_pinned(&self, pinned: bool) {
        self.pinned.store(pinned, Ordering::Relaxed);
    }

    fn take_reason(&self) -> Option<CloseReason> {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn touch(&self) {
        self.last_activity
            .store(self.since_base(), Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        self.at(self.last_activity.load(Ordering::Relaxed))
    }
}

/// The shared state of a connection just accepted, registered as a
/// candidate for eviction until it carries SIP.
pub(super) fn incoming(
    shared: &Arc<Shared>,
    slot: StreamSlot,
    source: SourceSlot,
) -> Arc<ConnShared> {
    let seq = shared.next_id();
    let conn = Arc::new(ConnShared::new(
        &shared.stop,
        true,
        seq,
        Some(slot),
        Some(source),
    ));
    shared.state().unproven.insert(seq, conn.clone());
    conn
}

/// Opens a connection for `target` and starts its task.
pub(super) async fn connect(
    shared: &Arc<Shared>,
    target: &SendTarget,
) -> Result<(ConnectionInfo, Arc<SendQueue>), SendError> {
    let remote = target.remote;
    // the name is checked before any packet goes out
    let server_name = match (target.transport, &target.server_name) {
        (Transport::Tls, Some(name)) => Some(
            ServerName::try_from(name.as_str())
                .map_err(|_| SendError::InvalidServerName)?
                .to_owned(),
        ),
        (Transport::Tls, None) => Some(ServerName::IpAddress(remote.ip().into())),
        _ => None,
    };
    let connector = match target.transport {
        Transport::Tls => Some(
            shared
                .tls_connector
                .clone()
                .ok_or(SendError::NoTlsClientConfig)?,
        ),
        _ => None,
    };
    let slot = shared.stream_slot().ok_or(SendError::TooManyConnections {
        limit: shared.max_connections,
    })?;
    let conn = Arc::new(ConnShared::new(
        &shared.stop,
        false,
        shared.next_id(),
        Some(slot),
        None,
    ));
    let socket = match remote {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(SendError::Connect)?;
    if let Some(mut local) = target.local {
        local.set_port(0);
        socket.bind(local).map_err(SendError::Connect)?;
    }
    let tcp = tokio::time::timeout(shared.connect_timeout, socket.connect(remote))
        .await
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
    let _ = tcp.set_nodelay(true);
    sockopt::apply(&tcp, shared.tcp_keepalive.as_ref());
    let local = tcp.local_addr().map_err(SendError::Connect)?;
    if shared.stop.is_cancelled() {
        return Err(SendError::ShutDown);
    }
    match (connector, server_name) {
        (Some(connector), Some(name)) => {
            let tls =
                tokio::time::timeout(shared.tls_handshake_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| SendError::TlsHandshakeTimeout)?
                    .map_err(|e| {
                        shared.tls_failed(ConnectionDirection::Outgoing, remote.ip(), &e);
                        SendError::TlsHandshake(e)
                    })?;
            // the verified end-entity certificate: its names may cover
            // other domains the connection can serve (RFC 5626 §4.3)
            let peer_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.clone().into_owned());
            let verified = VerifiedServer {
                name: target.server_name.clone(),
                certificate: peer_cert,
            };
            Ok(start(
                shared,
                tls,
                Transport::Tls,
                local,
                remote,
                ConnectionDirection::Outgoing,
                None,
                verified,
                conn,
            ))
        }
        _ => Ok(start(
            shared,
            tcp,
            Transport::Tcp,
            local,
            remote,
            ConnectionDirection::Outgoing,
            None,
            VerifiedServer::default(),
            conn,
        )),
    }
}

/// Serves a connection a listener accepted (after the TLS handshake, for
/// TLS).
pub(super) async fn accepted(
    shared: Arc<Shared>,
    listener: ListenerInfo,
    tcp: TcpStream,
    remote: SocketAddr,
    conn: Arc<ConnShared>,
) {
    let local = match tcp.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(listener = %listener.id, error = %e, "accepted socket unusable");
            shared.forget_unproven(conn.seq);
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    sockopt::apply(&tcp, shared.tcp_keepalive.as_ref());
    match listener.transport {
        Transport::Tls => {
            let Some(acceptor) = shared.tls_acceptor.clone() else {
                shared.forget_unproven(conn.seq);
                return;
            };
            let handshake = tokio::select! {
                // stopped, or evicted during the handshake
                () = conn.token.cancelled() => None,
                r = tokio::time::timeout(shared.tls_handshake_timeout, acceptor.accept(tcp)) => Some(r),
            };
            let Some(handshake) = handshake else {
                shared.forget_unproven(conn.seq);
                return;
            };
            match handshake {
                Ok(Ok(tls)) => {
                    start(
                        &shared,
                        tls,
                        Transport::Tls,
                        local,
                        remote,
                        ConnectionDirection::Incoming,
                        Some(listener),
                        VerifiedServer::default(),
                        conn,
                    );
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // closed before a word of TLS (a probe, a port scan):
                    // no reason to report
                    shared.forget_unproven(conn.seq);
                    tracing::debug!(listener = %listener.id, "TLS handshake: peer closed");
                }
                Ok(Err(e)) => {
                    shared.forget_unproven(conn.seq);
                    shared.tls_failed(ConnectionDirection::Incoming, remote.ip(), &e);
                }
                Err(_) => {
                    shared.forget_unproven(conn.seq);
                    tracing::debug!(listener = %listener.id, "TLS handshake timed out");
                }
            }
        }
        Transport::Tcp | Transport::Udp => {
            start(
                &shared,
                tcp,
                Transport::Tcp,
                local,
                remote,
                ConnectionDirection::Incoming,
                Some(listener),
                VerifiedServer::default(),
                conn,
            );
        }
    }
}

/// A connection's stream, split into what its task reads and what it
/// writes: a TCP stream by reference (no allocation), a TLS stream by
/// `tokio::io::split` (its two directions share one session).
pub(super) trait Halves: AsyncRead + AsyncWrite + Send + 'static {
    type Rd<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    type Wr<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;
    fn halves(&mut self) -> (Self::Rd<'_>, Self::Wr<'_>);
}

impl Halves for TcpStream {
    type Rd<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Wr<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Rd<'_>, Self::Wr<'_>) {
        self.split()
    }
}

macro_rules! tls_halves {
    ($tls:ty) => {
        impl Halves for $tls {
            type Rd<'a> = tokio::io::ReadHalf<&'a mut $tls>;
            type Wr<'a> = tokio::io::WriteHalf<&'a mut $tls>;
            fn halves(&mut self) -> (Self::Rd<'_>, Self::Wr<'_>) {
                tokio::io::split(self)
            }
        }
    };
}
tls_halves!(tokio_rustls::client::TlsStream<TcpStream>);
tls_halves!(tokio_rustls::server::TlsStream<TcpStream>);

/// Registers a connection and spawns its task.
#[allow(clippy::too_many_arguments)]
fn start<S>(
    shared: &Arc<Shared>,
    stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    direction: ConnectionDirection,
    listener: Option<ListenerInfo>,
    verified: VerifiedServer,
    conn: Arc<ConnShared>,
) -> (ConnectionInfo, Arc<SendQueue>)
where
    S: Halves,
{
    let info = ConnectionInfo {
        id: ConnectionId(shared.next_id()),
        transport,
        local,
        remote,
        direction,
        listener: listener.map(|l| l.id),
    };
    let tx = Arc::new(SendQueue::new(shared.send_queue));
    shared.state().connections.insert(
        info.id,
        ConnEntry {
            info,
            verified,
            tx: tx.clone(),
            shared: conn.clone(),
        },
    );
    tracing::debug!(connection = %info.id, %transport, ?direction, "connection opened");
    super::start_sweeper(shared);
    // one reference to all of it for the read and write loops, so their
    // futures (held by every connection) carry one pointer, not four
    let task = Task {
        shared: shared.clone(),
        info,
        tx: tx.clone(),
        conn,
    };
    tokio::spawn(drive(stream, task));
    (info, tx)
}

/// A connection's task: reads and frames, writes what is queued, and
/// reports the close (its deadlines are the sweeper's).
async fn drive<S>(mut stream: S, t: Task)
where
    S: Halves,
{
    let (mut rd, mut wr) = stream.halves();
    if let Some(wait) = t
        .shared
        .emit(TransportEvent::ConnectionOpened { info: t.info })
    {
        tokio::select! {
            () = wait => {}
            () = t.conn.token.cancelled() => {}
        }
    }
    let reason = tokio::select! {
        r = read_loop(&t, &mut rd) => r,
        r = write_loop(&t, &mut wr) => r,
        () = t.conn.token.cancelled() => t.conn.take_reason().unwrap_or(CloseReason::Stopped),
    };
    // no sender may pick it any more
    t.conn.token.cancel();
    t.shared.remove_connection(t.info.id);
    if t.conn.incoming {
        t.shared.forget_unproven(t.conn.seq);
    }
    t.conn.release();
    // senders now get `Closed`; what was queued is dropped
    t.tx.close();
    if matches!(
        reason,
        CloseReason::FirstMessageTimeout | CloseReason::MessageTimeout
    ) {
        tracing::debug!(connection = %t.info.id, peer = %t.info.remote.ip(), %reason, "connection too slow");
    }
    if !matches!(reason, CloseReason::Reset | CloseReason::Io(_)) {
        // FIN (and close_notify): let the peer see an orderly close
        let _ = tokio::time::timeout(CLOSE_GRACE, wr.shutdown()).await;
    }
    drop((rd, wr));
    drop(stream);
    tracing::debug!(connection = %t.info.id, %reason, "connection closed");
    if let Some(wait) = t.shared.emit(TransportEvent::ConnectionClosed {
        info: t.info,
        reason,
    }) {
        wait.await;
    };
}

/// What a connection's read and write loops use.
struct Task {
    shared: Arc<Shared>,
    info: ConnectionInfo,
    tx: Arc<SendQueue>,
    conn: Arc<ConnShared>,
}

impl Task {
    /// The wire tap's hook for this connection (TLS: the plaintext).
    #[inline]
    fn tap(&self, direction: WireDirection, bytes: &Bytes) {
        self.shared.tap(
            direction,
            self.info.transport,
            self.info.local,
            self.info.remote,
            bytes,
        );
    }
}

async fn read_loop<R>(t: &Task, rd: &mut R) -> CloseReason
where
    R: AsyncRead + Unpin,
{
    let side = match t.info.direction {
        ConnectionDirection::Outgoing => Side::Client,
        ConnectionDirection::Incoming => Side::Server,
    };
    let mut framer = StreamFramer::new(side, t.shared.limits);
    let mut ping_reported: Option<tokio::time::Instant> = None;
    loop {
        match read_into(rd, &mut framer).await {
            Ok(0) => return CloseReason::PeerClosed,
            Ok(_) => {}
            Err(e) => return io_reason(&e),
        }
        let mut finished = false;
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Message(bytes))) => {
                    finished = true;
                    t.conn.carried(&t.shared);
                    t.tap(WireDirection::Received, &bytes);
                    if let Some(wait) = t.shared.emit(TransportEvent::Received {
                        transport: t.info.transport,
                        local: t.info.local,
                        remote: t.info.remote,
                        connection: Some(t.info.id),
                        bytes,
                    }) {
                        wait.await;
                    }
                }
                Ok(Some(Frame::Ping)) => {
                    t.conn.keepalive();
                    if t.shared.wiretap.is_some() {
                        t.tap(WireDirection::Received, &Bytes::from_static(b"\r\n\r\n"));
                    }
                    if t.tx.try_send(Bytes::from_static(b"\r\n")).is_err() {
                        tracing::debug!(connection = %t.info.id, "send queue full; pong skipped");
                    }
                    // the flow's keep-alive, for whoever keeps flows alive
                    // by what arrives (an edge proxy's clean-up): at most
                    // one report per interval, whatever a peer floods
                    if t.shared.report_pings
                        && t.conn.has_carried_sip()
                        && ping_reported
                            .is_none_or(|t| t.elapsed() >= crate::transport::PING_REPORT_INTERVAL)
                    {
                        ping_reported = Some(tokio::time::Instant::now());
                        if let Some(wait) = t.shared.emit(TransportEvent::PingReceived {
                            connection: t.info.id,
                        }) {
                            wait.await;
                        }
                    }
                }
                Ok(Some(Frame::Pong)) => {
                    t.conn.keepalive();
                    if t.shared.wiretap.is_some() {
                        t.tap(WireDirection::Received, &Bytes::from_static(b"\r\n"));
                    }
                    if let Some(wait) = t.shared.emit(TransportEvent::PongReceived {
                        connection: t.info.id,
                    }) {
                        wait.await;
                    }
                }
                Err(e) => {
                    tracing::debug!(connection = %t.info.id, error = %e, "framing error");
                    return CloseReason::Framing(e);
                }
            }
        }
        t.conn.set_mid_message(framer.mid_message(), finished);
    }
}

async fn write_loop<W>(t: &Task, wr: &mut W) -> CloseReason
where
    W: AsyncWrite + Unpin,
{
    while let Some(bytes) = t.tx.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            return io_reason(&e);
        }
        t.tap(WireDirection::Sent, &bytes);
        if t.tx.is_empty() {
            if let Err(e) = wr.flush().await {
                return io_reason(&e);
            }
        }
        // a SIP message counts, a ping or pong (only CR and LF) does not
        if !bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            t.conn.carried(&t.shared);
        }
    }
    CloseReason::Closed
}

/// Reads what is there (at most [`READ_CHUNK`] bytes) into `framer`; the
/// bytes read, 0 at the end of the stream. The bytes go through a buffer
/// on the stack of the poll that gets them (a pending read has written
/// none), so the wait holds no buffer.
fn read_into<'a, R>(
    rd: &'a mut R,
    framer: &'a mut StreamFramer,
) -> impl std::future::Future<Output = io::Result<usize>> + 'a
where
    R: AsyncRead + Unpin,
{
    std::future::poll_fn(move |cx| {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut *rd).poll_read(cx, &mut buf) {
            std::task::Poll::Ready(Ok(())) => {
                framer.push(buf.filled());
                std::task::Poll::Ready(Ok(buf.filled().len()))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
}

fn io_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => CloseReason::Reset,
        // TLS: the peer closed the TCP connection without close_notify
        io::ErrorKind::UnexpectedEof => CloseReason::PeerClosed,
        kind => CloseReason::Io(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_close_reasons() {
        let reason = |kind| io_reason(&io::Error::from(kind));
        assert_eq!(reason(io::ErrorKind::ConnectionReset), CloseReason::Reset);
        assert_eq!(reason(io::ErrorKind::BrokenPipe), CloseReason::Reset);
        assert_eq!(
            reason(io::ErrorKind::UnexpectedEof),
            CloseReason::PeerClosed
        );
        assert_eq!(
            reason(io::ErrorKind::InvalidData),
            CloseReason::Io(io::ErrorKind::InvalidData)
        );
    }

    #[tokio::test]
    async fn reads_go_straight_to_the_framer_a_chunk_at_most() {
        let (mut peer, mut rd) = tokio::io::duplex(4 * READ_CHUNK);
        let body = vec![b'x'; READ_CHUNK + 100];
        let mut message = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        message.extend_from_slice(&body);
        peer.write_all(&message).await.unwrap_or_default();
        let mut framer = StreamFramer::new(Side::Server, siproam_sip::Limits::default());
        let first = read_into(&mut rd, &mut framer).await.unwrap_or_default();
        assert_eq!(first, READ_CHUNK);
        assert!(matches!(framer.next_frame(), Ok(None)));
        let rest = read_into(&mut rd, &mut framer).await.unwrap_or_default();
        assert_eq!(first + rest, message.len());
        match framer.next_frame() {
            Ok(Some(Frame::Message(m))) => assert_eq!(&m[..], &message[..]),
            other => panic!("not the message: {other:?}"),
        }
        drop(peer);
        assert_eq!(read_into(&mut rd, &mut framer).await.unwrap_or(1), 0);
    }

    #[tokio::test]
    async fn the_first_close_reason_wins() {
        let stop = CancellationToken::new();
        let conn = ConnShared::new(&stop, false, 1, None, None);
        assert!(!conn.is_closing());
        conn.close(CloseReason::KeepAliveTimeout);
        conn.close(CloseReason::ShutDown);
        assert!(conn.is_closing());
        assert_eq!(conn.take_reason(), Some(CloseReason::KeepAliveTimeout));

        // stopped by the manager: no reason (reported as Stopped)
        let conn = ConnShared::new(&stop, false, 2, None, None);
        stop.cancel();
        conn.close(CloseReason::Closed);
        assert!(conn.is_closing());
        assert_eq!(conn.take_reason(), None);
    }

    fn idle_only(idle: Duration) -> Deadlines {
        Deadlines {
            idle: Some(idle),
            first_message: None,
            message: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_is_overdue_after_silence_only() {
        let stop = CancellationToken::new();
        let conn = ConnShared::new(&stop, false, 1, None, None);
        let d = idle_only(Duration::from_secs(10));
        conn.touch();
        let start = Instant::now();
        // traffic at 6 s pushes the deadline to 16 s
        tokio::time::sleep(Duration::from_secs(6)).await;
        conn.touch();
        assert_eq!(conn.overdue(&d, start + Duration::from_secs(15)), None);
        assert_eq!(
            conn.overdue(&d, start + Duration::from_secs(16)),
            Some(CloseReason::Idle)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pinned_connection_is_never_idle() {
        let stop = CancellationToken::new();
        let conn = ConnShared::new(&stop, false, 1, None, None);
        let d = idle_only(Duration::from_secs(10));
        conn.set_pinned(true);
        let later = Instant::now() + Duration::from_secs(100);
        assert_eq!(conn.overdue(&d, later), None);
        // long past its idle time when unpinned: overdue then
        conn.set_pinned(false);
        assert_eq!(conn.overdue(&d, later), Some(CloseReason::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_started_brings_its_deadline_forward() {
        let stop = CancellationToken::new();
        let conn = ConnShared::new(&stop, true, 1, None, None);
        let deadlines = Deadlines {
            idle: Some(Duration::from_secs(300)),
            first_message: Some(Duration::from_secs(20)),
            message: Some(Duration::from_secs(5)),
        };
        let start = Instant::now();
        // no message at all: the first-message deadline
        let at = |s| start + Duration::from_secs(s);
        assert_eq!(conn.overdue(&deadlines, at(19)), None);
        assert_eq!(
            conn.overdue(&deadlines, at(20)),
            Some(CloseReason::FirstMessageTimeout)
        );

        // an outgoing connection: a message begun at 1 s is due at 6 s
        let conn = ConnShared::new(&stop, false, 2, None, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        conn.set_mid_message(true, false);
        // more bytes of the same message do not push it back
        tokio::time::sleep(Duration::from_secs(2)).await;
        conn.set_mid_message(true, false);
        assert_eq!(conn.overdue(&deadlines, at(5)), None);
        assert_eq!(
            conn.overdue(&deadlines, at(6)),
            Some(CloseReason::MessageTimeout)
        );
        // the message completed: no deadline but the idle one
        conn.set_mid_message(false, false);
        assert_eq!(conn.overdue(&deadlines, at(200)), None);
    }
}
