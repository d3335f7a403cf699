//! The application service: login, validate, the four endings and listing,
//! written against the `Store` trait. No tonic, no axum: the gRPC layer calls
//! these with already-parsed inputs.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::domain::cursor;
use crate::domain::password::{HashCost, Hasher};
use crate::domain::throttle::{Limit, Throttle};
use crate::domain::{
    limits, policy, Actor, Audit, AuditRecord, AuthFailure, ClientInfo, EndReason, Error, Kind,
    Millis, NewSession, NewUser, NotFound, Result, Revocation, Role, Session, Token, User,
    UserRecord,
};
use crate::store::{EndTarget, ListQuery, Scope, Store, SweepReport};
use crate::telemetry;

/// Idle timeout and absolute lifetime of one kind of session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 60 * 60),
        }
    }
}

/// The rules the service applies; built from `Config`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub lifetimes: HashMap<Kind, Lifetimes>,
    /// A validation writes `last_seen_at` only when the stored value is at
    /// least this old: one write per session per interval, not per call.
    pub touch_interval: Duration,
    pub hash_cost: HashCost,
    /// Concurrent Argon2 computations; more wait their turn.
    pub hash_concurrency: usize,
    /// Longest wait for an Argon2 slot before the call is shed
    /// (RESOURCE_EXHAUSTED); calls that hash are not counted against the
    /// shared in-flight budget, this queue bounds them instead.
    pub hash_queue_wait: Duration,
    /// Calls waiting for an Argon2 slot at once; more are shed at once.
    pub hash_queue_max: usize,
    pub throttle_user: Limit,
    pub throttle_address: Limit,
    /// A secret that lets a service (not a person) watch every org's revocations.
    pub service_credential: Option<ServiceCredential>,
    /// Shortest password a new or changed password may be, in characters.
    pub min_password_length: usize,
    /// Open WatchRevocations streams per principal (an admin user, or the
    /// service credential); more are refused with RESOURCE_EXHAUSTED.
    pub max_watches_per_principal: usize,
}

/// The configured service credential. Only its SHA-256 digest is kept; a
/// presented one is compared in constant time.
#[derive(Clone)]
pub struct ServiceCredential([u8; 32]);

impl ServiceCredential {
    /// Shortest secret accepted, so it cannot be guessed.
    pub const MIN_LEN: usize = 32;

    /// Fewest distinct bytes accepted: rejects `aaaa…`, `abab…` and the like.
    pub const MIN_DISTINCT: usize = 10;

    /// Surrounding whitespace (a file's trailing newline) is not part of
    /// the secret; what is left must be long and varied enough.
    pub fn new(secret: &str) -> std::result::Result<Self, String> {
        let secret = secret.trim();
        if secret.len() < Self::MIN_LEN {
            return Err(format!(
                "the service credential must be at least {} characters",
                Self::MIN_LEN
            ));
        }
        let distinct = secret
            .bytes()
            .collect::<std::collections::BTreeSet<u8>>()
            .len();
        if distinct < Self::MIN_DISTINCT {
            return Err(format!(
                "the service credential is too predictable: it must use at least {} \
                 different characters (e.g. `openssl rand -hex 32`)",
                Self::MIN_DISTINCT
            ));
        }
        Ok(ServiceCredential(Sha256::digest(secret.as_bytes()).into()))
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

impl fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceCredential(<redacted>)")
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lifetimes: Kind::ALL
                .into_iter()
                .map(|k| (k, Lifetimes::default()))
                .collect(),
            touch_interval: Duration::from_secs(60),
            hash_cost: HashCost::default(),
            // Half the cores: a login storm leaves the rest to validations.
            hash_concurrency: std::thread::available_parallelism()
                .map_or(1, |n| (n.get() / 2).max(1)),
            hash_queue_wait: Duration::from_secs(1),
            hash_queue_max: 256,
            throttle_user: Limit {
                max_failures: 10,
                window: Duration::from_secs(300),
            },
            throttle_address: Limit {
                max_failures: 100,
                window: Duration::from_secs(300),
            },
            service_credential: None,
            min_password_length: 8,
            max_watches_per_principal: 16,
        }
    }
}

impl Policy {
    fn lifetimes(&self, kind: Kind) -> Lifetimes {
        self.lifetimes.get(&kind).copied().unwrap_or_default()
    }
}

/// What proves a caller's identity on credential-bearing calls.
#[derive(Clone)]
pub enum Secret {
    Password(String),
    Token(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// Filters and paging of `list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub username: Option<String>,
    pub kind: Option<Kind>,
    pub page_size: usize,
    pub after_id: i32,
}

/// The session service core.
pub struct Sessions {
    store: Arc<dyn Store>,
    policy: Policy,
    hasher: Arc<Hasher>,
    hashing: Arc<Semaphore>,
    /// Calls waiting for a hashing slot now.
    hash_waiters: std::sync::atomic::AtomicUsize,
    throttle: Throttle,
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
            policy,
            hasher,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The credential lockout, per username and per address: in the store
    /// when it shares counters between replicas (Redis), so N replicas do
    /// not give N times the guesses; else in this process.
    async fn lockout_check(&self, user: &str, address: Option<&str>) -> Result<()> {
        if !self.store.shares_failures() {
            return self.throttle.check(user, address);
        }
        let keys = [
            (Some(format!("u:{user}")), self.policy.throttle_user),
            (
                address.map(|a| format!("a:{a}")),
                self.policy.throttle_address,
            ),
        ];
        for (key, limit) in keys {
            let Some(key) = key else { continue };
            let (failures, left) = self.store.failures(&key).await?;
            if failures >= limit.max_failures && !left.is_zero() {
                return Err(Error::TooManyAttempts { retry_after: left });
            }
        }
        Ok(())
    }

    /// `user` is `None` where only the address may be charged (an unknown
    /// name, a wrong token).
    async fn lockout_failure(&self, user: Option<&str>, address: Option<&str>) -> Result<()> {
        if !self.store.shares_failures() {
            self.throttle.record_failure(user, address);
            return Ok(());
        }
        if let Some(user) = user {
            self.store
                .record_failure(&format!("u:{user}"), self.policy.throttle_user.window)
                .await?;
        }
        if let Some(a) = address {
            self.store
                .record_failure(&format!("a:{a}"), self.policy.throttle_address.window)
                .await?;
        }
        Ok(())
    }

    /// A successful check clears the user's counter (not the address's).
    async fn lockout_success(&self, user: &str, address: Option<&str>) -> Result<()> {
        if !self.store.shares_failures() {
            self.throttle.record_success(user, address);
            return Ok(());
        }
        self.store.clear_failures(&format!("u:{user}")).await
    }

    /// The token path: only the caller's address can be locked out.
    async fn lockout_check_address(&self, address: Option<&str>) -> Result<()> {
        let Some(a) = address else { return Ok(()) };
        if !self.store.shares_failures() {
            return self.throttle.check_address(a);
        }
        let (failures, left) = self.store.failures(&format!("a:{a}")).await?;
        let limit = self.policy.throttle_address;
        if failures >= limit.max_failures && !left.is_zero() {
            return Err(Error::TooManyAttempts { retry_after: left });
        }
        Ok(())
    }

    /// Runs Argon2 on the blocking pool, at most `hash_concurrency` at once, so
    /// a login storm cannot starve validations of runtime threads. The queue
    /// in front is bounded in length and in wait: past either, this call
    /// alone is shed (RESOURCE_EXHAUSTED), nothing else waits behind it.
    async fn hashing_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        use std::sync::atomic::Ordering;
        if let Ok(slot) = self.hashing.try_acquire() {
            return Ok(slot);
        }
        let waiting = self.hash_waiters.fetch_add(1, Ordering::AcqRel);
        let slot = if waiting >= self.policy.hash_queue_max.max(1) {
            Err(Error::Overloaded)
        } else {
            match tokio::time::timeout(self.policy.hash_queue_wait, self.hashing.acquire()).await {
                Ok(Ok(slot)) => Ok(slot),
                Ok(Err(_)) => Err(Error::Internal("hashing pool closed".into())),
                Err(_) => Err(Error::Overloaded),
            }
        };
        self.hash_waiters.fetch_sub(1, Ordering::AcqRel);
        slot
    }

    /// Runs `f` on the blocking pool (the caller holds a hashing slot).
    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> Result<T> {
        use tracing::Instrument as _;
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || f(&hasher))
            .instrument(tracing::info_span!(target: crate::otel::TARGET, "argon2"))
            .await
            .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))
    }

    pub async fn hash_password(&self, password: &str) -> Result<String> {
        limits::password("password", password)?;
        let password = password.to_owned();
        let _slot = self.hashing_slot().await?;
        self.on_blocking_pool(move |h| h.hash(&password)).await?
    }

    /// Username + password, throttled per user and per address. Unknown user,
    /// wrong password and disabled user give the same error after the same
    /// work. The throttle is checked and updated while this attempt holds a
    /// hashing slot, so parallel guesses gain at most `hash_concurrency - 1`
    /// tries, and a burst of right passwords queues instead of locking out.
    async fn authenticate(
        &self,
        username: &str,
        password: &str,
        address: Option<&str>,
    ) -> Result<UserRecord> {
        let _slot = self.hashing_slot().await?;
        if let Err(e) = self.lockout_check(username, address).await {
            if matches!(e, Error::TooManyAttempts { .. }) {
                tracing::warn!(
                    user = %crate::domain::limits::log_name(username),
                    address = address.unwrap_or("-"),
                    "credential check refused: locked out after repeated failures"
                );
            }
            return Err(e);
        }
        let record = self.store.find_user(username).await?;
        let stored = record.as_ref().map(|r| r.password_hash.clone());
        let password = password.to_owned();
        let matches = self
            .on_blocking_pool(move |h| h.verify(stored.as_deref(), &password))
            .await?;
        let known = record.is_some().then_some(username);
        match record {
            Some(r) if matches && !r.user.disabled => {
                self.lockout_success(username, address).await?;
                Ok(r)
            }
            // A store outage returned early above: it is not counted.
            _ => {
                tracing::info!(
                    user = %crate::domain::limits::log_name(username),
                    address = address.unwrap_or("-"),
                    "credential check failed"
                );
                // Only an existing account's counters: invented names
                // count against the address alone.
                self.lockout_failure(known, address).await?;
                Err(Error::Unauthenticated(AuthFailure::BadCredentials))
            }
        }
    }

    /// The live session behind a presented token text.
    async fn session_of(&self, token: Option<&str>) -> Result<Session> {
        let token = match token {
            None | Some("") => return Err(Error::Unauthenticated(AuthFailure::TokenMissing)),
            Some(t) => Token::parse(t)?,
        };
        self.store
            .find_live_session(&token.digest(), now_millis())
            .await?
            .ok_or(Error::Unauthenticated(AuthFailure::TokenInvalid))
    }

    pub async fn login(
        &self,
        username: &str,
        password: &str,
        kind: Kind,
        client: ClientInfo,
        address: Option<&str>,
    ) -> Result<(Token, Session)> {
        let username = limits::username("username", username)?;
        limits::password("password", password)?;
        let record = self.authenticate(&username, password, address).await?;
        policy::may_open(record.user.role, kind)?;
        let token = Token::generate_for_org(&record.user.org)?;
        let now = now_millis();
        let life = self.policy.lifetimes(kind);
        let expires_at = now.saturating_add(millis(life.absolute));
        let session = self
            .store
            .create_session(NewSession {
                digest: token.digest(),
                kind,
                user_id: record.user.id,
                now,
                idle_deadline: now.saturating_add(millis(life.idle)).min(expires_at),
                expires_at,
                client,
            })
            .await?;
        self.undo_if_password_changed(&record, &session).await?;
        tracing::info!(session = session.id, user = %session.username, kind = %kind, "login");
        Ok((token, session))
    }

    /// A password change ends the sessions that exist when it lands. A login
    /// that checked the old password before the change but created its
    /// session after that ending would outlive it: it is ended here instead.
    async fn undo_if_password_changed(
        &self,
        checked: &UserRecord,
        session: &Session,
    ) -> Result<()> {
        let current = self.store.find_user(&checked.user.username).await?;
        if current.is_some_and(|c| c.password_hash == checked.password_hash) {
            return Ok(());
        }
        self.store
            .end_session(
                EndTarget {
                    id: session.id,
                    org: None,
                    kind: None,
                },
                EndReason::PasswordChanged,
                now_millis(),
                &Audit {
                    actor: Actor::user("system", None),
                    target: format!("session:{}", session.id),
                },
            )
            .await?;
        Err(Error::Unauthenticated(AuthFailure::BadCredentials))
    }

    /// The hot path: digest, one indexed lookup, and a write only when the
    /// idle timer is due for a refresh.
    pub async fn validate(&self, token: &str) -> Result<Session> {
        let mut session = self.session_of(Some(token)).await?;
        let now = now_millis();
        let life = self.policy.lifetimes(session.kind);
        // At least twice per idle period, or a short idle timeout would end
        // sessions in active use between two recorded uses.
        let interval = self.policy.touch_interval.min(life.idle / 2);
        if now.saturating_sub(session.last_seen_at) >= millis(interval) {
            let deadline = now
                .saturating_add(millis(life.idle))
                .min(session.expires_at);
            self.store.touch_session(session.id, now, deadline).await?;
            session.last_seen_at = now;
            session.idle_deadline = deadline;
        }
        Ok(session)
    }

    /// Ends the caller's own session. A second call with the same token finds
    /// nothing live and is UNAUTHENTICATED.
    pub async fn logoff(&self, token: Option<&str>) -> Result<Session> {
        let session = self.session_of(token).await?;
        let ended = self
            .store
            .end_session(
                EndTarget {
                    id: session.id,
                    org: None,
                    kind: None,
                },
                EndReason::Logoff,
                now_millis(),
                &Audit {
                    actor: Actor::user(&session.username, Some(session.id)),
                    target: format!("session:{}", session.id),
                },
            )
            .await?
            // Lost a race with another ending: the token is no longer live.
            .ok_or(Error::Unauthenticated(AuthFailure::TokenInvalid))?;
        tracing::info!(session = ended.id, user = %ended.username, "logoff");
        telemetry::record_revocations(EndReason::Logoff, 1);
        Ok(ended)
    }

    /// An admin holding an ADMIN session ends an ADMIN session of its own org.
    pub async fn logoff_other(&self, token: Option<&str>, session_id: i32) -> Result<Session> {
        // Authenticate before validating: an anonymous caller learns nothing
        // about what a valid request would look like.
        let caller = self.session_of(token).await?;
        if session_id <= 0 {
            return Err(Error::invalid("session_id", "must be a positive int32"));
        }
        policy::may_logoff_other(&caller)?;
        let ended = self
            .store
            .end_session(
                EndTarget {
                    id: session_id,
                    org: Some(caller.org.clone()),
                    kind: Some(Kind::Admin),
                },
                EndReason::LogoffOther,
                now_millis(),
                &Audit {
                    actor: Actor::user(&caller.username, Some(caller.id)),
                    target: format!("session:{session_id}"),
                },
            )
            .await?
            .ok_or(Error::NotFound(NotFound::Session))?;
        tracing::info!(session = ended.id, by = caller.id, "logoff other");
        telemetry::record_revocations(EndReason::LogoffOther, 1);
        Ok(ended)
    }

    /// Credentials of a mail-administration call: password (throttled) or any
    /// live session token of the same user. Returns the user, and the session
    /// whose token was used (for the audit trail).
    async fn authenticate_credentials(
        &self,
        user: &str,
        secret: &Secret,
        address: Option<&str>,
    ) -> Result<(User, Option<(i32, Kind)>)> {
        let user = limits::username("credentials.user", user)?;
        match secret {
            Secret::Password(p) => {
                limits::password("credentials.password", p)?;
                Ok((self.authenticate(&user, p, address).await?.user, None))
            }
            Secret::Token(t) => {
                // Tokens cannot be guessed: only the address is throttled
                // (a locked-out password does not lock out a live token).
                self.lockout_check_address(address).await?;
                let found = match self.session_of(Some(t)).await {
                    Ok(s) if s.username == user => self
                        .store
                        .find_user(&user)
                        .await?
                        .map(|r| (r, (s.id, s.kind))),
                    Ok(_) | Err(Error::Unauthenticated(_)) => None,
                    Err(e) => return Err(e),
                };
                match found {
                    Some((r, session_id)) if !r.user.disabled => {
                        self.lockout_success(&user, address).await?;
                        Ok((r.user, Some(session_id)))
                    }
                    _ => {
                        // A wrong token says nothing about the password:
                        // it counts against the address, never the user.
                        self.lockout_failure(None, address).await?;
                        Err(Error::Unauthenticated(AuthFailure::BadCredentials))
                    }
                }
            }
        }
    }

    /// Ends every IMAP and POP session of one mailbox; returns how many.
    pub async fn logout_user(
        &self,
        credentials_user: &str,
        secret: &Secret,
        mailbox: &str,
        address: Option<&str>,
    ) -> Result<u32> {
        let mailbox = limits::mailbox("user", mailbox)?;
        let (caller, caller_session) = self
            .authenticate_credentials(credentials_user, secret, address)
            .await?;
        let target = if caller.username == mailbox {
            caller.clone()
        } else {
            // Another mailbox by token: only from a console session.
            if caller_session.is_some_and(|(_, kind)| kind != Kind::Admin) {
                return Err(Error::PermissionDenied(
                    "logging out another mailbox by token needs an ADMIN (console) session",
                ));
            }
            let found = self.store.find_user(&mailbox).await?.map(|r| r.user);
            policy::may_reach_user((&caller).into(), &mailbox, found.as_ref())?;
            found.ok_or(Error::NotFound(NotFound::Mailbox))?
        };
        let ended = self
            .store
            .end_sessions(
                Scope::User(target.id),
                &Kind::MAIL,
                EndReason::LogoutUser,
                now_millis(),
                &Audit {
                    actor: Actor::user(&caller.username, caller_session.map(|(id, _)| id)),
                    target: format!("mailbox:{}", target.username),
                },
            )
            .await?;
        tracing::info!(mailbox = %target.username, by = %caller.username, ended, "logout user");
        telemetry::record_revocations(EndReason::LogoutUser, u64::from(ended));
        Ok(ended)
    }

    /// Ends every API session of the caller's org; returns how many.
    pub async fn logout_all(
        &self,
        username: &str,
        password: &str,
        address: Option<&str>,
    ) -> Result<u32> {
        let username = limits::username("username", username)?;
        limits::password("password", password)?;
        let caller = self.authenticate(&username, password, address).await?.user;
        let ended = self
            .store
            .end_sessions(
                Scope::Org(caller.org.clone()),
                &[Kind::Api],
                EndReason::LogoutAll,
                now_millis(),
                &Audit {
                    actor: Actor::user(&caller.username, None),
                    target: format!("org:{}", caller.org),
                },
            )
            .await?;
        tracing::info!(org = %caller.org, by = %caller.username, ended, "logout all");
        telemetry::record_revocations(EndReason::LogoutAll, u64::from(ended));
        Ok(ended)
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
        let records = self.store.list_audit(&caller.org, after, limit).await?;
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
            let found = self.store.find_user(name).await?.map(|r| r.user);
            policy::may_reach_user((&caller).into(), name, found.as_ref())?;
        }
        let limit = match filter.page_size {
            0 => limits::DEFAULT_PAGE_SIZE,
            n => n.min(limits::MAX_PAGE_SIZE),
        };
        let sessions = self
            .store
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

    /// Ends expired sessions and purges ended ones older than `retention`.
    /// Ends expired sessions; purges ended sessions and revocation events
    /// older than `retention`, audit records older than `audit_retention`.
    pub async fn sweep(
        &self,
        retention: Duration,
        audit_retention: Duration,
    ) -> Result<SweepReport> {
        let now = now_millis();
        let report = self
            .store
            .sweep(
                now,
                now.saturating_sub(millis(retention)),
                now.saturating_sub(millis(audit_retention)),
            )
            .await?;
        telemetry::record_revocations(EndReason::Expired, u64::from(report.expired));
        Ok(report)
    }

    /// Adds a user (CLI, demo data).
    pub async fn add_user(
        &self,
        username: &str,
        org: &str,
        role: Role,
        password: &str,
    ) -> Result<User> {
        let username = limits::username("username", username)?;
        let org = limits::org(org)?;
        self.check_new_password(password)?;
        let password_hash = self.hash_password(password).await?;
        self.store
            .create_user(NewUser {
                username,
                org,
                role,
                password_hash,
                now: now_millis(),
            })
            .await
    }

    /// Sets a user's password (user administration). Every live session of
    /// the user then ends (PASSWORD_CHANGED), unless `keep_sessions`: a
    /// password is changed because it may be known to someone else, whose
    /// sessions must not outlive it. Returns how many sessions ended.
    pub async fn set_password(
        &self,
        username: &str,
        password: &str,
        keep_sessions: bool,
    ) -> Result<u32> {
        let username = limits::username("username", username)?;
        self.check_new_password(password)?;
        let hash = self.hash_password(password).await?;
        let user = self
            .store
            .find_user(&username)
            .await?
            .ok_or(Error::NotFound(NotFound::User))?
            .user;
        if !self.store.set_password(&username, hash).await? {
            return Err(Error::NotFound(NotFound::User));
        }
        if keep_sessions {
            return Ok(0);
        }
        self.end_after_password_change(&user, None, &Actor::operator())
            .await
    }

    /// Ends the user's sessions after its password changed, all but `keep`.
    async fn end_after_password_change(
        &self,
        user: &User,
        keep: Option<i32>,
        actor: &Actor,
    ) -> Result<u32> {
        let scope = match keep {
            Some(keep) => Scope::UserExcept {
                user: user.id,
                keep,
            },
            None => Scope::User(user.id),
        };
        let ended = self
            .store
            .end_sessions(
                scope,
                &Kind::ALL,
                EndReason::PasswordChanged,
                now_millis(),
                &Audit {
                    actor: actor.clone(),
                    target: format!("user:{}", user.username),
                },
            )
            .await?;
        tracing::info!(user = %user.username, by = %actor.name, ended, "password changed");
        telemetry::record_revocations(EndReason::PasswordChanged, u64::from(ended));
        Ok(ended)
    }

    /// The caller (by its session token) changes its own password: the
    /// current one is checked like every credential (throttled), then every
    /// other session of the user ends. Returns how many ended.
    pub async fn change_password(
        &self,
        token: Option<&str>,
        current_password: &str,
        new_password: &str,
        address: Option<&str>,
    ) -> Result<u32> {
        let caller = self.session_of(token).await?;
        limits::password("current_password", current_password)?;
        limits::password("new_password", new_password)?;
        let record = self
            .authenticate(&caller.username, current_password, address)
            .await?;
        if record.user.id != caller.user_id {
            return Err(Error::Unauthenticated(AuthFailure::TokenInvalid));
        }
        let hash = self.hash_password(new_password).await?;
        if !self.store.set_password(&caller.username, hash).await? {
            return Err(Error::Unauthenticated(AuthFailure::TokenInvalid));
        }
        self.end_after_password_change(
            &record.user,
            Some(caller.id),
            &Actor::user(&caller.username, Some(caller.id)),
        )
        .await
    }

    /// Ends the live sessions of one user (of `kinds`, or every kind when
    /// empty): the user itself, optionally keeping the calling session, or
    /// an admin of the user's org. Returns how many ended.
    pub async fn end_user_sessions(
        &self,
        token: Option<&str>,
        user: &str,
        kinds: &[Kind],
        keep_current: bool,
    ) -> Result<u32> {
        let caller = self.session_of(token).await?;
        let name = limits::username("user", user)?;
        if kinds.len() > Kind::ALL.len() {
            return Err(Error::invalid(
                "kinds",
                format!("at most {} entries", Kind::ALL.len()),
            ));
        }
        let own = name == caller.username;
        let (target_id, target_org) = if own {
            (caller.user_id, caller.org.clone())
        } else {
            let found = self.store.find_user(&name).await?.map(|r| r.user);
            policy::may_reach_user((&caller).into(), &name, found.as_ref())?;
            let t = found.ok_or(Error::NotFound(NotFound::User))?;
            (t.id, t.org)
        };
        let mut kinds = if kinds.is_empty() {
            Kind::ALL.to_vec()
        } else {
            kinds.to_vec()
        };
        kinds.sort();
        kinds.dedup();
        let scope = if own && keep_current {
            Scope::UserExcept {
                user: target_id,
                keep: caller.id,
            }
        } else {
            Scope::User(target_id)
        };
        let ended = self
            .store
            .end_sessions(
                scope,
                &kinds,
                EndReason::EndUserSessions,
                now_millis(),
                &Audit {
                    actor: Actor::user(&caller.username, Some(caller.id)),
                    target: format!("user:{name}"),
                },
            )
            .await?;
        tracing::info!(user = %name, org = %target_org, by = %caller.username, ended, "end user sessions");
        telemetry::record_revocations(EndReason::EndUserSessions, u64::from(ended));
        Ok(ended)
    }

    /// A new password: at least the configured length (in characters).
    fn check_new_password(&self, password: &str) -> Result<()> {
        let min = self.policy.min_password_length;
        if password.chars().count() < min {
            return Err(Error::invalid(
                "password",
                format!("shorter than {min} characters"),
            ));
        }
        limits::password("password", password)
    }

    /// Ends the user's live sessions and removes it (user administration).
    pub async fn delete_user(&self, username: &str) -> Result<()> {
        let username = limits::username("username", username)?;
        if self
            .store
            .delete_user(&username, now_millis(), &Actor::operator())
            .await?
        {
            Ok(())
        } else {
            Err(Error::NotFound(NotFound::User))
        }
    }

    pub async fn set_disabled(&self, username: &str, disabled: bool) -> Result<()> {
        let username = limits::username("username", username)?;
        if self
            .store
            .set_disabled(&username, disabled, now_millis(), &Actor::operator())
            .await?
        {
            Ok(())
        } else {
            Err(Error::NotFound(NotFound::User))
        }
    }
}

/// What a watcher asked for.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    /// Replay events after this sequence first (one event log only).
    pub after: Option<u64>,
    /// Replay events after this cursor first; neither: from now on.
    pub after_cursor: Option<String>,
    pub org: Option<String>,
    /// Empty: every kind.
    pub kinds: Vec<Kind>,
    /// The caller's address, for throttling wrong credentials.
    pub address: Option<String>,
}

/// An authorized watch, ready to run.
#[derive(Debug)]
pub struct Watch {
    /// The admin session (token, id), re-checked while the stream is open;
    /// `None` for the service credential.
    admin: Option<(String, i32)>,
    org: Option<String>,
    kinds: Vec<Kind>,
    /// The last sequence delivered from each shard the watch reads.
    positions: cursor::Positions,
    /// Counts this stream against its principal's cap until dropped.
    _slot: WatchSlot,
}

/// One open watch stream of one principal; gives its place back when the
/// stream ends (the watch is dropped).
#[derive(Debug)]
struct WatchSlot {
    principal: String,
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl WatchSlot {
    fn take(
        open: &Arc<std::sync::Mutex<HashMap<String, usize>>>,
        principal: String,
        max: usize,
    ) -> Result<Self> {
        let mut map = open.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(principal.clone()).or_insert(0);
        if *n >= max.max(1) {
            return Err(Error::Overloaded);
        }
        *n += 1;
        Ok(WatchSlot {
            principal,
            open: open.clone(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut map = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.principal);
            }
        }
    }
}

impl Watch {
    fn wants(&self, e: &Revocation) -> bool {
        self.org.as_ref().is_none_or(|o| *o == e.org)
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
    }
}

/// Events read from the store per query while catching up.
const WATCH_BATCH: usize = 500;
/// How long a watcher sleeps between checks when nothing happens; an admin
/// watcher's own session is re-checked at this pace too.
const WATCH_RECHECK: Duration = Duration::from_secs(5);

impl Sessions {
    /// Authorizes a watcher and fixes its starting point. Errors here are the
    /// RPC's status; nothing has been streamed yet.
    pub async fn start_watch(&self, token: Option<&str>, req: WatchRequest) -> Result<Watch> {
        let org = req.org.as_deref().map(limits::org).transpose()?;
        if let Some(address) = req.address.as_deref() {
            self.throttle.check_address(address)?;
        }
        let is_service = match (token, &self.policy.service_credential) {
            (Some(t), Some(cred)) => cred.matches(t),
            _ => false,
        };
        let (admin, org, principal) = if is_service {
            (None, org, "service".to_owned())
        } else {
            let caller = match self.session_of(token).await {
                Ok(c) => c,
                Err(e) => {
                    // Guessing the service credential is throttled per address.
                    self.throttle.record_failure(None, req.address.as_deref());
                    return Err(e);
                }
            };
            if caller.role != Role::Admin {
                return Err(Error::PermissionDenied(
                    "only admins (or the service credential) may watch revocations",
                ));
            }
            policy::may_list(&caller)?;
            if org.as_ref().is_some_and(|o| *o != caller.org) {
                return Err(Error::PermissionDenied(
                    "an admin may watch its own organization only",
                ));
            }
            let token = token.map(str::to_owned).unwrap_or_default();
            let principal = format!("user:{}", caller.user_id);
            (Some((token, caller.id)), Some(caller.org), principal)
        };
        let shards: Vec<u16> = match &org {
            Some(o) => vec![self.store.shard_of(o)],
            None => (0..self.store.shards()).collect(),
        };
        let positions = self.start_positions(&shards, &req).await?;
        let _slot = WatchSlot::take(
            &self.watchers,
            principal,
            self.policy.max_watches_per_principal,
        )?;
        Ok(Watch {
            admin,
            org,
            kinds: req.kinds,
            positions,
            _slot,
        })
    }

    /// Where a watch over `shards` starts: the request's cursor or sequence,
    /// checked against the store now (not mid-stream), or the newest events.
    async fn start_positions(
        &self,
        shards: &[u16],
        req: &WatchRequest,
    ) -> Result<cursor::Positions> {
        let given = match (&req.after_cursor, req.after) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "after_cursor",
                    "give after_cursor or after_sequence, not both",
                ))
            }
            (Some(c), None) => Some(cursor::decode(c, self.store.shards())?),
            (None, Some(seq)) if shards.len() == 1 => Some([(shards[0], seq)].into()),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "after_sequence",
                    "this watch reads several event logs: resume with after_cursor",
                ))
            }
            (None, None) => None,
        };
        let field = if req.after_cursor.is_some() {
            "after_cursor"
        } else {
            "after_sequence"
        };
        let mut positions = cursor::Positions::new();
        for &shard in shards {
            let last = self.store.last_sequence(shard).await?;
            let Some(given) = &given else {
                positions.insert(shard, last);
                continue;
            };
            let after = *given.get(&shard).ok_or_else(|| {
                Error::invalid(
                    field,
                    "the cursor does not cover this watch's organizations",
                )
            })?;
            if after > last {
                // The newest sequence may be shared with other orgs: not told.
                return Err(Error::invalid(
                    field,
                    format!("{after} is ahead of the newest event"),
                ));
            }
            // Fails now when the cursor is past retention.
            self.store.revocations_after(shard, after, 1).await?;
            positions.insert(shard, after);
        }
        Ok(positions)
    }

    /// Sends the events after the watch's positions (of the shards in
    /// `only`, or all); `Ok(true)` when a shard had a full batch (more to
    /// read at once), `Err(())` when the stream is over.
    async fn deliver(
        &self,
        watch: &mut Watch,
        out: &mpsc::Sender<Result<Revocation>>,
        only: Option<Vec<u16>>,
    ) -> std::result::Result<bool, ()> {
        let shards: Vec<(u16, u64)> = watch
            .positions
            .iter()
            .filter(|(s, _)| only.as_ref().is_none_or(|o| o.contains(s)))
            .map(|(s, q)| (*s, *q))
            .collect();
        let mut full = false;
        for (shard, after) in shards {
            let batch = match self
                .store
                .revocations_after(shard, after, WATCH_BATCH)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return Err(());
                }
            };
            full |= batch.len() == WATCH_BATCH;
            for mut event in batch {
                watch.positions.insert(shard, event.sequence);
                event.cursor = cursor::encode(self.store.shards(), &watch.positions);
                // The watcher's own admin session ended: this is its last event.
                let own_end = watch
                    .admin
                    .as_ref()
                    .is_some_and(|(_, id)| *id == event.session_id);
                if watch.wants(&event) && out.send(Ok(event)).await.is_err() {
                    return Err(());
                }
                if own_end {
                    let _ = out
                        .send(Err(Error::Unauthenticated(AuthFailure::TokenInvalid)))
                        .await;
                    return Err(());
                }
            }
        }
        Ok(full)
    }

    /// Streams the watch's events into `out` until the receiver goes away,
    /// `shutdown` turns true, the store fails, or an admin watcher's session
    /// ends. Each event is sent once, in order within its shard.
    pub async fn run_watch(
        &self,
        mut watch: Watch,
        out: mpsc::Sender<Result<Revocation>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut checked = tokio::time::Instant::now();
        let mut only = None;
        loop {
            if *shutdown.borrow() {
                let _ = out
                    .send(Err(Error::Unavailable("server shutting down".into())))
                    .await;
                return;
            }
            match self.deliver(&mut watch, &out, only.take()).await {
                Err(()) => return,
                Ok(true) => continue,
                Ok(false) => {}
            }
            if let Some((token, _)) = &watch.admin {
                if checked.elapsed() >= WATCH_RECHECK {
                    checked = tokio::time::Instant::now();
                    if let Err(e) = self.session_of(Some(token)).await {
                        let _ = out.send(Err(e)).await;
                        return;
                    }
                }
            }
            let after: Vec<(u16, u64)> = watch.positions.iter().map(|(s, q)| (*s, *q)).collect();
            tokio::select! {
                woke = self.store.wait_for_revocation(&after, WATCH_RECHECK) => {
                    if let Err(e) = woke {
                        let _ = out.send(Err(e)).await;
                        return;
                    }
                    only = self.store.fresh_shards(&after);
                }
                _ = out.closed() => return,
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether `username` is one of [`DEMO_USERS`] (whose passwords are published).
pub fn is_demo_user(username: &str) -> bool {
    DEMO_USERS.iter().any(|(name, ..)| *name == username)
}

/// The demo users, taken from the examples in the vendors' documentation
/// (OpenSRS Email API, Informatica Cloud REST API v2).
pub const DEMO_USERS: &[(&str, &str, &str, Role)] = &[
    (
        "domain_admin@example.com",
        "pencil75",
        "example.com",
        Role::Admin,
    ),
    (
        "joe_user@example.com",
        "joe-pass-1",
        "example.com",
        Role::User,
    ),
    (
        "useremail@company.com",
        "mypassword",
        "company.com",
        Role::User,
    ),
    (
        "admin@company.com",
        "admin-pass-1",
        "company.com",
        Role::Admin,
    ),
];

impl Sessions {
    /// Creates the demo users that do not exist yet (existing ones are left as they are).
    pub async fn ensure_demo_users(&self) -> Result<usize> {
        let mut created = 0;
        for (username, password, org, role) in DEMO_USERS {
            match self.add_user(username, org, *role, password).await {
                Ok(_) => created += 1,
                Err(Error::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }
}
