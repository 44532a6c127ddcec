//! The location store: where the registrar keeps each AoR's bindings —
//! the Contact, its lifetime, the instance and reg-id, and which edge or
//! flow holds it (the binding's `path`, RFC 3327, and the `flow` it was
//! registered on, RFC 5626) — behind a trait, so a deployment can keep
//! them elsewhere than in this process's memory.
//!
//! [`MemoryStore`] is the embedded default. A store shared by several
//! processes (the driver's Redis store) keeps a [`MemoryStore`] as its
//! local replica and is fed through the registrar's store operations
//! ([`crate::StoreOp`]) and [`crate::Registrar::apply_shared`]: lookups
//! stay synchronous and sans-IO.

use std::collections::HashMap;
use std::fmt;

use siproam_sip::Uri;

use crate::registrar::{contact_key, shrink};
use crate::Binding;

/// Where the registrar keeps bindings. Each AoR's set is kept in
/// registration order (a refresh moves a binding to the end), lapsed
/// bindings included until [`LocationStore::retain`] drops them; the
/// registrar filters by time.
pub trait LocationStore: fmt::Debug + Send {
    /// The bindings of an AoR (its location key, `user@host`), oldest
    /// registration first; empty when none.
    fn bindings(&self, aor: &str) -> &[Binding];

    /// Replaces an AoR's bindings; an empty set removes the AoR.
    fn replace(&mut self, aor: &str, bindings: Vec<Binding>);

    /// True when a binding's Contact has this address key (`user@host:port`,
    /// see the registrar's contact index).
    fn is_bound_contact(&self, contact_key: &str) -> bool;

    /// Calls `f` with every AoR and its bindings.
    fn for_each(&self, f: &mut dyn FnMut(&str, &[Binding]));

    /// Keeps only the bindings `keep` accepts; returns the AoRs whose set
    /// changed. Gives memory back after a flood.
    fn retain(&mut self, keep: &mut dyn FnMut(&Binding) -> bool) -> Vec<String>;

    /// The number of AoRs and indexed Contacts, with the capacities of
    /// their maps (for tests and metrics).
    fn sizes(&self) -> [(usize, usize); 2];
}

/// The in-memory location store: AoR → bindings, and how many bindings
/// name each Contact address (so the proxy tells a registered Contact in
/// one lookup).
#[derive(Debug, Default)]
pub struct MemoryStore {
    bindings: HashMap<String, Vec<Binding>>,
    contacts: HashMap<String, u32>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn index(contacts: &mut HashMap<String, u32>, b: &Binding) {
        if let Some(k) = Uri::parse(&b.contact).ok().and_then(|u| contact_key(&u)) {
            *contacts.entry(k).or_default() += 1;
        }
    }

    fn unindex(contacts: &mut HashMap<String, u32>, b: &Binding) {
        if let Some(k) = Uri::parse(&b.contact).ok().and_then(|u| contact_key(&u)) {
            if let Some(n) = contacts.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    contacts.remove(&k);
                }
            }
        }
    }
}

impl LocationStore for MemoryStore {
    fn bindings(&self, aor: &str) -> &[Binding] {
        self.bindings
            .get(aor)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn replace(&mut self, aor: &str, list: Vec<Binding>) {
        for b in &list {
            Self::index(&mut self.contacts, b);
        }
        let old = if list.is_empty() {
            self.bindings.remove(aor)
        } else {
            self.bindings.insert(aor.to_owned(), list)
        };
        for b in old.iter().flatten() {
            Self::unindex(&mut self.contacts, b);
        }
    }

    fn is_bound_contact(&self, contact_key: &str) -> bool {
        self.contacts.contains_key(contact_key)
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &[Binding])) {
        for (aor, list) in &self.bindings {
            f(aor, list);
        }
    }

    fn retain(&mut self, keep: &mut dyn FnMut(&Binding) -> bool) -> Vec<String> {
        let mut changed = Vec::new();
        for (aor, list) in &mut self.bindings {
            let before = list.len();
            list.retain(|b| keep(b));
            if list.len() != before {
                changed.push(aor.clone());
            }
        }
        if !changed.is_empty() {
            self.bindings.retain(|_, l| !l.is_empty());
            self.contacts.clear();
            for b in self.bindings.values().flatten() {
                Self::index(&mut self.contacts, b);
            }
        }
        shrink(&mut self.bindings);
        shrink(&mut self.contacts);
        changed
    }

    fn sizes(&self) -> [(usize, usize); 2] {
        [
            (self.bindings.len(), self.bindings.capacity()),
            (self.contacts.len(), self.contacts.capacity()),
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    // a binding's lifetime needs an instant; the store never reads one
    #![allow(clippy::disallowed_methods)]

    use std::time::{Duration, Instant};

    use siproam_core::FlowId;

    use super::*;

    fn binding(contact: &str, reg_id: Option<u32>, expires_at: Instant) -> Binding {
        Binding {
            contact: contact.to_owned(),
            expires_at,
            instance: reg_id.map(|_| "urn:uuid:1".to_owned()),
            reg_id,
            call_id: "c".to_owned(),
            cseq: 1,
            flow: Some(FlowId(7)),
            q: None,
            path: Vec::new(),
        }
    }

    /// The store through the trait, as the registrar sees it.
    fn store() -> Box<dyn LocationStore> {
        Box::new(MemoryStore::new())
    }

    #[test]
    fn replace_sets_an_aors_bindings_in_order_and_indexes_their_contacts() {
        let mut s = store();
        let t = Instant::now() + Duration::from_secs(60);
        s.replace(
            "alice@example.test",
            vec![
                binding("sip:alice@192.0.2.1:5060", Some(1), t),
                binding("sip:alice@192.0.2.2", Some(2), t),
            ],
        );
        let got: Vec<_> = s
            .bindings("alice@example.test")
            .iter()
            .map(|b| b.reg_id)
            .collect();
        assert_eq!(got, [Some(1), Some(2)]);
        // the default port is filled in
        assert!(s.is_bound_contact("alice@192.0.2.2:5060"));
        assert!(s.is_bound_contact("alice@192.0.2.1:5060"));
        assert!(s.bindings("bob@example.test").is_empty());
        // replaced: the old Contact is no longer indexed
        s.replace(
            "alice@example.test",
            vec![binding("sip:alice@192.0.2.3", Some(1), t)],
        );
        assert!(!s.is_bound_contact("alice@192.0.2.1:5060"));
        assert!(s.is_bound_contact("alice@192.0.2.3:5060"));
        // an empty set removes the AoR and its Contacts
        s.replace("alice@example.test", Vec::new());
        assert_eq!(s.sizes()[0].0, 0);
        assert_eq!(s.sizes()[1].0, 0);
    }

    #[test]
    fn two_aors_sharing_a_contact_keep_it_indexed_until_both_let_go() {
        let mut s = store();
        let t = Instant::now() + Duration::from_secs(60);
        s.replace("a@x", vec![binding("sip:u@192.0.2.9", None, t)]);
        s.replace("b@x", vec![binding("sip:u@192.0.2.9", None, t)]);
        s.replace("a@x", Vec::new());
        assert!(s.is_bound_contact("u@192.0.2.9:5060"));
        s.replace("b@x", Vec::new());
        assert!(!s.is_bound_contact("u@192.0.2.9:5060"));
    }

    #[test]
    fn retain_drops_what_it_rejects_and_names_the_aors_that_changed() {
        let mut s = store();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        s.replace(
            "a@x",
            vec![
                binding("sip:a@192.0.2.1", Some(1), now),
                binding("sip:a@192.0.2.2", Some(2), later),
            ],
        );
        s.replace("b@x", vec![binding("sip:b@192.0.2.3", None, later)]);
        s.replace("c@x", vec![binding("sip:c@192.0.2.4", None, now)]);
        let mut changed = s.retain(&mut |b| b.expires_at > now);
        changed.sort();
        assert_eq!(changed, ["a@x", "c@x"]);
        assert_eq!(s.bindings("a@x").len(), 1);
        assert!(s.bindings("c@x").is_empty());
        assert_eq!(s.sizes()[0].0, 2, "c@x is gone");
        assert!(!s.is_bound_contact("a@192.0.2.1:5060"));
        assert!(!s.is_bound_contact("c@192.0.2.4:5060"));
        assert!(s.is_bound_contact("b@192.0.2.3:5060"));
        let mut seen = Vec::new();
        s.for_each(&mut |aor, list| seen.push((aor.to_owned(), list.len())));
        seen.sort();
        assert_eq!(seen, [("a@x".to_owned(), 1), ("b@x".to_owned(), 1)]);
    }
}
