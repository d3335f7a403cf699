//! One caller against everyone else: each attack of the threat table
//! (SECURITY.md) reproduced over the network against the real server, and
//! shown to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use sessiond::domain::password::HashCost;
use sessiond::pb::{self, Kind};
use sessiond::sessions::ServiceCredential;
use tonic::Code;

const SERVICE_SECRET: &str = "service-credential-0123456789abcdef-xyz";

/// A RAS logon from a given loopback source address.
async fn ras_logon_from(
    base: &str,
    from: &str,
    who: (&str, &str),
) -> (u16, String, serde_json::Value) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().expect("ip"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    json_of(
        client
            .post(format!("{base}/api/Session/logon"))
            .json(&json!({"username": who.0, "password": who.1}))
            .send()
            .await
            .expect("HTTP request"),
    )
    .await
}

/// Attack 1: a flood of correct logins (Argon2 queued) while another user
/// validates. Before: the logins held every in-flight permit while waiting
/// for Argon2 and validations were shed. Now Argon2 work has its own
/// bounded queue and validations keep their budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_does_not_shed_validations() {
    let server = TestServer::start_with(|c| {
        c.max_in_flight = 16;
        // Generous: this test is about admission, not the runtime's queue.
        c.max_queue_delay = Duration::from_secs(2);
        c.policy.hash_concurrency = 1;
        c.policy.hash_cost = HashCost {
            memory_kib: 4096,
            iterations: 2,
            parallelism: 1,
        };
    })
    .await;
    let mut probe = server.client().await;
    let (token, _) = login(&mut probe, USEREMAIL, Kind::Api).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..4 {
        let c = server.client().await;
        for _ in 0..32 {
            let (mut c, stop) = (c.clone(), stop.clone());
            flood.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = try_login(&mut c, JOE, Kind::Imap).await;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut ok, mut latencies) = (0, Vec::new());
    for _ in 0..100 {
        let t = Instant::now();
        if validate(&mut probe, &token).await.is_ok() {
            ok += 1;
        }
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    latencies.sort_unstable();
    eprintln!(
        "validations under a login flood: {ok}/100 succeeded, median {:?}, p90 {:?}",
        latencies[50], latencies[90]
    );
    assert!(ok >= 95, "only {ok}/100 validations succeeded");
}

/// Attack 2: wrong tokens presented for a username (OMA logout_user) cost
/// the owner nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_never_lock_the_owner_out() {
    let server = TestServer::start_rest().await;
    for _ in 0..30 {
        let (_, _, answer) = json_of(
            http()
                .post(format!("{}/api/logout_user", server.rest()))
                .json(&json!({
                    "credentials": {"user": COMPANY_ADMIN.0, "token": "x"},
                    "user": COMPANY_ADMIN.0
                }))
                .send()
                .await
                .expect("HTTP request"),
        )
        .await;
        assert_eq!(answer["success"], json!(false), "{answer}");
    }
    let (status, _, body) = ras_logon(&server.rest(), COMPANY_ADMIN).await;
    assert_eq!(status, 200, "owner locked out: {body}");
}

/// Attack 2 (and 3, whose table-filling half is in the throttle's unit
/// tests): guesses from one address lock that address out of the account,
/// not the owner logging in from another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_from_elsewhere_do_not_lock_the_owner_out() {
    let server = TestServer::start_rest().await;
    let mut locked = false;
    for _ in 0..15 {
        let (status, _, _) = ras_logon_from(
            &server.rest(),
            "127.0.0.2",
            (COMPANY_ADMIN.0, "wrong-guess"),
        )
        .await;
        locked |= status == 429;
    }
    assert!(locked, "the guessing address was never locked");
    let (status, _, _) = ras_logon_from(&server.rest(), "127.0.0.2", COMPANY_ADMIN).await;
    assert_eq!(status, 429, "the guessing address stays locked");
    let (status, _, body) = ras_logon_from(&server.rest(), "127.0.0.1", COMPANY_ADMIN).await;
    assert_eq!(status, 200, "owner locked out: {body}");
}

/// Attack 8: one principal cannot open streams without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_per_principal() {
    let server = TestServer::start_with(|c| c.policy.max_watches_per_principal = 4).await;
    let mut c = server.client().await;
    let (a, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (b, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (other, _) = login(&mut c, COMPANY_ADMIN, Kind::Admin).await;
    let req = || pb::WatchRevocationsRequest::default();
    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..50 {
        let token = if i % 2 == 0 { &a } else { &b };
        match c.watch_revocations(authed(req(), token)).await {
            Ok(s) => open.push(s.into_inner()),
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                refused += 1;
            }
        }
    }
    eprintln!(
        "watch streams of one admin: {} opened, {refused} refused",
        open.len()
    );
    assert_eq!(open.len(), 4, "two sessions of one user share the cap");
    c.watch_revocations(authed(req(), &other))
        .await
        .expect("another admin is not affected");
    open.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.watch_revocations(authed(req(), &a)).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("a closed stream never gave its place back: {s:?}"),
        }
    }
}

/// Attack 9: an admin's mail or API token carries no console power.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_mail_token_has_no_console_power() {
    let server = TestServer::start_rest().await;
    let mut c = server.client().await;
    let (imap, _) = login(&mut c, DOMAIN_ADMIN, Kind::Imap).await;
    let (console, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    login(&mut c, JOE, Kind::Imap).await;
    let list = |token: String| {
        let base = server.rest();
        async move {
            http()
                .get(format!("{base}/api/Session"))
                .header("auth_token", token)
                .send()
                .await
                .expect("HTTP request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(list(imap.clone()).await, 403);
    assert_eq!(list(console.clone()).await, 200);
    let listed = c
        .list_sessions(authed(pb::ListSessionsRequest::default(), &imap))
        .await;
    assert_status(
        listed.map(|_| ()),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let audit = c
        .list_audit_records(authed(pb::ListAuditRecordsRequest::default(), &imap))
        .await;
    assert_status(
        audit.map(|_| ()),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let watch = c
        .watch_revocations(authed(pb::WatchRevocationsRequest::default(), &imap))
        .await;
    assert_status(
        watch.map(|_| ()),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let logout = |token: &str| pb::LogoutUserRequest {
        credentials: Some(pb::Credentials {
            user: DOMAIN_ADMIN.0.into(),
            secret: Some(pb::credentials::Secret::Token(token.into())),
            client: String::new(),
        }),
        user: JOE.0.into(),
    };
    let by_imap = c.logout_user(logout(&imap)).await;
    assert_status(
        by_imap.map(|_| ()),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let ended = c
        .logout_user(logout(&console))
        .await
        .expect("console token");
    assert_eq!(ended.into_inner().ended, 1);
}

/// Attack 10: the service credential is trimmed, must not be guessable,
/// and guessing it is throttled per address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_credential_is_trimmed_strong_and_throttled() {
    assert!(ServiceCredential::new(&"a".repeat(64)).is_err());
    assert!(ServiceCredential::new(&"ab".repeat(32)).is_err());
    assert!(ServiceCredential::new(&format!("  {}  ", "x".repeat(31))).is_err());
    let server = TestServer::start_with(|c| {
        c.policy.throttle_address.max_failures = 20;
        c.policy.service_credential =
            Some(ServiceCredential::new(&format!("{SERVICE_SECRET}\n")).expect("strong"));
    })
    .await;
    let mut c = server.client().await;
    let req = || pb::WatchRevocationsRequest::default();
    c.watch_revocations(authed(req(), SERVICE_SECRET))
        .await
        .expect("the trimmed secret works");
    let mut throttled_after = None;
    for i in 0..100 {
        let guess = format!("service-credential-guess-{i:015}");
        let err = c
            .watch_revocations(authed(req(), &guess))
            .await
            .expect_err("a guess");
        if err.code() == Code::ResourceExhausted {
            throttled_after = Some(i);
            break;
        }
    }
    let n = throttled_after.expect("guesses were never throttled");
    assert!(n <= 21, "throttled only after {n} guesses");
    let err = c
        .watch_revocations(authed(req(), SERVICE_SECRET))
        .await
        .expect_err("the address is locked, even with the right secret");
    assert_eq!(err.code(), Code::ResourceExhausted);
}

/// Attack 12: a cursor far ahead is refused without the store-wide newest
/// sequence (other orgs' activity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_cursor_does_not_reveal_the_newest_sequence() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for _ in 0..3 {
        let (t, _) = login(&mut c, USEREMAIL, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest::default(), &t))
            .await
            .expect("logoff");
    }
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let req = pb::WatchRevocationsRequest {
        after_sequence: Some(1_000_000),
        ..Default::default()
    };
    let err = c
        .watch_revocations(authed(req, &admin))
        .await
        .expect_err("ahead of the newest event");
    assert_eq!(err.code(), Code::InvalidArgument);
    let numbers: Vec<&str> = err
        .message()
        .split(|ch: char| !ch.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(numbers, ["1000000"], "{}", err.message());
}

/// Attack 4: after the Argon2 cost is raised, stored hashes keep their old
/// cost; an unknown user must cost what a wrong password costs, not the
/// new cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cost_what_stored_hashes_cost_after_a_cost_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sessions.db");
    let cost = |memory_kib| HashCost {
        memory_kib,
        iterations: 2,
        parallelism: 1,
    };
    let first = TestServer::start_with(|c| {
        c.store = sessiond::store::StoreUrl::SqliteFile(db.clone());
        c.policy.hash_cost = cost(2 * 1024);
    })
    .await;
    first.running.shutdown().await.expect("clean stop");
    let server = TestServer::start_with(|c| {
        c.store = sessiond::store::StoreUrl::SqliteFile(db.clone());
        c.policy.hash_cost = cost(32 * 1024);
        c.policy.throttle_user.max_failures = u32::MAX;
        c.policy.throttle_address.max_failures = u32::MAX;
    })
    .await;
    let mut c = server.client().await;
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..15 {
        let t = Instant::now();
        let _ = try_login(&mut c, (JOE.0, "guess"), Kind::Api).await;
        wrong.push(t.elapsed());
        let t = Instant::now();
        let nobody = format!("nobody{i}@example.com");
        let _ = try_login(&mut c, (&nobody, "guess"), Kind::Api).await;
        unknown.push(t.elapsed());
    }
    unknown.sort();
    wrong.sort();
    let (u, w) = (unknown[7], wrong[7]);
    let ratio = u.as_secs_f64() / w.as_secs_f64();
    eprintln!("after a cost raise: unknown user {u:?}, wrong password {w:?}, ratio {ratio:.2}");
    assert!(
        (0.5..2.0).contains(&ratio),
        "timing tells users apart: {ratio:.2}"
    );
}
