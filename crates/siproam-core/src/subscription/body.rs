//! NOTIFY bodies: PIDF basic status (RFC 3863, `application/pidf+xml`)
//! and the message summary (RFC 3842, `application/simple-message-summary`),
//! parsed and produced. Parsing is a bounded scan of the text (no XML
//! library, no recursion): malformed input is a typed [`BodyError`], never
//! a panic.

use std::fmt::Write as _;

/// The PIDF media type.
pub const PIDF: &str = "application/pidf+xml";
/// The message-summary media type.
pub const MESSAGE_SUMMARY: &str = "application/simple-message-summary";

/// Bodies larger than this are refused unparsed.
const MAX_BODY: usize = 64 * 1024;

/// Why a NOTIFY body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Not UTF-8 text.
    #[error("body is not UTF-8")]
    NotText,
    /// Larger than the 64 KiB a summary or a basic presence needs.
    #[error("body too large")]
    TooLarge,
    /// No `<presence` element.
    #[error("no <presence> element")]
    NoPresence,
    /// The `<presence>` element has no `entity` attribute.
    #[error("<presence> has no entity")]
    NoEntity,
    /// No `<basic>` status, or one that is neither `open` nor `closed`.
    #[error("no <basic> status open or closed")]
    NoBasic,
    /// No `Messages-Waiting: yes|no` line.
    #[error("no Messages-Waiting: yes|no")]
    NoMessagesWaiting,
    /// A `Voice-Message` line that is not `new/old` (`(urgent/urgent)`).
    #[error("malformed Voice-Message counts")]
    BadCounts,
    /// A content type this package does not take.
    #[error("unsupported content type")]
    UnsupportedType,
}

/// A presentity's basic status (RFC 3863 §4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicStatus {
    /// Ready to communicate.
    Open,
    /// Not.
    Closed,
}

impl BasicStatus {
    /// `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            BasicStatus::Open => "open",
            BasicStatus::Closed => "closed",
        }
    }
}

/// A PIDF document reduced to what a basic presence says: the entity and
/// the basic status of its (first) tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The presentity (`pres:` or `sip:` URI).
    pub entity: String,
    /// Its basic status.
    pub status: BasicStatus,
}

impl Presence {
    /// Parses a PIDF document.
    pub fn parse(body: &[u8]) -> Result<Presence, BodyError> {
        let text = text_of(body)?;
        let start = find_element(text, "presence", 0).ok_or(BodyError::NoPresence)?;
        let tag_end = text[start..]
            .find('>')
            .map(|i| start + i)
            .ok_or(BodyError::NoPresence)?;
        let entity = attribute(&text[start..tag_end], "entity").ok_or(BodyError::NoEntity)?;
        let basic = find_element(text, "basic", tag_end).ok_or(BodyError::NoBasic)?;
        let open = basic
            + text[basic..]
                .find('>')
                .ok_or(BodyError::NoBasic)?
                .saturating_add(1);
        let close = text[open..]
            .find('<')
            .map(|i| open + i)
            .ok_or(BodyError::NoBasic)?;
        let status = match text[open..close].trim() {
            "open" => BasicStatus::Open,
            "closed" => BasicStatus::Closed,
            _ => return Err(BodyError::NoBasic),
        };
        Ok(Presence {
            entity: unescape(entity),
            status,
        })
    }

    /// A minimal PIDF document: one tuple with the basic status.
    pub fn to_xml(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
             <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\">\r\n\
             <tuple id=\"siproam\"><status><basic>{}</basic></status></tuple>\r\n\
             </presence>\r\n",
            escape(&self.entity),
            self.status.as_str()
        )
    }
}

/// Counts of one message class: new and old, with their urgent shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageCounts {
    /// New messages.
    pub new: u32,
    /// Old messages.
    pub old: u32,
    /// New urgent messages (part of `new`).
    pub new_urgent: u32,
    /// Old urgent messages (part of `old`).
    pub old_urgent: u32,
}

/// A message summary (RFC 3842 §5.2): whether messages wait, the account,
/// and the voice-message counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageSummary {
    /// `Messages-Waiting: yes`.
    pub waiting: bool,
    /// `Message-Account`, when given.
    pub account: Option<String>,
    /// `Voice-Message` counts, when given.
    pub voice: Option<MessageCounts>,
}

impl MessageSummary {
    /// Parses a `simple-message-summary` body.
    pub fn parse(body: &[u8]) -> Result<MessageSummary, BodyError> {
        let text = text_of(body)?;
        let mut waiting = None;
        let mut summary = MessageSummary::default();
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "messages-waiting" => {
                    waiting = match value.to_ascii_lowercase().as_str() {
                        "yes" => Some(true),
                        "no" => Some(false),
                        _ => return Err(BodyError::NoMessagesWaiting),
                    }
                }
                "message-account" => summary.account = Some(value.to_owned()),
                "voice-message" => summary.voice = Some(parse_counts(value)?),
                _ => {}
            }
        }
        summary.waiting = waiting.ok_or(BodyError::NoMessagesWaiting)?;
        Ok(summary)
    }

    /// The body text.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "Messages-Waiting: {}\r\n",
            if self.waiting { "yes" } else { "no" }
        );
        if let Some(a) = &self.account {
            let _ = write!(s, "Message-Account: {a}\r\n");
        }
        if let Some(c) = self.voice {
            let _ = write!(
                s,
                "Voice-Message: {}/{} ({}/{})\r\n",
                c.new, c.old, c.new_urgent, c.old_urgent
            );
        }
        s
    }
}

/// What a NOTIFY carried, parsed by its package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyBody {
    /// A PIDF basic presence.
    Presence(Presence),
    /// A message summary.
    MessageSummary(MessageSummary),
}

impl NotifyBody {
    /// Parses `body` by its content type.
    pub fn parse(content_type: &str, body: &[u8]) -> Result<NotifyBody, BodyError> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        if ct.eq_ignore_ascii_case(PIDF) {
            Presence::parse(body).map(NotifyBody::Presence)
        } else if ct.eq_ignore_ascii_case(MESSAGE_SUMMARY) {
            MessageSummary::parse(body).map(NotifyBody::MessageSummary)
        } else {
            Err(BodyError::UnsupportedType)
        }
    }
}

fn text_of(body: &[u8]) -> Result<&str, BodyError> {
    if body.len() > MAX_BODY {
        return Err(BodyError::TooLarge);
    }
    std::str::from_utf8(body).map_err(|_| BodyError::NotText)
}

/// `new/old` with an optional ` (urgent/urgent)`.
fn parse_counts(value: &str) -> Result<MessageCounts, BodyError> {
    let pair = |s: &str| -> Result<(u32, u32), BodyError> {
        let (a, b) = s.split_once('/').ok_or(BodyError::BadCounts)?;
        Ok((
            a.trim().parse().map_err(|_| BodyError::BadCounts)?,
            b.trim().parse().map_err(|_| BodyError::BadCounts)?,
        ))
    };
    let (main, urgent) = match value.split_once('(') {
        Some((m, u)) => (m, Some(u.strip_suffix(')').ok_or(BodyError::BadCounts)?)),
        None => (value, None),
    };
    let (new, old) = pair(main)?;
    let (new_urgent, old_urgent) = match urgent {
        Some(u) => pair(u)?,
        None => (0, 0),
    };
    Ok(MessageCounts {
        new,
        old,
        new_urgent,
        old_urgent,
    })
}

/// The offset of the `<` of the first element named `local` (any
/// namespace prefix) at or after `from`.
fn find_element(text: &str, local: &str, from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = text.get(at..)?.find('<') {
        let start = at + i;
        let rest = &text[start + 1..];
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        let bare = name.rsplit(':').next().unwrap_or(name);
        if bare == local {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// An attribute's value in an element's start tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut at = 0;
    while let Some(i) = tag.get(at..)?.find(name) {
        let start = at + i;
        at = start + name.len();
        let before_ok = tag[..start]
            .chars()
            .next_back()
            .is_some_and(char::is_whitespace);
        let rest = tag[at..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        if !before_ok {
            continue;
        }
        let rest = rest.trim_start();
        let quote = rest.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let inner = &rest[1..];
        return inner.find(quote).map(|end| &inner[..end]);
    }
    None
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_pidf_document_with_a_prefix_gives_its_entity_and_status() {
        let doc = br#"<?xml version="1.0"?>
<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity='pres:bob@example.test'>
 <p:tuple id="a"><p:status><p:basic> closed </p:basic></p:status></p:tuple>
</p:presence>"#;
        let p = Presence::parse(doc).unwrap();
        assert_eq!(p.entity, "pres:bob@example.test");
        assert_eq!(p.status, BasicStatus::Closed);
    }

    #[test]
    fn the_produced_pidf_reads_back() {
        let p = Presence {
            entity: "sip:a&b@example.test".into(),
            status: BasicStatus::Open,
        };
        assert_eq!(Presence::parse(p.to_xml().as_bytes()).unwrap(), p);
    }

    #[test]
    fn malformed_pidf_is_a_typed_error() {
        assert_eq!(Presence::parse(b"hello"), Err(BodyError::NoPresence));
        assert_eq!(
            Presence::parse(b"<presence><basic>open</basic></presence>"),
            Err(BodyError::NoEntity)
        );
        assert_eq!(
            Presence::parse(b"<presence entity=\"x\"><basic>maybe</basic>"),
            Err(BodyError::NoBasic)
        );
        assert_eq!(
            Presence::parse(b"<presence entity=\"x\"><basic>open"),
            Err(BodyError::NoBasic)
        );
        assert_eq!(Presence::parse(&[0xff, 0xfe]), Err(BodyError::NotText));
    }

    #[test]
    fn a_message_summary_reads_and_prints() {
        let s = MessageSummary::parse(
            b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@vm.example.test\r\nVoice-Message: 2/8 (0/2)\r\n",
        )
        .unwrap();
        assert!(s.waiting);
        assert_eq!(
            s.voice,
            Some(MessageCounts {
                new: 2,
                old: 8,
                new_urgent: 0,
                old_urgent: 2
            })
        );
        assert_eq!(MessageSummary::parse(s.to_text().as_bytes()).unwrap(), s);
        assert_eq!(
            MessageSummary::parse(b"Voice-Message: 1/2\r\n"),
            Err(BodyError::NoMessagesWaiting)
        );
        assert_eq!(
            MessageSummary::parse(b"Messages-Waiting: yes\r\nVoice-Message: x/2\r\n"),
            Err(BodyError::BadCounts)
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512),
                                 text in ".{0,300}") {
            let _ = NotifyBody::parse(PIDF, &body);
            let _ = NotifyBody::parse(MESSAGE_SUMMARY, &body);
            let _ = NotifyBody::parse(PIDF, text.as_bytes());
            let _ = NotifyBody::parse(MESSAGE_SUMMARY, text.as_bytes());
            let framed = format!("<presence entity=\"{text}\"><basic>{text}</basic>");
            let _ = Presence::parse(framed.as_bytes());
            let counts = format!("Messages-Waiting: yes\nVoice-Message: {text}");
            let _ = MessageSummary::parse(counts.as_bytes());
        }
    }
}
