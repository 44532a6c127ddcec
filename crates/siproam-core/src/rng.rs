//! The stack's one random module: a ChaCha20 generator (a cryptographically
//! secure generator, as used by the `rand` crate's `StdRng` family) that
//! the core only ever draws from through [`Rng`].
//!
//! The core never asks the operating system for randomness itself: the
//! seed comes in as an input. In production the driver seeds it with 32
//! bytes from the OS's secure generator ([`crate::Config::entropy`]), so
//! tags, Call-IDs, branches, cnonces and nonces cannot be guessed by an
//! off-path attacker; the simulator seeds it with a number
//! ([`crate::Config::seed`]) so every run can be replayed.

use chacha20::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};

/// The core's random generator: ChaCha20, seeded by the caller.
pub struct Rng {
    inner: ChaCha20Rng,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the state: it would give every future identifier away
        f.write_str("Rng(ChaCha20)")
    }
}

impl Rng {
    /// A replayable generator for tests and the simulator: the 64-bit seed
    /// is spread over a 32-byte key with SplitMix64. Not for production
    /// identifiers (64 bits of seed can be searched); use
    /// [`Rng::from_seed`] with the OS's randomness there.
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let mut key = [0u8; 32];
        for chunk in key.chunks_exact_mut(8) {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        Rng::from_seed(key)
    }

    /// A generator keyed with 32 bytes (from the OS's secure generator in
    /// production).
    pub fn from_seed(seed: [u8; 32]) -> Rng {
        Rng {
            inner: ChaCha20Rng::from_seed(seed),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Fills `dst` with random bytes.
    pub fn fill(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst);
    }

    /// A uniform number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `len` random characters from `[0-9a-z]` (5.17 bits each, drawn
    /// without modulo bias).
    pub fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut out = String::with_capacity(len);
        let mut bits = 0u64;
        let mut left = 0u32;
        while out.len() < len {
            if left < 6 {
                bits = self.next_u64();
                left = 64;
            }
            // 6 bits at a time; values 36..63 are rejected (no bias)
            let v = (bits & 0x3f) as usize;
            bits >>= 6;
            left -= 6;
            if let Some(&c) = ALPHABET.get(v) {
                out.push(char::from(c));
            }
        }
        out
    }

    /// A random `urn:uuid:` (RFC 9562 version 4), e.g. for
    /// `+sip.instance`.
    pub fn uuid_urn(&mut self) -> String {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let mut out = String::with_capacity(45);
        out.push_str("urn:uuid:");
        for (i, x) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out.push('-');
            }
            out.push_str(&format!("{x:02x}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_replayable() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.token(10), b.token(10));
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        let u = a.unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn keyed_generators_differ_and_tokens_use_the_whole_alphabet() {
        let mut a = Rng::from_seed([1; 32]);
        let mut b = Rng::from_seed([2; 32]);
        assert_ne!(a.token(20), b.token(20));
        let t = a.token(4000);
        assert_eq!(t.len(), 4000);
        for c in "0123456789abcdefghijklmnopqrstuvwxyz".chars() {
            assert!(t.contains(c), "{c} never drawn");
        }
        assert!(t
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    }

    #[test]
    fn uuid_is_version_4() {
        let u = Rng::from_seed([9; 32]).uuid_urn();
        assert_eq!(u.len(), "urn:uuid:".len() + 36);
        let b = u.as_bytes();
        assert_eq!(b.get(9 + 14), Some(&b'4'));
        assert!(matches!(b.get(9 + 19), Some(b'8' | b'9' | b'a' | b'b')));
        assert_eq!(b.get(9 + 8), Some(&b'-'));
    }
}
