//! sessiond on a real local Redis Cluster (six redis-servers: three
//! primaries, one replica each): data placed by organization, the shard count
//! guarded, the credential lockout shared by replicas, the revocation feed
//! merged across shards and resumed by cursor, and endings that survive a
//! primary's crash with `--redis-replica-acks 1`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use sessiond::domain::password::Hasher;
use sessiond::domain::{NewUser, Role};
use sessiond::pb::{self, Kind};
use sessiond::sessions::now_millis;
use sessiond::store::{self, OpenOptions, Store, StoreUrl};
use tonic::Code;

const SERVICE_SECRET: &str = "cluster-test-service-credential-0123456789";
const PREFIX: &str = "sessiond";

async fn open(
    cluster: &RedisCluster,
    prefix: &str,
    shards: u16,
) -> sessiond::domain::Result<Arc<dyn Store>> {
    let options = OpenOptions {
        redis_prefix: prefix.into(),
        redis_shards: shards,
        ..Default::default()
    };
    store::open_with(&StoreUrl::RedisCluster(cluster.url()), &options).await
}

async fn start_cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
}

/// Creates `name` in `org` (password "password-1") directly in the store.
async fn add_user(s: &Arc<dyn Store>, name: &str, org: &str, role: Role) -> i64 {
    let hash = Hasher::new(CHEAP_HASH).unwrap().hash("password-1").unwrap();
    s.create_user(NewUser {
        username: name.into(),
        org: org.into(),
        role,
        password_hash: hash,
        now: now_millis(),
    })
    .await
    .unwrap()
    .id
}

/// The primary holding an org's shard.
fn primary_of_org(cluster: &RedisCluster, s: &Arc<dyn Store>, org: &str) -> u16 {
    cluster.primary_of(&format!("{{{PREFIX}:{}}}:x", s.shard_of(org)))
}

/// Keys under `{<PREFIX>:` on a node.
fn keys_on(cluster: &RedisCluster, port: u16) -> Vec<String> {
    cluster
        .cli(port, &["--scan", "--pattern", &format!("{{{PREFIX}:*")])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_spread_over_every_primary_and_each_org_stays_on_one() {
    let cluster = start_cluster().await;
    let s = open(&cluster, PREFIX, 16).await.unwrap();
    let now = now_millis();
    for i in 0..100 {
        let org = format!("org-{i}.example");
        let uid = add_user(&s, &format!("user@{org}"), &org, Role::User).await;
        for kind in [Kind::Api, Kind::Imap] {
            let digest = sessiond::domain::Token::generate_for_org(&org)
                .unwrap()
                .digest();
            s.create_session(sessiond::domain::NewSession {
                digest,
                kind: kind_of(kind),
                user_id: uid,
                now,
                idle_deadline: now + 600_000,
                expires_at: now + 3_600_000,
                client: Default::default(),
            })
            .await
            .unwrap();
        }
    }
    let mut per_primary = BTreeMap::new();
    let mut tag_homes: HashMap<String, BTreeSet<u16>> = HashMap::new();
    for p in cluster.primaries() {
        let keys = keys_on(&cluster, p);
        for k in &keys {
            let tag = k[..=k.find('}').unwrap()].to_owned();
            tag_homes.entry(tag).or_default().insert(p);
        }
        per_primary.insert(p, keys.len());
    }
    eprintln!("keys per primary (100 orgs, 2 sessions each): {per_primary:?}");
    assert_eq!(per_primary.len(), 3);
    assert!(per_primary.values().all(|&n| n > 0), "{per_primary:?}");
    assert!(
        tag_homes.values().all(|homes| homes.len() == 1),
        "every shard on exactly one primary"
    );
    // One org's session, token, index and user keys all sit on its primary.
    let org = "org-7.example";
    let home = primary_of_org(&cluster, &s, org);
    let tag = format!("{{{PREFIX}:{}}}", s.shard_of(org));
    let on_home = keys_on(&cluster, home);
    let hex: String = org.bytes().map(|b| format!("{b:02x}")).collect();
    for needle in [
        format!("{tag}:lo:API:{hex}"),
        format!("{tag}:lo:IMAP:{hex}"),
    ] {
        assert!(on_home.contains(&needle), "{needle} on {home}");
    }
}

/// A primary that comes back empty loses its shards' data only: the health
/// watch reports it, although the store's own record (on another primary)
/// is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_lost_its_shards_data_is_reported() {
    let cluster = start_cluster().await;
    let s = open(&cluster, PREFIX, 16).await.unwrap();
    let meta = cluster.primary_of(&format!("{{{PREFIX}}}:meta"));
    let org = (0..)
        .map(|i| format!("lost-{i}.test"))
        .find(|o| primary_of_org(&cluster, &s, o) != meta)
        .unwrap();
    add_user(&s, &format!("u@{org}"), &org, Role::User).await;
    let server = store_replica(&cluster.url(), &[], &[]);
    // The first check (at start) saw the org's shard holding data.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!server.log_text().contains("lost its data"));
    cluster.cli(primary_of_org(&cluster, &s, &org), &["FLUSHALL"]);
    assert!(
        server
            .log_text_once("the store lost its data")
            .contains("the store lost its data"),
        "no warning; log:\n{}",
        server.log_text()
    );
}

fn kind_of(k: Kind) -> sessiond::domain::Kind {
    match k {
        Kind::Api => sessiond::domain::Kind::Api,
        Kind::Imap => sessiond::domain::Kind::Imap,
        Kind::Pop => sessiond::domain::Kind::Pop,
        _ => sessiond::domain::Kind::Admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_configured_with_another_shard_count_refuses_to_start() {
    let cluster = start_cluster().await;
    open(&cluster, PREFIX, 16).await.unwrap();
    let Err(err) = open(&cluster, PREFIX, 8).await else {
        panic!("a store of 16 shards opened with 8");
    };
    let err = err.to_string();
    assert!(
        err.contains("16 shards") && err.contains("--redis-shards 8"),
        "{err}"
    );
    // The binary says so and exits.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["serve", "--store", &cluster.url(), "--redis-shards", "4"])
        .args(["--grpc-addr", "127.0.0.1:0", "--rest-addr", "off"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--redis-shards 4"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_spread_over_two_replicas_lock_the_user_in_total() {
    let cluster = start_cluster().await;
    let flags = ["--max-failures-per-user", "6"];
    let a = store_replica(&cluster.url(), &flags, &[]);
    let b = store_replica(&cluster.url(), &flags, &[]);
    let mut ca = connect(&a.url()).await;
    let mut cb = connect(&b.url()).await;
    let wrong = (JOE.0, "not-the-password");
    for i in 0..6 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        assert_status(
            try_login(c, wrong, Kind::Api).await,
            Code::Unauthenticated,
            "BAD_CREDENTIALS",
        );
    }
    // Three failures per replica, six in total: locked on both.
    for c in [&mut ca, &mut cb] {
        let r = try_login(c, JOE, Kind::Api).await;
        assert_eq!(r.unwrap_err().code(), Code::ResourceExhausted);
    }
    // Another user is not affected.
    login(&mut ca, USEREMAIL, Kind::Api).await;
}

async fn login_as(c: &mut Client, user: &str) -> (String, pb::Session) {
    let r = unless_shed(|| {
        let mut c = c.clone();
        async move { try_login(&mut c, (user, "password-1"), Kind::Api).await }
    })
    .await
    .unwrap_or_else(|s| panic!("login {user}: {s:?}"));
    (r.token, r.session.expect("session in login answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_watcher_merges_every_shard_and_resumes_by_cursor() {
    let cluster = start_cluster().await;
    let s = open(&cluster, PREFIX, 16).await.unwrap();
    let orgs = ["alpha.test", "bravo.test", "charlie.test", "delta.test"];
    for org in orgs {
        add_user(&s, &format!("u@{org}"), org, Role::User).await;
    }
    let env = [("SESSIOND_SERVICE_CREDENTIAL", SERVICE_SECRET)];
    let a = store_replica(&cluster.url(), &[], &env);
    let b = store_replica(&cluster.url(), &[], &env);
    let mut ca = connect(&a.url()).await;
    let mut cb = connect(&b.url()).await;
    let mut feed = service_watch(&mut cb, SERVICE_SECRET, "").await;

    // Call on A, event on B, in every org; the first round of each org
    // (connections to its primary being made) is not counted.
    let mut latencies = Vec::new();
    let mut last = None;
    for i in 0..(orgs.len() + 400) {
        let user = format!("u@{}", orgs[i % orgs.len()]);
        let (t, s) = login_as(&mut ca, &user).await;
        let sent = Instant::now();
        unless_shed(|| {
            let mut ca = ca.clone();
            let req = authed(pb::LogoffRequest {}, &t);
            async move { ca.logoff(req).await }
        })
        .await
        .unwrap();
        let e = next_event(&mut feed).await;
        if i >= orgs.len() {
            latencies.push(sent.elapsed());
        }
        assert_eq!(e.session_id, s.id);
        last = Some(e);
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    eprintln!(
        "cross-replica revocation latency on the cluster (logoff on A -> event on B, 4 orgs): \
         median {:?}, p99 {:?}, max {:?} over {} samples",
        pct(50),
        pct(99),
        latencies[latencies.len() - 1],
        latencies.len()
    );
    let cursor = last.unwrap().cursor;
    drop(feed);

    // Endings in every org while nobody watches, on both replicas.
    let mut missed = BTreeSet::new();
    for i in 0..12 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let (t, s) = login_as(c, &format!("u@{}", orgs[i % orgs.len()])).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        missed.insert(s.id);
    }
    let mut resumed = service_watch(&mut ca, SERVICE_SECRET, &cursor).await;
    let mut got = BTreeSet::new();
    let mut per_org: HashMap<String, Vec<u64>> = HashMap::new();
    for _ in 0..12 {
        let e = next_event(&mut resumed).await;
        assert!(got.insert(e.session_id), "no event twice");
        per_org.entry(e.org.clone()).or_default().push(e.sequence);
    }
    assert_eq!(got, missed, "exactly the missed endings");
    for seqs in per_org.values() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order per org");
    }
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(500), resumed.message()).await {
        panic!("nothing more expected, got {extra:?}");
    }
    // A service watch over several shards has no single sequence.
    let err = cb
        .watch_revocations(authed(
            pb::WatchRevocationsRequest {
                after_sequence: Some(1),
                org: String::new(),
                kinds: vec![],
                after_cursor: String::new(),
                ..Default::default()
            },
            SERVICE_SECRET,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// (status of a validation) as a short word: valid / ended / unavailable.
async fn check(c: &mut Client, token: &str) -> &'static str {
    match validate(c, token).await {
        Ok(_) => "valid",
        Err(s) if s.code() == Code::Unauthenticated => "ended",
        Err(s) if s.code() == Code::Unavailable => "unavailable",
        Err(s) => panic!("unexpected validation answer: {s:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_endings_survive_a_primary_crash_with_replica_acks() {
    let mut cluster = start_cluster().await;
    let s = open(&cluster, PREFIX, 16).await.unwrap();
    // One org per primary.
    let mut orgs: BTreeMap<u16, String> = BTreeMap::new();
    for i in 0.. {
        let org = format!("org-{i}.fail");
        orgs.entry(primary_of_org(&cluster, &s, &org))
            .or_insert(org);
        if orgs.len() == 3 {
            break;
        }
    }
    for org in orgs.values() {
        add_user(&s, &format!("u@{org}"), org, Role::User).await;
    }
    let a = store_replica(&cluster.url(), &["--redis-replica-acks", "1"], &[]);
    let mut c = connect(&a.url()).await;
    let mut ended = BTreeMap::new();
    let mut live = BTreeMap::new();
    for (port, org) in &orgs {
        let user = format!("u@{org}");
        live.insert(*port, login_as(&mut c, &user).await.0);
        let mut gone = Vec::new();
        for _ in 0..3 {
            let (t, _) = login_as(&mut c, &user).await;
            c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
            gone.push(t);
        }
        ended.insert(*port, gone);
    }
    // Right after the acknowledgements, the first org's primary crashes.
    let victim = *orgs.keys().next().unwrap();
    cluster.node_mut(victim).kill();
    let crashed = Instant::now();
    let mut unavailable = 0;
    let recovered = loop {
        assert!(
            crashed.elapsed() < Duration::from_secs(30),
            "no failover within 30 s"
        );
        for t in &ended[&victim] {
            assert_ne!(
                check(&mut c, t).await,
                "valid",
                "an acknowledged ending was lost"
            );
        }
        for (port, t) in &live {
            if *port != victim {
                assert_eq!(
                    check(&mut c, t).await,
                    "valid",
                    "another shard stopped serving"
                );
            }
        }
        match check(&mut c, &live[&victim]).await {
            "valid" => break crashed.elapsed(),
            "unavailable" => unavailable += 1,
            other => panic!("the live session of the failed shard answered {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "primary {victim} killed: its shard answered UNAVAILABLE for {recovered:?} \
         ({unavailable} checks) until its replica took over; no restart of sessiond"
    );
    // One answer from the new primary does not mean every node's view of
    // the cluster has caught up: for a moment after, a call can still be
    // routed to the dead node and answer UNAVAILABLE (retriable). Never
    // "valid" for an ended token, and definite answers once it settles.
    for (port, tokens) in &ended {
        for t in tokens {
            assert_eq!(settled(&mut c, t).await, "ended", "shard of {port}");
        }
    }
    for t in live.values() {
        assert_eq!(settled(&mut c, t).await, "valid");
    }
    let (t, _) = login_as(&mut c, &format!("u@{}", orgs[&victim])).await;
    assert_eq!(settled(&mut c, &t).await, "valid");
}

/// [`check`] until it answers something other than UNAVAILABLE (10 s at
/// most); an UNAVAILABLE meanwhile is the cluster still converging.
async fn settled(c: &mut Client, token: &str) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check(c, token).await {
            "unavailable" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer,
        }
    }
}

/// The isolation figure (slow: seeds 100,000 sessions; run with
/// `cargo nextest run -E 'test(isolation)' --run-ignored only`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn isolation_a_logout_all_of_100k_sessions_stalls_no_other_org() {
    const N: usize = 100_000;
    let cluster = start_cluster().await;
    let s = open(&cluster, PREFIX, 16).await.unwrap();
    let big = "big.test";
    let mut small = String::new();
    for i in 0.. {
        small = format!("small-{i}.test");
        if primary_of_org(&cluster, &s, &small) != primary_of_org(&cluster, &s, big) {
            break;
        }
    }
    let admin = add_user(&s, "admin@big.test", big, Role::Admin).await;
    add_user(&s, &format!("u@{small}"), &small, Role::User).await;
    let seeded = Instant::now();
    seed(&s, admin, big, N).await;
    eprintln!("seeded {N} API sessions of {big} in {:?}", seeded.elapsed());
    // Seeding grew the append-only files: compact them now, or Redis
    // rewrites them (a fork copying the data set) in the middle of the
    // measurement.
    for p in cluster.live_ports() {
        cluster.cli(p, &["BGREWRITEAOF"]);
    }
    for p in cluster.live_ports() {
        while cluster.cli(p, &["INFO", "persistence"]).lines().any(|l| {
            l.trim() == "aof_rewrite_in_progress:1" || l.trim() == "aof_rewrite_scheduled:1"
        }) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A makes the call, B serves the other org, C the watcher.
    let env = [("SESSIOND_SERVICE_CREDENTIAL", SERVICE_SECRET)];
    let a = store_replica(&cluster.url(), &[], &env);
    let b = store_replica(&cluster.url(), &[], &env);
    let c = store_replica(&cluster.url(), &[], &env);
    let mut ca = connect(&a.url()).await;
    let mut cb = connect(&b.url()).await;
    login_as(&mut cb, &format!("u@{small}")).await;
    let small_user = format!("u@{small}");
    // As long as the measurement during the ending: a p99 of fewer calls
    // moves too much from run to run to divide by.
    let cpu_idle = cpu_by_process(&cluster, &[&a, &b, &c]);
    let idle = paced_validations(&b.url(), &small_user, 6.0);
    let idle = tokio::task::spawn_blocking(move || Latencies::of(idle, 6.0))
        .await
        .unwrap();
    eprintln!(
        "CPU seconds while idle (6 s, paced validations on B): {}",
        cpu_delta(&cpu_by_process(&cluster, &[&a, &b, &c]), &cpu_idle)
    );

    for p in cluster.primaries() {
        cluster.cli(p, &["CONFIG", "SET", "slowlog-log-slower-than", "10000"]);
        cluster.cli(p, &["SLOWLOG", "RESET"]);
    }
    // The watcher is its own process (the load generator, built like the
    // server under test), so the test's own decoding does not slow it.
    let mut watcher = std::process::Command::new(loadgen_bin())
        .args(["--mode", "watch", "--target", &c.url(), "--org", big])
        .args(["--events", &N.to_string()])
        .env("SESSIOND_SERVICE_CREDENTIAL", SERVICE_SECRET)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sessiond-loadgen beside sessiond");
    let mut watched =
        std::io::BufRead::lines(std::io::BufReader::new(watcher.stdout.take().unwrap()));
    assert_eq!(watched.next().unwrap().unwrap(), "ready");
    let load = paced_validations(&b.url(), &small_user, 6.0);
    let load = tokio::task::spawn_blocking(move || Latencies::of(load, 6.0));
    // Its login and half-second warm-up are over before the call.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // When the big org's live index is empty: every session removed.
    let index = format!(
        "{{{PREFIX}:{}}}:lo:API:{}",
        s.shard_of(big),
        big.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let home = primary_of_org(&cluster, &s, big);
    cluster.cli(home, &["CONFIG", "RESETSTAT"]);
    let cpu_before = cpu_by_process(&cluster, &[&a, &b, &c]);
    // A mark for a profiler started from outside (see BENCHMARKS.md).
    eprintln!("sending LogoutAll");
    let sent = Instant::now();
    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let removed = {
        let mut home = redis::Client::open(format!("redis://127.0.0.1:{home}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        tokio::spawn(async move {
            loop {
                let left: i64 = redis::cmd("ZCARD")
                    .arg(&index)
                    .query_async(&mut home)
                    .await
                    .unwrap();
                if left == 0 {
                    return sent.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let ended = ca
        .logout_all(pb::LogoutAllRequest {
            username: "admin@big.test".into(),
            password: "password-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ended;
    let acked = sent.elapsed();
    let last_at = tokio::task::spawn_blocking(move || {
        let line = watched.next().unwrap().unwrap();
        assert!(watcher.wait().unwrap().success());
        line
    });
    let last_at: u128 = tokio::time::timeout(Duration::from_secs(120), last_at)
        .await
        .expect("every event reaches the watcher")
        .unwrap()
        .parse()
        .unwrap();
    let last_event =
        Duration::from_micros(u64::try_from(last_at.saturating_sub(sent_at.as_micros())).unwrap());
    let removed = removed.await.unwrap();
    let cpu = cpu_delta(&cpu_by_process(&cluster, &[&a, &b, &c]), &cpu_before);
    eprintln!("CPU seconds until the last event (the big org on redis:{home}): {cpu}");
    let stats = cluster.cli(home, &["INFO", "commandstats"]);
    eprintln!(
        "commands on redis:{home} (calls, µs): {}",
        stats
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |f: &str| {
                    rest.split(',')
                        .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                        .unwrap_or("?")
                        .to_owned()
                };
                Some(format!("{name} {} {}", field("calls"), field("usec")))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let busy = load.await.unwrap();
    let mut slow = Vec::new();
    for p in cluster.primaries() {
        let log = cluster.cli(p, &["SLOWLOG", "GET", "128"]);
        if !log.trim().is_empty() {
            slow.push((p, log));
        }
    }
    eprintln!(
        "LogoutAll of {ended} sessions: acknowledged in {acked:?}, every session removed after \
         {removed:?}, last event at the watcher (a third replica) after {last_event:?}; validations of {small} on the other replica: idle p99 {:?} ({} calls, \
         {} failed), during p99 {:?} ({} calls, {} failed); slowlog (>10 ms) entries on primaries: {}",
        idle.p99(),
        idle.calls(),
        idle.errors,
        busy.p99(),
        busy.calls(),
        busy.errors,
        slow.len()
    );
    assert_eq!(ended as usize, N);
    assert_eq!(idle.errors + busy.errors, 0, "every validation answered OK");
    assert!(slow.is_empty(), "slow commands: {slow:?}");
}

/// CPU seconds used so far by each redis-server of `cluster` (`INFO cpu`),
/// each of `replicas` and this test process.
/// `after - before` of two [`cpu_by_process`] readings, as text.
fn cpu_delta(after: &[(String, f64)], before: &[(String, f64)]) -> String {
    after
        .iter()
        .zip(before)
        .map(|((name, a), (_, b))| format!("{name} {:.2}", a - b))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cpu_by_process(cluster: &RedisCluster, replicas: &[&ServerProcess]) -> Vec<(String, f64)> {
    let proc_cpu = |pid: &str| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is
        // the 12th, stime the 13th; in clock ticks of 1/100 s.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
    };
    let mut out = Vec::new();
    for p in cluster.live_ports() {
        let info = cluster.cli(p, &["INFO", "cpu"]);
        let used: f64 = info
            .lines()
            .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
            .filter_map(|l| {
                l.split_once(':')
                    .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            })
            .sum();
        out.push((format!("redis:{p}"), used));
    }
    for (i, r) in replicas.iter().enumerate() {
        out.push((format!("sessiond#{i}"), proc_cpu(&r.child.id().to_string())));
    }
    out.push(("test".into(), proc_cpu("self")));
    out
}

/// Creates `n` API sessions of `uid` (in `org`) through the store.
async fn seed(s: &Arc<dyn Store>, uid: i64, org: &str, n: usize) {
    let now = now_millis();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 32;
    for w in 0..workers {
        let (s, org) = (s.clone(), org.to_owned());
        tasks.spawn(async move {
            for _ in (w..n).step_by(workers) {
                let digest = sessiond::domain::Token::generate_for_org(&org)
                    .unwrap()
                    .digest();
                s.create_session(sessiond::domain::NewSession {
                    digest,
                    kind: sessiond::domain::Kind::Api,
                    user_id: uid,
                    now,
                    idle_deadline: now + 3_600_000,
                    expires_at: now + 7_200_000,
                    client: Default::default(),
                })
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// Validations of one API session of `user` on `url`, one every 5 ms for
/// `secs` seconds: a steady load that leaves the machine's two cores to what
/// is measured. The load generator makes them, in its own process and built
/// like the server (this test is an unoptimized build, whose client would
/// cost more CPU than the calls it measures).
fn paced_validations(url: &str, user: &str, secs: f64) -> std::process::Child {
    std::process::Command::new(loadgen_bin())
        .args(["--mode", "validate", "--target", url, "--user", user])
        .args([
            "--password",
            "password-1",
            "--tokens",
            "1",
            "--connections",
            "1",
        ])
        .args([
            "--concurrency",
            "1",
            "--interval-ms",
            "5",
            "--warmup",
            "0.5",
        ])
        .args(["--duration", &secs.to_string(), "--csv"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sessiond-loadgen beside sessiond")
}

fn loadgen_bin() -> std::path::PathBuf {
    std::path::Path::new(&sessiond_bin()).with_file_name("sessiond-loadgen")
}

/// What [`paced_validations`] measured: its CSV line (label, mode,
/// concurrency, req/s, p50, p99, p999 in ms, errors).
struct Latencies {
    rps: f64,
    p99_ms: f64,
    errors: u64,
    secs: f64,
}

impl Latencies {
    fn of(child: std::process::Child, secs: f64) -> Self {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "load generator: {out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let f: Vec<&str> = line.trim().split(',').collect();
        assert_eq!(f.len(), 8, "{line}");
        Latencies {
            rps: f[3].parse().unwrap(),
            p99_ms: f[5].parse().unwrap(),
            errors: f[7].parse().unwrap(),
            secs,
        }
    }

    fn calls(&self) -> u64 {
        (self.rps * self.secs).round() as u64
    }

    fn p99(&self) -> Duration {
        Duration::from_secs_f64(self.p99_ms / 1000.0)
    }
}

/// Once a bulk ending has removed every session its fence covered, the
/// fence goes too (the fences would otherwise grow by one per user and org
/// ever ended), and what it ended stays ended. On a single Redis, where the
/// shards are key prefixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_out_bulk_ending_leaves_no_fence_behind() {
    use sessiond::domain::{Actor, Audit, EndReason};
    let redis = RedisServer::start();
    let s = store::open(&StoreUrl::Redis(redis.url())).await.unwrap();
    let org = "fenced.test";
    let uid = add_user(&s, "u@fenced.test", org, Role::User).await;
    // More than one step's worth: removed in the background.
    seed(&s, uid, org, 300).await;
    let audit = Audit {
        actor: Actor::user("tester@fenced.test", Some(7)),
        target: "test".into(),
    };
    let logout_all = || async {
        s.end_sessions(
            store::Scope::Org(org.into()),
            &[sessiond::domain::Kind::Api],
            EndReason::LogoutAll,
            now_millis(),
            &audit,
        )
        .await
        .unwrap()
    };
    assert_eq!(logout_all().await, 300);
    let fence_fields = || {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &redis.port.to_string(),
                "--scan",
                "--pattern",
                "*:fences",
            ])
            .output()
            .unwrap();
        let mut fields = Vec::new();
        for key in String::from_utf8_lossy(&out.stdout).lines() {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &redis.port.to_string(), "HKEYS", key])
                .output()
                .unwrap();
            fields.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|f| !f.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        fields
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = fence_fields();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "fences left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = s
        .list_sessions(
            store::ListQuery {
                org: org.into(),
                username: None,
                kind: None,
                after_id: 0,
                limit: 1000,
            },
            now_millis(),
        )
        .await
        .unwrap();
    assert!(
        live.is_empty(),
        "{} sessions outlived the ending",
        live.len()
    );
    // A new login is not covered by anything left over.
    seed(&s, uid, org, 1).await;
    assert_eq!(logout_all().await, 1);
}
