//! The four endings over real gRPC: exactly the right sessions end, and every
//! error row of the README's gRPC error table applies.

use crate::support::*;
use sessiond::pb::{self, credentials::Secret, Kind};
use tonic::{Code, Request};

fn logout_user(user: &str, secret: Secret, mailbox: &str) -> pb::LogoutUserRequest {
    pb::LogoutUserRequest {
        credentials: Some(pb::Credentials {
            user: user.into(),
            secret: Some(secret),
            client: String::new(),
        }),
        user: mailbox.into(),
    }
}

fn password(p: &str) -> Secret {
    Secret::Password(p.into())
}

fn logout_all(who: (&str, &str)) -> pb::LogoutAllRequest {
    pb::LogoutAllRequest {
        username: who.0.into(),
        password: who.1.into(),
    }
}

// ---------------------------------------------------------------- Logoff

#[tokio::test]
async fn logoff_ends_only_the_callers_session_and_twice_is_unauthenticated() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (mine, s) = login(&mut c, JOE, Kind::Api).await;
    let (other, _) = login(&mut c, JOE, Kind::Api).await;
    let r = c.logoff(authed(pb::LogoffRequest {}, &mine)).await.unwrap();
    assert_eq!(r.into_inner().session_id, s.id);
    assert!(!is_valid(&mut c, &mine).await);
    assert!(is_valid(&mut c, &other).await);
    assert_status(
        c.logoff(authed(pb::LogoffRequest {}, &mine)).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

#[tokio::test]
async fn logoff_without_or_with_a_bad_token_is_unauthenticated() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_status(
        c.logoff(Request::new(pb::LogoffRequest {})).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    assert_status(
        c.logoff(authed(pb::LogoffRequest {}, "not-a-token")).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    let mut basic = Request::new(pb::LogoffRequest {});
    basic
        .metadata_mut()
        .insert("authorization", "Basic am9lOnB3".parse().unwrap());
    assert_status(
        c.logoff(basic).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

// ------------------------------------------------------------ LogoffOther

#[tokio::test]
async fn admin_ends_another_admin_session_of_its_org() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (victim, vs) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let r = c
        .logoff_other(authed(
            pb::LogoffOtherRequest {
                session_id: vs.id,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    assert_eq!(r.into_inner().session_id, vs.id);
    assert!(!is_valid(&mut c, &victim).await);
    assert!(is_valid(&mut c, &admin).await);
    // Already ended: nothing live by that id any more.
    assert_status(
        c.logoff_other(authed(
            pb::LogoffOtherRequest {
                session_id: vs.id,
                ..Default::default()
            },
            &admin,
        ))
        .await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
}

#[tokio::test]
async fn admin_may_end_its_own_session_by_id() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, s) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    c.logoff_other(authed(
        pb::LogoffOtherRequest {
            session_id: s.id,
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    assert!(!is_valid(&mut c, &admin).await);
}

#[tokio::test]
async fn non_admin_logoff_other_is_permission_denied() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (_, target) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;
    assert_status(
        c.logoff_other(authed(
            pb::LogoffOtherRequest {
                session_id: target.id,
                ..Default::default()
            },
            &joe,
        ))
        .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
}

#[tokio::test]
async fn admin_without_an_admin_session_is_permission_denied() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (_, target) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (api, _) = login(&mut c, DOMAIN_ADMIN, Kind::Api).await;
    assert_status(
        c.logoff_other(authed(
            pb::LogoffOtherRequest {
                session_id: target.id,
                ..Default::default()
            },
            &api,
        ))
        .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
}

#[tokio::test]
async fn admin_of_another_org_gets_not_found() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (victim, target) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (other, _) = login(&mut c, COMPANY_ADMIN, Kind::Admin).await;
    assert_status(
        c.logoff_other(authed(
            pb::LogoffOtherRequest {
                session_id: target.id,
                ..Default::default()
            },
            &other,
        ))
        .await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    assert!(is_valid(&mut c, &victim).await);
}

#[tokio::test]
async fn logoff_other_ends_only_admin_sessions() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (api, api_s) = login(&mut c, JOE, Kind::Api).await;
    for id in [api_s.id, 999_999, i32::MAX] {
        assert_status(
            c.logoff_other(authed(
                pb::LogoffOtherRequest {
                    session_id: id,
                    ..Default::default()
                },
                &admin,
            ))
            .await,
            Code::NotFound,
            "SESSION_NOT_FOUND",
        );
    }
    assert!(is_valid(&mut c, &api).await);
}

#[tokio::test]
async fn logoff_other_needs_a_positive_id() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    for id in [0, -1, i32::MIN] {
        assert_status(
            c.logoff_other(authed(
                pb::LogoffOtherRequest {
                    session_id: id,
                    ..Default::default()
                },
                &admin,
            ))
            .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
    assert_status(
        c.logoff_other(Request::new(pb::LogoffOtherRequest {
            session_id: 1,
            ..Default::default()
        }))
        .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
}

// ------------------------------------------------------------- LogoutUser

#[tokio::test]
async fn logout_user_ends_imap_and_pop_of_that_mailbox_only() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (imap1, _) = login(&mut c, JOE, Kind::Imap).await;
    let (imap2, _) = login(&mut c, JOE, Kind::Imap).await;
    let (pop, _) = login(&mut c, JOE, Kind::Pop).await;
    let (api, _) = login(&mut c, JOE, Kind::Api).await;
    let (admins_imap, _) = login(&mut c, DOMAIN_ADMIN, Kind::Imap).await;
    let (admin_console, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (other_org, _) = login(&mut c, USEREMAIL, Kind::Imap).await;

    let r = c
        .logout_user(logout_user(DOMAIN_ADMIN.0, password(DOMAIN_ADMIN.1), JOE.0))
        .await
        .unwrap();
    assert_eq!(r.into_inner().ended, 3);
    for t in [&imap1, &imap2, &pop] {
        assert!(!is_valid(&mut c, t).await);
    }
    for t in [&api, &admins_imap, &admin_console, &other_org] {
        assert!(is_valid(&mut c, t).await, "untouched");
    }
    // Nothing left to end: success with 0.
    let r = c
        .logout_user(logout_user(DOMAIN_ADMIN.0, password(DOMAIN_ADMIN.1), JOE.0))
        .await
        .unwrap();
    assert_eq!(r.into_inner().ended, 0);
}

#[tokio::test]
async fn a_mailbox_may_log_itself_out_with_password_or_token() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    login(&mut c, JOE, Kind::Imap).await;
    let r = c
        .logout_user(logout_user(JOE.0, password(JOE.1), JOE.0))
        .await
        .unwrap();
    assert_eq!(r.into_inner().ended, 1);

    let (pop, _) = login(&mut c, JOE, Kind::Pop).await;
    let (api, _) = login(&mut c, JOE, Kind::Api).await;
    let r = c
        .logout_user(logout_user(JOE.0, Secret::Token(api.clone()), JOE.0))
        .await
        .unwrap();
    assert_eq!(r.into_inner().ended, 1);
    assert!(!is_valid(&mut c, &pop).await);
    assert!(
        is_valid(&mut c, &api).await,
        "the API token used is not a mail session"
    );
}

#[tokio::test]
async fn logout_user_credentials_must_be_valid() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (joe_imap, _) = login(&mut c, JOE, Kind::Imap).await;
    let (admin_token, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let cases = [
        logout_user(DOMAIN_ADMIN.0, password("wrong"), JOE.0),
        logout_user("ghost@example.com", password("x"), JOE.0),
        // A token that belongs to someone else is not this user's credential.
        logout_user(JOE.0, Secret::Token(admin_token.clone()), JOE.0),
        logout_user(DOMAIN_ADMIN.0, Secret::Token("garbage".into()), JOE.0),
    ];
    for req in cases {
        assert_status(
            c.logout_user(req).await,
            Code::Unauthenticated,
            "BAD_CREDENTIALS",
        );
    }
    assert!(is_valid(&mut c, &joe_imap).await);
    // An admin's token works as its credentials.
    let r = c
        .logout_user(logout_user(
            DOMAIN_ADMIN.0,
            Secret::Token(admin_token),
            JOE.0,
        ))
        .await
        .unwrap();
    assert_eq!(r.into_inner().ended, 1);
}

#[tokio::test]
async fn logout_user_authority_is_the_mailbox_or_an_admin_of_its_org() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (joe_imap, _) = login(&mut c, JOE, Kind::Imap).await;
    // Another org's admin, and a plain user of the same org: not allowed.
    assert_status(
        c.logout_user(logout_user(
            COMPANY_ADMIN.0,
            password(COMPANY_ADMIN.1),
            JOE.0,
        ))
        .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        c.logout_user(logout_user(USEREMAIL.0, password(USEREMAIL.1), JOE.0))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        c.logout_user(logout_user(JOE.0, password(JOE.1), DOMAIN_ADMIN.0))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert!(is_valid(&mut c, &joe_imap).await);
}

#[tokio::test]
async fn logout_user_of_an_unknown_mailbox_is_not_found() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_status(
        c.logout_user(logout_user(
            DOMAIN_ADMIN.0,
            password(DOMAIN_ADMIN.1),
            "nobody@example.com",
        ))
        .await,
        Code::NotFound,
        "MAILBOX_NOT_FOUND",
    );
}

#[tokio::test]
async fn logout_user_bad_fields_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let no_creds = pb::LogoutUserRequest {
        credentials: None,
        user: JOE.0.into(),
    };
    let no_secret = pb::LogoutUserRequest {
        credentials: Some(pb::Credentials {
            user: DOMAIN_ADMIN.0.into(),
            secret: None,
            client: String::new(),
        }),
        user: JOE.0.into(),
    };
    let cases = [
        no_creds,
        no_secret,
        logout_user(DOMAIN_ADMIN.0, password(DOMAIN_ADMIN.1), ""),
        logout_user(DOMAIN_ADMIN.0, password(DOMAIN_ADMIN.1), "not-an-address"),
        logout_user(DOMAIN_ADMIN.0, password(DOMAIN_ADMIN.1), &"x".repeat(300)),
        logout_user("", password(DOMAIN_ADMIN.1), JOE.0),
        logout_user(DOMAIN_ADMIN.0, password(""), JOE.0),
    ];
    for req in cases {
        assert_status(
            c.logout_user(req).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
}

// -------------------------------------------------------------- LogoutAll

#[tokio::test]
async fn logout_all_ends_the_orgs_api_sessions_and_nothing_else() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (api1, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    let (api2, _) = login(&mut c, COMPANY_ADMIN, Kind::Api).await;
    let (imap, _) = login(&mut c, USEREMAIL, Kind::Imap).await;
    let (console, _) = login(&mut c, COMPANY_ADMIN, Kind::Admin).await;
    let (other_org_api, _) = login(&mut c, JOE, Kind::Api).await;

    let r = c.logout_all(logout_all(USEREMAIL)).await.unwrap();
    assert_eq!(r.into_inner().ended, 2);
    assert!(!is_valid(&mut c, &api1).await);
    assert!(!is_valid(&mut c, &api2).await);
    for t in [&imap, &console, &other_org_api] {
        assert!(is_valid(&mut c, t).await, "untouched");
    }
    let r = c.logout_all(logout_all(USEREMAIL)).await.unwrap();
    assert_eq!(r.into_inner().ended, 0);
}

#[tokio::test]
async fn logout_all_needs_valid_credentials() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (api, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    for who in [(USEREMAIL.0, "wrong"), ("ghost@company.com", "mypassword")] {
        assert_status(
            c.logout_all(logout_all(who)).await,
            Code::Unauthenticated,
            "BAD_CREDENTIALS",
        );
    }
    for who in [("", "x"), (USEREMAIL.0, "")] {
        assert_status(
            c.logout_all(logout_all(who)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
    assert!(is_valid(&mut c, &api).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logoffs_of_one_token_end_it_once() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (token, _) = login(&mut c, JOE, Kind::Api).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = c.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            c.logoff(authed(pb::LogoffRequest {}, &token)).await.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1, "exactly one Logoff wins");
}

// ------------------------------------------------- LogoffOther with a kind

fn logoff_other(session_id: i32, kind: i32) -> pb::LogoffOtherRequest {
    pb::LogoffOtherRequest { session_id, kind }
}

#[tokio::test]
async fn admin_ends_one_api_session_of_its_org_by_id_and_kind() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, admin_s) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (victim, vs) = login(&mut c, JOE, Kind::Api).await;
    let (sibling, _) = login(&mut c, JOE, Kind::Api).await;
    let (joe_imap, _) = login(&mut c, JOE, Kind::Imap).await;
    let r = c
        .logoff_other(authed(logoff_other(vs.id, Kind::Api as i32), &admin))
        .await
        .unwrap();
    assert_eq!(r.into_inner().session_id, vs.id);
    assert!(!is_valid(&mut c, &victim).await);
    // Only that session: the same user's other sessions, and the admin's.
    for t in [&sibling, &joe_imap, &admin] {
        assert!(is_valid(&mut c, t).await, "untouched");
    }
    // Ended once: nothing live by that id any more.
    assert_status(
        c.logoff_other(authed(logoff_other(vs.id, Kind::Api as i32), &admin))
            .await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    // The audit trail names the admin, its session and the target.
    let records = c
        .list_audit_records(authed(
            pb::ListAuditRecordsRequest {
                page_size: 0,
                page_token: String::new(),
            },
            &admin,
        ))
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
    assert!(
        got.contains(&(
            DOMAIN_ADMIN.0.into(),
            admin_s.id,
            pb::EndReason::LogoffOther as i32,
            format!("session:{}", vs.id),
            1,
        )),
        "{got:?}"
    );
}

#[tokio::test]
async fn logoff_other_ends_a_session_only_of_the_kind_named() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (api, api_s) = login(&mut c, JOE, Kind::Api).await;
    // Unspecified is ADMIN (Parallels RAS): an API id is not found, and so
    // it is under any other kind than its own.
    for kind in [Kind::Unspecified, Kind::Admin, Kind::Imap, Kind::Pop] {
        assert_status(
            c.logoff_other(authed(logoff_other(api_s.id, kind as i32), &admin))
                .await,
            Code::NotFound,
            "SESSION_NOT_FOUND",
        );
    }
    assert!(is_valid(&mut c, &api).await);
    // An ADMIN session named with ADMIN explicitly ends as with unspecified.
    let (console, console_s) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    c.logoff_other(authed(
        logoff_other(console_s.id, Kind::Admin as i32),
        &admin,
    ))
    .await
    .unwrap();
    assert!(!is_valid(&mut c, &console).await);
    assert!(is_valid(&mut c, &api).await);
}

#[tokio::test]
async fn logoff_other_by_kind_stays_in_the_callers_org() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (theirs, theirs_s) = login(&mut c, USEREMAIL, Kind::Api).await;
    let (their_imap, their_imap_s) = login(&mut c, USEREMAIL, Kind::Imap).await;
    for (id, kind) in [(theirs_s.id, Kind::Api), (their_imap_s.id, Kind::Imap)] {
        assert_status(
            c.logoff_other(authed(logoff_other(id, kind as i32), &admin))
                .await,
            Code::NotFound,
            "SESSION_NOT_FOUND",
        );
    }
    assert!(is_valid(&mut c, &theirs).await);
    assert!(is_valid(&mut c, &their_imap).await);
}

#[tokio::test]
async fn an_unknown_kind_is_judged_only_once_the_caller_is_known() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (api, api_s) = login(&mut c, JOE, Kind::Api).await;
    // An admin naming a kind that does not exist: its request is wrong.
    for kind in [99, -1, i32::MAX] {
        let status = assert_status(
            c.logoff_other(authed(logoff_other(api_s.id, kind), &admin))
                .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(status.message().contains("kind"), "{status:?}");
    }
    assert!(is_valid(&mut c, &api).await);
    // A caller without a token, or with a bad one, learns only that.
    assert_status(
        c.logoff_other(Request::new(logoff_other(api_s.id, 99)))
            .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    assert_status(
        c.logoff_other(authed(logoff_other(api_s.id, 99), "not-a-token"))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    assert!(is_valid(&mut c, &api).await);
}

#[tokio::test]
async fn a_non_admin_may_not_end_a_session_by_kind() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;
    let (target, target_s) = login(&mut c, JOE, Kind::Api).await;
    // Not even a session of its own user, and not with an API session of
    // an admin either: LogoffOther needs an ADMIN session.
    let (admin_api, _) = login(&mut c, DOMAIN_ADMIN, Kind::Api).await;
    for caller in [&joe, &admin_api] {
        assert_status(
            c.logoff_other(authed(logoff_other(target_s.id, Kind::Api as i32), caller))
                .await,
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        );
    }
    assert!(is_valid(&mut c, &target).await);
}

#[tokio::test]
async fn an_ending_by_kind_reaches_watchers_as_logoff_other() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (_, vs) = login(&mut c, JOE, Kind::Pop).await;
    let mut watch = c
        .watch_revocations(authed(
            pb::WatchRevocationsRequest {
                // From the first event: no race with the watch's start.
                after_sequence: Some(0),
                org: "example.com".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    c.logoff_other(authed(logoff_other(vs.id, Kind::Pop as i32), &admin))
        .await
        .unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(event.session_id, vs.id);
    assert_eq!(event.reason, pb::EndReason::LogoffOther as i32);
    assert_eq!(event.kind, Kind::Pop as i32);
    assert_eq!(event.user, JOE.0);
}

#[tokio::test]
async fn an_admin_session_ends_its_orgs_api_sessions_without_a_password() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (api1, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    let (api2, _) = login(&mut c, COMPANY_ADMIN, Kind::Api).await;
    let (imap, _) = login(&mut c, USEREMAIL, Kind::Imap).await;
    let (console, console_s) = login(&mut c, COMPANY_ADMIN, Kind::Admin).await;
    let (other_org_api, _) = login(&mut c, JOE, Kind::Api).await;
    let empty = || pb::LogoutAllRequest {
        username: String::new(),
        password: String::new(),
    };
    let r = c.logout_all(authed(empty(), &console)).await.unwrap();
    assert_eq!(r.into_inner().ended, 2);
    assert!(!is_valid(&mut c, &api1).await);
    assert!(!is_valid(&mut c, &api2).await);
    for t in [&imap, &console, &other_org_api] {
        assert!(is_valid(&mut c, t).await, "untouched");
    }
    // Audited as the admin and the session it used.
    let records = c
        .list_audit_records(authed(
            pb::ListAuditRecordsRequest {
                page_size: 10,
                page_token: String::new(),
            },
            &console,
        ))
        .await
        .unwrap()
        .into_inner()
        .records;
    let record = records
        .iter()
        .find(|r| r.reason == pb::EndReason::LogoutAll as i32)
        .expect("a LogoutAll record");
    assert_eq!(record.actor, COMPANY_ADMIN.0);
    assert_eq!(record.actor_session_id, console_s.id);
    assert_eq!(record.target, "org:company.com");
    assert_eq!(record.ended, 2);
}

#[tokio::test]
async fn only_an_admin_session_ends_an_orgs_api_sessions_by_token() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (target, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    let (user_api, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    let (admin_api, _) = login(&mut c, COMPANY_ADMIN, Kind::Api).await;
    let empty = || pb::LogoutAllRequest {
        username: String::new(),
        password: String::new(),
    };
    for caller in [&user_api, &admin_api] {
        assert_status(
            c.logout_all(authed(empty(), caller)).await,
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        );
    }
    assert_status(
        c.logout_all(authed(empty(), "not-a-token")).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    // No token and no credentials: the credentials are what is missing.
    assert_status(
        c.logout_all(Request::new(empty())).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(is_valid(&mut c, &target).await);
    // Credentials in the message win over a token in metadata (Informatica).
    let r = c
        .logout_all(authed(logout_all(USEREMAIL), &admin_api))
        .await
        .unwrap();
    assert_eq!(r.into_inner().ended, 3);
}
