//! Validations on the Redis store, remembered while their shard has ended
//! nothing since.
//!
//! Every script that can end a live session before its deadlines (a
//! Logoff, a fence of a bulk ending or a disable) gives the shard a new
//! version, in the same atomic step; the validation script returns the
//! version it read the session at. A remembered answer is reused only after
//! reading the shard's version again, within the same call, and finding it
//! unchanged: then nothing ended a session of that shard in between, on any
//! replica, so reading the session again would give the same answer. The
//! re-check is one `HGET` (a microsecond of Redis time) where the full read
//! is a script that copies the whole session and checks its fences.
//!
//! What needs no new version: the expiry sweep ends only sessions whose
//! deadlines have passed, and a remembered session is checked against the
//! clock with deadlines no later than the store's (an idle timer refresh
//! only moves them later); removing sessions a fence already covers changes
//! no answer. A version is server time plus a counter, so a primary that
//! lost writes, or came back empty (no version at all), never matches an
//! answer remembered from before.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::{Millis, Session};

/// Entries kept at most; past this the cache starts over (a flood of
/// distinct valid tokens must not grow memory without bound).
const MAX_ENTRIES: usize = 65_536;

struct Entry {
    version: Arc<str>,
    session: Session,
}

/// Keyed by the token digest's hex, as the store's keys spell it.
#[derive(Default)]
pub(super) struct Remembered {
    entries: RwLock<HashMap<String, Entry>>,
}

impl Remembered {
    /// The version and session remembered for a token, if it is still live
    /// by its own deadlines.
    pub fn get(&self, digest: &str, now: Millis) -> Option<(Arc<str>, Session)> {
        let entries = self.entries.read().ok()?;
        let e = entries.get(digest)?;
        e.session
            .is_live_at(now)
            .then(|| (Arc::clone(&e.version), e.session.clone()))
    }

    /// Files a session read at `version` of its shard.
    pub fn file(&self, digest: &str, version: &str, session: &Session) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(digest) {
            entries.clear();
        }
        entries.insert(
            digest.to_owned(),
            Entry {
                version: Arc::from(version),
                session: session.clone(),
            },
        );
    }

    /// This process refreshed the session's idle timer: the remembered copy
    /// follows, so the next validation does not find the refresh due again.
    pub fn touched(&self, digest: &str, now: Millis, idle_deadline: Millis) {
        if let Ok(mut entries) = self.entries.write() {
            if let Some(e) = entries.get_mut(digest) {
                e.session.last_seen_at = now;
                e.session.idle_deadline = idle_deadline;
            }
        }
    }

    pub fn forget(&self, digest: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientInfo, Kind, Role};

    fn session(idle: Millis) -> Session {
        Session {
            id: 7,
            kind: Kind::Api,
            user_id: 1,
            username: "ann".into(),
            org: "acme".into(),
            role: Role::User,
            created_at: 0,
            last_seen_at: 0,
            idle_deadline: idle,
            expires_at: 1_000,
            client: ClientInfo::default(),
        }
    }

    #[test]
    fn an_entry_past_its_deadline_is_not_offered() {
        let r = Remembered::default();
        r.file("ab", "v1", &session(100));
        assert!(r.get("ab", 99).is_some());
        assert!(r.get("ab", 100).is_none());
        r.touched("ab", 99, 500);
        let (version, s) = r.get("ab", 400).expect("refreshed");
        assert_eq!(
            (&*version, s.last_seen_at, s.idle_deadline),
            ("v1", 99, 500)
        );
        r.forget("ab");
        assert!(r.get("ab", 1).is_none());
    }

    #[test]
    fn a_full_cache_starts_over() {
        let r = Remembered::default();
        for i in 0..MAX_ENTRIES {
            r.file(&i.to_string(), "v", &session(100));
        }
        r.file("new", "v", &session(100));
        assert!(r.get("new", 1).is_some());
        assert!(r.get("0", 1).is_none());
    }
}
