//! The real binary on a SQLite file: endings survive a restart, live sessions
//! still validate, ids keep increasing (even after the highest was purged),
//! SIGTERM stops it cleanly, and the user CLI works on the same file.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;
use sessiond::pb::{self, Kind};

fn args_with(db: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = serve_args(db);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn spawn(args: &[String]) -> ServerProcess {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::spawn(&refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endings_survive_restart_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");

    // Run 1: open five sessions, end four of them (including the newest).
    let server = spawn(&args_with(&db, &[]));
    let mut c = connect(&server.url()).await;
    let (a, _) = login(&mut c, JOE, Kind::Api).await;
    let (b, _) = login(&mut c, JOE, Kind::Imap).await;
    let (live, live_s) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let (d, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    let (e, e_s) = login(&mut c, USEREMAIL, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &a)).await.unwrap();
    let ended = c
        .logout_user(pb::LogoutUserRequest {
            credentials: Some(pb::Credentials {
                user: JOE.0.into(),
                secret: Some(pb::credentials::Secret::Password(JOE.1.into())),
                client: String::new(),
            }),
            user: JOE.0.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ended;
    assert_eq!(ended, 1);
    let ended = c
        .logout_all(pb::LogoutAllRequest {
            username: USEREMAIL.0.into(),
            password: USEREMAIL.1.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ended;
    assert_eq!(ended, 2);
    drop(c);
    let status = server.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    // Run 2: the same file. Ended stays ended, live still validates. With a
    // 1 s retention the ended rows (the newest id among them) are purged.
    let server = spawn(&args_with(
        &db,
        &["--retention-secs", "1", "--sweep-interval-secs", "1"],
    ));
    let mut c = connect(&server.url()).await;
    for t in [&a, &b, &d, &e] {
        assert!(!is_valid(&mut c, t).await, "ended before the restart");
    }
    assert_eq!(validate(&mut c, &live).await.unwrap().id, live_s.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.log_text().contains("purged") {
        assert!(
            std::time::Instant::now() < deadline,
            "no purge seen:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(c);
    assert!(server.terminate().success());

    // Run 3: a new session gets an id above every id ever issued.
    let server = spawn(&args_with(&db, &[]));
    let mut c = connect(&server.url()).await;
    let (_, s) = login(&mut c, JOE, Kind::Api).await;
    assert!(
        s.id > e_s.id,
        "id {} reused or went back (max was {})",
        s.id,
        e_s.id
    );
    assert!(is_valid(&mut c, &live).await);
    drop(c);
    assert!(server.terminate().success());
}

fn cli(db: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .arg("user")
        .args(args)
        .arg("--store")
        .arg(format!("sqlite://{}", db.display()))
        .args(if args.contains(&"--argon2-memory-kib") {
            &[][..]
        } else {
            &CHEAP_HASH_FLAGS[..]
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_cli_administers_the_store_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    // A store that does not exist is created only when asked.
    let add_ops = [
        "add",
        "Ops@Example.org",
        "--org",
        "example.org",
        "--role",
        "admin",
    ];
    let (ok, out) = cli(&db, &add_ops, Some("s3cret-pass\n"));
    assert!(
        !ok && out.contains("does not exist") && out.contains("--create"),
        "{out}"
    );
    assert!(!db.exists(), "a refused command created {}", db.display());
    let (ok, out) = cli(
        &db,
        &[&add_ops[..], &["--create"]].concat(),
        Some("s3cret-pass\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &db,
        &["add", "ops@example.org", "--org", "x"],
        Some("long-enough\n"),
    );
    assert!(!ok && out.contains("already exists"), "{out}");
    assert!(
        out.contains("ops@example.org") && out.contains(&db.display().to_string()),
        "names user and store: {out}"
    );
    let (ok, out) = cli(
        &db,
        &["add", "short@example.org", "--org", "x"],
        Some("1234567\n"),
    );
    assert!(!ok && out.contains("shorter than 8"), "{out}");
    let (ok, out) = cli(
        &db,
        &[
            "add",
            "short@example.org",
            "--org",
            "x",
            "--min-password-length",
            "4",
        ],
        Some("1234567\n"),
    );
    assert!(ok, "{out}");
    assert!(!out.contains("Stack backtrace"), "{out}");
    let (ok, out) = cli(&db, &["add", "nopass@example.org", "--org", "x"], Some(""));
    assert!(!ok && out.contains("no password"), "{out}");
    let (ok, out) = cli(
        &db,
        &["add", "bad@example.org", "--org", "x", "--role", "root"],
        Some("pw\n"),
    );
    assert!(!ok && out.contains("root"), "{out}");

    let server = spawn(&args_with(&db, &[]));
    let mut c = connect(&server.url()).await;
    let ops = ("ops@example.org", "s3cret-pass");
    let (token, _) = login(&mut c, ops, Kind::Admin).await;

    let (ok, out) = cli(&db, &["passwd", "ops@example.org"], Some("new-pass-2\n"));
    assert!(ok, "{out}");
    assert!(try_login(&mut c, ops, Kind::Api).await.is_err());
    login(&mut c, ("ops@example.org", "new-pass-2"), Kind::Api).await;

    let (ok, out) = cli(&db, &["list"], None);
    assert!(
        ok && out.contains("ops@example.org") && out.contains("admin"),
        "{out}"
    );
    assert!(!out.contains("argon2"), "no hashes listed: {out}");

    // Disabling from another process ends the live session at once.
    let (ok, out) = cli(&db, &["disable", "ops@example.org"], None);
    assert!(ok, "{out}");
    assert!(!is_valid(&mut c, &token).await);
    assert!(
        try_login(&mut c, ("ops@example.org", "new-pass-2"), Kind::Api)
            .await
            .is_err()
    );
    let (ok, out) = cli(&db, &["list"], None);
    assert!(ok && out.contains("disabled"), "{out}");
    let (ok, _) = cli(&db, &["enable", "ops@example.org"], None);
    assert!(ok);
    login(&mut c, ("ops@example.org", "new-pass-2"), Kind::Api).await;

    let (ok, out) = cli(&db, &["disable", "ghost@example.org"], None);
    assert!(!ok && out.contains("no such user"), "{out}");
    assert!(
        out.contains("ghost@example.org") && out.contains("users.db"),
        "{out}"
    );
    assert!(
        !out.contains("Stack backtrace"),
        "no backtrace unless asked: {out}"
    );

    // Deleting ends the live sessions at once and frees the name.
    let (token, _) = login(&mut c, ("ops@example.org", "new-pass-2"), Kind::Admin).await;
    let (ok, out) = cli(&db, &["delete", "ops@example.org"], None);
    assert!(ok, "{out}");
    assert!(!is_valid(&mut c, &token).await);
    let (ok, out) = cli(&db, &["list"], None);
    assert!(ok && !out.contains("ops@example.org"), "{out}");
    let (ok, out) = cli(&db, &["delete", "ops@example.org"], None);
    assert!(!ok && out.contains("no such user"), "{out}");
    let (ok, out) = cli(
        &db,
        &["add", "ops@example.org", "--org", "example.org"],
        Some("another-pass\n"),
    );
    assert!(ok, "{out}");
    login(&mut c, ("ops@example.org", "another-pass"), Kind::Api).await;
    drop(c);
    assert!(server.terminate().success());
}

#[test]
fn bad_flags_and_stores_fail_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args([
            "serve",
            "--store",
            "mysql://x",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown store"));
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["serve", "--grpc-addr", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("drain.db");
    let server = spawn(&args_with(&db, &[]));
    let mut c = connect(&server.url()).await;
    // A user whose password takes a noticeable time to verify.
    let (ok, out) = cli(
        &db,
        &[
            "add",
            "slow@example.com",
            "--org",
            "example.com",
            "--argon2-memory-kib",
            "131072",
            "--argon2-iterations",
            "6",
        ],
        Some("slow-pass\n"),
    );
    assert!(ok, "{out}");
    let started = std::time::Instant::now();
    let (_, _) = login(&mut c, ("slow@example.com", "slow-pass"), Kind::Api).await;
    let one_login = started.elapsed();
    assert!(
        one_login > Duration::from_millis(100),
        "login too fast ({one_login:?}) to be caught in flight"
    );
    let in_flight = tokio::spawn(async move {
        try_login(&mut c, ("slow@example.com", "slow-pass"), Kind::Api).await
    });
    tokio::time::sleep(one_login / 4).await;
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success());
    let answer = in_flight.await.unwrap();
    assert!(
        answer.is_ok(),
        "the call in flight at SIGTERM completed: {answer:?}"
    );
}
