//! # siproam — the tokio driver and public API
//!
//! Owns sockets (UDP, TCP, TLS), name resolution and the OS network
//! monitor; drives the sans-IO core. Nothing in here decides protocol
//! behaviour.

#![warn(missing_docs)]

pub mod edge;
mod endpoint;
mod fdlimit;
pub mod instance;
pub mod location;
mod media_report;
pub mod netwatch;
mod phone;
pub mod random;
pub mod resolve;
mod subscribe;
mod transfer;
pub mod transport;
pub mod wiretap;

pub use endpoint::{
    AccountChanges, AccountSpec, AppCommand, AppCommander, Application, CommandError, CommandFor,
    EndpointConfig, EndpointError, EndpointEvent, EndpointHandle, FlowSpec, UserAgent, WatchConfig,
};
pub use fdlimit::{raise_open_files_limit, raise_open_files_limit_to, OpenFilesLimit};
pub use media_report::{Direction, DtmfReport, MediaReport, MessageReport};
pub use phone::{AudioSpec, Phone, PhoneCommand, PhoneConfig};
pub use siproam_core as core;
pub use siproam_core::{
    AccountIpChange, IpChangeError, IpChangeParams, IpChangeReport, IpChangeStage, Ipv6Use,
    RefreshFlags, UnknownIpv6Use,
};
pub use subscribe::SubscriptionCommand;
pub use transfer::TransferCommand;
