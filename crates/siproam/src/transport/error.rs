//! Errors of the transport layer.

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::{ConnectionId, ListenerId, Transport};

/// Why a listener could not be opened or restarted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The socket could not be bound (address in use, not on this host,
    /// permission denied, …).
    #[error("cannot listen on {}:{addr}: {}", transport.param(), bind_failure(source))]
    Bind {
        /// The transport.
        transport: Transport,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The listener's literal address is no longer on this host.
    #[error("address {ip} is no longer on this host")]
    AddressGone {
        /// The address.
        ip: IpAddr,
    },
    /// A TLS listener needs [`super::TransportConfig::tls_server`].
    #[error("no TLS server certificate configured")]
    NoTlsServerConfig,
    /// No listener has this id.
    #[error("no listener {0}")]
    UnknownListener(ListenerId),
    /// The manager is shutting down.
    #[error("the transport manager is shut down")]
    ShutDown,
}

/// Why a bind failed, in words (the OS error's own text otherwise).
fn bind_failure(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".to_owned(),
        io::ErrorKind::AddrNotAvailable => "address not available on this host".to_owned(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".to_owned()
        }
        _ => e.to_string(),
    }
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message exceeds [`siproam_sip::Limits::max_message`].
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No UDP listener socket matches the local address asked for (or the
    /// remote's address family).
    #[error("no UDP socket to send from")]
    NoSocket {
        /// The local address asked for.
        local: Option<SocketAddr>,
    },
    /// The connection asked for is closed (or never existed).
    #[error("connection {0} is closed")]
    ConnectionGone(ConnectionId),
    /// The connection asked for has another transport.
    #[error("connection {connection} is a {transport} connection")]
    WrongTransport {
        /// The connection.
        connection: ConnectionId,
        /// Its transport.
        transport: Transport,
    },
    /// [`super::TransportManager::connect`] with a transport that has no
    /// connections (UDP).
    #[error("{0} has no connections")]
    NotAStream(Transport),
    /// The connection's send queue is full (the peer does not read).
    #[error("send queue of connection {0} is full")]
    QueueFull(ConnectionId),
    /// [`super::TransportConfig::max_connections`] are open.
    #[error("too many connections (limit {limit})")]
    TooManyConnections {
        /// The limit.
        limit: usize,
    },
    /// The TCP connection could not be opened (or its source address
    /// bound).
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    /// The TCP connection did not open in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid TLS server name")]
    InvalidServerName,
    /// No TLS client configuration could be built.
    #[error("no TLS client configuration")]
    NoTlsClientConfig,
    /// The TLS handshake failed (the certificate was not trusted, …).
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(#[source] io::Error),
    /// The TLS handshake did not finish in time.
    #[error("TLS handshake timed out")]
    TlsHandshakeTimeout,
    /// Sending a UDP datagram failed.
    #[error("UDP send failed: {0}")]
    Io(#[source] io::Error),
    /// The manager is shutting down.
    #[error("the transport manager is shut down")]
    ShutDown,
}

/// A TLS configuration that could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// PEM input could not be read or decoded.
    #[error("PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    /// The PEM input holds no certificate.
    #[error("no certificate found")]
    NoCertificate,
    /// rustls refused the configuration (a bad certificate or key, …).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}
