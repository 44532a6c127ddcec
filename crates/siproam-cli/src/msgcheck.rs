//! `siproam msg check`: a SIP message linted as the stack would judge it.
//! Exit 0 when it would be accepted (a summary printed), 1 with every
//! problem found, one line each — `error: line N: REASON (would answer
//! CODE)` — the first being the one the stack would answer. An SDP body
//! (`application/sdp`) is checked too: its grammar line by line (RFC 8866)
//! and whether the stack could answer it as an offer.

use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use serde_json::{json, Value};
use siproam::core::sdp::{MediaConfig, SdpSession};
use siproam_sip::{Answer, Contact, ErrorKind, HeaderName, Message, Policy};

/// One problem: where, what, and what the stack would do.
struct Problem {
    line: Option<usize>,
    what: String,
    answer: Option<Answer>,
}

impl Problem {
    fn text(&self) -> String {
        let at = self.line.map(|l| format!("line {l}: ")).unwrap_or_default();
        match self.answer {
            Some(a) => format!("error: {at}{} (would answer {a})", self.what),
            None => format!("error: {at}{}", self.what),
        }
    }

    fn json(&self) -> Value {
        json!({"line": self.line, "error": self.what, "status": self.answer.map(status_json)})
    }
}

fn status_json(a: Answer) -> Value {
    match a {
        Answer::Respond(code) => json!(code),
        Answer::Drop => json!("drop"),
    }
}

/// The 1-based line of the first header line named `name` (full or
/// compact form), for an error the parser reports without one.
fn line_of_header(data: &[u8], name: HeaderName) -> Option<usize> {
    let text = String::from_utf8_lossy(data);
    let full = name.as_str()?.to_ascii_lowercase();
    let compact = name.compact().map(|c| c.to_ascii_lowercase());
    text.split('\n')
        .enumerate()
        .skip(1)
        .take_while(|(_, l)| !l.trim_end_matches('\r').is_empty())
        .find(|(_, l)| {
            let n = l
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            n == full || compact.as_deref() == Some(n.as_str())
        })
        .map(|(i, _)| i + 1)
}

/// Where the parser's error stands, when it can be told.
fn parse_error_line(data: &[u8], kind: ErrorKind) -> Option<usize> {
    match kind {
        ErrorKind::MalformedHeader { line } => Some(line),
        ErrorKind::InvalidHeader { header, .. } | ErrorKind::DuplicateHeader(header) => {
            line_of_header(data, header)
        }
        ErrorKind::CSeqMethodMismatch => line_of_header(data, HeaderName::CSeq),
        ErrorKind::ContentLengthConflict | ErrorKind::BodyTruncated { .. } => {
            line_of_header(data, HeaderName::ContentLength)
        }
        ErrorKind::MalformedRequestLine
        | ErrorKind::MalformedStatusLine
        | ErrorKind::InvalidMethod
        | ErrorKind::InvalidRequestUri(_)
        | ErrorKind::UnsupportedUriScheme
        | ErrorKind::UnsupportedVersion
        | ErrorKind::InvalidStatusCode => Some(1),
        _ => None,
    }
}

/// Runs `msg check` on the bytes of one message.
pub fn run(data: &[u8], json_out: bool) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let msg = match Message::parse(Bytes::copy_from_slice(data)) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.push(Problem {
                line: parse_error_line(data, e.kind()),
                what: e.to_string(),
                answer: Some(e.answer()),
            });
            None
        }
    };
    if let Some(msg) = &msg {
        for (line, e) in msg.problems() {
            problems.push(Problem {
                line,
                what: e.to_string(),
                answer: Some(e.answer()),
            });
        }
        if let Err(e) = msg.check_policy(&Policy::default()) {
            let line = match e.kind() {
                ErrorKind::UnsupportedUriScheme => Some(1),
                ErrorKind::UnsupportedExtension => line_of_header(data, HeaderName::Require),
                ErrorKind::UnsupportedMediaType => line_of_header(data, HeaderName::ContentType),
                ErrorKind::NotAcceptable => line_of_header(data, HeaderName::Accept),
                _ => None,
            };
            problems.push(Problem {
                line,
                what: e.to_string(),
                answer: Some(e.answer()),
            });
        }
        let is_sdp = msg
            .header(HeaderName::ContentType)
            .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"));
        if is_sdp && !msg.body().is_empty() {
            // the body's first line in the message
            let body_line = data
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|at| data.iter().take(at + 4).filter(|b| **b == b'\n').count() + 1);
            let answer = msg.is_request().then_some(Answer::Respond(488));
            for (n, what) in lint_sdp(msg.body(), msg.is_request()) {
                problems.push(Problem {
                    line: body_line.map(|b| b + n - 1),
                    what: format!("SDP: {what}"),
                    answer,
                });
            }
        }
    }
    match (problems.is_empty(), &msg) {
        (true, Some(msg)) => {
            if json_out {
                crate::run::out_line(&summary_json(msg).to_string());
            } else {
                crate::run::out_line(summary_text(msg).trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            if json_out {
                let first = problems.first();
                let v = json!({
                    "valid": false,
                    "error": first.map(|p| p.what.clone()),
                    "line": first.and_then(|p| p.line),
                    "status": first.and_then(|p| p.answer).map(status_json),
                    "errors": problems.iter().map(Problem::json).collect::<Vec<_>>(),
                });
                crate::run::out_line(&v.to_string());
            } else {
                for p in &problems {
                    crate::run::out_line(&p.text());
                }
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// The SDP body's problems, each with its 1-based line in the body: its
/// grammar (RFC 8866 §5), then — for an offer in a request, when the
/// grammar holds — whether the stack could answer it.
pub fn lint_sdp(body: &[u8], offer: bool) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let Ok(text) = std::str::from_utf8(body) else {
        out.push((1, "the body is not UTF-8".to_owned()));
        return out;
    };
    let mut session_c = false;
    // (line of the m=, its formats, has c=)
    let mut media: Vec<(usize, Vec<String>, bool)> = Vec::new();
    let (mut seen_o, mut seen_s, mut seen_t) = (false, false, false);
    let mut n = 0;
    for raw in text.split('\n') {
        n += 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            // a trailing line ending, or an empty line in between
            if text
                .split('\n')
                .skip(n)
                .any(|l| !l.trim_end_matches('\r').is_empty())
            {
                out.push((n, "empty line".to_owned()));
            }
            continue;
        }
        let mut chars = line.chars();
        let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
            out.push((n, format!("not a `<type>=<value>` line: {line:?}")));
            continue;
        };
        let value = chars.as_str();
        if n == 1 && kind != 'v' {
            out.push((n, "the first line must be `v=0`".to_owned()));
        }
        if value.starts_with(' ') {
            out.push((n, format!("space after `{kind}=`")));
        }
        let fields: Vec<&str> = value.split(' ').collect();
        match kind {
            'v' if value != "0" => out.push((n, format!("version {value:?}: only `v=0` exists"))),
            'v' if n != 1 => out.push((n, "`v=` must be the first line".to_owned())),
            'o' => {
                seen_o = true;
                if fields.len() != 6 {
                    out.push((n, format!("`o=` has {} fields, needs 6 (username sess-id sess-version nettype addrtype address)", fields.len())));
                } else if fields.get(1).is_some_and(|f| f.parse::<u64>().is_err())
                    || fields.get(2).is_some_and(|f| f.parse::<u64>().is_err())
                {
                    out.push((n, "`o=` session id and version must be numbers".to_owned()));
                }
            }
            's' => {
                seen_s = true;
                if value.is_empty() {
                    out.push((n, "`s=` must not be empty (use `s=-`)".to_owned()));
                }
            }
            't' => {
                seen_t = true;
                if fields.len() != 2 || fields.iter().any(|f| f.parse::<u64>().is_err()) {
                    out.push((n, "`t=` needs two numbers (start stop)".to_owned()));
                }
            }
            'c' => {
                if let Some(err) = check_connection(&fields) {
                    out.push((n, err));
                }
                match media.last_mut() {
                    Some(m) => m.2 = true,
                    None => session_c = true,
                }
            }
            'm' => {
                if fields.len() < 4 {
                    out.push((
                        n,
                        "`m=` needs media, port, protocol and at least one format".to_owned(),
                    ));
                } else {
                    let port = fields
                        .get(1)
                        .and_then(|p| p.split('/').next())
                        .unwrap_or_default();
                    if port.parse::<u16>().is_err() {
                        out.push((n, format!("port {port:?} is not a number up to 65535")));
                    }
                    let proto = fields.get(2).copied().unwrap_or_default();
                    let fmts: Vec<String> =
                        fields.iter().skip(3).map(|s| (*s).to_owned()).collect();
                    if proto.contains("RTP/")
                        && fmts
                            .iter()
                            .any(|f| f.parse::<u8>().map_or(true, |p| p > 127))
                    {
                        out.push((n, "an RTP format must be a payload type 0-127".to_owned()));
                    }
                }
                let fmts = fields.iter().skip(3).map(|s| (*s).to_owned()).collect();
                media.push((n, fmts, false));
            }
            'a' => {
                if let Some(rtpmap) = value.strip_prefix("rtpmap:") {
                    let (pt, enc) = rtpmap.split_once(' ').unwrap_or((rtpmap, ""));
                    let enc_ok = enc
                        .split('/')
                        .nth(1)
                        .is_some_and(|r| r.parse::<u32>().is_ok());
                    if !enc_ok {
                        out.push((n, format!("`a=rtpmap:{pt}` needs `encoding/clock-rate`")));
                    }
                    match media.last() {
                        Some((_, fmts, _)) if !fmts.iter().any(|f| f == pt) => {
                            out.push((
                                n,
                                format!(
                                    "`a=rtpmap:{pt}` names a format its `m=` line does not list"
                                ),
                            ));
                        }
                        None => out.push((n, "`a=rtpmap` before any `m=` line".to_owned())),
                        _ => {}
                    }
                }
            }
            'i' | 'u' | 'e' | 'p' | 'b' | 'r' | 'z' | 'k' | 'v' => {}
            other => out.push((n, format!("unknown line type `{other}=`"))),
        }
    }
    for (seen, what) in [(seen_o, "o="), (seen_s, "s="), (seen_t, "t=")] {
        if !seen {
            out.push((1, format!("no `{what}` line (it is required)")));
        }
    }
    for (line, _, has_c) in &media {
        if !has_c && !session_c {
            out.push((
                *line,
                "no `c=` for this media, nor for the session".to_owned(),
            ));
        }
    }
    out.sort_by_key(|(line, _)| *line);
    if offer && out.is_empty() {
        let local: SocketAddr = ([127, 0, 0, 1], 4000).into();
        let session = SdpSession::new(0, local, MediaConfig::default());
        if let Err(e) = session.check_offer(body) {
            out.push((1, format!("as an offer: {e}")));
        }
    }
    out
}

/// A `c=` line's fields: `IN IP4|IP6 ADDRESS`.
fn check_connection(fields: &[&str]) -> Option<String> {
    let [net, family, addr] = fields else {
        return Some("`c=` needs three fields (IN IP4|IP6 address)".to_owned());
    };
    if *net != "IN" {
        return Some(format!("network type {net:?}: only `IN`"));
    }
    let addr = addr.split('/').next().unwrap_or_default();
    match *family {
        "IP4" if addr.parse::<std::net::Ipv4Addr>().is_err() && !is_host_name(addr) => {
            Some(format!("{addr:?} is not an IPv4 address"))
        }
        "IP6" if addr.parse::<std::net::Ipv6Addr>().is_err() && !is_host_name(addr) => {
            Some(format!("{addr:?} is not an IPv6 address"))
        }
        "IP4" | "IP6" => None,
        other => Some(format!("address type {other:?}: `IP4` or `IP6`")),
    }
}

/// A fully qualified domain name (RFC 8866 allows one in `c=`).
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.contains('.')
        && !s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn contacts(msg: &Message) -> Vec<String> {
    msg.contacts()
        .filter_map(Result::ok)
        .map(|c| match c {
            Contact::Star => "*".to_owned(),
            Contact::Addr(a) => a.uri().to_string(),
        })
        .collect()
}

fn summary_json(msg: &Message) -> Value {
    let cseq = msg.cseq();
    let via = msg.top_via().ok();
    let mut v = json!({
        "valid": true,
        "kind": if msg.is_request() { "request" } else { "response" },
        "call_id": msg.call_id(),
        "cseq": {"seq": cseq.seq, "method": cseq.method.as_str()},
        "via": via.map(|v| json!({
            "transport": v.transport(),
            "host": v.host_str(),
            "port": v.port(),
            "branch": v.branch(),
        })),
        "contact": contacts(msg),
        "headers": msg.headers().count(),
        "body_len": msg.body().len(),
    });
    if let Some(obj) = v.as_object_mut() {
        match (msg.method(), msg.status()) {
            (Some(m), _) => {
                obj.insert("method".into(), json!(m.as_str()));
                obj.insert("request_uri".into(), json!(msg.request_uri_str()));
            }
            (None, Some(code)) => {
                obj.insert("status".into(), json!(code));
                obj.insert("reason".into(), json!(msg.reason()));
            }
            (None, None) => {}
        }
    }
    v
}

fn summary_text(msg: &Message) -> String {
    let mut out = String::new();
    match (msg.method(), msg.status()) {
        (Some(m), _) => out.push_str(&format!(
            "valid request: {} {}\n",
            m,
            msg.request_uri_str().unwrap_or_default()
        )),
        (None, Some(code)) => out.push_str(&format!(
            "valid response: {} {}\n",
            code,
            msg.reason().unwrap_or_default()
        )),
        (None, None) => {}
    }
    let cseq = msg.cseq();
    out.push_str(&format!("  Call-ID: {}\n", msg.call_id()));
    out.push_str(&format!("  CSeq:    {} {}\n", cseq.seq, cseq.method));
    if let Some(via) = msg
        .header(HeaderName::Via)
        .and_then(|v| siproam_sip::split_list(v).next())
    {
        out.push_str(&format!("  Via:     {via}\n"));
    }
    for c in contacts(msg) {
        out.push_str(&format!("  Contact: {c}\n"));
    }
    out.push_str(&format!(
        "  {} header fields, body {} bytes\n",
        msg.headers().count(),
        msg.body().len()
    ));
    out
}
