//! User administration: adding, passwords, disabling and deleting, each
//! ending the sessions it must.

use super::{now_millis, Sessions};
use crate::domain::{
    limits, Actor, Audit, AuthFailure, EndReason, Error, Kind, NewUser, NotFound, Result, Role,
    User,
};
use crate::store::Scope;
use crate::telemetry;

impl Sessions {
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
        self.users()
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
            .users()
            .find_user(&username)
            .await?
            .ok_or(Error::NotFound(NotFound::User))?
            .user;
        if !self.users().set_password(&username, hash).await? {
            return Err(Error::NotFound(NotFound::User));
        }
        if keep_sessions {
            return Ok(0);
        }
        self.end_after_password_change(&user, None, &Actor::operator())
            .await
    }

    /// Ends the user's sessions after its password changed, all but `keep`.
    pub(super) async fn end_after_password_change(
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
            .session_store()
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
        if !self.users().set_password(&caller.username, hash).await? {
            return Err(Error::Unauthenticated(AuthFailure::TokenInvalid));
        }
        self.end_after_password_change(
            &record.user,
            Some(caller.id),
            &Actor::user(&caller.username, Some(caller.id)),
        )
        .await
    }

    /// Ends the user's live sessions and removes it (user administration).
    pub async fn delete_user(&self, username: &str) -> Result<()> {
        let username = limits::username("username", username)?;
        if self
            .users()
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
            .users()
            .set_disabled(&username, disabled, now_millis(), &Actor::operator())
            .await?
        {
            Ok(())
        } else {
            Err(Error::NotFound(NotFound::User))
        }
    }
}
