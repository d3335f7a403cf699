//! The shared store: Redis or Redis Cluster, for many stateless replicas.
//!
//! Layout. A store has a fixed number of shards (`--redis-shards`, recorded
//! in the store when it is created). Shard `s` is the hash tag
//! `{<prefix>:<s>}`: one hash slot on a cluster, a key prefix on a single
//! Redis. Everything of an organization (users, sessions, tokens, live
//! indexes, fences, its revocation events and audit records) lives in the
//! shard of its name, so each change is one atomic script on one primary,
//! and different organizations spread over the primaries. Names are
//! hex-encoded (`<hex>`) wherever they appear in a key.
//!
//! ```text
//! {p}:meta                   hash   shards (the store's shard count)
//! {p:s}:name:<hex user>      string the user's org (in the shard of the username)
//! {p:s}:user:<hex user>      hash   id username org role hash disabled created
//! {p:s}:uids                 hash   user id -> username \x1f org
//! {p:s}:users                set    usernames
//! {p:s}:s:<id>               hash   one live session (deleted when it ends)
//! {p:s}:t:<digest hex>       hash   a copy of the session (validation reads it)
//! {p:s}:lu:<KIND>:<uid>      zset   live session ids of a user, by kind
//! {p:s}:lo:<KIND>:<hex org>  zset   live session ids of an org, by kind
//! {p:s}:fences               hash   o:<KIND>:<org> / u:<KIND>:<uid> -> newest id covered
//!                            (removed once that ending is carried out);
//!                            `#` the shard's version (new at every ending), `#n` its counter
//! {p:s}:pending              hash   live index -> bulk ending still being carried out
//! {p:s}:deadlines            zset   id scored by min(idle deadline, expiry)
//! {p:s}:counts               hash   kind -> sessions not yet ended (gauge)
//! {p:s}:events               stream of ended sessions: an `e` field each; a
//!                            bulk step packs its sessions into one entry,
//!                            whose id is <last sequence>-0
//! {p:s}:events:purged        highest sequence trimmed by retention
//! {p:s}:audit:<hex org>      stream entry id <audit id>-0, one per ending call
//! {p:s}:audit:orgs           set of orgs with an audit stream
//! {p:s}:fail:{u,a}:<hex>     credential failures of a username / an address
//! {p:s}:seq:{user,session,event,audit}  counters
//! ```
//!
//! Ids are `sequence * shards + shard`, so an id names its shard; a token
//! carries its org's hint (see [`crate::domain::Token::generate_for_org`]),
//! so validation is one call to one shard. A username finds its org through
//! its `name:` entry.
//!
//! Bulk endings (LogoutAll, LogoutUser, disable, password change) first
//! record a fence — the shard's newest session id — per covered index: from
//! then on every covered session is invalid (validation checks the fences)
//! and the call is acknowledged. The sessions are then removed, with their
//! events, in bounded batches (by the replica that made the call, or by any
//! replica's sweeper if that one stopped), so no script runs long.

// The store's jobs, each in the file of its name (as in `store/sqlite/`);
// `bulk` holds the fences, drain steps and leases of bulk endings.
mod audit;
mod bulk;
mod conn;
mod counters;
mod decode;
mod feed;
mod layout;
mod remembered;
mod scripts;
mod sessions;
mod signals;
mod upkeep;
mod users;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ::redis::{Script, Value};
use tokio::sync::watch;

pub use conn::cluster_nodes;
use conn::{Conn, Target};
use decode::map_err;
pub use layout::{Layout, DEFAULT_SHARDS, MAX_SHARDS};

use crate::domain::{Error, Result};
use crate::store::{OpenOptions, StoreUrl};

/// Longest `--redis-prefix` accepted.
const MAX_PREFIX: usize = 64;

/// A `--redis-prefix` that can neither leave its hash tag nor split a key:
/// letters, digits, `-`, `_` and `.` only.
pub fn check_prefix(prefix: &str) -> std::result::Result<String, String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(prefix.to_owned())
    } else {
        Err(format!(
            "redis prefix {prefix:?}: 1 to {MAX_PREFIX} letters, digits, '-', '_' or '.'"
        ))
    }
}

/// A `--redis-shards` value.
pub fn check_shards(shards: u16) -> std::result::Result<u16, String> {
    if (1..=MAX_SHARDS).contains(&shards) {
        Ok(shards)
    } else {
        Err(format!("redis shards: 1 to {MAX_SHARDS}, not {shards}"))
    }
}

/// How long session keys outlive their deadline before Redis drops them.
/// Separates the fields of a packed value (pending endings, user ids).
const US: char = '\u{1f}';
const US_STR: &str = "\u{1f}";

const TTL_GRACE_MS: i64 = 24 * 60 * 60 * 1000;
/// Sessions ended per script: a batch stays well under a millisecond or two.
const BATCH: usize = 128;
/// Batches of one bulk ending in flight at once.
const DRAIN_PARALLEL: usize = 4;
/// How long a replica's hold on a bulk ending lasts unless renewed (it
/// renews well before; another replica takes over once it lapses).
const LEASE_MS: u64 = 10_000;
const PURGE_BATCH: usize = 500;
/// How long the tailers' XREAD blocks before they check in again.
const TAIL_BLOCK_MS: u64 = 5_000;
/// How long an ending waits for `--redis-replica-acks` replicas.
const ACK_TIMEOUT_MS: u64 = 1_000;

/// Redis-backed [`Store`](crate::store::Store).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    target: Target,
    conn: Conn,
    /// Endings and their `WAIT`, on their own connection: WAIT blocks the
    /// connection it is sent on (and counts that connection's writes), so
    /// validations must not queue behind it.
    endings: Conn,
    /// Whether the store's shard count was checked (at open, or later when
    /// Redis was down then).
    checked: std::sync::atomic::AtomicBool,
    scripts: scripts::Scripts,
    replica_acks: u32,
    tails: Arc<Tails>,
    /// Pending bulk endings this process is carrying out now.
    draining: Mutex<HashSet<String>>,
    /// This process's name on the leases of the bulk endings it carries
    /// out (random: replicas need no configured identity).
    owner: String,
    /// The shards seen holding data (a user or a session was ever made in
    /// them): one that later holds none lost it, even when the others did
    /// not (a cluster primary restarted empty).
    held: Mutex<HashSet<u16>>,
    /// Validations remembered while their shard's version holds.
    remembered: remembered::Remembered,
    /// Shard version reads shared by concurrent validations.
    version_reads: remembered::VersionReads,
}

/// What the per-shard tailers saw: the newest sequence of each shard, and a
/// counter bumped on every news (one channel wakes every waiter).
struct Tails {
    latest: Mutex<HashMap<u16, u64>>,
    bump: watch::Sender<u64>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: never printed.
        f.write_str("RedisStore")
    }
}

impl RedisStore {
    /// A single Redis at `url`, default options.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(&StoreUrl::Redis(url.to_owned()), &OpenOptions::default()).await
    }

    /// Connects lazily: a Redis that is down now makes calls UNAVAILABLE
    /// until it is back, rather than keeping the service from starting. A
    /// reachable store created with another shard count is refused.
    pub async fn open_with(url: &StoreUrl, options: &OpenOptions) -> Result<Self> {
        let raw = match url {
            StoreUrl::Redis(u) | StoreUrl::RedisCluster(u) => u,
            _ => return Err(Error::Internal("not a redis store URL".into())),
        };
        let prefix = check_prefix(&options.redis_prefix).map_err(Error::Internal)?;
        let shards = check_shards(options.redis_shards).map_err(Error::Internal)?;
        let target = Target::parse(raw).map_err(Error::Internal)?;
        let conn = target.connect(Duration::from_secs(5)).map_err(map_err)?;
        let endings = if options.redis_replica_acks > 0 {
            target.connect(Duration::from_secs(5)).map_err(map_err)?
        } else {
            conn.clone()
        };
        let (bump, _) = watch::channel(0);
        let store = RedisStore {
            inner: Arc::new(Inner {
                layout: Layout { prefix, shards },
                target,
                conn,
                endings,
                checked: std::sync::atomic::AtomicBool::new(false),
                scripts: scripts::Scripts::new(),
                replica_acks: options.redis_replica_acks,
                tails: Arc::new(Tails {
                    latest: Mutex::new(HashMap::new()),
                    bump,
                }),
                draining: Mutex::new(HashSet::new()),
                held: Mutex::new(HashSet::new()),
                owner: random_owner(),
                remembered: remembered::Remembered::default(),
                version_reads: remembered::VersionReads::default(),
            }),
        };
        match store.check_shards().await {
            Err(Error::Unavailable(e)) => {
                tracing::warn!(error = %e, "redis unreachable at start; answering UNAVAILABLE until it is back")
            }
            Err(e) => return Err(e),
            Ok(()) => store.warn_if_not_durable().await,
        }
        Ok(store)
    }

    /// [`Self::check_shards`] once (the sweeper calls this, for a replica
    /// that started while Redis was down).
    async fn check_shards_once(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if !self.inner.checked.load(Ordering::Relaxed) {
            self.check_shards().await?;
        }
        Ok(())
    }

    /// Records the shard count in a new store; refuses a store that has
    /// another one (its data would be looked for in the wrong shards).
    async fn check_shards(&self) -> Result<()> {
        let meta = self.inner.layout.meta();
        let want = self.inner.layout.shards;
        let (_, have): (i64, Option<u16>) = ::redis::pipe()
            .cmd("HSETNX")
            .arg(&meta)
            .arg("shards")
            .arg(want)
            .cmd("HGET")
            .arg(&meta)
            .arg("shards")
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        match have {
            Some(n) if n == want => {
                self.inner
                    .checked
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            other => Err(Error::Internal(format!(
                "this redis store was created with {} shards but this replica is configured \
                 with --redis-shards {want}; configure every replica with the store's count",
                other.map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string())
            ))),
        }
    }

    /// An acknowledged ending is only as durable as Redis makes it.
    async fn warn_if_not_durable(&self) {
        if matches!(self.inner.target, Target::Cluster(_)) {
            if self.inner.replica_acks == 0 {
                tracing::warn!("redis cluster without --redis-replica-acks: an acknowledged revocation may be lost if a primary fails");
            }
            return;
        }
        let reply: std::result::Result<Vec<String>, _> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query_async(&mut self.conn())
            .await;
        if let Ok(v) = reply {
            if v.get(1).map(String::as_str) != Some("always") && self.inner.replica_acks == 0 {
                tracing::warn!(
                    "redis appendfsync is not 'always': an acknowledged revocation may be lost if Redis crashes"
                );
            }
        }
    }

    fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    async fn run(&self, script: &Script, keys: &[String], args: &[String]) -> Result<Value> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(a);
        }
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)
    }

    /// [`Self::run`] on the endings connection (see [`Inner::endings`]).
    async fn run_ending(&self, script: &Script, keys: &[String], args: &[String]) -> Result<Value> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(a);
        }
        invocation
            .invoke_async(&mut self.inner.endings.clone())
            .await
            .map_err(map_err)
    }

    async fn int(&self, script: &Script, keys: &[String], args: &[String]) -> Result<i64> {
        as_int(self.run(script, keys, args).await?)
    }

    async fn int_ending(&self, script: &Script, keys: &[String], args: &[String]) -> Result<i64> {
        as_int(self.run_ending(script, keys, args).await?)
    }

    /// With `--redis-replica-acks N`: returns once N replicas of the shard's
    /// primary hold every write made so far, or UNAVAILABLE.
    async fn confirm(&self, shard: u16) -> Result<()> {
        self.confirm_tag(&format!("{}:{shard}", self.layout().prefix))
            .await
    }

    /// [`Self::confirm`] for the primary of hash tag `tag`.
    async fn confirm_tag(&self, tag: &str) -> Result<()> {
        let want = self.inner.replica_acks;
        if want == 0 {
            return Ok(());
        }
        let slot = layout::slot(tag);
        let got = self
            .inner
            .endings
            .clone()
            .wait_replicas(slot, want, ACK_TIMEOUT_MS)
            .await
            .map_err(map_err)?;
        if got >= i64::from(want) {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "the change was not confirmed by {want} redis replica(s) within {ACK_TIMEOUT_MS} ms \
                 (only {got}); it may have taken effect, and retrying it is safe"
            )))
        }
    }

    /// Starts the tailers of `shards` not tailed yet.
    async fn tail(&self, shards: &[u16]) -> Result<()> {
        let missing: Vec<u16> = {
            let latest = lock(&self.inner.tails.latest);
            shards
                .iter()
                .copied()
                .filter(|s| !latest.contains_key(s))
                .collect()
        };
        for shard in missing {
            let start = self.last_sequence_of(shard).await?;
            if lock(&self.inner.tails.latest)
                .insert(shard, start)
                .is_some()
            {
                continue;
            }
            let conn = self
                .inner
                .target
                .connect(Duration::from_millis(TAIL_BLOCK_MS + 5_000))
                .map_err(map_err)?;
            let stream = self.layout().key(shard, "events");
            let tails = Arc::downgrade(&self.inner.tails);
            tokio::spawn(tail(conn, stream, shard, tails, start));
        }
        Ok(())
    }

    async fn last_sequence_of(&self, shard: u16) -> Result<u64> {
        let n: Option<u64> = ::redis::cmd("GET")
            .arg(self.layout().key(shard, "seq:event"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(n.unwrap_or(0))
    }
}

fn random_owner() -> String {
    let mut bytes = [0u8; 12];
    // Without randomness the process id still tells replicas apart on
    // one host; a clash only means two replicas share a lease.
    if getrandom::getrandom(&mut bytes).is_err() {
        return format!("pid-{}", std::process::id());
    }
    layout::hex_of(&bytes)
}

fn as_int(v: Value) -> Result<i64> {
    match v {
        Value::Int(n) => Ok(n),
        other => Err(Error::Internal(format!(
            "redis: unexpected reply {other:?}"
        ))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Follows one shard's event stream (XREAD BLOCK on its own connection) and
/// publishes its newest sequence, waking every watcher of this replica.
/// Only entry ids are needed: a wake-up reads one entry, then the newest
/// id. Stops when the store is dropped.
async fn tail(mut conn: Conn, stream: String, shard: u16, tails: Weak<Tails>, mut last: u64) {
    loop {
        let reply: std::result::Result<Value, _> = ::redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(TAIL_BLOCK_MS)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&stream)
            .arg(format!("{last}-0"))
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(Value::Array(_)) => ::redis::cmd("XREVRANGE")
                .arg(&stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async::<Value>(&mut conn)
                .await
                .map(Some),
            Ok(_) => Ok(None), // BLOCK timed out with nothing new
            Err(e) => Err(e),
        };
        let Some(tails) = tails.upgrade() else { return };
        match reply {
            Ok(Some(newest)) => {
                if let Some(seq) = newest_sequence(&newest) {
                    last = last.max(seq);
                }
                lock(&tails.latest).insert(shard, last);
                tails.bump.send_modify(|n| *n = n.wrapping_add(1));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, shard, "revocation tailer: redis error; retrying");
                drop(tails);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The sequence of the entry in an `XREVRANGE … COUNT 1` reply.
fn newest_sequence(reply: &Value) -> Option<u64> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let Some(Value::Array(entry)) = entries.first() else {
        return None;
    };
    entry
        .first()
        .and_then(decode::text)
        .and_then(|id| decode::entry_sequence(&id))
}
