//! Every decision of a network change (issue 11 moves them here).
//!
//! `calls`: what a change does to one call.

mod calls;

pub use calls::{CallMove, CallMoveAction};
