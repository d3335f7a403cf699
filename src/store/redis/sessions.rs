//! Redis: sessions and their endings ([`crate::store::SessionStore`]).

use std::collections::HashMap;

use ::redis::Value;
use async_trait::async_trait;

use super::decode::{corrupt, fields, hex, map_err, session_from, sid, text};
use super::{layout::id_shard, RedisStore, TTL_GRACE_MS, US};
use crate::domain::{
    Audit, AuthFailure, EndReason, Error, Kind, Millis, NewSession, Result, Session, TokenDigest,
};
use crate::store::{EndTarget, ListQuery, Scope, SessionStore, UserStore};

impl RedisStore {
    /// The shard's version ('#' in its fences), read after this call began;
    /// validations of one shard that arrive together share the read (see
    /// [`super::remembered::VersionReads`]).
    pub(super) async fn shard_version(&self, shard: u16, fences: &str) -> Result<Option<String>> {
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

    /// Keeps only the sessions no fence covers (listing must not show a
    /// session a bulk ending already ended).
    pub(super) async fn unfenced(
        &self,
        shard: u16,
        sessions: Vec<Session>,
    ) -> Result<Vec<Session>> {
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

    pub(super) async fn load_sessions(
        &self,
        ids: &[i64],
    ) -> Result<Vec<Option<HashMap<String, String>>>> {
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

    /// Reserves an id in the shard of `uid`, reading the user's name and org.
    pub(super) async fn reserve_session(
        &self,
        uid: i64,
    ) -> Result<(i64, Option<(String, String)>)> {
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

    pub(super) async fn try_create_session(&self, new: &NewSession) -> Result<Option<Session>> {
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
impl SessionStore for RedisStore {
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
}
