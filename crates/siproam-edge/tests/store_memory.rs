//! What the in-memory location store holds per binding, counted by a
//! global allocator of this test binary's own: the bytes allocated and not
//! freed for 50,000 AoRs with one binding each (a phone's Contact, Call-ID
//! and AoR key, the maps' slots). `siproam bench edge` measures the whole
//! registrar process (PSS) against the 700 bytes per binding; this
//! keeps the store's own share from growing unnoticed.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, unsafe_code)]
// the lists are built the way a REGISTER builds them, push by push
#![allow(clippy::vec_init_then_push)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use siproam_edge::{Binding, LocationStore, MemoryStore};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only
// a counter of requested bytes is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout contract is the system allocator's
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn the_store_holds_a_binding_in_under_400_bytes() {
    const N: isize = 50_000;
    let now = std::time::Instant::now();
    let mut store = MemoryStore::new();
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..N {
        let b = Binding {
            contact: format!("sip:u{i}@127.3.0.1:41234"),
            expires_at: now,
            instance: None,
            reg_id: None,
            call_id: format!("c{i}@bench"),
            cseq: 2,
            flow: None,
            q: None,
            path: Vec::new(),
        };
        // built the way a REGISTER builds it: collected, then pushed to
        // (a Vec's first push reserves room for four)
        let mut list: Vec<Binding> = Vec::new();
        list.push(b);
        store.replace(&format!("u{i}@example.test"), list);
    }
    let per_binding = (LIVE.load(Ordering::Relaxed) - before) / N;
    assert_eq!(store.sizes()[0].0, 50_000);
    assert!(per_binding < 400, "{per_binding} bytes per binding");
}
