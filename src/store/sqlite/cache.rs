//! ValidateSession's lookups on the SQLite store, remembered for exactly as
//! long as the database has not changed.
//!
//! A cached answer is the result of the one validation query at a known
//! version of the database. While no transaction has committed since (in
//! this process or any other on the same file), running the query again
//! would read the same row, so the cache answers instead, re-checking only
//! the deadlines against the clock. Any commit (an ending, a login, an idle
//! timer refresh, `sessiond user disable` from another process) moves the
//! version, and every entry stops counting at once: no ending needs to know
//! about the cache, and none can be missed.
//!
//! The version is two things read without a system call:
//! - a counter this process bumps after each of its own commits (the only
//!   signal for an in-memory database, which no other process can open);
//! - for a database file, the header of SQLite's WAL index (the `-shm` file
//!   every connection to a WAL database maps). SQLite rewrites that header
//!   at every commit, before the commit returns, with a frame count and
//!   checksums that never repeat; SQLite's own readers look at the same
//!   header to decide whether their snapshot is current. Its layout is part
//!   of SQLite's documented WAL-mode file format (48 bytes at offset 0).
//!
//! The mapping stays valid while the store is open: SQLite resets the
//! `-shm` file only when a connection opens a database no other process
//! holds open, which it learns from a POSIX lock this process holds. Such
//! locks belong to the process and the file, and closing *any* descriptor
//! of the file drops them all, so the descriptor opened here stays open
//! until every connection of the store has closed (the store drops this
//! cache last). Closing it early let `sessiond backup` reset the file under
//! a running server, which then died of SIGBUS reading the mapping.
//!
//! The version is read before the query runs and read again before its
//! answer is filed: if the database moved in between, the answer is not
//! filed, so an entry always shows the database at its own version.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::RwLock;

use crate::domain::{Millis, Session, TokenDigest};
use crate::store::MAX_REMEMBERED;

/// Bytes of the WAL index header (the first of its two copies).
const WAL_INDEX_HEADER: usize = 48;

/// The database's version as this process can see it without a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    local: u64,
    wal_index: [u64; WAL_INDEX_HEADER / 8],
}

/// A token digest is already a uniform hash: its first 8 bytes serve.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

type Entries = HashMap<TokenDigest, Session, BuildHasherDefault<DigestHasher>>;

pub(super) struct LookupCache {
    /// Commits made by this process (bumped after each).
    local: AtomicU64,
    /// The `-shm` file, mapped read-only; `None` in memory.
    wal_index: Option<memmap2::Mmap>,
    /// The descriptor the mapping was made from, never closed before the
    /// store's connections (see the module comment).
    _shm: Option<File>,
    /// Off when the WAL index could not be mapped: every lookup queries.
    enabled: bool,
    entries: RwLock<(Version, Entries)>,
}

impl std::fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupCache")
            .field("file", &self.wal_index.is_some())
            .finish_non_exhaustive()
    }
}

impl LookupCache {
    /// For an in-memory database: only this process's commits count.
    pub(super) fn in_memory() -> Self {
        LookupCache {
            local: AtomicU64::new(0),
            wal_index: None,
            _shm: None,
            enabled: true,
            entries: RwLock::new((Version::zero(), Entries::default())),
        }
    }

    /// A cache that never answers.
    pub(super) fn disabled() -> Self {
        LookupCache {
            enabled: false,
            ..Self::in_memory()
        }
    }

    /// For the database file at `db`, open in WAL mode by this process
    /// (so its `-shm` file exists and stays while the store is open). When
    /// the WAL index cannot be mapped the cache is off: every lookup queries.
    pub(super) fn for_file(db: &Path) -> Self {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let file = match File::open(&shm) {
            Ok(f) => f,
            Err(e) => return Self::off(None, &e),
        };
        // From here on `file` is kept whatever happens (see the module comment).
        let map = file.metadata().and_then(|m| {
            if m.len() < WAL_INDEX_HEADER as u64 {
                return Err(std::io::Error::other(
                    "the WAL index is shorter than its header",
                ));
            }
            // SAFETY: a read-only shared mapping; the bytes are only ever
            // read through volatile loads (`current`), since other processes
            // write them while mapped.
            unsafe { memmap2::MmapOptions::new().len(WAL_INDEX_HEADER).map(&file) }
        });
        match map {
            Ok(map) => LookupCache {
                local: AtomicU64::new(0),
                wal_index: Some(map),
                _shm: Some(file),
                enabled: true,
                entries: RwLock::new((Version::zero(), Entries::default())),
            },
            Err(e) => Self::off(Some(file), &e),
        }
    }

    fn off(shm: Option<File>, why: &std::io::Error) -> Self {
        tracing::warn!(error = %why, "validation cache off: cannot map the WAL index");
        LookupCache {
            _shm: shm,
            ..Self::disabled()
        }
    }

    /// What another process's commit changes, without a query: the WAL
    /// index header. `None` when nothing is mapped (in memory, where no
    /// other process can write, or a file whose index could not be mapped).
    pub(super) fn foreign_version(&self) -> Option<[u64; WAL_INDEX_HEADER / 8]> {
        self.wal_index.as_ref()?;
        Some(self.current().wal_index)
    }

    /// After every commit of this process (and after a failed write too:
    /// moving the version needlessly costs one lookup, never a wrong answer).
    pub(super) fn committed(&self) {
        self.local.fetch_add(1, Ordering::SeqCst);
    }

    fn current(&self) -> Version {
        let local = self.local.load(Ordering::SeqCst);
        let mut wal_index = [0u64; WAL_INDEX_HEADER / 8];
        if let Some(map) = &self.wal_index {
            let base = map.as_ptr().cast::<u64>();
            for (i, word) in wal_index.iter_mut().enumerate() {
                // SAFETY: the mapping is WAL_INDEX_HEADER bytes long and
                // page-aligned, so each of these u64 loads is in bounds and
                // aligned. Volatile: another process may change the bytes.
                *word = unsafe { std::ptr::read_volatile(base.add(i)) };
            }
        }
        // The query that follows must not be ordered before this read.
        fence(Ordering::SeqCst);
        Version { local, wal_index }
    }

    /// The cached answer for `digest` when the database has not changed
    /// since it was looked up (`Hit(None)`: known, but its deadline has
    /// passed); otherwise the version read now, to be given back to
    /// [`Self::remember`] with the answer of a query started after this call.
    pub(super) fn lookup(&self, digest: &TokenDigest, now: Millis) -> Lookup {
        let version = self.current();
        if self.enabled {
            let guard = self.entries.read().unwrap_or_else(|e| e.into_inner());
            if guard.0 == version {
                if let Some(session) = guard.1.get(digest) {
                    return Lookup::Hit(session.is_live_at(now).then(|| session.clone()));
                }
            }
        }
        Lookup::Miss(VersionToken(version))
    }

    /// Files a live session found by a query that started after `at` was read.
    pub(super) fn remember(&self, at: VersionToken, digest: TokenDigest, session: &Session) {
        // Moved while the query ran: the answer would be filed under a
        // version that is already gone.
        if !self.enabled || self.current() != at.0 {
            return;
        }
        let mut guard = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let (version, entries) = &mut *guard;
        if *version != at.0 {
            // Whatever was filed under another version is stale: start
            // over at this one.
            entries.clear();
            *version = at.0;
        } else if entries.len() >= MAX_REMEMBERED {
            entries.clear();
        }
        entries.insert(digest, session.clone());
    }
}

impl Version {
    fn zero() -> Self {
        Version {
            local: u64::MAX,
            wal_index: [0; WAL_INDEX_HEADER / 8],
        }
    }
}

/// A version read before a query (see [`LookupCache::lookup`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct VersionToken(Version);

/// What the cache knows of one token.
#[derive(Debug)]
pub(super) enum Lookup {
    Hit(Option<Session>),
    Miss(VersionToken),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientInfo, Kind, Role};

    impl LookupCache {
        fn version(&self) -> VersionToken {
            VersionToken(self.current())
        }

        fn get(&self, digest: &TokenDigest, now: Millis) -> Option<Option<Session>> {
            match self.lookup(digest, now) {
                Lookup::Hit(answer) => Some(answer),
                Lookup::Miss(_) => None,
            }
        }
    }

    fn session() -> Session {
        Session {
            id: 7,
            kind: Kind::Api,
            user_id: 1,
            username: "joe".into(),
            org: "example.com".into(),
            role: Role::User,
            created_at: 1_000,
            last_seen_at: 1_000,
            idle_deadline: 5_000,
            expires_at: 9_000,
            client: ClientInfo::default(),
        }
    }

    /// A WAL database file with one table, and the cache over it.
    fn wal_file(dir: &Path) -> (rusqlite::Connection, LookupCache) {
        let db = dir.join("c.db");
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("table");
        let cache = LookupCache::for_file(&db);
        assert!(cache.enabled, "the WAL index is mapped");
        (conn, cache)
    }

    #[test]
    fn an_answer_holds_until_any_connection_commits() {
        let dir = tempfile::tempdir().expect("dir");
        let (_ours, cache) = wal_file(dir.path());
        let digest = TokenDigest([7; 32]);
        cache.remember(cache.version(), digest, &session());
        assert_eq!(cache.get(&digest, 2_000), Some(Some(session())));
        // Past its idle deadline: known, and not live.
        assert_eq!(cache.get(&digest, 5_000), Some(None));
        // Another connection (as another process would) commits: the
        // answer no longer counts, though this process wrote nothing.
        let other = rusqlite::Connection::open(dir.path().join("c.db")).expect("open");
        other
            .execute("INSERT INTO t VALUES (1)", [])
            .expect("insert");
        assert_eq!(cache.get(&digest, 2_000), None);
    }

    #[test]
    fn this_process_commits_move_the_version_too() {
        let cache = LookupCache::in_memory();
        let digest = TokenDigest([1; 32]);
        cache.remember(cache.version(), digest, &session());
        assert!(cache.get(&digest, 2_000).is_some());
        cache.committed();
        assert_eq!(cache.get(&digest, 2_000), None);
    }

    #[test]
    fn an_answer_read_across_a_commit_is_not_filed() {
        let cache = LookupCache::in_memory();
        let digest = TokenDigest([2; 32]);
        let before = cache.version();
        cache.committed();
        cache.remember(before, digest, &session());
        assert_eq!(cache.get(&digest, 2_000), None);
    }

    #[test]
    fn a_disabled_cache_never_answers() {
        let cache = LookupCache::disabled();
        let digest = TokenDigest([3; 32]);
        cache.remember(cache.version(), digest, &session());
        assert_eq!(cache.get(&digest, 2_000), None);
    }
}
