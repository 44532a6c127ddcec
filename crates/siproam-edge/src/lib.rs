//! # siproam-edge — registrar and location service
//!
//! Sans-IO, like the core: the registrar answers the REGISTER requests an
//! [`siproam_core::Endpoint`] reports, keeps bindings in memory with their
//! expiry, remembers `+sip.instance` / `reg-id` (RFC 5626) and the flow
//! each binding arrived on, and optionally challenges with digest
//! authentication from a users table (RFC 7616: qop required, nc tracked,
//! digest-uri checked). Time comes in as `now`; nonces are signed with the
//! configured HMAC key, so a challenge costs no stored state. The proxy
//! forwards requests for the AoRs it holds; the [`Dispatcher`] hands each
//! endpoint event to the one it is for. The [`EdgeProxy`] is an RFC 5626
//! edge proxy in front of a registrar: Path and Record-Route with signed
//! flow tokens ([`FlowTokenKey`]), requests routed back over exactly the
//! flow a token names (430 when it is gone), flow clean-up.
//! Bindings live in a
//! [`LocationStore`] ([`MemoryStore`] by default); a store shared by
//! several processes is fed through [`StoreOp`]s the driver performs
//! (`siproam::location`, Redis).
//!
//! No sockets, no tokio, no clock: the driver's `siproam::edge::RegistrarApp`
//! runs the element inside a running endpoint.

#![warn(missing_docs)]

mod dispatch;
mod edge;
mod flow_token;
mod mac;
mod proxy;
mod registrar;
mod relay;
mod store;

pub use dispatch::Dispatcher;
pub use edge::{
    has_flow_token, EdgeConfig, EdgeProxy, EdgeSizes, MAX_OWN_ROUTES, MAX_REGS_PER_FLOW,
};
pub use flow_token::{FlowToken, FlowTokenKey, TokenError, MAX_TOKEN_LEN};
pub use proxy::{Proxy, Routed};
pub use registrar::{
    aor_key, Binding, Handled, Registrar, RegistrarConfig, StoreOp, UsersError, AWAIT_LIMIT,
};
pub use store::{
    decode_shared, encode_shared, merge_shared, LocationStore, MemoryStore, MergedRecord,
    SharedRecordError,
};
