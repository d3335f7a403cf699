//! Redis: the audit trail ([`crate::store::AuditStore`]): one stream per org,
//! written by each ending script; read and trimmed here.

use ::redis::Value;
use async_trait::async_trait;

use super::decode::{audit_from, map_err};
use super::{RedisStore, PURGE_BATCH};
use crate::domain::{AuditRecord, Millis, Result};
use crate::store::AuditStore;

impl RedisStore {
    /// Trims an org's audit records older than `before` (plain XTRIM).
    pub(super) async fn purge_audit(&self, org: &str, before: Millis) -> Result<u32> {
        let key = self.layout().audit(org);
        let mut purged = 0u32;
        loop {
            let records = self.list_audit(org, 0, PURGE_BATCH).await?;
            let old: Vec<&AuditRecord> = records.iter().take_while(|r| r.at < before).collect();
            let Some(last) = old.last() else { break };
            let removed: u64 = ::redis::cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg(format!("{}-0", last.id + 1))
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            purged += u32::try_from(removed).unwrap_or(0);
            if old.len() < PURGE_BATCH {
                break;
            }
        }
        Ok(purged)
    }
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn list_audit(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let reply: Value = ::redis::cmd("XRANGE")
            .arg(self.layout().audit(org))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let Value::Array(entries) = reply else {
            return Ok(Vec::new());
        };
        entries.iter().map(|e| audit_from(org, e)).collect()
    }
}
