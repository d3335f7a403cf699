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
use std::sync::{Arc, Mutex, RwLock};

use crate::domain::{Millis, Result, Session};
use crate::store::MAX_REMEMBERED;

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
        if entries.len() >= MAX_REMEMBERED && !entries.contains_key(digest) {
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

/// Reads of a shard's version that validations share. At most one read per
/// shard is in flight; validations that arrive meanwhile queue on the next
/// one, which is sent when the one in flight has answered. A validation may
/// wait on a read only while it has not been sent, so the version it gets
/// was read after the validation began: as good as its own read. A lone
/// validation sends at once; concurrent ones of one shard cost Redis one
/// `HGET` per round trip between them instead of one each.
#[derive(Default)]
pub(super) struct VersionReads {
    shards: Mutex<HashMap<u16, ShardReads>>,
}

#[derive(Default)]
struct ShardReads {
    in_flight: Option<Arc<VersionRead>>,
    queued: Option<Arc<VersionRead>>,
}

pub(super) struct VersionRead {
    shard: u16,
    pub answer: tokio::sync::OnceCell<Result<Option<String>>>,
}

/// What a validation waits on: `read`, after `behind` (the read in flight
/// when it queued) has answered.
pub(super) struct Joined {
    pub read: Arc<VersionRead>,
    pub behind: Option<Arc<VersionRead>>,
}

impl VersionReads {
    pub fn join(&self, shard: u16) -> Joined {
        let Ok(mut shards) = self.shards.lock() else {
            return Joined {
                read: Arc::new(VersionRead::new(shard)),
                behind: None,
            };
        };
        let st = shards.entry(shard).or_default();
        let Some(in_flight) = &st.in_flight else {
            let read = Arc::new(VersionRead::new(shard));
            st.in_flight = Some(Arc::clone(&read));
            return Joined { read, behind: None };
        };
        let behind = Some(Arc::clone(in_flight));
        let read = Arc::clone(
            st.queued
                .get_or_insert_with(|| Arc::new(VersionRead::new(shard))),
        );
        Joined { read, behind }
    }

    /// `read` is about to be sent: no one joins it from now on.
    pub fn sending(&self, read: &Arc<VersionRead>) {
        if let Ok(mut shards) = self.shards.lock() {
            let st = shards.entry(read.shard).or_default();
            if st.queued.as_ref().is_some_and(|q| Arc::ptr_eq(q, read)) {
                st.queued = None;
            }
            st.in_flight = Some(Arc::clone(read));
        }
    }

    /// `read` has answered: the next one may be sent.
    pub fn answered(&self, read: &Arc<VersionRead>) {
        if let Ok(mut shards) = self.shards.lock() {
            if let Some(st) = shards.get_mut(&read.shard) {
                if st.in_flight.as_ref().is_some_and(|r| Arc::ptr_eq(r, read)) {
                    st.in_flight = None;
                }
            }
        }
    }
}

impl VersionRead {
    fn new(shard: u16) -> Self {
        VersionRead {
            shard,
            answer: tokio::sync::OnceCell::new(),
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
    fn a_lone_read_goes_at_once_and_others_queue_until_it_answers() {
        let reads = VersionReads::default();
        let first = reads.join(3);
        assert!(first.behind.is_none(), "nothing in flight: sent at once");
        reads.sending(&first.read);
        let a = reads.join(3);
        let b = reads.join(3);
        assert!(
            Arc::ptr_eq(&a.read, &b.read),
            "arrivals meanwhile share one read"
        );
        assert!(a
            .behind
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &first.read)));
        assert!(
            reads.join(4).behind.is_none(),
            "another shard, its own reads"
        );
        reads.answered(&first.read);
        reads.sending(&a.read);
        let c = reads.join(3);
        assert!(!Arc::ptr_eq(&c.read, &a.read), "a sent read takes no one");
        assert!(c.behind.as_ref().is_some_and(|p| Arc::ptr_eq(p, &a.read)));
        reads.answered(&a.read);
        reads.sending(&c.read);
        reads.answered(&c.read);
        assert!(reads.join(3).behind.is_none());
    }

    #[test]
    fn a_full_cache_starts_over() {
        let r = Remembered::default();
        for i in 0..MAX_REMEMBERED {
            r.file(&i.to_string(), "v", &session(100));
        }
        r.file("new", "v", &session(100));
        assert!(r.get("new", 1).is_some());
        assert!(r.get("0", 1).is_none());
    }
}
