//! One conformance suite for the `Store` trait, run against every backend:
//! SQLite in memory, SQLite on a file, Redis (a private redis-server) and a
//! Redis Cluster (six private redis-servers, one cluster per test).
//! Times are passed explicitly, so expiry is tested by moving `now`, not by
//! sleeping.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sessiond::domain::{
    Actor, Audit, AuthFailure, ClientInfo, EndReason, Error, Kind, Millis, NewSession, NewUser,
    Role, Token, TokenDigest,
};
use sessiond::sessions::now_millis;
use sessiond::store::{self, EndTarget, ListQuery, Scope, Store, StoreUrl};

type Guard = Box<dyn Any + Send>;

async fn sqlite_memory() -> (Arc<dyn Store>, Guard) {
    (
        store::open(&StoreUrl::SqliteMemory).await.unwrap(),
        Box::new(()),
    )
}

async fn sqlite_file() -> (Arc<dyn Store>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let s = store::open(&StoreUrl::SqliteFile(dir.path().join("c.db")))
        .await
        .unwrap();
    (s, Box::new(dir))
}

async fn redis() -> (Arc<dyn Store>, Guard) {
    let server = crate::support::RedisServer::start();
    let s = store::open(&StoreUrl::Redis(server.url())).await.unwrap();
    (s, Box::new(server))
}

/// A private cluster for each test, stopped when the test's guard drops (a
/// cluster kept in a static would outlive the test process: statics are
/// never dropped, and its six servers would be left running).
async fn redis_cluster() -> (Arc<dyn Store>, Guard) {
    let cluster = tokio::task::spawn_blocking(crate::support::RedisCluster::start)
        .await
        .unwrap();
    let s = store::open(&StoreUrl::RedisCluster(cluster.url()))
        .await
        .unwrap();
    (s, Box::new(cluster))
}

/// Orgs of the users made by [`user`], so sessions get tokens for their org.
static ORGS: std::sync::Mutex<Vec<(usize, i64, String)>> = std::sync::Mutex::new(Vec::new());

fn store_id(s: &Arc<dyn Store>) -> usize {
    Arc::as_ptr(s) as *const () as usize
}

fn org_of(s: &Arc<dyn Store>, uid: i64) -> String {
    ORGS.lock()
        .unwrap()
        .iter()
        .find(|(st, u, _)| *st == store_id(s) && *u == uid)
        .map(|(_, _, o)| o.clone())
        .expect("a user made by user()")
}

/// The event log of example.com (where these tests' events go).
fn log(s: &Arc<dyn Store>) -> u16 {
    s.shard_of("example.com")
}

/// The audit line of the endings made by these tests.
fn audit() -> Audit {
    Audit {
        actor: Actor::user("tester@example.com", Some(7)),
        target: "test".into(),
    }
}

const MIN: Millis = 60_000;
const HOUR: Millis = 60 * MIN;

async fn user(s: &Arc<dyn Store>, name: &str, org: &str, role: Role) -> i64 {
    let id = s
        .create_user(NewUser {
            username: name.into(),
            org: org.into(),
            role,
            password_hash: format!("hash-of-{name}"),
            now: now_millis(),
        })
        .await
        .unwrap()
        .id;
    ORGS.lock().unwrap().push((store_id(s), id, org.into()));
    id
}

/// A LogoutAll of example.com's API sessions at `now`; how many it ended.
async fn logout_all(s: &Arc<dyn Store>, now: Millis) -> u32 {
    s.end_sessions(
        Scope::Org("example.com".into()),
        &[Kind::Api],
        EndReason::LogoutAll,
        now,
        &audit(),
    )
    .await
    .unwrap()
}

/// Ends every API session of user `uid` at `now` (as an admin's
/// LogoffOther of them all); how many it ended.
async fn end_user(s: &Arc<dyn Store>, uid: i64, now: Millis) -> u32 {
    s.end_sessions(
        Scope::User(uid),
        &[Kind::Api],
        EndReason::LogoffOther,
        now,
        &audit(),
    )
    .await
    .unwrap()
}

/// Opens a session at `now` (30 min idle, 12 h lifetime); returns (id, digest).
async fn open(s: &Arc<dyn Store>, uid: i64, kind: Kind, now: Millis) -> (i32, TokenDigest) {
    let digest = Token::generate_for_org(&org_of(s, uid)).unwrap().digest();
    let session = s
        .create_session(NewSession {
            digest,
            kind,
            user_id: uid,
            now,
            idle_deadline: now + 30 * MIN,
            expires_at: now + 12 * HOUR,
            client: ClientInfo {
                address: Some("192.0.2.1".into()),
                user_agent: None,
                peer_address: Some("198.51.100.4".into()),
            },
        })
        .await
        .unwrap();
    (session.id, digest)
}

/// The events of example.com's log after `before`, once `n` of them are
/// there (bulk endings record theirs in the background), and a moment more
/// for any that should not be.
async fn events_after(
    s: &Arc<dyn Store>,
    before: u64,
    n: usize,
) -> Vec<sessiond::domain::Revocation> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.last_sequence(log(s)).await.unwrap() < before + n as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the events never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.revocations_after(log(s), before, 10_000).await.unwrap()
}

async fn live(s: &Arc<dyn Store>, d: &TokenDigest, now: Millis) -> bool {
    s.find_live_session(d, now).await.unwrap().is_some()
}

async fn users_are_unique_and_listed(s: Arc<dyn Store>) {
    let a = user(&s, "ann@example.com", "example.com", Role::Admin).await;
    let b = user(&s, "bob@example.com", "example.com", Role::User).await;
    assert_ne!(a, b);
    let dup = s
        .create_user(NewUser {
            username: "ann@example.com".into(),
            org: "x".into(),
            role: Role::User,
            password_hash: "h".into(),
            now: 0,
        })
        .await;
    assert_eq!(dup.unwrap_err(), Error::AlreadyExists);
    let ann = s.find_user("ann@example.com").await.unwrap().unwrap();
    assert_eq!(
        (ann.user.id, ann.user.role, ann.user.disabled),
        (a, Role::Admin, false)
    );
    assert_eq!(ann.password_hash, "hash-of-ann@example.com");
    assert!(s.find_user("nobody@example.com").await.unwrap().is_none());
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, vec!["ann@example.com", "bob@example.com"]);
    assert!(s
        .set_password("ann@example.com", "new".into())
        .await
        .unwrap());
    assert_eq!(
        s.find_user("ann@example.com")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "new"
    );
    assert!(!s
        .set_password("nobody@example.com", "x".into())
        .await
        .unwrap());
}

async fn sessions_are_found_by_digest_while_live(s: Arc<dyn Store>) {
    let uid = user(&s, "ann@example.com", "example.com", Role::Admin).await;
    let now = now_millis();
    let (id1, d1) = open(&s, uid, Kind::Api, now).await;
    let (id2, _) = open(&s, uid, Kind::Imap, now).await;
    assert!(id1 > 0 && id2 > id1, "positive, increasing ids");
    let found = s.find_live_session(&d1, now).await.unwrap().unwrap();
    assert_eq!((found.id, found.kind, found.user_id), (id1, Kind::Api, uid));
    assert_eq!(
        (found.username.as_str(), found.org.as_str()),
        ("ann@example.com", "example.com")
    );
    assert_eq!(found.role, Role::Admin);
    assert_eq!(found.client.address.as_deref(), Some("192.0.2.1"));
    // The address the server saw is kept apart from the reported one.
    assert_eq!(found.client.peer_address.as_deref(), Some("198.51.100.4"));
    assert_eq!(found.client.user_agent, None);
    assert!(!live(&s, &Token::generate().unwrap().digest(), now).await);
    // Idle deadline and absolute expiry.
    assert!(live(&s, &d1, now + 30 * MIN - 1).await);
    assert!(!live(&s, &d1, now + 30 * MIN).await);
}

async fn touch_moves_the_idle_deadline_forward_only(s: Arc<dyn Store>) {
    let uid = user(&s, "ann@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let (id, d) = open(&s, uid, Kind::Api, now).await;
    s.touch_session(id, now + 20 * MIN, now + 50 * MIN)
        .await
        .unwrap();
    let found = s
        .find_live_session(&d, now + 40 * MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.last_seen_at, now + 20 * MIN);
    assert_eq!(found.idle_deadline, now + 50 * MIN);
    s.touch_session(id, now + 21 * MIN, now + 45 * MIN)
        .await
        .unwrap();
    assert!(live(&s, &d, now + 49 * MIN).await, "never backwards");
    // A session already past its idle deadline is not revived.
    s.touch_session(id, now + 51 * MIN, now + 80 * MIN)
        .await
        .unwrap();
    assert!(!live(&s, &d, now + 52 * MIN).await);
    // Nor past its absolute expiry.
    assert!(!live(&s, &d, now + 13 * HOUR).await);
}

async fn disabled_users_lose_sessions_and_cannot_open_new_ones(s: Arc<dyn Store>) {
    let uid = user(&s, "bob@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let (_, d) = open(&s, uid, Kind::Imap, now).await;
    let before = s.last_sequence(log(&s)).await.unwrap();
    assert!(s
        .set_disabled("bob@example.com", true, now, &Actor::operator())
        .await
        .unwrap());
    assert!(!live(&s, &d, now).await);
    let events = s.revocations_after(log(&s), before, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, EndReason::LogoffOther);
    let refused = s
        .create_session(NewSession {
            digest: Token::generate_for_org("example.com").unwrap().digest(),
            kind: Kind::Api,
            user_id: uid,
            now,
            idle_deadline: now + MIN,
            expires_at: now + HOUR,
            client: ClientInfo::default(),
        })
        .await;
    assert_eq!(
        refused.unwrap_err(),
        Error::Unauthenticated(AuthFailure::BadCredentials)
    );
    assert!(s
        .set_disabled("bob@example.com", false, now, &Actor::operator())
        .await
        .unwrap());
    open(&s, uid, Kind::Api, now).await;
    assert!(!s
        .set_disabled("nobody@example.com", true, now, &Actor::operator())
        .await
        .unwrap());
}

async fn ending_one_session_records_one_event(s: Arc<dyn Store>) {
    let uid = user(&s, "ann@example.com", "example.com", Role::Admin).await;
    let now = now_millis();
    let (id, d) = open(&s, uid, Kind::Admin, now).await;
    let before = s.last_sequence(log(&s)).await.unwrap();
    let target = |org: Option<&str>, kind: Option<Kind>| EndTarget {
        id,
        org: org.map(str::to_owned),
        kind,
    };
    // Filters that do not match leave it alone.
    assert!(s
        .end_session(
            target(Some("other.org"), None),
            EndReason::LogoffOther,
            now,
            &audit()
        )
        .await
        .unwrap()
        .is_none());
    assert!(s
        .end_session(
            target(None, Some(Kind::Api)),
            EndReason::LogoffOther,
            now,
            &audit()
        )
        .await
        .unwrap()
        .is_none());
    assert!(live(&s, &d, now).await);
    let ended = s
        .end_session(
            target(Some("example.com"), Some(Kind::Admin)),
            EndReason::LogoffOther,
            now + 5,
            &audit(),
        )
        .await
        .unwrap()
        .expect("ended");
    assert_eq!(ended.id, id);
    assert!(!live(&s, &d, now).await);
    assert!(s
        .end_session(target(None, None), EndReason::Logoff, now, &audit())
        .await
        .unwrap()
        .is_none());
    let events = s.revocations_after(log(&s), before, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.session_id, e.kind, e.reason, e.at),
        (id, Kind::Admin, EndReason::LogoffOther, now + 5)
    );
    assert_eq!(
        (e.username.as_str(), e.org.as_str()),
        ("ann@example.com", "example.com")
    );
    assert_eq!(e.sequence, before + 1);
    assert_eq!(s.last_sequence(log(&s)).await.unwrap(), before + 1);
}

async fn bulk_endings_take_exactly_their_scope(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let amy = user(&s, "amy@example.com", "example.com", Role::User).await;
    let zed = user(&s, "zed@company.com", "company.com", Role::User).await;
    let now = now_millis();
    let (_, joe_imap) = open(&s, joe, Kind::Imap, now).await;
    let (_, joe_pop) = open(&s, joe, Kind::Pop, now).await;
    let (_, joe_api) = open(&s, joe, Kind::Api, now).await;
    let (_, amy_imap) = open(&s, amy, Kind::Imap, now).await;
    let (_, amy_api) = open(&s, amy, Kind::Api, now).await;
    let (_, zed_api) = open(&s, zed, Kind::Api, now).await;
    // An expired, not yet swept session is not counted (the sweeper ends it).
    let (_, joe_old) = open(&s, joe, Kind::Imap, now - 40 * MIN).await;

    let n = s
        .end_sessions(
            Scope::User(joe),
            &Kind::MAIL,
            EndReason::LogoutUser,
            now,
            &audit(),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(!live(&s, &joe_imap, now).await && !live(&s, &joe_pop, now).await);
    assert!(live(&s, &joe_api, now).await && live(&s, &amy_imap, now).await);
    assert!(!live(&s, &joe_old, now).await);

    let n = logout_all(&s, now).await;
    assert_eq!(n, 2);
    assert!(!live(&s, &joe_api, now).await && !live(&s, &amy_api, now).await);
    assert!(live(&s, &amy_imap, now).await && live(&s, &zed_api, now).await);
    let again = logout_all(&s, now).await;
    assert_eq!(again, 0);
}

async fn listing_pages_live_sessions_of_one_org(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let amy = user(&s, "amy@example.com", "example.com", Role::Admin).await;
    let zed = user(&s, "zed@company.com", "company.com", Role::User).await;
    let now = now_millis();
    let mut expected = Vec::new();
    for i in 0..5 {
        let kind = if i % 2 == 0 { Kind::Api } else { Kind::Imap };
        expected.push(open(&s, joe, kind, now).await.0);
        expected.push(open(&s, amy, Kind::Admin, now).await.0);
    }
    open(&s, zed, Kind::Api, now).await;
    let (gone, _) = open(&s, joe, Kind::Pop, now).await;
    s.end_session(
        EndTarget {
            id: gone,
            org: None,
            kind: None,
        },
        EndReason::Logoff,
        now,
        &audit(),
    )
    .await
    .unwrap();
    open(&s, joe, Kind::Pop, now - 40 * MIN).await; // expired

    let query = |user: Option<&str>, kind: Option<Kind>, after_id: i32, limit: usize| ListQuery {
        org: "example.com".into(),
        username: user.map(str::to_owned),
        kind,
        after_id,
        limit,
    };
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = s
            .list_sessions(query(None, None, after, 3), now)
            .await
            .unwrap();
        all.extend(page.iter().map(|x| x.id));
        match page.last() {
            Some(last) if page.len() == 3 => after = last.id,
            _ => break,
        }
    }
    assert_eq!(all, expected, "every live session once, in id order");
    let joes = s
        .list_sessions(query(Some("joe@example.com"), None, 0, 100), now)
        .await
        .unwrap();
    assert_eq!(joes.len(), 5);
    assert!(joes.iter().all(|x| x.username == "joe@example.com"));
    let admins = s
        .list_sessions(query(None, Some(Kind::Admin), 0, 100), now)
        .await
        .unwrap();
    assert_eq!(admins.len(), 5);
    let zeds = s
        .list_sessions(query(Some("zed@company.com"), None, 0, 100), now)
        .await
        .unwrap();
    assert!(zeds.is_empty(), "another org's user is not listed");
}

async fn sweeping_ends_expired_sessions_and_purges_old_events(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let (a, da) = open(&s, joe, Kind::Imap, now).await;
    let (_, db) = open(&s, joe, Kind::Api, now).await;
    s.touch_session(a, now + 20 * MIN, now + 50 * MIN)
        .await
        .unwrap();
    let before = s.last_sequence(log(&s)).await.unwrap();
    // At +40 min, b is past its idle deadline; a (touched) is not.
    let r = s.sweep(now + 40 * MIN, 0, 0).await.unwrap();
    assert_eq!(r.expired, 1);
    assert!(live(&s, &da, now + 40 * MIN).await);
    assert!(!live(&s, &db, now).await, "swept sessions stay ended");
    let events = s.revocations_after(log(&s), before, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec![EndReason::Expired]
    );
    // Purge events older than +45 min: the cursor before them is now expired.
    let r = s.sweep(now + 41 * MIN, now + 45 * MIN, 0).await.unwrap();
    assert!(r.purged >= 1);
    let err = s.revocations_after(log(&s), 0, 10).await.unwrap_err();
    assert!(
        matches!(err, Error::CursorExpired { oldest, .. } if oldest == before + 1),
        "{err:?}"
    );
    assert!(s
        .revocations_after(log(&s), before + 1, 10)
        .await
        .unwrap()
        .is_empty());
    // Sequences keep increasing after a purge.
    s.end_session(
        EndTarget {
            id: a,
            org: None,
            kind: None,
        },
        EndReason::Logoff,
        now,
        &audit(),
    )
    .await
    .unwrap();
    let after = s.revocations_after(log(&s), before + 1, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].sequence, before + 2);
}

async fn events_page_in_order(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    for _ in 0..7 {
        let (id, _) = open(&s, joe, Kind::Api, now).await;
        s.end_session(
            EndTarget {
                id,
                org: None,
                kind: None,
            },
            EndReason::Logoff,
            now,
            &audit(),
        )
        .await
        .unwrap();
    }
    let first = s.revocations_after(log(&s), 0, 4).await.unwrap();
    let rest = s
        .revocations_after(log(&s), first[3].sequence, 4)
        .await
        .unwrap();
    let seqs: Vec<u64> = first.iter().chain(&rest).map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(s.last_sequence(log(&s)).await.unwrap(), 7);
}

/// A bulk ending bigger than one of its steps (Redis packs a step's events
/// into one stream entry): read in pages of odd sizes, which end inside a
/// step, every event comes once, in sequence order, one per session.
async fn a_bulk_ending_s_events_page_each_once(s: Arc<dyn Store>) {
    const N: usize = 450;
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let before = s.last_sequence(log(&s)).await.unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..N {
        ids.insert(open(&s, joe, Kind::Api, now).await.0);
    }
    let n = logout_all(&s, now).await;
    assert_eq!(n as usize, N);
    // The events may follow the acknowledgement (they do on Redis).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.last_sequence(log(&s)).await.unwrap() < before + N as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the events never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = Vec::new();
    let mut after = before;
    for page in [1usize, 7, 199, 3, 250, 500].iter().cycle() {
        let events = s.revocations_after(log(&s), after, *page).await.unwrap();
        assert!(
            events.len() <= *page,
            "{} events for a page of {page}",
            events.len()
        );
        let Some(last) = events.last() else { break };
        after = last.sequence;
        seen.extend(events);
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (before + 1..=before + N as u64).collect::<Vec<_>>());
    let ended: BTreeSet<i32> = seen.iter().map(|e| e.session_id).collect();
    assert_eq!(ended, ids);
    assert!(seen.iter().all(|e| e.reason == EndReason::LogoutAll
        && e.kind == Kind::Api
        && e.org == "example.com"));
}

/// A user's ending right after its org's LogoutAll (which Redis may still
/// be carrying out behind its fence) counts only the sessions it ends
/// itself, not the ones the LogoutAll ended; each session has one event.
async fn an_ending_does_not_count_what_an_earlier_one_ended(s: Arc<dyn Store>) {
    const API: usize = 300;
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let before = s.last_sequence(log(&s)).await.unwrap();
    for _ in 0..API {
        open(&s, joe, Kind::Api, now).await;
    }
    let (imap, _) = open(&s, joe, Kind::Imap, now).await;
    let all = logout_all(&s, now).await;
    let mine = s
        .end_sessions(
            Scope::User(joe),
            &[Kind::Api, Kind::Imap],
            EndReason::LogoffOther,
            now,
            &audit(),
        )
        .await
        .unwrap();
    assert_eq!((all as usize, mine), (API, 1));
    let events = events_after(&s, before, API + 1).await;
    assert_eq!(events.len(), API + 1, "one event per session");
    let imap_events: Vec<_> = events.iter().filter(|e| e.session_id == imap).collect();
    assert_eq!(imap_events.len(), 1);
    assert_eq!(imap_events[0].reason, EndReason::LogoffOther);
}

/// Opens `n` API sessions of `joe` and 3 of `ann` at `now`, then ends all
/// of joe's (too many to finish before the acknowledgement); what that
/// ending counted.
async fn end_a_users_sessions(
    s: &Arc<dyn Store>,
    (joe, n): (i64, usize),
    ann: i64,
    now: Millis,
) -> u32 {
    for _ in 0..n {
        open(s, joe, Kind::Api, now).await;
    }
    for _ in 0..3 {
        open(s, ann, Kind::Api, now).await;
    }
    end_user(s, joe, now).await
}

/// The other order: a user's ending, still being carried out (too big to
/// finish before its acknowledgement), then a LogoutAll of the user's org.
/// The LogoutAll counts only what the user's ending did not.
async fn an_org_ending_does_not_count_what_a_user_ending_still_removing_ended(s: Arc<dyn Store>) {
    const API: usize = 600;
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let ann = user(&s, "ann@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let before = s.last_sequence(log(&s)).await.unwrap();
    let mine = end_a_users_sessions(&s, (joe, API), ann, now).await;
    let all = logout_all(&s, now).await;
    assert_eq!((mine as usize, all), (API, 3));
    let events = events_after(&s, before, API + 3).await;
    assert_eq!(events.len(), API + 3, "one event per session");
    let ids: BTreeSet<i32> = events.iter().map(|e| e.session_id).collect();
    assert_eq!(ids.len(), API + 3, "no session ended twice");
    // The audit trail agrees: 600 by the user's ending, 3 by the LogoutAll.
    let records = s.list_audit("example.com", 0, 100).await.unwrap();
    let ended: Vec<u32> = records.iter().rev().take(2).map(|r| r.ended).collect();
    assert_eq!(ended, [3, API as u32]);
}

/// Users' endings and a LogoutAll of their org, all at once: whatever the
/// interleaving, the counts they return add up to the sessions ended, each
/// with one event.
async fn overlapping_endings_count_each_session_once(s: Arc<dyn Store>) {
    const USERS: usize = 4;
    const EACH: usize = 200;
    let now = now_millis();
    let mut users = Vec::new();
    for i in 0..USERS {
        let uid = user(&s, &format!("u{i}@example.com"), "example.com", Role::User).await;
        for _ in 0..EACH {
            open(&s, uid, Kind::Api, now).await;
        }
        users.push(uid);
    }
    let before = s.last_sequence(log(&s)).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for uid in users {
        let s = s.clone();
        calls.spawn(async move { end_user(&s, uid, now).await });
    }
    let all = s.clone();
    calls.spawn(async move { logout_all(&all, now).await });
    let mut counted = 0;
    while let Some(n) = calls.join_next().await {
        counted += n.unwrap() as usize;
    }
    assert_eq!(counted, USERS * EACH, "the counts add up to the sessions");
    let events = events_after(&s, before, USERS * EACH).await;
    let ids: BTreeSet<i32> = events.iter().map(|e| e.session_id).collect();
    assert_eq!(
        (events.len(), ids.len()),
        (USERS * EACH, USERS * EACH),
        "one event per session"
    );
}

async fn waiting_wakes_on_a_new_event_and_times_out_otherwise(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let (id, _) = open(&s, joe, Kind::Api, now).await;
    let last = s.last_sequence(log(&s)).await.unwrap();
    let started = std::time::Instant::now();
    s.wait_for_revocation(&[(log(&s), last)], Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "nothing new: waits out the timeout"
    );
    let ender = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.end_session(
                EndTarget {
                    id,
                    org: None,
                    kind: None,
                },
                EndReason::Logoff,
                now,
                &audit(),
            )
            .await
            .unwrap();
        })
    };
    let started = std::time::Instant::now();
    s.wait_for_revocation(&[(log(&s), last)], Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken by the ending, not the timeout"
    );
    ender.await.unwrap();
    assert_eq!(s.last_sequence(log(&s)).await.unwrap(), last + 1);
}

/// Logins race a LogoutAll of their org: every session created before the
/// ending began is gone after it returns.
async fn a_bulk_ending_leaves_nothing_created_before_it(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut creators = Vec::new();
    for _ in 0..4 {
        let (s, stop) = (s.clone(), stop.clone());
        creators.push(tokio::spawn(async move {
            let mut made = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, d) = open(&s, joe, Kind::Api, now).await;
                made.push((std::time::Instant::now(), d));
            }
            made
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let began = std::time::Instant::now();
    logout_all(&s, now).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut before = 0;
    let mut survivors = BTreeSet::new();
    for c in creators {
        for (created, d) in c.await.unwrap() {
            let alive = live(&s, &d, now).await;
            if created < began {
                before += 1;
                assert!(!alive, "a session created before the LogoutAll survived it");
            } else if alive {
                survivors.insert(d.0);
            }
        }
    }
    assert!(before > 0, "the race produced sessions before the ending");
}

async fn every_ending_call_leaves_one_audit_record(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let zed = user(&s, "zed@company.com", "company.com", Role::User).await;
    let now = now_millis();
    let (a, _) = open(&s, joe, Kind::Admin, now).await;
    open(&s, joe, Kind::Imap, now).await;
    open(&s, joe, Kind::Pop, now).await;
    open(&s, zed, Kind::Api, now - 40 * MIN).await; // expires
    let by = |name: &str, sid: Option<i32>, target: &str| Audit {
        actor: Actor::user(name, sid),
        target: target.into(),
    };
    let one = EndTarget {
        id: a,
        org: None,
        kind: None,
    };
    s.end_session(
        one.clone(),
        EndReason::LogoffOther,
        now + 1,
        &by("ann", Some(3), &format!("session:{a}")),
    )
    .await
    .unwrap()
    .unwrap();
    // Nothing matched: nothing happened, nothing recorded.
    assert!(s
        .end_session(
            one,
            EndReason::LogoffOther,
            now + 2,
            &by("ann", Some(3), "x")
        )
        .await
        .unwrap()
        .is_none());
    s.end_sessions(
        Scope::User(joe),
        &Kind::MAIL,
        EndReason::LogoutUser,
        now + 3,
        &by("ann", None, "mailbox:joe@example.com"),
    )
    .await
    .unwrap();
    // A call that ends nothing leaves no record (a flood of them would
    // otherwise write one durable row each).
    s.end_sessions(
        Scope::Org("example.com".into()),
        &[Kind::Api],
        EndReason::LogoutAll,
        now + 4,
        &by("joe@example.com", None, "org:example.com"),
    )
    .await
    .unwrap();
    s.set_disabled("joe@example.com", true, now + 5, &Actor::operator())
        .await
        .unwrap();
    s.sweep(now + 6, 0, 0).await.unwrap();

    let records = s.list_audit("example.com", 0, 100).await.unwrap();
    let got: Vec<(String, Option<i32>, EndReason, String, u32, Millis)> = records
        .iter()
        .map(|r| {
            (
                r.actor.clone(),
                r.actor_session_id,
                r.reason,
                r.target.clone(),
                r.ended,
                r.at,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "ann".into(),
                Some(3),
                EndReason::LogoffOther,
                format!("session:{a}"),
                1,
                now + 1
            ),
            (
                "ann".into(),
                None,
                EndReason::LogoutUser,
                "mailbox:joe@example.com".into(),
                2,
                now + 3
            ),
            (
                "operator".into(),
                None,
                EndReason::LogoffOther,
                "user:joe@example.com".into(),
                0,
                now + 5
            ),
        ]
    );
    assert!(records.windows(2).all(|w| w[0].id < w[1].id));
    assert!(records.iter().all(|r| r.org == "example.com"));
    // The expiry sweep is recorded per org, by `system`.
    let company = s.list_audit("company.com", 0, 100).await.unwrap();
    assert_eq!(company.len(), 1);
    assert_eq!(
        (
            company[0].actor.as_str(),
            company[0].reason,
            company[0].ended
        ),
        ("system", EndReason::Expired, 1)
    );
    // Paging, and purging by age.
    let page = s.list_audit("example.com", records[0].id, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![records[1].id, records[2].id]
    );
    s.sweep(now + 7, 0, now + 4).await.unwrap();
    let kept = s.list_audit("example.com", 0, 100).await.unwrap();
    assert_eq!(kept.iter().map(|r| r.at).collect::<Vec<_>>(), vec![now + 5]);
}

async fn the_session_cap_ends_the_oldest_for_real(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let ann = user(&s, "ann@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let (_, ann_digest) = open(&s, ann, Kind::Api, now).await;
    let mut old = Vec::new();
    for kind in [Kind::Imap, Kind::Api, Kind::Pop] {
        old.push(open(&s, joe, kind, now).await);
    }
    let after = s.last_sequence(log(&s)).await.unwrap();
    let new = |s: &Arc<dyn Store>| NewSession {
        digest: Token::generate_for_org(&org_of(s, joe)).unwrap().digest(),
        kind: Kind::Api,
        user_id: joe,
        now,
        idle_deadline: now + 30 * MIN,
        expires_at: now + 12 * HOUR,
        client: ClientInfo::default(),
    };
    // No cap: nothing ends.
    let (uncapped, ended) = s.create_session_capped(new(&s), 0).await.unwrap();
    assert_eq!(ended, 0);
    let n = new(&s);
    let digest = n.digest;
    let (made, ended) = s.create_session_capped(n, 3).await.unwrap();
    assert_eq!(ended, 2, "five live, cap three: the two oldest end");
    assert!(!live(&s, &old[0].1, now).await);
    assert!(!live(&s, &old[1].1, now).await);
    assert!(live(&s, &old[2].1, now).await);
    assert!(live(&s, &digest, now).await, "the new session lives");
    assert!(
        live(&s, &ann_digest, now).await,
        "another user is untouched"
    );
    let events = s.revocations_after(log(&s), after, 10).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.session_id, e.reason))
            .collect::<Vec<_>>(),
        vec![
            (old[0].0, EndReason::SessionLimit),
            (old[1].0, EndReason::SessionLimit)
        ]
    );
    let records = s.list_audit("example.com", 0, 100).await.unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| (r.actor.as_str(), r.reason, r.target.clone(), r.ended))
            .collect::<Vec<_>>(),
        vec![
            (
                "system",
                EndReason::SessionLimit,
                format!("session:{}", old[0].0),
                1
            ),
            (
                "system",
                EndReason::SessionLimit,
                format!("session:{}", old[1].0),
                1
            ),
        ]
    );
    assert!(made.id > uncapped.id);
}

macro_rules! conformance {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _guard) = super::$backend().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        conformance!(sqlite_memory: $($name),*);
        conformance!(sqlite_file: $($name),*);
        conformance!(redis: $($name),*);
        conformance!(redis_cluster: $($name),*);
    };
}

every_backend!(
    users_are_unique_and_listed,
    sessions_are_found_by_digest_while_live,
    touch_moves_the_idle_deadline_forward_only,
    disabled_users_lose_sessions_and_cannot_open_new_ones,
    ending_one_session_records_one_event,
    bulk_endings_take_exactly_their_scope,
    listing_pages_live_sessions_of_one_org,
    sweeping_ends_expired_sessions_and_purges_old_events,
    events_page_in_order,
    a_bulk_ending_s_events_page_each_once,
    an_ending_does_not_count_what_an_earlier_one_ended,
    an_org_ending_does_not_count_what_a_user_ending_still_removing_ended,
    overlapping_endings_count_each_session_once,
    waiting_wakes_on_a_new_event_and_times_out_otherwise,
    a_bulk_ending_leaves_nothing_created_before_it,
    every_ending_call_leaves_one_audit_record,
    the_session_cap_ends_the_oldest_for_real,
);

/// A user's ending queued by an older build (its pending value does not name
/// the user's org) and still being carried out: a LogoutAll of the org made
/// now counts only what that ending did not. Redis only: the queue is its
/// own. The older replica's lease is imitated to keep the ending queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_user_ending_queued_by_an_older_build_is_not_counted_again() {
    const API: usize = 300;
    let (s, server) = redis().await;
    let server = server
        .downcast::<crate::support::RedisServer>()
        .expect("a redis-server");
    let mut raw = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let ann = user(&s, "ann@example.com", "example.com", Role::User).await;
    let tag = format!("{{sessiond:{}}}", s.shard_of("example.com"));
    let index = format!("{tag}:lu:API:{joe}");
    let pending = format!("{tag}:pending");
    let _: () = ::redis::cmd("SET")
        .arg(format!("{tag}:lease:lu:API:{joe}"))
        .arg("a replica of the older build")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut raw)
        .await
        .unwrap();
    let now = now_millis();
    let before = s.last_sequence(log(&s)).await.unwrap();
    let mine = end_a_users_sessions(&s, (joe, API), ann, now).await;
    assert_eq!(mine as usize, API);
    // The value as the older build wrote it: watermark, reason, time,
    // spared id; no org.
    let value: String = ::redis::cmd("HGET")
        .arg(&pending)
        .arg(&index)
        .query_async(&mut raw)
        .await
        .expect("the user's ending is still queued");
    let (old, org) = value.rsplit_once('\u{1f}').unwrap();
    assert_eq!(org, "example.com");
    let _: () = ::redis::cmd("HSET")
        .arg(&pending)
        .arg(&index)
        .arg(old)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(logout_all(&s, now).await, 3, "joe's sessions counted once");
    // The older replica goes away; the next sweep carries the ending out.
    let _: () = ::redis::cmd("DEL")
        .arg(format!("{tag}:lease:lu:API:{joe}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    s.sweep(now, 0, 0).await.unwrap();
    let events = events_after(&s, before, API + 3).await;
    let ids: BTreeSet<i32> = events.iter().map(|e| e.session_id).collect();
    assert_eq!(
        (events.len(), ids.len()),
        (API + 3, API + 3),
        "one event per session"
    );
    let records = s.list_audit("example.com", 0, 100).await.unwrap();
    let ended: Vec<u32> = records.iter().rev().take(2).map(|r| r.ended).collect();
    assert_eq!(ended, [3, API as u32]);
}
