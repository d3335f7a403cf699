//! SQLite: sessions and their endings ([`crate::store::SessionStore`]).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};

use super::{
    audit::record_audit, map_err, row_to_session, users::row_to_user, Durability, SqliteStore,
    FIND_LIVE_SQL, LIVE, SESSION_COLUMNS,
};
use crate::domain::{
    Audit, AuthFailure, EndReason, Error, Kind, Millis, NewSession, Result, Session, TokenDigest,
};
use crate::store::{EndTarget, ListQuery, Scope, SessionStore};

/// `kind IN ('IMAP','POP')` from our own constants (never from input).
pub(super) fn kinds_clause(kinds: &[Kind]) -> String {
    let list: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
    format!("s.kind IN ({})", list.join(","))
}

/// Records one revocation event per matching session, then ends them; both in
/// the caller's transaction. `filter` is a WHERE clause over `sessions s`.
pub(super) fn end_matching(
    tx: &Transaction<'_>,
    filter: &str,
    params: &[(&str, &dyn rusqlite::ToSql)],
    reason: EndReason,
    now: Millis,
) -> rusqlite::Result<u32> {
    let mut all: Vec<(&str, &dyn rusqlite::ToSql)> = params.to_vec();
    let reason = reason.as_str();
    all.push((":reason", &reason));
    all.push((":ended", &now));
    tx.execute(
        &format!(
            "INSERT INTO revocations (session_id, username, org, kind, reason, at) \
             SELECT s.id, s.username, s.org, s.kind, :reason, :ended FROM sessions s WHERE {filter}"
        ),
        all.as_slice(),
    )?;
    let ended = tx.execute(
        &format!("UPDATE sessions AS s SET ended_at = :ended, end_reason = :reason WHERE {filter}"),
        all.as_slice(),
    )?;
    Ok(u32::try_from(ended).unwrap_or(u32::MAX))
}

/// Inserts a session of a user that exists and is not disabled, in the
/// caller's transaction.
pub(super) fn insert_session(tx: &Transaction<'_>, new: NewSession) -> Result<Session> {
    let user = tx
        .prepare_cached(
            "SELECT id, username, org, role, disabled, created_at FROM users WHERE id = ?1",
        )
        .and_then(|mut s| s.query_row([new.user_id], row_to_user).optional())
        .map_err(map_err)?;
    let user = match user {
        Some(u) if !u.disabled => u,
        _ => return Err(Error::Unauthenticated(AuthFailure::BadCredentials)),
    };
    tx.prepare_cached(
        "INSERT INTO sessions (token_digest, kind, user_id, username, org, created_at, \
         last_seen_at, idle_deadline, expires_at, client_address, user_agent, role, \
         peer_address) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            &new.digest.0[..],
            new.kind.as_str(),
            user.id,
            user.username,
            user.org,
            new.now,
            new.idle_deadline,
            new.expires_at,
            new.client.address,
            new.client.user_agent,
            user.role.as_str(),
            new.client.peer_address,
        ])
    })
    .map_err(map_err)?;
    // The transaction rolls back on this error, so an id past int32 is never kept.
    let id = i32::try_from(tx.last_insert_rowid())
        .map_err(|_| Error::Internal("session id space (int32) exhausted".into()))?;
    Ok(Session {
        id,
        kind: new.kind,
        user_id: user.id,
        username: user.username,
        org: user.org,
        role: user.role,
        created_at: new.now,
        last_seen_at: new.now,
        idle_deadline: new.idle_deadline,
        expires_at: new.expires_at,
        client: new.client,
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, new: NewSession) -> Result<Session> {
        // A login lost to a power cut means logging in again; not worth an
        // fsync each. (The next durable commit flushes it anyway.)
        self.write_as(Durability::Normal, move |tx| insert_session(tx, new))
            .await
    }

    async fn create_session_capped(&self, new: NewSession, cap: u32) -> Result<(Session, u32)> {
        if cap == 0 {
            return Ok((self.create_session(new).await?, 0));
        }
        let (user, now) = (new.user_id, new.now);
        // Endings must be durable when acknowledged: when this login may
        // take the user past the cap, the transaction is fsynced.
        let live: i64 = self
            .read(move |c| {
                c.prepare_cached(concat!(
                    "SELECT COUNT(*) FROM sessions s WHERE s.user_id = :user AND ",
                    live!()
                ))?
                .query_row(rusqlite::named_params! {":user": user, ":now": now}, |r| {
                    r.get(0)
                })
            })
            .await?;
        let sync = if live >= i64::from(cap) {
            Durability::Full
        } else {
            Durability::Normal
        };
        let (session, ended) = self
            .write_as(sync, move |tx| {
                let session = insert_session(tx, new)?;
                // The live sessions beyond the newest `cap`, oldest first.
                let mut over: Vec<i32> = tx
                    .prepare_cached(concat!(
                        "SELECT s.id FROM sessions s WHERE s.user_id = :user AND ",
                        live!(),
                        " ORDER BY s.id DESC LIMIT -1 OFFSET :cap"
                    ))
                    .and_then(|mut st| {
                        st.query_map(
                            rusqlite::named_params! {":user": user, ":now": now, ":cap": cap},
                            |r| r.get(0),
                        )?
                        .collect::<rusqlite::Result<Vec<i32>>>()
                    })
                    .map_err(map_err)?;
                over.sort_unstable();
                over.truncate(crate::store::MAX_CAP_ENDINGS);
                for id in &over {
                    end_matching(
                        tx,
                        "s.id = :id",
                        &[(":id", id)],
                        EndReason::SessionLimit,
                        now,
                    )
                    .map_err(map_err)?;
                    record_audit(
                        tx,
                        now,
                        &session.org,
                        &crate::store::cap_audit(*id),
                        EndReason::SessionLimit,
                        1,
                    )
                    .map_err(map_err)?;
                }
                Ok((session, u32::try_from(over.len()).unwrap_or(u32::MAX)))
            })
            .await?;
        if ended > 0 {
            self.notify_events();
        }
        Ok((session, ended))
    }

    async fn find_live_session(
        &self,
        digest: &TokenDigest,
        now: Millis,
    ) -> Result<Option<Session>> {
        let cache = &self.inner.cache;
        let version = match cache.lookup(digest, now) {
            super::cache::Lookup::Hit(answer) => return Ok(answer),
            super::cache::Lookup::Miss(version) => version,
        };
        let digest = *digest;
        let found = self
            .read_hot(move |c| {
                c.prepare_cached(FIND_LIVE_SQL)?
                    .query_row(
                        rusqlite::named_params! {":digest": &digest.0[..], ":now": now},
                        row_to_session,
                    )
                    .optional()
            })
            .await?;
        if let Some(session) = &found {
            cache.remember(version, digest, session);
        }
        Ok(found)
    }

    async fn touch_session(&self, id: i32, now: Millis, idle_deadline: Millis) -> Result<()> {
        self.write_as(Durability::Normal, move |tx| {
            tx.prepare_cached(
                "UPDATE sessions SET last_seen_at = ?1, idle_deadline = ?2 \
                 WHERE id = ?3 AND ended_at IS NULL AND idle_deadline < ?2 \
                 AND idle_deadline > ?1 AND expires_at > ?1",
            )
            .and_then(|mut s| s.execute(params![now, idle_deadline, id]))
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn end_session(
        &self,
        target: EndTarget,
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<Option<Session>> {
        let audit = audit.clone();
        let ended = self
            .write(move |tx| {
                let mut filter = format!("s.id = :id AND {LIVE}");
                if target.org.is_some() {
                    filter.push_str(" AND s.org = :org");
                }
                if let Some(kind) = target.kind {
                    filter.push_str(&format!(" AND {}", kinds_clause(&[kind])));
                }
                let mut params: Vec<(&str, &dyn rusqlite::ToSql)> =
                    vec![(":id", &target.id), (":now", &now)];
                if let Some(org) = &target.org {
                    params.push((":org", org));
                }
                let found = tx
                    .prepare(&format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions s \
                     WHERE {filter}"
                    ))
                    .and_then(|mut s| s.query_row(params.as_slice(), row_to_session).optional())
                    .map_err(map_err)?;
                if let Some(s) = &found {
                    end_matching(tx, &filter, &params, reason, now).map_err(map_err)?;
                    record_audit(tx, now, &s.org, &audit, reason, 1).map_err(map_err)?;
                }
                Ok(found)
            })
            .await?;
        if ended.is_some() {
            self.notify_events();
        }
        Ok(ended)
    }

    async fn end_sessions(
        &self,
        scope: Scope,
        kinds: &[Kind],
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<u32> {
        let kinds = kinds_clause(kinds);
        let audit = audit.clone();
        let ended = self
            .write(move |tx| {
                let org = match &scope {
                    Scope::Org(org) => org.clone(),
                    Scope::User(id) | Scope::UserExcept { user: id, .. } => tx
                        .query_row("SELECT org FROM users WHERE id = ?1", [id], |r| r.get(0))
                        .optional()
                        .map_err(map_err)?
                        .unwrap_or_default(),
                };
                let n = match &scope {
                    Scope::User(user_id) => end_matching(
                        tx,
                        &format!("s.user_id = :scope AND {kinds} AND {LIVE}"),
                        &[(":scope", user_id), (":now", &now)],
                        reason,
                        now,
                    ),
                    Scope::Org(org) => end_matching(
                        tx,
                        &format!("s.org = :scope AND {kinds} AND {LIVE}"),
                        &[(":scope", org), (":now", &now)],
                        reason,
                        now,
                    ),
                    Scope::UserExcept { user, keep } => end_matching(
                        tx,
                        &format!("s.user_id = :scope AND s.id <> :keep AND {kinds} AND {LIVE}"),
                        &[(":scope", user), (":keep", keep), (":now", &now)],
                        reason,
                        now,
                    ),
                }
                .map_err(map_err)?;
                // A call that ended nothing changed nothing: no record, and
                // the commit has nothing to write (nor to fsync).
                if n > 0 {
                    record_audit(tx, now, &org, &audit, reason, n).map_err(map_err)?;
                }
                Ok(n)
            })
            .await?;
        if ended > 0 {
            self.notify_events();
        }
        Ok(ended)
    }

    async fn list_sessions(&self, query: ListQuery, now: Millis) -> Result<Vec<Session>> {
        self.read(move |c| {
            let mut filter = format!("s.org = :org AND s.id > :after AND {LIVE}");
            if query.username.is_some() {
                filter.push_str(" AND s.username = :user");
            }
            if let Some(kind) = query.kind {
                filter.push_str(&format!(" AND {}", kinds_clause(&[kind])));
            }
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            let mut params: Vec<(&str, &dyn rusqlite::ToSql)> = vec![
                (":org", &query.org),
                (":after", &query.after_id),
                (":now", &now),
                (":limit", &limit),
            ];
            if let Some(user) = &query.username {
                params.push((":user", user));
            }
            let mut stmt = c.prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s \
                 WHERE {filter} ORDER BY s.id LIMIT :limit"
            ))?;
            let rows = stmt.query_map(params.as_slice(), row_to_session)?;
            rows.collect()
        })
        .await
    }
}
