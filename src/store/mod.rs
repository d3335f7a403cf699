//! The store, split by job: one trait per job ([`UserStore`],
//! [`SessionStore`], [`FeedStore`], [`CounterStore`], [`AuditStore`],
//! [`UpkeepStore`], [`SignalStore`]), each declared in the file of its name, and [`Store`],
//! their sum, for the places that need everything. Each backend keeps the
//! same job in the file of the same name (`sqlite/sessions.rs`,
//! `redis/sessions.rs`, ...). The application service is written against
//! the traits only.

use std::sync::Arc;

use crate::domain::Result;

pub mod audit;
pub mod counters;
pub mod feed;
pub mod redis;
pub mod sessions;
pub mod signals;
pub mod sqlite;
pub mod traced;
pub mod upkeep;
pub mod users;

pub use audit::AuditStore;
pub use counters::CounterStore;
pub use feed::FeedStore;
pub use sessions::{
    cap_audit, end_over_cap, EndTarget, ListQuery, Scope, SessionStore, MAX_CAP_ENDINGS,
};
pub use signals::{LeaseAction, SignalStore, SigningKeyRecord, StreamRecord};
pub use upkeep::{SweepReport, UpkeepStore};
pub use users::UserStore;

/// Validations a store remembers at most (SQLite's and Redis's caches);
/// past this a cache starts over, so a flood of distinct valid tokens
/// cannot grow memory without bound.
pub(crate) const MAX_REMEMBERED: usize = 65_536;

/// Everything a store does: the sum of the job traits, implemented for
/// every type that implements them all.
pub trait Store:
    UserStore + SessionStore + FeedStore + CounterStore + AuditStore + UpkeepStore + SignalStore
{
}

impl<T> Store for T where
    T: UserStore + SessionStore + FeedStore + CounterStore + AuditStore + UpkeepStore + SignalStore
{
}

/// Where the data lives, parsed from `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    SqliteFile(std::path::PathBuf),
    SqliteMemory,
    Redis(String),
    /// `redis-cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT…]`: seed nodes of a
    /// Redis Cluster.
    RedisCluster(String),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "sqlite::memory:" {
            Ok(StoreUrl::SqliteMemory)
        } else if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://sessiond.db".into());
            }
            Ok(StoreUrl::SqliteFile(path.into()))
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(StoreUrl::Redis(s.to_owned()))
        } else if s.starts_with("redis-cluster://") {
            self::redis::cluster_nodes(s)?;
            Ok(StoreUrl::RedisCluster(s.to_owned()))
        } else {
            Err(format!(
                "unknown store {}: expected sqlite://PATH, sqlite::memory:, redis://HOST:PORT/ \
                 or redis-cluster://HOST:PORT[,HOST:PORT…]",
                redact_userinfo(s)
            ))
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::SqliteFile(p) => write!(f, "sqlite://{}", p.display()),
            StoreUrl::SqliteMemory => f.write_str("sqlite::memory:"),
            // Host and database, never the password a redis URL may hold.
            StoreUrl::Redis(url) | StoreUrl::RedisCluster(url) => {
                f.write_str(&redact_userinfo(url))
            }
        }
    }
}

/// `scheme://user:secret@host/…` → `scheme://<redacted>@host/…`.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redacted>".into();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// How a store is opened, beyond its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// Prefix of every Redis key (inside the hash tag), so two deployments
    /// can share one Redis.
    pub redis_prefix: String,
    /// Shards of a Redis store (fixed when the store is created; a store
    /// created with another count is refused).
    pub redis_shards: u16,
    /// Replicas that must confirm an ending (Redis `WAIT`) before it is
    /// acknowledged; 0: the primary's word is enough.
    pub redis_replica_acks: u32,
    /// Refuse to create a SQLite file that does not exist yet (the `user`
    /// command, so a typo in a path cannot start an empty store).
    pub must_exist: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            redis_prefix: "sessiond".into(),
            redis_shards: self::redis::DEFAULT_SHARDS,
            redis_replica_acks: 0,
            must_exist: false,
        }
    }
}

/// Opens the store a URL names, with the default options.
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn Store>> {
    open_with(url, &OpenOptions::default()).await
}

/// Opens the store a URL names. A SQLite file must be writable: a store
/// that cannot record an ending is refused here, with the OS's reason,
/// rather than answering UNAVAILABLE to every call later.
pub async fn open_with(url: &StoreUrl, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    match url {
        StoreUrl::SqliteFile(path) => {
            if options.must_exist && !path.exists() {
                return Err(crate::domain::Error::Unavailable(format!(
                    "store {url} does not exist"
                )));
            }
            Ok(Arc::new(sqlite::SqliteStore::open(path).await?))
        }
        StoreUrl::SqliteMemory => Ok(Arc::new(sqlite::SqliteStore::open_memory().await?)),
        StoreUrl::Redis(_) | StoreUrl::RedisCluster(_) => Ok(Arc::new(
            self::redis::RedisStore::open_with(url, options).await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_print_without_secrets() {
        for (url, shown) in [
            (
                "redis://:hunter2@10.0.0.1:6379/0",
                "redis://<redacted>@10.0.0.1:6379/0",
            ),
            ("rediss://u:p@h:1/", "rediss://<redacted>@h:1/"),
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            (
                "redis-cluster://:pw@10.0.0.1:7000,10.0.0.2:7000",
                "redis-cluster://<redacted>@10.0.0.1:7000,10.0.0.2:7000",
            ),
        ] {
            let parsed: StoreUrl = url.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
        }
    }
}
