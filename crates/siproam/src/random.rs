//! Randomness from the operating system's secure generator, for the
//! driver and the programs built on it.
//!
//! The sans-IO core draws from its own ChaCha20 generator
//! ([`siproam_core::Rng`]); this module gives it its key (32 bytes from
//! the OS) so identifiers cannot be predicted. Nothing in the stack seeds
//! a generator from the clock.

use siproam_core::Rng;

/// Why the OS could not give randomness (it essentially never happens on
/// Linux after boot).
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random generator failed: {0}")]
pub struct RandomError(getrandom::Error);

/// 32 bytes from the OS's secure generator.
pub fn os_seed() -> Result<[u8; 32], RandomError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(RandomError)?;
    Ok(key)
}

/// 64 bits from the OS's secure generator.
pub fn os_u64() -> Result<u64, RandomError> {
    getrandom::u64().map_err(RandomError)
}

/// A ChaCha20 generator keyed from the OS.
pub fn os_rng() -> Result<Rng, RandomError> {
    os_seed().map(Rng::from_seed)
}

/// A fresh random `urn:uuid:` (version 4) for `+sip.instance`.
pub fn instance_id() -> Result<String, RandomError> {
    os_rng().map(|mut r| r.uuid_urn())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_differ() {
        assert_ne!(os_seed().ok(), os_seed().ok());
        let (a, b) = (instance_id().ok(), instance_id().ok());
        assert!(a.as_deref().is_some_and(|u| u.starts_with("urn:uuid:")));
        assert_ne!(a, b);
    }
}
