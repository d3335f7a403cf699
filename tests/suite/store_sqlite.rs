//! The SQLite store behind the Store trait: revocation records, sweeping,
//! durability of endings, and failure to UNAVAILABLE when the file is locked.

use std::time::Duration;

use crate::support::*;
use sessiond::domain::Kind as DKind;
use sessiond::pb::{self, Kind};
use sessiond::store::StoreUrl;
use tonic::Code;

fn revocations(db: &std::path::Path) -> Vec<(i64, String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT session_id, kind, reason FROM revocations ORDER BY sequence")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ending_is_recorded_once_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = TestServer::start_with(|c| {
        c.store = StoreUrl::SqliteFile(db.clone());
        c.policy.lifetimes.get_mut(&DKind::Pop).unwrap().idle = Duration::from_millis(200);
        c.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let mut c = server.client().await;
    let (api, api_s) = login(&mut c, JOE, Kind::Api).await;
    let (_, imap_s) = login(&mut c, JOE, Kind::Imap).await;
    let (_, pop_s) = login(&mut c, JOE, Kind::Pop).await;
    let (_, other_api) = login(&mut c, USEREMAIL, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &api)).await.unwrap();
    c.logout_all(pb::LogoutAllRequest {
        username: USEREMAIL.0.into(),
        password: USEREMAIL.1.into(),
    })
    .await
    .unwrap();
    // The POP session idles out and the sweeper records it as EXPIRED.
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.logout_user(pb::LogoutUserRequest {
        credentials: Some(pb::Credentials {
            user: JOE.0.into(),
            secret: Some(pb::credentials::Secret::Password(JOE.1.into())),
            client: String::new(),
        }),
        user: JOE.0.into(),
    })
    .await
    .unwrap();
    let got = revocations(&db);
    let expect = vec![
        (i64::from(api_s.id), "API".to_string(), "LOGOFF".to_string()),
        (i64::from(other_api.id), "API".into(), "LOGOUT_ALL".into()),
        (i64::from(pop_s.id), "POP".into(), "EXPIRED".into()),
        (i64::from(imap_s.id), "IMAP".into(), "LOGOUT_USER".into()),
    ];
    assert_eq!(got, expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_ending_is_on_disk_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = TestServer::start_with(|c| c.store = StoreUrl::SqliteFile(db.clone())).await;
    let mut c = server.client().await;
    let (t, s) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    // A separate connection (as another process would) sees the ending at once.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let ended: Option<i64> = conn
        .query_row("SELECT ended_at FROM sessions WHERE id = ?1", [s.id], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(ended.is_some());
    drop(conn);
    // Neither the database nor its write-ahead log holds the token's text.
    for file in ["s.db", "s.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
            "token text found in {file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_answers_unavailable_never_success() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = TestServer::start_with(|c| c.store = StoreUrl::SqliteFile(db.clone())).await;
    let mut c = server.client().await;
    let (token, _) = login(&mut c, JOE, Kind::Api).await;
    // Another process holds the write lock longer than the busy timeout.
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = try_login(&mut c, JOE, Kind::Api).await;
    assert_status(r, Code::Unavailable, "STORE_UNAVAILABLE");
    let r = c.logoff(authed(pb::LogoffRequest {}, &token)).await;
    let status = assert_status(r, Code::Unavailable, "STORE_UNAVAILABLE");
    assert!(
        !status.message().contains("sqlite"),
        "no internals leak: {status:?}"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    // The failed Logoff did not end the session; once the lock is gone, service resumes.
    assert!(is_valid(&mut c, &token).await);
    c.logoff(authed(pb::LogoffRequest {}, &token))
        .await
        .unwrap();
    assert!(!is_valid(&mut c, &token).await);
}

#[tokio::test]
async fn a_store_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let Err(err) = sessiond::store::open(&StoreUrl::SqliteFile(db)).await else {
        panic!("a newer schema must be refused");
    };
    assert!(err.to_string().contains("newer"), "{err}");
}

/// Whether another process can take SQLite's exclusive lock on the WAL
/// index of `db` (byte 128 of the `-shm` file, the lock that tells an
/// opener whether any other process has the database open).
fn wal_index_lock_is_free(db: &std::path::Path) -> bool {
    let shm = format!("{}-shm", db.display());
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys; f=open(sys.argv[1],'r+b'); \
             fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)",
            &shm,
        ])
        .output()
        .expect("python3");
    out.status.success()
}

/// The validation cache maps the WAL index itself; POSIX locks go with the
/// first descriptor of a file a process closes, so closing its own would
/// drop SQLite's locks and let another process (`sessiond backup`) reset
/// the file under the server. While the server runs, the lock stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_sqlite_s_lock_on_the_wal_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = TestServer::start_with(|c| c.store = StoreUrl::SqliteFile(db.clone())).await;
    assert!(
        !wal_index_lock_is_free(&db),
        "another process could take the WAL index over from a running server"
    );
    let mut c = server.client().await;
    let (token, _) = login(&mut c, JOE, Kind::Api).await;
    validate(&mut c, &token).await.unwrap();
    assert!(!wal_index_lock_is_free(&db));
    // The probe itself takes a lock nobody holds.
    let idle = dir.path().join("idle.db");
    std::fs::write(dir.path().join("idle.db-shm"), [0u8; 256]).unwrap();
    assert!(wal_index_lock_is_free(&idle));
    drop(server);
}
