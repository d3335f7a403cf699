//! Redis: credential-failure counters and rate-limit windows
//! ([`crate::store::CounterStore`]), shared by every replica.

use std::time::Duration;

use async_trait::async_trait;

use super::{decode::map_err, RedisStore};
use crate::domain::Result;
use crate::store::CounterStore;

impl RedisStore {
    /// `u:<user>` / `a:<address>` -> its counter key.
    pub(super) fn failure_key(&self, key: &str) -> String {
        let (what, name) = key.split_once(':').unwrap_or(("x", key));
        self.layout().failures(what, name)
    }

    pub(super) fn rate_key(&self, key: &str) -> String {
        let (what, name) = key.split_once(':').unwrap_or(("x", key));
        self.layout().rate(what, name)
    }

    /// A window counter's count and the time left in its window; (0, 0)
    /// when it has none.
    pub(super) async fn counter(&self, key: &str) -> Result<(u32, Duration)> {
        let (n, ttl): (Option<u32>, i64) = ::redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let left = Duration::from_millis(u64::try_from(ttl).unwrap_or(0));
        Ok((n.unwrap_or(0), left))
    }
}

#[async_trait]
impl CounterStore for RedisStore {
    fn shares_counters(&self) -> bool {
        true
    }

    async fn failures(&self, key: &str) -> Result<(u32, Duration)> {
        self.counter(&self.failure_key(key)).await
    }

    async fn record_failure(&self, key: &str, window: Duration) -> Result<()> {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        self.int(
            &self.inner.scripts.record_failure,
            &[self.failure_key(key)],
            &[ms.to_string()],
        )
        .await
        .map(|_| ())
    }

    async fn count_call(&self, key: &str, max: u32, window: Duration) -> Result<Option<Duration>> {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let left = self
            .int(
                &self.inner.scripts.count_call,
                &[self.rate_key(key)],
                &[max.to_string(), ms.to_string()],
            )
            .await?;
        Ok((left > 0).then(|| Duration::from_millis(left.unsigned_abs())))
    }

    async fn calls_exhausted(&self, key: &str, max: u32) -> Result<Option<Duration>> {
        let (n, left) = self.counter(&self.rate_key(key)).await?;
        Ok((n >= max && !left.is_zero()).then_some(left))
    }

    async fn clear_failures(&self, key: &str) -> Result<()> {
        ::redis::cmd("DEL")
            .arg(self.failure_key(key))
            .query_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}
