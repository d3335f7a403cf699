//! SQLite: the users job ([`crate::store::UserStore`]).

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, Transaction};

use super::{audit::record_audit, map_err, sessions::end_matching, Durability, SqliteStore, LIVE};
use crate::domain::{Actor, Audit, EndReason, Error, Millis, NewUser, Result, User, UserRecord};
use crate::store::UserStore;

pub(super) fn row_to_user(r: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        org: r.get(2)?,
        role: role.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                Box::<dyn std::error::Error + Send + Sync>::from(e),
            )
        })?,
        disabled: r.get(4)?,
        created_at: r.get(5)?,
    })
}

pub(super) fn find_user_tx(
    conn: &Connection,
    username: &str,
) -> rusqlite::Result<Option<UserRecord>> {
    conn.prepare_cached(
        "SELECT id, username, org, role, disabled, created_at, password_hash \
         FROM users WHERE username = ?1",
    )?
    .query_row([username], |r| {
        Ok(UserRecord {
            user: row_to_user(r)?,
            password_hash: r.get(6)?,
        })
    })
    .optional()
}

/// Ends every live session of `user` (an operator's disable or delete),
/// with one audit record, in the caller's transaction.
pub(super) fn end_all_of_user(
    tx: &Transaction<'_>,
    user: &User,
    now: Millis,
    audit: &Audit,
) -> rusqlite::Result<u32> {
    let ended = end_matching(
        tx,
        &format!("s.user_id = :user AND {LIVE}"),
        &[(":user", &user.id), (":now", &now)],
        EndReason::LogoffOther,
        now,
    )?;
    record_audit(tx, now, &user.org, audit, EndReason::LogoffOther, ended)?;
    Ok(ended)
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.write(move |tx| {
            let inserted = tx.execute(
                "INSERT INTO users (username, org, role, password_hash, disabled, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                params![
                    user.username,
                    user.org,
                    user.role.as_str(),
                    user.password_hash,
                    user.now
                ],
            );
            match inserted {
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    return Err(Error::AlreadyExists)
                }
                other => other.map_err(map_err)?,
            };
            Ok(User {
                id: tx.last_insert_rowid(),
                username: user.username,
                org: user.org,
                role: user.role,
                disabled: false,
                created_at: user.now,
            })
        })
        .await
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>> {
        let username = username.to_owned();
        self.read(move |c| find_user_tx(c, &username)).await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, username, org, role, disabled, created_at FROM users ORDER BY org, username",
            )?;
            let rows = stmt.query_map([], row_to_user)?;
            rows.collect()
        })
        .await
    }

    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool> {
        let username = username.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?1 WHERE username = ?2",
                    params![password_hash, username],
                )
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn rehash_password(&self, username: &str, old: &str, new: String) -> Result<bool> {
        let (username, old) = (username.to_owned(), old.to_owned());
        // Losing a rehash to a power cut costs one more rehash: no fsync.
        self.write_as(Durability::Normal, move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?3 \
                     WHERE username = ?1 AND password_hash = ?2",
                    params![username, old, new],
                )
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: Millis,
        actor: &Actor,
    ) -> Result<bool> {
        let username = username.to_owned();
        let audit = Audit {
            actor: actor.clone(),
            target: format!("user:{username}"),
        };
        let found = self
            .write(move |tx| {
                let Some(rec) = find_user_tx(tx, &username).map_err(map_err)? else {
                    return Ok(false);
                };
                tx.execute(
                    "UPDATE users SET disabled = ?1 WHERE id = ?2",
                    params![disabled, rec.user.id],
                )
                .map_err(map_err)?;
                if disabled {
                    end_all_of_user(tx, &rec.user, now, &audit).map_err(map_err)?;
                }
                Ok(true)
            })
            .await;
        self.notify_events();
        found
    }

    async fn delete_user(&self, username: &str, now: Millis, actor: &Actor) -> Result<bool> {
        let username = username.to_owned();
        let audit = Audit {
            actor: actor.clone(),
            target: format!("user:{username}"),
        };
        let found = self
            .write(move |tx| {
                let Some(rec) = find_user_tx(tx, &username).map_err(map_err)? else {
                    return Ok(false);
                };
                end_all_of_user(tx, &rec.user, now, &audit).map_err(map_err)?;
                // Ended rows go with the user (they only await the purge);
                // their revocation events stay for watchers.
                tx.execute("DELETE FROM sessions WHERE user_id = ?1", [rec.user.id])
                    .map_err(map_err)?;
                tx.execute("DELETE FROM users WHERE id = ?1", [rec.user.id])
                    .map_err(map_err)?;
                Ok(true)
            })
            .await;
        self.notify_events();
        found
    }
}
