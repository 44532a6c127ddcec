//! Configuration of the sans-IO endpoint: protocol timers and the seed.

use std::time::Duration;

use siproam_sip::Limits;

/// Settings of an [`crate::Endpoint`].
#[derive(Debug, Clone)]
pub struct Config {
    /// RFC 3261 T1: RTT estimate (500 ms).
    pub t1: Duration,
    /// RFC 3261 T2: the longest retransmit interval for non-INVITE
    /// requests and INVITE responses (4 s).
    pub t2: Duration,
    /// RFC 3261 T4: how long a message may stay in the network (5 s).
    pub t4: Duration,
    /// Timer D on unreliable transports (at least 32 s).
    pub timer_d: Duration,
    /// Answer an INVITE with 100 Trying at once.
    pub send_100_trying: bool,
    /// The User-Agent / Server header value, if any.
    pub user_agent: Option<String>,
    /// Seed of the only random generator the core uses, for replayable
    /// runs (the simulator, tests). Ignored when [`Config::entropy`] is set.
    pub seed: u64,
    /// 32 bytes from the operating system's secure generator, which key
    /// the core's generator in production (the driver fills this in), so
    /// tags, Call-IDs and branches cannot be predicted.
    pub entropy: Option<[u8; 32]>,
    /// Limits for parsing received messages.
    pub limits: Limits,
    /// Act as a user agent for calls: new INVITEs become calls and
    /// in-dialog requests are handled here. Off for a proxy or registrar,
    /// which sees every request as [`crate::Event::IncomingRequest`].
    pub dialogs: bool,
    /// Per-source rate limits and the cap on server transactions.
    pub admission: crate::AdmissionConfig,
    /// Addresses of record we answer for besides our accounts' (an agent
    /// that does not register): a request whose Request-URI user is one
    /// of theirs is for us, as one for an account's AoR or Contact user
    /// is (`Endpoint::addressed_to_us`).
    pub local_aors: Vec<String>,
    /// Who may subscribe to what we serve (RFC 3856 §6.6, RFC 6665
    /// §4.2.1.1): `From` URIs compared by scheme, user and host (RFC 3261
    /// §19.1.4: the user case-sensitive, the host not; parameters
    /// ignored), or `*` for anyone. Empty (the default): nobody, every new
    /// SUBSCRIBE gets 403.
    pub watchers: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            send_100_trying: true,
            user_agent: Some(concat!("siproam/", env!("CARGO_PKG_VERSION")).to_owned()),
            seed: 0x5EED,
            entropy: None,
            limits: Limits::default(),
            dialogs: true,
            admission: crate::AdmissionConfig::default(),
            local_aors: Vec::new(),
            watchers: Vec::new(),
        }
    }
}

impl Config {
    /// 64·T1: Timers B, F, H, J (unreliable), L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}
