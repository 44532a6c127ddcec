//! Binding listener sockets and the tasks that read or accept on them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::wiretap::WireDirection;

use super::{stream, ListenerInfo, Shared, Transport, TransportEvent};

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// A freshly bound listener socket.
#[derive(Debug)]
pub(super) enum Bound {
    Udp(UdpSocket),
    Stream(TcpListener),
}

impl Bound {
    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Udp(s) => s.local_addr(),
            Bound::Stream(l) => l.local_addr(),
        }
    }
}

/// Binds a listener socket; on "address in use" waits `retry_delay` and
/// tries once more.
pub(super) async fn bind(
    transport: Transport,
    addr: SocketAddr,
    retry_delay: Duration,
) -> io::Result<Bound> {
    match bind_once(transport, addr) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            tracing::debug!(port = addr.port(), "address in use; retrying once");
            tokio::time::sleep(retry_delay).await;
            bind_once(transport, addr)
        }
        other => other,
    }
}

/// The receive buffer asked for on UDP listeners (4 MiB).
const UDP_RECV_BUFFER: usize = 4 << 20;

fn bind_once(transport: Transport, addr: SocketAddr) -> io::Result<Bound> {
    let (ty, protocol) = match transport {
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
        Transport::Tcp | Transport::Tls => (Type::STREAM, Protocol::TCP),
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        // so that 0.0.0.0 and [::] can both be bound on one port
        socket.set_only_v6(true)?;
    }
    if transport.is_reliable() {
        // rebinding while connections accepted on the port linger (or sit
        // in TIME_WAIT). Not for UDP, where it would let two sockets share
        // a port.
        socket.set_reuse_address(true)?;
    }
    if transport == Transport::Udp {
        // a deeper receive queue absorbs bursts (a flood is shed as it is
        // read, but the reader may lose the processor for a moment); the
        // kernel caps it at net.core.rmem_max, and a refusal is harmless
        let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    match transport {
        Transport::Udp => Ok(Bound::Udp(UdpSocket::from_std(socket.into())?)),
        Transport::Tcp | Transport::Tls => {
            socket.listen(1024)?;
            Ok(Bound::Stream(TcpListener::from_std(socket.into())?))
        }
    }
}

/// Starts the task that serves a bound listener; returns it and, for UDP,
/// the socket (shared with senders).
pub(super) fn spawn(
    shared: Arc<Shared>,
    info: ListenerInfo,
    bound: Bound,
    token: CancellationToken,
) -> (JoinHandle<()>, Option<Arc<UdpSocket>>) {
    match bound {
        Bound::Udp(socket) => {
            let socket = Arc::new(socket);
            let task = tokio::spawn(run_udp(shared, info, socket.clone(), token));
            (task, Some(socket))
        }
        Bound::Stream(listener) => (
            tokio::spawn(run_accept(shared, info, listener, token)),
            None,
        ),
    }
}

async fn run_udp(
    shared: Arc<Shared>,
    info: ListenerInfo,
    socket: Arc<UdpSocket>,
    token: CancellationToken,
) {
    let max = shared.limits.max_message;
    let mut buf = vec![0u8; max.saturating_add(1).min(MAX_DATAGRAM)];
    loop {
        let received = tokio::select! {
            () = token.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, remote) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors reported on the socket and the like: the
                // socket itself stays usable
                tracing::debug!(listener = %info.id, error = %e, "UDP receive error");
                continue;
            }
        };
        let Some(data) = buf.get(..n) else { continue };
        if n > max {
            tracing::debug!(listener = %info.id, size = n, "oversized datagram dropped");
            continue;
        }
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            // empty datagram or CRLF keep-alive
            if n > 0 && shared.wiretap.is_some() {
                let bytes = Bytes::copy_from_slice(data);
                shared.tap(
                    WireDirection::Received,
                    Transport::Udp,
                    info.local,
                    remote,
                    &bytes,
                );
            }
            continue;
        }
        // admission control: over its source's budget, a request is
        // dropped here, before it is copied or queued
        if let Some(keep) = shared.datagram_filter.get() {
            if !keep(remote.ip(), data) {
                continue;
            }
        }
        let bytes = Bytes::copy_from_slice(data);
        shared.tap(
            WireDirection::Received,
            Transport::Udp,
            info.local,
            remote,
            &bytes,
        );
        let event = TransportEvent::Received {
            transport: Transport::Udp,
            local: info.local,
            remote,
            connection: None,
            bytes,
        };
        tokio::select! {
            () = token.cancelled() => break,
            _ = shared.events.send(event) => {}
        }
    }
    tracing::debug!(listener = %info.id, "UDP listener task ended");
}

async fn run_accept(
    shared: Arc<Shared>,
    info: ListenerInfo,
    listener: TcpListener,
    token: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, remote)) => match shared.admit(remote.ip()) {
                Ok((slot, source)) => {
                    let conn = stream::incoming(&shared, slot, source);
                    tokio::spawn(stream::accepted(shared.clone(), info, tcp, remote, conn));
                }
                Err(refusal) => {
                    // closed at once; logged at most once per interval
                    drop(tcp);
                    shared.refused(refusal, remote.ip());
                }
            },
            Err(e) => {
                tracing::debug!(listener = %info.id, error = %e, "accept failed");
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) {
                    // out of descriptors or memory: don't spin
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
    }
    tracing::debug!(listener = %info.id, "accept task ended");
}
