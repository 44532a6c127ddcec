//! TCP and TLS connections: opening, accepting, and the task that drives
//! each one (framing, keep-alive answers, idle close).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::ServerName;
use siproam_sip::{Frame, Side, StreamFramer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    CloseReason, ConnEntry, ConnectionId, ConnectionInfo, Direction, ListenerInfo, SendError,
    Shared, StreamSlot, Target, Transport, TransportEvent,
};

/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 16 * 1024;

/// How long a closing connection may take to send its FIN (and TLS
/// close_notify).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the handles and a connection's task share.
#[derive(Debug)]
pub(super) struct ConnShared {
    /// Cancelled to close the connection (a child of the manager's stop
    /// token).
    token: CancellationToken,
    /// Why it is being closed, when a handle closed it.
    reason: Mutex<Option<CloseReason>>,
    pinned: AtomicBool,
    /// Nanoseconds after `base` of the last traffic.
    last_activity: AtomicU64,
    base: Instant,
}

impl ConnShared {
    fn new(stop: &CancellationToken) -> ConnShared {
        ConnShared {
            token: stop.child_token(),
            reason: Mutex::new(None),
            pinned: AtomicBool::new(false),
            last_activity: AtomicU64::new(0),
            base: Instant::now(),
        }
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
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_activity.store(ns, Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_activity.load(Ordering::Relaxed))
    }
}

/// Opens a connection for `target` and starts its task.
pub(super) async fn connect(
    shared: &Arc<Shared>,
    target: &Target,
) -> Result<(ConnectionInfo, mpsc::Sender<Bytes>), SendError> {
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
    let slot = StreamSlot::acquire(shared).ok_or(SendError::TooManyConnections {
        limit: shared.max_connections,
    })?;
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
                    .map_err(SendError::TlsHandshake)?;
            Ok(start(
                shared,
                tls,
                Transport::Tls,
                local,
                remote,
                Direction::Outgoing,
                None,
                target.server_name.clone(),
                slot,
            ))
        }
        _ => Ok(start(
            shared,
            tcp,
            Transport::Tcp,
            local,
            remote,
            Direction::Outgoing,
            None,
            None,
            slot,
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
    slot: StreamSlot,
) {
    let local = match tcp.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(listener = %listener.id, error = %e, "accepted socket unusable");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    match listener.transport {
        Transport::Tls => {
            let Some(acceptor) = shared.tls_acceptor.clone() else {
                return;
            };
            let handshake = tokio::select! {
                () = shared.stop.cancelled() => return,
                r = tokio::time::timeout(shared.tls_handshake_timeout, acceptor.accept(tcp)) => r,
            };
            match handshake {
                Ok(Ok(tls)) => {
                    start(
                        &shared,
                        tls,
                        Transport::Tls,
                        local,
                        remote,
                        Direction::Incoming,
                        Some(listener),
                        None,
                        slot,
                    );
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = %listener.id, error = %e, "TLS handshake failed");
                }
                Err(_) => {
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
                Direction::Incoming,
                Some(listener),
                None,
                slot,
            );
        }
    }
}

/// Registers a connection and spawns its task.
#[allow(clippy::too_many_arguments)]
fn start<S>(
    shared: &Arc<Shared>,
    stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    direction: Direction,
    listener: Option<ListenerInfo>,
    server_name: Option<String>,
    slot: StreamSlot,
) -> (ConnectionInfo, mpsc::Sender<Bytes>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let info = ConnectionInfo {
        id: ConnectionId(shared.next_id()),
        transport,
        local,
        remote,
        direction,
        listener: listener.map(|l| l.id),
    };
    let (tx, rx) = mpsc::channel(shared.send_queue);
    let conn = Arc::new(ConnShared::new(&shared.stop));
    conn.touch();
    shared.state().connections.insert(
        info.id,
        ConnEntry {
            info,
            server_name,
            tx: tx.clone(),
            shared: conn.clone(),
        },
    );
    tracing::debug!(connection = %info.id, %transport, ?direction, "connection opened");
    tokio::spawn(drive(
        shared.clone(),
        stream,
        info,
        rx,
        tx.clone(),
        conn,
        slot,
    ));
    (info, tx)
}

/// A connection's task: reads and frames, writes what is queued, watches
/// the idle timer, and reports the close.
async fn drive<S>(
    shared: Arc<Shared>,
    stream: S,
    info: ConnectionInfo,
    mut rx: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Bytes>,
    conn: Arc<ConnShared>,
    _slot: StreamSlot,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    tokio::select! {
        () = shared.emit(TransportEvent::ConnectionOpened { info }) => {}
        () = conn.token.cancelled() => {}
    }
    let reason = tokio::select! {
        r = read_loop(&shared, &info, &mut rd, &tx, &conn) => r,
        r = write_loop(&mut wr, &mut rx, &conn) => r,
        r = idle_watch(&conn, shared.idle_timeout) => r,
        () = conn.token.cancelled() => conn.take_reason().unwrap_or(CloseReason::Stopped),
    };
    // no sender may pick it any more
    conn.token.cancel();
    shared.remove_connection(info.id);
    drop(rx);
    if !matches!(reason, CloseReason::Reset | CloseReason::Io(_)) {
        // FIN (and close_notify): let the peer see an orderly close
        let _ = tokio::time::timeout(CLOSE_GRACE, wr.shutdown()).await;
    }
    drop((rd, wr));
    tracing::debug!(connection = %info.id, %reason, "connection closed");
    shared
        .emit(TransportEvent::ConnectionClosed { info, reason })
        .await;
}

async fn read_loop<R>(
    shared: &Shared,
    info: &ConnectionInfo,
    rd: &mut R,
    tx: &mpsc::Sender<Bytes>,
    conn: &ConnShared,
) -> CloseReason
where
    R: AsyncRead + Unpin,
{
    let side = match info.direction {
        Direction::Outgoing => Side::Client,
        Direction::Incoming => Side::Server,
    };
    let mut framer = StreamFramer::new(side, shared.limits);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => return CloseReason::PeerClosed,
            Ok(n) => n,
            Err(e) => return io_reason(&e),
        };
        conn.touch();
        framer.push(buf.get(..n).unwrap_or_default());
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Message(bytes))) => {
                    shared
                        .emit(TransportEvent::Received {
                            transport: info.transport,
                            local: info.local,
                            remote: info.remote,
                            connection: Some(info.id),
                            bytes,
                        })
                        .await;
                }
                Ok(Some(Frame::Ping)) => {
                    if tx.try_send(Bytes::from_static(b"\r\n")).is_err() {
                        tracing::debug!(connection = %info.id, "send queue full; pong skipped");
                    }
                }
                Ok(Some(Frame::Pong)) => {
                    shared
                        .emit(TransportEvent::PongReceived {
                            connection: info.id,
                        })
                        .await;
                }
                Err(e) => {
                    tracing::debug!(connection = %info.id, error = %e, "framing error");
                    return CloseReason::Framing(e);
                }
            }
        }
    }
}

async fn write_loop<W>(wr: &mut W, rx: &mut mpsc::Receiver<Bytes>, conn: &ConnShared) -> CloseReason
where
    W: AsyncWrite + Unpin,
{
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            return io_reason(&e);
        }
        if rx.is_empty() {
            if let Err(e) = wr.flush().await {
                return io_reason(&e);
            }
        }
        conn.touch();
    }
    CloseReason::Closed
}

/// Resolves once the connection has been idle for `timeout` while not
/// pinned.
async fn idle_watch(conn: &ConnShared, timeout: Option<Duration>) -> CloseReason {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let deadline = conn.last_activity() + timeout;
        if Instant::now() >= deadline {
            if !conn.pinned.load(Ordering::Relaxed) {
                return CloseReason::Idle;
            }
            // check again later (never spin, even with a zero timeout)
            tokio::time::sleep(timeout.max(Duration::from_secs(1))).await;
        } else {
            tokio::time::sleep_until(deadline).await;
        }
    }
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
    async fn the_first_close_reason_wins() {
        let stop = CancellationToken::new();
        let conn = ConnShared::new(&stop);
        assert!(!conn.is_closing());
        conn.close(CloseReason::KeepAliveTimeout);
        conn.close(CloseReason::ShutDown);
        assert!(conn.is_closing());
        assert_eq!(conn.take_reason(), Some(CloseReason::KeepAliveTimeout));

        // stopped by the manager: no reason (reported as Stopped)
        let conn = ConnShared::new(&stop);
        stop.cancel();
        conn.close(CloseReason::Closed);
        assert!(conn.is_closing());
        assert_eq!(conn.take_reason(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_watch_waits_for_silence() {
        let stop = CancellationToken::new();
        let conn = ConnShared::new(&stop);
        let idle = Duration::from_secs(10);
        conn.touch();
        let start = Instant::now();
        // traffic at 6 s pushes the deadline to 16 s
        let toucher = async {
            tokio::time::sleep(Duration::from_secs(6)).await;
            conn.touch();
            std::future::pending::<()>().await;
        };
        let reason = tokio::select! {
            r = idle_watch(&conn, Some(idle)) => r,
            () = toucher => unreachable!(),
        };
        assert_eq!(reason, CloseReason::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(16));
    }
}
