//! SQLite: the revocation feed ([`crate::store::FeedStore`]): one log, the
//! `revocations` table, written by each ending in its transaction.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Row};

use super::{conversion_error, SqliteStore};
use crate::domain::{Error, Result, Revocation};
use crate::store::FeedStore;

/// Another process (the user CLI) may end sessions in the same file without
/// waking this one's watchers: they look at the WAL index header (a read of
/// shared memory, no query) this often, and query when it changed...
const FOREIGN_POLL: Duration = Duration::from_millis(2);

/// ...or, where the index is not mapped, query at least this often.
pub(super) const WATCH_POLL: Duration = Duration::from_secs(1);

pub(super) fn row_to_revocation(r: &Row<'_>) -> rusqlite::Result<Revocation> {
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

#[async_trait]
impl FeedStore for SqliteStore {
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
            let seen = self.inner.cache.foreign_version();
            if self.last_sequence(0).await? > after {
                return Ok(());
            }
            let next_query = Instant::now() + WATCH_POLL;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                let nap = if seen.is_some() {
                    FOREIGN_POLL
                } else {
                    WATCH_POLL
                };
                tokio::select! {
                    _ = woken.changed() => break,
                    _ = tokio::time::sleep(left.min(nap)) => {}
                }
                if self.inner.cache.foreign_version() != seen || Instant::now() >= next_query {
                    break;
                }
            }
        }
    }
}
