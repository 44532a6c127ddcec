//! Socket options of TCP and TLS connections: the kernel's TCP keep-alive
//! (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`), set on
//! every connection, opened or accepted, when configured — PJSIP's
//! `sockopt` parameters. Off by default: the RFC 5626 CRLF keep-alive with
//! its pong watchdog already finds a dead registration flow; this one also
//! covers connections without it (calls to peers, a server's accepted
//! connections) and keeps NAT mappings of idle connections open.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::net::TcpStream;

/// The kernel's TCP keep-alive on a connection: after `idle` without
/// traffic a probe goes out, then one every `interval`; after `count`
/// unanswered probes the connection is reset (and reported closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepalive {
    idle: Duration,
    interval: Duration,
    count: u32,
}

/// Largest idle time and interval in seconds Linux takes
/// (`MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL`).
pub const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Largest probe count Linux takes (`MAX_TCP_KEEPCNT`).
pub const MAX_KEEPALIVE_COUNT: u32 = 127;

/// Which value of a [`TcpKeepalive`] is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpKeepaliveField {
    /// The idle time.
    Idle,
    /// The interval between probes.
    Interval,
    /// The probe count.
    Count,
}

impl fmt::Display for TcpKeepaliveField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpKeepaliveField::Idle => "the idle time (seconds)",
            TcpKeepaliveField::Interval => "the interval (seconds)",
            TcpKeepaliveField::Count => "the probe count",
        })
    }
}

/// Why TCP keep-alive settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TcpKeepaliveError {
    /// Not three whole numbers separated by commas.
    #[error("expected IDLE,INTERVAL,COUNT: three whole numbers, e.g. 60,10,5")]
    Syntax,
    /// A value of 0 or beyond what the kernel takes.
    #[error("{field} must be between 1 and {max}, not {value}")]
    OutOfRange {
        /// Which value.
        field: TcpKeepaliveField,
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
}

impl TcpKeepalive {
    /// Settings of whole seconds and a probe count, each at least 1 and at
    /// most what Linux takes ([`MAX_KEEPALIVE_SECS`],
    /// [`MAX_KEEPALIVE_COUNT`]).
    pub fn new(idle_secs: u64, interval_secs: u64, count: u32) -> Result<Self, TcpKeepaliveError> {
        let check = |field, value: u64, max: u64| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(TcpKeepaliveError::OutOfRange { field, value, max })
            }
        };
        check(TcpKeepaliveField::Idle, idle_secs, MAX_KEEPALIVE_SECS)?;
        check(
            TcpKeepaliveField::Interval,
            interval_secs,
            MAX_KEEPALIVE_SECS,
        )?;
        check(
            TcpKeepaliveField::Count,
            u64::from(count),
            u64::from(MAX_KEEPALIVE_COUNT),
        )?;
        Ok(TcpKeepalive {
            idle: Duration::from_secs(idle_secs),
            interval: Duration::from_secs(interval_secs),
            count,
        })
    }

    /// Time without traffic before the first probe.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Time between probes.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Unanswered probes before the connection is dropped.
    pub fn count(&self) -> u32 {
        self.count
    }
}

impl FromStr for TcpKeepalive {
    type Err = TcpKeepaliveError;

    /// `IDLE,INTERVAL,COUNT` (seconds, seconds, probes), as the agent's
    /// `--tcp-keepalive` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',').map(|p| p.trim().parse::<u64>());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(idle)), Some(Ok(interval)), Some(Ok(count)), None) => {
                let count = u32::try_from(count).map_err(|_| TcpKeepaliveError::OutOfRange {
                    field: TcpKeepaliveField::Count,
                    value: count,
                    max: u64::from(MAX_KEEPALIVE_COUNT),
                })?;
                TcpKeepalive::new(idle, interval, count)
            }
            _ => Err(TcpKeepaliveError::Syntax),
        }
    }
}

impl fmt::Display for TcpKeepalive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{}",
            self.idle.as_secs(),
            self.interval.as_secs(),
            self.count
        )
    }
}

/// Sets the keep-alive on a connection's socket (logged, not fatal, when
/// the kernel refuses: the connection works without it).
pub(super) fn apply(tcp: &TcpStream, keepalive: Option<&TcpKeepalive>) {
    let Some(k) = keepalive else { return };
    let params = socket2::TcpKeepalive::new().with_time(k.idle);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let params = params.with_interval(k.interval).with_retries(k.count);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&params) {
        tracing::debug!(error = %e, "TCP keep-alive options refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_numbers_in_range_are_taken_and_anything_else_refused() {
        let k: Result<TcpKeepalive, _> = "60,10,5".parse();
        assert_eq!(k, TcpKeepalive::new(60, 10, 5));
        let k = k.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (k.idle(), k.interval(), k.count()),
            (Duration::from_secs(60), Duration::from_secs(10), 5)
        );
        assert_eq!(k.to_string(), "60,10,5");
        assert_eq!(" 1, 1 ,1".parse::<TcpKeepalive>().map(|k| k.count()), Ok(1));
        for bad in ["", "60", "60,10", "60,10,5,1", "a,b,c", "60,-1,5", "60,,5"] {
            assert_eq!(
                bad.parse::<TcpKeepalive>(),
                Err(TcpKeepaliveError::Syntax),
                "{bad:?}"
            );
        }
        let out = |field, value, max| Err(TcpKeepaliveError::OutOfRange { field, value, max });
        assert_eq!(
            "0,10,5".parse::<TcpKeepalive>(),
            out(TcpKeepaliveField::Idle, 0, 32_767)
        );
        assert_eq!(
            "60,32768,5".parse::<TcpKeepalive>(),
            out(TcpKeepaliveField::Interval, 32_768, 32_767)
        );
        assert_eq!(
            "60,10,128".parse::<TcpKeepalive>(),
            out(TcpKeepaliveField::Count, 128, 127)
        );
        assert_eq!(
            "60,10,99999999999".parse::<TcpKeepalive>(),
            out(TcpKeepaliveField::Count, 99_999_999_999, 127)
        );
        assert_eq!(
            TcpKeepalive::new(60, 10, 0),
            out(TcpKeepaliveField::Count, 0, 127)
        );
    }
}
