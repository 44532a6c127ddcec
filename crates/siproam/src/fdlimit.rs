//! The process's limit on open descriptors (`RLIMIT_NOFILE`).
//!
//! Every TCP/TLS connection, listener and RTP socket is a descriptor; the
//! soft limit many systems start a process with (1,024) is far below what a
//! server needs to hold thousands of connections while still accepting new
//! ones. A binary raises it once at startup.

use std::io;

/// The descriptor limits after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now (the hard limit, unless that is unlimited or the
    /// kernel refused, see [`raise_open_files_limit`]).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` of the process to its hard limit (an
/// unlimited hard limit: to `fs.nr_open`, 1,048,576 when unreadable).
/// Never lowers it. Elsewhere than Linux: not supported.
#[cfg(target_os = "linux")]
pub fn raise_open_files_limit() -> io::Result<OpenFilesLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    #[allow(unsafe_code)]
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20)
    } else {
        lim.rlim_max
    };
    if target > before {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct we own.
        #[allow(unsafe_code)]
        let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(OpenFilesLimit {
        before,
        soft: target.max(before),
        hard: lim.rlim_max,
    })
}

/// Raises the soft `RLIMIT_NOFILE` of the process to its hard limit (an
/// unlimited hard limit: to `fs.nr_open`, 1,048,576 when unreadable).
/// Never lowers it. Elsewhere than Linux: not supported.
#[cfg(not(target_os = "linux"))]
pub fn raise_open_files_limit() -> io::Result<OpenFilesLimit> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Raises both `RLIMIT_NOFILE` limits to at least `want` when the process
/// may raise its hard limit (root: `CAP_SYS_RESOURCE`), else the soft one
/// to the hard one as [`raise_open_files_limit`] does. For a benchmark or
/// test client that must hold more sockets than the default hard limit.
/// Returns the soft limit now.
#[cfg(target_os = "linux")]
pub fn raise_open_files_limit_to(want: u64) -> io::Result<u64> {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let want = want.min(nr_open);
    let now = raise_open_files_limit()?;
    if now.soft >= want {
        return Ok(now.soft);
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: want.max(now.hard),
    };
    // SAFETY: setrlimit reads one rlimit struct we own.
    #[allow(unsafe_code)]
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
    Ok(if r == 0 { want } else { now.soft })
}

/// Elsewhere than Linux: not supported.
#[cfg(not(target_os = "linux"))]
pub fn raise_open_files_limit_to(_want: u64) -> io::Result<u64> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
