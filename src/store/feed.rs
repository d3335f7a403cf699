//! The revocation feed job: the ordered, resumable log of every ending,
//! one log per shard.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Result, Revocation};

/// Reading the revocation events the endings wrote (they are written by
/// [`super::SessionStore`] and [`super::UserStore`] in the same change as
/// the ending itself).
#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
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
}
