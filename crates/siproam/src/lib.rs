//! # siproam — a SIP user agent whose calls survive network changes
//!
//! Start an endpoint with an application (here the [`Phone`]: calls with
//! G.711 audio), register an account, place a call; when the address
//! changes (told with [`EndpointHandle::ip_change`], or noticed by the
//! network monitor when [`EndpointConfig::watch`] is set) the binding is
//! re-registered and the call refreshed, each stage reported as an
//! [`EndpointEvent::IpChange`]:
//!
//! ```no_run
//! use siproam::core::{CallEvent, Config, Event, RegistrationState};
//! use siproam::transport::Transport;
//! use siproam::{AccountSpec, EndpointConfig, EndpointEvent, EndpointHandle, Phone, PhoneConfig, WatchConfig};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = EndpointConfig {
//!         listen: vec![(Transport::Udp, "0.0.0.0:0".parse()?)],
//!         // the sans-IO core draws no randomness of its own
//!         core: Config { seed: siproam::random::os_u64()?, ..Config::default() },
//!         // follow network changes without being told
//!         watch: Some(WatchConfig::default()),
//!         ..Default::default()
//!     };
//!     let phone = Phone::new(PhoneConfig::default(), siproam::random::os_u64()?);
//!     let mut ep = EndpointHandle::start(config, Box::new(phone)).await?;
//!
//!     let registrar = "sip:192.0.2.1:5060";
//!     let mut account = AccountSpec::new("sip:alice@example.test", registrar);
//!     account.password = Some("secret".into());
//!     ep.register(account).await?;
//!
//!     while let Some(ev) = ep.next_event().await {
//!         match ev {
//!             EndpointEvent::Core(Event::Registration(r)) if r.state == RegistrationState::Registered => {
//!                 // registered: call Bob through the registrar
//!                 ep.call("sip:bob@example.test", "sip:alice@example.test", Some(registrar)).await?;
//!             }
//!             EndpointEvent::Core(Event::Call(CallEvent::State { call, state, .. })) => {
//!                 println!("call {}: {}", call.0, state.as_str());
//!             }
//!             EndpointEvent::IpChange(stage) => {
//!                 println!("network change: {} after {:?}", stage.stage.as_str(), stage.elapsed);
//!             }
//!             _ => {}
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! More in `crates/siproam/examples`: `register` (stay registered with
//! detection on), `call` (a call that follows an IP change) and `edge`
//! (an RFC 5626 edge proxy in front of a registrar).
//!
//! This crate is the tokio driver: it owns sockets (UDP, TCP, TLS), name
//! resolution and the OS network monitor, and drives the sans-IO core
//! ([`core`]). Nothing in here decides protocol behaviour.

#![warn(missing_docs)]

pub mod edge;
mod endpoint;
mod fdlimit;
pub mod instance;
pub mod location;
mod media_engine;
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
pub use media_engine::set_media_threads;
pub use media_report::{Direction, DtmfReport, MediaReport, MessageReport};
pub use phone::{AudioSpec, Phone, PhoneCommand, PhoneConfig};
pub use siproam_core as core;
pub use siproam_core::{
    AccountIpChange, IpChangeError, IpChangeParams, IpChangeReport, IpChangeStage, Ipv6Use,
    RefreshFlags, UnknownIpv6Use,
};
pub use subscribe::SubscriptionCommand;
pub use transfer::TransferCommand;
