//! A store wrapped so that every call is a client span ([`crate::otel`]):
//! `store <operation>`, with `db.system.name` and `db.operation.name` and
//! nothing else (never a username, token digest or password hash). Only
//! put in front of the store when tracing is on, so it costs nothing when
//! tracing is off.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument as _;

use super::{
    AuditStore, CounterStore, EndTarget, FeedStore, LeaseAction, ListQuery, Scope, SessionStore,
    SignalStore, SigningKeyRecord, Store, StreamRecord, SweepReport, UpkeepStore, UserStore,
};
use crate::domain::{
    Actor, Audit, AuditRecord, EndReason, Kind, Millis, NewSession, NewUser, Result, Revocation,
    Session, TokenDigest, User, UserRecord,
};

/// `inner`, traced; `system` names its kind (`sqlite`, `redis`).
pub fn wrap(inner: Arc<dyn Store>, system: &'static str) -> Arc<dyn Store> {
    Arc::new(Traced { inner, system })
}

struct Traced {
    inner: Arc<dyn Store>,
    system: &'static str,
}

impl Traced {
    /// The operation's span, child of the current one; none outside a
    /// traced call (health pings, sweeps, start-up work).
    fn span(&self, operation: &'static str) -> tracing::Span {
        if tracing::Span::current().is_disabled() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            target: crate::otel::TARGET,
            "store",
            otel.name = format_args!("store {operation}"),
            otel.kind = "client",
            db.system.name = self.system,
            db.operation.name = operation,
        )
    }
}

#[async_trait]
impl UserStore for Traced {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        let span = self.span("create_user");
        self.inner.create_user(user).instrument(span).await
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>> {
        let span = self.span("find_user");
        self.inner.find_user(username).instrument(span).await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let span = self.span("list_users");
        self.inner.list_users().instrument(span).await
    }

    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool> {
        let span = self.span("set_password");
        self.inner
            .set_password(username, password_hash)
            .instrument(span)
            .await
    }

    async fn rehash_password(&self, username: &str, old: &str, new: String) -> Result<bool> {
        let span = self.span("rehash_password");
        self.inner
            .rehash_password(username, old, new)
            .instrument(span)
            .await
    }

    async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: Millis,
        actor: &Actor,
    ) -> Result<bool> {
        let span = self.span("set_disabled");
        self.inner
            .set_disabled(username, disabled, now, actor)
            .instrument(span)
            .await
    }

    async fn delete_user(&self, username: &str, now: Millis, actor: &Actor) -> Result<bool> {
        let span = self.span("delete_user");
        self.inner
            .delete_user(username, now, actor)
            .instrument(span)
            .await
    }
}

#[async_trait]
impl SessionStore for Traced {
    async fn create_session(&self, new: NewSession) -> Result<Session> {
        let span = self.span("create_session");
        self.inner.create_session(new).instrument(span).await
    }

    async fn create_session_capped(&self, new: NewSession, cap: u32) -> Result<(Session, u32)> {
        let span = self.span("create_session_capped");
        self.inner
            .create_session_capped(new, cap)
            .instrument(span)
            .await
    }

    async fn find_live_session(
        &self,
        digest: &TokenDigest,
        now: Millis,
    ) -> Result<Option<Session>> {
        let span = self.span("find_live_session");
        self.inner
            .find_live_session(digest, now)
            .instrument(span)
            .await
    }

    async fn touch_session(&self, id: i32, now: Millis, idle_deadline: Millis) -> Result<()> {
        let span = self.span("touch_session");
        self.inner
            .touch_session(id, now, idle_deadline)
            .instrument(span)
            .await
    }

    async fn end_session(
        &self,
        target: EndTarget,
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<Option<Session>> {
        let span = self.span("end_session");
        self.inner
            .end_session(target, reason, now, audit)
            .instrument(span)
            .await
    }

    async fn end_sessions(
        &self,
        scope: Scope,
        kinds: &[Kind],
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<u32> {
        let span = self.span("end_sessions");
        self.inner
            .end_sessions(scope, kinds, reason, now, audit)
            .instrument(span)
            .await
    }

    async fn list_sessions(&self, query: ListQuery, now: Millis) -> Result<Vec<Session>> {
        let span = self.span("list_sessions");
        self.inner.list_sessions(query, now).instrument(span).await
    }
}

#[async_trait]
impl FeedStore for Traced {
    fn shards(&self) -> u16 {
        self.inner.shards()
    }

    fn shard_of(&self, org: &str) -> u16 {
        self.inner.shard_of(org)
    }

    async fn last_sequence(&self, shard: u16) -> Result<u64> {
        let span = self.span("last_sequence");
        self.inner.last_sequence(shard).instrument(span).await
    }

    async fn revocations_after(
        &self,
        shard: u16,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Revocation>> {
        let span = self.span("revocations_after");
        self.inner
            .revocations_after(shard, after, limit)
            .instrument(span)
            .await
    }

    async fn wait_for_revocation(&self, after: &[(u16, u64)], timeout: Duration) -> Result<()> {
        // A long poll inside an open watch stream: not a span.
        self.inner.wait_for_revocation(after, timeout).await
    }

    fn fresh_shards(&self, after: &[(u16, u64)]) -> Option<Vec<u16>> {
        self.inner.fresh_shards(after)
    }
}

#[async_trait]
impl CounterStore for Traced {
    fn shares_counters(&self) -> bool {
        self.inner.shares_counters()
    }

    async fn count_call(&self, key: &str, max: u32, window: Duration) -> Result<Option<Duration>> {
        let span = self.span("count_call");
        self.inner
            .count_call(key, max, window)
            .instrument(span)
            .await
    }

    async fn calls_exhausted(&self, key: &str, max: u32) -> Result<Option<Duration>> {
        let span = self.span("calls_exhausted");
        self.inner.calls_exhausted(key, max).instrument(span).await
    }

    async fn failures(&self, key: &str) -> Result<(u32, Duration)> {
        let span = self.span("failures");
        self.inner.failures(key).instrument(span).await
    }

    async fn record_failure(&self, key: &str, window: Duration) -> Result<()> {
        let span = self.span("record_failure");
        self.inner
            .record_failure(key, window)
            .instrument(span)
            .await
    }

    async fn clear_failures(&self, key: &str) -> Result<()> {
        let span = self.span("clear_failures");
        self.inner.clear_failures(key).instrument(span).await
    }
}

#[async_trait]
impl AuditStore for Traced {
    async fn list_audit(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let span = self.span("list_audit");
        self.inner
            .list_audit(org, after, limit)
            .instrument(span)
            .await
    }
}

#[async_trait]
impl UpkeepStore for Traced {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().instrument(self.span("ping")).await
    }

    async fn sweep(
        &self,
        now: Millis,
        purge_before: Millis,
        audit_purge_before: Millis,
    ) -> Result<SweepReport> {
        // Background work outside any call: no span of its own.
        self.inner
            .sweep(now, purge_before, audit_purge_before)
            .await
    }

    async fn live_counts(&self, now: Millis) -> Result<Vec<(Kind, u64)>> {
        self.inner.live_counts(now).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    async fn holds_data(&self) -> Result<bool> {
        self.inner.holds_data().await
    }
}

#[async_trait]
impl SignalStore for Traced {
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let span = self.span("signing_keys");
        self.inner.signing_keys().instrument(span).await
    }

    async fn add_signing_key(
        &self,
        key: SigningKeyRecord,
        only_if_none: bool,
    ) -> Result<Vec<SigningKeyRecord>> {
        let span = self.span("add_signing_key");
        self.inner
            .add_signing_key(key, only_if_none)
            .instrument(span)
            .await
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<()> {
        let span = self.span("delete_signing_key");
        self.inner.delete_signing_key(kid).instrument(span).await
    }

    async fn create_stream(&self, stream: &StreamRecord, max_per_org: usize) -> Result<bool> {
        let span = self.span("create_stream");
        self.inner
            .create_stream(stream, max_per_org)
            .instrument(span)
            .await
    }

    async fn stream(&self, id: &str) -> Result<Option<StreamRecord>> {
        let span = self.span("stream");
        self.inner.stream(id).instrument(span).await
    }

    async fn streams(&self, org: Option<Option<&str>>) -> Result<Vec<StreamRecord>> {
        let span = self.span("streams");
        self.inner.streams(org).instrument(span).await
    }

    async fn replace_stream(&self, stream: &StreamRecord, expected: u64) -> Result<bool> {
        let span = self.span("replace_stream");
        self.inner
            .replace_stream(stream, expected)
            .instrument(span)
            .await
    }

    async fn delete_stream(&self, id: &str) -> Result<bool> {
        let span = self.span("delete_stream");
        self.inner.delete_stream(id).instrument(span).await
    }

    async fn stream_lease(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        action: LeaseAction,
    ) -> Result<bool> {
        // Background work outside any call: no span of its own.
        self.inner.stream_lease(id, owner, ttl, action).await
    }
}

#[cfg(test)]
mod tests {
    /// The `fn` names declared between `start` and the next line that is
    /// just `}`.
    fn methods(source: &str, start: &str) -> Vec<String> {
        let body = source.split_once(start).map_or("", |(_, rest)| rest);
        let body = body.split_once("\n}\n").map_or(body, |(b, _)| b);
        body.lines()
            .filter_map(|l| {
                let l = l.trim_start();
                let l = l.strip_prefix("async ").unwrap_or(l);
                let name = l.strip_prefix("fn ")?;
                Some(name.split(['(', '<']).next()?.to_owned())
            })
            .collect()
    }

    /// A method a trait gives a default body, not overridden here, would
    /// quietly skip the wrapped store's own version of it.
    #[test]
    fn every_store_method_is_forwarded() {
        let jobs = [
            (include_str!("users.rs"), "UserStore"),
            (include_str!("sessions.rs"), "SessionStore"),
            (include_str!("feed.rs"), "FeedStore"),
            (include_str!("counters.rs"), "CounterStore"),
            (include_str!("audit.rs"), "AuditStore"),
            (include_str!("upkeep.rs"), "UpkeepStore"),
            (include_str!("signals.rs"), "SignalStore"),
        ];
        let mut all = 0;
        for (source, name) in jobs {
            let declared = methods(source, &format!("pub trait {name}"));
            let forwarded = methods(
                include_str!("traced.rs"),
                &format!("impl {name} for Traced"),
            );
            assert!(!declared.is_empty(), "no methods found in {name}");
            all += declared.len();
            let missing: Vec<_> = declared.iter().filter(|m| !forwarded.contains(m)).collect();
            assert!(
                missing.is_empty(),
                "{name} not forwarded by Traced: {missing:?}"
            );
        }
        assert!(all > 25, "trait methods found: {all}");
    }
}
