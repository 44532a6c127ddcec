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
        let old = self
            .bindings
            .get(aor)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // the Contact index changes only by what differs: a refresh (the
        // same Contacts again, the common case) parses no URI
        let mut matched = vec![false; old.len()];
        for b in &list {
            let same = old
                .iter()
                .zip(matched.iter_mut())
                .find(|(o, m)| !**m && o.contact == b.contact);
            match same {
                Some((_, m)) => *m = true,
                None => Self::index(&mut self.contacts, b),
            }
        }
        for (o, m) in old.iter().zip(&matched) {
            if !m {
                Self::unindex(&mut self.contacts, o);
            }
        }
        if list.is_empty() {
            self.bindings.remove(aor);
        } else if let Some(slot) = self.bindings.get_mut(aor) {
            *slot = list;
        } else {
            self.bindings.insert(aor.to_owned(), list);
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
        let contacts = &mut self.contacts;
        for (aor, list) in &mut self.bindings {
            let before = list.len();
            // only what goes is taken out of the Contact index (a rebuild
            // parsed every Contact of the store on each purge)
            list.retain(|b| {
                let kept = keep(b);
                if !kept {
                    Self::unindex(contacts, b);
                }
                kept
            });
            if list.len() != before {
                changed.push(aor.clone());
            }
        }
        if !changed.is_empty() {
            self.bindings.retain(|_, l| !l.is_empty());
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

/// One binding of a shared record as written: its expiry on the wall
/// clock and its flow with the process that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SharedLine {
    expires_unix: u64,
    flow: Option<(u64, FlowId)>,
    binding: Binding,
}

impl SharedLine {
    fn from_binding(b: &Binding, now: Instant, unix_ms: u64, origin: u64) -> SharedLine {
        let left = u64::try_from(b.expires_at.saturating_duration_since(now).as_millis())
            .unwrap_or(u64::MAX);
        SharedLine {
            expires_unix: unix_ms.saturating_add(left),
            flow: b.flow.map(|f| (origin, f)),
            binding: b.clone(),
        }
    }

    fn write(&self, out: &mut String) {
        let b = &self.binding;
        let opt = |v: Option<String>| v.unwrap_or_default();
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t",
            self.expires_unix,
            opt(b.reg_id.map(|r| r.to_string())),
            opt(b.q.map(|q| q.to_string())),
            b.cseq,
            opt(self.flow.map(|(o, f)| format!("{o:x}:{}", f.0))),
        ));
        escape(out, b.instance.as_deref().unwrap_or_default());
        out.push('\t');
        escape(out, &b.contact);
        out.push('\t');
        escape(out, &b.call_id);
        for p in &b.path {
            out.push('\t');
            escape(out, p);
        }
        out.push('\n');
    }

    /// Reads binding `line_no` (1-based); a flow without an origin of its
    /// own is the record's (`header_origin`). The binding's `expires_at`
    /// is `now` (the caller sets it) and its flow is `None`.
    fn parse(
        line: &str,
        line_no: usize,
        header_origin: u64,
        now: Instant,
    ) -> Result<SharedLine, SharedRecordError> {
        let bad = SharedRecordError::Binding { line: line_no };
        let mut f = line.split('\t');
        let mut field = || f.next().ok_or(bad.clone());
        let expires_unix: u64 = field()?.parse().map_err(|_| bad.clone())?;
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
        let flow = match field()? {
            "" => None,
            f => match f.split_once(':') {
                Some((o, id)) => Some((
                    u64::from_str_radix(o, 16).map_err(|_| bad.clone())?,
                    FlowId(id.parse().map_err(|_| bad.clone())?),
                )),
                None => Some((header_origin, FlowId(f.parse().map_err(|_| bad.clone())?))),
            },
        };
        let text = |s: &str| unescape(s).ok_or(bad.clone());
        let instance = Some(text(field()?)?).filter(|i| !i.is_empty());
        let contact = text(field()?)?;
        let call_id = text(field()?)?;
        let path = f.map(text).collect::<Result<Vec<_>, _>>()?;
        if contact.is_empty() {
            return Err(bad);
        }
        Ok(SharedLine {
            expires_unix,
            flow,
            binding: Binding {
                contact,
                expires_at: now,
                instance,
                reg_id,
                call_id,
                cseq,
                flow: None,
                q,
                path,
            },
        })
    }
}

/// Reads a record's lines (at most `cap`): the header's origin and the
/// lines still live at `unix_ms`.
fn parse_shared(
    text: &str,
    now: Instant,
    unix_ms: u64,
    cap: usize,
) -> Result<Vec<SharedLine>, SharedRecordError> {
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
        let l = SharedLine::parse(line, i + 1, theirs, now)?;
        if l.expires_unix > unix_ms {
            out.push(l);
        }
    }
    Ok(out)
}

fn write_shared(lines: &[SharedLine], origin: u64) -> String {
    let mut out = format!("{RECORD_MAGIC} {origin:x}\n");
    for l in lines {
        l.write(&mut out);
    }
    out
}

/// An AoR's bindings as a text record for a store shared by several
/// processes: lifetimes as absolute wall-clock milliseconds (`unix_ms` is
/// the wall clock at `now`, both from the driver), each flow with the id
/// of the process whose flow it is (`origin`: another process cannot use
/// it).
pub fn encode_shared(bindings: &[Binding], now: Instant, unix_ms: u64, origin: u64) -> String {
    let lines: Vec<SharedLine> = bindings
        .iter()
        .map(|b| SharedLine::from_binding(b, now, unix_ms, origin))
        .collect();
    write_shared(&lines, origin)
}

/// Reads a record [`encode_shared`] (or [`merge_shared`]) wrote: the
/// bindings still live at `now` (`unix_ms` the wall clock then), each
/// flow kept only when it is this process's own (`origin`). At most `cap`
/// bindings.
pub fn decode_shared(
    text: &str,
    now: Instant,
    unix_ms: u64,
    origin: u64,
    cap: usize,
) -> Result<Vec<Binding>, SharedRecordError> {
    Ok(parse_shared(text, now, unix_ms, cap)?
        .into_iter()
        .map(|l| {
            let mut b = l.binding;
            b.expires_at = now + Duration::from_millis(l.expires_unix.saturating_sub(unix_ms));
            b.flow = l.flow.filter(|(o, _)| *o == origin).map(|(_, f)| f);
            b
        })
        .collect())
}

/// True when two bindings are the same registration: the same instance
/// and reg-id, or (without an instance) the same Contact URI.
fn same_identity(a: &Binding, b: &Binding) -> bool {
    match (&a.instance, &b.instance) {
        (Some(x), Some(y)) => x == y && a.reg_id == b.reg_id,
        (None, None) => {
            a.contact == b.contact
                || matches!(
                    (Uri::parse(&a.contact), Uri::parse(&b.contact)),
                    (Ok(x), Ok(y)) if x.equivalent(&y)
                )
        }
        _ => false,
    }
}

/// A merged record ([`merge_shared`]) and how long its key should live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedRecord {
    /// The record to store.
    pub text: String,
    /// Until its last binding lapses.
    pub lifetime: Duration,
}

/// Applies one process's change of an AoR's bindings — from `before` to
/// `after`, both as that process saw them — to the record in the shared
/// store (`current`; another process may have changed it meanwhile):
/// the registrations of `before` that `after` lacks go, those of `after`
/// new or changed since `before` replace theirs (moving to the end), and
/// every other binding of `current` stays as its writer wrote it (its
/// flow still naming its own process). Lapsed bindings go; beyond `cap`
/// the oldest go. `None`: no binding left (delete the key). A `current`
/// that cannot be read is replaced (the error is returned with the
/// result for the caller to log).
pub fn merge_shared(
    current: Option<&str>,
    before: &[Binding],
    after: &[Binding],
    now: Instant,
    unix_ms: u64,
    origin: u64,
    cap: usize,
) -> (Option<MergedRecord>, Option<SharedRecordError>) {
    let (mut lines, error) = match current.map(|t| parse_shared(t, now, unix_ms, usize::MAX)) {
        None => (Vec::new(), None),
        Some(Ok(l)) => (l, None),
        Some(Err(e)) => (Vec::new(), Some(e)),
    };
    for gone in before
        .iter()
        .filter(|b| !after.iter().any(|a| same_identity(a, b)))
    {
        lines.retain(|l| !same_identity(&l.binding, gone));
    }
    for changed in after.iter().filter(|a| !before.contains(a)) {
        lines.retain(|l| !same_identity(&l.binding, changed));
        if changed.expires_at > now {
            lines.push(SharedLine::from_binding(changed, now, unix_ms, origin));
        }
    }
    let excess = lines.len().saturating_sub(cap.max(1));
    lines.drain(..excess);
    let last = lines.iter().map(|l| l.expires_unix).max();
    let merged = last.map(|last| MergedRecord {
        text: write_shared(&lines, origin),
        lifetime: Duration::from_millis(last.saturating_sub(unix_ms).max(1)),
    });
    (merged, error)
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

    /// The Contact index counts each Contact once per binding, through
    /// refreshes (the same Contacts again), partial changes and two AoRs
    /// sharing one Contact address.
    #[test]
    fn the_contact_index_follows_refreshes_and_shared_contacts() {
        let mut s = store();
        let t = Instant::now() + Duration::from_secs(60);
        let one = || binding("sip:x@192.0.2.1", Some(1), t);
        let two = || binding("sip:x@192.0.2.2", Some(2), t);
        s.replace("a@x", vec![one(), two()]);
        s.replace("b@x", vec![one()]);
        // a refresh in another order
        s.replace("a@x", vec![two(), one()]);
        s.replace("a@x", vec![two(), one()]);
        assert_eq!(s.sizes()[1].0, 2);
        // a drops the shared Contact: b still holds it
        s.replace("a@x", vec![two()]);
        assert!(s.is_bound_contact("x@192.0.2.1:5060"));
        s.replace("b@x", Vec::new());
        assert!(!s.is_bound_contact("x@192.0.2.1:5060"));
        assert!(s.is_bound_contact("x@192.0.2.2:5060"));
        // the same Contact twice in one set (two instances behind one
        // address) counts twice
        s.replace("a@x", vec![two(), two()]);
        s.replace("a@x", vec![two()]);
        assert!(s.is_bound_contact("x@192.0.2.2:5060"));
        s.replace("a@x", Vec::new());
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

    fn flow_binding(now: Instant, reg_id: u32, flow: u64, secs: u64) -> Binding {
        Binding {
            contact: format!("sip:alice@192.0.2.{reg_id};ob"),
            expires_at: now + Duration::from_secs(secs),
            instance: Some("urn:uuid:a".to_owned()),
            reg_id: Some(reg_id),
            call_id: format!("c{reg_id}"),
            cseq: 1,
            flow: Some(FlowId(flow)),
            q: None,
            path: vec![format!("<sip:tok@edge{reg_id};lr;ob>")],
        }
    }

    /// Two registrars each add a flow of the same instance before either
    /// saw the other's: both stay (a whole-record write lost one).
    #[test]
    fn a_merge_keeps_what_another_process_wrote_meanwhile() {
        let now = Instant::now();
        let (p, q) = (7, 8);
        let theirs = encode_shared(&[flow_binding(now, 2, 5, 300)], now, 1_000_000, q);
        let mine = [flow_binding(now, 1, 3, 300)];
        let (merged, err) = merge_shared(Some(&theirs), &[], &mine, now, 1_000_000, p, 16);
        assert_eq!(err, None);
        let merged = merged.unwrap();
        assert_eq!(merged.lifetime, Duration::from_secs(300));
        // each process reads its own flow back, and only its own
        let at_p = decode_shared(&merged.text, now, 1_000_000, p, 16).unwrap();
        let at_q = decode_shared(&merged.text, now, 1_000_000, q, 16).unwrap();
        assert_eq!(
            at_p.iter().map(|b| (b.reg_id, b.flow)).collect::<Vec<_>>(),
            [(Some(2), None), (Some(1), Some(FlowId(3)))]
        );
        assert_eq!(
            at_q.iter().map(|b| (b.reg_id, b.flow)).collect::<Vec<_>>(),
            [(Some(2), Some(FlowId(5))), (Some(1), None)]
        );
        // p then forgets its flow: q's stays
        let (merged, _) = merge_shared(Some(&merged.text), &mine, &[], now, 1_000_000, p, 16);
        let left = decode_shared(&merged.unwrap().text, now, 1_000_000, q, 16).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].flow, Some(FlowId(5)));
        // and q forgets its own: nothing left, the key goes
        let (merged, _) = merge_shared(
            Some(&theirs),
            &[flow_binding(now, 2, 5, 300)],
            &[],
            now,
            1_000_000,
            q,
            16,
        );
        assert_eq!(merged, None);
    }

    #[test]
    fn a_merge_moves_a_refresh_to_the_end_and_drops_the_lapsed_and_the_excess() {
        let now = Instant::now();
        let old = [
            flow_binding(now, 1, 1, 300),
            flow_binding(now, 2, 2, 300),
            flow_binding(now, 3, 3, 5),
        ];
        let current = encode_shared(&old, now, 1_000_000, 7);
        let refreshed = flow_binding(now, 1, 1, 600);
        let after = [old[1].clone(), old[2].clone(), refreshed.clone()];
        // 10 s later: reg-id 3 has lapsed
        let (merged, _) = merge_shared(Some(&current), &old, &after, now, 1_010_000, 7, 16);
        let back = decode_shared(&merged.unwrap().text, now, 1_010_000, 7, 16).unwrap();
        assert_eq!(
            back.iter().map(|b| b.reg_id).collect::<Vec<_>>(),
            [Some(2), Some(1)]
        );
        // a cap of one keeps the newest
        let (merged, _) = merge_shared(Some(&current), &old, &after, now, 1_000_000, 7, 1);
        let back = decode_shared(&merged.unwrap().text, now, 1_000_000, 7, 16).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].reg_id, Some(1));
        // an unreadable record is replaced, and said so
        let (merged, err) = merge_shared(Some("junk"), &[], &after, now, 1_000_000, 7, 16);
        assert_eq!(err, Some(SharedRecordError::Header));
        assert_eq!(
            decode_shared(&merged.unwrap().text, now, 1_000_000, 7, 16)
                .unwrap()
                .len(),
            3
        );
    }
}
