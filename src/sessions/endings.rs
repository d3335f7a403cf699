//! The endings: a caller's own session, another admin session, a mailbox's
//! mail sessions, an org's API sessions, one user's sessions; and the sweep
//! that ends expired sessions and purges old records.

use std::time::Duration;

use super::{millis, now_millis, Secret, Sessions};
use crate::domain::{
    limits, policy, Actor, Audit, AuthFailure, EndReason, Error, Kind, NotFound, Result, Session,
};
use crate::store::{EndTarget, Scope, SweepReport};
use crate::telemetry;

impl Sessions {
    /// Counts one ending call against the calling user, or against the
    /// client address (checked first, before any credential is looked at,
    /// so a flood is refused at the cost of a counter). Past either limit:
    /// RESOURCE_EXHAUSTED, with the time left in the window.
    async fn ending_rate(&self, user: Option<&str>, address: Option<&str>) -> Result<()> {
        let p = &self.policy;
        let (key, rate) = match (user, address) {
            (Some(u), _) => (format!("eu:{u}"), p.ending_rate_user),
            (None, Some(a)) => (format!("ea:{a}"), p.ending_rate_address),
            (None, None) => return Ok(()),
        };
        match self.rate_count(&key, rate).await? {
            None => Ok(()),
            Some(retry_after) => {
                tracing::warn!(
                    user = %user.map(limits::log_name).unwrap_or_default(),
                    address = address.unwrap_or("-"),
                    "ending call refused: too many calls"
                );
                Err(Error::RateLimited { retry_after })
            }
        }
    }

    /// Ends the caller's own session. A second call with the same token finds
    /// nothing live and is UNAUTHENTICATED.
    pub async fn logoff(&self, token: Option<&str>, address: Option<&str>) -> Result<Session> {
        self.ending_rate(None, address).await?;
        let session = self.session_of(token).await?;
        self.ending_rate(Some(&session.username), None).await?;
        let ended = self
            .session_store()
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

    /// An admin holding an ADMIN session ends a session of `kind` (ADMIN,
    /// for Parallels RAS) of its own org. `kind` arrives unchecked: it is
    /// judged after the caller is authenticated.
    pub async fn logoff_other(
        &self,
        token: Option<&str>,
        session_id: i32,
        kind: Result<Kind>,
        address: Option<&str>,
    ) -> Result<Session> {
        self.ending_rate(None, address).await?;
        // Authenticate before validating: an anonymous caller learns nothing
        // about what a valid request would look like.
        let caller = self.session_of(token).await?;
        self.ending_rate(Some(&caller.username), None).await?;
        if session_id <= 0 {
            return Err(Error::invalid("session_id", "must be a positive int32"));
        }
        policy::may_logoff_other(&caller)?;
        let kind = kind?;
        let ended = self
            .session_store()
            .end_session(
                EndTarget {
                    id: session_id,
                    org: Some(caller.org.clone()),
                    kind: Some(kind),
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

    /// Ends every IMAP and POP session of one mailbox; returns how many.
    pub async fn logout_user(
        &self,
        credentials_user: &str,
        secret: &Secret,
        mailbox: &str,
        address: Option<&str>,
    ) -> Result<u32> {
        let mailbox = limits::mailbox("user", mailbox)?;
        self.ending_rate(None, address).await?;
        let (caller, caller_session) = self
            .authenticate_credentials(credentials_user, secret, address)
            .await?;
        self.ending_rate(Some(&caller.username), None).await?;
        let target = if caller.username == mailbox {
            caller.clone()
        } else {
            // Another mailbox by token: only from a console session.
            if caller_session.is_some_and(|(_, kind)| kind != Kind::Admin) {
                return Err(Error::PermissionDenied(
                    "logging out another mailbox by token needs an ADMIN (console) session",
                ));
            }
            let found = self.users().find_user(&mailbox).await?.map(|r| r.user);
            policy::may_reach_user((&caller).into(), &mailbox, found.as_ref())?;
            found.ok_or(Error::NotFound(NotFound::Mailbox))?
        };
        let ended = self
            .session_store()
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
        self.ending_rate(None, address).await?;
        let caller = self.authenticate(&username, password, address).await?.user;
        self.ending_rate(Some(&caller.username), None).await?;
        self.end_org_api_sessions(Actor::user(&caller.username, None), &caller.org)
            .await
    }

    /// [`Self::logout_all`] for an admin holding an ADMIN session, by its
    /// token instead of a password (the console).
    pub async fn logout_all_as_admin(&self, token: &str, address: Option<&str>) -> Result<u32> {
        self.ending_rate(None, address).await?;
        let caller = self.session_of(Some(token)).await?;
        self.ending_rate(Some(&caller.username), None).await?;
        policy::may_end_org(&caller)?;
        self.end_org_api_sessions(Actor::user(&caller.username, Some(caller.id)), &caller.org)
            .await
    }

    async fn end_org_api_sessions(&self, actor: Actor, org: &str) -> Result<u32> {
        let audit = Audit {
            actor,
            target: format!("org:{org}"),
        };
        let ended = self
            .session_store()
            .end_sessions(
                Scope::Org(org.to_owned()),
                &[Kind::Api],
                EndReason::LogoutAll,
                now_millis(),
                &audit,
            )
            .await?;
        tracing::info!(%org, by = %audit.actor.name, ended, "logout all");
        telemetry::record_revocations(EndReason::LogoutAll, u64::from(ended));
        Ok(ended)
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
            .upkeep()
            .sweep(
                now,
                now.saturating_sub(millis(retention)),
                now.saturating_sub(millis(audit_retention)),
            )
            .await?;
        telemetry::record_revocations(EndReason::Expired, u64::from(report.expired));
        Ok(report)
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
        address: Option<&str>,
    ) -> Result<u32> {
        self.ending_rate(None, address).await?;
        let caller = self.session_of(token).await?;
        self.ending_rate(Some(&caller.username), None).await?;
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
            let found = self.users().find_user(&name).await?.map(|r| r.user);
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
            .session_store()
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
}

impl Sessions {
    /// Ends every live session of a user at an identity provider's request
    /// (the Global Token Revocation call; the caller was authorized by the
    /// route), audited as `actor`. A user outside `org` (when given) is
    /// `NotFound` like an unknown one, so a tenant's identity provider
    /// learns nothing of another's users. The ending is by the id looked
    /// up, so a name reused meanwhile is not hit. Returns how many ended.
    pub async fn revoke_user_globally(
        &self,
        user: &str,
        org: Option<&str>,
        actor: &str,
    ) -> Result<u32> {
        let name = limits::username("sub_id", user)?;
        let found = self
            .users()
            .find_user(&name)
            .await?
            .map(|r| r.user)
            .filter(|u| org.is_none_or(|o| u.org == o))
            .ok_or(Error::NotFound(NotFound::User))?;
        let ended = self
            .session_store()
            .end_sessions(
                Scope::User(found.id),
                &Kind::ALL,
                EndReason::GlobalTokenRevocation,
                now_millis(),
                &Audit {
                    actor: Actor::user(actor, None),
                    target: format!("user:{name}"),
                },
            )
            .await?;
        tracing::info!(user = %name, org = %found.org, by = actor, ended, "global token revocation");
        telemetry::record_revocations(EndReason::GlobalTokenRevocation, u64::from(ended));
        Ok(ended)
    }
}
