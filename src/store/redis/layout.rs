//! Where every key lives: shards, hash tags and name encoding.
//!
//! A store has a fixed number of shards, recorded at creation. Shard `s` is
//! the hash tag `{<prefix>:<s>}`, so on a Redis Cluster each shard is one
//! hash slot (and on a single Redis just a key prefix). Everything of an
//! organization lives in the shard of its name, [`org_hint`] modulo the shard
//! count; tokens carry the same hint, so a token finds its shard by itself.
//!
//! User-chosen names (usernames, orgs) appear in key names only hex-encoded:
//! they can neither contain a brace (and so steer a key's slot) nor collide
//! with another key.

use std::fmt::Write as _;

pub use crate::domain::token::org_hint;

/// Shards of a new store unless `--redis-shards` says otherwise.
pub const DEFAULT_SHARDS: u16 = 16;
/// Most shards a store may have.
pub const MAX_SHARDS: u16 = 1024;

/// Lowercase hex of a name, for use inside key names.
pub fn enc(name: &str) -> String {
    hex_of(name.as_bytes())
}

/// Lowercase hex of bytes (built for every key of every call: one
/// allocation).
pub fn hex_of(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The shard of a username's directory entry (which records its org).
pub fn name_shard(username: &str, shards: u16) -> u16 {
    org_hint(username) % shards
}

/// The shard an id was allocated in (ids are `sequence * shards + shard`).
pub fn id_shard(id: i64, shards: u16) -> u16 {
    u16::try_from(id.rem_euclid(i64::from(shards))).unwrap_or(0)
}

/// Key names of one store.
#[derive(Debug, Clone)]
pub struct Layout {
    pub prefix: String,
    pub shards: u16,
}

impl Layout {
    pub fn org_shard(&self, org: &str) -> u16 {
        org_hint(org) % self.shards
    }

    /// The store-wide record (shard count), outside every shard.
    pub fn meta(&self) -> String {
        format!("{{{}}}:meta", self.prefix)
    }

    /// A key of the Shared Signals transmitter (keys, streams, leases): in
    /// the store-wide tag of [`Self::meta`], as a stream may carry every org.
    pub fn ssf(&self, suffix: &str) -> String {
        format!("{{{}}}:ssf:{suffix}", self.prefix)
    }

    /// `{<prefix>:<shard>}:`, with room for `more` bytes after it: keys are
    /// built on every call (a validation, every session of a bulk ending),
    /// so each is one allocation, never grown.
    fn tagged(&self, shard: u16, more: usize) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 9 + more);
        k.push('{');
        k.push_str(&self.prefix);
        k.push(':');
        let _ = write!(k, "{shard}");
        k.push_str("}:");
        k
    }

    pub fn key(&self, shard: u16, suffix: &str) -> String {
        let mut k = self.tagged(shard, suffix.len());
        k.push_str(suffix);
        k
    }

    /// The user record, in its org's shard.
    pub fn user(&self, shard: u16, username: &str) -> String {
        self.key(shard, &format!("user:{}", enc(username)))
    }

    /// Directory entry: username -> org.
    pub fn name(&self, username: &str) -> String {
        let shard = name_shard(username, self.shards);
        self.key(shard, &format!("name:{}", enc(username)))
    }

    pub fn session(&self, id: i64) -> String {
        let mut k = self.tagged(id_shard(id, self.shards), 22);
        let _ = write!(k, "s:{id}");
        k
    }

    pub fn token(&self, shard: u16, digest_hex: &str) -> String {
        let mut k = self.tagged(shard, 2 + digest_hex.len());
        k.push_str("t:");
        k.push_str(digest_hex);
        k
    }

    /// Live sessions of a user by kind (the user's shard is its org's).
    pub fn live_user(&self, uid: i64, kind: &str) -> String {
        let mut k = self.tagged(id_shard(uid, self.shards), 24 + kind.len());
        let _ = write!(k, "lu:{kind}:{uid}");
        k
    }

    pub fn live_org(&self, org: &str, kind: &str) -> String {
        self.key(self.org_shard(org), &format!("lo:{kind}:{}", enc(org)))
    }

    pub fn audit(&self, org: &str) -> String {
        self.key(self.org_shard(org), &format!("audit:{}", enc(org)))
    }

    /// A credential-failure counter (per username or per address), in a
    /// shard chosen from the counted name.
    pub fn failures(&self, what: &str, name: &str) -> String {
        let shard = org_hint(name) % self.shards;
        self.key(shard, &format!("fail:{what}:{}", enc(name)))
    }

    /// A rate-limit window counter (per username or per address), in a
    /// shard chosen from the counted name.
    pub fn rate(&self, what: &str, name: &str) -> String {
        let shard = org_hint(name) % self.shards;
        self.key(shard, &format!("rate:{what}:{}", enc(name)))
    }
}

/// Redis Cluster's key slot of a hash tag's content (CRC16/XMODEM mod 16384).
pub fn slot(tag_content: &str) -> u16 {
    let mut crc: u16 = 0;
    for &b in tag_content.as_bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The fence field that covers a live index (`…:lo:<KIND>:<hex org>` is
/// fenced by `o:<KIND>:<org>`, `…:lu:<KIND>:<uid>` by `u:<KIND>:<uid>`).
pub fn fence_field(index: &str) -> Option<String> {
    let (_, rest) = index.split_once("}:")?;
    let (scope, rest) = rest.split_once(':')?;
    let (kind, name) = rest.split_once(':')?;
    match scope {
        "lu" => Some(format!("u:{kind}:{name}")),
        "lo" => {
            let bytes = (0..name.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some(format!("o:{kind}:{}", String::from_utf8(bytes).ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("123456789"), 12739);
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex_of(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(enc("a{b}"), "617b627d");
    }

    #[test]
    fn keys_are_tag_then_name() {
        let l = Layout {
            prefix: "sessiond".into(),
            shards: 16,
        };
        assert_eq!(l.key(3, "deadlines"), "{sessiond:3}:deadlines");
        assert_eq!(l.session(1_476_630), "{sessiond:6}:s:1476630");
        assert_eq!(l.session(-1), "{sessiond:15}:s:-1");
        assert_eq!(l.token(6, "f736"), "{sessiond:6}:t:f736");
        assert_eq!(l.live_user(22, "API"), "{sessiond:6}:lu:API:22");
        let long = Layout {
            prefix: "a-much-longer-deployment-prefix".into(),
            shards: 1024,
        };
        let k = long.session(i64::MAX);
        assert_eq!(
            k,
            format!("{{a-much-longer-deployment-prefix:1023}}:s:{}", i64::MAX)
        );
    }

    #[test]
    fn an_index_names_its_fence() {
        let l = Layout {
            prefix: "sessiond".into(),
            shards: 16,
        };
        let org = fence_field(&l.live_org("ex:ample{1}.com", "API"));
        assert_eq!(org.as_deref(), Some("o:API:ex:ample{1}.com"));
        let user = fence_field(&l.live_user(4242, "IMAP"));
        assert_eq!(user.as_deref(), Some("u:IMAP:4242"));
        assert_eq!(fence_field(&l.key(3, "deadlines")), None);
    }

    #[test]
    fn names_cannot_steer_a_slot_or_collide() {
        let l = Layout {
            prefix: "sessiond".into(),
            shards: 16,
        };
        let k = l.live_org("{x}orgs", "API");
        assert!(k.starts_with("{sessiond:"));
        assert_eq!(k.matches('{').count(), 1);
        assert_ne!(l.audit("orgs"), l.key(l.org_shard("orgs"), "audit:orgs"));
    }
}
