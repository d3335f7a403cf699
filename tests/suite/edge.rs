//! `sessiond edge` and the validator behind it, against a real sessiond:
//! answers from memory, every kind of ending refused promptly, bad tokens
//! without an upstream storm, the concurrency bound, the calls it does not
//! serve, forward auth, and failing closed when upstream dies (then healing).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use sessiond::edge::{self, EdgeConfig, RunningEdge};
use sessiond::pb::{self, Kind};
use sessiond::sessions::ServiceCredential;
use sessiond::validator::{Credential, FeedState, ValidatorConfig};
use tonic::Code;

pub const SERVICE_SECRET: &str = "edge-service-credential-0123456789abcdef";
const ADMIN: (&str, &str) = ("domain_admin@example.com", "pencil75");
const JOE: (&str, &str) = ("joe_user@example.com", "joe-pass-1");

async fn upstream() -> TestServer {
    TestServer::start_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
        // Many logins of one user in a row.
        c.policy.max_sessions_per_user = 0;
    })
    .await
}

pub fn edge_config(upstream: &str) -> EdgeConfig {
    let mut v = ValidatorConfig::new(upstream, Credential::service(SERVICE_SECRET));
    v.max_staleness = Duration::from_millis(1000);
    let mut e = EdgeConfig::new(v, "127.0.0.1:0".parse().unwrap());
    e.auth_addr = Some("127.0.0.1:0".parse().unwrap());
    e.auth_cookie = Some("sid".into());
    e
}

pub async fn start_edge(config: EdgeConfig) -> (RunningEdge, Client) {
    let edge = edge::start(config).await.expect("edge starts");
    assert!(
        edge.validator.ready(Duration::from_secs(10)).await,
        "the edge's feed never became fresh"
    );
    let client = connect(&format!("http://{}", edge.grpc_addr)).await;
    (edge, client)
}

/// Validates at the edge until the token is refused; how long it took.
async fn refused_after(edge: &mut Client, token: &str) -> Duration {
    let t = Instant::now();
    loop {
        match validate(edge, token).await {
            Err(s) if s.code() == Code::Unauthenticated => return t.elapsed(),
            Err(s) => panic!("unexpected answer {s:?}"),
            Ok(_) => {}
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still valid after 5 s"
        );
        tokio::task::yield_now().await;
    }
}

async fn warm(edge: &mut Client, token: &str) {
    for _ in 0..3 {
        validate(edge, token).await.expect("valid at the edge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_tokens_are_answered_from_memory_with_sessiond_s_messages() {
    let server = upstream().await;
    let (edge, mut e) = start_edge(edge_config(&server.url())).await;
    let mut c = server.client().await;
    let (token, session) = login(&mut c, JOE, Kind::Api).await;
    let before = edge.validator.stats();
    for _ in 0..1000 {
        let got = validate(&mut e, &token).await.unwrap();
        assert_eq!(got.id, session.id);
        assert_eq!(got.user, session.user);
        assert_eq!(got.org, session.org);
        assert!(got.idle_expires_at.is_some());
    }
    let after = edge.validator.stats();
    assert_eq!(after.upstream_calls - before.upstream_calls, 1);
    assert!(after.from_memory - before.from_memory >= 999);
    assert_eq!(edge.validator.state(), FeedState::Fresh);
    // The same refusals as sessiond, by code and ErrorInfo reason.
    for (token, want) in [("", "TOKEN_MISSING"), ("not-a-token", "TOKEN_INVALID")] {
        let at_edge = validate(&mut e, token).await.unwrap_err();
        let at_sessiond = validate(&mut c, token).await.unwrap_err();
        assert_eq!(at_edge.code(), at_sessiond.code());
        assert_eq!(reason(&at_edge), want);
        assert_eq!(reason(&at_sessiond), want);
    }
    edge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_ending_is_refused_at_the_edge() {
    let server = upstream().await;
    let (edge, mut e) = start_edge(edge_config(&server.url())).await;
    let mut c = server.client().await;
    let mut took = Vec::new();

    // Logoff.
    let (t, _) = login(&mut c, JOE, Kind::Api).await;
    warm(&mut e, &t).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    took.push(("Logoff", refused_after(&mut e, &t).await));

    // LogoffOther.
    let (admin, _) = login(&mut c, ADMIN, Kind::Admin).await;
    let (t, s) = login(&mut c, ADMIN, Kind::Admin).await;
    warm(&mut e, &t).await;
    c.logoff_other(authed(
        pb::LogoffOtherRequest {
            session_id: s.id,
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    took.push(("LogoffOther", refused_after(&mut e, &t).await));

    // LogoutUser (mail sessions of one mailbox).
    let (t, _) = login(&mut c, JOE, Kind::Imap).await;
    warm(&mut e, &t).await;
    c.logout_user(pb::LogoutUserRequest {
        credentials: Some(pb::Credentials {
            user: ADMIN.0.into(),
            secret: Some(pb::credentials::Secret::Password(ADMIN.1.into())),
            client: String::new(),
        }),
        user: JOE.0.into(),
    })
    .await
    .unwrap();
    took.push(("LogoutUser", refused_after(&mut e, &t).await));

    // LogoutAll (API sessions of the org).
    let (t, _) = login(&mut c, JOE, Kind::Api).await;
    warm(&mut e, &t).await;
    c.logout_all(pb::LogoutAllRequest {
        username: ADMIN.0.into(),
        password: ADMIN.1.into(),
    })
    .await
    .unwrap();
    took.push(("LogoutAll", refused_after(&mut e, &t).await));

    // EndUserSessions.
    let (t, _) = login(&mut c, JOE, Kind::Pop).await;
    warm(&mut e, &t).await;
    c.end_user_sessions(authed(
        pb::EndUserSessionsRequest {
            user: JOE.0.into(),
            kinds: vec![],
            keep_current: false,
        },
        &admin,
    ))
    .await
    .unwrap();
    took.push(("EndUserSessions", refused_after(&mut e, &t).await));

    // A password change ends the user's other sessions.
    let (t, _) = login(&mut c, JOE, Kind::Api).await;
    let (current, _) = login(&mut c, JOE, Kind::Api).await;
    warm(&mut e, &t).await;
    c.change_password(authed(
        pb::ChangePasswordRequest {
            current_password: JOE.1.into(),
            new_password: "joe-pass-2-longer".into(),
        },
        &current,
    ))
    .await
    .unwrap();
    took.push(("ChangePassword", refused_after(&mut e, &t).await));

    // A user disabled by the operator.
    let (t, _) = login(&mut c, ("useremail@company.com", "mypassword"), Kind::Api).await;
    warm(&mut e, &t).await;
    server
        .running
        .sessions
        .set_disabled("useremail@company.com", true)
        .await
        .unwrap();
    took.push(("disabled", refused_after(&mut e, &t).await));

    eprintln!("ack to first refusal at the edge: {took:?}");
    edge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_deadline_is_enforced_without_asking_upstream() {
    let server = TestServer::start_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
        c.policy.lifetimes.insert(
            sessiond::domain::Kind::Api,
            sessiond::sessions::Lifetimes {
                idle: Duration::from_secs(600),
                absolute: Duration::from_secs(2),
            },
        );
        // No sweep: the edge must not wait for the upstream's expiry event.
        c.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let (edge, mut e) = start_edge(edge_config(&server.url())).await;
    let mut c = server.client().await;
    let (t, _) = login(&mut c, JOE, Kind::Api).await;
    warm(&mut e, &t).await;
    let calls = edge.validator.stats().upstream_calls;
    let took = refused_after(&mut e, &t).await;
    assert!(
        took >= Duration::from_millis(500),
        "refused too early: {took:?}"
    );
    assert_eq!(edge.validator.stats().upstream_calls, calls);
    edge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_cost_no_upstream_storm() {
    let server = upstream().await;
    let mut config = edge_config(&server.url());
    config.validator.max_upstream_calls = 4;
    let (edge, e) = start_edge(config).await;
    let base = edge.validator.stats().upstream_calls;

    // Malformed and oversized tokens: refused without asking upstream.
    let long = "x".repeat(4096);
    for bad in ["short", "+".repeat(43).as_str(), long.as_str()] {
        let s = validate(&mut e.clone(), bad).await.unwrap_err();
        assert_eq!(reason(&s), "TOKEN_INVALID");
    }
    assert_eq!(edge.validator.stats().upstream_calls, base);

    // A flood of one well-formed unknown token: one upstream call.
    let unknown = "A".repeat(43);
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let mut e = e.clone();
            let t = unknown.clone();
            tokio::spawn(async move { validate(&mut e, &t).await })
        })
        .collect();
    for f in flood {
        let s = f.await.unwrap().unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    let one = edge.validator.stats().upstream_calls - base;
    assert_eq!(one, 1, "one unknown token cost {one} upstream calls");

    // A flood of distinct unknown tokens: bounded by the concurrency limit;
    // the excess answers UNAVAILABLE at once, never valid.
    let flood: Vec<_> = (0..300)
        .map(|i| {
            let mut e = e.clone();
            let t = format!("{:A>43}", format!("B{i}"));
            tokio::spawn(async move { validate(&mut e, &t).await })
        })
        .collect();
    let (mut refused, mut unavailable) = (0, 0);
    for f in flood {
        match f.await.unwrap() {
            Ok(s) => panic!("an unknown token was valid: {s:?}"),
            Err(s) if s.code() == Code::Unauthenticated => refused += 1,
            Err(s) if s.code() == Code::Unavailable => unavailable += 1,
            // Shed by the edge's own admission on a host short of CPU: a
            // refusal at once too.
            Err(s) if s.code() == Code::ResourceExhausted && reason(&s) == "OVERLOADED" => {
                unavailable += 1
            }
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    eprintln!("distinct unknown tokens: {refused} refused by upstream, {unavailable} UNAVAILABLE");
    assert_eq!(refused + unavailable, 300);
    assert!(refused >= 4);
    edge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_calls_are_failed_precondition_and_health_and_reflection_answer() {
    let server = upstream().await;
    let (edge, mut e) = start_edge(edge_config(&server.url())).await;
    let s = e
        .login(pb::LoginRequest {
            username: JOE.0.into(),
            password: JOE.1.into(),
            kind: Kind::Api as i32,
            client: None,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert_eq!(reason(&s), "NOT_SERVED_HERE");
    assert!(s.message().contains("sessiond"), "{}", s.message());
    let s = e
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    let s = e
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "NOT_SERVED_HERE");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", edge.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "session.v1.SessionService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    edge.shutdown().await.unwrap();
}

async fn auth(addr: SocketAddr, bearer: Option<&str>, cookie: Option<&str>) -> reqwest::Response {
    let mut req = http().get(format!("http://{addr}/auth"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", format!("theme=dark; sid={c}"));
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_200_with_the_session_401_and_503() {
    let server = upstream().await;
    let mut config = edge_config(&server.url());
    config.validator.max_staleness = Duration::from_millis(300);
    let (edge, _e) = start_edge(config).await;
    let addr = edge.auth_addr.unwrap();
    let mut c = server.client().await;
    let (t, s) = login(&mut c, JOE, Kind::Api).await;

    let r = auth(addr, Some(&t), None).await;
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["x-session-id"], s.id.to_string().as_str());
    assert_eq!(h["x-session-user"], JOE.0);
    assert_eq!(h["x-session-org"], "example.com");
    assert_eq!(h["x-session-kind"], "api");
    assert_eq!(auth(addr, None, Some(&t)).await.status(), 200);
    // A gateway's own Basic credentials do not hide the session cookie.
    let r = http()
        .get(format!("http://{addr}/auth"))
        .header("authorization", "Basic Z2F0ZXdheTpzZWNyZXQ=")
        .header("cookie", format!("sid={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    for r in [
        auth(addr, None, None).await,
        auth(addr, Some("not-a-token"), None).await,
        auth(addr, None, Some(&"A".repeat(43))).await,
    ] {
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while auth(addr, Some(&t), None).await.status() != 401 {
        assert!(
            Instant::now() < deadline,
            "ended session still passes forward auth"
        );
    }

    // Upstream gone: once the feed is stale, forward auth cannot know.
    let (t2, _) = login(&mut c, JOE, Kind::Api).await;
    assert_eq!(auth(addr, Some(&t2), None).await.status(), 200);
    server.running.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = auth(addr, Some(&t2), None).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    edge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_forward_auth_too() {
    let port = free_port();
    let server = TestServer::start_with(|c| {
        c.auth_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    })
    .await;
    let mut c = server.client().await;
    let (t, _) = login(&mut c, ADMIN, Kind::Admin).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = auth(addr, Some(&t), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-session-kind"], "admin");
    assert_eq!(auth(addr, Some(&"A".repeat(43)), None).await.status(), 401);
}

/// Upstream killed with -9 while the edge serves: past the staleness bound
/// nothing comes from memory; a session ended while it was down is never
/// valid after it returns; the edge heals without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_fails_closed_when_upstream_dies_and_heals_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = format!("sqlite://{}", db.display());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let spawn = || {
        let mut args = vec![
            "serve",
            "--store",
            &store,
            "--grpc-addr",
            &addr,
            "--rest-addr",
            "off",
            "--demo",
        ];
        args.extend(CHEAP_HASH_FLAGS);
        ServerProcess::spawn_env(&args, &[("SESSIOND_SERVICE_CREDENTIAL", SERVICE_SECRET)])
    };
    let mut up = spawn();
    let mut config = edge_config(&up.url());
    config.validator.max_staleness = Duration::from_millis(400);
    let (edge, mut e) = start_edge(config).await;
    let mut c = connect(&up.url()).await;
    let (ends_while_down, _) = login(&mut c, JOE, Kind::Api).await;
    let (stays, _) = login(&mut c, ADMIN, Kind::Admin).await;
    warm(&mut e, &ends_while_down).await;
    warm(&mut e, &stays).await;

    up.child.kill().unwrap();
    up.child.wait().unwrap();
    let killed = Instant::now();
    // Within the bound, memory may still answer; past it, never.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for t in [&ends_while_down, &stays] {
        let s = validate(&mut e, t).await.unwrap_err();
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    }
    assert_eq!(edge.validator.state(), FeedState::Stale);
    eprintln!("UNAVAILABLE {:?} after kill -9", killed.elapsed());

    // Meanwhile the operator disables joe on the store itself.
    let out = std::process::Command::new(sessiond_bin())
        .args(["user", "disable", JOE.0, "--store", &store])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let up = spawn();
    assert!(
        edge.validator.ready(Duration::from_secs(15)).await,
        "never healed"
    );
    let s = validate(&mut e, &ends_while_down).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    validate(&mut e, &stays)
        .await
        .expect("a live session is valid again");
    drop(up);
    edge.shutdown().await.unwrap();
}

/// The edge's feed position falls out of upstream retention while it cannot
/// reach upstream: on its return the position is refused, the cache is
/// emptied, the feed followed from now, and nothing ended meanwhile is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_position_out_of_retention_empties_the_cache() {
    let server = TestServer::start_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
        c.retention = Duration::from_secs(1);
        c.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let relay = Relay::to(server.running.grpc_addr).await;
    let mut config = edge_config(&format!("http://{}", relay.addr));
    config.validator.max_staleness = Duration::from_millis(300);
    let (edge, mut e) = start_edge(config).await;
    let mut c = server.client().await;
    let (ended, _) = login(&mut c, JOE, Kind::Api).await;
    let (kept, _) = login(&mut c, ADMIN, Kind::Admin).await;
    warm(&mut e, &ended).await;
    warm(&mut e, &kept).await;
    assert_eq!(edge.validator.stats().entries, 2);

    relay.set_cut(true);
    c.logoff(authed(pb::LogoffRequest {}, &ended))
        .await
        .unwrap();
    // Past retention, and past a sweep that purges the Logoff's event.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = validate(&mut e, &kept).await.unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "stale and cut off: {s:?}");
    relay.set_cut(false);

    assert!(
        edge.validator.ready(Duration::from_secs(15)).await,
        "never fresh again"
    );
    let stats = edge.validator.stats();
    assert_eq!(stats.feed_resets, 1, "{stats:?}");
    let s = validate(&mut e, &ended).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    validate(&mut e, &kept)
        .await
        .expect("a live session is valid again");
    edge.shutdown().await.unwrap();
}

/// A session used only through the edge is kept alive upstream: its use is
/// told upstream once per touch interval, so it outlives its idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_through_the_edge_keeps_the_idle_timer_alive_upstream() {
    let server = TestServer::start_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
        c.policy.touch_interval = Duration::from_millis(500);
        c.policy.lifetimes.insert(
            sessiond::domain::Kind::Api,
            sessiond::sessions::Lifetimes {
                idle: Duration::from_secs(2),
                absolute: Duration::from_secs(600),
            },
        );
    })
    .await;
    let mut config = edge_config(&server.url());
    config.validator.touch_interval = Duration::from_millis(500);
    let (edge, mut e) = start_edge(config).await;
    let mut c = server.client().await;
    let (used, _) = login(&mut c, JOE, Kind::Api).await;
    let (idle, _) = login(&mut c, JOE, Kind::Api).await;
    warm(&mut e, &idle).await;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        validate(&mut e, &used).await.expect("in use, so alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Asked of sessiond itself: alive after 2.5 idle timeouts of use at the
    // edge only; the one not used is gone, at the edge too.
    validate(&mut c, &used).await.expect("kept alive upstream");
    assert_eq!(
        validate(&mut c, &idle).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        validate(&mut e, &idle).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let stats = edge.validator.stats();
    assert!(stats.touches >= 5, "{stats:?}");
    assert!(stats.from_memory > stats.touches * 5, "{stats:?}");
    edge.shutdown().await.unwrap();
}
