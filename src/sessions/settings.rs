//! What the service is configured with: session lifetimes by kind, the
//! security policy, the service credential, and the secrets a caller presents.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::password::HashCost;
use crate::domain::rate::Rate;
use crate::domain::throttle::Limit;
use crate::domain::Kind;

/// Idle timeout and absolute lifetime of one kind of session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 60 * 60),
        }
    }
}

/// The rules the service applies; built from `Config`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub lifetimes: HashMap<Kind, Lifetimes>,
    /// A validation writes `last_seen_at` only when the stored value is at
    /// least this old: one write per session per interval, not per call.
    pub touch_interval: Duration,
    pub hash_cost: HashCost,
    /// Concurrent Argon2 computations; more wait their turn.
    pub hash_concurrency: usize,
    /// Longest wait for an Argon2 slot before the call is shed
    /// (RESOURCE_EXHAUSTED); calls that hash are not counted against the
    /// shared in-flight budget, this queue bounds them instead.
    pub hash_queue_wait: Duration,
    /// Calls waiting for an Argon2 slot at once; more are shed at once.
    pub hash_queue_max: usize,
    pub throttle_user: Limit,
    pub throttle_address: Limit,
    /// A secret that lets a service (not a person) watch every org's revocations.
    pub service_credential: Option<ServiceCredential>,
    /// Shortest password a new or changed password may be, in characters.
    pub min_password_length: usize,
    /// Open WatchRevocations streams per principal (an admin user, or the
    /// service credential); more are refused with RESOURCE_EXHAUSTED.
    pub max_watches_per_principal: usize,
    /// Successful logins per user, and logins tried per client address
    /// (counted when they succeed, checked before any hashing); past
    /// either, RESOURCE_EXHAUSTED until the window ends.
    pub login_rate_user: Rate,
    pub login_rate_address: Rate,
    /// Live sessions per user; a login past it ends the user's oldest live
    /// session (END_REASON_SESSION_LIMIT). 0: no cap.
    pub max_sessions_per_user: u32,
    /// Ending calls (Logoff, LogoffOther, LogoutUser, LogoutAll,
    /// EndUserSessions) per calling user and per client address.
    pub ending_rate_user: Rate,
    pub ending_rate_address: Rate,
}

/// The configured service credential. Only its SHA-256 digest is kept; a
/// presented one is compared in constant time.
#[derive(Clone)]
pub struct ServiceCredential([u8; 32]);

impl ServiceCredential {
    /// Shortest secret accepted, so it cannot be guessed.
    pub const MIN_LEN: usize = 32;

    /// Fewest distinct bytes accepted: rejects `aaaa…`, `abab…` and the like.
    pub const MIN_DISTINCT: usize = 10;

    /// Surrounding whitespace (a file's trailing newline) is not part of
    /// the secret; what is left must be long and varied enough.
    pub fn new(secret: &str) -> std::result::Result<Self, String> {
        let secret = secret.trim();
        if secret.len() < Self::MIN_LEN {
            return Err(format!(
                "the service credential must be at least {} characters",
                Self::MIN_LEN
            ));
        }
        let distinct = secret
            .bytes()
            .collect::<std::collections::BTreeSet<u8>>()
            .len();
        if distinct < Self::MIN_DISTINCT {
            return Err(format!(
                "the service credential is too predictable: it must use at least {} \
                 different characters (e.g. `openssl rand -hex 32`)",
                Self::MIN_DISTINCT
            ));
        }
        Ok(ServiceCredential(Sha256::digest(secret.as_bytes()).into()))
    }

    pub(super) fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

impl fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceCredential(<redacted>)")
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lifetimes: Kind::ALL
                .into_iter()
                .map(|k| (k, Lifetimes::default()))
                .collect(),
            touch_interval: Duration::from_secs(60),
            hash_cost: HashCost::default(),
            // Half the cores: a login storm leaves the rest to validations.
            hash_concurrency: std::thread::available_parallelism()
                .map_or(1, |n| (n.get() / 2).max(1)),
            hash_queue_wait: Duration::from_secs(1),
            hash_queue_max: 256,
            throttle_user: Limit {
                max_failures: 10,
                window: Duration::from_secs(300),
            },
            throttle_address: Limit {
                max_failures: 100,
                window: Duration::from_secs(300),
            },
            service_credential: None,
            min_password_length: 8,
            max_watches_per_principal: 16,
            login_rate_user: Rate::per_minute(600),
            login_rate_address: Rate::per_minute(3000),
            max_sessions_per_user: 500,
            ending_rate_user: Rate::per_minute(600),
            ending_rate_address: Rate::per_minute(3000),
        }
    }
}

impl Policy {
    pub(super) fn lifetimes(&self, kind: Kind) -> Lifetimes {
        self.lifetimes.get(&kind).copied().unwrap_or_default()
    }
}

/// What proves a caller's identity on credential-bearing calls.
#[derive(Clone)]
pub enum Secret {
    Password(String),
    Token(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// Filters and paging of `list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub username: Option<String>,
    pub kind: Option<Kind>,
    pub page_size: usize,
    pub after_id: i32,
}
