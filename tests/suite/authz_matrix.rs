//! Authorization before existence: a caller with no authority over a target
//! gets the very same answer whether or not the target exists, so no caller
//! can probe which mailboxes, users or sessions exist outside its reach. Only
//! an entitled caller (the user itself, an admin of the user's org) learns
//! NOT_FOUND. Walked over gRPC and over each REST shape.

use crate::support::*;
use serde_json::{json, Value};
use sessiond::pb::{self, Kind};
use tonic::Code;
use tonic_types::StatusExt;

/// Targets: (name, exists).
const JOE_MAILBOX: &str = "joe_user@example.com";
const GHOST_EXAMPLE: &str = "ghost@example.com";
const USEREMAIL_MAILBOX: &str = "useremail@company.com";
const NOBODY_COMPANY: &str = "nobody@company.com";
const NOBODY_NOWHERE: &str = "nobody@nowhere.org";
const TARGETS: [&str; 5] = [
    JOE_MAILBOX,
    GHOST_EXAMPLE,
    USEREMAIL_MAILBOX,
    NOBODY_COMPANY,
    NOBODY_NOWHERE,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Ok,
    Denied,
    Missing,
}

/// What each caller may learn about each target, in `TARGETS` order.
fn expected(caller: &str) -> [Want; 5] {
    use Want::*;
    match caller {
        // Plain users: themselves only.
        "joe_user@example.com" => [Ok, Denied, Denied, Denied, Denied],
        "useremail@company.com" => [Denied, Denied, Ok, Denied, Denied],
        // Admins: their org, where a missing name is NOT_FOUND.
        "domain_admin@example.com" => [Ok, Missing, Denied, Denied, Denied],
        "admin@company.com" => [Denied, Denied, Ok, Missing, Denied],
        other => panic!("no expectations for {other}"),
    }
}

const CALLERS: [(&str, &str); 4] = [JOE, USEREMAIL, DOMAIN_ADMIN, COMPANY_ADMIN];

fn want_of(result: &Result<(), tonic::Status>) -> Want {
    match result {
        Ok(()) => Want::Ok,
        Err(s) if s.code() == Code::PermissionDenied => Want::Denied,
        Err(s) if s.code() == Code::NotFound => Want::Missing,
        Err(s) => panic!("unexpected status {s:?}"),
    }
}

/// Everything a client can see of a refusal.
fn visible(s: &tonic::Status) -> (Code, String, Option<String>) {
    (
        s.code(),
        s.message().to_owned(),
        s.get_details_error_info().map(|i| i.reason),
    )
}

/// Denied answers must be identical for the existing and the missing
/// target of the same org, so the pair tells nothing apart.
#[track_caller]
fn assert_indistinguishable<T: PartialEq + std::fmt::Debug>(caller: &str, answers: &[T]) {
    let want = expected(caller);
    let denied: Vec<&T> = answers
        .iter()
        .zip(want)
        .filter(|(_, w)| *w == Want::Denied)
        .map(|(a, _)| a)
        .collect();
    for pair in denied.windows(2) {
        assert_eq!(pair[0], pair[1], "{caller}: refusals differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_user_over_grpc_and_oma() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let mut c = server.client().await;
    for (user, password) in CALLERS {
        let mut grpc_answers = Vec::new();
        let mut oma_answers = Vec::new();
        for target in TARGETS {
            let result = c
                .logout_user(pb::LogoutUserRequest {
                    credentials: Some(pb::Credentials {
                        user: user.into(),
                        secret: Some(pb::credentials::Secret::Password(password.into())),
                        client: String::new(),
                    }),
                    user: target.into(),
                })
                .await
                .map(|_| ());
            grpc_answers.push((want_of(&result), result.err().map(|s| visible(&s))));

            let (status, _, body) = json_of(
                http()
                    .post(format!("{base}/api/logout_user"))
                    .json(&json!({"credentials": {"user": user, "password": password}, "user": target}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200);
            let want = match body["error_number"].as_u64() {
                None if body["success"] == true => Want::Ok,
                Some(4) => Want::Denied,
                Some(2) => Want::Missing,
                _ => panic!("{user} -> {target}: unexpected OMA answer {body}"),
            };
            oma_answers.push((want, body));
        }
        let got: Vec<Want> = grpc_answers.iter().map(|a| a.0).collect();
        assert_eq!(got, expected(user), "{user} over gRPC");
        let got: Vec<Want> = oma_answers.iter().map(|a| a.0).collect();
        assert_eq!(got, expected(user), "{user} over OMA");
        assert_indistinguishable(user, &grpc_answers);
        assert_indistinguishable(user, &oma_answers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_sessions_over_grpc() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for who in CALLERS {
        let (token, _) = login(&mut c, who, Kind::Api).await;
        let mut answers = Vec::new();
        for target in TARGETS {
            let result = c
                .end_user_sessions(authed(
                    pb::EndUserSessionsRequest {
                        user: target.into(),
                        // Spare the mail kinds so the caller's API session lives on.
                        kinds: vec![Kind::Imap as i32, Kind::Pop as i32],
                        keep_current: true,
                    },
                    &token,
                ))
                .await
                .map(|_| ());
            answers.push((want_of(&result), result.err().map(|s| visible(&s))));
        }
        let got: Vec<Want> = answers.iter().map(|a| a.0).collect();
        assert_eq!(got, expected(who.0), "{} over gRPC", who.0);
        assert_indistinguishable(who.0, &answers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sessions_user_filter() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for who in [DOMAIN_ADMIN, COMPANY_ADMIN, JOE, USEREMAIL] {
        let is_admin = who == DOMAIN_ADMIN || who == COMPANY_ADMIN;
        // Listing is a console power: admins use their ADMIN session.
        let kind = if is_admin { Kind::Admin } else { Kind::Api };
        let (token, _) = login(&mut c, who, kind).await;
        let mut answers = Vec::new();
        for target in TARGETS {
            let result = c
                .list_sessions(authed(
                    pb::ListSessionsRequest {
                        user: target.into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await;
            let want = match &result {
                Ok(_) => Want::Ok,
                Err(s) if s.code() == Code::PermissionDenied => Want::Denied,
                Err(s) => panic!("unexpected {s:?}"),
            };
            answers.push((want, result.err().map(|s| visible(&s))));
        }
        let got: Vec<Want> = answers.iter().map(|a| a.0).collect();
        if is_admin {
            // A missing name in the admin's own org lists nothing; the rest
            // is refused alike.
            let want: Vec<Want> = expected(who.0)
                .iter()
                .map(|w| if *w == Want::Missing { Want::Ok } else { *w })
                .collect();
            assert_eq!(got, want, "{}", who.0);
            assert_indistinguishable(who.0, &answers);
        } else {
            assert!(got.iter().all(|w| *w == Want::Denied), "{}: {got:?}", who.0);
            assert!(answers.windows(2).all(|p| p[0] == p[1]));
        }
    }
}

/// LogoffOther names a session id: an admin of another org gets the same
/// NOT_FOUND for an existing admin session as for a missing id, a non-admin
/// the same PERMISSION_DENIED for both, over gRPC and RAS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logoff_other_over_grpc_and_ras() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let mut c = server.client().await;
    let (_, target) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let missing = target.id + 100_000;
    let callers = [
        (
            "admin of another org",
            COMPANY_ADMIN,
            Kind::Admin,
            Code::NotFound,
            404,
        ),
        ("plain user", JOE, Kind::Api, Code::PermissionDenied, 403),
        (
            "admin, API session",
            COMPANY_ADMIN,
            Kind::Api,
            Code::PermissionDenied,
            403,
        ),
    ];
    for (label, who, kind, code, http_status) in callers {
        let (token, _) = login(&mut c, who, kind).await;
        let mut grpc = Vec::new();
        let mut ras = Vec::new();
        for id in [target.id, missing] {
            let s = c
                .logoff_other(authed(
                    pb::LogoffOtherRequest {
                        session_id: id,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .expect_err(label);
            assert_eq!(s.code(), code, "{label}: {s:?}");
            grpc.push(visible(&s));
            let (status, _, mut body) = json_of(
                http()
                    .post(format!("{base}/api/Session/{id}/logoff"))
                    .header("auth_token", &token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, http_status, "{label}: {body}");
            body["instance"] = Value::Null; // the path names the id
            ras.push(body);
        }
        assert_eq!(grpc[0], grpc[1], "{label} over gRPC");
        assert_eq!(ras[0], ras[1], "{label} over RAS");
    }
    // The entitled admin tells them apart.
    let (token, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let s = c
        .logoff_other(authed(
            pb::LogoffOtherRequest {
                session_id: missing,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    c.logoff_other(authed(
        pb::LogoffOtherRequest {
            session_id: target.id,
            ..Default::default()
        },
        &token,
    ))
    .await
    .unwrap();
}

/// RAS authenticates before it validates anything else: no token, or a
/// dead one, is 401 whatever else is wrong with the request; a live token
/// then learns about the bad path or api-version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ras_authenticates_before_validating() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let mut c = server.client().await;
    let (token, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let requests: [(&str, &str, Option<&str>); 5] = [
        ("POST", "/api/Session/abc/logoff", None),
        ("POST", "/api/Session/0/logoff", None),
        (
            "POST",
            "/api/Session/7/logoff",
            Some("application/json; api-version=2.0"),
        ),
        (
            "POST",
            "/api/Session/logoff",
            Some("application/json; api-version=2.0"),
        ),
        (
            "GET",
            "/api/Session",
            Some("application/json; api-version=2.0"),
        ),
    ];
    for (method, path, content_type) in requests {
        for (auth, expect) in [
            (None, 401),
            (Some("not-a-live-token"), 401),
            (Some(token.as_str()), 400),
        ] {
            let mut req = http().request(method.parse().unwrap(), format!("{base}{path}"));
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            if let Some(t) = auth {
                req = req.header("auth_token", t);
            }
            let (status, _, body) = json_of(req.send().await.unwrap()).await;
            assert_eq!(status, expect, "{method} {path} auth={auth:?}: {body}");
            assert_eq!(body["status"], expect);
        }
    }
    // The live token was not used up by the checks.
    assert!(is_valid(&mut c, &token).await);
}
