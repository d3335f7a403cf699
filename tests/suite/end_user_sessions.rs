//! "Log out everywhere": EndUserSessions, ChangePassword and
//! `sessiond user passwd`, over the real server; the racing-login test runs
//! on SQLite and on a private redis-server.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use sessiond::domain::EndReason;
use sessiond::pb::{self, Kind};
use sessiond::store::StoreUrl;
use tonic::Code;

fn end_req(user: &str, kinds: &[Kind], keep_current: bool) -> pb::EndUserSessionsRequest {
    pb::EndUserSessionsRequest {
        user: user.into(),
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        keep_current,
    }
}

fn change_req(current: &str, new: &str) -> pb::ChangePasswordRequest {
    pb::ChangePasswordRequest {
        current_password: current.into(),
        new_password: new.into(),
    }
}

/// Revocation events of `server` (in order) with this reason: (session id, user).
async fn events(server: &TestServer, reason: EndReason) -> Vec<(i32, String)> {
    server
        .running
        .sessions
        .store()
        .revocations_after(0, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.reason == reason)
        .map(|e| (e.session_id, e.username))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_ends_its_own_sessions_keeping_the_current_one() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (me, me_s) = login(&mut c, JOE, Kind::Api).await;
    let mut others = Vec::new();
    for kind in [Kind::Api, Kind::Imap, Kind::Pop] {
        others.push(login(&mut c, JOE, kind).await);
    }
    let (bystander, _) = login(&mut c, DOMAIN_ADMIN, Kind::Api).await;
    let ended = c
        .end_user_sessions(authed(end_req(JOE.0, &[], true), &me))
        .await
        .unwrap()
        .into_inner()
        .ended;
    assert_eq!(ended, 3);
    assert!(is_valid(&mut c, &me).await, "the calling session is kept");
    for (t, _) in &others {
        assert!(!is_valid(&mut c, t).await);
    }
    assert!(is_valid(&mut c, &bystander).await);
    // One event per ended session, one audit record for the call.
    let got: BTreeSet<i32> = events(&server, EndReason::EndUserSessions)
        .await
        .into_iter()
        .map(|(id, user)| {
            assert_eq!(user, JOE.0);
            id
        })
        .collect();
    let want: BTreeSet<i32> = others.iter().map(|(_, s)| s.id).collect();
    assert_eq!(got, want);
    let audit = server
        .running
        .sessions
        .store()
        .list_audit("example.com", 0, 100)
        .await
        .unwrap();
    let mine: Vec<_> = audit
        .iter()
        .filter(|r| r.reason == EndReason::EndUserSessions)
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (
            mine[0].actor.as_str(),
            mine[0].actor_session_id,
            mine[0].target.as_str(),
            mine[0].ended
        ),
        (JOE.0, Some(me_s.id), "user:joe_user@example.com", 3)
    );

    // Without keep_current the calling session ends too; nothing left is 0.
    c.end_user_sessions(authed(end_req(JOE.0, &[], false), &me))
        .await
        .unwrap();
    assert!(!is_valid(&mut c, &me).await);
    let (again, _) = login(&mut c, JOE, Kind::Imap).await;
    let ended = c
        .end_user_sessions(authed(end_req(JOE.0, &[Kind::Api], true), &again))
        .await
        .unwrap()
        .into_inner()
        .ended;
    assert_eq!(ended, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_ends_a_users_sessions_of_some_kinds() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (imap, _) = login(&mut c, JOE, Kind::Imap).await;
    let (pop, _) = login(&mut c, JOE, Kind::Pop).await;
    let (api, _) = login(&mut c, JOE, Kind::Api).await;
    // Duplicates are harmless; keep_current means nothing for another user.
    let ended = c
        .end_user_sessions(authed(
            end_req(
                "Joe_User@Example.com",
                &[Kind::Imap, Kind::Pop, Kind::Imap],
                true,
            ),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .ended;
    assert_eq!(ended, 2);
    assert!(!is_valid(&mut c, &imap).await);
    assert!(!is_valid(&mut c, &pop).await);
    assert!(is_valid(&mut c, &api).await);
    assert!(is_valid(&mut c, &admin).await);
    // An admin of another org is refused, and a missing user of the org is NOT_FOUND.
    let (company, _) = login(&mut c, COMPANY_ADMIN, Kind::Admin).await;
    assert_status(
        c.end_user_sessions(authed(end_req(JOE.0, &[], false), &company))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert!(is_valid(&mut c, &api).await);
    assert_status(
        c.end_user_sessions(authed(end_req("ghost@example.com", &[], false), &admin))
            .await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_sessions_refuses_bad_input_after_authentication() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_status(
        c.end_user_sessions(end_req(JOE.0, &[], false)).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    assert_status(
        c.end_user_sessions(authed(end_req(JOE.0, &[], false), "bogus"))
            .await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    let (token, _) = login(&mut c, JOE, Kind::Api).await;
    let long = "x".repeat(300);
    let cases: Vec<pb::EndUserSessionsRequest> = vec![
        end_req("", &[], false),
        end_req(&long, &[], false),
        end_req("joe user@example.com", &[], false),
        end_req(JOE.0, &[Kind::Unspecified], false),
        pb::EndUserSessionsRequest {
            kinds: vec![99],
            ..end_req(JOE.0, &[], false)
        },
        pb::EndUserSessionsRequest {
            kinds: vec![Kind::Api as i32; 5],
            ..end_req(JOE.0, &[], false)
        },
    ];
    for req in cases {
        assert_status(
            c.end_user_sessions(authed(req.clone(), &token)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
    assert!(is_valid(&mut c, &token).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_ends_the_other_sessions() {
    let server = TestServer::start_with(|c| c.policy.throttle_user.max_failures = 3).await;
    let mut c = server.client().await;
    let (me, _) = login(&mut c, JOE, Kind::Api).await;
    let (other_api, _) = login(&mut c, JOE, Kind::Api).await;
    let (imap, _) = login(&mut c, JOE, Kind::Imap).await;
    let (bystander, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;

    assert_status(
        c.change_password(authed(change_req("wrong", "new-pass-2"), &me))
            .await,
        Code::Unauthenticated,
        "BAD_CREDENTIALS",
    );
    assert!(
        is_valid(&mut c, &other_api).await,
        "a failed change ends nothing"
    );
    let ended = c
        .change_password(authed(change_req(JOE.1, "new-pass-2"), &me))
        .await
        .unwrap()
        .into_inner()
        .ended;
    assert_eq!(ended, 2);
    assert!(is_valid(&mut c, &me).await);
    assert!(!is_valid(&mut c, &other_api).await);
    assert!(!is_valid(&mut c, &imap).await);
    assert!(is_valid(&mut c, &bystander).await);
    assert_eq!(events(&server, EndReason::PasswordChanged).await.len(), 2);
    assert_status(
        try_login(&mut c, JOE, Kind::Api).await,
        Code::Unauthenticated,
        "BAD_CREDENTIALS",
    );
    login(&mut c, (JOE.0, "new-pass-2"), Kind::Api).await;

    // Bad input, and no token.
    for req in [
        change_req("new-pass-2", ""),
        change_req("", "x"),
        change_req("new-pass-2", &"p".repeat(1025)),
    ] {
        assert_status(
            c.change_password(authed(req, &me)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
    }
    assert_status(
        c.change_password(change_req("new-pass-2", "x")).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );

    // Throttled like every credential check: after the limit, even the
    // right current password is refused for the window.
    for _ in 0..3 {
        let _ = c
            .change_password(authed(change_req("wrong", "whatever"), &me))
            .await;
    }
    assert_status(
        c.change_password(authed(change_req("new-pass-2", "newer-3"), &me))
            .await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
    );
}

#[test]
fn change_password_requests_never_print_their_passwords() {
    let shown = format!("{:?}", change_req("old-secret-1", "new-secret-2"));
    assert!(
        !shown.contains("old-secret-1") && !shown.contains("new-secret-2"),
        "{shown}"
    );
}

/// `sessiond user passwd` on the store a running server uses.
fn passwd(db: &std::path::Path, user: &str, password: &str, extra: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["user", "passwd", user, "--store"])
        .arg(format!("sqlite://{}", db.display()))
        .args(CHEAP_HASH_FLAGS)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sessiond user passwd");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_passwd_ends_every_session_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let args = serve_args(&db);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::spawn(&refs);
    let mut c = connect(&server.url()).await;
    let (a, _) = login(&mut c, JOE, Kind::Api).await;
    let (b, _) = login(&mut c, JOE, Kind::Imap).await;
    let (bystander, _) = login(&mut c, USEREMAIL, Kind::Api).await;

    let out = passwd(&db, JOE.0, "cli-pass-1", &["--keep-sessions"]);
    assert!(out.contains("0 session(s) ended"), "{out}");
    assert!(is_valid(&mut c, &a).await && is_valid(&mut c, &b).await);

    let out = passwd(&db, JOE.0, "cli-pass-2", &[]);
    assert!(out.contains("2 session(s) ended"), "{out}");
    assert!(!is_valid(&mut c, &a).await);
    assert!(!is_valid(&mut c, &b).await);
    assert!(is_valid(&mut c, &bystander).await);
    login(&mut c, (JOE.0, "cli-pass-2"), Kind::Api).await;
    assert!(server.terminate().success());
}

/// Logins race an admin's EndUserSessions: every session whose login
/// returned before the call began is gone once it returns. Logins alternate
/// between `urls` (replicas of one store); the ending goes to the first.
async fn racing_logins_do_not_survive(urls: [String; 2]) {
    let mut c = connect(&urls[0]).await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut loggers = Vec::new();
    for i in 0..4 {
        let (stop, url) = (stop.clone(), urls[i % 2].clone());
        loggers.push(tokio::spawn(async move {
            let mut c = connect(&url).await;
            let mut made = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let kind = [Kind::Api, Kind::Imap][made.len() % 2];
                let (token, _) = login(&mut c, JOE, kind).await;
                made.push((Instant::now(), token));
            }
            made
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    let ended = c
        .end_user_sessions(authed(end_req(JOE.0, &[], false), &admin))
        .await
        .unwrap()
        .into_inner()
        .ended;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut before = 0;
    let mut other = connect(&urls[1]).await;
    for l in loggers {
        for (made, token) in l.await.unwrap() {
            if made < began {
                before += 1;
                assert!(
                    !is_valid(&mut other, &token).await,
                    "a session whose login returned before EndUserSessions survived it"
                );
            }
        }
    }
    assert!(
        before > 0 && ended as usize >= before,
        "ended {ended}, created before {before}"
    );
    assert!(is_valid(&mut c, &admin).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_logins_do_not_survive_end_user_sessions_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    let server = TestServer::start_with(|c| c.store = StoreUrl::SqliteFile(path)).await;
    racing_logins_do_not_survive([server.url(), server.url()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_logins_on_two_replicas_do_not_survive_end_user_sessions_on_redis() {
    let redis = RedisServer::start();
    let a = redis_replica(&redis, false, &[]);
    let b = redis_replica(&redis, false, &[]);
    racing_logins_do_not_survive([a.url(), b.url()]).await;
}

/// Logins with the old password race a ChangePassword: once it has
/// returned and the logins have finished, no session opened with the old
/// password is live, whenever its login ran.
async fn old_password_logins_do_not_survive_a_change(server: TestServer) {
    let mut c = server.client().await;
    let (me, _) = login(&mut c, JOE, Kind::Api).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut loggers = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), server.url());
        loggers.push(tokio::spawn(async move {
            let mut c = connect(&url).await;
            let mut made = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match try_login(&mut c, JOE, Kind::Imap).await {
                    Ok(r) => made.push(r.token),
                    // Refused after the change (and locked out after many refusals).
                    Err(s)
                        if matches!(s.code(), Code::Unauthenticated | Code::ResourceExhausted) => {}
                    Err(s) => panic!("unexpected {s:?}"),
                }
            }
            made
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.change_password(authed(change_req(JOE.1, "raced-pass-9"), &me))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut opened = 0;
    for l in loggers {
        for token in l.await.unwrap() {
            opened += 1;
            assert!(
                !is_valid(&mut c, &token).await,
                "a session opened with the old password outlived the change"
            );
        }
    }
    assert!(opened > 0, "the race opened sessions with the old password");
    assert!(is_valid(&mut c, &me).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_password_logins_do_not_survive_a_change_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    let server = TestServer::start_with(|c| c.store = StoreUrl::SqliteFile(path)).await;
    old_password_logins_do_not_survive_a_change(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_password_logins_do_not_survive_a_change_on_redis() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(|c| c.store = StoreUrl::Redis(redis.url())).await;
    old_password_logins_do_not_survive_a_change(server).await;
}
