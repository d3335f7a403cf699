//! Redis: bulk endings (LogoutAll, LogoutUser, disable, password change).
//! A bulk ending first records a fence per covered live index (from then on
//! every covered session is invalid, and the call is acknowledged); the
//! covered sessions are then removed, with their events, in bounded drain
//! steps under a lease, by the replica that made the call or by any
//! replica's sweeper if that one stopped.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::Value;

use super::decode::{corrupt, map_err, sid};
use super::layout::{self, id_shard};
use super::{as_int, lock, RedisStore, BATCH, DRAIN_PARALLEL, US, US_STR};
use crate::domain::{Audit, EndReason, Error, Millis, Result};

/// How often a replica carrying out a bulk ending renews its lease.
pub(super) const LEASE_RENEW: Duration = Duration::from_millis(super::LEASE_MS / 4);

/// Tries of an org's fence whose users' pending endings changed meanwhile
/// (each starts or finishes one; they are few and far between).
pub(super) const FENCE_ATTEMPTS: usize = 8;

/// One queued bulk ending of a live index: every id up to `watermark` but
/// `keep` goes, with `reason`, at `at`.
#[derive(Clone)]
pub(super) struct Pending {
    raw: String,
    watermark: i64,
    reason: String,
    at: String,
    keep: String,
}

impl Pending {
    fn parse(raw: String) -> Option<Self> {
        let mut parts = raw.split(US);
        let watermark = parts.next()?.parse().ok()?;
        let reason = parts.next()?.to_owned();
        let at = parts.next()?.to_owned();
        let keep = parts.next().unwrap_or("").to_owned();
        Some(Pending {
            raw,
            watermark,
            reason,
            at,
            keep,
        })
    }
}

/// The fields of a session needed to end it: (digest, kind, user id, org).
pub(super) type Ends = Option<(String, String, i64, String)>;

/// A session a fence covers, as a bulk ending step needs it (its kind is
/// its index's).
pub(super) struct Fenced {
    digest: String,
    user_id: i64,
    username: String,
    org: String,
    /// The earlier of its idle deadline and its expiry.
    deadline: i64,
}

/// Sessions a step ended, or `None` when it found its work item finished
/// already (by another replica) and did nothing.
pub(super) fn step_result(
    done: Option<std::result::Result<Result<i64>, tokio::task::JoinError>>,
) -> Result<Option<u32>> {
    match done {
        None => Ok(Some(0)),
        Some(joined) => {
            let n = joined.map_err(|e| Error::Internal(format!("bulk ending step: {e}")))??;
            Ok(u32::try_from(n).ok())
        }
    }
}

impl RedisStore {
    /// The fields needed to end each of `ids` (one shard), `None` if gone.
    pub(super) async fn ends_of(&self, ids: &[i64]) -> Result<Vec<Ends>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.layout().session(*id))
                .arg(&["digest", "kind", "user_id", "org"]);
        }
        let rows: Vec<Vec<Option<String>>> =
            pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|r| match r.as_slice() {
                [Some(d), Some(k), Some(u), Some(o)] => {
                    u.parse().ok().map(|u| (d.clone(), k.clone(), u, o.clone()))
                }
                _ => None,
            })
            .collect())
    }

    /// KEYS and ARGV of one session in an `end_batch` call; a gone session
    /// only loses its entries in `index`.
    pub(super) fn batch_entry(
        &self,
        id: i64,
        ends: &Ends,
        index: &str,
        keys: &mut Vec<String>,
    ) -> String {
        let l = self.layout();
        let shard = id_shard(id, l.shards);
        keys.push(l.session(id));
        match ends {
            Some((digest, kind, uid, org)) => {
                keys.push(l.token(shard, digest));
                keys.push(l.live_user(*uid, kind));
                keys.push(l.live_org(org, kind));
                digest.clone()
            }
            None => {
                keys.push(l.session(id));
                keys.push(index.to_owned());
                keys.push(index.to_owned());
                String::new()
            }
        }
    }

    /// Ends those of `ids` (one shard) past their deadline as EXPIRED, in
    /// one bounded script; returns how many ended.
    pub(super) async fn end_due(
        &self,
        shard: u16,
        ids: &[(i64, Ends)],
        index: &str,
        now: Millis,
        audit_org: Option<&str>,
    ) -> Result<i64> {
        let l = self.layout();
        let mut keys = self.shard_keys(shard, &["deadlines", "counts", "events", "seq:event"]);
        // An org's audit key lives in its own shard; without one, any key of
        // this shard stands in (the script does not write it).
        keys.push(match audit_org {
            Some(org) => l.audit(org),
            None => l.key(shard, "audit:none"),
        });
        keys.extend(self.shard_keys(shard, &["audit:orgs", "seq:audit"]));
        let mut args = vec![
            EndReason::Expired.as_str().to_owned(),
            now.to_string(),
            audit_org.unwrap_or("").to_owned(),
            "system".to_owned(),
        ];
        for (id, ends) in ids {
            let digest = self.batch_entry(*id, ends, index, &mut keys);
            args.push(id.to_string());
            args.push(digest);
        }
        self.int(&self.inner.scripts.end_batch, &keys, &args).await
    }

    /// What a bulk ending step needs of each of `ids` (one shard), `None`
    /// for a session gone already: the session is fenced, so none of it
    /// changes before the step.
    pub(super) async fn fenced_sessions(&self, ids: &[i64]) -> Result<Vec<Option<Fenced>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.layout().session(*id))
                .arg(&["digest", "user_id", "username", "org", "idle", "expires"]);
        }
        let rows: Vec<Vec<Option<String>>> =
            pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let [Some(digest), Some(uid), Some(username), Some(org), Some(idle), Some(expires)] =
                    <[Option<String>; 6]>::try_from(r).ok()?
                else {
                    return None;
                };
                let deadline = idle.parse::<i64>().ok()?.min(expires.parse().ok()?);
                Some(Fenced {
                    digest,
                    user_id: uid.parse().ok()?,
                    username,
                    org,
                    deadline,
                })
            })
            .collect())
    }

    /// One bounded step of a bulk ending: ends `ids` of `index` (one shard)
    /// with one event entry; returns how many ended. A session past its
    /// deadline at the ending's time is left to the sweeper (it ends as
    /// EXPIRED).
    pub(super) async fn drain_step(
        &self,
        shard: u16,
        ids: &[i64],
        index: &str,
        p: &Pending,
    ) -> Result<i64> {
        let l = self.layout();
        let sessions = self.fenced_sessions(ids).await?;
        let at: i64 = p.at.parse().map_err(|_| corrupt("pending ending"))?;
        // `…:lo:<KIND>:<org>` or `…:lu:<KIND>:<user id>`.
        let kind = index.rsplit(':').nth(1).unwrap_or_default();
        let mut keys = self.shard_keys(shard, &["deadlines", "counts", "events", "seq:event"]);
        keys.push(index.to_owned());
        keys.push(l.key(shard, "pending"));
        let by_org = index.contains("}:lo:");
        let mut args = Vec::with_capacity(2 + ids.len() * 2);
        args.push(kind.to_owned());
        args.push(p.raw.clone());
        for (id, s) in ids.iter().zip(&sessions) {
            match s {
                Some(s) if s.deadline <= at => continue,
                Some(s) => {
                    keys.push(l.session(*id));
                    keys.push(l.token(shard, &s.digest));
                    keys.push(if by_org {
                        l.live_user(s.user_id, kind)
                    } else {
                        l.live_org(&s.org, kind)
                    });
                    let id = id.to_string();
                    // `join` sizes the result once: one allocation a session.
                    let event =
                        [id.as_str(), &s.username, &s.org, kind, &p.reason, &p.at].join(US_STR);
                    args.push(id);
                    args.push(event);
                }
                None => {
                    let session = l.session(*id);
                    keys.extend([session.clone(), session, index.to_owned()]);
                    args.extend([id.to_string(), String::new()]);
                }
            }
        }
        if keys.len() == 6 {
            return Ok(0);
        }
        self.int(&self.inner.scripts.drain_batch, &keys, &args)
            .await
    }

    /// Carries out the queued bulk ending of `index` (if any, and any queued
    /// meanwhile) in bounded steps, unless another replica holds its lease;
    /// returns how many sessions it ended. Safe to run twice at once (each
    /// step re-checks every session), the lease only saves repeating work.
    pub(super) async fn drain(&self, shard: u16, index: &str) -> Result<u32> {
        let suffix = index.split_once("}:").map_or(index, |(_, s)| s);
        let lease = self.layout().key(shard, &format!("lease:{suffix}"));
        if !self.lease(&lease, "take").await? {
            return Ok(0);
        }
        let pending_key = self.layout().key(shard, "pending");
        let drained = async {
            let mut ended = 0u32;
            let mut done: Option<String> = None;
            loop {
                let raw: Option<String> = ::redis::cmd("HGET")
                    .arg(&pending_key)
                    .arg(index)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(map_err)?;
                let Some(p) = raw.and_then(Pending::parse) else {
                    break;
                };
                // Still there after it was carried out: left to the sweeper.
                if done.as_deref() == Some(p.raw.as_str()) {
                    break;
                }
                ended += self
                    .drain_item(shard, index, &pending_key, &lease, p.clone())
                    .await?;
                done = Some(p.raw);
            }
            Ok(ended)
        }
        .await;
        let _ = self.lease(&lease, "drop").await;
        drained
    }

    /// Takes, renews or drops a bulk ending's lease; whether this process
    /// holds it.
    pub(super) async fn lease(&self, lease: &str, action: &str) -> Result<bool> {
        let n = self
            .int(
                &self.inner.scripts.lease,
                &[lease.to_owned()],
                &[
                    self.inner.owner.clone(),
                    super::LEASE_MS.to_string(),
                    action.to_owned(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Carries out one queued bulk ending `p` of `index`, then marks it done.
    pub(super) async fn drain_item(
        &self,
        shard: u16,
        index: &str,
        pending_key: &str,
        lease: &str,
        p: Pending,
    ) -> Result<u32> {
        let p = std::sync::Arc::new(p);
        let mut ended = 0u32;
        let mut after = String::from("-inf");
        let mut renewed = std::time::Instant::now();
        // Steps over disjoint ids, several in flight: Redis runs them one by
        // one while the round trips around them (and the next page) overlap.
        let mut steps = tokio::task::JoinSet::new();
        let mut finished_elsewhere = false;
        while !finished_elsewhere {
            let ids: Vec<i64> = ::redis::cmd("ZRANGEBYSCORE")
                .arg(index)
                .arg(&after)
                .arg(p.watermark)
                .arg("LIMIT")
                .arg(0)
                .arg(BATCH)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            let Some(&last) = ids.last() else { break };
            after = format!("({last}");
            let ids: Vec<i64> = ids
                .into_iter()
                .filter(|id| id.to_string() != p.keep)
                .collect();
            let (store, index, p) = (self.clone(), index.to_owned(), p.clone());
            steps.spawn(async move { store.drain_step(shard, &ids, &index, &p).await });
            if renewed.elapsed() >= LEASE_RENEW {
                renewed = std::time::Instant::now();
                self.lease(lease, "keep").await?;
            }
            while steps.len() >= DRAIN_PARALLEL {
                match step_result(steps.join_next().await)? {
                    Some(n) => ended += n,
                    None => finished_elsewhere = true,
                }
            }
        }
        while !steps.is_empty() {
            match step_result(steps.join_next().await)? {
                Some(n) => ended += n,
                None => finished_elsewhere = true,
            }
        }
        if finished_elsewhere {
            return Ok(ended);
        }
        let fence_field = layout::fence_field(index).ok_or_else(|| corrupt("live index name"))?;
        let fence_value = if p.keep.is_empty() {
            p.watermark.to_string()
        } else {
            format!("{}:{}", p.watermark, p.keep)
        };
        self.run(
            &self.inner.scripts.pending_done,
            &[pending_key.to_owned(), self.layout().key(shard, "fences")],
            &[index.to_owned(), p.raw.clone(), fence_field, fence_value],
        )
        .await?;
        Ok(ended)
    }

    /// Drains `indexes` now when the ending was small, else in the
    /// background (the call is already acknowledged: its fences hold).
    pub(super) async fn finish_ending(
        &self,
        shard: u16,
        indexes: Vec<String>,
        covered: i64,
    ) -> Result<()> {
        if usize::try_from(covered).unwrap_or(usize::MAX) <= BATCH {
            for index in &indexes {
                self.drain(shard, index).await?;
            }
            return Ok(());
        }
        let store = self.clone();
        tokio::spawn(async move {
            for index in indexes {
                store.drain_once(shard, index).await;
            }
        });
        Ok(())
    }

    /// [`Self::drain`] unless this process is draining `index` already;
    /// errors are left to the next sweep.
    pub(super) async fn drain_once(&self, shard: u16, index: String) {
        if !lock(&self.inner.draining).insert(index.clone()) {
            return;
        }
        if let Err(e) = self.drain(shard, &index).await {
            tracing::warn!(error = %e, "bulk ending: removal interrupted; the sweeper resumes it");
        }
        lock(&self.inner.draining).remove(&index);
    }

    /// Fences `indexes` of one scope (first step of a bulk ending).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fence(
        &self,
        shard: u16,
        indexes: &[String],
        fence_fields: Vec<String>,
        keep: String,
        audit_org: &str,
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<i64> {
        let l = self.layout();
        let mut keys = self.shard_keys(shard, &["fences", "pending", "seq:session", "deadlines"]);
        // A user removed meanwhile has no org: the record goes nowhere useful
        // but must stay in this shard.
        keys.push(if l.org_shard(audit_org) == shard {
            l.audit(audit_org)
        } else {
            l.key(shard, "audit:none")
        });
        keys.extend(self.shard_keys(shard, &["audit:orgs", "seq:audit"]));
        keys.extend(indexes.iter().cloned());
        let org_kinds: Vec<&str> = fence_fields
            .iter()
            .filter_map(|f| f.strip_prefix("o:")?.split(':').next())
            .collect();
        let mut args = vec![
            reason.as_str().to_owned(),
            now.to_string(),
            audit.actor.name.clone(),
            sid(&audit.actor),
            audit.target.clone(),
            audit_org.to_owned(),
            keep,
            l.shards.to_string(),
            shard.to_string(),
        ];
        args.extend(fence_fields.iter().cloned());
        // An org's fence must not count again what its users' endings still
        // being carried out counted: their indexes go in KEYS, read here;
        // the script refuses (RETRY) when the pending set changed meanwhile.
        for _ in 0..FENCE_ATTEMPTS {
            let mut keys = keys.clone();
            if !org_kinds.is_empty() {
                keys.extend(
                    self.pending_user_indexes(shard, &org_kinds, audit_org)
                        .await?,
                );
            }
            match self
                .run_ending(&self.inner.scripts.end_scope, &keys, &args)
                .await?
            {
                Value::SimpleString(s) if s == "RETRY" => continue,
                Value::BulkString(b) if b == b"RETRY" => continue,
                v => return as_int(v),
            }
        }
        Err(Error::Unavailable(
            "the org's pending endings kept changing; retrying the call is safe".into(),
        ))
    }

    /// The indexes of `org`'s user endings of `kinds` still being carried out
    /// in `shard` (a pending value names the user's org last). One queued by
    /// an older build, whose value lacks the org, is given it first, so that
    /// the org's fence does not count its sessions again either.
    pub(super) async fn pending_user_indexes(
        &self,
        shard: u16,
        kinds: &[&str],
        org: &str,
    ) -> Result<Vec<String>> {
        let pending_key = self.layout().key(shard, "pending");
        let pending: HashMap<String, String> = ::redis::cmd("HGETALL")
            .arg(&pending_key)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let mut out = Vec::new();
        for (index, value) in pending {
            // `…}:lu:<KIND>:<user id>`
            let Some((kind, uid)) = index
                .split_once("}:lu:")
                .and_then(|(_, rest)| rest.split_once(':'))
            else {
                continue;
            };
            if !kinds.contains(&kind) {
                continue;
            }
            let user_org = match value.split(US).count() {
                5 => value.rsplit(US).next().unwrap_or_default().to_owned(),
                4 => {
                    let Some(user_org) = self
                        .upgrade_pending(&pending_key, &index, &value, uid)
                        .await?
                    else {
                        continue;
                    };
                    user_org
                }
                _ => continue,
            };
            if user_org == org {
                out.push(index);
            }
        }
        Ok(out)
    }

    /// Appends the org of user `uid` to its queued ending `value` (of an
    /// older build); the org, or `None` when the user is gone. Should the
    /// value have changed meanwhile, the fence finds the pending set
    /// changed and asks for it to be read again.
    pub(super) async fn upgrade_pending(
        &self,
        pending_key: &str,
        index: &str,
        value: &str,
        uid: &str,
    ) -> Result<Option<String>> {
        let Ok(uid) = uid.parse::<i64>() else {
            return Ok(None);
        };
        let Some((_, user_org)) = self.user_of_id(uid).await? else {
            return Ok(None);
        };
        self.run(
            &self.inner.scripts.pending_upgrade,
            &[pending_key.to_owned()],
            &[
                index.to_owned(),
                value.to_owned(),
                format!("{value}{US}{user_org}"),
            ],
        )
        .await?;
        Ok(Some(user_org))
    }
}
