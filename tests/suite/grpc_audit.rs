//! The audit trail over gRPC: every ending call is recorded (actor, the
//! actor's session, reason, target, count, time), an admin reads its own
//! org's records, and nobody else reads them.

use crate::support::*;
use sessiond::pb::{self, credentials::Secret, EndReason, Kind};
use tonic::{Code, Request};

fn page(size: i32, token: &str) -> pb::ListAuditRecordsRequest {
    pb::ListAuditRecordsRequest {
        page_size: size,
        page_token: token.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_read_who_ended_what_in_their_org() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, admin_s) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (_, other_console) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    login(&mut c, JOE, Kind::Imap).await;
    login(&mut c, JOE, Kind::Pop).await;
    let (joe_api, joe_api_s) = login(&mut c, JOE, Kind::Api).await;

    c.logout_user(pb::LogoutUserRequest {
        credentials: Some(pb::Credentials {
            user: DOMAIN_ADMIN.0.into(),
            secret: Some(Secret::Token(admin.clone())),
            client: String::new(),
        }),
        user: JOE.0.into(),
    })
    .await
    .unwrap();
    c.logoff_other(authed(
        pb::LogoffOtherRequest {
            session_id: other_console.id,
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    c.logoff(authed(pb::LogoffRequest {}, &joe_api))
        .await
        .unwrap();
    // Another org's ending is not example.com's business.
    c.logout_all(pb::LogoutAllRequest {
        username: USEREMAIL.0.into(),
        password: USEREMAIL.1.into(),
    })
    .await
    .unwrap();

    let records = c
        .list_audit_records(authed(page(0, ""), &admin))
        .await
        .unwrap()
        .into_inner()
        .records;
    let got: Vec<(String, i32, i32, String, u32)> = records
        .iter()
        .map(|r| {
            (
                r.actor.clone(),
                r.actor_session_id,
                r.reason,
                r.target.clone(),
                r.ended,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                DOMAIN_ADMIN.0.into(),
                admin_s.id,
                EndReason::LogoutUser as i32,
                format!("mailbox:{}", JOE.0),
                2
            ),
            (
                DOMAIN_ADMIN.0.into(),
                admin_s.id,
                EndReason::LogoffOther as i32,
                format!("session:{}", other_console.id),
                1
            ),
            (
                JOE.0.into(),
                joe_api_s.id,
                EndReason::Logoff as i32,
                format!("session:{}", joe_api_s.id),
                1
            ),
        ]
    );
    assert!(records.iter().all(|r| r.at.is_some() && r.id > 0));

    // Paging.
    let first = c
        .list_audit_records(authed(page(2, ""), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.records.len(), 2);
    let rest = c
        .list_audit_records(authed(page(2, &first.next_page_token), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.records.len(), 1);
    assert!(rest.next_page_token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_read_the_audit_trail() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    assert_status(
        c.list_audit_records(authed(page(0, ""), &joe)).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        c.list_audit_records(Request::new(page(0, ""))).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    for bad in [page(-1, ""), page(0, "abc"), page(0, "0")] {
        assert_status(
            c.list_audit_records(authed(bad, &admin)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
}
