//! The embedded default store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite allows one writer at a time anyway) and a few
//! read-only connections, so validations never queue behind a write. Every
//! call runs on tokio's blocking pool. `synchronous=FULL` makes a committed
//! ending survive a crash or power loss before it is acknowledged.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction};

use super::{EndTarget, ListQuery, Scope, Store, SweepReport};
use crate::domain::{
    Actor, Audit, AuditRecord, AuthFailure, ClientInfo, EndReason, Error, Kind, Millis, NewSession,
    NewUser, Result, Revocation, Session, TokenDigest, User, UserRecord,
};

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL UNIQUE,
    org           TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
-- AUTOINCREMENT: ids are never reused, even after ended rows are purged.
CREATE TABLE sessions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    token_digest   BLOB NOT NULL UNIQUE,
    kind           TEXT NOT NULL CHECK (kind IN ('ADMIN', 'API', 'IMAP', 'POP')),
    user_id        INTEGER NOT NULL REFERENCES users(id),
    username       TEXT NOT NULL,
    org            TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL,
    idle_deadline  INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    client_address TEXT,
    user_agent     TEXT,
    ended_at       INTEGER,
    end_reason     TEXT
);
-- Bulk endings and listings touch only live rows of one user or org.
CREATE INDEX sessions_live_user ON sessions(user_id, kind) WHERE ended_at IS NULL;
CREATE INDEX sessions_live_org ON sessions(org, kind, id) WHERE ended_at IS NULL;
CREATE INDEX sessions_live_expiry ON sessions(expires_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_live_idle ON sessions(idle_deadline) WHERE ended_at IS NULL;
CREATE INDEX sessions_ended ON sessions(ended_at) WHERE ended_at IS NOT NULL;
-- One event per ended session; sequence increases store-wide.
CREATE TABLE revocations (
    sequence   INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL,
    username   TEXT NOT NULL,
    org        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX revocations_at ON revocations(at);
"#,
    r#"
-- How far revocation events were purged: a watcher cursor below this lost events.
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('purged_through', 0);
"#,
    r#"
-- The owner's role travels with the session, so validation reads one row.
ALTER TABLE sessions ADD COLUMN role TEXT NOT NULL DEFAULT 'user';
UPDATE sessions SET role = (SELECT role FROM users WHERE users.id = sessions.user_id);
"#,
    r#"
-- One record per call (or sweep) that ended sessions: who, what, why, how many.
CREATE TABLE audit (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    at               INTEGER NOT NULL,
    org              TEXT NOT NULL,
    actor            TEXT NOT NULL,
    actor_session_id INTEGER,
    reason           TEXT NOT NULL,
    target           TEXT NOT NULL,
    ended            INTEGER NOT NULL
);
CREATE INDEX audit_org ON audit(org, id);
CREATE INDEX audit_at ON audit(at);
"#,
    r#"
-- The address the server saw a login come from, kept apart from the one the
-- client reported (client_address), which anyone can set to anything.
ALTER TABLE sessions ADD COLUMN peer_address TEXT;
"#,
];

/// Spelled out in full where used on the hot path (below): a literal needs
/// no formatting per call, and the statement cache finds it by pointer-equal
/// text.
macro_rules! session_columns {
    () => {
        "s.id, s.kind, s.user_id, s.username, s.org, s.role, s.created_at, \
         s.last_seen_at, s.idle_deadline, s.expires_at, s.client_address, s.user_agent, \
         s.peer_address"
    };
}
macro_rules! live {
    () => {
        "s.ended_at IS NULL AND s.expires_at > :now AND s.idle_deadline > :now"
    };
}
const SESSION_COLUMNS: &str = session_columns!();
/// Live at `:now`.
const LIVE: &str = live!();
/// ValidateSession's one query.
const FIND_LIVE_SQL: &str = concat!(
    "SELECT ",
    session_columns!(),
    // No join with users: disabling a user ends its sessions in the same
    // transaction, and create_session refuses a disabled user.
    " FROM sessions s WHERE s.token_digest = :digest AND ",
    live!()
);

const READERS: usize = 4;
/// Another process (the user CLI) may end sessions in the same file without
/// waking this one's watchers; they re-check at least this often.
const WATCH_POLL: Duration = Duration::from_secs(1);
/// Sessions ended per sweep transaction, so a sweep never holds the writer long.
const SWEEP_BATCH: i64 = 5_000;

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// How a write transaction is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsync at commit (WAL): survives power loss once acknowledged.
    Full = 2,
    /// No fsync of its own: survives a process crash, not a power cut.
    Normal = 1,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

struct Inner {
    /// The writer connection's current `synchronous` mode (a `Durability`).
    writer_sync: std::sync::atomic::AtomicU8,
    /// One permit per reader connection (and one for the writer), taken before
    /// going to the blocking pool: a burst waits here, not as a pile of
    /// blocking threads contending for connection locks.
    read_slots: Arc<tokio::sync::Semaphore>,
    write_slot: Arc<tokio::sync::Semaphore>,
    /// Bumped after every commit that recorded revocation events.
    events: tokio::sync::watch::Sender<u64>,
    writer: Mutex<Connection>,
    /// Empty for an in-memory database, which only the writer can see.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// ValidateSession's answers while the database has not changed. Last:
    /// fields drop in order, and it must outlive every connection.
    cache: super::sqlite_cache::LookupCache,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.inner.readers.len())
            .finish()
    }
}

fn map_err(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied,
        ) => Error::Unavailable(e.to_string()),
        _ => Error::Internal(format!("sqlite: {e}")),
    }
}

/// A permit to use a connection on the blocking pool.
async fn take_slot(
    slots: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit> {
    slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::Internal("store closed".into()))
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding a connection cannot leave it half-written: SQLite
    // rolls back the open transaction when the Transaction guard drops.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn configure(conn: &Connection, writer: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if writer {
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Endings update a few rows in each of the session indexes; a cache
        // that holds their inner pages keeps that cost from growing with
        // the store (the default 2 MiB does not, past some 100,000 sessions).
        conn.pragma_update(None, "cache_size", -64i64 * 1024)?;
    } else {
        conn.pragma_update(None, "query_only", "ON")?;
        // Readers map the file: page reads without a copy through read(2).
        conn.pragma_update(None, "mmap_size", 256i64 * 1024 * 1024)?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(map_err)?
        .try_into()
        .unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "store schema version {version} is newer than this sessiond ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(map_err)?;
        tx.execute_batch(sql).map_err(map_err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(map_err)?;
        tx.commit().map_err(map_err)?;
    }
    Ok(())
}

fn row_to_session(r: &Row<'_>) -> rusqlite::Result<Session> {
    let kind: String = r.get(1)?;
    let role: String = r.get(5)?;
    let bad = |col: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Text,
            Box::<dyn std::error::Error + Send + Sync>::from(what),
        )
    };
    Ok(Session {
        id: r.get(0)?,
        kind: kind.parse().map_err(|e| bad(1, e))?,
        user_id: r.get(2)?,
        username: r.get(3)?,
        org: r.get(4)?,
        role: role.parse().map_err(|e| bad(5, e))?,
        created_at: r.get(6)?,
        last_seen_at: r.get(7)?,
        idle_deadline: r.get(8)?,
        expires_at: r.get(9)?,
        client: ClientInfo {
            address: r.get(10)?,
            user_agent: r.get(11)?,
            peer_address: r.get(12)?,
        },
    })
}

fn conversion_error(col: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        Box::<dyn std::error::Error + Send + Sync>::from(what),
    )
}

fn row_to_revocation(r: &Row<'_>) -> rusqlite::Result<Revocation> {
    let kind: String = r.get(4)?;
    let reason: String = r.get(5)?;
    Ok(Revocation {
        sequence: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        shard: 0,
        cursor: String::new(),
        session_id: r.get(1)?,
        username: r.get(2)?,
        org: r.get(3)?,
        kind: kind.parse().map_err(|e| conversion_error(4, e))?,
        reason: reason.parse().map_err(|e| conversion_error(5, e))?,
        at: r.get(6)?,
    })
}

fn row_to_user(r: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        org: r.get(2)?,
        role: role.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                Box::<dyn std::error::Error + Send + Sync>::from(e),
            )
        })?,
        disabled: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// `kind IN ('IMAP','POP')` from our own constants (never from input).
fn kinds_clause(kinds: &[Kind]) -> String {
    let list: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
    format!("s.kind IN ({})", list.join(","))
}

/// Records one revocation event per matching session, then ends them; both in
/// the caller's transaction. `filter` is a WHERE clause over `sessions s`.
fn end_matching(
    tx: &Transaction<'_>,
    filter: &str,
    params: &[(&str, &dyn rusqlite::ToSql)],
    reason: EndReason,
    now: Millis,
) -> rusqlite::Result<u32> {
    let mut all: Vec<(&str, &dyn rusqlite::ToSql)> = params.to_vec();
    let reason = reason.as_str();
    all.push((":reason", &reason));
    all.push((":ended", &now));
    tx.execute(
        &format!(
            "INSERT INTO revocations (session_id, username, org, kind, reason, at) \
             SELECT s.id, s.username, s.org, s.kind, :reason, :ended FROM sessions s WHERE {filter}"
        ),
        all.as_slice(),
    )?;
    let ended = tx.execute(
        &format!("UPDATE sessions AS s SET ended_at = :ended, end_reason = :reason WHERE {filter}"),
        all.as_slice(),
    )?;
    Ok(u32::try_from(ended).unwrap_or(u32::MAX))
}

/// Ends one batch of expired sessions (at most [`SWEEP_BATCH`]) and audits
/// them per org; returns how many ended.
fn expire_batch(tx: &Transaction<'_>, now: Millis, system: &Audit) -> Result<u32> {
    // The batch is fixed once, so the audit counts and the endings cover
    // exactly the same sessions.
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS sweep_ids (id INTEGER PRIMARY KEY); \
         DELETE FROM sweep_ids;",
    )
    .map_err(map_err)?;
    tx.execute(
        "INSERT INTO sweep_ids SELECT id FROM ( \
         SELECT id FROM sessions WHERE ended_at IS NULL AND expires_at <= ?1 \
         UNION SELECT id FROM sessions WHERE ended_at IS NULL AND idle_deadline <= ?1) \
         LIMIT ?2",
        params![now, SWEEP_BATCH],
    )
    .map_err(map_err)?;
    let per_org = tx
        .prepare(
            "SELECT org, COUNT(*) FROM sessions \
             WHERE id IN (SELECT id FROM sweep_ids) GROUP BY org",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(map_err)?;
    let n = end_matching(
        tx,
        "s.id IN (SELECT id FROM sweep_ids)",
        &[],
        EndReason::Expired,
        now,
    )
    .map_err(map_err)?;
    for (org, count) in per_org {
        record_audit(tx, now, &org, system, EndReason::Expired, count).map_err(map_err)?;
    }
    Ok(n)
}

/// Deletes what retention no longer keeps; returns how many rows went.
fn purge(tx: &Transaction<'_>, purge_before: Millis, audit_purge_before: Millis) -> Result<u32> {
    let sessions = tx
        .execute(
            "DELETE FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?1",
            [purge_before],
        )
        .map_err(map_err)?;
    // Remember how far events were purged, so a watcher resuming from before
    // that point is told, not silently skipped ahead.
    tx.execute(
        "UPDATE meta SET value = MAX(value, \
         COALESCE((SELECT MAX(sequence) FROM revocations WHERE at < ?1), 0)) \
         WHERE key = 'purged_through'",
        [purge_before],
    )
    .map_err(map_err)?;
    let events = tx
        .execute("DELETE FROM revocations WHERE at < ?1", [purge_before])
        .map_err(map_err)?;
    let audit = tx
        .execute("DELETE FROM audit WHERE at < ?1", [audit_purge_before])
        .map_err(map_err)?;
    Ok(u32::try_from(sessions + events + audit).unwrap_or(u32::MAX))
}

/// Ends every live session of `user` (an operator's disable or delete),
/// with one audit record, in the caller's transaction.
fn end_all_of_user(
    tx: &Transaction<'_>,
    user: &User,
    now: Millis,
    audit: &Audit,
) -> rusqlite::Result<u32> {
    let ended = end_matching(
        tx,
        &format!("s.user_id = :user AND {LIVE}"),
        &[(":user", &user.id), (":now", &now)],
        EndReason::LogoffOther,
        now,
    )?;
    record_audit(tx, now, &user.org, audit, EndReason::LogoffOther, ended)?;
    Ok(ended)
}

/// Writes one audit record, in the caller's transaction.
fn record_audit(
    tx: &Transaction<'_>,
    at: Millis,
    org: &str,
    audit: &Audit,
    reason: EndReason,
    ended: u32,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, org, actor, actor_session_id, reason, target, ended) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        at,
        org,
        audit.actor.name,
        audit.actor.session_id,
        reason.as_str(),
        audit.target,
        ended
    ])?;
    Ok(())
}

/// Inserts a session of a user that exists and is not disabled, in the
/// caller's transaction.
fn insert_session(tx: &Transaction<'_>, new: NewSession) -> Result<Session> {
    let user = tx
        .prepare_cached(
            "SELECT id, username, org, role, disabled, created_at FROM users WHERE id = ?1",
        )
        .and_then(|mut s| s.query_row([new.user_id], row_to_user).optional())
        .map_err(map_err)?;
    let user = match user {
        Some(u) if !u.disabled => u,
        _ => return Err(Error::Unauthenticated(AuthFailure::BadCredentials)),
    };
    tx.prepare_cached(
        "INSERT INTO sessions (token_digest, kind, user_id, username, org, created_at, \
         last_seen_at, idle_deadline, expires_at, client_address, user_agent, role, \
         peer_address) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            &new.digest.0[..],
            new.kind.as_str(),
            user.id,
            user.username,
            user.org,
            new.now,
            new.idle_deadline,
            new.expires_at,
            new.client.address,
            new.client.user_agent,
            user.role.as_str(),
            new.client.peer_address,
        ])
    })
    .map_err(map_err)?;
    // The transaction rolls back on this error, so an id past int32 is never kept.
    let id = i32::try_from(tx.last_insert_rowid())
        .map_err(|_| Error::Internal("session id space (int32) exhausted".into()))?;
    Ok(Session {
        id,
        kind: new.kind,
        user_id: user.id,
        username: user.username,
        org: user.org,
        role: user.role,
        created_at: new.now,
        last_seen_at: new.now,
        idle_deadline: new.idle_deadline,
        expires_at: new.expires_at,
        client: new.client,
    })
}

fn row_to_audit(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let reason: String = r.get(5)?;
    Ok(AuditRecord {
        id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        at: r.get(1)?,
        org: r.get(2)?,
        actor: r.get(3)?,
        actor_session_id: r.get(4)?,
        reason: reason.parse().map_err(|e| conversion_error(5, e))?,
        target: r.get(6)?,
        ended: r.get(7)?,
    })
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database file.
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            writable(&path)?;
            let mut writer = Connection::open(&path).map_err(map_err)?;
            let mode: String = writer
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .map_err(map_err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::Internal(format!(
                    "could not enable WAL on {} (got {mode})",
                    path.display()
                )));
            }
            configure(&writer, true).map_err(map_err)?;
            migrate(&mut writer)?;
            // Opening can succeed where writing fails (a read-only mount):
            // find out now, not on the first login.
            writer
                .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .and_then(|v| writer.pragma_update(None, "user_version", v))
                .map_err(|e| {
                    Error::Unavailable(format!("cannot write to {}: {e}", path.display()))
                })?;
            let readers = (0..READERS)
                .map(|_| {
                    let c = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&c, false)?;
                    Ok(Mutex::new(c))
                })
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            let cache = super::sqlite_cache::LookupCache::for_file(&path);
            Ok(Self::from_parts(writer, readers, cache))
        })
        .await
        .map_err(|e| Error::Internal(format!("store open task failed: {e}")))?
    }

    /// A private in-memory database (tests, throwaway runs). Held by the
    /// `memdb` VFS rather than as `:memory:`, whose pages all live in the
    /// page cache: SQLite walks that cache at every commit, so each write
    /// there costs more the larger the store (a LogoutUser of 100 sessions
    /// took 3.6 times as long beside 1,000,000 unrelated sessions as beside
    /// 10,000). Under `memdb` the cache stays at its usual size.
    pub async fn open_memory() -> Result<Self> {
        let mut writer = Connection::open_with_flags(
            "file:sessiond?vfs=memdb",
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        configure(&writer, true).map_err(map_err)?;
        migrate(&mut writer)?;
        Ok(Self::from_parts(
            writer,
            Vec::new(),
            super::sqlite_cache::LookupCache::in_memory(),
        ))
    }

    fn from_parts(
        writer: Connection,
        readers: Vec<Mutex<Connection>>,
        cache: super::sqlite_cache::LookupCache,
    ) -> Self {
        SqliteStore {
            inner: Arc::new(Inner {
                writer_sync: std::sync::atomic::AtomicU8::new(Durability::Full as u8),
                read_slots: Arc::new(tokio::sync::Semaphore::new(readers.len().max(1))),
                write_slot: Arc::new(tokio::sync::Semaphore::new(1)),
                events: tokio::sync::watch::Sender::new(0),
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                cache,
            }),
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let slot = take_slot(&self.inner.read_slots).await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            if inner.readers.is_empty() {
                return f(&lock(&inner.writer)).map_err(map_err);
            }
            let n = inner.readers.len();
            let start = inner.next_reader.fetch_add(1, Ordering::Relaxed);
            // Take the first free reader; wait on one only if all are busy.
            for i in 0..n {
                if let Ok(conn) = inner.readers[(start + i) % n].try_lock() {
                    return f(&conn).map_err(map_err);
                }
            }
            f(&lock(&inner.readers[start % n])).map_err(map_err)
        })
        .await
        .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
    }

    /// The hot path (ValidateSession): an indexed lookup answered from
    /// SQLite's page cache in microseconds. Handing it to the blocking pool
    /// costs more than the lookup (two thread switches: 40% of the server's
    /// time in a profile at 64 streams), so it runs right here when a reader
    /// connection is free, and goes to the blocking pool only when none is.
    async fn read_hot<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        for conn in &self.inner.readers {
            if let Ok(conn) = conn.try_lock() {
                return f(&conn).map_err(map_err);
            }
        }
        // In memory there are no readers: the writer's connection serves
        // reads too, inline when no write holds it.
        if self.inner.readers.is_empty() {
            if let Ok(conn) = self.inner.writer.try_lock() {
                return f(&conn).map_err(map_err);
            }
        }
        self.read(f).await
    }

    /// Wakes watchers after a commit that recorded revocation events.
    fn notify_events(&self) {
        self.inner.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A durable write: committed with `synchronous=FULL`, so it survives a
    /// crash or power loss once this returns (endings, user administration).
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.write_as(Durability::Full, f).await
    }

    async fn write_as<T, F>(&self, sync: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let slot = take_slot(&self.inner.write_slot).await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut conn = lock(&inner.writer);
            if inner.writer_sync.swap(sync as u8, Ordering::Relaxed) != sync as u8 {
                conn.pragma_update(None, "synchronous", sync.pragma())
                    .map_err(map_err)?;
            }
            // IMMEDIATE: take the write lock up front, so a concurrent CLI
            // writer makes us wait (busy_timeout) rather than fail mid-way.
            let out = (|| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(map_err)?;
                let out = f(&tx)?;
                tx.commit().map_err(map_err)?;
                Ok(out)
            })();
            // Before the write is acknowledged: no cached lookup outlives it.
            inner.cache.committed();
            out
        })
        .await
        .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
    }
}

/// The file (created if missing) can be opened for writing; otherwise the
/// path and the operating system's reason.
fn writable(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|e| Error::Unavailable(format!("cannot open {} for writing: {e}", path.display())))
}

/// Copies the database at `source` into a new file `dest` with SQLite's
/// online backup: a consistent snapshot, taken while a server keeps serving
/// (in WAL mode a reader blocks no writer). Refuses to overwrite `dest`.
pub fn backup(source: &Path, dest: &Path) -> Result<()> {
    if !source.exists() {
        return Err(Error::Unavailable(format!(
            "store {} does not exist",
            source.display()
        )));
    }
    let src = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", source.display())))?;
    src.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(map_err)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", dest.display())))?;
    let mut dst = Connection::open(dest)
        .map_err(|e| Error::Unavailable(format!("cannot open {}: {e}", dest.display())))?;
    // One step (as many pages as there can be) copies every page under one
    // read snapshot.
    rusqlite::backup::Backup::new(&src, &mut dst)
        .and_then(|b| b.run_to_completion(i32::MAX, std::time::Duration::ZERO, None))
        .map_err(|e| Error::Unavailable(format!("backup to {}: {e}", dest.display())))?;
    // The copy stands alone: no -wal beside it.
    dst.pragma_update(None, "journal_mode", "DELETE")
        .map_err(map_err)?;
    Ok(())
}

fn find_user_tx(conn: &Connection, username: &str) -> rusqlite::Result<Option<UserRecord>> {
    conn.prepare_cached(
        "SELECT id, username, org, role, disabled, created_at, password_hash \
         FROM users WHERE username = ?1",
    )?
    .query_row([username], |r| {
        Ok(UserRecord {
            user: row_to_user(r)?,
            password_hash: r.get(6)?,
        })
    })
    .optional()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn close(&self) -> Result<()> {
        let inner = self.inner.clone();
        let slot = take_slot(&self.inner.write_slot).await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            // TRUNCATE: the main file holds everything and the -wal is empty,
            // so copying the .db alone after a clean stop loses nothing.
            lock(&inner.writer)
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(map_err)
        })
        .await
        .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
    }

    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.write(move |tx| {
            let inserted = tx.execute(
                "INSERT INTO users (username, org, role, password_hash, disabled, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                params![
                    user.username,
                    user.org,
                    user.role.as_str(),
                    user.password_hash,
                    user.now
                ],
            );
            match inserted {
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    return Err(Error::AlreadyExists)
                }
                other => other.map_err(map_err)?,
            };
            Ok(User {
                id: tx.last_insert_rowid(),
                username: user.username,
                org: user.org,
                role: user.role,
                disabled: false,
                created_at: user.now,
            })
        })
        .await
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>> {
        let username = username.to_owned();
        self.read(move |c| find_user_tx(c, &username)).await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, username, org, role, disabled, created_at FROM users ORDER BY org, username",
            )?;
            let rows = stmt.query_map([], row_to_user)?;
            rows.collect()
        })
        .await
    }

    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool> {
        let username = username.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?1 WHERE username = ?2",
                    params![password_hash, username],
                )
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn rehash_password(&self, username: &str, old: &str, new: String) -> Result<bool> {
        let (username, old) = (username.to_owned(), old.to_owned());
        // Losing a rehash to a power cut costs one more rehash: no fsync.
        self.write_as(Durability::Normal, move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?3 \
                     WHERE username = ?1 AND password_hash = ?2",
                    params![username, old, new],
                )
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: Millis,
        actor: &Actor,
    ) -> Result<bool> {
        let username = username.to_owned();
        let audit = Audit {
            actor: actor.clone(),
            target: format!("user:{username}"),
        };
        let found = self
            .write(move |tx| {
                let Some(rec) = find_user_tx(tx, &username).map_err(map_err)? else {
                    return Ok(false);
                };
                tx.execute(
                    "UPDATE users SET disabled = ?1 WHERE id = ?2",
                    params![disabled, rec.user.id],
                )
                .map_err(map_err)?;
                if disabled {
                    end_all_of_user(tx, &rec.user, now, &audit).map_err(map_err)?;
                }
                Ok(true)
            })
            .await;
        self.notify_events();
        found
    }

    async fn delete_user(&self, username: &str, now: Millis, actor: &Actor) -> Result<bool> {
        let username = username.to_owned();
        let audit = Audit {
            actor: actor.clone(),
            target: format!("user:{username}"),
        };
        let found = self
            .write(move |tx| {
                let Some(rec) = find_user_tx(tx, &username).map_err(map_err)? else {
                    return Ok(false);
                };
                end_all_of_user(tx, &rec.user, now, &audit).map_err(map_err)?;
                // Ended rows go with the user (they only await the purge);
                // their revocation events stay for watchers.
                tx.execute("DELETE FROM sessions WHERE user_id = ?1", [rec.user.id])
                    .map_err(map_err)?;
                tx.execute("DELETE FROM users WHERE id = ?1", [rec.user.id])
                    .map_err(map_err)?;
                Ok(true)
            })
            .await;
        self.notify_events();
        found
    }

    async fn create_session(&self, new: NewSession) -> Result<Session> {
        // A login lost to a power cut means logging in again; not worth an
        // fsync each. (The next durable commit flushes it anyway.)
        self.write_as(Durability::Normal, move |tx| insert_session(tx, new))
            .await
    }

    async fn create_session_capped(&self, new: NewSession, cap: u32) -> Result<(Session, u32)> {
        if cap == 0 {
            return Ok((self.create_session(new).await?, 0));
        }
        let (user, now) = (new.user_id, new.now);
        // Endings must be durable when acknowledged: when this login may
        // take the user past the cap, the transaction is fsynced.
        let live: i64 = self
            .read(move |c| {
                c.prepare_cached(concat!(
                    "SELECT COUNT(*) FROM sessions s WHERE s.user_id = :user AND ",
                    live!()
                ))?
                .query_row(rusqlite::named_params! {":user": user, ":now": now}, |r| {
                    r.get(0)
                })
            })
            .await?;
        let sync = if live >= i64::from(cap) {
            Durability::Full
        } else {
            Durability::Normal
        };
        let (session, ended) = self
            .write_as(sync, move |tx| {
                let session = insert_session(tx, new)?;
                // The live sessions beyond the newest `cap`, oldest first.
                let mut over: Vec<i32> = tx
                    .prepare_cached(concat!(
                        "SELECT s.id FROM sessions s WHERE s.user_id = :user AND ",
                        live!(),
                        " ORDER BY s.id DESC LIMIT -1 OFFSET :cap"
                    ))
                    .and_then(|mut st| {
                        st.query_map(
                            rusqlite::named_params! {":user": user, ":now": now, ":cap": cap},
                            |r| r.get(0),
                        )?
                        .collect::<rusqlite::Result<Vec<i32>>>()
                    })
                    .map_err(map_err)?;
                over.sort_unstable();
                over.truncate(super::MAX_CAP_ENDINGS);
                for id in &over {
                    end_matching(
                        tx,
                        "s.id = :id",
                        &[(":id", id)],
                        EndReason::SessionLimit,
                        now,
                    )
                    .map_err(map_err)?;
                    record_audit(
                        tx,
                        now,
                        &session.org,
                        &super::cap_audit(*id),
                        EndReason::SessionLimit,
                        1,
                    )
                    .map_err(map_err)?;
                }
                Ok((session, u32::try_from(over.len()).unwrap_or(u32::MAX)))
            })
            .await?;
        if ended > 0 {
            self.notify_events();
        }
        Ok((session, ended))
    }

    async fn find_live_session(
        &self,
        digest: &TokenDigest,
        now: Millis,
    ) -> Result<Option<Session>> {
        let cache = &self.inner.cache;
        let version = match cache.lookup(digest, now) {
            super::sqlite_cache::Lookup::Hit(answer) => return Ok(answer),
            super::sqlite_cache::Lookup::Miss(version) => version,
        };
        let digest = *digest;
        let found = self
            .read_hot(move |c| {
                c.prepare_cached(FIND_LIVE_SQL)?
                    .query_row(
                        rusqlite::named_params! {":digest": &digest.0[..], ":now": now},
                        row_to_session,
                    )
                    .optional()
            })
            .await?;
        if let Some(session) = &found {
            cache.remember(version, digest, session);
        }
        Ok(found)
    }

    async fn touch_session(&self, id: i32, now: Millis, idle_deadline: Millis) -> Result<()> {
        self.write_as(Durability::Normal, move |tx| {
            tx.prepare_cached(
                "UPDATE sessions SET last_seen_at = ?1, idle_deadline = ?2 \
                 WHERE id = ?3 AND ended_at IS NULL AND idle_deadline < ?2 \
                 AND idle_deadline > ?1 AND expires_at > ?1",
            )
            .and_then(|mut s| s.execute(params![now, idle_deadline, id]))
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn end_session(
        &self,
        target: EndTarget,
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<Option<Session>> {
        let audit = audit.clone();
        let ended = self
            .write(move |tx| {
                let mut filter = format!("s.id = :id AND {LIVE}");
                if target.org.is_some() {
                    filter.push_str(" AND s.org = :org");
                }
                if let Some(kind) = target.kind {
                    filter.push_str(&format!(" AND {}", kinds_clause(&[kind])));
                }
                let mut params: Vec<(&str, &dyn rusqlite::ToSql)> =
                    vec![(":id", &target.id), (":now", &now)];
                if let Some(org) = &target.org {
                    params.push((":org", org));
                }
                let found = tx
                    .prepare(&format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions s \
                     WHERE {filter}"
                    ))
                    .and_then(|mut s| s.query_row(params.as_slice(), row_to_session).optional())
                    .map_err(map_err)?;
                if let Some(s) = &found {
                    end_matching(tx, &filter, &params, reason, now).map_err(map_err)?;
                    record_audit(tx, now, &s.org, &audit, reason, 1).map_err(map_err)?;
                }
                Ok(found)
            })
            .await?;
        if ended.is_some() {
            self.notify_events();
        }
        Ok(ended)
    }

    async fn end_sessions(
        &self,
        scope: Scope,
        kinds: &[Kind],
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<u32> {
        let kinds = kinds_clause(kinds);
        let audit = audit.clone();
        let ended = self
            .write(move |tx| {
                let org = match &scope {
                    Scope::Org(org) => org.clone(),
                    Scope::User(id) | Scope::UserExcept { user: id, .. } => tx
                        .query_row("SELECT org FROM users WHERE id = ?1", [id], |r| r.get(0))
                        .optional()
                        .map_err(map_err)?
                        .unwrap_or_default(),
                };
                let n = match &scope {
                    Scope::User(user_id) => end_matching(
                        tx,
                        &format!("s.user_id = :scope AND {kinds} AND {LIVE}"),
                        &[(":scope", user_id), (":now", &now)],
                        reason,
                        now,
                    ),
                    Scope::Org(org) => end_matching(
                        tx,
                        &format!("s.org = :scope AND {kinds} AND {LIVE}"),
                        &[(":scope", org), (":now", &now)],
                        reason,
                        now,
                    ),
                    Scope::UserExcept { user, keep } => end_matching(
                        tx,
                        &format!("s.user_id = :scope AND s.id <> :keep AND {kinds} AND {LIVE}"),
                        &[(":scope", user), (":keep", keep), (":now", &now)],
                        reason,
                        now,
                    ),
                }
                .map_err(map_err)?;
                // A call that ended nothing changed nothing: no record, and
                // the commit has nothing to write (nor to fsync).
                if n > 0 {
                    record_audit(tx, now, &org, &audit, reason, n).map_err(map_err)?;
                }
                Ok(n)
            })
            .await?;
        if ended > 0 {
            self.notify_events();
        }
        Ok(ended)
    }

    async fn list_audit(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let org = org.to_owned();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, at, org, actor, actor_session_id, reason, target, ended FROM audit \
                 WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![org, after, limit], row_to_audit)?;
            rows.collect()
        })
        .await
    }

    async fn list_sessions(&self, query: ListQuery, now: Millis) -> Result<Vec<Session>> {
        self.read(move |c| {
            let mut filter = format!("s.org = :org AND s.id > :after AND {LIVE}");
            if query.username.is_some() {
                filter.push_str(" AND s.username = :user");
            }
            if let Some(kind) = query.kind {
                filter.push_str(&format!(" AND {}", kinds_clause(&[kind])));
            }
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            let mut params: Vec<(&str, &dyn rusqlite::ToSql)> = vec![
                (":org", &query.org),
                (":after", &query.after_id),
                (":now", &now),
                (":limit", &limit),
            ];
            if let Some(user) = &query.username {
                params.push((":user", user));
            }
            let mut stmt = c.prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s \
                 WHERE {filter} ORDER BY s.id LIMIT :limit"
            ))?;
            let rows = stmt.query_map(params.as_slice(), row_to_session)?;
            rows.collect()
        })
        .await
    }

    async fn sweep(
        &self,
        now: Millis,
        purge_before: Millis,
        audit_purge_before: Millis,
    ) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let system = Audit {
            actor: Actor::user("system", None),
            target: "expired".into(),
        };
        loop {
            let system = system.clone();
            let expired = self.write(move |tx| expire_batch(tx, now, &system)).await?;
            report.expired += expired;
            if expired > 0 {
                self.notify_events();
            }
            if i64::from(expired) < SWEEP_BATCH {
                break;
            }
        }
        report.purged = self
            .write(move |tx| purge(tx, purge_before, audit_purge_before))
            .await?;
        Ok(report)
    }

    async fn live_counts(&self, now: Millis) -> Result<Vec<(Kind, u64)>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, COUNT(*) FROM sessions \
                 WHERE ended_at IS NULL AND expires_at > ?1 AND idle_deadline > ?1 GROUP BY kind",
            )?;
            let rows = stmt.query_map([now], |r| {
                let kind: String = r.get(0)?;
                let n: i64 = r.get(1)?;
                Ok((kind, n))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, n) = row?;
                if let Ok(k) = kind.parse() {
                    out.push((k, u64::try_from(n).unwrap_or(0)));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn last_sequence(&self, _shard: u16) -> Result<u64> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'revocations'), 0)",
            )?
            .query_row([], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    async fn revocations_after(
        &self,
        _shard: u16,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Revocation>> {
        let after_i = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (purged, events) = self
            .read(move |c| {
                let purged: i64 = c
                    .prepare_cached("SELECT value FROM meta WHERE key = 'purged_through'")?
                    .query_row([], |r| r.get(0))?;
                let mut stmt = c.prepare_cached(
                    "SELECT sequence, session_id, username, org, kind, reason, at FROM revocations \
                     WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![after_i, limit], row_to_revocation)?;
                Ok((purged, rows.collect::<rusqlite::Result<Vec<_>>>()?))
            })
            .await?;
        let purged = u64::try_from(purged).unwrap_or(0);
        if after < purged {
            return Err(Error::CursorExpired {
                after,
                oldest: purged,
            });
        }
        Ok(events)
    }

    async fn wait_for_revocation(&self, after: &[(u16, u64)], timeout: Duration) -> Result<()> {
        let after = after.iter().map(|(_, seq)| *seq).min().unwrap_or(0);
        let mut woken = self.inner.events.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if self.last_sequence(0).await? > after {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::select! {
                _ = woken.changed() => {}
                _ = tokio::time::sleep(left.min(WATCH_POLL)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_commits_durably_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("d.db")).await.unwrap();
        let writer = lock(&store.inner.writer);
        let sync: i64 = writer
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let mode: String = writer
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
