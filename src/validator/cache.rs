//! What a validator knows, under one lock: the sessions it learned from
//! upstream answers (keyed by token digest, bounded in entries and bytes),
//! the ids the feed said ended (tombstones), the refusals it remembers, and
//! the generation that says whether an answer in flight may still be kept.
//!
//! The ordering rule: an upstream answer is kept only if (a) its call began
//! while the feed was followed in the current generation, so every ending
//! after the answer was read reaches [`Cache::revoke`], and (b) no tombstone
//! names its session: an answer read before an ending but arriving after the
//! ending's event would otherwise be kept past it. Tombstones outlive the
//! upstream call timeout, so no answer in flight can outlive its tombstone.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use tonic::Status;

use crate::domain::{Millis, TokenDigest};
use crate::pb;

/// The bounds of a cache.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Sessions kept at most.
    pub max_entries: usize,
    /// Bytes of kept sessions at most (as [`entry_bytes`] counts them).
    pub max_bytes: usize,
    /// How long an ended id is remembered: longer than any upstream call.
    pub tombstone_ttl: Duration,
    /// Ended ids remembered at most; past it the oldest go, and every
    /// answer still in flight is dropped instead of kept.
    pub max_tombstones: usize,
    /// How long a refusal is remembered.
    pub refusal_ttl: Duration,
    /// Refusals remembered at most.
    pub max_refusals: usize,
    /// Use is told upstream at most this often per session.
    pub touch_interval: Duration,
}

/// One kept session.
struct Entry {
    session: pb::Session,
    /// Milliseconds since the epoch: past it, ask upstream (another
    /// validator may have kept the session in use).
    idle_until: Millis,
    /// Past it the session is over, whatever anyone says.
    expires_at: Millis,
    /// When use is next told upstream.
    touch_at: Instant,
    bytes: usize,
}

/// What the cache says of a digest.
#[derive(Debug)]
// A hit is the common answer: boxing it would allocate on every validation.
#[allow(clippy::large_enum_variant)]
pub enum Lookup {
    /// A live session; `touch` when its use is due to be told upstream.
    Hit { session: pb::Session, touch: bool },
    /// A refusal remembered, or a session past its absolute deadline.
    Refused(Status),
    /// Ask upstream.
    Miss,
}

/// A ticket for one upstream call: where the cache stood when it began.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    generation: u64,
    keepable: bool,
}

/// What became of an upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Kept: later validations of the token are answered from memory.
    Kept,
    /// Answered but not kept (the feed was not followed when the call began,
    /// or the generation changed, or another org's session).
    NotKept,
    /// The feed said this session ended: the answer must be a refusal.
    Ended,
}

struct Inner {
    sessions: LruCache<TokenDigest, Entry>,
    by_id: HashMap<i32, TokenDigest>,
    bytes: usize,
    tombstones: HashMap<i32, Instant>,
    tomb_order: VecDeque<(Instant, i32)>,
    refusals: LruCache<TokenDigest, (Instant, Status)>,
    generation: u64,
    following: bool,
}

pub struct Cache {
    inner: Mutex<Inner>,
    bounds: Bounds,
}

/// The bytes one kept session costs: its entry, its strings, its two index
/// slots and the LRU node around it.
pub fn entry_bytes(s: &pb::Session) -> usize {
    let strings = s.user.capacity()
        + s.org.capacity()
        + s.peer_address.capacity()
        + s.client
            .as_ref()
            .map_or(0, |c| c.address.capacity() + c.user_agent.capacity());
    let lru_node = size_of::<Entry>() + size_of::<TokenDigest>() + 2 * size_of::<usize>();
    let by_id = size_of::<i32>() + size_of::<TokenDigest>();
    // Hash tables keep about one slot free in eight, and one control byte each.
    lru_node + by_id + (lru_node + by_id) / 8 + 2 + strings
}

fn millis_of(t: Option<&prost_types::Timestamp>) -> Option<Millis> {
    t.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
    })
}

impl Cache {
    pub fn new(bounds: Bounds) -> Self {
        Cache {
            inner: Mutex::new(Inner {
                sessions: LruCache::unbounded(),
                by_id: HashMap::new(),
                bytes: 0,
                tombstones: HashMap::new(),
                tomb_order: VecDeque::new(),
                refusals: LruCache::new(
                    NonZeroUsize::new(bounds.max_refusals).unwrap_or(NonZeroUsize::MIN),
                ),
                generation: 0,
                following: false,
            }),
            bounds,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent maps
        // (each step is a whole insert or remove): keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is known of `digest` at `now` (wall clock, milliseconds) and
    /// `at` (monotonic). `from_memory` false (the feed is stale) skips kept
    /// sessions, but never remembered refusals: a refusal stays true.
    pub fn lookup(
        &self,
        digest: &TokenDigest,
        now: Millis,
        at: Instant,
        from_memory: bool,
    ) -> Lookup {
        let mut inner = self.lock();
        if let Some((since, status)) = inner.refusals.peek(digest) {
            if at.duration_since(*since) < self.bounds.refusal_ttl {
                return Lookup::Refused(status.clone());
            }
            inner.refusals.pop(digest);
        }
        if !from_memory {
            return Lookup::Miss;
        }
        let touch_interval = self.bounds.touch_interval;
        let Some(entry) = inner.sessions.get_mut(digest) else {
            return Lookup::Miss;
        };
        if now >= entry.expires_at {
            let id = entry.session.id;
            inner.remove(digest, id);
            return Lookup::Refused(super::token_invalid());
        }
        if now >= entry.idle_until {
            return Lookup::Miss;
        }
        let touch = at >= entry.touch_at;
        if touch {
            // The touch's own answer sets the next time; until then, none.
            entry.touch_at = at + touch_interval;
        }
        Lookup::Hit {
            session: entry.session.clone(),
            touch,
        }
    }

    /// Call before asking upstream.
    pub fn begin_fill(&self) -> Fill {
        let inner = self.lock();
        Fill {
            generation: inner.generation,
            keepable: inner.following,
        }
    }

    /// An upstream answer for `digest`, read under `fill`, arriving at
    /// `now`/`at`. `keep` false answers without keeping (a session of an org
    /// this validator does not follow).
    pub fn finish_fill(
        &self,
        fill: Fill,
        digest: TokenDigest,
        session: &pb::Session,
        now: Millis,
        at: Instant,
        keep: bool,
    ) -> Admit {
        let mut inner = self.lock();
        inner.expire_tombstones(at, self.bounds.tombstone_ttl);
        if inner.tombstones.contains_key(&session.id) {
            inner.remove(&digest, session.id);
            return Admit::Ended;
        }
        if !(keep && fill.keepable && fill.generation == inner.generation) {
            return Admit::NotKept;
        }
        // Without both deadlines (an upstream older than idle_expires_at)
        // memory cannot tell when the session ends: answered, not kept.
        let (Some(expires_at), Some(idle_until)) = (
            millis_of(session.expires_at.as_ref()),
            millis_of(session.idle_expires_at.as_ref()),
        ) else {
            return Admit::NotKept;
        };
        let idle_until = idle_until.min(expires_at);
        if now >= idle_until {
            return Admit::NotKept;
        }
        // Told again within the touch interval, and at least twice per idle
        // period left, or a short idle timeout would end a session in use.
        let half_idle = Duration::from_millis(u64::try_from((idle_until - now) / 2).unwrap_or(0));
        let touch_at = at + self.bounds.touch_interval.min(half_idle);
        let bytes = entry_bytes(session);
        if let Some(old) = inner.sessions.pop(&digest) {
            inner.bytes -= old.bytes;
            inner.by_id.remove(&old.session.id);
        }
        inner.sessions.put(
            digest,
            Entry {
                session: session.clone(),
                idle_until,
                expires_at,
                touch_at,
                bytes,
            },
        );
        inner.by_id.insert(session.id, digest);
        inner.bytes += bytes;
        while inner.sessions.len() > self.bounds.max_entries || inner.bytes > self.bounds.max_bytes
        {
            let Some((_, old)) = inner.sessions.pop_lru() else {
                break;
            };
            inner.bytes -= old.bytes;
            inner.by_id.remove(&old.session.id);
        }
        Admit::Kept
    }

    /// The feed says session `id` ended.
    pub fn revoke(&self, id: i32, at: Instant) {
        let mut inner = self.lock();
        if let Some(digest) = inner.by_id.get(&id).copied() {
            inner.remove(&digest, id);
        }
        inner.expire_tombstones(at, self.bounds.tombstone_ttl);
        // Always queued: expiry skips an entry a later one replaced.
        inner.tombstones.insert(id, at);
        inner.tomb_order.push_back((at, id));
        if inner.tombstones.len() > self.bounds.max_tombstones
            || inner.tomb_order.len() > 2 * self.bounds.max_tombstones
        {
            while inner.tombstones.len() > self.bounds.max_tombstones / 2
                || inner.tomb_order.len() > self.bounds.max_tombstones
            {
                let Some((since, old)) = inner.tomb_order.pop_front() else {
                    break;
                };
                if inner.tombstones.get(&old) == Some(&since) {
                    inner.tombstones.remove(&old);
                }
            }
            // The ids forgotten may be those of answers in flight: let none
            // of those be kept.
            inner.generation += 1;
        }
    }

    /// Upstream refused `digest` with `status` (a definitive refusal).
    pub fn refuse(&self, digest: TokenDigest, status: Status, at: Instant) {
        let mut inner = self.lock();
        if let Some(id) = inner.sessions.peek(&digest).map(|e| e.session.id) {
            inner.remove(&digest, id);
        }
        inner.refusals.put(digest, (at, status));
    }

    /// Forgets every kept session and makes answers in flight unkeepable;
    /// `following` says whether answers that begin from now on may be kept.
    /// Called when the feed position was lost (out of retention), and when
    /// a fresh watch begins.
    pub fn reset(&self, following: bool) {
        let mut inner = self.lock();
        inner.sessions.clear();
        inner.by_id.clear();
        inner.bytes = 0;
        inner.generation += 1;
        inner.following = following;
    }

    /// From now on answers may be kept (the watch confirmed its position).
    pub fn follow(&self) {
        self.lock().following = true;
    }

    /// (kept sessions, their bytes, tombstones, refusals)
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let inner = self.lock();
        (
            inner.sessions.len(),
            inner.bytes,
            inner.tombstones.len(),
            inner.refusals.len(),
        )
    }
}

impl Inner {
    fn remove(&mut self, digest: &TokenDigest, id: i32) {
        if let Some(old) = self.sessions.pop(digest) {
            self.bytes -= old.bytes;
        }
        self.by_id.remove(&id);
    }

    fn expire_tombstones(&mut self, at: Instant, ttl: Duration) {
        while let Some(&(since, id)) = self.tomb_order.front() {
            if at.duration_since(since) < ttl {
                break;
            }
            self.tomb_order.pop_front();
            if self.tombstones.get(&id) == Some(&since) {
                self.tombstones.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            max_entries: 1000,
            max_bytes: 1 << 20,
            tombstone_ttl: Duration::from_secs(10),
            max_tombstones: 1000,
            refusal_ttl: Duration::from_secs(1),
            max_refusals: 100,
            touch_interval: Duration::from_secs(30),
        }
    }

    const NOW: Millis = 1_800_000_000_000;

    fn ts(ms: Millis) -> Option<prost_types::Timestamp> {
        Some(crate::grpc::convert::timestamp(ms))
    }

    fn session(id: i32) -> pb::Session {
        pb::Session {
            id,
            kind: pb::Kind::Api as i32,
            user: "alice".into(),
            org: "example.com".into(),
            expires_at: ts(NOW + 3_600_000),
            idle_expires_at: ts(NOW + 600_000),
            ..Default::default()
        }
    }

    fn digest(n: u8) -> TokenDigest {
        TokenDigest([n; 32])
    }

    fn following() -> Cache {
        let c = Cache::new(bounds());
        c.follow();
        c
    }

    fn is_hit(l: &Lookup) -> bool {
        matches!(l, Lookup::Hit { .. })
    }

    #[test]
    fn an_answer_read_before_an_ending_and_arriving_after_its_event_is_refused_and_not_kept() {
        let c = following();
        let t = Instant::now();
        // 1. the validator asks upstream; 2. upstream reads the session live;
        // 3. the session ends and its event reaches the validator;
        // 4. only then does the answer of step 2 arrive.
        let fill = c.begin_fill();
        c.revoke(7, t);
        let admit = c.finish_fill(fill, digest(1), &session(7), NOW, t, true);
        assert_eq!(admit, Admit::Ended);
        assert!(!is_hit(&c.lookup(&digest(1), NOW, t, true)));
    }

    #[test]
    fn an_event_after_the_answer_evicts_the_kept_session() {
        let c = following();
        let t = Instant::now();
        let fill = c.begin_fill();
        assert_eq!(
            c.finish_fill(fill, digest(1), &session(7), NOW, t, true),
            Admit::Kept
        );
        assert!(is_hit(&c.lookup(&digest(1), NOW, t, true)));
        c.revoke(7, t);
        assert!(matches!(c.lookup(&digest(1), NOW, t, true), Lookup::Miss));
    }

    #[test]
    fn an_answer_begun_before_a_reset_or_before_following_is_not_kept() {
        let c = Cache::new(bounds());
        let t = Instant::now();
        let before_following = c.begin_fill();
        c.follow();
        assert_eq!(
            c.finish_fill(before_following, digest(1), &session(1), NOW, t, true),
            Admit::NotKept
        );
        let before_reset = c.begin_fill();
        c.reset(true);
        assert_eq!(
            c.finish_fill(before_reset, digest(2), &session(2), NOW, t, true),
            Admit::NotKept
        );
        let after = c.begin_fill();
        assert_eq!(
            c.finish_fill(after, digest(3), &session(3), NOW, t, true),
            Admit::Kept
        );
    }

    #[test]
    fn forgetting_tombstones_makes_answers_in_flight_unkeepable() {
        let mut b = bounds();
        b.max_tombstones = 4;
        let c = Cache::new(b);
        c.follow();
        let t = Instant::now();
        let fill = c.begin_fill();
        for id in 100..110 {
            c.revoke(id, t);
        }
        // Whatever was forgotten, the answer in flight is not kept.
        let admit = c.finish_fill(fill, digest(1), &session(100), NOW, t, true);
        assert_ne!(admit, Admit::Kept);
        assert!(c.sizes().2 <= 4);
    }

    #[test]
    fn an_answer_without_an_idle_deadline_is_not_kept() {
        let c = following();
        let t = Instant::now();
        let mut s = session(1);
        s.idle_expires_at = None;
        let fill = c.begin_fill();
        assert_eq!(
            c.finish_fill(fill, digest(1), &s, NOW, t, true),
            Admit::NotKept
        );
    }

    #[test]
    fn a_repeated_ending_event_leaves_no_tombstone_behind() {
        let mut b = bounds();
        b.tombstone_ttl = Duration::from_secs(1);
        let c = Cache::new(b);
        let t = Instant::now();
        c.revoke(5, t);
        c.revoke(5, t + Duration::from_millis(500));
        c.revoke(6, t + Duration::from_secs(3));
        assert_eq!(c.sizes().2, 1, "only the last id's tombstone is left");
    }

    #[test]
    fn deadlines_are_enforced_from_memory() {
        let c = following();
        let t = Instant::now();
        let fill = c.begin_fill();
        c.finish_fill(fill, digest(1), &session(1), NOW, t, true);
        // Past the idle deadline: ask upstream (another validator may have
        // kept it in use); past the absolute one: refused.
        assert!(matches!(
            c.lookup(&digest(1), NOW + 600_000, t, true),
            Lookup::Miss
        ));
        assert!(matches!(
            c.lookup(&digest(1), NOW + 3_600_000, t, true),
            Lookup::Refused(_)
        ));
        assert_eq!(c.sizes().0, 0);
    }

    #[test]
    fn use_is_due_upstream_once_per_touch_interval() {
        let c = following();
        let t = Instant::now();
        let fill = c.begin_fill();
        c.finish_fill(fill, digest(1), &session(1), NOW, t, true);
        let touch = |at| match c.lookup(&digest(1), NOW, at, true) {
            Lookup::Hit { touch, .. } => touch,
            other => panic!("{other:?}"),
        };
        assert!(!touch(t));
        let later = t + Duration::from_secs(31);
        assert!(touch(later));
        assert!(!touch(later), "one touch per interval");
    }

    #[test]
    fn refusals_are_remembered_briefly_and_even_when_stale() {
        let c = following();
        let t = Instant::now();
        c.refuse(digest(9), super::super::token_invalid(), t);
        assert!(matches!(
            c.lookup(&digest(9), NOW, t, false),
            Lookup::Refused(_)
        ));
        let later = t + Duration::from_secs(2);
        assert!(matches!(
            c.lookup(&digest(9), NOW, later, false),
            Lookup::Miss
        ));
    }

    #[test]
    fn a_stale_feed_answers_nothing_from_memory() {
        let c = following();
        let t = Instant::now();
        let fill = c.begin_fill();
        c.finish_fill(fill, digest(1), &session(1), NOW, t, true);
        assert!(matches!(c.lookup(&digest(1), NOW, t, false), Lookup::Miss));
    }

    #[test]
    fn entries_and_bytes_stay_within_their_bounds() {
        let mut b = bounds();
        b.max_entries = 50;
        let c = Cache::new(b);
        c.follow();
        let t = Instant::now();
        for n in 0..200u32 {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&n.to_be_bytes());
            let fill = c.begin_fill();
            c.finish_fill(fill, TokenDigest(d), &session(n as i32), NOW, t, true);
        }
        assert_eq!(c.sizes().0, 50);
        let per = entry_bytes(&session(1));
        let mut b = bounds();
        b.max_bytes = per * 10;
        let c = Cache::new(b);
        c.follow();
        for n in 0..200u32 {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&n.to_be_bytes());
            let fill = c.begin_fill();
            c.finish_fill(fill, TokenDigest(d), &session(n as i32), NOW, t, true);
        }
        let (entries, bytes, _, _) = c.sizes();
        assert_eq!(entries, 10);
        assert!(bytes <= per * 10);
    }
}
