//! Registration client (an account): REGISTER with digest challenges,
//! refresh before expiry, unregister, 423 Min-Expires, 503 Retry-After,
//! back-off after failure, and Contact rewrite from `received`/`rport`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use siproam_sip::digest::{self, Challenge, ClientInput};
use siproam_sip::{Contact, HeaderName, Message, MessageBuilder, Method};

use crate::endpoint::{fmt_hostport, CoreError, Endpoint, Event, RequestFailure, Target, TxOwner};
use crate::flow::{FlowCloseReason, FlowId, ServerName};
use crate::gruu::Gruu;
use crate::timers::{TimerKind, TimerOwner};

/// An account's identity within an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub u32);

/// How an account registers.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// The address of record (`sip:alice@example.test`).
    pub aor: String,
    /// The REGISTER Request-URI (`sip:example.test`).
    pub registrar_uri: String,
    /// Where to send it (the driver resolved it).
    pub registrar: Target,
    /// Digest user name (defaults to the AoR's user).
    pub username: Option<String>,
    /// Digest password; without one, a challenge fails the registration.
    pub password: Option<String>,
    /// Requested binding lifetime, in seconds.
    pub expires: u32,
    /// The Contact's user part (defaults to the AoR's user).
    pub contact_user: Option<String>,
    /// RFC 5626 `+sip.instance` (`urn:uuid:…`), kept across restarts.
    pub instance_id: Option<String>,
    /// RFC 5626 `reg-id` of the registration's flow, used with
    /// `outbound` (1 when not given).
    pub reg_id: Option<u32>,
    /// Ask for RFC 5626 outbound: the REGISTER carries the
    /// `+sip.instance`, a `reg-id` and `Supported: outbound, path, gruu`.
    /// It needs an `instance_id`; without one the account registers as a
    /// normal client.
    pub outbound: bool,
    /// On a 439 (First Hop Lacks Outbound Support) register again at once
    /// without outbound (RFC 5626 §11.6), and keep doing so for the
    /// account; when off, the 439 fails the registration.
    pub outbound_fallback: bool,
    /// Learn the Contact address from `received`/`rport` and re-register
    /// with it (PJSIP's `allow_contact_rewrite`).
    pub contact_rewrite: bool,
    /// Allow a rewrite to a private address even when both the current
    /// Contact and the registrar are public (PJSIP's safeguard is off by
    /// default: such a change usually means a broken ALG).
    pub rewrite_public_to_private: bool,
    /// RFC 5626 §5.1 outbound proxy of this flow: a pre-loaded Route
    /// (`sip:proxy.example.test;lr`) on the REGISTER and on the requests
    /// that go over this flow; `registrar` is then the proxy's address.
    pub outbound_proxy: Option<String>,
    /// The flow leaves from `registrar.local` by choice (one flow per
    /// interface, RFC 5626 §4.2): network-change detection leaves it
    /// there while that address exists, even when the OS would route
    /// from another.
    pub pin_local: bool,
    /// First retry delay after a failure; doubles per failure, with
    /// jitter, up to `retry_max`. With outbound it is RFC 5626 §4.5's
    /// base time when every flow of the account's set has failed.
    pub retry_base: Duration,
    /// RFC 5626 §4.5's base time when another flow of the set still
    /// works (90 s).
    pub retry_base_flow_alive: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Refresh this long before the binding expires (at least halfway).
    pub refresh_margin: Duration,
    /// Keep-alive interval on a stream flow when the registrar sends no
    /// `Flow-Timer` (RFC 5626 §4.4.1; `None` or zero: none).
    pub keepalive_stream: Option<Duration>,
    /// No pong within this after a ping: the flow has failed (when
    /// outbound is in force or the registrar sent a `Flow-Timer`).
    pub pong_timeout: Duration,
    /// Keep-alive interval on a UDP flow (STUN, RFC 5626 §4.4.2) when the
    /// registrar sends no `Flow-Timer`; used once outbound is in force
    /// (`None` or zero: none).
    pub keepalive_datagram: Option<Duration>,
}

impl AccountConfig {
    /// An account with the usual defaults: 600 s bindings, Contact rewrite
    /// on, retries from 30 s up to 1800 s.
    pub fn new(aor: &str, registrar_uri: &str, registrar: Target) -> AccountConfig {
        AccountConfig {
            aor: aor.to_owned(),
            registrar_uri: registrar_uri.to_owned(),
            registrar,
            username: None,
            password: None,
            expires: 600,
            contact_user: None,
            instance_id: None,
            reg_id: None,
            outbound: false,
            outbound_fallback: true,
            contact_rewrite: true,
            rewrite_public_to_private: false,
            outbound_proxy: None,
            pin_local: false,
            retry_base: Duration::from_secs(30),
            retry_base_flow_alive: Duration::from_secs(90),
            retry_max: Duration::from_secs(1800),
            refresh_margin: Duration::from_secs(10),
            keepalive_stream: Some(Duration::from_secs(120)),
            pong_timeout: Duration::from_secs(10),
            keepalive_datagram: Some(Duration::from_secs(30)),
        }
    }

    fn aor_user(&self) -> String {
        siproam_sip::Uri::parse(&self.aor)
            .ok()
            .and_then(|u| u.as_sip().and_then(|s| s.user()).map(str::to_owned))
            .unwrap_or_else(|| "siproam".to_owned())
    }
}

/// A registration's state, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// A REGISTER is on its way.
    Registering,
    /// The binding is in place.
    Registered,
    /// The last attempt failed; a retry is scheduled.
    Failed,
    /// The binding was removed (or never made).
    Unregistered,
}

impl RegistrationState {
    /// The name used in JSON events (`docs/events.md`).
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationState::Registering => "registering",
            RegistrationState::Registered => "registered",
            RegistrationState::Failed => "failed",
            RegistrationState::Unregistered => "unregistered",
        }
    }
}

/// Why a registration attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationFailure {
    /// A final response other than 2xx (and not handled by a retry).
    Status(u16),
    /// No response.
    Timeout,
    /// The flow failed.
    Transport(FlowCloseReason),
    /// Challenged again after answering with the same credentials, or no
    /// credentials to answer with.
    AuthenticationFailed,
    /// 439 First Hop Lacks Outbound Support (RFC 5626 §11.6): with
    /// `outbound_fallback` the account registers again at once without
    /// outbound.
    OutboundUnsupported,
}

/// A change of a registration's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationEvent {
    /// The account.
    pub account: AccountId,
    /// The new state.
    pub state: RegistrationState,
    /// The Contact URI in use.
    pub contact: String,
    /// The status code that caused it, if a response did.
    pub code: Option<u16>,
    /// The binding's lifetime granted by the registrar.
    pub expires: Option<u32>,
    /// Why it failed, for `Failed`.
    pub failure: Option<RegistrationFailure>,
    /// When the next attempt is due, for `Failed`.
    pub retry_at: Option<Instant>,
    /// RFC 5626 outbound is in force (the registrar's 2xx said
    /// `Require: outbound`).
    pub outbound: bool,
    /// The public GRUU the registrar assigned (RFC 5627), if any.
    pub gruu: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Registering,
    Registered,
    Failed,
    Unregistering,
}

#[derive(Debug, Clone)]
struct AuthState {
    challenge: String,
    proxy: bool,
    nc: u32,
    /// Credentials for this challenge were already sent once.
    answered: bool,
}

/// An account's registration, inside the endpoint.
#[derive(Debug)]
pub(crate) struct Account {
    config: AccountConfig,
    call_id: String,
    from_tag: String,
    cseq: u32,
    phase: Phase,
    /// The address in our Contact: the local address, or what the
    /// registrar saw (after a rewrite).
    contact_addr: Option<SocketAddr>,
    flow: Option<FlowId>,
    auth: Option<AuthState>,
    failures: u32,
    expires: u32,
    /// A rewrite learnt while a REGISTER was pending: register again.
    reregister: bool,
    /// RFC 5626 outbound is in force: the last REGISTER asked for it and
    /// its 2xx said `Require: outbound`.
    outbound_in_force: bool,
    /// The first hop answered 439: outbound is no longer asked for.
    outbound_refused: bool,
    /// The GRUUs of the last 2xx (RFC 5627).
    gruu: Option<Gruu>,
    /// A REGISTER answered 430 was sent again over a new flow; another
    /// 430 fails the registration.
    retried_430: bool,
    /// The `Service-Route` of the last 2xx (RFC 3608): the route set of
    /// the account's out-of-dialog requests after its outbound proxy.
    service_route: Vec<String>,
}

impl Account {
    /// The flow the account registers over, if any.
    pub(crate) fn flow_in_use(&self) -> Option<FlowId> {
        self.flow
    }

    /// Whether `other` is a sibling flow of this account (RFC 5626: the
    /// same AoR and `+sip.instance`, both asking for outbound).
    fn same_flow_set(&self, other: &Account) -> bool {
        self.outbound_requested()
            && other.outbound_requested()
            && self.config.instance_id == other.config.instance_id
            && self.config.aor == other.config.aor
    }

    /// Whether this flow is registered with outbound in force: requests of
    /// its AoR may go over it.
    fn flow_live(&self) -> bool {
        self.outbound_in_force && self.phase == Phase::Registered && self.flow.is_some()
    }

    /// Whether the next REGISTER asks for outbound (RFC 5626 §4.2).
    fn outbound_requested(&self) -> bool {
        self.config.outbound && self.config.instance_id.is_some() && !self.outbound_refused
    }

    /// The `reg-id` the next REGISTER carries, with outbound (the flow's
    /// within its set, even before outbound is in force).
    pub(crate) fn reg_id(&self) -> Option<u32> {
        self.outbound_requested()
            // reg-id is a positive integer (RFC 5626 §4.2.1)
            .then(|| self.config.reg_id.filter(|&r| r > 0).unwrap_or(1))
    }

    fn contact_uri(&self) -> String {
        let user = self
            .config
            .contact_user
            .clone()
            .unwrap_or_else(|| self.config.aor_user());
        let addr = self.contact_addr.map(fmt_hostport).unwrap_or_default();
        let t = self.config.registrar.transport;
        let transport = if t == crate::Transport::Udp {
            String::new()
        } else {
            format!(";transport={}", t.param())
        };
        // no `ob` here: a REGISTER's Contact does not carry it (RFC 5626
        // §4.2); dialog-forming requests do (`Endpoint::outbound_for`)
        format!("sip:{user}@{addr}{transport}")
    }
}

impl Endpoint {
    /// Adds an account and starts registering it.
    pub fn register(&mut self, now: Instant, config: AccountConfig) -> AccountId {
        let call_id = format!("{}@siproam", self.rng.token(20));
        let from_tag = self.rng.token(12);
        let expires = config.expires;
        let id = self.accounts.insert(Account {
            config,
            call_id,
            from_tag,
            cseq: 0,
            phase: Phase::Idle,
            contact_addr: None,
            flow: None,
            auth: None,
            failures: 0,
            expires,
            reregister: false,
            outbound_in_force: false,
            outbound_refused: false,
            gruu: None,
            retried_430: false,
            service_route: Vec::new(),
        });
        self.send_register(now, id, false);
        id
    }

    /// Removes the binding (REGISTER with expires 0). The account is
    /// forgotten once the registrar answers (or the request fails).
    pub fn unregister(&mut self, now: Instant, account: AccountId) -> Result<(), CoreError> {
        self.forget_account_routes(account);
        self.keepalive_closed(account, FlowCloseReason::Unregistered);
        let acc = self
            .accounts
            .get_mut(account)
            .ok_or(CoreError::NoSuchAccount)?;
        self.timers
            .cancel(TimerOwner::Account(account.0), TimerKind::Register);
        if matches!(acc.phase, Phase::Idle | Phase::Failed) && acc.contact_addr.is_none() {
            self.accounts.remove(account);
            return Ok(());
        }
        self.send_register(now, account, true);
        Ok(())
    }

    /// The account's Contact URI, if it has one yet.
    pub fn account_contact(&self, account: AccountId) -> Option<String> {
        self.accounts
            .get(account)
            .filter(|a| a.contact_addr.is_some())
            .map(Account::contact_uri)
    }

    /// Moves an account to a new local address (a network change): the
    /// old registration flow is dropped, the Contact becomes `local`, and a
    /// REGISTER goes out at once over a new flow. With a `+sip.instance`
    /// the registrar replaces the old binding (RFC 5626 §6).
    pub fn move_account(
        &mut self,
        now: Instant,
        account: AccountId,
        local: SocketAddr,
    ) -> Result<(), CoreError> {
        self.move_account_with(now, account, local, false)
    }

    /// [`move_account`](Self::move_account), optionally keeping the
    /// registration's flow (`keep_flow`: the REGISTER with the new Contact
    /// goes over the existing connection or 5-tuple).
    pub fn move_account_with(
        &mut self,
        now: Instant,
        account: AccountId,
        local: SocketAddr,
        keep_flow: bool,
    ) -> Result<(), CoreError> {
        let acc = self
            .accounts
            .get_mut(account)
            .ok_or(CoreError::NoSuchAccount)?;
        acc.contact_addr = Some(local);
        if !keep_flow {
            acc.config.registrar.local = Some(local);
            acc.flow = None;
        }
        acc.reregister = false;
        self.timers
            .cancel(TimerOwner::Account(account.0), TimerKind::Register);
        // a REGISTER still pending names the old Contact: its answer (or
        // its timeout on a dead flow) must not decide the account's state
        self.abandon_client_txs(TxOwner::Account(account));
        self.send_register(now, account, false);
        Ok(())
    }

    /// Whether an account registering over `transport` to `remote` must
    /// open its connection first and name that connection's own address
    /// in its Contact (RFC 5626: the flow): a stream transport with no
    /// listen point of it in the remote's family. A Contact naming another
    /// transport's listener would send the registrar's requests where
    /// nothing of ours listens for them.
    pub fn needs_contact_flow(&self, transport: crate::Transport, remote: SocketAddr) -> bool {
        transport.is_reliable()
            && !self
                .listen_points
                .iter()
                .any(|p| p.transport == transport && p.addr.is_ipv4() == remote.is_ipv4())
    }

    /// How long an account waits for a keep-alive's pong.
    pub(crate) fn account_pong_timeout(&self, account: AccountId) -> Duration {
        self.accounts
            .get(account)
            .map_or(Duration::from_secs(10), |a| a.config.pong_timeout)
    }

    /// An account's keep-alive interval on a UDP flow without a
    /// `Flow-Timer`.
    pub(crate) fn account_keepalive_datagram(&self, account: AccountId) -> Option<Duration> {
        self.accounts
            .get(account)
            .and_then(|a| a.config.keepalive_datagram)
    }

    /// Lets go of an account's flow before it is closed for a network
    /// change: its closing (and a REGISTER pending on it) no longer
    /// concerns the account, which registers anew over another flow.
    pub(crate) fn detach_account_flow(&mut self, account: AccountId) {
        if let Some(acc) = self.accounts.get_mut(account) {
            acc.flow = None;
        }
        self.abandon_client_txs(crate::endpoint::TxOwner::Account(account));
    }

    /// Changes an account's settings without sending anything (PJSIP's
    /// `disable_reg_on_modify`, always on): the next REGISTER — the
    /// refresh, a retry, or [`move_account`](Self::move_account) after a
    /// network change — carries them. A REGISTER fired at once could go
    /// out on a flow that is already dead. A new registrar target drops
    /// the registration flow; a changed binding lifetime applies from the
    /// next refresh.
    pub fn modify_account(
        &mut self,
        account: AccountId,
        modify: impl FnOnce(&mut AccountConfig),
    ) -> Result<(), CoreError> {
        let acc = self
            .accounts
            .get_mut(account)
            .ok_or(CoreError::NoSuchAccount)?;
        let before = acc.config.registrar;
        let before_expires = acc.config.expires;
        let before_user = (acc.config.username.clone(), acc.config.password.clone());
        modify(&mut acc.config);
        if acc.config.expires != before_expires {
            acc.expires = acc.config.expires;
        }
        if acc.config.registrar != before {
            acc.flow = None;
        }
        if (acc.config.username.clone(), acc.config.password.clone()) != before_user {
            // the old credentials' nonce and counters no longer apply
            acc.auth = None;
        }
        Ok(())
    }

    /// Sends the next REGISTER (a refresh) now, over the account's flow
    /// or a new one. For an application that changed settings with
    /// [`modify_account`](Self::modify_account) and knows the network is
    /// up; refused while a REGISTER is pending.
    pub fn refresh_registration(
        &mut self,
        now: Instant,
        account: AccountId,
    ) -> Result<(), CoreError> {
        if !self.accounts.contains(account) {
            return Err(CoreError::NoSuchAccount);
        }
        if self.has_client_tx(TxOwner::Account(account)) {
            return Err(CoreError::InvalidState);
        }
        self.timers
            .cancel(TimerOwner::Account(account.0), TimerKind::Register);
        self.send_register(now, account, false);
        Ok(())
    }

    /// Moves an account to another registrar address (the same registrar
    /// reached in the other address family after a network change): the
    /// flow is dropped; [`move_account`](Self::move_account) then sends the
    /// REGISTER there.
    pub fn retarget_account(
        &mut self,
        account: AccountId,
        registrar: Target,
    ) -> Result<(), CoreError> {
        self.modify_account(account, |c| c.registrar = registrar)
    }

    /// Where an account registers (the registrar's or outbound proxy's
    /// address).
    pub fn account_registrar(&self, account: AccountId) -> Option<SocketAddr> {
        self.accounts
            .get(account)
            .map(|a| a.config.registrar.remote)
    }

    /// The TLS server name an account's registrar was reached by.
    pub(crate) fn account_server_name(&self, account: AccountId) -> Option<ServerName> {
        self.accounts
            .get(account)
            .and_then(|a| a.config.registrar.server_name)
    }

    /// The transport an account registers over.
    pub fn account_transport(&self, account: AccountId) -> Option<crate::Transport> {
        self.accounts
            .get(account)
            .map(|a| a.config.registrar.transport)
    }

    /// Every account.
    pub fn accounts(&self) -> Vec<AccountId> {
        self.accounts.ids()
    }

    /// The flow an account registers over, if any.
    pub fn account_flow(&self, account: AccountId) -> Option<FlowId> {
        self.accounts.get(account).and_then(|a| a.flow)
    }

    /// Whether RFC 5626 outbound is in force for an account: its last
    /// REGISTER asked for it and the 2xx said `Require: outbound`. Its
    /// registration flow is then the flow for its requests.
    pub fn account_outbound(&self, account: AccountId) -> bool {
        self.accounts
            .get(account)
            .is_some_and(|a| a.outbound_in_force)
    }

    /// Whether a request from `local_uri` is an account's for which
    /// outbound is in force (its dialog-forming requests carry `;ob` in
    /// their Contact, RFC 5626 §4.3).
    pub(crate) fn outbound_for(&self, local_uri: &str) -> bool {
        let ours = siproam_sip::Uri::parse(local_uri).ok();
        !self
            .accounts
            .ids_where(|a| {
                a.outbound_in_force
                    && match (&ours, siproam_sip::Uri::parse(&a.config.aor)) {
                        (Some(o), Ok(aor)) => o.equivalent(&aor),
                        _ => a.config.aor == local_uri,
                    }
            })
            .is_empty()
    }

    /// The flow a new request from `local_uri` goes over when RFC 5626
    /// outbound is in force for its AoR: a live flow of its flow set (the
    /// lowest `reg-id` first), else one of the set being registered again;
    /// `None` when outbound is not in force for it. The target is that
    /// flow's first hop (its outbound proxy, or the registrar).
    pub fn outbound_target_for(&self, local_uri: &str) -> Option<(AccountId, Target)> {
        let ours = siproam_sip::Uri::parse(local_uri).ok();
        let mut set: Vec<(bool, u32, AccountId)> = self
            .accounts
            .ids_where(|a| {
                a.outbound_in_force
                    && match (&ours, siproam_sip::Uri::parse(&a.config.aor)) {
                        (Some(o), Ok(aor)) => o.equivalent(&aor),
                        _ => a.config.aor == local_uri,
                    }
            })
            .into_iter()
            .filter_map(|id| {
                let a = self.accounts.get(id)?;
                let live = a.flow_live() && a.flow.is_some_and(|f| self.flows.get(f).is_some());
                Some((!live, a.reg_id().unwrap_or(1), id))
            })
            .collect();
        set.sort();
        let (_, _, id) = set.first()?;
        let a = self.accounts.get(*id)?;
        Some((*id, a.config.registrar))
    }

    /// The account of a live flow (registered, outbound in force, flow
    /// open) of `local_uri`'s flow set, the lowest `reg-id` first, with
    /// that flow's first hop sent from its local address: where a call of
    /// a failed flow moves at once (`crate::mobility`'s flow repair).
    pub(crate) fn live_flow_for(&self, local_uri: &str) -> Option<(AccountId, Target)> {
        let (id, mut target) = self.outbound_target_for(local_uri)?;
        let a = self.accounts.get(id)?;
        let flow = self.flows.get(a.flow?).filter(|_| a.flow_live())?;
        target.local = flow.local.or(target.local);
        Some((id, target))
    }

    /// The pre-loaded Route (`<sip:proxy;lr>`) of requests sent to
    /// `target`, when it is an outbound proxy of one of our flows.
    pub(crate) fn outbound_route_towards(&self, target: Target) -> Option<String> {
        let ids = self.accounts.ids_where(|a| {
            a.config.outbound_proxy.is_some()
                && a.config.registrar.transport == target.transport
                && a.config.registrar.remote == target.remote
        });
        let a = self.accounts.get(*ids.first()?)?;
        a.config.outbound_proxy.as_ref().map(|p| format!("<{p}>"))
    }

    /// The account whose AoR is `from_uri` (the first with a password,
    /// else the first): the one whose credentials and route set the
    /// request uses (`crate::auth`).
    pub(crate) fn account_for_from(&self, from_uri: &str) -> Option<AccountId> {
        let ours = siproam_sip::Uri::parse(from_uri).ok();
        let ids =
            self.accounts
                .ids_where(|a| match (&ours, siproam_sip::Uri::parse(&a.config.aor)) {
                    (Some(o), Ok(aor)) => o.equivalent(&aor),
                    _ => a.config.aor == from_uri,
                });
        ids.iter()
            .copied()
            .find(|id| {
                self.accounts
                    .get(*id)
                    .is_some_and(|a| a.config.password.is_some())
            })
            .or_else(|| ids.first().copied())
    }

    /// An account's digest user name and password, when it has one.
    pub(crate) fn account_credentials(&self, id: AccountId) -> Option<(String, String)> {
        let a = self.accounts.get(id)?;
        let password = a.config.password.clone()?;
        let user = a
            .config
            .username
            .clone()
            .unwrap_or_else(|| a.config.aor_user());
        Some((user, password))
    }

    /// An account's pre-loaded route set for out-of-dialog requests sent
    /// to `hop`: its outbound proxy (`<sip:proxy;lr>`), then the
    /// `Service-Route` learnt from its last REGISTER 2xx (RFC 3608) — when
    /// `hop` is the account's first hop (its registrar or outbound proxy);
    /// nothing for a request sent straight elsewhere.
    pub(crate) fn account_route_set(
        &self,
        id: AccountId,
        hop: SocketAddr,
    ) -> (Option<String>, Vec<String>) {
        let Some(a) = self
            .accounts
            .get(id)
            .filter(|a| a.config.registrar.remote == hop)
        else {
            return (None, Vec::new());
        };
        (
            a.config.outbound_proxy.as_ref().map(|p| format!("<{p}>")),
            a.service_route.clone(),
        )
    }

    /// Whether `user` (a Request-URI's, unescaped) is an account's: its
    /// AoR's user, its Contact's, or its temporary GRUU's (RFC 5627) —
    /// part of the one test of a request addressed to us
    /// (`Endpoint::addressed_to_us`).
    pub(crate) fn account_has_user(&self, user: &[u8]) -> bool {
        let is = |uri: &str| crate::addressing::uri_user_is(uri, user);
        !self
            .accounts
            .ids_where(|a| {
                is(&a.config.aor)
                    || a.config
                        .contact_user
                        .as_deref()
                        .is_some_and(|u| crate::addressing::user_is(u, user))
                    || a.gruu
                        .as_ref()
                        .and_then(|g| g.temp.as_deref())
                        .is_some_and(is)
            })
            .is_empty()
    }

    /// The AoR user of an account (for a failure report).
    pub(crate) fn account_user(&self, id: AccountId) -> Option<String> {
        self.accounts.get(id).map(|a| a.config.aor_user())
    }

    /// The outbound accounts registered over `flow`.
    pub(crate) fn outbound_accounts_on(&self, flow: FlowId) -> Vec<AccountId> {
        self.accounts
            .ids_where(|a| a.flow == Some(flow) && a.outbound_requested())
    }

    /// Whether an account's flow leaves from its local address by choice
    /// ([`AccountConfig::pin_local`]).
    pub(crate) fn account_pins_local(&self, account: AccountId) -> bool {
        self.accounts
            .get(account)
            .is_some_and(|a| a.config.pin_local)
    }

    /// The address in an account's Contact.
    pub(crate) fn account_contact_addr(&self, account: AccountId) -> Option<SocketAddr> {
        self.accounts.get(account).and_then(|a| a.contact_addr)
    }

    /// The `reg-id` of an account's flow, when it asks for outbound.
    pub fn account_reg_id(&self, account: AccountId) -> Option<u32> {
        self.accounts.get(account).and_then(Account::reg_id)
    }

    /// A REGISTER of `id` was answered 430 (Flow Failed, RFC 5626 §11.5)
    /// and its flow was failed: the account registers again at once over
    /// a new flow, once; a second 430 before a 2xx fails the registration
    /// (and it backs off).
    pub(crate) fn account_430(&mut self, now: Instant, id: AccountId) {
        let Some(acc) = self.accounts.get_mut(id) else {
            return;
        };
        if acc.phase == Phase::Unregistering || acc.retried_430 {
            self.fail(now, id, RegistrationFailure::Status(430), Some(430));
            return;
        }
        acc.retried_430 = true;
        acc.flow = None;
        self.send_register(now, id, false);
    }

    /// How many accounts the endpoint holds.
    pub fn account_count(&self) -> usize {
        self.accounts.count()
    }

    fn emit(
        &mut self,
        account: AccountId,
        state: RegistrationState,
        code: Option<u16>,
        expires: Option<u32>,
        failure: Option<RegistrationFailure>,
        retry_at: Option<Instant>,
    ) {
        let (contact, outbound, gruu) = self
            .accounts
            .get(account)
            .map(|a| {
                let gruu = a.gruu.as_ref().and_then(|g| g.public.clone());
                (a.contact_uri(), a.outbound_in_force, gruu)
            })
            .unwrap_or_default();
        self.events
            .push_back(Event::Registration(RegistrationEvent {
                account,
                state,
                contact,
                code,
                expires,
                failure,
                retry_at,
                outbound,
                gruu,
            }));
    }

    fn send_register(&mut self, now: Instant, id: AccountId, unregister: bool) {
        let Some(acc) = self.accounts.get_mut(id) else {
            return;
        };
        let target = acc.config.registrar;
        let flow = self.flows.towards(
            target.transport,
            target.remote,
            target.local,
            target.server_name,
        );
        let local = self.local_for(flow, target.transport, target.local);
        let Some(acc) = self.accounts.get_mut(id) else {
            return;
        };
        if acc.contact_addr.is_none() {
            acc.contact_addr = Some(local);
        }
        acc.cseq += 1;
        acc.flow = Some(flow);
        let was = acc.phase;
        acc.phase = if unregister {
            Phase::Unregistering
        } else {
            Phase::Registering
        };
        let expires = if unregister { 0 } else { acc.expires };
        let mut contact = format!("<{}>", acc.contact_uri());
        if let Some(inst) = &acc.config.instance_id {
            contact.push_str(&format!(";+sip.instance=\"<{inst}>\""));
        }
        if let Some(reg_id) = acc.reg_id() {
            contact.push_str(&format!(";reg-id={reg_id}"));
        }
        contact.push_str(&format!(";expires={expires}"));
        let mut b = MessageBuilder::request(Method::Register, &acc.config.registrar_uri)
            .header(
                "From",
                &format!("<{}>;tag={}", acc.config.aor, acc.from_tag),
            )
            .header("To", &format!("<{}>", acc.config.aor))
            .header("Call-ID", &acc.call_id)
            .header("CSeq", &format!("{} REGISTER", acc.cseq))
            .header("Contact", &contact)
            .header("Expires", &expires.to_string());
        if let Some(proxy) = &acc.config.outbound_proxy {
            // the flow's first hop (RFC 5626 §5.1, RFC 3261 §8.1.2)
            b = b.header("Route", &format!("<{proxy}>"));
        }
        if acc.outbound_requested() {
            b = b.header("Supported", "outbound, path, gruu");
        }
        // answer the last challenge again (nonce reuse, nc counting up)
        let cnonce = self.rng.token(16);
        let Some(acc) = self.accounts.get_mut(id) else {
            return;
        };
        if let (Some(auth), Some(password)) = (acc.auth.as_mut(), acc.config.password.as_deref()) {
            auth.nc += 1;
            let username = acc
                .config
                .username
                .clone()
                .unwrap_or_else(|| acc.config.aor_user());
            if let Ok(ch) = Challenge::parse(&auth.challenge) {
                let input = ClientInput {
                    username: &username,
                    password,
                    method: "REGISTER",
                    uri: &acc.config.registrar_uri,
                    cnonce: &cnonce,
                    nc: auth.nc,
                    body: b"",
                };
                if let Ok(value) = digest::respond(&ch, &input) {
                    b = b.header(
                        if auth.proxy {
                            "Proxy-Authorization"
                        } else {
                            "Authorization"
                        },
                        &value,
                    );
                }
            }
        }
        if self
            .start_client_tx(now, b, target, TxOwner::Account(id))
            .is_err()
        {
            // the configuration made an unparseable REGISTER (a bad AoR)
            self.fail(now, id, RegistrationFailure::Status(400), None);
            return;
        }
        // a refresh of a working binding is not news; a first attempt or a
        // retry is
        if !unregister && !matches!(was, Phase::Registering | Phase::Registered) {
            self.emit(id, RegistrationState::Registering, None, None, None, None);
        }
    }

    pub(crate) fn account_response(
        &mut self,
        now: Instant,
        id: AccountId,
        resp: Message,
        _remote: SocketAddr,
    ) {
        let code = resp.status().unwrap_or(0);
        if code < 200 {
            return;
        }
        // the answer to a REGISTER a newer one has replaced
        if self
            .accounts
            .get(id)
            .is_some_and(|a| resp.cseq().seq < a.cseq)
        {
            return;
        }
        let gruu = self.gruu_in(id, &resp, code);
        let rewritten = self.learn_contact(id, &resp);
        let Some(acc) = self.accounts.get_mut(id) else {
            return;
        };
        if acc.phase == Phase::Unregistering {
            // a challenge to the de-REGISTER (a nonce gone stale while we
            // were registered, RFC 7616 §3.3) is answered once, or the
            // binding would stay on the registrar for its whole lifetime
            if matches!(code, 401 | 407) && acc.config.password.is_some() {
                let (challenge, stale) = challenge_of(&resp, code);
                // answered already: only a new nonce said to be stale is
                // worth another try (a registrar repeating itself is not)
                let retry = match (&acc.auth, &challenge) {
                    (Some(a), Some(c)) if a.answered => stale && a.challenge != *c,
                    _ => true,
                };
                if let (Some(challenge), true) = (challenge, retry) {
                    acc.auth = Some(AuthState {
                        challenge,
                        proxy: code == 407,
                        nc: 0,
                        answered: true,
                    });
                    self.send_register(now, id, true);
                    return;
                }
            }
            let failure = (code >= 300).then_some(RegistrationFailure::Status(code));
            self.accounts.remove(id);
            self.timers.cancel_all(TimerOwner::Account(id.0));
            self.events
                .push_back(Event::Registration(RegistrationEvent {
                    account: id,
                    state: RegistrationState::Unregistered,
                    contact: String::new(),
                    code: Some(code),
                    expires: Some(0),
                    failure,
                    retry_at: None,
                    outbound: false,
                    gruu: None,
                }));
            return;
        }
        match code {
            200..=299 => {
                acc.failures = 0;
                acc.retried_430 = false;
                acc.outbound_in_force =
                    acc.outbound_requested() && resp.has_token(HeaderName::Require, "outbound");
                acc.gruu = gruu;
                // RFC 3608 §6: each 2xx replaces the stored route
                acc.service_route = resp
                    .header_values(HeaderName::ServiceRoute)
                    .flat_map(siproam_sip::split_list)
                    .map(|r| r.trim().to_owned())
                    .take(MAX_SERVICE_ROUTE)
                    .collect();
                if let Some(a) = acc.auth.as_mut() {
                    a.answered = false;
                }
                if rewritten || std::mem::take(&mut acc.reregister) {
                    // the registrar saw another address: bind that one now
                    self.send_register(now, id, false);
                    return;
                }
                let granted = granted_expires(&resp, &acc.contact_uri()).unwrap_or(acc.expires);
                acc.phase = Phase::Registered;
                if granted == 0 {
                    self.fail(now, id, RegistrationFailure::Status(code), None);
                    return;
                }
                let lifetime = Duration::from_secs(u64::from(granted));
                let refresh = lifetime
                    .saturating_sub(acc.config.refresh_margin)
                    .max(lifetime / 2);
                self.timers.set(
                    TimerOwner::Account(id.0),
                    TimerKind::Register,
                    now + refresh,
                );
                let (flow, keepalive) = (acc.flow, acc.config.keepalive_stream);
                self.emit(
                    id,
                    RegistrationState::Registered,
                    Some(code),
                    Some(granted),
                    None,
                    None,
                );
                if let Some(flow) = flow {
                    self.keepalive_start(now, id, flow, &resp, keepalive);
                }
            }
            401 | 407 => {
                let (challenge, stale) = challenge_of(&resp, code);
                let repeated = acc.auth.as_ref().is_some_and(|a| a.answered) && !stale;
                match (challenge, acc.config.password.is_some(), repeated) {
                    (Some(challenge), true, false) => {
                        acc.auth = Some(AuthState {
                            challenge,
                            proxy: code == 407,
                            nc: 0,
                            answered: true,
                        });
                        self.send_register(now, id, false);
                    }
                    _ => {
                        acc.auth = None;
                        self.fail(
                            now,
                            id,
                            RegistrationFailure::AuthenticationFailed,
                            Some(code),
                        );
                    }
                }
            }
            423 => {
                let min = resp.min_expires().and_then(Result::ok);
                match min {
                    Some(min) if min > acc.expires => {
                        acc.expires = min;
                        self.send_register(now, id, false);
                    }
                    _ => self.fail(now, id, RegistrationFailure::Status(code), Some(code)),
                }
            }
            439 if acc.outbound_requested() => {
                if acc.config.outbound_fallback {
                    // RFC 5626 §11.6: register again at once without
                    // outbound (the instance stays), and go on so
                    acc.outbound_refused = true;
                    acc.outbound_in_force = false;
                    acc.phase = Phase::Failed;
                    self.emit(
                        id,
                        RegistrationState::Failed,
                        Some(code),
                        None,
                        Some(RegistrationFailure::OutboundUnsupported),
                        Some(now),
                    );
                    self.send_register(now, id, false);
                } else {
                    self.fail(
                        now,
                        id,
                        RegistrationFailure::OutboundUnsupported,
                        Some(code),
                    );
                }
            }
            _ => {
                let retry_after = if code == 503 || code == 500 || code == 600 || code == 603 {
                    resp.retry_after()
                        .and_then(Result::ok)
                        .and_then(|r| r.seconds())
                } else {
                    None
                };
                self.fail_with_retry(
                    now,
                    id,
                    RegistrationFailure::Status(code),
                    Some(code),
                    retry_after.map(|s| Duration::from_secs(u64::from(s))),
                );
            }
        }
    }

    /// The GRUUs (RFC 5627) on our Contact in a REGISTER's 2xx; `None`
    /// for any other answer.
    fn gruu_in(&self, id: AccountId, resp: &Message, code: u16) -> Option<Gruu> {
        let acc = self.accounts.get(id)?;
        if !(200..300).contains(&code) {
            return None;
        }
        crate::gruu::gruus_of(resp, acc.config.instance_id.as_deref(), &acc.contact_uri())
    }

    /// The GRUUs an account holds (RFC 5627), from the last 2xx to its
    /// REGISTER: `None` when it has none.
    pub fn account_gruu(&self, account: AccountId) -> Option<Gruu> {
        self.accounts.get(account).and_then(|a| a.gruu.clone())
    }

    /// The Contact URI of a dialog from `local_uri`: the public GRUU of
    /// the account with that AoR (with `ob` when `ob`), if it has one.
    pub(crate) fn gruu_contact_for(&self, local_uri: &str, ob: bool) -> Option<String> {
        let ours = siproam_sip::Uri::parse(local_uri).ok();
        let id = self
            .accounts
            .ids_where(|a| {
                a.gruu.as_ref().is_some_and(|g| g.public.is_some())
                    && match (&ours, siproam_sip::Uri::parse(&a.config.aor)) {
                        (Some(o), Ok(aor)) => o.equivalent(&aor),
                        _ => a.config.aor == local_uri,
                    }
            })
            .into_iter()
            .next()?;
        let public = self.accounts.get(id)?.gruu.as_ref()?.public.as_deref()?;
        Some(crate::gruu::dialog_contact(public, ob))
    }

    /// Learns the address the registrar saw from the top Via; returns true
    /// when the Contact changed.
    fn learn_contact(&mut self, id: AccountId, resp: &Message) -> bool {
        let Some(acc) = self.accounts.get_mut(id) else {
            return false;
        };
        if !acc.config.contact_rewrite || acc.phase == Phase::Unregistering {
            return false;
        }
        let Ok(via) = resp.top_via() else {
            return false;
        };
        // only what the registrar says it saw counts: without `received`
        // or an `rport` value the Via tells nothing new
        let rport_value = matches!(via.rport(), Some(Some(_)));
        if via.received().is_none() && !rport_value {
            return false;
        }
        let host = via.received().unwrap_or(via.host_str());
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return false;
        };
        let port = match via.rport() {
            Some(Some(p)) => p,
            _ => via
                .port()
                .unwrap_or(acc.config.registrar.transport.default_port()),
        };
        let seen = SocketAddr::new(ip, port);
        let Some(current) = acc.contact_addr else {
            return false;
        };
        // on streams the port seen is the connection's ephemeral port:
        // only the address is learnt
        let seen = if acc.config.registrar.transport.is_reliable() {
            SocketAddr::new(ip, current.port())
        } else {
            seen
        };
        if seen == current {
            return false;
        }
        let public = |ip: IpAddr| !is_private(ip);
        if !acc.config.rewrite_public_to_private
            && public(current.ip())
            && public(acc.config.registrar.remote.ip())
            && !public(seen.ip())
        {
            return false;
        }
        acc.contact_addr = Some(seen);
        true
    }

    fn fail(
        &mut self,
        now: Instant,
        id: AccountId,
        failure: RegistrationFailure,
        code: Option<u16>,
    ) {
        self.fail_with_retry(now, id, failure, code, None);
    }

    fn fail_with_retry(
        &mut self,
        now: Instant,
        id: AccountId,
        failure: RegistrationFailure,
        code: Option<u16>,
        retry_after: Option<Duration>,
    ) {
        let unit = self.rng.unit();
        let Some(acc) = self.accounts.get_mut(id) else {
            return;
        };
        if acc.phase == Phase::Unregistering {
            self.accounts.remove(id);
            self.timers.cancel_all(TimerOwner::Account(id.0));
            self.events
                .push_back(Event::Registration(RegistrationEvent {
                    account: id,
                    state: RegistrationState::Unregistered,
                    contact: String::new(),
                    code,
                    expires: None,
                    failure: Some(failure),
                    retry_at: None,
                    outbound: false,
                    gruu: None,
                }));
            return;
        }
        acc.phase = Phase::Failed;
        acc.outbound_in_force = false;
        let wait = match retry_after {
            Some(w) => w,
            None => self.retry_wait(id, unit),
        };
        let Some(acc) = self.accounts.get_mut(id) else {
            return;
        };
        acc.failures = acc.failures.saturating_add(1);
        let at = now + wait;
        self.timers
            .set(TimerOwner::Account(id.0), TimerKind::Register, at);
        self.emit(
            id,
            RegistrationState::Failed,
            code,
            None,
            Some(failure),
            Some(at),
        );
    }

    /// How long a failed account waits before registering again, `unit`
    /// a draw in [0, 1). A flow of an outbound set follows RFC 5626 §4.5:
    /// U(50–100 %) × min(max, base × 2^n), `n` its consecutive failures
    /// counting this one, `base` 30 s when every flow of the set has
    /// failed and 90 s when another still works. Other accounts wait
    /// U(50–100 %) × min(max, base × 2^(n-1)).
    fn retry_wait(&self, id: AccountId, unit: f64) -> Duration {
        let Some(acc) = self.accounts.get(id) else {
            return Duration::ZERO;
        };
        let (base, doublings) = if acc.outbound_requested() {
            let other_alive = self
                .accounts
                .ids_where(|o| o.same_flow_set(acc) && o.flow_live())
                .into_iter()
                .any(|o| o != id);
            let base = if other_alive {
                acc.config.retry_base_flow_alive
            } else {
                acc.config.retry_base
            };
            (base, acc.failures.saturating_add(1))
        } else {
            (acc.config.retry_base, acc.failures)
        };
        base.saturating_mul(1u32 << doublings.min(16))
            .min(acc.config.retry_max)
            .mul_f64(0.5 + unit / 2.0)
    }

    /// Registers at once every account waiting out a back-off after a
    /// failure (RFC 5626 §4.5: a network change, or the application's
    /// forced retry; resiprocate's `refreshRegistration` for all). Returns
    /// the accounts that registered again.
    pub fn retry_failed_registrations(&mut self, now: Instant) -> Vec<AccountId> {
        let waiting = self.accounts.ids_where(|a| a.phase == Phase::Failed);
        let mut sent = Vec::new();
        for id in waiting {
            if self.has_client_tx(TxOwner::Account(id)) {
                continue;
            }
            self.timers
                .cancel(TimerOwner::Account(id.0), TimerKind::Register);
            self.send_register(now, id, false);
            sent.push(id);
        }
        sent
    }

    pub(crate) fn account_failed(&mut self, now: Instant, id: AccountId, reason: RequestFailure) {
        let failure = match reason {
            RequestFailure::Timeout => RegistrationFailure::Timeout,
            RequestFailure::Transport(r) => RegistrationFailure::Transport(r),
        };
        let code = match reason {
            RequestFailure::Timeout => 408,
            RequestFailure::Transport(_) => 503,
        };
        self.fail(now, id, failure, Some(code));
    }

    pub(crate) fn account_timer(&mut self, now: Instant, id: AccountId) {
        let Some(acc) = self.accounts.get(id) else {
            return;
        };
        if matches!(acc.phase, Phase::Registered | Phase::Failed | Phase::Idle) {
            self.send_register(now, id, false);
        }
    }

    pub(crate) fn accounts_flow_closed(
        &mut self,
        now: Instant,
        flow: FlowId,
        _reason: FlowCloseReason,
    ) {
        let affected = self
            .accounts
            .ids_where(|a| a.flow == Some(flow) && a.phase == Phase::Registered);
        for id in affected {
            // the binding points at a dead flow: register again over a new one
            if let Some(acc) = self.accounts.get_mut(id) {
                acc.flow = None;
            }
            self.send_register(now, id, false);
        }
    }
}

/// The most `Service-Route` entries kept per account.
const MAX_SERVICE_ROUTE: usize = 8;

/// The lifetime the registrar granted our Contact: its `expires`
/// parameter in the 2xx, else the Expires header.
fn granted_expires(resp: &Message, contact_uri: &str) -> Option<u32> {
    let ours = siproam_sip::Uri::parse(contact_uri).ok();
    for c in resp.contacts().flatten() {
        if let Contact::Addr(a) = c {
            let matches = ours.as_ref().is_some_and(|o| o.equivalent(a.uri()));
            if matches {
                if let Some(e) = a.expires() {
                    return Some(e);
                }
            }
        }
    }
    resp.expires().and_then(Result::ok)
}

/// Private, loopback, link-local, CGNAT and unique-local addresses.
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate),
/// and whether it says the nonce we used was stale.
fn challenge_of(resp: &Message, code: u16) -> (Option<String>, bool) {
    let header = if code == 401 {
        HeaderName::WwwAuthenticate
    } else {
        HeaderName::ProxyAuthenticate
    };
    let challenge = resp.header(header).map(str::to_owned);
    let stale = challenge
        .as_deref()
        .and_then(|c| Challenge::parse(c).ok())
        .is_some_and(|c| c.stale());
    (challenge, stale)
}
