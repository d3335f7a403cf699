//! The application service: login, validate, the four endings and listing,
//! written against the store's job traits. No tonic, no axum: the gRPC
//! layer calls these with already-parsed inputs.
//!
//! One `Sessions` type, its methods grouped by job: this file holds the
//! type, validation and listing; `credentials` checks who the caller is,
//! `login` makes sessions, `endings` ends them, `users` administers users,
//! `watch` streams the revocation feed, `settings` and `demo` hold what it is
//! configured and seeded with.

mod credentials;
mod demo;
mod endings;
mod login;
mod settings;
mod users;
mod watch;

pub use credentials::Principal;
pub use demo::{is_demo_user, DEMO_USERS};
pub use settings::{Lifetimes, ListFilter, Policy, Secret, ServiceCredential};
pub use watch::{Watch, WatchItem, WatchRequest, HEARTBEAT_MAX, HEARTBEAT_MIN};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use crate::domain::password::Hasher;
use crate::domain::rate::Rate;
use crate::domain::throttle::Throttle;
use crate::domain::{
    limits, policy, AuditRecord, AuthFailure, Error, Millis, Result, Session, Token,
};
use crate::store::{
    AuditStore, CounterStore, FeedStore, ListQuery, SessionStore, Store, UpkeepStore, UserStore,
};

/// The session service core.
pub struct Sessions {
    store: Arc<dyn Store>,
    policy: Policy,
    hasher: Arc<Hasher>,
    hashing: Arc<Semaphore>,
    /// Calls waiting for a hashing slot now.
    hash_waiters: std::sync::atomic::AtomicUsize,
    throttle: Throttle,
    /// Successful logins and ending calls, per user and per address, when
    /// the store does not keep them for every replica.
    rates: crate::domain::rate::RateLimiter,
    /// Open watch streams by principal.
    watchers: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, policy: Policy) -> Result<Self> {
        let hasher = Arc::new(Hasher::new(policy.hash_cost)?);
        Ok(Sessions {
            store,
            hashing: Arc::new(Semaphore::new(policy.hash_concurrency.max(1))),
            hash_waiters: std::sync::atomic::AtomicUsize::new(0),
            watchers: Arc::default(),
            throttle: Throttle::new(policy.throttle_user, policy.throttle_address),
            rates: crate::domain::rate::RateLimiter::default(),
            policy,
            hasher,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    // Each job of the service asks for the narrowest part of the store it
    // uses, so a reader sees at a glance which job a call belongs to.
    fn users(&self) -> &dyn UserStore {
        &*self.store
    }

    fn session_store(&self) -> &dyn SessionStore {
        &*self.store
    }

    fn feed(&self) -> &dyn FeedStore {
        &*self.store
    }

    fn counters(&self) -> &dyn CounterStore {
        &*self.store
    }

    fn audit(&self) -> &dyn AuditStore {
        &*self.store
    }

    fn upkeep(&self) -> &dyn UpkeepStore {
        &*self.store
    }

    /// The time left in `key`'s window when it already made `rate.max`
    /// calls in it; counts nothing. Kept in the store when it is shared
    /// (Redis: N replicas allow `max` in all, not N × `max`), else here.
    async fn rate_exhausted(&self, key: &str, rate: Rate) -> Result<Option<Duration>> {
        if rate.is_off() {
            return Ok(None);
        }
        if self.counters().shares_counters() {
            return self.counters().calls_exhausted(key, rate.max).await;
        }
        Ok(self.rates.check(key, rate).err())
    }

    /// Counts one call of `key`; past its limit nothing is counted and the
    /// time left in its window is returned. Where: as [`Self::rate_exhausted`].
    async fn rate_count(&self, key: &str, rate: Rate) -> Result<Option<Duration>> {
        if rate.is_off() {
            return Ok(None);
        }
        if self.counters().shares_counters() {
            return self.counters().count_call(key, rate.max, rate.window).await;
        }
        Ok(self.rates.hit(key, rate).err())
    }

    /// The live session behind a presented token text.
    async fn session_of(&self, token: Option<&str>) -> Result<Session> {
        self.session_at(token, now_millis()).await
    }

    /// [`Self::session_of`] as of `now`.
    async fn session_at(&self, token: Option<&str>, now: Millis) -> Result<Session> {
        let digest = match token {
            None | Some("") => return Err(Error::Unauthenticated(AuthFailure::TokenMissing)),
            Some(t) => Token::digest_of(t)?,
        };
        self.session_store()
            .find_live_session(&digest, now)
            .await?
            .ok_or(Error::Unauthenticated(AuthFailure::TokenInvalid))
    }

    /// The hot path: digest, one indexed lookup, and a write only when the
    /// idle timer is due for a refresh.
    pub async fn validate(&self, token: &str) -> Result<Session> {
        let now = now_millis();
        let mut session = self.session_at(Some(token), now).await?;
        let life = self.policy.lifetimes(session.kind);
        // At least twice per idle period, or a short idle timeout would end
        // sessions in active use between two recorded uses.
        let interval = self.policy.touch_interval.min(life.idle / 2);
        if now.saturating_sub(session.last_seen_at) >= millis(interval) {
            let deadline = now
                .saturating_add(millis(life.idle))
                .min(session.expires_at);
            self.session_store()
                .touch_session(session.id, now, deadline)
                .await?;
            session.last_seen_at = now;
            session.idle_deadline = deadline;
        }
        Ok(session)
    }

    /// One page of the caller's org's audit trail (admins only), oldest first,
    /// and the cursor for the next page when there may be more.
    pub async fn list_audit(
        &self,
        token: Option<&str>,
        page_size: usize,
        after: u64,
    ) -> Result<(Vec<AuditRecord>, Option<u64>)> {
        let caller = self.session_of(token).await?;
        policy::may_list(&caller)?;
        let limit = match page_size {
            0 => limits::DEFAULT_PAGE_SIZE,
            n => n.min(limits::MAX_PAGE_SIZE),
        };
        let records = self.audit().list_audit(&caller.org, after, limit).await?;
        let next = (records.len() == limit)
            .then(|| records.last().map(|r| r.id))
            .flatten();
        Ok((records, next))
    }

    /// One page of the caller's org's live sessions, and the cursor for the
    /// next page when there may be more.
    pub async fn list(
        &self,
        token: Option<&str>,
        filter: ListFilter,
    ) -> Result<(Vec<Session>, Option<i32>)> {
        let caller = self.session_of(token).await?;
        policy::may_list(&caller)?;
        let username = filter
            .username
            .as_deref()
            .map(|u| limits::username("user", u))
            .transpose()?;
        if let Some(name) = username.as_deref().filter(|n| *n != caller.username) {
            // A user of another org, and a name that would be there, are
            // refused alike; a missing name of the caller's own org lists nothing.
            let found = self.users().find_user(name).await?.map(|r| r.user);
            policy::may_reach_user((&caller).into(), name, found.as_ref())?;
        }
        let limit = match filter.page_size {
            0 => limits::DEFAULT_PAGE_SIZE,
            n => n.min(limits::MAX_PAGE_SIZE),
        };
        let sessions = self
            .session_store()
            .list_sessions(
                ListQuery {
                    org: caller.org,
                    username,
                    kind: filter.kind,
                    after_id: filter.after_id,
                    limit,
                },
                now_millis(),
            )
            .await?;
        let next = (sessions.len() == limit)
            .then(|| sessions.last().map(|s| s.id))
            .flatten();
        Ok((sessions, next))
    }
}
