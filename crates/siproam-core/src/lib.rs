//! # siproam-core — the sans-IO SIP user agent
//!
//! Transactions (RFC 3261 §17, RFC 6026), flows, and registrations. The
//! core **never reads a clock, never touches a socket and never draws
//! unseeded randomness**: every input carries `now`, every output is a
//! value the driver acts on, and the only random generator is seeded from
//! [`Config::seed`]. This is what makes a 32-second Timer B take
//! microseconds in a test.
//!
//! Inputs are `handle_*` methods and commands ([`Endpoint::register`],
//! [`Endpoint::send_request`], [`Endpoint::respond`]); after each, drain
//! [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`], then wait for
//! [`Endpoint::poll_timeout`] and call [`Endpoint::handle_timeout`].

#![warn(missing_docs)]

mod accounts;
mod addressing;
mod admission;
mod auth;
mod calls;
mod config;
mod dialog;
mod endpoint;
mod flow;
mod flow_failure;
mod gruu;
mod keepalive;
mod large_request;
pub(crate) mod mobility;
pub mod outcomes;
pub mod pager;
mod registration;
mod rng;
pub mod sdp;
pub mod stun;
pub mod subscription;
mod timers;
mod transactions;

pub use admission::{AdmissionConfig, AdmissionStats, SharedAdmission};
pub use config::Config;
pub use dialog::transfer::{
    ReferRefusal, TransferEvent, TransferId, TransferRole, TransferState, MAX_TRANSFERS,
};
pub use dialog::{
    CallEnd, CallEndReason, CallEndedBy, CallEvent, CallId, CallPeer, CallState,
    IncomingCallLimits, InviteSpec,
};
pub use endpoint::{
    CoreError, Endpoint, EndpointStats, Event, ListenPoint, RequestFailure, RequestId, ServerTxId,
    Target, Transmit,
};
pub use flow::{Flow, FlowCloseReason, FlowId, ServerName, Transport};
pub use flow_failure::{
    ClientSubscriptionRecovery, FlowFailurePolicy, FlowTerminated, InviteRecovery,
    RegistrationRecovery, ServerSubscriptionRecovery,
};
pub use gruu::Gruu;
pub use keepalive::{FlowEvent, FlowState};
pub use large_request::MAX_UDP_REQUEST;
pub use mobility::{
    AccountIpChange, AccountRoutes, CallMove, CallMoveAction, ChangeTrigger, ConnectionView,
    DetectedChange, IpChangeError, IpChangeParams, IpChangeReport, IpChangeStage, Ipv6Use,
    ListenFailure, ListenerView, MobilityAction, MobilityResult, NetworkQueries, NetworkView,
    RefreshFlags, RegistrarAddress, UnknownIpv6Use,
};
pub use registration::{
    AccountConfig, AccountId, RegistrationEvent, RegistrationFailure, RegistrationState,
};
pub use rng::Rng;
pub use subscription::{
    SubId, SubscribeSpec, SubscriptionEvent, SubscriptionReason, SubscriptionRole,
    SubscriptionState,
};
pub use timers::{TimeoutReason, TimerKind, TimerOwner};
