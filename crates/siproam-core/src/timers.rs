//! One table for every timer of the core, ordered by deadline.
//!
//! Each timer is keyed by its owner and kind, so what is pending is always
//! inspectable and the reason for the next wake-up is known (as str0m's
//! `last_timeout_reason`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::flow::FlowId;

/// Who a timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerOwner {
    /// A client transaction.
    ClientTx(u64),
    /// A server transaction.
    ServerTx(u64),
    /// An account's registration.
    Account(u32),
    /// A flow (keep-alive, idle).
    Flow(FlowId),
    /// A call (dialog).
    Call(u32),
    /// The network change in progress.
    Mobility,
    /// A subscription (RFC 6665), held or served.
    Subscription(u32),
    /// A transfer (REFER): the wait for its first NOTIFY.
    Transfer(u32),
}

/// The RFC 3261 §17 timers, and the core's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// INVITE request retransmission (client, unreliable).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Wait for response retransmissions (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmission (client, unreliable).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE response retransmission (server, unreliable).
    G,
    /// Wait for ACK (server INVITE).
    H,
    /// Wait for ACK retransmissions (server INVITE, Confirmed).
    I,
    /// Wait for request retransmissions (server non-INVITE).
    J,
    /// Wait for response retransmissions (client non-INVITE).
    K,
    /// Wait for INVITE retransmissions after a 2xx (server, RFC 6026).
    L,
    /// Wait for 2xx retransmissions (client INVITE, RFC 6026).
    M,
    /// Registration refresh or retry.
    Register,
    /// A UAS retransmits its 2xx to an INVITE until the ACK (RFC 3261
    /// §13.3.1.4).
    Retransmit2xx,
    /// No ACK for the 2xx within 64·T1: the UAS ends the call.
    AckTimeout,
    /// Retry a re-INVITE / UPDATE after a 491 (RFC 3261 §14.1).
    Glare,
    /// A reliable provisional response is retransmitted until its PRACK
    /// (RFC 3262 §3).
    Reliable1xx,
    /// An incoming call not answered in time is refused with 480.
    NoAnswer,
    /// A network change stops waiting for its confirmations.
    MobilitySettle,
    /// Send a keep-alive ping on an account's flow (RFC 5626 §4.4.1).
    KeepAlive,
    /// No pong to the ping in time: the flow has failed.
    PongTimeout,
    /// Send a UDP keep-alive's STUN Binding request again (RFC 5389
    /// §7.2.1), until its answer or the pong timeout.
    StunRetransmit,
    /// Refresh a subscription we hold (or subscribe again after
    /// `retry-after`).
    SubscriptionRefresh,
    /// A served subscription expires; or no final NOTIFY came after our
    /// unsubscribe.
    SubscriptionExpiry,
}

/// Why the core asked to be woken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutReason {
    /// Whose timer.
    pub owner: TimerOwner,
    /// Which timer.
    pub kind: TimerKind,
}

impl TimerKind {
    /// The first kind in their order (declared first): the start of one
    /// owner's range in [`TimerTable`]'s key map.
    const FIRST: TimerKind = TimerKind::A;
}

/// All pending timers.
///
/// Both maps are ordered, so every operation is logarithmic in the number
/// of timers, and removing an owner's timers visits only that owner's
/// entries (a flood of transactions expiring together is cleaned up in
/// linear time, not quadratic).
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    by_deadline: BTreeSet<(Instant, TimerOwner, TimerKind)>,
    by_key: BTreeMap<(TimerOwner, TimerKind), Instant>,
    /// Key-map entries looked at by [`TimerTable::cancel_all`] (a work
    /// counter for the tests).
    #[cfg(test)]
    visited: u64,
}

impl TimerTable {
    /// Sets (or moves) a timer.
    pub(crate) fn set(&mut self, owner: TimerOwner, kind: TimerKind, at: Instant) {
        if let Some(old) = self.by_key.insert((owner, kind), at) {
            self.by_deadline.remove(&(old, owner, kind));
        }
        self.by_deadline.insert((at, owner, kind));
    }

    /// Cancels a timer if set.
    pub(crate) fn cancel(&mut self, owner: TimerOwner, kind: TimerKind) {
        if let Some(old) = self.by_key.remove(&(owner, kind)) {
            self.by_deadline.remove(&(old, owner, kind));
        }
    }

    /// Cancels every timer of an owner.
    pub(crate) fn cancel_all(&mut self, owner: TimerOwner) {
        // the owner's timers are adjacent in the key map: start at its
        // first possible key, stop at the first key of another owner
        while let Some((&(o, kind), &at)) = self.by_key.range((owner, TimerKind::FIRST)..).next() {
            if o != owner {
                break;
            }
            #[cfg(test)]
            {
                self.visited += 1;
            }
            self.by_key.remove(&(owner, kind));
            self.by_deadline.remove(&(at, owner, kind));
        }
    }

    /// When a timer fires, if set.
    pub(crate) fn deadline(&self, owner: TimerOwner, kind: TimerKind) -> Option<Instant> {
        self.by_key.get(&(owner, kind)).copied()
    }

    /// The pending timers, earliest first.
    pub(crate) fn upcoming(&self) -> impl Iterator<Item = (Instant, TimeoutReason)> + '_ {
        self.by_deadline
            .iter()
            .map(|&(at, owner, kind)| (at, TimeoutReason { owner, kind }))
    }

    /// The next deadline and its reason.
    pub(crate) fn next(&self) -> Option<(Instant, TimeoutReason)> {
        self.by_deadline
            .first()
            .map(|&(at, owner, kind)| (at, TimeoutReason { owner, kind }))
    }

    /// Removes and returns the earliest timer due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimeoutReason> {
        let &(at, owner, kind) = self.by_deadline.first()?;
        if at > now {
            return None;
        }
        self.by_deadline.remove(&(at, owner, kind));
        self.by_key.remove(&(owner, kind));
        Some(TimeoutReason { owner, kind })
    }

    /// How many timers are pending.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    #[allow(clippy::disallowed_methods)] // any base instant will do in a test
    fn ordered_moved_cancelled() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(
            TimerOwner::ClientTx(1),
            TimerKind::A,
            t0 + Duration::from_millis(500),
        );
        t.set(
            TimerOwner::ClientTx(1),
            TimerKind::B,
            t0 + Duration::from_secs(32),
        );
        t.set(
            TimerOwner::ClientTx(2),
            TimerKind::E,
            t0 + Duration::from_millis(100),
        );
        assert_eq!(t.next().map(|n| n.1.owner), Some(TimerOwner::ClientTx(2)));
        t.set(
            TimerOwner::ClientTx(2),
            TimerKind::E,
            t0 + Duration::from_secs(60),
        );
        assert_eq!(t.next().map(|n| n.1.kind), Some(TimerKind::A));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(1)).map(|r| r.kind),
            Some(TimerKind::A)
        );
        t.cancel_all(TimerOwner::ClientTx(1));
        assert_eq!(t.len(), 1);
    }

    /// Regression (issue 10, finding 1): removing a transaction's timers
    /// scanned every pending timer, so cleaning up a flood's backlog was
    /// quadratic and took the registrar offline for minutes. Now it visits
    /// only the owner's own timers.
    #[test]
    #[allow(clippy::disallowed_methods)] // any base instant will do in a test
    fn cancelling_an_owner_visits_only_its_timers() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        let n = 20_000u64;
        for id in 0..n {
            let at = t0 + Duration::from_millis(id % 977);
            t.set(TimerOwner::ServerTx(id), TimerKind::J, at);
            t.set(TimerOwner::ServerTx(id), TimerKind::G, at);
            t.set(TimerOwner::ClientTx(id), TimerKind::F, at);
        }
        for id in 0..n {
            t.cancel_all(TimerOwner::ServerTx(id));
        }
        assert_eq!(t.len(), n as usize);
        // two timers per owner removed, nothing else looked at
        assert_eq!(t.visited, 2 * n);
        for id in 0..n {
            assert_eq!(t.deadline(TimerOwner::ServerTx(id), TimerKind::J), None);
            assert!(t.deadline(TimerOwner::ClientTx(id), TimerKind::F).is_some());
        }
    }
}
