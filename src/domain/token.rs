use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::{AuthFailure, Error};

/// Length of a token's text: 32 random bytes in base64url without padding.
pub const TOKEN_LEN: usize = 43;

/// A session's secret. Only ever shown once, at login; Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh 256-bit token from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| Error::Internal(format!("no randomness available: {e}")))?;
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token for a session of `org`: its first two bytes are the org's
    /// [`org_hint`] (so a sharded store finds the org's shard from the token
    /// alone), the other 240 bits are random.
    pub fn generate_for_org(org: &str) -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes[2..])
            .map_err(|e| Error::Internal(format!("no randomness available: {e}")))?;
        bytes[..2].copy_from_slice(&org_hint(org).to_be_bytes());
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Checks the shape of a presented token; anything else is UNAUTHENTICATED.
    pub fn parse(text: &str) -> Result<Self, Error> {
        decode(text)?;
        Ok(Token(text.to_owned()))
    }

    /// The digest of a presented token text, after the same check as
    /// [`Token::parse`]: the validation path's one step, which copies
    /// nothing and decodes the text once.
    pub fn digest_of(text: &str) -> Result<TokenDigest, Error> {
        Ok(digest_with(text, &decode(text)?))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The digest the store keeps instead of the token: SHA-256 of the
    /// text, its first two bytes replaced by the token's hint (so the digest
    /// still names the shard; 240 bits of hash remain).
    pub fn digest(&self) -> TokenDigest {
        let mut raw = [0u8; 33];
        let _ = URL_SAFE_NO_PAD.decode_slice(&self.0, &mut raw);
        digest_with(&self.0, &raw)
    }
}

/// The 32 bytes a well-formed token text stands for (in a buffer of 33: the
/// decoder wants room for a partial last group); anything else is
/// UNAUTHENTICATED.
fn decode(text: &str) -> Result<[u8; 33], Error> {
    let mut bytes = [0u8; 33];
    let well_formed = text.len() == TOKEN_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && URL_SAFE_NO_PAD
            .decode_slice(text, &mut bytes)
            .is_ok_and(|n| n == 32);
    if well_formed {
        Ok(bytes)
    } else {
        Err(Error::Unauthenticated(AuthFailure::TokenInvalid))
    }
}

fn digest_with(text: &str, raw: &[u8; 33]) -> TokenDigest {
    let mut d: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    d[..2].copy_from_slice(&raw[..2]);
    TokenDigest(d)
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a token: the only form in which a store holds it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// The org hint the token carries (see [`Token::generate_for_org`]).
    pub fn hint(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }
}

/// A stable 16-bit hash of a name (FNV-1a folded): which shard an org's
/// data lives in is this modulo the store's shard count.
pub fn org_hint(name: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in name.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xffff)) as u16
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TOKEN_LEN);
        assert_eq!(Token::parse(a.as_str()).unwrap().digest(), a.digest());
        assert_eq!(Token::digest_of(a.as_str()).unwrap(), a.digest());
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn org_tokens_carry_the_org_hint() {
        let t = Token::generate_for_org("example.com").unwrap();
        assert_eq!(t.as_str().len(), TOKEN_LEN);
        assert_eq!(t.digest().hint(), org_hint("example.com"));
        assert_eq!(Token::parse(t.as_str()).unwrap().digest(), t.digest());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in [
            "",
            "short",
            &"a".repeat(44),
            &"+".repeat(43),
            &"é".repeat(22),
        ] {
            assert_eq!(
                Token::parse(bad),
                Err(Error::Unauthenticated(AuthFailure::TokenInvalid))
            );
            assert_eq!(
                Token::digest_of(bad),
                Err(Error::Unauthenticated(AuthFailure::TokenInvalid))
            );
        }
    }
}
