//! Reading Redis replies into domain types.

use std::collections::HashMap;

use ::redis::{RedisError, RetryMethod, Value};

use crate::domain::{
    Actor, AuditRecord, ClientInfo, Error, Result, Revocation, Role, Session, TokenDigest, User,
    UserRecord,
};

pub fn map_err(e: RedisError) -> Error {
    match e.retry_method() {
        RetryMethod::NoRetry => Error::Internal(format!("redis: {e}")),
        _ => Error::Unavailable(format!("redis: {e}")),
    }
}

pub fn hex(d: &TokenDigest) -> String {
    super::layout::hex_of(&d.0)
}

pub fn text(v: &Value) -> Option<String> {
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
pub fn fields(v: &Value) -> Option<HashMap<String, String>> {
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

pub fn corrupt(what: &str) -> Error {
    Error::Internal(format!("redis: malformed {what}"))
}

pub fn get<T: std::str::FromStr>(m: &HashMap<String, String>, name: &str) -> Result<T> {
    m.get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(name))
}

pub fn optional(m: &HashMap<String, String>, name: &str) -> Option<String> {
    m.get(name).filter(|v| !v.is_empty()).cloned()
}

pub fn session_from(m: &HashMap<String, String>) -> Result<Session> {
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
            peer_address: optional(m, "peer"),
        },
    })
}

pub fn user_from(m: &HashMap<String, String>) -> Result<UserRecord> {
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

/// The events of one stream entry: one per `e` field (a bulk step packs
/// several into one entry), the entry id being the last one's sequence.
pub fn revocations_from(entry: &Value) -> Result<Vec<Revocation>> {
    let Value::Array(parts) = entry else {
        return Err(corrupt("event"));
    };
    let (Some(id), Some(Value::Array(body))) = (parts.first().and_then(text), parts.get(1)) else {
        return Err(corrupt("event"));
    };
    let last: u64 = entry_sequence(&id).ok_or_else(|| corrupt("event id"))?;
    let packed: Vec<&Value> = body
        .chunks(2)
        .filter(|pair| matches!(pair, [Value::BulkString(k), _] if k.as_slice() == b"e"))
        .map(|pair| &pair[1])
        .collect();
    let first = (last + 1)
        .checked_sub(packed.len() as u64)
        .ok_or_else(|| corrupt("event id"))?;
    packed
        .into_iter()
        .zip(first..)
        .map(|(v, sequence)| revocation_of(v, sequence))
        .collect()
}

/// The sequence an event stream entry id (`<sequence>-0`) names.
pub fn entry_sequence(id: &str) -> Option<u64> {
    id.split('-').next().and_then(|s| s.parse().ok())
}

/// One packed event: id, user, org, kind, reason, at, joined by the unit
/// separator.
fn revocation_of(v: &Value, sequence: u64) -> Result<Revocation> {
    let Value::BulkString(bytes) = v else {
        return Err(corrupt("event"));
    };
    let packed = std::str::from_utf8(bytes).map_err(|_| corrupt("event"))?;
    let mut parts = packed.split('\u{1f}');
    let (Some(session_id), Some(username), Some(org), Some(kind), Some(reason), Some(at), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(corrupt("event"));
    };
    Ok(Revocation {
        sequence,
        shard: 0,
        cursor: String::new(),
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

/// The actor's session id as a script argument ('' when none).
pub fn sid(actor: &Actor) -> String {
    actor.session_id.map(|i| i.to_string()).unwrap_or_default()
}

pub fn audit_from(org: &str, entry: &Value) -> Result<AuditRecord> {
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
