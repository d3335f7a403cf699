//! What a newcomer meets first: settings read the same way by every command,
//! failures that say why, credential failures in the log without secrets.

use std::process::{Command, Stdio};

use crate::support::*;
use sessiond::pb::Kind;

/// Runs the binary to its end: whether it succeeded, and all it printed.
pub fn sessiond(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("sessiond");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_store_that_cannot_be_written_stops_serve_with_the_path_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("sessiond.db");
    let store = format!("sqlite://{}", missing.display());
    let (ok, out) = sessiond(
        &["serve", "--store", &store, "--rest-addr", "off"],
        &[("SESSIOND_GRPC_ADDR", "127.0.0.1:0")],
        dir.path(),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(&missing.display().to_string()) && out.contains("No such file or directory"),
        "{out}"
    );
    assert!(!out.contains("listening"), "it must not start: {out}");
}

#[test]
fn boolean_variables_accept_the_usual_spellings() {
    let dir = tempfile::tempdir().unwrap();
    for (value, demo) in [
        ("1", true),
        ("yes", true),
        ("true", true),
        ("0", false),
        ("off", false),
    ] {
        let db = dir.path().join(format!("b-{value}.db"));
        let store = format!("sqlite://{}", db.display());
        let mut env: Vec<(&str, &str)> = QUIET_SERVE_ENV.to_vec();
        env.push(("SESSIOND_DEMO", value));
        env.push(("SESSIOND_STORE", &store));
        let server = ServerProcess::spawn_env(&["serve", "--rest-addr", "off"], &env);
        assert!(server.terminate().success());
        let (ok, out) = sessiond(&["user", "list", "--store", &store], &[], dir.path());
        assert!(ok, "{out}");
        assert_eq!(
            out.contains("joe_user@example.com"),
            demo,
            "SESSIOND_DEMO={value}: {out}"
        );
    }
    let (ok, out) = sessiond(&["serve"], &[("SESSIOND_DEMO", "maybe")], dir.path());
    assert!(!ok && out.contains("maybe"), "{out}");
}

#[test]
fn every_command_reads_the_config_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("configured.db");
    let toml = dir.path().join("sessiond.toml");
    std::fs::write(
        &toml,
        format!(
            "store = \"sqlite://{}\"\nargon2_memory_kib = 64\nargon2_iterations = 1\n\
             min_password_length = 12\n[kinds.IMAP]\nidle_timeout_secs = 60\n",
            db.display()
        ),
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = toml.display().to_string();
    // Through --config…
    let mut add = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    add.args([
        "user",
        "add",
        "ann@example.org",
        "--org",
        "example.org",
        "--create",
        "--config",
        &config,
    ])
    .current_dir(elsewhere.path())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"twelve-chars\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // …and through SESSIOND_CONFIG, from another directory: no ./sessiond.db appears.
    let (ok, out) = sessiond(
        &["user", "list"],
        &[("SESSIOND_CONFIG", &config)],
        elsewhere.path(),
    );
    assert!(ok && out.contains("ann@example.org"), "{out}");
    assert!(!elsewhere.path().join("sessiond.db").exists());
    // A flag beats the file.
    let (ok, out) = sessiond(
        &[
            "user",
            "list",
            "--config",
            &config,
            "--store",
            "sqlite://other.db",
        ],
        &[],
        elsewhere.path(),
    );
    assert!(
        !ok && out.contains("other.db") && out.contains("does not exist"),
        "{out}"
    );
    // A mistyped key in the file is named.
    std::fs::write(&toml, "idle_timeout = 5\n").unwrap();
    let (ok, out) = sessiond(
        &["user", "list", "--config", &config],
        &[],
        elsewhere.path(),
    );
    assert!(!ok && out.contains("idle_timeout"), "{out}");
    // `rest` without an upstream says what it needs.
    let (ok, out) = sessiond(&["rest"], &[], elsewhere.path());
    assert!(!ok && out.contains("--upstream"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_and_lockouts_are_logged_without_the_name_or_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("s.db"));
    args.extend(["--max-failures-per-user".into(), "3".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::spawn(&refs);
    let mut c = connect(&server.url()).await;
    for _ in 0..4 {
        let _ = try_login(
            &mut c,
            ("joe_user@example.com", "wrong-Pa55word"),
            Kind::Api,
        )
        .await;
    }
    let log = server.log_text_once("locked out");
    let hashed = sessiond::domain::limits::log_name("joe_user@example.com");
    assert!(
        log.contains("credential check failed")
            && log.contains(&hashed)
            && log.contains("127.0.0.1"),
        "{log}"
    );
    assert!(log.contains("WARN") && log.contains("locked out"), "{log}");
    for line in log.lines().filter(|l| l.contains("credential check")) {
        assert!(!line.contains("joe_user"), "the name is not logged: {line}");
    }
    assert!(
        !log.contains("wrong-Pa55word"),
        "the password is never logged: {log}"
    );
    drop(c);
    assert!(server.terminate().success());
}
