//! Where an endpoint keeps its registration accounts: the table that owns
//! them and gives them their ids. What an account is and how it registers
//! lives in `registration`; this module decides no protocol behaviour.

use std::collections::HashMap;

use crate::flow::FlowId;
use crate::registration::{Account, AccountId};

/// Every account of an endpoint.
#[derive(Debug, Default)]
pub(crate) struct Accounts {
    /// Boxed: the table keeps spare slots as it grows, and an account
    /// is large; a spare slot then costs a pointer, not an account.
    accounts: HashMap<u32, Box<Account>>,
    next: u32,
}

impl Accounts {
    /// Keeps a new account and gives it its id.
    pub(crate) fn insert(&mut self, account: Account) -> AccountId {
        self.next += 1;
        self.accounts.insert(self.next, Box::new(account));
        AccountId(self.next)
    }

    pub(crate) fn get(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id.0).map(|a| &**a)
    }

    pub(crate) fn get_mut(&mut self, id: AccountId) -> Option<&mut Account> {
        self.accounts.get_mut(&id.0).map(|a| &mut **a)
    }

    /// Forgets an account (unregistered, or given up).
    pub(crate) fn remove(&mut self, id: AccountId) -> Option<Account> {
        self.accounts.remove(&id.0).map(|a| *a)
    }

    pub(crate) fn contains(&self, id: AccountId) -> bool {
        self.accounts.contains_key(&id.0)
    }

    /// How many accounts exist.
    pub(crate) fn count(&self) -> usize {
        self.accounts.len()
    }

    /// Every account's id, in order.
    pub(crate) fn ids(&self) -> Vec<AccountId> {
        let mut v: Vec<AccountId> = self.accounts.keys().map(|k| AccountId(*k)).collect();
        v.sort();
        v
    }

    /// The accounts for which `pred` holds, in order of their ids.
    pub(crate) fn ids_where(&self, pred: impl Fn(&Account) -> bool) -> Vec<AccountId> {
        let mut v: Vec<AccountId> = self
            .accounts
            .iter()
            .filter(|(_, a)| pred(a))
            .map(|(k, _)| AccountId(*k))
            .collect();
        v.sort();
        v
    }

    /// The flows the accounts register over (kept when idle UDP flows
    /// are reclaimed).
    pub(crate) fn flows_in_use(&self) -> impl Iterator<Item = FlowId> + '_ {
        self.accounts.values().filter_map(|a| a.flow_in_use())
    }
}
