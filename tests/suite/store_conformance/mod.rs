//! One conformance suite for the store's traits, run against every backend:
//! SQLite in memory, SQLite on a file, Redis (a private redis-server) and a
//! Redis Cluster (six private redis-servers, one cluster per test).
//! Times are passed explicitly, so expiry is tested by moving `now`, not by
//! sleeping. The cases are grouped by the store's jobs, one file each (as
//! the traits and each backend's files are): users, sessions, bulk, feed,
//! counters, audit, upkeep. This file holds the backends, the shared helpers
//! and the macro that runs a case on every backend.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sessiond::domain::{
    Actor, Audit, AuthFailure, ClientInfo, EndReason, Error, Kind, Millis, NewSession, NewUser,
    Role, Token, TokenDigest,
};
use sessiond::sessions::now_millis;
use sessiond::store::{self, EndTarget, ListQuery, Scope, Store, StoreUrl};

type Guard = Box<dyn Any + Send>;

async fn sqlite_memory() -> (Arc<dyn Store>, Guard) {
    (
        store::open(&StoreUrl::SqliteMemory).await.unwrap(),
        Box::new(()),
    )
}

async fn sqlite_file() -> (Arc<dyn Store>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let s = store::open(&StoreUrl::SqliteFile(dir.path().join("c.db")))
        .await
        .unwrap();
    (s, Box::new(dir))
}

async fn redis() -> (Arc<dyn Store>, Guard) {
    let server = crate::support::RedisServer::start();
    let s = store::open(&StoreUrl::Redis(server.url())).await.unwrap();
    (s, Box::new(server))
}

/// A private cluster for each test, stopped when the test's guard drops (a
/// cluster kept in a static would outlive the test process: statics are
/// never dropped, and its six servers would be left running).
async fn redis_cluster() -> (Arc<dyn Store>, Guard) {
    let cluster = tokio::task::spawn_blocking(crate::support::RedisCluster::start)
        .await
        .unwrap();
    let s = store::open(&StoreUrl::RedisCluster(cluster.url()))
        .await
        .unwrap();
    (s, Box::new(cluster))
}

/// Orgs of the users made by [`user`], so sessions get tokens for their org.
static ORGS: std::sync::Mutex<Vec<(usize, i64, String)>> = std::sync::Mutex::new(Vec::new());

fn store_id(s: &Arc<dyn Store>) -> usize {
    Arc::as_ptr(s) as *const () as usize
}

fn org_of(s: &Arc<dyn Store>, uid: i64) -> String {
    ORGS.lock()
        .unwrap()
        .iter()
        .find(|(st, u, _)| *st == store_id(s) && *u == uid)
        .map(|(_, _, o)| o.clone())
        .expect("a user made by user()")
}

/// The event log of example.com (where these tests' events go).
fn log(s: &Arc<dyn Store>) -> u16 {
    s.shard_of("example.com")
}

/// The audit line of the endings made by these tests.
fn audit() -> Audit {
    Audit {
        actor: Actor::user("tester@example.com", Some(7)),
        target: "test".into(),
    }
}

const MIN: Millis = 60_000;

const HOUR: Millis = 60 * MIN;

async fn user(s: &Arc<dyn Store>, name: &str, org: &str, role: Role) -> i64 {
    let id = s
        .create_user(NewUser {
            username: name.into(),
            org: org.into(),
            role,
            password_hash: format!("hash-of-{name}"),
            now: now_millis(),
        })
        .await
        .unwrap()
        .id;
    ORGS.lock().unwrap().push((store_id(s), id, org.into()));
    id
}

/// A LogoutAll of example.com's API sessions at `now`; how many it ended.
async fn logout_all(s: &Arc<dyn Store>, now: Millis) -> u32 {
    s.end_sessions(
        Scope::Org("example.com".into()),
        &[Kind::Api],
        EndReason::LogoutAll,
        now,
        &audit(),
    )
    .await
    .unwrap()
}

/// Ends every API session of user `uid` at `now` (as an admin's
/// LogoffOther of them all); how many it ended.
async fn end_user(s: &Arc<dyn Store>, uid: i64, now: Millis) -> u32 {
    s.end_sessions(
        Scope::User(uid),
        &[Kind::Api],
        EndReason::LogoffOther,
        now,
        &audit(),
    )
    .await
    .unwrap()
}

/// Opens a session at `now` (30 min idle, 12 h lifetime); returns (id, digest).
async fn open(s: &Arc<dyn Store>, uid: i64, kind: Kind, now: Millis) -> (i32, TokenDigest) {
    let digest = Token::generate_for_org(&org_of(s, uid)).unwrap().digest();
    let session = s
        .create_session(NewSession {
            digest,
            kind,
            user_id: uid,
            now,
            idle_deadline: now + 30 * MIN,
            expires_at: now + 12 * HOUR,
            client: ClientInfo {
                address: Some("192.0.2.1".into()),
                user_agent: None,
                peer_address: Some("198.51.100.4".into()),
            },
        })
        .await
        .unwrap();
    (session.id, digest)
}

/// The events of example.com's log after `before`, once `n` of them are
/// there (bulk endings record theirs in the background), and a moment more
/// for any that should not be.
async fn events_after(
    s: &Arc<dyn Store>,
    before: u64,
    n: usize,
) -> Vec<sessiond::domain::Revocation> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.last_sequence(log(s)).await.unwrap() < before + n as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the events never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.revocations_after(log(s), before, 10_000).await.unwrap()
}

async fn live(s: &Arc<dyn Store>, d: &TokenDigest, now: Millis) -> bool {
    s.find_live_session(d, now).await.unwrap().is_some()
}

macro_rules! conformance {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _guard) = super::$backend().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        conformance!(sqlite_memory: $($name),*);
        conformance!(sqlite_file: $($name),*);
        conformance!(redis: $($name),*);
        conformance!(redis_cluster: $($name),*);
    };
}

// After the macros, which the job files use.
mod audit;
mod bulk;
mod counters;
mod feed;
mod sessions;
mod signals;
mod upkeep;
mod users;
