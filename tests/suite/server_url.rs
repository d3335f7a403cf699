//! Informatica's login answer names `serverUrl`, where a v2 client sends every
//! later call. It must be the scheme this listener serves and the authority
//! the client used (HTTP/1.1 `Host`, HTTP/2 `:authority`), or `--public-url`
//! when the operator set one (behind a proxy). HTTP/2 and TLS go through
//! curl, as a client would.

use std::process::Command;

use crate::support::*;
use serde_json::{json, Value};
use sessiond::tls::TlsFiles;

const LOGIN: &str = "/ma/api/v2/user/login";

fn login_body() -> String {
    json!({"@type": "login", "username": USEREMAIL.0, "password": USEREMAIL.1}).to_string()
}

/// curl's answer to the Informatica login, as JSON.
fn curl_login(extra: &[&str], url: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["-d", &login_body()])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_uses_the_host_header() {
    let server = TestServer::start_rest().await;
    let base = server.rest();
    let (status, _, user) = json_of(
        http()
            .post(format!("{base}{LOGIN}"))
            .header("content-type", "application/json")
            .body(login_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["serverUrl"], format!("{base}/saas"));

    // The name the client used, not the address the shim listens on.
    let (_, _, user) = json_of(
        http()
            .post(format!("{base}{LOGIN}"))
            .header("host", "sessions.example.test:8443")
            .header("content-type", "application/json")
            .body(login_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(user["serverUrl"], "http://sessions.example.test:8443/saas");

    // A Host that is not a plausible authority is not echoed back.
    let user = curl_login(&["-H", "Host: evil.test/x?y"], &format!("{base}{LOGIN}"));
    assert_eq!(user["serverUrl"], format!("{base}/saas"), "{user}");

    // HTTP/1.0 without Host names no authority: the listener's own address.
    let user = curl_login(&["--http1.0", "-H", "Host:"], &format!("{base}{LOGIN}"));
    assert_eq!(user["serverUrl"], format!("{base}/saas"), "{user}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_uses_the_authority_pseudo_header() {
    let server = TestServer::start_rest().await;
    let addr = server.running.rest_addr.unwrap();
    let user = curl_login(
        &["--http2-prior-knowledge"],
        &format!("http://{addr}{LOGIN}"),
    );
    assert_eq!(user["serverUrl"], format!("http://{addr}/saas"), "{user}");
    let port = addr.port();
    let user = curl_login(
        &[
            "--http2-prior-knowledge",
            "--resolve",
            &format!("shim.example.test:{port}:127.0.0.1"),
        ],
        &format!("http://shim.example.test:{port}{LOGIN}"),
    );
    assert_eq!(
        user["serverUrl"],
        format!("http://shim.example.test:{port}/saas"),
        "{user}"
    );
}

struct Pki {
    _dir: tempfile::TempDir,
    files: TlsFiles,
}

fn self_signed() -> Pki {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
    Pki { _dir: dir, files }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners_answer_https() {
    let pki = self_signed();
    let files = pki.files.clone();
    let server = TestServer::start_rest_with(move |c| c.tls = Some(files)).await;
    let port = server.running.rest_addr.unwrap().port();
    let ca = pki.files.cert.display().to_string();
    let resolve = format!("localhost:{port}:127.0.0.1");
    for version in ["--http1.1", "--http2"] {
        let user = curl_login(
            &[version, "--cacert", &ca, "--resolve", &resolve],
            &format!("https://localhost:{port}{LOGIN}"),
        );
        assert_eq!(
            user["serverUrl"],
            format!("https://localhost:{port}/saas"),
            "{version}: {user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_url_wins_over_what_the_client_used() {
    let server = TestServer::start_rest_with(|c| {
        c.public_url = Some("https://sessions.example.com/idp".into());
    })
    .await;
    let addr = server.running.rest_addr.unwrap();
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        let user = curl_login(extra, &format!("http://{addr}{LOGIN}"));
        assert_eq!(
            user["serverUrl"], "https://sessions.example.com/idp/saas",
            "{extra:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_url_from_the_environment_and_on_the_standalone_shim() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("s.db"));
    let pos = args.iter().position(|a| a == "off").unwrap();
    args[pos] = "127.0.0.1:0".into();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let backend = ServerProcess::spawn_env(
        &refs,
        &[("SESSIOND_PUBLIC_URL", "https://env.example.com/")],
    );
    let rest = backend.rest_addr.unwrap();
    let user = curl_login(&[], &format!("http://{rest}{LOGIN}"));
    assert_eq!(user["serverUrl"], "https://env.example.com/saas");

    let shim = ServerProcess::spawn(&[
        "rest",
        "--upstream",
        &backend.url(),
        "--rest-addr",
        "127.0.0.1:0",
        "--public-url",
        "https://shim.example.com",
    ]);
    let shim_addr = shim.rest_addr.unwrap();
    let user = curl_login(&[], &format!("http://{shim_addr}{LOGIN}"));
    assert_eq!(user["serverUrl"], "https://shim.example.com/saas");
    // Without one, the standalone shim names itself as reached.
    drop(shim);
    let shim = ServerProcess::spawn(&[
        "rest",
        "--upstream",
        &backend.url(),
        "--rest-addr",
        "127.0.0.1:0",
    ]);
    let shim_addr = shim.rest_addr.unwrap();
    let user = curl_login(
        &["--http2-prior-knowledge"],
        &format!("http://{shim_addr}{LOGIN}"),
    );
    assert_eq!(user["serverUrl"], format!("http://{shim_addr}/saas"));
}

#[test]
fn a_bad_public_url_is_refused_at_start() {
    for bad in [
        "ftp://x.example.com",
        "sessions.example.com",
        "https://user:pw@x.example.com",
        "https://x.example.com/?a=b",
    ] {
        for cmd in [
            &["serve", "--store", "sqlite::memory:", "--public-url", bad][..],
            &[
                "rest",
                "--upstream",
                "http://127.0.0.1:1",
                "--rest-addr",
                "127.0.0.1:0",
                "--public-url",
                bad,
            ][..],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
                .args(cmd)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{bad} accepted by {cmd:?}");
            assert!(stderr.contains("public URL"), "{bad}: {stderr}");
        }
    }
}

#[test]
fn public_url_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "public_url = \"https://file.example.com:8443/base/\"\n",
    )
    .unwrap();
    let config =
        sessiond::config::serve_config_from([std::ffi::OsStr::new("--config"), path.as_os_str()])
            .unwrap();
    assert_eq!(
        config.public_url.as_deref(),
        Some("https://file.example.com:8443/base")
    );
}
