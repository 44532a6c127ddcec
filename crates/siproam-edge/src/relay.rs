//! What the proxy and the edge both keep for each request they forwarded
//! and have not yet answered: the pending entry by the core's request id,
//! and forwarded INVITEs by their upstream branch (for CANCEL). One way to
//! forget an entry, and one sweep of what outlived every transaction.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use siproam_core::RequestId;

use crate::registrar::shrink;

/// Pending state older than this is dropped (64·T1 plus slack).
const PENDING_LIMIT: Duration = Duration::from_secs(200);

/// The sweep runs at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A pending forwarded request.
pub(crate) trait Pending {
    /// When it was forwarded.
    fn since(&self) -> Instant;
    /// The upstream branch of a forwarded INVITE.
    fn invite_branch(&self) -> Option<&str>;
}

/// Forgets `request`, and its INVITE branch if that still names it.
pub(crate) fn forget<P: Pending>(
    pending: &mut HashMap<RequestId, P>,
    invites: &mut HashMap<String, RequestId>,
    request: RequestId,
) {
    if let Some(p) = pending.remove(&request) {
        if let Some(branch) = p.invite_branch() {
            if invites.get(branch) == Some(&request) {
                invites.remove(branch);
            }
        }
    }
}

/// Drops pending state older than the longest transaction and gives
/// memory back after a flood, at most every 10 s (`last` is when it last
/// ran). True when it ran now.
pub(crate) fn sweep<P: Pending>(
    last: &mut Option<Instant>,
    pending: &mut HashMap<RequestId, P>,
    invites: &mut HashMap<String, RequestId>,
    now: Instant,
) -> bool {
    if last.is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY) {
        return false;
    }
    *last = Some(now);
    let old: Vec<RequestId> = pending
        .iter()
        .filter(|(_, p)| now.saturating_duration_since(p.since()) > PENDING_LIMIT)
        .map(|(id, _)| *id)
        .collect();
    for id in old {
        forget(pending, invites, id);
    }
    shrink(pending);
    shrink(invites);
    true
}
