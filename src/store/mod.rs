//! `trait Store` and its implementations. The application service is written
//! against the trait only; each backend lives in its own file.

use std::sync::Arc;

use async_trait::async_trait;

use std::time::Duration;

use crate::domain::{
    Actor, Audit, AuditRecord, EndReason, Kind, Millis, NewSession, NewUser, Result, Revocation,
    Session, TokenDigest, User, UserRecord,
};

pub mod redis;
pub mod sqlite;
mod sqlite_cache;
pub mod traced;

/// Sessions over the cap ended by one login at most (a cap lowered on a
/// store holding more converges over the following logins).
pub const MAX_CAP_ENDINGS: usize = 100;

/// Validations a store remembers at most (SQLite's and Redis's caches);
/// past this a cache starts over, so a flood of distinct valid tokens
/// cannot grow memory without bound.
pub(crate) const MAX_REMEMBERED: usize = 65_536;

/// The audit line of a session ended by the live-session cap.
pub fn cap_audit(id: i32) -> Audit {
    Audit {
        actor: Actor::user("system", None),
        target: format!("session:{id}"),
    }
}

/// Ends the oldest live sessions of `session`'s user beyond `cap` (0: no
/// cap), each on its own (`Store::end_session`: event, audit record);
/// returns how many ended.
pub async fn end_over_cap<S: Store + ?Sized>(
    store: &S,
    session: &Session,
    cap: u32,
    now: Millis,
) -> Result<u32> {
    if cap == 0 {
        return Ok(0);
    }
    let cap = cap as usize;
    let live = store
        .list_sessions(
            ListQuery {
                org: session.org.clone(),
                username: Some(session.username.clone()),
                kind: None,
                after_id: 0,
                limit: cap.saturating_add(MAX_CAP_ENDINGS),
            },
            now,
        )
        .await?;
    let mut ended = 0;
    let excess = live.len().saturating_sub(cap);
    for old in live.iter().filter(|s| s.id != session.id).take(excess) {
        let done = store
            .end_session(
                EndTarget {
                    id: old.id,
                    org: Some(session.org.clone()),
                    kind: None,
                },
                EndReason::SessionLimit,
                now,
                &cap_audit(old.id),
            )
            .await?;
        ended += u32::from(done.is_some());
    }
    Ok(ended)
}

/// Which single session to end. `org` and `kind`, when set, must match too, so
/// a session outside the caller's reach is treated exactly like a missing one.
#[derive(Debug, Clone)]
pub struct EndTarget {
    pub id: i32,
    pub org: Option<String>,
    pub kind: Option<Kind>,
}

/// Which sessions a bulk ending covers (always narrowed by kinds).
#[derive(Debug, Clone)]
pub enum Scope {
    User(i64),
    Org(String),
    /// Every session of the user but one (the caller's own, kept on request).
    UserExcept {
        user: i64,
        keep: i32,
    },
}

/// One page of live sessions of an org, in increasing id order.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub org: String,
    pub username: Option<String>,
    pub kind: Option<Kind>,
    /// Only ids greater than this (the paging cursor).
    pub after_id: i32,
    pub limit: usize,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Sessions that passed their deadline and were ended as EXPIRED.
    pub expired: u32,
    /// Ended sessions and revocation events older than retention, removed.
    pub purged: u32,
}

/// Persistence for users and sessions. "Live" always means: not ended, and
/// `now` before both `expires_at` and `idle_deadline`. Every ending records
/// one revocation event per session and one audit record per call that
/// ended anything, in the same transaction, and is durable when the call
/// returns.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap reachability check (health).
    async fn ping(&self) -> Result<()>;

    /// Fails with `AlreadyExists` when the username is taken.
    async fn create_user(&self, user: NewUser) -> Result<User>;
    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    /// False when there is no such user.
    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool>;
    /// Replaces the user's password hash only while it is still `old` (a
    /// rehash at a new cost after a successful login must never undo a
    /// password change that landed meanwhile). True when replaced.
    async fn rehash_password(&self, username: &str, old: &str, new: String) -> Result<bool>;
    /// Disabling also ends every live session of the user (as LOGOFF_OTHER) in
    /// the same transaction, audited as done by `actor`. False when there is
    /// no such user.
    async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: Millis,
        actor: &Actor,
    ) -> Result<bool>;

    /// Ends the user's live sessions (recorded like a disable) and removes
    /// the user, so its name can be reused; events and audit records stay.
    /// False when there is no such user.
    async fn delete_user(&self, username: &str, now: Millis, actor: &Actor) -> Result<bool>;

    /// Fails with `Unauthenticated(BadCredentials)` if the user was disabled or
    /// removed meanwhile; ids are positive, increasing and never reused.
    async fn create_session(&self, new: NewSession) -> Result<Session>;
    /// Creates a session, then keeps its user at `cap` live sessions (0: no
    /// cap): the oldest beyond it end (`SessionLimit`), each with its
    /// revocation event and an audit record by `system` (target
    /// `session:<id>`). Atomic with the creation where the store allows
    /// (SQLite: one transaction); otherwise each ending is atomic on its
    /// own, right after the creation. Ends at most
    /// [`MAX_CAP_ENDINGS`] at once. Returns the session and how many ended.
    async fn create_session_capped(&self, new: NewSession, cap: u32) -> Result<(Session, u32)> {
        let now = new.now;
        let session = self.create_session(new).await?;
        let ended = end_over_cap(self, &session, cap, now).await?;
        Ok((session, ended))
    }
    async fn find_live_session(&self, digest: &TokenDigest, now: Millis)
        -> Result<Option<Session>>;
    /// Records use of a live session (the caller coalesces these writes).
    async fn touch_session(&self, id: i32, now: Millis, idle_deadline: Millis) -> Result<()>;
    /// Ends one live session; `None` (and no audit record) when no live
    /// session matches the target.
    async fn end_session(
        &self,
        target: EndTarget,
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<Option<Session>>;
    /// Ends every live session in `scope` whose kind is in `kinds`, atomically:
    /// a session created before the call began cannot survive it. Audited
    /// when anything ended; a call that ends nothing writes no record.
    async fn end_sessions(
        &self,
        scope: Scope,
        kinds: &[Kind],
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<u32>;
    async fn list_sessions(&self, query: ListQuery, now: Millis) -> Result<Vec<Session>>;
    /// Ends sessions past their deadline (EXPIRED, audited per org as done by
    /// `system`), removes ended sessions and events older than `purge_before`
    /// and audit records older than `audit_purge_before`.
    async fn sweep(
        &self,
        now: Millis,
        purge_before: Millis,
        audit_purge_before: Millis,
    ) -> Result<SweepReport>;

    /// Up to `limit` audit records of `org` with id greater than `after`,
    /// oldest first.
    async fn list_audit(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Live sessions by kind (for the metrics gauge).
    async fn live_counts(&self, now: Millis) -> Result<Vec<(Kind, u64)>>;

    /// How many event logs (shards) the store keeps, each with its own
    /// increasing sequence: 1 for SQLite.
    fn shards(&self) -> u16 {
        1
    }
    /// The shard whose event log holds the events of `org`.
    fn shard_of(&self, _org: &str) -> u16 {
        0
    }
    /// The sequence of the newest revocation event of a shard (0 when there
    /// is none).
    async fn last_sequence(&self, shard: u16) -> Result<u64>;
    /// Up to `limit` events of a shard with sequence greater than `after`,
    /// oldest first. `CursorExpired` when events after `after` were already
    /// purged.
    async fn revocations_after(
        &self,
        shard: u16,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Revocation>>;
    /// Returns once a shard of `after` (shard, sequence) may have an event
    /// newer than its sequence, or after `timeout`. Spurious returns are
    /// allowed; callers re-read with `revocations_after`.
    async fn wait_for_revocation(&self, after: &[(u16, u64)], timeout: Duration) -> Result<()>;
    /// Of the shards in `after`, those known to have newer events (so a
    /// watcher of many shards reads only those); `None` when the store
    /// cannot tell (read them all).
    fn fresh_shards(&self, _after: &[(u16, u64)]) -> Option<Vec<u16>> {
        None
    }

    /// Whether the store keeps the credential-failure counters and the
    /// rate-limit windows, shared by every replica (Redis). Otherwise each
    /// process counts in memory.
    fn shares_counters(&self) -> bool {
        false
    }
    /// Counts one call of a rate-limited key (`lu:<user>`, `la:<address>`,
    /// `eu:<user>`, `ea:<address>`) in a fixed window that starts with its
    /// first call: `None` when counted, or, when it already made `max`
    /// calls in its window, the time left (and nothing is counted).
    async fn count_call(
        &self,
        _key: &str,
        _max: u32,
        _window: Duration,
    ) -> Result<Option<Duration>> {
        Ok(None)
    }
    /// Like [`Store::count_call`], but counts nothing.
    async fn calls_exhausted(&self, _key: &str, _max: u32) -> Result<Option<Duration>> {
        Ok(None)
    }
    /// (failures, time left in the window) of a counter (`u:<user>`,
    /// `ua:<user>\x1f<address>` or `a:<address>`); (0, 0) when it has none.
    async fn failures(&self, _key: &str) -> Result<(u32, Duration)> {
        Ok((0, Duration::ZERO))
    }
    /// Counts one failure; the window starts with the first failure.
    async fn record_failure(&self, _key: &str, _window: Duration) -> Result<()> {
        Ok(())
    }
    async fn clear_failures(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    /// Called once after a clean stop, when no call is in flight any more
    /// (SQLite checkpoints its WAL into the main file).
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// Whether the store holds any user or ever created a session. A store
    /// that did and then does not lost its data (a Redis restarted without
    /// persistence); the health watch reports that.
    async fn holds_data(&self) -> Result<bool> {
        Ok(true)
    }
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
