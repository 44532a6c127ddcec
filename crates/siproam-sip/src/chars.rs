//! Character classes of the RFC 3261 grammar, as lookup tables.
//!
//! Owns nothing but constants; every parser in the crate classifies bytes
//! through these tables so that the grammar lives in one place.
//!
//! Indexing here is into 256-entry tables with a `u8`, which cannot be out
//! of bounds: the one place in the crate where `indexing_slicing` is
//! allowed.
#![allow(clippy::indexing_slicing)]

const fn table(extra: &[u8], alnum: bool) -> [bool; 256] {
    let mut t = [false; 256];
    if alnum {
        let mut c = b'0';
        while c <= b'9' {
            t[c as usize] = true;
            c += 1;
        }
        c = b'a';
        while c <= b'z' {
            t[c as usize] = true;
            t[(c - 32) as usize] = true;
            c += 1;
        }
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

static TOKEN: [bool; 256] = table(b"-.!%*_+`'~", true);
static WORD: [bool; 256] = table(b"-.!%*_+`'~()<>:\\\"/[]?{}", true);
static USER: [bool; 256] = table(b"-_.!~*'()&=+$,;?/", true);
static PASSWORD: [bool; 256] = table(b"-_.!~*'()&=+$,", true);
static PARAM: [bool; 256] = table(b"-_.!~*'()[]/:&+$", true);
static HNV: [bool; 256] = table(b"-_.!~*'()[]/?:+$", true);
static HOST: [bool; 256] = table(b"-.", true);

/// `token` characters (RFC 3261 §25.1).
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// `word` characters (Call-ID).
#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    WORD[b as usize]
}

/// Characters allowed unescaped in the user part of a SIP URI.
#[inline]
pub(crate) fn is_user(b: u8) -> bool {
    USER[b as usize]
}

/// Characters allowed unescaped in the password part of a SIP URI.
#[inline]
pub(crate) fn is_password(b: u8) -> bool {
    PASSWORD[b as usize]
}

/// Characters allowed unescaped in a URI parameter name or value.
#[inline]
pub(crate) fn is_paramchar(b: u8) -> bool {
    PARAM[b as usize]
}

/// Characters allowed unescaped in a URI header name or value.
#[inline]
pub(crate) fn is_hnv(b: u8) -> bool {
    HNV[b as usize]
}

/// Characters of a host name.
#[inline]
pub(crate) fn is_host(b: u8) -> bool {
    HOST[b as usize]
}

/// Linear white space inside a header value: folding leaves CR and LF in a
/// value, always followed by SP or HTAB, so all four count as white space.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// True when every byte is a `token` character and there is at least one.
pub(crate) fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// Trims LWS (including folding) from both ends.
pub(crate) fn trim_lws(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b.iter().position(|&c| !is_lws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !is_lws(c)).map_or(start, |p| p + 1);
    // both ends sit next to ASCII bytes, so they are char boundaries
    s.get(start..end).unwrap_or_default()
}

/// Checks that every `%` in `s` starts a `%HH` escape and every other byte
/// satisfies `allowed`.
pub(crate) fn is_escaped_with(s: &str, allowed: fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if allowed(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Decodes `%HH` escapes. Invalid escapes are kept as they are.
pub(crate) fn unescape(s: &str) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            if let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) {
                if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() {
                    out.push(hex_val(h) << 4 | hex_val(l));
                    i += 3;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Finds the first `target` byte at or after `from`, outside quoted
/// strings (honouring `\` escapes inside them) and, when `skip_angles` is
/// set, outside `<…>`. Jumps between interesting bytes with `memchr`.
pub(crate) fn find_unquoted(s: &str, from: usize, skip_angles: bool, target: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = from;
    loop {
        let rest = b.get(i..)?;
        let hit = if skip_angles {
            memchr::memchr3(target, b'"', b'<', rest)
        } else {
            memchr::memchr2(target, b'"', rest)
        }?;
        i += hit;
        match b.get(i) {
            Some(&c) if c == target => return Some(i),
            Some(b'"') => {
                // skip the quoted string
                i += 1;
                loop {
                    match b.get(i) {
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                        None => return None,
                    }
                }
            }
            Some(b'<') => {
                let close = memchr::memchr(b'>', b.get(i..)?)?;
                i += close + 1;
            }
            _ => return None,
        }
    }
}

/// Decodes the quoted-pairs (`\x` → `x`) of a quoted string's inside.
pub(crate) fn unescape_quoted_pairs(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses a decimal number of at most `u32` range; no sign, no blanks.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Length of the quoted string at the start of `s` (including both quotes),
/// or `None` when `s` does not start with a complete quoted string.
pub(crate) fn quoted_string_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => {
                // quoted-pair: any byte but CR and LF
                match b.get(i + 1) {
                    Some(b'\r') | Some(b'\n') | None => return None,
                    _ => i += 2,
                }
            }
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(is_token(b'!') && is_token(b'a') && !is_token(b' ') && !is_token(b'"'));
        assert!(is_word(b'<') && !is_word(b' '));
        assert!(is_escaped_with("a%20b", is_user));
        assert!(!is_escaped_with("a%2", is_user));
        assert!(!is_escaped_with("a b", is_user));
        assert_eq!(&*unescape("cal%6Cer"), b"caller");
        assert_eq!(find_unquoted("\"a,b\" <x,y>, z", 0, true, b','), Some(11));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(trim_lws(" \r\n x \t"), "x");
    }
}
