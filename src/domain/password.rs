//! Argon2id password hashing. These calls are CPU-heavy and blocking; the
//! application service runs them on the blocking pool behind a semaphore.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::Error;

/// Argon2id cost parameters. Production defaults are OWASP's (19 MiB, 2 passes);
/// tests configure cheap ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Hashes new passwords at a configured cost and verifies stored hashes (each
/// at the cost recorded in it).
pub struct Hasher {
    params: Params,
    /// A hash of a random password at the current cost: verifying against it
    /// makes an unknown user cost the same time as a wrong password.
    dummy_hash: String,
    /// The same at the cost of the stored hash verified last, when that
    /// differs: after the configured cost changes, stored hashes keep their
    /// old cost, and an unknown user must cost what they cost.
    matched_dummy: std::sync::Mutex<Option<(Params, String)>>,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    pub fn new(cost: HashCost) -> Result<Self, Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| Error::Internal(format!("bad argon2 parameters: {e}")))?;
        let mut hasher = Hasher {
            params,
            dummy_hash: String::new(),
            matched_dummy: std::sync::Mutex::new(None),
        };
        let mut random = [0u8; 24];
        getrandom::getrandom(&mut random)
            .map_err(|e| Error::Internal(format!("no randomness available: {e}")))?;
        hasher.dummy_hash = hasher.hash(&base64_of(&random))?;
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC-format Argon2id hash with a fresh 128-bit salt.
    pub fn hash(&self, password: &str) -> Result<String, Error> {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt)
            .map_err(|e| Error::Internal(format!("no randomness available: {e}")))?;
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| Error::Internal(format!("salt encoding: {e}")))?;
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("password hashing: {e}")))
    }

    /// True when `password` matches `stored`. With `None` (unknown user) it
    /// spends the same work on the dummy hash and returns false.
    pub fn verify(&self, stored: Option<&str>, password: &str) -> bool {
        let matched = match stored {
            Some(_) => None,
            None => self.current_dummy(),
        };
        let (hash, real) = match (stored, &matched) {
            (Some(h), _) => (h, true),
            (None, Some(dummy)) => (dummy.as_str(), false),
            (None, None) => (self.dummy_hash.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        if real {
            self.remember_params(&parsed);
        }
        let ok = self
            .argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    }

    /// Whether a stored hash (of a password that just matched) was made
    /// at another cost than the configured one, or with another algorithm:
    /// then it is replaced by a hash at the configured cost, so the cost
    /// of every user converges to it (and so does the time an unknown user
    /// takes, which follows the stored hashes).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13 as u32)
        {
            return true;
        }
        Params::try_from(&parsed).map_or(true, |p| !same_cost(&p, &self.params))
    }

    fn current_dummy(&self) -> Option<String> {
        let guard = self.matched_dummy.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|(_, h)| h.clone())
    }

    /// Keeps a dummy hash with the cost of the stored hash just seen, when
    /// it differs from the configured cost (made once per change of cost).
    fn remember_params(&self, stored: &PasswordHash<'_>) {
        let Ok(params) = Params::try_from(stored) else {
            return;
        };
        let mut guard = self.matched_dummy.lock().unwrap_or_else(|p| p.into_inner());
        if same_cost(&params, &self.params) {
            *guard = None;
            return;
        }
        if guard.as_ref().is_some_and(|(p, _)| same_cost(p, &params)) {
            return;
        }
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut salt = [0u8; 16];
        if getrandom::getrandom(&mut salt).is_err() {
            return;
        }
        let Ok(salt) = SaltString::encode_b64(&salt) else {
            return;
        };
        if let Ok(h) = other.hash_password(&salt.as_str().as_bytes()[..8], &salt) {
            *guard = Some((params, h.to_string()));
        }
    }
}

fn same_cost(a: &Params, b: &Params) -> bool {
    (a.m_cost(), a.t_cost(), a.p_cost()) == (b.m_cost(), b.t_cost(), b.p_cost())
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Hasher {
        Hasher::new(HashCost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn hashes_verify_and_are_salted() {
        let h = cheap();
        let a = h.hash("pencil75").unwrap();
        let b = h.hash("pencil75").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(h.verify(Some(&a), "pencil75"));
        assert!(!h.verify(Some(&a), "pencil76"));
        assert!(!h.verify(None, "pencil75"));
        assert!(!h.verify(Some("not a hash"), "pencil75"));
        assert!(!format!("{h:?}").contains("argon2id$"));
    }

    #[test]
    fn a_hash_at_another_cost_needs_a_rehash() {
        let h = cheap();
        let same = h.hash("pencil75").unwrap();
        assert!(!h.needs_rehash(&same));
        let other = Hasher::new(HashCost {
            memory_kib: 128,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
        .hash("pencil75")
        .unwrap();
        assert!(h.needs_rehash(&other));
        assert!(!h.needs_rehash("not a hash"));
    }
}
