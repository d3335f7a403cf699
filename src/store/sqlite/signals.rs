//! SQLite: the Shared Signals job ([`crate::store::SignalStore`]).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension as _, Row};

use super::{map_err, SqliteStore};
use crate::domain::Result;
use crate::store::{LeaseAction, SignalStore, SigningKeyRecord, StreamRecord};

/// The `org` column of a stream that carries every org.
const EVERY_ORG: &str = "";

fn row_to_key(r: &Row<'_>) -> rusqlite::Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.get(0)?,
        pkcs8: r.get(1)?,
        created_at: r.get(2)?,
    })
}

fn row_to_stream(r: &Row<'_>) -> rusqlite::Result<StreamRecord> {
    let org: String = r.get(1)?;
    Ok(StreamRecord {
        id: r.get(0)?,
        org: (org != EVERY_ORG).then_some(org),
        version: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        body: r.get(3)?,
    })
}

fn keys(c: &rusqlite::Connection) -> rusqlite::Result<Vec<SigningKeyRecord>> {
    let mut stmt =
        c.prepare_cached("SELECT kid, pkcs8, created_at FROM ssf_keys ORDER BY created_at, kid")?;
    let rows = stmt.query_map([], row_to_key)?;
    rows.collect()
}

fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl SignalStore for SqliteStore {
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.read(keys).await
    }

    async fn add_signing_key(
        &self,
        key: SigningKeyRecord,
        only_if_none: bool,
    ) -> Result<Vec<SigningKeyRecord>> {
        self.write(move |tx| {
            let held: i64 = tx
                .query_row("SELECT COUNT(*) FROM ssf_keys", [], |r| r.get(0))
                .map_err(map_err)?;
            if !(only_if_none && held > 0) {
                tx.execute(
                    "INSERT INTO ssf_keys (kid, pkcs8, created_at) VALUES (?1, ?2, ?3)",
                    params![key.kid, key.pkcs8, key.created_at],
                )
                .map_err(map_err)?;
            }
            keys(tx).map_err(map_err)
        })
        .await
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<()> {
        let kid = kid.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM ssf_keys WHERE kid = ?1", params![kid])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn create_stream(&self, stream: &StreamRecord, max_per_org: usize) -> Result<bool> {
        let stream = stream.clone();
        self.write(move |tx| {
            let org = stream.org.as_deref().unwrap_or(EVERY_ORG);
            let held: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM ssf_streams WHERE org = ?1",
                    params![org],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            if usize::try_from(held).unwrap_or(usize::MAX) >= max_per_org {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO ssf_streams (id, org, version, body) VALUES (?1, ?2, ?3, ?4)",
                params![stream.id, org, version(stream.version), stream.body],
            )
            .map_err(map_err)?;
            Ok(true)
        })
        .await
    }

    async fn stream(&self, id: &str) -> Result<Option<StreamRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT id, org, version, body FROM ssf_streams WHERE id = ?1")?
                .query_row(params![id], row_to_stream)
                .optional()
        })
        .await
    }

    async fn streams(&self, org: Option<Option<&str>>) -> Result<Vec<StreamRecord>> {
        let org = org.map(|o| o.unwrap_or(EVERY_ORG).to_owned());
        self.read(move |c| match org {
            Some(org) => {
                let mut stmt = c.prepare_cached(
                    "SELECT id, org, version, body FROM ssf_streams WHERE org = ?1 ORDER BY id",
                )?;
                let rows = stmt.query_map(params![org], row_to_stream)?;
                rows.collect()
            }
            None => {
                let mut stmt =
                    c.prepare_cached("SELECT id, org, version, body FROM ssf_streams ORDER BY id")?;
                let rows = stmt.query_map([], row_to_stream)?;
                rows.collect()
            }
        })
        .await
    }

    async fn replace_stream(&self, stream: &StreamRecord, expected: u64) -> Result<bool> {
        let stream = stream.clone();
        self.write(move |tx| {
            let changed = tx
                .execute(
                    "UPDATE ssf_streams SET version = ?1, body = ?2 WHERE id = ?3 AND version = ?4",
                    params![
                        version(stream.version),
                        stream.body,
                        stream.id,
                        version(expected)
                    ],
                )
                .map_err(map_err)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn delete_stream(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let gone = tx
                .execute("DELETE FROM ssf_streams WHERE id = ?1", params![id])
                .map_err(map_err)?;
            tx.execute("DELETE FROM ssf_leases WHERE stream_id = ?1", params![id])
                .map_err(map_err)?;
            Ok(gone == 1)
        })
        .await
    }

    async fn stream_lease(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        action: LeaseAction,
    ) -> Result<bool> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        let now = crate::sessions::now_millis();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        // A lease is only a hint of who works on a stream (two holders
        // would repeat SETs, never lose one): no fsync of its own.
        self.write_as(super::Durability::Normal, move |tx| {
            let held: Option<(String, i64)> = tx
                .query_row(
                    "SELECT owner, until FROM ssf_leases WHERE stream_id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(map_err)?;
            let live = held.filter(|(_, until)| *until > now);
            let mine = live.as_ref().is_some_and(|(o, _)| *o == owner);
            match action {
                LeaseAction::Take | LeaseAction::Keep
                    if mine || (action == LeaseAction::Take && live.is_none()) =>
                {
                    tx.execute(
                        "INSERT INTO ssf_leases (stream_id, owner, until) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (stream_id) DO UPDATE SET owner = ?2, until = ?3",
                        params![id, owner, until],
                    )
                    .map_err(map_err)?;
                    Ok(true)
                }
                LeaseAction::Drop if mine => {
                    tx.execute("DELETE FROM ssf_leases WHERE stream_id = ?1", params![id])
                        .map_err(map_err)?;
                    Ok(false)
                }
                _ => Ok(false),
            }
        })
        .await
    }
}
