//! A connection's send queue: what senders hand its task to write, in
//! order, bounded.
//!
//! A tokio `mpsc` channel would do, but it costs about 1.5 KiB per
//! connection before the first message (a block of 32 slots and a
//! cache-padded channel head); an edge or a registrar holds tens of
//! thousands of mostly idle flows. This one is a `VecDeque` that
//! allocates on the first message, behind a mutex held only to push or
//! pop, and a `Notify` that wakes the writer (its stored permit means a
//! message pushed before the writer waits is never missed).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::Notify;

/// Bounded, in-order, one reader; shared by its senders through an `Arc`.
#[derive(Debug)]
pub(super) struct SendQueue {
    queue: Mutex<VecDeque<Bytes>>,
    capacity: usize,
    closed: AtomicBool,
    wake: Notify,
}

impl SendQueue {
    /// An empty queue of at most `capacity` messages (at least one).
    pub(super) fn new(capacity: usize) -> SendQueue {
        SendQueue {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Bytes>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `bytes`; `Full` when `capacity` are waiting, `Closed` once
    /// the reader is gone (the bytes come back either way).
    pub(super) fn try_send(&self, bytes: Bytes) -> Result<(), TrySendError<Bytes>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(bytes));
        }
        {
            let mut q = self.lock();
            if q.len() >= self.capacity {
                return Err(TrySendError::Full(bytes));
            }
            q.push_back(bytes);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The next message, waiting for one; `None` once closed (what was
    /// still queued then is dropped, as a closed connection drops it).
    pub(super) async fn recv(&self) -> Option<Bytes> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            {
                let mut q = self.lock();
                if let Some(b) = q.pop_front() {
                    if q.is_empty() {
                        // nothing more to write: an idle connection holds
                        // no buffer (most flows send a message an hour)
                        *q = VecDeque::new();
                    }
                    return Some(b);
                }
            }
            self.wake.notified().await;
        }
    }

    /// Whether nothing is waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The reader is gone: senders get `Closed`, the queue is emptied.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        *self.lock() = VecDeque::new();
        self.wake.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_order_bounded_and_closed() {
        let q = std::sync::Arc::new(SendQueue::new(2));
        assert!(q.try_send(Bytes::from_static(b"a")).is_ok());
        assert!(q.try_send(Bytes::from_static(b"b")).is_ok());
        assert!(matches!(
            q.try_send(Bytes::from_static(b"c")),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(q.recv().await.as_deref(), Some(&b"a"[..]));
        assert_eq!(q.recv().await.as_deref(), Some(&b"b"[..]));
        assert!(q.is_empty());
        // a message sent while the reader waits wakes it
        let reader = {
            let q = q.clone();
            tokio::spawn(async move { q.recv().await })
        };
        tokio::task::yield_now().await;
        assert!(q.try_send(Bytes::from_static(b"d")).is_ok());
        assert_eq!(reader.await.unwrap().as_deref(), Some(&b"d"[..]));
        q.close();
        assert_eq!(q.recv().await, None);
        assert!(matches!(
            q.try_send(Bytes::from_static(b"e")),
            Err(TrySendError::Closed(_))
        ));
    }

    #[test]
    fn an_idle_queue_holds_no_buffer() {
        let q = SendQueue::new(64);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..32 {
            q.try_send(Bytes::from_static(b"x")).unwrap();
        }
        rt.block_on(async {
            for _ in 0..32 {
                q.recv().await;
            }
        });
        assert_eq!(q.lock().capacity(), 0);
        // one message (an answer on a flow that then waits an hour)
        q.try_send(Bytes::from_static(b"x")).unwrap();
        rt.block_on(q.recv());
        assert_eq!(q.lock().capacity(), 0);
    }
}
