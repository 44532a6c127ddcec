//! The descriptor limit is raised to the hard limit (its own test binary:
//! it changes the limits of the whole process).

#![cfg(target_os = "linux")]
#![allow(unsafe_code, clippy::unwrap_used)]

fn nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes one struct we own.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(r, 0);
    (lim.rlim_cur, lim.rlim_max)
}

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_limit() {
    let (_, hard) = nofile();
    assert!(hard > 64, "hard limit {hard} too low to test");
    let low = libc::rlimit {
        rlim_cur: 64,
        rlim_max: hard,
    };
    // SAFETY: reads one struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    assert_eq!(nofile().0, 64);

    let raised = siproam::raise_open_files_limit().unwrap();
    assert_eq!(raised.before, 64);
    assert_eq!(raised.hard, hard);
    let (soft, hard_now) = nofile();
    assert_eq!(hard_now, hard);
    assert_eq!(soft, raised.soft);
    if hard != libc::RLIM_INFINITY {
        assert_eq!(soft, hard);
    } else {
        assert!(soft > 64);
    }
    // idempotent, never lowers
    let again = siproam::raise_open_files_limit().unwrap();
    assert_eq!((again.before, again.soft), (soft, soft));
}
