//! Transaction outcomes: what each client transaction ended with (a final
//! status, a timeout, a transport error), its method and how long it took,
//! for a driver's log. Off by default: [`crate::Endpoint::report_transaction_outcomes`]
//! turns it on; a bounded queue, [`crate::Endpoint::poll_transaction_outcome`]
//! empties it. Methods and numbers only, no URI.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Transport;

/// Outcomes kept at most until polled; older ones are dropped.
pub const MAX_OUTCOMES: usize = 256;

/// How a client transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionResult {
    /// A final response with this status code.
    Final(u16),
    /// Timer B or F fired: no final response.
    Timeout,
    /// Its flow failed before a final response.
    TransportError,
}

impl std::fmt::Display for TransactionResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransactionResult::Final(code) => write!(f, "{code}"),
            TransactionResult::Timeout => f.write_str("timeout"),
            TransactionResult::TransportError => f.write_str("transport error"),
        }
    }
}

/// One client transaction's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionOutcome {
    /// The request's method.
    pub method: String,
    /// The transport it went over.
    pub transport: Transport,
    /// How it ended.
    pub result: TransactionResult,
    /// From the request's first sending to its end.
    pub elapsed: Duration,
}

/// The queue of outcomes (empty and untouched while off).
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    enabled: bool,
    queue: VecDeque<TransactionOutcome>,
}

impl Outcomes {
    pub(crate) fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.queue.clear();
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn push(
        &mut self,
        now: Instant,
        started: Instant,
        method: &str,
        transport: Transport,
        result: TransactionResult,
    ) {
        if !self.enabled {
            return;
        }
        if self.queue.len() >= MAX_OUTCOMES {
            self.queue.pop_front();
        }
        self.queue.push_back(TransactionOutcome {
            method: method.to_owned(),
            transport,
            result,
            elapsed: now.saturating_duration_since(started),
        });
    }

    pub(crate) fn pop(&mut self) -> Option<TransactionOutcome> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // any base instant will do in a test
    fn nothing_is_kept_while_off_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let mut o = Outcomes::default();
        o.push(
            t0,
            t0,
            "REGISTER",
            Transport::Udp,
            TransactionResult::Final(200),
        );
        assert_eq!(o.pop(), None);
        o.set_enabled(true);
        for _ in 0..MAX_OUTCOMES + 5 {
            o.push(
                t0,
                t0,
                "OPTIONS",
                Transport::Udp,
                TransactionResult::Timeout,
            );
        }
        o.push(
            t0 + Duration::from_millis(32),
            t0,
            "INVITE",
            Transport::Tcp,
            TransactionResult::Final(486),
        );
        let mut n = 0;
        let mut last = None;
        while let Some(x) = o.pop() {
            n += 1;
            last = Some(x);
        }
        assert_eq!(n, MAX_OUTCOMES);
        let Some(last) = last else {
            panic!("no outcome")
        };
        assert_eq!(last.method, "INVITE");
        assert_eq!(last.elapsed, Duration::from_millis(32));
        assert_eq!(last.result.to_string(), "486");
    }
}
