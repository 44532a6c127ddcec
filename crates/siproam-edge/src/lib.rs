//! # siproam-edge — registrar and location service
//!
//! Sans-IO, like the core: the registrar answers the REGISTER requests an
//! [`siproam_core::Endpoint`] reports, keeps bindings in memory with their
//! expiry, remembers `+sip.instance` / `reg-id` (RFC 5626) and the flow
//! each binding arrived on, and optionally challenges with digest
//! authentication from a users table (RFC 7616: qop required, nc tracked,
//! digest-uri checked). Time comes in as `now`; nonces are signed with the
//! configured HMAC key, so a challenge costs no stored state.

#![warn(missing_docs)]

mod mac;
mod proxy;
mod registrar;

pub use proxy::{Proxy, Routed};
pub use registrar::{aor_key, Binding, Handled, Registrar, RegistrarConfig, UsersError};

mod app;
pub use app::RegistrarApp;
