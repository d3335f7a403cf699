//! Redis: the revocation feed ([`crate::store::FeedStore`]): one event stream
//! per shard, tailed by one task per shard to wake watchers.

use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;

use super::decode::{corrupt, revocations_from, text};
use super::{lock, RedisStore};
use crate::domain::{Error, Result, Revocation};
use crate::store::FeedStore;

#[async_trait]
impl FeedStore for RedisStore {
    fn shards(&self) -> u16 {
        self.layout().shards
    }

    fn shard_of(&self, org: &str) -> u16 {
        self.layout().org_shard(org)
    }

    async fn last_sequence(&self, shard: u16) -> Result<u64> {
        self.last_sequence_of(shard).await
    }

    async fn revocations_after(
        &self,
        shard: u16,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Revocation>> {
        let keys = self.shard_keys(shard, &["events:purged", "events"]);
        let args = [
            after.to_string(),
            format!("{}-0", after.saturating_add(1)),
            limit.to_string(),
        ];
        let reply = self
            .run(&self.inner.scripts.events_after, &keys, &args)
            .await?;
        let Value::Array(parts) = reply else {
            return Err(corrupt("events reply"));
        };
        match (parts.first().and_then(text).as_deref(), parts.get(1)) {
            (Some("EXPIRED"), Some(oldest)) => Err(Error::CursorExpired {
                after,
                oldest: text(oldest).and_then(|t| t.parse().ok()).unwrap_or(0),
            }),
            (Some("OK"), Some(Value::Array(entries))) => {
                let mut out = Vec::new();
                for e in entries {
                    // A packed entry may begin at or before `after`, and its
                    // events past `limit` are read again next time.
                    out.extend(
                        revocations_from(e)?
                            .into_iter()
                            .filter(|r| r.sequence > after)
                            .map(|r| Revocation { shard, ..r }),
                    );
                }
                out.truncate(limit);
                Ok(out)
            }
            _ => Err(corrupt("events reply")),
        }
    }

    fn fresh_shards(&self, after: &[(u16, u64)]) -> Option<Vec<u16>> {
        let latest = lock(&self.inner.tails.latest);
        let fresh: Vec<u16> = after
            .iter()
            .filter(|(s, seq)| latest.get(s).is_none_or(|l| l > seq))
            .map(|(s, _)| *s)
            .collect();
        // Nothing new known (a timeout): read every shard, to be safe.
        (!fresh.is_empty()).then_some(fresh)
    }

    async fn wait_for_revocation(&self, after: &[(u16, u64)], timeout: Duration) -> Result<()> {
        let shards: Vec<u16> = after.iter().map(|(s, _)| *s).collect();
        self.tail(&shards).await?;
        let mut rx = self.inner.tails.bump.subscribe();
        let newer = || {
            let latest = lock(&self.inner.tails.latest);
            after
                .iter()
                .any(|(s, seq)| latest.get(s).is_some_and(|l| l > seq))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while !newer() {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(())
    }
}
