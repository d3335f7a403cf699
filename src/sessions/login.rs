//! Login: a checked credential becomes a new session.

use super::{millis, now_millis, Sessions};
use crate::domain::{
    limits, policy, Actor, Audit, AuthFailure, ClientInfo, EndReason, Error, Kind, NewSession,
    Result, Session, Token, UserRecord,
};
use crate::store::EndTarget;
use crate::telemetry;

impl Sessions {
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
        // Checked before any hashing, so a flood past the limit costs nothing.
        self.login_rate_check(&username, address).await?;
        let record = self.authenticate(&username, password, address).await?;
        policy::may_open(record.user.role, kind)?;
        self.login_rate_count(&username, address).await?;
        let token = Token::generate_for_org(&record.user.org)?;
        let now = now_millis();
        let life = self.policy.lifetimes(kind);
        let expires_at = now.saturating_add(millis(life.absolute));
        // Past the user's live-session cap, the oldest end: ending them
        // keeps the user logging in now working (refusing would let a
        // flood, or a client in a loop, lock the user out of new logins
        // for the sessions' lifetime). Each is a real ending: revocation
        // event, audit record by `system`, watchers told.
        let (session, capped) = self
            .session_store()
            .create_session_capped(
                NewSession {
                    digest: token.digest(),
                    kind,
                    user_id: record.user.id,
                    now,
                    idle_deadline: now.saturating_add(millis(life.idle)).min(expires_at),
                    expires_at,
                    client,
                },
                self.policy.max_sessions_per_user,
            )
            .await?;
        if capped > 0 {
            tracing::info!(user = %session.username, ended = capped, "oldest sessions ended: session cap");
            telemetry::record_revocations(EndReason::SessionLimit, u64::from(capped));
        }
        self.undo_if_password_changed(&record, &session).await?;
        tracing::info!(session = session.id, user = %session.username, kind = %kind, "login");
        Ok((token, session))
    }

    /// RESOURCE_EXHAUSTED when the user or the address already logged in
    /// as often as the policy allows in the current window.
    async fn login_rate_check(&self, username: &str, address: Option<&str>) -> Result<()> {
        let p = &self.policy;
        let mut left = self
            .rate_exhausted(&format!("lu:{username}"), p.login_rate_user)
            .await?;
        if let (None, Some(a)) = (left, address) {
            left = self
                .rate_exhausted(&format!("la:{a}"), p.login_rate_address)
                .await?;
        }
        match left {
            Some(retry_after) => Err(Error::RateLimited { retry_after }),
            None => Ok(()),
        }
    }

    /// Counts a successful login against the user and the address.
    async fn login_rate_count(&self, username: &str, address: Option<&str>) -> Result<()> {
        let p = &self.policy;
        let mut left = self
            .rate_count(&format!("lu:{username}"), p.login_rate_user)
            .await?;
        if let (None, Some(a)) = (left, address) {
            left = self
                .rate_count(&format!("la:{a}"), p.login_rate_address)
                .await?;
        }
        match left {
            Some(retry_after) => {
                tracing::warn!(
                    user = %limits::log_name(username),
                    address = address.unwrap_or("-"),
                    "login refused: too many logins"
                );
                Err(Error::RateLimited { retry_after })
            }
            None => Ok(()),
        }
    }

    /// A password change ends the sessions that exist when it lands. A login
    /// that checked the old password before the change but created its
    /// session after that ending would outlive it: it is ended here instead.
    pub(super) async fn undo_if_password_changed(
        &self,
        checked: &UserRecord,
        session: &Session,
    ) -> Result<()> {
        let current = self.users().find_user(&checked.user.username).await?;
        if current.is_some_and(|c| c.password_hash == checked.password_hash) {
            return Ok(());
        }
        self.session_store()
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
}
