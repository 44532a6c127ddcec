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
use std::time::{Duration, Instant};

use siproam_core::FlowId;
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

    fn replace(&mut self, aor: &str, mut list: Vec<Binding>) {
        // kept for the binding's lifetime: no spare room (a list built by
        // pushing has room for four, 432 bytes a binding for nothing)
        list.shrink_to_fit();
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

/// The first word of a shared record (its format's version).
const RECORD_MAGIC: &str = "siproam-loc/1";

/// Why a shared record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SharedRecordError {
    /// The first line is not `siproam-loc/1 ORIGIN`.
    #[error("not a siproam location record")]
    Header,
    /// A binding line lacks a field or has a bad number.
    #[error("binding {line}: malformed")]
    Binding {
        /// 1-based binding number.
        line: usize,
    },
    /// More bindings than the registrar keeps for one AoR.
    #[error("more than {cap} bindings")]
    TooMany {
        /// The cap.
        cap: usize,
    },
}

fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// An AoR's bindings as a text record for a store shared by several
/// processes: lifetimes as absolute wall-clock milliseconds (`unix_ms` is
/// the wall clock at `now`, both from the driver), the flow with the id of
/// the process whose flow it is (`origin`: another process cannot use it).
pub fn encode_shared(bindings: &[Binding], now: Instant, unix_ms: u64, origin: u64) -> String {
    let mut out = format!("{RECORD_MAGIC} {origin:x}\n");
    for b in bindings {
        let left = u64::try_from(b.expires_at.saturating_duration_since(now).as_millis())
            .unwrap_or(u64::MAX);
        let opt = |v: Option<String>| v.unwrap_or_default();
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t",
            unix_ms.saturating_add(left),
            opt(b.reg_id.map(|r| r.to_string())),
            opt(b.q.map(|q| q.to_string())),
            b.cseq,
            opt(b.flow.map(|f| f.0.to_string())),
        ));
        escape(&mut out, b.instance.as_deref().unwrap_or_default());
        out.push('\t');
        escape(&mut out, &b.contact);
        out.push('\t');
        escape(&mut out, &b.call_id);
        for p in &b.path {
            out.push('\t');
            escape(&mut out, p);
        }
        out.push('\n');
    }
    out
}

/// Reads a record [`encode_shared`] wrote: the bindings still live at
/// `now` (`unix_ms` the wall clock then), their flow kept only when the
/// record is this process's own (`origin`). At most `cap` bindings.
pub fn decode_shared(
    text: &str,
    now: Instant,
    unix_ms: u64,
    origin: u64,
    cap: usize,
) -> Result<Vec<Binding>, SharedRecordError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or(SharedRecordError::Header)?;
    let theirs = header
        .strip_prefix(RECORD_MAGIC)
        .and_then(|r| r.strip_prefix(' '))
        .and_then(|o| u64::from_str_radix(o, 16).ok())
        .ok_or(SharedRecordError::Header)?;
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        if i >= cap {
            return Err(SharedRecordError::TooMany { cap });
        }
        let bad = SharedRecordError::Binding { line: i + 1 };
        let mut f = line.split('\t');
        let mut field = || f.next().ok_or(bad.clone());
        let expires: u64 = field()?.parse().map_err(|_| bad.clone())?;
        let num = |s: &str| -> Result<Option<u64>, SharedRecordError> {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| bad.clone())
            }
        };
        let reg_id = num(field()?)?
            .map(u32::try_from)
            .transpose()
            .map_err(|_| bad.clone())?;
        let q = num(field()?)?
            .map(u16::try_from)
            .transpose()
            .map_err(|_| bad.clone())?;
        let cseq = u32::try_from(num(field()?)?.ok_or(bad.clone())?).map_err(|_| bad.clone())?;
        let flow = num(field()?)?.map(FlowId).filter(|_| theirs == origin);
        let text = |s: &str| unescape(s).ok_or(bad.clone());
        let instance = Some(text(field()?)?).filter(|i| !i.is_empty());
        let contact = text(field()?)?;
        let call_id = text(field()?)?;
        let path = f.map(text).collect::<Result<Vec<_>, _>>()?;
        if contact.is_empty() {
            return Err(bad);
        }
        let Some(left) = expires.checked_sub(unix_ms).filter(|l| *l > 0) else {
            continue; // lapsed
        };
        out.push(Binding {
            contact,
            expires_at: now + Duration::from_millis(left),
            instance,
            reg_id,
            call_id,
            cseq,
            flow,
            q,
            path,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    // a binding's lifetime needs an instant; the store never reads one
    #![allow(clippy::disallowed_methods)]

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

    /// A binding's own size (the benchmark's bar is 700 bytes per binding
    /// in all, strings and maps included): 144 bytes on 64-bit targets,
    /// 24 fewer than before the store became a trait.
    #[test]
    fn a_binding_stays_compact() {
        if cfg!(target_pointer_width = "64") {
            assert!(
                std::mem::size_of::<Binding>() <= 144,
                "{}",
                std::mem::size_of::<Binding>()
            );
        }
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

#[cfg(test)]
mod record_tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    #![allow(clippy::disallowed_methods)]

    use super::*;

    fn sample(now: Instant) -> Vec<Binding> {
        vec![
            Binding {
                contact: "sip:alice@192.0.2.1:5060;ob".to_owned(),
                expires_at: now + Duration::from_secs(300),
                instance: Some("urn:uuid:1\tweird\\".to_owned()),
                reg_id: Some(2),
                call_id: "cid@host".to_owned(),
                cseq: 7,
                flow: Some(FlowId(42)),
                q: Some(500),
                path: vec![
                    "<sip:edge.example.test;lr;ob>".to_owned(),
                    "<sip:p2;lr>".to_owned(),
                ],
            },
            Binding {
                contact: "sip:alice@192.0.2.2".to_owned(),
                expires_at: now + Duration::from_secs(60),
                instance: None,
                reg_id: None,
                call_id: "c2".to_owned(),
                cseq: 1,
                flow: None,
                q: None,
                path: Vec::new(),
            },
        ]
    }

    #[test]
    fn a_record_reads_back_in_its_own_process_with_its_flows() {
        let now = Instant::now();
        let b = sample(now);
        let text = encode_shared(&b, now, 1_000_000, 7);
        let back = decode_shared(&text, now, 1_000_000, 7, 16).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn another_process_reads_it_without_flows_and_with_lifetimes_on_its_clock() {
        let now = Instant::now();
        let text = encode_shared(&sample(now), now, 1_000_000, 7);
        // read 10 s later by a process whose Instant base differs
        let there = now + Duration::from_secs(1000);
        let back = decode_shared(&text, there, 1_010_000, 8, 16).unwrap();
        assert_eq!(back.len(), 2);
        assert!(back.iter().all(|b| b.flow.is_none()));
        assert_eq!(back[0].expires_at, there + Duration::from_secs(290));
        assert_eq!(back[0].path.len(), 2);
        assert_eq!(back[0].instance.as_deref(), Some("urn:uuid:1\tweird\\"));
        // 70 s later the 60 s binding has lapsed
        let back = decode_shared(&text, there, 1_070_000, 8, 16).unwrap();
        assert_eq!(back.len(), 1);
    }

    #[test]
    fn malformed_or_oversized_records_are_refused() {
        let now = Instant::now();
        assert_eq!(
            decode_shared("hello", now, 0, 1, 16),
            Err(SharedRecordError::Header)
        );
        assert_eq!(
            decode_shared("siproam-loc/1 7\n12\tx", now, 0, 1, 16),
            Err(SharedRecordError::Binding { line: 1 })
        );
        assert_eq!(
            decode_shared("siproam-loc/1 7\n99\t\t\t1\t\t\t\tc", now, 0, 1, 16),
            Err(SharedRecordError::Binding { line: 1 }),
            "no contact"
        );
        let text = encode_shared(&sample(now), now, 0, 7);
        assert_eq!(
            decode_shared(&text, now, 0, 7, 1),
            Err(SharedRecordError::TooMany { cap: 1 })
        );
    }
}
