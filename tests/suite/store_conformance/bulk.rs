//! The store conformance cases of bulk endings: their scope, their counts when they overlap, and nothing created before one surviving it.

use super::*;

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

every_backend!(
    bulk_endings_take_exactly_their_scope,
    an_ending_does_not_count_what_an_earlier_one_ended,
    an_org_ending_does_not_count_what_a_user_ending_still_removing_ended,
    overlapping_endings_count_each_session_once,
    a_bulk_ending_leaves_nothing_created_before_it,
);
