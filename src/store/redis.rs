//! The shared store: Redis (or Redis Cluster), for many stateless replicas.
//!
//! Layout. Every key starts with the hash tag `{sessiond}` (`{<prefix>}` with
//! `--redis-prefix`), so all of them live
//! in one slot: each change is one Lua script, atomic across sessions, indexes
//! and the revocation stream, and the event sequence is strictly increasing
//! store-wide. Scripts name one key in KEYS (for routing) and derive the rest
//! from the prefix, all in the same slot.
//!
//! ```text
//! {sessiond}:user:<username>       hash  id username org role hash disabled created
//! {sessiond}:uid:<id>              string -> username
//! {sessiond}:users                 set of usernames
//! {sessiond}:s:<id>                hash  one live session (deleted when it ends)
//! {sessiond}:t:<sha256 hex>        hash  a copy of the session (validation reads only this)
//! {sessiond}:live:u:<KIND>:<uid>   zset  live session ids of a user, by kind
//! {sessiond}:live:o:<KIND>:<org>   zset  live session ids of an org, by kind
//! {sessiond}:deadlines             zset  id scored by min(idle deadline, expiry)
//! {sessiond}:live:counts           hash  kind -> sessions not yet ended (gauge)
//! {sessiond}:events                stream, entry id <sequence>-0, one per ended session,
//!                                   one field `e` = id, user, org, kind, reason, at
//!                                   joined by \x1f (a control character names never hold)
//! {sessiond}:events:purged         highest sequence trimmed by retention
//! {sessiond}:audit:<org>           stream, entry id <audit id>-0, one per ending call
//! {sessiond}:audit:orgs            set of orgs with an audit stream
//! {sessiond}:seq:{user,session,event,audit}  counters
//! ```
//!
//! Session and token keys carry a TTL (their deadline plus a grace period) so
//! memory is reclaimed even if no replica sweeps; validity is always decided
//! by the stored deadlines, never by the TTL. The sweeper ends expired
//! sessions (EXPIRED events) well within the grace period.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, RetryMethod, Script, Value};
use async_trait::async_trait;
use tokio::sync::{watch, OnceCell};

use super::{EndTarget, ListQuery, Scope, Store, SweepReport};
use crate::domain::{
    Actor, Audit, AuditRecord, AuthFailure, ClientInfo, EndReason, Error, Kind, Millis, NewSession,
    NewUser, Result, Revocation, Role, Session, TokenDigest, User, UserRecord,
};

/// Longest `--redis-prefix` accepted.
const MAX_PREFIX: usize = 64;

/// A `--redis-prefix` that can neither leave its hash tag nor split a key:
/// letters, digits, `-`, `_` and `.` only.
pub fn check_prefix(prefix: &str) -> std::result::Result<String, String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(prefix.to_owned())
    } else {
        Err(format!(
            "redis prefix {prefix:?}: 1 to {MAX_PREFIX} letters, digits, '-', '_' or '.'"
        ))
    }
}
/// How long session keys outlive their deadline before Redis drops them.
const TTL_GRACE_MS: i64 = 24 * 60 * 60 * 1000;
const SWEEP_BATCH: usize = 1_000;
const PURGE_BATCH: usize = 1_000;
/// How long the tailer's XREAD blocks before it checks in again.
const TAIL_BLOCK_MS: u64 = 5_000;

/// Shared Lua: end one session, recording its revocation event.
const END_ONE: &str = r#"
local P = ARGV[1]
-- Event fields are packed into one value, split by the unit separator (a
-- control character: names can never contain one). One field-value pair
-- per entry makes XADD markedly cheaper on bulk endings.
local US = '\31'
local function end_one(id, reason, now, require_live, org, kind)
  local k = P .. ':s:' .. id
  local h = redis.call('HGETALL', k)
  if #h == 0 then
    redis.call('ZREM', P .. ':deadlines', id)
    return nil
  end
  local s = {}
  for i = 1, #h, 2 do s[h[i]] = h[i + 1] end
  local n = tonumber(now)
  if require_live and (tonumber(s.idle) <= n or tonumber(s.expires) <= n) then return false end
  if org ~= '' and s.org ~= org then return false end
  if kind ~= '' and s.kind ~= kind then return false end
  local seq = redis.call('INCR', P .. ':seq:event')
  redis.call('XADD', P .. ':events', seq .. '-0', 'e',
    s.id .. US .. s.username .. US .. s.org .. US .. s.kind .. US .. reason .. US .. now)
  redis.call('DEL', k, P .. ':t:' .. s.digest)
  redis.call('ZREM', P .. ':live:u:' .. s.kind .. ':' .. s.user_id, id)
  redis.call('ZREM', P .. ':live:o:' .. s.kind .. ':' .. s.org, id)
  redis.call('ZREM', P .. ':deadlines', id)
  redis.call('HINCRBY', P .. ':live:counts', s.kind, -1)
  return h
end
local function field(h, name)
  for i = 1, #h, 2 do if h[i] == name then return h[i + 1] end end
  return nil
end
-- Calls redis command `cmd` on `key` with `args` in chunks (Lua's unpack has a
-- stack limit; variadic calls are far cheaper than one call per element).
local function chunked(cmd, key, args)
  for i = 1, #args, 1000 do
    local stop = math.min(i + 999, #args)
    if key then
      redis.call(cmd, key, unpack(args, i, stop))
    else
      redis.call(cmd, unpack(args, i, stop))
    end
  end
end
-- Ends the sessions among `ids` (live ones only when `require_live`): one
-- event each, in one sequence reservation, with batched deletes. Stale ids
-- (hash already gone) are dropped from `idx`. Returns the count ended and
-- the count per org.
local function end_many(ids, reason, now, require_live, idx)
  local n = tonumber(now)
  local ended = {}
  local stale = {}
  for _, id in ipairs(ids) do
    local v = redis.call('HMGET', P .. ':s:' .. id,
      'digest', 'kind', 'user_id', 'username', 'org', 'idle', 'expires')
    if not v[1] then
      stale[#stale + 1] = id
    elseif (not require_live) or (tonumber(v[6]) > n and tonumber(v[7]) > n) then
      ended[#ended + 1] = {id, v}
    end
  end
  if #stale > 0 then
    if idx then chunked('ZREM', idx, stale) end
    chunked('ZREM', P .. ':deadlines', stale)
  end
  local per_org = {}
  if #ended == 0 then return 0, per_org end
  local seq = redis.call('INCRBY', P .. ':seq:event', #ended) - #ended
  local keys, ids_only, by_index, per_kind = {}, {}, {}, {}
  for _, e in ipairs(ended) do
    local id, v = e[1], e[2]
    seq = seq + 1
    redis.call('XADD', P .. ':events', seq .. '-0', 'e',
      id .. US .. v[4] .. US .. v[5] .. US .. v[2] .. US .. reason .. US .. now)
    keys[#keys + 1] = P .. ':s:' .. id
    keys[#keys + 1] = P .. ':t:' .. v[1]
    ids_only[#ids_only + 1] = id
    for _, ix in ipairs({P .. ':live:u:' .. v[2] .. ':' .. v[3], P .. ':live:o:' .. v[2] .. ':' .. v[5]}) do
      by_index[ix] = by_index[ix] or {}
      table.insert(by_index[ix], id)
    end
    per_kind[v[2]] = (per_kind[v[2]] or 0) + 1
    per_org[v[5]] = (per_org[v[5]] or 0) + 1
  end
  chunked('DEL', nil, keys)
  chunked('ZREM', P .. ':deadlines', ids_only)
  for ix, members in pairs(by_index) do chunked('ZREM', ix, members) end
  for kind, count in pairs(per_kind) do
    redis.call('HINCRBY', P .. ':live:counts', kind, -count)
  end
  return #ended, per_org
end
-- One audit record per call, in the org's audit stream (ids store-wide).
local function audit(org, actor, sid, reason, target, ended, now)
  local id = redis.call('INCR', P .. ':seq:audit')
  redis.call('XADD', P .. ':audit:' .. org, id .. '-0', 'at', now, 'actor', actor, 'sid', sid,
    'reason', reason, 'target', target, 'ended', ended)
  redis.call('SADD', P .. ':audit:orgs', org)
end
"#;

/// Every script, compiled once (EVALSHA, with EVAL after a Redis restart).
struct Scripts {
    create_user: Script,
    set_password: Script,
    set_disabled: Script,
    delete_user: Script,
    create_session: Script,
    touch: Script,
    end_one: Script,
    end_scope: Script,
    sweep: Script,
    purge: Script,
    purge_audit: Script,
    events_after: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_end = |body: &str| Script::new(&format!("{END_ONE}\n{body}"));
        Scripts {
            create_user: Script::new(
                r#"
local P = ARGV[1]
local k = P .. ':user:' .. ARGV[2]
if redis.call('EXISTS', k) == 1 then return 'EXISTS' end
local id = redis.call('INCR', P .. ':seq:user')
redis.call('HSET', k, 'id', id, 'username', ARGV[2], 'org', ARGV[3], 'role', ARGV[4],
  'hash', ARGV[5], 'disabled', '0', 'created', ARGV[6])
redis.call('SET', P .. ':uid:' .. id, ARGV[2])
redis.call('SADD', P .. ':users', ARGV[2])
return tostring(id)
"#,
            ),
            set_password: Script::new(
                r#"
local k = ARGV[1] .. ':user:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'hash', ARGV[3])
return 1
"#,
            ),
            set_disabled: with_end(
                r#"
local k = P .. ':user:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return -1 end
redis.call('HSET', k, 'disabled', ARGV[3])
local n = 0
if ARGV[3] == '1' then
  local uid = redis.call('HGET', k, 'id')
  for _, kind in ipairs({'ADMIN', 'API', 'IMAP', 'POP'}) do
    local idx = P .. ':live:u:' .. kind .. ':' .. uid
    for _, id in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
      local r = end_one(id, 'LOGOFF_OTHER', ARGV[4], true, '', '')
      if r then n = n + 1 elseif r == nil then redis.call('ZREM', idx, id) end
    end
  end
  audit(redis.call('HGET', k, 'org'), ARGV[5], ARGV[6], 'LOGOFF_OTHER', 'user:' .. ARGV[2], n, ARGV[4])
end
return n
"#,
            ),
            // Run after set_disabled ended the sessions: a login racing the
            // two steps is refused (disabled), then finds no user at all.
            delete_user: Script::new(
                r#"
local P = ARGV[1]
local k = P .. ':user:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('DEL', P .. ':uid:' .. redis.call('HGET', k, 'id'))
redis.call('DEL', k)
redis.call('SREM', P .. ':users', ARGV[2])
return 1
"#,
            ),
            create_session: Script::new(
                r#"
local P = ARGV[1]
local username = redis.call('GET', P .. ':uid:' .. ARGV[2])
if not username then return 'NOUSER' end
local u = redis.call('HMGET', P .. ':user:' .. username, 'disabled', 'org', 'role')
if u[1] ~= '0' then return 'NOUSER' end
local id = redis.call('INCR', P .. ':seq:session')
if id > tonumber(ARGV[11]) then return 'EXHAUSTED' end
local deadline = math.min(tonumber(ARGV[6]), tonumber(ARGV[7]))
local ttl_at = deadline + tonumber(ARGV[10])
local k = P .. ':s:' .. id
redis.call('HSET', k, 'id', id, 'digest', ARGV[3], 'kind', ARGV[4], 'user_id', ARGV[2],
  'username', username, 'org', u[2], 'role', u[3], 'created', ARGV[5], 'seen', ARGV[5],
  'idle', ARGV[6], 'expires', ARGV[7], 'addr', ARGV[8], 'ua', ARGV[9])
redis.call('PEXPIREAT', k, ttl_at)
-- The token key holds a copy of the session: validation is one HGETALL.
local h = redis.call('HGETALL', k)
local t = P .. ':t:' .. ARGV[3]
redis.call('HSET', t, unpack(h))
redis.call('PEXPIREAT', t, ttl_at)
redis.call('ZADD', P .. ':live:u:' .. ARGV[4] .. ':' .. ARGV[2], id, id)
redis.call('ZADD', P .. ':live:o:' .. ARGV[4] .. ':' .. u[2], id, id)
redis.call('ZADD', P .. ':deadlines', deadline, id)
redis.call('HINCRBY', P .. ':live:counts', ARGV[4], 1)
return h
"#,
            ),
            touch: Script::new(
                r#"
local P = ARGV[1]
local k = P .. ':s:' .. ARGV[2]
local v = redis.call('HMGET', k, 'idle', 'expires', 'digest')
if not v[1] then return 0 end
local idle = tonumber(v[1])
if idle <= tonumber(ARGV[3]) or idle >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', k, 'seen', ARGV[3], 'idle', ARGV[4])
redis.call('HSET', P .. ':t:' .. v[3], 'seen', ARGV[3], 'idle', ARGV[4])
local deadline = math.min(tonumber(ARGV[4]), tonumber(v[2]))
local ttl_at = deadline + tonumber(ARGV[5])
redis.call('PEXPIREAT', k, ttl_at)
redis.call('PEXPIREAT', P .. ':t:' .. v[3], ttl_at)
redis.call('ZADD', P .. ':deadlines', deadline, ARGV[2])
return 1
"#,
            ),
            end_one: with_end(
                r#"
local r = end_one(ARGV[2], ARGV[3], ARGV[4], true, ARGV[5], ARGV[6])
if not r then return false end
audit(field(r, 'org'), ARGV[7], ARGV[8], ARGV[3], ARGV[9], 1, ARGV[4])
return r
"#,
            ),
            end_scope: with_end(
                r#"
local n = 0
-- ARGV[9]: a session id to spare ('' for none).
for i = 10, #ARGV do
  local idx = ARGV[i]
  local ids = redis.call('ZRANGE', idx, 0, -1)
  if ARGV[9] ~= '' then
    local kept = {}
    for _, id in ipairs(ids) do
      if id ~= ARGV[9] then kept[#kept + 1] = id end
    end
    ids = kept
  end
  n = n + end_many(ids, ARGV[2], ARGV[3], true, idx)
end
local org = ARGV[7]
if org == '' then
  local name = redis.call('GET', P .. ':uid:' .. ARGV[8])
  org = name and redis.call('HGET', P .. ':user:' .. name, 'org') or ''
end
audit(org, ARGV[4], ARGV[5], ARGV[2], ARGV[6], n, ARGV[3])
return n
"#,
            ),
            sweep: with_end(
                r#"
local due = redis.call('ZRANGEBYSCORE', P .. ':deadlines', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local n, per_org = end_many(due, 'EXPIRED', ARGV[2], false, nil)
for org, count in pairs(per_org) do
  audit(org, 'system', '', 'EXPIRED', 'expired', count, ARGV[2])
end
return {n, #due}
"#,
            ),
            purge: Script::new(
                r#"
local P = ARGV[1]
local entries = redis.call('XRANGE', P .. ':events', '-', '+', 'COUNT', ARGV[3])
local last = nil
for _, e in ipairs(entries) do
  local f = e[2]
  local at = nil
  -- The time is the last of the packed fields.
  for i = 1, #f, 2 do
    if f[i] == 'e' then at = tonumber(string.match(f[i + 1], '([^\31]*)$')) end
  end
  if at and at < tonumber(ARGV[2]) then last = e[1] else break end
end
if not last then return 0 end
local seq = tonumber(string.match(last, '^(%d+)'))
local removed = redis.call('XTRIM', P .. ':events', 'MINID', (seq + 1) .. '-0')
local purged = tonumber(redis.call('GET', P .. ':events:purged') or '0')
if seq > purged then redis.call('SET', P .. ':events:purged', seq) end
return removed
"#,
            ),
            purge_audit: Script::new(
                r#"
local P = ARGV[1]
local removed = 0
for _, org in ipairs(redis.call('SMEMBERS', P .. ':audit:orgs')) do
  local key = P .. ':audit:' .. org
  local entries = redis.call('XRANGE', key, '-', '+', 'COUNT', ARGV[3])
  local last = nil
  for _, e in ipairs(entries) do
    local f = e[2]
    local at = nil
    for i = 1, #f, 2 do if f[i] == 'at' then at = tonumber(f[i + 1]) end end
    if at and at < tonumber(ARGV[2]) then last = e[1] else break end
  end
  if last then
    local seq = tonumber(string.match(last, '^(%d+)'))
    removed = removed + redis.call('XTRIM', key, 'MINID', (seq + 1) .. '-0')
  end
end
return removed
"#,
            ),
            events_after: Script::new(
                r#"
local P = ARGV[1]
local purged = redis.call('GET', P .. ':events:purged') or '0'
if tonumber(ARGV[2]) < tonumber(purged) then return {'EXPIRED', purged} end
return {'OK', redis.call('XRANGE', P .. ':events', ARGV[3], '+', 'COUNT', ARGV[4])}
"#,
            ),
        }
    }
}

/// Redis-backed [`Store`].
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `{<prefix>}`: the hash tag every key starts with.
    tag: String,
    client: ::redis::Client,
    conn: ConnectionManager,
    scripts: Scripts,
    /// The newest event sequence seen by this replica's tailer.
    tail: OnceCell<watch::Receiver<u64>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: never printed.
        f.write_str("RedisStore")
    }
}

fn map_err(e: RedisError) -> Error {
    match e.retry_method() {
        RetryMethod::NoRetry => Error::Internal(format!("redis: {e}")),
        _ => Error::Unavailable(format!("redis: {e}")),
    }
}

fn hex(d: &TokenDigest) -> String {
    d.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// A flat `[field, value, ...]` array (HGETALL, stream entry) as a map;
/// `None` for Nil / Lua false.
fn fields(v: &Value) -> Option<HashMap<String, String>> {
    let Value::Array(items) = v else {
        return None;
    };
    let mut map = HashMap::new();
    for pair in items.chunks(2) {
        if let [k, v] = pair {
            map.insert(text(k)?, text(v)?);
        }
    }
    Some(map)
}

fn corrupt(what: &str) -> Error {
    Error::Internal(format!("redis: malformed {what}"))
}

fn get<T: std::str::FromStr>(m: &HashMap<String, String>, name: &str) -> Result<T> {
    m.get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(name))
}

fn optional(m: &HashMap<String, String>, name: &str) -> Option<String> {
    m.get(name).filter(|v| !v.is_empty()).cloned()
}

fn session_from(m: &HashMap<String, String>) -> Result<Session> {
    let kind: String = get(m, "kind")?;
    let role: String = get(m, "role")?;
    Ok(Session {
        id: get(m, "id")?,
        kind: kind.parse().map_err(|_| corrupt("kind"))?,
        user_id: get(m, "user_id")?,
        username: get(m, "username")?,
        org: get(m, "org")?,
        role: role.parse().map_err(|_| corrupt("role"))?,
        created_at: get(m, "created")?,
        last_seen_at: get(m, "seen")?,
        idle_deadline: get(m, "idle")?,
        expires_at: get(m, "expires")?,
        client: ClientInfo {
            address: optional(m, "addr"),
            user_agent: optional(m, "ua"),
        },
    })
}

fn user_from(m: &HashMap<String, String>) -> Result<UserRecord> {
    let role: String = get(m, "role")?;
    Ok(UserRecord {
        user: User {
            id: get(m, "id")?,
            username: get(m, "username")?,
            org: get(m, "org")?,
            role: role.parse::<Role>().map_err(|_| corrupt("role"))?,
            disabled: m.get("disabled").is_some_and(|d| d == "1"),
            created_at: get(m, "created")?,
        },
        password_hash: get(m, "hash")?,
    })
}

fn revocation_from(entry: &Value) -> Result<Revocation> {
    let Value::Array(parts) = entry else {
        return Err(corrupt("event"));
    };
    let (Some(id), Some(body)) = (parts.first().and_then(text), parts.get(1)) else {
        return Err(corrupt("event"));
    };
    let f = fields(body).ok_or_else(|| corrupt("event"))?;
    let sequence = id
        .split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("event id"))?;
    // id, user, org, kind, reason, at, joined by the unit separator.
    let packed = f.get("e").ok_or_else(|| corrupt("event"))?;
    let parts: Vec<&str> = packed.split('\u{1f}').collect();
    let [session_id, username, org, kind, reason, at] = parts[..] else {
        return Err(corrupt("event"));
    };
    Ok(Revocation {
        sequence,
        session_id: session_id
            .parse()
            .map_err(|_| corrupt("event session id"))?,
        username: username.to_owned(),
        org: org.to_owned(),
        kind: kind.parse().map_err(|_| corrupt("kind"))?,
        reason: reason.parse().map_err(|_| corrupt("reason"))?,
        at: at.parse().map_err(|_| corrupt("event time"))?,
    })
}

/// While Redis is down a call should fail fast (UNAVAILABLE) rather than wait
/// out a long reconnect: one quick retry per attempt; every later call tries
/// again, so service resumes as soon as Redis answers.
/// The actor's session id as a script argument ('' when none).
fn sid(actor: &Actor) -> String {
    actor.session_id.map(|i| i.to_string()).unwrap_or_default()
}

fn audit_from(org: &str, entry: &Value) -> Result<AuditRecord> {
    let Value::Array(parts) = entry else {
        return Err(corrupt("audit record"));
    };
    let (Some(id), Some(body)) = (parts.first().and_then(text), parts.get(1)) else {
        return Err(corrupt("audit record"));
    };
    let f = fields(body).ok_or_else(|| corrupt("audit record"))?;
    let reason: String = get(&f, "reason")?;
    Ok(AuditRecord {
        id: id
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("audit id"))?,
        at: get(&f, "at")?,
        org: org.to_owned(),
        actor: get(&f, "actor")?,
        actor_session_id: f.get("sid").and_then(|s| s.parse().ok()),
        reason: reason.parse().map_err(|_| corrupt("reason"))?,
        target: get(&f, "target")?,
        ended: get(&f, "ended")?,
    })
}

fn connection_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(100))
}

impl RedisStore {
    /// Connects lazily: a Redis that is down now makes calls UNAVAILABLE
    /// until it is back, rather than keeping the service from starting.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_prefixed(url, "sessiond").await
    }

    /// [`RedisStore::open`] with every key under `{<prefix>}` (see
    /// [`check_prefix`]).
    pub async fn open_prefixed(url: &str, prefix: &str) -> Result<Self> {
        let prefix = check_prefix(prefix).map_err(Error::Internal)?;
        let client = ::redis::Client::open(url)
            .map_err(|e| Error::Internal(format!("bad redis URL: {e}")))?;
        let conn = ConnectionManager::new_lazy_with_config(
            client.clone(),
            connection_config(Duration::from_secs(5)),
        )
        .map_err(map_err)?;
        let store = RedisStore {
            inner: Arc::new(Inner {
                tag: format!("{{{prefix}}}"),
                client,
                conn,
                scripts: Scripts::new(),
                tail: OnceCell::new(),
            }),
        };
        match store.ping().await {
            Ok(()) => store.warn_if_not_durable().await,
            Err(e) => {
                tracing::warn!(error = %e, "redis unreachable at start; answering UNAVAILABLE until it is back")
            }
        }
        Ok(store)
    }

    /// An acknowledged ending is only as durable as Redis makes it.
    async fn warn_if_not_durable(&self) {
        let reply: std::result::Result<Vec<String>, _> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query_async(&mut self.conn())
            .await;
        if let Ok(v) = reply {
            if v.get(1).map(String::as_str) != Some("always") {
                tracing::warn!(
                    "redis appendfsync is not 'always': an acknowledged revocation may be lost if Redis crashes"
                );
            }
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.inner.tag)
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    async fn run(&self, script: &Script, args: &[String]) -> Result<Value> {
        let mut invocation = script.key(self.key("seq:session"));
        invocation.arg(&self.inner.tag);
        for a in args {
            invocation.arg(a);
        }
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)
    }

    async fn int(&self, script: &Script, args: &[String]) -> Result<i64> {
        match self.run(script, args).await? {
            Value::Int(n) => Ok(n),
            other => Err(Error::Internal(format!(
                "redis: unexpected reply {other:?}"
            ))),
        }
    }

    /// The tailer's receiver, starting the tailer on first use.
    async fn tail(&self) -> Result<watch::Receiver<u64>> {
        let rx = self
            .inner
            .tail
            .get_or_try_init(|| async {
                let conn = ConnectionManager::new_lazy_with_config(
                    self.inner.client.clone(),
                    connection_config(Duration::from_millis(TAIL_BLOCK_MS + 5_000)),
                )
                .map_err(map_err)?;
                let start = self.last_sequence().await.unwrap_or(0);
                let (tx, rx) = watch::channel(start);
                tokio::spawn(tail(conn, self.key("events"), tx, start));
                Ok::<_, Error>(rx)
            })
            .await?;
        Ok(rx.clone())
    }

    async fn load_sessions(&self, ids: &[i64]) -> Result<Vec<Option<HashMap<String, String>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.key(&format!("s:{id}")));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        Ok(replies
            .iter()
            .map(|v| fields(v).filter(|m| !m.is_empty()))
            .collect())
    }
}

/// Follows the event stream (XREAD BLOCK on its own connection) and publishes
/// the newest sequence, waking every watcher of this replica at once.
async fn tail(mut conn: ConnectionManager, stream: String, tx: watch::Sender<u64>, mut last: u64) {
    while !tx.is_closed() {
        let reply: std::result::Result<Value, RedisError> = ::redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(TAIL_BLOCK_MS)
            .arg("COUNT")
            .arg(1000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(format!("{last}-0"))
            .query_async(&mut conn)
            .await;
        match reply {
            Ok(Value::Array(streams)) => {
                for s in &streams {
                    let Value::Array(parts) = s else { continue };
                    let Some(Value::Array(entries)) = parts.get(1) else {
                        continue;
                    };
                    for e in entries {
                        if let Ok(r) = revocation_from(e) {
                            last = last.max(r.sequence);
                        }
                    }
                }
                tx.send_replace(last);
            }
            Ok(_) => {} // BLOCK timed out with nothing new
            Err(e) => {
                tracing::debug!(error = %e, "revocation tailer: redis error; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn holds_data(&self) -> Result<bool> {
        let n: i64 = ::redis::cmd("EXISTS")
            .arg(self.key("users"))
            .arg(self.key("seq:session"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(n > 0)
    }

    async fn ping(&self) -> Result<()> {
        ::redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn create_user(&self, user: NewUser) -> Result<User> {
        let reply = self
            .run(
                &self.inner.scripts.create_user,
                &[
                    user.username.clone(),
                    user.org.clone(),
                    user.role.as_str().to_owned(),
                    user.password_hash.clone(),
                    user.now.to_string(),
                ],
            )
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
        let reply: Value = ::redis::cmd("HGETALL")
            .arg(self.key(&format!("user:{username}")))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        match fields(&reply) {
            Some(m) if !m.is_empty() => user_from(&m).map(Some),
            _ => Ok(None),
        }
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let names: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.key("users"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for n in &names {
            pipe.cmd("HGETALL").arg(self.key(&format!("user:{n}")));
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        let mut users = replies
            .iter()
            .filter_map(|v| fields(v).filter(|m| !m.is_empty()))
            .map(|m| user_from(&m).map(|r| r.user))
            .collect::<Result<Vec<_>>>()?;
        users.sort_by(|a, b| (&a.org, &a.username).cmp(&(&b.org, &b.username)));
        Ok(users)
    }

    async fn set_password(&self, username: &str, password_hash: String) -> Result<bool> {
        let n = self
            .int(
                &self.inner.scripts.set_password,
                &[username.to_owned(), password_hash],
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
        let flag = if disabled { "1" } else { "0" };
        let n = self
            .int(
                &self.inner.scripts.set_disabled,
                &[
                    username.to_owned(),
                    flag.to_owned(),
                    now.to_string(),
                    actor.name.clone(),
                    sid(actor),
                ],
            )
            .await?;
        Ok(n >= 0)
    }

    async fn delete_user(&self, username: &str, now: Millis, actor: &Actor) -> Result<bool> {
        if !self.set_disabled(username, true, now, actor).await? {
            return Ok(false);
        }
        let n = self
            .int(&self.inner.scripts.delete_user, &[username.to_owned()])
            .await?;
        Ok(n == 1)
    }

    async fn create_session(&self, new: NewSession) -> Result<Session> {
        let reply = self
            .run(
                &self.inner.scripts.create_session,
                &[
                    new.user_id.to_string(),
                    hex(&new.digest),
                    new.kind.as_str().to_owned(),
                    new.now.to_string(),
                    new.idle_deadline.to_string(),
                    new.expires_at.to_string(),
                    new.client.address.clone().unwrap_or_default(),
                    new.client.user_agent.clone().unwrap_or_default(),
                    TTL_GRACE_MS.to_string(),
                    i32::MAX.to_string(),
                ],
            )
            .await?;
        match text(&reply).as_deref() {
            Some("NOUSER") => return Err(Error::Unauthenticated(AuthFailure::BadCredentials)),
            Some("EXHAUSTED") => {
                return Err(Error::Internal("session id space (int32) exhausted".into()))
            }
            _ => {}
        }
        let m = fields(&reply).ok_or_else(|| corrupt("create_session reply"))?;
        session_from(&m)
    }

    async fn find_live_session(
        &self,
        digest: &TokenDigest,
        now: Millis,
    ) -> Result<Option<Session>> {
        // The hot path: one plain HGETALL of the token's copy of the session
        // (no script), the deadlines checked here. The copy is deleted with
        // the session by every ending, in the same script.
        let digest = hex(digest);
        let reply: Value = ::redis::cmd("HGETALL")
            .arg(self.key(&format!("t:{digest}")))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        match fields(&reply) {
            Some(m) if !m.is_empty() && m.get("digest") == Some(&digest) => {
                let session = session_from(&m)?;
                Ok(session.is_live_at(now).then_some(session))
            }
            _ => Ok(None),
        }
    }

    async fn touch_session(&self, id: i32, now: Millis, idle_deadline: Millis) -> Result<()> {
        self.int(
            &self.inner.scripts.touch,
            &[
                id.to_string(),
                now.to_string(),
                idle_deadline.to_string(),
                TTL_GRACE_MS.to_string(),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn end_session(
        &self,
        target: EndTarget,
        reason: EndReason,
        now: Millis,
        audit: &Audit,
    ) -> Result<Option<Session>> {
        let reply = self
            .run(
                &self.inner.scripts.end_one,
                &[
                    target.id.to_string(),
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
                ],
            )
            .await?;
        match fields(&reply) {
            Some(m) if !m.is_empty() => session_from(&m).map(Some),
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
        let (org, uid, keep) = match &scope {
            Scope::Org(org) => (org.clone(), String::new(), String::new()),
            Scope::User(uid) => (String::new(), uid.to_string(), String::new()),
            Scope::UserExcept { user, keep } => (String::new(), user.to_string(), keep.to_string()),
        };
        let mut args = vec![
            reason.as_str().to_owned(),
            now.to_string(),
            audit.actor.name.clone(),
            sid(&audit.actor),
            audit.target.clone(),
            org,
            uid,
            keep,
        ];
        for kind in kinds {
            args.push(match &scope {
                Scope::User(uid) | Scope::UserExcept { user: uid, .. } => {
                    self.key(&format!("live:u:{kind}:{uid}"))
                }
                Scope::Org(org) => self.key(&format!("live:o:{kind}:{org}")),
            });
        }
        let n = self.int(&self.inner.scripts.end_scope, &args).await?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    async fn list_sessions(&self, query: ListQuery, now: Millis) -> Result<Vec<Session>> {
        let kinds: Vec<Kind> = query.kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k]);
        let indexes: Vec<String> = match &query.username {
            Some(name) => match self.find_user(name).await? {
                Some(r) if r.user.org == query.org => kinds
                    .iter()
                    .map(|k| self.key(&format!("live:u:{k}:{}", r.user.id)))
                    .collect(),
                _ => return Ok(Vec::new()),
            },
            None => kinds
                .iter()
                .map(|k| self.key(&format!("live:o:{k}:{}", query.org)))
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
            for m in self.load_sessions(&ids).await?.into_iter().flatten() {
                let s = session_from(&m)?;
                if s.is_live_at(now) && s.org == query.org {
                    out.push(s);
                }
            }
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
        let mut report = SweepReport::default();
        loop {
            let reply = self
                .run(
                    &self.inner.scripts.sweep,
                    &[now.to_string(), SWEEP_BATCH.to_string()],
                )
                .await?;
            let (ended, due) = match &reply {
                Value::Array(v) => match (v.first(), v.get(1)) {
                    (Some(Value::Int(e)), Some(Value::Int(d))) => (*e, *d),
                    _ => return Err(corrupt("sweep reply")),
                },
                _ => return Err(corrupt("sweep reply")),
            };
            report.expired += u32::try_from(ended).unwrap_or(0);
            if usize::try_from(due).unwrap_or(0) < SWEEP_BATCH {
                break;
            }
        }
        loop {
            let removed = self
                .int(
                    &self.inner.scripts.purge,
                    &[purge_before.to_string(), PURGE_BATCH.to_string()],
                )
                .await?;
            report.purged += u32::try_from(removed).unwrap_or(0);
            if usize::try_from(removed).unwrap_or(0) < PURGE_BATCH {
                break;
            }
        }
        let removed = self
            .int(
                &self.inner.scripts.purge_audit,
                &[audit_purge_before.to_string(), PURGE_BATCH.to_string()],
            )
            .await?;
        report.purged += u32::try_from(removed).unwrap_or(0);
        Ok(report)
    }

    async fn list_audit(&self, org: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let reply: Value = ::redis::cmd("XRANGE")
            .arg(self.key(&format!("audit:{org}")))
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

    /// Sessions not yet ended (an expired one counts until the sweeper ends
    /// it, within one sweep interval).
    async fn live_counts(&self, _now: Millis) -> Result<Vec<(Kind, u64)>> {
        let counts: HashMap<String, i64> = ::redis::cmd("HGETALL")
            .arg(self.key("live:counts"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(Kind::ALL
            .into_iter()
            .map(|k| {
                let n = counts.get(k.as_str()).copied().unwrap_or(0);
                (k, u64::try_from(n).unwrap_or(0))
            })
            .collect())
    }

    async fn last_sequence(&self) -> Result<u64> {
        let n: Option<u64> = ::redis::cmd("GET")
            .arg(self.key("seq:event"))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(n.unwrap_or(0))
    }

    async fn revocations_after(&self, after: u64, limit: usize) -> Result<Vec<Revocation>> {
        let reply = self
            .run(
                &self.inner.scripts.events_after,
                &[
                    after.to_string(),
                    format!("{}-0", after.saturating_add(1)),
                    limit.to_string(),
                ],
            )
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
                entries.iter().map(revocation_from).collect()
            }
            _ => Err(corrupt("events reply")),
        }
    }

    async fn wait_for_revocation(&self, after: u64, timeout: Duration) -> Result<()> {
        let mut rx = self.tail().await?;
        let _ = tokio::time::timeout(timeout, rx.wait_for(|seen| *seen > after)).await;
        Ok(())
    }
}
