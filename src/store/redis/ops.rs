//! The [`Store`] operations on the sharded layout.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;

use super::decode::{
    audit_from, corrupt, fields, hex, map_err, revocations_from, session_from, sid, text, user_from,
};
use super::layout::{self, id_shard};
use super::{as_int, lock, RedisStore, BATCH, DRAIN_PARALLEL, PURGE_BATCH, TTL_GRACE_MS};
use crate::domain::{
    Actor, Audit, AuditRecord, AuthFailure, EndReason, Error, Kind, Millis, NewSession, NewUser,
    Result, Revocation, Session, TokenDigest, User, UserRecord,
};
use crate::store::{EndTarget, ListQuery, Scope, Store, SweepReport};

const US: char = '\u{1f}';
const US_STR: &str = "\u{1f}";
/// How often a replica carrying out a bulk ending renews its lease.
const LEASE_RENEW: Duration = Duration::from_millis(super::LEASE_MS / 4);
/// Tries of an org's fence whose users' pending endings changed meanwhile
/// (each starts or finishes one; they are few and far between).
const FENCE_ATTEMPTS: usize = 8;

/// One queued bulk ending of a live index: every id up to `watermark` but
/// `keep` goes, with `reason`, at `at`.
#[derive(Clone)]
struct Pending {
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
type Ends = Option<(String, String, i64, String)>;

/// A session a fence covers, as a bulk ending step needs it (its kind is
/// its index's).
struct Fenced {
    digest: String,
    user_id: i64,
    username: String,
    org: String,
    /// The earlier of its idle deadline and its expiry.
    deadline: i64,
}

/// Sessions a step ended, or `None` when it found its work item finished
/// already (by another replica) and did nothing.
fn step_result(
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
    /// The shard's version ('#' in its fences), read after this call began;
    /// validations of one shard that arrive together share the read (see
    /// [`super::remembered::VersionReads`]).
    async fn shard_version(&self, shard: u16, fences: &str) -> Result<Option<String>> {
        let reads = &self.inner.version_reads;
        let joined = reads.join(shard);
        let send = |read: std::sync::Arc<super::remembered::VersionRead>| async move {
            reads.sending(&read);
            let answer = ::redis::cmd("HGET")
                .arg(fences)
                .arg("#")
                .query_async(&mut self.conn())
                .await
                .map_err(map_err);
            reads.answered(&read);
            answer
        };
        if let Some(behind) = &joined.behind {
            // Its answer is not ours (it may have been sent before this call
            // began); it only has to be done, whoever finishes sending it.
            let _ = behind.answer.get_or_init(|| send(behind.clone())).await;
        }
        joined
            .read
            .answer
            .get_or_init(|| send(joined.read.clone()))
            .await
            .clone()
    }

    /// `u:<user>` / `a:<address>` -> its counter key.
    fn failure_key(&self, key: &str) -> String {
        let (what, name) = key.split_once(':').unwrap_or(("x", key));
        self.layout().failures(what, name)
    }

    fn rate_key(&self, key: &str) -> String {
        let (what, name) = key.split_once(':').unwrap_or(("x", key));
        self.layout().rate(what, name)
    }

    /// A window counter's count and the time left in its window; (0, 0)
    /// when it has none.
    async fn counter(&self, key: &str) -> Result<(u32, Duration)> {
        let (n, ttl): (Option<u32>, i64) = ::redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let left = Duration::from_millis(u64::try_from(ttl).unwrap_or(0));
        Ok((n.unwrap_or(0), left))
    }

    /// The org a username belongs to (its directory entry).
    async fn org_of(&self, username: &str) -> Result<Option<String>> {
        ::redis::cmd("GET")
            .arg(self.layout().name(username))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)
    }

    /// (username, org) of a user id.
    async fn user_of_id(&self, uid: i64) -> Result<Option<(String, String)>> {
        let shard = id_shard(uid, self.layout().shards);
        let v: Option<String> = ::redis::cmd("HGET")
            .arg(self.layout().key(shard, "uids"))
            .arg(uid)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(v.and_then(|v| {
            v.split_once(US)
                .map(|(name, org)| (name.to_owned(), org.to_owned()))
        }))
    }

    /// The fields needed to end each of `ids` (one shard), `None` if gone.
    async fn ends_of(&self, ids: &[i64]) -> Result<Vec<Ends>> {
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
    fn batch_entry(&self, id: i64, ends: &Ends, index: &str, keys: &mut Vec<String>) -> String {
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

    fn shard_keys(&self, shard: u16, names: &[&str]) -> Vec<String> {
        names.iter().map(|n| self.layout().key(shard, n)).collect()
    }

    /// Ends those of `ids` (one shard) past their deadline as EXPIRED, in
    /// one bounded script; returns how many ended.
    async fn end_due(
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
    async fn fenced_sessions(&self, ids: &[i64]) -> Result<Vec<Option<Fenced>>> {
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
    async fn drain_step(&self, shard: u16, ids: &[i64], index: &str, p: &Pending) -> Result<i64> {
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
    async fn drain(&self, shard: u16, index: &str) -> Result<u32> {
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
    async fn lease(&self, lease: &str, action: &str) -> Result<bool> {
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
    async fn drain_item(
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
    async fn finish_ending(&self, shard: u16, indexes: Vec<String>, covered: i64) -> Result<()> {
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
    async fn drain_once(&self, shard: u16, index: String) {
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
    async fn fence(
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
    async fn pending_user_indexes(
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
    async fn upgrade_pending(
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

    /// Keeps only the sessions no fence covers (listing must not show a
    /// session a bulk ending already ended).
    async fn unfenced(&self, shard: u16, sessions: Vec<Session>) -> Result<Vec<Session>> {
        if sessions.is_empty() {
            return Ok(sessions);
        }
        let mut names: Vec<String> = Vec::new();
        for s in &sessions {
            names.push(format!("o:{}:{}", s.kind, s.org));
            names.push(format!("u:{}:{}", s.kind, s.user_id));
        }
        let values: Vec<Option<String>> = ::redis::cmd("HMGET")
            .arg(self.layout().key(shard, "fences"))
            .arg(&names)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let covers = |v: &Option<String>, id: i32, spare_ok: bool| {
            v.as_deref().is_some_and(|v| {
                let (w, keep) = v.split_once(':').unwrap_or((v, ""));
                let w: i64 = w.parse().unwrap_or(-1);
                i64::from(id) <= w && !(spare_ok && keep == id.to_string())
            })
        };
        Ok(sessions
            .into_iter()
            .zip(values.chunks(2))
            .filter(|(s, f)| !(covers(&f[0], s.id, false) || covers(&f[1], s.id, true)))
            .map(|(s, _)| s)
            .collect())
    }

    async fn load_sessions(&self, ids: &[i64]) -> Result<Vec<Option<HashMap<String, String>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.layout().session(*id));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        Ok(replies
            .iter()
            .map(|v| fields(v).filter(|m| !m.is_empty()))
            .collect())
    }

    /// Ends one shard's sessions past their deadline, in bounded batches
    /// (one per org, audited per org).
    async fn sweep_expired(&self, shard: u16, now: Millis) -> Result<u32> {
        let deadlines = self.layout().key(shard, "deadlines");
        let mut expired = 0;
        loop {
            let due: Vec<i64> = ::redis::cmd("ZRANGEBYSCORE")
                .arg(&deadlines)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(BATCH)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            let ends = self.ends_of(&due).await?;
            let mut by_org: HashMap<Option<String>, Vec<(i64, Ends)>> = HashMap::new();
            for (id, e) in due.iter().copied().zip(ends) {
                let org = e.as_ref().map(|(_, _, _, o)| o.clone());
                by_org.entry(org).or_default().push((id, e));
            }
            for (org, batch) in by_org {
                let n = self
                    .end_due(shard, &batch, &deadlines, now, org.as_deref())
                    .await?;
                expired += u32::try_from(n).unwrap_or(0);
            }
            if due.len() < BATCH {
                return Ok(expired);
            }
        }
    }

    /// Resumes every bulk ending of a shard left unfinished.
    async fn sweep_pending(&self, shard: u16) -> Result<()> {
        let pending: Vec<String> = ::redis::cmd("HKEYS")
            .arg(self.layout().key(shard, "pending"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        for index in pending {
            self.drain_once(shard, index).await;
        }
        Ok(())
    }

    async fn purge_shard(&self, shard: u16, before: Millis, audit_before: Millis) -> Result<u32> {
        let keys = self.shard_keys(shard, &["events", "events:purged"]);
        let mut purged = 0u32;
        loop {
            let (removed, more): (u32, u8) = ::redis::FromRedisValue::from_redis_value(
                self.run(
                    &self.inner.scripts.purge_events,
                    &keys,
                    &[before.to_string(), PURGE_BATCH.to_string()],
                )
                .await?,
            )
            .map_err(|_| corrupt("purge reply"))?;
            purged = purged.saturating_add(removed);
            if more == 0 {
                break;
            }
        }
        let orgs: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.layout().key(shard, "audit:orgs"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        for org in orgs {
            purged += self.purge_audit(&org, audit_before).await?;
        }
        Ok(purged)
    }

    /// Trims an org's audit records older than `before` (plain XTRIM).
    async fn purge_audit(&self, org: &str, before: Millis) -> Result<u32> {
        let key = self.layout().audit(org);
        let mut purged = 0u32;
        loop {
            let records = self.list_audit(org, 0, PURGE_BATCH).await?;
            let old: Vec<&AuditRecord> = records.iter().take_while(|r| r.at < before).collect();
            let Some(last) = old.last() else { break };
            let removed: u64 = ::redis::cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg(format!("{}-0", last.id + 1))
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            purged += u32::try_from(removed).unwrap_or(0);
            if old.len() < PURGE_BATCH {
                break;
            }
        }
        Ok(purged)
    }

    /// Claims `username` for `org` in the directory; false when it is taken
    /// by a user that exists.
    async fn claim_name(&self, username: &str, org: &str) -> Result<bool> {
        let name = self.layout().name(username);
        let set: bool = ::redis::cmd("SET")
            .arg(&name)
            .arg(org)
            .arg("NX")
            .query_async::<Option<String>>(&mut self.conn())
            .await
            .map_err(map_err)?
            .is_some();
        if set {
            return Ok(true);
        }
        if self.find_user(username).await?.is_some() {
            return Ok(false);
        }
        // A claim whose user was never created (a replica stopped between
        // the two steps): taken over.
        ::redis::cmd("SET")
            .arg(&name)
            .arg(org)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(true)
    }

    async fn user_record(&self, username: &str) -> Result<Option<(u16, UserRecord)>> {
        let Some(org) = self.org_of(username).await? else {
            return Ok(None);
        };
        let shard = self.layout().org_shard(&org);
        let reply: Value = ::redis::cmd("HGETALL")
            .arg(self.layout().user(shard, username))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        match fields(&reply) {
            Some(m) if !m.is_empty() => Ok(Some((shard, user_from(&m)?))),
            _ => Ok(None),
        }
    }

    /// Reserves an id in the shard of `uid`, reading the user's name and org.
    async fn reserve_session(&self, uid: i64) -> Result<(i64, Option<(String, String)>)> {
        let l = self.layout();
        let shard = id_shard(uid, l.shards);
        let (seq, who): (i64, Option<String>) = ::redis::pipe()
            .cmd("INCR")
            .arg(l.key(shard, "seq:session"))
            .cmd("HGET")
            .arg(l.key(shard, "uids"))
            .arg(uid)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let id = seq
            .checked_mul(i64::from(l.shards))
            .and_then(|v| v.checked_add(i64::from(shard)))
            .filter(|id| *id <= i64::from(i32::MAX))
            .ok_or_else(|| Error::Internal("session id space (int32) exhausted".into()))?;
        let who = who.and_then(|v| v.split_once(US).map(|(n, o)| (n.to_owned(), o.to_owned())));
        Ok((id, who))
    }

    async fn try_create_session(&self, new: &NewSession) -> Result<Option<Session>> {
        let l = self.layout();
        let shard = id_shard(new.user_id, l.shards);
        let (id, who) = self.reserve_session(new.user_id).await?;
        let Some((username, org)) = who else {
            return Err(Error::Unauthenticated(AuthFailure::BadCredentials));
        };
        let digest = hex(&new.digest);
        let kind = new.kind.as_str();
        let mut keys = vec![
            l.user(shard, &username),
            l.session(id),
            l.token(shard, &digest),
        ];
        keys.push(l.live_user(new.user_id, kind));
        keys.push(l.live_org(&org, kind));
        keys.extend(self.shard_keys(shard, &["deadlines", "counts", "fences"]));
        let args = [
            id.to_string(),
            new.user_id.to_string(),
            digest,
            kind.to_owned(),
            new.now.to_string(),
            new.idle_deadline.to_string(),
            new.expires_at.to_string(),
            new.client.address.clone().unwrap_or_default(),
            new.client.user_agent.clone().unwrap_or_default(),
            TTL_GRACE_MS.to_string(),
            new.client.peer_address.clone().unwrap_or_default(),
        ];
        let reply = self
            .run(&self.inner.scripts.create_session, &keys, &args)
            .await?;
        match text(&reply).as_deref() {
            Some("NOUSER") => return Err(Error::Unauthenticated(AuthFailure::BadCredentials)),
            Some("RETRY") => return Ok(None),
            _ => {}
        }
        let m = fields(&reply).ok_or_else(|| corrupt("create_session reply"))?;
        session_from(&m).map(Some)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn holds_data(&self) -> Result<bool> {
        let l = self.layout();
        let meta: i64 = ::redis::cmd("EXISTS")
            .arg(l.meta())
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        // Each shard's id counters: made with its first user or session,
        // never deleted. One query per shard (each may be on another node).
        let mut counters = tokio::task::JoinSet::new();
        for shard in 0..l.shards {
            let mut conn = self.conn();
            let cmd = ::redis::cmd("EXISTS")
                .arg(l.key(shard, "seq:user"))
                .arg(l.key(shard, "seq:session"))
                .clone();
            counters.spawn(async move { (shard, cmd.query_async::<i64>(&mut conn).await) });
        }
        let mut shards = Vec::with_capacity(usize::from(l.shards));
        while let Some(done) = counters.join_next().await {
            let (shard, n) = done.map_err(|e| Error::Internal(format!("health check: {e}")))?;
            shards.push((shard, n.map_err(map_err)? > 0));
        }
        let mut held = lock(&self.inner.held);
        let mut lost = false;
        for (shard, holds) in shards {
            if holds {
                held.insert(shard);
            } else {
                lost |= held.contains(&shard);
            }
        }
        Ok(meta > 0 && !lost)
    }

    async fn ping(&self) -> Result<()> {
        // The store's own key: on a cluster this asks the node serving it.
        ::redis::cmd("EXISTS")
            .arg(self.layout().meta())
            .query_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn create_user(&self, user: NewUser) -> Result<User> {
        if !self.claim_name(&user.username, &user.org).await? {
            return Err(Error::AlreadyExists);
        }
        let l = self.layout();
        let shard = l.org_shard(&user.org);
        let keys = vec![
            l.user(shard, &user.username),
            l.key(shard, "seq:user"),
            l.key(shard, "uids"),
            l.key(shard, "users"),
        ];
        let args = [
            user.username.clone(),
            user.org.clone(),
            user.role.as_str().to_owned(),
            user.password_hash.clone(),
            user.now.to_string(),
            l.shards.to_string(),
            shard.to_string(),
        ];
        let reply = self
            .run(&self.inner.scripts.create_user, &keys, &args)
            .await?;
        match text(&reply).as_deref() {
            Some("EXISTS") => Err(Error::AlreadyExists),
            Some(id) => Ok(User {
                id: id.parse().map_err(|_| corrupt("user id"))?,
                username: user.username,
                org: user.org,
                role: user.role,
                disabled: false,
                created_at: user.now,
            }),
            None => Err(corrupt("create_user reply")),
        }
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>> {
        Ok(self.user_record(username).await?.map(|(_, r)| r))
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let mut users = Vec::new();
        for shard in 0..self.layout().shards {
            let names: Vec<String> = ::redis::cmd("SMEMBERS")
                .arg(self.layout().key(shard, "users"))
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            if names.is_empty() {
                continue;
            }
            let mut pipe = ::redis::pipe();
            for n in &names {
                pipe.cmd("HGETALL").arg(self.layout().user(shard, n));
            }
            let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
            for m in replies
                .iter()
                .filter_map(|v| fields(v).filter(|m| !m.is_empty()))
            {
                users.push(user_from(&m)?.user);
            }
        }
        users.sort_by(|a, b| (&a.org, &a.username).cmp(&(&b.org, &b.username)));
        Ok(users)
    }

    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool> {
        let Some(org) = self.org_of(username).await? else {
            return Ok(false);
        };
        let key = self.layout().user(self.layout().org_shard(&org), username);
        let n = self
            .int(&self.inner.scripts.set_password, &[key], &[password_hash])
            .await?;
        Ok(n == 1)
    }

    async fn rehash_password(&self, username: &str, old: &str, new: String) -> Result<bool> {
        let Some(org) = self.org_of(username).await? else {
            return Ok(false);
        };
        let key = self.layout().user(self.layout().org_shard(&org), username);
        let n = self
            .int(
                &self.inner.scripts.rehash_password,
                &[key],
                &[old.to_owned(), new],
            )
            .await?;
        Ok(n == 1)
    }

    async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: Millis,
        actor: &Actor,
    ) -> Result<bool> {
        let Some((shard, record)) = self.user_record(username).await? else {
            return Ok(false);
        };
        let (l, uid) = (self.layout(), record.user.id);
        let mut keys = vec![l.user(shard, username)];
        keys.extend(self.shard_keys(shard, &["fences", "pending", "seq:session", "deadlines"]));
        keys.push(l.audit(&record.user.org));
        keys.extend(self.shard_keys(shard, &["audit:orgs", "seq:audit"]));
        let indexes: Vec<String> = Kind::ALL
            .iter()
            .map(|k| l.live_user(uid, k.as_str()))
            .collect();
        keys.extend(indexes.iter().cloned());
        let mut args = vec![
            if disabled { "1" } else { "0" }.to_owned(),
            now.to_string(),
            actor.name.clone(),
            sid(actor),
            format!("user:{username}"),
            uid.to_string(),
            l.shards.to_string(),
            shard.to_string(),
        ];
        args.extend(Kind::ALL.iter().map(|k| format!("u:{k}:{uid}")));
        let n = self
            .int_ending(&self.inner.scripts.set_disabled, &keys, &args)
            .await?;
        if n < 0 {
            return Ok(false);
        }
        if disabled {
            self.confirm(shard).await?;
            self.finish_ending(shard, indexes, n).await?;
        }
        Ok(true)
    }

    async fn delete_user(&self, username: &str, now: Millis, actor: &Actor) -> Result<bool> {
        let Some((shard, record)) = self.user_record(username).await? else {
            return Ok(false);
        };
        if !self.set_disabled(username, true, now, actor).await? {
            return Ok(false);
        }
        let l = self.layout();
        let keys = vec![
            l.user(shard, username),
            l.key(shard, "uids"),
            l.key(shard, "users"),
        ];
        let args = [username.to_owned(), record.user.id.to_string()];
        let n = self
            .int(&self.inner.scripts.delete_user, &keys, &args)
            .await?;
        self.run(
            &self.inner.scripts.release_name,
            &[l.name(username)],
            &[record.user.org],
        )
        .await?;
        Ok(n == 1)
    }

    async fn create_session(&self, new: NewSession) -> Result<Session> {
        let shard = id_shard(new.user_id, self.layout().shards);
        if new.digest.hint() % self.layout().shards != shard {
            return Err(Error::Internal(
                "the token was not made for the user's organization".into(),
            ));
        }
        // An id reserved just before a fence of the user's org or user is
        // refused by the script; a fresh one is above the fence.
        for _ in 0..3 {
            if let Some(s) = self.try_create_session(&new).await? {
                return Ok(s);
            }
        }
        Err(Error::Unavailable(
            "session creation kept racing bulk endings; retry".into(),
        ))
    }

    async fn create_session_capped(&self, new: NewSession, cap: u32) -> Result<(Session, u32)> {
        let (uid, now) = (new.user_id, new.now);
        let session = self.create_session(new).await?;
        if cap == 0 {
            return Ok((session, 0));
        }
        // The user's live indexes count at least its live sessions (ended
        // ones leave them in batches): at or under the cap, nothing to end
        // and nothing more to read.
        let l = self.layout();
        let mut pipe = ::redis::pipe();
        for kind in Kind::ALL {
            pipe.cmd("ZCARD").arg(l.live_user(uid, kind.as_str()));
        }
        let counts: Vec<u64> = pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        if counts.iter().sum::<u64>() <= u64::from(cap) {
            return Ok((session, 0));
        }
        let ended = crate::store::end_over_cap(self, &session, cap, now).await?;
        Ok((session, ended))
    }

    async fn find_live_session(
        &self,
        digest: &TokenDigest,
        now: Millis,
    ) -> Result<Option<Session>> {
        // The hot path. A validation remembered at the shard's current
        // version needs one HGET of that version; otherwise one script
        // reads the token's copy of the session and the shard's fences.
        let l = self.layout();
        let shard = digest.hint() % l.shards;
        let digest = hex(digest);
        let fences = l.key(shard, "fences");
        if let Some((version, session)) = self.inner.remembered.get(&digest, now) {
            let current = self.shard_version(shard, &fences).await?;
            if current.as_deref() == Some(&*version) {
                return Ok(Some(session));
            }
        }
        let keys = [l.token(shard, &digest), fences];
        let reply = self.run(&self.inner.scripts.validate, &keys, &[]).await?;
        match fields(&reply) {
            Some(m) if !m.is_empty() && m.get("digest") == Some(&digest) => {
                let session = session_from(&m)?;
                if !session.is_live_at(now) {
                    return Ok(None);
                }
                if let Some(version) = m.get("#epoch") {
                    self.inner.remembered.file(&digest, version, &session);
                }
                Ok(Some(session))
            }
            _ => {
                self.inner.remembered.forget(&digest);
                Ok(None)
            }
        }
    }

    async fn touch_session(&self, id: i32, now: Millis, idle_deadline: Millis) -> Result<()> {
        let l = self.layout();
        let id = i64::from(id);
        let shard = id_shard(id, l.shards);
        let digest: Option<String> = ::redis::cmd("HGET")
            .arg(l.session(id))
            .arg("digest")
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let Some(digest) = digest else { return Ok(()) };
        let keys = [
            l.session(id),
            l.token(shard, &digest),
            l.key(shard, "deadlines"),
        ];
        let args = [
            id.to_string(),
            now.to_string(),
            idle_deadline.to_string(),
            TTL_GRACE_MS.to_string(),
            digest,
        ];
        let digest = &args[4];
        if self.int(&self.inner.scripts.touch, &keys, &args).await? == 1 {
            self.inner.remembered.touched(digest, now, idle_deadline);
        } else {
            // Refreshed later elsewhere, or gone: the next validation reads
            // the store, rather than find the refresh due on every call.
            self.inner.remembered.forget(digest);
        }
        Ok(())
    }

    async fn end_session(
        &self,
        target: EndTarget,
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<Option<Session>> {
        let l = self.layout();
        let id = i64::from(target.id);
        let shard = id_shard(id, l.shards);
        let Some(Some((digest, kind, uid, org))) = self.ends_of(&[id]).await?.pop() else {
            return Ok(None);
        };
        let mut keys = vec![l.session(id), l.token(shard, &digest)];
        keys.push(l.live_user(uid, &kind));
        keys.push(l.live_org(&org, &kind));
        keys.extend(self.shard_keys(shard, &["deadlines", "counts", "events", "seq:event"]));
        keys.push(l.key(shard, "fences"));
        keys.push(l.audit(&org));
        keys.extend(self.shard_keys(shard, &["audit:orgs", "seq:audit"]));
        let args = [
            id.to_string(),
            digest,
            reason.as_str().to_owned(),
            now.to_string(),
            target.org.unwrap_or_default(),
            target
                .kind
                .map(|k| k.as_str().to_owned())
                .unwrap_or_default(),
            audit.actor.name.clone(),
            sid(&audit.actor),
            audit.target.clone(),
        ];
        let reply = self
            .run_ending(&self.inner.scripts.end_one, &keys, &args)
            .await?;
        match fields(&reply) {
            Some(m) if !m.is_empty() => {
                self.confirm(shard).await?;
                session_from(&m).map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn end_sessions(
        &self,
        scope: Scope,
        kinds: &[Kind],
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<u32> {
        let l = self.layout();
        let (shard, org, indexes, fence_fields, keep) = match &scope {
            Scope::Org(org) => (
                l.org_shard(org),
                org.clone(),
                kinds.iter().map(|k| l.live_org(org, k.as_str())).collect(),
                kinds.iter().map(|k| format!("o:{k}:{org}")).collect(),
                String::new(),
            ),
            Scope::User(uid) | Scope::UserExcept { user: uid, .. } => {
                let org = self.user_of_id(*uid).await?.map(|(_, o)| o);
                let keep = match scope {
                    Scope::UserExcept { keep, .. } => keep.to_string(),
                    _ => String::new(),
                };
                (
                    id_shard(*uid, l.shards),
                    org.unwrap_or_default(),
                    kinds
                        .iter()
                        .map(|k| l.live_user(*uid, k.as_str()))
                        .collect(),
                    kinds
                        .iter()
                        .map(|k| format!("u:{k}:{uid}"))
                        .collect::<Vec<_>>(),
                    keep,
                )
            }
        };
        let indexes: Vec<String> = indexes;
        let n = self
            .fence(
                shard,
                &indexes,
                fence_fields,
                keep,
                &org,
                reason,
                now,
                audit,
            )
            .await?;
        self.confirm(shard).await?;
        self.finish_ending(shard, indexes, n).await?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    async fn list_sessions(&self, query: ListQuery, now: Millis) -> Result<Vec<Session>> {
        let l = self.layout();
        let shard = l.org_shard(&query.org);
        let kinds: Vec<Kind> = query.kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k]);
        let indexes: Vec<String> = match &query.username {
            Some(name) => match self.find_user(name).await? {
                Some(r) if r.user.org == query.org => kinds
                    .iter()
                    .map(|k| l.live_user(r.user.id, k.as_str()))
                    .collect(),
                _ => return Ok(Vec::new()),
            },
            None => kinds
                .iter()
                .map(|k| l.live_org(&query.org, k.as_str()))
                .collect(),
        };
        let mut out = Vec::new();
        let mut after = i64::from(query.after_id);
        loop {
            let mut pipe = ::redis::pipe();
            for idx in &indexes {
                pipe.cmd("ZRANGEBYSCORE")
                    .arg(idx)
                    .arg(format!("({after}"))
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(query.limit);
            }
            let per_index: Vec<Vec<i64>> =
                pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
            let mut ids: Vec<i64> = per_index.into_iter().flatten().collect();
            ids.sort_unstable();
            ids.dedup();
            ids.truncate(query.limit);
            let Some(&last) = ids.last() else { break };
            let mut page = Vec::new();
            for m in self.load_sessions(&ids).await?.into_iter().flatten() {
                let s = session_from(&m)?;
                if s.is_live_at(now) && s.org == query.org {
                    page.push(s);
                }
            }
            out.extend(self.unfenced(shard, page).await?);
            if out.len() >= query.limit || ids.len() < query.limit {
                break;
            }
            after = last;
        }
        out.truncate(query.limit);
        Ok(out)
    }

    async fn sweep(
        &self,
        now: Millis,
        purge_before: Millis,
        audit_purge_before: Millis,
    ) -> Result<SweepReport> {
        self.check_shards_once().await?;
        let mut report = SweepReport::default();
        for shard in 0..self.layout().shards {
            self.sweep_pending(shard).await?;
            report.expired += self.sweep_expired(shard, now).await?;
            report.purged += self
                .purge_shard(shard, purge_before, audit_purge_before)
                .await?;
        }
        Ok(report)
    }

    async fn list_audit(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let reply: Value = ::redis::cmd("XRANGE")
            .arg(self.layout().audit(org))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let Value::Array(entries) = reply else {
            return Ok(Vec::new());
        };
        entries.iter().map(|e| audit_from(org, e)).collect()
    }

    /// Sessions not yet removed (an expired one counts until the sweeper
    /// ends it, a fenced one until its batch runs).
    async fn live_counts(&self, _now: Millis) -> Result<Vec<(Kind, u64)>> {
        let mut totals: HashMap<String, i64> = HashMap::new();
        for shard in 0..self.layout().shards {
            let counts: HashMap<String, i64> = ::redis::cmd("HGETALL")
                .arg(self.layout().key(shard, "counts"))
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            for (k, n) in counts {
                *totals.entry(k).or_default() += n;
            }
        }
        Ok(Kind::ALL
            .into_iter()
            .map(|k| {
                let n = totals.get(k.as_str()).copied().unwrap_or(0);
                (k, u64::try_from(n).unwrap_or(0))
            })
            .collect())
    }

    fn shards(&self) -> u16 {
        self.layout().shards
    }

    fn shares_counters(&self) -> bool {
        true
    }

    async fn failures(&self, key: &str) -> Result<(u32, Duration)> {
        self.counter(&self.failure_key(key)).await
    }

    async fn record_failure(&self, key: &str, window: Duration) -> Result<()> {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        self.int(
            &self.inner.scripts.record_failure,
            &[self.failure_key(key)],
            &[ms.to_string()],
        )
        .await
        .map(|_| ())
    }

    async fn count_call(&self, key: &str, max: u32, window: Duration) -> Result<Option<Duration>> {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let left = self
            .int(
                &self.inner.scripts.count_call,
                &[self.rate_key(key)],
                &[max.to_string(), ms.to_string()],
            )
            .await?;
        Ok((left > 0).then(|| Duration::from_millis(left.unsigned_abs())))
    }

    async fn calls_exhausted(&self, key: &str, max: u32) -> Result<Option<Duration>> {
        let (n, left) = self.counter(&self.rate_key(key)).await?;
        Ok((n >= max && !left.is_zero()).then_some(left))
    }

    async fn clear_failures(&self, key: &str) -> Result<()> {
        ::redis::cmd("DEL")
            .arg(self.failure_key(key))
            .query_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    fn shard_of(&self, org: &str) -> u16 {
        self.layout().org_shard(org)
    }

    async fn last_sequence(&self, shard: u16) -> Result<u64> {
        self.last_sequence_of(shard).await
    }

    async fn revocations_after(
        &self,
        shard: u16,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Revocation>> {
        let keys = self.shard_keys(shard, &["events:purged", "events"]);
        let args = [
            after.to_string(),
            format!("{}-0", after.saturating_add(1)),
            limit.to_string(),
        ];
        let reply = self
            .run(&self.inner.scripts.events_after, &keys, &args)
            .await?;
        let Value::Array(parts) = reply else {
            return Err(corrupt("events reply"));
        };
        match (parts.first().and_then(text).as_deref(), parts.get(1)) {
            (Some("EXPIRED"), Some(oldest)) => Err(Error::CursorExpired {
                after,
                oldest: text(oldest).and_then(|t| t.parse().ok()).unwrap_or(0),
            }),
            (Some("OK"), Some(Value::Array(entries))) => {
                let mut out = Vec::new();
                for e in entries {
                    // A packed entry may begin at or before `after`, and its
                    // events past `limit` are read again next time.
                    out.extend(
                        revocations_from(e)?
                            .into_iter()
                            .filter(|r| r.sequence > after)
                            .map(|r| Revocation { shard, ..r }),
                    );
                }
                out.truncate(limit);
                Ok(out)
            }
            _ => Err(corrupt("events reply")),
        }
    }

    fn fresh_shards(&self, after: &[(u16, u64)]) -> Option<Vec<u16>> {
        let latest = lock(&self.inner.tails.latest);
        let fresh: Vec<u16> = after
            .iter()
            .filter(|(s, seq)| latest.get(s).is_none_or(|l| l > seq))
            .map(|(s, _)| *s)
            .collect();
        // Nothing new known (a timeout): read every shard, to be safe.
        (!fresh.is_empty()).then_some(fresh)
    }

    async fn wait_for_revocation(&self, after: &[(u16, u64)], timeout: Duration) -> Result<()> {
        let shards: Vec<u16> = after.iter().map(|(s, _)| *s).collect();
        self.tail(&shards).await?;
        let mut rx = self.inner.tails.bump.subscribe();
        let newer = || {
            let latest = lock(&self.inner.tails.latest);
            after
                .iter()
                .any(|(s, seq)| latest.get(s).is_some_and(|l| l > seq))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while !newer() {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(())
    }
}
