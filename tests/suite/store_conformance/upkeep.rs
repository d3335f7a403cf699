//! The store conformance cases of upkeep: the expiry sweep and retention.

use super::*;

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

every_backend!(sweeping_ends_expired_sessions_and_purges_old_events,);
