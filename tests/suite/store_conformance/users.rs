//! The store conformance cases of users: unique names, listing, disabling.

use super::*;

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

every_backend!(
    users_are_unique_and_listed,
    disabled_users_lose_sessions_and_cannot_open_new_ones,
);
