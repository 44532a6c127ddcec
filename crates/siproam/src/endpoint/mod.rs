//! The running endpoint: one tokio task owns the sans-IO core and the
//! transports, feeds the core what arrives and when its timers are due,
//! and carries out what it asks (sends, connects). Commands come in over a
//! channel; core events go to an [`Application`] and then to the caller.
//!
//! - `handle`: [`EndpointHandle`], its commands, [`EndpointEvent`] and
//!   [`EndpointError`];
//! - `config`: [`EndpointConfig`], [`WatchConfig`], [`AccountSpec`],
//!   [`AccountChanges`];
//! - `app`: the application hook ([`Application`], [`UserAgent`]);
//! - `driver`: the run loop — the task, command dispatch, transport
//!   events, sends and their backlog;
//! - `change`: the network side of a change — the core's `NetworkView`
//!   and the socket work of its `MobilityAction`s;
//! - `targets`: resolution of registrars and next hops into the core's
//!   targets, and registration.

mod app;
mod change;
mod config;
mod driver;
mod handle;
mod targets;

pub use app::{AppCommand, Application, CommandError, UserAgent};
pub use config::{AccountChanges, AccountSpec, EndpointConfig, FlowSpec, WatchConfig};
pub use handle::{AppCommander, CommandFor, EndpointError, EndpointEvent, EndpointHandle};
