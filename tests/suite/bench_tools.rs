//! The load generator's contracts that the benchmark scripts rely on:
//! `--mode login` hands out real tokens and a ValidateSession body an
//! outside load tool (h2load) can send as is, and `--token` validates the
//! given token and fails the run when it no longer validates.

use std::process::{Command, Output};

use prost::Message;
use sessiond::pb;

use crate::support::*;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessiond-loadgen"))
        .args(args)
        .output()
        .expect("sessiond-loadgen runs")
}

#[tokio::test]
async fn login_mode_prints_tokens_and_writes_a_framed_validate_request() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body.bin");
    let body_arg = body_path.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        loadgen(&[
            "--mode",
            "login",
            "--tokens",
            "2",
            "--target",
            &url,
            "--grpc-body",
            &body_arg,
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let tokens: Vec<&str> = stdout.lines().collect();
    assert_eq!(tokens.len(), 2, "one token per line: {stdout:?}");
    assert_ne!(tokens[0], tokens[1]);

    // gRPC framing: not compressed, then the big-endian length of the rest.
    let body = std::fs::read(&body_path).unwrap();
    assert_eq!(body[0], 0, "uncompressed");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, body.len() - 5);
    let msg = pb::ValidateSessionRequest::decode(&body[5..]).unwrap();
    assert_eq!(msg.token, tokens[0], "the body carries the first token");

    let mut c = server.client().await;
    for t in &tokens {
        let s = validate(&mut c, t).await.unwrap();
        assert_eq!(s.user, JOE.0);
        assert_eq!(s.kind, pb::Kind::Api as i32);
    }
}

#[tokio::test]
async fn validate_mode_with_a_given_token_fails_once_it_is_ended() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (token, _) = login(&mut c, JOE, pb::Kind::Api).await;
    let run = |token: String, url: String| {
        tokio::task::spawn_blocking(move || {
            loadgen(&[
                "--mode",
                "validate",
                "--token",
                &token,
                "--target",
                &url,
                "--concurrency",
                "2",
                "--connections",
                "1",
                "--warmup",
                "0",
                "--requests",
                "50",
                "--csv",
                "--label",
                "given",
            ])
        })
    };

    let out = run(token.clone(), server.url()).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = line.trim().split(',').collect();
    assert_eq!(fields[0], "given");
    assert_eq!(fields[7], "0", "no validation failed: {line}");
    // It validated the given token and logged in no session of its own.
    let admin = login(&mut c, DOMAIN_ADMIN, pb::Kind::Admin).await.0;
    let sessions = c
        .list_sessions(authed(
            pb::ListSessionsRequest {
                kind: pb::Kind::Api as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1, "only the test's own API session");

    c.logoff(authed(pb::LogoffRequest {}, &token))
        .await
        .unwrap();
    let out = run(token, server.url()).await.unwrap();
    assert!(!out.status.success(), "an ended token must fail the run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no longer valid"),
        "says why it failed: {stderr}"
    );
}

/// The Shared Signals benchmark's contract, small: every phase runs against
/// a real server and prints its figures (a lost SET fails the run).
#[test]
fn the_ssf_bench_measures_every_phase() {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond-ssf-bench"))
        .args([
            "--sessiond",
            env!("CARGO_BIN_EXE_sessiond"),
            "--count",
            "5",
            "--gap-ms",
            "1",
            "--bulk",
            "300",
        ])
        .output()
        .expect("sessiond-ssf-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in [
        "latency[no stream]",
        "latency[one push stream]",
        "never answers",
        "bulk[push]",
        "bulk[poll]",
    ] {
        assert!(stdout.contains(phase), "{phase} missing: {stdout}");
    }
    assert!(stdout.contains("receiver 202 p50"), "{stdout}");
}
