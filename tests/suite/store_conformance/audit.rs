//! The store conformance cases of the audit trail: one record per ending call that ended anything.

use super::*;

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

every_backend!(every_ending_call_leaves_one_audit_record,);
