//! Redis: the users job ([`crate::store::UserStore`]): the username
//! directory, user hashes, and disabling or deleting (a bulk ending).

use ::redis::Value;
use async_trait::async_trait;

use super::decode::{corrupt, fields, map_err, sid, text, user_from};
use super::{layout::id_shard, RedisStore, US};
use crate::domain::{Actor, Error, Kind, Millis, NewUser, Result, User, UserRecord};
use crate::store::UserStore;

impl RedisStore {
    /// The org a username belongs to (its directory entry).
    pub(super) async fn org_of(&self, username: &str) -> Result<Option<String>> {
        ::redis::cmd("GET")
            .arg(self.layout().name(username))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)
    }

    /// (username, org) of a user id.
    pub(super) async fn user_of_id(&self, uid: i64) -> Result<Option<(String, String)>> {
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

    /// Claims `username` for `org` in the directory; false when it is taken
    /// by a user that exists.
    pub(super) async fn claim_name(&self, username: &str, org: &str) -> Result<bool> {
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

    pub(super) async fn user_record(&self, username: &str) -> Result<Option<(u16, UserRecord)>> {
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
}

#[async_trait]
impl UserStore for RedisStore {
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
}
