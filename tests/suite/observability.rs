//! What a platform team plugs in: JSON log lines (`--log-format json`) and
//! the one-shot `sessiond health` command's exit codes.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

fn sessiond_health(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .arg("health")
        .args(args)
        .env_remove("SESSIOND_HEALTH_ADDR")
        .output()
        .expect("run sessiond health")
}

#[tokio::test]
async fn json_log_lines_parse_and_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("s.db"));
    let rest = args.iter().position(|a| a == "off").unwrap();
    args[rest] = "127.0.0.1:0".into();
    args.extend(["--log-format".into(), "json".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::spawn(&refs);
    let base = format!("http://{}", server.rest_addr.unwrap());
    let (status, _, body) = ras_logon(&base, DOMAIN_ADMIN).await;
    assert_eq!(status, 200, "{body}");
    let token = body["authToken"].as_str().unwrap().to_owned();
    // A failed credential check is logged: the wrong password must not be.
    let (status, _, _) = ras_logon(&base, (DOMAIN_ADMIN.0, "wrong-password-9")).await;
    assert_eq!(status, 401);
    let log = server.log.clone();
    assert!(server.terminate().success());

    let text = log.lock().unwrap().join("\n");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "too few log lines:\n{text}");
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "{key} missing: {line}");
        }
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
    }
    assert!(text.contains("grpc listening on"), "{text}");
    for secret in [DOMAIN_ADMIN.1, "wrong-password-9", token.as_str()] {
        assert!(!text.contains(secret), "secret in the log:\n{text}");
    }
}

#[tokio::test]
async fn health_exits_zero_only_when_serving() {
    let mut redis = RedisServer::start();
    let server = redis_replica(&redis, false, &[]);
    let addr = server.grpc_addr().to_string();

    let ok = sessiond_health(&["--addr", &addr]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("SERVING"));
    let url = server.url();
    assert!(sessiond_health(&["--addr", &url]).status.success());

    // Store down: the service turns NOT_SERVING, and the command says so.
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(15);
    let down = loop {
        let out = sessiond_health(&["--addr", &addr]);
        if !out.status.success() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!down.status.success(), "still SERVING with the store down");
    let why = String::from_utf8_lossy(&down.stderr);
    assert!(why.contains("NOT_SERVING"), "{why}");
}

#[test]
fn health_fails_when_nothing_answers_or_the_address_is_bad() {
    let port = free_port().to_string();
    let out = sessiond_health(&[
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--timeout-secs",
        "2",
    ]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("cannot reach"), "{why}");

    let out = sessiond_health(&["--addr", "http://[::1"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    let out = sessiond_health(&["--addr", "https://127.0.0.1:1"]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("--upstream-ca"), "{why}");
}
