//! Checking who the caller is: passwords (Argon2 in its own bounded queue),
//! the credential lockout, and the rules for new passwords.

use super::{Secret, Sessions};
use crate::domain::password::Hasher;
use crate::domain::throttle::{Limit, USER_WIDE_FACTOR};
use crate::domain::{limits, AuthFailure, Error, Kind, Result, User, UserRecord};

/// The store's counter of one user's failures from one address.
fn user_at_key(user: &str, address: &str) -> String {
    format!("ua:{user}\u{1f}{address}")
}

impl Sessions {
    /// The shared counters an attempt touches, with their limits: per
    /// (user, address) at the per-user limit, per user at
    /// `USER_WIDE_FACTOR` times it (so guesses from one address lock that
    /// address out of the account, not the owner elsewhere), per address.
    /// `user` is `None` when the failure must not count against any name.
    fn shared_lockout_keys(
        &self,
        user: Option<&str>,
        address: Option<&str>,
    ) -> Vec<(String, Limit)> {
        let per_user = self.policy.throttle_user;
        let mut keys = Vec::with_capacity(3);
        if let Some(u) = user {
            if let Some(a) = address {
                keys.push((user_at_key(u, a), per_user));
            }
            let wide = Limit {
                max_failures: per_user.max_failures.saturating_mul(USER_WIDE_FACTOR),
                window: per_user.window,
            };
            keys.push((format!("u:{u}"), wide));
        }
        if let Some(a) = address {
            keys.push((format!("a:{a}"), self.policy.throttle_address));
        }
        keys
    }

    /// The credential lockout, keyed like the in-memory throttle: in the
    /// store when it shares counters between replicas (Redis), so N
    /// replicas do not give N times the guesses; else in this process.
    pub(super) async fn lockout_check(&self, user: &str, address: Option<&str>) -> Result<()> {
        if !self.counters().shares_counters() {
            return self.throttle.check(user, address);
        }
        for (key, limit) in self.shared_lockout_keys(Some(user), address) {
            let (failures, left) = self.counters().failures(&key).await?;
            if failures >= limit.max_failures && !left.is_zero() {
                return Err(Error::TooManyAttempts { retry_after: left });
            }
        }
        Ok(())
    }

    /// `user` is `None` where only the address may be charged (an unknown
    /// name, a wrong token).
    pub(super) async fn lockout_failure(
        &self,
        user: Option<&str>,
        address: Option<&str>,
    ) -> Result<()> {
        if !self.counters().shares_counters() {
            self.throttle.record_failure(user, address);
            return Ok(());
        }
        for (key, limit) in self.shared_lockout_keys(user, address) {
            self.counters().record_failure(&key, limit.window).await?;
        }
        Ok(())
    }

    /// A successful check clears the user's counters (not the address's).
    pub(super) async fn lockout_success(&self, user: &str, address: Option<&str>) -> Result<()> {
        if !self.counters().shares_counters() {
            self.throttle.record_success(user, address);
            return Ok(());
        }
        if let Some(a) = address {
            self.counters()
                .clear_failures(&user_at_key(user, a))
                .await?;
        }
        self.counters().clear_failures(&format!("u:{user}")).await
    }

    /// The token path: only the caller's address can be locked out.
    pub(super) async fn lockout_check_address(&self, address: Option<&str>) -> Result<()> {
        let Some(a) = address else { return Ok(()) };
        if !self.counters().shares_counters() {
            return self.throttle.check_address(a);
        }
        let (failures, left) = self.counters().failures(&format!("a:{a}")).await?;
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
    pub(super) async fn hashing_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
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
    pub(super) async fn on_blocking_pool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> Result<T> {
        use tracing::Instrument as _;
        let hasher = self.hasher.clone();
        // A child of the call's span; none outside a traced call (start-up
        // and `sessiond user` hashing would otherwise be traces of their own).
        let span = if tracing::Span::current().is_disabled() {
            tracing::Span::none()
        } else {
            tracing::info_span!(target: crate::otel::TARGET, "argon2")
        };
        tokio::task::spawn_blocking(move || f(&hasher))
            .instrument(span)
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
    pub(super) async fn authenticate(
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
        let record = self.users().find_user(username).await?;
        let stored = record.as_ref().map(|r| r.password_hash.clone());
        let password = password.to_owned();
        // A right password whose stored hash has another cost is hashed
        // again at the configured cost, in the same slot.
        let (matches, rehashed) = self
            .on_blocking_pool(move |h| {
                let matches = h.verify(stored.as_deref(), &password);
                let rehashed = match stored.as_deref() {
                    Some(s) if matches && h.needs_rehash(s) => h.hash(&password).ok(),
                    _ => None,
                };
                (matches, rehashed)
            })
            .await?;
        let known = record.is_some().then_some(username);
        match record {
            Some(mut r) if matches && !r.user.disabled => {
                self.lockout_success(username, address).await?;
                if let Some(new) = rehashed {
                    self.store_rehash(&mut r, new).await;
                }
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

    /// Stores a rehash of a checked password, unless the hash changed
    /// meanwhile; a failure only means the old hash stays (logged).
    async fn store_rehash(&self, record: &mut UserRecord, new: String) {
        let name = record.user.username.clone();
        match self
            .users()
            .rehash_password(&name, &record.password_hash, new.clone())
            .await
        {
            Ok(true) => {
                tracing::info!(user = %limits::log_name(&name), "password rehashed at the configured cost");
                record.password_hash = new;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(user = %limits::log_name(&name), error = %e, "rehash not stored")
            }
        }
    }

    /// Credentials of a mail-administration call: password (throttled) or any
    /// live session token of the same user. Returns the user, and the session
    /// whose token was used (for the audit trail).
    pub(super) async fn authenticate_credentials(
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
                        .users()
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

    /// A new password: at least the configured length (in characters).
    pub(super) fn check_new_password(&self, password: &str) -> Result<()> {
        let min = self.policy.min_password_length;
        if password.chars().count() < min {
            return Err(Error::invalid(
                "password",
                format!("shorter than {min} characters"),
            ));
        }
        limits::password("password", password)
    }
}

/// Who calls an org-wide interface that admins and internal services share
/// (the Shared Signals management API).
#[derive(Debug, Clone)]
pub enum Principal {
    /// The service credential: every org.
    Service,
    /// A live `KIND_ADMIN` session of an admin: its own org only.
    Admin(crate::domain::Session),
}

impl Principal {
    /// The org the caller is confined to; `None` for the service credential.
    pub fn org(&self) -> Option<&str> {
        match self {
            Principal::Service => None,
            Principal::Admin(s) => Some(&s.org),
        }
    }
}

impl Sessions {
    /// Refuses a client address locked out by repeated failed credentials
    /// (`TOO_MANY_ATTEMPTS`), for callers that check a credential of their
    /// own before any session token.
    pub async fn check_address_lockout(&self, address: Option<&str>) -> Result<()> {
        self.lockout_check_address(address).await
    }

    /// The service credential, or an admin's `KIND_ADMIN` session; anything
    /// else is refused (UNAUTHENTICATED for a bad token, PERMISSION_DENIED
    /// for a live session that is not an admin's console). A wrong token
    /// counts against the caller's address, as a guess of the credential.
    pub async fn admin_or_service(
        &self,
        token: Option<&str>,
        address: Option<&str>,
    ) -> Result<Principal> {
        self.lockout_check_address(address).await?;
        if let (Some(t), Some(cred)) = (token, &self.policy.service_credential) {
            if cred.matches(t) {
                return Ok(Principal::Service);
            }
        }
        let caller = match self.session_of(token).await {
            Ok(c) => c,
            Err(e) => {
                if matches!(e, Error::Unauthenticated(_)) {
                    self.lockout_failure(None, address).await?;
                }
                return Err(e);
            }
        };
        crate::domain::policy::may_list(&caller)?;
        Ok(Principal::Admin(caller))
    }
}
