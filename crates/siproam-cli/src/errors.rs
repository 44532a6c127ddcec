//! What the user is told when something fails: bad usage refused before
//! anything starts (exit 2), an error chain printed once, and the
//! registration and call failures said in words.

use std::path::Path;

use anyhow::{bail, Context};
use siproam::core::RegistrationFailure;

/// An error and its causes on one line, each cause once: a cause whose
/// text its parent already shows (`listen: cannot bind …` over `cannot
/// bind …`, an OS error's `(os error 98)`) is left out.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let bare = strip_os_error(&text).to_lowercase();
        if bare.is_empty() || out.to_lowercase().contains(&bare) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `Address already in use (os error 98)` → `Address already in use`.
fn strip_os_error(text: &str) -> &str {
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text.get(..i).unwrap_or(text),
        _ => text,
    }
}

/// The agent's and `call`'s settings, checked before anything starts:
/// the call's URI, `--aor`, `--registrar`, `--outbound-proxy`, `--play`,
/// `--record`.
pub fn check_agent(
    args: &crate::run::AgentArgs,
    calls: &crate::run::CallArgs,
    call: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(uri) = call {
        check_call_uri("call", uri)?;
    }
    let aor = args
        .aor
        .as_deref()
        .context("--aor is required (or aor = … in --config)")?;
    check_aor(aor)?;
    check_listen(&args.listen)?;
    crate::run::parse_hosts(&args.host)?;
    if let Some(r) = &args.registrar {
        check_sip_uri("--registrar", r)?;
    }
    for p in &args.outbound_proxy {
        check_sip_uri("--outbound-proxy", p)?;
    }
    if let Some(p) = &calls.play {
        check_play(p)?;
    }
    if let Some(r) = &calls.record {
        check_record(r)?;
    }
    Ok(())
}

/// `--listen` values (`PROTO:HOST:PORT`).
pub fn check_listen(listen: &[String]) -> anyhow::Result<()> {
    for l in listen {
        crate::run::parse_listen(l).with_context(|| format!("--listen {l}"))?;
    }
    Ok(())
}

/// A call's target: `sip:`, `sips:` or `tel:`. `what` names it in the
/// message (`call`).
pub fn check_call_uri(what: &str, uri: &str) -> anyhow::Result<()> {
    match siproam_sip::Uri::parse(uri) {
        Ok(u) if u.is_supported_scheme() => Ok(()),
        Ok(_) => bail!("{what} {uri}: not a SIP URI (sip:, sips: or tel:)"),
        Err(siproam_sip::UriError::Scheme) if !uri.contains(':') || uri.contains('@') => {
            bail!("{what} {uri}: not a SIP URI (sip:{uri}?)")
        }
        Err(e) => bail!("{what} {uri}: not a SIP URI ({e})"),
    }
}

/// `--aor`: a `sip:`/`sips:` URI with a user.
pub fn check_aor(aor: &str) -> anyhow::Result<()> {
    let ok = siproam_sip::Uri::parse(aor)
        .ok()
        .and_then(|u| u.as_sip().map(|s| s.user().is_some_and(|u| !u.is_empty())))
        .unwrap_or(false);
    if !ok {
        bail!("--aor {aor}: not a sip: or sips: URI with a user (sip:alice@example.test)");
    }
    Ok(())
}

/// A SIP URI option (`--registrar`, `--outbound-proxy`): `sip:` or
/// `sips:`.
pub fn check_sip_uri(flag: &str, uri: &str) -> anyhow::Result<()> {
    let ok = siproam_sip::Uri::parse(uri).is_ok_and(|u| u.as_sip().is_some());
    if !ok {
        bail!("{flag} {uri}: not a SIP URI (sip:HOST[:PORT][;transport=tcp|tls] or sips:…)");
    }
    Ok(())
}

/// `--play`: a tone, or a WAV file that can be read and played.
pub fn check_play(play: &str) -> anyhow::Result<siproam::AudioSpec> {
    let spec = siproam::AudioSpec::parse(play)
        .with_context(|| format!("--play {play}: tone:HZ (1–3999) or a WAV file"))?;
    if let siproam::AudioSpec::Wav(path) = &spec {
        if let Err(e) = std::fs::metadata(path) {
            bail!("--play {play}: cannot read it ({})", io_text(&e));
        }
        if let Err(e) = spec.check() {
            bail!("--play {play}: not a WAV file siproam can play ({e})");
        }
    }
    Ok(spec)
}

/// `--record`: its directory must exist (the file is made per call).
pub fn check_record(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "--record {}: the directory does not exist ({})",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!("--record {}: a directory, not a file", path.display());
    }
    Ok(())
}

/// An OS error in words, without its number.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    strip_os_error(&text).to_owned()
}

/// The host and port of a SIP URI (`127.0.0.1:5060`, `example.test`),
/// else the URI itself.
pub fn host_of(uri: &str) -> String {
    siproam_sip::Uri::parse(uri)
        .ok()
        .and_then(|u| {
            u.as_sip().map(|s| match s.port() {
                Some(p) => format!("{}:{p}", s.host_str()),
                None => s.host_str().to_owned(),
            })
        })
        .unwrap_or_else(|| uri.to_owned())
}

/// Just the host of a SIP URI (for "cannot resolve").
fn bare_host(uri: &str) -> String {
    siproam_sip::Uri::parse(uri)
        .ok()
        .and_then(|u| u.as_sip().map(|s| s.host_str().to_owned()))
        .unwrap_or_else(|| uri.to_owned())
}

/// Why registering at `first_hop` (the registrar, or the outbound proxy
/// in front of it) could not even start.
pub fn register_error(e: siproam::EndpointError, role: &str, first_hop: &str) -> anyhow::Error {
    match e {
        siproam::EndpointError::Resolve(r) => anyhow::Error::new(r).context(format!(
            "cannot resolve {role} host {}",
            bare_host(first_hop)
        )),
        other => anyhow::Error::new(other).context(format!("registering at {first_hop}")),
    }
}

/// Why placing a call to `uri` (through `hop`) failed at once.
pub fn call_error(e: siproam::EndpointError, uri: &str, hop: Option<&str>) -> anyhow::Error {
    let hop = hop.unwrap_or(uri);
    match e {
        siproam::EndpointError::Resolve(r) => anyhow::Error::new(r).context(format!(
            "cannot resolve host {} to call {uri}",
            bare_host(hop)
        )),
        other => anyhow::Error::new(other).context(format!("calling {uri}")),
    }
}

/// The wording of a failed registration, or `None` when it is not one.
/// `user` is the digest user (told back to the user, who typed it; not
/// logged), `registrar` where it was sent.
pub fn registration_failure(
    failure: Option<RegistrationFailure>,
    code: Option<u16>,
    user: &str,
    had_password: bool,
    registrar: &str,
    timeout_secs: u64,
) -> Option<String> {
    let failure = failure?;
    Some(match failure {
        RegistrationFailure::AuthenticationFailed if !had_password => format!(
            "registration refused: the registrar asks for credentials{} and no password was given \
             (--password-file, {} or --password)",
            code.map(|c| format!(" ({c})")).unwrap_or_default(),
            crate::run::PASSWORD_ENV
        ),
        RegistrationFailure::AuthenticationFailed => match code {
            Some(401 | 407) => format!(
                "registration refused: the registrar rejected user {user}'s credentials ({}: wrong password?)",
                code.unwrap_or(401)
            ),
            Some(c) => format!(
                "registration refused: the registrar rejected user {user}'s credentials ({c})"
            ),
            None => format!("registration refused: the registrar rejected user {user}'s credentials"),
        },
        // after our credentials, a 403 refuses them (without, it refuses
        // the registration itself: too many bindings, another domain)
        RegistrationFailure::Status(403) if had_password => format!(
            "registration refused: the registrar rejected user {user}'s credentials (403)"
        ),
        RegistrationFailure::Status(403) => "registration refused: 403 Forbidden".to_owned(),
        RegistrationFailure::Status(404) => {
            "registration refused: the registrar does not know this address of record (404)".to_owned()
        }
        RegistrationFailure::Status(c) => {
            format!("registration failed: {c} {}", reason_phrase(c))
        }
        RegistrationFailure::Timeout => format!(
            "registration failed: no answer from {} (timeout after {timeout_secs} s)",
            host_of(registrar)
        ),
        RegistrationFailure::Transport(reason) => format!(
            "registration failed: the connection to {} failed ({})",
            host_of(registrar),
            crate::run::flow_reason(reason)
        ),
        RegistrationFailure::OutboundUnsupported => return None,
    })
}

/// Why a call ended badly, in words; `auth` is the core's word on
/// refused credentials for it.
pub fn call_failure(code: Option<u16>, auth: Option<&str>, had_password: bool) -> String {
    match (code, auth) {
        (Some(c @ (401 | 407)), Some(a)) => {
            format!(
                "call failed: {c} {}: {a} (wrong password?)",
                reason_phrase(c)
            )
        }
        (Some(c @ (401 | 407)), None) if !had_password => format!(
            "call failed: {c} {}: credentials asked for and no password given",
            reason_phrase(c)
        ),
        (Some(408), _) => "call failed: no answer (408 Request Timeout)".to_owned(),
        (Some(c), _) => format!("call failed: {c} {}", reason_phrase(c)),
        (None, _) => "call failed: it ended before it was answered".to_owned(),
    }
}

/// The usual reason phrase of a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        430 => "Flow Failed",
        439 => "First Hop Lacks Outbound Support",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A cause its parent already shows is said once.
    #[test]
    fn a_chain_is_said_once() {
        let io = std::io::Error::from_raw_os_error(98);
        let inner = anyhow::Error::new(io)
            .context("cannot bind 127.0.0.1:5060: Address already in use (os error 98)");
        let e = inner
            .context("listen: cannot bind 127.0.0.1:5060: Address already in use (os error 98)");
        assert_eq!(
            report(&e),
            "listen: cannot bind 127.0.0.1:5060: Address already in use (os error 98)"
        );
        let e = anyhow::anyhow!("x").context("reading a").context("in b");
        assert_eq!(report(&e), "in b: reading a: x");
    }

    #[test]
    fn uris_are_checked() {
        assert!(check_call_uri("call", "sip:bob@example.test").is_ok());
        assert!(check_call_uri("call", "tel:+15551234").is_ok());
        let e = check_call_uri("call", "bob@example.test").unwrap_err();
        assert_eq!(
            e.to_string(),
            "call bob@example.test: not a SIP URI (sip:bob@example.test?)"
        );
        assert!(check_call_uri("call", "http://x").is_err());
        assert!(check_aor("sip:alice@example.test").is_ok());
        assert!(check_aor("sips:alice@example.test").is_ok());
        assert!(check_aor("sip:example.test").is_err());
        assert!(check_aor("tel:+1555").is_err());
        assert!(check_sip_uri("--registrar", "sip:127.0.0.1:5060;transport=tcp").is_ok());
        assert!(check_sip_uri("--registrar", "127.0.0.1:5060").is_err());
    }

    /// A DNS failure names the host.
    #[test]
    fn an_unresolved_host_is_named() {
        let e = register_error(
            siproam::EndpointError::Resolve(siproam::resolve::ResolveError::NotFound),
            "registrar",
            "sip:example.invalid;transport=tcp",
        );
        assert!(
            report(&e).starts_with("cannot resolve registrar host example.invalid: "),
            "{}",
            report(&e)
        );
    }

    #[test]
    fn registration_failures_in_words() {
        let f = |failure, code, pw| {
            registration_failure(Some(failure), code, "alice", pw, "sip:127.0.0.1:5999", 32)
                .unwrap()
        };
        assert_eq!(
            f(RegistrationFailure::Status(403), Some(403), true),
            "registration refused: the registrar rejected user alice's credentials (403)"
        );
        assert_eq!(
            f(RegistrationFailure::AuthenticationFailed, Some(401), true),
            "registration refused: the registrar rejected user alice's credentials (401: wrong password?)"
        );
        assert!(
            f(RegistrationFailure::AuthenticationFailed, Some(401), false)
                .contains("no password was given")
        );
        assert_eq!(
            f(RegistrationFailure::Status(403), Some(403), false),
            "registration refused: 403 Forbidden"
        );
        assert_eq!(
            f(RegistrationFailure::Timeout, Some(408), true),
            "registration failed: no answer from 127.0.0.1:5999 (timeout after 32 s)"
        );
        assert_eq!(
            call_failure(Some(404), None, true),
            "call failed: 404 Not Found"
        );
    }
}
