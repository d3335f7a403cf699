//! SQLite: the audit trail ([`crate::store::AuditStore`]): written with each
//! ending, in its transaction; read here.

use async_trait::async_trait;
use rusqlite::{params, Row, Transaction};

use super::{conversion_error, SqliteStore};
use crate::domain::{Audit, AuditRecord, EndReason, Millis, Result};
use crate::store::AuditStore;

/// Writes one audit record, in the caller's transaction.
pub(super) fn record_audit(
    tx: &Transaction<'_>,
    at: Millis,
    org: &str,
    audit: &Audit,
    reason: EndReason,
    ended: u32,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, org, actor, actor_session_id, reason, target, ended) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        at,
        org,
        audit.actor.name,
        audit.actor.session_id,
        reason.as_str(),
        audit.target,
        ended
    ])?;
    Ok(())
}

pub(super) fn row_to_audit(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let reason: String = r.get(5)?;
    Ok(AuditRecord {
        id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        at: r.get(1)?,
        org: r.get(2)?,
        actor: r.get(3)?,
        actor_session_id: r.get(4)?,
        reason: reason.parse().map_err(|e| conversion_error(5, e))?,
        target: r.get(6)?,
        ended: r.get(7)?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn list_audit(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let org = org.to_owned();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, at, org, actor, actor_session_id, reason, target, ended FROM audit \
                 WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![org, after, limit], row_to_audit)?;
            rows.collect()
        })
        .await
    }
}
