//! Name-addr / addr-spec values (`"Alice" <sip:a@h>;tag=x`), as found in
//! From, To, Contact, Route, Record-Route, Path and friends, and the
//! splitting of comma-separated header lists.

use std::borrow::Cow;

use crate::chars::{find_unquoted, is_lws, is_token, quoted_string_len, trim_lws};
use crate::error::ValueError;
use crate::params::{is_gen_value, Params};
use crate::uri::Uri;

/// A display name, an URI and header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    display: Option<&'a str>,
    uri: Uri<'a>,
    angle: bool,
    params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one element (`"A" <sip:a@h>;p=1`, `A B <sip:…>`,
    /// `sip:a@h;tag=1`). In the addr-spec form everything after the first
    /// `;` belongs to the header, and a `?` or `,` is not allowed
    /// (RFC 3261 §20).
    pub fn parse(text: &'a str) -> Result<NameAddr<'a>, ValueError> {
        let text = trim_lws(text);
        if text.is_empty() {
            return Err(ValueError::Empty);
        }
        let (display, after_display) = if text.starts_with('"') {
            let len = quoted_string_len(text).ok_or(ValueError::UnterminatedQuote)?;
            let rest = trim_lws(text.get(len..).unwrap_or(""));
            if !rest.starts_with('<') {
                return Err(ValueError::DisplayName);
            }
            (text.get(..len), rest)
        } else if let Some(lt) = find_unquoted(text, 0, false, b'<') {
            let d = trim_lws(text.get(..lt).unwrap_or(""));
            if !d.is_empty()
                && !d
                    .split(|c: char| c.is_ascii() && is_lws(c as u8))
                    .all(|w| w.is_empty() || w.bytes().all(is_token))
            {
                return Err(ValueError::DisplayName);
            }
            (
                if d.is_empty() { None } else { Some(d) },
                text.get(lt..).unwrap_or(""),
            )
        } else {
            (None, text)
        };
        if let Some(inner) = after_display.strip_prefix('<') {
            let gt = inner.find('>').ok_or(ValueError::Syntax)?;
            let uri_text = inner.get(..gt).unwrap_or("");
            let uri = Uri::parse(uri_text)?;
            let params = inner.get(gt + 1..).unwrap_or("");
            let p = Params::new(params);
            check_header_params(p)?;
            return Ok(NameAddr {
                display,
                uri,
                angle: true,
                params: p,
            });
        }
        // addr-spec form
        let (uri_text, params) = match after_display.find(';') {
            Some(s) => (
                after_display.get(..s).unwrap_or(""),
                after_display.get(s..).unwrap_or(""),
            ),
            None => (after_display, ""),
        };
        let uri_text = trim_lws(uri_text);
        if uri_text.contains('?') || uri_text.contains(',') {
            return Err(ValueError::Syntax);
        }
        let uri = Uri::parse(uri_text)?;
        let p = Params::new(params);
        check_header_params(p)?;
        Ok(NameAddr {
            display,
            uri,
            angle: false,
            params: p,
        })
    }

    /// The display name as written (quoted form keeps its quotes).
    pub fn display_raw(&self) -> Option<&'a str> {
        self.display
    }

    /// The display name without quotes and with `\` escapes decoded.
    pub fn display_name(&self) -> Option<Cow<'a, str>> {
        let d = self.display?;
        match d.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(inner) if inner.contains('\\') => {
                Some(Cow::Owned(crate::chars::unescape_quoted_pairs(inner)))
            }
            Some(inner) => Some(Cow::Borrowed(inner)),
            None => Some(Cow::Borrowed(d)),
        }
    }

    /// The URI.
    pub fn uri(&self) -> &Uri<'a> {
        &self.uri
    }

    /// True when the URI was enclosed in `<>`.
    pub fn is_name_addr(&self) -> bool {
        self.angle
    }

    /// Header parameters (after the URI).
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.value("tag")
    }

    /// The `expires` parameter (Contact), when it is a valid number.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .value("expires")
            .and_then(crate::chars::parse_u32)
    }

    /// The `q` parameter (Contact) in thousandths (`q=0.7` → 700).
    pub fn q(&self) -> Option<u16> {
        parse_qvalue(self.params.value("q")?)
    }

    /// `+sip.instance` without its quotes and angle brackets
    /// (`urn:uuid:…`).
    pub fn sip_instance(&self) -> Option<&'a str> {
        let v = self.params.value("+sip.instance")?;
        Some(
            v.strip_prefix('<')
                .and_then(|s| s.strip_suffix('>'))
                .unwrap_or(v),
        )
    }

    /// `reg-id` (RFC 5626), when a valid positive number.
    pub fn reg_id(&self) -> Option<u32> {
        self.params
            .value("reg-id")
            .and_then(crate::chars::parse_u32)
            .filter(|&n| n > 0)
    }

    /// `pub-gruu` (RFC 5627), without quotes.
    pub fn pub_gruu(&self) -> Option<&'a str> {
        self.params.value("pub-gruu")
    }

    /// `temp-gruu` (RFC 5627), without quotes.
    pub fn temp_gruu(&self) -> Option<&'a str> {
        self.params.value("temp-gruu")
    }
}

/// Parses a `qvalue` (`0`, `0.5`, `1.000`) into thousandths.
pub(crate) fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, d) in frac.bytes().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1].get(i).copied().unwrap_or(0);
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

pub(crate) fn check_header_params(p: Params<'_>) -> Result<(), ValueError> {
    let t = trim_lws(p.as_str());
    if !t.is_empty() && !t.starts_with(';') {
        return Err(ValueError::Syntax);
    }
    for (n, v) in p.iter() {
        if n.is_empty() {
            return Err(ValueError::EmptyElement);
        }
        if !n.bytes().all(is_token) {
            return Err(ValueError::Syntax);
        }
        if let Some(v) = v {
            if v.starts_with('"') && quoted_string_len(v).is_none() {
                return Err(ValueError::UnterminatedQuote);
            }
            if !is_gen_value(v) {
                return Err(ValueError::Syntax);
            }
        }
    }
    Ok(())
}

/// Splits a header value into its comma-separated elements, honouring
/// quoted strings and `<…>`. Elements are trimmed of LWS; empty elements
/// are yielded (as `""`) so that validation can reject them.
pub fn split_list(value: &str) -> ListIter<'_> {
    ListIter { rest: Some(value) }
}

/// Iterator returned by [`split_list`].
#[derive(Debug, Clone)]
pub struct ListIter<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        match find_unquoted(text, 0, true, b',') {
            Some(i) => {
                self.rest = text.get(i + 1..);
                text.get(..i).map(trim_lws)
            }
            None => {
                self.rest = None;
                Some(trim_lws(text))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let n = NameAddr::parse("\"Alice \\\"A\\\"\" <sip:alice@atlanta.example.com>;tag=1928")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.display_name().as_deref(), Some("Alice \"A\""));
        assert_eq!(n.tag(), Some("1928"));
        let n = NameAddr::parse("Bob   Smith<sip:bob@b.example>").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.display_raw(), Some("Bob   Smith"));
        let n = NameAddr::parse("sip:c@h;tag=x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.tag(), Some("x"));
        assert!(!n.is_name_addr());
        let n = NameAddr::parse("<sip:c@h;ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1;expires=3600;q=0.7")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n.sip_instance(),
            Some("urn:uuid:00000000-0000-1000-8000-000A95A0E128")
        );
        assert_eq!(n.reg_id(), Some(1));
        assert_eq!(n.expires(), Some(3600));
        assert_eq!(n.q(), Some(700));
        assert!(n.uri().as_sip().is_some_and(|u| u.ob()));
    }

    #[test]
    fn addr_spec_with_quoted_angle_in_a_param() {
        // regression: the '<' inside the quoted +sip.instance was taken for
        // the start of a name-addr
        let n = NameAddr::parse("sip:bob@10.0.0.2;+sip.instance=\"<urn:uuid:1>\";reg-id=1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!n.is_name_addr());
        assert_eq!(n.sip_instance(), Some("urn:uuid:1"));
        assert_eq!(n.uri().as_str(), "sip:bob@10.0.0.2");
    }

    #[test]
    fn rejects() {
        assert_eq!(
            NameAddr::parse("\"unterminated <sip:a@h>"),
            Err(ValueError::UnterminatedQuote)
        );
        assert!(NameAddr::parse("Bell, Alexander <sip:a@h>").is_err());
        assert!(NameAddr::parse("< sip:a@h >").is_err());
        assert!(NameAddr::parse("sip:a@h?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse("<sip:a@h>;;").is_err());
        assert!(NameAddr::parse("<sip:a@h>x").is_err());
        assert!(NameAddr::parse("").is_err());
    }

    #[test]
    fn lists() {
        let v: Vec<_> = split_list("<sip:a@h;x=1,2>, \"x,y\" <sip:b@h> ,sip:c@h").collect();
        assert_eq!(v, ["<sip:a@h;x=1,2>", "\"x,y\" <sip:b@h>", "sip:c@h"]);
        assert_eq!(split_list("a,,b").count(), 3);
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.05"), Some(50));
    }
}
