//! The upkeep job: health, the expiry sweep and retention, the live gauge,
//! and a clean close. Kept apart from the sessions, as expiry deletion is
//! a job of its own.

use async_trait::async_trait;

use crate::domain::{Kind, Millis, Result};

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Sessions that passed their deadline and were ended as EXPIRED.
    pub expired: u32,
    /// Ended sessions and revocation events older than retention, removed.
    pub purged: u32,
}

/// Keeping the store healthy and within its retention.
#[async_trait]
pub trait UpkeepStore: Send + Sync + 'static {
    /// Cheap reachability check (health).
    async fn ping(&self) -> Result<()>;
    /// Ends sessions past their deadline (EXPIRED, audited per org as done by
    /// `system`), removes ended sessions and events older than `purge_before`
    /// and audit records older than `audit_purge_before`.
    async fn sweep(
        &self,
        now: Millis,
        purge_before: Millis,
        audit_purge_before: Millis,
    ) -> Result<SweepReport>;
    /// Live sessions by kind (for the metrics gauge).
    async fn live_counts(&self, now: Millis) -> Result<Vec<(Kind, u64)>>;
    /// Called once after a clean stop, when no call is in flight any more
    /// (SQLite checkpoints its WAL into the main file).
    async fn close(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the store holds any user or ever created a session. A store
    /// that did and then does not lost its data (a Redis restarted without
    /// persistence); the health watch reports that.
    async fn holds_data(&self) -> Result<bool> {
        Ok(true)
    }
}
