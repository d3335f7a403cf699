//! Shared Signals push delivery through what production does to it: kill -9
//! of sessiond mid-delivery, a receiver unreachable for a minute, a Redis
//! Cluster primary killed. Each time, every ending acknowledged reaches the
//! receiver as a verified SET (a SET may arrive twice, with the same `jti`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::signals::{jwks_at, post, pushed_sessions, wait_for, Receiver, SERVICE_SECRET};
use crate::support::*;
use sessiond::pb::{self, Kind};

/// `sessiond serve` (the real binary) with REST, push to loopback allowed
/// and the service credential, on `store`.
fn transmitter_process(store: &str, extra: &[&str]) -> ServerProcess {
    let mut args: Vec<&str> = vec![
        "serve",
        "--demo",
        "--store",
        store,
        "--grpc-addr",
        "127.0.0.1:0",
        "--rest-addr",
        "127.0.0.1:0",
        "--ssf-push-allow",
        "127.0.0.1",
        "--sweep-interval-secs",
        "1",
    ];
    args.extend(CHEAP_HASH_FLAGS);
    args.extend(extra);
    ServerProcess::spawn_env(&args, &[("SESSIOND_SERVICE_CREDENTIAL", SERVICE_SECRET)])
}

/// An accepting receiver behind a relay the test cuts (connections refused
/// and closed, as when its host is down), and the URL through the relay.
async fn behind_relay() -> (Receiver, Relay, String) {
    let (r, url) = Receiver::start("accept").await;
    let target: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/events")
        .parse()
        .unwrap();
    let relay = Relay::to(target).await;
    let relayed = format!("http://{}/events", relay.addr);
    (r, relay, relayed)
}

fn rest_of(p: &ServerProcess) -> String {
    format!("http://{}", p.rest_addr.expect("REST listener"))
}

/// A push stream of every org to `url`.
async fn push_stream_at(rest: &str, url: &str) -> Value {
    let (status, body) = post(
        &format!("{rest}/ssf/streams"),
        SERVICE_SECRET,
        json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// `n` API sessions of `who`: their ids.
async fn api_sessions(c: &mut Client, who: (&str, &str), n: usize) -> BTreeSet<i64> {
    let mut ids = BTreeSet::new();
    for _ in 0..n {
        let (_, s) = unless_shed(|| {
            let mut c = c.clone();
            async move { Ok(login(&mut c, who, Kind::Api).await) }
        })
        .await
        .unwrap();
        ids.insert(i64::from(s.id));
    }
    ids
}

/// `n` API sessions of the company.com user, ended by one LogoutAll: their
/// ids.
async fn ended_by_logout_all(c: &mut Client, n: usize) -> BTreeSet<i64> {
    let ids = api_sessions(c, USEREMAIL, n).await;
    let r = c
        .logout_all(pb::LogoutAllRequest {
            username: USEREMAIL.0.into(),
            password: USEREMAIL.1.into(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().ended as usize, n);
    ids
}

/// The sessions named by every SET `r` got, each SET verified (jwcrypto).
fn received(keys: &Value, r: &Receiver) -> BTreeSet<i64> {
    pushed_sessions(keys, r).into_iter().collect()
}

/// The same, read without verifying: cheap enough to wait on.
fn arrived(r: &Receiver) -> BTreeSet<i64> {
    use base64::Engine as _;
    r.sets()
        .iter()
        .filter_map(|jwt| {
            let payload = jwt.split('.').nth(1)?;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()?;
            let claims: Value = serde_json::from_slice(&bytes).ok()?;
            crate::signals::revoked_session(&claims)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_set_arrives_after_kill_9_of_sessiond_mid_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let (r, url) = Receiver::start("slow").await;
    let mut server = transmitter_process(&store, &[]);
    let rest = rest_of(&server);
    push_stream_at(&rest, &url).await;
    let keys = jwks_at(&rest).await;
    let mut c = connect(&server.url()).await;
    let ended = ended_by_logout_all(&mut c, 300).await;
    // Some SETs delivered, most not: kill -9.
    wait_for(
        "the first SETs",
        || r.sets().len() >= 30,
        Duration::from_secs(30),
    )
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let at_kill = r.sets().len();
    assert!(
        at_kill < 300,
        "the kill came mid-delivery ({at_kill} delivered)"
    );

    let server = transmitter_process(&store, &[]);
    wait_for(
        "every SET after the restart",
        || arrived(&r) == ended,
        Duration::from_secs(60),
    )
    .await;
    let got = received(&keys, &r);
    assert_eq!(got, ended, "every ending's SET, none missing");
    let repeats = r.sets().len() - got.len();
    eprintln!("kill -9 after {at_kill} of 300 SETs: all 300 arrived after the restart, {repeats} sent twice (same jti)");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_unreachable_for_a_minute_gets_every_set_once_back() {
    let server = crate::signals::transmitter_with(|c| {
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
    })
    .await;
    let (r, relay, relayed) = behind_relay().await;
    push_stream_at(&server.rest(), &relayed).await;
    let keys = crate::signals::jwks(&server).await;
    let mut c = server.client().await;

    let mut ended = BTreeSet::new();
    let (t, s) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    ended.insert(i64::from(s.id));
    wait_for(
        "the first SET",
        || r.sets().len() == 1,
        Duration::from_secs(10),
    )
    .await;

    relay.set_cut(true);
    let down = Instant::now();
    // Endings all through the outage; each acknowledged at once.
    let mut slowest_ack = Duration::ZERO;
    while down.elapsed() < Duration::from_secs(60) {
        let (t, s) = login(&mut c, JOE, Kind::Api).await;
        let asked = Instant::now();
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        slowest_ack = slowest_ack.max(asked.elapsed());
        ended.insert(i64::from(s.id));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(r.sets().len(), 1, "nothing got through the cut");
    let (status, st) = crate::signals::call(
        reqwest::Method::GET,
        &format!(
            "{}/ssf/status?stream_id={}",
            server.rest(),
            stream_id(&server).await
        ),
        Some(SERVICE_SECRET),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        st["reason"]
            .as_str()
            .unwrap_or("")
            .contains("could not be reached")
            || st["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("could not be reached"),
        "the outage is readable in the status: {st}"
    );

    relay.set_cut(false);
    let back = Instant::now();
    wait_for(
        "every SET once the receiver is back",
        || arrived(&r) == ended,
        Duration::from_secs(40),
    )
    .await;
    eprintln!(
        "receiver down 60 s: {} SETs arrived {:?} after it came back; slowest ending acknowledged in {slowest_ack:?}",
        ended.len(),
        back.elapsed()
    );
    assert_eq!(received(&keys, &r), ended);
    assert!(
        slowest_ack < Duration::from_secs(2),
        "an ending waited on the receiver: {slowest_ack:?}"
    );
}

async fn stream_id(server: &TestServer) -> String {
    let (status, body) = crate::signals::call(
        reqwest::Method::GET,
        &format!("{}/ssf/streams", server.rest()),
        Some(SERVICE_SECRET),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let list = if body.is_array() { body } else { json!([body]) };
    list[0]["stream_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_set_arrives_across_a_redis_cluster_primary_failover() {
    let mut cluster = RedisCluster::start();
    let (r, url) = Receiver::start("slow").await;
    // Two replicas: either may hold the stream's lease.
    let a = transmitter_process(&cluster.url(), &["--redis-replica-acks", "1"]);
    let b = transmitter_process(&cluster.url(), &["--redis-replica-acks", "1"]);
    let rest = rest_of(&a);
    push_stream_at(&rest, &url).await;
    let keys = jwks_at(&rest).await;
    let mut c = connect(&a.url()).await;
    let mut ended = ended_by_logout_all(&mut c, 150).await;
    wait_for(
        "the first SETs",
        || !r.sets().is_empty(),
        Duration::from_secs(30),
    )
    .await;

    // Kill the primary that holds the streams (the store-wide hash tag).
    let victim = cluster.primary_of("{sessiond}:ssf:streams");
    cluster.node_mut(victim).kill();
    let killed = Instant::now();
    // Endings go on during the failover, by either replica; those
    // acknowledged must arrive too.
    let mut cb = connect(&b.url()).await;
    while killed.elapsed() < Duration::from_secs(8) {
        for client in [&mut c, &mut cb] {
            let Ok(resp) = try_login(client, JOE, Kind::Api).await else {
                continue;
            };
            let (t, s) = (resp.token, resp.session.unwrap_or_default());
            if client
                .logoff(authed(pb::LogoffRequest {}, &t))
                .await
                .is_ok()
            {
                ended.insert(i64::from(s.id));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while !arrived(&r).is_superset(&ended) {
        if Instant::now() > deadline {
            let ssf = |p: &ServerProcess| {
                p.log_text()
                    .lines()
                    .filter(|l| l.contains("ssf"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "not every acknowledged ending's SET arrived after the failover: {} of {}\n\
                 replica a:\n{}\nreplica b:\n{}",
                arrived(&r).intersection(&ended).count(),
                ended.len(),
                ssf(&a),
                ssf(&b)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(received(&keys, &r).is_superset(&ended));
    eprintln!(
        "primary {victim} killed mid-delivery: all {} SETs arrived {:?} after the kill ({} deliveries)",
        ended.len(),
        killed.elapsed(),
        r.sets().len()
    );
}

/// A push stream whose receiver stays away past the feed's retention is
/// disabled with the reason in its status (never skipped silently); once
/// re-enabled it carries endings from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_behind_retention_is_disabled_with_its_reason() {
    let server = crate::signals::transmitter_with(|c| {
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
        c.retention = Duration::from_secs(1);
        c.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let (r, relay, relayed) = behind_relay().await;
    push_stream_at(&server.rest(), &relayed).await;
    let id = stream_id(&server).await;
    let status_url = format!("{}/ssf/status?stream_id={id}", server.rest());
    let mut c = server.client().await;
    relay.set_cut(true);
    let (t, lost) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();

    // Past retention and a sweep; the worker's next attempt finds out.
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let (_, st) = crate::signals::call(
            reqwest::Method::GET,
            &status_url,
            Some(SERVICE_SECRET),
            None,
        )
        .await;
        if st["status"] == "disabled" {
            break st;
        }
        assert!(Instant::now() < deadline, "never disabled: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        st["reason"].as_str().unwrap_or("").contains("retention"),
        "{st}"
    );
    relay.set_cut(false);
    // Re-enabled: from now on, not the purged ending.
    let (s, b) = post(
        &format!("{}/ssf/status", server.rest()),
        SERVICE_SECRET,
        json!({"stream_id": id, "status": "enabled"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (t, after) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    wait_for(
        "the ending after re-enabling",
        || arrived(&r).contains(&i64::from(after.id)),
        Duration::from_secs(30),
    )
    .await;
    assert!(!arrived(&r).contains(&i64::from(lost.id)));
}

/// One replica pushes a stream at a time; when it dies (kill -9), another
/// takes the stream over once its lease lapses, and every SET arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_takes_a_stream_over_when_its_pusher_is_killed() {
    let redis = RedisServer::start();
    let (r, url) = Receiver::start("slow").await;
    let mut a = transmitter_process(&redis.url(), &[]);
    let rest = rest_of(&a);
    push_stream_at(&rest, &url).await;
    let keys = jwks_at(&rest).await;
    let mut c = connect(&a.url()).await;
    let ended = ended_by_logout_all(&mut c, 300).await;
    // `a` is the only replica, so it holds the lease and is delivering.
    wait_for(
        "the first SETs",
        || r.sets().len() >= 20,
        Duration::from_secs(30),
    )
    .await;
    let b = transmitter_process(&redis.url(), &[]);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    let at_kill = arrived(&r).len();
    assert!(at_kill < 300, "the kill came mid-delivery ({at_kill})");
    wait_for(
        "every SET through the other replica",
        || arrived(&r) == ended,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(received(&keys, &r), ended);
    eprintln!(
        "pusher killed after {at_kill} of 300 SETs: the other replica delivered the rest within {:?}",
        killed.elapsed()
    );
    assert!(b.terminate().success());
}

/// The stored document of the only stream (what a restart or another
/// replica resumes from).
async fn stored_stream(server: &TestServer) -> Value {
    let recs = server.running.sessions.store().streams(None).await.unwrap();
    assert_eq!(recs.len(), 1);
    serde_json::from_str(&recs[0].body).unwrap()
}

/// A push stream of one org moves its stored position over other orgs'
/// endings too (not only over SETs it delivered), so they are not read
/// again after every wait nor mistaken for a backlog later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_stream_keeps_its_position_over_events_it_does_not_carry() {
    let server = crate::signals::transmitter_with(|c| {
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
    })
    .await;
    let (_r, url) = Receiver::start("accept").await;
    let (s, b) = post(
        &format!("{}/ssf/streams", server.rest()),
        SERVICE_SECRET,
        json!({"org": "example.com", "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let before = stored_stream(&server).await["position"].clone();
    let mut c = server.client().await;
    for _ in 0..5 {
        let (t, _) = login(&mut c, COMPANY_ADMIN, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_stream(&server).await["position"] == before {
        assert!(Instant::now() < deadline, "the position never moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A poll receiver acknowledging SET ids that name nothing owed (repeats,
/// made-up ones) leaves nothing behind in the stream once it is caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_of_nothing_owed_are_not_kept() {
    let server = crate::signals::transmitter().await;
    let stream = crate::signals::poll_stream(&server, "example.com").await;
    let url = stream["delivery"]["endpoint_url"].as_str().unwrap();
    let bogus: Vec<String> = (0..50).map(|i| format!("{i:032x}")).collect();
    let (s, b) = post(
        url,
        SERVICE_SECRET,
        json!({"ack": bogus, "returnImmediately": true}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let acked = stored_stream(&server).await["acked"].clone();
    assert!(
        acked.as_array().is_none_or(|a| a.is_empty()),
        "kept: {acked}"
    );
}

/// A stream whose receiver is failing picks up a change of its
/// `endpoint_url` at once, not after its backoff or a restart, and the new
/// receiver gets what the old one never did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_push_stream_follows_a_new_endpoint_url() {
    let server = crate::signals::transmitter_with(|c| {
        c.signals.push_allow = sessiond::signals::push::AllowList::parse("127.0.0.1").unwrap();
    })
    .await;
    let (_old, old_url) = Receiver::start("down").await;
    let (new, new_url) = Receiver::start("accept").await;
    let made = push_stream_at(&server.rest(), &old_url).await;
    let id = made["stream_id"].as_str().unwrap();
    let mut c = server.client().await;
    let (t, s) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    // Let the backoff grow past a few seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let changed = Instant::now();
    let (st, b) = crate::signals::call(
        reqwest::Method::PATCH,
        &format!("{}/ssf/streams", server.rest()),
        Some(SERVICE_SECRET),
        Some(json!({"stream_id": id, "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": new_url}})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    wait_for(
        "the SET at the new receiver",
        || arrived(&new).contains(&i64::from(s.id)),
        Duration::from_secs(5),
    )
    .await;
    eprintln!("new endpoint_url followed in {:?}", changed.elapsed());
}
