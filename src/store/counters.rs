//! The counters job: credential-failure counters (throttling) and
//! rate-limit windows, when the store keeps them for every replica.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::Result;

/// Counters shared by every replica. A store that does not share them
/// keeps the defaults (nothing counted here), and each process counts in
/// memory instead (see `shares_counters`).
#[async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// Whether the store keeps the credential-failure counters and the
    /// rate-limit windows, shared by every replica (Redis). Otherwise each
    /// process counts in memory.
    fn shares_counters(&self) -> bool {
        false
    }
    /// Counts one call of a rate-limited key (`lu:<user>`, `la:<address>`,
    /// `eu:<user>`, `ea:<address>`) in a fixed window that starts with its
    /// first call: `None` when counted, or, when it already made `max`
    /// calls in its window, the time left (and nothing is counted).
    async fn count_call(
        &self,
        _key: &str,
        _max: u32,
        _window: Duration,
    ) -> Result<Option<Duration>> {
        Ok(None)
    }
    /// Like [`CounterStore::count_call`], but counts nothing.
    async fn calls_exhausted(&self, _key: &str, _max: u32) -> Result<Option<Duration>> {
        Ok(None)
    }
    /// (failures, time left in the window) of a counter (`u:<user>`,
    /// `ua:<user>\x1f<address>` or `a:<address>`); (0, 0) when it has none.
    async fn failures(&self, _key: &str) -> Result<(u32, Duration)> {
        Ok((0, Duration::ZERO))
    }
    /// Counts one failure; the window starts with the first failure.
    async fn record_failure(&self, _key: &str, _window: Duration) -> Result<()> {
        Ok(())
    }
    async fn clear_failures(&self, _key: &str) -> Result<()> {
        Ok(())
    }
}
