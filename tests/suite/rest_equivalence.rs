//! One table: each ending done once over REST and once over gRPC, each on a
//! fresh server holding the same sessions. Both must end the same sessions and
//! report the same outcome.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;
use serde_json::{json, Value};
use sessiond::pb::{self, Kind};
use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    InvalidArgument,
}

fn from_code(code: Code) -> Outcome {
    match code {
        Code::Unauthenticated => Outcome::Unauthenticated,
        Code::PermissionDenied => Outcome::PermissionDenied,
        Code::NotFound => Outcome::NotFound,
        Code::InvalidArgument => Outcome::InvalidArgument,
        other => panic!("unexpected code {other:?}"),
    }
}

/// The sessions every case starts from, by label.
const SESSIONS: [(&str, (&str, &str), Kind); 9] = [
    ("admin_console", DOMAIN_ADMIN, Kind::Admin),
    ("admin_console_2", DOMAIN_ADMIN, Kind::Admin),
    ("company_console", COMPANY_ADMIN, Kind::Admin),
    ("joe_imap", JOE, Kind::Imap),
    ("joe_pop", JOE, Kind::Pop),
    ("joe_api", JOE, Kind::Api),
    ("useremail_api", USEREMAIL, Kind::Api),
    ("useremail_imap", USEREMAIL, Kind::Imap),
    ("company_admin_api", COMPANY_ADMIN, Kind::Api),
];

type Fixture = BTreeMap<&'static str, (String, i32)>;

async fn fixture(c: &mut Client) -> Fixture {
    let mut f = BTreeMap::new();
    for (label, who, kind) in SESSIONS {
        let (token, s) = login(c, who, kind).await;
        f.insert(label, (token, s.id));
    }
    f
}

async fn ended(c: &mut Client, f: &Fixture) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for (label, (token, _)) in f {
        if !is_valid(c, token).await {
            out.insert(*label);
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Action {
    /// RAS `POST /api/Session/logoff` vs Logoff.
    RasLogoff(&'static str),
    /// Informatica `POST /api/v2/user/logout` vs Logoff.
    IcLogout(&'static str),
    /// RAS `POST /api/Session/{id}/logoff` vs LogoffOther (caller, target).
    RasLogoffOther(&'static str, &'static str),
    /// OMA `logout_user` vs LogoutUser (credentials, mailbox).
    OmaLogoutUser((&'static str, &'static str), &'static str),
    /// Informatica `logoutall` vs LogoutAll.
    IcLogoutAll((&'static str, &'static str)),
    /// RAS `POST /api/Session/abc/logoff` vs LogoffOther with id 0, with
    /// this caller's token or none: authentication comes first.
    RasLogoffOtherBadId(Option<&'static str>),
}

async fn via_grpc(c: &mut Client, f: &Fixture, action: Action) -> Outcome {
    let result = match action {
        Action::RasLogoff(who) | Action::IcLogout(who) => c
            .logoff(authed(pb::LogoffRequest {}, &f[who].0))
            .await
            .map(|_| ()),
        Action::RasLogoffOther(caller, target) => c
            .logoff_other(authed(
                pb::LogoffOtherRequest {
                    session_id: f[target].1,
                    ..Default::default()
                },
                &f[caller].0,
            ))
            .await
            .map(|_| ()),
        Action::OmaLogoutUser((user, password), mailbox) => c
            .logout_user(pb::LogoutUserRequest {
                credentials: Some(pb::Credentials {
                    user: user.into(),
                    secret: Some(pb::credentials::Secret::Password(password.into())),
                    client: String::new(),
                }),
                user: mailbox.into(),
            })
            .await
            .map(|_| ()),
        Action::IcLogoutAll((username, password)) => c
            .logout_all(pb::LogoutAllRequest {
                username: username.into(),
                password: password.into(),
            })
            .await
            .map(|_| ()),
        Action::RasLogoffOtherBadId(caller) => {
            let msg = pb::LogoffOtherRequest {
                session_id: 0,
                ..Default::default()
            };
            match caller {
                Some(who) => c.logoff_other(authed(msg, &f[who].0)).await,
                None => c.logoff_other(msg).await,
            }
            .map(|_| ())
        }
    };
    result.map_or_else(|s| from_code(s.code()), |()| Outcome::Ok)
}

async fn via_rest(base: &str, f: &Fixture, action: Action) -> Outcome {
    let post = |path: &str| http().post(format!("{base}{path}"));
    match action {
        Action::RasLogoff(who) => {
            let r = post("/api/Session/logoff").header("auth_token", &f[who].0);
            ras_outcome(json_of(r.send().await.unwrap()).await.0)
        }
        Action::IcLogout(who) => {
            let r = post("/api/v2/user/logout").header("icSessionId", &f[who].0);
            let (status, _, body) = json_of(r.send().await.unwrap()).await;
            ic_outcome(status, &body)
        }
        Action::RasLogoffOther(caller, target) => {
            let r = post(&format!("/api/Session/{}/logoff", f[target].1))
                .header("auth_token", &f[caller].0);
            ras_outcome(r.send().await.unwrap().status().as_u16())
        }
        Action::OmaLogoutUser((user, password), mailbox) => {
            let body =
                json!({"credentials": {"user": user, "password": password}, "user": mailbox});
            let (status, _, answer) =
                json_of(post("/api/logout_user").json(&body).send().await.unwrap()).await;
            assert_eq!(status, 200);
            match answer["error_number"].as_u64() {
                None if answer["success"] == true => Outcome::Ok,
                Some(1) => Outcome::Unauthenticated,
                Some(2) => Outcome::NotFound,
                Some(4) => Outcome::PermissionDenied,
                Some(5 | 6) => Outcome::InvalidArgument,
                _ => panic!("unexpected OMA answer {answer}"),
            }
        }
        Action::IcLogoutAll((username, password)) => {
            let body = json!({"@type": "logout", "username": username, "password": password});
            let (status, _, answer) = json_of(
                post("/ma/api/v2/user/logoutall")
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            ic_outcome(status, &answer)
        }
        Action::RasLogoffOtherBadId(caller) => {
            let mut r = post("/api/Session/abc/logoff");
            if let Some(who) = caller {
                r = r.header("auth_token", &f[who].0);
            }
            ras_outcome(r.send().await.unwrap().status().as_u16())
        }
    }
}

fn ras_outcome(status: u16) -> Outcome {
    match status {
        200 | 204 => Outcome::Ok,
        401 => Outcome::Unauthenticated,
        403 => Outcome::PermissionDenied,
        404 => Outcome::NotFound,
        400 => Outcome::InvalidArgument,
        s => panic!("unexpected RAS status {s}"),
    }
}

fn ic_outcome(status: u16, body: &Value) -> Outcome {
    match (status, body["code"].as_str()) {
        (200, _) => Outcome::Ok,
        (401, _) | (403, Some("UI_10000")) => Outcome::Unauthenticated,
        (403, _) => Outcome::PermissionDenied,
        (400, _) => Outcome::InvalidArgument,
        (s, _) => panic!("unexpected Informatica answer {s} {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_end_the_same_sessions_with_the_same_outcome() {
    use Outcome::*;
    let cases: Vec<(Action, Outcome, &[&str])> = vec![
        (Action::RasLogoff("admin_console"), Ok, &["admin_console"]),
        (Action::IcLogout("useremail_api"), Ok, &["useremail_api"]),
        (
            Action::RasLogoffOther("admin_console", "admin_console_2"),
            Ok,
            &["admin_console_2"],
        ),
        (
            Action::RasLogoffOther("admin_console", "admin_console"),
            Ok,
            &["admin_console"],
        ),
        (
            Action::RasLogoffOther("company_console", "admin_console"),
            NotFound,
            &[],
        ),
        (
            Action::RasLogoffOther("admin_console", "joe_imap"),
            NotFound,
            &[],
        ),
        (
            Action::RasLogoffOther("joe_api", "admin_console"),
            PermissionDenied,
            &[],
        ),
        (
            Action::RasLogoffOther("company_admin_api", "company_console"),
            PermissionDenied,
            &[],
        ),
        (
            Action::OmaLogoutUser(DOMAIN_ADMIN, "joe_user@example.com"),
            Ok,
            &["joe_imap", "joe_pop"],
        ),
        (
            Action::OmaLogoutUser(JOE, "joe_user@example.com"),
            Ok,
            &["joe_imap", "joe_pop"],
        ),
        (
            Action::OmaLogoutUser(COMPANY_ADMIN, "useremail@company.com"),
            Ok,
            &["useremail_imap"],
        ),
        (
            Action::OmaLogoutUser(COMPANY_ADMIN, "joe_user@example.com"),
            PermissionDenied,
            &[],
        ),
        (
            Action::OmaLogoutUser((DOMAIN_ADMIN.0, "nope"), "joe_user@example.com"),
            Unauthenticated,
            &[],
        ),
        (
            Action::OmaLogoutUser(DOMAIN_ADMIN, "ghost@example.com"),
            NotFound,
            &[],
        ),
        (
            Action::OmaLogoutUser(DOMAIN_ADMIN, "not-an-address"),
            InvalidArgument,
            &[],
        ),
        // Authorization before existence: outside its authority a caller
        // gets the same refusal for existing and missing mailboxes.
        (
            Action::OmaLogoutUser(JOE, "useremail@company.com"),
            PermissionDenied,
            &[],
        ),
        (
            Action::OmaLogoutUser(JOE, "nobody@company.com"),
            PermissionDenied,
            &[],
        ),
        (
            Action::OmaLogoutUser(JOE, "ghost@example.com"),
            PermissionDenied,
            &[],
        ),
        (
            Action::OmaLogoutUser(COMPANY_ADMIN, "ghost@example.com"),
            PermissionDenied,
            &[],
        ),
        (
            Action::OmaLogoutUser(DOMAIN_ADMIN, "nobody@nowhere.org"),
            PermissionDenied,
            &[],
        ),
        // Authentication before validation.
        (Action::RasLogoffOtherBadId(None), Unauthenticated, &[]),
        (
            Action::RasLogoffOtherBadId(Some("admin_console")),
            InvalidArgument,
            &[],
        ),
        (
            Action::IcLogoutAll(USEREMAIL),
            Ok,
            &["company_admin_api", "useremail_api"],
        ),
        (Action::IcLogoutAll(JOE), Ok, &["joe_api"]),
        (
            Action::IcLogoutAll((USEREMAIL.0, "nope")),
            Unauthenticated,
            &[],
        ),
    ];
    for (action, expected, expected_ended) in cases {
        let expected_ended: BTreeSet<&str> = expected_ended.iter().copied().collect();

        let grpc_server = TestServer::start().await;
        let mut c = grpc_server.client().await;
        let f = fixture(&mut c).await;
        let grpc_outcome = via_grpc(&mut c, &f, action).await;
        let grpc_ended = ended(&mut c, &f).await;

        let rest_server = TestServer::start_rest().await;
        let mut c = rest_server.client().await;
        let f = fixture(&mut c).await;
        let rest_outcome = via_rest(&rest_server.rest(), &f, action).await;
        let rest_ended = ended(&mut c, &f).await;

        assert_eq!(grpc_outcome, expected, "{action:?} over gRPC");
        assert_eq!(rest_outcome, expected, "{action:?} over REST");
        assert_eq!(grpc_ended, expected_ended, "{action:?} over gRPC ended");
        assert_eq!(rest_ended, expected_ended, "{action:?} over REST ended");
    }
}
