//! SQLite: health, the expiry sweep and retention ([`crate::store::UpkeepStore`]).

use async_trait::async_trait;
use rusqlite::{params, Transaction};

use super::{audit::record_audit, lock, map_err, sessions::end_matching, take_slot, SqliteStore};
use crate::domain::{Actor, Audit, EndReason, Error, Kind, Millis, Result};
use crate::store::{SweepReport, UpkeepStore};

/// Sessions ended per sweep transaction, so a sweep never holds the writer long.
pub(super) const SWEEP_BATCH: i64 = 5_000;

/// Ends one batch of expired sessions (at most [`SWEEP_BATCH`]) and audits
/// them per org; returns how many ended.
pub(super) fn expire_batch(tx: &Transaction<'_>, now: Millis, system: &Audit) -> Result<u32> {
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
pub(super) fn purge(
    tx: &Transaction<'_>,
    purge_before: Millis,
    audit_purge_before: Millis,
) -> Result<u32> {
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

#[async_trait]
impl UpkeepStore for SqliteStore {
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
}
