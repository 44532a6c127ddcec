//! Whether a request is addressed to us: the one test of a Request-URI
//! against our identities (RFC 3261 §8.2.2.1 leaves to the UAS which
//! Request-URIs it takes; a UA takes its own users).
//!
//! Ours are the users of our accounts — an AoR's user, the Contact's user
//! it registers, a temporary GRUU's — and of [`crate::Config::local_aors`]
//! (the identities of an agent that does not register: the user of the
//! Contact it advertises). Only the user part is compared (the host of a
//! Request-URI is whatever the last proxy put there: our address, a name
//! of the domain), as RFC 3261 §19.1.4 compares users: escapes decoded,
//! case kept. Owns no state; reads the accounts and the configuration.

use siproam_sip::{Message, Uri};

use crate::endpoint::Endpoint;

/// Whether `written` (a user part as written in a URI) is `user`
/// (unescaped).
pub(crate) fn user_is(written: &str, user: &[u8]) -> bool {
    // (a user part that does not parse is compared as written)
    match Uri::parse(&format!("sip:{written}@invalid")) {
        Ok(Uri::Sip(s)) => s.user_unescaped().is_some_and(|u| *u == *user),
        _ => written.as_bytes() == user,
    }
}

/// Whether the SIP URI `uri` has the user `user` (unescaped).
pub(crate) fn uri_user_is(uri: &str, user: &[u8]) -> bool {
    Uri::parse(uri)
        .ok()
        .as_ref()
        .and_then(Uri::as_sip)
        .and_then(|s| s.user_unescaped())
        .is_some_and(|u| *u == *user)
}

impl Endpoint {
    /// Whether `req`'s Request-URI names one of our users (a `sip:` or
    /// `sips:` URI with a user that is an account's or a local AoR's). A
    /// Request-URI with no user, or of another scheme, is not ours.
    pub(crate) fn addressed_to_us(&self, req: &Message) -> bool {
        let Some(uri) = req.request_uri() else {
            return false;
        };
        let Some(user) = uri.as_sip().and_then(|s| s.user_unescaped()) else {
            return false;
        };
        self.account_has_user(&user)
            || self
                .config
                .local_aors
                .iter()
                .any(|aor| uri_user_is(aor, &user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_compare_unescaped_and_case_sensitive() {
        assert!(user_is("bob", b"bob"));
        assert!(user_is("b%6Fb", b"bob"));
        assert!(!user_is("Bob", b"bob"));
        assert!(uri_user_is("sip:bob@example.test;transport=tcp", b"bob"));
        assert!(uri_user_is("sips:b%6fb@EXAMPLE.test", b"bob"));
        assert!(!uri_user_is("sip:example.test", b"bob"));
        assert!(!uri_user_is("tel:+15551234", b"+15551234"));
        assert!(!uri_user_is("not a uri", b"bob"));
    }
}
