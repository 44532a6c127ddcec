//! # siproam — the tokio driver and public API
//!
//! Owns sockets (UDP, TCP, TLS), name resolution and the OS network
//! monitor; drives the sans-IO core. Nothing in here decides protocol
//! behaviour.

#![warn(missing_docs)]

pub mod edge;
mod endpoint;
mod fdlimit;
pub mod netwatch;
mod phone;
pub mod random;
pub mod resolve;
pub mod transport;

pub use endpoint::{
    AccountChanges, AccountIpChange, AccountSpec, Application, EndpointConfig, EndpointError,
    EndpointEvent, EndpointHandle, IpChangeParams, IpChangeReport, Ipv6Use, RefreshFlags,
    UnknownIpv6Use, UserAgent, WatchConfig,
};
pub use fdlimit::{raise_open_files_limit, raise_open_files_limit_to, OpenFilesLimit};
pub use phone::{AudioSpec, MediaReport, Phone, PhoneCommand, PhoneConfig};
pub use siproam_core as core;
