//! Redis: the Shared Signals job ([`crate::store::SignalStore`]). Keys,
//! streams and leases live in the store-wide hash tag (a stream may carry
//! every org, so it belongs to no org's shard):
//!
//! ```text
//! {p}:ssf:keys               hash   kid -> created_at \x1f base64 PKCS#8
//! {p}:ssf:streams            hash   id -> document
//! {p}:ssf:versions           hash   id -> version
//! {p}:ssf:orgs               hash   id -> org ('' for every org)
//! {p}:ssf:org:<hex org>      set    ids of the org's streams ({p}:ssf:org: for every org)
//! {p}:ssf:lease:<hex id>     string the replica delivering the stream (expires)
//! ```

use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;
use base64::Engine as _;

use super::decode::map_err;
use super::layout::enc;
use super::{as_int, RedisStore, US};
use crate::domain::{Error, Result};
use crate::store::{LeaseAction, SignalStore, SigningKeyRecord, StreamRecord};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl RedisStore {
    fn ssf_tag(&self) -> String {
        self.layout().prefix.clone()
    }

    fn ssf_org_set(&self, org: Option<&str>) -> String {
        self.layout()
            .ssf(&format!("org:{}", org.map(enc).unwrap_or_default()))
    }

    /// A write of the transmitter, on the endings connection and confirmed
    /// by `--redis-replica-acks` replicas like an ending.
    async fn ssf_write(
        &self,
        script: &::redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<Value> {
        let v = self.run_ending(script, keys, args).await?;
        self.confirm_tag(&self.ssf_tag()).await?;
        Ok(v)
    }
}

fn key_from(kid: String, value: &str) -> Result<SigningKeyRecord> {
    let bad = || Error::Internal(format!("redis: malformed signing key {kid}"));
    let (at, der) = value.split_once(US).ok_or_else(bad)?;
    Ok(SigningKeyRecord {
        created_at: at.parse().map_err(|_| bad())?,
        pkcs8: B64.decode(der).map_err(|_| bad())?,
        kid,
    })
}

fn keys_from(reply: Value) -> Result<Vec<SigningKeyRecord>> {
    let flat: Vec<String> = ::redis::FromRedisValue::from_redis_value(reply)
        .map_err(|_| Error::Internal("redis: malformed signing keys".into()))?;
    let mut keys = flat
        .chunks_exact(2)
        .map(|kv| key_from(kv[0].clone(), &kv[1]))
        .collect::<Result<Vec<_>>>()?;
    keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    Ok(keys)
}

fn record(
    id: String,
    body: Option<String>,
    version: Option<String>,
    org: Option<String>,
) -> Option<StreamRecord> {
    let (body, version, org) = (body?, version?.parse().ok()?, org?);
    Some(StreamRecord {
        id,
        org: (!org.is_empty()).then_some(org),
        version,
        body,
    })
}

#[async_trait]
impl SignalStore for RedisStore {
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let reply: Value = ::redis::cmd("HGETALL")
            .arg(self.layout().ssf("keys"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        keys_from(reply)
    }

    async fn add_signing_key(
        &self,
        key: SigningKeyRecord,
        only_if_none: bool,
    ) -> Result<Vec<SigningKeyRecord>> {
        let value = format!("{}{US}{}", key.created_at, B64.encode(&key.pkcs8));
        let reply = self
            .ssf_write(
                &self.inner.scripts.ssf_add_key,
                &[self.layout().ssf("keys")],
                &[key.kid, value, if only_if_none { "1" } else { "0" }.into()],
            )
            .await?;
        keys_from(reply)
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<()> {
        let _: i64 = ::redis::cmd("HDEL")
            .arg(self.layout().ssf("keys"))
            .arg(kid)
            .query_async(&mut self.inner.endings.clone())
            .await
            .map_err(map_err)?;
        self.confirm_tag(&self.ssf_tag()).await
    }

    async fn create_stream(&self, stream: &StreamRecord, max_per_org: usize) -> Result<bool> {
        let l = self.layout();
        let n = as_int(
            self.ssf_write(
                &self.inner.scripts.ssf_create_stream,
                &[
                    l.ssf("streams"),
                    l.ssf("versions"),
                    l.ssf("orgs"),
                    self.ssf_org_set(stream.org.as_deref()),
                ],
                &[
                    stream.id.clone(),
                    stream.org.clone().unwrap_or_default(),
                    stream.version.to_string(),
                    stream.body.clone(),
                    max_per_org.to_string(),
                ],
            )
            .await?,
        )?;
        match n {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(Error::Internal("stream id collision".into())),
        }
    }

    async fn stream(&self, id: &str) -> Result<Option<StreamRecord>> {
        let l = self.layout();
        let (body, version, org): (Option<String>, Option<String>, Option<String>) =
            ::redis::pipe()
                .cmd("HGET")
                .arg(l.ssf("streams"))
                .arg(id)
                .cmd("HGET")
                .arg(l.ssf("versions"))
                .arg(id)
                .cmd("HGET")
                .arg(l.ssf("orgs"))
                .arg(id)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
        Ok(record(id.to_owned(), body, version, org))
    }

    async fn streams(&self, org: Option<Option<&str>>) -> Result<Vec<StreamRecord>> {
        let l = self.layout();
        let ids: Vec<String> = match org {
            Some(org) => ::redis::cmd("SMEMBERS")
                .arg(self.ssf_org_set(org))
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?,
            None => ::redis::cmd("HKEYS")
                .arg(l.ssf("orgs"))
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?,
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (bodies, versions, orgs): (
            Vec<Option<String>>,
            Vec<Option<String>>,
            Vec<Option<String>>,
        ) = ::redis::pipe()
            .cmd("HMGET")
            .arg(l.ssf("streams"))
            .arg(&ids)
            .cmd("HMGET")
            .arg(l.ssf("versions"))
            .arg(&ids)
            .cmd("HMGET")
            .arg(l.ssf("orgs"))
            .arg(&ids)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let mut out: Vec<StreamRecord> = ids
            .into_iter()
            .zip(bodies)
            .zip(versions)
            .zip(orgs)
            .filter_map(|(((id, b), v), o)| record(id, b, v, o))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn replace_stream(&self, stream: &StreamRecord, expected: u64) -> Result<bool> {
        let l = self.layout();
        let n = as_int(
            self.ssf_write(
                &self.inner.scripts.ssf_replace_stream,
                &[l.ssf("streams"), l.ssf("versions")],
                &[
                    stream.id.clone(),
                    expected.to_string(),
                    stream.version.to_string(),
                    stream.body.clone(),
                ],
            )
            .await?,
        )?;
        Ok(n == 1)
    }

    async fn delete_stream(&self, id: &str) -> Result<bool> {
        let l = self.layout();
        let org: Option<String> = ::redis::cmd("HGET")
            .arg(l.ssf("orgs"))
            .arg(id)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let Some(org) = org else { return Ok(false) };
        let set = self.ssf_org_set((!org.is_empty()).then_some(org.as_str()));
        let n = as_int(
            self.ssf_write(
                &self.inner.scripts.ssf_delete_stream,
                &[
                    l.ssf("streams"),
                    l.ssf("versions"),
                    l.ssf("orgs"),
                    l.ssf(&format!("lease:{}", enc(id))),
                    set,
                ],
                &[id.to_owned(), org],
            )
            .await?,
        )?;
        Ok(n == 1)
    }

    async fn stream_lease(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        action: LeaseAction,
    ) -> Result<bool> {
        let action = match action {
            LeaseAction::Take => "take",
            LeaseAction::Keep => "keep",
            LeaseAction::Drop => "drop",
        };
        let held = self
            .int(
                &self.inner.scripts.lease,
                &[self.layout().ssf(&format!("lease:{}", enc(id)))],
                &[
                    owner.to_owned(),
                    ttl.as_millis().max(1).to_string(),
                    action.to_owned(),
                ],
            )
            .await?;
        Ok(held == 1 && action != "drop")
    }
}
