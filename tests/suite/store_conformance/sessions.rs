//! The store conformance cases of sessions: found by digest while live, use, one ending, listing, the cap.

use super::*;

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

every_backend!(
    sessions_are_found_by_digest_while_live,
    touch_moves_the_idle_deadline_forward_only,
    ending_one_session_records_one_event,
    listing_pages_live_sessions_of_one_org,
    the_session_cap_ends_the_oldest_for_real,
);
