//! Where an endpoint keeps its calls: the table that owns them, gives
//! them their ids, finds the call a request belongs to by its dialog
//! identifiers, and holds the limits on incoming calls. What a call is and
//! how it behaves lives in `dialog`; this module decides no protocol
//! behaviour.

use std::collections::HashMap;

use crate::dialog::{Call, CallId, IncomingCallLimits};
use crate::flow::FlowId;

/// Every call of an endpoint.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    calls: HashMap<u32, Call>,
    next: u32,
    limits: IncomingCallLimits,
}

impl Calls {
    /// Keeps a new call and gives it its id.
    pub(crate) fn insert(&mut self, call: Call) -> CallId {
        self.next += 1;
        self.calls.insert(self.next, call);
        CallId(self.next)
    }

    pub(crate) fn get(&self, id: CallId) -> Option<&Call> {
        self.calls.get(&id.0)
    }

    pub(crate) fn get_mut(&mut self, id: CallId) -> Option<&mut Call> {
        self.calls.get_mut(&id.0)
    }

    /// Forgets a call (it ended).
    pub(crate) fn remove(&mut self, id: CallId) -> Option<Call> {
        self.calls.remove(&id.0)
    }

    pub(crate) fn contains(&self, id: CallId) -> bool {
        self.calls.contains_key(&id.0)
    }

    /// How many calls exist.
    pub(crate) fn count(&self) -> usize {
        self.calls.len()
    }

    /// Every call, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (CallId, &Call)> {
        self.calls.iter().map(|(id, c)| (CallId(*id), c))
    }

    /// The call whose dialog a request with this Call-ID and tags belongs
    /// to (see [`Call::is_in_dialog`]).
    pub(crate) fn find_dialog(
        &self,
        call_id: &str,
        from_tag: Option<&str>,
        to_tag: Option<&str>,
    ) -> Option<CallId> {
        self.iter()
            .find(|(_, c)| c.is_in_dialog(call_id, from_tag, to_tag))
            .map(|(id, _)| id)
    }

    /// The limits on incoming calls.
    pub(crate) fn limits(&self) -> IncomingCallLimits {
        self.limits
    }

    pub(crate) fn set_limits(&mut self, limits: IncomingCallLimits) {
        self.limits = limits;
    }

    /// Whether a new incoming call fits the limits (counted over the
    /// calls that exist, at most `max_calls` of them).
    pub(crate) fn admits_incoming(&self) -> bool {
        let (mut unanswered, mut incoming) = (0usize, 0usize);
        for c in self.calls.values().filter(|c| c.is_incoming()) {
            incoming += 1;
            if c.is_unanswered_incoming() {
                unanswered += 1;
            }
        }
        unanswered < self.limits.max_unanswered && incoming < self.limits.max_calls
    }

    /// The flows the calls use (kept when idle UDP flows are reclaimed).
    pub(crate) fn flows_in_use(&self) -> impl Iterator<Item = FlowId> + '_ {
        self.calls.values().filter_map(Call::flow)
    }
}
