//! Who may subscribe to what we serve (RFC 3856 §6.6, RFC 6665
//! §4.2.1.1): [`crate::Config::watchers`] against a new SUBSCRIBE's
//! `From`. An entry is `*` (anyone) or a SIP URI; a watcher is on the
//! list when its `From` URI has the same scheme (`sip`, `sips`), the same
//! user (RFC 3261 §19.1.4: escapes decoded, case-sensitive) and the same
//! host (case-insensitive) as an entry — its port, parameters and display
//! name are not looked at. An empty list lets nobody in. Owns no state.

use siproam_sip::{Host, SipUri, Uri};

/// The entry that lets anyone subscribe.
pub const ANYONE: &str = "*";

/// Whether `from` (a SUBSCRIBE's `From` URI) may subscribe, by
/// `watchers`.
pub(crate) fn may_watch(watchers: &[String], from: &Uri<'_>) -> bool {
    let from = from.as_sip();
    watchers.iter().any(|w| {
        let w = w.trim();
        w == ANYONE
            || from.is_some_and(|f| {
                Uri::parse(w)
                    .ok()
                    .as_ref()
                    .and_then(Uri::as_sip)
                    .is_some_and(|entry| same_watcher(entry, f))
            })
    })
}

/// Scheme, user and host alike.
fn same_watcher(a: &SipUri<'_>, b: &SipUri<'_>) -> bool {
    a.is_secure() == b.is_secure()
        && a.user_unescaped() == b.user_unescaped()
        && match (a.host(), b.host()) {
            (Host::Name(x), Host::Name(y)) => x.eq_ignore_ascii_case(y),
            (x, y) => x == y,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn may(list: &[&str], from: &str) -> bool {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        Uri::parse(from).is_ok_and(|u| may_watch(&list, &u))
    }

    #[test]
    fn scheme_user_and_host_decide() {
        let l = ["sip:alice@Example.TEST"];
        assert!(may(&l, "sip:alice@example.test"));
        assert!(may(&l, "sip:alice@example.test:5070;transport=tcp"));
        assert!(may(&l, "sip:%61lice@example.test"));
        assert!(!may(&l, "sip:Alice@example.test"));
        assert!(!may(&l, "sips:alice@example.test"));
        assert!(!may(&l, "sip:alice@example.org"));
        assert!(!may(&l, "sip:example.test"));
        assert!(!may(&l, "tel:+15551234"));
        assert!(may(&["sip:[2001:db8::1]"], "sip:[2001:DB8:0::1]:5060"));
    }

    #[test]
    fn a_star_lets_anyone_in_and_an_empty_list_nobody() {
        assert!(may(&["*"], "sip:anyone@anywhere.example"));
        assert!(may(&["*"], "tel:+15551234"));
        assert!(!may(&[], "sip:alice@example.test"));
        assert!(!may(&["not a uri"], "sip:alice@example.test"));
    }
}
