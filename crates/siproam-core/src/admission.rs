//! Admission control: bounded work and memory per source.
//!
//! Everything a server listens on is reachable by anyone, so the core
//! sheds excess requests before parsing them: each source IP address has a
//! token bucket of new requests per second, and the table of buckets is
//! itself bounded (sources beyond it share one bucket). A request over its
//! source's budget is dropped unparsed (a flood costs one hash lookup per
//! datagram); a request that would take the endpoint past its cap of
//! server transactions gets a stateless 503 with `Retry-After`.
//! Responses are never limited here: they only ever match our own
//! transactions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The endpoint's admission control, shareable with the driver so that a
/// datagram over its source's budget is dropped where it is read, before
/// it is copied or queued (the decision is still this module's: the
/// driver only asks). Cloning shares the same budgets.
#[derive(Debug, Clone)]
pub struct SharedAdmission {
    inner: Arc<Mutex<Admission>>,
    config: AdmissionConfig,
}

impl SharedAdmission {
    pub(crate) fn new(config: AdmissionConfig) -> SharedAdmission {
        SharedAdmission {
            inner: Arc::new(Mutex::new(Admission::new(config))),
            config,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Admission> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Marks a source as one that proved who it is (a registrar after a
    /// good digest answer): while the endpoint holds its cap of server
    /// transactions (a flood from many addresses), its requests are still
    /// taken, up to twice the cap. Bounded like the buckets.
    pub fn trust(&self, now: Instant, source: IpAddr, lifetime: Duration) {
        self.lock().trust(now, source, lifetime);
    }

    /// Exempts `source` (exactly this address) from the per-source rate
    /// for good: the one next hop a proxy forwards everyone's requests to
    /// (an edge's registrar) is one source for all the clients behind it.
    /// Set by the application from its configuration, never from the
    /// network; at most [`MAX_EXEMPT`] addresses (false beyond).
    pub fn exempt(&self, source: IpAddr) -> bool {
        let mut a = self.lock();
        if a.exempt.len() >= MAX_EXEMPT && !a.exempt.contains(&source) {
            return false;
        }
        a.exempt.insert(source);
        true
    }

    /// Whether `source` is trusted at `now`.
    pub fn is_trusted(&self, now: Instant, source: IpAddr) -> bool {
        self.lock()
            .trusted
            .get(&source)
            .is_some_and(|until| *until > now)
    }

    /// May this received message be looked at? Responses (`SIP/…`, and
    /// STUN answers: each costs one look-up, like a SIP response) always;
    /// a request if its source is within its budget (counted).
    pub fn admit(&self, now: Instant, source: IpAddr, data: &[u8]) -> bool {
        data.starts_with(b"SIP/")
            || crate::stun::is_stun_response(data)
            || self.config.per_source_rate == 0
            || self.lock().admit(now, source)
    }
}

/// Most addresses [`SharedAdmission::exempt`] keeps.
pub const MAX_EXEMPT: usize = 64;

/// Limits on what one source, and everyone together, may make the
/// endpoint do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// New requests per second one source IP address may send (refill
    /// rate of its bucket); `0` turns per-source limiting off (for a
    /// registrar behind one trusted edge proxy, or a benchmark).
    pub per_source_rate: u32,
    /// Requests a source may send in one burst (bucket size).
    pub per_source_burst: u32,
    /// Sources tracked one by one; beyond this they share one bucket.
    pub max_sources: usize,
    /// Server transactions held at once; beyond it new requests are
    /// answered 503 with `Retry-After` and keep no state.
    pub max_server_transactions: usize,
    /// The `Retry-After` of that 503, in seconds.
    pub retry_after: u32,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            // well above what one user agent ever sends (a few requests a
            // second), well below what one host can flood with
            per_source_rate: 200,
            per_source_burst: 400,
            max_sources: 65_536,
            max_server_transactions: 50_000,
            retry_after: 5,
        }
    }
}

/// What admission control has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Requests dropped unparsed for exceeding their source's rate.
    pub shed: u64,
    /// Requests answered 503 because too many transactions were held.
    pub overloaded: u64,
    /// Sources tracked one by one now.
    pub sources: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn full_at(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + dt * rate >= burst
    }
}

/// The per-source buckets.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    config: AdmissionConfig,
    buckets: HashMap<IpAddr, Bucket>,
    /// Shared by the sources beyond `max_sources`.
    overflow: Option<Bucket>,
    /// When full buckets were last swept out.
    swept: Option<Instant>,
    /// Sources that proved who they are, until when.
    trusted: HashMap<IpAddr, Instant>,
    /// Sources never rate-limited ([`SharedAdmission::exempt`]).
    exempt: std::collections::HashSet<IpAddr>,
    pub(crate) stats: AdmissionStats,
}

impl Admission {
    pub(crate) fn new(config: AdmissionConfig) -> Admission {
        Admission {
            config,
            ..Admission::default()
        }
    }

    /// May a new request from `source` be looked at? Counts it.
    pub(crate) fn admit(&mut self, now: Instant, source: IpAddr) -> bool {
        if self.config.per_source_rate == 0 || self.exempt.contains(&source) {
            return true;
        }
        let source = budget_key(source);
        let rate = f64::from(self.config.per_source_rate);
        let burst = f64::from(self.config.per_source_burst.max(1));
        let fresh = Bucket {
            tokens: burst,
            at: now,
        };
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.config.max_sources {
            self.sweep(now, rate, burst);
        }
        let ok = if let Some(b) = self.buckets.get_mut(&source) {
            b.take(now, rate, burst)
        } else if self.buckets.len() < self.config.max_sources {
            self.buckets
                .entry(source)
                .or_insert(fresh)
                .take(now, rate, burst)
        } else {
            self.overflow.get_or_insert(fresh).take(now, rate, burst)
        };
        if !ok {
            self.stats.shed += 1;
        }
        ok
    }

    fn trust(&mut self, now: Instant, source: IpAddr, lifetime: Duration) {
        if !self.trusted.contains_key(&source) && self.trusted.len() >= self.config.max_sources {
            self.trusted.retain(|_, until| *until > now);
            if self.trusted.len() >= self.config.max_sources {
                return;
            }
        }
        self.trusted.insert(source, now + lifetime);
    }

    /// Forgets the sources whose bucket has refilled (they are back to
    /// where a new source starts); at most once a second, so a table kept
    /// full by live sources costs one scan a second, not one per packet.
    fn sweep(&mut self, now: Instant, rate: f64, burst: f64) {
        if self
            .swept
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.swept = Some(now);
        self.buckets.retain(|_, b| !b.full_at(now, rate, burst));
        shrink(&mut self.buckets);
    }

    /// Drops the buckets that have refilled (called now and then: memory
    /// goes back after a flood from many sources).
    pub(crate) fn tidy(&mut self, now: Instant) {
        let rate = f64::from(self.config.per_source_rate);
        let burst = f64::from(self.config.per_source_burst.max(1));
        self.buckets.retain(|_, b| !b.full_at(now, rate, burst));
        shrink(&mut self.buckets);
        self.trusted.retain(|_, until| *until > now);
        shrink(&mut self.trusted);
    }

    pub(crate) fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            sources: self.buckets.len(),
            ..self.stats
        }
    }
}

/// Whose budget a source draws on: an IPv4 address, or an IPv6 /64 (one
/// host or subnet routinely holds a whole /64, so counting its addresses
/// one by one would give it billions of budgets).
fn budget_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Gives a map's memory back once it holds far fewer entries than it has
/// room for (after a flood); amortised, since it only shrinks to twice
/// what is left.
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.len() < map.capacity() / 8 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // any base instant will do in a test
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            per_source_rate: 10,
            per_source_burst: 20,
            ..AdmissionConfig::default()
        });
        let bad: IpAddr = [127, 0, 0, 9].into();
        let good: IpAddr = [127, 0, 0, 10].into();
        let passed = (0..1000).filter(|_| a.admit(t0, bad)).count();
        assert_eq!(passed, 20);
        assert!(a.admit(t0, good), "another source is not affected");
        // one second later: ten more
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..1000).filter(|_| a.admit(t1, bad)).count(), 10);
        assert_eq!(a.stats().shed, 980 + 990);
    }

    /// An IPv6 /64 shares one budget (a host that owns the prefix could
    /// otherwise send from a new address each time); another /64 and an
    /// IPv4-mapped address are apart.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn an_ipv6_prefix_shares_one_budget() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            per_source_rate: 10,
            per_source_burst: 20,
            ..AdmissionConfig::default()
        });
        let passed = (0..1000u128)
            .filter(|i| {
                let ip: std::net::Ipv6Addr = (0x2001_0db8_0000_0001_0000_0000_0000_0000 + i).into();
                a.admit(t0, ip.into())
            })
            .count();
        assert_eq!(passed, 20);
        let other: std::net::Ipv6Addr = 0x2001_0db8_0000_0002_0000_0000_0000_0001u128.into();
        assert!(a.admit(t0, other.into()));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::from([0u8; 4]));
        let v4: IpAddr = [192, 0, 2, 7].into();
        assert_eq!(budget_key(mapped), v4);
        assert_eq!(a.stats().sources, 2);
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn the_table_of_sources_is_bounded_and_given_back() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig {
            per_source_rate: 10,
            per_source_burst: 2,
            max_sources: 100,
            ..AdmissionConfig::default()
        });
        for i in 0..10_000u32 {
            let ip: IpAddr = std::net::Ipv4Addr::from(0x0a00_0000 + i).into();
            a.admit(t0, ip);
        }
        assert!(a.stats().sources <= 100);
        // the sources beyond the table share one bucket of two
        assert_eq!(a.stats().shed, 10_000 - 100 - 2);
        a.tidy(t0 + Duration::from_secs(5));
        assert_eq!(a.stats().sources, 0);
    }
}
