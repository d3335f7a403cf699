use std::fmt;

use super::{Kind, Role, TokenDigest};

/// Milliseconds since the Unix epoch; every time the store keeps is one of these.
pub type Millis = i64;

/// Where a session was opened from, when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The address the caller reported (LoginRequest.client): informative
    /// only, anyone can claim any address.
    pub address: Option<String>,
    pub user_agent: Option<String>,
    /// The address the server saw: the TCP peer, or what a trusted proxy
    /// (or this process's REST shim) forwarded. Not the caller's to choose.
    pub peer_address: Option<String>,
}

/// A live (or just ended) session as the store returns it. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: i32,
    pub kind: Kind,
    pub user_id: i64,
    pub username: String,
    pub org: String,
    /// The owner's role, read with the session so policy needs no second lookup.
    pub role: Role,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    /// When the session ends unless used again (refreshed on use).
    pub idle_deadline: Millis,
    /// When the session ends at the latest.
    pub expires_at: Millis,
    pub client: ClientInfo,
}

impl Session {
    pub fn is_live_at(&self, now: Millis) -> bool {
        now < self.expires_at && now < self.idle_deadline
    }
}

/// One ended session, as the revocation feed carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Increasing within the event's shard (store-wide on a store with one
    /// shard, as SQLite).
    pub sequence: u64,
    /// The shard (event log) it was recorded in; 0 on a one-shard store.
    pub shard: u16,
    /// Where a watcher resumes after this event (set by the watch, opaque).
    pub cursor: String,
    pub session_id: i32,
    pub username: String,
    pub org: String,
    pub kind: Kind,
    pub reason: super::EndReason,
    pub at: Millis,
}

/// Who ends sessions, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A username, `system` (expiry) or `operator` (user administration).
    pub name: String,
    /// The session the actor used, when it used one.
    pub session_id: Option<i32>,
}

impl Actor {
    pub fn user(name: &str, session_id: Option<i32>) -> Self {
        Actor {
            name: name.to_owned(),
            session_id,
        }
    }

    /// User administration from the command line.
    pub fn operator() -> Self {
        Actor::user("operator", None)
    }
}

/// What an ending call records about itself: who, and aimed at what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub actor: Actor,
    /// `session:<id>`, `mailbox:<user>`, `org:<org>` or `user:<name>`.
    pub target: String,
}

/// One call (or expiry sweep) that ended sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: u64,
    pub at: Millis,
    pub org: String,
    pub actor: String,
    pub actor_session_id: Option<i32>,
    pub reason: super::EndReason,
    pub target: String,
    pub ended: u32,
}

/// What `SessionStore::create_session` needs.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub digest: TokenDigest,
    pub kind: Kind,
    pub user_id: i64,
    pub now: Millis,
    pub idle_deadline: Millis,
    pub expires_at: Millis,
    pub client: ClientInfo,
}

/// A user as listed; no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub org: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: Millis,
}

/// A user with its password hash, for verification only.
#[derive(Clone)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: String,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("user", &self.user)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// What `UserStore::create_user` needs.
#[derive(Clone)]
pub struct NewUser {
    pub username: String,
    pub org: String,
    pub role: Role,
    pub password_hash: String,
    pub now: Millis,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("org", &self.org)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}
