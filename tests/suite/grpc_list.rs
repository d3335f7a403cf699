//! ListSessions: admins see their own org's live sessions, filtered and paged.

use crate::support::*;
use sessiond::pb::{self, Kind};
use tonic::{Code, Request};

fn list(user: &str, kind: Kind, page_size: i32, page_token: &str) -> pb::ListSessionsRequest {
    pb::ListSessionsRequest {
        user: user.into(),
        kind: kind as i32,
        page_size,
        page_token: page_token.into(),
    }
}

#[tokio::test]
async fn admin_lists_its_orgs_live_sessions_only() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, admin_s) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (_, joe_imap) = login(&mut c, JOE, Kind::Imap).await;
    let (ended, _) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &ended))
        .await
        .unwrap();
    login(&mut c, USEREMAIL, Kind::Api).await;

    let r = c
        .list_sessions(authed(list("", Kind::Unspecified, 0, ""), &admin))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i32> = r.sessions.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![admin_s.id, joe_imap.id]);
    assert!(r.sessions.iter().all(|s| s.org == "example.com"));
    assert!(r.next_page_token.is_empty());

    let r = c
        .list_sessions(authed(
            list("JOE_USER@example.com", Kind::Unspecified, 0, ""),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.sessions.len(), 1);
    assert_eq!(r.sessions[0].user, JOE.0);

    let r = c
        .list_sessions(authed(list("", Kind::Admin, 0, ""), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![admin_s.id]
    );
}

#[tokio::test]
async fn pages_cover_everything_once() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, COMPANY_ADMIN, Kind::Admin).await;
    for _ in 0..6 {
        login(&mut c, USEREMAIL, Kind::Api).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = c
            .list_sessions(authed(list("", Kind::Unspecified, 3, &token), &admin))
            .await
            .unwrap()
            .into_inner();
        assert!(r.sessions.len() <= 3);
        seen.extend(r.sessions.iter().map(|s| s.id));
        pages += 1;
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "increasing, no duplicates");
    assert!(pages >= 3);
}

#[tokio::test]
async fn non_admins_and_anonymous_callers_cannot_list() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;
    assert_status(
        c.list_sessions(authed(list("", Kind::Unspecified, 0, ""), &joe))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        c.list_sessions(Request::new(list("", Kind::Unspecified, 0, "")))
            .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
}

#[tokio::test]
async fn bad_list_fields_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    for req in [
        list("", Kind::Unspecified, -1, ""),
        list("", Kind::Unspecified, 0, "abc"),
        list("", Kind::Unspecified, 0, "-5"),
        list(&"u".repeat(300), Kind::Unspecified, 0, ""),
        pb::ListSessionsRequest {
            kind: 99,
            ..Default::default()
        },
    ] {
        assert_status(
            c.list_sessions(authed(req, &admin)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
}
