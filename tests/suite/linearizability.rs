//! Once an ending is acknowledged, no validation that starts afterwards
//! succeeds: many tasks validate a token while another ends it, on the
//! embedded store (also when the ending comes from another process on the
//! same file) and across two replicas on Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use sessiond::pb::{self, Kind};
use tonic::Code;

/// Validators hammer `token` on `validators` while `ender` logs it off; every
/// validation that started after the Logoff returned must fail.
async fn check(validators: Vec<Client>, mut ender: Client, token: String) -> (usize, usize) {
    let ending = token.clone();
    check_ending(validators, token, async move {
        ender
            .logoff(authed(pb::LogoffRequest {}, &ending))
            .await
            .unwrap();
    })
    .await
}

/// Validators hammer `token` on `validators` while `end` ends its session;
/// every validation that started after `end` returned must fail.
async fn check_ending(
    validators: Vec<Client>,
    token: String,
    end: impl std::future::Future<Output = ()>,
) -> (usize, usize) {
    let acked: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, c) in validators.into_iter().cycle().take(16).enumerate() {
        let (token, acked, stop) = (token.clone(), acked.clone(), stop.clone());
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let (mut before, mut after) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = validate(&mut c, &token).await;
                let ended_before_start = acked.lock().unwrap().is_some_and(|t| t < started);
                match r {
                    Ok(_) => {
                        assert!(
                            !ended_before_start,
                            "task {i}: validated after the ending was acknowledged"
                        );
                        before += 1;
                    }
                    // A shed call (a loaded machine) is no answer either way.
                    Err(s) if s.code() == Code::ResourceExhausted => {}
                    Err(s) => {
                        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
                        after += 1;
                    }
                }
            }
            (before, after)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    end.await;
    *acked.lock().unwrap() = Some(Instant::now());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        ok += a;
        refused += b;
    }
    assert!(
        ok > 0 && refused > 0,
        "the race happened: {ok} before, {refused} after"
    );
    (ok, refused)
}

/// `sessiond user <action> joe --store <url>`, run as another process; its
/// success is asserted.
async fn joe(url: &str, action: &'static str) {
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(sessiond_bin())
            .args(["user", action, JOE.0, "--store", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "user {action}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_validation_succeeds_after_an_acknowledged_logoff_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let server =
        TestServer::start_with(|c| c.store = sessiond::store::StoreUrl::SqliteFile(db)).await;
    let mut c = server.client().await;
    for _ in 0..5 {
        let (token, _) = login(&mut c, JOE, Kind::Api).await;
        let validators = vec![server.client().await, server.client().await];
        check(validators, server.client().await, token).await;
    }
}

/// The ending is `sessiond user disable`, another process writing the same
/// SQLite file: the server learns of it only through the file, and still no
/// validation that starts after the command exits succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_validation_succeeds_after_a_disable_by_another_process_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let url = format!("sqlite://{}", db.display());
    let server =
        TestServer::start_with(|c| c.store = sessiond::store::StoreUrl::SqliteFile(db)).await;
    let mut c = server.client().await;
    for _ in 0..3 {
        let (token, _) = login(&mut c, JOE, Kind::Api).await;
        let validators = vec![server.client().await, server.client().await];
        check_ending(validators, token, joe(&url, "disable")).await;
        joe(&url, "enable").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_validation_succeeds_on_any_replica_after_an_acknowledged_logoff_redis() {
    let redis = RedisServer::start();
    let replica = || redis_replica(&redis, false, &[]);
    let (a, b) = (replica(), replica());
    let mut ca = connect(&a.url()).await;
    for _ in 0..5 {
        let (token, _) = login(&mut ca, JOE, Kind::Api).await;
        // Validations on both replicas; the ending on A.
        let validators = vec![connect(&a.url()).await, connect(&b.url()).await];
        check(validators, connect(&a.url()).await, token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_validation_succeeds_on_any_replica_after_an_acknowledged_logoff_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    // Endings go through their own connection and WAIT for a replica. Seven
    // redis-servers and two replicas share the machine: no load shedding.
    let flags = ["--redis-replica-acks", "1", "--max-queue-delay-ms", "5000"];
    let replica = || store_replica(&cluster.url(), &flags, &[]);
    let (a, b) = (replica(), replica());
    let mut ca = connect(&a.url()).await;
    for _ in 0..5 {
        let (token, _) = login(&mut ca, JOE, Kind::Api).await;
        let validators = vec![connect(&a.url()).await, connect(&b.url()).await];
        check(validators, connect(&a.url()).await, token).await;
    }
}

/// A replica remembers validations on Redis; none may outlive an ending
/// made elsewhere: a LogoutAll of the org on replica A (a fence, not a
/// per-session deletion), then `sessiond user disable` run as another
/// process against the same Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_validation_succeeds_on_any_replica_after_a_bulk_ending_or_an_outside_disable_redis() {
    let redis = RedisServer::start();
    let replica = || redis_replica(&redis, false, &[]);
    let (a, b) = (replica(), replica());
    let mut ca = connect(&a.url()).await;
    for _ in 0..3 {
        let (token, _) = login(&mut ca, USEREMAIL, Kind::Api).await;
        let validators = vec![connect(&a.url()).await, connect(&b.url()).await];
        let mut ender = connect(&a.url()).await;
        check_ending(validators, token, async move {
            let r = ender
                .logout_all(pb::LogoutAllRequest {
                    username: USEREMAIL.0.into(),
                    password: USEREMAIL.1.into(),
                })
                .await
                .unwrap();
            assert!(r.into_inner().ended >= 1);
        })
        .await;
    }
    let url = redis.url();
    for _ in 0..3 {
        let (token, _) = login(&mut ca, JOE, Kind::Api).await;
        let validators = vec![connect(&a.url()).await, connect(&b.url()).await];
        check_ending(validators, token, joe(&url, "disable")).await;
        joe(&url, "enable").await;
    }
}
