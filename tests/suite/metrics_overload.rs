//! Prometheus metrics on the metrics listener, and overload shed with
//! RESOURCE_EXHAUSTED at once (not queued), with recovery afterwards.

use std::time::{Duration, Instant};

use crate::support::*;
use sessiond::domain::password::HashCost;
use sessiond::pb::{self, Kind};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rpcs_revocations_and_live_sessions() {
    let server = TestServer::start_with(|c| {
        c.sweep_interval = Duration::from_millis(100);
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut c = server.client().await;
    let (t, _) = login(&mut c, JOE, Kind::Api).await;
    login(&mut c, JOE, Kind::Imap).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let _ = validate(&mut c, &t).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = http()
        .get(format!(
            "http://{}/metrics",
            server.running.metrics_addr.expect("metrics listener")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for expected in [
        "sessiond_grpc_requests_total{rpc=\"Login\",code=\"Ok\"}",
        "sessiond_grpc_requests_total{rpc=\"ValidateSession\",code=\"Unauthenticated\"}",
        "sessiond_grpc_request_duration_seconds_bucket{rpc=\"Logoff\",le=\"0.005\"}",
        "sessiond_revocations_total{reason=\"LOGOFF\"}",
        "sessiond_live_sessions{kind=\"IMAP\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(!text.contains(&t), "no tokens in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_quickly_and_the_server_recovers() {
    // Logins that take a while (real Argon2 cost) and room for only 2 calls.
    let server = TestServer::start_with(|c| {
        c.max_in_flight = 2;
        c.policy.hash_cost = HashCost {
            memory_kib: 32 * 1024,
            iterations: 3,
            parallelism: 1,
        };
        c.policy.hash_concurrency = 1;
    })
    .await;
    let c = server.client().await;
    let mut calls = Vec::new();
    for _ in 0..24 {
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = try_login(&mut c, JOE, Kind::Api).await;
            (r.map(|_| ()), started.elapsed())
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    let mut slowest_shed = Duration::ZERO;
    for call in calls {
        let (r, took) = call.await.unwrap();
        match r {
            Ok(()) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert_eq!(reason(&s), "OVERLOADED");
                shed += 1;
                slowest_shed = slowest_shed.max(took);
            }
        }
    }
    eprintln!("overload: {ok} served, {shed} shed; slowest shed answer {slowest_shed:?}");
    assert!(ok >= 2 && shed >= 1, "served {ok}, shed {shed}");
    // Shedding does not wait for the work in progress.
    assert!(slowest_shed < Duration::from_secs(2), "{slowest_shed:?}");
    // Once the burst is over, calls are served again.
    let mut c = c.clone();
    login(&mut c, JOE, Kind::Api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_cheap_calls_is_shed_by_queue_delay() {
    // Validations are fast, so in-flight admission never fills: the queue is
    // in front of the handlers, and waiting there is what gets bounded.
    let server = TestServer::start_with(|c| c.max_queue_delay = Duration::from_millis(1)).await;
    let mut c = server.client().await;
    // With a 1 ms bound, a call of its own can be shed too when the machine
    // stalls (other tests run beside this one): retry, as a client honouring
    // RetryInfo does.
    let token = loop {
        match try_login(&mut c, JOE, Kind::Api).await {
            Ok(r) => break r.token,
            Err(s) if s.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("login: {s:?}"),
        }
    };
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.client().await);
    }
    let mut calls = Vec::new();
    for i in 0..2000 {
        let mut c = clients[i % clients.len()].clone();
        let token = token.clone();
        calls.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..3 {
                codes.push(match validate(&mut c, &token).await {
                    Ok(_) => None,
                    Err(s) => Some((s.code(), reason(&s))),
                });
            }
            codes
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        for code in call.await.unwrap() {
            match code {
                None => ok += 1,
                Some((Code::ResourceExhausted, why)) if why == "OVERLOADED" => shed += 1,
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    eprintln!("flood of 6000 validations: {ok} served, {shed} shed for waiting over 1 ms");
    assert!(ok > 0 && shed > 0, "served {ok}, shed {shed}");
    let mut answer = validate(&mut c, &token).await;
    for _ in 0..50 {
        match &answer {
            Err(s) if s.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                answer = validate(&mut c, &token).await;
            }
            _ => break,
        }
    }
    assert!(
        answer.is_ok(),
        "serves again once the flood is over: {answer:?}"
    );
}
