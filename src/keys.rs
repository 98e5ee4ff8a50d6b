//! Customer API keys: generated with 256 bits from the OS, shown once, stored only as their
//! SHA-256, looked up by that hash and compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::KeyHash;

/// A new key: 64 hex characters (256 bits of OS randomness).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn matches(a: &KeyHash, b: &KeyHash) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hash_stably() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(matches(&hash(&a), &hash(&a)));
        assert!(!matches(&hash(&a), &hash(&b)));
    }
}
