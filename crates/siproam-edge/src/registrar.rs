//! The registrar (RFC 3261 §10.3) and its in-memory location service.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use siproam_core::{CoreError, Endpoint, FlowId, ListenPoint, ServerTxId};
use siproam_sip::digest::Qop;
use siproam_sip::digest::{self, Credentials, Secret, ServerChallenge};
use siproam_sip::{Contact, HeaderName, Message, MessageBuilder, Method, NameAddr, Uri};

use crate::mac::Mac;
use crate::store::{LocationStore, MemoryStore};

/// Registrar (and proxy) settings.
#[derive(Clone)]
pub struct RegistrarConfig {
    /// The domain served (`example.test`); `None` accepts any.
    pub domain: Option<String>,
    /// The digest realm (defaults to the domain, else `siproam`).
    pub realm: Option<String>,
    /// `user → password`; empty means no authentication.
    pub users: HashMap<String, String>,
    /// Shortest binding accepted (423 below it).
    pub min_expires: u32,
    /// Longest binding granted (longer requests are shortened).
    pub max_expires: u32,
    /// Lifetime when the request names none.
    pub default_expires: u32,
    /// How long a nonce stays valid.
    pub nonce_lifetime: Duration,
    /// Answer `Require: outbound` to REGISTERs with `reg-id` and
    /// `+sip.instance` that support it (RFC 5626).
    pub outbound: bool,
    /// Flow-Timer to send with outbound registrations.
    pub flow_timer: Option<u32>,
    /// The HMAC-SHA256 key that signs digest nonces and the proxy's
    /// Record-Route tokens. All zero by default: a server must set it from
    /// a secure generator (the `siproam` binary draws it from the OS).
    pub key: [u8; 32],
    /// Most live bindings one AoR may hold, and most Contacts one REGISTER
    /// may carry (16). Beyond it the REGISTER is refused and nothing stored.
    pub max_bindings_per_aor: usize,
    /// Most nonces whose `nc` is tracked at once (nonces used in a valid
    /// Authorization); the oldest is forgotten first and then answered
    /// `stale=true`.
    pub max_tracked_nonces: usize,
    /// Policy: let authenticated users (digest, `Proxy-Authorization`,
    /// challenged with 407) send requests the proxy is not responsible
    /// for: to IP addresses that are not our bindings, or along a Route
    /// naming another host. Off by default (403 for such requests); needs
    /// `users`.
    pub relay_authenticated: bool,
    /// `Service-Route` URIs (RFC 3608) for every REGISTER 2xx, in order:
    /// the route the registered UA pre-loads on its requests.
    pub service_routes: Vec<String>,
}

impl fmt::Debug for RegistrarConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // credentials stay out of logs: user names only, no key
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("RegistrarConfig")
            .field("domain", &self.domain)
            .field("realm", &self.realm)
            .field("users", &users)
            .field("min_expires", &self.min_expires)
            .field("max_expires", &self.max_expires)
            .field("default_expires", &self.default_expires)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("outbound", &self.outbound)
            .field("flow_timer", &self.flow_timer)
            .field("key", &"<redacted>")
            .field("max_bindings_per_aor", &self.max_bindings_per_aor)
            .field("max_tracked_nonces", &self.max_tracked_nonces)
            .field("relay_authenticated", &self.relay_authenticated)
            .field("service_routes", &self.service_routes.len())
            .finish()
    }
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            domain: None,
            realm: None,
            users: HashMap::new(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            nonce_lifetime: Duration::from_secs(300),
            outbound: true,
            flow_timer: None,
            key: [0; 32],
            max_bindings_per_aor: 16,
            max_tracked_nonces: 10_000,
            relay_authenticated: false,
            service_routes: Vec::new(),
        }
    }
}

/// Why a users file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// A line is not `user:password`.
    #[error("line {line}: expected user:password")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
}

impl RegistrarConfig {
    /// Parses a users file: one `user:password` per line; blank lines and
    /// `#` comments are skipped.
    pub fn parse_users(text: &str) -> Result<HashMap<String, String>, UsersError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((u, p)) if !u.trim().is_empty() => {
                    users.insert(u.trim().to_owned(), p.to_owned());
                }
                _ => return Err(UsersError::Malformed { line: i + 1 }),
            }
        }
        Ok(users)
    }

    fn realm(&self) -> &str {
        self.realm
            .as_deref()
            .or(self.domain.as_deref())
            .unwrap_or("siproam")
    }
}

/// One contact bound to an address of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI.
    pub contact: String,
    /// When it lapses.
    pub expires_at: Instant,
    /// `+sip.instance`, if given.
    pub instance: Option<String>,
    /// `reg-id`, if given.
    pub reg_id: Option<u32>,
    /// The REGISTER's Call-ID.
    pub call_id: String,
    /// The REGISTER's CSeq number.
    pub cseq: u32,
    /// The flow the REGISTER came on (requests for this binding go back
    /// over it, RFC 5626 §5.3); `None` for a binding another process of a
    /// shared store registered (reached along its Path or at its Contact).
    pub flow: Option<FlowId>,
    /// `q` in thousandths.
    pub q: Option<u16>,
    /// Path header values, top first (RFC 3327).
    pub path: Vec<String>,
}

/// What the registrar did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// It answered the request (a 2xx: the bindings changed).
    Responded(u16),
    /// It answered 200 to a REGISTER that changed nothing but lifetimes:
    /// a refresh or a fetch (not news for the application).
    Refreshed,
    /// Not a REGISTER: the caller handles it.
    NotMine,
    /// A REGISTER that changed bindings, answered once the shared store
    /// acknowledged the write ([`Registrar::store_done`]).
    Pending,
}

/// Whether two binding lists name the same bindings in the same order
/// (contact, instance, reg-id, q, Path, flow): what differs between them
/// is only lifetimes and CSeqs, a refresh.
fn same_set(a: &[Binding], b: &[Binding]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.contact == y.contact
                && x.instance == y.instance
                && x.reg_id == y.reg_id
                && x.q == y.q
                && x.path == y.path
                && x.flow == y.flow
        })
}

/// A write of one AoR's bindings for a store shared with other processes
/// (the driver performs it and reports with [`Registrar::store_done`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOp {
    /// Its id.
    pub id: u64,
    /// The AoR's location key.
    pub aor: String,
    /// Its bindings now, in registration order; empty: remove the AoR.
    pub bindings: Vec<Binding>,
    /// Its bindings before the change, as this process saw them: with
    /// [`crate::merge_shared`] the write changes only what this process
    /// changed, and keeps what another one wrote meanwhile.
    pub previous: Vec<Binding>,
}

impl StoreOp {
    /// How long the shared copy should live: until its last binding lapses
    /// (`None`: remove it now).
    pub fn lifetime(&self, now: Instant) -> Option<Duration> {
        self.bindings
            .iter()
            .map(|b| b.expires_at.saturating_duration_since(now))
            .max()
            .filter(|d| !d.is_zero())
    }
}

/// A REGISTER waiting for the shared store.
#[derive(Debug)]
struct AwaitingWrite {
    tx: ServerTxId,
    response: Message,
    aor: String,
    previous: Vec<Binding>,
    written: Vec<Binding>,
    since: Instant,
}

/// Most REGISTERs waiting for the shared store at once; beyond, 503.
const MAX_AWAITING_WRITES: usize = 4096;
/// Most writes queued for the driver.
const MAX_OUTBOX: usize = 8192;
/// A write not acknowledged within this is failed (503).
pub const AWAIT_LIMIT: Duration = Duration::from_secs(10);

/// The registrar and location service.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    mac: Mac,
    /// The time base of nonces: the first `now` seen.
    epoch: Option<Instant>,
    /// The bindings, and which Contact addresses they name.
    store: Box<dyn LocationStore>,
    nonces: NonceTable,
    /// Bindings shared with other processes: changes go out as
    /// [`StoreOp`]s and a REGISTER waits for its write.
    shared: bool,
    outbox: VecDeque<StoreOp>,
    awaiting: HashMap<u64, AwaitingWrite>,
    next_op: u64,
    /// For each flow, the AoRs given an outbound binding on it straight
    /// from the UA (the ones [`Registrar::flow_failed`] forgets), so a
    /// closed flow is looked up rather than searched for. An entry may
    /// name an AoR whose binding has since moved or lapsed (checked when
    /// used; trimmed by [`Registrar::purge`]).
    by_flow: HashMap<FlowId, Vec<Box<str>>>,
}

impl Default for Registrar {
    fn default() -> Self {
        Registrar::new(RegistrarConfig::default())
    }
}

/// The `nc` last seen for each nonce used in a valid Authorization,
/// bounded: the nonce issued first goes first, and every nonce issued no
/// later than one forgotten is from then on answered `stale=true` (it may
/// have been used already).
#[derive(Debug, Default)]
struct NonceTable {
    last_nc: HashMap<String, (u64, u32)>,
    by_issue: BTreeSet<(u64, String)>,
    forgotten_up_to: Option<u64>,
}

enum NcCheck {
    Fresh,
    Replayed,
    Forgotten,
}

impl NonceTable {
    fn check_and_count(&mut self, nonce: &str, issued: u64, nc: u32, cap: usize) -> NcCheck {
        if let Some((_, last)) = self.last_nc.get_mut(nonce) {
            if nc <= *last {
                return NcCheck::Replayed;
            }
            *last = nc;
            return NcCheck::Fresh;
        }
        if self.forgotten_up_to.is_some_and(|f| issued <= f) {
            return NcCheck::Forgotten;
        }
        while self.last_nc.len() >= cap.max(1) {
            let Some(oldest) = self.by_issue.pop_first() else {
                break;
            };
            self.last_nc.remove(&oldest.1);
            self.forgotten_up_to = Some(self.forgotten_up_to.unwrap_or(0).max(oldest.0));
        }
        if self.forgotten_up_to.is_some_and(|f| issued <= f) {
            return NcCheck::Forgotten;
        }
        self.last_nc.insert(nonce.to_owned(), (issued, nc));
        self.by_issue.insert((issued, nonce.to_owned()));
        NcCheck::Fresh
    }

    /// Forgets nonces issued at or before `issued` (lapsed: refused on
    /// their timestamp anyway).
    fn expire(&mut self, issued: u64) {
        while self.by_issue.first().is_some_and(|(t, _)| *t <= issued) {
            if let Some((_, n)) = self.by_issue.pop_first() {
                self.last_nc.remove(&n);
            }
        }
        shrink(&mut self.last_nc);
    }
}

/// Gives memory back once a map is much smaller than its allocation
/// (after a flood).
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

/// The flow an outbound binding registered straight from the UA is only
/// reachable over (RFC 5626 §7); `None` for any other binding.
fn flow_bound(b: &Binding) -> Option<FlowId> {
    b.flow.filter(|_| b.reg_id.is_some() && b.path.is_empty())
}

/// A nonce: 16 hex digits of milliseconds since the registrar's epoch,
/// 16 random characters, then the HMAC of both (32 hex digits). It needs
/// no stored state to be checked.
const NONCE_LEN: usize = 64;
const NONCE_LABEL: &[u8] = b"siproam-nonce";
const ROUTE_LABEL: &[u8] = b"siproam-record-route";

/// The address part of a contact (`user@host:port`, host lower-cased,
/// the default port filled in), to match a Request-URI against Contacts.
pub(crate) fn contact_key(uri: &Uri<'_>) -> Option<String> {
    let sip = uri.as_sip()?;
    let tls = sip.is_secure()
        || sip
            .transport()
            .is_some_and(|t| t.eq_ignore_ascii_case("tls"));
    let port = sip.port().unwrap_or(if tls { 5061 } else { 5060 });
    Some(format!(
        "{}@{}:{port}",
        sip.user().unwrap_or_default(),
        sip.host_str().to_ascii_lowercase()
    ))
}

/// The location key of an AoR: `user@host`, host lower-cased.
pub fn aor_key(uri: &Uri<'_>) -> Option<String> {
    let sip = uri.as_sip()?;
    let user = sip.user().unwrap_or_default();
    Some(format!("{user}@{}", sip.host_str().to_ascii_lowercase()))
}

impl Registrar {
    /// A registrar keeping its bindings in memory ([`MemoryStore`]).
    pub fn new(config: RegistrarConfig) -> Registrar {
        Registrar::with_store(config, Box::new(MemoryStore::new()))
    }

    /// A registrar keeping its bindings in `store`.
    pub fn with_store(config: RegistrarConfig, store: Box<dyn LocationStore>) -> Registrar {
        Registrar {
            mac: Mac::new(&config.key),
            config,
            epoch: None,
            store,
            nonces: NonceTable::default(),
            shared: false,
            outbox: VecDeque::new(),
            awaiting: HashMap::new(),
            next_op: 0,
            by_flow: HashMap::new(),
        }
    }

    /// Replaces the HMAC key (nonces and Record-Route tokens issued with
    /// the old one are refused from now on: a nonce as stale).
    pub fn set_key(&mut self, key: [u8; 32]) {
        self.mac = Mac::new(&key);
        self.config.key = key;
    }

    /// Sizes of the registrar's maps (AoRs, indexed contacts, tracked
    /// nonces) and their allocated capacities, for tests and metrics.
    pub fn sizes(&self) -> [(usize, usize); 3] {
        let [aors, contacts] = self.store.sizes();
        [
            aors,
            contacts,
            (self.nonces.last_nc.len(), self.nonces.last_nc.capacity()),
        ]
    }

    /// True when the URI is the Contact of a binding (the proxy forwards
    /// requests addressed to one).
    pub fn is_bound_contact(&self, uri: &Uri<'_>) -> bool {
        contact_key(uri).is_some_and(|k| self.store.is_bound_contact(&k))
    }

    /// True for a host of the domain served (any, when none is set).
    pub fn serves_domain(&self, host: &str) -> bool {
        self.config
            .domain
            .as_deref()
            .is_none_or(|d| d.eq_ignore_ascii_case(host))
    }

    /// The token the proxy puts in its Record-Route for a dialog: an HMAC
    /// of the Call-ID, so only a request of a dialog the proxy routed can
    /// name it (and the dialog's target may change, as in a hand-off).
    pub(crate) fn route_token(&self, call_id: &str) -> String {
        self.mac.tag(ROUTE_LABEL, call_id.as_bytes())
    }

    /// True when `token` is [`Registrar::route_token`] of `call_id`.
    pub(crate) fn route_token_valid(&self, call_id: &str, token: &str) -> bool {
        self.mac.verify(ROUTE_LABEL, call_id.as_bytes(), token)
    }

    /// Replaces an AoR's bindings.
    fn set_bindings(&mut self, key: &str, list: Vec<Binding>) {
        for flow in list.iter().filter_map(flow_bound) {
            let aors = self.by_flow.entry(flow).or_default();
            if !aors.iter().any(|a| &**a == key) {
                aors.push(key.into());
            }
        }
        self.store.replace(key, list);
    }

    /// How many nonces have their `nc` tracked (only nonces used in a
    /// valid Authorization; a challenge stores nothing).
    pub fn tracked_nonces(&self) -> usize {
        self.nonces.last_nc.len()
    }

    /// Milliseconds since the registrar's time base (the first `now` it
    /// was given).
    fn millis(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// A fresh nonce (no state kept).
    fn nonce(&mut self, ep: &mut Endpoint, now: Instant) -> String {
        let body = format!("{:016x}{}", self.millis(now), ep.random_token(16));
        let tag = self.mac.tag(NONCE_LABEL, body.as_bytes());
        body + &tag
    }

    /// When a nonce of ours was issued (ms since the epoch); `None` for a
    /// nonce we did not sign (forged, altered, or another key's).
    fn nonce_issued(&self, nonce: &str) -> Option<u64> {
        if nonce.len() != NONCE_LEN || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let body = nonce.get(..32)?;
        let tag = nonce.get(32..)?;
        if !self.mac.verify(NONCE_LABEL, body.as_bytes(), tag) {
            return None;
        }
        u64::from_str_radix(body.get(..16)?, 16).ok()
    }

    /// The configuration.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// The live bindings of an AoR (`user@domain` or a SIP URI), best `q`
    /// first, and among equals the most recently registered first (RFC
    /// 5626 §5.3: an instance's newest flow is tried first).
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding> {
        let key = match Uri::parse(aor).ok().and_then(|u| aor_key(&u)) {
            Some(k) => k,
            None => aor.to_ascii_lowercase(),
        };
        // a list is kept in registration order (a refresh moves a binding
        // to its end)
        let mut live: Vec<Binding> = self
            .store
            .bindings(&key)
            .iter()
            .rev()
            .filter(|b| b.expires_at > now)
            .cloned()
            .collect();
        live.sort_by_key(|b| std::cmp::Reverse(b.q.unwrap_or(1000)));
        live
    }

    /// Forgets the binding of an instance's flow `reg_id` (an edge proxy
    /// answered 430: the flow it named is gone, RFC 5626 §5.3). True when
    /// there was one.
    pub fn forget_flow(&mut self, aor: &str, instance: &str, reg_id: u32) -> bool {
        let list = self.store.bindings(aor);
        let kept: Vec<Binding> = list
            .iter()
            .filter(|b| !(b.instance.as_deref() == Some(instance) && b.reg_id == Some(reg_id)))
            .cloned()
            .collect();
        if kept.len() == list.len() {
            return false;
        }
        if self.shared {
            let previous = list.to_vec();
            self.emit(aor, previous, kept.clone());
        }
        self.set_bindings(aor, kept);
        true
    }

    /// Every AoR with at least one live binding.
    pub fn aors(&self, now: Instant) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        self.store.for_each(&mut |aor, list| {
            if list.iter().any(|b| b.expires_at > now) {
                v.push(aor.to_owned());
            }
        });
        v.sort();
        v
    }

    /// Drops lapsed bindings and nonces (call now and then).
    pub fn purge(&mut self, now: Instant) {
        self.store.retain(&mut |b| b.expires_at > now);
        let store = &self.store;
        self.by_flow.retain(|flow, aors| {
            aors.retain(|aor| {
                store
                    .bindings(aor)
                    .iter()
                    .any(|b| flow_bound(b) == Some(*flow))
            });
            !aors.is_empty()
        });
        shrink(&mut self.by_flow);
        let lifetime = u64::try_from(self.config.nonce_lifetime.as_millis()).unwrap_or(u64::MAX);
        if let Some(lapsed) = self.millis(now).checked_sub(lifetime) {
            self.nonces.expire(lapsed);
        }
    }

    /// Forgets the outbound bindings (those with `reg-id`) that arrived on
    /// a flow that failed straight from the UA (RFC 5626 §7: such a
    /// binding is only reachable over its flow). Other bindings stay:
    /// their Contact can be reached anew, and a binding registered through
    /// an edge proxy (with a Path) is reached along its Path — the flow
    /// that closed was the edge's, the UA's flow is the edge's to keep.
    /// Returns how many went.
    pub fn flow_failed(&mut self, flow: FlowId) -> usize {
        let Some(aors) = self.by_flow.remove(&flow) else {
            return 0;
        };
        let mut n = 0;
        for aor in aors {
            let list = self.store.bindings(&aor);
            let kept: Vec<Binding> = list
                .iter()
                .filter(|b| flow_bound(b) != Some(flow))
                .cloned()
                .collect();
            if kept.len() == list.len() {
                // it moved to another flow, or lapsed
                continue;
            }
            n += list.len() - kept.len();
            if self.shared {
                // what the shared store's write changes from
                let previous = list.to_vec();
                self.emit(&aor, previous, kept.clone());
            }
            self.store.replace(&aor, kept);
        }
        n
    }

    /// Handles a request the endpoint reported; answers REGISTERs.
    pub fn handle_request(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: ServerTxId,
        flow: FlowId,
        req: &Message,
    ) -> Result<Handled, CoreError> {
        if req.method() != Some(Method::Register) {
            return Ok(Handled::NotMine);
        }
        self.register(ep, now, tx, flow, req)
    }

    fn reply(
        &self,
        ep: &mut Endpoint,
        now: Instant,
        tx: ServerTxId,
        req: &Message,
        (code, reason): (u16, &str),
        extra: &[(&str, String)],
    ) -> Result<Handled, CoreError> {
        let tag = ep.random_token(10);
        let mut b = MessageBuilder::response_to(req, code, reason, Some(&tag));
        for (n, v) in extra {
            b = b.header(n, v);
        }
        // no transaction is kept for any answer to a REGISTER: a challenge
        // (its nonce validates itself) or a refusal costs nothing to give
        // again, and a retransmitted REGISTER after its 2xx is the same
        // change again (an equal CSeq is accepted, below), so neither a
        // flood nor a high rate of registrations holds Timer J's 32 s of
        // state per request
        ep.respond_stateless(now, tx, b.build()?)?;
        Ok(Handled::Responded(code))
    }

    fn register(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: ServerTxId,
        flow: FlowId,
        req: &Message,
    ) -> Result<Handled, CoreError> {
        // the AoR is the To URI
        let Ok(to) = req.to() else {
            return self.reply(ep, now, tx, req, (400, "Bad Request"), &[]);
        };
        let Some(key) = aor_key(to.uri()) else {
            return self.reply(ep, now, tx, req, (400, "Bad Request"), &[]);
        };
        if let Some(domain) = &self.config.domain {
            let host = key.rsplit('@').next().unwrap_or_default();
            if !host.eq_ignore_ascii_case(domain) {
                return self.reply(ep, now, tx, req, (404, "Not Found"), &[]);
            }
        }
        // authentication
        if !self.config.users.is_empty() {
            let own = ep.listen_points().to_vec();
            match self.authenticate(now, req, &key, &own) {
                Auth::Ok => {
                    // it proved who it is: served even while a flood from
                    // many addresses fills the transaction table
                    if let Some(source) = ep.flow(flow).map(|f| f.remote.ip()) {
                        ep.trust_source(now, source);
                    }
                }
                Auth::Challenge { stale } => {
                    let value = self.challenge(ep, now, stale)?;
                    return self.reply(
                        ep,
                        now,
                        tx,
                        req,
                        (401, "Unauthorized"),
                        &[("WWW-Authenticate", value)],
                    );
                }
                Auth::Forbidden => return self.reply(ep, now, tx, req, (403, "Forbidden"), &[]),
            }
        }
        let header_expires = req.expires().and_then(Result::ok);
        let call_id = req.call_id().to_owned();
        let cseq = req.cseq().seq;
        // at most max_bindings_per_aor Contacts are even parsed: more could
        // never be stored
        let cap = self.config.max_bindings_per_aor;
        let mut contacts: Vec<Contact<'_>> = Vec::new();
        for c in req.contacts() {
            let Ok(c) = c else {
                return self.reply(ep, now, tx, req, (400, "Bad Request"), &[]);
            };
            if contacts.len() >= cap {
                return self.too_many_contacts(ep, now, tx, req);
            }
            contacts.push(c);
        }
        let path: Vec<String> = req
            .header_values(HeaderName::Path)
            .map(str::to_owned)
            .collect();
        if self.config.outbound && asks_outbound(&contacts) {
            match first_hop_keeps_flows(req) {
                Some(true) => {}
                Some(false) => {
                    return self.reply(
                        ep,
                        now,
                        tx,
                        req,
                        (439, "First Hop Lacks Outbound Support"),
                        &[],
                    )
                }
                None => return self.reply(ep, now, tx, req, (400, "Bad Request"), &[]),
            }
        }
        // Contact: * with Expires: 0 removes everything
        if contacts.iter().any(|c| matches!(c, Contact::Star)) {
            if contacts.len() != 1 || header_expires != Some(0) {
                return self.reply(ep, now, tx, req, (400, "Bad Request"), &[]);
            }
            if self
                .store
                .bindings(&key)
                .iter()
                .any(|b| b.call_id == call_id && b.cseq >= cseq)
            {
                return self.reply(ep, now, tx, req, (500, "Out of Order"), &[]);
            }
            return self.commit(ep, now, tx, req, &key, Vec::new(), false);
        }
        // first pass: checks, before changing anything
        let mut updates = Vec::new();
        for c in &contacts {
            let Contact::Addr(na) = c else { continue };
            let expires = na
                .expires()
                .or(header_expires)
                .unwrap_or(self.config.default_expires);
            if expires != 0 && expires < self.config.min_expires {
                return self.reply(
                    ep,
                    now,
                    tx,
                    req,
                    (423, "Interval Too Brief"),
                    &[("Min-Expires", self.config.min_expires.to_string())],
                );
            }
            updates.push((*na, expires.min(self.config.max_expires)));
        }
        // the AoR's live bindings, changed on a copy: nothing is stored
        // unless the whole request is accepted. Work per REGISTER is
        // bounded by cap × cap URI comparisons.
        let mut list: Vec<Binding> = self
            .store
            .bindings(&key)
            .iter()
            .filter(|b| b.expires_at > now)
            .cloned()
            .collect();
        for (na, _) in &updates {
            if let Some(old) = list.iter().find(|b| same_binding(b, na)) {
                // an equal CSeq is this request again (answered without a
                // transaction, its retransmission comes here): applied
                // again, it changes nothing; a lower one is out of order
                if old.call_id == call_id && old.cseq > cseq {
                    return self.reply(ep, now, tx, req, (500, "Out of Order"), &[]);
                }
            }
        }
        let mut outbound = false;
        for (na, expires) in updates {
            list.retain(|b| !same_binding(b, &na));
            if expires == 0 {
                continue;
            }
            let instance = na.sip_instance().map(str::to_owned);
            let reg_id = na.reg_id();
            outbound |= instance.is_some() && reg_id.is_some();
            list.push(Binding {
                contact: na.uri().to_string(),
                expires_at: now + Duration::from_secs(u64::from(expires)),
                instance,
                reg_id,
                call_id: call_id.clone(),
                cseq,
                flow: Some(flow),
                q: na.q(),
                path: path.clone(),
            });
        }
        if list.len() > cap {
            return self.too_many_contacts(ep, now, tx, req);
        }
        let wants_outbound =
            outbound && self.config.outbound && req.has_token(HeaderName::Supported, "outbound");
        self.commit(ep, now, tx, req, &key, list, wants_outbound)
    }

    /// Stores an accepted REGISTER's bindings and answers 2xx. With a
    /// shared store the 2xx waits for the store's acknowledgement (a
    /// [`StoreOp`] to perform, then [`Registrar::store_done`]); when too
    /// many writes are already waiting, nothing changes and the answer is
    /// 503.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        tx: ServerTxId,
        req: &Message,
        key: &str,
        list: Vec<Binding>,
        outbound: bool,
    ) -> Result<Handled, CoreError> {
        // a fetch (no Contact) changes nothing: nothing to write
        if !self.shared || self.store.bindings(key) == list.as_slice() {
            let changed = !same_set(self.store.bindings(key), &list);
            self.set_bindings(key, list);
            let response = self.ok(ep, now, req, key, outbound)?;
            // no transaction kept (see `reply`)
            ep.respond_stateless(now, tx, response)?;
            return Ok(if changed {
                Handled::Responded(200)
            } else {
                Handled::Refreshed
            });
        }
        if self.awaiting.len() >= MAX_AWAITING_WRITES || self.outbox.len() >= MAX_OUTBOX {
            tracing::warn!("shared location store: too many writes waiting; 503");
            return self.reply(
                ep,
                now,
                tx,
                req,
                (503, "Service Unavailable"),
                &[("Retry-After", "5".to_owned())],
            );
        }
        let previous = self.store.bindings(key).to_vec();
        self.set_bindings(key, list.clone());
        let response = self.ok(ep, now, req, key, outbound)?;
        let id = self.emit(key, previous.clone(), list.clone());
        self.awaiting.insert(
            id,
            AwaitingWrite {
                tx,
                response,
                aor: key.to_owned(),
                previous,
                written: list,
                since: now,
            },
        );
        Ok(Handled::Pending)
    }

    /// Queues a write of an AoR's bindings for the shared store.
    fn emit(&mut self, aor: &str, previous: Vec<Binding>, bindings: Vec<Binding>) -> u64 {
        self.next_op = self.next_op.wrapping_add(1);
        let id = self.next_op;
        if self.outbox.len() >= MAX_OUTBOX {
            // only writes no REGISTER waits for get here (a failed flow's
            // bindings): the shared copy keeps them until they lapse
            tracing::warn!("shared location store: outbox full, a write is dropped");
            return id;
        }
        self.outbox.push_back(StoreOp {
            id,
            aor: aor.to_owned(),
            bindings,
            previous,
        });
        id
    }

    /// The next write for the shared store to perform, oldest first (none
    /// unless [`Registrar::set_shared`]). Perform them in this order and
    /// report each with [`Registrar::store_done`].
    pub fn poll_store_op(&mut self) -> Option<StoreOp> {
        self.outbox.pop_front()
    }

    /// Makes the registrar keep its bindings in a store shared with other
    /// processes: each change is a [`StoreOp`] ([`Registrar::poll_store_op`])
    /// and a REGISTER's 2xx waits for [`Registrar::store_done`].
    pub fn set_shared(&mut self, shared: bool) {
        self.shared = shared;
    }

    /// The shared store performed (`stored`) or failed the write `id`:
    /// the REGISTER waiting for it gets its 2xx, or 503 and its change is
    /// undone (unless the AoR changed again since). Returns the status
    /// sent; `None` for a write no REGISTER waited for (or one already
    /// answered).
    pub fn store_done(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        id: u64,
        stored: bool,
    ) -> Option<u16> {
        let w = self.awaiting.remove(&id)?;
        if stored {
            // no transaction kept (see `reply`): a retransmission from now
            // on is the same change again, answered at once
            return match ep.respond_stateless(now, w.tx, w.response) {
                Ok(()) => Some(200),
                Err(e) => {
                    tracing::debug!("REGISTER 2xx after the store: {e}");
                    None
                }
            };
        }
        if self.store.bindings(&w.aor) == w.written.as_slice() {
            self.set_bindings(&w.aor, w.previous);
        }
        match ep.respond_status(now, w.tx, 503, "Service Unavailable") {
            Ok(()) => Some(503),
            Err(e) => {
                tracing::debug!("REGISTER 503 after the store: {e}");
                None
            }
        }
    }

    /// Writes waiting longer than [`AWAIT_LIMIT`] are failed (a driver that
    /// lost one must not leave a REGISTER unanswered); call now and then.
    pub fn expire_store_waits(&mut self, ep: &mut Endpoint, now: Instant) {
        let late: Vec<u64> = self
            .awaiting
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.since) > AWAIT_LIMIT)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.store_done(ep, now, id, false);
        }
        shrink(&mut self.awaiting);
    }

    /// Puts an AoR's bindings as another process of the shared store wrote
    /// them (at most `max_bindings_per_aor` are kept). The caller decodes
    /// them ([`decode_shared`](crate::decode_shared)).
    pub fn apply_shared(&mut self, aor: &str, mut bindings: Vec<Binding>) {
        bindings.truncate(self.config.max_bindings_per_aor);
        self.set_bindings(aor, bindings);
    }

    /// How many REGISTERs wait for the shared store.
    pub fn store_waits(&self) -> usize {
        self.awaiting.len()
    }

    /// More bindings than `max_bindings_per_aor`. RFC 3261 names no status
    /// for it; Kamailio answers "503 Too Many Registered Contacts". We
    /// answer 403 with that phrase instead: the request is understood and
    /// refused for a reason that retrying cannot fix until the user removes
    /// bindings, while 503 claims the server is overloaded and invites the
    /// client to retry (Retry-After) or fail over to another server
    /// (RFC 3263) that shares the same location service. Nothing is stored.
    fn too_many_contacts(
        &self,
        ep: &mut Endpoint,
        now: Instant,
        tx: ServerTxId,
        req: &Message,
    ) -> Result<Handled, CoreError> {
        self.reply(ep, now, tx, req, (403, "Too Many Registered Contacts"), &[])
    }

    /// The 2xx to an accepted REGISTER: the AoR's bindings now.
    fn ok(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        req: &Message,
        key: &str,
        outbound: bool,
    ) -> Result<Message, CoreError> {
        let mut extra: Vec<(&str, String)> = Vec::new();
        for b in self
            .store
            .bindings(key)
            .iter()
            .filter(|b| b.expires_at > now)
        {
            let secs = b.expires_at.saturating_duration_since(now).as_secs();
            let mut v = format!("<{}>;expires={secs}", b.contact);
            if let Some(inst) = &b.instance {
                v.push_str(&format!(";+sip.instance=\"<{inst}>\""));
            }
            if let Some(r) = b.reg_id {
                v.push_str(&format!(";reg-id={r}"));
            }
            extra.push(("Contact", v));
        }
        if outbound {
            extra.push(("Require", "outbound".to_owned()));
            if let Some(ft) = self.config.flow_timer {
                extra.push(("Flow-Timer", ft.to_string()));
            }
        }
        for p in req.header_values(HeaderName::Path) {
            extra.push(("Path", p.to_owned()));
        }
        for uri in &self.config.service_routes {
            extra.push(("Service-Route", format!("<{uri}>")));
        }
        let tag = ep.random_token(10);
        let mut b = MessageBuilder::response_to(req, 200, "OK", Some(&tag));
        for (n, v) in &extra {
            b = b.header(n, v);
        }
        Ok(b.build()?)
    }

    fn authenticate(
        &mut self,
        now: Instant,
        req: &Message,
        key: &str,
        own: &[ListenPoint],
    ) -> Auth {
        let creds = req.authorization().filter_map(Result::ok);
        match self.verify_credentials(now, req, creds, own) {
            Ok(user) if user == key.split('@').next().unwrap_or_default() => Auth::Ok,
            Ok(_) => Auth::Forbidden,
            Err(stale) => Auth::Challenge { stale },
        }
    }

    /// Checks a request's `Proxy-Authorization` (for the proxy's
    /// `relay_authenticated` policy): `Ok` with the user name, or the
    /// `stale` flag of the challenge to send.
    pub(crate) fn authenticate_proxy(
        &mut self,
        now: Instant,
        req: &Message,
    ) -> Result<String, bool> {
        let creds = req.proxy_authorization().filter_map(Result::ok);
        self.verify_credentials(now, req, creds, &[])
    }

    /// A fresh challenge header value (no state kept).
    pub(crate) fn challenge(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        stale: bool,
    ) -> Result<String, CoreError> {
        let nonce = self.nonce(ep, now);
        let mut ch = ServerChallenge::new(self.config.realm(), &nonce);
        ch.stale = stale;
        ch.to_header_value().map_err(|_| CoreError::InvalidState)
    }

    /// RFC 7616 checks of the credentials for our realm: `Ok` with the
    /// user name, or `Err(stale)` for a new challenge.
    fn verify_credentials<'m>(
        &mut self,
        now: Instant,
        req: &Message,
        mut creds: impl Iterator<Item = Credentials<'m>>,
        own: &[ListenPoint],
    ) -> Result<String, bool> {
        let realm = self.config.realm().to_owned();
        let creds = creds.find(|c| c.is_digest() && c.realm() == Some(realm.as_str()));
        let Some(creds) = creds else {
            return Err(false);
        };
        let Some(user) = creds.username().map(str::to_owned) else {
            return Err(false);
        };
        let Some(method) = req.method() else {
            return Err(false);
        };
        let Some(password) = self.config.users.get(&user).cloned() else {
            return Err(false);
        };
        // RFC 7616: we offer qop=auth, so a response must use it (with
        // cnonce and nc, which verify requires along with the qop)
        if creds.qop() != Ok(Some(Qop::Auth)) {
            return Err(false);
        }
        // §3.4.6: the digest-uri must be the Request-URI — or, for a
        // REGISTER, this registrar's own address (SIPp and some phones
        // put the server's address there; the request came to us, so it
        // designates the same resource, and it cannot be replayed
        // against another one)
        let Some(ruri) = req.request_uri_str() else {
            return Err(false);
        };
        let names_us = |u: &str| {
            method == Method::Register && Uri::parse(u).is_ok_and(|u| names_listen_point(&u, own))
        };
        if !creds
            .uri()
            .is_some_and(|u| same_uri(u, ruri) || names_us(u))
        {
            return Err(false);
        }
        let Ok(verified) = digest::verify(
            &creds,
            method.as_str(),
            Secret::Password(&password),
            req.body(),
        ) else {
            return Err(false);
        };
        let Some(nc) = verified.nc else {
            return Err(false);
        };
        // the nonce must be one we signed and fresh, and nc must grow
        // (replay). A right answer to a nonce we cannot vouch for (lapsed,
        // forgotten, or signed with another key: a restart) proves the
        // password, so it is told stale=true and may retry at once.
        let Some(issued) = self.nonce_issued(verified.nonce) else {
            return Err(true);
        };
        let age = self.millis(now).checked_sub(issued);
        let lifetime = self.config.nonce_lifetime.as_millis();
        if age.is_none_or(|age| u128::from(age) >= lifetime) {
            return Err(true);
        }
        let cap = self.config.max_tracked_nonces;
        match self.nonces.check_and_count(verified.nonce, issued, nc, cap) {
            NcCheck::Fresh => {}
            NcCheck::Replayed => return Err(false),
            NcCheck::Forgotten => return Err(true),
        }
        Ok(user)
    }
}

/// A SIP URI whose host is the literal address (and port) of one of our
/// listen points.
fn names_listen_point(uri: &Uri<'_>, points: &[ListenPoint]) -> bool {
    let Some(sip) = uri.as_sip() else {
        return false;
    };
    let host = sip.host_str().trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return false;
    };
    points.iter().any(|p| {
        p.addr.ip() == ip && sip.port().unwrap_or(p.transport.default_port()) == p.addr.port()
    })
}

/// RFC 7616 §3.4.6: the digest-uri designates the Request-URI; the same
/// text, or (for SIP) an equivalent URI.
fn same_uri(digest_uri: &str, request_uri: &str) -> bool {
    digest_uri == request_uri
        || matches!(
            (Uri::parse(digest_uri), Uri::parse(request_uri)),
            (Ok(a), Ok(b)) if a.equivalent(&b)
        )
}

enum Auth {
    Ok,
    Challenge { stale: bool },
    Forbidden,
}

/// RFC 5626 §6: a binding with the same instance and reg-id is replaced;
/// otherwise the same instance, otherwise the same Contact URI.
fn same_binding(b: &Binding, na: &NameAddr<'_>) -> bool {
    match (na.sip_instance(), &b.instance) {
        (Some(inst), Some(old)) if inst == old => b.reg_id == na.reg_id(),
        (Some(_), _) | (None, Some(_)) => {
            Uri::parse(&b.contact).is_ok_and(|u| u.equivalent(na.uri()))
                && na.sip_instance().is_none()
                && b.instance.is_none()
        }
        (None, None) => Uri::parse(&b.contact).is_ok_and(|u| u.equivalent(na.uri())),
    }
}

/// True when a Contact asks for outbound: `+sip.instance` and `reg-id`
/// (RFC 5626 §6).
fn asks_outbound(contacts: &[Contact<'_>]) -> bool {
    contacts.iter().any(|c| match c {
        Contact::Addr(na) => na.sip_instance().is_some() && na.reg_id().is_some(),
        Contact::Star => false,
    })
}

/// RFC 5626 §6: whether the first hop of a REGISTER keeps its flows — we
/// are the first hop (the request has one Via: it came straight from the
/// UA), or the first hop's Path entry, the bottom-most one (each proxy
/// adds its entry on top, RFC 3327), carries `;ob`. `None` for a
/// malformed Path (a bad request).
fn first_hop_keeps_flows(req: &Message) -> Option<bool> {
    if req.vias().nth(1).is_none() {
        return Some(true);
    }
    let mut first_hop = None;
    for p in req.paths() {
        first_hop = Some(p.ok()?);
    }
    Some(first_hop.is_some_and(|p| p.uri().as_sip().is_some_and(|s| s.ob())))
}

#[cfg(test)]
mod flow_index_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    #![allow(clippy::disallowed_methods)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::MemoryStore;

    /// A memory store that counts the bindings its whole-store walks
    /// (`retain`, `for_each`) visit.
    #[derive(Debug)]
    struct Counting(MemoryStore, Arc<AtomicUsize>);

    impl LocationStore for Counting {
        fn bindings(&self, aor: &str) -> &[Binding] {
            self.0.bindings(aor)
        }
        fn replace(&mut self, aor: &str, bindings: Vec<Binding>) {
            self.0.replace(aor, bindings);
        }
        fn is_bound_contact(&self, key: &str) -> bool {
            self.0.is_bound_contact(key)
        }
        fn for_each(&self, f: &mut dyn FnMut(&str, &[Binding])) {
            let seen = &self.1;
            self.0.for_each(&mut |aor, list| {
                seen.fetch_add(list.len(), Ordering::Relaxed);
                f(aor, list);
            });
        }
        fn retain(&mut self, keep: &mut dyn FnMut(&Binding) -> bool) -> Vec<String> {
            let seen = self.1.clone();
            self.0.retain(&mut |b| {
                seen.fetch_add(1, Ordering::Relaxed);
                keep(b)
            })
        }
        fn sizes(&self) -> [(usize, usize); 2] {
            self.0.sizes()
        }
    }

    fn binding(user: usize, flow: u64, reg_id: Option<u32>, now: Instant) -> Binding {
        Binding {
            contact: format!("sip:u{user}@192.0.2.1:{}", 1000 + user),
            expires_at: now + Duration::from_secs(600),
            instance: reg_id.map(|_| format!("urn:uuid:{user}")),
            reg_id,
            call_id: format!("c{user}"),
            cseq: 1,
            flow: Some(FlowId(flow)),
            q: None,
            path: Vec::new(),
        }
    }

    /// A closed flow is looked up, not searched for: when thousands of
    /// flows close at once (an edge or a NAT restarting), a walk of every
    /// binding per closed flow stalled the registrar's one task for
    /// minutes (`bench edge`, 19,000 flows: pong p99 117 ms while the
    /// measurement's flows closed).
    #[test]
    fn a_closed_flow_costs_its_own_bindings_not_the_whole_store() {
        let seen = Arc::new(AtomicUsize::new(0));
        let mut r = Registrar::with_store(
            RegistrarConfig::default(),
            Box::new(Counting(MemoryStore::new(), seen.clone())),
        );
        let now = Instant::now();
        for user in 0..1000 {
            // every tenth an outbound binding (reg-id), the rest plain
            let reg_id = (user % 10 == 0).then_some(1);
            r.set_bindings(
                &format!("u{user}@example.test"),
                vec![binding(user, user as u64, reg_id, now)],
            );
        }
        seen.store(0, Ordering::Relaxed);
        // a flow with only a plain binding: nothing goes, nothing walked
        assert_eq!(r.flow_failed(FlowId(1)), 0);
        // a flow nothing was registered on
        assert_eq!(r.flow_failed(FlowId(5000)), 0);
        // an outbound binding's flow: it goes
        assert_eq!(r.flow_failed(FlowId(20)), 1);
        assert!(r.lookup("u20@example.test", now).is_empty());
        assert_eq!(r.lookup("u21@example.test", now).len(), 1);
        assert_eq!(
            seen.load(Ordering::Relaxed),
            0,
            "no walk of the whole store for a closed flow"
        );
        // its Contact is no longer a bound one; the others still are
        assert!(!r.store.is_bound_contact("u20@192.0.2.1:1020"));
        assert!(r.store.is_bound_contact("u30@192.0.2.1:1030"));
        // the same flow again: nothing left
        assert_eq!(r.flow_failed(FlowId(20)), 0);
    }

    /// A binding that moved to another flow (re-registered after a NAT
    /// rebinding) is not dropped when its old flow closes.
    #[test]
    fn a_binding_that_moved_flows_stays_when_its_old_flow_closes() {
        let mut r = Registrar::default();
        let now = Instant::now();
        r.set_bindings("a@example.test", vec![binding(1, 7, Some(1), now)]);
        r.set_bindings("a@example.test", vec![binding(1, 8, Some(1), now)]);
        assert_eq!(r.flow_failed(FlowId(7)), 0);
        assert_eq!(r.lookup("a@example.test", now).len(), 1);
        assert_eq!(r.flow_failed(FlowId(8)), 1);
        assert!(r.lookup("a@example.test", now).is_empty());
    }
}
