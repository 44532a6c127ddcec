//! GRUU (RFC 5627), client side: reading the `pub-gruu` / `temp-gruu` a
//! registrar hands out in the 2xx to a REGISTER, on the Contact that is
//! ours, and making the Contact of a dialog from the public one.
//!
//! Only the reading is here; the account keeps what was read
//! (`registration.rs`), and dialogs ask for it when they build their
//! Contact (`dialog.rs`).

use siproam_sip::{Contact, Message, Uri};

/// The GRUUs a registrar assigned to an account's instance (RFC 5627
/// §5.1), from the last 2xx to its REGISTER.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gruu {
    /// The public GRUU (`pub-gruu`): the Contact of the account's
    /// dialogs.
    pub public: Option<String>,
    /// The latest temporary GRUU (`temp-gruu`), for anonymous use.
    pub temp: Option<String>,
}

/// The GRUUs on our Contact of a REGISTER's 2xx: the Contact with our
/// `+sip.instance` (RFC 5627 §5.1: the registrar echoes it), or else the
/// one whose URI is equivalent to `contact_uri`. `None` when there is no
/// such Contact or it carries no usable GRUU.
pub(crate) fn gruus_of(resp: &Message, instance: Option<&str>, contact_uri: &str) -> Option<Gruu> {
    let ours = Uri::parse(contact_uri).ok();
    let mut by_uri = None;
    for c in resp.contacts().flatten() {
        let Contact::Addr(a) = c else {
            continue;
        };
        let same_instance = match (instance, a.sip_instance()) {
            (Some(mine), Some(theirs)) => mine.eq_ignore_ascii_case(theirs),
            _ => false,
        };
        let gruu = || Gruu {
            public: a.params().value("pub-gruu").and_then(sip_uri),
            temp: a.params().value("temp-gruu").and_then(sip_uri),
        };
        if same_instance {
            return Some(gruu()).filter(|g| g.public.is_some() || g.temp.is_some());
        }
        // a Contact naming another instance is not ours, whatever its URI
        if by_uri.is_none()
            && a.sip_instance().is_none()
            && ours.as_ref().is_some_and(|o| o.equivalent(a.uri()))
        {
            by_uri = Some(gruu());
        }
    }
    by_uri.filter(|g| g.public.is_some() || g.temp.is_some())
}

/// A GRUU parameter's value (quotes already removed): its quoted-pairs
/// decoded, kept only when it is a valid `sip:` or `sips:` URI with
/// nothing in it that could break a header it is put in.
fn sip_uri(value: &str) -> Option<String> {
    // bounded: a GRUU is one URI, not a document
    if value.is_empty() || value.len() > 1024 {
        return None;
    }
    let mut uri = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // a quoted-pair; a lone backslash at the end is malformed
            uri.push(chars.next()?);
        } else {
            uri.push(c);
        }
    }
    if !uri
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'))
    {
        return None;
    }
    Uri::parse(&uri).ok()?.as_sip()?;
    Some(uri)
}

/// The Contact URI of a dialog from a public GRUU: the GRUU itself, with
/// `ob` (RFC 5626 §4.3) when the account's outbound is in force.
pub(crate) fn dialog_contact(public: &str, ob: bool) -> String {
    if ob {
        siproam_sip::uri::with_param(public, "ob", Some(None)).unwrap_or_else(|_| public.to_owned())
    } else {
        public.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_sip_uris_are_gruus() {
        assert_eq!(
            sip_uri("sip:a@example.test;gr=urn:uuid:1").as_deref(),
            Some("sip:a@example.test;gr=urn:uuid:1")
        );
        assert_eq!(
            sip_uri("sips:a@example.test;gr").as_deref(),
            Some("sips:a@example.test;gr")
        );
        // quoted-pairs decoded
        assert_eq!(
            sip_uri(r"sip:a@example.test;gr=\x").as_deref(),
            Some("sip:a@example.test;gr=x")
        );
        for bad in [
            "",
            "tel:+15551234567",
            "urn:uuid:1",
            "sip:",
            "sip:a@exa mple.test",
            "sip:a@example.test>",
            "<sip:a@example.test>",
            r"sip:a@example.test\",
            r#"sip:a@example.test;gr=\""#,
            "sip:a@example.test\r\nX: y",
            "sip:a@example.té",
        ] {
            assert_eq!(sip_uri(bad), None, "{bad:?}");
        }
        assert_eq!(sip_uri(&format!("sip:a@{}", "x".repeat(2000))), None);
    }

    #[test]
    fn ob_goes_on_the_uri_before_any_headers() {
        assert_eq!(
            dialog_contact("sip:a@example.test;gr=urn:uuid:1", true),
            "sip:a@example.test;gr=urn:uuid:1;ob"
        );
        assert_eq!(
            dialog_contact("sip:a@example.test;gr?x=y", true),
            "sip:a@example.test;gr;ob?x=y"
        );
        assert_eq!(
            dialog_contact("sip:a@example.test;gr", false),
            "sip:a@example.test;gr"
        );
    }
}
