//! Login and ValidateSession over real gRPC: kinds, credentials, expiry,
//! idle refresh and throttling.

use std::time::Duration;

use crate::support::*;
use sessiond::pb::{self, Kind};
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn login_returns_a_token_that_validates() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for kind in [Kind::Api, Kind::Imap, Kind::Pop] {
        let (token, session) = login(&mut c, JOE, kind).await;
        assert_eq!(token.len(), 43, "256-bit base64url token");
        assert!(session.id > 0);
        assert_eq!(session.kind, kind as i32);
        assert_eq!(session.user, "joe_user@example.com");
        assert_eq!(session.org, "example.com");
        let (created, expires) = (session.created_at.unwrap(), session.expires_at.unwrap());
        assert_eq!(
            expires.seconds - created.seconds,
            12 * 3600,
            "default lifetime"
        );
        let seen = validate(&mut c, &token).await.unwrap();
        assert_eq!(seen.id, session.id);
    }
}

#[tokio::test]
async fn usernames_are_case_insensitive() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (_, s) = login(&mut c, ("Joe_User@EXAMPLE.com", JOE.1), Kind::Api).await;
    assert_eq!(s.user, "joe_user@example.com");
}

#[tokio::test]
async fn session_ids_increase_and_tokens_differ() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut last = 0;
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..20 {
        let (t, s) = login(&mut c, USEREMAIL, Kind::Api).await;
        assert!(s.id > last);
        last = s.id;
        assert!(tokens.insert(t));
    }
}

#[tokio::test]
async fn admin_sessions_only_for_admins() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (_, s) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    assert_eq!(s.kind, Kind::Admin as i32);
    assert_status(
        try_login(&mut c, JOE, Kind::Admin).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // A wrong password for ADMIN is still UNAUTHENTICATED: the role is not revealed.
    assert_status(
        try_login(&mut c, (JOE.0, "wrong"), Kind::Admin).await,
        Code::Unauthenticated,
        "BAD_CREDENTIALS",
    );
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let wrong = assert_status(
        try_login(&mut c, (JOE.0, "not-his-password"), Kind::Api).await,
        Code::Unauthenticated,
        "BAD_CREDENTIALS",
    );
    let unknown = assert_status(
        try_login(&mut c, ("nobody@example.com", "whatever"), Kind::Api).await,
        Code::Unauthenticated,
        "BAD_CREDENTIALS",
    );
    assert_eq!(wrong.message(), unknown.message());
}

#[tokio::test]
async fn disabled_users_cannot_log_in_and_their_sessions_end() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (token, _) = login(&mut c, JOE, Kind::Imap).await;
    server
        .running
        .sessions
        .set_disabled(JOE.0, true)
        .await
        .unwrap();
    assert!(!is_valid(&mut c, &token).await);
    let disabled = assert_status(
        try_login(&mut c, JOE, Kind::Api).await,
        Code::Unauthenticated,
        "BAD_CREDENTIALS",
    );
    let unknown = try_login(&mut c, ("ghost@example.com", "x"), Kind::Api)
        .await
        .unwrap_err();
    assert_eq!(disabled.message(), unknown.message());
    server
        .running
        .sessions
        .set_disabled(JOE.0, false)
        .await
        .unwrap();
    login(&mut c, JOE, Kind::Api).await;
}

#[tokio::test]
async fn bad_login_fields_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let cases: Vec<(pb::LoginRequest, &str)> = vec![
        (req("", "x", Kind::Api as i32), "username"),
        (req(JOE.0, "", Kind::Api as i32), "password"),
        (req(&"a".repeat(255), "x", Kind::Api as i32), "username"),
        (req(JOE.0, &"p".repeat(1025), Kind::Api as i32), "password"),
        (req(JOE.0, JOE.1, Kind::Unspecified as i32), "kind"),
        (req(JOE.0, JOE.1, 42), "kind"),
        (req(JOE.0, JOE.1, -1), "kind"),
        (
            req("jo\u{7}e@example.com", "x", Kind::Api as i32),
            "username",
        ),
    ];
    for (request, field) in cases {
        let status = assert_status(
            c.login(request).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata.get("field").map(String::as_str), Some(field));
        let bad = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations[0].field, field);
    }
    let mut long_client = req(JOE.0, JOE.1, Kind::Api as i32);
    long_client.client = Some(pb::ClientInfo {
        address: "1".repeat(300),
        user_agent: String::new(),
    });
    assert_status(
        c.login(long_client).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
}

fn req(username: &str, password: &str, kind: i32) -> pb::LoginRequest {
    pb::LoginRequest {
        username: username.into(),
        password: password.into(),
        kind,
        client: None,
    }
}

#[tokio::test]
async fn client_info_is_kept_with_the_session() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut r = req(JOE.0, JOE.1, Kind::Imap as i32);
    r.client = Some(pb::ClientInfo {
        address: "203.0.113.9".into(),
        user_agent: "dovecot-frontend/1".into(),
    });
    let s = c.login(r).await.unwrap().into_inner().session.unwrap();
    let client = s.client.unwrap();
    assert_eq!(client.address, "203.0.113.9");
    assert_eq!(client.user_agent, "dovecot-frontend/1");
    // Without client info the peer address is recorded.
    let (_, s) = login(&mut c, JOE, Kind::Imap).await;
    assert!(s.client.unwrap().address.starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn malformed_unknown_and_empty_tokens_are_unauthenticated() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_status(
        validate(&mut c, "").await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    for bad in [
        "abc",
        &"x".repeat(44),
        &"é".repeat(30),
        &"A".repeat(1 << 20),
    ] {
        assert_status(
            validate(&mut c, bad).await,
            Code::Unauthenticated,
            "TOKEN_INVALID",
        );
    }
    // Well-formed but never issued.
    let unknown = "qN0bVCFpfTdpkDh2kwmWTXDmWR3FvoTsrk12tVru5ns";
    assert_status(
        validate(&mut c, unknown).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_use_refreshes_them() {
    // The default touch interval (60 s) is far longer than this idle timeout:
    // use must still keep the session alive.
    let server = TestServer::start_with(|c| {
        for l in c.policy.lifetimes.values_mut() {
            l.idle = Duration::from_millis(1500);
        }
    })
    .await;
    let mut c = server.client().await;
    let (kept, _) = login(&mut c, JOE, Kind::Imap).await;
    let (idle, _) = login(&mut c, JOE, Kind::Pop).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(is_valid(&mut c, &kept).await, "used session stays alive");
    }
    assert_status(
        validate(&mut c, &idle).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(
        !is_valid(&mut c, &kept).await,
        "then expires when left idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_lifetime_ends_even_busy_sessions() {
    let server = TestServer::start_with(|c| {
        for l in c.policy.lifetimes.values_mut() {
            l.absolute = Duration::from_millis(1500);
        }
        c.policy.touch_interval = Duration::ZERO;
    })
    .await;
    let mut c = server.client().await;
    let (token, s) = login(&mut c, JOE, Kind::Api).await;
    let (created, expires) = (s.created_at.unwrap(), s.expires_at.unwrap());
    let ms = (expires.seconds - created.seconds) * 1000
        + i64::from(expires.nanos - created.nanos) / 1_000_000;
    assert_eq!(ms, 1500);
    for _ in 0..2 {
        assert!(is_valid(&mut c, &token).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!is_valid(&mut c, &token).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_kind_lifetimes_apply() {
    let server = TestServer::start_with(|c| {
        c.policy
            .lifetimes
            .get_mut(&sessiond::domain::Kind::Imap)
            .unwrap()
            .idle = Duration::from_millis(300);
    })
    .await;
    let mut c = server.client().await;
    let (imap, _) = login(&mut c, JOE, Kind::Imap).await;
    let (api, _) = login(&mut c, JOE, Kind::Api).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!is_valid(&mut c, &imap).await);
    assert!(is_valid(&mut c, &api).await);
}

#[tokio::test]
async fn repeated_failures_are_throttled_with_retry_info() {
    let server = TestServer::start_with(|c| {
        c.policy.throttle_user.max_failures = 3;
        c.policy.throttle_user.window = Duration::from_secs(60);
    })
    .await;
    let mut c = server.client().await;
    for _ in 0..3 {
        assert_status(
            try_login(&mut c, (JOE.0, "guess"), Kind::Api).await,
            Code::Unauthenticated,
            "BAD_CREDENTIALS",
        );
    }
    // Locked: even the right password is refused, so guessing gains nothing.
    let status = assert_status(
        try_login(&mut c, JOE, Kind::Api).await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
    );
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("delay");
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(60));
    // Other users are not affected.
    login(&mut c, USEREMAIL, Kind::Api).await;
    // LogoutAll with the locked user's credentials is throttled too.
    let r = c
        .logout_all(pb::LogoutAllRequest {
            username: JOE.0.into(),
            password: JOE.1.into(),
        })
        .await;
    assert_status(r, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_window_passes() {
    let server = TestServer::start_with(|c| {
        c.policy.throttle_user.max_failures = 2;
        c.policy.throttle_user.window = Duration::from_millis(800);
    })
    .await;
    let mut c = server.client().await;
    for _ in 0..2 {
        let _ = try_login(&mut c, (JOE.0, "guess"), Kind::Api).await;
    }
    assert_status(
        try_login(&mut c, JOE, Kind::Api).await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    login(&mut c, JOE, Kind::Api).await;
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let login = pb::LoginRequest {
        username: "joe".into(),
        password: "hunter2-secret".into(),
        kind: 2,
        client: None,
    };
    let validate = pb::ValidateSessionRequest {
        token: "tok-secret-value".into(),
    };
    let creds = pb::Credentials {
        user: "joe".into(),
        secret: Some(pb::credentials::Secret::Password("hunter2-secret".into())),
        client: String::new(),
    };
    let answer = pb::LoginResponse {
        token: "tok-secret-value".into(),
        session: None,
    };
    let all = pb::LogoutAllRequest {
        username: "joe".into(),
        password: "hunter2-secret".into(),
    };
    let text = format!("{login:?} {validate:?} {creds:?} {answer:?} {all:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("tok-secret"), "{text}");
    assert!(text.contains("joe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_slip_under_the_limit() {
    let server = TestServer::start_with(|c| {
        c.policy.throttle_user.max_failures = 5;
        c.policy.throttle_user.window = Duration::from_secs(60);
        c.policy.hash_concurrency = 2;
    })
    .await;
    let c = server.client().await;
    let mut guesses = Vec::new();
    for i in 0..40 {
        let mut c = c.clone();
        guesses.push(tokio::spawn(async move {
            let guess = format!("guess-{i}");
            try_login(&mut c, (JOE.0, guess.as_str()), Kind::Api)
                .await
                .unwrap_err()
                .code()
        }));
    }
    let mut checked = 0;
    for g in guesses {
        match g.await.unwrap() {
            Code::Unauthenticated => checked += 1,
            Code::ResourceExhausted => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Checks happen inside the 2 hashing slots: at most one extra try.
    assert!(
        checked <= 6,
        "{checked} passwords were tried; the limit is 5 (+1 in flight)"
    );
    let mut c = c.clone();
    assert_status(
        try_login(&mut c, JOE, Kind::Api).await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_right_passwords_is_not_locked_out() {
    let server = TestServer::start_with(|c| c.policy.throttle_user.max_failures = 3).await;
    let c = server.client().await;
    let mut logins = Vec::new();
    for _ in 0..30 {
        let mut c = c.clone();
        logins.push(tokio::spawn(async move {
            try_login(&mut c, JOE, Kind::Api).await.is_ok()
        }));
    }
    for l in logins {
        assert!(l.await.unwrap(), "a right password in a burst was refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cost_the_same_time_as_wrong_passwords() {
    // A real Argon2 cost (smaller than production, so the test stays short):
    // the demo users are hashed with it, and so is the dummy hash.
    let server = TestServer::start_with(|c| {
        c.policy.hash_cost = sessiond::domain::password::HashCost {
            memory_kib: 8 * 1024,
            iterations: 2,
            parallelism: 1,
        };
        c.policy.throttle_user.max_failures = u32::MAX;
        c.policy.throttle_address.max_failures = u32::MAX;
    })
    .await;
    let mut c = server.client().await;
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..25 {
        let t = std::time::Instant::now();
        let _ = try_login(
            &mut c,
            (&format!("nobody{i}@example.com"), "guess"),
            Kind::Api,
        )
        .await;
        unknown.push(t.elapsed());
        let t = std::time::Instant::now();
        let _ = try_login(&mut c, (JOE.0, "guess"), Kind::Api).await;
        wrong.push(t.elapsed());
    }
    unknown.sort();
    wrong.sort();
    let (u, w) = (unknown[12], wrong[12]);
    let ratio = u.as_secs_f64() / w.as_secs_f64();
    eprintln!("median login time: unknown user {u:?}, wrong password {w:?}, ratio {ratio:.2}");
    assert!(
        (0.67..1.5).contains(&ratio),
        "timing tells users apart: {ratio:.2}"
    );
}
