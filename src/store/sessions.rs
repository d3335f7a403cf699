//! The sessions job: making them, finding the live one behind a token,
//! recording use, listing, and ending them one at a time or in bulk.

use async_trait::async_trait;

use crate::domain::{
    Actor, Audit, EndReason, Kind, Millis, NewSession, Result, Session, TokenDigest,
};

/// Sessions over the cap ended by one login at most (a cap lowered on a
/// store holding more converges over the following logins).
pub const MAX_CAP_ENDINGS: usize = 100;

/// The audit line of a session ended by the live-session cap.
pub fn cap_audit(id: i32) -> Audit {
    Audit {
        actor: Actor::user("system", None),
        target: format!("session:{id}"),
    }
}

/// Ends the oldest live sessions of `session`'s user beyond `cap` (0: no
/// cap), each on its own (`SessionStore::end_session`: event, audit
/// record); returns how many ended.
pub async fn end_over_cap<S: SessionStore + ?Sized>(
    store: &S,
    session: &Session,
    cap: u32,
    now: Millis,
) -> Result<u32> {
    if cap == 0 {
        return Ok(0);
    }
    let cap = cap as usize;
    let live = store
        .list_sessions(
            ListQuery {
                org: session.org.clone(),
                username: Some(session.username.clone()),
                kind: None,
                after_id: 0,
                limit: cap.saturating_add(MAX_CAP_ENDINGS),
            },
            now,
        )
        .await?;
    let mut ended = 0;
    let excess = live.len().saturating_sub(cap);
    for old in live.iter().filter(|s| s.id != session.id).take(excess) {
        let done = store
            .end_session(
                EndTarget {
                    id: old.id,
                    org: Some(session.org.clone()),
                    kind: None,
                },
                EndReason::SessionLimit,
                now,
                &cap_audit(old.id),
            )
            .await?;
        ended += u32::from(done.is_some());
    }
    Ok(ended)
}

/// Which single session to end. `org` and `kind`, when set, must match too, so
/// a session outside the caller's reach is treated exactly like a missing one.
#[derive(Debug, Clone)]
pub struct EndTarget {
    pub id: i32,
    pub org: Option<String>,
    pub kind: Option<Kind>,
}

/// Which sessions a bulk ending covers (always narrowed by kinds).
#[derive(Debug, Clone)]
pub enum Scope {
    User(i64),
    Org(String),
    /// Every session of the user but one (the caller's own, kept on request).
    UserExcept {
        user: i64,
        keep: i32,
    },
}

/// One page of live sessions of an org, in increasing id order.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub org: String,
    pub username: Option<String>,
    pub kind: Option<Kind>,
    /// Only ids greater than this (the paging cursor).
    pub after_id: i32,
    pub limit: usize,
}

/// Sessions and their endings. "Live" always means: not ended, and `now`
/// before both `expires_at` and `idle_deadline`. Every ending records one
/// revocation event per session and one audit record per call that ended
/// anything, in the same transaction, and is durable when the call returns.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Fails with `Unauthenticated(BadCredentials)` if the user was disabled or
    /// removed meanwhile; ids are positive, increasing and never reused.
    async fn create_session(&self, new: NewSession) -> Result<Session>;
    /// Creates a session, then keeps its user at `cap` live sessions (0: no
    /// cap): the oldest beyond it end (`SessionLimit`), each with its
    /// revocation event and an audit record by `system` (target
    /// `session:<id>`). Atomic with the creation where the store allows
    /// (SQLite: one transaction); otherwise each ending is atomic on its
    /// own, right after the creation. Ends at most
    /// [`MAX_CAP_ENDINGS`] at once. Returns the session and how many ended.
    async fn create_session_capped(&self, new: NewSession, cap: u32) -> Result<(Session, u32)> {
        let now = new.now;
        let session = self.create_session(new).await?;
        let ended = end_over_cap(self, &session, cap, now).await?;
        Ok((session, ended))
    }
    async fn find_live_session(&self, digest: &TokenDigest, now: Millis)
        -> Result<Option<Session>>;
    /// Records use of a live session (the caller coalesces these writes).
    async fn touch_session(&self, id: i32, now: Millis, idle_deadline: Millis) -> Result<()>;
    /// Ends one live session; `None` (and no audit record) when no live
    /// session matches the target.
    async fn end_session(
        &self,
        target: EndTarget,
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<Option<Session>>;
    /// Ends every live session in `scope` whose kind is in `kinds`, atomically:
    /// a session created before the call began cannot survive it. Audited
    /// when anything ended; a call that ends nothing writes no record.
    async fn end_sessions(
        &self,
        scope: Scope,
        kinds: &[Kind],
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<u32>;
    async fn list_sessions(&self, query: ListQuery, now: Millis) -> Result<Vec<Session>>;
}
