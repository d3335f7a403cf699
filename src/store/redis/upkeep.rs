//! Redis: health, the expiry sweep, resumed bulk endings and retention
//! ([`crate::store::UpkeepStore`]).

use std::collections::HashMap;

use async_trait::async_trait;

use super::decode::{corrupt, map_err};
use super::{bulk::Ends, lock, RedisStore, BATCH, PURGE_BATCH};
use crate::domain::{Error, Kind, Millis, Result};
use crate::store::{SweepReport, UpkeepStore};

impl RedisStore {
    pub(super) fn shard_keys(&self, shard: u16, names: &[&str]) -> Vec<String> {
        names.iter().map(|n| self.layout().key(shard, n)).collect()
    }

    /// Ends one shard's sessions past their deadline, in bounded batches
    /// (one per org, audited per org).
    pub(super) async fn sweep_expired(&self, shard: u16, now: Millis) -> Result<u32> {
        let deadlines = self.layout().key(shard, "deadlines");
        let mut expired = 0;
        loop {
            let due: Vec<i64> = ::redis::cmd("ZRANGEBYSCORE")
                .arg(&deadlines)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(BATCH)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            let ends = self.ends_of(&due).await?;
            let mut by_org: HashMap<Option<String>, Vec<(i64, Ends)>> = HashMap::new();
            for (id, e) in due.iter().copied().zip(ends) {
                let org = e.as_ref().map(|(_, _, _, o)| o.clone());
                by_org.entry(org).or_default().push((id, e));
            }
            for (org, batch) in by_org {
                let n = self
                    .end_due(shard, &batch, &deadlines, now, org.as_deref())
                    .await?;
                expired += u32::try_from(n).unwrap_or(0);
            }
            if due.len() < BATCH {
                return Ok(expired);
            }
        }
    }

    /// Resumes every bulk ending of a shard left unfinished.
    pub(super) async fn sweep_pending(&self, shard: u16) -> Result<()> {
        let pending: Vec<String> = ::redis::cmd("HKEYS")
            .arg(self.layout().key(shard, "pending"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        for index in pending {
            self.drain_once(shard, index).await;
        }
        Ok(())
    }

    pub(super) async fn purge_shard(
        &self,
        shard: u16,
        before: Millis,
        audit_before: Millis,
    ) -> Result<u32> {
        let keys = self.shard_keys(shard, &["events", "events:purged"]);
        let mut purged = 0u32;
        loop {
            let (removed, more): (u32, u8) = ::redis::FromRedisValue::from_redis_value(
                self.run(
                    &self.inner.scripts.purge_events,
                    &keys,
                    &[before.to_string(), PURGE_BATCH.to_string()],
                )
                .await?,
            )
            .map_err(|_| corrupt("purge reply"))?;
            purged = purged.saturating_add(removed);
            if more == 0 {
                break;
            }
        }
        let orgs: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.layout().key(shard, "audit:orgs"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        for org in orgs {
            purged += self.purge_audit(&org, audit_before).await?;
        }
        Ok(purged)
    }
}

#[async_trait]
impl UpkeepStore for RedisStore {
    async fn holds_data(&self) -> Result<bool> {
        let l = self.layout();
        let meta: i64 = ::redis::cmd("EXISTS")
            .arg(l.meta())
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        // Each shard's id counters: made with its first user or session,
        // never deleted. One query per shard (each may be on another node).
        let mut counters = tokio::task::JoinSet::new();
        for shard in 0..l.shards {
            let mut conn = self.conn();
            let cmd = ::redis::cmd("EXISTS")
                .arg(l.key(shard, "seq:user"))
                .arg(l.key(shard, "seq:session"))
                .clone();
            counters.spawn(async move { (shard, cmd.query_async::<i64>(&mut conn).await) });
        }
        let mut shards = Vec::with_capacity(usize::from(l.shards));
        while let Some(done) = counters.join_next().await {
            let (shard, n) = done.map_err(|e| Error::Internal(format!("health check: {e}")))?;
            shards.push((shard, n.map_err(map_err)? > 0));
        }
        let mut held = lock(&self.inner.held);
        let mut lost = false;
        for (shard, holds) in shards {
            if holds {
                held.insert(shard);
            } else {
                lost |= held.contains(&shard);
            }
        }
        Ok(meta > 0 && !lost)
    }

    async fn ping(&self) -> Result<()> {
        // The store's own key: on a cluster this asks the node serving it.
        ::redis::cmd("EXISTS")
            .arg(self.layout().meta())
            .query_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn sweep(
        &self,
        now: Millis,
        purge_before: Millis,
        audit_purge_before: Millis,
    ) -> Result<SweepReport> {
        self.check_shards_once().await?;
        let mut report = SweepReport::default();
        for shard in 0..self.layout().shards {
            self.sweep_pending(shard).await?;
            report.expired += self.sweep_expired(shard, now).await?;
            report.purged += self
                .purge_shard(shard, purge_before, audit_purge_before)
                .await?;
        }
        Ok(report)
    }

    /// Sessions not yet removed (an expired one counts until the sweeper
    /// ends it, a fenced one until its batch runs).
    async fn live_counts(&self, _now: Millis) -> Result<Vec<(Kind, u64)>> {
        let mut totals: HashMap<String, i64> = HashMap::new();
        for shard in 0..self.layout().shards {
            let counts: HashMap<String, i64> = ::redis::cmd("HGETALL")
                .arg(self.layout().key(shard, "counts"))
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            for (k, n) in counts {
                *totals.entry(k).or_default() += n;
            }
        }
        Ok(Kind::ALL
            .into_iter()
            .map(|k| {
                let n = totals.get(k.as_str()).copied().unwrap_or(0);
                (k, u64::try_from(n).unwrap_or(0))
            })
            .collect())
    }
}
