//! The audit job: reading the records every ending call wrote.

use async_trait::async_trait;

use crate::domain::{AuditRecord, Result};

/// The audit trail, written by the endings in the same change as the
/// ending itself; read here.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Up to `limit` audit records of `org` with id greater than `after`,
    /// oldest first.
    async fn list_audit(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>>;
}
