//! Digest authentication (RFC 3261 §22, RFC 7616) and the pre-loaded
//! route set (RFC 3608) of every request an account sends — INVITE,
//! re-INVITE, UPDATE, BYE, PRACK and the application's requests alike:
//! everything started with `Endpoint::start_client_tx` goes through
//! [`Endpoint::prepare_account_request`], and a 401/407 to it reaches
//! [`Endpoint::auth_challenged`] before its owner. (REGISTER keeps its own
//! answer in `registration`.)
//!
//! A challenge is answered with a new transaction: our Via off, the next
//! CSeq (a dialog's next local CSeq for an in-dialog request), every
//! challenge of the response answered (several WWW-/Proxy-Authenticate, a
//! chain of proxies). The challenges are cached per realm and next hop on
//! the account and answered pre-emptively on its later requests to that
//! hop, `nc` counting up. A
//! `stale=true` challenge is answered again; a second challenge for a
//! realm this request already answered is a wrong password: the request
//! ends with that answer and [`Event::AuthenticationFailed`] says so,
//! once. At most [`MAX_AUTH_RETRIES`] answers per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use siproam_sip::digest::{self, Challenge, ClientInput};
use siproam_sip::{HeaderName, Message, Method};

use crate::endpoint::{Endpoint, Event, RequestId, Target, TxOwner};
use crate::flow::FlowId;
use crate::registration::AccountId;

/// The most times one request is sent again with new credentials.
pub(crate) const MAX_AUTH_RETRIES: u8 = 4;
/// The most realms whose challenge an account keeps.
const MAX_REALMS: usize = 8;

/// A challenge kept for pre-emptive answers.
#[derive(Debug, Clone)]
struct Cached {
    realm: String,
    /// The challenge as received.
    challenge: String,
    /// It came in a Proxy-Authenticate (answered in Proxy-Authorization).
    proxy: bool,
    /// The next hop the challenged request went to: only requests to it
    /// carry the answer pre-emptively (a digest response is not handed to
    /// every peer an account calls directly).
    hop: SocketAddr,
    /// The last `nc` used with its nonce.
    nc: u32,
}

/// The challenges each account answers, per realm.
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    by_account: HashMap<AccountId, Vec<Cached>>,
}

/// What a request of an account carries through its retries: kept on its
/// client transaction.
#[derive(Debug, Clone)]
pub(crate) struct AuthAttempt {
    account: AccountId,
    /// How many times it was sent again with new credentials.
    retries: u8,
    /// The realms this request answered a challenge of (a pre-emptive
    /// answer is not counted: its nonce may simply have expired).
    answered: Vec<String>,
}

/// One usable challenge of a response.
struct Fresh {
    realm: String,
    challenge: String,
    proxy: bool,
    stale: bool,
}

/// The usable digest challenges of a 401/407, one per realm (the first
/// whose algorithm we support, RFC 7616 §3.7).
fn challenges_of(resp: &Message) -> Vec<Fresh> {
    let mut out: Vec<Fresh> = Vec::new();
    for (header, proxy) in [
        (HeaderName::ProxyAuthenticate, true),
        (HeaderName::WwwAuthenticate, false),
    ] {
        for value in resp.header_values(header) {
            let Ok(ch) = Challenge::parse(value) else {
                continue;
            };
            let Some(realm) = ch.realm() else { continue };
            if !ch.is_digest()
                || ch.nonce().is_none()
                || ch.algorithm().is_err()
                || ch.preferred_qop().is_err()
                || out.iter().any(|f| f.realm == realm)
                || out.len() >= MAX_REALMS
            {
                continue;
            }
            out.push(Fresh {
                realm: realm.to_owned(),
                challenge: value.to_owned(),
                proxy,
                stale: ch.stale(),
            });
        }
    }
    out
}

impl AuthCache {
    fn learn(&mut self, account: AccountId, hop: SocketAddr, fresh: &[Fresh]) {
        let list = self.by_account.entry(account).or_default();
        for f in fresh {
            list.retain(|c| c.realm != f.realm || c.hop != hop);
            list.push(Cached {
                realm: f.realm.clone(),
                challenge: f.challenge.clone(),
                proxy: f.proxy,
                hop,
                nc: 0,
            });
        }
        while list.len() > MAX_REALMS {
            list.remove(0);
        }
    }

    /// How many challenges an account keeps answers for.
    pub(crate) fn realms(&self, account: AccountId) -> usize {
        self.by_account.get(&account).map_or(0, Vec::len)
    }
}

impl Endpoint {
    /// Readies a request an account sends (its From is the account's AoR)
    /// to next hop `hop` before its transaction starts: an out-of-dialog
    /// request to the account's first hop gets the account's route set
    /// when it carries no other (its outbound proxy, then the
    /// `Service-Route`, RFC 3608 §6.1), and every request the
    /// credentials cached for the account (pre-emptive, `nc` counting
    /// up). Returns what its transaction keeps to answer a challenge;
    /// `None` for a request of no account with a password (and for
    /// REGISTER, ACK, CANCEL).
    pub(crate) fn prepare_account_request(
        &mut self,
        request: &mut Message,
        hop: SocketAddr,
    ) -> Option<AuthAttempt> {
        let method = request.method()?;
        if matches!(method, Method::Register | Method::Ack | Method::Cancel) {
            return None;
        }
        let from = request.from().ok()?.uri().to_string();
        let account = self.account_for_from(&from)?;
        let out_of_dialog = request.to().ok().is_some_and(|t| t.tag().is_none());
        if out_of_dialog {
            let (proxy, service) = self.account_route_set(account, hop);
            let routes: Vec<String> = request
                .header_values(HeaderName::Route)
                .flat_map(siproam_sip::split_list)
                .map(|r| r.trim().to_owned())
                .collect();
            let only_proxy =
                routes.is_empty() || (routes.len() == 1 && routes.first() == proxy.as_ref());
            if only_proxy {
                let mut add: Vec<&String> = Vec::new();
                if routes.is_empty() {
                    add.extend(proxy.as_ref());
                }
                add.extend(service.iter());
                for r in add {
                    // an entry the message cannot take is left out
                    let _ = request.push_header("Route", r);
                }
            }
        }
        self.account_credentials(account)?;
        // forget accounts gone (bounded by the accounts alive)
        if self.auth.by_account.len() > self.account_count() {
            let accounts = &self.accounts;
            self.auth.by_account.retain(|a, _| accounts.contains(*a));
        }
        self.add_credentials(account, hop, request);
        Some(AuthAttempt {
            account,
            retries: 0,
            answered: Vec::new(),
        })
    }

    /// Writes the answers to every challenge of `account` cached for next
    /// hop `hop` into `request` (replacing any it carries), each with its
    /// next `nc`.
    fn add_credentials(&mut self, account: AccountId, hop: SocketAddr, request: &mut Message) {
        let Some((user, password)) = self.account_credentials(account) else {
            return;
        };
        if !self
            .auth
            .by_account
            .get(&account)
            .is_some_and(|l| l.iter().any(|c| c.hop == hop))
        {
            return;
        }
        let _ = request.remove_header("Authorization");
        let _ = request.remove_header("Proxy-Authorization");
        let method = request
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let uri = request.request_uri_str().unwrap_or_default().to_owned();
        let body = request.body().clone();
        let count = self.auth.realms(account);
        for i in 0..count {
            let cnonce = self.rng.token(16);
            let Some(cached) = self
                .auth
                .by_account
                .get_mut(&account)
                .and_then(|l| l.get_mut(i))
                .filter(|c| c.hop == hop)
            else {
                continue;
            };
            cached.nc = cached.nc.saturating_add(1);
            let Ok(ch) = Challenge::parse(&cached.challenge) else {
                continue;
            };
            let input = ClientInput {
                username: &user,
                password: &password,
                method: &method,
                uri: &uri,
                cnonce: &cnonce,
                nc: cached.nc,
                body: &body,
            };
            if let Ok(value) = digest::respond(&ch, &input) {
                let name = if cached.proxy {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                };
                let _ = request.push_header(name, &value);
            }
        }
    }

    /// A 401/407 to a request of an account (`attempt`, taken off its
    /// transaction `old`, which went over `flow`): answered with a new
    /// transaction for the same owner when it can be; true then, and the
    /// owner does not see the challenge. False leaves the answer to the
    /// owner (no usable challenge, a wrong password — reported once —, or
    /// the retries spent).
    pub(crate) fn auth_challenged(
        &mut self,
        now: Instant,
        owner: TxOwner,
        (old, flow, request): (u64, FlowId, Bytes),
        attempt: Option<AuthAttempt>,
        resp: &Message,
    ) -> bool {
        let Some(mut attempt) = attempt else {
            return false;
        };
        if matches!(owner, TxOwner::Account(_) | TxOwner::Abandoned) {
            return false;
        }
        let fresh = challenges_of(resp);
        if fresh.is_empty() || self.account_credentials(attempt.account).is_none() {
            return false;
        }
        let Ok(mut msg) = Message::parse(request) else {
            return false;
        };
        let Some(target) = self.flows.get(flow).map(|f| Target {
            transport: f.transport,
            remote: f.remote,
            local: f.local,
            server_name: f.server_names.first().copied(),
        }) else {
            return false;
        };
        // challenged again for a realm we just answered, the nonce not
        // stale: the credentials are wrong
        if let Some(bad) = fresh
            .iter()
            .find(|f| !f.stale && attempt.answered.contains(&f.realm))
        {
            let realm = bad.realm.clone();
            self.auth
                .by_account
                .entry(attempt.account)
                .or_default()
                .retain(|c| c.realm != realm || c.hop != target.remote);
            let user = self.account_user(attempt.account).unwrap_or_default();
            self.events.push_back(Event::AuthenticationFailed {
                account: attempt.account,
                user,
                realm,
                method: msg.cseq().method.as_str().to_owned(),
            });
            return false;
        }
        if attempt.retries >= MAX_AUTH_RETRIES {
            return false;
        }
        if let TxOwner::Call(call) = owner {
            if self.call_gave_up_invite(call, msg.cseq().method.as_str()) {
                return false;
            }
        }
        self.auth.learn(attempt.account, target.remote, &fresh);
        for f in &fresh {
            if !attempt.answered.contains(&f.realm) {
                attempt.answered.push(f.realm.clone());
            }
        }
        attempt.retries += 1;
        // the next CSeq: the dialog's for a call's request
        let cseq = msg.cseq();
        let method = cseq.method.as_str().to_owned();
        let next = match owner {
            TxOwner::Call(call) => self.call_next_cseq(call),
            TxOwner::Subscription(sub) => self.subscription_next_cseq(sub),
            TxOwner::Transfer(t) => self.transfer_next_cseq(t, &method),
            _ => None,
        }
        .unwrap_or_else(|| cseq.seq.saturating_add(1));
        let edited = (|| -> Result<(), siproam_sip::EditError> {
            msg.remove_header("Via")?;
            msg.set_header("CSeq", &format!("{next} {method}"))?;
            Ok(())
        })();
        if edited.is_err() {
            return false;
        }
        self.add_credentials(attempt.account, target.remote, &mut msg);
        if self.start_tx_with(now, msg, target, owner).is_err() {
            return false;
        }
        let Some(new) = self.last_request_id() else {
            return false;
        };
        self.set_client_auth(new, attempt);
        if let TxOwner::Call(call) = owner {
            self.call_request_resent(call, RequestId(old), new);
        }
        true
    }
}
