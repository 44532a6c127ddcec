//! `;name=value` parameter lists, shared by URIs and header values.
//!
//! A [`Params`] is a borrowed view over the parameter text, starting at the
//! first `;` (or empty). It
//! never allocates; quoted values keep their escapes (see
//! [`Params::get`]).

use crate::chars::{find_unquoted, is_token, trim_lws};

/// A borrowed list of parameters: the text from the first `;` on.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Params<'a> {
    text: &'a str,
}

impl std::fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Params<'a> {
    /// Wraps the text from the first `;` on (an empty string for none).
    pub fn new(text: &'a str) -> Self {
        Params { text }
    }

    /// The raw text, with the leading `;`.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        trim_lws(self.text).is_empty()
    }

    /// Iterates `(name, value)`; `value` is `None` for a bare flag such as
    /// `lr` or `rport`. Names and values are trimmed of LWS; quoted values
    /// keep their quotes here.
    pub fn iter(&self) -> ParamsIter<'a> {
        let t = trim_lws(self.text);
        ParamsIter {
            rest: t.strip_prefix(';'),
        }
    }

    /// Looks a parameter up by name, case-insensitively.
    /// `Some(None)` is a flag without value; a quoted value comes back
    /// without its quotes (escapes inside are not decoded).
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.map(unquote))
    }

    /// The value of a parameter, flattening "absent" and "flag".
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).flatten()
    }

    /// True when the parameter is present, with or without a value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Checks the list against `name_ok` / `value_ok`; an empty element
    /// (`;;`) is an error.
    pub(crate) fn validate(
        &self,
        name_ok: impl Fn(&str) -> bool,
        value_ok: impl Fn(&str) -> bool,
    ) -> bool {
        let t = trim_lws(self.text);
        if t.is_empty() {
            return true;
        }
        t.starts_with(';')
            && self
                .iter()
                .all(|(n, v)| name_ok(n) && v.is_none_or(&value_ok))
    }
}

/// Removes surrounding double quotes, if both are there.
pub(crate) fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Iterator over a [`Params`] list.
#[derive(Debug, Clone)]
pub struct ParamsIter<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for ParamsIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        let text = self.rest?;
        let (item, rest) = match find_unquoted(text, 0, false, b';') {
            Some(i) => (text.get(..i)?, text.get(i + 1..)),
            None => (text, None),
        };
        self.rest = rest;
        Some(match item.bytes().position(|b| b == b'=') {
            Some(eq) => (
                trim_lws(item.get(..eq).unwrap_or("")),
                Some(trim_lws(item.get(eq + 1..).unwrap_or(""))),
            ),
            None => (trim_lws(item), None),
        })
    }
}

/// A generic header parameter value: token, host-like text, or a quoted
/// string (RFC 3261 `gen-value`).
pub(crate) fn is_gen_value(v: &str) -> bool {
    if v.starts_with('"') {
        return crate::chars::quoted_string_len(v) == Some(v.len());
    }
    if let Some(inner) = v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    // `received` carries a bare IPv6 address (RFC 3261 via-received)
    (!v.is_empty() && v.bytes().all(is_token))
        || (v.contains(':') && v.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Builds a new parameter text (from the first `;` on) where `name` is set
/// to `value` (`Some(None)` for a flag) or removed (`None`). The position
/// of an existing parameter is kept; a new one goes at the end. Other
/// parameters stay as written.
pub(crate) fn edit(text: &str, name: &str, value: Option<Option<&str>>) -> String {
    let text = trim_lws(text);
    let text = text.strip_prefix(';').unwrap_or(text);
    let mut out = String::with_capacity(text.len() + name.len() + 16);
    let mut done = false;
    let push = |out: &mut String, n: &str, v: Option<&str>| {
        out.push(';');
        out.push_str(n);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    };
    if !text.is_empty() {
        let mut rest = Some(text);
        while let Some(t) = rest {
            let (item, next) = match find_unquoted(t, 0, false, b';') {
                Some(i) => (t.get(..i).unwrap_or(""), t.get(i + 1..)),
                None => (t, None),
            };
            rest = next;
            let pname = trim_lws(item.split('=').next().unwrap_or(""));
            if pname.eq_ignore_ascii_case(name) {
                if let (Some(v), false) = (value, done) {
                    push(&mut out, name, v);
                }
                done = true;
            } else {
                out.push(';');
                out.push_str(item);
            }
        }
    }
    if let (Some(v), false) = (value, done) {
        push(&mut out, name, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterate_and_get() {
        let p = Params::new(";branch=z9hG4bK1 ; rport ;received = 1.2.3.4;x=\"a;b\"");
        let v: Vec<_> = p.iter().collect();
        assert_eq!(v.len(), 4);
        assert_eq!(p.get("BRANCH"), Some(Some("z9hG4bK1")));
        assert_eq!(p.get("rport"), Some(None));
        assert_eq!(p.value("received"), Some("1.2.3.4"));
        assert_eq!(p.value("x"), Some("a;b"));
        assert_eq!(p.get("ttl"), None);
        assert!(Params::new("").is_empty());
        assert_eq!(Params::new("").iter().count(), 0);
        assert!(!Params::new(";").validate(|n| !n.is_empty(), |_| true));
        assert!(!Params::new(";a;;b").validate(|n| !n.is_empty(), |_| true));
    }

    #[test]
    fn edits_keep_the_rest() {
        assert_eq!(edit(";a=1;b;c=3", "b", Some(Some("2"))), ";a=1;b=2;c=3");
        assert_eq!(edit(";a=1;b;c=3", "B", None), ";a=1;c=3");
        assert_eq!(edit(";a=1", "rport", Some(None)), ";a=1;rport");
        assert_eq!(edit("", "ob", Some(None)), ";ob");
        assert_eq!(edit(";x=\"p;q\";y", "y", Some(Some("1"))), ";x=\"p;q\";y=1");
    }
}
