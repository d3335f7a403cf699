//! Micro-benchmarks of the pieces on the hot path and behind it: tokens,
//! password hashing, and the store operations (SQLite in memory and on a
//! file; Redis when `redis-server` is installed, on a private port).
//!
//! `cargo bench --bench core` (add `-- --quick` for a short run).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sessiond::domain::password::{HashCost, Hasher};
use sessiond::domain::{
    Actor, Audit, ClientInfo, EndReason, Kind, NewSession, NewUser, Role, Token,
};
use sessiond::sessions::now_millis;
use sessiond::store::{self, EndTarget, Store, StoreUrl};

fn tokens(c: &mut Criterion) {
    let t = Token::generate().unwrap();
    let text = t.as_str().to_owned();
    c.bench_function("token/generate", |b| b.iter(|| Token::generate().unwrap()));
    c.bench_function("token/parse+digest", |b| {
        b.iter(|| Token::parse(std::hint::black_box(&text)).unwrap().digest())
    });
}

fn passwords(c: &mut Criterion) {
    let mut g = c.benchmark_group("argon2id/verify");
    g.sample_size(10);
    for (name, cost) in [
        (
            "test-cost",
            HashCost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
        ),
        ("production-cost", HashCost::default()),
    ] {
        let h = Hasher::new(cost).unwrap();
        let hash = h.hash("pencil75").unwrap();
        g.bench_function(name, |b| {
            b.iter(|| assert!(h.verify(Some(&hash), "pencil75")))
        });
    }
    g.finish();
}

struct Redis(Child);
impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(Redis, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    Some((Redis(child), format!("redis://127.0.0.1:{port}/")))
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let redis = start_redis();
    let mut backends = vec![
        ("sqlite-memory", StoreUrl::SqliteMemory),
        (
            "sqlite-file",
            StoreUrl::SqliteFile(dir.path().join("bench.db")),
        ),
    ];
    match &redis {
        Some((_, url)) => backends.push(("redis", StoreUrl::Redis(url.clone()))),
        None => eprintln!("redis-server not found: Redis store benchmarks skipped"),
    }
    let mut g = c.benchmark_group("store");
    for (name, url) in backends {
        let (s, uid) = rt.block_on(async {
            let s: Arc<dyn Store> = store::open(&url).await.unwrap();
            let uid = s
                .create_user(NewUser {
                    username: "bench@example.com".into(),
                    org: "example.com".into(),
                    role: Role::User,
                    password_hash: "x".into(),
                    now: now_millis(),
                })
                .await
                .unwrap()
                .id;
            (s, uid)
        });
        let new = move || {
            let now = now_millis();
            NewSession {
                digest: Token::generate_for_org("example.com").unwrap().digest(),
                kind: Kind::Api,
                user_id: uid,
                now,
                idle_deadline: now + 3_600_000,
                expires_at: now + 7_200_000,
                client: ClientInfo::default(),
            }
        };
        // A population to look up among.
        let digests: Vec<_> = rt.block_on(async {
            let mut d = Vec::new();
            for _ in 0..2_000 {
                let n = new();
                d.push(n.digest);
                s.create_session(n).await.unwrap();
            }
            d
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new("find_live_session", name), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % digests.len();
                let (s, d) = (s.clone(), digests[i]);
                async move {
                    assert!(s
                        .find_live_session(&d, now_millis())
                        .await
                        .unwrap()
                        .is_some())
                }
            })
        });
        g.bench_function(BenchmarkId::new("create+end_session", name), |b| {
            b.to_async(&rt).iter(|| {
                let s = s.clone();
                let n = new();
                async move {
                    let id = s.create_session(n).await.unwrap().id;
                    let target = EndTarget {
                        id,
                        org: None,
                        kind: None,
                    };
                    s.end_session(
                        target,
                        EndReason::Logoff,
                        now_millis(),
                        &Audit {
                            actor: Actor::user("bench", None),
                            target: "bench".into(),
                        },
                    )
                    .await
                    .unwrap()
                    .unwrap();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tokens, passwords, stores);
criterion_main!(benches);
