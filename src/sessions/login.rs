//! Login: a checked credential becomes a new session.

use super::{millis, now_millis, Sessions};
use crate::domain::{
    limits, policy, Actor, Audit, AuthFailure, ClientInfo, EndReason, Error, Kind, NewSession,
    Result, Session, Token, UserRecord,
};
use crate::store::EndTarget;

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
    pub(super) async fn undo_if_password_changed(
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
}
