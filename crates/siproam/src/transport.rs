//! Transports: UDP, TCP and TLS listeners and connections (being written).
