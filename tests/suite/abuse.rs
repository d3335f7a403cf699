//! One caller against everyone else: each attack of the threat table
//! (SECURITY.md) reproduced over the network against the real server, and
//! shown to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use sessiond::domain::password::HashCost;
use sessiond::domain::rate::Rate;
use sessiond::pb::{self, Kind};
use sessiond::sessions::ServiceCredential;
use tonic::Code;
use tonic_types::StatusExt;

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

/// A Login asking for `kind`, reporting `client_address` about itself.
async fn login_reporting(
    c: &mut Client,
    who: (&str, &str),
    kind: Kind,
    client_address: &str,
) -> pb::LoginResponse {
    c.login(pb::LoginRequest {
        username: who.0.into(),
        password: who.1.into(),
        kind: kind as i32,
        client: Some(pb::ClientInfo {
            address: client_address.into(),
            user_agent: String::new(),
        }),
    })
    .await
    .expect("login")
    .into_inner()
}

/// Attack 1 (successful logins): one account's right password cannot mint
/// sessions without bound: successful logins are limited per user and per
/// address, answered like a lockout (RESOURCE_EXHAUSTED with retry info;
/// REST: 429 with Retry-After) before any hashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_logins_are_limited_per_user_and_per_address() {
    let server = TestServer::start_rest_with(|c| {
        c.policy.login_rate_user = Rate::per_minute(5);
        c.policy.login_rate_address = Rate::per_minute(8);
    })
    .await;
    let mut c = server.client().await;
    for _ in 0..5 {
        login(&mut c, JOE, Kind::Imap).await;
    }
    let refused = assert_status(
        try_login(&mut c, JOE, Kind::Imap).await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
    );
    let retry = refused.get_details_retry_info().expect("retry info");
    assert!(
        retry.retry_delay.is_some_and(|d| d > Duration::ZERO),
        "{retry:?}"
    );
    // Another user from the same address still logs in, until the
    // address's own limit (8 logins) is reached.
    for _ in 0..3 {
        login(&mut c, USEREMAIL, Kind::Api).await;
    }
    assert_status(
        try_login(&mut c, DOMAIN_ADMIN, Kind::Admin).await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
    );
    // The REST shim forwards its client's address: the same limit, in the
    // vendor's throttle shape.
    let resp = http()
        .post(format!("{}/api/Session/logon", server.rest()))
        .json(&json!({"username": COMPANY_ADMIN.0, "password": COMPANY_ADMIN.1}))
        .send()
        .await
        .expect("HTTP request");
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // A wrong password is not a login: it is not counted, only refused.
    let wrong = try_login(&mut c, (JOE.0, "wrong"), Kind::Api).await;
    assert_eq!(
        wrong.map(|_| ()).unwrap_err().code(),
        Code::ResourceExhausted
    );
}

/// Attack 1 (live sessions): a user past `max_sessions_per_user` live
/// sessions keeps logging in; the oldest session ends, as a real ending:
/// its token stops working, watchers get the event, the audit trail says
/// who (system) and why (SESSION_LIMIT). On SQLite and on Redis.
async fn the_session_cap_ends_the_oldest(store: Option<String>) {
    let server = TestServer::start_with(|c| {
        if let Some(url) = store {
            c.store = sessiond::store::StoreUrl::Redis(url);
        }
        c.policy.max_sessions_per_user = 3;
    })
    .await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let mut watch = c
        .watch_revocations(authed(pb::WatchRevocationsRequest::default(), &admin))
        .await
        .expect("watch")
        .into_inner();
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for kind in [Kind::Imap, Kind::Pop, Kind::Api, Kind::Imap, Kind::Api] {
        let (t, s) = login(&mut c, JOE, kind).await;
        tokens.push(t);
        ids.push(s.id);
    }
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(is_valid(&mut c, t).await, i >= 2, "session {i}");
    }
    for id in &ids[..2] {
        let event = next_event(&mut watch).await;
        assert_eq!(event.session_id, *id);
        assert_eq!(event.reason, pb::EndReason::SessionLimit as i32);
    }
    let records = c
        .list_audit_records(authed(pb::ListAuditRecordsRequest::default(), &admin))
        .await
        .expect("audit")
        .into_inner()
        .records;
    let capped: Vec<(&str, String)> = records
        .iter()
        .filter(|r| r.reason == pb::EndReason::SessionLimit as i32)
        .map(|r| (r.actor.as_str(), r.target.clone()))
        .collect();
    assert_eq!(
        capped,
        ids[..2]
            .iter()
            .map(|id| ("system", format!("session:{id}")))
            .collect::<Vec<_>>()
    );
    // The admin's own session (another user) was never touched.
    assert!(is_valid(&mut c, &admin).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_ends_the_oldest_on_sqlite() {
    the_session_cap_ends_the_oldest(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_ends_the_oldest_on_redis() {
    let redis = RedisServer::start();
    the_session_cap_ends_the_oldest(Some(redis.url())).await;
}

/// Attack 4 (rehash): a user whose stored hash has another cost than the
/// configured one gets a hash at the configured cost on its next
/// successful login, so unknown users (whose dummy follows the stored
/// hashes) and known ones converge to one cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_login_rehashes_at_the_configured_cost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sessions.db");
    let url = sessiond::store::StoreUrl::SqliteFile(db.clone());
    let first = TestServer::start_with(|c| c.store = url.clone()).await;
    first.running.shutdown().await.expect("clean stop");
    let hash_of = |who: &'static str| {
        let url = url.clone();
        async move {
            let store = sessiond::store::open(&url).await.expect("store");
            let hash = store
                .find_user(who)
                .await
                .expect("read")
                .expect("user")
                .password_hash;
            store.close().await.expect("close");
            hash
        }
    };
    let old = hash_of(JOE.0).await;
    assert!(old.contains("m=64,t=1"), "{old}");
    let server = TestServer::start_with(|c| {
        c.store = url.clone();
        c.policy.hash_cost = HashCost {
            memory_kib: 256,
            iterations: 2,
            parallelism: 1,
        };
    })
    .await;
    let mut c = server.client().await;
    // A wrong password changes nothing.
    let _ = try_login(&mut c, (JOE.0, "wrong-password"), Kind::Api).await;
    assert_eq!(hash_of(JOE.0).await, old);
    let (token, _) = login(&mut c, JOE, Kind::Api).await;
    let new = hash_of(JOE.0).await;
    assert!(new.contains("m=256,t=2"), "{new}");
    // The session just opened survives its own rehash, and the password
    // still works.
    assert!(is_valid(&mut c, &token).await);
    login(&mut c, JOE, Kind::Api).await;
    assert_eq!(hash_of(JOE.0).await, new, "rehashed once");
    // Users who did not log in keep their hash.
    assert!(hash_of(USEREMAIL.0).await.contains("m=64,t=1"));
}

/// Audit rows of an org, read by its admin.
async fn audit_rows(c: &mut Client, admin: &str) -> Vec<pb::AuditRecord> {
    c.list_audit_records(authed(
        pb::ListAuditRecordsRequest {
            page_size: 1000,
            page_token: String::new(),
        },
        admin,
    ))
    .await
    .expect("audit")
    .into_inner()
    .records
}

/// LogoutUser of one's own mailbox by token, nothing to end.
fn own_logout(token: &str) -> pb::LogoutUserRequest {
    pb::LogoutUserRequest {
        credentials: Some(pb::Credentials {
            user: JOE.0.into(),
            secret: Some(pb::credentials::Secret::Token(token.into())),
            client: String::new(),
        }),
        user: JOE.0.into(),
    }
}

/// Attack 5: ending calls that end nothing write no audit record, and
/// ending calls are limited per calling user (and per address); others'
/// endings go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_endings_leave_no_record_and_are_throttled() {
    let server = TestServer::start_with(|c| {
        c.policy.ending_rate_user = Rate::per_minute(20);
    })
    .await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;
    let before = audit_rows(&mut c, &admin).await.len();
    let mut throttled_after = None;
    for i in 0..100 {
        match c.logout_user(own_logout(&joe)).await {
            Ok(r) => assert_eq!(r.into_inner().ended, 0),
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert_eq!(reason(&s), "TOO_MANY_ATTEMPTS");
                assert!(s.get_details_retry_info().is_some());
                throttled_after = Some(i);
                break;
            }
        }
    }
    assert_eq!(throttled_after, Some(20), "throttled after the 20th call");
    assert_eq!(
        audit_rows(&mut c, &admin).await.len(),
        before,
        "calls that ended nothing were recorded"
    );
    // Joe's other ending calls share his limit; other users are not touched.
    let logoff = c.logoff(authed(pb::LogoffRequest::default(), &joe)).await;
    assert_status(logoff, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    let (mine, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest::default(), &mine))
        .await
        .expect("another user's logoff");
    // An ending that ends something is still recorded.
    login(&mut c, JOE, Kind::Imap).await;
    assert_eq!(logout_joe(&mut c).await, 1);
    let rows = audit_rows(&mut c, &admin).await;
    assert_eq!(rows.len(), before + 1);
    assert_eq!(rows[before].ended, 1);
}

/// Attack 5, per address: a flood from one address is refused before any
/// credential is looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_calls_are_limited_per_address() {
    let server = TestServer::start_with(|c| {
        c.policy.ending_rate_address = Rate::per_minute(10);
    })
    .await;
    let mut c = server.client().await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        let r = c
            .logoff(authed(pb::LogoffRequest::default(), "not-a-token"))
            .await;
        codes.push(r.map(|_| ()).unwrap_err().code());
    }
    assert_eq!(codes[..10], [Code::Unauthenticated; 10]);
    assert_eq!(codes[10..], [Code::ResourceExhausted; 2]);
}

/// Attack 5, the probe: a flood of LogoutUser calls for one's own mailbox
/// (token path, nothing to end) against a file store, while another user
/// logs in and off. Prints the other user's latencies and how the flood
/// was answered; with the defaults the flood is refused after 600 calls a
/// minute and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_an_ending_flood_leaves_others_their_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(|c| {
        c.store = sessiond::store::StoreUrl::SqliteFile(dir.path().join("p.db"));
    })
    .await;
    let mut c = server.client().await;
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;
    let quiet = other_user_latencies(&mut c, 30).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(std::sync::Mutex::new((0u32, 0u32)));
    let mut flood = Vec::new();
    for _ in 0..8 {
        let (mut c, stop, joe, counts) = (c.clone(), stop.clone(), joe.clone(), counts.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = c.logout_user(own_logout(&joe)).await.is_ok();
                let mut n = counts.lock().expect("counts");
                if ok {
                    n.0 += 1
                } else {
                    n.1 += 1
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let loud = other_user_latencies(&mut c, 30).await;
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    let (done, refused) = *counts.lock().expect("counts");
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let recorded = audit_rows(&mut c, &admin)
        .await
        .iter()
        .filter(|r| r.reason == pb::EndReason::LogoutUser as i32)
        .count();
    eprintln!(
        "ending flood: {done} answered, {refused} refused, {recorded} audit rows; \
         other user's Login median {:?} -> {:?}, Logoff median {:?} -> {:?}",
        quiet.0, loud.0, quiet.1, loud.1
    );
    assert_eq!(recorded, 0, "calls that ended nothing were recorded");
    assert!(done <= 600, "{done} calls answered within one window");
    assert!(refused > 0, "the flood was never throttled");
}

/// Median Login and Logoff latency of another user, over `n` rounds.
async fn other_user_latencies(c: &mut Client, n: usize) -> (Duration, Duration) {
    let (mut logins, mut logoffs) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let (token, _) = login(c, USEREMAIL, Kind::Api).await;
        logins.push(t.elapsed());
        let t = Instant::now();
        c.logoff(authed(pb::LogoffRequest::default(), &token))
            .await
            .expect("logoff");
        logoffs.push(t.elapsed());
    }
    logins.sort_unstable();
    logoffs.sort_unstable();
    (logins[n / 2], logoffs[n / 2])
}

/// Attack 11: the address a client reports about itself is kept, apart
/// from the address the server saw; the vendor's session list shows the
/// latter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_client_address_is_not_shown_as_the_peer() {
    let server = TestServer::start_rest().await;
    let mut c = server.client().await;
    let made = login_reporting(&mut c, DOMAIN_ADMIN, Kind::Admin, "203.0.113.7").await;
    let session = made.session.expect("session");
    assert_eq!(session.peer_address, "127.0.0.1");
    assert_eq!(session.client.expect("client").address, "203.0.113.7");
    let (status, _, listed) = json_of(
        http()
            .get(format!("{}/api/Session", server.rest()))
            .header("auth_token", &made.token)
            .send()
            .await
            .expect("HTTP request"),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let row = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["sessionId"] == json!(session.id))
        .expect("listed")
        .clone();
    assert_eq!(row["clientAddress"], json!("127.0.0.1"), "{row}");
    // ListSessions keeps both, apart.
    let listed = c
        .list_sessions(authed(pb::ListSessionsRequest::default(), &made.token))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    let mine = listed.iter().find(|s| s.id == session.id).expect("listed");
    assert_eq!(mine.peer_address, "127.0.0.1");
    assert_eq!(
        mine.client.as_ref().map(|c| c.address.as_str()),
        Some("203.0.113.7")
    );
}

/// Attack 2 on Redis (counters shared by replicas): guesses from one
/// address lock that address out of the account, not the owner logging
/// in from another; the user-wide cap is ten times slower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_guesses_from_elsewhere_do_not_lock_the_owner_out() {
    let redis = RedisServer::start();
    let server = TestServer::start_rest_with(|c| {
        c.store = sessiond::store::StoreUrl::Redis(redis.url());
    })
    .await;
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

/// Attack 6: org names that spell the Redis store's own key words (`orgs`,
/// `audit`) or a hash tag (`{sessiond}`, `a}b{c`) are data, never key
/// structure: every ending answers truthfully, ends what it should, and the
/// sweep keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_names_cannot_collide_with_or_steer_redis_keys() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(|c| {
        c.store = sessiond::store::StoreUrl::Redis(redis.url());
    })
    .await;
    let sessions = &server.running.sessions;
    let mut c = server.client().await;
    let (bystander, _) = login(&mut c, JOE, Kind::Api).await;
    for (i, org) in ["orgs", "audit", "{sessiond}", "a}b{c"]
        .into_iter()
        .enumerate()
    {
        let user = format!("admin{i}@hostile{i}.test");
        sessions
            .add_user(&user, org, sessiond::domain::Role::Admin, "hostile-pass-1")
            .await
            .unwrap_or_else(|e| panic!("org {org:?}: {e}"));
        let who = (user.as_str(), "hostile-pass-1");
        let (admin, _) = login(&mut c, who, Kind::Admin).await;
        let (api, _) = login(&mut c, who, Kind::Api).await;
        let (imap, _) = login(&mut c, who, Kind::Imap).await;

        let r = c
            .logout_user(pb::LogoutUserRequest {
                credentials: Some(pb::Credentials {
                    user: user.clone(),
                    secret: Some(pb::credentials::Secret::Password("hostile-pass-1".into())),
                    client: String::new(),
                }),
                user: user.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("org {org:?}: LogoutUser {s:?}"));
        assert_eq!(r.into_inner().ended, 1, "org {org:?}");
        assert!(!is_valid(&mut c, &imap).await, "org {org:?}");

        let r = c
            .logout_all(pb::LogoutAllRequest {
                username: user.clone(),
                password: "hostile-pass-1".into(),
            })
            .await
            .unwrap_or_else(|s| panic!("org {org:?}: LogoutAll {s:?}"));
        assert_eq!(r.into_inner().ended, 1, "org {org:?}");
        assert!(!is_valid(&mut c, &api).await, "org {org:?}");

        c.logoff(authed(pb::LogoffRequest {}, &admin))
            .await
            .unwrap_or_else(|s| panic!("org {org:?}: Logoff {s:?}"));
        assert!(!is_valid(&mut c, &admin).await, "org {org:?}");
    }
    sessions
        .sweep(Duration::from_secs(3600), Duration::from_secs(3600))
        .await
        .expect("the sweep still works");
    assert!(is_valid(&mut c, &bystander).await, "another org untouched");
}
