//! HMAC-SHA256 tags for what the registrar and proxy hand out and must
//! recognise later without keeping state: digest nonces and Record-Route
//! tokens. The key comes from the configuration (the driver draws it from
//! the operating system's secure generator); nothing here reads a clock or
//! draws randomness.

use std::fmt;

use ring::hmac;

/// Bytes of the tag kept (128 bits), printed as 32 hex digits.
const TAG_BYTES: usize = 16;

/// A keyed HMAC-SHA256.
#[derive(Clone)]
pub(crate) struct Mac {
    key: hmac::Key,
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mac(<redacted>)")
    }
}

impl Mac {
    pub(crate) fn new(key: &[u8; 32]) -> Mac {
        Mac {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The tag of `label` and `data`, as lower-case hex.
    pub(crate) fn tag(&self, label: &[u8], data: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(label);
        // labels are fixed; the data's length keeps (label, data) unambiguous
        ctx.update(&(data.len() as u64).to_be_bytes());
        ctx.update(data);
        let full = ctx.sign();
        let mut out = String::with_capacity(TAG_BYTES * 2);
        for b in full.as_ref().iter().take(TAG_BYTES) {
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
        out
    }

    /// True when `tag` is the tag of `label` and `data` (constant time in
    /// the tag's content).
    pub(crate) fn verify(&self, label: &[u8], data: &[u8], tag: &str) -> bool {
        let expected = self.tag(label, data);
        expected.len() == tag.len()
            && expected
                .bytes()
                .zip(tag.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_verifies_only_for_its_key_label_and_data() {
        let mac = Mac::new(&[7; 32]);
        let tag = mac.tag(b"rr", b"call-1");
        assert_eq!(tag.len(), 32);
        assert!(mac.verify(b"rr", b"call-1", &tag));
        assert!(!mac.verify(b"rr", b"call-2", &tag));
        assert!(!mac.verify(b"nonce", b"call-1", &tag));
        assert!(!Mac::new(&[8; 32]).verify(b"rr", b"call-1", &tag));
        assert!(!mac.verify(b"rr", b"call-1", tag.get(..31).unwrap_or_default()));
        assert!(!mac.verify(b"rr", b"call-1", ""));
    }
}
