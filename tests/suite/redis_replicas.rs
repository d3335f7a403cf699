//! Several `sessiond serve` processes on one Redis (a private redis-server on
//! a free port): an ending on one replica is seen by every other at once, the
//! revocation feed crosses replicas and resumes without loss, a LogoutAll
//! cannot be outrun by concurrent logins, and a Redis outage fails closed and
//! heals by itself.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use sessiond::pb::{self, Kind};
use tonic::Code;

const SERVICE_SECRET: &str = "replica-test-service-credential-0123456789";

fn replica(redis: &RedisServer, rest: bool) -> ServerProcess {
    redis_replica(
        redis,
        rest,
        &[("SESSIOND_SERVICE_CREDENTIAL", SERVICE_SECRET)],
    )
}

/// Reads the nine queued joe endings; returns the last.
async fn next_of_nine(s: &mut tonic::Streaming<pb::WatchRevocationsResponse>) -> pb::Revocation {
    let mut last = next_event(s).await;
    for _ in 1..9 {
        let e = next_event(s).await;
        assert_eq!(e.sequence, last.sequence + 1);
        last = e;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ending_on_one_replica_holds_on_every_other_at_once() {
    let redis = RedisServer::start();
    let a = replica(&redis, false);
    let b = replica(&redis, false);
    let mut ca = connect(&a.url()).await;
    let mut cb = connect(&b.url()).await;

    // Login on A validates on B.
    let (token, s) = login(&mut ca, JOE, Kind::Api).await;
    assert_eq!(validate(&mut cb, &token).await.unwrap().id, s.id);
    // Logoff on B: A rejects the token on the very next call.
    cb.logoff(authed(pb::LogoffRequest {}, &token))
        .await
        .unwrap();
    assert_status(
        validate(&mut ca, &token).await,
        Code::Unauthenticated,
        "TOKEN_INVALID",
    );

    // Ids stay unique across replicas.
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        assert!(ids.insert(login(c, USEREMAIL, Kind::Api).await.1.id));
    }
    // LogoffOther on A ends a console session opened on B.
    let (admin, _) = login(&mut ca, DOMAIN_ADMIN, Kind::Admin).await;
    let (console, cs) = login(&mut cb, DOMAIN_ADMIN, Kind::Admin).await;
    ca.logoff_other(authed(
        pb::LogoffOtherRequest {
            session_id: cs.id,
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    assert!(!is_valid(&mut cb, &console).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_endings_on_another_and_resumes_without_loss() {
    let redis = RedisServer::start();
    let a = replica(&redis, false);
    let b = replica(&redis, false);
    let mut ca = connect(&a.url()).await;
    let mut cb = connect(&b.url()).await;
    let mut feed = service_watch(&mut cb, SERVICE_SECRET, "").await;

    // LogoutUser on A; the watcher on B hears of both mail sessions.
    let (_, imap) = login(&mut ca, JOE, Kind::Imap).await;
    let (_, pop) = login(&mut ca, JOE, Kind::Pop).await;
    let mut latencies = Vec::new();
    let sent = Instant::now();
    assert_eq!(logout_joe(&mut ca).await, 2);
    let acked = sent.elapsed();
    let e1 = next_event(&mut feed).await;
    let e2 = next_event(&mut feed).await;
    latencies.push(sent.elapsed());
    let mut got = vec![e1.session_id, e2.session_id];
    got.sort();
    assert_eq!(got, vec![imap.id, pop.id]);
    assert!(e1.reason == pb::EndReason::LogoutUser as i32 && e2.sequence > e1.sequence);

    // More rounds, to report a latency figure rather than one sample.
    for _ in 0..9 {
        let (t, _) = login(&mut ca, JOE, Kind::Imap).await;
        let sent = Instant::now();
        ca.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        next_event(&mut feed).await;
        latencies.push(sent.elapsed());
    }
    // Nine more joe endings the watcher hears of before it drops.
    for _ in 0..9 {
        let (t, _) = login(&mut ca, JOE, Kind::Imap).await;
        ca.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    }
    latencies.sort();
    eprintln!(
        "cross-replica revocation latency (call sent on A -> event received on B): \
         median {:?}, max {:?} over {} samples; first LogoutUser acknowledged after {acked:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    assert!(latencies[latencies.len() - 1] < Duration::from_secs(2));

    // The watcher drops; endings go on (on both replicas); it resumes on A.
    let last = next_of_nine(&mut feed).await;
    let cursor = last.cursor.clone();
    drop(feed);
    let mut missed = Vec::new();
    for i in 0..6 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let (t, s) = login(c, USEREMAIL, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        missed.push(s.id);
    }
    // Resuming on A after the cursor: exactly the six missed endings (the
    // joe endings before the cursor are not repeated).
    let mut resumed = service_watch(&mut ca, SERVICE_SECRET, &cursor).await;
    let mut replay = Vec::new();
    for _ in 0..6 {
        replay.push(next_event(&mut resumed).await);
    }
    let seqs: Vec<u64> = replay.iter().map(|e| e.sequence).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no repeat: {seqs:?}"
    );
    let tail: Vec<i32> = replay.iter().map(|e| e.session_id).collect();
    assert_eq!(tail, missed);
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(300), resumed.message()).await {
        panic!("nothing more expected, got {extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_is_not_outrun_by_concurrent_logins_on_other_replicas() {
    let redis = RedisServer::start();
    let a = replica(&redis, false);
    let b = replica(&redis, false);
    let ca = connect(&a.url()).await;
    let cb = connect(&b.url()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loggers = Vec::new();
    for i in 0..6 {
        let mut c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let stop = stop.clone();
        loggers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let who = if made.len() % 2 == 0 {
                    USEREMAIL
                } else {
                    COMPANY_ADMIN
                };
                let (t, _) = login(&mut c, who, Kind::Api).await;
                made.push((Instant::now(), t));
            }
            made
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    let ended = ca
        .clone()
        .logout_all(pb::LogoutAllRequest {
            username: USEREMAIL.0.into(),
            password: USEREMAIL.1.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ended;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut before = 0;
    let mut c = cb.clone();
    for l in loggers {
        for (created, token) in l.await.unwrap() {
            if created < began {
                before += 1;
                assert!(
                    !is_valid(&mut c, &token).await,
                    "created before LogoutAll, still valid"
                );
            }
        }
    }
    assert!(
        before > 0 && ended as usize >= before,
        "ended {ended}, created before {before}"
    );
}

/// The health of `session.v1.SessionService`; the server's overall status
/// (the empty service name) must say the same.
async fn health(url: &str) -> i32 {
    // The two are set one after the other: read them until they agree.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let service = health_of(url, "session.v1.SessionService").await;
        let overall = health_of(url, "").await;
        if service == overall {
            return service;
        }
        assert!(
            Instant::now() < deadline,
            "overall health {overall} does not follow the service's {service}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health_of(url: &str, service: &str) -> i32 {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let ch = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_closed_and_heals_by_itself() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut redis = RedisServer::start_durable();
    let server = replica(&redis, true);
    let base = format!("http://{}", server.rest_addr.unwrap());
    let mut c = connect(&server.url()).await;
    let (token, _) = login(&mut c, JOE, Kind::Imap).await;
    assert_eq!(health(&server.url()).await, ServingStatus::Serving as i32);

    redis.stop();
    let t0 = Instant::now();
    // Never "valid", never a success: UNAVAILABLE everywhere.
    assert_status(
        validate(&mut c, &token).await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
    assert_status(
        try_login(&mut c, JOE, Kind::Api).await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
    assert_status(
        c.logoff(authed(pb::LogoffRequest {}, &token)).await,
        Code::Unavailable,
        "STORE_UNAVAILABLE",
    );
    let (status, _, body) = json_of(
        http()
            .post(format!("{base}/api/logout_user"))
            .json(&json!({"credentials": {"user": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}, "user": JOE.0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error_number"].as_u64()),
        (200, Some(0)),
        "{body}"
    );
    let (status, _, body) = ras_logon(&base, DOMAIN_ADMIN).await;
    assert_eq!(status, 503, "{body}");
    let outage_answers = t0.elapsed();
    assert!(
        outage_answers < Duration::from_secs(10),
        "fail fast, not hang: {outage_answers:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&server.url()).await != ServingStatus::NotServing as i32 {
        assert!(Instant::now() < deadline, "health never turned NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A failed attempt during the outage does not count against the user.
    for _ in 0..12 {
        let _ = try_login(&mut c, JOE, Kind::Api).await;
    }

    redis.restart();
    let restarted = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match validate(&mut c, &token).await {
            Ok(s) => {
                assert_eq!(s.user, JOE.0);
                break;
            }
            Err(s) if s.code() == Code::Unavailable => {}
            Err(s) => panic!("unexpected {s:?}"),
        }
        assert!(Instant::now() < deadline, "service never resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "redis outage: 5 calls answered UNAVAILABLE in {outage_answers:?}; \
         service resumed {:?} after redis restarted",
        restarted.elapsed()
    );
    login(&mut c, JOE, Kind::Api).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&server.url()).await != ServingStatus::Serving as i32 {
        assert!(
            Instant::now() < deadline,
            "health never turned SERVING again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        logout_joe(&mut c).await,
        1,
        "the IMAP session survived the outage"
    );
    assert!(
        !server.log_text().contains("lost its data"),
        "a durable Redis kept its data"
    );
}

/// Use on either replica keeps a session alive on both: each replica
/// remembers the validation it read, and a refresh made by the other one
/// (or by itself) must neither be lost nor let the session outlive its idle
/// timeout once use stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_on_either_replica_refreshes_the_idle_timer_for_both() {
    let redis = RedisServer::start();
    let env = [("SESSIOND_IDLE_TIMEOUT_SECS", "2")];
    let (a, b) = (
        redis_replica(&redis, false, &env),
        redis_replica(&redis, false, &env),
    );
    let (mut ca, mut cb) = (connect(&a.url()).await, connect(&b.url()).await);
    let (kept, _) = login(&mut ca, JOE, Kind::Imap).await;
    let (left, _) = login(&mut ca, JOE, Kind::Pop).await;
    // Both replicas remember both sessions.
    for c in [&mut ca, &mut cb] {
        validate(c, &kept).await.unwrap();
        validate(c, &left).await.unwrap();
    }
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        validate(c, &kept)
            .await
            .unwrap_or_else(|s| panic!("used session ended after {i} uses: {s:?}"));
    }
    for c in [&mut ca, &mut cb] {
        let s = validate(c, &left).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    }
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    for c in [&mut ca, &mut cb] {
        let s = validate(c, &kept).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "left idle: {s:?}");
    }
}

/// A Redis that comes back empty (no persistence) turns every login into
/// BAD_CREDENTIALS; the health watch says why, at WARN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_is_reported() {
    let mut redis = RedisServer::start();
    let server = replica(&redis, false);
    let mut c = connect(&server.url()).await;
    let (token, _) = login(&mut c, JOE, Kind::Imap).await;
    // Validated twice, so the replica remembers it.
    for _ in 0..2 {
        validate(&mut c, &token).await.unwrap();
    }
    redis.restart();
    // The session went with the data: a remembered validation must not
    // answer for it (refused, or UNAVAILABLE while Redis restarts).
    let refused = validate(&mut c, &token).await.unwrap_err();
    assert!(
        matches!(refused.code(), Code::Unauthenticated | Code::Unavailable),
        "{refused:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !server.log_text().contains("the store lost its data") {
        assert!(
            Instant::now() < deadline,
            "no warning; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.log_text().contains("WARN"));
}

/// Two deployments on one Redis, told apart by `--redis-prefix`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_share_one_redis_by_prefix() {
    let redis = RedisServer::start();
    let a = redis_replica(&redis, false, &[("SESSIOND_REDIS_PREFIX", "blue")]);
    let b = redis_replica(&redis, false, &[("SESSIOND_REDIS_PREFIX", "green")]);
    let (mut ca, mut cb) = (connect(&a.url()).await, connect(&b.url()).await);
    let (token, _) = login(&mut ca, JOE, Kind::Imap).await;
    assert!(is_valid(&mut ca, &token).await);
    assert!(
        !is_valid(&mut cb, &token).await,
        "green does not see blue's sessions"
    );
    login(&mut cb, JOE, Kind::Imap).await;
    assert_eq!(logout_joe(&mut cb).await, 1, "green ends only its own");
    assert!(is_valid(&mut ca, &token).await);
    let keys = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--scan"])
        .output()
        .expect("redis-cli");
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.lines()
            .all(|k| k.starts_with("{blue") || k.starts_with("{green")),
        "{keys}"
    );
}

/// The login and ending rate limits are counted in Redis: spread over two
/// replicas, a user gets the configured number in all, not per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_spread_over_two_replicas_count_in_total() {
    let redis = RedisServer::start();
    let env = [
        ("SESSIOND_MAX_LOGINS_PER_USER", "4"),
        ("SESSIOND_MAX_ENDINGS_PER_USER", "3"),
    ];
    let a = redis_replica(&redis, false, &env);
    let b = redis_replica(&redis, false, &env);
    let mut ca = connect(&a.url()).await;
    let mut cb = connect(&b.url()).await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        tokens.push(login(c, JOE, Kind::Api).await.0);
    }
    // Two logins on each replica, four in all: refused on both now.
    for c in [&mut ca, &mut cb] {
        let refused = try_login(c, JOE, Kind::Api).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    }
    // Another user is not affected.
    login(&mut ca, USEREMAIL, Kind::Api).await;

    for (i, token) in tokens.iter().take(3).enumerate() {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        c.logoff(authed(pb::LogoffRequest {}, token)).await.unwrap();
    }
    // Three endings in all: the fourth is refused on either replica, and
    // its session lives on.
    for c in [&mut ca, &mut cb] {
        let refused = c
            .logoff(authed(pb::LogoffRequest {}, &tokens[3]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    }
    assert!(is_valid(&mut ca, &tokens[3]).await);
}

async fn next(
    w: &mut tonic::Streaming<pb::WatchRevocationsResponse>,
) -> Result<Option<pb::WatchRevocationsResponse>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), w.message())
        .await
        .expect("a message within 10 s")
}

/// A watch of every org (every shard) that asked for heartbeats, on another
/// replica than the ending: the heartbeat after the ending's event stands at
/// that event; once Redis is gone no heartbeat claims a position any more,
/// and the stream ends UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_cross_replicas_and_stop_when_redis_is_gone() {
    let mut redis = RedisServer::start();
    let a = replica(&redis, false);
    let b = replica(&redis, false);
    let mut ca = connect(&a.url()).await;
    let mut cb = connect(&b.url()).await;
    let req = pb::WatchRevocationsRequest {
        heartbeat_ms: 300,
        ..Default::default()
    };
    let mut w = cb
        .watch_revocations(authed(req, SERVICE_SECRET))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut w).await.unwrap().unwrap();
    assert!(first.heartbeat.is_some(), "{first:?}");

    let (t, s) = login(&mut ca, JOE, Kind::Api).await;
    ca.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let event = loop {
        let m = next(&mut w).await.unwrap().unwrap();
        if let Some(r) = m.revocation {
            break r;
        }
    };
    assert_eq!(event.session_id, s.id);
    let beat = loop {
        let m = next(&mut w).await.unwrap().unwrap();
        if let Some(h) = m.heartbeat {
            break h;
        }
    };
    assert_eq!(beat.cursor, event.cursor);

    redis.stop();
    let ended_at = Instant::now();
    let status = loop {
        match next(&mut w).await {
            Ok(Some(m)) => {
                // At most what was read before Redis went away.
                assert!(m.revocation.is_none(), "{m:?}");
                assert!(
                    ended_at.elapsed() < Duration::from_secs(5),
                    "heartbeats go on"
                );
            }
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
