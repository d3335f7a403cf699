//! The embedded default store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite allows one writer at a time anyway) and a few
//! read-only connections, so validations never queue behind a write. Every
//! call runs on tokio's blocking pool. `synchronous=FULL` makes a committed
//! ending survive a crash or power loss before it is acknowledged.
//!
//! Each job's part of [`crate::store::Store`] is in the file of its name
//! (`users.rs`, `sessions.rs`, `feed.rs`, `audit.rs`, `counters.rs`,
//! `upkeep.rs`); this file holds the connections, the schema and the row
//! readers they share.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, ErrorCode, OpenFlags, Row, Transaction};

use crate::domain::{ClientInfo, Error, Result, Session};

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
    r#"
-- The Shared Signals transmitter: signing keys (never changed once written),
-- streams (a versioned document each; org '' carries every org), and the
-- lease of the replica delivering each stream.
CREATE TABLE ssf_keys (
    kid        TEXT PRIMARY KEY,
    pkcs8      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE ssf_streams (
    id      TEXT PRIMARY KEY,
    org     TEXT NOT NULL,
    version INTEGER NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX ssf_streams_org ON ssf_streams(org);
CREATE TABLE ssf_leases (
    stream_id TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    until     INTEGER NOT NULL
);
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

// After the macros above, which the job files use too.
mod audit;
mod cache;
mod counters;
mod feed;
mod sessions;
mod signals;
mod upkeep;
mod users;

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

/// SQLite-backed [`Store`](crate::store::Store).
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
    cache: cache::LookupCache,
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
            let cache = cache::LookupCache::for_file(&path);
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
            cache::LookupCache::in_memory(),
        ))
    }

    fn from_parts(
        writer: Connection,
        readers: Vec<Mutex<Connection>>,
        cache: cache::LookupCache,
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
